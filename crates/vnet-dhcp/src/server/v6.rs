//! The DHCPv6 side of [`DhcpServer`] (RFC 8415 §18.3): the same port, lease database
//! and timers as DHCPv4, its own messages.
//!
//! # Theory of operation
//!
//! Clients send to `ff02::1:2` (Ethernet `33:33:00:01:00:02`) from their link-local
//! address, port 546; the server answers from the link-local address of its MAC, port
//! 547, to the client's address and MAC. It never sends the Server Unicast option, so
//! every client message arrives by multicast and the server needs no neighbour
//! discovery of its own. Its DUID is the DUID-LL of its MAC.
//!
//! Bindings are per identity association: the client's DUID and an IA_NA's IAID, one
//! address each, kept as [`Lease6`] in the vnet's [`crate::LeaseDb`] next to the IPv4
//! leases, with the same states (bound, expired, released) and the same rule that an
//! ended lease stays its client's until the pool has no never-used address left.
//!
//! | message | condition | answer |
//! |---|---|---|
//! | SOLICIT | stateful, an address for each IA | ADVERTISE (preference 255), the addresses set aside for `offer_timeout`; with rapid commit (and `rapid_commit` on): REPLY, bound |
//! | SOLICIT | nothing to give, or stateless | ADVERTISE with status NoAddrsAvail only (REPLY with it in each IA for rapid commit) |
//! | REQUEST | our DUID | REPLY binding each IA (NoAddrsAvail in an IA that gets none) |
//! | RENEW, REBIND | binding found, or the client's address still free for it | REPLY extending it; other addresses it lists with lifetimes 0 |
//! | RENEW | no binding | REPLY, NoBinding in that IA |
//! | REBIND | no binding | REPLY with the listed addresses at lifetimes 0 (NoBinding if none) |
//! | CONFIRM | addresses listed | REPLY Success if all are in the /64, else NotOnLink |
//! | RELEASE | our DUID | lease released (kept for the client); REPLY Success, NoBinding per unknown IA |
//! | DECLINE | our DUID | address quarantined `quarantine_time`; REPLY Success |
//! | INFORMATION-REQUEST | no other server's DUID | REPLY with DNS servers and domains |
//! | REQUEST, RENEW, RELEASE, DECLINE | sent to our unicast address | REPLY UseMulticast |
//!
//! Every REPLY and ADVERTISE carries the server and client DUIDs, the DNS servers
//! (option 23) and domain list (option 24) when configured, and the client's FQDN
//! option echoed (RFC 4704; its first label becomes the lease's host name, which the
//! NAT device's DNS answers with AAAA).
//!
//! Messages with another server's DUID, relay messages and server messages are
//! ignored; broken ones (framing, lengths, a missing client DUID, a server DUID where
//! none belongs) are counted malformed. Memory: one lease per pool address, at most
//! [`MAX_OFFERS`] addresses set aside.

use std::net::Ipv6Addr;

use serde::Serialize;
use vnet_core::wire::ethernet::MacAddr;

use super::{malformed, DhcpServer, Dropped, Received};
use crate::config::Dhcp6Config;
use crate::lease::{ClientId, Lease6, LeaseState, Quarantine6};
use crate::time::Timestamp;
use crate::wire::datagram6::{parse_udp6, udp6_frame};
use crate::wire::dhcp6::{
    code, duid_ll, encoded, ia_na, iaaddr, parse_request, status, IaNa, MessageType6, Reply6,
    Request6, Status, ALL_SERVERS, CLIENT_PORT, SERVER_PORT,
};

/// At most this many addresses are set aside for ADVERTISEs at once, so SOLICITs with
/// made-up DUIDs cannot set aside the pool; past it, addresses are advertised without.
pub const MAX_OFFERS: usize = 256;

/// What the DHCPv6 side did, for `/metrics` and the API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Dhcp6Counters {
    pub solicits: u64,
    pub requests: u64,
    pub renews: u64,
    pub rebinds: u64,
    pub releases: u64,
    pub declines: u64,
    pub confirms: u64,
    pub information_requests: u64,
    /// ADVERTISEs sent.
    pub advertises: u64,
    /// REPLYs sent.
    pub replies: u64,
    /// IAs that got no address because the pool had none free.
    pub pool_exhausted: u64,
    /// Leases whose valid lifetime ran out.
    pub leases_expired: u64,
}

