//! A scripted DHCP client and an independent checker of the frames the server sends.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};
use vnet_dhcp::wire::datagram::write_udp;
use vnet_dhcp::{DhcpConfig, DhcpServer, LeaseDb, MacAddr, Reservation, Timestamp};

pub const SERVER_MAC: MacAddr = MacAddr([0x02, 0x76, 0x64, 0, 0, 0x01]);

pub fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// 2023-11-14T22:13:20Z plus `secs`.
pub fn at(secs: u64) -> Timestamp {
    Timestamp::from_unix_millis(1_700_000_000_000) + Duration::from_secs(secs)
}

/// vmnet1-like: 192.168.56.0/24, server .254, pool .128–.253, DNS and MTU, no router.
pub fn config() -> DhcpConfig {
    let mut c = DhcpConfig::for_subnet(SERVER_MAC, ip("192.168.56.0"), 24).unwrap();
    c.dns = vec![ip("192.168.56.1")];
    c.domain = Some("vmnet1.test".into());
    c.mtu = Some(9000);
    c
}

pub fn server() -> DhcpServer {
    DhcpServer::new(config(), LeaseDb::new()).unwrap()
}

pub fn reservation(mac: MacAddr, addr: &str, hostname: Option<&str>) -> Reservation {
    Reservation {
        mac,
        ip: ip(addr),
        hostname: hostname.map(str::to_string),
    }
}

/// A VM's DHCP client, building its messages with dhcproto as udhcpc and dhclient would.
#[derive(Clone)]
pub struct Client {
    pub mac: MacAddr,
    pub xid: u32,
    pub client_id: Option<Vec<u8>>,
    pub hostname: Option<String>,
    pub broadcast_flag: bool,
}

impl Client {
    pub fn new(last: u8) -> Self {
        Client {
            mac: MacAddr([0x52, 0x54, 0x00, 0x00, 0x00, last]),
            xid: 0x1000 + u32::from(last),
            client_id: None,
            hostname: Some(format!("vm{last}")),
            broadcast_flag: false,
        }
    }

    pub fn message(&self, kind: MessageType) -> Message {
        let mut m = Message::new_with_id(
            self.xid,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &self.mac.0,
        );
        if self.broadcast_flag {
            m.set_flags(Flags::default().set_broadcast());
        }
        let opts = m.opts_mut();
        opts.insert(DhcpOption::MessageType(kind));
        if let Some(id) = &self.client_id {
            opts.insert(DhcpOption::ClientIdentifier(id.clone()));
        }
        if let Some(name) = &self.hostname {
            opts.insert(DhcpOption::Hostname(name.clone()));
        }
        opts.insert(DhcpOption::ParameterRequestList(vec![
            OptionCode::SubnetMask,
            OptionCode::Router,
            OptionCode::DomainNameServer,
            OptionCode::Hostname,
            OptionCode::DomainName,
            OptionCode::BroadcastAddr,
        ]));
        m
    }

    /// The frame of `msg` sent by this client: broadcast from 0.0.0.0 unless `from` gives
    /// its address and `to` the server's (unicast renewal).
    pub fn frame(
        &self,
        msg: &Message,
        from: Option<Ipv4Addr>,
        to: Option<(MacAddr, Ipv4Addr)>,
    ) -> Vec<u8> {
        let (dst_mac, dst_ip) = to.unwrap_or((MacAddr::BROADCAST, Ipv4Addr::BROADCAST));
        udp_frame(
            self.mac,
            dst_mac,
            (from.unwrap_or(Ipv4Addr::UNSPECIFIED), 68),
            (dst_ip, 67),
            &msg.to_vec().unwrap(),
        )
    }

    pub fn discover(&self) -> Vec<u8> {
        self.frame(&self.message(MessageType::Discover), None, None)
    }

