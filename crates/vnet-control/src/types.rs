//! Bodies of the control API.
//!
//! Routes (all JSON; errors are `{"error": "..."}` with a 4xx/5xx status):
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET | `/v1/version` | | [`Version`] |
//! | GET | `/v1/networks` | | `[NetworkInfo]` |
//! | POST | `/v1/networks` | [`NetworkSpec`] | 201 [`NetworkInfo`] |
//! | GET | `/v1/networks/{net}` | | [`NetworkInfo`] |
//! | DELETE | `/v1/networks/{net}` | | 204 |
//! | GET | `/v1/networks/{net}/ports` | | `[PortInfo]` |
//! | POST | `/v1/networks/{net}/ports` | [`PortSpec`] | 201 [`PortInfo`] |
//! | GET | `/v1/networks/{net}/ports/{id}` | | [`PortInfo`] |
//! | DELETE | `/v1/networks/{net}/ports/{id}` | | 204 |
//! | GET | `/v1/networks/{net}/macs` | | `[MacEntry]` |
//! | GET | `/metrics` | | Prometheus text |

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
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
}

/// How a port is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortKind {
    Stream,
    Dgram,
    Tap,
    Api,
}

impl PortKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PortKind::Stream => "stream",
            PortKind::Dgram => "dgram",
            PortKind::Tap => "tap",
            PortKind::Api => "api",
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
    },
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

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}
