//! Bridged uplinks end to end: a vnet joined to a host NIC (one end of a veth pair whose
//! other end is a "LAN" namespace with its own DHCP server), and vnets mapped to VLANs
//! of one NIC sharing its AF_PACKET socket.

use std::path::Path;
use std::time::Duration;

use vnet_control::{NetworkSpec, PortKind, UplinkMode, UplinkSpec, VlanMode};
use vnet_testbed::api::{cli_fails, client, find_kind, tap_vm};
use vnet_testbed::{
    api, skip_unless_root, unique_name, wait_for, Daemon, Guest, Netdev, Netns, Veth,
};

const T: Duration = Duration::from_secs(60);

/// How many AF_PACKET sockets are bound to `ifname` (all processes).
fn packet_sockets_on(ifname: &str) -> usize {
    let index = std::fs::read_to_string(format!("/sys/class/net/{ifname}/ifindex"))
        .unwrap()
        .trim()
        .to_string();
    // sk RefCnt Type Proto Iface R Rmem User Inode
    std::fs::read_to_string("/proc/net/packet")
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| l.split_whitespace().nth(4) == Some(index.as_str()))
        .count()
}

/// A "LAN": a namespace behind one end of a veth pair, with `cidr` on its end (the
/// returned name); the other end, `veth.a()`, is the NIC to bridge.
fn lan_behind_veth(cidr: &str) -> (Veth, Netns, String) {
    let mut veth = Veth::new();
    let lan = Netns::new("lan");
    veth.move_b(&lan);
    let lan_if = veth.b().to_string();
    lan.exec_ok(&["ip", "addr", "add", cidr, "dev", &lan_if]);
    (veth, lan, lan_if)
}

