//! `vnet-pps`: small-frame packet rate between two hosts (namespaces), or two VMs on a
//! vnet's dgram socket, for benchmarks.
//!
//! ```text
//! vnet-pps sink (--bind IP:PORT | --dgram SOCK) --secs N [--wait S]
//! vnet-pps send (--to IP:PORT | --dgram SOCK) --secs N [--size BYTES]
//! ```
//!
//! The sender blasts UDP datagrams with `sendmmsg`, as fast as the kernel takes them; the
//! sink counts what arrives with `recvmmsg`. The default payload, 18 bytes, makes a
//! 60-byte Ethernet frame (14 + 20 IP + 8 UDP + 18), 64 bytes on a real wire with the FCS:
//! the minimum frame. Frames delivered per second is what the sink counts, from its
//! first datagram for `--secs` seconds. Each side prints one machine-readable line on
//! stdout, `key=value` pairs:
//!
//! ```text
//! sink: frames=1234567 bytes=22222206 secs=5.000 pps=246913
//! send: sent=2345678 secs=6.000 pps=390946 errors=0
//! ```
//!
//! The sink exits 1 (still printing its line, with `frames=0`) if nothing arrived within
//! `--wait` seconds (default 30).
//!
//! With `--dgram RUN/NET/dgram.sock` each side is a VM on the vnet's dgram socket, as
//! QEMU's `-netdev dgram` is: it binds a unix datagram socket of its own and deals in
//! whole Ethernet frames of the same length (42 header bytes + payload). The sink first
//! announces its MAC with a broadcast, so the switch forwards the sender's frames to it
//! alone: start it before the sender.

use std::fmt;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Datagrams per `sendmmsg`/`recvmmsg` call.
const BATCH: usize = 64;
/// Receive slot size: plenty for small frames; longer datagrams are counted, truncated.
const SLOT: usize = 2048;
/// Socket buffer size asked for on both sides.
const SOCK_BUF: libc::c_int = 8 << 20;
/// Largest UDP payload over IPv4.
const MAX_PAYLOAD: usize = 65507;
/// UDP payload that makes a minimum (64-byte with FCS) Ethernet frame over IPv4.
const DEFAULT_SIZE: usize = 18;
/// Ethernet, IPv4 and UDP headers: a `--dgram` frame is these bytes plus the payload.
const HEADERS: usize = 42;
/// The `--dgram` sides' MACs (locally administered).
const SINK_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x99, 0x02];
const SEND_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x99, 0x01];

const USAGE: &str = "\
usage: vnet-pps sink (--bind IP:PORT | --dgram SOCK) --secs N [--wait S]
       vnet-pps send (--to IP:PORT | --dgram SOCK) --secs N [--size BYTES]

sink: counts UDP datagrams arriving at IP:PORT for N seconds from the first one;
      prints `frames=.. bytes=.. secs=.. pps=..`. Exits 1 if nothing came within S
      seconds (default 30).
send: sends UDP datagrams of BYTES payload (default 18: a 64-byte Ethernet frame with
      FCS) to IP:PORT as fast as possible for N seconds; prints `sent=.. secs=.. pps=..
      errors=..`.
--dgram SOCK: instead of UDP, Ethernet frames of 42 + BYTES bytes over a vnet's dgram
      socket (RUN/NET/dgram.sock), each side a VM of its own; start the sink first.";

