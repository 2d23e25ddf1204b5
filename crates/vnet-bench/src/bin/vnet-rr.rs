//! `vnet-rr`: TCP request/response latency through a network path, for benchmarks.
//!
//! ```text
//! vnet-rr server --bind IP:PORT
//! vnet-rr client --to IP:PORT --count N [--size BYTES] [--warmup N]
//! ```
//!
//! The client sends `--size` bytes (default 64) on one TCP connection and waits until
//! the server has echoed them all back, `--count` times, and times each round trip.
//! Both ends set `TCP_NODELAY`, so every message leaves at once instead of waiting for
//! Nagle's algorithm: what is measured is the path (a NAT, a switch), not coalescing.
//! `ping` cannot stand in for this: a user-space NAT carries ICMP on a different path
//! (ping sockets) than the TCP flows guests actually use.
//!
//! The first `--warmup` round trips (default 100) are not counted: they pay for cold
//! caches, ARP and the NAT's flow set-up. The client prints one machine-readable line on
//! stdout, `key=value` pairs, times in microseconds:
//!
//! ```text
//! count=10000 size=64 median_us=41.3 p99_us=88.0 min_us=30.2 max_us=512.9 mean_us=44.0
//! ```
//!
//! The server echoes every connection on its own thread until the peer closes it, and
//! runs until killed.
#![forbid(unsafe_code)]

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Default message size: a small request, well within one segment at any MTU.
const DEFAULT_SIZE: usize = 64;
/// Default number of uncounted round trips before measuring.
const DEFAULT_WARMUP: u64 = 100;
/// Largest message: one that still fits a single 64 KiB socket read on the server.
const MAX_SIZE: usize = 65536;
/// How long the client waits for a connection or for an answer before giving up, so a
/// path that drops a segment fails the measurement instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

const USAGE: &str = "\
usage: vnet-rr server --bind IP:PORT
       vnet-rr client --to IP:PORT --count N [--size BYTES] [--warmup N]

server: echoes every TCP connection to IP:PORT (TCP_NODELAY), until killed.
client: N round trips of BYTES (default 64) on one connection, after N (default 100)
        uncounted ones; prints `count=.. size=.. median_us=.. p99_us=.. min_us=..
        max_us=.. mean_us=..`.";

#[derive(Debug, Clone, PartialEq)]
enum Command {
    Server {
        bind: SocketAddr,
    },
    Client {
        to: SocketAddr,
        count: u64,
        size: usize,
        warmup: u64,
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
        return err("missing mode: server or client".into());
    };
    let addr_flag = match mode.as_str() {
        "server" => "--bind",
        "client" => "--to",
        m => return err(format!("unknown mode {m:?}: use server or client")),
    };
    let mut addr: Option<SocketAddr> = None;
    let mut count: Option<u64> = None;
    let mut size = DEFAULT_SIZE;
    let mut warmup = DEFAULT_WARMUP;
    let client = mode == "client";
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let Some(value) = it.next() else {
            return err(format!("{flag} needs a value"));
        };
        match flag.as_str() {
            f if f == addr_flag => match value.parse() {
                Ok(a) => addr = Some(a),
                Err(_) => return err(format!("{flag}: {value:?} is not IP:PORT")),
            },
            "--count" if client => match value.parse() {
                Ok(n) if n > 0 => count = Some(n),
                _ => return err(format!("--count must be a positive integer, not {value:?}")),
            },
            "--size" if client => match value.parse() {
                Ok(s) if (1..=MAX_SIZE).contains(&s) => size = s,
                _ => return err(format!("--size must be 1..={MAX_SIZE}, not {value:?}")),
            },
            "--warmup" if client => match value.parse() {
                Ok(n) => warmup = n,
                _ => return err(format!("--warmup must be an integer, not {value:?}")),
            },
            f => return err(format!("unknown option {f:?} for {mode}")),
        }
    }
    let Some(addr) = addr else {
        return err(format!("{mode} needs {addr_flag} IP:PORT"));
    };
    if !client {
        return Ok(Command::Server { bind: addr });
    }
    let Some(count) = count else {
        return err("client needs --count N".into());
    };
    Ok(Command::Client {
        to: addr,
        count,
        size,
        warmup,
    })
}

/// Round-trip statistics in nanoseconds.
#[derive(Debug, Clone, PartialEq)]
struct Summary {
    median: f64,
    p99: u64,
    min: u64,
    max: u64,
    mean: f64,
}

/// Sorts `samples` and summarises them; `None` for no samples. The median of an even
/// count is the mean of the middle two; p99 is the nearest-rank percentile (the smallest
/// sample with at least 99% of the samples at or below it), as `scripts/bench` computes
/// its ping p99, so the two tables read alike.
fn summarise(samples: &mut [u64]) -> Option<Summary> {
    let n = samples.len();
    if n == 0 {
        return None;
    }
    samples.sort_unstable();
    let median = if n % 2 == 1 {
        samples[n / 2] as f64
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) as f64 / 2.0
    };
    let rank = (n * 99).div_ceil(100).max(1);
    Some(Summary {
        median,
        p99: samples[rank - 1],
        min: samples[0],
        max: samples[n - 1],
        mean: samples.iter().sum::<u64>() as f64 / n as f64,
    })
}

