//! The Internet checksum (RFC 1071) and the TCP/UDP pseudo-header checksum over IPv4,
//! shared by every service that builds or checks packets.

use std::net::Ipv4Addr;

/// The TCP/UDP checksum over the pseudo-header and `segment`: 0 when `segment` carries
/// a correct checksum, the value to store when its checksum field is 0.
pub fn transport_checksum(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, segment: &[u8]) -> u16 {
    let len = u16::try_from(segment.len())
        .unwrap_or(u16::MAX)
        .to_be_bytes();
    let pseudo = [0, protocol, len[0], len[1]];
    internet_checksum(&[&src.octets(), &dst.octets(), &pseudo, segment])
}

/// RFC 1071 one's-complement checksum over the concatenation of `parts`.
pub fn internet_checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    let mut odd: Option<u8> = None;
    for part in parts {
        let mut rest: &[u8] = part;
        if let Some(high) = odd.take() {
            if let Some((&low, tail)) = rest.split_first() {
                sum += u64::from(u16::from_be_bytes([high, low]));
                rest = tail;
            } else {
                odd = Some(high);
                continue;
            }
        }
        let mut pairs = rest.chunks_exact(2);
        for p in &mut pairs {
            sum += u64::from(u16::from_be_bytes([p[0], p[1]]));
        }
        if let [last] = pairs.remainder() {
            odd = Some(*last);
        }
    }
    if let Some(high) = odd {
        sum += u64::from(u16::from_be_bytes([high, 0]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: 0001 f203 f4f5 f6f7 sums to ddf2; the checksum is its complement.
        assert_eq!(
            internet_checksum(&[&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]]),
            !0xddf2
        );
    }

    proptest! {
        /// Where the bytes are split does not matter, and a packet carrying its own
        /// checksum sums to zero.
        #[test]
        fn split_independent_and_self_verifying(bytes in proptest::collection::vec(any::<u8>(), 0..300), cut in 0usize..300) {
            let cut = cut.min(bytes.len());
            let whole = internet_checksum(&[&bytes]);
            prop_assert_eq!(internet_checksum(&[&bytes[..cut], &bytes[cut..]]), whole);
            let mut even = bytes.clone();
            if even.len() % 2 == 1 { even.push(0); }
            let sum = internet_checksum(&[&even]);
            even.extend_from_slice(&sum.to_be_bytes());
            prop_assert!(matches!(internet_checksum(&[&even]), 0 | 0xffff));
            let _ = transport_checksum(Ipv4Addr::LOCALHOST, Ipv4Addr::BROADCAST, 17, &bytes);
        }
    }
}
