//! `vnet forward ls|add|rm`

use vnet_control::{ForwardProto, ForwardSpec};

use super::{print, Added, Context};
use crate::cli::ForwardCommand;
use crate::failure::Failure;

pub fn run(ctx: &Context, command: ForwardCommand) -> Result<(), Failure> {
    let not_found = |e| Failure::from(e).if_not_found("list the vnets with `vnet net ls`");
    match command {
        ForwardCommand::Ls { net } => {
            let forwards = ctx.client.forwards(&net).map_err(not_found)?;
            ctx.show(&forwards, |fs| {
                if fs.is_empty() {
                    return format!("{net} forwards nothing (add one with `vnet forward add`)\n");
                }
                fs.iter()
                    .map(|f| format!("{} {} -> {}\n", f.proto.as_str(), f.host, f.guest))
                    .collect()
            })
        }
        ForwardCommand::Add {
            net,
            host,
            guest,
            udp,
            may_exist,
        } => {
            let spec = ForwardSpec {
                proto: proto(udp),
                host,
                guest,
            };
            let added = ctx.client.add_forward(&net, &spec);
            let added = ctx
                .unless_present(added, &may_exist, |c| {
                    let forwards = c.forwards(&net)?;
                    Ok(forwards
                        .into_iter()
                        .find(|f| f.proto == spec.proto && f.host == spec.host))
                })
                .map_err(not_found)?;
            let f = match added {
                Added::New(f) => f,
                Added::There(f) if ctx.json => return super::print_json(&f),
                Added::There(_) => return Ok(()),
            };
            if ctx.json {
                return super::print_json(&f);
            }
            print(&format!(
                "{net}: {} {} -> {}\n",
                f.proto.as_str(),
                f.host,
                f.guest
            ))
        }
        ForwardCommand::Rm {
            net,
            host,
            udp,
            if_exists,
        } => {
            let removed = ctx.client.remove_forward(&net, proto(udp), host);
            ctx.unless_absent(removed, &if_exists, Some(&net))
                .map_err(not_found)
        }
    }
}

fn proto(udp: bool) -> ForwardProto {
    if udp {
        ForwardProto::Udp
    } else {
        ForwardProto::Tcp
    }
}
