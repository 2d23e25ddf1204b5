//! Scenarios of the ACL as a port sees it: frames built byte by byte, a virtual clock.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::fields::{addr_v4, addr_v6, Echo, Fields, IpFields, L4};
use super::*;
use crate::wire::ethernet::write_header;
use crate::wire::tcp::Flags;
use crate::wire::{ipv4, ipv6, EtherType, IpProtocol, MacAddr};

const VM: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
const PEER: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 2]);

fn vm4() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))
}
fn peer4() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))
}
fn vm6() -> IpAddr {
    IpAddr::V6("fd00::1".parse().unwrap())
}
fn peer6() -> IpAddr {
    IpAddr::V6("fd00::2".parse().unwrap())
}

/// An upper layer to put in a test frame.
#[derive(Clone, Copy)]
enum Upper {
    Tcp(u16, u16, u8),
    Udp(u16, u16),
    Icmp(u8, u8, u16),
}

impl Upper {
    fn bytes(self, v6: bool) -> (IpProtocol, Vec<u8>) {
        match self {
            Upper::Tcp(s, d, flags) => {
                let mut b = vec![0u8; 20];
                b[0..2].copy_from_slice(&s.to_be_bytes());
                b[2..4].copy_from_slice(&d.to_be_bytes());
                b[12] = 5 << 4;
                b[13] = flags;
                (IpProtocol::TCP, b)
            }
            Upper::Udp(s, d) => {
                let mut b = vec![0u8; 12];
                b[0..2].copy_from_slice(&s.to_be_bytes());
                b[2..4].copy_from_slice(&d.to_be_bytes());
                b[4..6].copy_from_slice(&12u16.to_be_bytes());
                (IpProtocol::UDP, b)
            }
            Upper::Icmp(t, c, id) => {
                let mut b = vec![t, c, 0, 0, 0, 0, 0, 1];
                b[4..6].copy_from_slice(&id.to_be_bytes());
                let proto = if v6 {
                    IpProtocol::ICMPV6
                } else {
                    IpProtocol::ICMP
                };
                (proto, b)
            }
        }
    }
}

/// An Ethernet frame (tagged with `vlan`) carrying `upper` from `src` to `dst`.
fn frame(
    src: (MacAddr, IpAddr),
    dst: (MacAddr, IpAddr),
    upper: Upper,
    vlan: Option<u16>,
) -> Vec<u8> {
    let v6 = src.1.is_ipv6();
    let (proto, l4) = upper.bytes(v6);
    let mut ip = match (src.1, dst.1) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let r = ipv4::Repr {
                src_addr: s,
                dst_addr: d,
                next_header: proto,
                payload_len: l4.len(),
                hop_limit: 64,
                dscp_ecn: 0,
                ident: 1,
                dont_frag: false,
                more_frags: false,
                frag_offset: 0,
            };
            let mut b = vec![0u8; r.buffer_len()];
            r.emit(&mut ipv4::Packet::new_unchecked(&mut b[..]));
            b
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let r = ipv6::Repr {
                src_addr: s,
                dst_addr: d,
                next_header: proto,
                payload_len: l4.len(),
                hop_limit: 64,
                traffic_class: 0,
                flow_label: 0,
            };
            let mut b = vec![0u8; r.buffer_len()];
            r.emit(&mut ipv6::Packet::new_unchecked(&mut b[..]));
            b
        }
        _ => unreachable!("one family per test frame"),
    };
    let at = ip.len() - l4.len();
    ip[at..].copy_from_slice(&l4);
    let ethertype = if v6 { EtherType::IPV6 } else { EtherType::IPV4 };
    l2(src.0, dst.0, ethertype, vlan, &ip)
}

fn l2(src: MacAddr, dst: MacAddr, ethertype: u16, vlan: Option<u16>, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 14];
    match vlan {
        Some(vid) => {
            write_header(&mut f, dst, src, EtherType::VLAN);
            f.extend_from_slice(&vid.to_be_bytes());
            f.extend_from_slice(&ethertype.to_be_bytes());
        }
        None => write_header(&mut f, dst, src, ethertype),
    }
    f.extend_from_slice(payload);
    f
}

fn tcp(
    from: (MacAddr, IpAddr),
    to: (MacAddr, IpAddr),
    sport: u16,
    dport: u16,
    flags: u8,
) -> Vec<u8> {
    frame(from, to, Upper::Tcp(sport, dport, flags), None)
}

