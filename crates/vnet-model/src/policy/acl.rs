//! Filters (ACLs) of a port, as the config file, the API and the CLI say them.
//!
//! A port has two ordered rule lists: `in` for what the port sends into the switch (a
//! VM's outgoing traffic), `out` for what the switch delivers to it (toward the VM).
//! The first rule that matches decides; a frame no rule matches gets the direction's
//! default (`allow` unless set). In TOML a rule is a small table:
//!
//! ```toml
//! default_out = "drop"
//! out = [{ action = "allow", established = true },
//!        { action = "allow", ethertype = "arp" },
//!        { action = "allow", proto = "tcp", dst_port = "22" }]
//! in = [{ action = "drop", proto = "tcp", dst_port = "80" }]
//! ```
//!
//! On the command line the same rule is words ([`AclRule`]'s `FromStr` and `Display`
//! are one grammar): `drop tcp dst-port 80`, `allow established`, `allow arp`,
//! `allow icmp type 8`, `drop src 10.0.0.0/8 udp dst-port 1000-2000`.
//!
//! Rules are checked when read ([`AclRule`] deserializes only if valid): ports need
//! `tcp` or `udp`, an ICMP type needs `icmp` or `icmpv6`, prefixes and protocols of one
//! rule agree on the IP family, and so on; the errors say what to write instead.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use vnet_core::policy::acl as core;
use vnet_core::policy::acl::fields::{addr_v4, addr_v6};
use vnet_core::wire::{EtherType, IpProtocol, MacAddr};

/// Most rules in one direction of one port (the compiled form's memory is bounded by
/// it).
pub const MAX_RULES: usize = 1024;

/// A port's filters: both directions' rules and defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclSpec {
    /// Rules for frames from the port into the switch, first match wins.
    #[serde(
        default,
        rename = "in",
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "at_most_max_rules"
    )]
    pub inbound: Vec<AclRule>,
    /// Rules for frames from the switch to the port.
    #[serde(
        default,
        rename = "out",
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "at_most_max_rules"
    )]
    pub outbound: Vec<AclRule>,
    /// What happens to frames into the switch that no rule matches.
    #[serde(default, skip_serializing_if = "AclAction::is_allow")]
    pub default_in: AclAction,
    /// What happens to frames to the port that no rule matches.
    #[serde(default, skip_serializing_if = "AclAction::is_allow")]
    pub default_out: AclAction,
    /// Track connections even when no rule matches `established` (the port report then
    /// shows the table); a rule matching `established` turns tracking on by itself.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub conntrack: bool,
}

/// A rule list of at most [`MAX_RULES`] rules.
fn at_most_max_rules<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<AclRule>, D::Error> {
    let rules = Vec::<AclRule>::deserialize(d)?;
    if rules.len() > MAX_RULES {
        return Err(serde::de::Error::custom(format!(
            "{} rules: a direction of a port takes at most {MAX_RULES}",
            rules.len()
        )));
    }
    Ok(rules)
}

/// A direction of a port, as rules and routes name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AclDirection {
    /// From the port into the switch.
    In,
    /// From the switch to the port.
    Out,
}

impl AclDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            AclDirection::In => "in",
            AclDirection::Out => "out",
        }
    }
}

impl fmt::Display for AclDirection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AclDirection {
    type Err = AclError;
    fn from_str(s: &str) -> Result<Self, AclError> {
        match s {
            "in" => Ok(AclDirection::In),
            "out" => Ok(AclDirection::Out),
            _ => Err(AclError(format!(
                "direction {s:?}: say in (from the port into the switch) or out (to the port)"
            ))),
        }
    }
}

impl AclSpec {
    /// The rules of one direction.
    pub fn rules(&self, dir: AclDirection) -> &Vec<AclRule> {
        match dir {
            AclDirection::In => &self.inbound,
            AclDirection::Out => &self.outbound,
        }
    }

    pub fn rules_mut(&mut self, dir: AclDirection) -> &mut Vec<AclRule> {
        match dir {
            AclDirection::In => &mut self.inbound,
            AclDirection::Out => &mut self.outbound,
        }
    }

    pub fn default_mut(&mut self, dir: AclDirection) -> &mut AclAction {
        match dir {
            AclDirection::In => &mut self.default_in,
            AclDirection::Out => &mut self.default_out,
        }
    }

