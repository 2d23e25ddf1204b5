//! Bounds on what clients can make the daemon hold, and the count of refusals.
//!
//! Every resource a client can make vnetd hold has a bound ([`Limits`], vnetd's
//! `[limits]` table). Hitting one refuses the new thing only (a connection is closed at
//! once, a datagram's sender gets no port, an API request fails with 409, a device
//! `open` fails with `ENFILE`, a vnet API request goes unanswered, a guest's new NAT flow
//! is reset, an address is not learned): what exists keeps working. Each refusal is
//! counted per vnet and limit ([`Refusals`], the `vnet_limit_refusals_total` metric)
//! and logged, at warning level for the 1st, 2nd, 4th, 8th... refusal of a kind (so a
//! flood cannot flood the log), else at debug.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::{Arc, Mutex};
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
    /// Client ports one uid holds across all vnets and threads (root and vnetd's own
    /// uid exempt: they may make any port through the control API anyway, and the
    /// configuration's ports are vnetd's).
    pub ports_per_uid: usize,
    /// Whether stream ports get their send buffer ([`crate::backend::stream::SEND_BUFFER`])
    /// past `net.core.wmem_max` (`SO_SNDBUFFORCE`, root only); else the kernel caps it.
    pub stream_sndbuf_force: bool,
    /// Classic-device opens at once, all vnets together: each holds a waiter thread and
    /// two descriptors in vnetd, whatever vnet it is on.
    pub device_opens: usize,
    /// Replies to vnet API requests (api.sock, classic devices) a port holds for a client
    /// that does not read them; a request beyond is dropped unanswered.
    pub api_reply_queue: usize,
    /// NAT flows (host sockets) per vnet: a guest's new flow beyond is refused.
    pub nat_flows: usize,
    /// Guest TCP data a vnet's NAT holds for host sockets that have not taken it yet,
    /// all its flows together: beyond, what a socket cannot take at once is not taken
    /// (the guest sends it again).
    pub nat_buffer_bytes: usize,
    /// MAC table entries per vnet: the most a vnet's `max_macs` may ask for.
    pub macs_per_vnet: usize,
    /// Descriptors client ports may not take: a new port is refused while no number
    /// below `RLIMIT_NOFILE - fd_reserve` is free, so the control API and the NAT still
    /// get theirs.
    pub fd_reserve: usize,
    /// Of those, the descriptors the NAT may not take either: its new sockets are closed
    /// at once while no number below `RLIMIT_NOFILE - fd_reserve_control` is free, so
    /// the control API still answers (at most `fd_reserve`).
    pub fd_reserve_control: usize,
    /// Bytes of each bridged NIC's receive ring (`TPACKET_V3`, one per NIC and
    /// data-plane thread, in blocks of 128 KiB, at least two); 0: no ring, frames
    /// received in batches of `recvmmsg` (the default: a ring adds up to 1 ms per frame
    /// under light load).
    pub uplink_ring_bytes: usize,
    /// Source MACs one port's MAC lock learns at most, whatever its `mac_limit` says
    /// (port security); a source refused only by this bound is counted.
    pub mac_lock_macs: usize,
    /// Connections one port's filters track (`established`): a new flow beyond is not
    /// tracked.
    pub conntrack_entries: usize,
    /// Frames one port holds for rate shaping and impairment's delays, both
    /// directions together; one more is dropped (`held_full`).
    pub held_frames_per_port: usize,
    /// Bytes of those frames.
    pub held_bytes_per_port: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            ports_per_vnet: 256,
            vde_handshake: Duration::from_secs(5),
            vnets: 64,
            ports_per_uid: 64,
            stream_sndbuf_force: false,
            device_opens: 256,
            api_reply_queue: 64,
            nat_flows: 4096,
            nat_buffer_bytes: 64 << 20,
            macs_per_vnet: 16384,
            fd_reserve: 256,
            fd_reserve_control: 64,
            uplink_ring_bytes: crate::backend::uplink::DEFAULT_RING_BYTES,
            mac_lock_macs: 64,
            conntrack_entries: 8192,
            held_frames_per_port: 4096,
            held_bytes_per_port: 8 << 20,
        }
    }
}

impl Limits {
    /// Fits vnet `spec`'s MAC table into `macs_per_vnet`: a table left at its default
    /// size ([`vnet_model::default_max_macs`]) shrinks to the limit, as does its
    /// per-port cap; a larger one asked for is refused.
    pub fn fit_macs(&self, spec: &mut vnet_model::NetworkSpec) -> Result<(), LimitHit> {
        let max = self.macs_per_vnet;
        if spec.max_macs > max && spec.max_macs != vnet_model::default_max_macs() {
            return Err(LimitHit {
                what: format!(
                    "vnet {:?} asks for a MAC table of {} entries, over the limit",
                    spec.name, spec.max_macs
                ),
                max,
                key: MACS_PER_VNET,
            });
        }
        spec.max_macs = spec.max_macs.min(max);
        spec.max_macs_per_port = spec.max_macs_per_port.min(spec.max_macs);
        Ok(())
    }
}

