//! Messages with file descriptors (`SCM_RIGHTS`) on a unix stream, for relaying
//! vhost-user requests (`SET_MEM_TABLE`, `SET_VRING_KICK`... carry fds).

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// Most fds one message may carry (vhost-user: 8 memory regions; some slack).
pub const MAX_FDS: usize = 32;

/// Reads up to `buf.len()` bytes and the fds sent with them. `Ok((0, _))` is EOF.
pub fn recv_with_fds(
    stream: &UnixStream,
    buf: &mut [u8],
) -> std::io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            for fd in raw {
                // SAFETY: the kernel just installed `fd` in our table for this message;
                // nothing else knows it, so the OwnedFd is its only owner.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
    let n = msg.bytes;
    if truncated {
        return Err(std::io::Error::other("too many fds in one message"));
    }
    Ok((n, fds))
}

/// Writes all of `buf`, with `fds` attached to its first byte.
pub fn send_with_fds(stream: &UnixStream, buf: &[u8], fds: &[OwnedFd]) -> std::io::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_fd().as_raw_fd()).collect();
    let mut sent = 0;
    while sent < buf.len() {
        let iov = [IoSlice::new(&buf[sent..])];
        let cmsgs = [ControlMessage::ScmRights(&raw)];
        let with: &[ControlMessage] = if sent == 0 && !raw.is_empty() {
            &cmsgs
        } else {
            &[]
        };
        match sendmsg::<()>(stream.as_raw_fd(), &iov, with, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(n) => sent += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
