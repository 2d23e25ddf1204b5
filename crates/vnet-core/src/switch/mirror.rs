//! Mirrors (SPAN): which ports' frames are copied to which mirror destinations.
//!
//! A [`MirrorTable`] is built from the mirrors whose ports all exist ([`Mirror`], ports
//! resolved by the caller) and answers, per frame, the copies due: for a frame a port
//! sent into the vnet ([`Side::Ingress`]) and for each port the vnet delivers it to
//! ([`Side::Egress`]). Between [`MirrorTable::start_frame`] calls each destination is
//! due once, however many sources or mirrors see the frame: a flood from a mirrored
//! port to other mirrored ports reaches an IDS once, not once per port. The counters
//! of a mirror (copies and drops, charged to the first mirror that asked for the copy)
//! outlive rebuilds of the table while its name is kept.
//!
//! The table is empty when no mirror is active: the frame path checks that and
//! nothing else.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{FastMap, PortId};

/// Which of a source port's frames a mirror copies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MirrorDirection {
    /// What the port sent into the vnet.
    In,
    /// What the vnet delivered to the port.
    Out,
    /// Both.
    #[default]
    Both,
}

impl MirrorDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            MirrorDirection::In => "in",
            MirrorDirection::Out => "out",
            MirrorDirection::Both => "both",
        }
    }

    fn copies(self, side: Side) -> bool {
        matches!(
            (self, side),
            (MirrorDirection::Both, _)
                | (MirrorDirection::In, Side::Ingress)
                | (MirrorDirection::Out, Side::Egress)
        )
    }
}

impl std::str::FromStr for MirrorDirection {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "in" => Ok(MirrorDirection::In),
            "out" => Ok(MirrorDirection::Out),
            "both" => Ok(MirrorDirection::Both),
            _ => Err(format!(
                "unknown mirror direction {s:?}: say in, out or both"
            )),
        }
    }
}

/// Where a frame crosses a source port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The port sent it into the vnet.
    Ingress,
    /// The vnet delivers it to the port.
    Egress,
}

/// One active mirror, its ports resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub name: String,
    pub sources: Vec<PortId>,
    pub direction: MirrorDirection,
    pub destination: PortId,
}

/// What a mirror copied, and what its destination's full queue dropped of that.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorCounters {
    pub frames: u64,
    pub bytes: u64,
    pub drops: u64,
}

/// One copy due: of which mirror, to which port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// The mirror's place in the table (for [`MirrorTable::count`]).
    pub mirror: usize,
    pub destination: PortId,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct MirrorTable {
    /// The active mirrors, in the order given.
    mirrors: Vec<Mirror>,
    /// Per source port and side, the mirrors that copy it (indices into `mirrors`).
    watched: FastMap<(PortId, SideKey), Vec<usize>>,
    /// Every mirror's counters by name, active or waiting for its ports.
    counters: BTreeMap<String, MirrorCounters>,
    /// The destinations the current frame was copied to.
    done: Vec<PortId>,
}

/// [`Side`] as a hash key.
type SideKey = bool;

fn key(port: PortId, side: Side) -> (PortId, SideKey) {
    (port, side == Side::Ingress)
}

