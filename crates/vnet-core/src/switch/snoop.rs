//! IGMP and MLD snooping (RFC 4541): group-addressed frames reach the ports that
//! joined the group and the multicast-router ports, not every port of the VLAN.
//!
//! The switch reads IGMP (v1, v2, v3) and MLD (v1, v2) messages as they pass:
//! reports and leaves change which ports are members of a group, queries and PIM
//! hellos make their port a multicast-router port for a while. Groups are kept by
//! their MAC address (per VLAN), which is what a frame carries; IPv4 groups that
//! share a MAC share its members (over-delivery, never loss).
//!
//! What always floods: broadcast, non-IP multicast (STP, LLDP...), IPv4 link-local
//! control (224.0.0.x, MAC `01:00:5e:00:00:xx`), IPv6 all-nodes (`ff02::1`), queries
//! and PIM; and unregistered groups (nobody reported them), which RFC 4541 §2.1.2
//! allows: a host that joined before the switch could hear it (a restarted daemon)
//! still gets its traffic. Reports and leaves go to router ports only (§2.1.1), so
//! hosts' join chatter does not flood. Leaves take effect at once for the port
//! (fast leave: a port is one guest; a port with a LAN behind it, an uplink, is a
//! router port and gets all group traffic anyway).
//!
//! Memberships age out (after the membership interval of the query that asked for
//! them) only while a querier is heard on the VLAN: without one, hosts report only
//! when they join, so a membership is kept until its leave, or until its port goes.
//! The vnet does not act as querier itself.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::wire::ethernet::{EtherType, Frame};
use crate::wire::MacAddr;

use super::{FastMap, PortId};

/// RFC 3376 §8.4 / RFC 3810 §9.4 with default robustness 2, query interval 125 s
/// and response time 10 s: how long a membership lives without a report, and a
/// learned router port without a query, when the query says nothing else.
const MEMBERSHIP_INTERVAL: Duration = Duration::from_secs(260);
const DEFAULT_ROBUSTNESS: u32 = 2;

/// Where a group-addressed frame goes, decided by the switch for each frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Every port of the VLAN (all frames but those below).
    All,
    /// The group's member ports and the multicast-router ports.
    Group,
    /// The multicast-router ports only (IGMP/MLD reports and leaves).
    Routers,
}

/// Snooping's counters for one vnet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SnoopCounters {
    /// Joins read from reports (one per group record).
    pub joins: u64,
    /// Leaves read (IGMPv2 leave, MLD done, an include of no sources).
    pub leaves: u64,
    /// Queries read (IGMP, MLD).
    pub queries: u64,
    /// Frames to a registered group, delivered to its members and routers only.
    pub group_frames: u64,
    /// Frames to an unregistered group, flooded.
    pub unregistered_frames: u64,
    /// Joins not kept: the vnet or the port held its most memberships.
    pub refused: u64,
}

/// A snapshot of snooping for reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnoopReport {
    pub enabled: bool,
    /// Registered groups (VLAN, MAC) and their member ports.
    pub groups: Vec<(u16, MacAddr, Vec<PortId>)>,
    /// Multicast-router ports, static (services, uplinks) and learned (queriers).
    pub routers: Vec<PortId>,
    pub counters: SnoopCounters,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Member {
    port: PortId,
    heard: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Querier {
    heard: Instant,
    /// How long memberships and the querier's own router port live without news.
    interval: Duration,
}

/// The group tables of one vnet.
#[derive(Debug)]
pub struct Snooping {
    enabled: bool,
    /// Most memberships in all, and per port: reports beyond them are not kept (the
    /// group then stays as it was: unregistered groups flood).
    max_total: usize,
    max_per_port: usize,
    groups: FastMap<(u16, MacAddr), Vec<Member>>,
    memberships: usize,
    per_port: FastMap<PortId, usize>,
    /// Ports that take all group traffic for good (the vnet's services, its uplink).
    static_routers: Vec<PortId>,
    /// Ports a query or PIM hello came from, and when.
    learned_routers: Vec<(PortId, Instant, Duration)>,
    /// Both of the above, without repeats: what [`Snooping::routers`] hands out.
    routers: Vec<PortId>,
    queriers: FastMap<u16, Querier>,
    counters: SnoopCounters,
}

/// What an IGMP or MLD message says (see [`read_control`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Join(MacAddr),
    Leave(MacAddr),
    /// A query, with the membership interval it implies.
    Query(Duration),
    /// A PIM message: a multicast router, but not a querier.
    Pim,
}

