//! The Internet checksum (RFC 1071): the one implementation every format and service uses.
//!
//! Sums are accumulated in a `u64` of native-order 32-bit words (RFC 1071 §2(B): the sum
//! is byte-order independent, so reading words natively and swapping once at the end
//! gives the same result); the inner loop has independent lanes so the compiler
//! vectorizes it. Build a sum with [`sum`] and the pseudo-header helpers, then turn it
//! into a field value with [`fold`] / [`checksum`].
//!
//! Every piece passed to [`sum`] but the last must have an even length (the odd tail is
//! zero-padded); [`internet_checksum`] takes pieces of any length.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::ip::IpProtocol;

/// Adds `data` to a running sum (native-order words, an odd tail zero-padded).
#[inline]
pub fn sum(mut acc: u64, data: &[u8]) -> u64 {
    // A u64 takes 2^32 u32 words without overflowing, and packets are far smaller.
    let mut lanes = [0u64; 8];
    let mut blocks = data.chunks_exact(32);
    for block in blocks.by_ref() {
        for (lane, w) in lanes.iter_mut().zip(block.chunks_exact(4)) {
            *lane += u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
        }
    }
    acc += lanes.iter().sum::<u64>();
    let mut words = blocks.remainder().chunks_exact(4);
    for w in words.by_ref() {
        acc += u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        let mut w = [0u8; 4];
        w[..tail.len()].copy_from_slice(tail);
        acc += u64::from(u32::from_ne_bytes(w));
    }
    acc
}

/// Adds a 16-bit value (as it reads big-endian on the wire) to a running sum.
#[inline]
pub fn add_u16(acc: u64, value: u16) -> u64 {
    acc + u64::from(u16::from_ne_bytes(value.to_be_bytes()))
}

/// The one's-complement sum, folded to 16 bits, as a big-endian field value.
#[inline]
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    u16::from_be_bytes((acc as u16).to_ne_bytes())
}

/// The checksum to store for a sum taken with the field zeroed: the complement of the
/// folded sum. Verifying a region that carries its checksum gives 0.
#[inline]
pub fn checksum(acc: u64) -> u16 {
    !fold(acc)
}

/// [`checksum`] for UDP (and for offloaded checksums, which may be UDP's): a computed 0
/// is sent as 0xffff, the other zero, since a UDP checksum field of 0 means "none"
/// (RFC 768). TCP stores a computed 0 as it is.
#[inline]
pub fn transport_field(acc: u64) -> u16 {
    match checksum(acc) {
        0 => 0xffff,
        c => c,
    }
}

/// The sum of the IPv4 TCP/UDP pseudo-header (RFC 793/768): addresses, protocol, length.
#[inline]
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: IpProtocol, len: u16) -> u64 {
    let mut p = [0u8; 12];
    p[..4].copy_from_slice(&src.octets());
    p[4..8].copy_from_slice(&dst.octets());
    p[9] = protocol.0;
    p[10..12].copy_from_slice(&len.to_be_bytes());
    sum(0, &p)
}

/// The sum of the IPv6 upper-layer pseudo-header (RFC 8200 §8.1), used by TCP, UDP and
/// ICMPv6. `dst` is the final destination (after any routing header).
#[inline]
pub fn pseudo_header_v6(src: &Ipv6Addr, dst: &Ipv6Addr, protocol: IpProtocol, len: u32) -> u64 {
    let mut p = [0u8; 40];
    p[..16].copy_from_slice(&src.octets());
    p[16..32].copy_from_slice(&dst.octets());
    p[32..36].copy_from_slice(&len.to_be_bytes());
    p[39] = protocol.0;
    sum(0, &p)
}

