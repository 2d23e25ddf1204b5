//! The lease-file writer: one thread per process that writes DHCP lease snapshots to
//! disk, so that the data-plane threads never wait for a file system.
//!
//! A DHCP service [`LeaseWriter::submit`]s a copy of its [`LeaseDb`] whenever leases
//! change; that takes a mutex held only for map updates, never across I/O. The queue
//! holds at most one snapshot per lease file: a newer snapshot replaces a queued older
//! one (counted in [`WriterStats::superseded`]), which coalesces a burst of changes into
//! one write. The queue is bounded by [`MAX_QUEUED_FILES`]; a snapshot for yet another
//! file is dropped and counted in [`WriterStats::dropped`] (the service's next change
//! submits a new one). The thread takes the whole queue as one batch, serializes and
//! writes each file atomically and durably (temporary file created
//! `O_CREAT|O_EXCL|O_NOFOLLOW` mode 0600, fsync, rename, fsync of the directory), then
//! takes the next batch. A failed write is logged and counted; the next snapshot of that
//! file tries again.
//!
//! One thread per process rather than per data-plane thread: lease changes are rare next
//! to packets, every write ends in fsyncs that a second thread on the same disk would not
//! speed up, and nothing on the data plane waits for the writer, so sharing it costs
//! a vnet only persistence latency, never forwarding.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tracing::{error, warn};
use vnet_dhcp::LeaseDb;

/// At most this many lease files wait to be written at once (one entry per vnet).
pub const MAX_QUEUED_FILES: usize = 4096;

/// What the writer did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Lease files written (renamed into place and synced).
    pub written: u64,
    /// Writes that failed (logged; the next snapshot of the file retries).
    pub failed: u64,
    /// Queued snapshots replaced by a newer one of the same file before being written.
    pub superseded: u64,
    /// Snapshots refused because [`MAX_QUEUED_FILES`] other files were queued.
    pub dropped: u64,
}

struct Snapshot {
    net: String,
    leases: LeaseDb,
}

#[derive(Default)]
struct State {
    queued: HashMap<PathBuf, Snapshot>,
    /// Files of the batch being written.
    writing: HashSet<PathBuf>,
    stats: WriterStats,
    #[cfg(test)]
    paused: bool,
}

struct Shared {
    /// [`MAX_QUEUED_FILES`], smaller in tests.
    limit: usize,
    state: Mutex<State>,
    /// Signalled when a snapshot is queued.
    work: Condvar,
    /// Signalled when a batch is done.
    done: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every update is one step.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The process's writer ([`LeaseWriter::global`]).
static WRITER: OnceLock<Option<LeaseWriter>> = OnceLock::new();

/// A handle on a writer thread.
#[derive(Clone)]
pub struct LeaseWriter {
    shared: Arc<Shared>,
}

impl LeaseWriter {
    /// The process's writer, started on first use; `None` if its thread could not be
    /// started (the caller then writes in place, as a last resort).
    pub fn global() -> Option<&'static LeaseWriter> {
        WRITER
            .get_or_init(|| {
                LeaseWriter::spawn()
                    .map_err(|e| error!("cannot start the lease writer thread: {e}"))
                    .ok()
            })
            .as_ref()
    }

