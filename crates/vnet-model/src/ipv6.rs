//! IPv6 on a vnet: its /64 (`subnet6`, or by default a ULA prefix derived from the
//! vnet's name), the addresses vnet gives itself in it (the host adapter `::1`, the NAT
//! device `::2`, the guests' router and DNS server), and the router advertisements
//! (`ra`) that let guests configure themselves by SLAAC.
//!
//! Why a name-derived ULA (RFC 4193) by default: like Apple's vmnet and passt, a vnet
//! gets IPv6 without anyone choosing a prefix, the prefix never changes (not across
//! restarts, versions or machines: guests' addresses and DNS records stay valid), and
//! two vnets practically never share one (40 random-looking bits each).

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;
use serde::{Deserialize, Serialize};

use super::default_true;

/// Most DNS servers an RA announces.
pub const MAX_DNS: usize = 8;
/// Most bytes the RA's search list takes in DNS wire format: with [`MAX_DNS`], an RA
/// stays well within IPv6's minimum MTU.
pub const MAX_DOMAIN_BYTES: usize = 256;

/// RFC 4861's bounds on MaxRtrAdvInterval, in seconds.
pub const RA_INTERVAL_SECS: std::ops::RangeInclusive<u64> = 4..=1800;

/// The ULA /64 of vnet `name`: `fd` then the first 40 bits of SHA-256(`name`) as the
/// global ID (RFC 4193 §3.2 asks for 40 pseudo-random bits; a hash of the name makes
/// them the same everywhere), subnet ID 0. By hand: `printf %s NAME | sha256sum`,
/// `fd` + its first 10 hex digits.
pub fn ula_prefix(name: &str) -> Ipv6Net {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(name.as_bytes());
    let mut octets = [0u8; 16];
    octets[0] = 0xfd;
    octets[1..6].copy_from_slice(&digest[..5]);
    Ipv6Net::new(Ipv6Addr::from(octets), 64).expect("64 is a valid prefix length")
}

/// The `n`th address of `subnet` (`::n`).
pub fn nth6(subnet: Ipv6Net, n: u16) -> Ipv6Addr {
    let mut octets = subnet.network().octets();
    octets[14..].copy_from_slice(&n.to_be_bytes());
    Ipv6Addr::from(octets)
}

/// The router advertisements of a vnet (RFC 4861 §6, RFC 8106), sent by the NAT device
/// on NAT vnets (which is then the default router) and by a router-advertisement
/// service elsewhere (router lifetime 0: no default route).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaSpec {
    /// Off: no advertisements (and no answers to solicitations).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Prefix information with the A flag: guests make their own addresses (SLAAC).
    #[serde(default = "default_true")]
    pub slaac: bool,
    /// M flag: addresses come from DHCPv6 [default: on while the vnet's DHCPv6 is
    /// stateful].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<bool>,
    /// O flag: other settings come from DHCPv6 [default: on while the vnet has
    /// DHCPv6, stateful or stateless].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other: Option<bool>,
    /// DNS servers announced (RDNSS) [default: the NAT device's IPv6 address on a NAT
    /// vnet with DNS, none elsewhere].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<Ipv6Addr>,
    /// DNS search list announced (DNSSL) [default: the DHCP `domain`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    /// MaxRtrAdvInterval: unsolicited advertisements come every 1/3 to 1 of this.
    #[serde(default = "default_ra_interval_secs")]
    pub interval_secs: u64,
}

pub fn default_ra_interval_secs() -> u64 {
    600
}

impl Default for RaSpec {
    fn default() -> Self {
        RaSpec {
            enabled: true,
            slaac: true,
            managed: None,
            other: None,
            dns: Vec::new(),
            domains: Vec::new(),
            interval_secs: default_ra_interval_secs(),
        }
    }
}

impl RaSpec {
    /// Left out of saved and exported specs when nothing is changed.
    pub fn is_default(&self) -> bool {
        *self == RaSpec::default()
    }

    /// Checks what the wire format and RFC 4861 bound.
    pub fn check(&self) -> Result<(), Ipv6Error> {
        if !RA_INTERVAL_SECS.contains(&self.interval_secs) {
            return Err(Ipv6Error::RaInterval(self.interval_secs));
        }
        if let Some(a) = self
            .dns
            .iter()
            .find(|a| a.is_unspecified() || a.is_multicast() || a.is_loopback())
        {
            return Err(Ipv6Error::RaDns(*a));
        }
        let mut wire = Vec::new();
        for d in &self.domains {
            let ok = vnet_core::wire::icmpv6::encode_domain_names(&[d.as_str()], &mut wire);
            if ok.is_err() {
                return Err(Ipv6Error::RaDomain(d.clone()));
            }
        }
        if self.dns.len() > MAX_DNS || wire.len() > MAX_DOMAIN_BYTES {
            return Err(Ipv6Error::RaTooMany);
        }
        Ok(())
    }
}

/// Checks a configured `subnet6`: a /64 given by its network address, of a kind
/// guests can autoconfigure in.
pub fn check_subnet6(subnet: Ipv6Net) -> Result<(), Ipv6Error> {
    if subnet.prefix_len() != 64 || subnet.addr() != subnet.network() {
        return Err(Ipv6Error::NotSlash64(subnet));
    }
    let a = subnet.network();
    let link_local = a.segments()[0] & 0xffc0 == 0xfe80;
    if a.is_unspecified() || a.is_loopback() || a.is_multicast() || link_local {
        return Err(Ipv6Error::Kind(subnet));
    }
    Ok(())
}

