//! Port security settings (`security` of a port's or a vnet's policy): MAC lock, IP
//! source guard, DHCP server guard, RA guard. The rules themselves are
//! [`vnet_core::policy::guard`]'s; this is how the config file, the API and the saved
//! state write them.
//!
//! Written as a table (TOML `security = { mac_limit = 1, ip_guard = ["dhcp"] }`, JSON
//! `{"mac_limit": 1, ...}`) or as one word: `"strict"` (a profile for labs of untrusted
//! guests, the keys of a table refine it: `{ profile = "strict", router = true }`) or
//! `"off"` (every guard off: what a port writes to opt out of its vnet's default).
//! Every key is optional; an absent key takes the profile's value, else "off":
//!
//! | key | off | strict |
//! |---|---|---|
//! | `macs` | none | none |
//! | `mac_limit` | 0 | 1 |
//! | `mac_violation` | `drop` | `drop` |
//! | `ip_guard` | off | `["dhcp"]` |
//! | `ipv6_link_local` | `true` (with `ip_guard`) | `true` |
//! | `dhcp_server` | `true` (allowed) | `false` |
//! | `router` | `true` (allowed) | `false` |

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use vnet_core::policy::guard::{self, GuardConfig, IpGuard, MacLock, Prefix};
use vnet_core::wire::MacAddr;

/// A port's security settings. `Default` (written `"off"`) turns every guard off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct SecuritySpec {
    /// The preset the other keys refine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
    /// MAC lock: source MACs the port may always send from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macs: Option<Vec<MacAddr>>,
    /// MAC lock: how many more source MACs the port may use, the first it sends from.
    /// The lock is on when `macs` or `mac_limit` allow anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_limit: Option<u32>,
    /// What a frame from any other source MAC does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_violation: Option<Violation>,
    /// IP source guard: the sources the port may use (`"dhcp"`: the IPv4 addresses the
    /// vnet's DHCP service leased to its MACs; addresses and prefixes). An empty list
    /// turns the guard off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_guard: Option<Vec<IpSource>>,
    /// With `ip_guard`: the EUI-64 link-local address of the frame's source MAC passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_link_local: Option<bool>,
    /// The port may send DHCP server messages (else the DHCP server guard drops them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp_server: Option<bool>,
    /// The port may send router advertisements and redirects (else the RA guard drops
    /// them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<bool>,
}

/// A preset of port security settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// For labs of untrusted guests: one MAC per port (learned, others dropped), IPv4
    /// sources only as leased by the vnet's DHCP (and IPv6 link-local), no DHCP server,
    /// no router advertisements.
    Strict,
}

/// What a MAC lock does with a frame from a source it does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Violation {
    /// Drop it and count it (`mac_lock`).
    #[default]
    Drop,
    /// Also shut the port down until its policy changes.
    Shutdown,
}

/// One entry of `ip_guard`: `"dhcp"`, an address, or a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpSource {
    Dhcp,
    Net(IpNet),
}

/// An `ip_guard` entry that is none of those.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ip_guard entry {0:?}: say \"dhcp\", an address (10.0.0.5, fd00::5) or a prefix (10.0.0.0/24, fd00::/64)")]
pub struct ParseIpSourceError(String);

impl FromStr for IpSource {
    type Err = ParseIpSourceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s == "dhcp" {
            return Ok(IpSource::Dhcp);
        }
        let net = match s.parse::<IpAddr>() {
            Ok(a) => Ok(IpNet::from(a)),
            Err(_) => s.parse::<IpNet>().map(|n| n.trunc()),
        };
        net.map(IpSource::Net)
            .map_err(|_| ParseIpSourceError(s.to_string()))
    }
}

impl fmt::Display for IpSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpSource::Dhcp => f.write_str("dhcp"),
            IpSource::Net(n) if n.prefix_len() == n.max_prefix_len() => n.addr().fmt(f),
            IpSource::Net(n) => n.fmt(f),
        }
    }
}

impl Serialize for IpSource {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

impl SecuritySpec {
    /// The `strict` profile, as `security = "strict"` writes it.
    pub fn strict() -> Self {
        SecuritySpec {
            profile: Some(Profile::Strict),
            ..SecuritySpec::default()
        }
    }

