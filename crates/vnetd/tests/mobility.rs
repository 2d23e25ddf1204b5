//! VMs that move keep their MAC: within one host (a VM restarted on another port) and
//! from one host to another over a VXLAN vnet, the switch follows the MAC on its first
//! frame from the new place (here, one gratuitous ARP), not after the old entry ages.

use std::time::Duration;

use vnet_testbed::api::{client, tap_vm, tap_vm_in};
use vnet_testbed::{skip_unless_root, unique_name, wait_for, Daemon, Netns, NsVm, Veth};

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

/// The port vnet `net` has learned `mac` on, if any.
fn port_of(d: &Daemon, net: &str, mac: &str) -> Option<u32> {
    client(d)
        .macs(net)
        .unwrap()
        .into_iter()
        .find(|e| e.mac.to_string() == mac)
        .map(|e| e.port)
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
    assert!(peer.ping(vm.ip(), 1));
}

#[test]
fn a_vm_that_moves_to_another_host_is_found_there_after_its_first_frame() {
    skip_unless_root!();
    // Two hosts on an underlay, one VXLAN vnet; the mover starts on host A next to a
    // VM that stays, and a VM on host B talks to it across the tunnel.
    let ul = Netns::new("ul");
    ul.exec_ok(&["ip", "link", "add", "br0", "type", "bridge"]);
    ul.exec_ok(&["ip", "link", "set", "br0", "up"]);
    let mut hosts = Vec::new();
    for n in 1..=2 {
        let ns = Netns::new("hst");
        let mut leg = Veth::new();
        leg.move_a(&ns);
        leg.move_b(&ul);
        ul.exec_ok(&["ip", "link", "set", leg.b(), "master", "br0"]);
        ns.exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("10.78.0.{n}/24"),
            "dev",
            leg.a(),
        ]);
        let toml = format!(
            "[[network]]\nname = \"ovl\"\nmtu = 1450\nuplink = {{ vxlan = {{ vni = 9, local = \"10.78.0.{n}\", remotes = [\"10.78.0.{}\"] }} }}\n",
            3 - n
        );
        let d = Daemon::builder().netns(&ns).config(&toml).start();
        hosts.push((ns, leg, d));
    }
    let vm_on = |h: usize, mac: &str, cidr: &str| {
        let (ns, _, d) = &hosts[h];
        let (port, vm) = tap_vm_in(d, Some(ns), "ovl", mac, cidr);
        vm.ns()
            .exec_ok(&["ip", "link", "set", "dev", vm.ifname(), "mtu", "1450"]);
        (port, vm)
    };
    let (da, db) = (&hosts[0].2, &hosts[1].2);
    let (_, stays) = vm_on(0, "52:54:00:99:00:03", "192.168.92.3/24");
    let (old_port, mover) = vm_on(0, MOVER, "192.168.92.1/24");
    let (_, far) = vm_on(1, "52:54:00:99:00:02", "192.168.92.2/24");
    for from in [&stays, &far] {
        assert!(wait_for(T, || from.ping(mover.ip(), 1)), "{}", da.log());
    }
    assert_eq!(port_of(da, "ovl", MOVER), Some(old_port));

    // It moves to host B: one announce there, and both hosts know at once.
    drop(mover);
    let (new_port, mover) = vm_on(1, MOVER, "192.168.92.1/24");
    announce(&mover);
    let uplink_a = client(da)
        .ports("ovl")
        .unwrap()
        .into_iter()
        .find(|p| p.vxlan.is_some())
        .unwrap()
        .id;
    assert!(
        wait_for(T, || port_of(db, "ovl", MOVER) == Some(new_port)
            && port_of(da, "ovl", MOVER) == Some(uplink_a)),
        "A: {:?}\nB: {:?}",
        client(da).macs("ovl").unwrap(),
        client(db).macs("ovl").unwrap()
    );
    // A's tunnel sends it to host B, not to everyone.
    let fdb = client(da).fdb("ovl").unwrap();
    assert!(
        fdb.iter()
            .any(|e| e.mac.to_string() == MOVER && e.remote.to_string() == "10.78.0.2"),
        "{fdb:?}"
    );
    assert!(stays.ping(mover.ip(), 1) && far.ping(mover.ip(), 1));
}
