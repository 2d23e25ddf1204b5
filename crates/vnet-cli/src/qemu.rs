//! QEMU command-line arguments that attach a VM's NIC to a vnet.
//!
//! Two transports, both served by vnetd on every vnet:
//! - `-netdev stream`: QEMU connects to `RUN/NET/stream.sock`; each connection is a
//!   port. QEMU ≥ 8.0 can reconnect when vnetd restarts (`reconnect=SECS`, renamed
//!   `reconnect-ms=MS` in 9.2 and the old name deprecated), so the option is chosen by
//!   the version of the QEMU that will run; older QEMUs get none.
//! - `-netdev dgram`: QEMU binds a socket of its own (`local`) and sends to
//!   `RUN/NET/dgram.sock` (`remote`); vnetd learns the port from the sender address, so
//!   `local` must be unique per NIC.
//! - `-netdev vde`: QEMU (built with VDE support) connects to the VDE switch directory
//!   `RUN/NET/vde` as to a `vde_switch`.
//! - `-netdev tap`: QEMU opens a TAP itself and an interface port joins it.

use std::path::{Path, PathBuf};
use std::process::Command;

use vnet_control::MacAddr;

/// The `-netdev` backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Netdev {
    Stream,
    Dgram,
    Vde,
}

/// A QEMU release, as far as option names care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct QemuVersion {
    pub major: u32,
    pub minor: u32,
}

/// How a `-netdev stream` client comes back after vnetd restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconnect {
    /// The QEMU is too old (or unknown): no option, a restart of vnetd needs a new VM.
    Never,
    /// `reconnect=SECS` (QEMU 8.0 – 9.1).
    Seconds(u32),
    /// `reconnect-ms=MS` (QEMU ≥ 9.2).
    Millis(u32),
}

impl Reconnect {
    /// The reconnect option `version` understands, retrying every second.
    pub fn for_version(version: Option<QemuVersion>) -> Reconnect {
        const RECONNECT_MS: QemuVersion = QemuVersion { major: 9, minor: 2 };
        const RECONNECT: QemuVersion = QemuVersion { major: 8, minor: 0 };
        match version {
            Some(v) if v >= RECONNECT_MS => Reconnect::Millis(1000),
            Some(v) if v >= RECONNECT => Reconnect::Seconds(1),
            _ => Reconnect::Never,
        }
    }
}

/// Everything the arguments say.
#[derive(Debug, Clone)]
pub struct Attachment<'a> {
    pub netdev: Netdev,
    /// QEMU id of the netdev, referenced by the device.
    pub id: &'a str,
    /// NIC model, e.g. `virtio-net-pci`.
    pub model: &'a str,
    pub mac: MacAddr,
    /// The vnet's socket for this transport (`NetworkInfo.sockets.stream` or `.dgram`),
    /// or its VDE switch directory.
    pub vnet_socket: &'a Path,
    /// Dgram only: the path QEMU binds.
    pub local_socket: Option<&'a Path>,
    /// Stream only.
    pub reconnect: Reconnect,
}

/// `-netdev …  -device …` as separate arguments, ready for `exec`.
pub fn qemu_args(a: &Attachment) -> Vec<String> {
    let vnet_socket = option_value(a.vnet_socket);
    let netdev = match a.netdev {
        Netdev::Stream => {
            let reconnect = match a.reconnect {
                Reconnect::Never => String::new(),
                Reconnect::Seconds(s) => format!(",reconnect={s}"),
                Reconnect::Millis(ms) => format!(",reconnect-ms={ms}"),
            };
            format!(
                "stream,id={},server=off{reconnect},addr.type=unix,addr.path={vnet_socket}",
                a.id
            )
        }
        Netdev::Dgram => {
            let local = option_value(a.local_socket.expect("dgram needs a local socket"));
            format!(
                "dgram,id={},local.type=unix,local.path={local},remote.type=unix,remote.path={vnet_socket}",
                a.id
            )
        }
        Netdev::Vde => format!("vde,id={},sock={vnet_socket}", a.id),
    };
    let device = format!("{},netdev={},mac={}", a.model, a.id, a.mac);
    vec!["-netdev".into(), netdev, "-device".into(), device]
}

/// The vhost-user socket of port `name`: `RUN/NET/vhost-user/NAME.sock`, beside the
/// vnet's stream socket.
pub fn vhost_user_socket(stream_socket: &Path, name: &str) -> PathBuf {
    stream_socket
        .with_file_name("vhost-user")
        .join(format!("{name}.sock"))
}

