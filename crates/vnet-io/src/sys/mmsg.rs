//! `recvmmsg` on a unix datagram socket: many datagrams and their senders' paths per
//! system call.
//!
//! Our own rather than nix's `recvmmsg`: nix keeps its message headers between calls
//! without resetting `msg_namelen`, so once an unbound sender (address length 0) used
//! a slot, every later datagram in that slot looks unbound too.

use std::ffi::OsStr;
use std::io;
use std::mem::{offset_of, size_of, zeroed};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Headers and sender addresses for up to `N` datagrams.
pub struct DgramBatch<const N: usize> {
    headers: [libc::mmsghdr; N],
    senders: [libc::sockaddr_un; N],
    iovs: [libc::iovec; N],
}

impl<const N: usize> DgramBatch<N> {
    pub fn new() -> Box<Self> {
        // SAFETY: all three are plain C structs for which all-zero bytes are valid.
        Box::new(unsafe { zeroed() })
    }

    /// Receives up to `N` datagrams without blocking, datagram `i` into `bufs[i]`
    /// (truncated to its length). Returns how many arrived; `WouldBlock` if none.
    pub fn recv(&mut self, fd: BorrowedFd<'_>, bufs: [&mut [u8]; N]) -> io::Result<usize> {
        for (i, buf) in bufs.into_iter().enumerate() {
            self.iovs[i] = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            let h = &mut self.headers[i].msg_hdr;
            h.msg_name = (&mut self.senders[i] as *mut libc::sockaddr_un).cast();
            h.msg_namelen = size_of::<libc::sockaddr_un>() as libc::socklen_t;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
        }
        // SAFETY: every header points at a live sender slot of the size it states and
        // at one iovec for a live buffer of `bufs`, all borrowed for this call only.
        let n = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                self.headers.as_mut_ptr(),
                N as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// The length of datagram `i` of the last [`DgramBatch::recv`] (truncated).
    pub fn len(&self, i: usize) -> usize {
        self.headers[i].msg_len as usize
    }

    /// The path the sender of datagram `i` is bound to; `None` for unbound and
    /// abstract senders, which cannot be told apart or answered by path.
    pub fn sender(&self, i: usize) -> Option<&Path> {
        let len = self.headers[i].msg_hdr.msg_namelen as usize;
        let path_len = len.checked_sub(offset_of!(libc::sockaddr_un, sun_path))?;
        let raw = &self.senders[i].sun_path[..path_len.min(self.senders[i].sun_path.len())];
        // SAFETY: c_char and u8 have the same size and alignment.
        let bytes: &[u8] = unsafe { std::slice::from_raw_parts(raw.as_ptr().cast(), raw.len()) };
        let bytes = bytes.split(|&b| b == 0).next().unwrap_or_default();
        (!bytes.is_empty() && raw.first() != Some(&0)).then(|| Path::new(OsStr::from_bytes(bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn senders_are_told_apart_even_after_an_unbound_one() {
        let dir = std::env::temp_dir().join(format!("vnet-mmsg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let server = UnixDatagram::bind(dir.join("s")).unwrap();
        let named = UnixDatagram::bind(dir.join("c")).unwrap();
        let unbound = UnixDatagram::unbound().unwrap();
        let mut batch = DgramBatch::<4>::new();
        let mut bufs = [[0u8; 8]; 4];
        for round in 0..2 {
            unbound.send_to(b"u", dir.join("s")).unwrap();
            named.send_to(b"named, and long", dir.join("s")).unwrap();
            let [a, b, c, d] = &mut bufs;
            let n = batch.recv(server.as_fd(), [a, b, c, d]).unwrap();
            assert_eq!(n, 2, "round {round}");
            assert_eq!((batch.len(0), batch.sender(0)), (1, None));
            assert_eq!(batch.len(1), 8, "truncated to the buffer");
            assert_eq!(batch.sender(1), Some(dir.join("c").as_path()));
        }
        let [a, b, c, d] = &mut bufs;
        let e = batch.recv(server.as_fd(), [a, b, c, d]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
