//! Where vnetd keeps its sockets (the runtime directory, `RUN`) and its state (leases):
//! one rule for the daemon, the CLI and the client library, so they always meet.
//!
//! | who                     | runtime directory            | state directory             |
//! |-------------------------|------------------------------|-----------------------------|
//! | given explicitly        | that directory               | that directory              |
//! | root (effective uid 0)  | `/run/vnet`                  | `/var/lib/vnet`             |
//! | anyone else             | `$XDG_RUNTIME_DIR/vnet`      | `$XDG_STATE_HOME/vnet`      |
//! | ... without that variable | `/run/user/UID/vnet`, if `/run/user/UID` is a directory | `$HOME/.local/state/vnet` |
//! | ... without that either | an error ([`DirError`])      | an error                    |
//!
//! "Given" is `vnetd --run-dir`/`--state-dir`, `vnet --run-dir` (or `VNET_RUN_DIR`) and,
//! for `vnet_client`, `VNET_RUN_DIR`. Variables that are empty or hold a relative path
//! count as unset, as the XDG base directory specification asks.
//!
//! There is deliberately no fallback in a world-writable directory such as `/tmp`:
//! another user could create `/tmp/vnet-UID` first and own the directory our sockets go
//! into. The error says to set the variable or to name the directory instead.
//! (`/run/user/UID` is what systemd-logind makes for a logged-in user, mode 0700.)
//!
//! The rule is a pure function of an [`Env`] (tested below without touching the
//! process environment); [`run_dir`] and [`state_dir`] apply it to the process.
//!
//! Whether a directory found there may be used (it must be vnetd's, and writable by no
//! one else) is [`claim`]'s rule.

#![forbid(unsafe_code)]

pub mod claim;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Whether this process runs as root (effective uid 0): it then serves the system-wide
/// directories and may open TAPs and AF_PACKET sockets.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Why no directory could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirError {
    #[error(
        "no runtime directory: XDG_RUNTIME_DIR is not set (to an absolute path) and \
         /run/user/{uid} does not exist; set XDG_RUNTIME_DIR, or name the directory \
         (vnetd --run-dir DIR, vnet --run-dir DIR, or VNET_RUN_DIR)"
    )]
    NoRuntimeDir { uid: u32 },
    #[error(
        "no state directory: neither XDG_STATE_HOME nor HOME is set (to an absolute \
         path); set one, or pass vnetd --state-dir DIR"
    )]
    NoStateDir,
}

/// What the rule looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    /// Effective uid 0.
    pub root: bool,
    /// The effective uid.
    pub uid: u32,
    pub xdg_runtime_dir: Option<OsString>,
    pub xdg_state_home: Option<OsString>,
    pub home: Option<OsString>,
    /// Whether `/run/user/UID` is a directory.
    pub user_runtime_dir_exists: bool,
}

impl Env {
    /// This process's uid, environment and `/run/user/UID`.
    pub fn current() -> Env {
        let uid = nix::unistd::geteuid();
        Env {
            root: uid.is_root(),
            uid: uid.as_raw(),
            xdg_runtime_dir: std::env::var_os("XDG_RUNTIME_DIR"),
            xdg_state_home: std::env::var_os("XDG_STATE_HOME"),
            home: std::env::var_os("HOME"),
            user_runtime_dir_exists: user_runtime_dir(uid.as_raw()).is_dir(),
        }
    }

    /// The runtime directory: `given`, else the rule of the module docs.
    pub fn run_dir(&self, given: Option<PathBuf>) -> Result<PathBuf, DirError> {
        if let Some(dir) = given {
            return Ok(dir);
        }
        if self.root {
            return Ok(PathBuf::from("/run/vnet"));
        }
        if let Some(dir) = absolute(&self.xdg_runtime_dir) {
            return Ok(dir.join("vnet"));
        }
        if self.user_runtime_dir_exists {
            return Ok(user_runtime_dir(self.uid).join("vnet"));
        }
        Err(DirError::NoRuntimeDir { uid: self.uid })
    }