    pub fn request_selecting(&self, server: Ipv4Addr, addr: Ipv4Addr) -> Vec<u8> {
        let mut m = self.message(MessageType::Request);
        m.opts_mut().insert(DhcpOption::ServerIdentifier(server));
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(addr));
        self.frame(&m, None, None)
    }

    pub fn request_init_reboot(&self, addr: Ipv4Addr) -> Vec<u8> {
        let mut m = self.message(MessageType::Request);
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(addr));
        self.frame(&m, None, None)
    }

    /// RENEWING: unicast to the server, `ciaddr` set, no server id or requested address.
    pub fn request_renew(&self, addr: Ipv4Addr, server: Ipv4Addr) -> Vec<u8> {
        let mut m = self.message(MessageType::Request);
        m.set_ciaddr(addr);
        self.frame(&m, Some(addr), Some((SERVER_MAC, server)))
    }

    /// REBINDING: the same, broadcast.
    pub fn request_rebind(&self, addr: Ipv4Addr) -> Vec<u8> {
        let mut m = self.message(MessageType::Request);
        m.set_ciaddr(addr);
        self.frame(&m, Some(addr), None)
    }

    pub fn decline(&self, addr: Ipv4Addr, server: Ipv4Addr) -> Vec<u8> {
        let mut m = self.message(MessageType::Decline);
        m.opts_mut().insert(DhcpOption::ServerIdentifier(server));
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(addr));
        self.frame(&m, None, None)
    }

    pub fn release(&self, addr: Ipv4Addr, server: Ipv4Addr) -> Vec<u8> {
        let mut m = self.message(MessageType::Release);
        m.set_ciaddr(addr);
        m.opts_mut().insert(DhcpOption::ServerIdentifier(server));
        self.frame(&m, Some(addr), Some((SERVER_MAC, server)))
    }

    pub fn inform(&self, addr: Ipv4Addr) -> Vec<u8> {
        let mut m = self.message(MessageType::Inform);
        m.set_ciaddr(addr);
        self.frame(&m, Some(addr), None)
    }
}

/// An Ethernet/IPv4/UDP frame around `payload`.
pub fn udp_frame(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac.0);
    f.extend_from_slice(&src_mac.0);
    f.extend_from_slice(&[0x08, 0x00]);
    write_udp(&mut f, src, dst, payload);
    f
}

/// An ARP packet in a frame, for conflicts and "who has the server?".
pub fn arp_frame(
    op: u16,
    sender: (MacAddr, Ipv4Addr),
    target: (MacAddr, Ipv4Addr),
    eth_dst: MacAddr,
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&eth_dst.0);
    f.extend_from_slice(&sender.0 .0);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sender.0 .0);
    f.extend_from_slice(&sender.1.octets());
    f.extend_from_slice(&target.0 .0);
    f.extend_from_slice(&target.1.octets());
    f
}

/// RFC 1071, written again here so the server's checksums are checked independently.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0)))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// A DHCP reply frame, checked at every layer.
#[derive(Debug)]
pub struct Reply {
    pub eth_dst: MacAddr,
    pub ip_dst: Ipv4Addr,
    pub msg: Message,
}

impl Reply {
    pub fn kind(&self) -> MessageType {
        self.msg.opts().msg_type().unwrap()
    }

    pub fn opt(&self, code: OptionCode) -> Option<&DhcpOption> {
        self.msg.opts().get(code)
    }
}

