//! Named network namespaces and background processes running in them.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cmd;
use crate::unique_name;

/// A named network namespace (`ip netns add`), deleted on drop.
///
/// Guarantees: the namespace exists and its loopback is up when [`Netns::new`]
/// returns; on drop every process still in it is killed (SIGKILL) and the
/// name is deleted, so a failed test leaves nothing behind. Interfaces that
/// were moved into it are destroyed with it if they are virtual (veth, TAP),
/// unless something (like [`crate::NsVm`]) moved them out first.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace with a fresh [`unique_name`] built from `prefix`.
    ///
    /// # Panics
    /// If `ip netns add` fails (e.g. not root).
    pub fn new(prefix: &str) -> Netns {
        Netns::named(&unique_name(prefix))
    }

    /// Creates a namespace with exactly this name. A leftover namespace of the
    /// same name (from a crashed earlier run) is deleted first.
    ///
    /// # Panics
    /// If `ip netns add` fails (e.g. not root).
    pub fn named(name: &str) -> Netns {
        if Path::new("/run/netns").join(name).exists() {
            cmd::quiet(&["ip", "netns", "del", name]);
        }
        cmd::run(&["ip", "netns", "add", name])
            .unwrap_or_else(|e| panic!("test bed: cannot create namespace {name}: {e}"));
        let ns = Netns {
            name: name.to_string(),
        };
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name, as `ip netns` and `ip -n` know it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The command line prefix that runs a program inside this namespace.
    fn prefix(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.name]
    }

    /// Builds a [`Command`] that runs `argv` inside the namespace, for callers
    /// that need to set up stdio or environment themselves.
    ///
    /// # Panics
    /// If `argv` is empty.
    pub fn command(&self, argv: &[&str]) -> Command {
        assert!(!argv.is_empty(), "empty command line");
        let mut c = Command::new("ip");
        c.args(&self.prefix()[1..]).args(argv);
        c
    }

    /// Runs `argv` inside the namespace to completion and returns its output
    /// (stdout, stderr, status). Stdin is `/dev/null`.
    ///
    /// # Panics
    /// If the program cannot be started at all.
    pub fn exec(&self, argv: &[&str]) -> Output {
        let mut full = self.prefix().to_vec();
        full.extend_from_slice(argv);
        cmd::output(&full).unwrap_or_else(|e| panic!("test bed: {e}"))
    }

    /// Like [`Netns::exec`], but panics with the command's stderr unless it
    /// exits with status 0; returns its stdout.
    pub fn exec_ok(&self, argv: &[&str]) -> String {
        let out = self.exec(argv);
        if let Err(e) = cmd::check(argv, &out) {
            panic!("test bed: in namespace {}: {e}", self.name);
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `argv` in the background inside the namespace. Its stdout and
    /// stderr go to a log file ([`ChildGuard::log`]); it is killed when the
    /// guard drops (and in any case when the namespace drops).
    ///
    /// # Panics
    /// If the program cannot be started.
    pub fn spawn(&self, argv: &[&str]) -> ChildGuard {
        ChildGuard::spawn(self.command(argv), &argv.join(" "))
            .unwrap_or_else(|e| panic!("test bed: in namespace {}: {e}", self.name))
    }

    /// A counter of the namespace's network stack from `/proc/net/netstat` or
    /// `/proc/net/snmp`, named `GROUP:NAME` as `nstat` names them without the
    /// colon (`TcpExt:TCPSynRetrans`, `Tcp:RetransSegs`, `Udp:InErrors`).
    ///
    /// # Panics
    /// If the namespace's stack has no such counter.
    pub fn counter(&self, name: &str) -> u64 {
        let (group, field) = name
            .split_once(':')
            .unwrap_or_else(|| panic!("test bed: counter {name} is not GROUP:NAME"));
        let tables = self.exec_ok(&["cat", "/proc/net/netstat", "/proc/net/snmp"]);
        // Each group is two lines: `Group: names...` then `Group: values...`.
        let rows: Vec<&str> = tables
            .lines()
            .filter_map(|l| l.strip_prefix(group)?.strip_prefix(": "))
            .collect();
        rows.chunks(2)
            .find_map(|pair| {
                let (names, values) = (pair.first()?, pair.get(1)?);
                let at = names.split(' ').position(|n| n == field)?;
                values.split(' ').nth(at)?.parse().ok()
            })
            .unwrap_or_else(|| panic!("test bed: no counter {name} in namespace {}", self.name))
    }

    /// The pids of all processes whose network namespace is this one.
    pub fn pids(&self) -> Vec<i32> {
        cmd::output(&["ip", "netns", "pids", &self.name])
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for _ in 0..3 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            crate::wait_for(Duration::from_secs(2), || self.pids().is_empty());
        }
        cmd::quiet(&["ip", "netns", "del", &self.name]);
    }
}

/// A background process, killed (SIGKILL) and reaped when dropped.
///
/// Its stdout and stderr are appended to a log file that lives as long as the
/// guard, so a test can look at what a server said ([`ChildGuard::log`]).
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    watchdog: Option<cmd::Watchdog>,
    what: String,
    log: tempfile::NamedTempFile,
}

impl ChildGuard {
    /// Spawns `command` with stdin from `/dev/null` and stdout/stderr into a
    /// fresh log file. `what` names it in messages.
    pub fn spawn(mut command: Command, what: &str) -> crate::Result<ChildGuard> {
        let log = tempfile::Builder::new()
            .prefix("vnet-child-")
            .suffix(".log")
            .tempfile()?;
        let out = File::options().append(true).open(log.path())?;
        let err = out.try_clone()?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| crate::Error::Failed(format!("cannot start `{what}`: {e}")))?;
        Ok(ChildGuard {
            watchdog: Some(cmd::Watchdog::arm(child.id(), "KILL")),
            child,
            what: what.to_string(),
            log,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.log.path()).unwrap_or_default()).into_owned()
    }

    /// The path of the log file (valid while the guard lives).
    pub fn log_path(&self) -> PathBuf {
        self.log.path().to_path_buf()
    }

    /// The exit status if the process has ended, without waiting.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `timeout` for the process to end by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let mut status = None;
        crate::wait_for(deadline.saturating_duration_since(Instant::now()), || {
            status = self.try_wait();
            status.is_some()
        });
        status
    }

    /// Sends SIGTERM, waits up to `grace` for the process to end, then
    /// SIGKILLs it. Returns the exit status.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        drop(self.watchdog.take());
        if let Some(status) = self.try_wait() {
            return Some(status);
        }
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        if let Some(status) = self.wait_timeout(grace) {
            return Some(status);
        }
        eprintln!("test bed: `{}` ignored SIGTERM, killing it", self.what);
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        drop(self.watchdog.take());
        if self.try_wait().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "test bed: output of `{}`:\n{}",
                self.what,
                cmd::tail(&self.log(), 40)
            );
        }
    }
}
