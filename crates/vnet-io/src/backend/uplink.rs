//! Bridged uplinks: a vnet joined to a host NIC through an AF_PACKET socket.
//!
//! One socket per NIC ([`UplinkSocket`]), shared by every vnet bridged to it: each vnet
//! claims the NIC's untagged frames, one VLAN of it (access: tagged on the NIC,
//! untagged inside the vnet) or a list of VLANs (trunk: tagged on both sides). The
//! data-plane thread reads the socket and delivers each frame to the [`UplinkPort`] of
//! the vnet that claims its tag, whose `recv` hands it to the switch; the port adds its
//! VLAN's tag on the way out.
//!
//! Frames come in by the batch, up to 32 per `recvmmsg`, or, with `[limits]
//! uplink_ring_bytes`, through a `TPACKET_V3` ring ([`crate::sys::ring`], read by
//! `backend/tpacket.rs`): no system call per frame, but up to 1 ms of waiting for a
//! block under light load (see [`DEFAULT_RING_BYTES`]); where the kernel refuses a ring,
//! by the batch again. Either way each frame is copied once, into its vnet's buffer.
//! Frames go out in batches, one `sendmmsg` each. Frames the kernel drops because the
//! socket's buffer or ring is full are counted on every member's port (`queue_full`):
//! the socket is the NIC's, not one vnet's.
//!
//! Frames the NIC sent (`PACKET_OUTGOING`: ours, or the host's own) are never taken in,
//! so nothing loops. The NIC keeps its MTU: larger frames are dropped as oversize. A
//! NIC that goes down drops frames (counted as `link_down`, logged once) and the vnet
//! keeps running; it resumes when the NIC comes back.

use std::cell::Cell;
use std::io;
use std::rc::Rc;

use tracing::{debug, info, warn};
use vnet_core::switch::{DropCause, PortId};
use vnet_model::{PortKind, UplinkMode, UplinkSpec};

use super::inbox::Inbox;
use super::packet::{self, Read, Receiver, Sender};
use super::tpacket::RingReader;
use super::{Backend, Identity, Received, Sent};
use crate::frame::FrameBuf;
use crate::sys::packet::{PacketError, PacketSocket};
use crate::sys::ring::RxRing;

/// The receive ring's size unless `[limits] uplink_ring_bytes` says otherwise: none.
/// Measured (`scripts/bench-bridged`), a ring takes more small frames per second from
/// the LAN, but the kernel hands a block over only when it is full or 1 ms after its
/// first frame, which adds up to that to each frame under light load (ping through the
/// uplink: 35 µs without, 1 ms with) and slows a single TCP stream, whose ACKs wait.
pub const DEFAULT_RING_BYTES: usize = 0;
use vnet_core::wire::offload::VirtioNetHdr;

/// What a vnet takes from its NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Untagged frames (and priority-tagged ones).
    Untagged,
    /// One VLAN, untagged inside the vnet.
    Vlan(u16),
    /// These VLANs, tagged inside the vnet.
    Trunk(Vec<u16>),
}

impl Claim {
    pub fn of(spec: &UplinkSpec) -> Claim {
        match (spec.mode, spec.vlan) {
            (UplinkMode::Trunk, _) => Claim::Trunk(spec.vlans.clone()),
            (UplinkMode::Access, Some(v)) => Claim::Vlan(v),
            (UplinkMode::Access, None) => Claim::Untagged,
        }
    }

    fn takes(&self, vid: Option<u16>) -> bool {
        match (self, vid) {
            (Claim::Untagged, None) => true,
            (Claim::Vlan(v), Some(x)) => *v == x,
            (Claim::Trunk(list), Some(x)) => list.contains(&x),
            _ => false,
        }
    }

    pub fn overlaps(&self, other: &Claim) -> bool {
        let vids = |c: &Claim| -> Vec<Option<u16>> {
            match c {
                Claim::Untagged => vec![None],
                Claim::Vlan(v) => vec![Some(*v)],
                Claim::Trunk(l) => l.iter().map(|v| Some(*v)).collect(),
            }
        };
        vids(self).into_iter().any(|v| other.takes(v))
    }
}

/// A vnet's share of an [`UplinkSocket`].
#[derive(Debug)]
pub struct Member {
    pub net: usize,
    pub port: PortId,
    pub claim: Claim,
}

/// One NIC's AF_PACKET socket and the vnets bridged to it.
pub struct UplinkSocket {
    pub interface: String,
    pub sock: Rc<PacketSocket>,
    pub members: Vec<Member>,
    /// The socket's poll token, once watched.
    pub token: Option<mio::Token>,
    input: Input,
    /// Frames the kernel dropped on the socket (its ring or buffer full), ever: each
    /// member port counts them.
    lost: Rc<Cell<u64>>,
    down: bool,
}

/// How the socket's frames come in.
enum Input {
    /// A `TPACKET_V3` ring: no system call per frame.
    Ring(RingReader),
    /// Batches of `recvmmsg`: no waiting for a block, one system call per batch.
    Batched(Receiver),
}

