//! The daemon's TOML configuration (schema documented in the README; example in
//! `examples/vnetd.toml`).
//!
//! Errors name the file, the line and what is wrong, because a daemon that refuses to
//! start must say exactly why.

use std::path::Path;

use serde::{Deserialize, Serialize};
use toml::Spanned;
use vnet_io::admission::AllowList;
use vnet_model::{
    default_mac_aging, default_max_macs, default_max_macs_per_port, default_mtu, DhcpSpec,
    HostAdapterSpec, Ipv4Net, NetworkSpec, PortPolicy, PortSpec, UplinkSpec, VlanMode,
};

/// The whole configuration file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Data-plane threads; each vnet runs on one of them. Absent: one per CPU core, up
    /// to [`MAX_DEFAULT_THREADS`].
    #[serde(default)]
    pub threads: Option<usize>,
    /// Microseconds a data-plane thread keeps polling after traffic instead of sleeping
    /// (lower latency, a busy core while traffic flows); 0 never spins.
    #[serde(default)]
    pub busy_poll_us: u32,
    /// `[access]`: who may use the control API (see `crate::access`).
    #[serde(default)]
    pub access: AccessConfig,
    /// `[limits]`: bounds on what clients can make the daemon hold.
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub network: Vec<Spanned<NetworkConfig>>,
}

/// The `[limits]` table; absent keys take [`vnet_io::Limits`]'s and [`ControlLimits`]'
/// defaults. Each refusal is counted in `/metrics` as
/// `vnet_limit_refusals_total{limit="KEY"}`.
#[derive(Debug, Deserialize, Serialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Client ports per vnet (stream, api, VDE, dgram peers, classic-device opens, TAP
    /// and vhost-user ports added through the API) [default: 256].
    #[serde(default)]
    pub ports_per_vnet: Option<usize>,
    /// Seconds a VDE client may take to send its request on `vde/ctl` [default: 5].
    #[serde(default)]
    pub vde_handshake_secs: Option<u64>,
    /// Vnets the daemon runs [default: 64].
    #[serde(default)]
    pub vnets: Option<usize>,
    /// Client ports one uid holds across all vnets, root and vnetd's own uid exempt
    /// [default: 64].
    #[serde(default)]
    pub ports_per_uid: Option<usize>,
    /// Stream ports' send buffer (1 MiB) forced past `net.core.wmem_max` with
    /// `SO_SNDBUFFORCE` (root) instead of capped at it [default: false].
    #[serde(default)]
    pub stream_sndbuf_force: Option<bool>,
    /// Concurrent connections on `control.sock`; one more is closed at once
    /// [default: 64].
    #[serde(default)]
    pub control_connections: Option<usize>,
    /// Seconds a control connection may take to send a request's line and headers
    /// (also the most it may stay idle between requests), and then its body, before it
    /// is closed [default: 10].
    #[serde(default)]
    pub control_request_secs: Option<u64>,
    /// Classic-device files (`RUN/dev/NET`) open at once over all vnets; one more
    /// `open` fails with `ENFILE` [default: 256].
    #[serde(default)]
    pub device_opens: Option<usize>,
    /// Replies a vnet API port (api.sock, a classic device) holds for a client that
    /// does not read them; its further requests are dropped unanswered [default: 64].
    #[serde(default)]
    pub api_reply_queue: Option<usize>,
    /// NAT flows (host sockets) per vnet; a guest's new flow beyond is refused (TCP
    /// RST, ICMP unreachable) [default: 4096].
    #[serde(default)]
    pub nat_flows: Option<usize>,
    /// Bytes of guest TCP data a vnet's NAT holds for host sockets that have not taken
    /// them, all flows together; beyond, what a socket cannot take at once is not
    /// taken and the guest sends it again [default: 67108864, 64 MiB].
    #[serde(default)]
    pub nat_buffer_bytes: Option<usize>,
    /// MAC table entries per vnet: the most a vnet's `max_macs` may be [default: 16384].
    #[serde(default)]
    pub macs_per_vnet: Option<usize>,
    /// Descriptors client ports may not take: a new port is refused while no
    /// descriptor number below `RLIMIT_NOFILE - fd_reserve` is free, keeping the rest
    /// for the control API and the NAT [default: 256].
    #[serde(default)]
    pub fd_reserve: Option<usize>,
    /// Of `fd_reserve`, the descriptors the NAT may not take either: its new sockets are
    /// closed while no number below `RLIMIT_NOFILE - fd_reserve_control` is free, so
    /// the control API still answers [default: 64].
    #[serde(default)]
    pub fd_reserve_control: Option<usize>,
    /// Bytes of a receive ring (`TPACKET_V3`) for each bridged NIC's AF_PACKET socket
    /// (one per NIC and data-plane thread), in blocks of 128 KiB: more small frames per
    /// second, but up to 1 ms more latency under light load; 0 receives in batches of
    /// `recvmmsg` instead [default: 0].
    #[serde(default)]
    pub uplink_ring_bytes: Option<usize>,
    /// Source MACs one port's MAC lock may learn: the most a port security policy's
    /// `mac_limit` may be [default: 64].
    #[serde(default)]
    pub mac_lock_macs: Option<usize>,
    /// Connections one port's filters track for `established` rules; a new flow beyond
    /// is not tracked (its replies meet the rules as new frames) [default: 8192].
    #[serde(default)]
    pub conntrack_entries: Option<usize>,
    /// Frames one port holds for its egress rate and its impairment's delays, both
    /// directions together; one more is dropped, counted `held_full` [default: 4096].
    #[serde(default)]
    pub held_frames_per_port: Option<usize>,
    /// Bytes of those frames [default: 8388608, 8 MiB].
    #[serde(default)]
    pub held_bytes_per_port: Option<usize>,
}

