//! The loop's scenarios, driven turn by turn through the [`harness`](super::harness).

use std::time::Duration;

use vnet_core::switch::{PortId, VlanMode};
use vnet_model::{NetworkSpec, PortKind, PortSpec};

use super::harness::{frame, mac, Harness, BATCH, BROADCAST};
use crate::dataplane::{Command, ControlError, ErrorKind, QUEUE_CAPACITY};

fn queue_full(h: &Harness, port: &super::harness::Port) -> u64 {
    h.info(port)
        .counters
        .drops
        .get("queue_full")
        .copied()
        .unwrap_or(0)
}

#[test]
fn a_busy_port_gets_64_frames_a_turn_and_a_quiet_one_still_gets_through() {
    let mut h = Harness::new();
    let lab = h.vnet("lab");
    let (busy, quiet, sink) = (h.port(lab), h.port(lab), h.port(lab));
    // Teach the switch where the sink is, so frames go only there.
    h.send(&sink, [frame(BROADCAST, mac(3), 0)]);
    h.turn();
    h.send(&busy, (0..200).map(|n| frame(mac(3), mac(1), n as u8)));
    h.send(&quiet, (0..3).map(|n| frame(mac(3), mac(2), n)));
    h.turn();
    assert_eq!(busy.wire.borrow().inbound.len(), 200 - 64, "its budget");
    assert!(quiet.wire.borrow().inbound.is_empty(), "not starved");
    assert_eq!(sink.wire.borrow().delivered.len(), 64 + 3);
    // The busy port is listed again by the thread itself: no new readiness needed.
    for _ in 0..3 {
        h.turn();
    }
    assert!(busy.wire.borrow().inbound.is_empty());
    assert_eq!(sink.wire.borrow().delivered.len(), 200 + 3);
    assert_eq!(h.info(&busy).counters.rx_frames, 200);
}

#[test]
fn queued_frames_are_offered_in_batches_of_32() {
    let mut h = Harness::new();
    let lab = h.vnet("lab");
    let (a, b) = (h.port(lab), h.port(lab));
    h.send(&a, (0..100).map(|n| frame(BROADCAST, mac(1), n)));
    h.turn();
    h.turn();
    let wire = b.wire.borrow();
    // 64 frames in the first turn, 36 in the second.
    assert_eq!(wire.batches, [BATCH, BATCH, BATCH, 4]);
    let last: Vec<u8> = wire.delivered.iter().map(|f| f[59]).collect();
    assert_eq!(last, (0..100).collect::<Vec<u8>>(), "in order");
}

#[test]
fn a_slow_port_fills_its_own_queue_and_drops_count_as_queue_full_while_others_get_every_frame() {
    let mut h = Harness::new();
    let lab = h.vnet("lab");
    let (sender, slow, fast) = (h.port(lab), h.port(lab), h.port(lab));
    slow.wire.borrow_mut().room = Some(0);
    let frames = QUEUE_CAPACITY + 88;
    h.send(
        &sender,
        (0..frames).map(|n| frame(BROADCAST, mac(1), n as u8)),
    );
    while !sender.wire.borrow().inbound.is_empty() {
        h.turn();
    }
    assert_eq!(fast.wire.borrow().delivered.len(), frames);
    assert!(slow.wire.borrow().delivered.is_empty());
    assert_eq!(h.info(&slow).queue_len, QUEUE_CAPACITY);
    assert_eq!(queue_full(&h, &slow), 88);
    assert_eq!(queue_full(&h, &fast), 0);

    // The slow client catches up: without an fd, it is offered its queue again once
    // the retry interval has passed.
    slow.wire.borrow_mut().room = None;
    h.turn();
    assert!(
        slow.wire.borrow().delivered.is_empty(),
        "not before the retry"
    );
    h.advance(Duration::from_millis(2));
    h.turn();
    assert_eq!(slow.wire.borrow().delivered.len(), QUEUE_CAPACITY);
    assert_eq!(h.info(&slow).queue_len, 0);
}

