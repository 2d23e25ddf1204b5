//! vhost-user-net back-end: a QEMU (or cloud-hypervisor) virtio-net NIC as a port.
//!
//! The vhost-user protocol is served by rust-vmm's `vhost-user-backend` on the port's
//! own threads (one for the socket, a worker per connection); the virtqueues are
//! driven by the data plane itself (`vhost_user/rings.rs`): once the front-end has set
//! them up, the worker hands over the guest's memory map and vrings, and every frame is
//! then one copy between guest memory and a frame buffer in the data-plane thread, with
//! no channel and no thread hop:
//!
//! ```text
//!  guest TX queue ──data plane (recv)──▶ switch ──data plane (send_batch)──▶ guest RX queue
//!  guest kicks ──▶ worker's epoll ──▶ `ready` eventfd ──▶ data plane's poll
//! ```
//!
//! Each frame keeps its `virtio_net_hdr_v1`, so offload metadata (GSO, partial
//! checksums) passes between offloading ports untouched.
//!
//! The port outlives connections: a thread accepts on `RUN/NET/vhost-user/NAME.sock`,
//! runs one `VhostUserDaemon` per connection and, when QEMU goes away, accepts the next.
//! A front-end the vnet's allow lists refuse (its `SO_PEERCRED`, `SO_PEERGROUPS`) is
//! disconnected at once; the port made by the control API is its requester's.

mod rings;

use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tracing::{info, warn};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::Listener;
use vhost_user_backend::bitmap::BitmapMmapRegion;
use vhost_user_backend::{VhostUserBackendMut, VhostUserDaemon, VringRwLock};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_ANNOUNCE, VIRTIO_NET_F_GUEST_CSUM,
    VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_TSO4,
    VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MRG_RXBUF,
};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use vnet_core::switch::DropCause;
use vnet_model::PortKind;