impl MirrorTable {
    /// Makes `active` the mirrors in force. Counters are kept for the names in `known`
    /// (every mirror defined, active or not) and forgotten for the others.
    pub fn rebuild<'a>(&mut self, active: Vec<Mirror>, known: impl IntoIterator<Item = &'a str>) {
        let mut counters = BTreeMap::new();
        for name in known {
            let kept = self.counters.get(name).copied().unwrap_or_default();
            counters.insert(name.to_string(), kept);
        }
        self.counters = counters;
        self.watched.clear();
        for (i, m) in active.iter().enumerate() {
            for &source in &m.sources {
                for side in [Side::Ingress, Side::Egress] {
                    if m.direction.copies(side) {
                        let list = self.watched.entry(key(source, side)).or_default();
                        if !list.contains(&i) {
                            list.push(i);
                        }
                    }
                }
            }
        }
        self.mirrors = active;
        self.done.clear();
    }

    /// No mirror is active: the frame path's only question.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.mirrors.is_empty()
    }

    /// The active mirrors.
    pub fn active(&self) -> &[Mirror] {
        &self.mirrors
    }

    /// Whether `port` is the destination of an active mirror.
    pub fn is_destination(&self, port: PortId) -> bool {
        self.mirrors.iter().any(|m| m.destination == port)
    }

    /// A new frame: every destination is due a copy of it again.
    pub fn start_frame(&mut self) {
        self.done.clear();
    }

    /// Appends to `into` the copies due for the current frame crossing `port` on
    /// `side`: destinations not copied to yet since [`MirrorTable::start_frame`], never
    /// `port` itself.
    pub fn copies(&mut self, port: PortId, side: Side, into: &mut Vec<Due>) {
        let Some(list) = self.watched.get(&key(port, side)) else {
            return;
        };
        for &mirror in list {
            let destination = self.mirrors[mirror].destination;
            if destination == port || self.done.contains(&destination) {
                continue;
            }
            self.done.push(destination);
            into.push(Due {
                mirror,
                destination,
            });
        }
    }

    /// Counts a copy of `bytes` that mirror `mirror` made; `queued: false` when the
    /// destination's queue dropped it.
    pub fn count(&mut self, mirror: usize, bytes: usize, queued: bool) {
        let Some(m) = self.mirrors.get(mirror) else {
            return;
        };
        let c = self.counters.entry(m.name.clone()).or_default();
        if queued {
            c.frames += 1;
            c.bytes += bytes as u64;
        } else {
            c.drops += 1;
        }
    }

    /// Mirror `name`'s counters (zero for a name never counted).
    pub fn counters(&self, name: &str) -> MirrorCounters {
        self.counters.get(name).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mirror(name: &str, sources: &[u32], direction: MirrorDirection, dst: u32) -> Mirror {
        Mirror {
            name: name.into(),
            sources: sources.iter().map(|&p| PortId(p)).collect(),
            direction,
            destination: PortId(dst),
        }
    }

    fn due(t: &mut MirrorTable, crossings: &[(u32, Side)]) -> Vec<(usize, u32)> {
        t.start_frame();
        let mut out = Vec::new();
        for &(port, side) in crossings {
            t.copies(PortId(port), side, &mut out);
        }
        out.iter().map(|c| (c.mirror, c.destination.0)).collect()
    }

    fn table(mirrors: Vec<Mirror>) -> MirrorTable {
        let names: Vec<String> = mirrors.iter().map(|m| m.name.clone()).collect();
        let mut t = MirrorTable::default();
        t.rebuild(mirrors, names.iter().map(String::as_str));
        t
    }

    #[test]
    fn directions_choose_the_side_copied() {
        use MirrorDirection::*;
        let mut t = table(vec![
            mirror("i", &[1], In, 10),
            mirror("o", &[2], Out, 11),
            mirror("b", &[3], Both, 12),
        ]);
        assert_eq!(due(&mut t, &[(1, Side::Ingress)]), [(0, 10)]);
        assert_eq!(due(&mut t, &[(1, Side::Egress)]), []);
        assert_eq!(due(&mut t, &[(2, Side::Ingress)]), []);
        assert_eq!(due(&mut t, &[(2, Side::Egress)]), [(1, 11)]);
        assert_eq!(due(&mut t, &[(3, Side::Ingress)]), [(2, 12)]);
        assert_eq!(due(&mut t, &[(3, Side::Egress)]), [(2, 12)]);
        assert_eq!(due(&mut t, &[(4, Side::Ingress), (4, Side::Egress)]), []);
    }

    #[test]
    fn a_frame_reaches_each_destination_once_however_many_sources_see_it() {
        use MirrorDirection::*;
        // Port 1 floods to 2 and 3; all three are mirrored to 9, two of them twice.
        let mut t = table(vec![
            mirror("a", &[1, 2, 3], Both, 9),
            mirror("b", &[2], Out, 9),
            mirror("c", &[3], Out, 8),
        ]);
        let crossings = [(1, Side::Ingress), (2, Side::Egress), (3, Side::Egress)];
        assert_eq!(due(&mut t, &crossings), [(0, 9), (2, 8)]);
        // The next frame is due again.
        assert_eq!(due(&mut t, &[(2, Side::Egress)]), [(0, 9)]);
    }

    #[test]
    fn a_destination_gets_no_copy_of_its_own_frames() {
        let mut t = table(vec![mirror("a", &[1], MirrorDirection::Both, 1)]);
        assert_eq!(due(&mut t, &[(1, Side::Ingress)]), []);
    }

    #[test]
    fn counters_survive_rebuilds_while_the_name_is_kept() {
        let mut t = table(vec![mirror("a", &[1], MirrorDirection::In, 9)]);
        t.count(0, 60, true);
        t.count(0, 100, true);
        t.count(0, 60, false);
        let expect = MirrorCounters {
            frames: 2,
            bytes: 160,
            drops: 1,
        };
        assert_eq!(t.counters("a"), expect);
        // Port 9 went away: "a" waits for it, inactive, its counters kept.
        t.rebuild(Vec::new(), ["a"]);
        assert!(t.is_empty());
        assert_eq!(t.counters("a"), expect);
        t.rebuild(vec![mirror("a", &[1], MirrorDirection::In, 9)], ["a"]);
        assert!(t.is_destination(PortId(9)) && !t.is_destination(PortId(1)));
        assert_eq!(t.counters("a"), expect);
        // Removed: forgotten.
        t.rebuild(Vec::new(), []);
        assert_eq!(t.counters("a"), MirrorCounters::default());
    }

    #[test]
    fn directions_parse_with_a_clear_error() {
        assert_eq!("out".parse(), Ok(MirrorDirection::Out));
        let err = "sideways".parse::<MirrorDirection>().unwrap_err();
        assert_eq!(
            err,
            "unknown mirror direction \"sideways\": say in, out or both"
        );
    }
}
