//! The DHCP service of one vnet: `vnet_dhcp::DhcpServer` plus the wall clock and an
//! atomically written lease file (`STATE/NET/leases.json`), so leases survive restarts.
//!
//! The file is written off the data-plane thread: after a frame or timer changed the
//! leases, the service hands a copy of the lease database to the process's
//! [`LeaseWriter`] and goes on; the writer writes the newest copy of each vnet's leases
//! atomically and durably, coalescing bursts (see [`super::lease_writer`]). Replies go
//! out first, as they did when the write was inline: a DHCPACK leaves before its lease is
//! on disk. What is guaranteed:
//!
//! - the data plane never waits for the disk (the hand-over takes a mutex held only for
//!   map updates); it copies the lease database in memory, O(leases), per change;
//! - every lease change is followed by a write of a snapshot at least that new, normally
//!   within one writer batch (a few fsyncs); a failed write is logged and retried with
//!   the next change;
//! - the file is always a complete old or new version, mode 0600;
//! - a clean shutdown waits up to [`FLUSH_TIMEOUT`], after the data plane stopped, for
//!   every snapshot to be written, so a restart keeps every lease; removing a vnet
//!   waits for nothing, and a vnet made again under its name waits (at most as long)
//!   only if its predecessor's last snapshot is still pending when it reads the file.
//!
//! If the daemon crashes between an ACK and its write, the restarted server does not
//! know the lease. The client keeps using it and renews by REQUEST (RENEWING, REBINDING
//! or INIT-REBOOT), which the server, authoritative for the vnet, ACKs when the address is
//! free, re-learning the lease; before that, a DISCOVER from another client that picks the
//! address ARP-probes it first, the holder answers, and the address is quarantined rather
//! than given twice.
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{info, warn};
use vnet_core::policy::guard::DhcpBindings;
use vnet_core::wire::offload::VirtioNetHdr;
use vnet_core::wire::MacAddr;
use vnet_dhcp::{
    ClientId, ConfigError, Dhcp6Config, DhcpConfig, DhcpServer, Lease, Lease6, LeaseDb,
    Reservation6, Timestamp,
};
use vnet_model::{Dhcp6Mode, NetworkSpec, Reservation};
use vnet_nat::LocalNames;

use super::lease_writer::{write_atomically, LeaseWriter};
use crate::backend::service::{Outgoing, Service};

