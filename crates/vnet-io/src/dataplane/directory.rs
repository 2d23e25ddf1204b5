//! What the data-plane threads must agree on: which thread runs each vnet, and which
//! vnet takes which traffic of a host NIC.
//!
//! Everything else (ports, sockets, queues, services) belongs to exactly one thread.
//! The directory sits behind a mutex that only the control plane and control commands
//! take, never the frame path.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use vnet_core::switch::PortId;
use vnet_model::NetworkSpec;

use super::error::{Conflict, ControlError, Missing};
use super::limits::{self, LimitHit, Refusals};
use crate::backend::uplink::Claim;
use crate::backend::vxlan::VxlanError;

pub(super) struct Directory {
    threads: usize,
    /// Each vnet's thread. A name is entered before its vnet exists, so two creations
    /// cannot race to one name.
    nets: HashMap<String, usize>,
    /// Who is bridged to which NIC, over all threads.
    claims: Vec<NicClaim>,
    /// Which vnet is which VNI on which VXLAN socket, over all threads.
    tunnels: Vec<TunnelClaim>,
    /// Host interfaces that ports hold (TAPs, host adapters, interface ports), over all
    /// threads: one interface is one port of one vnet, or an uplink, never two of these.
    held: Vec<HeldInterface>,
    /// At most this many vnets (`[limits] vnets`).
    max_vnets: usize,
    refusals: Arc<Refusals>,
}

struct HeldInterface {
    ifname: String,
    net: String,
    port: PortId,
    /// The port as a conflict names it, e.g. `port 3 (interface fc-tap0)`.
    what: String,
}

/// Vnet `net` is VNI `vni` on the VXLAN socket of `socket`.
struct TunnelClaim {
    socket: SocketAddr,
    net: String,
    vni: u32,
}

struct NicClaim {
    interface: String,
    net: String,
    claim: Claim,
}

impl Directory {
    pub fn new(threads: usize, max_vnets: usize, refusals: Arc<Refusals>) -> Self {
        Directory {
            threads,
            nets: HashMap::new(),
            claims: Vec::new(),
            tunnels: Vec::new(),
            held: Vec::new(),
            max_vnets,
            refusals,
        }
    }

    /// Reserves `spec`'s name and picks its thread: the one whose vnets already use the
    /// NIC it bridges to or the VXLAN socket it tunnels from (they then share one
    /// socket), else the one with fewest vnets.
    pub fn place(&mut self, spec: &NetworkSpec) -> Result<usize, ControlError> {
        if self.nets.contains_key(&spec.name) {
            return Err(Conflict::Vnet(spec.name.clone()).into());
        }
        if self.nets.len() >= self.max_vnets {
            let what = format!("vnetd runs its maximum of vnets, refused {:?}", spec.name);
            self.refusals.refuse(None, limits::VNETS, &what);
            return Err(LimitHit {
                what: "vnetd runs its maximum of vnets".into(),
                max: self.max_vnets,
                key: limits::VNETS,
            }
            .into());
        }
        let nic_mate = spec.uplink.as_ref().and_then(|u| match &u.vxlan {
            Some(vx) => self
                .tunnels
                .iter()
                .find(|c| c.socket == SocketAddr::new(vx.local, vx.port))
                .and_then(|c| self.nets.get(&c.net).copied()),
            None => self
                .claims
                .iter()
                .find(|c| c.interface == u.interface)
                .and_then(|c| self.nets.get(&c.net).copied()),
        });
        let thread = nic_mate.unwrap_or_else(|| {
            let mut load = vec![0usize; self.threads];
            for t in self.nets.values() {
                load[*t] += 1;
            }
            (0..self.threads).min_by_key(|t| load[*t]).unwrap_or(0)
        });
        self.nets.insert(spec.name.clone(), thread);
        Ok(thread)
    }

    /// Forgets a vnet that is gone (or was never made).
    pub fn remove(&mut self, name: &str) {
        self.nets.remove(name);
        self.release(name);
        self.held.retain(|h| h.net != name);
    }

    pub fn thread_of(&self, name: &str) -> Result<usize, ControlError> {
        self.nets.get(name).copied().ok_or_else(|| no_vnet(name))
    }

