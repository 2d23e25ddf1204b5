//! The NAT device of one vnet: `vnet_nat::NatDevice` plus the host sockets it asks for.
//!
//! Every flow's socket (a DNS query's too) is registered with a private `mio::Poll`
//! whose epoll fd the data plane watches ([`HostSockets::watch_fd`]); when it fires the
//! port is drained like any other, and [`HostSockets::readable`] reads the sockets in
//! bounded batches. Writes happen inside [`Service::receive`] and [`Service::poll`], as
//! the device's actions ask. Nothing here blocks.
//!
//! ICMP echo leaves through an unprivileged ping socket (`SOCK_DGRAM`/`IPPROTO_ICMP`,
//! allowed when `net.ipv4.ping_group_range` covers the daemon's gid), else through a
//! raw socket when the daemon may open one (root), else guests are told "unreachable".
//! ICMPv6 echo the same way, with `IPPROTO_ICMPV6` sockets (the same sysctl governs
//! them). The start-up log says which.
//!
//! Flows of both families are the same here: the device names the destination
//! (`SocketAddr`) and each socket is opened in its family.
//!
//! TCP flows are non-blocking `connect()`s; their data stays in the socket until the
//! guest ACKs it (peeked with `MSG_PEEK` from `SO_PEEK_OFF` straight into the frames
//! the device completes, discarded with `MSG_TRUNC` on ACK), as `vnet_nat`'s `tcp`
//! module explains. The port takes and makes offload frames: a guest's TSO super-frame
//! is one write to the socket, and socket data leaves as super-frames of up to 64 KiB
//! that the guest's TAP (or the switch, for ports without offloads) cuts into segments.
//!
//! The device's secrets (TCP ISN and DNS ID keys) come from the OS CSPRNG
//! (`getrandom`) at start. Each DNS query attempt is a UDP flow of its own to the
//! upstream (the device says `Open` + `Send`, answers come back through `socket_data`):
//! bound to port 0, so the kernel gives it a random ephemeral port, and connected, so
//! only that upstream can answer on it. A socket per attempt fits the poll as every
//! other flow does (one token, closed with the attempt), at most
//! `vnet_nat::dns::MAX_PENDING` at once; a shared pool of sockets would have to be
//! rotated and would leave several queries on one port.
//!
//! Port forwards are registered under tokens from `LISTENERS`: a TCP forward is a
//! listener whose accepted connections become TCP flows with their own sockets; a UDP
//! forward is one bound socket whose peers become UDP flows without a socket of their
//! own (`FlowSocket::Forwarded`), answered with `send_to` from the forward's socket.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::io::{self, ErrorKind, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream,
    UdpSocket,
};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::socket::{
    connect, recv, socket, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType,
    SockaddrStorage,
};
use tracing::{debug, info, warn};
use vnet_core::wire::offload::{Segmenter, VirtioNetHdr};
use vnet_core::wire::{icmpv4, icmpv6, ipv4, MacAddr};
use vnet_model::{ForwardProto, ForwardSpec, NetworkSpec};
use vnet_nat::frames;
use vnet_nat::{FlowId, NatConfig, NatDevice, NatSecrets, Output, Proto, SocketError, TCP_WINDOW};

use crate::backend::service::{HostSockets, Outgoing, Service};
use crate::frame::FrameBuf;
use crate::sys::privilege::{self, Capability};
use crate::sys::sockopt::set_peek_offset;

// Flows (and DNS queries) use their id (from 1) as their token.
/// Datagrams read per `readable` call, so one busy socket cannot hold the data plane.
const BATCH: usize = 64;
/// Port forwards' listeners use tokens from here (flow ids stay far below).
const LISTENERS: usize = usize::MAX / 2;

/// How echo requests leave the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpMode {
    PingSocket,
    Raw,
    Unavailable,
}

impl IcmpMode {
    fn describe(self) -> &'static str {
        match self {
            IcmpMode::PingSocket => "ping sockets",
            IcmpMode::Raw => "raw sockets",
            IcmpMode::Unavailable => "unavailable",
        }
    }
}

/// A port forward: its rule and the socket bound to its host address.
struct Forward {
    socket: ForwardSocket,
    spec: ForwardSpec,
}

/// What a port forward takes traffic from the host on.
enum ForwardSocket {
    /// Each accepted connection becomes a TCP flow with that connection as its socket.
    Tcp(TcpListener),
    /// Each peer sending to it becomes a UDP flow, and the guest's replies leave from it
    /// (so peers see them come from the address they sent to).
    Udp(UdpSocket),
}

impl ForwardSocket {
    /// Binding below 1024 takes `CAP_NET_BIND_SERVICE`, raised for the call
    /// ([`privilege`]).
    fn bind(spec: &ForwardSpec) -> io::Result<Self> {
        let _bind = if spec.host.port() < 1024 {
            Some(privilege::raise(Capability::CAP_NET_BIND_SERVICE)?)
        } else {
            None
        };
        let s = match spec.proto {
            ForwardProto::Tcp => ForwardSocket::Tcp(TcpListener::bind(spec.host)?),
            ForwardProto::Udp => ForwardSocket::Udp(UdpSocket::bind(spec.host)?),
        };
        match &s {
            ForwardSocket::Tcp(l) => l.set_nonblocking(true)?,
            ForwardSocket::Udp(u) => u.set_nonblocking(true)?,
        }
        Ok(s)
    }

    fn fd(&self) -> RawFd {
        match self {
            ForwardSocket::Tcp(l) => l.as_raw_fd(),
            ForwardSocket::Udp(u) => u.as_raw_fd(),
        }
    }
}

/// A flow's host socket.
enum FlowSocket {
    /// UDP, or ICMP echo (ping and raw sockets are datagram sockets too).
    Dgram(UdpSocket),
    /// TCP.
    Stream(TcpSock),
    /// A UDP flow a port forward opened for a host peer: the socket is the forward's
    /// (listener `forward`), shared by all its peers, so the flow owns none; replies go
    /// out with `send_to(peer)`.
    Forwarded { forward: usize, peer: SocketAddr },
}

/// The guest data all TCP flows of one NAT hold for their sockets, bounded by
/// `[limits] nat_buffer_bytes`. At the bound, data a socket does not take at once is
/// not taken (nor ACKed: the guest sends it again, as after a loss), so flows whose
/// peers read go on while those whose peers do not cannot hold more.
#[derive(Debug)]
struct BufferBudget {
    max: usize,
    held: Cell<usize>,
    /// Times the total reached `max` (each counted as a refusal by that limit).
    filled: Cell<u64>,
}

