//! The IQE integration guide's "Testing the Integration" flows and the device lifecycle,
//! against the whole appliance (`estctl demo`: real SoftHSM token, real signer and frontend
//! processes, real TLS) with curl and openssl.

mod common;

use std::process::Command;

use common::demo::*;
use common::{ok, run};

fn file_type(path: &std::path::Path) -> String {
    ok(&run(Command::new("file").arg(path)))
}

#[test]
fn iqe_guide_flows_in_der_mode() {
    let demo = Demo::start("guide-der", "der");
    // Test 1: CA certificates as binary DER.
    let cacerts = demo.curl(&[], "cacerts");
    assert_eq!(cacerts.status, 200);
    assert_eq!(
        cacerts.header("content-type").as_deref(),
        Some("application/pkcs7-mime")
    );
    assert!(
        cacerts.header("content-transfer-encoding").is_none(),
        "{}",
        cacerts.headers
    );
    assert!(cacerts.header("content-length").is_some());
    let kind = file_type(&cacerts.body_file);
    assert!(
        kind.to_lowercase().contains("data") && !kind.contains("text"),
        "{kind}"
    );
    assert!(pkcs7_certs(&cacerts.body_file).contains("hsm-est Demo Device CA"));

    // Test 2: bootstrap enrolment with HTTP Basic, response binary DER.
    let (_, csr) = demo.csr("test-pump", "/CN=test-pump-001/O=TestHospital/C=US");
    let csr_arg = format!("@{}", csr.display());
    let boot = demo.curl(
        &[
            "-X",
            "POST",
            "-u",
            &demo.basic(),
            "-H",
            "Content-Type: application/pkcs10",
            "--data-binary",
            &csr_arg,
        ],
        "bootstrap",
    );
    assert_eq!(boot.status, 200, "{}", boot.text());
    assert_eq!(
        boot.header("content-type").as_deref(),
        Some("application/pkcs7-mime; smime-type=certs-only")
    );
    assert!(boot.header("content-transfer-encoding").is_none());
    let kind = file_type(&boot.body_file);
    assert!(
        kind.to_lowercase().contains("data") && !kind.contains("text"),
        "{kind}"
    );
    let pem = pkcs7_certs(&boot.body_file);
    assert!(pem.contains("CN = test-pump-001"), "{pem}");
    let cert = demo.path("test-pump-cert.pem");
    std::fs::write(&cert, &pem).unwrap();
    let text = ok(&run(Command::new("openssl")
        .args(["x509", "-text", "-noout", "-in"])
        .arg(&cert)));
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    // The labelled DER route behaves the same.
    assert_eq!(demo.curl(&[], "iqe/cacerts").status, 200);

    // Test 3 (the dashboard's data): the device is bootstrap_only.
    let list = ok(&demo.estctl(&[
        "device",
        "list",
        "--config",
        demo.path("signer.yaml").to_str().unwrap(),
    ]));
    assert!(
        list.contains("test-pump-001") && list.contains("bootstrap_only"),
        "{list}"
    );
}

#[test]
fn iqe_guide_flows_in_base64_mode() {
    let demo = Demo::start("guide-b64", "base64");
    let cacerts = demo.curl(&[], "cacerts");
    assert_eq!(cacerts.status, 200);
    assert_eq!(
        cacerts.header("content-transfer-encoding").as_deref(),
        Some("base64")
    );
    assert!(cacerts.text().lines().all(|l| l.trim_end().len() <= 76));
    assert!(pkcs7_certs(&base64_to_der_file(&cacerts)).contains("hsm-est Demo Device CA"));
    let (_, csr) = demo.csr("b64-pump", "/CN=b64-pump-001/O=TestHospital/C=US");
    // The CSR as base64 with line breaks, the RFC 7030 form.
    let der = demo.path("b64-pump.der");
    ok(&run(Command::new("openssl")
        .args(["req", "-outform", "DER", "-in"])
        .arg(&csr)
        .arg("-out")
        .arg(&der)));
    let b64 = demo.path("b64-pump.b64");
    ok(&run(Command::new("openssl")
        .args(["base64", "-in"])
        .arg(&der)
        .arg("-out")
        .arg(&b64)));
    let enroll = demo.curl(
        &[
            "-u",
            &demo.basic(),
            "-H",
            "Content-Type: application/pkcs10",
            "-H",
            "Content-Transfer-Encoding: base64",
            "--data-binary",
            &format!("@{}", b64.display()),
        ],
        "simpleenroll",
    );
    assert_eq!(enroll.status, 200, "{}", enroll.text());
    assert_eq!(
        enroll.header("content-transfer-encoding").as_deref(),
        Some("base64")
    );
    assert!(pkcs7_certs(&base64_to_der_file(&enroll)).contains("CN = b64-pump-001"));
    // Raw DER in, single-line base64 out on the compact label.
    let compact = demo.curl(
        &[
            "-u",
            &demo.basic(),
            "--data-binary",
            &format!("@{}", der.display()),
        ],
        "compact/bootstrap",
    );
    assert_eq!(compact.status, 409, "enrolled already: {}", compact.text());
    let (_, csr2) = demo.csr("c-pump", "/CN=compact-pump-001");
    let compact = demo.curl(
        &[
            "-u",
            &demo.basic(),
            "--data-binary",
            &format!("@{}", csr2.display()),
        ],
        "compact/bootstrap",
    );
    assert_eq!(compact.status, 200, "{}", compact.text());
    assert_eq!(compact.text().trim_end().lines().count(), 1);
    // csrattrs from the profile.
    let attrs = demo.curl(&[], "csrattrs");
    assert_eq!(attrs.status, 200);
    assert_eq!(
        attrs.header("content-type").as_deref(),
        Some("application/csrattrs")
    );
    let parsed = ok(&run(Command::new("openssl")
        .args(["asn1parse", "-inform", "DER", "-in"])
        .arg(base64_to_der_file(&attrs))));
    assert!(
        parsed.contains("prime256v1") && parsed.contains("id-ecPublicKey"),
        "{parsed}"
    );
    // An EC client is told to sign with ECDSA, an RSA client with RSA.
    for alg in [
        "ecdsa-with-SHA256",
        "ecdsa-with-SHA384",
        "sha256WithRSAEncryption",
    ] {
        assert!(parsed.contains(alg), "{alg} missing: {parsed}");
    }
}