fn rules(text: &[(Action, Match)]) -> Vec<Rule> {
    text.iter()
        .map(|&(action, matches)| Rule { action, matches })
        .collect()
}

fn tcp_dport(port: u16) -> Match {
    Match {
        proto: Some(IpProtocol::TCP.0),
        dst_port: Some(PortRange { lo: port, hi: port }),
        ..Match::default()
    }
}

const ESTABLISHED: Match = Match {
    ethertype: None,
    src_mac: None,
    dst_mac: None,
    vlan: None,
    src: None,
    dst: None,
    proto: None,
    src_port: None,
    dst_port: None,
    icmp_type: None,
    icmp_code: None,
    established: true,
};

// ---- fields ----

#[test]
fn fields_of_tcp_over_ipv4_in_a_tagged_frame() {
    let f = Fields::parse(
        &frame(
            (VM, vm4()),
            (PEER, peer4()),
            Upper::Tcp(40000, 80, Flags::SYN),
            Some(10),
        ),
        Some(1),
    );
    assert_eq!(f.ethertype, EtherType::IPV4);
    assert_eq!((f.src_mac, f.dst_mac, f.vlan), (VM, PEER, Some(10)));
    let ip = f.ip.unwrap();
    assert_eq!(
        (ip.v6, ip.src, ip.dst, ip.proto),
        (
            false,
            addr_v4(Ipv4Addr::new(10, 0, 0, 1)),
            addr_v4(Ipv4Addr::new(10, 0, 0, 2)),
            6
        )
    );
    assert_eq!(
        ip.l4,
        L4::Ports {
            src: 40000,
            dst: 80,
            tcp_flags: Flags::SYN
        }
    );
}

#[test]
fn untagged_and_priority_tagged_frames_take_the_ports_vlan() {
    let untagged = frame((VM, vm4()), (PEER, peer4()), Upper::Udp(1, 2), None);
    assert_eq!(Fields::parse(&untagged, Some(7)).vlan, Some(7));
    assert_eq!(Fields::parse(&untagged, None).vlan, None);
    let priority = frame((VM, vm4()), (PEER, peer4()), Upper::Udp(1, 2), Some(0x6000));
    assert_eq!(Fields::parse(&priority, Some(7)).vlan, Some(7));
}

#[test]
fn fields_of_icmpv6_echo_after_a_hop_by_hop_header() {
    let mut f = frame(
        (VM, vm6()),
        (PEER, peer6()),
        Upper::Icmp(128, 0, 0x1234),
        None,
    );
    // Put a hop-by-hop header (8 bytes: next = ICMPv6, PadN) before the ICMPv6 message.
    let ip = 14;
    f[ip + 6] = IpProtocol::HOP_BY_HOP.0;
    let plen = u16::from_be_bytes([f[ip + 4], f[ip + 5]]) + 8;
    f[ip + 4..ip + 6].copy_from_slice(&plen.to_be_bytes());
    let hbh = [IpProtocol::ICMPV6.0, 0, 1, 4, 0, 0, 0, 0];
    f.splice(ip + 40..ip + 40, hbh);
    let fields = Fields::parse(&f, None);
    let ipf = fields.ip.unwrap();
    assert_eq!((ipf.v6, ipf.proto), (true, 58));
    assert_eq!(
        ipf.l4,
        L4::Icmp {
            msg_type: 128,
            code: 0,
            echo: Some(Echo {
                id: 0x1234,
                request: true
            })
        }
    );
    assert_eq!(ipf.src, addr_v6("fd00::1".parse::<Ipv6Addr>().unwrap()));
}

#[test]
fn non_first_fragments_show_no_ports() {
    let mut f = frame((VM, vm4()), (PEER, peer4()), Upper::Udp(53, 53), None);
    let mut p = ipv4::Packet::new_unchecked(&mut f[14..]);
    p.set_fragment(false, true, 0);
    p.fill_checksum();
    assert!(
        matches!(Fields::parse(&f, None).l4(), L4::Ports { .. }),
        "the first fragment has them"
    );
    let mut p = ipv4::Packet::new_unchecked(&mut f[14..]);
    p.set_fragment(false, false, 1480);
    p.fill_checksum();
    let fields = Fields::parse(&f, None);
    assert_eq!(fields.l4(), L4::None);
    assert_eq!(fields.ip.unwrap().proto, 17, "the protocol is an L3 field");

    // IPv6: a Fragment header with offset 8.
    let mut f = frame((VM, vm6()), (PEER, peer6()), Upper::Udp(53, 53), None);
    f[14 + 6] = IpProtocol::IPV6_FRAGMENT.0;
    let plen = u16::from_be_bytes([f[18], f[19]]) + 8;
    f[18..20].copy_from_slice(&plen.to_be_bytes());
    f.splice(54..54, [IpProtocol::UDP.0, 0, 0, 8, 0, 0, 0, 1]);
    let fields = Fields::parse(&f, None);
    assert_eq!((fields.ip.unwrap().proto, fields.l4()), (17, L4::None));
}

