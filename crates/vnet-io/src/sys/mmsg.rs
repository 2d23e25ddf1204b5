//! `recvmmsg` and `sendmmsg` on unix datagram sockets: many datagrams (and their
//! senders' paths and, with `SO_PASSCRED`, their uids) per system call.
//!
//! Our own rather than nix's: nix keeps its message headers between calls without
//! resetting `msg_namelen`, so once an unbound sender (address length 0) used a slot,
//! every later datagram in that slot looks unbound too; and its `sendmmsg` wants an
//! array of `IoSlice`s per datagram, which we would have to build for every batch.

use std::ffi::OsStr;
use std::io;
use std::mem::{offset_of, size_of, zeroed};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::sys::socket::{SockaddrLike, UnixAddr};

/// Room for exactly one `SCM_CREDENTIALS` message (`CMSG_SPACE(sizeof(struct ucred))`
/// is 32 bytes on Linux), 8-byte aligned as a `cmsghdr` must be. Exactly: the kernel
/// writes the credentials first, so no room is left for an `SCM_RIGHTS` message, and
/// file descriptors a sender attaches are closed by the kernel, never installed here.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct CredSpace([u8; 32]);

// SAFETY: CMSG_SPACE only computes a size.
const _: () = assert!(
    size_of::<CredSpace>() == unsafe { libc::CMSG_SPACE(size_of::<libc::ucred>() as u32) } as usize
);

/// Headers, sender addresses and credentials for up to `N` datagrams.
pub struct RecvBatch<const N: usize> {
    headers: [libc::mmsghdr; N],
    senders: [libc::sockaddr_un; N],
    iovs: [libc::iovec; N],
    creds: [CredSpace; N],
}

impl<const N: usize> RecvBatch<N> {
    pub fn new() -> Box<Self> {
        // SAFETY: all four are plain C structs (or bytes) for which all-zero bytes are
        // valid.
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
            h.msg_control = self.creds[i].0.as_mut_ptr().cast();
            h.msg_controllen = size_of::<CredSpace>();
            h.msg_flags = 0;
        }
        // SAFETY: every header points at a live sender slot and a live control slot of
        // the sizes it states and at one iovec for a live buffer of `bufs`, all
        // borrowed for this call only.
        let n = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                self.headers.as_mut_ptr(),
                N as libc::c_uint,
                libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// The length of datagram `i` of the last [`RecvBatch::recv`] (truncated).
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

impl<const N: usize> RecvBatch<N> {
    /// Who sent datagram `i` of the last [`RecvBatch::recv`] (uid, gid, pid; no
    /// supplementary groups), as the kernel vouches for it: `SCM_CREDENTIALS`, present
    /// when the receiving socket has `SO_PASSCRED`. `None` without it.
    pub fn sender_credentials(&self, i: usize) -> Option<crate::admission::Client> {
        let h = &self.headers[i].msg_hdr;
        let space = &self.creds[i];
        if h.msg_control != space.0.as_ptr().cast_mut().cast()
            || h.msg_controllen < size_of::<libc::cmsghdr>()
            || h.msg_controllen > size_of::<CredSpace>()
        {
            return None;
        }
        // SAFETY: the control buffer holds `msg_controllen` bytes the kernel wrote
        // (checked above to lie within `space`, which is 8-byte aligned), so the first
        // header is in bounds and aligned; `read_unaligned` copies it out.
        let cmsg: libc::cmsghdr = unsafe { std::ptr::read_unaligned(space.0.as_ptr().cast()) };
        let data_len = size_of::<libc::ucred>() as u32;
        // SAFETY: CMSG_LEN only computes a size.
        let want = unsafe { libc::CMSG_LEN(data_len) } as usize;
        if cmsg.cmsg_level != libc::SOL_SOCKET
            || cmsg.cmsg_type != libc::SCM_CREDENTIALS
            || cmsg.cmsg_len < want
            || want > h.msg_controllen
        {
            return None;
        }
        // SAFETY: the data follows the header at CMSG_LEN(0) bytes and the checks above
        // put `want` bytes (header and ucred) inside `space`.
        let cred: libc::ucred = unsafe {
            let data = space.0.as_ptr().add(libc::CMSG_LEN(0) as usize);
            std::ptr::read_unaligned(data.cast())
        };
        Some(crate::admission::Client {
            uid: cred.uid,
            gid: cred.gid,
            pid: u32::try_from(cred.pid).ok().filter(|&p| p > 0),
            groups: None,
        })
    }
}

/// Headers for sending up to `N` datagrams, all to one address (or on a connected
/// socket), kept so that no batch allocates.
pub struct SendBatch<const N: usize> {
    headers: [libc::mmsghdr; N],
    iovs: [libc::iovec; N],
    to: Option<UnixAddr>,
}

impl<const N: usize> SendBatch<N> {
    /// Headers for sending to the socket bound at `to`, or on a connected socket.
    pub fn new(to: Option<&Path>) -> io::Result<Box<Self>> {
        let to = to.map(UnixAddr::new).transpose()?;
        // SAFETY: both are arrays of plain C structs for which all-zero bytes are valid.
        let (headers, iovs) = unsafe { zeroed() };
        Ok(Box::new(SendBatch { headers, iovs, to }))
    }

