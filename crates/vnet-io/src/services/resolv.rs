//! The host's resolvers, the NAT device's DNS upstreams unless the config names some:
//! the `nameserver` lines of `/etc/resolv.conf`, IPv4 and IPv6, in order, on port 53.
//!
//! A link-local IPv6 server names its link (`nameserver fe80::1%eth0`): the name
//! becomes the interface's index, the socket address's scope, without which the kernel
//! could not tell where to send. One whose interface does not exist (or that names
//! none) is skipped with a warning, as is anything that is not an address.

use std::net::{IpAddr, SocketAddr, SocketAddrV6};

use tracing::warn;

/// The upstreams `/etc/resolv.conf` lists (none if it cannot be read).
pub fn host_resolvers() -> Vec<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let index_of = |name: &str| nix::net::if_::if_nametoindex(name).ok();
    let (upstreams, skipped) = parse(&text, index_of);
    for why in skipped {
        warn!("/etc/resolv.conf: {why}");
    }
    upstreams
}

/// The nameservers of resolv.conf `text`, with `index_of` giving an interface's index
/// by name; and why the lines that were skipped were skipped.
pub fn parse(text: &str, index_of: impl Fn(&str) -> Option<u32>) -> (Vec<SocketAddr>, Vec<String>) {
    let (mut upstreams, mut skipped) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(server) = words.next() else {
            continue;
        };
        let (address, scope) = match server.split_once('%') {
            Some((address, scope)) => (address, Some(scope)),
            None => (server, None),
        };
        let Ok(ip) = address.parse::<IpAddr>() else {
            skipped.push(format!("nameserver {server}: not an IP address, skipped"));
            continue;
        };
        let ip = match ip {
            IpAddr::V6(v6) if v6.is_unicast_link_local() => {
                // A number is an index already (as getaddrinfo takes it).
                let index = scope.and_then(|s| s.parse().ok().or_else(|| index_of(s)));
                match index {
                    Some(index) if index > 0 => {
                        upstreams.push(SocketAddr::V6(SocketAddrV6::new(v6, 53, 0, index)));
                        continue;
                    }
                    _ => {
                        skipped.push(format!(
                            "nameserver {server}: a link-local address needs an existing interface (fe80::…%eth0), skipped"
                        ));
                        continue;
                    }
                }
            }
            // Link-local IPv4-mapped addresses are not a thing; map them back.
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        upstreams.push(SocketAddr::new(ip, 53));
    }
    (upstreams, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_of(name: &str) -> Option<u32> {
        (name == "eth0").then_some(2)
    }

    #[test]
    fn nameservers_of_both_families_are_kept_in_order() {
        let text = "# generated\nsearch lab.example\nnameserver 192.0.2.53\n\
                    nameserver fd00::53\n  nameserver   ::1  # local\noptions edns0\n\
                    nameserver ::ffff:198.51.100.1\n";
        let (upstreams, skipped) = parse(text, index_of);
        let expected: Vec<SocketAddr> = [
            "192.0.2.53:53",
            "[fd00::53]:53",
            "[::1]:53",
            "198.51.100.1:53",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        assert_eq!(upstreams, expected);
        assert!(skipped.is_empty(), "{skipped:?}");
    }

    #[test]
    fn link_local_servers_get_their_interface_as_scope_or_are_skipped() {
        let text = "nameserver fe80::1%eth0\nnameserver fe80::2%7\nnameserver fe80::3\n\
                    nameserver fe80::4%nosuch\nnameserver dns.example\nnameserver\n";
        let (upstreams, skipped) = parse(text, index_of);
        let ll = |last, scope| {
            SocketAddr::V6(SocketAddrV6::new(
                std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, last),
                53,
                0,
                scope,
            ))
        };
        assert_eq!(upstreams, [ll(1, 2), ll(2, 7)]);
        assert_eq!(skipped.len(), 3, "{skipped:?}");
        assert!(skipped[0].contains("fe80::3") && skipped[0].contains("link-local"));
        assert!(skipped[1].contains("fe80::4%nosuch"));
        assert!(skipped[2].contains("not an IP address"));
    }
}
