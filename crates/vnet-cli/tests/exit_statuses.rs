//! The real `vnet` against a real vnetd: each kind of failure has its own exit status
//! (`vnet --help`, "Exit status"), and `--if-exists` / `--may-exist` make removing what
//! is gone and adding what is there succeed without changing anything, as in
//! `ovs-vsctl`.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use vnet_testbed::api::{cli_json, client};
use vnet_testbed::{bin_path, skip_unless_root, Daemon};

/// `vnet ARGS...` against `d`: its exit status and stderr.
fn status(d: &Daemon, args: &[&str]) -> (i32, String) {
    outcome(d.cli(args))
}

fn outcome(out: Output) -> (i32, String) {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().expect("exited"), stderr)
}

fn daemon() -> Daemon {
    Daemon::start(Some(
        "[[network]]\nname = \"lab\"\nsubnet = \"10.9.0.0/24\"\ndhcp = {}\n",
    ))
}

#[test]
fn each_kind_of_failure_has_its_exit_status() {
    let d = daemon();
    // 0: done.
    assert_eq!(status(&d, &["net", "create", "lab2"]).0, 0);
    // 2: a usage error (clap), or a request vnetd finds invalid (400).
    assert_eq!(status(&d, &["net", "frobnicate"]).0, 2);
    let (code, e) = status(&d, &["net", "create", "a/b"]);
    assert_eq!(code, 2, "{e}");
    // 4: not found.
    let (code, e) = status(&d, &["net", "show", "nosuch"]);
    assert_eq!(code, 4, "{e}");
    assert_eq!(status(&d, &["port", "rm", "lab", "42"]).0, 4);
    assert_eq!(
        status(&d, &["dhcp", "unreserve", "lab", "52:54:00:00:00:01"]).0,
        4
    );
    // 5: exists already.
    let (code, e) = status(&d, &["net", "create", "lab2"]);
    assert_eq!(code, 5, "{e}");
    assert!(e.contains("already exists"), "{e}");
    assert_eq!(
        status(
            &d,
            &["dhcp", "reserve", "lab", "52:54:00:00:00:01", "10.9.0.10"]
        )
        .0,
        0
    );
    assert_eq!(
        status(
            &d,
            &["dhcp", "reserve", "lab", "52:54:00:00:00:01", "10.9.0.11"]
        )
        .0,
        5
    );
}

#[test]
fn a_vnetd_that_is_not_there_is_exit_status_3() {
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(bin_path("vnet"))
        .arg("--run-dir")
        .arg(empty.path())
        .args(["net", "ls"])
        .output()
        .unwrap();
    let (code, e) = outcome(out);
    assert_eq!(code, 3, "{e}");
    assert!(e.contains("vnetd is not running"), "{e}");
}

#[test]
fn a_refused_role_is_exit_status_6() {
    skip_unless_root!();
    let d = daemon();
    // Let an ordinary uid reach control.sock (the test bed's base directory is 0700).
    let base = d.run_dir().parent().unwrap();
    std::fs::set_permissions(base, PermissionsExt::from_mode(0o755)).unwrap();
    // A uid and gid of no one, in no group (util-linux's setpriv, as the access tests).
    let nobody = |args: &[&str]| {
        let out = Command::new("setpriv")
            .args(["--reuid=64990", "--regid=64990", "--clear-groups"])
            .arg(bin_path("vnet"))
            .arg("--run-dir")
            .arg(d.run_dir())
            .args(args)
            .output()
            .unwrap();
        outcome(out)
    };
    let (code, e) = nobody(&["net", "create", "x"]);
    assert_eq!(code, 6, "{e}");
    assert!(e.contains("needs the admin role"), "{e}");
    // The version is for anyone: the role is what refused, not the socket.
    assert_eq!(nobody(&["version"]).0, 0);
}

#[test]
fn if_exists_removes_nothing_and_succeeds() {
    let d = daemon();
    let (code, e) = status(&d, &["net", "rm", "nosuch", "--if-exists"]);
    assert_eq!(code, 0, "{e}");
    assert!(e.contains("nothing to remove"), "{e}");
    for args in [
        &["port", "rm", "lab", "42", "--if-exists"][..],
        &[
            "dhcp",
            "unreserve",
            "lab",
            "52:54:00:00:00:09",
            "--if-exists",
        ],
        &["uplink", "rm", "lab", "--if-exists"],
    ] {
        let (code, e) = status(&d, args);
        assert_eq!(code, 0, "{args:?}: {e}");
    }
    // With --json, stderr stays quiet and stdout empty.
    let out = d.cli(&["net", "rm", "nosuch", "--if-exists", "--json"]);
    assert!(out.status.success() && out.stderr.is_empty() && out.stdout.is_empty());
    // The vnet the thing belongs to must exist: that is a mistake, not a no-op.
    let (code, e) = status(&d, &["port", "rm", "nosuch", "1", "--if-exists"]);
    assert_eq!(code, 4, "{e}");
    // What exists is removed as usual.
    assert_eq!(status(&d, &["net", "rm", "lab", "--if-exists"]).0, 0);
    assert!(client(&d).networks().unwrap().is_empty());
}

#[test]
fn may_exist_adds_nothing_and_succeeds() {
    let d = daemon();
    let (code, e) = status(
        &d,
        &["net", "create", "lab", "--may-exist", "--mtu", "9000"],
    );
    assert_eq!(code, 0, "{e}");
    assert!(e.contains("already exists: left as it is"), "{e}");
    assert_eq!(
        client(&d).network("lab").unwrap().mtu,
        1500,
        "left as it is"
    );
    // --json prints what is there.
    let there: vnet_control::NetworkInfo = cli_json(&d, &["net", "create", "lab", "--may-exist"]);
    assert_eq!(there.name, "lab");

    let add = ["port", "add", "lab", "--vhost-user", "vm1", "--may-exist"];
    assert_eq!(status(&d, &add).0, 0);
    let (code, e) = status(&d, &add);
    assert_eq!(code, 0, "{e}");
    let ports = client(&d).ports("lab").unwrap().len();
    assert_eq!(ports, 3, "DHCP, router advertisements and vm1");

    let reserve = [
        "dhcp",
        "reserve",
        "lab",
        "52:54:00:00:00:01",
        "10.9.0.10",
        "--may-exist",
    ];
    assert_eq!(status(&d, &reserve).0, 0);
    assert_eq!(status(&d, &reserve).0, 0);
    let dhcp = client(&d).network("lab").unwrap().dhcp.unwrap();
    assert_eq!(dhcp.reservations.len(), 1);

    // A conflict with something else stays an error: 10.9.0.10 is reserved for another MAC.
    let (code, e) = status(
        &d,
        &[
            "dhcp",
            "reserve",
            "lab",
            "52:54:00:00:00:02",
            "10.9.0.10",
            "--may-exist",
        ],
    );
    assert_ne!(code, 0, "{e}");
}
