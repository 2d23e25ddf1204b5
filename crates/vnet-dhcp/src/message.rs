//! DHCP messages as the server sees them: the client's request reduced to the fields the
//! server decides on, and the replies it builds (BOOTP fields, options, RFC 2131 §4.1
//! addressing, Ethernet/IPv4/UDP framing).

use std::net::Ipv4Addr;
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};
use vnet_core::wire::ethernet::{write_header, EtherType, MacAddr, HEADER_LEN};

use crate::config::{DhcpConfig, Subnet};
use crate::lease::ClientId;
use crate::wire::datagram::write_udp;
use vnet_core::wire::{ipv4, udp};

/// UDP port of DHCP servers.
pub const SERVER_PORT: u16 = 67;
/// UDP port of DHCP clients.
pub const CLIENT_PORT: u16 = 68;
/// BOOTP's minimum message size (RFC 1542 §3.3); some old clients drop shorter replies.
const MIN_BOOTP_LEN: usize = 300;

/// A client's DHCP message, checked and reduced to what the server decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientRequest {
    pub kind: MessageType,
    pub xid: u32,
    pub flags: Flags,
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: MacAddr,
    /// Option 61 if sent, else derived from `chaddr`: the lease key.
    pub client_id: ClientId,
    /// Option 61 exactly as sent, echoed in replies (RFC 6842).
    pub sent_client_id: Option<Vec<u8>>,
    pub requested_ip: Option<Ipv4Addr>,
    pub server_id: Option<Ipv4Addr>,
    pub hostname: Option<String>,
    pub parameter_requests: Vec<u8>,
    /// Source address of the IP packet (INFORM from clients that leave `ciaddr` empty).
    pub ip_src: Ipv4Addr,
}

impl ClientRequest {
    /// Reads a message that passed [`crate::wire::bootp::decode_request`] (so its `hlen`
    /// is 6 and its options have the right shapes).
    pub fn from_message(msg: &Message, ip_src: Ipv4Addr) -> Option<Self> {
        let kind = msg.opts().msg_type()?;
        let chaddr = MacAddr(msg.chaddr().try_into().ok()?);
        let opts = msg.opts();
        let sent_client_id = match opts.get(OptionCode::ClientIdentifier) {
            Some(DhcpOption::ClientIdentifier(id)) => Some(id.clone()),
            _ => None,
        };
        let client_id = sent_client_id
            .as_deref()
            .map_or_else(|| ClientId::from_mac(chaddr), ClientId::from_option);
        let ip_option = |code| match opts.get(code) {
            Some(DhcpOption::RequestedIpAddress(ip) | DhcpOption::ServerIdentifier(ip)) => {
                Some(*ip)
            }
            _ => None,
        };
        Some(ClientRequest {
            kind,
            xid: msg.xid(),
            flags: msg.flags(),
            ciaddr: msg.ciaddr(),
            giaddr: msg.giaddr(),
            chaddr,
            client_id,
            sent_client_id,
            requested_ip: ip_option(OptionCode::RequestedIpAddress),
            server_id: ip_option(OptionCode::ServerIdentifier),
            hostname: match opts.get(OptionCode::Hostname) {
                Some(DhcpOption::Hostname(name)) => Some(name.clone()),
                _ => None,
            },
            parameter_requests: match opts.get(OptionCode::ParameterRequestList) {
                Some(DhcpOption::ParameterRequestList(codes)) => {
                    codes.iter().map(|c| u8::from(*c)).collect()
                }
                _ => Vec::new(),
            },
            ip_src,
        })
    }

    fn asked_for(&self, code: OptionCode) -> bool {
        self.parameter_requests.contains(&u8::from(code))
    }
}

/// What a reply grants, beyond the vnet's configuration.
pub(crate) enum Grant<'a> {
    /// OFFER or ACK of a lease on `yiaddr`.
    Lease {
        yiaddr: Ipv4Addr,
        lease_time: Duration,
        hostname: Option<&'a str>,
    },
    /// ACK to an INFORM: configuration only, for a client that configured its address itself.
    Configuration,
    /// NAK: nothing, and a short text for the client's log.
    Refusal(&'static str),
}

/// Builds the complete Ethernet frame of a reply to `req`.
pub(crate) fn reply_frame(
    config: &DhcpConfig,
    subnet: &Subnet,
    req: &ClientRequest,
    kind: MessageType,
    grant: Grant<'_>,
) -> Option<Vec<u8>> {
    let yiaddr = match grant {
        Grant::Lease { yiaddr, .. } => yiaddr,
        _ => Ipv4Addr::UNSPECIFIED,
    };
    let ciaddr = match kind {
        MessageType::Nak | MessageType::Offer => Ipv4Addr::UNSPECIFIED,
        _ => req.ciaddr,
    };
    let mut msg = blank_reply()?;
    // Only the broadcast bit is the client's to set; the other 15 must be zero (RFC 2131 §2).
    let flags = if req.flags.broadcast() {
        Flags::default().set_broadcast()
    } else {
        Flags::default()
    };
    msg.set_opcode(Opcode::BootReply)
        .set_htype(HType::Eth)
        .set_xid(req.xid)
        .set_flags(flags)
        .set_ciaddr(ciaddr)
        .set_yiaddr(yiaddr)
        .set_siaddr(Ipv4Addr::UNSPECIFIED)
        .set_giaddr(req.giaddr)
        .set_chaddr(&req.chaddr.0);
    // The header through the magic cookie (dhcproto writes no End for empty options),
    // then the options in our order, which dhcproto's sorted map would not keep.
    let mut payload = msg.to_vec().ok()?;
    for option in reply_options(config, subnet, req, kind, &grant) {
        payload.extend_from_slice(&option.to_vec().ok()?);
    }
    payload.push(u8::from(OptionCode::End));
    if payload.len() < MIN_BOOTP_LEN {
        payload.resize(MIN_BOOTP_LEN, 0); // zeros after End are Pad options
    }

    let (dst_ip, dst_mac) = destination(req, kind, yiaddr);
    let mut frame =
        Vec::with_capacity(HEADER_LEN + ipv4::HEADER_LEN + udp::HEADER_LEN + payload.len());
    frame.resize(HEADER_LEN, 0);
    write_header(&mut frame, dst_mac, config.server_mac, EtherType::IPV4);
    write_udp(
        &mut frame,
        (config.server_ip, SERVER_PORT),
        (dst_ip, CLIENT_PORT),
        &payload,
    );
    Some(frame)
}

