//! The data plane's side of a vhost-user port: the guest's two virtqueues, driven in
//! the data-plane thread itself.
//!
//! Once the front-end has set the queues up, the port's worker hands their
//! [`Rings`] over (memory map, vrings and the features acked); from then on every
//! frame is one copy between guest memory and a [`FrameBuf`], with no thread hop and no
//! system call per frame. Guest kicks still land on the worker's epoll, which only
//! turns them into a write of the port's eventfd, so the data plane hears of them in
//! its own poll. Notifications are batched both ways: kicks are asked for only while
//! a queue is idle (`EVENT_IDX` or the `NO_NOTIFY` flag), and the guest is interrupted
//! at most once per [`SIGNAL_EVERY`] TX buffers and once per burst.
//!
//! Nothing a guest writes in its rings can panic the data plane: descriptor chains are
//! walked by `virtio-queue` (which stops at loops and bad indices), every access to
//! guest memory is checked, and a chain that is not a frame is given back and counted
//! as a drop.

use std::sync::RwLockWriteGuard;

use vhost_user_backend::{VringState, VringT};
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_MRG_RXBUF,
};
use virtio_queue::{DescriptorChain, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemory, GuestMemoryAtomic};

use vnet_core::switch::DropCause;
use vnet_core::wire::offload::{self, VirtioNetHdr, VIRTIO_NET_HDR_LEN};

use super::{GuestMem, Vring};
use crate::backend::{Received, Sent};
use crate::frame::{FrameBuf, LARGE_CAPACITY};

/// Guest TX buffers given back before the guest is interrupted, while busy.
const SIGNAL_EVERY: u32 = 64;
/// Offset of `num_buffers` in `virtio_net_hdr_v1`.
const NUM_BUFFERS: u64 = 10;

/// What the worker hands the data plane once a front-end's queues are set up.
#[derive(Clone)]
pub(super) struct Rings {
    pub mem: GuestMemoryAtomic<GuestMem>,
    pub rx: Vring,
    pub tx: Vring,
    /// Virtio feature bits the front-end acked.
    pub acked: u64,
}

/// The data plane's state for one connection's queues.
pub(super) struct Queues {
    rings: Rings,
    state: State,
}

/// What the data plane keeps about the queues besides the rings.
struct State {
    acked: u64,
    /// Guest TX buffers used since the guest was last interrupted.
    tx_unsignalled: u32,
    /// Whether the TX queue asks for kicks (it was found empty).
    tx_listening: bool,
    /// Whether the RX queue asks for kicks (it had no room).
    rx_listening: bool,
    /// Where GSO frames are cut for a guest that cannot take them whole, and partial
    /// checksums completed (allocated on first use; Linux guests never need it).
    scratch: Vec<u8>,
}

type Guard<'a> = RwLockWriteGuard<'a, VringState<GuestMemoryAtomic<GuestMem>>>;

/// Why a frame did not go into the guest's RX queue.
enum NoFit {
    /// No buffers now: the popped ones were put back.
    NoRoom,
    /// The guest's buffers are bad or too small for it: dropped for this cause.
    Drop(DropCause),
}

impl Queues {
    pub fn new(rings: Rings) -> Queues {
        Queues {
            state: State {
                acked: rings.acked,
                tx_unsignalled: 0,
                tx_listening: false,
                rx_listening: false,
                scratch: Vec::new(),
            },
            rings,
        }
    }

