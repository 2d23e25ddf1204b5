//! The command line: what `vnet` accepts, as clap types.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use vnet_control::MacAddr;

/// Manage the virtual Ethernet switches of a running vnetd.
#[derive(Debug, Parser)]
#[command(name = "vnet", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// Runtime directory of vnetd, where control.sock is
    /// [default: /run/vnet as root, else $XDG_RUNTIME_DIR/vnet or /tmp/vnet-UID]
    #[arg(
        long,
        global = true,
        env = "VNET_RUN_DIR",
        value_name = "DIR",
        help_heading = "Global options"
    )]
    pub run_dir: Option<PathBuf>,

    /// Print the API's JSON instead of tables
    #[arg(long, global = true, help_heading = "Global options")]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List, show, create and remove vnets
    #[command(subcommand)]
    Net(NetCommand),
    /// List, show, add and remove ports of a vnet
    #[command(subcommand)]
    Port(PortCommand),
    /// Show what a vnet's switch has learned
    #[command(subcommand)]
    Mac(MacCommand),
    /// Print the arguments that attach a VM to a vnet
    Attach(AttachArgs),
    /// Print the versions of vnet and of the running vnetd
    Version,
}

#[derive(Debug, Subcommand)]
pub enum NetCommand {
    /// List vnets
    #[command(visible_alias = "list")]
    Ls,
    /// Show one vnet: settings, counts, the sockets clients attach through
    Show {
        /// Name of the vnet
        net: String,
    },
    /// Create a vnet
    #[command(visible_alias = "add")]
    Create(CreateNet),
    /// Remove a vnet and all its ports
    #[command(visible_alias = "del")]
    Rm {
        /// Name of the vnet
        net: String,
    },
}

#[derive(Debug, Args)]
pub struct CreateNet {
    /// Name: 1-15 characters of A-Z a-z 0-9 _ . -
    pub net: String,
    /// IP MTU of the vnet, 68-65521 [default: 1500]
    #[arg(long, value_parser = clap::value_parser!(u32).range(68..=65521))]
    pub mtu: Option<u32>,
    /// Seconds a learned MAC lives without traffic [default: 300]
    #[arg(long, value_name = "SECS")]
    pub mac_aging: Option<u64>,
    /// Most MACs one port may teach the switch [default: 1024]
    #[arg(long, value_name = "N")]
    pub max_macs_per_port: Option<usize>,
    /// Most MACs the vnet learns in all [default: 16384]
    #[arg(long, value_name = "N")]
    pub max_macs: Option<usize>,
}

#[derive(Debug, Subcommand)]
pub enum PortCommand {
    /// List the ports of a vnet with their traffic
    #[command(visible_alias = "list")]
    Ls {
        /// Name of the vnet
        net: String,
    },
    /// Show one port: VLANs, MACs, counters, drops by cause
    Show {
        /// Name of the vnet
        net: String,
        /// Port id, as `vnet port ls NET` shows it
        port: u32,
    },
    /// Add a port that vnetd owns (socket ports appear when clients connect)
    Add(AddPort),
    /// Remove a port (disconnects its client)
    #[command(visible_alias = "del")]
    Rm {
        /// Name of the vnet
        net: String,
        /// Port id, as `vnet port ls NET` shows it
        port: u32,
    },
}

#[derive(Debug, Args)]
pub struct AddPort {
    /// Name of the vnet
    pub net: String,
    /// Create (or open) TAP interface IFNAME and attach it
    #[arg(long, value_name = "IFNAME", required = true)]
    pub tap: String,
    /// Access port of VLAN N, untagged on the wire [default: 1]
    #[arg(long, value_name = "N", value_parser = vlan_id, conflicts_with = "trunk")]
    pub vlan: Option<u16>,
    /// Trunk port carrying these VLANs tagged, e.g. 10,20,30-39
    #[arg(long, value_name = "VLANS", value_parser = vlan_list)]
    pub trunk: Option<VlanList>,
    /// With --trunk: the VLAN carried untagged
    #[arg(long, value_name = "N", value_parser = vlan_id, requires = "trunk")]
    pub native: Option<u16>,
}

#[derive(Debug, Subcommand)]
pub enum MacCommand {
    /// List the MAC table of a vnet
    #[command(visible_alias = "list")]
    Ls {
        /// Name of the vnet
        net: String,
    },
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Name of the vnet
    pub net: String,
    /// Print QEMU command-line arguments (-netdev and -device)
    #[arg(long, required = true)]
    pub qemu: bool,
    /// Use -netdev dgram (unix datagrams) instead of -netdev stream
    #[arg(long)]
    pub dgram: bool,
    /// Use -netdev vde (the vnet's VDE switch directory) instead of -netdev stream
    #[arg(long, conflicts_with = "dgram")]
    pub vde: bool,
    /// MAC address of the VM's NIC [default: random 52:54:00:xx:xx:xx]
    #[arg(long)]
    pub mac: Option<MacAddr>,
    /// QEMU id of the netdev
    #[arg(long, default_value = "vnet0")]
    pub id: String,
    /// QEMU NIC model
    #[arg(long, default_value = "virtio-net-pci")]
    pub model: String,
    /// QEMU binary asked for its version, to pick the reconnect option it knows
    #[arg(long, value_name = "PATH", default_value = "qemu-system-x86_64")]
    pub qemu_binary: String,
}

