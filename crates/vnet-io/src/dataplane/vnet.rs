//! One vnet inside the data plane: its switch, its listening sockets, its ports and
//! their egress queues, and the forwarding step that ties them together.
//!
//! Its thread ([`super::thread`]) decides when each port gets a pass; a [`Vnet`] does
//! the pass: [`Vnet::receive`] runs a port's input through the switch into the egress
//! queues, [`Vnet::transmit`] drains one queue into its client. Its state stays
//! private: the thread asks it questions (is this port still here, is it watched) and
//! gives it orders (attach this backend, age the MAC table). Its sockets in `RUN/NAME`
//! are in [`sockets`], its snapshots for the control API in [`report`], its mirrors in
//! [`mirrors`].

mod mirrors;
mod report;
mod sockets;

pub(in crate::dataplane) use sockets::{socket_paths, Listener};

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use mio::net::{UnixDatagram, UnixListener};
use mio::{Interest, Registry, Token};
use tracing::{debug, info, warn};
use vnet_core::pcapng::Direction;
use vnet_core::policy::guard::DhcpBindings;
use vnet_core::policy::rate::FloodClass;
use vnet_core::switch::mirror::{self, MirrorTable, Side};
use vnet_core::switch::Verdict;
use vnet_core::switch::{
    DropCause, Egress, FastMap, InvalidVlan, PortId, SetPortError, Switch, Tagging, VlanMode,
};
use vnet_core::wire::offload::{self, Segmenter, VirtioNetHdr};
use vnet_core::wire::seqpacket::{PortInfo as ApiPortInfo, Reply, Request, API_VERSION};
use vnet_model::{MacAddr, NetworkSpec, PolicyPatch, PolicyReport, PortPolicy, UplinkSpec};

use super::capture::{self, Capture, CaptureSpec, Tap};
use super::error::ControlError;
use super::limits::{LimitHit, UidPorts, UidSlot, PORTS_PER_UID};
use super::policy::{self, AclEdit, Enforcer, Step};
use super::queue::EgressQueue;
use super::shape::{Emitted, Toward};
use crate::admission::{AllowList, Client, Gate};
use crate::backend::dgram::{DgramPeerError, DgramPort};
use crate::backend::uplink::Incoming;
use crate::backend::{Backend, Received, Sent, TX_BATCH};
use crate::error::chain;
use crate::frame::{BufPool, FrameBuf};
use crate::services::dhcp::DhcpService;
use crate::services::nat::NatService;
use crate::sys::mmsg::RecvBatch;

/// Who made a port: its client's uid and pid (for `vnet port ls`) and the port's
/// place in `[limits] ports_per_uid`, freed when the port goes. The vnet's own ports
/// (services, host adapter, uplink) and the configuration's have none.
pub(super) struct Owner {
    uid: u32,
    pid: Option<u32>,
    _slot: Option<UidSlot>,
}

/// A port's I/O side: its backend and its bounded egress queue.
struct PortIo {
    backend: Box<dyn Backend>,
    owner: Option<Owner>,
    /// The backend takes GSO super-frames and partial checksums as they are.
    offloads: bool,
    queue: EgressQueue,
    token: Option<Token>,
    /// Listed for a receive pass this turn.
    rx_scheduled: bool,
    /// Listed for a transmit pass this turn.
    tx_scheduled: bool,
    /// The port's own policy (its enforcer runs it over the vnet's).
    policy: PortPolicy,
}

/// How a pass over one port ended.
pub(super) enum PassEnd {
    /// The port has nothing more now.
    Idle,
    /// The budget ran out first: schedule it again.
    More,
    /// The client could not take more: wait for it.
    Blocked,
    Closed(String),
}

/// What a port's timers did ([`Vnet::run_timer`]).
pub(super) enum Timer {
    /// They were due and ran.
    Ran,
    /// Due then.
    Later(Instant),
    /// The port has none.
    Idle,
}

/// Frames one port may send into the vnet per turn, so a busy port cannot starve others.
const RX_BUDGET: usize = 64;
/// Datagrams one `recvmmsg` takes from the shared dgram socket.
const DGRAM_BATCH: usize = 32;
/// Refused dgram senders logged at warning level, once each; later ones at debug.
const DGRAM_REFUSALS_LOGGED: usize = 64;
/// How long a dgram sender's uid, refused by the allow lists, stays refused without
/// being decided again: a flood of datagrams from it then costs no group database
/// lookup each (each is still counted).
const DGRAM_REFUSAL_MEMORY: std::time::Duration = std::time::Duration::from_secs(1);
/// Refused dgram uids remembered at most (forgotten all at once when full).
const DGRAM_REFUSED_UIDS: usize = 256;

pub(super) struct Vnet {
    spec: NetworkSpec,
    dir: PathBuf,
    switch: Switch,
    pool: BufPool,
    ports: FastMap<PortId, PortIo>,
    stream_listener: UnixListener,
    api_listener: OwnedFd,
    /// `vde/ctl`: the control socket of the vnet's VDE switch directory.
    vde_listener: UnixListener,
    dgram: Rc<UnixDatagram>,
    /// Each dgram peer's port and the uid that made it.
    dgram_peers: HashMap<PathBuf, (PortId, u32)>,
    /// `recvmmsg`'s message headers, sender addresses and credentials for the dgram
    /// socket.
    dgram_batch: Box<RecvBatch<DGRAM_BATCH>>,
    /// Datagrams dropped because their sender gets no port.
    dgram_refused: u64,
    /// Senders whose refusal was logged (`None`: unbound ones).
    dgram_refusals_logged: HashSet<Option<PathBuf>>,
    /// Dgram senders' uids the allow lists refused, and when (see
    /// [`DGRAM_REFUSAL_MEMORY`]).
    dgram_refused_uids: HashMap<u32, Instant>,
    /// The DHCP service's port and state, shared with its [`ServicePort`].
    dhcp: Option<(PortId, Rc<RefCell<DhcpService>>)>,
    /// The NAT device's state, shared with its [`ServicePort`] (live port forwards,
    /// counters).
    nat: Option<Rc<RefCell<NatService>>>,
    /// The IPv6 router (advertisements, its own neighbour discovery), shared with the
    /// port it runs on: the NAT device's or a service port of its own.
    router6: Option<Rc<RefCell<vnet_ra::Router>>>,
    /// The host's own adapter on this vnet, once it runs.
    host_adapter: Option<vnet_model::HostAdapterInfo>,
    /// Destinations of the frame being forwarded (reused: no allocation per frame).
    scratch: Vec<(PortId, Tagging)>,
    /// `[limits] ports_per_vnet`, and where refusals are counted.
    limits: super::limits::Limits,
    refusals: std::sync::Arc<super::limits::Refusals>,
    /// Who may attach (`allow_users`, `allow_groups`).
    allow: std::sync::Arc<AllowList>,
    /// vnetd's own uid: always admitted, never counted in `ports_per_uid`.
    daemon_uid: u32,
    /// The client ports each uid holds across all vnets.
    uid_ports: std::sync::Arc<UidPorts>,
    /// The refusals already counted in `refusals` of the MAC table (full), the NAT's
    /// flows, its buffer and its descriptors ([`Vnet::count_refusals`]).
    refusals_counted: [u64; 4],
    /// Live captures; empty (the frame path's only cost then) when none runs.
    taps: Vec<Tap>,
    /// What all captures took and dropped (`running` filled in by the report).
    capture_totals: vnet_model::CaptureCounters,
    /// Active mirrors; empty (the frame path's only cost then) when none is.
    mirrors: MirrorTable,
    /// The mirror copies due for the frame being forwarded (reused).
    mirror_due: Vec<mirror::Due>,
    /// The ports with a policy to enforce; empty (the frame path's only cost then)
    /// when none has one.
    enforcers: FastMap<PortId, Enforcer>,
    /// The DHCP service's leases by client MAC, for port security's IP guards
    /// ([`Vnet::share_dhcp_bindings`]).
    dhcp_bindings: Arc<DhcpBindings>,
    /// What a port's [`Shaping`](super::shape::Shaping) let out, handled after it returns (reused).
    emitted: Vec<Emitted>,
    /// Frames a [`Shaping`](super::shape::Shaping) let out toward the switch (reused).
    released: Vec<FrameBuf>,
    /// Frames held by rate or impairment sections that were changed or removed: they
    /// go on, in order, at the next turn.
    orphans: Vec<(PortId, Toward, FrameBuf)>,
    /// Ports whose held frames are due (reused).
    due: Vec<PortId>,
    /// How many enforcers have rate or impairment sections: none, and the loop's turns
    /// pay one check for held frames.
    shaping: usize,
}

