//! The forwarding database of a VXLAN tunnel: behind which remote VTEP each MAC
//! address lives, and the remotes themselves (the `bridge fdb` of one vnet's VNI).
//!
//! As in Linux's `vxlan` driver, the remotes are where broadcast, unknown unicast and
//! multicast go (head-end replication: one copy each), and a frame for a known MAC
//! goes to its one VTEP. Addresses are learned from the inner source of what arrives,
//! age like the switch's MAC table, and may be pinned (static entries never age and
//! never move). Only the listed remotes (and the VTEPs of static entries) are heard:
//! a datagram from anyone else is refused, so that a stranger who can reach the UDP
//! port cannot inject frames. A tunnel on a multicast group hears every sender (the
//! group is the membership list).
//!
//! Each remote keeps its own counters (frames and bytes each way, drops), which the
//! API and `/metrics` show.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::switch::FastMap;
use crate::wire::MacAddr;

/// Traffic through one remote VTEP. "rx" arrived from it, "tx" was sent to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemoteCounters {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Datagrams from it that were dropped, and frames to it the socket refused.
    pub drops: u64,
}

/// One remote VTEP the tunnel floods to, with its counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub addr: IpAddr,
    pub counters: RemoteCounters,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    remote: IpAddr,
    last_seen: Instant,
    fixed: bool,
}

/// One row of the database as reported to users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbRow {
    pub mac: MacAddr,
    pub remote: IpAddr,
    pub age: Duration,
    /// Pinned through the API or the config (never ages, never moves).
    pub fixed: bool,
}

/// Where one frame leaving through the tunnel goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// The VTEP its destination MAC lives behind.
    One(IpAddr),
    /// Broadcast, multicast or unknown unicast: every remote (or the group).
    Flood,
}

/// Why a datagram from a VTEP was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The sender is neither a remote nor behind a static entry.
    UnknownRemote,
}

/// Why a static entry cannot be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    #[error("{0} is not a unicast MAC address: only unicast addresses live behind one VTEP")]
    NotUnicast(MacAddr),
    #[error("the tunnel's forwarding database is full ({0} entries)")]
    Full(usize),
}

/// A tunnel's remotes and MAC addresses.
#[derive(Debug)]
pub struct Fdb {
    remotes: Vec<Remote>,
    entries: FastMap<MacAddr, Entry>,
    aging: Duration,
    max: usize,
    /// Any sender is heard (a multicast group): learned senders are not listed remotes.
    open: bool,
    /// New addresses not learned because the table was full.
    pub refused_full: u64,
}

impl Fdb {
    /// An empty database whose learned entries live `aging` without traffic, holding
    /// at most `max` entries; `open`: hear any sender (a multicast group).
    pub fn new(aging: Duration, max: usize, open: bool) -> Self {
        Fdb {
            remotes: Vec::new(),
            entries: FastMap::default(),
            aging,
            max,
            open,
            refused_full: 0,
        }
    }

    pub fn remotes(&self) -> &[Remote] {
        &self.remotes
    }

    /// Adds a remote to flood to; `false` if it is one already.
    pub fn add_remote(&mut self, addr: IpAddr) -> bool {
        if self.remotes.iter().any(|r| r.addr == addr) {
            return false;
        }
        self.remotes.push(Remote {
            addr,
            counters: RemoteCounters::default(),
        });
        true
    }

    /// Removes a remote and the addresses learned behind it (static ones stay);
    /// `false` if it was none.
    pub fn remove_remote(&mut self, addr: IpAddr) -> bool {
        let before = self.remotes.len();
        self.remotes.retain(|r| r.addr != addr);
        self.entries.retain(|_, e| e.fixed || e.remote != addr);
        self.remotes.len() != before
    }

    /// Checks who sent a datagram and counts it (`bytes` of inner frame).
    pub fn hear(&mut self, from: IpAddr, bytes: usize) -> Result<(), Refusal> {
        if let Some(r) = self.remotes.iter_mut().find(|r| r.addr == from) {
            r.counters.rx_frames += 1;
            r.counters.rx_bytes += bytes as u64;
            return Ok(());
        }
        if self.open || self.entries.values().any(|e| e.fixed && e.remote == from) {
            return Ok(());
        }
        Err(Refusal::UnknownRemote)
    }

