//! Split virtqueues (virtio 1.x §2.7), both sides: the driver a guest runs and the
//! device the loopback forwarder runs. One descriptor per buffer (the guest never
//! chains), descriptor `i` always names buffer `i`.
//!
//! Notifications follow the spec: with `VIRTIO_RING_F_EVENT_IDX` each side says in the
//! other's ring up to which index it wants to hear (`used_event`, `avail_event`), else
//! it sets the `NO_INTERRUPT`/`NO_NOTIFY` flag while busy.

use std::sync::atomic::{fence, Ordering};

use super::memory::Region;

pub const DESC_F_WRITE: u16 = 2;
const AVAIL_F_NO_INTERRUPT: u16 = 1;
const USED_F_NO_NOTIFY: u16 = 1;

/// Where one queue's three parts are, as guest physical addresses.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
}

impl Layout {
    /// A queue of `size` entries starting at `base` (16-aligned).
    pub fn at(base: u64, size: u16) -> Layout {
        let n = u64::from(size);
        let desc = base;
        let avail = desc + 16 * n;
        let used = (avail + 6 + 2 * n + 3) & !3;
        Layout {
            size,
            desc,
            avail,
            used,
        }
    }

    /// Bytes the queue takes, rounded up to 16 for the next one.
    pub fn bytes(size: u16) -> u64 {
        let l = Layout::at(0, size);
        (l.used + 6 + 8 * u64::from(size) + 15) & !15
    }

    fn used_event(&self) -> u64 {
        self.avail + 4 + 2 * u64::from(self.size)
    }

    fn avail_event(&self) -> u64 {
        self.used + 4 + 8 * u64::from(self.size)
    }
}

/// virtio's `vring_need_event`: whether moving an index from `old` to `new` passed
/// `event`, the index after which the other side asked to be told.
pub fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// One descriptor table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

fn write_desc(mem: &Region, l: &Layout, id: u16, d: Desc) {
    let at = mem
        .slice_mut(l.desc + 16 * u64::from(id), 16)
        .expect("descriptor table inside the region");
    at[0..8].copy_from_slice(&d.addr.to_le_bytes());
    at[8..12].copy_from_slice(&d.len.to_le_bytes());
    at[12..14].copy_from_slice(&d.flags.to_le_bytes());
    at[14..16].copy_from_slice(&d.next.to_le_bytes());
}

fn read_desc(mem: &Region, l: &Layout, id: u16) -> Desc {
    let at = mem
        .slice(l.desc + 16 * u64::from(id % l.size), 16)
        .expect("descriptor table inside the region");
    Desc {
        addr: u64::from_le_bytes(at[0..8].try_into().expect("8 bytes")),
        len: u32::from_le_bytes(at[8..12].try_into().expect("4 bytes")),
        flags: u16::from_le_bytes(at[12..14].try_into().expect("2 bytes")),
        next: u16::from_le_bytes(at[14..16].try_into().expect("2 bytes")),
    }
}

/// The guest's side of a queue.
pub struct Driver {
    l: Layout,
    event_idx: bool,
    /// Next avail index to fill (published by `publish`).
    avail_idx: u16,
    /// avail.idx as last published.
    published: u16,
    last_used: u16,
}

impl Driver {
    pub fn new(mem: &Region, l: Layout, event_idx: bool) -> Driver {
        // A fresh queue: zeroed rings, interrupts wanted until `disarm`.
        if let Some(s) = mem.slice_mut(l.desc, Layout::bytes(l.size) as usize) {
            s.fill(0);
        }
        Driver {
            l,
            event_idx,
            avail_idx: 0,
            published: 0,
            last_used: 0,
        }
    }

    pub fn layout(&self) -> Layout {
        self.l
    }

    /// Makes buffer `id` (`len` bytes at `addr`) available; `write` for receive buffers.
    pub fn add(&mut self, mem: &Region, id: u16, addr: u64, len: u32, write: bool) {
        let flags = if write { DESC_F_WRITE } else { 0 };
        write_desc(
            mem,
            &self.l,
            id,
            Desc {
                addr,
                len,
                flags,
                next: 0,
            },
        );
        let slot = self.l.avail + 4 + 2 * u64::from(self.avail_idx % self.l.size);
        mem.u16_at(slot).store(id, Ordering::Relaxed);
        self.avail_idx = self.avail_idx.wrapping_add(1);
    }