/// Checks everything a tcpdump/tshark reader would: Ethernet from the server, an IPv4
/// header without options and a valid checksum, UDP 67 → 68 with a non-zero valid checksum,
/// lengths that add up, a BOOTREPLY of at least 300 bytes.
pub fn parse_reply(frame: &[u8]) -> Reply {
    assert_eq!(&frame[6..12], &SERVER_MAC.0, "source MAC");
    assert_eq!(be16(&frame[12..14]), 0x0800, "IPv4 ethertype");
    let ip = &frame[14..];
    assert_eq!(ip[0], 0x45, "IPv4 without options");
    let total = usize::from(be16(&ip[2..4]));
    assert_eq!(total, ip.len(), "IPv4 total length");
    assert_eq!(checksum(&ip[..20]), 0, "IPv4 header checksum");
    assert_eq!(ip[9], 17, "UDP");
    assert_eq!(be16(&ip[6..8]) & 0x3fff, 0, "not a fragment");
    let (src, dst) = (&ip[12..16], &ip[16..20]);
    let udp = &ip[20..];
    assert_eq!((be16(&udp[0..2]), be16(&udp[2..4])), (67, 68), "ports");
    assert_eq!(usize::from(be16(&udp[4..6])), udp.len(), "UDP length");
    assert_ne!(be16(&udp[6..8]), 0, "UDP checksum present");
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(src);
    pseudo.extend_from_slice(dst);
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(udp.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(udp);
    assert_eq!(checksum(&pseudo), 0, "UDP checksum");
    let payload = &udp[8..];
    assert!(payload.len() >= 300, "BOOTP minimum size");
    let msg = Message::decode(&mut dhcproto::Decoder::new(payload)).unwrap();
    assert_eq!(msg.opcode(), Opcode::BootReply);
    Reply {
        eth_dst: MacAddr(frame[0..6].try_into().unwrap()),
        ip_dst: Ipv4Addr::new(dst[0], dst[1], dst[2], dst[3]),
        msg,
    }
}

/// The single reply in `frames`.
pub fn one_reply(frames: Vec<Vec<u8>>) -> Reply {
    assert_eq!(
        frames.len(),
        1,
        "expected exactly one frame, got {}",
        frames.len()
    );
    parse_reply(&frames[0])
}

/// An ARP frame from the server: (op, sender MAC, sender IP, target MAC, target IP, eth dst).
pub fn parse_arp(frame: &[u8]) -> (u16, MacAddr, Ipv4Addr, MacAddr, Ipv4Addr, MacAddr) {
    assert_eq!(frame.len(), 60, "padded to the Ethernet minimum");
    assert_eq!(&frame[6..12], &SERVER_MAC.0);
    assert_eq!(be16(&frame[12..14]), 0x0806);
    let a = &frame[14..42];
    assert_eq!(&a[..6], &[0, 1, 8, 0, 6, 4]);
    let mac = |b: &[u8]| MacAddr(b.try_into().unwrap());
    let ip4 = |b: &[u8]| Ipv4Addr::new(b[0], b[1], b[2], b[3]);
    (
        be16(&a[6..8]),
        mac(&a[8..14]),
        ip4(&a[14..18]),
        mac(&a[18..24]),
        ip4(&a[24..28]),
        mac(&frame[0..6]),
    )
}

/// True if `frame` is a well-formed frame the server may send: an ARP packet or a DHCP
/// reply that passes [`parse_reply`].
pub fn assert_well_formed(frame: &[u8]) {
    match be16(&frame[12..14]) {
        0x0806 => {
            parse_arp(frame);
        }
        0x0800 => {
            parse_reply(frame);
        }
        other => panic!("server sent ethertype {other:#06x}"),
    }
}

/// DISCOVER → (probe → poll) → OFFER → REQUEST → ACK. Returns the address and the time
/// the ACK was given.
pub fn dora(server: &mut DhcpServer, client: &Client, now: Timestamp) -> (Ipv4Addr, Timestamp) {
    let mut now = now;
    let mut frames = server.receive(now, &client.discover());
    if frames.len() == 1 && be16(&frames[0][12..14]) == 0x0806 {
        now = server.poll_at().expect("probe deadline");
        frames = server.poll(now);
    }
    let offer = one_reply(frames);
    assert_eq!(offer.kind(), MessageType::Offer);
    let addr = offer.msg.yiaddr();
    let server_id = match offer.opt(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(id)) => *id,
        other => panic!("offer without server id: {other:?}"),
    };
    let ack = one_reply(server.receive(now, &client.request_selecting(server_id, addr)));
    assert_eq!(ack.kind(), MessageType::Ack);
    assert_eq!(ack.msg.yiaddr(), addr);
    (addr, now)
}
