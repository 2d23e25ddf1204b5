//! QEMU `-netdev dgram` over unix datagrams: every peer address that sends to
//! `RUN/NET/dgram.sock` is one port. All peers share the vnet's one socket, so the
//! network reads it and hands frames to the peer's port; this backend only sends.
//!
//! A datagram socket never reports a peer leaving: a peer is gone when sending to it
//! fails with `ECONNREFUSED` (socket closed) or `ENOENT` (path removed).

use std::io;
use std::path::PathBuf;
use std::rc::Rc;

use mio::net::UnixDatagram;
use vnet_control::PortKind;

use super::{send_error, Backend, Received, Sent};
use crate::frame::FrameBuf;

pub struct DgramPort {
    sock: Rc<UnixDatagram>,
    peer: PathBuf,
}

impl DgramPort {
    pub fn new(sock: Rc<UnixDatagram>, peer: PathBuf) -> Self {
        DgramPort { sock, peer }
    }

    pub fn peer(&self) -> &PathBuf {
        &self.peer
    }
}

impl Backend for DgramPort {
    fn kind(&self) -> PortKind {
        PortKind::Dgram
    }

    fn description(&self) -> String {
        format!("dgram {}", self.peer.display())
    }

    fn source(&mut self) -> Option<&mut dyn mio::event::Source> {
        None
    }

    fn recv(&mut self, _buf: &mut FrameBuf) -> Received {
        Received::WouldBlock
    }

    fn send(&mut self, frame: &FrameBuf) -> Sent {
        match self.sock.send_to(frame.frame(), &self.peer) {
            Ok(_) => Sent::Done,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNREFUSED | libc::ENOENT)) => {
                Sent::Closed(format!("peer {} is gone ({e})", self.peer.display()))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Sent::WouldBlock,
            Err(e) => send_error(e),
        }
    }
}
