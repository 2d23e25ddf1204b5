//! The DHCP server state machine: see the crate documentation for its theory of operation,
//! and [`v6`] for DHCPv6's.

pub mod v6;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use dhcproto::v4::MessageType;
use serde::Serialize;
use vnet_core::wire::ethernet::{EtherType, Frame, MacAddr};

use crate::config::{ConfigError, DhcpConfig, Subnet};
use crate::lease::{ClientId, Lease, LeaseDb, LeaseState, Quarantine, QuarantineReason};
use crate::message::{reply_frame, ClientRequest, Grant, CLIENT_PORT, SERVER_PORT};
use crate::time::Timestamp;
use crate::wire::{bootp, datagram, probe};
pub use v6::{link_local, Dhcp6Counters};
use vnet_core::wire::arp::Operation;

/// At most this many DISCOVERs wait for ARP probes at once: a flood of DISCOVERs with
/// made-up client identifiers cannot grow the server's memory or set aside the whole pool.
const MAX_PENDING_PROBES: usize = 64;
/// A DISCOVER whose candidates keep turning out to be in use gets this many probes, then
/// no answer; the client's retransmission starts over, past the quarantined addresses.
const MAX_PROBES_PER_DISCOVER: u8 = 4;

/// What the server did and refused, for `/metrics` and `vnet net show`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DhcpCounters {
    /// DHCPDISCOVERs received.
    pub discovers: u64,
    /// DHCPREQUESTs received (selecting, init-reboot, renewing, rebinding).
    pub requests: u64,
    /// DHCPDECLINEs received.
    pub declines: u64,
    /// DHCPRELEASEs received.
    pub releases: u64,
    /// DHCPINFORMs received.
    pub informs: u64,
    /// DHCPOFFERs sent.
    pub offers: u64,
    /// DHCPACKs sent (leases and INFORM answers).
    pub acks: u64,
    /// DHCPNAKs sent.
    pub naks: u64,
    /// ARP probes sent for addresses about to be offered.
    pub arp_probes: u64,
    /// Probes that another host answered: the address was quarantined.
    pub probe_conflicts: u64,
    /// ARP replies sent for the server's own address.
    pub arp_replies: u64,
    /// DISCOVERs left unanswered because no address was free.
    pub pool_exhausted: u64,
    /// DISCOVERs left unanswered because too many probes were already pending.
    pub probe_backlog_full: u64,
    /// Leases that ran out without renewal.
    pub leases_expired: u64,
    /// Frames dropped as malformed: truncated, bad checksums, IP options, fragments, bad
    /// ports, bad DHCP options, option overflow, impossible requests.
    pub malformed: u64,
    /// Well-formed frames that were not for the service: other protocols and ports, other
    /// servers' replies, relayed or plain BOOTP messages, anything while disabled.
    pub ignored: u64,
    /// DHCPv6 messages and answers (malformed and ignored ones count above).
    pub v6: Dhcp6Counters,
}

/// Why a received frame produced nothing.
enum Dropped {
    Malformed(String),
    Ignored,
}

type Received = Result<Vec<Vec<u8>>, Dropped>;

fn malformed(reason: impl ToString) -> Dropped {
    Dropped::Malformed(reason.to_string())
}

/// An address set aside for a client between OFFER and REQUEST. Not persisted: after a
/// restart the client's REQUEST is judged on its merits, or it starts over.
#[derive(Debug, Clone, Copy)]
struct Offer {
    ip: Ipv4Addr,
    mac: MacAddr,
    expires: Timestamp,
}

/// The outstanding offers, by client and by address: deciding whether an address is
/// offered to someone else looks at that address's offers only, so a DISCOVER's walk
/// through a large pool costs O(pool · log offers), not O(pool · offers).
#[derive(Debug, Default)]
struct Offers {
    by_client: BTreeMap<ClientId, Offer>,
    /// The clients with an offer (maybe run out, until the next poll) of each address.
    by_ip: BTreeMap<Ipv4Addr, BTreeSet<ClientId>>,
}

