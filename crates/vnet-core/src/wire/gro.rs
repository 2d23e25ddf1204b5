//! Receive offload in software (GRO): consecutive TCP segments of one flow merged back
//! into one GSO super-frame, the inverse of [`Segmenter`](super::offload::Segmenter).
//!
//! # Why
//!
//! A VXLAN tunnel brings a bulk TCP stream as a train of MTU-sized segments. Handed on
//! one by one, each costs a pass through the switch and a write to the VM's TAP; merged,
//! forty of them cost one, and a port that takes offloads (TAP, vhost-user) gets the
//! super-frame whole, as the kernel's own GRO would give it. A port that does not take
//! offloads gets it cut again by the egress path, so merging never changes what arrives.
//!
//! # Rules (those of the kernel's `tcp_gro_receive`, a little stricter)
//!
//! A segment starts a super-frame, or continues the one being built, only if:
//!
//! - it is an untruncated Ethernet frame (tags allowed) carrying IPv4 without
//!   fragmentation or IPv6 without extension headers, then TCP with a payload;
//! - it is no longer than the receiving vnet's largest frame (given to
//!   [`Coalescer::start`], plus 4 bytes for a tag): a segment over the MTU passes
//!   alone, for the switch to drop and count as oversize, never inside a super-frame;
//! - its IPv4 header checksum and its TCP checksum are right: the super-frame leaves
//!   with a partial checksum (`F_NEEDS_CSUM`), which the receiving stack trusts, so a
//!   segment damaged on the way must not be laundered into it;
//! - its flags are ACK, and PSH or ECE only: SYN, FIN, RST, URG and CWR segments pass
//!   alone;
//! - to continue: every header byte equals the first segment's except the IP length,
//!   identification and header checksum, the TCP sequence number, window, checksum and
//!   PSH; the sequence number is the next expected; the payload is at most the first
//!   segment's (the super-frame's `gso_size`). A shorter payload, or PSH, ends it;
//!   [`MAX_SEGMENTS`] segments or a 16-bit IP length end it too.
//!
//! The super-frame carries the first segment's headers with the IP length (and IPv4
//! header checksum) fixed, the last segment's window, PSH if any segment had it, and the
//! pseudo-header sum in the TCP checksum field; its [`VirtioNetHdr`] says
//! `GSO_TCPV4`/`GSO_TCPV6`, `gso_size` and `F_NEEDS_CSUM` at the TCP header, exactly
//! what a TAP with `IFF_VNET_HDR` gives and takes.

use super::checksum::{self, fold};
use super::ip::IpProtocol;
use super::offload::{parse_ip, Ip, VirtioNetHdr};
use super::tcp::{self, Flags};
use super::{ethernet, ipv4, ipv6};

/// Most segments one super-frame merges (the kernel's GRO stops at 64 too).
pub const MAX_SEGMENTS: usize = 64;

/// Flags a mergeable segment may carry besides ACK.
const MERGEABLE: u8 = Flags::ACK | Flags::PSH | Flags::ECE;

/// Builds super-frames from segments given in order: [`start`](Self::start), then
/// [`append`](Self::append) while it accepts, then [`finish`](Self::finish). Keeps
/// its buffer from one super-frame to the next.
#[derive(Debug, Default)]
pub struct Coalescer {
    out: Vec<u8>,
    flow: Option<Flow>,
}

/// The super-frame being built.
#[derive(Debug, Clone, Copy)]
struct Flow {
    ip: Ip,
    l3: usize,
    l4: usize,
    header_len: usize,
    gso_size: usize,
    next_seq: u32,
    segments: usize,
    /// A short or PSH segment went in: nothing may follow.
    closed: bool,
}

/// What one mergeable segment is.
struct Segment {
    ip: Ip,
    l3: usize,
    l4: usize,
    header_len: usize,
    seq: u32,
    flags: u8,
}

