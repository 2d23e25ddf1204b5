//! Frames the NAT device builds, on `vnet_core::wire`'s views: whole Ethernet + IPv4
//! frames for a [`Route`] (in fragments above the vnet's MTU), the ARP, ICMP, UDP and
//! TCP messages they carry, and the headers of a pooled TCP frame filled in place with
//! its offload metadata (the bulk path: no allocation there).
//!
//! Every frame is padded to the Ethernet minimum; IPv4 headers carry no options, TTL
//! [`TTL`] and DF clear, so any router on the way may fragment.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use vnet_core::wire::checksum;
use vnet_core::wire::ethernet::{self, write_header, EtherType, MacAddr};
use vnet_core::wire::offload::VirtioNetHdr;
use vnet_core::wire::{arp, icmpv4, ipv4, ipv6, tcp, udp, IpProtocol};

/// Ethernet frames are padded to this length (without FCS).
pub const MIN_FRAME_LEN: usize = 60;
/// The TTL of the packets the device sends.
pub const TTL: u8 = 64;
/// Where the data of a TCP frame the device builds starts (Ethernet, IPv4 and TCP
/// headers, no options): shells read socket data straight to this offset and the
/// device writes the headers in front ([`tcp_headers_in_place`]).
pub const TCP_DATA_OFFSET: usize = ethernet::HEADER_LEN + ipv4::HEADER_LEN + tcp::HEADER_LEN;
/// The most TCP data one IPv4 packet (without options) carries.
pub const TCP_MAX_DATA: usize = u16::MAX as usize - ipv4::HEADER_LEN - tcp::HEADER_LEN;

/// Addresses of one IPv4 frame the device builds.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
}

impl Route {
    /// The IPv4 header of a packet (or fragment) on this route.
    fn ipv4(&self, protocol: IpProtocol, ident: u16, payload_len: usize) -> ipv4::Repr {
        ipv4::Repr {
            src_addr: self.src,
            dst_addr: self.dst,
            next_header: protocol,
            payload_len,
            hop_limit: TTL,
            dscp_ecn: 0,
            ident,
            dont_frag: false,
            more_frags: false,
            frag_offset: 0,
        }
    }

    /// The addresses of the transport pseudo-header.
    fn addrs(&self) -> (IpAddr, IpAddr) {
        (IpAddr::V4(self.src), IpAddr::V4(self.dst))
    }
}

/// An ARP packet in a frame from `src` to `dst`.
pub fn arp_frame(dst: MacAddr, src: MacAddr, repr: &arp::Repr) -> Vec<u8> {
    let mut f = vec![0u8; MIN_FRAME_LEN];
    write_header(&mut f, dst, src, EtherType::ARP);
    repr.emit(&mut arp::Packet::new_unchecked(
        &mut f[ethernet::HEADER_LEN..],
    ));
    f
}

/// "Who has `target`? Tell `ip` (at `mac`)", broadcast.
pub fn arp_request(mac: MacAddr, ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let repr = arp::Repr {
        operation: arp::Operation::Request,
        source_hardware_addr: mac,
        source_protocol_addr: ip,
        target_hardware_addr: MacAddr([0; 6]),
        target_protocol_addr: target,
    };
    arp_frame(MacAddr::BROADCAST, mac, &repr)
}

/// The answer to `request`: its target address is at `mac`, to the asker.
pub fn arp_reply(request: &arp::Repr, mac: MacAddr) -> Vec<u8> {
    let repr = arp::Repr {
        operation: arp::Operation::Reply,
        source_hardware_addr: mac,
        source_protocol_addr: request.target_protocol_addr,
        target_hardware_addr: request.source_hardware_addr,
        target_protocol_addr: request.source_protocol_addr,
    };
    arp_frame(request.source_hardware_addr, mac, &repr)
}

/// A whole Ethernet frame carrying an IPv4 packet with `payload` (a transport header
/// with its checksum already filled in, and data). `payload` must fit one packet.
pub fn ipv4_frame(route: &Route, protocol: IpProtocol, ident: u16, payload: &[u8]) -> Vec<u8> {
    ipv4_part(route, route.ipv4(protocol, ident, payload.len()), payload)
}

