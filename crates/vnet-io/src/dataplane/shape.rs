//! Rate limits, storm control and impairment of one port: vnet-core's
//! `policy::{rate, impair, wheel}` with the frames they hold.
//!
//! Where the frame path meets it:
//! - **ingress** (before the switch): police `rate.in` (`policed`), then impair `in`
//!   (`loss`, duplicates, corruption, delay); frames come out now or, delayed, from
//!   [`Shaping::release_in`];
//! - **flooded** (after the switch decided to flood): storm control per class
//!   (`storm`);
//! - **egress** (a frame queued for the port): impair `out`, then shape `rate.out`;
//!   frames come out now or from [`Shaping::release_out`].
//!
//! Held frames (on a wheel for their delay, in the shaper for the rate) stay pooled
//! buffers; [`Shaping::deadline`] is when the data plane must come back for them. All
//! held frames of a port together are bounded ([`HeldBound`]); over it a frame is
//! dropped (`held_full`).

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use vnet_core::policy::impair::{flip_bit, Fate, ImpairParams, Impairer, LossModel};
use vnet_core::policy::rate::{
    police, police_whole, rate_bucket, FloodClass, Shaper, StormControl, TokenBucket,
};
use vnet_core::policy::wheel::TimerWheel;
use vnet_core::switch::DropCause;
use vnet_core::wire::offload::{self, Segmenter, VirtioNetHdr};
use vnet_model::policy::impair::{Distribution, ImpairReport, ImpairSpec, Impairment};
use vnet_model::policy::rate::{Bucket, RateReport, RateSpec};

use crate::frame::{BufPool, FrameBuf};

/// What one port may hold in frames and bytes (`[limits] held_frames_per_port`,
/// `held_bytes_per_port`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldBound {
    pub frames: usize,
    pub bytes: usize,
}

/// What comes out of a hook: a frame to carry on with, or a drop to count.
#[derive(Debug)]
pub(super) enum Emitted {
    Frame(FrameBuf),
    Dropped(DropCause),
}

/// Where a held frame was going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Toward {
    /// From the port's client into the switch.
    Switch,
    /// To the port's client.
    Client,
}

/// A direction's impairment and the frames it holds for their delay.
#[derive(Debug)]
struct Delayed {
    impairer: Impairer,
    wheel: TimerWheel<FrameBuf>,
}

/// Frames and bytes a port holds (wheels and shaper together), within its bound, and
/// what impairment did.
#[derive(Debug, Clone, Copy)]
struct Held {
    bound: HeldBound,
    frames: usize,
    bytes: usize,
    duplicated: u64,
    corrupted: u64,
    reordered: u64,
}

impl Held {
    /// Takes room for a frame of `len` bytes: `false` when over the bound.
    fn take(&mut self, len: usize) -> bool {
        if self.frames >= self.bound.frames || self.bytes + len > self.bound.bytes {
            return false;
        }
        self.frames += 1;
        self.bytes += len;
        true
    }

    fn give(&mut self, len: usize) {
        self.frames -= 1;
        self.bytes -= len;
    }
}

/// The rate and impairment sections of one port, live.
#[derive(Debug)]
pub(super) struct Shaping {
    policer: Option<TokenBucket>,
    storm: StormControl,
    shaper: Option<Shaper<FrameBuf>>,
    impair_in: Option<Delayed>,
    impair_out: Option<Delayed>,
    held: Held,
    /// Frames on their way from impairment to the shaper (kept for its capacity).
    pending: Vec<FrameBuf>,
}

/// A seed for a port's dice: std's per-process random hash keys, new for each call.
fn seed() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

fn impair_params(imp: &Impairment) -> ImpairParams {
    ImpairParams {
        delay: Duration::from_micros(imp.delay.0),
        jitter: Duration::from_micros(imp.jitter.0),
        normal: imp.distribution == Distribution::Normal,
        loss: match &imp.loss_burst {
            Some(ge) => LossModel::GilbertElliott {
                p: ge.p.0,
                r: ge.r.0,
                bad_loss: ge.bad_loss.0,
                good_loss: ge.good_loss.0,
            },
            None => LossModel::Random(imp.loss.0),
        },
        duplicate: imp.duplicate.0,
        reorder: imp.reorder.0,
        corrupt: imp.corrupt.0,
        rate: imp.rate.map(|r| r.0),
    }
}

