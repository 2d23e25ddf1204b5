//! VXLAN uplinks end to end. Each "host" is a network namespace with one leg on an
//! underlay (a Linux bridge in a namespace of its own, joined by veth pairs); vnetd
//! runs inside a host's namespace, its VMs are namespaces on TAP ports. The other side
//! is another vnetd, or Linux's own `vxlan` device bridged to a namespace VM.

use std::time::Duration;

use vnet_control::{FdbEntry, PortInfo};
use vnet_testbed::api::{client, tap_vm_in};
use vnet_testbed::{skip_unless_root, wait_for, Daemon, Netns, NsVm, Veth};

const T: Duration = Duration::from_secs(60);
/// The vnets' MTU: 1500 on the underlay, less 50 bytes of VXLAN over IPv4.
const MTU: u32 = 1450;

/// The underlay: a bridge in a namespace of its own that every host's veth joins.
struct Underlay {
    ns: Netns,
}

impl Underlay {
    fn new() -> Underlay {
        let ns = Netns::new("ul");
        ns.exec_ok(&["ip", "link", "add", "br0", "type", "bridge"]);
        ns.exec_ok(&["ip", "link", "set", "br0", "up"]);
        Underlay { ns }
    }

    /// A host with underlay addresses `v4` (in 10.77.0.0/24) and `v6` (fd77::/64).
    fn host(&self, n: u8) -> Host {
        let ns = Netns::new("hst");
        let mut leg = Veth::new();
        leg.move_a(&ns);
        leg.move_b(&self.ns);
        self.ns
            .exec_ok(&["ip", "link", "set", leg.b(), "master", "br0"]);
        let v4 = format!("10.77.0.{n}");
        let v6 = format!("fd77::{n}");
        ns.exec_ok(&["ip", "addr", "add", &format!("{v4}/24"), "dev", leg.a()]);
        ns.exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{v6}/64"),
            "dev",
            leg.a(),
            "nodad",
        ]);
        Host { ns, leg, v4, v6 }
    }
}

/// One machine on the underlay.
struct Host {
    ns: Netns,
    leg: Veth,
    v4: String,
    v6: String,
}

impl Host {
    fn ifname(&self) -> &str {
        self.leg.a()
    }

    /// vnetd in this host's namespace with `toml` as its config.
    fn vnetd(&self, toml: &str) -> Daemon {
        Daemon::builder().netns(&self.ns).config(toml).start()
    }
}

/// A config with vnet `net` on VNI 100 from `local` to `remotes`.
fn vxlan_config(net: &str, mtu: u32, local: &str, remotes: &[&str]) -> String {
    let remotes: Vec<String> = remotes.iter().map(|r| format!("\"{r}\"")).collect();
    format!(
        "[[network]]\nname = \"{net}\"\nmtu = {mtu}\nuplink = {{ vxlan = {{ vni = 100, local = \"{local}\", remotes = [{}] }} }}\n",
        remotes.join(", ")
    )
}

/// A namespace VM on a TAP port of `net` that vnetd (in `host`) made, with `mtu`.
fn vm(d: &Daemon, host: &Host, net: &str, mac: &str, cidr: &str, mtu: u32) -> NsVm {
    let (_, vm) = tap_vm_in(d, Some(&host.ns), net, mac, cidr);
    vm.ns().exec_ok(&[
        "ip",
        "link",
        "set",
        "dev",
        vm.ifname(),
        "mtu",
        &mtu.to_string(),
    ]);
    vm
}

/// The vnet's VXLAN uplink port.
fn uplink(d: &Daemon, net: &str) -> PortInfo {
    client(d)
        .ports(net)
        .unwrap()
        .into_iter()
        .find(|p| p.vxlan.is_some())
        .unwrap_or_else(|| panic!("{net} has no VXLAN port:\n{}", d.log()))
}

fn fdb(d: &Daemon, net: &str) -> Vec<FdbEntry> {
    client(d).fdb(net).unwrap()
}

fn pings(from: &NsVm, to: &str) -> bool {
    wait_for(T, || from.ping(to, 1))
}

