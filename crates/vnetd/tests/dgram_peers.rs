//! Who may be a dgram peer, and where its frames go. vnetd (root) sends a peer's frames
//! to the path it sent from, so that path must be absolute and name the sender's own
//! socket, checked once and pinned: swapping it for a symlink afterwards must not make
//! root write vnet traffic into another user's socket.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

use vnet_control::PortKind;
use vnet_testbed::api::{count_kind, daemon_with, wait_ports};
use vnet_testbed::frames::{broadcast, frame, mac};
use vnet_testbed::scripted::Scripted;
use vnet_testbed::{skip_unless_root, wait_for, Daemon};

/// The unprivileged user that attacks (and, elsewhere, is an honest peer).
const USER: u32 = 64980;

/// A unix datagram socket in a python3 process running as `uid`, driven line by line:
/// `bind PATH`, `send HEX PATH`, `swap PATH TARGET` (the path becomes a symlink),
/// `recv SECS` (prints the datagram in hex, or `none`).
struct Peer(Scripted);

const PEER: &str = r#"
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
for line in sys.stdin:
    cmd, *args = line.split()
    out = "ok"
    if cmd == "bind":
        s.bind(args[0])
    elif cmd == "send":
        s.sendto(bytes.fromhex(args[0]), args[1])
    elif cmd == "swap":
        os.unlink(args[0])
        os.symlink(args[1], args[0])
    elif cmd == "recv":
        s.settimeout(float(args[0]))
        try:
            out = s.recv(65536).hex()
        except socket.timeout:
            out = "none"
    print(out, flush=True)
"#;

impl Peer {
    /// As `uid`, with its own uid as group and no others.
    fn spawn(uid: u32, cwd: &Path) -> Peer {
        Peer(Scripted::spawn(uid, uid, &[], cwd, PEER))
    }

    fn cmd(&mut self, line: &str) -> String {
        self.0.cmd(line)
    }

    fn send(&mut self, datagram: &[u8], to: &Path) {
        let hex: String = datagram.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(self.cmd(&format!("send {hex} {}", to.display())), "ok");
    }

    /// The next datagram (in hex) within `secs`, or `none`.
    fn recv(&mut self, secs: f32) -> String {
        self.cmd(&format!("recv {secs}"))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Lets `uid` reach `net`'s `dgram.sock` (through the daemon's run directory).
fn open_dgram_to(d: &Daemon, net: &str, uid: u32) {
    use std::os::unix::fs::PermissionsExt;
    let base = d.run_dir().parent().unwrap();
    for p in [base, d.run_dir()] {
        let mode = std::fs::metadata(p).unwrap().permissions().mode();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode | 0o011)).unwrap();
    }
    std::os::unix::fs::chown(d.net_dir(net).join("dgram.sock"), None, Some(uid)).unwrap();
}

