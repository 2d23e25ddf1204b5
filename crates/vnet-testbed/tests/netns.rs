//! The namespace half of the test bed, without vnetd: two "VMs" that are
//! namespaces, joined by a veth pair, ping each other; everything is gone
//! afterwards.

use std::path::Path;
use std::time::Duration;

use vnet_testbed::{skip_unless_root, wait_for, Bridge, Netns, NsVm, Veth};

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

#[test]
fn two_namespaces_ping_over_veth() {
    skip_unless_root!();
    let veth = Veth::new();
    let (a_name, b_name) = (veth.a().to_string(), veth.b().to_string());
    let a = NsVm::attach(veth.a(), "02:00:00:00:00:0a", "10.77.0.1/24");
    let b = NsVm::attach(veth.b(), "02:00:00:00:00:0b", "10.77.0.2/24");
    let (ns_a, ns_b) = (a.ns().name().to_string(), b.ns().name().to_string());

    assert!(a.ping(b.ip(), 2), "a cannot ping b");
    assert!(b.ping(a.ip(), 2), "b cannot ping a");
    // The MAC we asked for is the one the peer learned.
    let neigh = b.ns().exec_ok(&["ip", "neigh", "show", a.ip()]);
    assert!(neigh.contains(a.mac()), "{neigh}");
    // A background server in a namespace, killed by its guard.
    let server = a.ns().spawn(&["sleep", "600"]);
    assert_eq!(a.ns().pids(), vec![server.pid() as i32]);
    drop(server);
    assert!(wait_for(Duration::from_secs(5), || a
        .ns()
        .pids()
        .is_empty()));

    drop(a);
    drop(b);
    // The interfaces came back to the host, the namespaces are gone.
    assert!(link_exists(&a_name) && link_exists(&b_name));
    assert!(!netns_exists(&ns_a) && !netns_exists(&ns_b));
    drop(veth);
    assert!(!link_exists(&a_name) && !link_exists(&b_name));
}

#[test]
fn namespace_drop_kills_its_processes() {
    skip_unless_root!();
    let ns = Netns::new("kill");
    let name = ns.name().to_string();
    // Started without a guard: the namespace's drop must still kill it.
    let mut child = ns.command(&["sleep", "600"]).spawn().expect("spawn sleep");
    assert!(wait_for(Duration::from_secs(5), || ns.pids().len() == 1));
    drop(ns);
    let status = child.wait().expect("wait");
    assert!(!status.success());
    assert!(!netns_exists(&name));
}

#[test]
fn bridge_joins_three_namespaces() {
    skip_unless_root!();
    let bridge = Bridge::new();
    let links: Vec<Veth> = (0..3).map(|_| Veth::new()).collect();
    let vms: Vec<NsVm> = links
        .iter()
        .enumerate()
        .map(|(i, l)| {
            bridge.add(l.a());
            NsVm::attach(
                l.b(),
                &format!("02:00:00:00:01:{i:02x}"),
                &format!("10.78.0.{}/24", i + 1),
            )
        })
        .collect();
    for (i, vm) in vms.iter().enumerate() {
        let peer = &vms[(i + 1) % vms.len()];
        assert!(
            vm.ping(peer.ip(), 1),
            "{} cannot ping {}",
            vm.ip(),
            peer.ip()
        );
    }
    let br = bridge.name().to_string();
    drop(vms);
    drop(links);
    drop(bridge);
    assert!(!link_exists(&br));
}

#[test]
fn dhcp_between_namespaces() {
    skip_unless_root!();
    let veth = Veth::new();
    let server = NsVm::attach(veth.a(), "02:00:00:00:02:01", "10.79.0.1/24");
    let client = NsVm::attach(veth.b(), "02:00:00:00:02:02", "");
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("udhcpd.conf");
    let d = dir.path().display();
    std::fs::write(
        &conf,
        format!(
            "start 10.79.0.100\nend 10.79.0.110\ninterface {}\nlease_file {d}/leases\n\
             pidfile {d}/pid\noption subnet 255.255.255.0\noption router 10.79.0.1\n\
             option dns 10.79.0.53\noption lease 600\n",
            server.ifname()
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("leases"), "").unwrap();
    let udhcpd = server
        .ns()
        .spawn(&["busybox", "udhcpd", "-f", &conf.to_string_lossy()]);
    let resolv_before = std::fs::read("/etc/resolv.conf").ok();

    let lease = client
        .dhcp(&[])
        .unwrap_or_else(|e| panic!("{e}\nudhcpd: {}", udhcpd.log()));
    // udhcpd picks from its pool by a hash of the MAC.
    let ip = lease.ip().expect("an address").to_string();
    let host: u8 = ip
        .strip_prefix("10.79.0.")
        .and_then(|h| h.parse().ok())
        .unwrap_or(0);
    assert!((100..=110).contains(&host), "{lease:?}");
    assert_eq!(lease.prefix_len(), Some(24));
    assert_eq!(lease.routers(), ["10.79.0.1"]);
    assert_eq!(lease.dns(), ["10.79.0.53"]);
    assert_eq!(lease.lease_secs(), Some(600));
    let addr = client
        .ns()
        .exec_ok(&["ip", "-4", "-o", "addr", "show", "dev", client.ifname()]);
    assert!(addr.contains(&format!("{ip}/24")), "{addr}");
    assert!(client.ping(server.ip(), 1));
    assert_eq!(
        std::fs::read("/etc/resolv.conf").ok(),
        resolv_before,
        "host resolv.conf touched"
    );
}

#[test]
fn tap_returns_to_the_host_when_the_vm_drops() {
    skip_unless_root!();
    // Stands in for a TAP the daemon created (a persistent one, no fd).
    let tap = vnet_testbed::unique_name("tap");
    let out = std::process::Command::new("ip")
        .args(["tuntap", "add", "mode", "tap", "name", &tap])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vm = NsVm::attach(&tap, "02:00:00:00:03:01", "10.80.0.2/24");
    assert!(!link_exists(&tap), "moved out of the host namespace");
    let shown = vm.ns().exec_ok(&["ip", "-br", "addr", "show", "dev", &tap]);
    assert!(shown.contains("10.80.0.2/24"), "{shown}");
    drop(vm);
    assert!(link_exists(&tap), "back in the host namespace");
    let _ = std::process::Command::new("ip")
        .args(["link", "del", &tap])
        .output();
}
