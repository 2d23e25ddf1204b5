//! Several "hosts" on one underlay, each running vnetd with one vnet over VXLAN: the
//! setting of the mobility and migration tests and `benches/migration.rs`.
//!
//! The underlay is a Linux bridge in a namespace of its own; each host is a namespace
//! with one veth leg on it (address `10.77.0.N/24`, MTU 1500) and its own vnetd.
//! Everything lives in namespaces the test made, so parallel tests do not meet.

use crate::api::{client, tap_vm_in};
use crate::{Daemon, Netns, NsVm, Veth};

/// The overlay vnets' MTU: 1500 on the underlay, less 50 bytes of VXLAN over IPv4.
pub const MTU: u32 = 1450;

/// The underlay: a bridge that every host's leg joins.
#[derive(Debug)]
pub struct Underlay {
    ns: Netns,
}

impl Default for Underlay {
    fn default() -> Self {
        Underlay::new()
    }
}

impl Underlay {
    /// An empty underlay.
    pub fn new() -> Underlay {
        let ns = Netns::new("ul");
        ns.exec_ok(&["ip", "link", "add", "br0", "type", "bridge"]);
        ns.exec_ok(&["ip", "link", "set", "br0", "up"]);
        Underlay { ns }
    }

    /// Host number `n` (1..=254): a namespace at `10.77.0.n` on the underlay.
    pub fn host(&self, n: u8) -> Host {
        let ns = Netns::new("hst");
        let mut leg = Veth::new();
        leg.move_a(&ns);
        leg.move_b(&self.ns);
        self.ns
            .exec_ok(&["ip", "link", "set", leg.b(), "master", "br0"]);
        let addr = format!("10.77.0.{n}");
        ns.exec_ok(&["ip", "addr", "add", &format!("{addr}/24"), "dev", leg.a()]);
        Host {
            ns,
            _leg: leg,
            addr,
        }
    }
}

/// One machine on the underlay.
#[derive(Debug)]
pub struct Host {
    ns: Netns,
    _leg: Veth,
    addr: String,
}

impl Host {
    /// The host's namespace.
    pub fn ns(&self) -> &Netns {
        &self.ns
    }

    /// Its underlay address (its VTEP).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// vnetd in this host's namespace with one vnet `net` (MTU [`MTU`]) on VXLAN VNI
    /// `vni`, flooding to the other hosts `remotes`.
    pub fn vnetd(&self, net: &str, vni: u32, remotes: &[&Host]) -> Daemon {
        let remotes: Vec<String> = remotes.iter().map(|r| format!("\"{}\"", r.addr)).collect();
        let toml = format!(
            "[[network]]\nname = \"{net}\"\nmtu = {MTU}\nuplink = {{ vxlan = {{ vni = {vni}, local = \"{}\", remotes = [{}] }} }}\n",
            self.addr,
            remotes.join(", ")
        );
        Daemon::builder().netns(&self.ns).config(&toml).start()
    }

    /// A namespace VM on a new TAP port of `net` on this host's daemon `d`, with the
    /// overlay's MTU; returns its port and the VM.
    pub fn vm(&self, d: &Daemon, net: &str, mac: &str, cidr: &str) -> (u32, NsVm) {
        let (port, vm) = tap_vm_in(d, Some(&self.ns), net, mac, cidr);
        vm.ns().exec_ok(&[
            "ip",
            "link",
            "set",
            "dev",
            vm.ifname(),
            "mtu",
            &MTU.to_string(),
        ]);
        (port, vm)
    }
}

/// The port of `net` on daemon `d` that has learned `mac`, if any.
pub fn port_of(d: &Daemon, net: &str, mac: &str) -> Option<u32> {
    client(d)
        .macs(net)
        .ok()?
        .into_iter()
        .find(|e| e.mac.to_string() == mac)
        .map(|e| e.port)
}

/// The id of `net`'s VXLAN uplink port on daemon `d`.
///
/// # Panics
/// If it has none.
pub fn uplink_port(d: &Daemon, net: &str) -> u32 {
    client(d)
        .ports(net)
        .unwrap()
        .into_iter()
        .find(|p| p.vxlan.is_some())
        .unwrap_or_else(|| panic!("{net} has no VXLAN port:\n{}", d.log()))
        .id
}

/// The remote VTEP `net`'s tunnel on daemon `d` sends `mac` to, if it knows one.
pub fn vtep_of(d: &Daemon, net: &str, mac: &str) -> Option<String> {
    client(d)
        .fdb(net)
        .ok()?
        .into_iter()
        .find(|e| e.mac.to_string() == mac)
        .map(|e| e.remote.to_string())
}