/// Moves `bytes` over TCP from `client` to `server` and back (iperf3 both ways).
fn tcp_both_ways(client_vm: &NsVm, server: &NsVm) {
    let _iperf = server.ns().spawn(&["iperf3", "-s"]);
    for reverse in [false, true] {
        let mut argv = vec!["iperf3", "-c", server.ip(), "-n", "2M", "-M", "1300"];
        if reverse {
            argv.push("-R");
        }
        let mut last = String::new();
        let ok = wait_for(T, || {
            let out = client_vm.ns().exec(&argv);
            last = String::from_utf8_lossy(&out.stderr).into_owned()
                + &String::from_utf8_lossy(&out.stdout);
            out.status.success()
        });
        assert!(ok, "TCP (reverse: {reverse}) failed: {last}");
    }
}

#[test]
fn a_vnet_and_a_kernel_vxlan_device_exchange_traffic_and_learn_each_others_macs() {
    skip_unless_root!();
    let ul = Underlay::new();
    let a = ul.host(1);
    let k = ul.host(2);
    // Host K: Linux's vxlan device on VNI 100, bridged to a namespace VM.
    k.ns.exec_ok(&[
        "ip",
        "link",
        "add",
        "vx0",
        "type",
        "vxlan",
        "id",
        "100",
        "remote",
        &a.v4,
        "local",
        &k.v4,
        "dstport",
        "4789",
        "dev",
        k.ifname(),
    ]);
    // A veth never fills in checksums: without this the kernel would hand the
    // encapsulated frames' TCP checksums to it still to be done (a real NIC does them).
    k.ns.exec_ok(&["ethtool", "-K", k.ifname(), "tx", "off"]);
    k.ns.exec_ok(&["ip", "link", "add", "br0", "type", "bridge"]);
    k.ns.exec_ok(&["ip", "link", "set", "vx0", "master", "br0"]);
    let mut kvm_leg = Veth::new();
    kvm_leg.move_b(&k.ns);
    k.ns.exec_ok(&["ip", "link", "set", kvm_leg.b(), "master", "br0"]);
    for dev in ["vx0", "br0"] {
        k.ns.exec_ok(&["ip", "link", "set", dev, "up"]);
    }
    let kvm = NsVm::attach(kvm_leg.a(), "52:54:00:77:00:02", "192.168.77.2/24");
    kvm.ns()
        .exec_ok(&["ip", "link", "set", "dev", kvm.ifname(), "mtu", "1450"]);

    let d = a.vnetd(&vxlan_config("ovl", MTU, &a.v4, &[&k.v4]));
    let avm = vm(&d, &a, "ovl", "52:54:00:77:00:01", "192.168.77.1/24", MTU);

    assert!(pings(&avm, kvm.ip()), "vnet → kernel:\n{}", d.log());
    assert!(pings(&kvm, avm.ip()), "kernel → vnet:\n{}", d.log());
    tcp_both_ways(&avm, &kvm);
    tcp_both_ways(&kvm, &avm);

    // vnet learned the kernel VM's MAC behind host K...
    let learned = fdb(&d, "ovl");
    assert!(
        learned
            .iter()
            .any(|e| e.mac.to_string() == kvm.mac() && e.remote.to_string() == k.v4 && !e.fixed),
        "{learned:?}"
    );
    let listed = d.cli_ok(&["fdb", "ls", "ovl"]);
    assert!(
        listed.contains(kvm.mac()) && listed.contains("learned"),
        "{listed}"
    );
    // ...and the kernel learned ours behind host A.
    let kernel = k.ns.exec_ok(&["bridge", "fdb", "show", "dev", "vx0"]);
    assert!(
        kernel
            .lines()
            .any(|l| l.starts_with(avm.mac()) && l.contains(&format!("dst {}", a.v4))),
        "{kernel}"
    );
    // Both directions are counted on the remote.
    let info = uplink(&d, "ovl").vxlan.unwrap();
    let remote = &info.remotes[0];
    assert!(remote.rx_frames > 0 && remote.tx_frames > 0, "{info:?}");
}

