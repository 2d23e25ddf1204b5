//! [`NatDevice`]: the flow table and the translation between guest frames and host
//! socket datagrams.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use vnet_core::wire::ethernet::{EtherType, Frame, MacAddr};
use vnet_core::wire::{arp, icmpv6, ipv4, ipv6, tcp as tcp_wire, udp, IpProtocol};

use crate::dns::{DnsAction, DnsForwarder};
use crate::flow_id::{FlowId, FlowIds};
use crate::fragments::{Reassembler, Reassembly};
use crate::frames::{self, Echo, Route, Unreachable};
use crate::names::LocalNames;
use crate::secrets::{IsnClock, NatSecrets};

/// Settings of one NAT device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatConfig {
    /// The device's own MAC on the vnet.
    pub mac: MacAddr,
    /// The device's address: the guests' router (and DNS server).
    pub gateway: Ipv4Addr,
    /// The vnet's subnet: only guests inside it are translated.
    pub subnet: Ipv4Addr,
    pub prefix_len: u8,
    /// The device's IPv6 address (`::2` of the vnet's /64), if the vnet has IPv6: IPv6
    /// guests of that /64 are translated as IPv4 ones are.
    pub gateway6: Option<Ipv6Addr>,
    /// The vnet's IP MTU: larger answers leave in fragments.
    pub mtu: usize,
    /// Whether echo requests can leave (the shell found a way to send them); otherwise
    /// guests are told "unreachable".
    pub icmp: bool,
    /// The same for ICMPv6 echo requests.
    pub icmp6: bool,
    /// Where queries to the gateway's port 53 go; empty: no DNS (port unreachable).
    pub dns_upstreams: Vec<SocketAddrV4>,
    /// How long one upstream has to answer before the next is tried.
    pub dns_timeout: Duration,
    /// A UDP flow's host socket is closed after this long without traffic.
    pub udp_timeout: Duration,
    /// The same for echo flows.
    pub icmp_timeout: Duration,
    /// The same for TCP connections.
    pub tcp_timeout: Duration,
    /// Whether UDP to the gateway (other than DNS) reaches the host's loopback.
    pub host_loopback: bool,
    /// Most flows (host sockets) at once (vnetd's `[limits] nat_flows`): a guest's new
    /// flow beyond is refused (RST, ICMP unreachable) and counted as `refused_flows`.
    /// DNS queries' sockets are bounded apart, by [`crate::dns::MAX_PENDING`].
    pub max_flows: usize,
}

impl NatConfig {
    /// Defaults like VMware's nat.conf: UDP flows live 30 s, echo 60 s, DNS 2 s per try.
    pub fn new(mac: MacAddr, gateway: Ipv4Addr, subnet: Ipv4Addr, prefix_len: u8) -> Self {
        NatConfig {
            mac,
            gateway,
            subnet,
            prefix_len,
            gateway6: None,
            mtu: 1500,
            icmp: true,
            icmp6: true,
            dns_upstreams: Vec::new(),
            dns_timeout: Duration::from_secs(2),
            udp_timeout: Duration::from_secs(30),
            icmp_timeout: Duration::from_secs(60),
            tcp_timeout: Duration::from_secs(7200),
            host_loopback: false,
            max_flows: 4096,
        }
    }

    fn in_subnet(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len.min(32)))
            .unwrap_or(0);
        u32::from(ip) & mask == u32::from(self.subnet) & mask
    }

    /// Whether `ip` is in the vnet's IPv6 /64.
    fn in_subnet6(&self, ip: Ipv6Addr) -> bool {
        self.gateway6
            .is_some_and(|g| g.octets()[..8] == ip.octets()[..8])
    }

    /// Whether `ip` is on the vnet: in its subnet or its /64.
    fn in_vnet(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(ip) => self.in_subnet(ip),
            IpAddr::V6(ip) => self.in_subnet6(ip),
        }
    }

    /// The gateway's address of `ip`'s family (IPv6 ones only exist with `gateway6`).
    fn gateway_for(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => IpAddr::V4(self.gateway),
            IpAddr::V6(_) => IpAddr::V6(self.gateway6.unwrap_or(Ipv6Addr::UNSPECIFIED)),
        }
    }

    /// Whether `ip` is one of the device's own addresses.
    fn is_gateway(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(ip) => ip == self.gateway,
            IpAddr::V6(ip) => Some(ip) == self.gateway6,
        }
    }

    fn broadcast(&self) -> Ipv4Addr {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len.min(32)))
            .unwrap_or(0);
        Ipv4Addr::from(u32::from(self.subnet) | !mask)
    }
}

/// Why a guest's packet to `dst` (outside the subnet, not the gateway) gets no flow,
/// if it gets none: a pure function of the destination, `host_loopback` and the host's
/// own addresses (which the shell keeps up to date, [`NatDevice::set_host_addresses`]).
/// Port forwards and DNS upstreams are not asked: they are the daemon's choice, not the
/// guest's.
pub fn refusal(dst: IpAddr, host_loopback: bool, host_addresses: &[IpAddr]) -> Option<Refusal> {
    let refused = match dst {
        IpAddr::V4(dst) => {
            if dst.is_multicast() || dst.is_broadcast() {
                // Not a unicast destination: no ICMP error about it (RFC 1122 3.2.2,
                // 4.2.3.10).
                return Some(Refusal::Silent);
            }
            // `127.0.0.0/8`, `0.0.0.0/8` (Linux connects `0.0.0.0` to the host itself),
            // link-local (`169.254.0.0/16`, cloud metadata services).
            dst.is_loopback() || dst.octets()[0] == 0 || dst.is_link_local()
        }
        IpAddr::V6(dst) => {
            if dst.is_multicast() {
                return Some(Refusal::Silent); // RFC 4443 §2.4 (e)
            }
            // `::1`, `::` (the host itself), link-local (`fe80::/10`: the host's links,
            // not the guest's), and IPv4-mapped addresses (IPv4's rules, bypassed).
            dst.is_loopback()
                || dst.is_unspecified()
                || dst.segments()[0] & 0xffc0 == 0xfe80
                || dst.to_ipv4_mapped().is_some()
        }
    };
    // `host_loopback` reaches the host through the gateway's address only.
    if refused {
        return Some(Refusal::Answered);
    }
    if !host_loopback && host_addresses.contains(&dst) {
        return Some(Refusal::Answered);
    }
    None
}

