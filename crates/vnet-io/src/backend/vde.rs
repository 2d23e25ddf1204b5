//! VDE clients: every vnet answers as a VDE switch whose directory is `RUN/NET/vde`, so
//! QEMU `-netdev vde,sock=RUN/NET/vde`, `vde_plug RUN/NET/vde` (or `vde://RUN/NET/vde`)
//! and anything else linked with libvdeplug attach to it. One accepted connection on
//! `RUN/NET/vde/ctl` is one port. The byte layout is in `vnet_core::wire::vde`.
//!
//! The handshake, as `vde_switch` does it:
//! 1. The client binds a datagram socket of its own and sends a request naming it.
//! 2. We check that socket (below), connect the port's data socket to it, bind ours at
//!    `RUN/NET/vde/NNN.sock` and answer with its address (a `struct sockaddr_un`). The
//!    client connects to it (libvdeplug then unlinks its own path: the connection
//!    stands).
//! 3. One datagram is one frame, both ways, up to the vnet's max frame. Because our data
//!    socket is connected, the kernel accepts datagrams on it from the client's socket
//!    only.
//! 4. End of the control connection (or its error) closes the port. Bytes sent on it
//!    after the request are counted as malformed input and ignored.
//!
//! Permissions: the client's data socket must be a socket owned by the uid on the other
//! end of the control connection (`SO_PEERCRED`), unless that uid is 0, so a client
//! cannot make the vnet send frames into another user's socket. (`vde_switch` checks
//! `access()` as itself, which a root switch always passes; we check the owner, and
//! connect to the very inode we checked.) Our data socket is made the client's (`chown`
//! to that uid, mode 0600) as `vde_switch` does when it runs as root; a daemon that
//! cannot `chown` leaves it mode 0660, the mode of every other vnet socket. Whoever can
//! open `ctl` (mode 0660, in a sticky directory of mode 1770) can attach, as with the
//! other sockets.
//!
//! Both fds are watched under the port's one token, so the data plane sees one source.
//! The data socket exists (unbound) from the start, so registering it never waits for
//! the handshake. A request that never completes keeps its port pending (as an idle
//! stream client does); frames queued for it wait in its bounded queue.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mio::net::{UnixDatagram, UnixStream};
use nix::sys::socket::UnixAddr;
use tracing::info;
use vnet_core::switch::DropCause;
use vnet_core::wire::vde::{
    encode_sockaddr_un, parse_request, Request, RequestError, RequestType, MAX_REQUEST,
};
use vnet_model::PortKind;

use super::{send_error, Backend, Received, Sent, TX_BATCH};
use crate::admission::Client;
use crate::error::chain;
use crate::frame::FrameBuf;
use crate::sys::mmsg::SendBatch;
use crate::sys::peer;

/// Numbers the data sockets (`NNN.sock`); never reused while the daemon runs.
static NEXT_DATA_SOCKET: AtomicU32 = AtomicU32::new(1);

pub struct VdePort {
    ctl: UnixStream,
    data: UnixDatagram,
    /// `sendmmsg` headers for `data` (connected: no address).
    batch: Box<SendBatch<TX_BATCH>>,
    /// The switch directory (`RUN/NET/vde`).
    dir: PathBuf,
    net: String,
    /// The uid on the other end of the control connection (`SO_PEERCRED`).
    uid: u32,
    peer: String,
    /// The request as it arrives; `None` once the handshake is done.
    request: Option<Box<[u8; MAX_REQUEST]>>,
    request_len: usize,
    /// The request must be complete by then (`[limits] vde_handshake_secs`).
    handshake_deadline: Instant,
    handshake_secs: u64,
    /// The deadline passed without a request: the port closes.
    handshake_expired: bool,
    /// Our data socket's path, once bound (unlinked on drop).
    data_path: Option<PathBuf>,
    description: Option<String>,
}