pub use self::rings::guest_message;
use self::rings::{Queues, Rings};
use super::{Backend, Identity, Received, Sent, WatchedFd};
use crate::admission::Gate;
use crate::error::Chain;
use crate::frame::FrameBuf;
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
    #[error("cannot watch the data plane's eventfd")]
    WatchWant(#[source] std::io::Error),
    #[error("cannot connect the relay to the daemon's private socket")]
    ConnectRelay(#[source] std::io::Error),
    #[error("cannot start the vhost-user daemon: {0}")]
    StartDaemon(vhost_user_backend::Error),
    #[error("cannot duplicate a socket")]
    CloneSocket(#[source] std::io::Error),
    #[error("cannot start the relay thread")]
    SpawnRelay(#[source] std::io::Error),
}

const RX_QUEUE: usize = 0;
const TX_QUEUE: usize = 1;
const NUM_QUEUES: usize = 2;
const QUEUE_SIZE: usize = 1024;
/// `handle_event` id of the data plane's `want` (ids up to `NUM_QUEUES` are reserved).
const WANT_EVENT: u64 = NUM_QUEUES as u64 + 1;

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
/// used rings, by the data plane) marks its page, so QEMU copies it again. Without it
/// QEMU refuses to migrate a guest on this back-end.
type GuestMem = GuestMemoryMmap<BitmapMmapRegion>;
/// A vring over [`GuestMem`].
type Vring = VringRwLock<GuestMemoryAtomic<GuestMem>>;

/// The feature bits we offer: merged RX buffers and the offloads `FrameBuf::offload`
/// carries through the switch, event indices (kicks and interrupts only when the other
/// side waits), `VHOST_F_LOG_ALL` (dirty-page logging, with the `LOG_SHMFD` protocol
/// feature: live migration), `GUEST_ANNOUNCE` (after a migration QEMU has the guest
/// announce itself, through us; without it a vhost-user guest is announced by nobody
/// and the vnet finds it seconds later, on its next frame) and
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
        | 1 << VIRTIO_RING_F_EVENT_IDX
        | 1 << VIRTIO_NET_F_GUEST_ANNOUNCE
        | VhostUserVirtioFeatures::LOG_ALL.bits()
        | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
}

/// State both sides read.
struct Shared {
    stop: AtomicBool,
    connected: AtomicBool,
    /// Worker → data plane: the guest kicked a queue, or the queues changed hands.
    /// Never read: every write is an edge for the data plane's epoll, which reports it
    /// readable (look at the TX queue) and writable (the RX queue may have room).
    ready: EventFd,
    /// The connection's queues, once the worker handed them over.
    rings: Mutex<Option<Rings>>,
    /// Bumped whenever `rings` changes: the data plane looks again.
    generation: AtomicU64,
    /// Data plane → worker: frames for a connected guest wait, hand the queues over
    /// now (the guest may not kick until it has something to send).
    want: EventFd,
    /// The front-end's socket, to cut it when the port goes away (control path only).
    connection: Mutex<Option<UnixStream>>,
}

impl Shared {
    fn hand_over(&self, rings: Option<Rings>) {
        *self.rings.lock().expect("lock") = rings;
        self.generation.fetch_add(1, Ordering::Release);
        let _ = self.ready.write(1);
    }
}

/// A vhost-user-net port, as the data plane sees it.
pub struct VhostUserPort {
    name: String,
    path: PathBuf,
    shared: Arc<Shared>,
    ready: WatchedFd,
    thread: Option<JoinHandle<()>>,
    /// The queues of the connected front-end, as of `generation`.
    queues: Option<Queues>,
    generation: u64,
    /// The generation at which the data plane last asked for the queues.
    wanted: Option<u64>,
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
            ready: EventFd::new(EFD_NONBLOCK).map_err(VhostUserError::CreateEventFd)?,
            want: EventFd::new(EFD_NONBLOCK).map_err(VhostUserError::CreateEventFd)?,
            rings: Mutex::new(None),
            generation: AtomicU64::new(0),
            connection: Mutex::new(None),
        });
        let thread_shared = shared.clone();
        let thread_name = name.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("vhost-user-{name}"))
            .spawn(move || {
                serve(
                    thread_name,
                    listener,
                    (private, private_path),
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
            ready,
            thread: Some(thread),
            queues: None,
            generation: 0,
            wanted: None,
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

    /// The queues of the connected front-end, if it has set them up.
    fn queues(&mut self) -> Option<&mut Queues> {
        let now = self.shared.generation.load(Ordering::Acquire);
        if now != self.generation {
            self.generation = now;
            let rings = self.shared.rings.lock().expect("lock").clone();
            self.queues = rings.map(Queues::new);
        }
        self.queues.as_mut()
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
        format!("vhost-user {} {} ({state})", self.name, self.path.display())
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
        match self.queues() {
            Some(queues) => queues.recv(buf),
            None => Received::WouldBlock,
        }
    }

    fn send_batch(&mut self, frames: &[FrameBuf]) -> (usize, Sent) {
        if frames.is_empty() {
            return (0, Sent::Done);
        }
        if let Some(queues) = self.queues() {
            return queues.send(frames);
        }
        if !self.shared.connected.load(Ordering::Relaxed) {
            return (0, Sent::Dropped(DropCause::LinkDown));
        }
        // Connected, queues not handed over yet: ask once, wait for `ready`.
        if self.wanted != Some(self.generation) {
            self.wanted = Some(self.generation);
            let _ = self.shared.want.write(1);
        }
        (0, Sent::WouldBlock)
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
    shared: Arc<Shared>,
    gate: Gate,
) {
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
            handed_over: false,
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
        // The data plane lets go of the guest's memory and rings.
        shared.hand_over(None);
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
                .register_listener(shared.want.as_raw_fd(), EventSet::IN, WANT_EVENT)
                .map_err(ConnectionError::WatchWant)?;
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

/// The virtio-net device the vhost-user library drives (worker side): it serves the
/// protocol and hands the queues to the data plane once the front-end kicks them.
struct NetDevice {
    mem: Option<GuestMemoryAtomic<GuestMem>>,
    acked: u64,
    /// Whether the data plane has this connection's queues.
    handed_over: bool,
    shared: Arc<Shared>,
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
        // A driver that starts over may ack others: the data plane takes them again at
        // the next kick.
        self.handed_over = false;
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

    /// A guest kick or the data plane's `want`: the first hands the queues over, each
    /// kick after that wakes the data plane.
    fn handle_event(
        &mut self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[Vring],
        _thread_id: usize,
    ) -> std::io::Result<()> {
        let kick = usize::from(device_event) < NUM_QUEUES;
        if u64::from(device_event) == WANT_EVENT {
            let _ = self.shared.want.read();
        } else if !kick {
            return Ok(());
        }
        match (&self.mem, self.handed_over) {
            (Some(mem), false) if vrings.len() == NUM_QUEUES => {
                self.handed_over = true;
                self.shared.hand_over(Some(Rings {
                    mem: mem.clone(),
                    rx: vrings[RX_QUEUE].clone(),
                    tx: vrings[TX_QUEUE].clone(),
                    acked: self.acked,
                }));
            }
            _ if kick => {
                self.shared.ready.write(1)?;
            }
            _ => {}
        }
        Ok(())
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
    fn offers_merged_buffers_offloads_event_indices_and_protocol_features() {
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
            VIRTIO_RING_F_EVENT_IDX,
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
}
