//! The DNS forwarder: queries to the gateway's port 53 are relayed to an upstream
//! resolver, answers are restored and sent back. Raw messages are relayed; nothing is
//! parsed beyond the 12-byte header.
//!
//! Each attempt at a query (the first, and each retry on the next upstream) leaves
//! under a fresh, unpredictable ID (see the `secrets` module) from its own UDP socket:
//! [`DnsAction::Query`] asks the shell to open one for the attempt's [`FlowId`], bound to
//! port 0 so the kernel picks a random source port, and connected to the upstream, so
//! the kernel drops datagrams from anyone else. An off-path attacker forging an answer
//! must then guess both the 16-bit ID and the port while the query is out. The socket
//! is closed ([`DnsAction::Close`]) as soon as the attempt is answered, times out or
//! fails; at most [`MAX_PENDING`] are open at once.
//!
//! The forwarder knows no address family: guests ask over IPv4 or IPv6 (the gateway's
//! `.2` or `::2`), upstreams are IPv4 or IPv6 sockets (from `resolv.conf` or the
//! config), in any mix. Upstreams are tried in the order given; one the host cannot
//! reach (no IPv6 route, say) fails at once ([`DnsForwarder::failed`]) and the query
//! moves on to the next without waiting out its timeout.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use vnet_core::wire::ethernet::MacAddr;

use crate::flow_id::FlowIds;
use crate::secrets::{IdStream, NatSecrets};
use crate::FlowId;

/// Most queries in flight at once (each with a socket of its own); more are dropped
/// (the guest retries).
pub const MAX_PENDING: usize = 1024;
const HEADER_LEN: usize = 12;

/// A guest's query waiting for an upstream's answer.
#[derive(Debug)]
struct Pending {
    guest_mac: MacAddr,
    guest: SocketAddr,
    guest_id: u16,
    /// The query as sent upstream (under this attempt's ID), for retries.
    query: Vec<u8>,
    upstream: usize,
    tries: usize,
    deadline: Instant,
}

impl Pending {
    fn id(&self) -> [u8; 2] {
        [self.query[0], self.query[1]]
    }
}

/// What the forwarder wants done.
#[derive(Debug, PartialEq, Eq)]
pub enum DnsAction {
    /// Open a UDP socket for `flow` on a fresh port, connect it to upstream `to`, and
    /// send `query` on it; what arrives on it goes to [`DnsForwarder::answer`].
    Query {
        flow: FlowId,
        to: SocketAddr,
        query: Vec<u8>,
    },
    /// The attempt on `flow` is over: close its socket.
    Close { flow: FlowId },
    /// Send `answer` to the guest at `guest` (`guest_mac`) from the gateway's port 53
    /// (of `guest`'s family).
    Answer {
        guest_mac: MacAddr,
        guest: SocketAddr,
        answer: Vec<u8>,
    },
}

#[derive(Debug)]
pub struct DnsForwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
    /// By the socket of the query's current attempt.
    pending: HashMap<FlowId, Pending>,
    ids: IdStream,
}

