//! Reading a `TPACKET_V3` receive ring ([`crate::sys::ring`]): the walk over a block's
//! bytes ([`BlockWalk`], pure: the tests run it over synthetic blocks) and the
//! [`RingReader`] that takes blocks from the kernel in turn, hands out their frames and
//! gives the blocks back.
//!
//! A block starts with its descriptor (`tpacket_block_desc`: status, frame count, where
//! the first frame is); each frame with a `tpacket3_hdr` (offset of the next, lengths,
//! status with the stripped VLAN tag, where the frame starts) and a `sockaddr_ll` (the
//! packet type: was it sent out of the interface?). With `PACKET_VNET_HDR` the
//! `virtio_net_hdr` sits right in front of the frame. The reader lends each frame with
//! [`FRONT`] bytes in front of it, as [`packet::take`] wants them: the block is ours
//! until it goes back, so a stripped tag is put back in place there.

use std::cell::Cell;
use std::ops::Range;
use std::rc::Rc;

use tracing::{debug, warn};

use super::packet::FRONT;
use crate::sys::packet::{PacketSocket, RecvMeta, PACKET_VNET_HDR_LEN};
use crate::sys::ring::{self, RxRing};

// The block descriptor (`tpacket_block_desc` with its `tpacket_hdr_v1`).
const BLOCK_STATUS: usize = 8;
const NUM_PKTS: usize = 12;
const OFFSET_TO_FIRST_PKT: usize = 16;
/// Bytes of the descriptor.
const BLOCK_DESC_LEN: usize = 48;

// A frame's header (`tpacket3_hdr`), then its `sockaddr_ll`.
const TP_NEXT_OFFSET: usize = 0;
const TP_SNAPLEN: usize = 12;
const TP_LEN: usize = 16;
const TP_STATUS: usize = 20;
const TP_MAC: usize = 24;
const TP_VLAN_TCI: usize = 32;
const TP_VLAN_TPID: usize = 36;
/// `sll_pkttype`: the `sockaddr_ll` starts at `TPACKET_ALIGN(sizeof(tpacket3_hdr))`.
const SLL_PKTTYPE: usize = 48 + 10;
/// Bytes of a frame's header and address (`TPACKET3_HDRLEN`).
const TPACKET3_HDRLEN: usize = 48 + 20;
/// `PACKET_OUTGOING` in `sll_pkttype`: a frame the interface sent.
const PACKET_OUTGOING: u8 = 4;

/// A block or frame header that does not fit its block: the walk stops there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed ring block: {0}")]
pub(crate) struct Malformed(&'static str);

/// One frame of a block: `space` (offsets into the block) holds [`FRONT`] bytes of
/// room and header, then the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RingFrame {
    pub space: Range<usize>,
    pub meta: RecvMeta,
}

fn u32_at(block: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(block.get(at..at + 4)?.try_into().ok()?))
}

fn u16_at(block: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(block.get(at..at + 2)?.try_into().ok()?))
}

/// Whether the kernel dropped frames for want of room before it closed `block`.
pub(crate) fn losing(block: &[u8]) -> bool {
    u32_at(block, BLOCK_STATUS).is_some_and(|s| s & libc::TP_STATUS_LOSING != 0)
}

/// The walk over the frames of one block the kernel handed over.
#[derive(Debug)]
pub(crate) struct BlockWalk {
    next: usize,
    left: u32,
}

impl BlockWalk {
    /// Starts at `block`'s first frame.
    pub fn new(block: &[u8]) -> Result<BlockWalk, Malformed> {
        let (Some(left), Some(first)) =
            (u32_at(block, NUM_PKTS), u32_at(block, OFFSET_TO_FIRST_PKT))
        else {
            return Err(Malformed("shorter than its descriptor"));
        };
        let first = first as usize;
        if left > 0 && (first < BLOCK_DESC_LEN || first >= block.len()) {
            return Err(Malformed("first frame outside the block"));
        }
        Ok(BlockWalk { next: first, left })
    }

    /// The next frame of `block` (the one [`BlockWalk::new`] was given), `None` after
    /// the last. An error ends the walk.
    pub fn next(&mut self, block: &[u8]) -> Option<Result<RingFrame, Malformed>> {
        if self.left == 0 {
            return None;
        }
        let frame = self.frame(block);
        if frame.is_err() {
            self.left = 0;
        }
        Some(frame)
    }

