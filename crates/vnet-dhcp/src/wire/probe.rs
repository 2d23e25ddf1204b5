//! ARP as a DHCP server uses it: answering for its own address, and RFC 5227 probes
//! ("does anyone use this address?") before offering one. The packets are
//! `vnet_core::wire::arp`'s; what lives here is their meaning for the server.

use std::net::Ipv4Addr;

use vnet_core::wire::arp::{self, Operation, Repr};
use vnet_core::wire::ethernet::{write_header, EtherType, MacAddr, HEADER_LEN};

/// Ethernet frames shorter than this (without FCS) are padded, as NICs do.
pub const MIN_FRAME_LEN: usize = 60;

/// Why bytes are not an Ethernet/IPv4 ARP request or reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ArpError {
    #[error("ARP: {0}")]
    Wire(#[from] vnet_core::wire::Error),
    #[error("ARP operation {0}, neither request nor reply")]
    UnknownOp(u16),
}

/// Parses the Ethernet payload of an ARP frame (trailing padding is ignored): a request
/// or a reply for Ethernet/IPv4.
pub fn parse(payload: &[u8]) -> Result<Repr, ArpError> {
    let repr = Repr::parse(&arp::Packet::new_checked(payload)?)?;
    match repr.operation {
        Operation::Unknown(op) => Err(ArpError::UnknownOp(op)),
        Operation::Request | Operation::Reply => Ok(repr),
    }
}

/// An RFC 5227 probe: "does anyone use `target`?", asked without claiming an address
/// (sender IP 0.0.0.0) so no neighbour's ARP cache learns anything from it.
pub fn probe(sender: MacAddr, target: Ipv4Addr) -> Repr {
    Repr {
        operation: Operation::Request,
        source_hardware_addr: sender,
        source_protocol_addr: Ipv4Addr::UNSPECIFIED,
        target_hardware_addr: MacAddr([0; 6]),
        target_protocol_addr: target,
    }
}

/// The reply to `request` from the owner of `(mac, ip)`.
pub fn reply(request: &Repr, mac: MacAddr, ip: Ipv4Addr) -> Repr {
    Repr {
        operation: Operation::Reply,
        source_hardware_addr: mac,
        source_protocol_addr: ip,
        target_hardware_addr: request.source_hardware_addr,
        target_protocol_addr: request.source_protocol_addr,
    }
}

/// True if `packet` shows that `ip` is in use by the host that sent it: it claims `ip`
/// as its own, or it is itself probing for `ip` (RFC 5227 §2.1.1).
pub fn shows_use_of(packet: &Repr, ip: Ipv4Addr) -> bool {
    packet.source_protocol_addr == ip
        || (packet.operation == Operation::Request
            && packet.source_protocol_addr.is_unspecified()
            && packet.target_protocol_addr == ip)
}

/// A complete Ethernet frame carrying `packet`, padded to the 60-byte minimum. Requests
/// with an all-zero target MAC go to broadcast, everything else to the target.
pub fn frame(packet: &Repr) -> Vec<u8> {
    let dst = if packet.operation == Operation::Request
        && packet.target_hardware_addr == MacAddr([0; 6])
    {
        MacAddr::BROADCAST
    } else {
        packet.target_hardware_addr
    };
    let mut f = vec![0u8; MIN_FRAME_LEN];
    write_header(&mut f, dst, packet.source_hardware_addr, EtherType::ARP);
    packet.emit(&mut arp::Packet::new_unchecked(&mut f[HEADER_LEN..]));
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "Who has 10.0.0.2? Tell 10.0.0.1", from 52:54:00:00:00:01.
    static REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x52, 0x54, 0x00, 0x00, 0x00, 0x01, 10, 0,
        0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2,
    ];

    #[test]
    fn a_request_goes_out_as_a_broadcast_frame_of_the_same_bytes() {
        let p = parse(&REQUEST).unwrap();
        assert_eq!(p.operation, Operation::Request);
        assert_eq!(p.target_protocol_addr, Ipv4Addr::new(10, 0, 0, 2));
        let frame = frame(&p);
        assert_eq!(frame.len(), 60);
        assert_eq!(&frame[..6], &[0xff; 6]);
        assert_eq!(&frame[14..42], &REQUEST[..]);
    }

    #[test]
    fn a_reply_goes_back_to_the_asker() {
        let me = (MacAddr([2, 0, 0, 0, 0, 0xfe]), Ipv4Addr::new(10, 0, 0, 2));
        let answer = frame(&reply(&parse(&REQUEST).unwrap(), me.0, me.1));
        assert_eq!(&answer[..6], &REQUEST[8..14]);
        let back = parse(&answer[14..]).unwrap();
        assert_eq!(back.operation, Operation::Reply);
        assert_eq!(back.source_protocol_addr, me.1);
        assert_eq!(back.target_protocol_addr, Ipv4Addr::new(10, 0, 0, 1));
    }

    #[test]
    fn probe_semantics() {
        let ip = Ipv4Addr::new(10, 0, 0, 9);
        let probe = probe(MacAddr([2, 0, 0, 0, 0, 1]), ip);
        assert!(probe.source_protocol_addr.is_unspecified());
        assert!(shows_use_of(&probe, ip));
        assert!(!shows_use_of(&probe, Ipv4Addr::new(10, 0, 0, 8)));
    }

    #[test]
    fn rejects_other_protocols() {
        assert!(matches!(parse(&REQUEST[..27]), Err(ArpError::Wire(_))));
        let mut b = REQUEST;
        b[3] = 0xdd;
        assert!(matches!(parse(&b), Err(ArpError::Wire(_))));
        let mut b = REQUEST;
        b[7] = 3;
        assert_eq!(parse(&b), Err(ArpError::UnknownOp(3)));
    }
}
