//! Frame buffers and their pool: the data plane allocates while it warms up, then only
//! recycles.

use vnet_core::switch::{Tagging, RETAG_HEADROOM};
use vnet_core::wire::offload::{VirtioNetHdr, VIRTIO_NET_HDR_LEN};

/// Room in front of every frame: a `virtio_net_hdr_v1` for backends that exchange
/// offload metadata (read in place, in front of the frame), plus room to insert an
/// 802.1Q tag in place.
pub const HEADROOM: usize = VIRTIO_NET_HDR_LEN + RETAG_HEADROOM;

/// Capacity of the large buffers offload-capable ports receive into: a GSO super-frame
/// of up to 64 KiB plus its headers.
pub const LARGE_CAPACITY: usize = 65536 + 64;

/// One frame in a buffer with headroom.
#[derive(Debug)]
pub struct FrameBuf {
    data: Box<[u8]>,
    start: usize,
    len: usize,
    /// Offload metadata (`virtio_net_hdr`): all zeros means a plain, fully checksummed
    /// frame. Only offload-capable backends produce or accept anything else.
    pub offload: VirtioNetHdr,
}

impl FrameBuf {
    fn new(capacity: usize) -> Self {
        FrameBuf {
            data: vec![0; HEADROOM + capacity].into_boxed_slice(),
            start: HEADROOM,
            len: 0,
            offload: VirtioNetHdr::default(),
        }
    }

    /// A buffer for a GSO super-frame, as [`BufPool::get_large`] makes them: for
    /// services that build frames in place and hand them over whole.
    pub fn large() -> Self {
        FrameBuf::new(LARGE_CAPACITY)
    }

    /// The frame's bytes.
    pub fn frame(&self) -> &[u8] {
        &self.data[self.start..self.start + self.len]
    }

    /// The space a backend receives into (everything after the headroom). Call
    /// [`FrameBuf::set_len`] with what it wrote.
    pub fn recv_space(&mut self) -> &mut [u8] {
        self.start = HEADROOM;
        self.len = 0;
        self.offload = VirtioNetHdr::default();
        &mut self.data[HEADROOM..]
    }

    /// The space a backend with a `virtio_net_hdr` in front of each frame receives into;
    /// finish with [`FrameBuf::set_vnet_len`].
    pub fn recv_space_with_header(&mut self) -> &mut [u8] {
        self.recv_space();
        &mut self.data[HEADROOM - VIRTIO_NET_HDR_LEN..]
    }

    /// Takes `n` bytes received by [`FrameBuf::recv_space_with_header`]: the header
    /// becomes [`FrameBuf::offload`], the rest the frame. `false` if `n` is too short to
    /// hold the header.
    pub fn set_vnet_len(&mut self, n: usize) -> bool {
        let Some(len) = n.checked_sub(VIRTIO_NET_HDR_LEN) else {
            return false;
        };
        let hdr: &[u8; VIRTIO_NET_HDR_LEN] = self.data[HEADROOM - VIRTIO_NET_HDR_LEN..HEADROOM]
            .try_into()
            .expect("header length");
        self.offload = VirtioNetHdr::parse(hdr);
        self.set_len(len);
        true
    }

    /// The space a backend receives into when `front` bytes of its own precede the
    /// frame (a header, room to put a stripped tag back), `front` at most
    /// [`HEADROOM`]; finish with [`FrameBuf::set_front_range`].
    pub fn recv_space_front(&mut self, front: usize) -> &mut [u8] {
        self.recv_space();
        &mut self.data[HEADROOM - front..]
    }

    /// Marks `len` bytes at `offset` into the space of
    /// [`FrameBuf::recv_space_front`]`(front)` as the frame.
    pub fn set_front_range(&mut self, front: usize, offset: usize, len: usize) {
        self.start = HEADROOM - front + offset;
        self.set_len(len);
    }

    /// The frame's bytes, for in-place changes (checksum completion).
    pub fn frame_mut(&mut self) -> &mut [u8] {
        &mut self.data[self.start..self.start + self.len]
    }

    /// Whether the frame needs an offload-capable receiver: a GSO super-frame or a
    /// partial checksum.
    pub fn needs_offload(&self) -> bool {
        self.offload.is_gso() || self.offload.needs_csum()
    }

