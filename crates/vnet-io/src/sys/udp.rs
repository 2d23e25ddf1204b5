//! `recvmmsg` and `sendmmsg` on UDP sockets (the VXLAN tunnels): many datagrams, each
//! with its own peer address, per system call. Sends gather a header shared by the
//! batch and each datagram's payload, so a frame is never copied to be encapsulated.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};

/// Receive slots of `SLOT` bytes each: a datagram up to the largest UDP payload.
pub const SLOT: usize = 65536;

/// Headers, sender addresses and buffers for receiving up to `N` datagrams.
pub struct RecvBatch<const N: usize> {
    headers: [libc::mmsghdr; N],
    senders: [libc::sockaddr_storage; N],
    iovs: [libc::iovec; N],
    bufs: Vec<u8>,
}

impl<const N: usize> RecvBatch<N> {
    pub fn new() -> Box<Self> {
        // SAFETY: the three arrays are plain C structs for which all-zero bytes are
        // valid; `bufs` is then replaced by a real Vec before anyone reads it.
        let mut b: Box<Self> = Box::new(unsafe {
            RecvBatch {
                headers: zeroed(),
                senders: zeroed(),
                iovs: zeroed(),
                bufs: Vec::new(),
            }
        });
        b.bufs = vec![0; N * SLOT];
        b
    }

    /// Receives up to `N` datagrams without blocking. Returns how many arrived;
    /// `WouldBlock` if none.
    pub fn recv(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        for i in 0..N {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i * SLOT..].as_mut_ptr().cast(),
                iov_len: SLOT,
            };
            let h = &mut self.headers[i].msg_hdr;
            h.msg_name = (&mut self.senders[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
        }
        // SAFETY: every header points at a live sender slot of the size it states and
        // at one iovec for `SLOT` bytes of `self.bufs`, all owned by `self`, which the
        // call borrows mutably.
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

    /// Datagram `i` of the last [`RecvBatch::recv`] (cut to `SLOT` bytes) and whether
    /// it was longer.
    pub fn datagram(&self, i: usize) -> (&[u8], bool) {
        let len = (self.headers[i].msg_len as usize).min(SLOT);
        let truncated = self.headers[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        (&self.bufs[i * SLOT..i * SLOT + len], truncated)
    }

    /// Who sent datagram `i`.
    pub fn sender(&self, i: usize) -> Option<SocketAddr> {
        from_storage(&self.senders[i], self.headers[i].msg_hdr.msg_namelen)
    }
}

/// A socket address as the kernel wrote it, if it is IPv4 or IPv6.
fn from_storage(s: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match s.ss_family as libc::c_int {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, which is smaller
            // and no more aligned than sockaddr_storage.
            let a: &libc::sockaddr_in = unsafe { &*(s as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let a: &libc::sockaddr_in6 = unsafe { &*(s as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// `addr` as a sockaddr for the kernel, and its length.
fn to_storage(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero bytes are a valid sockaddr_storage.
    let mut s: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is larger and at least as aligned as sockaddr_in.
            let sin = unsafe { &mut *(&mut s as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut s as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>()
        }
    };
    (s, len as libc::socklen_t)
}

/// One datagram to send: the batch's header, then `payload`, to `to`.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub to: SocketAddr,
    pub payload: &'a [u8],
}

/// Headers for sending up to `N` datagrams, each to its own address, kept so that no
/// batch allocates.
pub struct SendBatch<const N: usize> {
    headers: [libc::mmsghdr; N],
    names: [libc::sockaddr_storage; N],
    iovs: [[libc::iovec; 2]; N],
}

impl<const N: usize> SendBatch<N> {
    pub fn new() -> Box<Self> {
        // SAFETY: all three are arrays of plain C structs for which all-zero bytes are
        // valid.
        Box::new(unsafe { zeroed() })
    }

    /// Sends `header` + `payload` for each of the first `N` (at most) of `datagrams`,
    /// in order, without blocking. Stops at the first that fails: returns how many
    /// were sent and, if not all, why the next one failed (the caller skips it or
    /// retries). `sendmmsg` reports an error only when it sent nothing, so after a
    /// partial send the rest is tried again to learn why it stopped.
    pub fn send(
        &mut self,
        fd: BorrowedFd<'_>,
        header: &[u8],
        datagrams: &[Outgoing<'_>],
    ) -> (usize, io::Result<()>) {
        let count = datagrams.len().min(N);
        for (i, d) in datagrams[..count].iter().enumerate() {
            let (name, namelen) = to_storage(&d.to);
            self.names[i] = name;
            self.iovs[i] = [
                libc::iovec {
                    iov_base: header.as_ptr().cast_mut().cast(),
                    iov_len: header.len(),
                },
                libc::iovec {
                    iov_base: d.payload.as_ptr().cast_mut().cast(),
                    iov_len: d.payload.len(),
                },
            ];
            let h = &mut self.headers[i].msg_hdr;
            h.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = namelen;
            h.msg_iov = self.iovs[i].as_mut_ptr();
            h.msg_iovlen = 2;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
        }
        // SAFETY: headers `..count` were filled above: each points at its name
        // in `self.names` and at two iovecs for `header` and a payload, borrowed
        // for this call. The kernel only reads names and data on send; it writes
        // `msg_len`, inside the headers.
        unsafe { super::mmsg::send_all(fd, &mut self.headers[..count]) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    #[test]
    fn datagrams_go_out_with_the_header_and_come_back_with_their_senders() {
        for local in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(a) = UdpSocket::bind(local) else {
                continue; // no IPv6 loopback here
            };
            let b = UdpSocket::bind(local).unwrap();
            let (ta, tb) = (a.local_addr().unwrap(), b.local_addr().unwrap());
            let mut send = SendBatch::<4>::new();
            let out = [
                Outgoing {
                    to: tb,
                    payload: b"one",
                },
                Outgoing {
                    to: tb,
                    payload: b"two!",
                },
            ];
            assert_eq!(send.send(a.as_fd(), b"HD", &out).0, 2);
            let mut recv = RecvBatch::<4>::new();
            let mut got = Vec::new();
            while got.len() < 2 {
                b.set_nonblocking(false).unwrap();
                let mut peek = [0u8; 1];
                b.peek(&mut peek).unwrap();
                let n = recv.recv(b.as_fd()).unwrap();
                for i in 0..n {
                    let (d, truncated) = recv.datagram(i);
                    assert!(!truncated);
                    assert_eq!(recv.sender(i), Some(ta));
                    got.push(d.to_vec());
                }
            }
            assert_eq!(got, [b"HDone".to_vec(), b"HDtwo!".to_vec()]);
            let e = recv.recv(b.as_fd()).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        }
    }
}
