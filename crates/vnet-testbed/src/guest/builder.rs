//! Describing a guest and booting it.

use std::fmt::Write as _;
use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::console::{find, Console};
use super::{Guest, Netdev};
use crate::{cmd, initramfs, Error, Result};

/// The QMP socket's name in a guest's directory.
const QMP_SOCKET: &str = "qmp.sock";

/// How long [`GuestBuilder::boot`] waits for the ready marker by default.
/// Boots take 6–15 s under TCG; a busy 2-core machine can make that much
/// longer.
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub(super) struct Nic {
    pub(super) netdev: Netdev,
    pub(super) mac: String,
    pub(super) cidr: Option<String>,
}

/// Builds a [`Guest`]: NICs, addresses, memory. Nothing runs until
/// [`GuestBuilder::boot`].
#[derive(Debug, Clone)]
pub struct GuestBuilder {
    name: String,
    pub(super) nics: Vec<Nic>,
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

    /// The QEMU arguments (after the program name) for `initrd`/`kernel`, with QMP on
    /// `dir/qmp.sock`; `incoming`: wait for a migration there instead of booting.
    fn qemu_command_args(
        &self,
        image: &initramfs::Initramfs,
        dir: &Path,
        incoming: Option<&Path>,
    ) -> Vec<String> {
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
        a.extend([
            "-qmp".into(),
            format!(
                "unix:{},server=on,wait=off",
                dir.join(QMP_SOCKET).to_string_lossy()
            ),
        ]);
        if let Some(path) = incoming {
            a.extend([
                "-incoming".into(),
                format!("unix:{}", path.to_string_lossy()),
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
        // Built once per process (cached), and not on the boot's clock.
        initramfs::standard()?;
        let _slot = BootSlot::acquire();
        let start = Instant::now();
        let boot_timeout = self.boot_timeout;
        let mut guest = self.spawn(None)?;
        let deadline = start + boot_timeout;
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
            Err(stop) => Err(guest.failure(stop, "boot", boot_timeout)),
        }
    }

    /// Starts QEMU: booting, or (`incoming`) waiting for a migration on that unix
    /// socket, which QEMU creates.
    pub(super) fn spawn(self, incoming: Option<&Path>) -> Result<Guest> {
        self.check_stream_sockets()?;
        let image = initramfs::standard()?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("vnet-guest-{}-", self.name))
            .tempdir()?;
        let console_log = dir.path().join("console.log");
        let stderr_log = dir.path().join("qemu.stderr");
        let qemu = std::env::var("VNET_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into());
        let args = self.qemu_command_args(image, dir.path(), incoming);
        std::fs::write(
            dir.path().join("qemu.cmdline"),
            format!("{qemu} {}\n", args.join(" ")),
        )?;

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
        let qmp = dir.path().join(QMP_SOCKET);
        Ok(Guest {
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
            qmp,
            builder: self,
            incoming: None,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

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
