//! Per-port policy sections.
pub mod impair;
pub mod rate;
pub mod units;
