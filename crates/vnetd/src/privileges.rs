//! `--user`: a vnetd started as root gives up root after setup.
//!
//! # Theory of operation
//!
//! Only what vnetd does while it runs needs privileges, and only two of them: opening
//! TAP devices and host adapters, setting their addresses and links (`CAP_NET_ADMIN`),
//! and uplinks' packet sockets (`CAP_NET_RAW`). So with `--user USER` vnetd, once it
//! has read its configuration and claimed its directories, gives `RUN` and `STATE` (and
//! what an earlier root vnetd left in them) to `USER` ([`give_tree`]) and becomes that
//! user with those two capabilities and nothing else ([`drop_to`]):
//!
//! 1. `PR_SET_KEEPCAPS`, so that changing uid keeps the permitted set;
//! 2. the bounding set reduced to the kept capabilities (while still root, as that
//!    needs `CAP_SETPCAP`);
//! 3. `setgroups` (only the user group, if there is one: see [`drop_to`]), `setresgid`,
//!    `setresuid` to the service user: real, effective and saved ids all change, so
//!    there is no way back;
//! 4. permitted and effective set to exactly the kept capabilities, inheritable and
//!    ambient empty;
//! 5. `PR_SET_NO_NEW_PRIVS`: no set-user-ID program or file capability gives any back.
//!
//! Capabilities belong to each thread and `capset(2)` changes only the calling one, so
//! this must run while vnetd has one thread: before the data plane, the FUSE device
//! and the control-plane runtime start. [`drop_to`] checks `/proc/self/task` and refuses
//! otherwise. Threads started later inherit the calling thread's credentials.
//!
//! Not done yet: keeping the capabilities only while a configured feature needs them
//! (a TAP port or an uplink may be added live at any time, so they are kept even when
//! the configuration has none), seccomp and landlock.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use caps::{CapSet, Capability, CapsHashSet};
use nix::unistd::{Gid, Uid, User};
use tracing::{info, warn};

/// Who vnetd runs as after `--user`.
#[derive(Debug, Clone)]
pub struct ServiceUser {
    pub uid: u32,
    pub gid: u32,
    /// The name given, or the numeric uid.
    pub name: String,
}

impl ServiceUser {
    /// `spec` is a user name or a numeric uid. A name must exist; its primary group is
    /// the service group. A numeric uid without a passwd entry gets the gid of the same
    /// number (as a user made with its own group would have), never root's group.
    pub fn resolve(spec: &str) -> Result<ServiceUser> {
        let by_name =
            || User::from_name(spec).with_context(|| format!("cannot look up the user {spec:?}"));
        let user = match spec.parse::<u32>() {
            Ok(uid) => {
                let entry = User::from_uid(Uid::from_raw(uid))
                    .with_context(|| format!("cannot look up uid {uid}"))?;
                ServiceUser {
                    uid,
                    gid: entry.map_or(uid, |u| u.gid.as_raw()),
                    name: spec.to_string(),
                }
            }
            Err(_) => match by_name()? {
                Some(u) => ServiceUser {
                    uid: u.uid.as_raw(),
                    gid: u.gid.as_raw(),
                    name: spec.to_string(),
                },
                None => bail!("--user {spec}: no such user (give a user name or a numeric uid)"),
            },
        };
        if user.uid == 0 {
            bail!("--user {spec} is root: give the unprivileged user vnetd should run as");
        }
        Ok(user)
    }
}

/// Refuses `--user` unless vnetd runs as root: only root can become another user.
pub fn require_root(user: &ServiceUser) -> Result<()> {
    let euid = nix::unistd::geteuid().as_raw();
    if euid != 0 {
        bail!(
            "--user {} needs vnetd to be started as root (it runs as uid {euid}); \
             started as an ordinary user, vnetd simply runs as that user: leave out --user \
             (and [access] user)",
            user.name
        );
    }
    Ok(())
}

/// Gives directory `top` and everything in it that root owns to `uid` (groups stay as
/// they are: the access model may have given `RUN` to the user group), children before
/// their directory, so that while it works every directory it descends into is still
/// root's and nobody else can change what is in it. Symbolic links are changed, not
/// followed; other file systems (the FUSE device `RUN/dev`) are not entered. What
/// someone else owns is left alone.
pub fn give_tree(top: &Path, uid: u32) -> Result<()> {
    let meta = std::fs::symlink_metadata(top)
        .with_context(|| format!("cannot give {} to uid {uid}", top.display()))?;
    if !meta.is_dir() || meta.uid() != 0 {
        return Ok(());
    }
    give_children(top, meta.dev(), uid)?;
    std::os::unix::fs::lchown(top, Some(uid), None)
        .with_context(|| format!("cannot give {} to uid {uid}", top.display()))
}

