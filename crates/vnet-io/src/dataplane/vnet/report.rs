//! Snapshots of data-plane state in the control API's terms.

use std::time::Instant;

use vnet_core::switch::PortId;
use vnet_model::{
    Counters, Ipv6Info, Lease, MacEntry, NatInfo, NetworkInfo, NetworkSockets, PortInfo,
};
use vnet_nat::NatDevice;

use super::super::QUEUE_CAPACITY;
use super::{socket_paths, Vnet};

impl Vnet {
    /// The vnet as `vnet net show` tells it; it runs on data-plane thread `thread`.
    pub fn info(&self, thread: usize) -> NetworkInfo {
        let [stream, dgram, api] = socket_paths(&self.dir);
        NetworkInfo {
            name: self.spec.name.clone(),
            mtu: self.spec.mtu,
            max_frame: self.switch.config().max_frame,
            mac_aging_secs: self.spec.mac_aging_secs,
            max_macs_per_port: self.spec.max_macs_per_port,
            max_macs: self.spec.max_macs,
            ports: self.ports.len(),
            macs: self.switch.mac_table().len(),
            sockets: NetworkSockets { stream, dgram, api },
            subnet: self.spec.subnet,
            ipv6: self.ipv6_info(),
            host_adapter: self.host_adapter.clone(),
            dhcp: self.spec.dhcp_resolved(),
            dhcp_counters: self.dhcp.as_ref().map(|(_, s)| s.borrow().counters()),
            uplink: self.spec.uplink.clone().filter(|_| {
                self.ports
                    .values()
                    .any(|p| p.backend.kind() == vnet_model::PortKind::Uplink)
            }),
            nat: self.nat.as_ref().map(|n| nat_info(n.borrow().device())),
            thread,
            transient: self.spec.transient,
            allow_users: self.allow.users().to_vec(),
            allow_groups: self.allow.groups().to_vec(),
            policy: self.spec.policy.clone(),
            captures: vnet_model::CaptureCounters {
                running: self.taps.iter().filter(|t| t.is_running()).count(),
                ..self.capture_totals
            },
            snooping: self.snooping_info(),
        }
    }

    /// Snooping's groups, router ports and counters.
    fn snooping_info(&self) -> vnet_model::SnoopingInfo {
        let report = self.switch.snooping().report();
        let c = report.counters;
        vnet_model::SnoopingInfo {
            enabled: report.enabled,
            groups: report
                .groups
                .into_iter()
                .map(|(vlan, mac, ports)| vnet_model::SnoopGroup {
                    vlan,
                    mac,
                    ports: ports.into_iter().map(|p| p.0).collect(),
                })
                .collect(),
            router_ports: report.routers.into_iter().map(|p| p.0).collect(),
            joins: c.joins,
            leaves: c.leaves,
            queries: c.queries,
            group_frames: c.group_frames,
            unregistered_frames: c.unregistered_frames,
            refused: c.refused,
        }
    }

    /// IPv6 as it runs: the /64, the router's address and what it has done.
    fn ipv6_info(&self) -> Option<Ipv6Info> {
        let spec = &self.spec;
        let subnet = spec.subnet6_resolved()?;
        let router = self.router6.as_ref().map(|r| r.borrow());
        Some(Ipv6Info {
            subnet,
            derived: spec.subnet6.is_none(),
            router: spec.nat_gateway6(),
            ra: spec.ra_resolved().unwrap_or_else(|| spec.ra.clone()),
            router_lifetime_secs: router.as_ref().map_or(0, |r| r.router_lifetime()),
            counters: router.map(|r| *r.counters()),
        })
    }

    /// Port `id` as `vnet port show` tells it; `None` if there is no such port.
    pub fn port_info(&self, now: Instant, id: PortId) -> Option<PortInfo> {
        port_info(self, now, id)
    }

    /// Every port, by id.
    pub fn port_infos(&self, now: Instant) -> Vec<PortInfo> {
        self.switch
            .ports()
            .filter_map(|p| port_info(self, now, p.id))
            .collect()
    }

    /// The MAC table.
    pub fn macs(&self, now: Instant) -> Vec<MacEntry> {
        self.switch
            .mac_table()
            .rows(now)
            .into_iter()
            .map(|r| MacEntry {
                vlan: r.vlan,
                mac: r.mac,
                port: r.port.0,
                age_secs: r.age.as_secs(),
                fixed: r.fixed,
            })
            .collect()
    }

    /// The DHCP service's leases (none without one).
    pub fn leases(&self) -> Vec<Lease> {
        self.dhcp
            .as_ref()
            .map(|(_, s)| s.borrow().leases())
            .unwrap_or_default()
    }
}

fn nat_info(device: &NatDevice) -> NatInfo {
    NatInfo {
        gateway: device.config().gateway,
        dns_upstreams: device.config().dns_upstreams.clone(),
        flows: device.flow_count(),
        counters: *device.counters(),
    }
}

fn port_info(net: &Vnet, now: Instant, id: PortId) -> Option<PortInfo> {
    let io = net.ports.get(&id)?;
    let port = net.switch.port(id)?;
    let c = port.counters;
    let (policy, enforced, policy_counters) = net.port_policy(id);
    Some(PortInfo {
        id: id.0,
        kind: io.backend.kind(),
        description: io.backend.description(),
        pid: io.owner.as_ref().and_then(|o| o.pid),
        uid: io.owner.as_ref().map(|o| o.uid),
        state: io.backend.link(),
        vlan: port.vlan_mode().clone(),
        mac: port.mac(),
        promiscuous: port.promiscuous(),
        macs: net
            .switch
            .mac_table()
            .rows(now)
            .into_iter()
            .filter(|r| r.port == id && !r.fixed)
            .map(|r| r.mac)
            .collect(),
        counters: Counters {
            rx_frames: c.rx_frames,
            rx_bytes: c.rx_bytes,
            tx_frames: c.tx_frames,
            tx_bytes: c.tx_bytes,
            drops: c
                .drops
                .iter()
                .map(|(cause, n)| (cause.name().to_string(), n))
                .collect(),
        },
        queue_len: io.queue.len(),
        queue_capacity: QUEUE_CAPACITY,
        vxlan: io.backend.vxlan_info(),
        policy,
        enforced,
        policy_counters,
        mirror_destination: net.mirror_names_to(id),
    })
}
