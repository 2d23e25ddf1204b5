//! A synthetic vhost-user guest: what a VM's virtio-net driver does to a vhost-user
//! back-end, without a VM.
//!
//! [`memory`] is the guest's RAM (a memfd both sides map), [`ring`] the split
//! virtqueues, [`frames`] the test traffic (sequence numbers, send timestamps, payload
//! checksums), [`frontend`] the vhost-user handshake that hands memory and rings to the
//! back-end, [`traffic`] the send and receive loops and their report, and [`loopback`]
//! a forwarder that copies one guest's TX ring into another's RX ring in-process: the
//! speed memory allows, to compare a switch with.

pub mod frames;
pub mod frontend;
pub mod loopback;
pub mod memory;
pub mod ring;
pub mod traffic;
