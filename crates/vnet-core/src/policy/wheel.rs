//! A hashed timer wheel for held frames (impairment's delays).
//!
//! Time is cut into ticks of [`TICK`]; an item due at tick `t` sits in slot
//! `t % SLOTS` with `t` beside it, so insertion is O(1) and an item further away than
//! one turn of the wheel simply waits for its round. [`TimerWheel::expire`] walks the
//! slots from where it last stopped up to `now` (at most one turn), handing out every
//! item due by then in the order of their ticks, items of one tick in the order they
//! came. An item is never handed out before its due time (due times round up to a
//! tick). Slots keep their capacity, so steady traffic allocates nothing.

use std::time::{Duration, Instant};

/// The wheel's resolution: fine next to the millisecond the data plane's poll sleeps
/// by, coarse enough that a one-second delay spans a turn of [`SLOTS`].
pub const TICK: Duration = Duration::from_micros(250);
/// Slots in one turn (about one second at [`TICK`]).
pub const SLOTS: usize = 4096;

#[derive(Debug)]
pub struct TimerWheel<T> {
    /// Tick 0: the time of the first insert.
    origin: Option<Instant>,
    slots: Vec<Vec<(u64, T)>>,
    /// The first tick not yet expired.
    cursor: u64,
    len: usize,
    /// The earliest tick held (a lower bound once items leave; tightened by expire).
    earliest: Option<u64>,
    /// Expired items being sorted, and a slot's keepers; kept for their capacity.
    due: Vec<(u64, T)>,
    spare: Vec<(u64, T)>,
}

impl<T> Default for TimerWheel<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> TimerWheel<T> {
    /// An empty wheel; its clock starts with the first [`TimerWheel::insert`].
    pub fn new() -> Self {
        TimerWheel {
            origin: None,
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            cursor: 0,
            len: 0,
            earliest: None,
            due: Vec::new(),
            spare: Vec::new(),
        }
    }

    fn tick_of(&self, at: Instant) -> u64 {
        let Some(origin) = self.origin else { return 0 };
        let nanos = at.saturating_duration_since(origin).as_nanos();
        (nanos / TICK.as_nanos()).min(u128::from(u64::MAX / 2)) as u64
    }

    fn instant_of(&self, tick: u64) -> Option<Instant> {
        Some(self.origin? + TICK * u32::try_from(tick).unwrap_or(u32::MAX))
    }

    /// Holds `item` until `due` (rounded up to a tick; past times mean the next
    /// expire), `now` being the time.
    pub fn insert(&mut self, now: Instant, item: T, due: Instant) {
        self.origin.get_or_insert(now);
        let exact = self.tick_of(due);
        let tick = if self.instant_of(exact).is_some_and(|t| t < due) {
            exact + 1
        } else {
            exact
        };
        // Past due: the last expired tick, so the next expire hands it out.
        let tick = tick.max(self.cursor.saturating_sub(1));
        self.slots[(tick % SLOTS as u64) as usize].push((tick, item));
        self.len += 1;
        self.earliest = Some(self.earliest.map_or(tick, |e| e.min(tick)));
    }

    /// Hands every item due by `now` to `out`, in due order.
    pub fn expire(&mut self, now: Instant, mut out: impl FnMut(T)) {
        let now_tick = self.tick_of(now);
        if self.len == 0 || self.earliest.is_none_or(|e| e > now_tick) {
            self.cursor = self
                .cursor
                .max(now_tick + 1)
                .min(self.earliest.unwrap_or(u64::MAX));
            return;
        }
        let start = self.cursor.min(self.earliest.unwrap_or(self.cursor));
        let turns = (now_tick + 1 - start).min(SLOTS as u64);
        for tick in start..start + turns {
            let slot = &mut self.slots[(tick % SLOTS as u64) as usize];
            if slot.is_empty() {
                continue;
            }
            std::mem::swap(slot, &mut self.spare);
            for (t, item) in self.spare.drain(..) {
                if t <= now_tick {
                    self.due.push((t, item));
                } else {
                    slot.push((t, item));
                }
            }
        }
        // Walking a whole turn mixes rounds: put them back in due order (stable).
        if turns == SLOTS as u64 {
            self.due.sort_by_key(|(t, _)| *t);
        }
        self.len -= self.due.len();
        self.cursor = now_tick + 1;
        self.earliest = self.find_earliest();
        for (_, item) in self.due.drain(..) {
            out(item);
        }
    }

