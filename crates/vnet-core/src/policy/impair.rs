//! Impairment: netem / VDE wirefilter decisions for one direction of a port.
//!
//! Theory of operation. Each frame gets a [`Fate`] from [`Impairer::fate`], in netem's
//! order: lost (at random, or by a Gilbert–Elliott chain), else delivered once or twice
//! (duplicated), maybe with one bit flipped after the Ethernet header (corrupted: the
//! switch still delivers it where it was going, the guest's checksums catch it), at a
//! due time: now, plus the serialization time behind earlier frames on a link of
//! `rate` (netem `rate`), plus the delay and its jitter. A frame picked for reordering
//! skips the delay and goes at once, ahead of the held ones (netem `reorder`).
//!
//! Order is kept otherwise: a frame is never due before the frame ahead of it, so
//! jitter stretches gaps but does not reorder (netem behaves so with a `rate` or a
//! FIFO child qdisc; its bare jitter would reorder). The caller holds delayed frames on
//! a [`TimerWheel`](super::wheel::TimerWheel) and never sleeps.
//!
//! The dice are a seeded [`fastrand::Rng`], so tests are deterministic; the data plane
//! seeds each port's from the process's generator.

use std::time::{Duration, Instant};

/// Parts per million: 1 000 000 is certain.
pub const CERTAIN: u32 = 1_000_000;

/// The settings of one direction (probabilities in parts per million).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImpairParams {
    pub delay: Duration,
    pub jitter: Duration,
    pub normal: bool,
    pub loss: LossModel,
    pub duplicate: u32,
    pub reorder: u32,
    pub corrupt: u32,
    /// A link of this many bits per second.
    pub rate: Option<u64>,
}

/// How frames are lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossModel {
    /// Each frame with this probability.
    Random(u32),
    /// netem's `gemodel p r 1-h 1-k`: go bad with `p`, recover with `r`, lose with
    /// `bad_loss` in the bad state and `good_loss` in the good one.
    GilbertElliott {
        p: u32,
        r: u32,
        bad_loss: u32,
        good_loss: u32,
    },
}

impl Default for LossModel {
    fn default() -> Self {
        LossModel::Random(0)
    }
}

/// What happens to one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Lost,
    Deliver {
        /// Send a second copy right after it (uncorrupted).
        duplicate: bool,
        /// Flip this bit of the frame (an index into its bits) first.
        corrupt_bit: Option<usize>,
        /// When it may leave: `None` is now, ahead of any held frame (reordered or not
        /// delayed at all).
        due: Option<Instant>,
        /// Picked to skip the delay.
        reordered: bool,
    },
}

/// The impairment of one direction of a port, with its state (Gilbert–Elliott's,
/// the emulated link's, the last due time).
#[derive(Debug, Clone)]
pub struct Impairer {
    params: ImpairParams,
    rng: fastrand::Rng,
    bad: bool,
    link_free: Option<Instant>,
    last_due: Option<Instant>,
}

/// Bytes of the Ethernet header, which corruption leaves alone.
const HEADER: usize = 14;

impl Impairer {
    pub fn new(params: ImpairParams, seed: u64) -> Self {
        Impairer {
            params,
            rng: fastrand::Rng::with_seed(seed),
            bad: false,
            link_free: None,
            last_due: None,
        }
    }

    pub fn params(&self) -> &ImpairParams {
        &self.params
    }

    fn chance(&mut self, ppm: u32) -> bool {
        ppm != 0 && self.rng.u32(0..CERTAIN) < ppm
    }

    fn lost(&mut self) -> bool {
        match self.params.loss {
            LossModel::Random(ppm) => self.chance(ppm),
            LossModel::GilbertElliott {
                p,
                r,
                bad_loss,
                good_loss,
            } => {
                // As netem: move, then lose with the probability of the state left.
                let (flip, lose) = if self.bad {
                    (r, bad_loss)
                } else {
                    (p, good_loss)
                };
                if self.chance(flip) {
                    self.bad = !self.bad;
                }
                self.chance(lose)
            }
        }
    }

    /// The jitter to add, in ns: uniform in ±jitter, or normal with σ = jitter cut at
    /// ±4σ.
    fn jitter_ns(&mut self) -> i64 {
        let j = i64::try_from(self.params.jitter.as_nanos()).unwrap_or(i64::MAX / 8);
        if j == 0 {
            return 0;
        }
        if !self.params.normal {
            return self.rng.i64(-j..=j);
        }
        // Box–Muller: one standard normal from two uniforms in (0, 1].
        let u1 = 1.0 - self.rng.f64();
        let u2 = self.rng.f64();
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        (z.clamp(-4.0, 4.0) * j as f64) as i64
    }