    /// Publishes what `add` made available; `true` if the device wants a kick.
    pub fn publish(&mut self, mem: &Region) -> bool {
        let (old, new) = (self.published, self.avail_idx);
        if old == new {
            return false;
        }
        mem.u16_at(self.l.avail + 2).store(new, Ordering::Release);
        self.published = new;
        fence(Ordering::SeqCst);
        if self.event_idx {
            let event = mem.u16_at(self.l.avail_event()).load(Ordering::Acquire);
            need_event(event, new, old)
        } else {
            mem.u16_at(self.l.used).load(Ordering::Acquire) & USED_F_NO_NOTIFY == 0
        }
    }

    /// The next buffer the device is done with: its id and the bytes it wrote.
    pub fn used(&mut self, mem: &Region) -> Option<(u16, u32)> {
        let idx = mem.u16_at(self.l.used + 2).load(Ordering::Acquire);
        if idx == self.last_used {
            return None;
        }
        let elem = self.l.used + 4 + 8 * u64::from(self.last_used % self.l.size);
        let id = mem.u32_at(elem).load(Ordering::Relaxed);
        let len = mem.u32_at(elem + 4).load(Ordering::Relaxed);
        self.last_used = self.last_used.wrapping_add(1);
        Some((id as u16, len))
    }

    /// Whether the device has handed back buffers `used` has not returned yet.
    pub fn pending(&self, mem: &Region) -> bool {
        mem.u16_at(self.l.used + 2).load(Ordering::Acquire) != self.last_used
    }

    /// Asks for an interrupt at the next used buffer; the caller then checks `pending`
    /// once more before it sleeps.
    pub fn arm(&mut self, mem: &Region) {
        if self.event_idx {
            mem.u16_at(self.l.used_event())
                .store(self.last_used, Ordering::Release);
        } else {
            mem.u16_at(self.l.avail).store(0, Ordering::Release);
        }
        fence(Ordering::SeqCst);
    }

    /// No interrupts while the guest is busy polling the used ring anyway.
    pub fn disarm(&mut self, mem: &Region) {
        if !self.event_idx {
            mem.u16_at(self.l.avail)
                .store(AVAIL_F_NO_INTERRUPT, Ordering::Release);
        }
        // With EVENT_IDX a used_event left behind suppresses interrupts by itself.
    }
}

/// The device's side of a queue, for the loopback forwarder.
pub struct Device {
    l: Layout,
    event_idx: bool,
    next_avail: u16,
    used_idx: u16,
    signalled: u16,
}

impl Device {
    pub fn new(l: Layout, event_idx: bool) -> Device {
        Device {
            l,
            event_idx,
            next_avail: 0,
            used_idx: 0,
            signalled: 0,
        }
    }

    /// The next available descriptor: its head index and the descriptor.
    pub fn pop(&mut self, mem: &Region) -> Option<(u16, Desc)> {
        let idx = mem.u16_at(self.l.avail + 2).load(Ordering::Acquire);
        if idx == self.next_avail {
            return None;
        }
        let slot = self.l.avail + 4 + 2 * u64::from(self.next_avail % self.l.size);
        let head = mem.u16_at(slot).load(Ordering::Relaxed);
        self.next_avail = self.next_avail.wrapping_add(1);
        Some((head, read_desc(mem, &self.l, head)))
    }

    /// Whether the driver made buffers available that `pop` has not returned yet.
    pub fn pending(&self, mem: &Region) -> bool {
        mem.u16_at(self.l.avail + 2).load(Ordering::Acquire) != self.next_avail
    }

    /// Puts back the last popped descriptor (no room to use it now).
    pub fn unpop(&mut self) {
        self.next_avail = self.next_avail.wrapping_sub(1);
    }

    /// Hands `head` back with `len` bytes written (visible after `publish`).
    pub fn push(&mut self, mem: &Region, head: u16, len: u32) {
        let elem = self.l.used + 4 + 8 * u64::from(self.used_idx % self.l.size);
        mem.u32_at(elem).store(u32::from(head), Ordering::Relaxed);
        mem.u32_at(elem + 4).store(len, Ordering::Relaxed);
        self.used_idx = self.used_idx.wrapping_add(1);
    }

