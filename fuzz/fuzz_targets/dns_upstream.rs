#![no_main]
//! The NAT's DNS relay against upstream answers: a script of guest queries, datagrams
//! on the DNS socket (from an upstream or not; their ID one the relay used, or any)
//! and timeouts. Answers reach the guest with its own ID and otherwise unchanged;
//! nothing is answered twice; `truncate` never grows a message.
use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use vnet_nat::dns::{truncate, DnsAction, DnsForwarder};
use vnet_nat::MacAddr;

const TIMEOUT: Duration = Duration::from_secs(2);

fn upstream(i: u8) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, i % 4), 53)
}

fn check_truncate(answer: &[u8]) {
    let t = truncate(answer);
    if answer.len() >= 12 {
        assert!(
            t.len() <= answer.len(),
            "truncate grew {} to {}",
            answer.len(),
            t.len()
        );
        assert_ne!(t[2] & 0x02, 0, "TC set");
        assert_eq!(&t[..2], &answer[..2], "same ID");
    } else {
        assert_eq!(t, answer);
    }
}

fn run(u: &mut Unstructured) -> Result<()> {
    let now0 = Instant::now();
    let mut now = now0;
    let ups: Vec<SocketAddrV4> = (0..u.int_in_range(0..=3u8)?).map(upstream).collect();
    let mut dns = DnsForwarder::new(ups.clone(), TIMEOUT, u.arbitrary()?);
    // IDs the relay used upstream, and the guest ID each stands for.
    let mut sent: Vec<(u16, u16)> = Vec::new();
    let mut answered: HashSet<u16> = HashSet::new();
    let mac = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
    let guest = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 5), 4000);
    while !u.is_empty() {
        match u.int_in_range(0..=3u8)? {
            0 => {
                let msg: &[u8] = u.arbitrary()?;
                match dns.query(now, mac, guest, msg) {
                    Some(DnsAction::Query { to, query }) => {
                        assert_eq!(to, ups[0]);
                        assert_eq!(&query[2..], &msg[2..]);
                        let id = u16::from_be_bytes([query[0], query[1]]);
                        sent.push((id, u16::from_be_bytes([msg[0], msg[1]])));
                        answered.remove(&id);
                    }
                    Some(other) => panic!("{other:?}"),
                    None => {}
                }
            }
            1 => {
                let from = upstream(u.arbitrary()?);
                let mut msg: Vec<u8> = u.arbitrary()?;
                let known = if sent.is_empty() || !u.arbitrary()? {
                    None
                } else {
                    Some(sent[u.choose_index(sent.len())?])
                };
                if let (Some((id, _)), true) = (known, msg.len() >= 2) {
                    msg[..2].copy_from_slice(&id.to_be_bytes());
                }
                match dns.answer(from, &msg) {
                    Some(DnsAction::Answer {
                        guest_mac,
                        guest: to,
                        answer,
                    }) => {
                        assert_eq!((guest_mac, to), (mac, guest));
                        assert_eq!(&answer[2..], &msg[2..], "only the ID changes");
                        let id = u16::from_be_bytes([msg[0], msg[1]]);
                        let &(_, guest_id) = sent
                            .iter()
                            .rev()
                            .find(|(i, _)| *i == id)
                            .expect("an ID we sent");
                        assert_eq!(&answer[..2], &guest_id.to_be_bytes());
                        assert!(answered.insert(id), "answered twice");
                        assert!(ups.contains(&from));
                        check_truncate(&answer);
                    }
                    Some(other) => panic!("{other:?}"),
                    None => {}
                }
            }
            2 => {
                now += Duration::from_millis(u.int_in_range(0..=3000u64)?);
                let mut out = Vec::new();
                let failed = dns.poll(now, &mut out);
                let servfails = out
                    .iter()
                    .filter(|a| matches!(a, DnsAction::Answer { answer, .. } if answer[3] & 0x0f == 2 && answer[2] & 0x80 != 0))
                    .count();
                assert_eq!(failed, servfails);
                if let Some(at) = dns.poll_at() {
                    assert!(at > now, "poll_at {at:?} not after a poll at {now:?}");
                }
            }
            _ => {
                let msg: &[u8] = u.arbitrary()?;
                check_truncate(msg);
            }
        }
        assert!(dns.in_flight() <= vnet_nat::dns::MAX_PENDING);
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
