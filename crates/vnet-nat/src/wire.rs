//! The few IPv4 formats the NAT device reads and writes: ARP, IPv4 without options, UDP
//! and ICMP echo / destination unreachable.
//!
//! Our own rather than `smoltcp::wire` or `etherparse`: the device only needs to read a
//! handful of fields and to build complete frames from scratch, which is shorter to say
//! here than to adapt; every parser takes any bytes and never panics (property tests).

use std::net::Ipv4Addr;

use vnet_core::wire::ethernet::{write_header, EtherType, MacAddr, HEADER_LEN};
use vnet_core::wire::offload::VirtioNetHdr;

pub const IPV4_HEADER_LEN: usize = 20;
pub const UDP_HEADER_LEN: usize = 8;
pub const ICMP_HEADER_LEN: usize = 8;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_UNREACHABLE: u8 = 3;
pub const ICMP_ECHO_REQUEST: u8 = 8;
/// Destination unreachable codes (RFC 792, RFC 1812).
pub const UNREACH_HOST: u8 = 1;
pub const UNREACH_PORT: u8 = 3;
pub const UNREACH_ADMIN: u8 = 13;
/// Ethernet frames are padded to this length (without FCS).
pub const MIN_FRAME_LEN: usize = 60;

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn ip_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

fn mac_at(b: &[u8], at: usize) -> MacAddr {
    MacAddr([b[at], b[at + 1], b[at + 2], b[at + 3], b[at + 4], b[at + 5]])
}

/// An Ethernet/IPv4 ARP request or reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpPacket {
    pub is_request: bool,
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_ip: Ipv4Addr,
}

impl ArpPacket {
    /// Reads an Ethernet/IPv4 ARP request or reply from an ARP payload.
    pub fn parse(b: &[u8]) -> Option<Self> {
        if b.len() < 28 || be16(b, 0) != 1 || be16(b, 2) != EtherType::IPV4 {
            return None;
        }
        if b[4] != 6 || b[5] != 4 || !matches!(be16(b, 6), 1 | 2) {
            return None;
        }
        Some(ArpPacket {
            is_request: be16(b, 6) == 1,
            sender_mac: mac_at(b, 8),
            sender_ip: ip_at(b, 14),
            target_ip: ip_at(b, 24),
        })
    }

    /// "Who has `target`? Tell `ip` (at `mac`)", broadcast.
    pub fn request_frame(mac: MacAddr, ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
        let mut f = vec![0u8; MIN_FRAME_LEN];
        write_header(&mut f, MacAddr::BROADCAST, mac, EtherType::ARP);
        let a = &mut f[HEADER_LEN..HEADER_LEN + 28];
        a[0..2].copy_from_slice(&1u16.to_be_bytes());
        a[2..4].copy_from_slice(&EtherType::IPV4.to_be_bytes());
        a[4] = 6;
        a[5] = 4;
        a[6..8].copy_from_slice(&1u16.to_be_bytes());
        a[8..14].copy_from_slice(&mac.0);
        a[14..18].copy_from_slice(&ip.octets());
        a[24..28].copy_from_slice(&target.octets());
        f
    }

    /// The reply "`target_ip` is at `mac`", as a frame to the asker.
    pub fn reply_frame(&self, mac: MacAddr) -> Vec<u8> {
        let mut f = vec![0u8; MIN_FRAME_LEN];
        write_header(&mut f, self.sender_mac, mac, EtherType::ARP);
        let a = &mut f[HEADER_LEN..HEADER_LEN + 28];
        a[0..2].copy_from_slice(&1u16.to_be_bytes());
        a[2..4].copy_from_slice(&EtherType::IPV4.to_be_bytes());
        a[4] = 6;
        a[5] = 4;
        a[6..8].copy_from_slice(&2u16.to_be_bytes());
        a[8..14].copy_from_slice(&mac.0);
        a[14..18].copy_from_slice(&self.target_ip.octets());
        a[18..24].copy_from_slice(&self.sender_mac.0);
        a[24..28].copy_from_slice(&self.sender_ip.octets());
        f
    }
}

