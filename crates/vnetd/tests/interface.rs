//! Interface ports end to end: a host interface that another program created and holds
//! (the host end of a veth whose other end is a namespace VM; the TAP a QEMU guest opens
//! itself, as Firecracker and libvirt do) joins a vnet through `vnet port add NET
//! --interface IF`, follows the interface when it is deleted and made again, and keeps
//! the VLAN rules of a port.

use std::time::Duration;

use vnet_control::{LinkState, PortInfo, PortKind, PortSpec, VlanMode};
use vnet_testbed::api::{cli_fails, cli_json, client, drops, tap_vm};
use vnet_testbed::{api, skip_unless_root, unique_name, wait_for, Daemon, Guest, Netdev, NsVm};

const T: Duration = Duration::from_secs(60);

/// Sends an ARP request tagged with VLAN 10 out of interface argv[1] (MAC argv[2],
/// address argv[3]) for argv[4], and prints the reply's sender and VLAN (the kernel
/// hands a received tag over as `PACKET_AUXDATA`).
const TAGGED_ARP: &str = r#"
import socket, struct, sys, time
ifname, mac, ip, target = sys.argv[1:5]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((ifname, 0))
s.setsockopt(263, 8, 1)
s.settimeout(0.5)
m = bytes.fromhex(mac.replace(":", ""))
arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, m, socket.inet_aton(ip),
                  bytes(6), socket.inet_aton(target))
frame = b"\xff" * 6 + m + struct.pack("!HH", 0x8100, 10) + b"\x08\x06" + arp
end = time.time() + 10
while time.time() < end:
    s.send(frame)
    try:
        data, anc, _, _ = s.recvmsg(2048, 256)
    except socket.timeout:
        continue
    if len(data) < 42 or data[12:14] != b"\x08\x06" or data[20:22] != b"\x00\x02":
        continue
    vlan = [struct.unpack_from("=H", d, 16)[0] & 0xfff for (l, t, d) in anc if l == 263 and t == 8]
    print("reply from", socket.inet_ntoa(data[28:32]), "on vlan", vlan[0] if vlan else None)
    sys.exit(0)
sys.exit(1)
"#;

/// Deletes host interface `0` when dropped (wherever the test ends).
struct Link(String);

impl Drop for Link {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.0])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// A veth pair `host`/`vm` whose `vm` end becomes a namespace VM with `mac` and `cidr`;
/// `host` stays in the host namespace, down (the port brings it up when it joins).
fn veth_vm(host: &str, mac: &str, cidr: &str) -> (Link, NsVm) {
    let vm = unique_name("vi");
    let ok = std::process::Command::new("ip")
        .args(["link", "add", host, "type", "veth", "peer", "name", &vm])
        .status()
        .expect("ip runs")
        .success();
    assert!(ok, "ip link add {host} type veth peer name {vm}");
    (Link(host.to_string()), NsVm::attach(&vm, mac, cidr))
}

/// The interface port on `ifname` in `net`.
fn interface_port(d: &Daemon, net: &str, ifname: &str) -> PortInfo {
    api::ports(d, net)
        .into_iter()
        .find(|p| p.kind == PortKind::Interface && p.description == format!("interface {ifname}"))
        .unwrap_or_else(|| panic!("no interface port on {ifname}\n{}", d.log()))
}

fn wait_state(d: &Daemon, net: &str, ifname: &str, state: LinkState) {
    assert!(
        wait_for(T, || interface_port(d, net, ifname).state == Some(state)),
        "port on {ifname} never became {state:?}: {:?}\n{}",
        interface_port(d, net, ifname),
        d.log()
    );
}

fn is_up(ifname: &str) -> bool {
    std::fs::read_to_string(format!("/sys/class/net/{ifname}/flags"))
        .ok()
        .and_then(|f| u32::from_str_radix(f.trim().trim_start_matches("0x"), 16).ok())
        .is_some_and(|flags| flags & 1 != 0)
}

