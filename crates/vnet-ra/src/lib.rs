//! The IPv6 router side of a vnet, sans I/O: Ethernet frames and time in, frames out.
//!
//! # Theory of operation
//!
//! A [`Router`] is one MAC on the vnet with a link-local address (`fe80::` + the
//! MAC's modified EUI-64, RFC 4291) and, on a NAT vnet, the gateway's global address
//! (`::2` of the /64). It does what a router's own stack does on the link and nothing
//! else (forwarding is the NAT device's business):
//!
//! | frame in | answer |
//! |---|---|
//! | Router Solicitation (hop limit 255) from an address | an RA unicast to it, after 0-500 ms (RFC 4861 §6.2.6) |
//! | Router Solicitation from `::` | the next multicast RA to ff02::1, no sooner than 3 s after the last |
//! | Neighbour Solicitation for one of its addresses | a solicited NA with its MAC (from `::`, DAD: an NA to ff02::1) |
//! | Echo Request to one of its addresses | Echo Reply |
//! | UDP to its link-local address | "port unreachable", so resolvers pointed at it fail fast |
//! | UDP to the gateway's address (NAT vnets) | [`Verdict::NotMine`]: the NAT device's (DNS, the host's loopback) |
//! | anything else | [`Verdict::NotMine`]: the caller's (the NAT device) |
//!
//! Unsolicited RAs go to ff02::1 at start, then the first three every ≤ 16 s, then at
//! random between ⅓ and all of MaxRtrAdvInterval (`interval`). Each carries: source
//! link-layer address, MTU (if ≥ 1280), the /64 (on-link; autonomous if SLAAC; valid 30
//! days, preferred 7, RFC 4861's defaults), RDNSS and DNSSL (RFC 8106, lifetime three
//! intervals), the M and O flags, and a router lifetime: three intervals (at most
//! 9000 s) where the vnet has a router, 0 where it has none (host-only: guests get
//! addresses but no default route). Time is an argument; randomness is a seed the
//! shell gives (jitter only, nothing a peer must not guess).
//!
//! Bounds: pending unicast answers are at most [`MAX_PENDING`] (one per solicitor's
//! MAC; past that, solicitors get the next multicast RA); nothing else is kept per
//! peer. Any bytes are accepted: a malformed message for the router is counted
//! (`malformed`) and dropped, never a panic.
#![forbid(unsafe_code)]

mod frames;

use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use vnet_core::wire::ethernet::{EtherType, Frame, MacAddr};
use vnet_core::wire::icmpv6::{self, NdiscOption, NdiscRepr, PrefixInfo};
use vnet_core::wire::{ipv6, udp, IpProtocol};
pub use vnet_model::RaCounters;

/// What the router is told to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterConfig {
    pub mac: MacAddr,
    /// The vnet's /64 (its network address).
    pub prefix: Ipv6Addr,
    /// Its global address (NAT vnets: the gateway), answered besides the link-local.
    pub address: Option<Ipv6Addr>,
    /// Send advertisements and answer solicitations (`false`: only neighbour
    /// discovery and pings for its addresses).
    pub advertise: bool,
    /// Announce a default route (the NAT device); `false`: router lifetime 0.
    pub default_router: bool,
    pub slaac: bool,
    pub managed: bool,
    pub other: bool,
    /// The vnet's IP MTU.
    pub mtu: u32,
    pub dns: Vec<Ipv6Addr>,
    pub domains: Vec<String>,
    /// MaxRtrAdvInterval.
    pub interval: Duration,
}

/// What became of a frame given to [`Router::receive`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not for the router: the caller may handle it.
    NotMine,
    /// For the router, handled (answered or deliberately ignored).
    Done,
    /// For the router, broken (counted).
    Malformed,
}

/// Answers to solicitations waiting for their random delay, at most.
pub const MAX_PENDING: usize = 32;
/// RFC 4861 §10 router constants.
const MAX_RA_DELAY: Duration = Duration::from_millis(500);
const MIN_DELAY_BETWEEN_RAS: Duration = Duration::from_secs(3);
const MAX_INITIAL_RTR_ADVERT_INTERVAL: Duration = Duration::from_secs(16);
const MAX_INITIAL_RTR_ADVERTISEMENTS: u8 = 3;
/// RFC 4861 §6.2.1 defaults for the prefix.
const VALID_LIFETIME: u32 = 30 * 86400;
const PREFERRED_LIFETIME: u32 = 7 * 86400;
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
/// The smallest MTU IPv6 allows; an MTU option below it is ignored by hosts.
const IPV6_MIN_MTU: u32 = 1280;

