//! Host-side virtual links: veth pairs and Linux bridges, mostly for
//! benchmarks (the controls of DESIGN.md §6) and for tests that need a link
//! without the daemon.

use crate::cmd;
use crate::netns::Netns;
use crate::unique_name;

/// A veth pair, created in the host namespace with both ends up.
///
/// Either end can be moved into a namespace ([`Veth::move_a`], or by handing
/// its name to [`crate::NsVm::attach`]). On drop the pair is deleted wherever
/// it is (deleting one end deletes both); if it already went away with a
/// namespace, that is fine too.
#[derive(Debug)]
pub struct Veth {
    ends: [(String, Option<String>); 2],
}

impl Veth {
    /// Creates a pair with fresh [`unique_name`]s (prefixes `va`, `vb`).
    ///
    /// # Panics
    /// If `ip link add` fails (e.g. not root).
    pub fn new() -> Veth {
        let a = unique_name("va");
        let b = unique_name("vb");
        cmd::run(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b])
            .unwrap_or_else(|e| panic!("test bed: cannot create veth pair: {e}"));
        let veth = Veth {
            ends: [(a, None), (b, None)],
        };
        for end in [veth.a(), veth.b()] {
            cmd::run(&["ip", "link", "set", end, "up"]).unwrap_or_else(|e| panic!("test bed: {e}"));
        }
        veth
    }

    /// The first end's interface name.
    pub fn a(&self) -> &str {
        &self.ends[0].0
    }

    /// The second end's interface name.
    pub fn b(&self) -> &str {
        &self.ends[1].0
    }

    /// Moves the first end into `ns` (and brings it up there).
    pub fn move_a(&mut self, ns: &Netns) {
        self.move_end(0, ns);
    }

    /// Moves the second end into `ns` (and brings it up there).
    pub fn move_b(&mut self, ns: &Netns) {
        self.move_end(1, ns);
    }

    fn move_end(&mut self, i: usize, ns: &Netns) {
        let (name, at) = &mut self.ends[i];
        let mut argv = vec!["ip"];
        if let Some(from) = at.as_deref() {
            argv.extend(["-n", from]);
        }
        argv.extend(["link", "set", name.as_str(), "netns", ns.name()]);
        cmd::run(&argv).unwrap_or_else(|e| panic!("test bed: {e}"));
        ns.exec_ok(&["ip", "link", "set", name, "up"]);
        *at = Some(ns.name().to_string());
    }
}

impl Default for Veth {
    fn default() -> Self {
        Veth::new()
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        for (name, at) in &self.ends {
            let ok = match at {
                Some(ns) => cmd::run(&["ip", "-n", ns, "link", "del", name]).is_ok(),
                None => cmd::run(&["ip", "link", "del", name]).is_ok(),
            };
            if ok {
                return;
            }
            // Maybe the end moved back to the host (NsVm does that on drop).
            if cmd::run(&["ip", "link", "del", name]).is_ok() {
                return;
            }
        }
    }
}

/// A Linux bridge in the host namespace, up, deleted on drop.
///
/// The reference "kernel switch" for benchmarks and a way to join several
/// host-side interfaces in tests.
#[derive(Debug)]
pub struct Bridge {
    name: String,
}

impl Bridge {
    /// Creates a bridge with a fresh [`unique_name`] (prefix `br`).
    ///
    /// # Panics
    /// If `ip link add` fails (e.g. not root).
    pub fn new() -> Bridge {
        let name = unique_name("br");
        cmd::run(&["ip", "link", "add", &name, "type", "bridge"])
            .and_then(|_| cmd::run(&["ip", "link", "set", &name, "up"]))
            .unwrap_or_else(|e| panic!("test bed: cannot create bridge: {e}"));
        Bridge { name }
    }

    /// The bridge's interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Enslaves the host interface `ifname` to the bridge and brings it up.
    pub fn add(&self, ifname: &str) {
        cmd::run(&["ip", "link", "set", ifname, "master", &self.name])
            .and_then(|_| cmd::run(&["ip", "link", "set", ifname, "up"]))
            .unwrap_or_else(|e| panic!("test bed: cannot add {ifname} to {}: {e}", self.name));
    }
}

impl Default for Bridge {
    fn default() -> Self {
        Bridge::new()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        cmd::quiet(&["ip", "link", "del", &self.name]);
    }
}
