//! `vnetd --user`: started as root, vnetd runs as the service user with CAP_NET_ADMIN
//! and CAP_NET_RAW only, in every thread, and what works live keeps working.

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use vnet_control::client::Client;
use vnet_control::{NetworkSpec, PortKind, PortSpec};
use vnet_testbed::{bin_path, unique_name, wait_for};

const SERVICE_UID: u32 = 64970;
/// CAP_NET_ADMIN (12) and CAP_NET_RAW (13).
const CAP_EFF: &str = "0000000000003000";

/// A vnetd started with `args`, in a fresh base directory everyone may traverse (the
/// service user must reach RUN and STATE); killed on drop.
struct Vnetd {
    child: Child,
    base: tempfile::TempDir,
}

impl Vnetd {
    fn start(args: &[&str]) -> Vnetd {
        Vnetd::start_after(|_| {}, args)
    }

    /// [`Vnetd::start`], `prepare` first given the base directory.
    fn start_after(prepare: impl FnOnce(&Path), args: &[&str]) -> Vnetd {
        let base = tempfile::Builder::new()
            .prefix("vnetd-priv-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(
            base.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        prepare(base.path());
        let log = std::fs::File::create(base.path().join("vnetd.log")).unwrap();
        let child = Command::new(bin_path("vnetd"))
            .arg("--run-dir")
            .arg(base.path().join("run"))
            .arg("--state-dir")
            .arg(base.path().join("state"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start vnetd (cargo build --bins first)");
        let mut d = Vnetd { child, base };
        let socket = d.run_dir().join("control.sock");
        let ready = wait_for(Duration::from_secs(20), || {
            socket.exists() || d.child.try_wait().unwrap().is_some()
        });
        assert!(
            ready && socket.exists(),
            "vnetd did not start:\n{}",
            d.log()
        );
        d
    }

    fn run_dir(&self) -> PathBuf {
        self.base.path().join("run")
    }

    fn state_dir(&self) -> PathBuf {
        self.base.path().join("state")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.base.path().join("vnetd.log")).unwrap_or_default()
    }

    fn client(&self) -> Client {
        Client::for_run_dir(self.run_dir()).unwrap()
    }
}

impl Drop for Vnetd {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let stopped = wait_for(Duration::from_secs(5), || {
            self.child.try_wait().unwrap().is_some()
        });
        if !stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The value of `key:` in a `/proc/.../status` text, whitespace collapsed.
fn field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {key}: in\n{status}"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn assert_dropped(status: &str, what: &str) {
    let uid = SERVICE_UID.to_string();
    assert_eq!(field(status, "Uid"), [uid.as_str(); 4].join(" "), "{what}");
    assert_eq!(field(status, "CapEff"), CAP_EFF, "{what}");
    assert_eq!(field(status, "CapPrm"), CAP_EFF, "{what}");
    assert_eq!(field(status, "CapAmb"), "0000000000000000", "{what}");
    assert_eq!(field(status, "NoNewPrivs"), "1", "{what}");
}

#[test]
fn with_user_every_thread_runs_as_it_with_net_admin_and_net_raw_only() {
    vnet_testbed::skip_unless_root!();
    let d = Vnetd::start(&["--user", &SERVICE_UID.to_string()]);
    let pid = d.child.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert_dropped(&status, "the process");
    let tasks: Vec<PathBuf> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(tasks.len() > 1, "data plane and control plane threads");
    for task in &tasks {
        let status = std::fs::read_to_string(task.join("status")).unwrap();
        assert_dropped(&status, &task.display().to_string());
    }
    for dir in [d.run_dir(), d.state_dir()] {
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!(meta.uid(), SERVICE_UID, "{}", dir.display());
    }

    // Root is admin over the API; the TAP and the host adapter need CAP_NET_ADMIN.
    let net = unique_name("priv");
    let adapter = unique_name("vh");
    let spec: NetworkSpec = serde_json::from_value(serde_json::json!({
        "name": net,
        "subnet": "192.168.231.0/24",
        "host_adapter": { "name": adapter },
        "dhcp": { "enabled": true },
    }))
    .unwrap();
    let c = d.client();
    c.create_network(&spec)
        .unwrap_or_else(|e| panic!("create {net}: {e}\n{}", d.log()));
    let addr = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", &adapter])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&addr.stdout).contains("192.168.231.1/24"),
        "host adapter {adapter}: {}\n{}",
        String::from_utf8_lossy(&addr.stderr),
        d.log()
    );
    let tap = unique_name("vt");
    let port = c
        .add_port(
            &net,
            &PortSpec::Tap {
                ifname: tap.clone(),
                vlan: Default::default(),
            },
        )
        .unwrap_or_else(|e| panic!("adding TAP {tap}: {e}\n{}", d.log()));
    assert!(Path::new("/sys/class/net").join(&tap).exists());
    let ports = c.ports(&net).unwrap();
    assert!(ports
        .iter()
        .any(|p| p.id == port.id && p.kind == PortKind::Tap));

    // A stream client still connects (RUN/NET was made by the service user).
    let net_dir = d.run_dir().join(&net);
    assert_eq!(std::fs::metadata(&net_dir).unwrap().uid(), SERVICE_UID);
    let _client = UnixStream::connect(net_dir.join("stream.sock")).unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || {
            c.ports(&net)
                .unwrap()
                .iter()
                .any(|p| p.kind == PortKind::Stream)
        }),
        "no stream port:\n{}",
        d.log()
    );
    c.delete_network(&net).unwrap();
}

#[test]
fn what_an_earlier_root_vnetd_left_is_given_to_the_user() {
    vnet_testbed::skip_unless_root!();
    let d = Vnetd::start_after(
        |base| {
            for dir in ["run/lab", "state/lab"] {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(base.join(dir))
                    .unwrap();
            }
            std::fs::write(base.join("state/lab/leases.json"), "[]").unwrap();
        },
        &["--user", &SERVICE_UID.to_string()],
    );
    for path in [
        "run",
        "run/lab",
        "state",
        "state/lab",
        "state/lab/leases.json",
    ] {
        let meta = std::fs::symlink_metadata(d.base.path().join(path)).unwrap();
        assert_eq!(meta.uid(), SERVICE_UID, "{path}\n{}", d.log());
        assert_eq!(meta.gid(), 0, "{path}: the group is left alone");
    }
}

#[test]
fn user_is_refused_when_not_started_as_root() {
    vnet_testbed::skip_unless_root!();
    let base = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        base.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    // As uid 64971, via setpriv (util-linux) if present, else skip.
    let out = Command::new("setpriv")
        .args([
            "--reuid=64971",
            "--regid=64971",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(bin_path("vnetd"))
        .arg("--run-dir")
        .arg(base.path().join("run"))
        .arg("--state-dir")
        .arg(base.path().join("state"))
        .args(["--user", "64970"])
        .output();
    let Ok(out) = out else {
        vnet_testbed::skip(
            vnet_testbed::test_name!(),
            "no setpriv to run vnetd as an ordinary user",
        );
        return;
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("--user 64970 needs vnetd to be started as root (it runs as uid 64971)"),
        "{err}"
    );
}