/// `payload` as IPv4 fragments of at most `mtu` bytes each (RFC 791): every piece but
/// the last carries a multiple of 8 bytes and "more fragments". `None` if `mtu` leaves
/// no room for 8 bytes of data or the payload exceeds what one datagram can hold.
pub fn ipv4_fragments(
    route: &Route,
    protocol: IpProtocol,
    ident: u16,
    payload: &[u8],
    mtu: usize,
) -> Option<Vec<Vec<u8>>> {
    let piece = mtu.checked_sub(ipv4::HEADER_LEN)? / 8 * 8;
    if piece == 0 || ipv4::HEADER_LEN + payload.len() > usize::from(u16::MAX) {
        return None;
    }
    let count = payload.len().div_ceil(piece);
    let frames = payload
        .chunks(piece)
        .enumerate()
        .map(|(i, part)| {
            let header = ipv4::Repr {
                more_frags: i + 1 < count,
                // Below 65536: the whole payload fits one datagram.
                frag_offset: (i * piece) as u16,
                ..route.ipv4(protocol, ident, part.len())
            };
            ipv4_part(route, header, part)
        })
        .collect();
    Some(frames)
}

/// One IPv4 packet (or fragment) with `header` in a padded frame.
fn ipv4_part(route: &Route, header: ipv4::Repr, payload: &[u8]) -> Vec<u8> {
    let total = ipv4::HEADER_LEN + payload.len();
    debug_assert!(total <= usize::from(u16::MAX), "one packet's worth");
    let mut f = vec![0u8; (ethernet::HEADER_LEN + total).max(MIN_FRAME_LEN)];
    write_header(&mut f, route.dst_mac, route.src_mac, EtherType::IPV4);
    let ip = &mut f[ethernet::HEADER_LEN..];
    header.emit(&mut ipv4::Packet::new_unchecked(&mut *ip));
    ip[ipv4::HEADER_LEN..total].copy_from_slice(payload);
    f
}

/// A UDP header and `data`, checksummed for the pseudo-header of `route`. Data longer
/// than a datagram holds saturates the length field (and is then too big for
/// [`ipv4_fragments`] anyway).
pub fn udp_datagram(route: &impl Addressed, src_port: u16, dst_port: u16, data: &[u8]) -> Vec<u8> {
    let mut u = vec![0u8; udp::HEADER_LEN + data.len()];
    u[udp::HEADER_LEN..].copy_from_slice(data);
    let mut p = udp::Packet::new_unchecked(&mut u[..]);
    p.set_src_port(src_port);
    p.set_dst_port(dst_port);
    p.set_len(u16::try_from(udp::HEADER_LEN + data.len()).unwrap_or(u16::MAX));
    let (src, dst) = route.addrs();
    p.fill_checksum(&src, &dst);
    u
}

/// A TCP segment with `header` (its options included; its `payload_len` is `data`'s)
/// and `data`, checksummed for `route`.
pub fn tcp_segment(route: &Route, header: &tcp::Repr, data: &[u8]) -> Vec<u8> {
    let repr = tcp::Repr {
        payload_len: data.len(),
        ..*header
    };
    let mut t = vec![0u8; repr.buffer_len()];
    let mut p = tcp::Packet::new_unchecked(&mut t[..]);
    repr.emit(&mut p);
    p.payload_mut().copy_from_slice(data);
    let (src, dst) = route.addrs();
    p.fill_checksum(&src, &dst);
    t
}

/// Writes the Ethernet, IPv4 and TCP headers (`header` without options) of `frame`,
/// whose data is already at [`TCP_DATA_OFFSET`], built for offloading: the TCP checksum
/// field holds only the folded pseudo-header sum, to be completed over the segment (or
/// each segment cut from it) by whoever delivers it. `frame` must be at least
/// [`TCP_DATA_OFFSET`] and at most `TCP_DATA_OFFSET + TCP_MAX_DATA` bytes long.
pub fn tcp_headers_in_place(frame: &mut [u8], route: &Route, header: &tcp::Repr, ident: u16) {
    debug_assert_eq!(header.header_len(), tcp::HEADER_LEN, "no options here");
    let tcp_len = frame.len() - ethernet::HEADER_LEN - ipv4::HEADER_LEN;
    write_header(frame, route.dst_mac, route.src_mac, EtherType::IPV4);
    let headers = &mut frame[ethernet::HEADER_LEN..TCP_DATA_OFFSET];
    let (ip, segment) = headers.split_at_mut(ipv4::HEADER_LEN);
    route
        .ipv4(IpProtocol::TCP, ident, tcp_len)
        .emit(&mut ipv4::Packet::new_unchecked(ip));
    let mut t = tcp::Packet::new_unchecked(segment);
    header.emit(&mut t);
    // Below 65536: the frame holds at most TCP_MAX_DATA bytes of data.
    let pseudo = checksum::pseudo_header_v4(route.src, route.dst, IpProtocol::TCP, tcp_len as u16);
    t.set_checksum(checksum::fold(pseudo));
}

