//! ICMPv6 (RFC 4443) and Neighbor Discovery (RFC 4861) with the NDP options vnet needs:
//! link-layer addresses, prefix information, MTU, and RDNSS/DNSSL (RFC 8106).
//!
//! ```text
//! 0 type  1 code  2 checksum  4 message body ...
//! echo: 4 ident 6 seq 8 data          errors: 4 MTU / pointer / unused  8 invoking packet
//! RS: 8 options   RA: 4 hop limit 5 M/O 6 lifetime 8 reachable 12 retrans 16 options
//! NS: 8 target 24 options              NA: 4 R/S/O 8 target 24 options
//! redirect: 8 target 24 destination 40 options
//! ```
//!
//! [`Packet::new_checked`] guarantees the fixed part of the message its type names, so
//! every getter for that type is in bounds. The checksum covers the IPv6 pseudo-header,
//! so it takes the addresses. NDP validity checks that live in the IPv6 header (hop
//! limit 255) are the caller's; [`Repr::parse`] refuses a non-zero NDP code and
//! malformed options (RFC 4861 §6.1: a zero-length option means drop the packet).

use std::net::Ipv6Addr;

use super::checksum;
use super::ethernet::MacAddr;
use super::ip::IpProtocol;
use super::{be16, be32, Error, Result};

/// ICMPv6 message types.
pub struct Message;

impl Message {
    pub const DST_UNREACHABLE: u8 = 1;
    pub const PACKET_TOO_BIG: u8 = 2;
    pub const TIME_EXCEEDED: u8 = 3;
    pub const PARAM_PROBLEM: u8 = 4;
    pub const ECHO_REQUEST: u8 = 128;
    pub const ECHO_REPLY: u8 = 129;
    pub const ROUTER_SOLICIT: u8 = 133;
    pub const ROUTER_ADVERT: u8 = 134;
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    pub const NEIGHBOR_ADVERT: u8 = 136;
    pub const REDIRECT: u8 = 137;
}

/// Length of the header every message has (type, code, checksum, 4 bytes of body).
pub const HEADER_LEN: usize = 8;

/// Where the options of an NDP message start; `None` for other types.
fn options_offset(msg_type: u8) -> Option<usize> {
    match msg_type {
        Message::ROUTER_SOLICIT => Some(8),
        Message::ROUTER_ADVERT => Some(16),
        Message::NEIGHBOR_SOLICIT | Message::NEIGHBOR_ADVERT => Some(24),
        Message::REDIRECT => Some(40),
        _ => None,
    }
}

