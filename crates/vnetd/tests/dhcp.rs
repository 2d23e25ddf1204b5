//! Host-only networking with the DHCP service, end to end: namespace VMs running
//! busybox `udhcpc` and ISC `dhclient`, a QEMU guest running `udhcpc`, the host adapter,
//! reservations, conflicts, DECLINE and RELEASE, a daemon restart, hostile input, and
//! proof that a host-only VM reaches nothing beyond the host.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use vnet_control::Lease;
use vnet_testbed::api::{client, tap_vm};
use vnet_testbed::{
    api, payload, skip_unless_root, unique_name, wait_for, Daemon, Guest, Netdev, Netns, NsVm, Veth,
};

const T: Duration = Duration::from_secs(60);

/// A host-only vnet `net` on `p.0/24` with its host adapter and DHCP.
fn host_only(net: &str, p: &str, extra_dhcp: &str) -> (String, String) {
    let adapter = unique_name("ha");
    let toml = format!(
        "[[network]]\nname = \"{net}\"\nsubnet = \"{p}.0/24\"\nhost_adapter = {{ name = \"{adapter}\" }}\n\
         dhcp = {{ dns = [\"{p}.1\"], domain = \"vm.test\"{extra_dhcp} }}\n"
    );
    (toml, adapter)
}

fn in_pool(ip: &str, p: &str) -> bool {
    ip.strip_prefix(&format!("{p}."))
        .and_then(|h| h.parse::<u8>().ok())
        .is_some_and(|h| (128..=253).contains(&h))
}

fn host_ping(ip: &str) -> bool {
    Command::new("ping")
        .args(["-n", "-q", "-c", "2", "-i", "0.2", "-W", "2", ip])
        .status()
        .unwrap()
        .success()
}

fn leases(d: &Daemon, net: &str) -> Vec<Lease> {
    client(d).leases(net).expect("lease list")
}

fn lease_of<'a>(leases: &'a [Lease], mac: &str) -> Option<&'a Lease> {
    leases
        .iter()
        .find(|l| l.mac.to_string() == mac && !l.state.starts_with("quarantined"))
}

/// ISC dhclient, once, with a script that only sets the address and records the options
/// (the host's resolv.conf stays untouched).
fn dhclient(vm: &NsVm, dir: &Path, hostname: &str) -> String {
    let script = dir.join("dhclient-script");
    let out = dir.join("dhclient.env");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$reason\" in BOUND|RENEW|REBIND|REBOOT)\n  \
             ip addr add \"$new_ip_address/$new_subnet_mask\" dev \"$interface\"\n  \
             env | grep '^new_' > {}\n;; esac\nexit 0\n",
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let conf = dir.join("dhclient.conf");
    std::fs::write(
        &conf,
        format!(
            "send host-name \"{hostname}\";\nrequest subnet-mask, broadcast-address, domain-name, \
             domain-name-servers, interface-mtu, host-name, dhcp-lease-time;\n"
        ),
    )
    .unwrap();
    let p = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let status = vm
        .ns()
        .command(&[
            "timeout",
            "60",
            "dhclient",
            "-1",
            "-v",
            "-cf",
            &p("dhclient.conf"),
            "-sf",
            &p("dhclient-script"),
            "-lf",
            &p("dhclient.leases"),
            "-pf",
            &p("dhclient.pid"),
            vm.ifname(),
        ])
        .output()
        .unwrap();
    std::fs::read_to_string(&out).unwrap_or_else(|_| {
        panic!(
            "dhclient got no lease ({}):\n{}",
            status.status,
            String::from_utf8_lossy(&status.stderr)
        )
    })
}

