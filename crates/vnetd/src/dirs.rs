//! Claiming the runtime and state directories at start (where they are is
//! `vnet_dirs`'s rule, shared with the CLI and the client library).

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Creates both directories, or checks that the ones there are vnetd's own and writable
/// by no one else (see `vnet_dirs::claim`), and with `take_over` takes over
/// `RUN/control.sock`: fails if a live vnetd answers on it, removes it if it is a
/// leftover of a crash (without: the service manager bound it for vnetd). Returns its
/// path.
///
/// `RUN` is made mode 0755 (anyone may reach `control.sock`; each request's role decides
/// what it may do) and `STATE` mode 0700 (leases name clients).
///
/// With `owner` (`--user`, vnetd still root), each directory must end up owned by that
/// uid: one that is missing or root's (made by an earlier vnetd run as root) is first
/// claimed as root, then given with what root made in it to `owner`
/// ([`crate::privileges::give_tree`]); then it is checked as `owner`'s.
pub fn claim(
    run_dir: &Path,
    state_dir: &Path,
    owner: Option<u32>,
    take_over: bool,
) -> Result<PathBuf> {
    claim_dir(run_dir, 0o755, "choose another --run-dir", owner)?;
    claim_dir(state_dir, 0o700, "choose another --state-dir", owner)?;
    let control = run_dir.join("control.sock");
    if !take_over {
        return Ok(control);
    }
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

/// Listens on `path` with the file mode `mode`. The socket is bound under a
/// temporary name and renamed into place once it listens, so `control.sock` existing
/// means the daemon is ready: clients that wait for the file never meet a refusal.
pub fn listen(path: &Path, mode: u32) -> Result<tokio::net::UnixListener> {
    let tmp = path.with_extension("sock.new");
    let _ = std::fs::remove_file(&tmp);
    let listener = std::os::unix::net::UnixListener::bind(&tmp)
        .with_context(|| format!("cannot listen on {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set permissions of {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move the socket to {}", path.display()))?;
    listener.set_nonblocking(true)?;
    Ok(tokio::net::UnixListener::from_std(listener)?)
}

fn claim_dir(path: &Path, mode: u32, remedy: &'static str, owner: Option<u32>) -> Result<()> {
    let Some(owner) = owner else {
        vnet_dirs::claim::claim_dir(path, mode, remedy)?;
        return Ok(());
    };
    let root_s = match std::fs::symlink_metadata(path) {
        Ok(m) => m.is_dir() && std::os::unix::fs::MetadataExt::uid(&m) == 0,
        Err(e) => e.kind() == io::ErrorKind::NotFound,
    };
    if root_s {
        vnet_dirs::claim::claim_dir(path, mode, remedy)?;
        crate::privileges::give_tree(path, owner)?;
    }
    vnet_dirs::claim::claim_dir_owned_by(path, mode, remedy, owner)?;
    Ok(())
}
