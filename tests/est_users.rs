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
