//! The DHCPv6 side of the server, exchange by exchange: scripted clients, frames in,
//! replies read back with an independent option walker.

use std::net::Ipv6Addr;
use std::time::Duration;

use vnet_dhcp::wire::datagram6::udp6_frame;
use vnet_dhcp::wire::dhcp6::{code, duid_ll, encoded, ia_na, iaaddr, MessageType6, Reply6};
use vnet_dhcp::{
    ClientId, Dhcp6Config, DhcpConfig, DhcpServer, LeaseDb, LeaseState, MacAddr, Reservation6,
    Timestamp,
};

const SERVER_MAC: MacAddr = MacAddr([0x02, 0x76, 0x64, 0, 0, 0x01]);
const ALL_SERVERS_MAC: MacAddr = MacAddr([0x33, 0x33, 0, 1, 0, 2]);

fn ip6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn at(secs: u64) -> Timestamp {
    Timestamp::from_unix_millis(1_700_000_000_000) + Duration::from_secs(secs)
}

fn config() -> DhcpConfig {
    let mut c = DhcpConfig::for_subnet(SERVER_MAC, "192.168.56.0".parse().unwrap(), 24).unwrap();
    let mut v6 = Dhcp6Config::for_prefix(ip6("fd00:56::"));
    v6.dns = vec![ip6("fd00:56::2")];
    v6.domains = vec!["lab.test".into()];
    c.v6 = Some(v6);
    c
}

fn server() -> DhcpServer {
    DhcpServer::new(config(), LeaseDb::new()).unwrap()
}

/// A DHCPv6 client with a DUID-LLT of its MAC and one IA_NA.
struct Client6 {
    mac: MacAddr,
    duid: Vec<u8>,
    iaid: u32,
}

impl Client6 {
    fn new(last: u8) -> Self {
        let mac = MacAddr([0x52, 0x54, 0, 0, 0, last]);
        let mut duid = vec![0, 1, 0, 1, 0x2c, 0, 0, 0];
        duid.extend_from_slice(&mac.0);
        Client6 {
            mac,
            duid,
            iaid: u32::from(last),
        }
    }

    fn link_local(&self) -> Ipv6Addr {
        let m = self.mac.0;
        Ipv6Addr::from([
            0xfe,
            0x80,
            0,
            0,
            0,
            0,
            0,
            0,
            m[0] ^ 2,
            m[1],
            m[2],
            0xff,
            0xfe,
            m[3],
            m[4],
            m[5],
        ])
    }

    /// A message of `kind` with the client's DUID, the server's where it belongs, its
    /// IA_NA listing `addrs`, and `extra` options.
    fn msg(&self, kind: MessageType6, addrs: &[Ipv6Addr], extra: &[(u16, &[u8])]) -> Vec<u8> {
        let mut m = Reply6::new(kind, [0xab, 0xcd, self.mac.0[5]]);
        m.option(code::CLIENT_ID, &self.duid);
        if matches!(
            kind,
            MessageType6::Request
                | MessageType6::Renew
                | MessageType6::Release
                | MessageType6::Decline
        ) {
            m.option(code::SERVER_ID, &duid_ll(SERVER_MAC));
        }
        if kind != MessageType6::InformationRequest {
            let inner: Vec<u8> = addrs
                .iter()
                .flat_map(|a| encoded(code::IAADDR, &iaaddr(*a, 0, 0)))
                .collect();
            m.option(code::IA_NA, &ia_na(self.iaid, 0, 0, &inner));
        }
        m.option(code::ELAPSED_TIME, &[0, 0])
            .option(code::ORO, &[0, 23, 0, 24]);
        for (c, v) in extra {
            m.option(*c, v);
        }
        m.into_bytes()
    }

    fn frame(&self, payload: &[u8]) -> Vec<u8> {
        udp6_frame(
            (self.mac, ALL_SERVERS_MAC),
            (self.link_local(), 546),
            (ip6("ff02::1:2"), 547),
            payload,
        )
    }

    fn send(
        &self,
        s: &mut DhcpServer,
        now: Timestamp,
        kind: MessageType6,
        addrs: &[Ipv6Addr],
        extra: &[(u16, &[u8])],
    ) -> Option<Answer> {
        let frames = s.receive(now, &self.frame(&self.msg(kind, addrs, extra)));
        assert!(frames.len() <= 1, "one answer at most");
        let f = frames.into_iter().next()?;
        assert_eq!(&f[..6], &self.mac.0, "to the client's MAC");
        assert_eq!(&f[6..12], &SERVER_MAC.0);
        let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&f[38..54]).unwrap());
        assert_eq!(dst, self.link_local());
        assert_eq!(&f[54..58], &[2, 0x23, 2, 0x22], "547 → 546");
        Some(Answer::read(&f[62..]))
    }
}