    /// The earliest held tick: the first slot ahead holding an item of this round,
    /// else (only items beyond a turn) the least of all.
    fn find_earliest(&self) -> Option<u64> {
        if self.len == 0 {
            return None;
        }
        let horizon = self.cursor + SLOTS as u64;
        (self.cursor..horizon)
            .find_map(|tick| {
                let slot = &self.slots[(tick % SLOTS as u64) as usize];
                slot.iter().map(|(t, _)| *t).filter(|t| *t < horizon).min()
            })
            .or_else(|| self.slots.iter().flatten().map(|(t, _)| *t).min())
    }

    /// When the next item is due: the data plane's next wake-up for this wheel.
    pub fn deadline(&self) -> Option<Instant> {
        self.earliest.and_then(|t| self.instant_of(t))
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Takes every held item in due order (the wheel is being removed or replaced).
    pub fn drain(&mut self, out: impl FnMut(T)) {
        let mut all: Vec<(u64, T)> = self.slots.iter_mut().flat_map(|s| s.drain(..)).collect();
        all.sort_by_key(|(t, _)| *t);
        self.len = 0;
        self.earliest = None;
        all.into_iter().map(|(_, item)| item).for_each(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expired(w: &mut TimerWheel<u32>, now: Instant) -> Vec<u32> {
        let mut out = vec![];
        w.expire(now, |i| out.push(i));
        out
    }

    #[test]
    fn items_come_out_at_their_time_in_order() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new();
        let ms = Duration::from_millis(1);
        w.insert(t0, 3, t0 + 30 * ms);
        w.insert(t0, 1, t0 + 10 * ms);
        w.insert(t0, 2, t0 + 10 * ms);
        w.insert(t0, 4, t0 + 3000 * ms); // three turns away
        assert_eq!(w.len(), 4);
        assert_eq!(w.deadline(), Some(t0 + 10 * ms));
        assert_eq!(expired(&mut w, t0 + 9 * ms), Vec::<u32>::new());
        assert_eq!(expired(&mut w, t0 + 10 * ms), vec![1, 2]);
        assert_eq!(w.deadline(), Some(t0 + 30 * ms));
        assert_eq!(expired(&mut w, t0 + 2000 * ms), vec![3]);
        assert_eq!(w.deadline(), Some(t0 + 3000 * ms));
        assert_eq!(expired(&mut w, t0 + 2999 * ms), Vec::<u32>::new());
        assert_eq!(expired(&mut w, t0 + 3000 * ms), vec![4]);
        assert!(w.is_empty());
        assert_eq!(w.deadline(), None);
    }

    #[test]
    fn never_early_and_late_sleepers_get_everything_in_order() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new();
        // Due 100 µs in: rounds up to the 250 µs tick, not down to 0.
        w.insert(t0, 0, t0 + Duration::from_micros(100));
        assert_eq!(expired(&mut w, t0), Vec::<u32>::new());
        assert_eq!(w.deadline(), Some(t0 + TICK));
        // Items spread over several turns, taken in one late call: in due order.
        for i in 1..50u32 {
            w.insert(t0, i, t0 + Duration::from_millis(u64::from(i) * 97));
        }
        assert_eq!(
            expired(&mut w, t0 + Duration::from_secs(60)),
            (0..50).collect::<Vec<_>>()
        );
        // A due time in the past comes out at the next expire.
        w.insert(t0, 7, t0);
        assert_eq!(expired(&mut w, t0 + Duration::from_secs(60)), vec![7]);
    }

    #[test]
    fn a_steady_stream_keeps_its_order() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new();
        let mut out = vec![];
        let mut now = t0;
        for i in 0..10_000u32 {
            now += Duration::from_micros(37);
            w.insert(now, i, now + Duration::from_millis(50));
            if i % 7 == 0 {
                w.expire(now, |x| out.push(x));
            }
        }
        w.expire(now + Duration::from_secs(1), |x| out.push(x));
        assert_eq!(out, (0..10_000).collect::<Vec<_>>());
        let mut left = vec![];
        w.insert(now, 1, now + Duration::from_secs(5));
        w.insert(now, 0, now + Duration::from_secs(2));
        w.drain(|x| left.push(x));
        assert_eq!((left, w.len()), (vec![0, 1], 0));
    }
}