impl Vnet {
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The port of the TAP (or host adapter) named `ifname`, if this vnet has one.
    pub fn tap_port(&self, ifname: &str) -> Option<PortId> {
        self.ports
            .iter()
            .find(|(_, p)| {
                p.backend.kind() == vnet_model::PortKind::Tap
                    && p.backend.identity().ifname == Some(ifname)
            })
            .map(|(id, _)| *id)
    }

    /// The vnet's settings as they are now, live changes included.
    pub fn spec(&self) -> &NetworkSpec {
        &self.spec
    }

    /// Records settings a live change has carried out.
    pub fn set_spec(&mut self, spec: NetworkSpec) {
        self.spec = spec;
    }

    /// Records the uplink the vnet is bridged with (`None`: not bridged).
    pub fn set_uplink_spec(&mut self, uplink: Option<UplinkSpec>) {
        self.spec.uplink = uplink;
    }

    /// The vnet's socket directory, `RUN/NAME`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bounds the vnet's client ports by `limits`, counting refusals in `refusals`.
    pub fn set_limits(
        &mut self,
        limits: super::limits::Limits,
        refusals: std::sync::Arc<super::limits::Refusals>,
    ) {
        self.limits = limits;
        self.refusals = refusals;
    }

    /// Lets in only the clients `allow` admits; `uid_ports` bounds each uid's ports
    /// across all vnets (`[limits] ports_per_uid`).
    pub fn set_admission(&mut self, allow: AllowList, uid_ports: std::sync::Arc<UidPorts>) {
        self.allow = std::sync::Arc::new(allow);
        self.uid_ports = uid_ports;
    }

    /// The vnet's allow lists with where to count refusals, for a listener that
    /// applies them on a thread of its own (vhost-user).
    pub fn gate(&self) -> Gate {
        Gate {
            vnet: self.name().to_string(),
            allow: std::sync::Arc::clone(&self.allow),
            daemon_uid: self.daemon_uid,
            refusals: std::sync::Arc::clone(&self.refusals),
        }
    }

    /// Whether `client` may make one more client port (`what`, for the log): its allow
    /// lists unless `vetted` (an admin of the control API), then `[limits]
    /// ports_per_vnet` and `ports_per_uid`. Refused: counted and logged. Admitted: the
    /// port's [`Owner`], to [`Vnet::attach`] with it.
    pub fn admit(&self, what: &str, client: &Client, vetted: bool) -> Result<Owner, ControlError> {
        if !vetted {
            self.gate().admit(client, what)?;
        }
        self.admit_client(what)?;
        let uid = client.uid;
        let exempt = uid == 0 || uid == self.daemon_uid;
        let max = self.limits.ports_per_uid;
        let slot = self.uid_ports.take(uid, exempt, max).map_err(|held| {
            let what = format!("refused {what}: uid {uid} holds {held} client ports");
            self.refusals
                .refuse(Some(self.name()), PORTS_PER_UID, &what);
            LimitHit {
                what: format!("uid {uid} holds its maximum of client ports (on all vnets)"),
                max,
                key: PORTS_PER_UID,
            }
        })?;
        Ok(Owner {
            uid,
            pid: client.pid,
            _slot: slot,
        })
    }

    /// Whether one more client port fits within `[limits] ports_per_vnet` and
    /// `fd_reserve`; refused: counted, and logged naming `what` the client was. Client
    /// ports are all but the vnet's own (services, host adapter, uplink).
    pub fn admit_client(&self, what: &str) -> Result<(), super::limits::LimitHit> {
        use vnet_model::PortKind;
        let host = self.host_adapter.as_ref().map(|h| h.port);
        let clients = self
            .ports
            .iter()
            .filter(|(id, p)| {
                !matches!(p.backend.kind(), PortKind::Service | PortKind::Uplink)
                    && Some(id.0) != host
            })
            .count();
        if clients >= self.limits.ports_per_vnet {
            let limit = super::limits::PORTS_PER_VNET;
            self.refusals
                .refuse(Some(self.name()), limit, &format!("refused {what}"));
            return Err(super::limits::LimitHit {
                what: format!("vnet {:?} has its maximum of client ports", self.name()),
                max: self.limits.ports_per_vnet,
                key: limit,
            });
        }
        let reserve = self.limits.fd_reserve;
        let any = self.api_listener.as_fd();
        super::limits::ports_may_open(any, reserve).map_err(|(free, limit)| {
            let key = super::limits::FD_RESERVE;
            let why = format!(
                "the lowest free of vnetd's {limit} descriptors is {free}, and the last \
                 {reserve} are kept for the control API and the NAT"
            );
            self.refusals
                .refuse(Some(self.name()), key, &format!("refused {what}: {why}"));
            super::limits::LimitHit {
                what: format!("no descriptors left for client ports: {why}"),
                max: limit.saturating_sub(reserve),
                key,
            }
        })
    }

    pub fn has_port(&self, id: PortId) -> bool {
        self.ports.contains_key(&id)
    }

    /// Whether one of the ports is vhost-user port `name`.
    pub fn has_vhost_user_port(&self, name: &str) -> bool {
        self.ports
            .values()
            .any(|p| p.backend.identity().vhost_user_name == Some(name))
    }

    /// Marks `id` as listed for a receive pass: `false` if it is gone or listed already.
    #[inline]
    pub fn list_rx(&mut self, id: PortId) -> bool {
        self.ports
            .get_mut(&id)
            .is_some_and(|p| !std::mem::replace(&mut p.rx_scheduled, true))
    }

    /// Marks `id` as listed for a transmit pass: `false` if it is gone or listed already.
    #[inline]
    pub fn list_tx(&mut self, id: PortId) -> bool {
        self.ports
            .get_mut(&id)
            .is_some_and(|p| !std::mem::replace(&mut p.tx_scheduled, true))
    }

