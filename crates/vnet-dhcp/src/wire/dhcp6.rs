//! DHCPv6 messages (RFC 8415 §8, §21) as a server reads and writes them: a total parser
//! from the client's bytes to [`Request6`], and [`Reply6`], which writes replies.
//!
//! Our own code rather than `dhcproto::v6`: the format is a flat list of
//! type-length-value options (IA_NA nests one level), we need a dozen of them, and
//! `dhcproto`'s decoder recurses into relay messages without a depth bound, asserts on
//! packet-supplied lengths in debug builds and knows no Client FQDN option (RFC 4704).
//! Reading is one pass over borrowed bytes with every length checked.

use std::net::Ipv6Addr;

use vnet_core::wire::ethernet::MacAddr;

use super::bootp::is_plausible_hostname;

/// UDP port of DHCPv6 servers and relay agents.
pub const SERVER_PORT: u16 = 547;
/// UDP port of DHCPv6 clients.
pub const CLIENT_PORT: u16 = 546;
/// All_DHCP_Relay_Agents_and_Servers (RFC 8415 §7.1).
pub const ALL_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);

/// Message types (RFC 8415 §7.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType6 {
    Solicit,
    Advertise,
    Request,
    Confirm,
    Renew,
    Rebind,
    Reply,
    Release,
    Decline,
    InformationRequest,
}

impl MessageType6 {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Self::Solicit,
            2 => Self::Advertise,
            3 => Self::Request,
            4 => Self::Confirm,
            5 => Self::Renew,
            6 => Self::Rebind,
            7 => Self::Reply,
            8 => Self::Release,
            9 => Self::Decline,
            11 => Self::InformationRequest,
            _ => return None,
        })
    }

    fn code(self) -> u8 {
        match self {
            Self::Solicit => 1,
            Self::Advertise => 2,
            Self::Request => 3,
            Self::Confirm => 4,
            Self::Renew => 5,
            Self::Rebind => 6,
            Self::Reply => 7,
            Self::Release => 8,
            Self::Decline => 9,
            Self::InformationRequest => 11,
        }
    }
}

/// Option codes the server reads or writes (RFC 8415 §21, RFC 3646, RFC 4704).
pub mod code {
    pub const CLIENT_ID: u16 = 1;
    pub const SERVER_ID: u16 = 2;
    pub const IA_NA: u16 = 3;
    pub const IA_TA: u16 = 4;
    pub const IAADDR: u16 = 5;
    pub const ORO: u16 = 6;
    pub const PREFERENCE: u16 = 7;
    pub const ELAPSED_TIME: u16 = 8;
    pub const STATUS_CODE: u16 = 13;
    pub const RAPID_COMMIT: u16 = 14;
    pub const DNS_SERVERS: u16 = 23;
    pub const DOMAIN_LIST: u16 = 24;
    pub const IA_PD: u16 = 25;
    pub const CLIENT_FQDN: u16 = 39;
}

/// Status codes (RFC 8415 §21.13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Success = 0,
    NoAddrsAvail = 2,
    NoBinding = 3,
    NotOnLink = 4,
    UseMulticast = 5,
}

/// Why bytes are not a DHCPv6 message a server will act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Dhcp6Error {
    #[error("DHCPv6 message of {0} bytes: shorter than its 4-byte header")]
    Short(usize),
    /// Well formed, not for a server on the link: counted as ignored.
    #[error("DHCPv6 message type {0}: not one a client sends to a server")]
    NotForServer(u8),
    #[error("option {code} claims {len} bytes, {left} remain")]
    OptionOverrun { code: u16, len: usize, left: usize },
    #[error("truncated option header: {0} bytes remain")]
    TruncatedOption(usize),
    #[error("option {code} has a bad length {len}")]
    BadLength { code: u16, len: usize },
    #[error("option {0} appears twice")]
    Duplicate(u16),
    #[error("DUID of {0} bytes: RFC 8415 allows 2 to 130")]
    BadDuid(usize),
    #[error("{0} IA_NA options: a client on one link needs few")]
    TooManyIas(usize),
}

impl Dhcp6Error {
    /// True for messages that are fine but not for a server (relays, server messages).
    pub fn is_not_for_us(&self) -> bool {
        matches!(self, Dhcp6Error::NotForServer(_))
    }
}

/// Most IA_NAs one message may carry, and addresses per IA: bounds the work per message.
const MAX_IAS: usize = 8;
const MAX_ADDRS_PER_IA: usize = 8;

