//! Where vnetd's runtime directory (and so `control.sock`) is, when `--run-dir` and
//! `VNET_RUN_DIR` are not given: the same rule vnetd follows — `/run/vnet` for root,
//! `$XDG_RUNTIME_DIR/vnet` for everyone else, `/tmp/vnet-UID` without XDG_RUNTIME_DIR.

use std::path::PathBuf;

pub fn default_run_dir() -> PathBuf {
    // SAFETY: geteuid and getuid have no preconditions and cannot fail.
    let (euid, uid) = unsafe { (libc::geteuid(), libc::getuid()) };
    choose(
        euid,
        uid,
        std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
    )
}

fn choose(euid: u32, uid: u32, xdg_runtime_dir: Option<PathBuf>) -> PathBuf {
    if euid == 0 {
        return PathBuf::from("/run/vnet");
    }
    match xdg_runtime_dir {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join("vnet"),
        _ => PathBuf::from(format!("/tmp/vnet-{uid}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_uses_run_and_users_their_runtime_dir() {
        assert_eq!(choose(0, 0, None), PathBuf::from("/run/vnet"));
        assert_eq!(
            choose(0, 1000, Some("/run/user/1000".into())),
            PathBuf::from("/run/vnet")
        );
        assert_eq!(
            choose(1000, 1000, Some("/run/user/1000".into())),
            PathBuf::from("/run/user/1000/vnet")
        );
        assert_eq!(choose(1000, 1000, None), PathBuf::from("/tmp/vnet-1000"));
        assert_eq!(
            choose(1000, 1000, Some("".into())),
            PathBuf::from("/tmp/vnet-1000")
        );
    }
}
