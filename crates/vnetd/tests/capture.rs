//! `vnet capture` and `GET /v1/networks/{net}/capture`: a live pcapng stream of a
//! vnet's ports that tcpdump and tshark read while it runs, and a slow reader that
//! loses frames (counted) without slowing the vnet.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use pcap_file::pcapng::blocks::interface_statistics::InterfaceStatisticsOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use vnet_control::VlanMode;
use vnet_testbed::api::{client, daemon_with, still_serving, tap_vm};
use vnet_testbed::{bin_path, skip_unless_root, wait_for, Daemon, NsVm};

const T: Duration = Duration::from_secs(20);

/// A vnet `lab` with two namespace VMs on TAP ports that reach each other; the
/// ports' ids and the VMs.
fn two_vms(subnet: u8) -> (Daemon, (u32, NsVm), (u32, NsVm)) {
    let n = (std::process::id() % 200) as u8 + subnet;
    let d = daemon_with(&["lab"]);
    let a = tap_vm(&d, "lab", "52:54:00:c7:00:01", &format!("10.79.{n}.1/24"));
    let b = tap_vm(&d, "lab", "52:54:00:c7:00:02", &format!("10.79.{n}.2/24"));
    assert!(
        wait_for(T, || a.1.ping(b.1.ip(), 1)),
        "the VMs never reached each other:\n{}",
        d.log()
    );
    (d, a, b)
}

/// `vnet --run-dir RUN capture ARGS...` with its stdout piped.
fn vnet_capture(d: &Daemon, args: &[&str]) -> Child {
    Command::new(bin_path("vnet"))
        .arg("--run-dir")
        .arg(d.run_dir())
        .arg("capture")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("vnet capture")
}

