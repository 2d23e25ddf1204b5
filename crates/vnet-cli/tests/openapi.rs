//! docs/openapi.yaml must not drift from the API: every route of the table in
//! `vnet_control::types` is documented with the same bodies and success status, and
//! what the Rust types serialize validates against the documented schemas, with no
//! field undocumented and no documented field that the types lack.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::{json, Value};
use vnet_control::policy::security::{SecurityReport, SecuritySpec};
use vnet_control::{
    Account, AccountInfo, ApiError, Counters, DhcpSpec, HostAdapterInfo, HostAdapterSpec, Ipv6Info,
    Lease, LinkState, MacEntry, NetworkInfo, NetworkSockets, NetworkSpec, PolicyPatch,
    PolicyReport, PortInfo, PortKind, PortPolicy, PortSpec, RaCounters, RaSpec, Reservation,
    UplinkMode, UplinkSpec, Version, VlanMode,
};

use vnet_control::policy::acl::{AclChainReport, AclRuleReport, AclSpec, ConntrackReport};
use vnet_control::{AclInsert, AclReport};

const OPENAPI: &str = include_str!("../../../docs/openapi.yaml");
const TYPES_RS: &str = include_str!("../../vnet-model/src/lib.rs");

fn doc() -> Value {
    serde_yaml_ng::from_str(OPENAPI).expect("docs/openapi.yaml is valid YAML")
}

/// One row of the route table in types.rs.
#[derive(Debug)]
struct Route {
    method: String,
    path: String,
    /// The request body's type, e.g. `NetworkSpec`.
    body: Option<String>,
    status: String,
    /// The answer's type; `[T]` for an array.
    answer: Option<String>,
}

fn routes() -> Vec<Route> {
    let mut routes = Vec::new();
    for line in TYPES_RS.lines() {
        let Some(row) = line.strip_prefix("//! |") else {
            continue;
        };
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        if !matches!(cells[0], "GET" | "POST" | "PUT" | "PATCH" | "DELETE") {
            continue;
        }
        // [`T`] is a rustdoc link to T; `[T]` is an array of T; prose is not a type.
        let type_name = |cell: &str| {
            let cell = cell.trim();
            let cell = cell
                .strip_prefix("[`")
                .and_then(|c| c.strip_suffix("`]"))
                .unwrap_or(cell)
                .trim_matches('`');
            let is_type = !cell.is_empty() && !cell.contains(char::is_whitespace);
            is_type.then(|| cell.to_string())
        };
        let (status, answer) = match cells[3].split_once(' ') {
            Some((code, rest)) if code.chars().all(|c| c.is_ascii_digit()) => {
                (code.to_string(), type_name(rest))
            }
            _ if cells[3].chars().all(|c| c.is_ascii_digit()) => (cells[3].to_string(), None),
            _ => ("200".to_string(), type_name(cells[3])),
        };
        routes.push(Route {
            method: cells[0].to_lowercase(),
            path: cells[1].trim_matches('`').to_string(),
            body: type_name(cells[2]),
            status,
            answer,
        });
    }
    assert!(
        routes.len() >= 11,
        "the route table in types.rs was not found"
    );
    routes
}

/// `{"$ref": "#/components/schemas/T"}` → `T`; `{"type": "array", "items": …}` → `[T]`.
fn schema_name(schema: &Value) -> Option<String> {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        return r.rsplit('/').next().map(String::from);
    }
    if schema.get("type")? == "array" {
        return Some(format!("[{}]", schema_name(schema.get("items")?)?));
    }
    None
}

#[test]
fn it_is_an_openapi_3_1_document_whose_references_resolve() {
    let doc = doc();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));
    assert!(doc["info"]["title"].is_string());
    fn refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    out.push(r.clone());
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in all {
        let pointer = r.strip_prefix('#').expect("only local references");
        assert!(doc.pointer(pointer).is_some(), "dangling $ref {r}");
    }
}

