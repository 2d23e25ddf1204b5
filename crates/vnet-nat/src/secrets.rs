//! Where the device's unpredictable numbers come from.
//!
//! An off-path attacker who can guess a DNS query's ID and source port can answer it
//! first (cache poisoning for every guest); one who can guess a TCP initial sequence
//! number can inject into or reset the connection. So both come from secrets the device
//! cannot make itself: it is sans-I/O and never asks the OS. The I/O shell draws
//! [`NatSecrets`] from the OS CSPRNG once, at start, and hands them to
//! [`NatDevice::new`](crate::NatDevice::new); tests give fixed ones and stay
//! deterministic.
//!
//! | number | how | |
//! |---|---|---|
//! | DNS query ID | SipHash-2-4 under the ID key, over a counter (`IdStream`) | a PRF keyed by 128 secret bits: every output is as good as random to whoever lacks the key |
//! | DNS query source port | the shell's: one fresh UDP socket per query attempt, bound to port 0 | the kernel picks the ephemeral port from its own CSPRNG |
//! | TCP ISN | RFC 6528: a 4 µs clock plus SipHash-2-4 under the ISN key over the connection's four-tuple (`IsnClock`) | each connection's sequence space is unguessable, and one four-tuple's successive ISNs still grow like the clock |
//!
//! SipHash-2-4 comes from the `siphasher` crate: std's `SipHasher` is deprecated, and
//! std's `RandomState` picks its own keys, so it cannot be keyed from our secret and
//! nothing in tests could be reproduced.

use std::hash::Hasher;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use siphasher::sip::SipHasher24;

/// A NAT device's secret keys: 256 bits that must come from the OS CSPRNG (the shell's
/// `getrandom`), fresh for each device. Their `Debug` does not show them.
#[derive(Clone, PartialEq, Eq)]
pub struct NatSecrets {
    isn_key: [u8; 16],
    id_key: [u8; 16],
}

impl NatSecrets {
    /// The keys from 32 random bytes: the first 16 key TCP ISNs, the rest DNS IDs.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let (isn, id) = bytes.split_at(16);
        NatSecrets {
            isn_key: isn.try_into().expect("16 bytes"),
            id_key: id.try_into().expect("16 bytes"),
        }
    }
}

impl std::fmt::Debug for NatSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NatSecrets(..)")
    }
}

/// Unpredictable 16-bit values (DNS IDs): SipHash-2-4 under a secret key, over a
/// counter that never repeats.
#[derive(Debug, Clone)]
pub(crate) struct IdStream {
    key: [u8; 16],
    counter: u64,
}

impl IdStream {
    pub(crate) fn new(secrets: &NatSecrets) -> Self {
        IdStream {
            key: secrets.id_key,
            counter: 0,
        }
    }

    pub(crate) fn next_u16(&mut self) -> u16 {
        let mut h = SipHasher24::new_with_key(&self.key);
        h.write(&self.counter.to_be_bytes());
        self.counter += 1;
        h.finish() as u16
    }
}

/// Initial sequence numbers per RFC 6528: `ISN = M + F(local, remote, key)`, `M` a
/// clock ticking every 4 µs (from the first ISN asked for), `F` SipHash-2-4 under the
/// ISN key over the four-tuple.
#[derive(Debug, Clone)]
pub(crate) struct IsnClock {
    key: [u8; 16],
    epoch: Option<Instant>,
}

impl IsnClock {
    pub(crate) fn new(secrets: &NatSecrets) -> Self {
        IsnClock {
            key: secrets.isn_key,
            epoch: None,
        }
    }

    /// The ISN of a connection from `local` (the device's end, as the guest sees it) to
    /// `remote` (the guest) at `now`.
    pub(crate) fn isn(&mut self, now: Instant, local: SocketAddr, remote: SocketAddr) -> u32 {
        let epoch = *self.epoch.get_or_insert(now);
        // Wraps every 2^32 ticks (4.8 hours), as RFC 793's clock does.
        let m = (now.saturating_duration_since(epoch).as_micros() / 4) as u32;
        let mut h = SipHasher24::new_with_key(&self.key);
        for a in [local, remote] {
            match a.ip() {
                IpAddr::V4(ip) => h.write(&ip.octets()),
                IpAddr::V6(ip) => h.write(&ip.octets()),
            }
            h.write(&a.port().to_be_bytes());
        }
        m.wrapping_add(h.finish() as u32)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn secrets(n: u8) -> NatSecrets {
        NatSecrets::from_bytes([n; 32])
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_four_tuple_at_one_time_gets_one_isn_under_one_key() {
        let t = Instant::now();
        let (local, remote) = (addr("93.184.216.34:443"), addr("192.168.8.10:40000"));
        let mut a = IsnClock::new(&secrets(1));
        let mut b = IsnClock::new(&secrets(1));
        assert_eq!(a.isn(t, local, remote), b.isn(t, local, remote));
        assert_eq!(a.isn(t, local, remote), a.isn(t, local, remote));
    }

    #[test]
    fn isns_differ_between_keys_and_four_tuples() {
        let t = Instant::now();
        let (local, remote) = (addr("93.184.216.34:443"), addr("192.168.8.10:40000"));
        let mut a = IsnClock::new(&secrets(1));
        let mut b = IsnClock::new(&secrets(2));
        assert_ne!(a.isn(t, local, remote), b.isn(t, local, remote));
        let next_port = addr("192.168.8.10:40001");
        assert_ne!(a.isn(t, local, remote), a.isn(t, local, next_port));
        assert_ne!(a.isn(t, local, remote), a.isn(t, remote, local));
    }

    #[test]
    fn the_isn_advances_with_the_4_microsecond_clock() {
        let t = Instant::now();
        let (local, remote) = (addr("93.184.216.34:443"), addr("192.168.8.10:40000"));
        let mut c = IsnClock::new(&secrets(3));
        let first = c.isn(t, local, remote);
        let later = c.isn(t + Duration::from_secs(1), local, remote);
        assert_eq!(later.wrapping_sub(first), 250_000);
        let much_later = c.isn(t + Duration::from_micros(4 << 32), local, remote);
        assert_eq!(much_later, first, "the clock wraps after 2^32 ticks");
    }

    #[test]
    fn ids_follow_the_key_and_do_not_repeat_in_a_row() {
        let ids = |n| {
            let mut s = IdStream::new(&secrets(n));
            (0..64).map(|_| s.next_u16()).collect::<Vec<_>>()
        };
        assert_eq!(ids(1), ids(1), "deterministic under one key");
        assert_ne!(ids(1), ids(2));
        let distinct: std::collections::HashSet<_> = ids(1).into_iter().collect();
        assert!(distinct.len() > 60, "{distinct:?}");
    }

    #[test]
    fn debug_does_not_show_the_keys() {
        assert_eq!(format!("{:?}", secrets(0xab)), "NatSecrets(..)");
    }
}
