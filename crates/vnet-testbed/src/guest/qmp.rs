//! QEMU's machine protocol (QMP) on a guest's unix socket: one short connection per
//! command, so that no state (half-read events, a dead connection) outlives a call.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::{Error, Result};

/// How long one command may take to answer (QMP answers at once; `migrate` returns
/// as soon as the migration started).
const ANSWER: Duration = Duration::from_secs(30);

/// Runs `execute` with `arguments` (`Value::Null` for none) on the QMP socket at
/// `path` and returns its `return` value; a QMP error is [`Error::Failed`] with its
/// class and description.
pub(super) fn command(path: &Path, execute: &str, arguments: Value) -> Result<Value> {
    let io = |e: std::io::Error| Error::Failed(format!("QMP {}: {execute}: {e}", path.display()));
    let stream = UnixStream::connect(path).map_err(io)?;
    stream.set_read_timeout(Some(ANSWER)).map_err(io)?;
    let mut writer = stream.try_clone().map_err(io)?;
    let mut reader = BufReader::new(stream);
    // The greeting, then capabilities negotiation, then the command.
    next_message(&mut reader, execute)?;
    ask(&mut writer, &mut reader, "qmp_capabilities", Value::Null)?;
    ask(&mut writer, &mut reader, execute, arguments)
}

fn ask(
    writer: &mut UnixStream,
    reader: &mut impl BufRead,
    execute: &str,
    arguments: Value,
) -> Result<Value> {
    let mut msg = json!({ "execute": execute });
    if !arguments.is_null() {
        msg["arguments"] = arguments;
    }
    writer
        .write_all(format!("{msg}\n").as_bytes())
        .map_err(|e| Error::Failed(format!("QMP {execute}: write: {e}")))?;
    loop {
        let answer = next_message(reader, execute)?;
        if let Some(r) = answer.get("return") {
            return Ok(r.clone());
        }
        if let Some(e) = answer.get("error") {
            return Err(Error::Failed(format!(
                "QMP {execute}: {}: {}",
                e["class"].as_str().unwrap_or("?"),
                e["desc"].as_str().unwrap_or("?")
            )));
        }
        // Anything else is an asynchronous event: not the answer.
    }
}

/// The next JSON message (one per line).
fn next_message(reader: &mut impl BufRead, execute: &str) -> Result<Value> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => Err(Error::Failed(format!(
            "QMP {execute}: QEMU closed the socket"
        ))),
        Ok(_) => serde_json::from_str(&line)
            .map_err(|e| Error::Failed(format!("QMP {execute}: bad message {line:?}: {e}"))),
        Err(e) => Err(Error::Failed(format!("QMP {execute}: read: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::os::unix::net::UnixListener;

    /// A fake QEMU: greets, answers capabilities, sends an event, then `answer`.
    fn fake_qemu(answer: &'static str) -> (tempfile::TempDir, std::thread::JoinHandle<String>) {
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join("qmp.sock")).unwrap();
        let server = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            w.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
                .unwrap();
            let mut caps = String::new();
            r.read_line(&mut caps).unwrap();
            w.write_all(b"{\"return\": {}}\n").unwrap();
            let mut cmd = String::new();
            r.read_line(&mut cmd).unwrap();
            w.write_all(b"{\"event\": \"MIGRATION\", \"data\": {}}\n")
                .unwrap();
            w.write_all(answer.as_bytes()).unwrap();
            cmd
        });
        (dir, server)
    }

    #[test]
    fn a_command_skips_events_and_returns_its_answer() {
        let (dir, server) = fake_qemu("{\"return\": {\"status\": \"completed\"}}\n");
        let r = command(&dir.path().join("qmp.sock"), "query-migrate", Value::Null).unwrap();
        assert_eq!(r["status"], "completed");
        assert_eq!(
            server.join().unwrap().trim(),
            r#"{"execute":"query-migrate"}"#
        );
    }

    #[test]
    fn an_error_names_its_class_and_description() {
        let (dir, server) = fake_qemu(
            "{\"error\": {\"class\": \"GenericError\", \"desc\": \"Migration disabled\"}}\n",
        );
        let e = command(
            &dir.path().join("qmp.sock"),
            "migrate",
            json!({ "uri": "unix:/x" }),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "QMP migrate: GenericError: Migration disabled"
        );
        assert!(server
            .join()
            .unwrap()
            .contains(r#""arguments":{"uri":"unix:/x"}"#));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut r = Cursor::new(b"not json\n".to_vec());
        assert!(next_message(&mut r, "x").is_err());
        let mut empty = Cursor::new(Vec::new());
        assert!(next_message(&mut empty, "x").is_err());
    }
}