/// One identity association for non-temporary addresses (RFC 8415 §21.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IaNa {
    pub iaid: u32,
    /// Addresses the client lists in it (hints in SOLICIT, its leases elsewhere).
    pub addrs: Vec<Ipv6Addr>,
}

/// A client's message, checked, reduced to what the server decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request6 {
    pub kind: MessageType6,
    /// The 24-bit transaction id.
    pub xid: [u8; 3],
    /// The client's DUID (option 1) as sent.
    pub client_id: Option<Vec<u8>>,
    /// The server DUID the client addressed (option 2).
    pub server_id: Option<Vec<u8>>,
    pub ia_na: Vec<IaNa>,
    pub rapid_commit: bool,
    /// Option Request Option codes.
    pub oro: Vec<u16>,
    /// The Client FQDN option as sent (flags, then the name in DNS wire form).
    pub fqdn: Option<Vec<u8>>,
}

impl Request6 {
    /// The client's host name: the first label of its Client FQDN, when plausible.
    pub fn hostname(&self) -> Option<String> {
        let fqdn = self.fqdn.as_deref()?;
        let (&len, rest) = fqdn.get(1..)?.split_first()?;
        let label = rest.get(..usize::from(len))?;
        is_plausible_hostname(label).then(|| String::from_utf8_lossy(label).into_owned())
    }

    /// The client's MAC if its DUID carries an Ethernet address (DUID-LLT or DUID-LL).
    pub fn duid_mac(&self) -> Option<MacAddr> {
        duid_mac(self.client_id.as_deref()?)
    }
}

/// The Ethernet address inside a DUID-LLT (type 1) or DUID-LL (type 3) of hardware type
/// 1 (RFC 8415 §11.2, §11.4).
pub fn duid_mac(duid: &[u8]) -> Option<MacAddr> {
    let ll = match duid {
        [0, 1, 0, 1, _, _, _, _, ll @ ..] | [0, 3, 0, 1, ll @ ..] => ll,
        _ => return None,
    };
    Some(MacAddr(ll.try_into().ok()?))
}

/// The DUID-LL (RFC 8415 §11.4) of an Ethernet interface: the server's identity, stable
/// as long as its MAC is.
pub fn duid_ll(mac: MacAddr) -> Vec<u8> {
    let mut duid = vec![0, 3, 0, 1];
    duid.extend_from_slice(&mac.0);
    duid
}

/// Iterates the options in `bytes`: `(code, value)` or the first framing error.
fn options(bytes: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), Dhcp6Error>> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        if rest.len() < 4 {
            let err = Dhcp6Error::TruncatedOption(rest.len());
            rest = &[];
            return Some(Err(err));
        }
        let code = u16::from_be_bytes([rest[0], rest[1]]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let body = &rest[4..];
        if body.len() < len {
            let err = Dhcp6Error::OptionOverrun {
                code,
                len,
                left: body.len(),
            };
            rest = &[];
            return Some(Err(err));
        }
        rest = &body[len..];
        Some(Ok((code, &body[..len])))
    })
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Reads an IA_NA's body: IAID, T1, T2, then its options (addresses; others skipped).
fn parse_ia_na(body: &[u8]) -> Result<IaNa, Dhcp6Error> {
    if body.len() < 12 {
        return Err(Dhcp6Error::BadLength {
            code: code::IA_NA,
            len: body.len(),
        });
    }
    let mut addrs = Vec::new();
    for option in options(&body[12..]) {
        let (c, value) = option?;
        if c != code::IAADDR {
            continue;
        }
        if value.len() < 24 {
            return Err(Dhcp6Error::BadLength {
                code: c,
                len: value.len(),
            });
        }
        // The address's own options (a status code) are checked for framing only.
        for o in options(&value[24..]) {
            o?;
        }
        if addrs.len() < MAX_ADDRS_PER_IA {
            let octets: [u8; 16] = value[..16].try_into().expect("checked length");
            addrs.push(Ipv6Addr::from(octets));
        }
    }
    Ok(IaNa {
        iaid: be32(body),
        addrs,
    })
}

