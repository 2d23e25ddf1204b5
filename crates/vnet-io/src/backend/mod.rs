//! Port backends: how frames get in and out of one port.
//!
//! Every backend speaks one client protocol and turns it into whole frames. The data
//! plane drives them all the same way: `recv` until `WouldBlock`, `send_batch` until
//! `WouldBlock`. Backends never block and never allocate per frame.
//!
//! [`Backend`] says three things about a port: what it is (kind, [`Identity`],
//! offloads), how it moves frames (`recv`, `send_batch`, answers to requests) and its
//! timers (`deadline`, `tick`). Every frame enters a vnet through `recv`: ports on a
//! shared socket (dgram peers, uplinks) are [delivered](Backend::deliver) what the
//! socket's reader tells apart as theirs.

pub mod classic;
pub mod dgram;
pub mod inbox;
pub mod interface;
mod packet;
pub mod seqpacket;
pub mod service;
pub mod stream;
pub mod tap;
pub mod uplink;
pub mod vde;
pub mod vhost_user;
pub mod vxlan;

use vnet_core::switch::DropCause;
use vnet_core::wire::seqpacket::{Reply, Request};
use vnet_model::{LinkState, PortKind};

use crate::frame::FrameBuf;

/// What one receive attempt produced.
#[derive(Debug)]
pub enum Received {
    /// A frame is in the buffer (still unchecked: the switch judges it).
    Frame,
    /// A control request (vnet API); answer it with [`Backend::answer`].
    Request(Request),
    /// Input was discarded but the port is fine (e.g. a skipped oversize record).
    Dropped(DropCause, String),
    /// Nothing more to read now.
    WouldBlock,
    /// The client is gone or broke the protocol beyond repair; close the port.
    Closed(String),
}

/// What one send attempt did.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    /// The frame is gone (delivered, or owned by the backend's output buffer).
    Done,
    /// The client cannot take it now; keep the frame and retry later.
    WouldBlock,
    /// The frame is gone but was not delivered (a service rejected it, a link is down).
    Dropped(DropCause),
    /// The client is gone; close the port.
    Closed(String),
}

/// Frames the data plane offers [`Backend::send_batch`] at once.
pub const TX_BATCH: usize = 32;

/// Who a port's client is, beyond its kind: what `vnet port ls` and the control
/// commands look ports up by.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Identity<'a> {
    /// The host interface behind the port (TAP, uplink).
    pub ifname: Option<&'a str>,
    /// A vhost-user port's name (`--vhost-user NAME`), unique within its vnet.
    pub vhost_user_name: Option<&'a str>,
}

/// One port's I/O: what the port is, how it moves frames, and its timers.
pub trait Backend {
    // What the port is.

    fn kind(&self) -> PortKind;

