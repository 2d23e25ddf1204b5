//! Filters (ACLs) end to end: rules on a port of the real vnetd decide which frames of
//! namespace VMs pass (real TCP, UDP and ping, servers run by socat), count what they
//! decided, change live, track connections so that replies come back while new
//! connections toward the VM stay out, and survive a restart with their port.

use std::process::Stdio;
use std::time::Duration;

use vnet_control::policy::acl::AclReport;
use vnet_control::{PortInfo, PortKind};
use vnet_testbed::api::{cli_fails, cli_json, daemon_with, drops, port, tap_vm};
use vnet_testbed::{api, skip_unless_root, unique_name, wait_for, ChildGuard, Daemon, NsVm};

const T: Duration = Duration::from_secs(20);

/// A subnet's third octet of its own per test and process: tests run in parallel.
fn subnet(test: u8) -> u8 {
    (std::process::id() % 50) as u8 * 4 + test
}

/// Serves TCP `port` in `vm`: each connection gets `banner` and is closed.
fn serve_tcp(vm: &NsVm, port: u16, banner: &str) -> ChildGuard {
    vm.ns().spawn(&[
        "socat",
        &format!("TCP-LISTEN:{port},reuseaddr,fork"),
        &format!("SYSTEM:echo {banner}"),
    ])
}

/// Serves UDP `port` in `vm`: every datagram is answered with `pong`.
fn serve_udp(vm: &NsVm, port: u16) -> ChildGuard {
    vm.ns().spawn(&[
        "socat",
        &format!("UDP-LISTEN:{port},reuseaddr,fork"),
        "SYSTEM:echo pong",
    ])
}