/// How long a shutdown, or a service reading a lease file with a snapshot still pending,
/// waits for the lease writer.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a vnet's DHCP service could not be set up or changed: the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("invalid DHCP settings")]
    Settings(#[source] ConfigError),
    #[error("cannot start the DHCP server")]
    Start(#[source] ConfigError),
    #[error("cannot apply the new DHCP settings")]
    Reconfigure(#[source] ConfigError),
    #[error("{0}")]
    Duid(String),
}

pub struct DhcpService {
    net: String,
    server: DhcpServer,
    lease_file: PathBuf,
    /// Leases or settings changed since [`DhcpService::take_changed_names`] last ran.
    names_changed: bool,
    /// Leases changed since [`DhcpService::take_changed_bindings`] last ran.
    bindings_changed: bool,
}

/// The service port's MAC: locally administered, stable for a vnet name so that guests'
/// ARP caches and lease files stay valid across restarts.
pub fn server_mac(net: &str) -> MacAddr {
    let h = net.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let b = h.to_be_bytes();
    MacAddr([0x02, 0x76, 0x64, b[0], b[1], b[2]])
}

/// The server configuration a vnet spec asks for, `None` if it has no DHCP.
pub fn config_for(spec: &NetworkSpec) -> Result<Option<DhcpConfig>, DhcpError> {
    let (Some(d), Some(subnet)) = (spec.dhcp_resolved(), spec.subnet) else {
        return Ok(None);
    };
    let mut c = DhcpConfig::for_subnet(
        server_mac(&spec.name),
        subnet.network(),
        subnet.prefix_len(),
    )
    .map_err(DhcpError::Settings)?;
    let [first, last] = d.range.expect("resolved");
    c.enabled = d.enabled;
    c.server_ip = d.server.expect("resolved");
    c.pool = first..=last;
    c.lease_time = Duration::from_secs(d.lease_secs);
    c.dns = d.dns.clone();
    // On a NAT vnet the NAT device is the guests' router and, unless DNS servers are
    // configured, their DNS server.
    if let (Some(nat), Some(gateway)) = (&spec.nat, spec.nat_gateway()) {
        c.router = Some(gateway);
        if c.dns.is_empty() && nat.dns {
            c.dns = vec![gateway];
        }
    }
    c.domain = d.domain.clone();
    c.mtu = u16::try_from(spec.mtu).ok();
    c.reservations = d
        .reservations
        .iter()
        .map(|r| vnet_dhcp::Reservation {
            mac: r.mac,
            ip: r.ip,
            hostname: r.hostname.clone(),
        })
        .collect();
    c.v6 = dhcp6_config(spec, &d)?;
    c.validate().map_err(DhcpError::Settings)?;
    Ok(Some(c))
}

/// The DHCPv6 side of `spec`'s resolved DHCP settings `d`: `None` without IPv6 or with
/// DHCPv6 off.
fn dhcp6_config(
    spec: &NetworkSpec,
    d: &vnet_model::DhcpSpec,
) -> Result<Option<Dhcp6Config>, DhcpError> {
    let (Some(mode), Some(subnet6)) = (spec.dhcp6_mode(), spec.subnet6_resolved()) else {
        return Ok(None);
    };
    let mut v6 = Dhcp6Config::for_prefix(subnet6.network());
    v6.stateful = mode == Dhcp6Mode::Stateful;
    if let Some([first, last]) = d.range6 {
        v6.pool = first..=last;
    }
    v6.dns = d.dns6.clone();
    v6.domains = d.domain.iter().cloned().collect();
    v6.reservations = d
        .reservations
        .iter()
        .filter_map(|r| {
            let duid = match r.duid.as_deref().map(str::parse::<ClientId>) {
                Some(Ok(duid)) => Some(duid),
                Some(Err(e)) => return Some(Err(e)),
                None => None,
            };
            Some(Ok(Reservation6 {
                mac: r.mac,
                duid,
                ip: r.ip6?,
                hostname: r.hostname.clone(),
            }))
        })
        .collect::<Result<_, _>>()
        .map_err(|e| DhcpError::Duid(e.to_string()))?;
    Ok(Some(v6))
}

impl DhcpService {
    /// Starts the service of vnet `spec.name` with the leases saved in `state_dir`.
    pub fn start(
        spec: &NetworkSpec,
        config: DhcpConfig,
        state_dir: &Path,
    ) -> Result<Self, DhcpError> {
        let lease_file = state_dir.join(&spec.name).join("leases.json");
        if let Some(writer) = LeaseWriter::global() {
            if !writer.flush(&lease_file, FLUSH_TIMEOUT) {
                warn!(
                    net = spec.name,
                    "{} still has a snapshot pending after {FLUSH_TIMEOUT:?}: reading the older file",
                    lease_file.display()
                );
            }
        }
        let leases = match std::fs::read_to_string(&lease_file) {
            Ok(text) => LeaseDb::from_json(&text).unwrap_or_else(|e| {
                warn!(
                    net = spec.name,
                    "ignoring unreadable {}: {e}",
                    lease_file.display()
                );
                LeaseDb::new()
            }),
            Err(_) => LeaseDb::new(),
        };
        let server = DhcpServer::new(config, leases).map_err(DhcpError::Start)?;
        info!(net = spec.name, "DHCP serves {}", describe(server.config()));
        Ok(DhcpService {
            net: spec.name.clone(),
            server,
            lease_file,
            names_changed: true,
            bindings_changed: true,
        })
    }

    /// The vnet's host names for the NAT device's DNS, once after leases or settings
    /// changed (a lease bound, renewed, released or ended; reservations edited);
    /// `None` while they did not.
    pub fn take_changed_names(&mut self) -> Option<LocalNames> {
        if !std::mem::take(&mut self.names_changed) {
            return None;
        }
        let db = self.server.lease_db();
        Some(local_names(
            self.server.config(),
            db.leases(),
            db.leases6(),
            Timestamp::now(),
        ))
    }

    /// The addresses (IPv4 and IPv6) leased to each client MAC now, for port
    /// security's IP guard, once after leases changed; `None` while they did not.
    pub fn take_changed_bindings(&mut self) -> Option<DhcpBindings> {
        if !std::mem::take(&mut self.bindings_changed) {
            return None;
        }
        let now = Timestamp::now();
        let db = self.server.lease_db();
        let v4 = db.leases().filter(|l| l.is_active(now));
        let v6 = db.leases6().filter(|l| l.is_active(now));
        Some(DhcpBindings::new(
            v4.map(|l| (l.mac, IpAddr::V4(l.ip)))
                .chain(v6.map(|l| (l.mac, IpAddr::V6(l.ip)))),
        ))
    }

    pub fn server(&self) -> &DhcpServer {
        &self.server
    }

    /// The server's counters as the control API shows them.
    pub fn counters(&self) -> vnet_model::DhcpCounters {
        let c = self.server.counters();
        vnet_model::DhcpCounters {
            discovers: c.discovers,
            requests: c.requests,
            offers: c.offers,
            acks: c.acks,
            naks: c.naks,
            releases: c.releases,
            declines: c.declines,
            informs: c.informs,
            pool_exhausted: c.pool_exhausted,
            leases_expired: c.leases_expired,
            malformed: c.malformed,
            ignored: c.ignored,
            solicits6: c.v6.solicits,
            requests6: c.v6.requests,
            renews6: c.v6.renews,
            rebinds6: c.v6.rebinds,
            releases6: c.v6.releases,
            declines6: c.v6.declines,
            confirms6: c.v6.confirms,
            information_requests6: c.v6.information_requests,
            advertises6: c.v6.advertises,
            replies6: c.v6.replies,
            pool_exhausted6: c.v6.pool_exhausted,
            leases_expired6: c.v6.leases_expired,
        }
    }

    /// Applies new settings live; leases are kept.
    pub fn reconfigure(&mut self, config: DhcpConfig) -> Result<(), DhcpError> {
        self.server
            .reconfigure(config)
            .map_err(DhcpError::Reconfigure)?;
        self.names_changed = true;
        info!(
            net = self.net,
            "DHCP now serves {}",
            describe(self.server.config())
        );
        Ok(())
    }

    /// Leases as the control API shows them: IPv4, then IPv6.
    pub fn leases(&self) -> Vec<vnet_model::Lease> {
        let db = self.server.lease_db();
        let mut out: Vec<_> = self
            .server
            .leases()
            .map(|l| vnet_model::Lease {
                mac: l.mac,
                ip: l.ip.into(),
                duid: None,
                hostname: l.hostname.clone(),
                expires: l.expires.as_unix_secs(),
                state: format!("{:?}", l.state).to_lowercase(),
            })
            .collect();
        out.extend(db.leases6().map(|l| vnet_model::Lease {
            mac: l.mac,
            ip: l.ip.into(),
            duid: Some(l.duid.to_string()),
            hostname: l.hostname.clone(),
            expires: l.expires.as_unix_secs(),
            state: format!("{:?}", l.state).to_lowercase(),
        }));
        // Addresses set aside after a DECLINE or an ARP conflict show up too: they are
        // why the pool may look smaller than configured.
        out.extend(
            self.server
                .lease_db()
                .quarantined()
                .map(|q| vnet_model::Lease {
                    mac: q.reported_by,
                    ip: q.ip.into(),
                    duid: None,
                    hostname: None,
                    expires: q.until.as_unix_secs(),
                    state: format!("quarantined ({:?})", q.reason).to_lowercase(),
                }),
        );
        // A declined IPv6 address names its client by DUID; its MAC is not known.
        out.extend(db.quarantined6().map(|q| vnet_model::Lease {
            mac: MacAddr([0; 6]),
            ip: q.ip.into(),
            duid: Some(q.reported_by.to_string()),
            hostname: None,
            expires: q.until.as_unix_secs(),
            state: "quarantined (declined)".into(),
        }));
        out.sort_by_key(|l| l.ip);
        out
    }

    /// The reservations in effect, with their IPv6 parts.
    pub fn reservations(&self) -> Vec<Reservation> {
        let config = self.server.config();
        let v6 = config.v6.iter().flat_map(|v6| &v6.reservations);
        config
            .reservations
            .iter()
            .map(|r| {
                let r6 = v6.clone().find(|r6| r6.mac == r.mac);
                Reservation {
                    mac: r.mac,
                    ip: r.ip,
                    hostname: r.hostname.clone(),
                    ip6: r6.map(|r6| r6.ip),
                    duid: r6.and_then(|r6| r6.duid.as_ref()).map(ToString::to_string),
                }
            })
            .collect()
    }

    fn persist(&mut self) {
        if !self.server.take_leases_changed() {
            return;
        }
        self.names_changed = true;
        self.bindings_changed = true;
        let leases = self.server.lease_db();
        match LeaseWriter::global() {
            Some(writer) => {
                if !writer.submit(&self.net, &self.lease_file, leases.clone()) {
                    warn!(
                        net = self.net,
                        "lease writer queue full: leases not saved until the next change"
                    );
                }
            }
            // No writer thread: write in place rather than not at all.
            None => {
                if let Err(e) = write_atomically(&self.lease_file, leases.to_json().as_bytes()) {
                    warn!(
                        net = self.net,
                        "cannot save leases to {}: {e}",
                        self.lease_file.display()
                    );
                }
            }
        }
    }
}

/// The names of `config`'s reservations and of the DHCP and DHCPv6 leases active at
/// `now`, under its domain. Reservations come first (an administrator's word beats a
/// client's claim), then leases newest first, so a name two clients claim stays with
/// the latest.
fn local_names<'a>(
    config: &'a DhcpConfig,
    leases: impl Iterator<Item = &'a Lease>,
    leases6: impl Iterator<Item = &'a Lease6>,
    now: Timestamp,
) -> LocalNames {
    let mut names = LocalNames::new(config.domain.as_deref());
    for (host, ip) in name_claims(config, leases, leases6, now) {
        names.insert(host, ip);
    }
    names
}

/// Who claims which name, in the order [`local_names`] honours claims.
fn name_claims<'a>(
    config: &'a DhcpConfig,
    leases: impl Iterator<Item = &'a Lease>,
    leases6: impl Iterator<Item = &'a Lease6>,
    now: Timestamp,
) -> Vec<(&'a str, IpAddr)> {
    let v6 = config.v6.iter().flat_map(|v6| &v6.reservations);
    let reserved = config
        .reservations
        .iter()
        .filter_map(|r| Some((r.hostname.as_deref()?, IpAddr::V4(r.ip))))
        .chain(v6.filter_map(|r| Some((r.hostname.as_deref()?, IpAddr::V6(r.ip)))));
    let mut active: Vec<(Timestamp, &str, IpAddr)> = leases
        .filter(|l| l.is_active(now))
        .filter_map(|l| Some((l.expires, l.hostname.as_deref()?, IpAddr::V4(l.ip))))
        .chain(
            leases6
                .filter(|l| l.is_active(now))
                .filter_map(|l| Some((l.expires, l.hostname.as_deref()?, IpAddr::V6(l.ip)))),
        )
        .collect();
    active.sort_by_key(|(expires, ..)| std::cmp::Reverse(*expires));
    reserved
        .chain(active.into_iter().map(|(_, host, ip)| (host, ip)))
        .collect()
}