/// A checked IPv4 packet: header valid, not a fragment, payload cut to the total length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    /// The whole header, options included (quoted in ICMP errors).
    pub header: &'a [u8],
    pub payload: &'a [u8],
    /// The transport checksum is not to be verified: the sender left it to offload (a
    /// partial checksum from a local TAP, `VIRTIO_NET_HDR_F_NEEDS_CSUM`), as the kernel
    /// trusts such packets. [`Ipv4Packet::parse`] leaves it off.
    pub checksum_offloaded: bool,
}

/// Why an IPv4 packet was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv4Error {
    /// Truncated, not version 4, bad lengths or a bad header checksum.
    Malformed,
    /// A fragment: the device does not reassemble (yet).
    Fragment,
}

impl<'a> Ipv4Packet<'a> {
    pub fn parse(b: &'a [u8]) -> Result<Self, Ipv4Error> {
        if b.len() < IPV4_HEADER_LEN || b[0] >> 4 != 4 {
            return Err(Ipv4Error::Malformed);
        }
        let ihl = usize::from(b[0] & 0x0f) * 4;
        let total = usize::from(be16(b, 2));
        if ihl < IPV4_HEADER_LEN || total < ihl || total > b.len() {
            return Err(Ipv4Error::Malformed);
        }
        if internet_checksum(&[&b[..ihl]]) != 0 {
            return Err(Ipv4Error::Malformed);
        }
        let frag = be16(b, 6);
        if frag & 0x3fff != 0 {
            return Err(Ipv4Error::Fragment);
        }
        Ok(Ipv4Packet {
            src: ip_at(b, 12),
            dst: ip_at(b, 16),
            protocol: b[9],
            ttl: b[8],
            header: &b[..ihl],
            payload: &b[ihl..total],
            checksum_offloaded: false,
        })
    }
}

/// A UDP datagram whose length and (non-zero) checksum are right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpDatagram<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: &'a [u8],
}

impl<'a> UdpDatagram<'a> {
    pub fn parse(ip: &Ipv4Packet<'a>) -> Option<Self> {
        let b = ip.payload;
        if b.len() < UDP_HEADER_LEN {
            return None;
        }
        let len = usize::from(be16(b, 4));
        if len < UDP_HEADER_LEN || len > b.len() {
            return None;
        }
        let b = &b[..len];
        let verify = be16(b, 6) != 0 && !ip.checksum_offloaded;
        if verify && transport_checksum(ip.src, ip.dst, PROTO_UDP, b) != 0 {
            return None;
        }
        Some(UdpDatagram {
            src_port: be16(b, 0),
            dst_port: be16(b, 2),
            payload: &b[UDP_HEADER_LEN..],
        })
    }
}

/// TCP flags the NAT device reads and sets.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

pub const TCP_HEADER_LEN: usize = 20;
/// Where the data of a TCP frame the device builds starts (Ethernet, IPv4 and TCP
/// headers, no options): shells read socket data straight to this offset and the
/// device writes the headers in front ([`tcp_headers_in_place`]).
pub const TCP_DATA_OFFSET: usize = HEADER_LEN + IPV4_HEADER_LEN + TCP_HEADER_LEN;
/// The most TCP data one IPv4 packet (without options) carries.
pub const TCP_MAX_DATA: usize = 65535 - IPV4_HEADER_LEN - TCP_HEADER_LEN;

/// A TCP segment whose header and checksum are right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSegment<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// The MSS option, if the segment carries one (SYNs).
    pub mss: Option<u16>,
    /// The window scale option (RFC 7323), if the segment carries one (SYNs).
    pub wscale: Option<u8>,
    pub payload: &'a [u8],
}