fn env_var<'a>(env: &'a str, key: &str) -> Option<&'a str> {
    env.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn udhcpc_dhclient_and_a_qemu_guest_get_leases_and_reach_the_host_adapter() {
    skip_unless_root!();
    let p = "10.81.0";
    let (toml, _adapter) = host_only("ho", p, "");
    let d = Daemon::start(Some(&toml));

    let (_, vm1) = tap_vm(&d, "ho", "02:00:00:00:51:01", "");
    let lease1 = vm1.dhcp(&["-x", "hostname:nsvm1"]).expect("udhcpc lease");
    let ip1 = lease1.ip().unwrap().to_string();
    assert!(in_pool(&ip1, p), "{ip1}");
    assert_eq!(lease1.prefix_len(), Some(24));
    assert_eq!(lease1.dns(), vec![format!("{p}.1")]);
    assert_eq!(lease1.mtu(), Some(1500));
    assert!(lease1.routers().is_empty(), "host-only: no router");
    assert_eq!(lease1.server_id(), Some(&*format!("{p}.254")));

    let (_, vm2) = tap_vm(&d, "ho", "02:00:00:00:51:02", "");
    let dir = tempfile::tempdir().unwrap();
    let env2 = dhclient(&vm2, dir.path(), "nsvm2");
    let ip2 = env_var(&env2, "new_ip_address")
        .expect("dhclient ip")
        .to_string();
    assert!(in_pool(&ip2, p), "{env2}");
    assert_eq!(
        env_var(&env2, "new_subnet_mask"),
        Some("255.255.255.0"),
        "{env2}"
    );
    assert_eq!(
        env_var(&env2, "new_domain_name_servers"),
        Some(&*format!("{p}.1")),
        "{env2}"
    );
    assert_eq!(env_var(&env2, "new_interface_mtu"), Some("1500"), "{env2}");
    assert_eq!(env_var(&env2, "new_domain_name"), Some("vm.test"), "{env2}");

    let guest = Guest::builder()
        .name("dhcp")
        .nic_with_mac(
            Netdev::Stream {
                path: d.net_dir("ho").join("stream.sock"),
            },
            "52:54:00:00:51:03",
        )
        .boot()
        .expect("guest boots");
    let glease = guest
        .dhcp("eth0", "-x hostname:guest1")
        .expect("guest lease");
    let ip3 = glease.ip().unwrap().to_string();
    assert!(in_pool(&ip3, p), "{ip3}");
    assert_eq!(glease.mtu(), Some(1500));

    let host = format!("{p}.1");
    assert!(vm1.ping(&host, 2), "udhcpc VM → host adapter");
    assert!(vm2.ping(&host, 2), "dhclient VM → host adapter");
    guest.exec_ok(&format!("ping -c 2 -W 3 {host}"), T);
    for ip in [&ip1, &ip2, &ip3] {
        assert!(host_ping(ip), "host → {ip}");
    }
    assert!(
        vm1.ping(&ip2, 2) && vm2.ping(&ip3, 2),
        "VMs reach each other"
    );

    let all = leases(&d, "ho");
    for (mac, ip, name) in [
        ("02:00:00:00:51:01", &ip1, "nsvm1"),
        ("02:00:00:00:51:02", &ip2, "nsvm2"),
        ("52:54:00:00:51:03", &ip3, "guest1"),
    ] {
        let l = lease_of(&all, mac).unwrap_or_else(|| panic!("no lease for {mac}: {all:?}"));
        assert_eq!(
            (&l.ip.to_string(), l.hostname.as_deref(), &*l.state),
            (ip, Some(name), "bound"),
            "{l:?}"
        );
    }
    let cli = d.cli_ok(&["lease", "ls", "ho"]);
    assert!(
        cli.contains(&ip1) && cli.contains("nsvm2") && cli.contains("guest1"),
        "{cli}"
    );
}