/// The pseudo-header sum for either IP version. Mixed versions cannot occur on the wire;
/// an IPv4 address is then taken as IPv4-mapped, so the result is defined, not meaningful.
pub fn pseudo_header(src: &IpAddr, dst: &IpAddr, protocol: IpProtocol, len: u32) -> u64 {
    let v6 = |a: &IpAddr| match a {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => *a,
    };
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            pseudo_header_v4(*s, *d, protocol, u16::try_from(len).unwrap_or(u16::MAX))
        }
        _ => pseudo_header_v6(&v6(src), &v6(dst), protocol, len),
    }
}

/// RFC 1071 checksum over the concatenation of `parts` (of any lengths): 0 when the
/// parts already carry a correct checksum, the value to store when its field is 0.
pub fn internet_checksum(parts: &[&[u8]]) -> u16 {
    let mut acc = 0u64;
    let mut odd = false;
    for part in parts {
        let s = fold(sum(0, part));
        // A part starting at an odd offset contributes its own sum byte-swapped.
        acc += u64::from(if odd { s.swap_bytes() } else { s });
        odd ^= part.len() % 2 == 1;
    }
    // `acc` holds big-endian values; fold it in that order.
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The TCP/UDP checksum over the IPv4 pseudo-header and `segment`: 0 when `segment`
/// carries a correct checksum, the value to store when its checksum field is 0.
pub fn transport_checksum(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, segment: &[u8]) -> u16 {
    let len = u16::try_from(segment.len()).unwrap_or(u16::MAX);
    checksum(sum(
        pseudo_header_v4(src, dst, IpProtocol(protocol), len),
        segment,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An independent reference: plain big-endian 16-bit words.
    fn reference(bytes: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for pair in bytes.chunks(2) {
            acc += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: 0001 f203 f4f5 f6f7 sums to ddf2; the checksum is its complement.
        let b = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(&[&b]), !0xddf2);
        assert_eq!(fold(sum(0, &b)), 0xddf2);
        assert_eq!(fold(add_u16(0, 0xddf2)), 0xddf2);
    }

    #[test]
    fn known_ipv4_header() {
        let header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(sum(0, &header)), 0xb861);
    }

    proptest! {
        /// Matches the reference, wherever the bytes are split, and a region carrying its
        /// own checksum verifies.
        #[test]
        fn agrees_with_reference(bytes in proptest::collection::vec(any::<u8>(), 0..300), cut in 0usize..300) {
            let cut = cut.min(bytes.len());
            let whole = internet_checksum(&[&bytes]);
            prop_assert_eq!(whole, reference(&bytes));
            prop_assert_eq!(checksum(sum(0, &bytes)), whole);
            prop_assert_eq!(internet_checksum(&[&bytes[..cut], &bytes[cut..]]), whole);
            let mut even = bytes.clone();
            if even.len() % 2 == 1 { even.push(0); }
            let c = checksum(sum(0, &even));
            even.extend_from_slice(&c.to_be_bytes());
            prop_assert_eq!(checksum(sum(0, &even)), 0);
        }

        #[test]
        fn pseudo_headers_match_their_bytes(s in any::<[u8; 16]>(), d in any::<[u8; 16]>(), p in any::<u8>(), len in any::<u16>()) {
            let (s4, d4) = (Ipv4Addr::from([s[0], s[1], s[2], s[3]]), Ipv4Addr::from([d[0], d[1], d[2], d[3]]));
            let mut b = [&s[..4], &d[..4], &[0, p], &len.to_be_bytes()[..]].concat();
            prop_assert_eq!(checksum(pseudo_header_v4(s4, d4, IpProtocol(p), len)), reference(&b));
            let seg = vec![0; usize::from(len % 64)];
            prop_assert_eq!(transport_checksum(s4, d4, p, &seg), checksum(pseudo_header_v4(s4, d4, IpProtocol(p), len % 64)));
            b = [&s[..], &d[..], &u32::from(len).to_be_bytes()[..], &[0, 0, 0, p]].concat();
            let v6 = pseudo_header(&IpAddr::from(s), &IpAddr::from(d), IpProtocol(p), len.into());
            prop_assert_eq!(checksum(v6), reference(&b));
        }
    }
}
