//! The FFI edge: the only place in vnet with `unsafe` code.

pub mod fdpass;
pub mod heap;
pub mod mmsg;
pub mod netif;
pub mod packet;
pub mod peer;
pub mod privilege;
pub mod ring;
pub mod seqpacket;
pub mod sockopt;
pub mod tap;
pub mod udp;