impl BufferBudget {
    fn left(&self) -> usize {
        self.max.saturating_sub(self.held.get())
    }

    fn add(&self, n: usize) {
        let before = self.held.get();
        self.held.set(before + n);
        if n > 0 && before < self.max && before + n >= self.max {
            self.filled.set(self.filled.get() + 1);
        }
    }

    fn remove(&self, n: usize) {
        self.held.set(self.held.get().saturating_sub(n));
    }
}

/// A TCP flow's socket and the guest data it did not take yet.
struct TcpSock {
    stream: TcpStream,
    /// The non-blocking connect finished.
    connected: bool,
    /// Guest data the device ACKed that the socket has not taken (at most
    /// [`TCP_WINDOW`] bytes: the device advertises the room left; and no more than
    /// `budget` has left).
    pending: VecDeque<u8>,
    /// The guest's FIN arrived: shut the write side once `pending` is written.
    shutdown_pending: bool,
    /// What `pending` counts against; given back as it drains, and on drop.
    budget: Rc<BufferBudget>,
}

impl Drop for TcpSock {
    fn drop(&mut self) {
        self.budget.remove(self.pending.len());
    }
}

impl TcpSock {
    /// Takes over a flow's stream. Nagle is off: the guest's own TCP already chose when
    /// to send, and a second delay here would stall small writes behind the peer's
    /// delayed ACKs.
    fn new(stream: TcpStream, connected: bool, budget: &Rc<BufferBudget>) -> Self {
        let _ = stream.set_nodelay(true);
        TcpSock {
            stream,
            connected,
            pending: VecDeque::new(),
            shutdown_pending: false,
            budget: Rc::clone(budget),
        }
    }

    /// The room left under the flow's own [`TCP_WINDOW`] (the budget shared with the
    /// other flows may have less: see [`TcpSock::take`]).
    fn room(&self) -> u32 {
        TCP_WINDOW.saturating_sub(u32::try_from(self.pending.len()).unwrap_or(u32::MAX))
    }

