//! The port security flags of `vnet port set` and `vnet net policy`, and the change of
//! the `security` section they make.

use clap::Args;
use vnet_control::policy::security::{IpSource, SecuritySpec, Violation};
use vnet_control::MacAddr;

/// Port security (README, "Port security"): each flag changes one setting of the
/// section as it is in force, the others stay.
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Port security")]
pub struct SecurityArgs {
    /// Start from a profile: strict (one MAC, IPv4 as leased by the vnet's DHCP, no
    /// DHCP server, no router advertisements) or off; other security flags refine it
    #[arg(long, value_name = "PROFILE", value_parser = profile)]
    pub security: Option<SecuritySpec>,
    /// Remove the security section (a port then has its vnet's)
    #[arg(long, conflicts_with_all = [
        "security", "mac_lock", "mac_limit", "mac_violation", "ip_guard", "ipv6_link_local",
        "allow_dhcp_server", "no_dhcp_server", "allow_router", "no_router",
    ])]
    pub no_security: bool,
    /// MAC lock: source MACs the port may always use, e.g. 52:54:00:12:34:56,... (none:
    /// no list)
    #[arg(long, value_name = "MACS", value_parser = mac_list)]
    pub mac_lock: Option<MacList>,
    /// MAC lock: how many more source MACs the port may use, the first it sends from
    #[arg(long, value_name = "N")]
    pub mac_limit: Option<u32>,
    /// What a frame from any other source MAC does: drop (counted as mac_lock), or
    /// shutdown (the port forwards nothing until its security is set again)
    #[arg(long, value_name = "drop|shutdown", value_parser = violation)]
    pub mac_violation: Option<Violation>,
    /// IP source guard: the sources the port may use: dhcp (what the vnet's DHCP leased
    /// to it), addresses, prefixes, e.g. dhcp,10.0.0.5,fd00::/64 (none: off)
    #[arg(long, value_name = "SOURCES", value_parser = ip_sources)]
    pub ip_guard: Option<IpSources>,
    /// With --ip-guard: the EUI-64 link-local address of the sending MAC passes
    #[arg(long, value_name = "yes|no", value_parser = yes_no)]
    pub ipv6_link_local: Option<bool>,
    /// The port may serve DHCP (its offers and acks pass)
    #[arg(long, conflicts_with = "no_dhcp_server")]
    pub allow_dhcp_server: bool,
    /// The port may not serve DHCP: its offers and acks are dropped (dhcp_guard)
    #[arg(long)]
    pub no_dhcp_server: bool,
    /// The port may send router advertisements and redirects
    #[arg(long, conflicts_with = "no_router")]
    pub allow_router: bool,
    /// The port may not: its router advertisements and redirects are dropped (ra_guard)
    #[arg(long)]
    pub no_router: bool,
}

/// `--mac-lock`'s MACs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacList(pub Vec<MacAddr>);

/// `--ip-guard`'s sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpSources(pub Vec<IpSource>);

fn profile(text: &str) -> Result<SecuritySpec, String> {
    match text {
        "strict" => Ok(SecuritySpec::strict()),
        "off" => Ok(SecuritySpec::default()),
        _ => Err("say strict or off".into()),
    }
}

fn violation(text: &str) -> Result<Violation, String> {
    match text {
        "drop" => Ok(Violation::Drop),
        "shutdown" => Ok(Violation::Shutdown),
        _ => Err("say drop or shutdown".into()),
    }
}

fn yes_no(text: &str) -> Result<bool, String> {
    match text {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => Err("say yes or no".into()),
    }
}

/// Comma-separated items; `none` (or nothing) is an empty list.
fn list<T>(text: &str, item: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    if text.trim().is_empty() || text.trim() == "none" {
        return Ok(Vec::new());
    }
    text.split(',').map(|s| item(s.trim())).collect()
}

fn mac_list(text: &str) -> Result<MacList, String> {
    list(text, |s| s.parse().map_err(|e| format!("{e}"))).map(MacList)
}

fn ip_sources(text: &str) -> Result<IpSources, String> {
    list(text, |s| s.parse().map_err(|e| format!("{e}"))).map(IpSources)
}