/// How a refused destination is refused (see [`refusal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Dropped without an answer: multicast and the limited broadcast.
    Silent,
    /// Answered as the gateway refuses the host's loopback: ICMP unreachable
    /// (communication administratively prohibited), or RST for a TCP SYN.
    Answered,
}

/// Guests' addresses remembered at most, both families (the table starts over when
/// full).
const MAX_NEIGHBOURS: usize = 4096;

/// The transport of a flow, and so of its host socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// A UDP socket connected to the destination.
    Udp,
    /// An ICMP echo ("ping") socket connected to the destination.
    Icmp,
    /// A TCP socket connected (non-blocking) to the destination.
    Tcp,
}

/// What the device wants done, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    /// A frame for the vnet, from the device's port.
    Frame(Vec<u8>),
    /// Open a host socket for `flow` and connect it to `to` (of either family). If that
    /// fails, call [`NatDevice::open_failed`].
    Open {
        flow: FlowId,
        proto: Proto,
        to: SocketAddr,
    },
    /// Send `data` on the flow's socket (a UDP payload, or an ICMP echo request whose
    /// identifier the kernel may replace).
    Send { flow: FlowId, data: Vec<u8> },
    /// Close the flow's socket.
    Close { flow: FlowId },
    /// Write the bytes at `data` of the frame being received (the one given to
    /// [`NatDevice::receive`]; carry this out before that call's frame is gone) to the
    /// flow's TCP socket and, if `fin` and all of it went, shut its write side; then
    /// report with [`NatDevice::tcp_written`].
    TcpWrite {
        flow: FlowId,
        data: std::ops::Range<usize>,
        fin: bool,
    },
    /// Peek the flow's TCP socket as [`NatDevice::tcp_read_window`] says and report
    /// with [`NatDevice::tcp_data`].
    TcpRead { flow: FlowId },
    /// Read and discard `bytes` the guest has acknowledged, then peek again.
    TcpConsume { flow: FlowId, bytes: usize },
}

/// Errors a flow's socket reports (from ICMP errors the host received).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketError {
    /// Port unreachable: the guest gets the same.
    Refused,
    /// Host or network unreachable.
    Unreachable,
}

/// What happened to frames and datagrams, for logs and the API: the model's type, so
/// the data plane reports it as it is.
pub use vnet_model::NatCounters;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FlowKey {
    proto: Proto,
    /// The guest's address and port (UDP) or echo identifier (ICMP).
    guest: SocketAddr,
    /// The destination as the guest sees it (port 0 for ICMP), of the guest's family.
    remote: SocketAddr,
}

/// A guest's IP packet of either family, past its family's checks: what the protocol
/// handlers read.
pub(crate) struct GuestPacket<'a> {
    src: IpAddr,
    dst: IpAddr,
    /// The whole packet, IP header first (ICMP errors quote it).
    bytes: &'a [u8],
    /// Where the transport header starts in `bytes` (after IPv6 extension headers).
    transport: usize,
}

impl<'a> GuestPacket<'a> {
    fn payload(&self) -> &'a [u8] {
        &self.bytes[self.transport..]
    }
}

#[derive(Debug)]
pub(crate) struct Flow {
    key: FlowKey,
    guest_mac: MacAddr,
    last_used: Instant,
    tcp: Option<tcp::Tcp>,
    /// A UDP flow that a datagram on a port forward opened: it has no host socket of
    /// its own (the shell answers from the forward's), so it is never mixed up with a
    /// guest's outbound flow between the same addresses.
    forwarded: bool,
}

mod tcp;
#[cfg(test)]
pub(crate) use tcp::WINDOW_SCALE as TCP_WINDOW_SCALE;
pub use tcp::{ReadWindow, WINDOW as TCP_WINDOW};

/// The NAT device of one vnet, sans I/O. See the crate documentation.
#[derive(Debug)]
pub struct NatDevice {
    config: NatConfig,
    flows: HashMap<FlowId, Flow>,
    by_key: HashMap<FlowKey, FlowId>,
    next_flow: FlowIds,
    next_sweep: Option<Instant>,
    dns: DnsForwarder,
    /// The last IPv4 identification (low 16 bits) or IPv6 fragment identification.
    ip_ident: u32,
    counters: NatCounters,
    scratch: Vec<DnsAction>,
    /// TCP initial sequence numbers (RFC 6528).
    isn: IsnClock,
    /// Guests' MACs by address, learned from their ARP, IPv4 and IPv6 frames (for
    /// connections the device opens towards them).
    neighbours: HashMap<IpAddr, MacAddr>,
    /// Guests' datagrams that came in fragments, being put back together.
    fragments: Reassembler,
    /// The vnet's DHCP names, answered locally.
    local_names: LocalNames,
    /// The host's own interface addresses, refused as destinations unless
    /// `host_loopback` (see [`refusal`]).
    host_addresses: Vec<IpAddr>,
}

