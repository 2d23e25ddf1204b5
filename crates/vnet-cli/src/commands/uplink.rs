//! `vnet uplink set|rm|remote add|remote rm`

use vnet_control::{UplinkMode, UplinkSpec, VxlanSpec};

use super::{print, Context};
use crate::cli::{RemoteCommand, SetUplink, UplinkCommand};
use crate::failure::Failure;

pub fn run(ctx: &Context, command: UplinkCommand) -> Result<(), Failure> {
    let not_found = |e| Failure::from(e).if_not_found("list the vnets with `vnet net ls`");
    match command {
        UplinkCommand::Set(args) => {
            let net = args.net.clone();
            let spec = spec(args);
            let info = ctx.client.set_uplink(&net, &spec).map_err(not_found)?;
            if ctx.json {
                return super::print_json(&info);
            }
            let what = if spec.vxlan.is_some() {
                "a VXLAN segment"
            } else {
                "bridged"
            };
            print(&format!(
                "{net} is {what}: port {} ({})\n",
                info.id, info.description
            ))
        }
        UplinkCommand::Rm { net, if_exists } => {
            let removed = ctx.client.remove_uplink(&net);
            ctx.unless_absent(removed, &if_exists, Some(&net))
                .map_err(not_found)
        }
        UplinkCommand::Remote(RemoteCommand::Add { net, addr }) => {
            let info = ctx.client.add_remote(&net, addr).map_err(not_found)?;
            if ctx.json {
                return super::print_json(&info);
            }
            print(&format!("{net} floods to {addr} too\n"))
        }
        UplinkCommand::Remote(RemoteCommand::Rm {
            net,
            addr,
            if_exists,
        }) => {
            let removed = ctx.client.remove_remote(&net, addr);
            ctx.unless_absent(removed, &if_exists, Some(&net))
                .map_err(not_found)
        }
    }
}

/// The uplink the arguments describe: a VXLAN segment with `--vxlan`, else a NIC.
fn spec(args: SetUplink) -> UplinkSpec {
    let vxlan = match (args.vxlan, args.local) {
        (Some(vni), Some(local)) => {
            let mut vx = VxlanSpec::new(vni, local);
            vx.remotes = args.remotes;
            vx.group = args.group;
            if let Some(port) = args.vxlan_port {
                vx.port = port;
            }
            Some(vx)
        }
        _ => None,
    };
    UplinkSpec {
        vxlan,
        interface: args.interface.unwrap_or_default(),
        vlan: args.vlan,
        mode: if args.trunk.is_some() {
            UplinkMode::Trunk
        } else {
            UplinkMode::Access
        },
        vlans: args.trunk.map(|t| t.0).unwrap_or_default(),
    }
}
