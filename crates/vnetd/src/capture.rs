//! `GET /v1/networks/{net}/capture`: a live capture streamed as pcapng, chunk by chunk,
//! while it runs.
//!
//! The data plane copies frames into the capture's bounded channel
//! ([`vnet_io::dataplane::Capture`]); this side writes them with
//! [`vnet_core::pcapng`]: a section header and an interface per port first, an
//! interface for a port that appears later at its first frame, the drops of a slow
//! reader in statistics blocks once a second when they grew, and final statistics
//! after `count` frames. A client that leaves drops the stream, and with it the
//! channel: the data plane removes the tap at its next frame.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use vnet_core::pcapng;
use vnet_io::dataplane::{Capture, CaptureSpec, Record};

use crate::control::HttpError;

/// Bytes kept of each frame unless `snaplen` says otherwise: all of a 64 KiB GSO
/// frame, as tcpdump's default.
pub const DEFAULT_SNAPLEN: u32 = 262_144;
/// A chunk takes the frames already waiting until it is about this long.
const CHUNK_BYTES: usize = 64 * 1024;
/// How often grown drop counts are reported.
const STATISTICS_EVERY: Duration = Duration::from_secs(1);

/// A capture request's query: `port=ID` (repeatable), `count=N`, `snaplen=N`.
#[derive(Debug)]
pub struct Query {
    pub spec: CaptureSpec,
    /// Stop after this many frames.
    pub count: Option<u64>,
}

impl Query {
    pub fn parse(query: Option<&str>) -> Result<Query, HttpError> {
        let bad = |msg: String| HttpError(StatusCode::BAD_REQUEST, msg);
        let number = |key: &str, value: &str| {
            value
                .parse::<u64>()
                .map_err(|_| bad(format!("{key}={value:?} is not a number")))
        };
        let mut spec = CaptureSpec {
            ports: Vec::new(),
            snaplen: DEFAULT_SNAPLEN,
        };
        let mut count = None;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "port" => {
                    let id = number(key, value)?;
                    let id = u32::try_from(id).map_err(|_| bad(format!("no port {id}")))?;
                    spec.ports.push(id);
                }
                "count" => count = Some(number(key, value)?).filter(|&n| n > 0),
                "snaplen" => match number(key, value)? {
                    n @ 1..=262_144 => spec.snaplen = n as u32,
                    n => return Err(bad(format!("snaplen={n}: expected 1 to 262144 bytes"))),
                },
                _ => {
                    return Err(bad(format!(
                        "unknown query {pair:?}: expected port=ID, count=N or snaplen=N"
                    )))
                }
            }
        }
        Ok(Query { spec, count })
    }
}

/// The response: `capture` as a chunked pcapng stream.
pub fn response(capture: Capture, snaplen: u32, count: Option<u64>) -> Response {
    let writer = Writer::new(capture, snaplen, count);
    let body = Body::from_stream(futures_util::stream::unfold(writer, |mut w| async move {
        let chunk = w.next_chunk().await?;
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(chunk)), w))
    }));
    (
        [(header::CONTENT_TYPE, "application/vnd.tcpdump.pcapng")],
        body,
    )
        .into_response()
}

/// Turns a capture's frames into pcapng chunks.
struct Writer {
    capture: Capture,
    snaplen: u32,
    /// Each port's interface number, in the order their descriptions were written.
    interfaces: HashMap<u32, u32>,
    /// Frames written per port.
    written: HashMap<u32, u64>,
    /// Drops per port as last reported.
    reported: HashMap<u32, u64>,
    remaining: Option<u64>,
    statistics: tokio::time::Interval,
    started: bool,
    ended: bool,
}

impl Writer {
    fn new(capture: Capture, snaplen: u32, count: Option<u64>) -> Writer {
        let mut statistics = tokio::time::interval(STATISTICS_EVERY);
        statistics.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Writer {
            capture,
            snaplen,
            interfaces: HashMap::new(),
            written: HashMap::new(),
            reported: HashMap::new(),
            remaining: count,
            statistics,
            started: false,
            ended: false,
        }
    }