/// A view of an ICMPv6 message.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// A view whose getters for its type are in bounds.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Packet { buffer };
        p.check_len()?;
        Ok(p)
    }

    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || len < options_offset(self.msg_type()).unwrap_or(0) {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    pub fn msg_type(&self) -> u8 {
        self.b()[0]
    }
    pub fn msg_code(&self) -> u8 {
        self.b()[1]
    }
    pub fn checksum(&self) -> u16 {
        be16(self.b(), 2)
    }
    pub fn echo_ident(&self) -> u16 {
        be16(self.b(), 4)
    }
    pub fn echo_seq_no(&self) -> u16 {
        be16(self.b(), 6)
    }
    /// Packet Too Big's MTU, Parameter Problem's pointer (bytes 4..8).
    pub fn param(&self) -> u32 {
        be32(self.b(), 4)
    }
    /// Echo data, or the invoking packet quoted by an error.
    pub fn data(&self) -> &[u8] {
        &self.b()[HEADER_LEN..]
    }
    pub fn ra_hop_limit(&self) -> u8 {
        self.b()[4]
    }
    /// RA flags: managed (0x80), other configuration (0x40).
    pub fn ra_flags(&self) -> u8 {
        self.b()[5]
    }
    pub fn ra_router_lifetime(&self) -> u16 {
        be16(self.b(), 6)
    }
    pub fn ra_reachable_time(&self) -> u32 {
        be32(self.b(), 8)
    }
    pub fn ra_retrans_time(&self) -> u32 {
        be32(self.b(), 12)
    }
    /// NA flags: router (0x80), solicited (0x40), override (0x20).
    pub fn na_flags(&self) -> u8 {
        self.b()[4]
    }
    /// The target of an NS or NA.
    pub fn target_addr(&self) -> Ipv6Addr {
        let mut a = [0; 16];
        a.copy_from_slice(&self.b()[8..24]);
        Ipv6Addr::from(a)
    }
    /// The NDP options (empty for other types).
    pub fn options(&self) -> &[u8] {
        match options_offset(self.msg_type()) {
            Some(at) => &self.b()[at..],
            None => &[],
        }
    }
    pub fn verify_checksum(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        let b = self.b();
        let pseudo = checksum::pseudo_header_v6(src, dst, IpProtocol::ICMPV6, b.len() as u32);
        checksum::checksum(checksum::sum(pseudo, b)) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn m(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }
    pub fn set_msg_type(&mut self, v: u8) {
        self.m()[0] = v;
    }
    pub fn set_msg_code(&mut self, v: u8) {
        self.m()[1] = v;
    }
    pub fn set_checksum(&mut self, v: u16) {
        self.m()[2..4].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_echo_ident(&mut self, v: u16) {
        self.m()[4..6].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_echo_seq_no(&mut self, v: u16) {
        self.m()[6..8].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_param(&mut self, v: u32) {
        self.m()[4..8].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_ra_hop_limit(&mut self, v: u8) {
        self.m()[4] = v;
    }
    pub fn set_ra_flags(&mut self, v: u8) {
        self.m()[5] = v;
    }
    pub fn set_ra_router_lifetime(&mut self, v: u16) {
        self.m()[6..8].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_ra_reachable_time(&mut self, v: u32) {
        self.m()[8..12].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_ra_retrans_time(&mut self, v: u32) {
        self.m()[12..16].copy_from_slice(&v.to_be_bytes());
    }
    /// Sets the NA flags byte and zeroes the reserved bytes after it.
    pub fn set_na_flags(&mut self, v: u8) {
        self.m()[4..8].copy_from_slice(&[v, 0, 0, 0]);
    }
    pub fn set_target_addr(&mut self, a: &Ipv6Addr) {
        self.m()[8..24].copy_from_slice(&a.octets());
    }
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.m()[HEADER_LEN..]
    }
    pub fn options_mut(&mut self) -> &mut [u8] {
        match options_offset(self.msg_type()) {
            Some(at) => &mut self.m()[at..],
            None => &mut [],
        }
    }
    /// Computes and stores the checksum over the pseudo-header and the whole buffer.
    pub fn fill_checksum(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.set_checksum(0);
        let b = self.buffer.as_ref();
        let pseudo = checksum::pseudo_header_v6(src, dst, IpProtocol::ICMPV6, b.len() as u32);
        let c = checksum::checksum(checksum::sum(pseudo, b));
        self.set_checksum(c);
    }
}

/// NDP option types.
pub struct NdiscOptionType;

impl NdiscOptionType {
    pub const SOURCE_LL_ADDR: u8 = 1;
    pub const TARGET_LL_ADDR: u8 = 2;
    pub const PREFIX_INFO: u8 = 3;
    pub const MTU: u8 = 5;
    pub const RDNSS: u8 = 25;
    pub const DNSSL: u8 = 31;
}

/// The Prefix Information option (RFC 4861 §4.6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixInfo {
    pub prefix_len: u8,
    /// L: the prefix is on-link.
    pub on_link: bool,
    /// A: usable for SLAAC.
    pub autonomous: bool,
    pub valid_lifetime: u32,
    pub preferred_lifetime: u32,
    pub prefix: Ipv6Addr,
}

/// One NDP option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NdiscOption<'a> {
    /// Ethernet only: an option of another length is `Unknown`.
    SourceLinkLayerAddr(MacAddr),
    TargetLinkLayerAddr(MacAddr),
    PrefixInformation(PrefixInfo),
    Mtu(u32),
    /// Recursive DNS servers: `addresses` is a multiple of 16 bytes (see
    /// [`NdiscOption::rdnss_addresses`]).
    Rdnss {
        lifetime: u32,
        addresses: &'a [u8],
    },
    /// DNS search list: `names` in DNS wire format, possibly zero-padded (see
    /// [`DomainNames`] and [`encode_domain_names`]).
    Dnssl {
        lifetime: u32,
        names: &'a [u8],
    },
    /// Any other option; `data` follows the type and length bytes.
    Unknown {
        kind: u8,
        data: &'a [u8],
    },
}

impl<'a> NdiscOption<'a> {
    /// The RDNSS addresses (none for other options).
    pub fn rdnss_addresses(&self) -> impl Iterator<Item = Ipv6Addr> + 'a {
        let addresses: &'a [u8] = match *self {
            NdiscOption::Rdnss { addresses, .. } => addresses,
            _ => &[],
        };
        addresses.chunks_exact(16).map(|c| {
            let mut a = [0; 16];
            a.copy_from_slice(c);
            Ipv6Addr::from(a)
        })
    }

    /// Length on the wire: a multiple of 8.
    pub fn buffer_len(&self) -> usize {
        let body = match self {
            NdiscOption::SourceLinkLayerAddr(_) | NdiscOption::TargetLinkLayerAddr(_) => 6,
            NdiscOption::PrefixInformation(_) => 30,
            NdiscOption::Mtu(_) => 6,
            NdiscOption::Rdnss { addresses, .. } => 6 + addresses.len(),
            NdiscOption::Dnssl { names, .. } => 6 + names.len(),
            NdiscOption::Unknown { data, .. } => data.len(),
        };
        (2 + body).div_ceil(8) * 8
    }

    /// Writes the option (zero-padded to [`Self::buffer_len`]) at the front of `buf` and
    /// returns the rest. An option longer than 2040 bytes is a caller bug.
    pub fn emit<'b>(&self, buf: &'b mut [u8]) -> &'b mut [u8] {
        let len = self.buffer_len();
        let (b, rest) = buf.split_at_mut(len);
        b.fill(0);
        b[1] = (len / 8) as u8;
        match *self {
            NdiscOption::SourceLinkLayerAddr(m) | NdiscOption::TargetLinkLayerAddr(m) => {
                b[0] = if matches!(self, NdiscOption::SourceLinkLayerAddr(_)) {
                    NdiscOptionType::SOURCE_LL_ADDR
                } else {
                    NdiscOptionType::TARGET_LL_ADDR
                };
                b[2..8].copy_from_slice(&m.0);
            }
            NdiscOption::PrefixInformation(p) => {
                b[0] = NdiscOptionType::PREFIX_INFO;
                b[2] = p.prefix_len;
                b[3] = (u8::from(p.on_link) << 7) | (u8::from(p.autonomous) << 6);
                b[4..8].copy_from_slice(&p.valid_lifetime.to_be_bytes());
                b[8..12].copy_from_slice(&p.preferred_lifetime.to_be_bytes());
                b[16..32].copy_from_slice(&p.prefix.octets());
            }
            NdiscOption::Mtu(mtu) => {
                b[0] = NdiscOptionType::MTU;
                b[4..8].copy_from_slice(&mtu.to_be_bytes());
            }
            NdiscOption::Rdnss {
                lifetime,
                addresses: d,
            }
            | NdiscOption::Dnssl { lifetime, names: d } => {
                b[0] = if matches!(self, NdiscOption::Rdnss { .. }) {
                    NdiscOptionType::RDNSS
                } else {
                    NdiscOptionType::DNSSL
                };
                b[4..8].copy_from_slice(&lifetime.to_be_bytes());
                b[8..8 + d.len()].copy_from_slice(d);
            }
            NdiscOption::Unknown { kind, data } => {
                b[0] = kind;
                b[2..2 + data.len()].copy_from_slice(data);
            }
        }
        rest
    }
}

