//! The running configuration as a config file (`GET /v1/config`, `vnet config export`):
//! the model types serialized as they are, so that a field added to them is exported
//! without a change here.

use serde::Serialize;
use vnet_model::{MirrorSpec, NetworkSpec};

use super::SavedNet;
use crate::config::{AccessConfig, LimitsConfig, PortConfig};

/// The daemon-wide settings in effect (flags folded in).
#[derive(Debug, Clone, Serialize)]
pub struct Daemon {
    pub threads: usize,
    pub busy_poll_us: u32,
    pub access: AccessConfig,
    pub limits: LimitsConfig,
}

#[derive(Serialize)]
struct File<'a> {
    #[serde(flatten)]
    daemon: &'a Daemon,
    network: Vec<Network>,
}

/// One `[[network]]` table: the spec's keys, then its `[[network.port]]` and
/// `[[network.mirror]]` tables.
#[derive(Serialize)]
struct Network {
    #[serde(flatten)]
    spec: NetworkSpec,
    #[serde(rename = "port", skip_serializing_if = "Vec::is_empty")]
    ports: Vec<PortConfig>,
    #[serde(rename = "mirror", skip_serializing_if = "Vec::is_empty")]
    mirrors: Vec<MirrorSpec>,
}

/// A config file that `vnetd --config` accepts and that runs `nets` as they are.
/// Transient vnets are included as ordinary ones: the file names what runs now.
pub fn render(daemon: &Daemon, nets: &[SavedNet]) -> String {
    let network = nets
        .iter()
        .map(|n| Network {
            spec: NetworkSpec {
                transient: false,
                mirrors: Vec::new(),
                ..n.spec.clone()
            },
            ports: n.ports.iter().map(PortConfig::of).collect(),
            mirrors: n.spec.mirrors.clone(),
        })
        .collect();
    let body = toml::to_string(&File { daemon, network }).expect("the model serializes as TOML");
    format!("# vnetd configuration exported from the running daemon (vnet config export)\n\n{body}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::state::of_config;

    #[test]
    fn an_export_parses_back_to_the_same_vnets_and_settings() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/vnetd.toml"
        ))
        .unwrap();
        let config = Config::parse(&text, "examples/vnetd.toml").unwrap();
        let nets = of_config(&config);
        let daemon = Daemon {
            threads: 3,
            busy_poll_us: 20,
            access: config.access.clone(),
            limits: config.limits.clone(),
        };
        let exported = render(&daemon, &nets);
        let back = Config::parse(&exported, "export")
            .unwrap_or_else(|e| panic!("{e}\n--- export ---\n{exported}"));
        assert_eq!(of_config(&back), nets, "{exported}");
        assert_eq!(back.threads, Some(3));
        assert_eq!(back.busy_poll_us, 20);
        assert_eq!(
            render(
                &Daemon {
                    access: back.access.clone(),
                    limits: back.limits.clone(),
                    ..daemon
                },
                &of_config(&back)
            ),
            exported
        );
        assert!(!exported.contains("transient"));
    }
}
