//! The IQE guide's device rules, enforced by the signer itself: bootstrap, duplicate, delete,
//! enrol with the bootstrap certificate, re-enrol by meaning, revocation, and the
//! concurrent duplicate bootstrap.

mod common;

use std::sync::{Arc, Barrier};

use common::csrgen::{self, C, CN, O};
use common::*;
use hsm_est_proto::{DeviceStatus, ErrorCode, Operation, Request, Response};

fn device_status(app: &Appliance, cn: &str) -> Option<DeviceStatus> {
    match app
        .admin_client()
        .call(&Request::DeviceGet { cn: cn.into() })
        .unwrap()
    {
        Response::Device(d) => Some(d.status),
        Response::Error(e) if e.reason == "device.not_found" => None,
        other => panic!("{other:?}"),
    }
}

#[test]
fn device_lifecycle_follows_the_iqe_rules() {
    let mut app = Appliance::create("lifecycle", "ec-p256");
    app.start();
    let d = app.dir.clone();
    let subj = "/CN=test-pump-001/O=TestHospital/C=US";

    let first = issued(app.issue(
        Operation::Bootstrap,
        "iqe-bootstrap",
        &openssl_csr(&d, "b1", &["rsa:2048"], subj, &[]),
        &[],
    ));
    assert_eq!(
        device_status(&app, "test-pump-001"),
        Some(DeviceStatus::BootstrapOnly)
    );

    // The same CN again: 409 in HTTP terms.
    let again = openssl_csr(&d, "b2", &ec_p256(), subj, &[]);
    assert_eq!(
        refused(app.issue(Operation::Bootstrap, "iqe-bootstrap", &again, &[])),
        (ErrorCode::DeviceDuplicate, "device.exists".into())
    );

    // The operator deletes it (through the socket, audited); bootstrap works again.
    let out = ok(&app.estctl_operator(&[
        "device",
        "delete",
        "--config",
        app.config_arg(),
        "test-pump-001",
    ]));
    assert!(out.contains("deleted"), "{out}");
    assert_eq!(
        device_status(&app, "test-pump-001"),
        Some(DeviceStatus::Deleted)
    );
    let bootstrap = issued(app.issue(Operation::Bootstrap, "iqe-bootstrap", &again, &[]));
    assert_ne!(bootstrap, first);

    // Someone else's bootstrap certificate cannot enrol this device.
    let other = issued(app.issue(
        Operation::Bootstrap,
        "iqe-bootstrap",
        &openssl_csr(
            &d,
            "o1",
            &ec_p256(),
            "/CN=test-pump-002/O=TestHospital/C=US",
            &[],
        ),
        &[],
    ));
    let enroll_csr = openssl_csr(&d, "e1", &ec_p256(), subj, &[]);
    let (code, _) = refused(app.issue(Operation::Enroll, "iqe-pump", &enroll_csr, &other));
    assert_eq!(code, ErrorCode::ReenrollRefused);

    // The device's own bootstrap certificate enrols it.
    let enrolled = issued(app.issue(Operation::Enroll, "iqe-pump", &enroll_csr, &bootstrap));
    assert_eq!(
        device_status(&app, "test-pump-001"),
        Some(DeviceStatus::Enrolled)
    );

    // Enrolling an enrolled device by password: duplicate.
    let e2 = openssl_csr(&d, "e2", &ec_p256(), subj, &[]);
    assert_eq!(
        refused(app.issue(Operation::Enroll, "iqe-pump", &e2, &[])),
        (ErrorCode::DeviceDuplicate, "device.enrolled".into())
    );

    // Re-enrolment with the current certificate, a new key, the same names.
    let r1 = openssl_csr(&d, "r1", &ec_p384(), subj, &[]);
    let renewed = issued(app.issue(Operation::Reenroll, "iqe-pump", &r1, &enrolled));

    // The superseded certificate can no longer re-enrol: the renewal changed the key, so
    // the profile's default (`revoke_superseded: rekey`) revoked it.
    let r2 = openssl_csr(&d, "r2", &ec_p256(), subj, &[]);
    assert_eq!(
        refused(app.issue(Operation::Reenroll, "iqe-pump", &r2, &enrolled)),
        (ErrorCode::Revoked, "cert.revoked".into())
    );
    // A changed subject is refused: another O by the profile, which pins it.
    let changed = openssl_csr(
        &d,
        "r3",
        &ec_p256(),
        "/CN=test-pump-001/O=Other Hospital/C=US",
        &[],
    );
    assert_eq!(
        refused(app.issue(Operation::Reenroll, "iqe-pump", &changed, &renewed)),
        (ErrorCode::SubjectRejected, "name.pinned".into())
    );
    // Another device's certificate is refused.
    let r4 = openssl_csr(&d, "r4", &ec_p256(), subj, &[]);
    assert_eq!(
        refused(app.issue(Operation::Reenroll, "iqe-pump", &r4, &other)).0,
        ErrorCode::ReenrollRefused
    );
    // Without a certificate at all.
    assert_eq!(
        refused(app.issue(Operation::Reenroll, "iqe-pump", &r4, &[])),
        (ErrorCode::ReenrollRefused, "reenroll.no_cert".into())
    );

    // Same names as PrintableString and in other case: equal by meaning (RFC 5280 §7.1).
    let printable = csrgen::csr_printable(&[(CN, "test-pump-001"), (O, "TESTHOSPITAL"), (C, "US")]);
    let renewed = issued(app.issue(Operation::Reenroll, "iqe-pump", &printable, &renewed));

    // Revocation by the operator: the certificate and the device are revoked.
    let serial = hex::encode(
        hsm_est_pki::cert::parse_certificate(&renewed)
            .unwrap()
            .tbs_certificate
            .serial_number
            .as_bytes(),
    );
    ok(&app.estctl_operator(&[
        "revoke",
        "--config",
        app.config_arg(),
        "--serial",
        &serial,
        "--reason",
        "key-compromise",
    ]));
    assert_eq!(
        device_status(&app, "test-pump-001"),
        Some(DeviceStatus::Revoked)
    );
    let r5 = openssl_csr(&d, "r5", &ec_p256(), subj, &[]);
    assert_eq!(
        refused(app.issue(Operation::Reenroll, "iqe-pump", &r5, &renewed)),
        (ErrorCode::Revoked, "cert.revoked".into())
    );
    assert_eq!(
        refused(app.issue(Operation::Enroll, "iqe-pump", &r5, &[])),
        (ErrorCode::Revoked, "device.revoked".into())
    );
    // Root is not an operator here: the operator socket refuses it.
    let out = app.estctl(&["revoke", "--config", app.config_arg(), "--serial", &serial]);
    assert!(!out.status.success());

    // The operator's listing shows both devices.
    let list = ok(&app.estctl_operator(&["device", "list", "--config", app.config_arg()]));
    assert!(
        list.contains("test-pump-001") && list.contains("revoked"),
        "{list}"
    );
    assert!(
        list.contains("test-pump-002") && list.contains("bootstrap_only"),
        "{list}"
    );
    let audit = std::fs::read_to_string(app.path("audit.jsonl")).unwrap();
    assert!(audit.contains("\"event\":\"device_deleted\""));
    assert!(audit.contains("\"event\":\"revoked\""));
}

