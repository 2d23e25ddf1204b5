//! TCP (RFC 9293) headers and options.
//!
//! ```text
//! 0 src port  2 dst port  4 seq  8 ack  12 data offset/flags  14 window
//! 16 checksum  18 urgent  20 options (data offset*4 - 20) ... payload
//! ```
//!
//! [`Packet::new_checked`] guarantees 20 ≤ header length ≤ buffer, so
//! [`Packet::options`] and [`Packet::payload`] are in bounds (the payload is the rest of
//! the buffer: cut the buffer at the IP payload length first). [`Options`] walks the
//! options and never panics: a bad length ends it with an error.

use std::net::IpAddr;

use super::checksum;
use super::ip::IpProtocol;
use super::{be16, be32, Error, Field, Result};

mod field {
    use super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const SEQ_NUM: Field = 4..8;
    pub const ACK_NUM: Field = 8..12;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WIN_SIZE: Field = 14..16;
    pub const CHECKSUM: Field = 16..18;
    pub const URGENT: Field = 18..20;
}

/// Length of a header without options.
pub const HEADER_LEN: usize = field::URGENT.end;
/// Where the checksum field is, from the start of the header.
pub const CHECKSUM_OFFSET: usize = field::CHECKSUM.start;
/// The most option bytes a header holds (data offset 15).
pub const MAX_OPTIONS_LEN: usize = 40;

/// The flags byte (the NS bit of byte 12 is obsolete, RFC 8311, and not modelled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(pub u8);

impl Flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;

    pub fn has(self, flag: u8) -> bool {
        self.0 & flag == flag
    }
}