#[test]
fn reservations_conflicts_decline_and_release() {
    skip_unless_root!();
    let p = "10.82.0";
    let extra = format!(
        ", reservations = [{{ mac = \"02:00:00:00:52:10\", ip = \"{p}.10\", hostname = \"db\" }}, \
         {{ mac = \"02:00:00:00:52:20\", ip = \"{p}.20\" }}]"
    );
    let (toml, _) = host_only("ho", p, &extra);
    let d = Daemon::start(Some(&toml));

    // The reserved MAC gets its address.
    let (_, r) = tap_vm(&d, "ho", "02:00:00:00:52:10", "");
    assert_eq!(r.dhcp(&[]).unwrap().ip(), Some(&*format!("{p}.10")));

    // Someone already uses the pool's first address statically: the server's ARP probe
    // finds it and skips it.
    let (_, squatter) = tap_vm(&d, "ho", "02:00:00:00:52:99", &format!("{p}.128/24"));
    let (_, c) = tap_vm(&d, "ho", "02:00:00:00:52:30", "");
    let ip = c.dhcp(&[]).unwrap().ip().unwrap().to_string();
    assert!(
        in_pool(&ip, p) && ip != format!("{p}.128"),
        "offered {ip}, which the squatter holds"
    );
    let all = leases(&d, "ho");
    assert!(
        all.iter()
            .any(|l| l.ip.to_string() == format!("{p}.128") && l.state.contains("conflict")),
        "the conflicting address is quarantined: {all:?}"
    );
    assert!(squatter.ping(&format!("{p}.1"), 1));

    // RELEASE (a bound udhcpc -R told to stop) ends the lease at once.
    let (_, rel) = tap_vm(&d, "ho", "02:00:00:00:52:40", "");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("udhcpc.sh");
    std::fs::write(&script, vnet_testbed::initramfs::UDHCPC_SCRIPT).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = script.to_string_lossy().into_owned();
    let mut udhcpc = rel.ns().command(&[
        "busybox",
        "udhcpc",
        "-f",
        "-R",
        "-i",
        rel.ifname(),
        "-s",
        &script,
    ]);
    udhcpc
        .env("VNET_DHCP_DIR", dir.path())
        .env("VNET_DHCP_RESOLV", dir.path().join("resolv.conf"));
    let mut udhcpc = vnet_testbed::ChildGuard::spawn(udhcpc, "udhcpc -R").unwrap();
    let state =
        |d: &Daemon| lease_of(&leases(d, "ho"), "02:00:00:00:52:40").map(|l| l.state.clone());
    // Bound on the client's side too: its script has run (the server binds first).
    let env = dir.path().join(format!("udhcpc.{}.env", rel.ifname()));
    assert!(
        wait_for(T, || state(&d).as_deref() == Some("bound") && env.exists()),
        "{:?}\n{}",
        leases(&d, "ho"),
        udhcpc.log()
    );
    // udhcpc unicasts its RELEASE and deconfigures at once: with the server's MAC not
    // yet in the neighbour table, the packet can die waiting for ARP. Resolve it first,
    // as a client that has been talking to its server would have.
    let server = format!("{p}.254");
    rel.ns().exec(&["ping", "-c", "1", "-W", "1", &server]);
    udhcpc.terminate(Duration::from_secs(5));
    assert!(
        wait_for(Duration::from_secs(5), || state(&d).as_deref()
            == Some("released")),
        "{:?}\n{}",
        leases(&d, "ho"),
        udhcpc.log()
    );

    // DECLINE: a station that answers the client's ARP check (udhcpc -a) but not the
    // server's probe makes the client decline the address; the server quarantines it.
    let decliner = "02:00:00:00:52:20"
        .parse::<vnet_control::MacAddr>()
        .unwrap();
    let target: std::net::Ipv4Addr = format!("{p}.20").parse().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut holder = vnet_client::Port::open_at(d.net_dir("ho").join("api.sock")).unwrap();
    holder
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let answering = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let me = [0x02, 0, 0, 0, 0x52, 0x98];
            let mut buf = [0u8; 2048];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(n) = holder.recv(&mut buf) else {
                    continue;
                };
                let f = &buf[..n];
                let is_probe_for_target = n >= 42
                    && f[12..14] == [0x08, 0x06]
                    && f[20..22] == [0, 1]
                    && f[38..42] == target.octets();
                if is_probe_for_target && f[22..28] == decliner.0 {
                    let mut reply = Vec::with_capacity(42);
                    reply.extend_from_slice(&f[6..12]);
                    reply.extend_from_slice(&me);
                    reply.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2]);
                    reply.extend_from_slice(&me);
                    reply.extend_from_slice(&target.octets());
                    reply.extend_from_slice(&f[22..32]);
                    holder.send(&reply).unwrap();
                }
            }
        })
    };
    let (_, dec) = tap_vm(&d, "ho", "02:00:00:00:52:20", "");
    let _ = dec.dhcp(&["-a", "-t", "2"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    answering.join().unwrap();
    let all = leases(&d, "ho");
    assert!(
        all.iter()
            .any(|l| l.ip.to_string() == format!("{p}.20") && l.state.contains("declined")),
        "DECLINE quarantines the address: {all:?}\n{}",
        d.log()
    );
}

#[test]
fn leases_survive_a_daemon_restart_and_a_renewing_guest_keeps_its_address() {
    skip_unless_root!();
    let p = "10.83.0";
    let (toml, _) = host_only("ho", p, "");
    let mut d = Daemon::start(Some(&toml));
    let dgram_local = std::env::temp_dir().join(format!("{}.sock", unique_name("dg")));
    // A dgram guest keeps its NIC across a daemon restart (the socket path stays).
    let guest = Guest::builder()
        .name("renew")
        .nic_with_mac(
            Netdev::Dgram {
                local: dgram_local.clone(),
                remote: d.net_dir("ho").join("dgram.sock"),
            },
            "52:54:00:00:53:01",
        )
        .boot()
        .expect("guest boots");
    guest.exec_ok(
        "udhcpc -i eth0 -s /etc/udhcpc/default.script -b -t 5 -T 2 -p /tmp/udhcpc.pid -x hostname:renewer \
         >/tmp/udhcpc.log 2>&1; for i in $(seq 50); do [ -s /run/udhcpc.eth0.env ] && break; sleep 0.2; done; \
         cat /run/udhcpc.eth0.env",
        T,
    );
    let ip = guest
        .exec_ok(
            "ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1",
            T,
        )
        .trim()
        .to_string();
    assert!(in_pool(&ip, p), "{ip}");

    let run = d.run_dir().to_path_buf();
    let state = d.state_dir().to_path_buf();
    d.stop();
    assert!(state.join("ho/leases.json").exists(), "leases were saved");

    let etc = tempfile::tempdir().unwrap();
    std::fs::write(etc.path().join("vnetd.toml"), &toml).unwrap();
    let mut again = vnet_testbed::ChildGuard::spawn(
        {
            let mut c = Command::new(vnet_testbed::bin_path("vnetd"));
            c.arg("--run-dir")
                .arg(&run)
                .arg("--state-dir")
                .arg(&state)
                .args(["--user", "root"])
                .arg("--config")
                .arg(etc.path().join("vnetd.toml"));
            c
        },
        "vnetd (restarted)",
    )
    .unwrap();
    assert!(wait_for(T, || vnet_control::client::Client::for_run_dir(
        &run
    )
    .and_then(|c| c.leases("ho"))
    .is_ok()));
    let c = vnet_control::client::Client::for_run_dir(&run).unwrap();
    let before = c.leases("ho").unwrap();
    let lease =
        lease_of(&before, "52:54:00:00:53:01").unwrap_or_else(|| panic!("lease lost: {before:?}"));
    assert_eq!(lease.ip.to_string(), ip);

    // SIGUSR1 makes udhcpc renew now: a unicast REQUEST to the restarted server.
    guest.exec_ok(
        "rm /run/udhcpc.eth0.env; kill -USR1 $(cat /tmp/udhcpc.pid)",
        T,
    );
    guest.exec_ok("for i in $(seq 100); do [ -s /run/udhcpc.eth0.env ] && break; sleep 0.2; done; cat /run/udhcpc.eth0.env", T);
    let renewed = guest
        .exec_ok(
            "ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1",
            T,
        )
        .trim()
        .to_string();
    assert_eq!(renewed, ip, "the renewing guest keeps its address");
    let after = c.leases("ho").unwrap();
    let l = lease_of(&after, "52:54:00:00:53:01").unwrap();
    assert!(
        l.expires >= lease.expires,
        "the renewal extended the lease: {lease:?} → {l:?}"
    );
    again.terminate(Duration::from_secs(10));
    drop(guest);
    let _ = std::fs::remove_file(dgram_local);
}

#[test]
fn a_host_only_vm_reaches_the_host_and_nothing_beyond_it() {
    skip_unless_root!();
    let p = "10.84.0";
    let (toml, adapter) = host_only("ho", p, "");
    let d = Daemon::start(Some(&toml));
    let (_, vm) = tap_vm(&d, "ho", "02:00:00:00:54:01", "");
    let ip = vm.dhcp(&[]).unwrap().ip().unwrap().to_string();

    // The outside world: a namespace behind a veth from the host, routed back to the vnet.
    let world = Netns::new("world");
    let mut veth = Veth::new();
    veth.move_b(&world);
    let ok = |c: &mut Command| assert!(c.status().unwrap().success(), "{c:?}");
    ok(Command::new("ip").args(["addr", "add", "10.84.9.1/24", "dev", veth.a()]));
    ok(Command::new("ip").args(["link", "set", veth.a(), "up"]));
    world.exec_ok(&["ip", "addr", "add", "10.84.9.2/24", "dev", veth.b()]);
    world.exec_ok(&["ip", "link", "set", veth.b(), "up"]);
    world.exec_ok(&[
        "ip",
        "route",
        "add",
        &format!("{p}.0/24"),
        "via",
        "10.84.9.1",
    ]);
    assert!(host_ping("10.84.9.2"), "the host reaches the world");
    // Even a VM that routes through the host on its own gets nowhere.
    vm.ns()
        .exec_ok(&["ip", "route", "add", "default", "via", &format!("{p}.1")]);
    assert!(vm.ping(&format!("{p}.1"), 1), "the VM reaches the host");
    let forwarding = format!("/proc/sys/net/ipv4/conf/{adapter}/forwarding");
    assert_eq!(std::fs::read_to_string(&forwarding).unwrap().trim(), "0");
    // The world side forwards (per interface; the host's global switch is left alone),
    // so the adapter's own setting is all that stands in the way.
    std::fs::write(
        format!("/proc/sys/net/ipv4/conf/{}/forwarding", veth.a()),
        "1",
    )
    .unwrap();
    assert!(
        !vm.ping("10.84.9.2", 2),
        "a host-only VM reached the outside world"
    );

    // Control: the same topology with forwarding on for the adapter does route, so the
    // refusal above is the daemon's doing.
    std::fs::write(&forwarding, "1").unwrap();
    let routed = vm.ping("10.84.9.2", 2);
    std::fs::write(&forwarding, "0").unwrap();
    assert!(
        routed,
        "with forwarding on the adapter, {ip} should reach the world"
    );
}

#[test]
fn hostile_dhcp_input_is_dropped_and_counted_while_good_clients_get_leases() {
    skip_unless_root!();
    let p = "10.85.0";
    let (toml, _) = host_only("ho", p, "");
    let d = Daemon::start(Some(&toml));
    let mut api = vnet_client::Port::open_at(d.net_dir("ho").join("api.sock")).unwrap();
    let frame = |payload: &[u8]| {
        // Ethernet (broadcast) + IPv4 (0.0.0.0 → 255.255.255.255, UDP) + UDP 68 → 67.
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[0x02, 0, 0, 0, 0x55, 0x01, 0x08, 0x00]);
        let total = 20 + 8 + payload.len();
        let mut ip = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0,
            0,
            64,
            17,
            0,
            0,
            0,
            0,
            0,
            0,
            255,
            255,
            255,
            255,
        ];
        let sum = !ip.chunks(2).fold(0u32, |s, w| {
            let s = s + u32::from(u16::from_be_bytes([w[0], w[1]]));
            (s & 0xffff) + (s >> 16)
        }) as u16;
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(&ip);
        let ulen = 8 + payload.len();
        f.extend_from_slice(&[0, 68, 0, 67, (ulen >> 8) as u8, ulen as u8, 0, 0]);
        f.extend_from_slice(payload);
        f
    };
    let mut bootp = vec![0u8; 240];
    bootp[0] = 1;
    bootp[1] = 1;
    bootp[2] = 6;
    bootp[28..34].copy_from_slice(&[0x02, 0, 0, 0, 0x55, 0x01]);
    bootp[236..240].copy_from_slice(&[99, 130, 83, 99]);
    let mut truncated = bootp.clone();
    truncated.extend_from_slice(&[53, 1]);
    let mut overflow = bootp.clone();
    overflow.extend_from_slice(&[53, 1, 1, 12, 200, b'x']);
    let junk = payload::junk(300, 0x2545_f491_4f6c_dd1d);
    for payload in [&bootp[..100], &truncated[..], &overflow[..], &junk[..]] {
        for _ in 0..10 {
            api.send(&frame(payload)).unwrap();
        }
    }
    let service = || api::find_kind(&d, "ho", vnet_control::PortKind::Service).expect("dhcp port");
    assert!(
        wait_for(Duration::from_secs(5), || api::drops(
            &service(),
            "malformed"
        ) >= 40),
        "{:?}",
        service()
    );
    let (_, vm) = tap_vm(&d, "ho", "02:00:00:00:55:02", "");
    let ip = vm
        .dhcp(&[])
        .expect("a good client is still served")
        .ip()
        .unwrap()
        .to_string();
    assert!(in_pool(&ip, p));
}

