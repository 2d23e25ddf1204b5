#![no_main]
//! The NAT's DNS relay against upstream answers, through the device as the shell drives
//! it: a script of guest queries (UDP to the gateway's port 53), datagrams on the query
//! sockets (their ID the attempt's, or any), socket errors, failed opens and time.
//! An answer reaches the guest with the guest's ID and otherwise unchanged, or cut to
//! its question with TC set when it does not fit the MTU; one that gives up is a
//! SERVFAIL; every frame fits the MTU; query sockets go only to upstreams.
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use vnet_core::wire::ethernet::HEADER_LEN as ETH_LEN;
use vnet_core::wire::{ipv4, udp, IpProtocol};
use vnet_nat::frames::{self, Route};
use vnet_nat::{FlowId, MacAddr, NatConfig, NatDevice, NatSecrets, Output, SocketError};

const NAT_MAC: MacAddr = MacAddr([0x02, 0x76, 0x64, 0, 0, 8]);
const GUEST_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
const GW: Ipv4Addr = Ipv4Addr::new(192, 168, 8, 2);
const GUEST: Ipv4Addr = Ipv4Addr::new(192, 168, 8, 100);

struct Relay {
    nat: NatDevice,
    now: Instant,
    mtu: usize,
    upstreams: Vec<SocketAddrV4>,
    /// Query sockets open, with the query sent on each.
    queries: HashMap<FlowId, Vec<u8>>,
    /// Guest IDs of the queries asked, by the guest's port.
    guest_ids: HashMap<u16, u16>,
}

impl Relay {
    /// Carries out outputs; returns the DNS payloads sent to the guest.
    fn outputs(&mut self, out: Vec<Output>) -> Vec<(u16, Vec<u8>)> {
        let mut answers = Vec::new();
        for o in out {
            match o {
                Output::Open { flow, to, .. } => {
                    let std::net::SocketAddr::V4(to) = to else {
                        panic!("query socket to {to}");
                    };
                    assert!(self.upstreams.contains(&to), "query socket to {to}");
                    self.queries.insert(flow, Vec::new());
                }
                Output::Send { flow, data } => {
                    let q = self.queries.get_mut(&flow).expect("sent on an open socket");
                    *q = data;
                }
                Output::Close { flow } => {
                    assert!(self.queries.remove(&flow).is_some(), "closed twice");
                }
                Output::Frame(f) => {
                    assert!(f.len() <= ETH_LEN + self.mtu, "{}-byte frame", f.len());
                    if f[12..14] != [0x08, 0x00] {
                        continue;
                    }
                    let ip = ipv4::Packet::new_checked(&f[ETH_LEN..]).expect("IPv4");
                    if ip.next_header() != IpProtocol::UDP {
                        continue;
                    }
                    assert!(!ip.is_fragment(), "DNS answers are never fragmented");
                    let u = udp::Packet::new_checked(ip.payload()).expect("UDP");
                    if u.src_port() == 53 && ip.src_addr() == GW {
                        answers.push((u.dst_port(), u.payload().to_vec()));
                    }
                }
                other => panic!("{other:?}"),
            }
        }
        answers
    }
}

fn run(u: &mut Unstructured) -> Result<()> {
    let upstreams: Vec<SocketAddrV4> = (0..u.int_in_range(0..=3u8)?)
        .map(|i| SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, i), 53))
        .collect();
    let mut c = NatConfig::new(NAT_MAC, GW, Ipv4Addr::new(192, 168, 8, 0), 24);
    c.dns_upstreams = upstreams.clone();
    c.mtu = *u.choose(&[576, 1500])?;
    let mut r = Relay {
        mtu: c.mtu,
        nat: NatDevice::new(c, NatSecrets::from_bytes(u.arbitrary()?)),
        now: Instant::now(),
        upstreams,
        queries: HashMap::new(),
        guest_ids: HashMap::new(),
    };
    let route = Route {
        src_mac: GUEST_MAC,
        dst_mac: NAT_MAC,
        src: GUEST.into(),
        dst: GW.into(),
    };
    let mut next_port = 1024u16;
    while !u.is_empty() {
        let mut out = Vec::new();
        match u.int_in_range(0..=4u8)? {
            0 => {
                let mut msg: Vec<u8> = u.arbitrary()?;
                if msg.len() < 12 && u.arbitrary()? {
                    msg.resize(12, 0);
                }
                if msg.len() > 2 {
                    msg[2] &= 0x7f; // mostly queries
                }
                // A port of its own for each query, so each answer tells whose it is.
                next_port = next_port.wrapping_add(1).max(1024);
                let port = next_port;
                let seg = frames::udp_datagram(&route, port, 53, &msg);
                let frame = frames::ip_frame(&route, IpProtocol::UDP, 1, &seg);
                r.nat.receive(r.now, &frame, &mut out);
                if msg.len() >= 12 {
                    r.guest_ids
                        .insert(port, u16::from_be_bytes([msg[0], msg[1]]));
                }
                r.outputs(out);
            }
            1 => {
                let flows: Vec<FlowId> = r.queries.keys().copied().collect();
                let flow = if flows.is_empty() || u.ratio(1, 16)? {
                    FlowId(u.int_in_range(0..=8)?)
                } else {
                    flows[u.choose_index(flows.len())?]
                };
                let mut msg: Vec<u8> = u.arbitrary()?;
                let query = r.queries.get(&flow).cloned();
                if let (Some(q), true) = (&query, msg.len() >= 12 && u.ratio(7, 8)?) {
                    msg[..2].copy_from_slice(&q[..2]);
                    msg[2] |= 0x80;
                }
                r.nat.socket_data(r.now, flow, &msg, &mut out);
                for (port, answer) in r.outputs(out) {
                    assert!(query.is_some(), "an answer on no query's socket");
                    let guest_id = r.guest_ids[&port];
                    assert_eq!(&answer[..2], &guest_id.to_be_bytes(), "the guest's ID");
                    if answer.len() == msg.len() {
                        assert_eq!(&answer[2..], &msg[2..], "only the ID changes");
                    } else {
                        assert!(answer.len() < msg.len(), "answer grew");
                        assert_ne!(answer[2] & 0x02, 0, "a cut answer has TC set");
                        assert!(8 + 20 + msg.len() > r.mtu, "cut though it fit");
                    }
                }
            }
            2 | 3 => {
                let flows: Vec<FlowId> = r.queries.keys().copied().collect();
                let Ok(&flow) = u.choose(&flows) else {
                    continue;
                };
                if u.arbitrary()? {
                    r.nat.open_failed(flow, &mut out);
                } else {
                    let e = if u.arbitrary()? {
                        SocketError::Refused
                    } else {
                        SocketError::Unreachable
                    };
                    r.nat.socket_error(flow, e, &mut out);
                }
                assert!(r.outputs(out).is_empty(), "answered on an error");
            }
            _ => {
                r.now += Duration::from_millis(u.int_in_range(0..=5000u64)?);
                r.nat.poll(r.now, &mut out);
                for (_, answer) in r.outputs(out) {
                    assert_eq!(answer[2] & 0x80, 0x80, "QR");
                    assert_eq!(answer[3] & 0x0f, 2, "SERVFAIL");
                }
            }
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
