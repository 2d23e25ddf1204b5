//! Every vnet is a VDE switch at `RUN/NET/vde`: Debian's `vde_plug` (by path, by
//! `vde://` URL, and plugged into a TAP in a namespace) and a QEMU guest with
//! `-netdev vde` exchange frames with namespace VMs on TAP ports. Bad handshakes close
//! only their own connection, with the reason in the log.

use std::io::{Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vnet_control::{PortInfo, PortKind};
use vnet_testbed::api::{drops, find_kind, port, ports, still_serving, tap_vm, wait_ports};
use vnet_testbed::frames::{arp_request, ip, is_arp_reply, mac};
use vnet_testbed::{
    payload, skip_unless, skip_unless_root, unique_name, wait_for, ChildGuard, Daemon, Guest,
    Netdev, NsVm,
};

const T: Duration = Duration::from_secs(60);

fn daemon(net: &str, mtu: u32) -> Daemon {
    Daemon::start(Some(&format!(
        "[[network]]\nname = \"{net}\"\nmtu = {mtu}\n"
    )))
}

fn vde_dir(d: &Daemon, net: &str) -> PathBuf {
    d.net_dir(net).join("vde")
}

/// Files in the VDE directory other than `ctl` and the clients' own sockets
/// (dot files): the data sockets of open ports.
fn data_sockets(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "ctl" && !n.starts_with('.'))
        .collect()
}

fn vde_ports(d: &Daemon, net: &str) -> Vec<PortInfo> {
    ports(d, net)
        .into_iter()
        .filter(|p| p.kind == PortKind::Vde)
        .collect()
}

/// Waits until `net` has exactly one VDE port and its handshake is done.
fn wait_vde_port(d: &Daemon, net: &str) -> PortInfo {
    let ok = wait_for(Duration::from_secs(10), || {
        let p = vde_ports(d, net);
        p.len() == 1 && !p[0].description.contains("awaiting")
    });
    assert!(ok, "no VDE port on {net}: {:?}\n{}", ports(d, net), d.log());
    vde_ports(d, net).remove(0)
}

/// `vde_plug URL` with its stdio plumbed: vdeplug4 frames each packet on stdin/stdout
/// with a 2-byte big-endian length (libvdestream).
struct StdioPlug {
    child: Child,
    stdin: Option<ChildStdin>,
    frames: mpsc::Receiver<Vec<u8>>,
}

impl StdioPlug {
    /// Runs `vde_plug ARGS`, as user `uid` if given.
    fn spawn(args: &[&str], uid: Option<u32>) -> StdioPlug {
        let mut cmd = match uid {
            None => Command::new("vde_plug"),
            Some(uid) => {
                let mut c = Command::new("setpriv");
                c.args([
                    &format!("--reuid={uid}"),
                    &format!("--regid={uid}"),
                    "--clear-groups",
                    "vde_plug",
                ]);
                c
            }
        };
        let mut child = cmd
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("vde_plug (Debian package vdeplug) runs");
        let mut out = child.stdout.take().unwrap();
        let (tx, frames) = mpsc::channel();
        std::thread::spawn(move || loop {
            let mut len = [0u8; 2];
            if out.read_exact(&mut len).is_err() {
                return;
            }
            let mut f = vec![0; u16::from_be_bytes(len) as usize];
            if out.read_exact(&mut f).is_err() || tx.send(f).is_err() {
                return;
            }
        });
        StdioPlug {
            stdin: child.stdin.take(),
            child,
            frames,
        }
    }

    fn send(&mut self, frame: &[u8]) {
        let mut record = (frame.len() as u16).to_be_bytes().to_vec();
        record.extend_from_slice(frame);
        self.stdin.as_mut().unwrap().write_all(&record).unwrap();
    }