/// An IAADDR read back: address, preferred and valid lifetimes.
type IaAddr = (Ipv6Addr, u32, u32);

/// A reply read back: its type and options, IA_NAs opened.
#[derive(Debug)]
struct Answer {
    kind: u8,
    options: Vec<(u16, Vec<u8>)>,
}

fn walk(mut b: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let c = u16::from_be_bytes([b[0], b[1]]);
        let l = usize::from(u16::from_be_bytes([b[2], b[3]]));
        out.push((c, b[4..4 + l].to_vec()));
        b = &b[4 + l..];
    }
    assert!(b.is_empty(), "options fill the message exactly");
    out
}

impl Answer {
    fn read(b: &[u8]) -> Self {
        Answer {
            kind: b[0],
            options: walk(&b[4..]),
        }
    }

    fn get(&self, c: u16) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|(k, _)| *k == c)
            .map(|(_, v)| &v[..])
    }

    fn status(&self) -> Option<u16> {
        self.get(code::STATUS_CODE)
            .map(|v| u16::from_be_bytes([v[0], v[1]]))
    }

    /// The first IA_NA: (address, preferred, valid) of each IAADDR, its status, T1, T2.
    fn ia(&self) -> (Vec<IaAddr>, Option<u16>, u32, u32) {
        let ia = self.get(code::IA_NA).expect("an IA_NA");
        let t1 = u32::from_be_bytes(ia[4..8].try_into().unwrap());
        let t2 = u32::from_be_bytes(ia[8..12].try_into().unwrap());
        let mut addrs = Vec::new();
        let mut status = None;
        for (c, v) in walk(&ia[12..]) {
            match c {
                code::IAADDR => addrs.push((
                    Ipv6Addr::from(<[u8; 16]>::try_from(&v[..16]).unwrap()),
                    u32::from_be_bytes(v[16..20].try_into().unwrap()),
                    u32::from_be_bytes(v[20..24].try_into().unwrap()),
                )),
                code::STATUS_CODE => status = Some(u16::from_be_bytes([v[0], v[1]])),
                _ => {}
            }
        }
        (addrs, status, t1, t2)
    }

    fn addr(&self) -> Ipv6Addr {
        let (addrs, status, ..) = self.ia();
        assert_eq!(status, None, "{self:?}");
        addrs[0].0
    }
}

const SOLICIT: MessageType6 = MessageType6::Solicit;
const REQUEST: MessageType6 = MessageType6::Request;

#[test]
fn solicit_advertise_request_reply_binds_an_address_in_the_pool() {
    let mut s = server();
    let c = Client6::new(1);
    let adv = c.send(&mut s, at(0), SOLICIT, &[], &[]).unwrap();
    assert_eq!(adv.kind, 2, "ADVERTISE");
    assert_eq!(adv.get(code::PREFERENCE), Some(&[255][..]));
    assert_eq!(adv.get(code::SERVER_ID), Some(&duid_ll(SERVER_MAC)[..]));
    assert_eq!(adv.get(code::CLIENT_ID), Some(&c.duid[..]));
    assert_eq!(
        adv.get(code::DNS_SERVERS),
        Some(&ip6("fd00:56::2").octets()[..])
    );
    assert_eq!(
        adv.get(code::DOMAIN_LIST),
        Some(&b"\x03lab\x04test\x00"[..])
    );
    let offered = adv.addr();
    assert_eq!(offered, ip6("fd00:56::1000"));
    assert!(
        s.lease_db().leases6().next().is_none(),
        "an ADVERTISE binds nothing"
    );

    let reply = c.send(&mut s, at(1), REQUEST, &[offered], &[]).unwrap();
    assert_eq!(reply.kind, 7, "REPLY");
    let (addrs, status, t1, t2) = reply.ia();
    assert_eq!((addrs, status), (vec![(offered, 1800, 1800)], None));
    assert_eq!((t1, t2), (900, 1440));
    let lease = s.lease_db().lease6_at(offered).unwrap();
    assert_eq!(lease.state, LeaseState::Bound);
    assert_eq!(lease.mac, c.mac);
    assert_eq!(lease.expires, at(1801));
    assert!(s.take_leases_changed());

    // Another client gets another address.
    let d = Client6::new(2);
    assert_eq!(
        d.send(&mut s, at(2), SOLICIT, &[], &[]).unwrap().addr(),
        ip6("fd00:56::1001")
    );
}

