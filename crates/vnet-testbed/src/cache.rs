//! The test bed's build cache: guest kernels and initramfs archives are built once
//! and kept under a name derived from what they were built from, so every test (and
//! every later run) reuses them. Shared by `kernel` and `initramfs`.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::{Error, Result};

/// FNV-1a, 64 bit: a stable hash for cache keys (std's hasher may change
/// between Rust releases; a change would only cost a rebuild, but stable is
/// simpler to reason about).
pub(crate) struct Fnv(u64);

impl Fnv {
    pub(crate) fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn add(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        // Separate fields so ("ab","c") and ("a","bc") differ.
        self.0 = (self.0 ^ 0xff).wrapping_mul(0x0100_0000_01b3);
    }

    /// Identifies a file by path, size and modification time (cheaper than
    /// hashing its content; package upgrades change both).
    pub(crate) fn add_file(&mut self, path: &Path) -> Result<()> {
        let meta = fs::metadata(path)
            .map_err(|e| Error::Failed(format!("cannot stat {}: {e}", path.display())))?;
        self.add(path.to_string_lossy().as_bytes());
        self.add(&meta.len().to_le_bytes());
        self.add(&meta.mtime().to_le_bytes());
        self.add(&meta.mtime_nsec().to_le_bytes());
        Ok(())
    }

    pub(crate) fn finish(&self) -> u64 {
        self.0
    }
}

/// Moves a finished temporary file to its cache name, readable by all (an
/// unprivileged test run may share the cache), atomically.
pub(crate) fn publish(tmp: tempfile::NamedTempFile, path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o644))?;
    tmp.persist(path)
        .map_err(|e| Error::Failed(format!("cannot store {}: {e}", path.display())))?;
    Ok(())
}
