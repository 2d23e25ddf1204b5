//! The loop itself: poll, receive, transmit, obey commands, age MAC tables.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use tracing::{error, info, warn};
use vnet_core::switch::{PortId, Tagging, VlanMode};
use vnet_model::{DhcpSpec, NetworkSpec, PortInfo, PortSpec, UplinkSpec};

use super::directory::{self, Directory};
use super::network::{self, Network, PassEnd};
use super::{network_dir, report, Command, ControlError};
use crate::backend::api::ApiPort;
use crate::backend::device::DevicePort;
use crate::backend::service::ServicePort;
use crate::backend::stream::StreamPort;
use crate::backend::tap::TapPort;
use crate::backend::uplink::{Claim, Member, Polled, UplinkPort, UplinkSocket};
use crate::backend::vde::VdePort;
use crate::backend::Backend;
use crate::error::{chain, Chain};
use crate::services::dhcp::{self, DhcpService};
use crate::services::nat::{self, NatService};
use crate::sys::{netif, seqpacket};
use vnet_dirs::is_root;

pub(super) const WAKER: Token = Token(usize::MAX);

/// Retry interval for ports whose client cannot take frames and whose socket cannot
/// tell us when it can (datagram peers).
const RETRY: Duration = Duration::from_millis(2);
const AGING_INTERVAL: Duration = Duration::from_secs(1);

type NetKey = usize;

/// What a poll token stands for.
#[derive(Debug, Clone, Copy)]
enum Target {
    StreamListener(NetKey),
    Dgram(NetKey),
    ApiListener(NetKey),
    VdeListener(NetKey),
    Port(NetKey, PortId),
    /// A host NIC's AF_PACKET socket, shared by the vnets bridged to it.
    Uplink(usize),
}

impl Target {
    fn net(&self) -> NetKey {
        match *self {
            Target::StreamListener(n)
            | Target::Dgram(n)
            | Target::ApiListener(n)
            | Target::VdeListener(n)
            | Target::Port(n, _) => n,
            // Belongs to no single vnet: never equals a vnet's key.
            Target::Uplink(_) => NetKey::MAX,
        }
    }
}

pub(super) struct Engine {
    poll: Poll,
    /// This thread's index, for `NetworkInfo::thread`.
    index: usize,
    directory: Arc<Mutex<Directory>>,
    run_dir: PathBuf,
    state_dir: PathBuf,
    commands: mpsc::Receiver<Command>,
    networks: Slab<Network>,
    names: HashMap<String, NetKey>,
    targets: Slab<Target>,
    /// Ports (and dgram sockets, as port `None`) to read this turn.
    rx_list: Vec<(NetKey, Option<PortId>)>,
    /// The list being worked through while the next turn's fills up; the two swap
    /// every turn so neither is reallocated.
    rx_work: Vec<(NetKey, Option<PortId>)>,
    /// Ports with frames queued or output pending.
    tx_list: Vec<(NetKey, PortId)>,
    tx_work: Vec<(NetKey, PortId)>,
    /// Dgram ports that were full: retried after [`RETRY`].
    retry_list: Vec<(NetKey, PortId)>,
    touched: Vec<PortId>,
    /// Ports whose client is a built-in service (they have timers).
    services: Vec<(NetKey, PortId)>,
    /// Host NICs with vnets bridged to them, one AF_PACKET socket each.
    uplinks: Slab<UplinkSocket>,
    /// Uplink sockets to read this turn.
    uplink_rx: Vec<usize>,
    last_aging: Instant,
}

impl Engine {
    pub fn new(
        poll: Poll,
        index: usize,
        run_dir: PathBuf,
        state_dir: PathBuf,
        commands: mpsc::Receiver<Command>,
        directory: Arc<Mutex<Directory>>,
    ) -> Self {
        Engine {
            poll,
            index,
            directory,
            run_dir,
            state_dir,
            commands,
            networks: Slab::new(),
            names: HashMap::new(),
            targets: Slab::new(),
            rx_list: Vec::new(),
            rx_work: Vec::new(),
            tx_list: Vec::new(),
            tx_work: Vec::new(),
            retry_list: Vec::new(),
            touched: Vec::new(),
            services: Vec::new(),
            uplinks: Slab::new(),
            uplink_rx: Vec::new(),
            last_aging: Instant::now(),
        }
    }

