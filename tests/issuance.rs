//! Issuance through the real signer and a real SoftHSM token, for every CA key type against
//! every device key type; each certificate is checked by pkilint and `openssl verify`.

mod common;

use common::*;
use der::{Decode, Encode};
use hsm_est_proto::Operation;
use x509_cert::Certificate;

fn lint_and_verify(app: &Appliance, name: &str, leaf_der: &[u8]) {
    let leaf = write_cert_pem(&app.dir, name, leaf_der);
    let ca = app.ca_pem();
    ok(&run(pkilint("lint_pkix_cert")
        .args(["lint", "-s", "WARNING"])
        .arg(&leaf)));
    ok(&run(pkilint("lint_pkix_signer_signee_cert_chain")
        .args(["lint", "-s", "WARNING"])
        .arg(&ca)
        .arg(&leaf)));
    let out = ok(&run(std::process::Command::new("openssl")
        .args(["verify", "-x509_strict", "-CAfile"])
        .arg(&ca)
        .arg(&leaf)));
    assert!(out.contains(": OK"), "{out}");
}

fn check_profile(app: &Appliance, csr_der: &[u8], cert_der: &[u8], expect_sig: &[u8]) {
    let cert = Certificate::from_der(cert_der).unwrap();
    let ca_pem = std::fs::read_to_string(app.ca_pem()).unwrap();
    let ca_der = hsm_est_pki::pem_certificates(&ca_pem).unwrap().remove(0);
    let ca = Certificate::from_der(&ca_der).unwrap();
    let tbs = &cert.tbs_certificate;
    // P1: 16 octets, positive, top bits 01.
    let serial = tbs.serial_number.as_bytes();
    assert_eq!(serial.len(), 16);
    assert_eq!(serial[0] & 0xc0, 0x40);
    // P3: byte-exact algorithm identifier, inner equals outer.
    assert_eq!(cert.signature_algorithm.to_der().unwrap(), expect_sig);
    assert_eq!(tbs.signature, cert.signature_algorithm);
    // P5: issuer is byte-for-byte the CA's subject.
    assert_eq!(
        tbs.issuer.to_der().unwrap(),
        ca.tbs_certificate.subject.to_der().unwrap()
    );
    // The public key is the CSR's.
    let csr = x509_cert::request::CertReq::from_der(csr_der).unwrap();
    assert_eq!(tbs.subject_public_key_info, csr.info.public_key);
    // P8: 365 days plus the 5-minute backdate.
    let (nb, na) = hsm_est_pki::cert::validity_seconds(&cert);
    assert_eq!(na - nb, 365 * 86_400 + 300);
}

fn matrix_for(ca_key: &str, expect_sig: &[u8]) {
    let mut app = Appliance::create(&format!("matrix-{ca_key}"), ca_key);
    ok(&run(pkilint("lint_pkix_cert")
        .args(["lint", "-s", "WARNING"])
        .arg(app.ca_pem())));
    app.start();
    let device_keys: [(&str, Vec<&str>); 3] = [
        ("rsa2048", vec!["rsa:2048"]),
        ("p256", ec_p256()),
        ("p384", ec_p384()),
    ];
    for (label, newkey) in device_keys {
        let cn = format!("ward-a-pump-{label}");
        let csr = openssl_csr(
            &app.dir,
            &cn,
            &newkey,
            &format!("/CN={cn}/O=TestHospital/C=US"),
            &[],
        );
        let cert = issued(app.issue(Operation::Bootstrap, "iqe-bootstrap", &csr, &[]));
        check_profile(&app, &csr, &cert, expect_sig);
        lint_and_verify(&app, &cn, &cert);
    }
}

#[test]
fn ca_p256_issues_lint_clean_certificates() {
    matrix_for("ec-p256", &hex("300a06082a8648ce3d040302"));
}

#[test]
fn ca_p384_issues_lint_clean_certificates() {
    matrix_for("ec-p384", &hex("300a06082a8648ce3d040303"));
}

#[test]
fn ca_rsa3072_issues_lint_clean_certificates() {
    matrix_for("rsa-3072", &hex("300d06092a864886f70d01010b0500"));
}

fn hex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

#[test]
fn csr_asking_for_ca_true_gets_an_end_entity_certificate() {
    let mut app = Appliance::create("ca-true", "ec-p256");
    app.start();
    let csr = openssl_csr(
        &app.dir,
        "sneaky",
        &ec_p256(),
        "/CN=sneaky-pump-1",
        &[
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-addext",
            "extendedKeyUsage=serverAuth,codeSigning",
            "-addext",
            "subjectAltName=DNS:evil.example.com",
        ],
    );
    let der_cert = issued(app.issue(Operation::Bootstrap, "iqe-bootstrap", &csr, &[]));
    let cert = Certificate::from_der(&der_cert).unwrap();
    assert!(!hsm_est_pki::cert::is_signing_ca(&cert));
    let text = ok(&run(std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(write_cert_pem(&app.dir, "sneaky", &der_cert))));
    assert!(text.contains("CA:FALSE"), "{text}");
    assert!(!text.contains("Certificate Sign"), "{text}");
    assert!(!text.contains("Code Signing"), "{text}");
    assert!(!text.contains("evil.example.com"), "{text}");
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    lint_and_verify(&app, "sneaky", &der_cert);
    // The audit record says what was ignored.
    let audit = std::fs::read_to_string(app.path("audit.jsonl")).unwrap();
    assert!(audit.contains("ignored_csr_extensions"), "{audit}");
}

#[test]
fn san_profile_copies_only_allowed_names_and_lints_clean() {
    let mut app = Appliance::create("san-ok", "ec-p256");
    app.start();
    let csr = openssl_csr(
        &app.dir,
        "san",
        &ec_p256(),
        "/CN=pump-7",
        &[
            "-addext",
            "subjectAltName=DNS:pump-7.pumps.example.org,IP:192.0.2.7",
        ],
    );
    let der_cert = issued(app.issue(Operation::Bootstrap, "test-san", &csr, &[]));
    let text = ok(&run(std::process::Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(write_cert_pem(&app.dir, "san", &der_cert))));
    assert!(text.contains("DNS:pump-7.pumps.example.org"), "{text}");
    assert!(text.contains("IP Address:192.0.2.7"), "{text}");
    lint_and_verify(&app, "san-lint", &der_cert);
}

#[test]
fn crl_distribution_point_and_aia_come_from_the_profile() {
    let mut app = Appliance::create("urls", "ec-p256");
    app.start();
    let csr = openssl_csr(&app.dir, "u", &ec_p256(), "/CN=pump-url-1", &[]);
    let der_cert = issued(app.issue(Operation::Bootstrap, "test-urls", &csr, &[]));
    let pem = write_cert_pem(&app.dir, "urls", &der_cert);
    let text = ok(&run(std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&pem)));
    assert!(
        text.contains("URI:http://pki.hospital.example/device-ca.crl"),
        "{text}"
    );
    assert!(
        text.contains("CA Issuers - URI:http://pki.hospital.example/device-ca.der"),
        "{text}"
    );
    let (nb, na) = hsm_est_pki::cert::validity_seconds(&Certificate::from_der(&der_cert).unwrap());
    assert_eq!(na - nb, 90 * 86_400 + 300);
    lint_and_verify(&app, "urls-lint", &der_cert);
}
