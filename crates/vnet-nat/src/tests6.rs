//! IPv6 scenarios: a guest of the vnet's /64 talking to the device, as `tests` does for
//! IPv4 (whose helpers these mirror for the other header).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use vnet_core::wire::ethernet::{EtherType, MacAddr, HEADER_LEN};
use vnet_core::wire::offload::VirtioNetHdr;
use vnet_core::wire::tcp::{self as tcp_wire, Flags as F};
use vnet_core::wire::{icmpv6, ipv6, udp, IpProtocol};

use crate::frames::{self, Echo, Route};
use crate::{NatConfig, NatDevice, NatSecrets, Output, Proto, SocketError};

const NAT_MAC: MacAddr = MacAddr([0x02, 0x76, 0x64, 0, 0, 8]);
const GUEST_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
const GW: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xa, 0xb, 0xc, 0, 0, 0, 2);
const GUEST: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xa, 0xb, 0xc, 0x5054, 0xff, 0xfe00, 1);
const OUTSIDE: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7);

fn config() -> NatConfig {
    let mut c = NatConfig::new(
        NAT_MAC,
        Ipv4Addr::new(192, 168, 8, 2),
        Ipv4Addr::new(192, 168, 8, 0),
        24,
    );
    c.gateway6 = Some(GW);
    c
}

fn device() -> NatDevice {
    NatDevice::new(config(), NatSecrets::from_bytes([0x5e; 32]))
}

fn sa(ip: Ipv6Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(ip), port)
}

fn to_nat(dst: Ipv6Addr) -> Route {
    Route {
        src_mac: GUEST_MAC,
        dst_mac: NAT_MAC,
        src: GUEST.into(),
        dst: dst.into(),
    }
}

fn udp_frame(dst: Ipv6Addr, sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let r = to_nat(dst);
    let u = frames::udp_datagram(&r, sport, dport, data);
    frames::ip_frame(&r, IpProtocol::UDP, 0, &u)
}

fn echo_frame(dst: Ipv6Addr, ident: u16) -> Vec<u8> {
    let r = to_nat(dst);
    let echo = Echo {
        reply: false,
        ident,
        seq_no: 1,
        data: b"ping data",
    };
    frames::ip_frame(&r, IpProtocol::ICMPV6, 0, &frames::echo(&r, &echo))
}

fn syn_frame(dst: Ipv6Addr, port: u16) -> Vec<u8> {
    let r = to_nat(dst);
    let h = tcp_wire::Repr {
        src_port: 40000,
        dst_port: port,
        seq_number: 1000,
        flags: F(F::SYN),
        window_len: 65535,
        max_seg_size: Some(1440),
        window_scale: Some(7),
        ..tcp_wire::Repr::default()
    };
    frames::ip_frame(&r, IpProtocol::TCP, 0, &frames::tcp_segment(&r, &h, &[]))
}

/// The IPv6 packet in a frame the device sent to the guest, without padding.
fn ip_of(out: &Output) -> ipv6::Packet<&[u8]> {
    let Output::Frame(f) = out else {
        panic!("not a frame: {out:?}");
    };
    assert_eq!(&f[6..12], &NAT_MAC.0);
    assert_eq!(&f[12..14], &EtherType::IPV6.to_be_bytes());
    let ip = ipv6::Packet::new_checked(&f[HEADER_LEN..]).expect("valid IPv6");
    let len = ipv6::Repr::parse(&ip).expect("valid IPv6").buffer_len();
    ipv6::Packet::new_checked(&f[HEADER_LEN..HEADER_LEN + len]).unwrap()
}

/// The ICMPv6 message in a frame for the guest, its checksum verified: type, code and
/// the message.
fn icmp_of(out: &Output) -> (u8, u8, Vec<u8>) {
    let ip = ip_of(out);
    assert_eq!(ip.next_header(), IpProtocol::ICMPV6);
    let m = icmpv6::Packet::new_checked(ip.payload()).unwrap();
    assert!(
        m.verify_checksum(&ip.src_addr(), &ip.dst_addr()),
        "ICMPv6 checksum"
    );
    (m.msg_type(), m.msg_code(), ip.payload().to_vec())
}

