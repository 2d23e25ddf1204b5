//! Roles on the control API, end to end: a real vnetd whose `[access]` groups are numeric
//! gids no user database knows, and clients (curl, the `vnet` CLI) run under other uids
//! and groups with `setpriv`. Users read and attach, admins change the network, everyone
//! else is refused, and a refusal says which role is needed.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

use vnet_testbed::{bin_path, skip_unless, skip_unless_root, Daemon};

/// Test uids and gids: numeric, so the tests need no `/etc/passwd` or `/etc/group` entry.
const ADMINS: u32 = 64_210;
const USERS: u32 = 64_211;
const ALICE: u32 = 64_201;
const BOB: u32 = 64_202;
const MALLORY: u32 = 64_203;
const ANN: u32 = 64_204;

/// A daemon with vnet `lab` whose admin and user groups are [`ADMINS`] and [`USERS`],
/// its run directory reachable by other uids (the test bed's is private).
fn daemon() -> Daemon {
    let d = Daemon::builder()
        .config(&format!(
            "[access]\nadmin_group = \"{ADMINS}\"\nuser_group = \"{USERS}\"\n\n\
             [[network]]\nname = \"lab\"\nsubnet = \"10.77.0.0/24\"\nnat = {{}}\n"
        ))
        .start();
    let base = d.run_dir().parent().unwrap();
    std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// `program ARGS...` as `uid` with primary group `gid` and supplementary `groups`.
fn as_user(uid: u32, gid: u32, groups: &[u32], program: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"));
    if groups.is_empty() {
        cmd.arg("--clear-groups");
    } else {
        let list: Vec<String> = groups.iter().map(u32::to_string).collect();
        cmd.arg(format!("--groups={}", list.join(",")));
    }
    cmd.arg(program).args(args).output().expect("setpriv runs")
}

/// A control API request as (`uid`, `gid`, `groups`): the status and the body.
fn request(
    d: &Daemon,
    (uid, gid, groups): (u32, u32, &[u32]),
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    let socket = d.control_socket();
    let url = format!("http://vnet{path}");
    let mut args = vec![
        "-sS",
        "--unix-socket",
        socket.to_str().unwrap(),
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ];
    if let Some(body) = body {
        args.extend(["-H", "content-type: application/json", "--data", body]);
    }
    args.push(&url);
    let out = as_user(uid, gid, groups, Path::new("curl"), &args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    let status = status.trim().parse().unwrap_or_else(|_| {
        panic!(
            "curl as uid {uid}: {text}{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            d.log()
        )
    });
    (status, body.to_string())
}

/// The `vnet` CLI as (`uid`, `gid`, `groups`).
fn cli(d: &Daemon, (uid, gid, groups): (u32, u32, &[u32]), args: &[&str]) -> Output {
    let mut all = vec!["--run-dir", d.run_dir().to_str().unwrap()];
    all.extend_from_slice(args);
    as_user(uid, gid, groups, &bin_path("vnet"), &all)
}

fn has_curl() -> bool {
    Command::new("curl").arg("--version").output().is_ok()
}

macro_rules! needs_root_and_curl {
    () => {
        skip_unless_root!();
        skip_unless!(has_curl(), "needs curl");
    };
}

const ALICE_USER: (u32, u32, &[u32]) = (ALICE, ALICE, &[USERS]);
const BOB_USER: (u32, u32, &[u32]) = (BOB, BOB, &[USERS]);
const MALLORY_NOBODY: (u32, u32, &[u32]) = (MALLORY, MALLORY, &[]);
const ANN_ADMIN: (u32, u32, &[u32]) = (ANN, ANN, &[ADMINS]);
const ROOT: (u32, u32, &[u32]) = (0, 0, &[]);

#[test]
fn a_user_reads_vnets_and_metrics_but_cannot_change_the_network() {
    needs_root_and_curl!();
    let d = daemon();
    let (status, body) = request(&d, ALICE_USER, "GET", "/v1/networks", None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"lab\""), "{body}");
    for path in [
        "/v1/networks/lab",
        "/v1/networks/lab/ports",
        "/v1/networks/lab/forwards",
    ] {
        assert_eq!(request(&d, ALICE_USER, "GET", path, None).0, 200, "{path}");
    }
    let (status, metrics) = request(&d, ALICE_USER, "GET", "/metrics", None);
    assert_eq!(status, 200, "{metrics}");
    assert!(metrics.contains("vnet_macs{net=\"lab\"}"), "{metrics}");

    let (status, body) = request(
        &d,
        ALICE_USER,
        "POST",
        "/v1/networks",
        Some(r#"{"name":"x"}"#),
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains(&format!(
            "creating a vnet needs the admin role (root or group {ADMINS}); you are uid {ALICE} \
             with role user"
        )),
        "{body}"
    );
    let refused = [
        (
            "PUT",
            "/v1/networks/lab/uplink",
            Some(r#"{"interface":"lo"}"#),
            "setting an uplink",
        ),
        (
            "DELETE",
            "/v1/networks/lab/uplink",
            None,
            "removing an uplink",
        ),
        (
            "POST",
            "/v1/networks/lab/forwards",
            Some(r#"{"host":"127.0.0.1:18080","guest":"10.77.0.10:80"}"#),
            "adding a forward",
        ),
        ("PUT", "/v1/networks/lab/dhcp", Some("{}"), "setting DHCP"),
        ("DELETE", "/v1/networks/lab", None, "deleting a vnet"),
        (
            "POST",
            "/v1/networks/lab/ports",
            Some(r#"{"kind":"tap","ifname":"vnetacc0"}"#),
            "adding a TAP port",
        ),
    ];
    for (method, path, body, action) in refused {
        let (status, answer) = request(&d, ALICE_USER, method, path, body);
        assert_eq!(status, 403, "{method} {path}: {answer}");
        assert!(answer.contains(action), "{method} {path}: {answer}");
    }
    let listed = request(&d, ROOT, "GET", "/v1/networks", None).1;
    assert!(
        !listed.contains("\"x\""),
        "a refused vnet was created: {listed}"
    );
    assert!(!d.log().contains("vnetacc0"), "{}", d.log());
}

#[test]
fn the_cli_says_which_group_a_refused_command_needs() {
    needs_root_and_curl!();
    let d = daemon();
    let out = cli(&d, ALICE_USER, &["net", "create", "x"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("you need to be in group {ADMINS} (or root)")),
        "{err}"
    );
    let out = cli(&d, ALICE_USER, &["net", "ls"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_uid_in_neither_group_may_only_read_the_version() {
    needs_root_and_curl!();
    let d = daemon();
    for path in ["/v1/networks", "/metrics", "/v1/networks/lab/ports"] {
        let (status, body) = request(&d, MALLORY_NOBODY, "GET", path, None);
        assert_eq!(status, 403, "{path}: {body}");
        assert!(
            body.contains(&format!("you are uid {MALLORY} with no role")),
            "{body}"
        );
        assert!(
            body.contains(&format!("needs the user role (group {USERS}")),
            "{body}"
        );
    }
    assert_eq!(
        request(&d, MALLORY_NOBODY, "GET", "/v1/version", None).0,
        200
    );
}

#[test]
fn the_admin_group_and_root_may_do_everything() {
    needs_root_and_curl!();
    let d = daemon();
    let spec = r#"{"name":"adm","subnet":"10.78.0.0/24","nat":{}}"#;
    let (status, body) = request(&d, ANN_ADMIN, "POST", "/v1/networks", Some(spec));
    assert_eq!(status, 201, "{body}");
    let forward = r#"{"host":"127.0.0.1:18081","guest":"10.78.0.10:80"}"#;
    let (status, body) = request(
        &d,
        ANN_ADMIN,
        "POST",
        "/v1/networks/adm/forwards",
        Some(forward),
    );
    assert_eq!(status, 201, "{body}");
    // The admin group as the primary group counts too.
    let primary = (ANN, ADMINS, &[][..]);
    let (status, body) = request(
        &d,
        primary,
        "DELETE",
        "/v1/networks/adm/forwards/127.0.0.1:18081",
        None,
    );
    assert_eq!(status, 204, "{body}");
    let (status, body) = request(&d, ROOT, "DELETE", "/v1/networks/adm", None);
    assert_eq!(status, 204, "{body}");
    let (status, body) = request(
        &d,
        ROOT,
        "POST",
        "/v1/networks/lab/forwards",
        Some(forward.replace("10.78", "10.77").as_str()),
    );
    assert_eq!(status, 201, "{body}");
}

#[test]
fn a_user_removes_their_own_vhost_user_port_but_not_anothers() {
    needs_root_and_curl!();
    let d = daemon();
    let add = |who, name: &str| {
        let spec = format!(r#"{{"kind":"vhost-user","name":"{name}"}}"#);
        let (status, body) = request(&d, who, "POST", "/v1/networks/lab/ports", Some(&spec));
        assert_eq!(status, 201, "{body}");
        let port: serde_json::Value = serde_json::from_str(&body).unwrap();
        port["id"].as_u64().unwrap()
    };
    let alices = add(ALICE_USER, "alice");
    let bobs = add(BOB_USER, "bob");
    let path = |id| format!("/v1/networks/lab/ports/{id}");

    let (status, body) = request(&d, BOB_USER, "DELETE", &path(alices), None);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("which you did not add"), "{body}");
    assert_eq!(
        request(&d, ALICE_USER, "DELETE", &path(alices), None).0,
        204
    );
    // Root removes anyone's.
    assert_eq!(request(&d, ROOT, "DELETE", &path(bobs), None).0, 204);

    // A VLAN is the admin's to give.
    let tagged = r#"{"kind":"vhost-user","name":"tagged","vlan":{"mode":"access","vlan":10}}"#;
    let (status, body) = request(
        &d,
        ALICE_USER,
        "POST",
        "/v1/networks/lab/ports",
        Some(tagged),
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("adding a port on a VLAN"), "{body}");
    // Ports added at start or by root are nobody's to remove but admins'.
    let roots = add(ROOT, "root");
    assert_eq!(request(&d, ALICE_USER, "DELETE", &path(roots), None).0, 403);
}

#[test]
fn the_sockets_belong_to_the_user_group() {
    needs_root_and_curl!();
    let d = daemon();
    let (status, body) = request(
        &d,
        ALICE_USER,
        "POST",
        "/v1/networks/lab/ports",
        Some(r#"{"kind":"vhost-user","name":"vm1"}"#),
    );
    assert_eq!(status, 201, "{body}");
    let control = std::fs::metadata(d.control_socket()).unwrap();
    assert_eq!(control.gid(), USERS);
    assert_eq!(
        control.mode() & 0o777,
        0o666,
        "anyone connects; roles decide"
    );
    let lab = d.net_dir("lab");
    for socket in [
        lab.join("stream.sock"),
        lab.join("dgram.sock"),
        lab.join("api.sock"),
        lab.join("vde/ctl"),
        lab.join("vhost-user/vm1.sock"),
    ] {
        let meta = std::fs::metadata(&socket)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", socket.display(), d.log()));
        assert_eq!(meta.gid(), USERS, "group of {}", socket.display());
        assert_eq!(meta.mode() & 0o777, 0o660, "mode of {}", socket.display());
    }
}

/// An unprivileged vnetd (the test bed's binary behind a wrapper that drops to `ANN`):
/// its own uid is admin, as before roles existed; other uids are not.
#[test]
fn an_unprivileged_vnetd_serves_its_own_uid_as_admin() {
    needs_root_and_curl!();
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("vnetd-as-ann");
    // The test bed passes --run-dir RUN --state-dir STATE first: hand them to ANN.
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nchmod 755 \"${{2%/*}}\" && chown -R {ANN}:{ANN} \"$2\" \"$4\" && \
             exec setpriv --reuid={ANN} --regid={ANN} --clear-groups {} \"$@\"\n",
            bin_path("vnetd").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = Daemon::builder()
        .binary(&wrapper)
        .config("[access]\nadmin_group = \"64210\"\n")
        .start();
    let own = (ANN, ANN, &[][..]);
    let (status, body) = request(&d, own, "POST", "/v1/networks", Some(r#"{"name":"mine"}"#));
    assert_eq!(status, 201, "{body}\n{}", d.log());
    let (status, body) = request(
        &d,
        BOB_USER,
        "POST",
        "/v1/networks",
        Some(r#"{"name":"bobs"}"#),
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains(&format!("(root, uid {ANN} or group {ADMINS})")),
        "{body}"
    );
    assert!(
        body.contains(&format!("you are uid {BOB} with no role")),
        "{body}"
    );
}
