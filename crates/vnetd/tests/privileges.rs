//! `vnetd --user`: started as root, vnetd runs as the service user in every thread,
//! with its network capabilities permitted but effective only around a privileged
//! step, under landlock and seccomp, and what works live keeps working; without
//! `--user` it runs as `vnet` where that user exists.

use std::ffi::OsString;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use vnet_control::client::Client;
use vnet_control::{ForwardProto, ForwardSpec, NetworkSpec, PortKind, PortSpec, UplinkSpec};
use vnet_testbed::{bin_path, unique_name, wait_for};

const SERVICE_UID: u32 = 64970;
/// CAP_NET_BIND_SERVICE (10), CAP_NET_ADMIN (12) and CAP_NET_RAW (13).
const CAP_LIVE: &str = "0000000000003400";
/// CAP_NET_ADMIN alone.
const CAP_NET_ADMIN: &str = "0000000000001000";
const NO_CAPS: &str = "0000000000000000";

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
        Vnetd::start_through(prepare, |_| Vec::new(), args)
    }

    /// [`Vnetd::start_after`], vnetd run through the command `wrap` returns for the
    /// base directory (empty: none). A `vnetd.toml` that `prepare` left in the base
    /// directory is the configuration, else one isolated vnet.
    fn start_through(
        prepare: impl FnOnce(&Path),
        wrap: impl FnOnce(&Path) -> Vec<OsString>,
        args: &[&str],
    ) -> Vnetd {
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
        let mut argv = wrap(base.path());
        argv.push(bin_path("vnetd").into());
        let config = base.path().join("vnetd.toml");
        if !config.exists() {
            // Not the built-in vmnet1 and vmnet8: tests run side by side.
            let toml = format!("[[network]]\nname = \"{}\"\n", unique_name("iso"));
            std::fs::write(&config, toml).unwrap();
        }
        argv.extend(["--config".into(), config.into()]);
        let child = Command::new(&argv[0])
            .args(&argv[1..])
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

    /// `/proc/PID/status` of vnetd and of each of its threads.
    fn statuses(&self) -> Vec<(String, String)> {
        let pid = self.child.id();
        let mut all = vec![(
            "the process".to_string(),
            std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap(),
        )];
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
            let task = task.unwrap().path();
            let status = std::fs::read_to_string(task.join("status")).unwrap();
            all.push((task.display().to_string(), status));
        }
        assert!(
            all.len() > 2,
            "the process, its main thread and a data-plane thread"
        );
        all
    }

    /// Asserts that vnetd and every thread run as `uid`, with `permitted`
    /// capabilities, none effective, under the seccomp filter.
    fn assert_confined(&self, uid: u32, permitted: &str) {
        for (what, status) in self.statuses() {
            let uid = uid.to_string();
            let what = format!("{what}\n{}", self.log());
            assert_eq!(field(&status, "Uid"), [uid.as_str(); 4].join(" "), "{what}");
            assert_eq!(field(&status, "CapEff"), NO_CAPS, "{what}");
            assert_eq!(field(&status, "CapPrm"), permitted, "{what}");
            assert_eq!(field(&status, "CapBnd"), permitted, "{what}");
            assert_eq!(field(&status, "CapAmb"), NO_CAPS, "{what}");
            assert_eq!(field(&status, "NoNewPrivs"), "1", "{what}");
            assert_eq!(field(&status, "Seccomp"), "2", "{what}");
            assert_eq!(field(&status, "Seccomp_filters"), "1", "{what}");
        }
    }
}

