use super::*;
use crate::wire::ethernet::write_header;
use proptest::prelude::*;
use std::net::Ipv4Addr;

const VM: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0x10]);
const OTHER: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0x20]);
const VM_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);
const OTHER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 20);

fn eth(src: MacAddr, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0; 14];
    write_header(&mut f, MacAddr::BROADCAST, src, ethertype);
    f.extend_from_slice(payload);
    f
}

fn arp(src: MacAddr, sha: MacAddr, spa: Ipv4Addr) -> Vec<u8> {
    let mut b = [0; arp::PACKET_LEN];
    arp::Repr {
        operation: arp::Operation::Request,
        source_hardware_addr: sha,
        source_protocol_addr: spa,
        target_hardware_addr: MacAddr([0; 6]),
        target_protocol_addr: Ipv4Addr::new(10, 0, 0, 1),
    }
    .emit(&mut arp::Packet::new_unchecked(&mut b[..]));
    eth(src, EtherType::ARP, &b)
}

fn ipv4_frame(src: MacAddr, from: Ipv4Addr, proto: IpProtocol, l4: &[u8]) -> Vec<u8> {
    let repr = ipv4::Repr {
        src_addr: from,
        dst_addr: Ipv4Addr::BROADCAST,
        next_header: proto,
        payload_len: l4.len(),
        hop_limit: 64,
        dscp_ecn: 0,
        ident: 1,
        dont_frag: false,
        more_frags: false,
        frag_offset: 0,
    };
    let mut b = vec![0; repr.buffer_len()];
    repr.emit(&mut ipv4::Packet::new_unchecked(&mut b[..]));
    b[20..].copy_from_slice(l4);
    eth(src, EtherType::IPV4, &b)
}

fn udp(sport: u16, dport: u16) -> Vec<u8> {
    let mut u = vec![0; 12];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&12u16.to_be_bytes());
    u
}

fn ipv6_frame(src: MacAddr, from: Ipv6Addr, next: IpProtocol, payload: &[u8]) -> Vec<u8> {
    let repr = ipv6::Repr {
        src_addr: from,
        dst_addr: "ff02::1".parse().unwrap(),
        next_header: next,
        payload_len: payload.len(),
        hop_limit: 255,
        traffic_class: 0,
        flow_label: 0,
    };
    let mut b = vec![0; repr.buffer_len()];
    repr.emit(&mut ipv6::Packet::new_unchecked(&mut b[..]));
    b[40..].copy_from_slice(payload);
    eth(src, EtherType::IPV6, &b)
}

/// An NDP message of `kind` about `target` (NS, NA, redirect) with `options`.
fn ndp(kind: u8, target: Ipv6Addr, options: &[NdiscOption]) -> Vec<u8> {
    let fixed = match kind {
        Message::ROUTER_SOLICIT => 8,
        Message::ROUTER_ADVERT => 16,
        Message::REDIRECT => 40,
        _ => 24,
    };
    let mut m = vec![0; fixed];
    m[0] = kind;
    if fixed >= 24 {
        m[8..24].copy_from_slice(&target.octets());
    }
    for o in options {
        let mut b = vec![0; o.buffer_len()];
        o.emit(&mut b);
        m.extend_from_slice(&b);
    }
    m
}

fn lock(macs: &[MacAddr], learn: usize, violation: Violation) -> GuardConfig {
    GuardConfig {
        mac_lock: Some(MacLock {
            macs: macs.to_vec(),
            learn,
            violation,
        }),
        ..GuardConfig::default()
    }
}

fn ip_guard(prefixes: &[(&str, u8)], dhcp: bool) -> GuardConfig {
    GuardConfig {
        ip_guard: Some(IpGuard {
            prefixes: prefixes
                .iter()
                .map(|(a, l)| Prefix::new(a.parse().unwrap(), *l).unwrap())
                .collect(),
            dhcp,
            ipv6_link_local: true,
        }),
        ..GuardConfig::default()
    }
}

fn everything() -> GuardConfig {
    GuardConfig {
        dhcp_guard: true,
        ra_guard: true,
        mac_lock: lock(&[VM], 1, Violation::Drop).mac_lock,
        ..ip_guard(&[("10.0.0.10", 32), ("fd00::", 64)], true)
    }
}

