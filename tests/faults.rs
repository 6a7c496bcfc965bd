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

/// Every (CN, certificate) a client received is in the ledger byte for byte, and SQLite's
/// integrity_check passes; returns a connection for further questions.
fn delivered_are_in_the_ledger(
    ledger_path: &std::path::Path,
    received: &[(String, Vec<u8>)],
) -> rusqlite::Connection {
    let ledger = hsm_est_signer::ledger::SqliteLedger::open(ledger_path).unwrap();
    for (cn, cert) in received {
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
    let conn = rusqlite::Connection::open(ledger_path).unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    conn
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
    let conn = delivered_are_in_the_ledger(&demo.path("ledger.sqlite"), &certificates);
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

/// What one bootstrap through the frontend got: status, head, body.
struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn unavailable_with_retry_after(&self) -> bool {
        self.status == 503 && self.head.to_ascii_lowercase().contains("retry-after:")
    }
}

/// One bootstrap of `cn` (a new P-256 key) on a new TLS connection.
fn bootstrap(demo: &Demo, basic: &str, cn: &str) -> Reply {
    let csr = csrgen::csr_for_key(&csrgen::P256Key::generate(), cn);
    let mut request = format!(
        "POST /.well-known/est/rfc/bootstrap HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Authorization: Basic {basic}\r\nContent-Type: application/pkcs10\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n",
        csr.len()
    )
    .into_bytes();
    request.extend_from_slice(&csr);
    reply(common::rawtls::exchange(demo.port, &demo.ca(), &request, Duration::from_secs(30)).0)
}

fn reply(answer: String) -> Reply {
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    Reply {
        status: common::rawtls::status(head),
        head: head.to_string(),
        body: body.to_string(),
    }
}

fn readyz(demo: &Demo) -> Reply {
    let request = b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    reply(common::rawtls::exchange(demo.port, &demo.ca(), request, Duration::from_secs(30)).0)
}

/// Every certificate a client received is in the ledger byte for byte, no other certificate
/// of these CNs is there, SQLite's integrity_check passes and the audit chain verifies.
fn nothing_lost_nothing_extra(
    demo: &Demo,
    ledger_path: &std::path::Path,
    received: &[(String, Vec<u8>)],
    prefix: &str,
) {
    let conn = delivered_are_in_the_ledger(ledger_path, received);
    let stored: i64 = conn
        .query_row(
            "SELECT count(*) FROM certificates WHERE common_name LIKE ?1",
            [format!("{prefix}%")],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        stored,
        received.len() as i64,
        "the ledger holds certificates no client received"
    );
    ok(&demo.estctl(&[
        "audit",
        "verify",
        "--config",
        demo.path("signer.yaml").to_str().unwrap(),
    ]));
}

/// Writes a file until the filesystem is full; removing it gives the space back.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
    path
}

/// Moves a file to another filesystem.
fn move_file(from: &std::path::Path, to: &std::path::Path) {
    std::fs::copy(from, to).unwrap();
    std::fs::remove_file(from).unwrap();
}