    /// Checks that vnet `net` may take `claim`'s traffic of `interface`: no other vnet,
    /// on any thread, takes any of it.
    pub fn check(&self, interface: &str, net: &str, claim: &Claim) -> Result<(), ControlError> {
        if let Some(h) = self.held.iter().find(|h| h.ifname == interface) {
            return Err(h.conflict().into());
        }
        match self
            .claims
            .iter()
            .find(|c| c.interface == interface && c.net != net && c.claim.overlaps(claim))
        {
            Some(c) => Err(Conflict::NicTraffic {
                interface: interface.into(),
                vnet: c.net.clone(),
            }
            .into()),
            None => Ok(()),
        }
    }

    /// Checks that vnet `net` may be VNI `vni` on the VXLAN socket of `socket`: no
    /// other vnet is that VNI there, and the socket, if open, is on `net`'s thread
    /// (one socket per address and port: two threads cannot both bind it).
    pub fn check_tunnel(&self, socket: SocketAddr, net: &str, vni: u32) -> Result<(), VxlanError> {
        let thread = self.nets.get(net);
        for c in self
            .tunnels
            .iter()
            .filter(|c| c.socket == socket && c.net != net)
        {
            if c.vni == vni {
                return Err(VxlanError::VniTaken {
                    vni,
                    addr: socket,
                    vnet: c.net.clone(),
                });
            }
            if self.nets.get(&c.net) != thread {
                return Err(VxlanError::OtherThread {
                    addr: socket,
                    vnet: c.net.clone(),
                });
            }
        }
        Ok(())
    }

    /// Records that vnet `net` is VNI `vni` on `socket`, after [`Directory::check_tunnel`].
    pub fn claim_tunnel(&mut self, socket: SocketAddr, net: &str, vni: u32) {
        self.release(net);
        self.tunnels.push(TunnelClaim {
            socket,
            net: net.to_string(),
            vni,
        });
    }

    /// Records vnet `net`'s (only) uplink, after [`Directory::check`].
    pub fn claim(&mut self, interface: &str, net: &str, claim: Claim) {
        self.release(net);
        self.claims.push(NicClaim {
            interface: interface.to_string(),
            net: net.to_string(),
            claim,
        });
    }

    /// Who uses host interface `ifname` already, as an uplink or through a port: the
    /// conflict that refuses one more user.
    pub fn user_of(&self, ifname: &str) -> Option<Conflict> {
        if let Some(h) = self.held.iter().find(|h| h.ifname == ifname) {
            return Some(h.conflict());
        }
        self.claims
            .iter()
            .find(|c| c.interface == ifname)
            .map(|c| Conflict::Interface {
                interface: ifname.into(),
                what: "the uplink".into(),
                vnet: c.net.clone(),
            })
    }

    /// Records that port `port` of vnet `net` holds host interface `ifname`.
    pub fn hold(&mut self, ifname: &str, net: &str, port: PortId, what: String) {
        self.held.push(HeldInterface {
            ifname: ifname.into(),
            net: net.into(),
            port,
            what,
        });
    }

    /// Port `port` of vnet `net` is gone.
    pub fn unhold(&mut self, net: &str, port: PortId) {
        self.held.retain(|h| !(h.net == net && h.port == port));
    }

    /// Vnet `net` is bridged or tunnelled no more.
    pub fn release(&mut self, net: &str) {
        self.claims.retain(|c| c.net != net);
        self.tunnels.retain(|c| c.net != net);
    }
}

impl HeldInterface {
    fn conflict(&self) -> Conflict {
        Conflict::Interface {
            interface: self.ifname.clone(),
            what: self.what.clone(),
            vnet: self.net.clone(),
        }
    }
}

/// Locks the shared directory. It holds plain maps, consistent after every method, so a
/// panic elsewhere while it was held leaves nothing half-done: poisoning is ignored.
pub(super) fn lock(directory: &Mutex<Directory>) -> MutexGuard<'_, Directory> {
    directory.lock().unwrap_or_else(|e| e.into_inner())
}

