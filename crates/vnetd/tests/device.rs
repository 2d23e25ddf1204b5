//! The classic device: `RUN/dev/NET` is a FUSE file per vnet. The shipped C example
//! (`examples/vmnet-classic.c`, compiled here with `cc`) opens it, reads an ARP
//! broadcast from a namespace VM and writes a frame the VM's tcpdump sees. Each open is
//! a port of kind `device` with the opener's pid; the ioctls of `include/vnet.h`,
//! `O_NONBLOCK`, `poll` and truncation behave as documented.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use vnet_control::PortKind;
use vnet_testbed::api::{daemon_with, port, tap_vm, wait_ports};
use vnet_testbed::frames::frame;
use vnet_testbed::{api, skip_unless, skip_unless_root, task, wait_for, ChildGuard, Daemon};

const T: Duration = Duration::from_secs(20);

/// Skips the test unless it runs as root on a machine with FUSE (part of the
/// machines this runs on; a skip says so plainly where it is not).
macro_rules! skip_unless_root_with_fuse {
    () => {
        skip_unless_root!();
        skip_unless!(Path::new("/dev/fuse").exists(), "needs /dev/fuse");
    };
}

/// A daemon with vnet `lab` and the path of its classic device, once it is there.
fn lab() -> (Daemon, PathBuf) {
    let d = daemon_with(&["lab"]);
    let dev = device(&d, "lab");
    (d, dev)
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn device(d: &Daemon, net: &str) -> PathBuf {
    let path = d.run_dir().join("dev").join(net);
    assert!(
        wait_for(T, || path.exists()),
        "{} never appeared\n{}",
        path.display(),
        d.log()
    );
    path
}

/// Waits until thread `tid` of `pid` sleeps in `read(2)` on the device, so what the
/// test does next happens to a blocked reader.
fn wait_blocked_in_read(pid: u32, tid: u32) {
    assert!(
        task::wait_blocked_in(pid, tid, libc::SYS_read, T),
        "thread {tid} of {pid} never blocked in read()"
    );
}

/// Compiles examples/vmnet-classic.c into `dir`.
fn build_example(dir: &Path) -> PathBuf {
    let exe = dir.join("vmnet-classic");
    let out = Command::new("cc")
        .arg("-Wall")
        .arg("-I")
        .arg(repo().join("include"))
        .arg(repo().join("examples/vmnet-classic.c"))
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("cc runs (gcc is installed by scripts/install-test-deps)");
    assert!(
        out.status.success(),
        "the C example does not compile:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

#[test]
fn the_c_example_reads_an_arp_broadcast_and_writes_a_frame_tcpdump_sees() {
    skip_unless_root_with_fuse!();
    let (d, dev) = lab();
    let tmp = tempfile::tempdir().unwrap();
    let exe = build_example(tmp.path());
    let (_, vm) = tap_vm(&d, "lab", "02:00:00:00:0e:01", "10.76.0.1/24");

    let capture = vm.ns().spawn(&[
        "tcpdump",
        "-n",
        "-l",
        "-e",
        "-i",
        vm.ifname(),
        "ether",
        "proto",
        "0x88b5",
    ]);
    assert!(
        wait_for(T, || capture.log().contains("listening on")),
        "tcpdump starts: {}",
        capture.log()
    );

    let mut cmd = Command::new(&exe);
    cmd.arg(&dev);
    let mut example = ChildGuard::spawn(cmd, "vmnet-classic").expect("the example starts");
    assert!(
        wait_for(T, || example.log().contains("port ")),
        "the example opened the device: {}\n{}",
        example.log(),
        d.log()
    );
    // The open is a port of kind device, described with the example's pid.
    let dev_port = api::find_kind(&d, "lab", PortKind::Device).expect("a device port");
    assert_eq!(dev_port.pid, Some(example.pid()), "{dev_port:?}");
    assert!(
        dev_port
            .description
            .contains(&format!("pid {}", example.pid())),
        "{dev_port:?}"
    );
    assert!(
        example.log().contains(&format!("port {}\n", dev_port.id)),
        "VNETIOC_GETPORTID: {}",
        example.log()
    );
    let listing = d.cli_ok(&["port", "ls", "lab"]);
    assert!(listing.contains("device"), "{listing}");

    // The VM looks for a neighbour: an ARP request, broadcast, reaches the device.
    assert!(
        wait_for(T, || {
            vm.ns().exec(&["ping", "-c", "1", "-W", "1", "10.76.0.9"]);
            example.log().contains("sent ")
        }),
        "the example got no frame: {}\n{}",
        example.log(),
        d.log()
    );
    let log = example.log();
    assert!(
        log.contains("received 42 bytes: dst ff:ff:ff:ff:ff:ff src 02:00:00:00:0e:01 type 0806"),
        "{log}"
    );
    assert!(log.contains("sent 1500 bytes"), "{log}");
    assert!(
        example.wait_timeout(T).is_some_and(|s| s.success()),
        "{log}"
    );

    // The frame it wrote arrived at the VM.
    let mut capture = capture;
    assert!(
        wait_for(T, || capture.log().contains("02:00:00:00:00:01")),
        "tcpdump in the VM did not see the example's frame: {}",
        capture.log()
    );
    capture.terminate(Duration::from_secs(5));
    let seen = capture.log();
    assert!(
        seen.contains("02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff") && seen.contains("length 1500"),
        "{seen}"
    );
    // Closing removed the port.
    wait_ports(&d, "lab", PortKind::Device, 0);
}

// The ioctls of include/vnet.h.
const fn ioc(dir: u64, nr: u64, size: u64) -> u64 {
    (dir << 30) | (size << 16) | ((b'V' as u64) << 8) | nr
}
const SETMAC: u64 = ioc(1, 1, 6);
const SETPROMISC: u64 = ioc(1, 2, 4);
const GETPORTID: u64 = ioc(2, 3, 4);
const GETVERSION: u64 = ioc(2, 4, 4);

fn ioctl_get(f: &File, cmd: u64) -> std::io::Result<u32> {
    let mut value: u32 = 0;
    // SAFETY: `cmd` is an _IOR command for a 4-byte value and `value` is 4 bytes that
    // outlive the call.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), cmd as _, &mut value as *mut u32) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(value)
}

fn ioctl_set<T>(f: &File, cmd: u64, value: &T) -> std::io::Result<()> {
    // SAFETY: `cmd` is an _IOW command whose size is that of `T`; `value` is valid for
    // reads for the duration of the call.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), cmd as _, value as *const T) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn readable(f: &File, timeout_ms: i32) -> bool {
    let mut fds = [libc::pollfd {
        fd: f.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: `fds` is one valid pollfd, and its length is passed.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, timeout_ms) };
    n > 0 && fds[0].revents & libc::POLLIN != 0
}

fn set_nonblocking(f: &File) {
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    let rc = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    assert_eq!(rc, 0);
}

#[test]
fn two_opens_are_two_ports_with_ioctls_nonblocking_reads_poll_and_truncation() {
    skip_unless_root_with_fuse!();
    let (d, dev) = lab();
    let open = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&dev)
            .unwrap()
    };
    let mut a = open();
    let mut b = open();
    wait_ports(&d, "lab", PortKind::Device, 2);

    let id_a = ioctl_get(&a, GETPORTID).unwrap();
    let id_b = ioctl_get(&b, GETPORTID).unwrap();
    assert_ne!(id_a, id_b, "two opens, two ports");
    assert_eq!(ioctl_get(&a, GETVERSION).unwrap(), 1);
    for id in [id_a, id_b] {
        let p = port(&d, "lab", id);
        assert_eq!(p.kind, PortKind::Device);
        assert_eq!(p.pid, Some(std::process::id()), "{p:?}");
    }

    let mac_a = [0x02, 0, 0, 0, 0x0e, 0x0a];
    let mac_b = [0x02, 0, 0, 0, 0x0e, 0x0b];
    ioctl_set(&a, SETMAC, &mac_a).unwrap();
    ioctl_set(&b, SETPROMISC, &1i32).unwrap();
    let pa = port(&d, "lab", id_a);
    assert_eq!(pa.mac.map(|m| m.0), Some(mac_a), "{pa:?}");
    assert!(port(&d, "lab", id_b).promiscuous);
    // Errors come back as errno.
    let err = ioctl_get(&a, ioc(2, 99, 4)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTTY), "{err}");
    let err = ioctl_set(&a, SETMAC, &[0x01u8, 0, 0x5e, 0, 0, 1]).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");

    // O_NONBLOCK: nothing waiting is EAGAIN; poll says when a frame is there.
    set_nonblocking(&a);
    let mut buf = [0u8; 1514];
    let err = a.read(&mut buf).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock, "{err}");
    assert!(!readable(&a, 0));
    let sent = frame(mac_a, mac_b, 100);
    assert_eq!(b.write(&sent).unwrap(), 100);
    assert!(readable(&a, 10_000), "poll reports the frame\n{}", d.log());
    assert_eq!(a.read(&mut buf).unwrap(), 100);
    assert_eq!(&buf[..100], &sent[..]);

    // A frame longer than the buffer is truncated to it; the rest is discarded.
    b.write_all(&frame(mac_a, mac_b, 300)).unwrap();
    assert!(readable(&a, 10_000));
    let mut small = [0u8; 20];
    assert_eq!(a.read(&mut small).unwrap(), 20);
    assert_eq!(&small[..], &frame(mac_a, mac_b, 300)[..20]);
    let err = a.read(&mut buf).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock, "{err}");

    // A blocking read waits for the frame (b is promiscuous: it sees a's broadcast).
    let (tid_tx, tid) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        tid_tx.send(task::current_tid()).unwrap();
        let mut buf = [0u8; 1514];
        let n = b.read(&mut buf).unwrap();
        buf[..n].to_vec()
    });
    wait_blocked_in_read(std::process::id(), tid.recv().unwrap());
    let bcast = frame([0xff; 6], mac_a, 64);
    a.write_all(&bcast).unwrap();
    let got = reader.join().unwrap();
    assert_eq!(got, bcast);

    let pa = port(&d, "lab", id_a);
    assert!(
        pa.counters.rx_frames >= 1 && pa.counters.tx_frames >= 2,
        "{pa:?}"
    );
    drop(a);
    wait_ports(&d, "lab", PortKind::Device, 0);
    assert!(d.log().contains("device"), "{}", d.log());
}