    /// Writes `data` (the socket first, `pending` for what it does not take now, as far
    /// as the budget has room): how much of it was taken. The rest the guest sends
    /// again, as after a loss.
    fn take(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut rest = data;
        while self.pending.is_empty() && !rest.is_empty() {
            match self.stream.write(rest) {
                Ok(0) => break,
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let kept = rest.len().min(self.budget.left());
        self.pending.extend(&rest[..kept]);
        self.budget.add(kept);
        self.flush()?;
        Ok(data.len() - rest.len() + kept)
    }

    /// Writes as much of `pending` as the socket takes; `Err` on a broken socket.
    fn flush(&mut self) -> io::Result<()> {
        while !self.pending.is_empty() {
            match self.stream.write(self.pending.as_slices().0) {
                Ok(0) => break,
                Ok(n) => {
                    self.pending.drain(..n);
                    self.budget.remove(n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.pending.is_empty() && self.shutdown_pending {
            self.shutdown_pending = false;
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        Ok(())
    }
}

impl FlowSocket {
    /// The socket the flow owns (and registered under its token), if any.
    fn own_fd(&self) -> Option<RawFd> {
        match self {
            FlowSocket::Dgram(s) => Some(s.as_raw_fd()),
            FlowSocket::Stream(s) => Some(s.stream.as_raw_fd()),
            FlowSocket::Forwarded { .. } => None,
        }
    }
}

pub struct NatService {
    net: String,
    device: NatDevice,
    icmp: IcmpMode,
    /// How ICMPv6 echo requests leave.
    icmp6: IcmpMode,
    poll: Poll,
    events: Events,
    flows: HashMap<FlowId, FlowSocket>,
    /// Sockets that reported readiness and were not read to `WouldBlock` yet.
    ready: Vec<Token>,
    /// Port forwards by token (`LISTENERS + i`; a removed one leaves `None`, so an
    /// index names one forward for good).
    listeners: Vec<Option<Forward>>,
    actions: Vec<Output>,
    buf: Vec<u8>,
    /// The kernel takes `SO_PEEK_OFF` on TCP sockets (Linux 6.9); without it, peeks
    /// start at the queue's head and the bytes in flight are skipped in `buf`.
    peek_offset: bool,
    /// Frames of socket data built in place, in order, until `execute` hands them over.
    frames: Vec<Outgoing>,
    /// Empty large buffers the port gave back for them.
    spare: Vec<FrameBuf>,
    /// When the host's addresses were last given to the device.
    host_addresses_at: Instant,
    /// The guest data TCP flows hold, against `[limits] nat_buffer_bytes`.
    budget: Rc<BufferBudget>,
    /// See [`NatLimits::fd_ceiling`].
    fd_ceiling: usize,
    /// Sockets closed for being numbered at or above `fd_ceiling`.
    fd_refused: u64,
    /// The vnet's IPv6 router, which shares the device's port (see `super::ra`).
    router: Option<Rc<RefCell<vnet_ra::Router>>>,
}

/// How often (at most, on guests' frames) the host's addresses are read again.
const HOST_ADDRESSES_EVERY: Duration = Duration::from_secs(5);

/// The host's own interface addresses (both families), which guests' flows must not
/// reach unless `host_loopback` (the device refuses them); `None` if they cannot be
/// read.
fn host_addresses() -> Option<Vec<IpAddr>> {
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    let mut ips: Vec<IpAddr> = addrs
        .filter_map(|a| {
            let a = a.address?;
            match (a.as_sockaddr_in(), a.as_sockaddr_in6()) {
                (Some(v4), _) => Some(IpAddr::V4(v4.ip())),
                (_, Some(v6)) => Some(IpAddr::V6(v6.ip())),
                _ => None,
            }
        })
        .collect();
    ips.sort_unstable();
    ips.dedup();
    Some(ips)
}

/// Empty buffers kept for socket data (a burst's worth; the switch has the rest).
const SPARE_BUFFERS: usize = 64;

/// The NAT device's MAC: locally administered, stable per vnet name, distinct from the
/// DHCP server's.
pub fn device_mac(net: &str) -> MacAddr {
    let mut mac = super::dhcp::server_mac(net);
    mac.0[2] = 0x6e;
    mac
}

/// The device configuration a vnet spec asks for, `None` if it has no NAT. Upstream
/// resolvers default to the host's `/etc/resolv.conf`.
pub fn config_for(spec: &NetworkSpec) -> Option<NatConfig> {
    let (Some(nat), Some(gateway), Some(subnet)) = (&spec.nat, spec.nat_gateway(), spec.subnet)
    else {
        return None;
    };
    let mut c = NatConfig::new(
        device_mac(&spec.name),
        gateway,
        subnet.network(),
        subnet.prefix_len(),
    );
    c.gateway6 = spec.nat_gateway6();
    c.mtu = spec.mtu as usize;
    c.udp_timeout = Duration::from_secs(nat.udp_timeout_secs.max(1));
    c.host_loopback = nat.host_loopback;
    if nat.dns {
        c.dns_upstreams = if nat.dns_upstreams.is_empty() {
            host_resolvers()
        } else {
            nat.dns_upstreams.clone()
        };
    }
    Some(c)
}

/// The IPv4 `nameserver`s of `/etc/resolv.conf`, on port 53.
fn host_resolvers() -> Vec<SocketAddrV4> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<Ipv4Addr>().ok())
        .map(|ip| SocketAddrV4::new(ip, 53))
        .collect()
}

/// A datagram socket for echo requests of `mode` (ICMPv6 ones if `v6`), non-blocking.
/// A raw one takes `CAP_NET_RAW`, raised for the call ([`privilege`]).
fn icmp_socket(mode: IcmpMode, v6: bool) -> io::Result<UdpSocket> {
    let (ty, _raw) = match mode {
        IcmpMode::PingSocket => (SockType::Datagram, None),
        IcmpMode::Raw => (
            SockType::Raw,
            Some(privilege::raise(Capability::CAP_NET_RAW)?),
        ),
        IcmpMode::Unavailable => return Err(ErrorKind::Unsupported.into()),
    };
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let fd: OwnedFd = if v6 {
        socket(AddressFamily::Inet6, ty, flags, SockProtocol::IcmpV6)?
    } else {
        socket(AddressFamily::Inet, ty, flags, SockProtocol::Icmp)?
    };
    // Both kinds are datagram sockets as far as connect/send/recv go.
    Ok(UdpSocket::from(fd))
}

/// Finds how echo requests (ICMPv6 ones if `v6`) can leave: ping sockets first, then
/// raw ones.
fn probe_icmp(v6: bool) -> (IcmpMode, String) {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range")
        .map(|r| r.split_whitespace().collect::<Vec<_>>().join("-"))
        .unwrap_or_else(|_| "?".into());
    let ping = match icmp_socket(IcmpMode::PingSocket, v6) {
        Ok(_) => return (IcmpMode::PingSocket, format!("ping_group_range {range}")),
        Err(e) => e,
    };
    match icmp_socket(IcmpMode::Raw, v6) {
        Ok(_) => (
            IcmpMode::Raw,
            format!("no ping sockets (ping_group_range {range}: {ping}), with CAP_NET_RAW"),
        ),
        Err(raw) => (
            IcmpMode::Unavailable,
            format!(
                "no ping sockets (net.ipv4.ping_group_range {range} excludes gid {}: {ping}) \
                 and no raw sockets ({raw}); guests' pings to the outside get \"unreachable\"",
                nix::unistd::getgid()
            ),
        ),
    }
}

/// The identifier a raw-socket flow puts in its echo requests.
fn raw_ident(flow: FlowId) -> u16 {
    (flow.0 % 0xffff) as u16 + 1
}

/// What `[limits]` asks of a NAT's shell (the device's own bound, on flows, is in its
/// [`NatConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatLimits {
    /// Guest data its TCP flows may hold together (`nat_buffer_bytes`).
    pub buffer_bytes: usize,
    /// Its sockets must be numbered below this (`RLIMIT_NOFILE - fd_reserve_control`):
    /// the kernel gives out the lowest free number, so a socket numbered higher means
    /// only the control API's reserve was left, and it is closed at once.
    pub fd_ceiling: usize,
}

impl NatService {
    /// A NAT device for `spec` with `config`, within `limits`.
    pub fn start(
        spec: &NetworkSpec,
        mut config: NatConfig,
        limits: NatLimits,
    ) -> Result<Self, NatError> {
        let (icmp, why) = probe_icmp(false);
        config.icmp = icmp != IcmpMode::Unavailable;
        let (icmp6, why6) = probe_icmp(true);
        config.icmp6 = icmp6 != IcmpMode::Unavailable;
        let mut secret = [0; 32];
        getrandom::fill(&mut secret).map_err(NatError::DrawSecrets)?;
        let secrets = NatSecrets::from_bytes(secret);
        let poll = Poll::new().map_err(NatError::CreatePoll)?;
        let c = &config;
        info!(
            net = spec.name,
            "NAT device {}{} ({}): ICMP echo {}; ICMPv6 echo {}; DNS {}; UDP flows idle out after {}s; host loopback {}",
            c.gateway,
            c.gateway6.map(|g| format!(" and {g}")).unwrap_or_default(),
            c.mac,
            match icmp {
                IcmpMode::Unavailable => "answered \"unreachable\" (see below)".to_string(),
                _ => format!("through {} ({why})", icmp.describe()),
            },
            match icmp6 {
                IcmpMode::Unavailable => "answered \"unreachable\"".to_string(),
                _ => format!("through {}", icmp6.describe()),
            },
            if c.dns_upstreams.is_empty() {
                "off".to_string()
            } else {
                format!("forwarded to {:?}", c.dns_upstreams)
            },
            c.udp_timeout.as_secs(),
            if c.host_loopback { "reachable" } else { "unreachable" },
        );
        if icmp == IcmpMode::Unavailable {
            warn!(net = spec.name, "NAT device: {why}");
        }
        if icmp6 == IcmpMode::Unavailable && c.gateway6.is_some() {
            warn!(net = spec.name, "NAT device, ICMPv6: {why6}");
        }
        let mut service = NatService {
            net: spec.name.clone(),
            device: NatDevice::new(config, secrets),
            icmp,
            icmp6,
            poll,
            events: Events::with_capacity(256),
            flows: HashMap::new(),
            ready: Vec::new(),
            listeners: Vec::new(),
            actions: Vec::new(),
            buf: vec![0; 2 * 65536 + 1],
            peek_offset: true,
            frames: Vec::new(),
            spare: Vec::new(),
            host_addresses_at: Instant::now(),
            fd_ceiling: limits.fd_ceiling,
            fd_refused: 0,
            router: None,
            budget: Rc::new(BufferBudget {
                max: limits.buffer_bytes,
                held: Cell::new(0),
                filled: Cell::new(0),
            }),
        };
        service.refresh_host_addresses(Instant::now());
        for f in spec.nat.iter().flat_map(|n| &n.forward) {
            service.add_forward(f)?;
        }
        Ok(service)
    }

    /// Gives the device the host's addresses again (kept as they were if unreadable).
    fn refresh_host_addresses(&mut self, now: Instant) {
        self.host_addresses_at = now;
        match host_addresses() {
            Some(ips) => self.device.set_host_addresses(&ips),
            None => debug!(
                net = self.net,
                "NAT: cannot read the host's addresses; keeping the last ones"
            ),
        }
    }

    /// The port forwards in effect.
    pub fn forwards(&self) -> Vec<ForwardSpec> {
        self.listeners
            .iter()
            .flatten()
            .map(|f| f.spec.clone())
            .collect()
    }

    /// Starts listening (TCP) or receiving (UDP) for a port forward (validated by the
    /// caller).
    pub fn add_forward(&mut self, f: &ForwardSpec) -> Result<(), ForwardError> {
        if self
            .forwards()
            .iter()
            .any(|g| (g.proto, g.host) == (f.proto, f.host))
        {
            return Err(ForwardError::Exists(f.proto, f.host));
        }
        let token = Token(LISTENERS + self.listeners.len());
        let socket = ForwardSocket::bind(f)
            .and_then(|s| {
                self.poll
                    .registry()
                    .register(&mut SourceFd(&s.fd()), token, Interest::READABLE)
                    .map(|()| s)
            })
            .map_err(|e| ForwardError::Listen(f.clone(), e))?;
        info!(
            net = self.net,
            "NAT forwards {} {} to {}",
            f.proto.as_str(),
            f.host,
            f.guest
        );
        self.listeners.push(Some(Forward {
            socket,
            spec: f.clone(),
        }));
        Ok(())
    }

    /// Stops forwarding `proto` on `host`. TCP connections already carried go on; a
    /// UDP forward's flows lose their socket, so the guest's replies on them are
    /// dropped until they idle out. `false`: no such forward.
    pub fn remove_forward(&mut self, proto: ForwardProto, host: SocketAddr) -> bool {
        let Some(index) = self.listeners.iter().position(|f| {
            f.as_ref()
                .is_some_and(|f| (f.spec.proto, f.spec.host) == (proto, host))
        }) else {
            return false;
        };
        let Some(f) = self.listeners[index].take() else {
            return false;
        };
        let _ = self
            .poll
            .registry()
            .deregister(&mut SourceFd(&f.socket.fd()));
        // A UDP forward's peers are flows on its socket: they go with it.
        let orphans: Vec<FlowId> = self
            .flows
            .iter()
            .filter(
                |(_, s)| matches!(s, FlowSocket::Forwarded { forward, .. } if *forward == index),
            )
            .map(|(&id, _)| id)
            .collect();
        for flow in orphans {
            self.flows.remove(&flow);
            self.device.forget(flow);
        }
        info!(
            net = self.net,
            "NAT no longer forwards {} {}",
            proto.as_str(),
            f.spec.host
        );
        true
    }

    pub fn device(&self) -> &NatDevice {
        &self.device
    }

    /// Sockets refused because only the control API's descriptors were left
    /// (`[limits] fd_reserve_control`).
    pub fn fd_refused(&self) -> u64 {
        self.fd_refused
    }

    /// `Err` (counted) if socket `fd` took one of the descriptors kept for the control
    /// API; its owner then drops it.
    fn below_ceiling(&mut self, fd: RawFd) -> io::Result<()> {
        if usize::try_from(fd).is_ok_and(|fd| fd < self.fd_ceiling) {
            return Ok(());
        }
        self.fd_refused += 1;
        Err(io::Error::other(format!(
            "descriptor {fd} is kept for the control API ([limits] fd_reserve_control)"
        )))
    }

    /// Times the guest data held for TCP sockets reached `[limits] nat_buffer_bytes`.
    pub fn buffer_filled(&self) -> u64 {
        self.budget.filled.get()
    }

    pub fn device_mut(&mut self) -> &mut NatDevice {
        &mut self.device
    }

    /// Makes the device the vnet's IPv6 router too: `router` sees each frame first.
    pub fn set_router(&mut self, router: Rc<RefCell<vnet_ra::Router>>) {
        self.router = Some(router);
    }

    /// Cuts a super-frame the device cannot take whole into checksummed segments and
    /// hands over each. `false`: the frame's offload metadata does not fit it.
    fn receive_segments(
        &mut self,
        now: Instant,
        frame: &[u8],
        offload: &VirtioNetHdr,
        out: &mut Vec<Outgoing>,
    ) -> bool {
        let Ok(seg) = Segmenter::new(frame, offload) else {
            return false;
        };
        let mut one = vec![0; seg.max_segment_len()];
        (0..seg.count()).all(|i| match seg.write(i, &mut one) {
            Ok(n) => {
                let ok = self.device.receive(now, &one[..n], &mut self.actions);
                self.execute(out, &one[..n]);
                ok
            }
            Err(_) => false,
        })
    }

    /// Carries out the device's outputs; frames go to `out`. `frame` is the frame the
    /// outputs came from, if they came from one (`TcpWrite` points into it).
    fn execute(&mut self, out: &mut Vec<Outgoing>, frame: &[u8]) {
        let mut i = 0;
        while i < self.actions.len() {
            let action = std::mem::replace(&mut self.actions[i], Output::Close { flow: FlowId(0) });
            i += 1;
            let mut more = Vec::new();
            match action {
                Output::Frame(f) => out.push(f.into()),
                Output::Open { flow, proto, to } => {
                    if let Err(e) = self.open(flow, proto, to) {
                        debug!(
                            net = self.net,
                            "NAT: cannot open a {proto:?} socket to {to}: {e}"
                        );
                        self.device.open_failed(flow, &mut more);
                    }
                }
                Output::Send { flow, data } => self.send(flow, data, &mut more),
                Output::Close { flow } => {
                    if let Some(fd) = self.flows.remove(&flow).and_then(|s| s.own_fd()) {
                        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
                    }
                }
                Output::TcpWrite { flow, data, fin } => match frame.get(data) {
                    Some(data) => self.tcp_write(flow, data, fin, &mut more),
                    None => warn!(net = self.net, "NAT: a TCP write outside its frame"),
                },
                Output::TcpRead { flow } => self.tcp_pump(Instant::now(), flow, &mut more),
                Output::TcpConsume { flow, bytes } => self.tcp_consume(flow, bytes, &mut more),
            }
            self.actions.extend(more);
            out.append(&mut self.frames);
        }
        self.actions.clear();
        // Socket data peeked on readiness alone, with no device output to carry out.
        out.append(&mut self.frames);
    }

    fn open(&mut self, flow: FlowId, proto: Proto, to: SocketAddr) -> io::Result<()> {
        let s = match proto {
            Proto::Udp => {
                let any: IpAddr = match to {
                    SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
                    SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
                };
                let s = UdpSocket::bind((any, 0))?;
                self.below_ceiling(s.as_raw_fd())?;
                s.set_nonblocking(true)?;
                s.connect(to)?;
                FlowSocket::Dgram(s)
            }
            Proto::Icmp => {
                let s = icmp_socket(self.icmp_mode(to.is_ipv6()), to.is_ipv6())?;
                self.below_ceiling(s.as_raw_fd())?;
                s.connect(to)?;
                FlowSocket::Dgram(s)
            }
            Proto::Tcp => {
                let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
                let family = match to {
                    SocketAddr::V4(_) => AddressFamily::Inet,
                    SocketAddr::V6(_) => AddressFamily::Inet6,
                };
                let fd = socket(family, SockType::Stream, flags, None)?;
                self.below_ceiling(fd.as_raw_fd())?;
                match connect(fd.as_raw_fd(), &SockaddrStorage::from(to)) {
                    Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => {}
                    Err(e) => return Err(e.into()),
                }
                FlowSocket::Stream(TcpSock::new(TcpStream::from(fd), false, &self.budget))
            }
        };
        let interest = match s {
            FlowSocket::Stream(..) => Interest::READABLE | Interest::WRITABLE,
            _ => Interest::READABLE,
        };
        if let Some(fd) = s.own_fd() {
            self.poll
                .registry()
                .register(&mut SourceFd(&fd), Token(flow.0 as usize), interest)?;
        }
        self.flows.insert(flow, s);
        Ok(())
    }

    /// How echo requests of a family leave.
    fn icmp_mode(&self, v6: bool) -> IcmpMode {
        if v6 {
            self.icmp6
        } else {
            self.icmp
        }
    }

    /// Whether `flow` is an echo flow on a raw socket, and if so whether ICMPv6.
    fn raw_echo(&self, flow: FlowId) -> Option<bool> {
        let v6 = self.device.flow_is_ipv6(flow);
        (self.device.flow_proto(flow) == Some(Proto::Icmp) && self.icmp_mode(v6) == IcmpMode::Raw)
            .then_some(v6)
    }

    /// A TCP flow's socket is ready: finish the connect, write what the guest sent and
    /// the socket did not take yet, peek what the guest may get.
    fn tcp_event(&mut self, now: Instant, flow: FlowId) {
        let Some(FlowSocket::Stream(s)) = self.flows.get_mut(&flow) else {
            return;
        };
        if !s.connected {
            match s.stream.take_error() {
                Ok(Some(e)) | Err(e) => {
                    let err = socket_error(&e).unwrap_or(SocketError::Unreachable);
                    debug!(
                        net = self.net,
                        "NAT: TCP connect of flow {} failed: {e}", flow.0
                    );
                    self.device.socket_error(flow, err, &mut self.actions);
                    return;
                }
                Ok(None) if s.stream.peer_addr().is_ok() => {
                    s.connected = true;
                    self.device.tcp_connected(now, flow, &mut self.actions);
                }
                Ok(None) => return,
            }
        } else if !s.pending.is_empty() {
            match s.flush() {
                Ok(()) => {
                    let room = s.room();
                    self.device.tcp_window(flow, room, &mut self.actions);
                }
                Err(e) => {
                    debug!(net = self.net, "NAT: TCP write on flow {}: {e}", flow.0);
                    self.device
                        .socket_error(flow, SocketError::Refused, &mut self.actions);
                    return;
                }
            }
        }
        let mut more = Vec::new();
        self.tcp_pump(now, flow, &mut more);
        self.actions.extend(more);
    }

    /// Peeks the socket past the bytes in flight, up to the guest's window, straight
    /// into frames of at most one [`vnet_nat::ReadWindow::chunk`].
    fn tcp_pump(&mut self, now: Instant, flow: FlowId, more: &mut Vec<Output>) {
        let Some(FlowSocket::Stream(s)) = self.flows.get(&flow) else {
            return;
        };
        if !s.connected {
            return;
        }
        while let Some(w) = self.device.tcp_read_window(flow) {
            let mut buf = self.spare.pop().unwrap_or_else(FrameBuf::large);
            let space = buf.recv_space();
            // A closed window still peeks a byte: EOF must be seen.
            let at = w.data_offset;
            let want = w.len.min(w.chunk).clamp(1, space.len() - at);
            let data = &mut space[at..at + want];
            let peeked = if self.peek_offset {
                match set_peek_offset(s.stream.as_fd(), w.offset) {
                    Ok(()) => s.stream.peek(data),
                    Err(e) => {
                        info!(
                            net = self.net,
                            "NAT: no SO_PEEK_OFF on TCP sockets ({e}): unacknowledged \
                             data is peeked again, and at most {} bytes are in flight",
                            self.buf.len() / 2
                        );
                        self.peek_offset = false;
                        self.spare.push(buf);
                        continue;
                    }
                }
            } else {
                peek_skipping(&s.stream, w.offset, data, &mut self.buf)
            };
            let n = match peeked {
                Ok(n) => n.min(w.len),
                Err(e) => {
                    self.spare.push(buf);
                    if e.kind() != ErrorKind::WouldBlock {
                        debug!(net = self.net, "NAT: TCP flow {}: {e}", flow.0);
                        self.device.socket_error(flow, SocketError::Refused, more);
                    }
                    return;
                }
            };
            let eof = matches!(peeked, Ok(0));
            let frame = &mut space[..at + n];
            match self.device.tcp_data(now, flow, frame, eof, more) {
                Some(offload) => {
                    buf.set_len(at + n);
                    buf.offload = offload;
                    self.frames.push(Outgoing::Buf(buf));
                }
                None => self.spare.push(buf),
            }
            if n < want {
                return;
            }
        }
    }

    /// Takes guest data: written to the socket, or kept until it drains (within the
    /// window the device advertised); the device ACKs what was taken.
    fn tcp_write(&mut self, flow: FlowId, data: &[u8], fin: bool, more: &mut Vec<Output>) {
        let Some(FlowSocket::Stream(s)) = self.flows.get_mut(&flow) else {
            return;
        };
        if !s.connected {
            return;
        }
        let offered = &data[..data.len().min(s.room() as usize)];
        let taken = s.take(offered).and_then(|taken| {
            if fin && taken == data.len() {
                s.shutdown_pending = true;
                s.flush()?;
            }
            Ok(taken)
        });
        let taken = match taken {
            Ok(taken) => taken,
            Err(e) => {
                debug!(net = self.net, "NAT: TCP write on flow {}: {e}", flow.0);
                self.device.socket_error(flow, SocketError::Refused, more);
                return;
            }
        };
        let fin_done = fin && taken == data.len();
        let room = s.room();
        self.device.tcp_written(flow, taken, fin_done, room, more);
    }

    /// Drops bytes the guest acknowledged from the socket's receive queue (`MSG_TRUNC`:
    /// the kernel discards them without copying).
    fn tcp_consume(&mut self, flow: FlowId, mut bytes: usize, more: &mut Vec<Output>) {
        let Some(FlowSocket::Stream(s)) = self.flows.get_mut(&flow) else {
            return;
        };
        while bytes > 0 {
            let n = bytes.min(self.buf.len());
            match recv(
                s.stream.as_raw_fd(),
                &mut self.buf[..n],
                MsgFlags::MSG_TRUNC,
            ) {
                Ok(0) => break,
                Ok(got) => bytes -= got.min(bytes),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    debug!(net = self.net, "NAT: TCP flow {}: {e}", flow.0);
                    self.device.socket_error(flow, SocketError::Refused, more);
                    return;
                }
            }
        }
    }

    fn send(&mut self, flow: FlowId, mut data: Vec<u8>, more: &mut Vec<Output>) {
        let (s, peer) = match self.flows.get(&flow) {
            Some(FlowSocket::Dgram(s)) => (s, None),
            Some(&FlowSocket::Forwarded { forward, peer }) => match self.listeners.get(forward) {
                Some(Some(Forward {
                    socket: ForwardSocket::Udp(s),
                    ..
                })) => (s, Some(peer)),
                _ => {
                    debug!(
                        net = self.net,
                        "NAT: flow {} lost its UDP forward: reply to {peer} dropped", flow.0
                    );
                    return;
                }
            },
            _ => return,
        };
        if let Some(v6) = self.raw_echo(flow) {
            // We choose the identifier (a ping socket's kernel would): one per flow, so
            // replies can be told apart on the shared wire. (The kernel computes an
            // ICMPv6 checksum itself, RFC 3542 §3.1.)
            if frames::read_echo(&data, v6).is_some() {
                if v6 {
                    icmpv6::Packet::new_unchecked(&mut data[..]).set_echo_ident(raw_ident(flow));
                } else {
                    let mut echo = icmpv4::Packet::new_unchecked(&mut data[..]);
                    echo.set_echo_ident(raw_ident(flow));
                    echo.fill_checksum();
                }
            }
        }
        let sent = match peer {
            Some(peer) => s.send_to(&data, peer),
            None => s.send(&data),
        };
        match sent {
            Ok(_) => {}
            Err(e) => match socket_error(&e) {
                Some(err) => self.device.socket_error(flow, err, more),
                None => debug!(net = self.net, "NAT: send on flow {} failed: {e}", flow.0),
            },
        }
    }

    /// Takes the connections waiting on forward `i`'s listener: each becomes a flow
    /// that the device opens towards the guest.
    fn accept(&mut self, now: Instant, i: usize) {
        loop {
            let Some(Some(Forward {
                socket: ForwardSocket::Tcp(listener),
                spec,
            })) = self.listeners.get(i)
            else {
                return;
            };
            let guest = spec.guest;
            let (stream, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    if e.kind() != ErrorKind::WouldBlock {
                        warn!(net = self.net, "NAT: accept on a port forward failed: {e}");
                    }
                    return;
                }
            };
            if self.below_ceiling(stream.as_raw_fd()).is_err()
                || stream.set_nonblocking(true).is_err()
            {
                continue;
            }
            let Some(flow) = self
                .device
                .tcp_accepted(now, guest, peer, &mut self.actions)
            else {
                debug!(net = self.net, "NAT: forward to {guest}: refused {peer}");
                continue;
            };
            let registered = self.poll.registry().register(
                &mut SourceFd(&stream.as_raw_fd()),
                Token(flow.0 as usize),
                Interest::READABLE | Interest::WRITABLE,
            );
            if registered.is_err() {
                self.device
                    .socket_error(flow, SocketError::Refused, &mut self.actions);
                continue;
            }
            debug!(
                net = self.net,
                "NAT: forward to {guest}: {peer} is flow {}", flow.0
            );
            self.flows.insert(
                flow,
                FlowSocket::Stream(TcpSock::new(stream, true, &self.budget)),
            );
        }
    }

    /// Takes one datagram waiting on UDP forward `i`'s socket to the device, which
    /// makes its sender a flow (new or refreshed) whose replies leave from this socket.
    /// `WouldBlock` when none waits.
    fn forward_datagram(&mut self, now: Instant, i: usize) -> io::Result<()> {
        let Some(Some(Forward {
            socket: ForwardSocket::Udp(socket),
            spec,
        })) = self.listeners.get(i)
        else {
            return Err(ErrorKind::WouldBlock.into());
        };
        let (n, peer) = socket.recv_from(&mut self.buf)?;
        let guest = spec.guest;
        let data = &self.buf[..n];
        match self
            .device
            .udp_forwarded(now, guest, peer, data, &mut self.actions)
        {
            // Replies follow the peer's latest datagram: the forward may differ (two
            // UDP forwards to one guest port) and so may the peer (two loopback
            // addresses with one port are both the gateway to the guest).
            Some(flow) => {
                self.flows
                    .insert(flow, FlowSocket::Forwarded { forward: i, peer });
            }
            None => debug!(
                net = self.net,
                "NAT: UDP forward to {guest}: dropped a datagram from {peer}"
            ),
        }
        Ok(())
    }

    /// Reads up to [`BATCH`] datagrams from ready sockets into the device.
    fn read_sockets(&mut self, now: Instant) {
        let mut budget = BATCH;
        while budget > 0 {
            let Some(&token) = self.ready.last() else {
                return;
            };
            if token.0 >= LISTENERS {
                let i = token.0 - LISTENERS;
                let udp = matches!(
                    self.listeners.get(i),
                    Some(Some(Forward {
                        socket: ForwardSocket::Udp(_),
                        ..
                    }))
                );
                if !udp {
                    self.ready.pop();
                    budget -= 1;
                    self.accept(now, i);
                    continue;
                }
                match self.forward_datagram(now, i) {
                    Ok(()) => budget -= 1,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        self.ready.pop();
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        budget -= 1;
                        debug!(net = self.net, "NAT: UDP forward: {e}");
                    }
                }
                continue;
            }
            let result = match self.flows.get(&FlowId(token.0 as u64)) {
                Some(FlowSocket::Dgram(s)) => s.recv(&mut self.buf),
                Some(FlowSocket::Stream(..)) => {
                    self.ready.pop();
                    budget -= 1;
                    self.tcp_event(now, FlowId(token.0 as u64));
                    continue;
                }
                // Forwarded flows have no socket (and token) of their own.
                Some(FlowSocket::Forwarded { .. }) | None => Err(ErrorKind::WouldBlock.into()),
            };
            let flow = FlowId(token.0 as u64);
            match result {
                Ok(n) => {
                    budget -= 1;
                    let data = &self.buf[..n];
                    if let Some(v6) = self.raw_echo(flow) {
                        // Raw sockets hand over every echo reply from the peer (IPv4:
                        // with the IP header): keep ours.
                        let message = if v6 {
                            data
                        } else {
                            let Ok(ip) = ipv4::Packet::new_checked(data) else {
                                continue;
                            };
                            if ipv4::Repr::parse(&ip).is_err() || ip.is_fragment() {
                                continue;
                            }
                            &data[usize::from(ip.header_len())..usize::from(ip.total_len())]
                        };
                        match frames::read_echo(message, v6) {
                            Some(echo) if echo.ident == raw_ident(flow) => {
                                self.device
                                    .socket_data(now, flow, message, &mut self.actions)
                            }
                            _ => {}
                        }
                    } else {
                        self.device.socket_data(now, flow, data, &mut self.actions)
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.ready.pop();
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    budget -= 1;
                    if let Some(err) = socket_error(&e) {
                        self.device.socket_error(flow, err, &mut self.actions);
                    }
                }
            }
        }
    }
}

/// Why a vnet's NAT device could not start: the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum NatError {
    #[error("NAT device: cannot create its poll")]
    CreatePoll(#[source] io::Error),
    #[error("NAT device: cannot draw its secret keys from the OS")]
    DrawSecrets(#[source] getrandom::Error),
    /// One of the configured port forwards (which names itself).
    #[error(transparent)]
    AddForward(#[from] ForwardError),
}

/// Why a port forward could not be added.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The vnet already forwards this protocol on this host address.
    #[error("{} {} is already forwarded", .0.as_str(), .1)]
    Exists(ForwardProto, SocketAddr),
    /// The host address cannot be listened on or bound (taken, not local, not
    /// permitted).
    #[error(
        "NAT port forward {} {} -> {}: cannot {} {}{}",
        .0.proto.as_str(), .0.host, .0.guest, listen_verb(.0.proto), .0.host, listen_hint(.1)
    )]
    Listen(ForwardSpec, #[source] io::Error),
}

fn listen_verb(proto: ForwardProto) -> &'static str {
    match proto {
        ForwardProto::Tcp => "listen on",
        ForwardProto::Udp => "bind",
    }
}

fn listen_hint(e: &io::Error) -> &'static str {
    if e.kind() == ErrorKind::AddrInUse {
        " (the port is taken: choose another host port)"
    } else {
        ""
    }
}

