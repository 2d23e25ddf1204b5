//! `vnet fdb ls|add|rm`: a VXLAN vnet's forwarding database, the `bridge fdb` of vnet.

use vnet_control::FdbSpec;

use super::{print, Context};
use crate::cli::FdbCommand;
use crate::failure::Failure;
use crate::output;

pub fn run(ctx: &Context, command: FdbCommand) -> Result<(), Failure> {
    let not_found = |e| Failure::from(e).if_not_found("list the vnets with `vnet net ls`");
    match command {
        FdbCommand::Ls { net } => {
            let rows = ctx.client.fdb(&net).map_err(not_found)?;
            ctx.show(&rows, |r| output::fdb_table(r))
        }
        FdbCommand::Add { net, mac, remote } => {
            let entry = ctx
                .client
                .add_fdb(&net, &FdbSpec { mac, remote })
                .map_err(not_found)?;
            if ctx.json {
                return super::print_json(&entry);
            }
            print(&format!("{mac} is pinned behind {remote} on {net}\n"))
        }
        FdbCommand::Rm {
            net,
            mac,
            if_exists,
        } => {
            let removed = ctx.client.remove_fdb(&net, mac);
            ctx.unless_absent(removed, &if_exists, Some(&net))
                .map_err(not_found)
        }
    }
}