    /// The next frame from the guest's TX queue into `buf`.
    pub fn recv(&mut self, buf: &mut FrameBuf) -> Received {
        let Queues { rings, state } = self;
        let mem = rings.mem.memory();
        let mut tx = rings.tx.get_mut();
        if !tx.is_enabled() || !tx.get_queue().ready() {
            return Received::WouldBlock;
        }
        loop {
            let q = tx.get_queue_mut();
            if let Some(chain) = q.pop_descriptor_chain(&*mem) {
                if state.tx_listening {
                    state.tx_listening = false;
                    let _ = q.disable_notification(&*mem);
                }
                let head = chain.head_index();
                let got = gather(chain, &*mem, buf);
                if q.add_used(&*mem, head, 0).is_err() {
                    return Received::Closed(
                        "the guest's TX used ring is not in its memory".into(),
                    );
                }
                state.tx_unsignalled += 1;
                if state.tx_unsignalled >= SIGNAL_EVERY {
                    state.signal_tx(&mut tx, &mem);
                }
                return got;
            }
            // Empty: ask for a kick, unless buffers came in the meantime.
            match q.enable_notification(&*mem) {
                Ok(true) => continue,
                Ok(false) => state.tx_listening = true,
                Err(_) => {}
            }
            state.signal_tx(&mut tx, &mem);
            return Received::WouldBlock;
        }
    }

    /// Frames for the guest into its RX queue, in order, until one does not fit.
    pub fn send(&mut self, frames: &[FrameBuf]) -> (usize, Sent) {
        let Queues { rings, state } = self;
        let mem = rings.mem.memory();
        let mut rx = rings.rx.get_mut();
        if !rx.is_enabled() || !rx.get_queue().ready() {
            // Not started (yet, or again): the frames wait for the guest's kick.
            return (0, Sent::WouldBlock);
        }
        let mut sent = 0;
        let mut outcome = Sent::Done;
        let mut used = false;
        for frame in frames {
            let result = match state.put(&mut rx, &mem, frame) {
                Err(NoFit::NoRoom) => match rx.get_queue_mut().enable_notification(&*mem) {
                    // Buffers came after all: one more try.
                    Ok(true) => state.put(&mut rx, &mem, frame),
                    _ => {
                        state.rx_listening = true;
                        Err(NoFit::NoRoom)
                    }
                },
                other => other,
            };
            match result {
                Ok(()) => {
                    sent += 1;
                    used = true;
                }
                Err(NoFit::NoRoom) => {
                    outcome = Sent::WouldBlock;
                    break;
                }
                Err(NoFit::Drop(cause)) => {
                    // Its buffers went back to the guest, used (length 0).
                    used = true;
                    outcome = Sent::Dropped(cause);
                    break;
                }
            }
        }
        if used && rx.get_queue_mut().needs_notification(&*mem).unwrap_or(true) {
            let _ = rx.signal_used_queue();
        }
        (sent, outcome)
    }
}

impl State {
    fn has(&self, bit: u32) -> bool {
        self.acked & (1 << bit) != 0
    }

    fn signal_tx(&mut self, tx: &mut Guard<'_>, mem: &GuestMem) {
        if self.tx_unsignalled == 0 {
            return;
        }
        self.tx_unsignalled = 0;
        if tx.get_queue_mut().needs_notification(mem).unwrap_or(true) {
            let _ = tx.signal_used_queue();
        }
    }