    /// Asks `vm` for its MAC through the plug until it answers.
    fn arp(&mut self, vm: &NsVm, my_mac: [u8; 6], my_ip: [u8; 4]) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            self.send(&arp_request(my_mac, my_ip, ip(vm.ip())));
            let until = Instant::now() + Duration::from_secs(1);
            while let Some(left) = until.checked_duration_since(Instant::now()) {
                match self.frames.recv_timeout(left) {
                    Ok(f) if is_arp_reply(&f, my_mac, ip(vm.ip())) => {
                        assert_eq!(f[6..12], mac(vm.mac()), "the reply comes from the VM");
                        return true;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
        false
    }

    /// Closes stdin: vde_plug leaves, closing its VDE connection.
    fn close(mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("vde_plug did not exit when its stdin closed");
    }
}

impl Drop for StdioPlug {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn vde_plug_by_path_and_by_url_exchanges_frames_with_a_namespace_vm() {
    skip_unless_root!();
    let d = daemon("lab", 1500);
    let dir = vde_dir(&d, "lab");
    let (_, vm) = tap_vm(&d, "lab", "02:00:00:00:0d:01", "10.75.0.1/24");

    let by_url = format!("vde://{}", dir.display());
    for (i, url) in [dir.to_string_lossy().into_owned(), by_url]
        .iter()
        .enumerate()
    {
        let descr = format!("plug-{i}");
        let mut plug = StdioPlug::spawn(&["-D", &descr, url], None);
        let p = wait_vde_port(&d, "lab");
        assert!(p.description.contains(&descr), "{p:?}");
        assert!(p.description.contains("vde_plug"), "peer named: {p:?}");
        assert_eq!(data_sockets(&dir).len(), 1, "one data socket per port");

        let me = [0x02, 0, 0, 0, 0x0d, 0x90 + i as u8];
        assert!(
            plug.arp(&vm, me, ip(&format!("10.75.0.{}", 90 + i))),
            "no ARP reply through `vde_plug {url}`\n{}",
            d.log()
        );
        let p = port(&d, "lab", p.id);
        assert!(
            p.counters.rx_frames >= 1 && p.counters.tx_frames >= 1,
            "{p:?}"
        );
        assert_eq!(p.macs.len(), 1, "the switch learned the plug's MAC: {p:?}");

        // `vnet port ls` shows it too.
        let listing = d.cli_ok(&["port", "ls", "lab"]);
        assert!(
            listing.contains("vde") && listing.contains(&descr),
            "{listing}"
        );

        plug.close();
        wait_ports(&d, "lab", PortKind::Vde, 0);
        assert!(
            data_sockets(&dir).is_empty(),
            "the data socket goes with its port: {:?}",
            data_sockets(&dir)
        );
        assert!(
            d.log().contains("client closed the control connection"),
            "{}",
            d.log()
        );
    }
}

/// `vde_plug RUN/NET/vde tap://IF` joins the vnet to a TAP that vde_plug creates; in a
/// namespace it is a VM with a real IP stack. Jumbo frames cross (VDE's old limit was
/// 1518 bytes; a vnet's is its own).
#[test]
fn a_namespace_behind_vde_plug_pings_a_tap_vm_with_jumbo_frames() {
    skip_unless_root!();
    let d = daemon("lab", 9000);
    let dir = vde_dir(&d, "lab");
    let (_, a) = tap_vm(&d, "lab", "02:00:00:00:0d:11", "10.75.1.1/24");

    let tap = unique_name("vdet");
    let mut cmd = Command::new("vde_plug");
    cmd.args([dir.to_str().unwrap(), &format!("tap://{tap}")]);
    let plug = ChildGuard::spawn(cmd, "vde_plug VDE tap://").expect("vde_plug runs");
    assert!(
        wait_for(Duration::from_secs(10), || Command::new("ip")
            .args(["link", "show", &tap])
            .output()
            .is_ok_and(|o| o.status.success())),
        "vde_plug created no TAP {tap}: {}",
        plug.log()
    );
    let b = NsVm::attach(&tap, "02:00:00:00:0d:12", "10.75.1.2/24");
    let p = wait_vde_port(&d, "lab");

    assert!(
        wait_for(Duration::from_secs(20), || b.ping(a.ip(), 2)),
        "no ping over VDE:\n{}\n{}",
        plug.log(),
        d.log()
    );
    assert!(a.ping(b.ip(), 3), "and back");

    for vm in [&a, &b] {
        vm.ns()
            .exec_ok(&["ip", "link", "set", "dev", vm.ifname(), "mtu", "9000"]);
    }
    let jumbo = b.ns().exec(&[
        "ping",
        "-n",
        "-q",
        "-c",
        "3",
        "-i",
        "0.2",
        "-W",
        "2",
        "-M",
        "do",
        "-s",
        "8000",
        a.ip(),
    ]);
    assert!(
        jumbo.status.success(),
        "8028-byte pings over VDE: {}\n{}",
        String::from_utf8_lossy(&jumbo.stdout),
        d.log()
    );
    let p = port(&d, "lab", p.id);
    assert_eq!(drops(&p, "oversize"), 0, "{p:?}");
    assert!(p.counters.rx_bytes > 3 * 8000, "{p:?}");

    drop(plug);
    wait_ports(&d, "lab", PortKind::Vde, 0);
    drop(b);
}

fn qemu_has_vde() -> bool {
    Command::new("qemu-system-x86_64")
        .args(["-netdev", "help"])
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == "vde")
        })
}