    /// The process's writer if it was ever started (nothing to wait for otherwise).
    pub fn started() -> Option<&'static LeaseWriter> {
        WRITER.get().and_then(Option::as_ref)
    }

    /// Starts a writer thread; it runs as long as a handle exists.
    pub fn spawn() -> std::io::Result<LeaseWriter> {
        Self::spawn_with_limit(MAX_QUEUED_FILES)
    }

    fn spawn_with_limit(limit: usize) -> std::io::Result<LeaseWriter> {
        let shared = Arc::new(Shared {
            limit,
            state: Mutex::default(),
            work: Condvar::new(),
            done: Condvar::new(),
        });
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("vnet-leases".into())
            .spawn(move || run(weak))?;
        Ok(LeaseWriter { shared })
    }

    /// Queues `leases` to be written to `path`, replacing a snapshot of `path` still
    /// queued. Never waits for I/O. False if the queue was full (counted).
    pub fn submit(&self, net: &str, path: &Path, leases: LeaseDb) -> bool {
        let mut state = self.shared.lock();
        let snapshot = Snapshot {
            net: net.to_string(),
            leases,
        };
        if let Some(queued) = state.queued.get_mut(path) {
            *queued = snapshot;
            state.stats.superseded += 1;
        } else if state.queued.len() >= self.shared.limit {
            state.stats.dropped += 1;
            return false;
        } else {
            state.queued.insert(path.to_path_buf(), snapshot);
        }
        drop(state);
        self.shared.work.notify_one();
        true
    }

    /// Waits until nothing for `path` is queued or being written, at most `timeout`;
    /// false on timeout. A service about to read `path` calls it, so that a vnet made
    /// again under an old name reads what its predecessor saved last.
    pub fn flush(&self, path: &Path, timeout: Duration) -> bool {
        self.wait_until(timeout, |state| {
            !state.queued.contains_key(path) && !state.writing.contains(path)
        })
    }

    /// Waits until every queued snapshot is written, at most `timeout`; false on
    /// timeout. For shutdown, once the data plane has stopped.
    pub fn flush_all(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, |state| {
            state.queued.is_empty() && state.writing.is_empty()
        })
    }

    fn wait_until(&self, timeout: Duration, settled: impl Fn(&State) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        while !settled(&state) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .shared
                .done
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    pub fn stats(&self) -> WriterStats {
        self.shared.lock().stats
    }

    #[cfg(test)]
    fn spawn_paused(limit: usize) -> LeaseWriter {
        let writer = LeaseWriter::spawn_with_limit(limit).unwrap();
        writer.shared.lock().paused = true;
        writer
    }

    #[cfg(test)]
    fn resume(&self) {
        self.shared.lock().paused = false;
        self.shared.work.notify_one();
    }
}

/// The writer thread: batch after batch, until the last handle is gone.
fn run(shared: std::sync::Weak<Shared>) {
    loop {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let batch = {
            let mut state = shared.lock();
            while state.queued.is_empty() || paused(&state) {
                let (next, _) = shared
                    .work
                    .wait_timeout(state, Duration::from_secs(1))
                    .unwrap_or_else(|e| e.into_inner());
                state = next;
                // Let go of `shared` now and then, so that the thread ends once the
                // last handle is dropped.
                if state.queued.is_empty() && Arc::strong_count(&shared) == 1 {
                    return;
                }
            }
            let batch = std::mem::take(&mut state.queued);
            state.writing = batch.keys().cloned().collect();
            batch
        };
        let (mut written, mut failed) = (0, 0);
        for (path, snapshot) in batch {
            match write_atomically(&path, snapshot.leases.to_json().as_bytes()) {
                Ok(()) => written += 1,
                Err(e) => {
                    failed += 1;
                    warn!(
                        net = snapshot.net,
                        "cannot save leases to {}: {e} (retried at the next change)",
                        path.display()
                    );
                }
            }
        }
        let mut state = shared.lock();
        state.writing.clear();
        state.stats.written += written;
        state.stats.failed += failed;
        drop(state);
        shared.done.notify_all();
    }
}

#[cfg(test)]
fn paused(state: &State) -> bool {
    state.paused
}

#[cfg(not(test))]
fn paused(_: &State) -> bool {
    false
}

