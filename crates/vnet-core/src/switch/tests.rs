//! Scenario tests of the switch's forwarding decision.

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::wire::ethernet::{write_header, EtherType};

fn mac(n: u8) -> MacAddr {
    MacAddr([0x52, 0x54, 0, 0, 0, n])
}

fn frame(dst: MacAddr, src: MacAddr) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    write_header(&mut f, dst, src, EtherType::IPV4);
    f
}

fn tagged(dst: MacAddr, src: MacAddr, vid: u16) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    write_header(&mut f, dst, src, EtherType::VLAN);
    f[14..16].copy_from_slice(&vid.to_be_bytes());
    f[16..18].copy_from_slice(&EtherType::IPV4.to_be_bytes());
    f
}

fn switch_with(n: usize) -> (Switch, Vec<PortId>) {
    let mut sw = Switch::new(SwitchConfig::default());
    let ports = (0..n)
        .map(|_| sw.add_port(VlanMode::default()).unwrap())
        .collect();
    (sw, ports)
}

fn destinations(
    sw: &mut Switch,
    now: Instant,
    from: PortId,
    bytes: &[u8],
) -> Result<Vec<PortId>, DropCause> {
    match sw.ingress(now, from, bytes) {
        Verdict::Forward(fwd) => Ok(sw.egress(&fwd).map(|(p, _)| p).collect()),
        Verdict::Drop(c) => Err(c),
    }
}

#[test]
fn broadcast_floods_all_but_ingress() {
    let (mut sw, p) = switch_with(3);
    let t = Instant::now();
    assert_eq!(
        destinations(&mut sw, t, p[0], &frame(MacAddr::BROADCAST, mac(1))),
        Ok(vec![p[1], p[2]])
    );
}

#[test]
fn after_learning_unicast_reaches_only_its_port() {
    let (mut sw, p) = switch_with(3);
    let t = Instant::now();
    assert_eq!(
        destinations(&mut sw, t, p[0], &frame(mac(2), mac(1))),
        Ok(vec![p[1], p[2]]),
        "unknown: flood"
    );
    assert_eq!(
        destinations(&mut sw, t, p[1], &frame(mac(1), mac(2))),
        Ok(vec![p[0]])
    );
    assert_eq!(
        destinations(&mut sw, t, p[0], &frame(mac(2), mac(1))),
        Ok(vec![p[1]])
    );
    assert_eq!(sw.port(p[2]).unwrap().counters.rx_frames, 0);
}

#[test]
fn learned_entries_age_out_into_flooding() {
    let (mut sw, p) = switch_with(3);
    let t = Instant::now();
    destinations(&mut sw, t, p[1], &frame(MacAddr::BROADCAST, mac(2))).unwrap();
    assert_eq!(
        destinations(&mut sw, t, p[0], &frame(mac(2), mac(1))),
        Ok(vec![p[1]])
    );
    let later = t + Duration::from_secs(301);
    assert_eq!(
        destinations(&mut sw, later, p[0], &frame(mac(2), mac(1))),
        Ok(vec![p[1], p[2]])
    );
}

#[test]
fn a_vm_that_moves_is_found_at_once() {
    let (mut sw, p) = switch_with(3);
    let t = Instant::now();
    destinations(&mut sw, t, p[1], &frame(MacAddr::BROADCAST, mac(9))).unwrap();
    destinations(&mut sw, t, p[2], &frame(MacAddr::BROADCAST, mac(9))).unwrap();
    assert_eq!(
        destinations(&mut sw, t, p[0], &frame(mac(9), mac(1))),
        Ok(vec![p[2]])
    );
}

