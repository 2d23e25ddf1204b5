//! The sandbox from outside: every thread of a running vnetd, also those started after
//! the filter (a vhost-user port's workers, a classic device's waiters), is under the
//! seccomp filter while vnetd goes on working; `[access] sandbox = false` switches it
//! off. (That a call off the list kills, and what landlock refuses, the unit tests in
//! `src/sandbox/` show with the same functions vnetd calls.)

use std::fs::OpenOptions;
use std::path::Path;
use std::time::Duration;

use vnet_control::{PortKind, PortSpec};
use vnet_testbed::api::{client, wait_ports};
use vnet_testbed::{skip_unless_root, unique_name, wait_for, Daemon};

/// The `key:` lines of vnetd's and every thread's `/proc/.../status`, whitespace
/// collapsed, with the thread's name.
fn per_task(d: &Daemon, key: &str) -> Vec<(String, String)> {
    let pid = d.pid().unwrap();
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|task| {
            let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
            let field = |k: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(k)?.strip_prefix(':'))
                    .unwrap_or_else(|| panic!("no {k}: in\n{status}"))
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            (field("Name"), field(key))
        })
        .collect()
}

#[test]
fn every_thread_of_a_root_vnetd_runs_under_the_filter_and_it_keeps_working() {
    skip_unless_root!();
    let net = unique_name("sbx");
    let d = Daemon::start(Some(&format!("[[network]]\nname = \"{net}\"\n")));
    assert!(
        d.log().contains("seccomp: system calls limited"),
        "{}",
        d.log()
    );
    let c = client(&d);

    // Threads born after the filter: rust-vmm's vhost-user worker, a FUSE waiter.
    c.add_port(
        &net,
        &PortSpec::VhostUser {
            name: "vm1".into(),
            vlan: Default::default(),
            policy: Default::default(),
        },
    )
    .unwrap_or_else(|e| panic!("vhost-user port: {e}\n{}", d.log()));
    let dev = d.run_dir().join("dev").join(&net);
    let fuse = Path::new("/dev/fuse").exists();
    let _device = fuse.then(|| {
        assert!(
            wait_for(Duration::from_secs(10), || dev.exists()),
            "{}",
            d.log()
        );
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&dev)
            .unwrap();
        wait_ports(&d, &net, PortKind::Device, 1);
        f
    });
    let tap = unique_name("vt");
    c.add_port(
        &net,
        &PortSpec::Tap {
            ifname: tap.clone(),
            vlan: Default::default(),
            policy: Default::default(),
        },
    )
    .unwrap_or_else(|e| panic!("TAP {tap}: {e}\n{}", d.log()));

    // Those threads start as the port and the open are served: wait for them.
    let names = || -> Vec<String> { per_task(&d, "Seccomp").into_iter().map(|t| t.0).collect() };
    let born = |prefix: &str| names().iter().any(|n| n.starts_with(prefix));
    assert!(born("vnet-dataplane"), "{:?}", names());
    let waited = wait_for(Duration::from_secs(10), || {
        born("vhost-user-vm1") && (!fuse || born("vnet-dev-"))
    });
    assert!(waited, "{:?}\n{}", names(), d.log());
    for key in ["Seccomp", "Seccomp_filters", "NoNewPrivs"] {
        let want = if key == "Seccomp" { "2" } else { "1" };
        for (task, value) in per_task(&d, key) {
            assert_eq!(value, want, "{key} of thread {task}\n{}", d.log());
        }
    }
    // Root stays root under the filter: uid 0, its capabilities effective.
    for (task, uid) in per_task(&d, "Uid") {
        assert_eq!(uid, "0 0 0 0", "{task}");
    }
    c.delete_network(&net).unwrap();
    assert!(c.networks().unwrap().iter().all(|n| n.name != net));
    assert!(d.is_running(), "{}", d.log());
}

#[test]
fn sandbox_false_leaves_vnetd_without_a_filter() {
    skip_unless_root!();
    let net = unique_name("sbx");
    let d = Daemon::start(Some(&format!(
        "[access]\nsandbox = false\n\n[[network]]\nname = \"{net}\"\n"
    )));
    assert!(
        d.log()
            .contains("seccomp and landlock off ([access] sandbox = false)"),
        "{}",
        d.log()
    );
    for (task, value) in per_task(&d, "Seccomp") {
        assert_eq!(value, "0", "thread {task}");
    }
}