/// Reads a message a client sent to a server. Total: any bytes give a request or an
/// error, never a panic.
pub fn parse_request(bytes: &[u8]) -> Result<Request6, Dhcp6Error> {
    if bytes.len() < 4 {
        return Err(Dhcp6Error::Short(bytes.len()));
    }
    let kind = MessageType6::from_code(bytes[0])
        .filter(|k| !matches!(k, MessageType6::Advertise | MessageType6::Reply))
        .ok_or(Dhcp6Error::NotForServer(bytes[0]))?;
    let mut req = Request6 {
        kind,
        xid: [bytes[1], bytes[2], bytes[3]],
        client_id: None,
        server_id: None,
        ia_na: Vec::new(),
        rapid_commit: false,
        oro: Vec::new(),
        fqdn: None,
    };
    let once = |slot: &Option<Vec<u8>>, c| match slot {
        Some(_) => Err(Dhcp6Error::Duplicate(c)),
        None => Ok(()),
    };
    for option in options(&bytes[4..]) {
        let (c, value) = option?;
        let bad_len = || Dhcp6Error::BadLength {
            code: c,
            len: value.len(),
        };
        match c {
            code::CLIENT_ID | code::SERVER_ID => {
                if !(2..=130).contains(&value.len()) {
                    return Err(Dhcp6Error::BadDuid(value.len()));
                }
                let slot = if c == code::CLIENT_ID {
                    &mut req.client_id
                } else {
                    &mut req.server_id
                };
                once(slot, c)?;
                *slot = Some(value.to_vec());
            }
            code::IA_NA => {
                if req.ia_na.len() == MAX_IAS {
                    return Err(Dhcp6Error::TooManyIas(MAX_IAS + 1));
                }
                req.ia_na.push(parse_ia_na(value)?);
            }
            // Checked for their length only: the server hands out neither temporary
            // addresses nor prefixes, and its answers carry no IA_TA or IA_PD.
            code::IA_TA if value.len() < 4 => return Err(bad_len()),
            code::IA_PD if value.len() < 12 => return Err(bad_len()),
            code::ORO => {
                if value.len() % 2 != 0 {
                    return Err(bad_len());
                }
                req.oro = value
                    .chunks_exact(2)
                    .map(|p| u16::from_be_bytes([p[0], p[1]]))
                    .collect();
            }
            code::ELAPSED_TIME if value.len() != 2 => return Err(bad_len()),
            code::RAPID_COMMIT => {
                if !value.is_empty() {
                    return Err(bad_len());
                }
                req.rapid_commit = true;
            }
            code::CLIENT_FQDN => {
                if value.is_empty() {
                    return Err(bad_len());
                }
                once(&req.fqdn, c)?;
                req.fqdn = Some(value.to_vec());
            }
            _ => {}
        }
    }
    Ok(req)
}

/// A reply being written: header, then options appended in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply6 {
    bytes: Vec<u8>,
}

impl Reply6 {
    /// A message of `kind` answering transaction `xid`.
    pub fn new(kind: MessageType6, xid: [u8; 3]) -> Self {
        let mut bytes = Vec::with_capacity(256);
        bytes.push(kind.code());
        bytes.extend_from_slice(&xid);
        Reply6 { bytes }
    }

    /// Appends option `code` with `value`. Values are the server's own, a few hundred
    /// bytes at most; longer ones are cut to the option's 65535-byte maximum.
    pub fn option(&mut self, code: u16, value: &[u8]) -> &mut Self {
        let value = &value[..value.len().min(usize::from(u16::MAX))];
        self.bytes.extend_from_slice(&code.to_be_bytes());
        self.bytes
            .extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.bytes.extend_from_slice(value);
        self
    }