impl SecurityArgs {
    /// The change of the `security` section the flags ask for, made on `now` (the
    /// section in force): `None` if no security flag was given, `Some(None)` to remove
    /// it.
    pub fn patch(&self, now: Option<&SecuritySpec>) -> Option<Option<SecuritySpec>> {
        if self.no_security {
            return Some(None);
        }
        let either = |allow: bool, deny: bool| (allow || deny).then_some(allow);
        let changes = SecuritySpec {
            profile: None,
            macs: self.mac_lock.clone().map(|l| l.0),
            mac_limit: self.mac_limit,
            mac_violation: self.mac_violation,
            ip_guard: self.ip_guard.clone().map(|s| s.0),
            ipv6_link_local: self.ipv6_link_local,
            dhcp_server: either(self.allow_dhcp_server, self.no_dhcp_server),
            router: either(self.allow_router, self.no_router),
        };
        if self.security.is_none() && changes == SecuritySpec::default() {
            return None;
        }
        let base = match &self.security {
            Some(profile) => profile.clone(),
            None => now.cloned().unwrap_or_default(),
        };
        Some(Some(base.merged(&changes)))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Flags {
        #[command(flatten)]
        security: SecurityArgs,
    }

    fn patch(args: &[&str], now: Option<&SecuritySpec>) -> Option<Option<SecuritySpec>> {
        let mut argv = vec!["t"];
        argv.extend_from_slice(args);
        Flags::try_parse_from(argv).unwrap().security.patch(now)
    }

    #[test]
    fn no_flag_changes_nothing_and_no_security_removes_the_section() {
        assert_eq!(patch(&[], Some(&SecuritySpec::strict())), None);
        assert_eq!(patch(&["--no-security"], None), Some(None));
        assert!(Flags::try_parse_from(["t", "--no-security", "--mac-limit", "1"]).is_err());
        assert!(Flags::try_parse_from(["t", "--allow-router", "--no-router"]).is_err());
    }

    #[test]
    fn flags_refine_the_section_in_force_or_a_profile() {
        let s = patch(&["--allow-dhcp-server"], Some(&SecuritySpec::strict()))
            .unwrap()
            .unwrap();
        assert_eq!(s.profile, SecuritySpec::strict().profile);
        assert_eq!(s.dhcp_server, Some(true));
        let c = s.guard_config();
        assert!(!c.dhcp_guard && c.ra_guard && c.mac_lock.is_some());

        let s = patch(
            &[
                "--mac-lock",
                "52:54:00:00:00:01,52:54:00:00:00:02",
                "--mac-violation",
                "shutdown",
                "--ip-guard",
                "dhcp, 10.0.0.5,fd00::/64",
                "--ipv6-link-local",
                "no",
                "--no-router",
            ],
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.macs.as_ref().map(Vec::len), Some(2));
        assert_eq!(s.mac_violation, Some(Violation::Shutdown));
        let sources: Vec<String> = s.ip_guard.iter().flatten().map(|i| i.to_string()).collect();
        assert_eq!(sources, ["dhcp", "10.0.0.5", "fd00::/64"]);
        assert_eq!((s.ipv6_link_local, s.router), (Some(false), Some(false)));

        let off = patch(
            &["--security", "off", "--mac-limit", "2"],
            Some(&SecuritySpec::strict()),
        );
        let off = off.unwrap().unwrap();
        assert_eq!((off.profile, off.mac_limit), (None, Some(2)));
        let none = patch(&["--ip-guard", "none"], Some(&SecuritySpec::strict()));
        assert!(none.unwrap().unwrap().guard_config().ip_guard.is_none());
    }

    #[test]
    fn bad_values_are_usage_errors_that_say_what_to_write() {
        for (args, says) in [
            (&["--security", "paranoid"][..], "say strict or off"),
            (&["--mac-violation", "block"][..], "say drop or shutdown"),
            (&["--mac-lock", "52:54:00"][..], "six hex octets"),
            (&["--ip-guard", "10.0.0.0/33"][..], "say \"dhcp\""),
            (&["--ipv6-link-local", "maybe"][..], "say yes or no"),
        ] {
            let mut argv = vec!["t"];
            argv.extend_from_slice(args);
            let e = Flags::try_parse_from(argv).unwrap_err().to_string();
            assert!(e.contains(says), "{args:?}: {e}");
        }
    }
}
