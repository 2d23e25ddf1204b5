//! QEMU `-netdev dgram` over unix datagrams: every peer address that sends to
//! `RUN/NET/dgram.sock` is one port. All peers share the vnet's one socket, so the
//! vnet reads it (`recvmmsg`) and delivers each datagram to its peer's port (into its
//! `backend::inbox`), whose `recv` hands it to the switch.
//!
//! A datagram socket never reports a peer leaving: a peer is gone when sending to it
//! fails with `ECONNREFUSED` (socket closed) or `ENOENT` (path removed).

use std::io;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::rc::Rc;

use mio::net::UnixDatagram;
use vnet_model::PortKind;

use super::inbox::Inbox;
use super::{send_error, Backend, Received, Sent, TX_BATCH};
use crate::frame::FrameBuf;
use crate::sys::mmsg::SendBatch;

pub struct DgramPort {
    sock: Rc<UnixDatagram>,
    inbox: Inbox,
    peer: PathBuf,
    /// `sendmmsg` headers addressed to the peer.
    batch: Box<SendBatch<TX_BATCH>>,
}

impl DgramPort {
    /// Fails only for a path too long for a unix socket address.
    pub fn new(sock: Rc<UnixDatagram>, peer: PathBuf) -> io::Result<Self> {
        let batch = SendBatch::new(Some(&peer))?;
        Ok(DgramPort {
            sock,
            inbox: Inbox::default(),
            peer,
            batch,
        })
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

    fn recv(&mut self, buf: &mut FrameBuf) -> Received {
        self.inbox.recv(buf)
    }

    fn deliver(&mut self, frame: FrameBuf) -> Result<Option<FrameBuf>, FrameBuf> {
        self.inbox.deliver(frame)
    }

    fn send_batch(&mut self, frames: &[FrameBuf]) -> (usize, Sent) {
        let (sent, result) = self
            .batch
            .send(self.sock.as_fd(), frames.iter().map(FrameBuf::frame));
        let outcome = match result {
            Ok(()) => Sent::Done,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNREFUSED | libc::ENOENT)) => {
                Sent::Closed(format!("peer {} is gone ({e})", self.peer.display()))
            }
            Err(e) => send_error(e),
        };
        (sent, outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::BufPool;

    #[test]
    fn a_batch_reaches_the_peer_in_order_and_a_gone_peer_closes_the_port() {
        let dir = std::env::temp_dir().join(format!("vnet-dgram-port-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let peer = std::os::unix::net::UnixDatagram::bind(dir.join("peer")).unwrap();
        let sock = Rc::new(UnixDatagram::unbound().unwrap());
        let mut port = DgramPort::new(sock, dir.join("peer")).unwrap();
        let mut pool = BufPool::new(1514);
        let frames: Vec<FrameBuf> = (0..3u8)
            .map(|i| {
                let mut b = pool.get();
                b.fill(&[i; 60]);
                b
            })
            .collect();
        assert_eq!(port.send_batch(&frames), (3, Sent::Done));
        let mut buf = [0u8; 100];
        for i in 0..3 {
            assert_eq!(peer.recv(&mut buf).unwrap(), 60);
            assert_eq!(buf[0], i);
        }

        drop(peer);
        assert!(matches!(port.send_batch(&frames), (0, Sent::Closed(_))));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            matches!(port.send_batch(&frames[..1]), (0, Sent::Closed(_))),
            "path removed"
        );
    }
}
