//! Per-port counters: what came in, what went out, and why anything was dropped.

use serde::Serialize;

/// Why a frame was not delivered. Every drop in vnet has exactly one cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropCause {
    /// Shorter than an Ethernet header.
    Runt,
    /// Longer than the vnet's max frame.
    Oversize,
    /// A truncated 802.1Q header or the reserved VLAN 4095.
    BadTag,
    /// A VLAN the port does not carry (a tagged frame on an access port, say).
    VlanDenied,
    /// Addressed to a station on the port it came from.
    SamePort,
    /// The egress queue of the destination port was full.
    QueueFull,
    /// Bytes that are not a message of the port's protocol.
    Malformed,
    /// The port's link is down (a TAP whose interface is not up).
    LinkDown,
    /// Port security: a source MAC (or an ARP/NDP link-layer address) the port may not
    /// use.
    MacLock,
    /// Port security: an IP source address, ARP sender or NDP target the port may not
    /// claim, or an IP header the guard cannot read.
    IpGuard,
    /// Port security: a DHCP server message (offer, ack, nak; DHCPv6 advertise, reply)
    /// from a port not allowed to serve DHCP.
    DhcpGuard,
    /// Port security: an ICMPv6 router advertisement or redirect from a port not
    /// allowed to be a router.
    RaGuard,
    /// Port security shut the port down (a MAC lock violation): nothing passes either
    /// way until its policy changes.
    Shutdown,
    /// Sent by a mirror destination, which takes mirrored copies only.
    MirrorPort,
    /// A rule of the port's filters (ACL), or their default, dropped it.
    Acl,
    /// Over the port's ingress rate (`rate.in`).
    Policed,
    /// Over the port's broadcast, multicast or unknown-unicast frames per second.
    Storm,
    /// Lost on purpose (impairment's `loss`, `loss_burst`).
    Loss,
    /// The port's held frames (shaped or delayed) were at their bound
    /// (`[limits] held_frames_per_port`, `held_bytes_per_port`).
    HeldFull,
}

impl DropCause {
    pub const ALL: [DropCause; 19] = [
        DropCause::Runt,
        DropCause::Oversize,
        DropCause::BadTag,
        DropCause::VlanDenied,
        DropCause::SamePort,
        DropCause::QueueFull,
        DropCause::Malformed,
        DropCause::LinkDown,
        DropCause::MacLock,
        DropCause::IpGuard,
        DropCause::DhcpGuard,
        DropCause::RaGuard,
        DropCause::Shutdown,
        DropCause::MirrorPort,
        DropCause::Acl,
        DropCause::Policed,
        DropCause::Storm,
        DropCause::Loss,
        DropCause::HeldFull,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropCause::Runt => "runt",
            DropCause::Oversize => "oversize",
            DropCause::BadTag => "bad_tag",
            DropCause::VlanDenied => "vlan_denied",
            DropCause::SamePort => "same_port",
            DropCause::QueueFull => "queue_full",
            DropCause::Malformed => "malformed",
            DropCause::LinkDown => "link_down",
            DropCause::MacLock => "mac_lock",
            DropCause::IpGuard => "ip_guard",
            DropCause::DhcpGuard => "dhcp_guard",
            DropCause::RaGuard => "ra_guard",
            DropCause::Shutdown => "shutdown",
            DropCause::MirrorPort => "mirror_port",
            DropCause::Acl => "acl",
            DropCause::Policed => "policed",
            DropCause::Storm => "storm",
            DropCause::Loss => "loss",
            DropCause::HeldFull => "held_full",
        }
    }
}

/// Drops by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drops([u64; DropCause::ALL.len()]);

impl Drops {
    pub fn add(&mut self, cause: DropCause) {
        self.0[cause as usize] += 1;
    }
    pub fn get(&self, cause: DropCause) -> u64 {
        self.0[cause as usize]
    }
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
    pub fn iter(&self) -> impl Iterator<Item = (DropCause, u64)> + '_ {
        DropCause::ALL.iter().map(|c| (*c, self.get(*c)))
    }
}

impl Serialize for Drops {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(DropCause::ALL.len()))?;
        for (c, n) in self.iter() {
            m.serialize_entry(c.name(), &n)?;
        }
        m.end()
    }
}

/// Traffic counters of one port. "rx" is what the port sent into the vnet, "tx" what
/// the vnet delivered to it; drops are charged to the port where the frame died.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PortCounters {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    pub drops: Drops,
}

impl PortCounters {
    pub fn count_tx(&mut self, bytes: usize) {
        self.tx_frames += 1;
        self.tx_bytes += bytes as u64;
    }
}
