//! NAT networking (vmnet8), end to end: namespace VMs on a NAT vnet get their router
//! and DNS server from the vnet's DHCP service and reach, through the NAT device and the
//! daemon's own sockets, an "outside" namespace that only the host can reach (joined to
//! the host by a veth): ping, UDP request/response, DNS from a `dnsmasq` on loopback.

use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use vnet_control::PortSpec;
use vnet_testbed::api::{client, tap_vm};
use vnet_testbed::payload::sha256;
use vnet_testbed::{
    api, bin_path, skip_unless, skip_unless_root, unique_name, wait_for, ChildGuard, Daemon, Guest,
    Netdev, Netns, NsVm, Veth,
};

const T: Duration = Duration::from_secs(30);

/// A third octet for this test's subnets, so tests running at once do not collide.
fn octet(salt: u32) -> u32 {
    (std::process::id().wrapping_mul(7) + salt * 37) % 200 + 20
}

/// The world outside the host: a namespace behind a veth, `10.209.N.2`, reachable
/// from the host's `10.209.N.1` only.
struct Outside {
    ns: Netns,
    _veth: Veth,
    ip: String,
}

impl Outside {
    fn new(n: u32) -> Outside {
        let ns = Netns::new("out");
        let mut veth = Veth::new();
        veth.move_b(&ns);
        let host = format!("10.209.{n}.1/24");
        let ip = format!("10.209.{n}.2");
        let ok = Command::new("ip")
            .args(["addr", "add", &host, "dev", veth.a()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "address on the host's veth end");
        ns.exec_ok(&["ip", "addr", "add", &format!("{ip}/24"), "dev", veth.b()]);
        Outside {
            ns,
            _veth: veth,
            ip,
        }
    }
}

/// A daemon with NAT vnet `net` on `10.208.N.0/24` (DHCP on, NAT with `nat_extra`).
fn nat_daemon(net: &str, n: u32, nat_extra: &str) -> Daemon {
    Daemon::start(Some(&format!(
        "[[network]]\nname = \"{net}\"\nsubnet = \"10.208.{n}.0/24\"\ndhcp = {{}}\n\
         nat = {{ udp_timeout_secs = 5{nat_extra} }}\n"
    )))
}

/// As [`nat_daemon`], but the daemon runs as `nobody`: the NAT needs no privilege. A
/// wrapper hands it its run and state directories, then drops to uid/gid 65534; the
/// binary is copied into `dir` (made world-readable), which `nobody` can reach wherever
/// the build tree is.
fn unprivileged_nat_daemon(dir: &std::path::Path, net: &str, n: u32, nat_extra: &str) -> Daemon {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary = dir.join("vnetd");
    std::fs::copy(bin_path("vnetd"), &binary).unwrap();
    let wrapper = dir.join("vnetd-as-nobody");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh
\
             for a in \"$@\"; do
\
             case $prev in --run-dir|--state-dir) chown 65534:65534 \"$a\" \"$(dirname \"$a\")\";; esac
\
             prev=$a
\
             done
\
             exec setpriv --reuid=65534 --regid=65534 --clear-groups {} \"$@\"
",
            bin_path("vnetd").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = Daemon::builder()
        .binary(&wrapper)
        .config(&format!(
            "[[network]]\nname = \"{net}\"\nsubnet = \"10.208.{n}.0/24\"\ndhcp = {{}}\n\
             nat = {{ udp_timeout_secs = 5{nat_extra} }}\n"
        ))
        .start();
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid().unwrap())).unwrap();
    assert!(
        status.lines().any(|l| l.starts_with("Uid:\t65534\t")),
        "the daemon runs as nobody: {status}"
    );
    assert!(d.log().contains("running unprivileged"), "{}", d.log());
    d
}

/// A VM on `net` configured by DHCP; checks that the lease names the NAT device.
fn dhcp_vm(d: &Daemon, net: &str, n: u32, mac: &str) -> NsVm {
    let (_, vm) = tap_vm(d, net, mac, "");
    let lease = vm.dhcp(&[]).expect("a lease on the NAT vnet");
    let gw = format!("10.208.{n}.2");
    assert_eq!(lease.routers(), [gw.as_str()], "router = NAT device");
    assert_eq!(lease.dns(), [gw.as_str()], "DNS = NAT device");
    vm
}

/// The world's DNS: a `dnsmasq` on the host's loopback serving `records`
/// (`--host-record` values such as `www.nat.test,192.0.2.55`) and nothing else.
struct DnsUpstream {
    dnsmasq: ChildGuard,
    port: u16,
    _dir: tempfile::TempDir,
}