fn describe(c: &DhcpConfig) -> String {
    format!(
        "{}/{} from {} (pool {}-{}){}",
        c.subnet,
        c.prefix_len,
        c.server_ip,
        c.pool.start(),
        c.pool.end(),
        if c.enabled { "" } else { ", disabled" }
    )
}

impl Service for DhcpService {
    fn description(&self) -> String {
        let c = self.server.config();
        format!(
            "dhcp {} ({})",
            c.server_ip,
            if c.enabled { "on" } else { "off" }
        )
    }

    fn receive(&mut self, frame: &[u8], _: &VirtioNetHdr, out: &mut Vec<Outgoing>) -> bool {
        let malformed = self.server.counters().malformed;
        let replies = self.server.receive(Timestamp::now(), frame);
        out.extend(replies.into_iter().map(Outgoing::from));
        self.persist();
        self.server.counters().malformed == malformed
    }

    fn poll(&mut self, _now: Instant, out: &mut Vec<Outgoing>) {
        out.extend(
            self.server
                .poll(Timestamp::now())
                .into_iter()
                .map(Outgoing::from),
        );
        self.persist();
    }

    fn deadline(&self) -> Option<Instant> {
        let at = self.server.poll_at()?;
        Some(Instant::now() + at.saturating_duration_since(Timestamp::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_macs_are_stable_local_unicast_and_differ_per_vnet() {
        let a = server_mac("vmnet1");
        assert_eq!(a, server_mac("vmnet1"));
        assert_ne!(a, server_mac("vmnet8"));
        assert!(a.is_learnable());
        assert_eq!(a.0[0] & 0x02, 0x02, "locally administered");
    }

    #[test]
    fn a_spec_with_ipv6_gets_dhcpv6_with_the_routers_dns_and_its_reservations() {
        let mut spec = NetworkSpec::named("vmnet8");
        spec.subnet = Some("192.168.108.0/24".parse().unwrap());
        spec.nat = Some(vnet_model::NatSpec::default());
        spec.dhcp = Some(vnet_model::DhcpSpec {
            domain: Some("lab.test".into()),
            reservations: vec![Reservation {
                mac: "52:54:00:00:00:10".parse().unwrap(),
                ip: "192.168.108.10".parse().unwrap(),
                hostname: None,
                ip6: Some("fd93:4cfa:c459::10".parse().unwrap()),
                duid: Some("00:03:00:01:52:54:00:00:00:10".into()),
            }],
            ..Default::default()
        });
        let v6 = config_for(&spec).unwrap().unwrap().v6.unwrap();
        let prefix: std::net::Ipv6Addr = "fd93:4cfa:c459::".parse().unwrap();
        assert!(v6.stateful);
        assert_eq!(v6.prefix, prefix);
        assert_eq!(
            v6.pool,
            "fd93:4cfa:c459::1000".parse().unwrap()..="fd93:4cfa:c459::1fff".parse().unwrap()
        );
        assert_eq!(v6.dns, [spec.nat_gateway6().unwrap()]);
        assert_eq!(v6.domains, ["lab.test"]);
        assert_eq!(
            v6.reservations[0].duid,
            Some("00:03:00:01:52:54:00:00:00:10".parse().unwrap())
        );
        spec.dhcp.as_mut().unwrap().ipv6 = Dhcp6Mode::Off;
        assert_eq!(config_for(&spec).unwrap().unwrap().v6, None);
        spec.dhcp.as_mut().unwrap().ipv6 = Dhcp6Mode::Stateless;
        spec.ipv6 = false;
        assert_eq!(config_for(&spec).unwrap().unwrap().v6, None, "no IPv6");
    }

    #[test]
    fn dhcpv6_leases_and_reservations_claim_names_too() {
        use vnet_dhcp::LeaseState::{Bound, Released};
        let mut config =
            DhcpConfig::for_subnet(server_mac("n"), "10.0.0.0".parse().unwrap(), 24).unwrap();
        let mut v6 = Dhcp6Config::for_prefix("fd00::".parse().unwrap());
        v6.reservations = vec![Reservation6 {
            mac: "52:54:00:00:00:10".parse().unwrap(),
            duid: None,
            ip: "fd00::10".parse().unwrap(),
            hostname: Some("db".into()),
        }];
        config.v6 = Some(v6);
        let now = Timestamp::from_unix_millis(1_000_000);
        let lease6 = |last: u16, host: &str, expires: u64, state| Lease6 {
            ip: std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, last),
            duid: ClientId::from_option(&[0, 3, 0, 1, 0, 0, 0, 0, 0, last as u8]),
            iaid: 1,
            mac: MacAddr([0x52, 0x54, 0, 0, 0, last as u8]),
            hostname: Some(host.into()),
            state,
            expires: Timestamp::from_unix_millis(expires),
        };
        let leases6 = [
            lease6(0x1000, "web", 2_000_000, Bound),
            lease6(0x1001, "web", 3_000_000, Bound),
            lease6(0x1002, "old", 3_000_000, Released),
        ];
        let claims = name_claims(&config, std::iter::empty(), leases6.iter(), now);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            claims,
            [
                ("db", ip("fd00::10")),
                ("web", ip("fd00::1001")),
                ("web", ip("fd00::1000"))
            ]
        );
    }

    #[test]
    fn dns_names_come_from_reservations_then_the_newest_active_leases() {
        use vnet_dhcp::LeaseState::{Bound, Expired};
        let mut config =
            DhcpConfig::for_subnet(server_mac("n"), "10.0.0.0".parse().unwrap(), 24).unwrap();
        config.domain = Some("lab".into());
        config.reservations = vec![vnet_dhcp::Reservation {
            mac: "52:54:00:00:00:10".parse().unwrap(),
            ip: "10.0.0.10".parse().unwrap(),
            hostname: Some("db".into()),
        }];
        let now = Timestamp::from_unix_millis(1_000_000);
        let lease = |last: u8, host: &str, expires: u64, state| Lease {
            ip: std::net::Ipv4Addr::new(10, 0, 0, last),
            mac: MacAddr([0x52, 0x54, 0, 0, 0, last]),
            client_id: vnet_dhcp::ClientId::from_mac(MacAddr([0x52, 0x54, 0, 0, 0, last])),
            hostname: Some(host.into()),
            state,
            expires: Timestamp::from_unix_millis(expires),
        };
        let leases = [
            lease(130, "web", 2_000_000, Bound),
            lease(131, "web", 3_000_000, Bound),
            lease(132, "db", 3_000_000, Bound),
            lease(133, "old", 3_000_000, Expired),
            lease(134, "gone", 900_000, Bound),
        ];
        let mut expected = LocalNames::new(Some("lab"));
        expected.insert("db", "10.0.0.10".parse::<std::net::IpAddr>().unwrap());
        expected.insert("web", "10.0.0.131".parse::<std::net::IpAddr>().unwrap());
        assert_eq!(
            local_names(&config, leases.iter(), std::iter::empty(), now),
            expected
        );
    }
}
