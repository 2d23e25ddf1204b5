//! The sandbox: what vnetd can still do once it serves, whoever it runs as.
//!
//! # Theory of operation
//!
//! After start-up vnetd only moves frames, answers its control API and changes vnets
//! when asked; it never starts programs, mounts (but for unmounting the classic
//! devices), loads modules, traces, or writes outside its own directories. Two kernel
//! mechanisms hold it to that, so that a flaw in a parser exploited by a guest or a
//! client gets no further than vnetd's own work:
//!
//! - [`landlock`]: the files it may open (`RUN`, `STATE`, `/dev/net/tun`, reading
//!   `/proc`, `/etc` and the configuration). Landlock binds the calling thread and its
//!   later threads only, so it comes before the first thread; and it forbids mounting,
//!   so it applies only where vnetd mounts nothing: under `--user` (the classic devices
//!   need root's `mount(2)`, and are skipped there). A kernel without landlock runs
//!   vnetd unconfined and the log says so.
//! - [`seccomp`]: the system calls it may make, an allow-list; anything else kills the
//!   process. Installed after the last privileged step of start-up (the classic
//!   devices' mount), in every thread at once (`SECCOMP_FILTER_FLAG_TSYNC`): one list
//!   for all threads, as they share most calls (a per-thread list would save little
//!   and could kill vnetd where a library moves work from one thread to another).
//!
//! `[access] sandbox = false` switches both off: the list is what vnetd and its
//! libraries call today, and a new glibc or kernel may make a call that is not on it;
//! then vnetd dies with SIGSYS and the switch keeps the networks up while that is
//! reported and fixed. A vnetd run by an ordinary user that mounted the classic devices
//! through `fusermount3` has no filter either: unmounting runs `fusermount3` again,
//! which would inherit it.

pub mod landlock;
pub mod seccomp;

use anyhow::Result;
use tracing::{info, warn};

use crate::privileges;

/// Applies [`landlock`] to this thread, which must be vnetd's only one, and logs what
/// the kernel enforces.
pub fn restrict_files(paths: &landlock::Paths) -> Result<()> {
    privileges::require_single_thread("apply landlock")?;
    match landlock::restrict(paths)? {
        landlock::Enforced::Fully => info!(
            "landlock: files limited to {} and {} (read and write), /dev/net/tun, \
             reading /etc, /proc and the configuration",
            paths.run_dir.display(),
            paths.state_dir.display()
        ),
        landlock::Enforced::Partially => {
            warn!("landlock: partly enforced: this kernel knows only some of its rights")
        }
        landlock::Enforced::Not => {
            warn!("landlock: unavailable in this kernel: vnetd's files are not limited")
        }
    }
    Ok(())
}

/// Installs the [`seccomp`] filter in every thread.
pub fn restrict_calls(needs: seccomp::Needs) -> Result<()> {
    seccomp::install(&seccomp::filter(needs)?)?;
    info!("seccomp: system calls limited to vnetd's list; any other kills it (SIGSYS)");
    Ok(())
}