#[test]
fn dhcp_is_reconfigured_live_from_the_cli() {
    skip_unless_root!();
    let p = "10.86.0";
    let (toml, _) = host_only("ho", p, "");
    let d = Daemon::start(Some(&toml));

    d.cli_ok(&[
        "dhcp",
        "set",
        "ho",
        "--range",
        &format!("{p}.50-{p}.59"),
        "--lease",
        "600",
    ]);
    let (_, a) = tap_vm(&d, "ho", "02:00:00:00:56:01", "");
    let lease = a.dhcp(&[]).expect("lease from the new pool");
    let host: u8 = lease
        .ip()
        .unwrap()
        .rsplit('.')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((50..=59).contains(&host), "{:?}", lease.ip());
    assert_eq!(lease.lease_secs(), Some(600));

    d.cli_ok(&["dhcp", "set", "ho", "--off"]);
    let (_, b) = tap_vm(&d, "ho", "02:00:00:00:56:02", "");
    assert!(
        b.dhcp(&["-t", "2"]).is_err(),
        "a disabled DHCP service must stay silent"
    );

    d.cli_ok(&["dhcp", "set", "ho", "--on"]);
    d.cli_ok(&[
        "dhcp",
        "reserve",
        "ho",
        "02:00:00:00:56:02",
        &format!("{p}.7"),
        "--hostname",
        "fixed",
    ]);
    assert_eq!(
        b.dhcp(&[]).expect("lease once on again").ip(),
        Some(&*format!("{p}.7"))
    );
    let shown = d.cli_ok(&["dhcp", "show", "ho"]);
    assert!(
        shown.contains(&format!("{p}.7")) && shown.contains("fixed"),
        "{shown}"
    );
    d.cli_ok(&["dhcp", "unreserve", "ho", "02:00:00:00:56:02"]);
    let json = d.cli_ok(&["--json", "dhcp", "show", "ho"]);
    assert!(!json.contains(&format!("{p}.7")), "{json}");
}
