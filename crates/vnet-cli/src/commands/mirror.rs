//! `vnet mirror ls|add|rm`

use vnet_control::MirrorSpec;

use super::Context;
use crate::cli::MirrorCommand;
use crate::failure::Failure;
use crate::output;

pub fn run(ctx: &Context, command: MirrorCommand) -> Result<(), Failure> {
    let not_found = |e| Failure::from(e).if_not_found("list the vnets with `vnet net ls`");
    match command {
        MirrorCommand::Ls { net } => {
            let mirrors = ctx.client.mirrors(&net).map_err(not_found)?;
            ctx.show(&mirrors, |ms| {
                if ms.is_empty() {
                    return format!("{net} has no mirror (add one with `vnet mirror add`)\n");
                }
                output::mirrors_table(ms)
            })
        }
        MirrorCommand::Add {
            net,
            name,
            sources,
            direction,
            destination,
        } => {
            let spec = MirrorSpec {
                name,
                sources,
                direction,
                destination,
            };
            let m = ctx.client.add_mirror(&net, &spec).map_err(not_found)?;
            ctx.show(&m, |m| {
                let sources: Vec<String> = m.sources.iter().map(ToString::to_string).collect();
                let mut text = format!(
                    "{net}: mirror {} copies {} ({}) to {}",
                    m.name,
                    sources.join(","),
                    m.direction.as_str(),
                    m.destination
                );
                if let Some(why) = &m.reason {
                    text.push_str(&format!(", once its ports are there ({why})"));
                }
                text.push('\n');
                text
            })
        }
        MirrorCommand::Rm {
            net,
            name,
            if_exists,
        } => {
            let removed = ctx.client.remove_mirror(&net, &name);
            ctx.unless_absent(removed, &if_exists, Some(&net))
                .map_err(not_found)
        }
    }
}
