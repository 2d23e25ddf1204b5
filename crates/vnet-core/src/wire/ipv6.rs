//! IPv6 (RFC 8200): the fixed header, and a walker over the extension headers that
//! finds the upper-layer protocol, its offset, and the Fragment header's fields.
//!
//! ```text
//! 0 ver/tc/flow label  4 payload length  6 next header  7 hop limit  8 src  24 dst
//! 40 extension headers ... upper-layer header ...
//! ```
//!
//! [`Packet::new_checked`] guarantees the 40 bytes and 40 + payload length ≤ buffer, so
//! [`Packet::payload`] (cut at the payload length) is in bounds. Extension headers are
//! walked inside the payload only: [`ExtHeaders`] stops with [`Error::Truncated`] at a
//! header that does not fit, and never panics.

use std::net::Ipv6Addr;

use super::ip::IpProtocol;
use super::{be16, be32, Error, Field, Result};

mod field {
    use super::Field;
    pub const VER_TC_FLOW: Field = 0..4;
    pub const LENGTH: Field = 4..6;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Field = 8..24;
    pub const DST: Field = 24..40;
}

pub const HEADER_LEN: usize = field::DST.end;

/// A view of an IPv6 packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

fn addr(b: &[u8], f: Field) -> Ipv6Addr {
    let mut a = [0; 16];
    a.copy_from_slice(&b[f]);
    Ipv6Addr::from(a)
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// A view whose getters and [`Self::payload`] are in bounds.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Packet { buffer };
        p.check_len()?;
        Ok(p)
    }

    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || HEADER_LEN + usize::from(self.payload_len()) > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }
    pub fn traffic_class(&self) -> u8 {
        (be16(self.buffer.as_ref(), 0) >> 4) as u8
    }
    pub fn flow_label(&self) -> u32 {
        be32(self.buffer.as_ref(), field::VER_TC_FLOW.start) & 0x000f_ffff
    }
    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH.start)
    }
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[field::NXT_HDR])
    }
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }
    pub fn src_addr(&self) -> Ipv6Addr {
        addr(self.buffer.as_ref(), field::SRC)
    }
    pub fn dst_addr(&self) -> Ipv6Addr {
        addr(self.buffer.as_ref(), field::DST)
    }
    /// Everything after the fixed header, up to the payload length.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())]
    }
    /// The extension headers of the payload.
    pub fn ext_headers(&self) -> ExtHeaders<'_> {
        ExtHeaders::new(self.next_header(), self.payload())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version 6, the traffic class and the flow label (its low 20 bits).
    pub fn set_version_tc_flow(&mut self, traffic_class: u8, flow_label: u32) {
        let v = (6 << 28) | (u32::from(traffic_class) << 20) | (flow_label & 0x000f_ffff);
        self.buffer.as_mut()[field::VER_TC_FLOW].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_payload_len(&mut self, v: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_next_header(&mut self, v: IpProtocol) {
        self.buffer.as_mut()[field::NXT_HDR] = v.0;
    }
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = v;
    }
    pub fn set_src_addr(&mut self, a: &Ipv6Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a.octets());
    }
    pub fn set_dst_addr(&mut self, a: &Ipv6Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a.octets());
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

/// The fixed header's meaning (extension headers are walked with [`ExtHeaders`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src_addr: Ipv6Addr,
    pub dst_addr: Ipv6Addr,
    pub next_header: IpProtocol,
    pub payload_len: usize,
    pub hop_limit: u8,
    pub traffic_class: u8,
    pub flow_label: u32,
}

impl Repr {
    /// Refuses a version other than 6 (Malformed).
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Self> {
        p.check_len()?;
        if p.version() != 6 {
            return Err(Error::Malformed);
        }
        Ok(Repr {
            src_addr: p.src_addr(),
            dst_addr: p.dst_addr(),
            next_header: p.next_header(),
            payload_len: usize::from(p.payload_len()),
            hop_limit: p.hop_limit(),
            traffic_class: p.traffic_class(),
            flow_label: p.flow_label(),
        })
    }

    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the 40-byte header; `payload_len` must fit 65535 (no jumbograms).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_version_tc_flow(self.traffic_class, self.flow_label);
        p.set_payload_len(self.payload_len as u16);
        p.set_next_header(self.next_header);
        p.set_hop_limit(self.hop_limit);
        p.set_src_addr(&self.src_addr);
        p.set_dst_addr(&self.dst_addr);
    }
}

