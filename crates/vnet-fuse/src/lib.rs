//! The classic device API, verbatim: `RUN/dev/NET` is a file per vnet, served over FUSE.
//!
//! ```c
//! fd = open("/run/vnet/dev/vmnet1", O_RDWR);  // a new port on vmnet1
//! ioctl(fd, VNETIOC_SETMAC, &mac);             // commands from include/vnet.h
//! read(fd, packet, 1500);                      // blocks for one whole frame
//! write(fd, packet, 1500);                     // sends one frame
//! close(fd);                                   // the port goes away
//! ```
//!
//! Each `open` asks the data plane for a new port ([`vnet_io::Handle::attach_device_blocking`]):
//! it gets one end of a `SOCK_SEQPACKET` pair that speaks the vnet API
//! (`vnet_core::wire::seqpacket`), so the data plane treats the device like any API client and
//! needs no code of its own. `read` takes one FRAME message, `write` sends one, `ioctl`
//! becomes a control request.
//!
//! Blocking: a `read` that finds no frame is parked on the open file's waiter thread,
//! which answers it when a frame arrives, so FUSE's worker threads never block on the
//! network. The waiter also answers `poll` notifications, and fails a parked read with
//! `EINTR` when its reader has a signal pending (fuser does not pass `FUSE_INTERRUPT` on;
//! without this, a reader killed while waiting would hang until a frame came).
//!
//! Rules (also in `include/vnet.h`): a frame longer than the read buffer is truncated to
//! it and the rest discarded; `O_NONBLOCK` reads fail with `EAGAIN` when nothing waits;
//! after the vnet is deleted `read` returns 0 and `write` fails with `EIO`; an opener the
//! vnet's allow lists refuse (by the uid and gid of the FUSE request) gets `EACCES`.
//!
//! Bounds: every open holds a thread and two descriptors, so at most `[limits]
//! device_opens` files are open at once over all vnets; one more `open` fails with
//! `ENFILE`, as does one over a vnet's `ports_per_vnet`, the opener's `ports_per_uid` or
//! `fd_reserve` (counted in `vnet_limit_refusals_total` either way).
#![forbid(unsafe_code)]

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, INodeNo, IoctlFlags, LockOwner, MountOption,
    OpenFlags, PollEvents, PollFlags, PollNotifier, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyPoll, ReplyWrite, Request, WriteFlags,
};
use nix::poll::{PollFd, PollFlags as NixPollFlags, PollTimeout};
use nix::sys::socket::{recv, send, MsgFlags};
use tracing::{debug, info, warn};
use vnet_core::wire::seqpacket::{
    answers, decode_vnet, Request as ApiRequest, VnetMessage, KIND_FRAME,
};
use vnet_io::admission::Client;
use vnet_io::{ControlError, ErrorKind, Handle};

/// The ioctl commands of `include/vnet.h` (`_IOW`/`_IOR` with magic `'V'`).
pub mod ioctl {
    const fn ioc(dir: u32, nr: u32, size: u32) -> u32 {
        (dir << 30) | (size << 16) | ((b'V' as u32) << 8) | nr
    }
    const WRITE: u32 = 1;
    const READ: u32 = 2;
    /// `_IOW('V', 1, struct vnet_mac)`: 6 bytes in.
    pub const SETMAC: u32 = ioc(WRITE, 1, 6);
    /// `_IOW('V', 2, int)`: nonzero = promiscuous.
    pub const SETPROMISC: u32 = ioc(WRITE, 2, 4);
    /// `_IOR('V', 3, unsigned int)`: the port id.
    pub const GETPORTID: u32 = ioc(READ, 3, 4);
    /// `_IOR('V', 4, unsigned int)`: `VNET_API_VERSION`.
    pub const GETVERSION: u32 = ioc(READ, 4, 4);

    use fuser::Errno;
    use vnet_core::wire::seqpacket::{PortInfo, Request};
    use vnet_core::wire::MacAddr;

