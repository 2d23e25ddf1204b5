//! `vnet attach` for hypervisors other than QEMU, against a real vnetd: libvirt's
//! `<interface>` elements pass libvirt's own domain schema (`virt-xml-validate`), and
//! the cloud-hypervisor, crosvm and Firecracker recipes name the ports vnetd serves.

use std::path::Path;
use std::process::Command;

use vnet_testbed::api::{self, cli_fails, cli_json};
use vnet_testbed::{skip_unless, skip_unless_root, unique_name, Daemon};

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