impl NatDevice {
    /// A device with `config` whose unpredictable numbers (TCP ISNs, DNS IDs) come from
    /// `secrets`: draw them from the OS CSPRNG (see the `secrets` module).
    pub fn new(config: NatConfig, secrets: NatSecrets) -> Self {
        let dns = DnsForwarder::new(config.dns_upstreams.clone(), config.dns_timeout, &secrets);
        NatDevice {
            isn: IsnClock::new(&secrets),
            config,
            flows: HashMap::new(),
            by_key: HashMap::new(),
            next_flow: FlowIds::default(),
            next_sweep: None,
            dns,
            ip_ident: 0,
            counters: NatCounters::default(),
            scratch: Vec::new(),
            neighbours: HashMap::new(),
            local_names: LocalNames::default(),
            fragments: Reassembler::default(),
            host_addresses: Vec::new(),
        }
    }

    /// Replaces the host's own interface addresses, both families (the shell reads them
    /// at start and refreshes them): guests' new flows to them are refused unless
    /// `host_loopback`. They map to nothing; the way to the host is the gateway's
    /// address.
    pub fn set_host_addresses(&mut self, addresses: &[IpAddr]) {
        self.host_addresses.clear();
        self.host_addresses.extend_from_slice(addresses);
    }

    /// Whether a guest's new flow to `dst` is refused (see [`refusal`]).
    pub(crate) fn refused(&self, dst: IpAddr) -> Option<Refusal> {
        refusal(dst, self.config.host_loopback, &self.host_addresses)
    }

    /// Counts and logs a refused destination.
    pub(crate) fn count_refused(&mut self, what: &str, src: IpAddr, dst: SocketAddr) {
        self.counters.refused_destinations += 1;
        tracing::debug!("NAT: {what} from {src} to {dst} refused (link-local, multicast, broadcast, loopback or the host's own)");
    }

    /// Replaces the names the device's DNS answers itself (see the `names` module).
    pub fn set_local_names(&mut self, names: LocalNames) {
        self.local_names = names;
    }

    /// Remembers that `ip` is at `mac` (guests on the vnet only, bounded); `true` if
    /// that is news.
    fn learn(&mut self, ip: IpAddr, mac: MacAddr) -> bool {
        let c = &self.config;
        if !c.in_vnet(ip) || c.is_gateway(ip) || ip.is_unspecified() || !mac.is_learnable() {
            return false;
        }
        if self.neighbours.len() >= MAX_NEIGHBOURS && !self.neighbours.contains_key(&ip) {
            self.neighbours.clear();
        }
        self.neighbours.insert(ip, mac) != Some(mac)
    }

    pub fn config(&self) -> &NatConfig {
        &self.config
    }

    pub fn counters(&self) -> &NatCounters {
        &self.counters
    }

    /// The transport of an open flow.
    pub fn flow_proto(&self, flow: FlowId) -> Option<Proto> {
        self.flows.get(&flow).map(|f| f.key.proto)
    }

    /// Whether an open flow is IPv6.
    pub fn flow_is_ipv6(&self, flow: FlowId) -> bool {
        self.flows.get(&flow).is_some_and(|f| f.key.guest.is_ipv6())
    }

    /// Open flows (host sockets).
    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    /// Drops `flow` without a word to the shell, which let go of its socket itself (a
    /// removed port forward's peers): the guest's next datagram to that peer is a new
    /// flow. `false` if there was no such flow.
    pub fn forget(&mut self, flow: FlowId) -> bool {
        let Some(f) = self.flows.remove(&flow) else {
            return false;
        };
        self.by_key.remove(&f.key);
        self.counters.flows_closed += 1;
        true
    }

    /// A frame the switch delivered to the device's port. `false`: it was addressed to
    /// the device but broken.
    pub fn receive(&mut self, now: Instant, frame: &[u8], out: &mut Vec<Output>) -> bool {
        self.receive_frame(now, frame, false, out)
    }

    /// As [`NatDevice::receive`], for a frame whose transport checksum its sender left
    /// to offload (partial, or already verified): it is not checked. A TCP frame may be
    /// a super-frame (more than one MSS of data): it is taken as one segment.
    pub fn receive_offloaded(&mut self, now: Instant, frame: &[u8], out: &mut Vec<Output>) -> bool {
        self.receive_frame(now, frame, true, out)
    }

    fn receive_frame(
        &mut self,
        now: Instant,
        frame: &[u8],
        checksum_offloaded: bool,
        out: &mut Vec<Output>,
    ) -> bool {
        let Ok(eth) = Frame::parse(frame) else {
            self.counters.ignored += 1;
            return true;
        };
        if eth.vlan_tag().is_some() {
            self.counters.ignored += 1;
            return true;
        }
        match eth.ethertype() {
            EtherType::ARP => {
                let arp =
                    arp::Packet::new_checked(eth.payload()).and_then(|p| arp::Repr::parse(&p));
                let Ok(arp) = arp else {
                    self.counters.ignored += 1;
                    return true;
                };
                let request = match arp.operation {
                    arp::Operation::Request => true,
                    arp::Operation::Reply => false,
                    arp::Operation::Unknown(_) => {
                        self.counters.ignored += 1;
                        return true;
                    }
                };
                let ip = IpAddr::V4(arp.source_protocol_addr);
                self.learn(ip, arp.source_hardware_addr);
                if request && arp.target_protocol_addr == self.config.gateway {
                    self.counters.arp_replies += 1;
                    out.push(Output::Frame(frames::arp_reply(&arp, self.config.mac)));
                } else if !request {
                    self.tcp_neighbour_known(now, ip, out);
                }
                true
            }
            EtherType::IPV4 if eth.dst() == self.config.mac => {
                self.receive_ipv4(now, eth.src(), eth.payload(), checksum_offloaded, out)
            }
            EtherType::IPV6 if eth.dst() == self.config.mac => {
                self.receive_ipv6(now, eth.src(), eth.payload(), checksum_offloaded, out)
            }
            _ => {
                self.counters.ignored += 1;
                true
            }
        }
    }