/// `-netdev vhost-user` and what it needs: the chardev QEMU connects with (reconnecting
/// every second, so a restarted vnetd gets the NIC back), and guest RAM in a shared memfd
/// that vnetd maps (`size` must be the VM's `-m`; one backend per VM, whatever the number
/// of vhost-user NICs).
pub fn vhost_user_args(a: &Attachment, size: &str) -> Vec<String> {
    let path = option_value(a.vnet_socket);
    let reconnect = match a.reconnect {
        Reconnect::Millis(ms) => format!(",reconnect-ms={ms}"),
        _ => ",reconnect=1".to_string(),
    };
    let id = a.id;
    vec![
        "-m".into(),
        size.into(),
        "-object".into(),
        format!("memory-backend-memfd,id={id}-mem,size={size},share=on"),
        "-machine".into(),
        format!("memory-backend={id}-mem"),
        "-chardev".into(),
        format!("socket,id={id}-chr,path={path}{reconnect}"),
        "-netdev".into(),
        format!("vhost-user,id={id},chardev={id}-chr"),
        "-device".into(),
        format!("{},netdev={id},mac={}", a.model, a.mac),
    ]
}

/// `-netdev tap` on TAP `ifname`, which QEMU opens (creating it if it does not exist)
/// and `vnet port add NET --interface IFNAME` joins; `script=no`: the port brings the
/// interface up when it joins it.
pub fn tap_args(id: &str, model: &str, mac: MacAddr, ifname: &str) -> Vec<String> {
    vec![
        "-netdev".into(),
        format!(
            "tap,id={id},ifname={},script=no,downscript=no",
            ifname.replace(',', ",,")
        ),
        "-device".into(),
        format!("{model},netdev={id},mac={mac}"),
    ]
}

/// QEMU's option syntax ends a value at a comma; a literal comma is written twice.
fn option_value(path: &Path) -> String {
    path.to_string_lossy().replace(',', ",,")
}

/// The arguments as one line a shell reads back into the same arguments.
pub fn shell_line(args: &[String]) -> String {
    args.iter()
        .map(|arg| shell_quote(arg))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// QEMU accepts ids that start with a letter and go on with letters, digits, `-._`.
pub fn is_valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
}

/// A MAC in QEMU's own range 52:54:00 (locally administered, unicast) with random
/// low bytes.
pub fn random_mac() -> MacAddr {
    let [a, b, c] = random_bytes::<3>();
    MacAddr([0x52, 0x54, 0x00, a, b, c])
}

/// The VDE switch directory of a vnet: `RUN/NET/vde`, beside its stream socket.
pub fn vde_dir(stream_socket: &Path) -> PathBuf {
    stream_socket.with_file_name("vde")
}

/// A fresh path for QEMU's end of a dgram attachment, in the temporary directory.
pub fn dgram_local_path(net: &str) -> PathBuf {
    let tag: String = random_bytes::<4>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::env::temp_dir().join(format!("vnet-{net}-{tag}.sock"))
}

fn random_bytes<const N: usize>() -> [u8; N] {
    use std::io::Read;
    let mut bytes = [0u8; N];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_err()
    {
        // No /dev/urandom (a bare chroot): the clock and pid still differ per call.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            ^ (u128::from(std::process::id()) << 64);
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = (seed >> (8 * (i % 16))) as u8;
        }
    }
    bytes
}

/// `QEMU emulator version 9.2.0 (…)` → 9.2.
pub fn parse_qemu_version(text: &str) -> Option<QemuVersion> {
    let rest = &text[text.find("version ")? + "version ".len()..];
    let mut numbers = rest
        .split(|c: char| !c.is_ascii_digit())
        .take(2)
        .map(|n| n.parse::<u32>().ok());
    Some(QemuVersion {
        major: numbers.next()??,
        minor: numbers.next()??,
    })
}

