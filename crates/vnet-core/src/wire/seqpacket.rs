//! The vnet API's messages: the hosted `/dev/vmnetN` model over a unix `SOCK_SEQPACKET`
//! socket (the port protocol of `RUN/NET/api.sock`; "API" alone means the HTTP control API).
//!
//! Connecting to `RUN/NET/api.sock` opens a port on vnet `NET`. Every message starts
//! with one kind byte, so frames and control messages never mix:
//!
//! | kind | direction | body |
//! |---|---|---|
//! | `0x00` FRAME | both | one whole Ethernet frame |
//! | `0x01` SET_MAC | client → vnet | 6-byte MAC: the port's address (frames to other unicast MACs are filtered unless promiscuous) |
//! | `0x02` SET_PROMISC | client → vnet | 1 byte, 0 = off, 1 = on |
//! | `0x03` GET_INFO | client → vnet | empty |
//! | `0x80 \| kind` REPLY | vnet → client | 4-byte big-endian errno (0 = success), then for GET_INFO a [`PortInfo`] |
//!
//! Each control request gets exactly one reply, in order; frames may arrive between a
//! request and its reply, so a client must skip FRAME messages while waiting.

use super::MacAddr;

/// Version of this message format, reported by GET_INFO.
pub const API_VERSION: u16 = 1;

pub const KIND_FRAME: u8 = 0x00;
const KIND_SET_MAC: u8 = 0x01;
const KIND_SET_PROMISC: u8 = 0x02;
const KIND_GET_INFO: u8 = 0x03;
const REPLY_BIT: u8 = 0x80;

/// Largest control message (a GET_INFO reply).
pub const MAX_CONTROL_LEN: usize = 1 + 4 + PortInfo::LEN;

/// A control request from a client (the ioctls of the classic device).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    SetMac(MacAddr),
    SetPromiscuous(bool),
    GetInfo,
}

/// What a port reports about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortInfo {
    pub api_version: u16,
    pub port_id: u32,
    /// The MAC set with SET_MAC, all zeros if none.
    pub mac: MacAddr,
    pub promiscuous: bool,
    /// The access VLAN of the port.
    pub vlan: u16,
    /// Largest frame the vnet forwards, in bytes.
    pub max_frame: u32,
}

impl PortInfo {
    pub const LEN: usize = 2 + 4 + 6 + 1 + 2 + 4;

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.api_version.to_be_bytes());
        out.extend_from_slice(&self.port_id.to_be_bytes());
        out.extend_from_slice(&self.mac.0);
        out.push(u8::from(self.promiscuous));
        out.extend_from_slice(&self.vlan.to_be_bytes());
        out.extend_from_slice(&self.max_frame.to_be_bytes());
    }

    fn decode(b: &[u8]) -> Option<Self> {
        let b: &[u8; Self::LEN] = b.try_into().ok()?;
        Some(PortInfo {
            api_version: u16::from_be_bytes([b[0], b[1]]),
            port_id: u32::from_be_bytes([b[2], b[3], b[4], b[5]]),
            mac: MacAddr(b[6..12].try_into().ok()?),
            promiscuous: b[12] != 0,
            vlan: u16::from_be_bytes([b[13], b[14]]),
            max_frame: u32::from_be_bytes([b[15], b[16], b[17], b[18]]),
        })
    }
}

/// A message the vnet received from a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientMessage<'a> {
    Frame(&'a [u8]),
    Request(Request),
}

/// A client message that cannot be understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("empty message")]
    Empty,
    #[error("unknown message kind {0:#04x}")]
    UnknownKind(u8),
    #[error("message kind {kind:#04x} needs {expected} body bytes, got {got}")]
    BadLength {
        kind: u8,
        expected: usize,
        got: usize,
    },
}

impl Request {
    /// The bytes of this request as sent on the socket.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Request::SetMac(mac) => [&[KIND_SET_MAC][..], &mac.0].concat(),
            Request::SetPromiscuous(on) => vec![KIND_SET_PROMISC, u8::from(*on)],
            Request::GetInfo => vec![KIND_GET_INFO],
        }
    }

    fn kind(&self) -> u8 {
        match self {
            Request::SetMac(_) => KIND_SET_MAC,
            Request::SetPromiscuous(_) => KIND_SET_PROMISC,
            Request::GetInfo => KIND_GET_INFO,
        }
    }
}