impl DnsUpstream {
    fn start(records: &[&str]) -> DnsUpstream {
        let port = {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap().port()
        };
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            &format!("--port={port}"),
            &format!("--pid-file={}", dir.path().join("dnsmasq.pid").display()),
            "--user=root",
        ]);
        cmd.args(records.iter().map(|r| format!("--host-record={r}")));
        DnsUpstream {
            dnsmasq: ChildGuard::spawn(cmd, "dnsmasq").expect("dnsmasq"),
            port,
            _dir: dir,
        }
    }

    /// The NAT spec's setting that points at it.
    fn nat_setting(&self) -> String {
        format!("dns_upstreams = [\"127.0.0.1:{}\"]", self.port)
    }
}

#[test]
fn a_dhcp_vm_pings_the_gateway_and_a_host_only_reachable_address_through_the_nat() {
    skip_unless_root!();
    let n = octet(1);
    let net = unique_name("nat");
    let d = nat_daemon(&net, n, "");
    let outside = Outside::new(n);
    let vm = dhcp_vm(&d, &net, n, "52:54:00:08:00:01");
    assert!(
        wait_for(T, || vm.ping(&format!("10.208.{n}.2"), 1)),
        "VM → NAT gateway\n{}",
        d.log()
    );
    let log = d.log();
    let mode = if log.contains("ICMP echo through ping sockets") {
        "ping sockets"
    } else if log.contains("ICMP echo through raw sockets") {
        "raw sockets"
    } else {
        "neither"
    };
    skip_unless!(
        mode != "neither",
        "the host allows neither ping sockets nor raw sockets for ICMP echo"
    );
    eprintln!("nat ping: ICMP echo leaves through {mode}");
    assert!(
        wait_for(T, || vm.ping(&outside.ip, 2)),
        "VM → outside through the NAT ({mode})\n{}",
        d.log()
    );
    // The outside has no route to the vnet: replies can only come back through the NAT.
    let out = vm
        .ns()
        .exec_ok(&["ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", &outside.ip]);
    assert!(out.contains("3 received"), "{out}");
}

#[test]
fn udp_requests_get_responses_from_an_echo_server_outside() {
    skip_unless_root!();
    let n = octet(2);
    let net = unique_name("nat");
    let d = nat_daemon(&net, n, "");
    let outside = Outside::new(n);
    let _echo = outside
        .ns
        .spawn(&["socat", "UDP4-RECVFROM:7777,fork,reuseaddr", "EXEC:cat"]);
    let vm = dhcp_vm(&d, &net, n, "52:54:00:08:00:02");
    let target = format!("UDP4:{}:7777", outside.ip);
    let ask = |msg: &str| {
        let out = vm
            .ns()
            .command(&["socat", "-T", "2", "-", &target])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(msg.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        wait_for(T, || ask("hello through the NAT\n")
            == "hello through the NAT\n"),
        "UDP echo through the NAT\n{}",
        d.log()
    );
    // Two flows (two source ports) in a row each get their own answer.
    assert_eq!(ask("second\n"), "second\n");
    assert_eq!(ask("third\n"), "third\n");

    // The NAT device counted them, in the API and in /metrics.
    let nat = client(&d).network(&net).unwrap().nat.expect("NAT info");
    assert_eq!(nat.gateway.to_string(), format!("10.208.{n}.2"));
    let c = nat.counters;
    assert!(
        c.to_host >= 3 && c.from_host >= 3 && c.flows_opened >= 3 && c.arp_replies >= 1,
        "{c:?}"
    );
    let metrics = client(&d).metrics().unwrap();
    let sample = |name: &str| {
        let prefix = format!("{name}{{net=\"{net}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix)?.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {prefix} in\n{metrics}"))
    };
    assert!(sample("vnet_nat_from_host_total") >= 3);
    assert!(sample("vnet_nat_flows_opened_total") >= 3);
    sample("vnet_nat_flows"); // a gauge: the flows may have idled out already
    let show = d.cli_ok(&["net", "show", &net]);
    assert!(show.contains("  from_host"), "{show}");

    // A datagram larger than the vnet's MTU leaves the VM in fragments; the NAT device
    // puts it back together and the outside gets it whole.
    let dir = tempfile::tempdir().unwrap();
    let (big, got) = (dir.path().join("big"), dir.path().join("got"));
    std::fs::write(&big, vec![b'x'; 4000]).unwrap();
    let _sink = outside.ns.spawn(&[
        "socat",
        "-u",
        "UDP4-RECV:7778",
        &format!("CREATE:{}", got.display()),
    ]);
    let arrived = || std::fs::metadata(&got).map_or(0, |m| m.len());
    assert!(
        wait_for(T, || {
            vm.ns().exec(&[
                "socat",
                "-u",
                &format!("FILE:{}", big.display()),
                &format!("UDP4-SENDTO:{}:7778", outside.ip),
            ]);
            arrived() > 0
        }),
        "a 4000-byte datagram through the NAT\n{}",
        d.log()
    );
    assert_eq!(arrived() % 4000, 0, "only whole datagrams arrive");
    let c = client(&d).network(&net).unwrap().nat.unwrap().counters;
    assert!(c.fragments >= 3 && c.reassembled >= 1, "{c:?}");
    // And back: the echo of such a datagram reaches the VM in fragments from the NAT
    // device, which the VM's kernel puts together.
    let long = "z".repeat(4000);
    assert_eq!(ask(&long), long, "a 4000-byte echo\n{}", d.log());
    let c = client(&d).network(&net).unwrap().nat.unwrap().counters;
    assert_eq!(c.oversize, 0, "{c:?}");
}