/// A view of a TCP segment.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// A view whose getters, [`Self::options`] and [`Self::payload`] are in bounds.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Packet { buffer };
        p.check_len()?;
        Ok(p)
    }

    /// Truncated below 20 bytes or the header length; Malformed for a data offset below 5.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let h = usize::from(self.header_len());
        if h < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if h > len {
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
    pub fn seq_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SEQ_NUM.start)
    }
    pub fn ack_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::ACK_NUM.start)
    }
    /// Header length in bytes (data offset × 4).
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }
    pub fn flags(&self) -> Flags {
        Flags(self.buffer.as_ref()[field::FLAGS])
    }
    pub fn window_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::WIN_SIZE.start)
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM.start)
    }
    pub fn urgent_at(&self) -> u16 {
        be16(self.buffer.as_ref(), field::URGENT.start)
    }
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.header_len())]
    }
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[usize::from(self.header_len())..]
    }
    /// The checksum over this pseudo-header and the whole buffer is right.
    pub fn verify_checksum(&self, src: &IpAddr, dst: &IpAddr) -> bool {
        let b = self.buffer.as_ref();
        let pseudo = checksum::pseudo_header(src, dst, IpProtocol::TCP, b.len() as u32);
        checksum::checksum(checksum::sum(pseudo, b)) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_src_port(&mut self, v: u16) {
        self.buffer.as_mut()[field::SRC_PORT].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_dst_port(&mut self, v: u16) {
        self.buffer.as_mut()[field::DST_PORT].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_seq_number(&mut self, v: u32) {
        self.buffer.as_mut()[field::SEQ_NUM].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_ack_number(&mut self, v: u32) {
        self.buffer.as_mut()[field::ACK_NUM].copy_from_slice(&v.to_be_bytes());
    }
    /// Sets the data offset from a header length in bytes (a multiple of 4, 20..=60).
    pub fn set_header_len(&mut self, len: u8) {
        self.buffer.as_mut()[field::DATA_OFF] = (len / 4) << 4;
    }
    pub fn set_flags(&mut self, f: Flags) {
        self.buffer.as_mut()[field::FLAGS] = f.0;
    }
    pub fn set_window_len(&mut self, v: u16) {
        self.buffer.as_mut()[field::WIN_SIZE].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_checksum(&mut self, v: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_urgent_at(&mut self, v: u16) {
        self.buffer.as_mut()[field::URGENT].copy_from_slice(&v.to_be_bytes());
    }
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.header_len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = usize::from(self.header_len());
        &mut self.buffer.as_mut()[start..]
    }
    /// Computes and stores the checksum over the pseudo-header and the whole buffer.
    pub fn fill_checksum(&mut self, src: &IpAddr, dst: &IpAddr) {
        self.set_checksum(0);
        let b = self.buffer.as_ref();
        let pseudo = checksum::pseudo_header(src, dst, IpProtocol::TCP, b.len() as u32);
        let c = checksum::checksum(checksum::sum(pseudo, b));
        self.set_checksum(c);
    }
}

/// One TCP option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpOption<'a> {
    EndOfList,
    NoOperation,
    MaxSegmentSize(u16),
    WindowScale(u8),
    SackPermitted,
    /// Up to four (left, right) edges, in order.
    SackRange([Option<(u32, u32)>; 4]),
    Timestamp {
        tsval: u32,
        tsecr: u32,
    },
    Unknown {
        kind: u8,
        data: &'a [u8],
    },
}

mod kind {
    pub const END: u8 = 0;
    pub const NOP: u8 = 1;
    pub const MSS: u8 = 2;
    pub const WS: u8 = 3;
    pub const SACK_PERMITTED: u8 = 4;
    pub const SACK: u8 = 5;
    pub const TIMESTAMP: u8 = 8;
}

impl TcpOption<'_> {
    pub fn buffer_len(&self) -> usize {
        match self {
            TcpOption::EndOfList | TcpOption::NoOperation => 1,
            TcpOption::MaxSegmentSize(_) => 4,
            TcpOption::WindowScale(_) => 3,
            TcpOption::SackPermitted => 2,
            TcpOption::SackRange(r) => 2 + 8 * r.iter().flatten().count(),
            TcpOption::Timestamp { .. } => 10,
            TcpOption::Unknown { data, .. } => 2 + data.len(),
        }
    }

    /// Writes the option at the front of `buf` (at least [`Self::buffer_len`] bytes) and
    /// returns the rest. An `Unknown` with more than 253 bytes of data is a caller bug.
    pub fn emit<'b>(&self, buf: &'b mut [u8]) -> &'b mut [u8] {
        let len = self.buffer_len();
        let (b, rest) = buf.split_at_mut(len);
        match *self {
            TcpOption::EndOfList => b[0] = kind::END,
            TcpOption::NoOperation => b[0] = kind::NOP,
            TcpOption::MaxSegmentSize(v) => {
                b[..2].copy_from_slice(&[kind::MSS, 4]);
                b[2..].copy_from_slice(&v.to_be_bytes());
            }
            TcpOption::WindowScale(v) => b.copy_from_slice(&[kind::WS, 3, v]),
            TcpOption::SackPermitted => b.copy_from_slice(&[kind::SACK_PERMITTED, 2]),
            TcpOption::SackRange(r) => {
                b[..2].copy_from_slice(&[kind::SACK, len as u8]);
                for (chunk, (l, r)) in b[2..].chunks_exact_mut(8).zip(r.iter().flatten()) {
                    chunk[..4].copy_from_slice(&l.to_be_bytes());
                    chunk[4..].copy_from_slice(&r.to_be_bytes());
                }
            }
            TcpOption::Timestamp { tsval, tsecr } => {
                b[..2].copy_from_slice(&[kind::TIMESTAMP, 10]);
                b[2..6].copy_from_slice(&tsval.to_be_bytes());
                b[6..].copy_from_slice(&tsecr.to_be_bytes());
            }
            TcpOption::Unknown { kind, data } => {
                b[..2].copy_from_slice(&[kind, len as u8]);
                b[2..].copy_from_slice(data);
            }
        }
        rest
    }
}

/// Iterates over option bytes. Yields `EndOfList` once and stops there (what follows is
/// padding); a length below 2, past the end or wrong for a known kind yields
/// [`Error::Malformed`] and ends the walk.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    rest: &'a [u8],
}

impl<'a> Options<'a> {
    pub fn new(options: &'a [u8]) -> Self {
        Options { rest: options }
    }
}