/// Where a side sends or listens.
#[derive(Debug, Clone, PartialEq)]
enum Peer {
    Udp(SocketAddr),
    /// A vnet's dgram socket.
    Dgram(PathBuf),
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Udp(a) => a.fmt(f),
            Peer::Dgram(p) => p.display().fmt(f),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Command {
    Sink { bind: Peer, secs: f64, wait: f64 },
    Send { to: Peer, secs: f64, size: usize },
}

#[derive(Debug, Clone, PartialEq)]
struct UsageError(String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn parse_args(args: &[String]) -> Result<Command, UsageError> {
    let err = |m: String| Err(UsageError(m));
    let Some((mode, rest)) = args.split_first() else {
        return err("missing mode: sink or send".into());
    };
    let mut addr: Option<Peer> = None;
    let mut secs: Option<f64> = None;
    let mut wait = 30.0;
    let mut size = DEFAULT_SIZE;
    let addr_flag = match mode.as_str() {
        "sink" => "--bind",
        "send" => "--to",
        m => return err(format!("unknown mode {m:?}: use sink or send")),
    };
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let Some(value) = it.next() else {
            return err(format!("{flag} needs a value"));
        };
        let positive = |what: &str| match value.parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
            _ => Err(UsageError(format!(
                "{what} must be a positive number of seconds, not {value:?}"
            ))),
        };
        let peer = match flag.as_str() {
            f if f == addr_flag => match value.parse() {
                Ok(a) => Some(Peer::Udp(a)),
                Err(_) => return err(format!("{flag}: {value:?} is not IP:PORT")),
            },
            "--dgram" => Some(Peer::Dgram(value.into())),
            _ => None,
        };
        if let Some(peer) = peer {
            if addr.replace(peer).is_some() {
                return err(format!("give one of {addr_flag} and --dgram, once"));
            }
            continue;
        }
        match flag.as_str() {
            "--secs" => secs = Some(positive("--secs")?),
            "--wait" if mode == "sink" => wait = positive("--wait")?,
            "--size" if mode == "send" => match value.parse() {
                Ok(s) if s <= MAX_PAYLOAD => size = s,
                _ => return err(format!("--size must be 0..={MAX_PAYLOAD}, not {value:?}")),
            },
            f => return err(format!("unknown option {f:?} for {mode}")),
        }
    }
    let Some(addr) = addr else {
        return err(format!("{mode} needs {addr_flag} IP:PORT or --dgram SOCK"));
    };
    let Some(secs) = secs else {
        return err(format!("{mode} needs --secs N"));
    };
    Ok(if mode == "sink" {
        Command::Sink {
            bind: addr,
            secs,
            wait,
        }
    } else {
        Command::Send {
            to: addr,
            secs,
            size,
        }
    })
}

/// Rate over an elapsed time, 0 for no time.
fn rate(count: u64, elapsed: Duration) -> u64 {
    let s = elapsed.as_secs_f64();
    if s > 0.0 {
        (count as f64 / s).round() as u64
    } else {
        0
    }
}

