//! Leases and quarantined addresses: the state that must survive a daemon restart.
//!
//! The database is plain data with a JSON form; the server mutates it, the caller persists
//! it (atomically: write a temporary file, then rename) whenever
//! [`crate::DhcpServer::take_leases_changed`] says so, and hands it back on the next start.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use vnet_core::wire::ethernet::MacAddr;

use crate::time::Timestamp;

/// Who a lease belongs to: the client identifier (option 61) when the client sends one,
/// otherwise hardware type 1 followed by its MAC — the form RFC 2132 §9.14 recommends and
/// most clients send, so a client that sometimes omits option 61 is still recognized.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(Vec<u8>);

impl ClientId {
    /// The identifier a client sent in option 61.
    pub fn from_option(bytes: &[u8]) -> Self {
        ClientId(bytes.to_vec())
    }

    /// The identifier of an Ethernet client that sent no option 61.
    pub fn from_mac(mac: MacAddr) -> Self {
        let mut id = Vec::with_capacity(7);
        id.push(1);
        id.extend_from_slice(&mac.0);
        ClientId(id)
    }

    /// The raw identifier bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for ClientId {
    /// Colon-separated hex, as `dhcpd.leases` and dnsmasq show it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The text was not colon-separated hex octets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid client identifier {0:?}: expected hex octets like 01:52:54:00:12:34:56")]
pub struct ParseClientIdError(String);

impl FromStr for ClientId {
    type Err = ParseClientIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseClientIdError(s.to_string());
        let bytes = s
            .split(':')
            .map(|part| {
                if part.is_empty() || part.len() > 2 {
                    return Err(err());
                }
                u8::from_str_radix(part, 16).map_err(|_| err())
            })
            .collect::<Result<Vec<u8>, _>>()?;
        Ok(ClientId(bytes))
    }
}

impl Serialize for ClientId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ClientId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Where a lease stands. Leases that ended are kept: the same client gets the same address
/// back when it returns (RFC 2131 §4.3.1), and others get such addresses only once the pool
/// has no never-used address left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseState {
    /// ACKed and running until `expires`.
    Bound,
    /// Ran out without a renewal.
    Expired,
    /// The client gave it back (DHCPRELEASE).
    Released,
}

/// One client's address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    pub client_id: ClientId,
    /// The client's own name (option 12), else its reservation's.
    pub hostname: Option<String>,
    pub state: LeaseState,
    /// Bound: when the lease ends. Expired or released: when it ended.
    #[serde(rename = "expires_unix_ms")]
    pub expires: Timestamp,
}

impl Lease {
    /// True if the lease still holds its address at `now`: bound and not yet run out
    /// (the server may not have been polled since the expiry instant).
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.state == LeaseState::Bound && self.expires > now
    }
}

/// One DHCPv6 client's address: one per identity association (the client's DUID and
/// the IA_NA's IAID), as RFC 8415 binds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease6 {
    pub ip: Ipv6Addr,
    /// The client's DUID.
    pub duid: ClientId,
    pub iaid: u32,
    /// The Ethernet source of the client's messages.
    pub mac: MacAddr,
    /// The first label of its Client FQDN option (RFC 4704), else its reservation's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    pub state: LeaseState,
    /// Bound: when the valid lifetime ends. Expired or released: when it ended.
    #[serde(rename = "expires_unix_ms")]
    pub expires: Timestamp,
}

impl Lease6 {
    /// True if the lease still holds its address at `now`.
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.state == LeaseState::Bound && self.expires > now
    }

    /// True if the lease is the one of identity association (`duid`, `iaid`).
    pub fn is_of(&self, duid: &ClientId, iaid: u32) -> bool {
        self.iaid == iaid && &self.duid == duid
    }
}

/// An IPv6 address a client declined (RFC 8415 §18.3.8: another node uses it), not
/// handed out until `until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantine6 {
    pub ip: Ipv6Addr,
    /// The DUID of the client that declined it.
    pub reported_by: ClientId,
    #[serde(rename = "until_unix_ms")]
    pub until: Timestamp,
}

