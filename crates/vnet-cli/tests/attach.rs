//! `vnet attach` for hypervisors other than QEMU, against a real vnetd: libvirt's
//! `<interface>` elements pass libvirt's own domain schema (`virt-xml-validate`) and a
//! libvirt domain boots on one and reaches a VM on the vnet; the cloud-hypervisor,
//! crosvm and Firecracker recipes name the ports vnetd serves.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use vnet_testbed::api::{self, cli_fails, cli_json, tap_vm};
use vnet_testbed::{skip_unless, skip_unless_root, unique_name, wait_for, Daemon};

/// A daemon with vnet `lab`, a vhost-user port `vm1` and an interface port on `ifname`
/// (no such interface yet: the port waits for it).
fn daemon_with_ports(ifname: &str) -> Daemon {
    let d = api::daemon_with(&["lab"]);
    d.cli_ok(&["port", "add", "lab", "--vhost-user", "vm1"]);
    d.cli_ok(&["port", "add", "lab", "--interface", ifname]);
    d
}

/// Whether libvirt's domain schema accepts a domain with these devices (and the shared
/// memory vhost-user needs); `virt-xml-validate`'s output on failure.
fn validate_domain(devices: &str) -> Result<(), String> {
    let xml = format!(
        "<domain type='kvm'>\n<name>vnet-attach</name>\n<memory unit='MiB'>256</memory>\n\
         <memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>\n\
         <os><type arch='x86_64'>hvm</type></os>\n<devices>\n{devices}</devices>\n</domain>\n"
    );
    let path = std::env::temp_dir().join(format!("{}.xml", unique_name("dom")));
    std::fs::write(&path, xml).unwrap();
    let out = Command::new("virt-xml-validate")
        .arg(&path)
        .arg("domain")
        .output()
        .expect("virt-xml-validate runs");
    let _ = std::fs::remove_file(&path);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

#[test]
fn libvirt_interfaces_pass_libvirts_domain_schema() {
    skip_unless_root!();
    skip_unless!(
        have("virt-xml-validate") && have("xmllint"),
        "needs virt-xml-validate and xmllint (libvirt-clients, libxml2-utils)"
    );
    let tap = unique_name("lv");
    let d = daemon_with_ports(&tap);
    let mac = ["--mac", "52:54:00:12:34:56"];
    let vhost = d.cli_ok(
        &[
            &["attach", "lab", "--libvirt", "--vhost-user", "vm1"],
            &mac[..],
        ]
        .concat(),
    );
    let socket = d.net_dir("lab").join("vhost-user/vm1.sock");
    assert!(socket.exists(), "{}", socket.display());
    assert!(
        vhost.contains(&format!("path='{}' mode='client'", socket.display())),
        "{vhost}"
    );
    let ethernet = d.cli_ok(&["attach", "lab", "--libvirt", "--interface", &tap]);
    assert!(
        ethernet.contains(&format!("<target dev='{tap}'/>")),
        "{ethernet}"
    );
    validate_domain(&format!("{vhost}{ethernet}")).unwrap_or_else(|e| {
        panic!("libvirt's schema refuses what vnet printed:\n{vhost}{ethernet}\n{e}")
    });
    // The check can fail: an element libvirt does not know is refused.
    let broken = ethernet.replace("<model type='virtio'/>", "<modle type='virtio'/>");
    assert!(validate_domain(&broken).is_err());

    // Only through a port vnetd has, with a name libvirt keeps.
    let err = cli_fails(&d, &["attach", "lab", "--libvirt"]);
    assert!(
        err.contains("--vhost-user NAME or --interface IFNAME"),
        "{err}"
    );
    let err = cli_fails(
        &d,
        &["attach", "lab", "--libvirt", "--interface", "nosuch0"],
    );
    assert!(
        err.contains("add it first: vnet port add lab --interface nosuch0"),
        "{err}"
    );
    d.cli_ok(&["port", "add", "lab", "--interface", "vnet7"]);
    let err = cli_fails(&d, &["attach", "lab", "--libvirt", "--interface", "vnet7"]);
    assert!(err.contains("libvirt renames TAPs"), "{err}");
}

#[test]
fn cloud_hypervisor_crosvm_and_firecracker_recipes_name_vnetds_ports() {
    skip_unless_root!();
    let tap = unique_name("fc");
    let d = daemon_with_ports(&tap);
    let socket = d.net_dir("lab").join("vhost-user/vm1.sock");
    let mac = "52:54:00:12:34:56";

    let ch: serde_json::Value = cli_json(
        &d,
        &[
            "attach",
            "lab",
            "--cloud-hypervisor",
            "--vhost-user",
            "vm1",
            "--mac",
            mac,
            "--memory",
            "512M",
        ],
    );
    assert_eq!(ch["hypervisor"], "cloud-hypervisor");
    assert_eq!(
        ch["args"],
        serde_json::json!([
            "--memory",
            "size=512M,shared=on",
            "--net",
            format!(
                "vhost_user=true,socket={},vhost_mode=client,mac={mac}",
                socket.display()
            ),
        ])
    );
    let crosvm = d.cli_ok(&["attach", "lab", "--crosvm", "--vhost-user", "vm1"]);
    assert_eq!(
        crosvm,
        format!("--vhost-user net,socket={}\n", socket.display())
    );
    assert!(Path::new(&socket).exists());

    let fc: serde_json::Value = cli_json(
        &d,
        &[
            "attach",
            "lab",
            "--firecracker",
            "--interface",
            &tap,
            "--mac",
            mac,
            "--id",
            "eth0",
        ],
    );
    assert_eq!(
        fc["network_interface"],
        serde_json::json!({"iface_id": "eth0", "guest_mac": mac, "host_dev_name": tap})
    );
    let text = d.cli_ok(&["attach", "lab", "--firecracker", "--interface", &tap]);
    let entry: serde_json::Value = serde_json::from_str(&text).expect("plain JSON");
    assert_eq!(entry["host_dev_name"], tap.as_str());

    let err = cli_fails(&d, &["attach", "lab", "--crosvm", "--vhost-user", "vm2"]);
    assert!(
        err.contains("add it first: vnet port add lab --vhost-user vm2"),
        "{err}"
    );
}

/// The uid a session libvirtd runs as: any unprivileged user will do.
const NOBODY: &str = "65534";

/// A session libvirtd (`qemu:///session`) run as `nobody` in a directory of its own: no
/// system service, configuration or user is touched. Dropped: its domain is destroyed,
/// the daemon stopped, the directory removed.
struct SessionLibvirt {
    dir: PathBuf,
    daemon: Child,
    domain: Option<String>,
}

impl SessionLibvirt {
    fn start() -> SessionLibvirt {
        let dir = std::env::temp_dir().join(unique_name("libvirt"));
        for sub in ["home", "run"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        Self::chown(&dir);
        let daemon = Self::as_nobody(&dir, "libvirtd")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("libvirtd.log")).unwrap())
            .spawn()
            .expect("libvirtd starts");
        let lv = SessionLibvirt {
            dir,
            daemon,
            domain: None,
        };
        let socket = lv.dir.join("run/libvirt/libvirt-sock");
        assert!(
            wait_for(Duration::from_secs(30), || socket.exists()),
            "libvirtd never listened:\n{}",
            lv.log()
        );
        lv
    }

    fn chown(path: &Path) {
        let ok = Command::new("chown")
            .args(["-R", &format!("{NOBODY}:{NOBODY}")])
            .arg(path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "chown {}", path.display());
    }

    fn as_nobody(dir: &Path, program: &str) -> Command {
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            program,
        ])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", dir.join("home"))
        .env("XDG_RUNTIME_DIR", dir.join("run"));
        c
    }

    fn virsh(&self, args: &[&str]) -> std::process::Output {
        Self::as_nobody(&self.dir, "virsh")
            .args(["-c", "qemu:///session"])
            .args(args)
            .output()
            .expect("virsh runs")
    }

    /// Starts a transient domain `name` booting the test bed's guest kernel and
    /// initramfs with `cmdline`, its devices `devices`; its console goes to a file.
    fn create(&mut self, name: &str, cmdline: &str, devices: &str) {
        let image = vnet_testbed::initramfs::standard().expect("guest image");
        let kernel = self.dir.join("kernel");
        let initrd = self.dir.join("initrd");
        std::fs::copy(&image.kernel_image, &kernel).unwrap();
        std::fs::copy(&image.path, &initrd).unwrap();
        let xml = format!(
            "<domain type='qemu'>\n<name>{name}</name>\n<memory unit='MiB'>256</memory>\n\
             <vcpu>1</vcpu>\n<os><type arch='x86_64' machine='pc'>hvm</type>\n\
             <kernel>{}</kernel><initrd>{}</initrd><cmdline>{cmdline}</cmdline></os>\n\
             <on_reboot>destroy</on_reboot>\n<devices>\n\
             <serial type='file'><source path='{}'/><target port='0'/></serial>\n\
             {devices}</devices>\n</domain>\n",
            kernel.display(),
            initrd.display(),
            self.console().display(),
        );
        let file = self.dir.join("domain.xml");
        std::fs::write(&file, xml).unwrap();
        Self::chown(&self.dir);
        let out = self.virsh(&["create", &file.to_string_lossy()]);
        assert!(
            out.status.success(),
            "virsh create: {}{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout),
            self.log()
        );
        self.domain = Some(name.to_string());
    }

    fn console(&self) -> PathBuf {
        self.dir.join("console.log")
    }

    fn log(&self) -> String {
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "--- libvirtd ---\n{}\n--- console ---\n{}",
            read(self.dir.join("libvirtd.log")),
            read(self.console())
        )
    }
}