impl Offers {
    fn get(&self, client: &ClientId) -> Option<&Offer> {
        self.by_client.get(client)
    }

    /// Records `offer` for `client`, replacing the client's previous one.
    fn insert(&mut self, client: ClientId, offer: Offer) {
        self.remove(&client);
        self.by_ip
            .entry(offer.ip)
            .or_default()
            .insert(client.clone());
        self.by_client.insert(client, offer);
    }

    fn remove(&mut self, client: &ClientId) -> Option<Offer> {
        let offer = self.by_client.remove(client)?;
        if let Some(clients) = self.by_ip.get_mut(&offer.ip) {
            clients.remove(client);
            if clients.is_empty() {
                self.by_ip.remove(&offer.ip);
            }
        }
        Some(offer)
    }

    fn retain(&mut self, mut keep: impl FnMut(&Offer) -> bool) {
        let gone: Vec<ClientId> = self
            .by_client
            .iter()
            .filter(|(_, o)| !keep(o))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.remove(&id);
        }
    }

    fn clear(&mut self) {
        self.by_client.clear();
        self.by_ip.clear();
    }

    /// True if a client other than `client` holds an offer of `ip` still running at `now`.
    fn offered_to_other(&self, ip: Ipv4Addr, client: &ClientId, now: Timestamp) -> bool {
        self.by_ip.get(&ip).is_some_and(|clients| {
            clients
                .iter()
                .any(|id| id != client && self.by_client.get(id).is_some_and(|o| o.expires > now))
        })
    }
}

/// A DISCOVER waiting for the ARP probe of its candidate address to go unanswered.
#[derive(Debug, Clone)]
struct Probe {
    ip: Ipv4Addr,
    deadline: Timestamp,
    discover: ClientRequest,
    attempts: u8,
}

/// An address the server would give a client, and whether it must be probed first.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    ip: Ipv4Addr,
    needs_probe: bool,
}

/// The DHCP service of one vnet, sans I/O: Ethernet frames and the time in, frames to send
/// and lease state out. See the crate documentation for how to drive it.
#[derive(Debug)]
pub struct DhcpServer {
    config: DhcpConfig,
    subnet: Subnet,
    db: LeaseDb,
    offers: Offers,
    probes: BTreeMap<ClientId, Probe>,
    /// DHCPv6 addresses set aside for ADVERTISEs, by address.
    offers6: BTreeMap<std::net::Ipv6Addr, v6::Offer6>,
    counters: DhcpCounters,
    leases_changed: bool,
}

impl DhcpServer {
    /// A server for `config`, starting from `leases` (a fresh [`LeaseDb`] on a vnet's first
    /// start, the saved one afterwards). Leases that ran out while the daemon was down are
    /// marked expired at the first [`DhcpServer::poll`].
    pub fn new(config: DhcpConfig, leases: LeaseDb) -> Result<Self, ConfigError> {
        let subnet = config.validate()?;
        Ok(DhcpServer {
            config,
            subnet,
            db: leases,
            offers: Offers::default(),
            probes: BTreeMap::new(),
            offers6: BTreeMap::new(),
            counters: DhcpCounters::default(),
            leases_changed: false,
        })
    }

    /// Handles one frame that the switch delivered to the service's port (broadcasts and
    /// frames to `server_mac`; anything else is ignored). Returns the frames to send, in
    /// order. Never panics, whatever the bytes.
    #[must_use = "the returned frames must be sent to the vnet"]
    pub fn receive(&mut self, now: Timestamp, frame: &[u8]) -> Vec<Vec<u8>> {
        match self.receive_frame(now, frame) {
            Ok(out) => out,
            Err(Dropped::Malformed(reason)) => {
                self.counters.malformed += 1;
                tracing::debug!(%reason, "dropped malformed frame");
                Vec::new()
            }
            Err(Dropped::Ignored) => {
                self.counters.ignored += 1;
                Vec::new()
            }
        }
    }

