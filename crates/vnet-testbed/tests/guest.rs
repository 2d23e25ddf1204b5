//! The QEMU half of the test bed, without vnetd: a guest boots and runs
//! commands; two guests cabled to each other with QEMU's own socket netdevs
//! (stream and dgram) ping each other, also over an 802.1Q VLAN, and one
//! leases an address from the other over DHCP (proving the initramfs, its
//! modules and its network set-up).
//!
//! Boots are slow under TCG; run with `--nocapture` to see the boot times.

use std::time::Duration;

use vnet_testbed::{skip_unless_root, wait_for, Error, Guest, Netdev};

const T: Duration = Duration::from_secs(60);

#[test]
fn guest_boots_and_runs_commands() {
    skip_unless_root!();
    let guest = Guest::builder().boot().expect("boot");
    eprintln!(
        "guest {} booted in {:.1?} (guest uptime at ready {:.2} s)",
        guest.name(),
        guest.boot_time(),
        guest.guest_uptime_at_ready()
    );

    let (rc, out) = guest.exec("echo hi; uname -r", T).expect("exec");
    assert_eq!(rc, 0);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("hi"));
    assert!(
        lines
            .next()
            .is_some_and(|r| r.starts_with(char::is_numeric)),
        "{out}"
    );

    // Exit status, stderr, quoting and output without a final newline.
    let (rc, out) = guest
        .exec(
            "echo \"it's 'quoted' $((6 * 7))\" >&2; printf 'no newline'; exit 7",
            T,
        )
        .expect("exec");
    assert_eq!((rc, out.as_str()), (7, "it's 'quoted' 42\nno newline"));

    // The VLAN modules loaded (optional at boot, wanted by the VLAN tests).
    let modules = guest.exec_ok("cat /proc/modules", T);
    for m in ["virtio_net", "8021q"] {
        assert!(modules.contains(m), "{m} not loaded:\n{modules}");
    }

    // A command that overruns its timeout is killed, and the guest stays usable.
    let err = guest
        .exec("echo started; sleep 100", Duration::from_secs(2))
        .expect_err("must time out");
    assert!(
        matches!(&err, Error::Timeout(m) if m.contains("started")),
        "{err}"
    );
    assert_eq!(guest.exec_ok("echo still here", T), "still here\n");

    // Background processes survive the command that started them.
    guest.exec_ok("sleep 300 >/dev/null 2>&1 &", T);
    assert_eq!(
        guest.exec_ok("pidof sleep >/dev/null && echo yes", T),
        "yes\n"
    );
}

#[test]
fn two_guests_ping_over_qemu_stream_and_dgram() {
    skip_unless_root!();
    let dir = tempfile::tempdir().expect("tempdir");
    let cable = dir.path().join("cable.sock");
    let (a_dgram, b_dgram) = (dir.path().join("a.dgram"), dir.path().join("b.dgram"));

    // eth0: a stream cable (a listens, b connects); eth1: a dgram pair.
    let a = Guest::builder()
        .nic(Netdev::StreamServer {
            path: cable.clone(),
        })
        .static_ip(0, "10.99.0.1/24")
        .nic(Netdev::Dgram {
            local: a_dgram.clone(),
            remote: b_dgram.clone(),
        })
        .static_ip(1, "10.98.0.1/24");
    let a = std::thread::spawn(move || a.boot());
    assert!(
        wait_for(Duration::from_secs(60), || cable.exists()),
        "guest a's QEMU did not create {}",
        cable.display()
    );
    let b = Guest::builder()
        .nic(Netdev::Stream {
            path: cable.clone(),
        })
        .static_ip(0, "10.99.0.2/24")
        .nic(Netdev::Dgram {
            local: b_dgram,
            remote: a_dgram,
        })
        .static_ip(1, "10.98.0.2/24")
        .boot()
        .expect("boot b");
    let a = a.join().expect("boot thread").expect("boot a");
    eprintln!(
        "booted {} in {:.1?} and {} in {:.1?} (concurrently)",
        a.name(),
        a.boot_time(),
        b.name(),
        b.boot_time()
    );

    assert_eq!(
        a.exec_ok(
            "cat /sys/class/net/eth0/address /sys/class/net/eth1/address",
            T
        ),
        format!("{}\n{}\n", a.mac(0), a.mac(1))
    );
    for (from, to) in [
        (&a, "10.99.0.2"),
        (&b, "10.99.0.1"),
        (&a, "10.98.0.2"),
        (&b, "10.98.0.1"),
    ] {
        let (rc, out) = from.exec(&format!("ping -c 2 -W 2 {to}"), T).expect("ping");
        assert_eq!(rc, 0, "{} cannot ping {to}:\n{out}", from.name());
    }
    // The peer saw the MAC the builder assigned.
    let neigh = b.exec_ok("ip neigh show 10.99.0.1", T);
    assert!(neigh.contains(a.mac(0)), "{neigh}");

    // 802.1Q inside the guests (8021q module) over the dgram cable.
    for (g, ip) in [(&a, "10.97.0.1/24"), (&b, "10.97.0.2/24")] {
        g.exec_ok(
            &format!(
                "ip link add link eth1 name eth1.10 type vlan id 10 && \
                 ip addr add {ip} dev eth1.10 && ip link set eth1.10 up"
            ),
            T,
        );
    }
    a.exec_ok("ping -c 2 -W 2 10.97.0.2", T);

    // DHCP: a serves on eth0 (a background process), b leases from it.
    a.exec_ok(
        "printf '%s\\n' 'start 10.99.0.50' 'end 10.99.0.60' 'interface eth0' \
           'lease_file /tmp/leases' 'pidfile /tmp/udhcpd.pid' 'option subnet 255.255.255.0' \
           'option router 10.99.0.1' 'option dns 10.99.0.1' 'option lease 600' 'option mtu 1400' \
           >/tmp/udhcpd.conf && touch /tmp/leases && udhcpd /tmp/udhcpd.conf",
        T,
    );
    let lease = b.dhcp("eth0", "").expect("dhcp");
    let ip = lease.ip().expect("an address").to_string();
    assert!(ip.starts_with("10.99.0.") && ip != "10.99.0.2", "{lease:?}");
    assert_eq!(lease.routers(), ["10.99.0.1"]);
    assert_eq!(lease.mtu(), Some(1400));
    let addr = b.exec_ok("ip -4 -o addr show dev eth0; cat /etc/resolv.conf", T);
    assert!(
        addr.contains(&format!("{ip}/24")) && addr.contains("nameserver 10.99.0.1"),
        "{addr}"
    );
    b.exec_ok("ping -c 1 -W 2 10.99.0.1", T);
}

#[test]
fn missing_stream_socket_fails_before_booting() {
    let err = Guest::builder()
        .nic(Netdev::Stream {
            path: "/nonexistent/stream.sock".into(),
        })
        .boot()
        .expect_err("no socket to connect to");
    let msg = err.to_string();
    assert!(
        msg.contains("no listening socket at /nonexistent/stream.sock"),
        "{msg}"
    );
}

#[test]
fn qemu_failure_is_reported_with_its_stderr() {
    skip_unless_root!();
    let err = Guest::builder()
        .nic(Netdev::Raw("no-such-backend".into()))
        .boot()
        .expect_err("QEMU rejects the netdev");
    let msg = err.to_string();
    assert!(!err.is_timeout(), "{msg}");
    assert!(
        msg.contains("QEMU exited") && msg.contains("no-such-backend"),
        "{msg}"
    );
}
