//! Making sure a directory vnetd puts sockets or state in is its own.
//!
//! Another local user must not be able to choose what is in `RUN` or `STATE`: had they
//! made the directory first (or a symbolic link in its place), they could plant sockets
//! that clients then trust, or links that make vnetd write over a file of their
//! choosing. So a directory is used only if it is
//!
//! - a real directory, not a symbolic link to one,
//! - owned by vnetd's effective uid,
//! - writable by no one else: no group or other write bit. (The access model gives the
//!   runtime directory to the user group with set-group-ID, mode 2755: the group may
//!   traverse and connect, not create. A sticky bit does not help: it stops removing,
//!   not planting.)
//!
//! [`check`] is that rule as a pure function of what `fstat` says; [`claim_dir`] creates
//! a missing directory and applies the rule to the directory it then opens without
//! following a link, so what is checked is what is there.

use std::fs::File;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What [`check`] looks at: from `fstat` of the directory opened without following a
/// link, or from `lstat` of what is in its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub kind: Kind,
    /// The owner's uid.
    pub uid: u32,
    /// The permission bits, with set-user-ID, set-group-ID and sticky (`st_mode & 0o7777`).
    pub mode: u32,
}

/// What is at a directory's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Directory,
    Symlink,
    /// A file, socket, device...
    Other,
}

/// Why a directory is not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsafe {
    #[error("is a symbolic link, not a directory")]
    Symlink,
    #[error("is not a directory")]
    NotADirectory,
    #[error("is owned by uid {owner}, not by vnetd's uid {uid}")]
    Owner { owner: u32, uid: u32 },
    #[error("is writable by {who} (mode {mode:04o}), so anyone there may have put files in it")]
    Writable { who: &'static str, mode: u32 },
}

/// Why [`claim_dir`] failed. Its message names the directory, says what is wrong and
/// what to do: `/run/vnet is owned by uid 1000, not by vnetd's uid 0: remove it or
/// choose another --run-dir`.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} {problem}: remove it or {remedy}", path.display())]
    Unsafe {
        path: PathBuf,
        problem: Unsafe,
        remedy: &'static str,
    },
}

impl From<ClaimError> for io::Error {
    fn from(e: ClaimError) -> io::Error {
        match e {
            ClaimError::Io { source, .. } => source,
            unsafe_dir => io::Error::new(io::ErrorKind::PermissionDenied, unsafe_dir),
        }
    }
}

/// Whether a directory with these facts may be used by a process of effective uid `uid`.
pub fn check(facts: Facts, uid: u32) -> Result<(), Unsafe> {
    match facts.kind {
        Kind::Directory => {}
        Kind::Symlink => return Err(Unsafe::Symlink),
        Kind::Other => return Err(Unsafe::NotADirectory),
    }
    if facts.uid != uid {
        return Err(Unsafe::Owner {
            owner: facts.uid,
            uid,
        });
    }
    let who = match (facts.mode & 0o020 != 0, facts.mode & 0o002 != 0) {
        (false, false) => return Ok(()),
        (true, false) => "its group",
        (false, true) => "everyone",
        (true, true) => "its group and everyone",
    };
    Err(Unsafe::Writable {
        who,
        mode: facts.mode & 0o7777,
    })
}

/// Creates directory `path` with mode `mode` if it is missing (and its parents, with the
/// same mode; a new one keeps the set-group-ID bit it inherits), then opens it without following a link and [`check`]s it as this
/// process's effective uid. Returns the open directory.
///
/// `remedy` completes the error's advice "remove it or ...", e.g. `"choose another
/// --run-dir"`.
pub fn claim_dir(path: &Path, mode: u32, remedy: &'static str) -> Result<File, ClaimError> {
    claim_dir_owned_by(path, mode, remedy, nix::unistd::geteuid().as_raw())
}

