//! DHCP clients for namespace VMs and guests: busybox `udhcpc` with the test
//! bed's event script (`guest-files/udhcpc.sh`), and what it got.

use std::collections::BTreeMap;

/// The `udhcpc` arguments both clients use: foreground, quit once bound,
/// fail after 5 discovers 2 s apart, and ask for the MTU option as well.
pub(crate) const UDHCPC_ARGS: &[&str] = &["-f", "-q", "-n", "-t", "5", "-T", "2", "-O", "mtu"];

/// What a DHCP server handed out, as `udhcpc` reported it to its script
/// (variables such as `ip`, `mask`, `router`, `dns`, `domain`, `lease`,
/// `serverid`, `mtu`, and `optN` for options it has no name for).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DhcpLease {
    /// Every variable, by name.
    pub vars: BTreeMap<String, String>,
}

impl DhcpLease {
    /// Parses the script's `VAR=value` lines.
    pub fn parse(text: &str) -> DhcpLease {
        DhcpLease {
            vars: text
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect(),
        }
    }

    /// One variable.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// The leased address (`ip`).
    pub fn ip(&self) -> Option<&str> {
        self.get("ip")
    }

    /// The prefix length (`mask`, e.g. `24`).
    pub fn prefix_len(&self) -> Option<u8> {
        self.get("mask")?.parse().ok()
    }

    /// The routers (option 3), in order.
    pub fn routers(&self) -> Vec<&str> {
        self.list("router")
    }

    /// The name servers (option 6), in order.
    pub fn dns(&self) -> Vec<&str> {
        self.list("dns")
    }

    /// The lease time in seconds (option 51).
    pub fn lease_secs(&self) -> Option<u64> {
        self.get("lease")?.parse().ok()
    }

    /// The server identifier (option 54).
    pub fn server_id(&self) -> Option<&str> {
        self.get("serverid")
    }

    /// The interface MTU (option 26), if the server sent one.
    pub fn mtu(&self) -> Option<u32> {
        self.get("mtu")?.parse().ok()
    }

    fn list(&self, name: &str) -> Vec<&str> {
        self.get(name)
            .map(|v| v.split_whitespace().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_udhcpc_variables() {
        let l = DhcpLease::parse(
            "interface=eth0\nip=10.0.0.50\nmask=24\nrouter=10.0.0.1 10.0.0.254\ndns=10.0.0.1\nlease=3600\nserverid=10.0.0.1\nmtu=9000\nopt252=6869\n",
        );
        assert_eq!(l.ip(), Some("10.0.0.50"));
        assert_eq!(l.prefix_len(), Some(24));
        assert_eq!(l.routers(), ["10.0.0.1", "10.0.0.254"]);
        assert_eq!(l.dns(), ["10.0.0.1"]);
        assert_eq!(l.lease_secs(), Some(3600));
        assert_eq!(l.server_id(), Some("10.0.0.1"));
        assert_eq!(l.mtu(), Some(9000));
        assert_eq!(l.get("opt252"), Some("6869"));
        assert_eq!(DhcpLease::parse("").ip(), None);
    }
}
