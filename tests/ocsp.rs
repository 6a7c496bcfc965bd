//! The OCSP responder (RFC 6960) against the real appliance: `estctl demo`'s signer with
//! its own SoftHSM token, the frontend's publication listener, and OpenSSL's `ocsp`
//! client. A pump's certificate is good, then revoked (with time and reason) right after
//! `estctl revoke`, even though a GET answer for it was cached; a serial never issued is
//! unknown; the nonce comes back; several certificates share one request; the answer is
//! signed by the CA key, or by a delegated responder key that `estctl ocsp init` made in
//! the token and the signer certified. Hostile requests get malformedRequest, 413 or 415,
//! and a compromised frontend, speaking the signer protocol itself, can only learn the
//! statuses the ledger holds.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::csrgen;
use common::demo::{frontend_bin, pkcs7_certs, ChildGuard, Demo};
use common::*;

/// The demo restarted with the publication listener and an AIA OCSP URL in the pump
/// profiles; `signer_yaml` is appended to the signer's config.
struct Published {
    demo: Demo,
    port: u16,
    _signer: ChildGuard,
    _frontend: ChildGuard,
}

impl Published {
    fn start(name: &str, signer_yaml: &str, before_start: impl FnOnce(&Demo)) -> Published {
        let mut demo = Demo::start(name, "base64");
        demo.stop();
        let port = demo.add_publication_listener();
        for profile in ["policy/iqe-bootstrap.yaml", "policy/iqe-pump.yaml"] {
            demo.edit(
                profile,
                "key_usage:",
                &format!("ocsp_url: http://127.0.0.1:{port}/ocsp\nkey_usage:"),
            );
        }
        if !signer_yaml.is_empty() {
            demo.append_signer(signer_yaml);
        }
        before_start(&demo);
        let signer = demo.spawn_ready(&signer_bin(), "signer.yaml", "signer.log");
        let frontend = demo.spawn_ready(&frontend_bin(), "frontend.yaml", "frontend.log");
        Published {
            demo,
            port,
            _signer: signer,
            _frontend: frontend,
        }
    }

    fn ocsp_url(&self) -> String {
        format!("http://127.0.0.1:{}/ocsp", self.port)
    }

    /// Bootstraps `cn` through EST; returns the PEM certificate's path and its serial.
    fn bootstrap(&self, cn: &str) -> (PathBuf, String) {
        let (_, csr) = self.demo.csr(cn, &format!("/CN={cn}"));
        let boot = self.demo.curl(
            &[
                "-u",
                &self.demo.basic(),
                "--data-binary",
                &format!("@{}", csr.display()),
            ],
            "iqe/bootstrap",
        );
        assert_eq!(boot.status, 200, "{}", boot.text());
        let pem = self.demo.path(&format!("{cn}.pem"));
        std::fs::write(&pem, pkcs7_certs(&boot.body_file)).unwrap();
        let serial = openssl(&["x509", "-noout", "-serial", "-in", pem.to_str().unwrap()])
            .trim()
            .trim_start_matches("serial=")
            .to_lowercase();
        (pem, serial)
    }

