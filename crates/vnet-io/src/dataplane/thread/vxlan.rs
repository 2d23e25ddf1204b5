//! VXLAN uplinks on one thread: one [`TunnelSocket`] per local address and port,
//! shared by the thread's vnets on it (each its own VNI); their remotes and forwarding
//! databases, changed live; reading the sockets each turn and aging what was learned.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use mio::{Interest, Token};
use tracing::info;
use vnet_model::{FdbEntry, FdbSpec, MacAddr, PortInfo, SpecError, UplinkSpec, VxlanSpec};

use super::{Target, Thread, VnetKey};
use crate::backend::vxlan::{Member, Tunnel, TunnelSocket, VxlanError, VxlanPort};
use crate::dataplane::error::ControlError;

impl Thread {
    /// Makes vnet `key` a VXLAN segment (replacing its uplink, if it had one): checks
    /// that its MTU fits the underlay, joins or opens the socket of `local` and port.
    pub(super) fn set_vxlan(
        &mut self,
        key: VnetKey,
        spec: UplinkSpec,
        now: Instant,
    ) -> Result<PortInfo, ControlError> {
        spec.check().map_err(SpecError::from)?;
        let vx = spec.vxlan.clone().expect("a VXLAN uplink");
        let net = self.vnets[key].spec();
        let (mtu, aging, max) = (
            net.mtu,
            Duration::from_secs(net.mac_aging_secs),
            net.max_macs,
        );
        check_mtu(&vx, mtu)?;
        let local = SocketAddr::new(vx.local, vx.port);
        let name = self.vnets[key].name().to_string();
        self.directory().check_tunnel(local, &name, vx.vni)?;
        let tunnel = Rc::new(RefCell::new(Tunnel::new(&vx, aging, max, now)?));
        if self.has_uplink(key) {
            self.remove_uplink(key)?;
        }
        let t = match self.tunnels.iter().find(|(_, s)| s.sockets.local == local) {
            Some((t, _)) => t,
            None => self.open_tunnel(local, vx.source_port_range())?,
        };
        if let Some(group) = vx.group {
            if let Err(e) = self.join_group(t, &vx, group) {
                self.close_unused_tunnels();
                return Err(e);
            }
        }
        let port = VxlanPort::new(&self.tunnels[t], Rc::clone(&tunnel));
        let id = match self.add_port(key, Box::new(port), spec.port_vlan_mode(), None) {
            Ok(id) => id,
            Err(e) => {
                self.close_unused_tunnels();
                return Err(e);
            }
        };
        self.tunnels[t].members.push(Member {
            net: key,
            port: id,
            tunnel,
            max_frame: vnet_core::switch::SwitchConfig::max_frame_for_mtu(mtu as usize),
        });
        self.vnets[key].watch_moves_from(Some(id));
        self.directory().claim_tunnel(local, &name, vx.vni);
        if !self.tunnel_rx.contains(&t) {
            self.tunnel_rx.push(t);
        }
        self.vnets[key].set_uplink_spec(Some(spec));
        self.vnets[key]
            .port_info(now, id)
            .ok_or(ControlError::Stopped)
    }

    /// Opens the sockets of `local` and watches the receiving one.
    fn open_tunnel(
        &mut self,
        local: SocketAddr,
        source_ports: [u16; 2],
    ) -> Result<usize, ControlError> {
        let mut sock = TunnelSocket::open(local, source_ports)?;
        let t = self.tunnels.vacant_key();
        let token = Token(self.targets.insert(Target::Tunnel(t)));
        let fd = sock.sockets.rx.as_raw_fd();
        if let Err(source) =
            self.poll
                .registry()
                .register(&mut mio::unix::SourceFd(&fd), token, Interest::READABLE)
        {
            self.targets.remove(token.0);
            return Err(ControlError::Watch {
                what: "the VXLAN socket".into(),
                source,
            });
        }
        sock.token = Some(token);
        info!(%local, "VXLAN socket opened");
        Ok(self.tunnels.insert(sock))
    }

