//! `virtio_net_hdr` offloads in software: completing partial checksums and segmenting
//! GSO super-frames, for ports that cannot take them.
//!
//! # Theory
//!
//! A TAP opened with `IFF_VNET_HDR` + `TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)`
//! (and a vhost-user guest) exchanges frames prefixed by a `struct virtio_net_hdr`:
//!
//! ```text
//! 0       1          2         4          6            8             10            12
//! | flags | gso_type | hdr_len | gso_size | csum_start | csum_offset | num_buffers |
//! ```
//!
//! (all 16-bit fields little-endian, the `virtio_net_hdr_v1` layout, 12 bytes: a TAP must
//! be given `TUNSETVNETHDRSZ` 12, its default is the 10-byte legacy header). Two
//! independent promises come with a frame:
//!
//! - **Partial checksum** (`flags & F_NEEDS_CSUM`): the 16-bit field at
//!   `csum_start + csum_offset` holds only the folded pseudo-header sum; the real checksum
//!   is the one's complement of the one's-complement sum of bytes `csum_start..end`
//!   (that field included). [`complete_checksum`] does exactly that, in place. It is
//!   protocol-agnostic (as the kernel's `skb_checksum_help`), so it only needs the offsets
//!   to be in bounds; `end` is the end of the IP packet when the frame parses as IP (so
//!   Ethernet padding is left out), else the end of the frame.
//! - **GSO** (`gso_type != GSO_NONE`): the frame is one "super-frame" of up to ~64 KiB:
//!   one set of Ethernet/IP/L4 headers followed by a payload that the receiver must cut
//!   into chunks of `gso_size` bytes (the TCP MSS, or the UDP payload per datagram for
//!   `GSO_UDP_L4`/USO). Each chunk becomes an ordinary frame carrying a copy of the headers,
//!   fixed up as the kernel's `tcp_gso_segment`/`__udp_gso_segment`/`inet_gso_segment`
//!   would: IPv4 total length, identification (+1 per segment, wrapping) and header
//!   checksum; IPv6 payload length; TCP sequence number (+`gso_size` per segment), FIN and
//!   PSH kept only on the last segment, CWR only on the first (this is what `GSO_ECN`
//!   asks for, and Linux does it always); UDP length; and a full L4 checksum computed from
//!   scratch over a pseudo-header built from the segment's own IP header. [`Segmenter`]
//!   does this.
//!
//! # What is trusted
//!
//! Nothing but the bytes. The header offsets are derived by parsing the frame (Ethernet,
//! up to two 802.1Q/802.1ad tags, IPv4 with options or IPv6 with hop-by-hop and
//! destination-options extension headers, then TCP with options or UDP), and the virtio
//! header is only cross-checked against them:
//!
//! - `gso_type` must match what the frame is (`GSO_TCPV4` = IPv4+TCP, `GSO_TCPV6` =
//!   IPv6+TCP, `GSO_UDP_L4` = IPv4 or IPv6 + UDP); `gso_size` must be non-zero;
//! - with `F_NEEDS_CSUM`, `csum_start` must be the parsed L4 offset and `csum_offset` the
//!   L4 checksum field (16 for TCP, 6 for UDP); the kernel counts an inserted VLAN tag in
//!   `csum_start` already, so this holds for tagged frames too;
//! - `hdr_len` is ignored: Linux fills it with `skb_headlen()`, which may exceed the real
//!   header length, and guests may leave it 0.
//!
//! Refused with an [`OffloadError`]: `GSO_UDP` (UFO, IP fragmentation: never negotiated by
//! vnet, since it does not set `TUN_F_UFO`), IP fragments, IPv6 routing headers (the
//! pseudo-header would need the final destination), anything truncated or inconsistent.
//! An IP length of 0 on a GSO frame means "to the end of the frame" (as BIG TCP does); a
//! longer frame than the IP length says is cut at the IP length (trailing bytes, such as
//! Ethernet padding, are not copied into segments).
//!
//! # Shape and cost
//!
//! [`Segmenter::new`] validates everything first; after it succeeds, writing segment `i`
//! with [`Segmenter::write`] cannot fail except on a caller bug (index out of range or a
//! buffer shorter than [`Segmenter::max_segment_len`]), and never panics. A data plane
//! takes one pooled buffer per segment and writes into it, in any order; [`segment`] is
//! the convenience loop over one scratch buffer and a callback. Nothing allocates. Each
//! payload byte is copied once and summed once (while hot in L1), with a 32-bit-word
//! one's-complement sum that the compiler vectorizes.
//!
//! ```text
//! data plane, per frame from a vnet-hdr port, toward a port without offloads:
//!   hdr.is_gso()        → Segmenter::new(frame, &hdr)?; for i in 0..n { write(i, buf) }
//!   else needs_csum()   → complete_checksum(frame, &hdr)?  (in place, no copy)
//!   else                → forward as is
//! ```

use super::be16;
use super::checksum::{self, sum, transport_field};
use super::ethernet::{EtherType, HEADER_LEN, VLAN_TAG_LEN};
use super::ip::IpProtocol;
use super::tcp::{self, Flags};
use super::{ipv4, ipv6, udp};

const TCP_CSUM_OFFSET: usize = tcp::CHECKSUM_OFFSET;
const UDP_CSUM_OFFSET: usize = udp::CHECKSUM_OFFSET;

/// Size of the `virtio_net_hdr_v1` (with `num_buffers`) that vnet puts before frames.
pub const VIRTIO_NET_HDR_LEN: usize = 12;

/// At most this many IPv6 extension headers are walked before the L4 header.
const MAX_IPV6_EXT_HEADERS: usize = 8;

