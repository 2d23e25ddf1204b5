//! The router with scripted guests' frames and a virtual clock.

use super::*;
use vnet_core::wire::icmpv6::{DomainNames, NdiscOptions};

const ROUTER_MAC: MacAddr = MacAddr([0x02, 0x76, 0x6e, 1, 2, 3]);
const GUEST_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 7]);
const PREFIX: Ipv6Addr = Ipv6Addr::new(0xfd93, 0x4cfa, 0xc459, 0, 0, 0, 0, 0);
const GATEWAY: Ipv6Addr = Ipv6Addr::new(0xfd93, 0x4cfa, 0xc459, 0, 0, 0, 0, 2);
const GUEST_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x5054, 0xff, 0xfe00, 7);

fn nat_config() -> RouterConfig {
    RouterConfig {
        mac: ROUTER_MAC,
        prefix: PREFIX,
        address: Some(GATEWAY),
        advertise: true,
        default_router: true,
        slaac: true,
        managed: false,
        other: true,
        mtu: 1500,
        dns: vec![GATEWAY],
        domains: vec!["vm.test".into()],
        interval: Duration::from_secs(600),
    }
}

fn host_only_config() -> RouterConfig {
    RouterConfig {
        address: None,
        default_router: false,
        dns: Vec::new(),
        domains: Vec::new(),
        ..nat_config()
    }
}

/// A guest's ICMPv6 message in a frame.
fn guest(dst_mac: MacAddr, src: Ipv6Addr, dst: Ipv6Addr, hop: u8, msg: &icmpv6::Repr) -> Vec<u8> {
    frames::icmp(GUEST_MAC, dst_mac, src, dst, hop, msg)
}

fn rs(src: Ipv6Addr, options: &[u8]) -> Vec<u8> {
    let m = icmpv6::Repr::Ndisc(NdiscRepr::RouterSolicit { options });
    guest(
        frames::multicast_mac(&ALL_ROUTERS),
        src,
        ALL_ROUTERS,
        255,
        &m,
    )
}

fn ns(src: Ipv6Addr, dst: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let m = icmpv6::Repr::Ndisc(NdiscRepr::NeighborSolicit {
        target,
        options: &[],
    });
    guest(ROUTER_MAC, src, dst, 255, &m)
}

/// What a frame the router sent says.
struct Sent {
    eth_dst: MacAddr,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    icmp: Vec<u8>,
}

fn read(frame: &[u8]) -> Sent {
    let eth = Frame::parse(frame).unwrap();
    assert_eq!(eth.src(), ROUTER_MAC);
    assert_eq!(eth.ethertype(), EtherType::IPV6);
    let ip = ipv6::Packet::new_checked(eth.payload()).unwrap();
    let r = ipv6::Repr::parse(&ip).unwrap();
    assert_eq!(r.next_header, IpProtocol::ICMPV6);
    let p = icmpv6::Packet::new_checked(ip.payload()).unwrap();
    assert!(p.verify_checksum(&r.src_addr, &r.dst_addr));
    Sent {
        eth_dst: eth.dst(),
        src: r.src_addr,
        dst: r.dst_addr,
        hop_limit: r.hop_limit,
        icmp: ip.payload().to_vec(),
    }
}

impl Sent {
    fn packet(&self) -> icmpv6::Packet<&[u8]> {
        icmpv6::Packet::new_checked(&self.icmp[..]).unwrap()
    }
}

fn parse<'a>(p: &'a icmpv6::Packet<&'a [u8]>) -> icmpv6::Repr<'a> {
    icmpv6::Repr::parse(p).unwrap()
}

