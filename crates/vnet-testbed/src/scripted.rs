//! A client acting as another user: a python3 script run under `setpriv` as a uid (and
//! groups) of the test's choosing, driven one line at a time — the test writes a
//! command, the script prints one answer line.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// The running script; killed on drop.
pub struct Scripted {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Scripted {
    /// Runs `script` (python3 source) as `uid`/`gid` with exactly `groups` as its
    /// supplementary groups, in directory `cwd`.
    pub fn spawn(uid: u32, gid: u32, groups: &[u32], cwd: &Path, script: &str) -> Scripted {
        // The system's: a python3 first on root's PATH may live where `uid` cannot go.
        let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("python3");
        let mut child = Command::new("setpriv")
            .args(setpriv(uid, gid, groups))
            .args([python, "-c", script])
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 under setpriv");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Scripted {
            child,
            stdin,
            stdout,
        }
    }

    /// Sends one command line and returns the script's answer, trimmed.
    pub fn cmd(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").unwrap();
        let mut out = String::new();
        self.stdout.read_line(&mut out).unwrap();
        assert!(!out.is_empty(), "the script died on {line:?}");
        out.trim().to_string()
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `setpriv` arguments that make the rest run as `uid`, `gid`, `groups`.
pub fn setpriv(uid: u32, gid: u32, groups: &[u32]) -> Vec<String> {
    let mut args = vec![format!("--reuid={uid}"), format!("--regid={gid}")];
    if groups.is_empty() {
        args.push("--clear-groups".into());
    } else {
        let list: Vec<String> = groups.iter().map(u32::to_string).collect();
        args.push(format!("--groups={}", list.join(",")));
    }
    args
}