#[test]
fn short_and_foreign_frames_have_only_what_they_show() {
    assert_eq!(Fields::parse(&[], None).ip, None);
    let arp = l2(VM, MacAddr::BROADCAST, EtherType::ARP, None, &[0; 28]);
    let f = Fields::parse(&arp, None);
    assert_eq!((f.ethertype, f.ip), (EtherType::ARP, None));
    // A TCP header cut at 10 bytes: IP fields, no ports.
    let mut t = tcp((VM, vm4()), (PEER, peer4()), 1, 80, 0);
    t.truncate(t.len() - 10);
    let len = (t.len() - 14) as u16;
    let mut p = ipv4::Packet::new_unchecked(&mut t[14..]);
    p.set_total_len(len);
    p.fill_checksum();
    let f = Fields::parse(&t, None);
    assert_eq!((f.ip.unwrap().proto, f.l4()), (6, L4::None));
}

proptest! {
    #[test]
    fn any_bytes_parse_and_check_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..140), ethertype in prop_oneof![Just(EtherType::IPV4), Just(EtherType::IPV6), any::<u16>()]) {
        let mut frame = bytes.clone();
        if frame.len() >= 14 {
            frame[12..14].copy_from_slice(&ethertype.to_be_bytes());
            // A version and lengths that fit, so that the IP views get past them and the
            // bytes after are read as TCP, UDP or ICMP (by the random protocol byte).
            let len = frame.len();
            match ethertype {
                EtherType::IPV4 if len >= 34 => {
                    frame[14] = 0x45;
                    frame[16..18].copy_from_slice(&((len - 14) as u16).to_be_bytes());
                }
                EtherType::IPV6 if len >= 54 => {
                    frame[14] = 0x60;
                    frame[18..20].copy_from_slice(&((len - 54) as u16).to_be_bytes());
                }
                _ => {}
            }
        }
        let _ = Fields::parse(&frame, Some(1));
        let mut acl = Acl::new(&AclConfig {
            inbound: Chain { rules: rules(&[(Action::Drop, tcp_dport(80)), (Action::Allow, ESTABLISHED)]), default: Action::Drop },
            outbound: Chain::default(),
            conntrack: true,
        }, 16);
        let now = Instant::now();
        acl.check(now, Direction::In, &frame, None);
        acl.check(now, Direction::Out, &frame, None);
    }
}

// ---- rules and counters ----

#[test]
fn a_rule_drops_tcp_port_80_while_22_and_ping_pass_with_counters() {
    let config = AclConfig {
        inbound: Chain {
            rules: rules(&[(Action::Drop, tcp_dport(80))]),
            default: Action::Allow,
        },
        ..AclConfig::default()
    };
    let mut acl = Acl::new(&config, 16);
    let now = Instant::now();
    let web = tcp((VM, vm4()), (PEER, peer4()), 40000, 80, Flags::SYN);
    let ssh = tcp((VM, vm4()), (PEER, peer4()), 40001, 22, Flags::SYN);
    let ping = frame((VM, vm4()), (PEER, peer4()), Upper::Icmp(8, 0, 7), None);
    assert_eq!(acl.check(now, Direction::In, &web, None), Action::Drop);
    assert_eq!(acl.check(now, Direction::In, &web, None), Action::Drop);
    assert_eq!(acl.check(now, Direction::In, &ssh, None), Action::Allow);
    assert_eq!(acl.check(now, Direction::In, &ping, None), Action::Allow);
    // The other direction has no rules.
    assert_eq!(acl.check(now, Direction::Out, &web, None), Action::Allow);
    let r = acl.report();
    assert_eq!(
        r.inbound.rules,
        vec![Hits {
            frames: 2,
            bytes: 2 * web.len() as u64
        }]
    );
    assert_eq!(
        r.inbound.default,
        Hits {
            frames: 2,
            bytes: (ssh.len() + ping.len()) as u64
        }
    );
    assert_eq!(r.outbound.default.frames, 1);
    assert_eq!(r.conntrack, None, "no tracking unless asked");
}

