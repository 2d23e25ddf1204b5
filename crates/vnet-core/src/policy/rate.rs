//! Rate limits and storm control: token buckets, a policer, a shaper.
//!
//! Theory of operation. A [`TokenBucket`] earns `per_sec` units a second up to its
//! burst and spends a frame's cost (bits for rates, 1 for frame counts). Credit is kept
//! in exact integers (unit × ns), so no rounding drifts over hours of traffic. A frame
//! conforms when the bucket holds its cost, or, for a frame larger than the whole
//! burst (a GSO super-frame), when the bucket is full; spending may leave the bucket in
//! debt, which the next frames wait out.
//!
//! - Ingress is **policed** ([`TokenBucket::admit`]): a frame over the rate is dropped.
//! - Egress is **shaped** ([`Shaper`]): a frame over the rate waits in the shaper's
//!   FIFO until the bucket has earned its cost; [`Shaper::deadline`] tells the data
//!   plane when to come back. TCP sees a slower, queueing link rather than losses, so
//!   it fills the rate instead of collapsing.
//! - Storm control ([`StormControl`]) polices broadcast, multicast and unknown-unicast
//!   frames a port sends, in frames per second with a burst of one second's worth (the
//!   one-second interval switches use).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::switch::PortId;
use crate::wire::MacAddr;

const NANOS: i128 = 1_000_000_000;

/// A token bucket in exact integer credit.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_sec: u64,
    /// Full bucket, in credit (units × 10⁹).
    cap: i128,
    /// Current credit; negative while in debt.
    credit: i128,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket earning `per_sec` units a second, holding at most `burst` units.
    pub fn new(per_sec: u64, burst: u64) -> Self {
        let cap = i128::from(burst.max(1)) * NANOS;
        TokenBucket {
            per_sec: per_sec.max(1),
            cap,
            credit: cap,
            last: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        // Full (traffic under the rate, the common case): nothing to earn.
        if self.credit < self.cap {
            if let Some(last) = self.last {
                let elapsed = now.saturating_duration_since(last).as_nanos();
                let earned =
                    i128::from(self.per_sec).saturating_mul(elapsed.min(i128::MAX as u128) as i128);
                self.credit = self.credit.saturating_add(earned).min(self.cap);
            }
        }
        if self.last.is_none_or(|last| now > last) {
            self.last = Some(now);
        }
    }

    /// Whether a frame costing `cost` units conforms now; if not, how long until it
    /// will. Spends nothing.
    pub fn conforms(&mut self, now: Instant, cost: u64) -> Result<(), Duration> {
        self.refill(now);
        let need = (i128::from(cost) * NANOS).min(self.cap);
        if self.credit >= need {
            return Ok(());
        }
        let per_sec = i128::from(self.per_sec);
        let nanos = (need - self.credit + per_sec - 1) / per_sec;
        Err(Duration::from_nanos(
            u64::try_from(nanos).unwrap_or(u64::MAX),
        ))
    }

    /// Whether the bucket holds all of `cost` now (no leniency for a frame larger than
    /// the burst). Spends nothing.
    pub fn holds(&mut self, now: Instant, cost: u64) -> bool {
        self.refill(now);
        self.credit >= i128::from(cost) * NANOS
    }

    /// Spends a frame's cost (after [`TokenBucket::conforms`] said yes).
    pub fn spend(&mut self, cost: u64) {
        self.credit -= i128::from(cost) * NANOS;
    }

    /// The policer: spends and says yes if the frame conforms, else says no.
    pub fn admit(&mut self, now: Instant, cost: u64) -> bool {
        let ok = self.conforms(now, cost).is_ok();
        if ok {
            self.spend(cost);
        }
        ok
    }
}

/// A bucket in bits for frames of `len` bytes.
fn bits(len: usize) -> u64 {
    len as u64 * 8
}

/// A byte-rate bucket: `bits_per_sec`, `burst_bytes`.
pub fn rate_bucket(bits_per_sec: u64, burst_bytes: u64) -> TokenBucket {
    TokenBucket::new(bits_per_sec, burst_bytes.saturating_mul(8))
}

/// The policer of a port's ingress: spends and says yes if a frame of `len` bytes
/// conforms.
pub fn police(bucket: &mut TokenBucket, now: Instant, len: usize) -> bool {
    bucket.admit(now, bits(len))
}

/// Whether a GSO super-frame of `len` bytes passes the policer whole (the bucket holds
/// all of it; spent if so). If not, the caller polices its segments one by one, as
/// they would be on a wire, rather than losing all of them.
pub fn police_whole(bucket: &mut TokenBucket, now: Instant, len: usize) -> bool {
    let whole = bucket.holds(now, bits(len));
    if whole {
        bucket.spend(bits(len));
    }
    whole
}

/// Egress shaping: a FIFO of held items (frames) released as the bucket allows.
#[derive(Debug)]
pub struct Shaper<T> {
    bucket: TokenBucket,
    queue: VecDeque<(T, usize)>,
    bytes: usize,
    /// When the head conforms, if it does not now.
    next: Option<Instant>,
}

