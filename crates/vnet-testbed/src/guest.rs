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

use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cmd;
use crate::initramfs;
use crate::{Error, Result};

/// How long [`GuestBuilder::boot`] waits for the ready marker by default.
/// Boots take 6–15 s under TCG; a busy 2-core machine can make that much
/// longer.
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// Extra time the host waits beyond an [`Guest::exec`] timeout (the guest
/// enforces the timeout itself; this covers a slow or wedged guest).
const EXEC_SLACK: Duration = Duration::from_secs(30);

/// A QEMU network backend for one guest NIC (the `-netdev` half; the
/// test bed adds the matching `-device virtio-net-pci`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Netdev {
    /// Connect to a listening unix stream socket (e.g. the daemon's
    /// `RUN/NET/stream.sock`): `-netdev stream,server=off,addr.type=unix,addr.path=PATH`.
    /// The socket must exist when the guest boots ([`GuestBuilder::boot`]
    /// checks): QEMU 7.2 connects once, asynchronously, silently gives up on
    /// failure and never reconnects (a restarted daemon loses the guest).
    Stream {
        /// The listening socket.
        path: PathBuf,
    },
    /// Listen on a unix stream socket (`server=on`) for one peer, e.g. another
    /// guest's [`Netdev::Stream`]: a direct cable between two guests.
    StreamServer {
        /// The socket QEMU creates.
        path: PathBuf,
    },
    /// Unix datagram sockets: `-netdev dgram,local.type=unix,local.path=LOCAL,remote.type=unix,remote.path=REMOTE`
    /// (e.g. `remote` = the daemon's `RUN/NET/dgram.sock`). QEMU binds `local`.
    Dgram {
        /// The guest's own socket, created by QEMU.
        local: PathBuf,
        /// The peer's socket.
        remote: PathBuf,
    },
    /// A VDE switch directory: `-netdev vde,sock=DIR` (QEMU must be built
    /// with VDE support).
    Vde {
        /// The switch directory (holding `ctl`).
        sock: PathBuf,
    },
    /// An existing TAP interface: `-netdev tap,ifname=NAME,script=no,downscript=no`.
    Tap {
        /// The interface name.
        ifname: String,
    },
    /// A vhost-user back-end socket: `-chardev socket,path=PATH` +
    /// `-netdev vhost-user`; the guest's RAM is then a shared memfd, as
    /// vhost-user requires.
    VhostUser {
        /// The back-end's socket.
        path: PathBuf,
    },
    /// Anything else: `TYPE,OPTIONS` as QEMU's `-netdev` takes it, without
    /// `id=` (the test bed appends it), e.g. `"socket,connect=127.0.0.1:1234"`.
    Raw(String),
}

impl Netdev {
    /// The QEMU arguments for this backend with netdev id `id`.
    fn qemu_args(&self, id: &str) -> Vec<String> {
        let p = |p: &Path| qemu_escape(&p.to_string_lossy());
        let netdev = match self {
            Netdev::Stream { path } => {
                format!(
                    "stream,id={id},server=off,addr.type=unix,addr.path={}",
                    p(path)
                )
            }
            Netdev::StreamServer { path } => {
                format!(
                    "stream,id={id},server=on,addr.type=unix,addr.path={}",
                    p(path)
                )
            }
            Netdev::Dgram { local, remote } => format!(
                "dgram,id={id},local.type=unix,local.path={},remote.type=unix,remote.path={}",
                p(local),
                p(remote)
            ),
            Netdev::Vde { sock } => format!("vde,id={id},sock={}", p(sock)),
            Netdev::Tap { ifname } => {
                format!(
                    "tap,id={id},ifname={},script=no,downscript=no",
                    qemu_escape(ifname)
                )
            }
            Netdev::VhostUser { path } => {
                return vec![
                    "-chardev".into(),
                    format!("socket,id={id}c,path={}", p(path)),
                    "-netdev".into(),
                    format!("vhost-user,id={id},chardev={id}c"),
                ];
            }
            Netdev::Raw(raw) => format!("{raw},id={id}"),
        };
        vec!["-netdev".into(), netdev]
    }
}

/// QEMU option values escape commas by doubling them.
fn qemu_escape(s: &str) -> String {
    s.replace(',', ",,")
}

#[derive(Debug, Clone)]
struct Nic {
    netdev: Netdev,
    mac: String,
    cidr: Option<String>,
}

/// Builds a [`Guest`]: NICs, addresses, memory. Nothing runs until
/// [`GuestBuilder::boot`].
#[derive(Debug, Clone)]
pub struct GuestBuilder {
    name: String,
    nics: Vec<Nic>,
    memory_mb: u32,
    boot_timeout: Duration,
    gateway: Option<String>,
    ipv6: bool,
    append: Vec<String>,
    qemu_args: Vec<String>,
}

