//! One data-plane thread: its epoll loop over the vnets placed on it.
//!
//! # Theory of operation
//!
//! A [`Thread`] owns everything of its vnets: their switches, sockets, ports, queues
//! and services, and the host NICs' uplink sockets they share. Nothing else touches
//! them, so the frame path takes no lock. Each turn of [`Thread::run`]:
//!
//! 1. **Timers**: built-in services whose deadline passed tick (their output is then
//!    read like a client's); the next deadline, or the next time a port's rate limit
//!    or impairment lets a held frame go, bounds the poll's sleep.
//! 2. **Poll**: `epoll_wait` for readiness. It does not sleep while a list below has
//!    work (or for `--busy-poll-us` after traffic); it sleeps at most [`RETRY`] while a
//!    port waits for a retry, else until the next timer or [`AGING_INTERVAL`].
//!    Readiness only *lists* ports: a readable port goes on the receive list, a
//!    writable one on the transmit list, each at most once (`Vnet::list_rx`).
//! 3. **Held frames** whose time has come, if the poll woke for them, go on (into the
//!    switch, or into their port's egress queue: `Vnet::release_held`).
//! 4. **Receive** ([`Thread::turn`] from here on, the time of the turn as an
//!    argument): every shared socket listed (a NIC's, a VXLAN tunnel's) gives up to
//!    64 frames, each delivered to its vnet's uplink port, which joins the receive
//!    list; every port on the receive list gives up to `RX_BUDGET` (64) messages
//!    through `Backend::recv`;
//!    the shared dgram socket two `recvmmsg` batches of 32, delivered to their peers'
//!    ports and read from them at once. Each frame goes through the switch straight
//!    into the egress queue of each destination, which is then listed for transmit. A port
//!    with more input than its budget is listed again for the next turn, behind the
//!    others: one busy port cannot starve the rest.
//! 5. **Transmit**: every listed port offers its queued frames to its client in
//!    batches of `TX_BATCH` (32) until the queue is empty or the client is full. A
//!    full client with its own fd waits for epoll to say it drained; one without (a
//!    dgram peer) goes on the retry list and is offered again after [`RETRY`]. A
//!    queue that is full drops the next frame (counted `QueueFull`); nobody waits.
//! 6. **Commands** from the control plane, when its waker fired ([`commands`]): they
//!    run between two turns, so they see no frame half-forwarded.
//! 7. **Between services**: DHCP names go to the NAT's DNS; once a second the MAC
//!    tables age.
//!
//! Lists hold `(vnet key, port id)` pairs. A port removed meanwhile is skipped when its
//! turn comes (port ids are never reused), so closing a port never searches the lists;
//! a removed vnet is filtered out of them, since its slab key may be reused. Each list
//! has a twin: the turn works through one while the next turn's fills up, and the two
//! swap, so none is reallocated.
//!
//! Making and removing vnets, ports and services is in [`lifecycle`]; bridging to host
//! NICs in [`uplinks`]. The `tests` drive [`Thread::turn`] through the `harness`: a
//! virtual clock and scripted ports, no root.

mod commands;
#[cfg(test)]
mod harness;
mod lifecycle;
#[cfg(test)]
mod mirror_tests;
#[cfg(test)]
mod shaping_tests;
#[cfg(test)]
mod tests;
mod uplinks;
mod vxlan;

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};
use slab::Slab;
use tracing::error;
use vnet_core::switch::PortId;

use super::directory::{self, Directory};
use super::limits::{Limits, Refusals, UidPorts};
use super::vnet::{PassEnd, Timer, Vnet};
use super::Command;
use crate::backend::uplink::{Polled, SharedSocket, UplinkSocket};
use crate::backend::vxlan::TunnelSocket;

pub(super) const WAKER: Token = Token(usize::MAX);

/// Retry interval for ports whose client cannot take frames and whose socket cannot
/// tell us when it can (datagram peers).
pub(super) const RETRY: Duration = Duration::from_millis(2);
const AGING_INTERVAL: Duration = Duration::from_secs(1);
/// Frames one shared socket (a NIC's uplink socket, a VXLAN tunnel) may bring in per turn.
const SHARED_BUDGET: usize = 64;

/// A vnet's key in its thread's slab.
pub(super) type VnetKey = usize;

/// What a poll token stands for.
#[derive(Debug, Clone, Copy)]
enum Target {
    StreamListener(VnetKey),
    Dgram(VnetKey),
    ApiListener(VnetKey),
    VdeListener(VnetKey),
    Port(VnetKey, PortId),
    /// A host NIC's AF_PACKET socket, shared by the vnets bridged to it.
    Uplink(usize),
    /// A VXLAN socket (local address and port), shared by the vnets on it.
    Tunnel(usize),
}

