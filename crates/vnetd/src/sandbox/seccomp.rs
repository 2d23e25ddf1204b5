//! The system calls vnetd makes: its seccomp allow-list.
//!
//! Every call below is one that vnetd's code, the Rust standard library, glibc, tokio,
//! mio, fuser or rust-vmm's vhost-user crates make while vnetd serves (what only
//! start-up needs, before the filter, is not here: `setresuid`, `mount`, `execve`,
//! `chown`...). Anything else kills the whole process (`SECCOMP_RET_KILL_PROCESS`,
//! reported as SIGSYS and, with auditing, logged with the call's number): a daemon
//! that does something it never does is not to be trusted to go on.
//!
//! Arguments are checked where that is cheap and tells much: `socket(2)` only for the
//! five families vnetd speaks (unix, IPv4, IPv6, netlink, packet).
//!
//! Groups, one per kind of work; a call may be needed by several, it is listed once.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

/// What besides the common list this vnetd needs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Needs {
    /// The classic devices are mounted by root: unmounting them at shutdown.
    pub unmount: bool,
}

/// Memory: the allocator, thread stacks and guard pages, and guests' memory shared
/// by a vhost-user front-end (a memfd, mapped).
const MEMORY: &[i64] = &[
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
];

/// Threads and their synchronization: data-plane threads, vhost-user workers, FUSE
/// waiters, the lease writer, tokio's blocking pool (glibc's `pthread_create` is
/// `clone3`, with `rseq` and the robust futex list registered by each new thread; Rust
/// names threads with `prctl(PR_SET_NAME)` and gives each a signal stack).
const THREADS: &[i64] = &[
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_futex,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_set_tid_address,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_prctl,
    libc::SYS_sigaltstack,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// Signals: SIGTERM and SIGINT through tokio's handler (a socket pair it writes to),
/// the kernel resuming a sleep or wait a signal interrupted, `abort` on a panic that
/// unwinds no further.
const SIGNALS: &[i64] = &[
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_restart_syscall,
    libc::SYS_tgkill,
];

/// Time: timers of the data plane and tokio (the vDSO answers most clock reads; these
/// are its fallbacks), sleeps of the lease writer.
const TIME: &[i64] = &[
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_gettimeofday,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
];

/// Who vnetd is and what it may: uid checks (`is_root`), capabilities raised around a
/// privileged step (`vnet_io::sys::privilege`), peer groups, randomness for the NAT's
/// keys and hash maps.
const IDENTITY: &[i64] = &[
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_getresuid,
    libc::SYS_getresgid,
    libc::SYS_getgroups,
    libc::SYS_capget,
    libc::SYS_capset,
    libc::SYS_getrandom,
    libc::SYS_uname,
    libc::SYS_prlimit64,
];

/// Files: sockets' directories and lease files in RUN and STATE (made, renamed,
/// removed, given modes; a VDE client's data socket given to its uid), `/dev/net/tun`, `/proc` (peers' names, sysctls), the
/// configuration and `/etc/resolv.conf`, the FUSE device's requests.
const FILES: &[i64] = &[
    libc::SYS_openat,
    libc::SYS_close,
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_lseek,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_fcntl,
    libc::SYS_ioctl,
    libc::SYS_getdents64,
    libc::SYS_mkdirat,
    libc::SYS_unlinkat,
    libc::SYS_renameat2,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_fchown,
    libc::SYS_fchownat,
    libc::SYS_ftruncate,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_readlinkat,
    libc::SYS_symlinkat,
    libc::SYS_getcwd,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_pipe2,
    libc::SYS_eventfd2,
];

/// The older forms of calls above that some architectures keep, and glibc and Rust use
/// where they exist (on x86_64 the path calls before the `*at` family, `poll`,
/// `epoll_wait`, and `arch_prctl` for a new thread's TLS); riscv64 has none of them.
#[cfg(target_arch = "x86_64")]
const FILES_LEGACY: &[i64] = &[
    libc::SYS_renameat,
    libc::SYS_open,
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_access,
    libc::SYS_mkdir,
    libc::SYS_rmdir,
    libc::SYS_unlink,
    libc::SYS_rename,
    libc::SYS_chmod,
    libc::SYS_chown,
    libc::SYS_lchown,
    libc::SYS_readlink,
    libc::SYS_dup2,
    libc::SYS_pipe,
    libc::SYS_poll,
    libc::SYS_epoll_wait,
    libc::SYS_arch_prctl,
];
#[cfg(target_arch = "aarch64")]
const FILES_LEGACY: &[i64] = &[libc::SYS_renameat];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const FILES_LEGACY: &[i64] = &[];

/// Waiting: the data plane's epoll (mio), tokio's, the FUSE waiters' `poll`.
const EVENTS: &[i64] = &[
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_ppoll,
];

/// Sockets: clients' unix sockets (stream, dgram, seqpacket, vhost-user, fd passing),
/// the NAT's TCP, UDP and ICMP sockets and forwards, uplinks' packet sockets, netlink
/// for the host's addresses (`getifaddrs`), batches with `recvmmsg`/`sendmmsg`.
const SOCKETS: &[i64] = &[
    libc::SYS_socketpair,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_shutdown,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_sendmmsg,
    libc::SYS_recvmmsg,
];

/// The families `socket(2)` may make.
const SOCKET_FAMILIES: &[i32] = &[
    libc::AF_UNIX,
    libc::AF_INET,
    libc::AF_INET6,
    libc::AF_NETLINK,
    libc::AF_PACKET,
];

/// The compiled filter for this architecture: the groups above, plus what `needs` adds.
pub fn filter(needs: Needs) -> Result<BpfProgram> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = [
        MEMORY,
        THREADS,
        SIGNALS,
        TIME,
        IDENTITY,
        FILES,
        FILES_LEGACY,
        EVENTS,
        SOCKETS,
    ]
    .into_iter()
    .flatten()
    .map(|&call| (call, Vec::new()))
    .collect();
    if needs.unmount {
        rules.insert(libc::SYS_umount2, Vec::new());
    }
    let families = SOCKET_FAMILIES
        .iter()
        .map(|&family| {
            let domain =
                SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, family as u64)?;
            SeccompRule::new(vec![domain])
        })
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_socket, families);
    let arch = std::env::consts::ARCH
        .try_into()
        .with_context(|| format!("no seccomp filter for {}", std::env::consts::ARCH))?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        arch,
    )?;
    Ok(filter.try_into()?)
}

