use proptest::prelude::*;

use super::*;

fn rule(s: &str) -> AclRule {
    s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn refused(s: &str) -> String {
    match s.parse::<AclRule>() {
        Ok(r) => panic!("{s:?} parsed as {r:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn rules_read_as_words_and_print_canonically() {
    for (text, canonical) in [
        ("drop tcp dst-port 80", "drop tcp dst-port 80"),
        ("allow established", "allow established"),
        ("allow icmp", "allow icmp"),
        ("allow arp", "allow arp"),
        ("allow icmp type 8 code 0", "allow icmp type 8 code 0"),
        (
            "drop src 10.1.2.3/8 udp dst-port 1000-2000",
            "drop udp src 10.0.0.0/8 dst-port 1000-2000",
        ),
        ("drop dst 10.0.0.5/32", "drop dst 10.0.0.5"),
        (
            "allow  icmpv6 type 135  src fe80::/10",
            "allow icmpv6 src fe80::/10 type 135",
        ),
        ("drop ethertype 0x88CC", "drop ethertype 0x88cc"),
        ("drop ethertype 2048", "drop ipv4"),
        ("drop proto 50", "drop proto 50"),
        ("drop proto 6 src-port 1-1", "drop tcp src-port 1"),
        (
            "drop src-mac 52:54:00:00:00:01 vlan 10",
            "drop src-mac 52:54:00:00:00:01 vlan 10",
        ),
    ] {
        let r = rule(text);
        assert_eq!(r.to_string(), canonical, "{text}");
        assert_eq!(rule(canonical), r);
    }
}

#[test]
fn bad_rules_say_what_to_write() {
    assert!(refused("").contains("say allow or drop"));
    assert!(refused("permit tcp").contains("say allow or drop"));
    assert!(refused("drop dst-port 80").contains("say tcp or udp"));
    assert!(refused("drop icmp dst-port 80").contains("say tcp or udp"));
    assert!(refused("drop tcp type 8").contains("icmp or icmpv6"));
    assert!(refused("drop icmp code 1").contains("type N code M"));
    assert!(refused("allow icmp src fd00::/8").contains("one family"));
    assert!(refused("allow src 10.0.0.0/8 dst fd00::1").contains("one family"));
    assert!(refused("allow ipv6 dst 10.0.0.1").contains("one family"));
    assert!(refused("allow arp established").contains("carries no IP"));
    assert!(refused("allow arp tcp").contains("carries no IP"));
    assert!(refused("drop tcp udp").contains("said twice"));
    assert!(refused("drop tcp dst-port").contains("needs ports"));
    assert!(refused("drop tcp dst-port 2000-1000").contains("low to high"));
    assert!(refused("drop tcp dst-port 70000").contains("1000-2000"));
    assert!(refused("drop vlan 4095").contains("1 to 4094"));
    assert!(refused("drop src 10.0.0.300").contains("prefix like"));
    assert!(refused("drop proto 256").contains("0-255"));
    assert!(refused("drop src-mac 52:54").contains("six hex octets"));
    assert!(refused("drop frobnicate").contains("not part of a rule"));
    assert!(refused("allow proto 50 established").contains("TCP, UDP and ICMP"));
}

#[test]
fn a_spec_reads_from_toml_and_writes_back() {
    let text = r#"
default_out = "drop"
out = [{ action = "allow", established = true },
       { action = "allow", ethertype = "arp" },
       { action = "allow", proto = "tcp", dst_port = 22 }]
in = [{ action = "drop", proto = "tcp", dst_port = "80" },
      { action = "drop", src = "10.0.0.0/8", proto = 17, dst_port = "1000-2000" }]
"#;
    let spec: AclSpec = toml::from_str(text).unwrap();
    assert_eq!(spec.default_in, AclAction::Allow);
    assert_eq!(spec.default_out, AclAction::Drop);
    assert_eq!(spec.outbound[2], rule("allow tcp dst-port 22"));
    assert_eq!(
        spec.inbound[1],
        rule("drop udp src 10.0.0.0/8 dst-port 1000-2000")
    );
    let back = toml::to_string(&spec).unwrap();
    assert!(back.contains(r#"dst_port = "80""#), "{back}");
    assert!(!back.contains("default_in"), "defaults left out: {back}");
    assert_eq!(toml::from_str::<AclSpec>(&back).unwrap(), spec);
    assert_eq!(toml::from_str::<AclSpec>("").unwrap(), AclSpec::default());
}

#[test]
fn bad_rules_in_toml_and_json_are_refused_with_the_reason() {
    let e = toml::from_str::<AclSpec>(r#"in = [{ action = "drop", dst_port = "80" }]"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("say tcp or udp"), "{e}");
    let e = serde_json::from_str::<AclRule>(r#"{"action": "drop", "prot": "tcp"}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field"), "{e}");
    let e = serde_json::from_str::<AclRule>(r#"{"action": "drop", "proto": "sctp"}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("say tcp, udp"), "{e}");
    let e = serde_json::from_str::<AclSpec>(r#"{"default_in": "reject"}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown variant"), "{e}");
}

#[test]
fn rules_are_inserted_and_removed_by_position() {
    let mut spec = AclSpec::default();
    spec.insert(AclDirection::In, rule("drop tcp dst-port 80"), None)
        .unwrap();
    spec.insert(AclDirection::In, rule("drop tcp dst-port 81"), None)
        .unwrap();
    spec.insert(AclDirection::In, rule("allow tcp dst-port 79"), Some(1))
        .unwrap();
    spec.insert(AclDirection::In, rule("drop udp"), Some(4))
        .unwrap();
    let ports: Vec<String> = spec.inbound.iter().map(|r| r.to_string()).collect();
    assert_eq!(
        ports,
        [
            "allow tcp dst-port 79",
            "drop tcp dst-port 80",
            "drop tcp dst-port 81",
            "drop udp"
        ]
    );
    let e = spec
        .insert(AclDirection::In, rule("drop udp"), Some(6))
        .unwrap_err();
    assert_eq!(e.to_string(), "position 6: in has 4 rules, say 1 to 5");
    assert_eq!(
        spec.remove(AclDirection::In, 2).unwrap(),
        rule("drop tcp dst-port 80")
    );
    assert_eq!(
        spec.remove(AclDirection::Out, 1).unwrap_err().to_string(),
        "no rule 1: out has no rules"
    );
    assert_eq!(
        spec.remove(AclDirection::In, 0).unwrap_err().to_string(),
        "no rule 0: in has rules 1 to 3"
    );
    spec.inbound = vec![rule("drop udp"); MAX_RULES];
    assert!(spec
        .insert(AclDirection::In, rule("drop tcp"), None)
        .is_err());
    let json = serde_json::to_string(&spec).unwrap();
    assert_eq!(serde_json::from_str::<AclSpec>(&json).unwrap(), spec);
    spec.inbound.push(rule("drop tcp"));
    let json = serde_json::to_string(&spec).unwrap();
    let e = serde_json::from_str::<AclSpec>(&json)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("1025 rules: a direction of a port takes at most 1024"),
        "{e}"
    );
}

#[test]
fn rules_compile_to_the_classifiers_form() {
    use vnet_core::policy::acl::{Action, PortRange};
    let core = rule("drop tcp src 10.1.0.0/16 dst-port 80-81").to_core();
    assert_eq!(core.action, Action::Drop);
    assert_eq!(core.matches.proto, Some(6));
    assert_eq!(core.matches.dst_port, Some(PortRange { lo: 80, hi: 81 }));
    let src = core.matches.src.unwrap();
    assert_eq!((src.v6, src.len), (false, 16));
    assert_eq!(core.matches.implied_ethertype(), Some(EtherType::IPV4));
}

fn arb_rule() -> impl Strategy<Value = AclRule> {
    let v4 = (any::<[u8; 4]>(), 0u8..=32)
        .prop_map(|(a, l)| IpNet::V4(ipnet::Ipv4Net::new(a.into(), l).unwrap()).trunc());
    let v6 = (any::<[u8; 16]>(), 0u8..=128)
        .prop_map(|(a, l)| IpNet::V6(ipnet::Ipv6Net::new(a.into(), l).unwrap()).trunc());
    let ports = (any::<u16>(), any::<u16>()).prop_map(|(a, b)| AclPorts {
        lo: a.min(b),
        hi: a.max(b),
    });
    (
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(v4),
        proptest::option::of(v6),
        prop_oneof![
            Just(None),
            Just(Some(AclProto::TCP)),
            Just(Some(AclProto::UDP)),
            Just(Some(AclProto::ICMP)),
            Just(Some(AclProto(50)))
        ],
        (
            proptest::option::of(ports.clone()),
            proptest::option::of(ports),
        ),
        (
            proptest::option::of(any::<u8>()),
            proptest::option::of(any::<u8>()),
        ),
        (
            proptest::option::of(any::<[u8; 6]>()),
            proptest::option::of(1u16..4095),
            any::<bool>(),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(drop, six, src4, dst6, proto, (sp, dp), (t, c), (mac, vlan, est, ethertype))| {
                let mut r = AclRule::new(if drop {
                    AclAction::Drop
                } else {
                    AclAction::Allow
                });
                if six {
                    r.dst = dst6;
                    if proto == Some(AclProto::ICMP) {
                        r.proto = Some(AclProto::ICMPV6);
                    } else {
                        r.proto = proto;
                    }
                } else {
                    r.src = src4;
                    r.proto = proto;
                }
                if matches!(r.proto, Some(AclProto::TCP | AclProto::UDP)) {
                    r.src_port = sp;
                    r.dst_port = dp;
                }
                if matches!(r.proto, Some(AclProto::ICMP | AclProto::ICMPV6)) {
                    r.icmp_type = t;
                    r.icmp_code = t.and(c);
                }
                r.src_mac = mac.map(MacAddr);
                r.vlan = vlan;
                r.established = est && r.proto != Some(AclProto(50));
                if ethertype {
                    r.ethertype = Some(AclEtherType(if six {
                        EtherType::IPV6
                    } else {
                        EtherType::IPV4
                    }));
                }
                r
            },
        )
}

proptest! {
    #[test]
    fn valid_rules_round_trip_through_words_and_json(r in arb_rule()) {
        prop_assert_eq!(r.validate(), Ok(()));
        prop_assert_eq!(&r.to_string().parse::<AclRule>().unwrap(), &r);
        let json = serde_json::to_string(&r).unwrap();
        prop_assert_eq!(&serde_json::from_str::<AclRule>(&json).unwrap(), &r);
    }

    #[test]
    fn any_words_parse_or_fail_without_panic(words in proptest::collection::vec(prop_oneof![
        Just("allow".to_string()), Just("drop".to_string()), Just("tcp".to_string()), Just("dst-port".to_string()),
        Just("src".to_string()), Just("type".to_string()), Just("established".to_string()), "[0-9a-f:./-]{0,8}",
    ], 0..8)) {
        let _ = words.join(" ").parse::<AclRule>();
    }
}
