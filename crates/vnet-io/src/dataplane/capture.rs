//! Live captures: taps on a vnet's frame path that copy frames, cut at a snap length,
//! into a bounded channel per capture for the control plane to write as pcapng.
//!
//! The frame path pays for a capture only while one runs: a vnet with no taps checks
//! one empty `Vec`. A tap never blocks the vnet: when its channel is full (a slow
//! reader) the frame is dropped from the capture and counted per port in [`Drops`],
//! which the writer reports in pcapng statistics. A tap whose reader went away is
//! removed at its next frame.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::mpsc;
use vnet_core::pcapng::Direction;
use vnet_core::switch::PortId;
use vnet_model::CaptureCounters;

/// Frames one capture holds for its reader at most; past that they are dropped.
pub const CAPTURE_BUFFER: usize = 1024;

/// What to capture.
#[derive(Debug, Clone)]
pub struct CaptureSpec {
    /// The ports to watch; empty: every port, those added later included.
    pub ports: Vec<u32>,
    /// Bytes kept of each frame.
    pub snaplen: u32,
}

/// A running capture, for its writer: the frames, the ports it watches now, its drops.
pub struct Capture {
    pub frames: mpsc::Receiver<Record>,
    /// The watched ports that exist as it starts: id and description.
    pub ports: Vec<(u32, String)>,
    pub drops: Arc<Drops>,
}

/// One captured frame.
pub struct Record {
    pub port: u32,
    pub direction: Direction,
    /// Nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// The frame's length; `data` may be shorter (the snap length).
    pub orig_len: u32,
    pub data: Vec<u8>,
}

/// Frames a capture dropped because its reader was behind, per port.
#[derive(Default)]
pub struct Drops(Mutex<HashMap<u32, u64>>);

impl Drops {
    fn add(&self, port: u32) {
        *self.lock().entry(port).or_default() += 1;
    }

    /// The drops so far, per port.
    pub fn snapshot(&self) -> HashMap<u32, u64> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, u64>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The frame path's end of one capture.
pub(super) struct Tap {
    ports: Vec<PortId>,
    snaplen: usize,
    frames: mpsc::Sender<Record>,
    drops: Arc<Drops>,
}

impl Tap {
    /// A tap for `spec` (its ports already checked) and the capture its writer reads.
    pub fn new(spec: &CaptureSpec, ports: Vec<(u32, String)>) -> (Tap, Capture) {
        let (tx, rx) = mpsc::channel(CAPTURE_BUFFER);
        let drops = Arc::new(Drops::default());
        let tap = Tap {
            ports: spec.ports.iter().map(|&p| PortId(p)).collect(),
            snaplen: spec.snaplen as usize,
            frames: tx,
            drops: drops.clone(),
        };
        let capture = Capture {
            frames: rx,
            ports,
            drops,
        };
        (tap, capture)
    }

    /// Whether its reader is still there.
    pub fn is_running(&self) -> bool {
        !self.frames.is_closed()
    }

    /// Offers a frame, counting it in `totals` if taken or dropped; `false` when the
    /// capture has ended (its reader left).
    fn offer(
        &self,
        totals: &mut CaptureCounters,
        port: PortId,
        direction: Direction,
        ts_ns: u64,
        frame: &[u8],
    ) -> bool {
        if !self.ports.is_empty() && !self.ports.contains(&port) {
            return self.is_running();
        }
        let record = Record {
            port: port.0,
            direction,
            ts_ns,
            orig_len: frame.len() as u32,
            data: frame[..frame.len().min(self.snaplen)].to_vec(),
        };
        match self.frames.try_send(record) {
            Ok(()) => {
                totals.frames += 1;
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.drops.add(port.0);
                totals.dropped += 1;
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// Offers a frame crossing `port` to every tap, removing those whose capture ended;
/// `totals` counts what the captures took and dropped (`running` is left to the
/// report). Call it only when `taps` is not empty: that check is the frame path's
/// whole cost while nothing is captured.
pub(super) fn offer(
    taps: &mut Vec<Tap>,
    totals: &mut CaptureCounters,
    port: PortId,
    direction: Direction,
    frame: &[u8],
) {
    let ts_ns = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    taps.retain(|t| t.offer(totals, port, direction, ts_ns, frame));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ports: Vec<u32>, snaplen: u32) -> CaptureSpec {
        CaptureSpec { ports, snaplen }
    }

    #[test]
    fn frames_are_cut_at_the_snap_length_and_keep_their_length_and_direction() {
        let (tap, mut capture) = Tap::new(&spec(vec![], 4), vec![]);
        let mut taps = vec![tap];
        offer(
            &mut taps,
            &mut CaptureCounters::default(),
            PortId(3),
            Direction::Outbound,
            &[1, 2, 3, 4, 5, 6],
        );
        let r = capture.frames.try_recv().expect("captured");
        assert_eq!(
            (r.port, r.direction, r.orig_len),
            (3, Direction::Outbound, 6)
        );
        assert_eq!(r.data, [1, 2, 3, 4]);
        assert!(r.ts_ns > 0);
    }

    #[test]
    fn only_the_chosen_ports_are_captured() {
        let (tap, mut capture) = Tap::new(&spec(vec![2], 100), vec![]);
        let mut taps = vec![tap];
        let mut totals = CaptureCounters::default();
        offer(&mut taps, &mut totals, PortId(1), Direction::Inbound, &[1]);
        offer(&mut taps, &mut totals, PortId(2), Direction::Inbound, &[2]);
        assert_eq!((totals.frames, totals.dropped), (1, 0), "one frame taken");
        assert_eq!(capture.frames.try_recv().expect("port 2").port, 2);
        assert!(capture.frames.try_recv().is_err());
    }

    #[test]
    fn a_full_capture_drops_and_counts_per_port_without_blocking() {
        let (tap, mut capture) = Tap::new(&spec(vec![], 100), vec![]);
        let mut taps = vec![tap];
        let mut totals = CaptureCounters::default();
        for _ in 0..CAPTURE_BUFFER + 5 {
            offer(
                &mut taps,
                &mut totals,
                PortId(7),
                Direction::Inbound,
                &[0; 60],
            );
        }
        assert_eq!(taps.len(), 1, "a slow reader keeps its capture");
        assert!(taps[0].is_running());
        assert_eq!(
            (totals.frames, totals.dropped),
            (CAPTURE_BUFFER as u64, 5),
            "counted for /metrics too"
        );
        assert_eq!(capture.drops.snapshot(), HashMap::from([(7, 5)]));
        let mut queued = 0;
        while capture.frames.try_recv().is_ok() {
            queued += 1;
        }
        assert_eq!(queued, CAPTURE_BUFFER);
    }

    #[test]
    fn a_tap_whose_reader_left_is_removed() {
        let (tap, capture) = Tap::new(&spec(vec![], 100), vec![]);
        let mut taps = vec![tap];
        drop(capture);
        assert!(!taps[0].is_running());
        let totals = &mut CaptureCounters::default();
        offer(&mut taps, totals, PortId(1), Direction::Inbound, &[0; 60]);
        assert!(taps.is_empty());
    }
}
