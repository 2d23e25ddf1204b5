//! Helpers shared by the end-to-end tests: a daemon with one vnet, "VMs" on TAP ports.

#![allow(dead_code)]

use std::time::Duration;

use vnet_control::client::Client;
use vnet_control::{PortInfo, PortKind, PortSpec};
use vnet_testbed::{unique_name, wait_for, Daemon, NsVm};

/// A daemon serving one vnet named `net` (besides nothing else).
pub fn daemon_with(nets: &[&str]) -> Daemon {
    let mut toml = String::new();
    for n in nets {
        toml.push_str(&format!("[[network]]\nname = \"{n}\"\n\n"));
    }
    Daemon::start(Some(&toml))
}

pub fn client(d: &Daemon) -> Client {
    Client::for_run_dir(d.run_dir()).expect("control client")
}

/// Adds a TAP port to `net` and turns it into a namespace VM with `mac` and `cidr`.
pub fn tap_vm(d: &Daemon, net: &str, mac: &str, cidr: &str) -> (u32, NsVm) {
    let ifname = unique_name("vt");
    let port = client(d)
        .add_port(
            net,
            &PortSpec::Tap {
                ifname: ifname.clone(),
                vlan: Default::default(),
            },
        )
        .unwrap_or_else(|e| panic!("adding TAP {ifname}: {e}\n{}", d.log()));
    (port.id, NsVm::attach(&ifname, mac, cidr))
}

pub fn ports(d: &Daemon, net: &str) -> Vec<PortInfo> {
    client(d).ports(net).expect("list ports")
}

pub fn port(d: &Daemon, net: &str, id: u32) -> PortInfo {
    client(d).port(net, id).expect("port info")
}

pub fn count_kind(d: &Daemon, net: &str, kind: PortKind) -> usize {
    ports(d, net).iter().filter(|p| p.kind == kind).count()
}

/// Waits until `net` has exactly `n` ports of `kind`.
pub fn wait_ports(d: &Daemon, net: &str, kind: PortKind, n: usize) {
    assert!(
        wait_for(Duration::from_secs(10), || count_kind(d, net, kind) == n),
        "expected {n} {kind:?} port(s) on {net}, have {:?}\n{}",
        ports(d, net),
        d.log()
    );
}

pub fn drops(p: &PortInfo, cause: &str) -> u64 {
    p.counters.drops.get(cause).copied().unwrap_or(0)
}

/// The first port of `kind` on `net`, if any.
pub fn find_kind(d: &Daemon, net: &str, kind: PortKind) -> Option<PortInfo> {
    ports(d, net).into_iter().find(|p| p.kind == kind)
}

/// Runs `vnet ARGS... --json` against `d` and decodes what it printed.
pub fn cli_json<T: serde::de::DeserializeOwned>(d: &Daemon, args: &[&str]) -> T {
    let mut args = args.to_vec();
    args.push("--json");
    let out = d.cli_ok(&args);
    serde_json::from_str(&out).unwrap_or_else(|e| {
        panic!(
            "`vnet {}` did not print the JSON expected ({e}):\n{out}",
            args.join(" ")
        )
    })
}

/// Runs `vnet ARGS...` against `d`, which must fail with exit status 1 (a refused
/// request, not a usage error); returns its stderr.
pub fn cli_fails(d: &Daemon, args: &[&str]) -> String {
    let out = d.cli(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "`vnet {}` should fail with exit status 1, but ended with {}:\nstdout: {}\nstderr: {stderr}\n--- vnetd log ---\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        d.log()
    );
    stderr
}

/// Deterministic junk bytes (xorshift), so a failure can be replayed from its seed.
pub fn junk(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

/// The md5 of a file, as `md5sum` prints it.
pub fn md5(path: &std::path::Path) -> String {
    let out = std::process::Command::new("md5sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Sends `len` random bytes over TCP from namespace VM `vm` to `guest` (listening with
/// busybox `nc` on port 5001 of `guest_ip`) and asserts they arrive intact. Returns the
/// payload file (and the directory that keeps it).
pub fn send_file_to_guest(
    vm: &NsVm,
    guest: &vnet_testbed::Guest,
    guest_ip: &str,
    len: usize,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let t = Duration::from_secs(60);
    guest.exec_ok(
        "(nc -l -p 5001 > /tmp/rx; echo done > /tmp/rx.done) >/dev/null 2>&1 &",
        t,
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("payload");
    let made = std::process::Command::new("sh")
        .args([
            "-c",
            &format!("head -c {len} /dev/urandom > {}", file.display()),
        ])
        .status()
        .unwrap();
    assert!(made.success());
    let sent = vm.ns().exec(&[
        "socat",
        "-u",
        &format!("FILE:{}", file.display()),
        &format!("TCP:{guest_ip}:5001,retry=20,interval=0.5"),
    ]);
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    guest.exec_ok(
        "for i in $(seq 300); do [ -e /tmp/rx.done ] && break; sleep 0.2; done; ls -l /tmp/rx",
        t,
    );
    let theirs = guest.exec_ok("md5sum /tmp/rx | cut -d' ' -f1", t);
    assert_eq!(
        theirs.trim(),
        md5(&file),
        "payload corrupted on the way to the guest"
    );
    (dir, file)
}