/// Writes `toml` to `base/vnetd.toml` for `--config`.
fn config(base: &Path, toml: &str) -> PathBuf {
    let path = base.join("vnetd.toml");
    std::fs::write(&path, toml).unwrap();
    path
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

#[test]
fn with_user_no_thread_holds_a_capability_at_rest_and_live_changes_still_work() {
    vnet_testbed::skip_unless_root!();
    let d = Vnetd::start(&["--user", &SERVICE_UID.to_string()]);
    d.assert_confined(SERVICE_UID, CAP_LIVE);
    assert!(
        d.log().contains("landlock: files limited to"),
        "{}",
        d.log()
    );
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
    // The forwarding sysctl was written (CAP_NET_ADMIN, and landlock lets it).
    let forwarding =
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{adapter}/forwarding")).unwrap();
    assert_eq!(forwarding.trim(), "0");
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
    // Its IPv6 address (an AF_INET6 ioctl) and accept_ra, under the same sandbox.
    let accept_ra =
        std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{adapter}/accept_ra")).unwrap();
    assert_eq!(accept_ra.trim(), "0");
    let address6 = c
        .network(&net)
        .unwrap()
        .host_adapter
        .and_then(|h| h.address6);
    assert!(
        address6.is_some(),
        "no IPv6 on the host adapter\n{}",
        d.log()
    );
    let tap = unique_name("vt");
    let port = c
        .add_port(
            &net,
            &PortSpec::Tap {
                ifname: tap.clone(),
                vlan: Default::default(),
                policy: Default::default(),
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

    // An uplink set live (CAP_NET_RAW) and a forward below 1024 (CAP_NET_BIND_SERVICE).
    let nic = vnet_testbed::Veth::new();
    let uplink = c
        .set_uplink(
            &net,
            &UplinkSpec {
                vxlan: None,
                interface: nic.a().to_string(),
                vlan: None,
                mode: Default::default(),
                vlans: Vec::new(),
            },
        )
        .unwrap_or_else(|e| panic!("uplink {}: {e}\n{}", nic.a(), d.log()));
    assert_eq!(uplink.kind, PortKind::Uplink);
    let nat_net = unique_name("privnat");
    let nat: NetworkSpec = serde_json::from_value(serde_json::json!({
        "name": nat_net,
        "subnet": "192.168.232.0/24",
        "nat": {},
    }))
    .unwrap();
    c.create_network(&nat).unwrap();
    // The NAT's ICMP echo: ping sockets where the host allows them, else raw sockets
    // (CAP_NET_RAW, raised for them); never neither.
    let nat_log = || d.log().lines().any(|l| l.contains("ICMP echo through"));
    assert!(wait_for(Duration::from_secs(10), nat_log), "{}", d.log());
    assert!(!d.log().contains("no raw sockets"), "{}", d.log());
    let low = free_low_port();
    c.add_forward(
        &nat_net,
        &ForwardSpec {
            proto: ForwardProto::Tcp,
            host: (std::net::Ipv4Addr::LOCALHOST, low).into(),
            guest: "192.168.232.10:80".parse().unwrap(),
        },
    )
    .unwrap_or_else(|e| panic!("forward from port {low}: {e}\n{}", d.log()));
    let taken = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, low)).unwrap_err();
    assert_eq!(taken.kind(), std::io::ErrorKind::AddrInUse, "vnetd listens");

    // Each step lowered what it raised.
    d.assert_confined(SERVICE_UID, CAP_LIVE);
    c.delete_network(&nat_net).unwrap();
    c.delete_network(&net).unwrap();
}

/// A TCP port below 1024 that nothing on 127.0.0.1 listens on now.
fn free_low_port() -> u16 {
    (900..1000)
        .find(|&p| std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, p)).is_ok())
        .expect("a free port in 900..1000")
}