impl Default for GuestBuilder {
    fn default() -> Self {
        GuestBuilder::new()
    }
}

impl GuestBuilder {
    /// A guest with no NICs, 256 MiB of RAM, IPv6 off and a
    /// [`crate::unique_name`] (used as its host name and in messages).
    pub fn new() -> GuestBuilder {
        GuestBuilder {
            name: crate::unique_name("vm"),
            nics: Vec::new(),
            memory_mb: 256,
            boot_timeout: DEFAULT_BOOT_TIMEOUT,
            gateway: None,
            ipv6: false,
            append: Vec::new(),
            qemu_args: Vec::new(),
        }
    }

    /// Sets the guest's name (host name and messages). Must be a valid host
    /// name without spaces.
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    /// Adds a virtio-net NIC on `netdev` with a fresh locally unique MAC
    /// (`52:54:00:..`, distinct across guests of this and other concurrent
    /// processes). NICs are named `eth0`, `eth1`, ... in the order added.
    pub fn nic(self, netdev: Netdev) -> Self {
        let mac = fresh_mac();
        self.nic_with_mac(netdev, &mac)
    }

    /// Adds a virtio-net NIC on `netdev` with the given MAC.
    pub fn nic_with_mac(mut self, netdev: Netdev, mac: &str) -> Self {
        self.nics.push(Nic {
            netdev,
            mac: mac.to_ascii_lowercase(),
            cidr: None,
        });
        self
    }

    /// Gives NIC `nic_index` (0 = `eth0`) the address `cidr` (e.g.
    /// `10.0.0.2/24`) at boot.
    ///
    /// # Panics
    /// If there is no such NIC yet.
    pub fn static_ip(mut self, nic_index: usize, cidr: &str) -> Self {
        let n = self.nics.len();
        self.nics
            .get_mut(nic_index)
            .unwrap_or_else(|| panic!("static_ip: no NIC {nic_index} (have {n})"))
            .cidr = Some(cidr.to_string());
        self
    }

    /// Adds a default route via `ip` at boot.
    pub fn gateway(mut self, ip: &str) -> Self {
        self.gateway = Some(ip.to_string());
        self
    }

    /// Guest RAM in MiB (default 256).
    pub fn memory_mb(mut self, mb: u32) -> Self {
        self.memory_mb = mb;
        self
    }

    /// How long to wait for the guest to become ready
    /// (default [`DEFAULT_BOOT_TIMEOUT`]).
    pub fn boot_timeout(mut self, timeout: Duration) -> Self {
        self.boot_timeout = timeout;
        self
    }

    /// Enables IPv6 in the guest. Off by default (`ipv6.disable=1`) so the
    /// wire carries only what the test sends.
    pub fn ipv6(mut self, on: bool) -> Self {
        self.ipv6 = on;
        self
    }

    /// Appends a parameter to the kernel command line.
    pub fn kernel_arg(mut self, arg: &str) -> Self {
        self.append.push(arg.to_string());
        self
    }

    /// Appends raw arguments to the QEMU command line (escape hatch).
    pub fn qemu_arg(mut self, arg: &str) -> Self {
        self.qemu_args.push(arg.to_string());
        self
    }

    /// The kernel command line this builder produces.
    pub fn kernel_cmdline(&self) -> String {
        let mut line = String::from("console=ttyS0 panic=-1 mitigations=off");
        if !self.ipv6 {
            line.push_str(" ipv6.disable=1");
        }
        let _ = write!(line, " vnet.hostname={}", self.name);
        for (i, nic) in self.nics.iter().enumerate() {
            let _ = write!(line, " vnet.nic=eth{i},{}", nic.mac);
            if let Some(cidr) = &nic.cidr {
                let _ = write!(line, ",{cidr}");
            }
        }
        if let Some(gw) = &self.gateway {
            let _ = write!(line, " vnet.gw={gw}");
        }
        for a in &self.append {
            line.push(' ');
            line.push_str(a);
        }
        line
    }

