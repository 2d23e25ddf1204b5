//! Wire formats. Every parser here accepts arbitrary bytes and returns an error, never panics.

pub mod api;
pub mod checksum;
pub mod ethernet;
pub mod offload;
pub mod stream;
pub mod vde;

pub use ethernet::{EtherType, Frame, FrameError, MacAddr, VlanTag};
