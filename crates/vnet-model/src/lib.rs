//! The vnet model: what vnets, ports, leases and forwards are, as the config file
//! (`vnetd --config`), the control API (`RUN/control.sock`, HTTP/1.1 + JSON, versioned
//! under `/v1`) and the data plane describe them. A crate of its own so that the data
//! plane shares these types without compiling the control API's HTTP client.
//!
//! Routes of the control API and their bodies:
//!
//! Routes (all JSON; errors are `{"error": "..."}` with a 4xx/5xx status):
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET | `/v1/version` | | [`Version`] |
//! | GET | `/v1/config` | | the running configuration as TOML |
//! | POST | `/v1/reload` | | [`Reloaded`] |
//! | GET | `/v1/networks` | | `[NetworkInfo]` |
//! | POST | `/v1/networks` | [`NetworkSpec`] | 201 [`NetworkInfo`] |
//! | GET | `/v1/networks/{net}` | | [`NetworkInfo`] |
//! | DELETE | `/v1/networks/{net}` | | 204 |
//! | GET | `/v1/networks/{net}/ports` | | `[PortInfo]` |
//! | POST | `/v1/networks/{net}/ports` | [`PortSpec`] | 201 [`PortInfo`] |
//! | GET | `/v1/networks/{net}/ports/{id}` | | [`PortInfo`] |
//! | DELETE | `/v1/networks/{net}/ports/{id}` | | 204 |
//! | PUT | `/v1/networks/{net}/ports/{id}/vlan` | [`VlanMode`] | [`PortInfo`] |
//! | PATCH | `/v1/networks/{net}/ports/{id}/policy` | [`PolicyPatch`] | [`PortInfo`] |
//! | GET | `/v1/networks/{net}/ports/{id}/acl` | | [`AclReport`] |
//! | POST | `/v1/networks/{net}/ports/{id}/acl/{dir}` | [`AclInsert`] | 201 [`AclReport`] |
//! | PUT | `/v1/networks/{net}/ports/{id}/acl/{dir}/default` | [`AclAction`] | [`AclReport`] |
//! | DELETE | `/v1/networks/{net}/ports/{id}/acl/{dir}/{n}` | | 204 |
//! | GET | `/v1/networks/{net}/policy` | | [`PortPolicy`] |
//! | PATCH | `/v1/networks/{net}/policy` | [`PolicyPatch`] | [`PortPolicy`] |
//! | GET | `/v1/networks/{net}/mirrors` | | `[MirrorInfo]` |
//! | POST | `/v1/networks/{net}/mirrors` | [`MirrorSpec`] | 201 [`MirrorInfo`] |
//! | DELETE | `/v1/networks/{net}/mirrors/{name}` | | 204 |
//! | PUT | `/v1/networks/{net}/uplink` | [`UplinkSpec`] | [`PortInfo`] |
//! | DELETE | `/v1/networks/{net}/uplink` | | 204 |
//! | POST | `/v1/networks/{net}/uplink/remotes` | [`RemoteSpec`] | 201 [`PortInfo`] |
//! | DELETE | `/v1/networks/{net}/uplink/remotes/{addr}` | | 204 |
//! | GET | `/v1/networks/{net}/fdb` | | `[FdbEntry]` |
//! | POST | `/v1/networks/{net}/fdb` | [`FdbSpec`] | 201 [`FdbSpec`] |
//! | DELETE | `/v1/networks/{net}/fdb/{mac}` | | 204 |
//! | GET | `/v1/networks/{net}/macs` | | `[MacEntry]` |
//! | GET | `/v1/networks/{net}/capture` | | pcapng stream |
//! | GET | `/v1/networks/{net}/leases` | | `[Lease]` |
//! | PUT | `/v1/networks/{net}/dhcp` | [`DhcpSpec`] | [`NetworkInfo`] |
//! | PATCH | `/v1/networks/{net}/dhcp` | [`DhcpPatch`] | [`NetworkInfo`] |
//! | POST | `/v1/networks/{net}/dhcp/reservations` | [`Reservation`] | 201 [`Reservation`] |
//! | DELETE | `/v1/networks/{net}/dhcp/reservations/{mac}` | | 204 |
//! | GET | `/v1/networks/{net}/forwards` | | `[ForwardSpec]` |
//! | POST | `/v1/networks/{net}/forwards` | [`ForwardSpec`] | 201 [`ForwardSpec`] |
//! | DELETE | `/v1/networks/{net}/forwards/{host}` | | 204 |
//! | GET | `/metrics` | | Prometheus text |
//!
//! `DELETE /v1/networks/{net}/forwards/{host}` removes the TCP forward on `host`, or
//! with `?proto=udp` the UDP one.
//!
//! The `acl` routes edit a port's filters rule by rule (`{dir}`: `in` or `out`; `{n}`:
//! 1 for the first rule): what applies to the port (its own, else its vnet's) changes
//! and becomes the port's own, in one step.
#![forbid(unsafe_code)]

pub mod dhcp;
pub mod ipv6;
pub mod mirror;
pub mod policy;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

pub use ipnet::{Ipv4Net, Ipv6Net};

use serde::{Deserialize, Serialize};

pub use dhcp::DhcpCounters;
pub use ipv6::{Ipv6Error, Ipv6Info, RaCounters, RaSpec};
pub use mirror::{MirrorCounters, MirrorDirection, MirrorInfo, MirrorSpec, MirrorState, PortRef};
pub use policy::acl::{AclAction, AclInsert, AclReport};
pub use policy::{PolicyPatch, PolicyReport, PortPolicy};

/// Path prefix of this version of the control API.
pub const API_PREFIX: &str = "/v1";
pub use vnet_core::switch::VlanMode;
pub use vnet_core::wire::MacAddr;

/// What a vnet should be. Everything but the name has a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// 1–15 characters of `[A-Za-z0-9_.-]` (it may name a host interface).
    pub name: String,
    /// IP MTU of the vnet (68–65521); the max frame is MTU + 14 (+4 with a tag).
    #[serde(default = "default_mtu")]
    pub mtu: u32,
    /// Seconds a learned MAC lives without traffic.
    #[serde(default = "default_mac_aging")]
    pub mac_aging_secs: u64,
    /// Most MACs one port may teach the switch.
    #[serde(default = "default_max_macs_per_port")]
    pub max_macs_per_port: usize,
    /// Most MACs the vnet learns in all.
    #[serde(default = "default_max_macs")]
    pub max_macs: usize,
    /// The vnet's IPv4 subnet; needed by the host adapter and DHCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<Ipv4Net>,
    /// The vnet's IPv6 /64 [default: a ULA prefix derived from the name
    /// ([`ipv6::ula_prefix`]) when the vnet has a host adapter, DHCP or NAT].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<Ipv6Net>,
    /// `false`: no IPv6 of the vnet's own (no prefix, advertisements or host adapter
    /// address); guests' IPv6 frames are still switched.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub ipv6: bool,
    /// Router advertisements on the vnet's IPv6 subnet.
    #[serde(default, skip_serializing_if = "RaSpec::is_default")]
    pub ra: RaSpec,
    /// IGMP/MLD snooping: group-addressed frames (IPv4 multicast, IPv6 multicast
    /// such as solicited-node groups) reach only the ports that joined them and the
    /// multicast-router ports; `false` floods them to every port of the VLAN.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub snooping: bool,
    /// Make the host a member of the vnet (host-only networking). Needs root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_adapter: Option<HostAdapterSpec>,
    /// A NAT device (vmnet8): guests reach the outside through the host's sockets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat: Option<NatSpec>,
    /// Serve DHCP on the vnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp: Option<DhcpSpec>,
    /// Join the vnet to a host NIC (bridged networking). Needs root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<UplinkSpec>,
    /// Not saved in the state directory: the vnet ends with the daemon (`vnet net
    /// create --transient`). The config file has no such key: what it names is kept.
    #[serde(default, skip_serializing_if = "is_false")]
    pub transient: bool,
    /// Users who may attach through the vnet's data sockets (and add ports on it with
    /// the user role). With this or `allow_groups` set, everyone else but root and
    /// vnetd's own uid is refused; both empty: whoever can open the sockets attaches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_users: Vec<Account>,
    /// Groups whose members may attach, as `allow_users`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_groups: Vec<Account>,
    /// The policy of every client port (not services, the uplink or the host
    /// adapter), where the port's own does not replace it ([`PortPolicy::over`]).
    #[serde(default, skip_serializing_if = "PortPolicy::is_empty")]
    pub policy: PortPolicy,
    /// Mirrors (SPAN): ports whose frames are copied to another port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<MirrorSpec>,
}

/// A user or group as written in a spec: a name from the system's database, or a
/// number (`"alice"`, `1001`). Resolved when the vnet is made; a name must exist.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Account {
    Id(u32),
    Name(String),
}

/// A number is a uid or gid, anything else a name (as on the command line).
impl std::str::FromStr for Account {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(s.parse()
            .map_or_else(|_| Account::Name(s.to_string()), Account::Id))
    }
}

impl std::fmt::Display for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Account::Id(id) => write!(f, "{id}"),
            Account::Name(name) => f.write_str(name),
        }
    }
}

/// A user or group of an allow list as resolved: its number and, where the system
/// knows one, its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountInfo {
    pub id: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl std::fmt::Display for AccountInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name} ({})", self.id),
            None => write!(f, "{}", self.id),
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_true(b: &bool) -> bool {
    *b
}

