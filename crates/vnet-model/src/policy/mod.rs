//! Per-port policy: what the switch enforces on one port's frames, section by section
//! (port security, filters, rate limits and storm control, impairment).
//!
//! A vnet has a default policy for its client ports ([`crate::NetworkSpec::policy`],
//! TOML `[network.policy]`); a port's own policy replaces it section by section
//! ([`PortPolicy::over`]). Ports the daemon makes from a spec keep their own policy in
//! it ([`crate::PortSpec`]) and so in the saved state; socket clients' ports hold theirs
//! only while connected.
//!
//! Every value is an integer in exact units (bits/s, bytes, µs, parts per million):
//! specs compare and persist exactly. Humans write `"10mbit"`, `"50ms"`, `"5%"`; each
//! section's module parses those forms.

pub mod acl;
pub mod impair;
pub mod rate;
pub mod security;
pub mod units;

use serde::{Deserialize, Deserializer, Serialize};

pub use acl::AclSpec;
pub use impair::ImpairSpec;
pub use rate::RateSpec;
pub use security::SecuritySpec;

/// What one port's traffic is held to; an absent section enforces nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortPolicy {
    /// Port security: MAC lock, IP source guard, DHCP server and RA guards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<SecuritySpec>,
    /// Filters: ordered rules per direction, optional connection tracking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<AclSpec>,
    /// Rate limits (policing in, shaping out) and storm control.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateSpec>,
    /// Impairment: delay, jitter, loss, duplication, reordering, corruption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impair: Option<ImpairSpec>,
}

impl PortPolicy {
    /// No section set: nothing to enforce.
    pub fn is_empty(&self) -> bool {
        *self == PortPolicy::default()
    }

    /// Checks values the data plane cannot honour, section by section.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(rate) = &self.rate {
            rate.validate()?;
        }
        if let Some(impair) = &self.impair {
            impair.validate()?;
        }
        Ok(())
    }

    /// This (a port's own) policy over `default` (its vnet's): each section of this
    /// one that is set, else the default's.
    pub fn over(&self, default: &PortPolicy) -> PortPolicy {
        fn pick<T: Clone>(own: &Option<T>, default: &Option<T>) -> Option<T> {
            own.as_ref().or(default.as_ref()).cloned()
        }
        PortPolicy {
            security: pick(&self.security, &default.security),
            acl: pick(&self.acl, &default.acl),
            rate: pick(&self.rate, &default.rate),
            impair: pick(&self.impair, &default.impair),
        }
    }

    /// This policy with `patch` applied.
    pub fn patched(&self, patch: &PolicyPatch) -> PortPolicy {
        fn apply<T: Clone>(now: &Option<T>, change: &Option<Option<T>>) -> Option<T> {
            match change {
                None => now.clone(),
                Some(new) => new.clone(),
            }
        }
        PortPolicy {
            security: apply(&self.security, &patch.security),
            acl: apply(&self.acl, &patch.acl),
            rate: apply(&self.rate, &patch.rate),
            impair: apply(&self.impair, &patch.impair),
        }
    }
}

/// A change to a policy (`PATCH .../policy`): per section, absent = unchanged, `null`
/// = removed (a port's own falls back to its vnet's), a value = replaced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyPatch {
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub security: Option<Option<SecuritySpec>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub acl: Option<Option<AclSpec>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub rate: Option<Option<RateSpec>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub impair: Option<Option<ImpairSpec>>,
}

impl PolicyPatch {
    /// The patch that turns any policy into `policy`: every section given, removed
    /// where `policy` has none.
    pub fn replace_with(policy: &PortPolicy) -> PolicyPatch {
        PolicyPatch {
            security: Some(policy.security.clone()),
            acl: Some(policy.acl.clone()),
            rate: Some(policy.rate.clone()),
            impair: Some(policy.impair.clone()),
        }
    }
}

/// A field that is present (`null` included): `Some`, so that `null` and absent differ.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// What a port's enforcement counted beyond drops by cause (those are in
/// [`crate::Counters::drops`]); one optional part per section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyReport {
    /// Port security: the MACs its lock learned, whether it shut the port down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<security::SecurityReport>,
    /// The filters' rules with what each decided, and the connection table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<acl::AclReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<rate::RateReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impair: Option<impair::ImpairReport>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_s_sections_replace_the_vnet_s_one_by_one() {
        let vnet = PortPolicy {
            rate: Some(RateSpec::default()),
            acl: Some(AclSpec::default()),
            ..PortPolicy::default()
        };
        let own = PortPolicy {
            security: Some(SecuritySpec::default()),
            ..PortPolicy::default()
        };
        let both = own.over(&vnet);
        assert_eq!(both.security, own.security);
        assert_eq!(both.rate, vnet.rate);
        assert_eq!(both.acl, vnet.acl);
        assert_eq!(both.impair, None);
        assert!(PortPolicy::default()
            .over(&PortPolicy::default())
            .is_empty());
    }

    #[test]
    fn a_patch_keeps_absent_sections_and_removes_null_ones() {
        let now = PortPolicy {
            rate: Some(RateSpec::default()),
            acl: Some(AclSpec::default()),
            ..PortPolicy::default()
        };
        let patch: PolicyPatch = serde_json::from_str(r#"{"acl": null, "security": {}}"#).unwrap();
        assert_eq!(patch.acl, Some(None));
        assert_eq!(patch.rate, None);
        let after = now.patched(&patch);
        assert_eq!(after.rate, now.rate);
        assert_eq!(after.acl, None);
        assert_eq!(after.security, Some(SecuritySpec::default()));
        // The client's form of the same patch says `null` for the removed section.
        let json = serde_json::to_string(&patch).unwrap();
        assert_eq!(serde_json::from_str::<PolicyPatch>(&json).unwrap(), patch);
        assert!(json.contains(r#""acl":null"#), "{json}");
        assert!(serde_json::from_str::<PolicyPatch>(r#"{"bogus": 1}"#).is_err());
        assert_eq!(now.patched(&PolicyPatch::replace_with(&after)), after);
    }
}
