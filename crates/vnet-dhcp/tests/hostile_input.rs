//! Hostile input: whatever arrives, the server drops and counts it or answers with
//! well-formed frames, and never panics — in debug builds too, where `dhcproto`'s own
//! decoder would trip its debug assertions on several of these messages.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::*;
use dhcproto::v4::MessageType;
use dhcproto::Encodable;
use proptest::prelude::*;
use vnet_dhcp::{DhcpServer, MacAddr};

const CLIENT_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0x42]);

/// A DHCP payload from CLIENT_MAC: fixed header, magic cookie, then `options` verbatim.
fn payload_with_options(options: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 236];
    p[0] = 1;
    p[1] = 1;
    p[2] = 6;
    p[4..8].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    p[28..34].copy_from_slice(&CLIENT_MAC.0);
    p.extend_from_slice(&[99, 130, 83, 99]);
    p.extend_from_slice(options);
    p
}

fn broadcast_to_server(payload: &[u8]) -> Vec<u8> {
    udp_frame(
        CLIENT_MAC,
        MacAddr::BROADCAST,
        (Ipv4Addr::UNSPECIFIED, 68),
        (Ipv4Addr::BROADCAST, 67),
        payload,
    )
}

fn refill_ip_checksum(frame: &mut [u8]) {
    frame[24..26].copy_from_slice(&[0, 0]);
    let sum = checksum(&frame[14..34]);
    frame[24..26].copy_from_slice(&sum.to_be_bytes());
}

fn assert_dropped(server: &mut DhcpServer, frame: &[u8], malformed: bool, what: &str) {
    let before = server.counters().clone();
    let out = server.receive(at(0), frame);
    assert!(out.is_empty(), "{what}: answered");
    let after = server.counters();
    if malformed {
        assert_eq!(
            after.malformed,
            before.malformed + 1,
            "{what}: not counted malformed"
        );
    } else {
        assert_eq!(
            after.ignored,
            before.ignored + 1,
            "{what}: not counted ignored"
        );
    }
}

#[test]
fn malformed_frames_are_dropped_and_counted() {
    let mut server = server();
    let good = Client::new(0x42).discover();

    assert_dropped(&mut server, &good[..10], true, "runt");
    assert_dropped(&mut server, &good[..30], true, "truncated IPv4");
    let mut f = good.clone();
    f[24] ^= 0xff;
    assert_dropped(&mut server, &f, true, "bad IPv4 checksum");
    let mut f = good.clone();
    f[14] = 0x46;
    refill_ip_checksum(&mut f);
    assert_dropped(&mut server, &f, true, "IP options");
    let mut f = good.clone();
    f[20] = 0x20; // more fragments
    refill_ip_checksum(&mut f);
    assert_dropped(&mut server, &f, true, "fragment");
    let mut f = good.clone();
    f[40] ^= 0x55;
    assert_dropped(&mut server, &f, true, "bad UDP checksum");
    let wrong_port = udp_frame(
        CLIENT_MAC,
        MacAddr::BROADCAST,
        (Ipv4Addr::UNSPECIFIED, 1234),
        (Ipv4Addr::BROADCAST, 67),
        &payload_with_options(&[53, 1, 1, 255]),
    );
    assert_dropped(&mut server, &wrong_port, true, "client port not 68");
    for (options, what) in [
        (&[53, 1, 1, 61, 40, 1, 2][..], "option overflow"),
        (&[53, 1, 1, 12, 3, b'a', b'b', b'c'][..], "no End option"),
        (&[53, 1, 1, 53, 1, 1, 255][..], "two message types"),
        (&[53, 1, 2, 255][..], "OFFER from a client"),
        (
            &[53, 1, 1, 50, 3, 1, 2, 3, 255][..],
            "3-byte requested address",
        ),
        (&[53, 1, 1, 52, 1, 9, 255][..], "overload value 9"),
        (&[53, 1, 1, 61, 1, 1, 255][..], "1-byte client id"),
        (&[53, 1, 3, 255][..], "REQUEST with nothing to go on"),
    ] {
        assert_dropped(
            &mut server,
            &broadcast_to_server(&payload_with_options(options)),
            true,
            what,
        );
    }
    let mut p = payload_with_options(&[53, 1, 1, 255]);
    p[2] = 200;
    assert_dropped(
        &mut server,
        &broadcast_to_server(&p),
        true,
        "hlen 200 (dhcproto's chaddr() would panic)",
    );
    assert_dropped(
        &mut server,
        &broadcast_to_server(&p[..100]),
        true,
        "truncated BOOTP",
    );
    let arp = arp_frame(
        9,
        (CLIENT_MAC, ip("192.168.56.7")),
        (MacAddr([0; 6]), ip("192.168.56.254")),
        MacAddr::BROADCAST,
    );
    assert_dropped(&mut server, &arp, true, "ARP op 9");
    assert_dropped(&mut server, &arp[..30], true, "truncated ARP");
}

