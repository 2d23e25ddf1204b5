//! The DHCPv4 service of a vnet, sans I/O: Ethernet frames and the time in, frames to
//! send and lease state out. No sockets, no clock, no files.
//!
//! # Theory of operation
//!
//! The service is a port on the vnet's switch with its own MAC and IPv4 address (by
//! default the subnet's `.254`). It sees exactly what a VM on that port would see —
//! broadcasts and frames to its MAC — and answers with whole Ethernet frames, so it needs
//! nothing from the host's network stack and can be observed and captured like any VM.
//!
//! ## Driving it
//!
//! The I/O shell owns one [`DhcpServer`] per vnet and:
//!
//! 1. gives it every frame the switch delivers to its port: [`DhcpServer::receive`]`(now, frame)`,
//!    and sends the returned frames into the switch from that port, in order;
//! 2. arms a timer for [`DhcpServer::poll_at`] (re-read after every call) and, when it
//!    fires, calls [`DhcpServer::poll`]`(now)` and sends what it returns;
//! 3. after any call, if [`DhcpServer::take_leases_changed`] is true, writes
//!    [`LeaseDb::to_json`] to the state directory atomically (temporary file + rename), and
//!    on start loads it with [`LeaseDb::from_json`] (a missing file is [`LeaseDb::new`]);
//! 4. applies control-API changes (pool, reservations, on/off) with
//!    [`DhcpServer::reconfigure`].
//!
//! ```
//! use std::net::Ipv4Addr;
//! use vnet_dhcp::{DhcpConfig, DhcpServer, LeaseDb, MacAddr, Timestamp};
//!
//! let mac = MacAddr([0x02, 0x76, 0x64, 0, 0, 1]);
//! let config = DhcpConfig::for_subnet(mac, Ipv4Addr::new(192, 168, 56, 0), 24)?;
//! let mut server = DhcpServer::new(config, LeaseDb::new())?;
//! # let frame_from_switch = [0u8; 60];
//! let now = Timestamp::now();
//! for reply in server.receive(now, &frame_from_switch) {
//!     // send `reply` into the switch from the service's port
//! #   let _ = reply;
//! }
//! if let Some(at) = server.poll_at() {
//!     // arm a timer for `at`; when it fires: send every frame of `server.poll(Timestamp::now())`
//! #   let _ = at;
//! }
//! if server.take_leases_changed() {
//!     let json = server.lease_db().to_json(); // write to a temp file, fsync, rename
//! #   let _ = json;
//! }
//! # Ok::<(), vnet_dhcp::ConfigError>(())
//! ```
//!
//! `now` is wall-clock time ([`Timestamp`], milliseconds since the Unix epoch) because lease
//! expiry must mean the same thing after a restart. A clock step only moves expiries.
//!
//! ## Accepting a frame
//!
//! Untagged Ethernet to broadcast or `server_mac`; ARP, or IPv4 without options and
//! unfragmented, both checksums valid, UDP from port 68 to port 67, to the server's address
//! or broadcast; a BOOTREQUEST from an Ethernet client (htype 1, hlen 6) with the magic
//! cookie, a well-formed option area ending in End (option overload and RFC 3396
//! concatenation understood) and a client message type. Anything broken is dropped and
//! counted in [`DhcpCounters::malformed`]; well-formed traffic that is not for us (other
//! protocols, other servers' replies, relayed messages, plain BOOTP) in
//! [`DhcpCounters::ignored`]. Hostile bytes never reach `dhcproto`'s decoder: see
//! [`wire::bootp`].
//!
//! ## State
//!
//! | what | where | persisted | lifetime |
//! |---|---|---|---|
//! | lease (bound / expired / released) | [`LeaseDb`], one per address and per client | yes | bound until `expires`, then kept as expired or released so the client gets the same address back |
//! | quarantine (declined / conflict) | [`LeaseDb`] | yes | `quarantine_time` |
//! | offer | server | no | `offer_timeout`; the address is set aside for that client |
//! | probe | server | no | `probe_timeout`; a DISCOVER waits for its candidate's ARP probe |
//!
//! Clients are keyed by their client identifier (option 61), or by `01` + MAC when they send
//! none. Reservations are keyed by MAC.
//!
//! ## Events
//!
//! | event | condition | action |
//! |---|---|---|
//! | DISCOVER | a probe is pending for the client | remember the new xid, answer when the probe ends |
//! | DISCOVER | an address the client already holds (reservation aside: its offer, its lease — even expired — or the one it asks for) | OFFER at once |
//! | DISCOVER | a fresh address (never-used first, else the longest-ended lease) | ARP probe it, start a probe |
//! | DISCOVER | nothing available | nothing; `pool_exhausted` |
//! | probe deadline (poll) | no ARP answer | OFFER, set the offer aside |
//! | ARP from another MAC claiming or probing a probed address | | quarantine it (conflict), probe the next candidate (at most 4 per DISCOVER) |
//! | ARP request for `server_ip` | | ARP reply (clients renew by unicast) |
//! | REQUEST with another server's id | | drop our offer, say nothing |
//! | REQUEST with our id (SELECTING), or with `ciaddr` (RENEWING, REBINDING), or with option 50 only (INIT-REBOOT) | address may be the client's | ACK, lease bound or extended |
//! | the same | address outside the subnet, outside the pool, reserved for another MAC, held by another client, quarantined, or not the client's reservation | NAK (broadcast), forget the client's lease on it |
//! | DECLINE | the client was given the address | quarantine it (declined), end the lease |
//! | RELEASE | the client's bound lease on `ciaddr` | lease released (kept for re-offer) |
//! | INFORM | `ciaddr` (or IP source) in the subnet | ACK with configuration, no lease |
//! | lease expiry (poll) | | lease expired (kept), `leases_expired` |
//!
//! We are the only DHCP server of the vnet, hence authoritative: an INIT-REBOOT for an
//! address we have no record of is ACKed if the client may have it, NAKed otherwise.
//!
//! ## Replies
//!
//! RFC 2131 §4.1 addressing for clients on the server's own link: NAK broadcast; unicast to
//! `ciaddr` when the client has an address; broadcast when the client set the broadcast
//! flag; otherwise unicast to `yiaddr` at `chaddr`. Options: message type, server id,
//! lease time with T1 = ½ and T2 = ⅞ of it (not for INFORM), subnet mask, broadcast address,
//! and when configured router, DNS servers, domain name, interface MTU; the reservation's
//! host name when the client asks for option 12; the client identifier echoed (RFC 6842).
//! Message type and server id come first, the rest in the order of the client's parameter
//! request list. Every frame has valid IPv4 and UDP checksums and at least 300 bytes of
//! BOOTP payload; the same inputs always give the same bytes.
//!
//! ## Timers
//!
//! Probe deadlines and lease expiries, both reported by [`DhcpServer::poll_at`]. Offers and
//! quarantines end lazily: they are checked against `now` where they matter and swept at
//! the next poll.
//!
//! ## Bounds
//!
//! Memory is bounded by the pool: at most one lease per address, one offer per client
//! identifier that got one within `offer_timeout`, and at most 64 pending probes.
//! Offers are indexed by address too, so a DISCOVER's walk through the pool checks each
//! address against that address's offers only: O(pool · log offers), not O(pool · offers).

#![forbid(unsafe_code)]

pub mod config;
pub mod lease;
mod message;
pub mod server;
pub mod time;
pub mod wire;

pub use config::{ConfigError, Dhcp6Config, DhcpConfig, Reservation, Reservation6, Subnet};
pub use lease::{
    ClientId, Lease, Lease6, LeaseDb, LeaseDbError, LeaseState, Quarantine, Quarantine6,
    QuarantineReason,
};
pub use server::{Dhcp6Counters, DhcpCounters, DhcpServer};
pub use time::Timestamp;
pub use vnet_core::wire::ethernet::MacAddr;
