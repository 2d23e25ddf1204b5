//! Filters (ACLs) of one port: ordered rules per direction, a default per direction,
//! counters per rule, optional connection tracking.
//!
//! Directions are the port's: [`Direction::In`] is what the port sends into the switch
//! (a VM's outgoing traffic), [`Direction::Out`] what the switch delivers to the port.
//! Each direction is a [`Chain`]: the first rule that matches a frame decides
//! ([`Action::Allow`] or [`Action::Drop`]), and a frame no rule matches gets the
//! chain's default. What a rule can match, and what a frame that does not parse
//! shows it, is in [`fields`]; how a chain is compiled so that its cost per frame does
//! not grow with the number of rules, in [`classifier`].
//!
//! With connection tracking on ([`AclConfig::conntrack`], or any rule matching
//! `established`), every frame the ACL allows in either direction is recorded in the
//! port's [`conntrack::Conntrack`], and `established` matches the frames of the flows
//! recorded there: "default drop out, allow established out" lets the replies to the
//! VM's own connections in, and nothing else.

pub mod classifier;
pub mod conntrack;
pub mod fields;
pub mod rule;
#[cfg(test)]
mod tests;

use std::time::Instant;

pub use classifier::Classifier;
pub use conntrack::{Conntrack, ConntrackStats};
pub use fields::Fields;
pub use rule::{first_match, Action, Match, PortRange, Prefix, Rule};

/// Which way a frame crosses the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the port into the switch.
    In,
    /// From the switch to the port.
    Out,
}

/// The rules of one direction and what happens to frames none of them matches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chain {
    pub rules: Vec<Rule>,
    pub default: Action,
}

/// A port's ACL, as [`Acl::new`] and [`Acl::update`] take it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclConfig {
    pub inbound: Chain,
    pub outbound: Chain,
    /// Track connections even when no rule matches `established`.
    pub conntrack: bool,
}

/// Frames and bytes a rule (or a default) decided.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hits {
    pub frames: u64,
    pub bytes: u64,
}

impl Hits {
    fn add(&mut self, bytes: usize) {
        self.frames += 1;
        self.bytes += bytes as u64;
    }
}

/// One direction, compiled, with its counters.
#[derive(Debug)]
struct CompiledChain {
    classifier: Classifier,
    default: Action,
    /// One per rule.
    hits: Vec<Hits>,
    default_hits: Hits,
}

impl CompiledChain {
    /// Compiles `chain`; a rule equal to one of `old`'s keeps that rule's counters (each
    /// old rule's at most once), so inserting or removing a rule leaves the others'.
    fn new(chain: &Chain, old: Option<&CompiledChain>) -> CompiledChain {
        let mut carried: Vec<Option<Hits>> = match old {
            Some(old) => old.hits.iter().copied().map(Some).collect(),
            None => Vec::new(),
        };
        let old_rules = old.map_or(&[][..], |o| o.classifier.rules());
        let hits = chain
            .rules
            .iter()
            .map(|r| {
                old_rules
                    .iter()
                    .zip(carried.iter_mut())
                    .find(|(o, h)| *o == r && h.is_some())
                    .and_then(|(_, h)| h.take())
                    .unwrap_or_default()
            })
            .collect();
        CompiledChain {
            classifier: Classifier::new(chain.rules.clone()),
            default: chain.default,
            hits,
            default_hits: old.map_or_else(Hits::default, |o| o.default_hits),
        }
    }

    fn decide(&mut self, f: &Fields, established: bool, len: usize) -> Action {
        match self.classifier.classify(f, established) {
            Some(i) => {
                self.hits[i].add(len);
                self.classifier.rules()[i].action
            }
            None => {
                self.default_hits.add(len);
                self.default
            }
        }
    }

    fn report(&self) -> ChainReport {
        ChainReport {
            rules: self.hits.clone(),
            default: self.default_hits,
        }
    }
}

/// The counters of one direction: one per rule, in rule order, and the default's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainReport {
    pub rules: Vec<Hits>,
    pub default: Hits,
}

/// What an ACL counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclReport {
    pub inbound: ChainReport,
    pub outbound: ChainReport,
    /// When connections are tracked.
    pub conntrack: Option<ConntrackStats>,
}

/// The ACL of one port, compiled, with its counters and connection table.
#[derive(Debug)]
pub struct Acl {
    inbound: CompiledChain,
    outbound: CompiledChain,
    conntrack: Option<Conntrack>,
    max_flows: usize,
}

impl Acl {
    /// `max_flows` bounds the connection table.
    pub fn new(config: &AclConfig, max_flows: usize) -> Acl {
        let mut acl = Acl {
            inbound: CompiledChain::new(&config.inbound, None),
            outbound: CompiledChain::new(&config.outbound, None),
            conntrack: None,
            max_flows,
        };
        acl.set_tracking(config);
        acl
    }

    /// Replaces the rules, live: counters of rules that stay, and the connection
    /// table, are kept.
    pub fn update(&mut self, config: &AclConfig) {
        self.inbound = CompiledChain::new(&config.inbound, Some(&self.inbound));
        self.outbound = CompiledChain::new(&config.outbound, Some(&self.outbound));
        self.set_tracking(config);
    }

    /// A new bound on the connection table (entries over it stay until they expire).
    pub fn set_max_flows(&mut self, max_flows: usize) {
        self.max_flows = max_flows;
        if let Some(ct) = &mut self.conntrack {
            ct.set_max(max_flows);
        }
    }

    fn set_tracking(&mut self, config: &AclConfig) {
        let wanted = config.conntrack
            || self.inbound.classifier.uses_established()
            || self.outbound.classifier.uses_established();
        match (wanted, self.conntrack.is_some()) {
            (true, false) => self.conntrack = Some(Conntrack::new(self.max_flows)),
            (false, true) => self.conntrack = None,
            _ => {}
        }
    }

    /// Decides a frame crossing the port `dir`-wards, counts it, and records an
    /// allowed frame's flow. `untagged_vlan`: the VLAN the port puts untagged frames
    /// in, for rules that match a VLAN.
    pub fn check(
        &mut self,
        now: Instant,
        dir: Direction,
        frame: &[u8],
        untagged_vlan: Option<u16>,
    ) -> Action {
        let f = Fields::parse(frame, untagged_vlan);
        let chain = match dir {
            Direction::In => &mut self.inbound,
            Direction::Out => &mut self.outbound,
        };
        let established = chain.classifier.uses_established()
            && self
                .conntrack
                .as_ref()
                .is_some_and(|ct| ct.established(&f, now));
        let action = chain.decide(&f, established, frame.len());
        if action == Action::Allow {
            if let Some(ct) = &mut self.conntrack {
                ct.track(&f, now);
            }
        }
        action
    }

    pub fn report(&self) -> AclReport {
        AclReport {
            inbound: self.inbound.report(),
            outbound: self.outbound.report(),
            conntrack: self.conntrack.as_ref().map(Conntrack::stats),
        }
    }
}
