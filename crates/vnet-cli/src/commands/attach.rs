//! `vnet attach NET --qemu [--dgram | --vde]`, `vnet attach NET --vhost-user NAME`,
//! `vnet attach NET --interface IF`, each also `--libvirt`, `--cloud-hypervisor`,
//! `--crosvm` or `--firecracker` where that hypervisor can: what puts a VM on a vnet.

use serde::Serialize;
use vnet_control::{MacAddr, PortKind};

use super::{print, print_json, Context};
use crate::cli::AttachArgs;
use crate::failure::Failure;
use crate::qemu::{self, Attachment, Netdev, Reconnect};
use crate::recipes::{self, FirecrackerInterface};

/// What `--json` prints: the hypervisor's arguments, or its XML or JSON.
#[derive(Serialize)]
struct Printed<'a> {
    network: &'a str,
    hypervisor: &'static str,
    /// How the NIC reaches the vnet: stream, dgram, vde, vhost-user or tap.
    netdev: &'static str,
    mac: MacAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    args: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    xml: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    network_interface: Option<&'a FirecrackerInterface<'a>>,
}

impl<'a> Printed<'a> {
    fn args(
        network: &'a str,
        hypervisor: &'static str,
        netdev: &'static str,
        mac: MacAddr,
        args: &'a [String],
    ) -> Self {
        Printed {
            network,
            hypervisor,
            netdev,
            mac,
            args: Some(args),
            xml: None,
            network_interface: None,
        }
    }
}

/// Prints argv as one shell line, or everything as JSON.
fn print_args(ctx: &Context, printed: Printed) -> Result<(), Failure> {
    if ctx.json {
        return print_json(&printed);
    }
    print(&format!(
        "{}\n",
        qemu::shell_line(printed.args.unwrap_or_default())
    ))
}

pub fn run(ctx: &Context, args: AttachArgs) -> Result<(), Failure> {
    if !qemu::is_valid_id(&args.id) {
        return Err(Failure::new(
            format!("{:?} is not a QEMU id", args.id),
            "start it with a letter and use only letters, digits, '-', '.', '_'",
        ));
    }
    let mac = args.mac.unwrap_or_else(qemu::random_mac);
    if !mac.is_learnable() {
        return Err(Failure::new(
            format!("{mac} is not a unicast address"),
            "give a NIC a unicast MAC such as 52:54:00:12:34:56 (first octet even)",
        ));
    }
    let info = ctx
        .client
        .network(&args.net)
        .map_err(|e| Failure::from(e).if_not_found("list the vnets with `vnet net ls`"))?;

    if let Some(name) = &args.vhost_user {
        return vhost_user(ctx, &args, &info.name, &info.sockets.stream, name, mac);
    }
    if let Some(ifname) = &args.interface {
        return interface(ctx, &args, &info.name, ifname, mac);
    }
    if args.libvirt {
        return Err(Failure::new(
            "--libvirt attaches through a port: give --vhost-user NAME or --interface IFNAME",
            format!(
                "add one first: vnet port add {0} --vhost-user NAME (or --interface IFNAME)",
                info.name
            ),
        ));
    }
    let local = qemu::dgram_local_path(&info.name);
    let vde_dir = qemu::vde_dir(&info.sockets.stream);
    let (netdev, vnet_socket, local_socket, reconnect) = if args.vde {
        (Netdev::Vde, &vde_dir, None, Reconnect::Never)
    } else if args.dgram {
        (
            Netdev::Dgram,
            &info.sockets.dgram,
            Some(local.as_path()),
            Reconnect::Never,
        )
    } else {
        let version = qemu::detect_qemu_version(&args.qemu_binary);
        (
            Netdev::Stream,
            &info.sockets.stream,
            None,
            Reconnect::for_version(version),
        )
    };
    let qemu_args = qemu::qemu_args(&Attachment {
        netdev,
        id: &args.id,
        model: &args.model,
        mac,
        vnet_socket,
        local_socket,
        reconnect,
    });

    let netdev = match netdev {
        Netdev::Stream => "stream",
        Netdev::Dgram => "dgram",
        Netdev::Vde => "vde",
    };
    print_args(
        ctx,
        Printed::args(&info.name, "qemu", netdev, mac, &qemu_args),
    )
}