    /// The message as sent.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// The value of a Status Code option.
pub fn status(code: Status, message: &str) -> Vec<u8> {
    let mut v = (code as u16).to_be_bytes().to_vec();
    v.extend_from_slice(message.as_bytes());
    v
}

/// An IA Address option's value (RFC 8415 §21.6) without options of its own.
pub fn iaaddr(addr: Ipv6Addr, preferred: u32, valid: u32) -> Vec<u8> {
    let mut v = addr.octets().to_vec();
    v.extend_from_slice(&preferred.to_be_bytes());
    v.extend_from_slice(&valid.to_be_bytes());
    v
}

/// An IA_NA option's value: IAID, T1, T2, then `options` (already encoded).
pub fn ia_na(iaid: u32, t1: u32, t2: u32, options: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(12 + options.len());
    v.extend_from_slice(&iaid.to_be_bytes());
    v.extend_from_slice(&t1.to_be_bytes());
    v.extend_from_slice(&t2.to_be_bytes());
    v.extend_from_slice(options);
    v
}

/// One option (code, length, value) as bytes, to nest inside another.
pub fn encoded(code: u16, value: &[u8]) -> Vec<u8> {
    let mut r = Reply6 { bytes: Vec::new() };
    r.option(code, value);
    r.bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SOLICIT as ISC dhclient sends it: client id (DUID-LLT), IA_NA with no
    /// addresses, elapsed time, ORO asking for DNS servers and the domain list.
    pub(crate) fn solicit() -> Vec<u8> {
        let mut m = Reply6::new(MessageType6::Solicit, [0x12, 0x34, 0x56]);
        m.option(
            code::CLIENT_ID,
            &[0, 1, 0, 1, 0x2c, 0, 0, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56],
        )
        .option(code::IA_NA, &ia_na(0x1234_5678, 0, 0, &[]))
        .option(code::ELAPSED_TIME, &[0, 0])
        .option(code::ORO, &[0, 23, 0, 24]);
        m.into_bytes()
    }

    #[test]
    fn reads_a_dhclient_solicit() {
        let req = parse_request(&solicit()).unwrap();
        assert_eq!(req.kind, MessageType6::Solicit);
        assert_eq!(req.xid, [0x12, 0x34, 0x56]);
        assert_eq!(
            req.ia_na,
            vec![IaNa {
                iaid: 0x1234_5678,
                addrs: vec![]
            }]
        );
        assert_eq!(req.oro, vec![23, 24]);
        assert_eq!(
            req.duid_mac(),
            Some(MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]))
        );
        assert!(!req.rapid_commit);
    }

    #[test]
    fn reads_addresses_and_names() {
        let addr: Ipv6Addr = "fd00::1000".parse().unwrap();
        let mut m = Reply6::new(MessageType6::Request, [1, 2, 3]);
        m.option(code::CLIENT_ID, &[0, 3, 0, 1, 2, 0, 0, 0, 0, 9])
            .option(
                code::IA_NA,
                &ia_na(7, 0, 0, &encoded(code::IAADDR, &iaaddr(addr, 0, 0))),
            )
            .option(code::CLIENT_FQDN, b"\x01\x03web\x03lab\x00")
            .option(code::RAPID_COMMIT, &[]);
        let req = parse_request(&m.into_bytes()).unwrap();
        assert_eq!(req.ia_na[0].addrs, vec![addr]);
        assert_eq!(req.hostname().as_deref(), Some("web"));
        assert!(req.rapid_commit);
        assert_eq!(req.duid_mac(), Some(MacAddr([2, 0, 0, 0, 0, 9])));
    }

    #[test]
    fn refuses_broken_framing_and_server_messages() {
        assert_eq!(parse_request(&[1, 2]), Err(Dhcp6Error::Short(2)));
        let mut m = solicit();
        m.push(0);
        assert_eq!(parse_request(&m), Err(Dhcp6Error::TruncatedOption(1)));
        let mut m = solicit();
        m.extend_from_slice(&[0, 8, 0, 9, 0]);
        assert!(matches!(
            parse_request(&m),
            Err(Dhcp6Error::OptionOverrun { code: 8, .. })
        ));
        let mut m = solicit();
        m.extend_from_slice(&encoded(code::IA_NA, &[0; 5]));
        assert!(matches!(
            parse_request(&m),
            Err(Dhcp6Error::BadLength { .. })
        ));
        let mut m = solicit();
        m.extend_from_slice(&encoded(code::CLIENT_ID, &[0, 3, 0, 1, 1, 2, 3, 4, 5, 6]));
        assert_eq!(parse_request(&m), Err(Dhcp6Error::Duplicate(1)));
        // RELAY-FORW and ADVERTISE are for someone else.
        let relay = [12, 0, 0, 0];
        assert!(parse_request(&relay).unwrap_err().is_not_for_us());
        assert!(parse_request(&[2, 0, 0, 0]).unwrap_err().is_not_for_us());
    }

    #[test]
    fn duid_macs_come_from_ethernet_duids_only() {
        assert_eq!(
            duid_mac(&duid_ll(MacAddr([2, 1, 2, 3, 4, 5]))),
            Some(MacAddr([2, 1, 2, 3, 4, 5]))
        );
        assert_eq!(duid_mac(&[0, 2, 0, 0, 0, 9, 1, 2, 3]), None, "DUID-EN");
        assert_eq!(
            duid_mac(&[0, 3, 0, 6, 1, 2, 3, 4, 5, 6]),
            None,
            "not Ethernet"
        );
        assert_eq!(duid_mac(&[0, 3, 0, 1, 1, 2, 3]), None, "short");
    }
}