#[test]
fn a_qemu_guest_on_netdev_vde_pings_a_namespace_vm() {
    skip_unless_root!();
    skip_unless!(
        qemu_has_vde(),
        "qemu-system-x86_64 is built without VDE (`-netdev help` lists no vde)"
    );
    let d = daemon("lab", 1500);
    let (_, vm) = tap_vm(&d, "lab", "02:00:00:00:0d:21", "10.75.2.1/24");
    let guest = Guest::builder()
        .name("vde")
        .nic_with_mac(
            Netdev::Vde {
                sock: vde_dir(&d, "lab"),
            },
            "52:54:00:00:0d:22",
        )
        .static_ip(0, "10.75.2.2/24")
        .boot()
        .expect("the -netdev vde guest boots");

    guest.exec_ok("ping -c 3 -W 3 10.75.2.1", T);
    assert!(vm.ping("10.75.2.2", 3), "namespace VM → VDE guest");

    let p = find_kind(&d, "lab", PortKind::Vde).expect("a VDE port");
    assert!(p.description.contains("QEMU"), "{p:?}");
    assert!(
        p.counters.rx_frames >= 3 && p.counters.tx_frames >= 3,
        "{p:?}"
    );
    assert_eq!(p.macs.len(), 1, "{p:?}");

    drop(guest);
    wait_ports(&d, "lab", PortKind::Vde, 0);
}

const NOBODY: u32 = 65534;

/// Lets user `nobody` reach `net`'s VDE switch through group `nogroup`, as an admin
/// gives users access through the daemon's group.
fn open_to_nobody(d: &Daemon, net: &str) {
    use std::os::unix::fs::PermissionsExt;
    let base = d.run_dir().parent().unwrap();
    for p in [base, d.run_dir()] {
        let mode = std::fs::metadata(p).unwrap().permissions().mode();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode | 0o011)).unwrap();
    }
    let dir = vde_dir(d, net);
    for p in [dir.clone(), dir.join("ctl")] {
        std::os::unix::fs::chown(p, None, Some(NOBODY)).unwrap();
    }
}

/// Another user attaches with a socket of its own, which becomes that user's alone;
/// naming somebody else's socket is refused.
#[test]
fn other_users_attach_with_their_own_sockets_only() {
    skip_unless_root!();
    let d = daemon("lab", 1500);
    let dir = vde_dir(&d, "lab");
    let (_, vm) = tap_vm(&d, "lab", "02:00:00:00:0d:71", "10.75.7.1/24");
    open_to_nobody(&d, "lab");

    let mut plug = StdioPlug::spawn(&[dir.to_str().unwrap()], Some(NOBODY));
    let p = wait_vde_port(&d, "lab");
    assert!(p.description.contains(&format!("uid {NOBODY}")), "{p:?}");
    let data = dir.join(&data_sockets(&dir)[0]);
    let meta = std::fs::metadata(&data).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), NOBODY);
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o077,
        0,
        "{data:?} is nobody's alone"
    );
    assert!(
        plug.arp(&vm, [0x02, 0, 0, 0, 0x0d, 0x72], [10, 75, 7, 2]),
        "no ARP reply to nobody's vde_plug\n{}",
        d.log()
    );
    plug.close();
    wait_ports(&d, "lab", PortKind::Vde, 0);

    // nobody names root's socket: the vnet would send frames into it.
    let sock_dir = tempfile::tempdir().unwrap();
    let roots = sock_dir.path().join("root.sock");
    let _roots = UnixDatagram::bind(&roots).unwrap();
    let mut socat = Command::new("setpriv")
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "socat",
            "-t",
            "5",
            "STDIO",
            &format!("UNIX-CONNECT:{}", dir.join("ctl").display()),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("socat runs");
    socat
        .stdin
        .take()
        .unwrap()
        .write_all(&request(0xfeed_face, 3, &roots, "sneaky"))
        .unwrap();
    let out = socat.wait_with_output().unwrap();
    assert!(
        out.stdout.is_empty(),
        "no answer for nobody: {:?}",
        out.stdout
    );
    let why = format!("belongs to uid 0, not to the connecting uid {NOBODY}");
    assert!(
        wait_for(Duration::from_secs(5), || d.log().contains(&why)),
        "{}",
        d.log()
    );
    wait_ports(&d, "lab", PortKind::Vde, 0);
}

