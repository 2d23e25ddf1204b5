//! The IPv4 + UDP datagrams a DHCP server accepts and sends, read and written with
//! `vnet_core::wire`'s views. What is DHCP's own here is the acceptance rule: one link,
//! so no IP options and no fragments; both checksums right (a UDP checksum of 0 means
//! "none", as RFC 768 allows over IPv4).

use std::net::{IpAddr, Ipv4Addr};

use vnet_core::wire::ip::IpProtocol;
use vnet_core::wire::{ipv4, udp};

/// Why an IPv4 packet is not a UDP datagram the server will read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DatagramError {
    #[error("truncated IPv4 packet: {0} bytes")]
    Truncated(usize),
    #[error("IP version {0}, expected 4")]
    NotVersion4(u8),
    /// Not malformed, just not ours: the caller counts it as ignored.
    #[error("IP protocol {0}, not UDP")]
    NotUdp(u8),
    #[error("IPv4 header with options (IHL {0}): DHCP never sends them")]
    HasOptions(u8),
    #[error("IPv4 total length {total} does not fit the {available} bytes received")]
    BadTotalLength { total: usize, available: usize },
    #[error("bad IPv4 header checksum")]
    BadHeaderChecksum,
    #[error("IPv4 fragment: DHCP messages on one link are never fragmented")]
    Fragment,
    #[error("UDP length {0} does not fit the IPv4 payload")]
    BadUdpLength(usize),
    #[error("bad UDP checksum")]
    BadUdpChecksum,
}

impl DatagramError {
    /// True for packets that are well formed but simply not for a DHCP server.
    pub fn is_not_for_us(&self) -> bool {
        matches!(self, DatagramError::NotUdp(_))
    }
}

/// A checked UDP datagram inside an IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpDatagram<'a> {
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: &'a [u8],
}

/// Checks an IPv4 packet (the Ethernet payload, possibly followed by Ethernet padding)
/// and returns its UDP datagram. The checks run in an order that names the first thing
/// wrong, for the log line.
pub fn parse_udp(packet: &[u8]) -> Result<UdpDatagram<'_>, DatagramError> {
    if packet.len() < ipv4::HEADER_LEN {
        return Err(DatagramError::Truncated(packet.len()));
    }
    let ip = ipv4::Packet::new_unchecked(packet);
    if ip.version() != 4 {
        return Err(DatagramError::NotVersion4(ip.version()));
    }
    if ip.next_header() != IpProtocol::UDP {
        return Err(DatagramError::NotUdp(ip.next_header().0));
    }
    if usize::from(ip.header_len()) != ipv4::HEADER_LEN {
        return Err(DatagramError::HasOptions(ip.header_len() / 4));
    }
    let total = usize::from(ip.total_len());
    if total < ipv4::HEADER_LEN || total > packet.len() {
        return Err(DatagramError::BadTotalLength {
            total,
            available: packet.len(),
        });
    }
    // In bounds from here on: 20 <= total <= packet.len().
    if !ip.verify_checksum() {
        return Err(DatagramError::BadHeaderChecksum);
    }
    if ip.is_fragment() {
        return Err(DatagramError::Fragment);
    }
    let segment = &packet[ipv4::HEADER_LEN..total];
    if segment.len() < udp::HEADER_LEN {
        return Err(DatagramError::Truncated(packet.len()));
    }
    let datagram = udp::Packet::new_unchecked(segment);
    let udp_len = usize::from(datagram.len());
    if udp_len < udp::HEADER_LEN || udp_len > segment.len() {
        return Err(DatagramError::BadUdpLength(udp_len));
    }
    let (src_ip, dst_ip) = (ip.src_addr(), ip.dst_addr());
    if !datagram.verify_checksum(&IpAddr::V4(src_ip), &IpAddr::V4(dst_ip)) {
        return Err(DatagramError::BadUdpChecksum);
    }
    Ok(UdpDatagram {
        src_ip,
        dst_ip,
        src_port: datagram.src_port(),
        dst_port: datagram.dst_port(),
        payload: &segment[udp::HEADER_LEN..udp_len],
    })
}