    /// Counts a datagram from `from` that was dropped (malformed, oversize).
    pub fn count_drop(&mut self, from: IpAddr) {
        if let Some(r) = self.remotes.iter_mut().find(|r| r.addr == from) {
            r.counters.drops += 1;
        }
    }

    /// Counts a frame sent to `to` (`sent`), or refused by the socket.
    pub fn count_tx(&mut self, to: IpAddr, bytes: usize, sent: bool) {
        if let Some(r) = self.remotes.iter_mut().find(|r| r.addr == to) {
            if sent {
                r.counters.tx_frames += 1;
                r.counters.tx_bytes += bytes as u64;
            } else {
                r.counters.drops += 1;
            }
        }
    }

    /// Learns that `mac` (an inner source address) lives behind `remote`. Group and
    /// zero addresses are never learned; a static entry never moves.
    pub fn learn(&mut self, now: Instant, mac: MacAddr, remote: IpAddr) {
        if !mac.is_learnable() {
            return;
        }
        if let Some(e) = self.entries.get_mut(&mac) {
            if !e.fixed {
                e.remote = remote;
                e.last_seen = now;
            }
            return;
        }
        if self.entries.len() >= self.max {
            self.refused_full += 1;
            return;
        }
        self.entries.insert(
            mac,
            Entry {
                remote,
                last_seen: now,
                fixed: false,
            },
        );
    }

    /// Where a frame for `dst` goes.
    pub fn destination(&self, now: Instant, dst: MacAddr) -> Destination {
        match self.entries.get(&dst) {
            Some(e) if e.fixed || now.saturating_duration_since(e.last_seen) < self.aging => {
                Destination::One(e.remote)
            }
            _ => Destination::Flood,
        }
    }

    /// Pins `mac` behind `remote` (replacing what was known of it).
    pub fn pin(&mut self, now: Instant, mac: MacAddr, remote: IpAddr) -> Result<(), PinError> {
        if !mac.is_learnable() {
            return Err(PinError::NotUnicast(mac));
        }
        if !self.entries.contains_key(&mac) && self.entries.len() >= self.max {
            return Err(PinError::Full(self.max));
        }
        self.entries.insert(
            mac,
            Entry {
                remote,
                last_seen: now,
                fixed: true,
            },
        );
        Ok(())
    }

    /// Removes `mac`'s entry, static or learned; `false` if there was none.
    pub fn unpin(&mut self, mac: MacAddr) -> bool {
        self.entries.remove(&mac).is_some()
    }

    /// Forgets where `mac` was learned (it showed up on a local port: it lives here
    /// now); a static entry stays. `true` if an entry went.
    pub fn forget_learned(&mut self, mac: MacAddr) -> bool {
        if self.entries.get(&mac).is_some_and(|e| !e.fixed) {
            self.entries.remove(&mac);
            return true;
        }
        false
    }

    /// Drops learned entries older than the aging time.
    pub fn age(&mut self, now: Instant) {
        let aging = self.aging;
        self.entries
            .retain(|_, e| e.fixed || now.saturating_duration_since(e.last_seen) < aging);
    }

