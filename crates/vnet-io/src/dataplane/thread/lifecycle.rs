//! Making and removing vnets and their ports: binding a vnet's sockets, starting its
//! host adapter and services, attaching backends and watching their fds.
//!
//! The thread, not the control plane, settles a vnet's name: a vnet that cannot be
//! made frees it, even when the client that asked has gone.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use mio::Token;
use tracing::{info, warn};
use vnet_core::switch::{PortId, VlanMode};
use vnet_model::{NetworkInfo, NetworkSpec, PortInfo, PortKind, PortSpec};

use super::{Target, Thread, VnetKey};
use crate::admission::{AllowList, Client, Requester};
use crate::backend::interface::InterfacePort;
use crate::backend::service::ServicePort;
use crate::backend::tap::TapPort;
use crate::backend::Backend;
use crate::dataplane::directory;
use crate::dataplane::error::{Conflict, ControlError, ErrorKind};
use crate::dataplane::network_dir;
use crate::dataplane::vnet::Owner;
use crate::dataplane::vnet::{Listener, Vnet};
use crate::error::Chain;
use crate::services::dhcp::{self, DhcpService};
use crate::services::nat::{self, NatService};
use crate::services::ra::{self, RaService};
use crate::sys::netif;
use crate::sys::privilege::{self, Capability};
use crate::sys::tap::TapError;

impl Thread {
    /// Makes the vnet the directory placed on this thread, letting in the clients
    /// `allow` admits, or frees its name.
    pub(super) fn create_vnet(
        &mut self,
        spec: NetworkSpec,
        allow: AllowList,
    ) -> Result<NetworkInfo, ControlError> {
        let name = spec.name.clone();
        let made = self.make_vnet(spec, allow);
        if made.is_err() {
            self.directory().remove(&name);
        }
        made
    }

    fn make_vnet(
        &mut self,
        mut spec: NetworkSpec,
        allow: AllowList,
    ) -> Result<NetworkInfo, ControlError> {
        self.limits.fit_macs(&mut spec).inspect_err(|hit| {
            let what = format!("refused vnet {:?}: {}", spec.name, hit.what);
            self.refusals
                .refuse(None, crate::dataplane::limits::MACS_PER_VNET, &what);
        })?;
        let dir = network_dir(&self.run_dir, &spec.name);
        let name = spec.name.clone();
        let mut vnet = Vnet::bind(spec, dir.clone()).map_err(|source| ControlError::Bind {
            vnet: name.clone(),
            dir: dir.clone(),
            source,
        })?;
        vnet.set_limits(self.limits, Arc::clone(&self.refusals));
        vnet.set_admission(allow, Arc::clone(&self.uid_ports));
        let key = self.vnets.vacant_key();
        let tokens = [
            Token(self.targets.insert(Target::StreamListener(key))),
            Token(self.targets.insert(Target::Dgram(key))),
            Token(self.targets.insert(Target::ApiListener(key))),
            Token(self.targets.insert(Target::VdeListener(key))),
        ];
        if let Err(source) = vnet.register_listeners(self.poll.registry(), tokens) {
            self.targets.retain(|_, t| t.vnet() != key);
            vnet.close(self.poll.registry());
            return Err(ControlError::Watch {
                what: format!("the sockets of {name:?}"),
                source,
            });
        }
        self.vnets.insert(vnet);
        self.names.insert(name.clone(), key);
        if let Err(e) = self
            .start_host_adapter(key)
            .and_then(|()| self.start_dhcp(key))
            .and_then(|()| self.start_nat(key))
            .and_then(|()| self.start_router(key))
            .and_then(|()| self.start_uplink(key))
        {
            self.delete_vnet(key);
            return Err(e);
        }
        let info = self.vnets[key].info(self.index);
        info!(
            net = name,
            mtu = info.mtu,
            "vnet created in {}",
            dir.display()
        );
        Ok(info)
    }

