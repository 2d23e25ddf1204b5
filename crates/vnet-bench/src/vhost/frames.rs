//! The test traffic: Ethernet frames carrying a sequence number, the send time and a
//! checksum of their payload, behind a `virtio_net_hdr_v1`.
//!
//! Small frames are plain Ethernet (ethertype 0x88b5, local experimental); TSO frames
//! are IPv4/TCP super-frames with `GSO_TCPV4` and a partial checksum, as Linux hands a
//! virtio-net device. The payload pattern is written once per buffer slot; each send
//! only stamps the sequence number and time.

/// `virtio_net_hdr_v1` (with `num_buffers`): always there with `VIRTIO_F_VERSION_1`.
pub const NET_HDR: usize = 12;
const MAGIC: u32 = u32::from_be_bytes(*b"VNTG");
const TEST_HDR: usize = 28;
const ETHERTYPE_TEST: u16 = 0x88b5;
const ETH: usize = 14;
/// Ethernet + IPv4 + TCP headers of a TSO frame.
const TSO_HEADERS: usize = ETH + 20 + 20;
/// MSS the TSO frames ask for.
pub const MSS: u16 = 1448;
/// Largest TSO frame: an IPv4 packet of 65535 bytes.
pub const MAX_TSO_FRAME: usize = ETH + 65535;

/// What to send: frame length, kind and the two MACs.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub len: usize,
    pub tso: bool,
    pub src: [u8; 6],
    pub dst: [u8; 6],
}

impl Shape {
    /// Where the test header sits in the frame.
    fn test_at(&self) -> usize {
        if self.tso {
            TSO_HEADERS
        } else {
            ETH
        }
    }

    /// Checks the length: room for the headers, at most one IPv4 packet.
    pub fn validate(&self) -> Result<(), String> {
        let min = self.test_at() + TEST_HDR;
        let max = if self.tso { MAX_TSO_FRAME } else { 65535 };
        if self.len < min || self.len > max {
            return Err(format!("frame length {} is not in {min}..={max}", self.len));
        }
        Ok(())
    }

    /// Writes header, frame and payload pattern for slot `slot` into `buf` (at least
    /// `NET_HDR + len` bytes); `stamp` later fills in sequence and time.
    pub fn fill(&self, buf: &mut [u8], slot: u16) {
        let buf = &mut buf[..NET_HDR + self.len];
        buf[..NET_HDR].fill(0);
        let f = &mut buf[NET_HDR..];
        f[0..6].copy_from_slice(&self.dst);
        f[6..12].copy_from_slice(&self.src);
        let at = self.test_at();
        if self.tso {
            f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
            let ip_len = (self.len - ETH) as u16;
            let ip = &mut f[ETH..ETH + 20];
            ip.copy_from_slice(&[
                0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
            ]);
            ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
            let sum = !fold(sum16(ip));
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
            let tcp = &mut f[ETH + 20..TSO_HEADERS];
            tcp.copy_from_slice(&[
                0x9c, 0x40, 0x13, 0x89, 0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0,
            ]);
            // NEEDS_CSUM: the TCP checksum field holds the pseudo-header sum.
            let pseudo = fold(sum16(&[10, 0, 0, 1, 10, 0, 0, 2]) + 6 + u32::from(ip_len - 20));
            tcp[16..18].copy_from_slice(&pseudo.to_be_bytes());
            let h = &mut buf[..NET_HDR];
            h[0] = 1; // VIRTIO_NET_HDR_F_NEEDS_CSUM
            h[1] = 1; // VIRTIO_NET_HDR_GSO_TCPV4
            h[2..4].copy_from_slice(&(TSO_HEADERS as u16).to_le_bytes());
            h[4..6].copy_from_slice(&MSS.to_le_bytes());
            h[6..8].copy_from_slice(&((ETH + 20) as u16).to_le_bytes());
            h[8..10].copy_from_slice(&16u16.to_le_bytes());
        } else {
            f[12..14].copy_from_slice(&ETHERTYPE_TEST.to_be_bytes());
        }
        let f = &mut buf[NET_HDR..];
        let payload = &mut f[at + TEST_HDR..];
        for (i, b) in payload.iter_mut().enumerate() {
            *b = (i as u16).wrapping_mul(31).wrapping_add(slot) as u8;
        }
        let sum = payload_sum(payload);
        let t = &mut f[at..at + TEST_HDR];
        t[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        t[20..28].copy_from_slice(&sum.to_le_bytes());
    }

    /// Puts sequence number and send time (ns) into a filled buffer.
    pub fn stamp(&self, buf: &mut [u8], seq: u64, sent_ns: u64) {
        let at = NET_HDR + self.test_at();
        buf[at + 4..at + 12].copy_from_slice(&seq.to_le_bytes());
        buf[at + 12..at + 20].copy_from_slice(&sent_ns.to_le_bytes());
    }
}

/// What a received buffer (header + frame) carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// A test frame: its sequence number and send time.
    Test { seq: u64, sent_ns: u64 },
    /// Some other frame (a switch's or guest's own traffic): ignored.
    Other,
    /// A test frame whose payload does not match its checksum, or cut short.
    Corrupt,
}

