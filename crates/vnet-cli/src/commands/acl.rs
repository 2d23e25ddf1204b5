//! `vnet acl ls|add|rm|default`: a port's filters, rule by rule.

use vnet_control::policy::acl::{AclInsert, AclRule};

use super::Context;
use crate::cli::AclCommand;
use crate::failure::Failure;
use crate::output;

pub fn run(ctx: &Context, command: AclCommand) -> Result<(), Failure> {
    let not_found = |e| Failure::from(e).if_not_found("list the ports with `vnet port ls NET`");
    match command {
        AclCommand::Ls { net, port } => {
            let acl = ctx.client.acl(&net, port).map_err(not_found)?;
            ctx.show(&acl, output::acl_report)
        }
        AclCommand::Add {
            net,
            port,
            dir,
            position,
            rule,
        } => {
            let words = rule.join(" ");
            let rule: AclRule = words.parse().map_err(|e| {
                Failure::invalid(
                    format!("rule {words:?}: {e}"),
                    "see `vnet acl add --help` for the words of a rule",
                )
            })?;
            let insert = AclInsert {
                rule,
                position: position.map(|p| p as usize),
            };
            let acl = ctx
                .client
                .add_acl_rule(&net, port, dir, &insert)
                .map_err(not_found)?;
            ctx.show(&acl, output::acl_report)
        }
        AclCommand::Rm { net, port, dir, n } => ctx
            .client
            .remove_acl_rule(&net, port, dir, n as usize)
            .map_err(not_found),
        AclCommand::Default {
            net,
            port,
            dir,
            action,
        } => {
            let acl = ctx
                .client
                .set_acl_default(&net, port, dir, action)
                .map_err(not_found)?;
            ctx.show(&acl, output::acl_report)
        }
    }
}
