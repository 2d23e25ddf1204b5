//! Per-port policy: the sans-I/O rules the data plane applies to a port's frames.
//!
//! - [`guard`]: port security (MAC lock, IP source guard, DHCP server and RA guards).
//! - [`acl`]: filters (ordered rules per direction, connection tracking).
//! - [`rate`]: token buckets (ingress policer, egress shaper, storm control).
//! - [`impair`]: netem's decisions per frame (loss, duplicate, corrupt, reorder, delay).
//! - [`wheel`]: the timer wheel that holds delayed frames.
pub mod acl;
pub mod guard;
pub mod impair;
pub mod rate;
pub mod wheel;
