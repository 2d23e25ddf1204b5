//! TCP, passt-style: no TCP stack in the middle. A guest's connection becomes one
//! host `connect()`; sequence numbers are mirrored, not re-segmented into a buffer:
//!
//! - **guest → host**: a segment at the expected sequence goes to the shell
//!   ([`Output::TcpWrite`]), which writes what the socket takes and keeps the rest (at
//!   most [`WINDOW`] bytes per flow) until the socket drains; the guest is ACKed for what
//!   the shell took and sees its remaining room as the window ([`NatDevice::tcp_written`],
//!   [`NatDevice::tcp_window`]), so it never sends more than will fit. Out-of-order data
//!   is dropped with a duplicate ACK. A guest on an offloading port may send super-frames
//!   (TSO): they are just long segments here.
//! - **host → guest**: data stays in the socket until the guest ACKs it. The shell
//!   peeks new bytes ([`NatDevice::tcp_read_window`]: from offset
//!   `seq_to_tap - seq_ack_from_tap`, which `SO_PEEK_OFF` keeps for it, at most the
//!   guest's window) straight into frames that [`NatDevice::tcp_data`] completes in
//!   place: up to 64 KiB each, cut into MSS-sized segments by
//!   segmentation offload (the guest's TAP, or the switch in software). The guest's ACKs
//!   become [`Output::TcpConsume`] (discard) and another [`Output::TcpRead`] while the
//!   window allows. Three duplicate ACKs, or no ACK within [`ACK_TIMEOUT`], send the
//!   send sequence back to the last ACK and the data is peeked again (go-back-N); after
//!   [`MAX_RETRANS`] timeouts the connection is reset.
//! - **windows**: window scaling (RFC 7323) is offered and honoured, so both directions
//!   can keep more than 64 KiB in flight: the guest's window bounds what we peek, ours
//!   ([`WINDOW`], shifted by [`WINDOW_SCALE`]) what the shell may have to hold.
//! - **close**: a guest FIN becomes `shutdown(SHUT_WR)` once its data is written; EOF on
//!   the socket (a peek of 0 bytes once everything was ACKed) becomes a FIN to the guest.
//!   The flow ends when both FINs are ACKed, on RST either way, or after
//!   [`NatConfig::tcp_timeout`] idle.
//! - **errors**: connection refused → RST; unreachable → ICMP unreachable.
//!
//! | event | what the device does |
//! |---|---|
//! | SYN from guest, no flow | `Open` (non-blocking connect), remember ISN, MSS, window scale |
//! | connect done ([`NatDevice::tcp_connected`]) | SYN-ACK with our ISN, MSS (and window scale if the guest offered one) |
//! | SYN again before/after SYN-ACK | ignored / SYN-ACK again |
//! | segment without a flow | RST |
//! | data at `seq_from_tap` | `TcpWrite`; ACK what was written |
//! | ACK advancing `seq_ack_from_tap` | `TcpConsume`, `TcpRead` |
//! | third duplicate ACK | go back to `seq_ack_from_tap`, `TcpRead` |
//! | RST from guest | `Close` |
//!
//! [`NatConfig::tcp_timeout`]: crate::NatConfig::tcp_timeout

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use vnet_core::wire::ethernet::{MacAddr, HEADER_LEN};
use vnet_core::wire::offload::VirtioNetHdr;
use vnet_core::wire::tcp::{Flags as F, TcpOption};
use vnet_core::wire::{tcp as tcp_wire, IpProtocol};

use super::{Flow, FlowKey, GuestPacket, NatDevice, Output, Proto};
use crate::frames::{self, Route, TCP_MAX_DATA};
use crate::FlowId;

