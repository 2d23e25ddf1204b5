//! The learning switch of one vnet.
//!
//! A frame's path through [`Switch::ingress`]: parse the header (untrusted) → check the
//! size → classify its VLAN by the ingress port's mode → learn the source → look up the
//! destination in that VLAN → a [`Forward`] decision. The caller then walks
//! [`Switch::egress`], which yields each destination port with the tagging it needs.
//!
//! Guarantees: a frame never leaves through its ingress port; it only reaches ports that
//! are members of its VLAN; every frame not forwarded is counted under one [`DropCause`].
//! A mirror destination ([`Switch::set_mirror_destination`]) is outside all of it: the
//! switch learns nothing from it, delivers nothing to it and drops what it sends.

mod counters;
mod mac_table;
pub mod mirror;
mod retag;
pub mod snoop;
mod vlan;

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde::Serialize;

pub use counters::{DropCause, Drops, PortCounters};
pub use mac_table::{Learned, MacLimits, MacRow, MacTable};
pub use retag::{retag, RETAG_HEADROOM};
pub use snoop::{Reach, SnoopCounters, SnoopReport};
pub use vlan::{is_valid_vid, InvalidVlan, Tagging, VlanMode, DEFAULT_VLAN, RESERVED_VLAN};

use crate::wire::{Frame, FrameError, MacAddr};
use vlan::VlanRule;

/// The hash map of the frame path. std's SipHash was 43% of the instructions per
/// forwarded frame (scripts/callgrind); foldhash is several times cheaper and still
/// seeded per process, so guests cannot aim collisions at the MAC table.
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Identifies a port within its vnet. Never that of another live port; ids are handed
/// out in order, so a removed port's id comes back only after the counter has gone
/// round all of `u32` (see [`Switch::add_port`]): a stale id names a newer port only
/// after some four billion ports came and went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct PortId(pub u32);

impl std::fmt::Display for PortId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Settings of one vnet's switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwitchConfig {
    /// Largest frame (header + payload, untagged, no FCS) the vnet forwards; a tagged
    /// frame may be 4 bytes longer.
    pub max_frame: usize,
    pub mac_limits: MacLimits,
    /// IGMP/MLD snooping ([`snoop`]): group traffic reaches members and routers only.
    pub snooping: bool,
}

impl SwitchConfig {
    /// The max frame for an IP MTU.
    pub fn max_frame_for_mtu(mtu: usize) -> usize {
        mtu + crate::wire::ethernet::HEADER_LEN
    }
}

impl Default for SwitchConfig {
    fn default() -> Self {
        SwitchConfig {
            max_frame: Self::max_frame_for_mtu(1500),
            mac_limits: MacLimits::default(),
            snooping: true,
        }
    }
}

/// A port as the switch sees it.
#[derive(Debug, Clone)]
pub struct Port {
    pub id: PortId,
    vlan_mode: VlanMode,
    rule: VlanRule,
    /// The address the port declared (vnet API SET_MAC). Flooded unicast for other
    /// addresses is not delivered to it unless it is promiscuous.
    mac: Option<MacAddr>,
    promiscuous: bool,
    /// Takes mirrored copies only: no member of any VLAN, its input dropped.
    mirror_destination: bool,
    pub counters: PortCounters,
}

impl Port {
    pub fn vlan_mode(&self) -> &VlanMode {
        &self.vlan_mode
    }
    pub fn mac(&self) -> Option<MacAddr> {
        self.mac
    }
    pub fn promiscuous(&self) -> bool {
        self.promiscuous
    }
    pub fn mirror_destination(&self) -> bool {
        self.mirror_destination
    }
    /// The VLAN untagged frames from this port belong to, if any.
    pub fn untagged_vlan(&self) -> Option<u16> {
        self.rule.classify(None).ok()
    }

    fn wants(&self, dst: MacAddr) -> bool {
        self.promiscuous || dst.is_multicast() || self.mac.is_none_or(|m| m == dst)
    }
}

/// Where a frame goes, decided by [`Switch::ingress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub ingress: PortId,
    pub vlan: u16,
    pub dst: MacAddr,
    /// The one known destination, or `None` to flood the VLAN.
    pub unicast: Option<PortId>,
    /// Which of the VLAN's ports a frame without a known destination goes to.
    pub reach: Reach,
}

