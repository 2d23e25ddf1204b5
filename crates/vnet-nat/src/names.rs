//! The vnet's own names: the hosts its DHCP service knows (leases and reservations with
//! a host name), answered by the NAT device's DNS itself, as vmnet-natd and dnsmasq do
//! for their DHCP clients. Guests find each other as `host` or `host.<domain>`.
//!
//! Only questions about these names are answered here; everything else, including
//! names under the vnet's domain that no lease holds, goes to the upstreams as before
//! (they may know it; NXDOMAIN is theirs to give). The shell builds a [`LocalNames`]
//! from the DHCP service's state whenever it changes and hands it to the device.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// TTL of local answers, in seconds: short, because a name moves with its lease, and
/// guests that cached it should learn of that within a minute.
pub const LOCAL_TTL: u32 = 60;

const HEADER_LEN: usize = 12;
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const TYPE_ANY: u16 = 255;
const CLASS_IN: u16 = 1;
/// Longest name on the wire (RFC 1035 §2.3.4).
const MAX_NAME: usize = 255;

/// Host names of the vnet and their addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalNames {
    /// The vnet's DNS domain, lower case, without dots at either end.
    domain: Option<String>,
    /// Host label (lower case) → its addresses.
    hosts: BTreeMap<String, Addresses>,
}

/// What one name stands for: at most one address of each family (a DHCP lease and a
/// DHCPv6 lease of the same host).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Addresses {
    v4: Option<Ipv4Addr>,
    v6: Option<Ipv6Addr>,
}

impl LocalNames {
    /// No names yet, under `domain` (DHCP option 15; `None`: bare names only).
    pub fn new(domain: Option<&str>) -> Self {
        let domain = domain
            .map(|d| d.trim_matches('.').to_ascii_lowercase())
            .filter(|d| !d.is_empty());
        LocalNames {
            domain,
            hosts: BTreeMap::new(),
        }
    }