    /// The QEMU arguments (after the program name) for `initrd`/`kernel`.
    fn qemu_command_args(&self, image: &initramfs::Initramfs) -> Vec<String> {
        let mut a: Vec<String> = [
            "-accel",
            "tcg",
            "-nodefaults",
            "-no-user-config",
            "-no-reboot",
            "-display",
            "none",
            "-smp",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(["-name".into(), self.name.clone()]);
        a.extend(["-m".into(), self.memory_mb.to_string()]);
        if self
            .nics
            .iter()
            .any(|n| matches!(n.netdev, Netdev::VhostUser { .. }))
        {
            a.extend([
                "-object".into(),
                format!(
                    "memory-backend-memfd,id=mem0,size={}M,share=on",
                    self.memory_mb
                ),
                "-numa".into(),
                "node,memdev=mem0".into(),
            ]);
        }
        a.extend([
            "-kernel".into(),
            image.kernel_image.to_string_lossy().into(),
        ]);
        a.extend(["-initrd".into(), image.path.to_string_lossy().into()]);
        a.extend(["-append".into(), self.kernel_cmdline()]);
        a.extend([
            "-chardev".into(),
            "stdio,id=con0,signal=off".into(),
            "-serial".into(),
            "chardev:con0".into(),
        ]);
        for (i, nic) in self.nics.iter().enumerate() {
            let id = format!("n{i}");
            a.extend(nic.netdev.qemu_args(&id));
            a.extend([
                "-device".into(),
                // romfile= (empty): no iPXE option ROM, which we neither need
                // (direct kernel boot) nor have installed.
                format!("virtio-net-pci,netdev={id},mac={},romfile=", nic.mac),
            ]);
        }
        a.extend(self.qemu_args.iter().cloned());
        a
    }

    /// Starts QEMU and waits until the guest's command loop is ready.
    ///
    /// At most `$VNET_TESTBED_MAX_BOOTS` (default 2) guests of this process
    /// boot at the same time; booting is the CPU-heavy phase under TCG.
    /// On failure the error carries the tail of the console and QEMU's
    /// stderr.
    pub fn boot(self) -> Result<Guest> {
        self.check_stream_sockets()?;
        let image = initramfs::standard()?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("vnet-guest-{}-", self.name))
            .tempdir()?;
        let console_log = dir.path().join("console.log");
        let stderr_log = dir.path().join("qemu.stderr");
        let qemu = std::env::var("VNET_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into());
        let args = self.qemu_command_args(image);
        std::fs::write(
            dir.path().join("qemu.cmdline"),
            format!("{qemu} {}\n", args.join(" ")),
        )?;

        let _slot = BootSlot::acquire();
        let start = Instant::now();
        let mut child = Command::new(&qemu)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr_log)?)
            .spawn()
            .map_err(|e| Error::Failed(format!("cannot start {qemu}: {e}")))?;
        let watchdog = cmd::Watchdog::arm(child.id(), "KILL");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let console = Arc::new(Console::default());
        let reader = {
            let console = Arc::clone(&console);
            let log = File::create(&console_log)?;
            std::thread::Builder::new()
                .name(format!("console-{}", self.name))
                .spawn(move || console.pump(stdout, log))?
        };
        let mut guest = Guest {
            name: self.name.clone(),
            nics: self.nics.clone(),
            child,
            watchdog: Some(watchdog),
            stdin: Mutex::new(stdin),
            console,
            reader: Some(reader),
            dir: Some(dir),
            console_log,
            stderr_log,
            boot_time: Duration::ZERO,
            guest_uptime: 0.0,
            next_id: AtomicU32::new(1),
        };
        let deadline = start + self.boot_timeout;
        let marker = b"@@VNET-READY ";
        let ready = guest.console.wait(0, deadline, |buf| {
            let at = find(buf, marker)?;
            let rest = &buf[at + marker.len()..];
            let eol = rest.iter().position(|&b| b == b'\n')?;
            Some(String::from_utf8_lossy(&rest[..eol]).trim().to_string())
        });
        match ready {
            Ok(uptime) => {
                guest.boot_time = start.elapsed();
                guest.guest_uptime = uptime.parse().unwrap_or(0.0);
                let mut st = guest.console.lock();
                st.cursor = st.buf.len();
                drop(st);
                Ok(guest)
            }
            Err(stop) => Err(guest.failure(stop, "boot", self.boot_timeout)),
        }
    }
}

impl GuestBuilder {
    /// QEMU 7.2 connects a stream client once, asynchronously, and does not
    /// report a failure: the guest would boot with a dead NIC. Fail early and
    /// clearly instead.
    fn check_stream_sockets(&self) -> Result<()> {
        use std::os::unix::fs::FileTypeExt;
        for (i, nic) in self.nics.iter().enumerate() {
            if let Netdev::Stream { path } = &nic.netdev {
                let is_socket = std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket());
                if !is_socket {
                    return Err(Error::Failed(format!(
                        "guest {}: NIC {i}: no listening socket at {} (QEMU would boot with the \
                         NIC unconnected and never retry)",
                        self.name,
                        path.display()
                    )));
                }
            }
        }
        Ok(())
    }
}

