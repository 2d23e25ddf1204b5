//! The data plane: a few threads, each one epoll loop over the vnets placed on it.
//!
//! Each turn of a loop reads a bounded batch from every readable port, lets the
//! switch decide each frame, appends it to the bounded egress queue of each destination
//! (dropping and counting when full), then drains every queue that has frames as far
//! as its client takes them. A client that stops reading only fills its own queue.
//!
//! A vnet lives on one thread for its whole life, so the frame path takes no lock and
//! crosses no thread. Several busy vnets use several cores; one vnet cannot (its
//! switch is one sequence of decisions). The `directory` module places vnets and holds the
//! little that threads must agree on.
//!
//! The control plane talks to the loops through [`Handle`]: commands over a channel per
//! thread plus a [`mio::Waker`]; replies come back on oneshot channels, with a
//! [`ControlError`] that names what failed.
//!
//! - `thread`: one thread's loop (its theory of operation is there), the commands it
//!   carries out, the making of vnets and ports, the host NICs' uplink sockets; and
//!   the in-process harness that drives it turn by turn in tests.
//! - `vnet`: one vnet: its switch, ports and queues, the frame path through them, its
//!   sockets and its reports.
//! - `queue`: a port's bounded egress queue. `directory`: what threads share.
//! - `limits`: the bounds on what clients can make the daemon hold, and the count of
//!   refusals.

mod capture;
mod directory;
mod error;
mod limits;
mod policy;
mod queue;
mod shape;
mod thread;
mod vnet;

pub use capture::{Capture, CaptureSpec, Drops, Record, CAPTURE_BUFFER};
pub use error::{Conflict, ControlError, ErrorKind, Missing};
pub(crate) use limits::Refusals;
pub use limits::{LimitHit, LimitRefusals, Limits, DEVICE_OPENS};
pub use policy::AclEdit;
pub use queue::QUEUE_CAPACITY;

use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use tokio::sync::oneshot;
use vnet_model::{
    DhcpPatch, DhcpSpec, Lease, MacAddr, MacEntry, NetworkInfo, NetworkSpec, PortInfo, PortSpec,
    Reservation, UplinkSpec, VlanMode,
};

use crate::admission::{AllowList, Client, Requester};
use directory::Directory;

type Reply<T> = oneshot::Sender<Result<T, ControlError>>;

/// Work for the data-plane thread.
pub(crate) enum Command {
    /// A vnet and its allow lists, resolved by the caller (off the data plane: names may
    /// need a directory service). Boxed: the largest command by far.
    CreateNetwork(Box<(NetworkSpec, AllowList)>, Reply<NetworkInfo>),
    DeleteNetwork(String, Reply<()>),
    Networks(Reply<Vec<NetworkInfo>>),
    Network(String, Reply<NetworkInfo>),
    Spec(String, Reply<NetworkSpec>),
    /// A port through the control API, for a client (`None`: vnetd's configuration).
    AddPort(String, PortSpec, Option<Requester>, Reply<PortInfo>),
    RemovePort(String, u32, Reply<()>),
    Ports(String, Reply<Vec<PortInfo>>),
    Port(String, u32, Reply<PortInfo>),
    Macs(String, Reply<Vec<MacEntry>>),
    Leases(String, Reply<Vec<Lease>>),
    SetDhcp(String, DhcpSpec, Reply<NetworkInfo>),
    /// Applied to the settings the vnet has when the command runs: nothing can come
    /// between reading and writing them.
    PatchDhcp(String, DhcpPatch, Reply<NetworkInfo>),
    AddReservation(String, Reservation, Reply<Reservation>),
    RemoveReservation(String, MacAddr, Reply<()>),
    SetUplink(String, UplinkSpec, Reply<PortInfo>),
    RemoveUplink(String, Reply<()>),
    AddRemote(String, std::net::IpAddr, Reply<PortInfo>),
    RemoveRemote(String, std::net::IpAddr, Reply<()>),
    Fdb(String, Reply<Vec<vnet_model::FdbEntry>>),
    AddFdb(String, vnet_model::FdbSpec, Reply<vnet_model::FdbSpec>),
    RemoveFdb(String, MacAddr, Reply<()>),
    Forwards(String, Reply<Vec<vnet_model::ForwardSpec>>),
    AddForward(
        String,
        vnet_model::ForwardSpec,
        Reply<vnet_model::ForwardSpec>,
    ),
    RemoveForward(
        String,
        vnet_model::ForwardProto,
        std::net::SocketAddr,
        Reply<()>,
    ),
    SetPortVlan(String, u32, VlanMode, Reply<PortInfo>),
    /// Changes a port's own policy.
    SetPortPolicy(String, u32, vnet_model::PolicyPatch, Reply<PortInfo>),
    /// Edits a port's filters (what applies to it now becomes its own, changed).
    EditPortAcl(String, u32, policy::AclEdit, Reply<PortInfo>),
    /// Changes the policy of a vnet's client ports; answers it as it is then.
    SetPolicy(
        String,
        vnet_model::PolicyPatch,
        Reply<vnet_model::PortPolicy>,
    ),
    /// A vnet's mirrors as they run.
    Mirrors(String, Reply<Vec<vnet_model::MirrorInfo>>),
    AddMirror(
        String,
        vnet_model::MirrorSpec,
        Reply<vnet_model::MirrorInfo>,
    ),
    RemoveMirror(String, String, Reply<()>),
    /// Replaces a vnet's mirrors (a reload).
    SetMirrors(String, Vec<vnet_model::MirrorSpec>, Reply<()>),
    /// A classic-device open by a client: attach the data plane's end of a socket pair
    /// as a port.
    AttachDevice(String, std::os::fd::OwnedFd, Client, Reply<u32>),
    /// Starts a live capture (its ports are checked first).
    Capture(String, CaptureSpec, Reply<Capture>),
    Shutdown,
}