/// A vnet's IPv6 router side (see the crate docs).
#[derive(Debug)]
pub struct Router {
    config: RouterConfig,
    link_local: Ipv6Addr,
    /// The RA's options, built once.
    options: Vec<u8>,
    router_lifetime: u16,
    /// When the next multicast RA is due.
    next_multicast: Instant,
    /// Unsolicited RAs still sent at the initial (fast) pace.
    initial_left: u8,
    last_multicast: Option<Instant>,
    /// Unicast answers due: (when, MAC, address).
    pending: Vec<(Instant, MacAddr, Ipv6Addr)>,
    rng: u64,
    counters: RaCounters,
}

impl Router {
    /// A router whose first RA is due at `now`; `seed` drives the RFC's jitter.
    pub fn new(config: RouterConfig, now: Instant, seed: u64) -> Self {
        Router {
            link_local: link_local(config.mac),
            options: frames::ra_options(&config),
            router_lifetime: router_lifetime(&config),
            config,
            next_multicast: now,
            initial_left: MAX_INITIAL_RTR_ADVERTISEMENTS + 1,
            last_multicast: None,
            pending: Vec::new(),
            rng: seed | 1,
            counters: RaCounters::default(),
        }
    }

    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// Takes new settings (a live change of what the RA says, e.g. its search list),
    /// announced at once. The MAC stays: it is the port's.
    pub fn reconfigure(&mut self, config: RouterConfig, now: Instant) {
        let config = RouterConfig {
            mac: self.config.mac,
            ..config
        };
        if config == self.config {
            return;
        }
        self.options = frames::ra_options(&config);
        self.router_lifetime = router_lifetime(&config);
        self.config = config;
        self.next_multicast = now;
    }

    /// Its link-local address, the RAs' source (`fe80::` + modified EUI-64).
    pub fn link_local(&self) -> Ipv6Addr {
        self.link_local
    }

    /// The router lifetime its RAs announce, seconds (0: not a default router).
    pub fn router_lifetime(&self) -> u16 {
        self.router_lifetime
    }

    pub fn counters(&self) -> &RaCounters {
        &self.counters
    }

    /// When [`Router::poll`] next has work; `None` if it never will (not advertising).
    pub fn poll_at(&self) -> Option<Instant> {
        if !self.config.advertise {
            return None;
        }
        let first_pending = self.pending.iter().map(|p| p.0).min();
        Some(first_pending.map_or(self.next_multicast, |p| p.min(self.next_multicast)))
    }

