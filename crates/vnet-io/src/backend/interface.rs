//! A host interface that another program created and holds, joined as one port (`vnet
//! port add NET --interface IF`): the TAP a hypervisor opened itself (Firecracker,
//! cloud-hypervisor, libvirt's `type='ethernet'`), one end of a veth pair. Not a
//! macvtap: what its VM sends passes the macvtap interface on the way out to the lower
//! NIC (a frame a port never takes in) and what it receives goes to the VM straight
//! from the lower NIC; bridge the lower NIC instead (an uplink).
//!
//! The port owns an AF_PACKET socket bound to the interface, promiscuous, with stripped
//! 802.1Q tags put back and offload headers both ways, as an uplink's
//! (`backend/packet.rs`): what the interface receives (what the VM sent into its TAP)
//! enters the vnet, and what the vnet sends the port leaves through the interface (to
//! the VM). Unlike an uplink it is an ordinary port: VLAN access or trunk, MAC learning,
//! counters, removable by id, as many per vnet as there are VMs.
//!
//! Following the interface: the port names an interface, it does not hold one. Libvirt
//! deletes a domain's TAP when the domain stops and makes a new one (a new ifindex) when
//! it starts; a Firecracker TAP may not exist yet when vnetd starts. The socket says at
//! once when its interface goes down or is deleted (`ENETDOWN` on the next receive, or a
//! failed send); from then on the port looks the name up on a timer (50 ms, doubling up
//! to 1 s) until the interface is up again, binding the same socket anew when the name
//! now has another index. While it is down or missing the port stays listed, in state
//! `down`, and frames for it are dropped as `link_down`. Joining an interface (at
//! first, or anew) brings it up, as a hypervisor's network script would. No netlink
//! watch: the loss is seen at once without one, the return at most a second late, and
//! a link-event socket would be one more fd and parser on the data plane for that
//! second.

use std::io;
use std::time::{Duration, Instant};

use tracing::{info, warn};
use vnet_core::switch::DropCause;
use vnet_model::{LinkState, PortKind};

use super::packet::{self, Read, Sender, FRONT};
use super::{fd_source, Backend, Identity, Received, Sent};
use crate::error::Chain;
use crate::frame::FrameBuf;
use crate::sys::netif;
use crate::sys::packet::{interface_index, PacketError, PacketSocket};

/// The first wait before looking at a lost interface again; it doubles up to
/// [`WATCH_MAX`].
const WATCH_FIRST: Duration = Duration::from_millis(50);
/// The longest wait between two looks at a lost interface: how late a return is seen.
const WATCH_MAX: Duration = Duration::from_secs(1);

/// What the port knows of its interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Up,
    /// It exists and the socket is bound to it, but it is not up.
    Down,
    /// No interface of that name (the socket is bound to none).
    Gone,
}

pub struct InterfacePort {
    sock: PacketSocket,
    sender: Sender,
    interface: String,
    link: Link,
    /// While the link is not up: when to look at the interface again, and the wait
    /// after that.
    watch: Option<(Instant, Duration)>,
}

impl InterfacePort {
    /// A port on the interface named `interface`, bound to it if it exists (needs
    /// `CAP_NET_RAW`); if it does not, the port waits for it.
    pub fn open(interface: &str) -> Result<Self, PacketError> {
        let mut port = InterfacePort {
            sock: PacketSocket::unbound()?,
            sender: Sender::new(None),
            interface: interface.to_string(),
            link: Link::Gone,
            watch: None,
        };
        port.look(Instant::now())?;
        Ok(port)
    }

    /// Looks at the interface by name: binds the socket to it if it is new, then
    /// notes whether it is up, and when to look again if it is not.
    fn look(&mut self, now: Instant) -> Result<(), PacketError> {
        let link = match interface_index(&self.interface) {
            None => Link::Gone,
            Some(index) => {
                if self.link == Link::Gone || index != self.sock.ifindex() {
                    match self.sock.bind(&self.interface) {
                        // Deleted again since the lookup.
                        Err(PacketError::NoInterface(_)) => {
                            self.set_link(Link::Gone, now);
                            return Ok(());
                        }
                        other => other?,
                    }
                    self.join_up();
                }
                match netif::link_flags(&self.interface) {
                    Ok(flags) if flags.up => Link::Up,
                    _ => Link::Down,
                }
            }
        };
        self.set_link(link, now);
        Ok(())
    }

    /// Brings a newly joined interface up, as a hypervisor's network script would (a
    /// TAP that Firecracker or QEMU with `script=no` opens stays down otherwise). Only
    /// when joining: an interface someone sets down later stays down.
    fn join_up(&self) {
        if let Err(e) = netif::bring_up(&self.interface) {
            warn!(
                interface = self.interface,
                "interface port: leaving it down: {}",
                Chain(&e)
            );
        }
    }