#[test]
fn a_veth_end_joins_as_a_port_and_is_followed_when_deleted_and_made_again() {
    skip_unless_root!();
    let d = api::daemon_with(&["lab"]);
    let (_, a) = tap_vm(&d, "lab", "52:54:00:77:00:01", "10.77.0.1/24");
    let host = unique_name("vh");
    let (link, b) = veth_vm(&host, "52:54:00:77:00:02", "10.77.0.2/24");
    assert!(!is_up(&host));

    let added = d.cli_ok(&["port", "add", "lab", "--interface", &host]);
    assert!(
        added.contains(&format!("(interface {host}, access 1)")),
        "{added}"
    );
    let p = interface_port(&d, "lab", &host);
    assert_eq!(p.state, Some(LinkState::Up), "{p:?}");
    assert!(is_up(&host), "joining brought the interface up");
    assert!(a.ping("10.77.0.2", 3), "A reaches B\n{}", d.log());
    let p = interface_port(&d, "lab", &host);
    assert!(
        p.counters.rx_frames > 0 && p.counters.tx_frames > 0,
        "{p:?}"
    );
    assert!(
        p.macs.iter().any(|m| m.to_string() == "52:54:00:77:00:02"),
        "{p:?}"
    );
    let shown = d.cli_ok(&["port", "show", "lab", &p.id.to_string()]);
    assert!(shown.contains("state         up\n"), "{shown}");

    // Set down by someone: the port says so and leaves it down; up again, it resumes.
    let ip_link = |state: &str| {
        let ok = std::process::Command::new("ip")
            .args(["link", "set", &host, state])
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip link set {host} {state}");
    };
    ip_link("down");
    wait_state(&d, "lab", &host, LinkState::Down);
    assert!(!a.ping("10.77.0.2", 1));
    assert!(
        !is_up(&host),
        "the port does not undo an administrator's down"
    );
    ip_link("up");
    wait_state(&d, "lab", &host, LinkState::Up);
    assert!(
        wait_for(T, || a.ping("10.77.0.2", 1)),
        "traffic resumes\n{}",
        d.log()
    );

    // The interface goes away: the port stays, down, and counts what it cannot send.
    drop(b);
    drop(link);
    wait_state(&d, "lab", &host, LinkState::Down);
    assert!(!a.ping("10.77.0.2", 1));
    assert!(
        wait_for(T, || drops(&interface_port(&d, "lab", &host), "link_down")
            > 0),
        "frames for the missing interface are dropped as link_down: {:?}",
        interface_port(&d, "lab", &host)
    );
    let listed = d.cli_ok(&["port", "ls", "lab"]);
    assert!(
        listed.contains(&format!("interface {host} (down)")),
        "{listed}"
    );

    // One of the same name comes back (a new ifindex): the port binds to it.
    // The same VM back, as a restarted VM keeps its MAC.
    let (_link, _b) = veth_vm(&host, "52:54:00:77:00:02", "10.77.0.2/24");
    wait_state(&d, "lab", &host, LinkState::Up);
    assert!(
        wait_for(T, || a.ping("10.77.0.2", 1)),
        "A reaches the new B\n{}",
        d.log()
    );
    assert!(d.is_running());

    // Removed by id like any port: the socket goes, the interface stays.
    d.cli_ok(&["port", "rm", "lab", &p.id.to_string()]);
    assert!(api::ports(&d, "lab")
        .iter()
        .all(|q| q.kind != PortKind::Interface));
    assert!(!a.ping("10.77.0.2", 1));
}

#[test]
fn a_tap_that_qemu_opens_itself_joins_and_follows_the_guest_across_restarts() {
    skip_unless_root!();
    let d = api::daemon_with(&["lab"]);
    let (_, ns) = tap_vm(&d, "lab", "52:54:00:78:00:01", "10.78.0.1/24");
    // The port comes first: no such interface yet, it waits for it.
    let tap = unique_name("qt");
    let p: PortInfo = cli_json(&d, &["port", "add", "lab", "--interface", &tap]);
    assert_eq!(
        (p.kind, p.state),
        (PortKind::Interface, Some(LinkState::Down))
    );
    // What `vnet attach` prints for QEMU is what the test bed gives it.
    let printed = d.cli_ok(&["attach", "lab", "--interface", &tap, "--id", "n0"]);
    assert!(
        printed.starts_with(&format!(
            "-netdev tap,id=n0,ifname={tap},script=no,downscript=no "
        )),
        "{printed}"
    );

    let boot = |mac: &str| {
        Guest::builder()
            .name("tap-owner")
            .nic_with_mac(
                Netdev::Tap {
                    ifname: tap.clone(),
                },
                mac,
            )
            .static_ip(0, "10.78.0.2/24")
            .boot()
            .unwrap_or_else(|e| panic!("guest boots: {e}\n{}", d.log()))
    };
    let g = boot("52:54:00:78:00:02");
    wait_state(&d, "lab", &tap, LinkState::Up);
    g.exec_ok("ping -c 3 -W 3 10.78.0.1", T);
    assert!(
        ns.ping("10.78.0.2", 2),
        "the namespace VM reaches the guest"
    );
    // QEMU holds the TAP: no other port may take it.
    let err = cli_fails(&d, &["port", "add", "lab", "--interface", &tap]);
    assert!(
        err.contains(&format!("{tap} is already port {}", p.id)),
        "{err}"
    );

    // The guest stops (QEMU deletes its TAP) and starts again (a new TAP).
    drop(g);
    wait_state(&d, "lab", &tap, LinkState::Down);
    let g = boot("52:54:00:78:00:03");
    wait_state(&d, "lab", &tap, LinkState::Up);
    g.exec_ok("ping -c 3 -W 3 10.78.0.1", T);
    let p = interface_port(&d, "lab", &tap);
    assert!(
        p.counters.rx_frames > 0 && p.counters.tx_frames > 0,
        "{p:?}"
    );
}

