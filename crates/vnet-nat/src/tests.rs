//! Scenarios of one guest talking to the device, with a virtual clock.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use std::net::IpAddr;
use vnet_core::wire::ethernet::{EtherType, MacAddr, HEADER_LEN};
use vnet_core::wire::icmpv4::{self, Message, Unreachable};
use vnet_core::wire::tcp::{self as tcp_wire, Flags};
use vnet_core::wire::{arp, ipv4, udp, IpProtocol};

use crate::frames::{self, Route};
use crate::{FlowId, NatConfig, NatDevice, NatSecrets, Output, Proto, SocketError};

const NAT_MAC: MacAddr = MacAddr([0x02, 0x76, 0x64, 0, 0, 8]);
const GUEST_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
const GW: Ipv4Addr = Ipv4Addr::new(192, 168, 8, 2);
const GUEST: Ipv4Addr = Ipv4Addr::new(192, 168, 8, 100);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

/// A socket address in tests' terms.
fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

fn config() -> NatConfig {
    let mut c = NatConfig::new(NAT_MAC, GW, Ipv4Addr::new(192, 168, 8, 0), 24);
    c.dns_upstreams = vec!["127.0.0.1:5353".parse().unwrap()];
    c
}

/// Fixed keys: the scenarios are deterministic.
fn secrets() -> NatSecrets {
    NatSecrets::from_bytes([0x5e; 32])
}

fn to_nat(dst: Ipv4Addr) -> Route {
    Route {
        src_mac: GUEST_MAC,
        dst_mac: NAT_MAC,
        src: GUEST.into(),
        dst: dst.into(),
    }
}

fn udp_frame(dst: Ipv4Addr, sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let r = to_nat(dst);
    frames::ip_frame(
        &r,
        IpProtocol::UDP,
        1,
        &frames::udp_datagram(&r, sport, dport, data),
    )
}

fn echo_frame(dst: Ipv4Addr, ident: u16, seq: u16) -> Vec<u8> {
    let m = icmpv4::Repr::EchoRequest {
        ident,
        seq_no: seq,
        data: b"ping data",
    };
    frames::ip_frame(&to_nat(dst), IpProtocol::ICMP, 1, &frames::icmp_message(&m))
}

/// A whole IPv4 packet (header checked, not a fragment).
fn ipv4_packet(bytes: &[u8]) -> ipv4::Packet<&[u8]> {
    let ip = ipv4::Packet::new_checked(bytes).expect("valid IPv4");
    ipv4::Repr::parse(&ip).expect("valid IPv4");
    assert!(!ip.is_fragment(), "valid IPv4");
    ip
}

/// The IPv4 packet in a frame the device sent to the guest.
fn ip_of(out: &Output) -> ipv4::Packet<&[u8]> {
    let Output::Frame(f) = out else {
        panic!("not a frame: {out:?}");
    };
    assert_eq!(&f[..6], &GUEST_MAC.0);
    assert_eq!(&f[6..12], &NAT_MAC.0);
    ipv4_packet(&f[HEADER_LEN..])
}

/// The UDP datagram in `ip`, its checksum verified.
fn udp_of<'a>(ip: &'a ipv4::Packet<&[u8]>) -> udp::Packet<&'a [u8]> {
    let u = udp::Packet::new_checked(ip.payload()).expect("valid UDP");
    let (src, dst) = (IpAddr::V4(ip.src_addr()), IpAddr::V4(ip.dst_addr()));
    assert!(u.verify_checksum(&src, &dst), "UDP checksum");
    u
}

/// The TCP segment in `ip`, its checksum verified: what it says, and its payload.
fn tcp_of<'a>(ip: &'a ipv4::Packet<&[u8]>) -> (tcp_wire::Repr, &'a [u8]) {
    let t = tcp_wire::Packet::new_checked(ip.payload()).expect("valid TCP");
    let (src, dst) = (IpAddr::V4(ip.src_addr()), IpAddr::V4(ip.dst_addr()));
    assert!(t.verify_checksum(&src, &dst), "TCP checksum");
    let repr = tcp_wire::Repr::parse(&t).expect("valid TCP");
    let header_len = usize::from(t.header_len());
    (repr, &t.into_inner()[header_len..])
}

/// The ARP packet in a frame.
fn arp_of(frame: &[u8]) -> arp::Repr {
    arp::Repr::parse(&arp::Packet::new_checked(&frame[HEADER_LEN..]).unwrap()).unwrap()
}

