//! What a DHCP server on one Ethernet link reads and writes, each parser total (any
//! bytes in, a value or an error out, never a panic).
//!
//! IPv4, UDP and ARP themselves are `vnet_core::wire`'s; here are the server's rules
//! on top of them ([`datagram`]: no options, no fragments; [`probe`]: RFC 5227). DHCP
//! messages are encoded and decoded with `dhcproto`, behind the
//! [`bootp::canonicalize_request`] gate that makes decoding safe. DHCPv6 has its own
//! small codec ([`dhcp6`], on [`datagram6`]).

pub mod bootp;
pub mod datagram;
pub mod datagram6;
pub mod dhcp6;
pub mod probe;
