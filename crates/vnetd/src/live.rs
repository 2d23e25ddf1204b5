//! The running vnets as vnetd saves, exports and reloads them: the data plane's specs
//! plus what only vnetd knows (the spec of each port it made, who added it through the
//! API, the config file's vnets as last applied).
//!
//! Every change is saved before it is answered: [`Live::save`] takes a snapshot after
//! the change and writes it (atomically, fsynced) while holding one lock, so saves never
//! interleave and the file a later save leaves holds every change answered before it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use anyhow::{anyhow, Context};
use tracing::{info, warn};
use vnet_io::{ControlError, ErrorKind, Handle};
use vnet_model::{PolicyPatch, PortSpec};

use crate::config::Config;
use crate::reload::{plan, Op};
use crate::state::{self, export, port_identity, SavedNet, State};

/// A port vnetd knows more of than the data plane does.
#[derive(Debug)]
struct Known {
    /// How to make it again (every port the API adds is a TAP, interface or vhost-user port).
    spec: PortSpec,
    /// The uid that added it through the API.
    owner: Option<u32>,
}

/// See the module documentation.
pub struct Live {
    handle: Handle,
    /// (vnet, port id) → what vnetd knows of the port. Port ids are never reused within
    /// a vnet, and entries go with their vnet, so a new port cannot inherit an old one's.
    ports: Mutex<HashMap<(String, u32), Known>>,
    /// The config file's vnets as last applied; also the lock every save and reload
    /// holds.
    applied: tokio::sync::Mutex<Vec<SavedNet>>,
    /// `STATE/state.json`.
    file: PathBuf,
    /// What reload re-reads (`None`: the built-in configuration).
    config: Option<PathBuf>,
    daemon: export::Daemon,
    /// The config file's daemon-wide keys at start ([`Config::daemon_keys`]).
    daemon_keys: String,
}

/// Why a reload changed nothing; `kind` chooses the API's status.
#[derive(Debug)]
pub struct ReloadError {
    pub kind: ErrorKind,
    pub message: String,
}

impl Live {
    pub fn new(
        handle: Handle,
        file: PathBuf,
        config: Option<PathBuf>,
        daemon: export::Daemon,
        daemon_keys: String,
    ) -> Live {
        Live {
            handle,
            ports: Mutex::default(),
            applied: tokio::sync::Mutex::default(),
            file,
            config,
            daemon,
            daemon_keys,
        }
    }

    fn ports(&self) -> MutexGuard<'_, HashMap<(String, u32), Known>> {
        self.ports.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Who added port `id` of `net` through the API.
    pub fn owner(&self, net: &str, id: u32) -> Option<u32> {
        self.ports()
            .get(&(net.to_string(), id))
            .and_then(|k| k.owner)
    }

    /// Records a port just added: how to make it again, and who added it.
    pub fn port_added(&self, net: &str, id: u32, spec: &PortSpec, owner: Option<u32>) {
        let known = Known {
            spec: spec.clone(),
            owner,
        };
        self.ports().insert((net.to_string(), id), known);
    }

    pub fn port_removed(&self, net: &str, id: u32) {
        self.ports().remove(&(net.to_string(), id));
    }

    pub fn net_deleted(&self, net: &str) {
        self.ports().retain(|(n, _), _| n != net);
    }

    /// Every vnet as it runs now, with the ports vnetd made (their VLANs as they are).
    pub async fn snapshot(&self) -> Result<Vec<SavedNet>, ControlError> {
        let mut nets = Vec::new();
        for info in self.handle.networks().await? {
            let name = info.name;
            // A vnet deleted meanwhile is simply not in the snapshot.
            let (spec, running) = match (
                self.handle.spec(name.clone()).await,
                self.handle.ports(name.clone()).await,
            ) {
                (Ok(spec), Ok(ports)) => (spec, ports),
                (Err(e), _) | (_, Err(e)) if e.kind() == ErrorKind::NotFound => continue,
                (Err(e), _) | (_, Err(e)) => return Err(e),
            };
            let known = self.ports();
            let ports = running
                .iter()
                .filter_map(|p| {
                    let spec = &known.get(&(name.clone(), p.id))?.spec;
                    Some(state::as_running(spec, p))
                })
                .collect();
            nets.push(SavedNet { spec, ports });
        }
        Ok(nets)
    }

    /// Saves the running vnets (see the module documentation).
    pub async fn save(&self) -> anyhow::Result<()> {
        let applied = self.applied.lock().await;
        self.write(&applied).await
    }