    /// Takes `id` off the receive list as its pass begins: `false` if it is gone.
    #[inline]
    pub fn unlist_rx(&mut self, id: PortId) -> bool {
        self.ports
            .get_mut(&id)
            .map(|p| p.rx_scheduled = false)
            .is_some()
    }

    /// Takes `id` off the transmit list as its pass begins: `false` if it is gone.
    #[inline]
    pub fn unlist_tx(&mut self, id: PortId) -> bool {
        self.ports
            .get_mut(&id)
            .map(|p| p.tx_scheduled = false)
            .is_some()
    }

    /// Whether epoll watches the port's own fd, and so says when its client drains.
    /// Ports without one (dgram peers, DHCP) are retried on a timer instead.
    #[inline]
    pub fn is_watched(&self, id: PortId) -> bool {
        self.ports.get(&id).is_some_and(|p| p.token.is_some())
    }

    /// Whether the port holds input it made itself (a service's replies), to be read
    /// without waiting for an fd.
    #[inline]
    pub fn has_own_input(&self, id: PortId) -> bool {
        self.ports.get(&id).is_some_and(|p| p.backend.has_input())
    }

    /// Starts watching port `id`'s fd under `token`; `Ok(false)` if it has none.
    pub fn watch_port(
        &mut self,
        registry: &Registry,
        id: PortId,
        token: Token,
    ) -> io::Result<bool> {
        let port = self.ports.get_mut(&id).expect("attached");
        let Some(src) = port.backend.source() else {
            return Ok(false);
        };
        registry.register(src, token, Interest::READABLE | Interest::WRITABLE)?;
        port.token = Some(token);
        Ok(true)
    }

    /// Forgets MAC addresses not seen for the aging time and group memberships not
    /// reported for theirs; gives back memory a burst left idle (pooled buffers,
    /// drained queues' storage). Called about once a second; returns the bytes freed.
    pub fn age_macs(&mut self, now: Instant) -> usize {
        self.switch.expire(now);
        let queues: usize = self
            .ports
            .values_mut()
            .map(|port| port.queue.release_idle())
            .sum();
        self.pool.trim() + queues
    }

    /// Has the switch report addresses that move away from port `id` (the VXLAN
    /// tunnel's); `None` stops. See [`Vnet::take_moved_away`].
    pub fn watch_moves_from(&mut self, id: Option<PortId>) {
        self.switch.watch_moves_from(id);
    }

