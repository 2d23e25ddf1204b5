//! Real QEMU guests, driven over their serial console.
//!
//! A guest boots the distribution kernel with the test bed's initramfs
//! ([`crate::initramfs`]) under `qemu-system-x86_64 -accel tcg` (KVM hangs on
//! our machines). Its serial port is QEMU's stdin/stdout: a reader thread
//! appends everything to an in-memory buffer and to `console.log`, and
//! [`Guest::exec`] writes commands to the guest's command loop
//! (`guest-files/serial-loop.sh`) and waits for the end marker that carries
//! the exit status.
//!
//! Kernel command line contract with `/init` (see `guest-files/init.sh`):
//! `vnet.nic=NAME,MAC[,CIDR]` per NIC (found by MAC, renamed to NAME, up,
//! address), `vnet.gw=IP`, `vnet.hostname=NAME`; the guest prints
//! `@@VNET-READY <uptime>` when it is ready for commands.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{cmd, Error, Result};

mod builder;
mod console;
mod netdev;
mod qmp;

pub use builder::{GuestBuilder, DEFAULT_BOOT_TIMEOUT};
pub use netdev::Netdev;

use builder::Nic;
use console::{base64, find, Console, Stop};

/// Extra time the host waits beyond an [`Guest::exec`] timeout (the guest
/// enforces the timeout itself; this covers a slow or wedged guest).
const EXEC_SLACK: Duration = Duration::from_secs(30);

/// A running QEMU guest. Killed when dropped; if the dropping thread is
/// panicking (a failed test), the console tail and QEMU's stderr are printed
/// and the directory with the full `console.log` is kept (its path is
/// printed).
pub struct Guest {
    name: String,
    nics: Vec<Nic>,
    child: Child,
    watchdog: Option<cmd::Watchdog>,
    stdin: Mutex<ChildStdin>,
    console: Arc<Console>,
    reader: Option<JoinHandle<()>>,
    dir: Option<tempfile::TempDir>,
    console_log: PathBuf,
    stderr_log: PathBuf,
    boot_time: Duration,
    guest_uptime: f64,
    next_id: AtomicU32,
    /// The QMP socket QEMU listens on.
    qmp: PathBuf,
    /// What was started: a migration's destination is the same machine.
    builder: GuestBuilder,
    /// A destination's directory and the socket it waits for the migration on.
    incoming: Option<(tempfile::TempDir, PathBuf)>,
}

impl std::fmt::Debug for Guest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guest")
            .field("name", &self.name)
            .field("pid", &self.child.id())
            .field("console_log", &self.console_log)
            .finish_non_exhaustive()
    }
}

impl Guest {
    /// Shorthand for [`GuestBuilder::new`].
    pub fn builder() -> GuestBuilder {
        GuestBuilder::new()
    }

