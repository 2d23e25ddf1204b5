#![no_main]
//! The NAT device driven like its I/O shell drives it, from a script: guest frames
//! (TCP with sequence numbers that follow the device's, UDP, DNS to the gateway, echo,
//! raw bytes) interleaved with what the host side reports (connects, writes taken,
//! socket data and errors, failed opens, DNS answers, port-forward traffic) and time.
//! This reaches the TCP state machine and the host-side entry points that
//! `nat_guest_bytes` does not. The shell's side keeps its contract (it never reports
//! more written than it was asked to write, nor peeks more than the read window);
//! the device must never panic, its frames must fit the vnet's MTU, its write ranges
//! must lie in the frame they name, and its TSO frames must segment.
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use vnet_core::wire::ethernet::HEADER_LEN as ETH_LEN;
use vnet_core::wire::offload::{complete_checksum, segment};
use vnet_core::wire::tcp::{self, Flags};
use vnet_core::wire::{icmpv4, ipv4, IpProtocol};
use vnet_nat::frames::{self, Route, TCP_DATA_OFFSET};
use vnet_nat::{FlowId, MacAddr, NatConfig, NatDevice, NatSecrets, Output, SocketError};

const NAT_MAC: MacAddr = MacAddr([0x02, 0x76, 0x64, 0, 0, 8]);
const GW: Ipv4Addr = Ipv4Addr::new(192, 168, 8, 2);
const UPSTREAM: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 53), 53);
const GUESTS: [(MacAddr, Ipv4Addr); 2] = [
    (
        MacAddr([0x52, 0x54, 0, 0, 0, 1]),
        Ipv4Addr::new(192, 168, 8, 100),
    ),
    (
        MacAddr([0x52, 0x54, 0, 0, 0, 2]),
        Ipv4Addr::new(192, 168, 8, 101),
    ),
];
const REMOTES: [Ipv4Addr; 5] = [
    Ipv4Addr::new(198, 51, 100, 7),
    Ipv4Addr::new(203, 0, 113, 9),
    GW,
    Ipv4Addr::new(192, 168, 8, 255),
    Ipv4Addr::new(127, 0, 0, 1),
];
const PORTS: [u16; 4] = [53, 80, 4000, 4001];

/// A TCP connection as the guest end sees it, keyed by (guest, remote).
#[derive(Default, Clone, Copy)]
struct Conn {
    /// The guest's next sequence number.
    seq: u32,
    /// The device's next sequence number, from its segments.
    peer_next: u32,
}

struct Shell {
    nat: NatDevice,
    now: Instant,
    mtu: usize,
    flows: Vec<FlowId>,
    /// Bytes asked to be written and not yet reported, per flow.
    unwritten: HashMap<FlowId, usize>,
    conns: HashMap<(SocketAddrV4, SocketAddrV4), Conn>,
    /// DNS query sockets and the ID of the query sent on each.
    dns_flows: HashMap<FlowId, u16>,
}

impl Shell {
    /// Carries out the device's outputs (for the frame `received`, if any).
    fn outputs(&mut self, out: Vec<Output>, received: Option<&[u8]>) {
        for o in out {
            match o {
                Output::Frame(f) => self.frame(&f),
                Output::Open { flow, to, .. } => {
                    if to == SocketAddr::V4(UPSTREAM) {
                        self.dns_flows.insert(flow, 0);
                    }
                    self.flows.push(flow);
                }
                Output::TcpWrite { flow, data, .. } => {
                    let frame = received.expect("TcpWrite only while a frame is received");
                    assert!(
                        data.start <= data.end && data.end <= frame.len(),
                        "{data:?} of {}",
                        frame.len()
                    );
                    *self.unwritten.entry(flow).or_default() += data.len();
                }
                Output::Send { flow, data } => {
                    if let (Some(id), Some(q)) = (self.dns_flows.get_mut(&flow), data.get(..2)) {
                        *id = u16::from_be_bytes([q[0], q[1]]);
                    }
                }
                Output::Close { flow } => {
                    self.unwritten.remove(&flow);
                }
                Output::TcpRead { .. } | Output::TcpConsume { .. } => {}
            }
        }
    }

