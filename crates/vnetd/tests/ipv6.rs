//! IPv6 on vnets, end to end (issue 16 items 1, 2 and 7): namespace VMs and a QEMU
//! guest configure themselves by SLAAC from the vnet's router advertisements, get their
//! DNS server from RDNSS and ping the NAT device's IPv6 address; on a host-only vnet
//! the RA announces no default router and the VMs reach the host adapter's `::1`; the
//! default prefix is the name's ULA, stable across restarts; bridged and VLAN vnets
//! carry guests' IPv6.

use std::net::Ipv6Addr;
use std::time::Duration;

use vnet_control::{Ipv6Info, Ipv6Net, NetworkSpec, PortSpec, VlanMode};
use vnet_testbed::api::{client, tap_vm};
use vnet_testbed::{
    skip_unless_root, unique_name, wait_for, Daemon, Guest, Netdev, Netns, NsVm, Veth,
};

const T: Duration = Duration::from_secs(60);

/// A third octet for this test's IPv4 subnets, so tests running at once do not collide.
fn octet(salt: u32) -> u32 {
    (std::process::id().wrapping_mul(11) + salt * 41) % 200 + 20
}

/// A static IPv6 address on `vm`, usable at once (no duplicate address detection).
fn static_ipv6(ns: &Netns, ifname: &str, cidr: &str) {
    let kv = format!("net.ipv6.conf.{ifname}.disable_ipv6=0");
    ns.exec_ok(&["sysctl", "-q", "-w", &kv]);
    ns.exec_ok(&["ip", "-6", "addr", "add", cidr, "dev", ifname, "nodad"]);
}

/// Waits for `vm` to autoconfigure an address in `subnet`.
fn slaac_address(vm: &NsVm, subnet: Ipv6Net, d: &Daemon) -> Ipv6Addr {
    let mut found = None;
    let ok = wait_for(T, || {
        found = vm.global_ipv6().into_iter().find(|a| subnet.contains(a));
        found.is_some()
    });
    assert!(
        ok,
        "no SLAAC address in {subnet}: {}\n{}",
        vm.ns().exec_ok(&["ip", "-6", "addr"]),
        d.log()
    );
    found.unwrap()
}

/// `ping -6` from `ns` until one reply (the neighbour may still be resolving).
fn ping6(ns: &Netns, target: &str) -> bool {
    wait_for(T, || {
        ns.exec(&["ping", "-6", "-n", "-q", "-c", "1", "-W", "2", target])
            .status
            .success()
    })
}

fn ipv6_of(d: &Daemon, net: &str) -> Ipv6Info {
    let info = client(d).network(net).unwrap();
    info.ipv6
        .clone()
        .unwrap_or_else(|| panic!("{net} has no IPv6: {info:?}"))
}

