//! Bounds on what clients can make the daemon hold, and the count of refusals.
//!
//! Every resource a client can make vnetd hold has a bound ([`Limits`], vnetd's
//! `[limits]` table). Hitting one refuses the new thing only (a connection is closed at
//! once, a datagram's sender gets no port, an API request fails with 409): what exists
//! keeps working. Each refusal is counted per vnet and limit ([`Refusals`], the
//! `vnet_limit_refusals_total` metric) and logged, at warning level for the 1st, 2nd,
//! 4th, 8th... refusal of a kind (so a flood cannot flood the log), else at debug.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tracing::{debug, warn};

/// The bounds, with the defaults of vnetd's `[limits]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Client ports per vnet: stream, api, VDE, dgram peers, classic-device opens,
    /// TAP and vhost-user ports added through the API (not the vnet's own services,
    /// host adapter or uplink).
    pub ports_per_vnet: usize,
    /// How long a VDE client may take to send its request on `vde/ctl`.
    pub vde_handshake: Duration,
    /// Vnets the daemon runs.
    pub vnets: usize,
    /// Whether stream ports get their send buffer ([`crate::backend::stream::SEND_BUFFER`])
    /// past `net.core.wmem_max` (`SO_SNDBUFFORCE`, root only); else the kernel caps it.
    pub stream_sndbuf_force: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            ports_per_vnet: 256,
            vde_handshake: Duration::from_secs(5),
            vnets: 64,
            stream_sndbuf_force: false,
        }
    }
}

/// The limits by their config key, also the `limit` label of the metric.
pub const PORTS_PER_VNET: &str = "ports_per_vnet";
pub const VDE_HANDSHAKE_SECS: &str = "vde_handshake_secs";
pub const VNETS: &str = "vnets";

/// A limit that refused a request: the control API's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} ({max}): raise `[limits] {key}` in vnetd's configuration to allow more")]
pub struct LimitHit {
    /// What is full, e.g. `vnet "lab" has its maximum of client ports`.
    pub what: String,
    pub max: usize,
    /// The limit's config key in `[limits]`.
    pub key: &'static str,
}

/// How many times each limit refused something, per vnet (`None`: the daemon's own,
/// such as `vnets`). Taken only when a limit is hit, never on the frame path.
#[derive(Debug, Default)]
pub(crate) struct Refusals(Mutex<BTreeMap<(Option<String>, &'static str), u64>>);

/// One row of [`crate::dataplane::Handle::limit_refusals`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitRefusals {
    /// The vnet, or `None` for a daemon-wide limit.
    pub net: Option<String>,
    /// The limit's config key.
    pub limit: &'static str,
    pub count: u64,
}

impl Refusals {
    /// Counts one refusal by `limit` (of vnet `net`) and logs `what` happened,
    /// rate-limited (see the module docs).
    pub fn refuse(&self, net: Option<&str>, limit: &'static str, what: &str) {
        let n = {
            let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
            let n = map.entry((net.map(str::to_string), limit)).or_default();
            *n += 1;
            *n
        };
        let net = net.unwrap_or("-");
        if n.is_power_of_two() {
            warn!(
                net,
                "{what}: limit `[limits] {limit}` reached ({n} refusal(s) so far)"
            );
        } else {
            debug!(
                net,
                "{what}: limit `[limits] {limit}` reached ({n} refusal(s) so far)"
            );
        }
    }

    /// Forgets a vnet that is gone.
    pub fn forget(&self, net: &str) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|(n, _), _| n.as_deref() != Some(net));
    }

    pub fn rows(&self) -> Vec<LimitRefusals> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .map(|((net, limit), count)| LimitRefusals {
                net: net.clone(),
                limit,
                count: *count,
            })
            .collect()
    }

    #[cfg(test)]
    pub fn count(&self, net: Option<&str>, limit: &'static str) -> u64 {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(net.map(str::to_string), limit))
            .copied()
            .unwrap_or(0)
    }
}