    /// A frame for the vnet: it fits the MTU; TCP to a guest teaches us its sequence.
    fn frame(&mut self, f: &[u8]) {
        assert!(f.len() >= ETH_LEN, "runt frame from the device");
        assert!(
            f.len() <= ETH_LEN + self.mtu,
            "{}-byte frame, MTU {}",
            f.len(),
            self.mtu
        );
        if f[12..14] != [0x08, 0x00] {
            return;
        }
        let ip = ipv4::Packet::new_checked(&f[ETH_LEN..]).expect("the device's IPv4 parses");
        if ip.next_header() != IpProtocol::TCP || ip.is_fragment() {
            return;
        }
        let Ok(t) = tcp::Packet::new_checked(ip.payload()) else {
            panic!("the device's TCP does not parse");
        };
        let r = tcp::Repr::parse(&t).expect("the device's TCP options parse");
        let key = (
            SocketAddrV4::new(ip.dst_addr(), r.dst_port),
            SocketAddrV4::new(ip.src_addr(), r.src_port),
        );
        let len = r.payload_len as u32
            + u32::from(r.flags.0 & Flags::SYN != 0)
            + u32::from(r.flags.0 & Flags::FIN != 0);
        let c = self.conns.entry(key).or_default();
        c.peer_next = r.seq_number.wrapping_add(len);
    }

    fn flow(&self, u: &mut Unstructured) -> Result<FlowId> {
        Ok(if self.flows.is_empty() || u.ratio(1, 16)? {
            FlowId(u.int_in_range(0..=8)?)
        } else {
            self.flows[u.choose_index(self.flows.len())?]
        })
    }
}

fn port(u: &mut Unstructured) -> Result<u16> {
    Ok(if u.ratio(1, 4)? {
        u.arbitrary()?
    } else {
        *u.choose(&PORTS)?
    })
}

fn guest_frame(s: &mut Shell, u: &mut Unstructured) -> Result<Vec<u8>> {
    let (mac, gip) = *u.choose(&GUESTS)?;
    let dst = *u.choose(&REMOTES)?;
    let r = Route {
        src_mac: mac,
        dst_mac: NAT_MAC,
        src: gip.into(),
        dst: dst.into(),
    };
    let (sport, dport) = (port(u)?, port(u)?);
    let ident = u.arbitrary()?;
    Ok(match u.int_in_range(0..=4u8)? {
        0 | 1 => {
            let key = (SocketAddrV4::new(gip, sport), SocketAddrV4::new(dst, dport));
            let c = s.conns.get(&key).copied().unwrap_or_default();
            let mut flags: u8 = u.arbitrary::<u8>()? & 0x1f;
            if u.ratio(3, 4)? {
                // Mostly sensible: ACK set, or a bare SYN.
                flags = if u.ratio(1, 4)? {
                    Flags::SYN
                } else {
                    flags | Flags::ACK
                };
            }
            let seq = if u.ratio(7, 8)? {
                c.seq
            } else {
                u.arbitrary()?
            };
            let ack = if u.ratio(7, 8)? {
                c.peer_next
                    .wrapping_sub(u.int_in_range(0..=2000u32)?.saturating_sub(1000))
            } else {
                u.arbitrary()?
            };
            let data: &[u8] = if flags & Flags::SYN != 0 {
                &[]
            } else {
                u.arbitrary()?
            };
            let h = tcp::Repr {
                src_port: sport,
                dst_port: dport,
                seq_number: seq,
                ack_number: ack,
                flags: Flags(flags),
                window_len: u.arbitrary()?,
                max_seg_size: if u.arbitrary()? {
                    Some(u.arbitrary()?)
                } else {
                    None
                },
                window_scale: if u.arbitrary()? {
                    Some(u.int_in_range(0..=15)?)
                } else {
                    None
                },
                ..tcp::Repr::default()
            };
            let len = data.len() as u32 + u32::from(flags & (Flags::SYN | Flags::FIN) != 0);
            let e = s.conns.entry(key).or_default();
            e.seq = seq.wrapping_add(len);
            frames::ip_frame(
                &r,
                IpProtocol::TCP,
                ident,
                &frames::tcp_segment(&r, &h, data),
            )
        }
        2 => {
            let data: &[u8] = u.arbitrary()?;
            frames::ip_frame(
                &r,
                IpProtocol::UDP,
                ident,
                &frames::udp_datagram(&r, sport, dport, data),
            )
        }
        3 => {
            let m = icmpv4::Repr::EchoRequest {
                ident: sport,
                seq_no: dport,
                data: u.arbitrary()?,
            };
            frames::ip_frame(&r, IpProtocol::ICMP, ident, &frames::icmp_message(&m))
        }
        _ => {
            // Raw bytes behind a plausible Ethernet header.
            let mut f = Vec::from(NAT_MAC.0);
            f.extend_from_slice(&mac.0);
            let rest: &[u8] = u.arbitrary()?;
            f.extend_from_slice(rest);
            f
        }
    })
}