/// The control plane's bounds (`[limits]`), enforced by vnetd itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlLimits {
    pub connections: usize,
    pub request: std::time::Duration,
}

impl Default for ControlLimits {
    fn default() -> Self {
        ControlLimits {
            connections: 64,
            request: std::time::Duration::from_secs(10),
        }
    }
}

impl LimitsConfig {
    pub fn limits(&self) -> vnet_io::Limits {
        let d = vnet_io::Limits::default();
        vnet_io::Limits {
            ports_per_vnet: self.ports_per_vnet.unwrap_or(d.ports_per_vnet),
            vde_handshake: self
                .vde_handshake_secs
                .map_or(d.vde_handshake, std::time::Duration::from_secs),
            vnets: self.vnets.unwrap_or(d.vnets),
            ports_per_uid: self.ports_per_uid.unwrap_or(d.ports_per_uid),
            stream_sndbuf_force: self.stream_sndbuf_force.unwrap_or(d.stream_sndbuf_force),
            device_opens: self.device_opens.unwrap_or(d.device_opens),
            api_reply_queue: self.api_reply_queue.unwrap_or(d.api_reply_queue),
            nat_flows: self.nat_flows.unwrap_or(d.nat_flows),
            nat_buffer_bytes: self.nat_buffer_bytes.unwrap_or(d.nat_buffer_bytes),
            macs_per_vnet: self.macs_per_vnet.unwrap_or(d.macs_per_vnet),
            fd_reserve: self.fd_reserve.unwrap_or(d.fd_reserve),
            fd_reserve_control: self.fd_reserve_control.unwrap_or(d.fd_reserve_control),
            uplink_ring_bytes: self.uplink_ring_bytes.unwrap_or(d.uplink_ring_bytes),
            mac_lock_macs: self.mac_lock_macs.unwrap_or(d.mac_lock_macs),
            conntrack_entries: self.conntrack_entries.unwrap_or(d.conntrack_entries),
            held_frames_per_port: self.held_frames_per_port.unwrap_or(d.held_frames_per_port),
            held_bytes_per_port: self.held_bytes_per_port.unwrap_or(d.held_bytes_per_port),
        }
    }

    pub fn control(&self) -> ControlLimits {
        let d = ControlLimits::default();
        ControlLimits {
            connections: self.control_connections.unwrap_or(d.connections),
            request: self
                .control_request_secs
                .map_or(d.request, std::time::Duration::from_secs),
        }
    }
}

/// The `[access]` table: the groups whose members hold the admin and user roles on the
/// control API. A group is a name from the group database or, if no group has that
/// name, a numeric gid ("4242"). Absent keys take the defaults, which may be missing
/// from the system (then only root and vnetd's own uid have a role); a group named
/// explicitly must exist.
#[derive(Debug, Deserialize, Serialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// Members may do everything root may [default: [`DEFAULT_ADMIN_GROUP`]].
    #[serde(default)]
    pub admin_group: Option<String>,
    /// Members may read everything and add and remove their own vhost-user ports;
    /// vnetd's sockets are group-owned by it [default: [`DEFAULT_USER_GROUP`]].
    #[serde(default)]
    pub user_group: Option<String>,
    /// Started as root, vnetd drops to this user (a name or a numeric uid; `root`: stay
    /// root) after setup, keeping only the capabilities it needs ([`crate::privileges`])
    /// [default: [`crate::privileges::DEFAULT_USER`] if it exists, else stay root].
    #[serde(default)]
    pub user: Option<String>,
    /// After the drop to `user`: the capabilities of every feature (`live`) or only of
    /// the configured vnets (`configured`) [default: live].
    #[serde(default)]
    pub keep_capabilities: crate::privileges::KeepCapabilities,
    /// seccomp and landlock ([`crate::sandbox`]) [default: true].
    #[serde(default)]
    pub sandbox: Option<bool>,
}

/// The admin group when `[access]` names none.
pub const DEFAULT_ADMIN_GROUP: &str = "vnet-admin";