    /// The control request an ioctl from a client asks for (`cmd` and its argument as
    /// the kernel passed them): pure, so it can be fuzzed.
    pub fn decode(cmd: u32, input: &[u8]) -> Result<Request, Errno> {
        Ok(match cmd {
            SETMAC => {
                let mac: [u8; 6] = input.try_into().map_err(|_| Errno::EINVAL)?;
                Request::SetMac(MacAddr(mac))
            }
            SETPROMISC => {
                let on: [u8; 4] = input.try_into().map_err(|_| Errno::EINVAL)?;
                Request::SetPromiscuous(i32::from_ne_bytes(on) != 0)
            }
            GETPORTID | GETVERSION => Request::GetInfo,
            _ => return Err(Errno::from_i32(libc::ENOTTY)),
        })
    }

    /// What the ioctl `cmd` returns to the client once the vnet answered with `info`.
    pub fn output(cmd: u32, info: Option<PortInfo>) -> Result<Vec<u8>, Errno> {
        match (cmd, info) {
            (GETPORTID, Some(info)) => Ok(info.port_id.to_ne_bytes().to_vec()),
            (GETVERSION, Some(info)) => Ok(u32::from(info.api_version).to_ne_bytes().to_vec()),
            (GETPORTID | GETVERSION, None) => Err(Errno::EIO),
            _ => Ok(Vec::new()),
        }
    }
}

/// `RUN/dev`: where the device files appear.
pub fn dev_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("dev")
}

/// The mounted device directory; dropping it unmounts.
pub struct DeviceMount {
    session: Option<fuser::BackgroundSession>,
    dir: PathBuf,
}