/// A vnet's way out of the host: bridged to a host NIC through an AF_PACKET socket in
/// promiscuous mode (`interface`), or a VXLAN tunnel to other hosts (`vxlan`): one of
/// the two. Several vnets may share one NIC on different VLANs (one socket per NIC and
/// thread), or one local UDP address and port on different VNIs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkSpec {
    /// The host interface, e.g. `eth1` (bridged).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interface: String,
    /// Access mode: the NIC's VLAN this vnet maps to (frames leave tagged with it, only
    /// its frames come in, untagged inside the vnet). Absent: the NIC's untagged frames.
    /// With `vxlan`: the vnet's VLAN the VNI carries (untagged in the tunnel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    #[serde(default)]
    pub mode: UplinkMode,
    /// Trunk mode: the VLANs carried, tagged on both sides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vlans: Vec<u16>,
    /// A VXLAN tunnel instead of a NIC: needs no privilege.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan: Option<VxlanSpec>,
}

/// A vnet (or one of its VLANs) as one VXLAN segment (RFC 7348) across hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VxlanSpec {
    /// The segment's VXLAN network identifier, 0-16777215.
    pub vni: u32,
    /// This host's address on the underlay: the tunnel's UDP socket binds to it.
    pub local: IpAddr,
    /// UDP port, on both ends [default: 4789, IANA's].
    #[serde(default = "default_vxlan_port")]
    pub port: u16,
    /// The other hosts' addresses (VTEPs): broadcast, unknown unicast and multicast
    /// frames go to each; only they are heard.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remotes: Vec<IpAddr>,
    /// A multicast group instead of `remotes`: flooded frames go to the group, and
    /// every member is heard. Joined on the interface that holds `local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<IpAddr>,
    /// Range of outer UDP source ports, chosen per inner flow [default: 32768-61000,
    /// as the kernel's].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ports: Option<[u16; 2]>,
    /// Static forwarding entries: MACs pinned behind a VTEP (`vnet fdb add`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fdb: Vec<FdbSpec>,
}

fn default_vxlan_port() -> u16 {
    vnet_core::wire::vxlan::DEFAULT_PORT
}

/// A MAC pinned behind a remote VTEP: the body of `POST /v1/networks/{net}/fdb`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FdbSpec {
    pub mac: MacAddr,
    pub remote: IpAddr,
}

/// One row of a VXLAN vnet's forwarding database (`GET /v1/networks/{net}/fdb`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbEntry {
    pub mac: MacAddr,
    pub remote: IpAddr,
    pub age_secs: u64,
    /// Pinned through the API or the config: never ages, never moves.
    #[serde(rename = "static")]
    pub fixed: bool,
}

/// A remote VTEP to add: the body of `POST /v1/networks/{net}/uplink/remotes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteSpec {
    pub address: IpAddr,
}

/// What a VXLAN uplink port reports: its socket and each remote's traffic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanInfo {
    pub vni: u32,
    /// `ADDR:PORT` of the UDP socket (shared by the vnets on it).
    pub socket: String,
    pub remotes: Vec<RemoteInfo>,
    /// Datagrams the socket dropped before any vnet, by cause (`short`, `flags`,
    /// `unknown_vni`, `unknown_remote`): counted on the socket, which the vnets on
    /// it share.
    pub socket_drops: BTreeMap<String, u64>,
}

/// One remote VTEP's traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteInfo {
    pub address: IpAddr,
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    pub drops: u64,
}

/// How an uplink carries VLANs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UplinkMode {
    /// One VLAN of the NIC (or its untagged frames) is the vnet.
    #[default]
    Access,
    /// The NIC's VLANs `vlans` are the same VLANs inside the vnet.
    Trunk,
}

impl UplinkSpec {
    /// The uplink port's mode inside the vnet's switch.
    pub fn port_vlan_mode(&self) -> VlanMode {
        if let (Some(_), Some(vlan)) = (&self.vxlan, self.vlan) {
            return VlanMode::Access { vlan };
        }
        match self.mode {
            UplinkMode::Access => VlanMode::default(),
            UplinkMode::Trunk => VlanMode::Trunk {
                allowed: self.vlans.clone(),
                native: None,
            },
        }
    }

    /// Checks the interface name (or the tunnel) and the VLAN settings; the error says
    /// what to change.
    pub fn check(&self) -> Result<(), UplinkError> {
        if let Some(vx) = &self.vxlan {
            if !self.interface.is_empty() {
                return Err(UplinkError::InterfaceAndVxlan);
            }
            if self.mode == UplinkMode::Trunk || !self.vlans.is_empty() {
                return Err(UplinkError::VxlanTrunk);
            }
            if let Some(v) = self.vlan.filter(|v| !vnet_core::switch::is_valid_vid(*v)) {
                return Err(UplinkError::VlanOutOfRange(v));
            }
            return vx.check();
        }
        if !is_valid_ifname(&self.interface) {
            return Err(UplinkError::Interface(self.interface.clone()));
        }
        let bad = |v: &u16| !vnet_core::switch::is_valid_vid(*v);
        if let Some(v) = self.vlan.iter().chain(&self.vlans).find(|v| bad(v)) {
            return Err(UplinkError::VlanOutOfRange(*v));
        }
        match self.mode {
            UplinkMode::Access if !self.vlans.is_empty() => Err(UplinkError::VlansNeedTrunk),
            UplinkMode::Trunk if self.vlan.is_some() || self.vlans.is_empty() => {
                Err(UplinkError::TrunkNeedsVlans)
            }
            _ => Ok(()),
        }
    }
}

/// Why an [`UplinkSpec`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UplinkError {
    #[error("uplink interface {0:?} is not a valid interface name")]
    Interface(String),
    #[error("uplink VLAN {0} is out of range: use 1-4094")]
    VlanOutOfRange(u16),
    #[error("uplink \"vlans\" needs mode = \"trunk\" (access mode takes \"vlan\")")]
    VlansNeedTrunk,
    #[error("a trunk uplink takes a list \"vlans\" (and no \"vlan\")")]
    TrunkNeedsVlans,
    #[error("an uplink is either \"interface\" (bridged) or \"vxlan\", not both")]
    InterfaceAndVxlan,
    #[error("a VXLAN uplink carries one VLAN of the vnet (\"vlan\"), not a trunk")]
    VxlanTrunk,
    #[error("VNI {0} is out of range: use 0-16777215")]
    Vni(u32),
    #[error("VXLAN address {0} cannot be used here: {1}")]
    Address(IpAddr, &'static str),
    #[error("VXLAN takes \"remotes\" or a multicast \"group\", not both")]
    RemotesAndGroup,
    #[error("VXLAN source ports {0}-{1} are not a range: use LOW-HIGH, 1 <= LOW <= HIGH")]
    SourcePorts(u16, u16),
    #[error("VXLAN port 0 is not a port: use 4789 (the default) or another")]
    Port,
}

impl VxlanSpec {
    /// A tunnel on VNI `vni` from `local` to no remote yet, on the default port.
    pub fn new(vni: u32, local: IpAddr) -> Self {
        VxlanSpec {
            vni,
            local,
            port: default_vxlan_port(),
            remotes: Vec::new(),
            group: None,
            source_ports: None,
            fdb: Vec::new(),
        }
    }

    /// Checks the VNI, the addresses (one family, unicast where they must be) and the
    /// ports; the error says what to change.
    pub fn check(&self) -> Result<(), UplinkError> {
        if self.vni > vnet_core::wire::vxlan::MAX_VNI {
            return Err(UplinkError::Vni(self.vni));
        }
        if self.port == 0 {
            return Err(UplinkError::Port);
        }
        if self.local.is_unspecified() || self.local.is_multicast() {
            return Err(UplinkError::Address(
                self.local,
                "\"local\" must be one of this host's unicast addresses",
            ));
        }
        let family = |a: &IpAddr| a.is_ipv4() == self.local.is_ipv4();
        let unicast = self
            .remotes
            .iter()
            .chain(self.fdb.iter().map(|f| &f.remote));
        for a in unicast {
            if !family(a) {
                return Err(UplinkError::Address(*a, "not of the family of \"local\""));
            }
            if a.is_unspecified() || a.is_multicast() {
                return Err(UplinkError::Address(
                    *a,
                    "a remote must be a unicast address",
                ));
            }
        }
        if let Some(g) = self.group {
            if !self.remotes.is_empty() {
                return Err(UplinkError::RemotesAndGroup);
            }
            if !family(&g) || !g.is_multicast() {
                return Err(UplinkError::Address(
                    g,
                    "\"group\" must be a multicast address of the family of \"local\"",
                ));
            }
        }
        if let Some([lo, hi]) = self.source_ports {
            if lo == 0 || lo > hi {
                return Err(UplinkError::SourcePorts(lo, hi));
            }
        }
        Ok(())
    }

    /// The outer source port range in use.
    pub fn source_port_range(&self) -> [u16; 2] {
        self.source_ports
            .unwrap_or(vnet_core::wire::vxlan::SOURCE_PORTS)
    }

    /// Bytes the underlay carries beyond the vnet's MTU: 50 over IPv4, 70 over IPv6.
    pub fn overhead(&self) -> u32 {
        if self.local.is_ipv4() {
            vnet_core::wire::vxlan::OVERHEAD_V4
        } else {
            vnet_core::wire::vxlan::OVERHEAD_V6
        }
    }
}

