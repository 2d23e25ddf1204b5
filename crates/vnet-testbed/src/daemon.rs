//! A `vnetd` process for end-to-end tests, and the `vnet` CLI pointed at it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cmd;
use crate::{Error, Result};

/// How long [`Daemon::start`] waits for `control.sock` by default.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`Daemon::stop`] waits after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// The path of one of the workspace's binaries (`vnetd`, `vnet`, ...).
///
/// `$VNET_BIN_DIR/NAME` if that variable is set; otherwise NAME next to the
/// running test executable, whose directory is `target/<profile>/deps/` for
/// integration tests (so `target/<profile>/NAME`) — build the binaries first
/// (`cargo build --bins`, or have them as `[[bin]]`s of the package under
/// test). The path is returned even if the file does not exist; starting it
/// then fails with a message that names it.
pub fn bin_path(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("VNET_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let exe = std::env::current_exe().expect("test bed: cannot find the current executable");
    let mut dir = exe
        .parent()
        .expect("test bed: executable has no directory")
        .to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir.join(name)
}

/// Options for starting a [`Daemon`] beyond [`Daemon::start`]'s.
#[derive(Debug, Clone)]
pub struct DaemonBuilder {
    config: Option<String>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    start_timeout: Duration,
    binary: PathBuf,
    user: OsString,
    /// The network namespace to run in (`ip netns exec`), if not the test's.
    netns: Option<String>,
    /// Run as this uid from the start, without any capability (`setpriv`).
    uid: Option<u32>,
}

impl Default for DaemonBuilder {
    fn default() -> Self {
        DaemonBuilder::new()
    }
}

impl DaemonBuilder {
    /// No config file (the daemon's built-in default), [`bin_path`]`("vnetd")`,
    /// [`DEFAULT_START_TIMEOUT`], `--user root`.
    pub fn new() -> DaemonBuilder {
        DaemonBuilder {
            config: None,
            args: Vec::new(),
            env: Vec::new(),
            start_timeout: DEFAULT_START_TIMEOUT,
            binary: bin_path("vnetd"),
            user: "root".into(),
            netns: None,
            uid: None,
        }
    }

    /// Runs the daemon as ordinary user `uid` (and gid `uid`) from the start, with no
    /// capability at all (`setpriv`), as a user would run it: no `--user`; the
    /// runtime and state directories are the user's.
    pub fn unprivileged(mut self, uid: u32) -> Self {
        self.uid = Some(uid);
        self
    }

    /// Runs the daemon inside network namespace `ns` (`ip netns exec`, which execs it:
    /// the pid is vnetd's), as a daemon on another host would; its control socket is
    /// reached as any other's, through the file system.
    pub fn netns(mut self, ns: &crate::Netns) -> Self {
        self.netns = Some(ns.name().to_string());
        self
    }

    /// Passes `--user USER` [default: `root`: a vnetd started as root stays root, so
    /// that a test does the same whether or not this host has the user `vnet` that
    /// vnetd would run as by default].
    pub fn user(mut self, user: impl Into<OsString>) -> Self {
        self.user = user.into();
        self
    }

    /// Writes `toml` to a config file and passes `--config FILE`.
    pub fn config(mut self, toml: &str) -> Self {
        self.config = Some(toml.to_string());
        self
    }

    /// Appends an argument to the daemon's command line.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Sets an environment variable for the daemon (e.g. `RUST_LOG`).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// How long to wait for `control.sock`.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Uses this `vnetd` binary instead of [`bin_path`]`("vnetd")`.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = path.into();
        self
    }

    /// Starts the daemon and waits until `RUN/control.sock` exists.
    ///
    /// Fails (with the daemon's log) if it cannot be started, exits early,
    /// or does not create the socket in time.
    pub fn try_start(self) -> Result<Daemon> {
        let base = tempfile::Builder::new().prefix("vnetd-").tempdir()?;
        let run_dir = base.path().join("run");
        let state_dir = base.path().join("state");
        // Never group- or world-writable, whatever the umask: vnetd refuses such a one.
        for dir in [&run_dir, &state_dir] {
            std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o755)
                .create(dir)?;
        }
        let log_path = base.path().join("vnetd.log");
        let mut argv: Vec<OsString> = Vec::new();
        if let Some(ns) = &self.netns {
            argv.extend(["ip", "netns", "exec", ns].map(OsString::from));
        }
        if let Some(uid) = self.uid {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755))?;
            for dir in [&run_dir, &state_dir] {
                std::os::unix::fs::chown(dir, Some(uid), Some(uid))?;
            }
            argv.push("setpriv".into());
            argv.extend(
                [
                    format!("--reuid={uid}"),
                    format!("--regid={uid}"),
                    "--clear-groups".into(),
                    "--inh-caps=-all".into(),
                ]
                .map(OsString::from),
            );
        }
        argv.push(self.binary.clone().into());
        let mut command = Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .arg("--run-dir")
            .arg(&run_dir)
            .arg("--state-dir")
            .arg(&state_dir);
        if self.uid.is_none() {
            command.arg("--user").arg(&self.user);
        }
        let mut config_path = None;
        if let Some(config) = &self.config {
            let path = base.path().join("vnetd.toml");
            std::fs::write(&path, config)?;
            command.arg("--config").arg(&path);
            config_path = Some(path);
        }
        command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        let mut daemon = Daemon {
            watchdog: None,
            child: Mutex::new(None),
            command,
            binary: self.binary,
            start_timeout: self.start_timeout,
            config_path,
            run_dir,
            state_dir,
            log_path,
            base: Some(base),
        };
        daemon.launch()?;
        Ok(daemon)
    }

    /// Like [`DaemonBuilder::try_start`], panicking on failure.
    pub fn start(self) -> Daemon {
        self.try_start().unwrap_or_else(|e| panic!("test bed: {e}"))
    }
}