/// The user group when `[access]` names none.
pub const DEFAULT_USER_GROUP: &str = "vnet";

/// More threads than this only pay off with more busy vnets than most hosts run.
pub const MAX_DEFAULT_THREADS: usize = 8;

/// Spinning longer than this between frames is a busy core, not a latency choice.
pub const MAX_BUSY_POLL_US: u32 = 1_000_000;

/// One `[[network]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    pub name: String,
    #[serde(default = "default_mtu")]
    pub mtu: u32,
    #[serde(default = "default_mac_aging")]
    pub mac_aging_secs: u64,
    #[serde(default = "default_max_macs_per_port")]
    pub max_macs_per_port: usize,
    #[serde(default = "default_max_macs")]
    pub max_macs: usize,
    /// The vnet's IPv4 subnet, e.g. "192.168.101.0/24".
    #[serde(default)]
    pub subnet: Option<Ipv4Net>,
    /// The vnet's IPv6 /64, e.g. "fd00:1:2:3::/64" [default: a ULA prefix derived
    /// from the name, on vnets with a host adapter, DHCP or NAT].
    #[serde(default)]
    pub subnet6: Option<vnet_model::Ipv6Net>,
    /// `ipv6 = false`: no IPv6 of the vnet's own.
    #[serde(default = "vnet_model::default_true")]
    pub ipv6: bool,
    /// `snooping = false`: group traffic floods (no IGMP/MLD snooping).
    #[serde(default = "vnet_model::default_true")]
    pub snooping: bool,
    /// `ra = { slaac = true, managed = false, other = false, dns = [...],
    /// domains = [...], interval_secs = 600, enabled = true }`.
    #[serde(default)]
    pub ra: vnet_model::RaSpec,
    /// `host_adapter = {}` or `{ name = "vmnet1", address = "192.168.101.1" }`.
    #[serde(default)]
    pub host_adapter: Option<HostAdapterSpec>,
    /// `nat = {}` or `{ gateway = "192.168.108.2", dns = true, udp_timeout_secs = 30,
    /// dns_upstreams = ["127.0.0.1:53"], host_loopback = false,
    /// forward = [{ host = "127.0.0.1:8080", guest = "192.168.108.10:80" },
    /// { proto = "udp", host = "127.0.0.1:5353", guest = "192.168.108.10:53" }] }`.
    #[serde(default)]
    pub nat: Option<vnet_model::NatSpec>,
    /// `dhcp = {}` or `{ range = [first, last], lease_secs = 1800, reservations = [...] }`.
    #[serde(default)]
    pub dhcp: Option<DhcpSpec>,
    /// `uplink = { interface = "eth1" }`, `{ interface = "eth1", vlan = 10 }` or
    /// `{ interface = "eth1", mode = "trunk", vlans = [10, 20] }`: bridged (root).
    #[serde(default)]
    pub uplink: Option<UplinkSpec>,
    /// Users who may attach (names or uids): see `vnet_io::admission`.
    #[serde(default)]
    pub allow_users: Vec<vnet_model::Account>,
    /// Groups whose members may attach (names or gids).
    #[serde(default)]
    pub allow_groups: Vec<vnet_model::Account>,
    /// `[network.policy]`: the policy of every client port (see
    /// `vnet_model::policy`), where a port's own does not replace it.
    #[serde(default)]
    pub policy: PortPolicy,
    /// `[[network.port]]` tables: ports created at start.
    #[serde(default, rename = "port")]
    pub ports: Vec<PortConfig>,
    /// `[[network.mirror]]` tables: `name`, `sources` (port ids or names), `direction`
    /// (`in`, `out`, `both`), `destination`.
    #[serde(default, rename = "mirror")]
    pub mirrors: Vec<vnet_model::MirrorSpec>,
}

/// One `[[network.port]]` table.
#[derive(Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// A TAP interface the daemon creates and owns (give one of `tap`, `vhost_user`,
    /// `interface`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap: Option<String>,
    /// A vhost-user-net back-end listening on `RUN/NET/vhost-user/NAME.sock`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vhost_user: Option<String>,
    /// A host interface another program holds (a hypervisor's TAP, a veth end),
    /// joined through an AF_PACKET socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Access VLAN (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// Trunk port: the VLANs carried tagged (instead of `vlan`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trunk: Option<Vec<u16>>,
    /// With `trunk`: the VLAN carried untagged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native: Option<u16>,
    /// `[network.port.policy]`: the port's own policy, over the vnet's section by
    /// section.
    #[serde(default, skip_serializing_if = "PortPolicy::is_empty")]
    pub policy: PortPolicy,
}

/// The configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// The configuration used when no file is given: VMware's two standard vnets.
pub const BUILT_IN: &str = r#"
# vmnet1: host-only. The host joins as 192.168.101.1 (as root); DHCP serves .128-.253.
[[network]]
name = "vmnet1"
subnet = "192.168.101.0/24"
host_adapter = {}
dhcp = {}

