//! The command line: what `vnet` accepts, as clap types.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand};
use vnet_control::policy::acl::{AclAction, AclDirection};
use vnet_control::policy::impair::GilbertElliott;
use vnet_control::policy::units::{BitRate, ByteSize, Micros, Ppm};
use vnet_control::{Account, Dhcp6Mode, Ipv4Net, Ipv6Net, MacAddr};

mod security;
pub use security::SecurityArgs;

/// Manage the virtual Ethernet switches of a running vnetd.
#[derive(Debug, Parser)]
#[command(
    name = "vnet",
    version,
    propagate_version = true,
    max_term_width = 100,
    after_help = crate::failure::EXIT_STATUS_HELP
)]
pub struct Cli {
    /// Runtime directory of vnetd, where control.sock is
    /// [default: /run/vnet as root, else $XDG_RUNTIME_DIR/vnet or /run/user/UID/vnet]
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
    /// List the addresses a vnet's DHCP service handed out
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// Show and change a vnet's DHCP service and its reservations
    #[command(subcommand)]
    Dhcp(DhcpCommand),
    /// Bridge a vnet to a host NIC (or one VLAN of it), make it a VXLAN segment across
    /// hosts, or take its uplink away
    #[command(subcommand)]
    Uplink(UplinkCommand),
    /// List, pin and remove the MACs a VXLAN vnet knows behind remote hosts
    #[command(subcommand)]
    Fdb(FdbCommand),
    /// Forward host ports to guests of a NAT vnet, live
    #[command(subcommand)]
    Forward(ForwardCommand),
    /// Copy the frames of ports to another port (SPAN), e.g. for an IDS or tcpdump
    #[command(subcommand)]
    Mirror(MirrorCommand),
    /// Filter a port's frames (ACLs): ordered rules per direction, with counters, live
    #[command(subcommand)]
    Acl(AclCommand),
    /// Capture a vnet's frames live as pcapng (to stdout or a file), e.g. `vnet capture
    /// lab | tcpdump -nn -r -`; admin only
    Capture(CaptureArgs),
    /// Print the arguments that attach a VM to a vnet
    Attach(AttachArgs),
    /// Print the running configuration
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Make vnetd re-read its config file and apply what changed in it (as SIGHUP does)
    Reload,
    /// Print the versions of vnet and of the running vnetd
    Version,
    /// Print the completion script for a shell, e.g. `vnet completions bash >
    /// /etc/bash_completion.d/vnet`
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (vnet.1 and one per command) into DIR
    #[command(hide = true)]
    Man {
        /// Where the pages go (made if missing)
        dir: PathBuf,
    },
}

/// `--if-exists` on the commands that remove something, as in `ovs-vsctl`.
#[derive(Debug, Args)]
pub struct IfExists {
    /// Succeed, changing nothing, if there is nothing to remove
    #[arg(long)]
    pub if_exists: bool,
}

/// `--may-exist` on the commands that create or add something, as in `ovs-vsctl`.
#[derive(Debug, Args)]
pub struct MayExist {
    /// Succeed, changing nothing, if it exists already (as it is: its settings are not
    /// compared)
    #[arg(long)]
    pub may_exist: bool,
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
        #[command(flatten)]
        if_exists: IfExists,
    },
    /// Show the policy of a vnet's client ports, or change it live with policy flags
    /// (a port's own policy, `vnet port set`, replaces it section by section)
    Policy {
        /// Name of the vnet
        net: String,
        #[command(flatten)]
        policy: Box<PolicyArgs>,
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
    /// IPv4 subnet of the vnet, e.g. 192.168.101.0/24 (needed by --host-adapter and --dhcp)
    #[arg(long, value_name = "CIDR")]
    pub subnet: Option<Ipv4Net>,
    /// IPv6 /64 of the vnet, e.g. fd00:1:2:3::/64 [default: a ULA prefix derived from the
    /// name, with --host-adapter, --dhcp or --nat]
    #[arg(long, value_name = "CIDR", conflicts_with = "no_ipv6")]
    pub subnet6: Option<Ipv6Net>,
    /// No IPv6 of the vnet's own: no prefix, router advertisements or host adapter
    /// address (guests' IPv6 frames are still switched)
    #[arg(long)]
    pub no_ipv6: bool,
    /// No IGMP/MLD snooping: multicast floods to every port of the VLAN instead of
    /// reaching only the ports that joined its group
    #[arg(long)]
    pub no_snooping: bool,
    /// Give the host an interface on the vnet (host-only networking; needs root), named
    /// after the vnet, with address ADDR [default: the subnet's .1]
    #[arg(
        long,
        value_name = "ADDR",
        num_args = 0..=1,
        require_equals = true,
        requires = "subnet"
    )]
    pub host_adapter: Option<Option<Ipv4Addr>>,
    /// Serve DHCP on the vnet with the default settings (change them with `vnet dhcp set`)
    #[arg(long, requires = "subnet")]
    pub dhcp: bool,
    /// What DHCP does over IPv6: stateful (addresses, the default), stateless (DNS and
    /// domain only) or off
    #[arg(long, value_name = "MODE", requires = "dhcp")]
    pub dhcp6: Option<Dhcp6Mode>,
    /// Only this user (a name or uid; repeat for more), members of --allow-group, root and
    /// vnetd's uid may attach [default: anyone who can open the sockets]
    #[arg(long = "allow-user", value_name = "USER")]
    pub allow_users: Vec<Account>,
    /// Members of this group (a name or gid; repeat for more) may attach, as --allow-user
    #[arg(long = "allow-group", value_name = "GROUP")]
    pub allow_groups: Vec<Account>,
    /// Give the vnet a NAT device with the default settings (.2: the guests' router and
    /// DNS server; forward host ports to guests with `vnet forward add`)
    #[arg(long, requires = "subnet")]
    pub nat: bool,
    /// Do not save the vnet: it is gone when vnetd restarts
    #[arg(long)]
    pub transient: bool,
    #[command(flatten)]
    pub may_exist: MayExist,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print every running vnet and the daemon's settings as a vnetd config file (TOML)
    Export,
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
        #[command(flatten)]
        if_exists: IfExists,
    },
    /// Change a port's VLAN mode (what it had learned is forgotten) or its own policy,
    /// live
    Set(SetPort),
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("mode").args(["access", "trunk"])))]
pub struct SetPort {
    /// Name of the vnet
    pub net: String,
    /// Port id, as `vnet port ls NET` shows it
    pub port: u32,
    /// Access port of VLAN N, untagged on the wire
    #[arg(long, value_name = "N", value_parser = vlan_id)]
    pub access: Option<u16>,
    /// Trunk port carrying these VLANs tagged, e.g. 10,20,30-39
    #[arg(long, value_name = "VLANS", value_parser = vlan_list)]
    pub trunk: Option<VlanList>,
    /// With --trunk: the VLAN carried untagged
    #[arg(long, value_name = "N", value_parser = vlan_id, requires = "trunk")]
    pub native: Option<u16>,
    #[command(flatten)]
    pub policy: Box<PolicyArgs>,
}