    /// Sends the first `N` (at most) of `datagrams` in order, without blocking, until
    /// all are sent or one fails. Returns how many were sent and, if not all, why the
    /// next one failed. `sendmmsg` reports an error only when it sent nothing, so after
    /// a partial send the rest is tried again to learn why it stopped.
    pub fn send<'a>(
        &mut self,
        fd: BorrowedFd<'_>,
        datagrams: impl IntoIterator<Item = &'a [u8]>,
    ) -> (usize, io::Result<()>) {
        let (name, namelen) = match &self.to {
            Some(to) => (to.as_ptr().cast_mut().cast(), to.len()),
            None => (std::ptr::null_mut(), 0),
        };
        let mut count = 0;
        for (i, datagram) in datagrams.into_iter().take(N).enumerate() {
            self.iovs[i] = libc::iovec {
                iov_base: datagram.as_ptr().cast_mut().cast(),
                iov_len: datagram.len(),
            };
            let h = &mut self.headers[i].msg_hdr;
            h.msg_name = name;
            h.msg_namelen = namelen;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            count = i + 1;
        }
        // SAFETY: headers `..count` were filled above: each points at `self.to`
        // (or at no address) and at one iovec for a datagram borrowed for `'a`, so
        // all outlive the call. The kernel only reads names and data on send; it
        // writes `msg_len`, inside the headers.
        unsafe { send_all(fd, &mut self.headers[..count]) }
    }
}

