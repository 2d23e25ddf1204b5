//! The remaining `[limits]`: classic-device opens, replies queued for a vnet API client
//! that does not read, MAC tables, NAT flows and buffers, and the descriptors client
//! ports may not take. Each refusal is counted in `vnet_limit_refusals_total` and
//! logged, and what exists keeps working.

use std::net::{TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use nix::sys::socket::{connect, recv, send, socket, AddressFamily, MsgFlags, SockFlag, SockType};
use vnet_client::Port;
use vnet_control::{NetworkSpec, PortKind};
use vnet_testbed::api::{client, count_kind, refusals, tap_vm, wait_ports, wait_refusals};
use vnet_testbed::frames::{arp_request, broadcast, frame, ip, is_arp_reply, mac};
use vnet_testbed::{bin_path, skip_unless, skip_unless_root, wait_for, ChildGuard, Daemon, NsVm};

const T: Duration = Duration::from_secs(20);

fn daemon(limits: &str, network: &str) -> Daemon {
    Daemon::start(Some(&format!(
        "[limits]\n{limits}\n\n[[network]]\nname = \"lab\"\n{network}\n"
    )))
}

fn api_port(d: &Daemon) -> Port {
    let p = Port::open_at(d.net_dir("lab").join("api.sock")).expect("an api port");
    p.set_read_timeout(Some(T)).unwrap();
    p
}

/// The next frame `p` receives.
fn next_frame(p: &mut Port) -> Vec<u8> {
    let mut buf = vec![0; 2048];
    let n = p.recv(&mut buf).expect("a frame");
    buf.truncate(n);
    buf
}

#[test]
fn a_client_that_never_reads_its_replies_has_its_requests_dropped_and_counted() {
    const REQUESTS: usize = 3000;
    const GET_INFO: [u8; 1] = [0x03];
    let d = daemon("api_reply_queue = 4", "");
    let sock: OwnedFd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    let addr = nix::sys::socket::UnixAddr::new(&d.net_dir("lab").join("api.sock")).unwrap();
    connect(sock.as_raw_fd(), &addr).unwrap();
    // Far more requests than the socket's buffers and the queue hold replies for.
    for _ in 0..REQUESTS {
        send(sock.as_raw_fd(), &GET_INFO, MsgFlags::empty()).unwrap();
    }
    let labels = "net=\"lab\",limit=\"api_reply_queue\"";
    assert!(
        wait_for(T, || refusals(&d, labels) > 0),
        "no request was dropped\n{}",
        d.log()
    );
    assert!(d.log().contains("[limits] api_reply_queue"), "{}", d.log());

    // Other ports go on meanwhile.
    let (mut a, mut b) = (api_port(&d), api_port(&d));
    let hello = broadcast(mac("02:00:00:00:0b:01"));
    a.send(&hello).unwrap();
    assert_eq!(next_frame(&mut b), hello);

    // Every request was answered or dropped, none twice: the queued answers come once
    // the client reads.
    let mut answered = 0;
    let mut msg = [0u8; 256];
    let all = wait_for(T, || {
        while let Ok(n) = recv(sock.as_raw_fd(), &mut msg, MsgFlags::MSG_DONTWAIT) {
            // The client is a port too: a's broadcast came as a frame (kind 0).
            if msg[0] != 0 {
                assert_eq!(msg[0], 0x80 | GET_INFO[0], "a GET_INFO reply ({n} bytes)");
                answered += 1;
            }
        }
        answered + refusals(&d, labels) as usize == REQUESTS
    });
    assert!(
        all,
        "{answered} answered, {} dropped of {REQUESTS}",
        refusals(&d, labels)
    );
    // And the client that reads again is answered again.
    send(sock.as_raw_fd(), &GET_INFO, MsgFlags::empty()).unwrap();
    nix::sys::socket::setsockopt(
        &sock,
        nix::sys::socket::sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(20, 0),
    )
    .unwrap();
    // (a's broadcast may still come first: queued frames wait behind replies.)
    loop {
        let n = recv(sock.as_raw_fd(), &mut msg, MsgFlags::empty()).expect("an answer");
        if msg[0] != 0 {
            assert!(n > 1 && msg[0] == 0x80 | GET_INFO[0]);
            break;
        }
    }
}

#[test]
fn a_vnet_over_macs_per_vnet_is_refused_and_a_full_table_floods_and_counts() {
    let d = daemon("macs_per_vnet = 4", "");
    let c = client(&d);
    // A table left at its default size gets the limit's.
    assert_eq!(c.network("lab").unwrap().max_macs, 4);
    let mut big = NetworkSpec::named("big");
    big.max_macs = 8;
    let e = c.create_network(&big).unwrap_err().to_string();
    assert!(
        e.contains("409") && e.contains("[limits] macs_per_vnet"),
        "{e}"
    );
    assert_eq!(refusals(&d, "limit=\"macs_per_vnet\""), 1);

    let (mut a, mut b, mut c3) = (api_port(&d), api_port(&d), api_port(&d));
    let macs: Vec<[u8; 6]> = (1..=5)
        .map(|n| mac(&format!("02:00:00:00:0a:0{n}")))
        .collect();
    let from_b = mac("02:00:00:00:0b:01");
    b.send(&broadcast(from_b)).unwrap();
    next_frame(&mut a);
    next_frame(&mut c3);
    // b's address and three of a's fill the table; a's last two are not learned.
    for &m in &macs {
        a.send(&broadcast(m)).unwrap();
        assert_eq!(next_frame(&mut b)[6..12], m);
        assert_eq!(next_frame(&mut c3)[6..12], m);
    }
    assert_eq!(client(&d).macs("lab").unwrap().len(), 4);
    wait_refusals(&d, "net=\"lab\",limit=\"macs_per_vnet\"", 2);
    // A frame for a learned address goes to its port only; one for an address not
    // learned is flooded, so c3's next frame is the second.
    let to_learned = frame(macs[0], from_b, 60);
    let to_unlearned = frame(macs[4], from_b, 61);
    b.send(&to_learned).unwrap();
    b.send(&to_unlearned).unwrap();
    assert_eq!(next_frame(&mut a), to_learned);
    assert_eq!(next_frame(&mut a), to_unlearned);
    assert_eq!(next_frame(&mut c3), to_unlearned);
}

/// A daemon whose open-file limit is `nofile` (soft and hard): `prlimit` runs it.
fn daemon_with_nofile(dir: &Path, nofile: u32, config: &str) -> Daemon {
    let wrapper = dir.join("vnetd-nofile");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec prlimit --nofile={nofile}:{nofile} {} \"$@\"\n",
            bin_path("vnetd").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    Daemon::builder().binary(&wrapper).config(config).start()
}

/// An Ethernet frame carrying UDP `payload` from `src` to `dst` (no UDP checksum).
fn udp_frame(
    macs: ([u8; 6], [u8; 6]),
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&macs.1);
    f.extend_from_slice(&macs.0);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    ip.extend_from_slice(&src.0);
    ip.extend_from_slice(&dst.0);
    let sum = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&src.1.to_be_bytes());
    f.extend_from_slice(&dst.1.to_be_bytes());
    f.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