    /// The addresses that moved from the watched port to another since the last call
    /// (a station that migrated in: it lives on a local port now).
    pub fn take_moved_away(&mut self) -> impl Iterator<Item = MacAddr> + '_ {
        self.switch.take_moved_away()
    }

    /// Counts the refusals the frame path's sans-I/O parts kept in counters of their
    /// own since the last call (called once a second, not per frame): new addresses a
    /// full MAC table did not learn (its size is the vnet's `max_macs`, at most
    /// `[limits] macs_per_vnet`), NAT flows refused, the NAT's buffer filling up and
    /// its sockets refused for the control API's descriptors.
    pub fn count_refusals(&mut self) {
        use super::limits::{FD_RESERVE_CONTROL, MACS_PER_VNET, NAT_BUFFER_BYTES, NAT_FLOWS};
        let macs = self.switch.mac_table().refused_full();
        let (flows, filled, fds) = self.nat.as_ref().map_or((0, 0, 0), |nat| {
            let nat = nat.borrow();
            let refused_flows = nat.device().counters().refused_flows;
            (refused_flows, nat.buffer_filled(), nat.fd_refused())
        });
        let now = [macs, flows, filled, fds];
        let seen = std::mem::replace(&mut self.refusals_counted, now);
        let limits = [
            MACS_PER_VNET,
            NAT_FLOWS,
            NAT_BUFFER_BYTES,
            FD_RESERVE_CONTROL,
        ];
        let macs_not_learned: u64 = self
            .enforcers
            .values_mut()
            .map(Enforcer::take_refusals)
            .sum();
        self.refusals.refuse_many(
            Some(self.name()),
            super::limits::MAC_LOCK_MACS,
            macs_not_learned,
            "source MAC(s) not learned by a port's MAC lock: it holds its most; their \
             frames are dropped (mac_lock)",
        );
        for ((limit, now), seen) in limits.into_iter().zip(now).zip(seen) {
            // (Below: a NAT started anew, its counters from zero.)
            if now <= seen {
                continue;
            }
            let what = match limit {
                MACS_PER_VNET => format!(
                    "new MAC address(es) not learned: the table holds its {} (the vnet's \
                     max_macs); their frames are flooded",
                    self.spec.max_macs
                ),
                NAT_FLOWS => "NAT flow(s) refused".to_string(),
                NAT_BUFFER_BYTES => "the NAT's buffer for guest data filled up: data its \
                                     sockets cannot take at once is refused until they drain"
                    .to_string(),
                _ => {
                    "NAT socket(s) closed: only the control API's descriptors were left".to_string()
                }
            };
            self.refusals
                .refuse_many(Some(self.name()), limit, now - seen, &what);
        }
        let flows: u64 = self
            .enforcers
            .values_mut()
            .map(Enforcer::take_conntrack_refusals)
            .sum();
        if flows > 0 {
            let what = "new connection(s) not tracked: a port's table was full (their \
                        replies meet the port's filters as new frames)";
            let limit = super::limits::CONNTRACK_ENTRIES;
            self.refusals
                .refuse_many(Some(self.name()), limit, flows, what);
        }
    }

    /// Runs port `id`'s timers if they are due (a service's); `None` if it is gone.
    pub fn run_timer(&mut self, id: PortId) -> Option<Timer> {
        let port = self.ports.get_mut(&id)?;
        // Services may derive deadlines from another clock: compare with a reading
        // taken after asking, so a deadline that has passed is never in the future.
        Some(match port.backend.deadline() {
            Some(t) if t <= Instant::now() => {
                port.backend.tick(Instant::now());
                // A VDE port's only timer: its client sent no request in time.
                if port.backend.kind() == vnet_model::PortKind::Vde {
                    let what = format!("closing {}", port.backend.description());
                    let limit = super::limits::VDE_HANDSHAKE_SECS;
                    self.refusals.refuse(Some(&self.spec.name), limit, &what);
                }
                Timer::Ran
            }
            Some(t) => Timer::Later(t),
            None => Timer::Idle,
        })
    }

    /// Delivers a frame a host NIC's uplink socket read for this vnet's uplink port
    /// `port` to that port, whose `recv` then hands it to the switch: `true` if the
    /// port should be read.
    pub fn deliver_uplink(&mut self, port: PortId, frame: Incoming<'_>) -> bool {
        if !self.ports.contains_key(&port) {
            return false;
        }
        let mut buf = self.pool.get_for(frame.frame.len());
        buf.fill(frame.frame);
        buf.offload = frame.offload;
        if frame.strip {
            buf.retag(Tagging::Untagged);
        }
        self.deliver(port, buf);
        true
    }

    /// Gives `buf` to port `id`'s backend for its `recv` (a frame read from a shared
    /// socket); a port that cannot take it drops it, counted.
    fn deliver(&mut self, id: PortId, buf: FrameBuf) {
        let Some(port) = self.ports.get_mut(&id) else {
            self.pool.put(buf);
            return;
        };
        match port.backend.deliver(buf) {
            Ok(Some(empty)) => self.pool.put(empty),
            Ok(None) => {}
            Err(buf) => {
                self.pool.put(buf);
                self.switch.count_drop(id, DropCause::QueueFull);
            }
        }
    }

    pub fn set_vlan_mode(
        &mut self,
        now: Instant,
        id: PortId,
        mode: VlanMode,
    ) -> Result<(), SetPortError> {
        self.switch.set_vlan_mode(now, id, mode)?;
        self.tell_enforcer_vlan(id);
        Ok(())
    }

    /// Gives a service's port its fixed MAC address.
    pub fn set_port_mac(
        &mut self,
        now: Instant,
        id: PortId,
        mac: MacAddr,
    ) -> Result<(), SetPortError> {
        self.switch.set_mac(now, id, mac)
    }

    /// The DHCP service, on port `port`.
    pub fn set_dhcp(&mut self, port: PortId, service: Rc<RefCell<DhcpService>>) {
        self.dhcp = Some((port, service));
    }

    pub fn dhcp(&self) -> Option<&Rc<RefCell<DhcpService>>> {
        self.dhcp.as_ref().map(|(_, s)| s)
    }

    pub fn set_nat(&mut self, service: Rc<RefCell<NatService>>) {
        self.nat = Some(service);
    }

    pub fn nat(&self) -> Option<&Rc<RefCell<NatService>>> {
        self.nat.as_ref()
    }

    pub fn set_router6(&mut self, router: Rc<RefCell<vnet_ra::Router>>) {
        self.router6 = Some(router);
    }

    pub fn router6(&self) -> Option<&Rc<RefCell<vnet_ra::Router>>> {
        self.router6.as_ref()
    }

    /// The host's own adapter, once it runs.
    pub fn set_host_adapter(&mut self, adapter: vnet_model::HostAdapterInfo) {
        let id = PortId(adapter.port);
        self.host_adapter = Some(adapter);
        self.enforce(id);
    }

    /// Hands the NAT device the DHCP clients' names when they changed, so its DNS
    /// answers them. DHCP and NAT are separate services; this is where they meet, on
    /// the data plane's thread, with no lock.
    #[inline]
    pub fn share_dhcp_names(&self) {
        let (Some((_, dhcp)), Some(nat)) = (&self.dhcp, &self.nat) else {
            return;
        };
        if let Some(names) = dhcp.borrow_mut().take_changed_names() {
            nat.borrow_mut().device_mut().set_local_names(names);
        }
    }

    /// Hands the ports' IP guards the DHCP service's leases when they changed (the
    /// service and the guards never call each other, as for the names above).
    #[inline]
    pub fn share_dhcp_bindings(&mut self) {
        let Some((_, dhcp)) = &self.dhcp else {
            return;
        };
        let Some(bindings) = dhcp.borrow_mut().take_changed_bindings() else {
            return;
        };
        self.dhcp_bindings = Arc::new(bindings);
        for enforcer in self.enforcers.values_mut() {
            enforcer.set_dhcp_bindings(&self.dhcp_bindings);
        }
    }

    /// Adds a port for `backend`, made by `owner` ([`Vnet::admit`]; `None`: the vnet's
    /// own); the caller watches its fd ([`Vnet::watch_port`]).
    pub fn attach(
        &mut self,
        backend: Box<dyn Backend>,
        vlan: VlanMode,
        owner: Option<Owner>,
    ) -> Result<PortId, InvalidVlan> {
        let id = self.switch.add_port(vlan)?;
        // The vnet's services and its uplinks (a LAN, VXLAN peers) send no IGMP/MLD
        // reports for what they listen to: they take all group traffic.
        if matches!(
            backend.kind(),
            vnet_model::PortKind::Service | vnet_model::PortKind::Uplink
        ) {
            self.switch
                .set_multicast_router(id, true)
                .expect("added above");
        }
        match &owner {
            Some(o) => {
                info!(net = self.name(), port = %id, uid = o.uid, "attached {}", backend.description())
            }
            None => info!(net = self.name(), port = %id, "attached {}", backend.description()),
        }
        self.ports.insert(
            id,
            PortIo {
                offloads: backend.offloads(),
                backend,
                owner,
                queue: EgressQueue::default(),
                token: None,
                rx_scheduled: false,
                tx_scheduled: false,
                policy: PortPolicy::default(),
            },
        );
        self.enforce(id);
        self.remirror();
        Ok(id)
    }

    /// Removes a port: its MACs are forgotten, its queued frames recycled, its fd closed.
    pub fn detach(&mut self, registry: &Registry, id: PortId, why: &str) -> Option<Token> {
        let mut port = self.ports.remove(&id)?;
        if let Some(src) = port.backend.source() {
            let _ = registry.deregister(src);
        }
        for buf in port.queue.drain() {
            self.pool.put(buf);
        }
        self.dgram_peers.retain(|_, (p, _)| *p != id);
        if let Some(mut held) = self.enforcers.remove(&id).and_then(Enforcer::into_shaping) {
            held.release_all(|_, b| self.pool.put(b));
            self.shaping -= 1;
        }
        self.orphans.retain(|(p, _, _)| *p != id);
        let _ = self.switch.remove_port(id);
        self.remirror();
        info!(net = self.name(), port = %id, "detached {}: {why}", port.backend.description());
        port.token
    }

    /// Runs `id`'s client input through the switch, at most [`RX_BUDGET`] messages.
    /// Ports that received frames are appended to `touched`.
    pub fn receive(&mut self, now: Instant, id: PortId, touched: &mut Vec<PortId>) -> PassEnd {
        for _ in 0..RX_BUDGET {
            let Some(port) = self.ports.get_mut(&id) else {
                return PassEnd::Idle;
            };
            let mut buf = if port.offloads {
                self.pool.get_large()
            } else {
                self.pool.get()
            };
            match port.backend.recv(&mut buf) {
                Received::Frame => self.forward(now, id, buf, touched),
                Received::Request(req) => {
                    self.pool.put(buf);
                    if port.backend.unanswered() >= self.limits.api_reply_queue {
                        self.refuse_request(id);
                        continue;
                    }
                    let reply = self.apply(now, id, &req);
                    let port = self.ports.get_mut(&id).expect("present");
                    port.backend.answer(&req, &reply);
                    touched.push(id);
                }
                Received::Dropped(cause, why) => {
                    self.pool.put(buf);
                    self.switch.count_drop(id, cause);
                    debug!(net = self.name(), port = %id, "dropped input ({}): {why}", cause.name());
                }
                Received::WouldBlock => {
                    self.pool.put(buf);
                    return PassEnd::Idle;
                }
                Received::Closed(why) => {
                    self.pool.put(buf);
                    return PassEnd::Closed(why);
                }
            }
        }
        PassEnd::More
    }

    /// Drops a request of port `id`, whose client has not taken its last
    /// `[limits] api_reply_queue` answers: not carried out, not answered, counted.
    fn refuse_request(&self, id: PortId) {
        let Some(port) = self.ports.get(&id) else {
            return;
        };
        let what = format!(
            "dropped a request of port {id} ({}), which does not read its replies",
            port.backend.description()
        );
        let limit = super::limits::API_REPLY_QUEUE;
        self.refusals.refuse(Some(self.name()), limit, &what);
    }

    /// Reads the shared dgram socket in batches (`recvmmsg`), creating a port for each
    /// new peer, and delivers each datagram to its peer's port, which is read at once
    /// (after each run of datagrams from one peer).
    pub fn receive_dgram(&mut self, now: Instant, touched: &mut Vec<PortId>) -> PassEnd {
        for _ in 0..RX_BUDGET / DGRAM_BATCH {
            let mut bufs: [FrameBuf; DGRAM_BATCH] = std::array::from_fn(|_| self.pool.get());
            let spaces = bufs.each_mut().map(|b| b.recv_space());
            let count = match self.dgram_batch.recv(self.dgram.as_fd(), spaces) {
                Ok(n) => n,
                Err(e) => {
                    if e.kind() != io::ErrorKind::WouldBlock {
                        warn!(net = self.name(), "dgram receive failed: {e}");
                    }
                    0
                }
            };
            // The peer whose datagrams were delivered but not yet read.
            let mut unread: Option<PortId> = None;
            for (i, mut buf) in bufs.into_iter().enumerate() {
                if i >= count {
                    self.pool.put(buf);
                    continue;
                }
                buf.set_len(self.dgram_batch.len(i));
                let client = self.dgram_batch.sender_credentials(i);
                let id = match (self.dgram_batch.sender(i), client) {
                    (None, _) => Err(DgramPeerError::Unbound),
                    (Some(_), None) => Err(DgramPeerError::NoCredentials),
                    (Some(path), Some(client)) => match self.dgram_peers.get(path) {
                        Some(&(id, owner)) if owner == client.uid => Ok(id),
                        // Another uid sending from a port's path (bound anew after
                        // the peer left): not that port's input.
                        Some(&(_, owner)) => Err(DgramPeerError::Foreign {
                            path: path.to_path_buf(),
                            owner,
                            uid: client.uid,
                        }),
                        None => {
                            let path = path.to_path_buf();
                            let what = format!(
                                "a datagram of new peer {} (uid {})",
                                path.display(),
                                client.uid
                            );
                            match self.admit_dgram(now, &what, &client) {
                                Some(owner) => self.add_dgram_peer(path, owner),
                                None => {
                                    // Counted and logged as the refusal it is.
                                    self.pool.put(buf);
                                    continue;
                                }
                            }
                        }
                    },
                };
                let id = match id {
                    Ok(id) => id,
                    Err(why) => {
                        self.pool.put(buf);
                        self.refuse_dgram(why);
                        continue;
                    }
                };
                if let Some(previous) = unread.filter(|&p| p != id) {
                    self.receive(now, previous, touched);
                }
                self.deliver(id, buf);
                unread = Some(id);
            }
            if let Some(id) = unread {
                self.receive(now, id, touched);
            }
            if count < DGRAM_BATCH {
                return PassEnd::Idle;
            }
        }
        PassEnd::More
    }

    /// [`Vnet::admit`] for a new dgram peer, `client` at `now`; a uid the allow lists
    /// refused within [`DGRAM_REFUSAL_MEMORY`] is refused again without a decision.
    fn admit_dgram(&mut self, now: Instant, what: &str, client: &Client) -> Option<Owner> {
        let uid = client.uid;
        if let Some(&when) = self.dgram_refused_uids.get(&uid) {
            if now.saturating_duration_since(when) < DGRAM_REFUSAL_MEMORY {
                let why = format!("uid {uid} was refused by the allow lists a moment ago");
                self.refusals.refuse_attach(self.name(), what, &why);
                return None;
            }
        }
        match self.admit(what, client, false) {
            Ok(owner) => Some(owner),
            Err(ControlError::NotAllowed(_)) => {
                if self.dgram_refused_uids.len() >= DGRAM_REFUSED_UIDS {
                    self.dgram_refused_uids.clear();
                }
                self.dgram_refused_uids.insert(uid, now);
                None
            }
            Err(_) => None,
        }
    }

    /// A port for a new dgram peer bound at `path`, whose first datagram came from
    /// `owner`'s uid (see `backend::dgram` for the checks).
    fn add_dgram_peer(&mut self, path: PathBuf, owner: Owner) -> Result<PortId, DgramPeerError> {
        let uid = owner.uid;
        let port = DgramPort::new(Rc::clone(&self.dgram), path.clone(), uid)?;
        match self.attach(Box::new(port), VlanMode::default(), Some(owner)) {
            Ok(id) => {
                self.dgram_peers.insert(path, (id, uid));
                Ok(id)
            }
            Err(e) => {
                warn!(net = self.name(), "cannot add dgram port: {e}");
                Err(DgramPeerError::NoPort)
            }
        }
    }

    /// Counts a datagram dropped because its sender gets no port, and says why: once
    /// per sender (for the first [`DGRAM_REFUSALS_LOGGED`] senders), then at debug level.
    fn refuse_dgram(&mut self, why: DgramPeerError) {
        self.dgram_refused += 1;
        let sender = why.path().map(Path::to_path_buf);
        let first = self.dgram_refusals_logged.len() < DGRAM_REFUSALS_LOGGED
            && self.dgram_refusals_logged.insert(sender);
        let refused = self.dgram_refused;
        if first {
            warn!(
                net = self.name(),
                "dropped a datagram on dgram.sock ({refused} so far): no port for its sender: {}",
                chain(&why)
            );
        } else {
            debug!(
                net = self.name(),
                "dropped a datagram on dgram.sock ({refused} so far): {}",
                chain(&why)
            );
        }
    }

    /// Sends `id`'s queued frames, [`TX_BATCH`] at a time, until the queue is empty or
    /// the client is full.
    pub fn transmit(&mut self, id: PortId) -> PassEnd {
        let Some(port) = self.ports.get_mut(&id) else {
            return PassEnd::Idle;
        };
        let counters = &mut self
            .switch
            .port_mut(id)
            .expect("switch and ports agree")
            .counters;
        loop {
            // Offered even when empty: the backend may hold output of its own.
            let batch = port.queue.front_batch(TX_BATCH);
            let (sent, outcome) = port.backend.send_batch(batch);
            for _ in 0..sent {
                let buf = port.queue.pop_front().expect("sent frames were queued");
                counters.count_tx(buf.len());
                if !self.taps.is_empty() {
                    let totals = &mut self.capture_totals;
                    capture::offer(&mut self.taps, totals, id, Direction::Outbound, buf.frame());
                }
                self.pool.put(buf);
            }
            match outcome {
                Sent::Done => {}
                Sent::Dropped(cause) => {
                    counters.drops.add(cause);
                    let buf = port.queue.pop_front().expect("dropped frame was queued");
                    self.pool.put(buf);
                }
                Sent::WouldBlock => return PassEnd::Blocked,
                Sent::Closed(why) => return PassEnd::Closed(why),
            }
            if port.queue.len() == 0 {
                return PassEnd::Idle;
            }
        }
    }

    /// One frame through the switch into the egress queues of its destinations.
    pub(super) fn forward(
        &mut self,
        now: Instant,
        from: PortId,
        buf: FrameBuf,
        touched: &mut Vec<PortId>,
    ) {
        if !self.taps.is_empty() {
            let totals = &mut self.capture_totals;
            capture::offer(
                &mut self.taps,
                totals,
                from,
                Direction::Inbound,
                buf.frame(),
            );
        }
        if !self.mirrors.is_empty() {
            self.mirrors.start_frame();
            self.mirror(from, Side::Ingress, &buf, touched);
        }
        let mut buf = buf;
        if !self.enforcers.is_empty() {
            if let Some(enforcer) = self.enforcers.get_mut(&from) {
                if let Step::Drop(cause) = enforcer.ingress(now, &mut buf) {
                    if let Some(notice) = enforcer.take_notice() {
                        warn!(net = self.spec.name, port = %from, "{notice}");
                    }
                    self.switch.count_drop(from, cause);
                    self.pool.put(buf);
                    return;
                }
                if let Some(shaping) = enforcer.shaping_mut() {
                    let emitted = &mut self.emitted;
                    let passed = shaping.ingress(now, buf, &mut self.pool, |e| emitted.push(e));
                    if let Some(buf) = passed {
                        self.switch_frame(now, from, buf, touched);
                    }
                    if self.emitted.is_empty() {
                        return;
                    }
                    let mut emitted = std::mem::take(&mut self.emitted);
                    for e in emitted.drain(..) {
                        match e {
                            Emitted::Frame(buf) => self.switch_frame(now, from, buf, touched),
                            Emitted::Dropped(cause) => self.switch.count_drop(from, cause),
                        }
                    }
                    self.emitted = emitted;
                    return;
                }
            }
        }
        self.switch_frame(now, from, buf, touched);
    }

    /// A frame from port `from`, past its ingress policy, through the switch into the
    /// egress queues of its destinations. Inlined: a call that moves the buffer cost
    /// 28 instructions per frame (scripts/callgrind).
    #[inline(always)]
    fn switch_frame(
        &mut self,
        now: Instant,
        from: PortId,
        buf: FrameBuf,
        touched: &mut Vec<PortId>,
    ) {
        let verdict = if buf.offload.is_gso() {
            match Segmenter::new(buf.frame(), &buf.offload) {
                Ok(seg) => self
                    .switch
                    .ingress_gso(now, from, buf.frame(), seg.max_segment_len()),
                Err(e) => {
                    debug!(net = self.name(), port = %from, "dropped a GSO frame: {e}");
                    self.switch.count_drop(from, DropCause::Malformed);
                    self.pool.put(buf);
                    return;
                }
            }
        } else {
            self.switch.ingress(now, from, buf.frame())
        };
        let Verdict::Forward(fwd) = verdict else {
            self.pool.put(buf);
            return;
        };
        if fwd.unicast.is_none() && !self.enforcers.is_empty() && !self.storm_admits(now, &fwd) {
            self.switch.revoke_rx(from, buf.len(), DropCause::Storm);
            self.pool.put(buf);
            return;
        }
        self.scratch.clear();
        match self.switch.egress(&fwd) {
            // An `Option` extends a `Vec` without the general loop.
            Egress::Direct(one) => self.scratch.extend(one),
            spread => self.scratch.extend(spread),
        }
        let mut original = Some(buf);
        let last = self.scratch.len().saturating_sub(1);
        for i in 0..self.scratch.len() {
            let (dst, tagging) = self.scratch[i];
            // Flooded: every queue gets a handle on the one stored frame (copied once
            // into a shared buffer); a retag that changes it copies it for that port.
            let mut out = if i == last {
                original.take().expect("taken once")
            } else {
                let first = original.as_mut().expect("not yet taken");
                first.share(&mut self.pool)
            };
            out.retag(tagging);
            if !self.enforcers.is_empty() {
                if let Some(enforcer) = self.enforcers.get_mut(&dst) {
                    if let Step::Drop(cause) = enforcer.egress(now, &mut out) {
                        self.switch.count_drop(dst, cause);
                        self.pool.put(out);
                        continue;
                    }
                }
            }
            if !self.mirrors.is_empty() {
                self.mirror(dst, Side::Egress, &out, touched);
            }
            if !self.enforcers.is_empty() {
                if let Some(enforcer) = self.enforcers.get_mut(&dst) {
                    if let Some(shaping) = enforcer.shaping_mut() {
                        let emitted = &mut self.emitted;
                        let passed = shaping.egress(now, out, &mut self.pool, |e| emitted.push(e));
                        if let Some(out) = passed {
                            self.queue(dst, out, touched);
                        }
                        if !self.emitted.is_empty() {
                            self.settle(dst, touched);
                        }
                        continue;
                    }
                }
            }
            self.queue(dst, out, touched);
        }
        if let Some(buf) = original {
            self.pool.put(buf);
        }
    }

    /// Queues a frame for `dst` as the port takes it (see [`Vnet::push_plain`]):
    /// `false` if it was dropped. Always inlined: it is the frame path's every
    /// delivery, and a call that moves the buffer costs ~60 instructions a frame.
    #[inline(always)]
    fn queue(&mut self, dst: PortId, buf: FrameBuf, touched: &mut Vec<PortId>) -> bool {
        let plain_only = self.ports.get(&dst).is_some_and(|p| !p.offloads);
        if buf.needs_offload() && plain_only {
            self.push_plain(dst, buf, touched)
        } else {
            push(
                &mut self.ports,
                &mut self.switch,
                &mut self.pool,
                dst,
                buf,
                touched,
            )
        }
    }

    /// Queues what port `dst`'s [`Shaping`](super::shape::Shaping) let out for it and counts what it dropped.
    fn settle(&mut self, dst: PortId, touched: &mut Vec<PortId>) {
        let mut emitted = std::mem::take(&mut self.emitted);
        for e in emitted.drain(..) {
            match e {
                Emitted::Frame(buf) => {
                    self.queue(dst, buf, touched);
                }
                Emitted::Dropped(cause) => self.switch.count_drop(dst, cause),
            }
        }
        self.emitted = emitted;
    }

    /// Whether storm control of the port a flooded frame came from lets it through.
    fn storm_admits(&mut self, now: Instant, fwd: &vnet_core::switch::Forward) -> bool {
        let Some(shaping) = self
            .enforcers
            .get_mut(&fwd.ingress)
            .and_then(Enforcer::shaping_mut)
            .filter(|s| s.has_storm_control())
        else {
            return true;
        };
        FloodClass::of(fwd.dst, fwd.unicast).is_none_or(|class| shaping.flood(now, class))
    }

    /// When frames held by ports' rate and impairment sections are next due: the
    /// thread's next wake-up for them (now, if changed sections left frames behind).
    #[inline]
    pub fn held_deadline(&self) -> Option<Instant> {
        if self.shaping == 0 && self.orphans.is_empty() {
            return None;
        }
        if !self.orphans.is_empty() {
            return Some(Instant::now());
        }
        self.shaped_deadline()
    }

    /// Whether [`Vnet::release_held`] has anything to do at `now`.
    #[inline]
    pub fn holds_due(&self, now: Instant) -> bool {
        if self.shaping == 0 && self.orphans.is_empty() {
            return false;
        }
        !self.orphans.is_empty() || self.shaped_deadline().is_some_and(|due| due <= now)
    }

    fn shaped_deadline(&self) -> Option<Instant> {
        self.enforcers
            .values()
            .filter_map(|e| e.shaping()?.deadline())
            .min()
    }

    /// Lets out the held frames that are due: those from a client go through the
    /// switch, those for a client into its egress queue. Ports that got frames are
    /// appended to `touched`.
    pub fn release_held(&mut self, now: Instant, touched: &mut Vec<PortId>) {
        for (id, toward, buf) in std::mem::take(&mut self.orphans) {
            match toward {
                Toward::Switch => self.switch_frame(now, id, buf, touched),
                Toward::Client => {
                    self.queue(id, buf, touched);
                }
            }
        }
        let mut due = std::mem::take(&mut self.due);
        due.extend(self.enforcers.iter().filter_map(|(id, e)| {
            let deadline = e.shaping()?.deadline()?;
            (deadline <= now).then_some(*id)
        }));
        for id in due.drain(..) {
            let Some(shaping) = self.enforcers.get_mut(&id).and_then(Enforcer::shaping_mut) else {
                continue;
            };
            let released = &mut self.released;
            shaping.release_in(now, |b| released.push(b));
            let emitted = &mut self.emitted;
            shaping.release_out(now, &mut self.pool, |e| emitted.push(e));
            self.settle(id, touched);
            let mut released = std::mem::take(&mut self.released);
            for buf in released.drain(..) {
                self.switch_frame(now, id, buf, touched);
            }
            self.released = released;
        }
        self.due = due;
    }

    /// Queues a frame with offload metadata for a port that takes only ordinary frames:
    /// a GSO super-frame is cut into segments, each written straight into a pooled
    /// buffer; a partial checksum is completed in place. `false` if any of it was
    /// dropped.
    fn push_plain(&mut self, dst: PortId, mut buf: FrameBuf, touched: &mut Vec<PortId>) -> bool {
        let hdr = buf.offload;
        let mut queued = true;
        let result = if hdr.is_gso() {
            Segmenter::new(buf.frame(), &hdr).and_then(|seg| {
                for i in 0..seg.count() {
                    let mut out = self.pool.get_for(seg.segment_len(i));
                    match seg.write(i, out.recv_space()) {
                        Ok(n) => out.set_len(n),
                        Err(e) => {
                            self.pool.put(out);
                            return Err(e);
                        }
                    }
                    queued &= push(
                        &mut self.ports,
                        &mut self.switch,
                        &mut self.pool,
                        dst,
                        out,
                        touched,
                    );
                }
                Ok(())
            })
        } else {
            offload::complete_checksum(buf.frame_mut(), &hdr)
        };
        match result {
            Ok(()) if !hdr.is_gso() => {
                buf.offload = VirtioNetHdr::default();
                push(
                    &mut self.ports,
                    &mut self.switch,
                    &mut self.pool,
                    dst,
                    buf,
                    touched,
                )
            }
            Ok(()) => {
                self.pool.put(buf);
                queued
            }
            Err(e) => {
                debug!(net = self.name(), port = %dst, "cannot make an ordinary frame: {e}");
                self.switch.count_drop(dst, DropCause::Malformed);
                self.pool.put(buf);
                false
            }
        }
    }

    /// Builds (or drops) port `id`'s enforcer for its policy as it is now: its own over
    /// the vnet's, where it takes the vnet's ([`policy::takes_vnet_policy`]; not the
    /// host adapter).
    fn enforce(&mut self, id: PortId) {
        let Some(port) = self.ports.get(&id) else {
            return;
        };
        let host_adapter = self.host_adapter.as_ref().is_some_and(|a| a.port == id.0);
        let effective = if policy::takes_vnet_policy(port.backend.kind()) && !host_adapter {
            port.policy.over(&self.spec.policy)
        } else {
            port.policy.clone()
        };
        let left = match self.enforcers.get_mut(&id) {
            Some(enforcer) if enforcer.policy() == &effective => return,
            // What the sections hold (learned MACs, counters, connection tables, held
            // frames of unchanged rates and impairments) stays.
            Some(enforcer) if !effective.is_empty() => {
                let left = enforcer.update(&effective, &self.limits);
                enforcer.set_dhcp_bindings(&self.dhcp_bindings);
                left
            }
            _ => match Enforcer::new(&effective, &self.limits) {
                Some(mut enforcer) => {
                    enforcer.set_dhcp_bindings(&self.dhcp_bindings);
                    self.enforcers.insert(id, enforcer);
                    None
                }
                None => self.enforcers.remove(&id).and_then(Enforcer::into_shaping),
            },
        };
        if let Some(mut left) = left {
            let orphans = &mut self.orphans;
            left.release_all(|toward, b| orphans.push((id, toward, b)));
        }
        self.shaping = self
            .enforcers
            .values()
            .filter(|e| e.shaping().is_some())
            .count();
        self.tell_enforcer_vlan(id);
    }
    /// Tells port `id`'s enforcer the VLAN the port puts untagged frames in (the
    /// filters' `vlan` rules match it).
    fn tell_enforcer_vlan(&mut self, id: PortId) {
        if let Some(enforcer) = self.enforcers.get_mut(&id) {
            enforcer.set_untagged_vlan(self.switch.port(id).and_then(|p| p.untagged_vlan()));
        }
    }

    /// Edits port `id`'s filters: `edit` changes what applies to the port now (its
    /// own, else its vnet's, else none), and the result becomes the port's own.
    pub fn edit_port_acl(&mut self, id: PortId, edit: AclEdit) -> Result<(), ControlError> {
        let port = self
            .ports
            .get(&id)
            .ok_or_else(|| super::error::no_port(&self.spec.name, id.0))?;
        let mut acl = self
            .enforcers
            .get(&id)
            .and_then(|e| e.policy().acl.clone())
            .or_else(|| port.policy.acl.clone())
            .unwrap_or_default();
        edit(&mut acl)?;
        let patch = PolicyPatch {
            acl: Some(Some(acl)),
            ..PolicyPatch::default()
        };
        self.set_port_policy(id, &patch)
    }

    /// Changes port `id`'s own policy live.
    pub fn set_port_policy(&mut self, id: PortId, patch: &PolicyPatch) -> Result<(), ControlError> {
        let port = self
            .ports
            .get_mut(&id)
            .ok_or_else(|| super::error::no_port(&self.spec.name, id.0))?;
        let policy = port.policy.patched(patch);
        policy
            .validate()
            .map_err(|e| ControlError::Invalid(vnet_model::SpecError::Policy(e)))?;
        port.policy = policy;
        self.enforce(id);
        if let Some(enforcer) = self
            .enforcers
            .get_mut(&id)
            .filter(|_| patch.security.is_some())
        {
            enforcer.renew_security();
        }
        info!(net = self.name(), port = %id, "policy changed");
        Ok(())
    }

    /// Changes the policy of the vnet's client ports live.
    pub fn set_policy(&mut self, patch: &PolicyPatch) -> PortPolicy {
        self.spec.policy = self.spec.policy.patched(patch);
        let ids: Vec<PortId> = self.ports.keys().copied().collect();
        for id in ids {
            self.enforce(id);
        }
        if patch.security.is_some() {
            self.enforcers
                .values_mut()
                .for_each(Enforcer::renew_security);
        }
        info!(net = self.name(), "policy of client ports changed");
        self.spec.policy.clone()
    }

    /// Port `id`'s own policy, what is enforced on it, and what that counted.
    pub fn port_policy(&self, id: PortId) -> (PortPolicy, PortPolicy, Option<PolicyReport>) {
        let own = self
            .ports
            .get(&id)
            .map(|p| p.policy.clone())
            .unwrap_or_default();
        match self.enforcers.get(&id) {
            Some(e) => (own, e.policy().clone(), Some(e.report())),
            None => (own, PortPolicy::default(), None),
        }
    }

    /// Starts a live capture of `spec`'s ports (all when it names none); `Err` names
    /// a port the vnet does not have.
    pub fn start_capture(&mut self, spec: &CaptureSpec) -> Result<Capture, u32> {
        if let Some(&missing) = spec.ports.iter().find(|&&p| !self.has_port(PortId(p))) {
            return Err(missing);
        }
        let mut ports: Vec<_> = self
            .switch
            .ports()
            .map(|p| p.id)
            .filter(|id| spec.ports.is_empty() || spec.ports.contains(&id.0))
            .filter_map(|id| Some((id.0, self.ports.get(&id)?.backend.description())))
            .collect();
        ports.sort();
        let (tap, capture) = Tap::new(spec, ports);
        self.taps.push(tap);
        info!(
            net = self.name(),
            "capture started ({} running)",
            self.taps.len()
        );
        Ok(capture)
    }

    /// Carries out a vnet API request on the port that sent it.
    fn apply(&mut self, now: Instant, id: PortId, req: &Request) -> Reply {
        match *req {
            Request::SetMac(mac) => self
                .switch
                .set_mac(now, id, mac)
                .map(|_| None)
                .map_err(|_| libc::EINVAL),
            Request::SetPromiscuous(on) => self
                .switch
                .set_promiscuous(id, on)
                .map(|_| None)
                .map_err(|_| libc::ENODEV),
            Request::GetInfo => {
                let port = self.switch.port(id).ok_or(libc::ENODEV)?;
                Ok(Some(ApiPortInfo {
                    api_version: API_VERSION,
                    port_id: id.0,
                    mac: port.mac().unwrap_or_default(),
                    promiscuous: port.promiscuous(),
                    vlan: port.untagged_vlan().unwrap_or(0),
                    max_frame: self.switch.config().max_frame as u32,
                }))
            }
        }
    }
}