/// Parses `frame` as a mergeable segment (see the module doc), checksums included.
fn segment(frame: &[u8]) -> Option<Segment> {
    let layout = parse_ip(frame, false).ok()?;
    if layout.protocol != IpProtocol::TCP || layout.end != frame.len() {
        return None;
    }
    let (l3, l4) = (layout.l3, layout.l4);
    let ip = &frame[l3..];
    let (src, dst) = match layout.ip {
        Ip::V4 => {
            let p = ipv4::Packet::new_unchecked(ip);
            if !p.verify_checksum() {
                return None;
            }
            (p.src_addr().into(), p.dst_addr().into())
        }
        Ip::V6 => {
            if l4 != l3 + ipv6::HEADER_LEN {
                return None;
            }
            let p = ipv6::Packet::new_unchecked(ip);
            (p.src_addr().into(), p.dst_addr().into())
        }
    };
    let t = tcp::Packet::new_checked(&frame[l4..]).ok()?;
    let header_len = l4 + usize::from(t.header_len());
    let flags = t.flags().0;
    if header_len >= frame.len() || flags & Flags::ACK == 0 || flags & !MERGEABLE != 0 {
        return None;
    }
    if !t.verify_checksum(&src, &dst) {
        return None;
    }
    Some(Segment {
        ip: layout.ip,
        l3,
        l4,
        header_len,
        seq: t.seq_number(),
        flags,
    })
}

/// Whether `next`'s headers equal `first`'s in every byte that must not change within
/// a flow (see the module doc). Both are `seg`'s shape (same offsets).
fn same_flow(seg: &Flow, first: &[u8], next: &[u8]) -> bool {
    let (l3, l4, hl) = (seg.l3, seg.l4, seg.header_len);
    let eq = |r: std::ops::Range<usize>| first[r.clone()] == next[r];
    let ip_same = match seg.ip {
        // Version to TOS; flags and offset, TTL, protocol; addresses and options.
        Ip::V4 => eq(l3..l3 + 2) && eq(l3 + 6..l3 + 10) && eq(l3 + 12..l4),
        // Version, class, flow label; next header, hop limit, addresses.
        Ip::V6 => eq(l3..l3 + 4) && eq(l3 + 6..l4),
    };
    // The byte of the TCP flags, after the acknowledgement and the data offset.
    let flags = l4 + 13;
    eq(0..l3)
        && ip_same
        // Ports; acknowledgement, data offset; options.
        && eq(l4..l4 + 4)
        && eq(l4 + 8..flags)
        && first[flags] & !Flags::PSH == next[flags] & !Flags::PSH
        && eq(l4 + tcp::HEADER_LEN..hl)
}

impl Coalescer {
    /// Starts a super-frame with `frame`, whose segments may be `max_frame` bytes
    /// long (untagged: the vnet's MTU + 14): false (and nothing kept) if the frame
    /// cannot be merged with anything, which then goes on alone.
    pub fn start(&mut self, frame: &[u8], max_frame: usize) -> bool {
        self.flow = None;
        let Some(s) = segment(frame) else {
            return false;
        };
        let tags = (s.l3 - ethernet::HEADER_LEN).min(ethernet::VLAN_TAG_LEN);
        if frame.len() > max_frame + tags {
            return false;
        }
        let payload = frame.len() - s.header_len;
        self.out.clear();
        self.out.extend_from_slice(frame);
        self.flow = Some(Flow {
            ip: s.ip,
            l3: s.l3,
            l4: s.l4,
            header_len: s.header_len,
            gso_size: payload,
            next_seq: s.seq.wrapping_add(payload as u32),
            segments: 1,
            closed: s.flags & Flags::PSH != 0,
        });
        true
    }