# vmnet8: NAT. The NAT device is .2, the guests' router and DNS server (from DHCP).
[[network]]
name = "vmnet8"
subnet = "192.168.108.0/24"
host_adapter = {}
dhcp = {}
nat = {}
"#;

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and checks `text`; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: origin.to_string(),
            message,
        };
        let config: Config =
            toml::from_str(text).map_err(|e| invalid(e.to_string().trim_end().to_string()))?;
        if config.threads == Some(0) {
            return Err(invalid(
                "threads = 0: the data plane needs at least one".into(),
            ));
        }
        for (key, group) in [
            ("admin_group", &config.access.admin_group),
            ("user_group", &config.access.user_group),
        ] {
            if group
                .as_deref()
                .is_some_and(|g| g.is_empty() || g.contains(':'))
            {
                return Err(invalid(format!(
                    "[access] {key} = {group:?}: give a group name or a numeric gid",
                    group = group.as_deref().unwrap_or_default()
                )));
            }
        }
        if config.limits.control_connections == Some(0) {
            return Err(invalid(
                "[limits] control_connections = 0: the control API needs at least one".into(),
            ));
        }
        if config.limits.control_request_secs == Some(0) {
            return Err(invalid(
                "[limits] control_request_secs = 0: give clients at least one second".into(),
            ));
        }
        for (key, value) in [
            ("api_reply_queue", config.limits.api_reply_queue),
            ("macs_per_vnet", config.limits.macs_per_vnet),
            ("nat_buffer_bytes", config.limits.nat_buffer_bytes),
            ("held_frames_per_port", config.limits.held_frames_per_port),
            ("held_bytes_per_port", config.limits.held_bytes_per_port),
        ] {
            if value == Some(0) {
                return Err(invalid(format!("[limits] {key} = 0: give at least 1")));
            }
        }
        let limits = config.limits.limits();
        if limits.fd_reserve_control > limits.fd_reserve {
            return Err(invalid(format!(
                "[limits] fd_reserve_control = {} is over fd_reserve = {}: the control API's \
                 share is part of the descriptors kept from client ports",
                limits.fd_reserve_control, limits.fd_reserve
            )));
        }
        if config.busy_poll_us > MAX_BUSY_POLL_US {
            return Err(invalid(format!(
                "busy_poll_us = {}: at most {MAX_BUSY_POLL_US} (one second)",
                config.busy_poll_us
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for net in &config.network {
            let line = line_of(text, net.span().start);
            let n = net.get_ref();
            if !seen.insert(n.name.clone()) {
                return Err(invalid(format!(
                    "line {line}: vnet {:?} is defined twice",
                    n.name
                )));
            }
            let mut spec = n.spec();
            if let Err(e) = spec.validate() {
                return Err(invalid(format!(
                    "line {line}: [[network]] {:?}: {e}",
                    n.name
                )));
            }
            if let Err(e) = limits.fit_macs(&mut spec) {
                return Err(invalid(format!(
                    "line {line}: [[network]] {:?}: {e}",
                    n.name
                )));
            }
            if let Err(e) = AllowList::resolve(&n.allow_users, &n.allow_groups) {
                return Err(invalid(format!(
                    "line {line}: [[network]] {:?}: {e}",
                    n.name
                )));
            }
            for p in &n.ports {
                let port_error = |what: String| {
                    invalid(format!(
                        "line {line}: [[network]] {:?}: port {:?}: {what}",
                        n.name,
                        p.label()
                    ))
                };
                let kinds = [
                    p.tap.is_some(),
                    p.vhost_user.is_some(),
                    p.interface.is_some(),
                ];
                if kinds.iter().filter(|k| **k).count() != 1 {
                    return Err(port_error(
                        "give `tap`, `vhost_user` or `interface` (one of them)".into(),
                    ));
                }
                let vlans = p
                    .vlan
                    .iter()
                    .chain(p.trunk.iter().flatten())
                    .chain(&p.native);
                for &v in vlans {
                    if !vnet_core::switch::is_valid_vid(v) {
                        return Err(port_error(format!("VLAN {v} is out of range: use 1-4094")));
                    }
                }
                if p.vlan.is_some() && p.trunk.is_some() {
                    return Err(port_error(
                        "a port is access (`vlan`) or trunk (`trunk`), not both".into(),
                    ));
                }
                if p.native.is_some() && p.trunk.is_none() {
                    return Err(port_error("`native` needs `trunk`".into()));
                }
            }
        }
        Ok(config)
    }

    /// How the data plane runs, flags (`--threads`, `--busy-poll-us`) overriding the file.
    pub fn tuning(&self, threads: Option<usize>, busy_poll_us: Option<u32>) -> vnet_io::Tuning {
        vnet_io::Tuning {
            threads: threads.or(self.threads).unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map_or(1, |n| n.get())
                    .min(MAX_DEFAULT_THREADS)
            }),
            busy_poll: std::time::Duration::from_micros(
                busy_poll_us.unwrap_or(self.busy_poll_us).into(),
            ),
        }
    }

    /// The daemon-wide keys (`threads`, `busy_poll_us`, `[access]`, `[limits]`) as text,
    /// to tell whether a reloaded file changed any: they take effect at a start only.
    pub fn daemon_keys(&self) -> String {
        let keys = (self.threads, self.busy_poll_us, &self.access, &self.limits);
        serde_json::to_string(&keys).expect("the keys serialize")
    }

    pub fn built_in() -> Config {
        Self::parse(BUILT_IN, "built-in configuration")
            .expect("the built-in configuration is valid")
    }
}