/// Why an address is kept out of the pool for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuarantineReason {
    /// A client found the address in use after it was ACKed (DHCPDECLINE).
    Declined,
    /// Another host answered the server's ARP probe for it.
    Conflict,
}

/// An address not to hand out until `until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantine {
    pub ip: Ipv4Addr,
    pub reason: QuarantineReason,
    /// The client that declined it, or the host that answered for it.
    pub reported_by: MacAddr,
    #[serde(rename = "until_unix_ms")]
    pub until: Timestamp,
}

/// Why a lease file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LeaseDbError {
    #[error("lease file is not valid JSON of the expected shape: {0}")]
    Json(#[from] serde_json::Error),
    #[error("lease file format {format:?} version {version} is not one this vnet understands (vnet-dhcp-leases 1)")]
    UnsupportedFormat { format: String, version: u32 },
    #[error("lease file lists address {0} twice: remove one of the entries")]
    DuplicateAddress(Ipv4Addr),
    #[error("lease file lists client {0} twice: remove one of the entries")]
    DuplicateClient(ClientId),
    #[error("lease file lists IPv6 address {0} twice: remove one of the entries")]
    DuplicateAddress6(Ipv6Addr),
    #[error("lease file lists DHCPv6 client {0} IAID {1} twice: remove one of the entries")]
    DuplicateIa(ClientId, u32),
}

const FORMAT: &str = "vnet-dhcp-leases";
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct LeaseFile {
    format: String,
    version: u32,
    leases: Vec<Lease>,
    #[serde(default)]
    quarantine: Vec<Quarantine>,
    /// DHCPv6 leases: absent in files from before DHCPv6, and while there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    leases6: Vec<Lease6>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    quarantine6: Vec<Quarantine6>,
}

/// All leases of one vnet (at most one per address and one per client; for DHCPv6 one
/// per address and identity association) and its quarantined addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseDb {
    leases: BTreeMap<Ipv4Addr, Lease>,
    quarantine: BTreeMap<Ipv4Addr, Quarantine>,
    leases6: BTreeMap<Ipv6Addr, Lease6>,
    quarantine6: BTreeMap<Ipv6Addr, Quarantine6>,
    /// The address of each identity association's lease: finding a client's lease is
    /// O(log n) per message, not a walk through the pool's leases.
    ias6: BTreeMap<(ClientId, u32), Ipv6Addr>,
}

