//! Policy refusals through the real signer, each with its stable reason code, each
//! recorded in the audit log; the signer keeps serving afterwards.

mod common;

use common::csrgen::{self, CN};
use common::*;
use hsm_est_proto::{ErrorCode, Operation};

#[test]
fn hostile_csrs_are_refused_with_stable_reasons() {
    let mut app = Appliance::create("rejections", "ec-p256");
    app.start();
    let d = app.dir.clone();

    // Keys openssl makes for us.
    let rsa1024 = openssl_csr(&d, "rsa1024", &["rsa:1024"], "/CN=weak-pump-1", &[]);
    let e3_key = d.join("e3.key");
    ok(&run(std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .args(["-pkeyopt", "rsa_keygen_pubexp:3", "-out"])
        .arg(&e3_key)));
    let rsa_e3 = openssl_csr_for_key(&d, "e3", &e3_key, "/CN=weak-pump-2", &[]);
    let k1_key = d.join("k1.key");
    ok(&run(std::process::Command::new("openssl")
        .args(["ecparam", "-genkey", "-name", "secp256k1", "-out"])
        .arg(&k1_key)));
    let secp256k1 = openssl_csr_for_key(&d, "k1", &k1_key, "/CN=odd-curve-1", &[]);
    let sha1 = openssl_csr(&d, "sha1", &ec_p256(), "/CN=old-hash-1", &["-sha1"]);
    let long_cn = "a".repeat(65);
    // openssl itself refuses to write a CN over 64 characters.
    let overlong = csrgen::csr(&[(CN, long_cn.as_str())]);
    let wildcard = openssl_csr(&d, "wild", &ec_p256(), "/CN=*.pumps", &[]);
    let foreign_san = openssl_csr(
        &d,
        "foreign",
        &ec_p256(),
        "/CN=pump-9",
        &["-addext", "subjectAltName=DNS:pump-9.evil.example.com"],
    );
    let san_wildcard = openssl_csr(
        &d,
        "sanwild",
        &ec_p256(),
        "/CN=pump-10",
        &["-addext", "subjectAltName=DNS:*.pumps.example.org"],
    );

    // RSA with algorithm parameters that are not NULL, properly signed by the key's owner:
    // 4 KiB of attacker bytes that a CA copying the SubjectPublicKeyInfo would sign.
    let rsa_params = {
        use der::{Decode, Encode};
        let good = openssl_csr(&d, "rsaparams", &["rsa:2048"], "/CN=odd-params-1", &[]);
        let pkcs8 = ok(&run(std::process::Command::new("openssl")
            .args(["pkey", "-traditional", "-outform", "DER", "-in"])
            .arg(d.join("rsaparams.key"))
            .arg("-out")
            .arg(d.join("rsaparams.pkcs1"))));
        drop(pkcs8);
        let pair = ring::signature::RsaKeyPair::from_der(
            &std::fs::read(d.join("rsaparams.pkcs1")).unwrap(),
        )
        .unwrap();
        let mut req = x509_cert::request::CertReq::from_der(&good).unwrap();
        req.info.public_key.algorithm.parameters =
            Some(der::asn1::Any::new(der::Tag::OctetString, vec![0x41; 4096]).unwrap());
        let mut sig = vec![0u8; pair.public().modulus_len()];
        pair.sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            &req.info.to_der().unwrap(),
            &mut sig,
        )
        .unwrap();
        req.signature = der::asn1::BitString::from_bytes(&sig).unwrap();
        req.to_der().unwrap()
    };

    // Keys and signatures only code can make.
    let cases: Vec<(&str, &str, Vec<u8>, ErrorCode, &str)> = vec![
        (
            "not DER",
            "iqe-bootstrap",
            b"hello".to_vec(),
            ErrorCode::CsrMalformed,
            "csr.der",
        ),
        (
            "forged signature",
            "iqe-bootstrap",
            csrgen::forged(&[(CN, "pump-f1")]),
            ErrorCode::ProofOfPossession,
            "csr.pop",
        ),
        (
            "other key",
            "iqe-bootstrap",
            csrgen::signed_by_other_key(&[(CN, "pump-f2")]),
            ErrorCode::ProofOfPossession,
            "csr.pop",
        ),
        (
            "rsa-1024",
            "iqe-bootstrap",
            rsa1024,
            ErrorCode::KeyRejected,
            "key.rsa_size",
        ),
        (
            "rsa e=3",
            "iqe-bootstrap",
            rsa_e3,
            ErrorCode::KeyRejected,
            "key.rsa_exponent",
        ),
        (
            "rsa with non-NULL parameters",
            "iqe-bootstrap",
            rsa_params,
            ErrorCode::KeyRejected,
            "key.type",
        ),
        (
            "secp256k1",
            "iqe-bootstrap",
            secp256k1,
            ErrorCode::KeyRejected,
            "key.curve",
        ),
        (
            "sha-1",
            "iqe-bootstrap",
            sha1,
            ErrorCode::SignatureAlgorithmRejected,
            "sigalg.sha1",
        ),
        (
            "CN with NUL",
            "iqe-bootstrap",
            csrgen::csr(&[(CN, "pump\0evil")]),
            ErrorCode::SubjectRejected,
            "name.control_char",
        ),
        (
            "CN with CR/LF",
            "iqe-bootstrap",
            csrgen::csr(&[(CN, "pump\r\nforged")]),
            ErrorCode::SubjectRejected,
            "name.control_char",
        ),
        (
            "CN of 65",
            "iqe-bootstrap",
            overlong,
            ErrorCode::SubjectRejected,
            "name.too_long",
        ),
        (
            "wildcard CN",
            "iqe-bootstrap",
            wildcard,
            ErrorCode::SubjectRejected,
            "name.wildcard",
        ),
        (
            "requester-chosen OU and O, as issued before (issue 7)",
            "iqe-bootstrap",
            openssl_csr(
                &d,
                "ou",
                &ec_p256(),
                "/CN=pump-ou/OU=Domain Admins/O=Hospital IT",
                &[],
            ),
            ErrorCode::SubjectRejected,
            "name.attribute",
        ),
        (
            "an O other than the pinned one",
            "iqe-bootstrap",
            csrgen::csr(&[(CN, "pump-o"), (csrgen::O, "Hospital IT")]),
            ErrorCode::SubjectRejected,
            "name.pinned",
        ),
        (
            "SAN outside suffix",
            "test-san",
            foreign_san,
            ErrorCode::SanRejected,
            "san.suffix",
        ),
        (
            "wildcard SAN",
            "test-san",
            san_wildcard,
            ErrorCode::SanRejected,
            "san.wildcard",
        ),
        (
            "unknown profile",
            "nope",
            csrgen::csr(&[(CN, "pump-u")]),
            ErrorCode::UnknownProfile,
            "profile.unknown",
        ),
        (
            "operator-only profile",
            "tls-server",
            csrgen::csr(&[(CN, "pump-s")]),
            ErrorCode::NotAllowed,
            "profile.caller",
        ),
    ];
    let count = cases.len();
    for (what, profile, csr, code, reason) in cases {
        let (got_code, got_reason) = refused(app.issue(Operation::Bootstrap, profile, &csr, &[]));
        assert_eq!((got_code, got_reason.as_str()), (code, reason), "{what}");
    }

    // Nothing was issued, every refusal is in the audit log, and the signer still serves.
    assert_eq!(app.ledger_certificate_count(), 0);
    let audit = std::fs::read_to_string(app.path("audit.jsonl")).unwrap();
    assert_eq!(audit.matches("\"event\":\"rejected\"").count(), count);
    // A CR/LF in a subject never splits a log line.
    assert!(audit
        .lines()
        .all(|l| l.starts_with('{') && l.ends_with('}')));
    assert!(
        app.signer_log().lines().all(|l| l.starts_with("20")),
        "{}",
        app.signer_log()
    );
    let good = openssl_csr(&d, "good", &ec_p256(), "/CN=ward-a-pump-001", &[]);
    issued(app.issue(Operation::Bootstrap, "iqe-bootstrap", &good, &[]));
}