/// How long the guest has to ACK data (or a FIN) before it is sent again.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// Retransmissions in a row before the connection is reset.
pub const MAX_RETRANS: u8 = 5;
/// The largest window the device advertises to guests: the shell buffers at most this
/// much guest data per flow that its socket did not take yet. Large enough that a guest
/// is never window-limited on a local link; the buffer only fills while the host peer
/// does not read.
pub const WINDOW: u32 = 1 << 20;
/// The window scale the device offers (RFC 7323): `65535 << 5` covers [`WINDOW`].
pub const WINDOW_SCALE: u8 = 5;
/// The most data sent to a guest and not yet acknowledged, whatever window it offers
/// (up to 1 GiB with scaling): bounds what one flow has the shell peek and queue.
const MAX_IN_FLIGHT: u32 = 8 << 20;
/// Duplicate ACKs that make the device resend at once (RFC 5681's fast retransmit).
const DUP_ACKS: u8 = 3;

/// Where and how much a shell should peek for a flow: see [`NatDevice::tcp_read_window`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadWindow {
    /// Bytes already sent and not yet acknowledged: new data starts here.
    pub offset: usize,
    /// How many new bytes the guest's window takes (0: peek one byte only, to see EOF).
    pub len: usize,
    /// The most data to put in one frame for [`NatDevice::tcp_data`]: a whole number
    /// of segments.
    pub chunk: usize,
    /// Where the data goes in that frame: after the Ethernet, IP (of the flow's family)
    /// and TCP headers ([`frames::TCP_DATA_OFFSET`] for IPv4).
    pub data_offset: usize,
}

/// Per-connection TCP state, in the shape of passt's events.
#[derive(Debug, Clone)]
pub(super) struct Tcp {
    /// The host socket is connected and the SYN-ACK was sent (outbound), or the guest
    /// answered our SYN (inbound).
    established: bool,
    /// Opened by the device towards the guest (a port forward's accepted connection).
    inbound: bool,
    /// The guest sent FIN and it went to the socket as shutdown.
    fin_from_tap: bool,
    /// We sent FIN to the guest (it takes sequence number `seq_to_tap - 1`).
    fin_to_tap: bool,
    fin_acked: bool,
    /// The socket reached EOF.
    sock_eof: bool,
    isn: u32,
    seq_to_tap: u32,
    /// The highest `seq_to_tap` so far: after a go-back the guest may ACK up to here.
    seq_high: u32,
    seq_ack_from_tap: u32,
    seq_from_tap: u32,
    /// The guest's window, scaled.
    wnd_from_tap: u32,
    /// The guest's window scale (0 when scaling is off).
    ws_from_tap: u8,
    /// Our window scale (0 when scaling is off).
    ws_to_tap: u8,
    mss: u16,
    /// The window we advertise: the shell's room for more guest data.
    wnd_to_tap: u32,
    retrans: u8,
    dup_acks: u8,
    /// When unacknowledged data or FIN is due for retransmission.
    ack_due: Option<Instant>,
}

impl Tcp {
    /// A connection in its opening state.
    fn new(inbound: bool, isn: u32, now: Instant) -> Self {
        Tcp {
            established: false,
            inbound,
            fin_from_tap: false,
            fin_to_tap: false,
            fin_acked: false,
            sock_eof: false,
            isn,
            seq_to_tap: isn.wrapping_add(1),
            seq_high: isn.wrapping_add(1),
            seq_ack_from_tap: isn.wrapping_add(1),
            seq_from_tap: 0,
            wnd_from_tap: 0,
            ws_from_tap: 0,
            ws_to_tap: 0,
            mss: 536,
            wnd_to_tap: WINDOW,
            retrans: 0,
            dup_acks: 0,
            ack_due: inbound.then(|| now + ACK_TIMEOUT),
        }
    }

    /// Takes the MSS and window scale of the peer's SYN (or SYN-ACK).
    fn peer_syn(&mut self, seg: &tcp_wire::Repr) {
        self.seq_from_tap = seg.seq_number.wrapping_add(1);
        self.wnd_from_tap = u32::from(seg.window_len);
        self.mss = seg.max_seg_size.unwrap_or(536).max(64);
        if let Some(shift) = seg.window_scale {
            self.ws_from_tap = shift.min(14);
            self.ws_to_tap = WINDOW_SCALE;
        }
    }

    /// The window field of our segments: scaled, except in SYNs (RFC 7323).
    fn window_field(&self, syn: bool) -> u16 {
        let shift = if syn { 0 } else { self.ws_to_tap };
        u16::try_from(self.wnd_to_tap >> shift).unwrap_or(u16::MAX)
    }