/// Whether the kernel would take `name` as a network interface's name: 1-15 bytes, not
/// `.` or `..`, without `/`, `:`, white space or NUL.
pub fn is_valid_ifname(name: &str) -> bool {
    const MAX_IFNAME: usize = 15; // IFNAMSIZ - 1
    !name.is_empty()
        && name.len() <= MAX_IFNAME
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
}

/// The host's own interface on a vnet: a TAP with an address in the subnet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostAdapterSpec {
    /// Interface name [default: the vnet's name].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The host's address [default: the subnet's first address, `.1`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Addr>,
}

/// The DHCP service of a vnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DhcpSpec {
    /// Off leaves the service configured but silent (PXE labs bring their own).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// First and last address handed out [default: `.128`–`.253`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<[Ipv4Addr; 2]>,
    /// The server's own address [default: `.254`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<Ipv4Addr>,
    /// Lease time in seconds.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
    /// DNS servers announced (option 6).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<Ipv4Addr>,
    /// Domain name announced (option 15).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Fixed addresses by MAC (and for DHCPv6 by MAC or DUID).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reservations: Vec<Reservation>,
    /// DHCPv6 on the vnet's IPv6 /64: `stateful` (addresses and settings, the default),
    /// `stateless` (DNS servers and domain only; addresses by SLAAC) or `off`.
    #[serde(default, skip_serializing_if = "Dhcp6Mode::is_default")]
    pub ipv6: Dhcp6Mode,
    /// First and last IPv6 address handed out [default: `::1000`–`::1fff` of the /64].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range6: Option<[Ipv6Addr; 2]>,
    /// DNS servers DHCPv6 announces (option 23) [default: the router advertisements'
    /// DNS servers: the NAT device's `::2` on a NAT vnet with DNS].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns6: Vec<Ipv6Addr>,
}

impl Default for DhcpSpec {
    fn default() -> Self {
        DhcpSpec {
            enabled: true,
            range: None,
            server: None,
            lease_secs: default_lease_secs(),
            dns: Vec::new(),
            domain: None,
            reservations: Vec::new(),
            ipv6: Dhcp6Mode::default(),
            range6: None,
            dns6: Vec::new(),
        }
    }
}

/// What DHCPv6 does on a vnet with DHCP and IPv6.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dhcp6Mode {
    /// Addresses (IA_NA) from `range6`, with DNS servers and domain; the router
    /// advertises M and O.
    #[default]
    Stateful,
    /// DNS servers and domain only (information-request); the router advertises O.
    Stateless,
    /// No DHCPv6.
    Off,
}

impl Dhcp6Mode {
    pub fn is_default(&self) -> bool {
        *self == Dhcp6Mode::default()
    }

    /// The name used in configuration, the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Dhcp6Mode::Stateful => "stateful",
            Dhcp6Mode::Stateless => "stateless",
            Dhcp6Mode::Off => "off",
        }
    }
}

impl std::str::FromStr for Dhcp6Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stateful" => Ok(Dhcp6Mode::Stateful),
            "stateless" => Ok(Dhcp6Mode::Stateless),
            "off" => Ok(Dhcp6Mode::Off),
            _ => Err(format!(
                "unknown DHCPv6 mode {s:?}: use stateful, stateless or off"
            )),
        }
    }
}

/// A partial change of a vnet's DHCP settings (`PATCH /v1/networks/{net}/dhcp`): what is
/// given replaces the setting, what is missing stays. Applied by the data plane in one
/// step, so a reservation added meanwhile is never lost (as it could be between a read
/// and a `PUT` of the whole [`DhcpSpec`]). Reservations have their own endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DhcpPatch {
    /// Serve DHCP (`true`) or stay silent, keeping settings and leases (`false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// First and last address handed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<[Ipv4Addr; 2]>,
    /// The server's own address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<Ipv4Addr>,
    /// Lease time in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_secs: Option<u64>,
    /// DNS servers announced; empty: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Vec<Ipv4Addr>>,
    /// Domain name announced; empty: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// DHCPv6: `stateful`, `stateless` or `off`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Dhcp6Mode>,
    /// First and last IPv6 address handed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range6: Option<[Ipv6Addr; 2]>,
    /// DNS servers DHCPv6 announces; empty: the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns6: Option<Vec<Ipv6Addr>>,
}

impl DhcpPatch {
    /// `current` (the defaults for a vnet without DHCP) with this patch applied.
    pub fn apply(&self, current: Option<DhcpSpec>) -> DhcpSpec {
        let mut dhcp = current.unwrap_or_default();
        if let Some(enabled) = self.enabled {
            dhcp.enabled = enabled;
        }
        if let Some(range) = self.range {
            dhcp.range = Some(range);
        }
        if let Some(server) = self.server {
            dhcp.server = Some(server);
        }
        if let Some(secs) = self.lease_secs {
            dhcp.lease_secs = secs;
        }
        if let Some(dns) = &self.dns {
            dhcp.dns = dns.clone();
        }
        if let Some(domain) = &self.domain {
            let domain = domain.trim();
            dhcp.domain = (!domain.is_empty()).then(|| domain.to_string());
        }
        if let Some(mode) = self.ipv6 {
            dhcp.ipv6 = mode;
        }
        if let Some(range6) = self.range6 {
            dhcp.range6 = Some(range6);
        }
        if let Some(dns6) = &self.dns6 {
            dhcp.dns6 = dns6.clone();
        }
        dhcp
    }
}

pub fn default_true() -> bool {
    true
}
pub fn default_lease_secs() -> u64 {
    1800
}

/// The vnet's NAT device: a router on the subnet that carries the guests' ICMP echo,
/// UDP and DNS through the host's own sockets, without privileges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatSpec {
    /// The device's address, the guests' router [default: `.2`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// Answer DNS on the gateway address by forwarding to upstream resolvers.
    #[serde(default = "default_true")]
    pub dns: bool,
    /// Upstream resolvers as `ip:port` or `[ipv6]:port` (link-local with a numeric
    /// scope: `[fe80::1%2]:53`), tried in order [default: the host's
    /// `/etc/resolv.conf`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_upstreams: Vec<SocketAddr>,
    /// Seconds a UDP flow lives without traffic.
    #[serde(default = "default_udp_timeout_secs")]
    pub udp_timeout_secs: u64,
    /// Let guests reach the host's loopback services at the gateway address. Off by
    /// default: exposing host-local services is a security decision.
    #[serde(default)]
    pub host_loopback: bool,
    /// Inbound port forwards (nat.conf's `[incomingtcp]` and `[incomingudp]`): a host
    /// address and port whose connections (or datagrams) are carried to a guest's. A
    /// forward is named by its protocol and host address: one host port may carry a
    /// TCP and a UDP forward.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forward: Vec<ForwardSpec>,
}

/// One inbound port forward of a NAT vnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardSpec {
    #[serde(default)]
    pub proto: ForwardProto,
    /// Where the host listens, e.g. `127.0.0.1:8080`, `[::1]:8080` or `[::]:8080`.
    pub host: SocketAddr,
    /// The guest's address and port: in the vnet's subnet, or its IPv6 /64 (either
    /// family, whatever the host address's).
    pub guest: SocketAddr,
}

/// The transport of a port forward.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardProto {
    /// Each connection to the host address is carried to the guest.
    #[default]
    Tcp,
    /// Each host peer sending to the host address is a flow to the guest; its replies
    /// go back to that peer (until the flow idles out, `udp_timeout_secs`).
    Udp,
}

impl ForwardProto {
    /// The name used in configuration, the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardProto::Tcp => "tcp",
            ForwardProto::Udp => "udp",
        }
    }
}

impl Default for NatSpec {
    fn default() -> Self {
        NatSpec {
            gateway: None,
            dns: true,
            dns_upstreams: Vec::new(),
            udp_timeout_secs: default_udp_timeout_secs(),
            host_loopback: false,
            forward: Vec::new(),
        }
    }
}

pub fn default_udp_timeout_secs() -> u64 {
    30
}

/// A MAC that always gets the same address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reservation {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The IPv6 address DHCPv6 gives the same client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    /// The DHCPv6 client is the one with this DUID (hex octets, `00:03:00:01:...`),
    /// not the one with `mac` (from a DUID-LL/LLT, else the frames' source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duid: Option<String>,
}

/// Whether `s` is a DUID as written in a reservation: 2 to 130 colon-separated hex
/// octets (RFC 8415 §11.1).
pub fn is_duid_text(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    (2..=130).contains(&parts.len())
        && parts
            .iter()
            .all(|p| (1..=2).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// An address the DHCP service handed out (IPv4, or IPv6 by DHCPv6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub mac: MacAddr,
    pub ip: IpAddr,
    /// The DHCPv6 client's DUID (IPv6 leases only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Unix time (seconds) the lease ends.
    pub expires: u64,
    /// `offered`, `bound`, `expired`, `declined`, `reserved`...
    pub state: String,
}

pub fn default_mtu() -> u32 {
    1500
}
pub fn default_mac_aging() -> u64 {
    300
}
pub fn default_max_macs_per_port() -> usize {
    1024
}
pub fn default_max_macs() -> usize {
    16384
}

impl NetworkSpec {
    pub fn named(name: impl Into<String>) -> Self {
        NetworkSpec {
            name: name.into(),
            mtu: default_mtu(),
            mac_aging_secs: default_mac_aging(),
            max_macs_per_port: default_max_macs_per_port(),
            max_macs: default_max_macs(),
            subnet: None,
            subnet6: None,
            ipv6: true,
            ra: RaSpec::default(),
            snooping: true,
            host_adapter: None,
            nat: None,
            dhcp: None,
            uplink: None,
            transient: false,
            allow_users: Vec::new(),
            allow_groups: Vec::new(),
            policy: PortPolicy::default(),
            mirrors: Vec::new(),
        }
    }
}

/// The sockets clients attach through (the runtime directory layout).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSockets {
    /// QEMU `-netdev stream`.
    pub stream: PathBuf,
    /// QEMU `-netdev dgram`.
    pub dgram: PathBuf,
    /// vnet API (`SOCK_SEQPACKET`).
    pub api: PathBuf,
}

