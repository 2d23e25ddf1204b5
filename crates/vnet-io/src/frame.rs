//! Frame buffers and their pool: the data plane allocates while it warms up, then
//! recycles, and gives back what a burst left idle ([`BufPool::trim`]).
//!
//! A flooded frame is stored once: [`FrameBuf::share`] copies it into a
//! reference-counted buffer (once) and hands each egress queue a handle on it;
//! whatever changes a shared frame in place (a VLAN retag, a completed checksum)
//! copies it back into a buffer of its own first. The shared buffer goes back to the
//! pool with the last handle. A frame that is not flooded never leaves its own
//! buffer and never touches a reference count.

use std::sync::Arc;

use vnet_core::switch::{Tagging, RETAG_HEADROOM};
use vnet_core::wire::ethernet::EtherType;
use vnet_core::wire::offload::{VirtioNetHdr, VIRTIO_NET_HDR_LEN};

/// Room in front of every frame: a `virtio_net_hdr_v1` for backends that exchange
/// offload metadata (read in place, in front of the frame), plus room to insert an
/// 802.1Q tag in place.
pub const HEADROOM: usize = VIRTIO_NET_HDR_LEN + RETAG_HEADROOM;

/// Capacity of the large buffers offload-capable ports receive into: a GSO super-frame
/// of up to 64 KiB plus its headers.
pub const LARGE_CAPACITY: usize = 65536 + 64;

/// A buffer's bytes: its own, or shared by the handles [`FrameBuf::share`] made
/// (each with its own view: `start`, `len`, `offload`).
#[derive(Debug)]
enum Bytes {
    Own(Box<[u8]>),
    Shared(Arc<[u8]>),
}

/// One frame in a buffer with headroom.
#[derive(Debug)]
pub struct FrameBuf {
    data: Bytes,
    /// Where the frame starts in `data`, and its length (`u32`: a `FrameBuf` stays
    /// 48 bytes, moved by value on the frame path; buffers are far below 4 GiB).
    start: u32,
    len: u32,
    /// Offload metadata (`virtio_net_hdr`): all zeros means a plain, fully checksummed
    /// frame. Only offload-capable backends produce or accept anything else.
    pub offload: VirtioNetHdr,
}

impl FrameBuf {
    fn new(capacity: usize) -> Self {
        FrameBuf {
            data: Bytes::Own(vec![0; HEADROOM + capacity].into_boxed_slice()),
            start: HEADROOM as u32,
            len: 0,
            offload: VirtioNetHdr::default(),
        }
    }

    #[inline(always)]
    fn range(&self) -> std::ops::Range<usize> {
        self.start as usize..(self.start + self.len) as usize
    }

    /// A buffer for a GSO super-frame, as [`BufPool::get_large`] makes them: for
    /// services that build frames in place and hand them over whole.
    pub fn large() -> Self {
        FrameBuf::new(LARGE_CAPACITY)
    }

    /// Another handle on the same frame, for one more egress queue. The first call
    /// moves the frame into a shared buffer from `pool` (its own buffer goes back
    /// there); later ones copy nothing.
    pub fn share(&mut self, pool: &mut BufPool) -> FrameBuf {
        if let Bytes::Own(own) = &self.data {
            let mut shared = pool.get_shared(own.len());
            let range = self.range();
            Arc::get_mut(&mut shared).expect("a pooled shared buffer is unique")[range.clone()]
                .copy_from_slice(&own[range]);
            if let Bytes::Own(own) = std::mem::replace(&mut self.data, Bytes::Shared(shared)) {
                pool.put_own(own);
            }
        }
        let Bytes::Shared(shared) = &self.data else {
            unreachable!("made shared above")
        };
        FrameBuf {
            data: Bytes::Shared(Arc::clone(shared)),
            start: self.start,
            len: self.len,
            offload: self.offload,
        }
    }

    /// Whether another handle reads the same bytes.
    pub fn is_shared(&self) -> bool {
        matches!(&self.data, Bytes::Shared(a) if Arc::strong_count(a) > 1)
    }

    #[inline(always)]
    fn data(&self) -> &[u8] {
        match &self.data {
            Bytes::Own(b) => b,
            Bytes::Shared(a) => a,
        }
    }

    /// The bytes for writing: a shared frame is copied into bytes of its own first.
    #[inline(always)]
    fn data_mut(&mut self) -> &mut [u8] {
        if let Bytes::Shared(_) = &self.data {
            self.unshare(false);
        }
        match &mut self.data {
            Bytes::Own(b) => b,
            Bytes::Shared(_) => unreachable!("made its own above"),
        }
    }