    /// The segment size toward the guest: its MSS, within the vnet's MTU less the IP
    /// and TCP headers (`headers`).
    fn segment_size(&self, mtu: usize, headers: usize) -> usize {
        usize::from(self.mss).min(mtu.saturating_sub(headers).max(1))
    }

    /// Sends again from the last ACK (go-back-N).
    fn go_back(&mut self) {
        self.seq_to_tap = self.seq_ack_from_tap;
        if self.fin_to_tap && !self.fin_acked {
            self.fin_to_tap = false;
        }
        self.dup_acks = 0;
    }

    /// Bytes sent to the guest and not yet ACKed, FIN excluded.
    fn in_flight(&self) -> u32 {
        let all = self.seq_to_tap.wrapping_sub(self.seq_ack_from_tap);
        all - u32::from(self.fin_to_tap && !self.fin_acked).min(all)
    }

    pub(super) fn deadline(&self) -> Option<Instant> {
        self.ack_due
    }

    pub(super) fn finished(&self) -> bool {
        self.fin_from_tap && self.fin_acked
    }
}

impl NatDevice {
    pub(super) fn receive_tcp(
        &mut self,
        now: Instant,
        guest_mac: MacAddr,
        ip: &GuestPacket<'_>,
        checksum_offloaded: bool,
        out: &mut Vec<Output>,
    ) -> bool {
        let Some(seg) = read_segment(ip, checksum_offloaded) else {
            self.counters.malformed += 1;
            return false;
        };
        let key = FlowKey {
            proto: Proto::Tcp,
            guest: SocketAddr::new(ip.src, seg.src_port),
            remote: SocketAddr::new(ip.dst, seg.dst_port),
        };
        let flags = seg.flags.0;
        let Some(&flow) = self.by_key.get(&key) else {
            self.tcp_new(now, guest_mac, key, &seg, out);
            return true;
        };
        self.counters.to_host += 1;
        if flags & F::RST != 0 {
            self.close_flow(flow, out);
            return true;
        }
        let f = self.flows.get_mut(&flow).expect("indexed");
        f.last_used = now;
        let tcp = f.tcp.as_mut().expect("a TCP flow");
        if tcp.inbound && flags & (F::SYN | F::ACK) == F::SYN | F::ACK {
            if !tcp.established && seg.ack_number == tcp.isn.wrapping_add(1) {
                tcp.established = true;
                tcp.peer_syn(&seg);
                tcp.retrans = 0;
                tcp.ack_due = None;
                self.tcp_send(flow, F::ACK, &[], out);
                out.push(Output::TcpRead { flow });
            } else if tcp.established {
                self.tcp_send(flow, F::ACK, &[], out); // our ACK was lost
            }
            return true;
        }
        if flags & F::SYN != 0 {
            if tcp.established && seg.seq_number.wrapping_add(1) == tcp.seq_from_tap {
                self.tcp_syn_ack(flow, out); // our SYN-ACK was lost
            }
            return true;
        }
        if !tcp.established || flags & F::ACK == 0 {
            return true;
        }
        // ACK: what the guest has from us (after a go-back, possibly more than we sent
        // since).
        let acked = seg.ack_number.wrapping_sub(tcp.seq_ack_from_tap);
        let sent = tcp.seq_high.wrapping_sub(tcp.seq_ack_from_tap);
        let window = u32::from(seg.window_len) << tcp.ws_from_tap;
        let window_before = std::mem::replace(&mut tcp.wnd_from_tap, window);
        if acked > 0 && acked <= sent {
            if seg.ack_number.wrapping_sub(tcp.seq_to_tap) as i32 > 0 {
                tcp.seq_to_tap = seg.ack_number;
            }
            let fin_now_acked =
                tcp.fin_to_tap && !tcp.fin_acked && seg.ack_number == tcp.seq_to_tap;
            let data = acked - u32::from(fin_now_acked);
            tcp.seq_ack_from_tap = seg.ack_number;
            tcp.retrans = 0;
            tcp.dup_acks = 0;
            tcp.ack_due = (seg.ack_number != tcp.seq_to_tap).then(|| now + ACK_TIMEOUT);
            if fin_now_acked {
                tcp.fin_acked = true;
            }
            if data > 0 {
                out.push(Output::TcpConsume {
                    flow,
                    bytes: data as usize,
                });
            }
            if tcp.finished() {
                self.close_flow(flow, out);
                return true;
            }
            out.push(Output::TcpRead { flow });
        } else if acked == 0 && seg.payload_len == 0 && flags & F::FIN == 0 {
            if tcp.in_flight() > 0 && window == window_before {
                // A duplicate ACK: the guest misses the segment at its ACK.
                tcp.dup_acks += 1;
                if tcp.dup_acks == DUP_ACKS {
                    tcp.go_back();
                    out.push(Output::TcpRead { flow });
                }
            } else if window > tcp.in_flight() {
                // A window update: there may be room for data waiting in the socket.
                out.push(Output::TcpRead { flow });
            }
        }
        // Data (and FIN) from the guest.
        let fin = flags & F::FIN != 0;
        if seg.payload_len == 0 && !fin {
            return true;
        }
        let skip = tcp.seq_from_tap.wrapping_sub(seg.seq_number) as usize;
        if tcp.fin_from_tap || skip > seg.payload_len {
            // Old or out of order: say where we are.
            self.tcp_send(flow, F::ACK, &[], out);
            return true;
        }
        if skip == seg.payload_len && !fin {
            self.tcp_send(flow, F::ACK, &[], out);
            return true;
        }
        // Where the new bytes are in the frame: after the Ethernet, IP and TCP headers.
        let tcp_header = ip.payload().len() - seg.payload_len;
        let at = HEADER_LEN + ip.transport + tcp_header + skip;
        let data = at..at + seg.payload_len - skip;
        out.push(Output::TcpWrite { flow, data, fin });
        true
    }