/// The switch's verdict on one received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Forward(Forward),
    Drop(DropCause),
}

/// The port id does not exist in this vnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no port {0} on this vnet")]
pub struct NoSuchPort(pub PortId);

#[derive(Debug)]
pub struct Switch {
    config: SwitchConfig,
    ports: BTreeMap<PortId, Port>,
    /// Ports carrying each VLAN, so flooding costs the VLAN's members, not the vnet's.
    members: FastMap<u16, Vec<PortId>>,
    macs: MacTable,
    snoop: snoop::Snooping,
    /// The id [`Switch::add_port`] tries first (never 0).
    next_id: u32,
    /// How many ports are promiscuous: while none is, known unicast goes straight to
    /// its one port without looking at the others.
    promiscuous: usize,
    /// The port whose addresses are watched moving away (a VXLAN tunnel, whose own
    /// database must forget a station that shows up on a local port) and those that
    /// did since [`Switch::take_moved_away`], at most [`MOVES_KEPT`].
    watched: Option<PortId>,
    moved_away: Vec<MacAddr>,
}

/// Moves away from the watched port kept between two [`Switch::take_moved_away`]:
/// more in one turn are not reported (their stale entries then age out instead).
pub const MOVES_KEPT: usize = 64;

impl Switch {
    pub fn new(config: SwitchConfig) -> Self {
        Switch {
            config,
            ports: BTreeMap::new(),
            members: FastMap::default(),
            macs: MacTable::new(config.mac_limits),
            snoop: snoop::Snooping::new(
                config.snooping,
                config.mac_limits.total,
                config.mac_limits.per_port,
            ),
            next_id: 1,
            promiscuous: 0,
            watched: None,
            moved_away: Vec::new(),
        }
    }

    pub fn config(&self) -> &SwitchConfig {
        &self.config
    }

    /// Adds a port in `mode`; returns its new id, one no live port has: when the counter
    /// wraps, ids still in use are skipped, so an insert never replaces a live port.
    pub fn add_port(&mut self, mode: VlanMode) -> Result<PortId, InvalidVlan> {
        let rule = VlanRule::compile(&mode)?;
        let id = self.free_id();
        self.ports.insert(
            id,
            Port {
                id,
                vlan_mode: mode,
                rule,
                mac: None,
                promiscuous: false,
                mirror_destination: false,
                counters: PortCounters::default(),
            },
        );
        self.index_membership(id);
        Ok(id)
    }

    /// The next id in order that no live port has (0 is never one). Ends: a switch holds
    /// far fewer than `u32::MAX` ports. Not on the frame path.
    fn free_id(&mut self) -> PortId {
        loop {
            let id = PortId(self.next_id);
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if !self.ports.contains_key(&id) {
                return id;
            }
        }
    }

    /// A switch whose next port id is `next` (tests of the wrap-around).
    #[cfg(test)]
    pub(crate) fn with_next_id(config: SwitchConfig, next: u32) -> Self {
        Switch {
            next_id: next.max(1),
            ..Switch::new(config)
        }
    }

    /// Removes a port and everything learned on it; returns its final state.
    pub fn remove_port(&mut self, id: PortId) -> Result<Port, NoSuchPort> {
        let port = self.ports.remove(&id).ok_or(NoSuchPort(id))?;
        if port.promiscuous {
            self.promiscuous -= 1;
        }
        for members in self.members.values_mut() {
            members.retain(|p| *p != id);
        }
        self.members.retain(|_, m| !m.is_empty());
        self.macs.forget_port(id);
        self.snoop.forget_port(id);
        if self.watched == Some(id) {
            self.watch_moves_from(None);
        }
        Ok(port)
    }

    /// Reports the addresses that move from port `id` to another one (learned there
    /// on their first frame), for [`Switch::take_moved_away`]; `None` stops.
    pub fn watch_moves_from(&mut self, id: Option<PortId>) {
        self.watched = id;
        self.moved_away.clear();
    }

