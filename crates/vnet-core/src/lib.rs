//! The sans-I/O core of vnet.
//!
//! Everything here takes bytes and time as arguments and returns decisions; nothing
//! touches a socket, a file descriptor or the clock. The I/O layer (`vnet-io`) wraps it.
//!
//! - [`wire`]: exact, checked views of the formats on the wire (Ethernet, 802.1Q, the
//!   QEMU stream framing, the vnet API messages, the VDE switch handshake, the VXLAN header), the L3/L4
//!   formats the services build and read (ARP, IPv4, IPv6 with extension headers,
//!   ICMPv4, ICMPv6 with NDP, UDP, TCP with options), the one Internet checksum, and the
//!   virtio-net offloads (checksum completion, GSO segmentation).
//! - [`fdb`]: a VXLAN tunnel's forwarding database: remote VTEPs, the MACs behind
//!   them, per-remote counters.
//! - [`switch`]: the learning switch: ports, VLAN rules, the MAC table, counters and the
//!   forwarding decision.
//! - [`policy`]: per-port policy (port security).
#![forbid(unsafe_code)]

pub mod fdb;
pub mod pcapng;
pub mod policy;
pub mod switch;
pub mod wire;