impl Drop for SessionLibvirt {
    fn drop(&mut self) {
        if let Some(name) = self.domain.take() {
            let _ = self.virsh(&["destroy", &name]);
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Deletes host interface `0` when dropped.
struct Link(String);

impl Drop for Link {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.0])
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn a_libvirt_domain_boots_on_the_interface_vnet_prints_and_reaches_the_vnet() {
    skip_unless_root!();
    skip_unless!(
        have("libvirtd") && have("virsh") && have("setpriv"),
        "needs libvirtd and virsh (libvirt-daemon, libvirt-daemon-driver-qemu, libvirt-clients)"
    );
    let d = api::daemon_with(&["lab"]);
    let (_, vm) = tap_vm(&d, "lab", "52:54:00:80:00:01", "10.80.0.1/24");
    // A session libvirt cannot make TAPs: the administrator makes one for its user.
    let tap = unique_name("lv");
    let made = Command::new("ip")
        .args(["tuntap", "add", "dev", &tap, "mode", "tap", "user", NOBODY])
        .status()
        .unwrap()
        .success();
    assert!(made, "ip tuntap add {tap}");
    let _link = Link(tap.clone());
    d.cli_ok(&["port", "add", "lab", "--interface", &tap]);
    let mac = "52:54:00:80:00:02";
    let element = d.cli_ok(&[
        "attach",
        "lab",
        "--libvirt",
        "--interface",
        &tap,
        "--existing-tap",
        "--mac",
        mac,
    ]);
    assert!(
        element.contains(&format!("<target dev='{tap}' managed='no'/>")),
        "{element}"
    );

    let mut libvirt = SessionLibvirt::start();
    let cmdline = format!(
        "console=ttyS0 panic=-1 mitigations=off ipv6.disable=1 vnet.hostname=lv \
         vnet.nic=eth0,{mac},10.80.0.2/24"
    );
    libvirt.create(&unique_name("vnet-lv"), &cmdline, &element);
    assert!(
        wait_for(Duration::from_secs(180), || vm.ping("10.80.0.2", 1)),
        "the namespace VM never reached the libvirt guest\n{}\n{}",
        libvirt.log(),
        d.log()
    );
    let port = api::ports(&d, "lab")
        .into_iter()
        .find(|p| p.description == format!("interface {tap}"))
        .expect("the interface port");
    assert_eq!(port.state, Some(vnet_control::LinkState::Up), "{port:?}");
    assert!(
        port.macs.iter().any(|m| m.to_string() == mac),
        "the guest's MAC was learned on the interface port: {port:?}"
    );
}