/// One extension header found by [`ExtHeaders`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtHeader<'a> {
    /// Which header this is (hop-by-hop, routing, fragment, authentication, dest. options).
    pub kind: IpProtocol,
    /// The header that follows it.
    pub next_header: IpProtocol,
    /// Its offset from the start of the IPv6 payload.
    pub offset: usize,
    /// The whole header, its first two bytes included.
    pub bytes: &'a [u8],
}

impl ExtHeader<'_> {
    /// The Fragment header's fields, if this is one.
    pub fn fragment(&self) -> Option<FragmentRepr> {
        (self.kind == IpProtocol::IPV6_FRAGMENT).then(|| FragmentRepr {
            next_header: self.next_header,
            frag_offset: be16(self.bytes, 2) & !7,
            more_frags: self.bytes[3] & 1 != 0,
            ident: be32(self.bytes, 4),
        })
    }

    /// The routing type and segments left, if this is a Routing header.
    pub fn routing(&self) -> Option<(u8, u8)> {
        (self.kind == IpProtocol::IPV6_ROUTING).then(|| (self.bytes[2], self.bytes[3]))
    }
}

/// Walks the extension headers at the start of an IPv6 payload, in order. When the next
/// header is not an extension header the walk ends, and [`Self::next_header`] /
/// [`Self::offset`] say where the upper layer starts. A header that does not fit yields
/// [`Error::Truncated`] and ends the walk. The walk is bounded by the payload length
/// (every header is at least 8 bytes), so no header count limit is needed to stop it.
#[derive(Debug, Clone)]
pub struct ExtHeaders<'a> {
    payload: &'a [u8],
    next: IpProtocol,
    offset: usize,
    failed: bool,
}

/// Length of a Fragment header.
pub const FRAGMENT_HEADER_LEN: usize = 8;

impl<'a> ExtHeaders<'a> {
    pub fn new(first: IpProtocol, payload: &'a [u8]) -> Self {
        ExtHeaders {
            payload,
            next: first,
            offset: 0,
            failed: false,
        }
    }

    /// The header after the last one walked (the upper layer once the walk is over).
    pub fn next_header(&self) -> IpProtocol {
        self.next
    }

    /// Where [`Self::next_header`] starts, from the start of the payload.
    pub fn offset(&self) -> usize {
        self.offset
    }
}

impl<'a> Iterator for ExtHeaders<'a> {
    type Item = Result<ExtHeader<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || !self.next.is_ipv6_extension() {
            return None;
        }
        let rest = &self.payload[self.offset..];
        let len = match (self.next, rest.get(1)) {
            (_, None) => None,
            (IpProtocol::IPV6_FRAGMENT, _) => Some(FRAGMENT_HEADER_LEN),
            (IpProtocol::AUTH, Some(&l)) => Some((usize::from(l) + 2) * 4),
            (_, Some(&l)) => Some((usize::from(l) + 1) * 8),
        };
        let Some(bytes) = len.and_then(|l| rest.get(..l)) else {
            self.failed = true;
            return Some(Err(Error::Truncated));
        };
        let h = ExtHeader {
            kind: self.next,
            next_header: IpProtocol(bytes[0]),
            offset: self.offset,
            bytes,
        };
        self.next = h.next_header;
        self.offset += bytes.len();
        Some(Ok(h))
    }
}

/// Where the upper layer of an IPv6 packet is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpperLayer {
    pub protocol: IpProtocol,
    /// From the start of the IPv6 payload.
    pub offset: usize,
    /// The Fragment header, if the packet is a fragment (the upper layer then is only
    /// complete in the first fragment).
    pub fragment: Option<FragmentRepr>,
}