/// Policy flags (`vnet port set`, `vnet net policy`): each section's flags change that
/// section of the policy and leave the others as they are.
#[derive(Debug, Default, Args)]
pub struct PolicyArgs {
    #[command(flatten)]
    pub security: SecurityArgs,
    #[command(flatten)]
    pub rate: RateArgs,
    #[command(flatten)]
    pub impair: ImpairArgs,
}

/// Rate limits and storm control flags (the policy's `rate` section).
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Rate limits and storm control")]
pub struct RateArgs {
    /// Police what the port sends into the vnet to RATE (e.g. 10mbit); over it: dropped
    #[arg(long, value_name = "RATE")]
    pub rate_in: Option<BitRate>,
    /// Shape what the vnet sends to the port to RATE (frames wait, then drop when the
    /// port holds its `[limits] held_frames_per_port`)
    #[arg(long, value_name = "RATE")]
    pub rate_out: Option<BitRate>,
    /// Burst of the rates given with it (e.g. 512k) [default: 20 ms at the rate, at
    /// least 256k]
    #[arg(long, value_name = "SIZE")]
    pub burst: Option<ByteSize>,
    /// Broadcast frames per second the port may send
    #[arg(long, value_name = "PPS")]
    pub broadcast_limit: Option<u64>,
    /// Multicast frames per second the port may send
    #[arg(long, value_name = "PPS")]
    pub multicast_limit: Option<u64>,
    /// Frames per second to unknown unicast addresses (flooded) the port may send
    #[arg(long, value_name = "PPS")]
    pub unknown_unicast_limit: Option<u64>,
    /// Remove the rate section (a port falls back to its vnet's)
    #[arg(long, conflicts_with_all = ["rate_in", "rate_out", "burst", "broadcast_limit", "multicast_limit", "unknown_unicast_limit"])]
    pub no_rate: bool,
}

/// Impairment flags (the policy's `impair` section), for the `--direction` given.
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Impairment")]
pub struct ImpairArgs {
    /// Hold each frame this long (e.g. 50ms)
    #[arg(long, value_name = "TIME")]
    pub delay: Option<Micros>,
    /// Vary the delay by up to this much (uniform) or by this σ (normal)
    #[arg(long, value_name = "TIME")]
    pub jitter: Option<Micros>,
    /// The jitter's distribution
    #[arg(long, value_name = "DIST")]
    pub distribution: Option<JitterDistribution>,
    /// Lose frames at random with this probability (e.g. 5%)
    #[arg(long, value_name = "P")]
    pub loss: Option<Ppm>,
    /// Lose frames in bursts (Gilbert–Elliott, as netem's gemodel): P,R[,1-H[,1-K]],
    /// e.g. 1%,30%
    #[arg(long, value_name = "P,R")]
    pub loss_burst: Option<GilbertElliott>,
    /// Send frames twice with this probability
    #[arg(long, value_name = "P")]
    pub duplicate: Option<Ppm>,
    /// Send frames ahead of the delayed ones with this probability (needs --delay)
    #[arg(long, value_name = "P")]
    pub reorder: Option<Ppm>,
    /// Flip a bit after the Ethernet header with this probability
    #[arg(long, value_name = "P")]
    pub corrupt: Option<Ppm>,
    /// Emulate a link of this speed (serialization delay, as netem's rate)
    #[arg(long, value_name = "RATE")]
    pub impair_rate: Option<BitRate>,
    /// Which frames the impairment flags change: out (to the port's client), in (from
    /// it) or both
    #[arg(long, value_name = "DIR", default_value = "out")]
    pub direction: ImpairDirection,
    /// Remove the impair section (a port falls back to its vnet's)
    #[arg(long, conflicts_with_all = ["delay", "jitter", "distribution", "loss", "loss_burst", "duplicate", "reorder", "corrupt", "impair_rate"])]
    pub no_impair: bool,
}

/// `--distribution`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JitterDistribution {
    Uniform,
    Normal,
}

/// `--direction`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ImpairDirection {
    In,
    #[default]
    Out,
    Both,
}

