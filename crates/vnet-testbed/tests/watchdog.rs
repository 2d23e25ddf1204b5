//! Processes the test bed starts die with the test process even when it dies
//! without unwinding (SIGKILL, abort), so no stray QEMU or daemon burns CPU.
//! Needs no root.

use std::process::Command;
use std::time::Duration;

use vnet_testbed::{wait_for, ChildGuard};

const HELPER_ENV: &str = "VNET_TESTBED_WATCHDOG_HELPER";

/// Not a test on its own: when re-run as a helper, starts a background
/// process, reports its pid and aborts (no Drop runs).
#[test]
fn helper_aborts_with_a_child() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    let mut sleep = Command::new("sleep");
    sleep.arg("600");
    let guard = ChildGuard::spawn(sleep, "sleep 600").unwrap();
    println!("CHILD-PID {}", guard.pid());
    std::process::abort();
}

#[test]
fn background_processes_die_with_an_aborted_test() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "helper_aborts_with_a_child", "--nocapture"])
        .env(HELPER_ENV, "1")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the helper must abort");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let pid: u32 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("CHILD-PID "))
        .unwrap_or_else(|| panic!("no pid in helper output: {stdout}"))
        .trim()
        .parse()
        .unwrap();
    let proc_dir = format!("/proc/{pid}");
    let is_alive = || {
        // A zombie (reaped later by init) counts as dead.
        std::fs::read_to_string(format!("{proc_dir}/stat")).is_ok_and(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    };
    assert!(
        wait_for(Duration::from_secs(10), || !is_alive()),
        "sleep {pid} outlived the aborted test process"
    );
}