/// Appends a frame to `dst`'s egress queue, or drops and counts it when the queue is full
/// (in frames or in bytes): `false` if dropped.
fn push(
    ports: &mut FastMap<PortId, PortIo>,
    switch: &mut Switch,
    pool: &mut BufPool,
    dst: PortId,
    buf: FrameBuf,
    touched: &mut Vec<PortId>,
) -> bool {
    let Some(port) = ports.get_mut(&dst) else {
        pool.put(buf);
        return false;
    };
    match port.queue.push(buf) {
        Ok(()) => {
            touched.push(dst);
            true
        }
        Err(buf) => {
            pool.put(buf);
            switch.count_drop(dst, DropCause::QueueFull);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use vnet_model::PortKind;

    /// What a [`Scripted`] backend will answer, and the first byte of each frame it sent.
    #[derive(Default)]
    struct Script {
        outcomes: VecDeque<Sent>,
        delivered: Vec<u8>,
    }

    /// Takes at most 5 frames per batch and answers each with the next scripted outcome
    /// (`Done` once the script runs out).
    struct Scripted(Rc<RefCell<Script>>);

    impl Backend for Scripted {
        fn kind(&self) -> PortKind {
            PortKind::Stream
        }
        fn description(&self) -> String {
            "scripted".into()
        }
        fn source(&mut self) -> Option<&mut dyn mio::event::Source> {
            None
        }
        fn recv(&mut self, _buf: &mut FrameBuf) -> Received {
            Received::WouldBlock
        }
        fn send_batch(&mut self, frames: &[FrameBuf]) -> (usize, Sent) {
            assert!(frames.len() <= TX_BATCH);
            let mut script = self.0.borrow_mut();
            let take = frames.len().min(5);
            for (i, frame) in frames[..take].iter().enumerate() {
                match script.outcomes.pop_front().unwrap_or(Sent::Done) {
                    Sent::Done => script.delivered.push(frame.frame()[0]),
                    other => return (i, other),
                }
            }
            (take, Sent::Done)
        }
    }

    #[test]
    fn transmit_counts_every_frame_and_keeps_the_rest_queued_in_order() {
        let dir = std::env::temp_dir().join(format!("vnet-transmit-{}", std::process::id()));
        let mut net = Vnet::bind(NetworkSpec::named("t"), dir.clone()).unwrap();
        let script = Rc::new(RefCell::new(Script::default()));
        let backend = Box::new(Scripted(Rc::clone(&script)));
        let id = net.attach(backend, VlanMode::default(), None).unwrap();
        for i in 0..50u8 {
            let mut buf = net.pool.get_for(60);
            buf.fill(&[i; 60]);
            net.ports.get_mut(&id).unwrap().queue.push(buf).unwrap();
        }
        let mut run = |outcomes: Vec<Sent>| {
            script.borrow_mut().outcomes = outcomes.into();
            let end = net.transmit(id);
            let c = &net.switch.port(id).unwrap().counters;
            let delivered = std::mem::take(&mut script.borrow_mut().delivered);
            let stats = (c.tx_frames, c.tx_bytes, c.drops.get(DropCause::LinkDown));
            (end, delivered, stats, net.ports[&id].queue.len())
        };

        let mut outcomes: Vec<Sent> = (0..40).map(|_| Sent::Done).collect();
        outcomes.extend([Sent::Dropped(DropCause::LinkDown), Sent::Done, Sent::Done]);
        outcomes.push(Sent::WouldBlock);
        let (end, delivered, stats, queued) = run(outcomes);
        assert!(matches!(end, PassEnd::Blocked));
        assert_eq!(delivered, (0..40).chain(41..43).collect::<Vec<u8>>());
        assert_eq!(stats, (42, 42 * 60, 1));
        assert_eq!(queued, 7, "the frame that would block and those after it");

        let (end, delivered, stats, queued) = run(vec![Sent::Done, Sent::Closed("gone".into())]);
        assert!(matches!(end, PassEnd::Closed(why) if why == "gone"));
        assert_eq!((delivered, stats, queued), (vec![43], (43, 43 * 60, 1), 6));

        let (end, delivered, stats, queued) = run(Vec::new());
        assert!(matches!(end, PassEnd::Idle));
        assert_eq!(
            (delivered, stats, queued),
            ((44..50).collect(), (49, 49 * 60, 1), 0)
        );
        drop(net);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