/// An all-zero BOOTREPLY with the magic cookie and no options.
const BLANK_REPLY: [u8; 241] = {
    let mut b = [0u8; 241];
    b[0] = 2;
    b[236] = 99;
    b[237] = 130;
    b[238] = 83;
    b[239] = 99;
    b[240] = 255;
    b
};

/// A reply to fill in. Decoded from [`BLANK_REPLY`] rather than `Message::default()`,
/// which draws a random xid from the thread RNG: a hidden syscall and a source of
/// nondeterminism that a sans-I/O core should not have.
fn blank_reply() -> Option<Message> {
    Message::decode(&mut dhcproto::Decoder::new(&BLANK_REPLY)).ok()
}

/// RFC 2131 §4.1 for a server on the client's own link (giaddr is always 0 here): NAKs are
/// broadcast; a client with an address (`ciaddr`: RENEW, REBIND, INFORM) gets unicast at
/// it; a client that asked for broadcast gets broadcast; otherwise unicast to `yiaddr` at
/// `chaddr`, which needs no ARP (the client cannot answer ARP yet) because we address the
/// Ethernet frame ourselves.
fn destination(req: &ClientRequest, kind: MessageType, yiaddr: Ipv4Addr) -> (Ipv4Addr, MacAddr) {
    let broadcast = (Ipv4Addr::BROADCAST, MacAddr::BROADCAST);
    if kind == MessageType::Nak {
        broadcast
    } else if !req.ciaddr.is_unspecified() {
        (req.ciaddr, req.chaddr)
    } else if req.flags.broadcast() || yiaddr.is_unspecified() {
        broadcast
    } else {
        (yiaddr, req.chaddr)
    }
}

/// Options of a reply, message type and server id first (where simple clients look),
/// then the rest in the order of the client's parameter request list.
///
/// Every configured option is sent whether or not the client listed it: the set is small,
/// fits any client's 576-byte limit, and clients such as busybox udhcpc use options (MTU)
/// they do not request by default. The list only adds the reserved host name, which a
/// client that did not ask may not want.
fn reply_options(
    config: &DhcpConfig,
    subnet: &Subnet,
    req: &ClientRequest,
    kind: MessageType,
    grant: &Grant<'_>,
) -> Vec<DhcpOption> {
    let mut opts = vec![
        DhcpOption::MessageType(kind),
        DhcpOption::ServerIdentifier(config.server_ip),
    ];
    let hostname = match grant {
        Grant::Refusal(text) => {
            opts.push(DhcpOption::Message((*text).to_string()));
            None
        }
        Grant::Configuration => None,
        Grant::Lease {
            lease_time,
            hostname,
            ..
        } => {
            let secs = u32::try_from(lease_time.as_secs()).unwrap_or(u32::MAX - 1);
            opts.push(DhcpOption::AddressLeaseTime(secs));
            opts.push(DhcpOption::Renewal(secs / 2));
            opts.push(DhcpOption::Rebinding((u64::from(secs) * 7 / 8) as u32));
            *hostname
        }
    };
    if !matches!(grant, Grant::Refusal(_)) {
        opts.push(DhcpOption::SubnetMask(subnet.mask));
        opts.push(DhcpOption::BroadcastAddr(subnet.broadcast));
        if let Some(router) = config.router {
            opts.push(DhcpOption::Router(vec![router]));
        }
        if !config.dns.is_empty() {
            opts.push(DhcpOption::DomainNameServer(config.dns.clone()));
        }
        if let Some(domain) = &config.domain {
            opts.push(DhcpOption::DomainName(domain.clone()));
        }
        if let Some(mtu) = config.mtu {
            opts.push(DhcpOption::InterfaceMtu(mtu));
        }
        if let Some(name) = hostname.filter(|_| req.asked_for(OptionCode::Hostname)) {
            opts.push(DhcpOption::Hostname(name.to_string()));
        }
    }
    if let Some(id) = &req.sent_client_id {
        opts.push(DhcpOption::ClientIdentifier(id.clone()));
    }
    // Stable sort: the first two stay first, requested options follow in the client's
    // order, unrequested ones keep ours.
    let rank = |o: &DhcpOption| {
        let code = u8::from(OptionCode::from(o));
        match req.parameter_requests.iter().position(|c| *c == code) {
            Some(i) => 1 + i,
            None => 256,
        }
    };
    opts[2..].sort_by_key(rank);
    opts
}
