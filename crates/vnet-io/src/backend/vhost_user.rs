//! vhost-user-net back-end: a QEMU (or cloud-hypervisor) virtio-net NIC as a port.
//!
//! The virtqueues live in the guest's shared memory and are served by rust-vmm's
//! `vhost-user-backend`, which runs its own threads: one for the vhost-user socket and a
//! worker that handles queue kicks. The data plane never touches guest memory. Between
//! the two sides sit bounded lock-free channels (`std::sync::mpsc::sync_channel`) and two
//! eventfds:
//!
//! ```text
//!  guest TX queue ─worker─▶ from_guest ──▶ data plane (woken by `ready`, watched by mio)
//!  guest RX queue ◀worker─  to_guest  ◀── data plane (worker woken by `kick`)
//! ```
//!
//! Each message is a `virtio_net_hdr_v1` (12 bytes) followed by the frame, exactly as
//! in the virtqueue, so offload metadata (GSO, partial checksums) travels with the frame.
//! Buffers go back over a recycle channel each way, so the steady state allocates
//! nothing. A full channel drops the frame and counts it.
//!
//! The port outlives connections: a thread accepts on `RUN/NET/vhost-user/NAME.sock`,
//! runs one `VhostUserDaemon` per connection and, when QEMU goes away, accepts the next.
//! A front-end the vnet's allow lists refuse (its `SO_PEERCRED`, `SO_PEERGROUPS`) is
//! disconnected at once; the port made by the control API is its requester's.

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tracing::{info, warn};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::Listener;
use vhost_user_backend::bitmap::BitmapMmapRegion;
use vhost_user_backend::{VhostUserBackendMut, VhostUserDaemon, VringRwLock, VringT};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_ANNOUNCE, VIRTIO_NET_F_GUEST_CSUM,
    VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_TSO4,
    VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MRG_RXBUF,
};
use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::{
    Address, Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap,
};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use vnet_core::switch::DropCause;
use vnet_core::wire::offload::{self as offload, VirtioNetHdr, VIRTIO_NET_HDR_LEN};
use vnet_model::PortKind;

use super::{send_each, Backend, Identity, Received, Sent, WatchedFd};
use crate::admission::Gate;
use crate::error::Chain;
use crate::frame::{FrameBuf, LARGE_CAPACITY};
use crate::sys::{fdpass, peer};

