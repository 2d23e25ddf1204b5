//! The runtime and state directories, end to end: vnetd refuses to start in a directory
//! another uid made first, one others may write, or a symbolic link put in its place;
//! it refuses a vnet's directory planted in `RUN`; and a link planted as the lease
//! file's temporary does not make it write over the file the link points at.
//!
//! Each case plants its trap between the test bed making the directories and vnetd
//! starting, with a wrapper script around the test bed's binary (which passes
//! `--run-dir RUN --state-dir STATE` first, so they are `$2` and `$4`).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use vnet_testbed::api::tap_vm;
use vnet_testbed::{bin_path, skip_unless_root, Daemon};

/// A uid no one has: the "other local user" who got there first.
const MALLORY: u32 = 64_999;

/// A daemon started through a wrapper that first runs the shell commands `plant`
/// (with `$2` the run directory and `$4` the state directory).
fn start_after(dir: &Path, plant: &str, config: Option<&str>) -> vnet_testbed::Result<Daemon> {
    let wrapper = dir.join("plant-then-vnetd");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nset -e\n{plant}\nexec {} \"$@\"\n",
            bin_path("vnetd").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut builder = Daemon::builder().binary(&wrapper);
    if let Some(config) = config {
        builder = builder.config(config);
    }
    builder.try_start()
}

/// Starting after `plant` fails, and the log says `expected`.
fn refused(plant: &str, config: Option<&str>, expected: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    match start_after(dir.path(), plant, config) {
        Ok(d) => panic!("vnetd started after `{plant}`:\n{}", d.log()),
        Err(e) => {
            let said = e.to_string();
            for part in expected {
                assert!(said.contains(part), "expected {part:?} in:\n{said}");
            }
        }
    }
}

#[test]
fn a_run_directory_another_uid_made_first_is_refused() {
    skip_unless_root!();
    refused(
        &format!("chown {MALLORY} \"$2\""),
        None,
        &[&format!(
            "run is owned by uid {MALLORY}, not by vnetd's uid 0: \
             remove it or choose another --run-dir"
        )],
    );
}

#[test]
fn a_state_directory_others_may_write_is_refused() {
    skip_unless_root!();
    for (mode, who) in [
        ("777", "writable by its group and everyone"),
        ("770", "writable by its group"),
    ] {
        refused(
            &format!("chmod {mode} \"$4\""),
            None,
            &[&format!("state is {who}"), "choose another --state-dir"],
        );
    }
}

#[test]
fn a_symlink_in_place_of_the_run_directory_is_refused() {
    skip_unless_root!();
    refused(
        "mv \"$2\" \"$2.elsewhere\" && ln -s \"$2.elsewhere\" \"$2\"",
        None,
        &["run is a symbolic link", "choose another --run-dir"],
    );
}

#[test]
fn a_vnet_directory_another_uid_planted_in_run_is_refused() {
    skip_unless_root!();
    refused(
        &format!("mkdir \"$2/lab\" && chown {MALLORY} \"$2/lab\""),
        Some("[[network]]\nname = \"lab\"\nsubnet = \"10.88.0.0/24\"\n"),
        &[
            "cannot create vnet \"lab\"",
            &format!("lab is owned by uid {MALLORY}"),
        ],
    );
}

#[test]
fn a_lease_temporary_linked_to_a_victim_leaves_the_victim_alone() {
    skip_unless_root!();
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let d = start_after(
        dir.path(),
        &format!(
            "mkdir -m 700 \"$4/lab\" && ln -s {} \"$4/lab/leases.json.tmp\"",
            victim.display()
        ),
        Some("[[network]]\nname = \"lab\"\nsubnet = \"10.89.0.0/24\"\ndhcp = {}\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (_, vm) = tap_vm(&d, "lab", "02:00:00:00:89:02", "");
    vm.dhcp(&[]).expect("a lease");
    let leases = d.state_dir().join("lab/leases.json");
    assert!(
        vnet_testbed::wait_for(std::time::Duration::from_secs(5), || {
            std::fs::read_to_string(&leases).is_ok_and(|l| l.contains("02:00:00:00:89:02"))
        }),
        "no lease saved in {}:\n{}",
        leases.display(),
        d.log()
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    let mode = std::fs::symlink_metadata(&leases)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o600);
}