/// Peeks from the head of the queue into `scratch` and copies what lies beyond the
/// first `offset` bytes into `dst` (for kernels without `SO_PEEK_OFF`): the bytes in
/// flight are bounded by `scratch`. `Ok(0)` only at EOF; `WouldBlock` when nothing new.
fn peek_skipping(
    stream: &TcpStream,
    offset: usize,
    dst: &mut [u8],
    scratch: &mut [u8],
) -> io::Result<usize> {
    let end = (offset + dst.len()).min(scratch.len());
    if end <= offset {
        return Err(ErrorKind::WouldBlock.into());
    }
    match stream.peek(&mut scratch[..end])? {
        0 => Ok(0),
        n if n <= offset => Err(ErrorKind::WouldBlock.into()),
        n => {
            dst[..n - offset].copy_from_slice(&scratch[offset..n]);
            Ok(n - offset)
        }
    }
}

/// Maps a socket error to what the guest should hear, if anything.
fn socket_error(e: &io::Error) -> Option<SocketError> {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => Some(SocketError::Refused),
        Some(libc::EHOSTUNREACH | libc::ENETUNREACH) => Some(SocketError::Unreachable),
        _ => None,
    }
}

impl Service for NatService {
    fn description(&self) -> String {
        let c = self.device.config();
        format!(
            "nat {} (icmp: {}, dns: {}, {} flows)",
            c.gateway,
            self.icmp.describe(),
            if c.dns_upstreams.is_empty() {
                "off"
            } else {
                "on"
            },
            self.device.flow_count()
        )
    }