impl LeaseDb {
    /// An empty database, for a vnet's first start.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every lease, in address order.
    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.leases.values()
    }

    /// Every quarantined address, in address order (entries whose time is up may linger
    /// until the server next looks at them; they no longer block the address).
    pub fn quarantined(&self) -> impl Iterator<Item = &Quarantine> {
        self.quarantine.values()
    }

    /// The lease of `ip`, whatever its state.
    pub fn lease_at(&self, ip: Ipv4Addr) -> Option<&Lease> {
        self.leases.get(&ip)
    }

    /// The lease of `client`, whatever its state. A linear scan: pools hold at most a few
    /// thousand addresses and DHCP messages are rare.
    pub fn lease_of(&self, client: &ClientId) -> Option<&Lease> {
        self.leases.values().find(|l| &l.client_id == client)
    }

    /// True if `ip` is quarantined at `now`.
    pub fn is_quarantined(&self, ip: Ipv4Addr, now: Timestamp) -> bool {
        self.quarantine.get(&ip).is_some_and(|q| q.until > now)
    }

    /// The JSON form the daemon writes to the state directory.
    pub fn to_json(&self) -> String {
        let file = LeaseFile {
            format: FORMAT.to_string(),
            version: VERSION,
            leases: self.leases.values().cloned().collect(),
            quarantine: self.quarantine.values().cloned().collect(),
            leases6: self.leases6.values().cloned().collect(),
            quarantine6: self.quarantine6.values().cloned().collect(),
        };
        serde_json::to_string_pretty(&file).expect("lease data always serializes")
    }

    /// Loads what [`LeaseDb::to_json`] wrote. Refuses files that break the one-lease-per-
    /// address and one-lease-per-client rules rather than guessing which entry is right.
    pub fn from_json(json: &str) -> Result<Self, LeaseDbError> {
        let file: LeaseFile = serde_json::from_str(json)?;
        if file.format != FORMAT || file.version != VERSION {
            return Err(LeaseDbError::UnsupportedFormat {
                format: file.format,
                version: file.version,
            });
        }
        let mut db = LeaseDb::new();
        let mut clients = std::collections::BTreeSet::new();
        for lease in file.leases {
            if !clients.insert(lease.client_id.clone()) {
                return Err(LeaseDbError::DuplicateClient(lease.client_id));
            }
            if db.leases.contains_key(&lease.ip) {
                return Err(LeaseDbError::DuplicateAddress(lease.ip));
            }
            db.leases.insert(lease.ip, lease);
        }
        for q in file.quarantine {
            if db.quarantine.insert(q.ip, q.clone()).is_some() {
                return Err(LeaseDbError::DuplicateAddress(q.ip));
            }
        }
        let mut ias = std::collections::BTreeSet::new();
        for lease in file.leases6 {
            if !ias.insert((lease.duid.clone(), lease.iaid)) {
                return Err(LeaseDbError::DuplicateIa(lease.duid, lease.iaid));
            }
            if db.leases6.contains_key(&lease.ip) {
                return Err(LeaseDbError::DuplicateAddress6(lease.ip));
            }
            db.ias6.insert((lease.duid.clone(), lease.iaid), lease.ip);
            db.leases6.insert(lease.ip, lease);
        }
        for q in file.quarantine6 {
            if db.quarantine6.insert(q.ip, q.clone()).is_some() {
                return Err(LeaseDbError::DuplicateAddress6(q.ip));
            }
        }
        Ok(db)
    }

    /// Records `lease`, replacing whatever lease held its address and any other lease of
    /// the same client (one address per client), and lifting a quarantine on the address.
    pub(crate) fn insert(&mut self, lease: Lease) {
        self.leases.retain(|_, l| l.client_id != lease.client_id);
        self.quarantine.remove(&lease.ip);
        self.leases.insert(lease.ip, lease);
    }

    pub(crate) fn lease_at_mut(&mut self, ip: Ipv4Addr) -> Option<&mut Lease> {
        self.leases.get_mut(&ip)
    }

    pub(crate) fn remove(&mut self, ip: Ipv4Addr) -> Option<Lease> {
        self.leases.remove(&ip)
    }

    pub(crate) fn retain_leases(&mut self, keep: impl FnMut(&Lease) -> bool) -> bool {
        let before = self.leases.len();
        let mut keep = keep;
        self.leases.retain(|_, l| keep(l));
        before != self.leases.len()
    }

    pub(crate) fn leases_mut(&mut self) -> impl Iterator<Item = &mut Lease> {
        self.leases.values_mut()
    }

    /// Keeps `q.ip` out of the pool; a lease on it ends (the address is someone else's).
    pub(crate) fn add_quarantine(&mut self, q: Quarantine) {
        self.leases.remove(&q.ip);
        self.quarantine.insert(q.ip, q);
    }

    /// Forgets quarantines that ran out by `now`; true if any did.
    pub(crate) fn drop_finished_quarantines(&mut self, now: Timestamp) -> bool {
        let before = self.quarantine.len() + self.quarantine6.len();
        self.quarantine.retain(|_, q| q.until > now);
        self.quarantine6.retain(|_, q| q.until > now);
        before != self.quarantine.len() + self.quarantine6.len()
    }

    /// Every DHCPv6 lease, in address order.
    pub fn leases6(&self) -> impl Iterator<Item = &Lease6> {
        self.leases6.values()
    }

    /// Every quarantined IPv6 address, in address order.
    pub fn quarantined6(&self) -> impl Iterator<Item = &Quarantine6> {
        self.quarantine6.values()
    }

    /// The DHCPv6 lease of `ip`, whatever its state.
    pub fn lease6_at(&self, ip: Ipv6Addr) -> Option<&Lease6> {
        self.leases6.get(&ip)
    }

    /// The lease of identity association (`duid`, `iaid`), whatever its state.
    pub fn lease6_of(&self, duid: &ClientId, iaid: u32) -> Option<&Lease6> {
        let ip = self.ias6.get(&(duid.clone(), iaid))?;
        self.leases6.get(ip)
    }

    /// True if `ip` is quarantined at `now`.
    pub fn is_quarantined6(&self, ip: Ipv6Addr, now: Timestamp) -> bool {
        self.quarantine6.get(&ip).is_some_and(|q| q.until > now)
    }

    /// Records `lease`, replacing whatever lease held its address and any other lease
    /// of the same identity association, and lifting a quarantine on the address.
    pub(crate) fn insert6(&mut self, lease: Lease6) {
        let ia = (lease.duid.clone(), lease.iaid);
        if let Some(old) = self.ias6.insert(ia.clone(), lease.ip) {
            self.leases6.remove(&old);
        }
        self.quarantine6.remove(&lease.ip);
        if let Some(displaced) = self.leases6.insert(lease.ip, lease) {
            let other = (displaced.duid, displaced.iaid);
            if other != ia {
                self.ias6.remove(&other);
            }
        }
    }

    pub(crate) fn lease6_at_mut(&mut self, ip: Ipv6Addr) -> Option<&mut Lease6> {
        self.leases6.get_mut(&ip)
    }

    pub(crate) fn leases6_mut(&mut self) -> impl Iterator<Item = &mut Lease6> {
        self.leases6.values_mut()
    }

    pub(crate) fn retain_leases6(&mut self, mut keep: impl FnMut(&Lease6) -> bool) -> bool {
        let before = self.leases6.len();
        self.leases6.retain(|_, l| keep(l));
        let leases = &self.leases6;
        self.ias6.retain(|_, ip| leases.contains_key(ip));
        before != self.leases6.len()
    }

    /// Keeps `q.ip` out of the pool; a lease on it ends.
    pub(crate) fn add_quarantine6(&mut self, q: Quarantine6) {
        if let Some(l) = self.leases6.remove(&q.ip) {
            self.ias6.remove(&(l.duid, l.iaid));
        }
        self.quarantine6.insert(q.ip, q);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(ip: [u8; 4], last: u8, state: LeaseState) -> Lease {
        let mac = MacAddr([0x52, 0x54, 0, 0, 0, last]);
        Lease {
            ip: Ipv4Addr::from(ip),
            mac,
            client_id: ClientId::from_mac(mac),
            hostname: Some(format!("vm{last}")),
            state,
            expires: Timestamp::from_unix_millis(1_700_000_000_000 + u64::from(last)),
        }
    }

    #[test]
    fn json_round_trip_keeps_everything() {
        let mut db = LeaseDb::new();
        db.insert(lease([10, 0, 0, 128], 1, LeaseState::Bound));
        db.insert(lease([10, 0, 0, 129], 2, LeaseState::Released));
        db.add_quarantine(Quarantine {
            ip: Ipv4Addr::new(10, 0, 0, 130),
            reason: QuarantineReason::Declined,
            reported_by: MacAddr([0x52, 0x54, 0, 0, 0, 3]),
            until: Timestamp::from_unix_millis(1_700_000_600_000),
        });
        let json = db.to_json();
        assert!(
            json.contains("\"client_id\": \"01:52:54:00:00:00:01\""),
            "{json}"
        );
        assert!(json.contains("\"state\": \"released\""), "{json}");
        assert_eq!(LeaseDb::from_json(&json).unwrap(), db);
    }

    #[test]
    fn one_lease_per_client_and_per_address() {
        let mut db = LeaseDb::new();
        db.insert(lease([10, 0, 0, 128], 1, LeaseState::Bound));
        let mut moved = lease([10, 0, 0, 140], 1, LeaseState::Bound);
        db.insert(moved.clone());
        assert_eq!(db.leases().count(), 1);
        assert!(db.lease_at(Ipv4Addr::new(10, 0, 0, 128)).is_none());
        moved.ip = Ipv4Addr::new(10, 0, 0, 141);
        let dup = LeaseFile {
            format: FORMAT.into(),
            version: VERSION,
            leases: vec![
                db.lease_at(Ipv4Addr::new(10, 0, 0, 140)).unwrap().clone(),
                moved,
            ],
            quarantine: vec![],
            leases6: vec![],
            quarantine6: vec![],
        };
        let err = LeaseDb::from_json(&serde_json::to_string(&dup).unwrap()).unwrap_err();
        assert!(matches!(err, LeaseDbError::DuplicateClient(_)), "{err}");
    }

    #[test]
    fn ipv6_leases_round_trip_and_old_files_still_load() {
        let old = LeaseDb::new().to_json();
        assert!(
            !old.contains("leases6"),
            "no new keys without DHCPv6: {old}"
        );
        let mut db = LeaseDb::new();
        db.insert(lease([10, 0, 0, 128], 1, LeaseState::Bound));
        let duid: ClientId = "00:03:00:01:52:54:00:00:00:01".parse().unwrap();
        db.insert6(Lease6 {
            ip: "fd00::1000".parse().unwrap(),
            duid: duid.clone(),
            iaid: 7,
            mac: MacAddr([0x52, 0x54, 0, 0, 0, 1]),
            hostname: Some("vm1".into()),
            state: LeaseState::Bound,
            expires: Timestamp::from_unix_millis(1_700_000_000_000),
        });
        db.add_quarantine6(Quarantine6 {
            ip: "fd00::1001".parse().unwrap(),
            reported_by: duid.clone(),
            until: Timestamp::from_unix_millis(1_700_000_000_000),
        });
        let json = db.to_json();
        assert_eq!(LeaseDb::from_json(&json).unwrap(), db);
        assert!(db.lease6_of(&duid, 7).is_some() && db.lease6_of(&duid, 8).is_none());
        // A file written before DHCPv6 (no leases6 key) loads as it did.
        let v4_only = r#"{"format":"vnet-dhcp-leases","version":1,"leases":[]}"#;
        assert_eq!(LeaseDb::from_json(v4_only).unwrap(), LeaseDb::new());
    }

    #[test]
    fn an_ia_holds_one_address_and_an_address_one_ia() {
        let lease6 = |ip: &str, duid: u8, iaid| Lease6 {
            ip: ip.parse().unwrap(),
            duid: ClientId::from_option(&[0, 3, 0, 1, 2, 0, 0, 0, 0, duid]),
            iaid,
            mac: MacAddr([2, 0, 0, 0, 0, duid]),
            hostname: None,
            state: LeaseState::Bound,
            expires: Timestamp::from_unix_millis(1),
        };
        let mut db = LeaseDb::new();
        db.insert6(lease6("fd00::1000", 1, 7));
        db.insert6(lease6("fd00::1001", 1, 7));
        assert!(
            db.lease6_at("fd00::1000".parse().unwrap()).is_none(),
            "moved"
        );
        let a = lease6("fd00::1001", 1, 7);
        assert_eq!(db.lease6_of(&a.duid, 7), Some(&a));
        // Another IA takes the address over: the first IA has none left.
        db.insert6(lease6("fd00::1001", 2, 7));
        assert_eq!(db.lease6_of(&a.duid, 7), None);
        db.add_quarantine6(Quarantine6 {
            ip: "fd00::1001".parse().unwrap(),
            reported_by: a.duid.clone(),
            until: Timestamp::from_unix_millis(2),
        });
        let b = lease6("fd00::1001", 2, 7);
        assert_eq!((db.leases6().count(), db.lease6_of(&b.duid, 7)), (0, None));
        db.insert6(b.clone());
        assert_eq!(
            LeaseDb::from_json(&db.to_json()).unwrap(),
            db,
            "the index too"
        );
        assert!(db.retain_leases6(|_| false));
        assert_eq!(db.lease6_of(&b.duid, 7), None);
    }

    #[test]
    fn rejects_foreign_files() {
        assert!(matches!(
            LeaseDb::from_json("[]"),
            Err(LeaseDbError::Json(_))
        ));
        let other = r#"{"format":"dnsmasq","version":1,"leases":[]}"#;
        assert!(matches!(
            LeaseDb::from_json(other),
            Err(LeaseDbError::UnsupportedFormat { .. })
        ));
        assert_eq!("01:ab".parse::<ClientId>().unwrap().as_bytes(), &[1, 0xab]);
        assert!("01::ab".parse::<ClientId>().is_err());
    }
}