/// The `virtio_net_hdr` fields vnet uses (`num_buffers` is not kept, see [`Self::write`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VirtioNetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VirtioNetHdr {
    /// The L4 checksum is partial: complete it over `csum_start..`.
    pub const F_NEEDS_CSUM: u8 = 1;
    /// The checksum was verified (receive direction only); nothing to do for us.
    pub const F_DATA_VALID: u8 = 2;
    pub const GSO_NONE: u8 = 0;
    pub const GSO_TCPV4: u8 = 1;
    /// UDP fragmentation offload (UFO): refused by [`Segmenter`].
    pub const GSO_UDP: u8 = 3;
    pub const GSO_TCPV6: u8 = 4;
    /// UDP segmentation offload (USO).
    pub const GSO_UDP_L4: u8 = 5;
    /// Or-ed into `gso_type`: the TCP super-frame has CWR set (kept on the first segment).
    pub const GSO_ECN: u8 = 0x80;

    /// Reads the little-endian header; `num_buffers` (bytes 10..12) is ignored, since TAP
    /// leaves it unwritten and it only matters toward mergeable-buffer receive queues.
    pub fn parse(bytes: &[u8; VIRTIO_NET_HDR_LEN]) -> Self {
        let le = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
        VirtioNetHdr {
            flags: bytes[0],
            gso_type: bytes[1],
            hdr_len: le(2),
            gso_size: le(4),
            csum_start: le(6),
            csum_offset: le(8),
        }
    }

    /// Splits a buffer that starts with a 12-byte header into the header and the frame.
    pub fn split(buf: &[u8]) -> Result<(Self, &[u8]), OffloadError> {
        match buf.split_first_chunk::<VIRTIO_NET_HDR_LEN>() {
            Some((hdr, frame)) => Ok((Self::parse(hdr), frame)),
            None => Err(OffloadError::Truncated(Layer::VirtioHdr)),
        }
    }

    /// Writes the header little-endian, with `num_buffers` = 1: the value a device must
    /// put in a receive buffer holding one whole frame (virtio 1.x, with or without
    /// `VIRTIO_NET_F_MRG_RXBUF`), and one the kernel ignores on a TAP write.
    pub fn write(&self, out: &mut [u8; VIRTIO_NET_HDR_LEN]) {
        out[0] = self.flags;
        out[1] = self.gso_type;
        out[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        out[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        out[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        out[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        out[10..12].copy_from_slice(&1u16.to_le_bytes());
    }

    /// The GSO type without the ECN bit.
    pub fn gso_kind(&self) -> u8 {
        self.gso_type & !Self::GSO_ECN
    }

    pub fn is_gso(&self) -> bool {
        self.gso_kind() != Self::GSO_NONE
    }

    pub fn needs_csum(&self) -> bool {
        self.flags & Self::F_NEEDS_CSUM != 0
    }
}

/// Which header an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    VirtioHdr,
    Ethernet,
    Ipv4,
    Ipv6,
    Tcp,
    Udp,
}

/// Why a frame cannot be segmented or have its checksum completed. The frame should be
/// dropped and counted; nothing was emitted or changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    #[error("truncated {0:?} header or packet")]
    Truncated(Layer),
    #[error("malformed {0:?} header")]
    Malformed(Layer),
    #[error("not a GSO frame (gso_type 0)")]
    NotGso,
    #[error("unsupported GSO type {0:#04x}")]
    UnsupportedGsoType(u8),
    #[error("gso_size is 0")]
    ZeroGsoSize,
    #[error("EtherType {0:#06x} is neither IPv4 nor IPv6")]
    NotIp(u16),
    #[error("IP fragments cannot be segmented")]
    Fragment,
    #[error("unsupported IPv6 next header {0} before the L4 header")]
    UnsupportedIpv6Header(u8),
    #[error("gso_type {gso_type:#04x} does not match IP protocol {protocol} over {layer:?}")]
    GsoTypeMismatch {
        gso_type: u8,
        layer: Layer,
        protocol: u8,
    },
    #[error("csum_start {csum_start} / csum_offset {csum_offset} do not match the L4 header at {l4_offset}")]
    CsumMismatch {
        csum_start: u16,
        csum_offset: u16,
        l4_offset: usize,
    },
    #[error("checksum field at {csum_start}+{csum_offset} is outside the {len}-byte frame")]
    CsumOutOfBounds {
        csum_start: u16,
        csum_offset: u16,
        len: usize,
    },
    #[error("a {0}-byte segment would overflow the 16-bit IP length")]
    SegmentTooLarge(usize),
    #[error("buffer of {have} bytes, a segment needs up to {need}")]
    BufferTooSmall { need: usize, have: usize },
    #[error("segment {index} out of range: the frame has {count}")]
    SegmentOutOfRange { index: usize, count: usize },
}

// ---------------------------------------------------------------------------------------
// Parsing.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ip {
    V4,
    V6,
}

/// Where the headers of an IP frame are, all offsets from the start of the frame.
#[derive(Debug, Clone, Copy)]
pub(super) struct Layout {
    pub(super) ip: Ip,
    pub(super) l3: usize,
    pub(super) l4: usize,
    /// End of the IP packet (never past the frame).
    pub(super) end: usize,
    pub(super) protocol: IpProtocol,
}

/// Parses Ethernet (up to two tags) and IP up to the L4 header. `gso` lets an IP length
/// of 0 mean "to the end of the frame".
pub(super) fn parse_ip(frame: &[u8], gso: bool) -> Result<Layout, OffloadError> {
    if frame.len() < HEADER_LEN {
        return Err(OffloadError::Truncated(Layer::Ethernet));
    }
    let mut l3 = HEADER_LEN;
    let mut ethertype = be16(frame, 12);
    for _ in 0..2 {
        if ethertype != EtherType::VLAN && ethertype != EtherType::QINQ {
            break;
        }
        if frame.len() < l3 + VLAN_TAG_LEN {
            return Err(OffloadError::Truncated(Layer::Ethernet));
        }
        ethertype = be16(frame, l3 + 2);
        l3 += VLAN_TAG_LEN;
    }
    match ethertype {
        EtherType::IPV4 => parse_ipv4(frame, l3, gso),
        EtherType::IPV6 => parse_ipv6(frame, l3, gso),
        other => Err(OffloadError::NotIp(other)),
    }
}

fn parse_ipv4(frame: &[u8], l3: usize, gso: bool) -> Result<Layout, OffloadError> {
    // Not `new_checked`: a GSO frame may say total length 0 ("to the end").
    let ip = ipv4::Packet::new_unchecked(&frame[l3..]);
    if frame.len() < l3 + ipv4::HEADER_LEN {
        return Err(OffloadError::Truncated(Layer::Ipv4));
    }
    let ihl = usize::from(ip.header_len());
    if ip.version() != 4 || ihl < ipv4::HEADER_LEN {
        return Err(OffloadError::Malformed(Layer::Ipv4));
    }
    let total = usize::from(ip.total_len());
    let end = if total == 0 && gso {
        frame.len()
    } else {
        if total < ihl {
            return Err(OffloadError::Malformed(Layer::Ipv4));
        }
        l3 + total
    };
    if end > frame.len() || l3 + ihl > end {
        return Err(OffloadError::Truncated(Layer::Ipv4));
    }
    if ip.is_fragment() {
        return Err(OffloadError::Fragment);
    }
    Ok(Layout {
        ip: Ip::V4,
        l3,
        l4: l3 + ihl,
        end,
        protocol: ip.next_header(),
    })
}

fn parse_ipv6(frame: &[u8], l3: usize, gso: bool) -> Result<Layout, OffloadError> {
    // Not `new_checked`: a GSO frame may say payload length 0 ("to the end").
    let ip = ipv6::Packet::new_unchecked(&frame[l3..]);
    if frame.len() < l3 + ipv6::HEADER_LEN {
        return Err(OffloadError::Truncated(Layer::Ipv6));
    }
    if ip.version() != 6 {
        return Err(OffloadError::Malformed(Layer::Ipv6));
    }
    let payload = usize::from(ip.payload_len());
    let start = l3 + ipv6::HEADER_LEN;
    let end = if payload == 0 && gso {
        frame.len()
    } else {
        start + payload
    };
    if end > frame.len() {
        return Err(OffloadError::Truncated(Layer::Ipv6));
    }
    let mut walk = ipv6::ExtHeaders::new(ip.next_header(), &frame[start..end]);
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match walk.next_header() {
            IpProtocol::TCP | IpProtocol::UDP => {
                return Ok(Layout {
                    ip: Ip::V6,
                    l3,
                    l4: start + walk.offset(),
                    end,
                    protocol: walk.next_header(),
                })
            }
            IpProtocol::HOP_BY_HOP | IpProtocol::IPV6_DEST_OPTS => {
                if !matches!(walk.next(), Some(Ok(_))) {
                    return Err(OffloadError::Truncated(Layer::Ipv6));
                }
            }
            IpProtocol::IPV6_FRAGMENT => return Err(OffloadError::Fragment),
            other => return Err(OffloadError::UnsupportedIpv6Header(other.0)),
        }
    }
    Err(OffloadError::UnsupportedIpv6Header(walk.next_header().0))
}

// ---------------------------------------------------------------------------------------
// Checksum completion.