#[test]
fn rule_changes_keep_the_counters_of_the_rules_that_stay() {
    let web = tcp((VM, vm4()), (PEER, peer4()), 40000, 80, Flags::SYN);
    let ssh = tcp((VM, vm4()), (PEER, peer4()), 40001, 22, Flags::SYN);
    let mut config = AclConfig::default();
    config.inbound.rules = rules(&[
        (Action::Drop, tcp_dport(80)),
        (Action::Allow, tcp_dport(22)),
    ]);
    let mut acl = Acl::new(&config, 16);
    let now = Instant::now();
    acl.check(now, Direction::In, &web, None);
    acl.check(now, Direction::In, &ssh, None);
    acl.check(now, Direction::In, &ssh, None);
    // Insert a rule first and drop the port-80 one.
    config.inbound.rules = rules(&[
        (Action::Drop, tcp_dport(23)),
        (Action::Allow, tcp_dport(22)),
    ]);
    acl.update(&config);
    let r = acl.report();
    assert_eq!(
        r.inbound.rules.iter().map(|h| h.frames).collect::<Vec<_>>(),
        vec![0, 2]
    );
    // A live change takes effect on the next frame.
    assert_eq!(acl.check(now, Direction::In, &web, None), Action::Allow);
}

#[test]
fn vlan_and_mac_rules() {
    let mut config = AclConfig::default();
    config.inbound.rules = rules(&[
        (
            Action::Drop,
            Match {
                vlan: Some(20),
                ..Match::default()
            },
        ),
        (
            Action::Drop,
            Match {
                src_mac: Some(PEER),
                ..Match::default()
            },
        ),
    ]);
    let mut acl = Acl::new(&config, 16);
    let now = Instant::now();
    let udp = |vlan| frame((VM, vm4()), (PEER, peer4()), Upper::Udp(1, 2), vlan);
    assert_eq!(
        acl.check(now, Direction::In, &udp(Some(20)), None),
        Action::Drop
    );
    assert_eq!(
        acl.check(now, Direction::In, &udp(None), Some(20)),
        Action::Drop,
        "an access port's VLAN"
    );
    assert_eq!(
        acl.check(now, Direction::In, &udp(Some(10)), None),
        Action::Allow
    );
    let spoofed = frame((PEER, vm4()), (VM, peer4()), Upper::Udp(1, 2), None);
    assert_eq!(acl.check(now, Direction::In, &spoofed, None), Action::Drop);
}

// ---- connection tracking ----

/// Default drop toward the VM, "allow established" back in.
fn stateful(max_flows: usize) -> Acl {
    let config = AclConfig {
        outbound: Chain {
            rules: rules(&[(Action::Allow, ESTABLISHED)]),
            default: Action::Drop,
        },
        ..AclConfig::default()
    };
    Acl::new(&config, max_flows)
}

#[test]
fn established_lets_tcp_replies_in_and_keeps_new_connections_out() {
    let mut acl = stateful(16);
    let now = Instant::now();
    let (vm, peer) = ((VM, vm4()), (PEER, peer4()));
    assert_eq!(
        acl.check(
            now,
            Direction::In,
            &tcp(vm, peer, 40000, 80, Flags::SYN),
            None
        ),
        Action::Allow
    );
    assert_eq!(
        acl.check(
            now,
            Direction::Out,
            &tcp(peer, vm, 80, 40000, Flags::SYN | Flags::ACK),
            None
        ),
        Action::Allow
    );
    assert_eq!(
        acl.check(
            now,
            Direction::Out,
            &tcp(peer, vm, 80, 40000, Flags::ACK),
            None
        ),
        Action::Allow
    );
    // A connection opened toward the VM, and a reply to another port, are not.
    assert_eq!(
        acl.check(
            now,
            Direction::Out,
            &tcp(peer, vm, 50000, 22, Flags::SYN),
            None
        ),
        Action::Drop
    );
    assert_eq!(
        acl.check(
            now,
            Direction::Out,
            &tcp(peer, vm, 80, 40001, Flags::ACK),
            None
        ),
        Action::Drop
    );
    let r = acl.report();
    assert_eq!(r.outbound.rules[0].frames, 2);
    assert_eq!(r.outbound.default.frames, 2);
    assert_eq!(
        r.conntrack,
        Some(ConntrackStats {
            entries: 1,
            max: 16,
            refused: 0
        })
    );
}