/// The control plane's grip on the data plane. Cheap to clone.
#[derive(Clone)]
pub struct Handle {
    threads: Arc<[Mailbox]>,
    directory: Arc<Mutex<Directory>>,
    refusals: Arc<limits::Refusals>,
    limits: Limits,
}

/// How to reach one data-plane thread.
struct Mailbox {
    commands: mpsc::Sender<Command>,
    waker: Arc<mio::Waker>,
}

/// How the data-plane threads run.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// How many (at least one); each vnet runs on one of them.
    pub threads: usize,
    /// After a turn that moved frames, poll again without sleeping for this long. A
    /// thread asleep on an idle core is slow to wake (tens of µs in a VM whose idle
    /// vCPUs halt), so spinning cuts latency at the cost of a busy core while traffic
    /// flows. Zero (the default) never spins.
    pub busy_poll: std::time::Duration,
}

/// The running data-plane threads.
pub struct DataPlane {
    handle: Handle,
    threads: Vec<JoinHandle<()>>,
}

impl DataPlane {
    /// Starts the threads. Each vnet's sockets go under `run_dir/NAME/`, its state
    /// (DHCP leases) under `state_dir/NAME/`; what clients make is bounded by `limits`.
    pub fn spawn(
        run_dir: PathBuf,
        state_dir: PathBuf,
        tuning: Tuning,
        limits: Limits,
    ) -> std::io::Result<Self> {
        let threads = tuning.threads.max(1);
        let refusals = Arc::new(limits::Refusals::default());
        let uid_ports = Arc::new(limits::UidPorts::default());
        let directory = Arc::new(Mutex::new(Directory::new(
            threads,
            limits.vnets,
            Arc::clone(&refusals),
        )));
        let mut reach = Vec::with_capacity(threads);
        let mut joins = Vec::with_capacity(threads);
        for index in 0..threads {
            let (tx, rx) = mpsc::channel();
            let poll = mio::Poll::new()?;
            let waker = Arc::new(mio::Waker::new(poll.registry(), thread::WAKER)?);
            let (run_dir, state_dir) = (run_dir.clone(), state_dir.clone());
            let directory = directory.clone();
            let refusals = Arc::clone(&refusals);
            let uid_ports = Arc::clone(&uid_ports);
            let thread = std::thread::Builder::new()
                .name(format!("vnet-dataplane{index}"))
                .spawn(move || {
                    thread::Thread::new(poll, index, run_dir, state_dir, rx, directory)
                        .with_limits(limits, refusals)
                        .with_uid_ports(uid_ports)
                        .run(tuning.busy_poll)
                })?;
            joins.push(thread);
            reach.push(Mailbox {
                commands: tx,
                waker,
            });
        }
        Ok(DataPlane {
            handle: Handle {
                threads: reach.into(),
                directory,
                refusals,
                limits,
            },
            threads: joins,
        })
    }

    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Whether every thread still runs. They only end on shutdown, or if one failed.
    pub fn is_running(&self) -> bool {
        !self.threads.is_empty() && self.threads.iter().all(|t| !t.is_finished())
    }

