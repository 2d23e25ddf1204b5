//! VMs that move keep their MAC: within one host (a VM restarted on another port) and
//! from one host to another over a VXLAN vnet, the switch follows the MAC on its first
//! frame from the new place (here, one gratuitous ARP), not after the old entry ages.
//! Live migration of a QEMU guest is in `migration.rs`.

use std::time::Duration;

use vnet_testbed::api::{client, tap_vm};
use vnet_testbed::overlay::{port_of, uplink_port, vtep_of, Underlay};
use vnet_testbed::{skip_unless_root, unique_name, wait_for, NsVm};

const T: Duration = Duration::from_secs(60);
const MOVER: &str = "52:54:00:99:00:01";

/// Sends exactly one gratuitous ARP for the VM's address: its announce after a move.
fn announce(vm: &NsVm) {
    vm.ns().exec_ok(&[
        "busybox",
        "arping",
        "-U",
        "-c",
        "1",
        "-I",
        vm.ifname(),
        vm.ip(),
    ]);
}

#[test]
fn a_vm_restarted_on_another_port_is_found_there_after_its_first_frame() {
    skip_unless_root!();
    let net = unique_name("mob");
    let d = vnet_testbed::api::daemon_with(&[&net]);
    let (_, peer) = tap_vm(&d, &net, "52:54:00:99:00:02", "192.168.91.2/24");
    let (old_port, vm) = tap_vm(&d, &net, MOVER, "192.168.91.1/24");
    assert!(wait_for(T, || peer.ping(vm.ip(), 1)));
    assert_eq!(port_of(&d, &net, MOVER), Some(old_port));
    let old_macs = |d: &vnet_testbed::Daemon| vnet_testbed::api::port(d, &net, old_port).macs;
    assert_eq!(old_macs(&d).len(), 1);

    // The VM comes back on a new port; the old one is still there (a bonding
    // failover, a hypervisor that has not let go yet): nothing ages.
    drop(vm);
    let (new_port, vm) = tap_vm(&d, &net, MOVER, "192.168.91.1/24");
    announce(&vm);
    assert!(
        wait_for(T, || port_of(&d, &net, MOVER) == Some(new_port)),
        "the MAC stayed on port {old_port}: {:?}",
        client(&d).macs(&net).unwrap()
    );
    // The old port no longer claims it.
    assert!(old_macs(&d).is_empty(), "{:?}", old_macs(&d));
    assert!(peer.ping(vm.ip(), 1));
}

#[test]
fn a_vm_that_moves_to_another_host_is_found_there_after_its_first_frame() {
    skip_unless_root!();
    // Three hosts on an underlay, one VXLAN vnet; the mover starts on host A next to a
    // VM that stays, and VMs on hosts B and C talk to it across the tunnel.
    let ul = Underlay::new();
    let (a, b, c) = (ul.host(1), ul.host(2), ul.host(3));
    let (da, db, dc) = (
        a.vnetd("ovl", 9, &[&b, &c]),
        b.vnetd("ovl", 9, &[&a, &c]),
        c.vnetd("ovl", 9, &[&a, &b]),
    );
    let (_, stays) = a.vm(&da, "ovl", "52:54:00:99:00:03", "192.168.92.3/24");
    let (old_port, mover) = a.vm(&da, "ovl", MOVER, "192.168.92.1/24");
    let (_, far) = b.vm(&db, "ovl", "52:54:00:99:00:02", "192.168.92.2/24");
    let (_, third) = c.vm(&dc, "ovl", "52:54:00:99:00:04", "192.168.92.4/24");
    for from in [&stays, &far, &third] {
        assert!(wait_for(T, || from.ping(mover.ip(), 1)), "{}", da.log());
    }
    assert_eq!(port_of(&da, "ovl", MOVER), Some(old_port));
    // Host B knows it behind host A's tunnel.
    let uplink_b = uplink_port(&db, "ovl");
    assert_eq!(port_of(&db, "ovl", MOVER), Some(uplink_b));
    assert_eq!(vtep_of(&db, "ovl", MOVER).as_deref(), Some(a.addr()));
    assert_eq!(vtep_of(&dc, "ovl", MOVER).as_deref(), Some(a.addr()));

    // It moves to host B: one announce there, and every host knows at once.
    drop(mover);
    let (new_port, mover) = b.vm(&db, "ovl", MOVER, "192.168.92.1/24");
    announce(&mover);
    let uplink_a = uplink_port(&da, "ovl");
    assert!(
        wait_for(T, || port_of(&db, "ovl", MOVER) == Some(new_port)
            && port_of(&da, "ovl", MOVER) == Some(uplink_a)
            && vtep_of(&dc, "ovl", MOVER).as_deref() == Some(b.addr())),
        "A: {:?}\nB: {:?}",
        client(&da).macs("ovl").unwrap(),
        client(&db).macs("ovl").unwrap()
    );
    // A's tunnel sends it to host B, not to everyone; B's tunnel forgot it lived
    // behind A (a remote-learned MAC that appears locally).
    assert_eq!(vtep_of(&da, "ovl", MOVER).as_deref(), Some(b.addr()));
    assert_eq!(
        vtep_of(&db, "ovl", MOVER),
        None,
        "{:?}",
        client(&db).fdb("ovl")
    );
    // Host C, which only heard the flooded announce, sends it to B as well.
    assert!(stays.ping(mover.ip(), 1) && far.ping(mover.ip(), 1) && third.ping(mover.ip(), 1));
}
