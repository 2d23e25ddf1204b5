//! IPv4 + UDP: parse the datagrams a DHCP server accepts, build the ones it sends.
//!
//! ```text
//! IPv4 (20 bytes, no options)                    UDP (8 bytes)
//! 0 ver/ihl 1 tos 2 total len 4 id 6 flags/frag  0 src port 2 dst port
//! 8 ttl 9 proto 10 checksum 12 src 16 dst        4 length   6 checksum
//! ```

use std::net::Ipv4Addr;
use std::ops::Range;

/// Length of an IPv4 header without options, the only kind accepted or sent.
pub const IPV4_HEADER_LEN: usize = 20;
/// Length of a UDP header.
pub const UDP_HEADER_LEN: usize = 8;
/// IP protocol number of UDP.
pub const PROTOCOL_UDP: u8 = 17;

const VER_IHL: usize = 0;
const TOTAL_LEN: Range<usize> = 2..4;
const FLAGS_FRAG: Range<usize> = 6..8;
const TTL: usize = 8;
const PROTOCOL: usize = 9;
const CHECKSUM: Range<usize> = 10..12;
const SRC: Range<usize> = 12..16;
const DST: Range<usize> = 16..20;

const FLAG_DONT_FRAGMENT: u16 = 0x4000;
const FLAG_MORE_FRAGMENTS: u16 = 0x2000;
const FRAGMENT_OFFSET_MASK: u16 = 0x1fff;

/// Why an IPv4 packet is not a UDP datagram the server will read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Ipv4Error {
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

