//! ICMP for IPv4 (RFC 792): echo request/reply, destination unreachable (with the
//! fragmentation-needed next-hop MTU of RFC 1191) and time exceeded.
//!
//! ```text
//! 0 type  1 code  2 checksum  4 ident / unused  6 seq / next-hop MTU  8 data ...
//! ```
//!
//! [`Packet::new_checked`] guarantees the 8-byte header. Errors quote the invoking
//! packet as raw bytes (its IP header, options included, and the start of its payload):
//! a quote is truncated by design, so parse it with `ipv4::Packet::new_unchecked` after
//! checking the length you need.

use super::checksum;
use super::{be16, Error, Field, Result};

mod field {
    use super::Field;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    pub const ECHO_IDENT: Field = 4..6;
    pub const ECHO_SEQNO: Field = 6..8;
    pub const MTU: Field = 6..8;
}

pub const HEADER_LEN: usize = 8;

/// ICMP message types modelled by [`Repr`].
pub struct Message;

impl Message {
    pub const ECHO_REPLY: u8 = 0;
    pub const DST_UNREACHABLE: u8 = 3;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
}

/// Destination-unreachable codes (RFC 792, RFC 1812).
pub struct Unreachable;

impl Unreachable {
    pub const NET: u8 = 0;
    pub const HOST: u8 = 1;
    pub const PROTOCOL: u8 = 2;
    pub const PORT: u8 = 3;
    /// Fragmentation needed and DF set: carries the next-hop MTU.
    pub const FRAG_NEEDED: u8 = 4;
    pub const ADMIN_PROHIBITED: u8 = 13;
}

/// A view of an ICMPv4 message.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Packet { buffer };
        p.check_len()?;
        Ok(p)
    }

    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM.start)
    }
    pub fn echo_ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ECHO_IDENT.start)
    }
    pub fn echo_seq_no(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ECHO_SEQNO.start)
    }
    /// The next-hop MTU of a fragmentation-needed message (0 from pre-RFC 1191 routers).
    pub fn next_hop_mtu(&self) -> u16 {
        be16(self.buffer.as_ref(), field::MTU.start)
    }
    /// The echo data, or the quoted invoking packet of an error.
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
    /// The whole message sums to zero.
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(checksum::sum(0, self.buffer.as_ref())) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_msg_type(&mut self, v: u8) {
        self.buffer.as_mut()[field::TYPE] = v;
    }
    pub fn set_msg_code(&mut self, v: u8) {
        self.buffer.as_mut()[field::CODE] = v;
    }
    pub fn set_checksum(&mut self, v: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_echo_ident(&mut self, v: u16) {
        self.buffer.as_mut()[field::ECHO_IDENT].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_echo_seq_no(&mut self, v: u16) {
        self.buffer.as_mut()[field::ECHO_SEQNO].copy_from_slice(&v.to_be_bytes());
    }
    /// Sets the unused half-word and the next-hop MTU (0 for other errors).
    pub fn set_next_hop_mtu(&mut self, v: u16) {
        self.buffer.as_mut()[4..6].fill(0);
        self.buffer.as_mut()[field::MTU].copy_from_slice(&v.to_be_bytes());
    }
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
    /// Computes and stores the checksum over the whole buffer.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(checksum::sum(0, self.buffer.as_ref()));
        self.set_checksum(c);
    }
}

/// An ICMPv4 message's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repr<'a> {
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
    /// `next_hop_mtu` is meaningful with [`Unreachable::FRAG_NEEDED`] only (else 0).
    DstUnreachable {
        code: u8,
        next_hop_mtu: u16,
        invoking: &'a [u8],
    },
    TimeExceeded {
        code: u8,
        invoking: &'a [u8],
    },
}

