//! Where vnetd's runtime directory (and so `control.sock`) is, when `--run-dir` and
//! `VNET_RUN_DIR` are not given: `/run/vnet` for root, `$XDG_RUNTIME_DIR/vnet` for
//! everyone else, the same rule vnetd follows.

use std::path::PathBuf;

use crate::failure::Failure;

pub fn default_run_dir() -> Result<PathBuf, Failure> {
    choose(
        effective_uid(),
        std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
    )
}

fn choose(uid: u32, xdg_runtime_dir: Option<PathBuf>) -> Result<PathBuf, Failure> {
    if uid == 0 {
        return Ok(PathBuf::from("/run/vnet"));
    }
    match xdg_runtime_dir {
        Some(dir) if dir.is_absolute() => Ok(dir.join("vnet")),
        _ => Err(Failure::new(
            "cannot find vnetd's runtime directory: XDG_RUNTIME_DIR is not set",
            "pass --run-dir DIR or set VNET_RUN_DIR to the directory vnetd uses",
        )),
    }
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions, touches no memory of ours and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_uses_run_and_users_their_runtime_dir() {
        assert_eq!(choose(0, None).unwrap(), PathBuf::from("/run/vnet"));
        assert_eq!(
            choose(1000, Some("/run/user/1000".into())).unwrap(),
            PathBuf::from("/run/user/1000/vnet")
        );
        let err = choose(1000, None).unwrap_err().to_string();
        assert!(err.contains("--run-dir"), "{err}");
        assert!(choose(1000, Some("relative".into())).is_err());
    }
}