/// A running `vnetd` with private runtime and state directories.
///
/// Guarantees: when [`Daemon::start`] returns, `run_dir()/control.sock`
/// exists. On drop the daemon gets SIGTERM, then SIGKILL after
/// [`STOP_GRACE`], and its directories are removed; if the dropping thread is
/// panicking, the tail of its log is printed and the directories are kept
/// (the path is printed).
#[derive(Debug)]
pub struct Daemon {
    /// `None` once stopped. A mutex so that status checks take `&self`.
    child: Mutex<Option<Child>>,
    /// SIGTERMs the daemon if the test process dies without dropping it.
    watchdog: Option<cmd::Watchdog>,
    /// How it was started, for [`Daemon::restart`].
    command: Command,
    binary: PathBuf,
    start_timeout: Duration,
    config_path: Option<PathBuf>,
    run_dir: PathBuf,
    state_dir: PathBuf,
    log_path: PathBuf,
    base: Option<tempfile::TempDir>,
}

impl Daemon {
    /// Starts `vnetd` (see [`bin_path`]) with `--run-dir`, `--state-dir` and,
    /// when `config_toml` is given, `--config FILE` holding it.
    ///
    /// # Panics
    /// If the daemon cannot be started or does not create `control.sock`
    /// within [`DEFAULT_START_TIMEOUT`]; the message includes its log.
    pub fn start(config_toml: Option<&str>) -> Daemon {
        let mut b = DaemonBuilder::new();
        if let Some(c) = config_toml {
            b = b.config(c);
        }
        b.start()
    }