/// A frame the NIC delivered and who takes it.
pub struct Incoming<'a> {
    pub net: usize,
    pub port: PortId,
    /// The frame with its 802.1Q tag back in place (if it had one).
    pub frame: &'a [u8],
    /// The tag, when the vnet takes the frame untagged (access to a VLAN).
    pub strip: bool,
    /// Offload metadata (partial checksum, GSO) of the frame as it is here.
    pub offload: VirtioNetHdr,
}

/// The result of one receive on the NIC.
pub enum Polled<'a> {
    Frame(Incoming<'a>),
    /// A frame nobody takes (or one we sent): read on.
    Skipped,
    WouldBlock,
}

/// A socket several vnets' ports share (a NIC's for uplinks, a VXLAN tunnel's): the
/// data plane reads it a frame at a time and hands each to the port it belongs to.
pub trait SharedSocket {
    fn next_frame(&mut self, now: std::time::Instant) -> Polled<'_>;
}

impl SharedSocket for UplinkSocket {
    fn next_frame(&mut self, _now: std::time::Instant) -> Polled<'_> {
        self.poll()
    }
}

impl UplinkSocket {
    /// Opens `interface`'s socket with a receive ring of `ring_bytes` (0: none, one
    /// system call per frame, as also where the kernel refuses a ring).
    pub fn open(interface: &str, ring_bytes: usize) -> Result<UplinkSocket, PacketError> {
        let mut sock = PacketSocket::unbound()?;
        if let Err(e) = sock.ignore_outgoing() {
            debug!(
                interface,
                "frames the NIC sends are skipped one by one: {e}"
            );
        }
        let lost = Rc::default();
        let input = match ring_bytes {
            0 => {
                info!(interface, "uplink receives with recvmmsg (no ring)");
                Input::Batched(Receiver::new(&sock, Rc::clone(&lost)))
            }
            bytes => match RxRing::attach(&sock, bytes) {
                Ok(ring) => {
                    info!(
                        interface,
                        bytes = ring.bytes(),
                        "uplink receives through a TPACKET_V3 ring"
                    );
                    Input::Ring(RingReader::new(ring, Rc::clone(&lost)))
                }
                Err(e) => {
                    warn!(
                        interface,
                        "no receive ring ({e}): the uplink receives with recvmmsg"
                    );
                    Input::Batched(Receiver::new(&sock, Rc::clone(&lost)))
                }
            },
        };
        sock.bind(interface)?;
        Ok(UplinkSocket {
            interface: interface.to_string(),
            sock: Rc::new(sock),
            members: Vec::new(),
            token: None,
            input,
            lost,
            down: false,
        })
    }

    /// Reads one frame and decides which vnet takes it.
    pub fn poll(&mut self) -> Polled<'_> {
        let next = match &mut self.input {
            Input::Ring(reader) => {
                let Some((space, meta)) = reader.next(&self.sock) else {
                    return Polled::WouldBlock;
                };
                let read = packet::take(space, meta);
                Ok((space, read))
            }
            Input::Batched(receiver) => receiver.next(&self.sock),
        };
        let (space, start, len, offload) = match next {
            Ok((
                space,
                Read::Frame {
                    start,
                    len,
                    offload,
                },
            )) => {
                if self.down {
                    self.down = false;
                    info!(interface = self.interface, "uplink receives again");
                }
                (space, start, len, offload)
            }
            Ok((_, Read::Outgoing | Read::Dropped(_))) => return Polled::Skipped,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Polled::WouldBlock,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Polled::Skipped,
            Err(e) => {
                // ENETDOWN and friends: the socket stays bound and works again when the
                // NIC comes back.
                if !self.down {
                    self.down = true;
                    warn!(
                        interface = self.interface,
                        "uplink NIC reports {e}; the vnet keeps running"
                    );
                }
                return Polled::WouldBlock;
            }
        };
        let frame = &space[start..start + len];
        let vid = match u16::from_be_bytes([frame[12], frame[13]]) {
            0x8100 if len >= 18 => match u16::from_be_bytes([frame[14], frame[15]]) & 0x0fff {
                0 => None,
                v => Some(v),
            },
            _ => None,
        };
        let Some(m) = self.members.iter().find(|m| m.claim.takes(vid)) else {
            return Polled::Skipped;
        };
        Polled::Frame(Incoming {
            net: m.net,
            port: m.port,
            frame,
            strip: matches!(m.claim, Claim::Vlan(_)),
            offload,
        })
    }
}

/// A vnet's port on its uplink: sends frames out of the NIC.
pub struct UplinkPort {
    sock: Rc<PacketSocket>,
    /// Sends frames, with the VLAN's tag for access to a VLAN of the NIC.
    sender: Sender,
    /// Frames the thread read from the shared socket for this port.
    inbox: Inbox,
    /// The NIC's count of frames the kernel dropped on its socket, and how many of them
    /// this port has counted.
    lost: Rc<Cell<u64>>,
    counted: u64,
    interface: String,
    description: String,
    down: bool,
}

