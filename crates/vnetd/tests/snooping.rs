//! IGMP/MLD snooping with namespace VMs on TAP ports: group traffic reaches the ports
//! that joined the group (an IPv4 group joined with IGMP, an IPv6 solicited-node group
//! joined by configuring an address, reported with MLD), not the others; all-nodes
//! still floods; `snooping = false` floods everything.

use std::time::Duration;

use vnet_control::{MacAddr, NetworkInfo};
use vnet_testbed::api::{client, tap_vm};
use vnet_testbed::{skip_unless_root, wait_for, ChildGuard, Daemon, NsVm};

const GROUP: &str = "239.1.1.1";
const GROUP_MAC: &str = "01:00:5e:01:01:01";

fn daemon(snooping: bool) -> Daemon {
    let config = format!("[[network]]\nname = \"mc\"\nsnooping = {snooping}\n");
    Daemon::builder().config(&config).start()
}

fn info(d: &Daemon) -> NetworkInfo {
    client(d).network("mc").unwrap()
}

/// Waits until `port` is a member of the group with MAC `mac`.
fn wait_member(d: &Daemon, mac: &str, port: u32) {
    let mac: MacAddr = mac.parse().unwrap();
    let joined = || {
        info(d)
            .snooping
            .groups
            .iter()
            .any(|g| g.mac == mac && g.ports.contains(&port))
    };
    assert!(
        wait_for(Duration::from_secs(10), joined),
        "port {port} never joined {mac}: {:?}\n{}",
        info(d).snooping,
        d.log()
    );
}

/// tcpdump on `vm`'s interface, once it listens, for frames matching `filter` and for
/// the echo requests [`counted`] sends `vm` as a marker.
fn capture(vm: &NsVm, filter: &str) -> ChildGuard {
    let filter = format!("({filter}) or (icmp and dst host {})", vm.ip());
    let dump = vm
        .ns()
        .spawn(&["tcpdump", "-n", "-l", "-i", vm.ifname(), &filter]);
    assert!(
        wait_for(Duration::from_secs(10), || dump
            .log()
            .contains("listening on")),
        "tcpdump starts: {}",
        dump.log()
    );
    dump
}

/// How many lines of `dump`'s output (on `vm`) contain `pattern`, counted once a
/// unicast ping that `from` sends `vm` after the traffic under test arrived: frames
/// from one port reach another in order, so nothing of it is still on its way.
fn counted(dump: ChildGuard, from: &NsVm, vm: &NsVm, pattern: &str) -> (usize, String) {
    let marker = format!("> {}: ICMP echo request", vm.ip());
    let arrived = || {
        from.ns().exec(&["ping", "-c", "1", "-W", "1", vm.ip()]);
        dump.log().contains(&marker)
    };
    assert!(
        wait_for(Duration::from_secs(10), arrived),
        "the marker never arrived:\n{}",
        dump.log()
    );
    let log = dump.log();
    (log.lines().filter(|l| l.contains(pattern)).count(), log)
}

/// `vm` joins `GROUP` (IGMP report) for as long as the returned process lives.
fn join(vm: &NsVm) -> ChildGuard {
    let recv = format!("UDP4-RECV:5000,ip-add-membership={GROUP}:{}", vm.ifname());
    vm.ns().spawn(&["socat", "-u", &recv, "-"])
}

/// Five UDP datagrams from `vm` to `GROUP`.
fn send_to_group(vm: &NsVm) {
    vm.ns()
        .exec_ok(&["ip", "route", "replace", "224.0.0.0/4", "dev", vm.ifname()]);
    let to = format!("UDP4-DATAGRAM:{GROUP}:5000,ip-multicast-if={}", vm.ip());
    for _ in 0..5 {
        vm.ns()
            .exec_ok(&["sh", "-c", &format!("echo hello | socat -u - {to}")]);
    }
}

/// Turns IPv6 on for `vm` with address `addr` (no DAD, so its own frames are only
/// its MLD reports).
fn ipv6(vm: &NsVm, addr: &str) {
    let on = format!("net.ipv6.conf.{}.disable_ipv6=0", vm.ifname());
    vm.ns().exec_ok(&["sysctl", "-q", "-w", &on]);
    vm.ns()
        .exec_ok(&["ip", "addr", "add", addr, "dev", vm.ifname(), "nodad"]);
}