fn macs_in(capture: &Path) -> String {
    let out = std::process::Command::new("tcpdump")
        .args(["-n", "-e", "-r"])
        .arg(capture)
        .output()
        .expect("tcpdump runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_guest_on_a_bridged_vnet_gets_its_lease_from_the_lan_and_survives_the_nic_flapping() {
    skip_unless_root!();
    // The LAN: a namespace behind a veth, with dnsmasq as its DHCP server.
    let (veth, lan, lan_if) = lan_behind_veth("10.84.0.1/24");
    let leases = std::env::temp_dir().join(format!("{}.leases", unique_name("dnsm")));
    let _dnsmasq = lan.spawn(&[
        "dnsmasq",
        "--no-daemon",
        "--conf-file=/dev/null",
        "--port=0",
        "--bind-interfaces",
        &format!("--interface={lan_if}"),
        "--dhcp-range=10.84.0.100,10.84.0.150,255.255.255.0,1h",
        &format!("--dhcp-leasefile={}", leases.display()),
        "--pid-file=",
    ]);
    let capture = std::env::temp_dir().join(format!("{}.pcap", unique_name("lan")));
    let mut tcpdump = lan.spawn(&[
        "tcpdump",
        "-i",
        &lan_if,
        "-n",
        "-U",
        "-w",
        &capture.to_string_lossy(),
    ]);

    let nic = veth.a().to_string();
    let d = Daemon::start(Some(&format!(
        "[[network]]\nname = \"br\"\nuplink = {{ interface = \"{nic}\" }}\n"
    )));
    let uplink = find_kind(&d, "br", PortKind::Uplink)
        .unwrap_or_else(|| panic!("no uplink port\n{}", d.log()));
    assert!(uplink.description.contains(&nic), "{uplink:?}");
    assert_eq!(packet_sockets_on(&nic), 1);
    let info = client(&d).network("br").unwrap();
    assert_eq!(info.uplink.map(|u| u.interface), Some(nic.clone()));
    let shown = d.cli_ok(&["net", "show", "br"]);
    assert!(
        shown.contains(&format!("uplink         {nic}\n")),
        "{shown}"
    );

    let mac = "52:54:00:00:84:01";
    let g = Guest::builder()
        .name("bridged")
        .nic_with_mac(
            Netdev::Stream {
                path: d.net_dir("br").join("stream.sock"),
            },
            mac,
        )
        .boot()
        .expect("guest boots");
    let lease = g
        .dhcp("eth0", "")
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    let ip = lease.ip().expect("leased address").to_string();
    assert!(ip.starts_with("10.84.0.1"), "{ip} from dnsmasq's range");
    g.exec_ok("ping -c 3 -W 3 10.84.0.1", T);
    assert!(
        lan.exec(&["ping", "-c", "2", "-W", "2", &ip])
            .status
            .success(),
        "the LAN reaches the guest"
    );
    let held = std::fs::read_to_string(&leases).unwrap_or_default();
    assert!(
        held.contains(mac),
        "dnsmasq leased to the guest's MAC: {held}"
    );

    // The NIC goes down and comes back: the vnet keeps running and resumes.
    let host_if = |state: &str| {
        let ok = std::process::Command::new("ip")
            .args(["link", "set", &nic, state])
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip link set {nic} {state}");
    };
    host_if("down");
    assert!(!matches!(g.exec("ping -c 1 -W 1 10.84.0.1", T), Ok((0, _))));
    host_if("up");
    assert!(
        wait_for(T, || matches!(
            g.exec("ping -c 1 -W 2 10.84.0.1", T),
            Ok((0, _))
        )),
        "the uplink resumed\n{}",
        d.log()
    );
    assert!(d.is_running());
    let p = find_kind(&d, "br", PortKind::Uplink).unwrap();
    assert!(
        p.counters.rx_frames > 0 && p.counters.tx_frames > 0,
        "{p:?}"
    );

    tcpdump.terminate(Duration::from_secs(5));
    let seen = macs_in(&capture);
    let _ = std::fs::remove_file(&capture);
    let _ = std::fs::remove_file(&leases);
    assert!(
        seen.contains(mac),
        "the LAN sees the guest's own MAC:\n{seen}"
    );

    // Unbridged live: the LAN is out of reach, the uplink socket closed.
    d.cli_ok(&["uplink", "rm", "br"]);
    assert!(find_kind(&d, "br", PortKind::Uplink).is_none());
    assert_eq!(packet_sockets_on(&nic), 0);
    assert_eq!(client(&d).network("br").unwrap().uplink, None);
    assert!(!matches!(g.exec("ping -c 1 -W 1 10.84.0.1", T), Ok((0, _))));
}

fn uplink(interface: &str, vlan: Option<u16>, trunk: &[u16]) -> UplinkSpec {
    UplinkSpec {
        vxlan: None,
        interface: interface.to_string(),
        vlan,
        mode: if trunk.is_empty() {
            UplinkMode::Access
        } else {
            UplinkMode::Trunk
        },
        vlans: trunk.to_vec(),
    }
}

#[test]
fn vnets_on_vlans_of_one_nic_share_its_socket_and_reach_their_vlan_only() {
    skip_unless_root!();
    // One cable: `a` carries VLANs 10 and 20 for two vnets, `b` is a trunk into the
    // vnet of a guest that does its own 802.1Q.
    let veth = Veth::new();
    let (a, b) = (veth.a().to_string(), veth.b().to_string());
    let d = api::daemon_with(&["v10", "far"]);
    let c = client(&d);
    // Through the CLI for one (live), the API for the others.
    d.cli_ok(&["uplink", "set", "v10", "--interface", &a, "--vlan", "10"]);
    let mut v20 = NetworkSpec::named("v20");
    v20.uplink = Some(uplink(&a, Some(20), &[]));
    c.create_network(&v20).unwrap();
    c.set_uplink("far", &uplink(&b, None, &[10, 20])).unwrap();
    let thread = |net: &str| c.network(net).unwrap().thread;
    assert_eq!(
        thread("v20"),
        thread("v10"),
        "placed with the NIC's other vnet"
    );
    assert_eq!(packet_sockets_on(&a), 1, "one socket for two vnets");
    assert_eq!(packet_sockets_on(&b), 1);
    // A VLAN taken by another vnet is refused, whichever thread runs the two.
    let e = cli_fails(
        &d,
        &["uplink", "set", "far", "--interface", &a, "--vlan", "20"],
    );
    assert!(e.contains("v20"), "{e}");
    let mut clash = NetworkSpec::named("v20b");
    clash.uplink = Some(uplink(&a, Some(20), &[]));
    assert!(c.create_network(&clash).is_err());
    assert!(c.network("v20b").is_err(), "a refused vnet leaves nothing");
    c.create_network(&NetworkSpec::named("v20b"))
        .expect("the refused vnet's name is free again");

    let (_, vm10) = tap_vm(&d, "v10", "02:00:00:00:85:10", "10.85.10.2/24");
    let (_, vm20) = tap_vm(&d, "v20", "02:00:00:00:85:20", "10.85.20.2/24");
    // On vnet v20 (VLAN 20) with a VLAN-10 address: VLAN 10 must not reach it.
    vm20.ns()
        .exec_ok(&["ip", "addr", "add", "10.85.10.9/24", "dev", vm20.ifname()]);

    let g = Guest::builder()
        .name("far")
        .nic_with_mac(
            Netdev::Stream {
                path: d.net_dir("far").join("stream.sock"),
            },
            "52:54:00:00:85:01",
        )
        .boot()
        .expect("guest boots");
    let gp = find_kind(&d, "far", PortKind::Stream).unwrap();
    let mode = VlanMode::Trunk {
        allowed: vec![10, 20],
        native: None,
    };
    c.set_port_vlan("far", gp.id, &mode).unwrap();
    g.exec_ok(
        "set -e; ip link set eth0 up; \
         ip link add link eth0 name eth0.10 type vlan id 10; \
         ip addr add 10.85.10.1/24 dev eth0.10; ip link set eth0.10 up; \
         ip link add link eth0 name eth0.20 type vlan id 20; \
         ip addr add 10.85.20.1/24 dev eth0.20; ip link set eth0.20 up",
        T,
    );
    let pings = |ip: &str| matches!(g.exec(&format!("ping -c 2 -W 2 {ip}"), T), Ok((0, _)));
    assert!(pings("10.85.10.2"), "VLAN 10 → vnet v10\n{}", d.log());
    assert!(pings("10.85.20.2"), "VLAN 20 → vnet v20\n{}", d.log());
    assert!(vm10.ping("10.85.10.1", 2));
    assert!(vm20.ping("10.85.20.1", 2));
    assert!(!pings("10.85.10.9"), "VLAN 10 reached vnet v20");

    // Unbridging one vnet keeps the other on the shared socket.
    c.remove_uplink("v10").unwrap();
    assert_eq!(packet_sockets_on(&a), 1);
    assert!(!pings("10.85.10.2"));
    assert!(pings("10.85.20.2"));
    c.delete_network("v20").unwrap();
    assert!(wait_for(T, || packet_sockets_on(&a) == 0));
}

/// VMware's "secure networking with 2 NICs": a firewall guest with one NIC on a bridged
/// vnet and one on an inside vnet that has no other way out. The inside VM reaches the
/// LAN only through it, as its rules allow, and not at all once it stops.
#[test]
fn a_two_nic_firewall_guest_is_the_inside_vms_only_way_to_the_lan() {
    skip_unless_root!();
    let (veth, lan, lan_if) = lan_behind_veth("10.86.0.1/24");
    lan.exec_ok(&["ip", "addr", "add", "10.86.0.99/24", "dev", &lan_if]);
    lan.exec_ok(&["ip", "route", "add", "10.87.0.0/24", "via", "10.86.0.254"]);

    let nic = veth.a().to_string();
    let d = Daemon::start(Some(&format!(
        "[[network]]\nname = \"outside\"\nuplink = {{ interface = \"{nic}\" }}\n\n\
         [[network]]\nname = \"inside\"\n"
    )));
    let (_, vm) = tap_vm(&d, "inside", "02:00:00:00:87:02", "10.87.0.2/24");
    vm.ns()
        .exec_ok(&["ip", "route", "add", "default", "via", "10.87.0.1"]);
    assert!(!vm.ping("10.86.0.1", 1), "no way out without the firewall");

    let fw = Guest::builder()
        .name("firewall")
        .nic_with_mac(
            Netdev::Stream {
                path: d.net_dir("outside").join("stream.sock"),
            },
            "52:54:00:00:86:fe",
        )
        .static_ip(0, "10.86.0.254/24")
        .nic_with_mac(
            Netdev::Stream {
                path: d.net_dir("inside").join("stream.sock"),
            },
            "52:54:00:00:87:01",
        )
        .static_ip(1, "10.87.0.1/24")
        .boot()
        .expect("firewall guest boots");
    // The rule set: forward, but never to the LAN's 10.86.0.99.
    fw.exec_ok(
        "set -e; echo 1 > /proc/sys/net/ipv4/ip_forward; \
         ip route add prohibit 10.86.0.99/32",
        T,
    );
    assert!(
        wait_for(T, || vm.ping("10.86.0.1", 1)),
        "inside VM → LAN through the firewall\n{}",
        d.log()
    );
    assert!(!vm.ping("10.86.0.99", 1), "the rule set refuses 10.86.0.99");
    assert!(
        lan.exec(&["ping", "-c", "1", "-W", "2", "10.87.0.2"])
            .status
            .success(),
        "the LAN reaches the inside VM through the firewall"
    );

    drop(fw);
    assert!(
        wait_for(Duration::from_secs(10), || find_kind(
            &d,
            "inside",
            PortKind::Stream
        )
        .is_none()),
        "the firewall's ports close with it"
    );
    assert!(
        !vm.ping("10.86.0.1", 2),
        "no way out once the firewall stopped"
    );
}

#[test]
fn the_uplink_keeps_the_nics_mtu_and_refuses_unknown_interfaces() {
    skip_unless_root!();
    let (veth, lan, lan_if) = lan_behind_veth("10.88.0.1/24");
    lan.exec_ok(&["ip", "link", "set", &lan_if, "mtu", "1400"]);
    let nic = veth.a().to_string();
    let ok = std::process::Command::new("ip")
        .args(["link", "set", &nic, "mtu", "1400"])
        .status()
        .unwrap()
        .success();
    assert!(ok);

    let d = api::daemon_with(&["br"]);
    let c = client(&d);
    let e = c
        .set_uplink("br", &uplink("nosuchnic0", None, &[]))
        .unwrap_err();
    assert!(e.to_string().contains("no interface"), "{e}");
    assert_eq!(e.status().map(|s| s.as_u16()), Some(400));
    let port = c.set_uplink("br", &uplink(&nic, None, &[])).unwrap();
    assert_eq!(port.kind, PortKind::Uplink);

    let (_, vm) = tap_vm(&d, "br", "02:00:00:00:88:02", "10.88.0.2/24");
    assert!(vm.ping("10.88.0.1", 2), "small frames pass\n{}", d.log());
    // 1450 bytes of ICMP payload make a 1492-byte frame: more than the NIC takes.
    let big = vm.ns().exec(&[
        "ping",
        "-c",
        "2",
        "-W",
        "1",
        "-s",
        "1450",
        "-M",
        "do",
        "10.88.0.1",
    ]);
    assert!(
        !big.status.success(),
        "a frame over the NIC's MTU got through"
    );
    let p = api::port(&d, "br", port.id);
    assert!(api::drops(&p, "oversize") >= 1, "{p:?}");
    assert!(vm.ping("10.88.0.1", 1), "the uplink still works");
}

/// Vnets on different data-plane threads bridged live to one NIC: each thread opens its
/// own socket on it, and the claims still keep their traffic apart.
#[test]
fn vnets_on_two_threads_bridged_to_one_nic_each_take_only_their_traffic() {
    skip_unless_root!();
    let (veth, lan, lan_if) = lan_behind_veth("10.89.0.1/24");
    let nic = veth.a().to_string();
    let d = Daemon::start(Some(
        "threads = 2\n[[network]]\nname = \"plain\"\n[[network]]\nname = \"tagged\"\n",
    ));
    let c = client(&d);
    let thread = |net: &str| c.network(net).unwrap().thread;
    assert_ne!(
        thread("plain"),
        thread("tagged"),
        "two vnets spread over two threads"
    );
    c.set_uplink("plain", &uplink(&nic, None, &[])).unwrap();
    c.set_uplink("tagged", &uplink(&nic, Some(10), &[]))
        .unwrap();
    assert_eq!(packet_sockets_on(&nic), 2, "one socket per thread");
    let e = c
        .set_uplink("tagged", &uplink(&nic, None, &[]))
        .unwrap_err();
    assert!(e.to_string().contains("plain"), "{e}");

    let (_, vm) = tap_vm(&d, "plain", "02:00:00:00:89:02", "10.89.0.2/24");
    let (_, other) = tap_vm(&d, "tagged", "02:00:00:00:89:03", "10.89.0.3/24");
    assert!(vm.ping("10.89.0.1", 2), "the untagged LAN\n{}", d.log());
    assert!(
        !other.ping("10.89.0.1", 1),
        "VLAN 10's vnet reached the untagged LAN"
    );
    let lan_mac = lan.exec_ok(&["cat", &format!("/sys/class/net/{lan_if}/address")]);
    let learned = |net: &str| {
        c.macs(net)
            .unwrap()
            .iter()
            .any(|m| m.mac.to_string() == lan_mac.trim())
    };
    assert!(learned("plain"));
    assert!(
        !learned("tagged"),
        "the untagged LAN's frames leaked into VLAN 10's vnet"
    );

    // Unbridging one thread's vnet closes only its socket.
    c.remove_uplink("plain").unwrap();
    assert!(wait_for(T, || packet_sockets_on(&nic) == 1));
    c.remove_uplink("tagged").unwrap();
    assert!(wait_for(T, || packet_sockets_on(&nic) == 0));
}