    /// The guard's settings: each key, else the profile's value, else off.
    pub fn guard_config(&self) -> GuardConfig {
        let strict = self.profile == Some(Profile::Strict);
        let macs = self.macs.clone().unwrap_or_default();
        let learn = self.mac_limit.unwrap_or(u32::from(strict)) as usize;
        let mac_lock = (!macs.is_empty() || learn > 0).then(|| MacLock {
            macs,
            learn,
            violation: match self.mac_violation.unwrap_or_default() {
                Violation::Drop => guard::Violation::Drop,
                Violation::Shutdown => guard::Violation::Shutdown,
            },
        });
        let sources = match &self.ip_guard {
            Some(s) => s.clone(),
            None if strict => vec![IpSource::Dhcp],
            None => vec![],
        };
        let ip_guard = (!sources.is_empty()).then(|| IpGuard {
            dhcp: sources.contains(&IpSource::Dhcp),
            prefixes: sources
                .iter()
                .filter_map(|s| match s {
                    IpSource::Dhcp => None,
                    IpSource::Net(n) => Prefix::new(n.addr(), n.prefix_len()),
                })
                .collect(),
            ipv6_link_local: self.ipv6_link_local.unwrap_or(true),
        });
        GuardConfig {
            mac_lock,
            ip_guard,
            dhcp_guard: !self.dhcp_server.unwrap_or(!strict),
            ra_guard: !self.router.unwrap_or(!strict),
        }
    }

    /// `self` with the keys `changes` sets put over it (a profile in `changes` replaces
    /// everything).
    pub fn merged(&self, changes: &SecuritySpec) -> SecuritySpec {
        if changes.profile.is_some() {
            return changes.clone();
        }
        SecuritySpec {
            profile: self.profile,
            macs: changes.macs.clone().or_else(|| self.macs.clone()),
            mac_limit: changes.mac_limit.or(self.mac_limit),
            mac_violation: changes.mac_violation.or(self.mac_violation),
            ip_guard: changes.ip_guard.clone().or_else(|| self.ip_guard.clone()),
            ipv6_link_local: changes.ipv6_link_local.or(self.ipv6_link_local),
            dhcp_server: changes.dhcp_server.or(self.dhcp_server),
            router: changes.router.or(self.router),
        }
    }
}

/// The one-word forms.
const STRICT: &str = "strict";
const OFF: &str = "off";

impl Serialize for SecuritySpec {
    /// The one-word form where it says all, else the table.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if *self == SecuritySpec::default() {
            s.serialize_str(OFF)
        } else if *self == SecuritySpec::strict() {
            s.serialize_str(STRICT)
        } else {
            SecuritySpec::serialize(self, s)
        }
    }
}