#[test]
fn traffic_for_others_is_ignored() {
    let mut server = server();
    let good = Client::new(0x42).discover();
    let mut f = good.clone();
    f[12..14].copy_from_slice(&[0x86, 0xdd]);
    assert_dropped(&mut server, &f, false, "IPv6");
    let dns = udp_frame(
        CLIENT_MAC,
        MacAddr::BROADCAST,
        (ip("192.168.56.7"), 5353),
        (Ipv4Addr::BROADCAST, 53),
        b"query",
    );
    assert_dropped(&mut server, &dns, false, "UDP to port 53");
    let mut f = good.clone();
    f[0..6].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 0x77]);
    assert_dropped(&mut server, &f, false, "unicast to another MAC");
    let mut reply = payload_with_options(&[53, 1, 2, 255]);
    reply[0] = 2;
    assert_dropped(
        &mut server,
        &broadcast_to_server(&reply),
        false,
        "another server's OFFER",
    );
    assert_dropped(
        &mut server,
        &broadcast_to_server(&payload_with_options(&[255])),
        false,
        "plain BOOTP",
    );
    let mut relayed = payload_with_options(&[53, 1, 1, 255]);
    relayed[24..28].copy_from_slice(&[10, 1, 1, 1]);
    assert_dropped(
        &mut server,
        &broadcast_to_server(&relayed),
        false,
        "relayed",
    );
    let mut tagged = good[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a]);
    tagged.extend_from_slice(&good[12..]);
    assert_dropped(&mut server, &tagged, false, "802.1Q tagged");
}

/// Options whose lengths trip `dhcproto` 0.15's debug assertions or arithmetic when its
/// decoder sees them raw: the gate must drop them before it does.
#[test]
fn options_that_crash_raw_dhcproto_in_debug_builds_are_harmless() {
    let mut server = server();
    for evil in [
        &[81u8, 1, 0][..], // client FQDN shorter than 3: debug_assert, then len - 3
        &[80, 2, 0, 0],    // rapid commit with data: debug_assert!(len == 0)
        &[94, 1, 0],       // client network interface: debug_assert!(len == 3)
        &[151, 0],         // BLQ status code without its code byte
        &[152, 2, 0, 0],   // BLQ base time: debug_assert!(len == 4)
        &[121, 5, 33, 0, 0, 0, 0],
        &[12, 2, 0xff, 0xfe], // hostname that is not UTF-8
    ] {
        let mut options = vec![53, 1, 1];
        options.extend_from_slice(evil);
        options.push(255);
        let frames = server.receive(at(0), &broadcast_to_server(&payload_with_options(&options)));
        assert_eq!(frames.len(), 1, "the DISCOVER itself is served: {evil:?}");
        frames.iter().for_each(|f| assert_well_formed(f));
        let _ = server.poll(at(1));
    }
}

#[test]
fn good_clients_are_served_between_garbage() {
    let mut server = server();
    for i in 0..50u8 {
        let junk: Vec<u8> = (0..300u32)
            .map(|j| (j as u8).wrapping_mul(i).wrapping_add(7))
            .collect();
        let _ = server.receive(at(0), &junk);
        let _ = server.receive(at(0), &broadcast_to_server(&junk));
    }
    let (addr, _) = dora(&mut server, &Client::new(1), at(1));
    assert_eq!(addr, ip("192.168.56.128"));
}

/// One DHCP option as a fuzzer would write it: interesting codes, any length, any data.
fn option() -> impl Strategy<Value = Vec<u8>> {
    let code = prop_oneof![
        Just(0u8),
        Just(255),
        Just(12),
        Just(50),
        Just(52),
        Just(53),
        Just(54),
        Just(55),
        Just(61),
        Just(80),
        Just(81),
        Just(94),
        Just(121),
        (151u8..=157),
        any::<u8>(),
    ];
    (code, any::<u8>(), prop::collection::vec(any::<u8>(), 0..40)).prop_map(|(code, len, data)| {
        let mut o = vec![code];
        if code != 0 && code != 255 {
            o.push(len % 48);
            o.extend(data);
        }
        o
    })
}

fn encoded_client_messages() -> Vec<Vec<u8>> {
    let c = Client::new(0x42);
    let server_ip = ip("192.168.56.254");
    let mut requested = c.message(MessageType::Request);
    requested
        .opts_mut()
        .insert(dhcproto::v4::DhcpOption::RequestedIpAddress(ip(
            "192.168.56.128",
        )));
    requested
        .opts_mut()
        .insert(dhcproto::v4::DhcpOption::ServerIdentifier(server_ip));
    let mut renew = c.message(MessageType::Request);
    renew.set_ciaddr(ip("192.168.56.128"));
    [
        c.message(MessageType::Discover),
        requested,
        renew,
        c.message(MessageType::Decline),
        c.message(MessageType::Release),
        c.message(MessageType::Inform),
    ]
    .iter()
    .map(|m| m.to_vec().unwrap())
    .collect()
}

