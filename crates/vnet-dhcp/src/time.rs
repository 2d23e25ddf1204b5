//! Wall-clock instants as plain numbers.
//!
//! Leases outlive the daemon, so their expiry must be absolute wall-clock time, not an
//! `Instant` that means nothing after a restart. The server never reads a clock: the caller
//! passes a [`Timestamp`] into every call, which makes every decision reproducible in tests.

use std::fmt;
use std::ops::Add;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch (1970-01-01T00:00:00Z).
///
/// Serialized as that plain number, so lease files stay readable by `jq` and scripts.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The instant `millis` milliseconds after the Unix epoch.
    pub const fn from_unix_millis(millis: u64) -> Self {
        Timestamp(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_unix_millis(self) -> u64 {
        self.0
    }

    /// Whole seconds since the Unix epoch (rounded down), the unit people and `date -d @N` read.
    pub const fn as_unix_secs(self) -> u64 {
        self.0 / 1000
    }

    /// The current wall-clock time; for the I/O shell, never called by the server itself.
    pub fn now() -> Self {
        SystemTime::now().into()
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl From<SystemTime> for Timestamp {
    /// Times before the epoch (a badly set clock) become the epoch itself.
    fn from(t: SystemTime) -> Self {
        let millis = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
        Timestamp(u64::try_from(millis).unwrap_or(u64::MAX))
    }
}

impl From<Timestamp> for SystemTime {
    fn from(t: Timestamp) -> Self {
        UNIX_EPOCH + Duration::from_millis(t.0)
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    /// Saturates instead of overflowing: "never" is a fine answer for absurd durations.
    fn add(self, d: Duration) -> Timestamp {
        let millis = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(millis))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}", self.0 / 1000, self.0 % 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_and_adds() {
        let t = Timestamp::from_unix_millis(1_700_000_000_123);
        assert_eq!(t.as_unix_secs(), 1_700_000_000);
        assert_eq!(Timestamp::from(SystemTime::from(t)), t);
        assert_eq!(
            (t + Duration::from_secs(2)).as_unix_millis(),
            1_700_000_002_123
        );
        assert_eq!(
            Timestamp::from_unix_millis(u64::MAX) + Duration::from_secs(1),
            Timestamp::from_unix_millis(u64::MAX)
        );
        assert_eq!(
            t.saturating_duration_since(t + Duration::from_secs(1)),
            Duration::ZERO
        );
    }
}
