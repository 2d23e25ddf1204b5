//! What the rules of an ACL look at in one frame, read once with the `wire` views.
//!
//! Every byte string gives some [`Fields`] (never an error, never a panic): what does not
//! parse is simply absent, and a rule that asks about an absent field does not match.
//! - no IP fields when the payload is not a well-formed IPv4 (header checksum not
//!   checked) or IPv6 header;
//! - no L4 fields in a non-first fragment (IPv4 offset ≠ 0, or an IPv6 Fragment header
//!   with offset ≠ 0): such a fragment matches only L2 and L3 fields (addresses and
//!   protocol), never ports or ICMP types, so a port rule neither allows nor drops it;
//! - no L4 fields when the upper-layer header is cut short (fewer than 20 bytes of TCP,
//!   8 of UDP, 8 of ICMP);
//! - an IPv6 packet whose extension headers do not fit has, as protocol, the header the
//!   walk stopped at.

use crate::wire::ipv6::ExtHeaders;
use crate::wire::{icmpv4, icmpv6, ipv4, ipv6, tcp, udp, EtherType, Frame, IpProtocol, MacAddr};

/// An IPv4 or IPv6 address as 128 bits, left-aligned (an IPv4 address in the top 32), so
/// that a prefix of either family is the top `len` bits.
pub type Addr = u128;

/// An IPv4 address as an [`Addr`].
pub fn addr_v4(a: std::net::Ipv4Addr) -> Addr {
    u128::from(u32::from(a)) << 96
}

/// An IPv6 address as an [`Addr`].
pub fn addr_v6(a: std::net::Ipv6Addr) -> Addr {
    u128::from(a)
}

/// The header fields of one frame an ACL rule may match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fields {
    /// The EtherType after the 802.1Q tag, if any.
    pub ethertype: u16,
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    /// The frame's VLAN: its tag's VID, or for an untagged (or priority-tagged) frame
    /// the VLAN the port puts it in, if the caller said.
    pub vlan: Option<u16>,
    pub ip: Option<IpFields>,
}

/// The L3 (and L4) fields of an IPv4 or IPv6 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpFields {
    pub v6: bool,
    pub src: Addr,
    pub dst: Addr,
    /// IPv4 protocol, or the upper-layer header after IPv6's extension headers.
    pub proto: u8,
    pub l4: L4,
}

/// The upper-layer fields, when the packet carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    /// A non-first fragment, a protocol without ports, or a header cut short.
    None,
    /// TCP or UDP; `tcp_flags` is 0 for UDP.
    Ports { src: u16, dst: u16, tcp_flags: u8 },
    /// ICMP or ICMPv6; `echo_id` for echo requests and replies.
    Icmp {
        msg_type: u8,
        code: u8,
        echo: Option<Echo>,
    },
}

/// An ICMP echo's identifier, and whether it is the request or the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Echo {
    pub id: u16,
    pub request: bool,
}

impl Fields {
    /// Reads `bytes`; `untagged_vlan` is the VLAN the port puts untagged frames in.
    /// A frame too short for an Ethernet header gives zero MACs and EtherType 0 (the
    /// switch drops it as a runt anyway).
    pub fn parse(bytes: &[u8], untagged_vlan: Option<u16>) -> Fields {
        let Ok(frame) = Frame::parse(bytes) else {
            return Fields {
                ethertype: 0,
                src_mac: MacAddr::default(),
                dst_mac: MacAddr::default(),
                vlan: untagged_vlan,
                ip: None,
            };
        };
        let ethertype = frame.ethertype();
        let vlan = match frame.vlan_tag() {
            Some(tag) if tag.vid != 0 => Some(tag.vid),
            _ => untagged_vlan,
        };
        let ip = match ethertype {
            EtherType::IPV4 => parse_ipv4(frame.payload()),
            EtherType::IPV6 => parse_ipv6(frame.payload()),
            _ => None,
        };
        Fields {
            ethertype,
            src_mac: frame.src(),
            dst_mac: frame.dst(),
            vlan,
            ip,
        }
    }

    /// The L4 fields, if any.
    pub fn l4(&self) -> L4 {
        self.ip.map_or(L4::None, |ip| ip.l4)
    }
}

fn parse_ipv4(payload: &[u8]) -> Option<IpFields> {
    let p = ipv4::Packet::new_checked(payload).ok()?;
    if p.version() != 4 {
        return None;
    }
    let proto = p.next_header();
    let l4 = if p.frag_offset() != 0 {
        L4::None
    } else {
        parse_l4(proto, p.payload(), false)
    };
    Some(IpFields {
        v6: false,
        src: addr_v4(p.src_addr()),
        dst: addr_v4(p.dst_addr()),
        proto: proto.0,
        l4,
    })
}

fn parse_ipv6(payload: &[u8]) -> Option<IpFields> {
    let p = ipv6::Packet::new_checked(payload).ok()?;
    if p.version() != 6 {
        return None;
    }
    let mut walk = ExtHeaders::new(p.next_header(), p.payload());
    let mut first_piece = true;
    let mut complete = true;
    for h in walk.by_ref() {
        match h {
            Ok(h) => {
                if let Some(frag) = h.fragment() {
                    first_piece &= frag.frag_offset == 0;
                }
            }
            Err(_) => complete = false,
        }
    }
    let proto = walk.next_header();
    let l4 = if first_piece && complete {
        parse_l4(proto, &p.payload()[walk.offset()..], true)
    } else {
        L4::None
    };
    Some(IpFields {
        v6: true,
        src: addr_v6(p.src_addr()),
        dst: addr_v6(p.dst_addr()),
        proto: proto.0,
        l4,
    })
}

/// Only the fixed start of each header is read (no length field is trusted), so the
/// first fragment of a datagram longer than the frame still shows its ports.
fn parse_l4(proto: IpProtocol, l4: &[u8], v6: bool) -> L4 {
    match proto {
        IpProtocol::TCP if l4.len() >= tcp::HEADER_LEN => {
            let t = tcp::Packet::new_unchecked(l4);
            L4::Ports {
                src: t.src_port(),
                dst: t.dst_port(),
                tcp_flags: t.flags().0,
            }
        }
        IpProtocol::UDP if l4.len() >= udp::HEADER_LEN => {
            let u = udp::Packet::new_unchecked(l4);
            L4::Ports {
                src: u.src_port(),
                dst: u.dst_port(),
                tcp_flags: 0,
            }
        }
        IpProtocol::ICMP if !v6 => match icmpv4::Packet::new_checked(l4) {
            Ok(m) => icmp(
                m.msg_type(),
                m.msg_code(),
                m.echo_ident(),
                icmpv4::Message::ECHO_REQUEST,
                icmpv4::Message::ECHO_REPLY,
            ),
            Err(_) => L4::None,
        },
        IpProtocol::ICMPV6 if v6 && l4.len() >= icmpv6::HEADER_LEN => {
            let m = icmpv6::Packet::new_unchecked(l4);
            icmp(
                m.msg_type(),
                m.msg_code(),
                m.echo_ident(),
                icmpv6::Message::ECHO_REQUEST,
                icmpv6::Message::ECHO_REPLY,
            )
        }
        _ => L4::None,
    }
}

fn icmp(msg_type: u8, code: u8, id: u16, request: u8, reply: u8) -> L4 {
    let echo = (msg_type == request || msg_type == reply).then_some(Echo {
        id,
        request: msg_type == request,
    });
    L4::Icmp {
        msg_type,
        code,
        echo,
    }
}