#[derive(Debug, Subcommand)]
pub enum ForwardCommand {
    /// List a NAT vnet's port forwards
    #[command(visible_alias = "list")]
    Ls {
        /// Name of the vnet
        net: String,
    },
    /// Carry TCP connections (or UDP datagrams) to HOST (address:port) on to GUEST
    /// (address:port)
    Add {
        /// Name of the vnet
        net: String,
        // `help`, not doc comments: rustdoc would read the brackets of IPv6 addresses
        // as links.
        #[arg(help = "Where the host listens, e.g. 127.0.0.1:8080, [::1]:8080 or [::]:8080")]
        host: std::net::SocketAddr,
        #[arg(
            help = "The guest's address and port, e.g. 192.168.108.10:80 or [fd12:3456:789a:1::10]:80"
        )]
        guest: std::net::SocketAddr,
        /// Forward UDP: each host peer's datagrams go to GUEST, and its replies back
        #[arg(long)]
        udp: bool,
        #[command(flatten)]
        may_exist: MayExist,
    },
    /// Stop forwarding HOST (TCP connections already carried go on)
    #[command(visible_alias = "del")]
    Rm {
        /// Name of the vnet
        net: String,
        /// The forward's host address and port
        host: std::net::SocketAddr,
        /// Remove the UDP forward on HOST (the TCP one stays)
        #[arg(long)]
        udp: bool,
        #[command(flatten)]
        if_exists: IfExists,
    },
}

/// The words of an ACL rule, as `vnet acl add` takes them (README, "Filters (ACLs)").
const ACL_RULE_HELP: &str = "\
Rule words: ACTION [MATCH...]
  ACTION   allow | drop
  MATCH    ipv4 | ipv6 | arp | ethertype E     (E e.g. 0x88cc)
           tcp | udp | icmp | icmpv6 | proto P
           src PREFIX | dst PREFIX             (10.0.0.0/8, fd00::/64, 10.0.0.5)
           src-port PORTS | dst-port PORTS     (80, 1000-2000; with tcp or udp)
           type T [code C]                     (with icmp or icmpv6)
           src-mac MAC | dst-mac MAC | vlan V
           established                         (replies of connections seen before)
Directions: in = frames the port sends into the switch, out = frames the switch
delivers to the port. The first rule that matches decides; frames no rule matches
get the direction's default (allow unless set with `vnet acl default`).
Examples:
  vnet acl add lab 3 out drop tcp dst-port 80
  vnet acl default lab 3 out drop
  vnet acl add lab 3 out allow established
  vnet acl add lab 3 out allow arp
  vnet acl add lab 3 in --position 1 allow icmp type 8";

#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// List a port's rules in order, with the frames and bytes each decided
    #[command(visible_alias = "list")]
    Ls {
        /// Name of the vnet
        net: String,
        /// Port id, as `vnet port ls NET` shows it
        port: u32,
    },
    /// Add a rule to a port's filters (after the last rule, or at --position)
    #[command(after_help = ACL_RULE_HELP)]
    Add {
        /// Name of the vnet
        net: String,
        /// Port id, as `vnet port ls NET` shows it
        port: u32,
        /// in (from the port into the switch) or out (from the switch to the port)
        #[arg(value_parser = acl_direction)]
        dir: AclDirection,
        /// Insert it as rule N (1 = first), moving the rules from N on down
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        position: Option<u64>,
        /// The rule's words, e.g. drop tcp dst-port 80 (see below)
        #[arg(required = true, num_args = 1.., trailing_var_arg = true, value_name = "RULE")]
        rule: Vec<String>,
    },
    /// Remove rule N of a direction (as `vnet acl ls` numbers them)
    #[command(visible_alias = "del")]
    Rm {
        /// Name of the vnet
        net: String,
        /// Port id, as `vnet port ls NET` shows it
        port: u32,
        /// in or out
        #[arg(value_parser = acl_direction)]
        dir: AclDirection,
        /// The rule's number (1 = first)
        #[arg(value_parser = clap::value_parser!(u64).range(1..))]
        n: u64,
    },
    /// Set what happens to frames of a direction that no rule matches
    Default {
        /// Name of the vnet
        net: String,
        /// Port id, as `vnet port ls NET` shows it
        port: u32,
        /// in or out
        #[arg(value_parser = acl_direction)]
        dir: AclDirection,
        /// allow or drop
        #[arg(value_parser = acl_action)]
        action: AclAction,
    },
}

/// `in` or `out`.
fn acl_direction(s: &str) -> Result<AclDirection, String> {
    s.parse()
        .map_err(|e: vnet_control::policy::acl::AclError| e.to_string())
}

/// `allow` or `drop`.
fn acl_action(s: &str) -> Result<AclAction, String> {
    s.parse()
        .map_err(|e: vnet_control::policy::acl::AclError| e.to_string())
}

#[derive(Debug, Subcommand)]
pub enum MirrorCommand {
    /// List a vnet's mirrors with their state and counters
    #[command(visible_alias = "list")]
    Ls {
        /// Name of the vnet
        net: String,
    },
    /// Copy the frames of the source ports to port --to, which then takes no other
    /// traffic (its own frames are dropped); admin only
    Add {
        /// Name of the vnet
        net: String,
        /// Name of the mirror
        name: String,
        /// The ports to copy: ids, or names of TAP, interface or vhost-user ports
        /// (names last across restarts)
        #[arg(
            long = "source",
            value_name = "PORT",
            value_delimiter = ',',
            required = true
        )]
        sources: Vec<vnet_control::PortRef>,
        /// Which frames: in (what the sources send), out (what they receive) or both
        #[arg(long, value_name = "DIR", default_value = "both")]
        direction: vnet_control::MirrorDirection,
        /// The destination port (id or name)
        #[arg(long = "to", value_name = "PORT")]
        destination: vnet_control::PortRef,
    },
    /// Remove a mirror; its destination switches as an ordinary port again
    #[command(visible_alias = "del")]
    Rm {
        /// Name of the vnet
        net: String,
        /// Name of the mirror
        name: String,
        #[command(flatten)]
        if_exists: IfExists,
    },
}