/// Why a vhost-user port could not be set up: the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum VhostUserError {
    #[error("cannot listen on the socket")]
    Listen(#[source] std::io::Error),
    #[error("cannot create an eventfd")]
    CreateEventFd(#[source] std::io::Error),
    #[error("cannot start the port's thread")]
    SpawnThread(#[source] std::io::Error),
    #[error("cannot make the relay's private socket {}", .0.display())]
    PrivateSocket(PathBuf, #[source] std::io::Error),
}

/// Why serving a front-end's connection ended early: the step that failed.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    // vhost_user_backend::Error is not a std::error::Error: no #[source], so its
    // message is part of ours.
    #[error("cannot create the vhost-user daemon: {0}")]
    CreateDaemon(vhost_user_backend::Error),
    #[error("cannot watch the data plane's kick eventfd")]
    WatchKick(#[source] std::io::Error),
    #[error("cannot connect the relay to the daemon's private socket")]
    ConnectRelay(#[source] std::io::Error),
    #[error("cannot start the vhost-user daemon: {0}")]
    StartDaemon(vhost_user_backend::Error),
    #[error("cannot duplicate a socket")]
    CloneSocket(#[source] std::io::Error),
    #[error("cannot start the relay thread")]
    SpawnRelay(#[source] std::io::Error),
}

/// Frames in flight each way between the data plane and the worker.
pub const CHANNEL_CAPACITY: usize = 256;
/// Largest message: header plus a 64 KiB GSO frame.
const MAX_MESSAGE: usize = VIRTIO_NET_HDR_LEN + LARGE_CAPACITY;
const RX_QUEUE: u16 = 0;
const TX_QUEUE: u16 = 1;
const NUM_QUEUES: usize = 2;
const QUEUE_SIZE: usize = 1024;
/// `handle_event` id of the data plane's kick (ids up to `NUM_QUEUES` are reserved).
const KICK_EVENT: u16 = NUM_QUEUES as u16 + 1;

/// `RUN/NET/vhost-user/NAME.sock` for the vnet directory `net_dir`.
pub fn socket_path(net_dir: &Path, name: &str) -> PathBuf {
    net_dir.join("vhost-user").join(format!("{name}.sock"))
}

/// Port names are file names: 1-64 of `A-Z a-z 0-9 - _ .`, not starting with `.`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// The guest's RAM as the back-end maps it, with the dirty-page log QEMU hands over
/// for a live migration (`VHOST_USER_SET_LOG_BASE`): every write through it (frames,
/// used rings) marks its page, so QEMU copies it again. Without it QEMU refuses to
/// migrate a guest on this back-end.
type GuestMem = GuestMemoryMmap<BitmapMmapRegion>;
type Vring = VringRwLock<GuestMemoryAtomic<GuestMem>>;

/// The feature bits we offer: merged RX buffers and the offloads `FrameBuf::offload`
/// carries through the switch, `VHOST_F_LOG_ALL` (dirty-page logging, with the
/// `LOG_SHMFD` protocol feature: live migration), `GUEST_ANNOUNCE` (after a migration
/// QEMU has the guest announce itself, through us; without it a vhost-user guest is
/// announced by nobody and the vnet finds it seconds later, on its next frame) and
/// `VHOST_USER_F_PROTOCOL_FEATURES` (QEMU 7.2 crashes starting a vhost-user NIC
/// without it).
fn offered_features() -> u64 {
    1 << VIRTIO_F_VERSION_1
        | 1 << VIRTIO_NET_F_MRG_RXBUF
        | 1 << VIRTIO_NET_F_CSUM
        | 1 << VIRTIO_NET_F_GUEST_CSUM
        | 1 << VIRTIO_NET_F_HOST_TSO4
        | 1 << VIRTIO_NET_F_HOST_TSO6
        | 1 << VIRTIO_NET_F_GUEST_TSO4
        | 1 << VIRTIO_NET_F_GUEST_TSO6
        | 1 << VIRTIO_NET_F_GUEST_ANNOUNCE
        | VhostUserVirtioFeatures::LOG_ALL.bits()
        | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
}

/// State both sides read.
struct Shared {
    stop: AtomicBool,
    connected: AtomicBool,
    /// Set by the data plane when it wrote `kick`, cleared by the worker before it
    /// drains `to_guest`: one eventfd write per burst, not per frame.
    kicked: AtomicBool,
    /// Worker → data plane: frames from the guest are waiting.
    ready: EventFd,
    /// Data plane → worker: frames for the guest are waiting.
    kick: EventFd,
    /// Frames for the guest dropped by the worker (buffers that cannot hold one at all,
    /// a GSO frame that cannot be segmented). The data plane counted them as sent.
    dropped: AtomicU64,
    /// Guest TX chains that were not a frame; reported by `recv` as `Malformed` drops.
    guest_malformed: AtomicU64,
    /// Guest frames the full channel refused; reported by `recv` as `QueueFull` drops.
    guest_overflow: AtomicU64,
    /// The front-end's socket, to cut it when the port goes away (control path only).
    connection: Mutex<Option<UnixStream>>,
}

/// The worker's ends of the channels; handed from connection to connection.
struct WorkerEnds {
    from_guest: SyncSender<Vec<u8>>,
    to_guest: Receiver<Vec<u8>>,
    /// Buffers the worker is done with, back to the data plane.
    spare_out: SyncSender<Vec<u8>>,
    /// Buffers the data plane is done with.
    spare_in: Receiver<Vec<u8>>,
}

/// A vhost-user-net port, as the data plane sees it.
pub struct VhostUserPort {
    name: String,
    path: PathBuf,
    shared: Arc<Shared>,
    from_guest: Receiver<Vec<u8>>,
    to_guest: SyncSender<Vec<u8>>,
    spare_in: Receiver<Vec<u8>>,
    spare_out: SyncSender<Vec<u8>>,
    ready: WatchedFd,
    thread: Option<JoinHandle<()>>,
    /// Worker drops of guest input already reported: (malformed, overflow).
    reported: (u64, u64),
}

impl VhostUserPort {
    /// Listens on `path` (replacing a stale socket) and serves connections on a thread,
    /// those `gate` lets in.
    pub(crate) fn listen(name: &str, path: &Path, gate: Gate) -> Result<Self, VhostUserError> {
        // A socket left by a dead daemon is replaced; the caller refuses live ones.
        let _ = std::fs::remove_file(path);
        // Not `vhost`'s `Listener::new`: that one unlinks the path when dropped, which
        // could be a new port's socket by the time the thread ends.
        let listener = UnixListener::bind(path).map_err(VhostUserError::Listen)?;
        // The mode of every vnet socket: owner and group (vnetd's `[access] user_group`).
        let mode = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o660);
        std::fs::set_permissions(path, mode).map_err(VhostUserError::Listen)?;
        let private_path = private_path(path);
        let private = bind_private(&private_path)
            .map_err(|e| VhostUserError::PrivateSocket(private_path.clone(), e))?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            kicked: AtomicBool::new(false),
            ready: EventFd::new(EFD_NONBLOCK).map_err(VhostUserError::CreateEventFd)?,
            kick: EventFd::new(EFD_NONBLOCK).map_err(VhostUserError::CreateEventFd)?,
            dropped: AtomicU64::new(0),
            guest_malformed: AtomicU64::new(0),
            guest_overflow: AtomicU64::new(0),
            connection: Mutex::new(None),
        });
        let (from_guest_tx, from_guest) = sync_channel(CHANNEL_CAPACITY);
        let (to_guest, to_guest_rx) = sync_channel(CHANNEL_CAPACITY);
        let (spare_to_dp, spare_in) = sync_channel(CHANNEL_CAPACITY * 2);
        let (spare_out, spare_to_worker) = sync_channel(CHANNEL_CAPACITY * 2);
        let ends = WorkerEnds {
            from_guest: from_guest_tx,
            to_guest: to_guest_rx,
            spare_out: spare_to_dp,
            spare_in: spare_to_worker,
        };
        let thread_shared = shared.clone();
        let thread_name = name.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("vhost-user-{name}"))
            .spawn(move || {
                serve(
                    thread_name,
                    listener,
                    (private, private_path),
                    ends,
                    thread_shared,
                    gate,
                )
            })
            .map_err(VhostUserError::SpawnThread)?;
        let ready = WatchedFd(shared.ready.as_raw_fd());
        Ok(VhostUserPort {
            name: name.to_string(),
            path: path.to_path_buf(),
            shared,
            from_guest,
            to_guest,
            spare_in,
            spare_out,
            ready,
            thread: Some(thread),
            reported: (0, 0),
        })
    }

    /// The socket QEMU connects to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The port's name (`--vhost-user NAME`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Frames for the guest the worker dropped so far (the data plane counted them sent).
    pub fn dropped_to_guest(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// A drop of guest input the worker made that the switch has not counted yet: each
    /// frame in is counted once, as `rx_frames` or as a drop.
    fn unreported_drop(&mut self) -> Option<Received> {
        let bad = self.shared.guest_malformed.load(Ordering::Relaxed);
        if bad > self.reported.0 {
            self.reported.0 += 1;
            return Some(Received::Dropped(
                DropCause::Malformed,
                "a guest TX descriptor chain that is not a frame".into(),
            ));
        }
        let full = self.shared.guest_overflow.load(Ordering::Relaxed);
        if full > self.reported.1 {
            self.reported.1 += 1;
            return Some(Received::Dropped(
                DropCause::QueueFull,
                "the channel from the vhost-user worker was full".into(),
            ));
        }
        None
    }
}

impl Drop for VhostUserPort {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(conn) = self.shared.connection.lock().expect("lock").take() {
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
        // Wake the accept; the thread sees `stop` and exits (it is not joined: a
        // wedged front-end must not stall the data plane).
        let _ = UnixStream::connect(&self.path);
        let _ = std::fs::remove_file(&self.path);
        let private = private_path(&self.path);
        let _ = std::fs::remove_file(&private);
        for dir in [private.parent(), self.path.parent()].into_iter().flatten() {
            let _ = std::fs::remove_dir(dir);
        }
        if let Some(thread) = self.thread.take() {
            drop(thread);
        }
    }
}

impl Backend for VhostUserPort {
    fn kind(&self) -> PortKind {
        PortKind::VhostUser
    }

    /// With the front-end connected now, who it is (`SO_PEERCRED`); the port itself
    /// is its requester's.
    fn description(&self) -> String {
        let state = if self.shared.connected.load(Ordering::Relaxed) {
            let conn = self.shared.connection.lock().expect("lock");
            match conn.as_ref().and_then(peer::credentials) {
                Some(client) => format!("connected: {}", peer::describe(Some(&client))),
                None => "connected".to_string(),
            }
        } else {
            "waiting".to_string()
        };
        match self.dropped_to_guest() {
            0 => format!("vhost-user {} {} ({state})", self.name, self.path.display()),
            n => format!(
                "vhost-user {} {} ({state}; {n} frames the guest could not take)",
                self.name,
                self.path.display()
            ),
        }
    }

    fn identity(&self) -> Identity<'_> {
        Identity {
            vhost_user_name: Some(&self.name),
            ..Identity::default()
        }
    }

    /// The guest acks GSO and checksum offloads we offer (Linux always does), so GSO
    /// frames pass both ways untouched.
    fn offloads(&self) -> bool {
        true
    }

    fn source(&mut self) -> Option<&mut dyn mio::event::Source> {
        Some(&mut self.ready)
    }

    fn recv(&mut self, buf: &mut FrameBuf) -> Received {
        if let Some(drop) = self.unreported_drop() {
            return drop;
        }
        let msg = match self.from_guest.try_recv() {
            Ok(msg) => msg,
            Err(TryRecvError::Empty) => {
                // Reset the eventfd, then look once more: the worker may have pushed
                // between the two.
                let _ = self.shared.ready.read();
                match self.from_guest.try_recv() {
                    Ok(msg) => msg,
                    Err(_) => return Received::WouldBlock,
                }
            }
            Err(TryRecvError::Disconnected) => {
                return Received::Closed("vhost-user thread ended".into())
            }
        };
        let outcome = guest_message(&msg, buf);
        let _ = self.spare_out.try_send(msg);
        outcome
    }

    fn send_batch(&mut self, frames: &[FrameBuf]) -> (usize, Sent) {
        send_each(frames, |f| self.send_one(f))
    }
}

impl VhostUserPort {
    fn send_one(&mut self, frame: &FrameBuf) -> Sent {
        if !self.shared.connected.load(Ordering::Relaxed) {
            return Sent::Dropped(DropCause::LinkDown);
        }
        let mut msg = self
            .spare_in
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(MAX_MESSAGE));
        msg.clear();
        let mut hdr = [0u8; VIRTIO_NET_HDR_LEN];
        frame.offload.write(&mut hdr);
        msg.extend_from_slice(&hdr);
        msg.extend_from_slice(frame.frame());
        match self.to_guest.try_send(msg) {
            Ok(()) => {
                if !self.shared.kicked.swap(true, Ordering::SeqCst) {
                    let _ = self.shared.kick.write(1);
                }
                Sent::Done
            }
            Err(TrySendError::Full(msg)) => {
                let _ = self.spare_out.try_send(msg);
                Sent::Dropped(DropCause::QueueFull)
            }
            Err(TrySendError::Disconnected(_)) => Sent::Closed("vhost-user thread ended".into()),
        }
    }
}

/// A message from the guest's TX queue (its descriptor chain's bytes: `virtio_net_hdr`
/// and frame) into `buf`, as the data plane takes it. Pure, for the fuzz target.
pub fn guest_message(msg: &[u8], buf: &mut FrameBuf) -> Received {
    let space = buf.recv_space_with_header();
    if msg.len() > space.len() {
        return Received::Dropped(
            DropCause::Oversize,
            format!("{}-byte frame from the guest", msg.len()),
        );
    }
    space[..msg.len()].copy_from_slice(msg);
    if buf.set_vnet_len(msg.len()) {
        Received::Frame
    } else {
        Received::Dropped(DropCause::Runt, "no virtio_net_hdr".into())
    }
}

/// Where the relay meets the daemon for the port whose socket is `public`
/// (`DIR/NAME.sock`): `DIR/.relay/NAME`.
fn private_path(public: &Path) -> PathBuf {
    let dir = public.parent().unwrap_or(Path::new("."));
    let name = public.file_stem().unwrap_or(public.as_os_str());
    dir.join(".relay").join(name)
}

/// Binds the daemon's side of the relay at `path`, in a directory only vnetd's uid may
/// enter (0700) and with a socket only it may connect to (0600). The daemon takes the
/// first connection it finds queued there for the front-end, so no one else may be
/// able to queue one: an abstract socket (no permissions) would let any local user in
/// the namespace hand the daemon their own memory map and join the vnet.
fn bind_private(path: &Path) -> std::io::Result<Listener> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let dir = path.parent().unwrap_or(Path::new("."));
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    // An existing directory (a dead daemon's) must be as this one would make it.
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() || meta.uid() != nix::unistd::geteuid().as_raw() || meta.mode() & 0o077 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "not a private directory of vnetd's uid (0700)",
        ));
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(Listener::from(listener))
}