impl<'a> Repr<'a> {
    /// Reads a message of a modelled type; others are [`Error::Unrecognized`], echoes
    /// with a non-zero code [`Error::Malformed`]. The checksum is not checked here
    /// ([`Packet::verify_checksum`]). The `Repr` borrows the bytes, not the view, so it
    /// may outlive a view made on the spot.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(p: &Packet<&'a T>) -> Result<Self> {
        p.check_len()?;
        let bytes: &'a T = p.buffer;
        let data = &bytes.as_ref()[HEADER_LEN..];
        let echo = |code| {
            if code == 0 {
                Ok(())
            } else {
                Err(Error::Malformed)
            }
        };
        Ok(match p.msg_type() {
            Message::ECHO_REQUEST => {
                echo(p.msg_code())?;
                Repr::EchoRequest {
                    ident: p.echo_ident(),
                    seq_no: p.echo_seq_no(),
                    data,
                }
            }
            Message::ECHO_REPLY => {
                echo(p.msg_code())?;
                Repr::EchoReply {
                    ident: p.echo_ident(),
                    seq_no: p.echo_seq_no(),
                    data,
                }
            }
            Message::DST_UNREACHABLE => Repr::DstUnreachable {
                code: p.msg_code(),
                next_hop_mtu: if p.msg_code() == Unreachable::FRAG_NEEDED {
                    p.next_hop_mtu()
                } else {
                    0
                },
                invoking: data,
            },
            Message::TIME_EXCEEDED => Repr::TimeExceeded {
                code: p.msg_code(),
                invoking: data,
            },
            _ => return Err(Error::Unrecognized),
        })
    }

    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
            + match self {
                Repr::EchoRequest { data, .. } | Repr::EchoReply { data, .. } => data.len(),
                Repr::DstUnreachable { invoking, .. } | Repr::TimeExceeded { invoking, .. } => {
                    invoking.len()
                }
            }
    }

    /// Writes the whole message with its checksum; the buffer must be exactly
    /// [`Self::buffer_len`] bytes (the checksum covers all of it).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        let (ty, code, data) = match *self {
            Repr::EchoRequest {
                ident,
                seq_no,
                data,
            }
            | Repr::EchoReply {
                ident,
                seq_no,
                data,
            } => {
                p.set_echo_ident(ident);
                p.set_echo_seq_no(seq_no);
                let ty = if matches!(self, Repr::EchoRequest { .. }) {
                    Message::ECHO_REQUEST
                } else {
                    Message::ECHO_REPLY
                };
                (ty, 0, data)
            }
            Repr::DstUnreachable {
                code,
                next_hop_mtu,
                invoking,
            } => {
                p.set_next_hop_mtu(next_hop_mtu);
                (Message::DST_UNREACHABLE, code, invoking)
            }
            Repr::TimeExceeded { code, invoking } => {
                p.set_next_hop_mtu(0);
                (Message::TIME_EXCEEDED, code, invoking)
            }
        };
        p.set_msg_type(ty);
        p.set_msg_code(code);
        p.data_mut()[..data.len()].copy_from_slice(data);
        p.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ping -p 61` style: echo request ident 0x1234 seq 1, data "abcd".
    static ECHO: [u8; 12] = [8, 0, 0x21, 0x04, 0x12, 0x34, 0, 1, b'a', b'b', b'c', b'd'];

    #[test]
    fn echo_round_trip() {
        let p = Packet::new_checked(&ECHO[..]).unwrap();
        assert!(p.verify_checksum());
        let r = Repr::parse(&p).unwrap();
        assert_eq!(
            r,
            Repr::EchoRequest {
                ident: 0x1234,
                seq_no: 1,
                data: b"abcd"
            }
        );
        let mut b = [0u8; 12];
        r.emit(&mut Packet::new_unchecked(&mut b[..]));
        assert_eq!(b, ECHO);
    }

    #[test]
    fn a_repr_outlives_the_view_it_was_parsed_from() {
        fn echo_of(message: &[u8]) -> Option<Repr<'_>> {
            Repr::parse(&Packet::new_checked(message).ok()?).ok()
        }
        let r = echo_of(&ECHO).unwrap();
        assert!(matches!(r, Repr::EchoRequest { data: b"abcd", .. }));
    }

    #[test]
    fn frag_needed_round_trip() {
        let quote = [0x45u8; 28];
        let r = Repr::DstUnreachable {
            code: Unreachable::FRAG_NEEDED,
            next_hop_mtu: 1400,
            invoking: &quote,
        };
        let mut b = vec![0xffu8; r.buffer_len()];
        r.emit(&mut Packet::new_unchecked(&mut b[..]));
        assert_eq!(b[..8], [3, 4, b[2], b[3], 0, 0, 0x05, 0x78]);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(Repr::parse(&p).unwrap(), r);
    }

    #[test]
    fn refuses() {
        assert_eq!(
            Packet::new_checked(&ECHO[..7]).unwrap_err(),
            Error::Truncated
        );
        let mut b = ECHO;
        b[0] = 13; // timestamp
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&b[..])),
            Err(Error::Unrecognized)
        );
        let mut b = ECHO;
        b[1] = 1;
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&b[..])),
            Err(Error::Malformed)
        );
        assert!(!Packet::new_unchecked(&b[..]).verify_checksum());
    }
}
