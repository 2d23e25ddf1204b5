//! QEMU `-netdev stream` (and passt, gvproxy, socket_vmnet): a unix stream carrying
//! frames behind 32-bit big-endian lengths. One accepted connection is one port.
//!
//! Receive: bytes accumulate in `rx` until a whole record is there. A record longer than
//! the vnet's frames is skipped as it streams by (counted, the port stays up); a length
//! no QEMU would send means the peer is not speaking the protocol, and the port closes.
//! Send: `writev(prefix, frame)`; what the socket does not take waits in `tx` and the
//! port accepts no more frames until it has drained. The socket's send buffer is raised
//! to [`SEND_BUFFER`] (within `net.core.wmem_max` unless forced) so that a client reading
//! in bursts (a busy QEMU) does not turn into tail drops at the port's egress queue.

use std::io::{self, IoSlice, Read, Write};
use std::os::fd::AsFd;

use mio::net::UnixStream;
use vnet_core::switch::DropCause;
use vnet_core::wire::stream::{next_record, prefix, PREFIX_LEN};
use vnet_model::PortKind;

use super::{send_each, send_error, Backend, Received, Sent};
use crate::frame::FrameBuf;
use crate::sys::privilege::{self, Capability};
use crate::sys::sockopt;

/// Send buffer asked for on each connection: what the kernel holds toward a client that
/// is slower than the sender, before frames wait in (and then drop from) the port's
/// egress queue. With the default (`net.core.wmem_default`, 208 KiB), bulk TCP from a
/// TAP to a client reading at 0.5-1 Gbit/s lost 500-12,000 frames in 10 s with one
/// stream and 25,000-38,000 with four (bbr or cubic), all `queue_full`, each a TCP
/// retransmit; with 1 MiB, 0-450 and 85-970. The price is a longer queue toward a slow
/// client (a few ms more RTT under load). The kernel doubles the value for its
/// bookkeeping; it is a ceiling, not an allocation: an idle port holds nothing. The
/// kernel caps it at `net.core.wmem_max` (the administrator's bound on what one socket
/// may hold) unless `force` ([`crate::Limits::stream_sndbuf_force`]) and vnetd has
/// `CAP_NET_ADMIN`.
pub const SEND_BUFFER: libc::c_int = 1 << 20;

/// The socket option that sets the send buffer: `SO_SNDBUF`, which the kernel caps at
/// `net.core.wmem_max`, unless `force`d past it with `SO_SNDBUFFORCE`.
fn send_buffer_option(force: bool) -> libc::c_int {
    if force {
        libc::SO_SNDBUFFORCE
    } else {
        libc::SO_SNDBUF
    }
}

/// Raises `sock`'s send buffer to [`SEND_BUFFER`] (best effort: a smaller one works).
/// Forcing takes `CAP_NET_ADMIN`, raised for the call ([`privilege`]).
fn raise_send_buffer(sock: &UnixStream, force: bool) {
    let fd = sock.as_fd();
    let _admin = force.then(|| privilege::raise(Capability::CAP_NET_ADMIN));
    let option = send_buffer_option(force);
    if sockopt::set(fd, libc::SOL_SOCKET, option, &SEND_BUFFER).is_err() && force {
        let _ = sockopt::set(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, &SEND_BUFFER);
    }
}

pub struct StreamPort {
    sock: UnixStream,
    peer: String,
    rx: Vec<u8>,
    rx_len: usize,
    /// Bytes of an oversize record still to be skipped.
    skip: usize,
    tx: Vec<u8>,
    tx_sent: usize,
    eof: bool,
}

impl StreamPort {
    /// Wraps an accepted connection from `peer` (as `sys::peer::describe` tells it).
    /// `max_frame` sizes the receive buffer; `force_sndbuf` raises the send buffer past
    /// `net.core.wmem_max` (see [`SEND_BUFFER`]).
    pub fn new(sock: UnixStream, peer: String, max_frame: usize, force_sndbuf: bool) -> Self {
        raise_send_buffer(&sock, force_sndbuf);
        StreamPort {
            sock,
            peer,
            rx: vec![0; 2 * (PREFIX_LEN + max_frame)],
            rx_len: 0,
            skip: 0,
            tx: Vec::new(),
            tx_sent: 0,
            eof: false,
        }
    }

