//! Who vnetd runs as, and its capabilities: a vnetd started as root gives up root
//! after setup and holds its network capabilities only while a step needs them.
//!
//! # Theory of operation
//!
//! Only what vnetd does while it runs needs privileges, and only three: opening TAP
//! devices and host adapters, setting their addresses, links and transmit queues
//! (`CAP_NET_ADMIN`, also for forcing a stream socket's send buffer), the packet
//! sockets of uplinks and interface ports and the NAT's raw ICMP sockets (`CAP_NET_RAW`) and port forwards below 1024
//! (`CAP_NET_BIND_SERVICE`). So
//! vnetd started as root, once it has read its configuration and claimed its
//! directories, runs as a service user: `--user USER`, `[access] user`, else the user
//! [`DEFAULT_USER`] where it exists (`--user root` stays root). It gives `RUN` and
//! `STATE` (and what an earlier root vnetd left in them) to that user ([`give_tree`])
//! and becomes it ([`drop_to`]):
//!
//! 1. `PR_SET_KEEPCAPS`, so that changing uid keeps the permitted set;
//! 2. the bounding set reduced to the kept capabilities (while still root, as that
//!    needs `CAP_SETPCAP`);
//! 3. `setgroups` (only the user group, if there is one: see [`drop_to`]), `setresgid`,
//!    `setresuid` to the service user: real, effective and saved ids all change, so
//!    there is no way back;
//! 4. the kept capabilities permitted but none effective, inheritable and ambient
//!    empty: at rest no thread can use them, and each privileged step raises the one it
//!    needs in its own thread only for that step (`vnet_io::sys::privilege`);
//! 5. `PR_SET_NO_NEW_PRIVS`: no set-user-ID program or file capability gives any back.
//!
//! A vnetd started as an ordinary user that holds capabilities all the same (given by
//! its service manager) keeps them permitted, none effective, too ([`lower_effective`]).
//!
//! Which capabilities are kept is `[access] keep_capabilities` ([`KeepCapabilities`]):
//! all three (`live`, the default: any feature can be added over the API), or only
//! those the configured vnets need (`configured`); the others are gone for good and a
//! step that needs one fails naming the setting.
//!
//! Capabilities belong to each thread and `capset(2)` changes only the calling one, so
//! this must run while vnetd has one thread: before the data plane, the FUSE device
//! and the control-plane runtime start. [`drop_to`] checks `/proc/self/task` and refuses
//! otherwise. Threads started later inherit the calling thread's credentials. The
//! sandbox (`crate::sandbox`) comes next.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use caps::{CapSet, Capability, CapsHashSet};
use nix::unistd::{Gid, Uid, User};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::config::LimitsConfig;
use crate::state::SavedNet;
use vnet_model::PortSpec;

/// The service user a vnetd started as root runs as when told no other, if it exists
/// (the Debian package makes it).
pub const DEFAULT_USER: &str = "vnet";

/// `[access] keep_capabilities`: which capabilities a vnetd that drops to a service
/// user keeps permitted (none is effective at rest either way).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeepCapabilities {
    /// All that any feature needs: TAP ports, host adapters, uplinks and forwards below
    /// 1024 can be added live.
    #[default]
    Live,
    /// Only those the configured vnets need; the rest are dropped for good.
    Configured,
}

/// Who vnetd runs as after `--user`.
#[derive(Debug, Clone)]
pub struct ServiceUser {
    pub uid: u32,
    pub gid: u32,
    /// The name given, or the numeric uid.
    pub name: String,
}