    fn set_link(&mut self, link: Link, now: Instant) {
        if link != self.link {
            match link {
                Link::Up => info!(interface = self.interface, "interface port: link up"),
                Link::Down => warn!(
                    interface = self.interface,
                    "interface port: link down; dropping frames for it until it is up"
                ),
                Link::Gone => warn!(
                    interface = self.interface,
                    "interface port: no such interface; waiting for it"
                ),
            }
        }
        self.link = link;
        self.watch = next_look(self.watch, link == Link::Up, now);
    }

    /// The socket failed: the interface went down or away. Looks at once (it may be
    /// back already, as a new interface of the same name).
    fn lost(&mut self, err: &io::Error) {
        tracing::debug!(interface = self.interface, "interface port: {err}");
        if let Err(e) = self.look(Instant::now()) {
            warn!(
                interface = self.interface,
                "interface port: cannot bind to it: {}",
                Chain(&e)
            );
        }
    }
}

impl Backend for InterfacePort {
    fn kind(&self) -> PortKind {
        PortKind::Interface
    }

    fn description(&self) -> String {
        format!("interface {}", self.interface)
    }

    fn identity(&self) -> Identity<'_> {
        Identity {
            ifname: Some(&self.interface),
            ..Identity::default()
        }
    }

    /// GSO super-frames and partial checksums pass as they are: the kernel finishes
    /// them for the interface (or hands them to a TAP's reader that took offloads).
    fn offloads(&self) -> bool {
        true
    }

    fn link(&self) -> Option<LinkState> {
        Some(match self.link {
            Link::Up => LinkState::Up,
            Link::Down | Link::Gone => LinkState::Down,
        })
    }

    fn source(&mut self) -> Option<&mut dyn mio::event::Source> {
        Some(self)
    }

    fn recv(&mut self, buf: &mut FrameBuf) -> Received {
        loop {
            match packet::read(&self.sock, buf.recv_space_front(FRONT)) {
                Ok(Read::Frame {
                    start,
                    len,
                    offload,
                }) => {
                    buf.set_front_range(FRONT, start, len);
                    buf.offload = offload;
                    return Received::Frame;
                }
                // The host's own frames out of the interface, never taken in.
                Ok(Read::Outgoing) => continue,
                Ok(Read::Dropped(cause)) => {
                    let why = format!("unusable frame from interface {}", self.interface);
                    return Received::Dropped(cause, why);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Received::WouldBlock,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.lost(&e);
                    return Received::WouldBlock;
                }
            }
        }
    }

    fn send_batch(&mut self, frames: &[FrameBuf]) -> (usize, Sent) {
        if frames.is_empty() {
            return (0, Sent::Done);
        }
        if self.link != Link::Up {
            return (0, Sent::Dropped(DropCause::LinkDown));
        }
        match self.sender.send(&self.sock, frames) {
            (sent, Ok(outcome)) => (sent, outcome),
            (sent, Err(e)) => {
                self.lost(&e);
                (sent, Sent::Dropped(DropCause::LinkDown))
            }
        }
    }

    fn deadline(&self) -> Option<Instant> {
        self.watch.map(|(at, _)| at)
    }

    fn tick(&mut self, now: Instant) {
        if let Err(e) = self.look(now) {
            warn!(
                interface = self.interface,
                "interface port: cannot bind to it: {}",
                Chain(&e)
            );
            self.set_link(Link::Gone, now);
        }
    }
}

/// When to look at the interface next, after a look at `now` found it `up` or not:
/// never while it is up; [`WATCH_FIRST`] after it is first found lost, then twice the
/// last wait, up to [`WATCH_MAX`].
fn next_look(
    last: Option<(Instant, Duration)>,
    up: bool,
    now: Instant,
) -> Option<(Instant, Duration)> {
    let wait = match (up, last) {
        (true, _) => return None,
        (false, None) => WATCH_FIRST,
        (false, Some((_, wait))) => (wait * 2).min(WATCH_MAX),
    };
    Some((now + wait, wait))
}

fd_source!(InterfacePort, |port| &port.sock);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_interface_is_looked_at_ever_less_often_up_to_a_second() {
        let now = Instant::now();
        let mut watch = None;
        let mut waits = Vec::new();
        for _ in 0..7 {
            watch = next_look(watch, false, now);
            let (at, wait) = watch.expect("watching");
            assert_eq!(at, now + wait);
            waits.push(wait.as_millis());
        }
        assert_eq!(waits, [50, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(next_look(watch, true, now), None, "up: no more looks");
        let again = next_look(None, false, now).map(|(_, w)| w);
        assert_eq!(again, Some(WATCH_FIRST), "lost again: quick first look");
    }
}
