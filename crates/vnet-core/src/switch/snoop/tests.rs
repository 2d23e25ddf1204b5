//! Snooping's reading of IGMP and MLD, its tables, and its delivery through the switch.

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::switch::{Switch, SwitchConfig, Verdict, VlanMode};
use crate::wire::checksum::internet_checksum;
use crate::wire::ethernet::write_header;

fn host(n: u8) -> MacAddr {
    MacAddr([0x52, 0x54, 0, 0, 1, n])
}

fn v4_mac(g: [u8; 4]) -> MacAddr {
    MacAddr([0x01, 0x00, 0x5e, g[1] & 0x7f, g[2], g[3]])
}

fn v6_mac(g: &[u8; 16]) -> MacAddr {
    MacAddr([0x33, 0x33, g[12], g[13], g[14], g[15]])
}

/// An IPv4 frame to `dst` (group) carrying `body` as protocol `proto`, with a router
/// alert option as IGMP has.
fn ipv4(src: MacAddr, dst: [u8; 4], proto: u8, body: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 14];
    write_header(&mut f, v4_mac(dst), src, EtherType::IPV4);
    let total = 24 + body.len();
    let mut ip = vec![0x46, 0, 0, 0, 0, 0, 0, 0, 1, proto, 0, 0, 10, 0, 0, 9];
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip.extend_from_slice(&dst);
    ip.extend_from_slice(&[0x94, 4, 0, 0]);
    let sum = internet_checksum(&[&ip]);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(body);
    f
}

fn igmp(mut msg: Vec<u8>) -> Vec<u8> {
    msg[2..4].fill(0);
    let sum = internet_checksum(&[&msg]);
    msg[2..4].copy_from_slice(&sum.to_be_bytes());
    msg
}

fn igmp_v2(src: MacAddr, kind: u8, group: [u8; 4]) -> Vec<u8> {
    let mut m = vec![kind, 0, 0, 0];
    m.extend_from_slice(&group);
    let dst = if kind == 0x17 { [224, 0, 0, 2] } else { group };
    ipv4(src, dst, 2, &igmp(m))
}

/// An IGMPv3 report of `(record type, group, sources)`.
fn igmp_v3(src: MacAddr, records: &[(u8, [u8; 4], usize)]) -> Vec<u8> {
    let mut m = vec![0x22, 0, 0, 0, 0, 0];
    m.extend_from_slice(&(records.len() as u16).to_be_bytes());
    for (kind, group, sources) in records {
        m.extend_from_slice(&[*kind, 0]);
        m.extend_from_slice(&(*sources as u16).to_be_bytes());
        m.extend_from_slice(group);
        for s in 0..*sources {
            m.extend_from_slice(&[10, 0, 0, s as u8]);
        }
    }
    ipv4(src, [224, 0, 0, 22], 2, &igmp(m))
}

/// An IGMP general query: v3 (robustness, QQIC) or v2.
fn igmp_query(src: MacAddr, v3: Option<(u8, u8)>) -> Vec<u8> {
    let mut m = vec![0x11, 100, 0, 0, 0, 0, 0, 0];
    if let Some((qrv, qqic)) = v3 {
        m.extend_from_slice(&[qrv, qqic, 0, 0]);
    }
    ipv4(src, [224, 0, 0, 1], 2, &igmp(m))
}

fn group6(last: u32) -> [u8; 16] {
    let mut g = [0u8; 16];
    g[0] = 0xff;
    g[1] = 0x02;
    g[11] = 1;
    g[12..].copy_from_slice(&(0xff00_0000 | last).to_be_bytes());
    g
}

