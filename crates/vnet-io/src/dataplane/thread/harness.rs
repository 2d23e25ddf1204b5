//! An in-process data-plane harness: one [`Thread`] driven turn by turn from a test,
//! on a virtual clock, with scripted ports. No root; the only fds are the thread's epoll
//! (never waited on) and the vnets' own sockets in a temporary directory.
//!
//! A [`Wire`] is both sides of a scripted port: the test puts frames on it for the
//! vnet to read and finds the frames the vnet delivered, in the batches it offered
//! them. Its port has no fd, so nothing polls: [`Harness::turn`] stands in for epoll,
//! listing each port the test gave input since the last turn (edge-triggered, as epoll
//! would: a port with input left over is the thread's own business), and for the poll's
//! retry timeout once [`RETRY`] has passed on the clock.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use vnet_core::switch::PortId;
use vnet_model::{NetworkInfo, NetworkSpec, PortInfo, PortKind};

use super::{Thread, VnetKey, RETRY};
use crate::admission::{AllowList, Client};
use crate::backend::{Backend, Received, Sent, TX_BATCH};
use crate::dataplane::directory::Directory;
use crate::dataplane::limits::{Limits, Refusals};
use crate::dataplane::{Command, ControlError, Reply};
use crate::frame::FrameBuf;

/// Both sides of a scripted port.
#[derive(Default)]
pub struct Wire {
    /// Frames the client sends, read by the vnet one per `recv`.
    pub inbound: VecDeque<Vec<u8>>,
    /// Frames the vnet delivered, in order.
    pub delivered: Vec<Vec<u8>>,
    /// How many frames each `send_batch` offered.
    pub batches: Vec<usize>,
    /// How many more frames the client takes before it is full; `None`: no limit.
    pub room: Option<usize>,
}

/// A port whose client is a [`Wire`].
struct ScriptedPort(Rc<RefCell<Wire>>);

impl Backend for ScriptedPort {
    fn kind(&self) -> PortKind {
        PortKind::Stream
    }
    fn description(&self) -> String {
        "scripted".into()
    }
    fn source(&mut self) -> Option<&mut dyn mio::event::Source> {
        None
    }
    fn recv(&mut self, buf: &mut FrameBuf) -> Received {
        match self.0.borrow_mut().inbound.pop_front() {
            Some(frame) => {
                buf.fill(&frame);
                Received::Frame
            }
            None => Received::WouldBlock,
        }
    }
    fn send_batch(&mut self, frames: &[FrameBuf]) -> (usize, Sent) {
        let mut wire = self.0.borrow_mut();
        wire.batches.push(frames.len());
        let take = wire.room.map_or(frames.len(), |r| r.min(frames.len()));
        if let Some(room) = wire.room.as_mut() {
            *room -= take;
        }
        wire.delivered
            .extend(frames[..take].iter().map(|f| f.frame().to_vec()));
        if take < frames.len() {
            (take, Sent::WouldBlock)
        } else {
            (take, Sent::Done)
        }
    }
}

/// A scripted port of a vnet in the harness.
#[derive(Clone)]
pub struct Port {
    pub vnet: VnetKey,
    pub id: PortId,
    pub wire: Rc<RefCell<Wire>>,
}

pub struct Harness {
    thread: Thread,
    commands: mpsc::Sender<Command>,
    directory: Arc<Mutex<Directory>>,
    refusals: Arc<Refusals>,
    /// The virtual clock: every turn runs at this time.
    pub now: Instant,
    last_retry: Instant,
    /// Ports the test gave input since the last turn (their "readable" events).
    readable: Vec<(VnetKey, PortId)>,
    _dirs: tempfile::TempDir,
}

impl Harness {
    pub fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    /// A harness whose thread keeps `limits`.
    pub fn with_limits(limits: Limits) -> Self {
        let dirs = tempfile::tempdir().expect("temporary directory");
        let (commands, rx) = mpsc::channel();
        let refusals = Arc::new(Refusals::default());
        let directory = Arc::new(Mutex::new(Directory::new(
            1,
            limits.vnets,
            Arc::clone(&refusals),
        )));
        let poll = mio::Poll::new().expect("epoll");
        let now = Instant::now();
        let thread = Thread::new(
            poll,
            0,
            dirs.path().join("run"),
            dirs.path().join("state"),
            rx,
            Arc::clone(&directory),
        )
        .with_limits(limits, Arc::clone(&refusals));
        Harness {
            thread,
            commands,
            directory,
            refusals,
            now,
            last_retry: now,
            readable: Vec::new(),
            _dirs: dirs,
        }
    }

    /// One turn of the loop at the clock's time, after the events the test caused.
    pub fn turn(&mut self) {
        self.turn_woken(false);
    }