impl NetworkConfig {
    pub fn spec(&self) -> NetworkSpec {
        NetworkSpec {
            name: self.name.clone(),
            mtu: self.mtu,
            mac_aging_secs: self.mac_aging_secs,
            max_macs_per_port: self.max_macs_per_port,
            max_macs: self.max_macs,
            subnet: self.subnet,
            subnet6: self.subnet6,
            ipv6: self.ipv6,
            ra: self.ra.clone(),
            snooping: self.snooping,
            host_adapter: self.host_adapter.clone(),
            nat: self.nat.clone(),
            dhcp: self.dhcp.clone(),
            uplink: self.uplink.clone(),
            transient: false,
            allow_users: self.allow_users.clone(),
            allow_groups: self.allow_groups.clone(),
            policy: self.policy.clone(),
            mirrors: self.mirrors.clone(),
        }
    }
}

impl PortConfig {
    pub fn spec(&self) -> PortSpec {
        let vlan = match (&self.trunk, self.vlan) {
            (Some(allowed), _) => VlanMode::Trunk {
                allowed: allowed.clone(),
                native: self.native,
            },
            (None, Some(vlan)) => VlanMode::Access { vlan },
            (None, None) => VlanMode::default(),
        };
        let policy = self.policy.clone();
        match (&self.tap, &self.interface, &self.vhost_user) {
            (Some(ifname), _, _) => PortSpec::Tap {
                ifname: ifname.clone(),
                vlan,
                policy,
            },
            (None, Some(interface), _) => PortSpec::Interface {
                interface: interface.clone(),
                vlan,
                policy,
            },
            (None, None, name) => PortSpec::VhostUser {
                name: name.clone().unwrap_or_default(),
                vlan,
                policy,
            },
        }
    }

    /// The table that makes `spec` (the default VLAN left out).
    pub fn of(spec: &PortSpec) -> PortConfig {
        let (tap, vhost_user, interface) = match spec {
            PortSpec::Tap { ifname, .. } => (Some(ifname), None, None),
            PortSpec::VhostUser { name, .. } => (None, Some(name), None),
            PortSpec::Interface { interface, .. } => (None, None, Some(interface)),
        };
        let mode = spec.vlan();
        let (vlan, trunk, native) = match mode {
            m if *m == VlanMode::default() => (None, None, None),
            VlanMode::Access { vlan } => (Some(*vlan), None, None),
            VlanMode::Trunk { allowed, native } => (None, Some(allowed.clone()), *native),
        };
        PortConfig {
            tap: tap.cloned(),
            vhost_user: vhost_user.cloned(),
            interface: interface.cloned(),
            vlan,
            trunk,
            native,
            policy: spec.policy().clone(),
        }
    }

