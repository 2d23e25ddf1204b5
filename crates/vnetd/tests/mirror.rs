//! Mirrors (SPAN): a namespace on a mirror destination port, running tcpdump, sees the
//! traffic of the mirrored ports and nothing else; what it sends is dropped and
//! counted; removing the mirror makes it an ordinary port again; a mirror that names
//! TAPs waits for them and lasts across a restart; bad specs are refused.

use std::process::Command;
use std::time::Duration;

use vnet_control::{MirrorDirection, MirrorInfo, MirrorState, PortInfo, PortKind, PortRef};
use vnet_testbed::api::{cli_json, client, daemon_with, drops, port, ports, tap_vm};
use vnet_testbed::{skip_unless_root, unique_name, wait_for, ChildGuard, Daemon, NsVm};

const T: Duration = Duration::from_secs(20);

/// A third octet of its own for each test of this process.
fn subnet(offset: u8) -> u8 {
    (std::process::id() % 200) as u8 + offset
}

/// tcpdump on `vm`'s interface, frames coming in only (what the vnet sent it), once
/// it listens.
fn tcpdump(vm: &NsVm) -> ChildGuard {
    let dump = vm
        .ns()
        .spawn(&["tcpdump", "-i", vm.ifname(), "-nn", "-l", "-e", "-Q", "in"]);
    assert!(
        wait_for(T, || dump.log().contains("listening on")),
        "tcpdump did not start: {}",
        dump.log()
    );
    dump
}

/// Stops tcpdump and returns what it printed.
fn finish(mut dump: ChildGuard) -> String {
    dump.terminate(Duration::from_secs(5));
    dump.log()
}

fn mirrors(d: &Daemon, net: &str) -> Vec<MirrorInfo> {
    cli_json(d, &["mirror", "ls", net])
}

/// `ping -c COUNT` from `vm` to `ip`, not caring whether it is answered.
fn ping_quietly(vm: &NsVm, ip: &str, count: &str) {
    vm.ns()
        .exec(&["ping", "-n", "-c", count, "-i", "0.2", "-W", "1", ip]);
}

