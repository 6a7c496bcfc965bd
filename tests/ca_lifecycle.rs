//! The CA as an intermediate under a hospital's existing root (`estctl ca csr` then
//! `estctl ca import`), `estctl ca show`, and the refusals that protect an existing CA.

mod common;

use std::process::Command;

use common::*;
use hsm_est_proto::{Operation, Request, Response};

#[test]
fn intermediate_under_an_existing_root_issues_verifiable_certificates() {
    let mut app = Appliance::create_without_ca("intermediate");
    let d = app.dir.clone();
    let csr = d.join("ca.csr");
    let out = ok(&app.estctl(&[
        "ca",
        "csr",
        "--config",
        app.config_arg(),
        "--subject",
        "CN=Ward Devices Intermediate,O=Hospital,C=US",
        "--key-type",
        "ec-p384",
        "--out",
        csr.to_str().unwrap(),
    ]));
    assert!(out.contains("CSR"), "{out}");
    ok(&run(Command::new("openssl")
        .args(["req", "-verify", "-noout", "-in"])
        .arg(&csr)));

    // The hospital's root, made with openssl, signs the intermediate.
    let (root, signed) = root_signs_ca_csr(
        &d,
        &csr,
        &["rsa:3072"],
        "-sha256",
        "/C=US/O=Hospital/CN=Hospital Root CA",
    );

    // A certificate for some other key is refused.
    let stranger = d.join("stranger.pem");
    self_signed_p256(
        &d.join("stranger.key"),
        &stranger,
        "/CN=Stranger CA",
        &[
            "basicConstraints=critical,CA:TRUE",
            "keyUsage=critical,keyCertSign",
        ],
    );
    let bad = app.estctl(&[
        "ca",
        "import",
        "--config",
        app.config_arg(),
        "--cert",
        stranger.to_str().unwrap(),
        "--chain",
        stranger.to_str().unwrap(),
    ]);
    assert!(!bad.status.success());

    ok(&app.estctl(&[
        "ca",
        "import",
        "--config",
        app.config_arg(),
        "--cert",
        signed.to_str().unwrap(),
        "--chain",
        root.to_str().unwrap(),
    ]));
    let show = ok(&app.estctl(&["ca", "show", "--config", app.config_arg(), "--token"]));
    assert!(
        show.contains("Ward Devices Intermediate") && show.contains("Hospital Root CA"),
        "{show}"
    );
    assert!(show.contains("key protection: ok"), "{show}");
    assert!(show.contains("Extractable(false)"), "{show}");

    app.start();
    match app
        .client()
        .call(&Request::CaChain {
            profile: String::new(),
        })
        .unwrap()
    {
        Response::CaChain { certs, .. } => assert_eq!(certs.len(), 2),
        other => panic!("{other:?}"),
    }
    let leaf_csr = openssl_csr(
        &d,
        "leaf",
        &ec_p256(),
        "/CN=ward-b-pump-003/O=TestHospital/C=US",
        &[],
    );
    let leaf = issued(app.issue(Operation::Bootstrap, "iqe-bootstrap", &leaf_csr, &[]));
    let leaf_pem = write_cert_pem(&d, "leaf", &leaf);
    let verified = ok(&run(Command::new("openssl")
        .args(["verify", "-x509_strict", "-CAfile"])
        .arg(&root)
        .arg("-untrusted")
        .arg(&signed)
        .arg(&leaf_pem)));
    assert!(verified.contains(": OK"), "{verified}");
    ok(&run(pkilint("lint_pkix_signer_signee_cert_chain")
        .args(["lint", "-s", "WARNING"])
        .arg(&signed)
        .arg(&leaf_pem)));
    ok(&run(pkilint("lint_pkix_cert")
        .args(["lint", "-s", "WARNING"])
        .arg(&leaf_pem)));
}

#[test]
fn an_existing_ca_is_never_replaced() {
    let app = Appliance::create("noreplace", "ec-p256");
    let checked = ok(&app.estctl(&["check-config", "--config", app.config_arg()]));
    assert!(checked.contains("ok (7 profiles"), "{checked}");
    let init_again = || {
        app.estctl(&[
            "ca",
            "init",
            "--config",
            app.config_arg(),
            "--subject",
            "CN=Second CA",
        ])
    };
    let again = init_again();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to replace"));
    // Even with the chain file gone, the key label is taken.
    std::fs::remove_file(app.ca_pem()).unwrap();
    let again = init_again();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let bad_type = app.estctl(&[
        "ca",
        "init",
        "--config",
        app.config_arg(),
        "--subject",
        "CN=X",
        "--key-type",
        "dsa-1024",
    ]);
    assert!(!bad_type.status.success());
}
