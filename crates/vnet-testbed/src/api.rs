//! A test's side of vnetd's control API and CLI: a daemon serving some vnets, its
//! ports and counters, namespace VMs on TAP ports it creates, and `vnet` commands
//! that must succeed (decoding their `--json`) or be refused, and the refusals the
//! daemon's limits count.

use std::time::Duration;

use vnet_control::client::Client;
use vnet_control::{PortInfo, PortKind, PortSpec};

use crate::{unique_name, wait_for, Daemon, NsVm};

/// A daemon serving one vnet per name in `nets` (and nothing else).
pub fn daemon_with(nets: &[&str]) -> Daemon {
    let mut toml = String::new();
    for n in nets {
        toml.push_str(&format!("[[network]]\nname = \"{n}\"\n\n"));
    }
    Daemon::start(Some(&toml))
}

/// A control-API client of `d`.
///
/// # Panics
/// If the client cannot be made.
pub fn client(d: &Daemon) -> Client {
    Client::for_run_dir(d.run_dir()).expect("control client")
}

/// Adds a TAP port to `net` and turns it into a namespace VM with `mac` and `cidr`
/// (`""`: no address); returns the port's id and the VM.
///
/// # Panics
/// If the daemon refuses the port (the message includes its log).
pub fn tap_vm(d: &Daemon, net: &str, mac: &str, cidr: &str) -> (u32, NsVm) {
    tap_vm_in(d, None, net, mac, cidr)
}

/// [`tap_vm`] for a daemon running in namespace `home` (`None`: the test's), where it
/// makes its TAPs (see [`crate::DaemonBuilder::netns`]).
pub fn tap_vm_in(
    d: &Daemon,
    home: Option<&crate::Netns>,
    net: &str,
    mac: &str,
    cidr: &str,
) -> (u32, NsVm) {
    let ifname = unique_name("vt");
    let port = client(d)
        .add_port(
            net,
            &PortSpec::Tap {
                ifname: ifname.clone(),
                vlan: Default::default(),
                policy: Default::default(),
            },
        )
        .unwrap_or_else(|e| panic!("adding TAP {ifname}: {e}\n{}", d.log()));
    let vm = match home {
        Some(home) => NsVm::attach_in(home, &ifname, mac, cidr),
        None => NsVm::attach(&ifname, mac, cidr),
    };
    (port.id, vm)
}

/// The ports of `net`.
pub fn ports(d: &Daemon, net: &str) -> Vec<PortInfo> {
    client(d).ports(net).expect("list ports")
}

/// Port `id` of `net`.
pub fn port(d: &Daemon, net: &str, id: u32) -> PortInfo {
    client(d).port(net, id).expect("port info")
}

/// How many ports of `kind` `net` has.
pub fn count_kind(d: &Daemon, net: &str, kind: PortKind) -> usize {
    ports(d, net).iter().filter(|p| p.kind == kind).count()
}

/// Waits until `net` has exactly `n` ports of `kind`.
///
/// # Panics
/// If it does not within 10 s (the message lists the ports and the daemon's log).
pub fn wait_ports(d: &Daemon, net: &str, kind: PortKind, n: usize) {
    assert!(
        wait_for(Duration::from_secs(10), || count_kind(d, net, kind) == n),
        "expected {n} {kind:?} port(s) on {net}, have {:?}\n{}",
        ports(d, net),
        d.log()
    );
}

/// The first port of `kind` on `net`, if any.
pub fn find_kind(d: &Daemon, net: &str, kind: PortKind) -> Option<PortInfo> {
    ports(d, net).into_iter().find(|p| p.kind == kind)
}

/// How many frames port `p` dropped for `cause` (`"oversize"`, `"queue_full"`, ...).
pub fn drops(p: &PortInfo, cause: &str) -> u64 {
    p.counters.drops.get(cause).copied().unwrap_or(0)
}

/// Asserts that `d` still runs and still switches: namespace VM `a` pings `b`.
pub fn still_serving(d: &Daemon, a: &NsVm, b: &NsVm) {
    assert!(d.is_running(), "vnetd died:\n{}", d.log());
    assert!(
        a.ping(b.ip(), 2),
        "the TAP VMs stopped reaching each other:\n{}",
        d.log()
    );
}

/// Runs `vnet ARGS... --json` against `d` and decodes what it printed.
///
/// # Panics
/// If the command fails or prints something else.
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

/// Runs `vnet ARGS...` against `d`, which must fail as a refused request, not a usage
/// error: a non-zero exit status (which one says what kind of refusal: `vnet --help`)
/// and a `vnet: ` message, where clap's usage errors start with `error: `. Returns its
/// stderr.
///
/// # Panics
/// If it ends any other way.
pub fn cli_fails(d: &Daemon, args: &[&str]) -> String {
    let out = d.cli(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success() && stderr.starts_with("vnet: "),
        "`vnet {}` should be refused, but ended with {}:\nstdout: {}\nstderr: {stderr}\n--- vnetd log ---\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        d.log()
    );
    stderr
}

/// `vnet_limit_refusals_total{LABELS}` on `/metrics` (0 while the series is absent), or
/// the client's error (a full control socket answers 503). `labels` as in the metric,
/// e.g. `net="lab",limit="ports_per_vnet"`.
pub fn try_refusals(d: &Daemon, labels: &str) -> Result<u64, vnet_control::client::Error> {
    let metrics = client(d).metrics()?;
    let series = format!("vnet_limit_refusals_total{{{labels}}} ");
    Ok(metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |n| n.parse().expect("a count")))
}

/// [`try_refusals`], which must answer.
pub fn refusals(d: &Daemon, labels: &str) -> u64 {
    try_refusals(d, labels).expect("metrics")
}

/// Waits until `refusals(d, labels)` is `n` (vnetd counts some once a second).
pub fn wait_refusals(d: &Daemon, labels: &str, n: u64) {
    assert!(
        wait_for(Duration::from_secs(20), || refusals(d, labels) == n),
        "expected {n} refusal(s) of {labels}, have {}\n{}",
        refusals(d, labels),
        d.log()
    );
}