#[test]
fn the_switch_floods_unknown_destinations_then_forwards_to_the_learned_port() {
    let mut h = Harness::new();
    let lab = h.vnet("lab");
    let (a, b, c) = (h.port(lab), h.port(lab), h.port(lab));
    h.send(&a, [frame(mac(2), mac(1), 1)]);
    h.turn();
    assert_eq!(b.wire.borrow().delivered.len(), 1, "flooded");
    assert_eq!(c.wire.borrow().delivered.len(), 1, "flooded");
    h.send(&b, [frame(mac(1), mac(2), 2)]);
    h.turn();
    assert_eq!(a.wire.borrow().delivered.len(), 1, "A was learned");
    assert_eq!(c.wire.borrow().delivered.len(), 1, "C hears no more");
    h.send(&a, [frame(mac(2), mac(1), 3)]);
    h.turn();
    assert_eq!(b.wire.borrow().delivered.len(), 2);
    assert_eq!(c.wire.borrow().delivered.len(), 1);
    let mut learned: Vec<(u32, String)> = h
        .macs(lab)
        .iter()
        .map(|m| (m.port, m.mac.to_string()))
        .collect();
    learned.sort();
    assert_eq!(
        learned,
        [
            (a.id.0, "02:00:00:00:00:01".to_string()),
            (b.id.0, "02:00:00:00:00:02".to_string())
        ]
    );
}

#[test]
fn learned_macs_age_out_on_the_clock_the_turns_are_given() {
    let mut h = Harness::new();
    let mut spec = NetworkSpec::named("lab");
    spec.mac_aging_secs = 5;
    h.create(spec).unwrap();
    let lab = h.lookup("lab").unwrap();
    let a = h.port(lab);
    h.send(&a, [frame(BROADCAST, mac(1), 0)]);
    h.turn();
    assert_eq!(h.macs(lab).len(), 1);
    h.advance(Duration::from_secs(3));
    h.turn();
    assert_eq!(h.macs(lab).len(), 1, "3 s old");
    h.advance(Duration::from_secs(3));
    h.turn();
    assert!(h.macs(lab).is_empty(), "6 s old, aged out");
}

#[test]
fn a_vnet_name_is_taken_once_and_free_again_after_removal() {
    let mut h = Harness::new();
    h.create(NetworkSpec::named("lab")).unwrap();
    let again = h.create(NetworkSpec::named("lab")).unwrap_err();
    assert_eq!(again.kind(), ErrorKind::Conflict);
    assert_eq!(again.message(), "vnet \"lab\" already exists");
    let bad = h.create(NetworkSpec::named(".dot")).unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::Invalid);

    h.command(|r| Command::DeleteNetwork("lab".into(), r))
        .unwrap();
    assert!(h.lookup("lab").is_err());
    let gone = h
        .command(|r| Command::Network("lab".into(), r))
        .unwrap_err();
    assert_eq!(gone.kind(), ErrorKind::NotFound);
    assert_eq!(gone.message(), "no vnet named \"lab\" (see `vnet net ls`)");
    h.create(NetworkSpec::named("lab")).unwrap();
}

#[test]
fn a_removed_port_leaves_the_switch_and_its_queued_frames_go_nowhere() {
    let mut h = Harness::new();
    let lab = h.vnet("lab");
    let (a, b, c) = (h.port(lab), h.port(lab), h.port(lab));
    c.wire.borrow_mut().room = Some(0);
    h.send(&a, [frame(BROADCAST, mac(1), 0)]);
    h.turn();
    assert_eq!(h.info(&c).queue_len, 1);
    let ports = |h: &mut Harness| {
        h.command(|r| Command::Ports("lab".into(), r))
            .unwrap()
            .iter()
            .map(|p| p.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ports(&mut h), [a.id.0, b.id.0, c.id.0]);
    h.command(|r| Command::RemovePort("lab".into(), c.id.0, r))
        .unwrap();
    assert_eq!(ports(&mut h), [a.id.0, b.id.0]);
    let e = h
        .command(|r| Command::RemovePort("lab".into(), c.id.0, r))
        .unwrap_err();
    assert!(matches!(e, ControlError::NotFound(_)), "{e:?}");
    assert_eq!(
        e.message(),
        format!(
            "vnet \"lab\" has no port {} (see `vnet port ls lab`)",
            c.id.0
        )
    );
    // Ids are never reused, and the flood now reaches only B.
    let d = h.port(lab);
    assert!(d.id.0 > c.id.0);
    h.send(&a, [frame(BROADCAST, mac(1), 1)]);
    h.turn();
    assert_eq!(b.wire.borrow().delivered.len(), 2);
    assert_eq!(d.wire.borrow().delivered.len(), 1);
    assert!(c.wire.borrow().delivered.is_empty());
}

#[test]
fn commands_about_services_a_vnet_lacks_say_how_to_get_them() {
    let mut h = Harness::new();
    h.vnet("lab");
    let e = h
        .command(|r| Command::Forwards("lab".into(), r))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.message().contains("has no NAT device"), "{e}");
    let e = h
        .command(|r| {
            Command::RemoveReservation("lab".into(), "02:00:00:00:00:01".parse().unwrap(), r)
        })
        .unwrap_err();
    assert_eq!(
        e.message(),
        "vnet \"lab\" has no DHCP service (start one with `vnet dhcp set lab --on`)"
    );
    let e = h
        .command(|r| Command::RemoveUplink("lab".into(), r))
        .unwrap_err();
    assert_eq!(e.message(), "vnet \"lab\" has no uplink");
}

