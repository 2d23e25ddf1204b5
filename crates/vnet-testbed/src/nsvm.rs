//! "A VM that is a namespace": one interface in its own network namespace.

use std::os::unix::fs::PermissionsExt;

use crate::cmd;
use crate::dhcp::{DhcpLease, UDHCPC_ARGS};
use crate::netns::Netns;
use crate::{Error, Result};

/// A network namespace owning one interface with a MAC and an address: the
/// cheap stand-in for a VM with one NIC (real kernel TCP/IP, `ping`,
/// `iperf3`, `udhcpc`...).
///
/// Guarantees when [`NsVm::attach`] returns: the interface is in a fresh
/// namespace, has the requested MAC and address, is up, and IPv6 is disabled
/// on it (so captures carry only what the test sends, no MLD/RS/DAD chatter).
/// On drop the interface is moved back to the test's own namespace (so the
/// daemon that created a TAP still finds it; a veth goes back to its pair),
/// then the namespace is deleted.
#[derive(Debug)]
pub struct NsVm {
    ifname: String,
    mac: String,
    addr: String,
    /// The namespace the interface came from and goes back to (`None`: the test's).
    home: Option<String>,
    // Dropped last, after the interface was moved out.
    ns: Netns,
}

impl NsVm {
    /// Moves the existing host interface `ifname` (e.g. a TAP the daemon
    /// created, or one end of a [`crate::Veth`]) into a new namespace, sets
    /// its MAC to `mac` and its address to `addr_cidr` (e.g. `10.0.0.2/24`;
    /// empty for none, e.g. to run `udhcpc` later) and brings it up.
    ///
    /// # Panics
    /// If any step fails (no such interface, not root, bad address).
    pub fn attach(ifname: &str, mac: &str, addr_cidr: &str) -> NsVm {
        NsVm::attach_from(None, ifname, mac, addr_cidr)
    }

    /// Like [`NsVm::attach`] for an interface in namespace `home` (say, a TAP that a
    /// daemon running there created), which it goes back to on drop.
    pub fn attach_in(home: &Netns, ifname: &str, mac: &str, addr_cidr: &str) -> NsVm {
        NsVm::attach_from(Some(home.name()), ifname, mac, addr_cidr)
    }

    fn attach_from(home: Option<&str>, ifname: &str, mac: &str, addr_cidr: &str) -> NsVm {
        let ns = Netns::new("vm");
        let mut argv = vec!["ip"];
        if let Some(home) = home {
            argv.extend(["-n", home]);
        }
        argv.extend(["link", "set", ifname, "netns", ns.name()]);
        cmd::run(&argv)
            .unwrap_or_else(|e| panic!("test bed: cannot move {ifname} into a namespace: {e}"));
        let vm = NsVm {
            ifname: ifname.to_string(),
            mac: mac.to_string(),
            addr: addr_cidr.to_string(),
            home: home.map(str::to_string),
            ns,
        };
        let disable_v6 = format!("net.ipv6.conf.{ifname}.disable_ipv6=1");
        // Best effort: the host kernel may be built without IPv6.
        let _ = vm.ns.exec(&["sysctl", "-q", "-w", &disable_v6]);
        vm.ns
            .exec_ok(&["ip", "link", "set", "dev", ifname, "address", mac]);
        if !addr_cidr.is_empty() {
            vm.ns
                .exec_ok(&["ip", "addr", "add", addr_cidr, "dev", ifname]);
        }
        vm.ns.exec_ok(&["ip", "link", "set", "dev", ifname, "up"]);
        vm
    }

    /// The namespace, to run more commands in it.
    pub fn ns(&self) -> &Netns {
        &self.ns
    }

    /// The interface's name (unchanged by the move).
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The MAC the interface was given.
    pub fn mac(&self) -> &str {
        &self.mac
    }

    /// The address with its prefix length as given (`10.0.0.2/24`).
    pub fn addr_cidr(&self) -> &str {
        &self.addr
    }

    /// The address without the prefix length (`10.0.0.2`).
    pub fn ip(&self) -> &str {
        self.addr.split('/').next().unwrap_or("")
    }

