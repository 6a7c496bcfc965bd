//! HTTP Basic users managed with estctl while the appliance runs: the frontend sees new and
//! deleted users at once (the verification cache is dropped when the file changes), weak
//! passwords are refused, and a user limited to labels and operations stays within them.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::demo::*;
use common::{estctl_bin, ok};

fn add_user(demo: &Demo, name: &str, password: &str, extra: &[&str]) -> std::process::Output {
    let mut child = Command::new(estctl_bin())
        .args(["add-user", "--config"])
        .arg(demo.path("frontend.yaml"))
        .arg("--password-stdin")
        .args(extra)
        .arg(name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn users_are_managed_live_and_restricted() {
    let demo = Demo::start("users", "der");
    let cfg = demo.path("frontend.yaml");
    let cfg = cfg.to_str().unwrap();
    let password = "a-long-enough-gateway-password";

    // Too short: refused, nothing written.
    let out = add_user(&demo, "iqe-site1", "short", &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16"));

    ok(&add_user(&demo, "iqe-site1", password, &[]));
    let listed = ok(&demo.estctl(&["list-users", "--config", cfg]));
    assert!(
        listed.contains("iqe-site1") && listed.contains("demo"),
        "{listed}"
    );
    let users_file = std::fs::read_to_string(demo.path("users.yaml")).unwrap();
    assert!(users_file.contains("$argon2id$") && !users_file.contains(password));

    // The running frontend accepts the new user at once.
    let (_, csr) = demo.csr("u1", "/CN=user-pump-1");
    let data = format!("@{}", csr.display());
    let auth = format!("iqe-site1:{password}");
    assert_eq!(
        demo.curl(&["-u", &auth, "--data-binary", &data], "bootstrap")
            .status,
        200
    );

    // Deleted: refused at once, although the login was cached.
    ok(&demo.estctl(&["delete-user", "--config", cfg, "iqe-site1"]));
    let (_, csr2) = demo.csr("u2", "/CN=user-pump-2");
    let data2 = format!("@{}", csr2.display());
    assert_eq!(
        demo.curl(&["-u", &auth, "--data-binary", &data2], "bootstrap")
            .status,
        401
    );

    // A user limited to the iqe label and to bootstrap.
    ok(&add_user(
        &demo,
        "iqe-limited",
        password,
        &["--label", "iqe", "--operation", "bootstrap"],
    ));
    let limited = format!("iqe-limited:{password}");
    assert_eq!(
        demo.curl(&["-u", &limited, "--data-binary", &data2], "bootstrap")
            .status,
        403,
        "default route is not the user's label"
    );
    assert_eq!(
        demo.curl(
            &["-u", &limited, "--data-binary", &data2],
            "iqe/simpleenroll"
        )
        .status,
        403,
        "simpleenroll is not the user's operation"
    );
    assert_eq!(
        demo.curl(&["-u", &limited, "--data-binary", &data2], "iqe/bootstrap")
            .status,
        200
    );

    // Chunked request bodies (the Go client sends them) are accepted.
    let (_, csr3) = demo.csr("u3", "/CN=user-pump-3");
    let r = demo.curl(
        &[
            "--http1.1",
            "-u",
            &limited,
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &format!("@{}", csr3.display()),
        ],
        "iqe/bootstrap",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!demo.frontend_log().contains(password));
}

#[test]
fn the_users_file_is_never_saved_through_a_planted_temporary_file() {
    use std::os::unix::fs::PermissionsExt;
    let demo = Demo::start("users-tmp", "der");
    let password = "a-long-enough-gateway-password";
    let users = demo.path("users.yaml");
    let tmp = demo.path(".users.yaml.tmp");
    let before = std::fs::read_to_string(&users).unwrap();

    // A symlink at the temporary name, pointing where the attacker wants the file.
    let victim = demo.path("victim");
    std::fs::write(&victim, "untouched\n").unwrap();
    std::os::unix::fs::symlink(&victim, &tmp).unwrap();
    let out = add_user(&demo, "iqe-site2", password, &[]);
    assert!(!out.status.success(), "saved through a symlink");
    assert!(String::from_utf8_lossy(&out.stderr).contains(".users.yaml.tmp"));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched\n");
    assert_eq!(std::fs::read_to_string(&users).unwrap(), before);
    std::fs::remove_file(&tmp).unwrap();

    // A pre-created temporary file (say, world-readable, to collect the hashes).
    std::fs::write(&tmp, "").unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = add_user(&demo, "iqe-site2", password, &[]);
    assert!(!out.status.success(), "saved through a pre-created file");
    assert_eq!(std::fs::read_to_string(&tmp).unwrap(), "");
    assert_eq!(std::fs::read_to_string(&users).unwrap(), before);
    std::fs::remove_file(&tmp).unwrap();

    // With the name free, the save works, leaves no temporary file and keeps mode 0640.
    ok(&add_user(&demo, "iqe-site2", password, &[]));
    assert!(std::fs::read_to_string(&users)
        .unwrap()
        .contains("iqe-site2"));
    assert!(!tmp.exists());
    let mode = std::fs::metadata(&users).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
}