#[test]
fn a_port_added_by_command_is_named_once_per_vnet_and_its_name_is_free_after_removal() {
    let mut h = Harness::new();
    h.vnet("lab");
    let web = |name: &str| PortSpec::VhostUser {
        name: name.into(),
        vlan: VlanMode::default(),
        policy: Default::default(),
    };
    let port = h
        .command(|r| Command::AddPort("lab".into(), web("web"), None, r))
        .unwrap();
    assert_eq!(port.kind, PortKind::VhostUser);
    let again = h
        .command(|r| Command::AddPort("lab".into(), web("web"), None, r))
        .unwrap_err();
    assert_eq!(again.kind(), ErrorKind::Conflict);
    assert_eq!(
        again.message(),
        "vnet lab already has vhost-user port web (see `vnet port ls lab`)"
    );
    let bad = h
        .command(|r| Command::AddPort("lab".into(), web(".web"), None, r))
        .unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::Invalid);
    let elsewhere = h
        .command(|r| Command::AddPort("nosuch".into(), web("web"), None, r))
        .unwrap_err();
    assert_eq!(elsewhere.kind(), ErrorKind::NotFound);

    h.command(|r| Command::RemovePort("lab".into(), port.id, r))
        .unwrap();
    let back = h
        .command(|r| Command::AddPort("lab".into(), web("web"), None, r))
        .unwrap();
    assert!(back.id > port.id, "a new port, a new id");
}

#[test]
fn vlans_set_by_command_keep_access_ports_apart_and_a_trunk_hears_both_tagged() {
    let mut h = Harness::new();
    let lab = h.vnet("lab");
    let (a, b, trunk) = (h.port(lab), h.port(lab), h.port(lab));
    let set = |h: &mut Harness, id: PortId, mode: VlanMode| {
        h.command(|r| Command::SetPortVlan("lab".into(), id.0, mode, r))
    };
    set(&mut h, b.id, VlanMode::Access { vlan: 10 }).unwrap();
    let info = set(
        &mut h,
        trunk.id,
        VlanMode::Trunk {
            allowed: vec![1, 10],
            native: None,
        },
    )
    .unwrap();
    assert_eq!(info.id, trunk.id.0);
    h.send(&a, [frame(BROADCAST, mac(1), 1)]);
    h.send(&b, [frame(BROADCAST, mac(2), 2)]);
    h.turn();
    assert_eq!(a.wire.borrow().delivered.len(), 0, "B is on VLAN 10");
    assert_eq!(b.wire.borrow().delivered.len(), 0, "A is on VLAN 1");
    let tags: Vec<[u8; 4]> = trunk
        .wire
        .borrow()
        .delivered
        .iter()
        .map(|f| f[12..16].try_into().unwrap())
        .collect();
    assert_eq!(tags, [[0x81, 0, 0, 1], [0x81, 0, 0, 10]]);

    let e = set(&mut h, a.id, VlanMode::Access { vlan: 4095 }).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert!(e.message().contains("4095"), "{e}");
    let e = set(&mut h, PortId(99), VlanMode::default()).unwrap_err();
    assert_eq!(
        e.message(),
        "vnet \"lab\" has no port 99 (see `vnet port ls lab`)"
    );
}

