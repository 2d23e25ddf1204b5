//! The I/O shells of built-in services: clock, files and configuration mapping around
//! their sans-I/O cores, behind [`crate::backend::service::Service`].

pub mod dhcp;
pub mod lease_writer;
pub mod nat;
pub mod ra;
pub mod resolv;
