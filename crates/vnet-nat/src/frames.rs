//! Frames the NAT device builds, on `vnet_core::wire`'s views: whole Ethernet + IPv4 or
//! IPv6 frames for a [`Route`] (in fragments above the vnet's MTU), the ARP, ICMP,
//! ICMPv6, UDP and TCP messages they carry, and the headers of a pooled TCP frame filled
//! in place with its offload metadata (the bulk path: no allocation there).
//!
//! The family is the route's: one set of builders for both, which only branch where the
//! headers differ. Every frame is padded to the Ethernet minimum; IP headers carry no
//! options (IPv6: no extension headers but the Fragment header of fragments), TTL (hop
//! limit) [`TTL`]; IPv4's DF is clear, so any router on the way may fragment.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use vnet_core::wire::checksum;
use vnet_core::wire::ethernet::{self, write_header, EtherType, MacAddr};
use vnet_core::wire::offload::VirtioNetHdr;
use vnet_core::wire::{arp, icmpv4, icmpv6, ipv4, ipv6, tcp, udp, IpProtocol};

/// Ethernet frames are padded to this length (without FCS).
pub const MIN_FRAME_LEN: usize = 60;
/// The TTL of the packets the device sends.
pub const TTL: u8 = 64;
/// Where the data of an IPv4 TCP frame the device builds starts (Ethernet, IPv4 and
/// TCP headers, no options): shells read socket data straight to the route's offset
/// ([`Route::tcp_data_offset`]) and the device writes the headers in front
/// ([`tcp_headers_in_place`]).
pub const TCP_DATA_OFFSET: usize = ethernet::HEADER_LEN + ipv4::HEADER_LEN + tcp::HEADER_LEN;
/// The most TCP data one packet of either family (without options) carries.
pub const TCP_MAX_DATA: usize = u16::MAX as usize - ipv4::HEADER_LEN - tcp::HEADER_LEN;
/// The smallest MTU of an IPv6 link (RFC 8200 §5): ICMPv6 errors fit it.
pub const IPV6_MIN_MTU: usize = 1280;

/// Addresses of one frame the device builds; both addresses of one family.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub src: IpAddr,
    pub dst: IpAddr,
}

/// An ICMP "destination unreachable", as either family says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreachable {
    /// No route (IPv4: host unreachable; IPv6: no route to destination).
    Host,
    /// Port unreachable.
    Port,
    /// Protocol unreachable (IPv6: parameter problem, unrecognized next header).
    Protocol,
    /// Communication administratively prohibited.
    AdminProhibited,
}

/// An echo request or reply, of either family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Echo<'a> {
    pub reply: bool,
    pub ident: u16,
    pub seq_no: u16,
    pub data: &'a [u8],
}

impl Route {
    /// Whether this route is IPv6.
    pub fn is_ipv6(&self) -> bool {
        self.dst.is_ipv6()
    }

    /// The IP header's length (no options, no extension headers).
    pub fn ip_header_len(&self) -> usize {
        if self.is_ipv6() {
            ipv6::HEADER_LEN
        } else {
            ipv4::HEADER_LEN
        }
    }

    /// Where the data of a TCP frame without options starts on this route.
    pub fn tcp_data_offset(&self) -> usize {
        ethernet::HEADER_LEN + self.ip_header_len() + tcp::HEADER_LEN
    }

    /// The ICMP of this route's family.
    pub fn icmp_protocol(&self) -> IpProtocol {
        if self.is_ipv6() {
            IpProtocol::ICMPV6
        } else {
            IpProtocol::ICMP
        }
    }

