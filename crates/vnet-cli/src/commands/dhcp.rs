//! `vnet dhcp show|set|reserve|unreserve`

use vnet_control::{DhcpPatch, MacAddr, Reservation};

use super::{print, print_json, Added, Context};
use crate::cli::{DhcpCommand, DnsList, IfExists, IpRange, Reserve, SetDhcp};
use crate::failure::Failure;
use crate::output;

const LIST_NETS: &str = "list the vnets with `vnet net ls`";

pub fn run(ctx: &Context, command: DhcpCommand) -> Result<(), Failure> {
    match command {
        DhcpCommand::Show { net } => show(ctx, &net),
        DhcpCommand::Set(args) => set(ctx, args),
        DhcpCommand::Reserve(args) => reserve(ctx, args),
        DhcpCommand::Unreserve {
            net,
            mac,
            if_exists,
        } => unreserve(ctx, &net, mac, &if_exists),
    }
}

fn show(ctx: &Context, net: &str) -> Result<(), Failure> {
    let info = ctx
        .client
        .network(net)
        .map_err(|e| Failure::from(e).if_not_found(LIST_NETS))?;
    if ctx.json {
        // `null` when the vnet has no DHCP service.
        return print_json(&info.dhcp);
    }
    match (&info.dhcp, info.subnet) {
        (Some(dhcp), _) => print(&output::dhcp_details(dhcp)),
        (None, Some(_)) => print(&format!(
            "vnet {net} has no DHCP service: start one with `vnet dhcp set {net} --on`\n"
        )),
        (None, None) => print(&format!(
            "vnet {net} has no DHCP service, nor the subnet it needs (a subnet is set by \
             `vnet net create {net} --subnet CIDR`)\n"
        )),
    }
}

fn set(ctx: &Context, args: SetDhcp) -> Result<(), Failure> {
    let net = args.net.as_str();
    let info = ctx
        .client
        .network(net)
        .map_err(|e| Failure::from(e).if_not_found(LIST_NETS))?;
    if info.subnet.is_none() {
        return Err(Failure::new(
            format!("vnet {net} has no subnet, and DHCP needs one"),
            format!("create it with one: `vnet net rm {net}`, then `vnet net create {net} --subnet CIDR --dhcp`"),
        ));
    }
    let info = ctx.client.patch_dhcp(net, &patch(&args)).map_err(|e| {
        Failure::from(e).if_not_found(LIST_NETS).if_status(
            400,
            format!("see the vnet's subnet with `vnet net show {net}`"),
        )
    })?;
    if ctx.json {
        return print_json(&info);
    }
    match &info.dhcp {
        Some(dhcp) => print(&output::dhcp_details(dhcp)),
        None => Ok(()),
    }
}

/// The change `vnet dhcp set` asks for: only the options given on the command line.
/// vnetd applies it to the settings it has at that moment (`PATCH`), so nothing set
/// meanwhile, such as a reservation, is lost.
pub fn patch(args: &SetDhcp) -> DhcpPatch {
    DhcpPatch {
        enabled: match (args.on, args.off) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
        range: args.range.map(|IpRange(range)| range),
        server: None,
        lease_secs: args.lease,
        dns: args.dns.as_ref().map(|DnsList(dns)| dns.clone()),
        domain: args.domain.clone(),
        ipv6: args.dhcp6,
        range6: args.range6.map(|IpRange(range)| range),
        dns6: args.dns6.as_ref().map(|DnsList(dns)| dns.clone()),
    }
}

fn reserve(ctx: &Context, args: Reserve) -> Result<(), Failure> {
    let net = args.net.as_str();
    let reservation = Reservation {
        mac: args.mac,
        ip: args.ip,
        hostname: args.hostname,
        ip6: args.ip6,
        duid: args.duid,
    };
    let added = ctx.client.add_reservation(net, &reservation);
    let added = ctx
        .unless_present(added, &args.may_exist, |c| {
            let dhcp = c.network(net)?.dhcp.unwrap_or_default();
            Ok(dhcp
                .reservations
                .into_iter()
                .find(|r| r.mac == reservation.mac))
        })
        .map_err(|e| {
            Failure::from(e)
                .if_not_found(LIST_NETS)
                .if_status(
                    409,
                    format!(
                        "remove it first with `vnet dhcp unreserve {net} {}`",
                        reservation.mac
                    ),
                )
                .if_status(
                    400,
                    format!(
                        "pick a free address in the subnet (`vnet net show {net}`, `vnet lease ls {net}`)"
                    ),
                )
        })?;
    let made = match added {
        Added::New(made) => made,
        Added::There(there) if ctx.json => return print_json(&there),
        Added::There(_) => return Ok(()),
    };
    if ctx.json {
        return print_json(&made);
    }
    let hostname = made
        .hostname
        .as_ref()
        .map_or(String::new(), |h| format!(" ({h})"));
    let ip6 = made.ip6.map_or(String::new(), |ip6| format!(" and {ip6}"));
    let duid = made
        .duid
        .as_ref()
        .map_or(String::new(), |d| format!(" (DUID {d})"));
    print(&format!(
        "reserved {}{ip6} for {}{duid}{hostname} on {net}\n",
        made.ip, made.mac
    ))
}

fn unreserve(ctx: &Context, net: &str, mac: MacAddr, flag: &IfExists) -> Result<(), Failure> {
    let removed = ctx.client.remove_reservation(net, mac);
    ctx.unless_absent(removed, flag, Some(net)).map_err(|e| {
        Failure::from(e).if_not_found(format!(
            "list the vnet's reservations with `vnet dhcp show {net}`"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    /// `vnet dhcp set NET` with nothing given yet.
    fn no_changes() -> SetDhcp {
        SetDhcp {
            net: "vmnet1".into(),
            on: false,
            off: false,
            range: None,
            lease: None,
            dns: None,
            domain: None,
            dhcp6: None,
            range6: None,
            dns6: None,
        }
    }

    #[test]
    fn only_what_is_given_is_sent() {
        assert_eq!(patch(&no_changes()), DhcpPatch::default());
        let args = SetDhcp {
            range: Some(IpRange([ip("192.168.101.50"), ip("192.168.101.60")])),
            lease: Some(600),
            ..no_changes()
        };
        assert_eq!(
            patch(&args),
            DhcpPatch {
                range: Some([ip("192.168.101.50"), ip("192.168.101.60")]),
                lease_secs: Some(600),
                ..DhcpPatch::default()
            }
        );
        // Serialized without the rest: vnetd keeps what is not named.
        assert_eq!(
            serde_json::to_string(&patch(&args)).unwrap(),
            r#"{"range":["192.168.101.50","192.168.101.60"],"lease_secs":600}"#
        );
    }

    #[test]
    fn on_off_dns_and_domain_become_the_patch() {
        let on = SetDhcp {
            on: true,
            ..no_changes()
        };
        assert_eq!(patch(&on).enabled, Some(true));
        let off = SetDhcp {
            off: true,
            ..no_changes()
        };
        assert_eq!(patch(&off).enabled, Some(false));
        let cleared = SetDhcp {
            dns: Some(DnsList(vec![])),
            domain: Some(String::new()),
            ..no_changes()
        };
        assert_eq!(
            patch(&cleared),
            DhcpPatch {
                dns: Some(vec![]),
                domain: Some(String::new()),
                ..DhcpPatch::default()
            }
        );
    }
}