/// Echo requests from `vm` to IPv6 multicast group `group`.
fn ping6(vm: &NsVm, group: &str) {
    let to = format!("{group}%{}", vm.ifname());
    vm.ns()
        .exec(&["ping", "-6", "-c", "3", "-i", "0.2", "-W", "1", &to]);
}

#[test]
fn group_traffic_reaches_only_members_and_all_nodes_still_floods() {
    skip_unless_root!();
    let d = daemon(true);
    let (_, a) = tap_vm(&d, "mc", "02:00:00:00:0a:01", "10.74.0.1/24");
    let (pb, b) = tap_vm(&d, "mc", "02:00:00:00:0a:02", "10.74.0.2/24");
    let (_, c) = tap_vm(&d, "mc", "02:00:00:00:0a:03", "10.74.0.3/24");
    assert!(info(&d).snooping.enabled);

    // IPv4: B joins 239.1.1.1 with IGMP; A sends to it.
    let _member = join(&b);
    wait_member(&d, GROUP_MAC, pb);
    let (at_b, at_c) = (capture(&b, "dst 239.1.1.1"), capture(&c, "dst 239.1.1.1"));
    send_to_group(&a);
    let (got_b, log_b) = counted(at_b, &a, &b, "> 239.1.1.1.5000:");
    let (got_c, log_c) = counted(at_c, &a, &c, "> 239.1.1.1.5000:");
    assert_eq!(got_b, 5, "the member gets the group's traffic:\n{log_b}");
    assert_eq!(got_c, 0, "a non-member gets none of it:\n{log_c}");
    assert!(info(&d).snooping.group_frames >= 5);

    // IPv6: configuring fd00:74::2 makes B a member of its solicited-node group
    // ff02::1:ff00:2 (an MLDv2 report); C of ff02::1:ff00:3.
    ipv6(&b, "fd00:74::2/64");
    ipv6(&c, "fd00:74::3/64");
    wait_member(&d, "33:33:ff:00:00:02", pb);
    ipv6(&a, "fd00:74::1/64");
    let (at_b, at_c) = (
        capture(&b, "dst ff02::1:ff00:2"),
        capture(&c, "dst ff02::1:ff00:2"),
    );
    ping6(&a, "ff02::1:ff00:2");
    let (got_b, log_b) = counted(at_b, &a, &b, "> ff02::1:ff00:2: ICMP6, echo request");
    let (got_c, log_c) = counted(at_c, &a, &c, "> ff02::1:ff00:2: ICMP6, echo request");
    assert_eq!(got_b, 3, "the solicited-node group's member:\n{log_b}");
    assert_eq!(got_c, 0, "another node's solicited-node group:\n{log_c}");

    // All-nodes is never snooped.
    let at_c = capture(&c, "dst ff02::1");
    ping6(&a, "ff02::1");
    let (got_c, log_c) = counted(at_c, &a, &c, "> ff02::1: ICMP6, echo request");
    assert_eq!(got_c, 3, "all-nodes floods:\n{log_c}");
    let s = info(&d).snooping;
    assert!(s.joins >= 2 && s.group_frames >= 11, "{s:?}");
}

#[test]
fn snooping_off_floods_group_traffic() {
    skip_unless_root!();
    let d = daemon(false);
    let (_, a) = tap_vm(&d, "mc", "02:00:00:00:0b:01", "10.75.0.1/24");
    let (_, b) = tap_vm(&d, "mc", "02:00:00:00:0b:02", "10.75.0.2/24");
    let (_, c) = tap_vm(&d, "mc", "02:00:00:00:0b:03", "10.75.0.3/24");
    let member = join(&b);
    // B's join is on the wire (its own capture sees the report go out) but kept by
    // nobody.
    assert!(
        wait_for(Duration::from_secs(10), || b
            .ns()
            .exec_ok(&["ip", "maddr", "show", "dev", b.ifname()])
            .contains(GROUP)),
        "socat joined: {}",
        member.log()
    );
    let at_c = capture(&c, "dst 239.1.1.1");
    send_to_group(&a);
    let (got_c, log_c) = counted(at_c, &a, &c, "> 239.1.1.1.5000:");
    assert_eq!(got_c, 5, "without snooping everyone gets it:\n{log_c}");
    let s = info(&d).snooping;
    assert!(!s.enabled && s.groups.is_empty() && s.joins == 0, "{s:?}");
}
