//! Fault injection under load, end to end: 32 clients bootstrap 4,000 pumps through the
//! real frontend over TLS with HTTP Basic while the signer is killed with SIGKILL and
//! restarted, and later the frontend too. Clients do what a gateway does: on 503 they
//! honour Retry-After and send the same CSR again (bootstrap is idempotent for the same
//! key); on a broken connection they reconnect. Afterwards every pump has a certificate,
//! every certificate a client received is in the ledger byte for byte, SQLite's
//! integrity_check passes and `estctl audit verify` passes; the signer's outage was
//! answered with 503 and Retry-After, never with another error.

mod common;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::csrgen;
use common::demo::{frontend_bin, ChildGuard, Demo};
use common::rawtls::{request_on, tls_from};
use common::*;
use hsm_est_signer::ledger::Ledger;

const CLIENTS: usize = 32;
const PUMPS: usize = 4_000;

/// What the clients saw.
#[derive(Default)]
struct Seen {
    /// (CN, certificate DER) of every 200.
    certificates: Mutex<Vec<(String, Vec<u8>)>>,
    unavailable_with_retry_after: AtomicU64,
    /// Any status other than 200 and 503-with-Retry-After, with the body.
    unexpected: Mutex<Vec<String>>,
    broken_connections: AtomicU64,
    done: AtomicUsize,
}

/// The certificate in a base64 certs-only answer that names `cn`.
fn certificate_for(body: &str, cn: &str) -> Option<Vec<u8>> {
    let text: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let der = <base64ct::Base64 as base64ct::Encoding>::decode_vec(&text).ok()?;
    let info = <cms::content_info::ContentInfo as der::Decode>::from_der(&der).ok()?;
    let signed = info
        .content
        .decode_as::<cms::signed_data::SignedData>()
        .ok()?;
    signed.certificates?.0.iter().find_map(|c| match c {
        cms::cert::CertificateChoices::Certificate(c)
            if hsm_est_pki::name::common_name(&c.tbs_certificate.subject).as_deref()
                == Some(cn) =>
        {
            der::Encode::to_der(c).ok()
        }
        _ => None,
    })
}

