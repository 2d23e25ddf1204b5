//! Rate limits, storm control and impairment (README, "Interposition"), end to end:
//! namespace VMs on TAP ports of the real vnetd, real `iperf3` and `ping`, settings
//! changed live with `vnet port set`. What is asserted is what the tools report (a
//! behaviour of the shaper and the impairment), with the slack a busy machine needs.

use std::time::{Duration, Instant};

use vnet_control::PortKind;
use vnet_testbed::api::{client, daemon_with, drops, find_kind, port, tap_vm};
use vnet_testbed::{skip_unless_root, wait_for, Daemon, NsVm};

/// `vnet port set lab ID ARGS...`.
fn set(d: &Daemon, id: u32, args: &[&str]) {
    let id = id.to_string();
    let mut argv = vec!["port", "set", "lab", &id];
    argv.extend_from_slice(args);
    d.cli_ok(&argv);
}

/// Raises vnetd's threads to nice -15, as a switch that keeps time should run: a
/// delay measured with ping then shows the impairment, not the machine's other load
/// (what the test asserts still leaves room for scheduling).
fn prioritize(d: &Daemon) {
    let pid = d.pid().expect("vnetd runs");
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("vnetd's threads");
    for task in tasks.flatten() {
        let tid = task.file_name().to_string_lossy().into_owned();
        let _ = std::process::Command::new("renice")
            .args(["-n", "-15", "-p", &tid])
            .output();
    }
}

/// Two VMs on vnet `lab` that reach each other.
fn pair(d: &Daemon, net: u8) -> ((u32, NsVm), (u32, NsVm)) {
    let a = tap_vm(
        d,
        "lab",
        &format!("02:00:00:15:{net:02x}:01"),
        &format!("10.{net}.0.1/24"),
    );
    let b = tap_vm(
        d,
        "lab",
        &format!("02:00:00:15:{net:02x}:02"),
        &format!("10.{net}.0.2/24"),
    );
    assert!(a.1.ping(b.1.ip(), 1), "the VMs reach each other");
    (a, b)
}

/// Runs an iperf3 TCP test from `client` to the server on `server` for `secs` after
/// one second left out (the bucket's burst, TCP's slow start): the receiver's rate in
/// Mbit/s, as iperf3 reports it.
fn iperf(client: &NsVm, server: &NsVm, secs: u32) -> f64 {
    let secs = secs.to_string();
    let argv = ["iperf3", "-c", server.ip(), "-t", &secs, "-O", "1", "-J"];
    let out = client.ns().exec(&argv);
    let text = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("iperf3 printed no JSON ({e}):\n{text}"));
    json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("no receiver rate:\n{text}"))
        / 1e6
}

/// An iperf3 server in `vm`, listening.
fn iperf_server(vm: &NsVm) -> vnet_testbed::ChildGuard {
    let server = vm.ns().spawn(&["iperf3", "-s", "-B", vm.ip()]);
    let listening = || {
        let out = vm.ns().exec(&["ss", "-Hltn", "sport = :5201"]);
        !String::from_utf8_lossy(&out.stdout).trim().is_empty()
    };
    assert!(
        wait_for(Duration::from_secs(10), listening),
        "iperf3 -s listens: {}",
        server.log()
    );
    server
}

/// Round-trip times of `count` pings from `from` to `to`, `interval` apart (ms).
fn ping_times(from: &NsVm, to: &NsVm, count: u32, interval: &str) -> Vec<f64> {
    let out = from.ns().exec(&[
        "ping",
        "-n",
        "-c",
        &count.to_string(),
        "-i",
        interval,
        "-W",
        "2",
        to.ip(),
    ]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.trim_end_matches(" ms").parse().ok())
        .collect()
}