    /// A segment for which there is no flow: a SYN opens one, anything else is reset.
    fn tcp_new(
        &mut self,
        now: Instant,
        guest_mac: MacAddr,
        key: FlowKey,
        seg: &tcp_wire::Repr,
        out: &mut Vec<Output>,
    ) {
        let flags = seg.flags.0;
        let route = self.route(guest_mac, key.remote.ip(), key.guest.ip());
        if flags & F::RST != 0 {
            return;
        }
        if flags & (F::SYN | F::ACK) != F::SYN {
            self.counters.ignored += 1;
            let (seq, ack, flags) = if flags & F::ACK != 0 {
                (seg.ack_number, 0, F::RST)
            } else {
                let len = seg.payload_len as u32 + u32::from(flags & F::FIN != 0);
                (0, seg.seq_number.wrapping_add(len), F::RST | F::ACK)
            };
            self.tcp_reply(&route, key, seq, ack, flags, &[], None, out);
            return;
        }
        let to_gateway = self.config.is_gateway(key.remote.ip());
        if !to_gateway && self.refused(key.remote.ip()).is_some() {
            self.count_refused("TCP", key.guest.ip(), key.remote);
            let ack = seg.seq_number.wrapping_add(1);
            self.tcp_reply(&route, key, 0, ack, F::RST | F::ACK, &[], None, out);
            return;
        }
        let mut to = key.remote;
        if to_gateway {
            match self.dns_tcp_upstream() {
                // DNS over TCP (after a truncated answer) goes to the upstream.
                Some(upstream) if to.port() == 53 => to = SocketAddr::V4(upstream),
                _ if self.config.host_loopback => to.set_ip(super::loopback(to.ip())),
                _ => {
                    let ack = seg.seq_number.wrapping_add(1);
                    self.tcp_reply(&route, key, 0, ack, F::RST | F::ACK, &[], None, out);
                    return;
                }
            }
        }
        let isn = self.isn.isn(now, key.remote, key.guest);
        let mut tcp = Tcp::new(false, isn, now);
        tcp.peer_syn(seg);
        let Some(flow) = self.flow_for(now, key, guest_mac, to, out) else {
            // At the flow limit: refused as a host with no room refuses, at once.
            let ack = seg.seq_number.wrapping_add(1);
            self.tcp_reply(&route, key, 0, ack, F::RST | F::ACK, &[], None, out);
            return;
        };
        self.counters.to_host += 1;
        if let Some(f) = self.flows.get_mut(&flow) {
            f.tcp = Some(tcp);
        }
    }