/// An address set aside for an identity association between ADVERTISE and REQUEST.
#[derive(Debug, Clone)]
pub(crate) struct Offer6 {
    duid: ClientId,
    iaid: u32,
    pub(super) expires: Timestamp,
}

/// The Ethernet group of `ff02::1:2`.
const ALL_SERVERS_MAC: MacAddr = MacAddr([0x33, 0x33, 0, 1, 0, 2]);

/// The link-local address of `mac` (modified EUI-64, RFC 4291 §2.5.1).
pub fn link_local(mac: MacAddr) -> Ipv6Addr {
    let m = mac.0;
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

fn is_link_local(a: Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

/// A message's client: its DUID, and the MACs a reservation may name it by.
struct Client {
    duid: ClientId,
    frame_mac: MacAddr,
    macs: Vec<MacAddr>,
}

/// One IA's outcome in a reply.
enum IaAnswer {
    /// The address with its lifetimes, plus addresses the client listed that are no
    /// longer its own (lifetimes 0).
    Bound(Ipv6Addr, Vec<Ipv6Addr>),
    /// Addresses at lifetimes 0 only.
    Withdrawn(Vec<Ipv6Addr>),
    Status(Status, &'static str),
}

impl DhcpServer {
    pub(super) fn receive_ipv6(
        &mut self,
        now: Timestamp,
        src_mac: MacAddr,
        dst_mac: MacAddr,
        packet: &[u8],
    ) -> Received {
        let Some(v6) = self.config.v6.clone() else {
            return Err(Dropped::Ignored);
        };
        let me = self.config.server_mac;
        if dst_mac != me && dst_mac != ALL_SERVERS_MAC {
            return Err(Dropped::Ignored);
        }
        let d = parse_udp6(packet).map_err(|e| {
            if e.is_not_for_us() {
                Dropped::Ignored
            } else {
                malformed(e)
            }
        })?;
        let unicast = d.dst_ip == link_local(me);
        if d.dst_port != SERVER_PORT || !(unicast || d.dst_ip == ALL_SERVERS) {
            return Err(Dropped::Ignored);
        }
        if d.src_port == SERVER_PORT {
            return Err(Dropped::Ignored); // a relay agent's or server's: not on a vnet
        }
        if d.src_port != CLIENT_PORT || !is_link_local(d.src_ip) {
            return Err(malformed(format_args!(
                "DHCPv6 message from [{}]:{}: clients send from a link-local address, port 546",
                d.src_ip, d.src_port
            )));
        }
        let req = parse_request(d.payload).map_err(|e| {
            if e.is_not_for_us() {
                Dropped::Ignored
            } else {
                malformed(e)
            }
        })?;
        let Some(reply) = self.answer6(now, &v6, src_mac, &req, unicast)? else {
            return Ok(Vec::new());
        };
        let kind = reply.first().copied();
        if kind == Some(2) {
            self.counters.v6.advertises += 1;
        } else {
            self.counters.v6.replies += 1;
        }
        Ok(vec![udp6_frame(
            (me, src_mac),
            (link_local(me), SERVER_PORT),
            (d.src_ip, d.src_port),
            &reply,
        )])
    }

    /// The reply to `req`, `None` when it gets none.
    fn answer6(
        &mut self,
        now: Timestamp,
        v6: &Dhcp6Config,
        frame_mac: MacAddr,
        req: &Request6,
        unicast: bool,
    ) -> Result<Option<Vec<u8>>, Dropped> {
        use MessageType6::*;
        let c = &mut self.counters.v6;
        match req.kind {
            Solicit => c.solicits += 1,
            Request => c.requests += 1,
            Renew => c.renews += 1,
            Rebind => c.rebinds += 1,
            Release => c.releases += 1,
            Decline => c.declines += 1,
            Confirm => c.confirms += 1,
            InformationRequest => c.information_requests += 1,
            Advertise | Reply => return Err(Dropped::Ignored),
        }
        let our_duid = duid_ll(self.config.server_mac);
        let needs_server_id = matches!(req.kind, Request | Renew | Release | Decline);
        match (&req.server_id, needs_server_id) {
            (Some(id), _) if *id != our_duid => return Err(Dropped::Ignored),
            (None, true) => {
                return Err(malformed(format_args!(
                    "{:?} without server DUID",
                    req.kind
                )))
            }
            (Some(_), false) if req.kind != InformationRequest => {
                return Err(malformed(format_args!("{:?} with a server DUID", req.kind)))
            }
            _ => {}
        }
        let client = match &req.client_id {
            Some(duid) => Client {
                duid: ClientId::from_option(duid),
                frame_mac,
                macs: [Some(frame_mac), req.duid_mac()]
                    .into_iter()
                    .flatten()
                    .collect(),
            },
            None if req.kind == InformationRequest => Client {
                duid: ClientId::from_option(&[]),
                frame_mac,
                macs: vec![frame_mac],
            },
            None => {
                return Err(malformed(format_args!(
                    "{:?} without client DUID",
                    req.kind
                )))
            }
        };
        // Rapid commit only where there is something to commit: a REPLY to a SOLICIT
        // without the option would be dropped by the client.
        let commit = req.rapid_commit && v6.rapid_commit && v6.stateful && !req.ia_na.is_empty();
        let kind = if req.kind == Solicit && !commit {
            Advertise
        } else {
            Reply
        };
        let mut reply = Reply6::new(kind, req.xid);
        reply.option(code::SERVER_ID, &our_duid);
        if let Some(duid) = &req.client_id {
            reply.option(code::CLIENT_ID, duid);
        }
        if unicast {
            if !needs_server_id {
                return Err(Dropped::Ignored); // RFC 8415 §16: only these may come unicast
            }
            reply.option(
                code::STATUS_CODE,
                &status(Status::UseMulticast, "use ff02::1:2"),
            );
            return Ok(Some(reply.into_bytes()));
        }
        match req.kind {
            Solicit => {
                if !v6.stateful || req.ia_na.is_empty() {
                    reply.option(
                        code::STATUS_CODE,
                        &status(Status::NoAddrsAvail, "no addresses"),
                    );
                    return Ok(Some(self.finish6(v6, req, reply)));
                }
                let answers: Vec<(u32, IaAnswer)> = req
                    .ia_na
                    .iter()
                    .map(|ia| (ia.iaid, self.solicit_ia(now, v6, &client, req, ia, commit)))
                    .collect();
                let none = answers
                    .iter()
                    .all(|(_, a)| matches!(a, IaAnswer::Status(..)));
                if none && !commit {
                    reply.option(
                        code::STATUS_CODE,
                        &status(Status::NoAddrsAvail, "no addresses"),
                    );
                    return Ok(Some(self.finish6(v6, req, reply)));
                }
                if commit {
                    reply.option(code::RAPID_COMMIT, &[]);
                } else {
                    reply.option(code::PREFERENCE, &[255]);
                }
                self.write_ias(&mut reply, &answers);
            }
            Request => {
                let answers: Vec<(u32, IaAnswer)> = req
                    .ia_na
                    .iter()
                    .map(|ia| (ia.iaid, self.request_ia(now, v6, &client, req, ia)))
                    .collect();
                self.write_ias(&mut reply, &answers);
            }
            Renew | Rebind => {
                let answers: Vec<(u32, IaAnswer)> = req
                    .ia_na
                    .iter()
                    .map(|ia| (ia.iaid, self.extend_ia(now, v6, &client, req, ia)))
                    .collect();
                self.write_ias(&mut reply, &answers);
            }
            Confirm => {
                let addrs: Vec<Ipv6Addr> =
                    req.ia_na.iter().flat_map(|ia| ia.addrs.clone()).collect();
                if addrs.is_empty() {
                    return Ok(None); // RFC 8415 §18.3.3
                }
                let code = if addrs.iter().all(|a| v6.on_link(*a)) {
                    Status::Success
                } else {
                    Status::NotOnLink
                };
                reply.option(code::STATUS_CODE, &status(code, "confirmed"));
            }
            Release | Decline => {
                let mut answers = Vec::new();
                for ia in &req.ia_na {
                    if !self.end_ia(now, &client, ia, req.kind == Decline) {
                        answers.push((ia.iaid, IaAnswer::Status(Status::NoBinding, "no binding")));
                    }
                }
                reply.option(code::STATUS_CODE, &status(Status::Success, "done"));
                self.write_ias(&mut reply, &answers);
            }
            InformationRequest => {}
            Advertise | Reply => unreachable!("refused above"),
        }
        Ok(Some(self.finish6(v6, req, reply)))
    }

    /// Appends the configuration options and the FQDN echo.
    fn finish6(&self, v6: &Dhcp6Config, req: &Request6, mut reply: Reply6) -> Vec<u8> {
        if !v6.dns.is_empty() {
            let dns: Vec<u8> = v6.dns.iter().flat_map(|a| a.octets()).collect();
            reply.option(code::DNS_SERVERS, &dns);
        }
        let mut names = Vec::new();
        for d in &v6.domains {
            for label in d.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
                names.push(label.len().min(63) as u8);
                names.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
            }
            names.push(0);
        }
        if !names.is_empty() {
            reply.option(code::DOMAIN_LIST, &names);
        }
        if let Some(fqdn) = &req.fqdn {
            // Flags: S as asked (the vnet's DNS answers for the name), O and N clear.
            let mut echo = vec![fqdn[0] & 1];
            echo.extend_from_slice(&fqdn[1..]);
            reply.option(code::CLIENT_FQDN, &echo);
        }
        reply.into_bytes()
    }

    fn write_ias(&self, reply: &mut Reply6, answers: &[(u32, IaAnswer)]) {
        let secs = u32::try_from(self.config.lease_time.as_secs()).unwrap_or(u32::MAX - 1);
        for (iaid, answer) in answers {
            let (t1, t2, inner) = match answer {
                IaAnswer::Bound(ip, stale) => {
                    let mut inner = encoded(code::IAADDR, &iaaddr(*ip, secs, secs));
                    for a in stale {
                        inner.extend(encoded(code::IAADDR, &iaaddr(*a, 0, 0)));
                    }
                    (secs / 2, (u64::from(secs) * 4 / 5) as u32, inner)
                }
                IaAnswer::Withdrawn(addrs) => {
                    let inner = addrs
                        .iter()
                        .flat_map(|a| encoded(code::IAADDR, &iaaddr(*a, 0, 0)))
                        .collect();
                    (0, 0, inner)
                }
                IaAnswer::Status(s, msg) => (0, 0, encoded(code::STATUS_CODE, &status(*s, msg))),
            };
            reply.option(code::IA_NA, &ia_na(*iaid, t1, t2, &inner));
        }
    }

    fn solicit_ia(
        &mut self,
        now: Timestamp,
        v6: &Dhcp6Config,
        client: &Client,
        req: &Request6,
        ia: &IaNa,
        commit: bool,
    ) -> IaAnswer {
        let Some(ip) = self.candidate6(now, v6, client, ia) else {
            self.counters.v6.pool_exhausted += 1;
            return IaAnswer::Status(Status::NoAddrsAvail, "no addresses");
        };
        if commit {
            self.bind6(now, v6, client, req, ia.iaid, ip);
        } else if self.offers6.len() < MAX_OFFERS || self.offers6.contains_key(&ip) {
            self.offers6
                .retain(|_, o| !(o.duid == client.duid && o.iaid == ia.iaid));
            self.offers6.insert(
                ip,
                Offer6 {
                    duid: client.duid.clone(),
                    iaid: ia.iaid,
                    expires: now + self.config.offer_timeout,
                },
            );
        }
        IaAnswer::Bound(ip, Vec::new())
    }

    fn request_ia(
        &mut self,
        now: Timestamp,
        v6: &Dhcp6Config,
        client: &Client,
        req: &Request6,
        ia: &IaNa,
    ) -> IaAnswer {
        if !v6.stateful {
            return IaAnswer::Status(Status::NoAddrsAvail, "no addresses");
        }
        let Some(ip) = self.candidate6(now, v6, client, ia) else {
            self.counters.v6.pool_exhausted += 1;
            return IaAnswer::Status(Status::NoAddrsAvail, "no addresses");
        };
        self.bind6(now, v6, client, req, ia.iaid, ip);
        let stale = ia.addrs.iter().copied().filter(|a| *a != ip).collect();
        IaAnswer::Bound(ip, stale)
    }

    /// RENEW and REBIND: the IA's binding extended, or re-learnt when the server lost
    /// it (a crash before the lease file was written) and the address is still free.
    fn extend_ia(
        &mut self,
        now: Timestamp,
        v6: &Dhcp6Config,
        client: &Client,
        req: &Request6,
        ia: &IaNa,
    ) -> IaAnswer {
        let bound = self
            .db
            .lease6_of(&client.duid, ia.iaid)
            .map(|l| l.ip)
            .filter(|ip| ia.addrs.contains(ip))
            .or_else(|| {
                ia.addrs
                    .iter()
                    .copied()
                    .find(|a| self.db.lease6_at(*a).is_none())
            });
        let ip = bound.filter(|ip| v6.stateful && self.available6(now, v6, *ip, client, ia.iaid));
        match ip {
            Some(ip) => {
                self.bind6(now, v6, client, req, ia.iaid, ip);
                let stale = ia.addrs.iter().copied().filter(|a| *a != ip).collect();
                IaAnswer::Bound(ip, stale)
            }
            None if req.kind == MessageType6::Rebind && !ia.addrs.is_empty() => {
                IaAnswer::Withdrawn(ia.addrs.clone())
            }
            None if !ia.addrs.is_empty() && self.db.lease6_of(&client.duid, ia.iaid).is_some() => {
                IaAnswer::Withdrawn(ia.addrs.clone())
            }
            None => IaAnswer::Status(Status::NoBinding, "no binding"),
        }
    }

    /// RELEASE or DECLINE of the IA's addresses; false if it holds none of them.
    fn end_ia(&mut self, now: Timestamp, client: &Client, ia: &IaNa, decline: bool) -> bool {
        let mut found = false;
        for ip in &ia.addrs {
            let Some(lease) = self.db.lease6_at_mut(*ip) else {
                continue;
            };
            if !lease.is_of(&client.duid, ia.iaid) {
                continue;
            }
            found = true;
            self.leases_changed = true;
            if decline {
                tracing::info!(ip = %ip, duid = %client.duid, "IPv6 address declined: quarantined");
                self.db.add_quarantine6(Quarantine6 {
                    ip: *ip,
                    reported_by: client.duid.clone(),
                    until: now + self.config.quarantine_time,
                });
            } else if lease.state == LeaseState::Bound {
                lease.state = LeaseState::Released;
                lease.expires = now;
            }
        }
        found
    }

    fn bind6(
        &mut self,
        now: Timestamp,
        v6: &Dhcp6Config,
        client: &Client,
        req: &Request6,
        iaid: u32,
        ip: Ipv6Addr,
    ) {
        let reserved = v6
            .reservations
            .iter()
            .find(|r| r.ip == ip && r.matches(&client.duid, &client.macs));
        let hostname = req
            .hostname()
            .or_else(|| reserved.and_then(|r| r.hostname.clone()));
        self.offers6.remove(&ip);
        self.db.insert6(Lease6 {
            ip,
            duid: client.duid.clone(),
            iaid,
            mac: client.frame_mac,
            hostname,
            state: LeaseState::Bound,
            expires: now + self.config.lease_time,
        });
        self.leases_changed = true;
    }

    /// The address IA `ia` of `client` should get: its reservation, its lease or offer,
    /// an address it asks for, a never-used one, else the one whose lease ended first.
    fn candidate6(
        &self,
        now: Timestamp,
        v6: &Dhcp6Config,
        client: &Client,
        ia: &IaNa,
    ) -> Option<Ipv6Addr> {
        let free = |ip: Ipv6Addr| self.available6(now, v6, ip, client, ia.iaid);
        if let Some(r) = v6
            .reservations
            .iter()
            .find(|r| r.matches(&client.duid, &client.macs))
        {
            return free(r.ip).then_some(r.ip);
        }
        let own = self.db.lease6_of(&client.duid, ia.iaid).map(|l| l.ip);
        let offered = self
            .offers6
            .iter()
            .find(|(_, o)| o.duid == client.duid && o.iaid == ia.iaid)
            .map(|(ip, _)| *ip);
        let known = own
            .into_iter()
            .chain(offered)
            .chain(ia.addrs.iter().copied());
        if let Some(ip) = known
            .into_iter()
            .find(|ip| v6.pool.contains(ip) && free(*ip))
        {
            return Some(ip);
        }
        // Never-used addresses: the pool walked beside the leases (both in address
        // order), O(pool) per message with no lookup per leased address.
        let (first, last) = (u128::from(*v6.pool.start()), u128::from(*v6.pool.end()));
        let mut leased = self
            .db
            .leases6()
            .map(|l| u128::from(l.ip))
            .skip_while(|a| *a < first)
            .peekable();
        let fresh = (first..=last)
            .filter(|a| {
                while leased.next_if(|l| l < a).is_some() {}
                leased.peek() != Some(a)
            })
            .map(Ipv6Addr::from)
            .find(|ip| free(*ip));
        fresh.or_else(|| {
            self.db
                .leases6()
                .filter(|l| !l.is_active(now) && v6.pool.contains(&l.ip) && free(l.ip))
                .min_by_key(|l| l.expires)
                .map(|l| l.ip)
        })
    }

    /// True if `ip` may be IA (`client`, `iaid`)'s at `now`.
    fn available6(
        &self,
        now: Timestamp,
        v6: &Dhcp6Config,
        ip: Ipv6Addr,
        client: &Client,
        iaid: u32,
    ) -> bool {
        let mut reservations = v6.reservations.iter().filter(|r| r.ip == ip);
        let reserved_to_client = match reservations.next() {
            Some(r) if !r.matches(&client.duid, &client.macs) => return false,
            Some(_) => true,
            None => false,
        };
        if !(reserved_to_client || v6.pool.contains(&ip)) || self.db.is_quarantined6(ip, now) {
            return false;
        }
        let leased_to_other = self
            .db
            .lease6_at(ip)
            .is_some_and(|l| l.is_active(now) && !l.is_of(&client.duid, iaid));
        let offered_to_other = self
            .offers6
            .get(&ip)
            .is_some_and(|o| o.expires > now && !(o.duid == client.duid && o.iaid == iaid));
        !leased_to_other && !offered_to_other
    }

    /// Ends DHCPv6 leases and offers that ran out by `now`.
    pub(super) fn poll6(&mut self, now: Timestamp) {
        self.offers6.retain(|_, o| o.expires > now);
        for lease in self.db.leases6_mut() {
            if lease.state == LeaseState::Bound && lease.expires <= now {
                lease.state = LeaseState::Expired;
                self.counters.v6.leases_expired += 1;
                self.leases_changed = true;
                tracing::info!(ip = %lease.ip, duid = %lease.duid, "IPv6 lease expired");
            }
        }
    }

    /// After a reconfiguration: offers and ended leases the new settings no longer
    /// allow are forgotten (bound ones are refused at their next renewal).
    pub(super) fn reconfigure6(&mut self) {
        let Some(v6) = self
            .config
            .v6
            .clone()
            .filter(|v6| v6.stateful && self.config.enabled)
        else {
            self.offers6.clear();
            return;
        };
        self.offers6.retain(|ip, _| v6.pool.contains(ip));
        let keep = |l: &Lease6| {
            l.state == LeaseState::Bound
                || v6.pool.contains(&l.ip)
                || v6.reservations.iter().any(|r| r.ip == l.ip)
        };
        self.leases_changed |= self.db.retain_leases6(keep);
    }
}
