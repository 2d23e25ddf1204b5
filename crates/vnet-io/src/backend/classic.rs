//! Classic-device ports (`RUN/dev/NET`, served over FUSE by `vnet-fuse`; not the NAT
//! device of `vnet-nat`): one `open` of the device file is one port. The FUSE side holds
//! one end of a `SOCK_SEQPACKET` socket pair and speaks the vnet API on it; this is the
//! other end, a [`SeqpacketPort`] that reports itself as a device port with the
//! opener's pid and command.

use vnet_core::wire::seqpacket::{Reply, Request};
use vnet_model::PortKind;

use super::seqpacket::SeqpacketPort;
use super::{Backend, Received, Sent};
use crate::frame::FrameBuf;

pub struct ClassicDevicePort {
    inner: SeqpacketPort,
    description: String,
}

impl ClassicDevicePort {
    /// `sock`: the data plane's end of the pair (non-blocking); `pid`: the process that
    /// opened the device file, as FUSE reports it.
    pub fn new(sock: std::os::fd::OwnedFd, net: &str, pid: Option<u32>) -> Self {
        let who = match pid {
            Some(pid) => {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                if comm.is_empty() {
                    format!("pid {pid}")
                } else {
                    format!("pid {pid} ({comm})")
                }
            }
            None => "unknown opener".to_string(),
        };
        ClassicDevicePort {
            inner: SeqpacketPort::new(sock, String::new()),
            description: format!("device dev/{net} {who}"),
        }
    }
}

impl Backend for ClassicDevicePort {
    fn kind(&self) -> PortKind {
        PortKind::Device
    }

    fn description(&self) -> String {
        self.description.clone()
    }

    fn source(&mut self) -> Option<&mut dyn mio::event::Source> {
        self.inner.source()
    }

    fn recv(&mut self, buf: &mut FrameBuf) -> Received {
        self.inner.recv(buf)
    }

    fn send_batch(&mut self, frames: &[FrameBuf]) -> (usize, Sent) {
        self.inner.send_batch(frames)
    }

    fn answer(&mut self, request: &Request, reply: &Reply) {
        self.inner.answer(request, reply)
    }

    fn unanswered(&self) -> usize {
        self.inner.unanswered()
    }
}
