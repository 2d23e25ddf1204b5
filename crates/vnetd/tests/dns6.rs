//! The NAT device's DNS relay over IPv6 (issue 16 item 5), end to end: a namespace VM
//! that autoconfigured by SLAAC asks the DNS server its router advertisement's RDNSS
//! names (the gateway's `::2`) over IPv6; the relay forwards to an IPv6 upstream (a
//! `dnsmasq` on the host's `::1`) and answers A and AAAA; it answers the vnet's DHCP
//! names itself (a name with only an IPv4 lease: AAAA is NOERROR without records, RFC
//! 4074); datagrams that are no query are dropped, counted, and the relay goes on.
//!
//! The DNS client is a few lines of Python in the VM's namespace, so each answer's
//! RCODE, record count and records are checked exactly.

use std::net::{Ipv6Addr, UdpSocket};
use std::time::Duration;

use vnet_control::NatCounters;
use vnet_testbed::api::{client, tap_vm};
use vnet_testbed::{skip_unless_root, unique_name, wait_for, ChildGuard, Daemon, NsVm};

const T: Duration = Duration::from_secs(60);

/// A third octet for this test's IPv4 subnets, so tests running at once do not collide.
fn octet(salt: u32) -> u32 {
    (std::process::id().wrapping_mul(13) + salt * 37) % 200 + 20
}

/// Sends one query (`name`, `qtype`) to `[server]:53` from the VM and prints
/// `rcode=N from=ADDR RECORDS...`, or fails after three seconds without an answer.
const DIG: &str = r#"
import socket, struct, sys
server, name, qtype = sys.argv[1], sys.argv[2], int(sys.argv[3])
q = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
q += struct.pack(">HH", qtype, 1)
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.settimeout(3)
s.sendto(q, (server, 53))
a, src = s.recvfrom(4096)
assert a[:2] == q[:2], "the query's ID"
rcode, count = a[3] & 15, struct.unpack(">H", a[6:8])[0]
i = 12
while a[i]:
    i += a[i] + 1
i += 5
records = []
for _ in range(count):
    if a[i] & 0xC0 == 0xC0:
        i += 2
    else:
        while a[i]:
            i += a[i] + 1
        i += 1
    rtype, _, _, length = struct.unpack(">HHIH", a[i : i + 10])
    data = a[i + 10 : i + 10 + length]
    i += 10 + length
    family = {1: socket.AF_INET, 28: socket.AF_INET6}.get(rtype)
    records.append(socket.inet_ntop(family, data) if family else "type%d" % rtype)
print("rcode=%d from=%s %s" % (rcode, src[0], " ".join(records)))
"#;

/// Sends the bytes of hex string `hex` to `[server]:53` from the VM, no answer awaited.
const SEND: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.sendto(bytes.fromhex(sys.argv[2]), (sys.argv[1], 53))
"#;

const A: u16 = 1;
const AAAA: u16 = 28;

/// The answer to `name`/`qtype` from `server` as [`DIG`] prints it, retried until one
/// comes (the VM's neighbour entry for the gateway may still be resolving).
fn dig(vm: &NsVm, server: Ipv6Addr, name: &str, qtype: u16) -> String {
    let mut text = String::new();
    let (server, qtype) = (server.to_string(), qtype.to_string());
    let ok = wait_for(T, || {
        let out = vm.ns().exec(&["python3", "-c", DIG, &server, name, &qtype]);
        text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() {
            text.push_str(&String::from_utf8_lossy(&out.stderr));
        }
        out.status.success()
    });
    assert!(ok, "no answer to {name} type {qtype} from {server}: {text}");
    text
}

/// A `dnsmasq` on the host's `::1` serving `records` (`--host-record` values) and
/// nothing else (NXDOMAIN for other names under `dns6.test`): the IPv6 upstream.
struct Upstream6 {
    dnsmasq: ChildGuard,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Upstream6 {
    fn start(records: &[&str]) -> Upstream6 {
        let port = UdpSocket::bind("[::1]:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = std::process::Command::new("dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            "--listen-address=::1",
            "--bind-interfaces",
            &format!("--port={port}"),
            &format!("--pid-file={}", dir.path().join("dnsmasq.pid").display()),
            "--user=root",
            // Its own domain: NXDOMAIN for names it does not hold.
            "--local=/dns6.test/",
        ]);
        cmd.args(records.iter().map(|r| format!("--host-record={r}")));
        Upstream6 {
            dnsmasq: ChildGuard::spawn(cmd, "dnsmasq").expect("dnsmasq"),
            port,
            _dir: dir,
        }
    }
}

/// A daemon with NAT vnet `net` (DHCP domain `dns6.test`) whose DNS forwards to
/// `upstream` only, and a VM on it with its SLAAC address; returns the DNS server the
/// VM's router advertisement names (checked to be the gateway's `::2`).
fn vnet_with_vm(net: &str, n: u32, upstream: &Upstream6, mac: &str) -> (Daemon, NsVm, Ipv6Addr) {
    let d = Daemon::start(Some(&format!(
        "[[network]]\nname = \"{net}\"\nsubnet = \"10.214.{n}.0/24\"\n\
         dhcp = {{ domain = \"dns6.test\" }}\n\
         nat = {{ dns_upstreams = [\"[::1]:{}\"] }}\n",
        upstream.port
    )));
    let v6 = client(&d).network(net).unwrap().ipv6.expect("IPv6 on");
    let (_, vm) = tap_vm(&d, net, mac, "");
    vm.enable_slaac();
    assert!(
        wait_for(T, || vm.global_ipv6().iter().any(|a| v6.subnet.contains(a))),
        "no SLAAC address: {}\n{}",
        vm.ns().exec_ok(&["ip", "-6", "addr"]),
        d.log()
    );
    let ra = vm.rdisc6(T);
    let rdnss: Ipv6Addr = ra
        .split("Recursive DNS server : ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no RDNSS in {ra}"));
    assert_eq!(Some(rdnss), v6.router, "RDNSS names the gateway");
    (d, vm, rdnss)
}