/// A VLAN id a port may be a member of: 1-4094.
fn vlan_id(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u16>() {
        Ok(v @ 1..=4094) => Ok(v),
        _ => Err(format!("{text:?} is not a VLAN id: use 1-4094")),
    }
}

/// VLAN ids, sorted, each once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VlanList(pub Vec<u16>);

/// `10,20,30-39` → `[10, 20, 30, 31, …, 39]`.
fn vlan_list(text: &str) -> Result<VlanList, String> {
    let mut vlans = Vec::new();
    for item in text.split(',') {
        match item.split_once('-') {
            Some((first, last)) => {
                let (first, last) = (vlan_id(first)?, vlan_id(last)?);
                if first > last {
                    return Err(format!("{item:?} is an empty range: write low-high"));
                }
                vlans.extend(first..=last);
            }
            None => vlans.push(vlan_id(item)?),
        }
    }
    vlans.sort_unstable();
    vlans.dedup();
    Ok(VlanList(vlans))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("vnet").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn net_create_takes_mtu_and_aging() {
        let cli = parse(&[
            "net",
            "create",
            "vmnet2",
            "--mtu",
            "9000",
            "--mac-aging",
            "60",
        ])
        .unwrap();
        let Command::Net(NetCommand::Create(c)) = cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!(c.net, "vmnet2");
        assert_eq!(c.mtu, Some(9000));
        assert_eq!(c.mac_aging, Some(60));
        assert_eq!(c.max_macs, None);
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = parse(&["net", "ls", "--json", "--run-dir", "/tmp/r"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.run_dir, Some(PathBuf::from("/tmp/r")));
        let cli = parse(&["--json", "mac", "ls", "vmnet1"]).unwrap();
        assert!(cli.json);
        assert!(matches!(cli.command, Command::Mac(MacCommand::Ls { .. })));
    }

    #[test]
    fn port_commands_parse() {
        let cli = parse(&["port", "show", "vmnet1", "3"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Port(PortCommand::Show { ref net, port: 3 }) if net == "vmnet1"
        ));
        let cli = parse(&["port", "rm", "vmnet1", "4"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Port(PortCommand::Rm { port: 4, .. })
        ));
        let err = parse(&["port", "show", "vmnet1", "three"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
    }

    #[test]
    fn port_add_takes_access_or_trunk_vlans() {
        let cli = parse(&["port", "add", "vmnet1", "--tap", "tap0", "--vlan", "10"]).unwrap();
        let Command::Port(PortCommand::Add(a)) = cli.command else {
            panic!()
        };
        assert_eq!((a.tap.as_str(), a.vlan, a.trunk), ("tap0", Some(10), None));

        let cli = parse(&[
            "port", "add", "vmnet1", "--tap", "tap1", "--trunk", "30-32,10", "--native", "5",
        ])
        .unwrap();
        let Command::Port(PortCommand::Add(a)) = cli.command else {
            panic!()
        };
        assert_eq!(a.trunk, Some(VlanList(vec![10, 30, 31, 32])));
        assert_eq!(a.native, Some(5));
    }

    #[test]
    fn port_add_rejects_bad_vlans_and_mixed_modes() {
        let kind = |args: &[&str]| parse(args).unwrap_err().kind();
        assert_eq!(
            kind(&["port", "add", "n", "--tap", "t", "--vlan", "4095"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            kind(&["port", "add", "n", "--tap", "t", "--vlan", "2", "--trunk", "3"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            kind(&["port", "add", "n", "--tap", "t", "--native", "2"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            kind(&["port", "add", "n"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            kind(&["port", "add", "n", "--tap", "t", "--trunk", "9-3"]),
            ErrorKind::ValueValidation
        );
    }

    #[test]
    fn attach_needs_a_format_and_parses_the_mac() {
        assert_eq!(
            parse(&["attach", "vmnet1"]).unwrap_err().kind(),
            ErrorKind::MissingRequiredArgument
        );
        let cli = parse(&[
            "attach",
            "vmnet1",
            "--qemu",
            "--dgram",
            "--mac",
            "52:54:00:aa:bb:cc",
            "--id",
            "n1",
        ])
        .unwrap();
        let Command::Attach(a) = cli.command else {
            panic!()
        };
        assert!(a.qemu && a.dgram);
        assert_eq!(a.mac, Some("52:54:00:aa:bb:cc".parse().unwrap()));
        assert_eq!(a.id, "n1");
        assert_eq!(a.model, "virtio-net-pci");
        assert_eq!(
            parse(&["attach", "vmnet1", "--qemu", "--mac", "52:54"])
                .unwrap_err()
                .kind(),
            ErrorKind::ValueValidation
        );
    }

    #[test]
    fn attach_takes_vde_or_dgram_not_both() {
        let Command::Attach(a) = parse(&["attach", "lab", "--qemu", "--vde"])
            .unwrap()
            .command
        else {
            panic!()
        };
        assert!(a.vde && !a.dgram);
        assert_eq!(
            parse(&["attach", "lab", "--qemu", "--vde", "--dgram"])
                .unwrap_err()
                .kind(),
            ErrorKind::ArgumentConflict
        );
    }

    #[test]
    fn usage_errors_exit_with_2() {
        let err = parse(&["net", "frobnicate"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