/// Sends `headers` with `sendmmsg` until all went or the socket refused one: how many
/// went, and why the rest did not. One loop for every batched sender (unix datagrams,
/// UDP tunnels, AF_PACKET).
///
/// # Safety
/// Every header must point at a name (or none) and at iovecs that stay valid for the
/// call; the kernel reads them and writes only each header's `msg_len`.
pub(crate) unsafe fn send_all(
    fd: BorrowedFd<'_>,
    headers: &mut [libc::mmsghdr],
) -> (usize, io::Result<()>) {
    let mut sent = 0;
    while sent < headers.len() {
        // SAFETY: the caller vouches for every header (see above); `sent..` stays
        // inside the slice, and its length is the count passed.
        let n = unsafe {
            libc::sendmmsg(
                fd.as_raw_fd(),
                headers[sent..].as_mut_ptr(),
                (headers.len() - sent) as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return (sent, Err(io::Error::last_os_error()));
        }
        sent += n as usize;
    }
    (sent, Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixDatagram;

    /// An empty directory for one test's sockets.
    fn socket_dir(test: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("vnet-mmsg-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Everything waiting on `sock`, in order.
    fn drain(sock: &UnixDatagram) -> Vec<Vec<u8>> {
        sock.set_nonblocking(true).unwrap();
        let mut buf = vec![0; 1 << 16];
        std::iter::from_fn(|| sock.recv(&mut buf).ok().map(|n| buf[..n].to_vec())).collect()
    }

    #[test]
    fn senders_are_told_apart_even_after_an_unbound_one() {
        let dir = socket_dir("recv");
        let server = UnixDatagram::bind(dir.join("s")).unwrap();
        let named = UnixDatagram::bind(dir.join("c")).unwrap();
        let unbound = UnixDatagram::unbound().unwrap();
        let mut batch = RecvBatch::<4>::new();
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

    #[test]
    fn with_so_passcred_each_datagram_carries_its_senders_credentials() {
        use nix::sys::socket::{setsockopt, sockopt::PassCred};
        let dir = socket_dir("creds");
        let server = UnixDatagram::bind(dir.join("s")).unwrap();
        let named = UnixDatagram::bind(dir.join("c")).unwrap();
        let mut batch = RecvBatch::<4>::new();
        let mut bufs = [[0u8; 8]; 4];
        named.send_to(b"before", dir.join("s")).unwrap();
        let [a, b, c, d] = &mut bufs;
        assert_eq!(batch.recv(server.as_fd(), [a, b, c, d]).unwrap(), 1);
        assert_eq!(
            batch.sender_credentials(0),
            None,
            "no SO_PASSCRED, no credentials"
        );

        setsockopt(&server, PassCred, &true).unwrap();
        for _ in 0..2 {
            named.send_to(b"x", dir.join("s")).unwrap();
        }
        let [a, b, c, d] = &mut bufs;
        assert_eq!(batch.recv(server.as_fd(), [a, b, c, d]).unwrap(), 2);
        let me = crate::admission::Client {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            pid: Some(std::process::id()),
            groups: None,
        };
        assert_eq!(batch.sender_credentials(0), Some(me.clone()));
        assert_eq!(batch.sender_credentials(1), Some(me));
        assert_eq!(batch.sender(1), Some(dir.join("c").as_path()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_batch_goes_out_in_order_to_an_address_or_on_a_connected_socket() {
        let dir = socket_dir("send");
        let receiver = UnixDatagram::bind(dir.join("r")).unwrap();
        let sender = UnixDatagram::unbound().unwrap();
        let mut batch = SendBatch::<4>::new(Some(&dir.join("r"))).unwrap();
        let words: [&[u8]; 6] = [b"one", b"two", b"", b"four", b"five", b"six"];
        let (n, result) = batch.send(sender.as_fd(), words);
        assert_eq!(n, 4, "at most N per call");
        result.unwrap();
        assert_eq!(drain(&receiver), words[..4]);

        let (ours, theirs) = UnixDatagram::pair().unwrap();
        let mut batch = SendBatch::<4>::new(None).unwrap();
        let (n, result) = batch.send(ours.as_fd(), words[4..].iter().copied());
        assert_eq!(n, 2);
        result.unwrap();
        assert_eq!(drain(&theirs), words[4..]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_full_receiver_takes_a_prefix_then_the_rest_would_block() {
        let dir = socket_dir("full");
        let receiver = UnixDatagram::bind(dir.join("r")).unwrap();
        let sender = UnixDatagram::unbound().unwrap();
        let mut batch = SendBatch::<32>::new(Some(&dir.join("r"))).unwrap();
        // 32 × 16 KiB is more than both the receiver's queue (net.unix.max_dgram_qlen)
        // and the sender's buffer take.
        let datagrams: Vec<Vec<u8>> = (0..32u8).map(|i| vec![i; 16 << 10]).collect();
        let (n, result) = batch.send(sender.as_fd(), datagrams.iter().map(Vec::as_slice));
        assert!(0 < n && n < 32, "partial send: {n}");
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert_eq!(drain(&receiver), datagrams[..n]);

        let (more, _) = batch.send(sender.as_fd(), datagrams[n..].iter().map(Vec::as_slice));
        assert!(more > 0, "room again once read");
        assert_eq!(drain(&receiver), datagrams[n..n + more]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_gone_peer_fails_the_first_datagram() {
        let dir = socket_dir("gone");
        let sender = UnixDatagram::unbound().unwrap();
        drop(UnixDatagram::bind(dir.join("closed")).unwrap());
        for (path, errno) in [("missing", libc::ENOENT), ("closed", libc::ECONNREFUSED)] {
            let mut batch = SendBatch::<4>::new(Some(&dir.join(path))).unwrap();
            let (n, result) = batch.send(sender.as_fd(), [&b"x"[..], b"y"]);
            assert_eq!(n, 0, "{path}");
            assert_eq!(result.unwrap_err().raw_os_error(), Some(errno), "{path}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