impl<'a> TcpSegment<'a> {
    pub fn parse(ip: &Ipv4Packet<'a>) -> Option<Self> {
        let b = ip.payload;
        if b.len() < TCP_HEADER_LEN {
            return None;
        }
        let off = usize::from(b[12] >> 4) * 4;
        if off < TCP_HEADER_LEN || off > b.len() {
            return None;
        }
        if !ip.checksum_offloaded && transport_checksum(ip.src, ip.dst, PROTO_TCP, b) != 0 {
            return None;
        }
        let be32 = |at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let (mut mss, mut wscale) = (None, None);
        let mut opts = &b[TCP_HEADER_LEN..off];
        while let Some((&kind, rest)) = opts.split_first() {
            match kind {
                0 => break,
                1 => opts = rest,
                _ => {
                    let Some(&len) = rest.first() else { break };
                    let len = usize::from(len);
                    if len < 2 || len > opts.len() {
                        break;
                    }
                    match (kind, len) {
                        (2, 4) => mss = Some(be16(opts, 2)),
                        (3, 3) => wscale = Some(opts[2]),
                        _ => {}
                    }
                    opts = &opts[len..];
                }
            }
        }
        Some(TcpSegment {
            src_port: be16(b, 0),
            dst_port: be16(b, 2),
            seq: be32(4),
            ack: be32(8),
            flags: b[13],
            window: be16(b, 14),
            mss,
            wscale,
            payload: &b[off..],
        })
    }
}

/// What a TCP segment the device builds says.
#[derive(Debug, Clone, Copy)]
pub struct TcpHeader {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// The MSS option (SYNs).
    pub mss: Option<u16>,
    /// The window scale option (SYNs).
    pub wscale: Option<u8>,
}

impl TcpHeader {
    /// The header without its checksum, options included.
    fn write(&self, t: &mut Vec<u8>) {
        let opt_len = 4 * usize::from(self.mss.is_some()) + 4 * usize::from(self.wscale.is_some());
        t.extend_from_slice(&self.src_port.to_be_bytes());
        t.extend_from_slice(&self.dst_port.to_be_bytes());
        t.extend_from_slice(&self.seq.to_be_bytes());
        t.extend_from_slice(&self.ack.to_be_bytes());
        t.push((((TCP_HEADER_LEN + opt_len) / 4) as u8) << 4);
        t.push(self.flags);
        t.extend_from_slice(&self.window.to_be_bytes());
        t.extend_from_slice(&[0, 0, 0, 0]);
        if let Some(mss) = self.mss {
            t.extend_from_slice(&[2, 4]);
            t.extend_from_slice(&mss.to_be_bytes());
        }
        if let Some(shift) = self.wscale {
            t.extend_from_slice(&[1, 3, 3, shift]); // NOP, then kind 3 length 3
        }
    }
}

/// A TCP header (with the options asked for) and `data`, checksummed for `route`.
pub fn tcp_segment(route: &Route, h: &TcpHeader, data: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(TCP_HEADER_LEN + 8 + data.len());
    h.write(&mut t);
    t.extend_from_slice(data);
    let sum = transport_checksum(route.src, route.dst, PROTO_TCP, &t);
    t[16..18].copy_from_slice(&sum.to_be_bytes());
    t
}