#[test]
fn dns_queries_to_the_gateway_are_answered_by_the_configured_upstream() {
    skip_unless_root!();
    let n = octet(3);
    let upstream = DnsUpstream::start(&["www.nat.test,192.0.2.55"]);
    let net = unique_name("nat");
    let d = nat_daemon(&net, n, &format!(", {}", upstream.nat_setting()));
    let vm = dhcp_vm(&d, &net, n, "52:54:00:08:00:03");
    let gw = format!("10.208.{n}.2");
    let lookup = || {
        let out = vm.ns().exec(&["busybox", "nslookup", "www.nat.test", &gw]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        wait_for(T, || lookup().contains("192.0.2.55")),
        "nslookup through the NAT's DNS: {}\ndnsmasq: {}\n{}",
        lookup(),
        upstream.dnsmasq.log(),
        d.log()
    );
    // DNS over TCP (what a resolver does after a truncated answer) reaches the same
    // upstream through the gateway's port 53.
    let mut query = vec![0, 30, 0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    query.extend_from_slice(b"\x03www\x03nat\x04test\x00\x00\x01\x00\x01");
    let tcp_lookup = || {
        let out = vm
            .ns()
            .command(&["socat", "-t", "3", "-", &format!("TCP4:{gw}:53")])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(&query)?;
                c.wait_with_output()
            })
            .unwrap();
        out.stdout
    };
    assert!(
        wait_for(T, || tcp_lookup().windows(4).any(|w| w == [192, 0, 2, 55])),
        "DNS over TCP through the NAT\ndnsmasq: {}\n{}",
        upstream.dnsmasq.log(),
        d.log()
    );
}

