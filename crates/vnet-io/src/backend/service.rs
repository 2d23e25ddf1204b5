//! Built-in services (DHCP; NAT with its DNS forwarder) attached as ports.
//!
//! A service sees exactly the frames a VM on its port would see and answers with
//! frames. Frames the switch queues for the port go into [`Service::receive`]; what the
//! service says back waits in an outbox that the data plane reads like any other port's
//! input.
//!
//! Where services touch I/O: their protocol logic is sans-I/O (`vnet-dhcp`,
//! `vnet-nat`), but the [`Service`] implementations here are its shells and do I/O
//! inside these calls, never blocking: the DHCP service writes its lease file, the NAT
//! device writes to, connects and closes host sockets as the guest's frames and its
//! timers ask. Only reading needs the data plane's help: a service that owns host
//! sockets (NAT) also implements [`HostSockets`], gathering them under one fd of its own
//! (an epoll fd) that the data plane watches with the ports'; when it is readable the
//! port reads them ([`HostSockets::readable`]) while it is drained, so host sockets
//! never block the data plane and need no thread.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::Instant;

use vnet_core::switch::DropCause;
use vnet_core::wire::offload::VirtioNetHdr;
use vnet_model::PortKind;

use super::{send_each, Backend, Received, Sent, WatchedFd};
use crate::frame::FrameBuf;

/// A frame a service sends into its vnet.
#[derive(Debug)]
pub enum Outgoing {
    /// A plain frame in bytes of its own: copied into the port's buffer.
    Bytes(Vec<u8>),
    /// A frame built in a [`FrameBuf::large`] buffer, offload metadata included (only
    /// services that declare [`Service::offloads`] leave offload work undone): handed
    /// to the switch as it is, the port's empty buffer going back to the service
    /// ([`Service::recycle`]). This is how bulk data avoids a copy.
    Buf(FrameBuf),
}

impl From<Vec<u8>> for Outgoing {
    fn from(frame: Vec<u8>) -> Self {
        Outgoing::Bytes(frame)
    }
}

/// A service as the data plane drives it: frames in, frames out, timers. (Its shell
/// may write files and sockets in these calls; see the module docs.)
pub trait Service {
    /// For `vnet port ls`, e.g. "dhcp 192.168.101.254".
    fn description(&self) -> String;
    /// Whether the service takes and makes frames with offload metadata (as
    /// [`Backend::offloads`]); others see only plain, fully checksummed frames.
    fn offloads(&self) -> bool {
        false
    }

    /// One frame delivered to the service's port, with its offload metadata (all
    /// zeros unless the service [`offloads`](Service::offloads)); replies are pushed
    /// onto `out`. `false` means the frame was addressed to the service but malformed.
    fn receive(&mut self, frame: &[u8], offload: &VirtioNetHdr, out: &mut Vec<Outgoing>) -> bool;
    /// Runs timers that are due; output is pushed onto `out`.
    fn poll(&mut self, now: Instant, out: &mut Vec<Outgoing>);
    /// An empty large buffer in return for an [`Outgoing::Buf`], to build the next
    /// frame in.
    fn recycle(&mut self, _buf: FrameBuf) {}
    /// When `poll` next has work, if ever.
    fn deadline(&self) -> Option<Instant>;
    /// The service's host sockets, if it reads any (NAT); `None` for services that
    /// only answer frames (DHCP).
    fn host_sockets(&mut self) -> Option<&mut dyn HostSockets> {
        None
    }
}

/// The sockets a service reads from the host, gathered under one fd the data plane
/// watches: the one place a service waits for the OS.
pub trait HostSockets {
    /// The fd to watch (edge-triggered), owned by the service and open as long as it
    /// lives.
    fn watch_fd(&self) -> RawFd;
    /// The watched fd may be readable: read what is waiting and push the resulting
    /// frames onto `out`. Pushing nothing means nothing is left to read, so the
    /// service must keep track of sockets it did not drain and finish them on later
    /// calls.
    fn readable(&mut self, now: Instant, out: &mut Vec<Outgoing>);
}

/// A port whose client is a [`Service`], shared with the control plane's commands.
pub struct ServicePort<S: Service> {
    service: Rc<RefCell<S>>,
    outbox: VecDeque<Outgoing>,
    scratch: Vec<Outgoing>,
    watched: Option<WatchedFd>,
    offloads: bool,
    /// Frames lost to a full outbox since the port was last read.
    overflow: usize,
}

/// Most frames a service port holds for the switch (it reads them on its next turn).
const OUTBOX_LIMIT: usize = 4096;