    fn offloads(&self) -> bool {
        true
    }

    fn receive(&mut self, frame: &[u8], offload: &VirtioNetHdr, out: &mut Vec<Outgoing>) -> bool {
        let now = Instant::now();
        if let Some(ok) = (self.router.as_ref()).and_then(|r| super::ra::offer(r, now, frame, out))
        {
            return ok;
        }
        if now.duration_since(self.host_addresses_at) >= HOST_ADDRESSES_EVERY {
            self.refresh_host_addresses(now);
        }
        let tcp_gso = [VirtioNetHdr::GSO_TCPV4, VirtioNetHdr::GSO_TCPV6];
        let ok = if offload.is_gso() && !tcp_gso.contains(&offload.gso_kind()) {
            // Only a TCP super-frame is one socket write; others (UDP GSO) are cut here.
            self.receive_segments(now, frame, offload, out)
        } else if *offload == VirtioNetHdr::default() {
            self.device.receive(now, frame, &mut self.actions)
        } else {
            // A partial or already verified checksum: the kernel's own promise.
            self.device.receive_offloaded(now, frame, &mut self.actions)
        };
        self.execute(out, frame);
        ok
    }

    fn recycle(&mut self, buf: FrameBuf) {
        if self.spare.len() < SPARE_BUFFERS {
            self.spare.push(buf);
        }
    }