/// A small tmpfs, unmounted when dropped (also when the test fails).
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(path: std::path::PathBuf, size: &str) -> SmallDisk {
        std::fs::create_dir_all(&path).unwrap();
        ok(&run(std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)));
        SmallDisk(path)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_disk_under_the_ledger_or_the_audit_log_answers_503_issues_nothing_and_recovers() {
    let mut demo = Demo::start("diskfull-e2e", "base64");
    demo.stop();
    // The ledger and the audit log each on a filesystem of their own, as small as a
    // forgotten /var partition.
    let ledger_disk = SmallDisk::mount(demo.path("ledger-disk"), "8m");
    let audit_disk = SmallDisk::mount(demo.path("audit-disk"), "8m");
    for f in ["ledger.sqlite", "ledger.sqlite-wal", "ledger.sqlite-shm"] {
        if demo.path(f).exists() {
            move_file(&demo.path(f), &ledger_disk.0.join(f));
        }
    }
    move_file(&demo.path("audit.jsonl"), &audit_disk.0.join("audit.jsonl"));
    demo.edit(
        "signer.yaml",
        "path: ledger.sqlite",
        "path: ledger-disk/ledger.sqlite",
    );
    demo.edit(
        "signer.yaml",
        "path: audit.jsonl",
        "path: audit-disk/audit.jsonl",
    );
    let signer = demo.spawn_ready(&signer_bin(), "signer.yaml", "signer.log");
    let frontend = demo.spawn_ready(&frontend_bin(), "frontend.yaml", "frontend.log");
    let basic = <base64ct::Base64 as base64ct::Encoding>::encode_string(demo.basic().as_bytes());
    let prefix = format!("disk-{}-", std::process::id());
    let mut received: Vec<(String, Vec<u8>)> = Vec::new();
    let mut n = 0;
    let mut next_cn = || {
        n += 1;
        format!("{prefix}{n}")
    };

    for disk in [&ledger_disk, &audit_disk] {
        let name = disk.0.file_name().unwrap().to_string_lossy().into_owned();
        let cn = next_cn();
        let r = bootstrap(&demo, &basic, &cn);
        assert_eq!(r.status, 200, "{name}: before filling: {}", r.head);
        received.push((cn.clone(), certificate_for(&r.body, &cn).unwrap()));

        let filler = fill(&disk.0);
        // Some writes still fit (SQLite reuses its WAL, the last block has room): keep
        // enrolling until the disk refuses; from then on nothing may be issued.
        let mut refused = 0;
        for _ in 0..400 {
            let cn = next_cn();
            let r = bootstrap(&demo, &basic, &cn);
            match r.status {
                200 => {
                    assert_eq!(refused, 0, "{name}: issued after the disk refused a write");
                    received.push((cn.clone(), certificate_for(&r.body, &cn).unwrap()));
                }
                _ => {
                    assert!(
                        r.unavailable_with_retry_after(),
                        "{name}: a full disk must be 503 with Retry-After: {}\n{}",
                        r.head,
                        r.body
                    );
                    assert!(
                        !r.body.contains("No space") && !r.body.contains("SQLITE"),
                        "{name}: internal detail leaked: {}",
                        r.body
                    );
                    refused += 1;
                    if refused == 5 {
                        break;
                    }
                }
            }
        }
        assert_eq!(
            refused, 5,
            "{name}: the full disk never refused an issuance"
        );

        // Space returns: issuance resumes without a restart.
        std::fs::remove_file(filler).unwrap();
        let cn = next_cn();
        let mut resumed = None;
        for _ in 0..20 {
            let r = bootstrap(&demo, &basic, &cn);
            if r.status == 200 {
                resumed = Some(certificate_for(&r.body, &cn).unwrap());
                break;
            }
            assert!(r.unavailable_with_retry_after(), "{name}: {}", r.head);
            std::thread::sleep(Duration::from_millis(250));
        }
        let cert = resumed.unwrap_or_else(|| panic!("{name}: no issuance once space returned"));
        received.push((cn, cert));
    }
    drop(frontend);
    drop(signer);
    nothing_lost_nothing_extra(
        &demo,
        &ledger_disk.0.join("ledger.sqlite"),
        &received,
        &prefix,
    );
}

/// Moves the token's object files (the CA key among them) out of the token directory and
/// returns where they went.
fn take_objects(token_dir: &std::path::Path, away: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::create_dir_all(away).unwrap();
    let mut moved = Vec::new();
    for entry in std::fs::read_dir(token_dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("token.") || name == "generation" {
            continue;
        }
        if name.ends_with(".object") {
            let to = away.join(&name);
            std::fs::rename(&path, &to).unwrap();
            moved.push(to);
        } else if name.ends_with(".lock") {
            std::fs::remove_file(&path).unwrap();
        }
    }
    assert!(moved.len() >= 2, "the CA key pair's objects were not found");
    moved
}

fn the_token_directory(demo: &Demo) -> std::path::PathBuf {
    let tokens = demo.path("token/tokens");
    let mut dirs: Vec<_> = std::fs::read_dir(&tokens)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "one token");
    dirs.pop().unwrap()
}