/// What a TCP connection from `vm` to `ip:port` reads (the server's banner), or
/// `None` when it cannot connect within 2 s.
fn tcp_banner(vm: &NsVm, ip: &str, port: u16) -> Option<String> {
    let out = vm
        .ns()
        .command(&[
            "socat",
            "-T",
            "3",
            "-",
            &format!("TCP:{ip}:{port},connect-timeout=2"),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("socat runs");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// Whether a UDP datagram from `vm` to `ip:port` is answered within 2 s (`-t`: socat
/// waits that long after its stdin ends).
fn udp_answered(vm: &NsVm, ip: &str, port: u16) -> bool {
    let out = vm
        .ns()
        .command(&[
            "sh",
            "-c",
            &format!("echo ping | socat -t 2 -T 2 - UDP:{ip}:{port}"),
        ])
        .output()
        .expect("sh runs");
    String::from_utf8_lossy(&out.stdout).contains("pong")
}

/// Whether one ping from `vm` to `ip` is answered.
fn pings(vm: &NsVm, ip: &str) -> bool {
    vm.ping(ip, 1)
}

/// Whether a connection from `vm` to `ip:port` gets `banner` before the deadline (tried
/// again on failure: what should pass may be slow on a busy machine; what should not
/// is tried once, with `tcp_banner`'s timeout).
fn connects(vm: &NsVm, ip: &str, port: u16, banner: &str) -> bool {
    wait_for(T, || tcp_banner(vm, ip, port).as_deref() == Some(banner))
}

fn acl(d: &Daemon, net: &str, id: u32) -> AclReport {
    cli_json(d, &["acl", "ls", net, &id.to_string()])
}

fn vnet(d: &Daemon, args: &[&str]) -> String {
    d.cli_ok(args)
}

#[test]
fn an_acl_drops_tcp_port_80_while_ping_and_port_22_pass_with_counters_and_live_changes() {
    skip_unless_root!();
    let n = subnet(0);
    let d = daemon_with(&["lab"]);
    let (_, a) = tap_vm(&d, "lab", "52:54:00:ac:00:01", &format!("10.81.{n}.1/24"));
    let (pb, b) = tap_vm(&d, "lab", "52:54:00:ac:00:02", &format!("10.81.{n}.2/24"));
    let _web = serve_tcp(&b, 80, "web");
    let _ssh = serve_tcp(&b, 22, "ssh");
    let ready = wait_for(T, || {
        tcp_banner(&a, b.ip(), 80).is_some() && tcp_banner(&a, b.ip(), 22).is_some()
    });
    assert!(ready, "the servers never answered:\n{}", d.log());
    let pb_ = pb.to_string();

    // Toward b (its port's `out`): no TCP to port 80.
    vnet(
        &d,
        &[
            "acl", "add", "lab", &pb_, "out", "drop", "tcp", "dst-port", "80",
        ],
    );
    assert_eq!(tcp_banner(&a, b.ip(), 80), None, "port 80 still answers");
    assert!(connects(&a, b.ip(), 22, "ssh"), "{}", d.log());
    assert!(
        wait_for(T, || pings(&a, b.ip())),
        "ping no longer passes:\n{}",
        d.log()
    );

    let report = acl(&d, "lab", pb);
    let rule = &report.outbound.rules[0];
    assert_eq!(rule.rule.to_string(), "drop tcp dst-port 80");
    assert!(
        rule.frames >= 1 && rule.bytes >= 54 * rule.frames,
        "{report:?}"
    );
    assert!(
        report.outbound.default_frames >= 4,
        "ssh and ping pass by default: {report:?}"
    );
    assert!(
        report.inbound.rules.is_empty() && report.inbound.default_frames >= 4,
        "{report:?}"
    );
    assert_eq!(report.conntrack, None, "{report:?}");
    let dropped = drops(&port(&d, "lab", pb), "acl");
    assert_eq!(
        dropped, rule.frames,
        "every frame the rule dropped counts as an `acl` drop"
    );
    let shown = vnet(&d, &["acl", "ls", "lab", &pb_]);
    assert!(
        shown.contains("drop tcp dst-port 80") && shown.contains("default allow"),
        "{shown}"
    );
    let metrics = api::client(&d).metrics().expect("metrics");
    let series = format!(
        "vnet_acl_frames_total{{net=\"lab\",port=\"{pb}\",dir=\"out\",rule=\"1\"}} {}",
        rule.frames
    );
    assert!(metrics.contains(&series), "{series} not in\n{metrics}");
    let shown = vnet(&d, &["port", "show", "lab", &pb_]);
    assert!(
        shown.contains("in: 0 rules, out: 1 rule (port's own)"),
        "{shown}"
    );

    // Live: a rule put first lets a's port-80 connections through again; the counters of
    // the rule that stays are kept.
    let first = [
        "acl",
        "add",
        "lab",
        &pb_,
        "out",
        "--position",
        "1",
        "allow",
        "tcp",
    ];
    let src = format!("{}/32", a.ip());
    vnet(&d, &[&first[..], &["src", &src, "dst-port", "80"]].concat());
    assert!(connects(&a, b.ip(), 80, "web"), "{}", d.log());
    let report = acl(&d, "lab", pb);
    assert_eq!(report.outbound.rules.len(), 2);
    assert!(report.outbound.rules[0].frames >= 1, "{report:?}");
    assert_eq!(report.outbound.rules[1].frames, rule.frames, "{report:?}");
    // Removing it drops port 80 again; removing the other opens it.
    vnet(&d, &["acl", "rm", "lab", &pb_, "out", "1"]);
    assert_eq!(tcp_banner(&a, b.ip(), 80), None);
    vnet(&d, &["acl", "rm", "lab", &pb_, "out", "1"]);
    assert!(connects(&a, b.ip(), 80, "web"), "{}", d.log());

    // Mistakes are refused with what to do, and change nothing.
    let e = cli_fails(&d, &["acl", "rm", "lab", &pb_, "out", "1"]);
    assert!(e.contains("no rule 1: out has no rules"), "{e}");
    let e = cli_fails(
        &d,
        &["acl", "add", "lab", &pb_, "in", "drop", "dst-port", "80"],
    );
    assert!(e.contains("say tcp or udp"), "{e}");
    let e = cli_fails(&d, &["acl", "add", "lab", "999", "in", "drop", "udp"]);
    assert!(e.contains("999"), "{e}");
    assert!(wait_for(T, || pings(&a, b.ip())), "{}", d.log());
}

#[test]
fn default_drop_with_allow_established_lets_replies_in_but_no_new_connections() {
    skip_unless_root!();
    let n = subnet(1);
    let d = daemon_with(&["lab"]);
    let (pa, a) = tap_vm(&d, "lab", "52:54:00:ac:01:01", &format!("10.81.{n}.1/24"));
    let (_, b) = tap_vm(&d, "lab", "52:54:00:ac:01:02", &format!("10.81.{n}.2/24"));
    let _ssh_a = serve_tcp(&a, 22, "ssh-a");
    let _ssh_b = serve_tcp(&b, 22, "ssh-b");
    let _dns_b = serve_udp(&b, 5353);
    let ready = wait_for(T, || {
        tcp_banner(&a, b.ip(), 22).is_some()
            && tcp_banner(&b, a.ip(), 22).is_some()
            && udp_answered(&a, b.ip(), 5353)
    });
    assert!(ready, "the servers never answered:\n{}", d.log());
    let pa_ = pa.to_string();

    // Toward a: nothing but replies (and ARP, which IPv4 needs).
    vnet(&d, &["acl", "default", "lab", &pa_, "out", "drop"]);
    vnet(
        &d,
        &["acl", "add", "lab", &pa_, "out", "allow", "established"],
    );
    vnet(&d, &["acl", "add", "lab", &pa_, "out", "allow", "arp"]);

    // a's own connections get their replies: TCP, UDP, ping.
    assert!(connects(&a, b.ip(), 22, "ssh-b"), "{}", d.log());
    // (Retried: each try is a new flow, and a reply may come late on a busy machine.)
    assert!(
        wait_for(T, || udp_answered(&a, b.ip(), 5353)),
        "no UDP reply"
    );
    assert!(wait_for(T, || pings(&a, b.ip())), "no echo reply");
    // Connections opened toward a do not get in.
    assert_eq!(tcp_banner(&b, a.ip(), 22), None, "b reached a's server");
    assert!(!pings(&b, a.ip()), "b's ping reached a");

    let report = acl(&d, "lab", pa);
    let ct = report.conntrack.expect("connections are tracked");
    assert!(ct.entries >= 1 && ct.max >= 1 && ct.refused == 0, "{ct:?}");
    assert!(report.outbound.rules[0].frames >= 3, "{report:?}");
    assert!(report.outbound.default_frames >= 2, "{report:?}");
    assert_eq!(
        report.outbound.default,
        vnet_control::policy::acl::AclAction::Drop
    );
    assert_eq!(
        drops(&port(&d, "lab", pa), "acl"),
        report.outbound.default_frames
    );

    // Back to allow: b reaches a again.
    vnet(&d, &["acl", "default", "lab", &pa_, "out", "allow"]);
    assert!(connects(&b, a.ip(), 22, "ssh-a"), "{}", d.log());
}

/// Deletes host interface `0` when dropped (wherever the test ends).
struct Link(String);

impl Drop for Link {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.0])
            .stderr(Stdio::null())
            .status();
    }
}

