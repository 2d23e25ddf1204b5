//! What vnetd keeps across restarts (`STATE/state.json`), and how it meets the config
//! file.
//!
//! The running vnets are saved after every change; the file also records the config
//! file's vnets as they were last applied. At start (and on reload) the config file is
//! compared with that record vnet by vnet ([`merge`]): a `[[network]]` table that is new,
//! edited or removed since it was last applied sets that vnet (creates, replaces,
//! removes it); every other vnet stays as the API left it. So an API change lasts until
//! the file changes the same vnet, and an edit of the file is never ignored.
//!
//! Pure but for [`mod@file`], which reads and writes the file; [`export`] renders vnets as
//! a config file.

pub mod export;
pub mod file;

use serde::{Deserialize, Serialize};
use vnet_model::{NetworkSpec, PortInfo, PortSpec};

use crate::config::Config;

/// The schema version this vnetd writes. A later schema adds a migration from each
/// older version to [`parse`]; there is none before 1.
pub const SCHEMA: u32 = 1;

/// One vnet as saved, exported and reloaded: its settings and the ports vnetd makes
/// itself (TAP, interface and vhost-user; socket ports come back when their clients reconnect).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedNet {
    pub spec: NetworkSpec,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
}

impl SavedNet {
    pub fn name(&self) -> &str {
        &self.spec.name
    }
}

/// What `state.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// The vnets to run (transient ones are never saved).
    pub networks: Vec<SavedNet>,
    /// The config file's vnets as last applied, which the file is compared with.
    pub config: Vec<SavedNet>,
}

/// The file as written: [`State`] after its schema version.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Versioned {
    version: u32,
    networks: Vec<SavedNet>,
    config: Vec<SavedNet>,
}

/// Why a state file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// Unreadable as any schema: kept aside, and vnetd starts from the config.
    #[error("{0}")]
    Corrupt(String),
    /// Written by a later vnetd: refused, so that a downgrade cannot lose it.
    #[error(
        "schema version {found} is newer than this vnetd's ({SCHEMA}): run the vnetd that \
         wrote it, or move the file aside to start from the configuration"
    )]
    Newer { found: u32 },
}

/// Reads a state file's text, migrating older schemas.
pub fn parse(text: &str) -> Result<State, StateError> {
    let corrupt = |e: String| StateError::Corrupt(e);
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| corrupt(format!("not JSON: {e}")))?;
    let version = value
        .get("version")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| corrupt("no schema \"version\"".into()))?;
    let version = u32::try_from(version).unwrap_or(u32::MAX);
    let state = match version {
        SCHEMA => {
            let v: Versioned = serde_json::from_value(value)
                .map_err(|e| corrupt(format!("schema {SCHEMA}: {e}")))?;
            State {
                networks: v.networks,
                config: v.config,
            }
        }
        v if v > SCHEMA => return Err(StateError::Newer { found: v }),
        v => return Err(corrupt(format!("schema version {v} was never written"))),
    };
    for list in [&state.networks, &state.config] {
        let mut names = std::collections::HashSet::new();
        for net in list {
            net.spec
                .validate()
                .map_err(|e| corrupt(format!("vnet {:?}: {e}", net.name())))?;
            if !names.insert(net.name()) {
                return Err(corrupt(format!("vnet {:?} is listed twice", net.name())));
            }
        }
    }
    Ok(state)
}

/// The file's text for `state`, transient vnets left out.
pub fn render(state: &State) -> String {
    let mut text = serde_json::to_string_pretty(&Versioned {
        version: SCHEMA,
        networks: state
            .networks
            .iter()
            .filter(|n| !n.spec.transient)
            .cloned()
            .collect(),
        config: state.config.clone(),
    })
    .expect("state serializes");
    text.push('\n');
    text
}

/// The vnets the config file describes.
pub fn of_config(config: &Config) -> Vec<SavedNet> {
    config
        .network
        .iter()
        .map(|n| {
            let n = n.get_ref();
            SavedNet {
                spec: n.spec(),
                ports: n.ports.iter().map(|p| p.spec()).collect(),
            }
        })
        .collect()
}

/// The vnets to run: `live` with every vnet the config file changed since `applied`
/// (added, edited or removed) set as the file now says. Order: `live`'s, then the
/// file's new vnets.
pub fn merge(live: &[SavedNet], applied: &[SavedNet], config: &[SavedNet]) -> Vec<SavedNet> {
    let find = |list: &[SavedNet], name: &str| list.iter().find(|n| n.name() == name).cloned();
    let names = changed(applied, config);
    let changed = |name: &str| names.contains(&name);
    let mut out: Vec<SavedNet> = live
        .iter()
        .filter_map(|n| match changed(n.name()) {
            true => find(config, n.name()),
            false => Some(n.clone()),
        })
        .collect();
    for n in config {
        if changed(n.name()) && !out.iter().any(|o| o.name() == n.name()) {
            out.push(n.clone());
        }
    }
    out
}

/// The vnets whose `[[network]]` table was added, edited or removed between `applied`
/// and `config`.
pub fn changed<'a>(applied: &'a [SavedNet], config: &'a [SavedNet]) -> Vec<&'a str> {
    let find = |list: &'a [SavedNet], name: &str| list.iter().find(|n| n.name() == name);
    let mut names: Vec<&str> = applied.iter().chain(config).map(SavedNet::name).collect();
    names.sort_unstable();
    names.dedup();
    names.retain(|name| find(applied, name) != find(config, name));
    names
}

