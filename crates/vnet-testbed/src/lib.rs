//! Test bed for vnet's end-to-end tests (DESIGN.md §5, §8).
//!
//! It builds the topologies of the spec from real parts and cleans them up
//! when a test ends, even when it fails:
//!
//! * [`Netns`], [`NsVm`], [`Veth`], [`Bridge`]: network namespaces as cheap
//!   "VMs" with a real kernel TCP/IP stack, attached through interfaces (e.g.
//!   a TAP the daemon created) moved into them;
//! * [`Guest`] / [`GuestBuilder`]: real QEMU guests (`-accel tcg`) booting the
//!   host's Debian kernel with an initramfs assembled at test time from
//!   busybox and the virtio/VLAN modules ([`initramfs`]), driven over their
//!   serial console with [`Guest::exec`];
//! * [`Daemon`]: a `vnetd` process in private run/state directories, plus the
//!   `vnet` CLI pointed at it; [`api`]: its vnets, ports and counters through the
//!   control API and the CLI, and namespace VMs on TAP ports it creates;
//! * [`overlay`]: "hosts" (namespaces, each with its vnetd) on one underlay, a vnet
//!   across them over VXLAN; [`Guest::incoming`] and [`Guest::migrate`] move a guest
//!   from one to another live, over QMP ([`Guest::qmp`]);
//! * [`frames`]: hand-made Ethernet and ARP frames; [`payload`]: replayable
//!   junk and files sent intact; [`task`]: what a thread
//!   of a process is doing (blocked in which system call, how often it slept).
//!
//! Everything that needs privileges checks [`is_root`] first; tests use
//! [`skip_unless_root!`] (or [`skip_unless!`] for a missing device or tool) so
//! that a run that cannot test something says so — a `SKIPPED: <test>: <reason>`
//! line, counted by `scripts/test` through [`SKIP_DIR_ENV`] — instead of failing
//! or passing silently. Names are made unique per process with
//! [`unique_name`] so tests run in parallel, and readiness is awaited with
//! [`wait_for`], never with fixed sleeps.
//!
//! Test traffic stays inside namespaces the test bed created, QEMU's own
//! socket netdevs, or loopback.
//!
//! # Example
//!
//! A guest on a vnet's stream socket and a namespace VM on a TAP the daemon
//! created reach each other (the config and port names are vnetd's, shown
//! for illustration):
//!
//! ```no_run
//! use std::time::Duration;
//! use vnet_testbed::{skip_unless_root, Daemon, Guest, Netdev, NsVm};
//!
//! #[test]
//! fn guest_and_namespace_share_a_vnet() {
//!     skip_unless_root!();
//!     let daemon = Daemon::start(Some("[nets.lab]\ntaps = [\"lab0\"]\n"));
//!     let ns_vm = NsVm::attach("lab0", "02:00:00:00:00:01", "10.0.0.1/24");
//!     let guest = Guest::builder()
//!         .nic(Netdev::Stream { path: daemon.net_dir("lab").join("stream.sock") })
//!         .static_ip(0, "10.0.0.2/24")
//!         .boot()
//!         .expect("guest boots");
//!     let (status, output) = guest
//!         .exec("ping -c 3 -W 2 10.0.0.1", Duration::from_secs(60))
//!         .expect("guest answers");
//!     assert_eq!(status, 0, "{output}");
//!     assert!(ns_vm.ping("10.0.0.2", 2));
//! }
//! ```
//!
//! Environment knobs: `VNET_BIN_DIR` (where `vnetd`/`vnet` are),
//! `VNET_QEMU`, `VNET_GUEST_KERNEL`, `VNET_GUEST_BUSYBOX`, `VNET_GUEST_PVH=0`,
//! `VNET_TESTBED_CACHE`, `VNET_TESTBED_MAX_BOOTS` (default 2 concurrent boots
//! per process).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod api;
mod cache;
mod cmd;
mod daemon;
mod dhcp;
mod error;
pub mod frames;
mod guest;
pub mod initramfs;
pub mod kernel;
mod link;
mod netns;
mod nsvm;
pub mod overlay;
pub mod payload;
pub mod scripted;
mod skip;
pub mod task;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use daemon::{bin_path, Daemon, DaemonBuilder, DEFAULT_START_TIMEOUT, STOP_GRACE};
pub use dhcp::DhcpLease;
pub use error::{Error, Result};
pub use guest::{Guest, GuestBuilder, Netdev, DEFAULT_BOOT_TIMEOUT};
pub use kernel::GuestKernel;
pub use link::{Bridge, Veth};
pub use netns::{ChildGuard, Netns};
pub use nsvm::NsVm;
#[doc(hidden)]
pub use skip::trim_test_name;
pub use skip::{skip, NEEDS_ROOT, SKIP_DIR_ENV};

/// Whether this process runs with effective uid 0 (vnet's one rule,
/// `vnet_dirs::is_root`). Namespaces, veth/TAP/bridge interfaces and reading
/// `/boot/vmlinuz-*` (mode 0600 on Debian) all need it.
pub use vnet_dirs::is_root;

/// A short name that is unique on this host while this process lives:
/// `PREFIX-PPPPPCCC`.
///
/// The result is at most 15 bytes (the kernel's `IFNAMSIZ - 1`), uses only
/// `[a-z0-9-]`, and is therefore valid for interfaces, namespaces and file
/// names. `prefix` is reduced to its first 4 lowercase ASCII alphanumerics;
/// the rest is the pid (5 base-36 digits, fixed width) and a per-process
/// counter, so two calls never return the same name, in this process or in
/// any other process running at the same time.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let prefix: String = prefix
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .take(4)
        .collect();
    let prefix = if prefix.is_empty() {
        "t".to_string()
    } else {
        prefix
    };
    let pid = base36(u64::from(std::process::id()) % 36u64.pow(5));
    format!("{prefix}-{pid:0>5}{}", base36(u64::from(n)))
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII digits")
}

/// Polls `ready` until it returns `true` or `timeout` has passed; returns
/// whether it became ready.
///
/// This is the readiness primitive tests use instead of sleeping: it checks
/// right away, then backs off from 1 ms to 50 ms between checks, and always
/// checks once more at the deadline, so a condition that becomes true just
/// in time is seen.
pub fn wait_for(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if ready() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_short_distinct_and_valid() {
        let names: Vec<String> = (0..2000).map(|_| unique_name("Tap_Port!")).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        for name in &names {
            assert!(name.len() <= 15, "{name}");
            assert!(name.starts_with("tapp-"), "{name}");
            assert!(name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
        }
        assert!(unique_name("").starts_with("t-"));
    }

    #[test]
    fn wait_for_sees_late_readiness_and_times_out() {
        let start = Instant::now();
        assert!(wait_for(Duration::from_secs(5), || start.elapsed()
            > Duration::from_millis(20)));
        assert!(!wait_for(Duration::from_millis(30), || false));
    }

    #[test]
    fn base36_digits() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
    }
}