fn wait_ready(demo: &Demo, want: u16, within: Duration) -> Reply {
    let deadline = Instant::now() + within;
    loop {
        let r = readyz(demo);
        if r.status == want || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_token_that_stops_signing_turns_readyz_false_answers_503_and_recovers() {
    let mut demo = Demo::start("token-fault", "base64");
    demo.stop();
    demo.edit(
        "signer.yaml",
        "  sessions: 2\n",
        "  sessions: 2\n  restart_after_seconds: 8\n",
    );
    let mut signer = demo.spawn_ready(&signer_bin(), "signer.yaml", "signer.log");
    let _frontend = demo.spawn_ready(&frontend_bin(), "frontend.yaml", "frontend.log");
    let basic = <base64ct::Base64 as base64ct::Encoding>::encode_string(demo.basic().as_bytes());
    let prefix = format!("tok-{}-", std::process::id());
    let mut received: Vec<(String, Vec<u8>)> = Vec::new();
    let issue = |received: &mut Vec<(String, Vec<u8>)>, cn: &str| {
        received.push(issued(&demo, &basic, cn));
    };
    let refused = |cn: &str| refused_with_retry_after(&demo, &basic, cn);
    issue(&mut received, &format!("{prefix}1"));
    assert_eq!(readyz(&demo).status, 200);
    let pid = signer.0.as_ref().unwrap().id();
    let token_dir = the_token_directory(&demo);

    // 1. The key's objects vanish from the token (a network HSM whose partition is
    //    reloaded, here files moved away): 503, readyz false with the reason.
    let moved = take_objects(&token_dir, &demo.path("objects-away"));
    refused(&format!("{prefix}2"));
    let r = readyz(&demo);
    assert_eq!(r.status, 503, "{}", r.head);
    assert!(r.body.contains("token cannot sign"), "{}", r.body);
    let ping = demo.estctl(&[
        "ping",
        "--config",
        demo.path("signer.yaml").to_str().unwrap(),
    ]);
    assert!(!ping.status.success());
    assert!(
        String::from_utf8_lossy(&ping.stderr).contains("signer.token_unavailable"),
        "{}",
        String::from_utf8_lossy(&ping.stderr)
    );
    // Another key appears under the CA key's label (imported, so neither always sensitive
    // nor never extractable): the signer finds it, refuses it, and signs nothing with it.
    let before: std::collections::BTreeSet<_> = std::fs::read_dir(&token_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    import_key(&demo, "hsm-est-demo-ca");
    refused(&format!("{prefix}2b"));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        readyz(&demo).status,
        503,
        "a foreign key under the CA label"
    );
    let ping = demo.estctl(&[
        "ping",
        "--config",
        demo.path("signer.yaml").to_str().unwrap(),
    ]);
    assert!(
        String::from_utf8_lossy(&ping.stderr).contains("not protected by the token"),
        "{}",
        String::from_utf8_lossy(&ping.stderr)
    );
    for path in std::fs::read_dir(&token_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
    {
        if !before.contains(&path) {
            std::fs::remove_file(path).unwrap();
        }
    }
    // The real objects come back (restored under new object names), and another application writes to
    // the token, which makes SoftHSM read its directory again: the signer finds the key by
    // its label, checks it is the same protected key, and signs again without a restart.
    for object in &moved {
        let fresh = token_dir.join(format!("{:032x}", rand_u128()));
        std::fs::copy(object, fresh.with_extension("object")).unwrap();
        std::fs::write(fresh.with_extension("lock"), b"").unwrap();
    }
    touch_token(&demo);
    let r = wait_ready(&demo, 200, Duration::from_secs(20));
    assert_eq!(r.status, 200, "readyz did not come back: {}", r.body);
    issue(&mut received, &format!("{prefix}3"));
    assert_eq!(
        signer.0.as_ref().unwrap().id(),
        pid,
        "recovered in the same process"
    );
    let log = std::fs::read_to_string(demo.path("signer.log")).unwrap();
    assert!(log.contains("found the key again"), "{log}");
    assert!(log.contains("token available again"), "{log}");

    // 2. The whole token directory goes away. SoftHSM never shows a token again in a
    //    process that saw it go: the signer says why and exits with status 75 after
    //    `restart_after_seconds`; systemd (here the test) starts it again.
    let away = demo.path("token-away");
    std::fs::rename(&token_dir, &away).unwrap();
    refused(&format!("{prefix}4"));
    assert_eq!(readyz(&demo).status, 503);
    let status = wait_exit(&mut signer, Duration::from_secs(60));
    assert_eq!(status.code(), Some(75), "{status}");
    let log = std::fs::read_to_string(demo.path("signer.log")).unwrap();
    assert!(
        log.contains("the token has not signed for 8 s") && log.contains("exiting with status 75"),
        "{log}"
    );
    // While it is down the frontend answers 503 with Retry-After, as for any outage.
    refused(&format!("{prefix}5"));
    std::fs::rename(&away, &token_dir).unwrap();
    signer = demo.spawn_ready(&signer_bin(), "signer.yaml", "signer.log");
    let r = wait_ready(&demo, 200, Duration::from_secs(20));
    assert_eq!(r.status, 200, "{}", r.body);
    issue(&mut received, &format!("{prefix}6"));
    let audit = std::fs::read_to_string(demo.path("audit.jsonl")).unwrap();
    assert!(
        audit.contains("token-lost"),
        "the stop is audited with its cause"
    );

    drop(signer);
    nothing_lost_nothing_extra(&demo, &demo.path("ledger.sqlite"), &received, &prefix);
}

/// A bootstrap that must succeed: (CN, certificate).
fn issued(demo: &Demo, basic: &str, cn: &str) -> (String, Vec<u8>) {
    let r = bootstrap(demo, basic, cn);
    assert_eq!(r.status, 200, "{cn}: {}\n{}", r.head, r.body);
    (cn.to_string(), certificate_for(&r.body, cn).unwrap())
}

/// A bootstrap that must be answered 503 with Retry-After.
fn refused_with_retry_after(demo: &Demo, basic: &str, cn: &str) {
    let r = bootstrap(demo, basic, cn);
    assert!(
        r.unavailable_with_retry_after(),
        "{cn}: {}\n{}",
        r.head,
        r.body
    );
}

/// Waits for the process to exit by itself; the guard no longer holds it.
fn wait_exit(process: &mut ChildGuard, within: Duration) -> std::process::ExitStatus {
    let child = process.0.as_mut().unwrap();
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the process did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    process.0 = None;
    status
}

/// The PKCS#11 module of `tests/fault-module`, built into the demo's directory: SoftHSM,
/// with C_SignInit and C_Sign answering the CK_RV in `fault` while that file exists.
fn fault_module(demo: &Demo) -> std::path::PathBuf {
    let source =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fault-module/pkcs11_fault.c");
    let module = demo.path("fault-module.so");
    ok(&run(std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&module)
        .arg(&source)
        .arg("-ldl")));
    module
}

/// The token's module starts failing under a running signer. A failure that says nothing
/// about the token (`CKR_FUNCTION_FAILED`) turns readyz false and answers 503 until a
/// signature works again, in the same process. A lost session (`CKR_SESSION_HANDLE_INVALID`)
/// or a failing device (`CKR_DEVICE_ERROR`) cannot be mended without a new login, which
/// the signer never makes twice: it exits with status 75 at once, not after
/// `restart_after_seconds`, and says why; a restart signs again. Nothing is issued while
/// the module fails, and every certificate delivered is in the ledger.
#[test]
fn a_module_that_returns_errors_turns_readyz_false_and_a_lost_session_restarts_the_signer() {
    let mut demo = Demo::start("module-fault", "base64");
    demo.stop();
    let module = fault_module(&demo);
    demo.edit(
        "signer.yaml",
        "  module: /usr/lib/softhsm/libsofthsm2.so\n",
        &format!("  module: {}\n", module.display()),
    );
    demo.edit(
        "signer.yaml",
        "  sessions: 2\n",
        "  sessions: 2\n  restart_after_seconds: 600\n",
    );
    let fault = demo.path("fault");
    let env = [("HSM_EST_FAULT_FILE", fault.as_path())];
    let spawn_signer = || demo.spawn_ready_with(&signer_bin(), "signer.yaml", "signer.log", &env);
    let mut signer = spawn_signer();
    let _frontend = demo.spawn_ready(&frontend_bin(), "frontend.yaml", "frontend.log");
    let basic = <base64ct::Base64 as base64ct::Encoding>::encode_string(demo.basic().as_bytes());
    let prefix = format!("mod-{}-", std::process::id());
    let mut received = vec![issued(&demo, &basic, &format!("{prefix}1"))];
    let pid = signer.0.as_ref().unwrap().id();

    // 1. CKR_FUNCTION_FAILED: not ready, 503, and back without a restart.
    std::fs::write(&fault, "6").unwrap();
    refused_with_retry_after(&demo, &basic, &format!("{prefix}2"));
    let r = readyz(&demo);
    assert_eq!(r.status, 503, "{}", r.head);
    assert!(r.body.contains("token cannot sign"), "{}", r.body);
    refused_with_retry_after(&demo, &basic, &format!("{prefix}3"));
    std::fs::remove_file(&fault).unwrap();
    let r = wait_ready(&demo, 200, Duration::from_secs(20));
    assert_eq!(r.status, 200, "readyz did not come back: {}", r.body);
    received.push(issued(&demo, &basic, &format!("{prefix}4")));
    assert_eq!(signer.0.as_ref().unwrap().id(), pid, "same process");

    // 2. and 3. A lost session, then a device error: exit 75 at once, with the reason.
    for (rv, name) in [("b3", "SessionHandleInvalid"), ("30", "DeviceError")] {
        std::fs::write(&fault, rv).unwrap();
        let started = Instant::now();
        refused_with_retry_after(&demo, &basic, &format!("{prefix}{rv}"));
        let status = wait_exit(&mut signer, Duration::from_secs(30));
        assert_eq!(status.code(), Some(75), "{name}: {status}");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{name}: the signer waited for restart_after_seconds"
        );
        let log = std::fs::read_to_string(demo.path("signer.log")).unwrap();
        let said = log
            .lines()
            .rev()
            .find(|l| l.contains("the token session or login is lost"))
            .unwrap_or_else(|| panic!("{name}: no reason in the log:\n{log}"));
        assert!(said.contains(name), "{name}: {said}");
        assert!(said.contains("exiting with status 75"), "{said}");
        // Down, the frontend answers 503 with Retry-After; restarted, it signs again.
        refused_with_retry_after(&demo, &basic, &format!("{prefix}{rv}-down"));
        std::fs::remove_file(&fault).unwrap();
        signer = spawn_signer();
        let r = wait_ready(&demo, 200, Duration::from_secs(20));
        assert_eq!(r.status, 200, "{}", r.body);
        received.push(issued(&demo, &basic, &format!("{prefix}{rv}-after")));
    }
    let audit = std::fs::read_to_string(demo.path("audit.jsonl")).unwrap();
    assert_eq!(
        audit.matches("token-lost").count(),
        2,
        "each stop is audited with its cause"
    );
    drop(signer);
    nothing_lost_nothing_extra(&demo, &demo.path("ledger.sqlite"), &received, &prefix);
}

fn rand_u128() -> u128 {
    let mut b = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).unwrap();
    u128::from_be_bytes(b)
}

/// Another application writes to the token (imports a throwaway key under its own label),
/// which moves SoftHSM's generation counter on.
fn touch_token(demo: &Demo) {
    import_key(demo, "fault-probe");
}

/// Imports a new P-256 key into the demo's token under `label` with softhsm2-util.
fn import_key(demo: &Demo, label: &str) {
    let key = demo.path(&format!("{label}.pem"));
    ok(&run(std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&key)));
    ok(&run(std::process::Command::new("softhsm2-util")
        .arg("--import")
        .arg(&key)
        .args([
            "--token",
            "hsm-est-demo",
            "--label",
            label,
            "--id",
            "0a0b",
            "--pin",
        ])
        .arg(
            std::fs::read_to_string(demo.path("token-pin"))
                .unwrap()
                .trim(),
        )
        .env("SOFTHSM2_CONF", demo.path("token/softhsm2.conf"))));
}