#[test]
fn rapid_commit_binds_at_once_with_the_client_fqdn_as_host_name() {
    let mut s = server();
    let c = Client6::new(3);
    let reply = c
        .send(
            &mut s,
            at(0),
            SOLICIT,
            &[],
            &[
                (code::RAPID_COMMIT, &[]),
                (code::CLIENT_FQDN, b"\x01\x03web\x00"),
            ],
        )
        .unwrap();
    assert_eq!(reply.kind, 7, "REPLY, not ADVERTISE");
    assert_eq!(reply.get(code::RAPID_COMMIT), Some(&[][..]));
    assert_eq!(reply.get(code::CLIENT_FQDN), Some(&b"\x01\x03web\x00"[..]));
    let lease = s.lease_db().lease6_at(reply.addr()).unwrap().clone();
    assert_eq!(lease.hostname.as_deref(), Some("web"));

    // With rapid commit off, the same client is advertised to.
    let mut config = config();
    config.v6.as_mut().unwrap().rapid_commit = false;
    s.reconfigure(config).unwrap();
    let adv = c
        .send(&mut s, at(1), SOLICIT, &[], &[(code::RAPID_COMMIT, &[])])
        .unwrap();
    assert_eq!((adv.kind, adv.get(code::RAPID_COMMIT)), (2, None));
    assert_eq!(adv.addr(), lease.ip, "its own address again");
}

#[test]
fn renew_rebind_release_and_confirm() {
    let mut s = server();
    let c = Client6::new(4);
    let ip = c
        .send(&mut s, at(0), SOLICIT, &[], &[(code::RAPID_COMMIT, &[])])
        .unwrap()
        .addr();

    let renewed = c
        .send(&mut s, at(900), MessageType6::Renew, &[ip], &[])
        .unwrap();
    assert_eq!(renewed.addr(), ip);
    assert_eq!(s.lease_db().lease6_at(ip).unwrap().expires, at(2700));
    let rebound = c
        .send(&mut s, at(1500), MessageType6::Rebind, &[ip], &[])
        .unwrap();
    assert_eq!(rebound.addr(), ip);

    // CONFIRM: on link or not.
    let ok = c
        .send(&mut s, at(1501), MessageType6::Confirm, &[ip], &[])
        .unwrap();
    assert_eq!(ok.status(), Some(0));
    let moved = c
        .send(
            &mut s,
            at(1502),
            MessageType6::Confirm,
            &[ip6("2001:db8::5")],
            &[],
        )
        .unwrap();
    assert_eq!(moved.status(), Some(4), "NotOnLink");

    let released = c
        .send(&mut s, at(1600), MessageType6::Release, &[ip], &[])
        .unwrap();
    assert_eq!(released.status(), Some(0));
    assert_eq!(
        s.lease_db().lease6_at(ip).unwrap().state,
        LeaseState::Released
    );
    // A RELEASE of what it no longer holds: NoBinding in the IA.
    let again = c
        .send(
            &mut s,
            at(1601),
            MessageType6::Release,
            &[ip6("fd00:56::1fff")],
            &[],
        )
        .unwrap();
    assert_eq!(again.ia().1, Some(3));
    // RENEW of an address it never had and is another's: NoBinding.
    let d = Client6::new(5);
    let other = d
        .send(&mut s, at(1700), SOLICIT, &[], &[(code::RAPID_COMMIT, &[])])
        .unwrap()
        .addr();
    let e = Client6::new(6);
    let renew = e
        .send(&mut s, at(1701), MessageType6::Renew, &[other], &[])
        .unwrap();
    assert_eq!(renew.ia().1, Some(3), "NoBinding");
    let rebind = e
        .send(&mut s, at(1702), MessageType6::Rebind, &[other], &[])
        .unwrap();
    assert_eq!(rebind.ia().0, vec![(other, 0, 0)], "lifetimes 0");
    // The released address comes back to its client.
    let back = c.send(&mut s, at(1800), SOLICIT, &[], &[]).unwrap();
    assert_eq!(back.addr(), ip);
}

#[test]
fn a_lost_binding_is_relearnt_on_renew_when_the_address_is_free() {
    let mut s = server();
    let c = Client6::new(7);
    let renew = c
        .send(
            &mut s,
            at(0),
            MessageType6::Renew,
            &[ip6("fd00:56::1234")],
            &[],
        )
        .unwrap();
    assert_eq!(renew.addr(), ip6("fd00:56::1234"));
    assert!(s
        .lease_db()
        .lease6_of(&ClientId::from_option(&c.duid), c.iaid)
        .is_some());
}

