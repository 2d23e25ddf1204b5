//! The product surface end to end: a real vnetd, the real `vnet` CLI and the vnet API
//! client. Vnets and ports come and go while the daemon runs, the CLI says what went
//! wrong and what to do, the daemon starts, refuses and stops cleanly, `/metrics` and
//! `vnet attach` say what they promise, and an API client is a port like any other.

use std::ffi::OsStr;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use vnet_control::client::Client;
use vnet_control::{MacAddr, MacEntry, NetworkInfo, PortInfo, PortKind};
use vnet_testbed::api::{
    cli_fails, cli_json, client, daemon_with, port, ports, tap_vm, wait_ports,
};
use vnet_testbed::frames::{arp_reply, broadcast, mac, Arp};
use vnet_testbed::{
    bin_path, skip_unless_root, unique_name, wait_for, ChildGuard, Daemon, Guest, NsVm,
};

const T: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// Vnets, live

#[test]
fn a_vnet_is_created_shown_and_removed_while_the_daemon_runs() {
    let d = daemon_with(&["lab"]);
    let pid = d.pid();
    let run = d.run_dir().to_path_buf();
    // A client of the configured vnet: it must not notice any of what follows.
    let _bystander = UnixStream::connect(run.join("lab/stream.sock")).unwrap();
    wait_ports(&d, "lab", PortKind::Stream, 1);

    let said = d.cli_ok(&["net", "create", "lab2", "--mtu", "9000"]);
    assert!(
        said.contains("created vnet lab2") && said.contains("vnet attach lab2 --qemu"),
        "{said}"
    );
    let dir = run.join("lab2");
    for sock in ["stream.sock", "dgram.sock", "api.sock"] {
        let meta = std::fs::symlink_metadata(dir.join(sock))
            .unwrap_or_else(|e| panic!("{sock} in {}: {e}\n{}", dir.display(), d.log()));
        assert!(meta.file_type().is_socket(), "{sock} is not a socket");
    }

    let table = d.cli_ok(&["net", "ls"]);
    let row = table
        .lines()
        .find(|l| l.starts_with("lab2 "))
        .unwrap_or_else(|| panic!("lab2 not listed:\n{table}"));
    assert!(row.contains("9000"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("lab ")), "{table}");
    let listed: Vec<NetworkInfo> = cli_json(&d, &["net", "ls"]);
    let names: Vec<&str> = listed.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["lab", "lab2"]);

    let shown = d.cli_ok(&["net", "show", "lab2"]);
    for line in [
        "mtu            9000 (frames up to 9014 bytes)".to_string(),
        format!("stream socket  {}", dir.join("stream.sock").display()),
        format!("dgram socket   {}", dir.join("dgram.sock").display()),
        format!("api socket     {}", dir.join("api.sock").display()),
    ] {
        assert!(shown.contains(&line), "{line:?} not in\n{shown}");
    }
    let info: NetworkInfo = cli_json(&d, &["net", "show", "lab2"]);
    assert_eq!((info.mtu, info.max_frame, info.ports), (9000, 9014, 0));
    assert_eq!(info.sockets.stream, dir.join("stream.sock"));
    assert_eq!(info.sockets.dgram, dir.join("dgram.sock"));
    assert_eq!(info.sockets.api, dir.join("api.sock"));

    // The new vnet works at once: a connection is a port.
    let mut client_of_lab2 = UnixStream::connect(&info.sockets.stream).unwrap();
    wait_ports(&d, "lab2", PortKind::Stream, 1);

    d.cli_ok(&["net", "rm", "lab2"]);
    assert!(
        !dir.exists(),
        "{} is still there: {:?}",
        dir.display(),
        std::fs::read_dir(&dir).map(|r| r.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );
    client_of_lab2.set_read_timeout(Some(T)).unwrap();
    let mut buf = [0u8; 16];
    assert!(
        matches!(client_of_lab2.read(&mut buf), Ok(0) | Err(_)),
        "removing the vnet disconnects its clients"
    );
    let listed: Vec<NetworkInfo> = cli_json(&d, &["net", "ls"]);
    assert!(listed.iter().all(|n| n.name != "lab2"), "{listed:?}");
    assert!(cli_fails(&d, &["net", "show", "lab2"]).contains("no vnet named \"lab2\""));

    assert_eq!(d.pid(), pid, "no restart");
    assert!(d.is_running(), "{}", d.log());
    assert_eq!(
        ports(&d, "lab").len(),
        1,
        "the bystander's port is untouched"
    );
}

