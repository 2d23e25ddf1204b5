//! The few wire formats a DHCP server on one Ethernet link needs, each parser total
//! (any bytes in, a value or an error out, never a panic).
//!
//! IPv4, UDP and ARP are our own ~200 lines rather than `smoltcp::wire` or `etherparse`:
//! the server needs one fixed header shape in each direction and the exact acceptance rules
//! below (no IP options, no fragments), and a dependency would cost build time on a shared
//! 2-core machine for nothing. DHCP messages themselves are encoded and decoded with
//! `dhcproto`, behind the [`bootp::canonicalize_request`] gate that makes decoding safe.

pub mod arp;
pub mod bootp;
pub mod ipv4;