/// What kind of control message a frame is, for its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    /// A report or a leave: routers only.
    Report,
    /// A query or PIM: everyone.
    Query,
}

impl Snooping {
    pub fn new(enabled: bool, max_total: usize, max_per_port: usize) -> Self {
        Snooping {
            enabled,
            max_total,
            max_per_port,
            groups: FastMap::default(),
            memberships: 0,
            per_port: FastMap::default(),
            static_routers: Vec::new(),
            learned_routers: Vec::new(),
            routers: Vec::new(),
            queriers: FastMap::default(),
            counters: SnoopCounters::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Turns snooping on or off; off forgets every membership and learned router
    /// (static routers stay: they are the vnet's own ports).
    pub fn set_enabled(&mut self, on: bool) {
        self.enabled = on;
        if !on {
            self.groups.clear();
            self.per_port.clear();
            self.memberships = 0;
            self.learned_routers.clear();
            self.queriers.clear();
            self.rebuild_routers();
        }
    }

    /// Decides where a group-addressed frame (`dst` multicast) from `ingress` in
    /// `vlan` goes, learning from it if it is IGMP or MLD.
    pub fn classify(
        &mut self,
        now: Instant,
        ingress: PortId,
        vlan: u16,
        dst: MacAddr,
        bytes: &[u8],
    ) -> Reach {
        if !self.enabled || dst.is_broadcast() {
            return Reach::All;
        }
        let Ok(frame) = Frame::parse(bytes) else {
            return Reach::All;
        };
        let control = read_control(&frame, &mut |e| self.apply(now, ingress, vlan, e));
        match control {
            Some(Control::Report) => Reach::Routers,
            Some(Control::Query) => Reach::All,
            None if !snooped(dst) => Reach::All,
            None if self.groups.contains_key(&(vlan, dst)) => {
                self.counters.group_frames += 1;
                Reach::Group
            }
            None => {
                self.counters.unregistered_frames += 1;
                Reach::All
            }
        }
    }

    fn apply(&mut self, now: Instant, port: PortId, vlan: u16, event: Event) {
        match event {
            Event::Join(group) => {
                self.counters.joins += 1;
                self.join(now, port, vlan, group);
            }
            Event::Leave(group) => {
                self.counters.leaves += 1;
                self.leave(port, vlan, group);
            }
            Event::Query(interval) => {
                self.counters.queries += 1;
                let querier = Querier {
                    heard: now,
                    interval,
                };
                if self.queriers.insert(vlan, querier).is_none() {
                    // Memberships start aging now: hosts answer this query.
                    self.groups
                        .iter_mut()
                        .filter(|((v, _), _)| *v == vlan)
                        .flat_map(|(_, members)| members.iter_mut())
                        .for_each(|m| m.heard = now);
                }
                self.learn_router(now, port, interval);
            }
            Event::Pim => self.learn_router(now, port, MEMBERSHIP_INTERVAL),
        }
    }

    fn join(&mut self, now: Instant, port: PortId, vlan: u16, group: MacAddr) {
        if let Some(members) = self.groups.get_mut(&(vlan, group)) {
            if let Some(m) = members.iter_mut().find(|m| m.port == port) {
                m.heard = now;
                return;
            }
        }
        let held = self.per_port.get(&port).copied().unwrap_or(0);
        if self.memberships >= self.max_total || held >= self.max_per_port {
            self.counters.refused += 1;
            return;
        }
        self.groups
            .entry((vlan, group))
            .or_default()
            .push(Member { port, heard: now });
        self.memberships += 1;
        *self.per_port.entry(port).or_default() += 1;
    }

    fn leave(&mut self, port: PortId, vlan: u16, group: MacAddr) {
        let Some(members) = self.groups.get_mut(&(vlan, group)) else {
            return;
        };
        let before = members.len();
        members.retain(|m| m.port != port);
        if members.len() < before {
            if members.is_empty() {
                self.groups.remove(&(vlan, group));
            }
            self.unheld(port, 1);
        }
    }

    fn unheld(&mut self, port: PortId, n: usize) {
        self.memberships -= n;
        if let Some(held) = self.per_port.get_mut(&port) {
            *held -= n;
            if *held == 0 {
                self.per_port.remove(&port);
            }
        }
    }

    fn learn_router(&mut self, now: Instant, port: PortId, interval: Duration) {
        match self.learned_routers.iter_mut().find(|r| r.0 == port) {
            Some(r) => {
                r.1 = now;
                r.2 = interval;
            }
            None => {
                self.learned_routers.push((port, now, interval));
                self.rebuild_routers();
            }
        }
    }

    fn rebuild_routers(&mut self) {
        self.routers.clear();
        let learned = self.learned_routers.iter().map(|r| r.0);
        for port in self.static_routers.iter().copied().chain(learned) {
            if !self.routers.contains(&port) {
                self.routers.push(port);
            }
        }
    }

    /// Makes `port` a multicast-router port for good (`on`), or no longer.
    pub fn set_static_router(&mut self, port: PortId, on: bool) {
        self.static_routers.retain(|p| *p != port);
        if on {
            self.static_routers.push(port);
        }
        self.rebuild_routers();
    }

    pub fn is_static_router(&self, port: PortId) -> bool {
        self.static_routers.contains(&port)
    }

    /// Forgets everything about `port` (gone, or its VLANs changed).
    pub fn forget_port(&mut self, port: PortId) {
        if self.per_port.contains_key(&port) {
            let mut dropped = 0;
            self.groups.retain(|_, members| {
                let before = members.len();
                members.retain(|m| m.port != port);
                dropped += before - members.len();
                !members.is_empty()
            });
            self.unheld(port, dropped);
        }
        let before = self.learned_routers.len() + self.static_routers.len();
        self.learned_routers.retain(|r| r.0 != port);
        self.static_routers.retain(|p| *p != port);
        if self.learned_routers.len() + self.static_routers.len() != before {
            self.rebuild_routers();
        }
    }

    /// Ages memberships and learned routers; call about once a second. Memberships
    /// age only in VLANs where a querier was heard within its interval.
    pub fn expire(&mut self, now: Instant) {
        let before = self.learned_routers.len();
        self.learned_routers
            .retain(|(_, heard, interval)| now.saturating_duration_since(*heard) <= *interval);
        if self.learned_routers.len() != before {
            self.rebuild_routers();
        }
        self.queriers
            .retain(|_, q| now.saturating_duration_since(q.heard) <= q.interval);
        if self.queriers.is_empty() || self.memberships == 0 {
            return;
        }
        let mut expired: Vec<PortId> = Vec::new();
        let queriers = &self.queriers;
        self.groups.retain(|(vlan, _), members| {
            let Some(q) = queriers.get(vlan) else {
                return true;
            };
            members.retain(|m| {
                let alive = now.saturating_duration_since(m.heard) <= q.interval;
                if !alive {
                    expired.push(m.port);
                }
                alive
            });
            !members.is_empty()
        });
        for port in expired {
            self.unheld(port, 1);
        }
    }

    /// The member ports of group `dst` in `vlan` (empty if unregistered).
    pub fn members(&self, vlan: u16, dst: MacAddr) -> impl Iterator<Item = PortId> + Clone + '_ {
        self.groups
            .get(&(vlan, dst))
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .map(|m| m.port)
    }

    /// The multicast-router ports (of any VLAN: the caller checks membership).
    pub fn routers(&self) -> &[PortId] {
        &self.routers
    }

    pub fn counters(&self) -> SnoopCounters {
        self.counters
    }

    /// Memberships held in all (each port in each group once).
    pub fn memberships(&self) -> usize {
        self.memberships
    }

    pub fn report(&self) -> SnoopReport {
        let mut groups: Vec<_> = self
            .groups
            .iter()
            .map(|(&(vlan, mac), members)| {
                let mut ports: Vec<PortId> = members.iter().map(|m| m.port).collect();
                ports.sort();
                (vlan, mac, ports)
            })
            .collect();
        groups.sort_by_key(|g| (g.0, g.1 .0));
        let mut routers = self.routers.clone();
        routers.sort();
        SnoopReport {
            enabled: self.enabled,
            groups,
            routers,
            counters: self.counters,
        }
    }
}

/// Whether frames to `dst` are delivered by group membership: IPv4 multicast but
/// the link-local control block, IPv6 multicast but all-nodes.
fn snooped(dst: MacAddr) -> bool {
    let m = dst.0;
    match m {
        [0x01, 0x00, 0x5e, b3, b4, _] if b3 < 0x80 => !(b3 == 0 && b4 == 0),
        [0x33, 0x33, ..] => m != ALL_NODES.0,
        _ => false,
    }
}

const ALL_NODES: MacAddr = MacAddr([0x33, 0x33, 0, 0, 0, 1]);

/// The MAC address of IPv4 group `g`, if it is one snooping keeps.
fn group_mac_v4(g: [u8; 4]) -> Option<MacAddr> {
    let mac = MacAddr([0x01, 0x00, 0x5e, g[1] & 0x7f, g[2], g[3]]);
    (g[0] & 0xf0 == 0xe0 && snooped(mac)).then_some(mac)
}

/// The MAC address of IPv6 group `g`, if it is one snooping keeps (scope link or
/// wider, not all-nodes).
fn group_mac_v6(g: &[u8]) -> Option<MacAddr> {
    let mac = MacAddr([0x33, 0x33, g[12], g[13], g[14], g[15]]);
    (g[0] == 0xff && g[1] & 0x0f >= 2 && snooped(mac)).then_some(mac)
}

/// Reads an IGMP, MLD or PIM message from `frame`, handing what it says to `event`;
/// `None` if the frame is none of them (or one that cannot be read).
fn read_control(frame: &Frame<'_>, event: &mut dyn FnMut(Event)) -> Option<Control> {
    let p = frame.payload();
    match frame.ethertype() {
        EtherType::IPV4 => read_ipv4(p, event),
        EtherType::IPV6 => read_ipv6(p, event),
        _ => None,
    }
}

fn be16(b: &[u8], at: usize) -> usize {
    u16::from_be_bytes([b[at], b[at + 1]]) as usize
}

fn read_ipv4(p: &[u8], event: &mut dyn FnMut(Event)) -> Option<Control> {
    if p.len() < 20 || p[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let end = be16(p, 2).min(p.len());
    // Fragments are not IGMP a host sends.
    if ihl < 20 || end < ihl || be16(p, 6) & 0x3fff != 0 {
        return None;
    }
    let body = &p[ihl..end];
    match p[9] {
        2 => read_igmp(body, event),
        103 => {
            event(Event::Pim);
            Some(Control::Query)
        }
        _ => None,
    }
}

fn read_igmp(b: &[u8], event: &mut dyn FnMut(Event)) -> Option<Control> {
    if b.len() < 8 || crate::wire::checksum::internet_checksum(&[b]) != 0 {
        return None;
    }
    let group = |at: usize| [b[at], b[at + 1], b[at + 2], b[at + 3]];
    match b[0] {
        0x11 => {
            // v3 (12 bytes or more): robustness, query interval; v2: response time
            // only (tenths of a second), v1: none.
            let response = Duration::from_millis(100 * igmp_code(b[1]) as u64);
            let (robustness, interval) = if b.len() >= 12 {
                (b[8] & 7, igmp_code(b[9]))
            } else {
                (0, 0)
            };
            event(Event::Query(membership_interval(
                robustness.into(),
                interval,
                response,
            )));
            Some(Control::Query)
        }
        0x12 | 0x16 => {
            if let Some(mac) = group_mac_v4(group(4)) {
                event(Event::Join(mac));
            }
            Some(Control::Report)
        }
        0x17 => {
            if let Some(mac) = group_mac_v4(group(4)) {
                event(Event::Leave(mac));
            }
            Some(Control::Report)
        }
        0x22 => {
            let mut at = 8;
            for _ in 0..be16(b, 6) {
                if at + 8 > b.len() {
                    break;
                }
                let (kind, aux, sources) = (b[at], usize::from(b[at + 1]), be16(b, at + 2));
                if let Some(mac) = group_mac_v4(group(at + 4)) {
                    record(kind, sources, mac, event);
                }
                at += 8 + 4 * sources + 4 * aux;
            }
            Some(Control::Report)
        }
        _ => None,
    }
}

/// One group record of an IGMPv3 or MLDv2 report: any exclude is a join (all
/// sources but some), an include of no sources a leave, of some a join; blocking
/// sources leaves the membership as it was (sources are not tracked).
fn record(kind: u8, sources: usize, mac: MacAddr, event: &mut dyn FnMut(Event)) {
    match kind {
        // MODE_IS_EXCLUDE, CHANGE_TO_EXCLUDE
        2 | 4 => event(Event::Join(mac)),
        // MODE_IS_INCLUDE, CHANGE_TO_INCLUDE, ALLOW_NEW_SOURCES
        1 | 3 | 5 if sources > 0 => event(Event::Join(mac)),
        1 | 3 => event(Event::Leave(mac)),
        _ => {}
    }
}

/// The value of an IGMPv3 code (max response, QQIC): RFC 3376 §4.1.1, 4.1.7.
fn igmp_code(c: u8) -> u32 {
    if c < 128 {
        c.into()
    } else {
        (u32::from(c & 0x0f) | 0x10) << (((c >> 4) & 7) + 3)
    }
}

/// The value of an MLDv2 maximum response code, in milliseconds: RFC 3810 §5.1.3.
fn mld_code(c: u16) -> u32 {
    if c < 32768 {
        c.into()
    } else {
        (u32::from(c & 0x0fff) | 0x1000) << (((c >> 12) & 7) + 3)
    }
}

/// Robustness × query interval + response time (RFC 3376 §8.4), with the
/// defaults where the query gives none.
fn membership_interval(robustness: u32, interval_secs: u32, response: Duration) -> Duration {
    if robustness == 0 || interval_secs == 0 {
        return MEMBERSHIP_INTERVAL.max(response);
    }
    let robustness = robustness.max(DEFAULT_ROBUSTNESS);
    Duration::from_secs(u64::from(robustness) * u64::from(interval_secs)) + response
}

fn read_ipv6(p: &[u8], event: &mut dyn FnMut(Event)) -> Option<Control> {
    if p.len() < 40 || p[0] >> 4 != 6 {
        return None;
    }
    let end = (40 + be16(p, 4)).min(p.len());
    let (mut next, mut at) = (p[6], 40);
    // MLD comes behind a hop-by-hop header (its router alert); allow a few
    // options headers, nothing else.
    for _ in 0..4 {
        match next {
            0 | 60 => {
                if at + 2 > end {
                    return None;
                }
                next = p[at];
                at += (usize::from(p[at + 1]) + 1) * 8;
            }
            58 if at <= end => return read_mld(&p[at..end], event),
            103 => {
                event(Event::Pim);
                return Some(Control::Query);
            }
            _ => return None,
        }
    }
    None
}

fn read_mld(b: &[u8], event: &mut dyn FnMut(Event)) -> Option<Control> {
    if b.len() < 8 {
        return None;
    }
    match b[0] {
        130 if b.len() >= 24 => {
            let (robustness, interval) = if b.len() >= 28 {
                (b[24] & 7, igmp_code(b[25]))
            } else {
                (0, 0)
            };
            let response = Duration::from_millis(mld_code(be16(b, 4) as u16).into());
            event(Event::Query(membership_interval(
                robustness.into(),
                interval,
                response,
            )));
            Some(Control::Query)
        }
        131 | 132 if b.len() >= 24 => {
            if let Some(mac) = group_mac_v6(&b[8..24]) {
                event(if b[0] == 131 {
                    Event::Join(mac)
                } else {
                    Event::Leave(mac)
                });
            }
            Some(Control::Report)
        }
        143 => {
            let mut at = 8;
            for _ in 0..be16(b, 6) {
                if at + 20 > b.len() {
                    break;
                }
                let (kind, aux, sources) = (b[at], usize::from(b[at + 1]), be16(b, at + 2));
                if let Some(mac) = group_mac_v6(&b[at + 4..at + 20]) {
                    record(kind, sources, mac, event);
                }
                at += 20 + 16 * sources + 4 * aux;
            }
            Some(Control::Report)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