    /// Closes every port and vnet (removing their sockets) and joins the threads.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        for (index, t) in self.threads.drain(..).enumerate() {
            if self.handle.send(index, Command::Shutdown).is_ok() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Handle {
    fn send(&self, thread: usize, cmd: Command) -> Result<(), ControlError> {
        let t = &self.threads[thread];
        t.commands.send(cmd).map_err(|_| ControlError::Stopped)?;
        t.waker.wake().map_err(ControlError::Wake)
    }

    fn directory(&self) -> MutexGuard<'_, Directory> {
        directory::lock(&self.directory)
    }

    async fn call_on<T>(
        &self,
        thread: usize,
        make: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<T, ControlError> {
        let (tx, rx) = oneshot::channel();
        self.send(thread, make(tx))?;
        rx.await.map_err(|_| ControlError::Stopped)?
    }

    /// Same as [`Handle::call_on`], for threads outside any runtime (start-up, FUSE).
    fn call_on_blocking<T>(
        &self,
        thread: usize,
        make: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<T, ControlError> {
        let (tx, rx) = oneshot::channel();
        self.send(thread, make(tx))?;
        rx.blocking_recv().map_err(|_| ControlError::Stopped)?
    }

    /// Sends a command about vnet `net` to the thread that runs it.
    async fn call<T>(
        &self,
        net: String,
        make: impl FnOnce(String, Reply<T>) -> Command,
    ) -> Result<T, ControlError> {
        let thread = self.directory().thread_of(&net)?;
        self.call_on(thread, |r| make(net, r)).await
    }

    fn call_blocking<T>(
        &self,
        net: String,
        make: impl FnOnce(String, Reply<T>) -> Command,
    ) -> Result<T, ControlError> {
        let thread = self.directory().thread_of(&net)?;
        self.call_on_blocking(thread, |r| make(net, r))
    }

    /// Places the vnet on a thread (reserving its name) and makes it there; the thread
    /// frees the name if that fails.
    pub async fn create_network(&self, spec: NetworkSpec) -> Result<NetworkInfo, ControlError> {
        let allow = checked(&spec)?;
        let thread = self.directory().place(&spec)?;
        self.call_on(thread, |r| {
            Command::CreateNetwork(Box::new((spec, allow)), r)
        })
        .await
    }

    /// Removes the vnet; its thread frees the name.
    pub async fn delete_network(&self, name: String) -> Result<(), ControlError> {
        self.call(name, Command::DeleteNetwork).await
    }

    /// Counts (and logs, rate-limited) one refusal by a daemon-wide limit the control
    /// plane enforces, such as `control_connections`; it shows in [`Self::limit_refusals`].
    pub fn refuse(&self, limit: &'static str, what: &str) {
        self.refusals.refuse(None, limit, what);
    }

    /// The bounds the data plane was started with (the classic devices keep theirs).
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// How many times each limit refused something (vnets that are gone forgotten).
    pub fn limit_refusals(&self) -> Vec<LimitRefusals> {
        self.refusals.rows()
    }

    /// Every vnet on every thread, by name.
    pub async fn networks(&self) -> Result<Vec<NetworkInfo>, ControlError> {
        let mut all = Vec::new();
        for thread in 0..self.threads.len() {
            all.extend(self.call_on(thread, Command::Networks).await?);
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    pub async fn network(&self, name: String) -> Result<NetworkInfo, ControlError> {
        self.call(name, Command::Network).await
    }

    /// What the vnet is now: its spec with every live change (DHCP, reservations,
    /// forwards, uplink) applied, as the state file saves it.
    pub async fn spec(&self, name: String) -> Result<NetworkSpec, ControlError> {
        self.call(name, Command::Spec).await
    }

    /// Adds a TAP or vhost-user port for `by` (`None`: vnetd itself, as its
    /// configuration says), who must be let in by the vnet's allow lists unless an admin,
    /// and is counted in `[limits] ports_per_uid`.
    pub async fn add_port(
        &self,
        net: String,
        spec: PortSpec,
        by: Option<Requester>,
    ) -> Result<PortInfo, ControlError> {
        self.call(net, |net, r| Command::AddPort(net, spec, by, r))
            .await
    }

    /// The configuration's port (vnetd's own), at start.
    pub async fn remove_port(&self, net: String, id: u32) -> Result<(), ControlError> {
        self.call(net, |net, r| Command::RemovePort(net, id, r))
            .await
    }

    /// Starts a live capture on vnet `net`; it runs until its [`Capture`] is dropped.
    pub async fn capture(&self, net: String, spec: CaptureSpec) -> Result<Capture, ControlError> {
        self.call(net, |net, r| Command::Capture(net, spec, r))
            .await
    }

    pub async fn ports(&self, net: String) -> Result<Vec<PortInfo>, ControlError> {
        self.call(net, Command::Ports).await
    }

    pub async fn port(&self, net: String, id: u32) -> Result<PortInfo, ControlError> {
        self.call(net, |net, r| Command::Port(net, id, r)).await
    }

    pub async fn macs(&self, net: String) -> Result<Vec<MacEntry>, ControlError> {
        self.call(net, Command::Macs).await
    }

    pub async fn leases(&self, net: String) -> Result<Vec<Lease>, ControlError> {
        self.call(net, Command::Leases).await
    }

    pub async fn set_dhcp(&self, net: String, spec: DhcpSpec) -> Result<NetworkInfo, ControlError> {
        self.call(net, |net, r| Command::SetDhcp(net, spec, r))
            .await
    }

    pub async fn patch_dhcp(
        &self,
        net: String,
        patch: DhcpPatch,
    ) -> Result<NetworkInfo, ControlError> {
        self.call(net, |net, r| Command::PatchDhcp(net, patch, r))
            .await
    }

    pub async fn add_reservation(
        &self,
        net: String,
        r: Reservation,
    ) -> Result<Reservation, ControlError> {
        self.call(net, |net, reply| Command::AddReservation(net, r, reply))
            .await
    }

    /// Opens a classic-device port on vnet `net` for `client` (the opener, as FUSE
    /// tells it; admitted like any client): returns the port id and the client's end of
    /// a `SOCK_SEQPACKET` pair speaking the vnet API (blocking).
    pub fn attach_device_blocking(
        &self,
        net: String,
        client: Client,
    ) -> Result<(u32, std::os::fd::OwnedFd), ControlError> {
        let (ours, theirs) = crate::sys::seqpacket::pair().map_err(ControlError::SocketPair)?;
        let id = self.call_blocking(net, |net, r| Command::AttachDevice(net, ours, client, r))?;
        Ok((id, theirs))
    }

    pub async fn remove_reservation(&self, net: String, mac: MacAddr) -> Result<(), ControlError> {
        self.call(net, |net, r| Command::RemoveReservation(net, mac, r))
            .await
    }

    /// Bridges `net` to a host NIC (replacing its uplink); answers the uplink's port.
    pub async fn set_uplink(
        &self,
        net: String,
        spec: UplinkSpec,
    ) -> Result<PortInfo, ControlError> {
        self.call(net, |net, r| Command::SetUplink(net, spec, r))
            .await
    }

    pub async fn remove_uplink(&self, net: String) -> Result<(), ControlError> {
        self.call(net, Command::RemoveUplink).await
    }

    /// Adds a remote VTEP to a VXLAN vnet live.
    pub async fn add_remote(
        &self,
        net: String,
        remote: std::net::IpAddr,
    ) -> Result<PortInfo, ControlError> {
        self.call(net, |net, r| Command::AddRemote(net, remote, r))
            .await
    }

    /// Removes a remote VTEP from a VXLAN vnet live.
    pub async fn remove_remote(
        &self,
        net: String,
        remote: std::net::IpAddr,
    ) -> Result<(), ControlError> {
        self.call(net, |net, r| Command::RemoveRemote(net, remote, r))
            .await
    }

    /// A VXLAN vnet's forwarding database.
    pub async fn fdb(&self, net: String) -> Result<Vec<vnet_model::FdbEntry>, ControlError> {
        self.call(net, Command::Fdb).await
    }

    /// Pins a MAC behind a remote VTEP.
    pub async fn add_fdb(
        &self,
        net: String,
        entry: vnet_model::FdbSpec,
    ) -> Result<vnet_model::FdbSpec, ControlError> {
        self.call(net, |net, r| Command::AddFdb(net, entry, r))
            .await
    }

    /// Removes a MAC's forwarding entry.
    pub async fn remove_fdb(&self, net: String, mac: MacAddr) -> Result<(), ControlError> {
        self.call(net, |net, r| Command::RemoveFdb(net, mac, r))
            .await
    }

    /// The NAT device's port forwards.
    pub async fn forwards(
        &self,
        net: String,
    ) -> Result<Vec<vnet_model::ForwardSpec>, ControlError> {
        self.call(net, Command::Forwards).await
    }

    /// Adds a port forward live.
    pub async fn add_forward(
        &self,
        net: String,
        spec: vnet_model::ForwardSpec,
    ) -> Result<vnet_model::ForwardSpec, ControlError> {
        self.call(net, |net, r| Command::AddForward(net, spec, r))
            .await
    }

    /// Removes the `proto` port forward on `host`.
    pub async fn remove_forward(
        &self,
        net: String,
        proto: vnet_model::ForwardProto,
        host: std::net::SocketAddr,
    ) -> Result<(), ControlError> {
        self.call(net, |net, r| Command::RemoveForward(net, proto, host, r))
            .await
    }

    /// Changes a port's VLAN mode live.
    pub async fn set_port_vlan(
        &self,
        net: String,
        id: u32,
        mode: VlanMode,
    ) -> Result<PortInfo, ControlError> {
        self.call(net, |net, r| Command::SetPortVlan(net, id, mode, r))
            .await
    }

    /// Changes a port's own policy live.
    pub async fn set_port_policy(
        &self,
        net: String,
        id: u32,
        patch: vnet_model::PolicyPatch,
    ) -> Result<PortInfo, ControlError> {
        self.call(net, |net, r| Command::SetPortPolicy(net, id, patch, r))
            .await
    }

    /// A vnet's mirrors with their state and counters.
    pub async fn mirrors(&self, net: String) -> Result<Vec<vnet_model::MirrorInfo>, ControlError> {
        self.call(net, Command::Mirrors).await
    }

    /// Adds a mirror live.
    pub async fn add_mirror(
        &self,
        net: String,
        spec: vnet_model::MirrorSpec,
    ) -> Result<vnet_model::MirrorInfo, ControlError> {
        self.call(net, |net, r| Command::AddMirror(net, spec, r))
            .await
    }

    /// Removes mirror `name`.
    pub async fn remove_mirror(&self, net: String, name: String) -> Result<(), ControlError> {
        self.call(net, |net, r| Command::RemoveMirror(net, name, r))
            .await
    }

    /// Replaces a vnet's mirrors live.
    pub async fn set_mirrors(
        &self,
        net: String,
        mirrors: Vec<vnet_model::MirrorSpec>,
    ) -> Result<(), ControlError> {
        self.call(net, |net, r| Command::SetMirrors(net, mirrors, r))
            .await
    }

    /// Edits port `id`'s filters live, in one step on the data-plane thread: `edit`
    /// changes what applies to the port now (its own, else its vnet's), which becomes
    /// the port's own. Answers the port afterwards.
    pub async fn edit_port_acl(
        &self,
        net: String,
        id: u32,
        edit: policy::AclEdit,
    ) -> Result<PortInfo, ControlError> {
        self.call(net, |net, r| Command::EditPortAcl(net, id, edit, r))
            .await
    }

    /// Changes the policy of a vnet's client ports live.
    pub async fn set_policy(
        &self,
        net: String,
        patch: vnet_model::PolicyPatch,
    ) -> Result<vnet_model::PortPolicy, ControlError> {
        self.call(net, |net, r| Command::SetPolicy(net, patch, r))
            .await
    }
}

/// `spec` checked, and its allow lists resolved (on the caller's thread: names may
/// need the user database).
fn checked(spec: &NetworkSpec) -> Result<AllowList, ControlError> {
    spec.validate()?;
    Ok(AllowList::resolve(&spec.allow_users, &spec.allow_groups)?)
}

/// The directory of a vnet's sockets.
pub fn network_dir(run_dir: &std::path::Path, name: &str) -> PathBuf {
    run_dir.join(name)
}