#[test]
fn the_first_advertisement_goes_out_at_once_with_every_option() {
    let now = Instant::now();
    let mut r = Router::new(nat_config(), now, 7);
    assert_eq!(r.poll_at(), Some(now));
    let mut out = Vec::new();
    r.poll(now, &mut out);
    assert_eq!(out.len(), 1);
    let s = read(&out[0]);
    let p = s.packet();
    assert_eq!(s.eth_dst, MacAddr([0x33, 0x33, 0, 0, 0, 1]));
    assert_eq!(
        (s.src, s.dst, s.hop_limit),
        (r.link_local(), ALL_NODES, 255)
    );
    assert_eq!(
        r.link_local(),
        "fe80::76:6eff:fe01:203".parse::<Ipv6Addr>().unwrap()
    );
    let icmpv6::Repr::Ndisc(NdiscRepr::RouterAdvert {
        hop_limit,
        managed,
        other,
        router_lifetime,
        options,
        ..
    }) = parse(&p)
    else {
        panic!("not an RA");
    };
    assert_eq!(
        (hop_limit, managed, other, router_lifetime),
        (64, false, true, 1800)
    );
    let opts: Vec<_> = NdiscOptions::new(options).map(Result::unwrap).collect();
    assert_eq!(opts[0], NdiscOption::SourceLinkLayerAddr(ROUTER_MAC));
    assert_eq!(opts[1], NdiscOption::Mtu(1500));
    assert_eq!(
        opts[2],
        NdiscOption::PrefixInformation(PrefixInfo {
            prefix_len: 64,
            on_link: true,
            autonomous: true,
            valid_lifetime: 2_592_000,
            preferred_lifetime: 604_800,
            prefix: PREFIX,
        })
    );
    assert_eq!(opts[3].rdnss_addresses().collect::<Vec<_>>(), [GATEWAY]);
    let NdiscOption::Dnssl { lifetime, names } = opts[4] else {
        panic!("{:?}", opts[4]);
    };
    assert_eq!(lifetime, 1800);
    assert_eq!(
        DomainNames::new(names)
            .map(Result::unwrap)
            .collect::<Vec<_>>(),
        ["vm.test"]
    );
    assert_eq!(r.counters().ra_sent, 1);
}

#[test]
fn a_host_only_vnet_is_advertised_with_router_lifetime_zero_and_no_dns() {
    let now = Instant::now();
    let mut r = Router::new(
        RouterConfig {
            slaac: false,
            mtu: 1000,
            ..host_only_config()
        },
        now,
        1,
    );
    let mut out = Vec::new();
    r.poll(now, &mut out);
    let s = read(&out[0]);
    let p = s.packet();
    let icmpv6::Repr::Ndisc(NdiscRepr::RouterAdvert {
        router_lifetime,
        options,
        ..
    }) = parse(&p)
    else {
        panic!("not an RA");
    };
    assert_eq!(router_lifetime, 0);
    let opts: Vec<_> = NdiscOptions::new(options).map(Result::unwrap).collect();
    // No MTU option below IPv6's minimum, no RDNSS or DNSSL, prefix without A.
    assert_eq!(opts.len(), 2, "{opts:?}");
    let NdiscOption::PrefixInformation(p) = opts[1] else {
        panic!("{:?}", opts[1]);
    };
    assert!(p.on_link && !p.autonomous);
}

#[test]
fn unsolicited_advertisements_come_fast_at_first_then_within_the_interval() {
    let start = Instant::now();
    let mut r = Router::new(nat_config(), start, 99);
    let mut out = Vec::new();
    let mut at = start;
    let mut gaps = Vec::new();
    for _ in 0..20 {
        let due = r.poll_at().unwrap();
        gaps.push(due - at);
        at = due;
        r.poll(at, &mut out);
    }
    assert_eq!(out.len(), 20);
    assert_eq!(gaps[0], Duration::ZERO);
    for g in &gaps[1..4] {
        assert!(*g <= Duration::from_secs(16), "{gaps:?}");
    }
    for g in &gaps[4..] {
        assert!(
            *g >= Duration::from_secs(200) && *g <= Duration::from_secs(600),
            "{gaps:?}"
        );
    }
}

