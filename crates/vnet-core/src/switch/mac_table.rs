//! The MAC table: where each (VLAN, MAC) was last seen.
//!
//! Invariants: an address lives on at most one port per VLAN; a dynamic entry older than
//! the aging time is never returned; `per_port` always equals the number of dynamic
//! entries each port owns; neither cap is ever exceeded.

use std::time::{Duration, Instant};

use crate::wire::MacAddr;

use super::{FastMap, PortId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    port: PortId,
    last_seen: Instant,
    /// Set by a port that declared its own address (vnet API SET_MAC): never ages or moves.
    fixed: bool,
}

/// Limits on learning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacLimits {
    pub aging: Duration,
    pub per_port: usize,
    pub total: usize,
}

impl Default for MacLimits {
    fn default() -> Self {
        MacLimits {
            aging: Duration::from_secs(300),
            per_port: 1024,
            total: 16384,
        }
    }
}

/// What learning a source address did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// Already known on this port; its age was refreshed.
    Refreshed,
    /// Newly learned.
    New,
    /// Moved here from another port (a VM migrated or re-attached).
    Moved { from: PortId },
    /// Not learned: a cap is reached, or another port owns the address as fixed.
    Refused,
}

/// One row of the table as reported to users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacRow {
    pub vlan: u16,
    pub mac: MacAddr,
    pub port: PortId,
    pub age: Duration,
    pub fixed: bool,
}

#[derive(Debug, Default)]
pub struct MacTable {
    limits: MacLimits,
    entries: FastMap<(u16, MacAddr), Entry>,
    per_port: FastMap<PortId, usize>,
    /// New addresses not learned because the table held `limits.total` entries.
    refused_full: u64,
}

impl MacTable {
    pub fn new(limits: MacLimits) -> Self {
        MacTable {
            limits,
            entries: FastMap::default(),
            per_port: FastMap::default(),
            refused_full: 0,
        }
    }

    /// How many new addresses were not learned because the table was full (their
    /// frames still go everywhere an unknown address's go: flooded).
    pub fn refused_full(&self) -> u64 {
        self.refused_full
    }

    pub fn limits(&self) -> MacLimits {
        self.limits
    }

    fn expired(&self, e: &Entry, now: Instant) -> bool {
        !e.fixed && now.saturating_duration_since(e.last_seen) >= self.limits.aging
    }

    /// Records that `mac` was seen as a source on `port` in `vlan`.
    pub fn learn(&mut self, now: Instant, vlan: u16, mac: MacAddr, port: PortId) -> Learned {
        if !mac.is_learnable() {
            return Learned::Refused;
        }
        let key = (vlan, mac);
        // The common case, a known address on its port, costs one lookup.
        let known = match self.entries.get_mut(&key) {
            Some(e) if e.port == port => {
                e.last_seen = now;
                return Learned::Refreshed;
            }
            known => known.copied(),
        };
        if let Some(e) = known {
            if e.fixed {
                return Learned::Refused;
            }
            if self.port_count(port) >= self.limits.per_port {
                return Learned::Refused;
            }
            self.release(e.port);
            self.claim(port);
            self.entries.insert(
                key,
                Entry {
                    port,
                    last_seen: now,
                    fixed: false,
                },
            );
            return Learned::Moved { from: e.port };
        }
        if self.entries.len() >= self.limits.total {
            self.refused_full += 1;
            return Learned::Refused;
        }
        if self.port_count(port) >= self.limits.per_port {
            return Learned::Refused;
        }
        self.claim(port);
        self.entries.insert(
            key,
            Entry {
                port,
                last_seen: now,
                fixed: false,
            },
        );
        Learned::New
    }

    /// Pins `mac` to `port` in `vlan` (a port that declared its address). Replaces any
    /// learned entry; counts toward the global cap but not the port's learning cap.
    pub fn pin(&mut self, now: Instant, vlan: u16, mac: MacAddr, port: PortId) {
        if let Some(old) = self.entries.insert(
            (vlan, mac),
            Entry {
                port,
                last_seen: now,
                fixed: true,
            },
        ) {
            if !old.fixed {
                self.release(old.port);
            }
        }
    }

    /// The port that owns `mac` in `vlan`, if known and not aged out.
    pub fn lookup(&self, now: Instant, vlan: u16, mac: MacAddr) -> Option<PortId> {
        self.entries
            .get(&(vlan, mac))
            .filter(|e| !self.expired(e, now))
            .map(|e| e.port)
    }

    /// Removes aged-out entries; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.entries.len();
        let aging = self.limits.aging;
        let per_port = &mut self.per_port;
        self.entries.retain(|_, e| {
            let keep = e.fixed || now.saturating_duration_since(e.last_seen) < aging;
            if !keep {
                release(per_port, e.port);
            }
            keep
        });
        before - self.entries.len()
    }

    /// Forgets everything `port` owned (the port was removed).
    pub fn forget_port(&mut self, port: PortId) {
        self.entries.retain(|_, e| e.port != port);
        self.per_port.remove(&port);
    }

    /// Forgets one pinned or learned address.
    pub fn forget(&mut self, vlan: u16, mac: MacAddr) {
        if let Some(e) = self.entries.remove(&(vlan, mac)) {
            if !e.fixed {
                self.release(e.port);
            }
        }
    }

    /// Dynamic entries owned by `port`.
    pub fn port_count(&self, port: PortId) -> usize {
        self.per_port.get(&port).copied().unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Live entries, sorted by VLAN then MAC.
    pub fn rows(&self, now: Instant) -> Vec<MacRow> {
        let mut rows: Vec<MacRow> = self
            .entries
            .iter()
            .filter(|(_, e)| !self.expired(e, now))
            .map(|(&(vlan, mac), e)| MacRow {
                vlan,
                mac,
                port: e.port,
                age: now.saturating_duration_since(e.last_seen),
                fixed: e.fixed,
            })
            .collect();
        rows.sort_by_key(|r| (r.vlan, r.mac));
        rows
    }

    fn claim(&mut self, port: PortId) {
        *self.per_port.entry(port).or_default() += 1;
    }

    fn release(&mut self, port: PortId) {
        release(&mut self.per_port, port);
    }
}

