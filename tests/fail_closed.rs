//! Fail closed: when the audit log cannot be written (a full disk, here a tiny tmpfs), no
//! certificate leaves the signer, the client gets the "unavailable" answer (HTTP 503 later),
//! nothing is half-recorded, and issuance resumes by itself when space returns.

mod common;

use std::process::Command;

use common::csrgen::{self, CN};
use common::*;
use hsm_est_proto::{ErrorCode, Operation, Response};
use hsm_est_signer::ledger::Ledger;

/// Unmounts the small filesystem even when the test fails.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn full_audit_disk_releases_no_certificate_and_recovers() {
    let mut app = Appliance::create("diskfull", "ec-p256");
    let small = app.path("small");
    std::fs::create_dir_all(&small).unwrap();
    ok(&run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16k", "tmpfs"])
        .arg(&small)));
    let _mount = Mount(small.clone());
    std::fs::copy(app.path("audit.jsonl"), small.join("audit.jsonl")).unwrap();
    app.edit_config("path: audit.jsonl", "path: small/audit.jsonl");
    app.start();

    let mut received = Vec::new();
    let mut refusals = 0;
    for i in 0..200 {
        let csr = csrgen::csr(&[(CN, &format!("full-pump-{i}"))]);
        match app.issue(Operation::Bootstrap, "iqe-bootstrap", &csr, &[]) {
            Response::Issued { serial, cert_der } => {
                assert_eq!(refusals, 0, "issued after the disk filled up");
                received.push((serial, cert_der));
            }
            Response::Error(e) => {
                assert_eq!(
                    (e.code, e.reason.as_str()),
                    (ErrorCode::Unavailable, "signer.unavailable")
                );
                refusals += 1;
                if refusals == 5 {
                    break;
                }
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(
        !received.is_empty() && refusals == 5,
        "{} issued, {refusals} refused",
        received.len()
    );
    // Exactly what clients received is on record; nothing else.
    assert_eq!(app.ledger_certificate_count(), received.len() as i64);
    let ledger = app.ledger();
    for (serial, der) in &received {
        assert_eq!(
            &ledger.certificate(serial).unwrap().unwrap().record.der,
            der
        );
    }
    let log = app.signer_log();
    assert!(log.contains("audit log i/o error"), "{log}");

    // Space returns: issuance resumes without a restart, and the chain is intact.
    ok(&run(Command::new("mount")
        .args(["-o", "remount,size=4m"])
        .arg(&small)));
    let csr = csrgen::csr(&[(CN, "full-pump-after")]);
    issued(app.issue(Operation::Bootstrap, "iqe-bootstrap", &csr, &[]));
    let out = ok(&app.estctl(&["audit", "verify", "--config", app.config_arg()]));
    assert!(out.contains("audit log ok"), "{out}");
    app.kill9();
}

#[test]
fn a_failed_ledger_commit_is_named_in_the_audit_log_and_verify_explains_it() {
    let mut app = Appliance::create("ledgerfull", "ec-p256");
    let small = app.path("small");
    std::fs::create_dir_all(&small).unwrap();
    ok(&run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=320k", "tmpfs"])
        .arg(&small)));
    let _mount = Mount(small.clone());
    if app.path("ledger.sqlite").exists() {
        std::fs::copy(app.path("ledger.sqlite"), small.join("ledger.sqlite")).unwrap();
    }
    app.edit_config("path: ledger.sqlite", "path: small/ledger.sqlite");
    app.start();

    let mut received = Vec::new();
    let mut refusals = 0;
    for i in 0..2000 {
        let csr = csrgen::csr(&[(CN, &format!("ledger-pump-{i}"))]);
        match app.issue(Operation::Bootstrap, "iqe-bootstrap", &csr, &[]) {
            Response::Issued { serial, .. } => {
                assert_eq!(refusals, 0, "issued after the ledger filled up");
                received.push(serial);
            }
            Response::Error(e) => {
                assert_eq!(
                    (e.code, e.reason.as_str()),
                    (ErrorCode::Unavailable, "signer.unavailable")
                );
                refusals += 1;
                if refusals == 3 {
                    break;
                }
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(
        !received.is_empty() && refusals == 3,
        "{} issued, {refusals} refused",
        received.len()
    );
    // The refused issuances have audit records (written first) and a commit_failed record
    // naming their serials; none of those serials reached a client or the ledger.
    let audit = std::fs::read_to_string(app.path("audit.jsonl")).unwrap();
    let failed: Vec<&str> = audit
        .lines()
        .filter(|l| l.contains("\"event\":\"commit_failed\""))
        .collect();
    assert!(!failed.is_empty(), "{audit}");
    assert!(
        app.signer_log().contains("commit of"),
        "{}",
        app.signer_log()
    );

    // Space returns: issuance resumes, and verify explains every serial.
    ok(&run(Command::new("mount")
        .args(["-o", "remount,size=8m"])
        .arg(&small)));
    let csr = csrgen::csr(&[(CN, "ledger-pump-after")]);
    issued(app.issue(Operation::Bootstrap, "iqe-bootstrap", &csr, &[]));
    let out = ok(&app.estctl(&["audit", "verify", "--config", app.config_arg()]));
    assert!(out.contains("audit log ok"), "{out}");
    assert!(out.contains("ledger agrees"), "{out}");
    assert!(
        !out.contains(" 0 issued serial(s) never committed"),
        "{out}"
    );
    let count: i64 = rusqlite::Connection::open(small.join("ledger.sqlite"))
        .unwrap()
        .query_row("SELECT COUNT(*) FROM certificates", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, received.len() as i64 + 1);

    // An issued record whose certificate is missing from the ledger, with no commit_failed
    // record to explain it, is reported.
    app.kill9();
    let conn = rusqlite::Connection::open(small.join("ledger.sqlite")).unwrap();
    conn.execute("PRAGMA foreign_keys = OFF", []).unwrap();
    conn.execute(
        "DELETE FROM certificates WHERE serial = ?1",
        [received[0].as_slice()],
    )
    .unwrap();
    drop(conn);
    let out = app.estctl(&["audit", "verify", "--config", app.config_arg()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&hex::encode(&received[0])) && err.contains("neither in the ledger"),
        "{err}"
    );
}