// ----- hostile and hand-made clients -------------------------------------------------

/// A request laid out as libvdeplug's packed C structures are, in host byte order:
/// v3 = magic, version, type, sockaddr_un, description; v1 = magic, type, MAC,
/// sockaddr_un, description.
fn request(magic: u32, version: u32, path: &Path, description: &str) -> Vec<u8> {
    let mut r = magic.to_ne_bytes().to_vec();
    if version == 1 {
        r.extend_from_slice(&0u32.to_ne_bytes());
        r.extend_from_slice(&[0; 6]);
    } else {
        r.extend_from_slice(&version.to_ne_bytes());
        r.extend_from_slice(&0u32.to_ne_bytes());
    }
    r.extend_from_slice(&1u16.to_ne_bytes());
    let mut sun_path = [0u8; 108];
    let p = path.as_os_str().as_encoded_bytes();
    sun_path[..p.len()].copy_from_slice(p);
    r.extend_from_slice(&sun_path);
    r.extend_from_slice(description.as_bytes());
    r
}

/// Sends `bytes` on a fresh control connection and expects the daemon to close it,
/// logging `why`.
fn refused(d: &Daemon, bytes: &[u8], why: &str) {
    let mut ctl = UnixStream::connect(vde_dir(d, "lab").join("ctl")).unwrap();
    ctl.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    ctl.write_all(bytes).unwrap();
    let mut buf = [0u8; 256];
    let n = ctl.read(&mut buf);
    assert!(
        matches!(n, Ok(0)) || n.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the daemon should close a connection that sent {} bytes ({why})\n{}",
        bytes.len(),
        d.log()
    );
    assert!(
        wait_for(Duration::from_secs(5), || d.log().contains(why)),
        "log should say {why:?}:\n{}",
        d.log()
    );
}

#[test]
fn bad_vde_handshakes_drop_only_their_own_port() {
    skip_unless_root!();
    let d = daemon("lab", 1500);
    let dir = vde_dir(&d, "lab");
    let (_, a) = tap_vm(&d, "lab", "02:00:00:00:0d:31", "10.75.3.1/24");
    let (_, b) = tap_vm(&d, "lab", "02:00:00:00:0d:32", "10.75.3.2/24");
    still_serving(&d, &a, &b);

    let sock_dir = tempfile::tempdir().unwrap();
    let client_path = sock_dir.path().join("c");
    let _client = UnixDatagram::bind(&client_path).unwrap();

    refused(
        &d,
        &request(0x1234_5678, 3, &client_path, "x"),
        "bad magic 0x12345678",
    );
    refused(
        &d,
        &request(0xfeed_face, 2, &client_path, "x"),
        "VDE protocol version 2 is not supported",
    );
    refused(
        &d,
        &request(0xfeed_face, 7, &client_path, "x"),
        "VDE protocol version 7 is not supported",
    );
    refused(
        &d,
        &request(0xfeed_face_u32.swap_bytes(), 3, &client_path, "x"),
        "byte-swapped magic",
    );
    // 0x5a5a... never starts the magic: refused at the first bytes.
    refused(&d, &payload::junk(4096, 7), "not a VDE client");
    refused(&d, b"GET / HTTP/1.1\r\n\r\n", "not a VDE client");
    refused(
        &d,
        &request(0xfeed_face, 3, Path::new("/nonexistent/sock"), "x"),
        "cannot open the client's data socket /nonexistent/sock",
    );
    refused(
        &d,
        &request(0xfeed_face, 3, Path::new("relative/sock"), "x"),
        "is not an absolute path",
    );
    refused(
        &d,
        &request(0xfeed_face, 3, sock_dir.path(), "x"),
        "is not a socket",
    );
    still_serving(&d, &a, &b);

    // Truncated: half a request, then the client leaves.
    {
        let mut ctl = UnixStream::connect(dir.join("ctl")).unwrap();
        ctl.write_all(&request(0xfeed_face, 3, &client_path, "")[..50])
            .unwrap();
        wait_ports(&d, "lab", PortKind::Vde, 1);
        assert!(vde_ports(&d, "lab")[0].description.contains("awaiting"));
    }
    assert!(wait_for(Duration::from_secs(5), || d
        .log()
        .contains("truncated request: 50 bytes")));
    // A client that connects and disappears.
    drop(UnixStream::connect(dir.join("ctl")).unwrap());
    assert!(wait_for(Duration::from_secs(5), || d
        .log()
        .contains("before its request")));
    // Many that come and go at once, some mid-request.
    for seed in 1..=20u64 {
        let mut ctl = UnixStream::connect(dir.join("ctl")).unwrap();
        let r = request(0xfeed_face, 3, &client_path, "burst");
        let _ = ctl.write_all(&r[..(seed as usize * 7) % r.len()]);
    }
    wait_ports(&d, "lab", PortKind::Vde, 0);
    assert!(data_sockets(&dir).is_empty(), "{:?}", data_sockets(&dir));
    still_serving(&d, &a, &b);
    assert!(
        d.log().contains("bad magic") && !d.log().contains("panicked"),
        "{}",
        d.log()
    );
}