#[test]
fn vnetd_hosts_and_a_kernel_vxlan_device_meet_on_a_multicast_group() {
    skip_unless_root!();
    let ul = Underlay::new();
    let (a, b, k) = (ul.host(1), ul.host(2), ul.host(3));
    let config = |local: &str| {
        format!(
            "[[network]]\nname = \"grp\"\nmtu = {MTU}\nuplink = {{ vxlan = {{ vni = 300, local = \"{local}\", group = \"239.1.1.1\" }} }}\n"
        )
    };
    let da = a.vnetd(&config(&a.v4));
    let db = b.vnetd(&config(&b.v4));
    k.ns.exec_ok(&[
        "ip",
        "link",
        "add",
        "vx0",
        "type",
        "vxlan",
        "id",
        "300",
        "group",
        "239.1.1.1",
        "local",
        &k.v4,
        "dstport",
        "4789",
        "dev",
        k.ifname(),
    ]);
    k.ns.exec_ok(&["ethtool", "-K", k.ifname(), "tx", "off"]);
    k.ns.exec_ok(&["ip", "addr", "add", "192.168.30.3/24", "dev", "vx0"]);
    k.ns.exec_ok(&["ip", "link", "set", "vx0", "up"]);
    let va = vm(&da, &a, "grp", "52:54:00:30:00:01", "192.168.30.1/24", MTU);
    let vb = vm(&db, &b, "grp", "52:54:00:30:00:02", "192.168.30.2/24", MTU);
    // ARP requests reach the others through the group; answers come back unicast.
    assert!(pings(&va, vb.ip()), "{}\n{}", da.log(), db.log());
    assert!(pings(&va, "192.168.30.3"), "{}", da.log());
    assert!(pings(&vb, "192.168.30.3"), "{}", db.log());
    let learned = fdb(&da, "grp");
    for remote in [&b.v4, &k.v4] {
        assert!(
            learned.iter().any(|e| e.remote.to_string() == **remote),
            "{learned:?}"
        );
    }
}

#[test]
fn two_vnetd_hosts_form_one_vnet_over_ipv6_and_a_third_joins_live() {
    skip_unless_root!();
    let ul = Underlay::new();
    let (a, b, c) = (ul.host(1), ul.host(2), ul.host(3));
    // IPv6 underlay: 70 bytes of headers.
    let mtu = 1430;
    let da = a.vnetd(&vxlan_config("ovl", mtu, &a.v6, &[&b.v6]));
    let db = b.vnetd(&vxlan_config("ovl", mtu, &b.v6, &[&a.v6]));
    let va = vm(&da, &a, "ovl", "52:54:00:66:00:01", "192.168.66.1/24", mtu);
    let vb = vm(&db, &b, "ovl", "52:54:00:66:00:02", "192.168.66.2/24", mtu);
    assert!(pings(&va, vb.ip()), "A → B:\n{}\n{}", da.log(), db.log());
    tcp_both_ways(&va, &vb);

    // Host C comes up knowing A and B; A and B learn of C through the API.
    let dc = c.vnetd(&vxlan_config("ovl", mtu, &c.v6, &[&a.v6, &b.v6]));
    let vc = vm(&dc, &c, "ovl", "52:54:00:66:00:03", "192.168.66.3/24", mtu);
    da.cli_ok(&["uplink", "remote", "add", "ovl", &c.v6]);
    client(&db)
        .add_remote("ovl", c.v6.parse().unwrap())
        .unwrap();
    for (from, to) in [(&vc, &va), (&vc, &vb), (&va, &vc), (&vb, &vc)] {
        assert!(
            pings(from, to.ip()),
            "{} → {}:\n{}\n{}\n{}",
            from.ip(),
            to.ip(),
            da.log(),
            db.log(),
            dc.log()
        );
    }
    let remotes: Vec<String> = uplink(&da, "ovl")
        .vxlan
        .unwrap()
        .remotes
        .iter()
        .map(|r| r.address.to_string())
        .collect();
    assert_eq!(remotes, [b.v6.clone(), c.v6.clone()]);
    // The remote added live is saved: the exported config lists it.
    let exported = da.cli_ok(&["config", "export"]);
    assert!(exported.contains(&c.v6), "{exported}");

    // A static entry pins a MAC; it shows, and goes.
    da.cli_ok(&["fdb", "add", "ovl", "02:00:00:00:00:99", &b.v6]);
    let rows = fdb(&da, "ovl");
    assert!(rows
        .iter()
        .any(|e| e.mac.to_string() == "02:00:00:00:00:99" && e.fixed));
    da.cli_ok(&["fdb", "rm", "ovl", "02:00:00:00:00:99"]);
    assert!(!fdb(&da, "ovl").iter().any(|e| e.fixed));

    // Removing C on A: A's VM no longer reaches C's, B's still does.
    da.cli_ok(&["uplink", "remote", "rm", "ovl", &c.v6]);
    assert!(!fdb(&da, "ovl").iter().any(|e| e.remote.to_string() == c.v6));
    assert!(
        !va.ping(vc.ip(), 2),
        "A still reaches C without it as a remote"
    );
    assert!(pings(&vb, vc.ip()));
}