    fn turn_woken(&mut self, woken: bool) {
        for (key, id) in std::mem::take(&mut self.readable) {
            self.thread.schedule_rx(key, id);
        }
        if self.now.duration_since(self.last_retry) >= RETRY {
            self.last_retry = self.now;
            self.thread.retry_blocked();
        }
        // As the loop does when its poll woke for frames ports hold.
        self.thread.release_held(self.now);
        assert!(!self.thread.turn(self.now, woken), "the thread shut down");
    }

    /// Moves the clock on (no turn).
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// Sends a command as the control plane does and takes the answer the next turn
    /// gives it.
    pub fn command<T>(
        &mut self,
        make: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<T, ControlError> {
        let (tx, mut rx) = oneshot::channel();
        self.commands.send(make(tx)).expect("the thread listens");
        self.turn_woken(true);
        rx.try_recv().expect("answered within the turn")
    }

    /// Creates a vnet the way [`crate::dataplane::Handle::create_network`] does: checked,
    /// placed by the directory (which settles its name), then made by the thread.
    pub fn create(&mut self, spec: NetworkSpec) -> Result<NetworkInfo, ControlError> {
        spec.validate()?;
        let allow = AllowList::resolve(&spec.allow_users, &spec.allow_groups)?;
        crate::dataplane::directory::lock(&self.directory).place(&spec)?;
        self.command(|r| Command::CreateNetwork(Box::new((spec, allow)), r))
    }

    /// A vnet with default settings, for tests about its ports.
    pub fn vnet(&mut self, name: &str) -> VnetKey {
        self.create(NetworkSpec::named(name)).expect("created");
        self.thread.lookup(name).expect("made")
    }

    /// Attaches a scripted port to vnet `key`.
    pub fn port(&mut self, key: VnetKey) -> Port {
        self.try_port(key).expect("attached")
    }

    /// Attaches a scripted port to vnet `key` as a connecting client would get one
    /// (as the test's own uid).
    pub fn try_port(&mut self, key: VnetKey) -> Result<Port, ControlError> {
        let me = Client {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            pid: Some(std::process::id()),
            groups: Some(Vec::new()),
        };
        self.try_port_as(key, &me)
    }

    /// Attaches a scripted port to vnet `key` for `client`.
    pub fn try_port_as(&mut self, key: VnetKey, client: &Client) -> Result<Port, ControlError> {
        let wire = Rc::new(RefCell::new(Wire::default()));
        let id =
            self.thread
                .add_client_port(key, Box::new(ScriptedPort(Rc::clone(&wire))), client)?;
        Ok(Port {
            vnet: key,
            id,
            wire,
        })
    }

    /// How many times `limit` refused something of vnet `net` (`None`: daemon-wide).
    pub fn refusals(&self, net: Option<&str>, limit: &'static str) -> u64 {
        self.refusals.count(net, limit)
    }

    /// The client of `port` sends `frames`: they wait on its wire, and it is readable.
    pub fn send(&mut self, port: &Port, frames: impl IntoIterator<Item = Vec<u8>>) {
        port.wire.borrow_mut().inbound.extend(frames);
        if !self.readable.contains(&(port.vnet, port.id)) {
            self.readable.push((port.vnet, port.id));
        }
    }

    /// The port as the control API reports it (counters, queue).
    pub fn info(&self, port: &Port) -> PortInfo {
        self.thread.vnets[port.vnet]
            .port_info(self.now, port.id)
            .expect("the port exists")
    }

    pub fn macs(&self, key: VnetKey) -> Vec<vnet_model::MacEntry> {
        self.thread.vnets[key].macs(self.now)
    }

    /// Gives `port` its own rate limits and impairment, live, as `PATCH
    /// .../policy` does.
    pub fn shape(
        &mut self,
        port: &Port,
        rate: Option<&vnet_model::policy::rate::RateSpec>,
        impair: Option<&vnet_model::policy::impair::ImpairSpec>,
    ) {
        let name = self.thread.vnets[port.vnet].name().to_string();
        let patch = vnet_model::PolicyPatch {
            rate: Some(rate.cloned()),
            impair: Some(impair.cloned()),
            ..Default::default()
        };
        self.command(|r| Command::SetPortPolicy(name, port.id.0, patch, r))
            .expect("policy set");
    }

    /// When the thread must come back for frames ports hold.
    pub fn held_deadline(&self) -> Option<Instant> {
        self.thread.held_deadline()
    }

    /// The vnet's name in the thread (to check it is gone).
    pub fn lookup(&self, name: &str) -> Result<VnetKey, ControlError> {
        self.thread.lookup(name)
    }
}

/// The batch size the data plane offers (for assertions).
pub const BATCH: usize = TX_BATCH;

/// A 60-byte IPv4 frame from `src` to `dst`, its last byte `n` (to tell frames apart).
pub fn frame(dst: [u8; 6], src: [u8; 6], n: u8) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.resize(59, 0);
    f.push(n);
    f
}

/// A unicast MAC ending in `n`.
pub fn mac(n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, n]
}

pub const BROADCAST: [u8; 6] = [0xff; 6];
