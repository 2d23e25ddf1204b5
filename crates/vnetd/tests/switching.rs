//! Isolation between vnets and MAC learning within one, with namespace VMs on TAP ports;
//! busy polling (the data-plane thread spins while traffic flows, sleeps after).

use std::time::Duration;

use vnet_testbed::api::{daemon_with, port, tap_vm};
use vnet_testbed::{api, skip_unless_root, task, wait_for};

#[test]
fn broadcasts_unknown_unicast_and_pings_never_cross_vnets() {
    skip_unless_root!();
    let d = daemon_with(&["blue", "red"]);
    // Same addresses on both vnets: if anything leaked, it would be answered.
    let (b1, blue1) = tap_vm(&d, "blue", "02:00:00:00:02:01", "10.72.0.1/24");
    let (_, blue2) = tap_vm(&d, "blue", "02:00:00:00:02:02", "10.72.0.2/24");
    let (r1, red1) = tap_vm(&d, "red", "02:00:00:00:03:01", "10.72.0.1/24");
    let (r2, red2) = tap_vm(&d, "red", "02:00:00:00:03:02", "10.72.0.9/24");

    let capture = red1
        .ns()
        .spawn(&["tcpdump", "-n", "-l", "-e", "-i", red1.ifname(), "-w", "-"]);
    let capture2 = red2
        .ns()
        .spawn(&["tcpdump", "-n", "-l", "-e", "-i", red2.ifname()]);
    assert!(
        wait_for(Duration::from_secs(10), || capture2
            .log()
            .contains("listening on")),
        "tcpdump starts"
    );

    assert!(blue1.ping(blue2.ip(), 3), "unicast within blue");
    // Broadcast, and unknown unicast (a static neighbour whose MAC nobody has).
    blue1.ns().exec(&[
        "ping",
        "-b",
        "-c",
        "3",
        "-i",
        "0.2",
        "-W",
        "1",
        "10.72.0.255",
    ]);
    blue1.ns().exec_ok(&[
        "ip",
        "neigh",
        "replace",
        "10.72.0.77",
        "lladdr",
        "02:00:00:00:99:99",
        "dev",
        blue1.ifname(),
    ]);
    blue1
        .ns()
        .exec(&["ping", "-c", "3", "-i", "0.2", "-W", "1", "10.72.0.77"]);
    let sent = port(&d, "blue", b1).counters.rx_frames;
    assert!(sent >= 10, "blue1 sent {sent} frames");

    for id in [r1, r2] {
        let p = port(&d, "red", id);
        assert_eq!(
            p.counters.tx_frames, 0,
            "nothing reached red port {id}: {p:?}"
        );
    }
    drop(capture);
    let mut capture2 = capture2;
    capture2.terminate(Duration::from_secs(5));
    let log = capture2.log();
    assert!(
        !log.contains("10.72.0.") && !log.contains("02:00:00:00:02"),
        "red saw blue traffic:\n{log}"
    );
    assert!(log.contains("0 packets captured"), "{log}");
}

#[test]
fn after_learning_unicast_reaches_only_its_destination() {
    skip_unless_root!();
    let d = daemon_with(&["lab"]);
    let (p1, vm1) = tap_vm(&d, "lab", "02:00:00:00:04:01", "10.73.0.1/24");
    let (p2, vm2) = tap_vm(&d, "lab", "02:00:00:00:04:02", "10.73.0.2/24");
    let (p3, _vm3) = tap_vm(&d, "lab", "02:00:00:00:04:03", "10.73.0.3/24");

    assert!(
        vm1.ping(vm2.ip(), 2),
        "first exchange (ARP broadcast floods, replies are learned)"
    );
    let before = port(&d, "lab", p3).counters.tx_frames;
    assert!(before >= 1, "the ARP broadcast reached the third port");
    assert!(vm1.ping(vm2.ip(), 20));
    assert!(vm2.ping(vm1.ip(), 5));
    let after = port(&d, "lab", p3).counters;
    assert_eq!(
        after.tx_frames, before,
        "known unicast must not flood to the third port"
    );
    assert!(port(&d, "lab", p1).counters.tx_frames >= 25);
    assert!(port(&d, "lab", p2).counters.tx_frames >= 25);

    let macs = api::client(&d).macs("lab").unwrap();
    let owner = |mac: &str| {
        macs.iter()
            .find(|m| m.mac.to_string() == mac)
            .map(|m| m.port)
    };
    assert_eq!(owner("02:00:00:00:04:01"), Some(p1), "{macs:?}");
    assert_eq!(owner("02:00:00:00:04:02"), Some(p2), "{macs:?}");
}

/// With `--busy-poll-us`, the data-plane thread keeps polling (`epoll_wait` with no
/// timeout) while frames keep coming, instead of sleeping until the next one, and
/// sleeps again once traffic stops. Counted in what the thread does, not in CPU
/// seconds: the times it blocked (`voluntary_ctxt_switches`). Without busy polling each
/// of the 20 pings below wakes it from a sleep (20 times, measured); spinning, it never sleeps; spinning on
/// after the traffic, it would never block again.
#[test]
fn busy_polling_spins_only_while_traffic_flows() {
    skip_unless_root!();
    let d = vnet_testbed::Daemon::builder()
        .config("[[network]]\nname = \"poll\"\n")
        .arg("--threads")
        .arg("1")
        .arg("--busy-poll-us")
        .arg("300000")
        .start();
    let (_, a) = tap_vm(&d, "poll", "02:00:00:00:04:01", "10.73.0.1/24");
    let (_, _b) = tap_vm(&d, "poll", "02:00:00:00:04:02", "10.73.0.2/24");
    assert!(a.ping("10.73.0.2", 1), "frames still pass\n{}", d.log());
    let pid = d.pid().unwrap();
    let dataplane = task::find_thread(pid, "vnet-dataplane0")
        .unwrap_or_else(|| panic!("vnetd has no thread vnet-dataplane0\n{}", d.log()));
    let blocked = || task::times_blocked(pid, dataplane);

    // Pings 100 ms apart keep a 300 ms poll going: the data-plane thread never sleeps.
    let before = blocked();
    let out = a
        .ns()
        .exec(&["ping", "-q", "-n", "-i", "0.1", "-c", "20", "10.73.0.2"]);
    assert!(out.status.success(), "{out:?}");
    let slept = blocked() - before;
    assert!(
        slept <= 3,
        "the data-plane thread slept {slept} times while 20 pings passed 100 ms apart: \
         it did not poll\n{}",
        d.log()
    );

    // Once the frames stop, it sleeps again (300 ms later, then at each timer).
    let after_traffic = blocked();
    assert!(
        wait_for(Duration::from_secs(10), || blocked() >= after_traffic + 2),
        "the data-plane thread has not slept since the traffic stopped: still spinning\n{}",
        d.log()
    );
}