/// The value of `/metrics` sample `name{net="NET"}`.
fn metric(d: &Daemon, name: &str, net: &str) -> u64 {
    let text = client(d).metrics().unwrap();
    let key = format!("{name}{{net=\"{net}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .unwrap_or_else(|| panic!("no {key} in\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn a_vm_on_a_nat_vnet_autoconfigures_gets_dns_and_pings_the_gateway() {
    skip_unless_root!();
    let net = unique_name("v6n");
    let n = octet(1);
    let d = Daemon::start(Some(&format!(
        "[[network]]\nname = \"{net}\"\nsubnet = \"10.211.{n}.0/24\"\ndhcp = {{ domain = \"lab.test\" }}\nnat = {{}}\n"
    )));
    let v6 = ipv6_of(&d, &net);
    assert!(v6.derived, "{v6:?}");
    assert_eq!(v6.subnet, vnet_control::ipv6::ula_prefix(&net));
    let gateway = v6.router.expect("the NAT device is the router");
    assert_eq!(gateway, vnet_control::ipv6::nth6(v6.subnet, 2));
    assert_eq!(v6.router_lifetime_secs, 1800);

    let (_, vm) = tap_vm(&d, &net, "52:54:00:11:00:01", "");
    vm.enable_slaac();
    let address = slaac_address(&vm, v6.subnet, &d);
    // The default route leads to the router's link-local address.
    let ok = wait_for(T, || {
        let routes = vm.ns().exec_ok(&["ip", "-6", "route", "show", "default"]);
        routes.contains("via fe80::") && routes.contains(vm.ifname())
    });
    assert!(ok, "{}", vm.ns().exec_ok(&["ip", "-6", "route"]));
    // The RA as a host reads it: prefix, DNS server and search list, router lifetime.
    let ra = vm.rdisc6(T);
    for line in [
        format!("Prefix : {}", v6.subnet),
        "Autonomous address conf.: Yes".into(),
        format!("Recursive DNS server : {gateway}"),
        "DNS search list : lab.test".into(),
        "Router lifetime : 1800 ".into(),
        "MTU : 1500 bytes".into(),
    ] {
        assert!(ra.contains(&line), "{line:?} in {ra}");
    }

    assert!(ping6(vm.ns(), &gateway.to_string()), "{}", d.log());
    // The default route's next hop, the router's link-local address, answers too.
    let routes = vm.ns().exec_ok(&["ip", "-6", "route", "show", "default"]);
    let next_hop = routes.split_whitespace().skip_while(|w| *w != "via").nth(1);
    let next_hop = next_hop.unwrap_or_else(|| panic!("{routes}"));
    assert!(ping6(vm.ns(), &format!("{next_hop}%{}", vm.ifname())));
    // And the VM's own address is in the vnet's prefix, reachable from its peers.
    assert!(v6.subnet.contains(&address));

    for counter in ["rs_answered", "ra_sent", "ns_answered", "echo_answered"] {
        let value = metric(&d, &format!("vnet_ra_{counter}_total"), &net);
        assert!(value >= 1, "vnet_ra_{counter}_total = {value}");
    }
    let shown = d.cli_ok(&["net", "show", &net]);
    let shown = shown.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        shown.contains(&format!("subnet6 {} (from the name)", v6.subnet)),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("router {gateway} for 1800 s")),
        "{shown}"
    );
}

#[test]
fn a_host_only_vnet_announces_no_router_and_its_vms_reach_the_host_adapter() {
    skip_unless_root!();
    let net = unique_name("v6h");
    let n = octet(2);
    let d = Daemon::start(Some(&format!(
        "[[network]]\nname = \"{net}\"\nsubnet = \"10.212.{n}.0/24\"\nhost_adapter = {{}}\ndhcp = {{}}\n"
    )));
    let info = client(&d).network(&net).unwrap();
    let v6 = info.ipv6.clone().expect("IPv6");
    assert_eq!((v6.router, v6.router_lifetime_secs), (None, 0));
    let adapter = info.host_adapter.expect("host adapter (root)");
    let host6 = adapter.address6.expect("the host adapter's IPv6 address");
    assert_eq!(host6, vnet_control::ipv6::nth6(v6.subnet, 1));
    // The host keeps its own routing: no RA heeded, no forwarding from the vnet.
    let sysctl = |key: &str| {
        std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{}/{key}", adapter.name))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(
        (sysctl("accept_ra"), sysctl("forwarding")),
        ("0".into(), "0".into())
    );

    let (_, vm) = tap_vm(&d, &net, "52:54:00:12:00:01", "");
    vm.enable_slaac();
    slaac_address(&vm, v6.subnet, &d);
    let ra = vm.rdisc6(T);
    assert!(ra.contains("Router lifetime : 0 "), "{ra}");
    assert!(!ra.contains("Recursive DNS server"), "{ra}");
    assert!(ping6(vm.ns(), &host6.to_string()), "{}", d.log());
    let routes = vm.ns().exec_ok(&["ip", "-6", "route", "show", "default"]);
    assert!(routes.trim().is_empty(), "no default route: {routes}");
    // A live change of the DHCP domain is the RA's search list at once.
    d.cli_ok(&["dhcp", "set", &net, "--domain", "live.test"]);
    let ra = vm.rdisc6(T);
    assert!(ra.contains("DNS search list : live.test"), "{ra}");
    let host_routes = std::process::Command::new("ip")
        .args(["-6", "route", "show", "dev", &adapter.name])
        .output()
        .unwrap();
    let host_routes = String::from_utf8_lossy(&host_routes.stdout);
    assert!(!host_routes.contains("default"), "{host_routes}");
    assert!(metric(&d, "vnet_ra_rs_answered_total", &net) >= 1);
}