/// Kills and reaps `children` (the test's own).
fn end(children: &mut [&mut Child]) {
    for c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Pings `to` from `vm` in the background until the returned child is killed.
fn pinging(vm: &NsVm, to: &str) -> Child {
    vm.ns()
        .command(&["ping", "-n", "-i", "0.2", to])
        .stdout(Stdio::null())
        .spawn()
        .expect("ping")
}

#[test]
fn tcpdump_reads_a_running_capture_of_two_vms_pinging() {
    skip_unless_root!();
    let (d, (_, a), (_, b)) = two_vms(0);
    let mut capture = vnet_capture(&d, &["lab"]);
    let mut tcpdump = Command::new("tcpdump")
        .args(["-nn", "-l", "-r", "-"])
        .stdin(capture.stdout.take().expect("piped"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tcpdump");
    let mut ping = pinging(&a, b.ip());
    // Lines as tcpdump prints them, while the capture still runs.
    let (tx, rx) = mpsc::channel();
    let out = tcpdump.stdout.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let request = format!("{} > {}: ICMP echo request", a.ip(), b.ip());
    let reply = format!("{} > {}: ICMP echo reply", b.ip(), a.ip());
    let mut seen = Vec::new();
    let saw_both = wait_for(T, || {
        seen.extend(rx.try_iter());
        [&request, &reply]
            .iter()
            .all(|want| seen.iter().any(|l| l.contains(want.as_str())))
    });
    let running = capture.try_wait().expect("status").is_none();
    end(&mut [&mut ping, &mut capture, &mut tcpdump]);
    assert!(
        saw_both,
        "tcpdump printed no echo request and reply:\n{}\n--- vnetd ---\n{}",
        seen.join("\n"),
        d.log()
    );
    assert!(running, "the capture ended by itself");
}

#[test]
fn tshark_sees_each_ping_inbound_on_the_senders_port_and_outbound_on_the_receivers() {
    skip_unless_root!();
    let (d, (pa, a), (pb, b)) = two_vms(1);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lab.pcapng");
    let mut ping = pinging(&a, b.ip());
    // From a file (`-w`) and, while it runs, from a pipe.
    let mut to_file = vnet_capture(&d, &["lab", "--count", "12", "-w", file.to_str().unwrap()]);
    let mut capture = vnet_capture(&d, &["lab", "--count", "12", "--snaplen", "200"]);
    let fields = [
        "-T",
        "fields",
        "-E",
        "separator=,",
        "-e",
        "frame.interface_name",
        "-e",
        "frame.packet_flags_direction",
        "-e",
        "ip.src",
        "-e",
        "icmp.type",
    ];
    let piped = Command::new("tshark")
        .args(["-r", "-"])
        .args(fields)
        .stdin(capture.stdout.take().expect("piped"))
        .output()
        .expect("tshark");
    let filed = to_file.wait().expect("vnet capture -w");
    let piped_capture = capture.wait().expect("vnet capture");
    end(&mut [&mut ping]);
    assert!(piped_capture.success(), "vnet capture failed\n{}", d.log());
    assert!(filed.success(), "vnet capture -w failed\n{}", d.log());
    let from_file = Command::new("tshark")
        .args(["-r", file.to_str().unwrap()])
        .args(fields)
        .output()
        .expect("tshark");
    for out in [piped, from_file] {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "tshark failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows: Vec<&str> = text
            .lines()
            .filter(|l| l.ends_with(",8") || l.ends_with(",0"))
            .collect();
        assert!(rows.len() >= 4, "too few ICMP frames:\n{text}");
        for row in &rows {
            let f: Vec<&str> = row.split(',').collect();
            let (iface, direction, src, icmp) = (f[0], f[1], f[2], f[3]);
            // An echo request (8) comes from a, a reply (0) from b.
            let sender = if icmp == "8" { a.ip() } else { b.ip() };
            assert_eq!(src, sender, "{row}");
            let senders_port = if sender == a.ip() { pa } else { pb };
            let want = if iface == format!("port{senders_port}") {
                "0x00000001" // inbound: received from the sender
            } else {
                assert!(
                    iface == format!("port{pa}") || iface == format!("port{pb}"),
                    "{row}"
                );
                "0x00000002" // outbound: sent to the receiver
            };
            assert_eq!(direction, want, "{row} (ports: a {pa}, b {pb})\n{text}");
        }
        let both_ways = ["0x00000001", "0x00000002"]
            .iter()
            .all(|d| rows.iter().any(|r| r.split(',').nth(1) == Some(*d)));
        assert!(both_ways, "one direction only:\n{text}");
    }
}

#[test]
fn each_port_shows_the_vlan_tag_as_it_is_on_that_port() {
    skip_unless_root!();
    let n = (std::process::id() % 200) as u8 + 3;
    let d = daemon_with(&["lab"]);
    // a on an access port of VLAN 10 (untagged there); b's port a trunk of VLAN 10, so
    // a's ARP requests for anyone reach it tagged.
    let (pa, a) = tap_vm(&d, "lab", "52:54:00:c7:00:01", &format!("10.79.{n}.1/24"));
    let (pb, _b) = tap_vm(&d, "lab", "52:54:00:c7:00:02", "");
    let c = client(&d);
    c.set_port_vlan("lab", pa, &VlanMode::Access { vlan: 10 })
        .unwrap();
    let trunk = VlanMode::Trunk {
        allowed: vec![10],
        native: None,
    };
    c.set_port_vlan("lab", pb, &trunk).unwrap();
    let mut ping = pinging(&a, &format!("10.79.{n}.9"));
    let mut capture = vnet_capture(&d, &["lab", "--count", "4"]);
    let out = Command::new("tshark")
        .args(["-r", "-", "-T", "fields", "-E", "separator=,"])
        .args([
            "-e",
            "frame.interface_name",
            "-e",
            "vlan.id",
            "-e",
            "arp.opcode",
        ])
        .stdin(capture.stdout.take().expect("piped"))
        .output()
        .expect("tshark");
    let status = capture.wait().expect("vnet capture");
    end(&mut [&mut ping]);
    assert!(status.success(), "vnet capture failed\n{}", d.log());
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 4, "{text}");
    for f in &rows {
        assert_eq!(f.get(2), Some(&"1"), "an ARP request: {f:?}\n{text}");
        let want = if f[0] == format!("port{pa}") {
            ""
        } else {
            assert_eq!(f[0], format!("port{pb}"), "{text}");
            "10"
        };
        assert_eq!(f[1], want, "{f:?} (a's port {pa}, b's {pb})\n{text}");
    }
    assert!(rows.iter().any(|f| f[1] == "10") && rows.iter().any(|f| f[1].is_empty()));
}

#[test]
fn a_reader_that_never_reads_loses_frames_counted_while_the_vms_keep_pinging() {
    skip_unless_root!();
    let (d, (_, a), (_, b)) = two_vms(2);
    // HTTP/1.0: the body comes unchunked, as plain pcapng until the connection closes.
    let mut raw = UnixStream::connect(d.control_socket()).expect("control socket");
    raw.write_all(b"GET /v1/networks/lab/capture?snaplen=64 HTTP/1.0\r\nHost: vnetd\r\n\r\n")
        .unwrap();
    raw.set_read_timeout(Some(T)).unwrap();
    let mut head = [0u8; 12];
    raw.read_exact(&mut head).expect("an answer");
    assert!(
        head.starts_with(b"HTTP/1.0 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // Far more frames than the capture buffers while nobody reads.
    let flood = a
        .ns()
        .exec(&["ping", "-n", "-q", "-f", "-c", "3000", "-W", "1", b.ip()]);
    assert!(
        flood.status.success(),
        "the flood ping got no answers:\n{}\n{}",
        String::from_utf8_lossy(&flood.stdout),
        d.log()
    );
    still_serving(&d, &a, &b);
    // Now read: the statistics report the drops (once a second while they grow).
    let mut reader = BufReader::new(raw);
    let mut line = String::new();
    while reader.read_line(&mut line).expect("headers") > 2 {
        line.clear();
    }
    let mut pcap = PcapNgReader::new(reader).expect("a section header");
    let mut packets = 0u64;
    let dropped = loop {
        let block = pcap
            .next_block()
            .expect("the stream goes on")
            .expect("a well-formed block");
        match block {
            Block::EnhancedPacket(_) => packets += 1,
            Block::InterfaceStatistics(isb) => {
                let drops = isb.options.iter().find_map(|o| match o {
                    InterfaceStatisticsOption::IsbIfDrop(n) => Some(*n),
                    _ => None,
                });
                if let Some(n) = drops.filter(|&n| n > 0) {
                    break n;
                }
            }
            _ => {}
        }
    };
    assert!(packets > 0, "no frames before the drops were reported");
    assert!(dropped > 0);
}

#[test]
fn vnetd_stops_while_a_capture_runs_and_the_capture_says_it_broke_off() {
    skip_unless_root!();
    let mut d = daemon_with(&["lab"]);
    let mut capture = Command::new(bin_path("vnet"))
        .arg("--run-dir")
        .arg(d.run_dir())
        .args(["capture", "lab"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vnet capture");
    // The section header came: the capture runs.
    let mut head = [0u8; 4];
    capture
        .stdout
        .as_mut()
        .expect("piped")
        .read_exact(&mut head)
        .expect("a section header");
    assert_eq!(head, [0x0a, 0x0d, 0x0d, 0x0a]);
    let stopped = d.stop().expect("vnetd was running");
    let out = capture.wait_with_output().expect("vnet capture ends");
    assert!(stopped.success(), "vnetd: {stopped}\n{}", d.log());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("broke off") && stderr.contains("vnetd stopped"),
        "vnet capture: {}: {stderr}",
        out.status
    );
}

#[test]
fn metrics_count_the_running_captures_and_the_frames_they_took() {
    skip_unless_root!();
    let (d, (_, a), (_, b)) = two_vms(3);
    let metric = |name: &str| -> u64 {
        let series = format!("{name}{{net=\"lab\"}} ");
        let text = client(&d).metrics().expect("metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .unwrap_or_else(|| panic!("no {series}in\n{text}"))
            .parse()
            .expect("a number")
    };
    assert_eq!(metric("vnet_captures"), 0);
    let before = metric("vnet_capture_frames_total");
    let mut capture = vnet_capture(&d, &["lab"]);
    assert!(
        wait_for(T, || metric("vnet_captures") == 1),
        "the capture does not show\n{}",
        d.log()
    );
    assert!(a.ping(b.ip(), 2));
    // Each ping crosses two ports both ways: 8 frames at least.
    assert!(
        wait_for(T, || metric("vnet_capture_frames_total") >= before + 8),
        "{}",
        metric("vnet_capture_frames_total")
    );
    assert_eq!(metric("vnet_capture_drops_total"), 0);
    end(&mut [&mut capture]);
    assert!(
        wait_for(T, || metric("vnet_captures") == 0),
        "the ended capture still counts\n{}",
        d.log()
    );
}