impl UplinkPort {
    pub fn new(shared: &UplinkSocket, spec: &UplinkSpec) -> Self {
        let description = match (spec.mode, spec.vlan) {
            (UplinkMode::Trunk, _) => format!(
                "uplink {} trunk {}",
                spec.interface,
                spec.vlans
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            (_, Some(v)) => format!("uplink {} vlan {v}", spec.interface),
            (_, None) => format!("uplink {}", spec.interface),
        };
        let tag = match Claim::of(spec) {
            Claim::Vlan(v) => Some(v),
            _ => None,
        };
        UplinkPort {
            sock: Rc::clone(&shared.sock),
            sender: Sender::new(tag),
            inbox: Inbox::default(),
            lost: Rc::clone(&shared.lost),
            counted: shared.lost.get(),
            interface: spec.interface.clone(),
            description,
            down: false,
        }
    }
}

impl Backend for UplinkPort {
    fn kind(&self) -> PortKind {
        PortKind::Uplink
    }

    fn description(&self) -> String {
        self.description.clone()
    }

    fn identity(&self) -> Identity<'_> {
        Identity {
            ifname: Some(&self.interface),
            ..Identity::default()
        }
    }

    fn source(&mut self) -> Option<&mut dyn mio::event::Source> {
        None
    }

    /// Partial checksums and GSO super-frames go to the kernel as they are (with
    /// `PACKET_VNET_HDR`), which finishes them for the NIC.
    fn offloads(&self) -> bool {
        true
    }

    /// The frames delivered, then one drop (`queue_full`) for each frame the kernel
    /// dropped on the NIC's socket since the last: the socket is shared by the NIC's
    /// vnets, so each of their uplink ports counts them.
    fn recv(&mut self, buf: &mut FrameBuf) -> Received {
        match self.inbox.recv(buf) {
            Received::WouldBlock if self.counted < self.lost.get() => {
                self.counted += 1;
                Received::Dropped(DropCause::QueueFull, String::new())
            }
            received => received,
        }
    }

    fn deliver(&mut self, frame: FrameBuf) -> Result<Option<FrameBuf>, FrameBuf> {
        self.inbox.deliver(frame)
    }

    fn send_batch(&mut self, frames: &[FrameBuf]) -> (usize, Sent) {
        let (sent, outcome) = self.sender.send(&self.sock, frames);
        match outcome {
            Ok(outcome) => {
                if self.down && sent > 0 {
                    self.down = false;
                    info!(interface = self.interface, "uplink sends again");
                }
                (sent, outcome)
            }
            Err(e) => {
                if !self.down {
                    self.down = true;
                    warn!(
                        interface = self.interface,
                        "uplink cannot send ({e}); dropping until the NIC is back"
                    );
                }
                (sent, Sent::Dropped(DropCause::LinkDown))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(vlan: Option<u16>, mode: UplinkMode, vlans: &[u16]) -> UplinkSpec {
        UplinkSpec {
            vxlan: None,
            interface: "eth1".into(),
            vlan,
            mode,
            vlans: vlans.to_vec(),
        }
    }

    #[test]
    fn claims_take_their_own_traffic_only() {
        let plain = Claim::of(&spec(None, UplinkMode::Access, &[]));
        let ten = Claim::of(&spec(Some(10), UplinkMode::Access, &[]));
        let trunk = Claim::of(&spec(None, UplinkMode::Trunk, &[20, 30]));
        assert_eq!(plain, Claim::Untagged);
        assert!(plain.takes(None) && !plain.takes(Some(10)));
        assert!(ten.takes(Some(10)) && !ten.takes(None) && !ten.takes(Some(20)));
        assert!(trunk.takes(Some(30)) && !trunk.takes(None) && !trunk.takes(Some(10)));
        assert!(!plain.overlaps(&ten) && !ten.overlaps(&trunk) && !trunk.overlaps(&plain));
        assert!(trunk.overlaps(&Claim::Vlan(20)) && Claim::Vlan(20).overlaps(&trunk));
        assert!(plain.overlaps(&Claim::Untagged));
    }

    #[test]
    fn specs_are_checked() {
        assert!(spec(Some(10), UplinkMode::Access, &[]).check().is_ok());
        assert!(spec(None, UplinkMode::Trunk, &[10, 20]).check().is_ok());
        for bad in [
            spec(Some(4095), UplinkMode::Access, &[]),
            spec(Some(0), UplinkMode::Access, &[]),
            spec(None, UplinkMode::Access, &[10]),
            spec(None, UplinkMode::Trunk, &[]),
            spec(Some(10), UplinkMode::Trunk, &[20]),
            spec(None, UplinkMode::Trunk, &[5000]),
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
        assert_eq!(
            spec(None, UplinkMode::Trunk, &[10]).port_vlan_mode(),
            vnet_core::switch::VlanMode::Trunk {
                allowed: vec![10],
                native: None
            }
        );
    }
}