#[test]
fn established_works_for_udp_and_ping_over_both_families() {
    let mut acl = stateful(16);
    let now = Instant::now();
    for (vm, peer) in [
        ((VM, vm4()), (PEER, peer4())),
        ((VM, vm6()), (PEER, peer6())),
    ] {
        let reply = frame(peer, vm, Upper::Udp(53, 33333), None);
        assert_eq!(
            acl.check(now, Direction::Out, &reply, None),
            Action::Drop,
            "before the query"
        );
        acl.check(
            now,
            Direction::In,
            &frame(vm, peer, Upper::Udp(33333, 53), None),
            None,
        );
        assert_eq!(acl.check(now, Direction::Out, &reply, None), Action::Allow);

        let (req, rep) = if vm.1.is_ipv6() { (128, 129) } else { (8, 0) };
        let echo_reply = frame(peer, vm, Upper::Icmp(rep, 0, 99), None);
        assert_eq!(
            acl.check(now, Direction::Out, &echo_reply, None),
            Action::Drop
        );
        acl.check(
            now,
            Direction::In,
            &frame(vm, peer, Upper::Icmp(req, 0, 99), None),
            None,
        );
        assert_eq!(
            acl.check(now, Direction::Out, &echo_reply, None),
            Action::Allow
        );
        // Another echo id is another flow.
        assert_eq!(
            acl.check(
                now,
                Direction::Out,
                &frame(peer, vm, Upper::Icmp(rep, 0, 98), None),
                None
            ),
            Action::Drop
        );
    }
}

#[test]
fn flows_expire_by_state() {
    let mut acl = stateful(16);
    let t0 = Instant::now();
    let (vm, peer) = ((VM, vm4()), (PEER, peer4()));
    let reply = tcp(peer, vm, 80, 40000, Flags::ACK);
    acl.check(
        t0,
        Direction::In,
        &tcp(vm, peer, 40000, 80, Flags::SYN),
        None,
    );
    // Unanswered, a SYN's flow lives 60 s.
    assert_eq!(
        acl.check(t0 + Duration::from_secs(59), Direction::Out, &reply, None),
        Action::Allow
    );
    let t1 = t0 + Duration::from_secs(59);
    // Answered (the ACK above), it lives two hours idle.
    assert_eq!(
        acl.check(t1 + Duration::from_secs(3600), Direction::Out, &reply, None),
        Action::Allow
    );
    let t2 = t1 + Duration::from_secs(3600);
    // A RST closes it: 10 s more for stragglers, then the port is closed again.
    acl.check(
        t2,
        Direction::In,
        &tcp(vm, peer, 40000, 80, Flags::RST),
        None,
    );
    assert_eq!(
        acl.check(t2 + Duration::from_secs(9), Direction::Out, &reply, None),
        Action::Allow
    );
    assert_eq!(
        acl.check(t2 + Duration::from_secs(20), Direction::Out, &reply, None),
        Action::Drop
    );
    // UDP: 30 s without an answer.
    acl.check(
        t0,
        Direction::In,
        &frame(vm, peer, Upper::Udp(5000, 53), None),
        None,
    );
    let late = frame(peer, vm, Upper::Udp(53, 5000), None);
    assert_eq!(
        acl.check(t0 + Duration::from_secs(31), Direction::Out, &late, None),
        Action::Drop
    );
    // A RST does not open a flow.
    acl.check(
        t2,
        Direction::In,
        &tcp(vm, peer, 40002, 80, Flags::RST),
        None,
    );
    assert_eq!(
        acl.check(
            t2,
            Direction::Out,
            &tcp(peer, vm, 80, 40002, Flags::ACK),
            None
        ),
        Action::Drop
    );
}

