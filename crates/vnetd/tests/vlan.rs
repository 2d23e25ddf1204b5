//! VLANs inside a vnet, end to end: access and trunk ports changed live, QEMU guests
//! doing their own 802.1Q on trunk ports (the host kernel has no 8021q; the guests'
//! initramfs loads it), captures checked with `tshark`, malformed tags counted.

use std::path::Path;
use std::time::Duration;

use vnet_control::{PortInfo, PortKind, PortSpec, VlanMode};
use vnet_testbed::api::{client, daemon_with, drops, port, tap_vm};
use vnet_testbed::{api, skip_unless_root, unique_name, wait_for, Daemon, Guest, Netdev, NsVm};

const T: Duration = Duration::from_secs(60);

fn access(vlan: u16) -> VlanMode {
    VlanMode::Access { vlan }
}

fn trunk(allowed: &[u16]) -> VlanMode {
    VlanMode::Trunk {
        allowed: allowed.to_vec(),
        native: None,
    }
}

#[test]
fn port_vlans_change_live_from_the_cli() {
    skip_unless_root!();
    let d = daemon_with(&["lab"]);
    let (pa, a) = tap_vm(&d, "lab", "02:00:00:00:81:01", "10.81.0.1/24");
    let (pb, b) = tap_vm(&d, "lab", "02:00:00:00:81:02", "10.81.0.2/24");
    assert!(a.ping(b.ip(), 2), "same default VLAN\n{}", d.log());

    let info: PortInfo = api::cli_json(
        &d,
        &["port", "set", "lab", &pb.to_string(), "--access", "10"],
    );
    assert_eq!(info.vlan, access(10));
    assert!(!a.ping(b.ip(), 2), "VLAN 1 and VLAN 10 are apart");

    let out = d.cli_ok(&["port", "set", "lab", &pa.to_string(), "--access", "10"]);
    assert!(out.contains("access"), "{out}");
    assert!(
        wait_for(T, || a.ping(b.ip(), 1)),
        "both on VLAN 10\n{}",
        d.log()
    );
    // A trunk carrying 10 untagged as its native VLAN still reaches an access port.
    let info: PortInfo = api::cli_json(
        &d,
        &[
            "port",
            "set",
            "lab",
            &pa.to_string(),
            "--trunk",
            "10,20",
            "--native",
            "10",
        ],
    );
    assert_eq!(
        info.vlan,
        VlanMode::Trunk {
            allowed: vec![10, 20],
            native: Some(10)
        }
    );
    assert!(wait_for(T, || a.ping(b.ip(), 1)), "native VLAN 10");
    assert_eq!(port(&d, "lab", pa).vlan, info.vlan);

    let e = api::cli_fails(&d, &["port", "set", "lab", "999", "--access", "10"]);
    assert!(e.contains("no port 999"), "{e}");
    let out = d.cli(&["port", "set", "lab", &pa.to_string(), "--access", "4095"]);
    assert_eq!(out.status.code(), Some(2), "4095 is refused by the CLI");
    // The API refuses it too.
    let e = client(&d)
        .set_port_vlan("lab", pa, &access(4095))
        .unwrap_err();
    assert!(e.to_string().contains("4095"), "{e}");
}

/// An Ethernet frame from `src` to broadcast with these bytes after the addresses.
fn frame(src: [u8; 6], rest: &[u8]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src);
    f.extend_from_slice(rest);
    f.resize(f.len().max(60), 0);
    f
}

