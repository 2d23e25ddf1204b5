//! Per-port policy: the sans-I/O logic of each section.
pub mod impair;
pub mod rate;
pub mod wheel;