impl Target {
    fn vnet(&self) -> VnetKey {
        match *self {
            Target::StreamListener(n)
            | Target::Dgram(n)
            | Target::ApiListener(n)
            | Target::VdeListener(n)
            | Target::Port(n, _) => n,
            // Belongs to no single vnet: never equals a vnet's key.
            Target::Uplink(_) | Target::Tunnel(_) => VnetKey::MAX,
        }
    }
}

pub(super) struct Thread {
    poll: Poll,
    /// This thread's index, for `NetworkInfo::thread`.
    index: usize,
    directory: Arc<Mutex<Directory>>,
    run_dir: PathBuf,
    state_dir: PathBuf,
    commands: mpsc::Receiver<Command>,
    vnets: Slab<Vnet>,
    names: HashMap<String, VnetKey>,
    targets: Slab<Target>,
    /// Ports (and dgram sockets, as port `None`) to read this turn.
    rx_list: Vec<(VnetKey, Option<PortId>)>,
    /// The list being worked through while the next turn's fills up.
    rx_work: Vec<(VnetKey, Option<PortId>)>,
    /// Ports with frames queued or output pending.
    tx_list: Vec<(VnetKey, PortId)>,
    tx_work: Vec<(VnetKey, PortId)>,
    /// Ports without an fd whose client was full: retried after [`RETRY`].
    retry_list: Vec<(VnetKey, PortId)>,
    /// Ports that got frames during one pass (reused: no allocation per frame).
    touched: Vec<PortId>,
    /// Ports whose client is a built-in service (they have timers).
    services: Vec<(VnetKey, PortId)>,
    /// Host NICs with vnets bridged to them, one AF_PACKET socket each.
    uplinks: Slab<UplinkSocket>,
    /// Uplink sockets to read this turn.
    uplink_rx: Vec<usize>,
    /// VXLAN sockets, one per local address and port.
    tunnels: Slab<TunnelSocket>,
    /// VXLAN sockets to read this turn.
    tunnel_rx: Vec<usize>,
    last_aging: Instant,
    /// What clients may make this thread hold, and the count of refusals.
    limits: Limits,
    refusals: Arc<Refusals>,
    /// The client ports each uid holds, shared by all threads (`[limits] ports_per_uid`).
    uid_ports: Arc<UidPorts>,
}

impl Thread {
    pub fn new(
        poll: Poll,
        index: usize,
        run_dir: PathBuf,
        state_dir: PathBuf,
        commands: mpsc::Receiver<Command>,
        directory: Arc<Mutex<Directory>>,
    ) -> Self {
        Thread {
            poll,
            index,
            directory,
            run_dir,
            state_dir,
            commands,
            vnets: Slab::new(),
            names: HashMap::new(),
            targets: Slab::new(),
            rx_list: Vec::new(),
            rx_work: Vec::new(),
            tx_list: Vec::new(),
            tx_work: Vec::new(),
            retry_list: Vec::new(),
            touched: Vec::new(),
            services: Vec::new(),
            uplinks: Slab::new(),
            uplink_rx: Vec::new(),
            tunnels: Slab::new(),
            tunnel_rx: Vec::new(),
            last_aging: Instant::now(),
            limits: Limits::default(),
            refusals: Arc::default(),
            uid_ports: Arc::default(),
        }
    }

    /// Bounds what clients make with `limits`, counting refusals in `refusals`.
    pub fn with_limits(mut self, limits: Limits, refusals: Arc<Refusals>) -> Self {
        self.limits = limits;
        self.refusals = refusals;
        self
    }

    /// Counts each uid's client ports in `uid_ports`, which all threads share.
    pub fn with_uid_ports(mut self, uid_ports: Arc<UidPorts>) -> Self {
        self.uid_ports = uid_ports;
        self
    }

