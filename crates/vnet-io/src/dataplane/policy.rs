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

use std::sync::Arc;
use std::time::Instant;

use vnet_core::policy::acl::{Acl, Action, Direction};
use vnet_core::policy::guard::{DhcpBindings, Guard, GuardEvent};
use vnet_core::switch::DropCause;
use vnet_model::policy::acl::{AclError, AclReport, AclSpec};
use vnet_model::policy::security::SecurityReport;
use vnet_model::{PolicyReport, PortKind, PortPolicy};

use super::limits::Limits;
use super::shape::{HeldBound, Shaping};
use crate::frame::FrameBuf;

/// A change to a port's filters, made on the data-plane thread to the filters that
/// apply to the port then (`vnet acl add|rm|default`): one step, so that two changes
/// at once cannot lose one.
pub type AclEdit = Box<dyn FnOnce(&mut AclSpec) -> Result<(), AclError> + Send>;

/// What a hook decided for one frame.
pub(super) enum Step {
    Pass,
    /// Dropped, counted on the port under this cause.
    Drop(DropCause),
}

/// One port's policy at work.
#[derive(Debug)]
pub(super) struct Enforcer {
    /// What it enforces.
    policy: PortPolicy,
    /// Port security; `None` when its section is absent or turns every guard off.
    guard: Option<Guard>,
    /// The port's filters, compiled, with their counters and connection table.
    acl: Option<PortAcl>,
    /// Rate limits, storm control, impairment: they hold frames, so the vnet runs
    /// them after the hooks ([`Enforcer::shaping_mut`]).
    shaping: Option<Shaping>,
}

/// A port's filters: the spec they were compiled from (for the report) and the
/// compiled form.
#[derive(Debug)]
struct PortAcl {
    spec: AclSpec,
    acl: Acl,
    /// The VLAN the port puts untagged frames in (for rules that match a VLAN).
    untagged_vlan: Option<u16>,
    /// Connection-table refusals already counted in the vnet's refusals.
    refusals_counted: u64,
}

impl Enforcer {
    /// The enforcer of `policy` within `limits`; `None` when it enforces nothing.
    pub fn new(policy: &PortPolicy, limits: &Limits) -> Option<Enforcer> {
        (!policy.is_empty()).then(|| {
            let mut enforcer = Enforcer {
                policy: PortPolicy::default(),
                guard: None,
                acl: None,
                shaping: None,
            };
            let none = enforcer.update(policy, limits);
            debug_assert!(none.is_none(), "a new enforcer held nothing");
            enforcer
        })
    }

    /// Enforces `policy` from now on. Port security starts over (what its lock learned
    /// is forgotten, a port it shut down is enabled: README, Port security); the
    /// filters keep the counters of the rules that stay and their connection table, so
    /// a rule change does not cut established flows; rate limits and impairment keep
    /// their state (buckets, held frames) unless their sections changed: then the old
    /// state is returned, its held frames to be let go.
    #[must_use]
    pub fn update(&mut self, policy: &PortPolicy, limits: &Limits) -> Option<Shaping> {
        self.guard = policy
            .security
            .as_ref()
            .map(|s| s.guard_config())
            .filter(|c| !c.is_off())
            .map(|c| Guard::new(c, limits.mac_lock_macs));
        self.acl = match (self.acl.take(), &policy.acl) {
            (_, None) => None,
            (Some(mut now), Some(spec)) => {
                now.acl.update(&spec.to_core());
                now.spec = spec.clone();
                Some(now)
            }
            (None, Some(spec)) => Some(PortAcl {
                acl: Acl::new(&spec.to_core(), limits.conntrack_entries),
                spec: spec.clone(),
                untagged_vlan: None,
                refusals_counted: 0,
            }),
        };
        let mut left = None;
        if self.policy.rate != policy.rate || self.policy.impair != policy.impair {
            let held = HeldBound {
                frames: limits.held_frames_per_port,
                bytes: limits.held_bytes_per_port,
            };
            left = self.shaping.take();
            self.shaping = Shaping::new(policy.rate.as_ref(), policy.impair.as_ref(), held);
        }
        self.policy = policy.clone();
        left
    }