    async fn write(&self, applied: &[SavedNet]) -> anyhow::Result<()> {
        let state = State {
            networks: self.snapshot().await?,
            config: applied.to_vec(),
        };
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || state::file::save(&file, &state))
            .await
            .context("the state writer panicked")?
            .with_context(|| format!("cannot save {}", self.file.display()))
    }

    /// The running configuration as a config file.
    pub async fn export(&self) -> Result<String, ControlError> {
        Ok(export::render(&self.daemon, &self.snapshot().await?))
    }

    /// Starts `nets` (the saved state merged with the config file, whose vnets are
    /// `config`) and saves. A vnet that cannot be made stops the start; a port only
    /// earns a warning, as it always has.
    pub async fn start(&self, nets: &[SavedNet], config: Vec<SavedNet>) -> anyhow::Result<()> {
        let mut applied = self.applied.lock().await;
        for net in nets {
            self.apply(&Op::Create(Box::new(net.clone())), false)
                .await
                .map_err(|e| anyhow!("cannot create vnet {:?}: {}", net.name(), e.message()))?;
        }
        *applied = config;
        self.write(&applied).await
    }

    /// Re-reads the config file and applies what changed in it since it was last
    /// applied ([`state::merge`], [`plan`]). All or nothing: after a failed change the
    /// changes made before it are undone. Returns the changes made.
    pub async fn reload(&self) -> Result<Vec<String>, ReloadError> {
        let mut applied = self.applied.lock().await;
        let failed = |kind, message| ReloadError { kind, message };
        let config = match &self.config {
            Some(path) => Config::load(path)
                .map_err(|e| failed(ErrorKind::Invalid, format!("{:#}", anyhow!(e))))?,
            None => Config::built_in(),
        };
        if config.daemon_keys() != self.daemon_keys {
            warn!(
                "reload: threads, busy_poll_us, [access] or [limits] changed in the \
                 configuration: they take effect at the next start"
            );
        }
        let config = state::of_config(&config);
        let before = self
            .snapshot()
            .await
            .map_err(|e| failed(e.kind(), e.message()))?;
        let wanted = state::merge(&before, &applied, &config);
        let mut done = Vec::new();
        for op in plan(&before, &wanted) {
            if let Err(e) = self.apply(&op, true).await {
                let undone = self.undo(&before).await;
                return Err(failed(
                    e.kind(),
                    format!(
                        "cannot {op}: {}; {undone}, the configuration was not applied",
                        e.message()
                    ),
                ));
            }
            info!("reload: {op}");
            done.push(op.to_string());
        }
        *applied = config;
        self.write(&applied)
            .await
            .map_err(|e| failed(ErrorKind::Failed, format!("{e:#}")))?;
        Ok(done)
    }

    /// Brings the running vnets back to `before`, as far as it goes; says how it went.
    async fn undo(&self, before: &[SavedNet]) -> &'static str {
        let now = match self.snapshot().await {
            Ok(now) => now,
            Err(e) => {
                warn!("reload: cannot undo: {}", e.message());
                return "undoing the changes before it failed (see the log)";
            }
        };
        let mut clean = true;
        for op in plan(&now, before) {
            if let Err(e) = self.apply(&op, false).await {
                warn!("reload: cannot undo, {op}: {}", e.message());
                clean = false;
            }
        }
        match clean {
            true => "the changes before it were undone",
            false => "undoing the changes before it failed in part (see the log)",
        }
    }

    /// Carries out one change. With `strict` unset a port that cannot be made is
    /// skipped with a warning.
    async fn apply(&self, op: &Op, strict: bool) -> Result<(), ControlError> {
        let h = &self.handle;
        match op.clone() {
            Op::Create(net) => {
                h.create_network(net.spec.clone()).await?;
                for port in &net.ports {
                    self.add_port(net.name(), port, strict).await?;
                }
            }
            Op::Delete(net) => {
                h.delete_network(net.clone()).await?;
                self.net_deleted(&net);
            }
            Op::SetDhcp(net, dhcp) => {
                h.set_dhcp(net, dhcp).await?;
            }
            Op::SetUplink(net, uplink) => {
                h.set_uplink(net, uplink).await?;
            }
            Op::RemoveUplink(net) => h.remove_uplink(net).await?,
            Op::AddForward(net, f) => {
                h.add_forward(net, f).await?;
            }
            Op::RemoveForward(net, proto, host) => h.remove_forward(net, proto, host).await?,
            Op::AddPort(net, port) => self.add_port(&net, &port, strict).await?,
            Op::RemovePort(net, port) => {
                if let Some(id) = self.port_id(&net, &port) {
                    h.remove_port(net.clone(), id).await?;
                    self.port_removed(&net, id);
                }
            }
            Op::SetPortVlan(net, port) => {
                if let Some(id) = self.port_id(&net, &port) {
                    h.set_port_vlan(net, id, port.vlan().clone()).await?;
                }
            }
            Op::SetPortPolicy(net, port) => {
                if let Some(id) = self.port_id(&net, &port) {
                    let patch = PolicyPatch::replace_with(port.policy());
                    h.set_port_policy(net, id, patch).await?;
                }
            }
            Op::SetPolicy(net, policy) => {
                h.set_policy(net, PolicyPatch::replace_with(&policy))
                    .await?;
            }
        }
        Ok(())
    }

    async fn add_port(&self, net: &str, spec: &PortSpec, strict: bool) -> Result<(), ControlError> {
        match self
            .handle
            .add_port(net.to_string(), spec.clone(), None)
            .await
        {
            Ok(p) => {
                info!(net, port = p.id, "{}", p.description);
                self.port_added(net, p.id, spec, None);
                Ok(())
            }
            Err(e) if !strict && !matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Stopped) => {
                let (kind, name) = port_identity(spec);
                warn!(net, "skipped {kind} port {name}: {}", e.message());
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The id of the port vnetd made in `net` with `spec`'s identity.
    fn port_id(&self, net: &str, spec: &PortSpec) -> Option<u32> {
        self.ports().iter().find_map(|((n, id), k)| {
            (n == net && port_identity(&k.spec) == port_identity(spec)).then_some(*id)
        })
    }
}
