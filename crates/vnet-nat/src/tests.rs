//! Scenarios of one guest talking to the device, with a virtual clock.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use vnet_core::wire::ethernet::{EtherType, MacAddr, HEADER_LEN};

use crate::wire::{self, IcmpEcho, Ipv4Packet, Route, UdpDatagram};
use crate::{FlowId, NatConfig, NatDevice, Output, Proto, SocketError};

const NAT_MAC: MacAddr = MacAddr([0x02, 0x76, 0x64, 0, 0, 8]);
const GUEST_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
const GW: Ipv4Addr = Ipv4Addr::new(192, 168, 8, 2);
const GUEST: Ipv4Addr = Ipv4Addr::new(192, 168, 8, 100);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

fn config() -> NatConfig {
    let mut c = NatConfig::new(NAT_MAC, GW, Ipv4Addr::new(192, 168, 8, 0), 24);
    c.dns_upstreams = vec!["127.0.0.1:5353".parse().unwrap()];
    c
}

fn to_nat(dst: Ipv4Addr) -> Route {
    Route {
        src_mac: GUEST_MAC,
        dst_mac: NAT_MAC,
        src: GUEST,
        dst,
    }
}

fn udp_frame(dst: Ipv4Addr, sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let r = to_nat(dst);
    wire::ipv4_frame(
        &r,
        wire::PROTO_UDP,
        1,
        &wire::udp_segment(&r, sport, dport, data),
    )
}

fn echo_frame(dst: Ipv4Addr, ident: u16, seq: u16) -> Vec<u8> {
    let m = IcmpEcho {
        kind: wire::ICMP_ECHO_REQUEST,
        ident,
        seq,
        data: b"ping data",
    };
    wire::ipv4_frame(&to_nat(dst), wire::PROTO_ICMP, 1, &m.to_bytes())
}

/// The IPv4 packet in a frame the device sent to the guest.
fn ip_of(out: &Output) -> Ipv4Packet<'_> {
    let Output::Frame(f) = out else {
        panic!("not a frame: {out:?}");
    };
    assert_eq!(&f[..6], &GUEST_MAC.0);
    assert_eq!(&f[6..12], &NAT_MAC.0);
    Ipv4Packet::parse(&f[HEADER_LEN..]).expect("valid IPv4")
}

#[test]
fn answers_arp_for_the_gateway_only() {
    let mut nat = NatDevice::new(config());
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
    let mut nat = NatDevice::new(config());
    let mut out = Vec::new();
    nat.receive(Instant::now(), &echo_frame(GW, 77, 3), &mut out);
    let ip = ip_of(&out[0]);
    assert_eq!((ip.src, ip.dst), (GW, GUEST));
    let e = IcmpEcho::parse(ip.payload).unwrap();
    assert_eq!((e.kind, e.ident, e.seq), (wire::ICMP_ECHO_REPLY, 77, 3));
}

#[test]
fn an_outside_ping_opens_one_flow_and_the_reply_gets_the_guests_ident_back() {
    let mut nat = NatDevice::new(config());
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
            if *to == SocketAddrV4::new(OUTSIDE, 0) && f1 == flow && f2 == flow =>
        {
            *flow
        }
        other => panic!("{other:?}"),
    };
    out.clear();
    // The ping socket's identifier is the kernel's choice, not the guest's.
    let reply = IcmpEcho {
        kind: wire::ICMP_ECHO_REPLY,
        ident: 4242,
        seq: 2,
        data: b"ping data",
    };
    nat.socket_data(t, flow, &reply.to_bytes(), &mut out);
    let ip = ip_of(&out[0]);
    assert_eq!(
        (ip.src, ip.dst, ip.protocol),
        (OUTSIDE, GUEST, wire::PROTO_ICMP)
    );
    let e = IcmpEcho::parse(ip.payload).unwrap();
    assert_eq!((e.ident, e.seq, e.data), (77, 2, &b"ping data"[..]));
}

#[test]
fn without_ping_sockets_guests_hear_unreachable() {
    let mut c = config();
    c.icmp = false;
    let mut nat = NatDevice::new(c);
    let mut out = Vec::new();
    nat.receive(Instant::now(), &echo_frame(OUTSIDE, 1, 1), &mut out);
    let ip = ip_of(&out[0]);
    assert_eq!(
        (ip.src, ip.payload[0], ip.payload[1]),
        (GW, wire::ICMP_UNREACHABLE, wire::UNREACH_ADMIN)
    );
    assert_eq!(nat.flow_count(), 0);
}