impl Ipv4Error {
    /// True for packets that are well formed but simply not for a DHCP server.
    pub fn is_not_for_us(&self) -> bool {
        matches!(self, Ipv4Error::NotUdp(_))
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

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn ip(b: &[u8], r: Range<usize>) -> Ipv4Addr {
    Ipv4Addr::new(b[r.start], b[r.start + 1], b[r.start + 2], b[r.start + 3])
}

/// Checks an IPv4 packet (the Ethernet payload, possibly followed by Ethernet padding) and
/// returns its UDP datagram. Both checksums are verified (a UDP checksum of 0 means "none").
pub fn parse_udp(packet: &[u8]) -> Result<UdpDatagram<'_>, Ipv4Error> {
    if packet.len() < IPV4_HEADER_LEN {
        return Err(Ipv4Error::Truncated(packet.len()));
    }
    let version = packet[VER_IHL] >> 4;
    if version != 4 {
        return Err(Ipv4Error::NotVersion4(version));
    }
    if packet[PROTOCOL] != PROTOCOL_UDP {
        return Err(Ipv4Error::NotUdp(packet[PROTOCOL]));
    }
    let ihl = packet[VER_IHL] & 0x0f;
    if usize::from(ihl) * 4 != IPV4_HEADER_LEN {
        return Err(Ipv4Error::HasOptions(ihl));
    }
    let total = usize::from(be16(packet, TOTAL_LEN.start));
    if total < IPV4_HEADER_LEN || total > packet.len() {
        return Err(Ipv4Error::BadTotalLength {
            total,
            available: packet.len(),
        });
    }
    if internet_checksum(&[&packet[..IPV4_HEADER_LEN]]) != 0 {
        return Err(Ipv4Error::BadHeaderChecksum);
    }
    let frag = be16(packet, FLAGS_FRAG.start);
    if frag & FLAG_MORE_FRAGMENTS != 0 || frag & FRAGMENT_OFFSET_MASK != 0 {
        return Err(Ipv4Error::Fragment);
    }
    let udp = &packet[IPV4_HEADER_LEN..total];
    if udp.len() < UDP_HEADER_LEN {
        return Err(Ipv4Error::Truncated(packet.len()));
    }
    let udp_len = usize::from(be16(udp, 4));
    if udp_len < UDP_HEADER_LEN || udp_len > udp.len() {
        return Err(Ipv4Error::BadUdpLength(udp_len));
    }
    let udp = &udp[..udp_len];
    let src_ip = ip(packet, SRC);
    let dst_ip = ip(packet, DST);
    if be16(udp, 6) != 0 && udp_checksum(src_ip, dst_ip, udp) != 0 {
        return Err(Ipv4Error::BadUdpChecksum);
    }
    Ok(UdpDatagram {
        src_ip,
        dst_ip,
        src_port: be16(udp, 0),
        dst_port: be16(udp, 2),
        payload: &udp[UDP_HEADER_LEN..],
    })
}

/// Appends an IPv4 header (no options, DF, TTL 64) and a UDP header and `payload` to `out`,
/// with both checksums filled in.
///
/// Panics if the datagram exceeds 65535 bytes: callers send DHCP replies of a few hundred.
pub fn write_udp(out: &mut Vec<u8>, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), payload: &[u8]) {
    let udp_len = UDP_HEADER_LEN + payload.len();
    let total = IPV4_HEADER_LEN + udp_len;
    let total16 = u16::try_from(total).expect("DHCP replies are far below 64 KiB");
    let ip_start = out.len();
    out.extend_from_slice(&[0x45, 0]);
    out.extend_from_slice(&total16.to_be_bytes());
    out.extend_from_slice(&[0, 0]); // identification: unused with DF (RFC 6864)
    out.extend_from_slice(&FLAG_DONT_FRAGMENT.to_be_bytes());
    out.extend_from_slice(&[64, PROTOCOL_UDP, 0, 0]);
    out.extend_from_slice(&src.0.octets());
    out.extend_from_slice(&dst.0.octets());
    let header_sum = internet_checksum(&[&out[ip_start..]]);
    out[ip_start + CHECKSUM.start..ip_start + CHECKSUM.end]
        .copy_from_slice(&header_sum.to_be_bytes());
    debug_assert_eq!(out[ip_start + TTL], 64);

    let udp_start = out.len();
    out.extend_from_slice(&src.1.to_be_bytes());
    out.extend_from_slice(&dst.1.to_be_bytes());
    out.extend_from_slice(&(total16 - IPV4_HEADER_LEN as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(payload);
    let mut sum = udp_checksum(src.0, dst.0, &out[udp_start..]);
    if sum == 0 {
        sum = 0xffff; // 0 would mean "no checksum" (RFC 768)
    }
    out[udp_start + 6..udp_start + 8].copy_from_slice(&sum.to_be_bytes());
}

/// The UDP checksum over the pseudo-header and `udp` (header + payload): 0 when `udp`
/// already carries a correct checksum, the value to store when its checksum field is 0.
pub fn udp_checksum(src: Ipv4Addr, dst: Ipv4Addr, udp: &[u8]) -> u16 {
    transport_checksum(src, dst, PROTOCOL_UDP, udp)
}

pub use vnet_core::wire::checksum::internet_checksum;
use vnet_core::wire::checksum::transport_checksum;

#[cfg(test)]
mod tests {
    use super::*;

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
        b[10..12].copy_from_slice(&[0, 0]);
        let sum = internet_checksum(&[&b[..20]]);
        b[10..12].copy_from_slice(&sum.to_be_bytes());
    }

    #[test]
    fn round_trips_with_valid_checksums() {
        let bytes = sample();
        assert_eq!(bytes.len(), 20 + 8 + 3);
        assert_eq!(internet_checksum(&[&bytes[..20]]), 0);
        let d = parse_udp(&bytes).unwrap();
        assert_eq!((d.src_port, d.dst_port, d.payload), (67, 68, &b"hi!"[..]));
        assert_eq!(d.dst_ip, Ipv4Addr::BROADCAST);
        // Ethernet padding after the IP packet is ignored.
        let mut padded = bytes.clone();
        padded.extend_from_slice(&[0; 20]);
        assert_eq!(parse_udp(&padded).unwrap().payload, b"hi!");
    }

    #[test]
    fn known_header_checksum() {
        // The classic example from Wikipedia's "IPv4 header checksum" article.
        let header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(internet_checksum(&[&header]), 0xb861);
    }

    #[test]
    fn rejects_what_dhcp_never_sends() {
        let good = sample();
        let mut b = good.clone();
        b[0] = 0x46;
        assert_eq!(parse_udp(&b), Err(Ipv4Error::HasOptions(6)));
        let mut b = good.clone();
        b[6] |= 0x20;
        assert_eq!(parse_udp(&b), Err(Ipv4Error::BadHeaderChecksum));
        let mut b = good.clone();
        b[30] ^= 1;
        assert_eq!(parse_udp(&b), Err(Ipv4Error::BadUdpChecksum));
        let mut b = good.clone();
        b[9] = 6;
        assert!(parse_udp(&b).unwrap_err().is_not_for_us());
        assert_eq!(
            parse_udp(&good[..25]),
            Err(Ipv4Error::BadTotalLength {
                total: 31,
                available: 25
            })
        );
        let mut b = good.clone();
        b[6] |= 0x20;
        refill_header_checksum(&mut b);
        assert_eq!(parse_udp(&b), Err(Ipv4Error::Fragment));
        let mut b = good.clone();
        b[26..28].copy_from_slice(&[0, 0]); // no UDP checksum is allowed
        assert!(parse_udp(&b).is_ok());
    }
}