/// `keep_capabilities = "configured"`: a vnet with a TAP port keeps CAP_NET_ADMIN
/// alone, and another TAP still works live; a vnet with neither keeps nothing, and a
/// TAP, a host adapter, an uplink or a forward below 1024 added later is refused
/// naming the setting.
#[test]
fn configured_keeps_only_what_the_configuration_needs() {
    vnet_testbed::skip_unless_root!();
    let configured = |net: &str, extra: &str| {
        let toml = format!(
            "[access]\nkeep_capabilities = \"configured\"\n\
             [[network]]\nname = \"{net}\"\nsubnet = \"192.168.233.0/24\"\n{extra}"
        );
        Vnetd::start_after(
            move |base| {
                config(base, &toml);
            },
            &["--user", &SERVICE_UID.to_string()],
        )
    };
    let tap_port = |ifname: &str| PortSpec::Tap {
        ifname: ifname.to_string(),
        vlan: Default::default(),
        policy: Default::default(),
    };

    let net = unique_name("conf");
    let tap = unique_name("vt");
    let d = configured(&net, &format!("[[network.port]]\ntap = \"{tap}\"\n"));
    d.assert_confined(SERVICE_UID, CAP_NET_ADMIN);
    let tap2 = unique_name("vt");
    d.client()
        .add_port(&net, &tap_port(&tap2))
        .unwrap_or_else(|e| panic!("adding TAP {tap2}: {e}\n{}", d.log()));
    d.assert_confined(SERVICE_UID, CAP_NET_ADMIN);
    drop(d);

    let net = unique_name("conf");
    let d = configured(&net, "");
    d.assert_confined(SERVICE_UID, NO_CAPS);
    let c = d.client();
    let refused = |what: &str, cap: &str, e: vnet_control::client::Error| {
        let message = e.to_string();
        assert!(
            message.contains(&format!("vnetd gave up {cap} at start"))
                && message.contains("keep_capabilities = \"configured\""),
            "{what}: {message}\n{}",
            d.log()
        );
    };
    let e = c.add_port(&net, &tap_port(&unique_name("vt"))).unwrap_err();
    assert_eq!(e.status().map(|s| s.as_u16()), Some(403), "{e}");
    refused("a TAP", "CAP_NET_ADMIN", e);
    let adapter: NetworkSpec = serde_json::from_value(serde_json::json!({
        "name": unique_name("conf"),
        "subnet": "192.168.234.0/24",
        "host_adapter": { "name": unique_name("vh") },
    }))
    .unwrap();
    refused(
        "a host adapter",
        "CAP_NET_ADMIN",
        c.create_network(&adapter).unwrap_err(),
    );
    let nic = vnet_testbed::Veth::new();
    let uplink = UplinkSpec {
        vxlan: None,
        interface: nic.a().to_string(),
        vlan: None,
        mode: Default::default(),
        vlans: Vec::new(),
    };
    refused(
        "an uplink",
        "CAP_NET_RAW",
        c.set_uplink(&net, &uplink).unwrap_err(),
    );
    let nat_net = unique_name("confnat");
    let nat: NetworkSpec = serde_json::from_value(serde_json::json!({
        "name": nat_net,
        "subnet": "192.168.235.0/24",
        "nat": {},
    }))
    .unwrap();
    c.create_network(&nat).unwrap();
    let forward = ForwardSpec {
        proto: ForwardProto::Tcp,
        host: (std::net::Ipv4Addr::LOCALHOST, free_low_port()).into(),
        guest: "192.168.235.10:80".parse().unwrap(),
    };
    refused(
        "a forward below 1024",
        "CAP_NET_BIND_SERVICE",
        c.add_forward(&nat_net, &forward).unwrap_err(),
    );
    d.assert_confined(SERVICE_UID, NO_CAPS);
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

/// The uid of the `vnet` user in [`users_in_private_mount_ns`].
const VNET_UID: u32 = 64973;

/// A command prefix that runs vnetd in a private mount namespace whose `/etc/passwd`
/// and `/etc/group` are copies of the host's (kept in `base`) without any `vnet`
/// entry, plus, if `with_vnet`, a user and group `vnet` of uid and gid [`VNET_UID`]:
/// vnetd's default user without touching the host's user database.
fn users_in_private_mount_ns(base: &Path, with_vnet: bool) -> Vec<OsString> {
    let mut files = Vec::new();
    for (name, entry) in [
        (
            "passwd",
            format!("vnet:x:{VNET_UID}:{VNET_UID}:vnet:/nonexistent:/usr/sbin/nologin\n"),
        ),
        ("group", format!("vnet:x:{VNET_UID}:\n")),
    ] {
        let host = std::fs::read_to_string(Path::new("/etc").join(name)).unwrap();
        let mut copy: String = host
            .lines()
            .filter(|l| !l.starts_with("vnet:"))
            .map(|l| format!("{l}\n"))
            .collect();
        if with_vnet {
            copy.push_str(&entry);
        }
        let path = base.join(name);
        std::fs::write(&path, copy).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        files.push(path);
    }
    let mut argv: Vec<OsString> = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        "mount --bind \"$1\" /etc/passwd && mount --bind \"$2\" /etc/group && shift 2 && \
         exec \"$@\"",
        "sh",
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    argv.extend(files.into_iter().map(OsString::from));
    argv
}

#[test]
fn without_user_vnetd_runs_as_vnet_where_that_user_exists() {
    vnet_testbed::skip_unless_root!();
    let d = Vnetd::start_through(|_| {}, |base| users_in_private_mount_ns(base, true), &[]);
    d.assert_confined(VNET_UID, CAP_LIVE);
    assert!(d.log().contains("running as vnet"), "{}", d.log());
    for dir in [d.run_dir(), d.state_dir()] {
        assert_eq!(std::fs::metadata(&dir).unwrap().uid(), VNET_UID);
    }
}

/// Without a `vnet` user vnetd stays root and says how to change that; `--user root`
/// stays root quietly where `vnet` exists. Either way the seccomp filter holds.
#[test]
fn without_a_vnet_user_or_with_user_root_vnetd_stays_root() {
    vnet_testbed::skip_unless_root!();
    for (with_vnet, args, said) in [
        (false, &[][..], true),
        (true, &["--user", "root"][..], false),
    ] {
        let d = Vnetd::start_through(
            |_| {},
            |base| users_in_private_mount_ns(base, with_vnet),
            args,
        );
        let log = d.log();
        assert_eq!(
            log.contains("staying root: there is no user vnet to run as"),
            said,
            "{log}"
        );
        for (what, status) in d.statuses() {
            assert_eq!(field(&status, "Uid"), "0 0 0 0", "{what}\n{log}");
            assert_eq!(field(&status, "Seccomp"), "2", "{what}\n{log}");
        }
    }
}

/// A vnetd that is not root but holds capabilities (as systemd's `User=` with
/// `AmbientCapabilities=` and `NoNewPrivileges=` starts it; here `setpriv`) keeps them
/// permitted, none effective, and still adds a TAP live.
#[test]
fn capabilities_from_the_service_manager_are_raised_only_while_needed() {
    vnet_testbed::skip_unless_root!();
    const UID: u32 = 64974;
    let d = Vnetd::start_through(
        |base| {
            for dir in ["run", "state"] {
                std::fs::DirBuilder::new()
                    .mode(0o755)
                    .create(base.join(dir))
                    .unwrap();
                std::os::unix::fs::chown(base.join(dir), Some(UID), Some(UID)).unwrap();
            }
        },
        |_| {
            [
                "setpriv",
                "--reuid=64974",
                "--regid=64974",
                "--clear-groups",
                "--no-new-privs",
                "--inh-caps=+net_admin,+net_raw",
                "--ambient-caps=+net_admin,+net_raw",
            ]
            .into_iter()
            .map(OsString::from)
            .collect()
        },
        &[],
    );
    for (what, status) in d.statuses() {
        let what = format!("{what}\n{}", d.log());
        assert_eq!(field(&status, "Uid"), ["64974"; 4].join(" "), "{what}");
        assert_eq!(field(&status, "CapPrm"), "0000000000003000", "{what}");
        assert_eq!(field(&status, "CapEff"), NO_CAPS, "{what}");
        assert_eq!(field(&status, "Seccomp"), "2", "{what}");
    }
    let net = d.client().networks().unwrap()[0].name.clone();
    let tap = unique_name("vt");
    d.client()
        .add_port(
            &net,
            &PortSpec::Tap {
                ifname: tap.clone(),
                vlan: Default::default(),
                policy: Default::default(),
            },
        )
        .unwrap_or_else(|e| panic!("adding TAP {tap}: {e}\n{}", d.log()));
    assert!(Path::new("/sys/class/net").join(&tap).exists());
    for (what, status) in d.statuses() {
        assert_eq!(field(&status, "CapEff"), NO_CAPS, "{what}");
    }
}