    /// Runs until shutdown; `busy_poll`: see [`super::Tuning::busy_poll`].
    pub fn run(mut self, busy_poll: Duration) {
        let mut events = Events::with_capacity(1024);
        let mut last_traffic = Instant::now()
            .checked_sub(busy_poll)
            .unwrap_or_else(Instant::now);
        loop {
            let held = self.held_deadline();
            let next_timer = [self.tick_services(), held].into_iter().flatten().min();
            let timeout = if !self.rx_list.is_empty()
                || !self.tx_list.is_empty()
                || !self.uplink_rx.is_empty()
                || !self.tunnel_rx.is_empty()
                || (!busy_poll.is_zero() && last_traffic.elapsed() < busy_poll)
            {
                Duration::ZERO
            } else if !self.retry_list.is_empty() {
                RETRY
            } else {
                next_timer.map_or(AGING_INTERVAL, |t| {
                    t.saturating_duration_since(Instant::now())
                        .min(AGING_INTERVAL)
                })
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                error!("poll failed, data plane stops: {e}");
                return;
            }
            let mut woken = false;
            for ev in events.iter() {
                if ev.token() == WAKER {
                    woken = true;
                    continue;
                }
                let Some(&target) = self.targets.get(ev.token().0) else {
                    continue;
                };
                self.on_ready(target, ev);
            }
            let now = Instant::now();
            if !busy_poll.is_zero() && (!self.rx_list.is_empty() || !self.uplink_rx.is_empty()) {
                last_traffic = now;
            }
            if timeout == RETRY {
                self.retry_blocked();
            }
            if held.is_some_and(|due| due <= now) {
                self.release_held(now);
            }
            if self.turn(now, woken) {
                return;
            }
        }
    }

    /// Lists what an epoll event says is ready (listeners accept at once).
    fn on_ready(&mut self, target: Target, ev: &mio::event::Event) {
        match target {
            Target::StreamListener(key) => self.accept(key, super::vnet::Listener::Stream),
            Target::ApiListener(key) => self.accept(key, super::vnet::Listener::Api),
            Target::VdeListener(key) => self.accept(key, super::vnet::Listener::Vde),
            Target::Dgram(key) => {
                if ev.is_readable() {
                    self.rx_list.push((key, None));
                }
                if ev.is_writable() {
                    self.tx_list
                        .extend(self.retry_list.drain(..).filter(|(n, _)| *n == key));
                }
            }
            Target::Uplink(u) => {
                if !self.uplink_rx.contains(&u) {
                    self.uplink_rx.push(u);
                }
            }
            Target::Tunnel(t) => {
                if !self.tunnel_rx.contains(&t) {
                    self.tunnel_rx.push(t);
                }
            }
            Target::Port(key, id) => {
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    self.schedule_rx(key, id);
                }
                if ev.is_writable() {
                    self.schedule_tx(key, id);
                }
            }
        }
    }

    /// Offers the ports on the retry list their frames again: [`RETRY`] has passed.
    fn retry_blocked(&mut self) {
        self.tx_list.append(&mut self.retry_list);
    }

    /// The turn's work once readiness is known, at time `now`: receive, transmit,
    /// obey commands (if `woken`), age. `true` means shut down.
    fn turn(&mut self, now: Instant, woken: bool) -> bool {
        receive_shared(
            now,
            &mut self.uplink_rx,
            &mut self.uplinks,
            &mut self.vnets,
            &mut self.rx_list,
        );
        receive_shared(
            now,
            &mut self.tunnel_rx,
            &mut self.tunnels,
            &mut self.vnets,
            &mut self.rx_list,
        );
        self.receive_all(now);
        self.forget_moved_in();
        self.transmit_all();
        if woken && self.obey_commands(now) {
            return true;
        }
        for (_, vnet) in self.vnets.iter_mut() {
            vnet.share_dhcp_names();
            vnet.share_dhcp_bindings();
        }
        if now.duration_since(self.last_aging) >= AGING_INTERVAL {
            self.last_aging = now;
            let mut freed = 0;
            for (_, vnet) in self.vnets.iter_mut() {
                freed += vnet.age_macs(now);
                vnet.count_refusals();
            }
            if freed >= crate::sys::heap::WORTH_TRIMMING {
                crate::sys::heap::give_back();
            }
            self.age_tunnels(now);
        }
        false
    }

    fn schedule_rx(&mut self, key: VnetKey, id: PortId) {
        if self.vnets.get_mut(key).is_some_and(|v| v.list_rx(id)) {
            self.rx_list.push((key, Some(id)));
        }
    }

    fn schedule_tx(&mut self, key: VnetKey, id: PortId) {
        if self.vnets.get_mut(key).is_some_and(|v| v.list_tx(id)) {
            self.tx_list.push((key, id));
        }
    }

    /// Lists every port `touched` names for transmit, and empties it.
    fn schedule_touched(&mut self, key: VnetKey) {
        for i in 0..self.touched.len() {
            let dst = self.touched[i];
            self.schedule_tx(key, dst);
        }
        self.touched.clear();
    }

    fn receive_all(&mut self, now: Instant) {
        let mut list = std::mem::take(&mut self.rx_work);
        std::mem::swap(&mut list, &mut self.rx_list);
        for &(key, port) in &list {
            let Some(vnet) = self.vnets.get_mut(key) else {
                continue;
            };
            let end = match port {
                None => vnet.receive_dgram(now, &mut self.touched),
                Some(id) => {
                    if !vnet.unlist_rx(id) {
                        continue;
                    }
                    vnet.receive(now, id, &mut self.touched)
                }
            };
            self.schedule_touched(key);
            match (end, port) {
                (PassEnd::More, None) => self.rx_list.push((key, None)),
                (PassEnd::More, Some(id)) => self.schedule_rx(key, id),
                (PassEnd::Closed(why), Some(id)) => self.close_port(key, id, &why),
                _ => {}
            }
        }
        list.clear();
        self.rx_work = list;
    }

    fn transmit_all(&mut self) {
        let mut list = std::mem::take(&mut self.tx_work);
        std::mem::swap(&mut list, &mut self.tx_list);
        for &(key, id) in &list {
            let Some(vnet) = self.vnets.get_mut(key) else {
                continue;
            };
            if !vnet.unlist_tx(id) {
                continue;
            }
            match vnet.transmit(id) {
                PassEnd::Closed(why) => self.close_port(key, id, &why),
                // Ports with their own fd hear from epoll when they drain.
                PassEnd::Blocked if !vnet.is_watched(id) => self.retry_list.push((key, id)),
                _ => {}
            }
            if self.vnets.get(key).is_some_and(|v| v.has_own_input(id)) {
                self.schedule_rx(key, id);
            }
        }
        list.clear();
        self.tx_work = list;
    }

    /// When frames that ports' rate limits and impairment hold are next due.
    fn held_deadline(&self) -> Option<Instant> {
        self.vnets
            .iter()
            .filter_map(|(_, v)| v.held_deadline())
            .min()
    }

    /// Lets out the held frames whose time has come and lists the ports they reach
    /// (before a turn whose poll woke for them).
    fn release_held(&mut self, now: Instant) {
        for (key, vnet) in self.vnets.iter_mut() {
            if !vnet.holds_due(now) {
                continue;
            }
            vnet.release_held(now, &mut self.touched);
            for id in self.touched.drain(..) {
                if vnet.list_tx(id) {
                    self.tx_list.push((key, id));
                }
            }
        }
    }

    /// Runs the timers of built-in services that are due; returns the next deadline.
    fn tick_services(&mut self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut due = Vec::new();
        self.services.retain(|&(key, id)| {
            let Some(timer) = self.vnets.get_mut(key).and_then(|v| v.run_timer(id)) else {
                return false;
            };
            match timer {
                Timer::Ran => due.push((key, id)),
                Timer::Later(t) => next = Some(next.map_or(t, |n| n.min(t))),
                Timer::Idle => {}
            }
            true
        });
        for (key, id) in due {
            self.schedule_rx(key, id);
        }
        next
    }

    fn directory(&self) -> MutexGuard<'_, Directory> {
        directory::lock(&self.directory)
    }
}