    fn v4(&self) -> (Ipv4Addr, Ipv4Addr) {
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => (s, d),
            _ => unreachable!("an IPv4 route"),
        }
    }

    fn v6(&self) -> (Ipv6Addr, Ipv6Addr) {
        match (self.src, self.dst) {
            (IpAddr::V6(s), IpAddr::V6(d)) => (s, d),
            _ => unreachable!("an IPv6 route"),
        }
    }

    /// The IPv4 header of a packet (or fragment) on this route.
    fn ipv4(&self, protocol: IpProtocol, ident: u16, payload_len: usize) -> ipv4::Repr {
        let (src_addr, dst_addr) = self.v4();
        ipv4::Repr {
            src_addr,
            dst_addr,
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

    /// The IPv6 header of a packet on this route.
    fn ipv6(&self, next_header: IpProtocol, payload_len: usize) -> ipv6::Repr {
        let (src_addr, dst_addr) = self.v6();
        ipv6::Repr {
            src_addr,
            dst_addr,
            next_header,
            payload_len,
            hop_limit: TTL,
            traffic_class: 0,
            flow_label: 0,
        }
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

/// "Who has `target`?" in IPv6 (RFC 4861 §7.2.2): a Neighbour Solicitation from `ip`
/// (at `mac`) to `target`'s solicited-node group, with our link-layer address.
pub fn neighbour_solicitation(mac: MacAddr, ip: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let t = target.octets();
    let group = Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(t[13]),
        u16::from_be_bytes([t[14], t[15]]),
    );
    let g = group.octets();
    let dst_mac = MacAddr([0x33, 0x33, g[12], g[13], g[14], g[15]]);
    let mut option = [0u8; 8];
    icmpv6::NdiscOption::SourceLinkLayerAddr(mac).emit(&mut option);
    let ns = icmpv6::Repr::Ndisc(icmpv6::NdiscRepr::NeighborSolicit {
        target,
        options: &option,
    });
    let route = Route {
        src_mac: mac,
        dst_mac,
        src: IpAddr::V6(ip),
        dst: IpAddr::V6(group),
    };
    let mut m = vec![0u8; ns.buffer_len()];
    ns.emit(&ip, &group, &mut icmpv6::Packet::new_unchecked(&mut m[..]));
    let mut header = route.ipv6(IpProtocol::ICMPV6, m.len());
    header.hop_limit = 255; // RFC 4861 §7.1.1
    ip_part(&route, IpHeader::V6(header, None), &m)
}

/// A whole Ethernet frame carrying an IP packet with `payload` (a transport header
/// with its checksum already filled in, and data). `payload` must fit one packet;
/// `ident` names an IPv4 packet (IPv6 packets that fit need none).
pub fn ip_frame(route: &Route, protocol: IpProtocol, ident: u16, payload: &[u8]) -> Vec<u8> {
    let header = if route.is_ipv6() {
        IpHeader::V6(route.ipv6(protocol, payload.len()), None)
    } else {
        IpHeader::V4(route.ipv4(protocol, ident, payload.len()))
    };
    ip_part(route, header, payload)
}

/// `payload` as fragments of at most `mtu`-byte packets: IPv4's (RFC 791) or, with a
/// Fragment header, IPv6's (RFC 8200 §4.5); every piece but the last carries a multiple
/// of 8 bytes and "more fragments". `None` if `mtu` leaves no room for 8 bytes of data
/// or the payload exceeds what one datagram can hold. IPv4 takes the low 16 bits of
/// `ident`.
pub fn ip_fragments(
    route: &Route,
    protocol: IpProtocol,
    ident: u32,
    payload: &[u8],
    mtu: usize,
) -> Option<Vec<Vec<u8>>> {
    let v6 = route.is_ipv6();
    let header_len = route.ip_header_len() + if v6 { ipv6::FRAGMENT_HEADER_LEN } else { 0 };
    let piece = mtu.checked_sub(header_len)? / 8 * 8;
    let most = if v6 {
        usize::from(u16::MAX)
    } else {
        usize::from(u16::MAX) - ipv4::HEADER_LEN
    };
    if piece == 0 || payload.len() > most {
        return None;
    }
    let count = payload.len().div_ceil(piece);
    let frames = payload
        .chunks(piece)
        .enumerate()
        .map(|(i, part)| {
            let more_frags = i + 1 < count;
            // Below 65536: the whole payload fits one datagram.
            let frag_offset = (i * piece) as u16;
            let header = if v6 {
                let fragment = ipv6::FragmentRepr {
                    next_header: protocol,
                    frag_offset,
                    more_frags,
                    ident,
                };
                let len = ipv6::FRAGMENT_HEADER_LEN + part.len();
                IpHeader::V6(route.ipv6(IpProtocol::IPV6_FRAGMENT, len), Some(fragment))
            } else {
                IpHeader::V4(ipv4::Repr {
                    more_frags,
                    frag_offset,
                    ..route.ipv4(protocol, ident as u16, part.len())
                })
            };
            ip_part(route, header, part)
        })
        .collect();
    Some(frames)
}

/// The header of one packet (or fragment) [`ip_part`] writes.
enum IpHeader {
    V4(ipv4::Repr),
    /// With the Fragment header of a fragment.
    V6(ipv6::Repr, Option<ipv6::FragmentRepr>),
}

/// One IP packet (or fragment) with `header` in a padded frame.
fn ip_part(route: &Route, header: IpHeader, payload: &[u8]) -> Vec<u8> {
    let (ethertype, header_len) = match &header {
        IpHeader::V4(_) => (EtherType::IPV4, ipv4::HEADER_LEN),
        IpHeader::V6(_, None) => (EtherType::IPV6, ipv6::HEADER_LEN),
        IpHeader::V6(_, Some(_)) => (
            EtherType::IPV6,
            ipv6::HEADER_LEN + ipv6::FRAGMENT_HEADER_LEN,
        ),
    };
    let total = header_len + payload.len();
    let mut f = vec![0u8; (ethernet::HEADER_LEN + total).max(MIN_FRAME_LEN)];
    write_header(&mut f, route.dst_mac, route.src_mac, ethertype);
    let ip = &mut f[ethernet::HEADER_LEN..];
    match header {
        IpHeader::V4(h) => {
            debug_assert!(total <= usize::from(u16::MAX), "one packet's worth");
            h.emit(&mut ipv4::Packet::new_unchecked(&mut *ip));
        }
        IpHeader::V6(h, fragment) => {
            h.emit(&mut ipv6::Packet::new_unchecked(&mut *ip));
            if let Some(fragment) = fragment {
                fragment.emit(&mut ip[ipv6::HEADER_LEN..]);
            }
        }
    }
    ip[header_len..total].copy_from_slice(payload);
    f
}

/// A UDP header and `data`, checksummed for the pseudo-header of `route`. Data longer
/// than a datagram holds saturates the length field (and is then too big for
/// [`ip_fragments`] anyway).
pub fn udp_datagram(route: &Route, src_port: u16, dst_port: u16, data: &[u8]) -> Vec<u8> {
    let mut u = vec![0u8; udp::HEADER_LEN + data.len()];
    u[udp::HEADER_LEN..].copy_from_slice(data);
    let mut p = udp::Packet::new_unchecked(&mut u[..]);
    p.set_src_port(src_port);
    p.set_dst_port(dst_port);
    p.set_len(u16::try_from(udp::HEADER_LEN + data.len()).unwrap_or(u16::MAX));
    p.fill_checksum(&route.src, &route.dst);
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
    p.fill_checksum(&route.src, &route.dst);
    t
}

/// Writes the Ethernet, IP and TCP headers (`header` without options) of `frame`,
/// whose data is already at the route's [`Route::tcp_data_offset`], built for
/// offloading: the TCP checksum field holds only the folded pseudo-header sum, to be
/// completed over the segment (or each segment cut from it) by whoever delivers it.
/// `frame` must be at least that offset and at most [`TCP_MAX_DATA`] bytes longer.
pub fn tcp_headers_in_place(frame: &mut [u8], route: &Route, header: &tcp::Repr, ident: u16) {
    debug_assert_eq!(header.header_len(), tcp::HEADER_LEN, "no options here");
    let ip_len = route.ip_header_len();
    let tcp_len = frame.len() - ethernet::HEADER_LEN - ip_len;
    let data_at = route.tcp_data_offset();
    let headers = &mut frame[ethernet::HEADER_LEN..data_at];
    let (ip, segment) = headers.split_at_mut(ip_len);
    // Below 65536: the frame holds at most TCP_MAX_DATA bytes of data.
    let pseudo = match (route.src, route.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            route
                .ipv4(IpProtocol::TCP, ident, tcp_len)
                .emit(&mut ipv4::Packet::new_unchecked(ip));
            checksum::pseudo_header_v4(src, dst, IpProtocol::TCP, tcp_len as u16)
        }
        (src, dst) => {
            route
                .ipv6(IpProtocol::TCP, tcp_len)
                .emit(&mut ipv6::Packet::new_unchecked(ip));
            checksum::pseudo_header(&src, &dst, IpProtocol::TCP, tcp_len as u32)
        }
    };
    let mut t = tcp::Packet::new_unchecked(segment);
    header.emit(&mut t);
    t.set_checksum(checksum::fold(pseudo));
    let ethertype = if route.is_ipv6() {
        EtherType::IPV6
    } else {
        EtherType::IPV4
    };
    write_header(frame, route.dst_mac, route.src_mac, ethertype);
}

/// The offload metadata of a frame from [`tcp_headers_in_place`] on `route` carrying
/// `len` bytes of data: complete the TCP checksum and, above `mss` bytes, cut into
/// `mss`-byte segments.
pub fn tcp_offload(route: &Route, len: usize, mss: usize) -> VirtioNetHdr {
    let gso = len > mss;
    let gso_type = match (gso, route.is_ipv6()) {
        (false, _) => VirtioNetHdr::GSO_NONE,
        (true, false) => VirtioNetHdr::GSO_TCPV4,
        (true, true) => VirtioNetHdr::GSO_TCPV6,
    };
    VirtioNetHdr {
        flags: VirtioNetHdr::F_NEEDS_CSUM,
        gso_type,
        hdr_len: route.tcp_data_offset() as u16,
        gso_size: if gso { mss as u16 } else { 0 },
        csum_start: (ethernet::HEADER_LEN + route.ip_header_len()) as u16,
        csum_offset: tcp::CHECKSUM_OFFSET as u16,
    }
}

/// An ICMP message as bytes, checksum filled in.
pub fn icmp_message(repr: &icmpv4::Repr<'_>) -> Vec<u8> {
    let mut m = vec![0u8; repr.buffer_len()];
    repr.emit(&mut icmpv4::Packet::new_unchecked(&mut m[..]));
    m
}

/// An ICMPv6 message for `route` as bytes, checksum filled in.
pub fn icmpv6_message(route: &Route, repr: &icmpv6::Repr<'_>) -> Vec<u8> {
    let (src, dst) = route.v6();
    let mut m = vec![0u8; repr.buffer_len()];
    repr.emit(&src, &dst, &mut icmpv6::Packet::new_unchecked(&mut m[..]));
    m
}

/// An echo request or reply on `route`, in its family's ICMP, checksum filled in.
pub fn echo(route: &Route, echo: &Echo<'_>) -> Vec<u8> {
    let Echo {
        reply,
        ident,
        seq_no,
        data,
    } = *echo;
    if route.is_ipv6() {
        let repr = if reply {
            icmpv6::Repr::EchoReply {
                ident,
                seq_no,
                data,
            }
        } else {
            icmpv6::Repr::EchoRequest {
                ident,
                seq_no,
                data,
            }
        };
        icmpv6_message(route, &repr)
    } else if reply {
        icmp_message(&icmpv4::Repr::EchoReply {
            ident,
            seq_no,
            data,
        })
    } else {
        icmp_message(&icmpv4::Repr::EchoRequest {
            ident,
            seq_no,
            data,
        })
    }
}

/// An echo request or reply (a guest's, or what a ping socket returns, header
/// included) in ICMP (IPv4, whose checksum must be right) or ICMPv6 (its checksum
/// covers a pseudo-header: the caller checks a guest's; a ping socket's kernel checked
/// its own); other messages are `None`.
pub fn read_echo(message: &[u8], v6: bool) -> Option<Echo<'_>> {
    if v6 {
        let p = icmpv6::Packet::new_checked(message).ok()?;
        let reply = match p.msg_type() {
            icmpv6::Message::ECHO_REQUEST => false,
            icmpv6::Message::ECHO_REPLY => true,
            _ => return None,
        };
        return Some(Echo {
            reply,
            ident: p.echo_ident(),
            seq_no: p.echo_seq_no(),
            data: message.get(icmpv6::HEADER_LEN..)?,
        });
    }
    let p = icmpv4::Packet::new_checked(message).ok()?;
    if !p.verify_checksum() {
        return None;
    }
    match icmpv4::Repr::parse(&p).ok()? {
        icmpv4::Repr::EchoRequest {
            ident,
            seq_no,
            data,
        } => Some(Echo {
            reply: false,
            ident,
            seq_no,
            data,
        }),
        icmpv4::Repr::EchoReply {
            ident,
            seq_no,
            data,
        } => Some(Echo {
            reply: true,
            ident,
            seq_no,
            data,
        }),
        _ => None,
    }
}

