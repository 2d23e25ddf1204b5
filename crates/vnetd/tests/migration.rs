//! Live migration across hosts over VXLAN (issue 17, item 3). Two "hosts" (namespaces
//! on an underlay, each with its vnetd, one vnet on VXLAN between them); a QEMU guest
//! on host A's vnet migrates over QMP to a QEMU attached to host B's. Its announce
//! (the guest's gratuitous ARP that QEMU asks for, or QEMU's RARP) moves its MAC on
//! both hosts at once, and a TCP connection to a VM on host A survives the move.
//! The same for a vhost-user guest, whose back-end (vnet) logs the guest pages it
//! writes while QEMU copies the RAM; and a migration that fails half-way leaves the
//! guest running and forwarding on host A.
//!
//! Downtime and convergence are measured by `scripts/bench-migration`, not here.

use std::path::Path;
use std::time::Duration;

use vnet_control::{PortKind, PortSpec};
use vnet_testbed::api::{client, find_kind, port};
use vnet_testbed::overlay::{port_of, uplink_port, vtep_of, Host, Underlay, MTU};
use vnet_testbed::{skip_unless_root, wait_for, Daemon, Guest, Netdev, NsVm};

const T: Duration = Duration::from_secs(60);
const GUEST: &str = "52:54:00:79:00:01";
const GUEST_IP: &str = "192.168.79.1";
const NET: &str = "ovl";

/// Two hosts with a vnet between them, a namespace VM on each.
struct Setup {
    _ul: Underlay,
    a: Host,
    b: Host,
    da: Daemon,
    db: Daemon,
    /// On host A: the guest's TCP peer, and who pings it.
    near: NsVm,
    /// On host B.
    far: NsVm,
}

fn setup() -> Setup {
    let ul = Underlay::new();
    let (a, b) = (ul.host(1), ul.host(2));
    let (da, db) = (a.vnetd(NET, 79, &[&b]), b.vnetd(NET, 79, &[&a]));
    let (_, near) = a.vm(&da, NET, "52:54:00:79:00:03", "192.168.79.3/24");
    let (_, far) = b.vm(&db, NET, "52:54:00:79:00:02", "192.168.79.2/24");
    Setup {
        _ul: ul,
        a,
        b,
        da,
        db,
        near,
        far,
    }
}

/// Boots a guest on `netdev` with the overlay's MTU.
fn boot(builder: vnet_testbed::GuestBuilder, netdev: Netdev) -> Guest {
    let guest = builder
        .nic_with_mac(netdev, GUEST)
        .static_ip(0, &format!("{GUEST_IP}/24"))
        .boot()
        .expect("the guest boots");
    guest.exec_ok(&format!("ip link set eth0 mtu {MTU}"), T);
    guest
}

/// The numbers 0, 1, 2... one a line, that a counter stream carried: the complete
/// lines of `text`; panics unless they are exactly 0..n (nothing lost, repeated or
/// reordered in the stream).
fn counted(text: &str, what: &str) -> u64 {
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    for (i, line) in complete.lines().enumerate() {
        assert_eq!(
            line.trim().parse::<u64>().ok(),
            Some(i as u64),
            "{what}: line {i} is {line:?}, the stream has a gap"
        );
    }
    complete.lines().count() as u64
}