fn counters(d: &Daemon, net: &str) -> NatCounters {
    client(d)
        .network(net)
        .unwrap()
        .nat
        .expect("NAT on")
        .counters
}

/// A VM resolves a name of the world through the gateway's IPv6 address, from an IPv6
/// upstream; garbage to the same port is dropped and counted, and the relay goes on.
#[test]
fn a_vm_resolves_through_the_ipv6_gateway_from_an_ipv6_upstream() {
    skip_unless_root!();
    let upstream = Upstream6::start(&["www.dns6.test,192.0.2.66,2001:db8::66"]);
    let net = unique_name("dns6");
    let (d, vm, server) = vnet_with_vm(&net, octet(1), &upstream, "52:54:00:16:00:01");
    let report = |what: &str| format!("{what}\ndnsmasq: {}\n{}", upstream.dnsmasq.log(), d.log());

    let aaaa = dig(&vm, server, "www.dns6.test", AAAA);
    assert_eq!(
        aaaa,
        format!("rcode=0 from={server} 2001:db8::66"),
        "{}",
        report("AAAA")
    );
    let a = dig(&vm, server, "www.dns6.test", A);
    assert_eq!(
        a,
        format!("rcode=0 from={server} 192.0.2.66"),
        "{}",
        report("A")
    );
    let c = counters(&d, &net);
    assert!(
        c.dns_queries_ipv6 >= 2 && c.dns_upstream_ipv6 >= 2 && c.dns_answers_ipv6 >= 2,
        "{c:?}"
    );
    assert_eq!(c.dns_upstream_ipv4, 0, "{c:?}");

    // A runt, and a datagram with QR set (an answer, not a query): dropped.
    for garbage in ["0102", "4242818000010000000000000000010001"] {
        vm.ns()
            .exec_ok(&["python3", "-c", SEND, &server.to_string(), garbage]);
    }
    assert!(
        wait_for(T, || counters(&d, &net).dns_malformed == 2),
        "{:?}\n{}",
        counters(&d, &net),
        d.log()
    );
    // The relay keeps serving, and so does the daemon.
    let again = dig(&vm, server, "www.dns6.test", AAAA);
    assert_eq!(again, format!("rcode=0 from={server} 2001:db8::66"));
    // A name the upstream does not know: its NXDOMAIN, relayed.
    let missing = dig(&vm, server, "nosuch.dns6.test", AAAA);
    assert_eq!(missing, format!("rcode=3 from={server}"));
    // The API and the CLI show the IPv6 upstream.
    let shown = d.cli_ok(&["net", "show", &net]);
    assert!(
        shown.contains(&format!("dns via [::1]:{}", upstream.port)),
        "{shown}"
    );
    let exported = d.cli_ok(&["config", "export"]);
    assert!(
        exported.contains(&format!("dns_upstreams = [\"[::1]:{}\"]", upstream.port)),
        "{exported}"
    );
    let metrics = client(&d).metrics().unwrap();
    let sample = format!("vnet_nat_dns_upstream_ipv6_total{{net=\"{net}\"}} ");
    assert!(metrics.lines().any(|l| l.starts_with(&sample)), "{metrics}");
}

/// The vnet's DHCP names over IPv6: A for a VM that leased an IPv4 address under a
/// host name, and for AAAA (it has no IPv6 lease) NOERROR without records: the name
/// exists, so never NXDOMAIN (RFC 4074); answered by the device, not the upstream.
#[test]
fn dhcp_names_are_answered_over_ipv6_with_nodata_for_the_family_they_lack() {
    skip_unless_root!();
    let upstream = Upstream6::start(&["www.dns6.test,192.0.2.66"]);
    let net = unique_name("dns6");
    let n = octet(2);
    let (d, vm, server) = vnet_with_vm(&net, n, &upstream, "52:54:00:16:00:02");
    let (_, alpha) = tap_vm(&d, &net, "52:54:00:16:00:03", "");
    let lease = alpha
        .dhcp(&["-x", "hostname:alpha"])
        .expect("alpha's lease");
    let alpha_ip = lease.ip().expect("an address").to_string();
    assert!(alpha_ip.starts_with(&format!("10.214.{n}.")), "{alpha_ip}");

    for name in ["alpha", "alpha.dns6.test", "ALPHA.dns6.test"] {
        let a = dig(&vm, server, name, A);
        assert_eq!(
            a,
            format!("rcode=0 from={server} {alpha_ip}"),
            "{name}\n{}",
            d.log()
        );
        let aaaa = dig(&vm, server, name, AAAA);
        assert_eq!(aaaa, format!("rcode=0 from={server}"), "{name}: NODATA");
    }
    let c = counters(&d, &net);
    assert!(c.dns_local >= 6, "answered locally: {c:?}");
    assert_eq!(c.dns_upstream_ipv6, 0, "the upstream was not asked: {c:?}");
}