    /// One frame into the RX queue, made something the guest's acked features allow:
    /// the data plane hands GSO frames and partial checksums to every offloading port,
    /// and Linux acks all we offer, but a guest that did not gets ordinary segments with
    /// complete checksums.
    fn put(&mut self, rx: &mut Guard<'_>, mem: &GuestMem, frame: &FrameBuf) -> Result<(), NoFit> {
        if self.rx_listening {
            self.rx_listening = false;
            let _ = rx.get_queue_mut().disable_notification(mem);
        }
        let mergeable = self.has(VIRTIO_NET_F_MRG_RXBUF);
        let hdr = frame.offload;
        let gso_ok = hdr.gso_type & VirtioNetHdr::GSO_ECN == 0
            && match hdr.gso_kind() {
                VirtioNetHdr::GSO_NONE => true,
                VirtioNetHdr::GSO_TCPV4 => self.has(VIRTIO_NET_F_GUEST_TSO4),
                VirtioNetHdr::GSO_TCPV6 => self.has(VIRTIO_NET_F_GUEST_TSO6),
                _ => false,
            };
        let mut head = [0u8; VIRTIO_NET_HDR_LEN];
        if gso_ok && (!hdr.needs_csum() || self.has(VIRTIO_NET_F_GUEST_CSUM)) {
            hdr.write(&mut head);
            return write_frame(rx, mem, [&head, frame.frame()], mergeable);
        }
        if self.scratch.is_empty() {
            self.scratch.resize(LARGE_CAPACITY, 0);
        }
        if gso_ok {
            // Only the checksum to complete: in a copy, the frame may go to others too.
            let n = frame.len();
            self.scratch[..n].copy_from_slice(frame.frame());
            offload::complete_checksum(&mut self.scratch[..n], &hdr)
                .map_err(|_| NoFit::Drop(DropCause::Malformed))?;
            return write_frame(rx, mem, [&head, &self.scratch[..n]], mergeable);
        }
        let mut result = Ok(());
        offload::segment(frame.frame(), &hdr, &mut self.scratch, |seg| {
            if result.is_ok() {
                result = write_frame(rx, mem, [&head, seg], mergeable);
            }
        })
        .map_err(|_| NoFit::Drop(DropCause::Malformed))?;
        // A segment without room is dropped with the rest: the others went already.
        result.map_err(|e| match e {
            NoFit::NoRoom => NoFit::Drop(DropCause::QueueFull),
            e => e,
        })
    }
}

/// A guest TX chain's readable descriptors (`virtio_net_hdr` + frame) gathered into
/// `buf`, as the data plane takes frames.
fn gather<M: GuestMemory>(chain: DescriptorChain<&M>, mem: &M, buf: &mut FrameBuf) -> Received {
    let descs = chain.readable().map(|d| (d.addr().0, d.len()));
    guest_message(
        descs,
        |addr, dst| mem.read_slice(dst, GuestAddress(addr)).is_ok(),
        buf,
    )
}

/// A guest TX message (the readable descriptors of a chain, as `(address, length)`,
/// read with `read`) into `buf`. Pure but for `read`, for the fuzz target.
pub fn guest_message(
    descs: impl Iterator<Item = (u64, u32)>,
    mut read: impl FnMut(u64, &mut [u8]) -> bool,
    buf: &mut FrameBuf,
) -> Received {
    let space = buf.recv_space_with_header();
    let mut n = 0usize;
    for (addr, len) in descs {
        let len = len as usize;
        let Some(dst) = n.checked_add(len).and_then(|end| space.get_mut(n..end)) else {
            return Received::Dropped(
                DropCause::Oversize,
                format!("a guest frame of more than {} bytes", space.len()),
            );
        };
        if !read(addr, dst) {
            return Received::Dropped(
                DropCause::Malformed,
                format!("a guest TX descriptor outside its memory ({len} bytes at {addr:#x})"),
            );
        }
        n += len;
    }
    if buf.set_vnet_len(n) {
        Received::Frame
    } else {
        Received::Dropped(DropCause::Runt, "no virtio_net_hdr".into())
    }
}

