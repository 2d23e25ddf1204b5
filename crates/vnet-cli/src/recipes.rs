//! How hypervisors other than QEMU attach a VM's NIC to a vnet: what `vnet attach NET
//! --libvirt | --cloud-hypervisor | --crosvm | --firecracker` prints.
//!
//! Two ways in, both ports the administrator adds first:
//! - vhost-user (`vnet port add NET --vhost-user NAME`): the hypervisor connects to
//!   `RUN/NET/vhost-user/NAME.sock` as the front-end and shares the guest's RAM with
//!   vnetd. libvirt (`type='vhostuser'`), cloud-hypervisor and crosvm speak it.
//! - a TAP the hypervisor opens itself (`vnet port add NET --interface IF`): vnetd joins
//!   the interface side through an AF_PACKET socket. Firecracker knows only this;
//!   libvirt's `type='ethernet'` creates the TAP when the domain starts and deletes it
//!   when it stops, and the port follows it.

use std::path::Path;

use serde::Serialize;
use vnet_control::MacAddr;

/// A libvirt domain `<interface type='vhostuser'>` on the vhost-user socket `socket`,
/// reconnecting every second (a restarted vnetd gets the NIC back). The domain's
/// memory must be shared for vhost-user; a comment in front says how.
pub fn libvirt_vhost_user(socket: &Path, mac: MacAddr) -> String {
    format!(
        "<!-- vhost-user needs the domain's memory shared with vnetd: \
         <memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking> -->\n\
         <interface type='vhostuser'>\n  \
         <mac address='{mac}'/>\n  \
         <source type='unix' path='{}' mode='client'>\n    \
         <reconnect enabled='yes' timeout='1'/>\n  \
         </source>\n  \
         <model type='virtio'/>\n\
         </interface>\n",
        xml_attr(&socket.to_string_lossy())
    )
}

/// A libvirt domain `<interface type='ethernet'>` on the TAP named `ifname`: libvirt
/// creates it when the domain starts (and deletes it when it stops), or, if it
/// `exists` already (`ip tuntap add IF mode tap user UID`, as an unprivileged session
/// libvirt needs), opens it (`managed='no'`).
pub fn libvirt_ethernet(ifname: &str, mac: MacAddr, exists: bool) -> String {
    let managed = if exists { " managed='no'" } else { "" };
    format!(
        "<interface type='ethernet'>\n  \
         <mac address='{mac}'/>\n  \
         <target dev='{}'{managed}/>\n  \
         <model type='virtio'/>\n\
         </interface>\n",
        xml_attr(ifname)
    )
}

/// Why a TAP name cannot be given to libvirt: it replaces names it reserves for the
/// ones it makes up (`vnet0`, `vif0`, `macvtap0`...), so the port would wait in vain.
pub fn libvirt_refuses(ifname: &str) -> Option<&'static str> {
    ["vnet", "vif", "macvtap", "macvlan"]
        .into_iter()
        .find(|prefix| ifname.starts_with(prefix))
}

/// cloud-hypervisor's arguments for a virtio-net NIC on vhost-user socket `socket`: the
/// guest's RAM (`size` as `--memory` takes it, e.g. `1G`) shared, and the NIC as a
/// vhost-user client of vnetd. `None` if the path has a comma, which its option syntax
/// cannot carry.
pub fn cloud_hypervisor_args(socket: &Path, mac: MacAddr, size: &str) -> Option<Vec<String>> {
    let path = plain_value(socket)?;
    Some(vec![
        "--memory".into(),
        format!("size={size},shared=on"),
        "--net".into(),
        format!("vhost_user=true,socket={path},vhost_mode=client,mac={mac}"),
    ])
}

/// crosvm's argument for a virtio-net NIC on vhost-user socket `socket` (crosvm's guest
/// memory is always a shareable memfd; the MAC is the guest driver's). `None` if the
/// path has a comma.
pub fn crosvm_args(socket: &Path) -> Option<Vec<String>> {
    let path = plain_value(socket)?;
    Some(vec!["--vhost-user".into(), format!("net,socket={path}")])
}