impl<'a> Iterator for Options<'a> {
    type Item = Result<TcpOption<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        let (&k, after) = self.rest.split_first()?;
        match k {
            kind::END => {
                self.rest = &[];
                return Some(Ok(TcpOption::EndOfList));
            }
            kind::NOP => {
                self.rest = after;
                return Some(Ok(TcpOption::NoOperation));
            }
            _ => {}
        }
        let len = after.first().map_or(0, |&l| usize::from(l));
        if len < 2 || len > self.rest.len() {
            self.rest = &[];
            return Some(Err(Error::Malformed));
        }
        let (opt, rest) = self.rest.split_at(len);
        self.rest = rest;
        let data = &opt[2..];
        let parsed = match (k, len) {
            (kind::MSS, 4) => TcpOption::MaxSegmentSize(be16(data, 0)),
            (kind::WS, 3) => TcpOption::WindowScale(data[0]),
            (kind::SACK_PERMITTED, 2) => TcpOption::SackPermitted,
            (kind::SACK, 10 | 18 | 26 | 34) => {
                let mut r = [None; 4];
                for (slot, c) in r.iter_mut().zip(data.chunks_exact(8)) {
                    *slot = Some((be32(c, 0), be32(c, 4)));
                }
                TcpOption::SackRange(r)
            }
            (kind::TIMESTAMP, 10) => TcpOption::Timestamp {
                tsval: be32(data, 0),
                tsecr: be32(data, 4),
            },
            (kind::MSS | kind::WS | kind::SACK_PERMITTED | kind::SACK | kind::TIMESTAMP, _) => {
                self.rest = &[];
                return Some(Err(Error::Malformed));
            }
            (kind, _) => TcpOption::Unknown { kind, data },
        };
        Some(Ok(parsed))
    }
}

/// A TCP header's meaning, with the options vnet uses; unknown options are skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Repr {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq_number: u32,
    pub ack_number: u32,
    pub flags: Flags,
    pub window_len: u16,
    pub urgent_at: u16,
    pub max_seg_size: Option<u16>,
    pub window_scale: Option<u8>,
    pub sack_permitted: bool,
    pub sack_ranges: [Option<(u32, u32)>; 4],
    pub timestamp: Option<(u32, u32)>,
    pub payload_len: usize,
}