    /// The state directory: `given`, else the rule of the module docs.
    pub fn state_dir(&self, given: Option<PathBuf>) -> Result<PathBuf, DirError> {
        if let Some(dir) = given {
            return Ok(dir);
        }
        if self.root {
            return Ok(PathBuf::from("/var/lib/vnet"));
        }
        if let Some(dir) = absolute(&self.xdg_state_home) {
            return Ok(dir.join("vnet"));
        }
        if let Some(home) = absolute(&self.home) {
            return Ok(home.join(".local/state/vnet"));
        }
        Err(DirError::NoStateDir)
    }
}

/// This process's runtime directory: `given`, else the rule of the module docs.
pub fn run_dir(given: Option<PathBuf>) -> Result<PathBuf, DirError> {
    Env::current().run_dir(given)
}

/// This process's state directory: `given`, else the rule of the module docs.
pub fn state_dir(given: Option<PathBuf>) -> Result<PathBuf, DirError> {
    Env::current().state_dir(given)
}

fn user_runtime_dir(uid: u32) -> PathBuf {
    PathBuf::from(format!("/run/user/{uid}"))
}

/// The variable's value as a path, if it is set to an absolute one.
fn absolute(var: &Option<OsString>) -> Option<&Path> {
    var.as_deref().map(Path::new).filter(|p| p.is_absolute())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(uid: u32) -> Env {
        Env {
            uid,
            ..Env::default()
        }
    }

    fn root() -> Env {
        Env {
            root: true,
            xdg_runtime_dir: Some("/run/user/0".into()),
            xdg_state_home: Some("/root/.state".into()),
            home: Some("/root".into()),
            ..Env::default()
        }
    }

    #[test]
    fn a_given_directory_wins() {
        for env in [root(), user(1000)] {
            assert_eq!(env.run_dir(Some("/tmp/r".into())), Ok("/tmp/r".into()));
            assert_eq!(env.state_dir(Some("/tmp/s".into())), Ok("/tmp/s".into()));
        }
    }

    #[test]
    fn root_uses_the_system_directories_whatever_its_environment() {
        assert_eq!(root().run_dir(None), Ok("/run/vnet".into()));
        assert_eq!(root().state_dir(None), Ok("/var/lib/vnet".into()));
    }

    #[test]
    fn a_user_gets_the_xdg_directories() {
        let env = Env {
            xdg_runtime_dir: Some("/run/user/1000".into()),
            xdg_state_home: Some("/home/u/.st".into()),
            home: Some("/home/u".into()),
            ..user(1000)
        };
        assert_eq!(env.run_dir(None), Ok("/run/user/1000/vnet".into()));
        assert_eq!(env.state_dir(None), Ok("/home/u/.st/vnet".into()));
    }

    #[test]
    fn without_xdg_runtime_dir_a_user_gets_run_user_uid_if_it_exists() {
        let env = Env {
            user_runtime_dir_exists: true,
            ..user(1000)
        };
        assert_eq!(env.run_dir(None), Ok("/run/user/1000/vnet".into()));
    }

    #[test]
    fn without_any_runtime_directory_the_error_says_what_to_do() {
        let err = user(1000).run_dir(None).unwrap_err();
        assert_eq!(err, DirError::NoRuntimeDir { uid: 1000 });
        let said = err.to_string();
        assert!(
            said.contains("XDG_RUNTIME_DIR") && said.contains("--run-dir"),
            "{said}"
        );
        assert!(said.contains("/run/user/1000"), "{said}");
    }

    #[test]
    fn empty_or_relative_variables_count_as_unset() {
        for bad in ["", "relative/dir"] {
            let env = Env {
                xdg_runtime_dir: Some(bad.into()),
                xdg_state_home: Some(bad.into()),
                home: Some(bad.into()),
                ..user(1000)
            };
            assert_eq!(env.run_dir(None), Err(DirError::NoRuntimeDir { uid: 1000 }));
            assert_eq!(env.state_dir(None), Err(DirError::NoStateDir));
        }
    }

    #[test]
    fn a_user_without_xdg_state_home_gets_one_under_home() {
        let env = Env {
            home: Some("/home/u".into()),
            ..user(1000)
        };
        assert_eq!(env.state_dir(None), Ok("/home/u/.local/state/vnet".into()));
    }
}