/// Writes `bytes` to the JSON file `path` so that a crash leaves either the old or the
/// new file, mode 0600 (leases name clients, vnetd's state names everything), durably
/// (file and directory synced): lease files and vnetd's `state.json` both. The temporary
/// `NAME.json.tmp` is made anew, never opened through a link: a stale one (or a link
/// planted in its place) is unlinked first, and the file is created with
/// `O_CREAT|O_EXCL|O_NOFOLLOW`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path.parent().expect("a JSON file has a directory");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp = path.with_extension("json.tmp");
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database whose JSON tells snapshots apart: `n` quarantined addresses.
    fn snapshot(n: u8) -> LeaseDb {
        let quarantine: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    r#"{{"ip":"10.0.0.{i}","reason":"declined","reported_by":"52:54:00:00:00:01","until_unix_ms":1}}"#
                )
            })
            .collect();
        let json = format!(
            r#"{{"format":"vnet-dhcp-leases","version":1,"leases":[],"quarantine":[{}]}}"#,
            quarantine.join(",")
        );
        LeaseDb::from_json(&json).unwrap()
    }

    #[test]
    fn ten_queued_snapshots_are_written_once_and_the_file_holds_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lab").join("leases.json");
        let writer = LeaseWriter::spawn_paused(MAX_QUEUED_FILES);
        for n in 1..=10 {
            assert!(writer.submit("lab", &path, snapshot(n)));
        }
        assert!(!path.exists(), "nothing written while paused");
        writer.resume();
        assert!(writer.flush(&path, Duration::from_secs(10)));
        let stats = writer.stats();
        assert_eq!((stats.written, stats.superseded, stats.failed), (1, 9, 0));
        let on_disk = std::fs::read_to_string(&path).unwrap();
        assert_eq!(LeaseDb::from_json(&on_disk).unwrap(), snapshot(10));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn snapshots_submitted_while_a_batch_runs_make_at_most_one_more_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lab").join("leases.json");
        let writer = LeaseWriter::spawn().unwrap();
        for n in 1..=10 {
            writer.submit("lab", &path, snapshot(n));
        }
        assert!(writer.flush(&path, Duration::from_secs(10)));
        let on_disk = std::fs::read_to_string(&path).unwrap();
        assert_eq!(LeaseDb::from_json(&on_disk).unwrap(), snapshot(10));
        let stats = writer.stats();
        assert_eq!(stats.written + stats.superseded, 10);
        assert_eq!(stats.failed, 0);
    }

    #[test]
    fn a_failed_write_is_counted_and_the_next_snapshot_retries() {
        let dir = tempfile::tempdir().unwrap();
        // A regular file where the vnet's directory should be: the write fails (ENOTDIR,
        // whatever our privileges).
        let blocker = dir.path().join("lab");
        std::fs::write(&blocker, "not a directory").unwrap();
        let path = blocker.join("leases.json");
        let writer = LeaseWriter::spawn().unwrap();
        writer.submit("lab", &path, snapshot(1));
        assert!(writer.flush(&path, Duration::from_secs(10)));
        assert_eq!((writer.stats().written, writer.stats().failed), (0, 1));

        std::fs::remove_file(&blocker).unwrap();
        writer.submit("lab", &path, snapshot(2));
        assert!(writer.flush(&path, Duration::from_secs(10)));
        assert_eq!((writer.stats().written, writer.stats().failed), (1, 1));
        let on_disk = std::fs::read_to_string(&path).unwrap();
        assert_eq!(LeaseDb::from_json(&on_disk).unwrap(), snapshot(2));
    }

    #[test]
    fn a_full_queue_drops_new_files_but_still_takes_newer_snapshots_of_queued_ones() {
        let dir = tempfile::tempdir().unwrap();
        let limit = 4;
        let writer = LeaseWriter::spawn_paused(limit);
        let path = |i: usize| dir.path().join(format!("n{i}")).join("leases.json");
        for i in 0..limit {
            assert!(writer.submit("n", &path(i), LeaseDb::new()));
        }
        assert!(!writer.submit("n", &path(limit), LeaseDb::new()));
        assert!(writer.submit("n", &path(0), snapshot(3)));
        let stats = writer.stats();
        assert_eq!((stats.dropped, stats.superseded), (1, 1));
        writer.resume();
        assert!(writer.flush(&path(0), Duration::from_secs(30)));
        let on_disk = std::fs::read_to_string(path(0)).unwrap();
        assert_eq!(LeaseDb::from_json(&on_disk).unwrap(), snapshot(3));
    }

    #[test]
    fn a_stale_lease_temporary_linked_to_a_victim_leaves_the_victim_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let net = dir.path().join("lab");
        std::fs::create_dir(&net).unwrap();
        let leases = net.join("leases.json");
        std::os::unix::fs::symlink(&victim, net.join("leases.json.tmp")).unwrap();

        write_atomically(&leases, b"[]").unwrap();

        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(&leases).unwrap(), "[]");
        assert!(!std::fs::symlink_metadata(&leases).unwrap().is_symlink());
        let mode = std::fs::metadata(&leases).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        assert!(!net.join("leases.json.tmp").exists());
    }
}
