//! A vnet's mirrors (SPAN): its spec's [`MirrorSpec`]s resolved to the ports that
//! exist now, the switch told which ports are destinations, and the copies made on
//! the frame path.
//!
//! The spec keeps every mirror; one whose ports are not all there (a TAP not created
//! yet, a vhost-user port whose VM is off) waits and becomes active when they appear:
//! the table is rebuilt whenever a port comes or goes. A copy goes straight to the
//! destination's bounded egress queue (a full one drops it, counted for the mirror
//! and as `queue_full` on the port); the destination's own policy does not apply to
//! copies.

use tracing::info;
use vnet_core::switch::mirror::{Mirror, Side};
use vnet_core::switch::PortId;
use vnet_model::{MirrorInfo, MirrorSpec, MirrorState, PortKind, PortRef, SpecError};

use super::Vnet;
use crate::dataplane::error::{ControlError, Missing};
use crate::frame::FrameBuf;

impl Vnet {
    /// The mirrors with their state and counters, in the order they were made.
    pub fn mirrors(&self) -> Vec<MirrorInfo> {
        self.spec
            .mirrors
            .iter()
            .map(|spec| {
                let (state, reason, source_ids, destination_id) = match self.resolve(spec) {
                    Ok(m) => (
                        MirrorState::Active,
                        None,
                        m.sources.iter().map(|p| p.0).collect(),
                        Some(m.destination.0),
                    ),
                    Err(why) => (MirrorState::Waiting, Some(why), Vec::new(), None),
                };
                MirrorInfo {
                    name: spec.name.clone(),
                    sources: spec.sources.clone(),
                    direction: spec.direction,
                    destination: spec.destination.clone(),
                    state,
                    reason,
                    source_ids,
                    destination_id,
                    counters: self.mirrors.counters(&spec.name),
                }
            })
            .collect()
    }

    /// Adds a mirror live; it copies at once if its ports exist.
    pub fn add_mirror(&mut self, spec: MirrorSpec) -> Result<MirrorInfo, ControlError> {
        spec.check_among(&self.spec.mirrors)
            .map_err(|e| ControlError::Invalid(SpecError::Mirror(e)))?;
        let name = spec.name.clone();
        self.spec.mirrors.push(spec);
        self.remirror();
        info!(net = self.name(), "mirror {name} added");
        Ok(self
            .mirrors()
            .pop()
            .expect("the mirror just added is the last"))
    }

    /// Removes mirror `name`; its destination switches as an ordinary port again.
    pub fn remove_mirror(&mut self, name: &str) -> Result<(), ControlError> {
        let before = self.spec.mirrors.len();
        self.spec.mirrors.retain(|m| m.name != name);
        if self.spec.mirrors.len() == before {
            return Err(Missing::Mirror {
                vnet: self.name().to_string(),
                name: name.to_string(),
            }
            .into());
        }
        self.remirror();
        info!(net = self.name(), "mirror {name} removed");
        Ok(())
    }

    /// Replaces the mirrors (a reload of the configuration); counters are kept for the
    /// names that stay.
    pub fn set_mirrors(&mut self, mirrors: Vec<MirrorSpec>) -> Result<(), ControlError> {
        vnet_model::mirror::check_all(&mirrors)
            .map_err(|e| ControlError::Invalid(SpecError::Mirror(e)))?;
        self.spec.mirrors = mirrors;
        self.remirror();
        Ok(())
    }

    /// The names of the active mirrors whose destination `id` is.
    pub(super) fn mirror_names_to(&self, id: PortId) -> Vec<String> {
        self.mirrors
            .active()
            .iter()
            .filter(|m| m.destination == id)
            .map(|m| m.name.clone())
            .collect()
    }

    /// Rebuilds the mirror table from the spec and the ports there are now, and tells
    /// the switch which ports are destinations. Costs nothing while the vnet has no
    /// mirror.
    pub(super) fn remirror(&mut self) {
        if self.spec.mirrors.is_empty() && self.mirrors.is_empty() {
            return;
        }
        let active: Vec<Mirror> = self
            .spec
            .mirrors
            .iter()
            .filter_map(|spec| self.resolve(spec).ok())
            .collect();
        let names: Vec<&str> = self.spec.mirrors.iter().map(|m| m.name.as_str()).collect();
        let destinations: Vec<PortId> = active.iter().map(|m| m.destination).collect();
        self.mirrors.rebuild(active, names);
        // Pinned addresses never age: the time is only recorded.
        let now = std::time::Instant::now();
        let ids: Vec<PortId> = self.switch.ports().map(|p| p.id).collect();
        for id in ids {
            let _ = self
                .switch
                .set_mirror_destination(now, id, destinations.contains(&id));
        }
    }

    /// `spec` on the ports there are now, or why it waits.
    fn resolve(&self, spec: &MirrorSpec) -> Result<Mirror, String> {
        let sources = spec
            .sources
            .iter()
            .map(|r| self.port_of(r))
            .collect::<Result<Vec<_>, _>>()?;
        let destination = self.port_of(&spec.destination)?;
        if sources.contains(&destination) {
            return Err(format!(
                "port {} is both a source and the destination",
                destination
            ));
        }
        let kind = self.ports[&destination].backend.kind();
        if kind == PortKind::Service {
            return Err(format!(
                "port {destination} is a service, which cannot be a destination"
            ));
        }
        // Ports given by id and by name may turn out the same: the checks of
        // `MirrorSpec::check_among` again, on ports.
        let others = self.spec.mirrors.iter().filter(|m| m.name != spec.name);
        for other in others {
            if let Ok(other_dst) = self.port_of(&other.destination) {
                if sources.contains(&other_dst) {
                    return Err(format!(
                        "port {other_dst} is the destination of mirror {:?}",
                        other.name
                    ));
                }
            }
            for source in &other.sources {
                if self.port_of(source) == Ok(destination) {
                    return Err(format!(
                        "port {destination} is a source of mirror {:?}",
                        other.name
                    ));
                }
            }
        }
        Ok(Mirror {
            name: spec.name.clone(),
            sources,
            direction: spec.direction,
            destination,
        })
    }

    /// The port `r` names: an id, or the ifname of a TAP or interface port or the name
    /// of a vhost-user port.
    fn port_of(&self, r: &PortRef) -> Result<PortId, String> {
        match r {
            PortRef::Id(id) if self.ports.contains_key(&PortId(*id)) => Ok(PortId(*id)),
            PortRef::Id(id) => Err(format!("no port {id}")),
            PortRef::Name(name) => self
                .ports
                .iter()
                .filter(|(_, p)| {
                    let identity = p.backend.identity();
                    identity.ifname == Some(name) || identity.vhost_user_name == Some(name)
                })
                .map(|(id, _)| *id)
                .min()
                .ok_or_else(|| format!("no port {name:?}")),
        }
    }

    /// Copies `buf`, crossing `port` on `side`, to the mirror destinations still due a
    /// copy of this frame. Call it only when the table is not empty. Never inlined: the
    /// frame path without mirrors stays as small as it was.
    #[inline(never)]
    pub(super) fn mirror(
        &mut self,
        port: PortId,
        side: Side,
        buf: &FrameBuf,
        touched: &mut Vec<PortId>,
    ) {
        let mut due = std::mem::take(&mut self.mirror_due);
        due.clear();
        self.mirrors.copies(port, side, &mut due);
        for d in &due {
            let mut copy = self.pool.get_for(buf.len());
            copy.copy_from(buf);
            let queued = self.queue(d.destination, copy, touched);
            self.mirrors.count(d.mirror, buf.len(), queued);
        }
        self.mirror_due = due;
    }
}