#[test]
fn a_destination_sees_both_ways_of_its_source_and_nothing_else() {
    skip_unless_root!();
    let n = subnet(0);
    let d = daemon_with(&["lab"]);
    let ip = |h: u8| format!("10.81.{n}.{h}/24");
    let (pa, a) = tap_vm(&d, "lab", "52:54:00:5a:00:01", &ip(1));
    let (_, b) = tap_vm(&d, "lab", "52:54:00:5a:00:02", &ip(2));
    let (pc, c) = tap_vm(&d, "lab", "52:54:00:5a:00:03", &ip(3));
    let (pm, m) = tap_vm(&d, "lab", "52:54:00:5a:00:09", &ip(9));
    let added: MirrorInfo = cli_json(
        &d,
        &[
            "mirror",
            "add",
            "lab",
            "ids",
            "--source",
            &pa.to_string(),
            "--to",
            &pm.to_string(),
        ],
    );
    assert_eq!(added.state, MirrorState::Active, "{added:?}");
    assert_eq!(added.direction, MirrorDirection::Both, "the default");
    assert_eq!(
        (added.source_ids, added.destination_id),
        (vec![pa], Some(pm))
    );
    let dump = tcpdump(&m);
    let request = format!("{} > {}: ICMP echo request", a.ip(), b.ip());
    let reply = format!("{} > {}: ICMP echo reply", b.ip(), a.ip());
    let pings_seen = |count: usize| {
        wait_for(T, || {
            let log = dump.log();
            log.matches(&request).count() >= count && log.matches(&reply).count() >= count
        })
    };
    // The pings between a and b reach it, both ways.
    assert!(a.ping(b.ip(), 3), "a and b reach each other\n{}", d.log());
    assert!(
        pings_seen(3),
        "the destination did not see the pings both ways:\n{}\n--- vnetd ---\n{}",
        dump.log(),
        d.log()
    );
    // Unicast between a third VM and b (static neighbours: no broadcast, which would
    // reach a and be copied as its "out") does not...
    for (vm, other) in [(&c, &b), (&b, &c)] {
        vm.ns().exec_ok(&[
            "ip",
            "neigh",
            "replace",
            other.ip(),
            "lladdr",
            other.mac(),
            "dev",
            vm.ifname(),
        ]);
    }
    let before = port(&d, "lab", pc).counters.rx_frames;
    assert!(c.ping(b.ip(), 2), "c reaches b\n{}", d.log());
    assert!(port(&d, "lab", pc).counters.rx_frames >= before + 2);
    // ...its own frames (ARP for b) are dropped and counted, and reach nobody...
    ping_quietly(&m, b.ip(), "2");
    let dst = port(&d, "lab", pm);
    assert!(drops(&dst, "mirror_port") >= 1, "{dst:?}");
    assert_eq!(dst.mirror_destination, ["ids"]);
    // ...as the pings between a and b after them show.
    assert!(a.ping(b.ip(), 2), "a and b reach each other\n{}", d.log());
    assert!(pings_seen(5), "{}", dump.log());
    let seen = finish(dump);
    for stranger in [c.ip(), c.mac(), m.ip()] {
        assert!(
            !seen.contains(stranger),
            "{stranger} reached the destination:\n{seen}"
        );
    }

    // Counted per mirror, in the API, the CLI and /metrics.
    let [ids] = &mirrors(&d, "lab")[..] else {
        panic!("one mirror")
    };
    assert!(ids.counters.frames >= 6, "{ids:?}");
    assert!(ids.counters.bytes >= 6 * 60, "{ids:?}");
    let listed = d.cli_ok(&["mirror", "ls", "lab"]);
    assert!(
        listed.contains("ids") && listed.contains("active"),
        "{listed}"
    );
    let shown = d.cli_ok(&["port", "show", "lab", &pm.to_string()]);
    assert!(shown.contains("mirror destination"), "{shown}");
    assert!(shown.contains("mirror_port"), "{shown}");
    let metrics = client(&d).metrics().unwrap();
    let copied = metrics
        .lines()
        .find_map(|l| l.strip_prefix("vnet_mirror_frames_total{net=\"lab\",mirror=\"ids\"} "))
        .unwrap_or_else(|| panic!("no mirror series:\n{metrics}"));
    assert!(copied.parse::<u64>().unwrap() >= 6, "{copied}");
    assert!(
        metrics.contains("vnet_mirror_active{net=\"lab\",mirror=\"ids\"} 1"),
        "{metrics}"
    );
}

#[test]
fn direction_in_copies_what_the_source_sends_and_removal_restores_switching() {
    skip_unless_root!();
    let n = subnet(1);
    let d = daemon_with(&["lab"]);
    let ip = |h: u8| format!("10.81.{n}.{h}/24");
    let (pa, a) = tap_vm(&d, "lab", "52:54:00:5b:00:01", &ip(1));
    let (_, b) = tap_vm(&d, "lab", "52:54:00:5b:00:02", &ip(2));
    let (_, c) = tap_vm(&d, "lab", "52:54:00:5b:00:03", &ip(3));
    let (pm, m) = tap_vm(&d, "lab", "52:54:00:5b:00:09", &ip(9));
    d.cli_ok(&[
        "mirror",
        "add",
        "lab",
        "tx-only",
        "--source",
        &pa.to_string(),
        "--direction",
        "in",
        "--to",
        &pm.to_string(),
    ]);
    let dump = tcpdump(&m);
    assert!(a.ping(b.ip(), 3), "a reaches b\n{}", d.log());
    // A third VM's broadcast reaches a, but that is a's "out": not copied.
    ping_quietly(&c, &format!("10.81.{n}.77"), "1");
    assert!(a.ping(b.ip(), 1), "a reaches b\n{}", d.log());
    let request = format!("{} > {}: ICMP echo request", a.ip(), b.ip());
    // By the fourth request the replies to the others have long been forwarded.
    assert!(
        wait_for(T, || dump.log().matches(&request).count() >= 4),
        "the requests were not copied:\n{}",
        dump.log()
    );
    let seen = finish(dump);
    assert!(!seen.contains("echo reply"), "replies copied:\n{seen}");
    assert!(!seen.contains(c.ip()), "a broadcast of c copied:\n{seen}");

    // Removed: the destination switches as any port again.
    d.cli_ok(&["mirror", "rm", "lab", "tx-only"]);
    assert!(port(&d, "lab", pm).mirror_destination.is_empty());
    assert!(
        m.ping(b.ip(), 2),
        "the former destination does not switch\n{}",
        d.log()
    );
    assert!(mirrors(&d, "lab").is_empty());
    let again = d.cli(&["mirror", "rm", "lab", "tx-only"]);
    assert!(!again.status.success(), "removed twice");
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("no mirror \"tx-only\""), "{stderr}");
    d.cli_ok(&["mirror", "rm", "lab", "tx-only", "--if-exists"]);
}

