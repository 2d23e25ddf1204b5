//! The NAT device of a vnet (VMware's vmnet8), sans I/O: Ethernet frames, datagrams from
//! host sockets and the time in; frames for the vnet and socket actions out. No sockets,
//! no clock, no files, no entropy of its own: the shell draws [`NatSecrets`] from the OS
//! CSPRNG and hands them to [`NatDevice::new`], so tests with fixed secrets are
//! deterministic.
//!
//! # Theory of operation
//!
//! The device is a port on the vnet's switch with its own MAC and the gateway address
//! (by default the subnet's `.2`). Guests use it as their router and DNS server (the
//! vnet's DHCP service says so). It has no IP stack and no privileges: every guest
//! conversation with the outside becomes a *flow* carried by one ordinary host socket
//! that the I/O shell opens on the device's behalf, like slirp, passt or
//! gvisor-tap-vsock do.
//!
//! | guest sends, to the device's MAC | the device | comes back |
//! |---|---|---|
//! | ARP request for the gateway | answers with its MAC | |
//! | ICMP echo to the gateway | answers itself | echo reply |
//! | ICMP echo to an outside address | flow `(guest, ident, dst)` → [`Output::Open`] a ping socket, [`Output::Send`] the echo | replies from the socket, identifier restored |
//! | ICMP echo, but the host allows no ping socket | "unreachable" (communication prohibited) | |
//! | UDP to an outside address | flow `(guest, sport, dst, dport)` → one connected UDP socket | datagrams from the socket, as UDP from `dst:dport` |
//! | UDP to the gateway's port 53 | DNS: relayed to an upstream under a fresh random ID, from a socket (and so a random source port) of its own: [`Output::Open`] + [`Output::Send`] | the answer, ID restored, from the gateway |
//! | UDP to the gateway's port 53, about a DHCP client's name (`host`, `host.<domain>`) | answers itself from the names the shell gave it ([`NatDevice::set_local_names`], the `names` module) | |
//! | TCP to the gateway's port 53 | DNS over TCP: a TCP flow to the first upstream | (truncated UDP answers send guests here) |
//! | UDP to another port of the gateway | the host's `127.0.0.1` if `host_loopback`, else port unreachable | |
//! | TCP SYN to an outside address | flow → non-blocking `connect()`; passt-style mirroring, see the `tcp` module | SYN-ACK once connected; RST if refused |
//! | (a datagram from host peer `P` on a UDP port forward to guest `G`, [`NatDevice::udp_forwarded`]) | flow `(G, P as the guest sees it)`, no socket of its own; ARP first if `G`'s MAC is unknown (that datagram is dropped) | the guest's replies, which the shell sends from the forward's socket to `P` |
//! | another IP protocol | protocol unreachable | |
//! | an IPv4 fragment, or an IPv6 packet with a Fragment header | kept until its datagram is whole (bounded, see the `fragments` module), which then goes on as above | |
//! | a new flow to link-local (`169.254.0.0/16`, cloud metadata), `0.0.0.0/8`, loopback, or the host's own addresses ([`NatDevice::set_host_addresses`]; allowed if `host_loopback`) | refused ([`refusal`]), counted as `refused_destinations`; port forwards' peers and DNS upstreams are not asked | unreachable (admin prohibited), or RST |
//! | anything to multicast or `255.255.255.255` | dropped, counted as `refused_destinations` (no ICMP error about them) | |
//! | anything to the subnet | ignored (counted) | |
//! | IPv6 (with [`NatConfig::gateway6`], the `::2` of the vnet's /64): TCP, UDP, ICMPv6 echo to an address outside the /64 | the same flows as IPv4's, sockets of the other family; refused as above: `::1`, `::`, `fe80::/10`, IPv4-mapped, the host's own, multicast | ICMPv6 errors (unreachable: no route, port, admin prohibited; parameter problem for another next header); too-large answers in IPv6 fragments |
//! | IPv6 UDP or TCP to `::2` | the host's `::1` if `host_loopback`, else port unreachable (RST); DNS (port 53) is answered "port unreachable" until the relay speaks IPv6 | |
//! | IPv6 neighbour solicitations and echo for `::2` | not the device's: the vnet's router (`vnet-ra`) sees every frame first and answers them | |
//! | a port forward to an IPv6 guest whose MAC is unknown | a neighbour solicitation from `::2` (the guest's answer, like any of its packets, teaches the device its MAC) | |
//!
//! Flow states are simply *open* (the shell has, or is opening, the socket) and *gone*.
//! A flow closes ([`Output::Close`]) after [`NatConfig::udp_timeout`] (UDP) or
//! [`NatConfig::icmp_timeout`] (echo) without traffic either way; at most
//! [`NatConfig::max_flows`] exist (and [`dns::MAX_PENDING`] DNS queries' sockets), so a
//! guest cannot exhaust the daemon's fds. Socket
//! errors the host reports (port or host unreachable) reach the guest as ICMP.
//!
//! DNS queries in flight wait [`NatConfig::dns_timeout`] per upstream, are retried on
//! the next upstream (new socket, new ID), and fail with SERVFAIL when every upstream
//! had its turn.
//!
//! ## Randomness
//!
//! What an off-path attacker must not guess comes from [`NatSecrets`] (the `secrets`
//! module has the details): DNS query IDs are SipHash-2-4 under a secret key over a
//! counter; each query attempt's socket is bound by the shell to port 0, so the
//! kernel's CSPRNG picks its source port; TCP initial sequence numbers follow RFC 6528
//! (a 4 µs clock plus SipHash-2-4 of the four-tuple under another secret key).
//!
//! ## Driving it
//!
//! The shell gives every frame the switch delivers to [`NatDevice::receive`], datagrams
//! from flow sockets to [`NatDevice::socket_data`] (errors to
//! [`NatDevice::socket_error`]; DNS queries' sockets are flows to the shell too), and calls [`NatDevice::poll`] at [`NatDevice::poll_at`]. It carries out the
//! [`Output`]s in order: frames go into the switch, `Open`/`Send`/`Close` act on the flow
//! sockets (a failed open is reported with [`NatDevice::open_failed`]).
//!
//! ICMP, UDP and DNS payloads are copied into owned buffers (small, rare). TCP's bulk
//! path copies nothing in user space: guest data is written to the socket from the
//! received frame itself ([`Output::TcpWrite`] names a range of it), and socket data
//! is peeked by the shell straight into the frame that [`NatDevice::tcp_data`] then
//! completes in place, up to 64 KiB with offload metadata (TSO) for the switch.
//!
//! ## Next steps (design notes)
//!
//! - **TCP**: window scaling, `SO_PEEK_OFF`, GSO frames both ways and fast retransmit
//!   are in; still open: mirroring the host socket's state to the guest (`TCP_INFO`:
//!   ACK only what the peer has, `tcpi_snd_wnd` as the window) instead of ACKing what
//!   the socket took and a fixed [`TCP_WINDOW`]; SACK; `TCP_MAXSEG` from the guest's MSS;
//!   `splice` for host-local peers.
//! - **DNS**: TCP to the gateway's port 53 goes to the first upstream only — try the
//!   others when it is refused; local names are answered over UDP only (their answers
//!   are small, so guests never retry them over TCP).
#![forbid(unsafe_code)]

mod device;
pub mod dns;
mod flow_id;
pub mod fragments;
pub mod frames;
pub mod names;
pub mod secrets;

pub use device::{
    refusal, NatConfig, NatCounters, NatDevice, Output, Proto, ReadWindow, Refusal, SocketError,
    TCP_WINDOW,
};
pub use flow_id::FlowId;
pub use names::LocalNames;
pub use secrets::NatSecrets;
pub use vnet_core::wire::ethernet::MacAddr;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests6;
