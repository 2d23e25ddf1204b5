//! The memory-speed limit: two guests in one process and a forwarder thread that
//! copies each frame once from guest A's TX ring into guest B's RX ring, batching and
//! notifying as a good vhost-user back-end would, with no switch in between.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

use super::frames::NET_HDR;
use super::frontend::{Queue, Ram};
use super::memory::Region;
use super::ring::Device;

/// Descriptors moved between publishes.
const BATCH: usize = 32;

/// The device side of one queue: its ring in guest memory and its two eventfds.
struct End {
    mem: Arc<Region>,
    dev: Device,
    kick: EventFd,
    call: EventFd,
}

impl End {
    fn of(q: &Queue, event_idx: bool) -> std::io::Result<End> {
        Ok(End {
            mem: q.mem.clone(),
            dev: Device::new(q.ring.layout(), event_idx),
            kick: q.kick.try_clone()?,
            call: q.call.try_clone()?,
        })
    }

    fn publish(&mut self) {
        if self.dev.publish(&self.mem) {
            let _ = self.call.write(1);
        }
    }
}

/// The forwarder between guest A's TX queue and guest B's RX queue.
pub struct Forwarder {
    from: End,
    to: End,
}

/// A's TX queue, B's RX queue (their drivers' ends) and the forwarder between them.
pub fn pair(size: u16, event_idx: bool) -> std::io::Result<(Queue, Queue, Forwarder)> {
    let (_, a_tx) = Ram::new(size)?.queues(event_idx)?;
    let (b_rx, _) = Ram::new(size)?.queues(event_idx)?;
    let fwd = Forwarder {
        from: End::of(&a_tx, event_idx)?,
        to: End::of(&b_rx, event_idx)?,
    };
    Ok((a_tx, b_rx, fwd))
}

impl Forwarder {
    /// Forwards until `stop`; returns frames forwarded, frames dropped and the CPU
    /// seconds the forwarding took.
    pub fn run(self, stop: &AtomicBool) -> (u64, u64, f64) {
        let Forwarder { mut from, mut to } = self;
        let (mut forwarded, mut dropped) = (0u64, 0u64);
        while !stop.load(Ordering::Relaxed) {
            let mut moved = 0;
            while moved < BATCH {
                let Some((rx_head, rx)) = to.dev.pop(&to.mem) else {
                    break;
                };
                let Some((tx_head, tx)) = from.dev.pop(&from.mem) else {
                    to.dev.unpop();
                    break;
                };
                let src = from.mem.slice(tx.addr, tx.len as usize);
                let dst = to.mem.slice_mut(rx.addr, rx.len as usize);
                let written = match (src, dst) {
                    (Some(src), Some(dst)) if src.len() <= dst.len() && src.len() >= NET_HDR => {
                        dst[..src.len()].copy_from_slice(src);
                        dst[10..12].copy_from_slice(&1u16.to_le_bytes());
                        forwarded += 1;
                        src.len() as u32
                    }
                    _ => {
                        dropped += 1;
                        0
                    }
                };
                from.dev.push(&from.mem, tx_head, 0);
                to.dev.push(&to.mem, rx_head, written);
                moved += 1;
            }
            from.publish();
            to.publish();
            if moved == BATCH {
                continue;
            }
            // Idle or blocked: ask both sides for kicks, look again, then sleep.
            from.dev.arm(&from.mem);
            to.dev.arm(&to.mem);
            if !(from.dev.pending(&from.mem) && to.dev.pending(&to.mem)) {
                let mut fds = [&from.kick, &to.kick].map(|k| libc::pollfd {
                    fd: k.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
                // SAFETY: two valid pollfds.
                unsafe { libc::poll(fds.as_mut_ptr(), 2, 20) };
                let _ = from.kick.read();
                let _ = to.kick.read();
            }
            from.dev.disarm(&from.mem);
            to.dev.disarm(&to.mem);
        }
        (forwarded, dropped, super::traffic::thread_cpu_secs())
    }
}