    /// The live entries, sorted by MAC.
    pub fn rows(&self, now: Instant) -> Vec<FdbRow> {
        let mut rows: Vec<FdbRow> = self
            .entries
            .iter()
            .map(|(mac, e)| FdbRow {
                mac: *mac,
                remote: e.remote,
                age: now.saturating_duration_since(e.last_seen),
                fixed: e.fixed,
            })
            .filter(|r| r.fixed || r.age < self.aging)
            .collect();
        rows.sort_by_key(|r| r.mac);
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
    const STRANGER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9));
    const VM: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);

    fn fdb() -> Fdb {
        let mut f = Fdb::new(Duration::from_secs(300), 4, false);
        f.add_remote(A);
        f.add_remote(B);
        f
    }

    #[test]
    fn unknown_destinations_flood_and_learned_ones_go_to_their_vtep() {
        let now = Instant::now();
        let mut f = fdb();
        assert_eq!(f.destination(now, VM), Destination::Flood);
        f.learn(now, VM, B);
        assert_eq!(f.destination(now, VM), Destination::One(B));
        // The station moves to another host: the next frame from there moves it.
        f.learn(now, VM, A);
        assert_eq!(f.destination(now, VM), Destination::One(A));
        // Group and zero addresses are never learned.
        f.learn(now, MacAddr::BROADCAST, A);
        f.learn(now, MacAddr([0; 6]), A);
        assert_eq!(f.rows(now).len(), 1);
    }

    #[test]
    fn learned_entries_age_and_static_ones_stay_put() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(301);
        let mut f = fdb();
        let pinned = MacAddr([2, 0, 0, 0, 0, 9]);
        f.learn(t0, VM, A);
        f.pin(t0, pinned, B).unwrap();
        // A static entry does not move when its MAC shows up elsewhere.
        f.learn(t0, pinned, A);
        assert_eq!(f.destination(t0, pinned), Destination::One(B));
        assert_eq!(f.destination(later, VM), Destination::Flood);
        f.age(later);
        let rows = f.rows(later);
        assert_eq!(rows.len(), 1);
        assert!(rows[0].fixed && rows[0].mac == pinned);
        assert!(f.unpin(pinned) && !f.unpin(pinned));
        assert_eq!(
            f.pin(t0, MacAddr::BROADCAST, A),
            Err(PinError::NotUnicast(MacAddr::BROADCAST))
        );
    }

    #[test]
    fn only_remotes_are_heard_and_each_is_counted() {
        let mut f = fdb();
        assert_eq!(f.hear(A, 100), Ok(()));
        assert_eq!(f.hear(STRANGER, 100), Err(Refusal::UnknownRemote));
        f.count_drop(A);
        f.count_tx(B, 60, true);
        f.count_tx(B, 60, false);
        let a = f.remotes()[0].counters;
        let b = f.remotes()[1].counters;
        assert_eq!((a.rx_frames, a.rx_bytes, a.drops), (1, 100, 1));
        assert_eq!((b.tx_frames, b.tx_bytes, b.drops), (1, 60, 1));
        // A static entry's VTEP is heard; a multicast tunnel hears everyone.
        f.pin(Instant::now(), VM, STRANGER).unwrap();
        assert_eq!(f.hear(STRANGER, 1), Ok(()));
        let mut group = Fdb::new(Duration::from_secs(1), 4, true);
        assert_eq!(group.hear(STRANGER, 1), Ok(()));
    }

    #[test]
    fn removing_a_remote_forgets_what_was_learned_behind_it() {
        let now = Instant::now();
        let mut f = fdb();
        f.learn(now, VM, A);
        f.pin(now, MacAddr([2, 0, 0, 0, 0, 9]), A).unwrap();
        assert!(f.remove_remote(A) && !f.remove_remote(A));
        assert!(!f.add_remote(B));
        assert_eq!(f.destination(now, VM), Destination::Flood);
        assert_eq!(f.rows(now).len(), 1, "the static entry stays");
    }

    #[test]
    fn a_station_that_shows_up_locally_is_forgotten_unless_pinned() {
        let now = Instant::now();
        let mut f = fdb();
        let pinned = MacAddr([2, 0, 0, 0, 0, 9]);
        f.learn(now, VM, A);
        f.pin(now, pinned, B).unwrap();
        assert!(f.forget_learned(VM) && !f.forget_learned(VM));
        assert_eq!(f.destination(now, VM), Destination::Flood);
        assert!(!f.forget_learned(pinned));
        assert_eq!(f.destination(now, pinned), Destination::One(B));
    }

    #[test]
    fn the_table_is_bounded() {
        let now = Instant::now();
        let mut f = fdb();
        for i in 0..6u8 {
            f.learn(now, MacAddr([2, 0, 0, 0, 0, i]), A);
        }
        assert_eq!(f.rows(now).len(), 4);
        assert_eq!(f.refused_full, 2);
        assert_eq!(
            f.pin(now, MacAddr([2, 0, 0, 0, 1, 1]), A),
            Err(PinError::Full(4))
        );
        // Removing an entry makes room.
        assert!(f.unpin(MacAddr([2, 0, 0, 0, 0, 0])));
        assert!(f.pin(now, MacAddr([2, 0, 0, 0, 1, 1]), A).is_ok());
    }
}