/// The offload metadata of a frame from [`tcp_headers_in_place`] carrying `len` bytes
/// of data: complete the TCP checksum and, above `mss` bytes, cut into `mss`-byte
/// segments.
pub fn tcp_offload(len: usize, mss: usize) -> VirtioNetHdr {
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
        csum_start: (ethernet::HEADER_LEN + ipv4::HEADER_LEN) as u16,
        csum_offset: tcp::CHECKSUM_OFFSET as u16,
    }
}

/// An ICMP message as bytes, checksum filled in.
pub fn icmp_message(repr: &icmpv4::Repr<'_>) -> Vec<u8> {
    let mut m = vec![0u8; repr.buffer_len()];
    repr.emit(&mut icmpv4::Packet::new_unchecked(&mut m[..]));
    m
}

/// An echo request or reply whose checksum is right (a guest's, or what a ping socket
/// returns, header included); other messages are `None`.
pub fn read_echo(message: &[u8]) -> Option<icmpv4::Repr<'_>> {
    let p = icmpv4::Packet::new_checked(message).ok()?;
    if !p.verify_checksum() {
        return None;
    }
    match icmpv4::Repr::parse(&p).ok()? {
        echo @ (icmpv4::Repr::EchoRequest { .. } | icmpv4::Repr::EchoReply { .. }) => Some(echo),
        _ => None,
    }
}

/// ICMP destination unreachable `code` about `packet`, quoting its header and the first
/// 8 bytes of its payload (RFC 792).
pub fn unreachable(code: u8, packet: &ipv4::Packet<&[u8]>) -> Vec<u8> {
    let quoted = usize::from(packet.header_len()) + packet.payload().len().min(8);
    icmp_message(&icmpv4::Repr::DstUnreachable {
        code,
        next_hop_mtu: 0,
        invoking: &packet.clone().into_inner()[..quoted],
    })
}

/// A route of either family, as the transport pseudo-header sees it.
pub trait Addressed {
    /// Source and destination addresses.
    fn addrs(&self) -> (IpAddr, IpAddr);
}

impl Addressed for Route {
    fn addrs(&self) -> (IpAddr, IpAddr) {
        Route::addrs(self)
    }
}

/// Addresses of one IPv6 frame the device builds.
#[derive(Debug, Clone, Copy)]
pub struct Route6 {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
}

impl Addressed for Route6 {
    fn addrs(&self) -> (IpAddr, IpAddr) {
        (IpAddr::V6(self.src), IpAddr::V6(self.dst))
    }
}