/// `parts` (header, frame) into the guest's RX buffers: one chain, or as many as it
/// takes with merged buffers. On `NoRoom` the chains popped are put back.
fn write_frame(
    rx: &mut Guard<'_>,
    mem: &GuestMem,
    parts: [&[u8]; 2],
    mergeable: bool,
) -> Result<(), NoFit> {
    let total = parts[0].len() + parts[1].len();
    let mut src = Source { parts, at: 0 };
    let mut chains = Chains::new();
    let mut first: Option<GuestAddress> = None;
    let mut bad = false;
    while src.at < total {
        if chains.is_full() {
            bad = true;
            break;
        }
        let q = rx.get_queue_mut();
        let Some(chain) = q.pop_descriptor_chain(mem) else {
            break;
        };
        let head = chain.head_index();
        let mut written = 0u32;
        for desc in chain.writable() {
            if first.is_none() {
                if (desc.len() as usize) < VIRTIO_NET_HDR_LEN {
                    bad = true;
                    break;
                }
                first = Some(desc.addr());
            }
            match src.write_to(mem, desc.addr(), desc.len() as usize) {
                Some(n) => written += n as u32,
                None => {
                    bad = true;
                    break;
                }
            }
            if src.at == total {
                break;
            }
        }
        chains.push(head, written);
        if bad || !mergeable {
            break;
        }
    }
    let q = rx.get_queue_mut();
    if !bad && src.at < total && (mergeable || chains.is_empty()) {
        // Out of buffers: put the chains back and wait for the guest's kick.
        for _ in chains.iter() {
            q.go_to_previous_position();
        }
        return Err(NoFit::NoRoom);
    }
    let fits = !bad && src.at == total;
    for (head, len) in chains.iter() {
        let len = if fits { len } else { 0 };
        if q.add_used(mem, head, len).is_err() {
            return Err(NoFit::Drop(DropCause::Malformed));
        }
    }
    if !fits {
        // Buffers the frame does not fit in (without merging), or that are not in the
        // guest's memory: given back unused, the frame dropped.
        return Err(NoFit::Drop(if bad {
            DropCause::Malformed
        } else {
            DropCause::Oversize
        }));
    }
    let count = chains.len() as u16;
    if let Some(first) = first {
        let _ = mem.write_slice(&count.to_le_bytes(), GuestAddress(first.0 + NUM_BUFFERS));
    }
    Ok(())
}

/// The bytes of a frame going out, as one stream over its parts.
struct Source<'a> {
    parts: [&'a [u8]; 2],
    /// Bytes written so far.
    at: usize,
}

impl Source<'_> {
    /// Writes the next bytes into `room` bytes at `addr`; how many, or `None` if the
    /// buffer is not in guest memory.
    fn write_to(&mut self, mem: &GuestMem, addr: GuestAddress, room: usize) -> Option<usize> {
        let mut done = 0;
        let mut skip = self.at;
        for part in self.parts {
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            let take = (part.len() - skip).min(room - done);
            if take == 0 {
                break;
            }
            mem.write_slice(
                &part[skip..skip + take],
                GuestAddress(addr.0.checked_add(done as u64)?),
            )
            .ok()?;
            done += take;
            skip = 0;
        }
        self.at += done;
        Some(done)
    }
}

/// The chains one frame takes in the RX queue, on the stack: at most [`MAX_CHAINS`]
/// (a 64 KiB frame in 1500-byte buffers takes 44).
struct Chains {
    items: [(u16, u32); MAX_CHAINS],
    len: usize,
}

const MAX_CHAINS: usize = 64;

impl Chains {
    fn new() -> Chains {
        Chains {
            items: [(0, 0); MAX_CHAINS],
            len: 0,
        }
    }

    fn is_full(&self) -> bool {
        self.len == MAX_CHAINS
    }

