//! A vnet's sockets: its directory `RUN/NAME` with `stream.sock`, `dgram.sock`,
//! `api.sock` and the VDE switch directory `vde/`, bound when the vnet is made, turned
//! into ports as clients connect, and removed with the vnet.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use mio::net::{UnixDatagram, UnixListener};
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use tracing::warn;
use vnet_core::switch::{FastMap, MacLimits, PortId, Switch, SwitchConfig};
use vnet_core::wire::ethernet::VLAN_TAG_LEN;
use vnet_model::NetworkSpec;

use super::Vnet;
use crate::admission::Client;
use crate::backend::seqpacket::SeqpacketPort;
use crate::backend::stream::StreamPort;
use crate::backend::vde::VdePort;
use crate::backend::Backend;
use crate::error::Chain;
use crate::frame::BufPool;
use crate::sys::mmsg::RecvBatch;
use crate::sys::{peer, seqpacket};

/// A vnet's listening sockets, where new clients become ports.
#[derive(Debug, Clone, Copy)]
pub(in crate::dataplane) enum Listener {
    /// `stream.sock`: QEMU `-netdev stream`.
    Stream,
    /// `api.sock`: the vnet API.
    Api,
    /// `vde/ctl`: VDE clients.
    Vde,
}

/// The vnet's VDE switch directory: `ctl` and the VDE ports' data sockets.
fn vde_dir(dir: &Path) -> PathBuf {
    dir.join("vde")
}

/// Paths of a vnet's sockets inside its directory.
pub(in crate::dataplane) fn socket_paths(dir: &Path) -> [PathBuf; 3] {
    [
        dir.join("stream.sock"),
        dir.join("dgram.sock"),
        dir.join("api.sock"),
    ]
}