fn release(per_port: &mut FastMap<PortId, usize>, port: PortId) {
    if let Some(n) = per_port.get_mut(&port) {
        *n -= 1;
        if *n == 0 {
            per_port.remove(&port);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mac(n: u8) -> MacAddr {
        MacAddr([0x52, 0x54, 0, 0, 0, n])
    }

    #[test]
    fn learns_refreshes_and_ages() {
        let t0 = Instant::now();
        let mut t = MacTable::new(MacLimits::default());
        assert_eq!(t.learn(t0, 1, mac(1), PortId(1)), Learned::New);
        assert_eq!(
            t.learn(t0 + Duration::from_secs(200), 1, mac(1), PortId(1)),
            Learned::Refreshed
        );
        assert_eq!(
            t.lookup(t0 + Duration::from_secs(499), 1, mac(1)),
            Some(PortId(1))
        );
        assert_eq!(t.lookup(t0 + Duration::from_secs(500), 1, mac(1)), None);
        assert_eq!(t.expire(t0 + Duration::from_secs(500)), 1);
        assert!(t.is_empty());
        assert_eq!(t.port_count(PortId(1)), 0);
    }

    #[test]
    fn vlans_are_separate_tables() {
        let t0 = Instant::now();
        let mut t = MacTable::new(MacLimits::default());
        t.learn(t0, 10, mac(1), PortId(1));
        assert_eq!(t.lookup(t0, 20, mac(1)), None);
        assert_eq!(t.learn(t0, 20, mac(1), PortId(2)), Learned::New);
        assert_eq!(t.lookup(t0, 10, mac(1)), Some(PortId(1)));
    }

    #[test]
    fn a_mac_moves_at_once() {
        let t0 = Instant::now();
        let mut t = MacTable::new(MacLimits::default());
        t.learn(t0, 1, mac(1), PortId(1));
        assert_eq!(
            t.learn(t0, 1, mac(1), PortId(2)),
            Learned::Moved { from: PortId(1) }
        );
        assert_eq!(t.lookup(t0, 1, mac(1)), Some(PortId(2)));
        assert_eq!((t.port_count(PortId(1)), t.port_count(PortId(2))), (0, 1));
    }

    #[test]
    fn caps_refuse_learning() {
        let t0 = Instant::now();
        let mut t = MacTable::new(MacLimits {
            aging: Duration::from_secs(300),
            per_port: 2,
            total: 3,
        });
        assert_eq!(t.learn(t0, 1, mac(1), PortId(1)), Learned::New);
        assert_eq!(t.learn(t0, 1, mac(2), PortId(1)), Learned::New);
        assert_eq!(t.learn(t0, 1, mac(3), PortId(1)), Learned::Refused);
        assert_eq!(t.refused_full(), 0, "a port's cap is not the table's");
        assert_eq!(t.learn(t0, 1, mac(3), PortId(2)), Learned::New);
        assert_eq!(
            t.learn(t0, 1, mac(4), PortId(3)),
            Learned::Refused,
            "global cap"
        );
        assert_eq!(t.refused_full(), 1);
        // Known addresses still refresh in a full table.
        assert_eq!(t.learn(t0, 1, mac(3), PortId(2)), Learned::Refreshed);
        assert_eq!(t.refused_full(), 1);
        assert_eq!(
            t.learn(t0, 1, MacAddr::BROADCAST, PortId(3)),
            Learned::Refused
        );
    }

    #[test]
    fn pinned_addresses_neither_age_nor_move() {
        let t0 = Instant::now();
        let mut t = MacTable::new(MacLimits::default());
        t.learn(t0, 1, mac(1), PortId(1));
        t.pin(t0, 1, mac(1), PortId(2));
        assert_eq!(t.port_count(PortId(1)), 0);
        assert_eq!(t.learn(t0, 1, mac(1), PortId(3)), Learned::Refused);
        assert_eq!(
            t.lookup(t0 + Duration::from_secs(10_000), 1, mac(1)),
            Some(PortId(2))
        );
        t.forget_port(PortId(2));
        assert_eq!(t.lookup(t0, 1, mac(1)), None);
    }

    proptest! {
        /// Any sequence of operations keeps the table's invariants.
        #[test]
        fn invariants_hold(ops in proptest::collection::vec((0u8..4, 0u8..8, 1u32..5, 0u64..700), 1..200)) {
            let t0 = Instant::now();
            let limits = MacLimits { aging: Duration::from_secs(300), per_port: 3, total: 6 };
            let mut t = MacTable::new(limits);
            let mut now = t0;
            for (op, m, p, dt) in ops {
                now += Duration::from_millis(dt * 100);
                let (mac, port) = (mac(m), PortId(p));
                match op {
                    0 | 1 => {
                        let r = t.learn(now, 1, mac, port);
                        if r != Learned::Refused {
                            prop_assert_eq!(t.lookup(now, 1, mac), Some(port));
                        }
                    }
                    2 => { t.expire(now); }
                    _ => t.forget_port(port),
                }
                prop_assert!(t.len() <= limits.total);
                for p in 1..5 {
                    let owned = t.entries.values().filter(|e| e.port == PortId(p) && !e.fixed).count();
                    prop_assert_eq!(owned, t.port_count(PortId(p)));
                    prop_assert!(owned <= limits.per_port);
                }
            }
        }
    }
}