    /// Inserts `rule` at 1-based `position` of `dir` (`None`: at the end).
    pub fn insert(
        &mut self,
        dir: AclDirection,
        rule: AclRule,
        position: Option<usize>,
    ) -> Result<(), AclError> {
        let rules = self.rules_mut(dir);
        let at = match position {
            None => rules.len(),
            Some(p) if (1..=rules.len() + 1).contains(&p) => p - 1,
            Some(p) => {
                return Err(AclError(format!(
                    "position {p}: {dir} has {} rules, say 1 to {}",
                    rules.len(),
                    rules.len() + 1
                )))
            }
        };
        if rules.len() >= MAX_RULES {
            return Err(AclError(format!(
                "{dir} has {MAX_RULES} rules already, the most a direction takes"
            )));
        }
        rules.insert(at, rule);
        Ok(())
    }

    /// Removes the rule at 1-based `position` of `dir`.
    pub fn remove(&mut self, dir: AclDirection, position: usize) -> Result<AclRule, AclError> {
        let rules = self.rules_mut(dir);
        if !(1..=rules.len()).contains(&position) {
            return Err(AclError(match rules.len() {
                0 => format!("no rule {position}: {dir} has no rules"),
                n => format!("no rule {position}: {dir} has rules 1 to {n}"),
            }));
        }
        Ok(rules.remove(position - 1))
    }

    /// The form the data plane compiles.
    pub fn to_core(&self) -> core::AclConfig {
        let chain = |rules: &[AclRule], default: AclAction| core::Chain {
            rules: rules.iter().map(AclRule::to_core).collect(),
            default: default.to_core(),
        };
        core::AclConfig {
            inbound: chain(&self.inbound, self.default_in),
            outbound: chain(&self.outbound, self.default_out),
            conntrack: self.conntrack,
        }
    }
}

/// What a rule does, or a direction's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AclAction {
    #[default]
    Allow,
    Drop,
}

impl AclAction {
    pub fn is_allow(&self) -> bool {
        *self == AclAction::Allow
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AclAction::Allow => "allow",
            AclAction::Drop => "drop",
        }
    }

    fn to_core(self) -> core::Action {
        match self {
            AclAction::Allow => core::Action::Allow,
            AclAction::Drop => core::Action::Drop,
        }
    }
}

impl FromStr for AclAction {
    type Err = AclError;
    fn from_str(s: &str) -> Result<Self, AclError> {
        match s {
            "allow" => Ok(AclAction::Allow),
            "drop" => Ok(AclAction::Drop),
            _ => Err(AclError(format!("action {s:?}: say allow or drop"))),
        }
    }
}

impl fmt::Display for AclAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rule that cannot be: what is wrong and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AclError(String);

fn err<T>(msg: impl Into<String>) -> Result<T, AclError> {
    Err(AclError(msg.into()))
}

/// An EtherType: `ipv4`, `ipv6`, `arp`, or a number (`0x88cc`, `34958`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AclEtherType(pub u16);

impl AclEtherType {
    fn name(self) -> Option<&'static str> {
        match self.0 {
            EtherType::IPV4 => Some("ipv4"),
            EtherType::IPV6 => Some("ipv6"),
            EtherType::ARP => Some("arp"),
            _ => None,
        }
    }
}

impl FromStr for AclEtherType {
    type Err = AclError;
    fn from_str(s: &str) -> Result<Self, AclError> {
        let n = match s {
            "ipv4" => Some(EtherType::IPV4),
            "ipv6" => Some(EtherType::IPV6),
            "arp" => Some(EtherType::ARP),
            _ => parse_number(s).and_then(|n| u16::try_from(n).ok()),
        };
        match n {
            Some(n) => Ok(AclEtherType(n)),
            None => err(format!(
                "ethertype {s:?}: say ipv4, ipv6, arp or a number like 0x88cc"
            )),
        }
    }
}

impl fmt::Display for AclEtherType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "{:#06x}", self.0),
        }
    }
}

/// An IP protocol: `tcp`, `udp`, `icmp`, `icmpv6`, or a number (0–255).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AclProto(pub u8);

impl AclProto {
    pub const TCP: AclProto = AclProto(IpProtocol::TCP.0);
    pub const UDP: AclProto = AclProto(IpProtocol::UDP.0);
    pub const ICMP: AclProto = AclProto(IpProtocol::ICMP.0);
    pub const ICMPV6: AclProto = AclProto(IpProtocol::ICMPV6.0);