#[test]
fn device_lifecycle_over_https() {
    let mut demo = Demo::start("lifecycle-https", "der");
    let cfg = demo.path("signer.yaml").to_str().unwrap().to_string();
    let subj = "/CN=ward-a-pump-001/O=TestHospital/C=US";
    let post = |demo: &Demo, args: &[&str], csr: &std::path::Path, path: &str| {
        let data = format!("@{}", csr.display());
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--data-binary", &data]);
        demo.curl(&all, path)
    };
    let basic = demo.basic();
    let (_, csr1) = demo.csr("p1", subj);
    assert_eq!(
        post(&demo, &["-u", &basic], &csr1, "iqe/bootstrap").status,
        200
    );
    let (k2, csr2) = demo.csr("p2", subj);
    let again = post(&demo, &["-u", &basic], &csr2, "iqe/bootstrap");
    assert_eq!(again.status, 409);
    assert!(again.text().contains("already enrolled"));
    ok(&demo.estctl(&["device", "delete", "--config", &cfg, "ward-a-pump-001"]));
    let boot = post(&demo, &["-u", &basic], &csr2, "iqe/bootstrap");
    assert_eq!(boot.status, 200);
    let boot_pem = demo.path("boot.pem");
    std::fs::write(&boot_pem, pkcs7_certs(&boot.body_file)).unwrap();

    // simpleenroll with the bootstrap certificate as TLS client certificate.
    let (k3, csr3) = demo.csr("p3", subj);
    let tls_auth = |cert: &std::path::Path, key: &std::path::Path| {
        vec![
            "--cert".to_string(),
            cert.display().to_string(),
            "--key".to_string(),
            key.display().to_string(),
        ]
    };
    let a = tls_auth(&boot_pem, &k2);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let enrolled = post(&demo, &a, &csr3, "iqe/simpleenroll");
    assert_eq!(enrolled.status, 200, "{}", enrolled.text());
    let list = ok(&demo.estctl(&["device", "list", "--config", &cfg]));
    assert!(
        list.contains("ward-a-pump-001") && list.contains("enrolled"),
        "{list}"
    );
    let enrolled_pem = demo.path("enrolled.pem");
    std::fs::write(&enrolled_pem, pkcs7_certs(&enrolled.body_file)).unwrap();

    // simplereenroll with the enrolled certificate.
    let (k4, csr4) = demo.csr("p4", subj);
    let a = tls_auth(&enrolled_pem, &k3);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let renewed = post(&demo, &a, &csr4, "iqe/simplereenroll");
    assert_eq!(renewed.status, 200, "{}", renewed.text());
    let renewed_pem = demo.path("renewed.pem");
    std::fs::write(&renewed_pem, pkcs7_certs(&renewed.body_file)).unwrap();

    // Another device's certificate cannot re-enrol this one.
    let (ko, csro) = demo.csr("other", "/CN=ward-a-pump-002/O=TestHospital/C=US");
    let other = post(&demo, &["-u", &basic], &csro, "iqe/bootstrap");
    assert_eq!(other.status, 200);
    let other_pem = demo.path("other.pem");
    std::fs::write(&other_pem, pkcs7_certs(&other.body_file)).unwrap();
    let (_, csr5) = demo.csr("p5", subj);
    let a = tls_auth(&other_pem, &ko);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    assert_eq!(post(&demo, &a, &csr5, "iqe/simplereenroll").status, 403);
    // A changed subject is refused (the profile pins O: 400, a bad request).
    let (_, csr6) = demo.csr("p6", "/CN=ward-a-pump-001/O=Other Hospital/C=US");
    let a = tls_auth(&renewed_pem, &k4);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    assert_eq!(post(&demo, &a, &csr6, "iqe/simplereenroll").status, 400);
    // Re-enrolment needs a certificate: Basic alone is not enough.
    assert_eq!(
        post(&demo, &["-u", &basic], &csr6, "iqe/simplereenroll").status,
        403
    );

    // Devices and certificates survive a restart on the same directory.
    demo.stop();
    demo.launch("der");
    let list = ok(&demo.estctl(&["device", "list", "--config", &cfg]));
    assert!(
        list.contains("ward-a-pump-001") && list.contains("ward-a-pump-002"),
        "{list}"
    );
    let (_, csr7) = demo.csr("p7", subj);
    let a = tls_auth(&renewed_pem, &k4);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    assert_eq!(post(&demo, &a, &csr7, "iqe/simplereenroll").status, 200);
}