/// A vnet as it is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    pub name: String,
    pub mtu: u32,
    /// Largest untagged frame forwarded, in bytes.
    pub max_frame: usize,
    pub mac_aging_secs: u64,
    pub max_macs_per_port: usize,
    pub max_macs: usize,
    pub ports: usize,
    pub macs: usize,
    pub sockets: NetworkSockets,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<Ipv4Net>,
    /// IPv6 on the vnet; absent when it has none of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Info>,
    /// The host adapter as it runs (absent without root or when not configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_adapter: Option<HostAdapterInfo>,
    /// The DHCP service as configured, with defaults filled in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp: Option<DhcpSpec>,
    /// What the DHCP service has done; absent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp_counters: Option<DhcpCounters>,
    /// The uplink as it runs (absent without root or when not configured); its port is
    /// the one of kind `uplink`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<UplinkSpec>,
    /// The NAT device as it runs, with its counters; absent without NAT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat: Option<NatInfo>,
    /// The data-plane thread that runs the vnet (0 with one thread).
    #[serde(default)]
    pub thread: usize,
    /// Created `--transient`: not saved, gone after a restart.
    #[serde(default, skip_serializing_if = "is_false")]
    pub transient: bool,
    /// Who may attach (`NetworkSpec::allow_users`, resolved); empty with
    /// `allow_groups`: whoever can open the sockets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_users: Vec<AccountInfo>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_groups: Vec<AccountInfo>,
    /// The policy of the vnet's client ports ([`NetworkSpec::policy`]).
    #[serde(default, skip_serializing_if = "PortPolicy::is_empty")]
    pub policy: PortPolicy,
    /// Live captures of the vnet: how many run and what they took.
    #[serde(default)]
    pub captures: CaptureCounters,
    /// IGMP/MLD snooping: the groups ports joined and what it counted.
    #[serde(default)]
    pub snooping: SnoopingInfo,
}

/// IGMP/MLD snooping of one vnet as it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnoopingInfo {
    pub enabled: bool,
    /// Registered groups: each with the ports that joined it.
    #[serde(default)]
    pub groups: Vec<SnoopGroup>,
    /// Ports that take all group traffic: the vnet's services and uplink, and ports
    /// a query or PIM hello came from.
    #[serde(default)]
    pub router_ports: Vec<u32>,
    /// Group joins read from IGMP/MLD reports (one per group record).
    #[serde(default)]
    pub joins: u64,
    /// Leaves read (IGMP leave, MLD done, an include of no sources).
    #[serde(default)]
    pub leaves: u64,
    /// IGMP/MLD queries read.
    #[serde(default)]
    pub queries: u64,
    /// Frames to a registered group: delivered to its members and routers only.
    #[serde(default)]
    pub group_frames: u64,
    /// Frames to an unregistered group: flooded.
    #[serde(default)]
    pub unregistered_frames: u64,
    /// Joins not kept: the vnet (`max_macs`) or the port (`max_macs_per_port`) held
    /// its most memberships; the group floods as unregistered.
    #[serde(default)]
    pub refused: u64,
}

/// One multicast group a snooping vnet forwards by membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnoopGroup {
    pub vlan: u16,
    /// The group's MAC address (IPv4 groups sharing one share its members).
    pub mac: MacAddr,
    pub ports: Vec<u32>,
}

/// Live captures of one vnet: those running, and the frames all captures since vnetd
/// started took and dropped (their reader was behind).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureCounters {
    pub running: usize,
    pub frames: u64,
    pub dropped: u64,
}

/// A running NAT device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatInfo {
    /// The device's address: the guests' router and DNS server.
    pub gateway: Ipv4Addr,
    /// The resolvers its DNS forwards to (the configured ones, else the host's);
    /// empty: DNS is off.
    pub dns_upstreams: Vec<SocketAddr>,
    /// Flows (host sockets) open now.
    pub flows: usize,
    pub counters: NatCounters,
}

/// What a NAT device has done since the vnet started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatCounters {
    /// ARP requests for the gateway answered.
    pub arp_replies: u64,
    /// Pings to the gateway answered.
    pub echo_local: u64,
    /// Datagrams sent out through flow sockets.
    pub to_host: u64,
    /// Datagrams from flow sockets delivered to guests.
    pub from_host: u64,
    /// DNS queries to the gateway.
    pub dns_queries: u64,
    /// Upstream answers relayed to guests.
    pub dns_answers: u64,
    /// Queries about the vnet's DHCP names, answered by the device itself.
    pub dns_local: u64,
    /// Queries no upstream answered in time (the guest got SERVFAIL).
    pub dns_failures: u64,
    /// Answers too big for the vnet's MTU, sent truncated (TC) instead.
    pub dns_truncated: u64,
    /// Queries to the gateway's IPv6 address (`::2`; counted in `dns_queries` too).
    #[serde(default)]
    pub dns_queries_ipv6: u64,
    /// Datagrams to the gateway's port 53 that are no well-formed query, dropped.
    #[serde(default)]
    pub dns_malformed: u64,
    /// Query attempts sent to IPv4 upstreams (a retry is an attempt of its own).
    #[serde(default)]
    pub dns_upstream_ipv4: u64,
    /// Query attempts sent to IPv6 upstreams.
    #[serde(default)]
    pub dns_upstream_ipv6: u64,
    /// Answers from IPv6 upstreams (counted in `dns_answers` too).
    #[serde(default)]
    pub dns_answers_ipv6: u64,
    pub flows_opened: u64,
    pub flows_closed: u64,
    /// Guests told "unreachable" (ICMP, or RST for TCP).
    pub unreachable: u64,
    /// Guests' packets to destinations NAT never reaches: link-local, multicast,
    /// broadcast, `0.0.0.0/8`, loopback, and the host's own addresses unless
    /// `host_loopback` (refused with ICMP "prohibited" or RST; silently for multicast
    /// and broadcast).
    pub refused_destinations: u64,
    /// Guests' new flows refused at the vnet's flow limit (`[limits] nat_flows`), with
    /// RST or ICMP "prohibited"; port forwards' peers refused there too.
    #[serde(default)]
    pub refused_flows: u64,
    /// Well-formed frames not translated (other subnets, broadcasts, limits; datagrams
    /// on a UDP port forward for a guest whose MAC is not known yet).
    pub ignored: u64,
    /// IPv4 fragments from guests.
    pub fragments: u64,
    /// Datagrams put back together from them.
    pub reassembled: u64,
    /// Datagrams given up (timed out, overlapping or contradicting pieces, limits).
    pub reassembly_failures: u64,
    /// Broken frames addressed to the device.
    pub malformed: u64,
    /// Answers dropped for being larger than one IPv4 datagram can carry (answers over
    /// the vnet's MTU leave in fragments).
    pub oversize: u64,
}

impl NatCounters {
    /// Every counter with its name and meaning, in declaration order: one list for the
    /// CLI and `/metrics`, so neither forgets one.
    pub fn fields(&self) -> [(&'static str, &'static str, u64); 25] {
        [
            (
                "arp_replies",
                "ARP requests for the gateway answered.",
                self.arp_replies,
            ),
            (
                "echo_local",
                "Pings to the gateway answered.",
                self.echo_local,
            ),
            (
                "to_host",
                "Datagrams sent out through flow sockets.",
                self.to_host,
            ),
            (
                "from_host",
                "Datagrams from flow sockets delivered to guests.",
                self.from_host,
            ),
            (
                "dns_queries",
                "DNS queries to the gateway.",
                self.dns_queries,
            ),
            (
                "dns_answers",
                "Upstream DNS answers relayed to guests.",
                self.dns_answers,
            ),
            (
                "dns_local",
                "DNS queries about the vnet's DHCP names, answered locally.",
                self.dns_local,
            ),
            (
                "dns_failures",
                "DNS queries no upstream answered in time (SERVFAIL).",
                self.dns_failures,
            ),
            (
                "dns_truncated",
                "DNS answers too big for the MTU, sent truncated.",
                self.dns_truncated,
            ),
            (
                "dns_queries_ipv6",
                "DNS queries to the gateway's IPv6 address.",
                self.dns_queries_ipv6,
            ),
            (
                "dns_malformed",
                "Datagrams to the gateway's DNS port that are no well-formed query, dropped.",
                self.dns_malformed,
            ),
            (
                "dns_upstream_ipv4",
                "DNS query attempts sent to IPv4 upstreams.",
                self.dns_upstream_ipv4,
            ),
            (
                "dns_upstream_ipv6",
                "DNS query attempts sent to IPv6 upstreams.",
                self.dns_upstream_ipv6,
            ),
            (
                "dns_answers_ipv6",
                "Upstream DNS answers from IPv6 upstreams.",
                self.dns_answers_ipv6,
            ),
            (
                "flows_opened",
                "Flows (host sockets) opened.",
                self.flows_opened,
            ),
            (
                "flows_closed",
                "Flows (host sockets) closed.",
                self.flows_closed,
            ),
            (
                "unreachable",
                "Guests told \"unreachable\" (ICMP, or RST for TCP).",
                self.unreachable,
            ),
            (
                "refused_destinations",
                "Packets to link-local, multicast, broadcast, loopback or host addresses refused.",
                self.refused_destinations,
            ),
            (
                "refused_flows",
                "New flows refused at the flow limit ([limits] nat_flows).",
                self.refused_flows,
            ),
            (
                "ignored",
                "Well-formed frames not translated.",
                self.ignored,
            ),
            ("fragments", "IPv4 fragments from guests.", self.fragments),
            (
                "reassembled",
                "Datagrams reassembled from guests' fragments.",
                self.reassembled,
            ),
            (
                "reassembly_failures",
                "Fragmented datagrams given up (timeout, overlap, limits).",
                self.reassembly_failures,
            ),
            (
                "malformed",
                "Broken frames addressed to the device.",
                self.malformed,
            ),
            (
                "oversize",
                "Answers dropped for exceeding the vnet's MTU.",
                self.oversize,
            ),
        ]
    }
}