    /// Appends `frame` if it continues the super-frame; false (nothing changed) if not,
    /// and the caller finishes this one and starts anew with `frame`.
    pub fn append(&mut self, frame: &[u8]) -> bool {
        let Some(flow) = &mut self.flow else {
            return false;
        };
        if flow.closed || flow.segments >= MAX_SEGMENTS || frame.len() <= flow.header_len {
            return false;
        }
        let payload = frame.len() - flow.header_len;
        let ip_len = self.out.len() + payload
            - flow.l3
            - if flow.ip == Ip::V6 {
                ipv6::HEADER_LEN
            } else {
                0
            };
        if payload > flow.gso_size || ip_len > usize::from(u16::MAX) {
            return false;
        }
        let Some(s) = segment(frame) else {
            return false;
        };
        if (s.l3, s.l4, s.header_len) != (flow.l3, flow.l4, flow.header_len)
            || s.seq != flow.next_seq
            || !same_flow(flow, &self.out, frame)
        {
            return false;
        }
        let window = tcp::Packet::new_unchecked(&frame[flow.l4..]).window_len();
        let mut t = tcp::Packet::new_unchecked(&mut self.out[flow.l4..]);
        t.set_window_len(window);
        t.set_flags(Flags(t.flags().0 | (s.flags & Flags::PSH)));
        self.out.extend_from_slice(&frame[flow.header_len..]);
        flow.next_seq = s.seq.wrapping_add(payload as u32);
        flow.segments += 1;
        flow.closed = payload < flow.gso_size || s.flags & Flags::PSH != 0;
        true
    }

    /// How many segments the super-frame being built holds.
    pub fn segments(&self) -> usize {
        self.flow.map_or(0, |f| f.segments)
    }

    /// Ends the super-frame: its offload header if it merged two segments or more (its
    /// bytes are then [`super_frame`](Self::super_frame)); `None` for a lone segment
    /// (the caller sends the original) or none.
    pub fn finish(&mut self) -> Option<VirtioNetHdr> {
        let flow = self.flow.take()?;
        if flow.segments < 2 {
            return None;
        }
        let (l3, l4) = (flow.l3, flow.l4);
        let l4_len = self.out.len() - l4;
        let (pseudo, gso_type) = match flow.ip {
            Ip::V4 => {
                let mut ip = ipv4::Packet::new_unchecked(&mut self.out[l3..l4]);
                ip.set_total_len((l4_len + l4 - l3) as u16);
                ip.fill_checksum();
                let (src, dst) = (ip.src_addr(), ip.dst_addr());
                let pseudo = checksum::pseudo_header_v4(src, dst, IpProtocol::TCP, l4_len as u16);
                (pseudo, VirtioNetHdr::GSO_TCPV4)
            }
            Ip::V6 => {
                let mut ip = ipv6::Packet::new_unchecked(&mut self.out[l3..l4]);
                ip.set_payload_len(l4_len as u16);
                let pseudo = checksum::pseudo_header_v6(
                    &ip.src_addr(),
                    &ip.dst_addr(),
                    IpProtocol::TCP,
                    l4_len as u32,
                );
                (pseudo, VirtioNetHdr::GSO_TCPV6)
            }
        };
        let csum = l4 + tcp::CHECKSUM_OFFSET;
        // The partial checksum a sender's stack leaves: the folded pseudo-header sum,
        // not complemented (the receiver adds the segment and complements).
        self.out[csum..csum + 2].copy_from_slice(&fold(pseudo).to_be_bytes());
        let hdr = VirtioNetHdr {
            flags: VirtioNetHdr::F_NEEDS_CSUM,
            gso_type,
            hdr_len: flow.header_len as u16,
            gso_size: flow.gso_size as u16,
            csum_start: l4 as u16,
            csum_offset: tcp::CHECKSUM_OFFSET as u16,
        };
        Some(hdr)
    }

    /// The super-frame the last [`finish`](Self::finish) that returned a header ended.
    pub fn super_frame(&self) -> &[u8] {
        &self.out
    }
}

#[cfg(test)]
mod tests {
    use super::super::offload::{complete_checksum, Segmenter};
    use super::*;