/// The limits by their config key, also the `limit` label of the metric.
pub const PORTS_PER_VNET: &str = "ports_per_vnet";
pub const VDE_HANDSHAKE_SECS: &str = "vde_handshake_secs";
pub const VNETS: &str = "vnets";
pub const PORTS_PER_UID: &str = "ports_per_uid";
pub const DEVICE_OPENS: &str = "device_opens";
pub const API_REPLY_QUEUE: &str = "api_reply_queue";
pub const NAT_FLOWS: &str = "nat_flows";
pub const NAT_BUFFER_BYTES: &str = "nat_buffer_bytes";
pub const MACS_PER_VNET: &str = "macs_per_vnet";
pub const FD_RESERVE: &str = "fd_reserve";
pub const FD_RESERVE_CONTROL: &str = "fd_reserve_control";
pub const MAC_LOCK_MACS: &str = "mac_lock_macs";
pub const CONNTRACK_ENTRIES: &str = "conntrack_entries";
/// Not a bound of `[limits]`: the `limit` label of attach refusals by a vnet's allow
/// lists (`allow_users`, `allow_groups`; [`crate::admission`]).
pub const ALLOW: &str = "allow";

/// A limit that refused a request: the control API's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} ({max}): {}", advice(key))]
pub struct LimitHit {
    /// What is full, e.g. `vnet "lab" has its maximum of client ports`.
    pub what: String,
    pub max: usize,
    /// The limit's config key in `[limits]`.
    pub key: &'static str,
}