/// What names a port vnetd makes: a TAP or a joined interface by its interface, a
/// vhost-user port by its socket's name. Its VLAN settings may change in place.
pub fn port_identity(spec: &PortSpec) -> (&'static str, &str) {
    match spec {
        PortSpec::Tap { ifname, .. } => ("tap", ifname),
        PortSpec::VhostUser { name, .. } => ("vhost-user", name),
        PortSpec::Interface { interface, .. } => ("interface", interface),
    }
}

/// `spec` with the VLAN settings and own policy that `running` has now.
pub fn as_running(spec: &PortSpec, running: &PortInfo) -> PortSpec {
    let mut spec = spec.clone();
    *spec.vlan_mut() = running.vlan.clone();
    *spec.policy_mut() = running.policy.clone();
    spec
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn net(name: &str, mtu: u32) -> SavedNet {
        let mut spec = NetworkSpec::named(name);
        spec.mtu = mtu;
        SavedNet {
            spec,
            ports: Vec::new(),
        }
    }

    fn names(list: &[SavedNet]) -> Vec<(String, u32)> {
        list.iter()
            .map(|n| (n.name().to_string(), n.spec.mtu))
            .collect()
    }

    #[test]
    fn a_fresh_state_directory_takes_the_config() {
        let config = [net("a", 1500), net("b", 1500)];
        assert_eq!(merge(&[], &[], &config), config);
    }

    #[test]
    fn api_changes_last_until_the_file_changes_that_vnet() {
        let applied = [net("a", 1500), net("b", 1500), net("c", 1500)];
        // The API changed a's MTU, deleted b and created x.
        let live = [net("a", 9000), net("c", 1500), net("x", 1500)];
        // Same file: the live state wins everywhere.
        assert_eq!(merge(&live, &applied, &applied), live);
        // The file edits c, removes a and adds d: those follow the file, b stays
        // deleted, x stays.
        let config = [net("b", 1500), net("c", 4000), net("d", 1500)];
        assert_eq!(changed(&applied, &config), ["a", "c", "d"]);
        assert_eq!(
            names(&merge(&live, &applied, &config)),
            [("c".into(), 4000), ("x".into(), 1500), ("d".into(), 1500)]
        );
        // A file that names a vnet the API created takes it over.
        let config = [net("a", 1500), net("b", 1500), net("c", 1500), net("x", 68)];
        assert_eq!(
            names(&merge(&live, &applied, &config)),
            [("a".into(), 9000), ("c".into(), 1500), ("x".into(), 68)]
        );
    }

    #[test]
    fn the_file_round_trips_and_leaves_transient_vnets_out() {
        let mut t = net("t", 1500);
        t.spec.transient = true;
        let mut a = net("a", 1500);
        a.ports.push(PortSpec::Tap {
            ifname: "tap0".into(),
            vlan: vnet_model::VlanMode::Access { vlan: 10 },
            policy: Default::default(),
        });
        let state = State {
            networks: vec![a.clone(), t],
            config: vec![net("a", 1500)],
        };
        let text = render(&state);
        assert!(text.starts_with("{\n  \"version\": 1,"), "{text}");
        let back = parse(&text).unwrap();
        assert_eq!(back.networks, [a]);
        assert_eq!(back.config, state.config);
    }

    #[test]
    fn a_state_saved_before_vxlan_loads_and_a_vxlan_uplink_round_trips() {
        // A bridged vnet as vnetd wrote it before uplinks could be VXLAN tunnels.
        let old = r#"{"version": 1, "networks": [{"spec": {"name": "lan", "mtu": 1500,
            "mac_aging_secs": 300, "max_macs_per_port": 1024, "max_macs": 16384,
            "uplink": {"interface": "eth1", "vlan": 10, "mode": "access"}},
            "ports": []}], "config": []}"#;
        let state = parse(old).unwrap();
        let uplink = state.networks[0].spec.uplink.clone().unwrap();
        assert_eq!((uplink.interface.as_str(), uplink.vlan), ("eth1", Some(10)));
        assert_eq!(uplink.vxlan, None);
        let mut a = net("overlay", 1450);
        let mut vx = vnet_model::VxlanSpec::new(100, "192.0.2.1".parse().unwrap());
        vx.remotes = vec!["192.0.2.2".parse().unwrap()];
        a.spec.uplink = Some(vnet_model::UplinkSpec {
            vxlan: Some(vx),
            ..Default::default()
        });
        let state = State {
            networks: vec![a.clone()],
            config: Vec::new(),
        };
        assert_eq!(parse(&render(&state)).unwrap().networks, [a]);
    }

    #[test]
    fn other_schemas_are_refused_and_broken_files_called_corrupt() {
        let newer = r#"{"version": 2, "networks": [], "config": []}"#;
        assert_eq!(parse(newer), Err(StateError::Newer { found: 2 }));
        assert!(StateError::Newer { found: 2 }
            .to_string()
            .contains("newer than this vnetd's (1)"));
        for (text, why) in [
            ("{\"version\": 1, \"networks\": [", "not JSON"),
            ("{\"networks\": []}", "no schema"),
            (
                "{\"version\": 0, \"networks\": [], \"config\": []}",
                "never written",
            ),
            (
                "{\"version\": 1, \"networks\": [{}], \"config\": []}",
                "schema 1",
            ),
            (
                "{\"version\": 1, \"networks\": [{\"spec\": {\"name\": \"a b\"}}], \"config\": []}",
                "invalid vnet name",
            ),
            (
                "{\"version\": 1, \"networks\": [{\"spec\": {\"name\": \"a\"}}, \
                 {\"spec\": {\"name\": \"a\"}}], \"config\": []}",
                "listed twice",
            ),
        ] {
            match parse(text) {
                Err(StateError::Corrupt(e)) => assert!(e.contains(why), "{text}: {e}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