#[derive(Debug, Subcommand)]
pub enum UplinkCommand {
    /// Bridge a vnet to host interface IFNAME (needs root): VMs appear on its LAN; or,
    /// with --vxlan, join it to the same VNI on other hosts (no root needed)
    Set(SetUplink),
    /// Add or remove a VXLAN vnet's remote hosts (VTEPs), live
    #[command(subcommand)]
    Remote(RemoteCommand),
    /// Unbridge a vnet
    #[command(visible_alias = "del")]
    Rm {
        /// Name of the vnet
        net: String,
        #[command(flatten)]
        if_exists: IfExists,
    },
}

#[derive(Debug, Subcommand)]
pub enum RemoteCommand {
    /// Send the vnet's flooded frames to ADDR too, and hear it
    Add {
        /// Name of the vnet
        net: String,
        /// The remote host's underlay address
        addr: std::net::IpAddr,
    },
    /// Stop sending to ADDR and forget the MACs learned behind it
    #[command(visible_alias = "del")]
    Rm {
        /// Name of the vnet
        net: String,
        addr: std::net::IpAddr,
        #[command(flatten)]
        if_exists: IfExists,
    },
}

#[derive(Debug, Subcommand)]
pub enum FdbCommand {
    /// List the MACs behind remote hosts, learned and pinned
    #[command(visible_alias = "list")]
    Ls {
        /// Name of the vnet
        net: String,
    },
    /// Pin MAC behind remote host REMOTE (never ages, never moves)
    Add {
        /// Name of the vnet
        net: String,
        mac: MacAddr,
        remote: std::net::IpAddr,
    },
    /// Remove MAC's entry, pinned or learned
    #[command(visible_alias = "del")]
    Rm {
        /// Name of the vnet
        net: String,
        mac: MacAddr,
        #[command(flatten)]
        if_exists: IfExists,
    },
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("uplink_kind").required(true).args(["interface", "vxlan"])))]
pub struct SetUplink {
    /// Name of the vnet
    pub net: String,
    /// The host interface, e.g. eth1
    #[arg(long, value_name = "IFNAME")]
    pub interface: Option<String>,
    /// Make the vnet VXLAN segment VNI (RFC 7348) with the hosts given by --remote or
    /// --group
    #[arg(long, value_name = "VNI", requires = "local")]
    pub vxlan: Option<u32>,
    /// With --vxlan: this host's underlay address
    #[arg(long, value_name = "ADDR", requires = "vxlan")]
    pub local: Option<std::net::IpAddr>,
    /// With --vxlan: a remote host's underlay address (repeat for more)
    #[arg(long = "remote", value_name = "ADDR", requires = "vxlan")]
    pub remotes: Vec<std::net::IpAddr>,
    /// With --vxlan: a multicast group instead of remotes
    #[arg(
        long,
        value_name = "ADDR",
        requires = "vxlan",
        conflicts_with = "remotes"
    )]
    pub group: Option<std::net::IpAddr>,
    /// With --vxlan: the UDP port [default: 4789]
    #[arg(long, value_name = "PORT", requires = "vxlan")]
    pub vxlan_port: Option<u16>,
    /// Map the vnet to VLAN N of the interface (tagged there, untagged in the vnet); with
    /// --vxlan: the vnet's VLAN N is what the VNI carries
    #[arg(long, value_name = "N", value_parser = vlan_id, conflicts_with = "trunk")]
    pub vlan: Option<u16>,
    /// Carry these VLANs of the interface, tagged, into the vnet, e.g. 10,20
    #[arg(long, value_name = "VLANS", value_parser = vlan_list)]
    pub trunk: Option<VlanList>,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("port_kind").required(true).args(["tap", "vhost_user", "interface"])))]