impl<T> Shaper<T> {
    pub fn new(bucket: TokenBucket) -> Self {
        Shaper {
            bucket,
            queue: VecDeque::new(),
            bytes: 0,
            next: None,
        }
    }

    /// Whether a frame of `len` bytes may go now (nothing waits ahead of it and it
    /// conforms; its cost is then spent). If not, [`Shaper::hold`] it or drop it.
    pub fn pass(&mut self, now: Instant, len: usize) -> bool {
        self.queue.is_empty() && self.bucket.admit(now, bits(len))
    }

    /// Holds a frame that may not [`pass`](Shaper::pass), behind those waiting.
    pub fn hold(&mut self, now: Instant, item: T, len: usize) {
        self.queue.push_back((item, len));
        self.bytes += len;
        if self.queue.len() == 1 {
            self.next = self.bucket.conforms(now, bits(len)).err().map(|d| now + d);
        }
    }

    /// The next held frame that may go now, in order.
    pub fn release(&mut self, now: Instant) -> Option<T> {
        let len = self.queue.front()?.1;
        match self.bucket.conforms(now, bits(len)) {
            Ok(()) => {
                self.bucket.spend(bits(len));
                let (item, len) = self.queue.pop_front()?;
                self.bytes -= len;
                self.next = None;
                if let Some(&(_, next_len)) = self.queue.front() {
                    self.next = self
                        .bucket
                        .conforms(now, bits(next_len))
                        .err()
                        .map(|d| now + d);
                }
                Some(item)
            }
            Err(wait) => {
                self.next = Some(now + wait);
                None
            }
        }
    }

    /// When the head of the queue may go: the data plane's next wake-up for it.
    pub fn deadline(&self) -> Option<Instant> {
        if self.queue.is_empty() {
            None
        } else {
            self.next
        }
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Takes every held frame (the shaper is being removed or replaced).
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.bytes = 0;
        self.next = None;
        self.queue.drain(..).map(|(item, _)| item)
    }
}

/// What kind of flooded frame storm control counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloodClass {
    Broadcast,
    Multicast,
    UnknownUnicast,
}

impl FloodClass {
    /// The class of a frame to `dst` that the switch sends to `unicast` (`None`:
    /// flooded); `None` for known unicast.
    pub fn of(dst: MacAddr, unicast: Option<PortId>) -> Option<FloodClass> {
        if dst == MacAddr::BROADCAST {
            Some(FloodClass::Broadcast)
        } else if dst.is_multicast() {
            Some(FloodClass::Multicast)
        } else if unicast.is_none() {
            Some(FloodClass::UnknownUnicast)
        } else {
            None
        }
    }
}

/// Per-class frame-rate policers of one port's flooded ingress.
#[derive(Debug, Clone, Default)]
pub struct StormControl {
    pub broadcast: Option<TokenBucket>,
    pub multicast: Option<TokenBucket>,
    pub unknown_unicast: Option<TokenBucket>,
}

impl StormControl {
    /// Limits in frames per second (burst: one second's worth); `None` is unlimited.
    pub fn new(broadcast: Option<u64>, multicast: Option<u64>, unknown: Option<u64>) -> Self {
        let bucket = |pps: Option<u64>| pps.map(|pps| TokenBucket::new(pps, pps));
        StormControl {
            broadcast: bucket(broadcast),
            multicast: bucket(multicast),
            unknown_unicast: bucket(unknown),
        }
    }

    /// Whether any class is limited.
    pub fn is_active(&self) -> bool {
        self.broadcast.is_some() || self.multicast.is_some() || self.unknown_unicast.is_some()
    }

