//! The vnetd harness, exercised with stand-in daemons (shell scripts), so it
//! is tested before and independently of the real vnetd. Needs no root.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vnet_testbed::{Daemon, Error};

/// Writes an executable script into `dir`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A stand-in vnetd: parses the harness's flags, logs them, creates
/// RUN/control.sock (a plain file is enough for the harness), exits 0 on
/// SIGTERM.
const FAKE_VNETD: &str = r#"
while [ $# -gt 0 ]; do
  case "$1" in
    --run-dir) run=$2; shift ;;
    --state-dir) state=$2; shift ;;
    --config) config=$2; shift ;;
  esac
  shift
done
echo "fake vnetd: run=$run state=$state config=$config"
[ -n "$config" ] && cat "$config"
trap 'echo "fake vnetd: terminating"; exit 0' TERM
sleep 0.2
: >"$run/control.sock"
while :; do sleep 1; done
"#;

#[test]
fn daemon_starts_logs_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let fake = script(dir.path(), "vnetd", FAKE_VNETD);
    let mut d = Daemon::builder()
        .binary(&fake)
        .config("[net.lab]\nsubnet = \"10.0.0.0/24\"\n")
        .start();
    assert!(d.control_socket().exists());
    assert_eq!(d.control_socket(), d.run_dir().join("control.sock"));
    assert_eq!(d.net_dir("lab"), d.run_dir().join("lab"));
    assert!(d.state_dir().is_dir());
    assert!(d.is_running());
    let log = d.log();
    assert!(
        log.contains(&format!("run={}", d.run_dir().display())),
        "{log}"
    );
    assert!(log.contains("subnet = \"10.0.0.0/24\""), "{log}");

    let status = d.stop().expect("an exit status");
    assert!(status.success(), "{status}");
    assert!(!d.is_running());
    assert!(d.log().contains("fake vnetd: terminating"));
    assert!(d.stop().is_none(), "a second stop is a no-op");
}

#[test]
fn daemon_that_dies_during_startup_is_reported_with_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let fake = script(
        dir.path(),
        "vnetd",
        "echo 'bad config: no nets' >&2; exit 3\n",
    );
    let err = Daemon::builder().binary(&fake).try_start().unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Failed(_)), "{msg}");
    assert!(
        msg.contains("bad config: no nets") && msg.contains("3"),
        "{msg}"
    );
}

#[test]
fn daemon_without_control_socket_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let fake = script(dir.path(), "vnetd", "echo starting; exec sleep 600\n");
    let err = Daemon::builder()
        .binary(&fake)
        .start_timeout(Duration::from_millis(300))
        .try_start()
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(err.to_string().contains("starting"), "{err}");
}

#[test]
fn missing_binary_names_the_path() {
    let err = Daemon::builder()
        .binary("/nonexistent/vnetd")
        .try_start()
        .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/vnetd"), "{err}");
}

#[test]
fn bin_path_is_next_to_the_test_executable() {
    let p = vnet_testbed::bin_path("vnetd");
    assert_eq!(p.file_name().unwrap(), "vnetd");
    if std::env::var_os("VNET_BIN_DIR").is_none() {
        // Integration tests run from target/<profile>/deps/.
        assert_ne!(p.parent().unwrap().file_name().unwrap(), "deps");
    }
}