    /// Decides the fate of a frame of `len` bytes arriving `now`.
    pub fn fate(&mut self, now: Instant, len: usize) -> Fate {
        if self.lost() {
            return Fate::Lost;
        }
        let duplicate = self.chance(self.params.duplicate);
        let corrupt_bit = (len > HEADER && self.chance(self.params.corrupt))
            .then(|| self.rng.usize(HEADER * 8..len * 8));
        let mut at = now;
        if let Some(rate) = self.params.rate {
            let start = self.link_free.map_or(now, |free| free.max(now));
            let nanos = (len as u128 * 8 * 1_000_000_000 / u128::from(rate.max(1))) as u64;
            at = start + Duration::from_nanos(nanos);
            self.link_free = Some(at);
        }
        let delayed = !self.params.delay.is_zero() || !self.params.jitter.is_zero();
        if delayed && self.chance(self.params.reorder) {
            return Fate::Deliver {
                duplicate,
                corrupt_bit,
                due: (at > now).then_some(at),
                reordered: true,
            };
        }
        let delay = i64::try_from(self.params.delay.as_nanos()).unwrap_or(i64::MAX / 8);
        let total = Duration::from_nanos(delay.saturating_add(self.jitter_ns()).max(0) as u64);
        let due = (at + total).max(self.last_due.unwrap_or(now));
        self.last_due = Some(due);
        Fate::Deliver {
            duplicate,
            corrupt_bit,
            due: (due > now).then_some(due),
            reordered: false,
        }
    }
}