    pub(super) fn delete_vnet(&mut self, key: VnetKey) {
        self.forget_uplink(key, None);
        let vnet = self.vnets.remove(key);
        self.names.remove(vnet.name());
        self.directory().remove(vnet.name());
        self.refusals.forget(vnet.name());
        self.targets.retain(|_, t| t.vnet() != key);
        self.rx_list.retain(|(n, _)| *n != key);
        self.tx_list.retain(|(n, _)| *n != key);
        self.retry_list.retain(|(n, _)| *n != key);
        let name = vnet.name().to_string();
        vnet.close(self.poll.registry());
        info!(net = name, "vnet removed");
    }

    /// Brings up the vnet's host adapter, if it has one. A vnetd that never held
    /// `CAP_NET_ADMIN` (an ordinary user's) skips it with a warning (the rest of the
    /// vnet works); otherwise a failure is an error.
    fn start_host_adapter(&mut self, key: VnetKey) -> Result<(), ControlError> {
        let spec = self.vnets[key].spec();
        let (Some((ifname, address)), Some(subnet)) = (spec.host_adapter_resolved(), spec.subnet)
        else {
            return Ok(());
        };
        let (net_name, mtu, address6) = (spec.name.clone(), spec.mtu, spec.host_adapter6());
        let tap = match TapPort::host_adapter(&ifname) {
            Ok(tap) => tap,
            Err(e) if privilege::never_held(Capability::CAP_NET_ADMIN) => {
                warn!(
                    net = net_name,
                    "skipped the host adapter {ifname}: {}",
                    Chain(&e)
                );
                return Ok(());
            }
            Err(e) => return Err(ControlError::HostAdapterTap(e)),
        };
        netif::configure(&ifname, address, subnet.prefix_len(), mtu)
            .and_then(|()| netif::forbid_forwarding(&ifname))
            .and_then(|()| netif::ignore_router_advertisements(&ifname))
            .map_err(|source| ControlError::ConfigureHostAdapter {
                ifname: ifname.clone(),
                source,
            })?;
        // A host without IPv6 (disabled, or no ipv6 module) still gets the vnet.
        let address6 = address6.filter(|a| match netif::add_ipv6_address(&ifname, *a, 64) {
            Ok(()) => true,
            Err(e) => {
                warn!(net = net_name, "host adapter without IPv6: {}", Chain(&e));
                false
            }
        });
        let port = self.add_port(key, Box::new(tap), VlanMode::default(), None)?;
        self.vnets[key].set_host_adapter(vnet_model::HostAdapterInfo {
            name: ifname.clone(),
            address,
            address6,
            port: port.0,
        });
        info!(
            net = net_name,
            "host adapter {ifname} is {address}/{}{}",
            subnet.prefix_len(),
            address6.map_or(String::new(), |a| format!(" and {a}/64"))
        );
        Ok(())
    }

    /// Brings the vnet's IPv6 router in line with its spec after a live change (DHCP
    /// turned on gives a vnet IPv6; its domain is the RA's default search list).
    pub(super) fn refresh_router(&mut self, key: VnetKey) -> Result<(), ControlError> {
        let vnet = &self.vnets[key];
        let Some(router) = vnet.router6() else {
            return self.start_router(key);
        };
        let mac = router.borrow().config().mac;
        if let Some(config) = ra::config_for(vnet.spec(), mac) {
            router.borrow_mut().reconfigure(config, Instant::now());
        }
        Ok(())
    }

