//! Who may attach, end to end: a vnet's `allow_users`/`allow_groups` let in only the
//! listed uids, members of the listed groups, root and vnetd's uid, on every data
//! socket (stream, api, dgram, VDE, vhost-user, the classic device) and through the
//! control API; others are closed at once, logged and counted. Each port records the
//! uid that made it; `[limits] ports_per_uid` bounds what one uid holds.
//!
//! Clients run as other uids (numeric: no user database needed) under `setpriv`: a
//! small python3 program driven line by line, `vde_plug`, `curl`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use vnet_control::{PortInfo, PortKind};
use vnet_testbed::api::{client, ports, refusals, wait_ports, wait_refusals};
use vnet_testbed::frames::{broadcast, mac};
use vnet_testbed::scripted::{setpriv, Scripted};
use vnet_testbed::{skip_unless, skip_unless_root, wait_for, Daemon};

/// The user group (the sockets' group), and a group the vnet allows.
const USERS: u32 = 64_311;
const LAB: u32 = 64_312;
/// Listed in `allow_users`.
const ALICE: u32 = 64_301;
/// A member of `LAB`.
const BOB: u32 = 64_302;
/// Neither: refused.
const MALLORY: u32 = 64_303;

const T: Duration = Duration::from_secs(10);

/// A daemon whose user group is [`USERS`], with vnet `lab` narrowed to [`ALICE`] and
/// group [`LAB`], and `extra` config; its run directory is reachable by other uids.
fn daemon(extra: &str) -> Daemon {
    let d = Daemon::builder()
        .config(&format!(
            "[access]\nuser_group = \"{USERS}\"\n{extra}\n\n\
             [[network]]\nname = \"lab\"\nallow_users = [{ALICE}]\nallow_groups = [\"{LAB}\"]\n\n\
             [[network]]\nname = \"open\"\n"
        ))
        .start();
    let base = d.run_dir().parent().unwrap();
    std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// A client in a python3 process running as `uid` (primary group `gid`, supplementary
/// `groups`), driven line by line: `stream PATH`, `seqpacket PATH` (connect),
/// `dgram OWN PATH` (bind OWN, send to PATH), `send HEX` (one frame), `recv SECS` (the
/// next frame in hex, `none`, or `closed` once the daemon closed the connection),
/// `open PATH` (a classic device). Errors print `error ERRNO-NAME`.
struct Peer(Scripted);

const PEER: &str = r#"
import errno, os, socket, struct, sys
s, kind, target, files = None, None, None, []
def read_exact(n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data
def recv(secs):
    s.settimeout(secs)
    try:
        if kind == "stream":
            head = read_exact(4)
            body = head and read_exact(struct.unpack(">I", head)[0])
            return "closed" if body is None else body.hex()
        while True:
            m = s.recv(65536)
            if kind == "dgram":
                return m.hex()
            if not m:
                return "closed"
            if m[0] == 0:
                return m[1:].hex()
    except socket.timeout:
        return "none"
    except ConnectionResetError:
        return "closed"
for line in sys.stdin:
    cmd, *args = line.split()
    out = "ok"
    try:
        if cmd in ("stream", "seqpacket"):
            kind = cmd
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM if cmd == "stream" else socket.SOCK_SEQPACKET)
            s.connect(args[0])
        elif cmd == "dgram":
            kind, target = "dgram", args[1]
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            s.bind(args[0])
        elif cmd == "send":
            data = bytes.fromhex(args[0])
            if kind == "stream":
                s.sendall(struct.pack(">I", len(data)) + data)
            elif kind == "seqpacket":
                s.send(b"\0" + data)
            else:
                s.sendto(data, target)
        elif cmd == "recv":
            out = recv(float(args[0]))
        elif cmd == "open":
            files.append(os.open(args[0], os.O_RDWR))
    except OSError as e:
        out = "error " + errno.errorcode.get(e.errno, str(e.errno))
    print(out, flush=True)
"#;

impl Peer {
    fn spawn(uid: u32, gid: u32, groups: &[u32]) -> Peer {
        Peer(Scripted::spawn(uid, gid, groups, Path::new("/"), PEER))
    }

    fn cmd(&mut self, line: &str) -> String {
        self.0.cmd(line)
    }

    fn ok(&mut self, line: &str) {
        assert_eq!(self.cmd(line), "ok", "{line}");
    }

    fn send(&mut self, frame: &[u8]) {
        self.ok(&format!("send {}", hex(frame)));
    }

    /// The next frame in hex within `T`, `none` or `closed`.
    fn recv(&mut self) -> String {
        self.cmd(&format!("recv {}", T.as_secs()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The only port of `kind` on `net`.
fn only(d: &Daemon, net: &str, kind: PortKind) -> PortInfo {
    wait_ports(d, net, kind, 1);
    ports(d, net).into_iter().find(|p| p.kind == kind).unwrap()
}

/// A directory of `uid`'s own, for its datagram socket.
fn dir_of(uid: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(dir.path(), Some(uid), Some(uid)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn has_tools() -> bool {
    Command::new("setpriv").arg("--version").output().is_ok()
        && Path::new("/usr/bin/python3").exists()
}

#[test]
fn a_uid_the_allow_lists_refuse_is_closed_on_every_socket_while_listed_users_and_members_attach() {
    skip_unless_root!();
    skip_unless!(has_tools(), "needs setpriv and python3");
    let d = daemon("");
    let lab = d.net_dir("lab");
    let stream = lab.join("stream.sock");
    let api = lab.join("api.sock");

    // Alice is listed; Bob is a member of the listed group (supplementary, as the
    // kernel recorded it at connect()).
    let mut alice = Peer::spawn(ALICE, ALICE, &[USERS]);
    alice.ok(&format!("stream {}", stream.display()));
    let mut bob = Peer::spawn(BOB, BOB, &[USERS, LAB]);
    bob.ok(&format!("seqpacket {}", api.display()));
    let alices = only(&d, "lab", PortKind::Stream);
    let bobs = only(&d, "lab", PortKind::Api);
    assert_eq!(alices.uid, Some(ALICE), "{alices:?}");
    assert_eq!(bobs.uid, Some(BOB), "{bobs:?}");
    assert!(alices.pid.is_some() && bobs.pid.is_some());

    // Mallory can open the sockets (group USERS) but is not on the lists.
    let mut mallory = Peer::spawn(MALLORY, MALLORY, &[USERS]);
    mallory.ok(&format!("stream {}", stream.display()));
    assert_eq!(mallory.recv(), "closed", "{}", d.log());
    let mut mallory_api = Peer::spawn(MALLORY, MALLORY, &[USERS]);
    mallory_api.ok(&format!("seqpacket {}", api.display()));
    assert_eq!(mallory_api.recv(), "closed", "{}", d.log());
    wait_refusals(&d, "net=\"lab\",limit=\"allow\"", 2);
    assert!(
        d.log()
            .contains(&format!("uid {MALLORY} may not attach to vnet \"lab\"")),
        "{}",
        d.log()
    );

    // VDE: vde_plug as Mallory is turned away at once and exits.
    let status = Command::new("setpriv")
        .args(setpriv(MALLORY, MALLORY, &[USERS]))
        .arg("vde_plug")
        .arg(lab.join("vde"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("vde_plug (Debian vde2, installed by scripts/install-test-deps) runs");
    assert!(!status.success(), "vde_plug as a refused uid ran on");
    wait_refusals(&d, "net=\"lab\",limit=\"allow\"", 3);
    let after_vde = 3;

    // Dgram: SCM_CREDENTIALS carry no supplementary groups, so a member counts by its
    // primary group here (Bob has no passwd entry for a group database lookup).
    let dgram = lab.join("dgram.sock");
    let mallory_dir = dir_of(MALLORY);
    let mut mallory_dgram = Peer::spawn(MALLORY, MALLORY, &[USERS]);
    mallory_dgram.ok(&format!(
        "dgram {} {}",
        mallory_dir.path().join("peer.sock").display(),
        dgram.display()
    ));
    // Each datagram is refused and counted (the second without a group lookup).
    mallory_dgram.send(&broadcast(mac("02:00:00:00:ad:03")));
    mallory_dgram.send(&broadcast(mac("02:00:00:00:ad:03")));
    wait_refusals(&d, "net=\"lab\",limit=\"allow\"", after_vde + 2);
    let bob_dir = dir_of(BOB);
    let mut bob_dgram = Peer::spawn(BOB, LAB, &[USERS]);
    bob_dgram.ok(&format!(
        "dgram {} {}",
        bob_dir.path().join("peer.sock").display(),
        dgram.display()
    ));
    let from_dgram = broadcast(mac("02:00:00:00:ad:02"));
    bob_dgram.send(&from_dgram);
    assert_eq!(only(&d, "lab", PortKind::Dgram).uid, Some(BOB));
    assert_eq!(alice.recv(), hex(&from_dgram), "the member's frame arrives");
    assert_eq!(bob.recv(), hex(&from_dgram));

    // Frames flow between the admitted: Alice's stream to Bob's api and dgram ports.
    let frame = broadcast(mac("02:00:00:00:ad:01"));
    alice.send(&frame);
    assert_eq!(bob.recv(), hex(&frame));
    assert_eq!(bob_dgram.recv(), hex(&frame));
    assert_eq!(refusals(&d, "net=\"lab\",limit=\"allow\""), after_vde + 2);
    assert_eq!(
        ports(&d, "lab")
            .iter()
            .filter(|p| p.uid == Some(MALLORY))
            .count(),
        0
    );

    // The unrestricted vnet takes Mallory as before.
    let mut open = Peer::spawn(MALLORY, MALLORY, &[USERS]);
    open.ok(&format!(
        "stream {}",
        d.net_dir("open").join("stream.sock").display()
    ));
    assert_eq!(only(&d, "open", PortKind::Stream).uid, Some(MALLORY));
    assert_eq!(refusals(&d, "net=\"open\",limit=\"allow\""), 0);

    // What users see: the lists in `vnet net show`, each port's uid in `vnet port ls`.
    let show = d.cli_ok(&["net", "show", "lab"]);
    assert!(show.contains(&format!("allow users    {ALICE}")), "{show}");
    assert!(show.contains(&format!("allow groups   {LAB}")), "{show}");
    let listing = d.cli_ok(&["port", "ls", "lab"]);
    assert!(
        listing
            .lines()
            .any(|l| l.contains("stream") && l.contains(&ALICE.to_string())),
        "{listing}"
    );
}

#[test]
fn the_control_api_adds_ports_for_users_the_lists_admit_and_the_vhost_user_socket_refuses_others() {
    skip_unless_root!();
    skip_unless!(
        has_tools() && Command::new("curl").arg("--version").output().is_ok(),
        "needs setpriv, python3 and curl"
    );
    let d = daemon("");
    let add = |(uid, groups): (u32, &[u32]), name: &str| {
        let spec = format!(r#"{{"kind":"vhost-user","name":"{name}"}}"#);
        let socket = d.control_socket();
        let out = Command::new("setpriv")
            .args(setpriv(uid, uid, groups))
            .args(["curl", "-sS", "--unix-socket"])
            .arg(&socket)
            .args(["-H", "content-type: application/json", "--data", &spec])
            .args(["-w", "\n%{http_code}", "http://vnet/v1/networks/lab/ports"])
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
        (status.trim().to_string(), body.to_string())
    };
    let (status, body) = add((MALLORY, &[USERS]), "mallory");
    assert_eq!(status, "403", "{body}");
    assert!(
        body.contains(&format!(
            "uid {MALLORY} may not attach to vnet \\\"lab\\\": only root, vnetd's uid, users \
             {ALICE} and members of groups {LAB} may"
        )),
        "{body}"
    );
    assert_eq!(refusals(&d, "net=\"lab\",limit=\"allow\""), 1);
    let (status, body) = add((BOB, &[USERS, LAB]), "bob");
    assert_eq!(status, "201", "{body}");
    let port: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(port["uid"], BOB, "{body}");

    // Mallory cannot be Bob's front-end either: the connection is cut at once.
    let socket = d.net_dir("lab").join("vhost-user/bob.sock");
    let mut mallory = Peer::spawn(MALLORY, MALLORY, &[USERS]);
    mallory.ok(&format!("stream {}", socket.display()));
    assert_eq!(mallory.recv(), "closed", "{}", d.log());
    wait_refusals(&d, "net=\"lab\",limit=\"allow\"", 2);
    assert!(
        d.log().contains("a vhost-user front-end of bob"),
        "{}",
        d.log()
    );
    // Bob's own front-end is let in, and the port says who is connected.
    let mut front_end = Peer::spawn(BOB, BOB, &[USERS, LAB]);
    front_end.ok(&format!("stream {}", socket.display()));
    let id = port["id"].as_u64().unwrap() as u32;
    let by_bob = format!("uid {BOB}");
    assert!(
        wait_for(T, || {
            let p = client(&d).port("lab", id).unwrap();
            p.description.contains("connected: pid") && p.description.contains(&by_bob)
        }),
        "{:?}\n{}",
        client(&d).port("lab", id),
        d.log()
    );
    assert_eq!(refusals(&d, "net=\"lab\",limit=\"allow\""), 2);
}

#[test]
fn a_uid_over_ports_per_uid_is_closed_and_counted_while_another_uid_attaches_and_frames_flow() {
    skip_unless_root!();
    skip_unless!(has_tools(), "needs setpriv and python3");
    let d = daemon("\n[limits]\nports_per_uid = 2");
    let stream = |net: &str| format!("stream {}", d.net_dir(net).join("stream.sock").display());
    // Alice's two ports, on two vnets: her maximum.
    let mut first = Peer::spawn(ALICE, ALICE, &[USERS]);
    first.ok(&stream("lab"));
    let mut second = Peer::spawn(ALICE, ALICE, &[USERS]);
    second.ok(&stream("open"));
    only(&d, "lab", PortKind::Stream);
    only(&d, "open", PortKind::Stream);
    let mut third = Peer::spawn(ALICE, ALICE, &[USERS]);
    third.ok(&stream("lab"));
    assert_eq!(third.recv(), "closed", "{}", d.log());
    wait_refusals(&d, "net=\"lab\",limit=\"ports_per_uid\"", 1);
    assert!(d.log().contains("[limits] ports_per_uid"), "{}", d.log());

    // Bob still attaches, and frames flow between him and Alice's first port.
    let mut bob = Peer::spawn(BOB, BOB, &[USERS, LAB]);
    bob.ok(&stream("lab"));
    wait_ports(&d, "lab", PortKind::Stream, 2);
    let frame = broadcast(mac("02:00:00:00:ad:11"));
    bob.send(&frame);
    assert_eq!(first.recv(), hex(&frame));
    // Root (the test) is not counted.
    let root: Vec<_> = (0..3)
        .map(|_| std::os::unix::net::UnixStream::connect(d.net_dir("lab").join("stream.sock")))
        .collect();
    wait_ports(&d, "lab", PortKind::Stream, 5);
    drop(root);

    // Alice's place comes back when one of her ports goes.
    drop(second);
    wait_ports(&d, "open", PortKind::Stream, 0);
    let mut again = Peer::spawn(ALICE, ALICE, &[USERS]);
    again.ok(&stream("open"));
    assert_eq!(only(&d, "open", PortKind::Stream).uid, Some(ALICE));
    assert_eq!(refusals(&d, "net=\"lab\",limit=\"ports_per_uid\""), 1);
}

#[test]
fn a_uid_the_allow_lists_refuse_cannot_open_the_classic_device_a_listed_one_can() {
    skip_unless_root!();
    skip_unless!(Path::new("/dev/fuse").exists(), "needs /dev/fuse");
    skip_unless!(has_tools(), "needs setpriv and python3");
    let d = daemon("");
    let dev = d.run_dir().join("dev/lab");
    assert!(
        wait_for(T, || dev.exists()),
        "{} never appeared\n{}",
        dev.display(),
        d.log()
    );
    // The device is vnetd's (root's), mode 0660: both are in its group; the lists
    // decide. The FUSE request says the opener's uid and gid only.
    let mut mallory = Peer::spawn(MALLORY, MALLORY, &[0]);
    assert_eq!(
        mallory.cmd(&format!("open {}", dev.display())),
        "error EACCES"
    );
    wait_refusals(&d, "net=\"lab\",limit=\"allow\"", 1);
    let mut alice = Peer::spawn(ALICE, ALICE, &[0]);
    alice.ok(&format!("open {}", dev.display()));
    let port = only(&d, "lab", PortKind::Device);
    assert_eq!(port.uid, Some(ALICE), "{port:?}");
    assert!(port.pid.is_some());
}