    fn receive_ipv4(
        &mut self,
        now: Instant,
        guest_mac: MacAddr,
        bytes: &[u8],
        checksum_offloaded: bool,
        out: &mut Vec<Output>,
    ) -> bool {
        // Lengths (a total length past the buffer included), version, header checksum.
        let ip = ipv4::Packet::new_checked(bytes);
        let Ok(ip) = ip.and_then(|ip| ipv4::Repr::parse(&ip).map(|_| ip)) else {
            self.counters.malformed += 1;
            return false;
        };
        let src = ip.src_addr();
        if !self.config.in_subnet(src) {
            self.counters.ignored += 1;
            return true;
        }
        if ip.is_fragment() {
            return self.receive_fragment(now, guest_mac, ip.into_inner(), out);
        }
        if src == self.config.gateway || src == self.config.broadcast() {
            self.counters.ignored += 1;
            return true;
        }
        let packet = GuestPacket {
            src: IpAddr::V4(src),
            dst: IpAddr::V4(ip.dst_addr()),
            bytes: &bytes[..usize::from(ip.total_len())],
            transport: usize::from(ip.header_len()),
        };
        self.receive_ip(
            now,
            guest_mac,
            &packet,
            ip.next_header(),
            checksum_offloaded,
            out,
        )
    }

    /// A guest's IPv6 packet (RFC 8200): its extension headers are walked to the upper
    /// layer; the gateway's own neighbour discovery and echo are the router's (which
    /// saw the frame first), everything else is translated as IPv4 is.
    fn receive_ipv6(
        &mut self,
        now: Instant,
        guest_mac: MacAddr,
        bytes: &[u8],
        checksum_offloaded: bool,
        out: &mut Vec<Output>,
    ) -> bool {
        if self.config.gateway6.is_none() {
            self.counters.ignored += 1;
            return true;
        }
        let ip = ipv6::Packet::new_checked(bytes);
        let Ok((ip, repr)) = ip.and_then(|ip| ipv6::Repr::parse(&ip).map(|r| (ip, r))) else {
            self.counters.malformed += 1;
            return false;
        };
        let (src, dst) = (repr.src_addr, repr.dst_addr);
        if !self.config.in_subnet6(src) || dst.is_multicast() {
            self.counters.ignored += 1;
            return true;
        }
        let bytes = &bytes[..repr.buffer_len()];
        // Up to a Fragment header: what follows it is only whole once reassembled.
        let mut walk = ip.ext_headers();
        for h in walk.by_ref() {
            match h {
                Ok(h) if h.kind == IpProtocol::IPV6_FRAGMENT => {
                    return self.receive_fragment(now, guest_mac, bytes, out);
                }
                Ok(_) => {}
                Err(_) => {
                    self.counters.malformed += 1;
                    return false;
                }
            }
        }
        if self.learn(IpAddr::V6(src), guest_mac) {
            // Maybe the answer to our neighbour solicitation.
            self.tcp_neighbour_known(now, IpAddr::V6(src), out);
        }
        let packet = GuestPacket {
            src: IpAddr::V6(src),
            dst: IpAddr::V6(dst),
            bytes,
            transport: ipv6::HEADER_LEN + walk.offset(),
        };
        let protocol = walk.next_header();
        self.receive_ip(now, guest_mac, &packet, protocol, checksum_offloaded, out)
    }

    /// A guest's packet of either family, its source checked: the destination decides.
    fn receive_ip(
        &mut self,
        now: Instant,
        guest_mac: MacAddr,
        ip: &GuestPacket<'_>,
        protocol: IpProtocol,
        checksum_offloaded: bool,
        out: &mut Vec<Output>,
    ) -> bool {
        let (src, dst) = (ip.src, ip.dst);
        if src.is_ipv4() {
            self.learn(src, guest_mac);
        }
        let c = &self.config;
        let to_gateway = c.is_gateway(dst);
        if c.in_vnet(dst) && !to_gateway {
            self.counters.ignored += 1;
            return true;
        }
        if !to_gateway && self.refused(dst) == Some(Refusal::Silent) {
            self.count_refused("a packet", src, SocketAddr::new(dst, 0));
            return true;
        }
        match protocol {
            IpProtocol::ICMP if dst.is_ipv4() => self.receive_icmp(now, guest_mac, ip, out),
            IpProtocol::ICMPV6 if dst.is_ipv6() => self.receive_icmp(now, guest_mac, ip, out),
            IpProtocol::UDP => self.receive_udp(now, guest_mac, ip, checksum_offloaded, out),
            IpProtocol::TCP => self.receive_tcp(now, guest_mac, ip, checksum_offloaded, out),
            _ => {
                // A prompt "protocol unreachable" instead of a hang.
                self.unreachable(guest_mac, ip, Unreachable::Protocol, out);
                true
            }
        }
    }