/// Completes a partial checksum in place, as `VIRTIO_NET_HDR_F_NEEDS_CSUM` asks: the
/// one's-complement sum of `frame[csum_start..end]` (which includes the pseudo-header sum
/// already in the field) is folded, complemented and stored at `csum_start + csum_offset`.
///
/// Does nothing if the header does not ask for it. `end` is the end of the IP packet when
/// the frame parses as IPv4/IPv6 and `csum_start` lies inside it, else the end of the
/// frame. Errors (frame untouched) when the checksum field is not inside the frame or
/// `csum_start` is inside the Ethernet header; never panics.
pub fn complete_checksum(frame: &mut [u8], hdr: &VirtioNetHdr) -> Result<(), OffloadError> {
    if !hdr.needs_csum() {
        return Ok(());
    }
    let start = usize::from(hdr.csum_start);
    let field = start + usize::from(hdr.csum_offset);
    let out_of_bounds = OffloadError::CsumOutOfBounds {
        csum_start: hdr.csum_start,
        csum_offset: hdr.csum_offset,
        len: frame.len(),
    };
    if start < HEADER_LEN {
        return Err(out_of_bounds);
    }
    let end = match parse_ip(frame, false) {
        Ok(layout) if (layout.l3..layout.end).contains(&start) => layout.end,
        _ => frame.len(),
    };
    if field + 2 > end {
        return Err(out_of_bounds);
    }
    let acc = sum(0, &frame[start..end]);
    frame[field..field + 2].copy_from_slice(&transport_field(acc).to_be_bytes());
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Segmentation.

/// A validated GSO super-frame, ready to be cut into ordinary frames.
///
/// Build it with [`Segmenter::new`] (which checks everything), then write each segment
/// `0..count()` into a buffer of at least [`max_segment_len`](Self::max_segment_len)
/// bytes with [`write`](Self::write), in any order, e.g. one pooled buffer per segment.
#[derive(Debug, Clone, Copy)]
pub struct Segmenter<'a> {
    /// The frame up to the end of the IP packet.
    frame: &'a [u8],
    ip: Ip,
    l3: usize,
    l4: usize,
    /// Length of all headers: the payload starts here.
    header_len: usize,
    tcp: bool,
    gso_size: usize,
    count: usize,
}

impl<'a> Segmenter<'a> {
    /// Parses and cross-checks `frame` against `hdr` (see the module doc); on success
    /// every segment can be written.
    pub fn new(frame: &'a [u8], hdr: &VirtioNetHdr) -> Result<Self, OffloadError> {
        let kind = hdr.gso_kind();
        let (want_ip, want_tcp) = match kind {
            VirtioNetHdr::GSO_NONE => return Err(OffloadError::NotGso),
            VirtioNetHdr::GSO_TCPV4 => (Some(Ip::V4), true),
            VirtioNetHdr::GSO_TCPV6 => (Some(Ip::V6), true),
            VirtioNetHdr::GSO_UDP_L4 => (None, false),
            _ => return Err(OffloadError::UnsupportedGsoType(hdr.gso_type)),
        };
        if hdr.gso_size == 0 {
            return Err(OffloadError::ZeroGsoSize);
        }
        let layout = parse_ip(frame, true)?;
        let want_proto = if want_tcp {
            IpProtocol::TCP
        } else {
            IpProtocol::UDP
        };
        if want_ip.is_some_and(|ip| ip != layout.ip) || layout.protocol != want_proto {
            return Err(OffloadError::GsoTypeMismatch {
                gso_type: hdr.gso_type,
                layer: match layout.ip {
                    Ip::V4 => Layer::Ipv4,
                    Ip::V6 => Layer::Ipv6,
                },
                protocol: layout.protocol.0,
            });
        }
        let frame = &frame[..layout.end];
        let l4 = layout.l4;
        let l4_len = if want_tcp {
            // Not `new_checked`: the header is checked against the frame below, with UDP's.
            if frame.len() < l4 + tcp::HEADER_LEN {
                return Err(OffloadError::Truncated(Layer::Tcp));
            }
            let doff = usize::from(tcp::Packet::new_unchecked(&frame[l4..]).header_len());
            if doff < tcp::HEADER_LEN {
                return Err(OffloadError::Malformed(Layer::Tcp));
            }
            doff
        } else {
            udp::HEADER_LEN
        };
        let header_len = l4 + l4_len;
        if header_len > frame.len() {
            return Err(OffloadError::Truncated(if want_tcp {
                Layer::Tcp
            } else {
                Layer::Udp
            }));
        }
        let csum_offset = if want_tcp {
            TCP_CSUM_OFFSET
        } else {
            UDP_CSUM_OFFSET
        } as u16;
        if hdr.needs_csum() && (usize::from(hdr.csum_start) != l4 || hdr.csum_offset != csum_offset)
        {
            return Err(OffloadError::CsumMismatch {
                csum_start: hdr.csum_start,
                csum_offset: hdr.csum_offset,
                l4_offset: l4,
            });
        }
        let payload = frame.len() - header_len;
        let gso_size = usize::from(hdr.gso_size);
        let count = payload.div_ceil(gso_size).max(1);
        let seg = Segmenter {
            frame,
            ip: layout.ip,
            l3: layout.l3,
            l4,
            header_len,
            tcp: want_tcp,
            gso_size,
            count,
        };
        // The largest segment's IP length must fit its 16-bit field.
        let biggest = seg.segment_len(0) - seg.l3;
        let ip_len = match seg.ip {
            Ip::V4 => biggest,
            Ip::V6 => biggest - 40,
        };
        if ip_len > usize::from(u16::MAX) {
            return Err(OffloadError::SegmentTooLarge(biggest));
        }
        Ok(seg)
    }

    /// How many segments the frame makes (at least 1: a frame with no payload, or at most
    /// `gso_size` of it, is one segment with its checksum completed).
    pub fn count(&self) -> usize {
        self.count
    }

    /// Length of the headers (Ethernet, tags, IP, L4) each segment starts with.
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// The largest segment: headers plus at most `gso_size` payload bytes.
    pub fn max_segment_len(&self) -> usize {
        self.segment_len(0)
    }

    fn payload_len(&self) -> usize {
        self.frame.len() - self.header_len
    }

    /// Payload range of segment `i` (which must be < count) within the frame.
    fn payload_range(&self, i: usize) -> (usize, usize) {
        let start = self.header_len + i * self.gso_size;
        let end = self.header_len + self.payload_len().min((i + 1) * self.gso_size);
        (start, end)
    }

    /// Length of segment `i` (`i < count()`).
    pub fn segment_len(&self, i: usize) -> usize {
        let (start, end) = self.payload_range(i.min(self.count - 1));
        self.header_len + (end - start)
    }

