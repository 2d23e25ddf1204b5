//! UDP (RFC 768) over IPv4 or IPv6.
//!
//! ```text
//! 0 src port  2 dst port  4 length  6 checksum  8 payload ...
//! ```
//!
//! [`Packet::new_checked`] guarantees 8 ≤ length ≤ buffer, so [`Packet::payload`] (cut
//! at the length) is in bounds. The checksum covers the pseudo-header of the enclosing IP
//! packet, so verifying it takes the addresses; 0 means "none" over IPv4 only.

use std::net::IpAddr;

use super::checksum;
use super::ip::IpProtocol;
use super::{be16, Error, Field, Result};

mod field {
    use super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
}

pub const HEADER_LEN: usize = field::CHECKSUM.end;
/// Where the checksum field is, from the start of the header.
pub const CHECKSUM_OFFSET: usize = field::CHECKSUM.start;

/// A view of a UDP datagram.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
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

    /// Truncated below 8 bytes or the length field; Malformed for a length below 8.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let l = usize::from(self.len());
        if l < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if l > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT.start)
    }
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT.start)
    }
    /// The length field: header plus payload.
    pub fn len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH.start)
    }
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM.start)
    }
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }

    /// The checksum is right for this pseudo-header. A zero field ("no checksum") passes
    /// over IPv4 and fails over IPv6, where it is mandatory (RFC 8200 §8.1).
    pub fn verify_checksum(&self, src: &IpAddr, dst: &IpAddr) -> bool {
        if self.checksum() == 0 {
            return src.is_ipv4();
        }
        let datagram = &self.buffer.as_ref()[..usize::from(self.len())];
        let pseudo = checksum::pseudo_header(src, dst, IpProtocol::UDP, u32::from(self.len()));
        checksum::checksum(checksum::sum(pseudo, datagram)) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_src_port(&mut self, v: u16) {
        self.buffer.as_mut()[field::SRC_PORT].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_dst_port(&mut self, v: u16) {
        self.buffer.as_mut()[field::DST_PORT].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_len(&mut self, v: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_checksum(&mut self, v: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&v.to_be_bytes());
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
    /// Computes and stores the checksum over the pseudo-header and the datagram (up to
    /// the length field); a computed 0 is stored as 0xffff.
    pub fn fill_checksum(&mut self, src: &IpAddr, dst: &IpAddr) {
        self.set_checksum(0);
        let len = self.len();
        let pseudo = checksum::pseudo_header(src, dst, IpProtocol::UDP, u32::from(len));
        let c = checksum::transport_field(checksum::sum(
            pseudo,
            &self.buffer.as_ref()[..usize::from(len)],
        ));
        self.set_checksum(c);
    }
}

/// A UDP header's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src_port: u16,
    pub dst_port: u16,
    pub payload_len: usize,
}

impl Repr {
    /// Reads the header; the checksum is left to [`Packet::verify_checksum`].
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Self> {
        p.check_len()?;
        Ok(Repr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            payload_len: usize::from(p.len()) - HEADER_LEN,
        })
    }

    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the header with a zero checksum: write the payload, then
    /// [`Packet::fill_checksum`]. `payload_len` must fit 65527.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_len((HEADER_LEN + self.payload_len) as u16);
        p.set_checksum(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 1));
    const DST: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 2));

    /// 49152 → 53, payload "abcd", checksum by hand: pseudo c0a8 0101 c0a8 0102 0011 000c,
    /// header c000 0035 000c, data 6162 6364.
    static DATAGRAM: [u8; 12] = [
        0xc0, 0x00, 0x00, 0x35, 0x00, 0x0c, 0xf7, 0x85, 0x61, 0x62, 0x63, 0x64,
    ];

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&DATAGRAM[..]).unwrap();
        assert!(p.verify_checksum(&SRC, &DST));
        assert_eq!(p.payload(), b"abcd");
        assert_eq!(
            Repr::parse(&p).unwrap(),
            Repr {
                src_port: 49152,
                dst_port: 53,
                payload_len: 4
            }
        );
    }

    #[test]
    fn construct() {
        let mut b = [0u8; 12];
        let mut p = Packet::new_unchecked(&mut b[..]);
        Repr {
            src_port: 49152,
            dst_port: 53,
            payload_len: 4,
        }
        .emit(&mut p);
        p.payload_mut().copy_from_slice(b"abcd");
        p.fill_checksum(&SRC, &DST);
        assert_eq!(b, DATAGRAM);
    }

    #[test]
    fn refuses() {
        assert_eq!(
            Packet::new_checked(&DATAGRAM[..7]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            Packet::new_checked(&DATAGRAM[..11]).unwrap_err(),
            Error::Truncated
        );
        let mut b = DATAGRAM;
        b[5] = 7;
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::Malformed);
        let mut b = DATAGRAM;
        b[6..8].fill(0);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum(&SRC, &DST), "no checksum over IPv4");
        let v6 = IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);
        assert!(!p.verify_checksum(&v6, &v6), "mandatory over IPv6");
    }
}
