//! Reload (SIGHUP, `vnet reload`): what changed in the config file is applied live;
//! untouched vnets keep forwarding without losing a frame; a bad file or a change that
//! fails leaves everything as it was and says why.

use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use vnet_control::{NetworkInfo, PortInfo, PortKind, VlanMode};
use vnet_testbed::api::{cli_json, ports, tap_vm, wait_ports};
use vnet_testbed::{skip_unless_root, wait_for, Daemon};

const T: Duration = Duration::from_secs(20);

fn net(name: &str, extra: &str) -> String {
    format!("[[network]]\nname = \"{name}\"\n{extra}\n")
}

fn hangup(d: &Daemon) {
    kill(Pid::from_raw(d.pid().unwrap() as i32), Signal::SIGHUP).unwrap();
}

/// Waits until the log holds `n` lines containing `what`.
fn wait_log(d: &Daemon, what: &str, n: usize) {
    assert!(
        wait_for(T, || d.log().matches(what).count() >= n),
        "{what:?} not {n} time(s) in the log:\n{}",
        d.log()
    );
}

/// `vnet reload`, which must fail (whatever its exit status); returns what it said.
fn refused(d: &Daemon) -> String {
    let out = d.cli(&["reload"]);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{said}\n{}", d.log());
    said
}

fn port_of(d: &Daemon, net: &str, id: u32) -> PortInfo {
    ports(d, net)
        .into_iter()
        .find(|p| p.id == id)
        .unwrap_or_else(|| panic!("port {id} of {net} is gone:\n{}", d.log()))
}

#[test]
fn reloads_change_b_and_add_c_while_a_forwards_every_frame() {
    skip_unless_root!();
    let b = net("b", "subnet = \"10.81.0.0/24\"\ndhcp = {}");
    let d = Daemon::builder()
        .config(&format!("{}{b}", net("a", "")))
        .start();
    let config = d.config_path().unwrap().to_path_buf();
    let (p1, vm1) = tap_vm(&d, "a", "02:00:00:00:81:01", "10.80.0.1/24");
    let (p2, vm2) = tap_vm(&d, "a", "02:00:00:00:81:02", "10.80.0.2/24");
    assert!(wait_for(T, || vm1.ping(vm2.ip(), 1)), "{}", d.log());
    // A client of b: an in-place change keeps it, recreating b drops it.
    let _b_client = UnixStream::connect(d.net_dir("b").join("stream.sock")).unwrap();
    wait_ports(&d, "b", PortKind::Stream, 1);

    // A numbered stream of frames on a, through both reloads.
    let mut pinger = vm1
        .ns()
        .spawn(&["ping", "-n", "-q", "-i", "0.002", vm2.ip()]);
    let rx = |id| port_of(&d, "a", id).counters.rx_frames;
    assert!(wait_for(T, || rx(p1) >= 200), "{}", pinger.log());

    // SIGHUP: b's DHCP changes in place, c is new.
    let c = net("c", "mtu = 9000");
    let b2 = b.replace("dhcp = {}", "dhcp = { lease_secs = 600 }");
    std::fs::write(&config, format!("{}{b2}{c}", net("a", ""))).unwrap();
    hangup(&d);
    wait_log(&d, "SIGHUP: configuration reloaded, 2 change(s)", 1);
    let shown: NetworkInfo = cli_json(&d, &["net", "show", "b"]);
    assert_eq!(shown.dhcp.unwrap().lease_secs, 600);
    assert_eq!(
        ports(&d, "b")
            .iter()
            .filter(|p| p.kind == PortKind::Stream)
            .count(),
        1,
        "b's client was dropped by an in-place change"
    );
    let shown: NetworkInfo = cli_json(&d, &["net", "show", "c"]);
    assert_eq!(shown.mtu, 9000);

    // `vnet reload`: b's MTU changes, which recreates it.
    let before = rx(p1);
    std::fs::write(
        &config,
        format!(
            "{}{}{c}",
            net("a", ""),
            b2.replace("[[network]]", "[[network]]\nmtu = 4000")
        ),
    )
    .unwrap();
    let said = d.cli_ok(&["reload"]);
    assert_eq!(said, "reloaded:\ndelete vnet b\ncreate vnet b\n");
    let shown: NetworkInfo = cli_json(&d, &["net", "show", "b"]);
    assert_eq!(shown.mtu, 4000);
    assert!(wait_for(T, || rx(p1) >= before + 200), "{}", pinger.log());

    // Stop the stream: every frame vm1 sent reached vm2 and back, on the same two ports
    // as before the reloads.
    kill(Pid::from_raw(pinger.pid() as i32), Signal::SIGINT).unwrap();
    assert!(pinger.wait_timeout(T).is_some());
    // One snapshot of a's ports is taken between two turns of its loop: every frame one
    // port took in was delivered to the other or waits in its queue (a has no other
    // port), unless it was dropped.
    let lossless = |a: &PortInfo, b: &PortInfo| {
        let queued = |p: &PortInfo| p.queue_len as u64;
        a.counters.rx_frames == b.counters.tx_frames + queued(b)
            && b.counters.rx_frames == a.counters.tx_frames + queued(a)
    };
    let snapshot = ports(&d, "a");
    assert_eq!(snapshot.len(), 2, "{snapshot:?}");
    let (a1, a2) = (&snapshot[0], &snapshot[1]);
    assert_eq!((a1.id, a2.id), (p1, p2), "a's ports were recreated");
    assert!(lossless(a1, a2), "frames lost on a: {snapshot:?}");
    assert!(a1.counters.rx_frames >= 400, "{a1:?}");
    for p in [a1, a2] {
        assert!(p.counters.drops.values().all(|n| *n == 0), "{p:?}");
    }
    // ping agrees, but for the one echo that may have been in flight at SIGINT.
    let summary = pinger.log();
    let count = |what: &str| -> u64 {
        let words: Vec<&str> = summary
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|w| !w.is_empty())
            .collect();
        let at = words
            .iter()
            .position(|w| *w == what)
            .unwrap_or_else(|| panic!("{summary}"));
        words[at - 1]
            .parse()
            .unwrap_or_else(|_| panic!("{summary}"))
    };
    let (sent, received) = (count("packets"), count("received"));
    assert!(sent >= 400 && sent - received <= 1, "{summary}");
}

