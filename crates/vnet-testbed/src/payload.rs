//! Bytes to send and ways to tell they arrived intact: deterministic junk, file
//! digests, and a file sent from a namespace VM to a QEMU guest over TCP.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{Guest, NsVm};

/// Deterministic junk bytes (xorshift), so a failure can be replayed from its seed.
pub fn junk(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

/// The digest `tool` (`md5sum`, `sha256sum`) prints for a file; empty if it fails.
fn digest(tool: &str, path: &Path) -> String {
    let out = Command::new(tool)
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("test bed: cannot run {tool}: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

/// The md5 of a file, as `md5sum` prints it.
pub fn md5(path: &Path) -> String {
    digest("md5sum", path)
}

/// The sha256 of a file, as `sha256sum` prints it.
pub fn sha256(path: &Path) -> String {
    digest("sha256sum", path)
}

/// Sends `len` random bytes over TCP from namespace VM `vm` to `guest` (listening with
/// busybox `nc` on port 5001 of `guest_ip`) and asserts they arrive intact. Returns the
/// payload file (and the directory that keeps it).
///
/// # Panics
/// If the transfer fails or the guest's copy differs.
pub fn send_file_to_guest(
    vm: &NsVm,
    guest: &Guest,
    guest_ip: &str,
    len: usize,
) -> (tempfile::TempDir, PathBuf) {
    let t = Duration::from_secs(60);
    guest.exec_ok(
        "(nc -l -p 5001 > /tmp/rx; echo done > /tmp/rx.done) >/dev/null 2>&1 &",
        t,
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("payload");
    let made = Command::new("sh")
        .args([
            "-c",
            &format!("head -c {len} /dev/urandom > {}", file.display()),
        ])
        .status()
        .unwrap();
    assert!(made.success());
    let sent = vm.ns().exec(&[
        "socat",
        "-u",
        &format!("FILE:{}", file.display()),
        &format!("TCP:{guest_ip}:5001,retry=20,interval=0.5"),
    ]);
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    guest.exec_ok(
        "for i in $(seq 300); do [ -e /tmp/rx.done ] && break; sleep 0.2; done; ls -l /tmp/rx",
        t,
    );
    let theirs = guest.exec_ok("md5sum /tmp/rx | cut -d' ' -f1", t);
    assert_eq!(
        theirs.trim(),
        md5(&file),
        "payload corrupted on the way to the guest"
    );
    (dir, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junk_is_replayable_from_its_seed() {
        assert_eq!(junk(64, 7), junk(64, 7));
        assert_ne!(junk(64, 7), junk(64, 8));
        assert_eq!(junk(10, 1).len(), 10);
    }
}