/// A guard with a bound on learned MACs no test reaches.
fn guard(config: GuardConfig) -> Guard {
    Guard::new(config, 1000)
}

fn ll(mac: MacAddr) -> Ipv6Addr {
    eui64_link_local(mac)
}

#[test]
fn with_every_guard_off_everything_passes() {
    let mut g = guard(GuardConfig::default());
    assert!(g.config().is_off());
    for f in [
        arp(OTHER, VM, OTHER_IP),
        ipv4_frame(OTHER, OTHER_IP, IpProtocol::UDP, &udp(67, 68)),
        ipv6_frame(
            OTHER,
            ll(VM),
            IpProtocol::ICMPV6,
            &ndp(Message::ROUTER_ADVERT, Ipv6Addr::UNSPECIFIED, &[]),
        ),
        vec![1, 2, 3],
    ] {
        assert_eq!(g.ingress(&f), Ok(()));
    }
}

#[test]
fn a_static_mac_lock_passes_its_macs_and_drops_others() {
    let mut g = guard(lock(&[VM], 0, Violation::Drop));
    let udp4 = |mac| ipv4_frame(mac, VM_IP, IpProtocol::UDP, &udp(1000, 53));
    assert_eq!(g.ingress(&udp4(VM)), Ok(()));
    assert_eq!(g.ingress(&udp4(OTHER)), Err(DropCause::MacLock));
    assert_eq!(
        g.ingress(&udp4(VM)),
        Ok(()),
        "a drop does not shut the port"
    );
    assert!(g.learned_macs().is_empty());
}

#[test]
fn a_learning_mac_lock_keeps_the_first_sources_and_never_learns_group_or_zero_macs() {
    let mut g = guard(lock(&[], 1, Violation::Drop));
    let frame = |mac| eth(mac, 0x88b5, &[0; 46]);
    assert_eq!(
        g.ingress(&frame(MacAddr::BROADCAST)),
        Err(DropCause::MacLock)
    );
    assert_eq!(g.ingress(&frame(MacAddr([0; 6]))), Err(DropCause::MacLock));
    assert_eq!(g.ingress(&frame(VM)), Ok(()));
    assert_eq!(g.ingress(&frame(OTHER)), Err(DropCause::MacLock));
    assert_eq!(g.ingress(&frame(VM)), Ok(()));
    assert_eq!(g.learned_macs(), &[VM]);
}

#[test]
fn the_bound_on_learned_macs_wins_over_the_limit_and_its_refusals_are_counted() {
    let mut g = Guard::new(lock(&[], 5, Violation::Shutdown), 1);
    let frame = |mac| eth(mac, 0x88b5, &[0; 46]);
    assert_eq!(g.ingress(&frame(VM)), Ok(()));
    assert_eq!(g.ingress(&frame(OTHER)), Err(DropCause::MacLock));
    assert_eq!(g.take_refusals(), 1);
    assert_eq!(g.take_refusals(), 0);
    assert_eq!(g.learned_macs(), &[VM]);
    // Beyond the policy's own limit it is a violation, not a refusal.
    let mut g = Guard::new(lock(&[], 1, Violation::Drop), 1);
    assert_eq!(g.ingress(&frame(VM)), Ok(()));
    assert_eq!(g.ingress(&frame(OTHER)), Err(DropCause::MacLock));
    assert_eq!(g.take_refusals(), 0);
}