/// One entry of Firecracker's `network-interfaces` (its `--config-file`, or the body of
/// `PUT /network-interfaces/{iface_id}` on its API socket): the guest NIC `iface_id`
/// on the TAP `host_dev_name`, which must exist (and be up) before Firecracker starts.
#[derive(Debug, Serialize)]
pub struct FirecrackerInterface<'a> {
    pub iface_id: &'a str,
    pub guest_mac: MacAddr,
    pub host_dev_name: &'a str,
}

/// An attribute value between single quotes, escaped.
fn xml_attr(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// A path as a value of `key=value,key=value` options that have no escape for commas.
fn plain_value(path: &Path) -> Option<String> {
    let text = path.to_string_lossy();
    (!text.contains(',')).then(|| text.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]);

    #[test]
    fn libvirt_gets_a_vhostuser_client_that_reconnects() {
        let xml = libvirt_vhost_user(Path::new("/run/vnet/lab/vhost-user/vm1.sock"), MAC);
        assert!(xml.starts_with("<!-- vhost-user needs the domain's memory shared"));
        assert!(xml.contains(
            "<source type='unix' path='/run/vnet/lab/vhost-user/vm1.sock' mode='client'>"
        ));
        assert!(xml.contains("<reconnect enabled='yes' timeout='1'/>"));
        assert!(xml.contains("<mac address='52:54:00:12:34:56'/>"));
        assert!(xml.ends_with("</interface>\n"));
    }

    #[test]
    fn libvirt_ethernet_names_the_tap_and_escapes_it() {
        assert_eq!(
            libvirt_ethernet("lab-vm1", MAC, false),
            "<interface type='ethernet'>\n  <mac address='52:54:00:12:34:56'/>\n  \
             <target dev='lab-vm1'/>\n  <model type='virtio'/>\n</interface>\n"
        );
        assert!(libvirt_ethernet("a'b&c", MAC, false).contains("<target dev='a&apos;b&amp;c'/>"));
        assert!(libvirt_ethernet("t0", MAC, true).contains("<target dev='t0' managed='no'/>"));
        assert_eq!(libvirt_refuses("vnet3"), Some("vnet"));
        assert_eq!(libvirt_refuses("lab-vm1"), None);
    }

    #[test]
    fn cloud_hypervisor_shares_memory_and_connects_as_client() {
        let args = cloud_hypervisor_args(Path::new("/run/vnet/lab/vhost-user/vm1.sock"), MAC, "2G")
            .unwrap();
        assert_eq!(
            args,
            [
                "--memory",
                "size=2G,shared=on",
                "--net",
                "vhost_user=true,socket=/run/vnet/lab/vhost-user/vm1.sock,vhost_mode=client,mac=52:54:00:12:34:56",
            ]
        );
        assert!(cloud_hypervisor_args(Path::new("/run/a,b/x.sock"), MAC, "1G").is_none());
    }

    #[test]
    fn crosvm_names_the_device_type_and_socket() {
        assert_eq!(
            crosvm_args(Path::new("/run/vnet/lab/vhost-user/vm1.sock")).unwrap(),
            [
                "--vhost-user",
                "net,socket=/run/vnet/lab/vhost-user/vm1.sock"
            ]
        );
        assert!(crosvm_args(Path::new("/a,b")).is_none());
    }

    #[test]
    fn firecracker_entry_uses_its_field_names() {
        let entry = FirecrackerInterface {
            iface_id: "eth0",
            guest_mac: MAC,
            host_dev_name: "fc-tap0",
        };
        assert_eq!(
            serde_json::to_string(&entry).unwrap(),
            r#"{"iface_id":"eth0","guest_mac":"52:54:00:12:34:56","host_dev_name":"fc-tap0"}"#
        );
    }
}