#[test]
fn a_full_table_refuses_new_flows_until_old_ones_expire() {
    let mut acl = stateful(2);
    let t0 = Instant::now();
    let (vm, peer) = ((VM, vm4()), (PEER, peer4()));
    for port in [1000, 1001, 1002] {
        assert_eq!(
            acl.check(
                t0,
                Direction::In,
                &frame(vm, peer, Upper::Udp(port, 53), None),
                None
            ),
            Action::Allow,
            "the rules allow it"
        );
    }
    let reply = |port| frame(peer, vm, Upper::Udp(53, port), None);
    assert_eq!(
        acl.check(t0, Direction::Out, &reply(1001), None),
        Action::Allow
    );
    assert_eq!(
        acl.check(t0, Direction::Out, &reply(1002), None),
        Action::Drop,
        "not tracked"
    );
    assert_eq!(
        acl.report().conntrack,
        Some(ConntrackStats {
            entries: 2,
            max: 2,
            refused: 1
        })
    );
    // 1000 expires after 30 s, 1001 (answered) lives on: room for one more.
    let t1 = t0 + Duration::from_secs(40);
    acl.check(
        t1,
        Direction::In,
        &frame(vm, peer, Upper::Udp(1002, 53), None),
        None,
    );
    assert_eq!(
        acl.check(t1, Direction::Out, &reply(1002), None),
        Action::Allow
    );
    assert_eq!(
        acl.check(t1, Direction::Out, &reply(1001), None),
        Action::Allow
    );
    assert_eq!(acl.report().conntrack.unwrap().entries, 2);
}

#[test]
fn rule_changes_keep_the_connection_table() {
    let mut acl = stateful(16);
    let now = Instant::now();
    let (vm, peer) = ((VM, vm4()), (PEER, peer4()));
    acl.check(
        now,
        Direction::In,
        &tcp(vm, peer, 40000, 22, Flags::SYN),
        None,
    );
    let config = AclConfig {
        inbound: Chain {
            rules: rules(&[(Action::Drop, tcp_dport(80))]),
            default: Action::Allow,
        },
        outbound: Chain {
            rules: rules(&[(Action::Allow, ESTABLISHED)]),
            default: Action::Drop,
        },
        conntrack: false,
    };
    acl.update(&config);
    assert_eq!(
        acl.check(
            now,
            Direction::Out,
            &tcp(peer, vm, 22, 40000, Flags::ACK),
            None
        ),
        Action::Allow
    );
    // Without an established rule (and conntrack off) the table goes.
    acl.update(&AclConfig::default());
    assert_eq!(acl.report().conntrack, None);
}

// ---- the compiled classifier against the linear scan ----

/// Values from small sets, so that random rules and frames meet often.
fn arb_addr(v6: bool) -> impl Strategy<Value = u128> {
    let base = if v6 {
        addr_v6("fd00::".parse().unwrap())
    } else {
        addr_v4(Ipv4Addr::new(10, 0, 0, 0))
    };
    // Vary a bit in the first, the second and the last octet of the address.
    let width = if v6 { 128 } else { 32 };
    (0u8..4, any::<bool>()).prop_map(move |(which, bit)| {
        let shift = [128 - 1, 128 - 9, 128 - width + 1, 128 - width][usize::from(which)];
        base | (u128::from(bit) << shift)
    })
}

fn arb_ports() -> impl Strategy<Value = u16> {
    prop_oneof![Just(22u16), Just(80), Just(443), Just(1000), 0u16..4]
}

fn arb_range() -> impl Strategy<Value = PortRange> {
    prop_oneof![
        arb_ports().prop_map(|p| PortRange { lo: p, hi: p }),
        (arb_ports(), arb_ports()).prop_map(|(a, b)| PortRange {
            lo: a.min(b),
            hi: a.max(b)
        }),
    ]
}

