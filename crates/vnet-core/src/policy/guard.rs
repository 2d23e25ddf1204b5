//! Port security: what one port may send into its vnet, judged frame by frame.
//!
//! # Theory of operation
//!
//! A [`Guard`] belongs to one port. The data plane offers it every frame the port sends
//! ([`Guard::ingress`]) before the switch sees it, and every frame queued for the port
//! ([`Guard::egress`], which only matters once the port is shut down). It answers pass
//! or drop with the [`DropCause`] of the rule that refused, so each drop is counted by
//! cause. The rules, in the order a frame meets them (the first refusal names the drop):
//!
//! | rule | refuses | cause |
//! |---|---|---|
//! | shut down | everything, both ways | `shutdown` |
//! | MAC lock | an Ethernet source that is neither listed nor among the first `learn` sources the port used; with it, ARP sender and NDP link-layer addresses outside that set | `mac_lock` |
//! | IP source guard | an IPv4/IPv6 source outside the allowed set; ARP senders and NDP claims (NA targets, DAD targets) outside it; ARP/NDP link-layer addresses other than the frame's source | `ip_guard` |
//! | DHCP server guard | UDP 67→68 (offer, ack, nak) and DHCPv6 547→546 (advertise, reply) | `dhcp_guard` |
//! | RA guard | ICMPv6 router advertisements and redirects | `ra_guard` |
//!
//! The allowed IP set of a frame is: the listed prefixes; with `dhcp`, the IPv4 and
//! IPv6 addresses the vnet's DHCP service (DHCPv6 too) has bound to the frame's source MAC
//! ([`DhcpBindings`], copied in by the data plane when leases change: services and
//! guards never call each other); with `ipv6_link_local`, the EUI-64 link-local address
//! of the frame's source MAC. The unspecified source (0.0.0.0 of a DHCP discover or an
//! ARP probe, :: of duplicate address detection) always passes as a source, never as a
//! claim.
//!
//! A violation of the MAC lock in `shutdown` mode shuts the port down: the frame that
//! did it counts as `mac_lock`, everything after as `shutdown`, and [`Guard::take_event`]
//! says so once, for the log. [`Guard::reconfigure`] (a live policy change) enables the
//! port again.
//!
//! What a guard cannot read, it does not let through: an IPv4 or IPv6 header that does
//! not parse, an IPv6 extension chain that does not fit, a first fragment too short to
//! show its UDP ports or ICMPv6 type, NDP options that do not parse, are dropped under
//! the first guard that needed to read them. Frames too short for an Ethernet header
//! pass: the switch drops those (`runt`, `bad_tag`). Only the outermost 802.1Q tag is
//! looked through; other ethertypes (QinQ, LLDP, ...) are not IP and pass.
//!
//! Bounded: a guard holds its settings, at most `learn` learned MACs and no more than
//! the bound it is made with (the data plane's `[limits] mac_lock_macs`; a source the
//! bound alone refuses is counted apart, [`Guard::take_refusals`]), and a shared,
//! read-only copy of the vnet's DHCP bindings. Nothing allocates per frame but the
//! learning of a MAC (bounded as said).

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use crate::switch::DropCause;
use crate::wire::icmpv6::{self, Message, NdiscOption, NdiscOptions};
use crate::wire::{arp, be16, ipv4, ipv6, EtherType, Frame, IpProtocol, MacAddr};

const DHCP_SERVER_PORT: u16 = 67;
const DHCP_CLIENT_PORT: u16 = 68;
const DHCPV6_CLIENT_PORT: u16 = 546;
const DHCPV6_SERVER_PORT: u16 = 547;

/// What a MAC lock does with a source it does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Violation {
    /// Drop the frame and count it.
    #[default]
    Drop,
    /// Drop it and shut the port down until its policy changes.
    Shutdown,
}

/// The MACs a port may send from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MacLock {
    /// Always allowed.
    pub macs: Vec<MacAddr>,
    /// How many more sources the port may use: the first ones it sends from.
    pub learn: usize,
    pub violation: Violation,
}

/// An IPv4 or IPv6 prefix (an address is a prefix of full length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// `None` if `len` is longer than the address.
    pub fn new(addr: IpAddr, len: u8) -> Option<Self> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (len <= max).then_some(Prefix { addr, len })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The IP source addresses a port may use.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IpGuard {
    /// Always allowed.
    pub prefixes: Vec<Prefix>,
    /// The IPv4 addresses the vnet's DHCP service bound to the frame's source MAC.
    pub dhcp: bool,
    /// The EUI-64 link-local address of the frame's source MAC.
    pub ipv6_link_local: bool,
}

