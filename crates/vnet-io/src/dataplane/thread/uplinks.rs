//! Bridging vnets to host NICs: one AF_PACKET socket per NIC and thread, shared by the
//! thread's vnets bridged to it, each taking the traffic it claims (its VLAN, or the
//! untagged frames). The [`directory`](crate::dataplane::directory) keeps claims apart
//! across threads; this module keeps the thread's sockets and members.

use std::os::fd::AsRawFd;
use std::time::Instant;

use mio::{Interest, Token};
use tracing::info;
use vnet_core::switch::PortId;
use vnet_model::{PortInfo, SpecError, UplinkSpec};

use super::{Target, Thread, VnetKey};
use crate::backend::uplink::{Claim, Member, UplinkPort, UplinkSocket};
use crate::dataplane::directory;
use crate::dataplane::error::{ControlError, Missing};

impl Thread {
    /// Joins vnet `key` to a host NIC (replacing its uplink, if it had one). Vnets on
    /// the same NIC share its socket; their VLAN claims must not overlap.
    pub(super) fn set_uplink(
        &mut self,
        key: VnetKey,
        spec: UplinkSpec,
        now: Instant,
    ) -> Result<PortInfo, ControlError> {
        if spec.vxlan.is_some() {
            return self.set_vxlan(key, spec, now);
        }
        spec.check().map_err(SpecError::from)?;
        let claim = Claim::of(&spec);
        let name = self.vnets[key].name().to_string();
        self.directory().check(&spec.interface, &name, &claim)?;
        if self.has_uplink(key) {
            self.remove_uplink(key)?;
        }
        let u = match self
            .uplinks
            .iter()
            .find(|(_, s)| s.interface == spec.interface)
        {
            Some((u, _)) => u,
            None => self.open_uplink(&spec.interface)?,
        };
        let port = UplinkPort::new(&self.uplinks[u], &spec);
        let id = match self.add_port(key, Box::new(port), spec.port_vlan_mode(), None) {
            Ok(id) => id,
            Err(e) => {
                self.forget_uplink(key, None);
                return Err(e);
            }
        };
        self.directory()
            .claim(&spec.interface, &name, claim.clone());
        self.uplinks[u].members.push(Member {
            net: key,
            port: id,
            claim,
        });
        // Frames may already be waiting.
        if !self.uplink_rx.contains(&u) {
            self.uplink_rx.push(u);
        }
        self.vnets[key].set_uplink_spec(Some(spec));
        self.vnets[key]
            .port_info(now, id)
            .ok_or(ControlError::Stopped)
    }

    /// Opens `interface`'s AF_PACKET socket and watches it.
    fn open_uplink(&mut self, interface: &str) -> Result<usize, ControlError> {
        let mut up = UplinkSocket::open(interface).map_err(|source| ControlError::OpenUplink {
            interface: interface.into(),
            source,
        })?;
        let u = self.uplinks.vacant_key();
        let token = Token(self.targets.insert(Target::Uplink(u)));
        let fd = up.sock.as_raw_fd();
        if let Err(source) =
            self.poll
                .registry()
                .register(&mut mio::unix::SourceFd(&fd), token, Interest::READABLE)
        {
            self.targets.remove(token.0);
            return Err(ControlError::Watch {
                what: "the uplink".into(),
                source,
            });
        }
        up.token = Some(token);
        info!(interface, "uplink socket opened (promiscuous)");
        Ok(self.uplinks.insert(up))
    }

    /// Unbridges vnet `key`.
    pub(super) fn remove_uplink(&mut self, key: VnetKey) -> Result<(), ControlError> {
        let found = self
            .uplinks
            .iter()
            .find_map(|(_, s)| s.members.iter().find(|m| m.net == key).map(|m| m.port))
            .or_else(|| self.tunnel_member(key).map(|(_, m)| m.port));
        let Some(id) = found else {
            return Err(Missing::Uplink(self.vnets[key].name().into()).into());
        };
        self.close_port(key, id, "uplink removed");
        Ok(())
    }

    /// Forgets vnet `key`'s membership in uplink sockets (port `id`, or all), closing
    /// sockets nobody uses any more.
    pub(super) fn forget_uplink(&mut self, key: VnetKey, id: Option<PortId>) {
        self.forget_tunnel(key, id);
        let mut unused = Vec::new();
        for (u, s) in self.uplinks.iter_mut() {
            let before = s.members.len();
            s.members
                .retain(|m| !(m.net == key && id.is_none_or(|id| m.port == id)));
            if s.members.len() != before {
                if let Some(vnet) = self.vnets.get_mut(key) {
                    vnet.set_uplink_spec(None);
                    directory::lock(&self.directory).release(vnet.name());
                }
            }
            if s.members.is_empty() {
                unused.push(u);
            }
        }
        for u in unused {
            let s = self.uplinks.remove(u);
            let fd = s.sock.as_raw_fd();
            let _ = self
                .poll
                .registry()
                .deregister(&mut mio::unix::SourceFd(&fd));
            if let Some(t) = s.token {
                self.targets.try_remove(t.0);
            }
            self.uplink_rx.retain(|x| *x != u);
            info!(interface = s.interface, "uplink socket closed");
        }
    }
}