    /// The port as messages name it: `TAP "x"`, `interface "x"` or `vhost-user "x"`.
    pub fn label(&self) -> String {
        match (&self.tap, &self.interface, &self.vhost_user) {
            (Some(tap), _, _) => format!("TAP {tap:?}"),
            (None, Some(interface), _) => format!("interface {interface:?}"),
            (None, None, Some(name)) => format!("vhost-user {name:?}"),
            (None, None, None) => "(no `tap`, `vhost_user` or `interface`)".into(),
        }
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_has_vmnet1_and_vmnet8() {
        let c = Config::built_in();
        let names: Vec<_> = c.network.iter().map(|n| n.get_ref().name.clone()).collect();
        assert_eq!(names, ["vmnet1", "vmnet8"]);
        assert_eq!(c.network[0].get_ref().mtu, 1500);
        let vmnet8 = c.network[1].get_ref().spec();
        assert_eq!(vmnet8.nat_gateway(), Some("192.168.108.2".parse().unwrap()));
    }

    #[test]
    fn access_names_two_groups() {
        let c = Config::parse(
            "[access]\nadmin_group = \"wheel\"\nuser_group = \"4242\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.access.admin_group.as_deref(), Some("wheel"));
        assert_eq!(c.access.user_group.as_deref(), Some("4242"));
        assert_eq!(Config::built_in().access.admin_group, None);
        assert!(error_of("[access]\nuser_group = \"\"\n").contains("group name or a numeric gid"));
        assert!(error_of("[access]\nadmins = \"x\"\n").contains("unknown field"));
    }

    #[test]
    fn tuning_comes_from_the_flags_then_the_file_then_the_defaults() {
        let c = Config::parse("threads = 3\nbusy_poll_us = 50\n", "t").unwrap();
        assert_eq!(c.tuning(None, None).threads, 3);
        assert_eq!(c.tuning(None, None).busy_poll.as_micros(), 50);
        assert_eq!(c.tuning(Some(1), Some(0)).threads, 1);
        assert!(c.tuning(Some(1), Some(0)).busy_poll.is_zero());
        let defaults = Config::built_in().tuning(None, None);
        assert!((1..=MAX_DEFAULT_THREADS).contains(&defaults.threads));
        assert!(defaults.busy_poll.is_zero());
        assert!(error_of("threads = 0\n").contains("at least one"));
        assert!(error_of("busy_poll_us = 2000000\n").contains("at most"));
    }

    #[test]
    fn control_limits_take_their_keys_or_defaults_and_refuse_zero() {
        let c = Config::parse("", "t").unwrap();
        assert_eq!(c.limits.control(), ControlLimits::default());
        let c = Config::parse(
            "[limits]\ncontrol_connections = 3\ncontrol_request_secs = 7\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.limits.control().connections, 3);
        assert_eq!(c.limits.control().request.as_secs(), 7);
        assert!(error_of("[limits]\ncontrol_connections = 0\n").contains("at least one"));
        assert!(error_of("[limits]\ncontrol_request_secs = 0\n").contains("one second"));
    }

    #[test]
    fn resource_limits_take_their_keys_or_defaults() {
        let d = vnet_io::Limits::default();
        assert_eq!(Config::parse("", "t").unwrap().limits.limits(), d);
        let c = Config::parse(
            "[limits]\ndevice_opens = 1\napi_reply_queue = 2\nnat_flows = 3\n\
             nat_buffer_bytes = 4\nmacs_per_vnet = 5\nfd_reserve = 6\n\
             fd_reserve_control = 6\nmac_lock_macs = 7\nconntrack_entries = 8\n\
             held_frames_per_port = 7\nheld_bytes_per_port = 8\n",
            "t",
        )
        .unwrap()
        .limits
        .limits();
        assert_eq!(c.conntrack_entries, 8);
        assert_eq!((c.held_frames_per_port, c.held_bytes_per_port), (7, 8));
        assert_eq!(
            (
                c.device_opens,
                c.api_reply_queue,
                c.nat_flows,
                c.nat_buffer_bytes,
                c.macs_per_vnet,
                c.fd_reserve,
                c.fd_reserve_control,
                c.mac_lock_macs,
            ),
            (1, 2, 3, 4, 5, 6, 6, 7)
        );
        let e = error_of("[limits]\nfd_reserve = 10\nfd_reserve_control = 11\n");
        assert!(e.contains("over fd_reserve"), "{e}");
        // A vnet's MAC table: over the limit refused, left at its default fitted.
        let macs = "[limits]\nmacs_per_vnet = 4\n\n[[network]]\nname = \"n\"\n";
        let e = error_of(&format!("{macs}max_macs = 8\n"));
        assert!(
            e.contains("line 4") && e.contains("`[limits] macs_per_vnet`"),
            "{e}"
        );
        Config::parse(macs, "t").expect("the default table fits");
        assert_eq!(c.ports_per_vnet, d.ports_per_vnet);
        for key in [
            "api_reply_queue",
            "macs_per_vnet",
            "nat_buffer_bytes",
            "held_frames_per_port",
            "held_bytes_per_port",
        ] {
            let e = error_of(&format!("[limits]\n{key} = 0\n"));
            assert!(e.contains(key) && e.contains("at least 1"), "{e}");
        }
    }

    #[test]
    fn stream_sndbuf_force_is_off_unless_configured() {
        let c = Config::parse("", "t").unwrap();
        assert!(!c.limits.limits().stream_sndbuf_force);
        let c = Config::parse("[limits]\nstream_sndbuf_force = true\n", "t").unwrap();
        assert!(c.limits.limits().stream_sndbuf_force);
    }

    #[test]
    fn nat_needs_a_subnet_and_a_free_gateway() {
        let net = "[[network]]\nname = \"n\"\n";
        let e = error_of(&format!("{net}nat = {{}}\n"));
        assert!(e.contains("needs a subnet"), "{e}");
        let sub = "subnet = \"10.8.0.0/24\"\n";
        let e = error_of(&format!(
            "{net}{sub}dhcp = {{}}\nnat = {{ gateway = \"10.8.0.200\" }}\n"
        ));
        assert!(e.contains("collides with the DHCP"), "{e}");
        let e = error_of(&format!("{net}{sub}nat = {{ gateway = \"10.9.0.2\" }}\n"));
        assert!(e.contains("not a host address"), "{e}");
        let e = error_of(&format!("{net}{sub}nat = {{ udp_timeout_secs = 0 }}\n"));
        assert!(e.contains("udp_timeout_secs"), "{e}");
        let e = error_of(&format!(
            "{net}{sub}nat = {{ dns_upstreams = [\"1.2.3.4\"] }}\n"
        ));
        assert!(e.contains("line"), "{e}");
        let fwd = |f: &str| format!("{net}{sub}nat = {{ forward = [{f}] }}\n");
        let udp = "{ proto = \"udp\", host = \"127.0.0.1:5300\", guest = \"10.8.0.9:53\" }";
        let e = error_of(&fwd(&format!("{udp}, {udp}")));
        assert!(
            e.contains("line 1") && e.contains("udp 127.0.0.1:5300 is listed twice"),
            "{e}"
        );
        // One host port may carry a TCP and a UDP forward.
        let tcp = "{ host = \"127.0.0.1:5300\", guest = \"10.8.0.9:53\" }";
        let ok = fwd(&format!("{udp}, {tcp}"));
        let c = Config::parse(&ok, "ok.toml").unwrap();
        let forwards = c.network[0].get_ref().spec().nat.unwrap().forward;
        assert_eq!(
            forwards.iter().map(|f| f.proto).collect::<Vec<_>>(),
            [vnet_model::ForwardProto::Udp, vnet_model::ForwardProto::Tcp]
        );
        let e = error_of(&fwd("{ host = \"127.0.0.1:80\", guest = \"10.9.0.9:80\" }"));
        assert!(e.contains("guest address"), "{e}");
        let ok = format!("{net}{sub}nat = {{ dns = false, host_loopback = true }}\n");
        assert!(Config::parse(&ok, "ok.toml").is_ok());
        let ok = fwd("{ host = \"127.0.0.1:8080\", guest = \"10.8.0.9:80\" }");
        assert!(Config::parse(&ok, "ok.toml").is_ok());
    }

    #[test]
    fn allow_lists_take_names_or_numbers_and_unknown_names_are_refused_with_their_line() {
        use vnet_model::Account;
        let c = Config::parse(
            "[limits]\nports_per_uid = 5\n\n[[network]]\nname = \"lab\"\n\
             allow_users = [\"root\", 1001]\nallow_groups = [\"root\", 4000]\n",
            "t",
        )
        .unwrap();
        let spec = c.network[0].get_ref().spec();
        assert_eq!(
            spec.allow_users,
            [Account::Name("root".into()), Account::Id(1001)]
        );
        assert_eq!(
            spec.allow_groups,
            [Account::Name("root".into()), Account::Id(4000)]
        );
        assert_eq!(c.limits.limits().ports_per_uid, 5);
        assert_eq!(Config::built_in().limits.limits().ports_per_uid, 64);
        let e = error_of(
            "[[network]]\nname = \"a\"\n\n[[network]]\nname = \"b\"\n\
             allow_users = [\"no-such-user-vnet\"]\n",
        );
        assert!(e.contains("line 4"), "{e}");
        assert!(e.contains("no user named \"no-such-user-vnet\""), "{e}");
        let e = error_of("[[network]]\nname = \"a\"\nallow_groups = [\"no-such-group-vnet\"]\n");
        assert!(e.contains("no group named \"no-such-group-vnet\""), "{e}");
        let e = error_of("[[network]]\nname = \"a\"\nallow_users = [-1]\n");
        assert!(e.contains("allow_users"), "{e}");
    }

    #[test]
    fn full_example_parses() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/vnetd.toml"
        ))
        .unwrap();
        let c = Config::parse(&text, "examples/vnetd.toml").unwrap();
        assert!(!c.network.is_empty());
    }

