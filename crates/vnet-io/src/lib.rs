//! The OS edge of vnet: everything that touches file descriptors.
//!
//! - [`sys`]: the FFI edge (TAP ioctls, `SOCK_SEQPACKET`, peer credentials): the only
//!   `unsafe` in vnet.
//! - [`backend`]: one module per client protocol, each turning its transport into whole
//!   frames behind the [`backend::Backend`] trait.
//! - [`admission`]: who may attach to a vnet (its allow lists), from the credentials the
//!   kernel gives for each client.
//! - [`error`]: writing an error with each of its causes once.
//! - [`frame`]: frame buffers with headroom, recycled through a pool.
//! - [`services`]: the I/O shells of built-in services (DHCP, NAT) that attach as ports.
//! - [`dataplane`]: the epoll threads that move frames between backends through each
//!   vnet's `vnet_core` switch, and the [`dataplane::Handle`] the control plane uses.

// `unsafe` is denied everywhere but `sys`, which allows it block by block, each with
// a `// SAFETY:` comment (the workspace lints deny undocumented ones).
#![deny(unsafe_code)]

pub mod admission;
pub mod backend;
pub mod dataplane;
pub mod error;
pub mod frame;
pub mod services;
#[allow(unsafe_code)]
pub mod sys;

pub use dataplane::{ControlError, DataPlane, ErrorKind, Handle, Limits, Tuning};