#[test]
fn a_solicitation_from_an_address_is_answered_unicast_within_half_a_second() {
    let now = Instant::now();
    let mut r = Router::new(nat_config(), now, 3);
    let mut out = Vec::new();
    r.poll(now, &mut out);
    out.clear();
    let mut sllao = [0u8; 8];
    NdiscOption::SourceLinkLayerAddr(GUEST_MAC).emit(&mut sllao);
    let later = now + Duration::from_secs(1);
    assert_eq!(
        r.receive(later, &rs(GUEST_LL, &sllao), &mut out),
        Verdict::Done
    );
    // Twice before the answer: still one answer.
    assert_eq!(
        r.receive(later, &rs(GUEST_LL, &sllao), &mut out),
        Verdict::Done
    );
    assert!(out.is_empty());
    assert!(r.poll_at().unwrap() <= later + Duration::from_millis(500));
    r.poll(later + Duration::from_millis(500), &mut out);
    assert_eq!(out.len(), 1);
    let s = read(&out[0]);
    let p = s.packet();
    assert_eq!((s.eth_dst, s.dst), (GUEST_MAC, GUEST_LL));
    assert!(matches!(
        parse(&p),
        icmpv6::Repr::Ndisc(NdiscRepr::RouterAdvert { .. })
    ));
    assert_eq!(r.counters().rs_answered, 2);
}

#[test]
fn solicitations_from_the_unspecified_address_get_multicasts_3_s_apart() {
    let now = Instant::now();
    let mut r = Router::new(nat_config(), now, 5);
    let mut out = Vec::new();
    r.poll(now, &mut out);
    out.clear();
    let t = now + Duration::from_millis(100);
    r.receive(t, &rs(Ipv6Addr::UNSPECIFIED, &[]), &mut out);
    let due = r.poll_at().unwrap();
    assert!(due >= now + Duration::from_secs(3) && due <= now + Duration::from_secs(4));
    r.poll(due, &mut out);
    assert_eq!(read(&out[0]).dst, ALL_NODES);
    // An RS from :: must not carry a source link-layer address (RFC 4861 §6.1.1).
    let mut sllao = [0u8; 8];
    NdiscOption::SourceLinkLayerAddr(GUEST_MAC).emit(&mut sllao);
    assert_eq!(
        r.receive(due, &rs(Ipv6Addr::UNSPECIFIED, &sllao), &mut out),
        Verdict::Malformed
    );
}

#[test]
fn neighbour_solicitations_for_its_addresses_are_answered() {
    let now = Instant::now();
    let mut r = Router::new(nat_config(), now, 5);
    let mut out = Vec::new();
    let guest_ip: Ipv6Addr = "fd93:4cfa:c459::77".parse().unwrap();
    for target in [GATEWAY, r.link_local()] {
        let frame = ns(guest_ip, solicited_node(&target), target);
        assert_eq!(r.receive(now, &frame, &mut out), Verdict::Done);
        let s = read(out.last().unwrap());
        let p = s.packet();
        assert_eq!((s.eth_dst, s.src, s.dst), (GUEST_MAC, target, guest_ip));
        let icmpv6::Repr::Ndisc(NdiscRepr::NeighborAdvert {
            router,
            solicited,
            override_,
            target: t,
            options,
        }) = parse(&p)
        else {
            panic!("not an NA");
        };
        assert!(router && solicited && override_);
        assert_eq!(t, target);
        assert_eq!(
            NdiscOptions::new(options).next(),
            Some(Ok(NdiscOption::TargetLinkLayerAddr(ROUTER_MAC)))
        );
    }
    // Duplicate address detection of its address: told to all nodes.
    let dad = ns(Ipv6Addr::UNSPECIFIED, solicited_node(&GATEWAY), GATEWAY);
    assert_eq!(r.receive(now, &dad, &mut out), Verdict::Done);
    assert_eq!(read(out.last().unwrap()).dst, ALL_NODES);
    // Someone else's address, even in a group it listens to: not its business.
    let other: Ipv6Addr = "fd93:4cfa:c459::1:2".parse().unwrap();
    let n = out.len();
    assert_eq!(
        r.receive(
            now,
            &ns(guest_ip, solicited_node(&GATEWAY), other),
            &mut out
        ),
        Verdict::NotMine
    );
    assert_eq!(out.len(), n);
    assert_eq!(r.counters().ns_answered, 3);
}