#[test]
fn vnets_created_and_removed_at_once_by_many_clients_stay_consistent_across_threads() {
    let d = vnet_testbed::Daemon::builder()
        .config("threads = 2\n")
        .start();
    // Eight clients race to create the same twelve names: each is made exactly once,
    // the losers get 409, and the vnets spread over both threads.
    let names: Vec<String> = (0..12).map(|i| format!("race{i}")).collect();
    let created: usize = std::thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|w| {
                let (d, names) = (&d, &names);
                s.spawn(move || {
                    let c = client(d);
                    let mut made = 0;
                    for i in 0..names.len() {
                        let name = &names[(i + w) % names.len()];
                        match c.create_network(&vnet_control::NetworkSpec::named(name)) {
                            Ok(_) => made += 1,
                            Err(e) => assert_eq!(e.status().map(|s| s.as_u16()), Some(409), "{e}"),
                        }
                    }
                    made
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    assert_eq!(created, names.len());
    let c = client(&d);
    let listed = c.networks().unwrap();
    let listed_names: Vec<&str> = listed.iter().map(|n| n.name.as_str()).collect();
    let mut expected: Vec<&str> = names.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(listed_names, expected, "every vnet listed once, by name");
    for t in 0..2 {
        let on = listed.iter().filter(|n| n.thread == t).count();
        assert_eq!(on, 6, "thread {t} runs {on} of 12 vnets");
    }
    // Each vnet answers on its own thread's sockets.
    for n in &listed {
        UnixStream::connect(&n.sockets.stream).unwrap();
    }

    // Removed at once, from both ends of the list: each goes exactly once.
    let removed: usize = std::thread::scope(|s| {
        let workers: Vec<_> = [false, true]
            .into_iter()
            .map(|rev| {
                let (d, names) = (&d, &names);
                s.spawn(move || {
                    let c = client(d);
                    let order: Vec<&String> = if rev {
                        names.iter().rev().collect()
                    } else {
                        names.iter().collect()
                    };
                    order
                        .into_iter()
                        .filter(|n| c.delete_network(n).is_ok())
                        .count()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    assert_eq!(removed, names.len());
    assert!(c.networks().unwrap().is_empty());
    // A removed name is free again.
    c.create_network(&vnet_control::NetworkSpec::named("race0"))
        .unwrap();
}

#[test]
fn refused_requests_exit_1_and_say_why_and_what_to_do() {
    let d = daemon_with(&["lab"]);

    let e = cli_fails(&d, &["net", "create", "lab"]);
    assert!(
        e.contains("vnet \"lab\" already exists") && e.contains("choose another name"),
        "{e}"
    );
    for bad in ["bad/name", "name-much-too-long", ".hidden", "sp ace"] {
        let e = cli_fails(&d, &["net", "create", bad]);
        assert!(
            e.contains(&format!("invalid vnet name {bad:?}"))
                && e.contains("use 1-15 characters of A-Z a-z 0-9"),
            "{bad}: {e}"
        );
    }
    let e = cli_fails(&d, &["port", "ls", "nosuchnet"]);
    assert!(
        e.contains("no vnet named \"nosuchnet\"") && e.contains("vnet net ls"),
        "{e}"
    );
    for args in [
        &["net", "show", "nosuchnet"][..],
        &["net", "rm", "nosuchnet"],
        &["mac", "ls", "nosuchnet"],
        &["attach", "nosuchnet", "--qemu"],
    ] {
        let e = cli_fails(&d, args);
        assert!(e.contains("no vnet named \"nosuchnet\""), "{args:?}: {e}");
    }
    let e = cli_fails(&d, &["port", "rm", "lab", "42"]);
    assert!(
        e.contains("vnet \"lab\" has no port 42") && e.contains("vnet port ls lab"),
        "{e}"
    );

    // Nothing half-made is left behind by the refusals.
    let mut entries: Vec<String> = std::fs::read_dir(d.run_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // RUN/dev holds the classic device files, when FUSE is available.
        .filter(|name| name != "dev")
        .collect();
    entries.sort();
    assert_eq!(entries, ["control.sock", "lab"]);

    // No daemon at all: say so, and how to point the CLI at one.
    let empty = tempfile::tempdir().unwrap();
    let out = vnet_at(empty.path(), &["net", "ls"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(3),
        "exit status 3: not running: {e}"
    );
    assert!(
        e.contains("vnetd is not running") && e.contains("--run-dir"),
        "{e}"
    );
}

#[test]
fn a_vnet_named_like_a_runtime_file_is_refused_as_a_bad_name() {
    // `control.sock` is a valid vnet name by the rules, but RUN/control.sock is taken.
    let d = daemon_with(&["lab"]);
    let e = cli_fails(&d, &["net", "create", "control.sock"]);
    assert!(e.contains("control.sock"), "{e}");
    assert!(
        !e.contains("Internal Server Error") && !e.contains("vnetd failed"),
        "the user chose a name that cannot work; vnetd did not fail:\n{e}"
    );
    assert!(d.is_running());
    d.cli_ok(&["net", "ls"]);
}

// ---------------------------------------------------------------------------------------
// Ports, live

#[test]
fn a_tap_port_is_added_and_removed_while_the_daemon_runs() {
    skip_unless_root!();
    let d = daemon_with(&["lab"]);
    let ifname = unique_name("cpt");

    let said = d.cli_ok(&["port", "add", "lab", "--tap", &ifname]);
    assert!(
        said.contains("added port") && said.contains(&ifname),
        "{said}"
    );
    assert!(ip_link_exists(&ifname), "`vnet port add` created {ifname}");
    let listed: Vec<PortInfo> = cli_json(&d, &["port", "ls", "lab"]);
    assert_eq!(listed.len(), 1, "{listed:?}");
    let tap = &listed[0];
    assert_eq!(tap.kind, PortKind::Tap, "{tap:?}");
    assert!(tap.description.contains(&ifname), "{tap:?}");
    let table = d.cli_ok(&["port", "ls", "lab"]);
    assert!(
        table
            .lines()
            .any(|l| l.contains(" tap ") && l.contains(&ifname)),
        "{table}"
    );

    let id = tap.id.to_string();
    d.cli_ok(&["port", "rm", "lab", &id]);
    assert!(
        wait_for(T, || !ip_link_exists(&ifname)),
        "{ifname} outlived its port"
    );
    let listed: Vec<PortInfo> = cli_json(&d, &["port", "ls", "lab"]);
    assert!(listed.is_empty(), "{listed:?}");

    let e = cli_fails(&d, &["port", "rm", "lab", &id]);
    assert!(
        e.contains(&format!("has no port {id}")) && e.contains("vnet port ls lab"),
        "{e}"
    );
    let e = cli_fails(&d, &["port", "add", "lab", "--tap", "bad name"]);
    assert!(e.contains("invalid interface name"), "{e}");
}

#[test]
fn adding_a_tap_that_is_already_a_port_is_refused_as_the_users_mistake() {
    skip_unless_root!();
    let d = daemon_with(&["lab", "lab2"]);
    let ifname = unique_name("cpd");
    d.cli_ok(&["port", "add", "lab", "--tap", &ifname]);

    let e = cli_fails(&d, &["port", "add", "lab2", "--tap", &ifname]);
    assert!(e.contains(&ifname), "{e}");
    assert!(
        !e.contains("Internal Server Error") && !e.contains("vnetd failed"),
        "{ifname} is already a port of lab: a conflict, not a failure of vnetd:\n{e}"
    );
    assert_eq!(ports(&d, "lab").len(), 1, "the first port stays");
    assert!(ip_link_exists(&ifname));
}

#[test]
fn mac_ls_shows_each_namespace_vms_mac_on_its_port() {
    skip_unless_root!();
    let d = daemon_with(&["lab"]);
    let (p1, vm1) = tap_vm(&d, "lab", "02:00:00:00:4d:01", "10.77.0.1/24");
    let (p2, vm2) = tap_vm(&d, "lab", "02:00:00:00:4d:02", "10.77.0.2/24");
    assert!(vm1.ping(vm2.ip(), 3), "{}", d.log());

    let macs: Vec<MacEntry> = cli_json(&d, &["mac", "ls", "lab"]);
    for (vm, id) in [(&vm1, p1), (&vm2, p2)] {
        let mac: MacAddr = vm.mac().parse().unwrap();
        let entry = macs
            .iter()
            .find(|e| e.mac == mac)
            .unwrap_or_else(|| panic!("{mac} not in {macs:?}"));
        assert_eq!(
            (entry.port, entry.vlan, entry.fixed),
            (id, 1, false),
            "{entry:?}"
        );
    }
    let table = d.cli_ok(&["mac", "ls", "lab"]);
    for (vm, id) in [(&vm1, p1), (&vm2, p2)] {
        assert!(
            table.lines().any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.get(1) == Some(&vm.mac()) && cols.get(2) == Some(&id.to_string().as_str())
            }),
            "{} on port {id} not in\n{table}",
            vm.mac()
        );
    }
}

// ---------------------------------------------------------------------------------------
// vnet attach

#[test]
fn attach_prints_qemu_arguments_for_the_vnets_sockets() {
    let d = daemon_with(&["lab"]);
    let dir = d.net_dir("lab");

    let line = d.cli_ok(&["attach", "lab", "--qemu", "--mac", "52:54:00:12:34:56"]);
    assert!(
        line.starts_with("-netdev stream,id=vnet0,server=off,"),
        "{line}"
    );
    assert!(
        line.contains(&format!(
            "addr.type=unix,addr.path={} ",
            dir.join("stream.sock").display()
        )),
        "{line}"
    );
    assert!(
        line.trim_end()
            .ends_with("-device virtio-net-pci,netdev=vnet0,mac=52:54:00:12:34:56"),
        "{line}"
    );

    let line = d.cli_ok(&["attach", "lab", "--qemu", "--dgram", "--id", "n1"]);
    assert!(
        line.starts_with("-netdev dgram,id=n1,local.type=unix,local.path="),
        "{line}"
    );
    assert!(
        line.contains(&format!(
            ",remote.type=unix,remote.path={} ",
            dir.join("dgram.sock").display()
        )),
        "{line}"
    );
    assert!(
        line.contains("-device virtio-net-pci,netdev=n1,mac=52:54:00:"),
        "{line}"
    );

    let printed: serde_json::Value = cli_json(&d, &["attach", "lab", "--qemu", "--dgram"]);
    assert_eq!(printed["network"], "lab", "{printed}");
    assert_eq!(printed["netdev"], "dgram", "{printed}");
    let args = printed["args"].as_array().expect("args");
    assert_eq!(args.len(), 4, "{printed}");
    assert!(
        args[1]
            .as_str()
            .unwrap()
            .ends_with(&format!("remote.path={}", dir.join("dgram.sock").display())),
        "{printed}"
    );

    let e = cli_fails(
        &d,
        &["attach", "lab", "--qemu", "--mac", "01:00:5e:00:00:01"],
    );
    assert!(e.contains("not a unicast address"), "{e}");
}

#[test]
fn attach_prints_absolute_socket_paths_when_vnetd_was_given_a_relative_run_dir() {
    // `cd /srv && vnetd --run-dir run`: a client elsewhere must still find the sockets.
    let base = tempfile::tempdir().unwrap();
    std::fs::write(
        base.path().join("vnetd.toml"),
        "[[network]]\nname = \"lab\"\n",
    )
    .unwrap();
    let mut vnetd = spawn_vnetd(
        Some(base.path()),
        &[
            "--run-dir",
            "run",
            "--state-dir",
            "state",
            "--config",
            "vnetd.toml",
        ],
    );
    let run = base.path().join("run");
    wait_serving(&mut vnetd, &run);

    let out = vnet_at(&run, &["net", "show", "lab", "--json"]);
    let info: NetworkInfo = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let stream = run.join("lab/stream.sock");
    assert_eq!(
        info.sockets.stream, stream,
        "the API must report paths a client in any directory can use"
    );
    let out = vnet_at(&run, &["attach", "lab", "--qemu"]);
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        line.contains(&format!("addr.path={} ", stream.display())),
        "QEMU runs in another directory; it needs the absolute path:\n{line}"
    );
    vnetd.terminate(T);
}

#[test]
fn printed_qemu_arguments_boot_guests_that_reach_a_namespace_vm() {
    skip_unless_root!();
    let d = daemon_with(&["lab"]);
    let (_, vm) = tap_vm(&d, "lab", "02:00:00:00:4f:03", "10.79.0.3/24");

    // Exactly what a user would paste after `qemu-system-x86_64 ...`; the guest's init
    // finds its NIC by MAC (vnet.nic=) and gives it the address.
    let guest_with = |netdev: &str, mac: &str, cidr: &str| {
        let mut args = vec!["attach", "lab", "--qemu", "--mac", mac];
        if netdev == "dgram" {
            args.push("--dgram");
        }
        let printed: serde_json::Value = cli_json(&d, &args);
        let mut builder = Guest::builder()
            .name(netdev)
            .kernel_arg(&format!("vnet.nic=eth0,{mac},{cidr}"));
        for arg in printed["args"].as_array().expect("args") {
            builder = builder.qemu_arg(arg.as_str().expect("string"));
        }
        let local = printed["args"][1]
            .as_str()
            .and_then(|a| a.split("local.path=").nth(1))
            .map(|rest| PathBuf::from(rest.split(',').next().unwrap_or_default()));
        (builder, local)
    };
    let (stream, _) = guest_with("stream", "52:54:00:00:4f:01", "10.79.0.1/24");
    let (dgram, local) = guest_with("dgram", "52:54:00:00:4f:02", "10.79.0.2/24");
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| {
            stream
                .boot()
                .expect("guest on the printed stream args boots")
        });
        let b = s.spawn(|| dgram.boot().expect("guest on the printed dgram args boots"));
        (a.join().unwrap(), b.join().unwrap())
    });

    let g = Duration::from_secs(60);
    b.exec_ok("ping -c 3 -W 3 10.79.0.3", g);
    a.exec_ok("ping -c 3 -W 3 10.79.0.3", g);
    a.exec_ok("ping -c 3 -W 3 10.79.0.2", g);
    assert!(vm.ping("10.79.0.1", 3), "namespace VM → stream guest");
    assert!(vm.ping("10.79.0.2", 3), "namespace VM → dgram guest");
    let kinds: Vec<PortKind> = ports(&d, "lab").iter().map(|p| p.kind).collect();
    assert_eq!(kinds, [PortKind::Tap, PortKind::Stream, PortKind::Dgram]);
    drop((a, b));
    if let Some(local) = local {
        let _ = std::fs::remove_file(local);
    }
}

// ---------------------------------------------------------------------------------------
// Daemon lifecycle

#[test]
fn sigterm_removes_the_control_socket_and_every_vnet_socket() {
    let mut d = daemon_with(&["lab"]);
    d.cli_ok(&["net", "create", "live"]);
    let run = d.run_dir().to_path_buf();
    let mut stream = UnixStream::connect(run.join("lab/stream.sock")).unwrap();
    let _api = vnet_client::Port::open_at(run.join("live/api.sock")).unwrap();
    wait_ports(&d, "lab", PortKind::Stream, 1);
    wait_ports(&d, "live", PortKind::Api, 1);

    let status = d.stop().expect("vnetd was running");
    assert!(
        status.success(),
        "SIGTERM is a clean exit: {status}\n{}",
        d.log()
    );
    assert!(d.log().contains("SIGTERM"), "{}", d.log());
    let left = files_under(&run);
    assert!(
        left.is_empty(),
        "vnetd left behind in {}: {left:?}\n{}",
        run.display(),
        d.log()
    );
    stream.set_read_timeout(Some(T)).unwrap();
    assert!(matches!(stream.read(&mut [0u8; 16]), Ok(0) | Err(_)));
}

/// A client that never finishes its request must not keep vnetd from stopping: on
/// SIGTERM the daemon ends it and exits cleanly by itself. Held up, it would still be
/// running when the test bed's grace period ([`vnet_testbed::STOP_GRACE`]) ends and be
/// SIGKILLed, which `stop` reports as a death by signal: that, not a stopwatch, is
/// what fails here.
#[test]
fn sigterm_is_not_held_up_by_a_control_client_stalled_mid_request() {
    let mut d = daemon_with(&["lab"]);
    let mut stalled = UnixStream::connect(d.control_socket()).unwrap();
    // The headers never end.
    stalled
        .write_all(b"GET /v1/networks HTTP/1.1\r\nHost: vnetd\r\n")
        .unwrap();
    // Requests behind it are served (and the stalled one has been read by now).
    d.cli_ok(&["net", "ls"]);
    d.cli_ok(&["net", "ls"]);

    let status = d.stop().expect("vnetd was running");
    assert!(
        status.success(),
        "vnetd should exit by itself on SIGTERM despite the stalled client; it ended with \
         {status} (a signal: the test bed killed it after {:?})\n{}",
        vnet_testbed::STOP_GRACE,
        d.log()
    );
    // A killed daemon leaves its socket behind; one that shut down removed it.
    assert!(!d.control_socket().exists(), "control.sock was removed");
    drop(stalled);
}

#[test]
fn a_stale_control_socket_left_by_a_killed_vnetd_does_not_stop_a_restart() {
    let d = daemon_with(&["lab"]);
    let run = d.run_dir().to_path_buf();
    let pid = d.pid().expect("running") as i32;
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    assert!(wait_for(T, || !d.is_running()), "vnetd survived SIGKILL");
    assert!(
        d.control_socket().exists(),
        "a killed vnetd leaves its control.sock behind"
    );
    assert!(UnixStream::connect(d.control_socket()).is_err());

    let etc = tempfile::tempdir().unwrap();
    let config = etc.path().join("vnetd.toml");
    std::fs::write(&config, "[[network]]\nname = \"lab\"\n").unwrap();
    let mut again = spawn_vnetd(
        None,
        &[
            OsStr::new("--run-dir"),
            run.as_os_str(),
            OsStr::new("--state-dir"),
            d.state_dir().as_os_str(),
            OsStr::new("--config"),
            config.as_os_str(),
        ],
    );
    wait_serving(&mut again, &run);
    assert!(again.log().contains("removed stale"), "{}", again.log());
    let listed: Vec<NetworkInfo> =
        serde_json::from_slice(&vnet_at(&run, &["net", "ls", "--json"]).stdout).unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].name, "lab");
    // The vnet's stale sockets were replaced too.
    let _client = UnixStream::connect(run.join("lab/stream.sock")).unwrap();
    assert!(wait_for(T, || Client::for_run_dir(&run)
        .and_then(|c| c.ports("lab"))
        .is_ok_and(|p| p.len() == 1)));

    let status = again.terminate(T);
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        again.log()
    );
    assert!(!d.control_socket().exists());
}

#[test]
fn a_second_vnetd_on_a_served_run_dir_refuses_to_start() {
    let d = daemon_with(&["lab"]);
    let run = d.run_dir();
    let mut second = spawn_vnetd(
        None,
        &[
            OsStr::new("--run-dir"),
            run.as_os_str(),
            OsStr::new("--state-dir"),
            d.state_dir().as_os_str(),
        ],
    );
    let status = second.wait_timeout(T);
    let log = second.log();
    assert!(
        status.is_some_and(|s| !s.success()),
        "the second vnetd must exit with an error, got {status:?}:\n{log}"
    );
    assert!(
        log.contains("another vnetd is already serving")
            && log.contains(&*run.to_string_lossy())
            && log.contains("--run-dir"),
        "{log}"
    );
    // The first one is unharmed.
    assert!(d.is_running(), "{}", d.log());
    assert!(d.control_socket().exists());
    let listed: Vec<NetworkInfo> = cli_json(&d, &["net", "ls"]);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(UnixStream::connect(d.net_dir("lab").join("stream.sock")).is_ok());
}

#[test]
fn config_errors_name_the_file_the_line_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[network]]\nname = \"a\"\nmtu = \"big\"\n").unwrap();
    let (status, err) = vnetd_in(dir.path(), &[OsStr::new("--config"), bad.as_os_str()]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains(&*bad.to_string_lossy())
            && err.contains("line 3")
            && err.contains("invalid type"),
        "{err}"
    );
    assert!(
        !dir.path().join("run").exists(),
        "nothing is claimed before the configuration is known good"
    );

    let unknown = dir.path().join("unknown.toml");
    std::fs::write(&unknown, "[[network]]\nname = \"a\"\ncolour = \"red\"\n").unwrap();
    let (status, err) = vnetd_in(dir.path(), &[OsStr::new("--config"), unknown.as_os_str()]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("unknown.toml") && err.contains("unknown field `colour`"),
        "{err}"
    );

    let (status, err) = vnetd_in(
        dir.path(),
        &[
            OsStr::new("--check"),
            OsStr::new("--config"),
            bad.as_os_str(),
        ],
    );
    assert_eq!(status.code(), Some(1), "--check reports it too: {err}");

    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/vnetd.toml");
    let out = Command::new(bin_path("vnetd"))
        .args([
            OsStr::new("--check"),
            OsStr::new("--config"),
            example.as_os_str(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));
}

