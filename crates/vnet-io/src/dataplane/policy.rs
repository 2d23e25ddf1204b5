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
}

impl Enforcer {
    /// The enforcer of `policy`; `None` when it enforces nothing.
    pub fn new(policy: &PortPolicy) -> Option<Enforcer> {
        (!policy.is_empty()).then(|| Enforcer {
            policy: policy.clone(),
        })
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
        PolicyReport::default()
    }
}

/// Whether a port of `kind` takes its vnet's policy: client ports do; the vnet's own
/// services and uplink do not (nor its host adapter, which the caller tells apart).
pub(super) fn takes_vnet_policy(kind: PortKind) -> bool {
    !matches!(kind, PortKind::Service | PortKind::Uplink)
}