/// A client written from the C structures, connected: its control connection, its data
/// socket (connected to the port's) and the port's data socket path.
struct Client {
    ctl: UnixStream,
    data: UnixDatagram,
    theirs: PathBuf,
    _dir: tempfile::TempDir,
}

impl Client {
    fn connect(vde_dir: &Path, version: u32, descr: &str) -> Client {
        let dir = tempfile::tempdir().unwrap();
        let mine = dir.path().join("data");
        let data = UnixDatagram::bind(&mine).unwrap();
        let mut ctl = UnixStream::connect(vde_dir.join("ctl")).unwrap();
        ctl.write_all(&request(0xfeed_face, version, &mine, descr))
            .unwrap();
        // The answer: a whole struct sockaddr_un naming the port's data socket.
        let mut reply = [0u8; 110];
        ctl.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        ctl.read_exact(&mut reply).unwrap();
        assert_eq!(u16::from_ne_bytes([reply[0], reply[1]]), 1, "AF_UNIX");
        let end = reply[2..].iter().position(|&c| c == 0).unwrap() + 2;
        let theirs = PathBuf::from(String::from_utf8(reply[2..end].to_vec()).unwrap());
        assert_eq!(theirs.parent(), Some(vde_dir), "{theirs:?}");
        data.connect(&theirs).unwrap();
        Client {
            ctl,
            data,
            theirs,
            _dir: dir,
        }
    }
}

