//! Showing an error with its causes.
//!
//! Errors in vnet-io are thiserror enums named after the step that failed; each
//! variant's message says what was being done and keeps the underlying error as its
//! `#[source]`, never repeating it in the message. Where such an error becomes a string
//! (a control API answer, a log line), [`Chain`] writes every cause once:
//! "cannot attach TAP \"vm1\" (TUNSETIFF): Operation not permitted (os error 1)".

use std::error::Error;
use std::fmt;

/// Displays an error followed by each of its sources, separated by ": ".
pub struct Chain<'a>(pub &'a (dyn Error + 'a));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

/// The error and its causes as one line (see [`Chain`]).
pub fn chain(err: &dyn Error) -> String {
    Chain(err).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot open the thing")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn each_cause_is_written_once() {
        let e = Outer(std::io::Error::other("disk on fire"));
        assert_eq!(chain(&e), "cannot open the thing: disk on fire");
    }
}