impl DeviceMount {
    /// Mounts the device filesystem at `RUN/dev` (making the directory; a stale mount
    /// left by a crashed daemon is detached first). Needs `/dev/fuse` and the right to
    /// mount (root, or `fusermount3` on the PATH).
    pub fn mount(run_dir: &Path, handle: Handle) -> io::Result<DeviceMount> {
        let dir = dev_dir(run_dir);
        if !Path::new("/dev/fuse").exists() {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no /dev/fuse"));
        }
        // A crashed daemon leaves a dead mount ("Transport endpoint is not connected").
        let _ = nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH);
        std::fs::create_dir_all(&dir)?;
        let fs = DeviceFs {
            run_dir: run_dir.to_path_buf(),
            max_opens: handle.limits().device_opens,
            handle,
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            inodes: Mutex::new(Inodes::default()),
            files: Mutex::new(HashMap::new()),
            opening: Mutex::new(0),
            next_fh: AtomicU64::new(1),
        };
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            MountOption::FSName("vnet".into()),
            MountOption::Subtype("vnet".into()),
            MountOption::DefaultPermissions,
            MountOption::NoExec,
            MountOption::NoSuid,
            MountOption::NoDev,
        ];
        if vnet_dirs::is_root() {
            // Users in the daemon's group may open the devices (mode 0660), as the sockets.
            config.acl = fuser::SessionACL::All;
        }
        config.n_threads = Some(2);
        let session = fuser::Session::new(fs, &dir, &config)
            .and_then(|s| s.spawn())
            .inspect_err(|_| {
                let _ = std::fs::remove_dir(&dir);
            })?;
        info!("classic devices in {}", dir.display());
        Ok(DeviceMount {
            session: Some(session),
            dir,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Unmounts (also done on drop).
    pub fn unmount(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(session) = self.session.take() {
            // Unmounts; with a device still open that fails (busy), so detach it
            // lazily: the open files then fail, and the mount goes when they close.
            drop(session);
            let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH);
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

impl Drop for DeviceMount {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Inode numbers of vnet names, stable for the life of the mount.
#[derive(Default)]
struct Inodes {
    by_name: HashMap<String, u64>,
    names: Vec<String>,
}

impl Inodes {
    fn ino(&mut self, name: &str) -> INodeNo {
        if let Some(&ino) = self.by_name.get(name) {
            return INodeNo(ino);
        }
        self.names.push(name.to_string());
        let ino = INodeNo::ROOT.0 + self.names.len() as u64;
        self.by_name.insert(name.to_string(), ino);
        INodeNo(ino)
    }

    fn name(&self, ino: INodeNo) -> Option<&str> {
        let i = ino.0.checked_sub(INodeNo::ROOT.0 + 1)? as usize;
        self.names.get(i).map(String::as_str)
    }
}

struct DeviceFs {
    run_dir: PathBuf,
    handle: Handle,
    uid: u32,
    gid: u32,
    inodes: Mutex<Inodes>,
    files: Mutex<HashMap<u64, Arc<DevFile>>>,
    /// Opens under way (asking the data plane), counted with `files` against
    /// `max_opens`.
    opening: Mutex<usize>,
    /// `[limits] device_opens`: open files at once, all vnets together; each holds a
    /// waiter thread.
    max_opens: usize,
    next_fh: AtomicU64,
}

const TTL: Duration = Duration::ZERO;

impl DeviceFs {
    /// Whether vnet `name` exists: its API socket is in the run directory. Never looks
    /// into `RUN/dev` itself: that is this filesystem, and a lookup from inside one of
    /// its own requests would deadlock on the directory lock.
    fn exists(&self, name: &str) -> bool {
        valid_name(name) && name != "dev" && self.run_dir.join(name).join("api.sock").exists()
    }

    fn vnets(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.run_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| self.exists(n))
            .collect();
        names.sort();
        names
    }

    fn attr(&self, ino: INodeNo, dir: bool) -> FileAttr {
        FileAttr {
            ino,
            size: 0,
            blocks: 0,
            atime: SystemTime::UNIX_EPOCH,
            mtime: SystemTime::UNIX_EPOCH,
            ctime: SystemTime::UNIX_EPOCH,
            crtime: SystemTime::UNIX_EPOCH,
            kind: if dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: if dir { 0o755 } else { 0o660 },
            nlink: if dir { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// A new port on vnet `name` for `client`, with its waiter thread running.
    fn attach(&self, name: &str, client: Client) -> Result<(u32, Arc<DevFile>), Errno> {
        let (id, sock) = match self.handle.attach_device_blocking(name.to_string(), client) {
            Ok(port) => port,
            Err(ControlError::NotFound(_)) => return Err(Errno::ENXIO),
            // Refused by the vnet's allow lists, or by a limit (counted and logged by
            // the data plane).
            Err(e) if e.kind() == ErrorKind::Forbidden => return Err(Errno::EACCES),
            Err(ControlError::Limit(_)) => return Err(Errno::ENFILE),
            Err(e) => {
                warn!(net = name, "cannot open a device port: {}", e.message());
                return Err(Errno::EIO);
            }
        };
        let file = Arc::new(DevFile::new(id, sock));
        let waiter = file.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("vnet-dev-{id}"))
            .spawn(move || waiter.wait_loop());
        if let Err(e) = spawned {
            warn!(net = name, "cannot start a device waiter: {e}");
            return Err(Errno::EAGAIN);
        }
        Ok((id, file))
    }

    fn file(&self, fh: FileHandle) -> Option<Arc<DevFile>> {
        self.files.lock().unwrap().get(&fh.0).cloned()
    }
}

/// vnet names as the daemon accepts them: 1-15 of `A-Z a-z 0-9 - _ .`, not `.`/`..`.
fn valid_name(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl fuser::Filesystem for DeviceFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name
            .to_str()
            .filter(|n| parent == INodeNo::ROOT && self.exists(n))
        else {
            return reply.error(Errno::ENOENT);
        };
        let ino = self.inodes.lock().unwrap().ino(name);
        reply.entry(&TTL, &self.attr(ino, false), fuser::Generation(0));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if ino == INodeNo::ROOT {
            return reply.attr(&TTL, &self.attr(ino, true));
        }
        if self.inodes.lock().unwrap().name(ino).is_some() {
            reply.attr(&TTL, &self.attr(ino, false))
        } else {
            reply.error(Errno::ENOENT)
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let mut entries = vec![
            (INodeNo::ROOT, FileType::Directory, ".".to_string()),
            (INodeNo::ROOT, FileType::Directory, "..".to_string()),
        ];
        {
            let mut inodes = self.inodes.lock().unwrap();
            for name in self.vnets() {
                entries.push((inodes.ino(&name), FileType::RegularFile, name));
            }
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(
                ino,
                (i + 1) as u64,
                kind,
                OsStr::from_bytes(name.as_bytes()),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn open(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let Some(name) = self.inodes.lock().unwrap().name(ino).map(str::to_string) else {
            return reply.error(Errno::ENOENT);
        };
        // FUSE names the calling thread; the port is the process's. The header carries
        // no supplementary groups: the vnet's allow lists look them up if they need them.
        let client = Client {
            uid: req.uid(),
            gid: req.gid(),
            pid: Some(req.pid()).filter(|&p| p != 0).map(process_of),
            groups: None,
        };
        // Held until the open is in `files`, so that two opens cannot both take the
        // last place.
        let mut opening = self.opening.lock().unwrap();
        let open = self.files.lock().unwrap().len() + *opening;
        if open >= self.max_opens {
            let what = format!(
                "refused an open of dev/{name} by pid {}: {open} devices are open",
                req.pid()
            );
            self.handle.refuse(vnet_io::dataplane::DEVICE_OPENS, &what);
            return reply.error(Errno::ENFILE);
        }
        *opening += 1;
        drop(opening);
        let opened = self.attach(&name, client);
        let mut opening = self.opening.lock().unwrap();
        *opening -= 1;
        match opened {
            Ok((id, file)) => {
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                debug!(net = name, port = id, pid = req.pid(), "device opened");
                self.files.lock().unwrap().insert(fh, file);
                drop(opening);
                reply.opened(
                    FileHandle(fh),
                    FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NONSEEKABLE,
                );
            }
            Err(errno) => reply.error(errno),
        }
    }

    fn read(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _offset: u64,
        size: u32,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(file) = self.file(fh) else {
            return reply.error(Errno::EBADF);
        };
        let nonblocking = flags.0 & libc::O_NONBLOCK != 0;
        file.read(size as usize, nonblocking, req.pid(), reply);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let Some(file) = self.file(fh) else {
            return reply.error(Errno::EBADF);
        };
        let nonblocking = flags.0 & libc::O_NONBLOCK != 0;
        match file.write(data, nonblocking) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if let Some(file) = self.files.lock().unwrap().remove(&fh.0) {
            debug!(port = file.id, "device closed");
            file.close();
        }
        reply.ok();
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        let Some(file) = self.file(fh) else {
            return reply.error(Errno::EBADF);
        };
        match file.ioctl(cmd, in_data) {
            Ok(out) => reply.ioctl(0, &out),
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: fuser::ReplyXattr,
    ) {
        // No extended attributes (`ls -l` asks for security labels).
        reply.error(Errno::ENOSYS);
    }

    fn poll(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        ph: PollNotifier,
        _events: PollEvents,
        flags: PollFlags,
        reply: ReplyPoll,
    ) {
        let Some(file) = self.file(fh) else {
            return reply.error(Errno::EBADF);
        };
        let notify = flags.contains(PollFlags::FUSE_POLL_SCHEDULE_NOTIFY);
        reply.poll(file.poll(notify.then_some(ph)));
    }
}

/// One open of a device file: one port.
struct DevFile {
    id: u32,
    /// Our end of the pair (blocking; every receive says whether it may wait).
    sock: OwnedFd,
    rx: Mutex<Rx>,
    state: Mutex<State>,
    wake: Condvar,
}

/// What receiving needs; held by whoever is receiving.
struct Rx {
    /// Frames that arrived while an ioctl waited for its reply (at most
    /// [`vnet_io::dataplane::QUEUE_CAPACITY`]).
    early: VecDeque<Vec<u8>>,
    msg: Vec<u8>,
    /// The data plane closed the port (the vnet was deleted).
    eof: bool,
}

struct State {
    /// Blocking reads waiting for a frame, oldest first.
    reads: VecDeque<ParkedRead>,
    /// A `poll` that wants to be told when a frame is ready.
    poll: Option<PollNotifier>,
    closed: bool,
}

struct ParkedRead {
    reply: ReplyData,
    size: usize,
    pid: u32,
}

/// How long the waiter sleeps between looks at its readers' signals.
const WAIT_SLICE: u16 = 100;
/// How long an ioctl waits for the data plane's reply.
const IOCTL_TIMEOUT: Duration = Duration::from_secs(5);

impl DevFile {
    fn new(id: u32, sock: OwnedFd) -> Self {
        DevFile {
            id,
            sock,
            rx: Mutex::new(Rx {
                early: VecDeque::new(),
                msg: vec![0; 1 + 65536 + 64],
                eof: false,
            }),
            state: Mutex::new(State {
                reads: VecDeque::new(),
                poll: None,
                closed: false,
            }),
            wake: Condvar::new(),
        }
    }

    /// Takes one frame without waiting: `Ok(None)` when none is there.
    fn try_frame(&self, rx: &mut Rx) -> Result<Option<Vec<u8>>, Errno> {
        if let Some(frame) = rx.early.pop_front() {
            return Ok(Some(frame));
        }
        if rx.eof {
            return Err(Errno::EIO);
        }
        loop {
            match recv(self.sock.as_raw_fd(), &mut rx.msg, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => {
                    rx.eof = true;
                    return Err(Errno::EIO);
                }
                Ok(n) => {
                    if let Ok(VnetMessage::Frame(f)) = decode_vnet(&rx.msg[..n]) {
                        return Ok(Some(f.to_vec()));
                    }
                    // A stray reply: skip it.
                }
                Err(nix::errno::Errno::EAGAIN) => return Ok(None),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(Errno::from_i32(e as i32)),
            }
        }
    }

    /// Whether a read would find a frame (or the end) now.
    fn readable(&self, rx: &Rx) -> bool {
        !rx.early.is_empty() || rx.eof || self.sock_ready(0)
    }

    fn sock_ready(&self, timeout_ms: u16) -> bool {
        let mut fds = [PollFd::new(self.sock.as_fd(), NixPollFlags::POLLIN)];
        matches!(nix::poll::poll(&mut fds, PollTimeout::from(timeout_ms)), Ok(n) if n > 0)
    }

    fn read(&self, size: usize, nonblocking: bool, pid: u32, reply: ReplyData) {
        let mut state = self.state.lock().unwrap();
        if state.reads.is_empty() {
            let mut rx = self.rx.lock().unwrap();
            match self.try_frame(&mut rx) {
                Ok(Some(frame)) => return reply.data(&frame[..frame.len().min(size)]),
                Ok(None) if nonblocking => return reply.error(Errno::EAGAIN),
                Ok(None) => {}
                // The vnet is gone: end of file.
                Err(_) => return reply.data(&[]),
            }
        } else if nonblocking {
            return reply.error(Errno::EAGAIN);
        }
        state.reads.push_back(ParkedRead { reply, size, pid });
        self.wake.notify_all();
    }

    fn write(&self, frame: &[u8], nonblocking: bool) -> Result<(), Errno> {
        let mut msg = Vec::with_capacity(1 + frame.len());
        msg.push(KIND_FRAME);
        msg.extend_from_slice(frame);
        let mut flags = MsgFlags::MSG_NOSIGNAL;
        if nonblocking {
            flags |= MsgFlags::MSG_DONTWAIT;
        }
        match send(self.sock.as_raw_fd(), &msg, flags) {
            Ok(_) => Ok(()),
            Err(nix::errno::Errno::EPIPE | nix::errno::Errno::ECONNRESET) => Err(Errno::EIO),
            Err(e) => Err(Errno::from_i32(e as i32)),
        }
    }

    fn ioctl(&self, cmd: u32, input: &[u8]) -> Result<Vec<u8>, Errno> {
        let req = ioctl::decode(cmd, input)?;
        let info = self.request(req)?;
        ioctl::output(cmd, info)
    }

    /// Sends a control request and waits for its reply; frames meanwhile are kept.
    fn request(
        &self,
        req: ApiRequest,
    ) -> Result<Option<vnet_core::wire::seqpacket::PortInfo>, Errno> {
        let mut rx = self.rx.lock().unwrap();
        if rx.eof {
            return Err(Errno::EIO);
        }
        send(self.sock.as_raw_fd(), &req.encode(), MsgFlags::MSG_NOSIGNAL)
            .map_err(|_| Errno::EIO)?;
        let deadline = std::time::Instant::now() + IOCTL_TIMEOUT;
        loop {
            if std::time::Instant::now() >= deadline {
                return Err(Errno::ETIMEDOUT);
            }
            if !self.sock_ready(WAIT_SLICE) {
                continue;
            }
            let n = match recv(self.sock.as_raw_fd(), &mut rx.msg, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => {
                    rx.eof = true;
                    return Err(Errno::EIO);
                }
                Ok(n) => n,
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
                Err(_) => return Err(Errno::EIO),
            };
            match decode_vnet(&rx.msg[..n]) {
                Ok(VnetMessage::Frame(f)) => {
                    let f = f.to_vec();
                    // Kept for reads, as many as the port's egress queue holds; more
                    // are dropped as that queue drops them (the reader is not reading).
                    if rx.early.len() < vnet_io::dataplane::QUEUE_CAPACITY {
                        rx.early.push_back(f);
                    } else {
                        debug!(
                            port = self.id,
                            "device: frame dropped while an ioctl waited"
                        );
                    }
                }
                Ok(VnetMessage::Reply { kind, reply }) if answers(kind, &req) => {
                    drop(rx);
                    // Frames may have been kept for a parked read or a poll.
                    self.wake.notify_all();
                    return reply.map_err(Errno::from_i32);
                }
                _ => {}
            }
        }
    }

    fn poll(&self, notify: Option<PollNotifier>) -> PollEvents {
        let mut state = self.state.lock().unwrap();
        let ready = self.readable(&self.rx.lock().unwrap());
        let mut events = PollEvents::POLLOUT | PollEvents::POLLWRNORM;
        if ready {
            events |= PollEvents::POLLIN | PollEvents::POLLRDNORM;
        } else if let Some(ph) = notify {
            state.poll = Some(ph);
            self.wake.notify_all();
        }
        events
    }

    fn close(&self) {
        let mut state = self.state.lock().unwrap();
        state.closed = true;
        let _ = nix::sys::socket::shutdown(self.sock.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        self.wake.notify_all();
    }

    /// The waiter thread: answers parked reads and poll notifications.
    fn wait_loop(self: Arc<Self>) {
        loop {
            let mut state = self.state.lock().unwrap();
            while !state.closed && state.reads.is_empty() && state.poll.is_none() {
                state = self.wake.wait(state).unwrap();
            }
            if state.closed {
                for parked in state.reads.drain(..) {
                    parked.reply.error(Errno::EBADF);
                }
                return;
            }
            {
                let mut rx = self.rx.lock().unwrap();
                if !state.reads.is_empty() {
                    match self.try_frame(&mut rx) {
                        Ok(Some(frame)) => {
                            let parked = state.reads.pop_front().expect("a parked read");
                            let n = frame.len().min(parked.size);
                            parked.reply.data(&frame[..n]);
                            continue;
                        }
                        Ok(None) => {}
                        Err(_) => {
                            for parked in state.reads.drain(..) {
                                parked.reply.data(&[]);
                            }
                        }
                    }
                    // Readers with a signal pending get EINTR, as from any device.
                    let mut kept = VecDeque::new();
                    for parked in state.reads.drain(..) {
                        if signal_pending(parked.pid) {
                            parked.reply.error(Errno::EINTR);
                        } else {
                            kept.push_back(parked);
                        }
                    }
                    state.reads = kept;
                }
                if state.poll.is_some() && self.readable(&rx) {
                    if let Some(ph) = state.poll.take() {
                        let _ = ph.notify();
                    }
                }
                if rx.eof {
                    // Nothing more will come: answer new reads at once (see `read`).
                    if let Some(ph) = state.poll.take() {
                        let _ = ph.notify();
                    }
                    continue;
                }
            }
            drop(state);
            self.sock_ready(WAIT_SLICE);
        }
    }
}

/// The process (thread group) of thread `tid`, from `/proc`; `tid` itself if unknown.
fn process_of(tid: u32) -> u32 {
    std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Tgid:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(tid)
}

/// Whether thread `tid` has an unblocked signal pending (read from `/proc`).
fn signal_pending(tid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{tid}/status")) else {
        // Gone altogether.
        return true;
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    let pending = field("SigPnd:") | field("ShdPnd:");
    pending & !field("SigBlk:") != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(valid_name("vmnet1"));
        assert!(!valid_name(".."));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(""));
    }

    #[test]
    fn inodes_are_stable() {
        let mut i = Inodes::default();
        let a = i.ino("a");
        let b = i.ino("b");
        assert_ne!(a, b);
        assert_eq!(i.ino("a"), a);
        assert_eq!(i.name(b), Some("b"));
        assert_eq!(i.name(INodeNo::ROOT), None);
    }

    #[test]
    fn ioctls_decode_their_arguments() {
        use vnet_core::wire::seqpacket::Request;
        let mac = [2, 0, 0, 0, 0, 1];
        assert_eq!(
            ioctl::decode(ioctl::SETMAC, &mac),
            Ok(Request::SetMac(vnet_core::wire::MacAddr(mac)))
        );
        assert_eq!(ioctl::decode(ioctl::SETMAC, &mac[..5]), Err(Errno::EINVAL));
        assert_eq!(
            ioctl::decode(ioctl::SETPROMISC, &1i32.to_ne_bytes()),
            Ok(Request::SetPromiscuous(true))
        );
        assert_eq!(ioctl::decode(ioctl::SETPROMISC, &[1]), Err(Errno::EINVAL));
        assert_eq!(ioctl::decode(ioctl::GETVERSION, &[]), Ok(Request::GetInfo));
        assert_eq!(ioctl::decode(0, &[]), Err(Errno::from_i32(libc::ENOTTY)));
        assert_eq!(ioctl::output(ioctl::GETPORTID, None), Err(Errno::EIO));
        assert_eq!(ioctl::output(ioctl::SETMAC, None), Ok(Vec::new()));
    }

    /// The numbers in include/vnet.h are the ones served here.
    #[test]
    fn header_matches() {
        let dir = tempdir();
        let src = dir.join("check.c");
        let header = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../include");
        std::fs::write(
            &src,
            "#include <stdio.h>\n#include \"vnet.h\"\nint main(void){printf(\"%u %u %u %u %u\\n\",\
             (unsigned)VNETIOC_SETMAC,(unsigned)VNETIOC_SETPROMISC,(unsigned)VNETIOC_GETPORTID,\
             (unsigned)VNETIOC_GETVERSION,(unsigned)VNET_API_VERSION);return 0;}\n",
        )
        .unwrap();
        let exe = dir.join("check");
        let built = std::process::Command::new("cc")
            .arg("-I")
            .arg(&header)
            .arg(&src)
            .arg("-o")
            .arg(&exe)
            .status();
        let Ok(status) = built else {
            eprintln!("SKIPPED: no C compiler");
            return;
        };
        assert!(status.success(), "vnet.h does not compile");
        let out = std::process::Command::new(&exe).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let expected = format!(
            "{} {} {} {} {}\n",
            ioctl::SETMAC,
            ioctl::SETPROMISC,
            ioctl::GETPORTID,
            ioctl::GETVERSION,
            vnet_core::wire::seqpacket::API_VERSION
        );
        assert_eq!(text, expected);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vnet-fuse-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn own_thread_has_no_signal_pending() {
        assert!(!signal_pending(std::process::id()));
        assert!(signal_pending(u32::MAX));
    }
}
