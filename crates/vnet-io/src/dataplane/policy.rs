//! Per-port policy on the frame path: each port with something to enforce has an
//! [`Enforcer`], built from its effective policy (its own over its vnet's,
//! [`PortPolicy::over`]); the vnet keeps them in a map of their own, so that with none
//! the frame path pays one `is_empty` check per hook.
//!
//! Two hooks, on the data-plane thread with the loop's `now`: [`Enforcer::ingress`] in
//! `Vnet::forward` before the switch (after a capture saw the frame: a capture shows
//! what the port sent) and [`Enforcer::egress`] where a frame is queued for the port.
//! Each section of the policy is a sans-I/O part of `vnet_core::policy`; this is the
//! glue that runs them in order and reports what they counted.

use std::time::Instant;

use vnet_core::switch::DropCause;
use vnet_model::{PolicyReport, PortKind, PortPolicy};

use super::shape::{HeldBound, Shaping};
use crate::frame::FrameBuf;

/// What a hook decided for one frame.
pub(super) enum Step {
    Pass,
    /// Dropped, counted on the port under this cause.
    #[expect(
        dead_code,
        reason = "made by the policy sections (security, filters, rates) as they land"
    )]
    Drop(DropCause),
}

/// One port's policy at work.
#[derive(Debug)]
pub(super) struct Enforcer {
    /// What it enforces.
    policy: PortPolicy,
    /// Rate limits, storm control, impairment: they hold frames, so the vnet runs
    /// them after the hooks ([`Enforcer::shaping_mut`]).
    shaping: Option<Shaping>,
}

impl Enforcer {
    /// The enforcer of `policy`; `None` when it enforces nothing. `held` bounds the
    /// frames its rate and impairment sections hold.
    pub fn new(policy: &PortPolicy, held: HeldBound) -> Option<Enforcer> {
        (!policy.is_empty()).then(|| Enforcer {
            policy: policy.clone(),
            shaping: Shaping::new(policy.rate.as_ref(), policy.impair.as_ref(), held),
        })
    }

    /// The rate and impairment sections at work, if the policy has them.
    pub fn shaping(&self) -> Option<&Shaping> {
        self.shaping.as_ref()
    }

    pub fn shaping_mut(&mut self) -> Option<&mut Shaping> {
        self.shaping.as_mut()
    }

    /// Takes over `old`'s rate and impairment state (its buckets, its held frames)
    /// when those sections did not change; else gives `old`'s back, to be emptied.
    pub fn inherit(&mut self, old: Enforcer) -> Option<Shaping> {
        let same = self.policy.rate == old.policy.rate && self.policy.impair == old.policy.impair;
        if same {
            self.shaping = old.shaping;
            None
        } else {
            old.shaping
        }
    }

    /// The rate and impairment state, as the enforcer goes.
    pub fn into_shaping(self) -> Option<Shaping> {
        self.shaping
    }

    pub fn policy(&self) -> &PortPolicy {
        &self.policy
    }

    /// A frame the port sent, before the switch sees it.
    pub fn ingress(&mut self, _now: Instant, _buf: &mut FrameBuf) -> Step {
        Step::Pass
    }

    /// A frame for the port, before its egress queue.
    pub fn egress(&mut self, _now: Instant, _buf: &mut FrameBuf) -> Step {
        Step::Pass
    }

    /// What the sections counted.
    pub fn report(&self) -> PolicyReport {
        PolicyReport {
            rate: self
                .policy
                .rate
                .as_ref()
                .and(self.shaping.as_ref())
                .map(Shaping::rate_report),
            impair: self
                .policy
                .impair
                .as_ref()
                .and(self.shaping.as_ref())
                .map(Shaping::impair_report),
        }
    }
}

/// Whether a port of `kind` takes its vnet's policy: client ports do; the vnet's own
/// services and uplink do not (nor its host adapter, which the caller tells apart).
pub(super) fn takes_vnet_policy(kind: PortKind) -> bool {
    !matches!(kind, PortKind::Service | PortKind::Uplink)
}