/// `vnet attach NET --vhost-user NAME`: QEMU, libvirt, cloud-hypervisor or crosvm.
fn vhost_user(
    ctx: &Context,
    args: &AttachArgs,
    net: &str,
    stream_socket: &std::path::Path,
    name: &str,
    mac: MacAddr,
) -> Result<(), Failure> {
    let has_port = |p: &vnet_control::PortInfo| {
        p.kind == PortKind::VhostUser && p.description.starts_with(&format!("vhost-user {name} "))
    };
    if !port_exists(ctx, net, has_port)? {
        return Err(Failure::new(
            format!("vnet {net} has no vhost-user port {name}"),
            format!("add it first: vnet port add {net} --vhost-user {name}"),
        ));
    }
    let socket = qemu::vhost_user_socket(stream_socket, name);
    let comma = || {
        Failure::new(
            format!(
                "{} has a comma, which this hypervisor's options cannot carry",
                socket.display()
            ),
            "run vnetd with a --run-dir without commas",
        )
    };
    if args.libvirt {
        let xml = recipes::libvirt_vhost_user(&socket, mac);
        return print_xml(ctx, net, "vhost-user", mac, &xml);
    }
    if args.cloud_hypervisor {
        let argv = recipes::cloud_hypervisor_args(&socket, mac, &args.memory).ok_or_else(comma)?;
        return print_args(
            ctx,
            Printed::args(net, "cloud-hypervisor", "vhost-user", mac, &argv),
        );
    }
    if args.crosvm {
        let argv = recipes::crosvm_args(&socket).ok_or_else(comma)?;
        return print_args(ctx, Printed::args(net, "crosvm", "vhost-user", mac, &argv));
    }
    let version = qemu::detect_qemu_version(&args.qemu_binary);
    let qemu_args = qemu::vhost_user_args(
        &Attachment {
            netdev: Netdev::Stream,
            id: &args.id,
            model: &args.model,
            mac,
            vnet_socket: &socket,
            local_socket: None,
            reconnect: Reconnect::for_version(version),
        },
        &args.memory,
    );
    print_args(
        ctx,
        Printed::args(net, "qemu", "vhost-user", mac, &qemu_args),
    )
}

/// `vnet attach NET --interface IF`: a TAP the hypervisor opens (QEMU, libvirt,
/// Firecracker), joined by the interface port.
fn interface(
    ctx: &Context,
    args: &AttachArgs,
    net: &str,
    ifname: &str,
    mac: MacAddr,
) -> Result<(), Failure> {
    let has_port = |p: &vnet_control::PortInfo| {
        p.kind == PortKind::Interface && p.description == format!("interface {ifname}")
    };
    if !port_exists(ctx, net, has_port)? {
        return Err(Failure::new(
            format!("vnet {net} has no interface port on {ifname}"),
            format!("add it first: vnet port add {net} --interface {ifname}"),
        ));
    }
    if args.libvirt {
        if let Some(prefix) = recipes::libvirt_refuses(ifname) {
            return Err(Failure::new(
                format!("libvirt renames TAPs whose name starts with {prefix:?}, like {ifname}"),
                format!("choose another name, e.g. vnet port add {net} --interface {net}-vm1"),
            ));
        }
        let xml = recipes::libvirt_ethernet(ifname, mac, args.existing_tap);
        return print_xml(ctx, net, "tap", mac, &xml);
    }
    if args.firecracker {
        let entry = FirecrackerInterface {
            iface_id: &args.id,
            guest_mac: mac,
            host_dev_name: ifname,
        };
        if ctx.json {
            return print_json(&Printed {
                network: net,
                hypervisor: "firecracker",
                netdev: "tap",
                mac,
                args: None,
                xml: None,
                network_interface: Some(&entry),
            });
        }
        let text = serde_json::to_string_pretty(&entry).expect("plain fields serialize");
        return print(&format!("{text}\n"));
    }
    let qemu_args = qemu::tap_args(&args.id, &args.model, mac, ifname);
    print_args(ctx, Printed::args(net, "qemu", "tap", mac, &qemu_args))
}

fn print_xml(
    ctx: &Context,
    net: &str,
    netdev: &'static str,
    mac: MacAddr,
    xml: &str,
) -> Result<(), Failure> {
    if ctx.json {
        return print_json(&Printed {
            network: net,
            hypervisor: "libvirt",
            netdev,
            mac,
            args: None,
            xml: Some(xml),
            network_interface: None,
        });
    }
    print(xml)
}

/// Whether vnet `net` has a port `matches` accepts.
fn port_exists(
    ctx: &Context,
    net: &str,
    matches: impl Fn(&vnet_control::PortInfo) -> bool,
) -> Result<bool, Failure> {
    let ports = ctx
        .client
        .ports(net)
        .map_err(|e| Failure::from(e).if_not_found("list the vnets with `vnet net ls`"))?;
    Ok(ports.iter().any(matches))
}