impl<S: Service> ServicePort<S> {
    pub fn new(service: Rc<RefCell<S>>) -> Self {
        let watched = service
            .borrow_mut()
            .host_sockets()
            .map(|s| WatchedFd(s.watch_fd()));
        let offloads = service.borrow().offloads();
        ServicePort {
            service,
            outbox: VecDeque::new(),
            scratch: Vec::new(),
            watched,
            offloads,
            overflow: 0,
        }
    }

    /// Moves what the service said into the outbox, within [`OUTBOX_LIMIT`]: a service
    /// that outruns the switch loses frames (counted when the port is next read), it
    /// does not grow without bound.
    fn collect(&mut self) {
        let room = OUTBOX_LIMIT.saturating_sub(self.outbox.len());
        if self.scratch.len() > room {
            self.overflow += self.scratch.len() - room;
            self.scratch.truncate(room);
        }
        self.outbox.extend(self.scratch.drain(..));
    }
}

impl<S: Service> Backend for ServicePort<S> {
    fn kind(&self) -> PortKind {
        PortKind::Service
    }

    fn description(&self) -> String {
        self.service.borrow().description()
    }

    fn offloads(&self) -> bool {
        self.offloads
    }

    fn source(&mut self) -> Option<&mut dyn mio::event::Source> {
        self.watched
            .as_mut()
            .map(|w| w as &mut dyn mio::event::Source)
    }

    fn recv(&mut self, buf: &mut FrameBuf) -> Received {
        if self.outbox.is_empty() && self.watched.is_some() {
            if let Some(sockets) = self.service.borrow_mut().host_sockets() {
                sockets.readable(Instant::now(), &mut self.scratch);
            }
            self.collect();
        }
        if self.overflow > 0 {
            self.overflow -= 1;
            let why = "the service outran the switch (its outbox was full)";
            return Received::Dropped(DropCause::QueueFull, why.to_string());
        }
        match self.outbox.pop_front() {
            Some(Outgoing::Bytes(frame)) if frame.len() <= buf.recv_space().len() => {
                buf.fill(&frame);
                Received::Frame
            }
            Some(Outgoing::Bytes(frame)) => Received::Dropped(
                DropCause::Oversize,
                format!("service produced a {}-byte frame", frame.len()),
            ),
            Some(Outgoing::Buf(mut full)) => {
                std::mem::swap(buf, &mut full);
                self.service.borrow_mut().recycle(full);
                Received::Frame
            }
            None => Received::WouldBlock,
        }
    }

    fn send_batch(&mut self, frames: &[FrameBuf]) -> (usize, Sent) {
        send_each(frames, |f| self.send_one(f))
    }

    fn has_input(&self) -> bool {
        !self.outbox.is_empty()
    }

    fn deadline(&self) -> Option<Instant> {
        self.service.borrow().deadline()
    }

    fn tick(&mut self, now: Instant) {
        self.service.borrow_mut().poll(now, &mut self.scratch);
        self.collect();
    }
}

impl<S: Service> ServicePort<S> {
    /// Hands one frame to the service.
    fn send_one(&mut self, frame: &FrameBuf) -> Sent {
        let accepted =
            self.service
                .borrow_mut()
                .receive(frame.frame(), &frame.offload, &mut self.scratch);
        self.collect();
        if accepted {
            Sent::Done
        } else {
            Sent::Dropped(DropCause::Malformed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Says `n` frames on every timer tick.
    struct Chatty(usize);

    impl Service for Chatty {
        fn description(&self) -> String {
            "chatty".into()
        }
        fn receive(&mut self, _: &[u8], _: &VirtioNetHdr, _: &mut Vec<Outgoing>) -> bool {
            true
        }
        fn poll(&mut self, _: Instant, out: &mut Vec<Outgoing>) {
            out.extend((0..self.0).map(|i| Outgoing::from(vec![i as u8; 60])));
        }
        fn deadline(&self) -> Option<Instant> {
            None
        }
    }

    #[test]
    fn a_service_that_outruns_the_switch_loses_frames_counted_not_memory() {
        let mut port = ServicePort::new(Rc::new(RefCell::new(Chatty(OUTBOX_LIMIT + 10))));
        port.tick(Instant::now());
        let mut buf = crate::frame::BufPool::new(1514).get();
        let (mut frames, mut lost) = (0, 0);
        loop {
            match port.recv(&mut buf) {
                Received::Frame => frames += 1,
                Received::Dropped(DropCause::QueueFull, _) => lost += 1,
                Received::WouldBlock => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!((frames, lost), (OUTBOX_LIMIT, 10));
    }
}
