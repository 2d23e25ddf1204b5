//! The guest kernel: which one, and how to boot it fast under TCG.
//!
//! A distribution `vmlinuz` is a bzImage whose payload is compressed (xz on
//! Debian). Decompressing ~65 MB in emulated code takes 8–9 s under TCG,
//! more than the rest of the boot. So, when the kernel supports the PVH entry
//! point (`CONFIG_PVH=y`), the test bed decompresses the payload once on the
//! host and hands QEMU the plain ELF `vmlinux`, which QEMU boots directly
//! (PVH); otherwise it boots the bzImage as is.

use std::fs;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// A kernel image and the module tree that belongs to it.
#[derive(Debug, Clone)]
pub struct GuestKernel {
    /// The kernel release, e.g. `6.1.0-56-amd64`.
    pub version: String,
    /// The bootable image, e.g. `/boot/vmlinuz-6.1.0-56-amd64`.
    pub vmlinuz: PathBuf,
    /// `/lib/modules/<version>`.
    pub modules_dir: PathBuf,
}

impl GuestKernel {
    /// Finds the kernel to boot guests with: `$VNET_GUEST_KERNEL` (a
    /// `vmlinuz-<version>` path) if set, otherwise the newest
    /// `/boot/vmlinuz-<version>` that has a `/lib/modules/<version>/modules.dep`.
    ///
    /// The running host kernel does not matter: guests boot the installed
    /// distribution kernel, whose modules are on disk.
    pub fn detect() -> Result<GuestKernel> {
        let candidates: Vec<PathBuf> = match std::env::var_os("VNET_GUEST_KERNEL") {
            Some(p) => vec![PathBuf::from(p)],
            None => {
                let mut v: Vec<PathBuf> = fs::read_dir("/boot")
                    .map_err(|e| Error::Failed(format!("cannot list /boot: {e}")))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| file_name(p).starts_with("vmlinuz-"))
                    .collect();
                v.sort_by_key(|p| std::cmp::Reverse(version_key(p)));
                v
            }
        };
        for vmlinuz in candidates {
            let version = file_name(&vmlinuz)
                .trim_start_matches("vmlinuz-")
                .to_string();
            let modules_dir = Path::new("/lib/modules").join(&version);
            if modules_dir.join("modules.dep").is_file() {
                return Ok(GuestKernel {
                    version,
                    vmlinuz,
                    modules_dir,
                });
            }
        }
        Err(Error::Failed(
            "no guest kernel: need /boot/vmlinuz-<v> with /lib/modules/<v>/modules.dep \
             (Debian: apt-get install linux-image-amd64), or set VNET_GUEST_KERNEL"
                .into(),
        ))
    }

    /// Whether `/boot/config-<version>` says `CONFIG_PVH=y`.
    pub fn supports_pvh(&self) -> bool {
        let config = self
            .vmlinuz
            .with_file_name(format!("config-{}", self.version));
        fs::read_to_string(config).is_ok_and(|c| c.lines().any(|l| l == "CONFIG_PVH=y"))
    }

    /// The image to pass to QEMU's `-kernel`: a decompressed `vmlinux`
    /// cached in `cache` when the kernel supports PVH and its payload can be
    /// extracted, else the `vmlinuz` itself. `$VNET_GUEST_PVH=0` forces the
    /// latter. Extraction failures are not errors: they only cost boot time.
    pub fn boot_image(&self, cache: &Path) -> PathBuf {
        if std::env::var("VNET_GUEST_PVH").is_ok_and(|v| v == "0") || !self.supports_pvh() {
            return self.vmlinuz.clone();
        }
        match self.extract_vmlinux(cache) {
            Ok(path) => path,
            Err(e) => {
                eprintln!(
                    "test bed: booting the compressed {} (slower under TCG): {e}",
                    self.vmlinuz.display()
                );
                self.vmlinuz.clone()
            }
        }
    }

    fn extract_vmlinux(&self, cache: &Path) -> Result<PathBuf> {
        let meta = fs::metadata(&self.vmlinuz)?;
        let mut key = crate::cache::Fnv::new();
        key.add(self.vmlinuz.to_string_lossy().as_bytes());
        key.add_file(&self.vmlinuz)?;
        let path = cache.join(format!("vmlinux-{}-{:016x}", self.version, key.finish()));
        if path.is_file() {
            return Ok(path);
        }
        let image = fs::read(&self.vmlinuz)
            .map_err(|e| Error::Failed(format!("cannot read {}: {e}", self.vmlinuz.display())))?;
        fs::create_dir_all(cache)?;
        // Try every compressed stream signature in the image, first one first;
        // keep the first output that is an ELF of plausible size.
        const FORMATS: &[(&[u8], &[&str])] = &[
            (b"\xfd7zXZ\x00", &["xz", "-dc", "--single-stream"]),
            (b"\x28\xb5\x2f\xfd", &["zstd", "-dcq"]),
            (b"\x1f\x8b\x08", &["gzip", "-dcq"]),
        ];
        let mut starts: Vec<(usize, &[&str])> = FORMATS
            .iter()
            .flat_map(|(magic, tool)| {
                image
                    .windows(magic.len())
                    .enumerate()
                    .filter(move |(_, w)| w == magic)
                    .map(move |(i, _)| (i, *tool))
                    .take(4)
            })
            .collect();
        starts.sort_by_key(|(i, _)| *i);
        for (offset, tool) in starts {
            let payload = tempfile::NamedTempFile::new_in(cache)?;
            fs::write(payload.path(), &image[offset..])?;
            let mut argv = tool.to_vec();
            let payload_path = payload.path().to_string_lossy().into_owned();
            argv.push(&payload_path);
            // Trailing data after the stream makes some tools exit non-zero
            // after writing everything: judge by the output instead.
            let Ok(out) = crate::cmd::output(&argv) else {
                continue;
            };
            if out.stdout.starts_with(b"\x7fELF") && out.stdout.len() as u64 > meta.len() {
                let tmp = tempfile::NamedTempFile::new_in(cache)?;
                fs::write(tmp.path(), &out.stdout)?;
                crate::cache::publish(tmp, &path)?;
                return Ok(path);
            }
        }
        Err(Error::Failed("no decompressible ELF payload found".into()))
    }
}

pub(crate) fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Sort key for kernel versions: numeric runs compare as numbers.
fn version_key(p: &Path) -> Vec<(u64, String)> {
    let name = file_name(p);
    let mut key = Vec::new();
    let mut num = String::new();
    let mut text = String::new();
    for c in name.chars() {
        if c.is_ascii_digit() {
            if !text.is_empty() {
                key.push((0, std::mem::take(&mut text)));
            }
            num.push(c);
        } else {
            if !num.is_empty() {
                key.push((num.parse().unwrap_or(0), String::new()));
                num.clear();
            }
            text.push(c);
        }
    }
    if !num.is_empty() {
        key.push((num.parse().unwrap_or(0), String::new()));
    }
    if !text.is_empty() {
        key.push((0, text));
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_sort_numerically() {
        let mut v = [
            PathBuf::from("/boot/vmlinuz-6.1.0-9-amd64"),
            PathBuf::from("/boot/vmlinuz-6.1.0-56-amd64"),
            PathBuf::from("/boot/vmlinuz-5.10.0-1-amd64"),
        ];
        v.sort_by_key(|p| std::cmp::Reverse(version_key(p)));
        assert_eq!(v[0], PathBuf::from("/boot/vmlinuz-6.1.0-56-amd64"));
    }
}