    fn error_of(text: &str) -> String {
        Config::parse(text, "test.toml").unwrap_err().to_string()
    }

    #[test]
    fn errors_name_file_line_and_problem() {
        let e = error_of("[[network]]\nname = \"a\"\nmtu = \"big\"\n");
        assert!(e.starts_with("test.toml: "), "{e}");
        assert!(e.contains("line 3"), "{e}");
        let e = error_of("[[network]]\nname = \"a\"\n\n[[network]]\nname = \"a\"\n");
        assert!(e.contains("line 4") && e.contains("defined twice"), "{e}");
        let e = error_of("[[network]]\nname = \"has space\"\n");
        assert!(
            e.contains("line 1") && e.contains("invalid vnet name"),
            "{e}"
        );
        let e = error_of("[[network]]\nname = \"a\"\nmtu = 10\n");
        assert!(e.contains("mtu 10"), "{e}");
        let e = error_of("[[network]]\nname = \"a\"\ncolour = \"red\"\n");
        assert!(e.contains("unknown field `colour`"), "{e}");
        let e =
            error_of("[[network]]\nname = \"a\"\n[[network.port]]\ntap = \"t0\"\nvlan = 4095\n");
        assert!(e.contains("VLAN 4095"), "{e}");
        let e =
            error_of("[[network]]\nname = \"a\"\nuplink = { interface = \"eth1\", vlan = 4095 }\n");
        assert!(e.contains("line 1") && e.contains("4095"), "{e}");
        let e = error_of(
            "[[network]]\nname = \"a\"\nuplink = { interface = \"eth1\", mode = \"trunk\" }\n",
        );
        assert!(e.contains("vlans"), "{e}");
    }

