//! Programs' ports: one `SOCK_SEQPACKET` connection to `RUN/NET/api.sock` is one port
//! speaking the vnet API (the port protocol `vnet-client` speaks; not the HTTP control
//! API): one message is one frame or one port request such as "set my MAC" (format:
//! `vnet_core::wire::seqpacket`). The classic device ([`super::classic`]) speaks it too.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::OwnedFd;

use vnet_core::switch::DropCause;
use vnet_core::wire::seqpacket::{
    decode_client, encode_reply, ClientMessage, Reply, Request, KIND_FRAME,
};
use vnet_model::PortKind;

use super::{fd_source, send_each, send_error, Backend, Received, Sent};
use crate::frame::FrameBuf;
use crate::sys::seqpacket;

pub struct SeqpacketPort {
    sock: OwnedFd,
    peer: String,
    /// Replies not yet taken by the client; sent before any further frame. The data
    /// plane bounds them (`[limits] api_reply_queue`).
    replies: VecDeque<Vec<u8>>,
}

impl SeqpacketPort {
    /// Wraps a connection from `peer` (as `sys::peer::describe` tells it).
    pub fn new(sock: OwnedFd, peer: String) -> Self {
        SeqpacketPort {
            sock,
            peer,
            replies: VecDeque::new(),
        }
    }
}

impl Backend for SeqpacketPort {
    fn kind(&self) -> PortKind {
        PortKind::Api
    }

    fn description(&self) -> String {
        format!("api {}", self.peer)
    }

    fn source(&mut self) -> Option<&mut dyn mio::event::Source> {
        Some(self)
    }

    fn recv(&mut self, buf: &mut FrameBuf) -> Received {
        let space = buf.recv_space();
        let capacity = space.len();
        let n = match seqpacket::recv_message(&self.sock, space) {
            Ok(0) => return Received::Closed("client closed the connection".to_string()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Received::WouldBlock,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Received::WouldBlock,
            Err(e) => return Received::Closed(format!("receive failed: {e}")),
        };
        if n > capacity {
            return Received::Dropped(DropCause::Oversize, format!("{}-byte message", n));
        }
        match decode_client(&buf.recv_space()[..n]) {
            Ok(ClientMessage::Frame(_)) => {
                buf.set_range(1, n - 1);
                Received::Frame
            }
            Ok(ClientMessage::Request(req)) => Received::Request(req),
            Err(e) => Received::Dropped(DropCause::Malformed, e.to_string()),
        }
    }

    fn answer(&mut self, request: &Request, reply: &Reply) {
        self.replies.push_back(encode_reply(request, reply));
    }

    fn unanswered(&self) -> usize {
        self.replies.len()
    }

    fn send_batch(&mut self, frames: &[FrameBuf]) -> (usize, Sent) {
        if let other @ (Sent::WouldBlock | Sent::Closed(_)) = self.flush() {
            return (0, other);
        }
        send_each(frames, |f| self.send_one(f))
    }
}

impl SeqpacketPort {
    fn send_one(&mut self, frame: &FrameBuf) -> Sent {
        match self.flush() {
            Sent::Done => {}
            other => return other,
        }
        let parts = [IoSlice::new(&[KIND_FRAME]), IoSlice::new(frame.frame())];
        match seqpacket::send_message(&self.sock, &parts) {
            Ok(()) => Sent::Done,
            Err(e) => send_error(e),
        }
    }

    fn flush(&mut self) -> Sent {
        while let Some(reply) = self.replies.front() {
            match seqpacket::send_message(&self.sock, &[IoSlice::new(reply)]) {
                Ok(()) => {
                    self.replies.pop_front();
                }
                Err(e) => return send_error(e),
            }
        }
        Sent::Done
    }
}

fd_source!(SeqpacketPort, |port| &port.sock);

#[cfg(test)]
mod tests {
    use super::*;
    use vnet_core::wire::seqpacket::{decode_vnet, VnetMessage};

    #[test]
    fn a_reply_goes_out_before_frames_and_with_no_frame_at_all() {
        let (ours, client) = seqpacket::pair().unwrap();
        let mut port = SeqpacketPort::new(ours, String::new());
        port.answer(&Request::SetPromiscuous(true), &Ok(None));
        // Nothing queued for the port: the data plane offers an empty batch.
        assert_eq!(port.send_batch(&[]), (0, Sent::Done));
        let mut msg = [0u8; 128];
        let n = seqpacket::recv_message(&client, &mut msg).unwrap();
        assert!(matches!(
            decode_vnet(&msg[..n]),
            Ok(VnetMessage::Reply {
                reply: Ok(None),
                ..
            })
        ));
        // Nothing left to send.
        assert_eq!(port.send_batch(&[]), (0, Sent::Done));
    }
}