fn mounted(dir: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let dir = dir.to_string_lossy().into_owned();
    mounts
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(dir.as_str()))
}

#[test]
fn a_blocked_reader_can_be_killed_and_the_daemon_unmounts_with_devices_open() {
    skip_unless_root_with_fuse!();
    let (mut d, dev) = lab();
    let dev_dir = d.run_dir().join("dev");
    assert!(mounted(&dev_dir), "RUN/dev is a FUSE mount");
    let tmp = tempfile::tempdir().unwrap();
    let exe = build_example(tmp.path());

    // The example blocks in read(); SIGKILL must end it (no frame will ever come).
    let mut cmd = Command::new(&exe);
    cmd.arg(&dev);
    let mut example = ChildGuard::spawn(cmd, "vmnet-classic").expect("the example starts");
    assert!(
        wait_for(T, || example.log().contains("port ")),
        "{}",
        example.log()
    );
    wait_ports(&d, "lab", PortKind::Device, 1);
    wait_blocked_in_read(example.pid(), example.pid());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(example.pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(
        example.wait_timeout(T).is_some(),
        "a reader killed while blocked must die\n{}",
        d.log()
    );
    wait_ports(&d, "lab", PortKind::Device, 0);

    // Stopping the daemon with a device open unmounts RUN/dev; the open file fails.
    let mut held = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&dev)
        .unwrap();
    wait_ports(&d, "lab", PortKind::Device, 1);
    let status = d.stop();
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        d.log()
    );
    assert!(!mounted(&dev_dir), "RUN/dev is unmounted at stop");
    let mut buf = [0u8; 64];
    assert!(held.read(&mut buf).is_err() || held.write(&buf).is_err());
}