    /// The addresses that moved away from the watched port since the last call.
    pub fn take_moved_away(&mut self) -> std::vec::Drain<'_, MacAddr> {
        self.moved_away.drain(..)
    }

    /// Changes a port's VLAN mode; what it had learned is forgotten.
    pub fn set_vlan_mode(
        &mut self,
        now: Instant,
        id: PortId,
        mode: VlanMode,
    ) -> Result<(), SetPortError> {
        let rule = VlanRule::compile(&mode).map_err(SetPortError::Vlan)?;
        let port = self
            .ports
            .get_mut(&id)
            .ok_or(SetPortError::NoPort(NoSuchPort(id)))?;
        let mac = port.mac;
        let old_vlan = port.untagged_vlan();
        port.vlan_mode = mode;
        port.rule = rule;
        for members in self.members.values_mut() {
            members.retain(|p| *p != id);
        }
        self.macs.forget_port(id);
        self.forget_groups(id);
        if let (Some(mac), Some(v)) = (mac, old_vlan) {
            self.macs.forget(v, mac);
        }
        self.index_membership(id);
        if let Some(mac) = mac {
            self.pin_mac(now, id, mac);
        }
        Ok(())
    }

    /// Declares the port's own address: it is pinned in the table and unicast flooding
    /// to other addresses stops reaching the port (unless promiscuous).
    pub fn set_mac(&mut self, now: Instant, id: PortId, mac: MacAddr) -> Result<(), SetPortError> {
        if !mac.is_learnable() {
            return Err(SetPortError::BadMac(mac));
        }
        let port = self
            .ports
            .get_mut(&id)
            .ok_or(SetPortError::NoPort(NoSuchPort(id)))?;
        if let (Some(old), Some(v)) = (port.mac, port.untagged_vlan()) {
            self.macs.forget(v, old);
        }
        port.mac = Some(mac);
        self.pin_mac(now, id, mac);
        Ok(())
    }

    fn pin_mac(&mut self, now: Instant, id: PortId, mac: MacAddr) {
        let port = &self.ports[&id];
        if port.mirror_destination {
            return;
        }
        if let Some(v) = port.untagged_vlan() {
            self.macs.pin(now, v, mac, id);
        }
    }

    pub fn set_promiscuous(&mut self, id: PortId, on: bool) -> Result<(), NoSuchPort> {
        let port = self.ports.get_mut(&id).ok_or(NoSuchPort(id))?;
        match (port.promiscuous, on) {
            (false, true) => self.promiscuous += 1,
            (true, false) => self.promiscuous -= 1,
            _ => {}
        }
        port.promiscuous = on;
        Ok(())
    }

    /// Makes port `id` a mirror destination (`on`) or an ordinary port again. As one
    /// it leaves every VLAN's members and forgets its addresses, so neither flooding
    /// nor a lookup reaches it, and [`Switch::ingress`] drops its frames
    /// ([`DropCause::MirrorPort`]). Back, it rejoins its VLANs and pins its declared
    /// address again.
    pub fn set_mirror_destination(
        &mut self,
        now: Instant,
        id: PortId,
        on: bool,
    ) -> Result<(), NoSuchPort> {
        let port = self.ports.get_mut(&id).ok_or(NoSuchPort(id))?;
        if port.mirror_destination == on {
            return Ok(());
        }
        port.mirror_destination = on;
        let mac = port.mac;
        if on {
            for members in self.members.values_mut() {
                members.retain(|p| *p != id);
            }
            self.members.retain(|_, m| !m.is_empty());
            self.macs.forget_port(id);
            self.forget_groups(id);
        } else {
            self.index_membership(id);
            if let Some(mac) = mac {
                self.pin_mac(now, id, mac);
            }
        }
        Ok(())
    }

    fn index_membership(&mut self, id: PortId) {
        let port = &self.ports[&id];
        if port.mirror_destination {
            return;
        }
        let rule = &port.rule;
        let vlans: Vec<u16> = match rule {
            VlanRule::Access(v) => vec![*v],
            VlanRule::Trunk { allowed, .. } => allowed.iter().collect(),
        };
        for v in vlans {
            self.members.entry(v).or_default().push(id);
        }
    }

    pub fn port(&self, id: PortId) -> Option<&Port> {
        self.ports.get(&id)
    }

    pub fn port_mut(&mut self, id: PortId) -> Option<&mut Port> {
        self.ports.get_mut(&id)
    }

    pub fn ports(&self) -> impl Iterator<Item = &Port> {
        self.ports.values()
    }

    pub fn mac_table(&self) -> &MacTable {
        &self.macs
    }

    /// Ages the MAC table and the group memberships; call about once a second.
    pub fn expire(&mut self, now: Instant) -> usize {
        self.snoop.expire(now);
        self.macs.expire(now)
    }

    /// The group memberships a port reported are forgotten (not whether it is a
    /// static router: that is the port's kind, set by its owner).
    fn forget_groups(&mut self, id: PortId) {
        let is_static = self.snoop.is_static_router(id);
        self.snoop.forget_port(id);
        if is_static {
            self.snoop.set_static_router(id, true);
        }
    }

    /// Makes port `id` a multicast-router port for good (the vnet's services and
    /// uplink: they take all group traffic), or an ordinary one.
    pub fn set_multicast_router(&mut self, id: PortId, on: bool) -> Result<(), NoSuchPort> {
        if !self.ports.contains_key(&id) {
            return Err(NoSuchPort(id));
        }
        self.snoop.set_static_router(id, on);
        Ok(())
    }

    /// Turns IGMP/MLD snooping on or off live; off forgets what it learned.
    pub fn set_snooping(&mut self, on: bool) {
        self.config.snooping = on;
        self.snoop.set_enabled(on);
    }

    /// What snooping knows and counted.
    pub fn snooping(&self) -> &snoop::Snooping {
        &self.snoop
    }

    /// Counts a frame the port's backend could not even deliver as a frame.
    pub fn count_drop(&mut self, id: PortId, cause: DropCause) {
        if let Some(p) = self.ports.get_mut(&id) {
            p.counters.drops.add(cause);
        }
    }

    /// Counts a frame that [`Switch::ingress`] forwarded (`len` bytes) as dropped after
    /// all, by a policy that needed the switch's decision (storm control of flooded
    /// frames): its rx count is taken back, so it is still counted once.
    pub fn revoke_rx(&mut self, id: PortId, len: usize, cause: DropCause) {
        if let Some(p) = self.ports.get_mut(&id) {
            p.counters.rx_frames = p.counters.rx_frames.saturating_sub(1);
            p.counters.rx_bytes = p.counters.rx_bytes.saturating_sub(len as u64);
            p.counters.drops.add(cause);
        }
    }

    /// Decides where a frame received on `ingress` goes. Counts it (rx, or a drop).
    pub fn ingress(&mut self, now: Instant, ingress: PortId, bytes: &[u8]) -> Verdict {
        self.ingress_checked(now, ingress, bytes, bytes.len())
    }

    /// [`Switch::ingress`] for a GSO super-frame from an offload-capable port: the
    /// frame may exceed the max frame, but each of its segments (`segment_len` bytes:
    /// headers plus `gso_size`) must fit.
    pub fn ingress_gso(
        &mut self,
        now: Instant,
        ingress: PortId,
        bytes: &[u8],
        segment_len: usize,
    ) -> Verdict {
        self.ingress_checked(now, ingress, bytes, segment_len)
    }

    fn ingress_checked(
        &mut self,
        now: Instant,
        ingress: PortId,
        bytes: &[u8],
        wire_len: usize,
    ) -> Verdict {
        let Some(port) = self.ports.get_mut(&ingress) else {
            return Verdict::Drop(DropCause::Malformed);
        };
        if port.mirror_destination {
            port.counters.drops.add(DropCause::MirrorPort);
            return Verdict::Drop(DropCause::MirrorPort);
        }
        let verdict = decide(&self.config, port, bytes, wire_len).and_then(|(vlan, src, dst)| {
            if let Learned::Moved { from } = self.macs.learn(now, vlan, src, ingress) {
                if self.watched == Some(from) && self.moved_away.len() < MOVES_KEPT {
                    self.moved_away.push(src);
                }
            }
            let unicast = if dst.is_multicast() {
                None
            } else {
                self.macs.lookup(now, vlan, dst)
            };
            if unicast == Some(ingress) {
                return Err(DropCause::SamePort);
            }
            let reach = if dst.is_multicast() {
                self.snoop.classify(now, ingress, vlan, dst, bytes)
            } else {
                Reach::All
            };
            Ok(Forward {
                ingress,
                vlan,
                dst,
                unicast,
                reach,
            })
        });
        let counters = &mut self
            .ports
            .get_mut(&ingress)
            .expect("checked above")
            .counters;
        match verdict {
            Ok(fwd) => {
                counters.rx_frames += 1;
                counters.rx_bytes += bytes.len() as u64;
                Verdict::Forward(fwd)
            }
            Err(cause) => {
                counters.drops.add(cause);
                Verdict::Drop(cause)
            }
        }
    }

    /// The ports a forwarded frame goes out of, each with the tagging it needs there.
    pub fn egress<'a>(
        &'a self,
        fwd: &'a Forward,
    ) -> Egress<impl Iterator<Item = (PortId, Tagging)> + 'a> {
        // Known unicast with nobody listening in: one lookup, whatever the port count.
        match fwd.unicast.filter(|_| self.promiscuous == 0) {
            Some(dst) => Egress::Direct(
                self.ports
                    .get(&dst)
                    .and_then(|port| port.rule.egress(fwd.vlan).map(|t| (port.id, t))),
            ),
            None => Egress::Spread(self.spread(fwd)),
        }
    }

    /// [`Switch::egress`] of everything but direct unicast: a flood, or snooped group
    /// traffic.
    fn spread<'a>(&'a self, fwd: &'a Forward) -> impl Iterator<Item = (PortId, Tagging)> + 'a {
        let members = match fwd.reach {
            Reach::All => self
                .members
                .get(&fwd.vlan)
                .map(Vec::as_slice)
                .unwrap_or(&[]),
            _ => &[][..],
        };
        // Snooped group traffic: its members and the routers, each once, whatever
        // the VLAN's size.
        let (group, routers) = match fwd.reach {
            Reach::Group => (
                Some(self.snoop.members(fwd.vlan, fwd.dst)),
                self.snoop.routers(),
            ),
            Reach::Routers => (None, self.snoop.routers()),
            Reach::All => (None, &[][..]),
        };
        let group_ports = group.clone().into_iter().flatten();
        let other_routers = routers
            .iter()
            .copied()
            .filter(move |r| !group.clone().into_iter().flatten().any(|m| m == *r));
        let snooped = group_ports.chain(other_routers).filter_map(move |id| {
            if id == fwd.ingress {
                return None;
            }
            let port = self.ports.get(&id)?;
            port.rule.egress(fwd.vlan).map(|t| (id, t))
        });
        snooped.chain(members.iter().filter_map(move |id| {
            if *id == fwd.ingress {
                return None;
            }
            let port = &self.ports[id];
            let deliver = match fwd.unicast {
                Some(dst) => dst == *id || port.promiscuous,
                None => port.wants(fwd.dst),
            };
            if !deliver {
                return None;
            }
            port.rule.egress(fwd.vlan).map(|t| (*id, t))
        }))
    }
}