/// Writes the Ethernet, IPv4 and TCP headers (no options) of `frame`, whose data is
/// already at [`TCP_DATA_OFFSET`], built for offloading: the TCP checksum field holds
/// only the folded pseudo-header sum, to be completed over the segment (or each
/// segment cut from it) by whoever delivers it. `frame` must be at least
/// [`TCP_DATA_OFFSET`] and at most `TCP_DATA_OFFSET + TCP_MAX_DATA` bytes long.
pub fn tcp_headers_in_place(frame: &mut [u8], route: &Route, h: &TcpHeader, ident: u16) {
    debug_assert!(h.mss.is_none() && h.wscale.is_none(), "no options here");
    let ip_len = frame.len() - HEADER_LEN;
    let tcp_len = ip_len - IPV4_HEADER_LEN;
    write_header(frame, route.dst_mac, route.src_mac, EtherType::IPV4);
    let ip = &mut frame[HEADER_LEN..HEADER_LEN + IPV4_HEADER_LEN];
    ip[..2].copy_from_slice(&[0x45, 0]);
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&ident.to_be_bytes());
    ip[6..12].copy_from_slice(&[0, 0, 64, PROTO_TCP, 0, 0]);
    ip[12..16].copy_from_slice(&route.src.octets());
    ip[16..20].copy_from_slice(&route.dst.octets());
    let sum = internet_checksum(&[ip]);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut t = Vec::with_capacity(TCP_HEADER_LEN);
    h.write(&mut t);
    let (src, dst, len) = (route.src.octets(), route.dst.octets(), tcp_len as u16);
    let pseudo = internet_checksum(&[&src, &dst, &[0, PROTO_TCP], &len.to_be_bytes()]);
    // internet_checksum is the complement of the folded sum: undo it.
    t[16..18].copy_from_slice(&(!pseudo).to_be_bytes());
    frame[HEADER_LEN + IPV4_HEADER_LEN..TCP_DATA_OFFSET].copy_from_slice(&t);
}

/// The offload metadata of a frame from [`tcp_headers_in_place`] carrying `len` bytes
/// of data: complete the TCP checksum and, above `mss` bytes, cut into `mss`-byte
/// segments.
pub fn tcp_offload(len: usize, mss: usize) -> VirtioNetHdr {
    let l4 = (HEADER_LEN + IPV4_HEADER_LEN) as u16;
    let gso = len > mss;
    VirtioNetHdr {
        flags: VirtioNetHdr::F_NEEDS_CSUM,
        gso_type: if gso {
            VirtioNetHdr::GSO_TCPV4
        } else {
            VirtioNetHdr::GSO_NONE
        },
        hdr_len: TCP_DATA_OFFSET as u16,
        gso_size: if gso { mss as u16 } else { 0 },
        csum_start: l4,
        csum_offset: 16,
    }
}

/// An ICMP echo request or reply with a valid checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpEcho<'a> {
    pub kind: u8,
    pub ident: u16,
    pub seq: u16,
    pub data: &'a [u8],
}

impl<'a> IcmpEcho<'a> {
    /// Reads an echo message (header included), e.g. the payload of an IPv4 packet or
    /// what a ping socket returns. Other ICMP messages are `None`.
    pub fn parse(b: &'a [u8]) -> Option<Self> {
        if b.len() < ICMP_HEADER_LEN || b[1] != 0 || internet_checksum(&[b]) != 0 {
            return None;
        }
        if b[0] != ICMP_ECHO_REQUEST && b[0] != ICMP_ECHO_REPLY {
            return None;
        }
        Some(IcmpEcho {
            kind: b[0],
            ident: be16(b, 4),
            seq: be16(b, 6),
            data: &b[ICMP_HEADER_LEN..],
        })
    }

    /// The message as bytes, checksum filled in.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(ICMP_HEADER_LEN + self.data.len());
        m.extend_from_slice(&[self.kind, 0, 0, 0]);
        m.extend_from_slice(&self.ident.to_be_bytes());
        m.extend_from_slice(&self.seq.to_be_bytes());
        m.extend_from_slice(self.data);
        let sum = internet_checksum(&[&m]);
        m[2..4].copy_from_slice(&sum.to_be_bytes());
        m
    }
}

/// Addresses of one IPv4 frame the device builds.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
}

/// A whole Ethernet frame carrying an IPv4 packet with `payload` (a transport header
/// with its checksum already filled in, and data). Padded to the Ethernet minimum.
pub fn ipv4_frame(route: &Route, protocol: u8, ident: u16, payload: &[u8]) -> Vec<u8> {
    ipv4_part(route, protocol, ident, 0, payload)
}