    /// `openssl ocsp` against the responder, verifying with the demo's CA; `args` name the
    /// certificates. Returns stdout and stderr together.
    fn openssl_ocsp(&self, args: &[&str]) -> String {
        let ca = self.demo.ca();
        let out = run(Command::new("openssl")
            .args(["ocsp", "-issuer"])
            .arg(&ca)
            .arg("-CAfile")
            .arg(&ca)
            .args(["-url", &self.ocsp_url(), "-resp_text"])
            .args(args));
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    fn revoke(&self, serial: &str) {
        ok(&self.demo.estctl(&[
            "revoke",
            "--config",
            self.demo.path("signer.yaml").to_str().unwrap(),
            "--serial",
            serial,
            "--reason",
            "key-compromise",
        ]));
    }

    /// A GET request (RFC 6960 A.1) for `cert` without a nonce, as curl sends it; returns
    /// (status, headers, body).
    fn get(&self, cert: &Path) -> (u16, String, Vec<u8>) {
        let req = self.demo.path("get-req.der");
        let ca = self.demo.ca();
        ok(&run(Command::new("openssl")
            .args(["ocsp", "-no_nonce", "-issuer"])
            .arg(&ca)
            .arg("-cert")
            .arg(cert)
            .arg("-reqout")
            .arg(&req)));
        let b64 =
            <base64ct::Base64 as base64ct::Encoding>::encode_string(&std::fs::read(&req).unwrap());
        let encoded: String =
            percent_encoding::utf8_percent_encode(&b64, percent_encoding::NON_ALPHANUMERIC)
                .collect();
        self.http(&["-g"], &format!("/ocsp/{encoded}"))
    }

    /// POST of the file `body` to /ocsp with this Content-Type: (status, headers, body).
    fn post(&self, content_type: &str, body: &Path) -> (u16, String, Vec<u8>) {
        self.http(
            &[
                "-H",
                &format!("Content-Type: {content_type}"),
                "--data-binary",
                &format!("@{}", body.display()),
            ],
            "/ocsp",
        )
    }

    /// curl on the publication listener: (status, headers, body).
    fn http(&self, args: &[&str], path: &str) -> (u16, String, Vec<u8>) {
        let body = self.demo.path("http.body");
        let headers = self.demo.path("http.headers");
        let _ = std::fs::remove_file(&body);
        let out = ok(&run(Command::new("curl")
            .args(["-s", "--max-time", "20", "-o"])
            .arg(&body)
            .arg("-D")
            .arg(&headers)
            .args(["-w", "%{http_code}"])
            .args(args)
            .arg(format!("http://127.0.0.1:{}{path}", self.port))));
        (
            out.trim().parse().unwrap(),
            std::fs::read_to_string(&headers).unwrap_or_default(),
            std::fs::read(&body).unwrap_or_default(),
        )
    }

    fn ca_certificate(&self) -> x509_cert::Certificate {
        hsm_est_signer::ca::CaChain::load(&self.demo.ca())
            .unwrap()
            .certificate
    }
}

/// pkilint's `tool` finds nothing at WARNING or above in `der`.
fn lint_clean(demo: &Demo, tool: &str, name: &str, der: &[u8]) {
    let file = demo.path(name);
    std::fs::write(&file, der).unwrap();
    let out = run(pkilint(tool).args(["lint", "-s", "WARNING"]).arg(&file));
    let findings = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && findings.trim().is_empty(),
        "{tool} {name}: {findings}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn openssl_sees_good_then_revoked_and_unknown_with_a_nonce() {
    let p = Published::start("ocsp-ca", "", |_| {});
    let (pem, serial) = p.bootstrap("ocsp-pump-1");
    let (other_pem, _) = p.bootstrap("ocsp-pump-2");
    let pem_s = pem.to_str().unwrap();

    // The profile put the responder's URL into the certificate.
    let text = openssl(&["x509", "-noout", "-text", "-in", pem_s]);
    assert!(
        text.contains(&format!("OCSP - URI:{}", p.ocsp_url())),
        "{text}"
    );

    // POST with a nonce (openssl's default): good, verified against the CA, nonce echoed.
    let out = p.openssl_ocsp(&["-cert", pem_s]);
    assert!(out.contains("Response verify OK"), "{out}");
    assert!(out.contains(&format!("{pem_s}: good")), "{out}");
    assert!(out.contains("OCSP Nonce"), "{out}");
    assert!(!out.contains("WARNING: no nonce"), "{out}");
    assert!(!out.contains("nonce verify error"), "{out}");

    // GET without a nonce: the answer a relying party caches; asked twice, the signer
    // answers from its cache (the same signed bytes).
    let (status, headers, first) = p.get(&pem);
    assert_eq!(status, 200, "{headers}");
    assert!(
        headers
            .to_lowercase()
            .contains("content-type: application/ocsp-response"),
        "{headers}"
    );
    assert!(headers.contains("max-age=60"), "{headers}");
    let (_, _, second) = p.get(&pem);
    assert_eq!(
        first, second,
        "a GET without a nonce is served from the cache"
    );
    let ca = p.ca_certificate();
    let verified = hsm_est_pki::ocsp::verify_response(&first, &ca).unwrap();
    assert_eq!(verified.singles[0].status, hsm_est_pki::ocsp::Status::Good);
    assert!(!verified.delegated);
    let single = &verified.singles[0];
    assert_eq!(
        single
            .next_update
            .duration_since(single.this_update)
            .unwrap()
            .as_secs(),
        3600,
        "nextUpdate is thisUpdate plus ocsp.validity_minutes (60)"
    );

    // Revoked: at once, although the good answer was cached.
    p.revoke(&serial);
    let out = p.openssl_ocsp(&["-cert", pem_s]);
    assert!(out.contains("Response verify OK"), "{out}");
    assert!(out.contains(&format!("{pem_s}: revoked")), "{out}");
    assert!(out.contains("Reason: keyCompromise"), "{out}");
    assert!(out.contains("Revocation Time:"), "{out}");
    let (_, _, after) = p.get(&pem);
    let verified = hsm_est_pki::ocsp::verify_response(&after, &ca).unwrap();
    assert!(
        matches!(
            verified.singles[0].status,
            hsm_est_pki::ocsp::Status::Revoked { reason: 1, .. }
        ),
        "{:?}",
        verified.singles[0].status
    );

    lint_clean(
        &p.demo,
        "lint_ocsp_response",
        "revoked-response.der",
        &after,
    );

    // A serial this CA never issued: unknown.
    let out = p.openssl_ocsp(&["-serial", "0x4242424242424242424242424242424242"]);
    assert!(out.contains("Response verify OK"), "{out}");
    assert!(out.contains(": unknown"), "{out}");

    // Several certificates in one request, each answered.
    let out = p.openssl_ocsp(&[
        "-cert",
        pem_s,
        "-cert",
        other_pem.to_str().unwrap(),
        "-serial",
        "0x4343",
    ]);
    assert!(out.contains("Response verify OK"), "{out}");
    assert!(out.contains(&format!("{pem_s}: revoked")), "{out}");
    assert!(
        out.contains(&format!("{}: good", other_pem.to_str().unwrap())),
        "{out}"
    );
    assert!(out.contains("0x4343: unknown"), "{out}");

    // The signer counted them, and answered the repeated GET from its cache.
    let stats = ok(&p.demo.estctl(&[
        "stats",
        "--config",
        p.demo.path("signer.yaml").to_str().unwrap(),
    ]));
    let line = stats
        .lines()
        .find(|l| l.starts_with("OCSP requests answered"))
        .unwrap_or_else(|| panic!("{stats}"));
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(numbers[0] >= 7 && numbers[1] >= 1, "{line}");

    // The operator's view agrees.
    let shown = ok(&p.demo.estctl(&[
        "ocsp",
        "status",
        "--config",
        p.demo.path("signer.yaml").to_str().unwrap(),
        "--serial",
        &serial,
        "--nonce",
    ]));
    assert!(
        shown.contains("revoked at") && shown.contains("keyCompromise"),
        "{shown}"
    );
}

#[test]
fn a_delegated_responder_key_from_the_token_signs_when_configured() {
    let p = Published::start(
        "ocsp-responder",
        "ocsp:\n  signed_by: responder\n  responder_validity_days: 7\n",
        |demo| {
            let out = demo.estctl(&[
                "ocsp",
                "init",
                "--config",
                demo.path("signer.yaml").to_str().unwrap(),
            ]);
            let text = ok(&out);
            assert!(text.contains("OCSP responder key"), "{text}");
            // A second init refuses to make another key under the same label.
            let again = demo.estctl(&[
                "ocsp",
                "init",
                "--config",
                demo.path("signer.yaml").to_str().unwrap(),
            ]);
            assert!(!again.status.success());
        },
    );
    let (pem, _) = p.bootstrap("delegated-pump-1");
    let pem_s = pem.to_str().unwrap();
    // OpenSSL accepts the responder only if the CA issued it for OCSP signing.
    let out = p.openssl_ocsp(&["-cert", pem_s]);
    assert!(out.contains("Response verify OK"), "{out}");
    assert!(out.contains(&format!("{pem_s}: good")), "{out}");
    assert!(out.contains("OCSP Signing"), "{out}");
    assert!(out.contains("OCSP No Check"), "{out}");

    let (_, _, der) = p.get(&pem);
    let ca = p.ca_certificate();
    let verified = hsm_est_pki::ocsp::verify_response(&der, &ca).unwrap();
    assert!(
        verified.delegated,
        "signed by the responder key, not the CA's"
    );
    lint_clean(
        &p.demo,
        "lint_ocsp_response",
        "delegated-response.der",
        &der,
    );
    // The responder certificate as the response carries it: a clean PKIX certificate.
    let text = p.openssl_ocsp(&["-cert", pem_s]);
    let begin = text
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a responder certificate");
    let end = text.find("-----END CERTIFICATE-----").unwrap() + 25;
    let (_, responder) = der::pem::decode_vec(&text.as_bytes()[begin..end]).unwrap();
    lint_clean(&p.demo, "lint_pkix_cert", "responder.der", &responder);
    let responder_serial = hex::encode(
        hsm_est_pki::cert::parse_certificate(&responder)
            .unwrap()
            .tbs_certificate
            .serial_number
            .as_bytes(),
    );
    // It is in the ledger: the responder knows it (and says good).
    let shown = ok(&p.demo.estctl(&[
        "ocsp",
        "status",
        "--config",
        p.demo.path("signer.yaml").to_str().unwrap(),
        "--serial",
        &responder_serial,
    ]));
    assert!(
        shown.contains(": good") && shown.contains("delegated"),
        "{shown}"
    );

    // The key's generation and the responder certificate are in the audit log, the
    // certificate like every certificate the CA signs.
    let audit = std::fs::read_to_string(p.demo.path("audit.jsonl")).unwrap();
    assert!(
        audit.contains("\"event\":\"ocsp_key_generated\""),
        "{audit}"
    );
    assert!(
        audit.contains("\"profile\":\"ocsp-responder\""),
        "no responder certificate record"
    );
}

#[test]
fn hostile_ocsp_requests_get_clear_refusals() {
    let p = Published::start("ocsp-hostile", "", |_| {});
    let junk = p.demo.path("junk.der");
    std::fs::write(&junk, b"\x30\x03\x02\x01\x01").unwrap();
    let malformed = [0x30, 0x03, 0x0a, 0x01, 0x01];
    // Not an OCSPRequest: malformedRequest, unsigned.
    let (status, _, body) = p.post("application/ocsp-request", &junk);
    assert_eq!((status, body.as_slice()), (200, &malformed[..]));
    // GET of something that is not base64.
    let (status, _, body) = p.http(&[], "/ocsp/%%%not-base64");
    assert_eq!((status, body.as_slice()), (200, &malformed[..]));
    // The wrong media type.
    let (status, _, _) = p.post("text/plain", &junk);
    assert_eq!(status, 415);
    // A body over the cap.
    let big = p.demo.path("big.der");
    std::fs::write(&big, vec![0x30u8; 64 * 1024]).unwrap();
    let (status, _, _) = p.post("application/ocsp-request", &big);
    assert_eq!(status, 413);
    // A nonce over RFC 8954's 32 octets.
    let ca = p.ca_certificate();
    let id =
        hsm_est_pki::ocsp::cert_id_for(hsm_est_proto::OcspHash::Sha1, &ca, &[0x41, 1]).unwrap();
    let long_nonce =
        der::Encode::to_der(&der::asn1::OctetString::new(vec![7u8; 33]).unwrap()).unwrap();
    let req = hsm_est_pki::ocsp::build_request(&[id], Some(&long_nonce)).unwrap();
    let file = p.demo.path("long-nonce.der");
    std::fs::write(&file, req).unwrap();
    let (status, _, body) = p.post("application/ocsp-request", &file);
    assert_eq!((status, body.as_slice()), (200, &malformed[..]));
    // A certificate of another CA: the responder is not authoritative (unsigned).
    let foreign = hsm_est_proto::OcspCertId {
        hash: hsm_est_proto::OcspHash::Sha1,
        hash_params_null: true,
        issuer_name_hash: vec![1; 20],
        issuer_key_hash: vec![2; 20],
        serial: vec![0x41, 1],
    };
    let req = hsm_est_pki::ocsp::build_request(&[foreign], None).unwrap();
    std::fs::write(&file, req).unwrap();
    let (status, _, body) = p.post("application/ocsp-request", &file);
    assert_eq!(
        (status, body.as_slice()),
        (200, &[0x30, 0x03, 0x0a, 0x01, 0x06][..])
    );
    // Other methods.
    let (status, _, _) = p.http(&["-X", "PUT"], "/ocsp");
    assert_eq!(status, 405);
    let (status, _, _) = p.http(
        &["-X", "POST", "-H", "Content-Type: application/ocsp-request"],
        "/crl",
    );
    assert_eq!(status, 405);
    // The responder still works for a real client afterwards.
    let (pem, _) = p.bootstrap("hostile-pump-1");
    let out = p.openssl_ocsp(&["-cert", pem.to_str().unwrap()]);
    assert!(out.contains(": good"), "{out}");
    assert!(!p.demo.frontend_log().contains("panicked"));
}

/// A compromised frontend speaks the signer protocol itself: whatever it sends, the
/// statuses come from the ledger, signed by the signer, and hostile frames close only
/// their connection.
#[test]
fn a_compromised_frontend_cannot_choose_a_status() {
    use hsm_est_proto::{OcspHash, Operation, Request, Response};
    use std::io::{Read, Write};

    let mut app = Appliance::create("ocsp-frames", "ec-p256");
    app.start();
    let key = csrgen::P256Key::generate();
    let cert = issued(app.issue(
        Operation::Bootstrap,
        "iqe-bootstrap",
        &csrgen::csr_for_key(&key, "frame-pump-1"),
        &[],
    ));
    let parsed = hsm_est_pki::cert::parse_certificate(&cert).unwrap();
    let serial = parsed.tbs_certificate.serial_number.as_bytes().to_vec();
    let ca = hsm_est_signer::ca::CaChain::load(&app.ca_pem())
        .unwrap()
        .certificate;
    ok(&app.estctl_operator(&[
        "revoke",
        "--config",
        app.config_arg(),
        "--serial",
        &hex::encode(&serial),
        "--reason",
        "key-compromise",
    ]));

    // Asked on the frontend's socket, with every hash a client may use, the signer says
    // revoked: the frontend only forwards CertIDs and has no way to say "good".
    for hash in OcspHash::ALL {
        let id = hsm_est_pki::ocsp::cert_id_for(hash, &ca, &serial).unwrap();
        let Response::Ocsp { der } = app
            .client()
            .call(&Request::OcspStatus {
                certs: vec![id],
                nonce: Some(vec![0x04, 0x02, 0xab, 0xcd]),
            })
            .unwrap()
        else {
            panic!("no OCSP answer");
        };
        let v = hsm_est_pki::ocsp::verify_response(&der, &ca).unwrap();
        assert!(
            matches!(
                v.singles[0].status,
                hsm_est_pki::ocsp::Status::Revoked { reason: 1, .. }
            ),
            "{hash:?}: {:?}",
            v.singles[0].status
        );
        assert_eq!(v.nonce.as_deref(), Some(&[0x04, 0x02, 0xab, 0xcd][..]));
    }

    // A CertID with this CA's key hash but another name hash is not this CA's: unknown,
    // never a signed "good" for a look-alike issuer.
    let mut twisted = hsm_est_pki::ocsp::cert_id_for(OcspHash::Sha256, &ca, &serial).unwrap();
    twisted.issuer_name_hash[0] ^= 1;
    let honest = hsm_est_pki::ocsp::cert_id_for(OcspHash::Sha256, &ca, &[0x41, 9]).unwrap();
    let Response::Ocsp { der } = app
        .client()
        .call(&Request::OcspStatus {
            certs: vec![twisted, honest],
            nonce: None,
        })
        .unwrap()
    else {
        panic!("no OCSP answer");
    };
    let v = hsm_est_pki::ocsp::verify_response(&der, &ca).unwrap();
    assert!(v
        .singles
        .iter()
        .all(|s| s.status == hsm_est_pki::ocsp::Status::Unknown));

    // Hand-built frames: a nonce longer than the protocol allows, a count of 200 and a
    // hash of the wrong length each close the connection before anything is decided.
    let good = Request::OcspStatus {
        certs: vec![hsm_est_pki::ocsp::cert_id_for(OcspHash::Sha1, &ca, &serial).unwrap()],
        nonce: Some(vec![1; 34]),
    }
    .encode()
    .unwrap();
    let mut long_nonce = good.clone();
    let n = long_nonce.len();
    // The nonce's length prefix sits 34 bytes before the end; claim 35 and add a byte.
    long_nonce[n - 34 - 1] = 35;
    long_nonce.push(1);
    let mut many = good.clone();
    many[0] = 200;
    let mut short_hash = good.clone();
    short_hash[1] = OcspHash::Sha256.to_wire();
    for (what, body) in [
        ("long nonce", long_nonce),
        ("count", many),
        ("hash length", short_hash),
    ] {
        let mut s = std::os::unix::net::UnixStream::connect(&app.socket).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let header = hsm_est_proto::FrameHeader {
            msg_type: hsm_est_proto::messages::msg_type::OCSP_STATUS,
            request_id: 7,
            body_len: body.len() as u32,
        }
        .encode();
        s.write_all(&header).unwrap();
        s.write_all(&body).unwrap();
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("{what}: connection not closed: {other:?}"),
        }
    }
    // The certificate is still revoked and nothing was issued by any of this.
    assert_eq!(app.ledger_certificate_count(), 1);
    match app.client().call(&Request::Ping).unwrap() {
        Response::Pong { .. } => {}
        other => panic!("{other:?}"),
    }
}