fn step(s: &mut Shell, u: &mut Unstructured) -> Result<()> {
    let mut out = Vec::new();
    match u.int_in_range(0..=12u8)? {
        0..=3 => {
            let frame = guest_frame(s, u)?;
            if u.arbitrary()? {
                s.nat.receive_offloaded(s.now, &frame, &mut out);
            } else {
                s.nat.receive(s.now, &frame, &mut out);
            }
            s.outputs(out, Some(&frame));
            return Ok(());
        }
        4 => {
            let flow = s.flow(u)?;
            s.nat.tcp_connected(s.now, flow, &mut out);
        }
        5 => {
            let flow = s.flow(u)?;
            let pending = s.unwritten.get(&flow).copied().unwrap_or(0);
            let written = u.int_in_range(0..=pending)?;
            if let Some(p) = s.unwritten.get_mut(&flow) {
                *p -= written;
            }
            let fin_done = written == pending && u.arbitrary()?;
            s.nat
                .tcp_written(flow, written, fin_done, u.arbitrary()?, &mut out);
        }
        6 => {
            let flow = s.flow(u)?;
            s.nat.tcp_window(flow, u.arbitrary()?, &mut out);
        }
        7 => {
            let flow = s.flow(u)?;
            let len = match s.nat.tcp_read_window(flow) {
                Some(w) => u.int_in_range(0..=w.len.min(w.chunk).min(70_000))?,
                None => 0,
            };
            let mut frame = vec![0u8; TCP_DATA_OFFSET + len];
            let eof = len == 0 && u.arbitrary()?;
            if let Some(hdr) = s.nat.tcp_data(s.now, flow, &mut frame, eof, &mut out) {
                if !hdr.is_gso() {
                    assert!(frame.len() <= ETH_LEN + s.mtu, "{}-byte frame", frame.len());
                    complete_checksum(&mut frame, &hdr).expect("the device's checksum completes");
                } else {
                    let mut scratch = vec![0u8; 65_600];
                    let mut n = 0;
                    segment(&frame, &hdr, &mut scratch, |seg| {
                        assert!(seg.len() <= ETH_LEN + s.mtu, "{}-byte segment", seg.len());
                        n += 1;
                    })
                    .expect("the device's TSO frames segment");
                    assert!(n >= 2);
                }
            }
        }
        8 => {
            let flow = s.flow(u)?;
            let data: &[u8] = u.arbitrary()?;
            s.nat.socket_data(s.now, flow, data, &mut out);
        }
        9 => {
            let flow = s.flow(u)?;
            let e = if u.arbitrary()? {
                SocketError::Refused
            } else {
                SocketError::Unreachable
            };
            s.nat.socket_error(flow, e, &mut out);
        }
        10 => {
            let flow = s.flow(u)?;
            s.nat.open_failed(flow, &mut out);
        }
        11 => {
            // An upstream's answer on a DNS query's socket, mostly under its ID.
            let dns: Vec<(FlowId, u16)> = s.dns_flows.iter().map(|(&f, &i)| (f, i)).collect();
            let Ok(&(flow, id)) = u.choose(&dns) else {
                return Ok(());
            };
            let mut data: Vec<u8> = u.arbitrary()?;
            if data.len() < 12 && u.arbitrary()? {
                data.resize(12, 0);
            }
            if data.len() >= 12 && u.ratio(7, 8)? {
                data[..2].copy_from_slice(&id.to_be_bytes());
                data[2] |= 0x80;
            }
            s.nat.socket_data(s.now, flow, &data, &mut out);
        }
        12 => {
            let (_, gip) = *u.choose(&GUESTS)?;
            let guest = SocketAddr::from((gip, port(u)?));
            let peer = SocketAddr::from((*u.choose(&REMOTES)?, port(u)?));
            if u.arbitrary()? {
                let data: &[u8] = u.arbitrary()?;
                if let Some(f) = s.nat.udp_forwarded(s.now, guest, peer, data, &mut out) {
                    s.flows.push(f);
                }
            } else if let Some(f) = s.nat.tcp_accepted(s.now, guest, peer, &mut out) {
                s.flows.push(f);
            }
        }
        _ => unreachable!(),
    }
    if u.ratio(1, 4)? {
        s.now += Duration::from_millis(u.int_in_range(0..=10_000u64)?);
        s.nat.poll(s.now, &mut out);
    }
    s.outputs(out, None);
    Ok(())
}

fn run(u: &mut Unstructured) -> Result<()> {
    let mut c = NatConfig::new(NAT_MAC, GW, Ipv4Addr::new(192, 168, 8, 0), 24);
    c.dns_upstreams = vec![UPSTREAM];
    c.mtu = *u.choose(&[1500, 576, 9000])?;
    c.host_loopback = u.arbitrary()?;
    c.icmp = u.arbitrary()?;
    c.max_flows = u.int_in_range(1..=16)?;
    let mut s = Shell {
        mtu: c.mtu,
        nat: NatDevice::new(c, NatSecrets::from_bytes(u.arbitrary()?)),
        now: Instant::now(),
        flows: Vec::new(),
        unwritten: HashMap::new(),
        conns: HashMap::new(),
        dns_flows: HashMap::new(),
    };
    while !u.is_empty() {
        step(&mut s, u)?;
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