/// Parses one message from a client. Never panics on any input.
pub fn decode_client(msg: &[u8]) -> Result<ClientMessage<'_>, MessageError> {
    let (&kind, body) = msg.split_first().ok_or(MessageError::Empty)?;
    let need = |expected: usize| {
        if body.len() == expected {
            Ok(())
        } else {
            Err(MessageError::BadLength {
                kind,
                expected,
                got: body.len(),
            })
        }
    };
    Ok(match kind {
        KIND_FRAME => ClientMessage::Frame(body),
        KIND_SET_MAC => {
            need(6)?;
            ClientMessage::Request(Request::SetMac(MacAddr(
                body.try_into().expect("length checked"),
            )))
        }
        KIND_SET_PROMISC => {
            need(1)?;
            ClientMessage::Request(Request::SetPromiscuous(body[0] != 0))
        }
        KIND_GET_INFO => {
            need(0)?;
            ClientMessage::Request(Request::GetInfo)
        }
        other => return Err(MessageError::UnknownKind(other)),
    })
}

/// The outcome of a request, as the vnet reports it.
pub type Reply = Result<Option<PortInfo>, i32>;

/// Encodes the reply to `request`: `Err(errno)` or success with GET_INFO's data.
pub fn encode_reply(request: &Request, reply: &Reply) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAX_CONTROL_LEN);
    out.push(REPLY_BIT | request.kind());
    let errno = match reply {
        Ok(_) => 0i32,
        Err(e) => *e,
    };
    out.extend_from_slice(&errno.to_be_bytes());
    if let Ok(Some(info)) = reply {
        info.encode(&mut out);
    }
    out
}

/// A message a client received from the vnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VnetMessage<'a> {
    Frame(&'a [u8]),
    Reply { kind: u8, reply: Reply },
}

/// Parses one message from the vnet (the client side).
pub fn decode_vnet(msg: &[u8]) -> Result<VnetMessage<'_>, MessageError> {
    let (&kind, body) = msg.split_first().ok_or(MessageError::Empty)?;
    if kind == KIND_FRAME {
        return Ok(VnetMessage::Frame(body));
    }
    if kind & REPLY_BIT == 0 {
        return Err(MessageError::UnknownKind(kind));
    }
    let bad = |expected| MessageError::BadLength {
        kind,
        expected,
        got: body.len(),
    };
    let (errno, rest) = body.split_first_chunk::<4>().ok_or(bad(4))?;
    let errno = i32::from_be_bytes(*errno);
    let reply = if errno != 0 {
        Err(errno)
    } else if kind == REPLY_BIT | KIND_GET_INFO {
        Ok(Some(PortInfo::decode(rest).ok_or(bad(4 + PortInfo::LEN))?))
    } else {
        Ok(None)
    };
    Ok(VnetMessage::Reply {
        kind: kind & !REPLY_BIT,
        reply,
    })
}

/// Whether a decoded reply answers `request`.
pub fn answers(kind: u8, request: &Request) -> bool {
    kind == request.kind()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn requests_round_trip() {
        for req in [
            Request::SetMac(MacAddr([0x52, 0x54, 0, 1, 2, 3])),
            Request::SetPromiscuous(true),
            Request::SetPromiscuous(false),
            Request::GetInfo,
        ] {
            assert_eq!(
                decode_client(&req.encode()),
                Ok(ClientMessage::Request(req))
            );
        }
    }

    #[test]
    fn replies_round_trip() {
        let info = PortInfo {
            api_version: API_VERSION,
            port_id: 7,
            mac: MacAddr([2, 0, 0, 0, 0, 9]),
            promiscuous: true,
            vlan: 1,
            max_frame: 1518,
        };
        let bytes = encode_reply(&Request::GetInfo, &Ok(Some(info)));
        assert_eq!(bytes.len(), MAX_CONTROL_LEN);
        assert_eq!(
            decode_vnet(&bytes),
            Ok(VnetMessage::Reply {
                kind: KIND_GET_INFO,
                reply: Ok(Some(info))
            })
        );
        let bytes = encode_reply(&Request::SetPromiscuous(true), &Err(1));
        assert_eq!(
            decode_vnet(&bytes),
            Ok(VnetMessage::Reply {
                kind: KIND_SET_PROMISC,
                reply: Err(1)
            })
        );
    }

    #[test]
    fn frames_are_distinct_from_control() {
        assert_eq!(decode_client(&[0, 1, 2]), Ok(ClientMessage::Frame(&[1, 2])));
        assert_eq!(decode_client(&[]), Err(MessageError::Empty));
        assert_eq!(decode_client(&[0x42]), Err(MessageError::UnknownKind(0x42)));
        assert!(matches!(
            decode_client(&[KIND_SET_MAC, 1]),
            Err(MessageError::BadLength { .. })
        ));
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = decode_client(&bytes);
            let _ = decode_vnet(&bytes);
        }
    }
}