#[test]
fn dev_links_place_dev_net_while_the_daemon_runs() {
    skip_unless_root_with_fuse!();
    let net = vnet_testbed::unique_name("vmn");
    let mut d = Daemon::builder()
        .config(&format!("[[network]]\nname = \"{net}\"\n"))
        .arg("--dev-links")
        .start();
    let target = device(&d, &net);
    let link = Path::new("/dev").join(&net);
    assert_eq!(
        std::fs::read_link(&link).ok(),
        Some(target.clone()),
        "{}",
        d.log()
    );
    // The classic path works through the link.
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&link)
        .unwrap();
    let id = ioctl_get(&f, GETPORTID).unwrap();
    assert_eq!(port(&d, &net, id).kind, PortKind::Device);
    drop(f);
    let status = d.stop();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(
        std::fs::symlink_metadata(&link).is_err(),
        "/dev/{net} is removed at stop"
    );
}

#[test]
fn live_vnets_come_and_go_in_run_dev_and_open_devices_see_the_end() {
    skip_unless_root_with_fuse!();
    let (d, _) = lab();
    let c = api::client(&d);
    c.create_network(&vnet_control::NetworkSpec::named("late"))
        .unwrap();
    let late = device(&d, "late");
    let names: Vec<String> = std::fs::read_dir(d.run_dir().join("dev"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.contains(&"lab".to_string()) && names.contains(&"late".to_string()),
        "{names:?}"
    );
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&late)
        .unwrap();
    wait_ports(&d, "late", PortKind::Device, 1);
    let (tid_tx, tid) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        tid_tx.send(task::current_tid()).unwrap();
        let mut buf = [0u8; 1514];
        let n = f.read(&mut buf);
        (
            n.map_err(|e| e.to_string()),
            f.write(&buf[..60]).map_err(|e| e.kind()),
        )
    });
    wait_blocked_in_read(std::process::id(), tid.recv().unwrap());
    c.delete_network("late").unwrap();
    let (read, write) = reader.join().unwrap();
    assert_eq!(read, Ok(0), "a blocked read ends with end of file");
    assert!(write.is_err(), "{write:?}");
    assert!(wait_for(T, || !late.exists()), "RUN/dev/late is gone");
    let e = OpenOptions::new().read(true).open(&late).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
}

