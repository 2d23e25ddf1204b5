//! The IPv6 router side of a vnet (`vnet_ra::Router`): where it runs and with what.
//!
//! On a NAT vnet the NAT device is the router: the [`Router`] shares its port and MAC
//! (the NAT service offers it each frame first, [`offer`]), so the default route
//! guests learn leads to the device that will carry their traffic. Elsewhere (host-only
//! and isolated vnets with IPv6) it is a service port of its own, [`RaService`], with
//! router lifetime 0: guests get addresses, no default route. Either way the vnet holds
//! the same `Rc` for its reports.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use vnet_core::wire::offload::VirtioNetHdr;
use vnet_core::wire::MacAddr;
use vnet_model::NetworkSpec;
use vnet_ra::{Router, RouterConfig, Verdict};

use crate::backend::service::{Outgoing, Service};

/// The router's MAC on a vnet without NAT: stable per vnet name, distinct from the
/// DHCP server's and the NAT device's.
pub fn router_mac(net: &str) -> MacAddr {
    let mut mac = super::dhcp::server_mac(net);
    mac.0[2] = 0x72;
    mac
}

/// The router a vnet spec asks for with `mac`: `None` without IPv6, or without NAT
/// when advertisements are off (a NAT vnet's router still answers for its address).
pub fn config_for(spec: &NetworkSpec, mac: MacAddr) -> Option<RouterConfig> {
    let subnet = spec.subnet6_resolved()?;
    let ra = spec.ra_resolved();
    let gateway = spec.nat_gateway6();
    if ra.is_none() && gateway.is_none() {
        return None;
    }
    let ra = ra.unwrap_or_else(|| spec.ra.clone());
    Some(RouterConfig {
        mac,
        prefix: subnet.network(),
        address: gateway,
        advertise: ra.enabled,
        default_router: gateway.is_some(),
        slaac: ra.slaac,
        managed: ra.managed.unwrap_or(false),
        other: ra.other.unwrap_or(false),
        mtu: spec.mtu,
        dns: ra.dns,
        domains: ra.domains,
        interval: Duration::from_secs(ra.interval_secs),
    })
}

/// A router for `config`, its jitter seeded from the OS.
pub fn start(config: RouterConfig) -> Rc<RefCell<Router>> {
    let seed = getrandom::u64().unwrap_or(0x9e37_79b9_7f4a_7c15);
    Rc::new(RefCell::new(Router::new(config, Instant::now(), seed)))
}

/// Gives `frame` to `router`; `None` if it is not the router's, else whether it was
/// well formed (its answers pushed onto `out`).
pub fn offer(
    router: &RefCell<Router>,
    now: Instant,
    frame: &[u8],
    out: &mut Vec<Outgoing>,
) -> Option<bool> {
    let mut frames = Vec::new();
    let verdict = router.borrow_mut().receive(now, frame, &mut frames);
    out.extend(frames.into_iter().map(Outgoing::Bytes));
    match verdict {
        Verdict::NotMine => None,
        Verdict::Done => Some(true),
        Verdict::Malformed => Some(false),
    }
}

/// Runs `router`'s timers, pushing what it sends onto `out`.
pub fn poll(router: &RefCell<Router>, now: Instant, out: &mut Vec<Outgoing>) {
    let mut frames = Vec::new();
    router.borrow_mut().poll(now, &mut frames);
    out.extend(frames.into_iter().map(Outgoing::Bytes));
}

/// The router as a port of its own (vnets without NAT).
pub struct RaService {
    router: Rc<RefCell<Router>>,
}

impl RaService {
    pub fn new(router: Rc<RefCell<Router>>) -> Self {
        RaService { router }
    }
}

impl Service for RaService {
    fn description(&self) -> String {
        let r = self.router.borrow();
        format!("ra {}/64 ({})", r.config().prefix, r.link_local())
    }

    fn receive(&mut self, frame: &[u8], _: &VirtioNetHdr, out: &mut Vec<Outgoing>) -> bool {
        offer(&self.router, Instant::now(), frame, out).unwrap_or(true)
    }

    fn poll(&mut self, now: Instant, out: &mut Vec<Outgoing>) {
        poll(&self.router, now, out);
    }

    fn deadline(&self) -> Option<Instant> {
        self.router.borrow().poll_at()
    }
}