/// Boots a guest from `builder` on host A's `on_a` (a port of kind `kind`), opens a
/// TCP connection from it to the VM next to it, migrates it to a QEMU on host B's
/// `on_b` and checks the moves and the connection; returns the hosts.
fn migrate_with_a_tcp_connection(
    builder: vnet_testbed::GuestBuilder,
    kind: PortKind,
    on_a: impl Fn(&Daemon) -> Netdev,
    on_b: impl Fn(&Daemon) -> Netdev,
) -> Setup {
    let s = setup();
    let guest = boot(builder, on_a(&s.da));
    // Both hosts know where it is: A on its port, B behind A's VTEP.
    guest.exec_ok(&format!("ping -c 2 -W 3 {}", s.far.ip()), T);
    assert!(wait_for(T, || s.near.ping(GUEST_IP, 1)));
    let old_port = find_kind(&s.da, NET, kind).unwrap().id;
    assert_eq!(port_of(&s.da, NET, GUEST), Some(old_port));
    assert_eq!(port_of(&s.db, NET, GUEST), Some(uplink_port(&s.db, NET)));
    assert_eq!(vtep_of(&s.db, NET, GUEST).as_deref(), Some(s.a.addr()));

    // A TCP connection between the guest and the VM next to it on host A, each side
    // sending a counter ten times a second and writing down what it receives.
    let dir = tempfile::tempdir().unwrap();
    let near_rx = dir.path().join("rx");
    let script = dir.path().join("counter.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n(i=0; while echo $i; do i=$((i+1)); sleep 0.1; done) &\nexec cat >\"$1\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let _server = s.near.ns().spawn(&[
        "socat",
        "TCP-LISTEN:7000,reuseaddr",
        &format!("EXEC:{} {}", script.display(), near_rx.display()),
    ]);
    let listening = || {
        s.near
            .ns()
            .exec_ok(&["ss", "-Hltn", "sport = :7000"])
            .contains("7000")
    };
    assert!(wait_for(T, listening));
    guest.exec_ok(
        &format!(
            "(i=0; while echo $i; do i=$((i+1)); usleep 100000; done) | \
             nc {} 7000 >/tmp/rx 2>/tmp/nc.err &",
            s.near.ip()
        ),
        T,
    );
    let near_count = || counted(&std::fs::read_to_string(&near_rx).unwrap_or_default(), "VM");
    let guest_count = |g: &Guest| counted(&g.exec_ok("cat /tmp/rx", T), "guest");
    assert!(wait_for(T, || near_count() >= 10 && guest_count(&guest) >= 10));

    // Migrate to a QEMU on host B's vnet.
    let target = guest
        .incoming(vec![on_b(&s.db)])
        .expect("the destination QEMU waits");
    let done = guest.migrate(&target, Duration::from_secs(300)).unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    let new_port = find_kind(&s.db, NET, kind).unwrap().id;

    // Its announce moves the MAC on both hosts, while the old QEMU still holds its
    // port on host A: B learns it on the new port, A moves it to the tunnel, A's
    // tunnel sends it to B and B's tunnel forgets it lived behind A.
    let uplink_a = uplink_port(&s.da, NET);
    let moved = || {
        port_of(&s.db, NET, GUEST) == Some(new_port)
            && port_of(&s.da, NET, GUEST) == Some(uplink_a)
            && vtep_of(&s.da, NET, GUEST).as_deref() == Some(s.b.addr())
            && vtep_of(&s.db, NET, GUEST).is_none()
    };
    assert!(
        wait_for(T, moved),
        "A: {:?} {:?}\nB: {:?} {:?}",
        client(&s.da).macs(NET),
        client(&s.da).fdb(NET),
        client(&s.db).macs(NET),
        client(&s.db).fdb(NET)
    );
    assert!(port(&s.da, NET, old_port).macs.is_empty());
    drop(guest);

    // The guest runs on B with its address, and the connection carries on both ways
    // with every number in order.
    let (near_then, guest_then) = (near_count(), guest_count(&target));
    assert!(
        wait_for(T, || near_count() >= near_then + 20
            && guest_count(&target) >= guest_then + 20),
        "the stream stalled: VM got {}, guest got {}; nc: {}",
        near_count(),
        guest_count(&target),
        target.exec_ok("cat /tmp/nc.err", T)
    );
    assert!(target.exec_ok("ip -4 addr show eth0", T).contains(GUEST_IP));
    assert!(s.near.ping(GUEST_IP, 1) && s.far.ping(GUEST_IP, 1));
    s
}

#[test]
fn a_stream_guest_migrates_to_another_host_keeps_its_tcp_connection_and_both_hosts_move_its_mac() {
    skip_unless_root!();
    let stream = |d: &Daemon| Netdev::Stream {
        path: d.net_dir(NET).join("stream.sock"),
    };
    let _ = migrate_with_a_tcp_connection(
        Guest::builder().name("stream").memory_mb(128),
        PortKind::Stream,
        stream,
        stream,
    );
}