    /// Writes segment `index` into the front of `out` and returns its length. Fails only
    /// on caller bugs: `index >= count()` or `out` shorter than the segment.
    pub fn write(&self, index: usize, out: &mut [u8]) -> Result<usize, OffloadError> {
        if index >= self.count {
            return Err(OffloadError::SegmentOutOfRange {
                index,
                count: self.count,
            });
        }
        let (p_start, p_end) = self.payload_range(index);
        let chunk = &self.frame[p_start..p_end];
        let len = self.header_len + chunk.len();
        let have = out.len();
        let Some(out) = out.get_mut(..len) else {
            return Err(OffloadError::BufferTooSmall { need: len, have });
        };
        let (headers, payload) = out.split_at_mut(self.header_len);
        headers.copy_from_slice(&self.frame[..self.header_len]);
        payload.copy_from_slice(chunk);

        let (l3, l4) = (self.l3, self.l4);
        let ip_len = len - l3;
        let l4_len = len - l4;
        let pseudo = match self.ip {
            Ip::V4 => {
                let mut ip = ipv4::Packet::new_unchecked(&mut headers[l3..l4]);
                ip.set_total_len(ip_len as u16);
                ip.set_ident(ip.ident().wrapping_add(index as u16));
                // The header checksum is stored as computed: only UDP reserves 0.
                ip.fill_checksum();
                let (src, dst) = (ip.src_addr(), ip.dst_addr());
                checksum::pseudo_header_v4(src, dst, ip.next_header(), l4_len as u16)
            }
            Ip::V6 => {
                let mut ip = ipv6::Packet::new_unchecked(&mut headers[l3..l4]);
                ip.set_payload_len((ip_len - ipv6::HEADER_LEN) as u16);
                let proto = if self.tcp {
                    IpProtocol::TCP
                } else {
                    IpProtocol::UDP
                };
                checksum::pseudo_header_v6(&ip.src_addr(), &ip.dst_addr(), proto, l4_len as u32)
            }
        };
        let l4h = &mut headers[l4..];
        let csum_at = if self.tcp {
            let mut t = tcp::Packet::new_unchecked(&mut *l4h);
            t.set_seq_number(t.seq_number().wrapping_add((index * self.gso_size) as u32));
            let mut flags = t.flags().0;
            if index + 1 < self.count {
                flags &= !(Flags::FIN | Flags::PSH);
            }
            if index > 0 {
                flags &= !Flags::CWR;
            }
            t.set_flags(Flags(flags));
            TCP_CSUM_OFFSET
        } else {
            udp::Packet::new_unchecked(&mut *l4h).set_len(l4_len as u16);
            UDP_CSUM_OFFSET
        };
        l4h[csum_at..csum_at + 2].fill(0);
        let acc = sum(sum(pseudo, l4h), payload);
        l4h[csum_at..csum_at + 2].copy_from_slice(&transport_field(acc).to_be_bytes());
        Ok(len)
    }
}

