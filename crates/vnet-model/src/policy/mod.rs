//! Per-port policy.
pub mod acl;