impl ServiceUser {
    /// Who vnetd runs as, given `--user` or `[access] user` (`spec`): `root` or `0`
    /// means staying root; any other name or uid that user ([`ServiceUser::resolve`]).
    /// Without a `spec` a vnetd started as root runs as [`DEFAULT_USER`] if that user
    /// exists, else stays root and says how to change that; one started by anyone else
    /// runs as they do.
    pub fn choose(spec: Option<&str>) -> Result<Option<ServiceUser>> {
        match spec {
            Some("root" | "0") => Ok(None),
            Some(spec) => ServiceUser::resolve(spec).map(Some),
            None if !vnet_dirs::is_root() => Ok(None),
            None => match User::from_name(DEFAULT_USER) {
                Ok(Some(u)) if !u.uid.is_root() => Ok(Some(ServiceUser {
                    uid: u.uid.as_raw(),
                    gid: u.gid.as_raw(),
                    name: DEFAULT_USER.to_string(),
                })),
                Ok(_) => {
                    info!(
                        "staying root: there is no user {DEFAULT_USER} to run as (make it, \
                         e.g. `useradd --system --no-create-home --user-group \
                         {DEFAULT_USER}`, or say --user root to stay root)"
                    );
                    Ok(None)
                }
                Err(e) => {
                    bail!("cannot look up the user {DEFAULT_USER} (or say --user USER): {e}")
                }
            },
        }
    }

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

/// Lowers the effective set of a vnetd that holds capabilities without being root
/// (given by its service manager, e.g. systemd's `AmbientCapabilities=`): they stay
/// permitted and are raised around the steps that need them, as after [`drop_to`].
/// Must run while this process has a single thread.
pub fn lower_effective() -> Result<()> {
    let effective = caps::read(None, CapSet::Effective).map_err(step("reading capabilities"))?;
    if effective.is_empty() {
        return Ok(());
    }
    require_single_thread("lower capabilities")?;
    caps::clear(None, CapSet::Effective).map_err(step("clearing the effective set"))?;
    let mut names: Vec<String> = effective.iter().map(ToString::to_string).collect();
    names.sort();
    info!(
        "{} permitted, raised only around the steps that need them",
        names.join(", ")
    );
    Ok(())
}

/// What a failed step of [`drop_to`] says.
fn step<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> anyhow::Error {
    move |e| anyhow::anyhow!("cannot drop privileges: {what}: {e}")
}

/// Every capability a feature of vnetd may need (see the module doc).
fn all_needed() -> CapsHashSet {
    CapsHashSet::from([
        Capability::CAP_NET_ADMIN,
        Capability::CAP_NET_RAW,
        Capability::CAP_NET_BIND_SERVICE,
    ])
}

/// The capabilities the vnets vnetd starts with (configured and saved, `nets`) need:
/// `CAP_NET_ADMIN` for host adapters, TAP ports and `[limits] stream_sndbuf_force`,
/// `CAP_NET_RAW` for uplinks, interface ports and the NAT (guests' pings leave through
/// raw sockets where ping sockets are not allowed), `CAP_NET_BIND_SERVICE` for a
/// forward below 1024.
pub fn configured(limits: &LimitsConfig, nets: &[SavedNet]) -> CapsHashSet {
    let mut needed = CapsHashSet::new();
    if limits.stream_sndbuf_force == Some(true) {
        needed.insert(Capability::CAP_NET_ADMIN);
    }
    for net in nets {
        let (spec, ports) = (&net.spec, &net.ports);
        let tap = |p: &PortSpec| matches!(p, PortSpec::Tap { .. });
        let interface = |p: &PortSpec| matches!(p, PortSpec::Interface { .. });
        if spec.host_adapter.is_some() || ports.iter().any(tap) {
            needed.insert(Capability::CAP_NET_ADMIN);
        }
        if spec.uplink.is_some() || spec.nat.is_some() || ports.iter().any(interface) {
            needed.insert(Capability::CAP_NET_RAW);
        }
        if spec
            .nat
            .as_ref()
            .is_some_and(|nat| nat.forward.iter().any(|f| f.host.port() < 1024))
        {
            needed.insert(Capability::CAP_NET_BIND_SERVICE);
        }
    }
    needed
}

/// The capabilities to keep under `mode`, given those the configuration needs; the
/// others are recorded as given up (`vnet_io::sys::privilege::forgo`), so that a step
/// needing one later fails naming the setting.
pub fn kept(mode: KeepCapabilities, configured: CapsHashSet) -> CapsHashSet {
    let keep = match mode {
        KeepCapabilities::Live => all_needed(),
        KeepCapabilities::Configured => configured,
    };
    let forgone: CapsHashSet = all_needed().difference(&keep).copied().collect();
    if !forgone.is_empty() {
        vnet_io::sys::privilege::forgo(
            forgone,
            "[access] keep_capabilities = \"configured\" keeps only what the configured \
             vnets need; set it to \"live\" (the default) to add this over the API"
                .to_string(),
        );
    }
    keep
}

/// Refuses unless this process has a single thread: `what` (a change to credentials
/// or a sandbox) would bind only the calling thread.
pub fn require_single_thread(what: &str) -> Result<()> {
    let threads = std::fs::read_dir("/proc/self/task")
        .context("cannot count vnetd's threads in /proc/self/task")?
        .count();
    if threads != 1 {
        bail!(
            "cannot {what}: vnetd already has {threads} threads, and it would bind only \
             one of them (a bug: it must come before any thread starts)"
        );
    }
    Ok(())
}

/// Becomes `user` with exactly the capabilities `keep` permitted and none effective
/// (see the module doc for the steps). `groups` are the supplementary groups to keep: the user group, when vnetd
/// gave `RUN` to it, so that the set-group-ID bit survives on the directories vnetd
/// makes there (the kernel clears it on `chmod` by a non-member) and their sockets stay
/// the group's.
///
/// Must run while this process has a single thread; fails otherwise.
pub fn drop_to(user: &ServiceUser, groups: &[u32], keep: &CapsHashSet) -> Result<()> {
    require_single_thread("drop privileges")?;
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
    caps::clear(None, CapSet::Effective).map_err(step("clearing the effective set"))?;
    nix::sys::prctl::set_keepcaps(false).map_err(step("PR_SET_KEEPCAPS off"))?;
    nix::sys::prctl::set_no_new_privs().map_err(step("PR_SET_NO_NEW_PRIVS"))?;

    // Check what the kernel now says, not what was asked.
    let ids = nix::unistd::getresuid().map_err(step("getresuid"))?;
    let effective = caps::read(None, CapSet::Effective).map_err(step("reading capabilities"))?;
    let permitted = caps::read(None, CapSet::Permitted).map_err(step("reading capabilities"))?;
    if [ids.real, ids.effective, ids.saved] != [uid; 3]
        || !effective.is_empty()
        || &permitted != keep
    {
        bail!(
            "cannot drop privileges: the kernel reports uids {ids:?}, capabilities \
             {permitted:?} permitted, {effective:?} effective"
        );
    }
    let mut names: Vec<String> = keep.iter().map(ToString::to_string).collect();
    names.sort();
    info!(
        "running as {} (uid {}, gid {}) with {} permitted, raised only around the \
         steps that need them",
        user.name,
        user.uid,
        user.gid,
        if names.is_empty() {
            "no capabilities".to_string()
        } else {
            names.join(", ")
        }
    );
    Ok(())
}
