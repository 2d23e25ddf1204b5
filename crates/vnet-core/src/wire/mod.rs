//! Wire formats. Every parser here accepts arbitrary bytes and returns an error, never
//! panics.
//!
//! The L3/L4 formats (`arp`, `ipv4`, `ipv6`, `icmpv4`, `icmpv6`, `udp`, `tcp`) share one
//! shape: a zero-copy `Packet<T: AsRef<[u8]>>` view over a buffer, whose
//! `new_checked` validates the lengths once so that every getter is then in bounds
//! (`new_unchecked` is for buffers the caller sized itself; a getter on a too-short
//! unchecked buffer panics), setters when `T: AsMut<[u8]>`, and an owned `Repr` (what
//! the packet means) with `parse` and `emit`. Checksums are never checked implicitly
//! except the IPv4 header's in `Ipv4Repr::parse`: TCP/UDP/ICMP checksums may legitimately
//! be left to offload, so their `verify_checksum` is the caller's call.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod gro;
pub mod icmpv4;
pub mod icmpv6;
pub mod ip;
pub mod ipv4;
pub mod ipv6;
pub mod offload;
pub mod seqpacket;
pub mod stream;
pub mod tcp;
pub mod udp;
pub mod vde;
pub mod vxlan;

pub use ethernet::{EtherType, Frame, FrameError, MacAddr, VlanTag};
pub use ip::IpProtocol;

/// Why bytes are not a packet of the format asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The buffer is shorter than a header or a length field says.
    #[error("truncated packet")]
    Truncated,
    /// A field contradicts the format (a length below the minimum, a wrong version).
    #[error("malformed packet")]
    Malformed,
    /// The IPv4 header checksum is wrong.
    #[error("bad checksum")]
    Checksum,
    /// Well formed, but a kind `Repr` does not model (an ICMP type, an ARP hardware type).
    #[error("unrecognized packet kind")]
    Unrecognized,
}

pub type Result<T> = std::result::Result<T, Error>;

/// Reads a big-endian u16 at `at`; the caller guarantees the bounds.
#[inline]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
/// A byte range of a header, as the `field` constants of each format name them.
pub(crate) type Field = std::ops::Range<usize>;

/// Reads a big-endian u32 at `at`; the caller guarantees the bounds.
#[inline]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