#[test]
fn a_shutdown_lock_shuts_the_port_both_ways_says_so_once_and_a_new_policy_enables_it() {
    let mut g = guard(lock(&[], 1, Violation::Shutdown));
    let frame = |mac| eth(mac, 0x88b5, &[0; 46]);
    assert_eq!(g.ingress(&frame(VM)), Ok(()));
    assert_eq!(g.egress(), Ok(()));
    assert_eq!(g.ingress(&frame(OTHER)), Err(DropCause::MacLock));
    assert_eq!(g.take_event(), Some(GuardEvent::ShutDown { mac: OTHER }));
    assert_eq!(g.take_event(), None);
    assert_eq!(g.shut_down_by(), Some(OTHER));
    assert_eq!(g.ingress(&frame(VM)), Err(DropCause::Shutdown));
    assert_eq!(g.egress(), Err(DropCause::Shutdown));
    assert_eq!(g.take_event(), None, "said once");

    g.reconfigure(lock(&[], 1, Violation::Shutdown));
    assert_eq!(g.shut_down_by(), None);
    assert_eq!(g.egress(), Ok(()));
    assert_eq!(g.ingress(&frame(VM)), Ok(()), "the learned MAC stays");
    g.reconfigure(lock(&[], 0, Violation::Shutdown));
    assert!(g.learned_macs().is_empty(), "a smaller limit forgets");
}

#[test]
fn arp_and_ndp_link_layer_addresses_must_be_locked_macs() {
    let mut g = guard(lock(&[VM], 0, Violation::Drop));
    assert_eq!(g.ingress(&arp(VM, VM, VM_IP)), Ok(()));
    assert_eq!(g.ingress(&arp(VM, OTHER, VM_IP)), Err(DropCause::MacLock));
    let na = |tlla| {
        let m = ndp(
            Message::NEIGHBOR_ADVERT,
            ll(VM),
            &[NdiscOption::TargetLinkLayerAddr(tlla)],
        );
        ipv6_frame(VM, ll(VM), IpProtocol::ICMPV6, &m)
    };
    assert_eq!(g.ingress(&na(VM)), Ok(()));
    assert_eq!(g.ingress(&na(OTHER)), Err(DropCause::MacLock));
    let rs = ndp(
        Message::ROUTER_SOLICIT,
        Ipv6Addr::UNSPECIFIED,
        &[NdiscOption::SourceLinkLayerAddr(OTHER)],
    );
    assert_eq!(
        g.ingress(&ipv6_frame(VM, ll(VM), IpProtocol::ICMPV6, &rs)),
        Err(DropCause::MacLock)
    );
}

#[test]
fn the_ip_guard_passes_listed_sources_and_the_unspecified_one_and_drops_spoofs() {
    let mut g = guard(ip_guard(&[("10.0.0.10", 32), ("fd00::", 64)], false));
    let v4 = |from| ipv4_frame(VM, from, IpProtocol::ICMP, &[8, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(g.ingress(&v4(VM_IP)), Ok(()));
    assert_eq!(g.ingress(&v4(Ipv4Addr::UNSPECIFIED)), Ok(()));
    assert_eq!(g.ingress(&v4(OTHER_IP)), Err(DropCause::IpGuard));
    let v6 = |from: &str| ipv6_frame(VM, from.parse().unwrap(), IpProtocol::UDP, &udp(1, 2));
    assert_eq!(g.ingress(&v6("fd00::1234")), Ok(()));
    assert_eq!(g.ingress(&v6("::")), Ok(()));
    assert_eq!(g.ingress(&v6("fd01::1")), Err(DropCause::IpGuard));
    // Non-IP traffic is not the IP guard's business.
    assert_eq!(g.ingress(&eth(VM, 0x88cc, &[0; 46])), Ok(()));
}

#[test]
fn ipv6_link_local_passes_only_the_eui64_address_of_the_frames_source() {
    let mut g = guard(ip_guard(&[], false));
    let from = |mac, a| ipv6_frame(mac, a, IpProtocol::UDP, &udp(1, 2));
    assert_eq!(g.ingress(&from(VM, ll(VM))), Ok(()));
    assert_eq!(g.ingress(&from(VM, ll(OTHER))), Err(DropCause::IpGuard));
    assert_eq!(
        ll(MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56])),
        "fe80::5054:ff:fe12:3456".parse::<Ipv6Addr>().unwrap()
    );
    let mut off = ip_guard(&[], false);
    off.ip_guard.as_mut().unwrap().ipv6_link_local = false;
    g.reconfigure(off);
    assert_eq!(g.ingress(&from(VM, ll(VM))), Err(DropCause::IpGuard));
}