/// Sets an integer socket option; tries `force` first (root may exceed the rmem/wmem
/// sysctl limits), then `normal`. Best effort: a smaller buffer only costs drops.
fn set_buf(fd: RawFd, force: libc::c_int, normal: libc::c_int) {
    for opt in [force, normal] {
        let val: libc::c_int = SOCK_BUF;
        // SAFETY: `fd` is an open socket, which the caller keeps open for the call;
        // `val` is a live c_int and the length passed is exactly its size.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&raw const val).cast::<libc::c_void>(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

/// A `--dgram` side's own socket, at a path removed again on drop.
struct OwnSocket {
    sock: UnixDatagram,
    path: PathBuf,
}

impl OwnSocket {
    fn bind(role: &str) -> io::Result<Self> {
        let name = format!("vnet-pps-{role}-{}.sock", std::process::id());
        let path = std::env::temp_dir().join(name);
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path)?;
        Ok(OwnSocket { sock, path })
    }
}

impl Drop for OwnSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// An Ethernet frame of [`HEADERS`] + `size` bytes from `src` to `dst` (a local
/// experimental EtherType: the switch reads only the header).
fn ether_frame(dst: [u8; 6], src: [u8; 6], size: usize) -> Vec<u8> {
    let mut f = [&dst[..], &src, &[0x88, 0xb5]].concat();
    f.resize(HEADERS + size, 0);
    f
}

fn sink(bind: &Peer, secs: f64, wait: f64) -> io::Result<bool> {
    let timeout = Some(Duration::from_millis(100));
    let (udp, own);
    let fd = match bind {
        Peer::Udp(addr) => {
            udp = UdpSocket::bind(addr)?;
            udp.set_read_timeout(timeout)?;
            udp.as_raw_fd()
        }
        Peer::Dgram(vnet) => {
            own = OwnSocket::bind("sink")?;
            own.sock.set_read_timeout(timeout)?;
            // The switch learns our MAC from this: the sender's frames come to us only.
            own.sock
                .send_to(&ether_frame([0xff; 6], SINK_MAC, 0), vnet)?;
            own.sock.as_raw_fd()
        }
    };
    set_buf(fd, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF);

    let mut bufs = vec![[0u8; SLOT]; BATCH];
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: SLOT,
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            // SAFETY: mmsghdr is a plain C struct of integers and pointers, for which
            // all-zero bytes are a valid value (null name and control, zero lengths).
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();

    let duration = Duration::from_secs_f64(secs);
    let opened = Instant::now();
    let mut start: Option<Instant> = None;
    let mut frames: u64 = 0;
    let mut bytes: u64 = 0;
    let end = loop {
        // SAFETY: `msgs` holds BATCH headers, each pointing at one iovec in `iovs` that
        // points at a distinct SLOT-byte buffer in `bufs`; all three vectors stay alive
        // and unmoved for the call. The timeout pointer may be null.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        let now = Instant::now();
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => {}
                _ => return Err(e),
            }
        } else {
            let n = n as usize;
            // The first batch opens the window (and is counted: at most BATCH frames).
            start.get_or_insert(now);
            frames += n as u64;
            bytes += msgs[..n].iter().map(|m| u64::from(m.msg_len)).sum::<u64>();
        }
        match start {
            Some(t0) if now.duration_since(t0) >= duration => break now,
            None if now.duration_since(opened).as_secs_f64() >= wait => break now,
            _ => {}
        }
    };
    let elapsed = start.map_or(Duration::ZERO, |t0| end.duration_since(t0));
    println!(
        "frames={frames} bytes={bytes} secs={:.3} pps={}",
        elapsed.as_secs_f64(),
        rate(frames, elapsed)
    );
    if start.is_none() {
        eprintln!("vnet-pps sink: nothing arrived at {bind} within {wait} s");
    }
    Ok(start.is_some())
}