#[test]
fn decline_quarantines_and_leases_expire() {
    let mut s = server();
    let c = Client6::new(8);
    let ip = c
        .send(&mut s, at(0), SOLICIT, &[], &[(code::RAPID_COMMIT, &[])])
        .unwrap()
        .addr();
    let declined = c
        .send(&mut s, at(1), MessageType6::Decline, &[ip], &[])
        .unwrap();
    assert_eq!(declined.status(), Some(0));
    assert!(s.lease_db().is_quarantined6(ip, at(2)));
    let next = c
        .send(&mut s, at(2), SOLICIT, &[], &[(code::RAPID_COMMIT, &[])])
        .unwrap()
        .addr();
    assert_ne!(next, ip, "never the declined address");

    assert_eq!(s.poll_at(), Some(at(1802)));
    let _ = s.poll(at(1802));
    assert_eq!(
        s.lease_db().lease6_at(next).unwrap().state,
        LeaseState::Expired
    );
    assert_eq!(s.counters().v6.leases_expired, 1);
}

#[test]
fn reservations_by_mac_and_by_duid() {
    let mut config = config();
    let by_mac = Client6::new(9);
    let by_duid = Client6::new(10);
    config.v6.as_mut().unwrap().reservations = vec![
        Reservation6 {
            mac: by_mac.mac,
            duid: None,
            ip: ip6("fd00:56::9"),
            hostname: Some("nine".into()),
        },
        Reservation6 {
            mac: MacAddr([2, 0, 0, 0, 0, 0]),
            duid: Some(ClientId::from_option(&by_duid.duid)),
            ip: ip6("fd00:56::10"),
            hostname: None,
        },
    ];
    let mut s = DhcpServer::new(config, LeaseDb::new()).unwrap();
    let r = by_mac
        .send(&mut s, at(0), SOLICIT, &[], &[(code::RAPID_COMMIT, &[])])
        .unwrap();
    assert_eq!(r.addr(), ip6("fd00:56::9"));
    assert_eq!(
        s.lease_db()
            .lease6_at(ip6("fd00:56::9"))
            .unwrap()
            .hostname
            .as_deref(),
        Some("nine")
    );
    let r = by_duid.send(&mut s, at(0), SOLICIT, &[], &[]).unwrap();
    assert_eq!(r.addr(), ip6("fd00:56::10"));
    // Nobody else gets a reserved address, even asking for it.
    let other = Client6::new(11);
    let r = other
        .send(&mut s, at(0), REQUEST, &[ip6("fd00:56::9")], &[])
        .unwrap();
    let (addrs, ..) = r.ia();
    assert_eq!(addrs[0].0, ip6("fd00:56::1000"));
    assert_eq!(
        addrs[1],
        (ip6("fd00:56::9"), 0, 0),
        "the asked-for one withdrawn"
    );
}

#[test]
fn information_request_gets_dns_and_domains_only() {
    let mut config = config();
    config.v6.as_mut().unwrap().stateful = false;
    let mut s = DhcpServer::new(config, LeaseDb::new()).unwrap();
    let c = Client6::new(12);
    let r = c
        .send(&mut s, at(0), MessageType6::InformationRequest, &[], &[])
        .unwrap();
    assert_eq!(r.kind, 7);
    assert_eq!(
        r.get(code::DNS_SERVERS),
        Some(&ip6("fd00:56::2").octets()[..])
    );
    assert_eq!(r.get(code::IA_NA), None);
    // Stateless: a SOLICIT hears NoAddrsAvail.
    let adv = c.send(&mut s, at(0), SOLICIT, &[], &[]).unwrap();
    assert_eq!(
        (adv.kind, adv.status(), adv.get(code::IA_NA)),
        (2, Some(2), None)
    );
    assert_eq!(s.counters().v6.information_requests, 1);
}

#[test]
fn an_exhausted_pool_says_no_addrs_avail() {
    let mut config = config();
    config.v6.as_mut().unwrap().pool = ip6("fd00:56::1000")..=ip6("fd00:56::1000");
    let mut s = DhcpServer::new(config, LeaseDb::new()).unwrap();
    let rc: &[(u16, &[u8])] = &[(code::RAPID_COMMIT, &[])];
    Client6::new(13)
        .send(&mut s, at(0), SOLICIT, &[], rc)
        .unwrap()
        .addr();
    let c = Client6::new(14);
    let adv = c.send(&mut s, at(0), SOLICIT, &[], &[]).unwrap();
    assert_eq!((adv.status(), adv.get(code::IA_NA)), (Some(2), None));
    let reply = c.send(&mut s, at(0), SOLICIT, &[], rc).unwrap();
    assert_eq!(reply.ia().1, Some(2), "NoAddrsAvail in the IA");
    assert_eq!(s.counters().v6.pool_exhausted, 2);
}