/// A tunnel's port is watched: a station that arrives from it and then shows up on a
/// local port is reported once (the tunnel's own database must forget it); moves
/// between other ports and into the tunnel are not.
#[test]
fn moves_away_from_the_watched_port_are_reported_once() {
    let (mut sw, p) = switch_with(3);
    let t = Instant::now();
    sw.watch_moves_from(Some(p[0]));
    destinations(&mut sw, t, p[0], &frame(MacAddr::BROADCAST, mac(9))).unwrap();
    destinations(&mut sw, t, p[1], &frame(MacAddr::BROADCAST, mac(8))).unwrap();
    assert_eq!(sw.take_moved_away().count(), 0, "nothing moved yet");
    // mac(9) arrives locally on p[1] (migrated in); mac(8) moves p[1] → p[2].
    destinations(&mut sw, t, p[1], &frame(MacAddr::BROADCAST, mac(9))).unwrap();
    destinations(&mut sw, t, p[2], &frame(MacAddr::BROADCAST, mac(8))).unwrap();
    assert_eq!(sw.take_moved_away().collect::<Vec<_>>(), [mac(9)]);
    assert_eq!(sw.take_moved_away().count(), 0, "reported once");
    // Moving into the tunnel (migrated away) is the tunnel's own learning.
    destinations(&mut sw, t, p[0], &frame(MacAddr::BROADCAST, mac(8))).unwrap();
    assert_eq!(sw.take_moved_away().count(), 0);
    // The record is bounded, and ends with the watched port.
    for i in 0..100u8 {
        destinations(&mut sw, t, p[0], &frame(MacAddr::BROADCAST, mac(100 + i))).unwrap();
        destinations(&mut sw, t, p[1], &frame(MacAddr::BROADCAST, mac(100 + i))).unwrap();
    }
    assert_eq!(sw.take_moved_away().count(), MOVES_KEPT);
    destinations(&mut sw, t, p[0], &frame(MacAddr::BROADCAST, mac(7))).unwrap();
    destinations(&mut sw, t, p[1], &frame(MacAddr::BROADCAST, mac(7))).unwrap();
    sw.remove_port(p[0]).unwrap();
    assert_eq!(sw.take_moved_away().count(), 0, "gone with its port");
}

#[test]
fn never_back_out_of_the_ingress_port() {
    let (mut sw, p) = switch_with(2);
    let t = Instant::now();
    destinations(&mut sw, t, p[0], &frame(MacAddr::BROADCAST, mac(1))).unwrap();
    assert_eq!(
        destinations(&mut sw, t, p[0], &frame(mac(1), mac(3))),
        Err(DropCause::SamePort)
    );
    assert_eq!(
        sw.port(p[0])
            .unwrap()
            .counters
            .drops
            .get(DropCause::SamePort),
        1
    );
}

#[test]
fn bad_frames_are_dropped_and_counted() {
    let (mut sw, p) = switch_with(2);
    let t = Instant::now();
    assert_eq!(
        destinations(&mut sw, t, p[0], &[0u8; 13]),
        Err(DropCause::Runt)
    );
    assert_eq!(destinations(&mut sw, t, p[0], &[]), Err(DropCause::Runt));
    let mut big = frame(mac(2), mac(1));
    big.resize(1515, 0);
    assert_eq!(
        destinations(&mut sw, t, p[0], &big),
        Err(DropCause::Oversize)
    );
    big.truncate(1514);
    assert!(destinations(&mut sw, t, p[0], &big).is_ok());
    assert_eq!(
        destinations(&mut sw, t, p[0], &tagged(mac(2), mac(1), 5)[..16]),
        Err(DropCause::BadTag)
    );
    assert_eq!(
        destinations(&mut sw, t, p[0], &tagged(mac(2), mac(1), 10)),
        Err(DropCause::VlanDenied)
    );
    assert_eq!(
        destinations(&mut sw, t, p[0], &tagged(mac(2), mac(1), 4095)),
        Err(DropCause::BadTag)
    );
    let c = sw.port(p[0]).unwrap().counters;
    assert_eq!((c.rx_frames, c.drops.total()), (1, 6));
}

#[test]
fn gso_frames_are_judged_by_their_segments() {
    let (mut sw, p) = switch_with(2);
    let t = Instant::now();
    let mut big = frame(mac(2), mac(1));
    big.resize(65_000, 0);
    assert_eq!(
        destinations(&mut sw, t, p[0], &big),
        Err(DropCause::Oversize)
    );
    assert!(matches!(
        sw.ingress_gso(t, p[0], &big, 1514),
        Verdict::Forward(_)
    ));
    assert!(matches!(
        sw.ingress_gso(t, p[0], &big, 1515),
        Verdict::Drop(DropCause::Oversize)
    ));
}

#[test]
fn vlans_are_isolated_and_trunks_carry_tags() {
    let mut sw = Switch::new(SwitchConfig::default());
    let a10 = sw.add_port(VlanMode::Access { vlan: 10 }).unwrap();
    let a20 = sw.add_port(VlanMode::Access { vlan: 20 }).unwrap();
    let trunk = sw
        .add_port(VlanMode::Trunk {
            allowed: vec![10, 20],
            native: None,
        })
        .unwrap();
    let t = Instant::now();
    let fwd = match sw.ingress(t, a10, &frame(MacAddr::BROADCAST, mac(1))) {
        Verdict::Forward(f) => f,
        v => panic!("{v:?}"),
    };
    assert_eq!(
        sw.egress(&fwd).collect::<Vec<_>>(),
        vec![(trunk, Tagging::Tagged(10))]
    );
    let fwd = match sw.ingress(t, trunk, &tagged(MacAddr::BROADCAST, mac(3), 20)) {
        Verdict::Forward(f) => f,
        v => panic!("{v:?}"),
    };
    assert_eq!(
        sw.egress(&fwd).collect::<Vec<_>>(),
        vec![(a20, Tagging::Untagged)]
    );
}