#[test]
fn a_client_port_over_the_limit_is_refused_and_counted_while_the_others_forward() {
    use crate::dataplane::limits::{Limits, PORTS_PER_VNET, VNETS};
    let mut h = Harness::with_limits(Limits {
        ports_per_vnet: 3,
        vnets: 2,
        ..Limits::default()
    });
    let key = h.vnet("lab");
    let ports: Vec<_> = (0..3).map(|_| h.port(key)).collect();
    let refused = h.try_port(key).err().expect("a 4th client port is refused");
    assert_eq!(refused.kind(), ErrorKind::Conflict);
    assert!(
        refused.message().contains("`[limits] ports_per_vnet`"),
        "{}",
        refused.message()
    );
    assert_eq!(h.refusals(Some("lab"), PORTS_PER_VNET), 1);
    // Ports added through the API count too, and are refused before anything opens.
    let tap = h
        .command(|r| {
            Command::AddPort(
                "lab".into(),
                PortSpec::Tap {
                    ifname: "vnetlimit0".into(),
                    vlan: VlanMode::default(),
                    policy: Default::default(),
                },
                None,
                r,
            )
        })
        .unwrap_err();
    assert_eq!(tap.kind(), ErrorKind::Conflict, "{}", tap.message());
    assert_eq!(h.refusals(Some("lab"), PORTS_PER_VNET), 2);

    h.send(&ports[0], [frame(BROADCAST, mac(1), 1)]);
    h.turn();
    for p in &ports[1..] {
        assert_eq!(p.wire.borrow().delivered.len(), 1);
    }
    // A port that leaves makes room.
    h.command(|r| Command::RemovePort("lab".into(), ports[2].id.0, r))
        .unwrap();
    h.try_port(key).expect("room again");

    h.vnet("two");
    let third = h.create(NetworkSpec::named("three")).unwrap_err();
    assert_eq!(third.kind(), ErrorKind::Conflict);
    assert!(
        third.message().contains("`[limits] vnets`"),
        "{}",
        third.message()
    );
    assert_eq!(h.refusals(None, VNETS), 1);
}

/// A client as the kernel would tell it: `uid`, primary group `gid`, `groups`.
fn client(uid: u32, gid: u32, groups: &[u32]) -> crate::admission::Client {
    crate::admission::Client {
        uid,
        gid,
        pid: Some(4242),
        groups: Some(groups.to_vec()),
    }
}

#[test]
fn only_listed_users_and_group_members_attach_to_a_narrowed_vnet_and_a_refusal_is_counted() {
    use crate::dataplane::limits::ALLOW;
    use vnet_model::Account;
    let mut h = Harness::new();
    let mut spec = NetworkSpec::named("lab");
    spec.allow_users = vec![Account::Id(64_201)];
    spec.allow_groups = vec![Account::Id(64_210)];
    let info = h.create(spec).unwrap();
    assert_eq!(info.allow_users[0].id, 64_201);
    assert_eq!(info.allow_groups[0].id, 64_210);
    let lab = h.lookup("lab").unwrap();
    let listed = h.try_port_as(lab, &client(64_201, 64_201, &[])).unwrap();
    let member = h
        .try_port_as(lab, &client(64_202, 64_202, &[64_210]))
        .unwrap();
    let root = h.try_port_as(lab, &client(0, 0, &[])).unwrap();
    let refused = h
        .try_port_as(lab, &client(64_203, 64_203, &[27]))
        .err()
        .expect("uid 64203 is refused");
    assert_eq!(refused.kind(), ErrorKind::Forbidden);
    assert_eq!(
        refused.message(),
        "uid 64203 may not attach to vnet \"lab\": only root, vnetd's uid, users 64201 and \
         members of groups 64210 may"
    );
    assert_eq!(h.refusals(Some("lab"), ALLOW), 1);
    // Each port records who made it; the admitted ones exchange frames.
    assert_eq!(h.info(&listed).uid, Some(64_201));
    assert_eq!(h.info(&member).uid, Some(64_202));
    assert_eq!(h.info(&listed).pid, Some(4242));
    h.send(&listed, [frame(BROADCAST, mac(1), 1)]);
    h.turn();
    assert_eq!(member.wire.borrow().delivered.len(), 1);
    assert_eq!(root.wire.borrow().delivered.len(), 1);

    // Through the control API: a user the lists refuse adds no port; an admin does.
    let web = |name: &str| PortSpec::VhostUser {
        name: name.into(),
        vlan: VlanMode::default(),
        policy: Default::default(),
    };
    let by = |admin| {
        Some(crate::admission::Requester {
            client: client(64_203, 64_203, &[]),
            admin,
        })
    };
    let e = h
        .command(|r| Command::AddPort("lab".into(), web("web"), by(false), r))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Forbidden, "{}", e.message());
    assert!(e.message().contains("users 64201"), "{}", e.message());
    assert_eq!(h.refusals(Some("lab"), ALLOW), 2);
    let port = h
        .command(|r| Command::AddPort("lab".into(), web("web"), by(true), r))
        .unwrap();
    assert_eq!(port.uid, Some(64_203));
    // The configuration's ports are vnetd's own: no uid.
    let own = h
        .command(|r| Command::AddPort("lab".into(), web("own"), None, r))
        .unwrap();
    assert_eq!(own.uid, None);
}