    /// Starts the vnet's IPv6 router, if it has IPv6: on the NAT device's port on a
    /// NAT vnet, else on a service port of its own (see `services::ra`).
    fn start_router(&mut self, key: VnetKey) -> Result<(), ControlError> {
        let spec = self.vnets[key].spec();
        let nat = self.vnets[key].nat().cloned();
        let mac = match nat {
            Some(_) => nat::device_mac(&spec.name),
            None => ra::router_mac(&spec.name),
        };
        let Some(config) = ra::config_for(spec, mac) else {
            return Ok(());
        };
        let (name, prefix) = (spec.name.clone(), config.prefix);
        let router = ra::start(config);
        let lifetime = router.borrow().router_lifetime();
        match nat {
            Some(nat) => nat.borrow_mut().set_router(Rc::clone(&router)),
            None => {
                let service = Rc::new(RefCell::new(RaService::new(Rc::clone(&router))));
                let port = ServicePort::new(service);
                let id = self.add_port(key, Box::new(port), VlanMode::default(), None)?;
                self.vnets[key]
                    .set_port_mac(Instant::now(), id, mac)
                    .map_err(ControlError::ServiceMac)?;
                self.services.push((key, id));
            }
        }
        self.vnets[key].set_router6(router);
        info!(net = name, "IPv6 {prefix}/64, router lifetime {lifetime} s");
        Ok(())
    }

