//! Per-port policy: the sans-I/O rules the data plane applies to a port's frames.
//!
//! - [`guard`]: port security (MAC lock, IP source guard, DHCP server and RA guards).
//! - [`acl`]: filters (ordered rules per direction, connection tracking).
pub mod acl;
pub mod guard;