    /// The shell accepted a connection from `peer` for a port forward to `guest` (of
    /// either family, `peer`'s too): the device opens a connection to the guest (SYN,
    /// after ARP or neighbour solicitation if the guest's MAC is not known yet). The
    /// shell's socket is that flow's; `None`: refuse it (limit, or a connection with the
    /// same addresses exists).
    pub fn tcp_accepted(
        &mut self,
        now: Instant,
        guest: SocketAddr,
        peer: SocketAddr,
        out: &mut Vec<Output>,
    ) -> Option<FlowId> {
        let remote = self.seen_by_guests(peer, guest.ip());
        let key = FlowKey {
            proto: Proto::Tcp,
            guest,
            remote,
        };
        if self.by_key.contains_key(&key) || !self.room_for_flow(key) {
            return None;
        }
        let isn = self.isn.isn(now, remote, guest);
        let guest_mac = self.neighbours.get(&guest.ip()).copied();
        let id = self.next_flow.next();
        self.flows.insert(
            id,
            Flow {
                key,
                guest_mac: guest_mac.unwrap_or(MacAddr([0; 6])),
                last_used: now,
                tcp: Some(Tcp::new(true, isn, now)),
                forwarded: false,
            },
        );
        self.by_key.insert(key, id);
        self.counters.flows_opened += 1;
        let expiry = now + self.config.tcp_timeout;
        self.next_sweep = Some(self.next_sweep.map_or(expiry, |t| t.min(expiry)));
        match guest_mac {
            Some(_) => self.tcp_syn(id, out),
            None => self.solicit(guest.ip(), out),
        }
        Some(id)
    }

    /// Our SYN to the guest of an inbound flow.
    fn tcp_syn(&mut self, flow: FlowId, out: &mut Vec<Output>) {
        let Some(f) = self.flows.get(&flow) else {
            return;
        };
        let tcp = f.tcp.as_ref().expect("TCP");
        let route = self.route(f.guest_mac, f.key.remote.ip(), f.key.guest.ip());
        let mss = self.our_mss(&route);
        let (key, isn) = (f.key, tcp.isn);
        let opts = Some((mss, Some(WINDOW_SCALE)));
        self.tcp_reply(&route, key, isn, 0, F::SYN, &[], opts, out);
    }

    /// The MSS we announce on `route`: the vnet's MTU less the IP and TCP headers.
    fn our_mss(&self, route: &Route) -> u16 {
        let headers = route.tcp_data_offset() - HEADER_LEN;
        u16::try_from(self.config.mtu.saturating_sub(headers)).unwrap_or(u16::MAX)
    }

    /// An ARP reply (or any IPv6 packet of a new neighbour) told us where `ip` is:
    /// inbound flows waiting for it send their SYN.
    pub(super) fn tcp_neighbour_known(&mut self, _now: Instant, ip: IpAddr, out: &mut Vec<Output>) {
        let Some(&mac) = self.neighbours.get(&ip) else {
            return;
        };
        let waiting: Vec<FlowId> = self
            .flows
            .iter()
            .filter(|(_, f)| {
                f.key.guest.ip() == ip
                    && f.guest_mac == MacAddr([0; 6])
                    && f.tcp.as_ref().is_some_and(|t| t.inbound && !t.established)
            })
            .map(|(&id, _)| id)
            .collect();
        for flow in waiting {
            if let Some(f) = self.flows.get_mut(&flow) {
                f.guest_mac = mac;
            }
            self.tcp_syn(flow, out);
        }
    }