#[test]
fn a_uid_holds_ports_per_uid_across_vnets_others_and_root_keep_attaching() {
    use crate::dataplane::limits::{Limits, PORTS_PER_UID};
    let mut h = Harness::with_limits(Limits {
        ports_per_uid: 2,
        ..Limits::default()
    });
    let (a, b) = (h.vnet("a"), h.vnet("b"));
    let alice = client(64_201, 64_201, &[]);
    let first = h.try_port_as(a, &alice).unwrap();
    let _second = h.try_port_as(b, &alice).unwrap();
    let refused = h
        .try_port_as(a, &alice)
        .err()
        .expect("a 3rd port is refused");
    assert_eq!(refused.kind(), ErrorKind::Conflict);
    assert!(
        refused
            .message()
            .contains("uid 64201 holds its maximum of client ports")
            && refused.message().contains("`[limits] ports_per_uid`"),
        "{}",
        refused.message()
    );
    assert_eq!(h.refusals(Some("a"), PORTS_PER_UID), 1);
    // Another uid, and root, are not held back; frames keep flowing.
    let bob = h.try_port_as(a, &client(64_202, 64_202, &[])).unwrap();
    for _ in 0..3 {
        h.try_port_as(a, &client(0, 0, &[])).unwrap();
    }
    h.send(&bob, [frame(BROADCAST, mac(2), 1)]);
    h.turn();
    assert_eq!(first.wire.borrow().delivered.len(), 1);
    // A closed port gives its place back.
    h.command(|r| Command::RemovePort("a".into(), first.id.0, r))
        .unwrap();
    h.try_port_as(a, &alice).expect("room again");
    // Deleting a vnet frees its ports' places too.
    h.command(|r| Command::DeleteNetwork("b".into(), r))
        .unwrap();
    h.try_port_as(a, &alice).expect("room again");
}

#[test]
fn a_mac_table_over_macs_per_vnet_is_refused_and_a_full_one_floods_and_counts() {
    use crate::dataplane::limits::{Limits, MACS_PER_VNET};
    let mut h = Harness::with_limits(Limits {
        macs_per_vnet: 2,
        ..Limits::default()
    });
    let mut big = NetworkSpec::named("big");
    big.max_macs = 3;
    let e = h.create(big).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert!(
        e.message().contains("`[limits] macs_per_vnet`"),
        "{}",
        e.message()
    );
    assert_eq!(h.refusals(None, MACS_PER_VNET), 1);

    // A vnet that leaves its table at the default size gets the limit's.
    let key = h.vnet("lab");
    let info = h.command(|r| Command::Network("lab".into(), r)).unwrap();
    assert_eq!((info.max_macs, info.max_macs_per_port), (2, 2));
    let ports: Vec<_> = (0..3).map(|_| h.port(key)).collect();
    for (n, p) in (1..).zip(&ports) {
        h.send(p, [frame(BROADCAST, mac(n), n)]);
        h.turn();
    }
    assert_eq!(h.macs(key).len(), 2, "the third address is not learned");
    // A frame for the address not learned is flooded, as for any unknown one.
    h.send(&ports[0], [frame(mac(3), mac(1), 9)]);
    h.turn();
    for p in &ports[1..] {
        assert_eq!(p.wire.borrow().delivered.last().map(|f| f[59]), Some(9));
    }
    // Counted at the next aging pass (once a second), not per frame.
    h.advance(Duration::from_secs(2));
    h.turn();
    assert_eq!(h.refusals(Some("lab"), MACS_PER_VNET), 1);
}

