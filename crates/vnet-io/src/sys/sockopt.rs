//! Socket options std and nix do not wrap.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Sets `SO_PEEK_OFF`: the next `MSG_PEEK` read starts `offset` bytes into the receive
/// queue (TCP since Linux 6.9). The NAT peeks past the bytes its guests have not
/// acknowledged yet without copying them again.
pub fn set_peek_offset(fd: BorrowedFd<'_>, offset: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: `fd` is a live descriptor for the call, `value` a live c_int whose size
    // is the length passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEEK_OFF,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
