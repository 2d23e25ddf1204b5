//! Running host commands (`ip`, `kill`, ...) with useful failure messages.

use std::process::{Command, Output, Stdio};

use crate::{Error, Result};

/// Runs `argv` to completion, capturing stdout and stderr. Only fails when the
/// program cannot be started; the exit status is left to the caller.
pub(crate) fn output(argv: &[&str]) -> Result<Output> {
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| Error::Failed("empty command line".into()))?;
    Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Failed(format!("cannot run {prog}: {e}")))
}

/// Runs `argv` and fails unless it exits with status 0; returns its stdout.
pub(crate) fn run(argv: &[&str]) -> Result<String> {
    let out = output(argv)?;
    check(argv, &out)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Fails with the command line, status and stderr unless `out` is a success.
pub(crate) fn check(argv: &[&str], out: &Output) -> Result<()> {
    if out.status.success() {
        return Ok(());
    }
    Err(Error::Failed(format!(
        "`{}` failed ({}): {}{}",
        argv.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim_end(),
        String::from_utf8_lossy(&out.stdout).trim_end(),
    )))
}

/// Runs `argv`, ignoring failure (cleanup paths: the object may already be
/// gone).
pub(crate) fn quiet(argv: &[&str]) {
    let _ = output(argv);
}

/// Returns the last `lines` lines of `text`, with a note when some were cut.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let skip = all.len().saturating_sub(lines);
    let mut out = String::new();
    if skip > 0 {
        out.push_str(&format!("[... {skip} earlier lines ...]\n"));
    }
    for line in &all[skip..] {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Kills a process if this (test) process dies without cleaning up, e.g. when
/// the test binary is SIGKILLed or aborts: Drop guards do not run then, and a
/// stray QEMU would burn a CPU for good.
///
/// It is a small `sh` holding the read end of a pipe whose write end only
/// this process has (std's pipes are close-on-exec); when this process dies
/// the pipe closes, `read` returns and the shell signals the target. The
/// guard is disarmed (the shell is killed) on drop, before the owner stops
/// the target itself.
#[derive(Debug)]
pub(crate) struct Watchdog {
    shell: Option<std::process::Child>,
}

impl Watchdog {
    /// Arms a watchdog that sends `signal` (a `kill` signal name such as
    /// `KILL` or `TERM`) to `pid` when this process dies.
    pub(crate) fn arm(pid: u32, signal: &str) -> Watchdog {
        let shell = Command::new("sh")
            .arg("-c")
            .arg(format!("read _ignored; kill -{signal} {pid} 2>/dev/null"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| eprintln!("test bed: no watchdog for pid {pid}: {e}"))
            .ok();
        Watchdog { shell }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(mut shell) = self.shell.take() {
            let _ = shell.kill();
            let _ = shell.wait();
        }
    }
}
