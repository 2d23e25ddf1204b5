//! `vnet port ls|show|add|rm`

use vnet_control::{LinkState, PortSpec, VlanMode};

use super::{print, Context};
use crate::cli::{AddPort, PortCommand, SetPort};
use crate::failure::Failure;
use crate::output;

const LIST_PORTS: &str =
    "list the vnets with `vnet net ls` and their ports with `vnet port ls NET`";

pub fn run(ctx: &Context, command: PortCommand) -> Result<(), Failure> {
    let not_found = |e| Failure::from(e).if_not_found(LIST_PORTS);
    match command {
        PortCommand::Ls { net } => {
            let ports = ctx.client.ports(&net).map_err(not_found)?;
            ctx.show(&ports, |p| output::ports_table(p))
        }
        PortCommand::Show { net, port } => {
            let info = ctx.client.port(&net, port).map_err(not_found)?;
            ctx.show(&info, output::port_details)
        }
        PortCommand::Add(args) => add(ctx, args),
        PortCommand::Rm { net, port } => ctx.client.remove_port(&net, port).map_err(not_found),
        PortCommand::Set(args) => set(ctx, args),
    }
}

fn set(ctx: &Context, args: SetPort) -> Result<(), Failure> {
    let mode = vlan_mode(args.access, args.trunk.map(|t| t.0), args.native);
    let info = ctx
        .client
        .set_port_vlan(&args.net, args.port, &mode)
        .map_err(|e| Failure::from(e).if_not_found(LIST_PORTS))?;
    if ctx.json {
        return super::print_json(&info);
    }
    print(&format!(
        "port {} of {} is now {}\n",
        info.id,
        args.net,
        output::vlan_mode(&info.vlan)
    ))
}

fn add(ctx: &Context, args: AddPort) -> Result<(), Failure> {
    let vlan = vlan_mode(args.vlan, args.trunk.map(|t| t.0), args.native);
    let spec = match (args.tap, args.interface, args.vhost_user) {
        (Some(ifname), _, _) => PortSpec::Tap { ifname, vlan },
        (None, Some(interface), _) => PortSpec::Interface { interface, vlan },
        (None, None, Some(name)) => PortSpec::VhostUser { name, vlan },
        (None, None, None) => unreachable!("clap requires --tap, --interface or --vhost-user"),
    };
    let info = ctx
        .client
        .add_port(&args.net, &spec)
        .map_err(|e| Failure::from(e).if_not_found("list the vnets with `vnet net ls`"))?;
    if ctx.json {
        return super::print_json(&info);
    }
    let waiting = match info.state {
        Some(LinkState::Down) => {
            "; its interface is down or does not exist yet: the port waits for it"
        }
        _ => "",
    };
    print(&format!(
        "added port {} to {} ({}, {}){waiting}\n",
        info.id,
        args.net,
        info.description,
        output::vlan_mode(&info.vlan)
    ))
}

/// `--vlan N` → access N; `--trunk LIST [--native N]` → trunk; neither → the default.
fn vlan_mode(access: Option<u16>, trunk: Option<Vec<u16>>, native: Option<u16>) -> VlanMode {
    match (access, trunk) {
        (_, Some(allowed)) => VlanMode::Trunk { allowed, native },
        (Some(vlan), None) => VlanMode::Access { vlan },
        (None, None) => VlanMode::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vlan_flags_become_the_api_mode() {
        assert_eq!(vlan_mode(None, None, None), VlanMode::Access { vlan: 1 });
        assert_eq!(
            vlan_mode(Some(10), None, None),
            VlanMode::Access { vlan: 10 }
        );
        assert_eq!(
            vlan_mode(None, Some(vec![10, 20]), Some(1)),
            VlanMode::Trunk {
                allowed: vec![10, 20],
                native: Some(1)
            }
        );
    }
}