impl Shaping {
    /// The state for `rate` and `impair` (either may be absent); `None` if they ask for
    /// nothing.
    pub fn new(
        rate: Option<&RateSpec>,
        impair: Option<&ImpairSpec>,
        bound: HeldBound,
    ) -> Option<Shaping> {
        let rate = rate.filter(|r| !r.is_empty());
        let impair = impair.filter(|i| !i.is_empty());
        if rate.is_none() && impair.is_none() {
            return None;
        }
        let bucket = |b: &Bucket| rate_bucket(b.rate.0, b.burst_bytes());
        let delayed = |imp: &Option<Impairment>| {
            imp.as_ref().map(|imp| Delayed {
                impairer: Impairer::new(impair_params(imp), seed()),
                wheel: TimerWheel::new(),
            })
        };
        Some(Shaping {
            policer: rate.and_then(|r| r.ingress.as_ref()).map(bucket),
            storm: rate.map_or_else(StormControl::default, |r| {
                StormControl::new(r.broadcast_pps, r.multicast_pps, r.unknown_unicast_pps)
            }),
            shaper: rate
                .and_then(|r| r.egress.as_ref())
                .map(|b| Shaper::new(bucket(b))),
            impair_in: impair.and_then(|i| delayed(&i.ingress)),
            impair_out: impair.and_then(|i| delayed(&i.egress)),
            held: Held {
                bound,
                frames: 0,
                bytes: 0,
                duplicated: 0,
                corrupted: 0,
                reordered: 0,
            },
            pending: Vec::new(),
        })
    }

    /// A frame from the port's client, before the switch: `emit` gets what goes on
    /// now (frames for the switch, drops to count).
    ///
    /// The frame comes back if it goes on now untouched (the common case, no
    /// allocation, no callback); else `emit` gets whatever it became.
    pub fn ingress(
        &mut self,
        now: Instant,
        buf: FrameBuf,
        pool: &mut BufPool,
        mut emit: impl FnMut(Emitted),
    ) -> Option<FrameBuf> {
        if let Some(policer) = &mut self.policer {
            if buf.offload.is_gso() && !police_whole(policer, now, buf.len()) {
                self.police_segments(now, buf, pool, &mut emit);
                return None;
            }
            if !buf.offload.is_gso() && !police(policer, now, buf.len()) {
                pool.put(buf);
                emit(Emitted::Dropped(DropCause::Policed));
                return None;
            }
        }
        if self.impair_in.is_none() {
            return Some(buf);
        }
        self.impair_in(now, buf, pool, &mut emit);
        None
    }

    fn impair_in(
        &mut self,
        now: Instant,
        buf: FrameBuf,
        pool: &mut BufPool,
        emit: &mut impl FnMut(Emitted),
    ) {
        match self.impair_in.as_mut() {
            None => emit(Emitted::Frame(buf)),
            Some(delayed) => impair(delayed, &mut self.held, now, buf, pool, emit),
        }
    }

    /// A GSO super-frame over the ingress rate, cut into the segments it stands for:
    /// those that conform go on as ordinary frames, the others are dropped, so TCP
    /// loses a segment here and there, as on a policed wire, not 44 at once.
    fn police_segments(
        &mut self,
        now: Instant,
        buf: FrameBuf,
        pool: &mut BufPool,
        emit: &mut impl FnMut(Emitted),
    ) {
        let Ok(seg) = Segmenter::new(buf.frame(), &buf.offload) else {
            // Not a super-frame the switch will take either: it says so.
            return emit(Emitted::Frame(buf));
        };
        for i in 0..seg.count() {
            let policer = self.policer.as_mut().expect("policing");
            if !police(policer, now, seg.segment_len(i)) {
                emit(Emitted::Dropped(DropCause::Policed));
                continue;
            }
            let mut out = pool.get_for(seg.segment_len(i));
            match seg.write(i, out.recv_space()) {
                Ok(n) => {
                    out.set_len(n);
                    self.impair_in(now, out, pool, emit);
                }
                Err(_) => {
                    pool.put(out);
                    emit(Emitted::Dropped(DropCause::Malformed));
                }
            }
        }
        pool.put(buf);
    }