/// `payload` as IPv4 fragments of at most `mtu` bytes each (RFC 791): every piece but
/// the last carries a multiple of 8 bytes and "more fragments". `None` if `mtu` leaves
/// no room for 8 bytes of data or the payload exceeds what one datagram can hold.
pub fn ipv4_fragments(
    route: &Route,
    protocol: u8,
    ident: u16,
    payload: &[u8],
    mtu: usize,
) -> Option<Vec<Vec<u8>>> {
    let piece = mtu.checked_sub(IPV4_HEADER_LEN)? / 8 * 8;
    if piece == 0 || IPV4_HEADER_LEN + payload.len() > usize::from(u16::MAX) {
        return None;
    }
    let count = payload.len().div_ceil(piece);
    let frames = payload
        .chunks(piece)
        .enumerate()
        .map(|(i, part)| {
            let more = if i + 1 < count { FRAG_MORE } else { 0 };
            let offset = (i * piece / 8) as u16;
            ipv4_part(route, protocol, ident, more | offset, part)
        })
        .collect();
    Some(frames)
}

/// "More fragments" in the IPv4 flags and fragment offset field.
const FRAG_MORE: u16 = 0x2000;

/// One IPv4 packet (or fragment: `frag` is the flags and offset field) in a frame.
fn ipv4_part(route: &Route, protocol: u8, ident: u16, frag: u16, payload: &[u8]) -> Vec<u8> {
    let total = IPV4_HEADER_LEN + payload.len();
    let mut f = Vec::with_capacity((HEADER_LEN + total).max(MIN_FRAME_LEN));
    f.resize(HEADER_LEN, 0);
    write_header(&mut f, route.dst_mac, route.src_mac, EtherType::IPV4);
    let total16 = u16::try_from(total).unwrap_or(u16::MAX);
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total16.to_be_bytes());
    f.extend_from_slice(&ident.to_be_bytes());
    f.extend_from_slice(&frag.to_be_bytes());
    f.extend_from_slice(&[64, protocol, 0, 0]);
    f.extend_from_slice(&route.src.octets());
    f.extend_from_slice(&route.dst.octets());
    let sum = internet_checksum(&[&f[HEADER_LEN..]]);
    f[HEADER_LEN + 10..HEADER_LEN + 12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(payload);
    if f.len() < MIN_FRAME_LEN {
        f.resize(MIN_FRAME_LEN, 0);
    }
    f
}

/// A UDP header and `data`, checksummed for the pseudo-header of `route`.
pub fn udp_segment(route: &Route, src_port: u16, dst_port: u16, data: &[u8]) -> Vec<u8> {
    let len = UDP_HEADER_LEN + data.len();
    let mut u = Vec::with_capacity(len);
    u.extend_from_slice(&src_port.to_be_bytes());
    u.extend_from_slice(&dst_port.to_be_bytes());
    u.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(data);
    let mut sum = transport_checksum(route.src, route.dst, PROTO_UDP, &u);
    if sum == 0 {
        sum = 0xffff; // 0 would mean "no checksum" (RFC 768)
    }
    u[6..8].copy_from_slice(&sum.to_be_bytes());
    u
}

/// An ICMP destination unreachable message quoting `header` and the first 8 bytes of
/// the offending packet's payload (RFC 792).
pub fn icmp_unreachable(code: u8, header: &[u8], payload: &[u8]) -> Vec<u8> {
    let quoted = &payload[..payload.len().min(8)];
    let mut m = Vec::with_capacity(ICMP_HEADER_LEN + header.len() + quoted.len());
    m.extend_from_slice(&[ICMP_UNREACHABLE, code, 0, 0, 0, 0, 0, 0]);
    m.extend_from_slice(header);
    m.extend_from_slice(quoted);
    let sum = internet_checksum(&[&m]);
    m[2..4].copy_from_slice(&sum.to_be_bytes());
    m
}

