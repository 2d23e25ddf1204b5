//! Frame buffers and their pool: the data plane allocates while it warms up, then only
//! recycles.

use vnet_core::switch::RETAG_HEADROOM;

/// Room in front of every frame: a `virtio_net_hdr_v1` (12 bytes) for backends that
/// exchange offload metadata, plus room to insert an 802.1Q tag in place.
pub const HEADROOM: usize = VIRTIO_NET_HDR_LEN + RETAG_HEADROOM;

/// Size of `struct virtio_net_hdr_v1` (with `num_buffers`), as TAP `IFF_VNET_HDR` and
/// vhost-user with `VIRTIO_NET_F_MRG_RXBUF` use it.
pub const VIRTIO_NET_HDR_LEN: usize = 12;

/// Offload metadata that travels with a frame (`virtio_net_hdr`). All zeros means a
/// plain, fully checksummed frame; no backend produces anything else yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offload {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

/// One frame in a buffer with headroom.
#[derive(Debug)]
pub struct FrameBuf {
    data: Box<[u8]>,
    start: usize,
    len: usize,
    pub offload: Offload,
}

impl FrameBuf {
    fn new(capacity: usize) -> Self {
        FrameBuf {
            data: vec![0; HEADROOM + capacity].into_boxed_slice(),
            start: HEADROOM,
            len: 0,
            offload: Offload::default(),
        }
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
        self.offload = Offload::default();
        &mut self.data[HEADROOM..]
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

    /// Copies another frame and its metadata into this buffer (flooding).
    pub fn copy_from(&mut self, other: &FrameBuf) {
        self.fill(other.frame());
        self.offload = other.offload;
    }

    /// Applies the egress tagging a switch decided.
    pub fn retag(&mut self, want: vnet_core::switch::Tagging) {
        let ok = vnet_core::switch::retag(&mut self.data, &mut self.start, &mut self.len, want);
        debug_assert!(ok, "HEADROOM always leaves room for a tag");
    }
}

/// Buffers of one size, recycled.
#[derive(Debug)]
pub struct BufPool {
    capacity: usize,
    free: Vec<FrameBuf>,
}

impl BufPool {
    /// A pool of buffers that hold frames of up to `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        BufPool {
            capacity,
            free: Vec::new(),
        }
    }

    /// Largest frame a buffer of this pool holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn get(&mut self) -> FrameBuf {
        self.free
            .pop()
            .unwrap_or_else(|| FrameBuf::new(self.capacity))
    }

    pub fn put(&mut self, buf: FrameBuf) {
        // Keep a bounded reserve so a burst does not pin its memory forever.
        if self.free.len() < 4096 {
            self.free.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vnet_core::switch::Tagging;

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
