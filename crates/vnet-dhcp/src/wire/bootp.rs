//! The gate between hostile bytes and `dhcproto`.
//!
//! `dhcproto` 0.15 encodes well, but its decoder trusts packet-supplied lengths: in debug
//! builds its `debug_assert!`s on option lengths (options 80, 81, 94, 152–155) panic,
//! `Message::chaddr()` slices by the packet's `hlen` (a panic for `hlen > 16`, in release
//! builds too), and an option that fails to decode (a non-UTF-8 host name, say) silently
//! ends option parsing, dropping every option after it.
//!
//! So nothing from the wire reaches `dhcproto` directly. [`canonicalize_request`] walks the
//! message itself — fixed header, magic cookie, every option in the options field and, when
//! option 52 says so, in `file` and `sname`, RFC 3396 concatenation included — rejects
//! anything structurally wrong, and writes a fresh message that holds only the options the
//! server reads, each once, with lengths already checked. Only that canonical message is
//! given to `Message::decode`, whose every remaining path is then well-defined. The property
//! tests feed arbitrary and mutated messages through this path in debug builds.
//!
//! ```text
//! 0 op 1 htype 2 hlen 3 hops 4 xid 8 secs 10 flags 12 ciaddr 16 yiaddr 20 siaddr 24 giaddr
//! 28 chaddr (16) 44 sname (64) 108 file (128) 236 magic 99.130.83.99 240 options ... 255
//! ```

use std::collections::BTreeMap;
use std::ops::Range;

use dhcproto::v4::{Message, OptionCode};
use dhcproto::Decodable;

/// Length of the fixed BOOTP header, up to the magic cookie.
pub const FIXED_LEN: usize = 236;
/// The DHCP magic cookie (RFC 2131 §3).
pub const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// Where the options field starts.
pub const OPTIONS_START: usize = FIXED_LEN + MAGIC.len();

const OP: usize = 0;
const HTYPE: usize = 1;
const HLEN: usize = 2;
const SNAME: Range<usize> = 44..108;
const FILE: Range<usize> = 108..236;

const BOOTREQUEST: u8 = 1;
const BOOTREPLY: u8 = 2;
const HTYPE_ETHERNET: u8 = 1;

const PAD: u8 = 0;
const END: u8 = 255;
const OVERLOAD_FILE: u8 = 1;
const OVERLOAD_SNAME: u8 = 2;

/// The option codes the server reads; every other option is checked for structure and dropped.
const KEPT: [OptionCode; 7] = [
    OptionCode::MessageType,
    OptionCode::RequestedIpAddress,
    OptionCode::ServerIdentifier,
    OptionCode::ClientIdentifier,
    OptionCode::Hostname,
    OptionCode::ParameterRequestList,
    OptionCode::OptionOverload,
];

/// Why a UDP payload sent to port 67 is not a DHCP request the server can answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootpError {
    #[error("truncated BOOTP message: {0} bytes, need at least 241")]
    Truncated(usize),
    /// Another DHCP server's reply seen on the link: not malformed, not ours.
    #[error("BOOTREPLY from another server")]
    Reply,
    #[error("BOOTP op {0}, neither request nor reply")]
    BadOp(u8),
    #[error("hardware type {htype} / length {hlen}: only Ethernet (1/6) is served")]
    NotEthernet { htype: u8, hlen: u8 },
    /// Plain BOOTP (no magic cookie, or no message type): not served, not malformed.
    #[error("plain BOOTP without DHCP message type")]
    NotDhcp,
    #[error("option {code} overflows its field")]
    OptionOverflow { code: u8 },
    #[error("options field without End option")]
    MissingEnd,
    #[error("option {code} has invalid length {len}")]
    BadOptionLength { code: u8, len: usize },
    #[error("option overload value {0}, expected 1, 2 or 3")]
    BadOverload(u8),
    #[error("DHCP message type {0} is not one a client sends to a server")]
    BadMessageType(u8),
    #[error("dhcproto rejected the canonical message: {0}")]
    Decode(String),
}

impl BootpError {
    /// True for well-formed traffic that simply is not a DHCP request (counted as ignored).
    pub fn is_not_for_us(&self) -> bool {
        matches!(self, BootpError::Reply | BootpError::NotDhcp)
    }
}

/// Checks a client's DHCP message and decodes its canonical form with `dhcproto`.
pub fn decode_request(payload: &[u8]) -> Result<Message, BootpError> {
    let canonical = canonicalize_request(payload)?;
    Message::decode(&mut dhcproto::Decoder::new(&canonical))
        .map_err(|e| BootpError::Decode(e.to_string()))
}