    /// Gives a shared frame bytes of its own: a copy, or (`fresh`) zeros to receive
    /// into. Not on the path of frames that are not flooded.
    #[cold]
    #[inline(never)]
    fn unshare(&mut self, fresh: bool) {
        if let Bytes::Shared(a) = &self.data {
            self.data = Bytes::Own(if fresh {
                vec![0; a.len()].into_boxed_slice()
            } else {
                a[..].into()
            });
        }
    }

    /// The frame's bytes.
    pub fn frame(&self) -> &[u8] {
        &self.data()[self.range()]
    }

    /// The space a backend receives into (everything after the headroom). Call
    /// [`FrameBuf::set_len`] with what it wrote.
    pub fn recv_space(&mut self) -> &mut [u8] {
        self.start = HEADROOM as u32;
        self.len = 0;
        self.offload = VirtioNetHdr::default();
        if let Bytes::Shared(_) = &self.data {
            // What is received replaces the frame: bytes of its own, nothing copied.
            self.unshare(true);
        }
        &mut self.data_mut()[HEADROOM..]
    }

    /// The space a backend with a `virtio_net_hdr` in front of each frame receives into;
    /// finish with [`FrameBuf::set_vnet_len`].
    pub fn recv_space_with_header(&mut self) -> &mut [u8] {
        self.recv_space();
        &mut self.data_mut()[HEADROOM - VIRTIO_NET_HDR_LEN..]
    }

    /// Takes `n` bytes received by [`FrameBuf::recv_space_with_header`]: the header
    /// becomes [`FrameBuf::offload`], the rest the frame. `false` if `n` is too short to
    /// hold the header.
    pub fn set_vnet_len(&mut self, n: usize) -> bool {
        let Some(len) = n.checked_sub(VIRTIO_NET_HDR_LEN) else {
            return false;
        };
        let hdr: &[u8; VIRTIO_NET_HDR_LEN] = self.data()[HEADROOM - VIRTIO_NET_HDR_LEN..HEADROOM]
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
        &mut self.data_mut()[HEADROOM - front..]
    }

    /// Marks `len` bytes at `offset` into the space of
    /// [`FrameBuf::recv_space_front`]`(front)` as the frame.
    pub fn set_front_range(&mut self, front: usize, offset: usize, len: usize) {
        self.start = (HEADROOM - front + offset) as u32;
        self.set_len(len);
    }

    /// The frame's bytes, for in-place changes (checksum completion).
    pub fn frame_mut(&mut self) -> &mut [u8] {
        let range = self.range();
        &mut self.data_mut()[range]
    }

    /// Whether the frame needs an offload-capable receiver: a GSO super-frame or a
    /// partial checksum.
    pub fn needs_offload(&self) -> bool {
        self.offload.is_gso() || self.offload.needs_csum()
    }

    /// Buffer capacity (largest frame it holds).
    pub fn capacity(&self) -> usize {
        self.data().len() - HEADROOM
    }

    /// Marks `len` bytes at `offset` into the receive space as the frame (a backend
    /// whose messages carry a header of their own, like the vnet API's kind byte).
    pub fn set_range(&mut self, offset: usize, len: usize) {
        self.start = (HEADROOM + offset) as u32;
        self.set_len(len);
    }