    fn name(self) -> Option<&'static str> {
        match self {
            AclProto::TCP => Some("tcp"),
            AclProto::UDP => Some("udp"),
            AclProto::ICMP => Some("icmp"),
            AclProto::ICMPV6 => Some("icmpv6"),
            _ => None,
        }
    }
}

impl FromStr for AclProto {
    type Err = AclError;
    fn from_str(s: &str) -> Result<Self, AclError> {
        let n = match s {
            "tcp" => Some(AclProto::TCP),
            "udp" => Some(AclProto::UDP),
            "icmp" => Some(AclProto::ICMP),
            "icmpv6" => Some(AclProto::ICMPV6),
            _ => parse_number(s)
                .and_then(|n| u8::try_from(n).ok())
                .map(AclProto),
        };
        n.ok_or_else(|| {
            AclError(format!(
                "protocol {s:?}: say tcp, udp, icmp, icmpv6 or a number 0-255"
            ))
        })
    }
}

impl fmt::Display for AclProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "{}", self.0),
        }
    }
}

/// TCP/UDP ports: one (`80`) or an inclusive range (`1000-2000`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AclPorts {
    pub lo: u16,
    pub hi: u16,
}

impl FromStr for AclPorts {
    type Err = AclError;
    fn from_str(s: &str) -> Result<Self, AclError> {
        let bad = || {
            AclError(format!(
                "ports {s:?}: say a port like 80 or a range like 1000-2000"
            ))
        };
        let (lo, hi) = s.split_once('-').unwrap_or((s, s));
        let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
        let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
        if lo > hi {
            return err(format!("ports {s:?}: the range goes from low to high"));
        }
        Ok(AclPorts { lo, hi })
    }
}

impl fmt::Display for AclPorts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// Parses `s` as a prefix (`10.0.0.0/8`, `fd00::/64`) or one address (`10.0.0.1`); bits
/// past the prefix length are cleared (`10.1.2.3/8` is `10.0.0.0/8`).
fn parse_prefix(s: &str) -> Result<IpNet, AclError> {
    s.parse::<IpNet>()
        .map(|n| n.trunc())
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| {
            AclError(format!(
                "address {s:?}: say a prefix like 10.0.0.0/8 or fd00::/64, or an address"
            ))
        })
}

/// An address for a full-length prefix, else `addr/len`.
fn show_prefix(p: &IpNet) -> String {
    if p.prefix_len() == p.max_prefix_len() {
        p.addr().to_string()
    } else {
        p.to_string()
    }
}

/// A decimal or `0x` hexadecimal number.
fn parse_number(s: &str) -> Option<u32> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// One rule: an action and what it matches (unset fields match anything).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AclRule {
    pub action: AclAction,
    pub ethertype: Option<AclEtherType>,
    pub src_mac: Option<MacAddr>,
    pub dst_mac: Option<MacAddr>,
    /// The frame's VLAN (its tag, or the VLAN the port puts untagged frames in).
    pub vlan: Option<u16>,
    pub src: Option<IpNet>,
    pub dst: Option<IpNet>,
    pub proto: Option<AclProto>,
    pub src_port: Option<AclPorts>,
    pub dst_port: Option<AclPorts>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    /// Only frames of connections already seen (TCP, UDP, ICMP echo).
    pub established: bool,
}

impl AclRule {
    /// A rule that matches everything.
    pub fn new(action: AclAction) -> AclRule {
        AclRule {
            action,
            ethertype: None,
            src_mac: None,
            dst_mac: None,
            vlan: None,
            src: None,
            dst: None,
            proto: None,
            src_port: None,
            dst_port: None,
            icmp_type: None,
            icmp_code: None,
            established: false,
        }
    }

    /// The IP family the rule's prefixes, protocol or EtherType name, if any.
    fn family(&self) -> Result<Option<bool>, AclError> {
        let mut v6: Option<(bool, String)> = None;
        let mut say = |is_v6: bool, what: String| -> Result<(), AclError> {
            match &v6 {
                Some((other, said)) if *other != is_v6 => err(format!(
                    "{said} is IPv{}, {what} is IPv{}: one rule matches one family",
                    if *other { 6 } else { 4 },
                    if is_v6 { 6 } else { 4 },
                )),
                Some(_) => Ok(()),
                None => {
                    v6 = Some((is_v6, what));
                    Ok(())
                }
            }
        };
        for p in [self.src, self.dst].into_iter().flatten() {
            say(matches!(p, IpNet::V6(_)), show_prefix(&p))?;
        }
        match self.proto {
            Some(AclProto::ICMP) => say(false, "icmp".into())?,
            Some(AclProto::ICMPV6) => say(true, "icmpv6".into())?,
            _ => {}
        }
        match self.ethertype.map(|e| e.0) {
            Some(EtherType::IPV4) => say(false, "ethertype ipv4".into())?,
            Some(EtherType::IPV6) => say(true, "ethertype ipv6".into())?,
            _ => {}
        }
        Ok(v6.map(|(v6, _)| v6))
    }

