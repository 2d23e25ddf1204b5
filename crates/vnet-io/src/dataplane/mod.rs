//! The data plane: one thread, one epoll loop, every port of every vnet.
//!
//! Each turn of the loop reads a bounded batch from every readable port, lets the
//! switch decide each frame, appends it to the bounded egress queue of each destination
//! (dropping and counting when full), then drains every queue that has frames as far
//! as its client takes them. A client that stops reading only fills its own queue.
//!
//! The control plane talks to the loop through [`Handle`]: commands over a channel plus
//! a [`mio::Waker`]; replies come back on oneshot channels.

mod engine;
mod network;
mod queue;
mod report;

pub use engine::validate;
pub use queue::QUEUE_CAPACITY;

use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use tokio::sync::oneshot;
use vnet_control::{
    DhcpSpec, Lease, MacAddr, MacEntry, NetworkInfo, NetworkSpec, PortInfo, PortSpec, Reservation,
    UplinkSpec, VlanMode,
};

/// Why a control command failed, in terms the API maps to a status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
    /// The daemon lacks a privilege the request needs.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Failed(String),
    #[error("the data plane has stopped")]
    Stopped,
}

type Reply<T> = oneshot::Sender<Result<T, ControlError>>;

/// Work for the data-plane thread.
pub(crate) enum Command {
    CreateNetwork(NetworkSpec, Reply<NetworkInfo>),
    DeleteNetwork(String, Reply<()>),
    Networks(Reply<Vec<NetworkInfo>>),
    Network(String, Reply<NetworkInfo>),
    AddPort(String, PortSpec, Reply<PortInfo>),
    RemovePort(String, u32, Reply<()>),
    Ports(String, Reply<Vec<PortInfo>>),
    Port(String, u32, Reply<PortInfo>),
    Macs(String, Reply<Vec<MacEntry>>),
    Leases(String, Reply<Vec<Lease>>),
    SetDhcp(String, DhcpSpec, Reply<NetworkInfo>),
    AddReservation(String, Reservation, Reply<Reservation>),
    RemoveReservation(String, MacAddr, Reply<()>),
    SetUplink(String, UplinkSpec, Reply<PortInfo>),
    RemoveUplink(String, Reply<()>),
    Forwards(String, Reply<Vec<vnet_control::ForwardSpec>>),
    AddForward(
        String,
        vnet_control::ForwardSpec,
        Reply<vnet_control::ForwardSpec>,
    ),
    RemoveForward(
        String,
        vnet_control::ForwardProto,
        std::net::SocketAddrV4,
        Reply<()>,
    ),
    SetPortVlan(String, u32, VlanMode, Reply<PortInfo>),
    /// A classic-device open: attach the data plane's end of a socket pair as a port.
    AttachDevice(String, std::os::fd::OwnedFd, Option<u32>, Reply<u32>),
    Shutdown,
}

/// The control plane's grip on the data plane. Cheap to clone.
#[derive(Clone)]
pub struct Handle {
    commands: mpsc::Sender<Command>,
    waker: Arc<mio::Waker>,
}