/// The type and code of the ICMPv6 message in a frame for the guest.
fn kind(out: &Output) -> (u8, u8) {
    let (ty, code, _) = icmp_of(out);
    (ty, code)
}

#[test]
fn udp_to_an_ipv6_destination_is_a_flow_whose_answers_come_back_as_ipv6() {
    let mut nat = device();
    let t = Instant::now();
    let mut out = Vec::new();
    assert!(nat.receive(t, &udp_frame(OUTSIDE, 5000, 7777, b"hi"), &mut out));
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
    nat.socket_data(t, flow, b"hello back", &mut out);
    let ip = ip_of(&out[0]);
    assert_eq!((ip.src_addr(), ip.dst_addr()), (OUTSIDE, GUEST));
    let u = udp::Packet::new_checked(ip.payload()).unwrap();
    assert!(u.verify_checksum(&OUTSIDE.into(), &GUEST.into()));
    assert_eq!(
        (u.src_port(), u.dst_port(), u.payload()),
        (7777, 5000, &b"hello back"[..])
    );
    // A refused port outside: ICMPv6 port unreachable from the destination's gateway.
    out.clear();
    nat.socket_error(flow, SocketError::Refused, &mut out);
    let (ty, code, _) = icmp_of(&out[0]);
    assert_eq!((ty, code), (1, 4));
    assert_eq!(ip_of(&out[0]).src_addr(), GW);
    assert_eq!(nat.counters().flows_opened, 1);
}

#[test]
fn an_echo_to_the_outside_leaves_on_a_ping_socket_and_the_reply_gets_the_guests_ident() {
    let mut nat = device();
    let t = Instant::now();
    let mut out = Vec::new();
    nat.receive(t, &echo_frame(OUTSIDE, 77), &mut out);
    let [Output::Open {
        flow,
        proto: Proto::Icmp,
        to,
    }, Output::Send { .. }] = &out[..]
    else {
        panic!("{out:?}");
    };
    assert_eq!(*to, sa(OUTSIDE, 0));
    let flow = *flow;
    out.clear();
    // What an ICMPv6 ping socket returns: the kernel's identifier, a checksum for
    // addresses the device does not know.
    let mut reply = vec![129, 0, 0xde, 0xad, 0x10, 0x92, 0, 1];
    reply.extend_from_slice(b"ping data");
    nat.socket_data(t, flow, &reply, &mut out);
    let (ty, _, m) = icmp_of(&out[0]);
    assert_eq!(ty, 129);
    assert_eq!(
        frames::read_echo(&m, true),
        Some(Echo {
            reply: true,
            ident: 77,
            seq_no: 1,
            data: b"ping data"
        })
    );
    // Without ICMPv6 echo on the host: "administratively prohibited".
    let mut c = config();
    c.icmp6 = false;
    let mut nat = NatDevice::new(c, NatSecrets::from_bytes([1; 32]));
    out.clear();
    nat.receive(t, &echo_frame(OUTSIDE, 77), &mut out);
    assert_eq!(kind(&out[0]), (1, 1));
}

#[test]
fn the_hosts_loopback_and_link_local_are_refused_and_multicast_is_dropped() {
    let mut nat = device();
    let t = Instant::now();
    let host: Ipv6Addr = "2001:db8:ffff::1".parse().unwrap();
    nat.set_host_addresses(&[IpAddr::V6(host)]);
    for dst in [
        Ipv6Addr::LOCALHOST,
        "fe80::1".parse().unwrap(),
        "::ffff:127.0.0.1".parse().unwrap(),
        host,
    ] {
        let mut out = Vec::new();
        nat.receive(t, &udp_frame(dst, 5000, 53, b"x"), &mut out);
        assert_eq!(out.len(), 1, "{dst}: {out:?}");
        assert_eq!(kind(&out[0]), (1, 1), "{dst}");
        out.clear();
        nat.receive(t, &syn_frame(dst, 22), &mut out);
        let ip = ip_of(&out[0]);
        let t = tcp_wire::Packet::new_checked(ip.payload()).unwrap();
        assert!(t.flags().has(F::RST), "{dst}: RST");
    }
    let mut out = Vec::new();
    let all_nodes: Ipv6Addr = "ff02::1".parse().unwrap();
    nat.receive(t, &udp_frame(all_nodes, 5000, 53, b"x"), &mut out);
    assert!(out.is_empty(), "{out:?}");
    // The vnet's own /64 is not the device's business.
    let neighbour: Ipv6Addr = "fd00:a:b:c::99".parse().unwrap();
    nat.receive(t, &udp_frame(neighbour, 5000, 53, b"x"), &mut out);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(nat.flow_count(), 0);
}

