//! The files vnetd may touch once it serves: its landlock ruleset.
//!
//! | where | what | why |
//! |---|---|---|
//! | `RUN`, `STATE` | everything | sockets, vnet directories, lease files |
//! | `/dev/net/tun` | read, write, ioctl | TAP ports and host adapters |
//! | `/proc/sys/net/ipv4/conf`, `/proc/sys/net/ipv6/conf` | write files | host adapters' `forwarding` |
//! | `/proc` | read | peers' names (`/proc/PID/comm`), sysctls (`wmem_max`, `ping_group_range`) |
//! | `/etc`, the directory of `/etc/resolv.conf`'s target, of the configuration | read | the NAT's DNS upstreams, the configuration |
//!
//! The ruleset handles the file-system rights of landlock ABI 5 (up to `IoctlDev`), no
//! more: ABI 9's `ResolveUnix` would refuse clients' datagram sockets, which live
//! anywhere. Where the kernel has no landlock, or an older ABI, vnetd runs with what
//! the kernel enforces and says so ([`Enforced`]).
//!
//! Landlock restricts the calling thread and the threads it starts later: it must be
//! applied before the first thread (the caller checks).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use landlock::{
    path_beneath_rules, Access, AccessFs, BitFlags, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, ABI,
};

/// The ABI whose file-system rights the ruleset handles (see the module doc).
const HANDLED: ABI = ABI::V5;

/// How much of the ruleset the kernel enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforced {
    Fully,
    Partially,
    /// This kernel has no landlock (or it is switched off).
    Not,
}

/// The directories the ruleset opens up, besides the fixed ones of the module doc.
#[derive(Debug, Clone)]
pub struct Paths {
    pub run_dir: PathBuf,
    pub state_dir: PathBuf,
    /// The configuration file, if vnetd read one.
    pub config: Option<PathBuf>,
}

/// Restricts this thread, and the threads it starts from now on, to `paths` and the
/// fixed paths of the module doc. Paths that do not exist are left out.
pub fn restrict(paths: &Paths) -> Result<Enforced> {
    let read: BitFlags<AccessFs> = AccessFs::ReadFile | AccessFs::ReadDir;
    let mut readable = vec![PathBuf::from("/etc"), PathBuf::from("/proc")];
    // A resolv.conf that is a link (systemd-resolved) is read where it points.
    let targets = [
        Some(PathBuf::from("/etc/resolv.conf")),
        paths.config.clone(),
    ];
    readable.extend(
        targets
            .into_iter()
            .flatten()
            .filter_map(|file| std::fs::canonicalize(file).ok())
            .filter_map(|file| file.parent().map(Path::to_path_buf)),
    );
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(HANDLED))?
        .create()?
        .add_rules(path_beneath_rules(
            [&paths.run_dir, &paths.state_dir],
            AccessFs::from_all(HANDLED),
        ))?
        .add_rules(path_beneath_rules(
            ["/dev/net/tun"],
            AccessFs::from_file(HANDLED),
        ))?
        .add_rules(path_beneath_rules(
            ["/proc/sys/net/ipv4/conf", "/proc/sys/net/ipv6/conf"],
            read | AccessFs::WriteFile | AccessFs::Truncate,
        ))?
        .add_rules(path_beneath_rules(readable, read))?
        .restrict_self()
        .context("cannot apply the landlock ruleset")?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => Enforced::Fully,
        RulesetStatus::PartiallyEnforced => Enforced::Partially,
        RulesetStatus::NotEnforced => Enforced::Not,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;

    /// In a thread of its own (landlock restricts the calling thread and its children
    /// only, so the test process stays free): RUN and STATE work, a directory beside
    /// them does not, the configuration and /proc are readable but not writable.
    #[test]
    fn only_the_listed_paths_are_open() {
        let base = tempfile::tempdir().unwrap();
        let dir = |name: &str| {
            let d = base.path().join(name);
            std::fs::create_dir(&d).unwrap();
            d
        };
        let (run_dir, state_dir, etc, outside) =
            (dir("run"), dir("state"), dir("etc"), dir("outside"));
        let config = etc.join("vnetd.toml");
        std::fs::write(&config, "").unwrap();
        let paths = Paths {
            run_dir: run_dir.clone(),
            state_dir: state_dir.clone(),
            config: Some(config.clone()),
        };
        std::thread::spawn(move || {
            let enforced = restrict(&paths).unwrap();
            if enforced == Enforced::Not {
                eprintln!("SKIPPED only_the_listed_paths_are_open: no landlock in this kernel");
                return;
            }
            std::fs::create_dir(run_dir.join("net")).unwrap();
            std::fs::write(run_dir.join("net/file"), "x").unwrap();
            std::fs::write(state_dir.join("leases.json"), "[]").unwrap();
            std::fs::read_to_string(&config).unwrap();
            std::fs::read_to_string("/proc/self/status").unwrap();
            for (what, result) in [
                ("write outside", std::fs::write(outside.join("file"), "x")),
                ("mkdir outside", std::fs::create_dir(outside.join("d"))),
                (
                    "write beside the config",
                    std::fs::write(etc.join("new"), "x"),
                ),
                (
                    "write /proc/self/comm",
                    std::fs::write("/proc/self/comm", "x"),
                ),
            ] {
                let e = result.expect_err(what);
                assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{what}: {e}");
            }
            let e = std::fs::read_dir(&outside).expect_err("list outside");
            assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
        })
        .join()
        .unwrap();
    }
}