/// A whole Ethernet frame carrying an IPv6 packet (no extension headers, hop limit
/// [`TTL`]) with `payload`: a transport header with its checksum filled in, and data.
/// `None` if `payload` is longer than an IPv6 payload length can say.
pub fn ipv6_frame(route: &Route6, protocol: IpProtocol, payload: &[u8]) -> Option<Vec<u8>> {
    let payload_len = u16::try_from(payload.len()).ok()?;
    let at = ethernet::HEADER_LEN + ipv6::HEADER_LEN;
    let mut frame = vec![0u8; (at + payload.len()).max(MIN_FRAME_LEN)];
    write_header(&mut frame, route.dst_mac, route.src_mac, EtherType::IPV6);
    let header = ipv6::Repr {
        src_addr: route.src,
        dst_addr: route.dst,
        next_header: protocol,
        payload_len: usize::from(payload_len),
        hop_limit: TTL,
        traffic_class: 0,
        flow_label: 0,
    };
    header.emit(&mut ipv6::Packet::new_unchecked(
        &mut frame[ethernet::HEADER_LEN..at],
    ));
    frame[at..at + payload.len()].copy_from_slice(payload);
    Some(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vnet_core::wire::offload::complete_checksum;

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

    /// The IPv4 packet of a frame, header checked.
    fn ip_of(f: &[u8]) -> ipv4::Packet<&[u8]> {
        let ip = ipv4::Packet::new_checked(&f[ethernet::HEADER_LEN..]).unwrap();
        ipv4::Repr::parse(&ip).unwrap();
        ip
    }

    #[test]
    fn a_built_udp_frame_parses_back_and_a_corrupted_one_does_not_verify() {
        let r = route();
        let (src, dst) = r.addrs();
        let mut f = ipv4_frame(
            &r,
            IpProtocol::UDP,
            7,
            &udp_datagram(&r, 4000, 53, b"hello"),
        );
        assert_eq!(f.len(), MIN_FRAME_LEN, "padded");
        let ip = ip_of(&f);
        assert_eq!(
            (ip.src_addr(), ip.dst_addr(), ip.next_header(), ip.ident()),
            (r.src, r.dst, IpProtocol::UDP, 7)
        );
        let u = udp::Packet::new_checked(ip.payload()).unwrap();
        assert!(u.verify_checksum(&src, &dst));
        assert_eq!(
            (u.src_port(), u.dst_port(), u.payload()),
            (4000, 53, &b"hello"[..])
        );
        f[ethernet::HEADER_LEN + ipv4::HEADER_LEN + udp::HEADER_LEN + 4] ^= 1;
        let ip = ip_of(&f);
        let u = udp::Packet::new_checked(ip.payload()).unwrap();
        assert!(!u.verify_checksum(&src, &dst));
    }

    #[test]
    fn arp_replies_answer_the_request() {
        let request = arp_request(A, Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(
            (request.len(), &request[..6]),
            (MIN_FRAME_LEN, &[0xff; 6][..])
        );
        let asked = arp::Repr::parse(&arp::Packet::new_checked(&request[14..]).unwrap()).unwrap();
        let reply = arp_reply(&asked, B);
        let r = arp::Repr::parse(&arp::Packet::new_checked(&reply[14..]).unwrap()).unwrap();
        assert_eq!(&reply[..6], &A.0);
        assert_eq!(
            (r.operation, r.source_hardware_addr, r.source_protocol_addr),
            (arp::Operation::Reply, B, Ipv4Addr::new(10, 0, 0, 2))
        );
        assert_eq!(
            (r.target_hardware_addr, r.target_protocol_addr),
            (A, Ipv4Addr::new(10, 0, 0, 5))
        );
    }

    #[test]
    fn echoes_round_trip_and_unreachables_quote_8_bytes() {
        let m = icmp_message(&icmpv4::Repr::EchoRequest {
            ident: 0x1234,
            seq_no: 9,
            data: b"abcdefgh",
        });
        assert_eq!(
            read_echo(&m),
            Some(icmpv4::Repr::EchoRequest {
                ident: 0x1234,
                seq_no: 9,
                data: b"abcdefgh"
            })
        );
        let mut bad = m.clone();
        bad[9] ^= 1;
        assert_eq!(read_echo(&bad), None, "checksum");
        let f = ipv4_frame(&route(), IpProtocol::ICMP, 1, &m);
        let u = unreachable(icmpv4::Unreachable::PORT, &ip_of(&f));
        let p = icmpv4::Packet::new_checked(&u[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!((p.msg_type(), p.msg_code()), (3, 3));
        assert_eq!(p.data(), &f[14..14 + 28], "header and 8 bytes");
        assert_eq!(read_echo(&u), None, "not an echo");
    }

    /// A SYN-ACK with both options.
    fn syn_ack() -> tcp::Repr {
        tcp::Repr {
            src_port: 80,
            dst_port: 40000,
            seq_number: 7,
            ack_number: 9,
            flags: tcp::Flags(tcp::Flags::SYN | tcp::Flags::ACK),
            window_len: 1000,
            max_seg_size: Some(1460),
            window_scale: Some(7),
            ..tcp::Repr::default()
        }
    }

    #[test]
    fn a_built_tcp_segment_parses_back_with_its_options() {
        let r = route();
        let (src, dst) = r.addrs();
        let f = ipv4_frame(&r, IpProtocol::TCP, 1, &tcp_segment(&r, &syn_ack(), b"x"));
        let ip = ip_of(&f);
        let t = tcp::Packet::new_checked(ip.payload()).unwrap();
        assert!(t.verify_checksum(&src, &dst));
        assert_eq!(t.options(), &[2, 4, 0x05, 0xb4, 1, 3, 3, 7]);
        let want = tcp::Repr {
            payload_len: 1,
            ..syn_ack()
        };
        assert_eq!(
            (tcp::Repr::parse(&t).unwrap(), t.payload()),
            (want, &b"x"[..])
        );
    }

    #[test]
    fn a_frame_built_in_place_verifies_once_its_partial_checksum_is_completed() {
        let r = route();
        let (src, dst) = r.addrs();
        let h = tcp::Repr {
            flags: tcp::Flags(tcp::Flags::ACK),
            max_seg_size: None,
            window_scale: None,
            ..syn_ack()
        };
        let data: Vec<u8> = (0..3001u32).map(|i| (i * 7) as u8).collect();
        let mut f = vec![0; TCP_DATA_OFFSET];
        f.extend_from_slice(&data);
        tcp_headers_in_place(&mut f, &r, &h, 5);
        let segment = |f: &[u8]| ip_of(f).payload().to_vec();
        let t = segment(&f);
        let t = tcp::Packet::new_checked(&t[..]).unwrap();
        assert!(
            !t.verify_checksum(&src, &dst),
            "only the pseudo-header sum so far"
        );
        assert_eq!((t.header_len(), t.payload()), (20, &data[..]));
        complete_checksum(&mut f, &tcp_offload(data.len(), 4000)).unwrap();
        let t = segment(&f);
        let t = tcp::Packet::new_checked(&t[..]).unwrap();
        assert!(t.verify_checksum(&src, &dst));
        let got = tcp::Repr::parse(&t).unwrap();
        assert_eq!(
            (got.seq_number, got.ack_number, got.window_len, t.payload()),
            (7, 9, 1000, &data[..])
        );
    }

    #[test]
    fn fragments_carry_multiples_of_8_bytes_and_say_where_they_go() {
        let r = route();
        let payload: Vec<u8> = (0..100u8).collect();
        let frames = ipv4_fragments(&r, IpProtocol::UDP, 9, &payload, 20 + 44).unwrap();
        // 44 bytes of room: pieces of 40, the last one the rest.
        let fields: Vec<(bool, u16, usize)> = frames
            .iter()
            .map(|f| {
                let ip = ip_of(f);
                assert_eq!(ip.ident(), 9, "one ID for all pieces");
                (ip.more_frags(), ip.frag_offset(), f.len())
            })
            .collect();
        assert_eq!(
            fields,
            [(true, 0, 74), (true, 40, 74), (false, 80, MIN_FRAME_LEN)],
            "MF and offsets"
        );
        assert_eq!(
            ipv4_fragments(&r, IpProtocol::UDP, 9, &payload, 27),
            None,
            "no room for 8"
        );
        assert_eq!(
            ipv4_fragments(&r, IpProtocol::UDP, 9, &vec![0; 65_516], 1500),
            None
        );
    }

    #[test]
    fn an_ipv6_udp_frame_carries_a_checksummed_datagram() {
        let r = Route6 {
            src_mac: B,
            dst_mac: A,
            src: "fd00::2".parse().unwrap(),
            dst: "fd00::1:5".parse().unwrap(),
        };
        let f = ipv6_frame(&r, IpProtocol::UDP, &udp_datagram(&r, 53, 4000, b"hi")).unwrap();
        let eth = ethernet::Frame::parse(&f).unwrap();
        assert_eq!(
            (eth.dst(), eth.src(), eth.ethertype()),
            (A, B, EtherType::IPV6)
        );
        let ip = ipv6::Packet::new_checked(eth.payload()).unwrap();
        let repr = ipv6::Repr::parse(&ip).unwrap();
        assert_eq!((repr.src_addr, repr.dst_addr), (r.src, r.dst));
        assert_eq!((repr.next_header, repr.hop_limit), (IpProtocol::UDP, TTL));
        let u = udp::Packet::new_checked(ip.payload()).unwrap();
        assert!(u.verify_checksum(&IpAddr::V6(r.src), &IpAddr::V6(r.dst)));
        assert_eq!(
            (u.src_port(), u.dst_port(), u.payload()),
            (53, 4000, &b"hi"[..])
        );
        assert!(ipv6_frame(&r, IpProtocol::UDP, &vec![0; 70_000]).is_none());
    }
}