/// Splits a GSO frame into ordinary frames, each built in `scratch` and handed to `emit`
/// (once per segment, in order). Returns the number of segments.
///
/// Everything is validated before the first `emit`, including that `scratch` holds the
/// largest segment: on `Err`, nothing was emitted. Never panics, never allocates.
pub fn segment(
    frame: &[u8],
    hdr: &VirtioNetHdr,
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Result<usize, OffloadError> {
    let seg = Segmenter::new(frame, hdr)?;
    let need = seg.max_segment_len();
    if scratch.len() < need {
        return Err(OffloadError::BufferTooSmall {
            need,
            have: scratch.len(),
        });
    }
    for i in 0..seg.count() {
        let n = seg.write(i, scratch)?;
        emit(&scratch[..n]);
    }
    Ok(seg.count())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const IPPROTO_TCP: u8 = 6;
    const IPPROTO_UDP: u8 = 17;
    const IPV6_HOP_BY_HOP: u8 = 0;
    const IPV6_FRAGMENT: u8 = 44;
    const IPV6_DEST_OPTS: u8 = 60;
    const TCP_FIN: u8 = Flags::FIN;
    const TCP_PSH: u8 = Flags::PSH;
    const TCP_CWR: u8 = Flags::CWR;

    // --- An independent reference: plain big-endian 16-bit one's-complement sums. ---

    fn ref_sum(parts: &[&[u8]]) -> u16 {
        let bytes: Vec<u8> = parts.concat();
        let mut acc: u32 = 0;
        for pair in bytes.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            acc += u32::from(word);
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    fn ref_checksum(parts: &[&[u8]]) -> u16 {
        !ref_sum(parts)
    }

    /// A checksummed region verifies when it sums to 0xffff (or 0, the other zero).
    fn verifies(parts: &[&[u8]]) -> bool {
        matches!(ref_sum(parts), 0xffff | 0)
    }

    fn pseudo_v4(ip: &[u8], proto: u8, len: usize) -> Vec<u8> {
        let mut p = ip[12..20].to_vec();
        p.extend_from_slice(&[0, proto]);
        p.extend_from_slice(&(len as u16).to_be_bytes());
        p
    }

    fn pseudo_v6(ip: &[u8], proto: u8, len: usize) -> Vec<u8> {
        let mut p = ip[8..40].to_vec();
        p.extend_from_slice(&(len as u32).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, proto]);
        p
    }

    // --- Building GSO frames. ---

    #[derive(Debug, Clone)]
    struct Spec {
        /// TPIDs of the tags, outermost first (0, 1 or 2 of them).
        tags: Vec<u16>,
        v6: bool,
        /// IPv4 option bytes (multiple of 4, ≤ 40).
        ip_opts: usize,
        /// IPv6: a hop-by-hop and/or a destination-options header, lengths in 8-byte units.
        hbh: Option<u8>,
        dest: Option<u8>,
        tcp: bool,
        tcp_opts: usize,
        flags: u8,
        seq: u32,
        ip_id: u16,
        payload: Vec<u8>,
        gso_size: u16,
        ecn: bool,
    }

    impl Spec {
        fn tcp4(payload: Vec<u8>, gso_size: u16) -> Self {
            Spec {
                tags: vec![],
                v6: false,
                ip_opts: 0,
                hbh: None,
                dest: None,
                tcp: true,
                tcp_opts: 12,
                flags: 0x18, // PSH ACK
                seq: 0x1000_0000,
                ip_id: 0x4242,
                payload,
                gso_size,
                ecn: false,
            }
        }
    }

    struct Built {
        frame: Vec<u8>,
        hdr: VirtioNetHdr,
        l3: usize,
        l4: usize,
        header_len: usize,
    }

    fn build(s: &Spec) -> Built {
        let mut f = vec![0x02, 0, 0, 0, 0, 0xbb, 0x52, 0x54, 0, 0x12, 0x34, 0x56];
        for (i, tpid) in s.tags.iter().enumerate() {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&(0x2000 | (10 + i as u16)).to_be_bytes());
        }
        f.extend_from_slice(&(if s.v6 { 0x86ddu16 } else { 0x0800 }).to_be_bytes());
        let l3 = f.len();
        let proto = if s.tcp { IPPROTO_TCP } else { IPPROTO_UDP };
        let l4_len = if s.tcp { 20 + s.tcp_opts } else { 8 };
        if s.v6 {
            let ext_len = s.hbh.map_or(0, |n| (n as usize + 1) * 8)
                + s.dest.map_or(0, |n| (n as usize + 1) * 8);
            let plen = ext_len + l4_len + s.payload.len();
            let first = match (s.hbh, s.dest) {
                (Some(_), _) => IPV6_HOP_BY_HOP,
                (None, Some(_)) => IPV6_DEST_OPTS,
                _ => proto,
            };
            f.extend_from_slice(&[0x60, 0x0a, 0xbc, 0xde]);
            f.extend_from_slice(&(plen as u16).to_be_bytes());
            f.extend_from_slice(&[first, 64]);
            f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            if let Some(n) = s.hbh {
                let next = if s.dest.is_some() {
                    IPV6_DEST_OPTS
                } else {
                    proto
                };
                f.extend_from_slice(&[next, n]);
                f.resize(f.len() + (n as usize + 1) * 8 - 2, 0); // Pad1 options
            }
            if let Some(n) = s.dest {
                f.extend_from_slice(&[proto, n]);
                f.resize(f.len() + (n as usize + 1) * 8 - 2, 0);
            }
        } else {
            let ihl = 20 + s.ip_opts;
            let total = ihl + l4_len + s.payload.len();
            f.push(0x40 | (ihl / 4) as u8);
            f.push(0x02); // ECT(0)
            f.extend_from_slice(&(total as u16).to_be_bytes());
            f.extend_from_slice(&s.ip_id.to_be_bytes());
            f.extend_from_slice(&[0x40, 0, 64, proto, 0xde, 0xad]); // DF, TTL, garbage csum
            f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
            f.resize(f.len() + s.ip_opts, 1); // NOP options
        }
        let l4 = f.len();
        f.extend_from_slice(&[0xc0, 0x01, 0x00, 0x50]); // ports 49153 → 80
        if s.tcp {
            f.extend_from_slice(&s.seq.to_be_bytes());
            f.extend_from_slice(&0x0bad_cafe_u32.to_be_bytes());
            f.push((((20 + s.tcp_opts) / 4) as u8) << 4);
            f.push(s.flags);
            f.extend_from_slice(&[0xfa, 0xf0, 0xbe, 0xef, 0, 0]); // window, garbage csum, urg
            f.resize(f.len() + s.tcp_opts, 1);
        } else {
            f.extend_from_slice(&((8 + s.payload.len()) as u16).to_be_bytes());
            f.extend_from_slice(&[0xbe, 0xef]);
        }
        let header_len = f.len();
        f.extend_from_slice(&s.payload);
        let gso_type = match (s.tcp, s.v6) {
            (true, false) => VirtioNetHdr::GSO_TCPV4,
            (true, true) => VirtioNetHdr::GSO_TCPV6,
            (false, _) => VirtioNetHdr::GSO_UDP_L4,
        } | if s.ecn { VirtioNetHdr::GSO_ECN } else { 0 };
        let hdr = VirtioNetHdr {
            flags: VirtioNetHdr::F_NEEDS_CSUM,
            gso_type,
            hdr_len: header_len as u16,
            gso_size: s.gso_size,
            csum_start: l4 as u16,
            csum_offset: if s.tcp { 16 } else { 6 },
        };
        Built {
            frame: f,
            hdr,
            l3,
            l4,
            header_len,
        }
    }

    fn run(frame: &[u8], hdr: &VirtioNetHdr) -> Result<Vec<Vec<u8>>, OffloadError> {
        let mut scratch = vec![0u8; 70_000];
        let mut out = Vec::new();
        let n = segment(frame, hdr, &mut scratch, |s| out.push(s.to_vec()))?;
        assert_eq!(n, out.len());
        Ok(out)
    }

    /// Checks every promise about `segs` against the spec they were cut from, with the
    /// reference sums and with etherparse.
    fn check_segments(s: &Spec, b: &Built, segs: &[Vec<u8>]) {
        let gso = usize::from(s.gso_size);
        let (l3, l4, hl) = (b.l3, b.l4, b.header_len);
        let mut reassembled = Vec::new();
        let n = segs.len();
        assert_eq!(n, s.payload.len().div_ceil(gso).max(1));
        for (i, seg) in segs.iter().enumerate() {
            assert!(seg.len() <= hl + gso, "segment {i} too long");
            assert_eq!(seg[..l3], b.frame[..l3], "Ethernet header changed");
            let payload = &seg[hl..];
            assert!(
                i + 1 == n || payload.len() == gso,
                "short segment before the last"
            );
            let ip = &seg[l3..l4];
            let proto = if s.tcp { IPPROTO_TCP } else { IPPROTO_UDP };
            let pseudo = if s.v6 {
                assert_eq!(usize::from(be16(ip, 4)), seg.len() - l3 - 40);
                assert_eq!(ip[..4], b.frame[l3..l3 + 4]);
                assert_eq!(ip[6..], b.frame[l3 + 6..l4]);
                pseudo_v6(ip, proto, seg.len() - l4)
            } else {
                assert_eq!(usize::from(be16(ip, 2)), seg.len() - l3);
                assert_eq!(be16(ip, 4), s.ip_id.wrapping_add(i as u16));
                assert!(verifies(&[ip]), "IPv4 header checksum");
                assert_eq!(ip[6..10], b.frame[l3 + 6..l3 + 10]);
                assert_eq!(ip[12..], b.frame[l3 + 12..l4]);
                pseudo_v4(ip, proto, seg.len() - l4)
            };
            assert!(verifies(&[&pseudo, &seg[l4..]]), "L4 checksum of {i}");
            let l4h = &seg[l4..hl];
            let orig = &b.frame[l4..hl];
            if s.tcp {
                let seq = u32::from_be_bytes(l4h[4..8].try_into().unwrap());
                assert_eq!(seq, s.seq.wrapping_add(reassembled.len() as u32));
                let mut want = s.flags;
                if i + 1 < n {
                    want &= !(TCP_FIN | TCP_PSH);
                }
                if i > 0 {
                    want &= !TCP_CWR;
                }
                assert_eq!(l4h[13], want, "flags of {i}");
                assert_eq!(l4h[..4], orig[..4]);
                assert_eq!(l4h[8..13], orig[8..13]);
                assert_eq!(l4h[14..16], orig[14..16]);
                assert_eq!(l4h[18..], orig[18..]);
            } else {
                assert_eq!(usize::from(be16(l4h, 4)), seg.len() - l4);
                assert_eq!(l4h[..4], orig[..4]);
            }
            reassembled.extend_from_slice(payload);
            check_with_etherparse(s, seg, payload);
        }
        assert_eq!(reassembled, s.payload);
    }

    fn same_checksum(field: u16, computed: u16) -> bool {
        field == computed || (field == 0xffff && computed == 0)
    }

    fn check_with_etherparse(s: &Spec, seg: &[u8], payload: &[u8]) {
        use etherparse::{NetHeaders, PacketHeaders, TransportHeader};
        let h = PacketHeaders::from_ethernet_slice(seg).expect("etherparse parses the segment");
        assert_eq!(h.link_exts.len(), s.tags.len());
        assert_eq!(h.payload.slice(), payload);
        let transport = h.transport.expect("transport header");
        match (h.net.expect("IP header"), transport) {
            (NetHeaders::Ipv4(ip, _), TransportHeader::Tcp(tcp)) => {
                assert_eq!(ip.header_checksum, ip.calc_header_checksum());
                let c = tcp.calc_checksum_ipv4(&ip, payload).unwrap();
                assert!(same_checksum(tcp.checksum, c));
            }
            (NetHeaders::Ipv4(ip, _), TransportHeader::Udp(udp)) => {
                assert_eq!(ip.header_checksum, ip.calc_header_checksum());
                assert_eq!(usize::from(udp.length), 8 + payload.len());
                let c = udp.calc_checksum_ipv4(&ip, payload).unwrap();
                assert!(same_checksum(udp.checksum, c));
            }
            (NetHeaders::Ipv6(ip, ext), TransportHeader::Tcp(tcp)) => {
                assert_eq!(ext.hop_by_hop_options.is_some(), s.hbh.is_some());
                assert_eq!(ext.destination_options.is_some(), s.dest.is_some());
                let c = tcp.calc_checksum_ipv6(&ip, payload).unwrap();
                assert!(same_checksum(tcp.checksum, c));
            }
            (NetHeaders::Ipv6(ip, _), TransportHeader::Udp(udp)) => {
                let c = udp.calc_checksum_ipv6(&ip, payload).unwrap();
                assert!(same_checksum(udp.checksum, c));
            }
            other => panic!("unexpected headers {other:?}"),
        }
    }

    fn payload(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    // --- The virtio header. ---

    #[test]
    fn virtio_hdr_round_trip() {
        let bytes = [1, 0x81, 0x42, 0, 0xa8, 0x05, 0x22, 0, 0x10, 0, 0x77, 0x77];
        let h = VirtioNetHdr::parse(&bytes);
        assert_eq!(
            h,
            VirtioNetHdr {
                flags: VirtioNetHdr::F_NEEDS_CSUM,
                gso_type: VirtioNetHdr::GSO_TCPV4 | VirtioNetHdr::GSO_ECN,
                hdr_len: 66,
                gso_size: 1448,
                csum_start: 34,
                csum_offset: 16,
            }
        );
        assert!(h.is_gso() && h.needs_csum());
        assert_eq!(h.gso_kind(), VirtioNetHdr::GSO_TCPV4);
        let mut out = [0u8; 12];
        h.write(&mut out);
        assert_eq!(out[..10], bytes[..10]);
        assert_eq!(out[10..], [1, 0], "num_buffers is 1");
        let mut buf = out.to_vec();
        buf.extend_from_slice(b"frame");
        let (h2, rest) = VirtioNetHdr::split(&buf).unwrap();
        assert_eq!((h2, rest), (h, &b"frame"[..]));
        assert_eq!(
            VirtioNetHdr::split(&buf[..11]).unwrap_err(),
            OffloadError::Truncated(Layer::VirtioHdr)
        );
        assert!(!VirtioNetHdr::default().is_gso());
        assert!(!VirtioNetHdr::default().needs_csum());
    }

    // --- Segmentation, by example. ---

    /// A TCPv4 super-frame of 3 × 1448 bytes with 12 bytes of timestamp options, as a
    /// Linux guest sends it: 14 + 20 + 32 header bytes.
    #[test]
    fn tcpv4_three_segments() {
        let mut spec = Spec::tcp4(payload(3 * 1448), 1448);
        spec.flags = 0x19 | TCP_CWR; // FIN PSH ACK CWR
        spec.ecn = true;
        let b = build(&spec);
        assert_eq!(b.header_len, 66);
        let seg = Segmenter::new(&b.frame, &b.hdr).unwrap();
        assert_eq!((seg.count(), seg.header_len()), (3, 66));
        assert_eq!(seg.max_segment_len(), 1514);
        let segs = run(&b.frame, &b.hdr).unwrap();
        assert_eq!(segs.len(), 3);
        for (i, s) in segs.iter().enumerate() {
            assert_eq!(s.len(), 1514);
            assert_eq!(be16(s, 16), 1500, "IPv4 total length");
            assert_eq!(be16(s, 18), 0x4242 + i as u16, "IPv4 id");
            let seq = u32::from_be_bytes(s[38..42].try_into().unwrap());
            assert_eq!(seq, 0x1000_0000 + 1448 * i as u32);
        }
        assert_eq!(segs[0][47], 0x10 | TCP_CWR, "first: ACK CWR");
        assert_eq!(segs[1][47], 0x10, "middle: ACK");
        assert_eq!(segs[2][47], 0x19, "last: FIN PSH ACK");
        check_segments(&spec, &b, &segs);
    }

    #[test]
    fn tcpv4_uneven_tail_and_single_segment() {
        let spec = Spec::tcp4(payload(3000), 1448);
        let b = build(&spec);
        let segs = run(&b.frame, &b.hdr).unwrap();
        let lens: Vec<usize> = segs.iter().map(Vec::len).collect();
        assert_eq!(lens, [1514, 1514, 66 + 104]);
        check_segments(&spec, &b, &segs);

        // No more than gso_size bytes: one segment, checksum completed.
        for n in [0, 1, 1448] {
            let spec = Spec::tcp4(payload(n), 1448);
            let b = build(&spec);
            let segs = run(&b.frame, &b.hdr).unwrap();
            assert_eq!(segs.len(), 1);
            check_segments(&spec, &b, &segs);
        }
    }

    #[test]
    fn tcpv6_with_extension_headers() {
        let mut spec = Spec::tcp4(payload(5000), 1428);
        spec.v6 = true;
        let b = build(&spec);
        assert_eq!(b.header_len, 14 + 40 + 32);
        let segs = run(&b.frame, &b.hdr).unwrap();
        assert_eq!(segs.len(), 4);
        assert_eq!(be16(&segs[0], 18), 1428 + 32, "IPv6 payload length");
        check_segments(&spec, &b, &segs);

        spec.hbh = Some(0);
        spec.dest = Some(2);
        let b = build(&spec);
        let segs = run(&b.frame, &b.hdr).unwrap();
        check_segments(&spec, &b, &segs);
    }

    #[test]
    fn vlan_tagged_tcpv4_and_qinq() {
        let mut spec = Spec::tcp4(payload(4000), 1448);
        spec.tags = vec![0x8100];
        let b = build(&spec);
        assert_eq!(b.hdr.csum_start, 14 + 4 + 20);
        let segs = run(&b.frame, &b.hdr).unwrap();
        assert_eq!(segs[0].len(), 1518);
        check_segments(&spec, &b, &segs);

        spec.tags = vec![0x88a8, 0x8100];
        spec.ip_opts = 8;
        let b = build(&spec);
        let segs = run(&b.frame, &b.hdr).unwrap();
        check_segments(&spec, &b, &segs);
    }

    #[test]
    fn udp_l4_v4_and_v6() {
        for v6 in [false, true] {
            let mut spec = Spec::tcp4(payload(3500), 1200);
            spec.tcp = false;
            spec.v6 = v6;
            let b = build(&spec);
            let segs = run(&b.frame, &b.hdr).unwrap();
            let lens: Vec<usize> = segs.iter().map(|s| be16(s, b.l4 + 4).into()).collect();
            assert_eq!(lens, [1208, 1208, 1108], "UDP lengths");
            check_segments(&spec, &b, &segs);
        }
    }

    /// The IPv4 header of the first segment is the textbook example (RFC 1071 style,
    /// Wikipedia "IPv4 header checksum"): 4500 0073 0000 4000 4011 [b861] c0a8 0001 c0a8 00c7.
    #[test]
    fn ipv4_header_checksum_known_answer() {
        let mut spec = Spec::tcp4(payload(0x73 - 28 + 10), 0x73 - 28);
        spec.tcp = false;
        spec.ip_id = 0;
        let mut b = build(&spec);
        b.frame[15] = 0; // TOS
        b.frame[22] = 0x40; // TTL
        b.frame[26..34].copy_from_slice(&[0xc0, 0xa8, 0, 1, 0xc0, 0xa8, 0, 0xc7]);
        let segs = run(&b.frame, &b.hdr).unwrap();
        assert_eq!(
            segs[0][14..34],
            [
                0x45, 0, 0, 0x73, 0, 0, 0x40, 0, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0, 1, 0xc0,
                0xa8, 0, 0xc7
            ]
        );
        assert_eq!(be16(&segs[1], 16), 20 + 8 + 10);
        assert_eq!(be16(&segs[1], 18), 1, "the id grows by one");
    }

    #[test]
    fn sequence_and_id_wrap() {
        let mut spec = Spec::tcp4(payload(3000), 1000);
        spec.seq = u32::MAX - 500;
        spec.ip_id = u16::MAX;
        let b = build(&spec);
        let segs = run(&b.frame, &b.hdr).unwrap();
        assert_eq!(be16(&segs[1], 18), 0);
        check_segments(&spec, &b, &segs);
    }

    #[test]
    fn trailing_bytes_after_the_ip_packet_are_dropped() {
        let spec = Spec::tcp4(payload(2000), 1448);
        let mut b = build(&spec);
        b.frame.extend_from_slice(&[0xaa; 7]);
        let segs = run(&b.frame, &b.hdr).unwrap();
        check_segments(&spec, &b, &segs);
    }

    #[test]
    fn ip_length_zero_means_to_the_end() {
        // BIG TCP style: more than 64 KiB, total length 0.
        let spec = Spec::tcp4(payload(70_000), 8948);
        let mut b = build(&spec);
        b.frame[16..18].fill(0);
        let segs = run(&b.frame, &b.hdr).unwrap();
        check_segments(&spec, &b, &segs);
        // …but each segment must still fit the 16-bit length.
        b.hdr.gso_size = u16::MAX;
        assert!(matches!(
            Segmenter::new(&b.frame, &b.hdr),
            Err(OffloadError::SegmentTooLarge(_))
        ));
    }

    #[test]
    fn hdr_len_is_ignored_and_csum_flag_optional() {
        let spec = Spec::tcp4(payload(3000), 1448);
        let mut b = build(&spec);
        b.hdr.hdr_len = 1234; // skb_headlen(), as Linux reports it
        let segs = run(&b.frame, &b.hdr).unwrap();
        check_segments(&spec, &b, &segs);
        b.hdr.flags = 0;
        b.hdr.csum_start = 0;
        b.hdr.csum_offset = 0;
        let segs = run(&b.frame, &b.hdr).unwrap();
        check_segments(&spec, &b, &segs);
    }

    #[test]
    fn rejects_inconsistent_frames_without_emitting() {
        let spec = Spec::tcp4(payload(3000), 1448);
        let b = build(&spec);
        let err = |frame: &[u8], hdr: &VirtioNetHdr| {
            let mut scratch = [0u8; 2000];
            let mut emitted = 0;
            let e = segment(frame, hdr, &mut scratch, |_| emitted += 1).unwrap_err();
            assert_eq!(emitted, 0);
            e
        };
        let h = |f: &dyn Fn(&mut VirtioNetHdr)| {
            let mut h = b.hdr;
            f(&mut h);
            h
        };
        assert_eq!(err(&b.frame, &h(&|h| h.gso_type = 0)), OffloadError::NotGso);
        assert_eq!(
            err(&b.frame, &h(&|h| h.gso_type = VirtioNetHdr::GSO_UDP)),
            OffloadError::UnsupportedGsoType(3)
        );
        assert_eq!(
            err(&b.frame, &h(&|h| h.gso_size = 0)),
            OffloadError::ZeroGsoSize
        );
        assert!(matches!(
            err(&b.frame, &h(&|h| h.gso_type = VirtioNetHdr::GSO_TCPV6)),
            OffloadError::GsoTypeMismatch { .. }
        ));
        assert!(matches!(
            err(&b.frame, &h(&|h| h.gso_type = VirtioNetHdr::GSO_UDP_L4)),
            OffloadError::GsoTypeMismatch { .. }
        ));
        assert!(matches!(
            err(&b.frame, &h(&|h| h.csum_start += 4)),
            OffloadError::CsumMismatch { l4_offset: 34, .. }
        ));
        assert!(matches!(
            err(&b.frame, &h(&|h| h.csum_offset = 6)),
            OffloadError::CsumMismatch { .. }
        ));
        assert_eq!(
            err(&b.frame[..2000], &b.hdr),
            OffloadError::Truncated(Layer::Ipv4)
        );
        assert_eq!(
            err(&b.frame[..40], &b.hdr),
            OffloadError::Truncated(Layer::Ipv4)
        );
        let mut frag = b.frame.clone();
        frag[20] |= 0x20; // MF
        assert_eq!(err(&frag, &b.hdr), OffloadError::Fragment);
        let mut arp = b.frame.clone();
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(err(&arp, &b.hdr), OffloadError::NotIp(0x0806));
        let mut bad_doff = b.frame.clone();
        bad_doff[46] = 0x40;
        assert_eq!(err(&bad_doff, &b.hdr), OffloadError::Malformed(Layer::Tcp));
        // Too small a scratch buffer is found before anything is emitted.
        let mut small = [0u8; 1513];
        assert_eq!(
            segment(&b.frame, &b.hdr, &mut small, |_| panic!("emitted")).unwrap_err(),
            OffloadError::BufferTooSmall {
                need: 1514,
                have: 1513
            }
        );
        let seg = Segmenter::new(&b.frame, &b.hdr).unwrap();
        assert_eq!(
            seg.write(3, &mut [0u8; 2000]).unwrap_err(),
            OffloadError::SegmentOutOfRange { index: 3, count: 3 }
        );
        // The short last segment fits a smaller buffer.
        assert_eq!(seg.write(2, &mut [0u8; 200]), Ok(66 + 104));

        let mut v6 = spec.clone();
        v6.v6 = true;
        let mut b6 = build(&v6);
        b6.frame[20] = 43; // routing header
        assert_eq!(
            err(&b6.frame, &b6.hdr),
            OffloadError::UnsupportedIpv6Header(43)
        );
        b6.frame[20] = IPV6_FRAGMENT;
        assert_eq!(err(&b6.frame, &b6.hdr), OffloadError::Fragment);
    }

    #[test]
    fn segments_can_be_written_in_any_order_into_separate_buffers() {
        let spec = Spec::tcp4(payload(10_000), 1448);
        let b = build(&spec);
        let seg = Segmenter::new(&b.frame, &b.hdr).unwrap();
        let mut bufs = vec![[0u8; 1600]; seg.count()];
        let mut lens = vec![0; seg.count()];
        for i in (0..seg.count()).rev() {
            lens[i] = seg.write(i, &mut bufs[i]).unwrap();
            assert_eq!(lens[i], seg.segment_len(i));
        }
        let segs: Vec<Vec<u8>> = bufs
            .iter()
            .zip(&lens)
            .map(|(b, &n)| b[..n].to_vec())
            .collect();
        check_segments(&spec, &b, &segs);
    }

    // --- Checksum completion. ---

    /// A non-GSO frame with a partial checksum as Linux hands it over: the field holds the
    /// folded pseudo-header sum (with the L4 length). Returns it and the full checksum.
    fn partial(spec: &Spec) -> (Vec<u8>, VirtioNetHdr, u16) {
        let mut b = build(spec);
        let (l3, l4) = (b.l3, b.l4);
        let proto = if spec.tcp { IPPROTO_TCP } else { IPPROTO_UDP };
        let l4_len = b.frame.len() - l4;
        let pseudo = if spec.v6 {
            pseudo_v6(&b.frame[l3..], proto, l4_len)
        } else {
            pseudo_v4(&b.frame[l3..], proto, l4_len)
        };
        let field = l4 + usize::from(b.hdr.csum_offset);
        b.frame[field..field + 2].fill(0);
        let full = ref_checksum(&[&pseudo, &b.frame[l4..]]);
        b.frame[field..field + 2].copy_from_slice(&ref_sum(&[&pseudo]).to_be_bytes());
        b.hdr.gso_type = 0;
        b.hdr.gso_size = 0;
        (b.frame, b.hdr, full)
    }

    fn field(frame: &[u8], hdr: &VirtioNetHdr) -> u16 {
        be16(frame, usize::from(hdr.csum_start + hdr.csum_offset))
    }

    #[test]
    fn completes_tcp_and_udp_checksums() {
        for (v6, tcp, tags, n) in [
            (false, true, 0, 1448),
            (false, true, 1, 1),
            (true, true, 0, 999),
            (false, false, 0, 33),
            (true, false, 1, 1452),
        ] {
            let mut spec = Spec::tcp4(payload(n), 1448);
            spec.v6 = v6;
            spec.tcp = tcp;
            spec.tags = vec![0x8100; tags];
            let (mut frame, hdr, full) = partial(&spec);
            complete_checksum(&mut frame, &hdr).unwrap();
            assert!(same_checksum(field(&frame, &hdr), full), "{spec:?}");
            // Ethernet padding after the IP packet is left out of the sum.
            let (mut padded, hdr, full) = partial(&spec);
            padded.extend_from_slice(&[0x5a; 9]);
            complete_checksum(&mut padded, &hdr).unwrap();
            assert!(same_checksum(field(&padded, &hdr), full));
        }
    }

    #[test]
    fn complete_checksum_bounds() {
        let (frame, hdr, _) = partial(&Spec::tcp4(payload(10), 1448));
        let mut f = frame.clone();
        complete_checksum(&mut f, &VirtioNetHdr::default()).unwrap();
        assert_eq!(f, frame, "nothing asked, nothing done");
        for (start, offset) in [(0, 16), (13, 0), (frame.len() as u16 - 1, 0), (34, 9000)] {
            let h = VirtioNetHdr {
                csum_start: start,
                csum_offset: offset,
                ..hdr
            };
            assert!(matches!(
                complete_checksum(&mut f, &h),
                Err(OffloadError::CsumOutOfBounds { .. })
            ));
            assert_eq!(f, frame, "untouched on error");
        }
        // The last two bytes of the packet are a valid place for the field.
        let h = VirtioNetHdr {
            csum_start: 34,
            csum_offset: frame.len() as u16 - 36,
            ..hdr
        };
        let before = f[f.len() - 2..].to_vec();
        complete_checksum(&mut f, &h).unwrap();
        assert!(
            verifies(&[&before, &f[34..]]),
            "the old partial sum plus the region"
        );
    }

    // --- Properties. ---

    fn spec_strategy(
        max_payload: usize,
        gso: std::ops::RangeInclusive<u16>,
    ) -> impl Strategy<Value = Spec> {
        let shape = (
            prop_oneof![Just(vec![]), Just(vec![0x8100]), Just(vec![0x88a8, 0x8100])],
            any::<bool>(),
            0usize..=10,
            proptest::option::of(0u8..4),
            proptest::option::of(0u8..4),
            any::<bool>(),
            0usize..=10,
        );
        let values = (
            any::<u8>(),
            any::<u32>(),
            any::<u16>(),
            proptest::collection::vec(any::<u8>(), 0..max_payload),
            gso,
            any::<bool>(),
        );
        (shape, values).prop_map(
            |(
                (tags, v6, ip_opts, hbh, dest, tcp, tcp_opts),
                (flags, seq, ip_id, payload, gso_size, ecn),
            )| Spec {
                tags,
                v6,
                ip_opts: ip_opts * 4,
                hbh,
                dest,
                tcp,
                tcp_opts: tcp_opts * 4,
                flags,
                seq,
                ip_id,
                payload,
                gso_size,
                ecn,
            },
        )
    }

    proptest! {
        #[test]
        fn segments_reassemble_and_verify(spec in spec_strategy(9000, 64..=2000)) {
            let b = build(&spec);
            let segs = run(&b.frame, &b.hdr).unwrap();
            check_segments(&spec, &b, &segs);
        }

        #[test]
        fn tiny_gso_sizes(spec in spec_strategy(300, 1..=16)) {
            let b = build(&spec);
            let segs = run(&b.frame, &b.hdr).unwrap();
            check_segments(&spec, &b, &segs);
        }

        #[test]
        fn completed_checksums_verify(
            spec in spec_strategy(3000, 1..=1),
            trailer in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            let (mut frame, hdr, full) = partial(&spec);
            frame.extend_from_slice(&trailer); // Ethernet padding is not summed
            complete_checksum(&mut frame, &hdr).unwrap();
            prop_assert!(same_checksum(field(&frame, &hdr), full));
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            frame in proptest::collection::vec(any::<u8>(), 0..200),
            hdr in any::<[u8; 12]>(),
        ) {
            let hdr = VirtioNetHdr::parse(&hdr);
            let mut emitted = 0;
            let mut scratch = [0u8; 256];
            match segment(&frame, &hdr, &mut scratch, |_| emitted += 1) {
                Ok(n) => prop_assert_eq!(n, emitted),
                Err(_) => prop_assert_eq!(emitted, 0),
            }
            let mut f = frame.clone();
            let _ = complete_checksum(&mut f, &hdr);
        }

        /// Valid frames with random damage: never a panic, and whatever comes out still has
        /// valid checksums (they are computed, never copied).
        #[test]
        fn damaged_frames_never_panic_and_output_verifies(
            spec in spec_strategy(3000, 1..=1500),
            hits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            cut in any::<prop::sample::Index>(),
            do_cut in any::<bool>(),
            hdr_hits in proptest::collection::vec((0usize..10, any::<u8>()), 0..2),
        ) {
            let b = build(&spec);
            let mut frame = b.frame.clone();
            for (i, v) in &hits {
                // Mostly hit the headers, where it matters.
                let at = i.index(b.header_len.min(frame.len()));
                frame[at] = *v;
            }
            if do_cut {
                frame.truncate(cut.index(frame.len() + 1));
            }
            let mut raw = [0u8; 12];
            b.hdr.write(&mut raw);
            for (i, v) in &hdr_hits {
                raw[*i] = *v;
            }
            let hdr = VirtioNetHdr::parse(&raw);
            let mut f = frame.clone();
            let _ = complete_checksum(&mut f, &hdr);
            let mut scratch = vec![0u8; 70_000];
            let mut segs = Vec::new();
            match segment(&frame, &hdr, &mut scratch, |s| segs.push(s.to_vec())) {
                Err(_) => prop_assert!(segs.is_empty()),
                Ok(n) => {
                    prop_assert_eq!(n, segs.len());
                    let seg = Segmenter::new(&frame, &hdr).unwrap();
                    for s in &segs {
                        prop_assert!(s.len() <= seg.header_len() + usize::from(hdr.gso_size));
                        verify_any(s);
                    }
                }
            }
        }
    }

    /// Verifies the IP and L4 checksums of an arbitrary segment: etherparse finds the
    /// headers, the reference sums check the bytes (etherparse's header model drops
    /// reserved bits, so its own checksum would not match damaged-but-forwardable input).
    fn verify_any(seg: &[u8]) {
        use etherparse::{NetSlice, SlicedPacket, TransportSlice};
        let p = SlicedPacket::from_ethernet(seg).expect("etherparse parses the segment");
        let (l4, proto) = match p.transport.expect("L4") {
            TransportSlice::Tcp(t) => (t.slice(), IPPROTO_TCP),
            TransportSlice::Udp(u) => (u.slice(), IPPROTO_UDP),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            l4.as_ptr_range().end,
            seg.as_ptr_range().end,
            "L4 ends the segment"
        );
        let pseudo = match p.net.expect("IP") {
            NetSlice::Ipv4(ip) => {
                let h = ip.header().slice();
                assert!(verifies(&[h]), "IPv4 header checksum");
                pseudo_v4(h, proto, l4.len())
            }
            NetSlice::Ipv6(ip) => pseudo_v6(ip.header().slice(), proto, l4.len()),
            other => panic!("{other:?}"),
        };
        assert!(verifies(&[&pseudo, l4]), "L4 checksum");
    }
}
