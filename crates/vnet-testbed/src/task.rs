//! What a thread is doing, read from `/proc`: tests use it to wait until a thread
//! is blocked (instead of sleeping and hoping it got there), and to count how often
//! a thread blocked (instead of bounding CPU seconds or wall-clock time).

use std::time::Duration;

/// The thread id of the calling thread (`gettid(2)`).
pub fn current_tid() -> u32 {
    nix::unistd::gettid().as_raw() as u32
}

/// The id of the thread of process `pid` named `name` (its `comm`, as given to
/// `std::thread::Builder::name`, cut to 15 bytes), if it has one.
pub fn find_thread(pid: u32, name: &str) -> Option<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    tasks.flatten().find_map(|task| {
        let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
        (comm.trim_end() == name)
            .then(|| task.file_name().to_str()?.parse().ok())
            .flatten()
    })
}

/// How many times thread `tid` of `pid` has blocked so far: its
/// `voluntary_ctxt_switches`, which grow each time it sleeps (in `epoll_wait`,
/// `read`, a futex) and never while it runs, even when it is preempted.
///
/// # Panics
/// If the thread does not exist.
pub fn times_blocked(pid: u32, tid: u32) -> u64 {
    let path = format!("/proc/{pid}/task/{tid}/status");
    let status = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("test bed: cannot read {path}: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("test bed: no voluntary_ctxt_switches in {path}:\n{status}"))
}

/// Whether thread `tid` of `pid` sleeps inside system call `nr`
/// (`nix::libc::SYS_read`, ...): its state is sleeping and `/proc/.../syscall`
/// names that call.
pub fn is_blocked_in(pid: u32, tid: u32, nr: i64) -> bool {
    let dir = format!("/proc/{pid}/task/{tid}");
    let sleeping = std::fs::read_to_string(format!("{dir}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|end| stat[end + 1..].split_whitespace().next())
            .is_some_and(|state| state == "S" || state == "D")
    });
    sleeping
        && std::fs::read_to_string(format!("{dir}/syscall")).is_ok_and(|s| {
            s.split_whitespace()
                .next()
                .and_then(|n| n.parse::<i64>().ok())
                == Some(nr)
        })
}

/// Waits up to `timeout` until thread `tid` of `pid` sleeps in system call `nr`
/// (see [`is_blocked_in`]); returns whether it did.
pub fn wait_blocked_in(pid: u32, tid: u32, nr: i64, timeout: Duration) -> bool {
    crate::wait_for(timeout, || is_blocked_in(pid, tid, nr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_a_thread_block_in_read_and_counts_it() {
        let (mut rx, mut tx) = std::os::unix::net::UnixStream::pair().unwrap();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let reader = std::thread::Builder::new()
            .name("tb-reader".into())
            .spawn(move || {
                tid_tx.send(current_tid()).unwrap();
                let mut b = [0u8; 1];
                std::io::Read::read(&mut rx, &mut b).unwrap()
            })
            .unwrap();
        let tid = tid_rx.recv().unwrap();
        let pid = std::process::id();
        assert_eq!(find_thread(pid, "tb-reader"), Some(tid));
        // std reads a socket with recv(), which is recvfrom(2) on Linux.
        assert!(wait_blocked_in(
            pid,
            tid,
            nix::libc::SYS_recvfrom,
            Duration::from_secs(10)
        ));
        assert!(!is_blocked_in(pid, tid, nix::libc::SYS_read));
        assert!(times_blocked(pid, tid) >= 1);
        std::io::Write::write_all(&mut tx, b"x").unwrap();
        assert_eq!(reader.join().unwrap(), 1);
        assert_eq!(find_thread(pid, "no-such-thread"), None);
    }
}