/// The port of `net` on TAP `ifname`.
fn tap_port(d: &Daemon, net: &str, ifname: &str) -> PortInfo {
    ports(d, net)
        .into_iter()
        .find(|p| p.kind == PortKind::Tap && p.description.contains(ifname))
        .unwrap_or_else(|| panic!("no TAP {ifname}\n{}", d.log()))
}

#[test]
fn a_mirror_of_taps_by_name_waits_for_them_and_survives_a_restart() {
    skip_unless_root!();
    let n = subnet(2);
    let mut d = Daemon::start(Some("[[network]]\nname = \"lab\"\n"));
    let [ta, tb, tm] = ["ma", "mb", "mm"].map(unique_name);
    let sources = format!("{ta},{tb}");
    let added = d.cli_ok(&[
        "mirror", "add", "lab", "span", "--source", &sources, "--to", &tm,
    ]);
    assert!(added.contains("once its ports are there"), "{added}");
    let [span] = &mirrors(&d, "lab")[..] else {
        panic!("one mirror")
    };
    assert_eq!(span.state, MirrorState::Waiting);
    assert!(
        span.reason.as_deref().unwrap().contains("no port"),
        "{span:?}"
    );
    for tap in [&ta, &tb, &tm] {
        d.cli_ok(&["port", "add", "lab", "--tap", tap]);
    }
    let [span] = &mirrors(&d, "lab")[..] else {
        panic!("one mirror")
    };
    assert_eq!(span.state, MirrorState::Active, "{span:?}");
    assert_eq!(span.destination_id, Some(tap_port(&d, "lab", &tm).id));

    d.restart();
    let [span] = &mirrors(&d, "lab")[..] else {
        panic!("the mirror is gone after a restart\n{}", d.log())
    };
    assert_eq!(span.state, MirrorState::Active, "{span:?}\n{}", d.log());
    assert_eq!(
        span.sources,
        [PortRef::Name(ta.clone()), PortRef::Name(tb.clone())]
    );
    let dst = tap_port(&d, "lab", &tm);
    assert_eq!(span.destination_id, Some(dst.id));
    assert_eq!(dst.mirror_destination, ["span"]);
    let exported = d.cli_ok(&["config", "export"]);
    assert!(exported.contains("[[network.mirror]]"), "{exported}");

    // The restored mirror copies.
    let a = NsVm::attach(&ta, "52:54:00:5c:00:01", &format!("10.81.{n}.1/24"));
    let b = NsVm::attach(&tb, "52:54:00:5c:00:02", &format!("10.81.{n}.2/24"));
    let _m = NsVm::attach(&tm, "52:54:00:5c:00:09", "");
    assert!(a.ping(b.ip(), 2), "a reaches b\n{}", d.log());
    assert!(
        wait_for(T, || mirrors(&d, "lab")[0].counters.frames >= 4),
        "{:?}",
        mirrors(&d, "lab")
    );
    assert!(port(&d, "lab", dst.id).counters.tx_frames >= 4);
}

