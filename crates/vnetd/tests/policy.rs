//! The per-port policy's plumbing (README, "Interposition"): a vnet's policy applies to
//! its client ports, a port's own replaces it section by section, both change live,
//! and what vnetd made from a spec keeps its own policy across a restart. What each
//! section enforces is tested with the section.

use std::os::unix::net::UnixStream;

use vnet_control::{PolicyPatch, PortKind, PortPolicy};
use vnet_testbed::api::{client, find_kind, port, wait_ports};
use vnet_testbed::Daemon;

const CONFIG: &str = r#"
[[network]]
name = "lab"

[network.policy]
rate = {}

[[network.port]]
vhost_user = "vm1"

[network.port.policy]
acl = {}
"#;

/// The sections a policy has, by name.
fn sections(p: &PortPolicy) -> Vec<&'static str> {
    let mut names = Vec::new();
    for (name, set) in [
        ("security", p.security.is_some()),
        ("acl", p.acl.is_some()),
        ("rate", p.rate.is_some()),
        ("impair", p.impair.is_some()),
    ] {
        if set {
            names.push(name);
        }
    }
    names
}

fn patch(json: &str) -> PolicyPatch {
    serde_json::from_str(json).unwrap()
}

#[test]
fn a_vnet_s_policy_reaches_its_client_ports_a_port_s_own_replaces_it_and_both_persist() {
    let mut d = Daemon::start(Some(CONFIG));
    let c = client(&d);
    assert_eq!(sections(&c.policy("lab").unwrap()), ["rate"]);
    let vm1 = find_kind(&d, "lab", PortKind::VhostUser).expect("the configured port");
    assert_eq!(sections(&vm1.policy), ["acl"]);
    assert_eq!(sections(&vm1.enforced), ["acl", "rate"]);

    // A port's own section replaces the vnet's; `null` takes its own away.
    let vm1 = c
        .set_port_policy("lab", vm1.id, &patch(r#"{"acl": null, "security": {}}"#))
        .unwrap();
    assert_eq!(sections(&vm1.policy), ["security"]);
    assert_eq!(sections(&vm1.enforced), ["security", "rate"]);

    // A socket client's port takes the vnet's policy as it connects, and follows it.
    let _client = UnixStream::connect(d.net_dir("lab").join("stream.sock")).unwrap();
    wait_ports(&d, "lab", PortKind::Stream, 1);
    let stream = find_kind(&d, "lab", PortKind::Stream).unwrap();
    assert!(stream.policy.is_empty());
    assert_eq!(sections(&stream.enforced), ["rate"]);
    let vnet = c
        .set_policy("lab", &patch(r#"{"rate": null, "impair": {}}"#))
        .unwrap();
    assert_eq!(sections(&vnet), ["impair"]);
    assert_eq!(sections(&port(&d, "lab", stream.id).enforced), ["impair"]);
    assert_eq!(
        sections(&port(&d, "lab", vm1.id).enforced),
        ["security", "impair"]
    );
    let shown = d.cli_ok(&["port", "show", "lab", &vm1.id.to_string()]);
    assert!(
        shown.contains("security") && shown.contains("(port's own)"),
        "{shown}"
    );
    assert!(
        shown.contains("impair") && shown.contains("(the vnet's)"),
        "{shown}"
    );

    // An empty patch changes nothing; a command line that asks for nothing is refused.
    assert_eq!(
        sections(&c.set_policy("lab", &PolicyPatch::default()).unwrap()),
        ["impair"]
    );
    let bogus = d.cli(&["port", "set", "lab", &vm1.id.to_string()]);
    assert_eq!(
        bogus.status.code(),
        Some(2),
        "nothing to change is a usage error"
    );

    // Saved before answered: the vnet's policy and the configured port's own are back
    // after a restart (the config file did not change, so the saved state stands).
    d.restart();
    let c = client(&d);
    assert_eq!(sections(&c.policy("lab").unwrap()), ["impair"]);
    let vm1 = find_kind(&d, "lab", PortKind::VhostUser).unwrap();
    assert_eq!(sections(&vm1.policy), ["security"], "{}", d.log());
    assert_eq!(sections(&vm1.enforced), ["security", "impair"]);
    let exported = d.cli_ok(&["config", "export"]);
    assert!(exported.contains("[network.policy.impair]"), "{exported}");
    // `security = {}` (every guard off) exports as its one-word form.
    assert!(exported.contains("security = \"off\""), "{exported}");
}

#[test]
fn the_vnet_s_own_services_take_no_vnet_policy() {
    let toml = "[[network]]\nname = \"nat\"\nsubnet = \"10.66.0.0/24\"\ndhcp = {}\n\
                nat = {}\n\n[network.policy]\nrate = {}\n";
    let d = Daemon::start(Some(toml));
    let c = client(&d);
    let services: Vec<_> = c
        .ports("nat")
        .unwrap()
        .into_iter()
        .filter(|p| p.kind == PortKind::Service)
        .collect();
    assert_eq!(services.len(), 2, "DHCP and NAT: {services:?}");
    for s in &services {
        assert!(
            s.enforced.is_empty(),
            "a service takes no vnet policy: {s:?}"
        );
    }
    let e = d.cli(&["net", "policy", "nat"]);
    assert!(e.status.success());
    let text = String::from_utf8_lossy(&e.stdout);
    assert!(text.contains("rate"), "{text}");
}
