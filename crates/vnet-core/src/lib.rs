//! The sans-I/O core of vnet.
//!
//! Everything here takes bytes and time as arguments and returns decisions; nothing
//! touches a socket, a file descriptor or the clock. The I/O layer (`vnet-io`) wraps it.
//!
//! - [`wire`]: exact, checked views of the formats on the wire (Ethernet, 802.1Q, the
//!   QEMU stream framing, the vnet API messages, the VDE switch handshake).
//! - [`switch`]: the learning switch: ports, VLAN rules, the MAC table, counters and the
//!   forwarding decision.
#![forbid(unsafe_code)]

pub mod switch;
pub mod wire;