pub struct AddPort {
    /// Name of the vnet
    pub net: String,
    /// Create (or open) TAP interface IFNAME and attach it
    #[arg(long, value_name = "IFNAME")]
    pub tap: Option<String>,
    /// Join host interface IFNAME that another program holds (the TAP of Firecracker,
    /// cloud-hypervisor or libvirt, a veth end); the port waits for it while
    /// it does not exist
    #[arg(long, value_name = "IFNAME")]
    pub interface: Option<String>,
    /// Listen for a QEMU virtio-net NIC on RUN/NET/vhost-user/NAME.sock (vhost-user);
    /// `vnet attach NET --vhost-user NAME` prints the QEMU arguments
    #[arg(long, value_name = "NAME")]
    pub vhost_user: Option<String>,
    /// Access port of VLAN N, untagged on the wire [default: 1]
    #[arg(long, value_name = "N", value_parser = vlan_id, conflicts_with = "trunk")]
    pub vlan: Option<u16>,
    /// Trunk port carrying these VLANs tagged, e.g. 10,20,30-39
    #[arg(long, value_name = "VLANS", value_parser = vlan_list)]
    pub trunk: Option<VlanList>,
    /// With --trunk: the VLAN carried untagged
    #[arg(long, value_name = "N", value_parser = vlan_id, requires = "trunk")]
    pub native: Option<u16>,
    #[command(flatten)]
    pub may_exist: MayExist,
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

#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// List the leases of a vnet: MAC, IP, hostname, expiry, state
    #[command(visible_alias = "list")]
    Ls {
        /// Name of the vnet
        net: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DhcpCommand {
    /// Show the DHCP settings and reservations of a vnet
    Show {
        /// Name of the vnet
        net: String,
    },
    /// Change the DHCP settings of a vnet, live (starts the service if it has none)
    Set(SetDhcp),
    /// Always give MAC the address IP
    Reserve(Reserve),
    /// Remove the reservation of MAC
    Unreserve {
        /// Name of the vnet
        net: String,
        /// MAC address whose reservation goes
        mac: MacAddr,
        #[command(flatten)]
        if_exists: IfExists,
    },
}

#[derive(Debug, Args)]
#[command(
    group(ArgGroup::new("change").required(true).multiple(true)),
    override_usage = "vnet dhcp set <NET> [--on|--off] [--range <FIRST-LAST>] [--lease <SECS>] \
                      [--dns <IP,IP>] [--domain <D>] [--dhcp6 <MODE>] [--range6 <FIRST-LAST>] \
                      [--dns6 <IP,IP>]"
)]
pub struct SetDhcp {
    /// Name of the vnet
    pub net: String,
    /// Serve DHCP
    #[arg(long, group = "change", conflicts_with = "off")]
    pub on: bool,
    /// Stop answering DHCP, keeping the settings and leases (e.g. for a PXE lab)
    #[arg(long, group = "change")]
    pub off: bool,
    /// Pool of addresses handed out, e.g. 192.168.101.128-192.168.101.253
    #[arg(long, value_name = "FIRST-LAST", value_parser = ip_range::<Ipv4Addr>, group = "change")]
    pub range: Option<IpRange>,
    /// Lease time in seconds
    #[arg(
        long,
        value_name = "SECS",
        value_parser = clap::value_parser!(u64).range(1..),
        group = "change"
    )]
    pub lease: Option<u64>,
    /// DNS servers announced, e.g. 192.168.101.1,9.9.9.9 ("none" announces none)
    #[arg(long, value_name = "IP,IP", value_parser = dns_list::<Ipv4Addr>, group = "change")]
    pub dns: Option<DnsList>,
    /// Domain name announced ("" announces none)
    #[arg(long, value_name = "D", group = "change")]
    pub domain: Option<String>,
    /// DHCPv6: stateful (addresses and settings), stateless (DNS and domain only) or off
    #[arg(long, value_name = "MODE", group = "change")]
    pub dhcp6: Option<Dhcp6Mode>,
    /// Pool of IPv6 addresses handed out, e.g. fd00:1:2:3::1000-fd00:1:2:3::1fff
    #[arg(long, value_name = "FIRST-LAST", value_parser = ip_range::<Ipv6Addr>, group = "change")]
    pub range6: Option<IpRange<Ipv6Addr>>,
    /// DNS servers DHCPv6 announces ("none": the default, the router's)
    #[arg(long, value_name = "IP,IP", value_parser = dns_list::<Ipv6Addr>, group = "change")]
    pub dns6: Option<DnsList<Ipv6Addr>>,
}

#[derive(Debug, Args)]
pub struct Reserve {
    /// Name of the vnet
    pub net: String,
    /// MAC address of the client
    pub mac: MacAddr,
    /// Address it always gets (in the vnet's subnet, not in use by another client)
    pub ip: Ipv4Addr,
    /// Host name recorded with the reservation
    #[arg(long, value_name = "H")]
    pub hostname: Option<String>,
    /// IPv6 address DHCPv6 always gives the client (in the vnet's /64)
    #[arg(long, value_name = "IP6")]
    pub ip6: Option<Ipv6Addr>,
    /// Recognize the DHCPv6 client by this DUID (hex octets, e.g. 00:03:00:01:52:54:00:12:34:56)
    /// instead of by MAC
    #[arg(long, value_name = "HEX", requires = "ip6")]
    pub duid: Option<String>,
    #[command(flatten)]
    pub may_exist: MayExist,
}

/// `vnet capture`
#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// Name of the vnet
    pub net: String,
    /// Capture only port ID (repeat for more) [default: every port, later ones too]
    #[arg(long = "port", value_name = "ID")]
    pub ports: Vec<u32>,
    /// Stop after N frames [default: run until interrupted or the reader quits]
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Keep at most N bytes of each frame [default: 262144]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=262_144))]
    pub snaplen: Option<u32>,
    /// Write to FILE instead of stdout
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("hypervisor").args(
    ["qemu", "libvirt", "cloud_hypervisor", "crosvm", "firecracker"]
)))]
pub struct AttachArgs {
    /// Name of the vnet
    pub net: String,
    /// Print QEMU command-line arguments (-netdev and -device) [the default with
    /// --vhost-user or --interface]
    #[arg(
        long,
        required_unless_present_any =
            ["vhost_user", "interface", "libvirt", "cloud_hypervisor", "crosvm", "firecracker"]
    )]
    pub qemu: bool,
    /// Print a libvirt domain `<interface>` element (with --vhost-user or --interface)
    #[arg(long)]
    pub libvirt: bool,
    /// Print cloud-hypervisor's --memory and --net arguments (with --vhost-user)
    #[arg(long, requires = "vhost_user", conflicts_with = "interface")]
    pub cloud_hypervisor: bool,
    /// Print crosvm's --vhost-user argument (with --vhost-user)
    #[arg(long, requires = "vhost_user", conflicts_with = "interface")]
    pub crosvm: bool,
    /// Print Firecracker's network-interfaces entry (with --interface)
    #[arg(long, requires = "interface", conflicts_with = "vhost_user")]
    pub firecracker: bool,
    /// Use -netdev dgram (unix datagrams) instead of -netdev stream
    #[arg(long, conflicts_with_all = ["libvirt", "cloud_hypervisor", "crosvm", "firecracker"])]
    pub dgram: bool,
    /// Use -netdev vde (the vnet's VDE switch directory) instead of -netdev stream
    #[arg(long, conflicts_with_all = ["dgram", "libvirt", "cloud_hypervisor", "crosvm", "firecracker"])]
    pub vde: bool,
    /// Use the vhost-user port added with `vnet port add NET --vhost-user NAME` (QEMU:
    /// adds the -chardev and the shared guest memory vhost-user needs)
    #[arg(long, value_name = "NAME", conflicts_with_all = ["dgram", "vde"])]
    pub vhost_user: Option<String>,
    /// Use the TAP IFNAME that the hypervisor opens and the port added with
    /// `vnet port add NET --interface IFNAME` joins
    #[arg(long, value_name = "IFNAME", conflicts_with_all = ["dgram", "vde", "vhost_user"])]
    pub interface: Option<String>,
    /// With --libvirt --interface: the TAP exists already (`ip tuntap add IFNAME mode tap
    /// user UID`, e.g. for a session libvirt): libvirt opens it instead of creating it
    #[arg(long, requires_all = ["libvirt", "interface"])]
    pub existing_tap: bool,
    /// With --vhost-user: the guest's RAM (QEMU -m, cloud-hypervisor --memory), shared
    /// with vnetd through a memfd
    #[arg(
        long,
        value_name = "SIZE",
        default_value = "1G",
        requires = "vhost_user"
    )]
    pub memory: String,
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