    /// What the filters need to know of the port: the VLAN it puts untagged frames in.
    pub fn set_untagged_vlan(&mut self, vlan: Option<u16>) {
        if let Some(acl) = &mut self.acl {
            acl.untagged_vlan = vlan;
        }
    }

    /// The rate and impairment sections at work, if the policy has them.
    pub fn shaping(&self) -> Option<&Shaping> {
        self.shaping.as_ref()
    }

    pub fn shaping_mut(&mut self) -> Option<&mut Shaping> {
        self.shaping.as_mut()
    }

    /// The rate and impairment state, as the enforcer goes.
    pub fn into_shaping(self) -> Option<Shaping> {
        self.shaping
    }

    pub fn policy(&self) -> &PortPolicy {
        &self.policy
    }

    /// A frame the port sent, before the switch sees it.
    pub fn ingress(&mut self, now: Instant, buf: &mut FrameBuf) -> Step {
        if let Some(guard) = &mut self.guard {
            if let Err(cause) = guard.ingress(buf.frame()) {
                return Step::Drop(cause);
            }
        }
        if let Some(acl) = &mut self.acl {
            let frame = buf.frame();
            if acl.acl.check(now, Direction::In, frame, acl.untagged_vlan) == Action::Drop {
                return Step::Drop(DropCause::Acl);
            }
        }
        Step::Pass
    }

    /// A frame for the port, before its egress queue.
    pub fn egress(&mut self, now: Instant, buf: &mut FrameBuf) -> Step {
        if let Some(guard) = &self.guard {
            if let Err(cause) = guard.egress() {
                return Step::Drop(cause);
            }
        }
        if let Some(acl) = &mut self.acl {
            let frame = buf.frame();
            if acl.acl.check(now, Direction::Out, frame, acl.untagged_vlan) == Action::Drop {
                return Step::Drop(DropCause::Acl);
            }
        }
        Step::Pass
    }

    /// What the sections counted.
    pub fn report(&self) -> PolicyReport {
        PolicyReport {
            security: self.guard.as_ref().map(|g| SecurityReport {
                learned_macs: g.learned_macs().to_vec(),
                shut_down_by: g.shut_down_by(),
            }),
            acl: self
                .acl
                .as_ref()
                .map(|a| AclReport::new(&a.spec, &a.acl.report())),
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

    /// What the log should say about the port, once (port security shut it down).
    pub fn take_notice(&mut self) -> Option<String> {
        let GuardEvent::ShutDown { mac } = self.guard.as_mut()?.take_event()?;
        Some(format!(
            "port security shut the port down: it sent from {mac}, which its MAC lock does \
             not allow; a change of its security settings enables it again"
        ))
    }

    /// The vnet's DHCP bindings as they are now, for an IP guard that reads them.
    pub fn set_dhcp_bindings(&mut self, bindings: &Arc<DhcpBindings>) {
        if let Some(guard) = self.guard.as_mut().filter(|g| g.wants_dhcp_bindings()) {
            guard.set_dhcp_bindings(Arc::clone(bindings));
        }
    }

    /// Port security set again: a port its MAC lock shut down is enabled again.
    pub fn renew_security(&mut self) {
        if let Some(guard) = &mut self.guard {
            guard.reconfigure(guard.config().clone());
        }
    }

    /// Sources the MAC lock refused since the last call only because of `[limits]
    /// mac_lock_macs`.
    pub fn take_refusals(&mut self) -> u64 {
        self.guard.as_mut().map_or(0, Guard::take_refusals)
    }

    /// New flows the connection table refused since the last call (`[limits]
    /// conntrack_entries`).
    pub fn take_conntrack_refusals(&mut self) -> u64 {
        let Some(acl) = &mut self.acl else {
            return 0;
        };
        let refused = acl.acl.report().conntrack.map_or(0, |c| c.refused);
        refused - std::mem::replace(&mut acl.refusals_counted, refused)
    }
}

/// Whether a port of `kind` takes its vnet's policy: client ports do; the vnet's own
/// services and uplink do not (nor its host adapter, which the caller tells apart).
pub(super) fn takes_vnet_policy(kind: PortKind) -> bool {
    !matches!(kind, PortKind::Service | PortKind::Uplink)
}
