//! The compiled form of a rule list: a tuple-space search with priority pruning.
//!
//! Rules are grouped by their *tuple*: which fields they match exactly (EtherType, MACs,
//! VLAN, protocol, a single source/destination port, ICMP type and code) and how many
//! bits of each address prefix. Within a tuple, a rule is filed in a hash map under
//! the values of those fields; the bucket lists the rules that share them, in rule
//! order. Port ranges wider than one port and `established` are not hashed: they are
//! checked on the candidates, as is everything else (each candidate is checked in full
//! with [`Match::matches`](super::rule::Match::matches), so the hash only has to never miss a rule, never to be
//! exact).
//!
//! To classify a frame, each tuple builds the frame's key under its mask (one hash
//! lookup per tuple) and scans its bucket in order until a rule matches. Tuples are
//! visited in the order of their first rule, and the search stops at a tuple whose
//! first rule comes after the best match so far: the answer is the first matching
//! rule, as [`first_match`](super::rule::first_match) computes it by scanning all
//! rules (proved equal by the property test below).
//!
//! The cost per frame is one key and one lookup per tuple, plus the bucket scans: it
//! grows with the number of distinct rule *shapes*, not with the number of rules. A
//! thousand `drop tcp dst-port N` rules are one tuple and one lookup; a thousand
//! prefixes of one length likewise. What stays linear is many rules of one shape whose
//! hashed fields are equal and whose unhashed parts differ (a thousand different port
//! ranges on one protocol): those share a bucket, scanned in order.

use super::fields::{Fields, L4};
use super::rule::{mask, Rule};
use crate::switch::FastMap;

/// Which fields a tuple hashes, and how many bits of each address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Mask {
    ethertype: bool,
    src_mac: bool,
    dst_mac: bool,
    vlan: bool,
    src_len: Option<u8>,
    dst_len: Option<u8>,
    proto: bool,
    src_port: bool,
    dst_port: bool,
    icmp_type: bool,
    icmp_code: bool,
}

/// The values of the hashed fields (zero where the mask does not hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
struct Key {
    ethertype: u16,
    vlan: u16,
    proto: u8,
    icmp_type: u8,
    icmp_code: u8,
    src_port: u16,
    dst_port: u16,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: u128,
    dst: u128,
}

impl Mask {
    fn of(rule: &Rule) -> (Mask, Key) {
        let m = &rule.matches;
        let ethertype = m.implied_ethertype();
        let src_port = m.src_port.and_then(|r| r.single());
        let dst_port = m.dst_port.and_then(|r| r.single());
        let mask = Mask {
            ethertype: ethertype.is_some(),
            src_mac: m.src_mac.is_some(),
            dst_mac: m.dst_mac.is_some(),
            vlan: m.vlan.is_some(),
            src_len: m.src.map(|p| p.len),
            dst_len: m.dst.map(|p| p.len),
            proto: m.proto.is_some(),
            src_port: src_port.is_some(),
            dst_port: dst_port.is_some(),
            icmp_type: m.icmp_type.is_some(),
            icmp_code: m.icmp_code.is_some(),
        };
        let key = Key {
            ethertype: ethertype.unwrap_or(0),
            vlan: m.vlan.unwrap_or(0),
            proto: m.proto.unwrap_or(0),
            icmp_type: m.icmp_type.unwrap_or(0),
            icmp_code: m.icmp_code.unwrap_or(0),
            src_port: src_port.unwrap_or(0),
            dst_port: dst_port.unwrap_or(0),
            src_mac: m.src_mac.map_or([0; 6], |a| a.0),
            dst_mac: m.dst_mac.map_or([0; 6], |a| a.0),
            src: m.src.map_or(0, |p| p.addr),
            dst: m.dst.map_or(0, |p| p.addr),
        };
        (mask, key)
    }

    /// The frame's key under this mask; `None` when the frame lacks a hashed field (then
    /// no rule of the tuple can match it).
    fn key(&self, f: &Fields) -> Option<Key> {
        let mut k = Key::default();
        if self.ethertype {
            k.ethertype = f.ethertype;
        }
        if self.src_mac {
            k.src_mac = f.src_mac.0;
        }
        if self.dst_mac {
            k.dst_mac = f.dst_mac.0;
        }
        if self.vlan {
            k.vlan = f.vlan?;
        }
        if self.src_len.is_some() || self.dst_len.is_some() || self.proto {
            let ip = f.ip?;
            if let Some(len) = self.src_len {
                k.src = ip.src & mask(len);
            }
            if let Some(len) = self.dst_len {
                k.dst = ip.dst & mask(len);
            }
            if self.proto {
                k.proto = ip.proto;
            }
        }
        if self.src_port || self.dst_port {
            let L4::Ports { src, dst, .. } = f.l4() else {
                return None;
            };
            if self.src_port {
                k.src_port = src;
            }
            if self.dst_port {
                k.dst_port = dst;
            }
        }
        if self.icmp_type || self.icmp_code {
            let L4::Icmp { msg_type, code, .. } = f.l4() else {
                return None;
            };
            if self.icmp_type {
                k.icmp_type = msg_type;
            }
            if self.icmp_code {
                k.icmp_code = code;
            }
        }
        Some(k)
    }
}

/// The rules of one shape.
#[derive(Debug)]
struct Tuple {
    mask: Mask,
    /// The index of its first rule.
    first: usize,
    /// Rule indices, ascending, by the values of the hashed fields.
    buckets: FastMap<Key, Vec<u32>>,
}

/// A rule list compiled for first-match classification.
#[derive(Debug, Default)]
pub struct Classifier {
    rules: Vec<Rule>,
    /// By `first`, ascending.
    tuples: Vec<Tuple>,
    uses_established: bool,
}

impl Classifier {
    pub fn new(rules: Vec<Rule>) -> Classifier {
        let mut tuples: Vec<Tuple> = Vec::new();
        let mut by_mask: FastMap<Mask, usize> = FastMap::default();
        for (i, rule) in rules.iter().enumerate() {
            let (mask, key) = Mask::of(rule);
            let t = *by_mask.entry(mask).or_insert_with(|| {
                tuples.push(Tuple {
                    mask,
                    first: i,
                    buckets: FastMap::default(),
                });
                tuples.len() - 1
            });
            let index = u32::try_from(i).expect("a rule list fits u32");
            tuples[t].buckets.entry(key).or_default().push(index);
        }
        Classifier {
            uses_established: rules.iter().any(|r| r.matches.established),
            rules,
            tuples,
        }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether a rule matches `established` (then [`Self::classify`] needs to know).
    pub fn uses_established(&self) -> bool {
        self.uses_established
    }

    /// How many distinct rule shapes (hash lookups per frame, at most).
    pub fn tuples(&self) -> usize {
        self.tuples.len()
    }

    /// The index of the first rule that matches `f`.
    pub fn classify(&self, f: &Fields, established: bool) -> Option<usize> {
        let mut best = usize::MAX;
        for t in &self.tuples {
            if t.first >= best {
                break;
            }
            let Some(bucket) = t.mask.key(f).and_then(|k| t.buckets.get(&k)) else {
                continue;
            };
            for &i in bucket {
                let i = i as usize;
                if i >= best {
                    break;
                }
                if self.rules[i].matches.matches(f, established) {
                    best = i;
                    break;
                }
            }
        }
        (best != usize::MAX).then_some(best)
    }
}