#[test]
fn every_route_of_the_table_is_documented_with_its_bodies() {
    let doc = doc();
    let routes = routes();
    for route in &routes {
        let operation = &doc["paths"][&route.path][&route.method];
        assert!(
            operation.is_object(),
            "{} {} is not in docs/openapi.yaml",
            route.method,
            route.path
        );
        let success = &operation["responses"][&route.status];
        assert!(
            success.is_object(),
            "{} {}: no {} answer documented",
            route.method,
            route.path,
            route.status
        );
        if let Some(answer) = &route.answer {
            let schema = &success["content"]["application/json"]["schema"];
            assert_eq!(
                schema_name(schema).as_ref(),
                Some(answer),
                "{} {}: answer schema",
                route.method,
                route.path
            );
        }
        let body = &operation["requestBody"]["content"]["application/json"]["schema"];
        assert_eq!(
            schema_name(body),
            route.body,
            "{} {}: request body schema",
            route.method,
            route.path
        );
    }
    // …and nothing the table does not have.
    let table: BTreeSet<(String, String)> = routes
        .iter()
        .map(|r| (r.path.clone(), r.method.clone()))
        .collect();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if method != "parameters" {
                assert!(
                    table.contains(&(path.clone(), method.clone())),
                    "docs/openapi.yaml has {method} {path}, which the table in types.rs lacks"
                );
            }
        }
    }
}

/// Just enough JSON Schema to check serde's output: `$ref`, `oneOf`, `const`, `enum`,
/// `type`, `properties`, `required`, `additionalProperties`, `items`, `minimum`,
/// `maximum`. Strict: an object may hold only documented properties.
struct Checker {
    doc: Value,
    /// (schema name, property) pairs some sample had.
    seen: BTreeSet<(String, String)>,
}

impl Checker {
    fn new() -> Checker {
        Checker {
            doc: doc(),
            seen: BTreeSet::new(),
        }
    }

    fn check_named(&mut self, name: &str, value: &impl Serialize) {
        let value = serde_json::to_value(value).unwrap();
        let schema = json!({ "$ref": format!("#/components/schemas/{name}") });
        if let Err(e) = self.check(&schema, &value, name, "") {
            panic!("{name} sample does not match docs/openapi.yaml: {e}\nsample: {value:#}");
        }
    }

    fn check(&mut self, schema: &Value, value: &Value, name: &str, at: &str) -> Result<(), String> {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            let target = self
                .doc
                .pointer(&r[1..])
                .cloned()
                .ok_or(format!("bad $ref {r}"))?;
            let name = r.rsplit('/').next().unwrap().to_string();
            return self.check(&target, value, &name, at);
        }
        if let Some(choices) = schema.get("oneOf").and_then(Value::as_array) {
            let matching: Vec<&Value> = choices
                .iter()
                .filter(|c| {
                    let mut trial = Checker {
                        doc: self.doc.clone(),
                        seen: BTreeSet::new(),
                    };
                    trial.check(c, value, name, at).is_ok()
                })
                .collect();
            return match matching.as_slice() {
                [one] => self.check(one, value, name, at),
                _ => Err(format!("{at}: {} of oneOf match", matching.len())),
            };
        }
        if let Some(constant) = schema.get("const") {
            if constant != value {
                return Err(format!("{at}: {value} is not {constant}"));
            }
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array) {
            if !options.contains(value) {
                return Err(format!("{at}: {value} is not one of {options:?}"));
            }
        }
        match schema.get("type").and_then(Value::as_str) {
            None => Ok(()),
            Some("object") => self.check_object(schema, value, name, at),
            Some("array") => {
                let items = value
                    .as_array()
                    .ok_or(format!("{at}: {value} is not an array"))?;
                for (i, item) in items.iter().enumerate() {
                    self.check(&schema["items"], item, name, &format!("{at}[{i}]"))?;
                }
                Ok(())
            }
            Some("integer") => {
                let n = value
                    .as_i64()
                    .map(i128::from)
                    .or(value.as_u64().map(i128::from));
                let n = n.ok_or(format!("{at}: {value} is not an integer"))?;
                let bound = |key: &str| schema.get(key).and_then(Value::as_i64).map(i128::from);
                if bound("minimum").is_some_and(|min| n < min)
                    || bound("maximum").is_some_and(|max| n > max)
                {
                    return Err(format!("{at}: {n} is out of the documented range"));
                }
                Ok(())
            }
            Some("string") if value.is_string() => Ok(()),
            Some("boolean") if value.is_boolean() => Ok(()),
            Some("null") if value.is_null() => Ok(()),
            Some(other) => Err(format!("{at}: {value} is not of type {other}")),
        }
    }

    fn check_object(
        &mut self,
        schema: &Value,
        value: &Value,
        name: &str,
        at: &str,
    ) -> Result<(), String> {
        let object = value
            .as_object()
            .ok_or(format!("{at}: {value} is not an object"))?;
        let empty = serde_json::Map::new();
        let properties = schema
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = required.as_str().unwrap();
            if !object.contains_key(key) {
                return Err(format!("{at}: documented as required, {key:?} is missing"));
            }
        }
        for (key, field) in object {
            let where_ = format!("{at}.{key}");
            if let Some(property) = properties.get(key) {
                self.seen.insert((name.to_string(), key.clone()));
                self.check(property, field, name, &where_)?;
            } else if let Some(extra) = schema.get("additionalProperties").filter(|s| s.is_object())
            {
                self.check(extra, field, name, &where_)?;
            } else {
                return Err(format!("{where_}: the field is not documented"));
            }
        }
        Ok(())
    }
}