/// A directory of `uid`'s own.
fn dir_of(uid: u32) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(dir.path(), Some(uid), Some(uid)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[test]
fn a_relative_sender_gets_no_port_and_an_honest_peer_works_both_ways() {
    skip_unless_root!();
    let d = daemon_with(&["lab"]);
    open_dgram_to(&d, "lab", USER);
    let dgram = d.net_dir("lab").join("dgram.sock");

    // A relative sender's path would be resolved against vnetd's working directory.
    let rel_dir = dir_of(USER);
    let mut rel = Peer::spawn(USER, rel_dir.path());
    assert_eq!(rel.cmd("bind rel.sock"), "ok");
    rel.send(&broadcast(mac("02:00:00:00:1d:01")), &dgram);

    // An honest unprivileged peer, QEMU-like: its own socket at an absolute path.
    let honest_dir = dir_of(USER);
    let honest_path = honest_dir.path().join("qemu.sock");
    let mut honest = Peer::spawn(USER, honest_dir.path());
    assert_eq!(honest.cmd(&format!("bind {}", honest_path.display())), "ok");
    let honest_mac = mac("02:00:00:00:1d:02");
    honest.send(&broadcast(honest_mac), &dgram);
    // The datagrams are read in order: the relative one came first and made no port.
    wait_ports(&d, "lab", PortKind::Dgram, 1);
    assert!(
        wait_for(Duration::from_secs(5), || d
            .log()
            .contains("rel.sock is not an absolute path")),
        "{}",
        d.log()
    );

    // Root's own peer talks with the honest one, both ways.
    let root_dir = tempfile::tempdir().unwrap();
    let root_peer = UnixDatagram::bind(root_dir.path().join("root.sock")).unwrap();
    root_peer
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let root_mac = mac("02:00:00:00:1d:03");
    let to_honest = frame(honest_mac, root_mac, 80);
    root_peer.send_to(&to_honest, &dgram).unwrap();
    wait_ports(&d, "lab", PortKind::Dgram, 2);
    assert_eq!(honest.recv(5.0), hex(&to_honest), "{}", d.log());
    let to_root = frame(root_mac, honest_mac, 90);
    honest.send(&to_root, &dgram);
    let mut buf = [0u8; 2048];
    let n = root_peer.recv(&mut buf).expect("the honest peer's frame");
    assert_eq!(&buf[..n], &to_root[..]);
    assert_eq!(count_kind(&d, "lab", PortKind::Dgram), 2, "{}", d.log());
}

#[test]
fn a_dgram_peer_cannot_redirect_root_s_frames_to_another_socket() {
    skip_unless_root!();
    let d = daemon_with(&["lab"]);
    open_dgram_to(&d, "lab", USER);
    let dgram = d.net_dir("lab").join("dgram.sock");
    let mut buf = [0u8; 2048];

    // Root's own peer, to make traffic.
    let root_dir = tempfile::tempdir().unwrap();
    let root_peer = UnixDatagram::bind(root_dir.path().join("root.sock")).unwrap();
    root_peer
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let root_mac = mac("02:00:00:00:1d:03");
    root_peer.send_to(&broadcast(root_mac), &dgram).unwrap();
    wait_ports(&d, "lab", PortKind::Dgram, 1);

    // The victim: a socket of another user (root here), which vnetd can reach.
    let victim_dir = tempfile::tempdir().unwrap();
    let victim_path = victim_dir.path().join("victim.sock");
    let victim = UnixDatagram::bind(&victim_path).unwrap();
    victim.set_nonblocking(true).unwrap();

    // The attacker becomes a port with its own socket, then swaps the path for a
    // symlink to the victim's.
    let attacker_dir = dir_of(USER);
    let attacker_path = attacker_dir.path().join("a.sock");
    let mut attacker = Peer::spawn(USER, attacker_dir.path());
    assert_eq!(
        attacker.cmd(&format!("bind {}", attacker_path.display())),
        "ok"
    );
    attacker.send(&broadcast(mac("02:00:00:00:1d:04")), &dgram);
    wait_ports(&d, "lab", PortKind::Dgram, 2);
    // Root's peer saw its broadcast.
    root_peer.recv(&mut buf).expect("the attacker's broadcast");
    assert_eq!(
        attacker.cmd(&format!(
            "swap {} {}",
            attacker_path.display(),
            victim_path.display()
        )),
        "ok"
    );

    // Traffic toward the attacker's port: a broadcast from root's peer.
    let flood = broadcast(root_mac);
    root_peer.send_to(&flood, &dgram).unwrap();
    // The pinned socket (the attacker's own) gets it; the victim gets nothing.
    assert_eq!(attacker.recv(5.0), hex(&flood), "{}", d.log());
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        victim.recv(&mut buf).is_err(),
        "the victim's socket got a frame"
    );
    assert_eq!(count_kind(&d, "lab", PortKind::Dgram), 2, "{}", d.log());

    // A new sender whose path is already a symlink to the victim gets no port.
    let mut sneak = Peer::spawn(USER, attacker_dir.path());
    let sneak_path = attacker_dir.path().join("b.sock");
    assert_eq!(sneak.cmd(&format!("bind {}", sneak_path.display())), "ok");
    assert_eq!(
        sneak.cmd(&format!(
            "swap {} {}",
            sneak_path.display(),
            victim_path.display()
        )),
        "ok"
    );
    sneak.send(&broadcast(mac("02:00:00:00:1d:05")), &dgram);
    assert!(
        wait_for(Duration::from_secs(5), || d
            .log()
            .contains("b.sock is not a socket")),
        "{}",
        d.log()
    );
    root_peer.send_to(&flood, &dgram).unwrap();
    assert_eq!(attacker.recv(5.0), hex(&flood));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        victim.recv(&mut buf).is_err(),
        "the victim's socket got a frame"
    );
    assert_eq!(count_kind(&d, "lab", PortKind::Dgram), 2, "{}", d.log());
}
