//! `vnet dhcp show|set|reserve|unreserve`

use vnet_control::{DhcpSpec, MacAddr, Reservation};

use super::{print, print_json, Context};
use crate::cli::{DhcpCommand, DnsList, IpRange, Reserve, SetDhcp};
use crate::failure::Failure;
use crate::output;

const LIST_NETS: &str = "list the vnets with `vnet net ls`";

pub fn run(ctx: &Context, command: DhcpCommand) -> Result<(), Failure> {
    match command {
        DhcpCommand::Show { net } => show(ctx, &net),
        DhcpCommand::Set(args) => set(ctx, args),
        DhcpCommand::Reserve(args) => reserve(ctx, args),
        DhcpCommand::Unreserve { net, mac } => unreserve(ctx, &net, mac),
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
    let dhcp = merge(info.dhcp, &args);
    let info = ctx.client.set_dhcp(net, &dhcp).map_err(|e| {
        Failure::from(e).if_not_found(LIST_NETS).if_status(
            400,
            format!("see the vnet's subnet with `vnet net show {net}`"),
        )
    })?;
    if ctx.json {
        return print_json(&info);
    }
    print(&output::dhcp_details(info.dhcp.as_ref().unwrap_or(&dhcp)))
}

/// The DHCP settings `vnet dhcp set` sends: the vnet's current ones (or the defaults, if
/// it has none) with the options given on the command line applied. Reservations are
/// kept.
pub fn merge(current: Option<DhcpSpec>, args: &SetDhcp) -> DhcpSpec {
    let mut dhcp = current.unwrap_or_default();
    if args.on {
        dhcp.enabled = true;
    }
    if args.off {
        dhcp.enabled = false;
    }
    if let Some(IpRange(range)) = args.range {
        dhcp.range = Some(range);
    }
    if let Some(secs) = args.lease {
        dhcp.lease_secs = secs;
    }
    if let Some(DnsList(dns)) = &args.dns {
        dhcp.dns = dns.clone();
    }
    if let Some(domain) = &args.domain {
        let domain = domain.trim();
        dhcp.domain = (!domain.is_empty()).then(|| domain.to_string());
    }
    dhcp
}

fn reserve(ctx: &Context, args: Reserve) -> Result<(), Failure> {
    let net = args.net.as_str();
    let reservation = Reservation {
        mac: args.mac,
        ip: args.ip,
        hostname: args.hostname,
    };
    let made = ctx
        .client
        .add_reservation(net, &reservation)
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
    if ctx.json {
        return print_json(&made);
    }
    let hostname = made
        .hostname
        .as_ref()
        .map_or(String::new(), |h| format!(" ({h})"));
    print(&format!(
        "reserved {} for {}{hostname} on {net}\n",
        made.ip, made.mac
    ))
}

fn unreserve(ctx: &Context, net: &str, mac: MacAddr) -> Result<(), Failure> {
    ctx.client.remove_reservation(net, mac).map_err(|e| {
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
        }
    }

    /// What a daemon answers for a vnet with DHCP: defaults filled in, a reservation.
    fn running() -> DhcpSpec {
        DhcpSpec {
            enabled: true,
            range: Some([ip("192.168.101.128"), ip("192.168.101.253")]),
            server: Some(ip("192.168.101.254")),
            lease_secs: 1800,
            dns: vec![ip("192.168.101.1")],
            domain: Some("lab".into()),
            reservations: vec![Reservation {
                mac: "52:54:00:aa:bb:cc".parse().unwrap(),
                ip: ip("192.168.101.10"),
                hostname: None,
            }],
        }
    }

    #[test]
    fn only_what_is_given_changes() {
        let args = SetDhcp {
            range: Some(IpRange([ip("192.168.101.50"), ip("192.168.101.60")])),
            lease: Some(600),
            ..no_changes()
        };
        let merged = merge(Some(running()), &args);
        assert_eq!(
            merged,
            DhcpSpec {
                range: Some([ip("192.168.101.50"), ip("192.168.101.60")]),
                lease_secs: 600,
                ..running()
            }
        );
        // Server, DNS, domain and reservations are sent back as they were.
        assert_eq!(merged.reservations, running().reservations);
        assert_eq!(merged.server, Some(ip("192.168.101.254")));
    }

    #[test]
    fn on_and_off_switch_the_service_keeping_its_settings() {
        let off = merge(
            Some(running()),
            &SetDhcp {
                off: true,
                ..no_changes()
            },
        );
        assert_eq!(
            off,
            DhcpSpec {
                enabled: false,
                ..running()
            }
        );
        let on = merge(
            Some(off),
            &SetDhcp {
                on: true,
                ..no_changes()
            },
        );
        assert_eq!(on, running());
    }

    #[test]
    fn a_vnet_without_dhcp_starts_from_the_defaults() {
        let merged = merge(
            None,
            &SetDhcp {
                on: true,
                dns: Some(DnsList(vec![ip("9.9.9.9")])),
                ..no_changes()
            },
        );
        assert_eq!(
            merged,
            DhcpSpec {
                dns: vec![ip("9.9.9.9")],
                ..DhcpSpec::default()
            }
        );
        assert!(merged.enabled);
        assert_eq!(merged.range, None, "the daemon fills in the default pool");
        // --off on a vnet without DHCP configures it silent.
        assert!(
            !merge(
                None,
                &SetDhcp {
                    off: true,
                    ..no_changes()
                }
            )
            .enabled
        );
    }

    #[test]
    fn empty_dns_and_domain_clear_them() {
        let merged = merge(
            Some(running()),
            &SetDhcp {
                dns: Some(DnsList(vec![])),
                domain: Some(" ".into()),
                ..no_changes()
            },
        );
        assert!(merged.dns.is_empty());
        assert_eq!(merged.domain, None);
        let merged = merge(
            Some(running()),
            &SetDhcp {
                domain: Some("example.test".into()),
                ..no_changes()
            },
        );
        assert_eq!(merged.domain.as_deref(), Some("example.test"));
    }
}