/// `POST /v1/networks/lab/mirrors` with `body`: the status and the answer's message
/// (or the answer).
fn post_mirror(d: &Daemon, body: &str) -> (u16, String) {
    let socket = d.control_socket();
    let out = Command::new("curl")
        .args(["-sS", "--unix-socket"])
        .arg(&socket)
        .args([
            "-w",
            "\n%{http_code}",
            "-H",
            "content-type: application/json",
        ])
        .args(["--data", body, "http://vnet/v1/networks/lab/mirrors"])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (answer, status) = text.rsplit_once('\n').expect("a status");
    let message = serde_json::from_str::<serde_json::Value>(answer)
        .ok()
        .and_then(|v| Some(v.get("error")?.as_str()?.to_string()));
    let status = status.trim().parse().expect("a status");
    (status, message.unwrap_or_else(|| answer.to_string()))
}

#[test]
fn bad_mirror_specs_are_refused_with_clear_messages() {
    let d = daemon_with(&["lab"]);
    let refused = [
        (
            r#"{"name":"m","sources":[1],"direction":"sideways","destination":2}"#,
            "unknown variant `sideways`",
        ),
        (
            r#"{"name":"m","sources":[1,"tap2"],"destination":"tap2"}"#,
            "destination port tap2 is also one of its sources",
        ),
        (
            r#"{"name":"m","sources":[],"destination":2}"#,
            "mirror \"m\" has no source port",
        ),
        (
            r#"{"name":"no spaces","sources":[1],"destination":2}"#,
            "invalid mirror name",
        ),
    ];
    for (body, message) in refused {
        let (status, answer) = post_mirror(&d, body);
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer.contains(message), "{body}: {answer}");
    }
    // Ports that do not exist yet are no error: the mirror waits for them.
    let (status, answer) = post_mirror(&d, r#"{"name":"m","sources":[1],"destination":2}"#);
    assert_eq!(status, 201, "{answer}");
    assert!(answer.contains(r#""state":"waiting""#), "{answer}");
    let (status, answer) = post_mirror(&d, r#"{"name":"m","sources":[3],"destination":4}"#);
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("has a mirror \"m\" already"), "{answer}");
    let (status, answer) = post_mirror(&d, r#"{"name":"n","sources":[2],"destination":5}"#);
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer.contains("source port 2 is the destination of mirror \"m\""),
        "{answer}"
    );
    // The command line refuses an unknown direction before asking.
    let out = d.cli(&[
        "mirror",
        "add",
        "lab",
        "x",
        "--source",
        "1",
        "--direction",
        "up",
        "--to",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("say in, out or both"), "{stderr}");
    assert!(d.is_running());
    assert_eq!(mirrors(&d, "lab").len(), 1);
}

#[test]
fn a_reload_changes_the_configured_mirrors_in_place() {
    skip_unless_root!();
    let [t0, t1] = ["rl", "rl"].map(unique_name);
    let config = |direction: &str| {
        format!(
            "[[network]]\nname = \"lab\"\n\n[[network.port]]\ntap = \"{t0}\"\n\n\
             [[network.port]]\ntap = \"{t1}\"\n\n[[network.mirror]]\nname = \"ids\"\n\
             sources = [\"{t0}\"]\ndirection = \"{direction}\"\ndestination = \"{t1}\"\n"
        )
    };
    let d = Daemon::start(Some(&config("in")));
    let [ids] = &mirrors(&d, "lab")[..] else {
        panic!("one mirror from the config\n{}", d.log())
    };
    assert_eq!(
        (ids.state, ids.direction),
        (MirrorState::Active, MirrorDirection::In)
    );
    let before: Vec<u32> = ports(&d, "lab").iter().map(|p| p.id).collect();
    std::fs::write(d.config_path().unwrap(), config("out")).unwrap();
    let said = d.cli_ok(&["reload"]);
    assert_eq!(said, "reloaded:\nvnet lab: set the mirrors\n");
    assert_eq!(mirrors(&d, "lab")[0].direction, MirrorDirection::Out);
    let after: Vec<u32> = ports(&d, "lab").iter().map(|p| p.id).collect();
    assert_eq!(before, after, "the ports stayed");
    let exported = d.cli_ok(&["config", "export"]);
    assert!(exported.contains("direction = \"out\""), "{exported}");
}
