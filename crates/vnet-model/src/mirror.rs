//! Mirrors (SPAN) as the config file, the saved state and the control API describe
//! them: a [`MirrorSpec`] names its ports by [`PortRef`], so a mirror of a TAP by its
//! name means the same port after a restart; [`MirrorInfo`] is one as it runs.

use serde::{Deserialize, Serialize};

pub use vnet_core::switch::mirror::{MirrorCounters, MirrorDirection};

/// A port as a mirror names it: its id, or the name of a port that outlives a restart
/// (a TAP's or host interface's ifname, a vhost-user port's name). A number is an id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortRef {
    Id(u32),
    Name(String),
}

/// A number is a port id, anything else a port's name (as on the command line).
impl std::str::FromStr for PortRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse() {
            Ok(id) => Ok(PortRef::Id(id)),
            Err(_) if crate::is_valid_ifname(s) => Ok(PortRef::Name(s.to_string())),
            Err(_) => Err(format!(
                "invalid port {s:?}: say a port id or a port's name (a TAP, interface or \
                 vhost-user name)"
            )),
        }
    }
}

impl std::fmt::Display for PortRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortRef::Id(id) => write!(f, "{id}"),
            PortRef::Name(name) => f.write_str(name),
        }
    }
}

/// A mirror: copies of the frames of `sources` (per `direction`) go to `destination`,
/// which then takes no other traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorSpec {
    /// 1–32 characters of `[A-Za-z0-9_.-]`, unique within its vnet.
    pub name: String,
    pub sources: Vec<PortRef>,
    #[serde(default)]
    pub direction: MirrorDirection,
    pub destination: PortRef,
}

/// Longest mirror name.
pub const MAX_MIRROR_NAME: usize = 32;

impl MirrorSpec {
    /// Whether the spec makes sense on its own (its ports may not exist yet).
    pub fn check(&self) -> Result<(), String> {
        let name = &self.name;
        let name_ok = !name.is_empty()
            && name.len() <= MAX_MIRROR_NAME
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !name_ok {
            return Err(format!(
                "invalid mirror name {name:?}: use 1-{MAX_MIRROR_NAME} characters of \
                 A-Z a-z 0-9 _ . -"
            ));
        }
        if self.sources.is_empty() {
            return Err(format!("mirror {name:?} has no source port"));
        }
        if self.sources.contains(&self.destination) {
            return Err(format!(
                "mirror {name:?}: destination port {} is also one of its sources",
                self.destination
            ));
        }
        for (i, s) in self.sources.iter().enumerate() {
            if self.sources[..i].contains(s) {
                return Err(format!("mirror {name:?} names source port {s} twice"));
            }
        }
        Ok(())
    }

    /// `mirrors` plus this one, checked together: names unique, and no port both a
    /// destination and a source (a destination sends nothing into the vnet and takes
    /// nothing but copies, so mirroring it shows nothing).
    pub fn check_among(&self, mirrors: &[MirrorSpec]) -> Result<(), String> {
        self.check()?;
        let name = &self.name;
        if mirrors.iter().any(|m| &m.name == name) {
            return Err(format!("the vnet has a mirror {name:?} already"));
        }
        for m in mirrors {
            if self.sources.contains(&m.destination) {
                return Err(format!(
                    "mirror {name:?}: source port {} is the destination of mirror {:?}",
                    m.destination, m.name
                ));
            }
            if m.sources.contains(&self.destination) {
                return Err(format!(
                    "mirror {name:?}: destination port {} is a source of mirror {:?}",
                    self.destination, m.name
                ));
            }
        }
        Ok(())
    }
}

/// Checks a vnet's mirrors together ([`MirrorSpec::check_among`] for each).
pub fn check_all(mirrors: &[MirrorSpec]) -> Result<(), String> {
    for (i, m) in mirrors.iter().enumerate() {
        m.check_among(&mirrors[..i])?;
    }
    Ok(())
}

/// Whether a mirror copies now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MirrorState {
    /// All its ports exist: it copies.
    Active,
    /// It waits for a port to appear (`MirrorInfo::reason` says which).
    Waiting,
}