#[test]
fn a_bad_file_or_a_failing_change_leaves_everything_as_it_was() {
    let b = net("b", "subnet = \"10.82.0.0/24\"\ndhcp = {}\nnat = {}");
    let first = format!("{}{b}", net("a", ""));
    let d = Daemon::builder().config(&first).start();
    let config = d.config_path().unwrap().to_path_buf();

    // A file that does not parse: the answer names it and the line.
    std::fs::write(&config, "[[network]\nname = \"a\"\n").unwrap();
    let e = refused(&d);
    assert!(
        e.contains(&config.display().to_string()) && e.contains("line 1"),
        "{e}"
    );
    hangup(&d);
    wait_log(&d, "SIGHUP: configuration not reloaded", 1);
    assert!(d.is_running());

    // b's DHCP changes (in place, done first), then a forward on a busy host port
    // fails, and c would be created last: nothing of it stays.
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let host = busy.local_addr().unwrap();
    let forward =
        format!("nat = {{ forward = [{{ host = \"{host}\", guest = \"10.82.0.9:22\" }}] }}");
    let b2 = b
        .replace("dhcp = {}", "dhcp = { lease_secs = 600 }")
        .replace("nat = {}", &forward);
    std::fs::write(&config, format!("{}{b2}{}", net("a", ""), net("c", ""))).unwrap();
    let e = refused(&d);
    assert!(
        e.contains(&format!("forward tcp {host}")) && e.contains("were undone"),
        "{e}"
    );
    let shown: NetworkInfo = cli_json(&d, &["net", "show", "b"]);
    assert_eq!(shown.dhcp.unwrap().lease_secs, 1800, "not undone");
    let names: Vec<NetworkInfo> = cli_json(&d, &["net", "ls"]);
    assert_eq!(
        names.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );

    // Once the port is free the same file applies; a daemon-wide key waits for a start.
    drop(busy);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("threads = 1\n{text}")).unwrap();
    let said = d.cli_ok(&["reload"]);
    assert!(
        d.log().contains("they take effect at the next start"),
        "{}",
        d.log()
    );
    assert_eq!(
        said,
        format!("reloaded:\nvnet b: set DHCP\nvnet b: forward tcp {host} to 10.82.0.9:22\ncreate vnet c\n")
    );
}

#[test]
fn a_reload_changes_configured_ports_in_place() {
    skip_unless_root!();
    let (t1, t2) = (
        vnet_testbed::unique_name("rl"),
        vnet_testbed::unique_name("rl"),
    );
    let port = |tap: &str, vlan: &str| format!("[[network.port]]\ntap = \"{tap}\"\n{vlan}\n");
    let d = Daemon::builder()
        .config(&format!("{}{}", net("p", ""), port(&t1, "vlan = 2")))
        .start();
    let config = d.config_path().unwrap().to_path_buf();
    let taps = || -> Vec<(u32, String, VlanMode)> {
        ports(&d, "p")
            .into_iter()
            .filter(|p| p.kind == PortKind::Tap)
            .map(|p| (p.id, p.description, p.vlan))
            .collect()
    };
    let before = taps();
    assert_eq!(before.len(), 1, "{before:?}\n{}", d.log());

    std::fs::write(
        &config,
        format!("{}{}", net("p", ""), port(&t1, "vlan = 3")),
    )
    .unwrap();
    let said = d.cli_ok(&["reload"]);
    assert_eq!(
        said,
        format!("reloaded:\nvnet p: set the VLANs of tap port {t1}\n")
    );
    let after = taps();
    assert_eq!(after.len(), 1);
    assert_eq!(
        (after[0].0, &after[0].2),
        (before[0].0, &VlanMode::Access { vlan: 3 })
    );

    std::fs::write(&config, format!("{}{}", net("p", ""), port(&t2, ""))).unwrap();
    let said = d.cli_ok(&["reload"]);
    assert_eq!(
        said,
        format!("reloaded:\nvnet p: remove tap port {t1}\nvnet p: add tap port {t2}\n")
    );
    let after = taps();
    assert_eq!(after.len(), 1);
    assert!(after[0].1.contains(&t2), "{after:?}");
    assert!(!std::path::Path::new("/sys/class/net").join(&t1).exists());
}
