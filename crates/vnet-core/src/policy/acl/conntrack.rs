//! Connection tracking for one port: which flows passed its ACL, so that a rule
//! matching `established` lets their frames through in both directions.
//!
//! # Theory of operation
//!
//! A flow is a TCP or UDP 5-tuple, or an ICMP/ICMPv6 echo (addresses + identifier),
//! keyed the same way for both directions (the lower endpoint first). The ACL reports
//! every frame it allowed ([`Conntrack::track`]); a frame of a flow not in the table
//! creates an entry: any TCP segment but a RST (so connections that were open when the
//! rules changed are picked up by their next segment), any UDP datagram, an echo
//! *request* (a reply alone does not open a flow). [`Conntrack::established`] is then
//! true for frames of that flow, either way, until the entry expires:
//!
//! | flow | state | expires after (idle) |
//! |---|---|---|
//! | TCP | one side seen | 60 s |
//! | TCP | both sides seen | 2 h |
//! | TCP | a FIN seen | 2 min |
//! | TCP | FINs from both sides, or a RST | 10 s |
//! | UDP | one side seen | 30 s |
//! | UDP | both sides seen | 180 s |
//! | ICMP echo | | 30 s |
//!
//! Non-first fragments and other protocols are never tracked (they carry no ports);
//! ICMP errors about a flow are not related to it.
//!
//! Bounded: at most `max` entries. Expired entries are swept at most once a second
//! (one pass over the table, when a frame is tracked); a new flow finding the table
//! full after that is not tracked and counted as refused (its frame still passes: the
//! rules allowed it; its replies then meet the rules as new frames).

use std::time::{Duration, Instant};

use super::fields::{Addr, Fields, L4};
use crate::switch::FastMap;
use crate::wire::tcp::Flags;
use crate::wire::IpProtocol;

const TCP_OPENING: Duration = Duration::from_secs(60);
const TCP_ESTABLISHED: Duration = Duration::from_secs(2 * 3600);
const TCP_CLOSING: Duration = Duration::from_secs(120);
const TCP_CLOSED: Duration = Duration::from_secs(10);
const UDP_UNREPLIED: Duration = Duration::from_secs(30);
const UDP_REPLIED: Duration = Duration::from_secs(180);
const ICMP_ECHO: Duration = Duration::from_secs(30);
/// Least time between two sweeps of expired entries.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// One flow, the same for both directions: `lo` ≤ `hi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FlowKey {
    v6: bool,
    proto: u8,
    lo: (Addr, u16),
    hi: (Addr, u16),
}

/// Which end of a [`FlowKey`] sent a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Lo,
    Hi,
}

/// A flow's key, the side that sent the frame, and what the frame says about the flow.
struct Seen {
    key: FlowKey,
    from: Side,
    /// TCP flags (0 otherwise).
    tcp_flags: u8,
    /// May this frame open a flow?
    opens: bool,
}

impl Seen {
    fn of(f: &Fields) -> Option<Seen> {
        let ip = f.ip?;
        let (src_id, dst_id, tcp_flags, opens) = match ip.l4 {
            L4::Ports {
                src,
                dst,
                tcp_flags,
            } => {
                let tcp = ip.proto == IpProtocol::TCP.0;
                (
                    src,
                    dst,
                    tcp_flags,
                    !(tcp && Flags(tcp_flags).has(Flags::RST)),
                )
            }
            L4::Icmp {
                echo: Some(echo), ..
            } => (echo.id, echo.id, 0, echo.request),
            _ => return None,
        };
        let (src, dst) = ((ip.src, src_id), (ip.dst, dst_id));
        let (lo, hi, from) = if src <= dst {
            (src, dst, Side::Lo)
        } else {
            (dst, src, Side::Hi)
        };
        Some(Seen {
            key: FlowKey {
                v6: ip.v6,
                proto: ip.proto,
                lo,
                hi,
            },
            from,
            tcp_flags,
            opens,
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The side that opened the flow.
    opener: Side,
    replied: bool,
    fin_lo: bool,
    fin_hi: bool,
    reset: bool,
    expires: Instant,
}

impl Entry {
    /// Takes in a frame of the flow: who sent it, its FIN or RST.
    fn update(&mut self, seen: &Seen, now: Instant) {
        let flags = Flags(seen.tcp_flags);
        self.replied |= seen.from != self.opener;
        self.reset |= flags.has(Flags::RST);
        if flags.has(Flags::FIN) {
            match seen.from {
                Side::Lo => self.fin_lo = true,
                Side::Hi => self.fin_hi = true,
            }
        }
        self.expires = now + self.idle_timeout(seen.key.proto);
    }

    fn idle_timeout(&self, proto: u8) -> Duration {
        match IpProtocol(proto) {
            IpProtocol::TCP if self.reset || (self.fin_lo && self.fin_hi) => TCP_CLOSED,
            IpProtocol::TCP if self.fin_lo || self.fin_hi => TCP_CLOSING,
            IpProtocol::TCP if self.replied => TCP_ESTABLISHED,
            IpProtocol::TCP => TCP_OPENING,
            IpProtocol::UDP if self.replied => UDP_REPLIED,
            IpProtocol::UDP => UDP_UNREPLIED,
            _ => ICMP_ECHO,
        }
    }
}

/// What the table did, for the port's report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConntrackStats {
    /// Entries now (expired ones not yet swept included).
    pub entries: usize,
    pub max: usize,
    /// New flows not tracked because the table was full.
    pub refused: u64,
}

/// The flows one port's ACL allowed.
#[derive(Debug)]
pub struct Conntrack {
    flows: FastMap<FlowKey, Entry>,
    max: usize,
    refused: u64,
    next_sweep: Option<Instant>,
}

impl Conntrack {
    pub fn new(max: usize) -> Conntrack {
        Conntrack {
            flows: FastMap::default(),
            max,
            refused: 0,
            next_sweep: None,
        }
    }

    /// A new bound; entries over it are kept until they expire.
    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// Whether the frame belongs to a flow in the table.
    pub fn established(&self, f: &Fields, now: Instant) -> bool {
        Seen::of(f)
            .and_then(|seen| self.flows.get(&seen.key))
            .is_some_and(|e| e.expires > now)
    }

    /// Records a frame the ACL allowed: opens its flow or moves it along.
    pub fn track(&mut self, f: &Fields, now: Instant) {
        let Some(seen) = Seen::of(f) else {
            return;
        };
        if self.next_sweep.is_none_or(|t| now >= t) {
            self.sweep(now);
        }
        match self.flows.get_mut(&seen.key) {
            Some(e) if e.expires > now => return e.update(&seen, now),
            _ => {}
        }
        if !seen.opens {
            return;
        }
        // An expired entry of the same flow is replaced in place; a new one needs room.
        if self.flows.len() >= self.max && !self.flows.contains_key(&seen.key) {
            self.refused += 1;
            return;
        }
        let mut e = Entry {
            opener: seen.from,
            replied: false,
            fin_lo: false,
            fin_hi: false,
            reset: false,
            expires: now,
        };
        e.update(&seen, now);
        self.flows.insert(seen.key, e);
    }

    /// Drops the expired entries.
    fn sweep(&mut self, now: Instant) {
        self.flows.retain(|_, e| e.expires > now);
        self.next_sweep = Some(now + SWEEP_EVERY);
    }

    pub fn stats(&self) -> ConntrackStats {
        ConntrackStats {
            entries: self.flows.len(),
            max: self.max,
            refused: self.refused,
        }
    }
}