    /// Sends what is due at `now`: answers whose delay is over, the multicast RA.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<Vec<u8>>) {
        if !self.config.advertise {
            return;
        }
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].0 <= now {
                let (_, mac, ip) = self.pending.swap_remove(i);
                self.send_ra(mac, ip, out);
            } else {
                i += 1;
            }
        }
        if self.next_multicast <= now {
            self.send_ra(frames::multicast_mac(&ALL_NODES), ALL_NODES, out);
            self.last_multicast = Some(now);
            self.initial_left = self.initial_left.saturating_sub(1);
            let wait = self.random_interval();
            self.next_multicast = now + wait;
        }
    }

    /// One frame the switch delivered to the router's port; answers go to `out`.
    pub fn receive(&mut self, now: Instant, frame: &[u8], out: &mut Vec<Vec<u8>>) -> Verdict {
        let Ok(eth) = Frame::parse(frame) else {
            return Verdict::NotMine;
        };
        if eth.vlan_tag().is_some() || eth.ethertype() != EtherType::IPV6 {
            return Verdict::NotMine;
        }
        let Ok(ip) = ipv6::Packet::new_checked(eth.payload()) else {
            return Verdict::NotMine;
        };
        let Ok(repr) = ipv6::Repr::parse(&ip) else {
            return Verdict::NotMine;
        };
        if !self.listens_to(&repr.dst_addr) {
            return Verdict::NotMine;
        }
        let unicast = self.is_mine(&repr.dst_addr);
        let packet = &eth.payload()[..repr.buffer_len()];
        match repr.next_header {
            IpProtocol::ICMPV6 => self.icmp(now, eth.src(), &repr, ip.payload(), unicast, out),
            // The gateway's datagrams are the NAT device's: DNS, the host's loopback.
            IpProtocol::UDP if unicast && Some(repr.dst_addr) != self.config.address => {
                self.udp(eth.src(), &repr, packet, out)
            }
            _ => Verdict::NotMine,
        }
    }

    fn icmp(
        &mut self,
        now: Instant,
        src_mac: MacAddr,
        ip: &ipv6::Repr,
        body: &[u8],
        unicast: bool,
        out: &mut Vec<Vec<u8>>,
    ) -> Verdict {
        let Ok(p) = icmpv6::Packet::new_checked(body) else {
            return self.malformed();
        };
        if !p.verify_checksum(&ip.src_addr, &ip.dst_addr) {
            return self.malformed();
        }
        let msg = match icmpv6::Repr::parse(&p) {
            Ok(m) => m,
            Err(vnet_core::wire::Error::Unrecognized) => return Verdict::NotMine,
            Err(_) => return self.malformed(),
        };
        match msg {
            icmpv6::Repr::EchoRequest {
                ident,
                seq_no,
                data,
            } if unicast => {
                let reply = icmpv6::Repr::EchoReply {
                    ident,
                    seq_no,
                    data,
                };
                out.push(frames::icmp(
                    self.config.mac,
                    src_mac,
                    ip.dst_addr,
                    ip.src_addr,
                    64,
                    &reply,
                ));
                self.counters.echo_answered += 1;
                Verdict::Done
            }
            icmpv6::Repr::Ndisc(nd) => {
                // RFC 4861 §6.1, §7.1: a neighbour discovery message that may have
                // crossed a router is forged.
                if ip.hop_limit != 255 {
                    return self.malformed();
                }
                match nd {
                    NdiscRepr::RouterSolicit { options } => {
                        self.solicited(now, src_mac, ip.src_addr, options)
                    }
                    NdiscRepr::NeighborSolicit { target, options } => {
                        self.neighbour(src_mac, ip, target, options, out)
                    }
                    _ => Verdict::NotMine,
                }
            }
            _ => Verdict::NotMine,
        }
    }

    /// A router solicitation: schedules its answer.
    fn solicited(
        &mut self,
        now: Instant,
        src_mac: MacAddr,
        src: Ipv6Addr,
        options: &[u8],
    ) -> Verdict {
        let has_sllao = icmpv6::NdiscOptions::new(options)
            .any(|o| matches!(o, Ok(NdiscOption::SourceLinkLayerAddr(_))));
        if src.is_unspecified() && has_sllao {
            return self.malformed(); // RFC 4861 §6.1.1
        }
        if !self.config.advertise {
            return Verdict::Done;
        }
        self.counters.rs_answered += 1;
        let delay = self.random_below(MAX_RA_DELAY);
        if !src.is_unspecified() {
            if self.pending.iter().any(|p| p.1 == src_mac) {
                return Verdict::Done; // its answer is on the way
            }
            if self.pending.len() < MAX_PENDING {
                self.pending.push((now + delay, src_mac, src));
                return Verdict::Done;
            }
        }
        let earliest = self
            .last_multicast
            .map_or(now, |t| t + MIN_DELAY_BETWEEN_RAS)
            .max(now + delay);
        self.next_multicast = self.next_multicast.min(earliest);
        Verdict::Done
    }

    /// A neighbour solicitation: answered if it asks for one of the router's
    /// addresses.
    fn neighbour(
        &mut self,
        src_mac: MacAddr,
        ip: &ipv6::Repr,
        target: Ipv6Addr,
        options: &[u8],
        out: &mut Vec<Vec<u8>>,
    ) -> Verdict {
        if !self.is_mine(&target) {
            return Verdict::NotMine;
        }
        let dad = ip.src_addr.is_unspecified();
        let has_sllao = icmpv6::NdiscOptions::new(options)
            .any(|o| matches!(o, Ok(NdiscOption::SourceLinkLayerAddr(_))));
        if dad && (has_sllao || !is_solicited_node(&ip.dst_addr)) {
            return self.malformed(); // RFC 4861 §7.1.1
        }
        let (dst, dst_mac) = if dad {
            (ALL_NODES, frames::multicast_mac(&ALL_NODES))
        } else {
            (ip.src_addr, src_mac)
        };
        let tlla = NdiscOption::TargetLinkLayerAddr(self.config.mac);
        let mut opt = [0u8; 8];
        tlla.emit(&mut opt);
        let na = icmpv6::Repr::Ndisc(NdiscRepr::NeighborAdvert {
            router: self.config.default_router,
            solicited: !dad,
            override_: true,
            target,
            options: &opt,
        });
        out.push(frames::icmp(
            self.config.mac,
            dst_mac,
            target,
            dst,
            255,
            &na,
        ));
        self.counters.ns_answered += 1;
        Verdict::Done
    }

    /// A datagram to the router's link-local address: nothing listens, "port
    /// unreachable".
    fn udp(
        &mut self,
        src_mac: MacAddr,
        repr: &ipv6::Repr,
        packet: &[u8],
        out: &mut Vec<Vec<u8>>,
    ) -> Verdict {
        let datagram = &packet[ipv6::HEADER_LEN..];
        if udp::Packet::new_checked(datagram).is_err() || repr.src_addr.is_unspecified() {
            return self.malformed();
        }
        // The whole reply within the IPv6 minimum MTU (RFC 4443 §2.4 (c)).
        let room = IPV6_MIN_MTU as usize - ipv6::HEADER_LEN - icmpv6::HEADER_LEN;
        let unreachable = icmpv6::Repr::DstUnreachable {
            code: 4,
            invoking: &packet[..packet.len().min(room)],
        };
        out.push(frames::icmp(
            self.config.mac,
            src_mac,
            repr.dst_addr,
            repr.src_addr,
            64,
            &unreachable,
        ));
        self.counters.port_unreachable += 1;
        Verdict::Done
    }

    fn send_ra(&mut self, dst_mac: MacAddr, dst: Ipv6Addr, out: &mut Vec<Vec<u8>>) {
        let ra = icmpv6::Repr::Ndisc(NdiscRepr::RouterAdvert {
            hop_limit: 64,
            managed: self.config.managed,
            other: self.config.other,
            router_lifetime: self.router_lifetime,
            reachable_time: 0,
            retrans_time: 0,
            options: &self.options,
        });
        out.push(frames::icmp(
            self.config.mac,
            dst_mac,
            self.link_local,
            dst,
            255,
            &ra,
        ));
        self.counters.ra_sent += 1;
    }

    fn malformed(&mut self) -> Verdict {
        self.counters.malformed += 1;
        Verdict::Malformed
    }

    /// Its own unicast addresses.
    fn is_mine(&self, a: &Ipv6Addr) -> bool {
        *a == self.link_local || Some(*a) == self.config.address
    }

    /// Addresses whose packets it reads: its own, all-nodes, all-routers and the
    /// solicited-node groups of its own.
    fn listens_to(&self, a: &Ipv6Addr) -> bool {
        self.is_mine(a)
            || *a == ALL_NODES
            || *a == ALL_ROUTERS
            || *a == solicited_node(&self.link_local)
            || self
                .config
                .address
                .is_some_and(|g| *a == solicited_node(&g))
    }

    /// The wait before the next unsolicited RA (RFC 4861 §6.2.4).
    fn random_interval(&mut self) -> Duration {
        let max = self.config.interval;
        let min = max / 3;
        let wait = min + self.random_below(max - min);
        if self.initial_left > 0 {
            wait.min(MAX_INITIAL_RTR_ADVERT_INTERVAL)
        } else {
            wait
        }
    }

    /// A duration in `[0, below)` (xorshift64*: jitter, not secrets).
    fn random_below(&mut self, below: Duration) -> Duration {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let ms = below.as_millis().max(1) as u64;
        Duration::from_millis(r % ms)
    }
}

