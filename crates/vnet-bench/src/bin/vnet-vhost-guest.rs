//! `vnet-vhost-guest`: a synthetic VM on a vhost-user socket, for benchmarks and tests.
//!
//! ```text
//! vnet-vhost-guest send    --socket SOCK [--tso | --size N] [--rate FPS] [--secs S] [--count N] [--mac M] [--to M]
//! vnet-vhost-guest receive --socket SOCK [--secs S] [--idle S] [--wait S] [--mac M]
//! vnet-vhost-guest loopback [--tso | --size N] [--rate FPS] [--secs S]
//! ```
//!
//! It is what a guest's virtio-net driver does to a vhost-user back-end (QEMU's part
//! included): RAM in a memfd the back-end maps, split virtqueues it drives itself,
//! `VIRTIO_NET_F_MRG_RXBUF`, TSO and checksum offloads, `EVENT_IDX` when the back-end
//! offers it. `send` transmits 60-byte frames (64 on a wire) or, with `--tso`, 64 KiB
//! TCP super-frames (`GSO_TCPV4`); each carries a sequence number, its send time and a
//! payload checksum. `receive` first announces its MAC with a broadcast, then checks
//! every frame and reports loss, reordering, corruption and latency percentiles (send
//! time to receive time, CLOCK_MONOTONIC, so both on one machine). Start the receiver
//! first. `loopback` runs a sender, a receiver and a forwarder that copies each frame
//! once from one's TX ring to the other's RX ring, in one process: the memory-speed
//! limit to compare a switch with.
//!
//! Each side prints one `key=value` line on stdout (`loopback` prints the receiver's,
//! the sender's count as `sent=`, `cpu_s=` for the whole process and `fwd_cpu_s=` for
//! the forwarder alone):
//!
//! ```text
//! send:    sent=.. bytes=.. secs=.. gbps=.. mpps=.. cpu_s=..
//! receive: frames=.. bytes=.. secs=.. gbps=.. mpps=.. lost=.. reordered=.. corrupt=.. p50_us=.. p99_us=.. p999_us=.. cpu_s=..
//! ```
//!
//! `receive` exits 1 if no test frame arrived or one was corrupt.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use vnet_bench::vhost::frames::{Shape, MAX_TSO_FRAME};
use vnet_bench::vhost::traffic::{self, cpu_secs, ReceivePlan, SendPlan};
use vnet_bench::vhost::{frontend, loopback};

const USAGE: &str = "\
usage: vnet-vhost-guest send    --socket SOCK [--tso | --size N] [--rate FPS] [--secs S] [--count N] [--mac M] [--to M]
       vnet-vhost-guest receive --socket SOCK [--secs S] [--idle S] [--wait S] [--mac M]
       vnet-vhost-guest loopback [--tso | --size N] [--rate FPS] [--secs S]
";
const SEND_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x77, 0x01];
const RECEIVE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x77, 0x02];
/// Ring entries per queue (QEMU's default is 256).
const QUEUE_SIZE: u16 = 256;

struct Args {
    mode: String,
    socket: Option<PathBuf>,
    len: usize,
    tso: bool,
    rate: Option<f64>,
    secs: Option<f64>,
    count: Option<u64>,
    idle: f64,
    wait: f64,
    mac: Option<[u8; 6]>,
    to: [u8; 6],
}