/// The answer for a name no thread runs.
pub(super) fn no_vnet(name: &str) -> ControlError {
    Missing::Vnet(name.into()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vnet_model::UplinkSpec;

    fn bridged(name: &str, nic: &str, vlan: Option<u16>) -> NetworkSpec {
        let mut s = NetworkSpec::named(name);
        s.uplink = Some(UplinkSpec {
            vxlan: None,
            interface: nic.into(),
            vlan,
            mode: Default::default(),
            vlans: Vec::new(),
        });
        s
    }

    #[test]
    fn spreads_vnets_and_keeps_names_unique() {
        let mut d = Directory::new(2, 64, Default::default());
        assert_eq!(d.place(&NetworkSpec::named("a")).unwrap(), 0);
        assert_eq!(d.place(&NetworkSpec::named("b")).unwrap(), 1);
        assert_eq!(d.place(&NetworkSpec::named("c")).unwrap(), 0);
        assert!(matches!(
            d.place(&NetworkSpec::named("b")),
            Err(ControlError::Conflict(Conflict::Vnet(_)))
        ));
        d.remove("a");
        d.remove("c");
        assert_eq!(d.place(&NetworkSpec::named("d")).unwrap(), 0);
        assert!(matches!(
            d.thread_of("a"),
            Err(ControlError::NotFound(Missing::Vnet(_)))
        ));
        assert_eq!(d.thread_of("b").unwrap(), 1);
    }

    #[test]
    fn vnets_on_one_vxlan_socket_share_its_thread_and_never_a_vni() {
        let mut d = Directory::new(2, 64, Default::default());
        let socket: SocketAddr = "192.0.2.1:4789".parse().unwrap();
        let tunnelled = |name: &str, vni| {
            let mut s = NetworkSpec::named(name);
            s.uplink = Some(UplinkSpec {
                vxlan: Some(vnet_model::VxlanSpec::new(vni, socket.ip())),
                ..UplinkSpec::default()
            });
            s
        };
        let t = d.place(&tunnelled("a", 100)).unwrap();
        d.claim_tunnel(socket, "a", 100);
        d.place(&NetworkSpec::named("filler")).unwrap();
        // b uses a's socket: it goes to a's thread, though the other has fewer vnets.
        assert_eq!(d.place(&tunnelled("b", 200)).unwrap(), t);
        assert!(d.check_tunnel(socket, "b", 200).is_ok());
        assert!(matches!(
            d.check_tunnel(socket, "b", 100),
            Err(VxlanError::VniTaken { vni: 100, .. })
        ));
        // A vnet made elsewhere cannot take the socket live.
        let other = d.place(&NetworkSpec::named("c")).unwrap();
        assert_ne!(other, t);
        assert!(matches!(
            d.check_tunnel(socket, "c", 300),
            Err(VxlanError::OtherThread { .. })
        ));
        d.release("a");
        assert!(d.check_tunnel(socket, "c", 100).is_ok());
    }

    #[test]
    fn vnets_over_the_limit_are_refused_and_counted() {
        let refusals = Arc::new(Refusals::default());
        let mut d = Directory::new(2, 2, Arc::clone(&refusals));
        d.place(&NetworkSpec::named("a")).unwrap();
        d.place(&NetworkSpec::named("b")).unwrap();
        let e = d.place(&NetworkSpec::named("c")).unwrap_err();
        assert_eq!(e.kind(), super::super::ErrorKind::Conflict);
        assert!(e.message().contains("[limits] vnets"), "{}", e.message());
        assert_eq!(refusals.count(None, limits::VNETS), 1);
        // A name that is free again is placed.
        d.remove("a");
        d.place(&NetworkSpec::named("c")).unwrap();
        assert_eq!(refusals.count(None, limits::VNETS), 1);
    }

    #[test]
    fn vnets_on_one_nic_share_a_thread_and_never_its_traffic() {
        let mut d = Directory::new(2, 64, Default::default());
        let v10 = bridged("v10", "eth1", Some(10));
        let t = d.place(&v10).unwrap();
        d.check("eth1", "v10", &Claim::Vlan(10)).unwrap();
        d.claim("eth1", "v10", Claim::Vlan(10));
        // Fewer vnets on the other thread, but the NIC decides.
        assert_eq!(d.place(&bridged("v20", "eth1", Some(20))).unwrap(), t);
        d.check("eth1", "v20", &Claim::Vlan(20)).unwrap();
        let e = d
            .check("eth1", "v20", &Claim::Trunk(vec![5, 10]))
            .unwrap_err();
        assert!(e.to_string().contains("v10"), "{e}");
        // A vnet may replace its own claim, and another NIC is free.
        d.check("eth1", "v10", &Claim::Trunk(vec![10, 11])).unwrap();
        d.check("eth2", "v20", &Claim::Vlan(10)).unwrap();
        d.remove("v10");
        d.check("eth1", "v20", &Claim::Vlan(10)).unwrap();
    }
}
