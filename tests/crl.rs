//! CRLs signed in the token, against the real signer and a real SoftHSM token: a revoked
//! certificate's serial and reason are in the next CRL, `openssl verify -crl_check` fails
//! for it and passes for a good one, pkilint's `lint_crl` (PKIX) finds nothing at WARNING
//! or above, the CRL number grows with every CRL and is kept in the ledger across a
//! restart, and each CRL is in the audit log. With `crl.file` set the signer publishes by
//! itself: a CRL at start, and a new one within seconds of a revocation.

mod common;

use std::process::Command;

use common::csrgen;
use common::demo::frontend_bin;
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

/// The number and the text of the CRL published in `file`, once it satisfies `until`
/// (waits up to 20 s: the signer publishes a second after a revocation).
fn published(file: &std::path::Path, until: impl Fn(u64, &[u8]) -> bool) -> (u64, Vec<u8>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Ok(bytes) = std::fs::read(file) {
            let der = if bytes.starts_with(b"-----BEGIN X509 CRL-----") {
                der::pem::decode_vec(&bytes)
                    .map(|(_, d)| d)
                    .unwrap_or_default()
            } else {
                bytes
            };
            if let Some(n) = hsm_est_pki::crl::crl_number(&der) {
                if until(n, &der) {
                    return (n, der);
                }
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} never reached the expected CRL",
            file.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
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
    // A CRL is published at start.
    let file = app.path("published.crl");
    let (first, _) = published(&file, |n, _| n >= 1);
    let boot = |app: &Appliance, cn: &str| {
        let key = csrgen::P256Key::generate();
        issued(app.issue(
            Operation::Bootstrap,
            "iqe-bootstrap",
            &csrgen::csr_for_key(&key, cn),
            &[],
        ))
    };
    let (good, bad) = (boot(&app, "crl-pump-good"), boot(&app, "crl-pump-stolen"));
    let bad_serial = hsm_est_pki::cert::parse_certificate(&bad)
        .unwrap()
        .tbs_certificate
        .serial_number
        .as_bytes()
        .to_vec();
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
    // The signer publishes the revocation by itself, in a CRL of its own.
    let (auto, _) = published(&file, |n, der| n > first && contains(der, &bad_serial));

    // estctl asks for one too, and writes it where it is told.
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
    assert!(
        shown.contains(&format!("CRL number {}", auto + 1)),
        "{shown}"
    );
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

    // The number survives a restart: it is in the ledger, not in memory.
    assert_eq!(
        hsm_est_pki::crl::crl_number(&std::fs::read(&file).unwrap()),
        Some(auto + 1)
    );
    // For FreeRADIUS the file can be PEM.
    app.stop();
    let text = std::fs::read_to_string(&signer_yaml).unwrap();
    std::fs::write(&signer_yaml, format!("{text}  format: pem\n")).unwrap();
    app.start();
    let (after_restart, _) = published(&file, |n, _| n > auto + 1);
    assert_eq!(after_restart, auto + 2);
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .starts_with("-----BEGIN X509 CRL-----"));
    ok(&run(Command::new("openssl")
        .args(["crl", "-noout", "-in"])
        .arg(&file)));
    let shown = ok(&app.estctl_operator(&["crl", "show", "--config", &cfg]));
    assert!(
        shown.contains(&format!("CRL number {after_restart}"))
            && shown.contains("1 revoked certificate(s)"),
        "{shown}"
    );
    let audit = std::fs::read_to_string(app.path("audit.jsonl")).unwrap();
    for n in 1..=after_restart {
        assert!(
            audit.lines().any(|l| l.contains("\"event\":\"crl_issued\"")
                && l.contains(&format!("\"number\":{n},"))),
            "no crl_issued record for CRL {n}:\n{audit}"
        );
    }
    assert!(audit.contains("\"actor\":\"signer:automatic\""));
    ok(&app.estctl(&["audit", "verify", "--config", &cfg]));

    // A burst of revocations shares CRLs: 30 devices revoked at once by 10 clients (the
    // admin socket's connection cap is below 30) cost a few signatures, not 30, and the
    // published CRL lists them all.
    let cns: Vec<String> = (0..30).map(|i| format!("crl-burst-{i:02}")).collect();
    for cn in &cns {
        boot(&app, cn);
    }
    let (before, _) = published(&file, |_, _| true);
    let threads: Vec<_> = cns
        .chunks(3)
        .map(|chunk| {
            let (chunk, mut client) = (chunk.to_vec(), app.admin_client());
            std::thread::spawn(move || {
                for cn in chunk {
                    let answer = client
                        .call(&hsm_est_proto::Request::DeviceRevoke {
                            cn,
                            reason: 1,
                            actor: "burst".into(),
                        })
                        .unwrap();
                    assert!(matches!(
                        answer,
                        hsm_est_proto::Response::Revoked { count: 1 }
                    ));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (after, _) = published(&file, |_, der| {
        use der::Decode;
        x509_cert::crl::CertificateList::from_der(der)
            .ok()
            .and_then(|c| c.tbs_cert_list.revoked_certificates)
            .is_some_and(|r| r.len() == 31)
    });
    eprintln!(
        "30 revocations from 10 clients at once: {} CRL(s)",
        after - before
    );
    assert!(after - before <= 5, "{} CRLs for one burst", after - before);
}

#[test]
fn the_frontend_publishes_the_crl_over_plain_http() {
    use common::demo::Demo;
    let mut demo = Demo::start("crl-http", "base64");
    demo.stop();
    demo.append_signer("crl:\n  file: published.crl\n  validity_hours: 24\n");
    let port = demo.add_publication_listener();
    let _signer = demo.spawn_ready(&signer_bin(), "signer.yaml", "signer.log");
    let _frontend = demo.spawn_ready(&frontend_bin(), "frontend.yaml", "frontend.log");
    let admin = signer_bin().with_file_name("est-admin");
    let _admin = demo.spawn_ready(&admin, "admin.yaml", "admin.log");
    let fetch = |path: &str, extra: &[&str]| {
        let out = demo.path("fetched.crl");
        let _ = std::fs::remove_file(&out);
        let status = ok(&run(Command::new("curl")
            .args(["-s", "--max-time", "10", "-o"])
            .arg(&out)
            .args(["-w", "%{http_code} %{content_type}"])
            .args(extra)
            .arg(format!("http://127.0.0.1:{port}{path}"))));
        (status, std::fs::read(&out).unwrap_or_default())
    };
    // The signer's start-up CRL, relayed as DER.
    let (status, first) = fetch("/crl", &[]);
    assert_eq!(status, "200 application/pkix-crl", "{status}");
    let number = hsm_est_pki::crl::crl_number(&first).expect("a CRL");
    let ca = hsm_est_signer::ca::CaChain::load(&demo.ca()).unwrap();
    hsm_est_pki::crl::verify_crl_signature(&first, &ca.spki).unwrap();

    // A pump is revoked; the CRL on the wire lists it within seconds.
    let (key, csr) = demo.csr("pub", "/CN=published-pump-1");
    let boot = demo.curl(
        &[
            "-u",
            &demo.basic(),
            "--data-binary",
            &format!("@{}", csr.display()),
        ],
        "iqe/bootstrap",
    );
    assert_eq!(boot.status, 200);
    let boot_pem = demo.path("boot.pem");
    std::fs::write(&boot_pem, common::demo::pkcs7_certs(&boot.body_file)).unwrap();
    let device = demo.admin_curl(
        &["-u", &demo.admin_basic()],
        "/api/devices/published-pump-1",
    );
    let v: serde_json::Value = serde_json::from_slice(&device.body).unwrap();
    let serial = hex::decode(v["current_serial"].as_str().unwrap()).unwrap();
    let revoked = demo.admin_revoke("published-pump-1");
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, crl) = fetch("/ca.crl", &[]);
        if hsm_est_pki::crl::crl_number(&crl).is_some_and(|n| n > number) && contains(&crl, &serial)
        {
            hsm_est_pki::crl::verify_crl_signature(&crl, &ca.spki).unwrap();
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the revocation never reached /crl"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    // The frontend refuses the revoked certificate itself, from the CRL, before the signer
    // is asked.
    let (_, csr2) = demo.csr("pub2", "/CN=published-pump-1");
    let with_revoked = demo.curl(
        &[
            "--cert",
            boot_pem.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--data-binary",
            &format!("@{}", csr2.display()),
        ],
        "iqe/simpleenroll",
    );
    assert_eq!(with_revoked.status, 403, "{}", with_revoked.text());
    assert!(
        with_revoked.text().contains("revoked"),
        "{}",
        with_revoked.text()
    );
    assert!(demo.frontend_log_shows("refused: revoked (CRL"));

    // Only GET and HEAD of the CRL.
    assert!(fetch("/crl", &["-X", "POST"]).0.starts_with("405"));
    assert!(fetch("/.well-known/est/cacerts", &[]).0.starts_with("404"));
    assert!(fetch("/crl", &["-I"]).0.starts_with("200"));
}

/// A CRL far larger than a request frame may be (12,000 revoked certificates, about
/// 470 KB, where requests stop at 256 KiB) crosses the socket and is served on `/crl`
/// whole; the frontend fetches it again only when its number changes.
#[test]
fn a_large_crl_is_served_and_fetched_only_when_it_changes() {
    use common::demo::Demo;
    use hsm_est_signer::ledger::{Ledger, LedgerWrite};
    const REVOKED: u32 = 12_000;
    let mut demo = Demo::start("crl-large", "base64");
    demo.stop();
    let ledger = hsm_est_signer::ledger::SqliteLedger::open(&demo.path("ledger.sqlite")).unwrap();
    preload_devices(&ledger, REVOKED);
    let head = ledger.audit_head().unwrap().unwrap();
    let revokes: Vec<LedgerWrite> = (0..REVOKED)
        .map(|i| {
            let mut serial = vec![0x41];
            serial.extend_from_slice(&i.to_be_bytes());
            LedgerWrite::Revoke {
                serial,
                at_ms: 1_700_000_000_000,
                reason: 1,
            }
        })
        .collect();
    ledger.apply(&revokes, &head).unwrap();
    drop(ledger);
    demo.append_signer("crl:\n  file: published.crl\n  validity_hours: 24\n");
    let port = demo.add_publication_listener();
    let _signer = demo.spawn_ready(&signer_bin(), "signer.yaml", "signer.log");
    let _frontend = demo.spawn_ready(&frontend_bin(), "frontend.yaml", "frontend.log");
    let file = demo.path("published.crl");
    let (number, on_disk) = published(&file, |n, _| n >= 1);
    assert!(on_disk.len() > 300 * 1024, "{} bytes", on_disk.len());
    let fetch = || {
        let out = demo.path("large.crl");
        let status = ok(&run(Command::new("curl")
            .args(["-s", "--max-time", "20", "-o"])
            .arg(&out)
            .args(["-w", "%{http_code}"])
            .arg(format!("http://127.0.0.1:{port}/crl"))));
        (status, std::fs::read(&out).unwrap())
    };
    let (status, served) = fetch();
    assert_eq!(status, "200");
    assert_eq!(served, on_disk, "the CRL on /crl is the one in the file");
    let list = <x509_cert::crl::CertificateList as der::Decode>::from_der(&served).unwrap();
    assert_eq!(
        list.tbs_cert_list.revoked_certificates.unwrap().len(),
        REVOKED as usize
    );
    assert_eq!(hsm_est_pki::crl::crl_number(&served), Some(number));
    // After the cache's five seconds the frontend asks again with the number it has, and
    // the signer answers "unchanged": the same CRL, no error anywhere.
    std::thread::sleep(std::time::Duration::from_secs(6));
    let (status, again) = fetch();
    assert_eq!((status.as_str(), again.len()), ("200", served.len()));
    let log = demo.frontend_log();
    assert!(!log.contains("ERROR") && !log.contains("error"), "{log}");
    let signer_log = std::fs::read_to_string(demo.path("signer.log")).unwrap();
    assert!(!signer_log.contains("cannot encode"), "{signer_log}");
}