/// A fresh MAC: `52:54:00` (QEMU's prefix), then the low 16 bits of the pid
/// and a per-process counter.
fn fresh_mac() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(1);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    format!(
        "52:54:00:{:02x}:{:02x}:{:02x}",
        (pid >> 8) & 0xff,
        pid & 0xff,
        n & 0xff
    )
}

/// Limits concurrent boots in this process.
struct BootSlot;

static BOOTS: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

impl BootSlot {
    fn acquire() -> BootSlot {
        let max: usize = std::env::var("VNET_TESTBED_MAX_BOOTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2)
            .max(1);
        let (lock, cond) = &BOOTS;
        let mut n = lock.lock().unwrap_or_else(|e| e.into_inner());
        while *n >= max {
            n = cond.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        *n += 1;
        BootSlot
    }
}

impl Drop for BootSlot {
    fn drop(&mut self) {
        let (lock, cond) = &BOOTS;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        cond.notify_one();
    }
}

/// The console output seen so far, shared with the reader thread.
#[derive(Default)]
struct Console {
    state: Mutex<ConsoleState>,
    changed: Condvar,
}

#[derive(Default)]
struct ConsoleState {
    /// Everything the guest wrote, CRs removed.
    buf: Vec<u8>,
    /// Where the next [`Guest::exec`] starts looking for its markers.
    cursor: usize,
    /// QEMU closed its stdout (it exited).
    eof: bool,
}

/// Why a console wait ended without a match.
enum Stop {
    Timeout,
    Exited,
}

impl Console {
    fn lock(&self) -> std::sync::MutexGuard<'_, ConsoleState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reader thread: copies QEMU's stdout into the buffer and the log.
    fn pump(&self, mut from: impl Read, mut log: File) {
        let mut chunk = [0u8; 4096];
        loop {
            let n = match from.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let _ = log.write_all(&chunk[..n]);
            let mut st = self.lock();
            st.buf.extend(chunk[..n].iter().filter(|&&b| b != b'\r'));
            drop(st);
            self.changed.notify_all();
        }
        self.lock().eof = true;
        self.changed.notify_all();
    }

    /// Waits until `found` returns something for `buf[from..]`, QEMU exits,
    /// or the deadline passes.
    fn wait<T>(
        &self,
        from: usize,
        deadline: Instant,
        mut found: impl FnMut(&[u8]) -> Option<T>,
    ) -> std::result::Result<T, Stop> {
        let mut st = self.lock();
        loop {
            if let Some(t) = found(&st.buf[from.min(st.buf.len())..]) {
                return Ok(t);
            }
            if st.eof {
                return Err(Stop::Exited);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Stop::Timeout);
            }
            st = self
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.lock().buf).into_owned()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

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

/// Standard base64 with padding (what busybox `base64 -d` reads).
fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), enc);
        }
    }

    #[test]
    fn netdev_args() {
        let a = Netdev::Stream {
            path: "/r/n,1/stream.sock".into(),
        }
        .qemu_args("n0");
        assert_eq!(
            a,
            [
                "-netdev",
                "stream,id=n0,server=off,addr.type=unix,addr.path=/r/n,,1/stream.sock"
            ]
        );
        let d = Netdev::Dgram {
            local: "/c".into(),
            remote: "/p".into(),
        }
        .qemu_args("n1");
        assert_eq!(
            d[1],
            "dgram,id=n1,local.type=unix,local.path=/c,remote.type=unix,remote.path=/p"
        );
        assert_eq!(
            Netdev::Raw("vde,sock=/x".into()).qemu_args("n2")[1],
            "vde,sock=/x,id=n2"
        );
        assert_eq!(
            Netdev::VhostUser { path: "/v".into() }.qemu_args("n3"),
            [
                "-chardev",
                "socket,id=n3c,path=/v",
                "-netdev",
                "vhost-user,id=n3,chardev=n3c"
            ]
        );
    }

    #[test]
    fn cmdline_describes_nics() {
        let b = GuestBuilder::new()
            .name("g1")
            .nic_with_mac(Netdev::Raw("user".into()), "52:54:00:AA:00:01")
            .static_ip(0, "10.0.0.2/24")
            .nic_with_mac(Netdev::Raw("user".into()), "52:54:00:aa:00:02")
            .gateway("10.0.0.1");
        let line = b.kernel_cmdline();
        assert!(line.contains(" vnet.nic=eth0,52:54:00:aa:00:01,10.0.0.2/24 "));
        assert!(line.contains(" vnet.nic=eth1,52:54:00:aa:00:02 "));
        assert!(line.contains(" vnet.gw=10.0.0.1"));
        assert!(line.contains("ipv6.disable=1"));
    }

    #[test]
    fn macs_are_distinct() {
        assert_ne!(fresh_mac(), fresh_mac());
    }
}
