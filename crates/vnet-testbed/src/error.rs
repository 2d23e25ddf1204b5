//! The test bed's error type.

use std::fmt;

/// Why a test-bed operation failed. The message is meant for a human reading
/// a failed test: it carries the diagnostics available at that point (the
/// tail of a console or daemon log, a command's stderr).
#[derive(Debug)]
pub enum Error {
    /// A deadline passed while waiting for something (a boot marker, a
    /// command's end, a socket).
    Timeout(String),
    /// Anything else: a command failed, a process died, an I/O error.
    Failed(String),
}

/// Result with the test bed's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Whether this is [`Error::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout(_))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Timeout(m) => write!(f, "timed out: {m}"),
            Error::Failed(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Failed(e.to_string())
    }
}