#[test]
fn udp_flows_carry_both_ways_and_close_when_idle() {
    let mut c = config();
    c.udp_timeout = Duration::from_secs(10);
    let mut nat = NatDevice::new(c);
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
    assert_eq!(
        (*to, &data[..]),
        (SocketAddrV4::new(OUTSIDE, 7777), &b"hi"[..])
    );
    let flow = *flow;
    out.clear();
    nat.socket_data(t + Duration::from_secs(5), flow, b"hi back", &mut out);
    let ip = ip_of(&out[0]);
    let u = UdpDatagram::parse(&ip).unwrap();
    assert_eq!(
        (ip.src, u.src_port, u.dst_port, u.payload),
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
    let mut nat = NatDevice::new(config());
    let mut out = Vec::new();
    nat.receive(Instant::now(), &udp_frame(OUTSIDE, 5000, 9, b"x"), &mut out);
    let Output::Open { flow, .. } = out[0] else {
        panic!()
    };
    out.clear();
    nat.socket_error(flow, SocketError::Refused, &mut out);
    let ip = ip_of(&out[0]);
    assert_eq!(
        (ip.payload[0], ip.payload[1]),
        (wire::ICMP_UNREACHABLE, wire::UNREACH_PORT)
    );
    // The quote names the guest's datagram.
    let quoted = Ipv4Packet::parse(&ip.payload[8..]).unwrap_or_else(|_| panic!("quote"));
    assert_eq!((quoted.src, quoted.dst), (GUEST, OUTSIDE));
    out.clear();
    nat.open_failed(flow, &mut out);
    assert_eq!(ip_of(&out[0]).payload[1], wire::UNREACH_HOST);
    assert_eq!(nat.flow_count(), 0);
}

#[test]
fn dns_to_the_gateway_is_forwarded_with_a_new_id_and_answered_from_the_gateway() {
    let mut nat = NatDevice::new(config());
    let mut query = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    query.extend_from_slice(b"\x04test\x00\x00\x01\x00\x01");
    let mut out = Vec::new();
    nat.receive(Instant::now(), &udp_frame(GW, 40000, 53, &query), &mut out);
    let [Output::DnsQuery { to, query: sent }] = &out[..] else {
        panic!("{out:?}");
    };
    assert_eq!(&sent[2..], &query[2..]);
    let (to, mut answer) = (*to, sent.clone());
    out.clear();
    answer[2] |= 0x80;
    nat.dns_data(to, &answer, &mut out);
    let ip = ip_of(&out[0]);
    let u = UdpDatagram::parse(&ip).unwrap();
    assert_eq!((ip.src, u.src_port, u.dst_port), (GW, 53, 40000));
    assert_eq!(&u.payload[..2], &[0xab, 0xcd]);
}

#[test]
fn the_host_loopback_is_reachable_only_when_allowed() {
    let mut nat = NatDevice::new(config());
    let mut out = Vec::new();
    nat.receive(Instant::now(), &udp_frame(GW, 5000, 8080, b"x"), &mut out);
    assert_eq!(ip_of(&out[0]).payload[1], wire::UNREACH_PORT);
    let mut c = config();
    c.host_loopback = true;
    let mut nat = NatDevice::new(c);
    out.clear();
    nat.receive(Instant::now(), &udp_frame(GW, 5000, 8080, b"x"), &mut out);
    assert!(matches!(out[0], Output::Open { to, .. } if to == "127.0.0.1:8080".parse().unwrap()));
    out.truncate(0);
}

#[test]
fn tcp_is_refused_promptly_and_local_traffic_is_ignored() {
    let mut nat = NatDevice::new(config());
    let mut out = Vec::new();
    let r = to_nat(OUTSIDE);
    nat.receive(
        Instant::now(),
        &wire::ipv4_frame(&r, wire::PROTO_TCP, 1, &[0; 20]),
        &mut out,
    );
    assert_eq!(ip_of(&out[0]).payload[0], wire::ICMP_UNREACHABLE);
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
fn the_flow_limit_holds() {
    let mut c = config();
    c.max_flows = 2;
    let mut nat = NatDevice::new(c);
    let mut out = Vec::new();
    for port in 1..=5 {
        nat.receive(Instant::now(), &udp_frame(OUTSIDE, port, 9, b""), &mut out);
    }
    assert_eq!(nat.flow_count(), 2);
    let opens = out
        .iter()
        .filter(|o| matches!(o, Output::Open { .. }))
        .count();
    assert_eq!(opens, 2);
    let _ = FlowId(0);
}

proptest! {
    #[test]
    fn never_panics_on_any_frame(
        body in proptest::collection::vec(any::<u8>(), 0..200),
        ethertype in prop_oneof![Just(0x0800u16), Just(0x0806), any::<u16>()],
    ) {
        let mut nat = NatDevice::new(config());
        let mut f = Vec::new();
        f.extend_from_slice(&NAT_MAC.0);
        f.extend_from_slice(&GUEST_MAC.0);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(&body);
        let mut out = Vec::new();
        nat.receive(Instant::now(), &f, &mut out);
        nat.socket_data(Instant::now(), FlowId(1), &body, &mut out);
        nat.dns_data("127.0.0.1:5353".parse().unwrap(), &body, &mut out);
        nat.poll(Instant::now() + Duration::from_secs(100), &mut out);
    }

    #[test]
    fn never_panics_on_mutated_valid_packets(
        flips in proptest::collection::vec((0usize..80, any::<u8>()), 1..6),
        kind in 0u8..3,
    ) {
        let mut f = match kind {
            0 => udp_frame(OUTSIDE, 1000, 53, b"some payload"),
            1 => udp_frame(GW, 1000, 53, &[0; 20]),
            _ => echo_frame(OUTSIDE, 5, 5),
        };
        for (at, v) in flips {
            let at = at % f.len();
            f[at] = v;
        }
        let mut nat = NatDevice::new(config());
        let mut out = Vec::new();
        nat.receive(Instant::now(), &f, &mut out);
        for o in &out {
            if let Output::Frame(fr) = o {
                prop_assert!(fr.len() >= 60);
            }
        }
    }
}