    /// Refuses rules that could never match, or not as written.
    pub fn validate(&self) -> Result<(), AclError> {
        self.family()?;
        let uses_ip =
            self.src.is_some() || self.dst.is_some() || self.proto.is_some() || self.established;
        if let Some(e) = self.ethertype {
            if uses_ip && !matches!(e.0, EtherType::IPV4 | EtherType::IPV6) {
                return err(format!(
                    "ethertype {e} carries no IP: addresses, protocols and established need ipv4 or ipv6"
                ));
            }
        }
        let ports = self.src_port.is_some() || self.dst_port.is_some();
        if ports && !matches!(self.proto, Some(AclProto::TCP | AclProto::UDP)) {
            return err("ports need a protocol with ports: say tcp or udp before them");
        }
        if (self.icmp_type.is_some() || self.icmp_code.is_some())
            && !matches!(self.proto, Some(AclProto::ICMP | AclProto::ICMPV6))
        {
            return err("an ICMP type or code needs icmp or icmpv6 before it");
        }
        if self.icmp_code.is_some() && self.icmp_type.is_none() {
            return err("an ICMP code needs its type: say type N code M");
        }
        if let Some(v) = self.vlan {
            if !(1..=4094).contains(&v) {
                return err(format!("vlan {v}: VLANs are 1 to 4094"));
            }
        }
        if self.established
            && self.proto.is_some_and(|p| {
                ![
                    AclProto::TCP,
                    AclProto::UDP,
                    AclProto::ICMP,
                    AclProto::ICMPV6,
                ]
                .contains(&p)
            })
        {
            return err("established tracks TCP, UDP and ICMP echo: no other protocol");
        }
        Ok(())
    }

    /// The form the classifier matches.
    pub fn to_core(&self) -> core::Rule {
        let prefix = |p: IpNet| match p {
            IpNet::V4(n) => core::Prefix::new(false, addr_v4(n.addr()), n.prefix_len()),
            IpNet::V6(n) => core::Prefix::new(true, addr_v6(n.addr()), n.prefix_len()),
        };
        let ports = |p: AclPorts| core::PortRange { lo: p.lo, hi: p.hi };
        core::Rule {
            action: self.action.to_core(),
            matches: core::Match {
                ethertype: self.ethertype.map(|e| e.0),
                src_mac: self.src_mac,
                dst_mac: self.dst_mac,
                vlan: self.vlan,
                src: self.src.map(prefix),
                dst: self.dst.map(prefix),
                proto: self.proto.map(|p| p.0),
                src_port: self.src_port.map(ports),
                dst_port: self.dst_port.map(ports),
                icmp_type: self.icmp_type,
                icmp_code: self.icmp_code,
                established: self.established,
            },
        }
    }
}

