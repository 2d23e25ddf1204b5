//! A TAP interface the daemon owns: one `read`/`write` is one frame.

use std::fs::File;
use std::io::{self, IoSlice, Read, Write};

use tracing::warn;
use vnet_core::switch::DropCause;
use vnet_model::PortKind;

use super::{fd_source, send_each, send_error, Backend, Identity, Received, Sent};
use crate::error::Chain;
use crate::frame::FrameBuf;
use crate::sys::netif;
use crate::sys::tap::{open_tap, TapError, VNET_HDR_LEN};

/// Transmit queue length given to the TAPs vnetd opens (the kernel's default is 1000).
/// It is the ring of frames the kernel holds for vnetd to read; the kernel drops the
/// next frame when it is full, and TCP in front of it sees a tail drop. Without TSO
/// (1500-byte frames), bulk TCP into a TAP overflowed 1000 frames whenever the data plane
/// was off the CPU for a few milliseconds (~54,000 drops and as many retransmits in 10 s
/// of one stream with cubic on a 2-CPU machine; 323 at 2048), none at 4096. With TSO a
/// slot holds up to 64 KiB and 1000 never overflowed. The ring costs the kernel 8 bytes a
/// slot (32 KiB at 4096), allocated when the TAP is attached; frames only while queued.
pub const TAP_TXQUEUELEN: u32 = 4096;

pub struct TapPort {
    file: File,
    ifname: String,
    /// What the interface is for: "tap" (a VM's NIC) or "host adapter".
    role: &'static str,
}

impl TapPort {
    /// A TAP whose interface is a VM's NIC (moved into a namespace, say). Its transmit
    /// queue is made at least [`TAP_TXQUEUELEN`] frames long; if that is refused (an
    /// existing TAP vnetd may open but not configure), the port works with the queue it
    /// has, and a warning says so.
    pub fn open(ifname: &str) -> Result<Self, TapError> {
        let file = open_tap(ifname)?;
        if let Err(e) = netif::raise_txqueuelen(ifname, TAP_TXQUEUELEN) {
            warn!(
                "TAP {ifname}: keeping its transmit queue length: {}",
                Chain(&e)
            );
        }
        Ok(TapPort {
            file,
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

    fn identity(&self) -> Identity<'_> {
        Identity {
            ifname: Some(&self.ifname),
            ..Identity::default()
        }
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

    fn send_batch(&mut self, frames: &[FrameBuf]) -> (usize, Sent) {
        send_each(frames, |f| self.send_one(f))
    }
}

impl TapPort {
    /// Inlined into `send_batch` (callgrind: the call cost ~24 instructions a frame).
    #[inline]
    fn send_one(&mut self, frame: &FrameBuf) -> Sent {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tap_gets_a_long_transmit_queue() {
        if !vnet_dirs::is_root() {
            eprintln!("SKIPPED a_tap_gets_a_long_transmit_queue: needs root (TAPs)");
            return;
        }
        let name = format!("vtq{}", std::process::id() % 100_000);
        let port = TapPort::open(&name).expect("open a TAP");
        let qlen = std::fs::read_to_string(format!("/sys/class/net/{name}/tx_queue_len"))
            .expect("sysfs tx_queue_len");
        assert_eq!(qlen.trim(), TAP_TXQUEUELEN.to_string());
        // A queue already long enough is left alone.
        assert_eq!(netif::raise_txqueuelen(&name, 100).unwrap(), TAP_TXQUEUELEN);
        drop(port);
    }
}
