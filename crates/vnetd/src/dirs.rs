//! The runtime and state directories, and claiming them at start.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `/run/vnet` as root, `$XDG_RUNTIME_DIR/vnet` otherwise (else `/tmp/vnet-UID`).
pub fn default_run_dir() -> PathBuf {
    if is_root() {
        return PathBuf::from("/run/vnet");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("vnet"),
        // SAFETY: getuid has no preconditions and cannot fail.
        _ => PathBuf::from(format!("/tmp/vnet-{}", unsafe { libc::getuid() })),
    }
}

/// `/var/lib/vnet` as root, `$XDG_STATE_HOME/vnet` (or `~/.local/state/vnet`) otherwise.
pub fn default_state_dir() -> PathBuf {
    if is_root() {
        return PathBuf::from("/var/lib/vnet");
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("vnet");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".local/state/vnet")
}

/// Creates both directories and takes over `RUN/control.sock`: fails if a live vnetd
/// answers on it, removes it if it is a leftover of a crash. Returns its path.
pub fn claim(run_dir: &Path, state_dir: &Path) -> Result<PathBuf> {
    for (dir, mode) in [(run_dir, 0o755), (state_dir, 0o700)] {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let control = run_dir.join("control.sock");
    match UnixStream::connect(&control) {
        Ok(_) => bail!(
            "another vnetd is already serving {} (stop it, or pass a different --run-dir)",
            run_dir.display()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(_) => {
            std::fs::remove_file(&control)
                .with_context(|| format!("cannot remove the stale {}", control.display()))?;
            tracing::info!(
                "removed stale {} left by an earlier vnetd",
                control.display()
            );
        }
    }
    Ok(control)
}

/// Listens on `path` (mode 0660: owner and group). The socket is bound under a
/// temporary name and renamed into place once it listens, so `control.sock` existing
/// means the daemon is ready: clients that wait for the file never meet a refusal.
pub fn listen(path: &Path) -> Result<tokio::net::UnixListener> {
    let tmp = path.with_extension("sock.new");
    let _ = std::fs::remove_file(&tmp);
    let listener = std::os::unix::net::UnixListener::bind(&tmp)
        .with_context(|| format!("cannot listen on {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("cannot set permissions of {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move the socket to {}", path.display()))?;
    listener.set_nonblocking(true)?;
    Ok(tokio::net::UnixListener::from_std(listener)?)
}