#[test]
fn ports_cannot_take_the_last_descriptors_so_the_control_api_and_the_nat_still_get_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon_with_nofile(
        dir.path(),
        200,
        "[limits]\nfd_reserve = 100\nfd_reserve_control = 40\n\n[[network]]\n\
         name = \"lab\"\nsubnet = \"10.77.0.0/24\"\nnat = { host_loopback = true }\n",
    );
    let labels = "net=\"lab\",limit=\"fd_reserve\"";
    // Ports until one is refused (each API port holds one descriptor in vnetd).
    let mut ports = Vec::new();
    while refusals(&d, labels) == 0 {
        assert!(ports.len() < 200, "never refused\n{}", d.log());
        ports.push(api_port(&d));
        let n = ports.len();
        assert!(
            wait_for(T, || count_kind(&d, "lab", PortKind::Api) == n
                || refusals(&d, labels) > 0),
            "port {n} neither attached nor refused\n{}",
            d.log()
        );
    }
    assert!(ports.len() > 30, "{} ports\n{}", ports.len(), d.log());
    assert!(d.log().contains("fd_reserve"), "{}", d.log());
    // The control API answers.
    client(&d).version().expect("the control API answers");
    // The NAT still opens a flow: a datagram from a port to the gateway reaches the
    // host's loopback through a new socket.
    let host = UdpSocket::bind("127.0.0.1:0").unwrap();
    host.set_read_timeout(Some(T)).unwrap();
    let guest = (mac("02:00:00:00:77:01"), ip("10.77.0.50"));
    let p = &mut ports[0];
    p.send(&arp_request(guest.0, guest.1, ip("10.77.0.2")))
        .unwrap();
    let reply = loop {
        let f = next_frame(p);
        if is_arp_reply(&f, guest.0, ip("10.77.0.2")) {
            break f;
        }
    };
    let gateway_mac: [u8; 6] = reply[6..12].try_into().unwrap();
    let port = host.local_addr().unwrap().port();
    p.send(&udp_frame(
        (guest.0, gateway_mac),
        (guest.1, 40000),
        (ip("10.77.0.2"), port),
        b"knock",
    ))
    .unwrap();
    let mut got = [0u8; 16];
    let n = host.recv(&mut got).expect("the NAT's datagram");
    assert_eq!(&got[..n], b"knock");
    let nat = client(&d).network("lab").unwrap().nat.unwrap();
    assert_eq!(nat.flows, 1);

    // New flows, each a socket, until only the control API's share is left: the NAT
    // then refuses them (the guest hears "unreachable"), and the control API answers.
    const FLOWS: u16 = 100;
    for sport in 41000..41000 + FLOWS {
        let udp = udp_frame(
            (guest.0, gateway_mac),
            (guest.1, sport),
            (ip("10.77.0.2"), port),
            b"flow",
        );
        p.send(&udp).unwrap();
    }
    let labels = "net=\"lab\",limit=\"fd_reserve_control\"";
    host.set_nonblocking(true).unwrap();
    let mut delivered = 0;
    let all = wait_for(T, || {
        while host.recv(&mut got).is_ok() {
            delivered += 1;
        }
        delivered + refusals(&d, labels) == u64::from(FLOWS)
    });
    assert!(
        all,
        "{delivered} delivered, {} refused of {FLOWS}\n{}",
        refusals(&d, labels),
        d.log()
    );
    assert!(delivered > 0 && refusals(&d, labels) > 0, "{delivered}");
    client(&d).version().expect("the control API answers");
}