#[test]
fn the_gateways_ports_reach_the_hosts_ipv6_loopback_only_with_host_loopback() {
    let mut nat = device();
    let t = Instant::now();
    let mut out = Vec::new();
    nat.receive(t, &udp_frame(GW, 5000, 8080, b"x"), &mut out);
    assert_eq!(kind(&out[0]), (1, 4), "port unreachable");
    out.clear();
    nat.receive(t, &syn_frame(GW, 8080), &mut out);
    let ip = ip_of(&out[0]);
    assert!(tcp_wire::Packet::new_checked(ip.payload())
        .unwrap()
        .flags()
        .has(F::RST));
    let mut c = config();
    c.host_loopback = true;
    let mut nat = NatDevice::new(c, NatSecrets::from_bytes([1; 32]));
    out.clear();
    nat.receive(t, &udp_frame(GW, 5000, 8080, b"x"), &mut out);
    assert!(
        matches!(out[0], Output::Open { to, .. } if to == sa(Ipv6Addr::LOCALHOST, 8080)),
        "{out:?}"
    );
    out.clear();
    nat.receive(t, &syn_frame(GW, 8080), &mut out);
    assert!(
        matches!(out[0], Output::Open { proto: Proto::Tcp, to, .. } if to == sa(Ipv6Addr::LOCALHOST, 8080)),
        "{out:?}"
    );
}

#[test]
fn tcp_over_ipv6_mirrors_sequence_numbers_and_builds_gso_frames_in_place() {
    let mut nat = device();
    let t = Instant::now();
    let mut out = Vec::new();
    nat.receive(t, &syn_frame(OUTSIDE, 443), &mut out);
    let [Output::Open {
        flow,
        proto: Proto::Tcp,
        to,
    }] = out[..]
    else {
        panic!("{out:?}");
    };
    assert_eq!(to, sa(OUTSIDE, 443));
    out.clear();
    nat.tcp_connected(t, flow, &mut out);
    let ip = ip_of(&out[0]);
    let seg = tcp_wire::Packet::new_checked(ip.payload()).unwrap();
    assert!(seg.verify_checksum(&OUTSIDE.into(), &GUEST.into()));
    let syn_ack = tcp_wire::Repr::parse(&seg).unwrap();
    assert_eq!(syn_ack.flags.0, F::SYN | F::ACK);
    assert_eq!(syn_ack.ack_number, 1001);
    assert_eq!(
        syn_ack.max_seg_size,
        Some(1500 - 60),
        "the MTU less IPv6 and TCP"
    );
    // The guest ACKs; the shell peeks into a frame at the IPv6 offset.
    let r = to_nat(OUTSIDE);
    let ack = tcp_wire::Repr {
        src_port: 40000,
        dst_port: 443,
        seq_number: 1001,
        ack_number: syn_ack.seq_number.wrapping_add(1),
        flags: F(F::ACK),
        window_len: 1000,
        ..tcp_wire::Repr::default()
    };
    out.clear();
    let frame = frames::ip_frame(&r, IpProtocol::TCP, 0, &frames::tcp_segment(&r, &ack, &[]));
    nat.receive(t, &frame, &mut out);
    let w = nat.tcp_read_window(flow).unwrap();
    assert_eq!(w.data_offset, 14 + 40 + 20);
    let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    let mut f = vec![0; w.data_offset];
    f.extend_from_slice(&data);
    let offload = nat.tcp_data(t, flow, &mut f, false, &mut out).unwrap();
    assert_eq!(
        (offload.gso_type, usize::from(offload.gso_size)),
        (VirtioNetHdr::GSO_TCPV6, 1440)
    );
    vnet_core::wire::offload::complete_checksum(&mut f, &offload).unwrap();
    let ip = ipv6::Packet::new_checked(&f[HEADER_LEN..]).unwrap();
    let seg = tcp_wire::Packet::new_checked(ip.payload()).unwrap();
    assert!(seg.verify_checksum(&OUTSIDE.into(), &GUEST.into()));
    assert_eq!(seg.payload(), &data[..]);
    // Guest data is written from its frame.
    out.clear();
    let push = tcp_wire::Repr {
        flags: F(F::ACK | F::PSH),
        ..ack
    };
    let frame = frames::ip_frame(
        &r,
        IpProtocol::TCP,
        0,
        &frames::tcp_segment(&r, &push, b"GET /"),
    );
    nat.receive(t, &frame, &mut out);
    let written = out.iter().find_map(|o| match o {
        Output::TcpWrite { data, .. } => Some(&frame[data.clone()]),
        _ => None,
    });
    assert_eq!(written, Some(&b"GET /"[..]));
}