/// A mirror as it runs: its spec, its state and its counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorInfo {
    pub name: String,
    pub sources: Vec<PortRef>,
    pub direction: MirrorDirection,
    pub destination: PortRef,
    pub state: MirrorState,
    /// Why it waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The ports it copies from and to, while active.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_ids: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_id: Option<u32>,
    /// Copies queued to the destination (frames, bytes) and copies its full queue
    /// dropped, since the mirror was made or vnetd started.
    pub counters: MirrorCounters,
}

impl MirrorInfo {
    /// The spec it runs.
    pub fn spec(&self) -> MirrorSpec {
        MirrorSpec {
            name: self.name.clone(),
            sources: self.sources.clone(),
            direction: self.direction,
            destination: self.destination.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, sources: &[&str], destination: &str) -> MirrorSpec {
        MirrorSpec {
            name: name.into(),
            sources: sources.iter().map(|s| s.parse().unwrap()).collect(),
            direction: MirrorDirection::Both,
            destination: destination.parse().unwrap(),
        }
    }

    #[test]
    fn port_refs_are_ids_or_names_in_json_and_on_the_command_line() {
        assert_eq!("7".parse(), Ok(PortRef::Id(7)));
        assert_eq!("tap0".parse(), Ok(PortRef::Name("tap0".into())));
        assert!("a/b".parse::<PortRef>().unwrap_err().contains("port id"));
        let m: MirrorSpec = serde_json::from_str(
            r#"{"name":"ids","sources":[3,"tap0"],"direction":"in","destination":"tap9"}"#,
        )
        .unwrap();
        assert_eq!(m.sources, [PortRef::Id(3), PortRef::Name("tap0".into())]);
        assert_eq!(m.direction, MirrorDirection::In);
        let m: MirrorSpec =
            serde_json::from_str(r#"{"name":"a","sources":[1],"destination":2}"#).unwrap();
        assert_eq!(m.direction, MirrorDirection::Both, "the default");
    }

    #[test]
    fn an_unknown_direction_is_refused_by_name() {
        let err = serde_json::from_str::<MirrorSpec>(
            r#"{"name":"a","sources":[1],"direction":"up","destination":2}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown variant `up`"), "{err}");
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let err = |m: MirrorSpec, others: &[MirrorSpec]| m.check_among(others).unwrap_err();
        assert!(err(spec("", &["1"], "2"), &[]).contains("invalid mirror name"));
        assert!(err(spec("a b", &["1"], "2"), &[]).contains("invalid mirror name"));
        assert_eq!(
            err(spec("m", &[], "2"), &[]),
            "mirror \"m\" has no source port"
        );
        assert_eq!(
            err(spec("m", &["1", "tap2"], "tap2"), &[]),
            "mirror \"m\": destination port tap2 is also one of its sources"
        );
        assert_eq!(
            err(spec("m", &["1", "1"], "2"), &[]),
            "mirror \"m\" names source port 1 twice"
        );
        let ids = spec("ids", &["1"], "9");
        assert_eq!(
            err(spec("ids", &["3"], "4"), std::slice::from_ref(&ids)),
            "the vnet has a mirror \"ids\" already"
        );
        assert_eq!(
            err(spec("m", &["9"], "4"), std::slice::from_ref(&ids)),
            "mirror \"m\": source port 9 is the destination of mirror \"ids\""
        );
        assert_eq!(
            err(spec("m", &["4"], "1"), std::slice::from_ref(&ids)),
            "mirror \"m\": destination port 1 is a source of mirror \"ids\""
        );
        // Two mirrors may share a destination.
        spec("m", &["2"], "9").check_among(&[ids]).unwrap();
    }

    #[test]
    fn a_mirror_reports_its_state_flat() {
        let m = spec("m", &["1"], "tap9");
        let info = MirrorInfo {
            name: m.name.clone(),
            sources: m.sources.clone(),
            direction: m.direction,
            destination: m.destination.clone(),
            state: MirrorState::Waiting,
            reason: Some("no port tap9".into()),
            source_ids: Vec::new(),
            destination_id: None,
            counters: MirrorCounters::default(),
        };
        assert_eq!(info.spec(), m);
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["state"], "waiting");
        assert_eq!(json["reason"], "no port tap9");
        assert_eq!(json["destination"], "tap9");
        assert_eq!(serde_json::from_value::<MirrorInfo>(json).unwrap(), info);
    }
}