fn mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<_> = s.split(':').collect();
    let mut m = [0u8; 6];
    if parts.len() != 6 {
        return Err(format!("{s}: not a MAC"));
    }
    for (b, p) in m.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16).map_err(|_| format!("{s}: not a MAC"))?;
    }
    Ok(m)
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mode = it.next().ok_or("no mode")?;
    let mut a = Args {
        mode,
        socket: None,
        len: 60,
        tso: false,
        rate: None,
        secs: None,
        count: None,
        idle: 2.0,
        wait: 30.0,
        mac: None,
        to: RECEIVE_MAC,
    };
    while let Some(flag) = it.next() {
        if flag == "--tso" {
            a.tso = true;
            a.len = MAX_TSO_FRAME;
            continue;
        }
        let v = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = |v: &str| {
            v.parse::<f64>()
                .map_err(|_| format!("{flag}: bad number {v}"))
        };
        match flag.as_str() {
            "--socket" => a.socket = Some(v.into()),
            "--size" => a.len = num(&v)? as usize,
            "--rate" => a.rate = Some(num(&v)?),
            "--secs" => a.secs = Some(num(&v)?),
            "--count" => a.count = Some(num(&v)? as u64),
            "--idle" => a.idle = num(&v)?,
            "--wait" => a.wait = num(&v)?,
            "--mac" => a.mac = Some(mac(&v)?),
            "--to" => a.to = mac(&v)?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(a)
}

fn send_plan(a: &Args) -> Result<SendPlan, String> {
    let shape = Shape {
        len: a.len,
        tso: a.tso,
        src: a.mac.unwrap_or(SEND_MAC),
        dst: a.to,
    };
    shape.validate()?;
    Ok(SendPlan {
        shape,
        rate: a.rate,
        duration: Duration::from_secs_f64(a.secs.unwrap_or(if a.count.is_some() {
            3600.0
        } else {
            5.0
        })),
        count: a.count,
    })
}

fn run(a: Args) -> Result<bool, String> {
    let stop = AtomicBool::new(false);
    let connect = || {
        let path = a.socket.as_ref().ok_or("--socket is required")?;
        frontend::connect(path, QUEUE_SIZE).map_err(|e| format!("{}: {e}", path.display()))
    };
    match a.mode.as_str() {
        "send" => {
            let plan = send_plan(&a)?;
            let mut g = connect()?;
            let r = traffic::send(&mut g.tx, &plan, &stop);
            println!("{r} cpu_s={:.3}", cpu_secs());
            Ok(true)
        }
        "receive" => {
            let mut g = connect()?;
            traffic::stock(&mut g.rx);
            traffic::hello(&mut g.tx, a.mac.unwrap_or(RECEIVE_MAC));
            let plan = ReceivePlan {
                duration: a.secs.map(Duration::from_secs_f64),
                idle: Duration::from_secs_f64(a.idle),
                wait: Duration::from_secs_f64(a.wait),
            };
            let r = traffic::receive(&mut g.rx, &plan, &stop);
            println!("{r} cpu_s={:.3}", cpu_secs());
            Ok(r.frames > 0 && r.corrupt == 0)
        }
        "loopback" => {
            let plan = send_plan(&a)?;
            let (mut tx, mut rx, fwd) =
                loopback::pair(QUEUE_SIZE, true).map_err(|e| e.to_string())?;
            let done = AtomicBool::new(false);
            let (sent, r, (_, dropped, fwd_cpu)) = std::thread::scope(|s| {
                let f = s.spawn(|| fwd.run(&done));
                let receiver = s.spawn(|| {
                    let plan = ReceivePlan {
                        duration: None,
                        idle: Duration::from_secs_f64(a.idle.min(0.5)),
                        wait: Duration::from_secs(10),
                    };
                    traffic::stock(&mut rx);
                    traffic::receive(&mut rx, &plan, &stop)
                });
                let sent = traffic::send(&mut tx, &plan, &stop);
                let r = receiver.join().expect("receiver");
                done.store(true, std::sync::atomic::Ordering::Relaxed);
                (sent, r, f.join().expect("forwarder"))
            });
            println!(
                "{r} sent={} dropped={dropped} cpu_s={:.3} fwd_cpu_s={fwd_cpu:.3}",
                sent.sent,
                cpu_secs()
            );
            Ok(r.frames > 0 && r.corrupt == 0)
        }
        other => Err(format!("unknown mode {other}")),
    }
}

fn main() -> ExitCode {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("vnet-vhost-guest: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(a) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("vnet-vhost-guest: {e}");
            ExitCode::FAILURE
        }
    }
}
