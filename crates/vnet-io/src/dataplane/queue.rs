//! A port's egress queue, bounded in frames and in bytes.
//!
//! Frames alone are not a bound once GSO super-frames pass (512 of them are 32 MiB);
//! bytes alone would let a flood of minimum-size frames queue without end. Either limit
//! drops the next frame, so a port whose client stops reading costs at most
//! [`QUEUE_BYTES`] of memory.

use std::collections::VecDeque;

use crate::frame::FrameBuf;

/// Frames a port's egress queue holds before it drops.
pub const QUEUE_CAPACITY: usize = 512;
/// Bytes of frames a port's egress queue holds before it drops: a few milliseconds of
/// line rate, enough that TCP sees no tail drops while the client keeps reading.
pub const QUEUE_BYTES: usize = 4 << 20;

#[derive(Debug, Default)]
pub struct EgressQueue {
    frames: VecDeque<FrameBuf>,
    bytes: usize,
}

impl EgressQueue {
    /// Queues `buf`, or gives it back when either limit is reached.
    pub fn push(&mut self, buf: FrameBuf) -> Result<(), FrameBuf> {
        if self.frames.len() >= QUEUE_CAPACITY || self.bytes + buf.len() > QUEUE_BYTES {
            return Err(buf);
        }
        self.bytes += buf.len();
        self.frames.push_back(buf);
        Ok(())
    }

    /// Up to `max` frames from the front, for one batched send: fewer when the ring
    /// buffer wraps, none only when the queue is empty.
    pub fn front_batch(&self, max: usize) -> &[FrameBuf] {
        let (head, _) = self.frames.as_slices();
        &head[..head.len().min(max)]
    }

    pub fn pop_front(&mut self) -> Option<FrameBuf> {
        let buf = self.frames.pop_front()?;
        self.bytes -= buf.len();
        Some(buf)
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Frees the storage a burst grew while the queue is empty (its ring of up to
    /// [`QUEUE_CAPACITY`] handles): an idle port holds none. Returns the bytes freed.
    pub fn release_idle(&mut self) -> usize {
        if !self.frames.is_empty() || self.frames.capacity() == 0 {
            return 0;
        }
        let freed = self.frames.capacity() * std::mem::size_of::<FrameBuf>();
        self.frames = VecDeque::new();
        freed
    }

    /// Empties the queue (a port going away), handing back the buffers.
    pub fn drain(&mut self) -> impl Iterator<Item = FrameBuf> + '_ {
        self.bytes = 0;
        self.frames.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::BufPool;

    fn frame(pool: &mut BufPool, len: usize) -> FrameBuf {
        let mut b = pool.get_for(len);
        b.fill(&vec![0; len]);
        b
    }

    #[test]
    fn either_limit_drops_and_popping_makes_room() {
        let mut pool = BufPool::new(1514);
        let mut q = EgressQueue::default();
        for _ in 0..QUEUE_CAPACITY {
            assert!(q.push(frame(&mut pool, 60)).is_ok());
        }
        assert!(q.push(frame(&mut pool, 60)).is_err(), "frame limit");
        while q.pop_front().is_some() {}
        let big = 65_000;
        for _ in 0..QUEUE_BYTES / big {
            assert!(q.push(frame(&mut pool, big)).is_ok());
        }
        assert!(q.push(frame(&mut pool, big)).is_err(), "byte limit");
        assert!(q.len() < QUEUE_CAPACITY);
        q.pop_front();
        assert!(q.push(frame(&mut pool, big)).is_ok());
        assert_eq!(q.drain().count(), QUEUE_BYTES / big);
        assert!(
            q.push(frame(&mut pool, big)).is_ok(),
            "drained: bytes back to 0"
        );
        q.release_idle();
        assert!(q.frames.capacity() > 0, "not while frames wait");
        q.pop_front();
        q.release_idle();
        assert_eq!(q.frames.capacity(), 0, "an empty queue holds no storage");
    }

    #[test]
    fn front_batches_hand_out_every_frame_once_in_order() {
        let mut pool = BufPool::new(1514);
        let mut q = EgressQueue::default();
        let mut numbered = |i: u8| frame(&mut pool, 60 + i as usize);
        for i in 0..20 {
            q.push(numbered(i)).unwrap();
        }
        for _ in 0..15 {
            q.pop_front();
        }
        // Room freed at the front: later pushes may wrap around the ring's end.
        for i in 20..60 {
            q.push(numbered(i)).unwrap();
        }
        let mut seen = Vec::new();
        loop {
            let batch = q.front_batch(8);
            if batch.is_empty() {
                break;
            }
            assert!(batch.len() <= 8);
            seen.extend(batch.iter().map(|b| b.len() - 60));
            for _ in 0..batch.len() {
                q.pop_front();
            }
        }
        assert_eq!(seen, (15..60).collect::<Vec<usize>>());
        assert_eq!(q.len(), 0);
    }
}
