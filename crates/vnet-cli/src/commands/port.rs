//! `vnet port ls|show|add|rm`

use vnet_control::{LinkState, PolicyPatch, PortInfo, PortKind, PortPolicy, PortSpec, VlanMode};

use super::{print, Added, Context};
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
        PortCommand::Rm {
            net,
            port,
            if_exists,
        } => {
            let removed = ctx.client.remove_port(&net, port);
            ctx.unless_absent(removed, &if_exists, Some(&net))
                .map_err(not_found)
        }
        PortCommand::Set(args) => set(ctx, args),
    }
}

/// `vnet port set`: the VLAN mode, then the policy, each if asked for.
fn set(ctx: &Context, args: SetPort) -> Result<(), Failure> {
    let not_found = |e| Failure::from(e).if_not_found(LIST_PORTS);
    let (net, id) = (&args.net, args.port);
    let mut changed = None;
    if args.access.is_some() || args.trunk.is_some() {
        let mode = vlan_mode(args.access, args.trunk.map(|t| t.0), args.native);
        changed = Some(
            ctx.client
                .set_port_vlan(net, id, &mode)
                .map_err(not_found)?,
        );
    }
    // Flags refine the sections in force: a port with none of its own starts from its
    // vnet's (`--allow-dhcp-server` under a strict vnet keeps the rest strict).
    let in_force = match &changed {
        Some(info) => info.enforced.clone(),
        None => ctx.client.port(net, id).map_err(not_found)?.enforced,
    };
    let patch = args.policy.patch(&in_force);
    if patch != PolicyPatch::default() {
        changed = Some(
            ctx.client
                .set_port_policy(net, id, &patch)
                .map_err(not_found)?,
        );
    }
    let Some(info) = changed else {
        return Err(Failure::invalid(
            "nothing to change",
            "give --access or --trunk, or policy flags (see `vnet port set --help`)",
        ));
    };
    if ctx.json {
        return super::print_json(&info);
    }
    print(&format!(
        "port {} of {net} is now {}\n{}",
        info.id,
        output::vlan_mode(&info.vlan),
        output::policy(&info.enforced)
    ))
}

fn add(ctx: &Context, args: AddPort) -> Result<(), Failure> {
    let vlan = vlan_mode(args.vlan, args.trunk.map(|t| t.0), args.native);
    let spec = match (args.tap, args.interface, args.vhost_user) {
        (Some(ifname), _, _) => PortSpec::Tap {
            ifname,
            vlan,
            policy: PortPolicy::default(),
        },
        (None, Some(interface), _) => PortSpec::Interface {
            interface,
            vlan,
            policy: PortPolicy::default(),
        },
        (None, None, Some(name)) => PortSpec::VhostUser {
            name,
            vlan,
            policy: PortPolicy::default(),
        },
        (None, None, None) => unreachable!("clap requires --tap, --interface or --vhost-user"),
    };
    let added = ctx.client.add_port(&args.net, &spec);
    let added = ctx
        .unless_present(added, &args.may_exist, |c| {
            Ok(same_port(c.ports(&args.net)?, &spec))
        })
        .map_err(|e| Failure::from(e).if_not_found("list the vnets with `vnet net ls`"))?;
    let info = match added {
        Added::New(info) => info,
        Added::There(info) if ctx.json => return super::print_json(&info),
        Added::There(_) => return Ok(()),
    };
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

/// The port `spec` would have made, if the vnet has it: a TAP, interface or vhost-user
/// port is described as `KIND NAME ...` (its VLANs are not compared).
fn same_port(ports: Vec<PortInfo>, spec: &PortSpec) -> Option<PortInfo> {
    let (kind, name) = match spec {
        PortSpec::Tap { ifname, .. } => (PortKind::Tap, ifname),
        PortSpec::Interface { interface, .. } => (PortKind::Interface, interface),
        PortSpec::VhostUser { name, .. } => (PortKind::VhostUser, name),
    };
    ports
        .into_iter()
        .find(|p| p.kind == kind && p.description.split_whitespace().nth(1) == Some(name))
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

    fn port(id: u32, kind: PortKind, description: &str) -> PortInfo {
        PortInfo {
            vxlan: None,
            id,
            kind,
            description: description.into(),
            pid: None,
            vlan: VlanMode::default(),
            mac: None,
            promiscuous: false,
            macs: Vec::new(),
            counters: Default::default(),
            queue_len: 0,
            queue_capacity: 512,
            state: None,
            uid: None,
            policy: PortPolicy::default(),
            enforced: PortPolicy::default(),
            policy_counters: Default::default(),
        }
    }

    #[test]
    fn the_port_a_spec_would_make_is_found_by_kind_and_name() {
        let ports = || {
            vec![
                port(1, PortKind::Tap, "tap lab-vm10"),
                port(2, PortKind::Tap, "tap lab-vm1"),
                port(
                    3,
                    PortKind::VhostUser,
                    "vhost-user vm1 /run/vnet/lab/vhost-user/vm1.sock (waiting)",
                ),
                port(4, PortKind::Interface, "interface fc-tap0"),
            ]
        };
        let tap = |ifname: &str| PortSpec::Tap {
            ifname: ifname.into(),
            vlan: VlanMode::default(),
            policy: Default::default(),
        };
        let vhost = PortSpec::VhostUser {
            name: "vm1".into(),
            vlan: VlanMode::default(),
            policy: Default::default(),
        };
        assert_eq!(same_port(ports(), &tap("lab-vm1")).map(|p| p.id), Some(2));
        assert_eq!(same_port(ports(), &vhost).map(|p| p.id), Some(3));
        assert_eq!(same_port(ports(), &tap("vm1")).map(|p| p.id), None);
        assert_eq!(same_port(ports(), &tap("lab-vm")).map(|p| p.id), None);
        let interface = |name: &str| PortSpec::Interface {
            interface: name.into(),
            vlan: VlanMode::default(),
            policy: Default::default(),
        };
        assert_eq!(
            same_port(ports(), &interface("fc-tap0")).map(|p| p.id),
            Some(4)
        );
        assert_eq!(same_port(ports(), &tap("fc-tap0")).map(|p| p.id), None);
    }

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
