//! The IPv6 + UDP datagrams a DHCPv6 server on one link accepts and sends, on
//! `vnet_core::wire`'s views. The acceptance rule: UDP right after the fixed header
//! (clients send no extension headers), a UDP checksum that verifies (IPv6 has no
//! "no checksum"), lengths that agree.

use std::net::{IpAddr, Ipv6Addr};

use vnet_core::wire::ethernet::{write_header, EtherType, MacAddr, HEADER_LEN};
use vnet_core::wire::ip::IpProtocol;
use vnet_core::wire::{ipv6, udp};

/// Why an IPv6 packet is not a UDP datagram the server will read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Datagram6Error {
    #[error("truncated IPv6 packet: {0} bytes")]
    Truncated(usize),
    #[error("IP version {0}, expected 6")]
    NotVersion6(u8),
    /// Not malformed, just not ours: the caller counts it as ignored.
    #[error("IPv6 next header {0}, not UDP")]
    NotUdp(u8),
    #[error("UDP length {0} does not fit the IPv6 payload")]
    BadUdpLength(usize),
    #[error("bad UDP checksum")]
    BadUdpChecksum,
}

impl Datagram6Error {
    /// True for packets that are well formed but simply not for a DHCPv6 server.
    pub fn is_not_for_us(&self) -> bool {
        matches!(self, Datagram6Error::NotUdp(_))
    }
}

/// A checked UDP datagram inside an IPv6 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpDatagram6<'a> {
    pub src_ip: Ipv6Addr,
    pub dst_ip: Ipv6Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: &'a [u8],
}

/// Checks an IPv6 packet (the Ethernet payload, maybe followed by padding) and returns
/// its UDP datagram.
pub fn parse_udp6(packet: &[u8]) -> Result<UdpDatagram6<'_>, Datagram6Error> {
    let ip =
        ipv6::Packet::new_checked(packet).map_err(|_| Datagram6Error::Truncated(packet.len()))?;
    if ip.version() != 6 {
        return Err(Datagram6Error::NotVersion6(ip.version()));
    }
    if ip.next_header() != IpProtocol::UDP {
        return Err(Datagram6Error::NotUdp(ip.next_header().0));
    }
    // In bounds: new_checked saw the whole payload.
    let segment = &packet[ipv6::HEADER_LEN..ipv6::HEADER_LEN + usize::from(ip.payload_len())];
    if segment.len() < udp::HEADER_LEN {
        return Err(Datagram6Error::Truncated(packet.len()));
    }
    let datagram = udp::Packet::new_unchecked(segment);
    let udp_len = usize::from(datagram.len());
    if udp_len < udp::HEADER_LEN || udp_len != segment.len() {
        return Err(Datagram6Error::BadUdpLength(udp_len));
    }
    let (src_ip, dst_ip) = (ip.src_addr(), ip.dst_addr());
    if datagram.checksum() == 0
        || !datagram.verify_checksum(&IpAddr::V6(src_ip), &IpAddr::V6(dst_ip))
    {
        return Err(Datagram6Error::BadUdpChecksum);
    }
    Ok(UdpDatagram6 {
        src_ip,
        dst_ip,
        src_port: datagram.src_port(),
        dst_port: datagram.dst_port(),
        payload: &segment[udp::HEADER_LEN..],
    })
}

/// A whole Ethernet frame carrying `payload` over UDP from `src` to `dst`, hop limit 255
/// (the reply never leaves the link), checksum filled in.
pub fn udp6_frame(
    macs: (MacAddr, MacAddr),
    src: (Ipv6Addr, u16),
    dst: (Ipv6Addr, u16),
    payload: &[u8],
) -> Vec<u8> {
    let (src_mac, dst_mac) = macs;
    let udp_repr = udp::Repr {
        src_port: src.1,
        dst_port: dst.1,
        payload_len: payload.len(),
    };
    let ip_repr = ipv6::Repr {
        src_addr: src.0,
        dst_addr: dst.0,
        next_header: IpProtocol::UDP,
        payload_len: udp_repr.buffer_len(),
        hop_limit: 255,
        traffic_class: 0,
        flow_label: 0,
    };
    let mut frame = vec![0u8; HEADER_LEN + ip_repr.buffer_len()];
    write_header(&mut frame, dst_mac, src_mac, EtherType::IPV6);
    let mut ip = ipv6::Packet::new_unchecked(&mut frame[HEADER_LEN..]);
    ip_repr.emit(&mut ip);
    let mut datagram = udp::Packet::new_unchecked(ip.payload_mut());
    udp_repr.emit(&mut datagram);
    datagram.payload_mut().copy_from_slice(payload);
    datagram.fill_checksum(&IpAddr::V6(src.0), &IpAddr::V6(dst.0));
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    fn sample() -> Vec<u8> {
        udp6_frame(
            (A, B),
            ("fe80::1".parse().unwrap(), 547),
            ("fe80::2".parse().unwrap(), 546),
            b"hi!",
        )
    }

    #[test]
    fn round_trips_with_a_valid_checksum() {
        let frame = sample();
        let d = parse_udp6(&frame[HEADER_LEN..]).unwrap();
        assert_eq!((d.src_port, d.dst_port, d.payload), (547, 546, &b"hi!"[..]));
        assert_eq!(d.dst_ip, "fe80::2".parse::<Ipv6Addr>().unwrap());
        let mut padded = frame[HEADER_LEN..].to_vec();
        padded.extend_from_slice(&[0; 8]);
        assert_eq!(parse_udp6(&padded).unwrap().payload, b"hi!");
    }

    #[test]
    fn rejects_what_a_client_never_sends() {
        let good = sample()[HEADER_LEN..].to_vec();
        let mut b = good.clone();
        b[50] ^= 1;
        assert_eq!(parse_udp6(&b), Err(Datagram6Error::BadUdpChecksum));
        let mut b = good.clone();
        b[46..48].copy_from_slice(&[0, 0]);
        assert_eq!(parse_udp6(&b), Err(Datagram6Error::BadUdpChecksum));
        let mut b = good.clone();
        b[6] = 6;
        assert!(parse_udp6(&b).unwrap_err().is_not_for_us());
        assert_eq!(parse_udp6(&good[..45]), Err(Datagram6Error::Truncated(45)));
        let mut b = good.clone();
        b[44..46].copy_from_slice(&[0, 9]);
        assert_eq!(parse_udp6(&b), Err(Datagram6Error::BadUdpLength(9)));
        let mut b = good;
        b[0] = 0x40;
        assert_eq!(parse_udp6(&b), Err(Datagram6Error::NotVersion6(4)));
    }
}
