//! `recvmmsg` and `sendmmsg` on UDP sockets (the VXLAN tunnels): many datagrams, each
//! with its own peer address, per system call. Sends gather a header and each
//! datagram's payload, so a frame is never copied to be encapsulated.
//!
//! And the kernel's UDP offloads (Linux 4.18 and 5.0), which cut the system calls and
//! the kernel's per-datagram work further: a message sent with `UDP_SEGMENT` carries
//! many datagrams of one size to one peer (the kernel cuts it, in hardware where the
//! NIC can), and a socket with `UDP_GRO` receives a train of same-size datagrams from
//! one peer as one message, with the size in a control message.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};

/// Receive slots of `SLOT` bytes each: a datagram up to the largest UDP payload, or a
/// `UDP_GRO` train (which the kernel keeps within 64 KiB).
pub const SLOT: usize = 65536;

/// `UDP_SEGMENT` and `UDP_GRO` (`linux/udp.h`; the libc crate has them only for
/// Android and uClibc).
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;

/// Room for one control message of a 4-byte value (`CMSG_SPACE(4)` is 24 on 64-bit
/// Linux), aligned as `cmsghdr`.
type Control = [u64; 4];

/// Asks the kernel to coalesce same-flow datagrams into trains for `fd` (`UDP_GRO`).
/// Fails on kernels before 5.0.
pub fn enable_gro(fd: BorrowedFd<'_>) -> io::Result<()> {
    let on: libc::c_int = 1;
    super::sockopt::set(fd, libc::SOL_UDP, UDP_GRO, &on)
}

/// Whether this kernel takes `UDP_SEGMENT` on `fd` (Linux 4.18): setting the socket's
/// default segment size to 0 (none) succeeds only where it does.
pub fn segmentation_works(fd: BorrowedFd<'_>) -> bool {
    let none: libc::c_int = 0;
    super::sockopt::set(fd, libc::SOL_UDP, UDP_SEGMENT, &none).is_ok()
}

/// Headers, sender addresses, control messages and buffers for receiving up to `N`
/// messages (datagrams or trains).
pub struct RecvBatch<const N: usize> {
    headers: [libc::mmsghdr; N],
    senders: [libc::sockaddr_storage; N],
    iovs: [libc::iovec; N],
    controls: [Control; N],
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
                controls: zeroed(),
                bufs: Vec::new(),
            }
        });
        b.bufs = vec![0; N * SLOT];
        b
    }

    /// Receives up to `N` messages without blocking. Returns how many arrived;
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
            h.msg_control = self.controls[i].as_mut_ptr().cast();
            h.msg_controllen = size_of::<Control>();
            h.msg_flags = 0;
        }
        // SAFETY: every header points at a live sender slot, a control buffer of the
        // sizes it states and at one iovec for `SLOT` bytes of `self.bufs`, all owned by
        // `self`, which the call borrows mutably.
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

    /// Who sent message `i`.
    pub fn sender(&self, i: usize) -> Option<SocketAddr> {
        from_storage(&self.senders[i], self.headers[i].msg_hdr.msg_namelen)
    }

    /// The size of the datagrams message `i` is a train of (the last may be shorter),
    /// if the kernel coalesced it (`UDP_GRO`); `None` for a single datagram.
    pub fn segment_size(&self, i: usize) -> Option<usize> {
        let h = &self.headers[i].msg_hdr;
        // SAFETY: `h` is the header the kernel filled in the last `recv`: its control
        // pointer and length describe `self.controls[i]`, which the CMSG walk stays
        // inside of; a value is read only from a message of the type that carries it.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(h);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == UDP_GRO {
                    let size = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                    return usize::try_from(size).ok().filter(|s| *s > 0);
                }
                c = libc::CMSG_NXTHDR(h, c);
            }
        }
        None
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

/// One message to send to `to`: `header` then `payload`, as one datagram or, with a
/// `segment` size, as datagrams of that size (the last may be shorter) cut by the
/// kernel (`UDP_SEGMENT`; each datagram's own header must then be in `payload`).
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub to: SocketAddr,
    pub header: &'a [u8],
    pub payload: &'a [u8],
    pub segment: u16,
}

/// Headers for sending up to `N` messages, each to its own address, kept so that no
/// batch allocates.
pub struct SendBatch<const N: usize> {
    headers: [libc::mmsghdr; N],
    names: [libc::sockaddr_storage; N],
    iovs: [[libc::iovec; 2]; N],
    controls: [Control; N],
}