/// A running host adapter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostAdapterInfo {
    pub name: String,
    pub address: Ipv4Addr,
    /// Its IPv6 address (`::1` of the vnet's /64), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address6: Option<Ipv6Addr>,
    pub port: u32,
}

/// How a port is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortKind {
    Stream,
    Dgram,
    Tap,
    Api,
    /// A VDE client (QEMU `-netdev vde`, `vde_plug`) through `RUN/NET/vde/ctl`.
    Vde,
    /// A built-in service of the vnet (DHCP).
    Service,
    /// An open of the classic device file `RUN/dev/NET` (FUSE).
    Device,
    /// The vnet's uplink to a host NIC (bridged).
    Uplink,
    /// A virtio-net NIC through vhost-user at `RUN/NET/vhost-user/NAME.sock`.
    #[serde(rename = "vhost-user")]
    VhostUser,
    /// A host interface someone else created and holds (a hypervisor's TAP, a veth
    /// end), joined through an AF_PACKET socket.
    Interface,
}

impl PortKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PortKind::Stream => "stream",
            PortKind::Dgram => "dgram",
            PortKind::Tap => "tap",
            PortKind::Api => "api",
            PortKind::Service => "service",
            PortKind::Vde => "vde",
            PortKind::Device => "device",
            PortKind::Uplink => "uplink",
            PortKind::VhostUser => "vhost-user",
            PortKind::Interface => "interface",
        }
    }
}

/// A port to add through the API (socket ports appear when clients connect).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PortSpec {
    /// A TAP interface the daemon creates (or opens, if it exists) and owns.
    Tap {
        ifname: String,
        #[serde(default)]
        vlan: VlanMode,
        /// The port's own policy (over its vnet's, section by section).
        #[serde(default, skip_serializing_if = "PortPolicy::is_empty")]
        policy: PortPolicy,
    },
    /// A vhost-user-net back-end at `RUN/NET/vhost-user/NAME.sock`: a QEMU virtio-net
    /// NIC (`-netdev vhost-user`) becomes this port when it connects, and again after it
    /// reconnects.
    #[serde(rename = "vhost-user")]
    VhostUser {
        name: String,
        #[serde(default)]
        vlan: VlanMode,
        /// The port's own policy (over its vnet's, section by section).
        #[serde(default, skip_serializing_if = "PortPolicy::is_empty")]
        policy: PortPolicy,
    },
    /// An existing host interface that another program created and holds (the TAP
    /// Firecracker, cloud-hypervisor or libvirt opened, a veth end), joined through an
    /// AF_PACKET socket. The port follows the name: while no such interface
    /// exists (not yet, or deleted until the VM restarts) it stays, in state `down`.
    Interface {
        interface: String,
        #[serde(default)]
        vlan: VlanMode,
        /// The port's own policy (over its vnet's, section by section).
        #[serde(default, skip_serializing_if = "PortPolicy::is_empty")]
        policy: PortPolicy,
    },
}

impl PortSpec {
    /// The port's VLAN settings.
    pub fn vlan(&self) -> &VlanMode {
        match self {
            PortSpec::Tap { vlan, .. }
            | PortSpec::VhostUser { vlan, .. }
            | PortSpec::Interface { vlan, .. } => vlan,
        }
    }

    pub fn vlan_mut(&mut self) -> &mut VlanMode {
        match self {
            PortSpec::Tap { vlan, .. }
            | PortSpec::VhostUser { vlan, .. }
            | PortSpec::Interface { vlan, .. } => vlan,
        }
    }

    /// The port's own policy.
    pub fn policy(&self) -> &PortPolicy {
        match self {
            PortSpec::Tap { policy, .. }
            | PortSpec::VhostUser { policy, .. }
            | PortSpec::Interface { policy, .. } => policy,
        }
    }

    pub fn policy_mut(&mut self) -> &mut PortPolicy {
        match self {
            PortSpec::Tap { policy, .. }
            | PortSpec::VhostUser { policy, .. }
            | PortSpec::Interface { policy, .. } => policy,
        }
    }
}

/// Whether a port's link carries frames now (ports whose link can come and go).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    Up,
    /// The interface is down or does not exist: frames to it are dropped as
    /// `link_down`.
    Down,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Up => "up",
            LinkState::Down => "down",
        }
    }
}

/// Traffic counters of a port. `rx` = into the vnet from the port's client, `tx` = out
/// to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Drops by cause: runt, oversize, bad_tag, vlan_denied, same_port, queue_full,
    /// malformed.
    pub drops: BTreeMap<String, u64>,
}

/// A port as it is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortInfo {
    pub id: u32,
    pub kind: PortKind,
    /// Who is attached: the TAP name, the peer's socket path, the client's pid and command.
    pub description: String,
    /// Process id of the client, where the socket tells it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// For ports on a host interface that can come and go (`interface`): whether it
    /// carries frames now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<LinkState>,
    /// The uid that made the port: the client's on a data socket (the kernel's
    /// credentials), the caller's for a port added through the API; absent for the
    /// vnet's own (services, host adapter, uplink, ports from the configuration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    pub vlan: VlanMode,
    /// Address declared by the client (vnet API SET_MAC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    pub promiscuous: bool,
    /// MACs the switch has learned on this port.
    pub macs: Vec<MacAddr>,
    pub counters: Counters,
    /// Frames waiting in the egress queue, and its bound.
    pub queue_len: usize,
    pub queue_capacity: usize,
    /// A VXLAN uplink's socket and remotes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan: Option<VxlanInfo>,
    /// The port's own policy (`PATCH .../ports/{id}/policy`).
    #[serde(default, skip_serializing_if = "PortPolicy::is_empty")]
    pub policy: PortPolicy,
    /// What is enforced on the port: its own policy over its vnet's (nothing on
    /// services, the uplink and the host adapter).
    #[serde(default, skip_serializing_if = "PortPolicy::is_empty")]
    pub enforced: PortPolicy,
    /// What the enforcement counted, beyond `counters.drops`; `None` when nothing is
    /// enforced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_counters: Option<PolicyReport>,
    /// The mirrors whose destination the port is: it takes their copies and nothing
    /// else, and what it sends is dropped (`mirror_port`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirror_destination: Vec<String>,
}

/// One row of a vnet's MAC table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MacEntry {
    pub vlan: u16,
    pub mac: MacAddr,
    pub port: u32,
    pub age_secs: u64,
    /// Declared by the port (never ages, never moves).
    pub fixed: bool,
}

/// The daemon's version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub version: String,
    pub api: String,
}

/// What `POST /v1/reload` changed, one line per change (empty: the config file
/// changed nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloaded {
    pub changes: Vec<String>,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

impl NetworkSpec {
    /// The NAT device's address, default filled in; `None` without NAT or subnet.
    pub fn nat_gateway(&self) -> Option<Ipv4Addr> {
        let nat = self.nat.as_ref()?;
        Some(nat.gateway.unwrap_or(nth(self.subnet?, 2)))
    }

    /// The vnet's IPv6 /64: `subnet6`, else the name's ULA prefix if the vnet has a
    /// host adapter, DHCP or NAT; `None` with `ipv6 = false`.
    pub fn subnet6_resolved(&self) -> Option<Ipv6Net> {
        if !self.ipv6 {
            return None;
        }
        let services = self.host_adapter.is_some() || self.dhcp.is_some() || self.nat.is_some();
        self.subnet6
            .or_else(|| services.then(|| ipv6::ula_prefix(&self.name)))
    }

    /// The host adapter's IPv6 address (`::1`), if it has one.
    pub fn host_adapter6(&self) -> Option<Ipv6Addr> {
        self.host_adapter.as_ref()?;
        Some(ipv6::nth6(self.subnet6_resolved()?, 1))
    }

    /// The NAT device's IPv6 address (`::2`), the guests' default router and DNS
    /// server; `None` without NAT or IPv6.
    pub fn nat_gateway6(&self) -> Option<Ipv6Addr> {
        self.nat.as_ref()?;
        Some(ipv6::nth6(self.subnet6_resolved()?, 2))
    }