    /// Publishes the used buffers; `true` if the driver wants an interrupt.
    pub fn publish(&mut self, mem: &Region) -> bool {
        let (old, new) = (self.signalled, self.used_idx);
        if old == new {
            return false;
        }
        mem.u16_at(self.l.used + 2).store(new, Ordering::Release);
        self.signalled = new;
        fence(Ordering::SeqCst);
        if self.event_idx {
            let event = mem.u16_at(self.l.used_event()).load(Ordering::Acquire);
            need_event(event, new, old)
        } else {
            mem.u16_at(self.l.avail).load(Ordering::Acquire) & AVAIL_F_NO_INTERRUPT == 0
        }
    }

    /// Asks for a kick at the next available buffer (then check `pop` once more).
    pub fn arm(&mut self, mem: &Region) {
        if self.event_idx {
            mem.u16_at(self.l.avail_event())
                .store(self.next_avail, Ordering::Release);
        } else {
            mem.u16_at(self.l.used).store(0, Ordering::Release);
        }
        fence(Ordering::SeqCst);
    }

    /// No kicks while the forwarder is busy.
    pub fn disarm(&mut self, mem: &Region) {
        if !self.event_idx {
            mem.u16_at(self.l.used)
                .store(USED_F_NO_NOTIFY, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_index_arithmetic_wraps() {
        assert!(need_event(0, 1, 0));
        assert!(
            !need_event(5, 5, 0),
            "event 5 is passed only when idx goes beyond 5"
        );
        assert!(need_event(5, 6, 5));
        assert!(need_event(u16::MAX, 0, u16::MAX), "across the wrap");
        assert!(!need_event(100, 10, 5), "an old event suppresses");
    }

    #[test]
    fn a_buffer_goes_round_driver_device_driver_with_notifications_as_asked() {
        for event_idx in [false, true] {
            let mem = Region::new(1 << 16).unwrap();
            let l = Layout::at(0, 4);
            let mut drv = Driver::new(&mem, l, event_idx);
            let mut dev = Device::new(l, event_idx);
            let buf = Layout::bytes(4);
            mem.slice_mut(buf, 3).unwrap().copy_from_slice(b"abc");
            drv.add(&mem, 2, buf, 3, false);
            assert!(drv.publish(&mem), "a fresh device wants the first kick");
            let (head, d) = dev.pop(&mem).unwrap();
            assert_eq!((head, d.addr, d.len, d.flags), (2, buf, 3, 0));
            assert!(dev.pop(&mem).is_none());
            dev.disarm(&mem);
            drv.add(&mem, 1, buf, 3, false);
            // Without EVENT_IDX the flag says no; with it, avail_event (0) was passed
            // already by the first publish, so no kick either.
            assert!(
                !drv.publish(&mem),
                "event_idx {event_idx}: busy device, no kick"
            );
            dev.push(&mem, head, 0);
            drv.arm(&mem);
            assert!(dev.publish(&mem), "an armed driver wants the interrupt");
            assert_eq!(drv.used(&mem), Some((2, 0)));
            assert_eq!(drv.used(&mem), None);
            drv.disarm(&mem);
            let (head, _) = dev.pop(&mem).unwrap();
            dev.push(&mem, head, 0);
            assert!(
                !dev.publish(&mem),
                "event_idx {event_idx}: a busy driver is not interrupted"
            );
            assert_eq!(drv.used(&mem), Some((1, 0)));
        }
    }

    #[test]
    fn indices_wrap_around_the_ring_many_times() {
        let mem = Region::new(1 << 16).unwrap();
        let l = Layout::at(0, 8);
        let mut drv = Driver::new(&mem, l, true);
        let mut dev = Device::new(l, true);
        for round in 0..70_000u32 {
            let id = (round % 8) as u16;
            drv.add(&mem, id, 0x1000, 64, true);
            drv.publish(&mem);
            let (head, d) = dev.pop(&mem).unwrap();
            assert_eq!((head, d.flags), (id, DESC_F_WRITE));
            dev.push(&mem, head, round);
            dev.publish(&mem);
            assert_eq!(drv.used(&mem), Some((id, round)));
        }
    }
}