/// Reads a received `virtio_net_hdr` + frame.
pub fn check(buf: &[u8]) -> Arrival {
    let Some(f) = buf.get(NET_HDR..) else {
        return Arrival::Other;
    };
    let at = match f.get(12..14).map(|t| u16::from_be_bytes([t[0], t[1]])) {
        Some(ETHERTYPE_TEST) => ETH,
        Some(0x0800) if f.get(ETH + 9) == Some(&6) => TSO_HEADERS,
        _ => return Arrival::Other,
    };
    let Some(t) = f.get(at..at + TEST_HDR) else {
        return Arrival::Other;
    };
    if t[0..4] != MAGIC.to_be_bytes() {
        return Arrival::Other;
    }
    let word = |r: std::ops::Range<usize>| u64::from_le_bytes(t[r].try_into().expect("8 bytes"));
    if payload_sum(&f[at + TEST_HDR..]) != word(20..28) {
        return Arrival::Corrupt;
    }
    Arrival::Test {
        seq: word(4..12),
        sent_ns: word(12..20),
    }
}

/// The payload checksum: a sum of 64-bit words (fast enough to check every byte at
/// tens of Gbit/s), with the length folded in so a cut frame does not pass.
pub fn payload_sum(p: &[u8]) -> u64 {
    let mut chunks = p.chunks_exact(8);
    let mut sum = p.len() as u64;
    for c in &mut chunks {
        sum = sum.wrapping_add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
    }
    for (i, &b) in chunks.remainder().iter().enumerate() {
        sum = sum.wrapping_add(u64::from(b) << (8 * i));
    }
    sum
}

fn sum16(b: &[u8]) -> u32 {
    b.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(len: usize, tso: bool) -> Shape {
        Shape {
            len,
            tso,
            src: [2, 0, 0, 0, 0, 1],
            dst: [2, 0, 0, 0, 0, 2],
        }
    }

    #[test]
    fn frames_carry_sequence_time_and_a_checked_payload() {
        for s in [
            shape(60, false),
            shape(MAX_TSO_FRAME, true),
            shape(1514, true),
        ] {
            s.validate().unwrap();
            let mut buf = vec![0u8; NET_HDR + s.len];
            s.fill(&mut buf, 7);
            s.stamp(&mut buf, 42, 1234);
            assert_eq!(
                check(&buf),
                Arrival::Test {
                    seq: 42,
                    sent_ns: 1234
                }
            );
            let last = buf.len() - 1;
            buf[last] ^= 1;
            assert_eq!(check(&buf), Arrival::Corrupt, "a flipped payload bit");
            buf[last] ^= 1;
            assert_eq!(check(&buf[..last]), Arrival::Corrupt, "a cut frame");
        }
        assert_eq!(check(&[0u8; 80]), Arrival::Other);
        assert_eq!(check(&[0u8; 3]), Arrival::Other);
    }

    #[test]
    fn tso_frames_have_a_valid_ip_header_and_gso_metadata() {
        let s = shape(MAX_TSO_FRAME, true);
        let mut buf = vec![0u8; NET_HDR + s.len];
        s.fill(&mut buf, 0);
        let ip = &buf[NET_HDR + ETH..NET_HDR + ETH + 20];
        assert_eq!(fold(sum16(ip)), 0xffff, "header checksum verifies");
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 65535);
        assert_eq!(&buf[..2], &[1, 1], "NEEDS_CSUM, GSO_TCPV4");
        assert!(shape(20, false).validate().is_err());
        assert!(shape(MAX_TSO_FRAME + 1, true).validate().is_err());
    }
}