    /// The next bytes to send; `None` when the capture is over.
    async fn next_chunk(&mut self) -> Option<Vec<u8>> {
        if self.ended {
            return None;
        }
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            pcapng::section_header(&mut out);
            for (id, description) in std::mem::take(&mut self.capture.ports) {
                self.interface(&mut out, id, &description);
            }
            return Some(out);
        }
        loop {
            tokio::select! {
                frame = self.capture.frames.recv() => {
                    let Some(frame) = frame else {
                        // The vnet went away (deleted, or vnetd stops).
                        self.finish(&mut out);
                        return Some(out);
                    };
                    self.packet(&mut out, frame);
                    while !self.ended && out.len() < CHUNK_BYTES {
                        match self.capture.frames.try_recv() {
                            Ok(frame) => self.packet(&mut out, frame),
                            Err(_) => break,
                        }
                    }
                    return Some(out);
                }
                _ = self.statistics.tick() => {
                    self.drop_statistics(&mut out, false);
                    if !out.is_empty() {
                        return Some(out);
                    }
                }
            }
        }
    }

    fn interface(&mut self, out: &mut Vec<u8>, port: u32, description: &str) -> u32 {
        let next = self.interfaces.len() as u32;
        *self.interfaces.entry(port).or_insert_with(|| {
            pcapng::interface(out, &format!("port{port}"), description, self.snaplen);
            next
        })
    }

    fn packet(&mut self, out: &mut Vec<u8>, frame: Record) {
        let iface = self.interface(out, frame.port, "");
        pcapng::packet(
            out,
            iface,
            frame.ts_ns,
            &frame.data,
            frame.orig_len,
            frame.direction,
        );
        *self.written.entry(frame.port).or_default() += 1;
        if let Some(n) = &mut self.remaining {
            *n -= 1;
            if *n == 0 {
                self.finish(out);
            }
        }
    }

    /// Final statistics for every interface; the stream ends after them.
    fn finish(&mut self, out: &mut Vec<u8>) {
        self.drop_statistics(out, true);
        self.ended = true;
    }

    /// Statistics for the interfaces whose drops grew (`all`: every interface).
    fn drop_statistics(&mut self, out: &mut Vec<u8>, all: bool) {
        let drops = self.capture.drops.snapshot();
        let mut ports: Vec<u32> = if all {
            self.interfaces
                .keys()
                .chain(drops.keys())
                .copied()
                .collect()
        } else {
            drops
                .iter()
                .filter(|(p, &n)| self.reported.get(p) != Some(&n))
                .map(|(&p, _)| p)
                .collect()
        };
        ports.sort();
        ports.dedup();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        for port in ports {
            let dropped = drops.get(&port).copied().unwrap_or(0);
            let iface = self.interface(out, port, "");
            let seen = self.written.get(&port).copied().unwrap_or(0) + dropped;
            pcapng::statistics(out, iface, now, seen, dropped);
            self.reported.insert(port, dropped);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcapng::blocks::interface_statistics::InterfaceStatisticsOption;
    use pcap_file::pcapng::{Block, PcapNgReader};
    use std::sync::Arc;
    use vnet_core::pcapng::Direction;
    use vnet_io::dataplane::Drops;

    fn record(port: u32) -> Record {
        Record {
            port,
            direction: Direction::Inbound,
            ts_ns: 1,
            orig_len: 60,
            data: vec![0; 60],
        }
    }

    #[tokio::test]
    async fn a_counted_capture_names_late_ports_and_ends_with_statistics() {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let capture = Capture {
            frames: rx,
            ports: vec![(1, "tap a".into())],
            drops: Arc::new(Drops::default()),
        };
        for port in [1, 4, 1] {
            tx.send(record(port)).await.unwrap();
        }
        let mut writer = Writer::new(capture, 96, Some(3));
        let mut stream = Vec::new();
        while let Some(chunk) = writer.next_chunk().await {
            stream.extend(chunk);
        }
        let mut reader = PcapNgReader::new(&stream[..]).unwrap();
        let mut kinds = Vec::new();
        while let Some(block) = reader.next_block() {
            kinds.push(match block.unwrap() {
                Block::InterfaceDescription(_) => "idb".to_string(),
                Block::EnhancedPacket(p) => format!("epb{}", p.interface_id),
                Block::InterfaceStatistics(s) => {
                    assert!(s.options.contains(&InterfaceStatisticsOption::IsbIfDrop(0)));
                    format!("isb{}", s.interface_id)
                }
                other => panic!("{other:?}"),
            });
        }
        assert_eq!(
            kinds,
            ["idb", "epb0", "idb", "epb1", "epb0", "isb0", "isb1"],
            "port 4 gets interface 1 at its first frame"
        );
    }

    #[test]
    fn the_query_names_ports_count_and_snap_length() {
        let q = Query::parse(Some("port=2&port=5&count=10&snaplen=96")).unwrap();
        assert_eq!(q.spec.ports, [2, 5]);
        assert_eq!(q.spec.snaplen, 96);
        assert_eq!(q.count, Some(10));
        let q = Query::parse(None).unwrap();
        assert!(q.spec.ports.is_empty());
        assert_eq!((q.spec.snaplen, q.count), (DEFAULT_SNAPLEN, None));
    }

    #[test]
    fn a_bad_query_is_refused_with_what_was_wrong() {
        for (query, says) in [
            ("port=x", "not a number"),
            ("snaplen=0", "1 to 262144"),
            ("snaplen=300000", "1 to 262144"),
            ("ports=1", "unknown query"),
            ("port=99999999999", "no port"),
        ] {
            let e = Query::parse(Some(query)).expect_err(query);
            assert_eq!(e.0, StatusCode::BAD_REQUEST);
            assert!(e.1.contains(says), "{query}: {}", e.1);
        }
    }
}