    /// A frame from the port that the switch floods: whether storm control lets it.
    pub fn flood(&mut self, now: Instant, class: FloodClass) -> bool {
        self.storm.admit(now, class)
    }

    /// Whether storm control limits anything (else flooded frames need no class).
    pub fn has_storm_control(&self) -> bool {
        self.storm.is_active()
    }

    /// A frame the vnet sends to the port's client, before its egress queue: `emit`
    /// gets what goes on now (frames for the queue, drops to count).
    ///
    /// The frame comes back if it goes on now untouched (the common case); else `emit`
    /// gets whatever it became.
    pub fn egress(
        &mut self,
        now: Instant,
        buf: FrameBuf,
        pool: &mut BufPool,
        mut emit: impl FnMut(Emitted),
    ) -> Option<FrameBuf> {
        let Some(delayed) = self.impair_out.as_mut() else {
            return self.shape(now, buf, pool, &mut emit);
        };
        let pending = &mut self.pending;
        impair(delayed, &mut self.held, now, buf, pool, &mut |e| match e {
            Emitted::Frame(buf) => pending.push(buf),
            dropped => emit(dropped),
        });
        self.shape_pending(now, pool, &mut emit);
        None
    }

    fn shape_pending(&mut self, now: Instant, pool: &mut BufPool, emit: &mut impl FnMut(Emitted)) {
        let mut pending = std::mem::take(&mut self.pending);
        for buf in pending.drain(..) {
            if let Some(buf) = self.shape(now, buf, pool, emit) {
                emit(Emitted::Frame(buf));
            }
        }
        self.pending = pending;
    }

    /// The egress rate: the frame goes now, waits in the shaper, or is dropped when the
    /// port holds all it may.
    fn shape(
        &mut self,
        now: Instant,
        buf: FrameBuf,
        pool: &mut BufPool,
        emit: &mut impl FnMut(Emitted),
    ) -> Option<FrameBuf> {
        let Some(shaper) = &mut self.shaper else {
            return Some(buf);
        };
        let len = buf.len();
        if shaper.pass(now, len) {
            return Some(buf);
        }
        if self.held.take(len) {
            shaper.hold(now, buf, len);
        } else {
            pool.put(buf);
            emit(Emitted::Dropped(DropCause::HeldFull));
        }
        None
    }

    /// Hands the frames from the client whose delay is over to `emit` (for the
    /// switch), in order.
    pub fn release_in(&mut self, now: Instant, mut emit: impl FnMut(FrameBuf)) {
        if let Some(d) = &mut self.impair_in {
            let held = &mut self.held;
            d.wheel.expire(now, |buf| {
                held.give(buf.len());
                emit(buf)
            });
        }
    }

    /// Hands the frames for the client that may go now (delay over, rate allowing) to
    /// `emit` (for the egress queue), in order.
    pub fn release_out(&mut self, now: Instant, pool: &mut BufPool, mut emit: impl FnMut(Emitted)) {
        if let Some(d) = &mut self.impair_out {
            let (held, pending) = (&mut self.held, &mut self.pending);
            d.wheel.expire(now, |buf| {
                held.give(buf.len());
                pending.push(buf)
            });
            self.shape_pending(now, pool, &mut emit);
        }
        if let Some(shaper) = &mut self.shaper {
            while let Some(buf) = shaper.release(now) {
                self.held.give(buf.len());
                emit(Emitted::Frame(buf));
            }
        }
    }