    fn push(&mut self, head: u16, len: u32) {
        self.items[self.len] = (head, len);
        self.len += 1;
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn iter(&self) -> impl Iterator<Item = (u16, u32)> + '_ {
        self.items[..self.len].iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{split::Descriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;

    const SIZE: u16 = 16;
    const RX_BASE: u64 = 0;
    const TX_BASE: u64 = 0x1_0000;
    /// Guest buffers live from here on.
    const BUFS: u64 = 0x10_0000;
    const NEXT: u16 = VRING_DESC_F_NEXT as u16;
    const WRITE: u16 = VRING_DESC_F_WRITE as u16;

    /// A guest with 4 MiB of memory, its queues as `Queues` and the mock drivers' view.
    struct Guest {
        mem: GuestMem,
        queues: Queues,
        /// Where the RX and TX used rings are.
        used_at: [u64; 2],
    }

    fn vring(atomic: &GuestMemoryAtomic<GuestMem>, q: &MockSplitQueue<'_, GuestMem>) -> Vring {
        let v = Vring::new(atomic.clone(), SIZE).unwrap();
        v.set_queue_size(SIZE);
        v.set_queue_info(q.desc_table_addr().0, q.avail_addr().0, q.used_addr().0)
            .unwrap();
        v.set_queue_ready(true);
        v.set_enabled(true);
        v
    }

    fn desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
        RawDescriptor::from(Descriptor::new(addr, len, flags, next))
    }

    impl Guest {
        fn new(acked: u64) -> Guest {
            let mem = GuestMem::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap();
            let atomic = GuestMemoryAtomic::new(mem.clone());
            let rx = MockSplitQueue::create(&mem, GuestAddress(RX_BASE), SIZE);
            let tx = MockSplitQueue::create(&mem, GuestAddress(TX_BASE), SIZE);
            let rings = Rings {
                mem: atomic.clone(),
                rx: vring(&atomic, &rx),
                tx: vring(&atomic, &tx),
                acked,
            };
            Guest {
                used_at: [rx.used_addr().0, tx.used_addr().0],
                mem: mem.clone(),
                queues: Queues::new(rings),
            }
        }

        fn queue(&self, base: u64) -> MockSplitQueue<'_, GuestMem> {
            // Same addresses as in `new`; `create` zeroes only the ring headers, so
            // callers make all their chains before the queue is used.
            MockSplitQueue::create(&self.mem, GuestAddress(base), SIZE)
        }

        /// The used ring of the queue at `base`: (id, len) of each entry so far.
        fn used(&self, base: u64) -> Vec<(u32, u32)> {
            let q = self.used_at[usize::from(base == TX_BASE)];
            let idx: u16 = self.mem.read_obj(GuestAddress(q + 2)).unwrap();
            (0..idx)
                .map(|i| {
                    let at = q + 4 + 8 * u64::from(i % SIZE);
                    (
                        self.mem.read_obj(GuestAddress(at)).unwrap(),
                        self.mem.read_obj(GuestAddress(at + 4)).unwrap(),
                    )
                })
                .collect()
        }
    }

    fn frame_buf(frame: &[u8], hdr: VirtioNetHdr) -> FrameBuf {
        let mut buf = FrameBuf::large();
        let space = buf.recv_space();
        space[..frame.len()].copy_from_slice(frame);
        buf.set_len(frame.len());
        buf.offload = hdr;
        buf
    }