    /// Takes one complete record out of `rx`, if there is one.
    fn take_record(&mut self, buf: &mut FrameBuf) -> Option<Received> {
        if self.skip > 0 {
            self.skip_buffered();
            if self.skip > 0 {
                return None;
            }
        }
        let capacity = buf.recv_space().len();
        match next_record(&self.rx[..self.rx_len]) {
            Err(e) => Some(Received::Closed(e.to_string())),
            Ok(Some(rec)) if rec.frame_len <= capacity => {
                buf.fill(&self.rx[PREFIX_LEN..rec.consumed]);
                self.consume(rec.consumed);
                Some(Received::Frame)
            }
            Ok(_) => {
                let announced = self.rx[..self.rx_len].first_chunk::<PREFIX_LEN>()?;
                let frame_len = u32::from_be_bytes(*announced) as usize;
                if frame_len <= capacity {
                    return None;
                }
                // Larger than any frame of this vnet: skip it as it streams by.
                self.skip = PREFIX_LEN + frame_len;
                self.skip_buffered();
                Some(Received::Dropped(
                    DropCause::Oversize,
                    format!("{frame_len}-byte frame"),
                ))
            }
        }
    }

    fn skip_buffered(&mut self) {
        let n = self.skip.min(self.rx_len);
        self.consume(n);
        self.skip -= n;
    }

    fn consume(&mut self, n: usize) {
        self.rx.copy_within(n..self.rx_len, 0);
        self.rx_len -= n;
    }
}

impl Backend for StreamPort {
    fn kind(&self) -> PortKind {
        PortKind::Stream
    }

    fn description(&self) -> String {
        format!("stream {}", self.peer)
    }

    fn source(&mut self) -> Option<&mut dyn mio::event::Source> {
        Some(&mut self.sock)
    }

    fn recv(&mut self, buf: &mut FrameBuf) -> Received {
        loop {
            if let Some(out) = self.take_record(buf) {
                return out;
            }
            if self.eof {
                return Received::Closed(if self.rx_len > 0 || self.skip > 0 {
                    "client closed the connection mid-frame".to_string()
                } else {
                    "client closed the connection".to_string()
                });
            }
            match self.sock.read(&mut self.rx[self.rx_len..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.rx_len += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Received::WouldBlock,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Received::Closed(format!("read failed: {e}")),
            }
        }
    }

    fn send_batch(&mut self, frames: &[FrameBuf]) -> (usize, Sent) {
        if let other @ (Sent::WouldBlock | Sent::Closed(_)) = self.flush() {
            return (0, other);
        }
        send_each(frames, |f| self.send_one(f))
    }
}

impl StreamPort {
    fn send_one(&mut self, frame: &FrameBuf) -> Sent {
        match self.flush() {
            Sent::Done => {}
            other => return other,
        }
        let bytes = frame.frame();
        let head = prefix(bytes.len());
        let total = PREFIX_LEN + bytes.len();
        match self
            .sock
            .write_vectored(&[IoSlice::new(&head), IoSlice::new(bytes)])
        {
            Ok(n) if n == total => Sent::Done,
            Ok(n) => {
                // Keep the rest: the frame must go out whole or the stream is corrupt.
                self.tx.clear();
                self.tx.extend_from_slice(&head);
                self.tx.extend_from_slice(bytes);
                self.tx_sent = n;
                Sent::Done
            }
            Err(e) => send_error(e),
        }
    }

    fn flush(&mut self) -> Sent {
        while self.tx_sent < self.tx.len() {
            match self.sock.write(&self.tx[self.tx_sent..]) {
                Ok(n) => self.tx_sent += n,
                Err(e) => return send_error(e),
            }
        }
        self.tx.clear();
        self.tx_sent = 0;
        Sent::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{getsockopt, sockopt::SndBuf};

    /// `net.core.wmem_max`: what `SO_SNDBUF` may set at most.
    fn wmem_max() -> usize {
        std::fs::read_to_string("/proc/sys/net/core/wmem_max")
            .expect("wmem_max")
            .trim()
            .parse()
            .expect("a number")
    }

    #[test]
    fn the_send_buffer_is_forced_past_wmem_max_only_when_configured() {
        assert_eq!(send_buffer_option(false), libc::SO_SNDBUF);
        assert_eq!(send_buffer_option(true), libc::SO_SNDBUFFORCE);
    }

    #[test]
    fn a_connection_gets_a_large_send_buffer_within_wmem_max() {
        let (a, _b) = UnixStream::pair().expect("socket pair");
        let port = StreamPort::new(a, String::new(), 1514, false);
        let after = getsockopt(&port.sock, SndBuf).unwrap();
        // The kernel reports twice what was set.
        let want = 2 * (SEND_BUFFER as usize).min(wmem_max());
        assert_eq!(after, want, "wmem_max {}", wmem_max());
    }

    #[test]
    fn a_forced_connection_gets_a_large_send_buffer() {
        let (a, _b) = UnixStream::pair().expect("socket pair");
        let before = getsockopt(&a, SndBuf).unwrap();
        let port = StreamPort::new(a, String::new(), 1514, true);
        let after = getsockopt(&port.sock, SndBuf).unwrap();
        if nix::unistd::geteuid().is_root() {
            assert_eq!(after, 2 * SEND_BUFFER as usize);
        } else {
            assert!(after >= before, "{after} < {before}");
        }
    }
}