/// Three intervals, at most 9000 s, for a default router (RFC 4861 §6.2.1); else 0.
fn router_lifetime(config: &RouterConfig) -> u16 {
    if config.default_router {
        u16::try_from((config.interval.as_secs() * 3).min(9000)).unwrap_or(9000)
    } else {
        0
    }
}

/// `fe80::` + the modified EUI-64 of `mac` (RFC 4291 appendix A).
pub fn link_local(mac: MacAddr) -> Ipv6Addr {
    let m = mac.0;
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        m[0] ^ 0x02,
        m[1],
        m[2],
        0xff,
        0xfe,
        m[3],
        m[4],
        m[5],
    ])
}

/// The solicited-node multicast group of `a` (ff02::1:ffXX:XXXX).
fn solicited_node(a: &Ipv6Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
    ])
}

fn is_solicited_node(a: &Ipv6Addr) -> bool {
    a.octets()[..13] == [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff]
}

/// The prefix option of `config`, as the RA carries it.
fn prefix_info(config: &RouterConfig) -> PrefixInfo {
    PrefixInfo {
        prefix_len: 64,
        on_link: true,
        autonomous: config.slaac,
        valid_lifetime: VALID_LIFETIME,
        preferred_lifetime: PREFERRED_LIFETIME,
        prefix: config.prefix,
    }
}

#[cfg(test)]
mod tests;