    /// Bridges the vnet to its NIC, if its spec asks for it. A vnetd that never held
    /// `CAP_NET_RAW` skips it with a warning, like the host adapter.
    fn start_uplink(&mut self, key: VnetKey) -> Result<(), ControlError> {
        let Some(spec) = self.vnets[key].spec().uplink.clone() else {
            return Ok(());
        };
        self.vnets[key].set_uplink_spec(None);
        match self.set_uplink(key, spec.clone(), Instant::now()) {
            Ok(_) => Ok(()),
            Err(e)
                if e.kind() == ErrorKind::Forbidden
                    && privilege::never_held(Capability::CAP_NET_RAW) =>
            {
                let vnet = &mut self.vnets[key];
                warn!(net = vnet.name(), "skipped the uplink: {}", e.message());
                vnet.set_uplink_spec(Some(spec));
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Attaches the vnet's DHCP service, if its spec asks for one.
    pub(super) fn start_dhcp(&mut self, key: VnetKey) -> Result<(), ControlError> {
        let spec = self.vnets[key].spec().clone();
        let Some(config) = dhcp::config_for(&spec).map_err(ControlError::Dhcp)? else {
            return Ok(());
        };
        let mac = config.server_mac;
        let service =
            DhcpService::start(&spec, config, &self.state_dir).map_err(ControlError::Dhcp)?;
        let service = Rc::new(RefCell::new(service));
        let port = ServicePort::new(Rc::clone(&service));
        let id = self.add_port(key, Box::new(port), VlanMode::default(), None)?;
        let vnet = &mut self.vnets[key];
        vnet.set_port_mac(Instant::now(), id, mac)
            .map_err(ControlError::ServiceMac)?;
        vnet.set_dhcp(id, service);
        self.services.push((key, id));
        Ok(())
    }

    /// Attaches the vnet's NAT device, if its spec asks for one.
    fn start_nat(&mut self, key: VnetKey) -> Result<(), ControlError> {
        let spec = self.vnets[key].spec().clone();
        let Some(mut config) = nat::config_for(&spec) else {
            return Ok(());
        };
        config.max_flows = self.limits.nat_flows;
        let mac = config.mac;
        let limits = nat::NatLimits {
            buffer_bytes: self.limits.nat_buffer_bytes,
            fd_ceiling: crate::dataplane::limits::descriptor_ceiling(
                self.limits.fd_reserve_control,
            ),
        };
        let service = NatService::start(&spec, config, limits).map_err(ControlError::NatStart)?;
        let service = Rc::new(RefCell::new(service));
        self.vnets[key].set_nat(Rc::clone(&service));
        let port = ServicePort::new(service);
        let id = self.add_port(key, Box::new(port), VlanMode::default(), None)?;
        self.vnets[key]
            .set_port_mac(Instant::now(), id, mac)
            .map_err(ControlError::ServiceMac)?;
        self.services.push((key, id));
        Ok(())
    }

    /// Turns every client waiting on one of vnet `key`'s listening sockets into a port;
    /// a client the allow lists refuse, or over `[limits] ports_per_vnet` or
    /// `ports_per_uid`, has its connection closed at once. A VDE port's handshake has a
    /// deadline: its timer runs with the services'.
    pub(super) fn accept(&mut self, key: VnetKey, listener: Listener) {
        while let Some((backend, client)) = self.vnets.get_mut(key).and_then(|v| v.accept(listener))
        {
            let vde = backend.kind() == vnet_model::PortKind::Vde;
            if let Ok(id) = self.add_client_port(key, backend, &client) {
                if vde {
                    self.services.push((key, id));
                }
            }
        }
    }

    /// [`Thread::add_port`] for a port `client` makes on the default VLAN, if the vnet
    /// admits it ([`crate::dataplane::vnet::Vnet::admit`]; refused: the backend is
    /// dropped, closing its client's connection).
    pub(super) fn add_client_port(
        &mut self,
        key: VnetKey,
        backend: Box<dyn Backend>,
        client: &Client,
    ) -> Result<PortId, ControlError> {
        let vnet = self.vnets.get(key).ok_or(ControlError::Stopped)?;
        let owner = vnet.admit(&backend.description(), client, false)?;
        self.add_port(key, backend, VlanMode::default(), Some(owner))
    }

    /// Attaches a backend, made by `owner` (`None`: the vnet's own), to vnet `key` and
    /// starts watching it.
    pub(super) fn add_port(
        &mut self,
        key: VnetKey,
        backend: Box<dyn Backend>,
        vlan: VlanMode,
        owner: Option<Owner>,
    ) -> Result<PortId, ControlError> {
        let vnet = self.vnets.get_mut(key).ok_or(ControlError::Stopped)?;
        // Ports on a host interface hold it: no other port or uplink may take it.
        let held = match (backend.kind(), backend.identity().ifname) {
            (PortKind::Tap | PortKind::Interface, Some(ifname)) => {
                Some((ifname.to_string(), backend.description()))
            }
            _ => None,
        };
        let id = vnet.attach(backend, vlan, owner)?;
        if let Some((ifname, description)) = held {
            let what = format!("port {id} ({description})");
            directory::lock(&self.directory).hold(&ifname, vnet.name(), id, what);
        }
        let entry = self.targets.vacant_entry();
        let token = Token(entry.key());
        match vnet.watch_port(self.poll.registry(), id, token) {
            Ok(true) => {
                entry.insert(Target::Port(key, id));
            }
            Ok(false) => {}
            Err(source) => {
                vnet.detach(self.poll.registry(), id, "cannot watch it");
                return Err(ControlError::Watch {
                    what: "the port".into(),
                    source,
                });
            }
        }
        Ok(id)
    }

    pub(super) fn close_port(&mut self, key: VnetKey, id: PortId, why: &str) {
        let registry = self.poll.registry();
        if let Some(vnet) = self.vnets.get_mut(key) {
            directory::lock(&self.directory).unhold(vnet.name(), id);
            if let Some(token) = vnet.detach(registry, id, why) {
                self.targets.try_remove(token.0);
            }
        }
        self.forget_uplink(key, Some(id));
    }

    /// `vnet port add`: a TAP or a vhost-user port, for `by` (`None`: the
    /// configuration's, vnetd's own).
    pub(super) fn add_port_spec(
        &mut self,
        key: VnetKey,
        spec: PortSpec,
        by: Option<&Requester>,
        now: Instant,
    ) -> Result<PortInfo, ControlError> {
        let what = match &spec {
            PortSpec::Tap { ifname, .. } => format!("TAP {ifname}"),
            PortSpec::VhostUser { name, .. } => format!("vhost-user {name}"),
            PortSpec::Interface { interface, .. } => format!("interface {interface}"),
        };
        let what = format!("a port add of {what}");
        let owner = match by {
            Some(r) => Some(self.vnets[key].admit(&what, &r.client, r.admin)?),
            None => {
                self.vnets[key].admit_client(&what)?;
                None
            }
        };
        let policy = spec.policy().clone();
        let id = match spec {
            PortSpec::Tap { ifname, vlan, .. } => self.add_tap_port(key, ifname, vlan, owner)?,
            PortSpec::VhostUser { name, vlan, .. } => {
                self.add_vhost_user_port(key, &name, vlan, owner)?
            }
            PortSpec::Interface {
                interface, vlan, ..
            } => self.add_interface_port(key, &interface, vlan, owner)?,
        };
        let vnet = &mut self.vnets[key];
        if !policy.is_empty() {
            vnet.set_port_policy(id, &vnet_model::PolicyPatch::replace_with(&policy))?;
        }
        vnet.port_info(now, id).ok_or(ControlError::Stopped)
    }

    /// `vnet port add NET --tap IF`: creates (or opens) TAP `ifname` and owns it.
    fn add_tap_port(
        &mut self,
        key: VnetKey,
        ifname: String,
        vlan: VlanMode,
        owner: Option<Owner>,
    ) -> Result<PortId, ControlError> {
        for (_, vnet) in self.vnets.iter() {
            if let Some(id) = vnet.tap_port(&ifname) {
                return Err(Conflict::Tap {
                    ifname,
                    port: id.0,
                    vnet: vnet.name().into(),
                }
                .into());
            }
        }
        // An interface port's or an uplink's interface, on any thread.
        if let Some(conflict) = self.directory().user_of(&ifname) {
            return Err(conflict.into());
        }
        let tap = TapPort::open(&ifname).map_err(|source| match &source {
            // Open already: by another program, or as a port of a vnet on another
            // data-plane thread (the loop above sees only this thread's vnets).
            TapError::SetIff { source: e, .. } if e.raw_os_error() == Some(libc::EBUSY) => {
                Conflict::TapBusy(ifname.clone()).into()
            }
            _ => ControlError::Tap(source),
        })?;
        self.add_port(key, Box::new(tap), vlan, owner)
    }

    /// `vnet port add NET --interface IF`: joins a host interface another program
    /// holds. Refused: a name no interface can have, the loopback, an interface a port
    /// or an uplink of this vnetd has already. One that does not exist (yet) is waited
    /// for, as one that goes away later.
    fn add_interface_port(
        &mut self,
        key: VnetKey,
        interface: &str,
        vlan: VlanMode,
        owner: Option<Owner>,
    ) -> Result<PortId, ControlError> {
        if !vnet_model::is_valid_ifname(interface) {
            return Err(ControlError::InterfaceName(interface.into()));
        }
        if let Some(conflict) = self.directory().user_of(interface) {
            return Err(conflict.into());
        }
        if netif::link_flags(interface).is_ok_and(|f| f.loopback) {
            return Err(ControlError::Loopback(interface.into()));
        }
        let port =
            InterfacePort::open(interface).map_err(|source| ControlError::OpenInterface {
                interface: interface.into(),
                source,
            })?;
        let id = self.add_port(key, Box::new(port), vlan, owner)?;
        // Its timer follows the interface while it is down or away.
        self.services.push((key, id));
        Ok(id)
    }

    /// `vnet port add NET --vhost-user NAME`: listens on `RUN/NET/vhost-user/NAME.sock`.
    fn add_vhost_user_port(
        &mut self,
        key: VnetKey,
        name: &str,
        vlan: VlanMode,
        owner: Option<Owner>,
    ) -> Result<PortId, ControlError> {
        use crate::backend::vhost_user::{socket_path, valid_name, VhostUserPort};
        if !valid_name(name) {
            return Err(ControlError::VhostUserName(name.into()));
        }
        let vnet = &self.vnets[key];
        let path = socket_path(vnet.dir(), name);
        if vnet.has_vhost_user_port(name) {
            return Err(Conflict::VhostUser {
                vnet: vnet.name().into(),
                name: name.into(),
            }
            .into());
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| ControlError::Listen {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let port = VhostUserPort::listen(name, &path, vnet.gate()).map_err(|source| {
            ControlError::VhostUserListen {
                path: path.clone(),
                source,
            }
        })?;
        self.add_port(key, Box::new(port), vlan, owner)
    }
}