    /// The advertisements as sent: DNS and domains defaulted (the NAT device on a
    /// NAT vnet with DNS; the DHCP domain), M and O following DHCPv6 unless set; `None`
    /// without IPv6 or with `ra` off.
    pub fn ra_resolved(&self) -> Option<RaSpec> {
        self.subnet6_resolved()?;
        let mut ra = self.ra.clone();
        if !ra.enabled {
            return None;
        }
        let dhcp6 = self.dhcp6_mode();
        ra.managed.get_or_insert(dhcp6 == Some(Dhcp6Mode::Stateful));
        ra.other.get_or_insert(dhcp6.is_some());
        if ra.dns.is_empty() && self.nat.as_ref().is_some_and(|n| n.dns) {
            ra.dns.extend(self.nat_gateway6());
        }
        if ra.domains.is_empty() {
            ra.domains
                .extend(self.dhcp.as_ref().and_then(|d| d.domain.clone()));
        }
        Some(ra)
    }

    /// What DHCPv6 does on the vnet: `None` without DHCP, IPv6 or with DHCPv6 (or the
    /// DHCP service) off.
    pub fn dhcp6_mode(&self) -> Option<Dhcp6Mode> {
        let d = self.dhcp.as_ref().filter(|d| d.enabled)?;
        self.subnet6_resolved()?;
        Some(d.ipv6).filter(|m| *m != Dhcp6Mode::Off)
    }

    /// The host adapter's interface name and address, defaults filled in; `None` if the
    /// vnet has no adapter or no subnet to put it in.
    pub fn host_adapter_resolved(&self) -> Option<(String, Ipv4Addr)> {
        let ha = self.host_adapter.as_ref()?;
        let subnet = self.subnet?;
        let name = ha.name.clone().unwrap_or_else(|| self.name.clone());
        let address = ha.address.unwrap_or_else(|| nth(subnet, 1));
        Some((name, address))
    }

    /// The DHCP settings with defaults filled in (`.254` server, `.128`–`.253` pool on a
    /// /24; generally the upper half of the subnet below the server).
    pub fn dhcp_resolved(&self) -> Option<DhcpSpec> {
        let mut d = self.dhcp.clone()?;
        let subnet = self.subnet?;
        let size = 1u32 << (32 - u32::from(subnet.prefix_len()));
        d.server.get_or_insert(nth(subnet, size.saturating_sub(2)));
        d.range
            .get_or_insert([nth(subnet, size / 2), nth(subnet, size.saturating_sub(3))]);
        if let Some(subnet6) = self.subnet6_resolved().filter(|_| d.ipv6 != Dhcp6Mode::Off) {
            d.range6
                .get_or_insert([ipv6::nth6(subnet6, 0x1000), ipv6::nth6(subnet6, 0x1fff)]);
            if d.dns6.is_empty() {
                d.dns6 = self.ra_resolved().map(|ra| ra.dns).unwrap_or_default();
                if d.dns6.is_empty() && self.nat.as_ref().is_some_and(|n| n.dns) {
                    d.dns6.extend(self.nat_gateway6());
                }
            }
        }
        Some(d)
    }
}

impl NetworkSpec {
    /// Checks the spec the way the API promises: a usable name and MTU, addresses that
    /// fit the subnet and do not collide, a sound uplink and MAC limits. The config
    /// file, `POST /v1/networks` and every live change run it.
    pub fn validate(&self) -> Result<(), SpecError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 15
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && !self.name.starts_with('.');
        if !name_ok {
            return Err(SpecError::Name(self.name.clone()));
        }
        // These names are taken by the run directory's own layout.
        if ["control.sock", "dev"].contains(&self.name.as_str()) || self.name.ends_with(".sock") {
            return Err(SpecError::ReservedName(self.name.clone()));
        }
        if !(68..=65521).contains(&self.mtu) {
            return Err(SpecError::Mtu(self.mtu));
        }
        self.validate_addressing()?;
        self.validate_ipv6()?;
        if let Some(uplink) = &self.uplink {
            uplink.check()?;
        }
        if self.mac_aging_secs == 0 || self.max_macs == 0 || self.max_macs_per_port == 0 {
            return Err(SpecError::MacLimits);
        }
        self.policy.validate().map_err(SpecError::Policy)?;
        mirror::check_all(&self.mirrors).map_err(SpecError::Mirror)
    }

    /// Checks that the host adapter and DHCP fit the subnet.
    fn validate_addressing(&self) -> Result<(), SpecError> {
        let needs_subnet = self.host_adapter.is_some() || self.dhcp.is_some() || self.nat.is_some();
        let Some(subnet) = self.subnet else {
            return if needs_subnet {
                Err(SpecError::NoSubnet)
            } else {
                Ok(())
            };
        };
        if subnet.prefix_len() > 30 {
            return Err(SpecError::SubnetTooSmall(subnet));
        }
        let usable = |ip| is_host_address(subnet, ip);
        if let Some((ifname, address)) = self.host_adapter_resolved() {
            if !is_valid_ifname(&ifname) {
                return Err(SpecError::HostAdapterName(ifname));
            }
            if !usable(address) {
                return Err(SpecError::HostAdapterAddress { address, subnet });
            }
        }
        if let Some(d) = self.dhcp_resolved() {
            let [first, last] = d.range.expect("resolved");
            let server = d.server.expect("resolved");
            if !usable(first) || !usable(last) || first > last {
                return Err(SpecError::DhcpRange {
                    first,
                    last,
                    subnet,
                });
            }
            if !usable(server) || (first..=last).contains(&server) {
                return Err(SpecError::DhcpServer { server, subnet });
            }
            if let Some(ha) = self.host_adapter_resolved().map(|(_, a)| a) {
                if ha == server || (first..=last).contains(&ha) {
                    return Err(SpecError::HostAdapterInDhcp(ha));
                }
            }
            for r in &d.reservations {
                if !usable(r.ip) || r.ip == server {
                    return Err(SpecError::Reservation {
                        mac: r.mac,
                        ip: r.ip,
                        subnet,
                    });
                }
            }
            if d.lease_secs < 60 {
                return Err(SpecError::LeaseTooShort(d.lease_secs));
            }
        }
        self.validate_nat(subnet)
    }

    /// Checks `subnet6`, `ipv6`, `ra` and DHCPv6's settings.
    fn validate_ipv6(&self) -> Result<(), SpecError> {
        match (self.subnet6, self.ipv6) {
            (Some(_), false) => return Err(Ipv6Error::Off.into()),
            (Some(subnet), true) => ipv6::check_subnet6(subnet)?,
            (None, _) => {}
        }
        self.ra.check()?;
        self.validate_dhcp6()
    }

    /// Checks DHCPv6's range, DNS servers and the reservations' IPv6 parts.
    fn validate_dhcp6(&self) -> Result<(), SpecError> {
        let Some(d) = self.dhcp_resolved() else {
            return Ok(());
        };
        let subnet6 = self.subnet6_resolved();
        let usable = |a: Ipv6Addr| {
            subnet6.is_some_and(|s| s.contains(&a) && a != s.network() && !a.is_multicast())
        };
        for r in &d.reservations {
            if let Some(duid) = r.duid.as_deref().filter(|d| !is_duid_text(d)) {
                return Err(SpecError::Duid(duid.to_string()));
            }
            if let Some(ip6) = r.ip6.filter(|a| !usable(*a)) {
                return Err(SpecError::Reservation6 { mac: r.mac, ip6 });
            }
        }
        let configured = self.dhcp.as_ref().and_then(|d| d.range6);
        if let Some([first, last]) = d.range6.or(configured) {
            let size = u128::from(last).wrapping_sub(u128::from(first));
            if !usable(first) || !usable(last) || first > last || size >= 1 << 16 {
                return Err(SpecError::Dhcp6Range { first, last });
            }
        }
        if let Some(a) = d
            .dns6
            .iter()
            .find(|a| a.is_unspecified() || a.is_multicast())
        {
            return Err(SpecError::Dhcp6Dns(*a));
        }
        Ok(())
    }

    /// Checks that the NAT device's address is free in the subnet.
    fn validate_nat(&self, subnet: Ipv4Net) -> Result<(), SpecError> {
        let (Some(nat), Some(gateway)) = (&self.nat, self.nat_gateway()) else {
            return Ok(());
        };
        if !is_host_address(subnet, gateway) {
            return Err(SpecError::NatGateway { gateway, subnet });
        }
        if self
            .host_adapter_resolved()
            .is_some_and(|(_, a)| a == gateway)
        {
            return Err(SpecError::NatGatewayIsHostAdapter(gateway));
        }
        if let Some(d) = self.dhcp_resolved() {
            let [first, last] = d.range.expect("resolved");
            if d.server == Some(gateway) || (first..=last).contains(&gateway) {
                return Err(SpecError::NatGatewayInDhcp {
                    gateway,
                    first,
                    last,
                });
            }
        }
        if nat.udp_timeout_secs == 0 {
            return Err(SpecError::UdpTimeout);
        }
        // A link-local address means nothing without the link it is on.
        let unscoped = |u: &&SocketAddr| matches!(u, SocketAddr::V6(a) if a.ip().is_unicast_link_local() && a.scope_id() == 0);
        if let Some(&upstream) = nat.dns_upstreams.iter().find(unscoped) {
            return Err(SpecError::DnsUpstreamScope(upstream));
        }
        let mut hosts = std::collections::HashSet::new();
        let subnet6 = self.subnet6_resolved();
        for f in &nat.forward {
            let guest_ok = match f.guest.ip() {
                IpAddr::V4(ip) => is_host_address(subnet, ip) && ip != gateway,
                // Not the /64's network address, the host adapter's ::1 or the gateway's.
                IpAddr::V6(ip) => subnet6.is_some_and(|s| {
                    s.contains(&ip) && ![0, 1, 2].map(|n| ipv6::nth6(s, n)).contains(&ip)
                }),
            };
            if !guest_ok {
                let within = match (f.guest.ip(), subnet6) {
                    (IpAddr::V4(_), _) => subnet.to_string(),
                    (IpAddr::V6(_), Some(s)) => s.to_string(),
                    (IpAddr::V6(_), None) => "an IPv6 subnet (this vnet has none)".into(),
                };
                return Err(SpecError::ForwardGuest {
                    host: f.host,
                    guest: f.guest,
                    within,
                });
            }
            if !hosts.insert((f.proto, f.host)) {
                return Err(SpecError::ForwardTwice {
                    proto: f.proto,
                    host: f.host,
                });
            }
        }
        Ok(())
    }
}