    fn poll(&mut self, now: Instant, out: &mut Vec<Outgoing>) {
        if let Some(router) = &self.router {
            super::ra::poll(router, now, out);
        }
        self.device.poll(now, &mut self.actions);
        self.execute(out, &[]);
    }

    fn deadline(&self) -> Option<Instant> {
        let router = self.router.as_ref().and_then(|r| r.borrow().poll_at());
        match (self.device.poll_at(), router) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn host_sockets(&mut self) -> Option<&mut dyn HostSockets> {
        Some(self)
    }
}

impl HostSockets for NatService {
    fn watch_fd(&self) -> RawFd {
        self.poll.as_raw_fd()
    }

    fn readable(&mut self, now: Instant, out: &mut Vec<Outgoing>) {
        loop {
            if self.ready.is_empty() {
                if let Err(e) = self.poll.poll(&mut self.events, Some(Duration::ZERO)) {
                    if e.kind() != ErrorKind::Interrupted {
                        warn!(net = self.net, "NAT: poll failed: {e}");
                    }
                    return;
                }
                self.ready.extend(self.events.iter().map(|e| e.token()));
                if self.ready.is_empty() {
                    return;
                }
            }
            self.read_sockets(now);
            self.execute(out, &[]);
            if !out.is_empty() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use vnet_core::wire::{ethernet, udp, IpProtocol};
    use vnet_nat::frames::Route;

    use super::*;

    const GUEST_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
    const GUEST: Ipv4Addr = Ipv4Addr::new(192, 168, 8, 100);

    #[test]
    fn tcp_flows_share_the_buffer_budget_and_together_hold_no_more() {
        const MAX: usize = 100_000;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let budget = Rc::new(BufferBudget {
            max: MAX,
            held: Cell::new(0),
            filled: Cell::new(0),
        });
        let mut socks: Vec<TcpSock> = (0..2)
            .map(|_| {
                let s = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
                s.set_nonblocking(true).unwrap();
                TcpSock::new(s, true, &budget)
            })
            .collect();
        // Peers that never read: the kernel's buffers fill, then the flows' own.
        let _peers: Vec<_> = (0..2).map(|_| listener.accept().unwrap()).collect();
        let chunk = vec![0u8; 65536];
        // Each flow offers what its window allows, as `tcp_write` does, until none of
        // it is taken.
        loop {
            let mut took = 0;
            for s in &mut socks {
                let n = chunk.len().min(s.room() as usize);
                took += s.take(&chunk[..n]).unwrap();
            }
            if took == 0 {
                break;
            }
        }
        let pending: usize = socks.iter().map(|s| s.pending.len()).sum();
        assert_eq!((pending, budget.held.get()), (MAX, MAX));
        assert_eq!(budget.filled.get(), 1, "filled once");
        drop(socks);
        assert_eq!(budget.held.get(), 0, "given back as flows go");
    }
    const GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 168, 8, 2);

    /// A guest's DNS query to the gateway, from `sport`.
    fn query_frame(nat_mac: MacAddr, sport: u16, id: u16) -> Vec<u8> {
        let mut query = id.to_be_bytes().to_vec();
        query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        query.extend_from_slice(b"\x04test\x00\x00\x01\x00\x01");
        let route = Route {
            src_mac: GUEST_MAC,
            dst_mac: nat_mac,
            src: GUEST.into(),
            dst: GATEWAY.into(),
        };
        let seg = frames::udp_datagram(&route, sport, 53, &query);
        frames::ip_frame(&route, IpProtocol::UDP, 1, &seg)
    }

    /// The destination port and DNS ID of a UDP frame for the guest.
    fn answer_of(frame: &Outgoing) -> (u16, u16) {
        let Outgoing::Bytes(f) = frame else {
            panic!("a frame in a large buffer");
        };
        let ip = ipv4::Packet::new_checked(&f[ethernet::HEADER_LEN..]).unwrap();
        let u = udp::Packet::new_checked(ip.payload()).unwrap();
        let id = u16::from_be_bytes([u.payload()[0], u.payload()[1]]);
        (u.dst_port(), id)
    }

    #[test]
    fn two_dns_queries_leave_from_two_source_ports_and_their_answers_come_back() {
        let upstream = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        upstream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let std::net::SocketAddr::V4(upstream_addr) = upstream.local_addr().unwrap() else {
            unreachable!("bound to IPv4");
        };
        let spec = NetworkSpec::named("dnsports");
        let mac = device_mac(&spec.name);
        let mut config = NatConfig::new(mac, GATEWAY, Ipv4Addr::new(192, 168, 8, 0), 24);
        config.dns_upstreams = vec![upstream_addr];
        let limits = NatLimits {
            buffer_bytes: 1 << 20,
            fd_ceiling: usize::MAX,
        };
        let mut nat = NatService::start(&spec, config, limits).unwrap();

        let mut out = Vec::new();
        for (sport, id) in [(40000, 0x1111), (40001, 0x2222)] {
            assert!(nat.receive(
                &query_frame(mac, sport, id),
                &VirtioNetHdr::default(),
                &mut out
            ));
        }
        assert!(out.is_empty(), "nothing for the guest yet");
        let mut buf = [0; 512];
        let mut sent = Vec::new();
        for _ in 0..2 {
            let (n, from) = upstream.recv_from(&mut buf).unwrap();
            sent.push((buf[..n].to_vec(), from));
        }
        assert_ne!(
            sent[0].1.port(),
            sent[1].1.port(),
            "one source port per query"
        );
        assert_ne!(sent[0].0[..2], sent[1].0[..2], "one ID per query");
        for (query, from) in &sent {
            let mut answer = query.clone();
            answer[2] |= 0x80;
            upstream.send_to(&answer, from).unwrap();
        }

        let deadline = Instant::now() + Duration::from_secs(5);
        while out.len() < 2 && Instant::now() < deadline {
            nat.readable(Instant::now(), &mut out);
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut answers: Vec<(u16, u16)> = out.iter().map(answer_of).collect();
        answers.sort();
        assert_eq!(answers, [(40000, 0x1111), (40001, 0x2222)]);
        assert_eq!(nat.device().counters().dns_answers, 2);
    }
}