    #[test]
    fn ports_are_access_or_trunk() {
        let c = Config::parse(
            "[[network]]\nname = \"a\"\n[[network.port]]\ntap = \"t0\"\ntrunk = [10, 20]\nnative = 1\n\
             [[network.port]]\ntap = \"t1\"\nvlan = 10\n",
            "t.toml",
        )
        .unwrap();
        let ports = &c.network[0].get_ref().ports;
        let PortSpec::Tap { vlan, .. } = ports[0].spec() else {
            panic!("a TAP")
        };
        assert_eq!(
            vlan,
            VlanMode::Trunk {
                allowed: vec![10, 20],
                native: Some(1)
            }
        );
        let PortSpec::Tap { vlan, .. } = ports[1].spec() else {
            panic!("a TAP")
        };
        assert_eq!(vlan, VlanMode::Access { vlan: 10 });
        let port = |extra: &str| {
            format!("[[network]]\nname = \"a\"\n[[network.port]]\ntap = \"t0\"\n{extra}")
        };
        let e = error_of(&port("vlan = 2\ntrunk = [3]\n"));
        assert!(e.contains("not both"), "{e}");
        let e = error_of(&port("native = 2\n"));
        assert!(e.contains("needs `trunk`"), "{e}");
        let e = error_of(&port("trunk = [10, 4095]\n"));
        assert!(e.contains("VLAN 4095"), "{e}");
    }

    #[test]
    fn vhost_user_ports_parse_and_exclude_tap() {
        let c = Config::parse(
            "[[network]]\nname = \"a\"\n[[network.port]]\nvhost_user = \"vm1\"\nvlan = 10\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(
            c.network[0].get_ref().ports[0].spec(),
            PortSpec::VhostUser {
                name: "vm1".into(),
                vlan: VlanMode::Access { vlan: 10 },
                policy: Default::default(),
            }
        );
        let port = |body: &str| format!("[[network]]\nname = \"a\"\n[[network.port]]\n{body}");
        let e = error_of(&port("vhost_user = \"v\"\ntap = \"t\"\n"));
        assert!(e.contains("one of them"), "{e}");
        let e = error_of(&port("vlan = 3\n"));
        assert!(e.contains("one of them"), "{e}");
    }

    #[test]
    fn interface_ports_parse_and_exclude_the_other_kinds() {
        let c = Config::parse(
            "[[network]]\nname = \"a\"\n[[network.port]]\ninterface = \"fc-tap0\"\ntrunk = [10]\n",
            "t.toml",
        )
        .unwrap();
        let port = &c.network[0].get_ref().ports[0];
        assert_eq!(
            port.spec(),
            PortSpec::Interface {
                interface: "fc-tap0".into(),
                vlan: VlanMode::Trunk {
                    allowed: vec![10],
                    native: None
                },
                policy: Default::default(),
            }
        );
        assert_eq!(port.label(), "interface \"fc-tap0\"");
        let port = |body: &str| format!("[[network]]\nname = \"a\"\n[[network.port]]\n{body}");
        let e = error_of(&port("interface = \"i\"\ntap = \"t\"\n"));
        assert!(e.contains("one of them"), "{e}");
        let e = error_of(&port("interface = \"i\"\nvhost_user = \"v\"\n"));
        assert!(e.contains("one of them"), "{e}");
    }

    #[test]
    fn uplinks_parse_in_both_modes() {
        let c = Config::parse(
            "[[network]]\nname = \"a\"\nuplink = { interface = \"eth1\", vlan = 10 }\n\n\
             [[network]]\nname = \"b\"\nuplink = { interface = \"eth1\", mode = \"trunk\", vlans = [20, 30] }\n",
            "t.toml",
        )
        .unwrap();
        let a = c.network[0].get_ref().spec().uplink.unwrap();
        assert_eq!((a.interface.as_str(), a.vlan), ("eth1", Some(10)));
        let b = c.network[1].get_ref().spec().uplink.unwrap();
        assert_eq!(b.mode, vnet_model::UplinkMode::Trunk);
        assert_eq!(b.vlans, [20, 30]);
    }
}
