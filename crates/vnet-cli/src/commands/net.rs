//! `vnet net ls|show|create|rm|policy`

use vnet_control::{DhcpSpec, HostAdapterSpec, NetworkSpec};

use super::{print, Added, Context};
use crate::cli::{CreateNet, NetCommand};
use crate::failure::Failure;
use crate::output;

const LIST_NETS: &str = "list the vnets with `vnet net ls`";

pub fn run(ctx: &Context, command: NetCommand) -> Result<(), Failure> {
    match command {
        NetCommand::Ls => ctx.show(&ctx.client.networks()?, |n| output::networks_table(n)),
        NetCommand::Show { net } => {
            let info = ctx
                .client
                .network(&net)
                .map_err(|e| Failure::from(e).if_not_found(LIST_NETS))?;
            ctx.show(&info, output::network_details)
        }
        NetCommand::Create(args) => create(ctx, args),
        NetCommand::Rm { net, if_exists } => {
            let removed = ctx.client.delete_network(&net);
            ctx.unless_absent(removed, &if_exists, None)
                .map_err(|e| Failure::from(e).if_not_found(LIST_NETS))
        }
        NetCommand::Policy { net, policy } => super::policy::net_policy(ctx, &net, &policy),
    }
}

fn create(ctx: &Context, args: CreateNet) -> Result<(), Failure> {
    let mut spec = NetworkSpec::named(args.net);
    spec.mtu = args.mtu.unwrap_or(spec.mtu);
    spec.mac_aging_secs = args.mac_aging.unwrap_or(spec.mac_aging_secs);
    spec.max_macs_per_port = args.max_macs_per_port.unwrap_or(spec.max_macs_per_port);
    spec.max_macs = args.max_macs.unwrap_or(spec.max_macs);
    spec.subnet = args.subnet;
    spec.subnet6 = args.subnet6;
    spec.ipv6 = !args.no_ipv6;
    spec.snooping = !args.no_snooping;
    spec.host_adapter = args.host_adapter.map(|address| HostAdapterSpec {
        name: None,
        address,
    });
    spec.dhcp = args.dhcp.then(|| DhcpSpec {
        ipv6: args.dhcp6.unwrap_or_default(),
        ..DhcpSpec::default()
    });
    spec.nat = args.nat.then(vnet_control::NatSpec::default);
    spec.transient = args.transient;
    spec.allow_users = args.allow_users;
    spec.allow_groups = args.allow_groups;
    let created = ctx.client.create_network(&spec);
    let info = match ctx.unless_present(created, &args.may_exist, |c| {
        c.network(&spec.name).map(Some)
    })? {
        Added::New(info) => info,
        Added::There(info) if ctx.json => return super::print_json(&info),
        Added::There(_) => return Ok(()),
    };
    if ctx.json {
        return super::print_json(&info);
    }
    print(&format!(
        "created vnet {name}: attach a VM with `vnet attach {name} --qemu`\n",
        name = info.name
    ))?;
    if spec.host_adapter.is_some() && info.host_adapter.is_none() {
        eprintln!(
            "vnet: vnetd did not set up the host adapter of {} (it needs root): see its log",
            info.name
        );
    }
    Ok(())
}