#[test]
fn two_vnets_on_one_socket_are_told_apart_by_vni() {
    skip_unless_root!();
    let ul = Underlay::new();
    let (a, b) = (ul.host(1), ul.host(2));
    let config = |local: &str, remote: &str| {
        vxlan_config("red", MTU, local, &[remote])
            + &vxlan_config("blue", MTU, local, &[remote]).replace("vni = 100", "vni = 200")
    };
    let da = a.vnetd(&config(&a.v4, &b.v4));
    let db = b.vnetd(&config(&b.v4, &a.v4));
    // One socket: both uplinks name it, and both vnets run on its thread.
    let (red, blue) = (uplink(&da, "red"), uplink(&da, "blue"));
    assert_eq!(red.vxlan.unwrap().socket, blue.vxlan.unwrap().socket);
    let thread = |net: &str| client(&da).network(net).unwrap().thread;
    assert_eq!(thread("red"), thread("blue"));
    // The same addresses on both vnets: each VM reaches only its own vnet's peer.
    let ra = vm(&da, &a, "red", "52:54:00:22:00:01", "192.168.22.1/24", MTU);
    let rb = vm(&db, &b, "red", "52:54:00:22:00:02", "192.168.22.2/24", MTU);
    let ba = vm(&da, &a, "blue", "52:54:00:22:01:01", "192.168.22.1/24", MTU);
    let bb = vm(&db, &b, "blue", "52:54:00:22:01:02", "192.168.22.2/24", MTU);
    assert!(pings(&ra, rb.ip()) && pings(&ba, bb.ip()));
    let arp = |vm: &NsVm| vm.ns().exec_ok(&["ip", "neigh", "show", "192.168.22.2"]);
    assert!(arp(&ra).contains(rb.mac()), "{}", arp(&ra));
    assert!(arp(&ba).contains(bb.mac()), "{}", arp(&ba));
    // A VNI another vnet has on this socket is refused.
    let err = vnet_testbed::api::cli_fails(
        &da,
        &["uplink", "set", "blue", "--vxlan", "100", "--local", &a.v4],
    );
    assert!(err.contains("VNI 100") && err.contains("red"), "{err}");
    // Blue leaves the socket; red keeps it.
    da.cli_ok(&["uplink", "rm", "blue"]);
    assert!(uplink_absent(&da, "blue"));
    let err = vnet_testbed::api::cli_fails(&da, &["fdb", "ls", "blue"]);
    assert!(err.contains("no VXLAN uplink"), "{err}");
    assert!(pings(&ra, rb.ip()));
    assert!(!ba.ping(bb.ip(), 1));
}