/// An address family's name, for messages about addresses that do not parse.
pub trait Family: std::str::FromStr + Ord + Copy {
    const NAME: &'static str;
}
impl Family for Ipv4Addr {
    const NAME: &'static str = "IPv4";
}
impl Family for Ipv6Addr {
    const NAME: &'static str = "IPv6";
}

fn address<A: Family>(a: &str) -> Result<A, String> {
    a.trim()
        .parse::<A>()
        .map_err(|_| format!("{a:?} is not an {} address", A::NAME))
}

/// First and last address of a DHCP pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange<A = Ipv4Addr>(pub [A; 2]);

/// `192.168.1.100-192.168.1.200` → the two addresses, first no higher than last.
fn ip_range<A: Family>(text: &str) -> Result<IpRange<A>, String> {
    let (first, last) = text
        .split_once('-')
        .ok_or(format!("{text:?} is not a range: write FIRST-LAST"))?;
    let (first, last) = (address::<A>(first)?, address::<A>(last)?);
    if first > last {
        return Err(format!("{text:?} is an empty range: write low-high"));
    }
    Ok(IpRange([first, last]))
}

/// DNS servers; empty to announce none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsList<A = Ipv4Addr>(pub Vec<A>);

/// `192.168.1.1,9.9.9.9` → the addresses in order; `none` (or nothing) → no servers.
fn dns_list<A: Family>(text: &str) -> Result<DnsList<A>, String> {
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("none") {
        return Ok(DnsList(Vec::new()));
    }
    text.split(',')
        .map(address::<A>)
        .collect::<Result<_, _>>()
        .map(DnsList)
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
        assert_eq!(
            (a.tap.as_deref(), a.vlan, a.trunk),
            (Some("tap0"), Some(10), None)
        );

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
    fn port_add_takes_a_tap_or_a_vhost_user_name() {
        let cli = parse(&["port", "add", "vmnet1", "--vhost-user", "vm1"]).unwrap();
        let Command::Port(PortCommand::Add(a)) = cli.command else {
            panic!()
        };
        assert_eq!((a.tap, a.vhost_user.as_deref()), (None, Some("vm1")));
        let kind = |args: &[&str]| parse(args).unwrap_err().kind();
        assert_eq!(
            kind(&["port", "add", "n", "--tap", "t", "--vhost-user", "v"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            kind(&["port", "add", "n"]),
            ErrorKind::MissingRequiredArgument
        );
        assert!(parse(&["attach", "n", "--vhost-user", "v"]).is_ok());
        assert_eq!(
            kind(&["attach", "n", "--vhost-user", "v", "--vde"]),
            ErrorKind::ArgumentConflict
        );
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
    fn port_set_takes_at_most_one_mode() {
        let cli = parse(&["port", "set", "n", "3", "--trunk", "10,20", "--native", "1"]).unwrap();
        let Command::Port(PortCommand::Set(a)) = cli.command else {
            panic!("not port set");
        };
        assert_eq!((a.port, a.access, a.native), (3, None, Some(1)));
        assert_eq!(a.trunk, Some(VlanList(vec![10, 20])));
        let kind = |args: &[&str]| parse(args).unwrap_err().kind();
        // No mode: a policy change only (nothing at all is refused by the command).
        assert!(parse(&["port", "set", "n", "3"]).is_ok());
        assert_eq!(
            kind(&["port", "set", "n", "3", "--access", "2", "--trunk", "3"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            kind(&["port", "set", "n", "3", "--access", "0"]),
            ErrorKind::ValueValidation
        );
    }

    #[test]
    fn uplink_set_takes_an_interface_and_a_vlan_or_a_trunk() {
        let cli = parse(&[
            "uplink",
            "set",
            "lan",
            "--interface",
            "eth1",
            "--vlan",
            "10",
        ])
        .unwrap();
        let Command::Uplink(UplinkCommand::Set(a)) = cli.command else {
            panic!("not uplink set");
        };
        assert_eq!(
            (a.interface.as_deref(), a.vlan, a.trunk),
            (Some("eth1"), Some(10), None)
        );
        let Command::Uplink(UplinkCommand::Set(v)) = parse(&[
            "uplink", "set", "ovl", "--vxlan", "100", "--local", "10.0.0.1", "--remote",
            "10.0.0.2", "--remote", "10.0.0.3",
        ])
        .unwrap()
        .command
        else {
            panic!("not uplink set");
        };
        assert_eq!(
            (v.vxlan, v.remotes.len(), v.interface),
            (Some(100), 2, None)
        );
        let kind = |args: &[&str]| parse(args).unwrap_err().kind();
        assert_eq!(
            kind(&["uplink", "set", "lan"]),
            ErrorKind::MissingRequiredArgument
        );
        // A tunnel needs its local address; remotes need a tunnel; one kind at a time.
        assert_eq!(
            kind(&["uplink", "set", "lan", "--vxlan", "1"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            kind(&[
                "uplink",
                "set",
                "lan",
                "--interface",
                "e",
                "--remote",
                "10.0.0.2"
            ]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            kind(&[
                "uplink",
                "set",
                "lan",
                "--interface",
                "e",
                "--vxlan",
                "1",
                "--local",
                "10.0.0.1"
            ]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            kind(&[
                "uplink",
                "set",
                "lan",
                "--interface",
                "e",
                "--vlan",
                "2",
                "--trunk",
                "3"
            ]),
            ErrorKind::ArgumentConflict
        );
        assert!(matches!(
            parse(&["uplink", "rm", "lan"]).unwrap().command,
            Command::Uplink(UplinkCommand::Rm { .. })
        ));
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
    fn attach_takes_one_hypervisor_and_what_it_attaches_through() {
        let attach = |args: &[&str]| {
            let mut all = vec!["attach", "lab"];
            all.extend_from_slice(args);
            parse(&all).map(|c| match c.command {
                Command::Attach(a) => a,
                _ => panic!("not attach"),
            })
        };
        let a = attach(&["--libvirt", "--interface", "lab-vm1"]).unwrap();
        assert!(a.libvirt && !a.qemu);
        assert_eq!(a.interface.as_deref(), Some("lab-vm1"));
        assert!(attach(&["--libvirt", "--vhost-user", "vm1"]).is_ok());
        assert!(
            attach(&["--interface", "lab-vm1"]).is_ok(),
            "QEMU by default"
        );
        assert!(attach(&["--cloud-hypervisor", "--vhost-user", "vm1"]).is_ok());
        assert!(attach(&["--crosvm", "--vhost-user", "vm1"]).is_ok());
        assert!(attach(&["--firecracker", "--interface", "fc-tap0"]).is_ok());
        let kind = |args: &[&str]| attach(args).unwrap_err().kind();
        assert_eq!(kind(&["--firecracker"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(kind(&["--crosvm"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(
            kind(&["--firecracker", "--vhost-user", "vm1"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            kind(&["--cloud-hypervisor", "--interface", "t"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            kind(&["--libvirt", "--qemu", "--interface", "t"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            kind(&["--interface", "t", "--vhost-user", "v"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(kind(&["--libvirt", "--dgram"]), ErrorKind::ArgumentConflict);
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
    fn net_create_takes_subnet_host_adapter_and_dhcp() {
        let create = |args: &[&str]| {
            let mut all = vec!["net", "create", "vmnet1"];
            all.extend_from_slice(args);
            match parse(&all).map(|c| c.command) {
                Ok(Command::Net(NetCommand::Create(c))) => Ok(c),
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(e.kind()),
            }
        };
        let c = create(&["--subnet", "192.168.101.0/24", "--host-adapter", "--dhcp"]).unwrap();
        assert_eq!(c.subnet, Some("192.168.101.0/24".parse().unwrap()));
        assert_eq!(c.host_adapter, Some(None));
        assert!(c.dhcp);

        let c = create(&["--subnet", "10.0.0.0/8", "--host-adapter=10.0.0.2"]).unwrap();
        assert_eq!(c.host_adapter, Some(Some("10.0.0.2".parse().unwrap())));
        assert!(!c.dhcp);

        let c = create(&[]).unwrap();
        assert_eq!((c.subnet, c.host_adapter, c.dhcp), (None, None, false));
        assert!(c.allow_users.is_empty() && c.allow_groups.is_empty());

        let c = create(&[
            "--allow-user",
            "alice",
            "--allow-user",
            "1002",
            "--allow-group",
            "lab",
        ])
        .unwrap();
        assert_eq!(
            c.allow_users,
            [Account::Name("alice".into()), Account::Id(1002)]
        );
        assert_eq!(c.allow_groups, [Account::Name("lab".into())]);

        // Without `=` the address is not the flag's: it is an extra argument.
        assert_eq!(
            create(&["--subnet", "10.0.0.0/8", "--host-adapter", "10.0.0.2"]).unwrap_err(),
            ErrorKind::UnknownArgument
        );
        assert_eq!(
            create(&["--dhcp"]).unwrap_err(),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            create(&["--host-adapter"]).unwrap_err(),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            create(&["--subnet", "192.168.1.0/33"]).unwrap_err(),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            create(&["--subnet", "192.168.1.0/24", "--host-adapter=1.2.3"]).unwrap_err(),
            ErrorKind::ValueValidation
        );
    }

    #[test]
    fn lease_ls_parses() {
        let cli = parse(&["lease", "ls", "vmnet1", "--json"]).unwrap();
        assert!(cli.json);
        assert!(matches!(
            cli.command,
            Command::Lease(LeaseCommand::Ls { ref net }) if net == "vmnet1"
        ));
        assert_eq!(
            parse(&["lease", "ls"]).unwrap_err().kind(),
            ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn dhcp_reserve_and_unreserve_parse() {
        let cli = parse(&[
            "dhcp",
            "reserve",
            "vmnet1",
            "52:54:00:aa:bb:cc",
            "192.168.101.10",
            "--hostname",
            "db",
        ])
        .unwrap();
        let Command::Dhcp(DhcpCommand::Reserve(r)) = cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!(r.net, "vmnet1");
        assert_eq!(r.mac, "52:54:00:aa:bb:cc".parse().unwrap());
        assert_eq!(r.ip, Ipv4Addr::new(192, 168, 101, 10));
        assert_eq!(r.hostname.as_deref(), Some("db"));

        let cli = parse(&["dhcp", "unreserve", "vmnet1", "52-54-00-AA-BB-CC"]).unwrap();
        let Command::Dhcp(DhcpCommand::Unreserve { net, mac, .. }) = cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!(
            (net.as_str(), mac),
            ("vmnet1", "52:54:00:aa:bb:cc".parse().unwrap())
        );

        let kind = |args: &[&str]| parse(args).unwrap_err().kind();
        assert_eq!(
            kind(&["dhcp", "reserve", "n", "52:54:00:aa:bb", "10.0.0.1"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            kind(&["dhcp", "reserve", "n", "52:54:00:aa:bb:cc", "10.0.0.256"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            kind(&["dhcp", "reserve", "n", "52:54:00:aa:bb:cc"]),
            ErrorKind::MissingRequiredArgument
        );
        assert!(matches!(
            parse(&["dhcp", "show", "n"]).unwrap().command,
            Command::Dhcp(DhcpCommand::Show { .. })
        ));
    }

    #[test]
    fn dhcp_set_takes_any_changes_but_needs_one() {
        let set = |args: &[&str]| {
            let mut all = vec!["dhcp", "set", "vmnet1"];
            all.extend_from_slice(args);
            match parse(&all).map(|c| c.command) {
                Ok(Command::Dhcp(DhcpCommand::Set(s))) => Ok(s),
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(e.kind()),
            }
        };
        let s = set(&[
            "--on",
            "--range",
            "192.168.101.100-192.168.101.150",
            "--lease",
            "600",
            "--dns",
            "192.168.101.1,9.9.9.9",
            "--domain",
            "lab.example",
        ])
        .unwrap();
        assert!(s.on && !s.off);
        assert_eq!(
            s.range,
            Some(IpRange([
                Ipv4Addr::new(192, 168, 101, 100),
                Ipv4Addr::new(192, 168, 101, 150)
            ]))
        );
        assert_eq!(s.lease, Some(600));
        assert_eq!(
            s.dns,
            Some(DnsList(vec![
                Ipv4Addr::new(192, 168, 101, 1),
                Ipv4Addr::new(9, 9, 9, 9)
            ]))
        );
        assert_eq!(s.domain.as_deref(), Some("lab.example"));

        let s = set(&["--off"]).unwrap();
        assert!(s.off && !s.on && s.range.is_none() && s.dns.is_none());
        assert_eq!(set(&["--dns", "none"]).unwrap().dns, Some(DnsList(vec![])));
        assert_eq!(set(&["--dns", ""]).unwrap().dns, Some(DnsList(vec![])));
        assert_eq!(set(&["--domain", ""]).unwrap().domain.as_deref(), Some(""));

        assert_eq!(set(&[]).unwrap_err(), ErrorKind::MissingRequiredArgument);
        assert_eq!(
            set(&["--on", "--off"]).unwrap_err(),
            ErrorKind::ArgumentConflict
        );
        for bad in [
            &["--range", "10.0.0.9-10.0.0.1"][..],
            &["--range", "10.0.0.9"],
            &["--range", "10.0.0.1-10.0.0"],
            &["--lease", "0"],
            &["--lease=-5"],
            &["--dns", "1.1.1.1,x"],
        ] {
            assert_eq!(set(bad).unwrap_err(), ErrorKind::ValueValidation, "{bad:?}");
        }
    }

    #[test]
    fn removals_take_if_exists_and_additions_may_exist() {
        let cli = parse(&["net", "rm", "lab", "--if-exists"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Net(NetCommand::Rm {
                if_exists: IfExists { if_exists: true },
                ..
            })
        ));
        let cli = parse(&["net", "create", "lab", "--may-exist"]).unwrap();
        let Command::Net(NetCommand::Create(c)) = cli.command else {
            panic!("{cli:?}")
        };
        assert!(c.may_exist.may_exist);
        for args in [
            &["port", "rm", "lab", "3", "--if-exists"][..],
            &["forward", "rm", "lab", "127.0.0.1:80", "--if-exists"],
            &["mirror", "rm", "lab", "ids", "--if-exists"],
            &["uplink", "rm", "lab", "--if-exists"],
            &[
                "dhcp",
                "unreserve",
                "lab",
                "52:54:00:00:00:01",
                "--if-exists",
            ],
            &["port", "add", "lab", "--tap", "t0", "--may-exist"],
            &[
                "forward",
                "add",
                "lab",
                "127.0.0.1:80",
                "10.0.0.2:80",
                "--may-exist",
            ],
            &[
                "dhcp",
                "reserve",
                "lab",
                "52:54:00:00:00:01",
                "10.0.0.9",
                "--may-exist",
            ],
        ] {
            assert!(parse(args).is_ok(), "{args:?}");
        }
        assert_eq!(
            parse(&["net", "create", "lab", "--if-exists"])
                .unwrap_err()
                .kind(),
            ErrorKind::UnknownArgument
        );
    }

    #[test]
    fn help_lists_the_exit_statuses() {
        let help = Cli::command().render_help().to_string();
        assert!(help.contains("Exit status:"), "{help}");
        assert!(help.contains("4  not found"), "{help}");
    }

    #[test]
    fn usage_errors_exit_with_2() {
        let err = parse(&["net", "frobnicate"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