/// Iterates over NDP options. A zero length or a known option of the wrong length yields
/// [`Error::Malformed`], an option past the end [`Error::Truncated`]; either ends it.
#[derive(Debug, Clone)]
pub struct NdiscOptions<'a> {
    rest: &'a [u8],
}

impl<'a> NdiscOptions<'a> {
    pub fn new(options: &'a [u8]) -> Self {
        NdiscOptions { rest: options }
    }

    fn fail(&mut self, e: Error) -> Option<Result<NdiscOption<'a>>> {
        self.rest = &[];
        Some(Err(e))
    }
}

impl<'a> Iterator for NdiscOptions<'a> {
    type Item = Result<NdiscOption<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let Some(&units) = self.rest.get(1) else {
            return self.fail(Error::Truncated);
        };
        let len = usize::from(units) * 8;
        if len == 0 {
            return self.fail(Error::Malformed);
        }
        if len > self.rest.len() {
            return self.fail(Error::Truncated);
        }
        let (o, rest) = self.rest.split_at(len);
        self.rest = rest;
        let mac = || MacAddr([o[2], o[3], o[4], o[5], o[6], o[7]]);
        let opt = match (o[0], units) {
            (NdiscOptionType::SOURCE_LL_ADDR, 1) => NdiscOption::SourceLinkLayerAddr(mac()),
            (NdiscOptionType::TARGET_LL_ADDR, 1) => NdiscOption::TargetLinkLayerAddr(mac()),
            (NdiscOptionType::PREFIX_INFO, 4) => {
                let mut prefix = [0; 16];
                prefix.copy_from_slice(&o[16..32]);
                NdiscOption::PrefixInformation(PrefixInfo {
                    prefix_len: o[2],
                    on_link: o[3] & 0x80 != 0,
                    autonomous: o[3] & 0x40 != 0,
                    valid_lifetime: be32(o, 4),
                    preferred_lifetime: be32(o, 8),
                    prefix: Ipv6Addr::from(prefix),
                })
            }
            (NdiscOptionType::MTU, 1) => NdiscOption::Mtu(be32(o, 4)),
            (NdiscOptionType::RDNSS, u) if u >= 3 && u % 2 == 1 => NdiscOption::Rdnss {
                lifetime: be32(o, 4),
                addresses: &o[8..],
            },
            (NdiscOptionType::DNSSL, u) if u >= 2 => NdiscOption::Dnssl {
                lifetime: be32(o, 4),
                names: &o[8..],
            },
            (
                NdiscOptionType::PREFIX_INFO
                | NdiscOptionType::MTU
                | NdiscOptionType::RDNSS
                | NdiscOptionType::DNSSL,
                _,
            ) => return self.fail(Error::Malformed),
            (kind, _) => NdiscOption::Unknown {
                kind,
                data: &o[2..],
            },
        };
        Some(Ok(opt))
    }
}