#[test]
fn a_device_open_over_device_opens_fails_with_enfile_and_is_counted() {
    skip_unless_root!();
    skip_unless!(Path::new("/dev/fuse").exists(), "needs /dev/fuse");
    let d = daemon("device_opens = 2", "");
    let path = d.run_dir().join("dev").join("lab");
    assert!(wait_for(T, || path.exists()), "{}", d.log());
    let open = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
    };
    let mut first = open().expect("the first open");
    let mut second = open().expect("the second open");
    wait_ports(&d, "lab", PortKind::Device, 2);
    let e = open().expect_err("a third open");
    assert_eq!(
        e.raw_os_error(),
        Some(nix::errno::Errno::ENFILE as i32),
        "{e}"
    );
    assert_eq!(refusals(&d, "limit=\"device_opens\""), 1);
    assert!(d.log().contains("[limits] device_opens"), "{}", d.log());
    // The open two still carry frames.
    use std::io::{Read, Write};
    let hello = broadcast(mac("02:00:00:00:0d:01"));
    first.write_all(&hello).unwrap();
    let mut buf = [0u8; 1514];
    let n = second.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], &hello[..]);
    // Room again once one closes.
    drop(first);
    assert!(wait_for(T, || open().is_ok()), "{}", d.log());
}

/// A NAT vnet `lab` on `10.78.N.0/24` (`N` from `salt`, so tests running at once
/// differ) whose gateway reaches the host's loopback, with `limits`, and a namespace
/// VM on it at `.10`; and the gateway's address.
fn nat_lab(limits: &str, salt: u32) -> (Daemon, NsVm, String) {
    let n = (std::process::id() * 7 + salt * 37) % 200 + 20;
    let d = daemon(
        limits,
        &format!("subnet = \"10.78.{n}.0/24\"\nnat = {{ host_loopback = true }}"),
    );
    let (_, vm) = tap_vm(&d, "lab", "52:54:00:78:00:10", &format!("10.78.{n}.10/24"));
    (d, vm, format!("10.78.{n}.2"))
}