/// Sets port `port`'s own security section to `spec`.
fn set_security(
    h: &mut Harness,
    port: &super::harness::Port,
    spec: vnet_model::policy::SecuritySpec,
) {
    let patch = vnet_model::PolicyPatch {
        security: Some(Some(spec)),
        ..Default::default()
    };
    h.command(|r| Command::SetPortPolicy("lab".into(), port.id.0, patch, r))
        .expect("policy set");
}

fn drops(h: &Harness, port: &super::harness::Port, cause: &str) -> u64 {
    h.info(port).counters.drops.get(cause).copied().unwrap_or(0)
}

fn delivered(port: &super::harness::Port) -> Vec<u8> {
    port.wire.borrow().delivered.iter().map(|f| f[59]).collect()
}

#[test]
fn a_mac_lock_learns_no_more_than_mac_lock_macs_and_counts_what_the_limit_refused() {
    use crate::dataplane::limits::{Limits, MAC_LOCK_MACS};
    let mut h = Harness::with_limits(Limits {
        mac_lock_macs: 2,
        ..Limits::default()
    });
    let lab = h.vnet("lab");
    let (vm, sink) = (h.port(lab), h.port(lab));
    set_security(
        &mut h,
        &vm,
        vnet_model::policy::SecuritySpec {
            mac_limit: Some(5),
            ..Default::default()
        },
    );
    for n in 1..=3 {
        h.send(&vm, [frame(BROADCAST, mac(n), n)]);
        h.turn();
    }
    assert_eq!(delivered(&sink), [1, 2], "the third source is not learned");
    assert_eq!(drops(&h, &vm, "mac_lock"), 1);
    let report = h.info(&vm).policy_counters.and_then(|c| c.security);
    assert_eq!(
        report.map(|r| r.learned_macs),
        Some(vec![
            vnet_model::MacAddr(mac(1)),
            vnet_model::MacAddr(mac(2))
        ])
    );
    // Counted at the next aging pass (once a second), not per frame.
    h.advance(Duration::from_secs(2));
    h.turn();
    assert_eq!(h.refusals(Some("lab"), MAC_LOCK_MACS), 1);
}

#[test]
fn a_port_its_mac_lock_shut_down_takes_nothing_either_way_until_its_security_is_set_again() {
    use vnet_model::policy::security::{SecuritySpec, Violation};
    let mut h = Harness::new();
    let lab = h.vnet("lab");
    let (vm, other) = (h.port(lab), h.port(lab));
    let lock = SecuritySpec {
        mac_limit: Some(1),
        mac_violation: Some(Violation::Shutdown),
        ..Default::default()
    };
    set_security(&mut h, &vm, lock.clone());
    h.send(
        &vm,
        [
            frame(BROADCAST, mac(1), 1),
            frame(BROADCAST, mac(2), 2),
            frame(BROADCAST, mac(1), 3),
        ],
    );
    h.turn();
    assert_eq!(delivered(&other), [1]);
    assert_eq!(
        (drops(&h, &vm, "mac_lock"), drops(&h, &vm, "shutdown")),
        (1, 1)
    );
    h.send(&other, [frame(BROADCAST, mac(9), 4)]);
    h.turn();
    assert!(delivered(&vm).is_empty(), "nothing out to a shut port");
    assert_eq!(drops(&h, &vm, "shutdown"), 2);

    // The same settings again: enabled, and it still knows its MAC.
    set_security(&mut h, &vm, lock);
    h.send(&vm, [frame(BROADCAST, mac(1), 5)]);
    h.send(&other, [frame(BROADCAST, mac(9), 6)]);
    h.turn();
    assert_eq!(delivered(&other), [1, 5]);
    assert_eq!(delivered(&vm), [6]);
}