#[test]
fn dhcp_bindings_allow_the_leased_address_for_that_mac_only() {
    let mut g = guard(ip_guard(&[], true));
    assert!(g.wants_dhcp_bindings());
    let v4 = |mac, from| ipv4_frame(mac, from, IpProtocol::UDP, &udp(1000, 53));
    assert_eq!(
        g.ingress(&v4(VM, VM_IP)),
        Err(DropCause::IpGuard),
        "not leased yet"
    );
    g.set_dhcp_bindings(Arc::new(DhcpBindings::new([
        (OTHER, OTHER_IP),
        (VM, VM_IP),
        (VM, VM_IP),
    ])));
    assert_eq!(g.ingress(&v4(VM, VM_IP)), Ok(()));
    assert_eq!(
        g.ingress(&v4(VM, OTHER_IP)),
        Err(DropCause::IpGuard),
        "another's lease"
    );
    assert_eq!(g.ingress(&arp(VM, VM, VM_IP)), Ok(()));
    assert_eq!(g.ingress(&arp(VM, VM, OTHER_IP)), Err(DropCause::IpGuard));
    g.set_dhcp_bindings(Arc::new(DhcpBindings::default()));
    assert_eq!(
        g.ingress(&v4(VM, VM_IP)),
        Err(DropCause::IpGuard),
        "lease ended"
    );
}

#[test]
fn dhcpv6_bindings_allow_the_leased_ipv6_address_for_that_mac_only() {
    let mut g = guard(ip_guard(&[], true));
    let leased: Ipv6Addr = "fd00::1000".parse().unwrap();
    let v6 = |mac, from| ipv6_frame(mac, from, IpProtocol::UDP, &udp(1000, 53));
    assert_eq!(g.ingress(&v6(VM, leased)), Err(DropCause::IpGuard));
    g.set_dhcp_bindings(Arc::new(DhcpBindings::new([
        (VM, IpAddr::V6(leased)),
        (VM, IpAddr::V4(VM_IP)),
    ])));
    assert_eq!(g.ingress(&v6(VM, leased)), Ok(()));
    assert_eq!(
        g.ingress(&v6(OTHER, leased)),
        Err(DropCause::IpGuard),
        "another MAC"
    );
}

#[test]
fn arp_claims_are_checked_probes_pass_and_a_foreign_sender_mac_is_refused() {
    let mut g = guard(ip_guard(&[("10.0.0.10", 32)], false));
    assert_eq!(g.ingress(&arp(VM, VM, VM_IP)), Ok(()));
    assert_eq!(
        g.ingress(&arp(VM, VM, Ipv4Addr::UNSPECIFIED)),
        Ok(()),
        "probe"
    );
    assert_eq!(g.ingress(&arp(VM, VM, OTHER_IP)), Err(DropCause::IpGuard));
    assert_eq!(g.ingress(&arp(VM, OTHER, VM_IP)), Err(DropCause::IpGuard));
}

#[test]
fn ndp_claims_na_targets_and_dad_targets_are_checked_and_resolution_is_not() {
    let mut g = guard(ip_guard(&[("fd00::10", 128)], false));
    let mine: Ipv6Addr = "fd00::10".parse().unwrap();
    let theirs: Ipv6Addr = "fd00::20".parse().unwrap();
    let icmp = |from, m: Vec<u8>| ipv6_frame(VM, from, IpProtocol::ICMPV6, &m);
    let na = |t| ndp(Message::NEIGHBOR_ADVERT, t, &[]);
    let ns = |t| ndp(Message::NEIGHBOR_SOLICIT, t, &[]);
    assert_eq!(g.ingress(&icmp(mine, na(mine))), Ok(()));
    assert_eq!(g.ingress(&icmp(mine, na(theirs))), Err(DropCause::IpGuard));
    assert_eq!(g.ingress(&icmp(Ipv6Addr::UNSPECIFIED, ns(mine))), Ok(()));
    assert_eq!(
        g.ingress(&icmp(Ipv6Addr::UNSPECIFIED, ns(theirs))),
        Err(DropCause::IpGuard),
        "DAD for another's address"
    );
    assert_eq!(
        g.ingress(&icmp(mine, ns(theirs))),
        Ok(()),
        "asking where it is"
    );
    let foreign_slla = ndp(
        Message::NEIGHBOR_SOLICIT,
        theirs,
        &[NdiscOption::SourceLinkLayerAddr(OTHER)],
    );
    assert_eq!(
        g.ingress(&icmp(mine, foreign_slla)),
        Err(DropCause::IpGuard)
    );
}

