//! What one vnet's DHCP service hands out, and the checks that keep it coherent.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;
use std::time::Duration;

use vnet_core::wire::ethernet::MacAddr;

use crate::lease::ClientId;
use crate::wire::bootp::is_plausible_hostname;

/// The DHCP service of one vnet. Built by the daemon from its config file or control API;
/// [`DhcpConfig::for_subnet`] gives VMware-like defaults to start from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpConfig {
    /// Off: the service stays attached but silent (no DHCP, no ARP), leases are kept.
    /// PXE labs run their own server and want ours quiet.
    pub enabled: bool,
    /// The service port's own MAC: source of every frame it sends.
    pub server_mac: MacAddr,
    /// The service's own address on the vnet: server identifier (option 54), answered to
    /// ARP so clients can renew by unicast. Inside the subnet, outside the pool.
    pub server_ip: Ipv4Addr,
    /// Network address of the vnet's subnet (host bits zero).
    pub subnet: Ipv4Addr,
    /// Prefix length of the subnet, 1 to 30.
    pub prefix_len: u8,
    /// Addresses handed out dynamically, both ends included, inside the subnet.
    pub pool: RangeInclusive<Ipv4Addr>,
    /// How long a lease lasts; clients renew at half (T1) and rebind at 7/8 (T2).
    pub lease_time: Duration,
    /// Default gateway (option 3): the NAT device on NAT vnets, none on host-only ones.
    pub router: Option<Ipv4Addr>,
    /// DNS servers (option 6), in preference order; empty sends none.
    pub dns: Vec<Ipv4Addr>,
    /// DNS domain (option 15).
    pub domain: Option<String>,
    /// Interface MTU (option 26): lets guests use the large frames a vnet can carry.
    pub mtu: Option<u16>,
    /// Fixed MAC → address bindings; a reserved address is never given to anyone else.
    pub reservations: Vec<Reservation>,
    /// How long to wait for an answer to the ARP probe before offering a fresh address.
    /// Long enough for a VM's stack on a busy host, short enough that clients don't retry.
    pub probe_timeout: Duration,
    /// How long an offered address stays set aside for the client it was offered to.
    pub offer_timeout: Duration,
    /// How long a declined or ARP-conflicting address is kept out of the pool.
    pub quarantine_time: Duration,
    /// DHCPv6 on the vnet's IPv6 /64; `None`: the service ignores IPv6.
    pub v6: Option<Dhcp6Config>,
}

/// The DHCPv6 side (RFC 8415) of a vnet's DHCP service. It answers from the link-local
/// address of `server_mac` with a DUID-LL of it, so both stay the same across restarts
/// for as long as the vnet's name does. Lifetimes follow `lease_time`: preferred = valid
/// = lease time, T1 = ½ and T2 = 0.8 of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dhcp6Config {
    /// Hand out addresses (IA_NA); `false`: only answer information-requests (stateless
    /// DHCPv6, addresses by SLAAC).
    pub stateful: bool,
    /// The vnet's /64, by its network address: addresses outside it are not on link.
    pub prefix: Ipv6Addr,
    /// Addresses handed out, both ends included, inside the /64.
    pub pool: RangeInclusive<Ipv6Addr>,
    /// DNS servers (option 23), in preference order.
    pub dns: Vec<Ipv6Addr>,
    /// Domain search list (option 24).
    pub domains: Vec<String>,
    /// Answer a SOLICIT with rapid commit (RFC 8415 §18.3.1) by a REPLY at once.
    pub rapid_commit: bool,
    /// Fixed addresses by DUID or MAC.
    pub reservations: Vec<Reservation6>,
}

/// A DHCPv6 client that always gets the same address: matched by its DUID when one is
/// given, else by MAC (the one in a DUID-LL or DUID-LLT, or the frame's source).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation6 {
    pub mac: MacAddr,
    pub duid: Option<ClientId>,
    pub ip: Ipv6Addr,
    pub hostname: Option<String>,
}

impl Reservation6 {
    /// True if the reservation is for the client with `duid` whose MACs are `macs`.
    pub fn matches(&self, duid: &ClientId, macs: &[MacAddr]) -> bool {
        match &self.duid {
            Some(d) => d == duid,
            None => macs.contains(&self.mac),
        }
    }
}

/// The `n`th address of the /64 at `prefix`.
pub fn nth6(prefix: Ipv6Addr, n: u64) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(prefix) | u128::from(n))
}

impl Dhcp6Config {
    /// Stateful DHCPv6 on the /64 at `prefix`: the pool `::1000`–`::1fff` (4096
    /// addresses, clear of the low addresses vnet and administrators use), rapid commit,
    /// no DNS, domains or reservations.
    pub fn for_prefix(prefix: Ipv6Addr) -> Self {
        Dhcp6Config {
            stateful: true,
            prefix,
            pool: nth6(prefix, 0x1000)..=nth6(prefix, 0x1fff),
            dns: Vec::new(),
            domains: Vec::new(),
            rapid_commit: true,
            reservations: Vec::new(),
        }
    }

