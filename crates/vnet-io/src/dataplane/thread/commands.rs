//! The control plane's commands, carried out between two turns of the loop.
//!
//! Each command names its vnet; the thread looks it up (the directory sent the command
//! to the thread that runs it), does the work and answers on the command's oneshot
//! channel. A client that left meanwhile just misses the answer: the work stands.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use tracing::info;
use vnet_core::switch::{PortId, VlanMode};
use vnet_model::{
    DhcpSpec, ForwardProto, ForwardSpec, MacAddr, NetworkInfo, PortInfo, Reservation,
};

use super::{Thread, VnetKey};
use crate::backend::classic::ClassicDevicePort;
use crate::dataplane::directory;
use crate::dataplane::error::no_port;
use crate::dataplane::error::{Conflict, ControlError, Missing};
use crate::dataplane::Command;
use crate::services::dhcp;
use crate::services::nat::NatService;

impl Thread {
    /// Carries out the queued commands; `true` means shut down.
    pub(super) fn obey_commands(&mut self, now: Instant) -> bool {
        while let Ok(cmd) = self.commands.try_recv() {
            if self.obey(cmd, now) {
                return true;
            }
        }
        false
    }

    /// Carries out one command; `true` means shut down.
    fn obey(&mut self, cmd: Command, now: Instant) -> bool {
        match cmd {
            Command::Shutdown => {
                let keys: Vec<VnetKey> = self.vnets.iter().map(|(k, _)| k).collect();
                for k in keys {
                    self.delete_vnet(k);
                }
                info!("data plane stopped");
                return true;
            }
            Command::CreateNetwork(made, reply) => {
                let (spec, allow) = *made;
                let _ = reply.send(self.create_vnet(spec, allow));
            }
            Command::DeleteNetwork(name, reply) => {
                let _ = reply.send(self.lookup(&name).map(|k| self.delete_vnet(k)));
            }
            Command::Networks(reply) => {
                let mut list: Vec<_> = self.vnets.iter().map(|(_, v)| v.info(self.index)).collect();
                list.sort_by(|a, b| a.name.cmp(&b.name));
                let _ = reply.send(Ok(list));
            }
            Command::Network(name, reply) => {
                let _ = reply.send(self.lookup(&name).map(|k| self.vnets[k].info(self.index)));
            }
            Command::Spec(name, reply) => {
                let _ = reply.send(self.lookup(&name).map(|k| self.vnets[k].spec().clone()));
            }
            Command::AddPort(name, spec, by, reply) => {
                let _ = reply.send(
                    self.lookup(&name)
                        .and_then(|k| self.add_port_spec(k, spec, by.as_ref(), now)),
                );
            }
            Command::AttachDevice(name, sock, client, reply) => {
                let result = self.lookup(&name).and_then(|k| {
                    let port = ClassicDevicePort::new(sock, &name, client.pid);
                    self.add_client_port(k, Box::new(port), &client)
                        .map(|id| id.0)
                });
                let _ = reply.send(result);
            }
            Command::RemovePort(name, id, reply) => {
                let _ = reply.send(self.lookup(&name).and_then(|k| self.remove_port(k, id)));
            }
            Command::Capture(name, spec, reply) => {
                let _ = reply.send(self.lookup(&name).and_then(|k| {
                    self.vnets[k]
                        .start_capture(&spec)
                        .map_err(|id| no_port(&name, id))
                }));
            }
            Command::Ports(name, reply) => {
                let _ = reply.send(self.lookup(&name).map(|k| self.vnets[k].port_infos(now)));
            }
            Command::Port(name, id, reply) => {
                let _ = reply.send(self.lookup(&name).and_then(|k| {
                    self.vnets[k]
                        .port_info(now, PortId(id))
                        .ok_or_else(|| no_port(&name, id))
                }));
            }
            Command::SetPortVlan(name, id, mode, reply) => {
                let _ = reply.send(
                    self.lookup(&name)
                        .and_then(|k| self.set_port_vlan(k, id, mode, now)),
                );
            }
            Command::SetPortPolicy(name, id, patch, reply) => {
                let _ = reply.send(self.lookup(&name).and_then(|k| {
                    let vnet = &mut self.vnets[k];
                    vnet.set_port_policy(PortId(id), &patch)?;
                    vnet.port_info(now, PortId(id)).ok_or(ControlError::Stopped)
                }));
            }
            Command::Mirrors(name, reply) => {
                let _ = reply.send(self.lookup(&name).map(|k| self.vnets[k].mirrors()));
            }
            Command::AddMirror(name, spec, reply) => {
                let _ = reply.send(
                    self.lookup(&name)
                        .and_then(|k| self.vnets[k].add_mirror(spec)),
                );
            }
            Command::RemoveMirror(name, mirror, reply) => {
                let _ = reply.send(
                    self.lookup(&name)
                        .and_then(|k| self.vnets[k].remove_mirror(&mirror)),
                );
            }
            Command::SetMirrors(name, mirrors, reply) => {
                let _ = reply.send(
                    self.lookup(&name)
                        .and_then(|k| self.vnets[k].set_mirrors(mirrors)),
                );
            }
            Command::EditPortAcl(name, id, edit, reply) => {
                let _ = reply.send(self.lookup(&name).and_then(|k| {
                    let vnet = &mut self.vnets[k];
                    vnet.edit_port_acl(PortId(id), edit)?;
                    vnet.port_info(now, PortId(id)).ok_or(ControlError::Stopped)
                }));
            }
            Command::SetPolicy(name, patch, reply) => {
                let _ = reply.send(self.lookup(&name).map(|k| self.vnets[k].set_policy(&patch)));
            }
            Command::SetUplink(name, spec, reply) => {
                let _ = reply.send(
                    self.lookup(&name)
                        .and_then(|k| self.set_uplink(k, spec, now)),
                );
            }
            Command::RemoveUplink(name, reply) => {
                let _ = reply.send(self.lookup(&name).and_then(|k| self.remove_uplink(k)));
            }
            Command::AddRemote(name, remote, reply) => {
                let _ = reply.send(
                    self.lookup(&name)
                        .and_then(|k| self.add_remote(k, remote, now)),
                );
            }
            Command::RemoveRemote(name, remote, reply) => {
                let _ = reply.send(
                    self.lookup(&name)
                        .and_then(|k| self.remove_remote(k, remote)),
                );
            }
            Command::Fdb(name, reply) => {
                let _ = reply.send(self.lookup(&name).and_then(|k| self.fdb(k, now)));
            }
            Command::AddFdb(name, entry, reply) => {
                let _ = reply.send(self.lookup(&name).and_then(|k| self.add_fdb(k, entry, now)));
            }
            Command::RemoveFdb(name, mac, reply) => {
                let _ = reply.send(self.lookup(&name).and_then(|k| self.remove_fdb(k, mac)));
            }
            Command::Forwards(name, reply) => {
                let _ = reply.send(
                    self.lookup(&name)
                        .and_then(|k| self.nat_of(k))
                        .map(|n| n.borrow().forwards()),
                );
            }
            Command::AddForward(name, spec, reply) => {
                let _ = reply.send(self.lookup(&name).and_then(|k| self.add_forward(k, spec)));
            }
            Command::RemoveForward(name, proto, host, reply) => {
                let _ = reply.send(
                    self.lookup(&name)
                        .and_then(|k| self.remove_forward(k, proto, host)),
                );
            }
            Command::Leases(name, reply) => {
                let _ = reply.send(self.lookup(&name).map(|k| self.vnets[k].leases()));
            }
            Command::SetDhcp(name, dhcp, reply) => {
                let _ = reply.send(self.lookup(&name).and_then(|k| self.set_dhcp(k, dhcp)));
            }
            Command::PatchDhcp(name, patch, reply) => {
                let _ = reply.send(self.lookup(&name).and_then(|k| {
                    let current = self.vnets[k].spec().dhcp.clone();
                    self.set_dhcp(k, patch.apply(current))
                }));
            }
            Command::AddReservation(name, r, reply) => {
                let _ = reply.send(self.lookup(&name).and_then(|k| self.add_reservation(k, r)));
            }
            Command::RemoveReservation(name, mac, reply) => {
                let _ = reply.send(
                    self.lookup(&name)
                        .and_then(|k| self.remove_reservation(k, mac)),
                );
            }
            Command::Macs(name, reply) => {
                let _ = reply.send(self.lookup(&name).map(|k| self.vnets[k].macs(now)));
            }
        }
        false
    }