#[test]
fn the_default_prefix_is_the_names_across_restarts_and_a_given_one_is_kept() {
    skip_unless_root!();
    let (a, b) = (unique_name("v6a"), unique_name("v6b"));
    let mut d = Daemon::start(Some(&format!(
        "[[network]]\nname = \"{a}\"\nsubnet = \"10.213.{}.0/24\"\ndhcp = {{}}\n",
        octet(3)
    )));
    let mut spec = NetworkSpec::named(b.clone());
    spec.subnet = Some(format!("10.214.{}.0/24", octet(4)).parse().unwrap());
    spec.dhcp = Some(Default::default());
    spec.subnet6 = Some("fd42:1:2:3::/64".parse().unwrap());
    client(&d).create_network(&spec).unwrap();
    let c = unique_name("v6c");
    d.cli_ok(&[
        "net",
        "create",
        &c,
        "--subnet",
        "10.215.1.0/24",
        "--dhcp",
        "--no-ipv6",
    ]);
    let before = (ipv6_of(&d, &a), ipv6_of(&d, &b));
    assert_ne!(before.0.subnet, before.1.subnet);
    assert!(before.0.derived && !before.1.derived);
    assert!(client(&d).network(&c).unwrap().ipv6.is_none());

    d.restart();
    let after = (ipv6_of(&d, &a), ipv6_of(&d, &b));
    assert_eq!(after.0.subnet, before.0.subnet, "the ULA is stable");
    assert_eq!(after.1.subnet, "fd42:1:2:3::/64".parse().unwrap(), "saved");
    assert!(client(&d).network(&c).unwrap().ipv6.is_none(), "still off");
    let exported = d.cli_ok(&["config", "export"]);
    assert!(
        exported.contains("subnet6 = \"fd42:1:2:3::/64\""),
        "{exported}"
    );
    assert!(exported.contains("ipv6 = false"), "{exported}");

    // DHCP turned on live gives a vnet its IPv6 and its router.
    let e = unique_name("v6e");
    d.cli_ok(&["net", "create", &e, "--subnet", "10.215.2.0/24"]);
    assert!(client(&d).network(&e).unwrap().ipv6.is_none());
    d.cli_ok(&["dhcp", "set", &e, "--on"]);
    let v6 = ipv6_of(&d, &e);
    assert_eq!(v6.subnet, vnet_control::ipv6::ula_prefix(&e));
    assert!(v6.counters.is_some(), "the router runs: {v6:?}");

    let bad = d.cli(&["net", "create", "bad6", "--subnet6", "fd00::/48"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("must be a /64"),
        "{err}"
    );
}

/// A namespace VM on a TAP port of `net` with `cidr6` (VLAN `vlan`), IPv6 on.
fn v6_vm(d: &Daemon, net: &str, mac: &str, cidr6: &str, vlan: VlanMode) -> NsVm {
    let ifname = unique_name("vt");
    client(d)
        .add_port(
            net,
            &PortSpec::Tap {
                ifname: ifname.clone(),
                vlan,
                policy: Default::default(),
            },
        )
        .unwrap_or_else(|e| panic!("adding TAP {ifname}: {e}\n{}", d.log()));
    let vm = NsVm::attach(&ifname, mac, "");
    static_ipv6(vm.ns(), &ifname, cidr6);
    vm
}

#[test]
fn bridged_and_vlan_vnets_carry_guests_ipv6() {
    skip_unless_root!();
    // Bridged: a LAN namespace behind a veth.
    let mut lan_cable = Veth::new();
    let lan = Netns::new("lan");
    lan_cable.move_b(&lan);
    static_ipv6(&lan, lan_cable.b(), "fd00:84::1/64");
    // VLANs with vnets (this host kernel has no 8021q): one cable whose end `a` is VLAN
    // 10 of vnet v10 and whose end `b` is the trunk of vnet far, where a VM sits on an
    // access port of VLAN 10.
    let cable = Veth::new();
    let (br, v10, far, inner) = (
        unique_name("br6"),
        unique_name("vl6"),
        unique_name("fr6"),
        unique_name("in6"),
    );
    let d = Daemon::start(Some(&format!(
        "[[network]]\nname = \"{br}\"\nuplink = {{ interface = \"{}\" }}\n\
         [[network]]\nname = \"{v10}\"\nuplink = {{ interface = \"{}\", vlan = 10 }}\n\
         [[network]]\nname = \"{far}\"\n\
         uplink = {{ interface = \"{}\", mode = \"trunk\", vlans = [10] }}\n\
         [[network]]\nname = \"{inner}\"\n",
        lan_cable.a(),
        cable.a(),
        cable.b()
    )));
    let vm = v6_vm(
        &d,
        &br,
        "52:54:00:13:00:01",
        "fd00:84::10/64",
        VlanMode::default(),
    );
    assert!(ping6(vm.ns(), "fd00:84::1"), "{}", d.log());
    assert!(ping6(&lan, "fd00:84::10"));
    // A bridged vnet has no IPv6 of its own: the LAN's routers serve it.
    assert!(client(&d).network(&br).unwrap().ipv6.is_none());

    let access = |vlan| VlanMode::Access { vlan };
    let near = v6_vm(
        &d,
        &v10,
        "52:54:00:13:00:02",
        "fd00:10::2/64",
        VlanMode::default(),
    );
    let across = v6_vm(&d, &far, "52:54:00:13:00:03", "fd00:10::3/64", access(10));
    assert!(ping6(near.ns(), "fd00:10::3"), "{}", d.log());
    assert!(ping6(across.ns(), "fd00:10::2"));

    // VLANs inside a vnet: two access ports on VLAN 20; one on VLAN 30 must not reach
    // them.
    let a = v6_vm(&d, &inner, "52:54:00:13:00:04", "fd00:20::4/64", access(20));
    let b = v6_vm(&d, &inner, "52:54:00:13:00:05", "fd00:20::5/64", access(20));
    let c = v6_vm(&d, &inner, "52:54:00:13:00:06", "fd00:20::6/64", access(30));
    assert!(ping6(a.ns(), "fd00:20::5"));
    assert!(ping6(b.ns(), "fd00:20::4"));
    let leak = c
        .ns()
        .exec(&["ping", "-6", "-c", "2", "-W", "1", "fd00:20::4"]);
    assert!(!leak.status.success(), "VLAN 30 reached VLAN 20");
}

#[test]
fn a_qemu_guest_autoconfigures_and_pings_the_gateway() {
    skip_unless_root!();
    let net = unique_name("v6q");
    let n = octet(5);
    let d = Daemon::start(Some(&format!(
        "[[network]]\nname = \"{net}\"\nsubnet = \"10.216.{n}.0/24\"\nnat = {{}}\n"
    )));
    let v6 = ipv6_of(&d, &net);
    let gateway = v6.router.unwrap();
    let g = Guest::builder()
        .name("slaac")
        .ipv6(true)
        .nic_with_mac(
            Netdev::Stream {
                path: d.net_dir(&net).join("stream.sock"),
            },
            "52:54:00:14:00:01",
        )
        .boot()
        .expect("guest boots");
    // The guest's kernel does SLAAC itself; the address appears once DAD is over.
    let prefix = v6.subnet.network().segments();
    let shown = format!("{:x}:{:x}:{:x}:", prefix[0], prefix[1], prefix[2]);
    let mut addrs = String::new();
    let ok = wait_for(T, || {
        addrs = g.exec_ok("ip -6 addr show dev eth0 scope global", T);
        addrs.contains(&shown) && !addrs.contains("tentative")
    });
    assert!(
        ok,
        "no SLAAC address in {}: {addrs}\n{}",
        v6.subnet,
        d.log()
    );
    let routes = g.exec_ok("ip -6 route", T);
    assert!(routes.contains("default via fe80::"), "{routes}");
    g.exec_ok(&format!("ping -6 -c 3 -W 3 {gateway}"), T);
}