fn sample_network() -> NetworkInfo {
    NetworkInfo {
        name: "vmnet1".into(),
        mtu: 1500,
        max_frame: 1514,
        mac_aging_secs: 300,
        max_macs_per_port: 1024,
        max_macs: 16384,
        ports: 2,
        macs: 3,
        sockets: NetworkSockets {
            stream: "/run/vnet/vmnet1/stream.sock".into(),
            dgram: "/run/vnet/vmnet1/dgram.sock".into(),
            api: "/run/vnet/vmnet1/api.sock".into(),
        },
        subnet: None,
        ipv6: None,
        host_adapter: None,
        dhcp: None,
        dhcp_counters: None,
        uplink: None,
        nat: None,
        thread: 1,
        transient: false,
        allow_users: Vec::new(),
        allow_groups: Vec::new(),
        policy: PortPolicy::default(),
        captures: Default::default(),
        snooping: vnet_control::SnoopingInfo {
            enabled: true,
            groups: vec![vnet_control::SnoopGroup {
                vlan: 1,
                mac: "01:00:5e:01:01:01".parse().unwrap(),
                ports: vec![2],
            }],
            router_ports: vec![1],
            joins: 3,
            leaves: 1,
            queries: 0,
            group_frames: 10,
            unregistered_frames: 2,
            refused: 0,
        },
    }
}

fn sample_reservation() -> Reservation {
    Reservation {
        mac: "52:54:00:aa:bb:cc".parse().unwrap(),
        ip: "192.168.101.10".parse().unwrap(),
        hostname: Some("db".into()),
        ip6: Some("fd93:4cfa:c459::10".parse().unwrap()),
        duid: Some("00:03:00:01:52:54:00:aa:bb:cc".into()),
    }
}

/// DHCP settings with every optional field present.
fn sample_dhcp() -> DhcpSpec {
    let mut bare_reservation = sample_reservation();
    bare_reservation.mac = "52:54:00:aa:bb:cd".parse().unwrap();
    bare_reservation.hostname = None;
    bare_reservation.ip6 = None;
    bare_reservation.duid = None;
    DhcpSpec {
        enabled: false,
        range: Some([
            "192.168.101.128".parse().unwrap(),
            "192.168.101.253".parse().unwrap(),
        ]),
        server: Some("192.168.101.254".parse().unwrap()),
        lease_secs: 600,
        dns: vec!["192.168.101.1".parse().unwrap()],
        domain: Some("lab.example".into()),
        reservations: vec![sample_reservation(), bare_reservation],
        ipv6: vnet_control::Dhcp6Mode::Stateless,
        range6: Some([
            "fd93:4cfa:c459::1000".parse().unwrap(),
            "fd93:4cfa:c459::1fff".parse().unwrap(),
        ]),
        dns6: vec!["fd93:4cfa:c459::2".parse().unwrap()],
    }
}

/// Router advertisements with every optional field present.
fn sample_ra() -> RaSpec {
    RaSpec {
        enabled: true,
        slaac: false,
        managed: Some(true),
        other: Some(true),
        dns: vec!["fd93:4cfa:c459::2".parse().unwrap()],
        domains: vec!["lab.example".into()],
        interval_secs: 60,
    }
}