    /// Joins multicast `group` on tunnel socket `t` (once per group), watching a
    /// socket bound to the group under the tunnel's token.
    fn join_group(&mut self, t: usize, vx: &VxlanSpec, group: IpAddr) -> Result<(), ControlError> {
        if self.tunnels[t].groups.iter().any(|(g, _)| *g == group) {
            return Ok(());
        }
        let sock = crate::backend::vxlan::join_group(&self.tunnels[t].sockets, vx, group)?;
        let token = self.tunnels[t].token.expect("watched");
        let fd = sock.as_raw_fd();
        self.poll
            .registry()
            .register(&mut mio::unix::SourceFd(&fd), token, Interest::READABLE)
            .map_err(|source| ControlError::Watch {
                what: "the VXLAN group's socket".into(),
                source,
            })?;
        self.tunnels[t].groups.push((group, sock));
        Ok(())
    }

    /// Whether vnet `key` has an uplink, bridged or VXLAN.
    pub(super) fn has_uplink(&self, key: VnetKey) -> bool {
        self.uplinks
            .iter()
            .any(|(_, s)| s.members.iter().any(|m| m.net == key))
            || self.tunnel_member(key).is_some()
    }

    /// Vnet `key`'s VXLAN uplink port, if it has one.
    pub(super) fn tunnel_member(&self, key: VnetKey) -> Option<(usize, &Member)> {
        self.tunnels
            .iter()
            .find_map(|(t, s)| s.members.iter().find(|m| m.net == key).map(|m| (t, m)))
    }

    /// Forgets vnet `key`'s membership in tunnel sockets (port `id`, or all), closing
    /// sockets nobody uses any more.
    pub(super) fn forget_tunnel(&mut self, key: VnetKey, id: Option<vnet_core::switch::PortId>) {
        let mut found = false;
        for (_, s) in self.tunnels.iter_mut() {
            let before = s.members.len();
            s.members
                .retain(|m| !(m.net == key && id.is_none_or(|id| m.port == id)));
            found |= s.members.len() != before;
        }
        if found {
            if let Some(vnet) = self.vnets.get_mut(key) {
                vnet.set_uplink_spec(None);
                crate::dataplane::directory::lock(&self.directory).release(vnet.name());
            }
        }
        self.close_unused_tunnels();
    }

    fn close_unused_tunnels(&mut self) {
        let unused: Vec<usize> = self
            .tunnels
            .iter()
            .filter(|(_, s)| s.members.is_empty())
            .map(|(t, _)| t)
            .collect();
        for t in unused {
            let s = self.tunnels.remove(t);
            let fds = std::iter::once(s.sockets.rx.as_raw_fd())
                .chain(s.groups.iter().map(|(_, g)| g.as_raw_fd()));
            for fd in fds {
                let _ = self
                    .poll
                    .registry()
                    .deregister(&mut mio::unix::SourceFd(&fd));
            }
            if let Some(tok) = s.token {
                self.targets.try_remove(tok.0);
            }
            self.tunnel_rx.retain(|x| *x != t);
            info!(local = %s.sockets.local, "VXLAN socket closed");
        }
    }

    /// Makes each tunnel forget the stations learned behind a remote that showed up
    /// on one of its vnet's local ports since the last turn (migrated here): only the
    /// switch's entry says where they are now.
    pub(super) fn forget_moved_in(&mut self) {
        for (_, s) in self.tunnels.iter() {
            for m in &s.members {
                let Some(vnet) = self.vnets.get_mut(m.net) else {
                    continue;
                };
                for mac in vnet.take_moved_away() {
                    m.tunnel.borrow_mut().fdb.forget_learned(mac);
                }
            }
        }
    }

    /// Drops learned forwarding entries that aged out.
    pub(super) fn age_tunnels(&mut self, now: Instant) {
        for (_, s) in self.tunnels.iter() {
            for m in &s.members {
                m.tunnel.borrow_mut().fdb.age(now);
            }
        }
    }

    /// Vnet `key`'s VXLAN settings and tunnel, or the error that it has none.
    fn vxlan_of(
        &self,
        key: VnetKey,
    ) -> Result<(VxlanSpec, Rc<RefCell<Tunnel>>, vnet_core::switch::PortId), ControlError> {
        let not = || VxlanError::NotVxlan(self.vnets[key].name().to_string());
        let (_, m) = self.tunnel_member(key).ok_or_else(not)?;
        let spec = self.vnets[key]
            .spec()
            .uplink
            .as_ref()
            .and_then(|u| u.vxlan.clone())
            .ok_or_else(not)?;
        Ok((spec, Rc::clone(&m.tunnel), m.port))
    }

