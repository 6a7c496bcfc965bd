//! Deletion and revocation keep their meaning, against the real signer and token: deleting
//! a device revokes every unexpired certificate it holds (unless the operator keeps them),
//! revoking a device revokes all of them, a re-issue supersedes the previous certificate
//! and, where the profile says so, revokes it. The ledger is read directly to see what is
//! valid and what is not.

mod common;

use common::csrgen;
use common::*;
use hsm_est_proto::{DeviceStatus, ErrorCode, Operation, Request, Response};
use hsm_est_signer::ledger::{Ledger, StoredCertificate};

fn serial_of(der: &[u8]) -> Vec<u8> {
    hsm_est_pki::cert::parse_certificate(der)
        .unwrap()
        .tbs_certificate
        .serial_number
        .as_bytes()
        .to_vec()
}

fn stored(app: &Appliance, der: &[u8]) -> StoredCertificate {
    app.ledger()
        .certificate(&serial_of(der))
        .unwrap()
        .expect("on record")
}

fn device(app: &Appliance, cn: &str) -> hsm_est_proto::DeviceInfo {
    match app
        .admin_client()
        .call(&Request::DeviceGet { cn: cn.into() })
        .unwrap()
    {
        Response::Device(d) => d,
        other => panic!("{other:?}"),
    }
}

/// A pump that bootstrapped, enrolled and renewed, always with the same key: three
/// unexpired certificates, the first two superseded but (same key) not revoked.
fn pump_with_three_certificates(app: &Appliance, cn: &str) -> [Vec<u8>; 3] {
    let key = csrgen::P256Key::generate();
    let csr = csrgen::csr_for_key(&key, cn);
    let boot = issued(app.issue(Operation::Bootstrap, "iqe-bootstrap", &csr, &[]));
    let enrolled = issued(app.issue(Operation::Enroll, "iqe-pump", &csr, &boot));
    let renewed = issued(app.issue(Operation::Reenroll, "iqe-pump", &csr, &enrolled));
    assert_eq!(stored(app, &boot).superseded_by, Some(serial_of(&enrolled)));
    assert_eq!(
        stored(app, &enrolled).superseded_by,
        Some(serial_of(&renewed))
    );
    for der in [&boot, &enrolled, &renewed] {
        assert!(stored(app, der).revoked_at_ms.is_none());
    }
    [boot, enrolled, renewed]
}

#[test]
fn deleting_a_device_revokes_its_certificates_and_keeps_its_history() {
    let mut app = Appliance::create("revoke-delete", "ec-p256");
    app.start();
    let cfg = app.config_arg().to_string();
    let certs = pump_with_three_certificates(&app, "ward-b-pump-007");
    let first = device(&app, "ward-b-pump-007").first_enrolled_ms;

    let out = ok(&app.estctl_operator(&["device", "delete", "--config", &cfg, "ward-b-pump-007"]));
    assert!(out.contains("3 certificate(s) revoked"), "{out}");
    for der in &certs {
        let c = stored(&app, der);
        assert!(c.revoked_at_ms.is_some(), "still valid after delete");
        assert_eq!(c.revocation_reason, Some(5), "cessationOfOperation");
    }
    // `device show` lists its history: all three certificates, each revoked.
    let show = ok(&app.estctl_operator(&["device", "show", "--config", &cfg, "ward-b-pump-007"]));
    for der in &certs {
        let line = show
            .lines()
            .find(|l| l.starts_with(&hex::encode(serial_of(der))))
            .unwrap_or_else(|| panic!("certificate missing from {show}"));
        assert!(
            line.contains("revoked") && line.contains("(reason 5)"),
            "{line}"
        );
    }
    // The device's row stays, as history.
    let d = device(&app, "ward-b-pump-007");
    assert_eq!(d.status, DeviceStatus::Deleted);
    assert_eq!(d.first_enrolled_ms, first);
    assert_eq!(d.current_serial, serial_of(&certs[2]));
    // It may bootstrap again, with a new key, and starts a new life.
    let fresh = csrgen::csr_for_key(&csrgen::P256Key::generate(), "ward-b-pump-007");
    issued(app.issue(Operation::Bootstrap, "iqe-bootstrap", &fresh, &[]));
    let d = device(&app, "ward-b-pump-007");
    assert_eq!(d.status, DeviceStatus::BootstrapOnly);
    assert!(d.first_enrolled_ms >= first);
    // The old certificates renew nothing.
    assert_eq!(
        refused(app.issue(Operation::Reenroll, "iqe-pump", &fresh, &certs[2])).0,
        ErrorCode::Revoked
    );
    let audit = std::fs::read_to_string(app.path("audit.jsonl")).unwrap();
    let deleted = audit
        .lines()
        .find(|l| l.contains("\"event\":\"device_deleted\""))
        .expect("audited");
    assert!(deleted.contains("\"revoked\":3"), "{deleted}");
    assert!(deleted.contains("\"keep_certificates\":false"), "{deleted}");
    assert_eq!(
        audit
            .lines()
            .filter(|l| l.contains("\"event\":\"revoked\"") && l.contains("\"reason_code\":5"))
            .count(),
        3
    );
}