    /// Names and ids of the client; none by default.
    fn identity(&self) -> Identity<'_> {
        Identity::default()
    }

    /// Who is attached, for `vnet port ls`.
    fn description(&self) -> String;

    /// Whether the port takes frames with offload metadata as they are (GSO
    /// super-frames, partial checksums) and may produce them. Others get ordinary frames:
    /// the data plane segments and checksums for them.
    fn offloads(&self) -> bool {
        false
    }

    /// Whether the port's link carries frames now, for ports on a host interface that
    /// can go down or away; `None` for the others.
    fn link(&self) -> Option<LinkState> {
        None
    }

    /// A VXLAN uplink's socket and per-remote counters; `None` for other ports.
    fn vxlan_info(&self) -> Option<vnet_model::VxlanInfo> {
        None
    }

    // How it moves frames.

    /// The fd to watch for this port, or `None` if its input arrives otherwise (a
    /// shared socket, a service's own output).
    fn source(&mut self) -> Option<&mut dyn mio::event::Source>;

    /// Reads the next frame or message into `buf`.
    fn recv(&mut self, buf: &mut FrameBuf) -> Received;

    /// Sends output the backend buffered earlier (a partial write, replies to requests),
    /// then frames from the front of `frames` (possibly empty) in order, stopping at the
    /// first that is not `Done`: returns how many frames were sent and that frame's
    /// outcome (`WouldBlock` or `Closed` also when the buffered output could not go, with
    /// no frame sent), or `Done` if all it took (at least one, if any were offered) were
    /// sent; the caller offers the rest again. Backends that send one frame per system
    /// call implement it with `send_each`.
    fn send_batch(&mut self, frames: &[FrameBuf]) -> (usize, Sent);

    /// Takes a frame read for this port from a socket it shares with other ports (the
    /// vnet's dgram socket, a NIC's uplink socket; see [`inbox`]): `recv` gives it to
    /// the switch like any other input. `Ok` may carry an empty buffer for the caller's
    /// pool; `Err` returns the frame: the port reads a socket of its own, or its inbox
    /// is full.
    fn deliver(&mut self, frame: FrameBuf) -> Result<Option<FrameBuf>, FrameBuf> {
        Err(frame)
    }

    /// Answers a request this backend returned from `recv`. Only the vnet API has any.
    fn answer(&mut self, _request: &Request, _reply: &Reply) {}

    /// Answers given and not yet taken by the client (`[limits] api_reply_queue` bounds
    /// them).
    fn unanswered(&self) -> usize {
        0
    }

    /// Whether the backend holds input it made itself (a service's replies): the data
    /// plane then reads it without waiting for an fd.
    fn has_input(&self) -> bool {
        false
    }

    // Its timers.

    /// When the backend wants [`Backend::tick`] (a service's timers).
    fn deadline(&self) -> Option<std::time::Instant> {
        None
    }

    /// Runs due timers.
    fn tick(&mut self, _now: std::time::Instant) {}
}

/// [`Backend::send_batch`] for a backend that sends frames one at a time with `send`.
pub(crate) fn send_each(
    frames: &[FrameBuf],
    mut send: impl FnMut(&FrameBuf) -> Sent,
) -> (usize, Sent) {
    for (i, frame) in frames.iter().enumerate() {
        match send(frame) {
            Sent::Done => {}
            other => return (i, other),
        }
    }
    (frames.len(), Sent::Done)
}

/// Implements `mio::event::Source` for a backend whose readiness is that of one fd.
macro_rules! fd_source {
    ($backend:ty, |$this:ident| $fd:expr) => {
        impl mio::event::Source for $backend {
            fn register(
                &mut self,
                r: &mio::Registry,
                t: mio::Token,
                i: mio::Interest,
            ) -> std::io::Result<()> {
                let $this = &*self;
                mio::unix::SourceFd(&std::os::fd::AsRawFd::as_raw_fd($fd)).register(r, t, i)
            }
            fn reregister(
                &mut self,
                r: &mio::Registry,
                t: mio::Token,
                i: mio::Interest,
            ) -> std::io::Result<()> {
                let $this = &*self;
                mio::unix::SourceFd(&std::os::fd::AsRawFd::as_raw_fd($fd)).reregister(r, t, i)
            }
            fn deregister(&mut self, r: &mio::Registry) -> std::io::Result<()> {
                let $this = &*self;
                mio::unix::SourceFd(&std::os::fd::AsRawFd::as_raw_fd($fd)).deregister(r)
            }
        }
    };
}
pub(crate) use fd_source;

/// An fd that someone else owns and keeps open while it is watched (a service's epoll
/// fd, a vhost-user worker's eventfd), as a `mio::event::Source`.
pub(crate) struct WatchedFd(pub std::os::fd::RawFd);

impl std::os::fd::AsRawFd for WatchedFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0
    }
}

fd_source!(WatchedFd, |w| w);

/// Maps an I/O error during send to its outcome.
pub(crate) fn send_error(err: std::io::Error) -> Sent {
    match err.kind() {
        std::io::ErrorKind::WouldBlock => Sent::WouldBlock,
        std::io::ErrorKind::Interrupted => Sent::WouldBlock,
        _ => Sent::Closed(format!("send failed: {err}")),
    }
}
