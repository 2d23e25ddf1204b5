//! From the vnets that run to the vnets wanted: the list of live changes ([`plan`]).
//!
//! A vnet whose settings are equal is not touched at all (its ports keep forwarding).
//! DHCP settings (reservations included), the uplink, port forwards, the client ports'
//! policy, the mirrors and the TAP, interface and vhost-user ports (added, removed, VLAN settings,
//! own policy) change in place;
//! anything else (MTU, subnet, host adapter, NAT settings other than forwards, MAC
//! limits, allow lists) means recreating the vnet, which drops its ports' connections.

use std::fmt;
use std::net::SocketAddr;

use vnet_model::{
    DhcpSpec, ForwardProto, ForwardSpec, MirrorSpec, NetworkSpec, PortPolicy, PortSpec, UplinkSpec,
};

use crate::state::{port_identity, SavedNet};

/// One live change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Make the vnet and its ports.
    Create(Box<SavedNet>),
    Delete(String),
    SetDhcp(String, DhcpSpec),
    SetUplink(String, UplinkSpec),
    RemoveUplink(String),
    AddForward(String, ForwardSpec),
    RemoveForward(String, ForwardProto, SocketAddr),
    AddPort(String, PortSpec),
    /// Remove the port vnetd made with this spec (matched by [`port_identity`]).
    RemovePort(String, PortSpec),
    /// Give that port the spec's VLAN settings.
    SetPortVlan(String, PortSpec),
    /// Give that port the spec's own policy.
    SetPortPolicy(String, PortSpec),
    /// Set the policy of the vnet's client ports.
    SetPolicy(String, PortPolicy),
    /// Replace the vnet's mirrors.
    SetMirrors(String, Vec<MirrorSpec>),
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let port = |p: &PortSpec| {
            let (kind, name) = port_identity(p);
            format!("{kind} port {name}")
        };
        match self {
            Op::Create(n) => write!(f, "create vnet {}", n.name()),
            Op::Delete(n) => write!(f, "delete vnet {n}"),
            Op::SetDhcp(n, _) => write!(f, "vnet {n}: set DHCP"),
            Op::SetUplink(n, u) => write!(f, "vnet {n}: set the uplink to {}", u.interface),
            Op::RemoveUplink(n) => write!(f, "vnet {n}: remove the uplink"),
            Op::AddForward(n, fw) => write!(
                f,
                "vnet {n}: forward {} {} to {}",
                fw.proto.as_str(),
                fw.host,
                fw.guest
            ),
            Op::RemoveForward(n, proto, host) => {
                write!(f, "vnet {n}: remove forward {} {host}", proto.as_str())
            }
            Op::AddPort(n, p) => write!(f, "vnet {n}: add {}", port(p)),
            Op::RemovePort(n, p) => write!(f, "vnet {n}: remove {}", port(p)),
            Op::SetPortVlan(n, p) => write!(f, "vnet {n}: set the VLANs of {}", port(p)),
            Op::SetPortPolicy(n, p) => write!(f, "vnet {n}: set the policy of {}", port(p)),
            Op::SetPolicy(n, _) => write!(f, "vnet {n}: set the policy of client ports"),
            Op::SetMirrors(n, _) => write!(f, "vnet {n}: set the mirrors"),
        }
    }
}

/// The changes that turn `old` (what runs) into `new` (what is wanted): deletions
/// first (a name or interface may be reused), then each wanted vnet in order.
pub fn plan(old: &[SavedNet], new: &[SavedNet]) -> Vec<Op> {
    let find = |list: &'_ [SavedNet], name: &str| list.iter().find(|n| n.name() == name).cloned();
    let mut ops: Vec<Op> = old
        .iter()
        .filter(|o| find(new, o.name()).is_none())
        .map(|o| Op::Delete(o.name().to_string()))
        .collect();
    for n in new {
        match find(old, n.name()) {
            None => ops.push(Op::Create(Box::new(n.clone()))),
            Some(o) if o == *n => {}
            Some(o) => match in_place(&o, n) {
                Some(changes) => ops.extend(changes),
                None => ops.extend([
                    Op::Delete(o.name().to_string()),
                    Op::Create(Box::new(n.clone())),
                ]),
            },
        }
    }
    ops
}

