//! The host side of the guest's serial console: what the guest printed, and
//! waiting for markers in it.

use std::fs::File;
use std::io::{Read, Write};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

/// The console output seen so far, shared with the reader thread.
#[derive(Default)]
pub(super) struct Console {
    state: Mutex<ConsoleState>,
    changed: Condvar,
}

#[derive(Default)]
pub(super) struct ConsoleState {
    /// Everything the guest wrote, CRs removed.
    pub(super) buf: Vec<u8>,
    /// Where the next [`Guest::exec`] starts looking for its markers.
    pub(super) cursor: usize,
    /// QEMU closed its stdout (it exited).
    pub(super) eof: bool,
}

/// Why a console wait ended without a match.
pub(super) enum Stop {
    Timeout,
    Exited,
}

impl Console {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, ConsoleState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reader thread: copies QEMU's stdout into the buffer and the log.
    pub(super) fn pump(&self, mut from: impl Read, mut log: File) {
        let mut chunk = [0u8; 4096];
        loop {
            let n = match from.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let _ = log.write_all(&chunk[..n]);
            let mut st = self.lock();
            st.buf.extend(chunk[..n].iter().filter(|&&b| b != b'\r'));
            drop(st);
            self.changed.notify_all();
        }
        self.lock().eof = true;
        self.changed.notify_all();
    }

    /// Waits until `found` returns something for `buf[from..]`, QEMU exits,
    /// or the deadline passes.
    pub(super) fn wait<T>(
        &self,
        from: usize,
        deadline: Instant,
        mut found: impl FnMut(&[u8]) -> Option<T>,
    ) -> std::result::Result<T, Stop> {
        let mut st = self.lock();
        loop {
            if let Some(t) = found(&st.buf[from.min(st.buf.len())..]) {
                return Ok(t);
            }
            if st.eof {
                return Err(Stop::Exited);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Stop::Timeout);
            }
            st = self
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    pub(super) fn text(&self) -> String {
        String::from_utf8_lossy(&self.lock().buf).into_owned()
    }
}

pub(super) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Standard base64 with padding (what busybox `base64 -d` reads).
pub(super) fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), enc);
        }
    }
}