/// The share of `count` pings lost, in percent (ping's own summary).
fn ping_loss(from: &NsVm, to: &NsVm, count: u32, interval: &str) -> f64 {
    let out = from.ns().exec(&[
        "ping",
        "-n",
        "-q",
        "-c",
        &count.to_string(),
        "-i",
        interval,
        "-W",
        "1",
        to.ip(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.split(", ")
        .find_map(|part| part.strip_suffix("% packet loss"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no loss in ping's summary:\n{text}"))
}

fn median(times: &mut [f64]) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

#[test]
fn tcp_through_a_10_mbit_limit_gets_9_to_10_mbit_shaped_and_a_sane_rate_policed() {
    skip_unless_root!();
    let d = daemon_with(&["lab"]);
    let ((p1, vm1), (p2, vm2)) = pair(&d, 81);
    let _server = iperf_server(&vm2);

    // Shaped toward the receiver: frames wait for the rate, TCP fills it.
    set(&d, p2, &["--rate-out", "10mbit"]);
    let shaped = iperf(&vm1, &vm2, 8);
    eprintln!("shaped to 10mbit: {shaped:.2} Mbit/s");
    // Up to a bucket's burst over: iperf3's clock and the shaper's start differ by
    // a few milliseconds (seen: 10.008 Mbit/s).
    assert!((9.0..=10.2).contains(&shaped), "shaped: {shaped} Mbit/s");
    let held = port(&d, "lab", p2).policy_counters.and_then(|c| c.rate);
    assert!(held.is_some(), "the shaper reports what it holds");
    let metrics = client(&d).metrics().unwrap();
    let series = format!("vnet_port_shaped_frames{{net=\"lab\",port=\"{p2}\"}}");
    assert!(metrics.contains(&series), "{series} in\n{metrics}");

    // Policed from the sender: frames over the rate are dropped, TCP backs off.
    set(&d, p2, &["--no-rate"]);
    set(&d, p1, &["--rate-in", "10mbit"]);
    let policed = iperf(&vm1, &vm2, 8);
    eprintln!("policed to 10mbit: {policed:.2} Mbit/s");
    assert!((5.0..=10.5).contains(&policed), "policed: {policed} Mbit/s");
    assert!(drops(&port(&d, "lab", p1), "policed") > 0);

    // Taken away live: far above the limit again.
    set(&d, p1, &["--no-rate"]);
    let free = iperf(&vm1, &vm2, 2);
    assert!(free > 50.0, "unlimited: {free} Mbit/s");
}

#[test]
fn ping_through_50_ms_plus_minus_5_ms_shows_that_delay_and_a_change_is_live() {
    skip_unless_root!();
    let d = daemon_with(&["lab"]);
    let ((p1, vm1), (_, vm2)) = pair(&d, 82);
    prioritize(&d);

    // Toward vm1 only (the default direction, out): once per round trip. Lateness
    // (the wire, the loop's wake-up in whole milliseconds, a busy machine) only adds,
    // so each distribution is measured beside the same delay without jitter, in the
    // same minute: the jitter shows as replies earlier than any of those.
    let at = |times: &[f64], q: f64| times[((times.len() - 1) as f64 * q) as usize];
    let measure = |what: &str| {
        let mut times = ping_times(&vm1, &vm2, 120, "0.05");
        assert!(times.len() >= 110, "{what}: {} replies", times.len());
        let m = median(&mut times);
        let (p10, p90) = (at(&times, 0.1), at(&times, 0.9));
        let (min, max) = (times[0], times[times.len() - 1]);
        eprintln!("{what}: median {m} ms, min {min} ms, p10 {p10} ms, p90 {p90} ms, max {max} ms");
        (min, p10, m)
    };
    set(&d, p1, &["--delay", "50ms"]);
    let (min, fixed_p10, fixed) = measure("50 ms");
    assert!(min >= 50.0, "never early: min {min} ms");
    assert!((50.0..=62.0).contains(&fixed), "median {fixed} ms");

    set(&d, p1, &["--jitter", "5ms"]);
    let (min, p10, m) = measure("50 ms ± 5 ms uniform");
    // Uniform: nothing before 45 ms, a tenth before 46 ms (4 ms ahead of the fixed
    // delay's), the median where it was.
    assert!(min >= 45.0, "min {min} ms");
    assert!(
        p10 <= fixed_p10 - 2.0,
        "p10 {p10} ms, without jitter {fixed_p10} ms"
    );
    assert!(
        (m - fixed).abs() <= 6.0,
        "median {m} ms, without jitter {fixed} ms"
    );

    let metrics = client(&d).metrics().unwrap();
    let series = format!("vnet_port_delayed_frames{{net=\"lab\",port=\"{p1}\"}}");
    assert!(metrics.contains(&series), "{series} in\n{metrics}");

    set(&d, p1, &["--distribution", "normal"]);
    let (min, p10, m) = measure("50 ms, σ 5 ms normal");
    // Normal, cut at 4σ: nothing before 30 ms, a tenth before 50 - 1.28σ = 43.6 ms.
    assert!(min >= 30.0, "min {min} ms");
    assert!(
        p10 <= fixed_p10 - 3.0,
        "p10 {p10} ms, without jitter {fixed_p10} ms"
    );
    assert!(
        (m - fixed).abs() <= 6.0,
        "median {m} ms, without jitter {fixed} ms"
    );

    set(&d, p1, &["--no-impair"]);
    let mut plain = ping_times(&vm1, &vm2, 10, "0.05");
    assert!(median(&mut plain) < 10.0, "no delay any more: {plain:?}");
}

#[test]
fn twenty_percent_loss_loses_10_to_30_percent_of_500_pings() {
    skip_unless_root!();
    let d = daemon_with(&["lab"]);
    let ((p1, vm1), (_, vm2)) = pair(&d, 83);
    // From vm1 (its requests), once per round trip.
    set(&d, p1, &["--loss", "20%", "--direction", "in"]);
    let lost = ping_loss(&vm1, &vm2, 500, "0.01");
    eprintln!("20% loss: {lost}% of 500 pings lost");
    assert!((10.0..=30.0).contains(&lost), "{lost}% lost");
    let counted = drops(&port(&d, "lab", p1), "loss");
    assert!((50..=150).contains(&counted), "{counted} counted as loss");

    // In bursts (Gilbert–Elliott): p = 5 %, r = 50 %, about 9 % lost in the long run.
    set(&d, p1, &["--loss-burst", "5%,50%", "--direction", "in"]);
    let lost = ping_loss(&vm1, &vm2, 500, "0.01");
    eprintln!("loss bursts 5%,50%: {lost}% of 500 pings lost");
    assert!((2.0..=20.0).contains(&lost), "{lost}% lost in bursts");
}

#[test]
fn a_broadcast_storm_is_cut_to_its_limit_while_unicast_between_others_flows() {
    skip_unless_root!();
    let d = daemon_with(&["lab"]);
    let ((p1, vm1), (_, vm2)) = pair(&d, 84);
    let (_, vm3) = tap_vm(&d, "lab", "02:00:00:15:54:03", "10.84.0.3/24");
    assert!(vm2.ping(vm3.ip(), 1));
    set(&d, p1, &["--broadcast-limit", "100"]);
    let before = port(&d, "lab", p1).counters.rx_frames;
    // What vm1's TAP hands vnetd (the kernel drops the rest when vnetd lags).
    let handed = || -> u64 {
        let path = format!("/sys/class/net/{}/statistics/tx_packets", vm1.ifname());
        vm1.ns().exec_ok(&["cat", &path]).trim().parse().unwrap()
    };
    let handed_before = handed();

    // vm1 sends broadcast frames as fast as it can for 3 s, from a raw socket.
    let storm = format!(
        "import socket, time\n\
         s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n\
         s.bind(('{}', 0))\n\
         f = b'\\xff' * 6 + bytes.fromhex('020000155401') + b'\\x88\\xb5' + bytes(46)\n\
         n, end = 0, time.time() + 3\n\
         while time.time() < end:\n\
         \x20   try:\n\
         \x20       s.send(f); n += 1\n\
         \x20   except OSError:\n\
         \x20       pass\n\
         print(n)\n",
        vm1.ifname()
    );
    let started = Instant::now();
    let mut sender = vm1.ns().spawn(&["python3", "-c", &storm]);
    // Unicast between the two others goes on meanwhile.
    assert!(vm2.ping(vm3.ip(), 10), "unicast flows during the storm");
    assert!(sender.wait_timeout(Duration::from_secs(30)).is_some());
    let sent: u64 = sender.log().trim().parse().expect("the sender's count");
    // Everything vnetd got is counted, passed or dropped as storm.
    let got = handed() - handed_before;
    let settled = wait_for(Duration::from_secs(10), || {
        let p = port(&d, "lab", p1);
        p.counters.rx_frames - before + drops(&p, "storm") >= got
    });
    let elapsed = started.elapsed().as_secs_f64();
    let p = port(&d, "lab", p1);
    let passed = p.counters.rx_frames - before;
    let storm_drops = drops(&p, "storm");
    eprintln!("storm: sent {sent}, passed {passed} in {elapsed:.1} s, storm drops {storm_drops}");
    assert!(
        settled,
        "sent {sent}, vnetd got {got}, passed {passed}, storm {storm_drops}"
    );
    // One second's worth at once, then 100 a second.
    let limit = 100.0 + 100.0 * elapsed;
    assert!(
        (passed as f64) <= limit,
        "{passed} passed in {elapsed:.1} s"
    );
    assert!(passed >= 100, "{passed} passed");
    // All vnetd got beyond that is dropped as storm (the kernel dropped the rest of
    // what was sent when vnetd lagged).
    assert!(
        got > 1000 && storm_drops + passed >= got,
        "sent {sent}, vnetd got {got}, storm drops {storm_drops}"
    );
    let metrics = client(&d).metrics().unwrap();
    let line =
        format!("vnet_port_drops_total{{net=\"lab\",port=\"{p1}\",cause=\"storm\"}} {storm_drops}");
    assert!(metrics.contains(&line), "{line} in\n{metrics}");
}

#[test]
fn a_named_port_keeps_its_rate_and_impairment_across_a_restart() {
    skip_unless_root!();
    let mut d = daemon_with(&["lab"]);
    d.cli_ok(&["port", "add", "lab", "--vhost-user", "vm1"]);
    let id = find_kind(&d, "lab", PortKind::VhostUser).unwrap().id;
    set(
        &d,
        id,
        &[
            "--rate-out",
            "10mbit",
            "--burst",
            "64k",
            "--multicast-limit",
            "50",
        ],
    );
    set(
        &d,
        id,
        &[
            "--delay",
            "20ms",
            "--loss-burst",
            "1%,30%",
            "--direction",
            "both",
        ],
    );
    let before = port(&d, "lab", id).policy;
    let bad = d.cli(&[
        "port",
        "set",
        "lab",
        &id.to_string(),
        "--reorder",
        "5%",
        "--direction",
        "in",
        "--delay",
        "0",
    ]);
    assert!(!bad.status.success(), "reorder without a delay is refused");
    d.restart();
    let id = find_kind(&d, "lab", PortKind::VhostUser).unwrap().id;
    let after = port(&d, "lab", id);
    assert_eq!(after.policy, before, "{}", d.log());
    let shown = d.cli_ok(&["port", "show", "lab", &id.to_string()]);
    assert!(
        shown.contains("10mbit") && shown.contains("20ms"),
        "{shown}"
    );
    let exported = d.cli_ok(&["config", "export"]);
    assert!(exported.contains("10mbit"), "{exported}");
}