#[test]
fn pings_to_its_addresses_are_answered_and_datagrams_refused() {
    let now = Instant::now();
    let mut r = Router::new(nat_config(), now, 5);
    let mut out = Vec::new();
    let guest_ip: Ipv6Addr = "fd93:4cfa:c459::77".parse().unwrap();
    let ping = icmpv6::Repr::EchoRequest {
        ident: 9,
        seq_no: 1,
        data: b"hello",
    };
    assert_eq!(
        r.receive(
            now,
            &guest(ROUTER_MAC, guest_ip, GATEWAY, 64, &ping),
            &mut out
        ),
        Verdict::Done
    );
    let s = read(&out[0]);
    let p = s.packet();
    assert_eq!((s.src, s.dst), (GATEWAY, guest_ip));
    assert_eq!(
        parse(&p),
        icmpv6::Repr::EchoReply {
            ident: 9,
            seq_no: 1,
            data: b"hello"
        }
    );
    // A ping to another address is the NAT's (later: the outside's).
    let elsewhere = "2001:db8::1".parse().unwrap();
    assert_eq!(
        r.receive(
            now,
            &guest(ROUTER_MAC, guest_ip, elsewhere, 64, &ping),
            &mut out
        ),
        Verdict::NotMine
    );
    // UDP to the gateway's address is the NAT device's (DNS, the host's loopback).
    let udp_to = |dst: Ipv6Addr| {
        let mut frame = guest(ROUTER_MAC, guest_ip, dst, 64, &ping);
        let dgram = [0x30, 0x39, 0, 53, 0, 12, 0, 0, 1, 2, 3, 4];
        frame.truncate(14 + 40);
        frame.extend_from_slice(&dgram);
        frame[14 + 4..14 + 6].copy_from_slice(&12u16.to_be_bytes());
        frame[14 + 6] = 17;
        frame
    };
    let sent = out.len();
    let to_gateway = udp_to(GATEWAY);
    assert_eq!(r.receive(now, &to_gateway, &mut out), Verdict::NotMine);
    assert_eq!(out.len(), sent, "no answer of the router's");
    // To its link-local address: port unreachable, quoting the datagram.
    let frame = udp_to(r.link_local());
    assert_eq!(r.receive(now, &frame, &mut out), Verdict::Done);
    let s = read(out.last().unwrap());
    let p = s.packet();
    let icmpv6::Repr::DstUnreachable { code: 4, invoking } = parse(&p) else {
        panic!("not port unreachable");
    };
    assert_eq!(invoking, &frame[14..]);
    assert_eq!(
        (r.counters().echo_answered, r.counters().port_unreachable),
        (1, 1)
    );
}