/// A host-only vnet with DHCP: every optional field present.
fn sample_host_only_network() -> NetworkInfo {
    NetworkInfo {
        subnet: Some("192.168.101.0/24".parse().unwrap()),
        ipv6: Some(Ipv6Info {
            subnet: "fd93:4cfa:c459::/64".parse().unwrap(),
            derived: true,
            router: Some("fd93:4cfa:c459::2".parse().unwrap()),
            ra: sample_ra(),
            router_lifetime_secs: 1800,
            counters: Some(RaCounters {
                rs_answered: 1,
                ..Default::default()
            }),
        }),
        host_adapter: Some(HostAdapterInfo {
            name: "vmnet1".into(),
            address: "192.168.101.1".parse().unwrap(),
            address6: Some("fd93:4cfa:c459::1".parse().unwrap()),
            port: 1,
        }),
        dhcp: Some(sample_dhcp()),
        dhcp_counters: Some(vnet_control::DhcpCounters {
            solicits6: 2,
            ..Default::default()
        }),
        transient: true,
        allow_users: vec![
            AccountInfo {
                id: 1001,
                name: Some("alice".into()),
            },
            AccountInfo {
                id: 1002,
                name: None,
            },
        ],
        allow_groups: vec![AccountInfo {
            id: 4000,
            name: Some("lab".into()),
        }],
        policy: every_section(),
        ..sample_network()
    }
}

/// A port with every optional field present.
fn sample_port() -> PortInfo {
    PortInfo {
        vxlan: None,
        id: 3,
        kind: PortKind::Api,
        description: "pid 77 (firewall)".into(),
        pid: Some(77),
        uid: Some(1000),
        state: Some(LinkState::Up),
        vlan: VlanMode::Trunk {
            allowed: vec![10, 20],
            native: Some(1),
        },
        mac: Some("02:00:00:00:00:07".parse().unwrap()),
        promiscuous: true,
        macs: vec!["02:00:00:00:00:07".parse().unwrap()],
        counters: Counters {
            rx_frames: 1,
            rx_bytes: 60,
            tx_frames: 2,
            tx_bytes: 120,
            drops: [("queue_full".to_string(), 4)].into(),
        },
        queue_len: 1,
        queue_capacity: 256,
        policy: every_section(),
        enforced: every_section(),
        policy_counters: Some(PolicyReport {
            security: Some(SecurityReport {
                learned_macs: vec!["52:54:00:00:00:01".parse().unwrap()],
                shut_down_by: Some("52:54:00:00:00:02".parse().unwrap()),
            }),
            acl: None,
            rate: Some(Default::default()),
            impair: Some(Default::default()),
        }),
        mirror_destination: vec!["ids".into()],
    }
}

/// A mirror naming ports by id and by name.
fn sample_mirror() -> vnet_control::MirrorSpec {
    vnet_control::MirrorSpec {
        name: "ids".into(),
        sources: vec![
            vnet_control::PortRef::Id(3),
            vnet_control::PortRef::Name("tap-vm2".into()),
        ],
        direction: vnet_control::MirrorDirection::In,
        destination: vnet_control::PortRef::Name("tap-ids".into()),
    }
}

/// Port security with every key set (the table form; the one-word forms are
/// checked on their own).
fn every_security_key() -> SecuritySpec {
    serde_json::from_value(json!({
        "profile": "strict",
        "macs": ["52:54:00:00:00:01"],
        "mac_limit": 2,
        "mac_violation": "shutdown",
        "ip_guard": ["dhcp", "10.0.0.5", "fd00::/64"],
        "ipv6_link_local": false,
        "dhcp_server": true,
        "router": false,
    }))
    .unwrap()
}

/// Filters with every field of a spec and of a rule.
fn sample_acl() -> AclSpec {
    let rules = [
        "drop tcp src 10.0.0.0/8 dst 10.1.0.5 src-port 1000-2000 dst-port 80 src-mac 52:54:00:00:00:01 dst-mac 52:54:00:00:00:02 vlan 10",
        "allow icmpv6 type 128 code 0",
        "allow ethertype 0x88cc",
        "allow udp established",
    ];
    AclSpec {
        inbound: vec!["drop arp".parse().unwrap()],
        outbound: rules.iter().map(|r| r.parse().unwrap()).collect(),
        default_in: vnet_control::AclAction::Drop,
        default_out: vnet_control::AclAction::Drop,
        conntrack: true,
    }
}