    pub(super) fn lookup(&self, name: &str) -> Result<VnetKey, ControlError> {
        self.names
            .get(name)
            .copied()
            .ok_or_else(|| directory::no_vnet(name))
    }

    fn remove_port(&mut self, key: VnetKey, id: u32) -> Result<(), ControlError> {
        if !self.vnets[key].has_port(PortId(id)) {
            return Err(no_port(self.vnets[key].name(), id));
        }
        self.close_port(key, PortId(id), "removed by the control API");
        Ok(())
    }

    fn set_port_vlan(
        &mut self,
        key: VnetKey,
        id: u32,
        mode: VlanMode,
        now: Instant,
    ) -> Result<PortInfo, ControlError> {
        let vnet = &mut self.vnets[key];
        if !vnet.has_port(PortId(id)) {
            return Err(no_port(vnet.name(), id));
        }
        vnet.set_vlan_mode(now, PortId(id), mode)?;
        info!(net = vnet.name(), port = id, "VLAN mode changed");
        vnet.port_info(now, PortId(id)).ok_or(ControlError::Stopped)
    }

    fn nat_of(&self, key: VnetKey) -> Result<Rc<RefCell<NatService>>, ControlError> {
        let vnet = &self.vnets[key];
        let nat = vnet.nat().ok_or_else(|| Missing::Nat(vnet.name().into()))?;
        Ok(Rc::clone(nat))
    }

