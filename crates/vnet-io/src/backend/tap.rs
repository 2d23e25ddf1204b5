//! A TAP interface the daemon owns: one `read`/`write` is one frame.

use std::fs::File;
use std::io::{self, IoSlice, Read, Write};

use vnet_control::PortKind;
use vnet_core::switch::DropCause;

use super::{fd_source, send_error, Backend, Received, Sent};
use crate::frame::FrameBuf;
use crate::sys::tap::{open_tap, TapError, VNET_HDR_LEN};

pub struct TapPort {
    file: File,
    ifname: String,
    /// What the interface is for: "tap" (a VM's NIC) or "host adapter".
    role: &'static str,
}

impl TapPort {
    /// A TAP whose interface is a VM's NIC (moved into a namespace, say).
    pub fn open(ifname: &str) -> Result<Self, TapError> {
        Ok(TapPort {
            file: open_tap(ifname)?,
            ifname: ifname.to_string(),
            role: "tap",
        })
    }

    /// A TAP whose interface is the host's own NIC on the vnet.
    pub fn host_adapter(ifname: &str) -> Result<Self, TapError> {
        Ok(TapPort {
            role: "host adapter",
            ..Self::open(ifname)?
        })
    }
}

impl Backend for TapPort {
    fn kind(&self) -> PortKind {
        PortKind::Tap
    }

    fn description(&self) -> String {
        format!("{} {}", self.role, self.ifname)
    }

    fn ifname(&self) -> Option<&str> {
        Some(&self.ifname)
    }

    fn source(&mut self) -> Option<&mut dyn mio::event::Source> {
        Some(self)
    }

    fn offloads(&self) -> bool {
        true
    }

    fn recv(&mut self, buf: &mut FrameBuf) -> Received {
        match self.file.read(buf.recv_space_with_header()) {
            Ok(n) if buf.set_vnet_len(n) => Received::Frame,
            Ok(n) => Received::Dropped(DropCause::Runt, format!("{n}-byte read from the TAP")),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Received::WouldBlock,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Received::WouldBlock,
            Err(e) => Received::Closed(format!("TAP {} read failed: {e}", self.ifname)),
        }
    }

    fn send(&mut self, frame: &FrameBuf) -> Sent {
        let mut hdr = [0u8; VNET_HDR_LEN];
        frame.offload.write(&mut hdr);
        match self
            .file
            .write_vectored(&[IoSlice::new(&hdr), IoSlice::new(frame.frame())])
        {
            Ok(_) => Sent::Done,
            // The interface is down (or has no carrier): the kernel refuses frames. A
            // switch port that is down drops; it does not stall the vnet.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => Sent::Dropped(DropCause::LinkDown),
            Err(e) => send_error(e),
        }
    }
}

fd_source!(TapPort, |port| &port.file);
