//! A third-party EST client: strongSwan's `pki --estca` and `pki --est` (Debian
//! strongswan-pki 5.9, no label option, single-line base64 only) against the default route
//! in `base64-single-line`: CA certificates, enrolment with Basic, re-enrolment with the
//! client certificate.

mod common;

use std::process::Command;

use common::demo::*;
use common::{ok, run};

fn pki(args: &[&str], stdout_to: Option<&std::path::Path>) -> String {
    let out = run(Command::new("pki").args(args));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "pki {args:?} failed:\n{stderr}");
    if let Some(path) = stdout_to {
        std::fs::write(path, &out.stdout).unwrap();
    }
    stderr
}

#[test]
fn strongswan_pki_enrols_and_reenrols() {
    let demo = Demo::start("strongswan", "base64-single-line");
    let url = format!("https://127.0.0.1:{}", demo.port);
    let ca = demo.ca();
    let ca = ca.to_str().unwrap();
    let d = |n: &str| demo.path(n).display().to_string();
    // The route's bodies are one line of base64 ended by CRLF (libest needs the line end);
    // strongSwan reads them below.
    let body = demo.curl(&[], "cacerts").body;
    assert!(body.ends_with(b"\r\n"), "{body:?}");
    assert_eq!(body.iter().filter(|b| **b == b'\n').count(), 1);

    let log = pki(
        &[
            "--estca",
            "--url",
            &url,
            "--cacert",
            ca,
            "--caout",
            &d("ss-ca.der"),
        ],
        None,
    );
    assert!(log.contains("hsm-est Demo Device CA"), "{log}");
    let fetched = ok(&run(Command::new("openssl").args([
        "x509",
        "-inform",
        "DER",
        "-noout",
        "-subject",
        "-in",
        &d("ss-ca.der"),
    ])));
    assert!(fetched.contains("hsm-est Demo Device CA"));

    let key = |name: &str| {
        let path = d(name);
        ok(&run(Command::new("openssl").args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &path,
        ])));
        path
    };
    let req = |key: &str, out: &str| {
        pki(
            &[
                "--req",
                "--in",
                key,
                "--type",
                "priv",
                "--dn",
                "CN=ss-pump-1, O=TestHospital, C=US",
                "--outform",
                "der",
            ],
            Some(std::path::Path::new(out)),
        );
    };
    let k1 = key("ss-k1.pem");
    req(&k1, &d("ss-req1.der"));
    pki(
        &[
            "--est",
            "--url",
            &url,
            "--in",
            &d("ss-req1.der"),
            "--cacert",
            ca,
            "--userpass",
            &demo.basic(),
        ],
        Some(&demo.path("ss-c1.der")),
    );
    let c1 = ok(&run(Command::new("openssl").args([
        "x509",
        "-inform",
        "DER",
        "-noout",
        "-subject",
        "-serial",
        "-in",
        &d("ss-c1.der"),
    ])));
    assert!(c1.contains("ss-pump-1"), "{c1}");

    // Re-enrolment authenticated by the certificate just issued.
    let k2 = key("ss-k2.pem");
    req(&k2, &d("ss-req2.der"));
    pki(
        &[
            "--est",
            "--url",
            &url,
            "--in",
            &d("ss-req2.der"),
            "--cacert",
            ca,
            "--cert",
            &d("ss-c1.der"),
            "--key",
            &k1,
        ],
        Some(&demo.path("ss-c2.der")),
    );
    let c2 = ok(&run(Command::new("openssl").args([
        "x509",
        "-inform",
        "DER",
        "-noout",
        "-subject",
        "-serial",
        "-in",
        &d("ss-c2.der"),
    ])));
    assert!(c2.contains("ss-pump-1"), "{c2}");
    assert_ne!(c1, c2, "re-enrolment must yield a new certificate");
    let log = demo.frontend_log();
    assert!(log.contains("simplereenroll serial="), "{log}");
}
