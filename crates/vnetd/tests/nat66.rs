//! NAT for IPv6 (issue 16 items 4 and 6), end to end: namespace VMs on a NAT vnet
//! configure themselves by SLAAC from the vnet's router advertisements and reach,
//! through the NAT device and the daemon's own sockets, an IPv6-only "outside"
//! namespace that only the host can reach (joined to it by a veth): HTTP both ways,
//! UDP, ping, ICMPv6 errors, fragments; the host's `::1` only with `host_loopback`; port
//! forwards from IPv6 host addresses to a VM's servers; a QEMU guest's ping.

use std::io::Write;
use std::net::{Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use vnet_testbed::api::{self, client, tap_vm};
use vnet_testbed::payload::sha256;
use vnet_testbed::{
    skip_unless, skip_unless_root, unique_name, wait_for, ChildGuard, Daemon, Guest, Netdev, Netns,
    NsVm, Veth,
};

const T: Duration = Duration::from_secs(60);

/// A number for this test's prefixes and subnets, so tests running at once do not
/// collide.
fn number(salt: u32) -> u32 {
    (std::process::id().wrapping_mul(13) + salt * 43) % 200 + 20
}

/// The world outside the host, IPv6 only: a namespace behind a veth, `fd66:N::2`,
/// reachable from the host's `fd66:N::1` only (the vnet's guests have no route to it
/// but through the NAT).
struct Outside {
    ns: Netns,
    _veth: Veth,
    ip: String,
}

impl Outside {
    fn new(n: u32) -> Outside {
        let ns = Netns::new("out6");
        let mut veth = Veth::new();
        veth.move_b(&ns);
        let host = format!("fd66:{n:x}::1/64");
        let ip = format!("fd66:{n:x}::2");
        let ok = Command::new("ip")
            .args(["-6", "addr", "add", &host, "dev", veth.a(), "nodad"])
            .status()
            .unwrap()
            .success();
        assert!(ok, "address on the host's veth end");
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        let cidr = format!("{ip}/64");
        ns.exec_ok(&["ip", "-6", "addr", "add", &cidr, "dev", veth.b(), "nodad"]);
        Outside {
            ns,
            _veth: veth,
            ip,
        }
    }
}

/// The vnet's /64 for number `n`.
fn subnet6(n: u32) -> String {
    format!("fd67:{n:x}::/64")
}

/// A daemon with NAT vnet `net` (IPv4 `10.213.N.0/24`, IPv6 [`subnet6`]), NAT settings
/// `nat_extra`.
fn nat_daemon(net: &str, n: u32, nat_extra: &str) -> Daemon {
    Daemon::start(Some(&format!(
        "[[network]]\nname = \"{net}\"\nsubnet = \"10.213.{n}.0/24\"\nsubnet6 = \"{}\"\n\
         nat = {{ udp_timeout_secs = 5{nat_extra} }}\n",
        subnet6(n)
    )))
}

/// A VM on `net` that configures itself by SLAAC (the test bed turns IPv6 off) and
/// has its address and default route; returns it with its address.
fn slaac_vm(d: &Daemon, net: &str, n: u32, mac: &str) -> (NsVm, Ipv6Addr) {
    let (_, vm) = tap_vm(d, net, mac, "");
    let ifname = vm.ifname().to_string();
    for key in [
        "accept_ra=2",
        "autoconf=1",
        "accept_dad=0",
        "disable_ipv6=0",
    ] {
        let kv = format!("net.ipv6.conf.{ifname}.{key}");
        vm.ns().exec_ok(&["sysctl", "-q", "-w", &kv]);
    }
    let prefix = format!("fd67:{n:x}:");
    let mut address = None;
    let ok = wait_for(T, || {
        let out = vm.ns().exec_ok(&[
            "ip", "-6", "-o", "addr", "show", "dev", &ifname, "scope", "global",
        ]);
        address = out
            .split_whitespace()
            .filter_map(|w| w.split('/').next()?.parse::<Ipv6Addr>().ok())
            .find(|a| a.to_string().starts_with(&prefix));
        let routes = vm.ns().exec_ok(&["ip", "-6", "route", "show", "default"]);
        address.is_some() && routes.contains("via fe80::")
    });
    assert!(
        ok,
        "no SLAAC address or default route: {}\n{}",
        vm.ns().exec_ok(&["ip", "-6", "addr"]),
        d.log()
    );
    (vm, address.unwrap())
}

/// A 3 MiB file of pseudo-random bytes in `dir`, and its SHA-256.
fn payload(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let file = dir.join("payload");
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let bytes: Vec<u8> = (0..3 * 1024 * 1024)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    std::fs::write(&file, &bytes).unwrap();
    let sum = sha256(&file);
    (file, sum)
}

/// What `msg` sent from `ns` by UDP to `target` (socat's `UDP6:[addr]:port`) brings
/// back within 2 s.
fn udp_ask(ns: &Netns, target: &str, msg: &str) -> String {
    let out = ns
        .command(&["socat", "-T", "2", "-", target])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(msg.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a TCP connection from `ns` to `target` (`TCP6:[addr]:port`) reads.
fn tcp_read(ns: &Netns, target: &str) -> String {
    let target = format!("{target},connect-timeout=5");
    let out = ns.exec(&["socat", "-u", &target, "-"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The NAT device's counters.
fn counters(d: &Daemon, net: &str) -> vnet_control::NatCounters {
    client(d)
        .network(net)
        .unwrap()
        .nat
        .expect("NAT info")
        .counters
}

#[test]
fn a_slaac_vm_fetches_over_http_from_an_ipv6_only_server_and_uploads_to_it() {
    skip_unless_root!();
    let n = number(1);
    let net = unique_name("nat6");
    let d = nat_daemon(&net, n, "");
    let outside = Outside::new(n);
    let (vm, _) = slaac_vm(&d, &net, n, "52:54:00:66:00:01");
    let dir = tempfile::tempdir().unwrap();
    let (file, want) = payload(dir.path());
    // Download: an HTTP server bound to the outside's IPv6 address only.
    let _http = outside.ns.spawn(&[
        "/usr/bin/python3",
        "-m",
        "http.server",
        "--bind",
        &outside.ip,
        "--directory",
        &dir.path().display().to_string(),
        "8080",
    ]);
    let got = dir.path().join("downloaded");
    let url = format!("http://[{}]:8080/payload", outside.ip);
    let fetch = || {
        let _ = std::fs::remove_file(&got);
        let out = vm.ns().exec(&[
            "curl",
            "-gsS",
            "--max-time",
            "20",
            "-o",
            &got.display().to_string(),
            &url,
        ]);
        out.status.success() && sha256(&got) == want
    };
    assert!(
        wait_for(T, fetch),
        "HTTP download through NAT66\n{}",
        d.log()
    );
    // Upload: the VM sends, the outside stores.
    let stored = dir.path().join("uploaded");
    let mut sink = outside.ns.spawn(&[
        "socat",
        "-u",
        &format!("TCP6-LISTEN:8081,bind=[{}],reuseaddr", outside.ip),
        &format!("CREATE:{}", stored.display()),
    ]);
    let sent = wait_for(T, || {
        vm.ns()
            .exec(&[
                "socat",
                "-u",
                &format!("OPEN:{}", file.display()),
                &format!("TCP6:[{}]:8081,connect-timeout=5", outside.ip),
            ])
            .status
            .success()
    });
    assert!(sent, "upload through NAT66\n{}", d.log());
    assert!(
        sink.wait_timeout(T).is_some(),
        "the sink saw EOF (FIN went through)"
    );
    assert_eq!(sha256(&stored), want, "upload intact");
    let c = counters(&d, &net);
    assert!(c.flows_opened >= 2 && c.from_host > 1000, "{c:?}");
}

#[test]
fn udp_ping_errors_and_fragments_cross_the_nat66() {
    skip_unless_root!();
    let n = number(2);
    let net = unique_name("nat6");
    let d = nat_daemon(&net, n, "");
    let outside = Outside::new(n);
    let (vm, _) = slaac_vm(&d, &net, n, "52:54:00:66:00:02");
    let _echo = outside.ns.spawn(&[
        "socat",
        &format!("UDP6-RECVFROM:7777,bind=[{}],fork,reuseaddr", outside.ip),
        "EXEC:cat",
    ]);
    let target = format!("UDP6:[{}]:7777", outside.ip);
    assert!(
        wait_for(T, || udp_ask(vm.ns(), &target, "hello v6\n")
            == "hello v6\n"),
        "UDP echo through NAT66\n{}",
        d.log()
    );
    assert_eq!(udp_ask(vm.ns(), &target, "again\n"), "again\n");
    // A datagram larger than the vnet's MTU leaves the VM in fragments and comes back
    // from the device in fragments; both ends put it together.
    let long = "z".repeat(4000);
    assert_eq!(udp_ask(vm.ns(), &target, &long), long, "{}", d.log());
    let c = counters(&d, &net);
    assert!(c.fragments >= 3 && c.reassembled >= 1, "{c:?}");
    assert_eq!(c.oversize, 0, "{c:?}");

    // Ping: through ICMPv6 ping sockets (or raw ones) of the daemon.
    let log = d.log();
    skip_unless!(
        !log.contains("ICMPv6 echo answered \"unreachable\""),
        "the host allows neither ping sockets nor raw sockets for ICMPv6 echo"
    );
    let ping = || {
        vm.ns()
            .exec(&["ping", "-6", "-n", "-c", "1", "-W", "2", &outside.ip])
            .status
            .success()
    };
    assert!(wait_for(T, ping), "ping6 through NAT66\n{}", d.log());
    let out = vm.ns().exec_ok(&[
        "ping",
        "-6",
        "-n",
        "-c",
        "3",
        "-i",
        "0.2",
        "-W",
        "2",
        "-s",
        "3000",
        &outside.ip,
    ]);
    assert!(out.contains("3 received"), "large pings: {out}");

    // A closed port outside: the outside's port unreachable reaches the VM as ICMPv6,
    // which its socket reports as a refused connection.
    let probe = format!(
        "import socket\ns = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n\
         s.settimeout(3)\ns.connect(('{}', 9))\ns.send(b'x')\n\
         try:\n    s.recv(1)\n    print('answered')\n\
         except ConnectionRefusedError:\n    print('refused')\n\
         except socket.timeout:\n    print('timeout')\n",
        outside.ip
    );
    let refused = wait_for(T, || {
        vm.ns().exec_ok(&["/usr/bin/python3", "-c", &probe]).trim() == "refused"
    });
    assert!(refused, "port unreachable through NAT66\n{}", d.log());
    assert!(counters(&d, &net).unreachable >= 1);
}

/// UDP and TCP to the gateway's `::2` reach the host's `::1` only where
/// `host_loopback` is on.
#[test]
fn the_hosts_ipv6_loopback_is_reachable_only_when_allowed() {
    skip_unless_root!();
    let (a, b) = (number(3), number(4));
    let udp_port = UdpSocket::bind("[::1]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tcp_port = TcpListener::bind("[::1]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut udp = Command::new("socat");
    udp.args([
        &format!("UDP6-RECVFROM:{udp_port},bind=[::1],fork,reuseaddr"),
        "EXEC:cat",
    ]);
    let _udp = ChildGuard::spawn(udp, "socat UDP echo on ::1").unwrap();
    let mut tcp = Command::new("socat");
    tcp.args([
        &format!("TCP6-LISTEN:{tcp_port},bind=[::1],fork,reuseaddr"),
        "SYSTEM:echo loopback6",
    ]);
    let _tcp = ChildGuard::spawn(tcp, "socat TCP on ::1").unwrap();
    let (open, closed) = (unique_name("nat6"), unique_name("nat6"));
    let d = Daemon::start(Some(&format!(
        "[[network]]\nname = \"{open}\"\nsubnet = \"10.213.{a}.0/24\"\nsubnet6 = \"{}\"\n\
         nat = {{ host_loopback = true }}\n\n\
         [[network]]\nname = \"{closed}\"\nsubnet = \"10.213.{b}.0/24\"\nsubnet6 = \"{}\"\n\
         nat = {{}}\n",
        subnet6(a),
        subnet6(b)
    )));
    let gateway = |n: u32| format!("fd67:{n:x}::2");
    let (allowed, _) = slaac_vm(&d, &open, a, "52:54:00:66:00:03");
    let (denied, _) = slaac_vm(&d, &closed, b, "52:54:00:66:00:04");
    let udp_to = |n: u32| format!("UDP6:[{}]:{udp_port}", gateway(n));
    let tcp_to = |n: u32| format!("TCP6:[{}]:{tcp_port}", gateway(n));
    assert!(
        wait_for(T, || udp_ask(allowed.ns(), &udp_to(a), "knock\n")
            == "knock\n"),
        "host_loopback = true: UDP to [::2] reaches [::1]\n{}",
        d.log()
    );
    assert!(
        wait_for(T, || tcp_read(allowed.ns(), &tcp_to(a)) == "loopback6\n"),
        "host_loopback = true: TCP to [::2] reaches [::1]\n{}",
        d.log()
    );
    assert_eq!(
        udp_ask(denied.ns(), &udp_to(b), "knock\n"),
        "",
        "UDP refused"
    );
    assert_eq!(tcp_read(denied.ns(), &tcp_to(b)), "", "TCP refused");
    let c = counters(&d, &closed);
    assert!(c.unreachable >= 1, "{c:?}");
}

/// A free port on the host's IPv6 loopback, for TCP and UDP alike.
fn free_port6() -> u16 {
    loop {
        let t = TcpListener::bind("[::1]:0").unwrap();
        let port = t.local_addr().unwrap().port();
        if UdpSocket::bind(("::1", port)).is_ok() {
            return port;
        }
    }
}

#[test]
fn ipv6_port_forwards_reach_servers_inside_a_vm_from_config_and_live() {
    skip_unless_root!();
    let n = number(5);
    let net = unique_name("nat6");
    let guest = format!("fd67:{n:x}::50");
    let (tcp_port, udp_port) = (free_port6(), free_port6());
    let mut d = nat_daemon(
        &net,
        n,
        &format!(
            ", forward = [{{ host = \"[::1]:{tcp_port}\", guest = \"[{guest}]:8080\" }}, \
             {{ proto = \"udp\", host = \"[::1]:{udp_port}\", guest = \"[{guest}]:7777\" }}]"
        ),
    );
    let (_, vm) = tap_vm(&d, &net, "52:54:00:66:00:05", "");
    let ifname = vm.ifname().to_string();
    vm.ns().exec_ok(&[
        "sysctl",
        "-q",
        "-w",
        &format!("net.ipv6.conf.{ifname}.disable_ipv6=0"),
    ]);
    vm.ns().exec_ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        &format!("{guest}/64"),
        "dev",
        &ifname,
        "nodad",
    ]);
    let _server = vm.ns().spawn(&[
        "socat",
        "TCP6-LISTEN:8080,reuseaddr,fork",
        "SYSTEM:echo served over IPv6",
    ]);
    let _echo = vm
        .ns()
        .spawn(&["socat", "UDP6-RECVFROM:7777,fork,reuseaddr", "EXEC:cat"]);
    let host_fetch = |target: &str| {
        let out = Command::new("socat")
            .args(["-u", &format!("{target},connect-timeout=3"), "-"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let tcp_host = format!("TCP6:[::1]:{tcp_port}");
    assert!(
        wait_for(T, || host_fetch(&tcp_host) == "served over IPv6\n"),
        "host [::1]:{tcp_port} → VM [{guest}]:8080\n{}",
        d.log()
    );
    for _ in 0..10 {
        assert_eq!(host_fetch(&tcp_host), "served over IPv6\n");
    }
    // UDP: the first datagrams may be lost while the device solicits the VM.
    let peer = UdpSocket::bind("[::1]:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let udp_host: SocketAddr = format!("[::1]:{udp_port}").parse().unwrap();
    let ask = |msg: &str| {
        peer.send_to(msg.as_bytes(), udp_host).ok()?;
        let mut buf = [0u8; 2048];
        let (len, from) = peer.recv_from(&mut buf).ok()?;
        assert_eq!(from, udp_host, "the answer comes from the forward");
        Some(String::from_utf8_lossy(&buf[..len]).into_owned())
    };
    assert!(
        wait_for(T, || ask("hello VM").as_deref() == Some("hello VM")),
        "host [::1]:{udp_port} → VM [{guest}]:7777 and back\n{}",
        d.log()
    );
    assert_eq!(ask("second").as_deref(), Some("second"));

    // Live: from the IPv6 wildcard (reachable on ::1) and from IPv4 to the IPv6 guest.
    let any = free_port6();
    let any_host = format!("[::]:{any}");
    let to_server = format!("[{guest}]:8080");
    let added = d.cli_ok(&["forward", "add", &net, &any_host, &to_server]);
    assert!(
        added.contains(&format!("tcp {any_host} -> {to_server}")),
        "{added}"
    );
    assert_eq!(
        host_fetch(&format!("TCP6:[::1]:{any}")),
        "served over IPv6\n",
        "live forward on [::]\n{}",
        d.log()
    );
    let v4 = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    d.cli_ok(&["forward", "add", &net, &v4.to_string(), &to_server]);
    assert_eq!(
        host_fetch(&format!("TCP4:{v4}")),
        "served over IPv6\n",
        "IPv4 host address to an IPv6 guest\n{}",
        d.log()
    );
    let listed: Vec<vnet_control::ForwardSpec> = api::cli_json(&d, &["forward", "ls", &net]);
    assert_eq!(listed.len(), 4, "{listed:?}");
    // Exported as the config says them, and kept across a restart.
    let exported = d.cli_ok(&["config", "export"]);
    assert!(
        exported.contains(&format!("host = \"{any_host}\"")) && exported.contains(&to_server),
        "{exported}"
    );
    d.kill();
    d.restart();
    let listed: Vec<vnet_control::ForwardSpec> = api::cli_json(&d, &["forward", "ls", &net]);
    assert_eq!(listed.len(), 4, "restored: {listed:?}");
    // It listens again (the VM's TAP went with the old daemon).
    std::net::TcpStream::connect(("::1", any))
        .unwrap_or_else(|e| panic!("forward [::]:{any} after a restart: {e}\n{}", d.log()));
    d.cli_ok(&["forward", "rm", &net, &any_host]);
    assert!(
        std::net::TcpStream::connect(("::1", any)).is_err(),
        "removed: nobody listens on {any_host}"
    );
    // Errors say what is wrong.
    let outside = api::cli_fails(
        &d,
        &["forward", "add", &net, &any_host, "[fd00:dead::1]:80"],
    );
    assert!(
        outside.contains(&subnet6(n)) && outside.contains("fd00:dead::1"),
        "{outside}"
    );
    let taken = api::cli_fails(
        &d,
        &[
            "forward",
            "add",
            &net,
            &format!("[::1]:{tcp_port}"),
            &to_server,
        ],
    );
    assert!(taken.contains("already forwarded"), "{taken}");
    let in_use = TcpListener::bind("[::1]:0").unwrap();
    let busy = format!("[::1]:{}", in_use.local_addr().unwrap().port());
    let taken = api::cli_fails(&d, &["forward", "add", &net, &busy, &to_server]);
    assert!(taken.contains("port is taken"), "{taken}");
}

#[test]
fn a_qemu_guest_autoconfigured_by_slaac_pings_an_ipv6_address_outside() {
    skip_unless_root!();
    let n = number(6);
    let net = unique_name("nat6");
    let d = nat_daemon(&net, n, "");
    skip_unless!(
        !d.log().contains("ICMPv6 echo answered \"unreachable\""),
        "the host allows neither ping sockets nor raw sockets for ICMPv6 echo"
    );
    let outside = Outside::new(n);
    let g = Guest::builder()
        .name("nat66")
        .ipv6(true)
        .nic_with_mac(
            Netdev::Stream {
                path: d.net_dir(&net).join("stream.sock"),
            },
            "52:54:00:66:00:06",
        )
        .boot()
        .expect("guest boots");
    // The guest's kernel does SLAAC itself; the address appears once DAD is over.
    let prefix = format!("fd67:{n:x}:");
    let mut addrs = String::new();
    let ok = wait_for(T, || {
        addrs = g.exec_ok("ip -6 addr show dev eth0 scope global", T);
        addrs.contains(&prefix) && !addrs.contains("tentative")
    });
    assert!(
        ok,
        "no SLAAC address in {}: {addrs}\n{}",
        subnet6(n),
        d.log()
    );
    let out = g.exec_ok(&format!("ping -6 -c 3 -W 3 {}", outside.ip), T);
    assert!(out.contains("3 packets received"), "{out}\n{}", d.log());
}

/// Echo through ICMPv6 ping sockets: the daemon runs in a namespace of its own whose
/// `net.ipv4.ping_group_range` (which governs IPv6 ping sockets too) admits it.
#[test]
fn icmpv6_ping_sockets_carry_echo_where_the_daemons_namespace_allows_them() {
    skip_unless_root!();
    let n = number(7);
    let host = Netns::new("host6");
    host.exec_ok(&["ip", "link", "set", "lo", "up"]);
    host.exec_ok(&[
        "sysctl",
        "-q",
        "-w",
        "net.ipv4.ping_group_range=0 2147483647",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("vnetd-in-ns");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec ip netns exec {} {} \"$@\"\n",
            host.name(),
            vnet_testbed::bin_path("vnetd").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let net = unique_name("nat6");
    let d = Daemon::builder()
        .binary(&wrapper)
        .config(&format!(
            "[[network]]\nname = \"{net}\"\nsubnet = \"10.213.{n}.0/24\"\nsubnet6 = \"{}\"\n\
             nat = {{}}\n",
            subnet6(n)
        ))
        .start();
    assert!(
        d.log().contains("ICMPv6 echo through ping sockets"),
        "{}",
        d.log()
    );
    // The outside, joined to the daemon's namespace.
    let outside = Netns::new("out6");
    let mut veth = Veth::new();
    veth.move_a(&host);
    veth.move_b(&outside);
    let host_end = format!("fd66:{n:x}::1/64");
    host.exec_ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        &host_end,
        "dev",
        veth.a(),
        "nodad",
    ]);
    let outside_ip = format!("fd66:{n:x}::2");
    let cidr = format!("{outside_ip}/64");
    outside.exec_ok(&["ip", "-6", "addr", "add", &cidr, "dev", veth.b(), "nodad"]);
    // A VM with a static address: its TAP lives in the daemon's namespace.
    let ifname = unique_name("vt");
    client(&d)
        .add_port(
            &net,
            &vnet_control::PortSpec::Tap {
                ifname: ifname.clone(),
                vlan: Default::default(),
                policy: Default::default(),
            },
        )
        .unwrap_or_else(|e| panic!("TAP port: {e}\n{}", d.log()));
    let vm = Netns::new("vm6");
    host.exec_ok(&["ip", "link", "set", &ifname, "netns", vm.name()]);
    let kv = format!("net.ipv6.conf.{ifname}.disable_ipv6=0");
    vm.exec_ok(&["sysctl", "-q", "-w", &kv]);
    let address = format!("fd67:{n:x}::64/64");
    vm.exec_ok(&["ip", "-6", "addr", "add", &address, "dev", &ifname, "nodad"]);
    vm.exec_ok(&["ip", "link", "set", &ifname, "up"]);
    let gateway = format!("fd67:{n:x}::2");
    vm.exec_ok(&["ip", "-6", "route", "add", "default", "via", &gateway]);
    let ping = || {
        vm.exec(&[
            "ping",
            "-6",
            "-n",
            "-q",
            "-c",
            "2",
            "-i",
            "0.2",
            "-W",
            "2",
            &outside_ip,
        ])
        .status
        .success()
    };
    assert!(
        wait_for(T, ping),
        "VM → outside through ICMPv6 ping sockets\n{}",
        d.log()
    );
}