/// Accepts `n` connections on `listener` within the deadline.
fn accept(listener: &TcpListener, n: usize) -> Vec<std::net::TcpStream> {
    listener.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    let ok = wait_for(T, || {
        while let Ok((s, _)) = listener.accept() {
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(T)).unwrap();
            got.push(s);
        }
        got.len() >= n
    });
    assert!(ok, "{} of {n} connections came", got.len());
    got
}

#[test]
fn a_guest_connection_over_nat_flows_is_refused_at_once_while_the_open_ones_carry_on() {
    skip_unless_root!();
    use std::io::{Read, Write};
    let (d, vm, gw) = nat_lab("nat_flows = 2", 1);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("TCP4:{gw}:{}", listener.local_addr().unwrap().port());
    // Two connections the guest keeps open, echoing what the host sends.
    let _echoes: Vec<ChildGuard> = (0..2)
        .map(|_| vm.ns().spawn(&["socat", &target, "EXEC:cat"]))
        .collect();
    let mut conns = accept(&listener, 2);
    let syn_retransmits = || vm.ns().counter("TcpExt:TCPSynRetrans");
    let before = syn_retransmits();
    let out = vm
        .ns()
        .exec(&["socat", "-u", &format!("{target},connect-timeout=10"), "-"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused"), "{err}\n{}", d.log());
    assert_eq!(syn_retransmits(), before, "refused at the first SYN");
    let counters = client(&d).network("lab").unwrap().nat.unwrap().counters;
    assert_eq!(counters.refused_flows, 1);
    wait_refusals(&d, "net=\"lab\",limit=\"nat_flows\"", 1);
    for c in &mut conns {
        c.write_all(b"still here\n").unwrap();
        let mut got = [0u8; 11];
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"still here\n");
    }
}

#[test]
fn guest_data_for_peers_that_do_not_read_stops_at_nat_buffer_bytes_while_others_flow() {
    skip_unless_root!();
    use std::io::{Read, Write};
    let (d, vm, gw) = nat_lab("nat_buffer_bytes = 262144", 2);
    let stuck = TcpListener::bind("127.0.0.1:0").unwrap();
    let stuck_target = format!("TCP4:{gw}:{}", stuck.local_addr().unwrap().port());
    // Two guest uploads to a peer that never reads.
    let _uploads: Vec<ChildGuard> = (0..2)
        .map(|_| vm.ns().spawn(&["socat", "-u", "/dev/zero", &stuck_target]))
        .collect();
    let _held = accept(&stuck, 2);
    let labels = "net=\"lab\",limit=\"nat_buffer_bytes\"";
    assert!(
        wait_for(T, || refusals(&d, labels) > 0),
        "the buffer never filled\n{}",
        d.log()
    );
    assert!(d.log().contains("[limits] nat_buffer_bytes"), "{}", d.log());
    // A connection whose peer reads still carries data both ways.
    let echo = TcpListener::bind("127.0.0.1:0").unwrap();
    let echo_target = format!("TCP4:{gw}:{}", echo.local_addr().unwrap().port());
    let _guest = vm.ns().spawn(&["socat", &echo_target, "EXEC:cat"]);
    let mut c = accept(&echo, 1).pop().unwrap();
    let payload = vec![0x5a; 1 << 20];
    let reader = {
        let mut c = c.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut back = vec![0; 1 << 20];
            c.read_exact(&mut back).map(|()| back)
        })
    };
    c.write_all(&payload).unwrap();
    let back = reader.join().unwrap().expect("the echo");
    assert!(back == payload, "the echo differs");
}