#[test]
fn malformed_and_disallowed_tags_are_dropped_and_counted() {
    skip_unless_root!();
    let d = daemon_with(&["lab"]);
    let (sink_id, _sink) = tap_vm(&d, "lab", "02:00:00:00:82:02", "10.82.0.2/24");
    let mut api = vnet_client::Port::open_at(d.net_dir("lab").join("api.sock")).unwrap();
    let src = [0x02, 0, 0, 0, 0x82, 0x01];
    let id = api.info().unwrap().port_id;

    // A truncated 802.1Q header: the TPID and one byte of the TCI, nothing more.
    let mut truncated = vec![0xff; 6];
    truncated.extend_from_slice(&src);
    truncated.extend_from_slice(&[0x81, 0x00, 0x00]);
    api.send(&truncated).unwrap();
    // VLAN 4095 is reserved.
    api.send(&frame(src, &[0x81, 0x00, 0x0f, 0xff, 0x08, 0x06]))
        .unwrap();
    // Double tags on an access port: the outer tag alone gets it dropped.
    api.send(&frame(
        src,
        &[0x81, 0x00, 0x00, 0x0a, 0x81, 0x00, 0x00, 0x14, 0x08, 0x06],
    ))
    .unwrap();
    let tx_before = port(&d, "lab", sink_id).counters.tx_frames;
    // QinQ (0x88a8) outer tags are data to an access port: forwarded as they are.
    api.send(&frame(src, &[0x88, 0xa8, 0x00, 0x0a, 0x08, 0x06]))
        .unwrap();
    assert!(
        wait_for(T, || {
            let p = port(&d, "lab", id);
            drops(&p, "bad_tag") == 2 && drops(&p, "vlan_denied") == 1 && p.counters.rx_frames >= 1
        }),
        "{:?}\n{}",
        port(&d, "lab", id),
        d.log()
    );
    assert!(wait_for(T, || port(&d, "lab", sink_id).counters.tx_frames
        > tx_before));

    // A tag outside a trunk's list.
    client(&d).set_port_vlan("lab", id, &trunk(&[10])).unwrap();
    api.send(&frame(src, &[0x81, 0x00, 0x00, 0x14, 0x08, 0x06]))
        .unwrap();
    assert!(wait_for(T, || drops(&port(&d, "lab", id), "vlan_denied") == 2));
}

/// Adds a TAP port in `mode` and makes it a namespace VM.
fn tap_vm_on(d: &Daemon, mode: VlanMode, mac: &str, cidr: &str) -> (u32, NsVm) {
    let ifname = unique_name("vt");
    let p = client(d)
        .add_port(
            "lab",
            &PortSpec::Tap {
                ifname: ifname.clone(),
                vlan: mode,
                policy: Default::default(),
            },
        )
        .unwrap_or_else(|e| panic!("adding TAP {ifname}: {e}\n{}", d.log()));
    (p.id, NsVm::attach(&ifname, mac, cidr))
}

/// Gives a guest VLAN sub-interfaces `eth0.V` with `addrs` (VLAN, CIDR).
fn vlan_interfaces(g: &Guest, addrs: &[(u16, &str)]) {
    let mut script = String::from("set -e; ip link set eth0 up; ");
    for (vlan, cidr) in addrs {
        script.push_str(&format!(
            "ip link add link eth0 name eth0.{vlan} type vlan id {vlan}; \
             ip addr add {cidr} dev eth0.{vlan}; ip link set eth0.{vlan} up; "
        ));
    }
    g.exec_ok(&script, T);
}

fn guest_pings(g: &Guest, ip: &str) -> bool {
    matches!(g.exec(&format!("ping -c 2 -W 2 {ip}"), T), Ok((0, _)))
}

fn stream_guest(d: &Daemon, name: &str, mac: &str) -> vnet_testbed::GuestBuilder {
    Guest::builder().name(name).nic_with_mac(
        Netdev::Stream {
            path: d.net_dir("lab").join("stream.sock"),
        },
        mac,
    )
}

/// VLAN ids and source MACs of the 802.1Q frames in a capture, via tshark.
fn tagged_in(capture: &Path) -> Vec<(u16, String)> {
    let out = std::process::Command::new("tshark")
        .args(["-r"])
        .arg(capture)
        .args([
            "-Y", "vlan", "-T", "fields", "-e", "vlan.id", "-e", "eth.src",
        ])
        .output()
        .expect("tshark runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (vid, src) = l.split_once('\t')?;
            Some((vid.split(',').next()?.parse().ok()?, src.to_string()))
        })
        .collect()
}