    /// Runs the shell script `cmd` in the guest and returns its exit status
    /// and combined stdout+stderr (CRs stripped; exactly what it printed).
    ///
    /// The guest enforces `timeout` (rounded up to whole seconds): when it
    /// passes, the command's whole session is killed, the guest stays usable
    /// and this returns [`Error::Timeout`] with the output so far. The host
    /// gives up 30 s later than that if the guest does not answer at all.
    /// The command's stdin is `/dev/null`; processes it starts in the
    /// background keep running, and their output is discarded.
    /// Calls are serialized per guest; `Guest` is `Sync`.
    pub fn exec(&self, cmd: &str, timeout: Duration) -> Result<(i32, String)> {
        let mut stdin = self.stdin.lock().unwrap_or_else(|e| e.into_inner());
        let id = format!("c{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
        let line = format!("{id} {} {}\n", secs.max(1), base64(cmd.as_bytes()));
        stdin
            .write_all(line.as_bytes())
            .and_then(|_| stdin.flush())
            .map_err(|e| self.failure(Stop::Exited, &format!("exec: write: {e}"), timeout))?;

        let begin = format!("@@VNET-BEGIN {id}\n");
        let end = format!("\n@@VNET-END {id} ");
        let from = self.console.lock().cursor;
        let deadline = Instant::now() + timeout + EXEC_SLACK;
        let found = self.console.wait(from, deadline, |buf| {
            let b = find(buf, begin.as_bytes())?;
            let body = b + begin.len();
            let e = body + find(&buf[body..], end.as_bytes())?;
            let tail = &buf[e + end.len()..];
            let eol = tail.iter().position(|&c| c == b'\n')?;
            let output = String::from_utf8_lossy(&buf[body..e]).into_owned();
            let status = String::from_utf8_lossy(&tail[..eol]).into_owned();
            Some((output, status, from + e + end.len() + eol + 1))
        });
        match found {
            Ok((output, status, next)) => {
                self.console.lock().cursor = next;
                let mut words = status.split_whitespace();
                let rc: i32 = words.next().and_then(|w| w.parse().ok()).unwrap_or(-1);
                if words.next() == Some("timeout") {
                    return Err(Error::Timeout(format!(
                        "guest {}: `{cmd}` still running after {secs} s (killed); output:\n{output}",
                        self.name
                    )));
                }
                Ok((rc, output))
            }
            Err(stop) => Err(self.failure(stop, &format!("exec `{cmd}`"), timeout + EXEC_SLACK)),
        }
    }

    /// Like [`Guest::exec`], but panics (with the output and the console
    /// tail) unless the command exits with status 0; returns its output.
    pub fn exec_ok(&self, cmd: &str, timeout: Duration) -> String {
        match self.exec(cmd, timeout) {
            Ok((0, out)) => out,
            Ok((rc, out)) => panic!("guest {}: `{cmd}` exited with {rc}:\n{out}", self.name),
            Err(e) => panic!("{e}"),
        }
    }

    /// Runs `udhcpc` on the guest interface `ifname` (e.g. `eth0`), which
    /// then holds the leased address, default route, MTU and
    /// `/etc/resolv.conf`; returns what the server sent. `extra_args` go to
    /// `udhcpc` (e.g. `"-x hostname:vm1"`), as shell words.
    pub fn dhcp(&self, ifname: &str, extra_args: &str) -> Result<crate::DhcpLease> {
        let cmd = format!(
            "udhcpc -i {ifname} -s /etc/udhcpc/default.script {} {extra_args} >/tmp/udhcpc.log 2>&1 \
             || {{ cat /tmp/udhcpc.log; exit 1; }}; cat /run/udhcpc.{ifname}.env",
            crate::dhcp::UDHCPC_ARGS.join(" ")
        );
        match self.exec(&cmd, Duration::from_secs(60))? {
            (0, out) => Ok(crate::DhcpLease::parse(&out)),
            (rc, out) => Err(Error::Failed(format!(
                "guest {}: udhcpc on {ifname} got no lease (exit {rc}):\n{out}",
                self.name
            ))),
        }
    }

    /// The guest's name (also its host name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The MAC of NIC `i` (`eth{i}` in the guest).
    ///
    /// # Panics
    /// If there is no such NIC.
    pub fn mac(&self, i: usize) -> &str {
        &self.nics[i].mac
    }

    /// The static address of NIC `i` without prefix length, if it has one.
    pub fn ip(&self, i: usize) -> Option<&str> {
        self.nics
            .get(i)?
            .cidr
            .as_deref()
            .map(|c| c.split('/').next().unwrap_or(c))
    }

    /// Host wall-clock time from starting QEMU to the ready marker.
    pub fn boot_time(&self) -> Duration {
        self.boot_time
    }

    /// The guest's own uptime when it printed the ready marker, in seconds
    /// (kernel boot + `/init`, without QEMU start-up and firmware).
    pub fn guest_uptime_at_ready(&self) -> f64 {
        self.guest_uptime
    }

    /// QEMU's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the serial console printed so far (CRs stripped).
    pub fn console(&self) -> String {
        self.console.text()
    }

    /// The full console log file (kept after a failed test).
    pub fn console_log_path(&self) -> &Path {
        &self.console_log
    }

    /// Runs the QMP command `execute` with `arguments` (a JSON object, or
    /// `Value::Null` for none) and returns what it returned; a QMP error is
    /// [`Error::Failed`] with QEMU's class and description.
    pub fn qmp(&self, execute: &str, arguments: serde_json::Value) -> Result<serde_json::Value> {
        qmp::command(&self.qmp, execute, arguments)
    }

    /// Starts the destination of a live migration of this guest: a QEMU with the
    /// same machine, its NICs on `netdevs` (one per NIC, in order, e.g. the other
    /// host's sockets), waiting for [`Guest::migrate`]. Until then it runs nothing;
    /// afterwards it is the guest ([`Guest::exec`] reaches the same command loop).
    pub fn incoming(&self, netdevs: Vec<Netdev>) -> Result<Guest> {
        if netdevs.len() != self.nics.len() {
            return Err(Error::Failed(format!(
                "guest {}: {} NICs, {} netdevs for the destination",
                self.name,
                self.nics.len(),
                netdevs.len()
            )));
        }
        let mut builder = self.builder.clone();
        for (nic, netdev) in builder.nics.iter_mut().zip(netdevs) {
            nic.netdev = netdev;
        }
        let dir = tempfile::Builder::new()
            .prefix(&format!("vnet-migrate-{}-", self.name))
            .tempdir()?;
        let socket = dir.path().join("migrate.sock");
        let mut guest = builder.spawn(Some(&socket))?;
        let listening = crate::wait_for(Duration::from_secs(60), || {
            socket.exists() || guest.console.lock().eof
        });
        if !socket.exists() {
            let stop = if listening {
                Stop::Exited
            } else {
                Stop::Timeout
            };
            return Err(guest.failure(stop, "-incoming never listened", Duration::from_secs(60)));
        }
        guest.incoming = Some((dir, socket));
        Ok(guest)
    }

    /// Live-migrates this guest to `to` (made by [`Guest::incoming`]) and waits up to
    /// `timeout` until QEMU says `completed`; returns `query-migrate`'s last answer
    /// (`total-time`, `downtime`, `ram`... in ms and bytes). This QEMU is left paused
    /// (`postmigrate`). A migration QEMU refuses (a blocker, e.g. a back-end that
    /// cannot log dirty pages) or that fails is [`Error::Failed`] with QEMU's reason.
    pub fn migrate(&self, to: &Guest, timeout: Duration) -> Result<serde_json::Value> {
        self.start_migration(to)?;
        let mut last = serde_json::Value::Null;
        let mut error = None;
        let done = crate::wait_for(timeout, || {
            match self.qmp("query-migrate", serde_json::Value::Null) {
                Ok(r) => {
                    let status = r["status"].as_str().unwrap_or("").to_string();
                    last = r;
                    matches!(status.as_str(), "completed" | "failed" | "cancelled")
                }
                Err(e) => {
                    error = Some(e);
                    true
                }
            }
        });
        if let Some(e) = error {
            return Err(e);
        }
        match last["status"].as_str() {
            Some("completed") => Ok(last),
            _ if !done => Err(Error::Timeout(format!(
                "guest {}: migration not completed after {timeout:?}: {last}",
                self.name
            ))),
            _ => Err(Error::Failed(format!(
                "guest {}: migration {}: {}",
                self.name,
                last["status"].as_str().unwrap_or("?"),
                last["error-desc"].as_str().unwrap_or("")
            ))),
        }
    }

    /// Starts a live migration to `to` (made by [`Guest::incoming`]) and returns at
    /// once: [`Guest::migrate`] without the wait, for whoever watches `query-migrate`
    /// itself (a benchmark's timing).
    pub fn start_migration(&self, to: &Guest) -> Result<()> {
        let Some((_, socket)) = &to.incoming else {
            return Err(Error::Failed(format!(
                "guest {}: is not waiting for a migration (see Guest::incoming)",
                to.name
            )));
        };
        let uri = format!("unix:{}", socket.to_string_lossy());
        self.qmp("migrate", serde_json::json!({ "uri": uri }))
            .map(drop)
    }

    /// Builds the error for a failed wait, with diagnostics.
    fn failure(&self, stop: Stop, what: &str, waited: Duration) -> Error {
        let stderr = std::fs::read_to_string(&self.stderr_log).unwrap_or_default();
        let details = format!(
            "guest {} ({}): {what}\n--- console (tail) ---\n{}--- qemu stderr ---\n{}\n\
             --- full log: {} (kept if the test panics with the guest alive) ---",
            self.name,
            match stop {
                Stop::Timeout => format!("no answer within {waited:?}"),
                Stop::Exited => "QEMU exited".to_string(),
            },
            cmd::tail(&self.console.text(), 60),
            stderr.trim_end(),
            self.console_log.display(),
        );
        match stop {
            Stop::Timeout => Error::Timeout(details),
            Stop::Exited => Error::Failed(details),
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        drop(self.watchdog.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        if std::thread::panicking() {
            let stderr = std::fs::read_to_string(&self.stderr_log).unwrap_or_default();
            let kept = self.dir.take().map(|d| d.keep());
            eprintln!(
                "test bed: guest {} console (tail):\n{}--- qemu stderr ---\n{}\n--- kept in {} ---",
                self.name,
                cmd::tail(&self.console.text(), 60),
                stderr.trim_end(),
                kept.map(|p| p.display().to_string()).unwrap_or_default(),
            );
        }
    }
}