impl Repr {
    /// Reads the header and its options; refuses malformed options. The checksum is left
    /// to [`Packet::verify_checksum`].
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Self> {
        p.check_len()?;
        let mut r = Repr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            seq_number: p.seq_number(),
            ack_number: p.ack_number(),
            flags: p.flags(),
            window_len: p.window_len(),
            urgent_at: p.urgent_at(),
            payload_len: p.payload().len(),
            ..Repr::default()
        };
        for opt in Options::new(p.options()) {
            match opt? {
                TcpOption::MaxSegmentSize(v) => r.max_seg_size = Some(v),
                TcpOption::WindowScale(v) => r.window_scale = Some(v),
                TcpOption::SackPermitted => r.sack_permitted = true,
                TcpOption::SackRange(s) => r.sack_ranges = s,
                TcpOption::Timestamp { tsval, tsecr } => r.timestamp = Some((tsval, tsecr)),
                _ => {}
            }
        }
        Ok(r)
    }

    fn options_len(&self) -> usize {
        let sacks = self.sack_ranges.iter().flatten().count();
        self.max_seg_size.map_or(0, |_| 4)
            + self.window_scale.map_or(0, |_| 4) // NOP + 3
            + if self.sack_permitted { 2 } else { 0 }
            + self.timestamp.map_or(0, |_| 10)
            + if sacks > 0 { 2 + 8 * sacks } else { 0 }
    }

    /// Header length with the options, padded to 4 bytes. More options than 40 bytes
    /// hold (all of them and four SACK blocks) is a caller bug.
    pub fn header_len(&self) -> usize {
        HEADER_LEN + self.options_len().div_ceil(4) * 4
    }

    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload_len
    }

    /// Writes the header and options (MSS, NOP+window scale, SACK-permitted, timestamps,
    /// SACK blocks, then NOP padding) with a zero checksum: write the payload, then
    /// [`Packet::fill_checksum`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_seq_number(self.seq_number);
        p.set_ack_number(self.ack_number);
        p.set_header_len(self.header_len() as u8);
        p.set_flags(self.flags);
        p.set_window_len(self.window_len);
        p.set_checksum(0);
        p.set_urgent_at(self.urgent_at);
        let mut b = p.options_mut();
        if let Some(v) = self.max_seg_size {
            b = TcpOption::MaxSegmentSize(v).emit(b);
        }
        if let Some(v) = self.window_scale {
            b = TcpOption::NoOperation.emit(b);
            b = TcpOption::WindowScale(v).emit(b);
        }
        if self.sack_permitted {
            b = TcpOption::SackPermitted.emit(b);
        }
        if let Some((tsval, tsecr)) = self.timestamp {
            b = TcpOption::Timestamp { tsval, tsecr }.emit(b);
        }
        if self.sack_ranges.iter().any(Option::is_some) {
            b = TcpOption::SackRange(self.sack_ranges).emit(b);
        }
        b.fill(kind::NOP);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const DST: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    /// A Linux SYN: MSS 1460, SACK-permitted, timestamps, NOP, window scale 7.
    static SYN: [u8; 40] = [
        0xc0, 0x01, 0x00, 0x50, 0x11, 0x22, 0x33, 0x44, 0, 0, 0, 0, 0xa0, 0x02, 0xfa, 0xf0, 0, 0,
        0, 0, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x00, 0x01, 0x02, 0x03, 0, 0, 0, 0,
        0x01, 0x03, 0x03, 0x07,
    ];

    #[test]
    fn a_checksum_that_computes_to_zero_is_stored_as_zero() {
        // Two payload bytes chosen to bring the sum to 0xffff: the checksum is then 0,
        // which TCP (unlike UDP) stores as it is, as Linux and etherparse do.
        let mut seg = SYN.to_vec();
        seg.extend([0, 0]);
        let mut p = Packet::new_unchecked(&mut seg[..]);
        p.fill_checksum(&SRC, &DST);
        let c = p.checksum();
        let len = seg.len();
        seg[len - 2..].copy_from_slice(&c.to_be_bytes());
        let mut p = Packet::new_unchecked(&mut seg[..]);
        p.fill_checksum(&SRC, &DST);
        assert_eq!(p.checksum(), 0);
        let pseudo = checksum::pseudo_header(&SRC, &DST, IpProtocol::TCP, len as u32);
        assert_eq!(
            checksum::fold(checksum::sum(pseudo, &seg)),
            0xffff,
            "it verifies"
        );
    }

    #[test]
    fn deconstruct_options() {
        let p = Packet::new_checked(&SYN[..]).unwrap();
        let opts: Vec<_> = Options::new(p.options()).map(Result::unwrap).collect();
        assert_eq!(
            opts,
            [
                TcpOption::MaxSegmentSize(1460),
                TcpOption::SackPermitted,
                TcpOption::Timestamp {
                    tsval: 0x0001_0203,
                    tsecr: 0
                },
                TcpOption::NoOperation,
                TcpOption::WindowScale(7),
            ]
        );
        let r = Repr::parse(&p).unwrap();
        assert!(r.flags.has(Flags::SYN));
        assert_eq!(
            (r.max_seg_size, r.window_scale, r.payload_len),
            (Some(1460), Some(7), 0)
        );
    }

    #[test]
    fn construct_and_round_trip() {
        let r = Repr {
            src_port: 1,
            dst_port: 2,
            seq_number: 3,
            ack_number: 4,
            flags: Flags(Flags::ACK | Flags::PSH),
            window_len: 5,
            max_seg_size: Some(1400),
            window_scale: Some(9),
            sack_ranges: [Some((10, 20)), Some((30, 40)), None, None],
            timestamp: Some((7, 8)),
            payload_len: 3,
            ..Repr::default()
        };
        let mut b = vec![0u8; r.buffer_len()];
        let mut p = Packet::new_unchecked(&mut b[..]);
        r.emit(&mut p);
        p.payload_mut().copy_from_slice(b"xyz");
        p.fill_checksum(&SRC, &DST);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum(&SRC, &DST));
        assert_eq!(usize::from(p.header_len()) % 4, 0);
        assert_eq!(Repr::parse(&p).unwrap(), r);
    }

    #[test]
    fn refuses() {
        assert_eq!(
            Packet::new_checked(&SYN[..19]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            Packet::new_checked(&SYN[..39]).unwrap_err(),
            Error::Truncated
        );
        let mut b = SYN;
        b[12] = 0x40;
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::Malformed);
        for bad in [
            &[2u8, 4, 5][..],
            &[3, 0],
            &[2, 5, 0, 0, 0],
            &[8, 20],
            &[5, 9, 0, 0, 0, 0, 0, 0, 0],
        ] {
            let out: Vec<_> = Options::new(bad).collect();
            assert_eq!(out.last(), Some(&Err(Error::Malformed)), "{bad:?}");
        }
        let out: Vec<_> = Options::new(&[1, 0, 2, 4]).collect();
        assert_eq!(out, [Ok(TcpOption::NoOperation), Ok(TcpOption::EndOfList)]);
        assert_eq!(
            Options::new(&[99, 3, 7]).next(),
            Some(Ok(TcpOption::Unknown {
                kind: 99,
                data: &[7]
            }))
        );
    }
}