#[test]
fn a_missing_config_file_is_named_and_its_reason_given_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere.toml");
    let (status, err) = vnetd_in(dir.path(), &[OsStr::new("--config"), missing.as_os_str()]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains(&*missing.to_string_lossy()), "{err}");
    assert_eq!(
        err.matches("No such file or directory").count(),
        1,
        "the reason is said once:\n{err}"
    );
}

#[test]
fn without_a_config_vnetd_serves_vmnet1_and_vmnet8() {
    let d = Daemon::start(None);
    let listed: Vec<NetworkInfo> = cli_json(&d, &["net", "ls"]);
    let names: Vec<&str> = listed.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["vmnet1", "vmnet8"], "{}", d.log());
    for n in &listed {
        assert_eq!(n.mtu, 1500, "{n:?}");
        assert!(n.sockets.stream.exists(), "{n:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Metrics

#[test]
fn metrics_count_the_frames_of_each_port() {
    let d = daemon_with(&["lab"]);
    let mut qemu_like = UnixStream::connect(d.net_dir("lab").join("stream.sock")).unwrap();
    wait_ports(&d, "lab", PortKind::Stream, 1);
    let id = ports(&d, "lab")[0].id;
    let frame = broadcast(mac("02:00:00:00:6d:01"));
    for _ in 0..3 {
        qemu_like
            .write_all(&(frame.len() as u32).to_be_bytes())
            .unwrap();
        qemu_like.write_all(&frame).unwrap();
    }
    assert!(wait_for(T, || port(&d, "lab", id).counters.rx_frames == 3));

    let text = client(&d).metrics().expect("GET /metrics");
    let series = format!("{{net=\"lab\",port=\"{id}\",kind=\"stream\"}}");
    for (name, value) in [
        ("vnet_port_rx_frames_total", 3),
        ("vnet_port_rx_bytes_total", 3 * frame.len()),
        ("vnet_port_tx_frames_total", 0),
    ] {
        let line = format!("{name}{series} {value}");
        assert!(text.lines().any(|l| l == line), "{line:?} not in\n{text}");
    }
    assert!(
        text.contains("# TYPE vnet_port_rx_frames_total counter"),
        "{text}"
    );

    drop(qemu_like);
    wait_ports(&d, "lab", PortKind::Stream, 0);
    let text = client(&d).metrics().unwrap();
    assert!(
        !text.contains(&format!("port=\"{id}\"")),
        "a removed port has no series:\n{text}"
    );
}

// ---------------------------------------------------------------------------------------
// The vnet API client

const CLIENT_MAC: &str = "02:00:00:00:aa:01";
const CLIENT_IP: [u8; 4] = [10, 78, 0, 50];

#[test]
fn an_api_client_answers_arp_for_a_namespace_vm() {
    skip_unless_root!();
    let d = daemon_with(&["lab"]);
    let mut api = vnet_client::Port::open_at(d.net_dir("lab").join("api.sock")).unwrap();
    api.set_mac(CLIENT_MAC.parse().unwrap()).unwrap();
    let info = api.info().unwrap();
    assert_eq!(info.api_version, 1, "{info:?}");
    assert_eq!(info.mac.to_string(), CLIENT_MAC, "{info:?}");
    assert!(!info.promiscuous, "{info:?}");

    // `vnet port ls` shows who the client is.
    let pid = std::process::id();
    let listed: Vec<PortInfo> = cli_json(&d, &["port", "ls", "lab"]);
    let me = listed
        .iter()
        .find(|p| p.id == info.port_id)
        .unwrap_or_else(|| panic!("port {} not in {listed:?}", info.port_id));
    assert_eq!(me.kind, PortKind::Api, "{me:?}");
    assert_eq!(me.pid, Some(pid), "{me:?}");
    assert_eq!(me.mac.map(|m| m.to_string()).as_deref(), Some(CLIENT_MAC));
    assert!(me.description.contains(&format!("pid {pid}")), "{me:?}");
    let table = d.cli_ok(&["port", "ls", "lab"]);
    assert!(
        table.lines().any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.first() == Some(&info.port_id.to_string().as_str())
                && cols.get(1) == Some(&"api")
                && l.contains(&format!("pid {pid}"))
        }),
        "{table}"
    );

    let vm_mac = "02:00:00:00:aa:10";
    let (_, vm) = tap_vm(&d, "lab", vm_mac, "10.78.0.1/24");
    let pinger = vm
        .ns()
        .spawn(&["ping", "-n", "-c", "200", "-i", "0.2", "10.78.0.50"]);

    let (request, seen) = recv_until(&mut api, Duration::from_secs(15), |f| {
        Arp::parse(f).is_some_and(|a| a.op == 1 && a.tpa == CLIENT_IP)
    });
    let request = request.unwrap_or_else(|| {
        panic!(
            "no ARP request for 10.78.0.50 reached the client; it saw {}\nping: {}\n{}",
            summary(&seen),
            pinger.log(),
            d.log()
        )
    });
    let arp = Arp::parse(&request).unwrap();
    assert_eq!(request[..6], [0xff; 6], "broadcast");
    assert_eq!(request[12..14], [0x08, 0x06], "ethertype ARP");
    assert_eq!(arp.sha, mac(vm_mac));
    assert_eq!(arp.spa, [10, 78, 0, 1]);

    api.send(&arp_reply(mac(CLIENT_MAC), CLIENT_IP, arp.sha, arp.spa))
        .unwrap();
    let neigh = || {
        String::from_utf8_lossy(
            &vm.ns()
                .exec(&["ip", "neigh", "show", "10.78.0.50", "dev", vm.ifname()])
                .stdout,
        )
        .into_owned()
    };
    assert!(
        wait_for(T, || neigh().contains(&format!("lladdr {CLIENT_MAC}"))),
        "the VM did not learn 10.78.0.50 from the client's reply: {}",
        neigh()
    );
    // And now the VM's pings come to the client, addressed to it.
    let (echo, seen) = recv_until(&mut api, T, |f| {
        dst_is(f, CLIENT_MAC)
            && f.get(12..14) == Some(&[0x08, 0x00][..])
            && f.get(30..34) == Some(&CLIENT_IP[..])
    });
    assert!(
        echo.is_some(),
        "no unicast IPv4 to the client: {}",
        summary(&seen)
    );
    drop(pinger);
}

