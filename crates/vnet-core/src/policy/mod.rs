//! Per-port policy: what a port may send and receive.
//!
//! - [`acl`]: filters (ordered rules per direction, connection tracking).
pub mod acl;