    /// Buffer capacity (largest frame it holds).
    pub fn capacity(&self) -> usize {
        self.data.len() - HEADROOM
    }

    /// Marks `len` bytes at `offset` into the receive space as the frame (a backend
    /// whose messages carry a header of their own, like the vnet API's kind byte).
    pub fn set_range(&mut self, offset: usize, len: usize) {
        self.start = HEADROOM + offset;
        self.set_len(len);
    }

    pub fn set_len(&mut self, len: usize) {
        assert!(
            self.start + len <= self.data.len(),
            "frame longer than its buffer"
        );
        self.len = len;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `bytes` in as the frame (for frames that arrived in another buffer).
    pub fn fill(&mut self, bytes: &[u8]) {
        let space = self.recv_space();
        space[..bytes.len()].copy_from_slice(bytes);
        self.len = bytes.len();
    }

    /// Copies another frame and its metadata into this buffer (flooding); `self` must
    /// be at least as large (see [`BufPool::get_for`]).
    pub fn copy_from(&mut self, other: &FrameBuf) {
        self.fill(other.frame());
        self.offload = other.offload;
    }

    /// Applies the egress tagging a switch decided. Offsets in the offload metadata
    /// follow the headers when a tag comes or goes.
    pub fn retag(&mut self, want: Tagging) {
        let before = self.len;
        let ok = vnet_core::switch::retag(&mut self.data, &mut self.start, &mut self.len, want);
        debug_assert!(ok, "HEADROOM always leaves room for a tag");
        if self.len != before && self.offload != VirtioNetHdr::default() {
            let shift = |v: u16| {
                if self.len > before {
                    v + 4
                } else {
                    v.saturating_sub(4)
                }
            };
            if self.offload.needs_csum() {
                self.offload.csum_start = shift(self.offload.csum_start);
            }
            if self.offload.hdr_len != 0 {
                self.offload.hdr_len = shift(self.offload.hdr_len);
            }
        }
    }
}

/// Buffers in two sizes, recycled: small ones hold a frame of the vnet's MTU, large
/// ones a GSO super-frame from an offload-capable port.
#[derive(Debug)]
pub struct BufPool {
    capacity: usize,
    small: Vec<FrameBuf>,
    large: Vec<FrameBuf>,
}

/// Buffers of each size kept for reuse; beyond that a burst's memory is given back.
const RESERVE: usize = 1024;

impl BufPool {
    /// A pool whose small buffers hold frames of up to `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        BufPool {
            capacity,
            small: Vec::new(),
            large: Vec::new(),
        }
    }

    /// Largest frame a small buffer holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn get(&mut self) -> FrameBuf {
        self.small
            .pop()
            .unwrap_or_else(|| FrameBuf::new(self.capacity))
    }

    /// A buffer for a GSO super-frame.
    pub fn get_large(&mut self) -> FrameBuf {
        let capacity = self.capacity.max(LARGE_CAPACITY);
        self.large.pop().unwrap_or_else(|| FrameBuf::new(capacity))
    }

    /// A buffer big enough for `len` bytes.
    pub fn get_for(&mut self, len: usize) -> FrameBuf {
        if len <= self.capacity {
            self.get()
        } else {
            self.get_large()
        }
    }

    pub fn put(&mut self, buf: FrameBuf) {
        let list = if buf.capacity() <= self.capacity {
            &mut self.small
        } else {
            &mut self.large
        };
        if list.len() < RESERVE {
            list.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retag_uses_headroom_and_pool_recycles() {
        let mut pool = BufPool::new(1518);
        let mut b = pool.get();
        let mut frame = vec![0xffu8; 12];
        frame.extend_from_slice(&[0x08, 0x00, 1, 2, 3]);
        b.fill(&frame);
        b.retag(Tagging::Tagged(10));
        assert_eq!(&b.frame()[12..16], &[0x81, 0x00, 0x00, 0x0a]);
        b.retag(Tagging::Untagged);
        assert_eq!(b.frame(), &frame[..]);
        pool.put(b);
        assert_eq!(pool.get().recv_space().len(), 1518);
    }
}