    pub fn set_len(&mut self, len: usize) {
        assert!(
            self.start as usize + len <= self.data().len(),
            "frame longer than its buffer"
        );
        self.len = len as u32;
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `bytes` in as the frame (for frames that arrived in another buffer).
    pub fn fill(&mut self, bytes: &[u8]) {
        let space = self.recv_space();
        space[..bytes.len()].copy_from_slice(bytes);
        self.len = bytes.len() as u32;
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
        if self.tagging() == want {
            // Nothing to change: a shared frame stays shared.
            return;
        }
        let before = self.len;
        let (mut start, mut len) = (self.start as usize, self.len as usize);
        let ok = vnet_core::switch::retag(self.data_mut(), &mut start, &mut len, want);
        (self.start, self.len) = (start as u32, len as u32);
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

impl FrameBuf {
    /// The tagging the frame has now (a parsed frame: at least a header).
    fn tagging(&self) -> Tagging {
        let f = self.frame();
        if f.len() >= 16 && u16::from_be_bytes([f[12], f[13]]) == EtherType::VLAN {
            Tagging::Tagged(u16::from_be_bytes([f[14], f[15]]) & 0x0fff)
        } else {
            Tagging::Untagged
        }
    }
}

/// Buffers in two sizes, recycled: small ones hold a frame of the vnet's MTU, large
/// ones a GSO super-frame from an offload-capable port. What stayed idle through a
/// whole [`BufPool::trim`] period is freed, so a burst's memory goes back.
#[derive(Debug)]
pub struct BufPool {
    capacity: usize,
    small: FreeList<FrameBuf>,
    large: FreeList<FrameBuf>,
    /// Shared buffers of both sizes, for flooded frames ([`FrameBuf::share`]): an
    /// offload-capable port's frames arrive in large buffers, and a fresh 64 KiB
    /// shared buffer per flood cost a memset and a copy of all of it.
    shared: FreeList<Arc<[u8]>>,
    shared_large: FreeList<Arc<[u8]>>,
}

/// Idle buffers of one kind, with the fewest there were since the last trim: that many
/// were not needed at all in the period.
#[derive(Debug)]
struct FreeList<T> {
    bufs: Vec<T>,
    low: usize,
}

impl<T> Default for FreeList<T> {
    fn default() -> Self {
        FreeList {
            bufs: Vec::new(),
            low: 0,
        }
    }
}

impl<T> FreeList<T> {
    #[inline(always)]
    fn pop(&mut self) -> Option<T> {
        let buf = self.bufs.pop();
        self.low = self.low.min(self.bufs.len());
        buf
    }

    #[inline]
    fn push(&mut self, buf: T) {
        if self.bufs.len() < RESERVE {
            self.bufs.push(buf);
        }
    }

    /// Frees the buffers unused since the last call but `keep`; returns how many.
    fn trim(&mut self, keep: usize) -> usize {
        let idle = self.low.min(self.bufs.len().saturating_sub(keep));
        self.bufs.truncate(self.bufs.len() - idle);
        if self.bufs.capacity() > 2 * self.bufs.len().max(keep) {
            self.bufs.shrink_to(self.bufs.len().max(keep));
        }
        self.low = self.bufs.len();
        idle
    }
}

/// Buffers of each size kept for reuse at most; beyond that a burst's memory is given
/// back at once.
const RESERVE: usize = 1024;
/// Idle small buffers a trim keeps (a few turns' worth), and large ones.
const KEEP_SMALL: usize = 64;
const KEEP_LARGE: usize = 4;

impl BufPool {
    /// A pool whose small buffers hold frames of up to `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        BufPool {
            capacity,
            small: FreeList::default(),
            large: FreeList::default(),
            shared: FreeList::default(),
            shared_large: FreeList::default(),
        }
    }

    /// Largest frame a small buffer holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    #[inline(always)]
    fn large_capacity(&self) -> usize {
        self.capacity.max(LARGE_CAPACITY)
    }

    #[inline]
    pub fn get(&mut self) -> FrameBuf {
        self.small
            .pop()
            .unwrap_or_else(|| FrameBuf::new(self.capacity))
    }

    /// A buffer for a GSO super-frame.
    pub fn get_large(&mut self) -> FrameBuf {
        let capacity = self.large_capacity();
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

    /// An unshared buffer of `size` bytes (headroom included) to share a frame in.
    fn get_shared(&mut self, size: usize) -> Arc<[u8]> {
        let list = if size == HEADROOM + self.capacity {
            &mut self.shared
        } else if size == HEADROOM + self.large_capacity() {
            &mut self.shared_large
        } else {
            return Arc::from(vec![0; size]);
        };
        list.pop().unwrap_or_else(|| Arc::from(vec![0; size]))
    }

    /// Takes a buffer back; a handle on a frame others still share is only dropped
    /// (the last one comes back). Buffers of neither size are dropped.
    #[inline(always)]
    pub fn put(&mut self, buf: FrameBuf) {
        if let Bytes::Shared(_) = &buf.data {
            return self.put_shared(buf);
        }
        let size = buf.capacity();
        let list = if size == self.capacity {
            &mut self.small
        } else if size == self.large_capacity() {
            &mut self.large
        } else {
            return;
        };
        if list.bufs.len() < RESERVE {
            list.bufs.push(buf);
        }
    }

    #[inline(never)]
    fn put_shared(&mut self, buf: FrameBuf) {
        if let Bytes::Shared(shared) = buf.data {
            if Arc::strong_count(&shared) == 1 {
                if shared.len() == HEADROOM + self.capacity {
                    self.shared.push(shared);
                } else if shared.len() == HEADROOM + self.large_capacity() {
                    self.shared_large.push(shared);
                }
            }
        }
    }

    fn put_own(&mut self, own: Box<[u8]>) {
        self.put(FrameBuf {
            data: Bytes::Own(own),
            start: HEADROOM as u32,
            len: 0,
            offload: VirtioNetHdr::default(),
        });
    }

    /// Frees the buffers no frame needed since the last trim (call about once a
    /// second), down to a few kept for the next frames; returns the bytes freed.
    pub fn trim(&mut self) -> usize {
        let small = HEADROOM + self.capacity;
        let large = HEADROOM + self.large_capacity();
        (self.small.trim(KEEP_SMALL) + self.shared.trim(KEEP_SMALL)) * small
            + (self.large.trim(KEEP_LARGE) + self.shared_large.trim(KEEP_LARGE)) * large
    }

    /// Bytes held by idle buffers.
    pub fn idle_bytes(&self) -> usize {
        let small = HEADROOM + self.capacity;
        let large = HEADROOM + self.large_capacity();
        (self.small.bufs.len() + self.shared.bufs.len()) * small
            + (self.large.bufs.len() + self.shared_large.bufs.len()) * large
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

    fn filled(pool: &mut BufPool, bytes: &[u8]) -> FrameBuf {
        let mut b = pool.get();
        b.fill(bytes);
        b
    }

    #[test]
    fn a_flooded_super_frame_s_shared_buffer_comes_back_for_the_next_one() {
        let mut pool = BufPool::new(1518);
        for round in 0..3 {
            let mut frame = pool.get_large();
            frame.fill(&[0xffu8; 60]);
            let copy = frame.share(&mut pool);
            assert_eq!(copy.frame(), &[0xffu8; 60][..]);
            assert_eq!(pool.shared_large.bufs.len(), 0, "round {round}: in use");
            pool.put(frame);
            pool.put(copy);
            assert_eq!(pool.shared_large.bufs.len(), 1, "round {round}: back");
        }
    }

    #[test]
    fn shared_frames_copy_only_on_a_change_and_come_back_once() {
        let mut pool = BufPool::new(1518);
        let mut frame = vec![0x01u8; 12];
        frame.extend_from_slice(&[0x08, 0x00, 9, 9]);
        let mut original = filled(&mut pool, &frame);
        let mut same = original.share(&mut pool);
        let mut tagged = original.share(&mut pool);
        assert_eq!(pool.small.bufs.len(), 1, "its own buffer went back");
        same.retag(Tagging::Untagged);
        assert!(same.is_shared(), "no change: still the same bytes");
        tagged.retag(Tagging::Tagged(7));
        assert!(!tagged.is_shared(), "a change copies first");
        assert_eq!(&tagged.frame()[12..16], &[0x81, 0x00, 0x00, 0x07]);
        assert_eq!(original.frame(), &frame[..], "the others never see it");
        assert_eq!(same.frame(), &frame[..]);
        let mut again = tagged.share(&mut pool);
        again.retag(Tagging::Tagged(7));
        assert!(again.is_shared(), "the same tag: shared");
        pool.put(original);
        assert_eq!(pool.shared.bufs.len(), 0, "still shared: not pooled");
        pool.put(same);
        assert_eq!(pool.shared.bufs.len(), 1, "the last handle comes back");
        pool.put(tagged);
        pool.put(again);
        // Back: the two own buffers (the original's, the retagged copy's, each
        // given up when it was shared) and the two shared ones.
        assert_eq!((pool.small.bufs.len(), pool.shared.bufs.len()), (2, 2));
        // A buffer of a size the pool does not hand out is not kept.
        pool.put(FrameBuf::new(100));
        assert_eq!(pool.small.bufs.len(), 2);
    }

    #[test]
    fn receiving_into_a_shared_buffer_leaves_the_others_alone() {
        let mut pool = BufPool::new(1518);
        let mut original = filled(&mut pool, &[5; 60]);
        let mut other = original.share(&mut pool);
        other.fill(&[6; 60]);
        assert_eq!(original.frame(), &[5; 60]);
        other.frame_mut()[0] = 7;
        assert_eq!(original.frame()[0], 5);
    }

    #[test]
    fn a_frame_buffer_is_moved_as_cheaply_as_before_sharing() {
        assert!(std::mem::size_of::<FrameBuf>() <= 48);
    }

    #[test]
    fn trimming_frees_what_a_burst_left_idle() {
        let mut pool = BufPool::new(1518);
        let burst: Vec<FrameBuf> = (0..500).map(|_| pool.get()).collect();
        burst.into_iter().for_each(|b| pool.put(b));
        assert_eq!(pool.small.bufs.len(), 500);
        // Busy period: 10 buffers in use at a time; 490 were never needed.
        pool.trim();
        let busy: Vec<FrameBuf> = (0..10).map(|_| pool.get()).collect();
        busy.into_iter().for_each(|b| pool.put(b));
        pool.trim();
        assert_eq!(pool.small.bufs.len(), 10.max(KEEP_SMALL));
        for _ in 0..3 {
            pool.trim();
        }
        assert_eq!(
            pool.small.bufs.len(),
            KEEP_SMALL,
            "idle: down to the few kept"
        );
        assert!(pool.small.bufs.capacity() <= 2 * KEEP_SMALL);
    }
}