/// Reads the shared sockets on `listed` (NICs of uplinks, VXLAN tunnels), at most
/// [`SHARED_BUDGET`] frames each, and delivers each frame to its vnet's port, which is listed
/// for receive (its recv hands the frame to the switch in `receive_all` later this
/// turn). A socket with more to read stays listed, behind the others.
fn receive_shared<S: SharedSocket>(
    now: Instant,
    listed: &mut Vec<usize>,
    sockets: &mut Slab<S>,
    vnets: &mut Slab<Vnet>,
    rx_list: &mut Vec<(VnetKey, Option<PortId>)>,
) {
    for n in std::mem::take(listed) {
        let mut more = true;
        for _ in 0..SHARED_BUDGET {
            let Some(sock) = sockets.get_mut(n) else {
                more = false;
                break;
            };
            match sock.next_frame(now) {
                Polled::WouldBlock => {
                    more = false;
                    break;
                }
                Polled::Skipped => continue,
                Polled::Frame(inc) => {
                    let (key, port) = (inc.net, inc.port);
                    let Some(vnet) = vnets.get_mut(key) else {
                        continue;
                    };
                    if vnet.deliver_uplink(port, inc) && vnet.list_rx(port) {
                        rx_list.push((key, Some(port)));
                    }
                }
            }
        }
        if more && !listed.contains(&n) {
            listed.push(n);
        }
    }
}
