//! The guest's traffic: a sender that keeps the TX ring full (or paced), a receiver
//! that keeps the RX ring stocked and checks every frame, and their reports.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::frames::{self, Arrival, Shape, NET_HDR};
use super::frontend::{Queue, BUF_LEN};

/// Buffers made available per publish (and kick, if the device wants one).
const BATCH: usize = 32;
/// Longest sleep waiting for the device: a lost interrupt costs at most this.
const WAIT: Duration = Duration::from_millis(20);
/// Longest wait for the device to take the last frames before the sender leaves.
const DRAIN: Duration = Duration::from_secs(5);
/// Latency is sampled every this many frames.
const SAMPLE_EVERY: u64 = 8;
const MAX_SAMPLES: usize = 1 << 21;

/// CLOCK_MONOTONIC in ns: comparable between processes on one machine.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU seconds this process used so far (user + system).
pub fn cpu_secs() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// CPU seconds the calling thread used so far.
pub fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Sleeps until the device hands back a buffer (or [`WAIT`] passes).
fn wait_used(q: &mut Queue) {
    q.ring.arm(&q.mem);
    if !q.ring.pending(&q.mem) {
        let mut pfd = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&q.call),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, WAIT.as_millis() as i32) };
        let _ = q.call.read();
    }
    q.ring.disarm(&q.mem);
}

fn publish(q: &mut Queue) {
    if q.ring.publish(&q.mem) {
        let _ = q.kick.write(1);
    }
}

/// What to send and for how long.
#[derive(Debug, Clone, Copy)]
pub struct SendPlan {
    pub shape: Shape,
    /// Frames per second; `None` is as fast as the device takes them.
    pub rate: Option<f64>,
    pub duration: Duration,
    pub count: Option<u64>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SendReport {
    pub sent: u64,
    pub bytes: u64,
    pub secs: f64,
}

impl std::fmt::Display for SendReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.secs.max(1e-9);
        write!(
            f,
            "sent={} bytes={} secs={:.3} gbps={:.3} mpps={:.4}",
            self.sent,
            self.bytes,
            self.secs,
            self.bytes as f64 * 8.0 / s / 1e9,
            self.sent as f64 / s / 1e6
        )
    }
}

/// Sends test frames on the TX queue `q` until the plan (or `stop`) ends.
pub fn send(q: &mut Queue, plan: &SendPlan, stop: &AtomicBool) -> SendReport {
    let n = q.size();
    let len = plan.shape.len;
    for id in 0..n {
        let buf = q
            .mem
            .slice_mut(q.buf_addr(id), NET_HDR + len)
            .expect("buffers inside RAM");
        plan.shape.fill(buf, id);
    }
    let mut free: Vec<u16> = (0..n).rev().collect();
    let start = Instant::now();
    let mut seq = 0u64;
    q.ring.disarm(&q.mem);
    let total = plan.count.unwrap_or(u64::MAX);
    while seq < total && !stop.load(Ordering::Relaxed) {
        let elapsed = start.elapsed();
        if elapsed >= plan.duration {
            break;
        }
        while let Some((id, _)) = q.ring.used(&q.mem) {
            free.push(id);
        }
        if free.is_empty() {
            wait_used(q);
            continue;
        }
        let due = plan.rate.map_or(u64::MAX, |r| {
            ((elapsed.as_secs_f64() * r) as u64 + 1).saturating_sub(seq)
        });
        if due == 0 {
            std::thread::sleep(Duration::from_micros(50));
            continue;
        }
        let take = (BATCH as u64).min(due).min(total - seq) as usize;
        let now = now_ns();
        for _ in 0..take {
            let Some(id) = free.pop() else { break };
            let addr = q.buf_addr(id);
            let buf = q.mem.slice_mut(addr, NET_HDR + len).expect("inside RAM");
            plan.shape.stamp(buf, seq, now);
            q.ring.add(&q.mem, id, addr, (NET_HDR + len) as u32, false);
            seq += 1;
        }
        publish(q);
    }
    let secs = start.elapsed().as_secs_f64();
    // Like a driver going down: wait (a while) until the device has taken every frame,
    // or the last ones die with the connection.
    let drained = Instant::now();
    while free.len() < usize::from(n) && drained.elapsed() < DRAIN {
        match q.ring.used(&q.mem) {
            Some((id, _)) => free.push(id),
            None => wait_used(q),
        }
    }
    SendReport {
        sent: seq,
        bytes: seq * len as u64,
        secs,
    }
}

/// Sends one broadcast frame from `mac`, so a learning switch knows where it is.
pub fn hello(q: &mut Queue, mac: [u8; 6]) {
    let addr = q.buf_addr(0);
    let buf = q.mem.slice_mut(addr, NET_HDR + 60).expect("inside RAM");
    buf.fill(0);
    buf[NET_HDR..NET_HDR + 6].fill(0xff);
    buf[NET_HDR + 6..NET_HDR + 12].copy_from_slice(&mac);
    buf[NET_HDR + 12..NET_HDR + 14].copy_from_slice(&0x88b5u16.to_be_bytes());
    q.ring.add(&q.mem, 0, addr, (NET_HDR + 60) as u32, false);
    q.ring.publish(&q.mem);
    let _ = q.kick.write(1);
}

/// When the receiver stops.
#[derive(Debug, Clone, Copy)]
pub struct ReceivePlan {
    /// How long to count from the first test frame (`None`: until idle).
    pub duration: Option<Duration>,
    /// Stop this long after the last test frame.
    pub idle: Duration,
    /// Give up if no test frame came within this.
    pub wait: Duration,
}