#[test]
fn the_dhcp_guard_drops_server_messages_and_passes_clients() {
    let mut g = guard(GuardConfig {
        dhcp_guard: true,
        ..GuardConfig::default()
    });
    let v4 = |s, d| ipv4_frame(VM, VM_IP, IpProtocol::UDP, &udp(s, d));
    assert_eq!(g.ingress(&v4(67, 68)), Err(DropCause::DhcpGuard));
    assert_eq!(g.ingress(&v4(68, 67)), Ok(()), "a client's discover");
    assert_eq!(g.ingress(&v4(67, 67)), Ok(()), "a relay to a server");
    let v6 = |s, d| ipv6_frame(VM, ll(VM), IpProtocol::UDP, &udp(s, d));
    assert_eq!(g.ingress(&v6(547, 546)), Err(DropCause::DhcpGuard));
    assert_eq!(g.ingress(&v6(546, 547)), Ok(()));
    // A first fragment too short to show the ports is not let through.
    assert_eq!(
        g.ingress(&ipv4_frame(VM, VM_IP, IpProtocol::UDP, &[0, 67])),
        Err(DropCause::DhcpGuard)
    );
    g.reconfigure(GuardConfig::default());
    assert_eq!(g.ingress(&v4(67, 68)), Ok(()), "allowed to serve");
}

#[test]
fn a_dhcp_offer_in_a_later_fragment_cannot_hide_and_later_fragments_pass() {
    let mut g = guard(GuardConfig {
        dhcp_guard: true,
        ..GuardConfig::default()
    });
    let mut f = ipv4_frame(VM, VM_IP, IpProtocol::UDP, &udp(67, 68));
    // Offset 8 bytes: no UDP header here, nothing to judge.
    f[14 + 6..14 + 8].copy_from_slice(&1u16.to_be_bytes());
    assert_eq!(g.ingress(&f), Ok(()));
}

#[test]
fn the_ra_guard_drops_advertisements_and_redirects_even_behind_extension_headers() {
    let mut g = guard(GuardConfig {
        ra_guard: true,
        ..GuardConfig::default()
    });
    let ra = ndp(Message::ROUTER_ADVERT, Ipv6Addr::UNSPECIFIED, &[]);
    let icmp = |m: &[u8]| ipv6_frame(VM, ll(VM), IpProtocol::ICMPV6, m);
    assert_eq!(g.ingress(&icmp(&ra)), Err(DropCause::RaGuard));
    let redirect = ndp(Message::REDIRECT, ll(OTHER), &[]);
    assert_eq!(g.ingress(&icmp(&redirect)), Err(DropCause::RaGuard));
    let rs = ndp(Message::ROUTER_SOLICIT, Ipv6Addr::UNSPECIFIED, &[]);
    assert_eq!(g.ingress(&icmp(&rs)), Ok(()));
    // Hop-by-hop options (PadN) then the RA.
    let mut hbh = vec![58, 0, 1, 4, 0, 0, 0, 0];
    hbh.extend_from_slice(&ra);
    assert_eq!(
        g.ingress(&ipv6_frame(VM, ll(VM), IpProtocol::HOP_BY_HOP, &hbh)),
        Err(DropCause::RaGuard)
    );
    // A chain that does not fit, and a first fragment without the ICMPv6 type.
    let cut = [58, 5, 0, 0, 0, 0, 0, 0];
    assert_eq!(
        g.ingress(&ipv6_frame(VM, ll(VM), IpProtocol::HOP_BY_HOP, &cut)),
        Err(DropCause::RaGuard)
    );
    let first_fragment_empty = [58, 0, 0, 1, 0, 0, 0, 7];
    assert_eq!(
        g.ingress(&ipv6_frame(
            VM,
            ll(VM),
            IpProtocol::IPV6_FRAGMENT,
            &first_fragment_empty
        )),
        Err(DropCause::RaGuard)
    );
    g.reconfigure(GuardConfig::default());
    assert_eq!(g.ingress(&icmp(&ra)), Ok(()), "allowed to route");
}