    /// When held frames are next due (the data plane's next wake-up for this port).
    pub fn deadline(&self) -> Option<Instant> {
        if self.held.frames == 0 {
            return None;
        }
        [
            self.impair_in.as_ref().and_then(|d| d.wheel.deadline()),
            self.impair_out.as_ref().and_then(|d| d.wheel.deadline()),
            self.shaper.as_ref().and_then(|s| s.deadline()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Frames held now, both directions.
    #[cfg(test)]
    pub fn held_frames(&self) -> usize {
        self.held.frames
    }

    /// Gives back every held frame, in order (the section is removed or replaced, the
    /// port goes), each with where it was going.
    pub fn release_all(&mut self, mut into: impl FnMut(Toward, FrameBuf)) {
        if let Some(d) = &mut self.impair_in {
            d.wheel.drain(|b| into(Toward::Switch, b));
        }
        // The shaper's frames came through impairment before the wheel's.
        if let Some(shaper) = &mut self.shaper {
            shaper.drain().for_each(|b| into(Toward::Client, b));
        }
        if let Some(d) = &mut self.impair_out {
            d.wheel.drain(|b| into(Toward::Client, b));
        }
        self.held.frames = 0;
        self.held.bytes = 0;
    }

    /// What the shaper holds, if a rate is set on egress.
    pub fn rate_report(&self) -> RateReport {
        RateReport {
            held_frames: self.shaper.as_ref().map_or(0, |s| s.len()) as u64,
            held_bytes: self.shaper.as_ref().map_or(0, |s| s.bytes()) as u64,
        }
    }

    /// What impairment holds and did.
    pub fn impair_report(&self) -> ImpairReport {
        let wheels = [&self.impair_in, &self.impair_out]
            .into_iter()
            .flatten()
            .map(|d| d.wheel.len())
            .sum::<usize>();
        ImpairReport {
            held_frames: wheels as u64,
            duplicated: self.held.duplicated,
            corrupted: self.held.corrupted,
            reordered: self.held.reordered,
        }
    }
}

/// One frame through a direction's impairment: lost, or on now / onto the wheel (with
/// its duplicate after it).
fn impair(
    d: &mut Delayed,
    held: &mut Held,
    now: Instant,
    mut buf: FrameBuf,
    pool: &mut BufPool,
    emit: &mut impl FnMut(Emitted),
) {
    let (duplicate, corrupt_bit, due, reordered) = match d.impairer.fate(now, buf.len()) {
        Fate::Lost => {
            pool.put(buf);
            return emit(Emitted::Dropped(DropCause::Loss));
        }
        Fate::Deliver {
            duplicate,
            corrupt_bit,
            due,
            reordered,
        } => (duplicate, corrupt_bit, due, reordered),
    };
    let copy = duplicate.then(|| {
        held.duplicated += 1;
        let mut copy = pool.get_for(buf.len());
        copy.copy_from(&buf);
        copy
    });
    // As netem: a partial checksum is completed first, so the flipped bit is wrong on
    // the wire; a GSO super-frame (checksummed per segment later) is left whole.
    if let Some(bit) = corrupt_bit.filter(|_| !buf.offload.is_gso()) {
        let hdr = buf.offload;
        if !hdr.needs_csum() || offload::complete_checksum(buf.frame_mut(), &hdr).is_ok() {
            buf.offload = VirtioNetHdr::default();
            flip_bit(buf.frame_mut(), bit);
            held.corrupted += 1;
        }
    }
    held.reordered += u64::from(reordered);
    for frame in std::iter::once(buf).chain(copy) {
        // Not yet due, or due but behind frames still on the wheel: held, in order.
        let hold = !reordered && (due.is_some() || !d.wheel.is_empty());
        if !hold {
            emit(Emitted::Frame(frame));
        } else if held.take(frame.len()) {
            d.wheel.insert(now, frame, due.unwrap_or(now));
        } else {
            pool.put(frame);
            emit(Emitted::Dropped(DropCause::HeldFull));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vnet_model::policy::units::{BitRate, ByteSize, Micros, Ppm};

    const MS: Duration = Duration::from_millis(1);
    const BOUND: HeldBound = HeldBound {
        frames: 4,
        bytes: 1 << 20,
    };

    fn frame(pool: &mut BufPool, n: u8, len: usize) -> FrameBuf {
        let mut buf = pool.get_for(len);
        buf.fill(&vec![n; len]);
        buf
    }

    /// First bytes of frames emitted; drops as 200 + cause.
    fn collect(out: &mut Vec<u8>) -> impl FnMut(Emitted) + '_ {
        move |e| match e {
            Emitted::Frame(buf) => out.push(buf.frame()[0]),
            Emitted::Dropped(c) => out.push(200 + c as u8),
        }
    }

    #[test]
    fn nothing_asked_makes_no_state() {
        let empty = RateSpec::default();
        assert!(Shaping::new(Some(&empty), None, BOUND).is_none());
        assert!(Shaping::new(None, Some(&ImpairSpec::default()), BOUND).is_none());
    }

    #[test]
    fn egress_is_delayed_then_shaped_in_order_within_the_bound() {
        let t0 = Instant::now();
        let mut pool = BufPool::new(1518);
        // 8 Mbit/s with a one-frame burst: a 1000-byte frame per ms; 10 ms delay.
        let rate = RateSpec {
            egress: Some(Bucket {
                rate: BitRate(8_000_000),
                burst: Some(ByteSize(1000)),
            }),
            ..Default::default()
        };
        let impair = ImpairSpec {
            egress: Some(Impairment {
                delay: Micros(10_000),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut s = Shaping::new(Some(&rate), Some(&impair), BOUND).unwrap();
        let mut out = vec![];
        for n in 0..6 {
            let buf = frame(&mut pool, n, 1000);
            if let Some(b) = s.egress(t0, buf, &mut pool, collect(&mut out)) {
                out.push(b.frame()[0]);
            }
        }
        // Four held, the fifth and sixth over the bound.
        let full = 200 + DropCause::HeldFull as u8;
        assert_eq!(out, vec![full, full]);
        assert_eq!((s.held_frames(), s.impair_report().held_frames), (4, 4));
        assert_eq!(s.deadline(), Some(t0 + 10 * MS));
        out.clear();
        s.release_out(t0 + 10 * MS, &mut pool, collect(&mut out));
        // The first passes on the burst; the others wait for the rate.
        assert_eq!(out, vec![0]);
        assert_eq!(s.rate_report().held_frames, 3);
        assert_eq!(s.deadline(), Some(t0 + 11 * MS));
        while let Some(due) = s.deadline() {
            s.release_out(due, &mut pool, collect(&mut out));
        }
        assert_eq!(out, vec![0, 1, 2, 3]);
        assert_eq!((s.held_frames(), s.deadline()), (0, None));
    }

    #[test]
    fn ingress_is_policed_then_impaired() {
        let t0 = Instant::now();
        let mut pool = BufPool::new(1518);
        let rate = RateSpec {
            ingress: Some(Bucket {
                rate: BitRate(8_000),
                burst: Some(ByteSize(2000)),
            }),
            ..Default::default()
        };
        let impair = ImpairSpec {
            ingress: Some(Impairment {
                delay: Micros(5_000),
                duplicate: Ppm::ONE,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut s = Shaping::new(Some(&rate), Some(&impair), BOUND).unwrap();
        let mut out = vec![];
        for n in 0..3 {
            let buf = frame(&mut pool, n, 1000);
            if let Some(b) = s.ingress(t0, buf, &mut pool, collect(&mut out)) {
                out.push(b.frame()[0]);
            }
        }
        assert_eq!(out, vec![200 + DropCause::Policed as u8]);
        assert_eq!(s.impair_report().duplicated, 2);
        let mut released = vec![];
        s.release_in(t0 + 4 * MS, |b| released.push(b.frame()[0]));
        assert!(released.is_empty());
        s.release_in(t0 + 5 * MS, |b| released.push(b.frame()[0]));
        assert_eq!(released, vec![0, 0, 1, 1]);
        assert_eq!(s.held_frames(), 0);
    }

    /// A TCPv4 GSO super-frame of `segments` segments of 1000 payload bytes each.
    fn super_frame(pool: &mut BufPool, segments: usize) -> FrameBuf {
        let payload = segments * 1000;
        let mut f = vec![0u8; 54 + payload];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
        f[22] = 64;
        f[23] = 6;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[46] = 0x50; // TCP data offset: 20 bytes
        f[47] = 0x10; // ACK
        let mut buf = pool.get_large();
        buf.fill(&f);
        buf.offload = VirtioNetHdr {
            flags: VirtioNetHdr::F_NEEDS_CSUM,
            gso_type: VirtioNetHdr::GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1000,
            csum_start: 34,
            csum_offset: 16,
        };
        buf
    }

    #[test]
    fn a_super_frame_over_the_rate_is_policed_segment_by_segment() {
        let t0 = Instant::now();
        let mut pool = BufPool::new(1518);
        let rate = RateSpec {
            ingress: Some(Bucket {
                rate: BitRate(8_000),
                burst: Some(ByteSize(3000)),
            }),
            ..Default::default()
        };
        let mut s = Shaping::new(Some(&rate), None, BOUND).unwrap();
        let (mut passed, mut policed) = (vec![], 0);
        let buf = super_frame(&mut pool, 10);
        let whole = s.ingress(t0, buf, &mut pool, |e| match e {
            Emitted::Frame(b) => passed.push((b.len(), b.offload.is_gso())),
            Emitted::Dropped(DropCause::Policed) => policed += 1,
            Emitted::Dropped(other) => panic!("{other:?}"),
        });
        assert!(whole.is_none(), "cut in segments");
        // Two 1054-byte segments fit the 3000-byte burst; the other eight do not.
        assert_eq!((passed, policed), (vec![(1054, false); 2], 8));
        // A super-frame the bucket holds whole passes whole.
        let buf = super_frame(&mut pool, 2);
        let whole = s.ingress(t0 + Duration::from_secs(10), buf, &mut pool, |e| {
            panic!("{e:?}")
        });
        assert!(whole.is_some_and(|b| b.offload.is_gso()));
    }

    #[test]
    fn removal_hands_back_every_held_frame_in_order() {
        let t0 = Instant::now();
        let mut pool = BufPool::new(1518);
        let rate = RateSpec {
            egress: Some(Bucket {
                rate: BitRate(8_000),
                burst: Some(ByteSize(1000)),
            }),
            ..Default::default()
        };
        let impair = ImpairSpec {
            egress: Some(Impairment {
                delay: Micros(1_000),
                ..Default::default()
            }),
            ingress: Some(Impairment {
                delay: Micros(1_000),
                ..Default::default()
            }),
        };
        let mut s = Shaping::new(Some(&rate), Some(&impair), BOUND).unwrap();
        let mut out = vec![];
        for n in 0..3 {
            let buf = frame(&mut pool, n, 1000);
            if let Some(b) = s.egress(t0, buf, &mut pool, collect(&mut out)) {
                out.push(b.frame()[0]);
            }
        }
        s.release_out(t0 + MS, &mut pool, collect(&mut out));
        let buf = frame(&mut pool, 3, 1000);
        if let Some(b) = s.egress(t0 + MS, buf, &mut pool, collect(&mut out)) {
            out.push(b.frame()[0]);
        }
        let buf = frame(&mut pool, 9, 100);
        if let Some(b) = s.ingress(t0 + MS, buf, &mut pool, collect(&mut out)) {
            out.push(b.frame()[0]);
        }
        assert_eq!(out, vec![0]);
        let (mut into_switch, mut into_queue) = (vec![], vec![]);
        s.release_all(|toward, b| match toward {
            Toward::Switch => into_switch.push(b.frame()[0]),
            Toward::Client => into_queue.push(b.frame()[0]),
        });
        assert_eq!((into_switch, into_queue), (vec![9], vec![1, 2, 3]));
        assert_eq!((s.held_frames(), s.deadline()), (0, None));
    }
}
