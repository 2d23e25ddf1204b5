//! One ACL rule: what it matches and what it does; and [`first_match`], the reference
//! semantics of a rule list (the linear scan the compiled classifier must agree with).

use super::fields::{Addr, Fields, L4};
use crate::wire::{EtherType, MacAddr};

/// What a rule, or a chain's default, does with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Action {
    #[default]
    Allow,
    Drop,
}

/// An IPv4 or IPv6 prefix: the top `len` bits of `addr` (an [`Addr`], left-aligned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    pub v6: bool,
    /// Bits beyond `len` are zero.
    pub addr: Addr,
    /// 0–32 for IPv4, 0–128 for IPv6.
    pub len: u8,
}

impl Prefix {
    /// The prefix of `addr` of `len` bits (bits beyond `len` cleared; `len` capped at
    /// the family's width).
    pub fn new(v6: bool, addr: Addr, len: u8) -> Prefix {
        let len = len.min(if v6 { 128 } else { 32 });
        Prefix {
            v6,
            addr: addr & mask(len),
            len,
        }
    }

    pub fn contains(&self, v6: bool, addr: Addr) -> bool {
        self.v6 == v6 && addr & mask(self.len) == self.addr
    }
}

/// The top `len` bits of an [`Addr`] set.
pub(super) fn mask(len: u8) -> u128 {
    match len {
        0 => 0,
        l => u128::MAX << (128 - u32::from(l.min(128))),
    }
}

/// An inclusive range of TCP/UDP ports (`lo == hi` for one port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        (self.lo..=self.hi).contains(&port)
    }

    /// The one port of a single-port range.
    pub fn single(&self) -> Option<u16> {
        (self.lo == self.hi).then_some(self.lo)
    }
}

/// The fields a rule matches; `None` (or `false`) matches anything. A rule matches a
/// frame when every field it sets matches: a field the frame lacks (no IP header, no
/// ports in a non-first fragment, see [`fields`](super::fields)) fails the match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Match {
    pub ethertype: Option<u16>,
    pub src_mac: Option<MacAddr>,
    pub dst_mac: Option<MacAddr>,
    pub vlan: Option<u16>,
    pub src: Option<Prefix>,
    pub dst: Option<Prefix>,
    /// IPv4 protocol / IPv6 upper-layer header.
    pub proto: Option<u8>,
    /// TCP or UDP source ports.
    pub src_port: Option<PortRange>,
    pub dst_port: Option<PortRange>,
    /// ICMP or ICMPv6 type and code.
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    /// Only frames of a flow the connection tracker knows.
    pub established: bool,
}

impl Match {
    /// The EtherType the rule implies: its own, or its prefixes' family.
    pub fn implied_ethertype(&self) -> Option<u16> {
        let family = self.src.or(self.dst).map(|p| {
            if p.v6 {
                EtherType::IPV6
            } else {
                EtherType::IPV4
            }
        });
        self.ethertype.or(family)
    }

    /// Whether the frame's `f` match, `established` saying if its flow is tracked.
    pub fn matches(&self, f: &Fields, established: bool) -> bool {
        fn eq<T: PartialEq>(want: Option<T>, have: T) -> bool {
            want.is_none_or(|w| w == have)
        }
        if !(eq(self.ethertype, f.ethertype)
            && eq(self.src_mac, f.src_mac)
            && eq(self.dst_mac, f.dst_mac)
            && self.vlan.is_none_or(|v| f.vlan == Some(v))
            && (established || !self.established))
        {
            return false;
        }
        let needs_ip = self.src.is_some()
            || self.dst.is_some()
            || self.proto.is_some()
            || self.needs_ports()
            || self.needs_icmp();
        let Some(ip) = f.ip else {
            return !needs_ip;
        };
        if !(self.src.is_none_or(|p| p.contains(ip.v6, ip.src))
            && self.dst.is_none_or(|p| p.contains(ip.v6, ip.dst))
            && eq(self.proto, ip.proto))
        {
            return false;
        }
        match ip.l4 {
            L4::Ports { src, dst, .. } => {
                !self.needs_icmp()
                    && self.src_port.is_none_or(|r| r.contains(src))
                    && self.dst_port.is_none_or(|r| r.contains(dst))
            }
            L4::Icmp { msg_type, code, .. } => {
                !self.needs_ports() && eq(self.icmp_type, msg_type) && eq(self.icmp_code, code)
            }
            L4::None => !self.needs_ports() && !self.needs_icmp(),
        }
    }

    fn needs_ports(&self) -> bool {
        self.src_port.is_some() || self.dst_port.is_some()
    }

    fn needs_icmp(&self) -> bool {
        self.icmp_type.is_some() || self.icmp_code.is_some()
    }
}

/// A match and what to do with the frames it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Rule {
    pub action: Action,
    pub matches: Match,
}

/// The index of the first rule of `rules` that matches: the meaning of a rule list,
/// computed the slow way (every rule in order).
pub fn first_match(rules: &[Rule], f: &Fields, established: bool) -> Option<usize> {
    rules.iter().position(|r| r.matches.matches(f, established))
}
