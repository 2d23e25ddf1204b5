//! ARP for IPv4 over Ethernet (RFC 826), and the RFC 5227 probe.
//!
//! ```text
//! 0 htype=1  2 ptype=0x0800  4 hlen=6  5 plen=4  6 op
//! 8 sender MAC  14 sender IP  18 target MAC  24 target IP   (28 bytes)
//! ```

use std::net::Ipv4Addr;

use vnet_core::wire::ethernet::{write_header, EtherType, MacAddr, HEADER_LEN};

/// Length of an Ethernet/IPv4 ARP packet.
pub const ARP_LEN: usize = 28;
/// Ethernet frames shorter than this (without FCS) are padded, as NICs do.
pub const MIN_FRAME_LEN: usize = 60;

/// ARP operation codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArpOp {
    Request,
    Reply,
}

impl ArpOp {
    fn code(self) -> u16 {
        match self {
            ArpOp::Request => 1,
            ArpOp::Reply => 2,
        }
    }
}

/// A parsed Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpPacket {
    pub op: ArpOp,
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_mac: MacAddr,
    pub target_ip: Ipv4Addr,
}

/// Why bytes are not an Ethernet/IPv4 ARP request or reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ArpError {
    #[error("truncated ARP packet: {0} bytes, need 28")]
    Truncated(usize),
    #[error("ARP for hardware type {htype} / protocol {ptype:#06x}, not Ethernet/IPv4")]
    NotEthernetIpv4 { htype: u16, ptype: u16 },
    #[error("ARP operation {0}, neither request nor reply")]
    UnknownOp(u16),
}

impl ArpPacket {
    /// Parses the Ethernet payload of an ARP frame (trailing padding is ignored).
    pub fn parse(b: &[u8]) -> Result<Self, ArpError> {
        if b.len() < ARP_LEN {
            return Err(ArpError::Truncated(b.len()));
        }
        let be16 = |at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
        let (htype, ptype) = (be16(0), be16(2));
        if htype != 1 || ptype != EtherType::IPV4 || b[4] != 6 || b[5] != 4 {
            return Err(ArpError::NotEthernetIpv4 { htype, ptype });
        }
        let op = match be16(6) {
            1 => ArpOp::Request,
            2 => ArpOp::Reply,
            other => return Err(ArpError::UnknownOp(other)),
        };
        let mac =
            |at: usize| MacAddr([b[at], b[at + 1], b[at + 2], b[at + 3], b[at + 4], b[at + 5]]);
        let ip = |at: usize| Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3]);
        Ok(ArpPacket {
            op,
            sender_mac: mac(8),
            sender_ip: ip(14),
            target_mac: mac(18),
            target_ip: ip(24),
        })
    }

    /// An RFC 5227 probe: "does anyone use `target`?", asked without claiming an address
    /// (sender IP 0.0.0.0) so no neighbour's ARP cache learns anything from it.
    pub fn probe(sender_mac: MacAddr, target: Ipv4Addr) -> Self {
        ArpPacket {
            op: ArpOp::Request,
            sender_mac,
            sender_ip: Ipv4Addr::UNSPECIFIED,
            target_mac: MacAddr([0; 6]),
            target_ip: target,
        }
    }

    /// True if this packet shows that `ip` is in use by the host that sent it: it claims
    /// `ip` as its own, or it is itself probing for `ip` (RFC 5227 §2.1.1).
    pub fn shows_use_of(&self, ip: Ipv4Addr) -> bool {
        self.sender_ip == ip
            || (self.op == ArpOp::Request
                && self.sender_ip.is_unspecified()
                && self.target_ip == ip)
    }

    /// A complete Ethernet frame carrying this packet, padded to the 60-byte minimum.
    /// Requests with an all-zero target MAC go to broadcast, everything else to the target.
    pub fn to_frame(&self) -> Vec<u8> {
        let dst = if self.op == ArpOp::Request && self.target_mac == MacAddr([0; 6]) {
            MacAddr::BROADCAST
        } else {
            self.target_mac
        };
        let mut f = vec![0u8; MIN_FRAME_LEN];
        write_header(&mut f, dst, self.sender_mac, EtherType::ARP);
        let a = &mut f[HEADER_LEN..HEADER_LEN + ARP_LEN];
        a[0..2].copy_from_slice(&1u16.to_be_bytes());
        a[2..4].copy_from_slice(&EtherType::IPV4.to_be_bytes());
        a[4] = 6;
        a[5] = 4;
        a[6..8].copy_from_slice(&self.op.code().to_be_bytes());
        a[8..14].copy_from_slice(&self.sender_mac.0);
        a[14..18].copy_from_slice(&self.sender_ip.octets());
        a[18..24].copy_from_slice(&self.target_mac.0);
        a[24..28].copy_from_slice(&self.target_ip.octets());
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "Who has 10.0.0.2? Tell 10.0.0.1", from 52:54:00:00:00:01 (as in vnet-core's tests).
    static REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x52, 0x54, 0x00, 0x00, 0x00, 0x01, 10, 0,
        0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2,
    ];

    #[test]
    fn parses_request_and_builds_it_back() {
        let p = ArpPacket::parse(&REQUEST).unwrap();
        assert_eq!(p.op, ArpOp::Request);
        assert_eq!(p.sender_ip, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.target_ip, Ipv4Addr::new(10, 0, 0, 2));
        let frame = p.to_frame();
        assert_eq!(frame.len(), 60);
        assert_eq!(&frame[..6], &[0xff; 6]);
        assert_eq!(&frame[14..42], &REQUEST[..]);
    }

    #[test]
    fn probe_semantics() {
        let ip = Ipv4Addr::new(10, 0, 0, 9);
        let probe = ArpPacket::probe(MacAddr([2, 0, 0, 0, 0, 1]), ip);
        assert!(probe.sender_ip.is_unspecified());
        assert!(probe.shows_use_of(ip));
        assert!(!probe.shows_use_of(Ipv4Addr::new(10, 0, 0, 8)));
    }

    #[test]
    fn rejects_other_protocols() {
        assert_eq!(
            ArpPacket::parse(&REQUEST[..27]),
            Err(ArpError::Truncated(27))
        );
        let mut b = REQUEST;
        b[3] = 0xdd;
        assert!(matches!(
            ArpPacket::parse(&b),
            Err(ArpError::NotEthernetIpv4 { .. })
        ));
        let mut b = REQUEST;
        b[7] = 3;
        assert_eq!(ArpPacket::parse(&b), Err(ArpError::UnknownOp(3)));
    }
}