/// An IPv6 frame to `dst` with a hop-by-hop header (router alert) and an ICMPv6
/// message `body`.
fn ipv6_mld(src: MacAddr, dst: &[u8; 16], body: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 14];
    write_header(&mut f, v6_mac(dst), src, EtherType::IPV6);
    let mut ip = vec![0x60, 0, 0, 0, 0, 0, 0, 1];
    ip[4..6].copy_from_slice(&((8 + body.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]);
    ip.extend_from_slice(dst);
    ip.extend_from_slice(&[58, 0, 5, 2, 0, 0, 1, 0]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(body);
    f
}

fn mld_v1(src: MacAddr, kind: u8, group: &[u8; 16]) -> Vec<u8> {
    let mut m = vec![kind, 0, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(group);
    ipv6_mld(src, group, &m)
}

fn mld_v2(src: MacAddr, records: &[(u8, [u8; 16], usize)]) -> Vec<u8> {
    let mut m = vec![143, 0, 0, 0, 0, 0];
    m.extend_from_slice(&(records.len() as u16).to_be_bytes());
    for (kind, group, sources) in records {
        m.extend_from_slice(&[*kind, 0]);
        m.extend_from_slice(&(*sources as u16).to_be_bytes());
        m.extend_from_slice(group);
        for s in 0..*sources {
            m.extend_from_slice(&[s as u8; 16]);
        }
    }
    let mut to = [0u8; 16];
    to[0] = 0xff;
    to[1] = 2;
    to[15] = 0x16;
    ipv6_mld(src, &to, &m)
}

fn mld_query(src: MacAddr) -> Vec<u8> {
    let mut m = vec![130, 0, 0, 0, 0x27, 0x10, 0, 0];
    m.extend_from_slice(&[0; 16]);
    m.extend_from_slice(&[2, 125, 0, 0]);
    let mut to = [0u8; 16];
    to[0] = 0xff;
    to[1] = 2;
    to[15] = 1;
    ipv6_mld(src, &to, &m)
}

/// A UDP-ish IPv4 frame to group `g` (not IGMP).
fn data_v4(src: MacAddr, g: [u8; 4]) -> Vec<u8> {
    ipv4(src, g, 17, &[0; 16])
}

fn data_v6(src: MacAddr, g: &[u8; 16]) -> Vec<u8> {
    let mut f = vec![0u8; 14];
    write_header(&mut f, v6_mac(g), src, EtherType::IPV6);
    f.extend_from_slice(&[0x60, 0, 0, 0, 0, 8, 17, 1]);
    f.extend_from_slice(&[0; 16]);
    f.extend_from_slice(g);
    f.extend_from_slice(&[0; 8]);
    f
}

fn switch(n: usize) -> (Switch, Vec<PortId>) {
    let mut sw = Switch::new(SwitchConfig::default());
    let ports = (0..n)
        .map(|_| sw.add_port(VlanMode::default()).unwrap())
        .collect();
    (sw, ports)
}

fn send(sw: &mut Switch, now: Instant, from: PortId, bytes: &[u8]) -> Vec<PortId> {
    match sw.ingress(now, from, bytes) {
        Verdict::Forward(fwd) => {
            let mut to: Vec<PortId> = sw.egress(&fwd).map(|(p, _)| p).collect();
            to.sort();
            to
        }
        Verdict::Drop(c) => panic!("dropped: {c:?}"),
    }
}

const G: [u8; 4] = [239, 1, 1, 1];

#[test]
fn igmp_v2_join_limits_group_traffic_to_members_and_leave_floods_again() {
    let (mut sw, p) = switch(4);
    let t = Instant::now();
    assert_eq!(
        send(&mut sw, t, p[0], &data_v4(host(0), G)),
        vec![p[1], p[2], p[3]],
        "unregistered floods"
    );
    assert_eq!(
        send(&mut sw, t, p[1], &igmp_v2(host(1), 0x16, G)),
        Vec::<PortId>::new(),
        "reports go to routers only: none yet"
    );
    assert_eq!(send(&mut sw, t, p[0], &data_v4(host(0), G)), vec![p[1]]);
    assert_eq!(
        send(&mut sw, t, p[1], &data_v4(host(1), G)),
        Vec::<PortId>::new(),
        "never back to its sender"
    );
    sw.set_multicast_router(p[3], true).unwrap();
    assert_eq!(
        send(&mut sw, t, p[0], &data_v4(host(0), G)),
        vec![p[1], p[3]],
        "routers take every group"
    );
    assert_eq!(
        send(&mut sw, t, p[2], &igmp_v2(host(2), 0x16, G)),
        vec![p[3]],
        "a report reaches the router only"
    );
    assert_eq!(
        send(&mut sw, t, p[1], &igmp_v2(host(1), 0x17, G)),
        vec![p[3]]
    );
    assert_eq!(
        send(&mut sw, t, p[0], &data_v4(host(0), G)),
        vec![p[2], p[3]]
    );
    send(&mut sw, t, p[2], &igmp_v2(host(2), 0x17, G));
    assert_eq!(
        send(&mut sw, t, p[0], &data_v4(host(0), G)),
        vec![p[1], p[2], p[3]],
        "no members left: floods"
    );
    let c = sw.snooping().counters();
    assert_eq!((c.joins, c.leaves), (2, 2));
}

#[test]
fn link_local_control_all_nodes_and_queries_flood() {
    let (mut sw, p) = switch(3);
    let t = Instant::now();
    // Even with 224.0.0.251 "joined", the link-local control block floods.
    send(&mut sw, t, p[1], &igmp_v2(host(1), 0x16, [224, 0, 0, 251]));
    assert_eq!(
        send(&mut sw, t, p[0], &data_v4(host(0), [224, 0, 0, 251])),
        vec![p[1], p[2]]
    );
    let all_nodes = {
        let mut g = [0u8; 16];
        g[0] = 0xff;
        g[1] = 2;
        g[15] = 1;
        g
    };
    send(&mut sw, t, p[1], &mld_v1(host(1), 131, &all_nodes));
    assert_eq!(
        send(&mut sw, t, p[0], &data_v6(host(0), &all_nodes)),
        vec![p[1], p[2]]
    );
    assert_eq!(
        send(&mut sw, t, p[0], &igmp_query(host(0), None)),
        vec![p[1], p[2]]
    );
    assert_eq!(sw.snooping().memberships(), 0, "neither group is kept");
    let bcast = {
        let mut f = data_v4(host(0), G);
        f[..6].fill(0xff);
        f
    };
    assert_eq!(send(&mut sw, t, p[2], &bcast), vec![p[0], p[1]]);
}

#[test]
fn igmp_v3_records_join_and_leave() {
    let (mut sw, p) = switch(3);
    let t = Instant::now();
    let (g1, g2, g3) = ([239, 0, 1, 1], [239, 0, 1, 2], [232, 1, 1, 1]);
    // Exclude none (any source), include some sources (SSM), then include none (leave).
    send(
        &mut sw,
        t,
        p[1],
        &igmp_v3(host(1), &[(4, g1, 0), (3, g3, 2), (6, g2, 1)]),
    );
    assert_eq!(send(&mut sw, t, p[0], &data_v4(host(0), g1)), vec![p[1]]);
    assert_eq!(send(&mut sw, t, p[0], &data_v4(host(0), g3)), vec![p[1]]);
    assert_eq!(
        send(&mut sw, t, p[0], &data_v4(host(0), g2)),
        vec![p[1], p[2]],
        "block of a group never joined"
    );
    send(&mut sw, t, p[1], &igmp_v3(host(1), &[(3, g1, 0)]));
    assert_eq!(
        send(&mut sw, t, p[0], &data_v4(host(0), g1)),
        vec![p[1], p[2]]
    );
    assert_eq!(sw.snooping().memberships(), 1);
}

#[test]
fn mld_v1_and_v2_cover_solicited_node_groups() {
    let (mut sw, p) = switch(4);
    let t = Instant::now();
    let (a, b) = (group6(0x00_0001), group6(0x00_0002));
    send(&mut sw, t, p[1], &mld_v2(host(1), &[(4, a, 0)]));
    send(&mut sw, t, p[2], &mld_v1(host(2), 131, &b));
    assert_eq!(send(&mut sw, t, p[0], &data_v6(host(0), &a)), vec![p[1]]);
    assert_eq!(send(&mut sw, t, p[0], &data_v6(host(0), &b)), vec![p[2]]);
    send(&mut sw, t, p[2], &mld_v1(host(2), 132, &b));
    assert_eq!(
        send(&mut sw, t, p[0], &data_v6(host(0), &b)),
        vec![p[1], p[2], p[3]]
    );
    send(&mut sw, t, p[1], &mld_v2(host(1), &[(1, a, 0)]));
    assert_eq!(
        sw.snooping().memberships(),
        0,
        "MODE_IS_INCLUDE of nothing leaves"
    );
}

#[test]
fn queries_make_router_ports_and_start_aging() {
    let (mut sw, p) = switch(4);
    let t = Instant::now();
    send(&mut sw, t, p[1], &igmp_v2(host(1), 0x16, G));
    // No querier: the membership never ages.
    sw.expire(t + Duration::from_secs(10_000));
    assert_eq!(send(&mut sw, t, p[0], &data_v4(host(0), G)), vec![p[1]]);
    // A v3 query (robustness 2, interval 20 s, response 10 s): p3 is a router port.
    let t = t + Duration::from_secs(10_000);
    send(&mut sw, t, p[3], &igmp_query(host(3), Some((2, 20))));
    assert_eq!(sw.snooping().routers(), &[p[3]]);
    assert_eq!(
        send(&mut sw, t, p[0], &data_v4(host(0), G)),
        vec![p[1], p[3]]
    );
    assert_eq!(
        send(&mut sw, t, p[2], &igmp_v2(host(2), 0x16, G)),
        vec![p[3]]
    );
    sw.expire(t + Duration::from_secs(40));
    assert_eq!(sw.snooping().memberships(), 2, "within 2 × 20 s + 10 s");
    send(
        &mut sw,
        t + Duration::from_secs(45),
        p[3],
        &igmp_query(host(3), Some((2, 20))),
    );
    send(
        &mut sw,
        t + Duration::from_secs(45),
        p[2],
        &igmp_v2(host(2), 0x16, G),
    );
    sw.expire(t + Duration::from_secs(60));
    assert_eq!(
        sw.snooping().memberships(),
        1,
        "p1 did not answer: aged out"
    );
    assert_eq!(
        send(&mut sw, t, p[0], &data_v4(host(0), G)),
        vec![p[2], p[3]]
    );
    // The querier goes quiet: its router port ages, memberships stop aging.
    sw.expire(t + Duration::from_secs(200));
    assert!(sw.snooping().routers().is_empty());
    assert_eq!(sw.snooping().memberships(), 1);
    sw.expire(t + Duration::from_secs(20_000));
    assert_eq!(sw.snooping().memberships(), 1);
}

#[test]
fn mld_queries_mark_routers_and_pim_too() {
    let (mut sw, p) = switch(3);
    let t = Instant::now();
    send(&mut sw, t, p[2], &mld_query(host(2)));
    assert_eq!(sw.snooping().routers(), &[p[2]]);
    let (mut sw, p) = switch(3);
    send(
        &mut sw,
        t,
        p[1],
        &ipv4(host(1), [224, 0, 0, 13], 103, &[0x20, 0, 0, 0]),
    );
    assert_eq!(sw.snooping().routers(), &[p[1]]);
    assert_eq!(sw.snooping().counters().queries, 0, "PIM is no querier");
}

#[test]
fn removed_ports_and_vlan_changes_forget_memberships_but_not_static_routers() {
    let (mut sw, p) = switch(3);
    let t = Instant::now();
    sw.set_multicast_router(p[2], true).unwrap();
    send(&mut sw, t, p[1], &igmp_v2(host(1), 0x16, G));
    send(&mut sw, t, p[2], &igmp_v2(host(2), 0x16, G));
    sw.set_vlan_mode(t, p[2], VlanMode::Access { vlan: 1 })
        .unwrap();
    assert_eq!(sw.snooping().routers(), &[p[2]]);
    assert_eq!(sw.snooping().memberships(), 1);
    sw.remove_port(p[1]).unwrap();
    assert_eq!(sw.snooping().memberships(), 0);
    sw.remove_port(p[2]).unwrap();
    assert!(sw.snooping().routers().is_empty());
}

#[test]
fn group_traffic_stays_in_its_vlan() {
    let mut sw = Switch::new(SwitchConfig::default());
    let a = sw.add_port(VlanMode::Access { vlan: 10 }).unwrap();
    let b = sw.add_port(VlanMode::Access { vlan: 20 }).unwrap();
    let c = sw.add_port(VlanMode::Access { vlan: 10 }).unwrap();
    let t = Instant::now();
    sw.set_multicast_router(b, true).unwrap();
    send(&mut sw, t, c, &igmp_v2(host(3), 0x16, G));
    assert_eq!(
        send(&mut sw, t, a, &data_v4(host(1), G)),
        vec![c],
        "the router port is in VLAN 20"
    );
}

#[test]
fn snooping_off_floods_and_forgets() {
    let mut sw = Switch::new(SwitchConfig {
        snooping: false,
        ..SwitchConfig::default()
    });
    let p: Vec<PortId> = (0..3)
        .map(|_| sw.add_port(VlanMode::default()).unwrap())
        .collect();
    let t = Instant::now();
    send(&mut sw, t, p[1], &igmp_v2(host(1), 0x16, G));
    assert_eq!(
        send(&mut sw, t, p[0], &data_v4(host(0), G)),
        vec![p[1], p[2]]
    );
    sw.set_snooping(true);
    send(&mut sw, t, p[1], &igmp_v2(host(1), 0x16, G));
    assert_eq!(send(&mut sw, t, p[0], &data_v4(host(0), G)), vec![p[1]]);
    sw.set_snooping(false);
    assert_eq!(sw.snooping().memberships(), 0);
    assert_eq!(
        send(&mut sw, t, p[0], &data_v4(host(0), G)),
        vec![p[1], p[2]]
    );
}

#[test]
fn memberships_are_bounded_per_port_and_in_all() {
    let mut snoop = Snooping::new(true, 3, 2);
    let t = Instant::now();
    let mac = |n: u8| MacAddr([0x01, 0, 0x5e, 1, 1, n]);
    for n in 0..3 {
        snoop.join(t, PortId(1), 1, mac(n));
    }
    assert_eq!(snoop.memberships(), 2);
    snoop.join(t, PortId(1), 1, mac(0));
    assert_eq!(snoop.memberships(), 2, "a refresh is no new membership");
    snoop.join(t, PortId(2), 1, mac(0));
    snoop.join(t, PortId(2), 1, mac(1));
    assert_eq!((snoop.memberships(), snoop.counters().refused), (3, 2));
}

#[test]
fn malformed_control_messages_are_read_as_data() {
    let (mut sw, p) = switch(3);
    let t = Instant::now();
    let mut bad = igmp_v2(host(1), 0x16, G);
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    assert_eq!(
        send(&mut sw, t, p[1], &bad),
        vec![p[0], p[2]],
        "a bad checksum: not a report"
    );
    // A v3 report claiming more records than it has, an MLD report cut short.
    let mut short = igmp_v3(host(1), &[(4, G, 0)]);
    let at = short.len() - 8 - 8 + 6;
    short[at..at + 2].copy_from_slice(&[0xff, 0xff]);
    let n = short.len();
    let sum_at = n - 16 + 2;
    short[sum_at..sum_at + 2].fill(0);
    let sum = internet_checksum(&[&short[n - 16..]]);
    short[sum_at..sum_at + 2].copy_from_slice(&sum.to_be_bytes());
    send(&mut sw, t, p[1], &short);
    assert_eq!(
        sw.snooping().memberships(),
        1,
        "the one record there is read"
    );
    let cut = &mld_v1(host(2), 131, &group6(7))[..14 + 40 + 8 + 10];
    send(&mut sw, t, p[2], cut);
    assert_eq!(sw.snooping().memberships(), 1);
}

proptest! {
    /// Whatever bytes follow an Ethernet header to a group, reading them never
    /// panics, and the counts stay consistent with the tables.
    #[test]
    fn arbitrary_payloads_never_break_the_tables(
        frames in proptest::collection::vec((0u8..4, any::<bool>(), proptest::collection::vec(any::<u8>(), 0..120)), 1..60)
    ) {
        let (mut sw, p) = switch(4);
        let t = Instant::now();
        for (port, v6, payload) in frames {
            let mut f = vec![0u8; 14];
            let (dst, et) = if v6 { (v6_mac(&group6(1)), EtherType::IPV6) } else { (v4_mac(G), EtherType::IPV4) };
            write_header(&mut f, dst, host(port), et);
            f.extend_from_slice(&payload);
            let _ = sw.ingress(t, p[port as usize], &f);
        }
        let report = sw.snooping().report();
        let held: usize = report.groups.iter().map(|g| g.2.len()).sum();
        prop_assert_eq!(held, sw.snooping().memberships());
    }

    /// Any sequence of joins, leaves, queries and time passing: the group
    /// traffic of a port reaches exactly the members that joined and did not leave
    /// (or age out under a querier), plus the routers; unregistered groups flood.
    #[test]
    fn delivery_matches_a_model(ops in proptest::collection::vec((0u8..5, 0u8..4, 0u8..3), 1..80)) {
        let (mut sw, p) = switch(4);
        let start = Instant::now();
        let mut now = start;
        let groups = [[239, 1, 1, 1], [239, 1, 1, 2], [239, 2, 2, 2]];
        // Model: group -> port -> last report; query senders (routers) -> last query.
        let mut model: std::collections::BTreeMap<usize, std::collections::BTreeMap<usize, Instant>> = Default::default();
        let mut routers: std::collections::BTreeMap<usize, Instant> = Default::default();
        let interval = Duration::from_secs(260);
        for (op, port, g) in ops {
            let (port, g) = (port as usize, g as usize);
            match op {
                0 => {
                    send(&mut sw, now, p[port], &igmp_v2(host(port as u8), 0x16, groups[g]));
                    model.entry(g).or_default().insert(port, now);
                }
                1 => {
                    send(&mut sw, now, p[port], &igmp_v2(host(port as u8), 0x17, groups[g]));
                    if let Some(m) = model.get_mut(&g) {
                        m.remove(&port);
                    }
                    model.retain(|_, m| !m.is_empty());
                }
                2 => {
                    send(&mut sw, now, p[port], &igmp_query(host(port as u8), None));
                    if routers.is_empty() {
                        for m in model.values_mut() {
                            m.values_mut().for_each(|h| *h = now);
                        }
                    }
                    routers.insert(port, now);
                }
                3 => {
                    now += Duration::from_secs(100);
                    sw.expire(now);
                    // The latest query decides whether a querier is still heard.
                    let querier = routers.values().max().is_some_and(|q| now - *q <= interval);
                    routers.retain(|_, h| now - *h <= interval);
                    if querier {
                        for m in model.values_mut() {
                            m.retain(|_, heard| now - *heard <= interval);
                        }
                        model.retain(|_, m| !m.is_empty());
                    }
                }
                _ => {
                    let got = send(&mut sw, now, p[port], &data_v4(host(port as u8), groups[g]));
                    let members: Vec<usize> = model.get(&g).map(|m| m.keys().copied().collect()).unwrap_or_default();
                    let mut want: Vec<PortId> = if members.is_empty() {
                        (0..4).filter(|&i| i != port).map(|i| p[i]).collect()
                    } else {
                        let mut w: Vec<usize> = members;
                        w.extend(routers.keys());
                        w.sort();
                        w.dedup();
                        w.into_iter().filter(|&i| i != port).map(|i| p[i]).collect()
                    };
                    want.sort();
                    prop_assert_eq!(got, want);
                }
            }
        }
    }
}
