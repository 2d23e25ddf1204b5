//! Socket options std and nix do not wrap.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `setsockopt(fd, level, name, value)` with the option's value as a plain C value.
pub fn set<T>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `fd` is a live descriptor for the call; `value` points to a live T and
    // the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets `IP_MULTICAST_IF`: multicast datagrams leave through the interface holding
/// `local` (and from it), whatever the routes say.
pub fn set_multicast_if_v4(fd: BorrowedFd<'_>, local: std::net::Ipv4Addr) -> io::Result<()> {
    let addr = libc::in_addr {
        s_addr: u32::from(local).to_be(),
    };
    set(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &addr)
}

/// Sets `SO_PEEK_OFF`: the next `MSG_PEEK` read starts `offset` bytes into the receive
/// queue (TCP since Linux 6.9). The NAT peeks past the bytes its guests have not
/// acknowledged yet without copying them again.
pub fn set_peek_offset(fd: BorrowedFd<'_>, offset: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
    set(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, &value)
}
