//! The VDE switch handshake (VDE2 `vde_switch` / `libvdeplug`, vdeplug4 `libvdeplug_vde`).
//!
//! A VDE switch is a directory `DIR` holding a `SOCK_STREAM` listener `DIR/ctl`. A client
//! (QEMU `-netdev vde`, `vde_plug`, anything linked with libvdeplug) binds a datagram
//! socket of its own, connects to `DIR/ctl` and sends one request naming that socket.
//! The switch binds a datagram socket for the new port, connects it to the client's, and
//! answers with its address: a bare `struct sockaddr_un`. From then on one datagram is
//! one Ethernet frame, both ways; the end of the control connection ends the port.
//!
//! All integers are in host byte order, the structures are packed (no padding):
//!
//! ```text
//! request v3 (what every libvdeplug since VDE 2.x sends):
//!   0  u32  magic        0xfeedface
//!   4  u32  version      3
//!   8  u32  type         low byte: 0 = REQ_NEW_CONTROL, 1 = REQ_NEW_PORT0;
//!                        bits 8..: the port number asked for (0 = any)
//!  12  sockaddr_un       u16 sun_family (AF_UNIX = 1), char sun_path[108]
//! 122  char description[]  not terminated: the client sends header + strlen(descr)
//!
//! request v1 (VDE 1.x):
//!   0  u32  magic        0xfeedface
//!   4  u32  type         0 = REQ_NEW_CONTROL, 1 = REQ_NEW_PORT0 (read where v3 has
//!                        its version, so only 0 and 1 are v1)
//!   8  u8[6] MAC address  (unused)
//!  14  sockaddr_un
//! 124  char description[]
//!
//! reply: sockaddr_un (110 bytes) naming the switch's data socket for the port.
//! ```
//!
//! Like `vde_switch`, a version of 2 or above 3 is refused, and so is any request type
//! other than the two above. Descriptions are cut at 128 bytes (libvdeplug's
//! `MAXDESCR`) and at the first NUL.

use std::borrow::Cow;

/// First word of every request.
pub const MAGIC: u32 = 0xfeed_face;
/// `AF_UNIX` (the same value on every Unix).
pub const AF_UNIX: u16 = 1;
/// `sizeof(sun_path)` on Linux.
pub const SUN_PATH_LEN: usize = 108;
/// `sizeof(struct sockaddr_un)` on Linux: the reply's exact length.
pub const SOCKADDR_UN_LEN: usize = 2 + SUN_PATH_LEN;
/// Longest description a client sends (`MAXDESCR`).
pub const MAX_DESCRIPTION: usize = 128;
/// Fixed part of a v3 request.
pub const V3_HEADER_LEN: usize = 4 + 4 + 4 + SOCKADDR_UN_LEN;
/// Fixed part of a v1 request.
pub const V1_HEADER_LEN: usize = 4 + 4 + 6 + SOCKADDR_UN_LEN;
/// Longest request worth reading: header plus the longest description (`vde_switch`
/// reads 256 bytes at most).
pub const MAX_REQUEST: usize = 256;

const REQ_NEW_CONTROL: u32 = 0;
const REQ_NEW_PORT0: u32 = 1;

/// Which request layout the client used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V3,
}

impl Version {
    pub fn number(self) -> u32 {
        match self {
            Version::V1 => 1,
            Version::V3 => 3,
        }
    }
}

/// What the client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestType {
    /// A data port (`REQ_NEW_CONTROL`); `port` is the number asked for, 0 = any.
    NewPort { port: u32 },
    /// `vde_switch`'s management port 0 (`REQ_NEW_PORT0`).
    NewPort0,
}

/// A complete, well-formed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub version: Version,
    pub request: RequestType,
    /// `sun_path` of the client's data socket, up to its first NUL (never empty).
    pub data_path: Vec<u8>,
    /// The description, up to its first NUL and at most [`MAX_DESCRIPTION`] bytes, with
    /// invalid UTF-8 and control characters replaced.
    pub description: String,
    /// Bytes of the buffer the request used (the rest is not part of it).
    pub consumed: usize,
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("bad magic 0x{0:08x} (a VDE request starts with 0xfeedface): not a VDE client")]
    BadMagic(u32),
    #[error("byte-swapped magic 0xcefaedfe: the client runs with the other byte order")]
    SwappedMagic,
    #[error("VDE protocol version {0} is not supported (versions 1 and 3 are)")]
    BadVersion(u32),
    #[error("bad VDE request type {0} (0 = new port, 1 = port 0)")]
    BadType(u32),
    #[error("the data socket address has family {0}, not AF_UNIX")]
    BadFamily(u16),
    #[error("the request names no data socket (empty or abstract address)")]
    NoDataPath,
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..)?.first_chunk::<4>()?;
    Some(u32::from_ne_bytes(*bytes))
}