#[test]
fn wrong_server_unicast_and_broken_messages() {
    let mut s = server();
    let c = Client6::new(15);
    // Another server's DUID: not ours, ignored.
    let mut m = Reply6::new(REQUEST, [1, 2, 3]);
    m.option(code::CLIENT_ID, &c.duid)
        .option(code::SERVER_ID, &[0, 3, 0, 1, 9, 9, 9, 9, 9, 9]);
    assert!(s.receive(at(0), &c.frame(&m.into_bytes())).is_empty());
    assert_eq!(s.counters().ignored, 1);
    // A REQUEST to the server's link-local address: UseMulticast.
    let f = udp6_frame(
        (c.mac, SERVER_MAC),
        (c.link_local(), 546),
        (vnet_dhcp::server::link_local(SERVER_MAC), 547),
        &c.msg(REQUEST, &[], &[]),
    );
    let out = s.receive(at(0), &f);
    assert_eq!(Answer::read(&out[0][62..]).status(), Some(5));
    // Short, bad lengths, no client DUID, relay messages: dropped, counted.
    let malformed = s.counters().malformed;
    for bad in [
        vec![1, 2],
        vec![1, 0, 0, 0, 0, 1, 0, 9, 1],
        Reply6::new(SOLICIT, [0; 3]).into_bytes(),
    ] {
        assert!(s.receive(at(0), &c.frame(&bad)).is_empty());
    }
    assert_eq!(s.counters().malformed, malformed + 3);
    let ignored = s.counters().ignored;
    assert!(s
        .receive(at(0), &c.frame(&[12, 0, 0, 0, 0, 9, 0, 0]))
        .is_empty());
    assert_eq!(s.counters().ignored, ignored + 1);
    // ...and the server still serves.
    assert!(c.send(&mut s, at(1), SOLICIT, &[], &[]).is_some());
}

#[test]
fn leases_survive_a_restart_through_the_lease_file() {
    let mut s = server();
    let c = Client6::new(16);
    let ip = c
        .send(&mut s, at(0), SOLICIT, &[], &[(code::RAPID_COMMIT, &[])])
        .unwrap()
        .addr();
    let saved = s.lease_db().to_json();
    let mut s = DhcpServer::new(config(), LeaseDb::from_json(&saved).unwrap()).unwrap();
    assert_eq!(
        c.send(&mut s, at(10), MessageType6::Renew, &[ip], &[])
            .unwrap()
            .addr(),
        ip
    );
    assert_eq!(
        c.send(&mut s, at(11), SOLICIT, &[], &[]).unwrap().addr(),
        ip
    );
}

#[test]
fn without_v6_settings_ipv6_is_ignored() {
    let mut config = config();
    config.v6 = None;
    let mut s = DhcpServer::new(config, LeaseDb::new()).unwrap();
    assert!(Client6::new(17)
        .send(&mut s, at(0), SOLICIT, &[], &[])
        .is_none());
    assert_eq!(s.counters().ignored, 1);
}

mod hostile {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Any payload to port 547, and any options after a valid header, in a
        /// well-formed frame: no panic, at most one answer, a lease file that loads.
        #[test]
        fn arbitrary_messages_never_panic(
            kind in 0u8..16,
            options in prop::collection::vec(any::<u8>(), 0..400),
            raw in prop::collection::vec(any::<u8>(), 0..100),
        ) {
            let mut s = server();
            let c = Client6::new(1);
            let mut msg = vec![kind, 1, 2, 3];
            msg.extend_from_slice(&options);
            for payload in [msg, raw] {
                let out = s.receive(at(0), &c.frame(&payload));
                prop_assert!(out.len() <= 1);
            }
            let _ = s.poll(at(10_000));
            prop_assert!(LeaseDb::from_json(&s.lease_db().to_json()).is_ok());
        }

        /// Options well framed but with arbitrary codes and contents, after a client
        /// DUID: the parser is total and the server never panics.
        #[test]
        fn arbitrary_option_values_never_panic(
            kind in 1u8..12,
            opts in prop::collection::vec((0u16..45, prop::collection::vec(any::<u8>(), 0..40)), 0..8),
        ) {
            let mut m = Reply6::new(MessageType6::Solicit, [1, 2, 3]);
            m.option(code::CLIENT_ID, &Client6::new(1).duid);
            for (c, v) in &opts {
                m.option(*c, v);
            }
            let mut bytes = m.into_bytes();
            bytes[0] = kind;
            let mut s = server();
            let _ = s.receive(at(0), &Client6::new(1).frame(&bytes));
        }
    }
}
