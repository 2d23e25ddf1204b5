//! Reassembly of the IPv4 and IPv6 fragments guests send: a UDP datagram larger than
//! the vnet's MTU (big EDNS answers' queries, NFS, games, `iperf3 -u -l 8k`) leaves the
//! guest in pieces (IPv6: with a Fragment header, RFC 8200 §4.5), and its host socket
//! can only send it whole.
//!
//! Guests are not trusted, so everything is bounded: at most [`MAX_DATAGRAMS`]
//! datagrams are in reassembly at once, [`MAX_PER_SOURCE`] of them from one guest
//! address; each may grow to the IP maximum of 65535 bytes in at most
//! [`MAX_FRAGMENTS`] pieces and gets [`TIMEOUT`] from its first fragment. Fragments
//! that overlap (other than exact repeats) end their datagram, so no two readings of the
//! same bytes can exist (the teardrop family of tricks). Whatever is given up is
//! reported, for the device to count; the guest is not told (as in Linux without the
//! first fragment, and like a lost datagram to the sender). The two families share all
//! of it; an IPv6 datagram comes back without the extension headers that preceded its
//! Fragment header (the device reads none of them).

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::Range;
use std::time::{Duration, Instant};

use vnet_core::wire::{ipv4, ipv6, IpProtocol};

/// How long a datagram may take to arrive complete (RFC 791 suggests 15 s).
pub const TIMEOUT: Duration = Duration::from_secs(15);
/// Datagrams in reassembly at once, from all guests.
pub const MAX_DATAGRAMS: usize = 64;
/// Datagrams in reassembly at once from one guest address.
pub const MAX_PER_SOURCE: usize = 8;
/// Pieces one datagram may come in: 65535 bytes at MTU 1500 are 45.
pub const MAX_FRAGMENTS: usize = 64;

const MAX_IP_LEN: usize = 65535;

/// Fragments of one datagram share these (RFC 791; RFC 8200 §4.5 without the
/// protocol, which the Fragment header carries and which is then the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    src: IpAddr,
    dst: IpAddr,
    protocol: IpProtocol,
    id: u32,
}

/// A datagram being put together.
#[derive(Debug)]
struct Partial {
    /// The first fragment's header (IPv4: options included; IPv6: the fixed header,
    /// naming the upper layer), once it came.
    header: Option<Vec<u8>>,
    /// The payload so far; bytes outside `pieces` are not yet known.
    data: Vec<u8>,
    /// Byte ranges of `data` received, sorted, never overlapping.
    pieces: Vec<Range<usize>>,
    /// The payload's length, once the last fragment came.
    total: Option<usize>,
    deadline: Instant,
}

impl Partial {
    /// Adds a piece; `false` if it contradicts what came before.
    fn add(&mut self, range: Range<usize>, bytes: &[u8], last: bool) -> bool {
        if last {
            if self.total.is_some_and(|t| t != range.end)
                || self.pieces.last().is_some_and(|p| p.end > range.end)
            {
                return false;
            }
            self.total = Some(range.end);
        } else if self.total.is_some_and(|t| range.end > t) {
            return false;
        }
        let at = self.pieces.partition_point(|p| p.end <= range.start);
        if let Some(next) = self.pieces.get(at) {
            if next.start < range.end {
                // An exact repeat (a retransmission) is harmless; any other overlap
                // would let two versions of the same bytes exist.
                return *next == range && self.data[range] == *bytes;
            }
        }
        if self.pieces.len() >= MAX_FRAGMENTS {
            return false;
        }
        if self.data.len() < range.end {
            self.data.resize(range.end, 0);
        }
        self.data[range.clone()].copy_from_slice(bytes);
        self.pieces.insert(at, range);
        true
    }

    /// The whole datagram, if every piece is here.
    fn complete(&self) -> Option<Vec<u8>> {
        let (header, total) = (self.header.as_ref()?, self.total?);
        let received: usize = self.pieces.iter().map(|p| p.len()).sum();
        if received != total {
            return None;
        }
        let mut datagram = Vec::with_capacity(header.len() + total);
        datagram.extend_from_slice(header);
        datagram.extend_from_slice(&self.data[..total]);
        if header[0] >> 4 == 6 {
            let len = u16::try_from(total).ok()?;
            ipv6::Packet::new_unchecked(&mut datagram[..]).set_payload_len(len);
            return Some(datagram);
        }
        let len = u16::try_from(datagram.len()).ok()?;
        let mut ip = ipv4::Packet::new_unchecked(&mut datagram[..]);
        ip.set_total_len(len);
        ip.set_fragment(false, false, 0); // no longer a fragment
        ip.fill_checksum();
        Some(datagram)
    }
}