    /// Saves a changed VXLAN spec as the vnet's uplink.
    fn save_vxlan(&mut self, key: VnetKey, vx: VxlanSpec) {
        let mut uplink = self.vnets[key].spec().uplink.clone().unwrap_or_default();
        uplink.vxlan = Some(vx);
        self.vnets[key].set_uplink_spec(Some(uplink));
    }

    /// Adds a remote VTEP to vnet `key`'s tunnel live.
    pub(super) fn add_remote(
        &mut self,
        key: VnetKey,
        remote: IpAddr,
        now: Instant,
    ) -> Result<PortInfo, ControlError> {
        let (mut vx, tunnel, port) = self.vxlan_of(key)?;
        if !vx.remotes.contains(&remote) {
            vx.remotes.push(remote);
        }
        vx.check().map_err(SpecError::from)?;
        tunnel.borrow_mut().fdb.add_remote(remote);
        self.save_vxlan(key, vx);
        self.vnets[key]
            .port_info(now, port)
            .ok_or(ControlError::Stopped)
    }

    /// Removes a remote VTEP (and what was learned behind it) live.
    pub(super) fn remove_remote(
        &mut self,
        key: VnetKey,
        remote: IpAddr,
    ) -> Result<(), ControlError> {
        let (mut vx, tunnel, _) = self.vxlan_of(key)?;
        if !tunnel.borrow_mut().fdb.remove_remote(remote) {
            return Err(VxlanError::NoRemote {
                vnet: self.vnets[key].name().to_string(),
                remote,
            }
            .into());
        }
        vx.remotes.retain(|r| *r != remote);
        self.save_vxlan(key, vx);
        Ok(())
    }

    /// Vnet `key`'s forwarding database.
    pub(super) fn fdb(&self, key: VnetKey, now: Instant) -> Result<Vec<FdbEntry>, ControlError> {
        let (_, tunnel, _) = self.vxlan_of(key)?;
        let rows = tunnel.borrow().fdb.rows(now);
        Ok(rows
            .into_iter()
            .map(|r| FdbEntry {
                mac: r.mac,
                remote: r.remote,
                age_secs: r.age.as_secs(),
                fixed: r.fixed,
            })
            .collect())
    }

    /// Pins a MAC behind a remote VTEP.
    pub(super) fn add_fdb(
        &mut self,
        key: VnetKey,
        entry: FdbSpec,
        now: Instant,
    ) -> Result<FdbSpec, ControlError> {
        let (mut vx, tunnel, _) = self.vxlan_of(key)?;
        if entry.remote.is_ipv4() != vx.local.is_ipv4() {
            return Err(VxlanError::Family(entry.remote).into());
        }
        tunnel
            .borrow_mut()
            .fdb
            .pin(now, entry.mac, entry.remote)
            .map_err(VxlanError::from)?;
        vx.fdb.retain(|f| f.mac != entry.mac);
        vx.fdb.push(entry);
        self.save_vxlan(key, vx);
        Ok(entry)
    }

    /// Removes `mac`'s entry (static or learned).
    pub(super) fn remove_fdb(&mut self, key: VnetKey, mac: MacAddr) -> Result<(), ControlError> {
        let (mut vx, tunnel, _) = self.vxlan_of(key)?;
        if !tunnel.borrow_mut().fdb.unpin(mac) {
            return Err(VxlanError::NoEntry {
                vnet: self.vnets[key].name().to_string(),
                mac,
            }
            .into());
        }
        vx.fdb.retain(|f| f.mac != mac);
        self.save_vxlan(key, vx);
        Ok(())
    }
}

/// Refuses a tunnel whose frames would not fit the underlay unfragmented.
fn check_mtu(vx: &VxlanSpec, mtu: u32) -> Result<(), VxlanError> {
    let (interface, underlay) = crate::sys::netif::holder_of(vx.local)
        .map_err(VxlanError::Interfaces)?
        .ok_or(VxlanError::NotLocal(vx.local))?;
    let overhead = vx.overhead();
    if mtu + overhead > underlay {
        return Err(VxlanError::Mtu {
            mtu,
            overhead,
            underlay,
            interface,
            local: vx.local,
        });
    }
    Ok(())
}