#[test]
fn an_unprivileged_vnetd_carries_its_vnet_across_hosts() {
    skip_unless_root!();
    let ul = Underlay::new();
    let (a, b) = (ul.host(1), ul.host(2));
    let da = a.vnetd(&vxlan_config("ovl", MTU, &a.v4, &[&b.v4]));
    // Host B: an ordinary user's vnetd, no capability, serving DHCP on the vnet.
    let toml =
        vxlan_config("ovl", MTU, &b.v4, &[&a.v4]) + "subnet = \"192.168.33.0/24\"\ndhcp = {}\n";
    let db = Daemon::builder()
        .netns(&b.ns)
        .unprivileged(64990)
        .config(&toml)
        .start();
    let status = std::fs::read_to_string(format!("/proc/{}/status", db.pid().unwrap())).unwrap();
    assert!(
        status.contains("Uid:\t64990") && status.contains("CapEff:\t0000000000000000"),
        "{status}"
    );
    // A's VM gets its address from B's DHCP service, across the tunnel.
    let va = vm(&da, &a, "ovl", "52:54:00:33:00:01", "", MTU);
    let lease = va
        .dhcp(&[])
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", da.log(), db.log()));
    assert!(
        lease.ip().is_some_and(|ip| ip.starts_with("192.168.33.")),
        "{lease:?}"
    );
}

#[test]
fn a_remote_that_disappears_and_comes_back_is_reached_again() {
    skip_unless_root!();
    let ul = Underlay::new();
    let (a, b) = (ul.host(1), ul.host(2));
    let da = a.vnetd(&vxlan_config("ovl", MTU, &a.v4, &[&b.v4]));
    let mut db = b.vnetd(&vxlan_config("ovl", MTU, &b.v4, &[&a.v4]));
    let va = vm(&da, &a, "ovl", "52:54:00:55:00:01", "192.168.55.1/24", MTU);
    let vb = vm(&db, &b, "ovl", "52:54:00:55:00:02", "192.168.55.2/24", MTU);
    assert!(pings(&va, vb.ip()), "{}\n{}", da.log(), db.log());

    // B's vnetd dies (its VM's TAP goes with it): A keeps running and sending.
    db.kill();
    drop(vb);
    let sent = uplink(&da, "ovl").vxlan.unwrap().remotes[0].tx_frames;
    assert!(!va.ping("192.168.55.2", 2));
    let after = uplink(&da, "ovl").vxlan.unwrap().remotes[0].tx_frames;
    assert!(after > sent, "A stopped sending to the lost remote");

    // B comes back (its vnet from the saved state), with a VM of the same MAC.
    db.restart();
    let vb = vm(&db, &b, "ovl", "52:54:00:55:00:02", "192.168.55.2/24", MTU);
    assert!(pings(&va, vb.ip()), "{}\n{}", da.log(), db.log());
    assert!(pings(&vb, va.ip()));
}

/// The sha256 of `path`, as `sha256sum` prints it.
fn sha256(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "sha256sum {path:?}");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Sends file `input` over one TCP connection from `from` to `to`, which writes it to
/// `output` (socat at both ends).
fn send_file(from: &NsVm, to: &NsVm, input: &std::path::Path, output: &std::path::Path) {
    let listen = "TCP-LISTEN:5001,reuseaddr".to_string();
    let mut server = to.ns().spawn(&[
        "socat",
        "-u",
        &listen,
        &format!("CREATE:{}", output.display()),
    ]);
    let connect = format!("TCP:{}:5001", to.ip());
    let input = format!("OPEN:{}", input.display());
    let sent = wait_for(T, || {
        from.ns()
            .exec(&["socat", "-u", &input, &connect])
            .status
            .success()
    });
    assert!(sent, "socat could not connect to {connect}");
    let status = server.wait_timeout(T).expect("the receiving socat ends");
    assert!(status.success(), "the receiving socat failed: {status}");
}