/// A policy with every section.
fn every_section() -> PortPolicy {
    PortPolicy {
        security: Some(every_security_key()),
        acl: Some(Default::default()),
        rate: Some(serde_json::from_value(json!({
            "in": { "rate": "10mbit" },
            "out": { "rate": "1gbit", "burst": "512k" },
            "broadcast_pps": 100, "multicast_pps": 1000, "unknown_unicast_pps": 100
        }))
        .unwrap()),
        impair: Some(serde_json::from_value(json!({
            "in": { "loss_burst": { "p": "1%", "r": "30%", "bad_loss": "50%", "good_loss": "1%" } },
            "out": {
                "delay": "50ms", "jitter": "5ms", "distribution": "normal", "loss": "1%",
                "duplicate": "1%", "reorder": "10%", "corrupt": "0.1%", "rate": "1mbit"
            }
        }))
        .unwrap()),
    }
}

#[test]
fn what_the_types_serialize_matches_the_documented_schemas() {
    let mut checker = Checker::new();
    checker.check_named("NetworkInfo", &sample_network());
    checker.check_named("NetworkInfo", &sample_host_only_network());
    checker.check_named(
        "NetworkInfo",
        &NetworkInfo {
            uplink: Some(UplinkSpec {
                vxlan: None,
                interface: "eth1".into(),
                vlan: Some(10),
                mode: UplinkMode::Access,
                vlans: Vec::new(),
            }),
            ..sample_network()
        },
    );
    checker.check_named(
        "NetworkInfo",
        &NetworkInfo {
            nat: Some(vnet_control::NatInfo {
                gateway: "192.168.108.2".parse().unwrap(),
                dns_upstreams: vec![
                    "127.0.0.53:53".parse().unwrap(),
                    "[fd00::53]:53".parse().unwrap(),
                ],
                flows: 2,
                counters: vnet_control::NatCounters {
                    dns_local: 1,
                    dns_upstream_ipv6: 1,
                    ..Default::default()
                },
            }),
            ..sample_network()
        },
    );
    checker.check_named("NetworkSpec", &NetworkSpec::named("vmnet2"));
    let mut host_only = NetworkSpec::named("vmnet1");
    host_only.subnet = Some("192.168.101.0/24".parse().unwrap());
    host_only.host_adapter = Some(HostAdapterSpec {
        name: Some("vmnet1".into()),
        address: Some("192.168.101.1".parse().unwrap()),
    });
    host_only.dhcp = Some(sample_dhcp());
    host_only.transient = true;
    host_only.allow_users = vec![Account::Name("alice".into()), Account::Id(1002)];
    host_only.allow_groups = vec![Account::Name("lab".into())];
    host_only.policy = every_section();
    host_only.subnet6 = Some("fd93:4cfa:c459::/64".parse().unwrap());
    host_only.ra = sample_ra();
    checker.check_named("NetworkSpec", &host_only);
    let mut v4_only = NetworkSpec::named("v4only");
    v4_only.ipv6 = false;
    v4_only.snooping = false;
    checker.check_named("NetworkSpec", &v4_only);
    host_only.mirrors = vec![sample_mirror()];
    checker.check_named("NetworkSpec", &host_only);
    checker.check_named("MirrorSpec", &sample_mirror());
    let mirror = sample_mirror();
    let active = vnet_control::MirrorInfo {
        name: mirror.name,
        sources: mirror.sources,
        direction: mirror.direction,
        destination: mirror.destination,
        state: vnet_control::MirrorState::Active,
        reason: None,
        source_ids: vec![3, 4],
        destination_id: Some(5),
        counters: vnet_control::MirrorCounters {
            frames: 2,
            bytes: 120,
            drops: 1,
        },
    };
    checker.check_named("MirrorInfo", &active);
    checker.check_named(
        "MirrorInfo",
        &vnet_control::MirrorInfo {
            state: vnet_control::MirrorState::Waiting,
            reason: Some("no port \"tap-ids\"".into()),
            source_ids: Vec::new(),
            destination_id: None,
            ..active
        },
    );
    checker.check_named("PortPolicy", &every_section());
    checker.check_named("PolicyPatch", &PolicyPatch::replace_with(&every_section()));
    checker.check_named(
        "PolicyPatch",
        &PolicyPatch::replace_with(&PortPolicy::default()),
    );
    host_only.host_adapter = Some(HostAdapterSpec::default());
    host_only.dhcp = Some(DhcpSpec::default());
    checker.check_named("NetworkSpec", &host_only);
    let mut bridged = NetworkSpec::named("lan10");
    bridged.uplink = Some(UplinkSpec {
        vxlan: None,
        interface: "eth1".into(),
        vlan: Some(10),
        mode: UplinkMode::Access,
        vlans: Vec::new(),
    });
    checker.check_named("NetworkSpec", &bridged);
    checker.check_named(
        "UplinkSpec",
        &UplinkSpec {
            vxlan: None,
            interface: "eth1".into(),
            vlan: None,
            mode: UplinkMode::Trunk,
            vlans: vec![10, 20],
        },
    );
    let mut vx = vnet_control::VxlanSpec::new(100, "192.0.2.1".parse().unwrap());
    vx.remotes = vec!["192.0.2.2".parse().unwrap()];
    vx.source_ports = Some([40000, 40100]);
    vx.fdb = vec![vnet_control::FdbSpec {
        mac: "02:00:00:00:00:07".parse().unwrap(),
        remote: "192.0.2.2".parse().unwrap(),
    }];
    checker.check_named(
        "UplinkSpec",
        &UplinkSpec {
            vxlan: Some(vx.clone()),
            vlan: Some(10),
            ..UplinkSpec::default()
        },
    );
    vx.remotes.clear();
    vx.group = Some("239.1.1.1".parse().unwrap());
    checker.check_named("VxlanSpec", &vx);
    checker.check_named(
        "FdbEntry",
        &vnet_control::FdbEntry {
            mac: "02:00:00:00:00:07".parse().unwrap(),
            remote: "192.0.2.2".parse().unwrap(),
            age_secs: 3,
            fixed: false,
        },
    );
    checker.check_named(
        "RemoteSpec",
        &vnet_control::RemoteSpec {
            address: "2001:db8::2".parse().unwrap(),
        },
    );
    checker.check_named(
        "PortInfo",
        &PortInfo {
            vxlan: Some(vnet_control::VxlanInfo {
                vni: 100,
                socket: "192.0.2.1:4789".into(),
                remotes: vec![vnet_control::RemoteInfo {
                    address: "192.0.2.2".parse().unwrap(),
                    rx_frames: 1,
                    rx_bytes: 60,
                    tx_frames: 2,
                    tx_bytes: 120,
                    drops: 0,
                }],
                socket_drops: [("short".to_string(), 1)].into(),
            }),
            ..sample_port()
        },
    );
    checker.check_named("DhcpSpec", &DhcpSpec::default());
    checker.check_named("DhcpSpec", &sample_dhcp());
    checker.check_named("DhcpPatch", &vnet_control::DhcpPatch::default());
    checker.check_named(
        "DhcpPatch",
        &vnet_control::DhcpPatch {
            enabled: Some(false),
            range: Some([
                "192.168.101.100".parse().unwrap(),
                "192.168.101.199".parse().unwrap(),
            ]),
            server: Some("192.168.101.254".parse().unwrap()),
            lease_secs: Some(600),
            dns: Some(vec![]),
            domain: Some("lab.test".into()),
            ipv6: Some(vnet_control::Dhcp6Mode::Off),
            range6: Some([
                "fd93:4cfa:c459::1000".parse().unwrap(),
                "fd93:4cfa:c459::10ff".parse().unwrap(),
            ]),
            dns6: Some(vec![]),
        },
    );
    let nat = vnet_control::NatSpec {
        gateway: Some("192.168.108.2".parse().unwrap()),
        dns_upstreams: vec!["127.0.0.1:5353".parse().unwrap()],
        host_loopback: true,
        forward: vec![vnet_control::ForwardSpec {
            proto: vnet_control::ForwardProto::Tcp,
            host: "127.0.0.1:8080".parse().unwrap(),
            guest: "192.168.108.10:80".parse().unwrap(),
        }],
        ..Default::default()
    };
    checker.check_named("NatSpec", &nat);
    checker.check_named("NatSpec", &vnet_control::NatSpec::default());
    let mut nat_net = NetworkSpec::named("vmnet8");
    nat_net.subnet = Some("192.168.108.0/24".parse().unwrap());
    nat_net.nat = Some(nat);
    checker.check_named("NetworkSpec", &nat_net);
    checker.check_named("Reservation", &sample_reservation());
    let lease = Lease {
        mac: "52:54:00:12:34:56".parse().unwrap(),
        ip: "192.168.101.128".parse().unwrap(),
        duid: None,
        hostname: Some("web1".into()),
        expires: 1_700_000_000,
        state: "bound".into(),
    };
    checker.check_named("Lease", &lease);
    checker.check_named(
        "Lease",
        &Lease {
            ip: "fd93:4cfa:c459::1000".parse().unwrap(),
            duid: Some("00:03:00:01:52:54:00:12:34:56".into()),
            ..lease.clone()
        },
    );
    checker.check_named(
        "Lease",
        &Lease {
            hostname: None,
            ..lease
        },
    );
    checker.check_named("PortInfo", &sample_port());
    let mut access_port = sample_port();
    access_port.pid = None;
    access_port.uid = None;
    access_port.state = None;
    access_port.mac = None;
    access_port.vlan = VlanMode::Access { vlan: 10 };
    access_port.kind = PortKind::Stream;
    checker.check_named("PortInfo", &access_port);
    checker.check_named(
        "PortSpec",
        &PortSpec::Tap {
            ifname: "tap0".into(),
            vlan: VlanMode::Trunk {
                allowed: vec![10],
                native: None,
            },
            policy: every_section(),
        },
    );
    checker.check_named(
        "PortSpec",
        &PortSpec::Interface {
            interface: "fc-tap0".into(),
            vlan: VlanMode::Access { vlan: 10 },
            policy: every_section(),
        },
    );
    checker.check_named("LinkState", &LinkState::Down);
    checker.check_named(
        "PortSpec",
        &PortSpec::VhostUser {
            name: "vm1".into(),
            vlan: VlanMode::Access { vlan: 10 },
            policy: every_section(),
        },
    );
    checker.check_named(
        "MacEntry",
        &MacEntry {
            vlan: 1,
            mac: "52:54:00:12:34:56".parse().unwrap(),
            port: 3,
            age_secs: 9,
            fixed: false,
        },
    );
    checker.check_named("SecuritySpec", &SecuritySpec::strict());
    checker.check_named("SecuritySpec", &SecuritySpec::default());
    checker.check_named(
        "Version",
        &Version {
            version: "0.1.0".into(),
            api: "v1".into(),
        },
    );
    checker.check_named(
        "Reloaded",
        &vnet_control::Reloaded {
            changes: vec!["create vnet lab".into()],
        },
    );
    checker.check_named(
        "ApiError",
        &ApiError {
            error: "no vnet named x".into(),
        },
    );
    for kind in [
        PortKind::Stream,
        PortKind::Dgram,
        PortKind::Tap,
        PortKind::Api,
        PortKind::Vde,
        PortKind::Service,
        PortKind::Uplink,
        PortKind::VhostUser,
        PortKind::Interface,
    ] {
        checker.check_named("PortKind", &kind);
    }

    let acl = sample_acl();
    checker.check_named("AclSpec", &acl);
    checker.check_named("AclSpec", &AclSpec::default());
    let chain = |rules: &[vnet_control::policy::acl::AclRule]| AclChainReport {
        rules: rules
            .iter()
            .map(|rule| AclRuleReport {
                rule: rule.clone(),
                frames: 3,
                bytes: 222,
            })
            .collect(),
        default: vnet_control::AclAction::Drop,
        default_frames: 1,
        default_bytes: 60,
    };
    let report = AclReport {
        inbound: chain(&acl.inbound),
        outbound: chain(&acl.outbound),
        conntrack: Some(ConntrackReport {
            entries: 1,
            max: 8192,
            refused: 0,
        }),
    };
    checker.check_named("AclReport", &report);
    checker.check_named(
        "PolicyReport",
        &PolicyReport {
            acl: Some(report.clone()),
            security: None,
            rate: None,
            impair: None,
        },
    );
    checker.check_named(
        "AclInsert",
        &AclInsert {
            rule: acl.outbound[0].clone(),
            position: Some(1),
        },
    );
    checker.check_named("AclAction", &vnet_control::AclAction::Drop);

    // Every documented property of every object schema was produced by some sample.
    let doc = doc();
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        for property in schema
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flat_map(|p| p.keys())
        {
            assert!(
                checker.seen.contains(&(name.clone(), property.clone())),
                "{name}.{property} is documented but the Rust type never has it"
            );
        }
    }
}