    /// True if `ip` is in the vnet's /64.
    pub fn on_link(&self, ip: Ipv6Addr) -> bool {
        u128::from(ip) >> 64 == u128::from(self.prefix) >> 64
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if u128::from(self.prefix) as u64 != 0 {
            return Err(ConfigError::Prefix6(self.prefix));
        }
        let (first, last) = (*self.pool.start(), *self.pool.end());
        for (what, ip) in [("pool6 start", first), ("pool6 end", last)] {
            if !self.on_link(ip) || ip == self.prefix {
                return Err(ConfigError::OutsidePrefix6 {
                    what,
                    ip,
                    prefix: self.prefix,
                });
            }
        }
        if first > last {
            return Err(ConfigError::Pool6Reversed { first, last });
        }
        if u128::from(last) - u128::from(first) >= u128::from(MAX_POOL) {
            return Err(ConfigError::Pool6TooLarge { first, last });
        }
        if self.dns.len() > MAX_DNS {
            return Err(ConfigError::TooManyDns(self.dns.len()));
        }
        if let Some(a) = self
            .dns
            .iter()
            .find(|a| a.is_multicast() || a.is_unspecified())
        {
            return Err(ConfigError::Dns6(*a));
        }
        if let Some(d) = self
            .domains
            .iter()
            .find(|d| !is_plausible_hostname(d.as_bytes()))
        {
            return Err(ConfigError::BadDomain(d.clone()));
        }
        let mut ips = BTreeSet::new();
        for r in &self.reservations {
            if !self.on_link(r.ip) || r.ip == self.prefix {
                return Err(ConfigError::OutsidePrefix6 {
                    what: "reserved IPv6 address",
                    ip: r.ip,
                    prefix: self.prefix,
                });
            }
            if !ips.insert(r.ip) {
                return Err(ConfigError::DuplicateReservationIp6(r.ip));
            }
        }
        Ok(())
    }
}

/// A MAC that always gets the same address (and optionally a host name to go with it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reservation {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    /// Sent as option 12 when the client asks for it, and shown in its lease.
    pub hostname: Option<String>,
}

/// Why a [`DhcpConfig`] cannot be served. Each message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("prefix length /{0} leaves no addresses to hand out: use /1 to /30")]
    PrefixLen(u8),
    #[error(
        "subnet {subnet}/{prefix_len} has host bits set: did you mean {network}/{prefix_len}?"
    )]
    HostBitsSet {
        subnet: Ipv4Addr,
        prefix_len: u8,
        network: Ipv4Addr,
    },
    #[error("{what} {ip} is outside the subnet {subnet}/{prefix_len}")]
    OutsideSubnet {
        what: &'static str,
        ip: Ipv4Addr,
        subnet: Ipv4Addr,
        prefix_len: u8,
    },
    #[error("{what} {ip} is the subnet's network or broadcast address, which no host may use")]
    NotAHostAddress { what: &'static str, ip: Ipv4Addr },
    #[error("pool {first}-{last} is empty: its first address must not be above its last")]
    PoolReversed { first: Ipv4Addr, last: Ipv4Addr },
    #[error("pool {first}-{last} holds more than 65536 addresses: shrink it")]
    PoolTooLarge { first: Ipv4Addr, last: Ipv4Addr },
    #[error("server address {0} is inside the pool: move it out or shrink the pool")]
    ServerInPool(Ipv4Addr),
    #[error("reservation for {mac} uses the server's own address {ip}")]
    ReservationOnServer { mac: MacAddr, ip: Ipv4Addr },
    #[error("{0} has two reservations: keep one")]
    DuplicateReservationMac(MacAddr),
    #[error("{0} is reserved twice: give each MAC its own address")]
    DuplicateReservationIp(Ipv4Addr),
    #[error("host name {0:?} is not a plain host name (letters, digits, '-', '_', '.'; at most 255 bytes)")]
    BadHostname(String),
    #[error("domain {0:?} is not a plain domain name (letters, digits, '-', '_', '.'; at most 255 bytes)")]
    BadDomain(String),
    #[error("lease time {0:?} is out of range: use 1 minute to 136 years")]
    LeaseTime(Duration),
    #[error("MTU {0} is below IPv4's minimum of 68")]
    Mtu(u16),
    #[error("{0} DNS servers do not fit one option: use at most 16")]
    TooManyDns(usize),
    #[error("IPv6 prefix {0} is not the network address of a /64")]
    Prefix6(Ipv6Addr),
    #[error(
        "{what} {ip} is outside the vnet's IPv6 subnet {prefix}/64 (or is its network address)"
    )]
    OutsidePrefix6 {
        what: &'static str,
        ip: Ipv6Addr,
        prefix: Ipv6Addr,
    },
    #[error("IPv6 pool {first}-{last} is empty: its first address must not be above its last")]
    Pool6Reversed { first: Ipv6Addr, last: Ipv6Addr },
    #[error("IPv6 pool {first}-{last} holds more than 65536 addresses: shrink it")]
    Pool6TooLarge { first: Ipv6Addr, last: Ipv6Addr },
    #[error("DNS server {0} is not a unicast address")]
    Dns6(Ipv6Addr),
    #[error("{0} is reserved twice: give each client its own IPv6 address")]
    DuplicateReservationIp6(Ipv6Addr),
}