    /// The shell's connect finished: the guest gets its SYN-ACK.
    pub fn tcp_connected(&mut self, now: Instant, flow: FlowId, out: &mut Vec<Output>) {
        let Some(tcp) = self.flows.get_mut(&flow).and_then(|f| f.tcp.as_mut()) else {
            return;
        };
        if tcp.established {
            return;
        }
        tcp.established = true;
        tcp.ack_due = None;
        let _ = now;
        self.tcp_syn_ack(flow, out);
    }

    fn tcp_syn_ack(&mut self, flow: FlowId, out: &mut Vec<Output>) {
        let Some(f) = self.flows.get(&flow) else {
            return;
        };
        let tcp = f.tcp.as_ref().expect("TCP");
        let route = self.route(f.guest_mac, f.key.remote.ip(), f.key.guest.ip());
        let mss = self.our_mss(&route);
        let (key, isn, ack) = (f.key, tcp.isn, tcp.seq_from_tap);
        let wscale = (tcp.ws_to_tap > 0).then_some(tcp.ws_to_tap);
        let opts = Some((mss, wscale));
        self.tcp_reply(&route, key, isn, ack, F::SYN | F::ACK, &[], opts, out);
    }

    /// The shell took `written` bytes of a [`Output::TcpWrite`] (and, if it carried FIN
    /// and all of it was taken, will shut the socket's write side): ACK that much, and
    /// advertise `window`, the room the shell has left for this flow.
    pub fn tcp_written(
        &mut self,
        flow: FlowId,
        written: usize,
        fin_done: bool,
        window: u32,
        out: &mut Vec<Output>,
    ) {
        let Some(tcp) = self.flows.get_mut(&flow).and_then(|f| f.tcp.as_mut()) else {
            return;
        };
        tcp.wnd_to_tap = window;
        tcp.seq_from_tap = tcp.seq_from_tap.wrapping_add(written as u32);
        if fin_done {
            tcp.fin_from_tap = true;
            tcp.seq_from_tap = tcp.seq_from_tap.wrapping_add(1);
        }
        let finished = tcp.finished();
        self.tcp_send(flow, F::ACK, &[], out);
        if finished {
            self.close_flow(flow, out);
        }
    }

    /// The shell's room for this flow's guest data changed (its socket drained): a
    /// window update if the guest may have been holding back.
    pub fn tcp_window(&mut self, flow: FlowId, window: u32, out: &mut Vec<Output>) {
        let Some(tcp) = self.flows.get_mut(&flow).and_then(|f| f.tcp.as_mut()) else {
            return;
        };
        let before = tcp.wnd_to_tap;
        tcp.wnd_to_tap = window;
        if window > before && before < WINDOW / 2 {
            self.tcp_send(flow, F::ACK, &[], out);
        }
    }

    /// Where the shell should peek in the flow's socket, or `None` when the flow is not
    /// sending (not established, or FIN sent) or the guest's window is full.
    pub fn tcp_read_window(&self, flow: FlowId) -> Option<ReadWindow> {
        let f = self.flows.get(&flow)?;
        let tcp = f.tcp.as_ref()?;
        if !tcp.established || tcp.fin_to_tap {
            return None;
        }
        let offset = tcp.in_flight();
        let len = tcp.wnd_from_tap.min(MAX_IN_FLIGHT).saturating_sub(offset);
        let data_offset = data_offset(f.key.guest.ip());
        let mss = tcp.segment_size(self.config.mtu, data_offset - HEADER_LEN);
        (len > 0 || offset == 0).then_some(ReadWindow {
            offset: offset as usize,
            len: len as usize,
            chunk: TCP_MAX_DATA / mss * mss,
            data_offset,
        })
    }