#[test]
fn fifty_concurrent_bootstraps_of_one_cn_issue_exactly_one_certificate() {
    let mut app = Appliance::create("race", "ec-p256");
    app.start();
    let csrs: Vec<Vec<u8>> = (0..50)
        .map(|_| csrgen::csr(&[(CN, "icu-pump-042")]))
        .collect();
    let barrier = Arc::new(Barrier::new(csrs.len()));
    let socket = app.socket.clone();
    let handles: Vec<_> = csrs
        .into_iter()
        .map(|csr| {
            let barrier = Arc::clone(&barrier);
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut client = hsm_est_proto::client::SignerClient::connect(&socket).unwrap();
                barrier.wait();
                client
                    .call(&issue_request(
                        Operation::Bootstrap,
                        "iqe-bootstrap",
                        &csr,
                        &[],
                    ))
                    .unwrap()
            })
        })
        .collect();
    let mut issued_count = 0;
    let mut duplicates = 0;
    for h in handles {
        match h.join().unwrap() {
            Response::Issued { .. } => issued_count += 1,
            Response::Error(e) if e.code == ErrorCode::DeviceDuplicate => duplicates += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!((issued_count, duplicates), (1, 49));
    assert_eq!(app.ledger_certificate_count(), 1);
    let audit = std::fs::read_to_string(app.path("audit.jsonl")).unwrap();
    assert_eq!(audit.matches("\"event\":\"issued\"").count(), 1);
    assert_eq!(audit.matches("\"event\":\"rejected\"").count(), 49);
}

#[test]
fn a_bootstrap_retry_with_the_same_key_gets_the_same_certificate() {
    let mut app = Appliance::create("retry", "ec-p256");
    app.start();
    let key = csrgen::P256Key::generate();
    let csr = |k: &csrgen::P256Key| csrgen::csr_for_key(k, "ward-b-pump-007");
    // The first answer is lost on the way (the frontend died); the pump asks again with a
    // new CSR for the same key and gets the certificate that was issued.
    let first = issued(app.issue(Operation::Bootstrap, "iqe-bootstrap", &csr(&key), &[]));
    let again = issued(app.issue(Operation::Bootstrap, "iqe-bootstrap", &csr(&key), &[]));
    assert_eq!(first, again);
    assert_eq!(app.ledger_certificate_count(), 1);
    let audit = std::fs::read_to_string(app.path("audit.jsonl")).unwrap();
    assert_eq!(audit.matches("\"event\":\"redelivered\"").count(), 1);
    assert_eq!(audit.matches("\"event\":\"issued\"").count(), 1);

    // Another key for the same name is still a duplicate.
    let other = csrgen::P256Key::generate();
    assert_eq!(
        refused(app.issue(Operation::Bootstrap, "iqe-bootstrap", &csr(&other), &[])),
        (ErrorCode::DeviceDuplicate, "device.exists".into())
    );
    // Once enrolled, a bootstrap is a duplicate even with the same key.
    issued(app.issue(Operation::Enroll, "iqe-pump", &csr(&key), &first));
    assert_eq!(
        refused(app.issue(Operation::Bootstrap, "iqe-bootstrap", &csr(&key), &[])),
        (ErrorCode::DeviceDuplicate, "device.exists".into())
    );
    assert_eq!(app.ledger_certificate_count(), 2);
}

/// The overview's counts from the signer: devices by status, certificates issued in the
/// last day and expiring within 30 days, refusals by reason; `estctl stats` prints them.
#[test]
fn stats_count_devices_certificates_and_refusals() {
    let mut app = Appliance::create("stats", "ec-p256");
    app.start();
    for cn in ["stats-pump-1", "stats-pump-2", "stats-pump-3"] {
        issued(app.issue(
            Operation::Bootstrap,
            "iqe-bootstrap",
            &csrgen::csr(&[(CN, cn)]),
            &[],
        ));
    }
    // test-quota issues 30-day certificates: expiring within 30 days.
    issued(app.issue(
        Operation::Bootstrap,
        "test-quota",
        &csrgen::csr(&[(CN, "stats-pump-4")]),
        &[],
    ));
    for _ in 0..2 {
        refused(app.issue(
            Operation::Bootstrap,
            "iqe-bootstrap",
            &csrgen::csr(&[(CN, "stats-pump-1")]),
            &[],
        ));
    }
    let stats = match app.admin_client().call(&Request::Stats).unwrap() {
        Response::Stats(s) => s,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        stats.devices_by_status,
        vec![("bootstrap_only".to_string(), 4)]
    );
    assert_eq!(stats.issued_last_24h, 4);
    assert_eq!(stats.expiring_within_30_days, 1);
    assert_eq!(
        stats.refusals_by_reason,
        vec![("device.exists".to_string(), 2)]
    );
    assert!(stats.decisions >= 6 && stats.commits >= 1);
    let out = ok(&app.estctl_operator(&["stats", "--config", app.config_arg()]));
    assert!(
        out.contains("bootstrap_only") && out.contains("device.exists"),
        "{out}"
    );
}