fn send(to: &Peer, secs: f64, size: usize) -> io::Result<()> {
    let (udp, own);
    let (fd, mut payload) = match to {
        Peer::Udp(to) => {
            let any: SocketAddr = if to.is_ipv4() {
                "0.0.0.0:0".parse().expect("literal")
            } else {
                "[::]:0".parse().expect("literal")
            };
            udp = UdpSocket::bind(any)?;
            udp.connect(to)?;
            let payload = (0..size).map(|i| b"vnet-pps"[i % 8]).collect();
            (udp.as_raw_fd(), payload)
        }
        Peer::Dgram(vnet) => {
            own = OwnSocket::bind("send")?;
            own.sock.connect(vnet)?;
            (own.sock.as_raw_fd(), ether_frame(SINK_MAC, SEND_MAC, size))
        }
    };
    set_buf(fd, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF);
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH)
        .map(|_| {
            // SAFETY: mmsghdr is a plain C struct of integers and pointers, for which
            // all-zero bytes are a valid value (null name and control, zero lengths).
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = &raw mut iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();

    let duration = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut sent: u64 = 0;
    let mut errors: u64 = 0;
    let end = loop {
        // SAFETY: the socket is connected, so each header needs no address; every header
        // points at the one `iov`, which points at all of `payload`; `msgs`,
        // `iov` and `payload` stay alive and unmoved for the call, which only reads them
        // (and writes each header's msg_len).
        let n = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), BATCH as libc::c_uint, 0) };
        if n > 0 {
            sent += n as u64;
        } else {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // Queue full, interrupted, or an ICMP error from before the sink was up:
                // the datagrams are lost, which is what a packet-rate test measures.
                Some(
                    libc::ENOBUFS
                    | libc::EAGAIN
                    | libc::EINTR
                    | libc::ECONNREFUSED
                    | libc::EHOSTUNREACH
                    | libc::ENETUNREACH,
                ) => errors += 1,
                _ => return Err(e),
            }
        }
        let now = Instant::now();
        if now.duration_since(start) >= duration {
            break now;
        }
    };
    let elapsed = end.duration_since(start);
    println!(
        "sent={sent} secs={:.3} pps={} errors={errors}",
        elapsed.as_secs_f64(),
        rate(sent, elapsed)
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let cmd = match parse_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vnet-pps: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match cmd {
        Command::Sink { bind, secs, wait } => sink(&bind, secs, wait),
        Command::Send { to, secs, size } => send(&to, secs, size).map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("vnet-pps: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_sink_and_send() {
        assert_eq!(
            parse_args(&args("sink --bind 10.0.0.2:9000 --secs 5")),
            Ok(Command::Sink {
                bind: Peer::Udp("10.0.0.2:9000".parse().unwrap()),
                secs: 5.0,
                wait: 30.0
            })
        );
        assert_eq!(
            parse_args(&args("send --secs 2.5 --to 10.0.0.2:9000 --size 100")),
            Ok(Command::Send {
                to: Peer::Udp("10.0.0.2:9000".parse().unwrap()),
                secs: 2.5,
                size: 100
            })
        );
        assert_eq!(
            parse_args(&args("send --to 127.0.0.1:1 --secs 1")),
            Ok(Command::Send {
                to: Peer::Udp("127.0.0.1:1".parse().unwrap()),
                secs: 1.0,
                size: DEFAULT_SIZE
            })
        );
        assert_eq!(
            parse_args(&args("sink --dgram /run/vnet/b/dgram.sock --secs 1")),
            Ok(Command::Sink {
                bind: Peer::Dgram("/run/vnet/b/dgram.sock".into()),
                secs: 1.0,
                wait: 30.0
            })
        );
    }

    #[test]
    fn rejects_bad_args() {
        for bad in [
            "",
            "flood --to 1.2.3.4:5 --secs 1",
            "send --secs 1",
            "send --to 1.2.3.4:5",
            "send --to 1.2.3.4 --secs 1",
            "send --to 1.2.3.4:5 --secs 0",
            "send --to 1.2.3.4:5 --secs -1",
            "send --to 1.2.3.4:5 --secs 1 --size 70000",
            "send --to 1.2.3.4:5 --secs 1 --wait 3",
            "sink --bind 1.2.3.4:5 --secs 1 --size 3",
            "sink --bind 1.2.3.4:5 --secs",
            "send --to 1.2.3.4:5 --dgram /x --secs 1",
            "sink --dgram /x --dgram /y --secs 1",
        ] {
            assert!(parse_args(&args(bad)).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn loopback_send_reaches_sink() {
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let to = Peer::Udp(addr);
        let at = to.clone();
        let sink = std::thread::spawn(move || sink(&at, 0.3, 5.0).unwrap());
        std::thread::sleep(Duration::from_millis(100));
        send(&to, 0.5, DEFAULT_SIZE).unwrap();
        assert!(sink.join().unwrap(), "sink saw nothing");
    }

    #[test]
    fn dgram_send_reaches_sink_through_a_stand_in_switch() {
        let vnet = std::env::temp_dir().join(format!("vnet-pps-test-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&vnet);
        let switch = UnixDatagram::bind(&vnet).unwrap();
        // Forwards frames for the sink's MAC to whoever announced it.
        std::thread::spawn(move || {
            let mut buf = [0u8; SLOT];
            let mut sink = None;
            while let Ok((n, from)) = switch.recv_from(&mut buf) {
                match (&buf[..6], &buf[6..12]) {
                    (_, src) if src == SINK_MAC => sink = from.as_pathname().map(PathBuf::from),
                    (dst, _) if dst == SINK_MAC => {
                        if let Some(to) = &sink {
                            let _ = switch.send_to(&buf[..n], to);
                        }
                    }
                    _ => {}
                }
            }
        });
        let to = Peer::Dgram(vnet.clone());
        let at = to.clone();
        let sink = std::thread::spawn(move || sink(&at, 0.3, 5.0).unwrap());
        std::thread::sleep(Duration::from_millis(100));
        send(&to, 0.5, DEFAULT_SIZE).unwrap();
        assert!(sink.join().unwrap(), "sink saw nothing");
        std::fs::remove_file(&vnet).unwrap();
    }
}