/// Reads the request at the front of `buf`.
///
/// `Ok(None)`: not enough bytes yet (whatever is there so far is consistent). The
/// description is whatever follows the fixed part in `buf`: a client sends its request
/// in one `send`, so the caller parses what one read returned.
pub fn parse_request(buf: &[u8]) -> Result<Option<Request>, RequestError> {
    let Some(magic) = u32_at(buf, 0) else {
        // Reject early on a first byte that cannot start the magic.
        let want = MAGIC.to_ne_bytes();
        if buf.iter().zip(want).all(|(a, b)| *a == b) {
            return Ok(None);
        }
        return Err(RequestError::BadMagic(partial_word(buf)));
    };
    if magic == MAGIC.swap_bytes() {
        return Err(RequestError::SwappedMagic);
    }
    if magic != MAGIC {
        return Err(RequestError::BadMagic(magic));
    }
    let Some(word) = u32_at(buf, 4) else {
        return Ok(None);
    };
    let (version, type_word, sock_at, header_len) = match word {
        3 => {
            let Some(t) = u32_at(buf, 8) else {
                return Ok(None);
            };
            (Version::V3, t, 12, V3_HEADER_LEN)
        }
        REQ_NEW_CONTROL | REQ_NEW_PORT0 => (Version::V1, word, 14, V1_HEADER_LEN),
        v => return Err(RequestError::BadVersion(v)),
    };
    let request = match type_word & 0xff {
        REQ_NEW_CONTROL => RequestType::NewPort {
            port: type_word >> 8,
        },
        REQ_NEW_PORT0 => RequestType::NewPort0,
        _ => return Err(RequestError::BadType(type_word)),
    };
    let Some(header) = buf.get(..header_len) else {
        return Ok(None);
    };
    let data_path = decode_sockaddr_un(&header[sock_at..])?;
    let rest = &buf[header_len..buf.len().min(header_len + MAX_DESCRIPTION)];
    let text = rest.split(|&b| b == 0).next().unwrap_or_default();
    Ok(Some(Request {
        version,
        request,
        data_path: data_path.to_vec(),
        description: sanitize(text),
        consumed: header_len + rest.len(),
    }))
}

/// Up to three bytes as a host-order word (zero-padded), for an error message.
fn partial_word(buf: &[u8]) -> u32 {
    let mut word = [0u8; 4];
    word[..buf.len().min(4)].copy_from_slice(&buf[..buf.len().min(4)]);
    u32::from_ne_bytes(word)
}