#[test]
fn an_interface_port_keeps_vlan_rules_untagged_or_as_a_trunk() {
    skip_unless_root!();
    let access = unique_name("vh");
    let trunk = unique_name("vh");
    let (_l1, b) = veth_vm(&access, "52:54:00:79:00:02", "10.79.0.2/24");
    let (_l2, c) = veth_vm(&trunk, "52:54:00:79:00:03", "");
    // Interface ports from the configuration file.
    let d = Daemon::start(Some(&format!(
        "[[network]]\nname = \"lab\"\n\n\
         [[network.port]]\ninterface = \"{access}\"\nvlan = 10\n\n\
         [[network.port]]\ninterface = \"{trunk}\"\ntrunk = [10, 20]\n"
    )));
    assert_eq!(
        interface_port(&d, "lab", &access).vlan,
        VlanMode::Access { vlan: 10 }
    );
    let c_ = client(&d);
    let on_vlan = |vlan: u16, mac: &str, cidr: &str| {
        let ifname = unique_name("vt");
        c_.add_port(
            "lab",
            &PortSpec::Tap {
                ifname: ifname.clone(),
                vlan: VlanMode::Access { vlan },
                policy: Default::default(),
            },
        )
        .unwrap();
        NsVm::attach(&ifname, mac, cidr)
    };
    let _v10 = on_vlan(10, "52:54:00:79:00:10", "10.79.0.10/24");
    let v1 = on_vlan(1, "52:54:00:79:00:01", "10.79.0.1/24");
    assert!(
        b.ping("10.79.0.10", 3),
        "access port reaches its VLAN\n{}",
        d.log()
    );
    assert!(!b.ping("10.79.0.1", 1), "and not VLAN 1");
    assert!(!v1.ping("10.79.0.2", 1));

    // The trunk's VM does its own 802.1Q (this host kernel has no 8021q: a raw socket
    // plays the VLAN interface). Its tag is stripped into metadata by the kernel on the
    // veth, put back by the port, and the reply comes back tagged.
    let reply = c.ns().exec(&[
        "python3",
        "-c",
        TAGGED_ARP,
        c.ifname(),
        c.mac(),
        "10.79.0.3",
        "10.79.0.10",
    ]);
    let said = String::from_utf8_lossy(&reply.stdout);
    assert!(
        reply.status.success() && said.contains("reply from 10.79.0.10 on vlan 10"),
        "a tagged ARP on VLAN 10 is answered on VLAN 10: {said}{}\n{}",
        String::from_utf8_lossy(&reply.stderr),
        d.log()
    );
    let t = interface_port(&d, "lab", &trunk);
    assert_eq!(drops(&t, "vlan_denied"), 0, "{t:?}");
}

#[test]
fn interface_ports_refuse_the_loopback_and_interfaces_vnetd_uses_already() {
    skip_unless_root!();
    let d = api::daemon_with(&["lab", "other"]);
    let err = cli_fails(&d, &["port", "add", "lab", "--interface", "lo"]);
    assert!(err.contains("lo is the loopback interface"), "{err}");
    let err = cli_fails(&d, &["port", "add", "lab", "--interface", "a/b"]);
    assert!(err.contains("invalid interface name"), "{err}");

    // A TAP port's interface, on this vnet or another (maybe another thread).
    let (tap_port, _vm) = tap_vm(&d, "lab", "52:54:00:7a:00:01", "");
    let tap = api::port(&d, "lab", tap_port)
        .description
        .replace("tap ", "");
    for net in ["lab", "other"] {
        let err = cli_fails(&d, &["port", "add", net, "--interface", &tap]);
        assert!(
            err.contains(&format!(
                "{tap} is already port {tap_port} (tap {tap}) of vnet lab"
            )),
            "{err}"
        );
    }

    // A NIC an uplink uses, and the other way round.
    let host = unique_name("vh");
    let (_link, _b) = veth_vm(&host, "52:54:00:7a:00:02", "");
    d.cli_ok(&["uplink", "set", "other", "--interface", &host]);
    let err = cli_fails(&d, &["port", "add", "lab", "--interface", &host]);
    assert!(
        err.contains(&format!("{host} is already the uplink of vnet other")),
        "{err}"
    );
    d.cli_ok(&["uplink", "rm", "other"]);
    let p: PortInfo = cli_json(&d, &["port", "add", "lab", "--interface", &host]);
    let err = cli_fails(&d, &["uplink", "set", "other", "--interface", &host]);
    assert!(
        err.contains(&format!("{host} is already port {}", p.id)),
        "{err}"
    );
    let err = cli_fails(&d, &["port", "add", "other", "--tap", &host]);
    assert!(
        err.contains(&format!(
            "{host} is already port {} (interface {host}) of vnet lab",
            p.id
        )),
        "{err}"
    );
    assert!(d.is_running());
}