/// A blocked read fails with EINTR when a handled signal arrives (no SA_RESTART).
#[test]
fn a_signal_interrupts_a_blocked_read_with_eintr() {
    skip_unless_root_with_fuse!();
    let (d, dev) = lab();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("eintr.c");
    std::fs::write(
        &src,
        r#"#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
static void on_alarm(int s) { (void)s; }
int main(int argc, char **argv) {
	struct sigaction sa;
	char b[1500];
	int fd, n;
	(void)argc;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_alarm;
	sigaction(SIGALRM, &sa, NULL);
	fd = open(argv[1], O_RDWR);
	if (fd < 0) { perror("open"); return 1; }
	alarm(1);
	n = read(fd, b, sizeof b);
	printf("read=%d errno=%d\n", n, n < 0 ? errno : 0);
	return 0;
}
"#,
    )
    .unwrap();
    let exe = tmp.path().join("eintr");
    let built = Command::new("cc").arg(&src).arg("-o").arg(&exe).status();
    assert!(built.is_ok_and(|s| s.success()), "cc");
    let out = Command::new(&exe).arg(&dev).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim(),
        format!("read=-1 errno={}", libc::EINTR),
        "{}",
        d.log()
    );
    wait_ports(&d, "lab", PortKind::Device, 0);
}