#[derive(Debug, Default, Clone)]
pub struct ReceiveReport {
    pub frames: u64,
    pub bytes: u64,
    pub secs: f64,
    /// Sequence numbers below the highest seen that never came.
    pub lost: u64,
    pub reordered: u64,
    pub corrupt: u64,
    /// Latency samples, ns, sorted by `finish`.
    latencies: Vec<u32>,
    max_seq: Option<u64>,
}

impl ReceiveReport {
    fn account(&mut self, a: Arrival, len: usize, now: u64) {
        match a {
            Arrival::Test { seq, sent_ns } => {
                self.frames += 1;
                self.bytes += len as u64;
                match self.max_seq {
                    Some(m) if seq <= m => self.reordered += 1,
                    _ => self.max_seq = Some(seq),
                }
                if seq.is_multiple_of(SAMPLE_EVERY) && self.latencies.len() < MAX_SAMPLES {
                    let d = now.saturating_sub(sent_ns).min(u64::from(u32::MAX));
                    self.latencies.push(d as u32);
                }
            }
            Arrival::Corrupt => self.corrupt += 1,
            Arrival::Other => {}
        }
    }

    fn finish(&mut self) {
        self.latencies.sort_unstable();
        let expected = self.max_seq.map_or(0, |m| m + 1);
        self.lost = expected.saturating_sub(self.frames);
    }

    /// The `p`-th latency percentile, µs.
    pub fn percentile_us(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies.len() - 1) as f64 * p / 100.0).round() as usize;
        f64::from(self.latencies[i]) / 1e3
    }
}

impl std::fmt::Display for ReceiveReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.secs.max(1e-9);
        write!(
            f,
            "frames={} bytes={} secs={:.3} gbps={:.3} mpps={:.4} lost={} reordered={} corrupt={} p50_us={:.1} p99_us={:.1} p999_us={:.1}",
            self.frames,
            self.bytes,
            self.secs,
            self.bytes as f64 * 8.0 / s / 1e9,
            self.frames as f64 / s / 1e6,
            self.lost,
            self.reordered,
            self.corrupt,
            self.percentile_us(50.0),
            self.percentile_us(99.0),
            self.percentile_us(99.9),
        )
    }
}

/// Makes every buffer of the RX queue `q` available to the device.
pub fn stock(q: &mut Queue) {
    for id in 0..q.size() {
        q.ring.add(&q.mem, id, q.buf_addr(id), BUF_LEN as u32, true);
    }
    q.ring.publish(&q.mem);
    let _ = q.kick.write(1);
}

/// Receives on the RX queue `q` (stocked with [`stock`]) until the plan (or `stop`)
/// ends, checking every frame.
pub fn receive(q: &mut Queue, plan: &ReceivePlan, stop: &AtomicBool) -> ReceiveReport {
    q.ring.disarm(&q.mem);
    let mut report = ReceiveReport::default();
    let start = Instant::now();
    let mut first: Option<Instant> = None;
    let mut last = start;
    let mut merged = Vec::new();
    let mut ids = Vec::with_capacity(4);
    let (mem, bufs) = (q.mem.clone(), q.bufs);
    while !stop.load(Ordering::Relaxed) {
        let mut got = 0usize;
        while let Some((id, len)) = q.ring.used(&q.mem) {
            got += 1;
            let now = now_ns();
            let whole = |id: u16, len: u32| {
                mem.slice(
                    bufs + u64::from(id) * BUF_LEN,
                    (len as usize).min(BUF_LEN as usize),
                )
                .expect("inside RAM")
            };
            let buf = whole(id, len);
            let parts = buf
                .get(10..12)
                .map_or(1, |b| u16::from_le_bytes([b[0], b[1]]));
            ids.clear();
            ids.push(id);
            let arrival = if parts > 1 {
                // VIRTIO_NET_F_MRG_RXBUF: the frame goes on in the next used buffers.
                merged.clear();
                merged.extend_from_slice(buf);
                for _ in 1..parts {
                    match q.ring.used(&q.mem) {
                        Some((id, len)) => {
                            merged.extend_from_slice(whole(id, len));
                            ids.push(id);
                        }
                        None => break,
                    }
                }
                if ids.len() == usize::from(parts) {
                    frames::check(&merged)
                } else {
                    Arrival::Corrupt
                }
            } else {
                frames::check(buf)
            };
            let frame_len = if parts > 1 { merged.len() } else { buf.len() };
            report.account(arrival, frame_len.saturating_sub(NET_HDR), now);
            if matches!(arrival, Arrival::Test { .. }) {
                last = Instant::now();
                first.get_or_insert(last);
            }
            for &id in &ids {
                q.ring.add(&q.mem, id, q.buf_addr(id), BUF_LEN as u32, true);
            }
            if got.is_multiple_of(BATCH) {
                publish(q);
            }
        }
        publish(q);
        if got > 0 {
            continue;
        }
        let now = Instant::now();
        let done = match first {
            None => now - start >= plan.wait,
            Some(t) => now - last >= plan.idle || plan.duration.is_some_and(|d| now - t >= d),
        };
        if done {
            break;
        }
        wait_used(q);
    }
    if let Some(t) = first {
        report.secs = (last - t).as_secs_f64();
    }
    report.finish();
    report
}
