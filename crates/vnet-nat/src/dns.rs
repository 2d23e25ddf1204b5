//! The DNS forwarder: queries to the gateway's port 53 are relayed to an upstream
//! resolver under a fresh ID, answers are matched by (upstream, ID), restored and sent
//! back. Raw messages are relayed; nothing is parsed beyond the 12-byte header.

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use vnet_core::wire::ethernet::MacAddr;

/// Most queries in flight at once; more are dropped (the guest retries).
pub const MAX_PENDING: usize = 1024;
const HEADER_LEN: usize = 12;

/// A guest's query waiting for an upstream's answer.
#[derive(Debug)]
struct Pending {
    guest_mac: MacAddr,
    guest: SocketAddrV4,
    guest_id: u16,
    /// The query as sent upstream (ID already remapped), for retries on the next server.
    query: Vec<u8>,
    upstream: usize,
    tries: usize,
    deadline: Instant,
}

/// What the forwarder wants done.
#[derive(Debug, PartialEq, Eq)]
pub enum DnsAction {
    /// Send `query` to upstream `to` (from the NAT's DNS socket).
    Query { to: SocketAddrV4, query: Vec<u8> },
    /// Send `answer` to the guest at `guest` (`guest_mac`) from the gateway's port 53.
    Answer {
        guest_mac: MacAddr,
        guest: SocketAddrV4,
        answer: Vec<u8>,
    },
}

#[derive(Debug)]
pub struct DnsForwarder {
    upstreams: Vec<SocketAddrV4>,
    timeout: Duration,
    pending: HashMap<u16, Pending>,
    rng: u64,
}

impl DnsForwarder {
    /// `seed` makes remapped IDs unpredictable to the outside; give it real entropy.
    pub fn new(upstreams: Vec<SocketAddrV4>, timeout: Duration, seed: u64) -> Self {
        DnsForwarder {
            upstreams,
            timeout,
            pending: HashMap::new(),
            rng: seed | 1,
        }
    }

    pub fn upstreams(&self) -> &[SocketAddrV4] {
        &self.upstreams
    }

    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    fn next_id(&mut self) -> u16 {
        loop {
            // xorshift64*: cheap, and the seed is secret.
            self.rng ^= self.rng >> 12;
            self.rng ^= self.rng << 25;
            self.rng ^= self.rng >> 27;
            let id = (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 48) as u16;
            if !self.pending.contains_key(&id) {
                return id;
            }
        }
    }

    /// A query from a guest. `None` when it is not a query, nothing is configured or too
    /// many are in flight.
    pub fn query(
        &mut self,
        now: Instant,
        guest_mac: MacAddr,
        guest: SocketAddrV4,
        message: &[u8],
    ) -> Option<DnsAction> {
        if message.len() < HEADER_LEN || message[2] & 0x80 != 0 || self.upstreams.is_empty() {
            return None;
        }
        if self.pending.len() >= MAX_PENDING {
            return None;
        }
        let id = self.next_id();
        let mut query = message.to_vec();
        query[..2].copy_from_slice(&id.to_be_bytes());
        let to = self.upstreams[0];
        self.pending.insert(
            id,
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
        Some(DnsAction::Query { to, query })
    }

    /// A datagram from `from` on the DNS socket: the answer to a pending query, or `None`.
    pub fn answer(&mut self, from: SocketAddrV4, message: &[u8]) -> Option<DnsAction> {
        if message.len() < HEADER_LEN || message[2] & 0x80 == 0 {
            return None;
        }
        let id = u16::from_be_bytes([message[0], message[1]]);
        let p = self.pending.get(&id)?;
        if self.upstreams.get(p.upstream) != Some(&from) {
            return None;
        }
        let p = self.pending.remove(&id)?;
        let mut answer = message.to_vec();
        answer[..2].copy_from_slice(&p.guest_id.to_be_bytes());
        Some(DnsAction::Answer {
            guest_mac: p.guest_mac,
            guest: p.guest,
            answer,
        })
    }

    /// Retries timed-out queries on the next upstream; when every upstream has had its
    /// turn the guest gets SERVFAIL. Returns how many queries gave up.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<DnsAction>) -> usize {
        let due: Vec<u16> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        let mut failed = 0;
        for id in due {
            let Some(p) = self.pending.get_mut(&id) else {
                continue;
            };
            if p.tries < self.upstreams.len() {
                p.tries += 1;
                p.upstream = (p.upstream + 1) % self.upstreams.len();
                p.deadline = now + self.timeout;
                out.push(DnsAction::Query {
                    to: self.upstreams[p.upstream],
                    query: p.query.clone(),
                });
                continue;
            }
            let p = self.pending.remove(&id).expect("present");
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

    fn guest() -> SocketAddrV4 {
        "10.0.0.5:40000".parse().unwrap()
    }

    fn up(n: u8) -> SocketAddrV4 {
        SocketAddrV4::new([127, 0, 0, n].into(), 53)
    }

    fn query_bytes(id: u16) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        q.extend_from_slice(b"\x04test\x00\x00\x01\x00\x01");
        q
    }

    #[test]
    fn ids_are_remapped_and_restored() {
        let t = Instant::now();
        let mut f = DnsForwarder::new(vec![up(1)], Duration::from_secs(2), 42);
        let Some(DnsAction::Query { to, query }) = f.query(t, GUEST_MAC, guest(), &query_bytes(7))
        else {
            panic!("no query");
        };
        assert_eq!(to, up(1));
        let mut answer = query.clone();
        answer[2] |= 0x80;
        assert_eq!(f.answer(up(2), &answer), None, "wrong upstream");
        let Some(DnsAction::Answer {
            guest: g,
            answer: a,
            ..
        }) = f.answer(up(1), &answer)
        else {
            panic!("no answer");
        };
        assert_eq!(
            (g, &a[..2], &a[2..]),
            (guest(), &[0u8, 7][..], &answer[2..])
        );
        assert_eq!(f.answer(up(1), &answer), None, "answered once");
    }

    #[test]
    fn timeouts_try_the_next_upstream_then_servfail() {
        let t = Instant::now();
        let mut f = DnsForwarder::new(vec![up(1), up(2)], Duration::from_secs(2), 1);
        assert!(f.query(t, GUEST_MAC, guest(), &query_bytes(9)).is_some());
        let mut out = Vec::new();
        assert_eq!(f.poll(t + Duration::from_secs(1), &mut out), 0);
        assert!(out.is_empty());
        f.poll(f.poll_at().unwrap(), &mut out);
        assert!(matches!(out[..], [DnsAction::Query { to, .. }] if to == up(2)));
        out.clear();
        assert_eq!(f.poll(f.poll_at().unwrap(), &mut out), 1);
        let [DnsAction::Answer { answer, .. }] = &out[..] else {
            panic!("{out:?}");
        };
        assert_eq!(
            (&answer[..2], answer[2] & 0x80, answer[3] & 0x0f),
            (&[0u8, 9][..], 0x80, 2)
        );
        assert_eq!(f.in_flight(), 0);
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
        let mut f = DnsForwarder::new(vec![up(1)], Duration::from_secs(2), 1);
        let mut r = query_bytes(1);
        r[2] |= 0x80;
        assert_eq!(f.query(Instant::now(), GUEST_MAC, guest(), &r), None);
        assert_eq!(f.query(Instant::now(), GUEST_MAC, guest(), &[0; 5]), None);
    }
}