/// A veth pair whose one end is a namespace VM with `mac` and `cidr` and whose other
/// end joins `net` as an interface port (which, unlike a TAP, outlives vnetd); the
/// port's id.
fn veth_vm(d: &Daemon, net: &str, mac: &str, cidr: &str) -> (Link, NsVm, u32) {
    let host = unique_name("ah");
    let vm = unique_name("av");
    let ok = std::process::Command::new("ip")
        .args(["link", "add", &host, "type", "veth", "peer", "name", &vm])
        .status()
        .expect("ip runs")
        .success();
    assert!(ok, "ip link add {host} type veth peer name {vm}");
    let link = Link(host.clone());
    let vm = NsVm::attach(&vm, mac, cidr);
    vnet(d, &["port", "add", net, "--interface", &host]);
    let id = interface_port(d, net, &host).id;
    (link, vm, id)
}

fn interface_port(d: &Daemon, net: &str, ifname: &str) -> PortInfo {
    api::ports(d, net)
        .into_iter()
        .find(|p| p.kind == PortKind::Interface && p.description == format!("interface {ifname}"))
        .unwrap_or_else(|| panic!("no interface port on {ifname}\n{}", d.log()))
}

#[test]
fn a_named_ports_acl_survives_a_restart() {
    skip_unless_root!();
    let n = subnet(2);
    // The vnet's filters for its client ports, from the config file.
    let config = "[[network]]\nname = \"lab\"\n\n[network.policy.acl]\n\
                  out = [{ action = \"drop\", proto = \"udp\", dst_port = 9 }]\n";
    let mut d = Daemon::start(Some(config));
    let (_la, a, _) = veth_vm(&d, "lab", "52:54:00:ac:02:01", &format!("10.81.{n}.1/24"));
    let (lb, b, pb) = veth_vm(&d, "lab", "52:54:00:ac:02:02", &format!("10.81.{n}.2/24"));
    let _web = serve_tcp(&b, 80, "web");
    let _ssh = serve_tcp(&b, 22, "ssh");
    assert!(connects(&a, b.ip(), 80, "web"), "{}", d.log());
    let rules = |r: &AclReport| -> Vec<String> {
        r.outbound
            .rules
            .iter()
            .map(|r| r.rule.to_string())
            .collect()
    };
    assert_eq!(
        rules(&acl(&d, "lab", pb)),
        ["drop udp dst-port 9"],
        "the vnet's"
    );
    // A rule added to what applies to the port: the vnet's rules and the new one become
    // the port's own.
    let pb_ = pb.to_string();
    vnet(
        &d,
        &[
            "acl", "add", "lab", &pb_, "out", "drop", "tcp", "dst-port", "80",
        ],
    );
    let before = acl(&d, "lab", pb);
    assert_eq!(
        rules(&before),
        ["drop udp dst-port 9", "drop tcp dst-port 80"]
    );

    d.restart();
    let pb = interface_port(&d, "lab", &lb.0).id;
    assert_eq!(rules(&acl(&d, "lab", pb)), rules(&before), "{}", d.log());
    assert!(connects(&a, b.ip(), 22, "ssh"), "{}", d.log());
    assert_eq!(
        tcp_banner(&a, b.ip(), 80),
        None,
        "the rule no longer applies"
    );
    let exported = vnet(&d, &["config", "export"]);
    assert!(exported.contains(r#"dst_port = "80""#), "{exported}");
}
