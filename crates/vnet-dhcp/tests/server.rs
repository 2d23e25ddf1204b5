//! Scenarios a vnet's DHCP service must get right, driven through frames and a virtual clock.

mod common;

use std::time::Duration;

use common::*;
use dhcproto::v4::{DhcpOption, MessageType, OptionCode};
use vnet_dhcp::{DhcpServer, LeaseDb, LeaseState, MacAddr, QuarantineReason};

/// A DISCOVER as busybox udhcpc 1.36 sends it (client id, max size 576, vendor class,
/// hostname "guest", padded to 300 bytes), from 52:54:00:12:34:56, xid 0x3903f326.
const UDHCPC_DISCOVER: [&str; 8] = [
    "ffffffffffff525400123456080045100148000000004011799600000000ffffffff0044004301342534010106003903",
    "f32600000000000000000000000000000000000000005254001234560000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000000000000000638253633501013d0701",
    "5254001234563902024037090103060c0f1c2a21793c0c756468637020312e33362e310c056775657374ff0000000000",
    "000000000000",
];

fn hex(lines: &[&str]) -> Vec<u8> {
    let s: String = lines.concat();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Option codes in order, up to End.
fn walk_codes(mut options: &[u8]) -> Vec<u8> {
    let mut codes = Vec::new();
    while let [code, rest @ ..] = options {
        match code {
            0 => options = rest,
            255 => break,
            _ => {
                codes.push(*code);
                options = &rest[1 + usize::from(rest[0])..];
            }
        }
    }
    codes
}

#[test]
fn udhcpc_discover_bytes_get_a_probe_then_an_offer_with_every_option() {
    let mut server = server();
    let frames = server.receive(at(0), &hex(&UDHCPC_DISCOVER));
    assert_eq!(frames.len(), 1);
    let (op, sender_mac, sender_ip, _, target_ip, eth_dst) = parse_arp(&frames[0]);
    assert_eq!(
        (op, sender_mac, eth_dst),
        (1, SERVER_MAC, MacAddr::BROADCAST)
    );
    assert_eq!(sender_ip, ip("0.0.0.0"), "RFC 5227 probe claims no address");
    assert_eq!(target_ip, ip("192.168.56.128"));

    let deadline = server.poll_at().unwrap();
    assert_eq!(deadline, at(0) + Duration::from_millis(300));
    assert!(server.poll(at(0)).is_empty(), "nothing before the deadline");
    let frames = server.poll(deadline);
    // Message type, then server id, first; then udhcpc's request order (1, 3, 6, 12, 15, 28...).
    let options = &frames[0][14 + 20 + 8 + 240..];
    assert_eq!(&options[..3], &[53, 1, 2]);
    assert_eq!(options[3], 54);
    let order: Vec<u8> = walk_codes(options);
    let pos = |code: u8| order.iter().position(|c| *c == code).unwrap();
    assert!(pos(1) < pos(6) && pos(6) < pos(15) && pos(15) < pos(28) && pos(28) < pos(26));
    let offer = one_reply(frames);
    assert_eq!(offer.kind(), MessageType::Offer);
    assert_eq!(offer.msg.xid(), 0x3903_f326);
    assert_eq!(offer.msg.yiaddr(), ip("192.168.56.128"));
    // No broadcast flag: unicast to yiaddr at chaddr.
    assert_eq!(offer.eth_dst, MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
    assert_eq!(offer.ip_dst, ip("192.168.56.128"));
    let expect = [
        DhcpOption::ServerIdentifier(ip("192.168.56.254")),
        DhcpOption::SubnetMask(ip("255.255.255.0")),
        DhcpOption::BroadcastAddr(ip("192.168.56.255")),
        DhcpOption::DomainNameServer(vec![ip("192.168.56.1")]),
        DhcpOption::DomainName("vmnet1.test".into()),
        DhcpOption::InterfaceMtu(9000),
        DhcpOption::AddressLeaseTime(1800),
        DhcpOption::Renewal(900),
        DhcpOption::Rebinding(1575),
        DhcpOption::ClientIdentifier(vec![1, 0x52, 0x54, 0, 0x12, 0x34, 0x56]),
    ];
    for option in expect {
        assert_eq!(offer.opt(OptionCode::from(&option)), Some(&option));
    }
    assert!(
        offer.opt(OptionCode::Router).is_none(),
        "host-only: no router"
    );
    assert_eq!(server.counters().arp_probes, 1);
    assert_eq!(server.counters().offers, 1);
}

#[test]
fn dora_binds_a_lease_with_the_clients_hostname() {
    let mut server = server();
    let client = Client::new(1);
    let (addr, acked) = dora(&mut server, &client, at(0));
    assert_eq!(addr, ip("192.168.56.128"));
    let lease = server.leases().next().unwrap().clone();
    assert_eq!(lease.ip, addr);
    assert_eq!(lease.mac, client.mac);
    assert_eq!(lease.hostname.as_deref(), Some("vm1"));
    assert_eq!(lease.state, LeaseState::Bound);
    assert_eq!(lease.expires, acked + Duration::from_secs(1800));
    assert!(server.take_leases_changed());
    assert!(!server.take_leases_changed());
    let c = server.counters();
    assert_eq!((c.discovers, c.offers, c.requests, c.acks), (1, 1, 1, 1));
    assert_eq!(server.poll_at(), Some(lease.expires));
}

#[test]
fn broadcast_flag_gets_broadcast_replies() {
    let mut server = server();
    let mut client = Client::new(2);
    client.broadcast_flag = true;
    let _probe = server.receive(at(0), &client.discover());
    let offer = one_reply(server.poll(at(1)));
    assert_eq!(
        (offer.eth_dst, offer.ip_dst),
        (MacAddr::BROADCAST, ip("255.255.255.255"))
    );
    assert!(offer.msg.flags().broadcast());
}

#[test]
fn renewal_and_rebinding_keep_the_address() {
    let mut server = server();
    let client = Client::new(3);
    let (addr, _) = dora(&mut server, &client, at(0));

    let renewed =
        one_reply(server.receive(at(900), &client.request_renew(addr, ip("192.168.56.254"))));
    assert_eq!(renewed.kind(), MessageType::Ack);
    assert_eq!(renewed.msg.yiaddr(), addr);
    assert_eq!(renewed.msg.ciaddr(), addr);
    assert_eq!(
        (renewed.eth_dst, renewed.ip_dst),
        (client.mac, addr),
        "unicast to ciaddr"
    );
    assert_eq!(server.leases().next().unwrap().expires, at(900 + 1800));

    let rebound = one_reply(server.receive(at(2500), &client.request_rebind(addr)));
    assert_eq!(rebound.kind(), MessageType::Ack);
    assert_eq!(rebound.msg.yiaddr(), addr);
    assert_eq!(server.leases().next().unwrap().expires, at(2500 + 1800));
    assert_eq!(server.leases().count(), 1);
}

#[test]
fn same_client_gets_the_same_address_on_rediscover_without_a_probe() {
    let mut server = server();
    let client = Client::new(4);
    let (addr, _) = dora(&mut server, &client, at(0));
    let offer = one_reply(server.receive(at(10), &client.discover()));
    assert_eq!(offer.msg.yiaddr(), addr);
    // Even after the lease expired.
    let _ = server.poll(at(5000));
    assert_eq!(server.leases().next().unwrap().state, LeaseState::Expired);
    let offer = one_reply(server.receive(at(5001), &client.discover()));
    assert_eq!(offer.msg.yiaddr(), addr);
}

#[test]
fn reservation_gives_its_mac_the_address_and_nobody_else() {
    let mut config = config();
    let vip = Client::new(10);
    config.reservations = vec![reservation(vip.mac, "192.168.56.128", Some("db"))];
    let mut server = DhcpServer::new(config, LeaseDb::new()).unwrap();

    // Someone else asks for the reserved address and is given another.
    let other = Client::new(11);
    let mut discover = other.message(MessageType::Discover);
    discover
        .opts_mut()
        .insert(DhcpOption::RequestedIpAddress(ip("192.168.56.128")));
    let _probe = server.receive(at(0), &other.frame(&discover, None, None));
    let offer = one_reply(server.poll(at(1)));
    assert_eq!(offer.msg.yiaddr(), ip("192.168.56.129"));
    let nak = one_reply(server.receive(at(1), &other.request_init_reboot(ip("192.168.56.128"))));
    assert_eq!(nak.kind(), MessageType::Nak);

    let mut vip_named = vip.clone();
    vip_named.hostname = None;
    let (addr, _) = dora(&mut server, &vip_named, at(2));
    assert_eq!(addr, ip("192.168.56.128"));
    let lease = server.lease_db().lease_at(addr).unwrap();
    assert_eq!(lease.hostname.as_deref(), Some("db"), "reservation's name");
    let renewed =
        one_reply(server.receive(at(3), &vip_named.request_renew(addr, ip("192.168.56.254"))));
    assert_eq!(
        renewed.opt(OptionCode::Hostname),
        Some(&DhcpOption::Hostname("db".into()))
    );
}

#[test]
fn reservation_outside_the_pool_and_added_live() {
    let mut server = server();
    let vm = Client::new(12);
    let (dynamic, _) = dora(&mut server, &vm, at(0));
    assert_eq!(dynamic, ip("192.168.56.128"));

    let mut config = config();
    config.reservations = vec![reservation(vm.mac, "192.168.56.10", None)];
    server.reconfigure(config).unwrap();
    // Its dynamic address no longer fits: NAK at renewal, then the reserved one.
    let nak = one_reply(server.receive(at(900), &vm.request_renew(dynamic, ip("192.168.56.254"))));
    assert_eq!(nak.kind(), MessageType::Nak);
    assert_eq!(
        (nak.eth_dst, nak.msg.yiaddr()),
        (MacAddr::BROADCAST, ip("0.0.0.0"))
    );
    assert!(server.lease_db().lease_at(dynamic).is_none());
    let (addr, _) = dora(&mut server, &vm, at(901));
    assert_eq!(addr, ip("192.168.56.10"));
}

#[test]
fn decline_quarantines_the_address() {
    let mut server = server();
    let a = Client::new(20);
    let (addr, _) = dora(&mut server, &a, at(0));
    assert!(server.take_leases_changed());
    assert!(server
        .receive(at(1), &a.decline(addr, ip("192.168.56.254")))
        .is_empty());
    assert!(server.take_leases_changed());
    assert!(server.lease_db().lease_at(addr).is_none());
    let q = server.lease_db().quarantined().next().unwrap();
    assert_eq!(
        (q.ip, q.reason, q.reported_by),
        (addr, QuarantineReason::Declined, a.mac)
    );

    // Neither the decliner nor anyone else is offered it while quarantined.
    let (next, _) = dora(&mut server, &a, at(2));
    assert_eq!(next, ip("192.168.56.129"));
    let b = Client::new(21);
    let (other, _) = dora(&mut server, &b, at(3));
    assert_eq!(other, ip("192.168.56.130"));

    // After the quarantine the address is back in the pool.
    let _ = server.poll(at(700));
    assert_eq!(server.lease_db().quarantined().count(), 0);
    let c = Client::new(22);
    let (back, _) = dora(&mut server, &c, at(701));
    assert_eq!(back, addr);
}

#[test]
fn decline_from_a_client_that_does_not_hold_the_address_is_ignored() {
    let mut server = server();
    let (addr, _) = dora(&mut server, &Client::new(23), at(0));
    let forger = Client::new(24);
    let _ = server.receive(at(1), &forger.decline(addr, ip("192.168.56.254")));
    assert_eq!(server.lease_db().quarantined().count(), 0);
    assert_eq!(
        server.lease_db().lease_at(addr).unwrap().state,
        LeaseState::Bound
    );
}

#[test]
fn release_frees_the_address_but_remembers_the_client() {
    let mut server = server();
    let a = Client::new(30);
    let (addr, _) = dora(&mut server, &a, at(0));
    assert!(server
        .receive(at(10), &a.release(addr, ip("192.168.56.254")))
        .is_empty());
    let lease = server.lease_db().lease_at(addr).unwrap();
    assert_eq!((lease.state, lease.expires), (LeaseState::Released, at(10)));
    assert_eq!(server.counters().releases, 1);

    // Others get never-used addresses first; the same client gets its address back.
    let (b_addr, _) = dora(&mut server, &Client::new(31), at(11));
    assert_eq!(b_addr, ip("192.168.56.129"));
    let offer = one_reply(server.receive(at(12), &a.discover()));
    assert_eq!(offer.msg.yiaddr(), addr);
}

#[test]
fn inform_gets_configuration_without_a_lease() {
    let mut server = server();
    let host = Client::new(40);
    let ack = one_reply(server.receive(at(0), &host.inform(ip("192.168.56.50"))));
    assert_eq!(ack.kind(), MessageType::Ack);
    assert_eq!(ack.msg.yiaddr(), ip("0.0.0.0"));
    assert_eq!(ack.msg.ciaddr(), ip("192.168.56.50"));
    assert_eq!((ack.eth_dst, ack.ip_dst), (host.mac, ip("192.168.56.50")));
    assert!(ack.opt(OptionCode::AddressLeaseTime).is_none());
    assert!(ack.opt(OptionCode::Renewal).is_none());
    assert_eq!(
        ack.opt(OptionCode::SubnetMask),
        Some(&DhcpOption::SubnetMask(ip("255.255.255.0")))
    );
    assert_eq!(server.leases().count(), 0);
    assert_eq!(server.counters().informs, 1);
}

#[test]
fn init_reboot_on_another_subnet_gets_a_nak() {
    let mut server = server();
    let client = Client::new(50);
    let nak = one_reply(server.receive(at(0), &client.request_init_reboot(ip("10.9.9.9"))));
    assert_eq!(nak.kind(), MessageType::Nak);
    assert_eq!(
        (nak.eth_dst, nak.ip_dst),
        (MacAddr::BROADCAST, ip("255.255.255.255"))
    );
    assert_eq!(
        nak.opt(OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(ip("192.168.56.254")))
    );
    assert_eq!(nak.msg.xid(), client.xid);
    assert_eq!(server.counters().naks, 1);
}

#[test]
fn init_reboot_for_someone_elses_address_gets_a_nak() {
    let mut server = server();
    let (addr, _) = dora(&mut server, &Client::new(51), at(0));
    let nak = one_reply(server.receive(at(1), &Client::new(52).request_init_reboot(addr)));
    assert_eq!(nak.kind(), MessageType::Nak);
    assert_eq!(
        server.lease_db().lease_at(addr).unwrap().mac,
        Client::new(51).mac
    );
}

#[test]
fn arp_probe_answered_means_the_address_is_skipped() {
    let mut server = server();
    let client = Client::new(60);
    let probe = server.receive(at(0), &client.discover());
    assert_eq!(parse_arp(&probe[0]).4, ip("192.168.56.128"));

    // A statically configured host answers for .128.
    let squatter = MacAddr([0x52, 0x54, 0, 0xee, 0xee, 0xee]);
    let answer = arp_frame(
        2,
        (squatter, ip("192.168.56.128")),
        (SERVER_MAC, ip("0.0.0.0")),
        SERVER_MAC,
    );
    let next = server.receive(at(0) + Duration::from_millis(50), &answer);
    assert_eq!(next.len(), 1);
    assert_eq!(
        parse_arp(&next[0]).4,
        ip("192.168.56.129"),
        "probes the next candidate"
    );
    let q = server.lease_db().quarantined().next().unwrap();
    assert_eq!(
        (q.ip, q.reason, q.reported_by),
        (ip("192.168.56.128"), QuarantineReason::Conflict, squatter)
    );

    let offer = one_reply(server.poll(server.poll_at().unwrap()));
    assert_eq!(offer.msg.yiaddr(), ip("192.168.56.129"));
    assert_eq!(server.counters().probe_conflicts, 1);
}

#[test]
fn the_client_answering_for_its_own_candidate_is_no_conflict() {
    let mut server = server();
    let client = Client::new(61);
    let _ = server.receive(at(0), &client.discover());
    let own = arp_frame(
        1,
        (client.mac, ip("192.168.56.128")),
        (MacAddr([0; 6]), ip("192.168.56.128")),
        MacAddr::BROADCAST,
    );
    assert!(server.receive(at(0), &own).is_empty());
    let offer = one_reply(server.poll(at(1)));
    assert_eq!(offer.msg.yiaddr(), ip("192.168.56.128"));
}

#[test]
fn retransmitted_discover_during_the_probe_is_answered_once_with_its_xid() {
    let mut server = server();
    let mut client = Client::new(62);
    let _ = server.receive(at(0), &client.discover());
    client.xid += 1;
    assert!(server
        .receive(at(0) + Duration::from_millis(100), &client.discover())
        .is_empty());
    let offer = one_reply(server.poll(at(1)));
    assert_eq!(offer.msg.xid(), client.xid);
    assert_eq!(server.counters().arp_probes, 1);
}

#[test]
fn exhausted_pool_offers_nothing_and_counts_it() {
    let mut config = config();
    config.pool = ip("192.168.56.200")..=ip("192.168.56.201");
    let mut server = DhcpServer::new(config, LeaseDb::new()).unwrap();
    dora(&mut server, &Client::new(70), at(0));
    dora(&mut server, &Client::new(71), at(1));
    assert!(server
        .receive(at(2), &Client::new(72).discover())
        .is_empty());
    assert_eq!(server.counters().pool_exhausted, 1);
}

#[test]
fn expired_lease_frees_its_address_for_others() {
    let mut config = config();
    config.pool = ip("192.168.56.200")..=ip("192.168.56.200");
    let mut server = DhcpServer::new(config, LeaseDb::new()).unwrap();
    let (addr, _) = dora(&mut server, &Client::new(80), at(0));
    let late = Client::new(81);
    assert!(server.receive(at(60), &late.discover()).is_empty());
    assert_eq!(server.counters().pool_exhausted, 1);

    let expiry = server.poll_at().unwrap();
    assert_eq!(expiry, server.leases().next().unwrap().expires);
    let _ = server.poll(expiry);
    assert_eq!(server.leases().next().unwrap().state, LeaseState::Expired);
    assert_eq!(server.counters().leases_expired, 1);
    assert!(server.take_leases_changed());

    let (got, _) = dora(&mut server, &late, expiry + Duration::from_secs(1));
    assert_eq!(got, addr);
    assert_eq!(
        server.leases().next().unwrap().mac,
        late.mac,
        "one lease per address"
    );
}

#[test]
fn restarted_server_keeps_giving_the_renewing_client_its_address() {
    let mut server = server();
    let client = Client::new(90);
    let (addr, _) = dora(&mut server, &client, at(0));
    let other = Client::new(91);
    let (other_addr, _) = dora(&mut server, &other, at(1));
    assert!(server.take_leases_changed());
    let saved = server.lease_db().to_json();

    let db = LeaseDb::from_json(&saved).unwrap();
    assert_eq!(&db, server.lease_db());
    let mut restarted = DhcpServer::new(config(), db).unwrap();
    let renewed =
        one_reply(restarted.receive(at(900), &client.request_renew(addr, ip("192.168.56.254"))));
    assert_eq!(
        (renewed.kind(), renewed.msg.yiaddr()),
        (MessageType::Ack, addr)
    );
    // A rebooted guest (INIT-REBOOT) keeps its address too.
    let rebooted = one_reply(restarted.receive(at(901), &other.request_init_reboot(other_addr)));
    assert_eq!(
        (rebooted.kind(), rebooted.msg.yiaddr()),
        (MessageType::Ack, other_addr)
    );
    assert!(
        restarted.take_leases_changed(),
        "renewals move expiries: persist"
    );
}

#[test]
fn a_server_that_lost_its_lease_file_relearns_leases_from_renewals() {
    // A crash after the ACK but before the lease file was written: no record.
    let mut server = server();
    let client = Client::new(92);
    let (addr, _) = dora(&mut server, &client, at(0));
    let other = Client::new(93);
    let (other_addr, _) = dora(&mut server, &other, at(1));
    let mut restarted = DhcpServer::new(config(), LeaseDb::new()).unwrap();
    let renewed =
        one_reply(restarted.receive(at(900), &client.request_renew(addr, ip("192.168.56.254"))));
    assert_eq!(
        (renewed.kind(), renewed.msg.yiaddr()),
        (MessageType::Ack, addr)
    );
    let rebooted = one_reply(restarted.receive(at(901), &other.request_init_reboot(other_addr)));
    assert_eq!(
        (rebooted.kind(), rebooted.msg.yiaddr()),
        (MessageType::Ack, other_addr)
    );
    assert!(restarted.take_leases_changed());
    let relearned: Vec<_> = restarted.leases().map(|l| (l.ip, l.mac)).collect();
    assert_eq!(relearned, vec![(addr, client.mac), (other_addr, other.mac)]);
}

#[test]
fn answers_arp_for_its_own_address() {
    let mut server = server();
    let vm = (MacAddr([0x52, 0x54, 0, 0, 0, 0x99]), ip("192.168.56.128"));
    let who_has = arp_frame(
        1,
        vm,
        (MacAddr([0; 6]), ip("192.168.56.254")),
        MacAddr::BROADCAST,
    );
    let frames = server.receive(at(0), &who_has);
    let (op, sender_mac, sender_ip, target_mac, target_ip, eth_dst) = parse_arp(&frames[0]);
    assert_eq!(
        (op, sender_mac, sender_ip),
        (2, SERVER_MAC, ip("192.168.56.254"))
    );
    assert_eq!((target_mac, target_ip, eth_dst), (vm.0, vm.1, vm.0));
    // Requests for other addresses are not ours to answer.
    let other = arp_frame(
        1,
        vm,
        (MacAddr([0; 6]), ip("192.168.56.1")),
        MacAddr::BROADCAST,
    );
    assert!(server.receive(at(0), &other).is_empty());
    assert_eq!(server.counters().arp_replies, 1);
}

#[test]
fn disabled_service_is_silent_and_keeps_leases() {
    let mut server = server();
    let client = Client::new(100);
    let (addr, _) = dora(&mut server, &client, at(0));
    let mut off = config();
    off.enabled = false;
    server.reconfigure(off).unwrap();
    assert!(server
        .receive(at(1), &Client::new(101).discover())
        .is_empty());
    let who_has = arp_frame(
        1,
        (client.mac, addr),
        (MacAddr([0; 6]), ip("192.168.56.254")),
        MacAddr::BROADCAST,
    );
    assert!(server.receive(at(1), &who_has).is_empty());
    assert_eq!(server.leases().count(), 1);
    server.reconfigure(config()).unwrap();
    let ack = one_reply(server.receive(at(2), &client.request_renew(addr, ip("192.168.56.254"))));
    assert_eq!(ack.kind(), MessageType::Ack);
}

#[test]
fn pool_moved_live_sends_clients_to_the_new_pool() {
    let mut server = server();
    let client = Client::new(110);
    let (old, _) = dora(&mut server, &client, at(0));
    let mut moved = config();
    moved.pool = ip("192.168.56.20")..=ip("192.168.56.30");
    server.reconfigure(moved).unwrap();
    let nak = one_reply(server.receive(at(900), &client.request_renew(old, ip("192.168.56.254"))));
    assert_eq!(nak.kind(), MessageType::Nak);
    let (new, _) = dora(&mut server, &client, at(901));
    assert_eq!(new, ip("192.168.56.20"));
    // An invalid change is refused and changes nothing.
    let mut bad = config();
    bad.pool = ip("192.168.56.250")..=ip("192.168.56.254");
    assert!(server.reconfigure(bad).is_err());
    assert_eq!(*server.config().pool.start(), ip("192.168.56.20"));
}

#[test]
fn request_for_another_servers_offer_frees_ours() {
    let mut server = server();
    let client = Client::new(120);
    let _ = server.receive(at(0), &client.discover());
    let offer = one_reply(server.poll(at(1)));
    assert!(server
        .receive(
            at(1),
            &client.request_selecting(ip("192.168.56.2"), ip("192.168.56.77"))
        )
        .is_empty());
    assert_eq!(server.leases().count(), 0);
    // The address is free for the next client straight away.
    let next = server.receive(at(2), &Client::new(121).discover());
    assert_eq!(parse_arp(&next[0]).4, offer.msg.yiaddr());
}

#[test]
fn client_identifier_is_the_key_not_the_mac() {
    let mut server = server();
    let mut a = Client::new(130);
    a.client_id = Some(b"\x00guest-a".to_vec());
    let (addr, _) = dora(&mut server, &a, at(0));
    // Same NIC, a different identity (another OS on the same VM): a different lease.
    let mut b = a.clone();
    b.client_id = Some(b"\x00guest-b".to_vec());
    let (other, _) = dora(&mut server, &b, at(1));
    assert_ne!(addr, other);
    assert_eq!(server.leases().count(), 2);
}

#[test]
fn same_inputs_give_byte_identical_frames() {
    let run = || {
        let mut server = server();
        let client = Client::new(140);
        let mut frames = server.receive(at(0), &client.discover());
        frames.extend(server.poll(at(1)));
        frames.extend(server.receive(
            at(1),
            &client.request_selecting(ip("192.168.56.254"), ip("192.168.56.128")),
        ));
        frames
    };
    assert_eq!(run(), run());
}

#[test]
fn lease_that_expired_while_the_daemon_was_down_is_renewed() {
    let mut server = server();
    let client = Client::new(150);
    let (addr, _) = dora(&mut server, &client, at(0));
    let saved = server.lease_db().to_json();
    let mut restarted = DhcpServer::new(config(), LeaseDb::from_json(&saved).unwrap()).unwrap();
    let due = restarted.poll_at().unwrap();
    assert!(due < at(10_000), "expiry in the past: poll at once");
    let _ = restarted.poll(at(10_000));
    assert_eq!(
        restarted.leases().next().unwrap().state,
        LeaseState::Expired
    );
    let ack = one_reply(restarted.receive(at(10_001), &client.request_rebind(addr)));
    assert_eq!((ack.kind(), ack.msg.yiaddr()), (MessageType::Ack, addr));
    assert_eq!(restarted.leases().next().unwrap().state, LeaseState::Bound);
}