#[test]
fn an_api_client_with_a_mac_gets_others_unicast_only_when_promiscuous() {
    skip_unless_root!();
    let d = daemon_with(&["lab"]);
    let (vm_port, vm) = tap_vm(&d, "lab", "02:00:00:00:ab:10", "10.78.1.1/24");
    let mut api = vnet_client::Port::open_at(d.net_dir("lab").join("api.sock")).unwrap();
    api.set_mac(CLIENT_MAC.parse().unwrap()).unwrap();

    // Unicast to a MAC the switch has never seen: flooded, but not to a port that
    // declared another address.
    let stranger = "02:00:00:00:99:99";
    vm.ns().exec_ok(&[
        "ip",
        "neigh",
        "replace",
        "10.78.1.77",
        "lladdr",
        stranger,
        "dev",
        vm.ifname(),
    ]);
    let ping_stranger = |vm: &NsVm| {
        let before = port(&d, "lab", vm_port).counters.rx_frames;
        vm.ns().exec(&[
            "ping",
            "-n",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "1",
            "10.78.1.77",
        ]);
        assert!(
            wait_for(T, || port(&d, "lab", vm_port).counters.rx_frames
                >= before + 3),
            "the VM's frames reached the switch"
        );
    };
    ping_stranger(&vm);
    let (got, seen) = recv_until(&mut api, Duration::from_millis(1500), |f| {
        dst_is(f, stranger)
    });
    assert!(
        got.is_none(),
        "a port with a declared MAC and promiscuous off got a frame for {stranger}"
    );
    assert!(
        matches!(
            api_recv_error(&mut api, Duration::from_millis(200)),
            Some(ErrorKind::WouldBlock | ErrorKind::TimedOut)
        ),
        "recv times out; it saw {}",
        summary(&seen)
    );

    api.set_promiscuous(true).unwrap();
    assert!(api.info().unwrap().promiscuous);
    let info = api.info().unwrap();
    let shown = d.cli_ok(&["port", "show", "lab", &info.port_id.to_string()]);
    assert!(shown.contains("promiscuous   yes"), "{shown}");
    ping_stranger(&vm);
    let (got, seen) = recv_until(&mut api, T, |f| dst_is(f, stranger));
    let got = got.unwrap_or_else(|| {
        panic!(
            "a promiscuous port gets frames for {stranger}; it saw {}",
            summary(&seen)
        )
    });
    assert_eq!(got[12..14], [0x08, 0x00], "the VM's IPv4 ping");
    assert_eq!(got[6..12], mac("02:00:00:00:ab:10"));
}

