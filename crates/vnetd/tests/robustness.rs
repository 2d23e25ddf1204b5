//! Bad input on every socket type: garbage, impossible lengths, truncated frames and
//! clients killed mid-frame. The daemon logs it, drops that port only, and the other
//! ports keep pinging.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::time::Duration;

use nix::sys::socket::{
    connect, send, socket, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr,
};
use vnet_control::PortKind;
use vnet_testbed::api::{daemon_with, drops, find_kind, still_serving, tap_vm, wait_ports};
use vnet_testbed::frames::{broadcast, mac};
use vnet_testbed::{payload, skip_unless_root, unique_name, wait_for};

#[test]
fn garbage_on_stream_sockets_drops_only_that_port() {
    skip_unless_root!();
    let d = daemon_with(&["lab"]);
    let path = d.net_dir("lab").join("stream.sock");
    let (_, a) = tap_vm(&d, "lab", "02:00:00:00:0e:0a", "10.74.0.1/24");
    let (_, b) = tap_vm(&d, "lab", "02:00:00:00:0e:0b", "10.74.0.2/24");
    still_serving(&d, &a, &b);

    // A zero length is a runt: counted, and the stream stays in sync.
    let mut s = UnixStream::connect(&path).unwrap();
    wait_ports(&d, "lab", PortKind::Stream, 1);
    s.write_all(&[0, 0, 0, 0]).unwrap();
    let frame = broadcast(mac("02:00:00:00:0e:01"));
    s.write_all(&(frame.len() as u32).to_be_bytes()).unwrap();
    s.write_all(&frame).unwrap();
    assert!(wait_for(Duration::from_secs(5), || find_kind(
        &d,
        "lab",
        PortKind::Stream
    )
    .is_some_and(
        |p| p.counters.rx_frames == 1 && drops(&p, "runt") == 1
    )));
    // 2^32-1 cannot be a QEMU frame: the port closes.
    s.write_all(&[0xff; 4]).unwrap();
    wait_ports(&d, "lab", PortKind::Stream, 0);
    assert!(
        d.log().contains("exceeds the 69632-byte limit"),
        "{}",
        d.log()
    );
    still_serving(&d, &a, &b);

    // A client that vanishes mid-frame frees its port at once.
    let mut s = UnixStream::connect(&path).unwrap();
    wait_ports(&d, "lab", PortKind::Stream, 1);
    s.write_all(&100u32.to_be_bytes()).unwrap();
    s.write_all(&[1; 10]).unwrap();
    drop(s);
    wait_ports(&d, "lab", PortKind::Stream, 0);
    assert!(d.log().contains("mid-frame"), "{}", d.log());

    // Random bytes.
    for seed in 1..=5 {
        let mut s = UnixStream::connect(&path).unwrap();
        let _ = s.write_all(&payload::junk(4096, seed));
        drop(s);
    }
    wait_ports(&d, "lab", PortKind::Stream, 0);
    still_serving(&d, &a, &b);

    // A real process streaming zero-length records, killed with SIGKILL.
    let mut blaster = std::process::Command::new("socat")
        .args([
            "-u",
            "OPEN:/dev/zero",
            &format!("UNIX-CONNECT:{}", path.display()),
        ])
        .spawn()
        .expect("socat");
    wait_ports(&d, "lab", PortKind::Stream, 1);
    assert!(wait_for(Duration::from_secs(5), || find_kind(
        &d,
        "lab",
        PortKind::Stream
    )
    .is_some_and(|p| drops(&p, "runt") > 1000)));
    still_serving(&d, &a, &b);
    blaster.kill().unwrap();
    blaster.wait().unwrap();
    wait_ports(&d, "lab", PortKind::Stream, 0);
    still_serving(&d, &a, &b);
}

#[test]
fn garbage_on_dgram_sockets_drops_only_that_port() {
    skip_unless_root!();
    let d = daemon_with(&["lab"]);
    let path = d.net_dir("lab").join("dgram.sock");
    let (_, a) = tap_vm(&d, "lab", "02:00:00:00:0f:0a", "10.75.0.1/24");
    let (_, b) = tap_vm(&d, "lab", "02:00:00:00:0f:0b", "10.75.0.2/24");

    // A sender without an address cannot be a port: its datagrams are dropped.
    let unbound = UnixDatagram::unbound().unwrap();
    unbound
        .send_to(&broadcast(mac("02:00:00:00:0e:01")), &path)
        .unwrap();

    let local = std::env::temp_dir().join(format!("{}.sock", unique_name("dg")));
    let peer = UnixDatagram::bind(&local).unwrap();
    peer.send_to(&[1, 2, 3], &path).unwrap();
    peer.send_to(&vec![0u8; 3000], &path).unwrap();
    peer.send_to(&payload::junk(200, 7), &path).unwrap();
    wait_ports(&d, "lab", PortKind::Dgram, 1);
    let counted = || {
        find_kind(&d, "lab", PortKind::Dgram)
            .is_some_and(|p| drops(&p, "runt") == 1 && drops(&p, "oversize") == 1)
    };
    assert!(
        wait_for(Duration::from_secs(5), counted),
        "{:?}",
        find_kind(&d, "lab", PortKind::Dgram)
    );
    still_serving(&d, &a, &b);

    // The client dies: the next frame toward it finds no socket and frees the port.
    drop(peer);
    std::fs::remove_file(&local).unwrap();
    a.ns().exec(&["ping", "-c", "2", "-W", "1", "10.75.0.99"]);
    wait_ports(&d, "lab", PortKind::Dgram, 0);
    still_serving(&d, &a, &b);
}

fn seqpacket(path: &std::path::Path) -> std::os::fd::OwnedFd {
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    connect(fd.as_raw_fd(), &UnixAddr::new(path).unwrap()).unwrap();
    fd
}

#[test]
fn garbage_on_api_sockets_drops_only_that_port() {
    skip_unless_root!();
    let d = daemon_with(&["lab"]);
    let path = d.net_dir("lab").join("api.sock");
    let (_, a) = tap_vm(&d, "lab", "02:00:00:00:10:0a", "10.76.0.1/24");
    let (_, b) = tap_vm(&d, "lab", "02:00:00:00:10:0b", "10.76.0.2/24");

    let fd = seqpacket(&path);
    wait_ports(&d, "lab", PortKind::Api, 1);
    for msg in [
        &[0x42u8][..],
        &[0x01, 1],
        &[0x00, 1, 2, 3],
        &payload::junk(100, 3)[..],
    ] {
        send(fd.as_raw_fd(), msg, MsgFlags::empty()).unwrap();
    }
    let mut big = vec![0u8; 70_000];
    big[0] = 0;
    send(fd.as_raw_fd(), &big, MsgFlags::empty()).unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || find_kind(
            &d,
            "lab",
            PortKind::Api
        )
        .is_some_and(|p| drops(&p, "malformed") >= 2
            && drops(&p, "runt") == 1
            && drops(&p, "oversize") == 1)),
        "{:?}",
        find_kind(&d, "lab", PortKind::Api)
    );
    still_serving(&d, &a, &b);
    drop(fd);
    wait_ports(&d, "lab", PortKind::Api, 0);
    still_serving(&d, &a, &b);
}