/// Validates `payload` as a DHCP request from an Ethernet client and returns an equivalent
/// message that holds only the options the server reads (53, 50, 54, 61, 12, 55),
/// concatenated, length-checked and each once, with `sname` and `file` zeroed. See the
/// module doc for why.
pub fn canonicalize_request(payload: &[u8]) -> Result<Vec<u8>, BootpError> {
    if payload.len() < FIXED_LEN {
        return Err(BootpError::Truncated(payload.len()));
    }
    match payload[OP] {
        BOOTREQUEST => {}
        BOOTREPLY => return Err(BootpError::Reply),
        other => return Err(BootpError::BadOp(other)),
    }
    let (htype, hlen) = (payload[HTYPE], payload[HLEN]);
    if htype != HTYPE_ETHERNET || hlen != 6 {
        return Err(BootpError::NotEthernet { htype, hlen });
    }
    if payload.len() < OPTIONS_START || payload[FIXED_LEN..OPTIONS_START] != MAGIC {
        return Err(BootpError::NotDhcp);
    }
    if payload.len() == OPTIONS_START {
        return Err(BootpError::Truncated(payload.len()));
    }

    let mut kept = BTreeMap::<u8, Vec<u8>>::new();
    walk_options(&payload[OPTIONS_START..], true, &mut kept)?;
    let overload = kept.remove(&u8::from(OptionCode::OptionOverload));
    if let Some(value) = overload {
        let v = match value.as_slice() {
            [v @ 1..=3] => *v,
            [v] => return Err(BootpError::BadOverload(*v)),
            _ => return Err(bad_len(OptionCode::OptionOverload, value.len())),
        };
        // RFC 2131 §4.1: options, then file, then sname. Overload is only honoured in the
        // options field; one found in file or sname is dropped like any other.
        if v & OVERLOAD_FILE != 0 {
            walk_options(&payload[FILE], false, &mut kept)?;
        }
        if v & OVERLOAD_SNAME != 0 {
            walk_options(&payload[SNAME], false, &mut kept)?;
        }
        kept.remove(&u8::from(OptionCode::OptionOverload));
    }
    check_kept(&mut kept)?;

    let mut out = Vec::with_capacity(OPTIONS_START + 300);
    out.extend_from_slice(&payload[..FIXED_LEN]);
    out[SNAME].fill(0);
    out[FILE].fill(0);
    out.extend_from_slice(&MAGIC);
    for (code, data) in &kept {
        out.push(*code);
        out.push(u8::try_from(data.len()).expect("check_kept bounds lengths to 255"));
        out.extend_from_slice(data);
    }
    out.push(END);
    Ok(out)
}

fn bad_len(code: OptionCode, len: usize) -> BootpError {
    BootpError::BadOptionLength {
        code: code.into(),
        len,
    }
}

/// Walks one option area, appending the data of kept options (RFC 3396 concatenation).
/// The options field must end with End; `file` and `sname` may simply run out.
fn walk_options(
    area: &[u8],
    require_end: bool,
    kept: &mut BTreeMap<u8, Vec<u8>>,
) -> Result<(), BootpError> {
    let mut at = 0;
    while at < area.len() {
        let code = area[at];
        match code {
            PAD => at += 1,
            END => return Ok(()),
            _ => {
                let len = match area.get(at + 1) {
                    Some(len) => usize::from(*len),
                    None => return Err(BootpError::OptionOverflow { code }),
                };
                let data = area
                    .get(at + 2..at + 2 + len)
                    .ok_or(BootpError::OptionOverflow { code })?;
                if KEPT.iter().any(|k| u8::from(*k) == code) {
                    kept.entry(code).or_default().extend_from_slice(data);
                }
                at += 2 + len;
            }
        }
    }
    if require_end {
        Err(BootpError::MissingEnd)
    } else {
        Ok(())
    }
}

/// Length and value checks on the kept options, so that `dhcproto` decodes each of them
/// exactly as the server expects. A client hostname that is not a plausible host name is
/// dropped (not the message): it would only end up in lease listings and terminals.
fn check_kept(kept: &mut BTreeMap<u8, Vec<u8>>) -> Result<(), BootpError> {
    let msg_type = kept
        .get(&u8::from(OptionCode::MessageType))
        .ok_or(BootpError::NotDhcp)?;
    match msg_type.as_slice() {
        // DISCOVER, REQUEST, DECLINE, RELEASE, INFORM; OFFER/ACK/NAK (2, 5, 6) are replies.
        [1 | 3 | 4 | 7 | 8] => {}
        [t] => return Err(BootpError::BadMessageType(*t)),
        other => return Err(bad_len(OptionCode::MessageType, other.len())),
    }
    for code in [OptionCode::RequestedIpAddress, OptionCode::ServerIdentifier] {
        if let Some(v) = kept.get(&u8::from(code)) {
            if v.len() != 4 {
                return Err(bad_len(code, v.len()));
            }
        }
    }
    for (code, min) in [
        (OptionCode::ClientIdentifier, 2),
        (OptionCode::ParameterRequestList, 1),
        (OptionCode::Hostname, 1),
    ] {
        if let Some(v) = kept.get(&u8::from(code)) {
            if v.len() < min || v.len() > 255 {
                return Err(bad_len(code, v.len()));
            }
        }
    }
    let hostname = u8::from(OptionCode::Hostname);
    if let Some(v) = kept.get_mut(&hostname) {
        // Some clients (Windows among them) count a trailing NUL.
        while v.last() == Some(&0) {
            v.pop();
        }
        if !is_plausible_hostname(v) {
            kept.remove(&hostname);
        }
    }
    Ok(())
}