    fn frame(&mut self, block: &[u8]) -> Result<RingFrame, Malformed> {
        // The previous frame said it was the last.
        if self.next == 0 {
            return Err(Malformed("a frame missing"));
        }
        let at = self.next;
        let field = |off| u32_at(block, at + off).ok_or(Malformed("frame header past the end"));
        let next = field(TP_NEXT_OFFSET)? as usize;
        let snaplen = field(TP_SNAPLEN)? as usize;
        let len = field(TP_LEN)? as usize;
        let status = field(TP_STATUS)?;
        let tci = field(TP_VLAN_TCI)? as u16;
        let tpid =
            u16_at(block, at + TP_VLAN_TPID).ok_or(Malformed("frame header past the end"))?;
        let mac = u16_at(block, at + TP_MAC).ok_or(Malformed("frame header past the end"))?;
        let pkttype = *block
            .get(at + SLL_PKTTYPE)
            .ok_or(Malformed("frame address past the end"))?;
        let mac = at + mac as usize;
        // The offload header lies between the address and the frame.
        if mac < at + TPACKET3_HDRLEN + PACKET_VNET_HDR_LEN || mac + snaplen > block.len() {
            return Err(Malformed("frame outside its slot"));
        }
        self.left -= 1;
        self.next = if next == 0 { 0 } else { at + next };
        let stripped_tag = (tci != 0 || status & libc::TP_STATUS_VLAN_VALID != 0).then(|| {
            let tpid = if status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                tpid
            } else {
                0x8100
            };
            (tpid, tci)
        });
        Ok(RingFrame {
            space: mac - FRONT..mac + snaplen,
            meta: RecvMeta {
                len: PACKET_VNET_HDR_LEN + snaplen,
                truncated: snaplen < len,
                outgoing: pkttype == PACKET_OUTGOING,
                stripped_tag,
                dropped: 0,
            },
        })
    }
}

/// Takes the blocks of a ring in turn and lends out their frames.
pub(crate) struct RingReader {
    ring: RxRing,
    /// The block to read next (the kernel fills them in order).
    block: usize,
    /// The walk over `block`, once the kernel handed it over.
    walk: Option<BlockWalk>,
    /// The last call found no block: the next block found starts a new drain.
    idle: bool,
    /// Frames the kernel dropped for want of room, ever.
    lost: Rc<Cell<u64>>,
}

impl RingReader {
    /// Reads `ring`, adding the frames the kernel dropped to `lost`.
    pub fn new(ring: RxRing, lost: Rc<Cell<u64>>) -> Self {
        RingReader {
            ring,
            block: 0,
            walk: None,
            idle: true,
            lost,
        }
    }

    /// The next frame, with [`FRONT`] bytes in front of it, and what the kernel says
    /// about it; `None` when the kernel has handed over nothing more. At the start of
    /// each drain, and whenever a block says frames were lost, it asks `sock` how many
    /// were.
    pub fn next(&mut self, sock: &PacketSocket) -> Option<(&mut [u8], RecvMeta)> {
        let frame = loop {
            if let Some(walk) = &mut self.walk {
                let block = self.ring.user_block(self.block)?;
                match walk.next(block) {
                    Some(Ok(frame)) => break frame,
                    Some(Err(e)) => {
                        warn!("uplink receive ring: {e}; the rest of the block is skipped")
                    }
                    None => {}
                }
                self.walk = None;
                self.ring.release(self.block);
                self.block = (self.block + 1) % self.ring.blocks();
            }
            let Some(block) = self.ring.user_block(self.block) else {
                self.idle = true;
                return None;
            };
            let count = std::mem::take(&mut self.idle) || losing(block);
            match BlockWalk::new(block) {
                Ok(walk) => self.walk = Some(walk),
                Err(e) => {
                    warn!("uplink receive ring: {e}; the block is skipped");
                    self.ring.release(self.block);
                    self.block = (self.block + 1) % self.ring.blocks();
                }
            }
            if count {
                match ring::drops(sock) {
                    Ok(0) => {}
                    Ok(n) => {
                        debug!(dropped = n, "uplink receive ring was full");
                        self.lost.set(self.lost.get() + u64::from(n));
                    }
                    Err(e) => warn!("uplink receive ring: cannot read its drop count: {e}"),
                }
            }
        };
        let block = self.ring.user_block(self.block)?;
        Some((&mut block[frame.space], frame.meta))
    }
}