const MIN_LEASE: Duration = Duration::from_secs(60);
/// 0xffffffff means "infinite" in DHCP; the largest finite lease is one second less.
const MAX_LEASE: Duration = Duration::from_secs(0xffff_fffe);
const MAX_DNS: usize = 16;
/// The server scans the pool for a free address on DISCOVER; this keeps the scan cheap.
const MAX_POOL: u32 = 1 << 16;

impl DhcpConfig {
    /// VMware-like defaults for `subnet/prefix_len`: the server on the last host address
    /// (.254 in a /24), the pool from the middle of the subnet to just below the server
    /// (.128–.253), 30-minute leases, no router, DNS or domain, enabled.
    pub fn for_subnet(
        server_mac: MacAddr,
        subnet: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<Self, ConfigError> {
        let net = Subnet::new(subnet, prefix_len)?;
        let size = u32::from(net.broadcast) - u32::from(net.network) + 1;
        let server_ip = Ipv4Addr::from(u32::from(net.broadcast) - 1);
        let first = Ipv4Addr::from(u32::from(net.network) + size / 2);
        let last = Ipv4Addr::from(u32::from(server_ip) - 1);
        let config = DhcpConfig {
            enabled: true,
            server_mac,
            server_ip,
            subnet,
            prefix_len,
            pool: first..=last,
            lease_time: Duration::from_secs(30 * 60),
            router: None,
            dns: Vec::new(),
            domain: None,
            mtu: None,
            reservations: Vec::new(),
            probe_timeout: Duration::from_millis(300),
            offer_timeout: Duration::from_secs(60),
            quarantine_time: Duration::from_secs(10 * 60),
            v6: None,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks everything [`crate::DhcpServer`] relies on; returns the subnet it describes.
    pub fn validate(&self) -> Result<Subnet, ConfigError> {
        let net = Subnet::new(self.subnet, self.prefix_len)?;
        net.check_host("server address", self.server_ip)?;
        let (first, last) = (*self.pool.start(), *self.pool.end());
        net.check_host("pool start", first)?;
        net.check_host("pool end", last)?;
        if first > last {
            return Err(ConfigError::PoolReversed { first, last });
        }
        if u32::from(last) - u32::from(first) >= MAX_POOL {
            return Err(ConfigError::PoolTooLarge { first, last });
        }
        if self.pool.contains(&self.server_ip) {
            return Err(ConfigError::ServerInPool(self.server_ip));
        }
        if let Some(router) = self.router {
            net.check_host("router", router)?;
        }
        if !(MIN_LEASE..=MAX_LEASE).contains(&self.lease_time) {
            return Err(ConfigError::LeaseTime(self.lease_time));
        }
        if let Some(mtu) = self.mtu.filter(|m| *m < 68) {
            return Err(ConfigError::Mtu(mtu));
        }
        if self.dns.len() > MAX_DNS {
            return Err(ConfigError::TooManyDns(self.dns.len()));
        }
        if let Some(domain) = &self.domain {
            if !is_plausible_hostname(domain.as_bytes()) {
                return Err(ConfigError::BadDomain(domain.clone()));
            }
        }
        let mut macs = BTreeSet::new();
        let mut ips = BTreeSet::new();
        for r in &self.reservations {
            net.check_host("reserved address", r.ip)?;
            if r.ip == self.server_ip {
                return Err(ConfigError::ReservationOnServer {
                    mac: r.mac,
                    ip: r.ip,
                });
            }
            if !macs.insert(r.mac) {
                return Err(ConfigError::DuplicateReservationMac(r.mac));
            }
            if !ips.insert(r.ip) {
                return Err(ConfigError::DuplicateReservationIp(r.ip));
            }
            if let Some(name) = &r.hostname {
                if !is_plausible_hostname(name.as_bytes()) {
                    return Err(ConfigError::BadHostname(name.clone()));
                }
            }
        }
        if let Some(v6) = &self.v6 {
            v6.validate()?;
        }
        Ok(net)
    }

    /// The reservation for `mac`, if any.
    pub fn reservation_for_mac(&self, mac: MacAddr) -> Option<&Reservation> {
        self.reservations.iter().find(|r| r.mac == mac)
    }

    /// The reservation of `ip`, if any.
    pub fn reservation_of_ip(&self, ip: Ipv4Addr) -> Option<&Reservation> {
        self.reservations.iter().find(|r| r.ip == ip)
    }
}

/// An IPv4 subnet, checked: network address, mask and broadcast address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix_len: u8,
    pub mask: Ipv4Addr,
    pub broadcast: Ipv4Addr,
}

impl Subnet {
    /// A subnet with room for at least two hosts; `network` must have no host bits set.
    pub fn new(network: Ipv4Addr, prefix_len: u8) -> Result<Self, ConfigError> {
        if !(1..=30).contains(&prefix_len) {
            return Err(ConfigError::PrefixLen(prefix_len));
        }
        let mask = u32::MAX << (32 - prefix_len);
        let bits = u32::from(network);
        if bits & !mask != 0 {
            return Err(ConfigError::HostBitsSet {
                subnet: network,
                prefix_len,
                network: Ipv4Addr::from(bits & mask),
            });
        }
        Ok(Subnet {
            network,
            prefix_len,
            mask: Ipv4Addr::from(mask),
            broadcast: Ipv4Addr::from(bits | !mask),
        })
    }

    /// True if `ip` is in the subnet (network and broadcast address included).
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & u32::from(self.mask) == u32::from(self.network)
    }

    /// True if `ip` is in the subnet and may be a host's address.
    pub fn is_host(&self, ip: Ipv4Addr) -> bool {
        self.contains(ip) && ip != self.network && ip != self.broadcast
    }

    fn check_host(&self, what: &'static str, ip: Ipv4Addr) -> Result<(), ConfigError> {
        if !self.contains(ip) {
            return Err(ConfigError::OutsideSubnet {
                what,
                ip,
                subnet: self.network,
                prefix_len: self.prefix_len,
            });
        }
        if !self.is_host(ip) {
            return Err(ConfigError::NotAHostAddress { what, ip });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0xfe]);

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_match_vmware_for_a_slash_24() {
        let c = DhcpConfig::for_subnet(MAC, ip("192.168.8.0"), 24).unwrap();
        assert_eq!(c.server_ip, ip("192.168.8.254"));
        assert_eq!(c.pool, ip("192.168.8.128")..=ip("192.168.8.253"));
        assert_eq!(c.lease_time, Duration::from_secs(1800));
        let net = c.validate().unwrap();
        assert_eq!(net.mask, ip("255.255.255.0"));
        assert_eq!(net.broadcast, ip("192.168.8.255"));
    }

    #[test]
    fn rejects_incoherent_configs_with_advice() {
        let base = DhcpConfig::for_subnet(MAC, ip("10.0.0.0"), 24).unwrap();
        let err = DhcpConfig::for_subnet(MAC, ip("10.0.0.1"), 24).unwrap_err();
        assert!(
            err.to_string().contains("did you mean 10.0.0.0/24"),
            "{err}"
        );
        assert_eq!(
            DhcpConfig::for_subnet(MAC, ip("10.0.0.0"), 31).unwrap_err(),
            ConfigError::PrefixLen(31)
        );

        let mut c = base.clone();
        c.server_ip = ip("10.0.0.130");
        assert_eq!(
            c.validate().unwrap_err(),
            ConfigError::ServerInPool(c.server_ip)
        );

        let mut c = base.clone();
        c.pool = ip("10.0.0.200")..=ip("10.0.1.10");
        assert!(matches!(
            c.validate(),
            Err(ConfigError::OutsideSubnet {
                what: "pool end",
                ..
            })
        ));

        let mut c = base.clone();
        c.pool = ip("10.0.0.0")..=ip("10.0.0.10");
        assert!(matches!(
            c.validate(),
            Err(ConfigError::NotAHostAddress { .. })
        ));

        let mut c = base.clone();
        c.reservations = vec![
            Reservation {
                mac: MAC,
                ip: ip("10.0.0.10"),
                hostname: None,
            },
            Reservation {
                mac: MAC,
                ip: ip("10.0.0.11"),
                hostname: None,
            },
        ];
        assert_eq!(
            c.validate().unwrap_err(),
            ConfigError::DuplicateReservationMac(MAC)
        );

        let mut c = base.clone();
        c.reservations = vec![Reservation {
            mac: MAC,
            ip: ip("10.0.0.10"),
            hostname: Some("a b".into()),
        }];
        assert!(matches!(c.validate(), Err(ConfigError::BadHostname(_))));

        let mut c = base;
        c.lease_time = Duration::from_secs(5);
        assert!(matches!(c.validate(), Err(ConfigError::LeaseTime(_))));
    }
}
