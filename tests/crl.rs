//! CRLs signed in the token, against the real signer and a real SoftHSM token: a revoked
//! certificate's serial and reason are in the next CRL, `openssl verify -crl_check` fails
//! for it and passes for a good one, pkilint's `lint_crl` (PKIX) finds nothing at WARNING
//! or above, the CRL number grows with every CRL and is kept in the ledger across a
//! restart, the configured file is replaced whole, and each CRL is in the audit log.

mod common;

use std::process::Command;

use common::csrgen;
use common::*;
use hsm_est_proto::Operation;

fn serial_hex(der: &[u8]) -> String {
    hex::encode(
        hsm_est_pki::cert::parse_certificate(der)
            .unwrap()
            .tbs_certificate
            .serial_number
            .as_bytes(),
    )
}

#[test]
fn revoked_certificates_are_in_a_signed_crl_that_openssl_and_pkilint_accept() {
    let mut app = Appliance::create("crl", "ec-p256");
    let signer_yaml = app.path("signer.yaml");
    let text = std::fs::read_to_string(&signer_yaml).unwrap();
    std::fs::write(
        &signer_yaml,
        format!("{text}\ncrl:\n  file: published.crl\n  validity_hours: 24\n"),
    )
    .unwrap();
    app.start();
    let boot = |cn: &str| {
        let key = csrgen::P256Key::generate();
        issued(app.issue(
            Operation::Bootstrap,
            "iqe-bootstrap",
            &csrgen::csr_for_key(&key, cn),
            &[],
        ))
    };
    let (good, bad) = (boot("crl-pump-good"), boot("crl-pump-stolen"));
    let cfg = app.config_arg().to_string();
    ok(&app.estctl_operator(&[
        "revoke",
        "--config",
        &cfg,
        "--serial",
        &serial_hex(&bad),
        "--reason",
        "key-compromise",
    ]));

    // estctl runs as the operator's uid: give it a directory it may write.
    let out_dir = app.path("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    std::fs::set_permissions(
        &out_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let crl_pem = out_dir.join("crl.pem");
    let shown = ok(&app.estctl_operator(&[
        "crl",
        "generate",
        "--config",
        &cfg,
        "--out",
        crl_pem.to_str().unwrap(),
    ]));
    assert!(shown.contains("CRL number 1"), "{shown}");
    assert!(shown.contains("1 revoked certificate(s)"), "{shown}");
    assert!(shown.contains(&serial_hex(&bad)), "{shown}");
    assert!(shown.contains("KeyCompromise"), "{shown}");
    assert!(!shown.contains(&serial_hex(&good)), "{shown}");

    // openssl reads it: the reason, the number, and the verdicts.
    let text = ok(&run(Command::new("openssl")
        .args(["crl", "-noout", "-text", "-in"])
        .arg(&crl_pem)));
    assert!(text.contains("Key Compromise"), "{text}");
    assert!(text.contains("X509v3 CRL Number"), "{text}");
    assert!(text.contains("X509v3 Authority Key Identifier"), "{text}");
    let verify = |der: &[u8], name: &str| {
        let pem = write_cert_pem(&app.path(""), name, der);
        run(Command::new("openssl")
            .args(["verify", "-crl_check", "-CAfile"])
            .arg(app.ca_pem())
            .arg("-CRLfile")
            .arg(&crl_pem)
            .arg(pem))
    };
    let good_verdict = verify(&good, "good.pem");
    assert!(good_verdict.status.success(), "{good_verdict:?}");
    let bad_verdict = verify(&bad, "bad.pem");
    assert!(!bad_verdict.status.success());
    let said = String::from_utf8_lossy(&bad_verdict.stdout).to_string()
        + &String::from_utf8_lossy(&bad_verdict.stderr);
    assert!(said.contains("certificate revoked"), "{said}");

    // pkilint: nothing at WARNING or above.
    ok(&run(pkilint("lint_crl")
        .args(["lint", "-t", "CRL", "-p", "PKIX", "-s", "WARNING"])
        .arg(&crl_pem)));

    // The published file is the same CRL (DER), replaced whole by the next one.
    let published = app.path("published.crl");
    assert_eq!(
        hsm_est_pki::crl::crl_number(&std::fs::read(&published).unwrap()),
        Some(1)
    );
    ok(&app.estctl_operator(&["crl", "generate", "--config", &cfg]));
    assert_eq!(
        hsm_est_pki::crl::crl_number(&std::fs::read(&published).unwrap()),
        Some(2)
    );
    // The number survives a restart: it is in the ledger, not in memory.
    app.stop();
    app.start();
    let shown = ok(&app.estctl_operator(&["crl", "generate", "--config", &cfg]));
    assert!(shown.contains("CRL number 3"), "{shown}");
    let shown = ok(&app.estctl_operator(&["crl", "show", "--config", &cfg]));
    assert!(
        shown.contains("CRL number 3") && shown.contains("1 revoked certificate(s)"),
        "{shown}"
    );
    let audit = std::fs::read_to_string(app.path("audit.jsonl")).unwrap();
    for n in 1..=3 {
        assert!(
            audit.lines().any(|l| l.contains("\"event\":\"crl_issued\"")
                && l.contains(&format!("\"number\":{n},"))),
            "no crl_issued record for CRL {n}:\n{audit}"
        );
    }
    ok(&app.estctl(&["audit", "verify", "--config", &cfg]));
}
