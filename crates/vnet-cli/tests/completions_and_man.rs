//! `vnet completions SHELL` and `vnet man DIR`, from the clap definitions: the bash
//! script loads in bash and completes `vnet net ` to the net subcommands, and the
//! manual pages render with groff without a warning.

use std::process::Command;

use vnet_testbed::{bin_path, skip_unless};

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn vnet(args: &[&str]) -> String {
    let out = Command::new(bin_path("vnet")).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "vnet {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn bash_completes_the_subcommands_of_vnet_net() {
    skip_unless!(have("bash"), "needs bash");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("vnet.bash");
    std::fs::write(&script, vnet(&["completions", "bash"])).unwrap();
    // What bash does on `vnet net <TAB>`: the registered function with COMP_* set.
    let complete = r#"
        source "$1" || exit 1
        fn=$(complete -p vnet | sed -n 's/.*-F \([^ ]*\).*/\1/p')
        [ -n "$fn" ] || { echo "vnet has no completion function" >&2; exit 1; }
        COMP_WORDS=(vnet net "") COMP_CWORD=2 COMP_LINE="vnet net " COMP_POINT=9
        "$fn" vnet "" net
        printf '%s\n' "${COMPREPLY[@]}"
    "#;
    let out = Command::new("bash")
        .args(["-c", complete, "bash"])
        .arg(&script)
        .output()
        .unwrap();
    let words = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let words: Vec<&str> = words.split_whitespace().collect();
    for sub in ["ls", "show", "create", "rm"] {
        assert!(words.contains(&sub), "`vnet net ` completes to {words:?}");
    }
    assert!(!words.contains(&"attach"), "{words:?}");
}

#[test]
fn zsh_and_fish_completions_name_the_commands() {
    for shell in ["zsh", "fish"] {
        let script = vnet(&["completions", shell]);
        for word in ["net", "port", "dhcp", "if-exists", "may-exist"] {
            assert!(script.contains(word), "{shell}: no {word}");
        }
    }
}

#[test]
fn the_manual_pages_render() {
    skip_unless!(have("groff"), "needs groff (package groff-base)");
    let dir = tempfile::tempdir().unwrap();
    vnet(&["man", dir.path().to_str().unwrap()]);
    let vnetd = Command::new(bin_path("vnetd"))
        .arg("--man")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(vnetd.success());
    for (page, expected) in [
        ("vnet.1", "EXIT STATUS"),
        ("vnet-net-create.1", "--may-exist"),
        ("vnet-dhcp-set.1", "--lease"),
        ("vnetd.8", "socket activation"),
    ] {
        // Every warning on (-ww); plain text out (-P-bou: no bold, overstrike, underline).
        let out = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-P-bou"])
            .arg(dir.path().join(page))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.is_empty(),
            "{page}: {stderr}"
        );
        // groff's UTF-8 output has Unicode hyphens and minus signs, and wraps lines.
        let text = String::from_utf8_lossy(&out.stdout).replace(['\u{2010}', '\u{2212}'], "-");
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            text.contains(expected),
            "{page} lacks {expected:?}:\n{text}"
        );
    }
    assert!(dir.path().join("vnet-net-ls.1").exists());
}