/// Whether `ip` is in `subnet` and neither its network nor its broadcast address.
fn is_host_address(subnet: Ipv4Net, ip: Ipv4Addr) -> bool {
    subnet.contains(&ip) && ip != subnet.network() && ip != subnet.broadcast()
}

/// Why a [`NetworkSpec`] cannot be used; the message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error(
        "invalid vnet name {0:?}: use 1-15 characters of A-Z a-z 0-9 - _ . (not starting with '.')"
    )]
    Name(String),
    #[error("vnet name {0:?} is reserved by the runtime directory layout: choose another")]
    ReservedName(String),
    #[error("mtu {0} is out of range: use 68-65521")]
    Mtu(u32),
    #[error("a host adapter, DHCP or NAT needs a subnet, e.g. \"subnet\": \"192.168.101.0/24\"")]
    NoSubnet,
    #[error("subnet {0} is too small: use a prefix of /30 or shorter")]
    SubnetTooSmall(Ipv4Net),
    #[error("host adapter name {0:?} is not a valid interface name (1-15 characters)")]
    HostAdapterName(String),
    #[error("host adapter address {address} is not a host address of {subnet}")]
    HostAdapterAddress { address: Ipv4Addr, subnet: Ipv4Net },
    #[error("DHCP range {first}-{last} must be host addresses of {subnet}, first <= last")]
    DhcpRange {
        first: Ipv4Addr,
        last: Ipv4Addr,
        subnet: Ipv4Net,
    },
    #[error("DHCP server address {server} must be a host address of {subnet} outside the range")]
    DhcpServer { server: Ipv4Addr, subnet: Ipv4Net },
    #[error("the host adapter address {0} collides with the DHCP server or range")]
    HostAdapterInDhcp(Ipv4Addr),
    #[error("reservation {mac} -> {ip} is not a free host address of {subnet}")]
    Reservation {
        mac: MacAddr,
        ip: Ipv4Addr,
        subnet: Ipv4Net,
    },
    #[error("DHCP lease time {0}s is too short: use at least 60")]
    LeaseTooShort(u64),
    #[error("DHCPv6 range {first}-{last} must be addresses of the vnet's IPv6 /64 (its subnet6), first <= last, at most 65536 of them")]
    Dhcp6Range { first: Ipv6Addr, last: Ipv6Addr },
    #[error("DHCPv6 DNS server {0} is not a unicast address")]
    Dhcp6Dns(Ipv6Addr),
    #[error("reservation {mac} -> {ip6} is not an address of the vnet's IPv6 /64 (its subnet6)")]
    Reservation6 { mac: MacAddr, ip6: Ipv6Addr },
    #[error("DUID {0:?} is not 2 to 130 hex octets like 00:03:00:01:52:54:00:12:34:56")]
    Duid(String),
    #[error("NAT gateway {gateway} is not a host address of {subnet}")]
    NatGateway { gateway: Ipv4Addr, subnet: Ipv4Net },
    #[error("the NAT gateway {0} collides with the host adapter's address")]
    NatGatewayIsHostAdapter(Ipv4Addr),
    #[error("the NAT gateway {gateway} collides with the DHCP server or range {first}-{last}")]
    NatGatewayInDhcp {
        gateway: Ipv4Addr,
        first: Ipv4Addr,
        last: Ipv4Addr,
    },
    #[error("NAT udp_timeout_secs must be at least 1")]
    UdpTimeout,
    #[error("DNS upstream {0}: a link-local address needs its interface's index as scope, e.g. [fe80::1%2]:53")]
    DnsUpstreamScope(SocketAddr),
    #[error("forward {host} -> {guest}: the guest address must be a host address of {within} other than the gateway")]
    ForwardGuest {
        host: SocketAddr,
        guest: SocketAddr,
        /// The subnet (or /64) of the guest's family.
        within: String,
    },
    #[error("forward: {} {host} is listed twice", .proto.as_str())]
    ForwardTwice {
        proto: ForwardProto,
        host: SocketAddr,
    },
    #[error(transparent)]
    Uplink(#[from] UplinkError),
    #[error(transparent)]
    Ipv6(#[from] Ipv6Error),
    #[error("mac_aging_secs, max_macs and max_macs_per_port must be at least 1")]
    MacLimits,
    #[error("{0}")]
    Mirror(String),
    #[error("policy: {0}")]
    Policy(String),
}

/// The `n`th address of `subnet` (0 = the network address).
fn nth(subnet: Ipv4Net, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()).wrapping_add(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    /// What a daemon holds for a vnet with DHCP: defaults filled in, a reservation.
    fn running_dhcp() -> DhcpSpec {
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
                ip6: None,
                duid: None,
            }],
            ipv6: Dhcp6Mode::Stateful,
            range6: None,
            dns6: Vec::new(),
        }
    }

    #[test]
    fn a_dhcp_patch_changes_only_what_it_names() {
        let patch = DhcpPatch {
            range: Some([ip("192.168.101.50"), ip("192.168.101.60")]),
            lease_secs: Some(600),
            ..DhcpPatch::default()
        };
        assert_eq!(
            patch.apply(Some(running_dhcp())),
            DhcpSpec {
                range: Some([ip("192.168.101.50"), ip("192.168.101.60")]),
                lease_secs: 600,
                ..running_dhcp()
            }
        );
        assert_eq!(
            DhcpPatch::default().apply(Some(running_dhcp())),
            running_dhcp()
        );
    }

    #[test]
    fn a_dhcp_patch_switches_the_service_and_clears_dns_and_domain() {
        let off = DhcpPatch {
            enabled: Some(false),
            ..DhcpPatch::default()
        }
        .apply(Some(running_dhcp()));
        assert_eq!(
            off,
            DhcpSpec {
                enabled: false,
                ..running_dhcp()
            }
        );
        let cleared = DhcpPatch {
            dns: Some(vec![]),
            domain: Some(" ".into()),
            ..DhcpPatch::default()
        }
        .apply(Some(running_dhcp()));
        assert!(cleared.dns.is_empty());
        assert_eq!(cleared.domain, None);
        assert_eq!(cleared.reservations, running_dhcp().reservations);
    }

    #[test]
    fn a_dhcp_patch_on_a_vnet_without_dhcp_starts_from_the_defaults() {
        let patch = DhcpPatch {
            dns: Some(vec![ip("9.9.9.9")]),
            ..DhcpPatch::default()
        };
        assert_eq!(
            patch.apply(None),
            DhcpSpec {
                dns: vec![ip("9.9.9.9")],
                ..DhcpSpec::default()
            }
        );
    }

    #[test]
    fn a_dhcp_patch_refuses_fields_it_does_not_know() {
        let err = serde_json::from_str::<DhcpPatch>(r#"{"reservations": []}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let patch: DhcpPatch = serde_json::from_str(r#"{"lease_secs": 60}"#).unwrap();
        assert_eq!(patch.lease_secs, Some(60));
    }

    #[test]
    fn defaults_follow_vmware_conventions_on_a_slash_24() {
        let mut spec = NetworkSpec::named("vmnet1");
        spec.subnet = Some("192.168.101.0/24".parse().unwrap());
        spec.host_adapter = Some(HostAdapterSpec::default());
        spec.dhcp = Some(DhcpSpec::default());
        assert_eq!(
            spec.host_adapter_resolved(),
            Some(("vmnet1".into(), "192.168.101.1".parse().unwrap()))
        );
        let d = spec.dhcp_resolved().unwrap();
        assert_eq!(d.server, Some("192.168.101.254".parse().unwrap()));
        assert_eq!(
            d.range,
            Some([
                "192.168.101.128".parse().unwrap(),
                "192.168.101.253".parse().unwrap()
            ])
        );
        spec.subnet = None;
        assert_eq!(spec.host_adapter_resolved(), None);
    }

    #[test]
    fn ipv6_comes_with_ipv4_services_from_the_name_unless_given_or_off() {
        let mut spec = NetworkSpec::named("vmnet8");
        assert_eq!(spec.subnet6_resolved(), None, "an isolated vnet has none");
        spec.subnet = Some("192.168.108.0/24".parse().unwrap());
        spec.nat = Some(NatSpec::default());
        spec.dhcp = Some(DhcpSpec {
            domain: Some("vm.test".into()),
            ..DhcpSpec::default()
        });
        let ula: Ipv6Net = "fd93:4cfa:c459::/64".parse().unwrap();
        assert_eq!(spec.subnet6_resolved(), Some(ula));
        assert_eq!(
            spec.nat_gateway6(),
            Some("fd93:4cfa:c459::2".parse().unwrap())
        );
        assert_eq!(spec.host_adapter6(), None, "no host adapter");
        let ra = spec.ra_resolved().unwrap();
        assert_eq!(ra.dns, [spec.nat_gateway6().unwrap()]);
        assert_eq!(ra.domains, ["vm.test"]);
        spec.subnet6 = Some("2001:db8:8::/64".parse().unwrap());
        assert_eq!(spec.nat_gateway6(), Some("2001:db8:8::2".parse().unwrap()));
        assert_eq!(spec.validate(), Ok(()));
        spec.ipv6 = false;
        assert_eq!(spec.validate(), Err(SpecError::Ipv6(Ipv6Error::Off)));
        spec.subnet6 = None;
        assert_eq!(spec.validate(), Ok(()));
        assert_eq!((spec.subnet6_resolved(), spec.ra_resolved()), (None, None));
        spec.ipv6 = true;
        spec.ra.enabled = false;
        assert_eq!(spec.ra_resolved(), None);
        assert!(spec.subnet6_resolved().is_some(), "addressing stays");
    }

    #[test]
    fn ra_flags_follow_dhcpv6_unless_set_and_its_range_is_checked() {
        let mut spec = NetworkSpec::named("vmnet8");
        spec.subnet = Some("192.168.108.0/24".parse().unwrap());
        spec.nat = Some(NatSpec::default());
        spec.dhcp = Some(DhcpSpec::default());
        let flags = |s: &NetworkSpec| {
            let ra = s.ra_resolved().unwrap();
            (ra.managed, ra.other)
        };
        assert_eq!(
            flags(&spec),
            (Some(true), Some(true)),
            "stateful by default"
        );
        let d = spec.dhcp_resolved().unwrap();
        let ula = spec.subnet6_resolved().unwrap();
        assert_eq!(
            d.range6,
            Some([ipv6::nth6(ula, 0x1000), ipv6::nth6(ula, 0x1fff)])
        );
        assert_eq!(d.dns6, [spec.nat_gateway6().unwrap()], "the router's DNS");
        spec.dhcp.as_mut().unwrap().ipv6 = Dhcp6Mode::Stateless;
        assert_eq!(flags(&spec), (Some(false), Some(true)));
        spec.dhcp.as_mut().unwrap().ipv6 = Dhcp6Mode::Off;
        assert_eq!(flags(&spec), (Some(false), Some(false)));
        assert_eq!(spec.dhcp_resolved().unwrap().range6, None);
        spec.dhcp.as_mut().unwrap().ipv6 = Dhcp6Mode::Stateful;
        spec.ra.managed = Some(false);
        assert_eq!(
            flags(&spec),
            (Some(false), Some(true)),
            "an explicit flag wins"
        );

        let dhcp = spec.dhcp.as_mut().unwrap();
        dhcp.range6 = Some([
            "2001:db8::10".parse().unwrap(),
            "2001:db8::20".parse().unwrap(),
        ]);
        assert!(matches!(spec.validate(), Err(SpecError::Dhcp6Range { .. })));
        let dhcp = spec.dhcp.as_mut().unwrap();
        dhcp.range6 = None;
        dhcp.reservations = vec![Reservation {
            mac: "52:54:00:aa:bb:cc".parse().unwrap(),
            ip: "192.168.108.10".parse().unwrap(),
            hostname: None,
            ip6: Some(ipv6::nth6(ula, 0x10)),
            duid: Some("00:03:00:01:52:54:00:aa:bb:cc".into()),
        }];
        assert_eq!(spec.validate(), Ok(()));
        spec.dhcp.as_mut().unwrap().reservations[0].duid = Some("0:3:zz".into());
        assert!(matches!(spec.validate(), Err(SpecError::Duid(_))));
        // Saved without the defaults; an old spec's RA without flags loads as default.
        let text = serde_json::to_string(&DhcpSpec::default()).unwrap();
        assert!(!text.contains("ipv6") && !text.contains("range6"), "{text}");
        let ra: RaSpec = serde_json::from_str(r#"{"slaac": false}"#).unwrap();
        assert_eq!((ra.managed, ra.other), (None, None));
    }

    #[test]
    fn a_spec_saved_before_ipv6_loads_and_defaults_are_not_written() {
        let old = r#"{"name": "lab", "subnet": "10.0.0.0/24", "dhcp": {}}"#;
        let spec: NetworkSpec = serde_json::from_str(old).unwrap();
        assert!(spec.ipv6 && spec.subnet6.is_none() && spec.ra.is_default());
        let text = serde_json::to_string(&spec).unwrap();
        assert!(
            !text.contains("ipv6") && !text.contains(r#""ra""#),
            "{text}"
        );
        let mut off = spec.clone();
        off.ipv6 = false;
        let text = serde_json::to_string(&off).unwrap();
        assert!(text.contains(r#""ipv6":false"#), "{text}");
        assert_eq!(serde_json::from_str::<NetworkSpec>(&text).unwrap(), off);
    }

    #[test]
    fn validation_names_what_is_wrong_in_the_words_users_see() {
        let mut spec = NetworkSpec::named("lab");
        assert_eq!(spec.validate(), Ok(()));
        spec.name = ".hidden".into();
        assert_eq!(spec.validate(), Err(SpecError::Name(".hidden".into())));
        spec.name = "control.sock".into();
        assert!(matches!(spec.validate(), Err(SpecError::ReservedName(_))));
        spec.name = "lab".into();
        spec.dhcp = Some(DhcpSpec::default());
        assert_eq!(
            spec.validate().unwrap_err().to_string(),
            "a host adapter, DHCP or NAT needs a subnet, e.g. \"subnet\": \"192.168.101.0/24\""
        );
        spec.subnet = Some("10.0.0.0/24".parse().unwrap());
        spec.nat = Some(NatSpec {
            gateway: Some("10.0.0.254".parse().unwrap()),
            ..NatSpec::default()
        });
        assert_eq!(
            spec.validate().unwrap_err().to_string(),
            "the NAT gateway 10.0.0.254 collides with the DHCP server or range 10.0.0.128-10.0.0.253"
        );
        spec.nat = None;
        spec.uplink = Some(UplinkSpec {
            interface: "eth0".into(),
            vlan: Some(4095),
            ..UplinkSpec::default()
        });
        assert_eq!(
            spec.validate(),
            Err(SpecError::Uplink(UplinkError::VlanOutOfRange(4095)))
        );
        assert_eq!(
            spec.validate().unwrap_err().to_string(),
            "uplink VLAN 4095 is out of range: use 1-4094"
        );
    }

    #[test]
    fn a_bridged_uplink_saved_before_vxlan_reads_and_writes_the_same() {
        let saved = r#"{"interface":"eth1","vlan":10,"mode":"access"}"#;
        let spec: UplinkSpec = serde_json::from_str(saved).unwrap();
        assert_eq!(spec.interface, "eth1");
        assert_eq!(spec.vxlan, None);
        assert_eq!(spec.check(), Ok(()));
        assert_eq!(serde_json::to_string(&spec).unwrap(), saved);
    }

    #[test]
    fn a_vxlan_uplink_reads_with_defaults_and_is_checked() {
        let spec: UplinkSpec = serde_json::from_str(
            r#"{"vxlan":{"vni":100,"local":"10.0.0.1","remotes":["10.0.0.2"]}}"#,
        )
        .unwrap();
        let vx = spec.vxlan.clone().unwrap();
        assert_eq!((vx.vni, vx.port), (100, 4789));
        assert_eq!(vx.source_port_range(), [32768, 61000]);
        assert_eq!(vx.overhead(), 50);
        assert_eq!(spec.check(), Ok(()));
        assert_eq!(spec.port_vlan_mode(), VlanMode::default());
        let with = |f: &dyn Fn(&mut UplinkSpec)| {
            let mut s = spec.clone();
            f(&mut s);
            s.check().map_err(|e| e.to_string())
        };
        let vx = |f: &dyn Fn(&mut VxlanSpec)| with(&|s| f(s.vxlan.as_mut().unwrap()));
        assert_eq!(
            vx(&|v| v.vni = 1 << 24),
            Err("VNI 16777216 is out of range: use 0-16777215".into())
        );
        assert!(with(&|s| s.interface = "eth0".into()).is_err());
        assert!(with(&|s| s.mode = UplinkMode::Trunk).is_err());
        assert!(vx(&|v| v.remotes.push("fe80::1".parse().unwrap())).is_err());
        assert!(vx(&|v| v.local = "0.0.0.0".parse().unwrap()).is_err());
        assert!(vx(&|v| v.group = Some("239.1.1.1".parse().unwrap())).is_err());
        assert!(vx(&|v| v.source_ports = Some([5000, 4000])).is_err());
        assert!(vx(&|v| v.port = 0).is_err());
        assert_eq!(
            vx(&|v| {
                v.remotes.clear();
                v.group = Some("239.1.1.1".parse().unwrap());
            }),
            Ok(())
        );
        assert_eq!(with(&|s| s.vlan = Some(20)), Ok(()));
        let mut on_vlan = spec.clone();
        on_vlan.vlan = Some(20);
        assert_eq!(on_vlan.port_vlan_mode(), VlanMode::Access { vlan: 20 });
    }
}
