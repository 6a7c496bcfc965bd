//! What a compromised frontend can still do within policy is bounded: per-profile hourly
//! quotas of new devices and of re-keys, and profiles that renew only with the same key.
//! Each refusal has its reason code and is audited.

mod common;

use common::csrgen;
use common::*;
use hsm_est_proto::{ErrorCode, Operation};

#[test]
fn the_quota_plus_first_new_device_and_rekey_are_refused_and_audited() {
    let mut app = Appliance::create("quotas", "ec-p256");
    app.start();
    // New devices: 3 per hour.
    let keys: Vec<csrgen::P256Key> = (0..4).map(|_| csrgen::P256Key::generate()).collect();
    let mut certs = Vec::new();
    for (i, key) in keys.iter().take(3).enumerate() {
        certs.push(issued(app.issue(
            Operation::Bootstrap,
            "test-quota",
            &csrgen::csr_for_key(key, &format!("quota-pump-{i}")),
            &[],
        )));
    }
    assert_eq!(
        refused(app.issue(
            Operation::Bootstrap,
            "test-quota",
            &csrgen::csr_for_key(&keys[3], "quota-pump-3"),
            &[],
        )),
        (ErrorCode::QuotaExceeded, "quota.new_devices".into())
    );

    // Renewals with the same key are not re-keys and are not counted.
    for _ in 0..3 {
        certs[0] = issued(app.issue(
            Operation::Reenroll,
            "test-quota",
            &csrgen::csr_for_key(&keys[0], "quota-pump-0"),
            &certs[0],
        ));
    }
    // Re-keys: 2 per hour; the third is refused.
    let mut current = certs[1].clone();
    for _ in 0..2 {
        let new_key = csrgen::P256Key::generate();
        current = issued(app.issue(
            Operation::Reenroll,
            "test-quota",
            &csrgen::csr_for_key(&new_key, "quota-pump-1"),
            &current,
        ));
    }
    let new_key = csrgen::P256Key::generate();
    assert_eq!(
        refused(app.issue(
            Operation::Reenroll,
            "test-quota",
            &csrgen::csr_for_key(&new_key, "quota-pump-1"),
            &current,
        )),
        (ErrorCode::QuotaExceeded, "quota.rekeys".into())
    );
    let audit = std::fs::read_to_string(app.path("audit.jsonl")).unwrap();
    for reason in ["quota.new_devices", "quota.rekeys"] {
        assert!(
            audit.lines().any(|l| l.contains("\"event\":\"rejected\"")
                && l.contains(&format!("\"reason\":\"{reason}\""))),
            "{reason} not audited"
        );
    }
    assert!(
        app.signer_log().contains("warn est-signer"),
        "{}",
        app.signer_log()
    );
    // 3 bootstraps + 3 same-key renewals + 2 re-keys.
    assert_eq!(app.ledger_certificate_count(), 8);
}

#[test]
fn a_same_key_only_profile_refuses_a_new_key_on_renewal() {
    let mut app = Appliance::create("same-key", "ec-p256");
    app.start();
    let key = csrgen::P256Key::generate();
    let cert = issued(app.issue(
        Operation::Bootstrap,
        "test-same-key",
        &csrgen::csr_for_key(&key, "fixed-key-pump"),
        &[],
    ));
    let other = csrgen::P256Key::generate();
    assert_eq!(
        refused(app.issue(
            Operation::Reenroll,
            "test-same-key",
            &csrgen::csr_for_key(&other, "fixed-key-pump"),
            &cert,
        )),
        (ErrorCode::ReenrollRefused, "reenroll.rekey".into())
    );
    issued(app.issue(
        Operation::Reenroll,
        "test-same-key",
        &csrgen::csr_for_key(&key, "fixed-key-pump"),
        &cert,
    ));
}