    /// New bytes the shell peeked from the socket (after the in-flight ones) straight
    /// into `frame` at [`ReadWindow::data_offset`], at most a [`ReadWindow::chunk`]: the device
    /// writes the headers in front, and the shell sends the frame with the returned
    /// offload metadata (a partial checksum; TSO for more than one segment). With `eof`
    /// (and no data) the socket has reached its end: a FIN once all data is ACKed.
    pub fn tcp_data(
        &mut self,
        now: Instant,
        flow: FlowId,
        frame: &mut [u8],
        eof: bool,
        out: &mut Vec<Output>,
    ) -> Option<VirtioNetHdr> {
        let f = self.flows.get_mut(&flow)?;
        let len = frame.len().checked_sub(data_offset(f.key.guest.ip()))?;
        if len > TCP_MAX_DATA {
            return None;
        }
        f.last_used = now;
        let tcp = f.tcp.as_mut()?;
        let seq = tcp.seq_to_tap;
        tcp.seq_to_tap = tcp.seq_to_tap.wrapping_add(len as u32);
        if tcp.seq_to_tap.wrapping_sub(tcp.seq_high) as i32 > 0 {
            tcp.seq_high = tcp.seq_to_tap;
        }
        let fin = eof && !tcp.fin_to_tap && tcp.in_flight() == 0 && len == 0;
        if eof {
            tcp.sock_eof = true;
        }
        if fin {
            tcp.fin_to_tap = true;
            tcp.seq_to_tap = tcp.seq_to_tap.wrapping_add(1);
            tcp.seq_high = tcp.seq_to_tap;
        }
        if len > 0 || fin {
            tcp.ack_due = tcp.ack_due.or(Some(now + ACK_TIMEOUT));
        }
        let h = tcp_wire::Repr {
            src_port: f.key.remote.port(),
            dst_port: f.key.guest.port(),
            seq_number: seq,
            ack_number: tcp.seq_from_tap,
            flags: F(F::ACK | F::PSH),
            window_len: tcp.window_field(false),
            ..tcp_wire::Repr::default()
        };
        let (key, mac) = (f.key, f.guest_mac);
        let headers = data_offset(key.guest.ip()) - HEADER_LEN;
        let mss = tcp.segment_size(self.config.mtu, headers);
        let route = self.route(mac, key.remote.ip(), key.guest.ip());
        if fin {
            let ack = h.ack_number;
            self.tcp_reply(&route, key, seq, ack, F::FIN | F::ACK, &[], None, out);
        }
        if len == 0 {
            return None;
        }
        self.counters.from_host += len.div_ceil(mss) as u64;
        self.ip_ident = self.ip_ident.wrapping_add(1);
        frames::tcp_headers_in_place(frame, &route, &h, self.ip_ident as u16);
        Some(frames::tcp_offload(&route, len, mss))
    }

    /// Go-back-N for flows whose ACK is overdue; resets after [`MAX_RETRANS`].
    pub(super) fn tcp_timers(&mut self, now: Instant, out: &mut Vec<Output>) {
        let due: Vec<FlowId> = self
            .flows
            .iter()
            .filter(|(_, f)| {
                f.tcp
                    .as_ref()
                    .and_then(Tcp::deadline)
                    .is_some_and(|t| t <= now)
            })
            .map(|(&id, _)| id)
            .collect();
        for flow in due {
            let tcp = self
                .flows
                .get_mut(&flow)
                .and_then(|f| f.tcp.as_mut())
                .expect("listed");
            tcp.retrans += 1;
            if tcp.retrans > MAX_RETRANS {
                self.tcp_reset(flow, out);
                continue;
            }
            tcp.ack_due = Some(now + ACK_TIMEOUT);
            if tcp.inbound && !tcp.established {
                // Our SYN (or the ARP before it) went unanswered: again.
                let f = &self.flows[&flow];
                if f.guest_mac == MacAddr([0; 6]) {
                    let ip = f.key.guest.ip();
                    self.solicit(ip, out);
                } else {
                    self.tcp_syn(flow, out);
                }
                continue;
            }
            tcp.go_back();
            out.push(Output::TcpRead { flow });
        }
    }

    /// The socket failed: the guest gets RST and the flow ends.
    pub(super) fn tcp_reset(&mut self, flow: FlowId, out: &mut Vec<Output>) {
        if let Some(f) = self
            .flows
            .get(&flow)
            .filter(|f| f.guest_mac != MacAddr([0; 6]))
        {
            let tcp = f.tcp.as_ref().expect("TCP");
            let route = self.route(f.guest_mac, f.key.remote.ip(), f.key.guest.ip());
            let (key, seq, ack) = (f.key, tcp.seq_to_tap, tcp.seq_from_tap);
            self.tcp_reply(&route, key, seq, ack, F::RST | F::ACK, &[], None, out);
        }
        self.close_flow(flow, out);
    }