/// The NAT device's DNS knows the vnet's DHCP clients by name, as vmnet-natd does: a
/// VM that leased an address as `alpha` is found by another as `alpha.vnet.test` (the
/// vnet's domain) and as `alpha`; names no lease holds still come from upstream.
#[test]
fn a_vm_finds_another_by_its_dhcp_name_through_the_gateway() {
    skip_unless_root!();
    let n = octet(13);
    let upstream = DnsUpstream::start(&["www.nat.test,192.0.2.55"]);
    let net = unique_name("nat");
    let d = Daemon::start(Some(&format!(
        "[[network]]\nname = \"{net}\"\nsubnet = \"10.208.{n}.0/24\"\n\
         dhcp = {{ domain = \"vnet.test\" }}\nnat = {{ {} }}\n",
        upstream.nat_setting()
    )));
    let (_, alpha) = tap_vm(&d, &net, "52:54:00:08:00:0d", "");
    let lease = alpha
        .dhcp(&["-x", "hostname:alpha"])
        .expect("alpha's lease");
    let alpha_ip = lease.ip().expect("an address").to_string();
    let beta = dhcp_vm(&d, &net, n, "52:54:00:08:00:0e");
    let gw = format!("10.208.{n}.2");
    let lookup = |name: &str| {
        let out = beta.ns().exec(&["busybox", "nslookup", name, &gw]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let answers = |name: &str, ip: &str| {
        let out = lookup(name);
        out.lines()
            .any(|l| l.starts_with("Address") && l.split_whitespace().last() == Some(ip))
    };
    assert!(
        wait_for(T, || answers("alpha.vnet.test", &alpha_ip)),
        "alpha.vnet.test through the NAT's DNS: {}\n{}",
        lookup("alpha.vnet.test"),
        d.log()
    );
    assert!(
        answers("ALPHA.vnet.test", &alpha_ip),
        "{}",
        lookup("ALPHA.vnet.test")
    );
    assert!(answers("alpha.", &alpha_ip), "{}", lookup("alpha."));
    assert!(
        answers("www.nat.test", "192.0.2.55"),
        "not a lease: upstream's answer: {}\ndnsmasq: {}",
        lookup("www.nat.test"),
        upstream.dnsmasq.log()
    );
    let c = client(&d).network(&net).unwrap().nat.unwrap().counters;
    assert!(c.dns_local >= 3 && c.dns_answers >= 1, "{c:?}");
}

/// Nobody listens outside: the host's connect is refused and the NAT answers the
/// guest's SYN with a RST. "Promptly" is that the first SYN got that answer: a NAT
/// that did not pass the refusal on, or took as long as the guest's 1 s
/// retransmission timeout to, shows as a retransmitted SYN (and a silent one as a
/// connect that times out rather than is refused).
#[test]
fn a_refused_tcp_connection_fails_promptly() {
    skip_unless_root!();
    let n = octet(4);
    let net = unique_name("nat");
    let d = nat_daemon(&net, n, "");
    let outside = Outside::new(n);
    let vm = dhcp_vm(&d, &net, n, "52:54:00:08:00:04");
    let syn_retransmits = || vm.ns().counter("TcpExt:TCPSynRetrans");
    let before = syn_retransmits();
    let out = vm.ns().exec(&[
        "socat",
        "-",
        &format!("TCP4:{}:80,connect-timeout=10", outside.ip),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refused"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        syn_retransmits() - before,
        0,
        "the guest had to send its SYN again before the refusal came back\n{}",
        d.log()
    );
}

#[test]
fn tcp_downloads_and_uploads_arrive_intact_through_the_nat() {
    skip_unless_root!();
    let n = octet(8);
    let net = unique_name("nat");
    let d = nat_daemon(&net, n, "");
    let outside = Outside::new(n);
    let vm = dhcp_vm(&d, &net, n, "52:54:00:08:00:08");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("payload");
    let mut seed = 0x1234_5678_9abc_def0u64;
    let bytes: Vec<u8> = (0..3 * 1024 * 1024)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    std::fs::write(&file, &bytes).unwrap();
    let want = sha256(&file);
    // Download: the outside serves the file to each connection.
    let _server = outside.ns.spawn(&[
        "socat",
        "-u",
        &format!("OPEN:{}", file.display()),
        "TCP4-LISTEN:8080,reuseaddr,fork",
    ]);
    let got = dir.path().join("downloaded");
    let fetch = || {
        let _ = std::fs::remove_file(&got);
        vm.ns().exec(&[
            "socat",
            "-u",
            &format!("TCP4:{}:8080,connect-timeout=5", outside.ip),
            &format!("CREATE:{}", got.display()),
        ]);
        got.exists() && sha256(&got) == want
    };
    assert!(wait_for(T, fetch), "download through the NAT\n{}", d.log());
    // Upload: the VM sends, the outside stores.
    let stored = dir.path().join("uploaded");
    let mut sink = outside.ns.spawn(&[
        "socat",
        "-u",
        "TCP4-LISTEN:8081,reuseaddr",
        &format!("CREATE:{}", stored.display()),
    ]);
    let sent = wait_for(T, || {
        vm.ns()
            .exec(&[
                "socat",
                "-u",
                &format!("OPEN:{}", file.display()),
                &format!("TCP4:{}:8081,connect-timeout=5", outside.ip),
            ])
            .status
            .success()
    });
    assert!(sent, "upload through the NAT\n{}", d.log());
    assert!(
        sink.wait_timeout(T).is_some(),
        "the sink saw EOF (FIN went through)"
    );
    assert_eq!(sha256(&stored), want, "upload intact");
}

/// The same ping, but with the daemon in a namespace of its own whose
/// `net.ipv4.ping_group_range` admits it: the unprivileged path, ping sockets.
#[test]
fn ping_sockets_carry_echo_where_the_daemons_namespace_allows_them() {
    skip_unless_root!();
    let n = octet(5);
    let host = Netns::new("host");
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
            bin_path("vnetd").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let net = unique_name("nat");
    let d = Daemon::builder()
        .binary(&wrapper)
        .config(&format!(
            "[[network]]\nname = \"{net}\"\nsubnet = \"10.208.{n}.0/24\"\nnat = {{}}\n"
        ))
        .start();
    assert!(
        d.log().contains("ICMP echo through ping sockets"),
        "{}",
        d.log()
    );
    // The outside, joined to the daemon's namespace.
    let outside = Netns::new("out");
    let mut veth = Veth::new();
    veth.move_a(&host);
    veth.move_b(&outside);
    host.exec_ok(&[
        "ip",
        "addr",
        "add",
        &format!("10.209.{n}.1/24"),
        "dev",
        veth.a(),
    ]);
    let outside_ip = format!("10.209.{n}.2");
    outside.exec_ok(&[
        "ip",
        "addr",
        "add",
        &format!("{outside_ip}/24"),
        "dev",
        veth.b(),
    ]);
    // A VM with a static address: its TAP lives in the daemon's namespace.
    let ifname = unique_name("vt");
    client(&d)
        .add_port(
            &net,
            &PortSpec::Tap {
                ifname: ifname.clone(),
                vlan: Default::default(),
                policy: Default::default(),
            },
        )
        .unwrap_or_else(|e| panic!("TAP port: {e}\n{}", d.log()));
    let vm = Netns::new("vm");
    host.exec_ok(&["ip", "link", "set", &ifname, "netns", vm.name()]);
    vm.exec_ok(&[
        "ip",
        "addr",
        "add",
        &format!("10.208.{n}.100/24"),
        "dev",
        &ifname,
    ]);
    vm.exec_ok(&["ip", "link", "set", &ifname, "up"]);
    vm.exec_ok(&[
        "ip",
        "route",
        "add",
        "default",
        "via",
        &format!("10.208.{n}.2"),
    ]);
    let ping = || {
        vm.exec(&[
            "ping",
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
        "VM → outside through ping sockets\n{}",
        d.log()
    );
}

/// UDP to the gateway reaches the host's loopback only where `host_loopback` is on.
#[test]
fn the_host_loopback_is_reachable_only_when_allowed() {
    skip_unless_root!();
    let (a, b) = (octet(6), octet(7));
    let port = {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let mut cmd = Command::new("socat");
    cmd.args([
        &format!("UDP4-RECVFROM:{port},bind=127.0.0.1,fork,reuseaddr"),
        "EXEC:cat",
    ]);
    let _echo = ChildGuard::spawn(cmd, "socat echo on loopback").unwrap();
    let (open, closed) = (unique_name("nat"), unique_name("nat"));
    let d = Daemon::start(Some(&format!(
        "[[network]]\nname = \"{open}\"\nsubnet = \"10.208.{a}.0/24\"\ndhcp = {{}}\n\
         nat = {{ host_loopback = true }}\n\n\
         [[network]]\nname = \"{closed}\"\nsubnet = \"10.208.{b}.0/24\"\ndhcp = {{}}\nnat = {{}}\n"
    )));
    let ask = |vm: &NsVm, n: u32| {
        let target = format!("UDP4:10.208.{n}.2:{port}");
        let out = vm
            .ns()
            .command(&["socat", "-T", "2", "-", &target])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(b"knock\n")?;
                c.wait_with_output()
            })
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let allowed = dhcp_vm(&d, &open, a, "52:54:00:08:00:06");
    assert!(
        wait_for(T, || ask(&allowed, a) == "knock\n"),
        "host_loopback = true reaches 127.0.0.1\n{}",
        d.log()
    );
    let denied = dhcp_vm(&d, &closed, b, "52:54:00:08:00:07");
    assert_eq!(ask(&denied, b), "", "host_loopback off: nothing comes back");
    // TCP likewise: a loopback-only listener is reached through the open vnet's gateway
    // and refused on the other.
    let tcp_port = {
        let s = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let mut cmd = Command::new("socat");
    cmd.args([
        &format!("TCP4-LISTEN:{tcp_port},bind=127.0.0.1,fork,reuseaddr"),
        "SYSTEM:echo loopback",
    ]);
    let _tcp = ChildGuard::spawn(cmd, "socat TCP on loopback").unwrap();
    let fetch = |vm: &NsVm, n: u32| {
        let out = vm.ns().exec(&[
            "socat",
            "-u",
            &format!("TCP4:10.208.{n}.2:{tcp_port},connect-timeout=5"),
            "-",
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        wait_for(T, || fetch(&allowed, a) == "loopback\n"),
        "TCP to the gateway reaches 127.0.0.1 with host_loopback\n{}",
        d.log()
    );
    assert_eq!(fetch(&denied, b), "", "and is refused without it");
}

/// The daemon's open fds.
fn fd_count(d: &Daemon) -> usize {
    let pid = d.pid().expect("daemon running");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|r| r.count())
        .unwrap_or(0)
}

#[test]
fn short_connections_and_idle_flows_leave_no_sockets_behind() {
    skip_unless_root!();
    let n = octet(9);
    let net = unique_name("nat");
    let d = nat_daemon(&net, n, "");
    let outside = Outside::new(n);
    let vm = dhcp_vm(&d, &net, n, "52:54:00:08:00:09");
    let _server = outside.ns.spawn(&[
        "socat",
        "TCP4-LISTEN:8080,reuseaddr,fork",
        "SYSTEM:echo hello",
    ]);
    let _echo = outside
        .ns
        .spawn(&["socat", "UDP4-RECVFROM:7777,fork,reuseaddr", "EXEC:cat"]);
    let target = format!("TCP4:{}:8080,connect-timeout=5", outside.ip);
    assert!(
        wait_for(T, || String::from_utf8_lossy(
            &vm.ns().exec(&["socat", "-u", &target, "-"]).stdout
        )
        .contains("hello")),
        "TCP through the NAT\n{}",
        d.log()
    );
    let before = fd_count(&d);
    let script = format!(
        "ok=0; for i in $(seq 1000); do socat -u {target} - | grep -q hello && ok=$((ok+1)); done; echo $ok"
    );
    let started = std::time::Instant::now();
    let out = vm.ns().exec_ok(&["sh", "-c", &script]);
    assert_eq!(out.trim(), "1000", "every short connection got its answer");
    eprintln!("nat: 1000 short connections in {:?}", started.elapsed());
    // Both FINs seen: every TCP flow's socket is closed at once.
    assert!(
        wait_for(Duration::from_secs(5), || fd_count(&d) <= before),
        "TCP: fds before {before}, now {}\n{}",
        fd_count(&d),
        d.log()
    );
    let udp = format!("UDP4:{}:7777", outside.ip);
    let script = format!("for i in $(seq 10); do echo x | socat -T 1 - {udp} >/dev/null; done");
    vm.ns().exec_ok(&["sh", "-c", &script]);
    // UDP flows end after udp_timeout_secs = 5 without traffic.
    assert!(
        wait_for(Duration::from_secs(20), || fd_count(&d) <= before),
        "fds before {before}, now {}\n{}",
        fd_count(&d),
        d.log()
    );
}

/// The acceptance scenario with a real kernel: a QEMU guest on a stream port of a
/// NAT vnet gets its lease, resolves a name through the NAT's DNS and fetches a file over
/// HTTP from a server only the host can reach; the file arrives intact. The daemon runs
/// as an ordinary user (`nobody`): none of this needs root.
#[test]
fn a_qemu_guest_resolves_and_fetches_over_http_through_the_nat() {
    skip_unless_root!();
    let n = octet(10);
    let dir = tempfile::tempdir().unwrap();
    let outside = Outside::new(n);
    let upstream = DnsUpstream::start(&[&format!("files.nat.test,{}", outside.ip)]);
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    let mut seed = 0x0bad_cafe_dead_beefu64;
    let bytes: Vec<u8> = (0..1024 * 1024)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    std::fs::write(www.join("blob"), &bytes).unwrap();
    let want = sha256(&www.join("blob"));
    let www_arg = www.display().to_string();
    let _httpd = outside
        .ns
        .spawn(&["busybox", "httpd", "-f", "-p", "8080", "-h", &www_arg]);
    let net = unique_name("nat");
    let d = unprivileged_nat_daemon(
        dir.path(),
        &net,
        n,
        &format!(", {}", upstream.nat_setting()),
    );
    let guest = Guest::builder()
        .name("natguest")
        .nic_with_mac(
            Netdev::Stream {
                path: d.net_dir(&net).join("stream.sock"),
            },
            "52:54:00:08:00:10",
        )
        .boot()
        .expect("guest boots");
    let lease = guest.dhcp("eth0", "").expect("guest lease");
    let gw = format!("10.208.{n}.2");
    assert_eq!(lease.routers(), [gw.as_str()]);
    assert_eq!(lease.dns(), [gw.as_str()]);
    let slow = Duration::from_secs(90);
    // (dnsmasq refuses the AAAA half of busybox's lookup: only the A answer counts.)
    let (_, lookup) = guest
        .exec(&format!("nslookup files.nat.test {gw}"), slow)
        .expect("nslookup runs");
    assert!(lookup.contains(&outside.ip), "{lookup}");
    let got = guest.exec_ok(
        &format!("wget -q -O - http://{}:8080/blob | sha256sum", outside.ip),
        slow,
    );
    assert!(
        got.contains(&want),
        "guest got {got}, want {want}\n{}",
        d.log()
    );
}

/// nat.conf's `[incomingtcp]`: a host port forwarded to a server inside a VM; a taken
/// host port is a clear error.
#[test]
fn a_port_forward_reaches_a_server_inside_a_vm() {
    skip_unless_root!();
    let n = octet(12);
    let port = {
        let s = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let net = unique_name("nat");
    let guest = format!("10.208.{n}.50");
    let d = nat_daemon(
        &net,
        n,
        &format!(", forward = [{{ host = \"127.0.0.1:{port}\", guest = \"{guest}:8080\" }}]"),
    );
    let (_, vm) = tap_vm(&d, &net, "52:54:00:08:00:12", &format!("{guest}/24"));
    let _server = vm.ns().spawn(&[
        "socat",
        "TCP4-LISTEN:8080,reuseaddr,fork",
        "SYSTEM:echo served by the VM",
    ]);
    let fetch = || {
        let out = Command::new("socat")
            .args([
                "-u",
                &format!("TCP4:127.0.0.1:{port},connect-timeout=3"),
                "-",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        wait_for(T, || fetch() == "served by the VM\n"),
        "host 127.0.0.1:{port} → VM {guest}:8080\n{}",
        d.log()
    );
    for _ in 0..20 {
        assert_eq!(fetch(), "served by the VM\n");
    }
    // A second forward added live through the CLI works at once; removed, it is gone.
    let port2 = {
        let s = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let host2 = format!("127.0.0.1:{port2}");
    d.cli_ok(&["forward", "add", &net, &host2, &format!("{guest}:8080")]);
    let listed: Vec<vnet_control::ForwardSpec> = api::cli_json(&d, &["forward", "ls", &net]);
    assert_eq!(listed.len(), 2, "{listed:?}");
    let fetch2 = || {
        let out = Command::new("socat")
            .args(["-u", &format!("TCP4:{host2},connect-timeout=3"), "-"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(fetch2(), "served by the VM\n", "live forward\n{}", d.log());
    let again = api::cli_fails(
        &d,
        &["forward", "add", &net, &host2, &format!("{guest}:22")],
    );
    assert!(again.contains("already forwarded"), "{again}");
    d.cli_ok(&["forward", "rm", &net, &host2]);
    assert_eq!(fetch2(), "", "removed: nobody listens on {host2}");
    assert_eq!(
        fetch(),
        "served by the VM\n",
        "the first forward is untouched"
    );
    // The same host port again: taken, and the daemon says so.
    let err = Daemon::builder()
        .config(&format!(
            "[[network]]\nname = \"{}\"\nsubnet = \"10.208.{n}.0/24\"\n\
             nat = {{ forward = [{{ host = \"127.0.0.1:{port}\", guest = \"{guest}:80\" }}] }}\n",
            unique_name("nat")
        ))
        .try_start()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("port is taken"), "{err}");
}

/// A free UDP port on the host's loopback.
fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

/// nat.conf's `[incomingudp]`: host ports forwarded to a UDP echo server inside a VM,
/// from the config and live, TCP and UDP on one host port; a taken host port is a
/// clear error.
#[test]
fn a_udp_port_forward_reaches_an_echo_server_inside_a_vm() {
    skip_unless_root!();
    let n = octet(11);
    let port = free_udp_port();
    let net = unique_name("nat");
    let guest = format!("10.208.{n}.51");
    let d = nat_daemon(
        &net,
        n,
        &format!(
            ", forward = [{{ proto = \"udp\", host = \"127.0.0.1:{port}\", guest = \"{guest}:7777\" }}]"
        ),
    );
    let (_, vm) = tap_vm(&d, &net, "52:54:00:08:00:13", &format!("{guest}/24"));
    let _echo = vm
        .ns()
        .spawn(&["socat", "UDP4-RECVFROM:7777,fork,reuseaddr", "EXEC:cat"]);
    // One datagram from a host socket to `host`; the answer, if one comes back from
    // `host` within a second.
    let ask_from = |client: &UdpSocket, host: &str, msg: &str| {
        client
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        client.send_to(msg.as_bytes(), host).ok()?;
        let mut buf = [0u8; 2048];
        let (len, from) = client.recv_from(&mut buf).ok()?;
        assert_eq!(from.to_string(), host, "the answer comes from the forward");
        Some(String::from_utf8_lossy(&buf[..len]).into_owned())
    };
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let host1 = format!("127.0.0.1:{port}");
    // The first datagrams may be lost while the NAT device asks for the VM's MAC.
    assert!(
        wait_for(T, || ask_from(&peer, &host1, "hello VM").as_deref()
            == Some("hello VM")),
        "host {host1} → VM {guest}:7777 and back\n{}",
        d.log()
    );
    for i in 0..10 {
        let msg = format!("datagram {i}");
        assert_eq!(ask_from(&peer, &host1, &msg), Some(msg));
    }
    // Each host peer is its own flow.
    let other = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert_eq!(
        ask_from(&other, &host1, "another peer").as_deref(),
        Some("another peer")
    );
    let c = client(&d).network(&net).unwrap().nat.unwrap().counters;
    assert!(
        c.from_host >= 12 && c.to_host >= 12 && c.flows_opened >= 2,
        "{c:?}"
    );

    // A second forward added live through the CLI works at once; a TCP forward may
    // share its host port, and removing that one leaves the UDP one alone.
    let port2 = free_udp_port();
    let host2 = format!("127.0.0.1:{port2}");
    let to_echo = format!("{guest}:7777");
    let added = d.cli_ok(&["forward", "add", &net, &host2, &to_echo, "--udp"]);
    assert!(
        added.contains(&format!("udp {host2} -> {to_echo}")),
        "{added}"
    );
    d.cli_ok(&["forward", "add", &net, &host2, &format!("{guest}:8080")]);
    let listed = d.cli_ok(&["forward", "ls", &net]);
    assert!(
        listed.contains(&format!("udp {host2} ->")) && listed.contains(&format!("tcp {host2} ->")),
        "{listed}"
    );
    let again = api::cli_fails(&d, &["forward", "add", &net, &host2, &to_echo, "--udp"]);
    assert!(
        again.contains("udp") && again.contains("already forwarded"),
        "{again}"
    );
    d.cli_ok(&["forward", "rm", &net, &host2]);
    let client2 = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert_eq!(
        ask_from(&client2, &host2, "live").as_deref(),
        Some("live"),
        "live UDP forward\n{}",
        d.log()
    );
    d.cli_ok(&["forward", "rm", &net, &host2, "--udp"]);
    assert_eq!(
        ask_from(&client2, &host2, "gone"),
        None,
        "removed: nothing answers on {host2}"
    );
    let gone = api::cli_fails(&d, &["forward", "rm", &net, &host2, "--udp"]);
    assert!(gone.contains("forwards no udp"), "{gone}");
    assert_eq!(
        ask_from(&peer, &host1, "still there").as_deref(),
        Some("still there"),
        "the first forward is untouched"
    );

    // Taken host ports: live, by a socket of the test's, and at start, by the daemon.
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let host3 = taken.local_addr().unwrap().to_string();
    let err = api::cli_fails(&d, &["forward", "add", &net, &host3, &to_echo, "--udp"]);
    assert!(err.contains("port is taken"), "{err}");
    let err = Daemon::builder()
        .config(&format!(
            "[[network]]\nname = \"{}\"\nsubnet = \"10.208.{n}.0/24\"\n\
             nat = {{ forward = [{{ proto = \"udp\", host = \"{host1}\", guest = \"{guest}:7\" }}] }}\n",
            unique_name("nat")
        ))
        .try_start()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("udp") && err.contains("port is taken"),
        "{err}"
    );
}

/// Guests never reach link-local addresses (the cloud metadata service) nor the host's
/// own addresses through the NAT: refused at once (RST), counted; with `host_loopback`
/// the host's addresses are reached.
#[test]
fn link_local_and_the_hosts_own_addresses_are_refused() {
    skip_unless_root!();
    let (a, b, o) = (octet(40), octet(41), octet(42));
    // The host's own address (its veth end, up before the daemon reads its addresses),
    // with a listener on it.
    let outside = Outside::new(o);
    let host_ip = format!("10.209.{o}.1");
    let listener = std::net::TcpListener::bind(format!("{host_ip}:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            use std::io::Write;
            let _ = (&s).write_all(b"host\n");
        }
    });
    let (open, closed) = (unique_name("nat"), unique_name("nat"));
    let d = Daemon::start(Some(&format!(
        "[[network]]\nname = \"{open}\"\nsubnet = \"10.208.{a}.0/24\"\ndhcp = {{}}\n\
         nat = {{ host_loopback = true }}\n\n\
         [[network]]\nname = \"{closed}\"\nsubnet = \"10.208.{b}.0/24\"\ndhcp = {{}}\nnat = {{}}\n"
    )));
    let fetch = |vm: &NsVm, to: &str| {
        let out = vm
            .ns()
            .exec(&["socat", "-u", &format!("TCP4:{to},connect-timeout=5"), "-"]);
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let refused = |net: &str| {
        let c = client(&d).network(net).unwrap().nat.unwrap().counters;
        c.refused_destinations
    };
    let denied = dhcp_vm(&d, &closed, b, "52:54:00:08:00:40");
    // An immediate refusal (RST), not a connect that times out: "refused", and the
    // guest never had to send its SYN again.
    let syn_retransmits = || denied.ns().counter("TcpExt:TCPSynRetrans");
    let before = syn_retransmits();
    let (got, err) = fetch(&denied, "169.254.169.254:80");
    assert_eq!(got, "");
    assert!(err.contains("refused"), "{err}\n{}", d.log());
    assert_eq!(
        syn_retransmits() - before,
        0,
        "the SYN to 169.254.169.254 went unanswered at first\n{}",
        d.log()
    );
    assert_eq!(refused(&closed), 1, "counted");
    let (got, err) = fetch(&denied, &format!("{host_ip}:{port}"));
    assert_eq!(
        got,
        "",
        "the host's own address is refused: {err}\n{}",
        d.log()
    );
    assert!(err.contains("refused"), "{err}");
    assert_eq!(refused(&closed), 2, "counted");
    let allowed = dhcp_vm(&d, &open, a, "52:54:00:08:00:41");
    let (got, err) = fetch(&allowed, &format!("{host_ip}:{port}"));
    assert_eq!(
        got,
        "host\n",
        "host_loopback reaches it: {err}\n{}",
        d.log()
    );
    let (got, _) = fetch(&allowed, "169.254.169.254:80");
    assert_eq!(got, "", "link-local even with host_loopback");
    assert_eq!(refused(&open), 1);
    drop(outside);
}
