//! `vnet-pps`: small-frame packet rate between two hosts (namespaces), for benchmarks.
//!
//! ```text
//! vnet-pps sink --bind IP:PORT --secs N [--wait S]
//! vnet-pps send --to IP:PORT --secs N [--size BYTES]
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

use std::fmt;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
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

const USAGE: &str = "\
usage: vnet-pps sink --bind IP:PORT --secs N [--wait S]
       vnet-pps send --to IP:PORT --secs N [--size BYTES]

sink: counts UDP datagrams arriving at IP:PORT for N seconds from the first one;
      prints `frames=.. bytes=.. secs=.. pps=..`. Exits 1 if nothing came within S
      seconds (default 30).
send: sends UDP datagrams of BYTES payload (default 18: a 64-byte Ethernet frame with
      FCS) to IP:PORT as fast as possible for N seconds; prints `sent=.. secs=.. pps=..
      errors=..`.";

#[derive(Debug, Clone, PartialEq)]
enum Command {
    Sink {
        bind: SocketAddr,
        secs: f64,
        wait: f64,
    },
    Send {
        to: SocketAddr,
        secs: f64,
        size: usize,
    },
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
    let mut addr: Option<SocketAddr> = None;
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
        match flag.as_str() {
            f if f == addr_flag => match value.parse() {
                Ok(a) => addr = Some(a),
                Err(_) => return err(format!("{flag}: {value:?} is not IP:PORT")),
            },
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
        return err(format!("{mode} needs {addr_flag} IP:PORT"));
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
fn set_buf(sock: &UdpSocket, force: libc::c_int, normal: libc::c_int) {
    let fd = sock.as_raw_fd();
    for opt in [force, normal] {
        let val: libc::c_int = SOCK_BUF;
        // SAFETY: `fd` is an open socket owned by `sock`, which outlives the call;
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

fn sink(bind: SocketAddr, secs: f64, wait: f64) -> io::Result<bool> {
    let sock = UdpSocket::bind(bind)?;
    set_buf(&sock, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF);
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let fd = sock.as_raw_fd();

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

fn send(to: SocketAddr, secs: f64, size: usize) -> io::Result<()> {
    let any: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let sock = UdpSocket::bind(any)?;
    set_buf(&sock, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF);
    sock.connect(to)?;
    let fd = sock.as_raw_fd();

    let mut payload = vec![0u8; size];
    for (i, b) in payload.iter_mut().enumerate() {
        *b = b"vnet-pps"[i % 8];
    }
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: size,
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
        // points at the one `iov`, which points at `payload` of `size` bytes; `msgs`,
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
        Command::Sink { bind, secs, wait } => sink(bind, secs, wait),
        Command::Send { to, secs, size } => send(to, secs, size).map(|()| true),
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
                bind: "10.0.0.2:9000".parse().unwrap(),
                secs: 5.0,
                wait: 30.0
            })
        );
        assert_eq!(
            parse_args(&args("send --secs 2.5 --to 10.0.0.2:9000 --size 100")),
            Ok(Command::Send {
                to: "10.0.0.2:9000".parse().unwrap(),
                secs: 2.5,
                size: 100
            })
        );
        assert_eq!(
            parse_args(&args("send --to 127.0.0.1:1 --secs 1")),
            Ok(Command::Send {
                to: "127.0.0.1:1".parse().unwrap(),
                secs: 1.0,
                size: DEFAULT_SIZE
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
        ] {
            assert!(parse_args(&args(bad)).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn loopback_send_reaches_sink() {
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let sink = std::thread::spawn(move || sink(addr, 0.3, 5.0).unwrap());
        std::thread::sleep(Duration::from_millis(100));
        send(addr, 0.5, DEFAULT_SIZE).unwrap();
        assert!(sink.join().unwrap(), "sink saw nothing");
    }
}