/// The words of a rule: `ACTION [MATCH...]`, each MATCH one of `ipv4`, `ipv6`, `arp`,
/// `ethertype E`, `tcp`, `udp`, `icmp`, `icmpv6`, `proto P`, `src PREFIX`,
/// `dst PREFIX`, `src-port PORTS`, `dst-port PORTS`, `type T`, `code C`,
/// `src-mac MAC`, `dst-mac MAC`, `vlan V`, `established`.
impl FromStr for AclRule {
    type Err = AclError;
    fn from_str(s: &str) -> Result<Self, AclError> {
        let mut words = s.split_whitespace();
        let Some(action) = words.next() else {
            return err(
                "an empty rule: say allow or drop, then what it matches, e.g. drop tcp dst-port 80",
            );
        };
        let mut rule = AclRule::new(action.parse()?);
        while let Some(word) = words.next() {
            let mut value = |what: &str| {
                words
                    .next()
                    .ok_or_else(|| AclError(format!("{word} needs {what} after it")))
            };
            fn once<T>(slot: &mut Option<T>, v: T, word: &str) -> Result<(), AclError> {
                if slot.replace(v).is_some() {
                    return err(format!("{word} is said twice"));
                }
                Ok(())
            }
            match word {
                "ipv4" | "ipv6" | "arp" => {
                    once(&mut rule.ethertype, word.parse()?, "the ethertype")?
                }
                "ethertype" => once(
                    &mut rule.ethertype,
                    value("an ethertype")?.parse()?,
                    "the ethertype",
                )?,
                "tcp" | "udp" | "icmp" | "icmpv6" => {
                    once(&mut rule.proto, word.parse()?, "the protocol")?
                }
                "proto" => once(
                    &mut rule.proto,
                    value("a protocol")?.parse()?,
                    "the protocol",
                )?,
                "src" => once(&mut rule.src, parse_prefix(value("an address")?)?, word)?,
                "dst" => once(&mut rule.dst, parse_prefix(value("an address")?)?, word)?,
                "src-port" => once(&mut rule.src_port, value("ports")?.parse()?, word)?,
                "dst-port" => once(&mut rule.dst_port, value("ports")?.parse()?, word)?,
                "type" => once(
                    &mut rule.icmp_type,
                    parse_u8(value("an ICMP type")?, "ICMP type")?,
                    word,
                )?,
                "code" => once(
                    &mut rule.icmp_code,
                    parse_u8(value("an ICMP code")?, "ICMP code")?,
                    word,
                )?,
                "src-mac" => once(&mut rule.src_mac, parse_mac(value("a MAC")?)?, word)?,
                "dst-mac" => once(&mut rule.dst_mac, parse_mac(value("a MAC")?)?, word)?,
                "vlan" => {
                    let v = value("a VLAN")?;
                    let vid = v
                        .parse()
                        .map_err(|_| AclError(format!("vlan {v:?}: say a VLAN 1-4094")))?;
                    once(&mut rule.vlan, vid, word)?
                }
                "established" => rule.established = true,
                _ => {
                    return err(format!(
                        "{word:?} is not part of a rule: say e.g. tcp, udp, icmp, arp, src, dst, \
                         src-port, dst-port, type, code, src-mac, dst-mac, vlan, established"
                    ))
                }
            }
        }
        rule.validate()?;
        Ok(rule)
    }
}

fn parse_u8(s: &str, what: &str) -> Result<u8, AclError> {
    s.parse()
        .map_err(|_| AclError(format!("{what} {s:?}: say a number 0-255")))
}

fn parse_mac(s: &str) -> Result<MacAddr, AclError> {
    s.parse()
        .map_err(|e: vnet_core::wire::ethernet::ParseMacError| AclError(e.to_string()))
}

impl fmt::Display for AclRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.action.as_str())?;
        match self.ethertype {
            Some(e) if e.name().is_some() => write!(f, " {e}")?,
            Some(e) => write!(f, " ethertype {e}")?,
            None => {}
        }
        match self.proto {
            Some(p) if p.name().is_some() => write!(f, " {p}")?,
            Some(p) => write!(f, " proto {p}")?,
            None => {}
        }
        if let Some(p) = &self.src {
            write!(f, " src {}", show_prefix(p))?;
        }
        if let Some(p) = &self.dst {
            write!(f, " dst {}", show_prefix(p))?;
        }
        if let Some(p) = self.src_port {
            write!(f, " src-port {p}")?;
        }
        if let Some(p) = self.dst_port {
            write!(f, " dst-port {p}")?;
        }
        if let Some(t) = self.icmp_type {
            write!(f, " type {t}")?;
        }
        if let Some(c) = self.icmp_code {
            write!(f, " code {c}")?;
        }
        if let Some(m) = self.src_mac {
            write!(f, " src-mac {m}")?;
        }
        if let Some(m) = self.dst_mac {
            write!(f, " dst-mac {m}")?;
        }
        if let Some(v) = self.vlan {
            write!(f, " vlan {v}")?;
        }
        if self.established {
            f.write_str(" established")?;
        }
        Ok(())
    }
}

/// A rule as TOML and JSON say it: a table of the fields it sets.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFields {
    action: AclAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ethertype: Option<Text<AclEtherType>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    proto: Option<Text<AclProto>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    src: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dst: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    src_port: Option<Text<AclPorts>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dst_port: Option<Text<AclPorts>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    icmp_type: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    icmp_code: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    src_mac: Option<MacAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dst_mac: Option<MacAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    vlan: Option<u16>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    established: bool,
}

