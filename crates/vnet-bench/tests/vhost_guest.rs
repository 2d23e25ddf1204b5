//! The synthetic vhost-user guest as a client of vnetd: two of them on one vnet are two
//! VMs, one sending test frames (small ones, then TSO super-frames), one checking every
//! frame's sequence number and payload checksum. Also the guest's loopback mode.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use vnet_control::{PortInfo, PortSpec};
use vnet_testbed::api::{client, daemon_with, port};
use vnet_testbed::{skip_unless_root, wait_for, Daemon};

const GUEST: &str = env!("CARGO_BIN_EXE_vnet-vhost-guest");

fn add(d: &Daemon, net: &str, name: &str) -> PortInfo {
    client(d)
        .add_port(
            net,
            &PortSpec::VhostUser {
                name: name.into(),
                vlan: Default::default(),
                policy: Default::default(),
            },
        )
        .unwrap_or_else(|e| panic!("adding vhost-user port {name}: {e}\n{}", d.log()))
}

fn socket(d: &Daemon, net: &str, name: &str) -> PathBuf {
    d.net_dir(net)
        .join("vhost-user")
        .join(format!("{name}.sock"))
}

/// The `key=value` pairs of a guest's report line.
fn report(out: &Output) -> HashMap<String, String> {
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn num(r: &HashMap<String, String>, key: &str) -> u64 {
    r.get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {r:?}"))
}

fn receiver(sock: &Path) -> Child {
    Command::new(GUEST)
        .args(["receive", "--idle", "3", "--wait", "60", "--socket"])
        .arg(sock)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the receiving guest")
}

/// One run of `send ARGS` from port `a` to a receiver on port `b`: both reports, after
/// checking that every frame arrived, in order and intact.
fn exchange(d: &Daemon, a: &PortInfo, b: &PortInfo, args: &[&str]) -> HashMap<String, String> {
    let before = port(d, "lab", b.id).counters.rx_frames;
    let rx = receiver(&socket(d, "lab", "b"));
    // The receiver's hello (sent once its RX queue is stocked) teaches the switch its
    // MAC: the frames go to it alone, and its queues are the data plane's by then.
    assert!(
        wait_for(Duration::from_secs(30), || {
            let now = port(d, "lab", b.id);
            now.counters.rx_frames > before && !now.macs.is_empty()
        }),
        "the receiving guest's hello never came: {:?}\n{}",
        port(d, "lab", b.id),
        d.log()
    );
    let sent = Command::new(GUEST)
        .arg("send")
        .args(args)
        .arg("--socket")
        .arg(socket(d, "lab", "a"))
        .output()
        .expect("run the sending guest");
    assert!(sent.status.success(), "sender: {sent:?}");
    let sent = report(&sent);
    let got = rx.wait_with_output().expect("receiver");
    let r = report(&got);
    assert!(got.status.success(), "receiver: {got:?}\n{}", d.log());
    assert_eq!(num(&r, "corrupt"), 0, "{r:?}");
    assert_eq!(num(&r, "reordered"), 0, "{r:?}");
    assert_eq!(
        num(&r, "frames"),
        num(&sent, "sent"),
        "every frame arrived: {r:?} {sent:?}\nsender's port: {:?}\nreceiver's port: {:?}",
        port(d, "lab", a.id),
        port(d, "lab", b.id)
    );
    r
}

#[test]
fn two_synthetic_guests_exchange_checked_frames_and_tso_super_frames_through_a_vnet() {
    skip_unless_root!();
    let d = daemon_with(&["lab"]);
    let a = add(&d, "lab", "a");
    let b = add(&d, "lab", "b");

    // 64-byte frames (60 without the FCS), paced so a busy test machine keeps up.
    let small = exchange(&d, &a, &b, &["--count", "3000", "--rate", "5000"]);
    assert_eq!(num(&small, "bytes"), 3000 * 60, "{small:?}");

    // 64 KiB TSO super-frames pass whole between the two offloading ports.
    let tso = exchange(&d, &a, &b, &["--tso", "--count", "200", "--rate", "400"]);
    assert_eq!(num(&tso, "bytes"), 200 * 65549, "{tso:?}");

    let sender = port(&d, "lab", a.id);
    let receiver = port(&d, "lab", b.id);
    assert!(sender.counters.rx_frames >= 3200, "{sender:?}");
    assert!(receiver.counters.tx_frames >= 3200, "{receiver:?}");
    assert!(d.is_running(), "{}", d.log());
}

#[test]
fn the_loopback_mode_forwards_every_frame_checked() {
    for args in [&["--count", "20000"][..], &["--tso", "--count", "500"]] {
        let out = Command::new(GUEST)
            .arg("loopback")
            .args(args)
            .output()
            .expect("run the loopback guest");
        assert!(out.status.success(), "{out:?}");
        let r = report(&out);
        assert_eq!(num(&r, "frames"), num(&r, "sent"), "{r:?}");
        let bad = num(&r, "corrupt") + num(&r, "lost") + num(&r, "dropped");
        assert_eq!(bad, 0, "{r:?}");
    }
}