/// Installs `program` in every thread of this process (`SECCOMP_FILTER_FLAG_TSYNC`; it
/// also sets `NO_NEW_PRIVS`, which seccomp requires). Threads started later inherit it.
pub fn install(program: &BpfProgram) -> Result<()> {
    seccompiler::apply_filter_all_threads(program).context("cannot install the seccomp filter")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;

    /// Set in the child that [`killed_by`] starts: the call it makes after the filter.
    const CHILD: &str = "VNETD_SECCOMP_TEST_CHILD";

    /// Runs this test binary again for test `name` alone, as a child that installs
    /// vnetd's filter, writes (an allowed call), then makes `call`; returns how it ended.
    fn killed_by(name: &str, call: &str) -> std::process::ExitStatus {
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env(CHILD, call)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("filter installed"), "{stdout}");
        assert!(!stdout.contains("still alive"), "{stdout}");
        out.status
    }

    /// In the child: installs the filter, then makes the call the parent named.
    fn child() -> bool {
        let Some(call) = std::env::var_os(CHILD) else {
            return false;
        };
        install(&filter(Needs::default()).unwrap()).unwrap();
        println!("filter installed");
        if call == "personality" {
            let _ = nix::sys::personality::get();
        } else {
            use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
            let _ = socket(
                AddressFamily::Alg,
                SockType::SeqPacket,
                SockFlag::empty(),
                None,
            );
        }
        println!("still alive after {call:?}");
        true
    }

    /// `personality(2)`: harmless, and not on the list.
    #[test]
    fn a_call_off_the_list_kills_the_process() {
        if child() {
            return;
        }
        let status = killed_by(
            "sandbox::seccomp::tests::a_call_off_the_list_kills_the_process",
            "personality",
        );
        assert_eq!(status.signal(), Some(libc::SIGSYS), "{status:?}");
    }

    /// `socket(2)` is listed, but not for AF_ALG (the kernel's crypto API).
    #[test]
    fn a_socket_of_another_family_kills_the_process() {
        if child() {
            return;
        }
        let status = killed_by(
            "sandbox::seccomp::tests::a_socket_of_another_family_kills_the_process",
            "socket",
        );
        assert_eq!(status.signal(), Some(libc::SIGSYS), "{status:?}");
    }
}