/// ICMP destination unreachable `why` about `packet` (the whole IP packet it answers,
/// header first), from `route.src` to `route.dst`: IPv4 quotes its header and the
/// first 8 bytes of its payload (RFC 792), IPv6 as much as fits the minimum MTU (RFC
/// 4443 §2.4). Returns the protocol and the message.
pub fn unreachable(route: &Route, why: Unreachable, packet: &[u8]) -> (IpProtocol, Vec<u8>) {
    if route.is_ipv6() {
        let room = IPV6_MIN_MTU - ipv6::HEADER_LEN - icmpv6::HEADER_LEN;
        let invoking = &packet[..packet.len().min(room)];
        let code = match why {
            Unreachable::Host => 0,
            Unreachable::AdminProhibited => 1,
            Unreachable::Port => 4,
            Unreachable::Protocol => {
                // Parameter problem, unrecognized next header: the fixed header's.
                let m = icmpv6::Repr::ParamProblem {
                    code: 1,
                    pointer: 6,
                    invoking,
                };
                return (IpProtocol::ICMPV6, icmpv6_message(route, &m));
            }
        };
        let m = icmpv6::Repr::DstUnreachable { code, invoking };
        return (IpProtocol::ICMPV6, icmpv6_message(route, &m));
    }
    let header_len = packet.first().map_or(0, |b| usize::from(b & 0xf) * 4);
    let quoted = (header_len + 8).min(packet.len());
    let code = match why {
        Unreachable::Host => icmpv4::Unreachable::HOST,
        Unreachable::Port => icmpv4::Unreachable::PORT,
        Unreachable::Protocol => icmpv4::Unreachable::PROTOCOL,
        Unreachable::AdminProhibited => icmpv4::Unreachable::ADMIN_PROHIBITED,
    };
    let m = icmp_message(&icmpv4::Repr::DstUnreachable {
        code,
        next_hop_mtu: 0,
        invoking: &packet[..quoted],
    });
    (IpProtocol::ICMP, m)
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
            src: Ipv4Addr::new(10, 0, 0, 5).into(),
            dst: Ipv4Addr::new(192, 0, 2, 1).into(),
        }
    }

    fn route6() -> Route {
        Route {
            src: "fd00:1:2:3::5".parse().unwrap(),
            dst: "2001:db8::1".parse().unwrap(),
            ..route()
        }
    }

    /// The IPv4 packet of a frame, header checked.
    fn ip_of(f: &[u8]) -> ipv4::Packet<&[u8]> {
        let ip = ipv4::Packet::new_checked(&f[ethernet::HEADER_LEN..]).unwrap();
        ipv4::Repr::parse(&ip).unwrap();
        ip
    }

    /// The IPv6 packet of a frame, header checked, without padding.
    fn ip6_of(f: &[u8]) -> ipv6::Packet<&[u8]> {
        let ip = ipv6::Packet::new_checked(&f[ethernet::HEADER_LEN..]).unwrap();
        let len = ipv6::Repr::parse(&ip).unwrap().buffer_len();
        ipv6::Packet::new_checked(&f[ethernet::HEADER_LEN..ethernet::HEADER_LEN + len]).unwrap()
    }

    #[test]
    fn a_built_udp_frame_parses_back_and_a_corrupted_one_does_not_verify() {
        for r in [route(), route6()] {
            let mut f = ip_frame(
                &r,
                IpProtocol::UDP,
                7,
                &udp_datagram(&r, 4000, 53, b"hello"),
            );
            let (header, payload) = if r.is_ipv6() {
                assert_eq!(f.len(), 14 + 40 + 8 + 5);
                let ip = ip6_of(&f);
                assert_eq!(
                    (ip.src_addr().into(), ip.dst_addr().into(), ip.next_header()),
                    (r.src, r.dst, IpProtocol::UDP)
                );
                (40, ip.payload().to_vec())
            } else {
                assert_eq!(f.len(), MIN_FRAME_LEN, "padded");
                let ip = ip_of(&f);
                assert_eq!(
                    (
                        ip.src_addr().into(),
                        ip.dst_addr().into(),
                        ip.next_header(),
                        ip.ident()
                    ),
                    (r.src, r.dst, IpProtocol::UDP, 7)
                );
                (20, ip.payload().to_vec())
            };
            let u = udp::Packet::new_checked(&payload[..]).unwrap();
            assert!(u.verify_checksum(&r.src, &r.dst));
            assert_eq!(
                (u.src_port(), u.dst_port(), u.payload()),
                (4000, 53, &b"hello"[..])
            );
            f[ethernet::HEADER_LEN + header + udp::HEADER_LEN + 4] ^= 1;
            let payload = &f[ethernet::HEADER_LEN + header..][..payload.len()];
            let u = udp::Packet::new_checked(payload).unwrap();
            assert!(!u.verify_checksum(&r.src, &r.dst));
        }
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
    fn a_neighbour_solicitation_goes_to_the_solicited_node_group() {
        let (ip, target): (Ipv6Addr, Ipv6Addr) =
            ("fd00::2".parse().unwrap(), "fd00::12:3456".parse().unwrap());
        let f = neighbour_solicitation(A, ip, target);
        assert_eq!(&f[..6], &[0x33, 0x33, 0xff, 0x12, 0x34, 0x56]);
        let p = ip6_of(&f);
        let group: Ipv6Addr = "ff02::1:ff12:3456".parse().unwrap();
        assert_eq!(
            (p.src_addr(), p.dst_addr(), p.hop_limit()),
            (ip, group, 255)
        );
        let m = icmpv6::Packet::new_checked(p.payload()).unwrap();
        assert!(m.verify_checksum(&ip, &group));
        assert_eq!(
            (m.msg_type(), m.target_addr()),
            (icmpv6::Message::NEIGHBOR_SOLICIT, target)
        );
        assert_eq!(m.options(), &[1, 1, 0x52, 0x54, 0, 0, 0, 1], "our MAC");
    }

    #[test]
    fn echoes_round_trip_and_unreachables_quote_8_bytes() {
        let r = route();
        let request = Echo {
            reply: false,
            ident: 0x1234,
            seq_no: 9,
            data: b"abcdefgh",
        };
        let m = echo(&r, &request);
        assert_eq!(read_echo(&m, false), Some(request));
        let mut bad = m.clone();
        bad[9] ^= 1;
        assert_eq!(read_echo(&bad, false), None, "checksum");
        let f = ip_frame(&r, IpProtocol::ICMP, 1, &m);
        let (protocol, u) = unreachable(&r, Unreachable::Port, &f[14..14 + 20 + m.len()]);
        assert_eq!(protocol, IpProtocol::ICMP);
        let p = icmpv4::Packet::new_checked(&u[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!((p.msg_type(), p.msg_code()), (3, 3));
        assert_eq!(p.data(), &f[14..14 + 28], "header and 8 bytes");
        assert_eq!(read_echo(&u, false), None, "not an echo");
    }

    #[test]
    fn icmpv6_echoes_and_errors_carry_their_checksums_and_whole_quotes() {
        let r = route6();
        let (src, dst) = r.v6();
        let reply = Echo {
            reply: true,
            ident: 7,
            seq_no: 3,
            data: b"ping",
        };
        let m = echo(&r, &reply);
        assert!(icmpv6::Packet::new_checked(&m[..])
            .unwrap()
            .verify_checksum(&src, &dst));
        assert_eq!(read_echo(&m, true), Some(reply));
        let packet = vec![0x60; 2000];
        for (why, ty, code) in [
            (Unreachable::Host, 1, 0),
            (Unreachable::AdminProhibited, 1, 1),
            (Unreachable::Port, 1, 4),
            (Unreachable::Protocol, 4, 1),
        ] {
            let (protocol, u) = unreachable(&r, why, &packet);
            assert_eq!(protocol, IpProtocol::ICMPV6);
            assert_eq!(u.len() + 40, IPV6_MIN_MTU, "as much as fits 1280 bytes");
            let p = icmpv6::Packet::new_checked(&u[..]).unwrap();
            assert!(p.verify_checksum(&src, &dst));
            assert_eq!((p.msg_type(), p.msg_code()), (ty, code), "{why:?}");
        }
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
        let f = ip_frame(&r, IpProtocol::TCP, 1, &tcp_segment(&r, &syn_ack(), b"x"));
        let ip = ip_of(&f);
        let t = tcp::Packet::new_checked(ip.payload()).unwrap();
        assert!(t.verify_checksum(&r.src, &r.dst));
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
        for r in [route(), route6()] {
            let h = tcp::Repr {
                flags: tcp::Flags(tcp::Flags::ACK),
                max_seg_size: None,
                window_scale: None,
                ..syn_ack()
            };
            let data: Vec<u8> = (0..3001u32).map(|i| (i * 7) as u8).collect();
            let mut f = vec![0; r.tcp_data_offset()];
            f.extend_from_slice(&data);
            tcp_headers_in_place(&mut f, &r, &h, 5);
            let segment = |f: &[u8]| {
                if r.is_ipv6() {
                    ip6_of(f).payload().to_vec()
                } else {
                    ip_of(f).payload().to_vec()
                }
            };
            let t = segment(&f);
            let t = tcp::Packet::new_checked(&t[..]).unwrap();
            assert!(
                !t.verify_checksum(&r.src, &r.dst),
                "only the pseudo-header sum so far"
            );
            assert_eq!((t.header_len(), t.payload()), (20, &data[..]));
            let offload = tcp_offload(&r, data.len(), 1000);
            let gso = if r.is_ipv6() {
                VirtioNetHdr::GSO_TCPV6
            } else {
                VirtioNetHdr::GSO_TCPV4
            };
            assert_eq!(offload.gso_type, gso);
            complete_checksum(&mut f, &tcp_offload(&r, data.len(), 4000)).unwrap();
            let t = segment(&f);
            let t = tcp::Packet::new_checked(&t[..]).unwrap();
            assert!(t.verify_checksum(&r.src, &r.dst));
            let got = tcp::Repr::parse(&t).unwrap();
            assert_eq!(
                (got.seq_number, got.ack_number, got.window_len, t.payload()),
                (7, 9, 1000, &data[..])
            );
        }
    }

    #[test]
    fn fragments_carry_multiples_of_8_bytes_and_say_where_they_go() {
        let r = route();
        let payload: Vec<u8> = (0..100u8).collect();
        let frames = ip_fragments(&r, IpProtocol::UDP, 9, &payload, 20 + 44).unwrap();
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
            ip_fragments(&r, IpProtocol::UDP, 9, &payload, 27),
            None,
            "no room for 8"
        );
        assert_eq!(
            ip_fragments(&r, IpProtocol::UDP, 9, &vec![0; 65_516], 1500),
            None
        );
    }

    #[test]
    fn ipv6_fragments_carry_a_fragment_header_and_reassemble() {
        let r = route6();
        let payload: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let frames = ip_fragments(&r, IpProtocol::UDP, 0xabcd, &payload, 1280).unwrap();
        // 1280 - 40 - 8 = 1232 bytes of room per piece, a multiple of 8.
        assert_eq!(frames.len(), 3);
        let mut r6 = crate::fragments::Reassembler::default();
        let now = std::time::Instant::now();
        let mut whole = None;
        for (i, f) in frames.iter().enumerate() {
            assert!(f.len() <= 14 + 1280);
            let ip = ip6_of(f);
            assert_eq!(ip.next_header(), IpProtocol::IPV6_FRAGMENT);
            let h = ip
                .ext_headers()
                .next()
                .unwrap()
                .unwrap()
                .fragment()
                .unwrap();
            assert_eq!(
                (h.next_header, h.ident, h.frag_offset, h.more_frags),
                (IpProtocol::UDP, 0xabcd, (i * 1232) as u16, i < 2)
            );
            if let crate::fragments::Reassembly::Complete(d) = r6.add(now, ip.into_inner()) {
                whole = Some(d);
            }
        }
        let whole = whole.expect("reassembled");
        let ip = ipv6::Packet::new_checked(&whole[..]).unwrap();
        assert_eq!(
            (ip.next_header(), ip.payload()),
            (IpProtocol::UDP, &payload[..])
        );
        assert!(ip_fragments(&r, IpProtocol::UDP, 1, &vec![0; 65_536], 1500).is_none());
    }
}
