//! Mirrors on the frame path, driven turn by turn through the
//! [`harness`](super::harness): what a destination gets, what it loses, what it sends.

use vnet_model::{MirrorDirection, MirrorInfo, MirrorSpec, MirrorState, PortRef};

use super::harness::{frame, mac, Harness, Port, BROADCAST};
use crate::dataplane::{Command, QUEUE_CAPACITY};

fn add(h: &mut Harness, sources: &[&Port], direction: MirrorDirection, to: &Port) -> MirrorInfo {
    let spec = MirrorSpec {
        name: "m".into(),
        sources: sources.iter().map(|p| PortRef::Id(p.id.0)).collect(),
        direction,
        destination: PortRef::Id(to.id.0),
    };
    h.command(|r| Command::AddMirror("lab".into(), spec, r))
        .expect("added")
}

fn delivered(p: &Port) -> Vec<u8> {
    p.wire.borrow().delivered.iter().map(|f| f[59]).collect()
}

fn drops(h: &Harness, p: &Port, cause: &str) -> u64 {
    h.info(p).counters.drops.get(cause).copied().unwrap_or(0)
}

#[test]
fn a_flood_among_mirrored_ports_reaches_the_destination_once() {
    let mut h = Harness::new();
    let lab = h.vnet("lab");
    let (a, b, c, m) = (h.port(lab), h.port(lab), h.port(lab), h.port(lab));
    let info = add(&mut h, &[&a, &b, &c], MirrorDirection::Both, &m);
    assert_eq!(info.state, MirrorState::Active);
    // a floods to b and c: a's "in", b's and c's "out" all see it; m gets it once.
    h.send(&a, [frame(BROADCAST, mac(1), 1)]);
    h.turn();
    assert_eq!(delivered(&b), [1]);
    assert_eq!(delivered(&c), [1]);
    assert_eq!(delivered(&m), [1], "one copy");
    let mirrors = h
        .command(|r| Command::Mirrors("lab".into(), r))
        .expect("listed");
    assert_eq!(
        (mirrors[0].counters.frames, mirrors[0].counters.bytes),
        (1, 60)
    );
}

#[test]
fn a_destination_takes_copies_only_and_its_own_frames_are_dropped() {
    let mut h = Harness::new();
    let lab = h.vnet("lab");
    let (a, b, c, m) = (h.port(lab), h.port(lab), h.port(lab), h.port(lab));
    add(&mut h, &[&a], MirrorDirection::Out, &m);
    // c's broadcast reaches a (copied: a's "out") and b, never m on its own.
    h.send(&c, [frame(BROADCAST, mac(3), 1)]);
    h.turn();
    // b to c: neither is a source, m gets nothing.
    h.send(&b, [frame(mac(3), mac(2), 2)]);
    h.turn();
    // a sends: "out" only, not copied.
    h.send(&a, [frame(mac(2), mac(1), 3)]);
    h.turn();
    assert_eq!(delivered(&m), [1]);
    assert_eq!(delivered(&b), [1, 3]);
    // m's own frames go nowhere, counted, and teach the switch nothing.
    h.send(&m, [frame(BROADCAST, mac(9), 4), frame(mac(1), mac(9), 5)]);
    h.turn();
    assert_eq!(drops(&h, &m, "mirror_port"), 2);
    assert_eq!(delivered(&a), [1], "only c's broadcast");
    assert!(h.macs(lab).iter().all(|e| e.port != m.id.0));
    assert_eq!(h.info(&m).mirror_destination, ["m"]);

    // Removed: m is an ordinary port again.
    h.command(|r| Command::RemoveMirror("lab".into(), "m".into(), r))
        .expect("removed");
    h.send(&m, [frame(BROADCAST, mac(9), 6)]);
    h.turn();
    assert_eq!(delivered(&a), [1, 6]);
    h.send(&c, [frame(BROADCAST, mac(3), 7)]);
    h.turn();
    assert_eq!(delivered(&m), [1, 7]);
    assert!(h.info(&m).mirror_destination.is_empty());
}

#[test]
fn a_full_destination_drops_copies_counted_while_the_vnet_forwards_every_frame() {
    let mut h = Harness::new();
    let lab = h.vnet("lab");
    let (a, b, m) = (h.port(lab), h.port(lab), h.port(lab));
    m.wire.borrow_mut().room = Some(0);
    add(&mut h, &[&a], MirrorDirection::In, &m);
    let frames = QUEUE_CAPACITY + 10;
    h.send(&a, (0..frames).map(|n| frame(BROADCAST, mac(1), n as u8)));
    while !a.wire.borrow().inbound.is_empty() {
        h.turn();
    }
    assert_eq!(b.wire.borrow().delivered.len(), frames, "b got every frame");
    assert_eq!(drops(&h, &m, "queue_full"), 10);
    let mirrors = h
        .command(|r| Command::Mirrors("lab".into(), r))
        .expect("listed");
    let c = mirrors[0].counters;
    assert_eq!((c.frames, c.drops), (QUEUE_CAPACITY as u64, 10));
}

#[test]
fn a_mirror_waits_for_a_missing_port_and_starts_when_it_comes() {
    let mut h = Harness::new();
    let lab = h.vnet("lab");
    let a = h.port(lab);
    // The next port's id: named before it exists.
    let spec = MirrorSpec {
        name: "m".into(),
        sources: vec![PortRef::Id(a.id.0)],
        direction: MirrorDirection::In,
        destination: PortRef::Id(a.id.0 + 1),
    };
    let info = h
        .command(|r| Command::AddMirror("lab".into(), spec, r))
        .expect("added");
    assert_eq!(info.state, MirrorState::Waiting);
    assert_eq!(info.reason.as_deref(), Some("no port 2"));
    let m = h.port(lab);
    assert_eq!(m.id.0, a.id.0 + 1);
    let b = h.port(lab);
    h.send(&a, [frame(BROADCAST, mac(1), 1)]);
    h.turn();
    assert_eq!(delivered(&m), [1]);
    assert_eq!(delivered(&b), [1]);
    // Its destination gone, it waits again and m's successor is an ordinary port.
    h.command(|r| Command::RemovePort("lab".into(), m.id.0, r))
        .expect("removed");
    let mirrors = h
        .command(|r| Command::Mirrors("lab".into(), r))
        .expect("listed");
    assert_eq!(mirrors[0].state, MirrorState::Waiting);
    assert_eq!(mirrors[0].counters.frames, 1, "its counters kept");
}