/// Accepts connections until the port is dropped, one daemon per connection, from
/// front-ends `gate` lets in.
///
/// QEMU does not talk to the daemon directly: each connection goes through
/// [`relay`] over the private socket ([`bind_private`]), which holds back the one
/// message order `vhost` 0.18 cannot take (see [`relay`]).
fn serve(
    name: String,
    public: UnixListener,
    (mut private, private_path): (Listener, PathBuf),
    ends: WorkerEnds,
    shared: Arc<Shared>,
    gate: Gate,
) {
    let mut ends = Some(ends);
    while !shared.stop.load(Ordering::SeqCst) {
        let front_end = match public.accept() {
            Ok((stream, _)) => stream,
            Err(e) => {
                if !shared.stop.load(Ordering::SeqCst) {
                    warn!(port = name, "vhost-user accept failed: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                continue;
            }
        };
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        if !admitted(&gate, &name, &front_end) {
            let _ = front_end.shutdown(std::net::Shutdown::Both);
            continue;
        }
        let device = Arc::new(Mutex::new(NetDevice {
            mem: None,
            acked: 0,
            ends: Mutex::new(ends.take()),
            backlog: VecDeque::new(),
            scratch: Vec::new(),
            shared: shared.clone(),
        }));
        if let Err(e) = run_connection(
            &name,
            &shared,
            &device,
            front_end,
            (&mut private, &private_path),
        ) {
            warn!(port = name, "vhost-user connection failed: {}", Chain(&e));
        }
        shared.connected.store(false, Ordering::SeqCst);
        *shared.connection.lock().expect("lock") = None;
        let mut dev = device.lock().expect("lock");
        ends = dev.ends.get_mut().expect("lock").take();
        // Frames queued for a guest that went away are stale.
        if let Some(ends) = &ends {
            while let Ok(msg) = ends.to_guest.try_recv() {
                let _ = ends.spare_out.try_send(msg);
            }
        }
        drop(dev);
    }
}

/// Whether `gate` lets in the front-end on `conn` (refused: counted and logged; one
/// whose credentials the kernel will not give is refused too, logged).
fn admitted(gate: &Gate, name: &str, conn: &UnixStream) -> bool {
    let Some(client) = peer::credentials(conn) else {
        warn!(
            port = name,
            "refused a vhost-user front-end: the kernel gives no credentials"
        );
        return false;
    };
    let what = format!(
        "a vhost-user front-end of {name}, {}",
        peer::describe(Some(&client))
    );
    gate.admit(&client, &what).is_ok()
}

/// Serves one front-end until it goes away; the daemon and its worker are gone after.
fn run_connection(
    name: &str,
    shared: &Arc<Shared>,
    device: &Arc<Mutex<NetDevice>>,
    front_end: UnixStream,
    (private, private_path): (&mut Listener, &Path),
) -> Result<(), ConnectionError> {
    let mem = GuestMemoryAtomic::new(GuestMem::new());
    let mut daemon = VhostUserDaemon::new(format!("vhost-user-{name}"), device.clone(), mem)
        .map_err(ConnectionError::CreateDaemon)?;
    let result = (|| {
        if let Some(handler) = daemon.get_epoll_handlers().first() {
            handler
                .register_listener(shared.kick.as_raw_fd(), EventSet::IN, KICK_EVENT as u64)
                .map_err(ConnectionError::WatchKick)?;
        }
        let back_end = UnixStream::connect(private_path).map_err(ConnectionError::ConnectRelay)?;
        daemon
            .start(private)
            .map_err(ConnectionError::StartDaemon)?;
        let front_end_copy = front_end
            .try_clone()
            .map_err(ConnectionError::CloneSocket)?;
        *shared.connection.lock().expect("lock") = Some(front_end_copy);
        if shared.stop.load(Ordering::SeqCst) {
            let _ = front_end.shutdown(std::net::Shutdown::Both);
        }
        shared.connected.store(true, Ordering::SeqCst);
        info!(port = name, "vhost-user front-end connected");
        let f = front_end
            .try_clone()
            .map_err(ConnectionError::CloneSocket)?;
        let b = back_end.try_clone().map_err(ConnectionError::CloneSocket)?;
        let up = std::thread::Builder::new()
            .name(format!("vhost-user-{name}-relay"))
            .spawn(move || relay(f, b, true))
            .map_err(ConnectionError::SpawnRelay)?;
        relay(back_end, front_end, false);
        let _ = up.join();
        match daemon.wait() {
            Ok(()) => info!(port = name, "vhost-user front-end disconnected"),
            Err(e) => info!(port = name, "vhost-user connection ended: {e}"),
        }
        Ok(())
    })();
    for handler in daemon.get_epoll_handlers() {
        handler.send_exit_event();
    }
    drop(daemon);
    result
}

const SET_FEATURES: u32 = 2;
const SET_VRING_ENABLE: u32 = 18;
const HEADER: usize = 12;
/// Larger than any request we accept (`SET_MEM_TABLE` with 8 regions is 328 bytes).
const MAX_PAYLOAD: usize = 4096;

/// Copies vhost-user messages (with their fds) from `from` to `to` until either side
/// closes, then closes both.
///
/// From the front-end, `SET_VRING_ENABLE` requests that arrive before `SET_FEATURES`
/// are held back and replayed right after it: QEMU sends them while realizing the NIC,
/// and `vhost` 0.18 closes the connection on a `SET_VRING_ENABLE` before the
/// front-end acked `VHOST_USER_F_PROTOCOL_FEATURES`.
///
/// Public only for the fuzz target that feeds it a front-end's bytes.
#[doc(hidden)]
pub fn relay(from: UnixStream, to: UnixStream, from_front_end: bool) {
    use std::io::Read;
    let mut features_set = !from_front_end;
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut msg = Vec::with_capacity(HEADER + MAX_PAYLOAD);
    loop {
        let mut hdr = [0u8; HEADER];
        let (n, fds) = match fdpass::recv_with_fds(&from, &mut hdr) {
            Ok((0, _)) | Err(_) => break,
            Ok(got) => got,
        };
        if n < HEADER && (&from).read_exact(&mut hdr[n..]).is_err() {
            break;
        }
        let request = u32::from_le_bytes(hdr[0..4].try_into().expect("4 bytes"));
        let size = u32::from_le_bytes(hdr[8..12].try_into().expect("4 bytes")) as usize;
        if size > MAX_PAYLOAD {
            warn!("vhost-user: {size}-byte message (request {request}): closing");
            break;
        }
        msg.clear();
        msg.extend_from_slice(&hdr);
        msg.resize(HEADER + size, 0);
        if (&from).read_exact(&mut msg[HEADER..]).is_err() {
            break;
        }
        if !features_set && request == SET_VRING_ENABLE {
            held.push(msg.clone());
            continue;
        }
        if fdpass::send_with_fds(&to, &msg, &fds).is_err() {
            break;
        }
        if !features_set && request == SET_FEATURES {
            features_set = true;
            if held
                .drain(..)
                .any(|m| fdpass::send_with_fds(&to, &m, &[]).is_err())
            {
                break;
            }
        }
    }
    let _ = from.shutdown(std::net::Shutdown::Both);
    let _ = to.shutdown(std::net::Shutdown::Both);
}

/// The virtio-net device the vhost-user library drives (worker side).
struct NetDevice {
    mem: Option<GuestMemoryAtomic<GuestMem>>,
    acked: u64,
    /// Behind a lock only because `Receiver` is not `Sync`; only the worker takes it.
    ends: Mutex<Option<WorkerEnds>>,
    /// Frames for the guest taken from the channel but not delivered yet: one it had no
    /// room for, or the segments of a GSO frame it cannot take whole.
    backlog: VecDeque<Vec<u8>>,
    /// Where GSO frames are cut into segments (allocated on first use).
    scratch: Vec<u8>,
    shared: Arc<Shared>,
}

impl NetDevice {
    /// Guest TX queue → data plane.
    fn process_tx(&mut self, vring: &Vring) -> std::io::Result<()> {
        let ends = self.ends.lock().expect("lock");
        let (Some(mem), Some(ends)) = (&self.mem, ends.as_ref()) else {
            return Ok(());
        };
        let mem = mem.memory();
        let mut any = false;
        loop {
            let chain = vring
                .get_mut()
                .get_queue_mut()
                .pop_descriptor_chain(mem.clone());
            let Some(chain) = chain else { break };
            let head = chain.head_index();
            let mut msg = ends
                .spare_in
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(MAX_MESSAGE));
            msg.clear();
            let mut ok = true;
            for desc in chain {
                if desc.is_write_only() {
                    continue;
                }
                let len = desc.len() as usize;
                let start = msg.len();
                if start + len > MAX_MESSAGE {
                    ok = false;
                    break;
                }
                msg.resize(start + len, 0);
                if mem.read_slice(&mut msg[start..], desc.addr()).is_err() {
                    ok = false;
                    break;
                }
            }
            vring
                .add_used(head, 0)
                .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
            any = true;
            if !ok || msg.len() < VIRTIO_NET_HDR_LEN {
                self.shared.guest_malformed.fetch_add(1, Ordering::Relaxed);
                let _ = ends.spare_out.try_send(msg);
                continue;
            }
            if let Err(e) = ends.from_guest.try_send(msg) {
                self.shared.guest_overflow.fetch_add(1, Ordering::Relaxed);
                if let TrySendError::Full(msg) = e {
                    let _ = ends.spare_out.try_send(msg);
                }
            }
        }
        if any {
            vring.signal_used_queue()?;
            self.shared.ready.write(1)?;
        }
        Ok(())
    }

    /// Data plane → guest RX queue, merging buffers when the guest acked
    /// `VIRTIO_NET_F_MRG_RXBUF`.
    fn process_rx(&mut self, vring: &Vring) -> std::io::Result<()> {
        let ends = self.ends.lock().expect("lock");
        let (Some(mem), Some(ends)) = (&self.mem, ends.as_ref()) else {
            return Ok(());
        };
        let mem = mem.memory();
        let mergeable = self.acked & (1 << VIRTIO_NET_F_MRG_RXBUF) != 0;
        let mut any = false;
        let mut used: Vec<(u16, u32)> = Vec::with_capacity(32);
        loop {
            let msg = match self.backlog.pop_front() {
                Some(msg) => msg,
                None => match ends.to_guest.try_recv() {
                    Ok(msg) => match fit_offloads(msg, self.acked, &mut self.scratch, ends) {
                        Fitted::One(msg) => msg,
                        Fitted::Segments(segments) => {
                            self.backlog.extend(segments);
                            continue;
                        }
                        Fitted::Dropped => {
                            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    },
                    Err(_) => break,
                },
            };
            used.clear();
            let mut offset = 0;
            let mut first: Option<GuestAddress> = None;
            let mut bad = false;
            while offset < msg.len() {
                let chain = vring
                    .get_mut()
                    .get_queue_mut()
                    .pop_descriptor_chain(mem.clone());
                let Some(chain) = chain else { break };
                let head = chain.head_index();
                let mut written = 0usize;
                for desc in chain {
                    if !desc.is_write_only() {
                        continue;
                    }
                    if first.is_none() {
                        if (desc.len() as usize) < VIRTIO_NET_HDR_LEN {
                            bad = true;
                            break;
                        }
                        first = Some(desc.addr());
                    }
                    let n = (desc.len() as usize).min(msg.len() - offset);
                    if mem
                        .write_slice(&msg[offset..offset + n], desc.addr())
                        .is_err()
                    {
                        bad = true;
                        break;
                    }
                    offset += n;
                    written += n;
                    if offset == msg.len() {
                        break;
                    }
                }
                used.push((head, written as u32));
                if bad || !mergeable {
                    break;
                }
            }
            if bad || (offset < msg.len() && !mergeable && !used.is_empty()) {
                // The guest's buffers cannot hold this frame: hand them back unused
                // and drop it.
                for &(head, _) in &used {
                    vring
                        .add_used(head, 0)
                        .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
                }
                any |= !used.is_empty();
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                let _ = ends.spare_out.try_send(msg);
                continue;
            }
            if offset < msg.len() {
                // Out of buffers: put the chains back and wait for the guest's kick.
                let mut vring_state = vring.get_mut();
                let queue = vring_state.get_queue_mut();
                for _ in &used {
                    queue.go_to_previous_position();
                }
                drop(vring_state);
                self.backlog.push_front(msg);
                break;
            }
            if let Some(first) = first {
                let n = used.len() as u16;
                let _ = mem.write_slice(&n.to_le_bytes(), first.unchecked_add(10));
            }
            for &(head, len) in &used {
                vring
                    .add_used(head, len)
                    .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
            }
            any = true;
            let _ = ends.spare_out.try_send(msg);
        }
        if any {
            vring.signal_used_queue()?;
        }
        Ok(())
    }
}

/// A frame for the guest, made acceptable to it.
enum Fitted {
    One(Vec<u8>),
    Segments(Vec<Vec<u8>>),
    Dropped,
}

/// Makes `msg` (header + frame) something the guest's acked features allow: the data
/// plane hands GSO frames and partial checksums to every offloading port, and Linux
/// acks all we offer, but a guest that did not gets ordinary segments with complete
/// checksums (allocated here, off the data plane; rare by construction).
fn fit_offloads(mut msg: Vec<u8>, acked: u64, scratch: &mut Vec<u8>, ends: &WorkerEnds) -> Fitted {
    let has = |bit: u32| acked & (1 << bit) != 0;
    let Ok((hdr, _)) = VirtioNetHdr::split(&msg) else {
        return Fitted::Dropped;
    };
    let gso_ok = hdr.gso_type & VirtioNetHdr::GSO_ECN == 0
        && match hdr.gso_kind() {
            VirtioNetHdr::GSO_NONE => true,
            VirtioNetHdr::GSO_TCPV4 => has(VIRTIO_NET_F_GUEST_TSO4),
            VirtioNetHdr::GSO_TCPV6 => has(VIRTIO_NET_F_GUEST_TSO6),
            _ => false,
        };
    if gso_ok && (!hdr.needs_csum() || has(VIRTIO_NET_F_GUEST_CSUM)) {
        return Fitted::One(msg);
    }
    if !gso_ok {
        if scratch.is_empty() {
            scratch.resize(LARGE_CAPACITY, 0);
        }
        let mut segments = Vec::new();
        let frame = &msg[VIRTIO_NET_HDR_LEN..];
        let cut = offload::segment(frame, &hdr, scratch, |seg| {
            let mut out = ends
                .spare_in
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(MAX_MESSAGE));
            out.clear();
            out.extend_from_slice(&[0u8; VIRTIO_NET_HDR_LEN]);
            out.extend_from_slice(seg);
            segments.push(out);
        });
        let _ = ends.spare_out.try_send(msg);
        return match cut {
            Ok(_) => Fitted::Segments(segments),
            Err(_) => Fitted::Dropped,
        };
    }
    if offload::complete_checksum(&mut msg[VIRTIO_NET_HDR_LEN..], &hdr).is_err() {
        let _ = ends.spare_out.try_send(msg);
        return Fitted::Dropped;
    }
    msg[..VIRTIO_NET_HDR_LEN].fill(0);
    Fitted::One(msg)
}

impl VhostUserBackendMut for NetDevice {
    type Bitmap = BitmapMmapRegion;
    type Vring = Vring;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        offered_features()
    }

    fn acked_features(&mut self, features: u64) {
        tracing::debug!(
            "vhost-user: acked features {features:#x} of {:#x}",
            offered_features()
        );
        // QEMU sets it for the length of a live migration's RAM copy: then every page
        // written goes into the log (see `GuestMem`).
        let log_all = VhostUserVirtioFeatures::LOG_ALL.bits();
        if (features ^ self.acked) & log_all != 0 {
            let on = features & log_all != 0;
            info!(
                "vhost-user: dirty-page logging {} (live migration)",
                if on { "on" } else { "off" }
            );
        }
        self.acked = features;
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::LOG_SHMFD
    }

    fn set_event_idx(&mut self, _enabled: bool) {}

    fn update_memory(&mut self, mem: GuestMemoryAtomic<GuestMem>) -> std::io::Result<()> {
        self.mem = Some(mem);
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        // Without it, dropping the daemon joins workers that never stop.
        new_event_consumer_and_notifier(EventFlag::NONBLOCK).ok()
    }

    fn handle_event(
        &mut self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[Vring],
        _thread_id: usize,
    ) -> std::io::Result<()> {
        match device_event {
            RX_QUEUE => self.process_rx(&vrings[RX_QUEUE as usize]),
            TX_QUEUE => self.process_tx(&vrings[TX_QUEUE as usize]),
            KICK_EVENT => {
                let _ = self.shared.kick.read();
                self.shared.kicked.store(false, Ordering::SeqCst);
                self.process_rx(&vrings[RX_QUEUE as usize])
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::OwnedFd;

    fn message(request: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = request.to_le_bytes().to_vec();
        m.extend_from_slice(&1u32.to_le_bytes());
        m.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        m.extend_from_slice(payload);
        m
    }

    fn read_message(s: &mut UnixStream) -> Option<(u32, Vec<u8>)> {
        let mut hdr = [0u8; HEADER];
        s.read_exact(&mut hdr).ok()?;
        let size = u32::from_le_bytes(hdr[8..12].try_into().unwrap()) as usize;
        let mut payload = vec![0u8; size];
        s.read_exact(&mut payload).ok()?;
        Some((u32::from_le_bytes(hdr[0..4].try_into().unwrap()), payload))
    }

    #[test]
    fn the_relay_holds_vring_enables_until_set_features_and_passes_fds() {
        let (mut qemu, relay_in) = UnixStream::pair().unwrap();
        let (relay_out, mut backend) = UnixStream::pair().unwrap();
        backend
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let t = std::thread::spawn(move || relay(relay_in, relay_out, true));

        qemu.write_all(&message(3, &[])).unwrap(); // SET_OWNER
        qemu.write_all(&message(SET_VRING_ENABLE, &[0; 8])).unwrap();
        let enable_1 = [1, 0, 0, 0, 1, 0, 0, 0];
        qemu.write_all(&message(SET_VRING_ENABLE, &enable_1))
            .unwrap();
        let (fd_end, _keep) = UnixStream::pair().unwrap();
        let fds = [OwnedFd::from(fd_end)];
        fdpass::send_with_fds(&qemu, &message(13, &[0; 8]), &fds).unwrap(); // SET_VRING_CALL
        qemu.write_all(&message(SET_FEATURES, &[0; 8])).unwrap();
        qemu.write_all(&message(SET_VRING_ENABLE, &[0; 8])).unwrap();

        assert_eq!(read_message(&mut backend).unwrap().0, 3);
        let mut hdr = [0u8; HEADER];
        let (n, fds) = fdpass::recv_with_fds(&backend, &mut hdr).unwrap();
        assert_eq!((n, fds.len(), hdr[0]), (HEADER, 1, 13), "the fd travels");
        let mut rest = [0u8; 8];
        backend.read_exact(&mut rest).unwrap();
        assert_eq!(read_message(&mut backend).unwrap().0, SET_FEATURES);
        let held: Vec<_> = (0..3)
            .map(|_| read_message(&mut backend).unwrap())
            .collect();
        assert_eq!(
            held,
            vec![
                (SET_VRING_ENABLE, vec![0; 8]),
                (SET_VRING_ENABLE, enable_1.to_vec()),
                (SET_VRING_ENABLE, vec![0; 8]),
            ],
            "held back in order, replayed after SET_FEATURES"
        );

        // A message larger than any request closes both sides.
        let mut huge = message(5, &[]);
        huge[8..12].copy_from_slice(&(1u32 << 20).to_le_bytes());
        qemu.write_all(&huge).unwrap();
        t.join().unwrap();
        assert!(read_message(&mut backend).is_none());
    }

    #[test]
    fn names_are_file_names() {
        for ok in ["vm1", "a", "web-1.eth0", "_x", &"n".repeat(64)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", ".x", "a/b", "..", "a b", "é", &"n".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert_eq!(
            socket_path(Path::new("/run/vnet/lab"), "vm1"),
            Path::new("/run/vnet/lab/vhost-user/vm1.sock")
        );
    }

    #[test]
    fn offers_merged_buffers_offloads_and_protocol_features() {
        let f = offered_features();
        for bit in [
            VIRTIO_F_VERSION_1,
            VIRTIO_NET_F_MRG_RXBUF,
            VIRTIO_NET_F_CSUM,
            VIRTIO_NET_F_GUEST_CSUM,
            VIRTIO_NET_F_HOST_TSO4,
            VIRTIO_NET_F_HOST_TSO6,
            VIRTIO_NET_F_GUEST_TSO4,
            VIRTIO_NET_F_GUEST_TSO6,
            VIRTIO_NET_F_GUEST_ANNOUNCE,
        ] {
            assert_ne!(f & (1 << bit), 0, "bit {bit}");
        }
        assert_ne!(f & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits(), 0);
        assert_ne!(
            f & VhostUserVirtioFeatures::LOG_ALL.bits(),
            0,
            "live migration"
        );
    }

    fn ends() -> WorkerEnds {
        let (from_guest, _a) = sync_channel(1);
        let (_b, to_guest) = sync_channel(1);
        let (spare_out, _c) = sync_channel(4);
        let (_d, spare_in) = sync_channel(1);
        std::mem::forget((_a, _b, _c, _d));
        WorkerEnds {
            from_guest,
            to_guest,
            spare_out,
            spare_in,
        }
    }

    #[test]
    fn frames_the_guest_can_take_pass_and_headerless_ones_are_dropped() {
        let ends = ends();
        let mut scratch = Vec::new();
        let mut msg = vec![0u8; VIRTIO_NET_HDR_LEN + 60];
        msg[VIRTIO_NET_HDR_LEN] = 0xff;
        assert!(matches!(
            fit_offloads(msg.clone(), 0, &mut scratch, &ends),
            Fitted::One(m) if m == msg
        ));
        assert!(matches!(
            fit_offloads(vec![0; 5], 0, &mut scratch, &ends),
            Fitted::Dropped
        ));
        // A TCPv4 GSO header toward a guest that acked GUEST_TSO4 passes as it is.
        let mut gso = msg.clone();
        gso[1] = VirtioNetHdr::GSO_TCPV4;
        let acked = 1 << VIRTIO_NET_F_GUEST_TSO4 | 1 << VIRTIO_NET_F_GUEST_CSUM;
        assert!(matches!(
            fit_offloads(gso.clone(), acked, &mut scratch, &ends),
            Fitted::One(m) if m == gso
        ));
        // Without it, a frame that is not really TCP cannot be segmented: dropped.
        assert!(matches!(
            fit_offloads(gso, 0, &mut scratch, &ends),
            Fitted::Dropped
        ));
    }
}