/// What to do about limit `key`.
fn advice(key: &str) -> String {
    match key {
        FD_RESERVE => "raise vnetd's open-file limit (RLIMIT_NOFILE, systemd's LimitNOFILE=) \
                       or lower `[limits] fd_reserve` to allow more"
            .to_string(),
        _ => format!("raise `[limits] {key}` in vnetd's configuration to allow more"),
    }
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
        self.refuse_many(net, limit, 1, what);
    }

    /// Counts `count` refusals by `limit` at once (taken from a sans-I/O part's own
    /// counter), logged as one line, at warning level when the total passes a power of
    /// two.
    pub fn refuse_many(&self, net: Option<&str>, limit: &'static str, count: u64, what: &str) {
        if count == 0 {
            return;
        }
        let n = self.count_many(net, limit, count);
        let before = n - count;
        let net = net.unwrap_or("-");
        // A power of two in (before, n]: the log's rate limit, as for single refusals.
        if before == 0 || n.ilog2() > before.ilog2() {
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

    /// Counts one refusal by `limit` (of vnet `net`): how many so far.
    fn count_one(&self, net: Option<&str>, limit: &'static str) -> u64 {
        self.count_many(net, limit, 1)
    }

    /// Counts `count` refusals by `limit` (of vnet `net`): how many so far.
    fn count_many(&self, net: Option<&str>, limit: &'static str, count: u64) -> u64 {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry((net.map(str::to_string), limit)).or_default();
        *n += count;
        *n
    }

    /// Counts one client of vnet `net` its allow lists refused (limit [`ALLOW`]) and
    /// logs `why`, rate-limited like the limits' refusals.
    pub fn refuse_attach(&self, net: &str, what: &str, why: &str) {
        let n = self.count_one(Some(net), ALLOW);
        if n.is_power_of_two() {
            warn!(net, "refused {what}: {why} ({n} refusal(s) so far)");
        } else {
            debug!(net, "refused {what}: {why} ({n} refusal(s) so far)");
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

/// How many client ports each uid holds across all vnets and threads (`[limits]
/// ports_per_uid`). Taken only when a port is made or closed, never on the frame path.
/// Root and vnetd's own uid are not counted: they may make any port anyway (as admins
/// of the control API), and the configuration's ports are vnetd's.
#[derive(Debug, Default)]
pub(crate) struct UidPorts(Mutex<HashMap<u32, usize>>);

/// One port's place in [`UidPorts`]; dropping it (with the port) frees the place.
#[derive(Debug)]
pub(crate) struct UidSlot {
    tally: Arc<UidPorts>,
    uid: u32,
}

impl UidPorts {
    /// A place for one more port of `uid`, if it holds fewer than `max` (`Ok(None)`: the
    /// uid is not counted); `Err` carries how many it holds.
    pub fn take(
        self: &Arc<Self>,
        uid: u32,
        exempt: bool,
        max: usize,
    ) -> Result<Option<UidSlot>, usize> {
        if exempt {
            return Ok(None);
        }
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let held = map.entry(uid).or_default();
        if *held >= max {
            return Err(*held);
        }
        *held += 1;
        Ok(Some(UidSlot {
            tally: Arc::clone(self),
            uid,
        }))
    }

    #[cfg(test)]
    pub fn held(&self, uid: u32) -> usize {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&uid).copied().unwrap_or(0)
    }
}

impl Drop for UidSlot {
    fn drop(&mut self) {
        let mut map = self.tally.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = map.get_mut(&self.uid) {
            *held -= 1;
            if *held == 0 {
                map.remove(&self.uid);
            }
        }
    }
}

/// The soft `RLIMIT_NOFILE` less `reserve`: descriptors numbered from there on are
/// kept for others (unreadable: no ceiling).
pub(crate) fn descriptor_ceiling(reserve: usize) -> usize {
    use nix::sys::resource::{getrlimit, Resource};
    getrlimit(Resource::RLIMIT_NOFILE).map_or(usize::MAX, |(soft, _)| {
        usize::try_from(soft)
            .unwrap_or(usize::MAX)
            .saturating_sub(reserve)
    })
}

/// Whether a new client port keeps off the last `reserve` descriptors
/// (`[limits] fd_reserve`): `Err` with the lowest free descriptor number and the soft
/// `RLIMIT_NOFILE` when no number below `limit - reserve` is free. The kernel hands out
/// the lowest free number first, so ports admitted this way hold numbers below
/// `limit - reserve` and the top `reserve` stay for the control API and the NAT. The
/// lowest free number costs a `dup` of `any` and a `close`; counting the open
/// descriptors (`/proc/self/fd`) would cost milliseconds per port with thousands open.
pub(crate) fn ports_may_open(any: BorrowedFd<'_>, reserve: usize) -> Result<(), (usize, usize)> {
    let limit = descriptor_ceiling(0);
    let lowest_free = match nix::unistd::dup(any) {
        Ok(fd) => usize::try_from(fd.as_raw_fd()).unwrap_or(usize::MAX),
        // None free at all.
        Err(nix::errno::Errno::EMFILE) => limit,
        // Cannot tell: admitted (the kernel's own limit still holds).
        Err(_) => return Ok(()),
    };
    if lowest_free < limit.saturating_sub(reserve) {
        Ok(())
    } else {
        Err((lowest_free, limit))
    }
}

#[cfg(test)]
mod uid_ports_tests {
    use super::*;

    #[test]
    fn a_uid_holds_at_most_max_ports_and_a_closed_port_frees_its_place() {
        let tally = Arc::new(UidPorts::default());
        let a = tally.take(1000, false, 2).unwrap();
        let b = tally.take(1000, false, 2).unwrap();
        assert_eq!(tally.take(1000, false, 2).unwrap_err(), 2);
        // Another uid has its own count.
        let other = tally.take(1001, false, 2).unwrap();
        assert_eq!(tally.held(1001), 1);
        drop(a);
        assert_eq!(tally.held(1000), 1);
        let c = tally.take(1000, false, 2).unwrap();
        drop((b, c, other));
        assert_eq!((tally.held(1000), tally.held(1001)), (0, 0));
        assert!(tally.0.lock().unwrap().is_empty(), "no entries left behind");
    }

    #[test]
    fn exempt_uids_are_not_counted() {
        let tally = Arc::new(UidPorts::default());
        for _ in 0..3 {
            assert!(tally.take(0, true, 1).unwrap().is_none());
        }
        assert_eq!(tally.held(0), 0);
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn ports_keep_off_the_reserved_descriptors() {
        let (soft, _) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        let limit = usize::try_from(soft).unwrap();
        let any = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(ports_may_open(any.as_fd(), 0), Ok(()));
        // Every number reserved: refused, saying the limit.
        let (_, max) = ports_may_open(any.as_fd(), limit).unwrap_err();
        assert_eq!(max, limit);
    }

    #[test]
    fn a_batch_of_refusals_counts_each() {
        let r = Refusals::default();
        r.refuse_many(Some("lab"), MACS_PER_VNET, 3, "three");
        r.refuse_many(Some("lab"), MACS_PER_VNET, 0, "none");
        r.refuse(Some("lab"), MACS_PER_VNET, "one");
        assert_eq!(r.count(Some("lab"), MACS_PER_VNET), 4);
        assert_eq!(r.count(None, MACS_PER_VNET), 0);
    }
}