/// Walks all extension headers of `p`'s payload.
pub fn upper_layer<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<UpperLayer> {
    let mut walk = p.ext_headers();
    let mut fragment = None;
    for h in walk.by_ref() {
        fragment = h?.fragment().or(fragment);
    }
    Ok(UpperLayer {
        protocol: walk.next_header(),
        offset: walk.offset(),
        fragment,
    })
}

/// The Fragment header (RFC 8200 §4.5): `0 next header  1 reserved  2 offset/M  4 ident`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentRepr {
    pub next_header: IpProtocol,
    /// In bytes (a multiple of 8).
    pub frag_offset: u16,
    pub more_frags: bool,
    pub ident: u32,
}

impl FragmentRepr {
    /// Writes the 8 bytes at the front of `buf` (at least [`FRAGMENT_HEADER_LEN`]).
    pub fn emit(&self, buf: &mut [u8]) {
        buf[0] = self.next_header.0;
        buf[1] = 0;
        let off = (self.frag_offset & !7) | u16::from(self.more_frags);
        buf[2..4].copy_from_slice(&off.to_be_bytes());
        buf[4..8].copy_from_slice(&self.ident.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// fe80::1 → ff02::1, hop-by-hop (router alert, PadN) then a fragment header (offset
    /// 8, M, ident 0x01020304) then UDP, 8 bytes of payload.
    static PACKET: [u8; 64] = [
        0x60, 0x12, 0x34, 0x56, 0x00, 0x18, 0x00, 0xff, //
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, //
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, //
        44, 0, 5, 2, 0, 0, 1, 0, // hop-by-hop: router alert, PadN(0)
        17, 0, 0, 9, 1, 2, 3, 4, // fragment
        1, 2, 3, 4, 5, 6, 7, 8,
    ];

    fn repr() -> Repr {
        Repr {
            src_addr: "fe80::1".parse().unwrap(),
            dst_addr: "ff02::1".parse().unwrap(),
            next_header: IpProtocol::HOP_BY_HOP,
            payload_len: 24,
            hop_limit: 255,
            traffic_class: 0x01,
            flow_label: 0x23456,
        }
    }

    #[test]
    fn deconstruct_and_walk() {
        let p = Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(Repr::parse(&p).unwrap(), repr());
        let hs: Vec<_> = p.ext_headers().map(Result::unwrap).collect();
        assert_eq!(hs.len(), 2);
        assert_eq!(
            (hs[0].kind, hs[1].kind),
            (IpProtocol::HOP_BY_HOP, IpProtocol::IPV6_FRAGMENT)
        );
        let up = upper_layer(&p).unwrap();
        assert_eq!((up.protocol, up.offset), (IpProtocol::UDP, 16));
        assert_eq!(
            up.fragment,
            Some(FragmentRepr {
                next_header: IpProtocol::UDP,
                frag_offset: 8,
                more_frags: true,
                ident: 0x0102_0304
            })
        );
    }

    #[test]
    fn construct() {
        let mut b = [0u8; 64];
        let mut p = Packet::new_unchecked(&mut b[..]);
        repr().emit(&mut p);
        p.payload_mut()[..8].copy_from_slice(&PACKET[40..48]);
        upper_layer(&Packet::new_checked(&PACKET[..]).unwrap())
            .unwrap()
            .fragment
            .unwrap()
            .emit(&mut p.payload_mut()[8..]);
        p.payload_mut()[16..].copy_from_slice(&PACKET[56..]);
        assert_eq!(b, PACKET);
    }

    #[test]
    fn refuses() {
        assert_eq!(
            Packet::new_checked(&PACKET[..39]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            Packet::new_checked(&PACKET[..63]).unwrap_err(),
            Error::Truncated
        );
        let mut b = PACKET;
        b[0] = 0x40;
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&b[..])),
            Err(Error::Malformed)
        );
        let mut b = PACKET;
        b[41] = 3; // a hop-by-hop header longer than the payload
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(upper_layer(&p), Err(Error::Truncated));
        assert_eq!(
            ExtHeaders::new(IpProtocol::HOP_BY_HOP, &[6]).next(),
            Some(Err(Error::Truncated))
        );
        let empty = ExtHeaders::new(IpProtocol::TCP, &[]);
        assert_eq!((empty.clone().count(), empty.offset()), (0, 0));
    }
}
