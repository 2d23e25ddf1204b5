//! `vnet attach NET --qemu [--dgram | --vde]`, `vnet attach NET --vhost-user NAME`: the arguments that put a VM on a vnet.

use serde::Serialize;
use vnet_control::MacAddr;

use super::{print, print_json, Context};
use crate::cli::AttachArgs;
use crate::failure::Failure;
use crate::qemu::{self, Attachment, Netdev, Reconnect};

#[derive(Serialize)]
struct QemuAttachment<'a> {
    network: &'a str,
    netdev: &'static str,
    mac: MacAddr,
    args: &'a [String],
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

    if ctx.json {
        return print_json(&QemuAttachment {
            network: &info.name,
            netdev: match netdev {
                Netdev::Stream => "stream",
                Netdev::Dgram => "dgram",
                Netdev::Vde => "vde",
            },
            mac,
            args: &qemu_args,
        });
    }
    print(&format!("{}\n", qemu::shell_line(&qemu_args)))
}

/// `vnet attach NET --vhost-user NAME`.
fn vhost_user(
    ctx: &Context,
    args: &AttachArgs,
    net: &str,
    stream_socket: &std::path::Path,
    name: &str,
    mac: MacAddr,
) -> Result<(), Failure> {
    let ports = ctx
        .client
        .ports(net)
        .map_err(|e| Failure::from(e).if_not_found("list the vnets with `vnet net ls`"))?;
    let socket = qemu::vhost_user_socket(stream_socket, name);
    let known = ports.iter().any(|p| {
        p.kind == vnet_control::PortKind::VhostUser
            && p.description.starts_with(&format!("vhost-user {name} "))
    });
    if !known {
        return Err(Failure::new(
            format!("vnet {net} has no vhost-user port {name}"),
            format!("add it first: vnet port add {net} --vhost-user {name}"),
        ));
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
    if ctx.json {
        return print_json(&QemuAttachment {
            network: net,
            netdev: "vhost-user",
            mac,
            args: &qemu_args,
        });
    }
    print(&format!("{}\n", qemu::shell_line(&qemu_args)))
}