    /// Runs the timers due at `now`: offers whose ARP probe went unanswered, leases that
    /// ran out, quarantines that ended. Call it at or after [`DhcpServer::poll_at`];
    /// calling it at other times is harmless.
    #[must_use = "the returned frames must be sent to the vnet"]
    pub fn poll(&mut self, now: Timestamp) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let due: Vec<ClientId> = self
            .probes
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let Some(probe) = self.probes.remove(&id) else {
                continue;
            };
            if self.available_to(now, probe.ip, &id, probe.discover.chaddr) {
                out.extend(self.send_offer(now, &probe.discover, probe.ip));
            } else {
                out.extend(self.offer_or_probe(now, probe.discover, probe.attempts));
            }
        }
        self.offers.retain(|o| o.expires > now);
        for lease in self.db.leases_mut() {
            if lease.state == LeaseState::Bound && lease.expires <= now {
                lease.state = LeaseState::Expired;
                self.counters.leases_expired += 1;
                self.leases_changed = true;
                tracing::info!(ip = %lease.ip, mac = %lease.mac, "lease expired");
            }
        }
        self.poll6(now);
        self.leases_changed |= self.db.drop_finished_quarantines(now);
        out
    }

    /// When [`DhcpServer::poll`] next has something to do (a probe deadline or a lease
    /// expiry); `None` while nothing is pending. May be in the past: poll right away.
    pub fn poll_at(&self) -> Option<Timestamp> {
        let probes = self.probes.values().map(|p| p.deadline);
        let leases = self
            .db
            .leases()
            .filter(|l| l.state == LeaseState::Bound)
            .map(|l| l.expires);
        let leases6 = self
            .db
            .leases6()
            .filter(|l| l.state == LeaseState::Bound)
            .map(|l| l.expires);
        let offers6 = self.offers6.values().map(|o| o.expires);
        probes.chain(leases).chain(leases6).chain(offers6).min()
    }

    /// Every lease, in address order.
    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.db.leases()
    }

    /// The lease database, to persist after [`DhcpServer::take_leases_changed`] says so.
    pub fn lease_db(&self) -> &LeaseDb {
        &self.db
    }

    /// True once after leases or quarantines changed (bound, renewed, released, declined,
    /// expired): the caller should then write [`LeaseDb::to_json`] to disk atomically.
    /// Renewals count, so a restarted daemon knows the new expiry.
    pub fn take_leases_changed(&mut self) -> bool {
        std::mem::take(&mut self.leases_changed)
    }

    /// What the server has done so far.
    pub fn counters(&self) -> &DhcpCounters {
        &self.counters
    }

    /// The configuration in force.
    pub fn config(&self) -> &DhcpConfig {
        &self.config
    }

    /// Applies a new configuration live. Pending offers and probes that the new rules no
    /// longer allow are dropped (their clients retry); clients whose leases the new rules
    /// no longer allow (pool moved, reservation changed) are refused at their next renewal
    /// and come back through DISCOVER. Ended leases that can never be handed out again
    /// are forgotten. Turning the service off drops everything pending but keeps leases.
    /// On error nothing changes.
    pub fn reconfigure(&mut self, config: DhcpConfig) -> Result<(), ConfigError> {
        self.subnet = config.validate()?;
        self.config = config;
        if !self.config.enabled {
            self.offers.clear();
            self.probes.clear();
        }
        let mut offers = std::mem::take(&mut self.offers);
        offers.retain(|o| self.fits_policy(o.ip, o.mac));
        self.offers = offers;
        let probes = std::mem::take(&mut self.probes);
        self.probes = probes
            .into_iter()
            .filter(|(_, p)| self.fits_policy(p.ip, p.discover.chaddr))
            .collect();
        let (config, subnet) = (&self.config, &self.subnet);
        self.leases_changed |= self.db.retain_leases(|l| {
            l.state == LeaseState::Bound
                || (subnet.is_host(l.ip)
                    && l.ip != config.server_ip
                    && (config.pool.contains(&l.ip) || config.reservation_of_ip(l.ip).is_some()))
        });
        self.reconfigure6();
        Ok(())
    }

    fn receive_frame(&mut self, now: Timestamp, bytes: &[u8]) -> Received {
        if !self.config.enabled {
            return Err(Dropped::Ignored);
        }
        let frame = Frame::parse(bytes).map_err(malformed)?;
        // The service sits on an untagged access port; a tag means someone else's VLAN.
        if frame.vlan_tag().is_some() {
            return Err(Dropped::Ignored);
        }
        let dst = frame.dst();
        if frame.ethertype() == EtherType::IPV6 {
            return self.receive_ipv6(now, frame.src(), dst, frame.payload());
        }
        if dst != self.config.server_mac && !dst.is_broadcast() {
            return Err(Dropped::Ignored);
        }
        match frame.ethertype() {
            EtherType::ARP => self.receive_arp(now, frame.payload()),
            EtherType::IPV4 => self.receive_ipv4(now, frame.payload()),
            _ => Err(Dropped::Ignored),
        }
    }

    fn receive_ipv4(&mut self, now: Timestamp, packet: &[u8]) -> Received {
        let datagram = datagram::parse_udp(packet).map_err(|e| {
            if e.is_not_for_us() {
                Dropped::Ignored
            } else {
                malformed(e)
            }
        })?;
        if datagram.dst_port != SERVER_PORT {
            return Err(Dropped::Ignored);
        }
        let dst = datagram.dst_ip;
        if dst != self.config.server_ip
            && dst != Ipv4Addr::BROADCAST
            && dst != self.subnet.broadcast
        {
            return Err(Dropped::Ignored);
        }
        if datagram.src_port != CLIENT_PORT {
            return Err(malformed(format_args!(
                "DHCP request from UDP port {}, clients use 68",
                datagram.src_port
            )));
        }
        let msg = bootp::decode_request(datagram.payload).map_err(|e| {
            if e.is_not_for_us() {
                Dropped::Ignored
            } else {
                malformed(e)
            }
        })?;
        let req = ClientRequest::from_message(&msg, datagram.src_ip)
            .ok_or_else(|| malformed("DHCP message without usable type or hardware address"))?;
        if !req.giaddr.is_unspecified() {
            // Relayed from another link: vnets have no DHCP relays, so it is not ours.
            return Err(Dropped::Ignored);
        }
        match req.kind {
            MessageType::Discover => Ok(self.on_discover(now, req)),
            MessageType::Request => self.on_request(now, req),
            MessageType::Decline => self.on_decline(now, req),
            MessageType::Release => self.on_release(now, req),
            MessageType::Inform => self.on_inform(req),
            other => Err(malformed(format_args!("client sent {other:?}"))),
        }
    }

    fn receive_arp(&mut self, now: Timestamp, payload: &[u8]) -> Received {
        let arp = probe::parse(payload).map_err(malformed)?;
        let me = (self.config.server_mac, self.config.server_ip);
        if arp.source_hardware_addr == me.0 {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        if arp.operation == Operation::Request && arp.target_protocol_addr == me.1 {
            self.counters.arp_replies += 1;
            out.push(probe::frame(&probe::reply(&arp, me.0, me.1)));
        }
        // The client itself answering for "its" address (say, it kept it configured across
        // our restart) is no conflict.
        let conflicts: Vec<ClientId> = self
            .probes
            .iter()
            .filter(|(_, p)| {
                probe::shows_use_of(&arp, p.ip) && arp.source_hardware_addr != p.discover.chaddr
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in conflicts {
            let Some(probe) = self.probes.remove(&id) else {
                continue;
            };
            self.counters.probe_conflicts += 1;
            tracing::info!(ip = %probe.ip, user = %arp.source_hardware_addr, "address in use: quarantined");
            self.db.add_quarantine(Quarantine {
                ip: probe.ip,
                reason: QuarantineReason::Conflict,
                reported_by: arp.source_hardware_addr,
                until: now + self.config.quarantine_time,
            });
            self.leases_changed = true;
            out.extend(self.offer_or_probe(now, probe.discover, probe.attempts));
        }
        Ok(out)
    }

    fn on_discover(&mut self, now: Timestamp, req: ClientRequest) -> Vec<Vec<u8>> {
        self.counters.discovers += 1;
        if let Some(probe) = self.probes.get_mut(&req.client_id) {
            // A retransmission while we probe: answer it (its xid) when the probe ends.
            probe.discover = req;
            return Vec::new();
        }
        self.offer_or_probe(now, req, 0)
    }

    /// Offers the best address for `discover` at once if no probe is needed, else starts
    /// probing it. `attempts` probes were already spent on this DISCOVER.
    fn offer_or_probe(
        &mut self,
        now: Timestamp,
        discover: ClientRequest,
        attempts: u8,
    ) -> Vec<Vec<u8>> {
        let Some(candidate) = self.choose_address(now, &discover) else {
            self.counters.pool_exhausted += 1;
            tracing::warn!(client = %discover.client_id, "no free address to offer");
            return Vec::new();
        };
        if !candidate.needs_probe {
            return self
                .send_offer(now, &discover, candidate.ip)
                .into_iter()
                .collect();
        }
        if attempts >= MAX_PROBES_PER_DISCOVER {
            return Vec::new();
        }
        if self.probes.len() >= MAX_PENDING_PROBES {
            self.counters.probe_backlog_full += 1;
            return Vec::new();
        }
        self.counters.arp_probes += 1;
        let frame = probe::frame(&probe::probe(self.config.server_mac, candidate.ip));
        self.probes.insert(
            discover.client_id.clone(),
            Probe {
                ip: candidate.ip,
                deadline: now + self.config.probe_timeout,
                discover,
                attempts: attempts + 1,
            },
        );
        vec![frame]
    }

    fn send_offer(&mut self, now: Timestamp, req: &ClientRequest, ip: Ipv4Addr) -> Option<Vec<u8>> {
        self.offers.insert(
            req.client_id.clone(),
            Offer {
                ip,
                mac: req.chaddr,
                expires: now + self.config.offer_timeout,
            },
        );
        self.counters.offers += 1;
        let hostname = self.reserved_hostname(req.chaddr);
        reply_frame(
            &self.config,
            &self.subnet,
            req,
            MessageType::Offer,
            Grant::Lease {
                yiaddr: ip,
                lease_time: self.config.lease_time,
                hostname: hostname.as_deref(),
            },
        )
    }

    fn on_request(&mut self, now: Timestamp, req: ClientRequest) -> Received {
        self.counters.requests += 1;
        if let Some(server_id) = req.server_id {
            if server_id != self.config.server_ip {
                // The client took another server's offer: ours is free again.
                self.offers.remove(&req.client_id);
                self.probes.remove(&req.client_id);
                return Ok(Vec::new());
            }
            // SELECTING: the address we offered (or any it may have) in option 50; some
            // clients put it in ciaddr instead.
            let ip = req
                .requested_ip
                .or((!req.ciaddr.is_unspecified()).then_some(req.ciaddr))
                .ok_or_else(|| malformed("REQUEST with server id but no requested address"))?;
            return Ok(self.ack_or_nak(now, &req, ip));
        }
        if !req.ciaddr.is_unspecified() {
            // RENEWING (unicast to us) or REBINDING (broadcast): same judgement.
            return Ok(self.ack_or_nak(now, &req, req.ciaddr));
        }
        if let Some(ip) = req.requested_ip {
            // INIT-REBOOT: the client wants the address it had. We are the only server on
            // the vnet, so we are authoritative: ACK if it may have it, NAK otherwise
            // (RFC 2131 would have a non-authoritative server stay silent without a record).
            return Ok(self.ack_or_nak(now, &req, ip));
        }
        Err(malformed(
            "REQUEST without server id, requested address or ciaddr",
        ))
    }

    fn ack_or_nak(&mut self, now: Timestamp, req: &ClientRequest, ip: Ipv4Addr) -> Vec<Vec<u8>> {
        if self.available_to(now, ip, &req.client_id, req.chaddr) {
            self.ack(now, req, ip).into_iter().collect()
        } else {
            self.nak(req, ip).into_iter().collect()
        }
    }

    fn ack(&mut self, now: Timestamp, req: &ClientRequest, ip: Ipv4Addr) -> Option<Vec<u8>> {
        self.offers.remove(&req.client_id);
        self.probes.remove(&req.client_id);
        let reserved_name = self.reserved_hostname(req.chaddr);
        let previous_name = self
            .db
            .lease_at(ip)
            .filter(|l| l.client_id == req.client_id)
            .and_then(|l| l.hostname.clone());
        let lease = Lease {
            ip,
            mac: req.chaddr,
            client_id: req.client_id.clone(),
            hostname: req
                .hostname
                .clone()
                .or(reserved_name.clone())
                .or(previous_name),
            state: LeaseState::Bound,
            expires: now + self.config.lease_time,
        };
        tracing::info!(%ip, mac = %lease.mac, hostname = ?lease.hostname, "lease bound");
        self.db.insert(lease);
        self.leases_changed = true;
        self.counters.acks += 1;
        reply_frame(
            &self.config,
            &self.subnet,
            req,
            MessageType::Ack,
            Grant::Lease {
                yiaddr: ip,
                lease_time: self.config.lease_time,
                hostname: reserved_name.as_deref(),
            },
        )
    }

    fn nak(&mut self, req: &ClientRequest, ip: Ipv4Addr) -> Option<Vec<u8>> {
        self.offers.remove(&req.client_id);
        self.probes.remove(&req.client_id);
        // The client stops using `ip`: its lease there is over.
        if self
            .db
            .lease_at(ip)
            .is_some_and(|l| l.client_id == req.client_id)
        {
            self.db.remove(ip);
            self.leases_changed = true;
        }
        self.counters.naks += 1;
        tracing::info!(%ip, mac = %req.chaddr, "refused address (NAK)");
        reply_frame(
            &self.config,
            &self.subnet,
            req,
            MessageType::Nak,
            Grant::Refusal("requested address not available"),
        )
    }

    fn on_decline(&mut self, now: Timestamp, req: ClientRequest) -> Received {
        self.counters.declines += 1;
        if req.server_id.is_some_and(|id| id != self.config.server_ip) {
            return Err(Dropped::Ignored);
        }
        let ip = req
            .requested_ip
            .ok_or_else(|| malformed("DECLINE without the declined address"))?;
        // Only the client the address was given to may take it out of the pool; anyone
        // else could otherwise empty the pool with forged DECLINEs.
        let holds = self
            .db
            .lease_at(ip)
            .is_some_and(|l| l.client_id == req.client_id)
            || self.offers.get(&req.client_id).is_some_and(|o| o.ip == ip);
        if !holds {
            return Err(Dropped::Ignored);
        }
        self.offers.remove(&req.client_id);
        tracing::info!(%ip, mac = %req.chaddr, "address declined: quarantined");
        self.db.add_quarantine(Quarantine {
            ip,
            reason: QuarantineReason::Declined,
            reported_by: req.chaddr,
            until: now + self.config.quarantine_time,
        });
        self.leases_changed = true;
        Ok(Vec::new())
    }

    fn on_release(&mut self, now: Timestamp, req: ClientRequest) -> Received {
        self.counters.releases += 1;
        if req.server_id.is_some_and(|id| id != self.config.server_ip) {
            return Err(Dropped::Ignored);
        }
        match self.db.lease_at_mut(req.ciaddr) {
            Some(lease) if lease.client_id == req.client_id && lease.state == LeaseState::Bound => {
                lease.state = LeaseState::Released;
                lease.expires = now;
                self.leases_changed = true;
                tracing::info!(ip = %req.ciaddr, mac = %req.chaddr, "lease released");
                Ok(Vec::new())
            }
            _ => Err(Dropped::Ignored),
        }
    }

    fn on_inform(&mut self, mut req: ClientRequest) -> Received {
        self.counters.informs += 1;
        if req.ciaddr.is_unspecified() {
            req.ciaddr = req.ip_src; // some clients leave ciaddr empty (RFC 2131 errata)
        }
        if !self.subnet.is_host(req.ciaddr) {
            return Err(Dropped::Ignored);
        }
        self.counters.acks += 1;
        Ok(reply_frame(
            &self.config,
            &self.subnet,
            &req,
            MessageType::Ack,
            Grant::Configuration,
        )
        .into_iter()
        .collect())
    }

    /// The address to offer `req`'s client, by RFC 2131 §4.3.1's order of preference: its
    /// reservation (and nothing else), the address already offered to it, its current or
    /// previous lease, the address it asks for if nobody ever had it, a never-used pool
    /// address, and last the address whose lease ended longest ago.
    fn choose_address(&self, now: Timestamp, req: &ClientRequest) -> Option<Candidate> {
        let client = &req.client_id;
        let covered = |ip: Ipv4Addr| {
            self.db.lease_at(ip).is_some_and(|l| &l.client_id == client)
                || self
                    .offers
                    .get(client)
                    .is_some_and(|o| o.ip == ip && o.expires > now)
        };
        let candidate = |ip: Ipv4Addr| {
            self.available_to(now, ip, client, req.chaddr)
                .then(|| Candidate {
                    ip,
                    needs_probe: !covered(ip),
                })
        };
        if let Some(reservation) = self.config.reservation_for_mac(req.chaddr) {
            return candidate(reservation.ip);
        }
        let offered = self
            .offers
            .get(client)
            .filter(|o| o.expires > now)
            .map(|o| o.ip);
        let leased = self.db.lease_of(client).map(|l| l.ip);
        let requested = req
            .requested_ip
            .filter(|ip| self.db.lease_at(*ip).is_none());
        if let Some(c) = [offered, leased, requested]
            .into_iter()
            .flatten()
            .find_map(candidate)
        {
            return Some(c);
        }
        let (first, last) = (
            u32::from(*self.config.pool.start()),
            u32::from(*self.config.pool.end()),
        );
        let fresh = (first..=last)
            .map(Ipv4Addr::from)
            .filter(|ip| self.db.lease_at(*ip).is_none())
            .find(|ip| self.available_to(now, *ip, client, req.chaddr));
        if let Some(ip) = fresh {
            return Some(Candidate {
                ip,
                needs_probe: true,
            });
        }
        self.db
            .leases()
            .filter(|l| !l.is_active(now) && self.available_to(now, l.ip, client, req.chaddr))
            .min_by_key(|l| l.expires)
            .map(|l| Candidate {
                ip: l.ip,
                needs_probe: true,
            })
    }

    /// May `ip` be leased to `client` (with hardware address `mac`) at `now`?
    fn available_to(&self, now: Timestamp, ip: Ipv4Addr, client: &ClientId, mac: MacAddr) -> bool {
        if !self.fits_policy(ip, mac) || self.db.is_quarantined(ip, now) {
            return false;
        }
        let reserved_for_client = self.config.reservation_for_mac(mac).is_some();
        // A reservation wins over a dynamic lease someone got before it was configured;
        // the ARP probe still keeps it from being offered while that host uses it.
        let held_by_other = self
            .db
            .lease_at(ip)
            .is_some_and(|l| &l.client_id != client && l.is_active(now));
        if held_by_other && !reserved_for_client {
            return false;
        }
        let offered_to_other = self.offers.offered_to_other(ip, client, now);
        let probed_for_other = self.probes.iter().any(|(id, p)| id != client && p.ip == ip);
        !offered_to_other && !probed_for_other
    }

    /// The static rules: a MAC with a reservation gets exactly its reserved address;
    /// others get pool addresses that are nobody's reservation.
    fn fits_policy(&self, ip: Ipv4Addr, mac: MacAddr) -> bool {
        if ip == self.config.server_ip || !self.subnet.is_host(ip) {
            return false;
        }
        match self.config.reservation_for_mac(mac) {
            Some(reservation) => reservation.ip == ip,
            None => self.config.pool.contains(&ip) && self.config.reservation_of_ip(ip).is_none(),
        }
    }

    fn reserved_hostname(&self, mac: MacAddr) -> Option<String> {
        self.config
            .reservation_for_mac(mac)
            .and_then(|r| r.hostname.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(n: u32) -> ClientRequest {
        let b = n.to_be_bytes();
        let chaddr = MacAddr([0x52, 0x54, b[0], b[1], b[2], b[3]]);
        ClientRequest {
            kind: MessageType::Discover,
            xid: n,
            flags: Default::default(),
            ciaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr,
            client_id: ClientId::from_mac(chaddr),
            sent_client_id: None,
            requested_ip: None,
            server_id: None,
            hostname: None,
            parameter_requests: Vec::new(),
            ip_src: Ipv4Addr::UNSPECIFIED,
        }
    }

    fn nth(first: Ipv4Addr, i: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(first) + i)
    }

    #[test]
    fn a_slash_16_pool_with_thousands_of_offers_still_gets_the_right_next_address() {
        const OFFERED: u32 = 5_000;
        let mac = MacAddr([0x02, 0x76, 0x64, 0, 0, 1]);
        let config = DhcpConfig::for_subnet(mac, Ipv4Addr::new(10, 0, 0, 0), 16).unwrap();
        let first = *config.pool.start();
        let mut server = DhcpServer::new(config, LeaseDb::new()).unwrap();
        let now = Timestamp::from_unix_millis(1_700_000_000_000);
        let running = now + std::time::Duration::from_secs(60);
        for i in 0..OFFERED {
            let c = client(i);
            let offer = Offer {
                ip: nth(first, i),
                mac: c.chaddr,
                // One offer has run out (not yet swept): its address is free again.
                expires: if i == 17 { now } else { running },
            };
            server.offers.insert(c.client_id, offer);
        }
        let choose = |server: &DhcpServer, n: u32| {
            let c = server.choose_address(now, &client(n)).unwrap();
            (c.ip, c.needs_probe)
        };
        let newcomer = OFFERED + 1;
        assert_eq!(choose(&server, newcomer), (nth(first, 17), true));
        assert_eq!(
            choose(&server, 42),
            (nth(first, 42), false),
            "its own offer"
        );

        server.offers.remove(&client(17).client_id);
        server.offers.remove(&client(3).client_id);
        assert_eq!(choose(&server, newcomer), (nth(first, 3), true));
        // A client's new offer frees its old address.
        let c3 = client(3);
        let moved = Offer {
            ip: nth(first, OFFERED + 100),
            mac: c3.chaddr,
            expires: running,
        };
        server.offers.insert(c3.client_id, moved);
        server.offers.insert(client(4).client_id, moved);
        assert_eq!(choose(&server, newcomer), (nth(first, 3), true));
        let other = client(OFFERED + 2);
        let at3 = Offer {
            ip: nth(first, 3),
            mac: other.chaddr,
            expires: running,
        };
        server.offers.insert(other.client_id, at3);
        assert_eq!(choose(&server, newcomer), (nth(first, 4), true));

        // Every address below OFFERED offered again: the first never-offered one is next.
        for i in [4, 17] {
            let c = client(i);
            let offer = Offer {
                ip: nth(first, i),
                mac: c.chaddr,
                expires: running,
            };
            server.offers.insert(c.client_id, offer);
        }
        assert_eq!(choose(&server, newcomer), (nth(first, OFFERED), true));
        // Sweeping the run-out offers keeps both indexes in step.
        server.offers.retain(|o| o.ip != nth(first, 9));
        assert_eq!(choose(&server, newcomer), (nth(first, 9), true));
        assert_eq!(server.offers.by_client.len(), server.offers.by_ip.len());
    }
}
