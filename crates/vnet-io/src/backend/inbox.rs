//! Frames read for a port from a socket it shares with other ports: the vnet's dgram
//! socket (one port per peer address) and a NIC's uplink socket (one port per vnet
//! bridged to it). Whoever reads the shared socket tells the frames apart and
//! [delivers](super::Backend::deliver) each to its port's inbox; the port's
//! [`recv`](super::Backend::recv) then hands them to the switch like any other port's
//! input, so every frame enters a vnet through `Backend::recv`.
//!
//! No copy: a delivered frame is swapped into the buffer `recv` is given, and that
//! (empty) buffer goes back to the reader with the next delivery, for its pool.

use std::collections::VecDeque;

use super::Received;
use crate::frame::FrameBuf;

/// Most frames an inbox holds. The data plane drains an inbox in the turn it fills it
/// (a shared socket gives at most 64 frames a turn), so this is only a bound.
pub const INBOX_CAPACITY: usize = 256;

#[derive(Default)]
pub(crate) struct Inbox {
    frames: VecDeque<FrameBuf>,
    /// Buffers `recv` swapped out, returned one per delivery.
    empties: Vec<FrameBuf>,
}

impl Inbox {
    /// Keeps `frame` for `recv`, giving back an empty buffer if there is one; `Err`
    /// with the frame when the inbox is full.
    pub fn deliver(&mut self, frame: FrameBuf) -> Result<Option<FrameBuf>, FrameBuf> {
        if self.frames.len() >= INBOX_CAPACITY {
            return Err(frame);
        }
        self.frames.push_back(frame);
        Ok(self.empties.pop())
    }

    /// The oldest delivered frame, swapped into `buf`.
    pub fn recv(&mut self, buf: &mut FrameBuf) -> Received {
        match self.frames.pop_front() {
            Some(mut frame) => {
                std::mem::swap(buf, &mut frame);
                self.empties.push(frame);
                Received::Frame
            }
            None => Received::WouldBlock,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::BufPool;

    #[test]
    fn delivered_frames_come_out_in_order_and_buffers_go_back() {
        let mut pool = BufPool::new(1514);
        let mut inbox = Inbox::default();
        for i in 0..3u8 {
            let mut frame = pool.get();
            frame.fill(&[i; 60]);
            assert!(matches!(inbox.deliver(frame), Ok(None)));
        }
        for i in 0..3u8 {
            let mut buf = pool.get();
            assert!(matches!(inbox.recv(&mut buf), Received::Frame));
            assert_eq!(buf.frame(), &[i; 60]);
        }
        let mut buf = pool.get();
        assert!(matches!(inbox.recv(&mut buf), Received::WouldBlock));
        // The next delivery brings back one of the buffers recv swapped out.
        assert!(matches!(inbox.deliver(pool.get()), Ok(Some(_))));
    }

    #[test]
    fn a_full_inbox_refuses_the_frame() {
        let mut pool = BufPool::new(1514);
        let mut inbox = Inbox::default();
        for _ in 0..INBOX_CAPACITY {
            assert!(inbox.deliver(pool.get()).is_ok());
        }
        assert!(inbox.deliver(pool.get()).is_err());
    }
}