/// vhost-user: the back-end writes guest memory itself, so it logs the pages it
/// dirties in the log QEMU hands over (`VHOST_F_LOG_ALL`, `LOG_SHMFD`); without that
/// QEMU would refuse ("Migration disabled: vhost-user backend lacks
/// VHOST_USER_PROTOCOL_F_LOG_SHMFD feature").
#[test]
fn a_vhost_user_guest_migrates_to_another_host_keeps_its_tcp_connection_and_both_hosts_move_its_mac(
) {
    skip_unless_root!();
    let on = |d: &Daemon| vhost_user(&vhost_user_port(d, "vm"));
    let s = migrate_with_a_tcp_connection(
        Guest::builder()
            .name("vhost")
            .memory_mb(128)
            // QEMU 7.2 under TCG dereferences NULL in `msix_set_vector_notifiers` when
            // it starts a vhost-user NIC with MSI-X; legacy INTx avoids that path.
            .qemu_arg("-global")
            .qemu_arg("virtio-net-pci.vectors=0"),
        PortKind::VhostUser,
        on,
        on,
    );
    // Host A's back-end logged what it wrote while QEMU copied the RAM.
    assert!(
        s.da.log().contains("dirty-page logging on"),
        "{}",
        s.da.log()
    );
}

/// A migration that fails half-way (the destination dies during the RAM copy) leaves
/// the guest running where it was: QEMU says why, turns the back-end's dirty-page
/// logging off again, and the guest's vhost-user port on host A keeps forwarding.
#[test]
fn a_vhost_user_guest_whose_migration_fails_keeps_running_and_forwarding_on_its_host() {
    skip_unless_root!();
    let s = setup();
    let guest = boot(
        Guest::builder()
            .name("stays")
            .memory_mb(128)
            .qemu_arg("-global")
            .qemu_arg("virtio-net-pci.vectors=0"),
        vhost_user(&vhost_user_port(&s.da, "vm")),
    );
    assert!(wait_for(T, || s.near.ping(GUEST_IP, 1)));
    let target = guest
        .incoming(vec![vhost_user(&vhost_user_port(&s.db, "vm"))])
        .expect("the destination QEMU waits");
    // Slow enough (1 MiB/s) that the copy is still going when the destination dies.
    guest
        .qmp(
            "migrate-set-parameters",
            serde_json::json!({ "max-bandwidth": 1 << 20 }),
        )
        .unwrap();
    guest.start_migration(&target).unwrap();
    let status = || guest.qmp("query-migrate", serde_json::Value::Null).unwrap();
    assert!(
        wait_for(T, || status()["status"] == "active"),
        "{}",
        status()
    );
    assert!(wait_for(T, || s.da.log().contains("dirty-page logging on")));
    drop(target);
    assert!(
        wait_for(T, || status()["status"] == "failed"),
        "{}",
        status()
    );
    let failed = status();
    assert!(
        failed["error-desc"].as_str().is_some_and(|e| !e.is_empty()),
        "{failed}"
    );

    assert_eq!(
        guest.qmp("query-status", serde_json::Value::Null).unwrap()["status"],
        "running"
    );
    assert!(
        wait_for(T, || s.da.log().contains("dirty-page logging off")),
        "{}",
        s.da.log()
    );
    guest.exec_ok(&format!("ping -c 2 -W 3 {}", s.far.ip()), T);
    assert!(s.near.ping(GUEST_IP, 1));
    let on_a = find_kind(&s.da, NET, PortKind::VhostUser).unwrap().id;
    assert_eq!(port_of(&s.da, NET, GUEST), Some(on_a));
}

/// The vhost-user socket `name` of `net` on `d`, as a port made for it.
fn vhost_user_port(d: &Daemon, name: &str) -> std::path::PathBuf {
    client(d)
        .add_port(
            NET,
            &PortSpec::VhostUser {
                name: name.into(),
                vlan: Default::default(),
                policy: Default::default(),
            },
        )
        .unwrap_or_else(|e| panic!("adding vhost-user port {name}: {e}\n{}", d.log()));
    d.net_dir(NET)
        .join("vhost-user")
        .join(format!("{name}.sock"))
}

fn vhost_user(path: &Path) -> Netdev {
    Netdev::VhostUser {
        path: path.to_path_buf(),
    }
}
