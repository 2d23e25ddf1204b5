//! VXLAN (RFC 7348): an Ethernet frame inside a UDP datagram, behind an 8-byte header
//! that names its segment (the VNI).
//!
//! ```text
//! 0 flags (I = 0x08)  1..4 reserved  4..7 VNI (24 bits)  7 reserved  8 inner frame ...
//! ```
//!
//! The I flag must be set and no other flag may be (Linux's `vxlan` driver without
//! extensions drops such datagrams too: a flag we do not know may change what the rest
//! means). The reserved fields are sent as zero and ignored on receipt, as the RFC says.
//!
//! [`flow_entropy`] gives the outer UDP source port: a hash of the inner flow, so that
//! routers hashing the outer headers (ECMP) keep one flow on one path and spread many
//! (RFC 7348 §5).

use super::{be16, be32, Error, Field, Result};

mod field {
    use super::Field;
    pub const FLAGS: usize = 0;
    pub const VNI: Field = 4..7;
}

/// Bytes of the VXLAN header.
pub const HEADER_LEN: usize = 8;
/// The I flag: the VNI field is valid. The only flag RFC 7348 defines.
pub const FLAG_VNI: u8 = 0x08;
/// VNIs are 24 bits.
pub const MAX_VNI: u32 = (1 << 24) - 1;
/// The UDP port IANA assigned to VXLAN.
pub const DEFAULT_PORT: u16 = 4789;
/// Outer headers in front of the inner frame over IPv4: IPv4 (20) + UDP (8) + VXLAN (8)
/// + the inner Ethernet header (14), which the vnet's MTU does not count.
pub const OVERHEAD_V4: u32 = 50;
/// The same over IPv6 (a 40-byte IP header).
pub const OVERHEAD_V6: u32 = 70;

/// A view of a VXLAN datagram's payload (header and inner frame).
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// A view whose getters and [`Self::inner`] are in bounds.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Packet { buffer };
        p.check_len()?;
        Ok(p)
    }

    /// Truncated below the 8-byte header.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    pub fn vni(&self) -> u32 {
        be32(self.buffer.as_ref(), field::VNI.start - 1) & MAX_VNI
    }

    /// The encapsulated Ethernet frame.
    pub fn inner(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_flags(&mut self, v: u8) {
        self.buffer.as_mut()[field::FLAGS] = v;
    }

    /// Sets the 24-bit VNI; higher bits of `v` are ignored.
    pub fn set_vni(&mut self, v: u32) {
        self.buffer.as_mut()[field::VNI].copy_from_slice(&(v & MAX_VNI).to_be_bytes()[1..]);
    }

    pub fn inner_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// A VXLAN header's meaning: the segment its frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub vni: u32,
}

impl Repr {
    /// Reads the header: Truncated below 8 bytes, Malformed without the I flag or with
    /// any other.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Self> {
        p.check_len()?;
        if p.flags() != FLAG_VNI {
            return Err(Error::Malformed);
        }
        Ok(Repr { vni: p.vni() })
    }

    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header: the I flag, the VNI, zero reserved fields.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.buffer.as_mut()[..HEADER_LEN].fill(0);
        p.set_flags(FLAG_VNI);
        p.set_vni(self.vni);
    }

    /// The header as bytes, for a gathered send in front of the frame.
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        self.emit(&mut Packet::new_unchecked(&mut b[..]));
        b
    }
}

/// The kernel's default range for VXLAN source ports (`ip link ... srcport`), the
/// ephemeral port range of a default Linux.
pub const SOURCE_PORTS: [u16; 2] = [32768, 61000];