impl<'de> Deserialize<'de> for SecuritySpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Either;
        impl<'de> Visitor<'de> for Either {
            type Value = SecuritySpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"strict\", \"off\" or a table of port security settings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SecuritySpec, E> {
                match v {
                    STRICT => Ok(SecuritySpec::strict()),
                    OFF => Ok(SecuritySpec::default()),
                    other => Err(E::custom(format!(
                        "security {other:?}: say \"strict\", \"off\" or give a table"
                    ))),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SecuritySpec, A::Error> {
                SecuritySpec::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_any(Either)
    }
}

/// What port security holds for a port now (in the port's policy report).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityReport {
    /// Source MACs the MAC lock learned, in the order it did.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub learned_macs: Vec<MacAddr>,
    /// While the MAC lock has shut the port down: the source MAC that did it. A policy
    /// change enables the port again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shut_down_by: Option<MacAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use vnet_core::policy::guard::Violation as GuardViolation;

    fn json(s: &str) -> Result<SecuritySpec, String> {
        serde_json::from_str(s).map_err(|e| e.to_string())
    }

    #[test]
    fn the_one_word_forms_and_tables_round_trip_in_their_canonical_form() {
        assert_eq!(json(r#""strict""#).unwrap(), SecuritySpec::strict());
        assert_eq!(json(r#""off""#).unwrap(), SecuritySpec::default());
        assert_eq!(json("{}").unwrap(), SecuritySpec::default());
        assert_eq!(
            serde_json::to_string(&SecuritySpec::strict()).unwrap(),
            r#""strict""#
        );
        assert_eq!(
            serde_json::to_string(&SecuritySpec::default()).unwrap(),
            r#""off""#
        );
        let text = r#"{"profile":"strict","macs":["52:54:00:00:00:01"],"mac_limit":2,"mac_violation":"shutdown","ip_guard":["dhcp","10.0.0.5","10.1.0.0/16","fd00::/64"],"ipv6_link_local":false,"dhcp_server":true,"router":false}"#;
        let spec = json(text).unwrap();
        assert_eq!(serde_json::to_string(&spec).unwrap(), text);
        assert_eq!(
            json(r#"{"ip_guard":["10.1.2.3/16"]}"#)
                .unwrap()
                .ip_guard
                .unwrap()[0]
                .to_string(),
            "10.1.0.0/16"
        );
    }

    #[test]
    fn bad_values_say_what_to_write() {
        let e = json(r#""paranoid""#).unwrap_err();
        assert!(e.contains(r#"say "strict", "off""#), "{e}");
        let e = json(r#"{"ip_guard":["dchp"]}"#).unwrap_err();
        assert!(e.contains(r#"ip_guard entry "dchp": say "dhcp""#), "{e}");
        let e = json(r#"{"mac_limt":1}"#).unwrap_err();
        assert!(e.contains("unknown field `mac_limt`"), "{e}");
        let e = json(r#"{"mac_violation":"block"}"#).unwrap_err();
        assert!(e.contains("unknown variant `block`"), "{e}");
        assert!(json("7").is_err());
    }

    #[test]
    fn off_turns_every_guard_off_and_strict_turns_on_what_the_readme_says() {
        assert!(SecuritySpec::default().guard_config().is_off());
        let strict = SecuritySpec::strict().guard_config();
        let lock = strict.mac_lock.as_ref().unwrap();
        assert_eq!(
            (lock.macs.len(), lock.learn, lock.violation),
            (0, 1, GuardViolation::Drop)
        );
        let ip = strict.ip_guard.as_ref().unwrap();
        assert!(ip.dhcp && ip.ipv6_link_local && ip.prefixes.is_empty());
        assert!(strict.dhcp_guard && strict.ra_guard);
    }

    #[test]
    fn keys_refine_the_profile_and_each_guard_turns_on_alone() {
        let mut s = SecuritySpec::strict();
        s.router = Some(true);
        s.ip_guard = Some(vec![]);
        s.mac_limit = Some(0);
        let c = s.guard_config();
        assert!(!c.ra_guard && c.dhcp_guard && c.ip_guard.is_none() && c.mac_lock.is_none());

        let only = |f: fn(&mut SecuritySpec)| {
            let mut s = SecuritySpec::default();
            f(&mut s);
            s.guard_config()
        };
        assert!(only(|s| s.dhcp_server = Some(false)).dhcp_guard);
        assert!(only(|s| s.router = Some(false)).ra_guard);
        assert_eq!(only(|s| s.mac_limit = Some(3)).mac_lock.unwrap().learn, 3);
        let g = only(|s| s.ip_guard = Some(vec!["10.0.0.0/24".parse().unwrap()]));
        let ip = g.ip_guard.unwrap();
        assert!(!ip.dhcp && ip.ipv6_link_local);
        assert!(ip.prefixes[0].contains("10.0.0.77".parse().unwrap()));
    }

    #[test]
    fn merging_keeps_what_the_change_leaves_out_and_a_profile_starts_over() {
        let mut base = SecuritySpec::strict();
        base.router = Some(true);
        let change = SecuritySpec {
            mac_limit: Some(4),
            ..SecuritySpec::default()
        };
        let m = base.merged(&change);
        assert_eq!(
            (m.profile, m.router, m.mac_limit),
            (Some(Profile::Strict), Some(true), Some(4))
        );
        assert_eq!(m.merged(&SecuritySpec::strict()), SecuritySpec::strict());
    }
}