    /// A guest's IPv4 or IPv6 fragment: kept until its datagram is whole, which then
    /// goes on as if it had come in one piece (see the `fragments` module). Only the
    /// vnet's own guests (checked by the caller) may hold reassembly memory.
    fn receive_fragment(
        &mut self,
        now: Instant,
        guest_mac: MacAddr,
        packet: &[u8],
        out: &mut Vec<Output>,
    ) -> bool {
        self.counters.fragments += 1;
        match self.fragments.add(now, packet) {
            Reassembly::Incomplete => true,
            Reassembly::Complete(datagram) => {
                self.counters.reassembled += 1;
                if datagram.first().is_some_and(|b| b >> 4 == 6) {
                    self.receive_ipv6(now, guest_mac, &datagram, false, out)
                } else {
                    self.receive_ipv4(now, guest_mac, &datagram, false, out)
                }
            }
            Reassembly::Dropped => {
                self.counters.reassembly_failures += 1;
                true
            }
        }
    }

    fn receive_icmp(
        &mut self,
        now: Instant,
        guest_mac: MacAddr,
        ip: &GuestPacket<'_>,
        out: &mut Vec<Output>,
    ) -> bool {
        let (src, dst) = (ip.src, ip.dst);
        let v6 = dst.is_ipv6();
        // Broken, or another ICMP message (errors about our own answers): ignore.
        let echo = frames::read_echo(ip.payload(), v6).filter(|e| !e.reply);
        let checked = match (src, dst) {
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                icmpv6::Packet::new_unchecked(ip.payload()).verify_checksum(&s, &d)
            }
            _ => true,
        };
        let Some(echo) = echo.filter(|_| checked) else {
            self.counters.ignored += 1;
            return true;
        };
        if self.config.is_gateway(dst) {
            self.counters.echo_local += 1;
            let route = self.route(guest_mac, dst, src);
            let reply = frames::echo(
                &route,
                &Echo {
                    reply: true,
                    ..echo
                },
            );
            self.push_ip(&route, route.icmp_protocol(), &reply, out);
            return true;
        }
        if self.refused(dst).is_some() {
            self.count_refused("echo", src, SocketAddr::new(dst, 0));
            self.unreachable(guest_mac, ip, Unreachable::AdminProhibited, out);
            return true;
        }
        if !(if v6 {
            self.config.icmp6
        } else {
            self.config.icmp
        }) {
            self.unreachable(guest_mac, ip, Unreachable::AdminProhibited, out);
            return true;
        }
        let key = FlowKey {
            proto: Proto::Icmp,
            guest: SocketAddr::new(src, echo.ident),
            remote: SocketAddr::new(dst, 0),
        };
        self.send_to_host(now, key, guest_mac, key.remote, ip.payload(), out);
        true
    }

    fn receive_udp(
        &mut self,
        now: Instant,
        guest_mac: MacAddr,
        ip: &GuestPacket<'_>,
        checksum_offloaded: bool,
        out: &mut Vec<Output>,
    ) -> bool {
        let (src, dst) = (ip.src, ip.dst);
        let udp = udp::Packet::new_checked(ip.payload())
            .ok()
            .filter(|u| checksum_offloaded || u.verify_checksum(&src, &dst));
        let Some(udp) = udp else {
            self.counters.malformed += 1;
            return false;
        };
        let guest = SocketAddr::new(src, udp.src_port());
        let key = FlowKey {
            proto: Proto::Udp,
            guest,
            remote: SocketAddr::new(dst, udp.dst_port()),
        };
        let to_gateway = self.config.is_gateway(dst);
        // A port forward's peer (its flow is open) is the daemon's choice, not the guest's.
        let forwarded = self
            .by_key
            .get(&key)
            .is_some_and(|id| self.flows[id].forwarded);
        if !to_gateway && !forwarded && self.refused(dst).is_some() {
            self.count_refused("UDP", src, key.remote);
            self.unreachable(guest_mac, ip, Unreachable::AdminProhibited, out);
            return true;
        }
        let mut to = key.remote;
        // An open flow goes on, whatever its destination: a forwarded peer on the host's
        // loopback is the gateway to the guest, even without `host_loopback`.
        if to_gateway && !self.by_key.contains_key(&key) {
            if udp.dst_port() == 53 && !self.dns.upstreams().is_empty() {
                match guest {
                    SocketAddr::V4(guest) => {
                        self.dns_query(now, guest_mac, guest, udp.payload(), out)
                    }
                    // The relay over IPv6 joins here (`dns`); until then resolvers asking
                    // the gateway's IPv6 address fail fast.
                    SocketAddr::V6(_) => self.unreachable(guest_mac, ip, Unreachable::Port, out),
                }
                return true;
            }
            if !self.config.host_loopback {
                self.unreachable(guest_mac, ip, Unreachable::Port, out);
                return true;
            }
            to.set_ip(loopback(dst));
        }
        self.send_to_host(now, key, guest_mac, to, udp.payload(), out);
        true
    }

    /// A guest's DNS query to the gateway: answered from the local names, else relayed.
    fn dns_query(
        &mut self,
        now: Instant,
        guest_mac: MacAddr,
        guest: SocketAddrV4,
        query: &[u8],
        out: &mut Vec<Output>,
    ) {
        self.counters.dns_queries += 1;
        if let Some(answer) = self.local_names.answer(query) {
            self.counters.dns_local += 1;
            self.dns_answer(guest_mac, guest, &answer, out);
            return;
        }
        let flows = &mut self.next_flow;
        match self.dns.query(now, flows, guest_mac, guest, query) {
            Some(action) => self.carry_out_dns(action, out),
            None => self.counters.ignored += 1,
        }
    }

    /// `payload` onto the flow of `key` (opened towards `to` if new); at the flow limit
    /// the guest is told "unreachable" (administratively prohibited).
    fn send_to_host(
        &mut self,
        now: Instant,
        key: FlowKey,
        guest_mac: MacAddr,
        to: SocketAddr,
        payload: &[u8],
        out: &mut Vec<Output>,
    ) {
        let Some(flow) = self.flow_for(now, key, guest_mac, to, out) else {
            self.unreachable_for(guest_mac, key, Unreachable::AdminProhibited, out);
            return;
        };
        self.counters.to_host += 1;
        out.push(Output::Send {
            flow,
            data: payload.to_vec(),
        });
    }

    /// The flow of `key`, opened (connected to `target`) if new; `None` at the limit
    /// (counted as `refused_flows`).
    fn flow_for(
        &mut self,
        now: Instant,
        key: FlowKey,
        guest_mac: MacAddr,
        to: SocketAddr,
        out: &mut Vec<Output>,
    ) -> Option<FlowId> {
        if let Some(&id) = self.by_key.get(&key) {
            let f = self.flows.get_mut(&id).expect("indexed");
            f.last_used = now;
            f.guest_mac = guest_mac;
            return Some(id);
        }
        if !self.room_for_flow(key) {
            return None;
        }
        let id = self.insert_flow(now, key, guest_mac, false);
        out.push(Output::Open {
            flow: id,
            proto: key.proto,
            to,
        });
        Some(id)
    }

    /// Whether a new flow (of `key`) fits under [`NatConfig::max_flows`]; refused:
    /// counted as `refused_flows` and logged.
    pub(crate) fn room_for_flow(&mut self, key: FlowKey) -> bool {
        if self.flows.len() < self.config.max_flows {
            return true;
        }
        self.counters.refused_flows += 1;
        tracing::debug!(
            "NAT: {:?} flow from {} to {} refused: {} flows are open",
            key.proto,
            key.guest,
            key.remote,
            self.flows.len()
        );
        false
    }

    /// Starts tracking a new flow (the caller checked the limit) and its idle timeout.
    fn insert_flow(
        &mut self,
        now: Instant,
        key: FlowKey,
        guest_mac: MacAddr,
        forwarded: bool,
    ) -> FlowId {
        let id = self.next_flow.next();
        self.flows.insert(
            id,
            Flow {
                key,
                guest_mac,
                last_used: now,
                tcp: None,
                forwarded,
            },
        );
        self.by_key.insert(key, id);
        self.counters.flows_opened += 1;
        let expiry = now + self.timeout(key.proto);
        self.next_sweep = Some(self.next_sweep.map_or(expiry, |t| t.min(expiry)));
        id
    }

    /// A datagram from host peer `peer` arrived on a UDP port forward to `guest` (of
    /// either family, `peer`'s too): it goes to the guest as UDP from the peer as the
    /// guest sees it (host-local peers and those of the other family as the gateway,
    /// others as themselves, as for forwarded TCP), in the flow of that pair, opened
    /// if new and refreshed otherwise. The guest's replies come back through
    /// [`NatDevice::receive`] as [`Output::Send`] on that flow, which the shell sends
    /// from the forward's socket to the peer; the flow closes after
    /// [`NatConfig::udp_timeout`] without traffic either way.
    ///
    /// `None`: the datagram is dropped (counted as ignored) because the guest's MAC is
    /// not known yet (the device asks by ARP or neighbour solicitation, so the peer's
    /// next try gets through), the flow limit is reached, or the guest has an outbound
    /// flow between the same addresses.
    pub fn udp_forwarded(
        &mut self,
        now: Instant,
        guest: SocketAddr,
        peer: SocketAddr,
        data: &[u8],
        out: &mut Vec<Output>,
    ) -> Option<FlowId> {
        let remote = self.seen_by_guests(peer, guest.ip());
        let key = FlowKey {
            proto: Proto::Udp,
            guest,
            remote,
        };
        let flow = match self.by_key.get(&key) {
            Some(&id) if self.flows[&id].forwarded => {
                self.flows.get_mut(&id).expect("indexed").last_used = now;
                id
            }
            Some(_) => {
                self.counters.ignored += 1;
                return None;
            }
            None => {
                let Some(&mac) = self.neighbours.get(&guest.ip()) else {
                    self.solicit(guest.ip(), out);
                    self.counters.ignored += 1;
                    return None;
                };
                if !self.room_for_flow(key) {
                    self.counters.ignored += 1;
                    return None;
                }
                self.insert_flow(now, key, mac, true)
            }
        };
        let route = self.route(self.flows[&flow].guest_mac, remote.ip(), guest.ip());
        let seg = frames::udp_datagram(&route, remote.port(), guest.port(), data);
        self.counters.from_host += 1;
        self.push_ip(&route, IpProtocol::UDP, &seg, out);
        Some(flow)
    }

    /// Asks where guest `ip` is: ARP, or an IPv6 neighbour solicitation from the
    /// gateway (the guest's answer comes to the device's MAC).
    fn solicit(&mut self, ip: IpAddr, out: &mut Vec<Output>) {
        let c = &self.config;
        let frame = match (ip, c.gateway6) {
            (IpAddr::V4(ip), _) => frames::arp_request(c.mac, c.gateway, ip),
            (IpAddr::V6(ip), Some(gateway)) => frames::neighbour_solicitation(c.mac, gateway, ip),
            (IpAddr::V6(_), None) => return,
        };
        out.push(Output::Frame(frame));
    }

    fn timeout(&self, proto: Proto) -> Duration {
        match proto {
            Proto::Udp => self.config.udp_timeout,
            Proto::Icmp => self.config.icmp_timeout,
            Proto::Tcp => self.config.tcp_timeout,
        }
    }

    /// A datagram arrived on a flow's socket: a UDP payload, or an ICMP (ICMPv6) echo
    /// reply as a ping socket returns it (header included, identifier the socket's
    /// own), or an upstream's answer on a DNS query's socket.
    pub fn socket_data(&mut self, now: Instant, flow: FlowId, data: &[u8], out: &mut Vec<Output>) {
        let Some(f) = self.flows.get_mut(&flow) else {
            return self.dns_data(flow, data, out);
        };
        f.last_used = now;
        let (key, mac) = (f.key, f.guest_mac);
        let route = self.route(mac, key.remote.ip(), key.guest.ip());
        match key.proto {
            Proto::Udp => {
                let seg = frames::udp_datagram(&route, key.remote.port(), key.guest.port(), data);
                self.counters.from_host += 1;
                self.push_ip(&route, IpProtocol::UDP, &seg, out);
            }
            Proto::Icmp => {
                let echo = frames::read_echo(data, route.is_ipv6()).filter(|e| e.reply);
                let Some(echo) = echo else {
                    self.counters.ignored += 1;
                    return;
                };
                let ident = key.guest.port();
                let reply = frames::echo(&route, &Echo { ident, ..echo });
                self.counters.from_host += 1;
                self.push_ip(&route, route.icmp_protocol(), &reply, out);
            }
            // TCP bytes come through `tcp_data`.
            Proto::Tcp => {}
        }
    }

    /// A flow's socket reported an error: the guest hears of it as ICMP unreachable
    /// (TCP: a refused or reset connection as RST, and the flow ends).
    /// On a DNS query's socket, the query moves on to the next upstream.
    pub fn socket_error(&mut self, flow: FlowId, error: SocketError, out: &mut Vec<Output>) {
        let Some(f) = self.flows.get(&flow) else {
            return self.dns.failed(flow);
        };
        let why = match (error, f.key.proto) {
            (SocketError::Refused, Proto::Tcp) => return self.tcp_reset(flow, out),
            (SocketError::Refused, Proto::Udp) => Unreachable::Port,
            _ => Unreachable::Host,
        };
        let (key, mac) = (f.key, f.guest_mac);
        self.unreachable_for(mac, key, why, out);
        if key.proto == Proto::Tcp {
            self.close_flow(flow, out);
        }
    }

    /// The shell could not open the flow's socket: the flow is forgotten and the guest
    /// told "unreachable". A DNS query's: the query moves on to the next upstream.
    pub fn open_failed(&mut self, flow: FlowId, out: &mut Vec<Output>) {
        let Some(f) = self.flows.remove(&flow) else {
            return self.dns.failed(flow);
        };
        self.by_key.remove(&f.key);
        self.counters.flows_closed += 1;
        self.unreachable_for(f.guest_mac, f.key, Unreachable::Host, out);
    }

    /// A datagram on DNS query `flow`'s socket.
    fn dns_data(&mut self, flow: FlowId, data: &[u8], out: &mut Vec<Output>) {
        let mut actions = std::mem::take(&mut self.scratch);
        if self.dns.answer(flow, data, &mut actions) {
            self.counters.dns_answers += 1;
        }
        for a in actions.drain(..) {
            self.carry_out_dns(a, out);
        }
        self.scratch = actions;
    }

    /// What the DNS forwarder wants done, as the device's outputs: a query attempt is a
    /// UDP socket of its own.
    fn carry_out_dns(&mut self, action: DnsAction, out: &mut Vec<Output>) {
        match action {
            DnsAction::Query { flow, to, query } => {
                let proto = Proto::Udp;
                let to = SocketAddr::V4(to);
                out.push(Output::Open { flow, proto, to });
                out.push(Output::Send { flow, data: query });
            }
            DnsAction::Close { flow } => out.push(Output::Close { flow }),
            DnsAction::Answer {
                guest_mac,
                guest,
                answer,
            } => self.dns_answer(guest_mac, guest, &answer, out),
        }
    }

    fn dns_answer(
        &mut self,
        mac: MacAddr,
        guest: SocketAddrV4,
        answer: &[u8],
        out: &mut Vec<Output>,
    ) {
        let route = self.route(mac, self.config.gateway.into(), (*guest.ip()).into());
        let fits = ipv4::HEADER_LEN + udp::HEADER_LEN + answer.len() <= self.config.mtu;
        let truncated;
        let answer = if fits {
            answer
        } else {
            // Too big for the vnet: the guest is told to ask again over TCP, which the
            // device relays to the same upstream.
            self.counters.dns_truncated += 1;
            truncated = crate::dns::truncate(answer);
            &truncated
        };
        let seg = frames::udp_datagram(&route, 53, guest.port(), answer);
        self.push_ip(&route, IpProtocol::UDP, &seg, out);
    }

    /// Where TCP to the gateway's port 53 goes: the first upstream, if DNS is on.
    pub(crate) fn dns_tcp_upstream(&self) -> Option<SocketAddrV4> {
        self.dns.upstreams().first().copied()
    }

    /// Closes idle flows and retries or fails slow DNS queries.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<Output>) {
        let mut actions = std::mem::take(&mut self.scratch);
        let gave_up = self.dns.poll(now, &mut self.next_flow, &mut actions);
        self.counters.dns_failures += gave_up as u64;
        self.counters.reassembly_failures += self.fragments.expire(now) as u64;
        for a in actions.drain(..) {
            self.carry_out_dns(a, out);
        }
        self.scratch = actions;
        self.tcp_timers(now, out);
        if self.next_sweep.is_none_or(|t| t > now) {
            return;
        }
        let (udp, icmp, tcp) = (
            self.config.udp_timeout,
            self.config.icmp_timeout,
            self.config.tcp_timeout,
        );
        let expiry = |f: &Flow| {
            f.last_used
                + match f.key.proto {
                    Proto::Udp => udp,
                    Proto::Icmp => icmp,
                    Proto::Tcp => tcp,
                }
        };
        let idle: Vec<FlowId> = self
            .flows
            .iter()
            .filter(|(_, f)| expiry(f) <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in idle {
            let f = self.flows.remove(&id).expect("listed");
            self.by_key.remove(&f.key);
            self.counters.flows_closed += 1;
            out.push(Output::Close { flow: id });
        }
        self.next_sweep = self.flows.values().map(expiry).min();
    }

    /// When [`NatDevice::poll`] next has work.
    pub fn poll_at(&self) -> Option<Instant> {
        let tcp = self.flows.values().filter_map(Flow::tcp_deadline).min();
        let fragments = self.fragments.deadline();
        [self.next_sweep, self.dns.poll_at(), tcp, fragments]
            .into_iter()
            .flatten()
            .min()
    }

    /// A host peer of a port forward as guests see it, in the family of `guest`:
    /// host-local peers (and peers of the other family, which the guest could not
    /// address) as the gateway, everyone else as themselves (guests answer through
    /// their default route, the device, either way).
    pub(crate) fn seen_by_guests(&self, peer: SocketAddr, guest: IpAddr) -> SocketAddr {
        // A dual-stack listener's IPv4 peers come as IPv4-mapped IPv6 addresses.
        let ip = peer.ip().to_canonical();
        if ip.is_ipv6() == guest.is_ipv6() && !ip.is_loopback() && !ip.is_unspecified() {
            SocketAddr::new(ip, peer.port())
        } else {
            SocketAddr::new(self.config.gateway_for(guest), peer.port())
        }
    }

    fn route(&self, guest_mac: MacAddr, src: IpAddr, dst: IpAddr) -> Route {
        Route {
            src_mac: self.config.mac,
            dst_mac: guest_mac,
            src,
            dst,
        }
    }

    /// An IP packet to a guest; above the vnet's MTU, in fragments (a host socket may
    /// hand over datagrams of up to 64 KiB).
    fn push_ip(
        &mut self,
        route: &Route,
        protocol: IpProtocol,
        payload: &[u8],
        out: &mut Vec<Output>,
    ) {
        self.ip_ident = self.ip_ident.wrapping_add(1);
        let (mtu, ident) = (self.config.mtu, self.ip_ident);
        if route.ip_header_len() + payload.len() <= mtu {
            let frame = frames::ip_frame(route, protocol, ident as u16, payload);
            out.push(Output::Frame(frame));
            return;
        }
        match frames::ip_fragments(route, protocol, ident, payload, mtu) {
            Some(frames) => out.extend(frames.into_iter().map(Output::Frame)),
            None => self.counters.oversize += 1,
        }
    }

    /// Answers the guest's packet `ip` with ICMP (ICMPv6) destination unreachable.
    fn unreachable(
        &mut self,
        guest_mac: MacAddr,
        ip: &GuestPacket<'_>,
        why: Unreachable,
        out: &mut Vec<Output>,
    ) {
        self.counters.unreachable += 1;
        let route = self.route(guest_mac, self.config.gateway_for(ip.src), ip.src);
        let (protocol, msg) = frames::unreachable(&route, why, ip.bytes);
        self.push_ip(&route, protocol, &msg, out);
    }

    /// The same for a flow, quoting a packet rebuilt from its key.
    fn unreachable_for(
        &mut self,
        guest_mac: MacAddr,
        key: FlowKey,
        why: Unreachable,
        out: &mut Vec<Output>,
    ) {
        let route = Route {
            src_mac: guest_mac,
            dst_mac: self.config.mac,
            src: key.guest.ip(),
            dst: key.remote.ip(),
        };
        let (protocol, transport) = match key.proto {
            Proto::Udp => (
                IpProtocol::UDP,
                frames::udp_datagram(&route, key.guest.port(), key.remote.port(), &[]),
            ),
            Proto::Icmp => {
                let echo = Echo {
                    reply: false,
                    ident: key.guest.port(),
                    seq_no: 0,
                    data: &[],
                };
                (route.icmp_protocol(), frames::echo(&route, &echo))
            }
            Proto::Tcp => {
                let h = tcp_wire::Repr {
                    src_port: key.guest.port(),
                    dst_port: key.remote.port(),
                    flags: tcp_wire::Flags(tcp_wire::Flags::SYN),
                    ..tcp_wire::Repr::default()
                };
                (IpProtocol::TCP, frames::tcp_segment(&route, &h, &[]))
            }
        };
        let quoted = frames::ip_frame(&route, protocol, 0, &transport);
        let quoted = &quoted[vnet_core::wire::ethernet::HEADER_LEN..];
        let ip = GuestPacket {
            src: route.src,
            dst: route.dst,
            bytes: &quoted[..route.ip_header_len() + transport.len()],
            transport: route.ip_header_len(),
        };
        self.unreachable(guest_mac, &ip, why, out);
    }
}

/// The host's loopback address of `ip`'s family.
fn loopback(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    }
}