#[test]
fn trunk_guests_and_access_namespaces_reach_their_own_vlan_only() {
    skip_unless_root!();
    let d = daemon_with(&["lab"]);
    let (_, vm10) = tap_vm_on(&d, access(10), "02:00:00:00:83:10", "10.83.10.3/24");
    let (_, vm20) = tap_vm_on(&d, access(20), "02:00:00:00:83:20", "10.83.20.3/24");
    // On VLAN 20 but with a VLAN-10 address: nothing on VLAN 10 may reach it.
    let (_, stray) = tap_vm_on(&d, access(20), "02:00:00:00:83:21", "10.83.10.9/24");
    // A trunk TAP whose namespace only captures.
    let (_, spy) = tap_vm_on(&d, trunk(&[10, 20]), "02:00:00:00:83:99", "");
    let capture = std::env::temp_dir().join(format!("{}.pcap", unique_name("vlan")));
    let mut tcpdump = spy.ns().spawn(&[
        "tcpdump",
        "-i",
        spy.ifname(),
        "-n",
        "-U",
        "-w",
        &capture.to_string_lossy(),
    ]);

    let (g1, g2) = std::thread::scope(|s| {
        let a = s.spawn(|| {
            stream_guest(&d, "trunk1", "52:54:00:00:83:01")
                .boot()
                .expect("guest boots")
        });
        let b = s.spawn(|| {
            stream_guest(&d, "trunk2", "52:54:00:00:83:02")
                .boot()
                .expect("guest boots")
        });
        (a.join().unwrap(), b.join().unwrap())
    });
    for p in api::ports(&d, "lab") {
        if p.kind == PortKind::Stream {
            client(&d)
                .set_port_vlan("lab", p.id, &trunk(&[10, 20]))
                .unwrap();
        }
    }
    vlan_interfaces(&g1, &[(10, "10.83.10.1/24"), (20, "10.83.20.1/24")]);
    vlan_interfaces(&g2, &[(10, "10.83.10.2/24"), (20, "10.83.20.2/24")]);

    for ip in ["10.83.10.2", "10.83.20.2", "10.83.10.3", "10.83.20.3"] {
        assert!(guest_pings(&g1, ip), "trunk1 → {ip}\n{}", d.log());
    }
    assert!(guest_pings(&g2, "10.83.10.1"), "trunk2 → trunk1 on VLAN 10");
    assert!(vm10.ping("10.83.10.2", 2), "access 10 → trunk2's VLAN 10");
    assert!(vm20.ping("10.83.20.1", 2), "access 20 → trunk1's VLAN 20");
    // Cross-VLAN pairs do not reach each other.
    assert!(
        !guest_pings(&g1, "10.83.10.9"),
        "VLAN 10 reached a VLAN-20 port"
    );
    assert!(!vm10.ping("10.83.10.9", 2), "access 10 reached access 20");
    assert!(!stray.ping("10.83.10.1", 2), "access 20 reached VLAN 10");

    tcpdump.terminate(Duration::from_secs(5));
    let tagged = tagged_in(&capture);
    let _ = std::fs::remove_file(&capture);
    for (vid, mac) in [
        (10, "52:54:00:00:83:01"),
        (20, "52:54:00:00:83:01"),
        (10, "02:00:00:00:83:10"),
        (20, "02:00:00:00:83:21"),
    ] {
        assert!(
            tagged.iter().any(|(v, m)| *v == vid && m == mac),
            "no frame from {mac} tagged {vid} on the trunk: {tagged:?}"
        );
    }
    assert!(
        !tagged
            .iter()
            .any(|(v, m)| *v != 20 && m == "02:00:00:00:83:21"),
        "the VLAN-20 port's frames left with another tag: {tagged:?}"
    );
}