/// Appends an IPv4 header (no options, DF, TTL 64) and a UDP header and `payload` to
/// `out`, with both checksums filled in.
///
/// Panics if the datagram exceeds 65535 bytes: callers send DHCP replies of a few hundred.
pub fn write_udp(out: &mut Vec<u8>, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), payload: &[u8]) {
    let udp_repr = udp::Repr {
        src_port: src.1,
        dst_port: dst.1,
        payload_len: payload.len(),
    };
    let ip_repr = ipv4::Repr {
        src_addr: src.0,
        dst_addr: dst.0,
        next_header: IpProtocol::UDP,
        payload_len: udp_repr.buffer_len(),
        hop_limit: 64,
        dscp_ecn: 0,
        ident: 0, // unused with DF (RFC 6864)
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
    };
    assert!(
        ip_repr.buffer_len() <= usize::from(u16::MAX),
        "DHCP replies are far below 64 KiB"
    );
    let start = out.len();
    out.resize(start + ip_repr.buffer_len(), 0);
    let mut ip = ipv4::Packet::new_unchecked(&mut out[start..]);
    ip_repr.emit(&mut ip);
    let mut datagram = udp::Packet::new_unchecked(ip.payload_mut());
    udp_repr.emit(&mut datagram);
    datagram.payload_mut().copy_from_slice(payload);
    datagram.fill_checksum(&IpAddr::V4(src.0), &IpAddr::V4(dst.0));
}

#[cfg(test)]
mod tests {
    use super::*;
    use vnet_core::wire::checksum::internet_checksum;

    /// A DHCP-shaped datagram: 10.0.0.254:67 → 255.255.255.255:68, payload "hi!".
    fn sample() -> Vec<u8> {
        let mut out = Vec::new();
        write_udp(
            &mut out,
            (Ipv4Addr::new(10, 0, 0, 254), 67),
            (Ipv4Addr::BROADCAST, 68),
            b"hi!",
        );
        out
    }

    fn refill_header_checksum(b: &mut [u8]) {
        ipv4::Packet::new_unchecked(&mut b[..]).fill_checksum();
    }

    #[test]
    fn round_trips_with_valid_checksums() {
        let bytes = sample();
        assert_eq!(bytes.len(), 20 + 8 + 3);
        assert_eq!(internet_checksum(&[&bytes[..20]]), 0);
        // DF, TTL 64, UDP: what every DHCP server sends.
        assert_eq!(&bytes[6..10], &[0x40, 0, 64, 17]);
        let d = parse_udp(&bytes).unwrap();
        assert_eq!((d.src_port, d.dst_port, d.payload), (67, 68, &b"hi!"[..]));
        assert_eq!(d.dst_ip, Ipv4Addr::BROADCAST);
        // Ethernet padding after the IP packet is ignored.
        let mut padded = bytes.clone();
        padded.extend_from_slice(&[0; 20]);
        assert_eq!(parse_udp(&padded).unwrap().payload, b"hi!");
    }

    #[test]
    fn rejects_what_dhcp_never_sends() {
        let good = sample();
        let mut b = good.clone();
        b[0] = 0x46;
        assert_eq!(parse_udp(&b), Err(DatagramError::HasOptions(6)));
        let mut b = good.clone();
        b[6] |= 0x20;
        assert_eq!(parse_udp(&b), Err(DatagramError::BadHeaderChecksum));
        let mut b = good.clone();
        b[30] ^= 1;
        assert_eq!(parse_udp(&b), Err(DatagramError::BadUdpChecksum));
        let mut b = good.clone();
        b[9] = 6;
        assert!(parse_udp(&b).unwrap_err().is_not_for_us());
        assert_eq!(
            parse_udp(&good[..25]),
            Err(DatagramError::BadTotalLength {
                total: 31,
                available: 25
            })
        );
        let mut b = good.clone();
        b[6] |= 0x20;
        refill_header_checksum(&mut b);
        assert_eq!(parse_udp(&b), Err(DatagramError::Fragment));
        let mut b = good.clone();
        b[24..26].copy_from_slice(&[0, 20]); // UDP length below its header
        assert_eq!(parse_udp(&b), Err(DatagramError::BadUdpLength(20)));
        let mut b = good.clone();
        b[26..28].copy_from_slice(&[0, 0]); // no UDP checksum is allowed
        assert!(parse_udp(&b).is_ok());
    }
}