    /// Adds a port forward to a NAT vnet live.
    fn add_forward(&mut self, key: VnetKey, f: ForwardSpec) -> Result<ForwardSpec, ControlError> {
        let nat = self.nat_of(key)?;
        let vnet = &mut self.vnets[key];
        let mut spec = vnet.spec().clone();
        if let Some(n) = spec.nat.as_mut() {
            if n.forward
                .iter()
                .any(|g| (g.proto, g.host) == (f.proto, f.host))
            {
                return Err(Conflict::Forward {
                    vnet: vnet.name().into(),
                    proto: f.proto,
                    host: f.host,
                }
                .into());
            }
            n.forward.push(f.clone());
        }
        spec.validate()?;
        nat.borrow_mut()
            .add_forward(&f)
            .map_err(ControlError::Forward)?;
        vnet.set_spec(spec);
        Ok(f)
    }

    /// Removes the `proto` port forward on `host`.
    fn remove_forward(
        &mut self,
        key: VnetKey,
        proto: ForwardProto,
        host: SocketAddr,
    ) -> Result<(), ControlError> {
        let nat = self.nat_of(key)?;
        let vnet = &mut self.vnets[key];
        if !nat.borrow_mut().remove_forward(proto, host) {
            return Err(Missing::Forward {
                vnet: vnet.name().into(),
                proto,
                host,
            }
            .into());
        }
        let mut spec = vnet.spec().clone();
        if let Some(n) = spec.nat.as_mut() {
            n.forward.retain(|f| (f.proto, f.host) != (proto, host));
        }
        vnet.set_spec(spec);
        Ok(())
    }

    /// Replaces a vnet's DHCP settings live, starting the service if it had none.
    fn set_dhcp(&mut self, key: VnetKey, dhcp: DhcpSpec) -> Result<NetworkInfo, ControlError> {
        let mut spec = self.vnets[key].spec().clone();
        spec.dhcp = Some(dhcp);
        spec.validate()?;
        let config = dhcp::config_for(&spec)
            .map_err(ControlError::Dhcp)?
            .expect("has dhcp");
        match self.vnets[key].dhcp() {
            Some(service) => service
                .borrow_mut()
                .reconfigure(config)
                .map_err(ControlError::Dhcp)?,
            None => {
                self.vnets[key].set_spec(spec);
                self.start_dhcp(key)?;
                self.refresh_router(key)?;
                return Ok(self.vnets[key].info(self.index));
            }
        }
        self.vnets[key].set_spec(spec);
        self.refresh_router(key)?;
        Ok(self.vnets[key].info(self.index))
    }

    fn dhcp_of(&self, key: VnetKey) -> Result<DhcpSpec, ControlError> {
        let vnet = &self.vnets[key];
        let dhcp = vnet.spec().dhcp.clone();
        Ok(dhcp.ok_or_else(|| Missing::Dhcp(vnet.name().into()))?)
    }

    fn add_reservation(
        &mut self,
        key: VnetKey,
        r: Reservation,
    ) -> Result<Reservation, ControlError> {
        let mut d = self.dhcp_of(key)?;
        if d.reservations.iter().any(|x| x.mac == r.mac) {
            return Err(Conflict::Reservation {
                vnet: self.vnets[key].name().into(),
                mac: r.mac,
            }
            .into());
        }
        if let Some(x) = d.reservations.iter().find(|x| x.ip == r.ip) {
            return Err(ControlError::AddressReserved {
                ip: r.ip,
                mac: x.mac,
            });
        }
        d.reservations.push(r.clone());
        self.set_dhcp(key, d).map(|_| r)
    }

    fn remove_reservation(&mut self, key: VnetKey, mac: MacAddr) -> Result<(), ControlError> {
        let mut d = self.dhcp_of(key)?;
        let before = d.reservations.len();
        d.reservations.retain(|x| x.mac != mac);
        if d.reservations.len() == before {
            return Err(Missing::Reservation {
                vnet: self.vnets[key].name().into(),
                mac,
            }
            .into());
        }
        self.set_dhcp(key, d).map(|_| ())
    }
}