/// The ports of [`Switch::egress`]. Direct unicast is a plain `Option`, apart from the
/// chain a flood or group needs: filling the data plane's list from that chain cost
/// known unicast about 100 instructions per frame (`scripts/callgrind`).
pub enum Egress<S> {
    Direct(Option<(PortId, Tagging)>),
    Spread(S),
}

impl<S: Iterator<Item = (PortId, Tagging)>> Iterator for Egress<S> {
    type Item = (PortId, Tagging);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Egress::Direct(one) => one.take(),
            Egress::Spread(ports) => ports.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            Egress::Direct(one) => (one.is_some() as usize, Some(one.is_some() as usize)),
            Egress::Spread(ports) => ports.size_hint(),
        }
    }
}

fn decide(
    config: &SwitchConfig,
    port: &Port,
    bytes: &[u8],
    wire_len: usize,
) -> Result<(u16, MacAddr, MacAddr), DropCause> {
    let frame = Frame::parse(bytes).map_err(|e| match e {
        FrameError::Runt(_) => DropCause::Runt,
        FrameError::TruncatedTag(_) => DropCause::BadTag,
    })?;
    let tag = frame.vlan_tag();
    let limit = config.max_frame + if tag.is_some() { 4 } else { 0 };
    if wire_len > limit {
        return Err(DropCause::Oversize);
    }
    let vlan = port.rule.classify(tag)?;
    Ok((vlan, frame.src(), frame.dst()))
}

/// A port setting was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SetPortError {
    #[error(transparent)]
    NoPort(NoSuchPort),
    #[error(transparent)]
    Vlan(InvalidVlan),
    #[error("{0} cannot be a port address: use a unicast MAC that is not all zeros")]
    BadMac(MacAddr),
}

#[cfg(test)]
mod tests;