/// [`claim_dir`], expecting the directory to be owned by `owner` rather than by this
/// process's effective uid: for a vnetd started as root that checks, before it drops
/// to its service user, the directories it has given to that user.
pub fn claim_dir_owned_by(
    path: &Path,
    mode: u32,
    remedy: &'static str,
    owner: u32,
) -> Result<File, ClaimError> {
    let io_err = |source| ClaimError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(parent)
            .map_err(io_err)?;
    }
    let created = match std::fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(io_err(e)),
    };
    let unsafe_dir = |problem| ClaimError::Unsafe {
        path: path.to_path_buf(),
        problem,
        remedy,
    };
    let dir = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(dir) => dir,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
            // Only to say what is there instead: the refusal does not depend on it.
            let problem = match std::fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_symlink() => Unsafe::Symlink,
                _ => Unsafe::NotADirectory,
            };
            return Err(unsafe_dir(problem));
        }
        Err(e) => return Err(io_err(e)),
    };
    let meta = dir.metadata().map_err(io_err)?;
    let facts = Facts {
        kind: if meta.is_dir() {
            Kind::Directory
        } else {
            Kind::Other
        },
        uid: meta.uid(),
        mode: meta.mode() & 0o7777,
    };
    check(facts, owner).map_err(unsafe_dir)?;
    if created {
        // Exactly `mode`, whatever the umask took away; keeping the set-group-ID bit a
        // shared runtime directory passes down, so what is made inside gets its group.
        let mode = mode | (facts.mode & 0o2000);
        dir.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io_err)?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VNETD: u32 = 0;
    const OTHER: u32 = 1000;

    fn dir(uid: u32, mode: u32) -> Facts {
        Facts {
            kind: Kind::Directory,
            uid,
            mode,
        }
    }

    #[test]
    fn vnetd_s_own_directories_are_accepted() {
        // Private, readable, and the shared runtime directory (group, set-group-ID).
        for mode in [0o700, 0o755, 0o750, 0o2755, 0o2750] {
            assert_eq!(check(dir(VNETD, mode), VNETD), Ok(()), "{mode:o}");
        }
    }

    #[test]
    fn another_user_s_directory_is_refused_whatever_its_mode() {
        for mode in [0o700, 0o755] {
            assert_eq!(
                check(dir(OTHER, mode), VNETD),
                Err(Unsafe::Owner {
                    owner: OTHER,
                    uid: VNETD
                })
            );
        }
        // Also root's, for an unprivileged vnetd.
        assert!(check(dir(0, 0o755), OTHER).is_err());
    }

    #[test]
    fn a_directory_others_may_write_is_refused_even_if_sticky_or_setgid() {
        for (mode, who) in [
            (0o770, "its group"),
            (0o2770, "its group"),
            (0o757, "everyone"),
            (0o1777, "its group and everyone"),
        ] {
            assert_eq!(
                check(dir(VNETD, mode), VNETD),
                Err(Unsafe::Writable { who, mode }),
                "{mode:o}"
            );
        }
    }

    #[test]
    fn a_symlink_or_a_file_is_refused() {
        let link = Facts {
            kind: Kind::Symlink,
            ..dir(VNETD, 0o777)
        };
        assert_eq!(check(link, VNETD), Err(Unsafe::Symlink));
        let file = Facts {
            kind: Kind::Other,
            ..dir(VNETD, 0o600)
        };
        assert_eq!(check(file, VNETD), Err(Unsafe::NotADirectory));
    }

    #[test]
    fn the_error_says_what_is_wrong_and_what_to_do() {
        let e = ClaimError::Unsafe {
            path: "/run/vnet".into(),
            problem: Unsafe::Owner {
                owner: 1000,
                uid: 0,
            },
            remedy: "choose another --run-dir",
        };
        assert_eq!(
            e.to_string(),
            "/run/vnet is owned by uid 1000, not by vnetd's uid 0: \
             remove it or choose another --run-dir"
        );
    }

    #[test]
    fn a_missing_directory_is_made_with_exactly_its_mode() {
        let base = tempfile::tempdir().unwrap();
        let path = base.path().join("a/run");
        claim_dir(&path, 0o755, "x").unwrap();
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o755);
        // Again: it is there and ours.
        claim_dir(&path, 0o755, "x").unwrap();
    }

    #[test]
    fn a_new_directory_in_a_shared_one_keeps_the_set_group_id_bit() {
        let base = tempfile::tempdir().unwrap();
        std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o2755)).unwrap();
        let path = base.path().join("lab");
        claim_dir(&path, 0o755, "x").unwrap();
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o2755);
    }

    #[test]
    fn a_symlink_to_our_own_directory_is_refused() {
        let base = tempfile::tempdir().unwrap();
        let real = base.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = base.path().join("run");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = claim_dir(&link, 0o700, "choose another --run-dir").unwrap_err();
        assert!(
            matches!(
                e,
                ClaimError::Unsafe {
                    problem: Unsafe::Symlink,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn a_world_writable_directory_is_refused_and_left_alone() {
        let base = tempfile::tempdir().unwrap();
        let path = base.path().join("state");
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = claim_dir(&path, 0o700, "choose another --state-dir").unwrap_err();
        assert!(e.to_string().contains("writable by"), "{e}");
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o777);
    }
}