#[test]
fn guest_fragments_leave_whole_and_large_answers_return_in_fragments() {
    let mut nat = device();
    let t = Instant::now();
    let mut out = Vec::new();
    let payload: Vec<u8> = (0..3000u32).map(|i| (i * 3) as u8).collect();
    let r = to_nat(OUTSIDE);
    let datagram = frames::udp_datagram(&r, 5000, 9, &payload);
    let pieces = frames::ip_fragments(&r, IpProtocol::UDP, 0x1234, &datagram, 1280).unwrap();
    assert_eq!(pieces.len(), 3);
    for p in pieces.iter().rev() {
        nat.receive(t, p, &mut out);
    }
    let sent: Vec<&Vec<u8>> = out
        .iter()
        .filter_map(|o| match o {
            Output::Send { data, .. } => Some(data),
            _ => None,
        })
        .collect();
    assert_eq!(sent, [&payload], "whole, once");
    let c = nat.counters();
    assert_eq!((c.fragments, c.reassembled), (3, 1));
    // Back: 3000 bytes from the socket are fragments of at most the vnet's MTU.
    let Some(&Output::Open { flow, .. }) = out.first() else {
        panic!("{out:?}");
    };
    out.clear();
    nat.socket_data(t, flow, &payload, &mut out);
    assert_eq!(out.len(), 3, "{out:?}");
    for o in &out {
        let ip = ip_of(o);
        assert!(ip.payload().len() + 40 <= 1500);
        assert_eq!(ip.next_header(), IpProtocol::IPV6_FRAGMENT);
    }
    assert_eq!(nat.counters().oversize, 0);
}

#[test]
fn ipv6_flows_count_against_the_one_flow_limit() {
    let mut c = config();
    c.max_flows = 1;
    let mut nat = NatDevice::new(c, NatSecrets::from_bytes([1; 32]));
    let t = Instant::now();
    let mut out = Vec::new();
    nat.receive(t, &udp_frame(OUTSIDE, 5000, 7, b"first"), &mut out);
    out.clear();
    nat.receive(t, &echo_frame(OUTSIDE, 9), &mut out);
    assert_eq!(kind(&out[0]), (1, 1), "prohibited");
    assert_eq!(nat.counters().refused_flows, 1);
}

#[test]
fn other_next_headers_get_a_parameter_problem() {
    let mut nat = device();
    let r = to_nat(OUTSIDE);
    let frame = frames::ip_frame(&r, IpProtocol(132), 0, b"sctp, say");
    let mut out = Vec::new();
    nat.receive(Instant::now(), &frame, &mut out);
    let (ty, code, m) = icmp_of(&out[0]);
    assert_eq!((ty, code), (4, 1));
    assert_eq!(
        &m[4..8],
        &6u32.to_be_bytes(),
        "points at the next header field"
    );
}