    /// A bare segment with the flow's current sequence numbers.
    fn tcp_send(&mut self, flow: FlowId, flags: u8, data: &[u8], out: &mut Vec<Output>) {
        let Some(f) = self.flows.get(&flow) else {
            return;
        };
        let tcp = f.tcp.as_ref().expect("TCP");
        let route = self.route(f.guest_mac, f.key.remote.ip(), f.key.guest.ip());
        let (key, seq, ack) = (f.key, tcp.seq_to_tap, tcp.seq_from_tap);
        self.tcp_reply(&route, key, seq, ack, flags, data, None, out);
    }

    /// A segment for `key` with a full checksum; `opts`: a SYN's MSS and window scale.
    #[allow(clippy::too_many_arguments)]
    fn tcp_reply(
        &mut self,
        route: &Route,
        key: FlowKey,
        seq: u32,
        ack: u32,
        flags: u8,
        data: &[u8],
        opts: Option<(u16, Option<u8>)>,
        out: &mut Vec<Output>,
    ) {
        let window = self
            .by_key
            .get(&key)
            .and_then(|id| self.flows.get(id))
            .and_then(|f| f.tcp.as_ref())
            .map_or(u16::MAX, |t| t.window_field(flags & F::SYN != 0));
        let h = tcp_wire::Repr {
            src_port: key.remote.port(),
            dst_port: key.guest.port(),
            seq_number: seq,
            ack_number: ack,
            flags: F(flags),
            window_len: window,
            max_seg_size: opts.map(|(mss, _)| mss),
            window_scale: opts.and_then(|(_, ws)| ws),
            ..tcp_wire::Repr::default()
        };
        let seg = frames::tcp_segment(route, &h, data);
        self.push_ip(route, IpProtocol::TCP, &seg, out);
    }

    /// Forgets a flow and tells the shell to close its socket.
    pub(super) fn close_flow(&mut self, flow: FlowId, out: &mut Vec<Output>) {
        if self.forget(flow) {
            out.push(Output::Close { flow });
        }
    }
}

/// A guest's segment: header lengths right and, unless `checksum_offloaded`, its
/// checksum. Options are read from SYNs only (the bulk path skips them) and leniently:
/// a malformed one ends them, it does not refuse the segment.
fn read_segment(ip: &GuestPacket<'_>, checksum_offloaded: bool) -> Option<tcp_wire::Repr> {
    let p = tcp_wire::Packet::new_checked(ip.payload()).ok()?;
    if !checksum_offloaded && !p.verify_checksum(&ip.src, &ip.dst) {
        return None;
    }
    let mut seg = tcp_wire::Repr {
        src_port: p.src_port(),
        dst_port: p.dst_port(),
        seq_number: p.seq_number(),
        ack_number: p.ack_number(),
        flags: p.flags(),
        window_len: p.window_len(),
        urgent_at: p.urgent_at(),
        payload_len: p.payload().len(),
        ..tcp_wire::Repr::default()
    };
    if seg.flags.has(F::SYN) {
        for option in tcp_wire::Options::new(p.options()) {
            match option {
                Ok(TcpOption::MaxSegmentSize(mss)) => seg.max_seg_size = Some(mss),
                Ok(TcpOption::WindowScale(shift)) => seg.window_scale = Some(shift),
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
    Some(seg)
}

/// Where the data of a TCP frame to `guest` starts (see [`ReadWindow::data_offset`]).
fn data_offset(guest: IpAddr) -> usize {
    let ip = match guest {
        IpAddr::V4(_) => vnet_core::wire::ipv4::HEADER_LEN,
        IpAddr::V6(_) => vnet_core::wire::ipv6::HEADER_LEN,
    };
    HEADER_LEN + ip + tcp_wire::HEADER_LEN
}

impl Flow {
    pub(super) fn tcp_deadline(&self) -> Option<Instant> {
        self.tcp.as_ref().and_then(Tcp::deadline)
    }
}