#[test]
fn declared_mac_filters_flooded_unicast_unless_promiscuous() {
    let (mut sw, p) = switch_with(3);
    let t = Instant::now();
    sw.set_mac(t, p[2], mac(3)).unwrap();
    assert_eq!(
        destinations(&mut sw, t, p[0], &frame(mac(7), mac(1))),
        Ok(vec![p[1]])
    );
    assert_eq!(
        destinations(&mut sw, t, p[0], &frame(mac(3), mac(1))),
        Ok(vec![p[2]]),
        "pinned: known at once"
    );
    sw.set_promiscuous(p[2], true).unwrap();
    assert_eq!(
        destinations(&mut sw, t, p[0], &frame(mac(7), mac(1))),
        Ok(vec![p[1], p[2]])
    );
    destinations(&mut sw, t, p[1], &frame(MacAddr::BROADCAST, mac(2))).unwrap();
    assert_eq!(
        destinations(&mut sw, t, p[0], &frame(mac(2), mac(1))),
        Ok(vec![p[1], p[2]]),
        "promiscuous sees unicast"
    );
    assert!(sw.set_mac(t, p[2], MacAddr::BROADCAST).is_err());
}

#[test]
fn removing_a_port_forgets_its_macs() {
    let (mut sw, p) = switch_with(3);
    let t = Instant::now();
    destinations(&mut sw, t, p[1], &frame(MacAddr::BROADCAST, mac(2))).unwrap();
    sw.remove_port(p[1]).unwrap();
    assert_eq!(
        destinations(&mut sw, t, p[0], &frame(mac(2), mac(1))),
        Ok(vec![p[2]])
    );
    assert!(sw.remove_port(p[1]).is_err());
    let p3 = sw.add_port(VlanMode::default()).unwrap();
    assert!(p3 > p[2], "ids are handed out in order, not reused");
}

#[test]
fn port_ids_wrap_around_live_ports_and_never_replace_one() {
    let mut sw = Switch::new(SwitchConfig::default());
    let survivor = sw.add_port(VlanMode::default()).unwrap();
    sw.next_id = u32::MAX - 1;
    let t = Instant::now();
    destinations(&mut sw, t, survivor, &frame(MacAddr::BROADCAST, mac(1))).unwrap();
    let last = sw.add_port(VlanMode::default()).unwrap();
    let wrapped = sw.add_port(VlanMode::default()).unwrap();
    let after = sw.add_port(VlanMode::Access { vlan: 2 }).unwrap();
    assert_eq!(
        (survivor, last, wrapped, after),
        (PortId(1), PortId(u32::MAX - 1), PortId(u32::MAX), PortId(2)),
        "0 and the live port 1 are skipped"
    );
    assert_eq!(sw.ports().count(), 4);
    let port = sw.port(survivor).unwrap();
    assert_eq!(
        (port.vlan_mode(), port.counters.rx_frames),
        (&VlanMode::default(), 1)
    );
    assert_eq!(
        destinations(&mut sw, t, last, &frame(mac(1), mac(9))),
        Ok(vec![survivor]),
        "what the live port learned is still its own"
    );
}

#[test]
fn a_switch_full_of_ids_skips_every_live_one() {
    let mut sw = Switch::with_next_id(SwitchConfig::default(), u32::MAX);
    let ids: Vec<PortId> = (0..4)
        .map(|_| sw.add_port(VlanMode::default()).unwrap())
        .collect();
    sw.remove_port(ids[1]).unwrap();
    sw.next_id = u32::MAX;
    assert_eq!(sw.add_port(VlanMode::default()), Ok(PortId(1)));
    assert_eq!(sw.add_port(VlanMode::default()), Ok(PortId(4)));
    assert_eq!(sw.ports().count(), 5);
}

proptest! {
    /// Whatever arrives, the switch never sends a frame back out of its ingress port,
    /// never outside the frame's VLAN, and counts every frame exactly once.
    #[test]
    fn forwarding_invariants(frames in proptest::collection::vec((0usize..4, proptest::collection::vec(any::<u8>(), 0..80)), 1..100)) {
        let mut sw = Switch::new(SwitchConfig::default());
        let ports = [
            sw.add_port(VlanMode::default()).unwrap(),
            sw.add_port(VlanMode::default()).unwrap(),
            sw.add_port(VlanMode::Access { vlan: 2 }).unwrap(),
            sw.add_port(VlanMode::Trunk { allowed: vec![1, 2], native: None }).unwrap(),
        ];
        let t = Instant::now();
        for (i, (from, bytes)) in frames.iter().enumerate() {
            let now = t + Duration::from_millis(i as u64);
            if let Verdict::Forward(fwd) = sw.ingress(now, ports[*from], bytes) {
                for (to, _) in sw.egress(&fwd) {
                    prop_assert_ne!(to, ports[*from]);
                    prop_assert!(sw.port(to).unwrap().rule.is_member(fwd.vlan));
                }
            }
        }
        let counted: u64 = sw.ports().map(|p| p.counters.rx_frames + p.counters.drops.total()).sum();
        prop_assert_eq!(counted, frames.len() as u64);
    }
}