#[test]
fn forwards_to_an_ipv6_guest_solicit_it_first_and_speak_from_the_gateway() {
    let mut nat = device();
    let t = Instant::now();
    let mut out = Vec::new();
    let guest = sa(GUEST, 8080);
    let peer: SocketAddr = "[::1]:51000".parse().unwrap();
    let flow = nat.tcp_accepted(t, guest, peer, &mut out).unwrap();
    let [Output::Frame(ns)] = &out[..] else {
        panic!("{out:?}");
    };
    assert_eq!(&ns[..3], &[0x33, 0x33, 0xff], "to the solicited-node group");
    out.clear();
    // The guest's advertisement (any packet from it) tells the device where it is.
    let r = Route {
        src_mac: GUEST_MAC,
        dst_mac: NAT_MAC,
        src: GUEST.into(),
        dst: GW.into(),
    };
    let na = icmpv6::Repr::Ndisc(icmpv6::NdiscRepr::NeighborAdvert {
        router: false,
        solicited: true,
        override_: true,
        target: GUEST,
        options: &[],
    });
    let mut frame = frames::ip_frame(&r, IpProtocol::ICMPV6, 0, &frames::icmpv6_message(&r, &na));
    frame[HEADER_LEN + 7] = 255;
    nat.receive(t, &frame, &mut out);
    let ip = ip_of(&out[0]);
    assert_eq!(
        (ip.src_addr(), ip.dst_addr()),
        (GW, GUEST),
        "the host's ::1 is the gateway"
    );
    let syn = tcp_wire::Repr::parse(&tcp_wire::Packet::new_checked(ip.payload()).unwrap()).unwrap();
    assert_eq!(
        (syn.flags.0, syn.src_port, syn.dst_port),
        (F::SYN, 51000, 8080)
    );
    assert_eq!(syn.max_seg_size, Some(1440));
    assert!(nat.flow_proto(flow) == Some(Proto::Tcp));
    // A UDP forward: an outside IPv6 peer is itself; an IPv4 peer of a dual-stack
    // socket (IPv4-mapped) to an IPv6 guest is the gateway.
    out.clear();
    let outside = sa(OUTSIDE, 4000);
    nat.udp_forwarded(t, sa(GUEST, 53), outside, b"q", &mut out)
        .unwrap();
    assert_eq!(ip_of(&out[0]).src_addr(), OUTSIDE);
    out.clear();
    let mapped: SocketAddr = "[::ffff:192.0.2.9]:4000".parse().unwrap();
    nat.udp_forwarded(t, sa(GUEST, 53), mapped, b"q", &mut out)
        .unwrap();
    assert_eq!(ip_of(&out[0]).src_addr(), GW);
}

proptest::proptest! {
    #[test]
    fn never_panics_on_mutated_ipv6_packets(
        flips in proptest::collection::vec((0usize..120, proptest::prelude::any::<u8>()), 1..8),
        kind in 0u8..5,
    ) {
        let mut f = match kind {
            0 => udp_frame(OUTSIDE, 1000, 53, b"some payload"),
            1 => udp_frame(GW, 1000, 53, &[0; 20]),
            2 => syn_frame(OUTSIDE, 80),
            3 => {
                let r = to_nat(OUTSIDE);
                let d = frames::udp_datagram(&r, 1, 2, &[7; 100]);
                frames::ip_fragments(&r, IpProtocol::UDP, 9, &d, 80).unwrap().remove(1)
            }
            _ => echo_frame(OUTSIDE, 5),
        };
        for (at, v) in flips {
            let at = at % f.len();
            f[at] = v;
        }
        let mut nat = device();
        let mut out = Vec::new();
        nat.receive(Instant::now(), &f, &mut out);
        nat.receive_offloaded(Instant::now(), &f, &mut out);
        for o in &out {
            if let Output::Frame(fr) = o {
                proptest::prop_assert!(fr.len() >= 60);
            }
        }
    }
}
