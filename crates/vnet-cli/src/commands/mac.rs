//! `vnet mac ls`

use super::Context;
use crate::cli::MacCommand;
use crate::failure::Failure;
use crate::output;

pub fn run(ctx: &Context, command: MacCommand) -> Result<(), Failure> {
    match command {
        MacCommand::Ls { net } => {
            let macs = ctx
                .client
                .macs(&net)
                .map_err(|e| Failure::from(e).if_not_found("list the vnets with `vnet net ls`"))?;
            ctx.show(&macs, |m| output::macs_table(m))
        }
    }
}
