//! `vnet config export`, `vnet reload`

use super::{print, Context};
use crate::cli::ConfigCommand;
use crate::failure::Failure;

pub fn run(ctx: &Context, command: ConfigCommand) -> Result<(), Failure> {
    match command {
        // TOML is the answer whatever --json says: it is a config file.
        ConfigCommand::Export => print(&ctx.client.export_config()?),
    }
}

pub fn reload(ctx: &Context) -> Result<(), Failure> {
    let reloaded = ctx.client.reload()?;
    ctx.show(&reloaded, |r| match r.changes.as_slice() {
        [] => "reloaded: the config file changes nothing\n".to_string(),
        changes => format!("reloaded:\n{}\n", changes.join("\n")),
    })
}
