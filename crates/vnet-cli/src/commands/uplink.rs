//! `vnet uplink set|rm`

use vnet_control::{UplinkMode, UplinkSpec};

use super::{print, Context};
use crate::cli::UplinkCommand;
use crate::failure::Failure;

pub fn run(ctx: &Context, command: UplinkCommand) -> Result<(), Failure> {
    let not_found = |e| Failure::from(e).if_not_found("list the vnets with `vnet net ls`");
    match command {
        UplinkCommand::Set(args) => {
            let spec = UplinkSpec {
                interface: args.interface,
                vlan: args.vlan,
                mode: if args.trunk.is_some() {
                    UplinkMode::Trunk
                } else {
                    UplinkMode::Access
                },
                vlans: args.trunk.map(|t| t.0).unwrap_or_default(),
            };
            let info = ctx.client.set_uplink(&args.net, &spec).map_err(not_found)?;
            if ctx.json {
                return super::print_json(&info);
            }
            print(&format!(
                "{} is bridged: port {} ({})\n",
                args.net, info.id, info.description
            ))
        }
        UplinkCommand::Rm { net, if_exists } => {
            let removed = ctx.client.remove_uplink(&net);
            ctx.unless_absent(removed, &if_exists, Some(&net))
                .map_err(not_found)
        }
    }
}
