//! A `TPACKET_V3` receive ring on an AF_PACKET socket: the kernel writes frames into
//! memory shared with us, a block of many frames at a time, so receiving costs no system
//! call per frame.
//!
//! The ring is `blocks` blocks of [`BLOCK_SIZE`] bytes, mapped once. The kernel fills a
//! block and hands it over (its status gets `TP_STATUS_USER`) when it is full or when
//! [`RETIRE_MS`] passed since its first frame; the reader walks it
//! (`backend/tpacket.rs`, pure code) and gives it back
//! ([`RxRing::release`]). Blocks go round in order. While every block is ours the kernel
//! drops frames and counts them ([`drops`], `PACKET_STATISTICS`).
//!
//! The socket options must come in this order: `PACKET_VNET_HDR` (the kernel then
//! writes a `virtio_net_hdr` just in front of each frame in the ring), then
//! `PACKET_VERSION`, then `PACKET_RX_RING`; the kernel refuses the first two once a
//! ring exists.

use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use super::packet::PacketSocket;

/// Bytes of one block: a power of two of pages (the kernel allocates blocks by page
/// order), room for a 64 KiB GSO super-frame with its headers or about 680 small
/// frames. Small rather than large: see [`RETIRE_MS`].
pub const BLOCK_SIZE: usize = 128 << 10;

/// Milliseconds after which the kernel hands over a block that is not full: the most a
/// frame waits in the ring when traffic is light (the kernel wakes the reader only per
/// block). It also means that under light traffic each block holds one millisecond,
/// so a reader that stalls loses frames after as many milliseconds as the ring has
/// blocks (32 in the default 4 MiB); the per-frame path's socket buffer holds about 300
/// frames, whatever the time.
pub const RETIRE_MS: u32 = 1;

/// Offset of `block_status` in a block's descriptor (`tpacket_block_desc.hdr.bh1`).
const BLOCK_STATUS: usize = 8;

/// A mapped `TPACKET_V3` receive ring; unmapped on drop.
#[derive(Debug)]
pub struct RxRing {
    map: NonNull<u8>,
    blocks: usize,
}

impl RxRing {
    /// Sets up a ring of `bytes` (rounded down to whole blocks, at least two) on
    /// `sock`, which must already have its `PACKET_VNET_HDR` and no ring yet, and maps
    /// it.
    pub fn attach(sock: &PacketSocket, bytes: usize) -> io::Result<RxRing> {
        let blocks = (bytes / BLOCK_SIZE).max(2);
        let nr = u32::try_from(blocks).map_err(|_| io::ErrorKind::InvalidInput)?;
        let version = libc::tpacket_versions::TPACKET_V3 as libc::c_int;
        sock.setsockopt(libc::PACKET_VERSION, &version)?;
        let req = libc::tpacket_req3 {
            tp_block_size: BLOCK_SIZE as u32,
            tp_block_nr: nr,
            // V3 packs frames of any size into a block; these only have to agree.
            tp_frame_size: BLOCK_SIZE as u32,
            tp_frame_nr: nr,
            tp_retire_blk_tov: RETIRE_MS,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        sock.setsockopt(libc::PACKET_RX_RING, &req)?;
        let len = blocks * BLOCK_SIZE;
        // SAFETY: a fresh shared mapping of the socket's ring, whose size is exactly
        // what PACKET_RX_RING just set up; the result is checked below.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                sock.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let map = NonNull::new(map.cast()).ok_or(io::ErrorKind::InvalidData)?;
        Ok(RxRing { map, blocks })
    }

    /// How many blocks the ring has.
    pub fn blocks(&self) -> usize {
        self.blocks
    }

    /// The ring's size in bytes.
    pub fn bytes(&self) -> usize {
        self.blocks * BLOCK_SIZE
    }

    /// The status word of block `i`, which the kernel and we hand the block over with.
    fn status(&self, i: usize) -> &AtomicU32 {
        assert!(i < self.blocks, "block {i} of {}", self.blocks);
        // SAFETY: block `i` lies inside the mapping, blocks start page-aligned, and the
        // status word is a 4-byte aligned u32 at BLOCK_STATUS; the kernel writes it
        // too, so it is only ever accessed atomically.
        unsafe {
            &*self
                .map
                .as_ptr()
                .add(i * BLOCK_SIZE + BLOCK_STATUS)
                .cast::<AtomicU32>()
        }
    }

    /// Block `i`'s bytes if the kernel handed it over, `None` while it is the kernel's.
    pub fn user_block(&mut self, i: usize) -> Option<&mut [u8]> {
        // Acquire: the kernel's writes to the block happen before it sets the status.
        if self.status(i).load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
            return None;
        }
        // SAFETY: the block is inside the mapping and ours until `release` (the kernel
        // does not touch a block whose status says user); `&mut self` keeps this the
        // only view of it.
        Some(unsafe {
            std::slice::from_raw_parts_mut(self.map.as_ptr().add(i * BLOCK_SIZE), BLOCK_SIZE)
        })
    }

    /// Gives block `i` back to the kernel.
    pub fn release(&mut self, i: usize) {
        // Release: our reads of the block happen before the kernel may write it again.
        self.status(i)
            .store(libc::TP_STATUS_KERNEL, Ordering::Release);
    }
}

impl Drop for RxRing {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `attach`, of this length, unmapped once; no
        // slice of it outlives `self` (they borrow it).
        unsafe { libc::munmap(self.map.as_ptr().cast(), self.bytes()) };
    }
}

/// Frames the kernel dropped on `sock` since the last call because its ring was full
/// (`PACKET_STATISTICS`, which the read resets).
pub fn drops(sock: &PacketSocket) -> io::Result<u32> {
    // SAFETY: all-zero is a valid tpacket_stats_v3.
    let mut stats: libc::tpacket_stats_v3 = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
    // SAFETY: stats is a live tpacket_stats_v3 and len says its size; the kernel writes
    // at most len bytes.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&mut stats as *mut libc::tpacket_stats_v3).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stats.tp_drops)
}