#[test]
fn documented_defaults_are_the_real_defaults() {
    let doc = doc();
    let spec = &doc["components"]["schemas"]["NetworkSpec"]["properties"];
    let minimal: NetworkSpec = serde_json::from_value(json!({ "name": "x" })).unwrap();
    assert_eq!(spec["mtu"]["default"], json!(minimal.mtu));
    assert_eq!(
        spec["mac_aging_secs"]["default"],
        json!(minimal.mac_aging_secs)
    );
    assert_eq!(
        spec["max_macs_per_port"]["default"],
        json!(minimal.max_macs_per_port)
    );
    assert_eq!(spec["max_macs"]["default"], json!(minimal.max_macs));

    let dhcp = &doc["components"]["schemas"]["DhcpSpec"]["properties"];
    let minimal: DhcpSpec = serde_json::from_value(json!({})).unwrap();
    assert_eq!(minimal, DhcpSpec::default());
    assert_eq!(dhcp["enabled"]["default"], json!(minimal.enabled));
    assert_eq!(dhcp["lease_secs"]["default"], json!(minimal.lease_secs));

    let nat = &doc["components"]["schemas"]["NatSpec"]["properties"];
    let minimal: vnet_control::NatSpec = serde_json::from_value(json!({})).unwrap();
    assert_eq!(minimal, vnet_control::NatSpec::default());
    assert_eq!(nat["dns"]["default"], json!(minimal.dns));
    assert_eq!(
        nat["udp_timeout_secs"]["default"],
        json!(minimal.udp_timeout_secs)
    );
    assert_eq!(
        nat["host_loopback"]["default"],
        json!(minimal.host_loopback)
    );

    let tap = &doc["components"]["schemas"]["TapPortSpec"]["properties"];
    let PortSpec::Tap { vlan, .. } =
        serde_json::from_value(json!({ "kind": "tap", "ifname": "t" })).unwrap()
    else {
        panic!("a tap spec")
    };
    assert_eq!(tap["vlan"]["default"], serde_json::to_value(vlan).unwrap());
    let vhost_user = &doc["components"]["schemas"]["VhostUserPortSpec"]["properties"];
    let PortSpec::VhostUser { vlan, .. } =
        serde_json::from_value(json!({ "kind": "vhost-user", "name": "vm1" })).unwrap()
    else {
        panic!("a vhost-user spec")
    };
    assert_eq!(
        vhost_user["vlan"]["default"],
        serde_json::to_value(vlan).unwrap()
    );
}

#[test]
fn request_bodies_reject_what_the_schema_forbids() {
    // additionalProperties: false in the document is deny_unknown_fields in the types.
    let doc = doc();
    for name in [
        "NetworkSpec",
        "TapPortSpec",
        "VhostUserPortSpec",
        "HostAdapterSpec",
        "DhcpSpec",
        "Reservation",
    ] {
        assert_eq!(
            doc["components"]["schemas"][name]["additionalProperties"],
            json!(false),
            "{name}"
        );
    }
    assert!(serde_json::from_value::<NetworkSpec>(json!({ "name": "x", "colour": 1 })).is_err());
    assert!(serde_json::from_value::<HostAdapterSpec>(json!({ "mtu": 1 })).is_err());
    assert!(serde_json::from_value::<DhcpSpec>(json!({ "gateway": "10.0.0.1" })).is_err());
    assert!(serde_json::from_value::<Reservation>(
        json!({ "mac": "52:54:00:aa:bb:cc", "ip": "10.0.0.9", "x": 1 })
    )
    .is_err());
    assert!(
        serde_json::from_value::<PortSpec>(json!({ "kind": "tap", "ifname": "t", "x": 1 }))
            .is_err()
    );
}