fn server(bind: SocketAddr) -> io::Result<()> {
    let listener = TcpListener::bind(bind)?;
    for conn in listener.incoming() {
        let conn = match conn {
            Ok(c) => c,
            // A peer that gave up before accept() costs nothing; keep serving the rest.
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
            Err(e) => return Err(e),
        };
        std::thread::spawn(move || {
            // Errors end only this connection (a client killed mid-run, say).
            let _ = echo(conn);
        });
    }
    Ok(())
}

/// Echoes everything read back to the sender, until EOF.
fn echo(mut conn: TcpStream) -> io::Result<()> {
    conn.set_nodelay(true)?;
    let mut buf = vec![0u8; MAX_SIZE];
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        conn.write_all(&buf[..n])?;
    }
}

/// Runs `warmup + count` round trips; returns the `count` measured ones in nanoseconds.
fn client(to: SocketAddr, count: u64, size: usize, warmup: u64) -> io::Result<Vec<u64>> {
    let mut conn = TcpStream::connect_timeout(&to, IO_TIMEOUT)?;
    conn.set_nodelay(true)?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut msg = vec![0u8; size];
    let mut back = vec![0u8; size];
    let mut samples = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for i in 0..warmup + count {
        // A different first byte each time: an echo of a stale or reordered message
        // shows up as a mismatch instead of as a fast round trip.
        msg[0] = i as u8;
        let t0 = Instant::now();
        conn.write_all(&msg)?;
        conn.read_exact(&mut back)?;
        let rtt = t0.elapsed();
        if back != msg {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("round trip {i}: the echo differs from what was sent"),
            ));
        }
        if i >= warmup {
            samples.push(u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX));
        }
    }
    Ok(samples)
}

fn us(ns: f64) -> f64 {
    ns / 1000.0
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
            eprintln!("vnet-rr: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match cmd {
        Command::Server { bind } => server(bind),
        Command::Client {
            to,
            count,
            size,
            warmup,
        } => client(to, count, size, warmup).map(|mut samples| {
            // `count` is positive, so there is always a summary.
            if let Some(s) = summarise(&mut samples) {
                println!(
                    "count={} size={size} median_us={:.1} p99_us={:.1} min_us={:.1} \
                     max_us={:.1} mean_us={:.1}",
                    samples.len(),
                    us(s.median),
                    us(s.p99 as f64),
                    us(s.min as f64),
                    us(s.max as f64),
                    us(s.mean),
                );
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vnet-rr: {e}");
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
    fn parses_server_and_client() {
        assert_eq!(
            parse_args(&args("server --bind 127.0.0.1:9000")),
            Ok(Command::Server {
                bind: "127.0.0.1:9000".parse().unwrap()
            })
        );
        assert_eq!(
            parse_args(&args(
                "client --count 5 --to 10.0.2.2:9000 --size 1 --warmup 0"
            )),
            Ok(Command::Client {
                to: "10.0.2.2:9000".parse().unwrap(),
                count: 5,
                size: 1,
                warmup: 0
            })
        );
        assert_eq!(
            parse_args(&args("client --to 10.0.2.2:9000 --count 5")),
            Ok(Command::Client {
                to: "10.0.2.2:9000".parse().unwrap(),
                count: 5,
                size: DEFAULT_SIZE,
                warmup: DEFAULT_WARMUP
            })
        );
    }

    #[test]
    fn rejects_bad_args() {
        for bad in [
            "",
            "ping --to 1.2.3.4:5 --count 1",
            "client --count 1",
            "client --to 1.2.3.4:5",
            "client --to 1.2.3.4 --count 1",
            "client --to 1.2.3.4:5 --count 0",
            "client --to 1.2.3.4:5 --count 1 --size 0",
            "client --to 1.2.3.4:5 --count 1 --size 70000",
            "client --to 1.2.3.4:5 --count 1 --warmup -1",
            "server --bind 1.2.3.4:5 --count 3",
            "server --bind",
        ] {
            assert!(parse_args(&args(bad)).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn summary_median_and_nearest_rank_p99() {
        assert_eq!(summarise(&mut []), None);
        let mut odd = [5, 1, 3];
        let s = summarise(&mut odd).unwrap();
        assert_eq!((s.median, s.p99, s.min, s.max, s.mean), (3.0, 5, 1, 5, 3.0));
        let mut even = [4, 1, 3, 2];
        assert_eq!(summarise(&mut even).unwrap().median, 2.5);
        // 200 samples 1..=200: rank ceil(198) = 198.
        let mut many: Vec<u64> = (1..=200).rev().collect();
        assert_eq!(summarise(&mut many).unwrap().p99, 198);
    }

    #[test]
    fn loopback_round_trips() {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        std::thread::spawn(move || server(addr));
        let mut samples = None;
        // The server thread may not be listening yet.
        for _ in 0..50 {
            match client(addr, 20, 1000, 5) {
                Ok(s) => {
                    samples = Some(s);
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        let samples = samples.expect("no round trips through the loopback server");
        assert_eq!(samples.len(), 20);
        assert!(samples.iter().all(|&ns| ns > 0));
    }
}