/// What became of a fragment.
#[derive(Debug, PartialEq, Eq)]
pub enum Reassembly {
    /// Kept; its datagram is not complete yet.
    Incomplete,
    /// It completed its datagram: the whole IP packet (IPv4: header checksum fresh).
    Complete(Vec<u8>),
    /// Its datagram was given up (overlap, contradiction, a limit) or never started
    /// (no room); the fragment is dropped.
    Dropped,
}

/// The datagrams in reassembly, keyed by (source, destination, protocol, ID).
#[derive(Debug, Default)]
pub struct Reassembler {
    partial: HashMap<Key, Partial>,
}

impl Reassembler {
    /// Takes one fragment: an IPv4 packet with a valid header whose MF flag is set or
    /// whose offset is not zero, or an IPv6 packet with a Fragment header. Never
    /// panics, whatever the bytes.
    pub fn add(&mut self, now: Instant, packet: &[u8]) -> Reassembly {
        let Some(Fragment {
            key,
            header,
            range,
            last,
            payload,
        }) = parse(packet)
        else {
            return Reassembly::Dropped;
        };
        if !self.partial.contains_key(&key) {
            let from_source = self.partial.keys().filter(|k| k.src == key.src).count();
            if self.partial.len() >= MAX_DATAGRAMS || from_source >= MAX_PER_SOURCE {
                return Reassembly::Dropped;
            }
            self.partial.insert(
                key,
                Partial {
                    header: None,
                    data: Vec::new(),
                    pieces: Vec::new(),
                    total: None,
                    deadline: now + TIMEOUT,
                },
            );
        }
        let p = self.partial.get_mut(&key).expect("inserted");
        if range.start == 0 {
            p.header = Some(header.into_owned());
        }
        if !p.add(range, payload, last) {
            self.partial.remove(&key);
            return Reassembly::Dropped;
        }
        match p.complete() {
            Some(datagram) => {
                self.partial.remove(&key);
                Reassembly::Complete(datagram)
            }
            None => Reassembly::Incomplete,
        }
    }

    /// Gives up datagrams whose time ran out; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.partial.len();
        self.partial.retain(|_, p| p.deadline > now);
        before - self.partial.len()
    }

    /// When [`Reassembler::expire`] next has work.
    pub fn deadline(&self) -> Option<Instant> {
        self.partial.values().map(|p| p.deadline).min()
    }

    /// Datagrams in reassembly now.
    pub fn len(&self) -> usize {
        self.partial.len()
    }

    pub fn is_empty(&self) -> bool {
        self.partial.is_empty()
    }
}

/// One fragment, as [`parse`] reads it.
struct Fragment<'a> {
    key: Key,
    /// Its IP header: IPv4's with options; IPv6's fixed header naming the upper layer.
    header: Cow<'a, [u8]>,
    /// Where its payload goes in the datagram's.
    range: Range<usize>,
    last: bool,
    payload: &'a [u8],
}