/// Decodes the names of a DNSSL option: uncompressed DNS wire format (RFC 8106 §5.2),
/// ending at the trailing zero padding. A label over 63 bytes, non-ASCII, or a name
/// running past the end (without its root label) yields [`Error::Malformed`] and ends it.
#[derive(Debug, Clone)]
pub struct DomainNames<'a> {
    rest: &'a [u8],
}

impl<'a> DomainNames<'a> {
    pub fn new(names: &'a [u8]) -> Self {
        DomainNames { rest: names }
    }
}

impl Iterator for DomainNames<'_> {
    type Item = Result<String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.iter().all(|&b| b == 0) {
            return None;
        }
        let mut name = String::new();
        let mut rest = self.rest;
        self.rest = &[];
        loop {
            let Some((&l, after)) = rest.split_first() else {
                return Some(Err(Error::Malformed));
            };
            let l = usize::from(l);
            if l == 0 {
                self.rest = after;
                return Some(Ok(name));
            }
            match after.get(..l) {
                Some(label) if l <= 63 && label.is_ascii() => {
                    if !name.is_empty() {
                        name.push('.');
                    }
                    name.extend(label.iter().map(|&c| char::from(c)));
                    rest = &after[l..];
                }
                _ => return Some(Err(Error::Malformed)),
            }
        }
    }
}