impl Vnet {
    /// Creates the vnet's directory and binds its sockets (replacing stale ones). A
    /// directory left by an earlier run is reused only if it is vnetd's own and writable by
    /// no one else (`vnet_dirs::claim`), so no one can have planted sockets in it.
    pub fn bind(spec: NetworkSpec, dir: PathBuf) -> io::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        vnet_dirs::claim::claim_dir(&dir, 0o755, "choose another --run-dir")?;
        let [stream, dgram, api] = socket_paths(&dir);
        for p in [&stream, &dgram, &api] {
            match std::fs::remove_file(p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        let stream_listener = UnixListener::bind(&stream)?;
        let dgram_sock = UnixDatagram::bind(&dgram)?;
        // Each datagram then says which uid sent it: a dgram peer may only have frames
        // sent to its own socket (`backend::dgram`).
        crate::sys::sockopt::set(
            dgram_sock.as_fd(),
            libc::SOL_SOCKET,
            libc::SO_PASSCRED,
            &1i32,
        )?;
        let api_listener = seqpacket::listen_at(&api)?;
        for p in [&stream, &dgram, &api] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o660))?;
        }
        // Clients bind their own data sockets in the VDE directory too: sticky, so
        // they cannot remove each other's (or ctl).
        let vde = vde_dir(&dir);
        match std::fs::remove_dir_all(&vde) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        std::fs::create_dir(&vde)?;
        // Keep the set-group-ID bit a shared run directory passes down, so `ctl` gets
        // its group (vnetd's `[access] user_group`) like the other sockets.
        let setgid = std::fs::metadata(&vde)?.permissions().mode() & 0o2000;
        std::fs::set_permissions(&vde, std::fs::Permissions::from_mode(0o1770 | setgid))?;
        let vde_listener = UnixListener::bind(vde.join("ctl"))?;
        std::fs::set_permissions(vde.join("ctl"), std::fs::Permissions::from_mode(0o660))?;
        let max_frame = SwitchConfig::max_frame_for_mtu(spec.mtu as usize);
        let config = SwitchConfig {
            max_frame,
            mac_limits: MacLimits {
                aging: Duration::from_secs(spec.mac_aging_secs),
                per_port: spec.max_macs_per_port,
                total: spec.max_macs,
            },
            snooping: spec.snooping,
        };
        Ok(Vnet {
            // One spare byte shows that a read filled the buffer: the frame was longer.
            pool: BufPool::new(max_frame + VLAN_TAG_LEN + 1),
            switch: Switch::new(config),
            ports: FastMap::default(),
            stream_listener,
            api_listener,
            vde_listener,
            dgram: Rc::new(dgram_sock),
            dgram_peers: HashMap::new(),
            dgram_batch: RecvBatch::new(),
            dgram_refused: 0,
            dgram_refusals_logged: Default::default(),
            dgram_refused_uids: HashMap::new(),
            host_adapter: None,
            dhcp: None,
            nat: None,
            router6: None,
            scratch: Vec::new(),
            limits: Default::default(),
            refusals: Default::default(),
            allow: Default::default(),
            daemon_uid: nix::unistd::geteuid().as_raw(),
            uid_ports: Default::default(),
            refusals_counted: [0; 4],
            taps: Vec::new(),
            capture_totals: Default::default(),
            mirrors: Default::default(),
            mirror_due: Vec::new(),
            enforcers: FastMap::default(),
            dhcp_bindings: Default::default(),
            emitted: Vec::new(),
            released: Vec::new(),
            orphans: Vec::new(),
            due: Vec::new(),
            shaping: 0,
            spec,
            dir,
        })
    }

    pub fn register_listeners(
        &mut self,
        registry: &Registry,
        tokens: [Token; 4],
    ) -> io::Result<()> {
        registry.register(&mut self.stream_listener, tokens[0], Interest::READABLE)?;
        // The dgram socket is shared by all its peers' ports, whose output waits on it.
        let dgram = Rc::get_mut(&mut self.dgram).expect("no dgram ports yet");
        registry.register(dgram, tokens[1], Interest::READABLE | Interest::WRITABLE)?;
        registry.register(
            &mut SourceFd(&self.api_listener.as_raw_fd()),
            tokens[2],
            Interest::READABLE,
        )?;
        registry.register(&mut self.vde_listener, tokens[3], Interest::READABLE)
    }

    /// The next client waiting on one of the vnet's listening sockets, as a backend,
    /// and who it is (`SO_PEERCRED`, `SO_PEERGROUPS`); `None` once there is none (a
    /// failed accept is logged; a client whose credentials the kernel will not give is
    /// closed, as no one could tell whom its port belongs to).
    pub fn accept(&mut self, listener: Listener) -> Option<(Box<dyn Backend>, Client)> {
        loop {
            let failed = match listener {
                Listener::Stream => match self.stream_listener.accept() {
                    Ok((sock, _)) => {
                        let Some(client) = self.credentials(&sock, "stream.sock") else {
                            continue;
                        };
                        let max_frame = self.switch.config().max_frame;
                        let force = self.limits.stream_sndbuf_force;
                        let peer = peer::describe(Some(&client));
                        let port = StreamPort::new(sock, peer, max_frame, force);
                        return Some((Box::new(port), client));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                    Err(e) => format!("accept on stream.sock failed: {e}"),
                },
                Listener::Api => match seqpacket::accept(&self.api_listener) {
                    Ok(Some(sock)) => {
                        let Some(client) = self.credentials(&sock, "api.sock") else {
                            continue;
                        };
                        let port = SeqpacketPort::new(sock, peer::describe(Some(&client)));
                        return Some((Box::new(port), client));
                    }
                    Ok(None) => return None,
                    Err(e) => format!("accept on api.sock failed: {e}"),
                },
                Listener::Vde => match self.vde_listener.accept() {
                    Ok((sock, _)) => {
                        let Some(client) = self.credentials(&sock, "vde/ctl") else {
                            continue;
                        };
                        match VdePort::new(
                            sock,
                            &client,
                            &vde_dir(&self.dir),
                            self.name(),
                            self.limits.vde_handshake,
                        ) {
                            Ok(port) => return Some((Box::new(port), client)),
                            Err(e) => {
                                let e = Chain(&e);
                                warn!(net = self.name(), "cannot open a VDE port: {e}");
                                continue;
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                    Err(e) => format!("accept on vde/ctl failed: {e}"),
                },
            };
            warn!(net = self.name(), "{failed}");
            return None;
        }
    }

    /// The credentials of a client accepted on `socket`; `None` (logged) if the kernel
    /// will not give them.
    fn credentials<F: AsFd>(&self, sock: &F, socket: &str) -> Option<Client> {
        let client = peer::credentials(sock);
        if client.is_none() {
            warn!(
                net = self.name(),
                "closed a client of {socket}: the kernel gives no credentials for it"
            );
        }
        client
    }

    /// Closes every port and removes the vnet's sockets and directory.
    pub fn close(mut self, registry: &Registry) {
        let ids: Vec<PortId> = self.ports.keys().copied().collect();
        for id in ids {
            self.detach(registry, id, "vnet removed");
        }
        let _ = registry.deregister(&mut self.stream_listener);
        if let Some(d) = Rc::get_mut(&mut self.dgram) {
            let _ = registry.deregister(d);
        }
        let _ = registry.deregister(&mut SourceFd(&self.api_listener.as_raw_fd()));
        let _ = registry.deregister(&mut self.vde_listener);
        for p in socket_paths(&self.dir) {
            let _ = std::fs::remove_file(p);
        }
        // ctl, and any data socket a client left behind.
        let _ = std::fs::remove_dir_all(vde_dir(&self.dir));
        let _ = std::fs::remove_dir(&self.dir);
    }
}
