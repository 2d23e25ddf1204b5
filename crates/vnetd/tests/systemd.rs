//! vnetd under systemd: the shipped units pass `systemd-analyze verify`, sysusers makes
//! the user and the groups the access model names, vnetd reports `READY=1` and
//! `STATUS=` on `NOTIFY_SOCKET`, and serves the control socket it is passed (socket
//! activation, through systemd's own `systemd-socket-activate`) in directories made the
//! way systemd makes them (`RuntimeDirectory=` 0755, `StateDirectory=` 0700).

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vnet_control::client::Client;
use vnet_control::{NetworkSpec, PortSpec};
use vnet_testbed::{bin_path, is_root, skip_unless, skip_unless_root, wait_for, Daemon};

fn packaging() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging")
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn the_units_pass_systemd_analyze_verify() {
    skip_unless!(
        have("systemd-analyze"),
        "needs systemd-analyze (package systemd)"
    );
    let dir = tempfile::tempdir().unwrap();
    // verify checks that ExecStart's binary exists: point it at the one built.
    let service = std::fs::read_to_string(packaging().join("systemd/vnetd.service")).unwrap();
    assert!(service.contains("ExecStart=/usr/bin/vnetd "), "{service}");
    let service = service.replace("/usr/bin/vnetd", &bin_path("vnetd").display().to_string());
    std::fs::write(dir.path().join("vnetd.service"), service).unwrap();
    std::fs::copy(
        packaging().join("systemd/vnetd.socket"),
        dir.path().join("vnetd.socket"),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.path().join("vnetd.service"))
        .arg(dir.path().join("vnetd.socket"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // An unknown or misspelt directive is only a warning: none is allowed.
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify ({}):\n{stderr}",
        out.status
    );
}

#[test]
fn the_packaged_configuration_is_valid() {
    let out = Command::new(bin_path("vnetd"))
        .args(["--check", "--config"])
        .arg(packaging().join("vnetd.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("2 vnet(s)"), "the built-in two: {stdout}");
}

#[test]
fn sysusers_makes_the_service_user_and_the_role_groups() {
    skip_unless!(
        have("systemd-sysusers"),
        "needs systemd-sysusers (package systemd)"
    );
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("etc")).unwrap();
    let out = Command::new("systemd-sysusers")
        .arg(format!("--root={}", root.path().display()))
        .arg(packaging().join("sysusers.d/vnet.conf"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    let group = std::fs::read_to_string(root.path().join("etc/group")).unwrap();
    let user = passwd
        .lines()
        .find(|l| l.starts_with("vnet:"))
        .unwrap_or_else(|| panic!("no user vnet:\n{passwd}"));
    assert!(user.ends_with(":/var/lib/vnet:/usr/sbin/nologin"), "{user}");
    // The access model's default groups (README "Security model").
    for name in ["vnet", "vnet-admin"] {
        assert!(
            group.lines().any(|l| l.starts_with(&format!("{name}:"))),
            "no group {name}:\n{group}"
        );
    }
}

/// Reads `NOTIFY_SOCKET` datagrams until one holds `line`; returns everything read.
fn wait_for_message(socket: &UnixDatagram, line: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.lines().any(|l| l == line) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no {line:?} within {timeout:?}; got:\n{seen}"
        );
        socket.set_read_timeout(Some(left)).unwrap();
        if let Ok(n) = socket.recv(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    seen
}

#[test]
fn vnetd_tells_systemd_it_is_ready_and_what_it_serves() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&path).unwrap();
    let mut d = Daemon::builder()
        .config("[[network]]\nname = \"a\"\n\n[[network]]\nname = \"b\"\n")
        .env("NOTIFY_SOCKET", &path)
        .start();
    let ready = wait_for_message(&notify, "READY=1", Duration::from_secs(30));
    assert!(
        ready.lines().any(|l| l == "STATUS=2 vnets, 0 ports"),
        "{ready}"
    );
    // The status follows what vnetd serves.
    d.cli_ok(&["port", "add", "a", "--vhost-user", "vm1"]);
    wait_for_message(&notify, "STATUS=2 vnets, 1 port", Duration::from_secs(30));
    d.stop();
    wait_for_message(&notify, "STOPPING=1", Duration::from_secs(10));
}

/// vnetd started the way `vnetd.socket` starts it: `systemd-socket-activate` binds
/// `RUN/control.sock` and execs vnetd (same pid) at the first connection, passing the
/// socket as fd 3 with `LISTEN_FDS=1`, `LISTEN_PID` and `LISTEN_FDNAMES=control`.
/// `RUN` and `STATE` are made first as `RuntimeDirectory=` and `StateDirectory=` make
/// them. Killed on drop.
struct Activated {
    child: Child,
    base: tempfile::TempDir,
    /// The packaged configuration's host adapters vmnet1 and vmnet8 exist once per
    /// host: one such vnetd at a time (released after the drop killed it).
    _packaged: std::sync::MutexGuard<'static, ()>,
}

/// Held by the [`Activated`] vnetd that runs now.
static PACKAGED: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Activated {
    fn start(args: &[&str]) -> Activated {
        Activated::launch(false, args)
    }

    /// With a datagram socket, as a wrong `ListenDatagram=` would pass.
    fn start_datagram() -> Activated {
        Activated::launch(true, &[])
    }

    fn launch(datagram: bool, args: &[&str]) -> Activated {
        let packaged = PACKAGED.lock().unwrap_or_else(|e| e.into_inner());
        let base = tempfile::Builder::new()
            .prefix("vnetd-sd-")
            .tempdir()
            .unwrap();
        // Everyone may traverse it, as /run and /var/lib (a --user vnetd must reach them).
        std::fs::set_permissions(base.path(), PermissionsExt::from_mode(0o755)).unwrap();
        let mut dirs = std::fs::DirBuilder::new();
        dirs.mode(0o755).create(base.path().join("run")).unwrap();
        dirs.mode(0o700).create(base.path().join("state")).unwrap();
        let socket = base.path().join("run/control.sock");
        let log = std::fs::File::create(base.path().join("vnetd.log")).unwrap();
        let mut command = Command::new("systemd-socket-activate");
        if datagram {
            command.arg("--datagram");
        }
        let child = command
            .arg("-l")
            .arg(&socket)
            .arg("--fdname=control")
            .arg(bin_path("vnetd"))
            .arg("--config")
            .arg(packaging().join("vnetd.toml"))
            .arg("--run-dir")
            .arg(base.path().join("run"))
            .arg("--state-dir")
            .arg(base.path().join("state"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("systemd-socket-activate");
        let mut a = Activated {
            child,
            base,
            _packaged: packaged,
        };
        assert!(
            wait_for(Duration::from_secs(10), || socket.exists()
                || a.child.try_wait().unwrap().is_some()),
            "the socket was not bound:\n{}",
            a.log()
        );
        a
    }

    fn run_dir(&self) -> PathBuf {
        self.base.path().join("run")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.base.path().join("vnetd.log")).unwrap_or_default()
    }

    /// SIGTERM, and how vnetd ended.
    fn stop(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let mut status = None;
        wait_for(Duration::from_secs(10), || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap_or_else(|| panic!("vnetd did not stop:\n{}", self.log()))
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first request starts vnetd and is answered by it on the socket it was passed;
/// vnetd stops without removing the socket, which belongs to the socket unit.
fn serves_the_passed_socket(args: &[&str]) {
    let mut a = Activated::start(args);
    let client = Client::for_run_dir(a.run_dir()).unwrap();
    // Nobody accepts until this connection makes systemd-socket-activate exec vnetd.
    let nets = client
        .networks()
        .unwrap_or_else(|e| panic!("{e}\n{}", a.log()));
    let names: Vec<_> = nets.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["vmnet1", "vmnet8"], "the packaged configuration");
    client.create_network(&NetworkSpec::named("lab")).unwrap();
    let port = client
        .add_port(
            "lab",
            &PortSpec::VhostUser {
                name: "vm1".into(),
                vlan: Default::default(),
                policy: Default::default(),
            },
        )
        .unwrap();
    assert_eq!(client.port("lab", port.id).unwrap().id, port.id);
    assert!(
        a.log().contains("socket activation"),
        "vnetd did not say it took the passed socket:\n{}",
        a.log()
    );
    let status = a.stop();
    assert!(status.success(), "{status}:\n{}", a.log());
    assert!(
        a.run_dir().join("control.sock").exists(),
        "the socket unit's control.sock was removed"
    );
}

#[test]
fn vnetd_serves_the_control_socket_systemd_passes() {
    skip_unless!(
        have("systemd-socket-activate"),
        "needs systemd-socket-activate (package systemd)"
    );
    // As root it stays root, whether or not this host has the user vnet.
    serves_the_passed_socket(&["--user", "root"]);
}

#[test]
fn vnetd_as_the_service_user_serves_the_control_socket_systemd_passes() {
    skip_unless_root!();
    skip_unless!(
        have("systemd-socket-activate"),
        "needs systemd-socket-activate (package systemd)"
    );
    assert!(is_root());
    // As vnetd.service runs it: root-made directories, given to the service user.
    serves_the_passed_socket(&["--user", "64971"]);
}

#[test]
fn a_passed_socket_vnetd_cannot_use_is_refused() {
    skip_unless!(
        have("systemd-socket-activate"),
        "needs systemd-socket-activate (package systemd)"
    );
    // A datagram socket where the control socket should be: vnetd says so and stops,
    // rather than serving nothing.
    let mut a = Activated::start_datagram();
    let socket = a.run_dir().join("control.sock");
    UnixDatagram::unbound()
        .unwrap()
        .send_to(b"hello", &socket)
        .unwrap();
    let mut status = None;
    wait_for(Duration::from_secs(20), || {
        status = a.child.try_wait().unwrap();
        status.is_some()
    });
    let log = a.log();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{log}");
    assert!(
        log.contains("the socket passed as fd 3 is not the control socket"),
        "{log}"
    );
}
