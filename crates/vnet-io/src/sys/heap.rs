//! Giving freed heap memory back to the kernel.
//!
//! glibc keeps what `free` gets in its arenas for the next `malloc`: the frame
//! buffers a burst allocated stay in vnetd's resident memory after the pool freed
//! them, unless the arenas are trimmed.

/// Below this, what a trim freed is not worth walking the arenas for.
pub const WORTH_TRIMMING: usize = 1 << 20;

/// Returns the free memory of the allocator's arenas to the kernel (`malloc_trim`).
#[cfg(target_env = "gnu")]
pub fn give_back() {
    // SAFETY: malloc_trim only walks the allocator's own free lists and madvises
    // their pages away; it touches no memory of ours and takes no pointer.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other allocators return memory on their own terms.
#[cfg(not(target_env = "gnu"))]
pub fn give_back() {}