#[test]
fn a_mirror_destination_takes_no_traffic_and_sends_none() {
    let (mut sw, p) = switch_with(4);
    let t = Instant::now();
    // Port 3 is known (learned and declared) before it becomes a destination.
    assert!(destinations(&mut sw, t, p[3], &frame(MacAddr::BROADCAST, mac(4))).is_ok());
    sw.set_mac(t, p[3], mac(5)).unwrap();
    sw.set_promiscuous(p[3], true).unwrap();
    sw.set_mirror_destination(t, p[3], true).unwrap();
    assert!(sw.port(p[3]).unwrap().mirror_destination());
    // Not flooded to, not reached by its learned or declared address.
    let flood = frame(MacAddr::BROADCAST, mac(1));
    assert_eq!(destinations(&mut sw, t, p[0], &flood), Ok(vec![p[1], p[2]]));
    for known in [mac(4), mac(5)] {
        assert_eq!(
            destinations(&mut sw, t, p[0], &frame(known, mac(1))),
            Ok(vec![p[1], p[2]]),
            "{known} floods to the others only"
        );
    }
    // Promiscuous listeners elsewhere do not bring it back either.
    sw.set_promiscuous(p[1], true).unwrap();
    assert_eq!(
        destinations(&mut sw, t, p[2], &frame(mac(1), mac(3))),
        Ok(vec![p[0], p[1]])
    );
    // What it sends is dropped, counted, and teaches the switch nothing.
    let from_dst = frame(mac(1), mac(6));
    assert_eq!(
        destinations(&mut sw, t, p[3], &from_dst),
        Err(DropCause::MirrorPort)
    );
    let c = sw.port(p[3]).unwrap().counters;
    // (The one frame received is the broadcast it sent before.)
    assert_eq!((c.rx_frames, c.drops.get(DropCause::MirrorPort)), (1, 1));
    assert_eq!(sw.mac_table().lookup(t, DEFAULT_VLAN, mac(6)), None);
    // A VLAN change while a destination keeps it out.
    sw.set_vlan_mode(t, p[3], VlanMode::default()).unwrap();
    assert_eq!(destinations(&mut sw, t, p[0], &flood), Ok(vec![p[1], p[2]]));
}

#[test]
fn a_mirror_destination_switches_normally_again_when_released() {
    let (mut sw, p) = switch_with(3);
    let t = Instant::now();
    sw.set_mac(t, p[2], mac(3)).unwrap();
    sw.set_mirror_destination(t, p[2], true).unwrap();
    sw.set_mirror_destination(t, p[2], false).unwrap();
    assert!(!sw.port(p[2]).unwrap().mirror_destination());
    let flood = frame(MacAddr::BROADCAST, mac(1));
    assert_eq!(destinations(&mut sw, t, p[0], &flood), Ok(vec![p[1], p[2]]));
    // Its declared address is pinned again: unicast to it goes to it alone.
    assert_eq!(
        destinations(&mut sw, t, p[0], &frame(mac(3), mac(1))),
        Ok(vec![p[2]])
    );
    assert!(destinations(&mut sw, t, p[2], &frame(mac(1), mac(3))).is_ok());
    assert_eq!(
        sw.set_mirror_destination(t, PortId(99), true),
        Err(NoSuchPort(PortId(99)))
    );
}

#[test]
fn a_forwarded_frame_revoked_by_policy_is_counted_once_as_its_drop() {
    let (mut sw, p) = switch_with(2);
    let t = Instant::now();
    let bytes = frame(MacAddr::BROADCAST, mac(1));
    assert!(destinations(&mut sw, t, p[0], &bytes).is_ok());
    assert!(destinations(&mut sw, t, p[0], &bytes).is_ok());
    sw.revoke_rx(p[0], bytes.len(), DropCause::Storm);
    let c = &sw.port(p[0]).unwrap().counters;
    assert_eq!((c.rx_frames, c.rx_bytes), (1, bytes.len() as u64));
    assert_eq!((c.drops.get(DropCause::Storm), c.drops.total()), (1, 1));
}
