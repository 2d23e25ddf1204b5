//! `vnet lease ls`

use std::time::{SystemTime, UNIX_EPOCH};

use super::Context;
use crate::cli::LeaseCommand;
use crate::failure::Failure;
use crate::output;

pub fn run(ctx: &Context, command: LeaseCommand) -> Result<(), Failure> {
    match command {
        LeaseCommand::Ls { net } => {
            let leases = ctx
                .client
                .leases(&net)
                .map_err(|e| Failure::from(e).if_not_found("list the vnets with `vnet net ls`"))?;
            ctx.show(&leases, |l| output::leases_table(l, unix_now()))
        }
    }
}

/// Seconds since the Unix epoch, as lease expiry times count them.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