    /// Runs until shutdown; `busy_poll`: see [`super::Tuning::busy_poll`].
    pub fn run(mut self, busy_poll: Duration) {
        let mut events = Events::with_capacity(1024);
        let mut last_traffic = Instant::now()
            .checked_sub(busy_poll)
            .unwrap_or_else(Instant::now);
        loop {
            let next_timer = self.tick_services();
            let timeout = if !self.rx_list.is_empty()
                || !self.tx_list.is_empty()
                || !self.uplink_rx.is_empty()
                || (!busy_poll.is_zero() && last_traffic.elapsed() < busy_poll)
            {
                Duration::ZERO
            } else if !self.retry_list.is_empty() {
                RETRY
            } else {
                next_timer.map_or(AGING_INTERVAL, |t| {
                    t.saturating_duration_since(Instant::now())
                        .min(AGING_INTERVAL)
                })
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                error!("poll failed, data plane stops: {e}");
                return;
            }
            let mut woken = false;
            for ev in events.iter() {
                if ev.token() == WAKER {
                    woken = true;
                    continue;
                }
                let Some(&target) = self.targets.get(ev.token().0) else {
                    continue;
                };
                match target {
                    Target::StreamListener(net) => self.accept_stream(net),
                    Target::ApiListener(net) => self.accept_api(net),
                    Target::VdeListener(net) => self.accept_vde(net),
                    Target::Dgram(net) => {
                        if ev.is_readable() {
                            self.rx_list.push((net, None));
                        }
                        if ev.is_writable() {
                            self.tx_list
                                .extend(self.retry_list.drain(..).filter(|(n, _)| *n == net));
                        }
                    }
                    Target::Uplink(u) => {
                        if !self.uplink_rx.contains(&u) {
                            self.uplink_rx.push(u);
                        }
                    }
                    Target::Port(net, id) => {
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.schedule_rx(net, id);
                        }
                        if ev.is_writable() {
                            self.schedule_tx(net, id);
                        }
                    }
                }
            }
            let now = Instant::now();
            if !busy_poll.is_zero() && (!self.rx_list.is_empty() || !self.uplink_rx.is_empty()) {
                last_traffic = now;
            }
            if !self.retry_list.is_empty() && timeout == RETRY {
                self.tx_list.append(&mut self.retry_list);
            }
            self.receive_uplinks(now);
            self.receive_all(now);
            self.transmit_all();
            if woken && self.obey_commands(now) {
                return;
            }
            self.share_dhcp_names();
            if now.duration_since(self.last_aging) >= AGING_INTERVAL {
                self.last_aging = now;
                for (_, net) in self.networks.iter_mut() {
                    net.switch.expire(now);
                }
            }
        }
    }

    fn schedule_rx(&mut self, net: NetKey, id: PortId) {
        if let Some(p) = self
            .networks
            .get_mut(net)
            .and_then(|n| n.ports.get_mut(&id))
        {
            if !p.rx_scheduled {
                p.rx_scheduled = true;
                self.rx_list.push((net, Some(id)));
            }
        }
    }

    fn schedule_tx(&mut self, net: NetKey, id: PortId) {
        if let Some(p) = self
            .networks
            .get_mut(net)
            .and_then(|n| n.ports.get_mut(&id))
        {
            if !p.tx_scheduled {
                p.tx_scheduled = true;
                self.tx_list.push((net, id));
            }
        }
    }

    fn receive_all(&mut self, now: Instant) {
        let mut list = std::mem::take(&mut self.rx_work);
        std::mem::swap(&mut list, &mut self.rx_list);
        for &(key, port) in &list {
            let Some(net) = self.networks.get_mut(key) else {
                continue;
            };
            let end = match port {
                None => net.receive_dgram(now, &mut self.touched),
                Some(id) => {
                    let Some(p) = net.ports.get_mut(&id) else {
                        continue;
                    };
                    p.rx_scheduled = false;
                    net.receive(now, id, &mut self.touched)
                }
            };
            for i in 0..self.touched.len() {
                let dst = self.touched[i];
                self.schedule_tx(key, dst);
            }
            self.touched.clear();
            match (end, port) {
                (PassEnd::More, None) => self.rx_list.push((key, None)),
                (PassEnd::More, Some(id)) => self.schedule_rx(key, id),
                (PassEnd::Closed(why), Some(id)) => self.close_port(key, id, &why),
                _ => {}
            }
        }
        list.clear();
        self.rx_work = list;
    }

    /// Reads host NICs' uplink sockets and hands each frame to the vnet that claims
    /// its VLAN (at most [`UPLINK_BUDGET`] frames per NIC and turn).
    fn receive_uplinks(&mut self, now: Instant) {
        const UPLINK_BUDGET: usize = 64;
        for u in std::mem::take(&mut self.uplink_rx) {
            let mut more = true;
            for _ in 0..UPLINK_BUDGET {
                let Some(up) = self.uplinks.get_mut(u) else {
                    more = false;
                    break;
                };
                let key = match up.poll() {
                    Polled::WouldBlock => {
                        more = false;
                        break;
                    }
                    Polled::Skipped => continue,
                    Polled::Frame(inc) => {
                        let Some(net) = self.networks.get_mut(inc.net) else {
                            continue;
                        };
                        if !net.ports.contains_key(&inc.port) {
                            continue;
                        }
                        let mut buf = net.pool.get_for(inc.frame.len());
                        buf.fill(inc.frame);
                        buf.offload = inc.offload;
                        if inc.strip {
                            buf.retag(Tagging::Untagged);
                        }
                        net.forward(now, inc.port, buf, &mut self.touched);
                        inc.net
                    }
                };
                let touched = std::mem::take(&mut self.touched);
                for dst in &touched {
                    self.schedule_tx(key, *dst);
                }
                self.touched = touched;
                self.touched.clear();
            }
            if more && !self.uplink_rx.contains(&u) {
                self.uplink_rx.push(u);
            }
        }
    }

    fn transmit_all(&mut self) {
        let mut list = std::mem::take(&mut self.tx_work);
        std::mem::swap(&mut list, &mut self.tx_list);
        for &(key, id) in &list {
            let Some(net) = self.networks.get_mut(key) else {
                continue;
            };
            let Some(p) = net.ports.get_mut(&id) else {
                continue;
            };
            p.tx_scheduled = false;
            let has_fd = p.backend.source().is_some();
            match net.transmit(id) {
                PassEnd::Closed(why) => self.close_port(key, id, &why),
                // Ports with their own fd hear from epoll when they drain.
                PassEnd::Blocked if !has_fd => self.retry_list.push((key, id)),
                _ => {}
            }
            let has_input = self.networks.get(key).and_then(|n| n.ports.get(&id));
            if has_input.is_some_and(|p| p.backend.has_input()) {
                self.schedule_rx(key, id);
            }
        }
        list.clear();
        self.tx_work = list;
    }

    /// Hands each NAT device the DHCP names of its vnet after they changed this turn,
    /// so its DNS answers them. DHCP and NAT are separate services; this is where they
    /// meet, on the data plane's thread, with no lock.
    fn share_dhcp_names(&mut self) {
        for (_, net) in self.networks.iter() {
            let (Some((_, dhcp)), Some(nat)) = (&net.dhcp, &net.nat) else {
                continue;
            };
            if let Some(names) = dhcp.borrow_mut().take_changed_names() {
                nat.borrow_mut().device_mut().set_local_names(names);
            }
        }
    }

    /// Runs the timers of built-in services that are due; returns the next deadline.
    fn tick_services(&mut self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut due = Vec::new();
        self.services.retain(|&(key, id)| {
            let Some(port) = self
                .networks
                .get_mut(key)
                .and_then(|n| n.ports.get_mut(&id))
            else {
                return false;
            };
            // Services may derive deadlines from another clock: compare with a reading
            // taken after asking, so a deadline that has passed is never in the future.
            match port.backend.deadline() {
                Some(t) if t <= Instant::now() => {
                    port.backend.tick(Instant::now());
                    due.push((key, id));
                }
                Some(t) => next = Some(next.map_or(t, |n| n.min(t))),
                None => {}
            }
            true
        });
        for (key, id) in due {
            self.schedule_rx(key, id);
        }
        next
    }

    fn close_port(&mut self, key: NetKey, id: PortId, why: &str) {
        let registry = self.poll.registry();
        if let Some(net) = self.networks.get_mut(key) {
            if let Some(token) = net.detach(registry, id, why) {
                self.targets.try_remove(token.0);
            }
        }
        self.forget_uplink(key, Some(id));
    }

    /// Joins vnet `key` to a host NIC (replacing its uplink, if it had one). Vnets on
    /// the same NIC share its socket; their VLAN claims must not overlap.
    fn set_uplink(
        &mut self,
        key: NetKey,
        spec: UplinkSpec,
        now: Instant,
    ) -> Result<PortInfo, ControlError> {
        spec.check().map_err(ControlError::Invalid)?;
        if !crate::sys::tap::valid_ifname(&spec.interface) {
            return Err(ControlError::Invalid(format!(
                "uplink interface {:?} is not a valid interface name",
                spec.interface
            )));
        }
        let claim = Claim::of(&spec);
        let name = self.networks[key].name().to_string();
        self.directory().check(&spec.interface, &name, &claim)?;
        if self
            .uplinks
            .iter()
            .any(|(_, s)| s.members.iter().any(|m| m.net == key))
        {
            self.remove_uplink(key)?;
        }
        let u = match self
            .uplinks
            .iter()
            .find(|(_, s)| s.interface == spec.interface)
        {
            Some((u, _)) => u,
            None => {
                let mut up = UplinkSocket::open(&spec.interface).map_err(|e| {
                    let msg = format!("cannot open uplink {}: {e}", spec.interface);
                    match e.raw_os_error() {
                        Some(libc::EPERM | libc::EACCES) => ControlError::Forbidden(msg),
                        _ if e.kind() == io::ErrorKind::NotFound => ControlError::Invalid(msg),
                        _ => ControlError::Failed(msg),
                    }
                })?;
                let u = self.uplinks.vacant_key();
                let token = Token(self.targets.insert(Target::Uplink(u)));
                use std::os::fd::AsRawFd;
                let fd = up.sock.as_raw_fd();
                if let Err(e) = self.poll.registry().register(
                    &mut mio::unix::SourceFd(&fd),
                    token,
                    Interest::READABLE,
                ) {
                    self.targets.remove(token.0);
                    return Err(ControlError::Failed(format!(
                        "cannot watch the uplink: {e}"
                    )));
                }
                up.token = Some(token);
                info!(
                    interface = spec.interface,
                    "uplink socket opened (promiscuous)"
                );
                self.uplinks.insert(up)
            }
        };
        let port = UplinkPort::new(&self.uplinks[u], &spec);
        let id = match self.add_port(key, Box::new(port), spec.port_vlan_mode()) {
            Ok(id) => id,
            Err(e) => {
                self.forget_uplink(key, None);
                return Err(e);
            }
        };
        self.directory()
            .claim(&spec.interface, &name, claim.clone());
        self.uplinks[u].members.push(Member {
            net: key,
            port: id,
            claim,
        });
        // Frames may already be waiting.
        if !self.uplink_rx.contains(&u) {
            self.uplink_rx.push(u);
        }
        self.networks[key].spec.uplink = Some(spec);
        report::port_info(&self.networks[key], now, id).ok_or(ControlError::Stopped)
    }

    /// Unbridges vnet `key`.
    fn remove_uplink(&mut self, key: NetKey) -> Result<(), ControlError> {
        let found = self
            .uplinks
            .iter()
            .find_map(|(_, s)| s.members.iter().find(|m| m.net == key).map(|m| m.port));
        let Some(id) = found else {
            return Err(ControlError::NotFound(format!(
                "vnet {:?} has no uplink",
                self.networks[key].name()
            )));
        };
        self.close_port(key, id, "uplink removed");
        Ok(())
    }

    /// Forgets vnet `key`'s membership in uplink sockets (port `id`, or all), closing
    /// sockets nobody uses any more.
    fn forget_uplink(&mut self, key: NetKey, id: Option<PortId>) {
        let mut unused = Vec::new();
        for (u, s) in self.uplinks.iter_mut() {
            let before = s.members.len();
            s.members
                .retain(|m| !(m.net == key && id.is_none_or(|id| m.port == id)));
            if s.members.len() != before {
                if let Some(net) = self.networks.get_mut(key) {
                    net.spec.uplink = None;
                    directory::lock(&self.directory).release(net.name());
                }
            }
            if s.members.is_empty() {
                unused.push(u);
            }
        }
        for u in unused {
            let s = self.uplinks.remove(u);
            use std::os::fd::AsRawFd;
            let fd = s.sock.as_raw_fd();
            let _ = self
                .poll
                .registry()
                .deregister(&mut mio::unix::SourceFd(&fd));
            if let Some(t) = s.token {
                self.targets.try_remove(t.0);
            }
            self.uplink_rx.retain(|x| *x != u);
            info!(interface = s.interface, "uplink socket closed");
        }
    }

    fn accept_stream(&mut self, key: NetKey) {
        loop {
            let Some(net) = self.networks.get_mut(key) else {
                return;
            };
            match net.stream_listener.accept() {
                Ok((sock, _)) => {
                    let port = StreamPort::new(sock, net.switch.config().max_frame);
                    self.add_port(key, Box::new(port), VlanMode::default()).ok();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    warn!(net = net.name(), "accept on stream.sock failed: {e}");
                    return;
                }
            }
        }
    }

    fn accept_api(&mut self, key: NetKey) {
        loop {
            let Some(net) = self.networks.get_mut(key) else {
                return;
            };
            match seqpacket::accept(&net.api_listener) {
                Ok(Some(sock)) => {
                    self.add_port(key, Box::new(ApiPort::new(sock)), VlanMode::default())
                        .ok();
                }
                Ok(None) => return,
                Err(e) => {
                    warn!(net = net.name(), "accept on api.sock failed: {e}");
                    return;
                }
            }
        }
    }

    fn accept_vde(&mut self, key: NetKey) {
        loop {
            let Some(net) = self.networks.get_mut(key) else {
                return;
            };
            match net.vde_listener.accept() {
                Ok((sock, _)) => {
                    let dir = network::vde_dir(&net.dir);
                    match VdePort::new(sock, &dir, net.name()) {
                        Ok(port) => {
                            self.add_port(key, Box::new(port), VlanMode::default()).ok();
                        }
                        Err(e) => warn!(net = net.name(), "cannot open a VDE port: {e}"),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    warn!(net = net.name(), "accept on vde/ctl failed: {e}");
                    return;
                }
            }
        }
    }

    /// Attaches a backend to vnet `key` and starts watching it.
    fn add_port(
        &mut self,
        key: NetKey,
        backend: Box<dyn Backend>,
        vlan: VlanMode,
    ) -> Result<PortId, ControlError> {
        let net = self.networks.get_mut(key).ok_or(ControlError::Stopped)?;
        let id = net.attach(backend, vlan).map_err(ControlError::Invalid)?;
        let entry = self.targets.vacant_entry();
        let token = Token(entry.key());
        let port = net.ports.get_mut(&id).expect("just attached");
        if let Some(src) = port.backend.source() {
            if let Err(e) =
                self.poll
                    .registry()
                    .register(src, token, Interest::READABLE | Interest::WRITABLE)
            {
                net.detach(self.poll.registry(), id, "cannot watch it");
                return Err(ControlError::Failed(format!("cannot watch the port: {e}")));
            }
            port.token = Some(token);
            entry.insert(Target::Port(key, id));
        }
        Ok(id)
    }

    /// Handles queued commands; `true` means shut down.
    fn obey_commands(&mut self, now: Instant) -> bool {
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                Command::Shutdown => {
                    let keys: Vec<NetKey> = self.networks.iter().map(|(k, _)| k).collect();
                    for k in keys {
                        self.delete_network(k);
                    }
                    info!("data plane stopped");
                    return true;
                }
                Command::CreateNetwork(spec, reply) => {
                    let _ = reply.send(self.create_network(spec));
                }
                Command::DeleteNetwork(name, reply) => {
                    let _ = reply.send(self.lookup(&name).map(|k| self.delete_network(k)));
                }
                Command::Networks(reply) => {
                    let mut list: Vec<_> = self
                        .networks
                        .iter()
                        .map(|(_, n)| report::network_info(n, self.index))
                        .collect();
                    list.sort_by(|a, b| a.name.cmp(&b.name));
                    let _ = reply.send(Ok(list));
                }
                Command::Network(name, reply) => {
                    let _ = reply.send(
                        self.lookup(&name)
                            .map(|k| report::network_info(&self.networks[k], self.index)),
                    );
                }
                Command::AddPort(name, spec, reply) => {
                    let _ = reply.send(
                        self.lookup(&name)
                            .and_then(|k| self.add_port_spec(k, spec, now)),
                    );
                }
                Command::AttachDevice(name, sock, pid, reply) => {
                    let result = self.lookup(&name).and_then(|k| {
                        let port = DevicePort::new(sock, &name, pid);
                        self.add_port(k, Box::new(port), VlanMode::default())
                            .map(|id| id.0)
                    });
                    let _ = reply.send(result);
                }
                Command::RemovePort(name, id, reply) => {
                    let result = self.lookup(&name).and_then(|k| {
                        if !self.networks[k].ports.contains_key(&PortId(id)) {
                            return Err(no_port(&name, id));
                        }
                        self.close_port(k, PortId(id), "removed by the control API");
                        Ok(())
                    });
                    let _ = reply.send(result);
                }
                Command::Ports(name, reply) => {
                    let _ = reply.send(
                        self.lookup(&name)
                            .map(|k| report::ports(&self.networks[k], now)),
                    );
                }
                Command::SetUplink(name, spec, reply) => {
                    let _ = reply.send(
                        self.lookup(&name)
                            .and_then(|k| self.set_uplink(k, spec, now)),
                    );
                }
                Command::Forwards(name, reply) => {
                    let _ = reply.send(
                        self.lookup(&name)
                            .and_then(|k| self.nat_of(k))
                            .map(|n| n.borrow().forwards()),
                    );
                }
                Command::AddForward(name, spec, reply) => {
                    let _ = reply.send(self.lookup(&name).and_then(|k| self.add_forward(k, spec)));
                }
                Command::RemoveForward(name, proto, host, reply) => {
                    let _ = reply.send(
                        self.lookup(&name)
                            .and_then(|k| self.remove_forward(k, proto, host)),
                    );
                }
                Command::RemoveUplink(name, reply) => {
                    let _ = reply.send(self.lookup(&name).and_then(|k| self.remove_uplink(k)));
                }
                Command::SetPortVlan(name, id, mode, reply) => {
                    let result = self.lookup(&name).and_then(|k| {
                        let net = &mut self.networks[k];
                        if !net.ports.contains_key(&PortId(id)) {
                            return Err(no_port(&name, id));
                        }
                        net.switch
                            .set_vlan_mode(now, PortId(id), mode)
                            .map_err(|e| ControlError::Invalid(e.to_string()))?;
                        info!(net = name, port = id, "VLAN mode changed");
                        report::port_info(net, now, PortId(id)).ok_or(ControlError::Stopped)
                    });
                    let _ = reply.send(result);
                }
                Command::Port(name, id, reply) => {
                    let _ = reply.send(self.lookup(&name).and_then(|k| {
                        report::port_info(&self.networks[k], now, PortId(id))
                            .ok_or_else(|| no_port(&name, id))
                    }));
                }
                Command::Leases(name, reply) => {
                    let _ = reply.send(self.lookup(&name).map(|k| {
                        self.networks[k]
                            .dhcp
                            .as_ref()
                            .map(|(_, s)| s.borrow().leases())
                            .unwrap_or_default()
                    }));
                }
                Command::SetDhcp(name, dhcp, reply) => {
                    let _ = reply.send(self.lookup(&name).and_then(|k| self.set_dhcp(k, dhcp)));
                }
                Command::AddReservation(name, r, reply) => {
                    let result = self.lookup(&name).and_then(|k| {
                        let mut d = self.dhcp_of(k)?;
                        if d.reservations.iter().any(|x| x.mac == r.mac) {
                            return Err(ControlError::Exists(format!(
                                "{} already has a reservation (remove it with `vnet dhcp unreserve {name} {}`)",
                                r.mac, r.mac
                            )));
                        }
                        if let Some(x) = d.reservations.iter().find(|x| x.ip == r.ip) {
                            return Err(ControlError::Invalid(format!("{} is already reserved for {}", r.ip, x.mac)));
                        }
                        d.reservations.push(r.clone());
                        self.set_dhcp(k, d).map(|_| r)
                    });
                    let _ = reply.send(result);
                }
                Command::RemoveReservation(name, mac, reply) => {
                    let result = self.lookup(&name).and_then(|k| {
                        let mut d = self.dhcp_of(k)?;
                        let before = d.reservations.len();
                        d.reservations.retain(|x| x.mac != mac);
                        if d.reservations.len() == before {
                            return Err(ControlError::NotFound(format!(
                                "vnet {name:?} has no reservation for {mac}"
                            )));
                        }
                        self.set_dhcp(k, d).map(|_| ())
                    });
                    let _ = reply.send(result);
                }
                Command::Macs(name, reply) => {
                    let _ = reply.send(
                        self.lookup(&name)
                            .map(|k| report::macs(&self.networks[k], now)),
                    );
                }
            }
        }
        false
    }

    fn directory(&self) -> MutexGuard<'_, Directory> {
        directory::lock(&self.directory)
    }

    fn lookup(&self, name: &str) -> Result<NetKey, ControlError> {
        self.names
            .get(name)
            .copied()
            .ok_or_else(|| directory::no_vnet(name))
    }

    /// Makes the vnet the directory placed on this thread. The thread, not the control
    /// plane, settles the name: if the vnet cannot be made the name is free again, even
    /// when the client that asked has gone.
    fn create_network(
        &mut self,
        spec: NetworkSpec,
    ) -> Result<vnet_model::NetworkInfo, ControlError> {
        let name = spec.name.clone();
        let made = self.make_network(spec);
        if made.is_err() {
            self.directory().remove(&name);
        }
        made
    }

    fn make_network(&mut self, spec: NetworkSpec) -> Result<vnet_model::NetworkInfo, ControlError> {
        let dir = network_dir(&self.run_dir, &spec.name);
        let name = spec.name.clone();
        let mut net = Network::bind(spec, dir.clone()).map_err(|e| {
            ControlError::Failed(format!(
                "cannot create the sockets of vnet {name:?} in {}: {e}",
                dir.display()
            ))
        })?;
        let key = self.networks.vacant_key();
        let tokens = [
            Token(self.targets.insert(Target::StreamListener(key))),
            Token(self.targets.insert(Target::Dgram(key))),
            Token(self.targets.insert(Target::ApiListener(key))),
            Token(self.targets.insert(Target::VdeListener(key))),
        ];
        if let Err(e) = net.register_listeners(self.poll.registry(), tokens) {
            self.targets.retain(|_, t| t.net() != key);
            net.close(self.poll.registry());
            return Err(ControlError::Failed(format!(
                "cannot watch the sockets of {name:?}: {e}"
            )));
        }
        self.networks.insert(net);
        self.names.insert(name.clone(), key);
        if let Err(e) = self
            .start_host_adapter(key)
            .and_then(|()| self.start_dhcp(key))
            .and_then(|()| self.start_nat(key))
            .and_then(|()| self.start_uplink(key))
        {
            self.delete_network(key);
            return Err(e);
        }
        let info = report::network_info(&self.networks[key], self.index);
        info!(
            net = name,
            mtu = info.mtu,
            "vnet created in {}",
            dir.display()
        );
        Ok(info)
    }

    /// Brings up the vnet's host adapter, if it has one. Without privileges that is
    /// skipped with a warning (the rest of the vnet works); as root a failure is an error.
    fn start_host_adapter(&mut self, key: NetKey) -> Result<(), ControlError> {
        let spec = &self.networks[key].spec;
        let (Some((ifname, address)), Some(subnet)) = (spec.host_adapter_resolved(), spec.subnet)
        else {
            return Ok(());
        };
        let (net_name, mtu) = (spec.name.clone(), spec.mtu);
        let tap = match TapPort::host_adapter(&ifname) {
            Ok(tap) => tap,
            Err(e) if !is_root() => {
                warn!(
                    net = net_name,
                    "skipped the host adapter {ifname}: {}",
                    Chain(&e)
                );
                return Ok(());
            }
            Err(e) => return Err(ControlError::Failed(chain(&e))),
        };
        let setup = netif::configure(&ifname, address, subnet.prefix_len(), mtu)
            .and_then(|()| netif::forbid_forwarding(&ifname));
        if let Err(e) = setup {
            return Err(ControlError::Failed(format!(
                "host adapter {ifname}: {}",
                Chain(&e)
            )));
        }
        let port = self.add_port(key, Box::new(tap), VlanMode::default())?;
        self.networks[key].host_adapter = Some(vnet_model::HostAdapterInfo {
            name: ifname.clone(),
            address,
            port: port.0,
        });
        info!(
            net = net_name,
            "host adapter {ifname} is {address}/{}",
            subnet.prefix_len()
        );
        Ok(())
    }

    /// Bridges the vnet to its NIC, if its spec asks for it. Without privileges that
    /// is skipped with a warning, like the host adapter.
    fn start_uplink(&mut self, key: NetKey) -> Result<(), ControlError> {
        let Some(spec) = self.networks[key].spec.uplink.take() else {
            return Ok(());
        };
        match self.set_uplink(key, spec.clone(), Instant::now()) {
            Ok(_) => Ok(()),
            Err(ControlError::Forbidden(e)) if !is_root() => {
                warn!(net = self.networks[key].name(), "skipped the uplink: {e}");
                self.networks[key].spec.uplink = Some(spec);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Attaches the vnet's DHCP service, if its spec asks for one.
    fn start_dhcp(&mut self, key: NetKey) -> Result<(), ControlError> {
        let spec = self.networks[key].spec.clone();
        let Some(config) = dhcp::config_for(&spec).map_err(|e| ControlError::Invalid(chain(&e)))?
        else {
            return Ok(());
        };
        let mac = config.server_mac;
        let service = DhcpService::start(&spec, config, &self.state_dir)
            .map_err(|e| ControlError::Invalid(chain(&e)))?;
        let service = Rc::new(RefCell::new(service));
        let port = ServicePort::new(Rc::clone(&service));
        let id = self.add_port(key, Box::new(port), VlanMode::default())?;
        let net = &mut self.networks[key];
        net.switch
            .set_mac(Instant::now(), id, mac)
            .map_err(|e| ControlError::Failed(e.to_string()))?;
        net.dhcp = Some((id, service));
        self.services.push((key, id));
        Ok(())
    }

    /// Attaches the vnet's NAT device, if its spec asks for one.
    fn start_nat(&mut self, key: NetKey) -> Result<(), ControlError> {
        let spec = self.networks[key].spec.clone();
        let Some(config) = nat::config_for(&spec) else {
            return Ok(());
        };
        let mac = config.mac;
        let service =
            NatService::start(&spec, config).map_err(|e| ControlError::Failed(chain(&e)))?;
        let service = Rc::new(RefCell::new(service));
        self.networks[key].nat = Some(Rc::clone(&service));
        let port = ServicePort::new(service);
        let id = self.add_port(key, Box::new(port), VlanMode::default())?;
        self.networks[key]
            .switch
            .set_mac(Instant::now(), id, mac)
            .map_err(|e| ControlError::Failed(e.to_string()))?;
        self.services.push((key, id));
        Ok(())
    }

    fn nat_of(&self, key: NetKey) -> Result<Rc<RefCell<NatService>>, ControlError> {
        self.networks[key].nat.clone().ok_or_else(|| {
            ControlError::NotFound(format!(
                "vnet {:?} has no NAT device (give it `nat = {{}}` in its configuration)",
                self.networks[key].name()
            ))
        })
    }

    /// Adds a port forward to a NAT vnet live.
    fn add_forward(
        &mut self,
        key: NetKey,
        f: vnet_model::ForwardSpec,
    ) -> Result<vnet_model::ForwardSpec, ControlError> {
        let nat = self.nat_of(key)?;
        let mut spec = self.networks[key].spec.clone();
        if let Some(n) = spec.nat.as_mut() {
            if n.forward
                .iter()
                .any(|g| (g.proto, g.host) == (f.proto, f.host))
            {
                return Err(ControlError::Exists(format!(
                    "{} {} is already forwarded (remove it first with `vnet forward rm {} {}{}`)",
                    f.proto.as_str(),
                    f.host,
                    self.networks[key].name(),
                    f.host,
                    match f.proto {
                        vnet_model::ForwardProto::Tcp => "",
                        vnet_model::ForwardProto::Udp => " --udp",
                    }
                )));
            }
            n.forward.push(f.clone());
        }
        validate(&spec)?;
        nat.borrow_mut().add_forward(&f).map_err(|e| match e {
            nat::ForwardError::Exists(..) => ControlError::Exists(e.to_string()),
            nat::ForwardError::Listen(..) => ControlError::Failed(chain(&e)),
        })?;
        self.networks[key].spec = spec;
        Ok(f)
    }

    /// Removes the `proto` port forward on `host`.
    fn remove_forward(
        &mut self,
        key: NetKey,
        proto: vnet_model::ForwardProto,
        host: std::net::SocketAddrV4,
    ) -> Result<(), ControlError> {
        let nat = self.nat_of(key)?;
        if !nat.borrow_mut().remove_forward(proto, host) {
            return Err(ControlError::NotFound(format!(
                "vnet {:?} forwards no {} on {host} (see `vnet forward ls {}`)",
                self.networks[key].name(),
                proto.as_str(),
                self.networks[key].name()
            )));
        }
        if let Some(n) = self.networks[key].spec.nat.as_mut() {
            n.forward.retain(|f| (f.proto, f.host) != (proto, host));
        }
        Ok(())
    }

    /// Replaces a vnet's DHCP settings live, starting the service if it had none.
    fn set_dhcp(
        &mut self,
        key: NetKey,
        dhcp: DhcpSpec,
    ) -> Result<vnet_model::NetworkInfo, ControlError> {
        let mut spec = self.networks[key].spec.clone();
        spec.dhcp = Some(dhcp);
        validate(&spec)?;
        let config = dhcp::config_for(&spec)
            .map_err(|e| ControlError::Invalid(chain(&e)))?
            .expect("has dhcp");
        match &self.networks[key].dhcp {
            Some((_, service)) => service
                .borrow_mut()
                .reconfigure(config)
                .map_err(|e| ControlError::Invalid(chain(&e)))?,
            None => {
                self.networks[key].spec = spec.clone();
                return self
                    .start_dhcp(key)
                    .map(|()| report::network_info(&self.networks[key], self.index));
            }
        }
        self.networks[key].spec = spec;
        Ok(report::network_info(&self.networks[key], self.index))
    }

    fn dhcp_of(&self, key: NetKey) -> Result<DhcpSpec, ControlError> {
        self.networks[key].spec.dhcp.clone().ok_or_else(|| {
            ControlError::NotFound(format!(
                "vnet {:?} has no DHCP service (start one with `vnet dhcp set {} --on`)",
                self.networks[key].name(),
                self.networks[key].name()
            ))
        })
    }

    fn delete_network(&mut self, key: NetKey) {
        self.forget_uplink(key, None);
        let net = self.networks.remove(key);
        self.names.remove(net.name());
        self.directory().remove(net.name());
        self.targets.retain(|_, t| t.net() != key);
        self.rx_list.retain(|(n, _)| *n != key);
        self.tx_list.retain(|(n, _)| *n != key);
        self.retry_list.retain(|(n, _)| *n != key);
        let name = net.name().to_string();
        net.close(self.poll.registry());
        info!(net = name, "vnet removed");
    }

    fn add_port_spec(
        &mut self,
        key: NetKey,
        spec: PortSpec,
        now: Instant,
    ) -> Result<PortInfo, ControlError> {
        let (ifname, vlan) = match spec {
            PortSpec::Tap { ifname, vlan } => (ifname, vlan),
            PortSpec::VhostUser { name, vlan } => {
                return self.add_vhost_user_port(key, &name, vlan, now)
            }
        };
        for net in self.networks.iter().map(|(_, n)| n) {
            if let Some(id) = net.tap_port(&ifname) {
                return Err(ControlError::Exists(format!(
                    "TAP {ifname} is already port {id} of vnet {} (see `vnet port ls {}`)",
                    net.name(),
                    net.name()
                )));
            }
        }
        let tap = TapPort::open(&ifname).map_err(|e| {
            use crate::sys::tap::TapError;
            match &e {
                TapError::BadName(_) => ControlError::Invalid(chain(&e)),
                TapError::SetIff { source, .. } if source.raw_os_error() == Some(libc::EPERM) => {
                    ControlError::Forbidden(chain(&e))
                }
                // Open already: by another program, or as a port of a vnet on another
                // data-plane thread (the loop above sees only this thread's vnets).
                TapError::SetIff { source, .. } if source.raw_os_error() == Some(libc::EBUSY) => {
                    ControlError::Exists(format!(
                        "TAP {ifname} is open already: a port of another vnet (see `vnet port ls`) or another program's"
                    ))
                }
                _ => ControlError::Failed(chain(&e)),
            }
        })?;
        let id = self.add_port(key, Box::new(tap), vlan)?;
        report::port_info(&self.networks[key], now, id).ok_or(ControlError::Stopped)
    }
}

impl Engine {
    /// `vnet port add NET --vhost-user NAME`: listens on `RUN/NET/vhost-user/NAME.sock`.
    fn add_vhost_user_port(
        &mut self,
        key: NetKey,
        name: &str,
        vlan: VlanMode,
        now: Instant,
    ) -> Result<PortInfo, ControlError> {
        use crate::backend::vhost_user::{socket_path, valid_name, VhostUserPort};
        if !valid_name(name) {
            return Err(ControlError::Invalid(format!(
                "invalid vhost-user port name {name:?}: use 1-64 characters of A-Z a-z 0-9 - _ . (not starting with '.')"
            )));
        }
        let net = &self.networks[key];
        let path = socket_path(&net.dir, name);
        if net
            .ports
            .values()
            .any(|p| p.backend.vhost_user_name() == Some(name))
        {
            return Err(ControlError::Exists(format!(
                "vnet {} already has vhost-user port {name} (see `vnet port ls {}`)",
                net.name(),
                net.name()
            )));
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| ControlError::Failed(format!("{}: {e}", dir.display())))?;
        }
        let port = VhostUserPort::listen(name, &path)
            .map_err(|e| ControlError::Failed(format!("{}: {}", path.display(), Chain(&e))))?;
        let id = self.add_port(key, Box::new(port), vlan)?;
        report::port_info(&self.networks[key], now, id).ok_or(ControlError::Stopped)
    }
}

fn no_port(net: &str, id: u32) -> ControlError {
    ControlError::NotFound(format!(
        "vnet {net:?} has no port {id} (see `vnet port ls {net}`)"
    ))
}

/// Checks a vnet spec the way the API promises.
pub fn validate(spec: &NetworkSpec) -> Result<(), ControlError> {
    let name_ok = !spec.name.is_empty()
        && spec.name.len() <= 15
        && spec
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !spec.name.starts_with('.');
    if !name_ok {
        return Err(ControlError::Invalid(format!(
            "invalid vnet name {:?}: use 1-15 characters of A-Z a-z 0-9 - _ . (not starting with '.')",
            spec.name
        )));
    }
    // These names are taken by the run directory's own layout.
    if ["control.sock", "dev"].contains(&spec.name.as_str()) || spec.name.ends_with(".sock") {
        return Err(ControlError::Invalid(format!(
            "vnet name {:?} is reserved by the runtime directory layout: choose another",
            spec.name
        )));
    }
    if !(68..=65521).contains(&spec.mtu) {
        return Err(ControlError::Invalid(format!(
            "mtu {} is out of range: use 68-65521",
            spec.mtu
        )));
    }
    validate_addressing(spec)?;
    if let Some(uplink) = &spec.uplink {
        uplink.check().map_err(ControlError::Invalid)?;
        if !crate::sys::tap::valid_ifname(&uplink.interface) {
            return Err(ControlError::Invalid(format!(
                "uplink interface {:?} is not a valid interface name",
                uplink.interface
            )));
        }
    }
    if spec.mac_aging_secs == 0 || spec.max_macs == 0 || spec.max_macs_per_port == 0 {
        return Err(ControlError::Invalid(
            "mac_aging_secs, max_macs and max_macs_per_port must be at least 1".to_string(),
        ));
    }
    Ok(())
}

/// Checks that the host adapter and DHCP fit the subnet.
fn validate_addressing(spec: &NetworkSpec) -> Result<(), ControlError> {
    let invalid = |m: String| Err(ControlError::Invalid(m));
    let needs_subnet = spec.host_adapter.is_some() || spec.dhcp.is_some() || spec.nat.is_some();
    let Some(subnet) = spec.subnet else {
        return if needs_subnet {
            invalid(
                "a host adapter, DHCP or NAT needs a subnet, e.g. \"subnet\": \"192.168.101.0/24\""
                    .into(),
            )
        } else {
            Ok(())
        };
    };
    if subnet.prefix_len() > 30 {
        return invalid(format!(
            "subnet {subnet} is too small: use a prefix of /30 or shorter"
        ));
    }
    let usable = |ip: std::net::Ipv4Addr| {
        subnet.contains(&ip) && ip != subnet.network() && ip != subnet.broadcast()
    };
    if let Some((ifname, address)) = spec.host_adapter_resolved() {
        if !crate::sys::tap::valid_ifname(&ifname) {
            return invalid(format!(
                "host adapter name {ifname:?} is not a valid interface name (1-15 characters)"
            ));
        }
        if !usable(address) {
            return invalid(format!(
                "host adapter address {address} is not a host address of {subnet}"
            ));
        }
    }
    if let Some(d) = spec.dhcp_resolved() {
        let [first, last] = d.range.expect("resolved");
        let server = d.server.expect("resolved");
        if !usable(first) || !usable(last) || first > last {
            return invalid(format!(
                "DHCP range {first}-{last} must be host addresses of {subnet}, first <= last"
            ));
        }
        if !usable(server) || (first..=last).contains(&server) {
            return invalid(format!(
                "DHCP server address {server} must be a host address of {subnet} outside the range"
            ));
        }
        if let Some(ha) = spec.host_adapter_resolved().map(|(_, a)| a) {
            if ha == server || (first..=last).contains(&ha) {
                return invalid(format!(
                    "the host adapter address {ha} collides with the DHCP server or range"
                ));
            }
        }
        for r in &d.reservations {
            if !usable(r.ip) || r.ip == server {
                return invalid(format!(
                    "reservation {} -> {} is not a free host address of {subnet}",
                    r.mac, r.ip
                ));
            }
        }
        if d.lease_secs < 60 {
            return invalid(format!(
                "DHCP lease time {}s is too short: use at least 60",
                d.lease_secs
            ));
        }
    }
    validate_nat(spec, subnet)
}

/// Checks that the NAT device's address is free in the subnet.
fn validate_nat(spec: &NetworkSpec, subnet: vnet_model::Ipv4Net) -> Result<(), ControlError> {
    let (Some(nat), Some(gateway)) = (&spec.nat, spec.nat_gateway()) else {
        return Ok(());
    };
    let invalid = |m: String| Err(ControlError::Invalid(m));
    if !subnet.contains(&gateway) || gateway == subnet.network() || gateway == subnet.broadcast() {
        return invalid(format!(
            "NAT gateway {gateway} is not a host address of {subnet}"
        ));
    }
    if spec
        .host_adapter_resolved()
        .is_some_and(|(_, a)| a == gateway)
    {
        return invalid(format!(
            "the NAT gateway {gateway} collides with the host adapter's address"
        ));
    }
    if let Some(d) = spec.dhcp_resolved() {
        let [first, last] = d.range.expect("resolved");
        if d.server == Some(gateway) || (first..=last).contains(&gateway) {
            return invalid(format!(
                "the NAT gateway {gateway} collides with the DHCP server or range {first}-{last}"
            ));
        }
    }
    if nat.udp_timeout_secs == 0 {
        return invalid("NAT udp_timeout_secs must be at least 1".into());
    }
    let mut hosts = std::collections::HashSet::new();
    for f in &nat.forward {
        let ip = *f.guest.ip();
        if !subnet.contains(&ip)
            || ip == subnet.network()
            || ip == subnet.broadcast()
            || ip == gateway
        {
            return invalid(format!(
                "forward {} -> {}: the guest address must be a host address of {subnet} other than the gateway",
                f.host, f.guest
            ));
        }
        if !hosts.insert((f.proto, f.host)) {
            return invalid(format!(
                "forward: {} {} is listed twice",
                f.proto.as_str(),
                f.host
            ));
        }
    }
    Ok(())
}