/// Letters, digits, '-', '_' and '.', 1 to 255 bytes: what a lease listing can show as is.
pub fn is_plausible_hostname(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::{DhcpOption, MessageType};

    /// A DISCOVER from 52:54:00:12:34:56, xid 0x11223344, asking for 1, 3, 6 with hostname
    /// "vm1", followed by option 81 with a length that would trip dhcproto's debug assert.
    fn discover_bytes(extra: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; FIXED_LEN];
        b[0] = 1;
        b[1] = 1;
        b[2] = 6;
        b[4..8].copy_from_slice(&[0x11, 0x22, 0x33, 0x44]);
        b[28..34].copy_from_slice(&[0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        b[44..48].copy_from_slice(b"junk");
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&[53, 1, 1, 55, 3, 1, 3, 6, 12, 3, b'v', b'm', b'1']);
        b.extend_from_slice(extra);
        b.push(END);
        b
    }

    #[test]
    fn keeps_what_the_server_reads_and_drops_the_rest() {
        let bytes = discover_bytes(&[81, 1, 0, 80, 5, 1, 2, 3, 4, 5, 94, 0]);
        let msg = decode_request(&bytes).unwrap();
        assert_eq!(msg.xid(), 0x1122_3344);
        assert_eq!(msg.chaddr(), &[0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        assert_eq!(msg.opts().msg_type(), Some(MessageType::Discover));
        assert_eq!(
            msg.opts().get(OptionCode::Hostname),
            Some(&DhcpOption::Hostname("vm1".into()))
        );
        assert!(msg.opts().get(OptionCode::ClientFQDN).is_none());
        assert_eq!(msg.sname(), None);
    }

    #[test]
    fn structural_errors() {
        let good = discover_bytes(&[]);
        assert_eq!(
            canonicalize_request(&good[..200]),
            Err(BootpError::Truncated(200))
        );
        assert_eq!(
            canonicalize_request(&good[..good.len() - 1]),
            Err(BootpError::MissingEnd)
        );
        let mut b = good.clone();
        b.truncate(b.len() - 1);
        b.extend_from_slice(&[60, 20, 1, 2]);
        assert_eq!(
            canonicalize_request(&b),
            Err(BootpError::OptionOverflow { code: 60 })
        );
        let mut b = good.clone();
        b[2] = 17;
        assert_eq!(
            canonicalize_request(&b),
            Err(BootpError::NotEthernet { htype: 1, hlen: 17 })
        );
        let mut b = good.clone();
        b[0] = 2;
        assert!(canonicalize_request(&b).unwrap_err().is_not_for_us());
        let mut b = good.clone();
        b[OPTIONS_START + 2] = 2; // message type OFFER from a "client"
        assert_eq!(canonicalize_request(&b), Err(BootpError::BadMessageType(2)));
        // Two message type options concatenate to a 2-byte value: malformed.
        let b = discover_bytes(&[53, 1, 1]);
        assert!(matches!(
            canonicalize_request(&b),
            Err(BootpError::BadOptionLength { code: 53, len: 2 })
        ));
    }

    #[test]
    fn overload_and_concatenation() {
        // Client id split in two pieces, the second in `file` (overload = 1).
        let mut b = discover_bytes(&[52, 1, 1, 61, 3, 1, 0x52, 0x54]);
        b[FILE.start..FILE.start + 7].copy_from_slice(&[61, 4, 0, 0x12, 0x34, 0x56, END]);
        let msg = decode_request(&b).unwrap();
        assert_eq!(
            msg.opts().get(OptionCode::ClientIdentifier),
            Some(&DhcpOption::ClientIdentifier(vec![
                1, 0x52, 0x54, 0, 0x12, 0x34, 0x56
            ]))
        );
        // An option running off the end of `file` is malformed.
        b[FILE.start + 6] = PAD;
        b[FILE.end - 2] = 61;
        b[FILE.end - 1] = 9;
        assert_eq!(
            canonicalize_request(&b),
            Err(BootpError::OptionOverflow { code: 61 })
        );
    }

    #[test]
    fn implausible_hostnames_are_dropped_not_fatal() {
        let b = discover_bytes(&[]);
        let mut b2 = b.clone();
        let at = OPTIONS_START + 10;
        assert_eq!(&b2[at..at + 3], b"vm1");
        b2[at + 1] = b'\n';
        let msg = decode_request(&b2).unwrap();
        assert!(msg.opts().get(OptionCode::Hostname).is_none());
        assert!(is_plausible_hostname(b"web-01.lab"));
        assert!(!is_plausible_hostname(b""));
    }
}