// ---------------------------------------------------------------------------------------
// Helpers

/// `vnet --run-dir RUN ARGS...` for a daemon the test started by hand.
fn vnet_at(run: &Path, args: &[&str]) -> Output {
    Command::new(bin_path("vnet"))
        .arg("--run-dir")
        .arg(run)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run vnet")
}

/// `vnetd ARGS...` in the background (in `cwd`, if given), killed when dropped; as
/// root it stays root (`--user root`), whether or not this host has the user `vnet`.
fn spawn_vnetd<S: AsRef<OsStr>>(cwd: Option<&Path>, args: &[S]) -> ChildGuard {
    let mut command = Command::new(bin_path("vnetd"));
    command.args(["--user", "root"]).args(args);
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    ChildGuard::spawn(command, "vnetd").expect("start vnetd")
}

/// Waits until the vnetd answers on `run`/control.sock.
fn wait_serving(vnetd: &mut ChildGuard, run: &Path) {
    let ready = wait_for(Duration::from_secs(30), || {
        vnetd.try_wait().is_some()
            || Client::for_run_dir(run)
                .map(|c| c.with_timeout(Duration::from_secs(2)))
                .and_then(|c| c.version())
                .is_ok()
    });
    assert!(
        ready && vnetd.try_wait().is_none(),
        "vnetd does not serve {}:\n{}",
        run.display(),
        vnetd.log()
    );
}