#[test]
fn bulk_tcp_through_the_tunnel_arrives_intact_in_super_frames() {
    skip_unless_root!();
    let ul = Underlay::new();
    let (a, b) = (ul.host(1), ul.host(2));
    let da = a.vnetd(&vxlan_config("ovl", MTU, &a.v4, &[&b.v4]));
    let db = b.vnetd(&vxlan_config("ovl", MTU, &b.v4, &[&a.v4]));
    let va = vm(&da, &a, "ovl", "52:54:00:56:00:01", "192.168.56.1/24", MTU);
    let vb = vm(&db, &b, "ovl", "52:54:00:56:00:02", "192.168.56.2/24", MTU);
    assert!(pings(&va, vb.ip()), "{}\n{}", da.log(), db.log());

    // 24 MiB that do not compress or repeat (xorshift), both ways.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let bytes: Vec<u8> = (0..24 << 17)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    std::fs::write(&input, bytes).unwrap();
    for (from, to, dx) in [(&va, &vb, &db), (&vb, &va, &da)] {
        let output = dir.path().join(format!("out-{}", to.ip()));
        send_file(from, to, &input, &output);
        assert_eq!(sha256(&output), sha256(&input), "to {}", to.ip());
        // The receiving vnet took the segments' datagrams merged: far fewer frames
        // entered its switch from the tunnel than datagrams came through it.
        let port = uplink(dx, "ovl");
        let datagrams = port.vxlan.unwrap().remotes[0].rx_frames;
        let frames = port.counters.rx_frames;
        assert!(
            datagrams > 16_000 && frames * 4 < datagrams,
            "{frames} frames from {datagrams} datagrams"
        );
    }
}

#[test]
fn a_vnet_mtu_too_large_for_the_underlay_is_refused_naming_both_numbers() {
    skip_unless_root!();
    let ul = Underlay::new();
    let (a, b) = (ul.host(1), ul.host(2));
    let d = a.vnetd("[[network]]\nname = \"big\"\n");
    let err = vnet_testbed::api::cli_fails(
        &d,
        &[
            "uplink", "set", "big", "--vxlan", "100", "--local", &a.v4, "--remote", &b.v4,
        ],
    );
    assert!(
        err.contains("MTU 1500 + 50") && err.contains("1550") && err.contains("has MTU 1500"),
        "{err}"
    );
    assert!(err.contains(a.ifname()), "{err}");
    let err = vnet_testbed::api::cli_fails(
        &d,
        &[
            "uplink", "set", "big", "--vxlan", "100", "--local", &a.v6, "--remote", &b.v6,
        ],
    );
    assert!(
        err.contains("1570") && err.contains("has MTU 1500"),
        "{err}"
    );
    // An address that is not this host's is refused too.
    let err = vnet_testbed::api::cli_fails(
        &d,
        &["uplink", "set", "big", "--vxlan", "100", "--local", &b.v4],
    );
    assert!(err.contains("no interface of this host"), "{err}");
    assert!(uplink_absent(&d, "big"));
}

fn uplink_absent(d: &Daemon, net: &str) -> bool {
    client(d)
        .ports(net)
        .unwrap()
        .iter()
        .all(|p| p.vxlan.is_none())
}