impl DnsForwarder {
    /// IDs come from `secrets`' ID key.
    pub fn new(upstreams: Vec<SocketAddr>, timeout: Duration, secrets: &NatSecrets) -> Self {
        DnsForwarder {
            upstreams,
            timeout,
            pending: HashMap::new(),
            ids: IdStream::new(secrets),
        }
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Whether `flow` is the socket of a query in flight.
    pub fn owns(&self, flow: FlowId) -> bool {
        self.pending.contains_key(&flow)
    }

    /// A query from a guest, to be sent on a socket named by a new id from `flows`.
    /// `None` when it is not a query ([`is_query`]), nothing is configured or too many
    /// are in flight.
    pub(crate) fn query(
        &mut self,
        now: Instant,
        flows: &mut FlowIds,
        guest_mac: MacAddr,
        guest: SocketAddr,
        message: &[u8],
    ) -> Option<DnsAction> {
        if !is_query(message) || self.upstreams.is_empty() {
            return None;
        }
        if self.pending.len() >= MAX_PENDING {
            return None;
        }
        let mut query = message.to_vec();
        query[..2].copy_from_slice(&self.ids.next_u16().to_be_bytes());
        let flow = flows.next();
        let to = self.upstreams[0];
        self.pending.insert(
            flow,
            Pending {
                guest_mac,
                guest,
                guest_id: u16::from_be_bytes([message[0], message[1]]),
                query: query.clone(),
                upstream: 0,
                tries: 1,
                deadline: now + self.timeout,
            },
        );
        Some(DnsAction::Query { flow, to, query })
    }

    /// A datagram on `flow`'s socket (which only its upstream can reach): if it answers
    /// the query under its ID, the socket is closed and the answer goes to the guest.
    /// Returns the upstream that answered, if it did.
    pub fn answer(
        &mut self,
        flow: FlowId,
        message: &[u8],
        out: &mut Vec<DnsAction>,
    ) -> Option<SocketAddr> {
        let p = self.pending.get(&flow)?;
        if message.len() < HEADER_LEN || message[2] & 0x80 == 0 || message[..2] != p.id() {
            return None;
        }
        let p = self.pending.remove(&flow).expect("present");
        let mut answer = message.to_vec();
        answer[..2].copy_from_slice(&p.guest_id.to_be_bytes());
        out.push(DnsAction::Close { flow });
        out.push(DnsAction::Answer {
            guest_mac: p.guest_mac,
            guest: p.guest,
            answer,
        });
        Some(self.upstreams[p.upstream])
    }

    /// `flow`'s socket could not be opened or reported an error: the query moves on at
    /// the next `DnsForwarder::poll`, as if it had timed out.
    pub fn failed(&mut self, flow: FlowId) {
        if let Some(p) = self.pending.get_mut(&flow) {
            p.deadline = p.deadline.checked_sub(self.timeout).unwrap_or(p.deadline);
        }
    }

    /// Retries timed-out queries on the next upstream (a new socket, a new ID); when
    /// every upstream has had its turn the guest gets SERVFAIL. Returns how many
    /// queries gave up.
    pub(crate) fn poll(
        &mut self,
        now: Instant,
        flows: &mut FlowIds,
        out: &mut Vec<DnsAction>,
    ) -> usize {
        let due: Vec<FlowId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(&flow, _)| flow)
            .collect();
        let mut failed = 0;
        for flow in due {
            let Some(mut p) = self.pending.remove(&flow) else {
                continue;
            };
            out.push(DnsAction::Close { flow });
            if p.tries < self.upstreams.len() {
                p.tries += 1;
                p.upstream = (p.upstream + 1) % self.upstreams.len();
                p.deadline = now + self.timeout;
                p.query[..2].copy_from_slice(&self.ids.next_u16().to_be_bytes());
                let next = flows.next();
                out.push(DnsAction::Query {
                    flow: next,
                    to: self.upstreams[p.upstream],
                    query: p.query.clone(),
                });
                self.pending.insert(next, p);
                continue;
            }
            failed += 1;
            let mut answer = p.query;
            answer[..2].copy_from_slice(&p.guest_id.to_be_bytes());
            answer[2] |= 0x80; // QR: a response
            answer[3] = (answer[3] & 0xf0) | 2; // RCODE: SERVFAIL
            out.push(DnsAction::Answer {
                guest_mac: p.guest_mac,
                guest: p.guest,
                answer,
            });
        }
        failed
    }

    pub fn poll_at(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }
}

/// Whether `message` can be a DNS query: a whole header, QR clear. Anything else to
/// the gateway's port 53 is dropped.
pub fn is_query(message: &[u8]) -> bool {
    message.len() >= HEADER_LEN && message[2] & 0x80 == 0
}