/// Appends `names` in DNS wire format (for [`NdiscOption::Dnssl`]; the option pads it).
/// Refuses ([`Error::Malformed`]) an empty or non-ASCII label, or one over 63 bytes.
pub fn encode_domain_names(names: &[&str], out: &mut Vec<u8>) -> Result<()> {
    for name in names {
        for label in name.strip_suffix('.').unwrap_or(name).split('.') {
            if label.is_empty() || label.len() > 63 || !label.is_ascii() {
                return Err(Error::Malformed);
            }
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
    }
    Ok(())
}

/// An NDP message's meaning; `options` are the raw option bytes (validated by
/// [`Repr::parse`]; walk them with [`NdiscOptions`], build them with
/// [`NdiscOption::emit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NdiscRepr<'a> {
    RouterSolicit {
        options: &'a [u8],
    },
    RouterAdvert {
        hop_limit: u8,
        managed: bool,
        other: bool,
        router_lifetime: u16,
        reachable_time: u32,
        retrans_time: u32,
        options: &'a [u8],
    },
    NeighborSolicit {
        target: Ipv6Addr,
        options: &'a [u8],
    },
    NeighborAdvert {
        router: bool,
        solicited: bool,
        override_: bool,
        target: Ipv6Addr,
        options: &'a [u8],
    },
}

/// An ICMPv6 message's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repr<'a> {
    DstUnreachable {
        code: u8,
        invoking: &'a [u8],
    },
    PacketTooBig {
        mtu: u32,
        invoking: &'a [u8],
    },
    TimeExceeded {
        code: u8,
        invoking: &'a [u8],
    },
    ParamProblem {
        code: u8,
        pointer: u32,
        invoking: &'a [u8],
    },
    EchoRequest {
        ident: u16,
        seq_no: u16,
        data: &'a [u8],
    },
    EchoReply {
        ident: u16,
        seq_no: u16,
        data: &'a [u8],
    },
    Ndisc(NdiscRepr<'a>),
}

impl<'a> Repr<'a> {
    /// Reads a message of a modelled type (others: [`Error::Unrecognized`]). The checksum
    /// is not checked here ([`Packet::verify_checksum`]).
    pub fn parse<T: AsRef<[u8]> + ?Sized>(p: &'a Packet<&'a T>) -> Result<Self> {
        p.check_len()?;
        let b: &'a [u8] = p.buffer.as_ref();
        let data = &b[HEADER_LEN..];
        let code = p.msg_code();
        let ndisc = |r: NdiscRepr<'a>| -> Result<Repr<'a>> {
            if code != 0 {
                return Err(Error::Malformed);
            }
            for o in NdiscOptions::new(p.options()) {
                o?;
            }
            Ok(Repr::Ndisc(r))
        };
        let options = options_offset(p.msg_type()).map_or(&b[..0], |at| &b[at..]);
        match p.msg_type() {
            Message::DST_UNREACHABLE => Ok(Repr::DstUnreachable {
                code,
                invoking: data,
            }),
            Message::PACKET_TOO_BIG => Ok(Repr::PacketTooBig {
                mtu: p.param(),
                invoking: data,
            }),
            Message::TIME_EXCEEDED => Ok(Repr::TimeExceeded {
                code,
                invoking: data,
            }),
            Message::PARAM_PROBLEM => Ok(Repr::ParamProblem {
                code,
                pointer: p.param(),
                invoking: data,
            }),
            Message::ECHO_REQUEST => Ok(Repr::EchoRequest {
                ident: p.echo_ident(),
                seq_no: p.echo_seq_no(),
                data,
            }),
            Message::ECHO_REPLY => Ok(Repr::EchoReply {
                ident: p.echo_ident(),
                seq_no: p.echo_seq_no(),
                data,
            }),
            Message::ROUTER_SOLICIT => ndisc(NdiscRepr::RouterSolicit { options }),
            Message::ROUTER_ADVERT => ndisc(NdiscRepr::RouterAdvert {
                hop_limit: p.ra_hop_limit(),
                managed: p.ra_flags() & 0x80 != 0,
                other: p.ra_flags() & 0x40 != 0,
                router_lifetime: p.ra_router_lifetime(),
                reachable_time: p.ra_reachable_time(),
                retrans_time: p.ra_retrans_time(),
                options,
            }),
            Message::NEIGHBOR_SOLICIT => ndisc(NdiscRepr::NeighborSolicit {
                target: p.target_addr(),
                options,
            }),
            Message::NEIGHBOR_ADVERT => ndisc(NdiscRepr::NeighborAdvert {
                router: p.na_flags() & 0x80 != 0,
                solicited: p.na_flags() & 0x40 != 0,
                override_: p.na_flags() & 0x20 != 0,
                target: p.target_addr(),
                options,
            }),
            _ => Err(Error::Unrecognized),
        }
    }