#[test]
fn answers_arp_for_the_gateway_only() {
    let mut nat = NatDevice::new(config(), secrets());
    let mut arp = vec![0u8; 42];
    arp[..6].fill(0xff);
    arp[6..12].copy_from_slice(&GUEST_MAC.0);
    arp[12..14].copy_from_slice(&EtherType::ARP.to_be_bytes());
    arp[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp[22..28].copy_from_slice(&GUEST_MAC.0);
    arp[28..32].copy_from_slice(&GUEST.octets());
    arp[38..42].copy_from_slice(&GW.octets());
    let mut out = Vec::new();
    assert!(nat.receive(Instant::now(), &arp, &mut out));
    let [Output::Frame(reply)] = &out[..] else {
        panic!("{out:?}");
    };
    assert_eq!(&reply[..6], &GUEST_MAC.0);
    assert_eq!(&reply[20..22], &[0, 2], "a reply");
    assert_eq!(&reply[22..28], &NAT_MAC.0);
    assert_eq!(&reply[28..32], &GW.octets());
    out.clear();
    arp[38..42].copy_from_slice(&[192, 168, 8, 1]);
    nat.receive(Instant::now(), &arp, &mut out);
    assert!(out.is_empty(), "other addresses are not ours");
}

#[test]
fn pings_to_the_gateway_are_answered_locally() {
    let mut nat = NatDevice::new(config(), secrets());
    let mut out = Vec::new();
    nat.receive(Instant::now(), &echo_frame(GW, 77, 3), &mut out);
    let ip = ip_of(&out[0]);
    assert_eq!((ip.src_addr(), ip.dst_addr()), (GW, GUEST));
    let e = frames::read_echo(ip.payload(), false).unwrap();
    assert!(
        matches!(
            e,
            frames::Echo {
                reply: true,
                ident: 77,
                seq_no: 3,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn an_outside_ping_opens_one_flow_and_the_reply_gets_the_guests_ident_back() {
    let mut nat = NatDevice::new(config(), secrets());
    let t = Instant::now();
    let mut out = Vec::new();
    nat.receive(t, &echo_frame(OUTSIDE, 77, 1), &mut out);
    nat.receive(t, &echo_frame(OUTSIDE, 77, 2), &mut out);
    let flow = match &out[..] {
        [Output::Open {
            flow,
            proto: Proto::Icmp,
            to,
        }, Output::Send { flow: f1, .. }, Output::Send { flow: f2, .. }]
            if *to == sa(OUTSIDE, 0) && f1 == flow && f2 == flow =>
        {
            *flow
        }
        other => panic!("{other:?}"),
    };
    out.clear();
    // The ping socket's identifier is the kernel's choice, not the guest's.
    let reply = icmpv4::Repr::EchoReply {
        ident: 4242,
        seq_no: 2,
        data: b"ping data",
    };
    nat.socket_data(t, flow, &frames::icmp_message(&reply), &mut out);
    let ip = ip_of(&out[0]);
    assert_eq!(
        (ip.src_addr(), ip.dst_addr(), ip.next_header()),
        (OUTSIDE, GUEST, IpProtocol::ICMP)
    );
    let frames::Echo {
        reply: true,
        ident,
        seq_no,
        data,
    } = frames::read_echo(ip.payload(), false).unwrap()
    else {
        panic!("not a reply")
    };
    assert_eq!((ident, seq_no, data), (77, 2, &b"ping data"[..]));
}

#[test]
fn without_ping_sockets_guests_hear_unreachable() {
    let mut c = config();
    c.icmp = false;
    let mut nat = NatDevice::new(c, secrets());
    let mut out = Vec::new();
    nat.receive(Instant::now(), &echo_frame(OUTSIDE, 1, 1), &mut out);
    let ip = ip_of(&out[0]);
    assert_eq!(
        (ip.src_addr(), ip.payload()[0], ip.payload()[1]),
        (GW, Message::DST_UNREACHABLE, Unreachable::ADMIN_PROHIBITED)
    );
    assert_eq!(nat.flow_count(), 0);
}

#[test]
fn answers_over_the_mtu_reach_the_guest_in_fragments() {
    use crate::fragments::{Reassembler, Reassembly};
    let mut nat = NatDevice::new(config(), secrets());
    let t = Instant::now();
    let mut out = Vec::new();
    nat.receive(t, &udp_frame(OUTSIDE, 5000, 7777, b"big?"), &mut out);
    let Some(&Output::Open { flow, .. }) = out.first() else {
        panic!("{out:?}")
    };
    out.clear();
    let big: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
    nat.socket_data(t, flow, &big, &mut out);
    assert_eq!(out.len(), 3, "4008 bytes of UDP in pieces of at most 1480");
    // The device's own reassembler is the oracle: the pieces make the datagram.
    let mut pieces = Reassembler::default();
    let mut whole = None;
    for o in &out {
        let Output::Frame(f) = o else { panic!("{o:?}") };
        assert!(f.len() <= HEADER_LEN + 1500, "{} bytes", f.len());
        if let Reassembly::Complete(d) = pieces.add(t, &f[HEADER_LEN..]) {
            whole = Some(d);
        }
    }
    let whole = whole.expect("a whole datagram");
    let ip = ipv4_packet(&whole);
    let u = udp_of(&ip);
    assert_eq!(
        (u.src_port(), u.dst_port(), u.payload()),
        (7777, 5000, &big[..])
    );
    assert_eq!(nat.counters().oversize, 0);
}

#[test]
fn udp_flows_carry_both_ways_and_close_when_idle() {
    let mut c = config();
    c.udp_timeout = Duration::from_secs(10);
    let mut nat = NatDevice::new(c, secrets());
    let t = Instant::now();
    let mut out = Vec::new();
    nat.receive(t, &udp_frame(OUTSIDE, 5000, 7777, b"hi"), &mut out);
    let [Output::Open {
        flow,
        proto: Proto::Udp,
        to,
    }, Output::Send { data, .. }] = &out[..]
    else {
        panic!("{out:?}");
    };
    assert_eq!((*to, &data[..]), (sa(OUTSIDE, 7777), &b"hi"[..]));
    let flow = *flow;
    out.clear();
    nat.socket_data(t + Duration::from_secs(5), flow, b"hi back", &mut out);
    let ip = ip_of(&out[0]);
    let u = udp_of(&ip);
    assert_eq!(
        (ip.src_addr(), u.src_port(), u.dst_port(), u.payload()),
        (OUTSIDE, 7777, 5000, &b"hi back"[..])
    );
    out.clear();
    // Traffic at t+5 s keeps the flow until t+15 s.
    nat.poll(nat.poll_at().unwrap(), &mut out);
    assert!(out.is_empty(), "{out:?}");
    let at = nat.poll_at().unwrap();
    assert_eq!(at, t + Duration::from_secs(15));
    nat.poll(at, &mut out);
    assert_eq!(out, vec![Output::Close { flow }]);
    assert_eq!((nat.flow_count(), nat.poll_at()), (0, None));
    nat.socket_data(at, flow, b"late", &mut out);
    assert_eq!(out.len(), 1, "data for a closed flow is dropped");
}

#[test]
fn refused_and_failed_flows_are_reported_to_the_guest() {
    let mut nat = NatDevice::new(config(), secrets());
    let mut out = Vec::new();
    nat.receive(Instant::now(), &udp_frame(OUTSIDE, 5000, 9, b"x"), &mut out);
    let Output::Open { flow, .. } = out[0] else {
        panic!()
    };
    out.clear();
    nat.socket_error(flow, SocketError::Refused, &mut out);
    let ip = ip_of(&out[0]);
    assert_eq!(
        (ip.payload()[0], ip.payload()[1]),
        (Message::DST_UNREACHABLE, Unreachable::PORT)
    );
    // The quote names the guest's datagram.
    let quoted = ipv4::Packet::new_unchecked(&ip.payload()[8..]);
    assert!(ipv4::Repr::parse(&quoted).is_ok(), "quote");
    assert_eq!((quoted.src_addr(), quoted.dst_addr()), (GUEST, OUTSIDE));
    out.clear();
    nat.open_failed(flow, &mut out);
    assert_eq!(ip_of(&out[0]).payload()[1], Unreachable::HOST);
    assert_eq!(nat.flow_count(), 0);
}

#[test]
fn dns_to_the_gateway_is_forwarded_with_a_new_id_and_answered_from_the_gateway() {
    let mut nat = NatDevice::new(config(), secrets());
    let mut query = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    query.extend_from_slice(b"\x04test\x00\x00\x01\x00\x01");
    let mut out = Vec::new();
    let t = Instant::now();
    nat.receive(t, &udp_frame(GW, 40000, 53, &query), &mut out);
    let [Output::Open {
        flow,
        proto: Proto::Udp,
        to,
    }, Output::Send {
        flow: sent_on,
        data: sent,
    }] = &out[..]
    else {
        panic!("{out:?}");
    };
    assert_eq!((*to, sent_on), ("127.0.0.1:5353".parse().unwrap(), flow));
    assert_eq!(&sent[2..], &query[2..]);
    assert_eq!(nat.flow_count(), 0, "a query's socket is not a flow");
    let (flow, mut answer) = (*flow, sent.clone());
    out.clear();
    answer[2] |= 0x80;
    nat.socket_data(t, flow, &answer, &mut out);
    let [Output::Close { flow: closed }, Output::Frame(_)] = &out[..] else {
        panic!("{out:?}");
    };
    assert_eq!(*closed, flow, "the query's socket is closed once answered");
    let ip = ip_of(&out[1]);
    let u = udp_of(&ip);
    assert_eq!((ip.src_addr(), u.src_port(), u.dst_port()), (GW, 53, 40000));
    assert_eq!(&u.payload()[..2], &[0xab, 0xcd]);
    assert_eq!(nat.counters().dns_answers, 1);
}

#[test]
fn each_dns_query_leaves_on_its_own_socket_under_its_own_id() {
    let mut nat = NatDevice::new(config(), secrets());
    let mut query = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    query.extend_from_slice(b"\x04test\x00\x00\x01\x00\x01");
    let mut sent = Vec::new();
    for sport in [40000, 40001] {
        let mut out = Vec::new();
        nat.receive(Instant::now(), &udp_frame(GW, sport, 53, &query), &mut out);
        let [Output::Open { flow, .. }, Output::Send { data, .. }] = &out[..] else {
            panic!("{out:?}");
        };
        sent.push((*flow, data[..2].to_vec()));
    }
    assert_ne!(sent[0].0, sent[1].0, "one socket (source port) per query");
    assert_ne!(sent[0].1, sent[1].1, "fresh IDs");
    // The same guest query under other keys leaves under another ID.
    let mut other = NatDevice::new(config(), NatSecrets::from_bytes([1; 32]));
    let mut out = Vec::new();
    other.receive(Instant::now(), &udp_frame(GW, 40000, 53, &query), &mut out);
    let [_, Output::Send { data, .. }] = &out[..] else {
        panic!("{out:?}");
    };
    assert_ne!(data[..2], sent[0].1[..]);
}

#[test]
fn tcp_isns_depend_on_the_connection_and_the_key() {
    let syn_ack_seq = |secrets: NatSecrets, sport: u16| {
        let mut nat = NatDevice::new(config(), secrets);
        let r = to_nat(OUTSIDE);
        let h = tcp_wire::Repr {
            src_port: sport,
            dst_port: 80,
            seq_number: 1,
            flags: Flags(Flags::SYN),
            window_len: 1000,
            ..tcp_wire::Repr::default()
        };
        let syn = frames::ip_frame(&r, IpProtocol::TCP, 1, &frames::tcp_segment(&r, &h, b""));
        let t = Instant::now();
        let mut out = Vec::new();
        nat.receive(t, &syn, &mut out);
        let [Output::Open { flow, .. }] = out[..] else {
            panic!("{out:?}");
        };
        out.clear();
        nat.tcp_connected(t, flow, &mut out);
        let ip = ip_of(&out[0]);
        tcp_wire::Packet::new_checked(ip.payload())
            .unwrap()
            .seq_number()
    };
    let isn = syn_ack_seq(secrets(), 40000);
    assert_eq!(isn, syn_ack_seq(secrets(), 40000));
    assert_ne!(isn, syn_ack_seq(secrets(), 40001));
    assert_ne!(isn, syn_ack_seq(NatSecrets::from_bytes([1; 32]), 40000));
}

#[test]
fn dhcp_names_are_answered_by_the_gateway_and_other_names_still_go_upstream() {
    let nat_with = |names: &crate::LocalNames| {
        let mut nat = NatDevice::new(config(), secrets());
        nat.set_local_names(names.clone());
        nat
    };
    let mut names = crate::LocalNames::new(Some("lab"));
    names.insert("vm1", Ipv4Addr::new(192, 168, 8, 101));
    let mut nat = nat_with(&names);
    let ask = |nat: &mut NatDevice, name: &[u8]| {
        let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        query.extend_from_slice(name);
        query.extend_from_slice(&[0, 1, 0, 1]);
        let mut out = Vec::new();
        nat.receive(Instant::now(), &udp_frame(GW, 40000, 53, &query), &mut out);
        out
    };
    let out = ask(&mut nat, b"\x03vm1\x03lab\x00");
    let ip = ip_of(&out[0]);
    let u = udp_of(&ip);
    assert_eq!((ip.src_addr(), u.src_port(), u.dst_port()), (GW, 53, 40000));
    assert_eq!(
        &u.payload()[..4],
        &[0x12, 0x34, 0x85, 0x80],
        "an authoritative answer"
    );
    assert_eq!(&u.payload()[u.payload().len() - 4..], &[192, 168, 8, 101]);
    assert!(matches!(
        ask(&mut nat, b"\x03www\x03lab\x00")[..],
        [Output::Open { .. }, Output::Send { .. }]
    ));
    let c = nat.counters();
    assert_eq!((c.dns_queries, c.dns_local), (2, 1));
    // New leases replace the old names.
    let mut nat = nat_with(&crate::LocalNames::new(Some("lab")));
    assert!(matches!(
        ask(&mut nat, b"\x03vm1\x03lab\x00")[..],
        [Output::Open { .. }, Output::Send { .. }]
    ));
}

/// `frame` (Ethernet + IPv4) cut into IPv4 fragments of `size` payload bytes.
fn fragments_of(frame: &[u8], size: usize) -> Vec<Vec<u8>> {
    let (head, payload) = frame.split_at(HEADER_LEN + ipv4::HEADER_LEN);
    let pieces: Vec<&[u8]> = payload.chunks(size).collect();
    pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            let mut f = head.to_vec();
            f.extend_from_slice(piece);
            let mut ip = ipv4::Packet::new_unchecked(&mut f[HEADER_LEN..]);
            ip.set_total_len((ipv4::HEADER_LEN + piece.len()) as u16);
            ip.set_fragment(false, i + 1 < pieces.len(), (i * size) as u16);
            ip.fill_checksum();
            f
        })
        .collect()
}

#[test]
fn a_fragmented_udp_datagram_leaves_whole() {
    let mut nat = NatDevice::new(config(), secrets());
    let data: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
    let frags = fragments_of(&udp_frame(OUTSIDE, 5000, 9, &data), 1480);
    assert_eq!(frags.len(), 3);
    let t = Instant::now();
    let mut out = Vec::new();
    for f in frags.iter().rev() {
        assert!(nat.receive(t, f, &mut out));
    }
    let [Output::Open {
        proto: Proto::Udp,
        to,
        ..
    }, Output::Send { data: sent, .. }] = &out[..]
    else {
        panic!("{out:?}");
    };
    assert_eq!((*to, sent), (sa(OUTSIDE, 9), &data));
    let c = nat.counters();
    assert_eq!(
        (c.fragments, c.reassembled, c.reassembly_failures),
        (3, 1, 0)
    );

    // A datagram missing a piece is given up when its time runs out.
    out.clear();
    nat.receive(t, &frags[0], &mut out);
    assert!(out.is_empty() && nat.poll_at().is_some());
    nat.poll(t + crate::fragments::TIMEOUT, &mut out);
    assert_eq!(nat.counters().reassembly_failures, 1);
}

#[test]
fn the_host_loopback_is_reachable_only_when_allowed() {
    let mut nat = NatDevice::new(config(), secrets());
    let mut out = Vec::new();
    nat.receive(Instant::now(), &udp_frame(GW, 5000, 8080, b"x"), &mut out);
    assert_eq!(ip_of(&out[0]).payload()[1], Unreachable::PORT);
    let mut c = config();
    c.host_loopback = true;
    let mut nat = NatDevice::new(c, secrets());
    out.clear();
    nat.receive(Instant::now(), &udp_frame(GW, 5000, 8080, b"x"), &mut out);
    assert!(matches!(out[0], Output::Open { to, .. } if to == "127.0.0.1:8080".parse().unwrap()));
    out.truncate(0);
}

#[test]
fn other_protocols_are_refused_promptly_and_local_traffic_is_ignored() {
    let mut nat = NatDevice::new(config(), secrets());
    let mut out = Vec::new();
    let r = to_nat(OUTSIDE);
    nat.receive(
        Instant::now(),
        &frames::ip_frame(&r, IpProtocol(132), 1, &[0; 20]),
        &mut out,
    );
    assert_eq!(ip_of(&out[0]).payload()[0], Message::DST_UNREACHABLE);
    out.clear();
    nat.receive(
        Instant::now(),
        &udp_frame(Ipv4Addr::new(192, 168, 8, 50), 1, 2, b""),
        &mut out,
    );
    nat.receive(
        Instant::now(),
        &udp_frame(Ipv4Addr::BROADCAST, 1, 2, b""),
        &mut out,
    );
    assert!(out.is_empty());
}

#[test]
fn new_flows_over_the_limit_are_refused_with_unreachable_and_counted_while_open_ones_carry_on() {
    let mut c = config();
    c.max_flows = 2;
    let mut nat = NatDevice::new(c, secrets());
    let t = Instant::now();
    let mut out = Vec::new();
    for port in 1..=5 {
        nat.receive(t, &udp_frame(OUTSIDE, port, 9, b""), &mut out);
    }
    assert_eq!(nat.flow_count(), 2);
    let opens = out
        .iter()
        .filter(|o| matches!(o, Output::Open { .. }))
        .count();
    assert_eq!(opens, 2);
    let refusals: Vec<_> = out
        .iter()
        .filter(|o| matches!(o, Output::Frame(_)))
        .map(|o| {
            let ip = ip_of(o);
            (ip.next_header(), ip.payload()[0], ip.payload()[1])
        })
        .collect();
    let prohibited = (
        IpProtocol::ICMP,
        icmpv4::Message::DST_UNREACHABLE,
        Unreachable::ADMIN_PROHIBITED,
    );
    assert_eq!(refusals, vec![prohibited; 3]);
    assert_eq!(nat.counters().refused_flows, 3);
    // An open flow goes on at the limit.
    out.clear();
    nat.receive(t, &udp_frame(OUTSIDE, 1, 9, b"more"), &mut out);
    assert!(
        matches!(&out[..], [Output::Send { data, .. }] if data == b"more"),
        "{out:?}"
    );
    assert_eq!(nat.counters().refused_flows, 3);
}

proptest! {
    #[test]
    fn never_panics_on_any_frame(
        body in proptest::collection::vec(any::<u8>(), 0..200),
        ethertype in prop_oneof![Just(0x0800u16), Just(0x0806), any::<u16>()],
    ) {
        let mut nat = NatDevice::new(config(), secrets());
        let mut f = Vec::new();
        f.extend_from_slice(&NAT_MAC.0);
        f.extend_from_slice(&GUEST_MAC.0);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(&body);
        let mut out = Vec::new();
        nat.receive(Instant::now(), &f, &mut out);
        nat.receive_offloaded(Instant::now(), &f, &mut out);
        nat.socket_data(Instant::now(), FlowId(1), &body, &mut out);
        nat.socket_error(FlowId(2), SocketError::Refused, &mut out);
        nat.poll(Instant::now() + Duration::from_secs(100), &mut out);
    }

    #[test]
    fn never_panics_on_mutated_valid_packets(
        flips in proptest::collection::vec((0usize..80, any::<u8>()), 1..6),
        kind in 0u8..4,
    ) {
        let mut f = match kind {
            0 => udp_frame(OUTSIDE, 1000, 53, b"some payload"),
            1 => udp_frame(GW, 1000, 53, &[0; 20]),
            2 => {
                let r = to_nat(OUTSIDE);
                let h = tcp_wire::Repr {
                    src_port: 1,
                    dst_port: 2,
                    seq_number: 3,
                    ack_number: 4,
                    flags: Flags(0x12),
                    window_len: 5,
                    max_seg_size: Some(1400),
                    window_scale: Some(3),
                    ..tcp_wire::Repr::default()
                };
                frames::ip_frame(&r, IpProtocol::TCP, 1, &frames::tcp_segment(&r, &h, b"data"))
            }
            _ => echo_frame(OUTSIDE, 5, 5),
        };
        for (at, v) in flips {
            let at = at % f.len();
            f[at] = v;
        }
        let mut nat = NatDevice::new(config(), secrets());
        let mut out = Vec::new();
        nat.receive(Instant::now(), &f, &mut out);
        for o in &out {
            if let Output::Frame(fr) = o {
                prop_assert!(fr.len() >= 60);
            }
        }
    }
}

mod tcp {
    use super::*;
    use crate::ReadWindow;
    use vnet_core::wire::offload::{complete_checksum, Segmenter};
    use vnet_core::wire::tcp::Flags as F;

    const PORT: u16 = 45000;
    /// The guest's window scale: its window of 65535 means this many bytes.
    const GUEST_WSCALE: u8 = 2;
    const GUEST_WINDOW: usize = 65535 << GUEST_WSCALE;

    /// Socket data as the shell hands it over: peeked into a frame after the headers.
    fn peeked(data: &[u8]) -> Vec<u8> {
        let mut f = vec![0; frames::TCP_DATA_OFFSET];
        f.extend_from_slice(data);
        f
    }

    fn window(offset: usize, len: usize, chunk: usize) -> Option<ReadWindow> {
        let data_offset = frames::TCP_DATA_OFFSET;
        Some(ReadWindow {
            offset,
            len,
            chunk,
            data_offset,
        })
    }

    fn tcp_frame(seq: u32, ack: u32, flags: u8, data: &[u8]) -> Vec<u8> {
        let r = to_nat(OUTSIDE);
        let h = tcp_wire::Repr {
            src_port: PORT,
            dst_port: 80,
            seq_number: seq,
            ack_number: ack,
            flags: Flags(flags),
            window_len: 65535,
            max_seg_size: (flags & F::SYN != 0).then_some(1460),
            window_scale: (flags & F::SYN != 0).then_some(GUEST_WSCALE),
            ..tcp_wire::Repr::default()
        };
        frames::ip_frame(&r, IpProtocol::TCP, 1, &frames::tcp_segment(&r, &h, data))
    }

    /// The TCP segments among `out`, owned: (seq, ack, flags, payload).
    fn segments(out: &[Output]) -> Vec<(u32, u32, u8, Vec<u8>)> {
        out.iter()
            .filter(|o| matches!(o, Output::Frame(_)))
            .map(|o| {
                let ip = ip_of(o);
                let (t, payload) = tcp_of(&ip);
                (t.seq_number, t.ack_number, t.flags.0, payload.to_vec())
            })
            .collect()
    }

    /// Socket data through [`NatDevice::tcp_data`], cut and checksummed as an
    /// offloading port would, so every segment's checksum is verified.
    fn data_segments(
        nat: &mut NatDevice,
        t: Instant,
        flow: FlowId,
        data: &[u8],
        out: &mut Vec<Output>,
    ) -> Vec<(u32, u32, u8, Vec<u8>)> {
        let mut frame = vec![0; frames::TCP_DATA_OFFSET];
        frame.extend_from_slice(data);
        let Some(offload) = nat.tcp_data(t, flow, &mut frame, false, out) else {
            return Vec::new();
        };
        let frames = if offload.is_gso() {
            let seg = Segmenter::new(&frame, &offload).expect("a valid super-frame");
            (0..seg.count())
                .map(|i| {
                    let mut f = vec![0; seg.segment_len(i)];
                    seg.write(i, &mut f).expect("segment");
                    Output::Frame(f)
                })
                .collect()
        } else {
            complete_checksum(&mut frame, &offload).expect("checksum");
            vec![Output::Frame(frame)]
        };
        segments(&frames)
    }

    /// The bytes an [`Output::TcpWrite`] among `out` asks to write from `frame`.
    fn written<'a>(out: &[Output], frame: &'a [u8]) -> Option<(&'a [u8], bool)> {
        out.iter().find_map(|o| match o {
            Output::TcpWrite { data, fin, .. } => Some((&frame[data.clone()], *fin)),
            _ => None,
        })
    }

    /// Guest SYN (seq 1000), connect done, SYN-ACK, guest ACK: established.
    fn established(nat: &mut NatDevice, t: Instant) -> (FlowId, u32) {
        let mut out = Vec::new();
        nat.receive(t, &tcp_frame(1000, 0, F::SYN, b""), &mut out);
        let [Output::Open {
            flow,
            proto: Proto::Tcp,
            to,
        }] = out[..]
        else {
            panic!("{out:?}");
        };
        assert_eq!(to, sa(OUTSIDE, 80));
        out.clear();
        nat.tcp_connected(t, flow, &mut out);
        let segs = segments(&out);
        let (isn, ack, flags, _) = segs[0].clone();
        assert_eq!((ack, flags), (1001, F::SYN | F::ACK));
        out.clear();
        nat.receive(t, &tcp_frame(1001, isn + 1, F::ACK, b""), &mut out);
        (flow, isn)
    }

    #[test]
    fn guest_data_is_written_and_acked_for_what_the_socket_took() {
        let mut nat = NatDevice::new(config(), secrets());
        let t = Instant::now();
        let (flow, isn) = established(&mut nat, t);
        let mut out = Vec::new();
        let f = tcp_frame(1001, isn + 1, F::ACK | F::PSH, b"GET / HTTP/1.0\r\n");
        nat.receive(t, &f, &mut out);
        assert_eq!(written(&out, &f), Some((&b"GET / HTTP/1.0\r\n"[..], false)));
        out.clear();
        nat.tcp_written(flow, 4, false, 1000, &mut out);
        assert_eq!(segments(&out)[0].1, 1005, "ACK only what was written");
        out.clear();
        // The guest retransmits from 1005; the overlap is trimmed.
        let f = tcp_frame(1001, isn + 1, F::ACK, b"GET / HTTP/1.0\r\n");
        nat.receive(t, &f, &mut out);
        assert_eq!(written(&out, &f), Some((&b"/ HTTP/1.0\r\n"[..], false)));
    }

    #[test]
    fn socket_data_goes_out_in_mss_segments_and_is_consumed_when_acked() {
        let mut c = config();
        c.mtu = 140; // MSS 100
        let mut nat = NatDevice::new(c, secrets());
        let t = Instant::now();
        let (flow, isn) = established(&mut nat, t);
        let chunk = frames::TCP_MAX_DATA / 100 * 100;
        assert_eq!(nat.tcp_read_window(flow), window(0, GUEST_WINDOW, chunk));
        let mut out = Vec::new();
        let data: Vec<u8> = (0..250u32).map(|i| i as u8).collect();
        let segs = data_segments(&mut nat, t, flow, &data, &mut out);
        assert!(out.is_empty(), "one super-frame, nothing else: {out:?}");
        assert_eq!(segs.len(), 3);
        assert_eq!(
            (segs[0].0, segs[1].0, segs[2].0),
            (isn + 1, isn + 101, isn + 201)
        );
        assert_eq!(segs[2].3.len(), 50);
        let all: Vec<u8> = segs.iter().flat_map(|s| s.3.clone()).collect();
        assert_eq!(all, data);
        assert_eq!(
            nat.tcp_read_window(flow),
            window(250, GUEST_WINDOW - 250, chunk)
        );
        out.clear();
        nat.receive(t, &tcp_frame(1001, isn + 201, F::ACK, b""), &mut out);
        assert!(
            out.contains(&Output::TcpConsume { flow, bytes: 200 }),
            "{out:?}"
        );
        assert!(out.contains(&Output::TcpRead { flow }));
        // No ACK for the rest: after the timeout it is peeked and sent again.
        out.clear();
        let at = nat.poll_at().unwrap();
        nat.poll(at, &mut out);
        assert!(out.contains(&Output::TcpRead { flow }));
        assert_eq!(nat.tcp_read_window(flow), window(0, GUEST_WINDOW, chunk));
    }

    #[test]
    fn window_scaling_is_negotiated_and_our_window_is_scaled() {
        let mut nat = NatDevice::new(config(), secrets());
        let t = Instant::now();
        let mut out = Vec::new();
        nat.receive(t, &tcp_frame(1000, 0, F::SYN, b""), &mut out);
        let Output::Open { flow, .. } = out[0] else {
            panic!("{out:?}")
        };
        out.clear();
        nat.tcp_connected(t, flow, &mut out);
        let f = Output::Frame(match &out[0] {
            Output::Frame(f) => f.clone(),
            o => panic!("{o:?}"),
        });
        let (synack, _) = tcp_of(&ip_of(&f));
        assert_eq!(synack.window_scale, Some(crate::device::TCP_WINDOW_SCALE));
        assert_eq!(synack.window_len, 65535, "SYN windows are never scaled");
        let isn = synack.seq_number;
        out.clear();
        nat.receive(t, &tcp_frame(1001, isn + 1, F::ACK, b"abc"), &mut out);
        nat.tcp_written(flow, 3, false, 100_000, &mut out);
        let ack = out.iter().rev().find_map(|o| match o {
            Output::Frame(f) => Some(f.clone()),
            _ => None,
        });
        let ack = Output::Frame(ack.unwrap());
        let (ack, _) = tcp_of(&ip_of(&ack));
        assert_eq!(
            (ack.ack_number, ack.window_len),
            (1004, (100_000 >> 5) as u16)
        );
    }

    proptest! {
        /// Offloaded frames skip the checksum, so mutated headers reach the flow: what
        /// the device asks the shell to write must still lie inside the frame.
        #[test]
        fn tcp_writes_always_point_inside_their_frame(
            flips in proptest::collection::vec((0usize..120, any::<u8>()), 0..8),
            len in 0usize..64,
        ) {
            let mut nat = NatDevice::new(config(), secrets());
            let t = Instant::now();
            let (_, isn) = established(&mut nat, t);
            let mut f = tcp_frame(1001, isn + 1, F::ACK | F::PSH, &vec![7; len]);
            for (at, v) in flips {
                let at = at % f.len();
                f[at] = v;
            }
            let mut out = Vec::new();
            nat.receive_offloaded(t, &f, &mut out);
            for o in &out {
                if let Output::TcpWrite { data, .. } = o {
                    prop_assert!(data.start <= data.end && data.end <= f.len(), "{data:?}");
                }
            }
        }
    }

    #[test]
    fn a_huge_guest_window_does_not_make_the_shell_peek_without_bound() {
        let mut nat = NatDevice::new(config(), secrets());
        let t = Instant::now();
        let r = to_nat(OUTSIDE);
        let h = tcp_wire::Repr {
            src_port: PORT,
            dst_port: 80,
            seq_number: 1000,
            ack_number: 0,
            flags: Flags(F::SYN),
            window_len: 65535,
            max_seg_size: Some(1460),
            window_scale: Some(14), // 1 GiB
            ..tcp_wire::Repr::default()
        };
        let syn = frames::ip_frame(&r, IpProtocol::TCP, 1, &frames::tcp_segment(&r, &h, b""));
        let mut out = Vec::new();
        nat.receive(t, &syn, &mut out);
        let Output::Open { flow, .. } = out[0] else {
            panic!("{out:?}")
        };
        out.clear();
        nat.tcp_connected(t, flow, &mut out);
        let isn = segments(&out)[0].0;
        let h = tcp_wire::Repr {
            seq_number: 1001,
            ack_number: isn + 1,
            flags: Flags(F::ACK),
            max_seg_size: None,
            window_scale: None,
            ..h
        };
        let ack = frames::ip_frame(&r, IpProtocol::TCP, 1, &frames::tcp_segment(&r, &h, b""));
        nat.receive(t, &ack, &mut out);
        assert_eq!(nat.tcp_read_window(flow).unwrap().len, 8 << 20);
    }

    #[test]
    fn three_duplicate_acks_send_again_from_the_last_ack() {
        let mut nat = NatDevice::new(config(), secrets());
        let t = Instant::now();
        let (flow, isn) = established(&mut nat, t);
        let mut out = Vec::new();
        data_segments(&mut nat, t, flow, &[7; 3000], &mut out);
        // The guest got the first 1460 bytes only, and says so three more times.
        out.clear();
        nat.receive(t, &tcp_frame(1001, isn + 1461, F::ACK, b""), &mut out);
        assert!(out.contains(&Output::TcpConsume { flow, bytes: 1460 }));
        assert_eq!(nat.tcp_read_window(flow).unwrap().offset, 1540);
        for dup in 1..=3 {
            out.clear();
            nat.receive(t, &tcp_frame(1001, isn + 1461, F::ACK, b""), &mut out);
            assert_eq!(
                out.contains(&Output::TcpRead { flow }),
                dup == 3,
                "dup {dup}"
            );
        }
        assert_eq!(nat.tcp_read_window(flow).unwrap().offset, 0, "gone back");
        // The guest had the rest after all: an ACK beyond what was sent again counts.
        data_segments(&mut nat, t, flow, &[7; 100], &mut out);
        out.clear();
        nat.receive(t, &tcp_frame(1001, isn + 3001, F::ACK, b""), &mut out);
        assert!(
            out.contains(&Output::TcpConsume { flow, bytes: 1540 }),
            "{out:?}"
        );
        assert_eq!(nat.tcp_read_window(flow).unwrap().offset, 0);
    }

    #[test]
    fn an_offloaded_super_frame_is_one_write_without_a_checksum_check() {
        let mut nat = NatDevice::new(config(), secrets());
        let t = Instant::now();
        let (_, isn) = established(&mut nat, t);
        let data = vec![9u8; 20_000];
        let mut f = tcp_frame(1001, isn + 1, F::ACK, &data);
        f[HEADER_LEN + 20 + 16] ^= 0xff; // a partial checksum is no checksum
        let mut out = Vec::new();
        nat.receive(t, &f, &mut out);
        assert!(!out.iter().any(|o| matches!(o, Output::TcpWrite { .. })));
        assert!(nat.receive_offloaded(t, &f, &mut out));
        assert_eq!(written(&out, &f), Some((&data[..], false)));
    }

    #[test]
    fn fins_both_ways_end_the_flow() {
        let mut nat = NatDevice::new(config(), secrets());
        let t = Instant::now();
        let (flow, isn) = established(&mut nat, t);
        let mut out = Vec::new();
        // The server closes: EOF on the socket becomes FIN.
        assert_eq!(
            nat.tcp_data(t, flow, &mut peeked(b""), true, &mut out),
            None
        );
        let segs = segments(&out);
        assert_eq!((segs[0].0, segs[0].2), (isn + 1, F::FIN | F::ACK));
        assert_eq!(nat.tcp_read_window(flow), None);
        out.clear();
        nat.receive(t, &tcp_frame(1001, isn + 2, F::ACK, b""), &mut out);
        assert!(!out.iter().any(|o| matches!(o, Output::TcpConsume { .. })));
        // The guest closes too.
        out.clear();
        nat.receive(t, &tcp_frame(1001, isn + 2, F::ACK | F::FIN, b""), &mut out);
        assert!(matches!(
            out[..],
            [Output::TcpWrite { flow: f, ref data, fin: true }] if f == flow && data.is_empty()
        ));
        out.clear();
        nat.tcp_written(flow, 0, true, 65535, &mut out);
        assert_eq!(segments(&out)[0].1, 1002, "FIN acked");
        assert!(out.contains(&Output::Close { flow }));
        assert_eq!(nat.flow_count(), 0);
    }

    #[test]
    fn a_syn_over_the_flow_limit_is_reset_and_counted() {
        let mut c = config();
        c.max_flows = 1;
        let mut nat = NatDevice::new(c, secrets());
        let t = Instant::now();
        let mut out = Vec::new();
        nat.receive(t, &udp_frame(OUTSIDE, 1, 9, b""), &mut out);
        out.clear();
        nat.receive(t, &tcp_frame(1000, 0, F::SYN, b""), &mut out);
        let segs = segments(&out);
        assert_eq!(segs.len(), 1, "{out:?}");
        assert_eq!((segs[0].1, segs[0].2), (1001, F::RST | F::ACK));
        assert_eq!((nat.flow_count(), nat.counters().refused_flows), (1, 1));
    }

    #[test]
    fn refused_connections_and_strays_get_rst() {
        let mut nat = NatDevice::new(config(), secrets());
        let t = Instant::now();
        let mut out = Vec::new();
        nat.receive(t, &tcp_frame(1000, 0, F::SYN, b""), &mut out);
        let Output::Open { flow, .. } = out[0] else {
            panic!()
        };
        out.clear();
        nat.socket_error(flow, SocketError::Refused, &mut out);
        let segs = segments(&out);
        assert_eq!((segs[0].1, segs[0].2), (1001, F::RST | F::ACK));
        assert_eq!(nat.flow_count(), 0);
        out.clear();
        nat.receive(t, &tcp_frame(5000, 77, F::ACK, b"x"), &mut out);
        let segs = segments(&out);
        assert_eq!((segs[0].0, segs[0].2), (77, F::RST));
    }

    #[test]
    fn tcp_to_the_gateway_is_reset_without_host_loopback() {
        let mut nat = NatDevice::new(config(), secrets());
        let r = to_nat(GW);
        let h = tcp_wire::Repr {
            src_port: PORT,
            dst_port: 22,
            seq_number: 1,
            ack_number: 0,
            flags: Flags(F::SYN),
            window_len: 100,
            max_seg_size: None,
            window_scale: None,
            ..tcp_wire::Repr::default()
        };
        let f = frames::ip_frame(&r, IpProtocol::TCP, 1, &frames::tcp_segment(&r, &h, b""));
        let mut out = Vec::new();
        nat.receive(Instant::now(), &f, &mut out);
        assert_eq!(segments(&out)[0].2, F::RST | F::ACK);
    }
}

#[test]
fn dns_over_tcp_to_the_gateway_goes_to_the_upstream_and_big_answers_are_truncated() {
    let mut c = config();
    c.mtu = 200;
    let mut nat = NatDevice::new(c, secrets());
    let r = to_nat(GW);
    let h = tcp_wire::Repr {
        src_port: 40000,
        dst_port: 53,
        seq_number: 1,
        ack_number: 0,
        flags: Flags(Flags::SYN),
        window_len: 1000,
        max_seg_size: None,
        window_scale: None,
        ..tcp_wire::Repr::default()
    };
    let syn = frames::ip_frame(&r, IpProtocol::TCP, 1, &frames::tcp_segment(&r, &h, b""));
    let mut out = Vec::new();
    nat.receive(Instant::now(), &syn, &mut out);
    assert!(
        matches!(out[..], [Output::Open { proto: Proto::Tcp, to, .. }] if to == "127.0.0.1:5353".parse().unwrap()),
        "{out:?}"
    );
    // A UDP answer larger than the MTU comes back as header + question with TC.
    let mut query = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    query.extend_from_slice(b"\x04test\x00\x00\x01\x00\x01");
    out.clear();
    nat.receive(Instant::now(), &udp_frame(GW, 40001, 53, &query), &mut out);
    let [Output::Open { flow, .. }, Output::Send { data: sent, .. }] = &out[..] else {
        panic!("{out:?}");
    };
    let (flow, mut answer) = (*flow, sent.clone());
    answer[2] |= 0x80;
    answer[7] = 20;
    for _ in 0..20 {
        answer.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
    }
    out.clear();
    nat.socket_data(Instant::now(), flow, &answer, &mut out);
    let ip = ip_of(&out[1]);
    let u = udp_of(&ip);
    assert_eq!((u.payload()[2] & 0x02, u.payload().len()), (0x02, 22));
    assert_eq!(nat.counters().dns_truncated, 1);
}

#[test]
fn a_forwarded_connection_arps_for_the_guest_then_opens_to_it() {
    use vnet_core::wire::tcp::Flags as F;
    let mut nat = NatDevice::new(config(), secrets());
    let t = Instant::now();
    let mut out = Vec::new();
    let guest = sa(GUEST, 80);
    let peer: SocketAddr = "127.0.0.1:51000".parse().unwrap();
    let flow = nat.tcp_accepted(t, guest, peer, &mut out).unwrap();
    // The guest's MAC is unknown: ARP first.
    let [Output::Frame(arp)] = &out[..] else {
        panic!("{out:?}");
    };
    let req = arp_of(arp);
    assert_eq!(req.operation, arp::Operation::Request);
    assert_eq!(
        (req.source_protocol_addr, req.target_protocol_addr),
        (GW, GUEST)
    );
    out.clear();
    nat.receive(t, &arp_reply_from_guest(), &mut out);
    // Now the SYN, from the gateway (the peer was host-local).
    let ip = ip_of(&out[0]);
    assert_eq!((ip.src_addr(), ip.dst_addr()), (GW, GUEST));
    let (syn, _) = tcp_of(&ip);
    assert_eq!(
        (syn.flags.0, syn.src_port, syn.dst_port),
        (F::SYN, 51000, 80)
    );
    let isn = syn.seq_number;
    out.clear();
    // The guest accepts.
    let r = Route {
        src_mac: GUEST_MAC,
        dst_mac: NAT_MAC,
        src: GUEST.into(),
        dst: GW.into(),
    };
    let h = tcp_wire::Repr {
        src_port: 80,
        dst_port: 51000,
        seq_number: 7000,
        ack_number: isn + 1,
        flags: Flags(F::SYN | F::ACK),
        window_len: 65535,
        max_seg_size: Some(1460),
        window_scale: None,
        ..tcp_wire::Repr::default()
    };
    let synack = frames::ip_frame(&r, IpProtocol::TCP, 1, &frames::tcp_segment(&r, &h, b""));
    nat.receive(t, &synack, &mut out);
    let (ack, _) = tcp_of(&ip_of(&out[0]));
    assert_eq!((ack.flags.0, ack.ack_number), (F::ACK, 7001));
    assert!(out.contains(&Output::TcpRead { flow }));
    let chunk = frames::TCP_MAX_DATA / 1460 * 1460;
    assert_eq!(
        nat.tcp_read_window(flow),
        Some(crate::ReadWindow {
            offset: 0,
            len: 65535,
            chunk,
            data_offset: frames::TCP_DATA_OFFSET,
        }),
        "no window scaling: the guest's SYN-ACK did not offer it"
    );
    // A refused forward (guest RST) ends the flow.
    out.clear();
    let flow2 = nat.tcp_accepted(t, sa(GUEST, 81), peer, &mut out).unwrap();
    let (syn, _) = tcp_of(&ip_of(&out[0]));
    assert_eq!(syn.flags.0, F::SYN, "the MAC is known now: no ARP");
    let syn_seq = syn.seq_number;
    out.clear();
    let h = tcp_wire::Repr {
        src_port: 81,
        flags: Flags(F::RST | F::ACK),
        seq_number: 0,
        ack_number: syn_seq + 1,
        ..h
    };
    let rst = frames::ip_frame(&r, IpProtocol::TCP, 1, &frames::tcp_segment(&r, &h, b""));
    nat.receive(t, &rst, &mut out);
    assert!(out.contains(&Output::Close { flow: flow2 }));
}

/// The guest answers the device's ARP request for it.
fn arp_reply_from_guest() -> Vec<u8> {
    let request = arp::Repr {
        operation: arp::Operation::Request,
        source_hardware_addr: NAT_MAC,
        source_protocol_addr: GW,
        target_hardware_addr: MacAddr([0; 6]),
        target_protocol_addr: GUEST,
    };
    frames::arp_reply(&request, GUEST_MAC)
}

#[test]
fn a_udp_forward_arps_for_the_guest_then_carries_datagrams_both_ways_until_idle() {
    let mut c = config();
    c.udp_timeout = Duration::from_secs(10);
    let mut nat = NatDevice::new(c, secrets());
    let t = Instant::now();
    let mut out = Vec::new();
    let guest = sa(GUEST, 5353);
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    // The guest's MAC is unknown: ARP, and this datagram is lost.
    assert_eq!(nat.udp_forwarded(t, guest, peer, b"lost", &mut out), None);
    let [Output::Frame(arp)] = &out[..] else {
        panic!("{out:?}");
    };
    let req = arp_of(arp);
    assert_eq!(req.operation, arp::Operation::Request);
    assert_eq!(
        (req.source_protocol_addr, req.target_protocol_addr),
        (GW, GUEST)
    );
    assert_eq!((nat.counters().ignored, nat.flow_count()), (1, 0));
    out.clear();
    nat.receive(t, &arp_reply_from_guest(), &mut out);
    assert!(out.is_empty(), "{out:?}");
    // Now it goes through, from the gateway: the peer is host-local.
    let flow = nat
        .udp_forwarded(t, guest, peer, b"ping", &mut out)
        .unwrap();
    let ip = ip_of(&out[0]);
    let u = udp_of(&ip);
    assert_eq!(
        (
            ip.src_addr(),
            ip.dst_addr(),
            u.src_port(),
            u.dst_port(),
            u.payload()
        ),
        (GW, GUEST, 40000, 5353, &b"ping"[..])
    );
    out.clear();
    // The guest's answer takes the flow back to the peer: no socket of its own, and no
    // `host_loopback` needed to answer the gateway.
    let later = t + Duration::from_secs(5);
    nat.receive(later, &udp_frame(GW, 5353, 40000, b"pong"), &mut out);
    assert_eq!(
        out,
        vec![Output::Send {
            flow,
            data: b"pong".to_vec()
        }]
    );
    out.clear();
    // The peer's next datagram refreshes the same flow.
    assert_eq!(
        nat.udp_forwarded(later, guest, peer, b"again", &mut out),
        Some(flow)
    );
    let n = nat.counters();
    assert_eq!(
        (n.flows_opened, n.from_host, n.to_host, nat.flow_count()),
        (1, 2, 1, 1)
    );
    out.clear();
    // Idle for udp_timeout after the last datagram: closed.
    let at = nat.poll_at().unwrap();
    nat.poll(at, &mut out);
    assert!(out.is_empty(), "{out:?}");
    let at = nat.poll_at().unwrap();
    assert_eq!(at, later + Duration::from_secs(10));
    nat.poll(at, &mut out);
    assert_eq!(out, vec![Output::Close { flow }]);
    assert_eq!(nat.counters().flows_closed, 1);
    out.clear();
    // Afterwards the guest's stray answer to the gateway is refused again.
    nat.receive(at, &udp_frame(GW, 5353, 40000, b"late"), &mut out);
    assert_eq!(ip_of(&out[0]).payload()[1], Unreachable::PORT);
}

#[test]
fn a_forgotten_forward_flow_is_gone_without_a_close() {
    let mut nat = NatDevice::new(config(), secrets());
    let t = Instant::now();
    let mut out = Vec::new();
    nat.receive(t, &arp_reply_from_guest(), &mut out);
    let guest = sa(GUEST, 5353);
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let flow = nat.udp_forwarded(t, guest, peer, b"hi", &mut out).unwrap();
    out.clear();
    // The shell removed the forward and its socket: nothing for it to close.
    assert!(nat.forget(flow));
    assert!(!nat.forget(flow));
    assert_eq!((nat.flow_count(), nat.counters().flows_closed), (0, 1));
    nat.poll(t + Duration::from_secs(100), &mut out);
    assert!(out.is_empty(), "{out:?}");
    // The guest's answer to the gateway finds no flow any more.
    nat.receive(t, &udp_frame(GW, 5353, 40000, b"late"), &mut out);
    assert_eq!(ip_of(&out[0]).payload()[1], Unreachable::PORT);
}

#[test]
fn a_udp_forward_shows_outside_peers_as_themselves_and_keeps_to_its_own_flows() {
    let mut c = config();
    c.max_flows = 2;
    let mut nat = NatDevice::new(c, secrets());
    let t = Instant::now();
    let mut out = Vec::new();
    nat.receive(t, &arp_reply_from_guest(), &mut out);
    let guest = sa(GUEST, 6000);
    let peer = sa(OUTSIDE, 7000);
    let flow = nat.udp_forwarded(t, guest, peer, b"hi", &mut out).unwrap();
    let ip = ip_of(&out[0]);
    let u = udp_of(&ip);
    assert_eq!(
        (ip.src_addr(), u.src_port(), u.dst_port()),
        (OUTSIDE, 7000, 6000)
    );
    out.clear();
    nat.receive(t, &udp_frame(OUTSIDE, 6000, 7000, b"ho"), &mut out);
    assert_eq!(
        out,
        vec![Output::Send {
            flow,
            data: b"ho".to_vec()
        }]
    );
    out.clear();
    // The guest's own outbound flow is not taken over by a forward.
    nat.receive(t, &udp_frame(OUTSIDE, 6001, 7001, b"out"), &mut out);
    assert!(matches!(out[0], Output::Open { .. }), "{out:?}");
    out.clear();
    let other = sa(GUEST, 6001);
    let ignored = nat.counters().ignored;
    let outbound_peer = sa(OUTSIDE, 7001);
    assert_eq!(
        nat.udp_forwarded(t, other, outbound_peer, b"x", &mut out),
        None
    );
    // And the flow limit holds for forwards too.
    let third = sa(OUTSIDE, 7002);
    assert_eq!(nat.udp_forwarded(t, guest, third, b"x", &mut out), None);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!((nat.counters().ignored, nat.flow_count()), (ignored + 2, 2));
}

mod refused_destinations {
    use super::*;
    use crate::{refusal, Refusal};

    const METADATA: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
    const HOST: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);

    fn syn_frame(dst: Ipv4Addr, dport: u16) -> Vec<u8> {
        let r = to_nat(dst);
        let h = tcp_wire::Repr {
            src_port: 40000,
            dst_port: dport,
            seq_number: 1,
            flags: Flags(Flags::SYN),
            window_len: 1000,
            ..tcp_wire::Repr::default()
        };
        frames::ip_frame(&r, IpProtocol::TCP, 1, &frames::tcp_segment(&r, &h, b""))
    }

    fn opens(out: &[Output]) -> bool {
        out.iter().any(|o| matches!(o, Output::Open { .. }))
    }

    #[test]
    fn the_rule() {
        let host = [IpAddr::V4(HOST)];
        for (dst, loopback, want) in [
            (METADATA, false, Some(Refusal::Answered)),
            (METADATA, true, Some(Refusal::Answered)),
            (Ipv4Addr::new(224, 0, 0, 1), false, Some(Refusal::Silent)),
            (
                Ipv4Addr::new(239, 255, 255, 250),
                true,
                Some(Refusal::Silent),
            ),
            (Ipv4Addr::BROADCAST, false, Some(Refusal::Silent)),
            (Ipv4Addr::UNSPECIFIED, false, Some(Refusal::Answered)),
            (Ipv4Addr::new(0, 1, 2, 3), true, Some(Refusal::Answered)),
            (Ipv4Addr::LOCALHOST, true, Some(Refusal::Answered)),
            (HOST, false, Some(Refusal::Answered)),
            (HOST, true, None),
            (OUTSIDE, false, None),
            (Ipv4Addr::new(169, 253, 1, 1), false, None),
        ] {
            assert_eq!(
                refusal(dst.into(), loopback, &host),
                want,
                "{dst} host_loopback={loopback}"
            );
        }
    }

    #[test]
    fn tcp_to_the_metadata_service_is_reset_and_counted() {
        let mut nat = NatDevice::new(config(), secrets());
        let mut out = Vec::new();
        nat.receive(Instant::now(), &syn_frame(METADATA, 80), &mut out);
        assert!(!opens(&out), "{out:?}");
        let ip = ip_of(&out[0]);
        assert_eq!(ip.src_addr(), METADATA);
        let (seg, _) = tcp_of(&ip);
        assert_eq!(seg.flags.0, Flags::RST | Flags::ACK);
        assert_eq!(seg.ack_number, 2);
        assert_eq!(nat.counters().refused_destinations, 1);
        assert_eq!(nat.flow_count(), 0);
    }

    #[test]
    fn udp_and_echo_to_link_local_are_prohibited() {
        let mut nat = NatDevice::new(config(), secrets());
        let mut out = Vec::new();
        nat.receive(
            Instant::now(),
            &udp_frame(METADATA, 5000, 80, b"x"),
            &mut out,
        );
        nat.receive(Instant::now(), &echo_frame(METADATA, 7, 1), &mut out);
        assert_eq!(out.len(), 2, "{out:?}");
        for o in &out {
            let ip = ip_of(o);
            assert_eq!(ip.payload()[0], Message::DST_UNREACHABLE);
            assert_eq!(ip.payload()[1], Unreachable::ADMIN_PROHIBITED);
        }
        assert_eq!(nat.counters().refused_destinations, 2);
        assert_eq!(nat.flow_count(), 0);
    }

    #[test]
    fn multicast_is_refused_silently() {
        let mut nat = NatDevice::new(config(), secrets());
        let mut out = Vec::new();
        let all_hosts = Ipv4Addr::new(224, 0, 0, 1);
        nat.receive(
            Instant::now(),
            &udp_frame(all_hosts, 5000, 80, b"x"),
            &mut out,
        );
        nat.receive(Instant::now(), &syn_frame(all_hosts, 80), &mut out);
        nat.receive(Instant::now(), &echo_frame(all_hosts, 7, 1), &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(nat.counters().refused_destinations, 3);
    }

    #[test]
    fn the_hosts_own_addresses_are_refused_unless_host_loopback() {
        let mut nat = NatDevice::new(config(), secrets());
        let mut out = Vec::new();
        nat.receive(Instant::now(), &syn_frame(HOST, 22), &mut out);
        assert!(opens(&out), "not a host address yet: {out:?}");
        nat.set_host_addresses(&[HOST.into()]);
        out.clear();
        nat.receive(Instant::now(), &udp_frame(HOST, 5000, 80, b"x"), &mut out);
        assert_eq!(ip_of(&out[0]).payload()[1], Unreachable::ADMIN_PROHIBITED);
        assert_eq!(nat.counters().refused_destinations, 1);

        let mut c = config();
        c.host_loopback = true;
        let mut nat = NatDevice::new(c, secrets());
        nat.set_host_addresses(&[HOST.into()]);
        out.clear();
        nat.receive(Instant::now(), &syn_frame(HOST, 22), &mut out);
        assert!(
            matches!(out[0], Output::Open { to, .. } if to == sa(HOST, 22)),
            "{out:?}"
        );
        assert_eq!(nat.counters().refused_destinations, 0);
    }

    #[test]
    fn a_public_address_opens_a_flow() {
        let mut nat = NatDevice::new(config(), secrets());
        nat.set_host_addresses(&[HOST.into()]);
        let mut out = Vec::new();
        nat.receive(Instant::now(), &syn_frame(OUTSIDE, 443), &mut out);
        assert!(opens(&out), "{out:?}");
        out.clear();
        nat.receive(
            Instant::now(),
            &udp_frame(OUTSIDE, 5000, 53, b"x"),
            &mut out,
        );
        assert!(opens(&out), "{out:?}");
        assert_eq!(nat.counters().refused_destinations, 0);
    }

    #[test]
    fn dns_upstreams_and_forwarded_peers_are_not_refused() {
        let mut c = config();
        c.dns_upstreams = vec![SocketAddrV4::new(METADATA, 53)];
        let mut nat = NatDevice::new(c, secrets());
        nat.set_host_addresses(&[HOST.into()]);
        let t = Instant::now();
        let mut out = Vec::new();
        let query = [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1];
        nat.receive(t, &udp_frame(GW, 5000, 53, &query), &mut out);
        assert!(
            out.iter()
                .any(|o| matches!(o, Output::Open { to, .. } if to.ip() == IpAddr::V4(METADATA))),
            "a link-local upstream: {out:?}"
        );
        // A peer on the host's own address, through a UDP port forward: the guest's
        // replies go back to it.
        let guest = sa(GUEST, 8080);
        let peer = sa(HOST, 6000);
        out.clear();
        nat.receive(t, &udp_frame(OUTSIDE, 8080, 1, b""), &mut out); // the guest's MAC
        out.clear();
        let flow = nat
            .udp_forwarded(t, guest, peer, b"hi", &mut out)
            .expect("flow");
        out.clear();
        nat.receive(t, &udp_frame(HOST, 8080, 6000, b"reply"), &mut out);
        assert!(
            out.contains(&Output::Send {
                flow,
                data: b"reply".to_vec()
            }),
            "{out:?}"
        );
        assert_eq!(nat.counters().refused_destinations, 0);
    }
}