impl<const N: usize> SendBatch<N> {
    pub fn new() -> Box<Self> {
        // SAFETY: all three are arrays of plain C structs for which all-zero bytes are
        // valid.
        Box::new(unsafe { zeroed() })
    }

    /// Sends the first `N` (at most) of `messages`, in order, without blocking. Stops
    /// at the first that fails: returns how many were sent and, if not all, why the
    /// next one failed (the caller skips it or retries). `sendmmsg` reports an error
    /// only when it sent nothing, so after a partial send the rest is tried again to
    /// learn why it stopped.
    pub fn send(
        &mut self,
        fd: BorrowedFd<'_>,
        messages: &[Outgoing<'_>],
    ) -> (usize, io::Result<()>) {
        let count = messages.len().min(N);
        for (i, d) in messages[..count].iter().enumerate() {
            let (name, namelen) = to_storage(&d.to);
            self.names[i] = name;
            self.iovs[i] = [
                libc::iovec {
                    iov_base: d.header.as_ptr().cast_mut().cast(),
                    iov_len: d.header.len(),
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
            h.msg_flags = 0;
            if d.segment == 0 {
                h.msg_control = std::ptr::null_mut();
                h.msg_controllen = 0;
            } else {
                h.msg_control = self.controls[i].as_mut_ptr().cast();
                // SAFETY: CMSG_SPACE and CMSG_LEN are arithmetic on a size.
                h.msg_controllen = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as usize;
                // SAFETY: the control buffer is `Control`, aligned as `cmsghdr` and
                // larger than CMSG_SPACE(2), which the header now states; the first
                // header and its data lie inside it.
                unsafe {
                    let c = libc::CMSG_FIRSTHDR(h);
                    (*c).cmsg_level = libc::SOL_UDP;
                    (*c).cmsg_type = UDP_SEGMENT;
                    (*c).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as usize;
                    std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), d.segment);
                }
            }
        }
        // SAFETY: headers `..count` were filled above: each points at its name
        // in `self.names`, at two iovecs for a header and a payload, borrowed for
        // this call, and at its control message or none. The kernel only reads
        // names, controls and data on send; it writes `msg_len`, inside the headers.
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
                    header: b"HD",
                    payload: b"one",
                    segment: 0,
                },
                Outgoing {
                    to: tb,
                    header: b"HD",
                    payload: b"two!",
                    segment: 0,
                },
            ];
            assert_eq!(send.send(a.as_fd(), &out).0, 2);
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

    /// Everything `sock` has now, as (message, segment size), waiting for the first.
    fn receive_all<const N: usize>(
        recv: &mut RecvBatch<N>,
        sock: &UdpSocket,
    ) -> Vec<(Vec<u8>, Option<usize>)> {
        sock.set_nonblocking(false).unwrap();
        let mut peek = [0u8; 1];
        sock.peek(&mut peek).unwrap();
        let mut got = Vec::new();
        while let Ok(n) = recv.recv(sock.as_fd()) {
            for i in 0..n {
                got.push((recv.datagram(i).0.to_vec(), recv.segment_size(i)));
            }
        }
        got
    }

    #[test]
    fn a_segmented_message_arrives_as_a_train_with_gro_and_as_datagrams_without() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(segmentation_works(a.as_fd()));
        let plain = UdpSocket::bind("127.0.0.1:0").unwrap();
        let gro = UdpSocket::bind("127.0.0.1:0").unwrap();
        enable_gro(gro.as_fd()).unwrap();
        // Three datagrams of 4 + 96 bytes, the last of 4 + 46: each with its header.
        let mut payload = Vec::new();
        for (k, len) in [96usize, 96, 96, 46].iter().enumerate() {
            payload.extend_from_slice(b"HDR");
            payload.push(k as u8);
            payload.extend(std::iter::repeat_n(k as u8, *len));
        }
        let mut send = SendBatch::<2>::new();
        let out = [gro.local_addr().unwrap(), plain.local_addr().unwrap()].map(|to| Outgoing {
            to,
            header: &[],
            payload: &payload,
            segment: 100,
        });
        assert_eq!(send.send(a.as_fd(), &out).0, 2);
        let mut recv = RecvBatch::<8>::new();
        let datagrams = receive_all(&mut recv, &plain);
        let cut: Vec<Vec<u8>> = payload.chunks(100).map(<[u8]>::to_vec).collect();
        assert_eq!(
            datagrams,
            cut.iter().map(|d| (d.clone(), None)).collect::<Vec<_>>()
        );
        let train = receive_all(&mut recv, &gro);
        assert_eq!(train, [(payload.clone(), Some(100))]);
    }
}