    fn msg_type(&self) -> u8 {
        match self {
            Repr::DstUnreachable { .. } => Message::DST_UNREACHABLE,
            Repr::PacketTooBig { .. } => Message::PACKET_TOO_BIG,
            Repr::TimeExceeded { .. } => Message::TIME_EXCEEDED,
            Repr::ParamProblem { .. } => Message::PARAM_PROBLEM,
            Repr::EchoRequest { .. } => Message::ECHO_REQUEST,
            Repr::EchoReply { .. } => Message::ECHO_REPLY,
            Repr::Ndisc(NdiscRepr::RouterSolicit { .. }) => Message::ROUTER_SOLICIT,
            Repr::Ndisc(NdiscRepr::RouterAdvert { .. }) => Message::ROUTER_ADVERT,
            Repr::Ndisc(NdiscRepr::NeighborSolicit { .. }) => Message::NEIGHBOR_SOLICIT,
            Repr::Ndisc(NdiscRepr::NeighborAdvert { .. }) => Message::NEIGHBOR_ADVERT,
        }
    }

    /// The bytes after the fixed part: data, invoking packet or options.
    fn tail(&self) -> &'a [u8] {
        match *self {
            Repr::DstUnreachable { invoking, .. }
            | Repr::PacketTooBig { invoking, .. }
            | Repr::TimeExceeded { invoking, .. }
            | Repr::ParamProblem { invoking, .. } => invoking,
            Repr::EchoRequest { data, .. } | Repr::EchoReply { data, .. } => data,
            Repr::Ndisc(
                NdiscRepr::RouterSolicit { options }
                | NdiscRepr::RouterAdvert { options, .. }
                | NdiscRepr::NeighborSolicit { options, .. }
                | NdiscRepr::NeighborAdvert { options, .. },
            ) => options,
        }
    }

    pub fn buffer_len(&self) -> usize {
        options_offset(self.msg_type()).unwrap_or(HEADER_LEN) + self.tail().len()
    }

    /// Writes the whole message with its checksum for `src` → `dst`; the buffer must be
    /// exactly [`Self::buffer_len`] bytes (the checksum covers all of it).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        src: &Ipv6Addr,
        dst: &Ipv6Addr,
        p: &mut Packet<T>,
    ) {
        let ty = self.msg_type();
        p.set_msg_type(ty);
        let code = match *self {
            Repr::DstUnreachable { code, .. } | Repr::TimeExceeded { code, .. } => {
                p.set_param(0);
                code
            }
            Repr::PacketTooBig { mtu, .. } => {
                p.set_param(mtu);
                0
            }
            Repr::ParamProblem { code, pointer, .. } => {
                p.set_param(pointer);
                code
            }
            Repr::EchoRequest { ident, seq_no, .. } | Repr::EchoReply { ident, seq_no, .. } => {
                p.set_echo_ident(ident);
                p.set_echo_seq_no(seq_no);
                0
            }
            Repr::Ndisc(NdiscRepr::RouterSolicit { .. }) => {
                p.set_param(0);
                0
            }
            Repr::Ndisc(NdiscRepr::RouterAdvert {
                hop_limit,
                managed,
                other,
                router_lifetime,
                reachable_time,
                retrans_time,
                ..
            }) => {
                p.set_ra_hop_limit(hop_limit);
                p.set_ra_flags((u8::from(managed) << 7) | (u8::from(other) << 6));
                p.set_ra_router_lifetime(router_lifetime);
                p.set_ra_reachable_time(reachable_time);
                p.set_ra_retrans_time(retrans_time);
                0
            }
            Repr::Ndisc(NdiscRepr::NeighborSolicit { target, .. }) => {
                p.set_param(0);
                p.set_target_addr(&target);
                0
            }
            Repr::Ndisc(NdiscRepr::NeighborAdvert {
                router,
                solicited,
                override_,
                target,
                ..
            }) => {
                let f = (u8::from(router) << 7)
                    | (u8::from(solicited) << 6)
                    | (u8::from(override_) << 5);
                p.set_na_flags(f);
                p.set_target_addr(&target);
                0
            }
        };
        p.set_msg_code(code);
        let at = options_offset(ty).unwrap_or(HEADER_LEN);
        let tail = self.tail();
        p.m()[at..at + tail.len()].copy_from_slice(tail);
        p.fill_checksum(src, dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
    const DST: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

    /// A router advertisement fe80::1 → ff02::1 as radvd sends it: hop limit 64, router
    /// lifetime 1800 s; source link-layer address 52:54:00:12:34:56, MTU 1500, prefix
    /// fd00::/64 (L, A, valid 86400 s, preferred 14400 s), RDNSS fd00::1 and DNSSL
    /// "vnet.test" (both 600 s).
    static RA: [u8; 112] = [
        134, 0, 0xcf, 0x33, 64, 0x00, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, //
        1, 1, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, //
        5, 1, 0, 0, 0, 0, 0x05, 0xdc, //
        3, 4, 64, 0xc0, 0x00, 0x01, 0x51, 0x80, 0x00, 0x00, 0x38, 0x40, 0, 0, 0, 0, //
        0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, //
        25, 3, 0, 0, 0, 0, 0x02, 0x58, //
        0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, //
        31, 3, 0, 0, 0, 0, 0x02, 0x58, //
        4, b'v', b'n', b'e', b't', 4, b't', b'e', b's', b't', 0, 0, 0, 0, 0, 0,
    ];

    #[test]
    fn captured_router_advert() {
        let p = Packet::new_checked(&RA[..]).unwrap();
        assert!(p.verify_checksum(&SRC, &DST));
        let Repr::Ndisc(NdiscRepr::RouterAdvert {
            hop_limit,
            router_lifetime,
            options,
            ..
        }) = Repr::parse(&p).unwrap()
        else {
            panic!("not an RA");
        };
        assert_eq!((hop_limit, router_lifetime), (64, 1800));
        let opts: Vec<_> = NdiscOptions::new(options).map(Result::unwrap).collect();
        assert_eq!(
            opts[0],
            NdiscOption::SourceLinkLayerAddr(MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]))
        );
        assert_eq!(opts[1], NdiscOption::Mtu(1500));
        assert_eq!(
            opts[2],
            NdiscOption::PrefixInformation(PrefixInfo {
                prefix_len: 64,
                on_link: true,
                autonomous: true,
                valid_lifetime: 86400,
                preferred_lifetime: 14400,
                prefix: "fd00::".parse().unwrap(),
            })
        );
        let dns: Vec<_> = opts[3].rdnss_addresses().collect();
        assert_eq!(dns, ["fd00::1".parse::<Ipv6Addr>().unwrap()]);
        let NdiscOption::Dnssl {
            lifetime: 600,
            names,
        } = opts[4]
        else {
            panic!("{:?}", opts[4]);
        };
        let names: Vec<_> = DomainNames::new(names).map(Result::unwrap).collect();
        assert_eq!(names, ["vnet.test"]);
    }

    #[test]
    fn construct_router_advert() {
        let mut names = Vec::new();
        encode_domain_names(&["vnet.test."], &mut names).unwrap();
        let dns = "fd00::1".parse::<Ipv6Addr>().unwrap().octets();
        let opts = [
            NdiscOption::SourceLinkLayerAddr(MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56])),
            NdiscOption::Mtu(1500),
            NdiscOption::PrefixInformation(PrefixInfo {
                prefix_len: 64,
                on_link: true,
                autonomous: true,
                valid_lifetime: 86400,
                preferred_lifetime: 14400,
                prefix: "fd00::".parse().unwrap(),
            }),
            NdiscOption::Rdnss {
                lifetime: 600,
                addresses: &dns,
            },
            NdiscOption::Dnssl {
                lifetime: 600,
                names: &names,
            },
        ];
        let mut options = vec![0u8; opts.iter().map(NdiscOption::buffer_len).sum()];
        let mut rest = &mut options[..];
        for o in &opts {
            rest = o.emit(rest);
        }
        let r = Repr::Ndisc(NdiscRepr::RouterAdvert {
            hop_limit: 64,
            managed: false,
            other: false,
            router_lifetime: 1800,
            reachable_time: 0,
            retrans_time: 0,
            options: &options,
        });
        let mut b = vec![0xaau8; r.buffer_len()];
        r.emit(&SRC, &DST, &mut Packet::new_unchecked(&mut b[..]));
        assert_eq!(b, RA);
    }

    #[test]
    fn neighbor_messages_and_errors_round_trip() {
        let target: Ipv6Addr = "fd00::2".parse().unwrap();
        let lla = [2u8, 1, 2, 0, 0, 0, 0, 1];
        let quote = [0x60u8; 48];
        for r in [
            Repr::Ndisc(NdiscRepr::NeighborSolicit {
                target,
                options: &lla,
            }),
            Repr::Ndisc(NdiscRepr::NeighborAdvert {
                router: true,
                solicited: true,
                override_: false,
                target,
                options: &lla,
            }),
            Repr::Ndisc(NdiscRepr::RouterSolicit { options: &[] }),
            Repr::EchoReply {
                ident: 7,
                seq_no: 9,
                data: b"ping",
            },
            Repr::PacketTooBig {
                mtu: 1280,
                invoking: &quote,
            },
            Repr::DstUnreachable {
                code: 4,
                invoking: &quote,
            },
            Repr::TimeExceeded {
                code: 0,
                invoking: &quote,
            },
            Repr::ParamProblem {
                code: 1,
                pointer: 40,
                invoking: &quote,
            },
        ] {
            let mut b = vec![0u8; r.buffer_len()];
            r.emit(&SRC, &DST, &mut Packet::new_unchecked(&mut b[..]));
            let p = Packet::new_checked(&b[..]).unwrap();
            assert!(p.verify_checksum(&SRC, &DST));
            assert_eq!(Repr::parse(&p).unwrap(), r);
        }
    }

    #[test]
    fn refuses() {
        assert_eq!(
            Packet::new_checked(&RA[..15]).unwrap_err(),
            Error::Truncated
        );
        let mut b = RA;
        b[17] = 0; // zero-length option
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&b[..])),
            Err(Error::Malformed)
        );
        let mut b = RA;
        b[1] = 1;
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&b[..])),
            Err(Error::Malformed)
        );
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&RA[..100])),
            Err(Error::Truncated)
        );
        assert!(!Packet::new_unchecked(&RA[..]).verify_checksum(&SRC, &Ipv6Addr::LOCALHOST));
        assert_eq!(
            DomainNames::new(&[5, b'a', 0]).next(),
            Some(Err(Error::Malformed))
        );
        assert_eq!(
            DomainNames::new(&[1, b'a']).next(),
            Some(Err(Error::Malformed))
        );
        assert!(encode_domain_names(&["a..b"], &mut Vec::new()).is_err());
    }
}