/// `None` if `b` cannot be part of a valid datagram (only its lengths are checked
/// here: the device checked the rest).
fn parse(b: &[u8]) -> Option<Fragment<'_>> {
    let (key, header, start, more, payload, most) = if b.first()? >> 4 == 6 {
        let ip = ipv6::Packet::new_checked(b).ok()?;
        let end = ipv6::HEADER_LEN + usize::from(ip.payload_len());
        let (fragment, at) = ip.ext_headers().find_map(|h| {
            let h = h.ok()?;
            Some((h.fragment()?, h.offset + ipv6::FRAGMENT_HEADER_LEN))
        })?;
        let mut header = b[..ipv6::HEADER_LEN].to_vec();
        ipv6::Packet::new_unchecked(&mut header[..]).set_next_header(fragment.next_header);
        let key = Key {
            src: ip.src_addr().into(),
            dst: ip.dst_addr().into(),
            protocol: fragment.next_header,
            id: fragment.ident,
        };
        let payload = b.get(ipv6::HEADER_LEN + at..end)?;
        let start = usize::from(fragment.frag_offset);
        // The payload length field bounds the datagram's payload.
        (
            key,
            Cow::Owned(header),
            start,
            fragment.more_frags,
            payload,
            MAX_IP_LEN,
        )
    } else {
        let ip = ipv4::Packet::new_checked(b).ok()?;
        let (ihl, total) = (usize::from(ip.header_len()), usize::from(ip.total_len()));
        let key = Key {
            src: ip.src_addr().into(),
            dst: ip.dst_addr().into(),
            protocol: ip.next_header(),
            id: u32::from(ip.ident()),
        };
        let start = usize::from(ip.frag_offset());
        let payload = b.get(ihl..total)?;
        // The total length field bounds the header and the payload.
        (
            key,
            Cow::Borrowed(&b[..ihl]),
            start,
            ip.more_frags(),
            payload,
            MAX_IP_LEN - ihl,
        )
    };
    let range = start..start + payload.len();
    // Pieces other than the last come in multiples of 8 bytes; nothing may reach past
    // the largest packet; an empty piece adds nothing but a way to pin memory.
    if payload.is_empty() || (more && !payload.len().is_multiple_of(8)) || range.end > most {
        return None;
    }
    Some(Fragment {
        key,
        header,
        range,
        last: !more,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::{self, Route};
    use proptest::prelude::*;
    use std::net::Ipv4Addr;
    use vnet_core::wire::ethernet::{MacAddr, HEADER_LEN};
    use vnet_core::wire::udp;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
    const DST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

    /// A UDP datagram of `len` payload bytes from SRC to DST, as one IPv4 packet.
    fn udp_packet(id: u16, len: usize) -> Vec<u8> {
        let route = Route {
            src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            dst_mac: MacAddr([2, 0, 0, 0, 0, 2]),
            src: SRC.into(),
            dst: DST.into(),
        };
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 + usize::from(id)) as u8).collect();
        let udp = frames::udp_datagram(&route, 5000, 53, &payload);
        let mut frame = frames::ip_frame(&route, IpProtocol::UDP, id, &udp);
        frame.drain(..HEADER_LEN);
        frame.truncate(20 + udp.len()); // no Ethernet padding
        frame
    }

    /// `packet` cut into fragments of at most `size` payload bytes (a multiple of 8).
    fn fragment(packet: &[u8], size: usize) -> Vec<Vec<u8>> {
        let (header, payload) = packet.split_at(20);
        let chunks: Vec<&[u8]> = payload.chunks(size).collect();
        chunks
            .iter()
            .enumerate()
            .map(|(i, chunk)| {
                let mut f = header.to_vec();
                f.extend_from_slice(chunk);
                let len = f.len() as u16;
                let mut ip = ipv4::Packet::new_unchecked(&mut f[..]);
                ip.set_total_len(len);
                ip.set_fragment(false, i + 1 < chunks.len(), (i * size) as u16);
                ip.fill_checksum();
                f
            })
            .collect()
    }

    fn complete(r: Reassembly) -> Vec<u8> {
        match r {
            Reassembly::Complete(d) => d,
            other => panic!("not complete: {other:?}"),
        }
    }

    #[test]
    fn fragments_in_any_order_give_back_the_datagram() {
        let packet = udp_packet(7, 4000);
        let mut frags = fragment(&packet, 1480);
        assert_eq!(frags.len(), 3);
        frags.swap(0, 2);
        let t = Instant::now();
        let mut r = Reassembler::default();
        assert_eq!(r.add(t, &frags[0]), Reassembly::Incomplete);
        assert_eq!(r.add(t, &frags[1]), Reassembly::Incomplete);
        let whole = complete(r.add(t, &frags[2]));
        assert_eq!(whole, packet, "byte for byte, header checksum included");
        let ip = ipv4::Packet::new_checked(&whole[..]).unwrap();
        ipv4::Repr::parse(&ip).expect("header checksum holds");
        assert!(!ip.is_fragment(), "no longer a fragment");
        let udp = udp::Packet::new_checked(ip.payload()).unwrap();
        let (src, dst) = (IpAddr::V4(SRC), IpAddr::V4(DST));
        assert!(udp.verify_checksum(&src, &dst), "UDP checksum holds");
        assert_eq!(udp.payload().len(), 4000);
        assert!(r.is_empty());
    }

    #[test]
    fn repeats_are_harmless_but_overlaps_and_contradictions_drop_the_datagram() {
        let t = Instant::now();
        let packet = udp_packet(1, 3000);
        let frags = fragment(&packet, 1000);
        let mut r = Reassembler::default();
        assert_eq!(r.add(t, &frags[0]), Reassembly::Incomplete);
        assert_eq!(r.add(t, &frags[0]), Reassembly::Incomplete, "a repeat");
        assert_eq!(r.add(t, &frags[1]), Reassembly::Incomplete);
        assert_eq!(r.add(t, &frags[2]), Reassembly::Incomplete);
        assert_eq!(complete(r.add(t, &frags[3])), packet);

        // The same bytes twice with different contents.
        let mut liar = frags[1].clone();
        liar[30] ^= 0xff;
        assert_eq!(r.add(t, &frags[1]), Reassembly::Incomplete);
        assert_eq!(r.add(t, &liar), Reassembly::Dropped);
        assert!(r.is_empty());

        // Pieces overlapping the one before or the one after (teardrop).
        let halves = fragment(&packet, 504);
        assert_eq!(r.add(t, &frags[0]), Reassembly::Incomplete);
        assert_eq!(r.add(t, &halves[1]), Reassembly::Dropped, "504..1008");
        assert_eq!(r.add(t, &frags[2]), Reassembly::Incomplete);
        assert_eq!(r.add(t, &halves[3]), Reassembly::Dropped, "1512..2016");
        assert!(r.is_empty());

        // Two different ends, or data past the end.
        let shorter = fragment(&udp_packet(1, 2000), 1000);
        assert_eq!(r.add(t, &frags[3]), Reassembly::Incomplete);
        assert_eq!(r.add(t, &shorter[2]), Reassembly::Dropped);
        assert_eq!(r.add(t, &shorter[2]), Reassembly::Incomplete);
        assert_eq!(r.add(t, &frags[2]), Reassembly::Dropped);
    }

    #[test]
    fn odd_sized_middle_pieces_and_oversized_datagrams_are_refused() {
        let t = Instant::now();
        let mut r = Reassembler::default();
        let mut odd = fragment(&udp_packet(2, 3000), 1000)[0].clone();
        odd.truncate(odd.len() - 3);
        let len = odd.len() as u16;
        ipv4::Packet::new_unchecked(&mut odd[..]).set_total_len(len);
        assert_eq!(r.add(t, &odd), Reassembly::Dropped);
        let mut beyond = fragment(&udp_packet(3, 3000), 1000)[1].clone();
        ipv4::Packet::new_unchecked(&mut beyond[..]).set_fragment(false, true, 8180 * 8);
        assert_eq!(r.add(t, &beyond), Reassembly::Dropped, "past 65535 bytes");
        assert!(r.is_empty());
    }

    #[test]
    fn datagrams_time_out_and_the_limits_hold() {
        let t = Instant::now();
        let mut r = Reassembler::default();
        for id in 0..MAX_PER_SOURCE as u16 + 1 {
            let first = &fragment(&udp_packet(id, 2000), 1000)[0];
            let want = if usize::from(id) < MAX_PER_SOURCE {
                Reassembly::Incomplete
            } else {
                Reassembly::Dropped
            };
            assert_eq!(r.add(t, first), want, "datagram {id}");
        }
        assert_eq!(r.len(), MAX_PER_SOURCE);
        assert_eq!(r.deadline(), Some(t + TIMEOUT));
        assert_eq!(r.expire(t + TIMEOUT - Duration::from_millis(1)), 0);
        assert_eq!(r.expire(t + TIMEOUT), MAX_PER_SOURCE);
        assert_eq!(r.deadline(), None);

        // Many pieces: the 65th is one too many.
        let tiny = fragment(&udp_packet(99, 8 * (MAX_FRAGMENTS + 4)), 8);
        for f in &tiny[..MAX_FRAGMENTS] {
            assert_eq!(r.add(t, f), Reassembly::Incomplete);
        }
        assert_eq!(r.add(t, &tiny[MAX_FRAGMENTS]), Reassembly::Dropped);
    }

    #[test]
    fn the_global_limit_holds_across_sources() {
        let t = Instant::now();
        let mut r = Reassembler::default();
        let mut n = 0;
        'fill: for source in 1..=255u8 {
            for id in 0..MAX_PER_SOURCE as u16 {
                let mut f = fragment(&udp_packet(id, 2000), 1000)[0].clone();
                let mut ip = ipv4::Packet::new_unchecked(&mut f[..]);
                ip.set_src_addr(Ipv4Addr::new(10, 0, 0, source));
                ip.fill_checksum();
                if n == MAX_DATAGRAMS {
                    assert_eq!(r.add(t, &f), Reassembly::Dropped);
                    break 'fill;
                }
                assert_eq!(r.add(t, &f), Reassembly::Incomplete);
                n += 1;
            }
        }
        assert_eq!(r.len(), MAX_DATAGRAMS);
    }

    proptest! {
        #[test]
        fn any_bytes_are_safe(packets in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..120), 0..20)
        ) {
            let mut r = Reassembler::default();
            for p in &packets {
                let _ = r.add(Instant::now(), p);
            }
            prop_assert!(r.len() <= MAX_DATAGRAMS);
        }

        #[test]
        fn shuffled_and_repeated_fragments_reassemble(
            len in 1usize..6000, size in 1usize..200, order in any::<u64>()
        ) {
            let packet = udp_packet(4, len);
            let mut frags = fragment(&packet, size * 8);
            // A deterministic shuffle, and the first piece once more at the front.
            let mut seed = order | 1;
            for i in (1..frags.len()).rev() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                frags.swap(i, (seed % (i as u64 + 1)) as usize);
            }
            if frags.len() > MAX_FRAGMENTS {
                return Ok(());
            }
            frags.insert(0, frags[frags.len() - 1].clone());
            let mut r = Reassembler::default();
            let t = Instant::now();
            let mut got = None;
            for f in &frags {
                match r.add(t, f) {
                    Reassembly::Complete(d) => got = Some(d),
                    Reassembly::Incomplete => {}
                    Reassembly::Dropped => prop_assert!(false, "dropped"),
                }
            }
            prop_assert_eq!(got, Some(packet));
        }
    }
}
