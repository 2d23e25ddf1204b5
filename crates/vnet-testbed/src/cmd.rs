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