/// The running data-plane thread.
pub struct DataPlane {
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

impl DataPlane {
    /// Starts the thread. Each vnet's sockets go under `run_dir/NAME/`, its state
    /// (DHCP leases) under `state_dir/NAME/`.
    pub fn spawn(run_dir: PathBuf, state_dir: PathBuf) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let poll = mio::Poll::new()?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), engine::WAKER)?);
        let thread = std::thread::Builder::new()
            .name("vnet-dataplane".into())
            .spawn(move || engine::Engine::new(poll, run_dir, state_dir, rx).run())?;
        Ok(DataPlane {
            handle: Handle {
                commands: tx,
                waker,
            },
            thread: Some(thread),
        })
    }

    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Whether the thread still runs. It only ends on shutdown, or if it failed.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Closes every port and vnet (removing their sockets) and joins the thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(t) = self.thread.take() {
            if self.handle.send(Command::Shutdown).is_ok() {
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
    fn send(&self, cmd: Command) -> Result<(), ControlError> {
        self.commands.send(cmd).map_err(|_| ControlError::Stopped)?;
        self.waker
            .wake()
            .map_err(|e| ControlError::Failed(e.to_string()))
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, ControlError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx))?;
        rx.await.map_err(|_| ControlError::Stopped)?
    }

    /// Same as the async calls, for threads outside any runtime (start-up, tests).
    fn call_blocking<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, ControlError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx))?;
        rx.blocking_recv().map_err(|_| ControlError::Stopped)?
    }

    pub async fn create_network(&self, spec: NetworkSpec) -> Result<NetworkInfo, ControlError> {
        self.call(|r| Command::CreateNetwork(spec, r)).await
    }

    pub fn create_network_blocking(&self, spec: NetworkSpec) -> Result<NetworkInfo, ControlError> {
        self.call_blocking(|r| Command::CreateNetwork(spec, r))
    }

    pub async fn delete_network(&self, name: String) -> Result<(), ControlError> {
        self.call(|r| Command::DeleteNetwork(name, r)).await
    }

    pub async fn networks(&self) -> Result<Vec<NetworkInfo>, ControlError> {
        self.call(Command::Networks).await
    }

    pub async fn network(&self, name: String) -> Result<NetworkInfo, ControlError> {
        self.call(|r| Command::Network(name, r)).await
    }

    pub async fn add_port(&self, net: String, spec: PortSpec) -> Result<PortInfo, ControlError> {
        self.call(|r| Command::AddPort(net, spec, r)).await
    }

    pub fn add_port_blocking(&self, net: String, spec: PortSpec) -> Result<PortInfo, ControlError> {
        self.call_blocking(|r| Command::AddPort(net, spec, r))
    }

    pub async fn remove_port(&self, net: String, id: u32) -> Result<(), ControlError> {
        self.call(|r| Command::RemovePort(net, id, r)).await
    }

    pub async fn ports(&self, net: String) -> Result<Vec<PortInfo>, ControlError> {
        self.call(|r| Command::Ports(net, r)).await
    }

    pub async fn port(&self, net: String, id: u32) -> Result<PortInfo, ControlError> {
        self.call(|r| Command::Port(net, id, r)).await
    }

    pub async fn macs(&self, net: String) -> Result<Vec<MacEntry>, ControlError> {
        self.call(|r| Command::Macs(net, r)).await
    }

    pub async fn leases(&self, net: String) -> Result<Vec<Lease>, ControlError> {
        self.call(|r| Command::Leases(net, r)).await
    }

    pub async fn set_dhcp(&self, net: String, spec: DhcpSpec) -> Result<NetworkInfo, ControlError> {
        self.call(|r| Command::SetDhcp(net, spec, r)).await
    }

    pub async fn add_reservation(
        &self,
        net: String,
        r: Reservation,
    ) -> Result<Reservation, ControlError> {
        self.call(|reply| Command::AddReservation(net, r, reply))
            .await
    }

    /// Opens a classic-device port on vnet `net` for process `pid`: returns the port id
    /// and the client's end of a `SOCK_SEQPACKET` pair speaking the vnet API (blocking).
    pub fn attach_device_blocking(
        &self,
        net: String,
        pid: Option<u32>,
    ) -> Result<(u32, std::os::fd::OwnedFd), ControlError> {
        let (ours, theirs) =
            crate::sys::seqpacket::pair().map_err(|e| ControlError::Failed(e.to_string()))?;
        let id = self.call_blocking(|r| Command::AttachDevice(net, ours, pid, r))?;
        Ok((id, theirs))
    }

    pub async fn remove_reservation(&self, net: String, mac: MacAddr) -> Result<(), ControlError> {
        self.call(|r| Command::RemoveReservation(net, mac, r)).await
    }

    /// Bridges `net` to a host NIC (replacing its uplink); answers the uplink's port.
    pub async fn set_uplink(
        &self,
        net: String,
        spec: UplinkSpec,
    ) -> Result<PortInfo, ControlError> {
        self.call(|r| Command::SetUplink(net, spec, r)).await
    }

    pub async fn remove_uplink(&self, net: String) -> Result<(), ControlError> {
        self.call(|r| Command::RemoveUplink(net, r)).await
    }

    /// The NAT device's port forwards.
    pub async fn forwards(
        &self,
        net: String,
    ) -> Result<Vec<vnet_control::ForwardSpec>, ControlError> {
        self.call(|r| Command::Forwards(net, r)).await
    }

    /// Adds a port forward live.
    pub async fn add_forward(
        &self,
        net: String,
        spec: vnet_control::ForwardSpec,
    ) -> Result<vnet_control::ForwardSpec, ControlError> {
        self.call(|r| Command::AddForward(net, spec, r)).await
    }

    /// Removes the `proto` port forward on `host`.
    pub async fn remove_forward(
        &self,
        net: String,
        proto: vnet_control::ForwardProto,
        host: std::net::SocketAddrV4,
    ) -> Result<(), ControlError> {
        self.call(|r| Command::RemoveForward(net, proto, host, r))
            .await
    }

    /// Changes a port's VLAN mode live.
    pub async fn set_port_vlan(
        &self,
        net: String,
        id: u32,
        mode: VlanMode,
    ) -> Result<PortInfo, ControlError> {
        self.call(|r| Command::SetPortVlan(net, id, mode, r)).await
    }
}

/// The directory of a vnet's sockets.
pub fn network_dir(run_dir: &std::path::Path, name: &str) -> PathBuf {
    run_dir.join(name)
}