/// Flips bit `bit` of `frame` (counted from the first byte's high bit), if it has one.
pub fn flip_bit(frame: &mut [u8], bit: usize) {
    if let Some(byte) = frame.get_mut(bit / 8) {
        *byte ^= 0x80 >> (bit % 8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn run(params: ImpairParams, frames: usize) -> Vec<Fate> {
        let mut imp = Impairer::new(params, 42);
        let t0 = Instant::now();
        (0..frames)
            .map(|i| imp.fate(t0 + i as u32 * MS, 1000))
            .collect()
    }

    fn count(fates: &[Fate], f: impl Fn(&Fate) -> bool) -> usize {
        fates.iter().filter(|x| f(x)).count()
    }

    #[test]
    fn random_loss_duplicate_and_corrupt_come_at_their_rates() {
        let fates = run(
            ImpairParams {
                loss: LossModel::Random(200_000),
                duplicate: 10_000,
                corrupt: 50_000,
                ..Default::default()
            },
            100_000,
        );
        let lost = count(&fates, |f| *f == Fate::Lost);
        assert!((19_000..21_000).contains(&lost), "{lost}");
        let dup = count(&fates, |f| {
            matches!(
                f,
                Fate::Deliver {
                    duplicate: true,
                    ..
                }
            )
        });
        assert!((700..900).contains(&dup), "{dup}");
        let corrupt = fates
            .iter()
            .filter_map(|f| match f {
                Fate::Deliver {
                    corrupt_bit: Some(b),
                    ..
                } => Some(*b),
                _ => None,
            })
            .collect::<Vec<_>>();
        assert!((3_700..4_300).contains(&corrupt.len()), "{}", corrupt.len());
        assert!(corrupt.iter().all(|b| (14 * 8..8000).contains(b)));
        // No delay asked: nothing is held.
        assert!(fates
            .iter()
            .all(|f| matches!(f, Fate::Lost | Fate::Deliver { due: None, .. })));
    }

    #[test]
    fn gilbert_elliott_loses_in_bursts_at_its_long_run_rate() {
        // π_bad = p / (p + r) = 1 / 31: about 3.2 % lost, in runs of about 1/r.
        let fates = run(
            ImpairParams {
                loss: LossModel::GilbertElliott {
                    p: 10_000,
                    r: 300_000,
                    bad_loss: CERTAIN,
                    good_loss: 0,
                },
                ..Default::default()
            },
            200_000,
        );
        let lost = count(&fates, |f| *f == Fate::Lost);
        assert!((5_700..7_200).contains(&lost), "{lost}");
        let runs = fates
            .windows(2)
            .filter(|w| w[0] != Fate::Lost && w[1] == Fate::Lost)
            .count();
        let mean_run = lost as f64 / runs as f64;
        assert!((2.8..3.9).contains(&mean_run), "{mean_run}");
    }

    #[test]
    fn jitter_stays_in_bounds_and_never_reorders() {
        for normal in [false, true] {
            let mut imp = Impairer::new(
                ImpairParams {
                    delay: 50 * MS,
                    jitter: 5 * MS,
                    normal,
                    ..Default::default()
                },
                7,
            );
            let t0 = Instant::now();
            let mut last = t0;
            let mut delays = vec![];
            for i in 0..10_000u32 {
                // Far apart: each delay is its own draw.
                let now = t0 + i * 100 * MS;
                let Fate::Deliver { due: Some(due), .. } = imp.fate(now, 100) else {
                    panic!("not delayed");
                };
                assert!(due >= last);
                last = due;
                delays.push((due - now).as_micros() as i64);
            }
            delays.sort();
            let median = delays[delays.len() / 2];
            assert!((49_500..50_500).contains(&median), "{median}");
            let (lo, hi) = if normal {
                (30_000, 70_000)
            } else {
                (45_000, 55_000)
            };
            assert!(delays[0] >= lo && delays[delays.len() - 1] <= hi);
            if normal {
                // About 68 % within one σ.
                let within = delays
                    .iter()
                    .filter(|d| (45_000..=55_000).contains(*d))
                    .count();
                assert!((6_500..7_100).contains(&within), "{within}");
            }
            // Back to back, jitter would reorder; the due times stay in order instead.
            let mut last = t0;
            for i in 0..1000u32 {
                if let Fate::Deliver { due: Some(due), .. } = imp.fate(t0 + i * MS / 10, 100) {
                    assert!(due >= last);
                    last = due;
                }
            }
        }
    }

    #[test]
    fn reordered_frames_skip_the_delay() {
        let fates = run(
            ImpairParams {
                delay: 10 * MS,
                reorder: 250_000,
                ..Default::default()
            },
            10_000,
        );
        let now = count(&fates, |f| matches!(f, Fate::Deliver { due: None, .. }));
        assert!((2_300..2_700).contains(&now), "{now}");
        let flagged = count(&fates, |f| {
            matches!(
                f,
                Fate::Deliver {
                    reordered: true,
                    ..
                }
            )
        });
        assert_eq!(flagged, now);
    }

    #[test]
    fn a_rate_spaces_frames_by_their_serialization_time() {
        // 8 Mbit/s: a 1000-byte frame takes 1 ms; ten at once leave 1 ms apart.
        let mut imp = Impairer::new(
            ImpairParams {
                rate: Some(8_000_000),
                ..Default::default()
            },
            1,
        );
        let t0 = Instant::now();
        let dues: Vec<_> = (0..10).map(|_| imp.fate(t0, 1000)).collect();
        for (i, f) in dues.iter().enumerate() {
            assert_eq!(
                *f,
                Fate::Deliver {
                    duplicate: false,
                    corrupt_bit: None,
                    due: Some(t0 + (i as u32 + 1) * MS),
                    reordered: false,
                }
            );
        }
    }

    #[test]
    fn flipping_a_bit_changes_exactly_that_bit() {
        let mut frame = [0u8; 20];
        flip_bit(&mut frame, 14 * 8 + 3);
        assert_eq!(frame[14], 0x10);
        flip_bit(&mut frame, 20 * 8); // past the end: nothing
        assert_eq!(frame.iter().map(|b| b.count_ones()).sum::<u32>(), 1);
        // Tiny and empty frames are never corrupted (nothing after the header).
        let mut imp = Impairer::new(
            ImpairParams {
                corrupt: CERTAIN,
                ..Default::default()
            },
            3,
        );
        for len in 0..=14 {
            assert!(matches!(
                imp.fate(Instant::now(), len),
                Fate::Deliver {
                    corrupt_bit: None,
                    ..
                }
            ));
        }
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use crate::policy::rate::{rate_bucket, Shaper};
    use crate::policy::wheel::TimerWheel;
    use proptest::prelude::*;

    proptest! {
        /// Any settings, any frame sizes, any (even backwards) clock: no panic, and
        /// everything the wheel and the shaper took comes back out.
        #[test]
        fn any_input_is_handled(
            delay in any::<u64>(), jitter in any::<u64>(), normal in any::<bool>(),
            ppm in proptest::array::uniform5(any::<u32>()), rate in any::<Option<u64>>(),
            bps in any::<u64>(), burst in any::<u64>(),
            frames in proptest::collection::vec((any::<u16>(), -10_000i64..10_000_000), 0..64),
        ) {
            let params = ImpairParams {
                delay: Duration::from_nanos(delay),
                jitter: Duration::from_nanos(jitter),
                normal,
                loss: if ppm[4] % 2 == 0 {
                    LossModel::Random(ppm[0])
                } else {
                    LossModel::GilbertElliott { p: ppm[0], r: ppm[1], bad_loss: ppm[2], good_loss: ppm[3] }
                },
                duplicate: ppm[1],
                reorder: ppm[2],
                corrupt: ppm[3],
                rate,
            };
            let t0 = Instant::now();
            let mut imp = Impairer::new(params, 0);
            let mut wheel = TimerWheel::new();
            let mut shaper = Shaper::new(rate_bucket(bps, burst));
            let (mut held, mut out) = (0, 0);
            for (len, at) in frames {
                let now = if at < 0 { t0 } else { t0 + Duration::from_micros(at as u64) };
                if let Fate::Deliver { due: Some(due), corrupt_bit, .. } = imp.fate(now, usize::from(len)) {
                    let mut frame = vec![0; usize::from(len)];
                    if let Some(bit) = corrupt_bit { flip_bit(&mut frame, bit) }
                    wheel.insert(now, len, due);
                    held += 1;
                }
                wheel.expire(now, |_| out += 1);
                if !shaper.pass(now, usize::from(len)) {
                    shaper.hold(now, len, usize::from(len));
                    held += 1;
                }
                while shaper.release(now).is_some() { out += 1 }
            }
            wheel.drain(|_| out += 1);
            out += shaper.drain().count();
            prop_assert_eq!(held, out);
        }
    }
}