/// Why a VDE port could not be made or its client's handshake failed (the port is
/// closed): the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum VdeError {
    #[error("cannot create the port's data socket")]
    CreateDataSocket(#[source] io::Error),
    #[error("client closed the control connection before its request")]
    ClosedBeforeRequest,
    #[error("truncated request: {0} bytes, then the client closed the connection")]
    TruncatedRequest(usize),
    #[error("reading the request failed")]
    ReadRequest(#[source] io::Error),
    #[error("refused the request")]
    BadRequest(#[source] RequestError),
    #[error("the client's data socket {} is not an absolute path", .0.display())]
    RelativeClientSocket(PathBuf),
    #[error("cannot open the client's data socket {}", .0.display())]
    OpenClientSocket(PathBuf, #[source] io::Error),
    #[error("cannot stat the client's data socket {}", .0.display())]
    StatClientSocket(PathBuf, #[source] io::Error),
    #[error("the client's data socket {} is not a socket", .0.display())]
    NotASocket(PathBuf),
    #[error(
        "the client's data socket {} belongs to uid {owner}, not to the connecting uid {uid}",
        .path.display()
    )]
    ForeignClientSocket { path: PathBuf, owner: u32, uid: u32 },
    #[error("cannot connect to the client's data socket {}", .0.display())]
    ConnectClientSocket(PathBuf, #[source] nix::Error),
    #[error("the data socket path {} is too long for a unix socket address", .0.display())]
    DataSocketPathTooLong(PathBuf),
    #[error("cannot bind the data socket {}", .0.display())]
    BindDataSocket(PathBuf, #[source] nix::Error),
    #[error("cannot stat the data socket {}", .0.display())]
    StatDataSocket(PathBuf, #[source] io::Error),
    #[error("cannot set the mode of {}", .0.display())]
    SetDataSocketMode(PathBuf, #[source] io::Error),
    #[error("answer cut short ({0} bytes written)")]
    AnswerCutShort(usize),
    #[error("cannot answer the request")]
    Answer(#[source] io::Error),
}

impl VdePort {
    /// Wraps an accepted connection on `dir/ctl` of vnet `net` from `client`. Its
    /// client must send the request within `handshake`.
    pub fn new(
        ctl: UnixStream,
        client: &Client,
        dir: &Path,
        net: &str,
        handshake: Duration,
    ) -> Result<Self, VdeError> {
        let peer = peer::describe(Some(client));
        let uid = client.uid;
        Ok(VdePort {
            data: UnixDatagram::unbound().map_err(VdeError::CreateDataSocket)?,
            batch: SendBatch::new(None).map_err(VdeError::CreateDataSocket)?,
            ctl,
            dir: dir.to_path_buf(),
            net: net.to_string(),
            uid,
            peer,
            request: Some(Box::new([0; MAX_REQUEST])),
            request_len: 0,
            handshake_deadline: Instant::now() + handshake,
            handshake_secs: handshake.as_secs(),
            handshake_expired: false,
            data_path: None,
            description: None,
        })
    }

    /// Reads the request; `Ok(true)` once the port is open, `Ok(false)` while waiting.
    fn read_request(&mut self) -> Result<bool, VdeError> {
        let Some(buf) = self.request.as_mut() else {
            return Ok(true);
        };
        loop {
            match self.ctl.read(&mut buf[self.request_len..]) {
                Ok(0) if self.request_len == 0 => return Err(VdeError::ClosedBeforeRequest),
                Ok(0) => return Err(VdeError::TruncatedRequest(self.request_len)),
                Ok(n) => self.request_len += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(VdeError::ReadRequest(e)),
            }
            match parse_request(&buf[..self.request_len]) {
                Err(e) => return Err(VdeError::BadRequest(e)),
                Ok(None) => continue,
                Ok(Some(request)) => {
                    self.open(&request)?;
                    self.request = None;
                    return Ok(true);
                }
            }
        }
    }

    /// Checks the client's data socket, binds and connects ours, and answers.
    fn open(&mut self, request: &Request) -> Result<(), VdeError> {
        let client = Path::new(OsStr::from_bytes(&request.data_path));
        let shown = client.display();
        let client_path = || client.to_path_buf();
        if !client.is_absolute() {
            return Err(VdeError::RelativeClientSocket(client_path()));
        }
        // Check and connect to the same inode: an O_PATH fd pins it, and connecting
        // through /proc/self/fd/N reaches it even if the path is swapped meanwhile.
        let target = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
            .open(client)
            .map_err(|e| VdeError::OpenClientSocket(client_path(), e))?;
        let meta = target
            .metadata()
            .map_err(|e| VdeError::StatClientSocket(client_path(), e))?;
        if !meta.file_type().is_socket() {
            return Err(VdeError::NotASocket(client_path()));
        }
        let owner = meta.uid();
        if self.uid != 0 && self.uid != owner {
            return Err(VdeError::ForeignClientSocket {
                path: client_path(),
                owner,
                uid: self.uid,
            });
        }

        // Connected before it has a name: from the moment it is bound, the kernel takes
        // datagrams for it from the client's socket only.
        let pinned = format!("/proc/self/fd/{}", target.as_raw_fd());
        let connect = UnixAddr::new(pinned.as_str())
            .and_then(|addr| nix::sys::socket::connect(self.data.as_raw_fd(), &addr));
        connect.map_err(|e| VdeError::ConnectClientSocket(client_path(), e))?;

        let n = NEXT_DATA_SOCKET.fetch_add(1, Ordering::Relaxed);
        let ours = self.dir.join(format!("{n:03}.sock"));
        let Some(reply) = encode_sockaddr_un(ours.as_os_str().as_bytes()) else {
            return Err(VdeError::DataSocketPathTooLong(ours));
        };
        let _ = std::fs::remove_file(&ours);
        let bind = UnixAddr::new(&ours)
            .and_then(|addr| nix::sys::socket::bind(self.data.as_raw_fd(), &addr));
        bind.map_err(|e| VdeError::BindDataSocket(ours.clone(), e))?;
        self.data_path = Some(ours.clone());
        let ours_meta =
            std::fs::metadata(&ours).map_err(|e| VdeError::StatDataSocket(ours.clone(), e))?;
        let mode = if ours_meta.uid() == owner
            || std::os::unix::fs::chown(&ours, Some(owner), None).is_ok()
        {
            0o600
        } else {
            0o660
        };
        std::fs::set_permissions(&ours, std::fs::Permissions::from_mode(mode))
            .map_err(|e| VdeError::SetDataSocketMode(ours.clone(), e))?;

        match self.ctl.write(&reply) {
            Ok(n) if n == reply.len() => {}
            Ok(n) => return Err(VdeError::AnswerCutShort(n)),
            Err(e) => return Err(VdeError::Answer(e)),
        }
        let asked = match request.request {
            RequestType::NewPort { port: 0 } => String::new(),
            RequestType::NewPort { port } => format!(", asked for port {port}"),
            RequestType::NewPort0 => ", asked for management port 0".to_string(),
        };
        info!(
            net = self.net,
            "vde client {} connected (protocol v{}{asked}): {:?}, data {} <-> {shown}",
            self.peer,
            request.version.number(),
            request.description,
            ours.display(),
        );
        self.description = Some(request.description.clone());
        Ok(())
    }

    /// After the data socket ran dry: did the client close the control connection?
    fn check_control(&mut self) -> Received {
        let mut scratch = [0u8; 256];
        loop {
            return match self.ctl.read(&mut scratch) {
                Ok(0) => Received::Closed("client closed the control connection".into()),
                Ok(n) => Received::Dropped(
                    DropCause::Malformed,
                    format!("{n} unexpected bytes on the control connection"),
                ),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Received::WouldBlock,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Received::Closed(format!("control connection failed: {e}")),
            };
        }
    }
}

impl Backend for VdePort {
    fn kind(&self) -> PortKind {
        PortKind::Vde
    }

    fn description(&self) -> String {
        match &self.description {
            Some(d) if d.is_empty() => format!("vde {}", self.peer),
            Some(d) => format!("vde {d} [{}]", self.peer),
            None => format!("vde (awaiting its request) {}", self.peer),
        }
    }

    fn source(&mut self) -> Option<&mut dyn mio::event::Source> {
        Some(self)
    }

    fn recv(&mut self, buf: &mut FrameBuf) -> Received {
        if self.handshake_expired {
            return Received::Closed(format!(
                "no request within {} s (`[limits] vde_handshake_secs`)",
                self.handshake_secs
            ));
        }
        match self.read_request() {
            Ok(true) => {}
            Ok(false) => return Received::WouldBlock,
            Err(why) => return Received::Closed(chain(&why)),
        }
        loop {
            return match self.data.recv(buf.recv_space()) {
                Ok(n) => {
                    // A datagram longer than the buffer is cut to fill it: the switch
                    // sees one byte more than a frame may have and counts it oversize.
                    buf.set_len(n);
                    Received::Frame
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.check_control(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Received::Closed(format!("data receive failed: {e}")),
            };
        }
    }

    /// The handshake's deadline, while the request is awaited.
    fn deadline(&self) -> Option<Instant> {
        (self.request.is_some() && !self.handshake_expired).then_some(self.handshake_deadline)
    }

    fn tick(&mut self, now: Instant) {
        if self.request.is_some() && now >= self.handshake_deadline {
            self.handshake_expired = true;
        }
    }

    fn send_batch(&mut self, frames: &[FrameBuf]) -> (usize, Sent) {
        if self.request.is_some() && !frames.is_empty() {
            // Not connected yet: the frames wait in the queue.
            return (0, Sent::WouldBlock);
        }
        let (sent, result) = self
            .batch
            .send(self.data.as_fd(), frames.iter().map(FrameBuf::frame));
        let outcome = match result {
            Ok(()) => Sent::Done,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNREFUSED | libc::ENOTCONN)) => {
                Sent::Closed(format!("the client's data socket is gone ({e})"))
            }
            Err(e) => send_error(e),
        };
        (sent, outcome)
    }
}

impl mio::event::Source for VdePort {
    fn register(&mut self, r: &mio::Registry, t: mio::Token, i: mio::Interest) -> io::Result<()> {
        self.ctl.register(r, t, i)?;
        self.data.register(r, t, i)
    }

    fn reregister(&mut self, r: &mio::Registry, t: mio::Token, i: mio::Interest) -> io::Result<()> {
        self.ctl.reregister(r, t, i)?;
        self.data.reregister(r, t, i)
    }

    fn deregister(&mut self, r: &mio::Registry) -> io::Result<()> {
        let ctl = self.ctl.deregister(r);
        self.data.deregister(r)?;
        ctl
    }
}

impl Drop for VdePort {
    fn drop(&mut self) {
        if let Some(path) = &self.data_path {
            let _ = std::fs::remove_file(path);
        }
    }
}