#[test]
fn keep_certificates_deletes_without_revoking() {
    let mut app = Appliance::create("revoke-keep", "ec-p256");
    app.start();
    let cfg = app.config_arg().to_string();
    let certs = pump_with_three_certificates(&app, "icu-pump-100");
    let out = ok(&app.estctl_operator(&[
        "device",
        "delete",
        "--config",
        &cfg,
        "--keep-certificates",
        "icu-pump-100",
    ]));
    assert!(out.contains("0 certificate(s) revoked"), "{out}");
    for der in &certs {
        assert!(stored(&app, der).revoked_at_ms.is_none());
    }
    assert_eq!(device(&app, "icu-pump-100").status, DeviceStatus::Deleted);
    // Deleting it again finds nothing to delete.
    let again = app.estctl_operator(&["device", "delete", "--config", &cfg, "icu-pump-100"]);
    assert!(!again.status.success());
}

#[test]
fn revoking_a_device_revokes_all_its_unexpired_certificates() {
    let mut app = Appliance::create("revoke-device", "ec-p256");
    app.start();
    let cfg = app.config_arg().to_string();
    let certs = pump_with_three_certificates(&app, "or-pump-003");
    // An older, superseded certificate alone: only that one.
    let out = ok(&app.estctl_operator(&[
        "revoke",
        "--config",
        &cfg,
        "--serial",
        &hex::encode(serial_of(&certs[0])),
        "--reason",
        "superseded",
    ]));
    assert!(out.contains("revoked"), "{out}");
    assert!(stored(&app, &certs[1]).revoked_at_ms.is_none());
    assert_eq!(device(&app, "or-pump-003").status, DeviceStatus::Enrolled);
    // The current certificate: the device and every unexpired certificate it holds.
    let out = ok(&app.estctl_operator(&[
        "revoke",
        "--config",
        &cfg,
        "--serial",
        &hex::encode(serial_of(&certs[2])),
        "--reason",
        "key-compromise",
    ]));
    assert!(out.contains("all 2 of its unexpired certificates"), "{out}");
    assert_eq!(stored(&app, &certs[0]).revocation_reason, Some(4));
    for der in &certs[1..] {
        assert_eq!(stored(&app, der).revocation_reason, Some(1));
    }
    assert_eq!(device(&app, "or-pump-003").status, DeviceStatus::Revoked);
    // `device revoke` on a device with nothing left to revoke says so.
    let out = app.estctl_operator(&["device", "revoke", "--config", &cfg, "or-pump-003"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cert.already_revoked"));

    // `device revoke` by name does the same for another pump.
    let other = pump_with_three_certificates(&app, "or-pump-004");
    let out = ok(&app.estctl_operator(&[
        "device",
        "revoke",
        "--config",
        &cfg,
        "--reason",
        "cessation-of-operation",
        "or-pump-004",
    ]));
    assert!(out.contains("3 certificate(s) revoked"), "{out}");
    for der in &other {
        assert_eq!(stored(&app, der).revocation_reason, Some(5));
    }
}

#[test]
fn a_rekey_revokes_the_certificate_it_supersedes() {
    let mut app = Appliance::create("revoke-superseded", "ec-p256");
    app.start();
    // iqe-pump keeps the default, `revoke_superseded: rekey`: enrolling with a key other
    // than the bootstrap certificate's revokes the bootstrap certificate.
    let boot = issued(app.issue(
        Operation::Bootstrap,
        "iqe-bootstrap",
        &csrgen::csr_for_key(&csrgen::P256Key::generate(), "ward-d-pump-001"),
        &[],
    ));
    let enrolled = issued(app.issue(
        Operation::Enroll,
        "iqe-pump",
        &csrgen::csr_for_key(&csrgen::P256Key::generate(), "ward-d-pump-001"),
        &boot,
    ));
    let old = stored(&app, &boot);
    assert_eq!(old.superseded_by, Some(serial_of(&enrolled)));
    assert_eq!(old.revocation_reason, Some(4), "superseded");
    // Its history, by key over the admin socket: the bootstrap certificate (revoked,
    // superseded) and the current one.
    match app
        .admin_client()
        .call(&Request::DeviceCertificates {
            cn: "ward-d-pump-001".into(),
            after_serial: vec![],
            limit: 1,
        })
        .unwrap()
    {
        Response::Certificates { certificates, more } => {
            assert_eq!(certificates.len(), 1);
            assert!(more);
        }
        other => panic!("{other:?}"),
    }
    assert!(stored(&app, &enrolled).revoked_at_ms.is_none());
    assert_eq!(
        device(&app, "ward-d-pump-001").status,
        DeviceStatus::Enrolled
    );

    // test-same-key says `always`: even a same-key renewal revokes what it replaces.
    let key = csrgen::P256Key::generate();
    let csr = csrgen::csr_for_key(&key, "ward-d-pump-002");
    let first = issued(app.issue(Operation::Bootstrap, "test-same-key", &csr, &[]));
    let second = issued(app.issue(Operation::Reenroll, "test-same-key", &csr, &first));
    assert_eq!(stored(&app, &first).revocation_reason, Some(4));
    assert!(stored(&app, &second).revoked_at_ms.is_none());
    let audit = std::fs::read_to_string(app.path("audit.jsonl")).unwrap();
    let line = audit
        .lines()
        .find(|l| {
            l.contains("\"event\":\"revoked\"") && l.contains(&hex::encode(serial_of(&first)))
        })
        .expect("the superseded revocation is audited");
    assert!(line.contains("revoke_superseded"), "{line}");
    assert!(audit.contains(&format!(
        "\"supersedes\":\"{}\"",
        hex::encode(serial_of(&first))
    )));
}