#[test]
fn forged_or_broken_messages_are_counted_not_answered() {
    let now = Instant::now();
    let mut r = Router::new(nat_config(), now, 5);
    let mut out = Vec::new();
    let guest_ip: Ipv6Addr = "fd93:4cfa:c459::77".parse().unwrap();
    // Hop limit below 255: crossed a router.
    let m = icmpv6::Repr::Ndisc(NdiscRepr::NeighborSolicit {
        target: GATEWAY,
        options: &[],
    });
    let forged = guest(ROUTER_MAC, guest_ip, GATEWAY, 254, &m);
    assert_eq!(r.receive(now, &forged, &mut out), Verdict::Malformed);
    // A bad checksum.
    let mut bad = ns(guest_ip, GATEWAY, GATEWAY);
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert_eq!(r.receive(now, &bad, &mut out), Verdict::Malformed);
    assert!(out.is_empty());
    assert_eq!(r.counters().malformed, 2);
    // Every truncation and every single-byte change of real frames: never a panic.
    let ping = icmpv6::Repr::EchoRequest {
        ident: 1,
        seq_no: 1,
        data: &[0; 16],
    };
    let frames = [
        ns(guest_ip, GATEWAY, GATEWAY),
        rs(GUEST_LL, &[1, 1, 0x52, 0x54, 0, 0, 0, 7]),
        guest(ROUTER_MAC, guest_ip, GATEWAY, 64, &ping),
    ];
    for f in &frames {
        for len in 0..f.len() {
            r.receive(now, &f[..len], &mut out);
        }
        for at in 0..f.len() {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut g = f.clone();
                g[at] = v;
                r.receive(now, &g, &mut out);
            }
        }
    }
}

#[test]
fn without_advertising_it_still_answers_for_its_addresses() {
    let now = Instant::now();
    let mut r = Router::new(
        RouterConfig {
            advertise: false,
            ..nat_config()
        },
        now,
        5,
    );
    assert_eq!(r.poll_at(), None);
    let mut out = Vec::new();
    assert_eq!(r.receive(now, &rs(GUEST_LL, &[]), &mut out), Verdict::Done);
    r.poll(now + Duration::from_secs(5), &mut out);
    assert!(out.is_empty());
    let guest_ip: Ipv6Addr = "fd93:4cfa:c459::77".parse().unwrap();
    r.receive(now, &ns(guest_ip, GATEWAY, GATEWAY), &mut out);
    assert_eq!(out.len(), 1);
}

#[test]
fn frames_for_others_are_not_its_business() {
    let now = Instant::now();
    let mut r = Router::new(host_only_config(), now, 5);
    let mut out = Vec::new();
    let arp = [0xffu8; 60];
    assert_eq!(r.receive(now, &arp, &mut out), Verdict::NotMine);
    let ping = icmpv6::Repr::EchoRequest {
        ident: 1,
        seq_no: 1,
        data: &[],
    };
    let to_guest = "fd93:4cfa:c459::9".parse().unwrap();
    let f = guest(GUEST_MAC, GUEST_LL, to_guest, 64, &ping);
    assert_eq!(r.receive(now, &f, &mut out), Verdict::NotMine);
    assert!(out.is_empty());
}

#[test]
fn a_live_change_is_announced_at_once() {
    let now = Instant::now();
    let mut r = Router::new(nat_config(), now, 5);
    let mut out = Vec::new();
    r.poll(now, &mut out);
    let later = now + Duration::from_secs(1);
    assert!(r.poll_at().unwrap() > later + Duration::from_secs(1));
    r.reconfigure(
        RouterConfig {
            domains: vec!["new.test".into()],
            ..nat_config()
        },
        later,
    );
    assert_eq!(r.poll_at(), Some(later));
    r.poll(later, &mut out);
    let s = read(&out[1]);
    let p = s.packet();
    let icmpv6::Repr::Ndisc(NdiscRepr::RouterAdvert { options, .. }) = parse(&p) else {
        panic!("not an RA");
    };
    let names = NdiscOptions::new(options).find_map(|o| match o {
        Ok(NdiscOption::Dnssl { names, .. }) => Some(names),
        _ => None,
    });
    let names: Vec<_> = DomainNames::new(names.unwrap())
        .map(Result::unwrap)
        .collect();
    assert_eq!(names, ["new.test"]);
    // The same settings again: nothing to announce.
    r.reconfigure(
        RouterConfig {
            domains: vec!["new.test".into()],
            ..nat_config()
        },
        later + Duration::from_secs(1),
    );
    assert!(r.poll_at().unwrap() > later + Duration::from_secs(1));
}