fn client(
    port: u16,
    ca: std::path::PathBuf,
    basic: String,
    work: Vec<(String, Vec<u8>)>,
    seen: Arc<Seen>,
) {
    let mut tls = None;
    for (cn, csr) in work {
        let mut request = format!(
            "POST /.well-known/est/rfc/bootstrap HTTP/1.1\r\nHost: 127.0.0.1\r\n\
             Authorization: Basic {basic}\r\nContent-Type: application/pkcs10\r\n\
             Content-Length: {}\r\n\r\n",
            csr.len()
        )
        .into_bytes();
        request.extend_from_slice(&csr);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            assert!(Instant::now() < deadline, "{cn}: no certificate in 120 s");
            if tls.is_none() {
                tls = tls_from(Ipv4Addr::LOCALHOST, port, &ca, b"http/1.1");
                if tls.is_none() {
                    // The frontend is down: what a gateway does is try again shortly.
                    seen.broken_connections.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
            let answer = request_on(tls.as_mut().unwrap(), &request, Duration::from_secs(30));
            if answer.is_empty() {
                seen.broken_connections.fetch_add(1, Ordering::Relaxed);
                tls = None;
                continue;
            }
            let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
            let status = common::rawtls::status(head);
            if head.to_ascii_lowercase().contains("connection: close") {
                tls = None;
            }
            match status {
                200 => {
                    let cert = certificate_for(body, &cn)
                        .unwrap_or_else(|| panic!("{cn}: 200 without its certificate"));
                    seen.certificates.lock().unwrap().push((cn.clone(), cert));
                    seen.done.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                503 if head.to_ascii_lowercase().contains("retry-after:") => {
                    seen.unavailable_with_retry_after
                        .fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(200));
                }
                _ => {
                    seen.unexpected
                        .lock()
                        .unwrap()
                        .push(format!("{cn}: {head}\n{body}"));
                    break;
                }
            }
        }
    }
}

fn wait_for(seen: &Seen, done: usize) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while seen.done.load(Ordering::Relaxed) < done {
        assert!(Instant::now() < deadline, "the clients stalled");
        assert!(
            seen.unexpected.lock().unwrap().is_empty(),
            "{:?}",
            seen.unexpected.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILL (what `Child::kill` sends on Unix), and the process reaped.
fn kill_9(process: &mut ChildGuard) {
    let child = process.0.as_mut().expect("running");
    child.kill().unwrap();
    let _ = child.wait();
}

#[test]
fn kill_9_of_the_signer_and_the_frontend_under_load_loses_nothing() {
    let mut demo = Demo::start("faults", "base64");
    demo.stop();
    let mut signer = demo.spawn_ready(&signer_bin(), "signer.yaml", "signer.log");
    let mut frontend = demo.spawn_ready(&frontend_bin(), "frontend.yaml", "frontend.log");
    let basic = <base64ct::Base64 as base64ct::Encoding>::encode_string(demo.basic().as_bytes());
    let run = std::process::id();
    let pumps: Vec<(String, Vec<u8>)> = (0..PUMPS)
        .map(|i| {
            let cn = format!("fault-{run}-{i}");
            let key = csrgen::P256Key::generate();
            let csr = csrgen::csr_for_key(&key, &cn);
            (cn, csr)
        })
        .collect();
    let seen = Arc::new(Seen::default());
    let mut shares: Vec<Vec<(String, Vec<u8>)>> = (0..CLIENTS).map(|_| Vec::new()).collect();
    for (i, p) in pumps.into_iter().enumerate() {
        shares[i % CLIENTS].push(p);
    }
    let threads: Vec<_> = shares
        .into_iter()
        .map(|work| {
            let (port, ca, basic, seen) = (demo.port, demo.ca(), basic.clone(), Arc::clone(&seen));
            std::thread::spawn(move || client(port, ca, basic, work, seen))
        })
        .collect();

    // A quarter in: the signer dies mid-run, and comes back after a second.
    wait_for(&seen, PUMPS / 4);
    kill_9(&mut signer);
    std::thread::sleep(Duration::from_secs(1));
    let before_restart = seen.done.load(Ordering::Relaxed);
    signer = demo.spawn_ready(&signer_bin(), "signer.yaml", "signer.log");

    // Past half: the frontend dies; the clients reconnect to its successor.
    wait_for(&seen, (PUMPS / 2).max(before_restart + 100));
    kill_9(&mut frontend);
    std::thread::sleep(Duration::from_millis(500));
    frontend = demo.spawn_ready(&frontend_bin(), "frontend.yaml", "frontend.log");

    for t in threads {
        t.join().unwrap();
    }
    let unexpected = seen.unexpected.lock().unwrap();
    assert!(
        unexpected.is_empty(),
        "{} unexpected answers: {:?}",
        unexpected.len(),
        &unexpected[..unexpected.len().min(3)]
    );
    let certificates = seen.certificates.lock().unwrap();
    assert_eq!(certificates.len(), PUMPS, "every pump got a certificate");
    assert!(
        seen.unavailable_with_retry_after.load(Ordering::Relaxed) > 0,
        "the signer's outage was never answered 503 with Retry-After"
    );
    assert!(
        seen.broken_connections.load(Ordering::Relaxed) > 0,
        "the frontend never went away"
    );
    assert!(
        demo.frontend_log().contains("signer unavailable"),
        "the frontend never noticed the signer's death"
    );

    // Stop both, then look at what is on disk.
    drop(frontend);
    drop(signer);
    let ledger = hsm_est_signer::ledger::SqliteLedger::open(&demo.path("ledger.sqlite")).unwrap();
    for (cn, cert) in certificates.iter() {
        let serial = hsm_est_pki::cert::parse_certificate(cert)
            .unwrap()
            .tbs_certificate
            .serial_number
            .as_bytes()
            .to_vec();
        let stored = ledger
            .certificate(&serial)
            .unwrap()
            .unwrap_or_else(|| panic!("{cn}: a delivered certificate is not in the ledger"));
        assert_eq!(
            &stored.record.der, cert,
            "{cn}: the ledger holds other bytes"
        );
    }
    let conn = rusqlite::Connection::open(demo.path("ledger.sqlite")).unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let devices: i64 = conn
        .query_row(
            "SELECT count(*) FROM devices WHERE common_name LIKE ?1",
            [format!("fault-{run}-%")],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        devices, PUMPS as i64,
        "one device row per pump, no duplicates"
    );
    ok(&demo.estctl(&[
        "audit",
        "verify",
        "--config",
        demo.path("signer.yaml").to_str().unwrap(),
    ]));
}