/// A port's security settings; the default turns every guard off.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GuardConfig {
    pub mac_lock: Option<MacLock>,
    pub ip_guard: Option<IpGuard>,
    /// Refuse DHCP server messages.
    pub dhcp_guard: bool,
    /// Refuse router advertisements and redirects.
    pub ra_guard: bool,
}

impl GuardConfig {
    /// True if no guard is on: such a port needs no [`Guard`] at all.
    pub fn is_off(&self) -> bool {
        self.mac_lock.is_none() && self.ip_guard.is_none() && !self.dhcp_guard && !self.ra_guard
    }
}

/// The addresses a vnet's DHCP service has bound (active DHCP and DHCPv6 leases), by
/// client MAC.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DhcpBindings(Vec<(MacAddr, IpAddr)>);

impl DhcpBindings {
    pub fn new<A: Into<IpAddr>>(bindings: impl IntoIterator<Item = (MacAddr, A)>) -> Self {
        let mut v: Vec<_> = bindings
            .into_iter()
            .map(|(mac, ip)| (mac, ip.into()))
            .collect();
        v.sort_unstable();
        v.dedup();
        DhcpBindings(v)
    }

    pub fn binds(&self, mac: MacAddr, ip: impl Into<IpAddr>) -> bool {
        self.0.binary_search(&(mac, ip.into())).is_ok()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Something the data plane should tell the log, once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardEvent {
    /// The MAC lock shut the port down: it sent from `mac`.
    ShutDown { mac: MacAddr },
}

/// The EUI-64 link-local address (fe80::/64) of `mac` (RFC 4291 appendix A).
pub fn eui64_link_local(mac: MacAddr) -> Ipv6Addr {
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

/// One port's security state: its settings, the MACs it learned, whether it is shut.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    config: GuardConfig,
    /// The most MACs it learns, whatever `learn` says.
    max_learned: usize,
    learned: Vec<MacAddr>,
    /// Sources refused only because of `max_learned`, since the last take.
    refused: u64,
    /// The source that shut the port down.
    shut_by: Option<MacAddr>,
    event: Option<GuardEvent>,
    bindings: Arc<DhcpBindings>,
}

impl Guard {
    /// A guard for `config` that learns at most `max_learned` MACs.
    pub fn new(config: GuardConfig, max_learned: usize) -> Self {
        Guard {
            config,
            max_learned,
            ..Guard::default()
        }
    }

    pub fn config(&self) -> &GuardConfig {
        &self.config
    }

    /// New settings, live: a port shut down is enabled again; the MACs it learned stay
    /// as far as the new lock still learns that many.
    pub fn reconfigure(&mut self, config: GuardConfig) {
        let learn = config.mac_lock.as_ref().map_or(0, |l| l.learn);
        self.learned.truncate(learn.min(self.max_learned));
        self.shut_by = None;
        self.config = config;
    }

    /// Whether the guard reads the vnet's DHCP bindings.
    pub fn wants_dhcp_bindings(&self) -> bool {
        self.config.ip_guard.as_ref().is_some_and(|g| g.dhcp)
    }

    /// The vnet's DHCP bindings as they are now.
    pub fn set_dhcp_bindings(&mut self, bindings: Arc<DhcpBindings>) {
        self.bindings = bindings;
    }

    /// The sources the MAC lock learned, in the order it did.
    pub fn learned_macs(&self) -> &[MacAddr] {
        &self.learned
    }

    /// The source that shut the port down, while it is.
    pub fn shut_down_by(&self) -> Option<MacAddr> {
        self.shut_by
    }

    /// How many sources the MAC lock refused since the last call only because of the
    /// bound on learned MACs (its `mac_limit` would have taken them).
    pub fn take_refusals(&mut self) -> u64 {
        std::mem::take(&mut self.refused)
    }

    /// What happened since the last call that the log should say.
    pub fn take_event(&mut self) -> Option<GuardEvent> {
        self.event.take()
    }

    /// Judges a frame the port sent.
    pub fn ingress(&mut self, bytes: &[u8]) -> Result<(), DropCause> {
        if self.shut_by.is_some() {
            return Err(DropCause::Shutdown);
        }
        let Ok(frame) = Frame::parse(bytes) else {
            return Ok(());
        };
        let src = frame.src();
        self.check_source_mac(src)?;
        match frame.ethertype() {
            EtherType::ARP => self.check_arp(src, frame.payload()),
            EtherType::IPV4 => self.check_ipv4(src, frame.payload()),
            EtherType::IPV6 => self.check_ipv6(src, frame.payload()),
            _ => Ok(()),
        }
    }

    /// Judges a frame queued for the port: only a port shut down refuses.
    pub fn egress(&self) -> Result<(), DropCause> {
        match self.shut_by {
            Some(_) => Err(DropCause::Shutdown),
            None => Ok(()),
        }
    }

    fn check_source_mac(&mut self, src: MacAddr) -> Result<(), DropCause> {
        let Some(lock) = &self.config.mac_lock else {
            return Ok(());
        };
        if lock.macs.contains(&src) || self.learned.contains(&src) {
            return Ok(());
        }
        if src.is_learnable() && self.learned.len() < lock.learn {
            if self.learned.len() < self.max_learned {
                self.learned.push(src);
                return Ok(());
            }
            self.refused += 1;
        }
        if lock.violation == Violation::Shutdown {
            self.shut_by = Some(src);
            self.event = Some(GuardEvent::ShutDown { mac: src });
        }
        Err(DropCause::MacLock)
    }

    /// A link-layer address an ARP or NDP message names as the sender's: with a MAC
    /// lock one the lock allows, else (under the IP guard) the frame's own source.
    fn check_claimed_mac(&self, src: MacAddr, claimed: MacAddr) -> Result<(), DropCause> {
        match &self.config.mac_lock {
            Some(lock) if lock.macs.contains(&claimed) || self.learned.contains(&claimed) => Ok(()),
            Some(_) => Err(DropCause::MacLock),
            None if self.config.ip_guard.is_some() && claimed != src => Err(DropCause::IpGuard),
            None => Ok(()),
        }
    }

    fn ip_allowed(&self, src: MacAddr, ip: IpAddr) -> bool {
        let Some(g) = &self.config.ip_guard else {
            return true;
        };
        g.prefixes.iter().any(|p| p.contains(ip))
            || match ip {
                IpAddr::V4(a) => g.dhcp && self.bindings.binds(src, a),
                IpAddr::V6(a) => {
                    (g.ipv6_link_local && a == eui64_link_local(src))
                        || (g.dhcp && self.bindings.binds(src, a))
                }
            }
    }

    /// The cause of dropping a packet the guards cannot read: the first guard of
    /// `needs` that is on, or none (pass).
    fn unreadable(needs: &[(bool, DropCause)]) -> Result<(), DropCause> {
        match needs.iter().find(|(on, _)| *on) {
            Some((_, cause)) => Err(*cause),
            None => Ok(()),
        }
    }

    fn check_arp(&self, src: MacAddr, payload: &[u8]) -> Result<(), DropCause> {
        let ip_guard = self.config.ip_guard.is_some();
        let mac_lock = self.config.mac_lock.is_some();
        let parsed = arp::Packet::new_checked(payload).and_then(|p| arp::Repr::parse(&p));
        let Ok(arp) = parsed else {
            return Self::unreadable(&[
                (ip_guard, DropCause::IpGuard),
                (mac_lock, DropCause::MacLock),
            ]);
        };
        self.check_claimed_mac(src, arp.source_hardware_addr)?;
        let sender = arp.source_protocol_addr;
        if !sender.is_unspecified() && !self.ip_allowed(src, IpAddr::V4(sender)) {
            return Err(DropCause::IpGuard);
        }
        Ok(())
    }

    fn check_ipv4(&self, src: MacAddr, payload: &[u8]) -> Result<(), DropCause> {
        let ip_guard = self.config.ip_guard.is_some();
        let dhcp_guard = self.config.dhcp_guard;
        if !ip_guard && !dhcp_guard {
            return Ok(());
        }
        let unreadable = || {
            Self::unreadable(&[
                (ip_guard, DropCause::IpGuard),
                (dhcp_guard, DropCause::DhcpGuard),
            ])
        };
        let Ok(p) = ipv4::Packet::new_checked(payload) else {
            return unreadable();
        };
        if p.version() != 4 {
            return unreadable();
        }
        let from = p.src_addr();
        if !from.is_unspecified() && !self.ip_allowed(src, IpAddr::V4(from)) {
            return Err(DropCause::IpGuard);
        }
        if dhcp_guard && p.next_header() == IpProtocol::UDP && p.frag_offset() == 0 {
            check_dhcp_ports(p.payload(), DHCP_SERVER_PORT, DHCP_CLIENT_PORT)?;
        }
        Ok(())
    }

    fn check_ipv6(&self, src: MacAddr, payload: &[u8]) -> Result<(), DropCause> {
        let c = &self.config;
        let ip_guard = c.ip_guard.is_some();
        let ndp = ip_guard || c.mac_lock.is_some();
        if !ndp && !c.ra_guard && !c.dhcp_guard {
            return Ok(());
        }
        let needs = [
            (ip_guard, DropCause::IpGuard),
            (c.ra_guard, DropCause::RaGuard),
            (c.dhcp_guard, DropCause::DhcpGuard),
            (ndp, DropCause::MacLock),
        ];
        let Ok(p) = ipv6::Packet::new_checked(payload) else {
            return Self::unreadable(&needs);
        };
        if p.version() != 6 {
            return Self::unreadable(&needs);
        }
        let from = p.src_addr();
        if !from.is_unspecified() && !self.ip_allowed(src, IpAddr::V6(from)) {
            return Err(DropCause::IpGuard);
        }
        let Ok(upper) = ipv6::upper_layer(&p) else {
            return Self::unreadable(&needs);
        };
        if upper.fragment.is_some_and(|f| f.frag_offset != 0) {
            // A later fragment: its upper-layer header was judged in the first one.
            return Ok(());
        }
        let l4 = &p.payload()[upper.offset..];
        match upper.protocol {
            IpProtocol::ICMPV6 => self.check_icmpv6(src, from, l4, &needs),
            IpProtocol::UDP if c.dhcp_guard => {
                check_dhcp_ports(l4, DHCPV6_SERVER_PORT, DHCPV6_CLIENT_PORT)
            }
            _ => Ok(()),
        }
    }

    fn check_icmpv6(
        &self,
        src: MacAddr,
        from: Ipv6Addr,
        l4: &[u8],
        needs: &[(bool, DropCause)],
    ) -> Result<(), DropCause> {
        let Some(&kind) = l4.first() else {
            return Self::unreadable(needs);
        };
        if self.config.ra_guard && matches!(kind, Message::ROUTER_ADVERT | Message::REDIRECT) {
            return Err(DropCause::RaGuard);
        }
        let is_ndp = matches!(
            kind,
            Message::ROUTER_SOLICIT
                | Message::ROUTER_ADVERT
                | Message::NEIGHBOR_SOLICIT
                | Message::NEIGHBOR_ADVERT
                | Message::REDIRECT
        );
        if !is_ndp || (self.config.ip_guard.is_none() && self.config.mac_lock.is_none()) {
            return Ok(());
        }
        let Ok(icmp) = icmpv6::Packet::new_checked(l4) else {
            return Self::unreadable(needs);
        };
        let claim = match kind {
            Message::NEIGHBOR_ADVERT => Some(icmp.target_addr()),
            Message::NEIGHBOR_SOLICIT if from.is_unspecified() => Some(icmp.target_addr()),
            _ => None,
        };
        if let Some(target) = claim {
            if !self.ip_allowed(src, IpAddr::V6(target)) {
                return Err(DropCause::IpGuard);
            }
        }
        for option in NdiscOptions::new(icmp.options()) {
            match option {
                Ok(NdiscOption::SourceLinkLayerAddr(m) | NdiscOption::TargetLinkLayerAddr(m)) => {
                    self.check_claimed_mac(src, m)?
                }
                Ok(_) => {}
                Err(_) => return Self::unreadable(needs),
            }
        }
        Ok(())
    }
}

/// Refuses a UDP datagram from `server` to `client` port, or a first fragment too
/// short to tell.
fn check_dhcp_ports(udp: &[u8], server: u16, client: u16) -> Result<(), DropCause> {
    if udp.len() < 4 {
        return Err(DropCause::DhcpGuard);
    }
    if be16(udp, 0) == server && be16(udp, 2) == client {
        return Err(DropCause::DhcpGuard);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