#[cfg(test)]
mod tests {
    use std::mem::offset_of;

    use super::*;
    use crate::backend::packet::{take, Read};
    use std::mem::size_of;

    /// One frame to put in a synthetic block.
    struct Slot<'a> {
        frame: &'a [u8],
        /// A tag the kernel stripped: (TPID, TCI).
        tag: Option<(u16, u16)>,
        outgoing: bool,
        /// Bytes the frame had on the wire, if more than it has here (cut).
        wire_len: Option<usize>,
    }

    fn slot(frame: &[u8]) -> Slot<'_> {
        Slot {
            frame,
            tag: None,
            outgoing: false,
            wire_len: None,
        }
    }

    fn put32(b: &mut [u8], at: usize, v: u32) {
        b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    }

    /// A block as the kernel lays it out: the descriptor, then each frame 16-byte
    /// aligned with its header, address and offload header (all zero: no offloads),
    /// the frame at offset 92 of its slot.
    fn block(slots: &[Slot<'_>], status: u32) -> Vec<u8> {
        let mut b = vec![0u8; 8192];
        put32(&mut b, BLOCK_STATUS, status);
        put32(&mut b, NUM_PKTS, slots.len() as u32);
        put32(&mut b, OFFSET_TO_FIRST_PKT, BLOCK_DESC_LEN as u32);
        let mut at = BLOCK_DESC_LEN;
        for (i, s) in slots.iter().enumerate() {
            let mac = 92;
            let next = (mac + s.frame.len()).next_multiple_of(16);
            let last = i + 1 == slots.len();
            put32(
                &mut b,
                at + TP_NEXT_OFFSET,
                if last { 0 } else { next as u32 },
            );
            put32(&mut b, at + TP_SNAPLEN, s.frame.len() as u32);
            put32(
                &mut b,
                at + TP_LEN,
                s.wire_len.unwrap_or(s.frame.len()) as u32,
            );
            let mut status = libc::TP_STATUS_USER;
            if let Some((tpid, tci)) = s.tag {
                status |= libc::TP_STATUS_VLAN_VALID | libc::TP_STATUS_VLAN_TPID_VALID;
                put32(&mut b, at + TP_VLAN_TCI, u32::from(tci));
                b[at + TP_VLAN_TPID..at + TP_VLAN_TPID + 2].copy_from_slice(&tpid.to_ne_bytes());
            }
            put32(&mut b, at + TP_STATUS, status);
            b[at + TP_MAC..at + TP_MAC + 2].copy_from_slice(&(mac as u16).to_ne_bytes());
            b[at + SLL_PKTTYPE] = if s.outgoing { PACKET_OUTGOING } else { 0 };
            b[at + mac..at + mac + s.frame.len()].copy_from_slice(s.frame);
            at += next;
        }
        b
    }

    /// Every frame of `b` as `take` reads it: its bytes (tag back in place), or what
    /// became of it.
    fn walk_all(b: &mut [u8]) -> Vec<Result<Vec<u8>, String>> {
        let mut walk = BlockWalk::new(b).unwrap();
        let mut out = Vec::new();
        while let Some(next) = walk.next(b) {
            out.push(match next {
                Ok(f) => match take(&mut b[f.space.clone()], f.meta) {
                    Read::Frame { start, len, .. } => {
                        let at = f.space.start + start;
                        Ok(b[at..at + len].to_vec())
                    }
                    Read::Outgoing => Err("outgoing".into()),
                    Read::Dropped(cause) => Err(cause.name().into()),
                },
                Err(e) => Err(e.to_string()),
            });
        }
        out
    }

    fn frame(n: u8, len: usize) -> Vec<u8> {
        let mut f = vec![n; len];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f
    }

    #[test]
    fn a_block_gives_its_frames_in_order_with_stripped_tags_put_back() {
        let (one, two, three) = (frame(1, 60), frame(2, 1514), frame(3, 61));
        let mut b = block(
            &[
                slot(&one),
                Slot {
                    tag: Some((0x8100, 0x2007)),
                    ..slot(&two)
                },
                slot(&three),
            ],
            libc::TP_STATUS_USER,
        );
        assert!(!losing(&b));
        let frames = walk_all(&mut b);
        let mut tagged = two[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x20, 0x07]);
        tagged.extend_from_slice(&two[12..]);
        assert_eq!(frames, [Ok(one), Ok(tagged), Ok(three)]);
    }

    #[test]
    fn outgoing_cut_and_runt_frames_are_told_apart() {
        let (big, ok) = (frame(1, 200), frame(2, 60));
        let mut b = block(
            &[
                Slot {
                    outgoing: true,
                    ..slot(&ok)
                },
                Slot {
                    wire_len: Some(65000),
                    ..slot(&big)
                },
                slot(&[7; 10]),
                slot(&ok),
            ],
            libc::TP_STATUS_USER | libc::TP_STATUS_LOSING,
        );
        assert!(losing(&b), "the kernel dropped frames before closing it");
        assert_eq!(
            walk_all(&mut b),
            [
                Err("outgoing".into()),
                Err("oversize".into()),
                Err("runt".into()),
                Ok(ok)
            ]
        );
    }

    #[test]
    fn an_empty_block_has_no_frames() {
        let mut b = block(&[], libc::TP_STATUS_USER);
        assert!(walk_all(&mut b).is_empty());
    }

    #[test]
    fn a_malformed_block_ends_the_walk_without_reading_past_it() {
        let ok = frame(1, 60);
        // A second frame announced but not linked.
        let mut b = block(&[slot(&ok), slot(&ok)], libc::TP_STATUS_USER);
        put32(&mut b, BLOCK_DESC_LEN + TP_NEXT_OFFSET, 0);
        assert_eq!(
            walk_all(&mut b),
            [
                Ok(ok.clone()),
                Err("malformed ring block: a frame missing".into())
            ]
        );

        // A frame running past the end of the block.
        let mut b = block(&[slot(&ok)], libc::TP_STATUS_USER);
        put32(&mut b, BLOCK_DESC_LEN + TP_SNAPLEN, 9000);
        assert_eq!(
            walk_all(&mut b),
            [Err("malformed ring block: frame outside its slot".into())]
        );

        // More frames than the block has room for headers.
        let mut b = block(&[slot(&ok)], libc::TP_STATUS_USER);
        put32(&mut b, NUM_PKTS, 1000);
        let walked = walk_all(&mut b);
        assert_eq!(walked.len(), 2, "{walked:?}");
        assert!(walked[1].is_err(), "{walked:?}");

        // A first frame outside the block.
        let mut b = block(&[slot(&ok)], libc::TP_STATUS_USER);
        put32(&mut b, OFFSET_TO_FIRST_PKT, 1 << 20);
        assert!(BlockWalk::new(&b).is_err());
        assert!(BlockWalk::new(&b[..20]).is_err());
    }

    #[test]
    fn the_offsets_are_the_kernels() {
        assert_eq!(offset_of!(libc::tpacket_block_desc, hdr), 8);
        assert_eq!(
            offset_of!(libc::tpacket_hdr_v1, block_status) + 8,
            BLOCK_STATUS
        );
        assert_eq!(offset_of!(libc::tpacket_hdr_v1, num_pkts) + 8, NUM_PKTS);
        assert_eq!(
            offset_of!(libc::tpacket_hdr_v1, offset_to_first_pkt) + 8,
            OFFSET_TO_FIRST_PKT
        );
        assert_eq!(size_of::<libc::tpacket_block_desc>(), BLOCK_DESC_LEN);
        assert_eq!(
            offset_of!(libc::tpacket3_hdr, tp_next_offset),
            TP_NEXT_OFFSET
        );
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_snaplen), TP_SNAPLEN);
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_len), TP_LEN);
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_status), TP_STATUS);
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_mac), TP_MAC);
        let hv1 = offset_of!(libc::tpacket3_hdr, hv1);
        assert_eq!(
            hv1 + offset_of!(libc::tpacket_hdr_variant1, tp_vlan_tci),
            TP_VLAN_TCI
        );
        assert_eq!(
            hv1 + offset_of!(libc::tpacket_hdr_variant1, tp_vlan_tpid),
            TP_VLAN_TPID
        );
        assert_eq!(libc::TPACKET3_HDRLEN, TPACKET3_HDRLEN);
        assert_eq!(
            TPACKET3_HDRLEN - size_of::<libc::sockaddr_ll>()
                + offset_of!(libc::sockaddr_ll, sll_pkttype),
            SLL_PKTTYPE
        );
    }
}