    /// Names `host` `ip` (DHCP leases give IPv4 addresses, DHCPv6 leases IPv6 ones).
    /// The first claim on a name wins, per family (callers list reservations first,
    /// then leases newest first): a name holds one IPv4 and one IPv6 address at most.
    /// A name that is not one DNS label (after stripping the vnet's own domain) cannot
    /// be asked for and is refused: `false`, as is a second claim of a family.
    pub fn insert(&mut self, host: &str, ip: impl Into<IpAddr>) -> bool {
        let mut host = host.trim_end_matches('.').to_ascii_lowercase();
        if let Some(domain) = &self.domain {
            if let Some(bare) = host
                .strip_suffix(domain.as_str())
                .and_then(|h| h.strip_suffix('.'))
            {
                host.truncate(bare.len());
            }
        }
        let label_ok = (1..=63).contains(&host.len())
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !label_ok {
            return false;
        }
        let addresses = self.hosts.entry(host).or_default();
        match ip.into() {
            IpAddr::V4(ip) if addresses.v4.is_none() => addresses.v4 = Some(ip),
            IpAddr::V6(ip) if addresses.v6.is_none() => addresses.v6 = Some(ip),
            _ => return false,
        }
        true
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// The addresses of a name given as its labels (any case): `host` or
    /// `host.<domain>`.
    fn resolve(&self, labels: &[&[u8]]) -> Option<Addresses> {
        let (host, rest) = labels.split_first()?;
        let in_domain = |domain: &String| {
            rest.len() == domain.split('.').count()
                && rest
                    .iter()
                    .zip(domain.split('.'))
                    .all(|(l, d)| l.eq_ignore_ascii_case(d.as_bytes()))
        };
        if !rest.is_empty() && !self.domain.as_ref().is_some_and(in_domain) {
            return None;
        }
        let host = std::str::from_utf8(host).ok()?.to_ascii_lowercase();
        self.hosts.get(&host).copied()
    }

    /// The answer to `query` (a DNS message from a guest) if it asks about a local
    /// name: its A record for A questions, its AAAA record for AAAA, both for ANY, and
    /// an empty NOERROR answer where it has no such record (the name exists without
    /// records of that type: NODATA, not NXDOMAIN, RFC 4074 §3). `None`: not ours,
    /// forward it. Never panics, whatever the bytes.
    pub fn answer(&self, query: &[u8]) -> Option<Vec<u8>> {
        if self.hosts.is_empty() {
            return None;
        }
        let header = query.get(..HEADER_LEN)?;
        let count = |at: usize| u16::from_be_bytes([header[at], header[at + 1]]);
        let is_standard_query = header[2] & 0xf8 == 0; // QR = 0, OPCODE = QUERY
        if !is_standard_query || count(4) != 1 || count(6) != 0 || count(8) != 0 {
            return None;
        }
        let mut labels: Vec<&[u8]> = Vec::new();
        let mut at = HEADER_LEN;
        loop {
            let len = usize::from(*query.get(at)?);
            if len == 0 {
                at += 1;
                break;
            }
            // Compression pointers (0xc0) and extended labels have no place in a
            // question: leave such a query to the upstream.
            if len > 63 || at - HEADER_LEN + len + 2 > MAX_NAME {
                return None;
            }
            labels.push(query.get(at + 1..at + 1 + len)?);
            at += 1 + len;
        }
        let fixed = query.get(at..at + 4)?;
        let (qtype, qclass) = (
            u16::from_be_bytes([fixed[0], fixed[1]]),
            u16::from_be_bytes([fixed[2], fixed[3]]),
        );
        if qclass != CLASS_IN {
            return None;
        }
        let addresses = self.resolve(&labels)?;
        let question = &query[HEADER_LEN..at + 4];
        let v4 = addresses.v4.filter(|_| matches!(qtype, TYPE_A | TYPE_ANY));
        let v6 = addresses
            .v6
            .filter(|_| matches!(qtype, TYPE_AAAA | TYPE_ANY));
        let records = u8::from(v4.is_some()) + u8::from(v6.is_some());
        let mut answer = Vec::with_capacity(HEADER_LEN + question.len() + 2 * 28);
        answer.extend_from_slice(&header[..2]);
        // QR, AA, RD as asked; RA: the device does recurse (through its upstreams).
        answer.push(0x80 | 0x04 | (header[2] & 0x01));
        answer.push(0x80);
        answer.extend_from_slice(&[0, 1, 0, records, 0, 0, 0, 0]);
        answer.extend_from_slice(question);
        let v4 = v4.map(|ip| (TYPE_A, ip.octets().to_vec()));
        let v6 = v6.map(|ip| (TYPE_AAAA, ip.octets().to_vec()));
        for (rtype, data) in v4.into_iter().chain(v6) {
            answer.extend_from_slice(&[0xc0, HEADER_LEN as u8]); // the question's name
            answer.extend_from_slice(&rtype.to_be_bytes());
            answer.extend_from_slice(&CLASS_IN.to_be_bytes());
            answer.extend_from_slice(&LOCAL_TTL.to_be_bytes());
            answer.extend_from_slice(&(data.len() as u16).to_be_bytes());
            answer.extend_from_slice(&data);
        }
        Some(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A standard query with RD set, id 0xbeef, for `name` of `qtype`, class IN, with
    /// an EDNS OPT record when `edns`.
    fn query(name: &str, qtype: u16, edns: bool) -> Vec<u8> {
        let mut q = vec![0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)];
        for label in name.split('.').filter(|l| !l.is_empty()) {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&CLASS_IN.to_be_bytes());
        if edns {
            q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
        }
        q
    }

    fn lab() -> LocalNames {
        let mut names = LocalNames::new(Some("Lab.Example."));
        assert!(names.insert("web1", Ipv4Addr::new(10, 0, 0, 5)));
        assert!(names.insert("DB.lab.example", Ipv4Addr::new(10, 0, 0, 6)));
        names
    }

    /// The records an answer carries (A and AAAA), if it is a well-formed local
    /// answer to `q`.
    fn records_in(answer: &[u8], q: &[u8]) -> Vec<IpAddr> {
        let question_end = q.len() - if q[11] == 1 { 11 } else { 0 };
        assert_eq!(&answer[..2], &q[..2], "id kept");
        assert_eq!(answer[2] & 0x80, 0x80, "a response");
        assert_eq!(answer[2] & 0x04, 0x04, "authoritative");
        assert_eq!(answer[2] & 0x01, q[2] & 0x01, "RD echoed");
        assert_eq!(answer[3] & 0x0f, 0, "NOERROR");
        assert_eq!(&answer[4..6], &[0, 1]);
        assert_eq!(&answer[8..12], &[0, 0, 0, 0]);
        assert_eq!(&answer[12..question_end], &q[12..question_end], "question");
        let mut rr = &answer[question_end..];
        let mut found = Vec::new();
        for _ in 0..answer[7] {
            assert_eq!(&rr[..2], &[0xc0, 12], "the question's name");
            assert_eq!(&rr[4..6], &[0, 1], "class IN");
            assert_eq!(u32::from_be_bytes(rr[6..10].try_into().unwrap()), LOCAL_TTL);
            let (rtype, len) = (
                u16::from_be_bytes([rr[2], rr[3]]),
                usize::from(u16::from_be_bytes([rr[10], rr[11]])),
            );
            let data = &rr[12..12 + len];
            found.push(match (rtype, len) {
                (TYPE_A, 4) => IpAddr::from(<[u8; 4]>::try_from(data).unwrap()),
                (TYPE_AAAA, 16) => IpAddr::from(<[u8; 16]>::try_from(data).unwrap()),
                other => panic!("record {other:?}"),
            });
            rr = &rr[12 + len..];
        }
        assert!(rr.is_empty(), "nothing after the records");
        found
    }

    /// The one A record of an answer, if any.
    fn address_in(answer: &[u8], q: &[u8]) -> Option<Ipv4Addr> {
        match records_in(answer, q)[..] {
            [] => None,
            [IpAddr::V4(ip)] => Some(ip),
            ref other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_lease_name_is_answered_bare_and_under_the_domain_in_any_case() {
        let names = lab();
        for (name, ip) in [
            ("web1", [10, 0, 0, 5]),
            ("web1.lab.example", [10, 0, 0, 5]),
            ("WEB1.LAB.Example", [10, 0, 0, 5]),
            ("db", [10, 0, 0, 6]),
            ("db.lab.example.", [10, 0, 0, 6]),
        ] {
            let q = query(name, TYPE_A, false);
            let a = names
                .answer(&q)
                .unwrap_or_else(|| panic!("{name} answered"));
            assert_eq!(address_in(&a, &q), Some(Ipv4Addr::from(ip)), "{name}");
        }
        let q = query("web1.lab.example", TYPE_ANY, true);
        assert_eq!(
            address_in(&names.answer(&q).unwrap(), &q),
            Some(Ipv4Addr::new(10, 0, 0, 5))
        );
    }

    #[test]
    fn other_record_types_of_a_local_name_get_an_empty_noerror_answer() {
        let names = lab();
        for qtype in [28, 15, 16] {
            let q = query("web1.lab.example", qtype, true);
            let a = names.answer(&q).expect("answered locally");
            assert_eq!(address_in(&a, &q), None, "type {qtype}: no records");
        }
    }

    #[test]
    fn names_that_are_not_leases_are_left_to_the_upstreams() {
        let names = lab();
        for name in [
            "mail.lab.example",
            "lab.example",
            "web1.example",
            "web1.lab.example.org",
            "web1.other",
            "www.example.org",
        ] {
            assert_eq!(names.answer(&query(name, TYPE_A, false)), None, "{name}");
        }
        // Not IN, not a plain query, or a response: not ours either.
        let mut chaos = query("web1", TYPE_A, false);
        let n = chaos.len();
        chaos[n - 1] = 3;
        assert_eq!(names.answer(&chaos), None);
        let mut notify = query("web1", TYPE_A, false);
        notify[2] |= 4 << 3;
        assert_eq!(names.answer(&notify), None);
        let mut response = query("web1", TYPE_A, false);
        response[2] |= 0x80;
        assert_eq!(names.answer(&response), None);
        assert_eq!(
            LocalNames::new(None).answer(&query("web1", TYPE_A, false)),
            None
        );
    }

    #[test]
    fn a_dual_stack_name_answers_a_and_aaaa_and_both_for_any() {
        let mut names = lab();
        let v6: Ipv6Addr = "fd00:1::5".parse().unwrap();
        assert!(names.insert("web1", v6), "the IPv6 address of a v4 name");
        assert!(!names.insert("WEB1", Ipv6Addr::LOCALHOST), "one per family");
        assert!(names.insert("v6only", IpAddr::V6(v6)));
        let v4 = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5));
        for (name, qtype, expected) in [
            ("web1", TYPE_A, vec![v4]),
            ("web1.lab.example", TYPE_AAAA, vec![IpAddr::V6(v6)]),
            ("web1", TYPE_ANY, vec![v4, IpAddr::V6(v6)]),
            ("v6only", TYPE_AAAA, vec![IpAddr::V6(v6)]),
            // Names with one family answer NOERROR without records for the other
            // (RFC 4074: never NXDOMAIN, which would hide the other family's).
            ("v6only", TYPE_A, vec![]),
            ("db", TYPE_AAAA, vec![]),
        ] {
            let q = query(name, qtype, true);
            let a = names
                .answer(&q)
                .unwrap_or_else(|| panic!("{name} answered"));
            assert_eq!(records_in(&a, &q), expected, "{name} type {qtype}");
        }
    }

    #[test]
    fn without_a_domain_only_bare_names_resolve() {
        let mut names = LocalNames::new(None);
        assert!(names.insert("vm1", Ipv4Addr::new(10, 0, 0, 9)));
        assert!(names.answer(&query("vm1", TYPE_A, false)).is_some());
        assert_eq!(names.answer(&query("vm1.lab", TYPE_A, false)), None);
    }

    #[test]
    fn the_first_claim_on_a_name_wins_and_unaskable_names_are_refused() {
        let mut names = lab();
        assert!(!names.insert("Web1", Ipv4Addr::new(10, 0, 0, 99)), "taken");
        assert!(
            !names.insert("a.b", Ipv4Addr::new(10, 0, 0, 7)),
            "two labels"
        );
        assert!(!names.insert("", Ipv4Addr::new(10, 0, 0, 7)));
        assert!(!names.insert(&"x".repeat(64), Ipv4Addr::new(10, 0, 0, 7)));
        assert!(!names.insert("sp ace", Ipv4Addr::new(10, 0, 0, 7)));
        assert_eq!(names.len(), 2);
        let q = query("web1", TYPE_A, false);
        assert_eq!(
            address_in(&names.answer(&q).unwrap(), &q),
            Some(Ipv4Addr::new(10, 0, 0, 5))
        );
    }

    #[test]
    fn compressed_or_overlong_questions_are_forwarded() {
        let names = lab();
        let mut q = query("web1", TYPE_A, false);
        q.truncate(12);
        q.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(names.answer(&q), None);
        let long = vec!["a".repeat(63); 5].join(".");
        assert_eq!(names.answer(&query(&long, TYPE_A, false)), None);
        let q = query("web1", TYPE_A, false);
        for cut in 0..q.len() {
            assert_eq!(names.answer(&q[..cut]), None, "cut at {cut}");
        }
    }

    proptest! {
        #[test]
        fn any_bytes_are_safe(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = lab().answer(&bytes);
        }

        #[test]
        fn mutated_queries_are_safe_and_answers_keep_the_id(
            at in 0usize..40, value in any::<u8>()
        ) {
            let mut q = query("web1.lab.example", TYPE_A, true);
            let i = at % q.len();
            q[i] = value;
            if let Some(a) = lab().answer(&q) {
                prop_assert_eq!(&a[..2], &q[..2]);
            }
        }
    }
}
