//! Guest "RAM": one memfd mapped shared, so a vhost-user back-end can map it too.
//!
//! Guest physical addresses are offsets into the region. Every access is bounds-checked
//! here; the rest of the guest deals in offsets and slices.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU16, AtomicU32};

/// A shared, memfd-backed region of guest memory.
pub struct Region {
    fd: OwnedFd,
    base: *mut u8,
    len: usize,
}

// SAFETY: the region is plain shared memory; the threads of one guest touch disjoint
// parts of it (one queue each) and synchronise the ring indices through atomics.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    /// A zeroed region of `len` bytes.
    pub fn new(len: usize) -> io::Result<Region> {
        // SAFETY: a C string literal and flags; the fd is checked below.
        let raw = unsafe { libc::memfd_create(c"vnet-vhost-guest".as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: memfd_create returned a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: ftruncate on our own fd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh shared mapping of the whole memfd; unmapped in Drop.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Region {
            fd,
            base: base.cast(),
            len,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The memfd, for `VHOST_USER_SET_MEM_TABLE`.
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Where the region is mapped in this process (the "userspace address" of the
    /// vhost-user memory table; ring addresses are given in this space).
    pub fn host_addr(&self, gpa: u64) -> u64 {
        self.base as u64 + gpa
    }

    fn check(&self, gpa: u64, len: usize) -> Option<usize> {
        let start = usize::try_from(gpa).ok()?;
        (start.checked_add(len)? <= self.len).then_some(start)
    }

    /// `len` bytes at `gpa`, or `None` if they are not all in the region.
    ///
    /// The other side may write them concurrently only where the virtio protocol says
    /// it owns them; the guest reads a buffer only after the used ring handed it back.
    pub fn slice(&self, gpa: u64, len: usize) -> Option<&[u8]> {
        let start = self.check(gpa, len)?;
        // SAFETY: in bounds (checked); the mapping lives as long as `self`.
        Some(unsafe { std::slice::from_raw_parts(self.base.add(start), len) })
    }

    /// `len` bytes at `gpa` to write, or `None` if they are not all in the region.
    #[allow(clippy::mut_from_ref)]
    pub fn slice_mut(&self, gpa: u64, len: usize) -> Option<&mut [u8]> {
        let start = self.check(gpa, len)?;
        // SAFETY: in bounds; callers own the buffer at `gpa` (a descriptor the driver
        // has not made available, or one the device popped), so no one else writes it.
        Some(unsafe { std::slice::from_raw_parts_mut(self.base.add(start), len) })
    }

    /// The `u16` ring index at `gpa` (2-aligned), shared with the other side.
    pub fn u16_at(&self, gpa: u64) -> &AtomicU16 {
        let start = self.check(gpa, 2).expect("ring index inside the region");
        assert_eq!(start % 2, 0, "aligned ring index");
        // SAFETY: in bounds and aligned; AtomicU16 has u16's layout.
        unsafe { AtomicU16::from_ptr(self.base.add(start).cast()) }
    }

    /// The `u32` at `gpa` (4-aligned), shared with the other side.
    pub fn u32_at(&self, gpa: u64) -> &AtomicU32 {
        let start = self.check(gpa, 4).expect("ring word inside the region");
        assert_eq!(start % 4, 0, "aligned ring word");
        // SAFETY: in bounds and aligned; AtomicU32 has u32's layout.
        unsafe { AtomicU32::from_ptr(self.base.add(start).cast()) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}