fn arb_match() -> impl Strategy<Value = Match> {
    let l2 = (
        proptest::option::weighted(
            0.3,
            prop_oneof![
                Just(EtherType::IPV4),
                Just(EtherType::IPV6),
                Just(EtherType::ARP)
            ],
        ),
        proptest::option::weighted(0.1, prop_oneof![Just(VM), Just(PEER)]),
        proptest::option::weighted(0.1, prop_oneof![Just(VM), Just(PEER)]),
        proptest::option::weighted(0.1, 1u16..3),
    );
    let l3 = (
        any::<bool>(),
        proptest::option::weighted(0.3, (arb_addr(false), 0u8..=32)),
        proptest::option::weighted(0.3, (arb_addr(false), 0u8..=32)),
        proptest::option::weighted(0.5, prop_oneof![Just(6u8), Just(17), Just(1), Just(58)]),
    );
    let l4 = (
        proptest::option::weighted(0.2, arb_range()),
        proptest::option::weighted(0.4, arb_range()),
        proptest::option::weighted(0.2, prop_oneof![Just(0u8), Just(8), Just(128)]),
        proptest::option::weighted(0.1, 0u8..2),
        proptest::bool::weighted(0.2),
    );
    (l2, l3, l4, arb_addr(true), arb_addr(true)).prop_map(
        |(
            (ethertype, src_mac, dst_mac, vlan),
            (v6, src, dst, proto),
            (src_port, dst_port, icmp_type, icmp_code, established),
            s6,
            d6,
        )| {
            // An IPv6 rule takes its addresses from the IPv6 set, with the same lengths ×4.
            let prefix = |p: Option<(u128, u8)>, a6: u128| {
                p.map(|(a, len)| {
                    if v6 {
                        Prefix::new(true, a6, len * 4)
                    } else {
                        Prefix::new(false, a, len)
                    }
                })
            };
            Match {
                ethertype,
                src_mac,
                dst_mac,
                vlan,
                src: prefix(src, s6),
                dst: prefix(dst, d6),
                proto,
                src_port,
                dst_port,
                icmp_type,
                icmp_code,
                established,
            }
        },
    )
}

fn arb_rule() -> impl Strategy<Value = Rule> {
    (any::<bool>(), arb_match()).prop_map(|(drop, matches)| Rule {
        action: if drop { Action::Drop } else { Action::Allow },
        matches,
    })
}

fn arb_fields() -> impl Strategy<Value = Fields> {
    let l4 = prop_oneof![
        Just(L4::None),
        (arb_ports(), arb_ports(), any::<u8>()).prop_map(|(src, dst, tcp_flags)| L4::Ports {
            src,
            dst,
            tcp_flags
        }),
        (
            prop_oneof![Just(0u8), Just(8), Just(128), Just(3)],
            0u8..2,
            any::<u16>()
        )
            .prop_map(|(msg_type, code, id)| L4::Icmp {
                msg_type,
                code,
                echo: Some(Echo {
                    id,
                    request: msg_type == 8
                }),
            }),
    ];
    let ip = (
        any::<bool>(),
        arb_addr(false),
        arb_addr(false),
        arb_addr(true),
        arb_addr(true),
        prop_oneof![Just(6u8), Just(17), Just(1), Just(58), Just(50)],
        l4,
    )
        .prop_map(|(v6, s4, d4, s6, d6, proto, l4)| {
            let (src, dst) = if v6 { (s6, d6) } else { (s4, d4) };
            IpFields {
                v6,
                src,
                dst,
                proto,
                l4,
            }
        });
    (
        proptest::option::weighted(0.9, ip),
        prop_oneof![Just(EtherType::ARP), Just(0x88cc)],
        prop_oneof![Just(VM), Just(PEER)],
        prop_oneof![Just(VM), Just(PEER)],
        proptest::option::of(1u16..3),
    )
        .prop_map(|(ip, other, src_mac, dst_mac, vlan)| Fields {
            ethertype: match ip {
                Some(IpFields { v6: true, .. }) => EtherType::IPV6,
                Some(_) => EtherType::IPV4,
                None => other,
            },
            src_mac,
            dst_mac,
            vlan,
            ip,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_classifier_finds_the_first_matching_rule(
        rules in proptest::collection::vec(arb_rule(), 0..40),
        frames in proptest::collection::vec((arb_fields(), any::<bool>()), 1..20),
    ) {
        let c = Classifier::new(rules.clone());
        for (f, established) in frames {
            prop_assert_eq!(c.classify(&f, established), first_match(&rules, &f, established), "{:?}", f);
        }
    }
}

#[test]
fn a_thousand_port_rules_are_one_lookup() {
    let rules: Vec<Rule> = (0..1000)
        .map(|p| Rule {
            action: Action::Drop,
            matches: tcp_dport(1000 + p),
        })
        .collect();
    let c = Classifier::new(rules.clone());
    assert_eq!(c.tuples(), 1);
    let f = Fields::parse(&tcp((VM, vm4()), (PEER, peer4()), 5, 1999, 0), None);
    assert_eq!(c.classify(&f, false), Some(999));
    assert_eq!(first_match(&rules, &f, false), Some(999));
}