/// Sends each of `datagrams` from `from` (an address of `ns`) to `to`:4789.
fn send_udp(ns: &Netns, from: &str, to: &str, datagrams: &[Vec<u8>]) {
    let hex: Vec<String> = datagrams
        .iter()
        .map(|d| d.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    let family = if to.contains(':') {
        "AF_INET6"
    } else {
        "AF_INET"
    };
    let script = format!(
        "import socket\ns = socket.socket(socket.{family}, socket.SOCK_DGRAM)\ns.bind(('{from}', 0))\nfor h in {hex:?}:\n    s.sendto(bytes.fromhex(h), ('{to}', 4789))\n"
    );
    ns.exec_ok(&["python3", "-c", &script]);
}

#[test]
fn hostile_datagrams_are_dropped_and_counted_by_cause() {
    skip_unless_root!();
    let ul = Underlay::new();
    let (a, b, stranger) = (ul.host(1), ul.host(2), ul.host(3));
    let da = a.vnetd(&vxlan_config("ovl", MTU, &a.v4, &[&b.v4]));
    let db = b.vnetd(&vxlan_config("ovl", MTU, &b.v4, &[&a.v4]));
    let va = vm(&da, &a, "ovl", "52:54:00:44:00:01", "192.168.44.1/24", MTU);
    let vb = vm(&db, &b, "ovl", "52:54:00:44:00:02", "192.168.44.2/24", MTU);
    assert!(pings(&va, vb.ip()));
    let header = |flags: u8, vni: u32| {
        let v = vni.to_be_bytes();
        vec![flags, 0, 0, 0, v[1], v[2], v[3], 0]
    };
    let frame = |len: usize| {
        let mut f = vec![0u8; len];
        f[..12].copy_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 0x66]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f
    };
    let with = |h: Vec<u8>, f: Vec<u8>| [h, f].concat();
    // From B's vnetd's own address (a listed remote), a second socket: bad headers,
    // and well-formed datagrams with frames the switch must refuse.
    send_udp(
        &b.ns,
        &b.v4,
        &a.v4,
        &[
            vec![0x08, 0, 0],                           // short
            with(header(0x00, 100), frame(60)),         // no I flag
            with(header(0x0c, 100), frame(60)),         // an unknown flag
            with(header(0x08, 4242), frame(60)),        // unknown VNI
            with(header(0x08, 100), vec![0; 10]),       // runt inner frame
            with(header(0x08, 100), frame(1464 + 100)), // inner frame over the MTU
        ],
    );
    // From a host that is no remote: refused whatever it carries.
    send_udp(
        &stranger.ns,
        &stranger.v4,
        &a.v4,
        &[with(header(0x08, 100), frame(60))],
    );
    let counted = |p: &PortInfo| {
        let vx = p.vxlan.as_ref().unwrap();
        let s = |c: &str| vx.socket_drops.get(c).copied().unwrap_or(0);
        let d = |c: &str| p.counters.drops.get(c).copied().unwrap_or(0);
        s("short") >= 1
            && s("flags") >= 2
            && s("unknown_vni") >= 1
            && s("unknown_remote") >= 1
            && d("runt") >= 1
            && d("oversize") >= 1
    };
    assert!(
        wait_for(T, || counted(&uplink(&da, "ovl"))),
        "{:#?}\n{}",
        uplink(&da, "ovl"),
        da.log()
    );
    // Nothing learned from the stranger; traffic still flows; metrics show it.
    assert!(!fdb(&da, "ovl")
        .iter()
        .any(|e| e.remote.to_string() == stranger.v4));
    assert!(pings(&va, vb.ip()));
    let metrics = client(&da).metrics().unwrap();
    assert!(
        metrics.contains(
            "vnet_vxlan_socket_drops_total{socket=\"10.77.0.1:4789\",cause=\"unknown_vni\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "vnet_vxlan_remote_tx_frames_total{{net=\"ovl\",vni=\"100\",remote=\"{}\"}}",
        b.v4
    )));
}

/// Open vSwitch in host `ns`: its own database and `ovs-vswitchd` with the userspace
/// datapath (`netdev`: no kernel module), run from a directory of their own and
/// stopped on drop.
struct Ovs {
    dir: tempfile::TempDir,
    _daemons: [vnet_testbed::ChildGuard; 2],
}

impl Ovs {
    fn start(ns: &Netns) -> Ovs {
        let dir = tempfile::tempdir().unwrap();
        let at = |f: &str| dir.path().join(f).display().to_string();
        let rundir = format!("OVS_RUNDIR={}", dir.path().display());
        let ok = std::process::Command::new("ovsdb-tool")
            .args([
                "create",
                &at("conf.db"),
                "/usr/share/openvswitch/vswitch.ovsschema",
            ])
            .status()
            .unwrap();
        assert!(ok.success(), "ovsdb-tool create");
        let db = format!("--remote=punix:{}", at("db.sock"));
        let server = ns.spawn(&[
            "env",
            &rundir,
            "ovsdb-server",
            &at("conf.db"),
            &db,
            "--unixctl",
            &at("db.ctl"),
        ]);
        let sock = dir.path().join("db.sock");
        assert!(
            wait_for(T, || sock.exists()),
            "ovsdb-server: {}",
            server.log()
        );
        let db = format!("unix:{}", at("db.sock"));
        let switch = ns.spawn(&[
            "env",
            &rundir,
            "ovs-vswitchd",
            &db,
            "--unixctl",
            &at("switch.ctl"),
        ]);
        let ovs = Ovs {
            dir,
            _daemons: [server, switch],
        };
        ovs.vsctl(&["--no-wait", "init"]);
        ovs
    }

    fn vsctl(&self, args: &[&str]) -> String {
        let db = format!("--db=unix:{}", self.dir.path().join("db.sock").display());
        let out = std::process::Command::new("ovs-vsctl")
            .arg(db)
            .args(["--timeout", "30"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ovs-vsctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn appctl(&self, args: &[&str]) -> String {
        let ctl = self.dir.path().join("switch.ctl");
        let out = std::process::Command::new("ovs-appctl")
            .arg("-t")
            .arg(ctl)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[test]
fn a_vnet_and_an_open_vswitch_bridge_exchange_traffic_over_vxlan() {
    skip_unless_root!();
    let have_ovs = std::process::Command::new("ovs-vswitchd")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    vnet_testbed::skip_unless!(
        have_ovs,
        "no Open vSwitch: scripts/install-test-deps installs openvswitch-switch"
    );
    let ul = Underlay::new();
    let (a, o) = (ul.host(1), ul.host(2));
    // Host O: OVS's usual userspace tunnel layout. The underlay leg is a port of
    // bridge brphy, which holds the host's address (tunnels leave through it);
    // bridge brint has the VXLAN port and the VM.
    let ovs = Ovs::start(&o.ns);
    o.ns.exec_ok(&["ip", "addr", "flush", "dev", o.ifname()]);
    for (br, port) in [("brphy", o.ifname()), ("brint", "")] {
        let mut args = vec![
            "add-br",
            br,
            "--",
            "set",
            "bridge",
            br,
            "datapath_type=netdev",
        ];
        if !port.is_empty() {
            args.extend(["--", "add-port", br, port]);
        }
        ovs.vsctl(&args);
    }
    o.ns.exec_ok(&["ip", "addr", "add", &format!("{}/24", o.v4), "dev", "brphy"]);
    o.ns.exec_ok(&["ip", "link", "set", "brphy", "up"]);
    let remote = format!("options:remote_ip={}", a.v4);
    ovs.vsctl(&[
        "add-port",
        "brint",
        "vx0",
        "--",
        "set",
        "interface",
        "vx0",
        "type=vxlan",
        &remote,
        "options:key=100",
    ]);
    let mut leg = Veth::new();
    leg.move_b(&o.ns);
    o.ns.exec_ok(&["ip", "link", "set", leg.b(), "up"]);
    ovs.vsctl(&["add-port", "brint", leg.b()]);
    let ovm = NsVm::attach(leg.a(), "52:54:00:78:00:02", "192.168.78.2/24");
    ovm.ns()
        .exec_ok(&["ip", "link", "set", "dev", ovm.ifname(), "mtu", "1450"]);
    // The userspace datapath reads frames with AF_PACKET: checksums must be whole.
    ovm.ns()
        .exec_ok(&["ethtool", "-K", ovm.ifname(), "tx", "off"]);

    // And host A's underlay leg must fill in the UDP checksums it sends (a veth leaves
    // them partial, which only a kernel peer accepts).
    a.ns.exec_ok(&["ethtool", "-K", a.ifname(), "tx", "off"]);
    let d = a.vnetd(&vxlan_config("ovl", MTU, &a.v4, &[&o.v4]));
    let avm = vm(&d, &a, "ovl", "52:54:00:78:00:01", "192.168.78.1/24", MTU);

    let logs = || format!("{}\n{}", d.log(), ovs.appctl(&["fdb/show", "brint"]));
    assert!(pings(&avm, ovm.ip()), "vnet → OVS:\n{}", logs());
    assert!(pings(&ovm, avm.ip()), "OVS → vnet:\n{}", logs());
    tcp_both_ways(&avm, &ovm);
    tcp_both_ways(&ovm, &avm);
    // Each learned the other's VM: vnet behind host O, OVS on its VXLAN port.
    let learned = fdb(&d, "ovl");
    assert!(
        learned
            .iter()
            .any(|e| e.mac.to_string() == ovm.mac() && e.remote.to_string() == o.v4),
        "{learned:?}"
    );
    let ofdb = ovs.appctl(&["fdb/show", "brint"]);
    assert!(ofdb.contains(avm.mac()), "{ofdb}");
}