    /// Turns IPv6 back on (see [`NsVm::attach`]) as a host that autoconfigures: it
    /// takes router advertisements and makes its address from their prefix (SLAAC),
    /// at once (no duplicate address detection).
    pub fn enable_slaac(&self) {
        for key in [
            "accept_ra=2",
            "autoconf=1",
            "accept_dad=0",
            "disable_ipv6=0",
        ] {
            let kv = format!("net.ipv6.conf.{}.{key}", self.ifname);
            self.ns.exec_ok(&["sysctl", "-q", "-w", &kv]);
        }
    }

    /// The interface's global IPv6 addresses now (`ip -6 addr`).
    pub fn global_ipv6(&self) -> Vec<std::net::Ipv6Addr> {
        let out = self.ns.exec_ok(&[
            "ip",
            "-6",
            "-o",
            "addr",
            "show",
            "dev",
            &self.ifname,
            "scope",
            "global",
        ]);
        out.lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                words.find(|w| *w == "inet6")?;
                words.next()?.split('/').next()?.parse().ok()
            })
            .collect()
    }

    /// A router advertisement as `rdisc6` (ndisc6) prints it after soliciting one on
    /// the interface, each run of spaces made one; retried until one with a prefix
    /// comes within `timeout`.
    ///
    /// # Panics
    /// If none does.
    pub fn rdisc6(&self, timeout: std::time::Duration) -> String {
        let mut text = String::new();
        let ok = crate::wait_for(timeout, || {
            let out = self
                .ns
                .exec(&["rdisc6", "-1", "-r", "2", "-w", "1500", &self.ifname]);
            text = String::from_utf8_lossy(&out.stdout).into_owned();
            out.status.success() && text.contains("Prefix")
        });
        assert!(ok, "rdisc6 saw no RA on {}: {text}", self.ifname);
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// Pings `ip` `count` times (0.2 s apart, 2 s per-reply timeout) from
    /// inside the namespace; `true` when the last `ping` reports success
    /// (at least one reply). Use [`crate::wait_for`] around it when the path
    /// may still be coming up.
    pub fn ping(&self, ip: &str, count: u32) -> bool {
        self.ns
            .exec(&[
                "ping",
                "-n",
                "-q",
                "-c",
                &count.to_string(),
                "-i",
                "0.2",
                "-W",
                "2",
                ip,
            ])
            .status
            .success()
    }

    /// Runs a DHCP client (the host's busybox `udhcpc`, which must exist)
    /// on the interface, which then holds the leased address, route and MTU.
    /// Returns what the server sent. `extra_args` go to `udhcpc`
    /// (e.g. `["-x", "hostname:vm1"]`, `["-r", "10.0.0.9"]`).
    ///
    /// The host's `/etc/resolv.conf` is left alone: name servers are only
    /// reported in the lease.
    pub fn dhcp(&self, extra_args: &[&str]) -> Result<DhcpLease> {
        let dir = tempfile::Builder::new().prefix("vnet-dhcp-").tempdir()?;
        let script = dir.path().join("udhcpc.sh");
        std::fs::write(&script, crate::initramfs::UDHCPC_SCRIPT)?;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
        let script = script.to_string_lossy().into_owned();
        let mut argv = vec!["busybox", "udhcpc", "-i", &self.ifname, "-s", &script];
        argv.extend_from_slice(UDHCPC_ARGS);
        argv.extend_from_slice(extra_args);
        let out = self
            .ns
            .command(&argv)
            .env("VNET_DHCP_DIR", dir.path())
            .env("VNET_DHCP_RESOLV", dir.path().join("resolv.conf"))
            .stdin(std::process::Stdio::null())
            .output()?;
        let lease = dir.path().join(format!("udhcpc.{}.env", self.ifname));
        match std::fs::read_to_string(&lease) {
            Ok(text) if out.status.success() => Ok(DhcpLease::parse(&text)),
            _ => Err(Error::Failed(format!(
                "udhcpc on {} in {} got no lease ({}):\n{}{}",
                self.ifname,
                self.ns.name(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))),
        }
    }
}

impl Drop for NsVm {
    fn drop(&mut self) {
        let pid = std::process::id().to_string();
        let home = self.home.as_deref().unwrap_or(&pid);
        cmd::quiet(&[
            "ip",
            "-n",
            self.ns.name(),
            "link",
            "set",
            "dev",
            &self.ifname,
            "netns",
            home,
        ]);
    }
}