/// The in-place changes from `o` to `n`, or `None` if the vnet must be recreated.
fn in_place(o: &SavedNet, n: &SavedNet) -> Option<Vec<Op>> {
    if o.spec.dhcp.is_some() && n.spec.dhcp.is_none() {
        return None; // no live "DHCP off" beyond `enabled = false`
    }
    /// The spec without what changes in place.
    fn fixed(s: &NetworkSpec) -> NetworkSpec {
        let mut s = s.clone();
        s.dhcp = None;
        s.uplink = None;
        s.policy = PortPolicy::default();
        s.mirrors.clear();
        if let Some(nat) = s.nat.as_mut() {
            nat.forward.clear();
        }
        s
    }
    if fixed(&o.spec) != fixed(&n.spec) {
        return None;
    }
    let name = n.name().to_string();
    let mut ops = Vec::new();
    if let (Some(dhcp), true) = (&n.spec.dhcp, o.spec.dhcp != n.spec.dhcp) {
        ops.push(Op::SetDhcp(name.clone(), dhcp.clone()));
    }
    if o.spec.uplink != n.spec.uplink {
        ops.push(match &n.spec.uplink {
            Some(u) => Op::SetUplink(name.clone(), u.clone()),
            None => Op::RemoveUplink(name.clone()),
        });
    }
    if o.spec.policy != n.spec.policy {
        ops.push(Op::SetPolicy(name.clone(), n.spec.policy.clone()));
    }
    if o.spec.mirrors != n.spec.mirrors {
        ops.push(Op::SetMirrors(name.clone(), n.spec.mirrors.clone()));
    }
    let forwards = |s: &NetworkSpec| {
        s.nat
            .as_ref()
            .map(|n| n.forward.clone())
            .unwrap_or_default()
    };
    let (before, after) = (forwards(&o.spec), forwards(&n.spec));
    for f in before.iter().filter(|f| !after.contains(f)) {
        ops.push(Op::RemoveForward(name.clone(), f.proto, f.host));
    }
    for f in after.iter().filter(|f| !before.contains(f)) {
        ops.push(Op::AddForward(name.clone(), f.clone()));
    }
    let same = |a: &PortSpec, b: &PortSpec| port_identity(a) == port_identity(b);
    for p in o
        .ports
        .iter()
        .filter(|p| !n.ports.iter().any(|q| same(p, q)))
    {
        ops.push(Op::RemovePort(name.clone(), p.clone()));
    }
    for p in &n.ports {
        match o.ports.iter().find(|q| same(p, q)) {
            None => ops.push(Op::AddPort(name.clone(), p.clone())),
            Some(q) => {
                if q.vlan() != p.vlan() {
                    ops.push(Op::SetPortVlan(name.clone(), p.clone()));
                }
                if q.policy() != p.policy() {
                    ops.push(Op::SetPortPolicy(name.clone(), p.clone()));
                }
            }
        }
    }
    Some(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::net;
    use vnet_model::{NatSpec, Reservation, VlanMode};

    fn nat_net(name: &str, forwards: &[(&str, &str)]) -> SavedNet {
        let mut n = net(name, 1500);
        n.spec.subnet = Some("10.9.0.0/24".parse().unwrap());
        n.spec.dhcp = Some(DhcpSpec::default());
        n.spec.nat = Some(NatSpec {
            forward: forwards
                .iter()
                .map(|(host, guest)| ForwardSpec {
                    proto: ForwardProto::Tcp,
                    host: host.parse().unwrap(),
                    guest: guest.parse().unwrap(),
                })
                .collect(),
            ..NatSpec::default()
        });
        n
    }

    fn tap(name: &str, vlan: u16) -> PortSpec {
        PortSpec::Tap {
            ifname: name.into(),
            vlan: VlanMode::Access { vlan },
            policy: Default::default(),
        }
    }

    #[test]
    fn equal_vnets_are_left_alone_and_others_created_or_deleted() {
        let (a, b, c) = (net("a", 1500), net("b", 1500), net("c", 1500));
        assert_eq!(plan(&[a.clone(), b.clone()], &[a.clone(), b.clone()]), []);
        assert_eq!(
            plan(&[a.clone(), b.clone()], &[c.clone(), a.clone()]),
            [Op::Delete("b".into()), Op::Create(Box::new(c))]
        );
    }

    #[test]
    fn mirrors_change_in_place() {
        let old = SavedNet {
            ports: vec![tap("t0", 1), tap("t1", 1)],
            ..net("n", 1500)
        };
        let mut new = old.clone();
        new.spec.mirrors.push(MirrorSpec {
            name: "ids".into(),
            sources: vec!["t0".parse().unwrap()],
            direction: Default::default(),
            destination: "t1".parse().unwrap(),
        });
        assert_eq!(
            plan(&[old], &[new.clone()]),
            [Op::SetMirrors("n".into(), new.spec.mirrors.clone())]
        );
    }

    #[test]
    fn policies_change_in_place() {
        let old = SavedNet {
            ports: vec![tap("t0", 1), tap("t1", 1)],
            ..net("n", 1500)
        };
        let mut new = old.clone();
        new.spec.policy.rate = Some(Default::default());
        new.ports[1].policy_mut().acl = Some(Default::default());
        assert_eq!(
            plan(&[old], &[new.clone()]),
            [
                Op::SetPolicy("n".into(), new.spec.policy.clone()),
                Op::SetPortPolicy("n".into(), new.ports[1].clone()),
            ]
        );
    }

    #[test]
    fn dhcp_forwards_uplink_and_ports_change_in_place() {
        let mut old = nat_net("n", &[("127.0.0.1:8080", "10.9.0.10:80")]);
        old.ports = vec![tap("t0", 1), tap("t1", 1)];
        let mut new = nat_net("n", &[("127.0.0.1:8081", "10.9.0.10:80")]);
        new.ports = vec![tap("t1", 20), tap("t2", 1)];
        let dhcp = new.spec.dhcp.as_mut().unwrap();
        dhcp.reservations.push(Reservation {
            mac: "52:54:00:00:00:01".parse().unwrap(),
            ip: "10.9.0.10".parse().unwrap(),
            hostname: None,
            ip6: None,
            duid: None,
        });
        new.spec.uplink = Some(UplinkSpec {
            vxlan: None,
            interface: "eth1".into(),
            vlan: None,
            mode: Default::default(),
            vlans: Vec::new(),
        });
        let ops = plan(std::slice::from_ref(&old), std::slice::from_ref(&new));
        let n = || "n".to_string();
        assert_eq!(
            ops,
            [
                Op::SetDhcp(n(), new.spec.dhcp.clone().unwrap()),
                Op::SetUplink(n(), new.spec.uplink.clone().unwrap()),
                Op::RemoveForward(n(), ForwardProto::Tcp, "127.0.0.1:8080".parse().unwrap()),
                Op::AddForward(n(), new.spec.nat.as_ref().unwrap().forward[0].clone()),
                Op::RemovePort(n(), tap("t0", 1)),
                Op::SetPortVlan(n(), tap("t1", 20)),
                Op::AddPort(n(), tap("t2", 1)),
            ]
        );
        assert_eq!(
            ops[3].to_string(),
            "vnet n: forward tcp 127.0.0.1:8081 to 10.9.0.10:80"
        );
        // Back again: the uplink goes.
        assert!(plan(&[new], &[old]).contains(&Op::RemoveUplink(n())));
    }

    #[test]
    fn other_settings_recreate_the_vnet() {
        let old = nat_net("n", &[]);
        let mut mtu = old.clone();
        mtu.spec.mtu = 9000;
        let mut nat = old.clone();
        nat.spec.nat.as_mut().unwrap().host_loopback = true;
        let mut no_dhcp = old.clone();
        no_dhcp.spec.dhcp = None;
        let mut subnet6 = old.clone();
        subnet6.spec.subnet6 = Some("fd00:9::/64".parse().unwrap());
        let mut no_ipv6 = old.clone();
        no_ipv6.spec.ipv6 = false;
        let mut ra = old.clone();
        ra.spec.ra.slaac = false;
        for new in [mtu, nat, no_dhcp, subnet6, no_ipv6, ra] {
            assert_eq!(
                plan(std::slice::from_ref(&old), std::slice::from_ref(&new)),
                [Op::Delete("n".into()), Op::Create(Box::new(new.clone()))]
            );
        }
    }
}