pub use vnet_core::wire::checksum::{internet_checksum, transport_checksum};

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
    const B: MacAddr = MacAddr([0x02, 0x76, 0x64, 0, 0, 2]);

    fn route() -> Route {
        Route {
            src_mac: A,
            dst_mac: B,
            src: Ipv4Addr::new(10, 0, 0, 5),
            dst: Ipv4Addr::new(192, 0, 2, 1),
        }
    }

    #[test]
    fn a_built_udp_frame_parses_back() {
        let r = route();
        let f = ipv4_frame(&r, PROTO_UDP, 7, &udp_segment(&r, 4000, 53, b"hello"));
        let ip = Ipv4Packet::parse(&f[HEADER_LEN..]).unwrap();
        assert_eq!((ip.src, ip.dst, ip.protocol), (r.src, r.dst, PROTO_UDP));
        let u = UdpDatagram::parse(&ip).unwrap();
        assert_eq!(
            (u.src_port, u.dst_port, u.payload),
            (4000, 53, &b"hello"[..])
        );
    }

    #[test]
    fn a_corrupted_udp_checksum_is_refused() {
        let r = route();
        let mut f = ipv4_frame(&r, PROTO_UDP, 7, &udp_segment(&r, 4000, 53, b"hello"));
        let last = HEADER_LEN + IPV4_HEADER_LEN + UDP_HEADER_LEN + 4;
        f[last] ^= 1;
        let ip = Ipv4Packet::parse(&f[HEADER_LEN..]).unwrap();
        assert_eq!(UdpDatagram::parse(&ip), None);
    }

    #[test]
    fn echo_round_trips_and_fragments_are_told_apart() {
        let m = IcmpEcho {
            kind: ICMP_ECHO_REQUEST,
            ident: 0x1234,
            seq: 9,
            data: b"abcdefgh",
        }
        .to_bytes();
        let e = IcmpEcho::parse(&m).unwrap();
        assert_eq!((e.ident, e.seq, e.data), (0x1234, 9, &b"abcdefgh"[..]));
        let mut f = ipv4_frame(&route(), PROTO_ICMP, 1, &m);
        f[HEADER_LEN + 6] = 0x20; // more fragments
        let sum = HEADER_LEN + 10;
        f[sum..sum + 2].copy_from_slice(&[0, 0]);
        let s = internet_checksum(&[&f[HEADER_LEN..HEADER_LEN + 20]]);
        f[sum..sum + 2].copy_from_slice(&s.to_be_bytes());
        assert_eq!(
            Ipv4Packet::parse(&f[HEADER_LEN..]),
            Err(Ipv4Error::Fragment)
        );
    }

    /// A SYN-ACK with both options.
    fn syn_ack() -> TcpHeader {
        TcpHeader {
            src_port: 80,
            dst_port: 40000,
            seq: 7,
            ack: 9,
            flags: tcp_flags::SYN | tcp_flags::ACK,
            window: 1000,
            mss: Some(1460),
            wscale: Some(7),
        }
    }

    #[test]
    fn a_built_tcp_segment_parses_back_with_its_options() {
        let r = route();
        let h = syn_ack();
        let f = ipv4_frame(&r, PROTO_TCP, 1, &tcp_segment(&r, &h, b"x"));
        let ip = Ipv4Packet::parse(&f[HEADER_LEN..]).unwrap();
        let t = TcpSegment::parse(&ip).unwrap();
        assert_eq!((t.seq, t.ack, t.flags, t.window), (7, 9, 0x12, 1000));
        assert_eq!(
            (t.mss, t.wscale, t.payload),
            (Some(1460), Some(7), &b"x"[..])
        );
        let h = TcpHeader { wscale: None, ..h };
        let f = ipv4_frame(&r, PROTO_TCP, 1, &tcp_segment(&r, &h, b""));
        let t = TcpSegment::parse(&Ipv4Packet::parse(&f[HEADER_LEN..]).unwrap()).unwrap();
        assert_eq!((t.mss, t.wscale), (Some(1460), None));
    }

    #[test]
    fn a_frame_built_in_place_verifies_once_its_partial_checksum_is_completed() {
        use vnet_core::wire::offload::complete_checksum;
        let r = route();
        let h = TcpHeader {
            flags: tcp_flags::ACK,
            mss: None,
            wscale: None,
            ..syn_ack()
        };
        let data: Vec<u8> = (0..3001u32).map(|i| (i * 7) as u8).collect();
        let mut f = vec![0; TCP_DATA_OFFSET];
        f.extend_from_slice(&data);
        tcp_headers_in_place(&mut f, &r, &h, 5);
        let ip = Ipv4Packet::parse(&f[HEADER_LEN..]).unwrap();
        assert!(
            TcpSegment::parse(&ip).is_none(),
            "only the pseudo-header sum so far"
        );
        let trusted = Ipv4Packet {
            checksum_offloaded: true,
            ..ip
        };
        assert_eq!(TcpSegment::parse(&trusted).unwrap().payload, &data[..]);
        complete_checksum(&mut f, &tcp_offload(data.len(), 4000)).unwrap();
        let t = TcpSegment::parse(&Ipv4Packet::parse(&f[HEADER_LEN..]).unwrap()).unwrap();
        assert_eq!((t.seq, t.ack, t.window, t.payload), (7, 9, 1000, &data[..]));
    }

    #[test]
    fn fragments_carry_multiples_of_8_bytes_and_say_where_they_go() {
        let r = route();
        let payload: Vec<u8> = (0..100u8).collect();
        let frames = ipv4_fragments(&r, PROTO_UDP, 9, &payload, 20 + 44).unwrap();
        // 44 bytes of room: pieces of 40, the last one the rest.
        let fields: Vec<(u16, usize)> = frames
            .iter()
            .map(|f| (be16(f, HEADER_LEN + 6), f.len().max(MIN_FRAME_LEN)))
            .collect();
        assert_eq!(
            fields,
            [(0x2000, 74), (0x2000 | 5, 74), (10, MIN_FRAME_LEN)],
            "MF and offsets in 8-byte units"
        );
        for f in &frames {
            assert_eq!(internet_checksum(&[&f[HEADER_LEN..HEADER_LEN + 20]]), 0);
            assert_eq!(be16(f, HEADER_LEN + 4), 9, "one ID for all pieces");
        }
        assert_eq!(
            ipv4_fragments(&r, PROTO_UDP, 9, &payload, 27),
            None,
            "no room for 8"
        );
        assert_eq!(
            ipv4_fragments(&r, PROTO_UDP, 9, &vec![0; 65_516], 1500),
            None
        );
    }

    #[test]
    fn checksum_is_independent_of_how_the_bytes_are_split() {
        let data: Vec<u8> = (0..=40).collect();
        let whole = internet_checksum(&[&data]);
        assert_eq!(
            internet_checksum(&[&data[..3], &data[3..4], &data[4..]]),
            whole
        );
        assert_eq!(internet_checksum(&[&data[..1], &[], &data[1..]]), whole);
    }

    proptest! {
        #[test]
        fn parsers_never_panic(b in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = ArpPacket::parse(&b);
            let _ = IcmpEcho::parse(&b);
            if let Ok(ip) = Ipv4Packet::parse(&b) {
                let _ = UdpDatagram::parse(&ip);
                let _ = TcpSegment::parse(&ip);
            }
        }

        #[test]
        fn checksum_splits_agree(b in proptest::collection::vec(any::<u8>(), 0..64), at in 0usize..64) {
            let at = at.min(b.len());
            prop_assert_eq!(internet_checksum(&[&b[..at], &b[at..]]), internet_checksum(&[&b]));
        }
    }
}