fn sanitize(text: &[u8]) -> String {
    let text = String::from_utf8_lossy(text);
    let text = match text {
        Cow::Borrowed(s) if !s.chars().any(char::is_control) => return s.to_string(),
        other => other,
    };
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The `sun_path` of a `struct sockaddr_un` (at least [`SOCKADDR_UN_LEN`] bytes), up to
/// its first NUL.
pub fn decode_sockaddr_un(bytes: &[u8]) -> Result<&[u8], RequestError> {
    let Some((family, rest)) = bytes.split_first_chunk::<2>() else {
        return Err(RequestError::NoDataPath);
    };
    let family = u16::from_ne_bytes(*family);
    if family != AF_UNIX {
        return Err(RequestError::BadFamily(family));
    }
    let path = &rest[..rest.len().min(SUN_PATH_LEN)];
    let path = path.split(|&b| b == 0).next().unwrap_or_default();
    if path.is_empty() {
        return Err(RequestError::NoDataPath);
    }
    Ok(path)
}

/// A `struct sockaddr_un` for `path`: `None` if the path is empty, holds a NUL, or
/// leaves no room for the terminating NUL.
pub fn encode_sockaddr_un(path: &[u8]) -> Option<[u8; SOCKADDR_UN_LEN]> {
    if path.is_empty() || path.len() >= SUN_PATH_LEN || path.contains(&0) {
        return None;
    }
    let mut out = [0u8; SOCKADDR_UN_LEN];
    out[..2].copy_from_slice(&AF_UNIX.to_ne_bytes());
    out[2..2 + path.len()].copy_from_slice(path);
    Some(out)
}

/// A request as libvdeplug sends it: the fixed part, then the description without its
/// NUL (cut at [`MAX_DESCRIPTION`] bytes). `None` if `data_path` does not fit.
pub fn encode_request(
    version: Version,
    request: RequestType,
    data_path: &[u8],
    description: &[u8],
) -> Option<Vec<u8>> {
    let sock = encode_sockaddr_un(data_path)?;
    let type_word = match request {
        RequestType::NewPort { port } => port.checked_mul(256)?,
        RequestType::NewPort0 => REQ_NEW_PORT0,
    };
    let mut out = Vec::with_capacity(MAX_REQUEST);
    out.extend_from_slice(&MAGIC.to_ne_bytes());
    match version {
        Version::V3 => {
            out.extend_from_slice(&3u32.to_ne_bytes());
            out.extend_from_slice(&type_word.to_ne_bytes());
        }
        Version::V1 => {
            // v1 has no room for a port number: the type word is only 0 or 1.
            if type_word > REQ_NEW_PORT0 {
                return None;
            }
            out.extend_from_slice(&type_word.to_ne_bytes());
            out.extend_from_slice(&[0u8; 6]);
        }
    }
    out.extend_from_slice(&sock);
    let description = description.split(|&b| b == 0).next().unwrap_or_default();
    out.extend_from_slice(&description[..description.len().min(MAX_DESCRIPTION)]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The bytes laid out by hand as the C structure is, independent of the encoder.
    fn qemu_v3() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&0xfeedfaceu32.to_ne_bytes());
        b.extend_from_slice(&3u32.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&1u16.to_ne_bytes());
        let mut path = [0u8; 108];
        path[..22].copy_from_slice(b"/run/vnet/x/vde/.01234");
        b.extend_from_slice(&path);
        b.extend_from_slice(b"QEMU user=0 pid=1234");
        b
    }

    #[test]
    fn reads_what_libvdeplug_sends() {
        let bytes = qemu_v3();
        assert_eq!(bytes.len(), 122 + 20);
        let req = parse_request(&bytes).unwrap().unwrap();
        assert_eq!(req.version, Version::V3);
        assert_eq!(req.request, RequestType::NewPort { port: 0 });
        assert_eq!(req.data_path, b"/run/vnet/x/vde/.01234");
        assert_eq!(req.description, "QEMU user=0 pid=1234");
        assert_eq!(req.consumed, bytes.len());
        assert_eq!(
            encode_request(
                Version::V3,
                RequestType::NewPort { port: 0 },
                b"/run/vnet/x/vde/.01234",
                b"QEMU user=0 pid=1234\0junk"
            )
            .unwrap(),
            bytes
        );
    }

    #[test]
    fn port_numbers_ride_in_the_type_word() {
        let mut bytes = qemu_v3();
        bytes[8..12].copy_from_slice(&(5u32 << 8).to_ne_bytes());
        let req = parse_request(&bytes).unwrap().unwrap();
        assert_eq!(req.request, RequestType::NewPort { port: 5 });
        bytes[8..12].copy_from_slice(&1u32.to_ne_bytes());
        assert_eq!(
            parse_request(&bytes).unwrap().unwrap().request,
            RequestType::NewPort0
        );
        bytes[8..12].copy_from_slice(&2u32.to_ne_bytes());
        assert_eq!(parse_request(&bytes), Err(RequestError::BadType(2)));
    }

    #[test]
    fn incomplete_requests_wait_and_bad_ones_fail_early() {
        let bytes = qemu_v3();
        for n in 0..V3_HEADER_LEN {
            assert_eq!(parse_request(&bytes[..n]), Ok(None), "{n} bytes");
        }
        assert!(parse_request(&bytes[..V3_HEADER_LEN]).unwrap().is_some());
        assert!(matches!(
            parse_request(&[0x00]),
            Err(RequestError::BadMagic(_))
        ));
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\n"),
            Err(RequestError::BadMagic(u32::from_ne_bytes(*b"GET ")))
        );
        assert_eq!(
            parse_request(&0xfeedfaceu32.swap_bytes().to_ne_bytes()),
            Err(RequestError::SwappedMagic)
        );
        let mut v2 = bytes.clone();
        v2[4..8].copy_from_slice(&2u32.to_ne_bytes());
        assert_eq!(parse_request(&v2[..8]), Err(RequestError::BadVersion(2)));
        v2[4..8].copy_from_slice(&4u32.to_ne_bytes());
        assert_eq!(parse_request(&v2), Err(RequestError::BadVersion(4)));
    }

    #[test]
    fn version_1_is_read_too() {
        let req = encode_request(Version::V1, RequestType::NewPort0, b"/tmp/c", b"old").unwrap();
        assert_eq!(req.len(), V1_HEADER_LEN + 3);
        assert_eq!(&req[4..8], &1u32.to_ne_bytes());
        let parsed = parse_request(&req).unwrap().unwrap();
        assert_eq!(parsed.version, Version::V1);
        assert_eq!(parsed.request, RequestType::NewPort0);
        assert_eq!(parsed.data_path, b"/tmp/c");
        assert_eq!(parsed.description, "old");
        assert_eq!(parse_request(&req[..V1_HEADER_LEN - 1]), Ok(None));
        assert!(
            encode_request(Version::V1, RequestType::NewPort { port: 3 }, b"/x", b"").is_none()
        );
    }

    #[test]
    fn addresses_are_checked() {
        let mut bytes = qemu_v3();
        bytes[12..14].copy_from_slice(&2u16.to_ne_bytes());
        assert_eq!(parse_request(&bytes), Err(RequestError::BadFamily(2)));
        let mut bytes = qemu_v3();
        bytes[14] = 0; // abstract or empty
        assert_eq!(parse_request(&bytes), Err(RequestError::NoDataPath));
        // A full 108-byte path without NUL is read whole.
        let mut bytes = qemu_v3();
        bytes[14..122].fill(b'a');
        let req = parse_request(&bytes).unwrap().unwrap();
        assert_eq!(req.data_path.len(), 108);
        assert!(encode_sockaddr_un(&[b'a'; 108]).is_none());
        assert!(encode_sockaddr_un(b"").is_none());
        assert!(encode_sockaddr_un(b"a\0b").is_none());
        let reply = encode_sockaddr_un(b"/run/vnet/lab/vde/001.sock").unwrap();
        assert_eq!(reply.len(), 110);
        assert_eq!(
            decode_sockaddr_un(&reply).unwrap(),
            b"/run/vnet/lab/vde/001.sock"
        );
    }

    #[test]
    fn descriptions_are_cut_and_cleaned() {
        let mut bytes = qemu_v3();
        bytes.truncate(V3_HEADER_LEN);
        bytes.extend_from_slice(b"a\x1b[31mb\xff\0after");
        let req = parse_request(&bytes).unwrap().unwrap();
        assert_eq!(req.description, "a?[31mb\u{fffd}");
        let mut long = qemu_v3();
        long.truncate(V3_HEADER_LEN);
        long.extend_from_slice(&[b'x'; 200]);
        let req = parse_request(&long).unwrap().unwrap();
        assert_eq!(req.description.len(), MAX_DESCRIPTION);
        assert_eq!(req.consumed, V3_HEADER_LEN + MAX_DESCRIPTION);
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_request(&bytes);
            let _ = decode_sockaddr_un(&bytes);
        }

        #[test]
        fn never_panics_after_a_good_start(
            version in prop_oneof![Just(0u32), Just(1), Just(3), any::<u32>()],
            tail in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut bytes = MAGIC.to_ne_bytes().to_vec();
            bytes.extend_from_slice(&version.to_ne_bytes());
            bytes.extend_from_slice(&tail);
            if let Ok(Some(req)) = parse_request(&bytes) {
                prop_assert!(req.consumed <= bytes.len());
                prop_assert!(!req.data_path.is_empty() && req.data_path.len() <= SUN_PATH_LEN);
                prop_assert!(req.description.chars().all(|c| !c.is_control()));
            }
        }

        #[test]
        fn round_trips(
            v3 in any::<bool>(),
            port in 0u32..0x00ff_ffff,
            port0 in any::<bool>(),
            path in proptest::collection::vec(1u8..=255, 1..SUN_PATH_LEN),
            description in proptest::collection::vec(0x20u8..0x7f, 0..MAX_DESCRIPTION),
        ) {
            let version = if v3 { Version::V3 } else { Version::V1 };
            let request = match (port0, v3) {
                (true, _) => RequestType::NewPort0,
                (false, true) => RequestType::NewPort { port },
                (false, false) => RequestType::NewPort { port: 0 },
            };
            let bytes = encode_request(version, request, &path, &description).unwrap();
            let req = parse_request(&bytes).unwrap().unwrap();
            prop_assert_eq!(req.version, version);
            prop_assert_eq!(req.request, request);
            prop_assert_eq!(req.data_path, path);
            prop_assert_eq!(req.description.as_bytes(), &description[..]);
            prop_assert_eq!(req.consumed, bytes.len());
            // Any shorter prefix is incomplete, never an error.
            let header = if v3 { V3_HEADER_LEN } else { V1_HEADER_LEN };
            prop_assert_eq!(parse_request(&bytes[..header - 1]), Ok(None));
        }
    }
}
