//! Capabilities raised only around the step that needs them.
//!
//! A vnetd that dropped to a service user (vnetd's `privileges.rs`) keeps its network
//! capabilities in the *permitted* set but none in the *effective* set, so at rest no
//! thread can use them. A privileged step (creating a TAP, setting a host adapter's
//! address, opening an uplink's packet socket, binding a port below 1024) takes a
//! [`Raised`] guard: the capability becomes effective in the calling thread only
//! (capabilities belong to each thread, and `capset(2)` changes only the caller) and
//! is lowered again when the guard drops, whatever the step returned.
//!
//! Where the effective set already holds the capability (a vnetd that stays root),
//! the guard changes nothing. Where the permitted set lacks it (an ordinary user's
//! vnetd), it changes nothing either and the step fails as the kernel says, with the
//! step's own hint. Only a capability that vnetd gave up on purpose ([`forgo`]) makes
//! [`raise`] fail itself, with the reason vnetd gave, so the error names the setting.

use std::io;
use std::sync::OnceLock;

pub use caps::Capability;
use caps::{CapSet, CapsHashSet};

/// The capabilities vnetd gave up for good, and why (a sentence naming the setting).
static FORGONE: OnceLock<(CapsHashSet, String)> = OnceLock::new();

/// Records that `caps` were dropped from the permitted set for good because of `why`
/// (e.g. `[access] keep_capabilities = "configured"`), so that a step needing one of
/// them fails saying so instead of with a bare `EPERM`. The first call wins.
pub fn forgo(caps: CapsHashSet, why: String) {
    let _ = FORGONE.set((caps, why));
}

/// Whether this vnetd never held `cap` (an ordinary user's): neither permitted nor
/// given up ([`forgo`]). What needs it is then skipped with a warning rather than
/// failed, as a vnetd without privileges does everything else.
pub fn never_held(cap: Capability) -> bool {
    !caps::has_cap(None, CapSet::Permitted, cap).unwrap_or(false)
        && !FORGONE
            .get()
            .is_some_and(|(forgone, _)| forgone.contains(&cap))
}

/// A capability made effective in this thread until the guard drops.
#[must_use = "the capability is lowered again when the guard drops"]
#[derive(Debug)]
pub struct Raised {
    /// What to lower on drop: `None` if this guard raised nothing.
    lower: Option<Capability>,
}

impl Drop for Raised {
    fn drop(&mut self) {
        if let Some(cap) = self.lower {
            // Lowering never needs a privilege; a failure would leave the capability
            // effective in this thread, which the next raise then finds and keeps.
            let _ = caps::drop(None, CapSet::Effective, cap);
        }
    }
}

/// Makes `cap` effective in the calling thread until the returned guard drops (see the
/// module doc). Fails only if vnetd gave `cap` up ([`forgo`]): a `PermissionDenied`
/// error naming it and the reason.
pub fn raise(cap: Capability) -> io::Result<Raised> {
    let none = Raised { lower: None };
    if caps::has_cap(None, CapSet::Effective, cap).unwrap_or(false) {
        return Ok(none);
    }
    if !caps::has_cap(None, CapSet::Permitted, cap).unwrap_or(false) {
        return match FORGONE.get() {
            Some((forgone, why)) if forgone.contains(&cap) => Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("vnetd gave up {cap} at start: {why}"),
            )),
            _ => Ok(none),
        };
    }
    caps::raise(None, CapSet::Effective, cap).map_err(|e| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("cannot raise {cap}: {e}"),
        )
    })?;
    Ok(Raised { lower: Some(cap) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever this test process holds, a guard leaves the effective set as it found it.
    #[test]
    fn a_guard_leaves_the_effective_set_as_it_was() {
        let before = caps::read(None, CapSet::Effective).unwrap();
        {
            let _raised = raise(Capability::CAP_NET_ADMIN).unwrap();
            let during = caps::read(None, CapSet::Effective).unwrap();
            let permitted = caps::has_cap(None, CapSet::Permitted, Capability::CAP_NET_ADMIN);
            assert_eq!(
                during.contains(&Capability::CAP_NET_ADMIN),
                permitted.unwrap()
            );
        }
        assert_eq!(caps::read(None, CapSet::Effective).unwrap(), before);
    }

    /// In a thread of its own (capabilities are per thread): with CAP_NET_RAW permitted
    /// but not effective, the guard raises it and lowers it again.
    #[test]
    fn a_permitted_capability_is_effective_only_while_raised() {
        let cap = Capability::CAP_NET_RAW;
        if !caps::has_cap(None, CapSet::Permitted, cap).unwrap() {
            eprintln!("SKIPPED a_permitted_capability_is_effective_only_while_raised: needs root");
            return;
        }
        std::thread::spawn(move || {
            caps::drop(None, CapSet::Effective, cap).unwrap();
            let effective = || caps::has_cap(None, CapSet::Effective, cap).unwrap();
            let raised = raise(cap).unwrap();
            assert!(effective(), "raised");
            drop(raised);
            assert!(!effective(), "lowered");
        })
        .join()
        .unwrap();
    }
}
