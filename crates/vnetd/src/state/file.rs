//! `STATE/state.json` on disk: read at start, written after every change.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use tracing::{info, warn};

use super::{parse, render, SavedNet, State, StateError};

/// The state file's name in the state directory.
pub const NAME: &str = "state.json";

/// Reads the state file: `None` if there is none, or if it is corrupt; a corrupt file is
/// renamed to `state.json.corrupt-UNIXTIME` (never overwritten) and the start goes on
/// from the configuration. A file of a newer schema is an error: vnetd must not start
/// and overwrite it.
pub fn load(path: &Path) -> Result<Option<State>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let parsed = String::from_utf8(bytes)
        .map_err(|_| StateError::Corrupt("not UTF-8".into()))
        .and_then(|text| parse(&text));
    match parsed {
        Ok(state) => Ok(Some(state)),
        Err(StateError::Corrupt(why)) => {
            let aside = keep_aside(path)?;
            warn!(
                "{} is corrupt ({why}): kept as {}; starting from the configuration",
                path.display(),
                aside.display()
            );
            Ok(None)
        }
        Err(e @ StateError::Newer { .. }) => Err(anyhow!("{}: {e}", path.display())),
    }
}

/// What to run at start: the state saved in `path` with the config file's changes since
/// it was last applied ([`super::merge`]); the config file's vnets alone without a
/// (usable) state file. Logs what it restores.
pub fn restore(path: &Path, config: &[SavedNet]) -> Result<Vec<SavedNet>> {
    let Some(saved) = load(path)? else {
        return Ok(config.to_vec());
    };
    info!(
        "restoring {} vnet(s) from {}",
        saved.networks.len(),
        path.display()
    );
    let changed = super::changed(&saved.config, config);
    if !changed.is_empty() {
        info!(
            "the configuration changed since it was last applied: vnet(s) {} as it says",
            changed.join(", ")
        );
    }
    Ok(super::merge(&saved.networks, &saved.config, config))
}

/// Renames `path` to a name of its own beside it.
fn keep_aside(path: &Path) -> Result<PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let base = format!("{}.corrupt-{secs}", path.display());
    let aside = (0..)
        .map(|n| {
            PathBuf::from(if n == 0 {
                base.clone()
            } else {
                format!("{base}.{n}")
            })
        })
        .find(|p| std::fs::symlink_metadata(p).is_err())
        .expect("some name is free");
    std::fs::rename(path, &aside)
        .with_context(|| format!("cannot move the corrupt {} aside", path.display()))?;
    Ok(aside)
}

/// Writes `state` to `path` atomically and durably (as lease files are written).
pub fn save(path: &Path, state: &State) -> std::io::Result<()> {
    vnet_io::services::lease_writer::write_atomically(path, render(state).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupt_file_is_kept_aside_and_a_newer_one_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(NAME);
        assert_eq!(load(&path).unwrap(), None);
        std::fs::write(&path, b"{\"version\": 1, \"netw").unwrap();
        assert_eq!(load(&path).unwrap(), None);
        assert!(!path.exists());
        std::fs::write(&path, b"\xff").unwrap();
        assert_eq!(load(&path).unwrap(), None);
        let kept: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert!(kept.iter().all(|k| k.starts_with("state.json.corrupt-")));
        let newer = "{\"version\": 9, \"networks\": [], \"config\": []}";
        std::fs::write(&path, newer).unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("schema version 9 is newer"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), newer);
        let state = State {
            networks: vec![super::super::tests::net("a", 1500)],
            config: Vec::new(),
        };
        save(&path, &state).unwrap();
        assert_eq!(load(&path).unwrap(), Some(state));
    }
}