/// Runs a vnetd that is expected to exit by itself (run and state dirs under `dir`);
/// returns how it ended and what it wrote.
fn vnetd_in(dir: &Path, args: &[&OsStr]) -> (ExitStatus, String) {
    let run = dir.join("run");
    let state = dir.join("state");
    let mut all: Vec<&OsStr> = vec![
        OsStr::new("--run-dir"),
        run.as_os_str(),
        OsStr::new("--state-dir"),
        state.as_os_str(),
    ];
    all.extend_from_slice(args);
    let mut vnetd = spawn_vnetd(None, &all);
    let status = vnetd.wait_timeout(T);
    let log = vnetd.log();
    let status = status.unwrap_or_else(|| panic!("vnetd {args:?} did not exit:\n{log}"));
    (status, log)
}

fn ip_link_exists(ifname: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", ifname])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Everything below `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(e.path());
            }
            out.push(e.path());
        }
    }
    out
}

/// Whether `frame` is addressed to `mac`.
fn dst_is(frame: &[u8], mac_text: &str) -> bool {
    frame.get(..6) == Some(&mac(mac_text)[..])
}

/// Receives frames until one satisfies `want` or `timeout` passes; returns it (if any)
/// and every frame seen before it.
fn recv_until(
    api: &mut vnet_client::Port,
    timeout: Duration,
    want: impl Fn(&[u8]) -> bool,
) -> (Option<Vec<u8>>, Vec<Vec<u8>>) {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (None, seen);
        }
        // A zero timeout would mean "wait forever".
        api.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match api.recv(&mut buf) {
            Ok(n) if want(&buf[..n]) => return (Some(buf[..n].to_vec()), seen),
            Ok(n) => seen.push(buf[..n].to_vec()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (None, seen)
            }
            // A signal to the test process (recv(2) is not restarted under a timeout).
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => panic!("recv failed: {e}"),
        }
    }
}

