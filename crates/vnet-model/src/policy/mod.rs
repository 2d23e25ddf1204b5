//! Per-port policy: what a port's traffic may do.
pub mod security;
