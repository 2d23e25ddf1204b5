//! `[limits]`: a client over a bound is refused at once and counted in
//! `vnet_limit_refusals_total`, while what exists keeps working.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use vnet_control::{NetworkSpec, PortKind};
use vnet_testbed::api::{client, refusals, try_refusals, wait_ports};
use vnet_testbed::frames::{broadcast, mac};
use vnet_testbed::wait_for;
use vnet_testbed::Daemon;

fn daemon(limits: &str) -> Daemon {
    Daemon::start(Some(&format!(
        "[limits]\n{limits}\n\n[[network]]\nname = \"lab\"\n"
    )))
}

fn send_frame(s: &mut UnixStream, frame: &[u8]) {
    s.write_all(&(frame.len() as u32).to_be_bytes()).unwrap();
    s.write_all(frame).unwrap();
}

fn read_frame(s: &mut UnixStream) -> Vec<u8> {
    let mut len = [0; 4];
    s.read_exact(&mut len).expect("a frame");
    let mut frame = vec![0; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut frame).expect("a frame");
    frame
}

/// Whether the daemon closed `s` (EOF) within a few seconds.
fn closed(s: &mut UnixStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    matches!(s.read(&mut [0; 64]), Ok(0) | Err(_)) && {
        // A timeout is an error too: tell it apart.
        s.set_nonblocking(true).unwrap();
        !matches!(s.read(&mut [0; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

#[test]
fn a_stream_client_over_ports_per_vnet_is_closed_at_once_and_counted() {
    let d = daemon("ports_per_vnet = 3");
    let path = d.net_dir("lab").join("stream.sock");
    let mut clients: Vec<UnixStream> = (0..3)
        .map(|_| UnixStream::connect(&path).unwrap())
        .collect();
    wait_ports(&d, "lab", PortKind::Stream, 3);
    let mut fourth = UnixStream::connect(&path).unwrap();
    assert!(closed(&mut fourth), "the 4th client is closed");
    assert_eq!(refusals(&d, "net=\"lab\",limit=\"ports_per_vnet\""), 1);
    assert!(d.log().contains("[limits] ports_per_vnet"), "{}", d.log());

    // The first three still exchange frames.
    let frame = broadcast(mac("02:00:00:00:0f:01"));
    send_frame(&mut clients[0], &frame);
    for c in &mut clients[1..] {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert_eq!(read_frame(c), frame);
    }
    assert_eq!(refusals(&d, "net=\"lab\",limit=\"ports_per_vnet\""), 1);
}

#[test]
fn a_vde_client_that_says_nothing_is_closed_after_the_handshake_deadline() {
    let d = daemon("vde_handshake_secs = 1");
    let ctl = d.net_dir("lab").join("vde/ctl");
    let mut silent = UnixStream::connect(&ctl).unwrap();
    wait_ports(&d, "lab", PortKind::Vde, 1);
    assert!(closed(&mut silent), "the silent VDE client is closed");
    wait_ports(&d, "lab", PortKind::Vde, 0);
    assert!(wait_for(Duration::from_secs(5), || refusals(
        &d,
        "net=\"lab\",limit=\"vde_handshake_secs\""
    ) == 1));
    assert!(d.log().contains("vde_handshake_secs"), "{}", d.log());
}

#[test]
fn vnets_over_the_limit_are_refused_with_409_and_counted() {
    let d = daemon("vnets = 2");
    let c = client(&d);
    c.create_network(&NetworkSpec::named("second")).unwrap();
    let e = c
        .create_network(&NetworkSpec::named("third"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("[limits] vnets"), "{e}");
    assert!(e.contains("409"), "{e}");
    assert_eq!(refusals(&d, "limit=\"vnets\""), 1);
    // Room again once one goes.
    c.delete_network("second").unwrap();
    c.create_network(&NetworkSpec::named("third")).unwrap();
}

/// Everything the daemon sends on `s` until it closes it (`None`: still open after 10 s).
fn read_until_closed(s: &mut UnixStream) -> Option<String> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&got).into_owned()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(String::from_utf8_lossy(&got).into_owned())
            }
            Err(_) => return None,
        }
    }
}

#[test]
fn a_control_connection_over_the_limit_is_answered_503_closed_and_counted() {
    let d = daemon("control_connections = 2\ncontrol_request_secs = 60");
    let idle: Vec<UnixStream> = (0..2)
        .map(|_| UnixStream::connect(d.control_socket()).unwrap())
        .collect();
    let mut third = UnixStream::connect(d.control_socket()).unwrap();
    let answer = read_until_closed(&mut third).expect("the 3rd connection is closed");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("[limits] control_connections"), "{answer}");
    assert!(d.log().contains("control_connections"), "{}", d.log());

    // Room again once one goes. The daemon frees a slot when it sees the client gone,
    // so a request may still meet a full house for a moment: each such refusal is
    // counted here too.
    let mut idle = idle.into_iter();
    drop(idle.next());
    let mut full = 0;
    let mut with_room = |call: &mut dyn FnMut() -> Result<u64, vnet_control::client::Error>| {
        let mut got = None;
        let ok = wait_for(Duration::from_secs(10), || match call() {
            Ok(v) => {
                got = Some(v);
                true
            }
            // Refused: answered 503, or closed before the request was all written (the
            // daemon answers and closes without reading it), which hyper reports as a
            // broken exchange.
            Err(e)
                if e.status().map(|s| s.as_u16()) == Some(503)
                    || matches!(e, vnet_control::client::Error::Http { .. }) =>
            {
                full += 1;
                false
            }
            Err(e) => panic!("{e}"),
        });
        assert!(
            ok,
            "no room on the control socket after a connection closed"
        );
        got.unwrap()
    };
    with_room(&mut || client(&d).version().map(|_| 0));
    let counted = with_room(&mut || try_refusals(&d, "limit=\"control_connections\""));
    assert_eq!(counted, 1 + full);
    drop(idle);
}

#[test]
fn a_control_client_that_sends_half_a_request_is_closed_and_counted_while_others_are_served() {
    let d = daemon("control_request_secs = 1");
    let mut slow = UnixStream::connect(d.control_socket()).unwrap();
    slow.write_all(b"GET /v1/vers").unwrap();
    // Served meanwhile, in turn.
    for _ in 0..3 {
        client(&d).version().expect("another client's request");
    }
    assert!(
        closed(&mut slow),
        "the client sending half a request is closed"
    );
    assert!(wait_for(Duration::from_secs(5), || refusals(
        &d,
        "limit=\"control_request_secs\""
    ) == 1));
    assert!(d.log().contains("control_request_secs"), "{}", d.log());
}

#[test]
fn a_control_client_that_stalls_in_a_request_body_is_closed_and_counted() {
    let d = daemon("control_request_secs = 1");
    let mut slow = UnixStream::connect(d.control_socket()).unwrap();
    slow.write_all(
        b"POST /v1/networks HTTP/1.1\r\nhost: vnetd\r\ncontent-type: application/json\r\n\
          content-length: 100\r\n\r\n{\"name\":",
    )
    .unwrap();
    client(&d).version().expect("another client's request");
    assert!(
        closed(&mut slow),
        "the client stalled in its body is closed"
    );
    assert!(wait_for(Duration::from_secs(5), || refusals(
        &d,
        "limit=\"control_request_secs\""
    ) == 1));
}