fn give_children(dir: &Path, dev: u64, uid: u32) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot read {}", dir.display()))?
            .path();
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            // A dead FUSE mount left by a crash: the data plane detaches it later, or
            // says why not.
            Err(e) => {
                warn!("left {} as it is: {e}", path.display());
                continue;
            }
        };
        if meta.uid() != 0 {
            continue;
        }
        if meta.is_dir() {
            if meta.dev() != dev {
                continue;
            }
            give_children(&path, dev, uid)?;
        }
        std::os::unix::fs::lchown(&path, Some(uid), None)
            .with_context(|| format!("cannot give {} to uid {uid}", path.display()))?;
    }
    Ok(())
}

/// What a failed step of [`drop_to`] says.
fn step<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> anyhow::Error {
    move |e| anyhow::anyhow!("cannot drop privileges: {what}: {e}")
}

/// The capabilities vnetd keeps: `CAP_NET_ADMIN` (TAP devices, host adapters: their
/// addresses, links and MTUs), `CAP_NET_RAW` (uplinks' packet sockets), and
/// `CAP_NET_BIND_SERVICE` only if `bind_low_ports` (a configured port forward listens
/// on a port below 1024).
pub fn kept(bind_low_ports: bool) -> CapsHashSet {
    let mut keep = CapsHashSet::from([Capability::CAP_NET_ADMIN, Capability::CAP_NET_RAW]);
    if bind_low_ports {
        keep.insert(Capability::CAP_NET_BIND_SERVICE);
    }
    keep
}

/// Becomes `user` with exactly the capabilities `keep` (see the module doc for the
/// steps). `groups` are the supplementary groups to keep: the user group, when vnetd
/// gave `RUN` to it, so that the set-group-ID bit survives on the directories vnetd
/// makes there (the kernel clears it on `chmod` by a non-member) and their sockets stay
/// the group's.
///
/// Must run while this process has a single thread; fails otherwise.
pub fn drop_to(user: &ServiceUser, groups: &[u32], keep: &CapsHashSet) -> Result<()> {
    let threads = std::fs::read_dir("/proc/self/task")
        .context("cannot count vnetd's threads in /proc/self/task")?
        .count();
    if threads != 1 {
        bail!(
            "cannot drop privileges: vnetd already has {threads} threads, and capabilities \
             would change only in one of them (a bug: the drop must come before any thread \
             starts)"
        );
    }
    // While still root (CAP_SETPCAP): no capability outside `keep` can come back.
    for cap in caps::all() {
        if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, cap).map_err(step("reducing the bounding set"))?;
        }
    }
    nix::sys::prctl::set_keepcaps(true).map_err(step("PR_SET_KEEPCAPS"))?;
    let gids: Vec<Gid> = groups.iter().copied().map(Gid::from_raw).collect();
    nix::unistd::setgroups(&gids).map_err(step("setgroups"))?;
    let gid = Gid::from_raw(user.gid);
    nix::unistd::setresgid(gid, gid, gid).map_err(step("setresgid"))?;
    let uid = Uid::from_raw(user.uid);
    nix::unistd::setresuid(uid, uid, uid).map_err(step("setresuid"))?;
    caps::clear(None, CapSet::Inheritable).map_err(step("clearing the inheritable set"))?;
    caps::clear(None, CapSet::Ambient).map_err(step("clearing the ambient set"))?;
    caps::set(None, CapSet::Permitted, keep).map_err(step("setting the permitted set"))?;
    caps::set(None, CapSet::Effective, keep).map_err(step("setting the effective set"))?;
    nix::sys::prctl::set_keepcaps(false).map_err(step("PR_SET_KEEPCAPS off"))?;
    nix::sys::prctl::set_no_new_privs().map_err(step("PR_SET_NO_NEW_PRIVS"))?;

    // Check what the kernel now says, not what was asked.
    let ids = nix::unistd::getresuid().map_err(step("getresuid"))?;
    let effective = caps::read(None, CapSet::Effective).map_err(step("reading capabilities"))?;
    if [ids.real, ids.effective, ids.saved] != [uid; 3] || &effective != keep {
        bail!(
            "cannot drop privileges: the kernel reports uids {ids:?}, capabilities {effective:?}"
        );
    }
    let mut names: Vec<String> = keep.iter().map(ToString::to_string).collect();
    names.sort();
    info!(
        "running as {} (uid {}, gid {}) with {} only",
        user.name,
        user.uid,
        user.gid,
        names.join(", ")
    );
    Ok(())
}