    /// A TCP super-frame of `payload` bytes over IPv4 or IPv6, partial checksum, as a
    /// TAP hands it over with `gso_size` 1000.
    fn super_frame(v6: bool, payload: usize, flags: u8) -> (Vec<u8>, VirtioNetHdr) {
        let l3 = 14;
        let ip_len = if v6 { 40 } else { 20 };
        let l4 = l3 + ip_len;
        let mut f = vec![0u8; l4 + 20 + payload];
        f[..12].copy_from_slice(&[2, 0, 0, 0, 0, 0xb, 2, 0, 0, 0, 0, 0xa]);
        if v6 {
            f[12..14].copy_from_slice(&[0x86, 0xdd]);
            f[l3] = 0x60;
            f[l3 + 4..l3 + 6].copy_from_slice(&((20 + payload) as u16).to_be_bytes());
            f[l3 + 6] = 6;
            f[l3 + 7] = 64;
            f[l3 + 8] = 0xfd;
            f[l3 + 23] = 1;
            f[l3 + 24] = 0xfd;
            f[l3 + 39] = 2;
        } else {
            f[12..14].copy_from_slice(&[0x08, 0x00]);
            f[l3] = 0x45;
            f[l3 + 2..l3 + 4].copy_from_slice(&((20 + 20 + payload) as u16).to_be_bytes());
            f[l3 + 6] = 0x40; // DF
            f[l3 + 8] = 64;
            f[l3 + 9] = 6;
            f[l3 + 12..l3 + 20].copy_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
            ipv4::Packet::new_unchecked(&mut f[l3..l4]).fill_checksum();
        }
        f[l4..l4 + 4].copy_from_slice(&[0x30, 0x39, 0x14, 0x51]);
        f[l4 + 4..l4 + 8].copy_from_slice(&0xfffff000u32.to_be_bytes()); // wraps
        f[l4 + 8..l4 + 12].copy_from_slice(&77u32.to_be_bytes());
        f[l4 + 12] = 0x50;
        f[l4 + 13] = flags;
        f[l4 + 14..l4 + 16].copy_from_slice(&512u16.to_be_bytes());
        for (i, b) in f[l4 + 20..].iter_mut().enumerate() {
            *b = (i * 7) as u8;
        }
        let hdr = VirtioNetHdr {
            flags: VirtioNetHdr::F_NEEDS_CSUM,
            gso_type: if v6 {
                VirtioNetHdr::GSO_TCPV6
            } else {
                VirtioNetHdr::GSO_TCPV4
            },
            hdr_len: (l4 + 20) as u16,
            gso_size: 1000,
            csum_start: l4 as u16,
            csum_offset: 16,
        };
        (f, hdr)
    }

    fn cut(frame: &[u8], hdr: &VirtioNetHdr) -> Vec<Vec<u8>> {
        let seg = Segmenter::new(frame, hdr).unwrap();
        (0..seg.count())
            .map(|i| {
                let mut out = vec![0; seg.max_segment_len()];
                let n = seg.write(i, &mut out).unwrap();
                out.truncate(n);
                out
            })
            .collect()
    }

    /// Merges `segments` in order; returns each super-frame (or lone segment) made.
    fn merge(segments: &[Vec<u8>]) -> Vec<(Vec<u8>, Option<VirtioNetHdr>)> {
        let mut gro = Coalescer::default();
        let mut made = Vec::new();
        let mut lone: Option<&Vec<u8>> = None;
        for s in segments {
            if gro.append(s) {
                continue;
            }
            if let Some(l) = lone.take() {
                made.push(match gro.finish() {
                    Some(h) => (gro.super_frame().to_vec(), Some(h)),
                    None => (l.clone(), None),
                });
            }
            lone = Some(s);
            gro.start(s, 1514);
        }
        if let Some(l) = lone {
            made.push(match gro.finish() {
                Some(h) => (gro.super_frame().to_vec(), Some(h)),
                None => (l.clone(), None),
            });
        }
        made
    }

