//! Who is on the other end of a unix socket.

use std::os::fd::AsFd;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

/// The peer's pid and command name (`SO_PEERCRED` + `/proc/PID/comm`), where known.
pub fn describe<F: AsFd>(sock: &F) -> (Option<u32>, String) {
    match getsockopt(sock, PeerCredentials) {
        Ok(cred) if cred.pid() > 0 => {
            let pid = cred.pid() as u32;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let comm = comm.trim();
            let text = if comm.is_empty() {
                format!("pid {pid} uid {}", cred.uid())
            } else {
                format!("pid {pid} ({comm}) uid {}", cred.uid())
            };
            (Some(pid), text)
        }
        _ => (None, "unknown peer".to_string()),
    }
}