fn check_outputs(frames: &[Vec<u8>]) {
    for f in frames {
        assert_well_formed(f);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_frames_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..700)) {
        let mut server = server();
        check_outputs(&server.receive(at(0), &bytes));
        let mut frame = bytes.clone();
        if frame.len() >= 14 {
            frame[..6].copy_from_slice(&[0xff; 6]);
            frame[12..14].copy_from_slice(&[0x08, 0x00]);
            check_outputs(&server.receive(at(0), &frame));
            frame[12..14].copy_from_slice(&[0x08, 0x06]);
            check_outputs(&server.receive(at(0), &frame));
        }
    }

    #[test]
    fn arbitrary_udp_payloads_to_port_67_never_panic(payload in prop::collection::vec(any::<u8>(), 0..700)) {
        let mut server = server();
        check_outputs(&server.receive(at(0), &broadcast_to_server(&payload)));
    }

    #[test]
    fn arbitrary_option_areas_never_panic(
        kind in prop::sample::select(vec![1u8, 3, 4, 7, 8]),
        options in prop::collection::vec(option(), 0..12),
        file in prop::collection::vec(option(), 0..4),
        end in any::<bool>(),
    ) {
        let mut area = vec![53, 1, kind];
        area.extend(options.concat());
        if end {
            area.push(255);
        }
        let mut payload = payload_with_options(&area);
        let file = file.concat();
        let n = file.len().min(128);
        payload[108..108 + n].copy_from_slice(&file[..n]);
        let mut server = server();
        check_outputs(&server.receive(at(0), &broadcast_to_server(&payload)));
        check_outputs(&server.poll(at(1)));
    }

    #[test]
    fn mutated_client_messages_never_panic(
        which in 0usize..6,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut payload = encoded_client_messages()[which].clone();
        for (at_index, byte) in edits {
            let i = at_index.index(payload.len());
            payload[i] = byte;
        }
        if truncate {
            payload.truncate(cut.index(payload.len() + 1));
        }
        let mut server = server();
        let _ = dora(&mut server, &Client::new(0x42), at(0));
        check_outputs(&server.receive(at(5), &broadcast_to_server(&payload)));
        let unicast = udp_frame(CLIENT_MAC, SERVER_MAC, (ip("192.168.56.128"), 68), (ip("192.168.56.254"), 67), &payload);
        check_outputs(&server.receive(at(6), &unicast));
        check_outputs(&server.poll(at(7)));
    }

    /// Many clients, garbage, ARP and time passing in any order: replies stay well formed
    /// and the lease invariants hold (one lease per address and per client, all in the subnet).
    #[test]
    fn random_sessions_keep_the_invariants(
        steps in prop::collection::vec((0u8..8, 0u8..6, 0u64..400), 1..60),
    ) {
        let mut server = server();
        let mut now = at(0);
        let server_ip = ip("192.168.56.254");
        for (action, who, secs) in steps {
            let client = Client::new(who + 1);
            let mine = server.leases().find(|l| l.mac == client.mac).map(|l| l.ip).unwrap_or(ip("192.168.56.128"));
            let frame = match action {
                0 => client.discover(),
                1 => client.request_selecting(server_ip, mine),
                2 => client.request_renew(mine, server_ip),
                3 => client.request_init_reboot(mine),
                4 => client.decline(mine, server_ip),
                5 => client.release(mine, server_ip),
                6 => arp_frame(2, (MacAddr([2, 0, 0, 0, 0, who]), ip("192.168.56.128") ), (SERVER_MAC, Ipv4Addr::UNSPECIFIED), SERVER_MAC),
                _ => Vec::new(),
            };
            if !frame.is_empty() {
                check_outputs(&server.receive(now, &frame));
            }
            now = now + Duration::from_millis(secs * 37);
            if server.poll_at().is_some_and(|t| t <= now) {
                check_outputs(&server.poll(now));
            }
            let leases: Vec<_> = server.leases().cloned().collect();
            let mut clients: Vec<_> = leases.iter().map(|l| l.client_id.clone()).collect();
            clients.sort();
            clients.dedup();
            prop_assert_eq!(clients.len(), leases.len());
            for l in &leases {
                prop_assert!(server.config().pool.contains(&l.ip));
                prop_assert!(server.lease_db().quarantined().all(|q| q.ip != l.ip));
            }
        }
    }
}