    #[test]
    fn segments_merge_back_into_a_super_frame_that_cuts_into_the_same_segments() {
        for v6 in [false, true] {
            let (f, hdr) = super_frame(v6, 4500, Flags::ACK | Flags::PSH);
            let segments = cut(&f, &hdr);
            assert_eq!(segments.len(), 5);
            let made = merge(&segments);
            assert_eq!(made.len(), 1, "v6 {v6}");
            let (merged, got) = &made[0];
            let got = got.expect("a super-frame");
            assert_eq!(got, hdr, "v6 {v6}");
            assert_eq!(cut(merged, &got), segments, "v6 {v6}");
            // Its checksum completes to the one of the whole payload.
            let mut whole = merged.clone();
            complete_checksum(&mut whole, &got).unwrap();
            let l4 = usize::from(got.csum_start);
            let (src, dst) = if v6 {
                let p = ipv6::Packet::new_unchecked(&whole[14..]);
                (p.src_addr().into(), p.dst_addr().into())
            } else {
                let p = ipv4::Packet::new_unchecked(&whole[14..]);
                assert!(p.verify_checksum());
                (p.src_addr().into(), p.dst_addr().into())
            };
            assert!(tcp::Packet::new_unchecked(&whole[l4..]).verify_checksum(&src, &dst));
        }
    }

    #[test]
    fn a_damaged_or_foreign_segment_ends_the_train_and_passes_alone() {
        let (f, hdr) = super_frame(false, 6000, Flags::ACK);
        let mut segments = cut(&f, &hdr);
        // Segment 2 damaged on the way; segment 4 of another flow (port).
        *segments[2].last_mut().unwrap() ^= 1;
        segments[4][14 + 20] ^= 1;
        let tcp_csum = 14 + 20 + 16;
        let fixed = {
            let s = &mut segments[4];
            s[tcp_csum..tcp_csum + 2].fill(0);
            let mut p = tcp::Packet::new_unchecked(&mut s[34..]);
            p.fill_checksum(&[10, 0, 0, 1].into(), &[10, 0, 0, 2].into());
            s.clone()
        };
        let made = merge(&segments);
        let shape: Vec<usize> = made
            .iter()
            .map(|(f, h)| h.map_or(1, |h| cut(f, &h).len()))
            .collect();
        // [0 1] [2: bad, alone] [3: seq gap after 2 is fine, alone: 4 is foreign] [4] [5]
        assert_eq!(shape, [2, 1, 1, 1, 1]);
        assert_eq!(made[1].0, segments[2]);
        assert_eq!(made[3].0, fixed);
        assert!(made[1].1.is_none() && made[3].1.is_none());
    }

    #[test]
    fn syn_fin_empty_and_oversize_segments_never_merge() {
        let mut gro = Coalescer::default();
        for flags in [
            Flags::SYN | Flags::ACK,
            Flags::FIN | Flags::ACK,
            Flags::RST,
            0,
        ] {
            let (f, hdr) = super_frame(false, 1000, flags);
            let one = &cut(&f, &VirtioNetHdr { flags: 0, ..hdr })[0];
            assert!(!gro.start(one, 1514), "flags {flags:#x}");
        }
        let (f, _) = super_frame(false, 0, Flags::ACK);
        assert!(!gro.start(&f, 1514));
        // A segment over the vnet's MTU is the switch's to drop, never merged.
        let (f, hdr) = super_frame(false, 3000, Flags::ACK);
        let one = &cut(&f, &hdr)[0];
        assert!(!gro.start(one, one.len() - 1));
        assert!(gro.start(one, one.len()));
        assert!(gro.finish().is_none());
    }

    #[test]
    fn a_short_or_pushed_segment_is_the_last() {
        let (f, hdr) = super_frame(false, 2500, Flags::ACK);
        let mut segments = cut(&f, &hdr);
        // Another train of the same flow follows the short third segment.
        let (g, _) = super_frame(false, 2000, Flags::ACK);
        let mut more = cut(&g, &hdr);
        for s in &mut more {
            let mut p = tcp::Packet::new_unchecked(&mut s[34..]);
            p.set_seq_number(p.seq_number().wrapping_add(2500));
            p.set_checksum(0);
            p.fill_checksum(&[10, 0, 0, 1].into(), &[10, 0, 0, 2].into());
        }
        segments.extend(more);
        let made = merge(&segments);
        let counts: Vec<usize> = made
            .iter()
            .map(|(f, h)| h.map_or(1, |h| cut(f, &h).len()))
            .collect();
        assert_eq!(counts, [3, 2]);
    }
}