/// Ask `binary --version`; `None` if it is not there or says nothing we understand.
pub fn detect_qemu_version(binary: &str) -> Option<QemuVersion> {
    let output = Command::new(binary).arg("--version").output().ok()?;
    parse_qemu_version(&String::from_utf8_lossy(&output.stdout))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]);

    fn stream(reconnect: Reconnect) -> Vec<String> {
        qemu_args(&Attachment {
            netdev: Netdev::Stream,
            id: "vnet0",
            model: "virtio-net-pci",
            mac: MAC,
            vnet_socket: Path::new("/run/vnet/vmnet1/stream.sock"),
            local_socket: None,
            reconnect,
        })
    }

    #[test]
    fn stream_arguments_for_a_current_qemu_reconnect_in_milliseconds() {
        assert_eq!(
            stream(Reconnect::Millis(1000)),
            [
                "-netdev",
                "stream,id=vnet0,server=off,reconnect-ms=1000,addr.type=unix,addr.path=/run/vnet/vmnet1/stream.sock",
                "-device",
                "virtio-net-pci,netdev=vnet0,mac=52:54:00:12:34:56",
            ]
        );
    }

    #[test]
    fn older_qemus_get_the_option_they_know() {
        assert!(stream(Reconnect::Seconds(1))[1].contains(",server=off,reconnect=1,addr."));
        assert_eq!(
            stream(Reconnect::Never)[1],
            "stream,id=vnet0,server=off,addr.type=unix,addr.path=/run/vnet/vmnet1/stream.sock"
        );
        let v = |major, minor| Some(QemuVersion { major, minor });
        assert_eq!(Reconnect::for_version(v(10, 0)), Reconnect::Millis(1000));
        assert_eq!(Reconnect::for_version(v(9, 2)), Reconnect::Millis(1000));
        assert_eq!(Reconnect::for_version(v(9, 1)), Reconnect::Seconds(1));
        assert_eq!(Reconnect::for_version(v(8, 0)), Reconnect::Seconds(1));
        assert_eq!(Reconnect::for_version(v(7, 2)), Reconnect::Never);
        assert_eq!(Reconnect::for_version(None), Reconnect::Never);
    }

    #[test]
    fn dgram_arguments_name_both_ends() {
        let args = qemu_args(&Attachment {
            netdev: Netdev::Dgram,
            id: "net1",
            model: "e1000",
            mac: MAC,
            vnet_socket: Path::new("/run/vnet/lan,10/dgram.sock"),
            local_socket: Some(Path::new("/tmp/vnet-lan-0a0b0c0d.sock")),
            reconnect: Reconnect::Millis(1000),
        });
        assert_eq!(
            args,
            [
                "-netdev",
                "dgram,id=net1,local.type=unix,local.path=/tmp/vnet-lan-0a0b0c0d.sock,remote.type=unix,remote.path=/run/vnet/lan,,10/dgram.sock",
                "-device",
                "e1000,netdev=net1,mac=52:54:00:12:34:56",
            ]
        );
    }

    #[test]
    fn vde_arguments_name_the_switch_directory() {
        let dir = vde_dir(Path::new("/run/vnet/lab/stream.sock"));
        assert_eq!(dir, Path::new("/run/vnet/lab/vde"));
        let args = qemu_args(&Attachment {
            netdev: Netdev::Vde,
            id: "vnet0",
            model: "e1000",
            mac: MAC,
            vnet_socket: &dir,
            local_socket: None,
            reconnect: Reconnect::Never,
        });
        assert_eq!(
            args,
            [
                "-netdev",
                "vde,id=vnet0,sock=/run/vnet/lab/vde",
                "-device",
                "e1000,netdev=vnet0,mac=52:54:00:12:34:56",
            ]
        );
    }

    #[test]
    fn tap_arguments_leave_the_tap_to_vnet() {
        assert_eq!(
            tap_args("vnet0", "virtio-net-pci", MAC, "lab-vm1"),
            [
                "-netdev",
                "tap,id=vnet0,ifname=lab-vm1,script=no,downscript=no",
                "-device",
                "virtio-net-pci,netdev=vnet0,mac=52:54:00:12:34:56",
            ]
        );
    }

    #[test]
    fn shell_line_quotes_only_what_needs_it() {
        let args = [
            "-netdev".to_string(),
            "a,b=c".into(),
            "it's here".into(),
            String::new(),
        ];
        assert_eq!(shell_line(&args), r"-netdev a,b=c 'it'\''s here' ''");
    }

    #[test]
    fn random_macs_are_qemu_style_unicast_and_differ() {
        let a = random_mac();
        assert_eq!(a.0[..3], [0x52, 0x54, 0x00]);
        assert!(a.is_learnable());
        assert!((0..8).any(|_| random_mac() != a));
        assert_ne!(dgram_local_path("x"), dgram_local_path("x"));
        assert!(dgram_local_path("vmnet8")
            .to_string_lossy()
            .contains("vnet-vmnet8-"));
    }

    #[test]
    fn qemu_ids_follow_qemus_rule() {
        assert!(is_valid_id("vnet0"));
        assert!(is_valid_id("n.e-t_1"));
        assert!(!is_valid_id("0net"));
        assert!(!is_valid_id("a,b"));
        assert!(!is_valid_id(""));
    }

    #[test]
    fn reads_qemus_version_line() {
        let v = parse_qemu_version(
            "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright …",
        );
        assert_eq!(v, Some(QemuVersion { major: 7, minor: 2 }));
        assert_eq!(
            parse_qemu_version("QEMU emulator version 10.0.2"),
            Some(QemuVersion {
                major: 10,
                minor: 0
            })
        );
        assert_eq!(parse_qemu_version("something else"), None);
    }
}
