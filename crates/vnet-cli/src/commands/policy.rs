//! `vnet net policy`, and the policy flags of `vnet port set`: flags into a change of
//! the policy as it is.

use vnet_control::{PolicyPatch, PortPolicy};

use super::{print, Context};
use crate::cli::PolicyArgs;
use crate::failure::Failure;
use crate::output;

impl PolicyArgs {
    /// The change the flags ask for, made on the policy as it is (`now`): a section is
    /// in it only when one of its flags was given.
    pub fn patch(&self, now: &PortPolicy) -> PolicyPatch {
        PolicyPatch {
            security: self.security.patch(now.security.as_ref()),
            rate: self.rate.section(now.rate.as_ref()),
            impair: self.impair.section(now.impair.as_ref()),
            ..PolicyPatch::default()
        }
    }
}

/// `vnet net policy NET [flags]`: shows the vnet's policy, or changes it.
pub fn net_policy(ctx: &Context, net: &str, args: &PolicyArgs) -> Result<(), Failure> {
    let not_found = |e| Failure::from(e).if_not_found("list the vnets with `vnet net ls`");
    let now = ctx.client.policy(net).map_err(not_found)?;
    let patch = args.patch(&now);
    let policy = if patch == PolicyPatch::default() {
        now
    } else {
        ctx.client.set_policy(net, &patch).map_err(not_found)?
    };
    if ctx.json {
        return super::print_json(&policy);
    }
    print(&output::policy(&policy))
}