/// How a `recv` with `timeout` fails, or `None` if a frame arrived.
fn api_recv_error(api: &mut vnet_client::Port, timeout: Duration) -> Option<ErrorKind> {
    api.set_read_timeout(Some(timeout)).unwrap();
    loop {
        match api.recv(&mut [0u8; 2048]) {
            Ok(_) => return None,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Some(e.kind()),
        }
    }
}

/// One line per frame: destination, source, ethertype, length.
fn summary(frames: &[Vec<u8>]) -> String {
    let hex = |b: &[u8]| {
        b.iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    let mut text = format!("{} frame(s)", frames.len());
    for f in frames.iter().take(20) {
        if f.len() >= 14 {
            text.push_str(&format!(
                "\n  {} <- {} type {:02x}{:02x} len {}",
                hex(&f[..6]),
                hex(&f[6..12]),
                f[12],
                f[13],
                f.len()
            ));
        }
    }
    text
}

/// Every port, NAT flow and listener is a descriptor: vnetd takes its whole open-file
/// hard limit. Started with a soft limit of 256, it runs with the hard one.
#[test]
fn the_open_file_soft_limit_is_raised_to_the_hard_limit() {
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("vnetd-few-files");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nulimit -Sn 256\nexec {} \"$@\"\n",
            bin_path("vnetd").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = Daemon::builder().binary(&wrapper).start();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", d.pid().unwrap())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    // "Max open files  SOFT  HARD  files"
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_ne!(
        f[4], "256",
        "the hard limit must exceed the wrapper's soft one"
    );
    assert_eq!(f[3], f[4], "{line}\n{}", d.log());
}