/// A UDP source port in `range` (inclusive, `range[0] <= range[1]`) chosen by the
/// inner frame's flow: its MAC addresses and EtherType and, for IPv4 and IPv6, its
/// addresses, protocol and (for TCP and UDP) ports. Frames of one flow always get the
/// same port; any bytes are accepted.
pub fn flow_entropy(frame: &[u8], range: [u16; 2]) -> u16 {
    // FNV-1a: tiny, deterministic (the same flow must get the same port across runs
    // and hosts' restarts do not matter, but tests compare), and good enough to spread.
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
    };
    let at = |r: std::ops::Range<usize>| frame.get(r).unwrap_or_default();
    eat(at(0..14));
    let l3 = 14;
    match frame.get(12..14).map(|t| be16(t, 0)) {
        Some(0x0800) => {
            eat(at(l3 + 9..l3 + 10)); // protocol
            eat(at(l3 + 12..l3 + 20)); // addresses
            let ihl = frame.get(l3).map_or(20, |b| usize::from(b & 0x0f) * 4);
            let proto = frame.get(l3 + 9).copied();
            if matches!(proto, Some(6 | 17)) {
                eat(at(l3 + ihl..l3 + ihl + 4));
            }
        }
        Some(0x86dd) => {
            eat(at(l3 + 6..l3 + 7)); // next header
            eat(at(l3 + 8..l3 + 40)); // addresses
            if matches!(frame.get(l3 + 6), Some(6 | 17)) {
                eat(at(l3 + 40..l3 + 44));
            }
        }
        _ => {}
    }
    let span = u32::from(range[1].saturating_sub(range[0])) + 1;
    // Fold the high bits in: FNV's low bits alone spread less well.
    range[0] + ((h ^ (h >> 16)) % span) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// VNI 100 (0x000064), then the start of a broadcast frame.
    static DATAGRAM: [u8; 22] = [
        0x08, 0, 0, 0, 0x00, 0x00, 0x64, 0, //
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0, 0, 0, 1, 0x08, 0x06,
    ];

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&DATAGRAM[..]).unwrap();
        assert_eq!(p.flags(), FLAG_VNI);
        assert_eq!(Repr::parse(&p).unwrap(), Repr { vni: 100 });
        assert_eq!(p.inner(), &DATAGRAM[8..]);
    }

    #[test]
    fn construct() {
        let mut b = [0xaau8; 22];
        b[8..].copy_from_slice(&DATAGRAM[8..]);
        let mut p = Packet::new_unchecked(&mut b[..]);
        Repr { vni: 100 }.emit(&mut p);
        assert_eq!(b, DATAGRAM);
        assert_eq!(Repr { vni: 100 }.to_bytes(), DATAGRAM[..8]);
    }

    #[test]
    fn the_whole_24_bits_of_vni_and_nothing_more() {
        let mut b = [0u8; 8];
        let mut p = Packet::new_unchecked(&mut b[..]);
        Repr { vni: MAX_VNI }.emit(&mut p);
        assert_eq!(Repr::parse(&p).unwrap().vni, MAX_VNI);
        p.set_vni(MAX_VNI + 2);
        assert_eq!(p.vni(), 1);
        assert_eq!(b[7], 0, "the reserved byte after the VNI stays zero");
        assert_eq!(&b[1..4], &[0, 0, 0]);
    }

    #[test]
    fn short_and_wrongly_flagged_headers_are_refused() {
        assert_eq!(
            Packet::new_checked(&DATAGRAM[..7]).err(),
            Some(Error::Truncated)
        );
        for flags in [0x00, 0x0c, 0x88, 0xff] {
            let mut b = DATAGRAM;
            b[0] = flags;
            let p = Packet::new_checked(&b[..]).unwrap();
            assert_eq!(Repr::parse(&p), Err(Error::Malformed), "{flags:#x}");
        }
        // Reserved fields are ignored on receipt.
        let mut b = DATAGRAM;
        b[1] = 0xff;
        b[7] = 0xff;
        assert_eq!(
            Repr::parse(&Packet::new_checked(&b[..]).unwrap()),
            Ok(Repr { vni: 100 })
        );
    }

    fn ipv4_tcp(sport: u16, dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[..12].copy_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[14 + 9] = 6;
        f[14 + 12..14 + 20].copy_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f
    }

    #[test]
    fn one_flow_one_port_and_flows_spread_over_the_range() {
        let a = flow_entropy(&ipv4_tcp(40000, 80), SOURCE_PORTS);
        let mut again = ipv4_tcp(40000, 80);
        again[50] = 0x55; // payload differs, the flow does not
        assert_eq!(a, flow_entropy(&again, SOURCE_PORTS));
        let ports: std::collections::BTreeSet<u16> = (0..64)
            .map(|i| flow_entropy(&ipv4_tcp(40000 + i, 80), SOURCE_PORTS))
            .collect();
        assert!(ports.len() > 32, "64 flows got only {} ports", ports.len());
        assert!(ports
            .iter()
            .all(|p| (SOURCE_PORTS[0]..=SOURCE_PORTS[1]).contains(p)));
        assert_eq!(flow_entropy(&ipv4_tcp(1, 2), [5000, 5000]), 5000);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_or_fail_cleanly(bytes: Vec<u8>, lo: u16, span: u16) {
            if let Ok(p) = Packet::new_checked(&bytes[..]) {
                let _ = Repr::parse(&p);
                let _ = p.inner();
            }
            let hi = lo.saturating_add(span);
            let port = flow_entropy(&bytes, [lo, hi]);
            proptest::prop_assert!((lo..=hi).contains(&port));
        }
    }
}
