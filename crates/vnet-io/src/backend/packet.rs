//! Frames over an AF_PACKET socket, for the two kinds of port that use one: uplinks (a
//! vnet bridged to a NIC, [`super::uplink`]) and interface ports (one host interface
//! someone else holds, [`super::interface`]).
//!
//! Both read a frame behind its `virtio_net_hdr` and put back the 802.1Q tag the kernel
//! stripped into metadata (from a `recvmsg`, or from an uplink's receive ring), and both
//! send frames with their headers (and, for an uplink on one VLAN of its NIC, a tag),
//! a batch per system call. Offload metadata follows the headers when a tag comes or
//! goes.

use std::cell::Cell;
use std::io;
use std::rc::Rc;

use vnet_core::switch::DropCause;
use vnet_core::wire::offload::{VirtioNetHdr, VIRTIO_NET_HDR_LEN};

use super::{Sent, TX_BATCH};
use crate::frame::FrameBuf;
use crate::sys::packet::{FrameBatch, PacketSocket, RecvFrames, RecvMeta, PACKET_VNET_HDR_LEN};

/// Bytes of an 802.1Q tag.
const TAG_LEN: usize = 4;

/// Bytes a receive buffer needs in front of the frame: room to put a stripped tag back
/// without moving the payload, then the offload header.
pub(crate) const FRONT: usize = TAG_LEN + PACKET_VNET_HDR_LEN;

/// What one [`read`] found.
pub(crate) enum Read {
    /// A frame at `start..start + len` of the buffer, its tag back in place.
    Frame {
        start: usize,
        len: usize,
        offload: VirtioNetHdr,
    },
    /// A frame the interface sent (the host's, or another socket's): never taken in,
    /// so nothing loops.
    Outgoing,
    /// A frame that cannot be forwarded: cut to the buffer, or shorter than a header.
    Dropped(DropCause),
}

/// Reads one frame into `space`, whose first [`FRONT`] bytes are room for the header
/// and a tag; `WouldBlock` when there is none, other errors as the socket reports them
/// (`ENETDOWN`: the interface went down or away).
pub(crate) fn read(sock: &PacketSocket, space: &mut [u8]) -> io::Result<Read> {
    let meta = sock.recv(&mut space[TAG_LEN..])?;
    Ok(take(space, meta))
}

/// Takes the frame `meta` describes from `space` (as [`read`] has it: [`TAG_LEN`] bytes
/// of room, the offload header, the frame), putting its stripped tag back in place.
/// The receive ring hands over frames the same way.
pub(crate) fn take(space: &mut [u8], meta: RecvMeta) -> Read {
    let RecvMeta {
        len,
        truncated,
        outgoing,
        stripped_tag,
        ..
    } = meta;
    if outgoing {
        return Read::Outgoing;
    }
    if truncated {
        return Read::Dropped(DropCause::Oversize);
    }
    let Some(len) = len
        .checked_sub(PACKET_VNET_HDR_LEN)
        .filter(|len| *len >= 14 && FRONT + len <= space.len())
    else {
        return Read::Dropped(DropCause::Runt);
    };
    let mut hdr = [0u8; VIRTIO_NET_HDR_LEN];
    hdr[..PACKET_VNET_HDR_LEN].copy_from_slice(&space[TAG_LEN..FRONT]);
    let mut offload = VirtioNetHdr::parse(&hdr);
    match stripped_tag {
        Some((tpid, tci)) => {
            // The addresses move into the room in front; the tag goes between them and
            // the rest, which stays where it is.
            let start = FRONT - TAG_LEN;
            space.copy_within(FRONT..FRONT + 12, start);
            space[start + 12..start + 14].copy_from_slice(&tpid.to_be_bytes());
            space[start + 14..start + 16].copy_from_slice(&tci.to_be_bytes());
            shift_offsets(&mut offload, TAG_LEN as u16);
            Read::Frame {
                start,
                len: len + TAG_LEN,
                offload,
            }
        }
        None => Read::Frame {
            start: FRONT,
            len,
            offload,
        },
    }
}

/// Frames one `recvmmsg` takes at most.
const RECV_BATCH: usize = 32;

/// Bytes of each receive buffer: a GSO super-frame, its headers and room for a tag.
const RECV_BUFFER: usize = 70000;

/// Reads frames many per system call (`recvmmsg`), each into a buffer of its own laid
/// out as [`read`] wants it, and counts the frames the socket dropped.
pub(crate) struct Receiver {
    frames: Box<RecvFrames<RECV_BATCH>>,
    /// The socket's drop count as last seen, and where the news goes.
    dropped: u32,
    lost: Rc<Cell<u64>>,
    /// Untouched pages of these cost no memory: a buffer is as big as its largest frame.
    bufs: Vec<Box<[u8]>>,
    /// Frames the last `recvmmsg` brought, and the next one to hand out.
    got: usize,
    next: usize,
}