/// A client written from the C structures: version 1 and 3 requests, frames both ways,
/// oversize datagrams and stray control bytes counted, EOF closes the port.
#[test]
fn hand_made_v1_and_v3_clients_follow_the_protocol() {
    skip_unless_root!();
    let d = daemon("lab", 1500);
    let dir = vde_dir(&d, "lab");
    let (_, a) = tap_vm(&d, "lab", "02:00:00:00:0d:41", "10.75.4.1/24");
    let (_, b) = tap_vm(&d, "lab", "02:00:00:00:0d:42", "10.75.4.2/24");

    for version in [1u32, 3] {
        let descr = format!("hand-made v{version}");
        let Client {
            mut ctl,
            data,
            theirs,
            _dir,
        } = Client::connect(&dir, version, &descr);
        let meta = std::fs::metadata(&theirs).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o600,
            "the data socket is the client's alone"
        );

        let p = wait_vde_port(&d, "lab");
        assert!(p.description.contains(&descr), "{p:?}");
        assert!(
            d.log().contains(&format!("protocol v{version}")),
            "{}",
            d.log()
        );

        // ARP for a, over datagrams.
        let me = [0x02, 0, 0, 0, 0x0d, 0x50 + version as u8];
        let my_ip = [10, 75, 4, 40 + version as u8];
        data.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut got = false;
        for _ in 0..5 {
            data.send(&arp_request(me, my_ip, ip(a.ip()))).unwrap();
            let mut buf = [0u8; 2048];
            while let Ok(n) = data.recv(&mut buf) {
                if is_arp_reply(&buf[..n], me, ip(a.ip())) {
                    got = true;
                    break;
                }
            }
            if got {
                break;
            }
        }
        assert!(got, "no ARP reply over the data socket\n{}", d.log());

        // A 1514-byte frame is fine; 1515 is oversize for MTU 1500; runts are counted.
        let mut big = arp_request(me, my_ip, ip(a.ip()));
        big.resize(1514, 0);
        data.send(&big).unwrap();
        big.push(0);
        data.send(&big).unwrap();
        data.send(&[1, 2, 3]).unwrap();
        // Stray bytes on the control connection after the handshake.
        ctl.write_all(b"stray").unwrap();
        let ok = wait_for(Duration::from_secs(5), || {
            let p = port(&d, "lab", p.id);
            drops(&p, "oversize") == 1 && drops(&p, "runt") == 1 && drops(&p, "malformed") == 1
        });
        assert!(ok, "{:?}\n{}", port(&d, "lab", p.id), d.log());

        // EOF on the control connection ends the port, data socket and all.
        drop(ctl);
        wait_ports(&d, "lab", PortKind::Vde, 0);
        assert!(!theirs.exists(), "{theirs:?} removed with its port");
        still_serving(&d, &a, &b);
    }

    // Deleting the vnet closes an open VDE port and removes the whole directory.
    let sock_dir = tempfile::tempdir().unwrap();
    let mine = sock_dir.path().join("data");
    let _data = UnixDatagram::bind(&mine).unwrap();
    let mut ctl = UnixStream::connect(dir.join("ctl")).unwrap();
    ctl.write_all(&request(0xfeed_face, 3, &mine, "left open"))
        .unwrap();
    wait_vde_port(&d, "lab");
    d.cli_ok(&["net", "rm", "lab"]);
    assert!(!dir.exists(), "the VDE directory goes with its vnet");
    let mut buf = [0u8; 200];
    ctl.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = ctl.read(&mut buf).unwrap();
    assert_eq!(n, 110, "the reply, then EOF");
    assert_eq!(ctl.read(&mut buf).unwrap(), 0);
}

/// A VDE client that stops reading fills its socket, then its own bounded queue (drops
/// counted); when it reads again, the queued frames follow. The sender is unaffected.
#[test]
fn a_vde_client_that_stops_reading_only_fills_its_own_queue() {
    skip_unless_root!();
    let d = daemon("lab", 1500);
    let dir = vde_dir(&d, "lab");
    let (_, a) = tap_vm(&d, "lab", "02:00:00:00:0d:61", "10.75.6.1/24");
    let (_, b) = tap_vm(&d, "lab", "02:00:00:00:0d:62", "10.75.6.2/24");
    let sleeper = Client::connect(&dir, 3, "sleeper");
    let sleeper_id = wait_vde_port(&d, "lab").id;
    let sender = Client::connect(&dir, 3, "sender");
    assert!(wait_for(Duration::from_secs(10), || vde_ports(&d, "lab")
        .iter()
        .all(|p| !p.description.contains("awaiting"))
        && vde_ports(&d, "lab").len() == 2));

    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0x0d, 0x63, 0x88, 0xb5]);
    frame.resize(100, 0);
    for i in 0..3000u32 {
        frame[14..18].copy_from_slice(&i.to_be_bytes());
        sender.data.send(&frame).unwrap();
    }
    let full = wait_for(Duration::from_secs(10), || {
        drops(&port(&d, "lab", sleeper_id), "queue_full") > 0
    });
    assert!(full, "{:?}\n{}", port(&d, "lab", sleeper_id), d.log());
    still_serving(&d, &a, &b);

    // Wake up: more than the socket held arrives, in order.
    sleeper
        .data
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 2048];
    let mut seen = Vec::new();
    while let Ok(n) = sleeper.data.recv(&mut buf) {
        if n == 100 && buf[6..12] == frame[6..12] {
            seen.push(u32::from_be_bytes(buf[14..18].try_into().unwrap()));
        }
    }
    assert!(
        seen.len() > 100,
        "only {} frames after the wake-up",
        seen.len()
    );
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order: {seen:?}");
    let p = port(&d, "lab", sleeper_id);
    assert_eq!(
        p.counters.tx_frames as usize,
        seen.len(),
        "every frame counted as sent reached the client: {p:?}"
    );
    drop((sleeper, sender));
    wait_ports(&d, "lab", PortKind::Vde, 0);
}