    #[test]
    fn guest_tx_chains_become_frames_and_hostile_ones_are_counted_drops() {
        let mut g = Guest::new(0);
        let tx = g.queue(TX_BASE);
        let frame: Vec<u8> = (0..60u8).collect();
        g.mem
            .write_slice(&[0u8; VIRTIO_NET_HDR_LEN], GuestAddress(BUFS))
            .unwrap();
        g.mem
            .write_slice(&frame, GuestAddress(BUFS + 0x1000))
            .unwrap();
        // Header and frame in two descriptors.
        tx.add_desc_chains(
            &[
                desc(BUFS, VIRTIO_NET_HDR_LEN as u32, NEXT, 1),
                desc(BUFS + 0x1000, 60, 0, 0),
            ],
            0,
        )
        .unwrap();
        // Outside guest memory; empty; longer than any frame; a chain that loops.
        tx.add_desc_chains(&[desc(0xffff_0000_0000, 64, 0, 0)], 2)
            .unwrap();
        tx.add_desc_chains(&[desc(BUFS, 0, 0, 0)], 3).unwrap();
        tx.add_desc_chains(&[desc(BUFS, 1 << 20, 0, 0)], 4).unwrap();
        tx.add_desc_chains(&[desc(BUFS, 8000, NEXT, 5)], 5).unwrap();
        drop(tx);

        let mut buf = FrameBuf::large();
        assert!(matches!(g.queues.recv(&mut buf), Received::Frame));
        assert_eq!(buf.frame(), &frame[..]);
        let causes: Vec<DropCause> = (0..4)
            .map(|_| match g.queues.recv(&mut buf) {
                Received::Dropped(cause, _) => cause,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            causes,
            [
                DropCause::Malformed,
                DropCause::Runt,
                DropCause::Oversize,
                DropCause::Oversize
            ]
        );
        assert!(matches!(g.queues.recv(&mut buf), Received::WouldBlock));
        let heads: Vec<u32> = g.used(TX_BASE).iter().map(|&(id, _)| id).collect();
        assert_eq!(heads, [0, 2, 3, 4, 5], "every chain went back to the guest");
    }

    #[test]
    fn frames_fill_merged_rx_buffers_and_wait_for_room() {
        let mut g = Guest::new(1 << VIRTIO_NET_F_MRG_RXBUF);
        let rx = g.queue(RX_BASE);
        let chains: Vec<_> = (0..3)
            .map(|i| desc(BUFS + i * 0x1000, 1000, WRITE, 0))
            .collect();
        rx.add_desc_chains(&chains, 0).unwrap();
        let frame: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        let bufs = [frame_buf(&frame, VirtioNetHdr::default())];
        assert_eq!(g.queues.send(&bufs), (1, Sent::Done));
        assert_eq!(
            g.used(RX_BASE),
            [(0, 1000), (1, 1000), (2, 512)],
            "header + frame over three buffers"
        );
        let mut got = vec![0u8; 3000];
        for i in 0..3 {
            g.mem
                .read_slice(
                    &mut got[i * 1000..(i + 1) * 1000],
                    GuestAddress(BUFS + i as u64 * 0x1000),
                )
                .unwrap();
        }
        let num_buffers = u16::from_le_bytes([got[10], got[11]]);
        assert_eq!(num_buffers, 3);
        assert_eq!(
            &got[VIRTIO_NET_HDR_LEN..VIRTIO_NET_HDR_LEN + 2500],
            &frame[..]
        );

        // No buffers left: the frame waits, nothing is used.
        assert_eq!(g.queues.send(&bufs), (0, Sent::WouldBlock));
        assert_eq!(g.used(RX_BASE).len(), 3);
        // A buffer too small for it all is put back too, and taken once more came.
        rx_more(&g, 3, &[(BUFS, 2000), (BUFS + 0x1000, 2000)]);
        assert_eq!(g.queues.send(&bufs), (1, Sent::Done));
        assert_eq!(&g.used(RX_BASE)[3..], [(3, 2000), (4, 512)]);
    }

    /// Makes `bufs` available in the RX queue as one-descriptor chains from table
    /// index `at` on.
    fn rx_more(g: &Guest, at: u16, bufs: &[(u64, u32)]) {
        let used = g.used(RX_BASE).len() as u16;
        let rx = MockSplitQueue::create(&g.mem, GuestAddress(RX_BASE), SIZE);
        // `create` reset the avail index: put it back where the guest left it.
        let avail = rx.avail_addr();
        g.mem.write_obj(used, GuestAddress(avail.0 + 2)).unwrap();
        // ...and the used index `create` cleared.
        g.mem
            .write_obj(used, GuestAddress(g.used_at[0] + 2))
            .unwrap();
        let descs: Vec<_> = bufs.iter().map(|&(a, l)| desc(a, l, WRITE, 0)).collect();
        rx.add_desc_chains(&descs, at).unwrap();
    }

    #[test]
    fn bad_rx_buffers_drop_the_frame_and_go_back_unused() {
        let mut g = Guest::new(0);
        let rx = g.queue(RX_BASE);
        rx.add_desc_chains(
            &[
                // Without merged buffers, too small for the frame.
                desc(BUFS, 100, WRITE, 0),
                // Outside guest memory.
                desc(0xffff_0000_0000, 4096, WRITE, 0),
                // No room for the header.
                desc(BUFS, 4, WRITE, 0),
                // Not writable at all.
                desc(BUFS, 4096, 0, 0),
                // Fine.
                desc(BUFS, 4096, WRITE, 0),
            ],
            0,
        )
        .unwrap();
        drop(rx);
        let bufs = [frame_buf(&[7u8; 200], VirtioNetHdr::default())];
        let outcomes: Vec<_> = (0..5).map(|_| g.queues.send(&bufs)).collect();
        assert_eq!(
            outcomes,
            [
                (0, Sent::Dropped(DropCause::Oversize)),
                (0, Sent::Dropped(DropCause::Malformed)),
                (0, Sent::Dropped(DropCause::Malformed)),
                (0, Sent::Dropped(DropCause::Oversize)),
                (1, Sent::Done),
            ]
        );
        assert_eq!(
            g.used(RX_BASE),
            [(0, 0), (1, 0), (2, 0), (3, 0), (4, 212)],
            "bad buffers go back empty"
        );
    }

    /// An IPv4/TCP frame of `payload` bytes with a partial checksum, as a guest's TSO
    /// hands it over.
    fn tcp_frame(payload: usize) -> Vec<u8> {
        let mut f = vec![0u8; 54 + payload];
        f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
        f[22] = 64;
        f[23] = 6;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[46] = 0x50;
        f[47] = 0x18;
        for (i, b) in f[54..].iter_mut().enumerate() {
            *b = i as u8;
        }
        f
    }

    #[test]
    fn a_guest_without_tso_gets_a_super_frame_as_segments_with_checksums() {
        let mut g = Guest::new(0);
        let rx = g.queue(RX_BASE);
        let chains: Vec<_> = (0..4)
            .map(|i| desc(BUFS + i * 0x1000, 2048, WRITE, 0))
            .collect();
        rx.add_desc_chains(&chains, 0).unwrap();
        drop(rx);
        let hdr = VirtioNetHdr {
            flags: VirtioNetHdr::F_NEEDS_CSUM,
            gso_type: VirtioNetHdr::GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1000,
            csum_start: 34,
            csum_offset: 16,
        };
        let bufs = [frame_buf(&tcp_frame(2500), hdr)];
        assert_eq!(g.queues.send(&bufs), (1, Sent::Done));
        let used = g.used(RX_BASE);
        assert_eq!(
            used,
            [(0, 12 + 1054), (1, 12 + 1054), (2, 12 + 554)],
            "three segments of at most 1000 bytes"
        );
        for (i, &(_, len)) in used.iter().enumerate() {
            let mut seg = vec![0u8; len as usize];
            g.mem
                .read_slice(&mut seg, GuestAddress(BUFS + i as u64 * 0x1000))
                .unwrap();
            assert_eq!(seg[..10], [0; 10], "a plain frame: no offload left");
            assert!(tcp_checksum_verifies(&seg[12..]), "segment {i}");
        }
    }

    /// Whether the TCP checksum of an IPv4 frame (no options) is complete and right.
    fn tcp_checksum_verifies(frame: &[u8]) -> bool {
        let tcp = &frame[34..];
        let mut pseudo = frame[26..34].to_vec();
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
        let mut sum: u32 = pseudo
            .chunks(2)
            .chain(tcp.chunks(2))
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum == 0xffff
    }

    #[test]
    fn stopped_queues_take_and_give_nothing() {
        let mut g = Guest::new(0);
        g.queues.rings.tx.set_enabled(false);
        g.queues.rings.rx.set_queue_ready(false);
        let mut buf = FrameBuf::large();
        assert!(matches!(g.queues.recv(&mut buf), Received::WouldBlock));
        let bufs = [frame_buf(&[1u8; 60], VirtioNetHdr::default())];
        assert_eq!(g.queues.send(&bufs), (0, Sent::WouldBlock));
    }
}
