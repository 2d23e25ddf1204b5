//! Who is on the other end of a unix socket.

use std::os::fd::AsFd;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use crate::admission::Client;

/// Who connected on `sock`, as the kernel recorded it at `connect()`: `SO_PEERCRED`
/// (uid, primary gid, pid) and `SO_PEERGROUPS`; `None` if the kernel will not say.
/// Without `SO_PEERGROUPS` (kernels before 4.13) only the primary group counts.
pub fn credentials<F: AsFd>(sock: &F) -> Option<Client> {
    let cred = getsockopt(sock, PeerCredentials).ok()?;
    Some(Client {
        uid: cred.uid(),
        gid: cred.gid(),
        // 0: the peer is in a pid namespace we cannot see into.
        pid: u32::try_from(cred.pid()).ok().filter(|&p| p > 0),
        groups: Some(groups(sock.as_fd()).unwrap_or_default()),
    })
}

/// A client as `vnet port ls` describes it: `pid 4242 (qemu) uid 1000`.
pub fn describe(client: Option<&Client>) -> String {
    let Some(client) = client else {
        return "unknown peer".to_string();
    };
    let Some(pid) = client.pid else {
        return format!("uid {}", client.uid);
    };
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    match comm.trim() {
        "" => format!("pid {pid} uid {}", client.uid),
        comm => format!("pid {pid} ({comm}) uid {}", client.uid),
    }
}

/// `SO_PEERGROUPS` (Linux 4.13) in asm-generic numbering, which x86, arm and riscv use;
/// libc does not export it yet.
const SO_PEERGROUPS: libc::c_int = 59;

/// The peer's supplementary groups as the kernel recorded them when it connected
/// (`SO_PEERGROUPS`): the same moment as `SO_PEERCRED`, so nothing the peer does later
/// (exit, a reused pid, a changed `/etc/group`) can alter the answer.
pub fn groups(sock: std::os::fd::BorrowedFd<'_>) -> std::io::Result<Vec<u32>> {
    use std::os::fd::AsRawFd;
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: `sock` is a live descriptor for the call; `groups` is a live buffer
        // of exactly `len` bytes, and the kernel writes at most `len` bytes into it.
        let rc = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let needed = len as usize / size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(needed);
            return Ok(groups);
        }
        let error = std::io::Error::last_os_error();
        // ERANGE: the buffer was too small and `len` now says how big it must be.
        if error.raw_os_error() != Some(libc::ERANGE) || needed <= groups.len() {
            return Err(error);
        }
        groups.resize(needed, 0);
    }
}