#[test]
fn headers_the_guard_cannot_read_are_dropped_under_the_guard_that_needed_them() {
    let mut g = guard(ip_guard(&[("10.0.0.10", 32)], false));
    // An IPv4 total length beyond the frame, a version 5 header, a truncated ARP.
    let mut long = ipv4_frame(VM, VM_IP, IpProtocol::UDP, &udp(1, 2));
    long[14 + 2..14 + 4].copy_from_slice(&2000u16.to_be_bytes());
    assert_eq!(g.ingress(&long), Err(DropCause::IpGuard));
    let mut v5 = ipv4_frame(VM, VM_IP, IpProtocol::UDP, &udp(1, 2));
    v5[14] = 0x55;
    assert_eq!(g.ingress(&v5), Err(DropCause::IpGuard));
    let short_arp = arp(VM, VM, VM_IP);
    assert_eq!(g.ingress(&short_arp[..30]), Err(DropCause::IpGuard));
    // Runts are the switch's to count.
    assert_eq!(g.ingress(&[0; 10]), Ok(()));
    // A tagged frame is looked through.
    let mut tagged = ipv4_frame(VM, OTHER_IP, IpProtocol::UDP, &udp(1, 2));
    tagged.splice(12..12, [0x81, 0x00, 0x00, 0x0a]);
    assert_eq!(g.ingress(&tagged), Err(DropCause::IpGuard));
}

#[test]
fn prefixes_match_by_length_and_family() {
    let p = |a: &str, l| Prefix::new(a.parse().unwrap(), l).unwrap();
    let ip = |a: &str| a.parse::<IpAddr>().unwrap();
    assert!(p("10.0.0.0", 8).contains(ip("10.200.1.1")));
    assert!(!p("10.0.0.0", 8).contains(ip("11.0.0.1")));
    assert!(p("0.0.0.0", 0).contains(ip("1.2.3.4")));
    assert!(!p("0.0.0.0", 0).contains(ip("::1")));
    assert!(p("fd00::", 64).contains(ip("fd00::ffff")));
    assert!(p("::", 0).contains(ip("2001:db8::1")));
    assert!(!p("fd00::1", 128).contains(ip("fd00::2")));
    assert!(Prefix::new(ip("10.0.0.0"), 33).is_none());
    assert!(Prefix::new(ip("::"), 129).is_none());
}

proptest! {
    #[test]
    fn any_bytes_get_an_answer_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut g = guard(everything());
        let _ = g.ingress(&bytes);
    }

    #[test]
    fn any_mangled_ip_or_ndp_frame_gets_an_answer(
        kind in 0usize..5,
        at in 12usize..120,
        value in any::<u8>(),
        cut in 0usize..140,
    ) {
        let mine: Ipv6Addr = "fd00::10".parse().unwrap();
        let frames = [
            arp(VM, VM, VM_IP),
            ipv4_frame(VM, VM_IP, IpProtocol::UDP, &udp(67, 68)),
            ipv6_frame(VM, mine, IpProtocol::ICMPV6, &ndp(Message::NEIGHBOR_ADVERT, mine, &[NdiscOption::TargetLinkLayerAddr(VM)])),
            ipv6_frame(VM, mine, IpProtocol::ICMPV6, &ndp(Message::ROUTER_ADVERT, mine, &[NdiscOption::Mtu(1500)])),
            ipv6_frame(VM, mine, IpProtocol::HOP_BY_HOP, &[17, 0, 1, 4, 0, 0, 0, 0, 2, 35, 2, 34, 0, 8, 0, 0]),
        ];
        let mut f = frames[kind].clone();
        if at < f.len() {
            f[at] = value;
        }
        f.truncate(cut.max(14));
        let mut g = guard(everything());
        let _ = g.ingress(&f);
    }
}