/// Why a vnet's IPv6 settings cannot be used; the message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ipv6Error {
    #[error("subnet6 {0} must be a /64 written as its network address, e.g. \"fd00:1:2:3::/64\"")]
    NotSlash64(Ipv6Net),
    #[error("subnet6 {0} is link-local, multicast, loopback or unspecified: use a global or ULA (fc00::/7) prefix")]
    Kind(Ipv6Net),
    #[error("subnet6 is set but ipv6 is off: remove one of them")]
    Off,
    #[error("ra interval_secs {0} is out of range: use 4-1800 (RFC 4861)")]
    RaInterval(u64),
    #[error("ra dns {0} is not a unicast address")]
    RaDns(Ipv6Addr),
    #[error("ra domains: {0:?} is not a domain name (labels of 1-63 ASCII characters)")]
    RaDomain(String),
    #[error("ra: at most 8 dns servers and 256 bytes of domains")]
    RaTooMany,
}

/// IPv6 on a running vnet (`ipv6` in `GET /v1/networks/{net}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipv6Info {
    /// The vnet's /64.
    pub subnet: Ipv6Net,
    /// The subnet is the name-derived ULA default, not a configured `subnet6`.
    pub derived: bool,
    /// The NAT device's address (`::2`): the guests' default router, on NAT vnets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<Ipv6Addr>,
    /// The advertisements as sent, defaults filled in.
    pub ra: RaSpec,
    /// The router lifetime they announce, seconds (0: not a default router).
    pub router_lifetime_secs: u16,
    /// What the advertising side has done; absent while nothing advertises (`ra`
    /// off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counters: Option<RaCounters>,
}

/// What a vnet's router-advertisement side has done since the vnet started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaCounters {
    /// Router solicitations answered.
    pub rs_answered: u64,
    /// Router advertisements sent, solicited or not.
    pub ra_sent: u64,
    /// Neighbour solicitations for its own addresses answered.
    pub ns_answered: u64,
    /// Echo requests to its own addresses answered.
    pub echo_answered: u64,
    /// Datagrams to its own addresses answered with "port unreachable".
    pub port_unreachable: u64,
    /// Broken ICMPv6 messages for it (bad checksum, hop limit, options).
    pub malformed: u64,
}

impl RaCounters {
    /// Every counter with its name and meaning: one list for the CLI and `/metrics`.
    pub fn fields(&self) -> [(&'static str, &'static str, u64); 6] {
        [
            (
                "rs_answered",
                "Router solicitations answered.",
                self.rs_answered,
            ),
            (
                "ra_sent",
                "Router advertisements sent, solicited or not.",
                self.ra_sent,
            ),
            (
                "ns_answered",
                "Neighbour solicitations for the router's addresses answered.",
                self.ns_answered,
            ),
            (
                "echo_answered",
                "Echo requests to the router's addresses answered.",
                self.echo_answered,
            ),
            (
                "port_unreachable",
                "Datagrams to the router's addresses answered with port unreachable.",
                self.port_unreachable,
            ),
            (
                "malformed",
                "Broken ICMPv6 messages for the router.",
                self.malformed,
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ula_is_fd_and_40_bits_of_the_names_sha256() {
        // printf %s vmnet8 | sha256sum → 934cfac459…: the same on every machine and
        // in every version, or guests' addresses would change under them.
        let p = ula_prefix("vmnet8");
        assert_eq!(p, "fd93:4cfa:c459::/64".parse().unwrap());
        assert_eq!(p, ula_prefix("vmnet8"), "stable");
        assert_ne!(p, ula_prefix("vmnet1"));
        assert_eq!(p.network(), p.addr());
        assert_eq!(check_subnet6(p), Ok(()));
    }

    #[test]
    fn subnet6_checks_name_the_problem() {
        let net = |s: &str| s.parse::<Ipv6Net>().unwrap();
        assert_eq!(check_subnet6(net("2001:db8:1:2::/64")), Ok(()));
        assert_eq!(
            check_subnet6(net("2001:db8::/48")),
            Err(Ipv6Error::NotSlash64(net("2001:db8::/48")))
        );
        assert_eq!(
            check_subnet6(net("2001:db8::1/64")),
            Err(Ipv6Error::NotSlash64(net("2001:db8::1/64")))
        );
        assert_eq!(
            check_subnet6(net("fe80::/64")),
            Err(Ipv6Error::Kind(net("fe80::/64")))
        );
        assert_eq!(
            nth6(net("fd00:1::/64"), 2),
            "fd00:1::2".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn ra_checks() {
        assert_eq!(RaSpec::default().check(), Ok(()));
        let bad = RaSpec {
            interval_secs: 3,
            ..RaSpec::default()
        };
        assert_eq!(bad.check(), Err(Ipv6Error::RaInterval(3)));
        let bad = RaSpec {
            domains: vec!["a..b".into()],
            ..RaSpec::default()
        };
        assert_eq!(bad.check(), Err(Ipv6Error::RaDomain("a..b".into())));
        let bad = RaSpec {
            dns: vec![Ipv6Addr::UNSPECIFIED],
            ..RaSpec::default()
        };
        assert_eq!(bad.check(), Err(Ipv6Error::RaDns(Ipv6Addr::UNSPECIFIED)));
        let json = serde_json::to_string(&RaSpec::default()).unwrap();
        assert_eq!(
            serde_json::from_str::<RaSpec>(&json).unwrap(),
            RaSpec::default()
        );
        assert_eq!(
            serde_json::from_str::<RaSpec>(r#"{"slaac": false}"#).unwrap(),
            RaSpec {
                slaac: false,
                ..RaSpec::default()
            }
        );
    }
}