/// A value written as its text (`"tcp"`, `"80"`, `"0x88cc"`) or, where it is a number,
/// as a number (`6`, `80`); emitted as text.
#[derive(Debug, Clone, Copy)]
struct Text<T>(T);

impl<T: fmt::Display> Serialize for Text<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de, T: FromStr<Err = AclError>> Deserialize<'de> for Text<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Number(n) => n.to_string(),
            Raw::Text(s) => s,
        };
        text.parse().map(Text).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<RuleFields> for AclRule {
    type Error = AclError;
    fn try_from(r: RuleFields) -> Result<Self, AclError> {
        let rule = AclRule {
            action: r.action,
            ethertype: r.ethertype.map(|t| t.0),
            src_mac: r.src_mac,
            dst_mac: r.dst_mac,
            vlan: r.vlan,
            src: r.src.as_deref().map(parse_prefix).transpose()?,
            dst: r.dst.as_deref().map(parse_prefix).transpose()?,
            proto: r.proto.map(|t| t.0),
            src_port: r.src_port.map(|t| t.0),
            dst_port: r.dst_port.map(|t| t.0),
            icmp_type: r.icmp_type,
            icmp_code: r.icmp_code,
            established: r.established,
        };
        rule.validate()?;
        Ok(rule)
    }
}

impl From<&AclRule> for RuleFields {
    fn from(r: &AclRule) -> Self {
        RuleFields {
            action: r.action,
            ethertype: r.ethertype.map(Text),
            proto: r.proto.map(Text),
            src: r.src.as_ref().map(show_prefix),
            dst: r.dst.as_ref().map(show_prefix),
            src_port: r.src_port.map(Text),
            dst_port: r.dst_port.map(Text),
            icmp_type: r.icmp_type,
            icmp_code: r.icmp_code,
            src_mac: r.src_mac,
            dst_mac: r.dst_mac,
            vlan: r.vlan,
            established: r.established,
        }
    }
}

impl Serialize for AclRule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        RuleFields::from(self).serialize(s)
    }
}

impl<'de> Deserialize<'de> for AclRule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        AclRule::try_from(RuleFields::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A rule to insert (`POST .../acl/{dir}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclInsert {
    pub rule: AclRule,
    /// 1-based; absent: after the last rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<usize>,
}

/// A port's ACL with its counters (`GET .../acl`, and the port's report).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclReport {
    #[serde(rename = "in")]
    pub inbound: AclChainReport,
    #[serde(rename = "out")]
    pub outbound: AclChainReport,
    /// The connection table, when connections are tracked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conntrack: Option<ConntrackReport>,
}

/// One direction: its rules in order, each with what it matched, and its default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclChainReport {
    pub rules: Vec<AclRuleReport>,
    pub default: AclAction,
    /// Frames and bytes no rule matched.
    pub default_frames: u64,
    pub default_bytes: u64,
}

/// A rule and the frames and bytes it decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclRuleReport {
    pub rule: AclRule,
    pub frames: u64,
    pub bytes: u64,
}

/// A port's connection table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackReport {
    /// Flows in the table now.
    pub entries: u64,
    /// Its bound (`[limits] conntrack_entries`).
    pub max: u64,
    /// New flows not tracked because the table was full.
    pub refused: u64,
}

impl AclReport {
    /// `spec`'s rules with the counters the data plane's ACL kept for them.
    pub fn new(spec: &AclSpec, counters: &core::AclReport) -> AclReport {
        let chain = |rules: &[AclRule], default: AclAction, c: &core::ChainReport| AclChainReport {
            rules: rules
                .iter()
                .zip(&c.rules)
                .map(|(rule, hits)| AclRuleReport {
                    rule: rule.clone(),
                    frames: hits.frames,
                    bytes: hits.bytes,
                })
                .collect(),
            default,
            default_frames: c.default.frames,
            default_bytes: c.default.bytes,
        };
        AclReport {
            inbound: chain(&spec.inbound, spec.default_in, &counters.inbound),
            outbound: chain(&spec.outbound, spec.default_out, &counters.outbound),
            conntrack: counters.conntrack.map(|c| ConntrackReport {
                entries: c.entries as u64,
                max: c.max as u64,
                refused: c.refused,
            }),
        }
    }
}

#[cfg(test)]
mod tests;