    /// Starts the process (its output appended to the log) and waits until
    /// `control.sock` exists.
    fn launch(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        self.command.stdout(log.try_clone()?).stderr(log);
        // A wrapper script a test has just written may still be open for writing in a
        // child that another test thread is forking at that moment: exec then fails
        // with ETXTBSY until that child execs in turn. Try again until it does.
        let busy = |r: &std::io::Result<_>| matches!(r, Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ETXTBSY as i32));
        let mut spawned = self.command.spawn();
        if busy(&spawned) {
            crate::wait_for(Duration::from_secs(5), || {
                spawned = self.command.spawn();
                !busy(&spawned)
            });
        }
        let child = spawned.map_err(|e| {
            Error::Failed(format!(
                "cannot start {}: {e} (build it first, or set VNET_BIN_DIR)",
                self.binary.display()
            ))
        })?;
        self.watchdog = Some(cmd::Watchdog::arm(child.id(), "TERM"));
        *self.lock_child() = Some(child);
        let socket = self.control_socket();
        let mut exited = None;
        let ready = crate::wait_for(self.start_timeout, || {
            exited = self.try_wait();
            exited.is_some() || socket.exists()
        });
        if let Some(status) = exited {
            return Err(Error::Failed(format!(
                "vnetd exited during start-up ({status}); its log:\n{}",
                cmd::tail(&self.log(), 60)
            )));
        }
        if !ready {
            return Err(Error::Timeout(format!(
                "vnetd did not create {} within {:?}; its log:\n{}",
                socket.display(),
                self.start_timeout,
                cmd::tail(&self.log(), 60)
            )));
        }
        Ok(())
    }

    /// Stops the daemon ([`Daemon::stop`]) and starts it again with the same command
    /// line and directories (and the config file as it is now, see
    /// [`Daemon::config_path`]); waits for `control.sock` as [`Daemon::start`] does.
    /// A socket left by a killed daemon is removed first, so the wait is for the new one.
    pub fn try_restart(&mut self) -> Result<()> {
        self.stop();
        let _ = std::fs::remove_file(self.control_socket());
        self.launch()
    }

    /// Like [`Daemon::try_restart`], panicking on failure.
    pub fn restart(&mut self) {
        self.try_restart()
            .unwrap_or_else(|e| panic!("test bed: restart: {e}"));
    }

    /// Kills the daemon with SIGKILL, as a crash would, and waits for it.
    pub fn kill(&mut self) {
        drop(self.watchdog.take());
        if let Some(mut child) = self.lock_child().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The config file passed with `--config` (rewrite it, then restart or reload).
    pub fn config_path(&self) -> Option<&Path> {
        self.config_path.as_deref()
    }

    /// Shorthand for [`DaemonBuilder::new`].
    pub fn builder() -> DaemonBuilder {
        DaemonBuilder::new()
    }

    /// The runtime directory (`--run-dir`).
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The state directory (`--state-dir`).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// `RUN/NET`: where the sockets of vnet `net` live (DESIGN.md §3).
    pub fn net_dir(&self, net: &str) -> PathBuf {
        self.run_dir.join(net)
    }

    /// `RUN/control.sock`.
    pub fn control_socket(&self) -> PathBuf {
        self.run_dir.join("control.sock")
    }

    /// The daemon's pid (`None` once stopped).
    pub fn pid(&self) -> Option<u32> {
        self.lock_child().as_ref().map(Child::id)
    }

    /// Whether the process is still running.
    pub fn is_running(&self) -> bool {
        self.lock_child().is_some() && self.try_wait().is_none()
    }

    /// The exit status if the daemon has ended by itself, without waiting
    /// (`None` while it runs, and after [`Daemon::stop`], which returns it).
    pub fn try_wait(&self) -> Option<ExitStatus> {
        self.lock_child()
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    fn lock_child(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Everything the daemon wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Runs the `vnet` CLI ([`bin_path`]`("vnet")`) as `vnet --run-dir RUN
    /// ARGS...` and returns its output.
    ///
    /// # Panics
    /// If the CLI cannot be started.
    pub fn cli(&self, args: &[&str]) -> Output {
        let vnet = bin_path("vnet");
        Command::new(&vnet)
            .arg("--run-dir")
            .arg(&self.run_dir)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "test bed: cannot run {}: {e} (build it first, or set VNET_BIN_DIR)",
                    vnet.display()
                )
            })
    }

    /// Like [`Daemon::cli`], but panics (with the CLI's stderr and the
    /// daemon's log tail) unless it exits with status 0; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        if !out.status.success() {
            panic!(
                "`vnet {}` failed ({}):\n{}{}\n--- vnetd log (tail) ---\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                cmd::tail(&self.log(), 40)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Sends SIGTERM and waits up to [`STOP_GRACE`] for the daemon to exit,
    /// then SIGKILLs it. Returns how it ended (`None` if it was already
    /// stopped by an earlier call).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        drop(self.watchdog.take());
        let mut child = self.lock_child().take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        let mut status = None;
        crate::wait_for(deadline.saturating_duration_since(Instant::now()), || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        if status.is_none() {
            eprintln!("test bed: vnetd did not exit within {STOP_GRACE:?} of SIGTERM; killing it");
            let _ = child.kill();
            status = child.wait().ok();
        }
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let status = self.stop();
        // A daemon that was killed leaves its classic-device FUSE mount (RUN/dev) dead
        // but mounted: detach it so the run directory can go.
        let dev = self.run_dir.join("dev");
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        if mounts.lines().any(|l| l.split(' ').nth(1) == dev.to_str()) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&dev)
                .status();
        }
        if std::thread::panicking() {
            let kept = self.base.take().map(|d| d.keep());
            eprintln!(
                "test bed: vnetd ended with {status:?}; its log (tail):\n{}--- kept in {} ---",
                cmd::tail(&self.log(), 60),
                kept.map(|p| p.display().to_string()).unwrap_or_default()
            );
        }
    }
}