impl Receiver {
    /// A receiver for `sock` that adds the frames the kernel drops on it to `lost`.
    pub fn new(sock: &PacketSocket, lost: Rc<Cell<u64>>) -> Self {
        if let Err(e) = sock.count_drops() {
            tracing::warn!("frames the kernel drops on an uplink socket go uncounted: {e}");
        }
        Receiver {
            frames: RecvFrames::new(),
            dropped: 0,
            lost,
            bufs: (0..RECV_BATCH)
                .map(|_| vec![0; RECV_BUFFER].into_boxed_slice())
                .collect(),
            got: 0,
            next: 0,
        }
    }

    /// The next frame from `sock`: its buffer and where in it the frame is (as
    /// [`read`] has them); `WouldBlock` when there is none, other errors as the socket
    /// reports them.
    pub fn next(&mut self, sock: &PacketSocket) -> io::Result<(&mut [u8], Read)> {
        if self.next == self.got {
            self.got = 0;
            self.next = 0;
            let bufs = self.bufs.iter_mut().map(|b| &mut b[TAG_LEN..]);
            self.got = self.frames.recv(sock, bufs)?;
        }
        let i = self.next;
        self.next += 1;
        let meta = self.frames.meta(i, RECV_BUFFER - TAG_LEN);
        let new = meta.dropped.wrapping_sub(self.dropped);
        if new > 0 {
            self.dropped = meta.dropped;
            self.lost.set(self.lost.get() + u64::from(new));
        }
        let read = take(&mut self.bufs[i], meta);
        Ok((&mut self.bufs[i], read))
    }
}

/// Sends frames out of an AF_PACKET socket, many per system call (`sendmmsg`), each
/// with its offload header and, for an uplink on one VLAN of its NIC, a tag.
pub(crate) struct Sender {
    batch: Box<FrameBatch<TX_BATCH>>,
    /// The frames' offload headers and tags, which the batch's parts point into.
    headers: [[u8; PACKET_VNET_HDR_LEN]; TX_BATCH],
    tag: Option<[u8; TAG_LEN]>,
}

impl Sender {
    /// A sender that inserts an 802.1Q tag for VLAN `tag`, if one is given.
    pub fn new(tag: Option<u16>) -> Self {
        Sender {
            batch: FrameBatch::new(),
            headers: [[0; PACKET_VNET_HDR_LEN]; TX_BATCH],
            tag: tag.map(|vid| [0x81, 0x00, (vid >> 8) as u8 & 0x0f, vid as u8]),
        }
    }

    /// [`super::Backend::send_batch`] on `sock`: sends `frames` in order until one is
    /// not sent. `Err` when the interface refuses a frame for being down or gone: the
    /// caller says so (once) and drops that frame as `link_down`.
    pub fn send(&mut self, sock: &PacketSocket, frames: &[FrameBuf]) -> (usize, io::Result<Sent>) {
        // Frames up to the first runt go; the runt is dropped after them.
        let runt = frames
            .iter()
            .take(TX_BATCH)
            .position(|f| f.frame().len() < 14);
        let count = runt.unwrap_or(frames.len().min(TX_BATCH));
        let tagged = self.tag.is_some();
        for (frame, hdr) in frames[..count].iter().zip(&mut self.headers) {
            let mut offload = frame.offload;
            if tagged {
                shift_offsets(&mut offload, TAG_LEN as u16);
            }
            let mut full = [0u8; VIRTIO_NET_HDR_LEN];
            offload.write(&mut full);
            hdr.copy_from_slice(&full[..PACKET_VNET_HDR_LEN]);
        }
        let (headers, tag) = (&self.headers, &self.tag);
        let parts = frames[..count].iter().zip(headers).map(|(frame, hdr)| {
            let f = frame.frame();
            match tag {
                Some(tag) => [&hdr[..], &f[..12], &tag[..], &f[12..]],
                None => [&hdr[..], f, &[][..], &[][..]],
            }
        });
        let (sent, result) = self.batch.send(sock, parts);
        let outcome = match result {
            Ok(()) if runt.is_some() => Ok(Sent::Dropped(DropCause::Runt)),
            Ok(()) => Ok(Sent::Done),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Sent::WouldBlock),
            Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                Ok(Sent::Dropped(DropCause::Oversize))
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                Ok(Sent::Dropped(DropCause::QueueFull))
            }
            Err(e) => Err(e),
        };
        (sent, outcome)
    }
}

/// Moves the header offsets of offload metadata by `by` bytes (a tag inserted).
fn shift_offsets(hdr: &mut VirtioNetHdr, by: u16) {
    if hdr.needs_csum() {
        hdr.csum_start += by;
    }
    if hdr.hdr_len != 0 {
        hdr.hdr_len += by;
    }
}
