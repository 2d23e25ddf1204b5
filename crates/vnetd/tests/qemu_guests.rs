//! Real QEMU guests on a vnet: one over `-netdev stream`, one over `-netdev dgram`,
//! plus a namespace VM on a TAP port, all pinging each other.

use std::time::Duration;

use vnet_control::PortKind;
use vnet_testbed::api::{daemon_with, ports, tap_vm};
use vnet_testbed::{payload, skip_unless_root, unique_name, Guest, Netdev};

const T: Duration = Duration::from_secs(60);

#[test]
fn stream_and_dgram_guests_and_a_namespace_vm_all_ping_each_other() {
    skip_unless_root!();
    let d = daemon_with(&["lab"]);
    let dir = d.net_dir("lab");
    let (_, vm) = tap_vm(&d, "lab", "02:00:00:00:01:03", "10.71.0.3/24");

    let stream = Guest::builder()
        .name("stream")
        .nic_with_mac(
            Netdev::Stream {
                path: dir.join("stream.sock"),
            },
            "52:54:00:00:01:01",
        )
        .static_ip(0, "10.71.0.1/24");
    let local = std::env::temp_dir().join(format!("{}.sock", unique_name("dg")));
    let dgram = Guest::builder()
        .name("dgram")
        .nic_with_mac(
            Netdev::Dgram {
                local: local.clone(),
                remote: dir.join("dgram.sock"),
            },
            "52:54:00:00:01:02",
        )
        .static_ip(0, "10.71.0.2/24");
    // Boot both at once: TCG boots are the slow part of this test.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| stream.boot().expect("stream guest boots"));
        let b = s.spawn(|| dgram.boot().expect("dgram guest boots"));
        (a.join().unwrap(), b.join().unwrap())
    });

    // The dgram guest speaks first: the vnet learns a dgram peer from what it sends.
    b.exec_ok("ping -c 3 -W 3 10.71.0.1", T);
    b.exec_ok("ping -c 3 -W 3 10.71.0.3", T);
    a.exec_ok("ping -c 3 -W 3 10.71.0.2", T);
    a.exec_ok("ping -c 3 -W 3 10.71.0.3", T);
    assert!(vm.ping("10.71.0.1", 3), "namespace VM → stream guest");
    assert!(vm.ping("10.71.0.2", 3), "namespace VM → dgram guest");

    let ports = ports(&d, "lab");
    let kinds: Vec<PortKind> = ports.iter().map(|p| p.kind).collect();
    assert_eq!(
        kinds,
        [PortKind::Tap, PortKind::Stream, PortKind::Dgram],
        "{ports:?}"
    );
    for p in &ports {
        assert!(
            p.counters.rx_frames >= 6 && p.counters.tx_frames >= 6,
            "{p:?}"
        );
        assert_eq!(p.macs.len(), 1, "each port learned its VM's MAC: {p:?}");
    }
    assert!(
        ports[1].description.contains("qemu"),
        "stream peer described: {}",
        ports[1].description
    );
    assert!(
        ports[2].description.contains(&*local.to_string_lossy()),
        "{}",
        ports[2].description
    );
    drop((a, b));
    let _ = std::fs::remove_file(local);
}

/// A TAP with offloads hands the vnet TCP super-frames; a stream guest only takes
/// ordinary frames, so the vnet segments them and completes their checksums. The bytes
/// must arrive intact.
#[test]
fn bulk_tcp_from_an_offloading_tap_reaches_a_stream_guest_intact() {
    skip_unless_root!();
    let d = daemon_with(&["lab"]);
    let (tap, vm) = tap_vm(&d, "lab", "02:00:00:00:01:13", "10.71.1.3/24");
    let guest = Guest::builder()
        .name("bulk")
        .nic_with_mac(
            Netdev::Stream {
                path: d.net_dir("lab").join("stream.sock"),
            },
            "52:54:00:00:01:11",
        )
        .static_ip(0, "10.71.1.1/24")
        .boot()
        .expect("guest boots");
    assert!(vm.ping("10.71.1.1", 2));
    payload::send_file_to_guest(&vm, &guest, "10.71.1.1", 4_000_000);

    let ports = ports(&d, "lab");
    let tap_port = ports.iter().find(|p| p.id == tap).unwrap();
    let avg = tap_port.counters.rx_bytes / tap_port.counters.rx_frames.max(1);
    assert!(
        avg > 3000,
        "the TAP should hand over GSO super-frames (average {avg} bytes): {tap_port:?}"
    );
    let stream = ports.iter().find(|p| p.kind == PortKind::Stream).unwrap();
    assert_eq!(stream.counters.drops.values().sum::<u64>(), 0, "{stream:?}");
}
