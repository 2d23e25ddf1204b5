//! Unix `SOCK_SEQPACKET` sockets (the vnet API), which std and mio lack.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::sys::socket::{
    accept4, bind, listen, recv, sendmsg, socket, AddressFamily, Backlog, MsgFlags, SockFlag,
    SockType, UnixAddr,
};

/// A non-blocking listening socket bound at `path`.
pub fn listen_at(path: &Path) -> io::Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    bind(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
    listen(&fd, Backlog::new(128).expect("valid backlog"))?;
    Ok(fd)
}

/// A connected pair: the first end non-blocking (for the data plane), the second
/// blocking (for a thread that waits on it, like the classic device's).
pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let (a, b) = nix::sys::socket::socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    nix::fcntl::fcntl(
        &a,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )?;
    Ok((a, b))
}

/// Accepts one pending connection, non-blocking; `Ok(None)` when there is none.
pub fn accept(listener: &OwnedFd) -> io::Result<Option<OwnedFd>> {
    match accept4(
        listener.as_raw_fd(),
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
    ) {
        // SAFETY: accept4 just returned this descriptor and nothing else owns it.
        Ok(fd) => Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) })),
        Err(nix::errno::Errno::EAGAIN) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// One message received: its real length may exceed the buffer (then it was truncated).
pub fn recv_message(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    Ok(recv(
        fd.as_raw_fd(),
        buf,
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC,
    )?)
}

/// Sends `parts` as one message, non-blocking, without SIGPIPE.
pub fn send_message(fd: &OwnedFd, parts: &[io::IoSlice<'_>]) -> io::Result<()> {
    sendmsg::<UnixAddr>(
        fd.as_raw_fd(),
        parts,
        &[],
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(())
}