    /// Whether a flooded frame of `class` may pass now (spends its token if so).
    pub fn admit(&mut self, now: Instant, class: FloodClass) -> bool {
        let bucket = match class {
            FloodClass::Broadcast => &mut self.broadcast,
            FloodClass::Multicast => &mut self.multicast,
            FloodClass::UnknownUnicast => &mut self.unknown_unicast,
        };
        bucket.as_mut().is_none_or(|b| b.admit(now, 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_policer_passes_the_burst_then_the_rate() {
        let t0 = Instant::now();
        // 8 kbit/s = 1000 bytes/s, burst 2000 bytes.
        let mut b = rate_bucket(8_000, 2_000);
        assert!(police(&mut b, t0, 1_000));
        assert!(police(&mut b, t0, 1_000));
        assert!(!police(&mut b, t0, 1));
        // 500 ms earns 500 bytes: not enough for 1000, enough for 500.
        assert!(!police(&mut b, t0 + 500 * MS, 1_000));
        assert!(police(&mut b, t0 + 500 * MS, 500));
        // Over 10 s of 100-byte frames every 10 ms (10 kB/s offered), about 1 kB/s
        // passes (plus nothing: the bucket started empty here).
        let passed = (1..=1000)
            .filter(|i| police(&mut b, t0 + 500 * MS + i * 10 * MS, 100))
            .count();
        assert!((99..=101).contains(&passed), "{passed}");
    }

    #[test]
    fn credit_is_exact_and_capped() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3, 3);
        for _ in 0..3 {
            assert!(b.admit(t0, 1));
        }
        // A third of a second earns exactly one unit; an hour earns no more than the cap.
        assert_eq!(b.conforms(t0, 1), Err(Duration::from_nanos(333_333_334)));
        assert!(b.admit(t0 + Duration::from_nanos(333_333_334), 1));
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..10).filter(|_| b.admit(later, 1)).count(), 3);
        // Time going backwards (a stale `now`) earns nothing and breaks nothing.
        assert!(!b.admit(t0, 1));
    }

    #[test]
    fn a_super_frame_passes_whole_only_when_the_bucket_holds_all_of_it() {
        let t0 = Instant::now();
        let mut b = rate_bucket(8_000, 10_000);
        assert!(!police_whole(&mut b, t0, 20_000));
        assert!(police_whole(&mut b, t0, 6_000));
        assert!(!police_whole(&mut b, t0, 6_000));
        assert!(police(&mut b, t0, 4_000));
    }

    #[test]
    fn a_frame_larger_than_the_burst_passes_from_a_full_bucket_and_leaves_debt() {
        let t0 = Instant::now();
        let mut b = rate_bucket(8_000, 1_000);
        assert!(police(&mut b, t0, 64_000));
        // 63 kB of debt: 63 s, plus 1 s to earn the next 1000 bytes.
        assert!(!police(&mut b, t0 + Duration::from_secs(63), 1_000));
        assert!(police(&mut b, t0 + Duration::from_secs(64), 1_000));
    }

    #[test]
    fn a_shaper_releases_in_order_at_the_rate() {
        let t0 = Instant::now();
        // 80 kbit/s = 10 kB/s, burst one 1000-byte frame.
        let mut s = Shaper::new(rate_bucket(80_000, 1_000));
        assert!(s.pass(t0, 1_000));
        for i in 1..=10 {
            assert!(!s.pass(t0, 1_000));
            s.hold(t0, i, 1_000);
        }
        assert_eq!((s.len(), s.bytes()), (10, 10_000));
        assert_eq!(s.deadline(), Some(t0 + 100 * MS));
        assert_eq!(s.release(t0 + 99 * MS), None);
        let mut now = t0;
        let mut out = vec![];
        while let Some(due) = s.deadline() {
            now = due;
            while let Some(i) = s.release(now) {
                out.push(i);
            }
        }
        assert_eq!(out, (1..=10).collect::<Vec<_>>());
        assert_eq!(now, t0 + 1000 * MS);
        // With frames waiting, a conforming newcomer still queues behind them.
        let mut s = Shaper::new(rate_bucket(80_000, 1_000));
        assert!(s.pass(t0, 1_000));
        assert!(!s.pass(t0, 1_000));
        s.hold(t0, 2, 1_000);
        assert!(!s.pass(t0 + 200 * MS, 100));
        s.hold(t0 + 200 * MS, 3, 100);
        assert_eq!(s.release(t0 + 200 * MS), Some(2));
        assert_eq!(s.drain().collect::<Vec<_>>(), vec![3]);
        assert_eq!((s.len(), s.bytes(), s.deadline()), (0, 0, None));
    }

    #[test]
    fn storm_control_counts_each_class_apart() {
        let t0 = Instant::now();
        let unicast = MacAddr([2, 0, 0, 0, 0, 1]);
        let multicast = MacAddr([1, 0, 0x5e, 0, 0, 1]);
        assert_eq!(
            FloodClass::of(MacAddr::BROADCAST, None),
            Some(FloodClass::Broadcast)
        );
        assert_eq!(FloodClass::of(multicast, None), Some(FloodClass::Multicast));
        assert_eq!(
            FloodClass::of(unicast, None),
            Some(FloodClass::UnknownUnicast)
        );
        assert_eq!(FloodClass::of(unicast, Some(PortId(3))), None);
        let mut storm = StormControl::new(Some(10), None, Some(1));
        assert!(storm.is_active());
        let passed = (0..100)
            .filter(|_| storm.admit(t0, FloodClass::Broadcast))
            .count();
        assert_eq!(passed, 10);
        assert!((0..100).all(|_| storm.admit(t0, FloodClass::Multicast)));
        assert!(storm.admit(t0, FloodClass::UnknownUnicast));
        assert!(!storm.admit(t0, FloodClass::UnknownUnicast));
        // A second later, one more second's worth.
        let passed = (0..100)
            .filter(|_| storm.admit(t0 + 1000 * MS, FloodClass::Broadcast))
            .count();
        assert_eq!(passed, 10);
        assert!(!StormControl::default().is_active());
    }
}
