//! Saying what was not tested.
//!
//! A test that cannot run here (not root, `/dev/fuse` missing, a QEMU without a
//! backend) returns early through [`skip_unless!`] or [`skip_unless_root!`], which
//! call [`skip`]: it writes `SKIPPED: <test>: <reason>` straight to the process's
//! stderr — not through `eprintln!`, which the test harness swallows for tests that
//! pass — and, when [`SKIP_DIR_ENV`] names a directory, one file per skip there, so
//! that a runner (`scripts/test`) can count and list the skips after `cargo test`
//! and fail a run that must test everything (CI, as root).

use std::io::Write;
use std::path::Path;

/// The environment variable naming the directory [`skip`] records skips in.
pub const SKIP_DIR_ENV: &str = "VNET_SKIP_DIR";

/// The reason [`skip_unless_root!`](crate::skip_unless_root) gives.
pub const NEEDS_ROOT: &str =
    "needs root (namespaces, TAP devices, QEMU guests); run the tests as root to exercise it";

/// Records that `test` did not run, and why: a `SKIPPED: {test}: {reason}` line on
/// stderr, and a file in `$VNET_SKIP_DIR` if that is set. The caller then returns.
///
/// # Panics
/// If `$VNET_SKIP_DIR` is set but the record cannot be written there: a skip
/// nobody counts is the silence this exists to prevent.
pub fn skip(test: &str, reason: &str) {
    let line = format!("SKIPPED: {test}: {reason}\n");
    // Unbuffered and uncaptured: libtest only captures the print macros.
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Some(dir) = std::env::var_os(SKIP_DIR_ENV) {
        record(Path::new(&dir), test, &line);
    }
}

/// Writes `line` to a file of its own in `dir`, named after `test`.
fn record(dir: &Path, test: &str, line: &str) {
    let file: String = test
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let path = dir.join(format!("{file}.{}", crate::unique_name("skip")));
    if let Err(e) = std::fs::write(&path, line) {
        panic!("cannot record the skip in {}: {e}", path.display());
    }
}

/// Skips the rest of the enclosing test (which must return `()`) unless `cond`
/// holds: [`skip`] with the test's name and the reason, formatted like `format!`.
///
/// ```no_run
/// #[test]
/// fn reads_the_classic_device() {
///     vnet_testbed::skip_unless_root!();
///     vnet_testbed::skip_unless!(std::path::Path::new("/dev/fuse").exists(), "needs /dev/fuse");
///     // ...
/// }
/// ```
#[macro_export]
macro_rules! skip_unless {
    ($cond:expr, $($reason:tt)+) => {
        if !$cond {
            $crate::skip($crate::test_name!(), &::std::format!($($reason)+));
            return;
        }
    };
}

/// Skips the rest of the enclosing test (which must return `()`) unless the
/// process runs as root: [`skip_unless!`] with [`NEEDS_ROOT`].
///
/// ```no_run
/// #[test]
/// fn two_namespaces_ping() {
///     vnet_testbed::skip_unless_root!();
///     // ... privileged test body ...
/// }
/// ```
#[macro_export]
macro_rules! skip_unless_root {
    () => {
        $crate::skip_unless!($crate::is_root(), "{}", $crate::NEEDS_ROOT)
    };
}

/// The path of the function this expands in (`nat::a_refused_tcp_connection_...`),
/// closures left out: the name `cargo test` reports for a test.
#[macro_export]
macro_rules! test_name {
    () => {{
        fn __vnet_testbed_here() {}
        $crate::trim_test_name(::std::any::type_name_of_val(&__vnet_testbed_here))
    }};
}

/// What [`test_name!`] makes of a type name: without the marker function and the
/// `{{closure}}` segments.
#[doc(hidden)]
pub fn trim_test_name(mut name: &'static str) -> &'static str {
    name = name.strip_suffix("::__vnet_testbed_here").unwrap_or(name);
    while let Some(outer) = name.strip_suffix("::{{closure}}") {
        name = outer;
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_test_it_expands_in() {
        assert_eq!(
            crate::test_name!(),
            "vnet_testbed::skip::tests::names_the_test_it_expands_in"
        );
        let in_closure = || crate::test_name!();
        assert_eq!(
            in_closure(),
            "vnet_testbed::skip::tests::names_the_test_it_expands_in"
        );
    }

    #[test]
    fn each_skip_is_a_file_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        record(dir.path(), "nat::a::b", "SKIPPED: nat::a::b: why\n");
        record(dir.path(), "nat::a::b", "SKIPPED: nat::a::b: why\n");
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(files.len(), 2);
        for f in files {
            assert!(f.file_name().to_string_lossy().starts_with("nat__a__b."));
            assert_eq!(
                std::fs::read_to_string(f.path()).unwrap(),
                "SKIPPED: nat::a::b: why\n"
            );
        }
    }
}