/// `answer` cut to its header and question with TC set: "ask again over TCP".
pub fn truncate(answer: &[u8]) -> Vec<u8> {
    let Some(header) = answer.get(..HEADER_LEN) else {
        return answer.to_vec();
    };
    // The first question: labels up to the root, then type and class.
    let mut at = HEADER_LEN;
    let question_end = loop {
        match answer.get(at) {
            Some(0) => break Some(at + 5),
            Some(&len) if len < 64 => at += 1 + usize::from(len),
            _ => break None,
        }
    }
    .filter(|&end| end <= answer.len() && u16::from_be_bytes([header[4], header[5]]) >= 1);
    let mut t = header.to_vec();
    t[2] |= 0x02; // TC
    t[4..12].fill(0);
    if let Some(end) = question_end {
        t[5] = 1;
        t.extend_from_slice(&answer[HEADER_LEN..end]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUEST_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);

    fn guest() -> SocketAddr {
        "10.0.0.5:40000".parse().unwrap()
    }

    fn up(n: u8) -> SocketAddr {
        SocketAddr::new([127, 0, 0, n].into(), 53)
    }

    fn up6(n: u16) -> SocketAddr {
        SocketAddr::new([0xfd00, 0, 0, 0, 0, 0, 0, n].into(), 53)
    }

    fn query_bytes(id: u16) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        q.extend_from_slice(b"\x04test\x00\x00\x01\x00\x01");
        q
    }

    fn forwarder(upstreams: Vec<SocketAddr>) -> (DnsForwarder, FlowIds) {
        let secrets = NatSecrets::from_bytes([7; 32]);
        let f = DnsForwarder::new(upstreams, Duration::from_secs(2), &secrets);
        (f, FlowIds::default())
    }

    fn answer_to(query: &[u8]) -> Vec<u8> {
        let mut a = query.to_vec();
        a[2] |= 0x80;
        a
    }

    #[test]
    fn ids_are_remapped_and_restored_and_the_socket_closed() {
        let t = Instant::now();
        let (mut f, mut flows) = forwarder(vec![up(1)]);
        let Some(DnsAction::Query { flow, to, query }) =
            f.query(t, &mut flows, GUEST_MAC, guest(), &query_bytes(7))
        else {
            panic!("no query");
        };
        assert_eq!(to, up(1));
        assert!(f.owns(flow));
        let answer = answer_to(&query);
        let mut out = Vec::new();
        let mut wrong_id = answer.clone();
        wrong_id[1] ^= 1;
        assert!(f.answer(flow, &wrong_id, &mut out).is_none(), "another ID");
        assert!(
            f.answer(FlowId(flow.0 + 1), &answer, &mut out).is_none(),
            "another socket"
        );
        assert!(out.is_empty());
        assert!(f.answer(flow, &answer, &mut out).is_some());
        let [DnsAction::Close { flow: closed }, DnsAction::Answer {
            guest: g,
            answer: a,
            ..
        }] = &out[..]
        else {
            panic!("{out:?}");
        };
        assert_eq!(
            (*closed, *g, &a[..2], &a[2..]),
            (flow, guest(), &[0u8, 7][..], &answer[2..])
        );
        assert!(f.answer(flow, &answer, &mut out).is_none(), "answered once");
        assert!(!f.owns(flow));
    }

    #[test]
    fn every_query_gets_its_own_socket_and_an_unpredictable_id() {
        let t = Instant::now();
        let (mut f, mut flows) = forwarder(vec![up(1)]);
        let sent: Vec<(FlowId, Vec<u8>)> = (0..3)
            .map(
                |_| match f.query(t, &mut flows, GUEST_MAC, guest(), &query_bytes(7)) {
                    Some(DnsAction::Query { flow, query, .. }) => (flow, query),
                    other => panic!("{other:?}"),
                },
            )
            .collect();
        assert!(sent[0].0 != sent[1].0 && sent[1].0 != sent[2].0);
        assert!(sent[0].1[..2] != sent[1].1[..2] || sent[1].1[..2] != sent[2].1[..2]);
        assert!(
            sent.iter().all(|(_, q)| q[..2] != [0, 7]),
            "the guest's ID stays inside"
        );
        assert_eq!(f.in_flight(), 3);
    }

    #[test]
    fn timeouts_try_the_next_upstream_on_a_new_socket_then_servfail() {
        let t = Instant::now();
        let (mut f, mut flows) = forwarder(vec![up(1), up(2)]);
        let Some(DnsAction::Query { flow, query, .. }) =
            f.query(t, &mut flows, GUEST_MAC, guest(), &query_bytes(9))
        else {
            panic!("no query");
        };
        let mut out = Vec::new();
        assert_eq!(f.poll(t + Duration::from_secs(1), &mut flows, &mut out), 0);
        assert!(out.is_empty());
        f.poll(f.poll_at().unwrap(), &mut flows, &mut out);
        let [DnsAction::Close { flow: closed }, DnsAction::Query {
            flow: retry,
            to,
            query: again,
        }] = &out[..]
        else {
            panic!("{out:?}");
        };
        assert_eq!((*closed, *to), (flow, up(2)));
        assert_ne!(*retry, flow);
        assert_eq!(&again[2..], &query[2..]);
        let retry = *retry;
        out.clear();
        assert!(
            f.answer(flow, &answer_to(&query), &mut out).is_none(),
            "the old socket is gone"
        );
        assert_eq!(f.poll(f.poll_at().unwrap(), &mut flows, &mut out), 1);
        let [DnsAction::Close { flow: closed }, DnsAction::Answer { answer, .. }] = &out[..] else {
            panic!("{out:?}");
        };
        assert_eq!(*closed, retry);
        assert_eq!(
            (&answer[..2], answer[2] & 0x80, answer[3] & 0x0f),
            (&[0u8, 9][..], 0x80, 2)
        );
        assert_eq!(f.in_flight(), 0);
    }

    #[test]
    fn a_failed_socket_moves_the_query_on_at_once() {
        let t = Instant::now();
        let (mut f, mut flows) = forwarder(vec![up(1), up(2)]);
        let Some(DnsAction::Query { flow, .. }) =
            f.query(t, &mut flows, GUEST_MAC, guest(), &query_bytes(9))
        else {
            panic!("no query");
        };
        f.failed(flow);
        let mut out = Vec::new();
        f.poll(t, &mut flows, &mut out);
        assert!(
            matches!(out[..], [DnsAction::Close { .. }, DnsAction::Query { to, .. }] if to == up(2))
        );
    }

    #[test]
    fn truncation_keeps_the_header_and_question_and_sets_tc() {
        let mut a = query_bytes(5);
        a[2] |= 0x80;
        a[7] = 3; // three answers
        a.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
        let t = truncate(&a);
        assert_eq!(t.len(), 12 + 10);
        assert_eq!((t[2] & 0x02, t[5], t[7]), (0x02, 1, 0));
        assert_eq!(&t[12..], &a[12..22]);
        assert_eq!(truncate(&[1, 2, 3]), vec![1, 2, 3]);
        let mut broken = a[..14].to_vec();
        broken[12] = 200;
        assert_eq!(truncate(&broken).len(), 12);
    }

    #[test]
    fn responses_and_runts_from_guests_are_not_forwarded() {
        let (mut f, mut flows) = forwarder(vec![up(1)]);
        let r = answer_to(&query_bytes(1));
        let t = Instant::now();
        assert_eq!(f.query(t, &mut flows, GUEST_MAC, guest(), &r), None);
        assert_eq!(f.query(t, &mut flows, GUEST_MAC, guest(), &[0; 5]), None);
    }

    #[test]
    fn a_guest_asking_over_ipv6_is_answered_over_ipv6_from_an_ipv6_upstream() {
        let t = Instant::now();
        let guest6: SocketAddr = "[fd00::1:5]:40000".parse().unwrap();
        let (mut f, mut flows) = forwarder(vec![up6(0x53), up(1)]);
        let Some(DnsAction::Query { flow, to, query }) =
            f.query(t, &mut flows, GUEST_MAC, guest6, &query_bytes(3))
        else {
            panic!("no query");
        };
        assert_eq!(to, up6(0x53), "the first upstream, whatever its family");
        let mut out = Vec::new();
        assert_eq!(
            f.answer(flow, &answer_to(&query), &mut out),
            Some(up6(0x53))
        );
        let [DnsAction::Close { .. }, DnsAction::Answer { guest, answer, .. }] = &out[..] else {
            panic!("{out:?}");
        };
        assert_eq!((*guest, &answer[..2]), (guest6, &[0u8, 3][..]));
    }

    #[test]
    fn an_unreachable_ipv6_upstream_hands_over_to_the_ipv4_one_at_once() {
        let t = Instant::now();
        let (mut f, mut flows) = forwarder(vec![up6(0x53), up(1)]);
        let Some(DnsAction::Query { flow, to, .. }) =
            f.query(t, &mut flows, GUEST_MAC, guest(), &query_bytes(4))
        else {
            panic!("no query");
        };
        assert_eq!(to, up6(0x53));
        // The host has no IPv6 route: the socket cannot connect.
        f.failed(flow);
        let mut out = Vec::new();
        f.poll(t, &mut flows, &mut out);
        assert!(
            matches!(&out[..], [DnsAction::Close { flow: c }, DnsAction::Query { to, .. }] if *c == flow && *to == up(1)),
            "{out:?}"
        );
        // Each new query starts at the first upstream again (no sticky choice).
        let Some(DnsAction::Query { to, .. }) =
            f.query(t, &mut flows, GUEST_MAC, guest(), &query_bytes(5))
        else {
            panic!("no query");
        };
        assert_eq!(to, up6(0x53));
    }
}
