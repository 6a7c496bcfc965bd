//! Several signer nodes, one PostgreSQL ledger: two whole appliances (`estctl demo`, each
//! with its own copy of one token holding the same CA key, as two appliances in front of
//! one network HSM have) and a private PostgreSQL server started by the test.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};

use der::Decode;
use hsm_est_proto::client::SignerClient;
use hsm_est_proto::{ErrorCode, Operation, Response};

use common::csrgen::{self, C, CN, O};
use common::demo::*;
use common::ok;
use common::postgres::Postgres;
use hsm_est_signer::config::PostgresConfig;
use hsm_est_signer::ledger::{
    CertificateRecord, DeviceState, Ledger, LedgerError, LedgerWrite, PgLedger,
};

struct Cluster {
    pg: Postgres,
    a: Demo,
    b: Demo,
}

fn cluster(name: &str) -> Cluster {
    let pg = Postgres::start(name);
    let url = pg.database("hsm_est");
    let (pa, pb) = (free_port().to_string(), free_port().to_string());
    let a = Demo::start_with(
        &format!("{name}-a"),
        "der",
        &[
            "--ledger-url",
            &url,
            "--node",
            "node-a",
            "--publication-port",
            &pa,
        ],
    );
    let b = a.node_copy(
        &format!("{name}-b"),
        "der",
        &[
            "--ledger-url",
            &url,
            "--node",
            "node-b",
            "--publication-port",
            &pb,
        ],
    );
    Cluster { pg, a, b }
}

/// One bootstrap through each frontend, so that the gateway's Basic credentials are in
/// both frontends' login caches: the concurrent requests that follow reach the signers
/// instead of queueing for the bounded password verification slots.
fn warm_up(c: &Cluster) {
    for (i, node) in [&c.a, &c.b].into_iter().enumerate() {
        let (_, csr) = node.csr("warm", &format!("/CN=warm-up-{i}/O=TestHospital/C=US"));
        let basic = node.basic();
        let a = node.post_csr(&["-u", &basic], &csr, "iqe/bootstrap");
        assert_eq!(a.status, 200, "{}", a.text());
    }
}

/// curl from its own loopback address, as separate gateways would connect.
fn from(i: usize) -> String {
    format!("127.0.0.{}", 10 + i)
}

/// The serial (hex) of the certificate in a certs-only PKCS#7 answer.
fn serial_of(answer: &Answer) -> String {
    let info = cms::content_info::ContentInfo::from_der(&answer.body).expect("PKCS#7");
    let signed: cms::signed_data::SignedData =
        info.content.decode_as().expect("SignedData in the answer");
    let certs = signed.certificates.expect("certificates");
    let cms::cert::CertificateChoices::Certificate(cert) = certs.0.iter().next().unwrap() else {
        panic!("not a certificate");
    };
    hex::encode(cert.tbs_certificate.serial_number.as_bytes())
}

fn audit_verifies(demo: &Demo) -> String {
    ok(&demo.estctl(&["audit", "verify", "--config", &demo.signer_config()]))
}

#[test]
fn two_signers_two_frontends_one_database_decide_every_device_once() {
    let c = cluster("mn-race");
    warm_up(&c);
    let subj = "/CN=race-pump-001/O=TestHospital/C=US";

    // 50 bootstraps of one CN, each with its own key, half through each frontend, at once.
    let csrs: Vec<PathBuf> = (0..50)
        .map(|i| {
            let node = if i % 2 == 0 { &c.a } else { &c.b };
            node.csr(&format!("race-{i}"), subj).1
        })
        .collect();
    let barrier = Arc::new(Barrier::new(csrs.len()));
    let statuses: Vec<(u16, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = csrs
            .iter()
            .enumerate()
            .map(|(i, csr)| {
                let barrier = Arc::clone(&barrier);
                let node = if i % 2 == 0 { &c.a } else { &c.b };
                s.spawn(move || {
                    let (basic, from) = (node.basic(), from(i));
                    barrier.wait();
                    let auth = ["-u", &basic, "--interface", &from];
                    (node.post_csr(&auth, csr, "iqe/bootstrap").status, i)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<usize> = statuses
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, i)| *i)
        .collect();
    assert_eq!(winners.len(), 1, "{statuses:?}");
    // The others are told the device exists (409) or, while the winner's decision holds
    // the device's lock on either node, to retry (503).
    assert!(
        statuses.iter().all(|(s, _)| [200, 409, 503].contains(s)),
        "{statuses:?}"
    );
    assert_eq!(
        c.pg.count(
            "hsm_est",
            "SELECT count(*) FROM certificates WHERE common_name = 'race-pump-001'"
        ),
        1
    );

    // As the attacker who holds both frontends: 200 bootstrap frames for one CN straight
    // onto both signers' sockets at once. The database still lets exactly one through.
    let sockets = [c.a.path("frontend.sock"), c.b.path("frontend.sock")];
    let barrier = Arc::new(Barrier::new(200));
    let answers: Vec<Response> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..200)
            .map(|i| {
                let (barrier, socket) = (Arc::clone(&barrier), &sockets[i % 2]);
                s.spawn(move || {
                    let csr =
                        csrgen::csr(&[(CN, "hostile-pump-1"), (O, "TestHospital"), (C, "US")]);
                    let mut client = SignerClient::connect(socket).unwrap();
                    barrier.wait();
                    client
                        .call(&common::issue_request(
                            Operation::Bootstrap,
                            "iqe-bootstrap",
                            &csr,
                            &[],
                        ))
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let issued = answers
        .iter()
        .filter(|a| matches!(a, Response::Issued { .. }))
        .count();
    let unexpected: Vec<&Response> = answers
        .iter()
        .filter(|a| match a {
            Response::Issued { .. } => false,
            // Busy or known, never "unavailable": without the per-CN lock in the
            // database, racing decisions reach the commit and are refused there whole.
            Response::Error(e) => e.code != ErrorCode::DeviceDuplicate,
            _ => true,
        })
        .collect();
    assert_eq!(issued, 1, "{unexpected:?}");
    assert!(unexpected.is_empty(), "{unexpected:?}");
    assert_eq!(
        c.pg.count(
            "hsm_est",
            "SELECT count(*) FROM certificates WHERE common_name = 'hostile-pump-1'"
        ),
        1
    );

    // The device as one node made it is the device the other sees: enrol through the
    // frontend that lost, with the bootstrap certificate the winner's node issued.
    let winner = winners[0];
    let (won, lost) = if winner % 2 == 0 {
        (&c.a, &c.b)
    } else {
        (&c.b, &c.a)
    };
    let boot_key = won.path(&format!("race-{winner}-key.pem"));
    let basic = won.basic();
    let again = won.post_csr(&["-u", &basic], &csrs[winner], "iqe/bootstrap");
    assert_eq!(again.status, 200, "a bootstrap retry with the same key");
    let boot_pem = won.pem_of(&again, "boot.pem");
    let (k2, csr2) = lost.csr("enrol", subj);
    let auth = tls_args(&boot_pem, &boot_key);
    let auth: Vec<&str> = auth.iter().map(String::as_str).collect();
    let enrolled = lost.post_csr(&auth, &csr2, "iqe/simpleenroll");
    assert_eq!(enrolled.status, 200, "{}", enrolled.text());
    let enrolled_pem = lost.pem_of(&enrolled, "enrolled.pem");
    for node in [&c.a, &c.b] {
        let list = ok(&node.estctl(&["device", "list", "--config", &node.signer_config()]));
        assert!(
            list.contains("race-pump-001") && list.contains("enrolled"),
            "{list}"
        );
    }
    // Re-enrolment through the other node; the superseded certificate no longer works.
    let (k3, csr3) = won.csr("renew", subj);
    let auth = tls_args(&enrolled_pem, &k2);
    let auth: Vec<&str> = auth.iter().map(String::as_str).collect();
    let renewed = won.post_csr(&auth, &csr3, "iqe/simplereenroll");
    assert_eq!(renewed.status, 200, "{}", renewed.text());
    let renewed_pem = won.pem_of(&renewed, "renewed.pem");
    let (_, csr4) = lost.csr("stale", subj);
    assert_eq!(
        lost.post_csr(&auth, &csr4, "iqe/simplereenroll").status,
        403
    );

    // Delete on one node: the other lets the device bootstrap again.
    ok(&lost.estctl(&[
        "device",
        "delete",
        "--config",
        &lost.signer_config(),
        "race-pump-001",
    ]));
    let (k5, csr5) = won.csr("reboot", subj);
    let auth3 = tls_args(&renewed_pem, &k3);
    let auth3: Vec<&str> = auth3.iter().map(String::as_str).collect();
    assert_eq!(
        won.post_csr(&auth3, &csr3, "iqe/simplereenroll").status,
        403,
        "a deleted device's certificate renews nothing"
    );
    let reboot = won.post_csr(&["-u", &basic], &csr5, "iqe/bootstrap");
    assert_eq!(reboot.status, 200, "{}", reboot.text());
    let reboot_pem = won.pem_of(&reboot, "reboot.pem");

    // The other node's OCSP answer for the new certificate is cached as good...
    let serial = serial_of(&reboot);
    let ocsp = |node: &Demo| {
        ok(&node.estctl(&[
            "ocsp",
            "status",
            "--config",
            &node.signer_config(),
            "--serial",
            &serial,
        ]))
    };
    assert!(ocsp(lost).contains(": good"), "{}", ocsp(lost));
    // Revoke through one node's admin API: the other refuses the device everything.
    assert_eq!(won.admin_revoke("race-pump-001").status, 200);
    // ... and turns revoked at once; the other node's CRL file lists it within seconds.
    assert!(ocsp(lost).contains(": revoked"), "{}", ocsp(lost));
    let listed = |node: &Demo| {
        let text = common::openssl(&[
            "crl",
            "-inform",
            "DER",
            "-noout",
            "-text",
            "-in",
            node.path("ca.crl").to_str().unwrap(),
        ]);
        text.to_lowercase().contains(&serial)
    };
    let mut in_crl = false;
    for _ in 0..40 {
        if listed(lost) {
            in_crl = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(in_crl, "the other node's CRL does not list {serial}");
    let auth5 = tls_args(&reboot_pem, &k5);
    let auth5: Vec<&str> = auth5.iter().map(String::as_str).collect();
    let (_, csr6) = lost.csr("after-revoke", subj);
    assert_eq!(lost.post_csr(&auth5, &csr6, "iqe/simpleenroll").status, 403);
    let lost_basic = lost.basic();
    assert_ne!(
        lost.post_csr(&["-u", &lost_basic], &csr6, "iqe/bootstrap")
            .status,
        200
    );
    let list = ok(&lost.estctl(&["device", "list", "--config", &lost.signer_config()]));
    assert!(list.contains("revoked"), "{list}");

    // CRL numbers only grow, whichever node signs.
    let crl = |node: &Demo, n: &str| {
        let out = node.path(&format!("crl-{n}.der"));
        ok(&node.estctl(&[
            "crl",
            "generate",
            "--config",
            &node.signer_config(),
            "--out",
            out.to_str().unwrap(),
        ]))
    };
    let first = crl(&c.a, "1");
    let second = crl(&c.b, "2");
    let number = |text: &str| {
        text.lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("CRL number")
                    .map(|v| v.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no CRL number in {text}"))
    };
    let (n1, n2) = (number(&first), number(&second));
    assert!(
        n2.parse::<u64>().unwrap() > n1.parse::<u64>().unwrap(),
        "{first}\n{second}"
    );

    // Each node's chain verifies against its own head and its own certificates, and a
    // node can check another's chain from a copy of its log.
    for (node, other) in [(&c.a, "node-b"), (&c.b, "node-a")] {
        let out = audit_verifies(node);
        assert!(out.contains("ledger agrees"), "{out}");
        assert!(
            out.contains(&format!("node {other} shares this ledger")),
            "{out}"
        );
    }
    let out = ok(&c.a.estctl(&[
        "audit",
        "verify",
        "--config",
        &c.a.signer_config(),
        "--node",
        "node-b",
        "--log",
        c.b.path("audit.jsonl").to_str().unwrap(),
    ]));
    assert!(
        out.contains("node node-b") && out.contains("ledger agrees"),
        "{out}"
    );
    let records = std::fs::read_to_string(c.a.path("audit.jsonl")).unwrap();
    assert!(records
        .lines()
        .filter(|l| l.contains("\"event\":\"issued\""))
        .all(|l| l.contains("\"node\":\"node-a\"")));
    assert_eq!(c.pg.count("hsm_est", "SELECT count(*) FROM audit_heads"), 2);
    // A's log is not B's chain.
    let wrong = c.a.estctl(&[
        "audit",
        "verify",
        "--config",
        &c.a.signer_config(),
        "--node",
        "node-b",
        "--log",
        c.a.path("audit.jsonl").to_str().unwrap(),
    ]);
    assert!(!wrong.status.success());
}

#[test]
fn a_signer_killed_under_load_loses_no_delivered_certificate() {
    let mut c = cluster("mn-crash");
    warm_up(&c);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let delivered: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let nodes = [&c.a, &c.b];
    let counts = std::thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|w| {
                let node = nodes[w % 2];
                let (stop, delivered) = (&stop, &delivered);
                s.spawn(move || {
                    let (basic, from) = (node.basic(), from(w));
                    let mut failures = Vec::new();
                    let mut i = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let (_, csr) = node.csr(
                            &format!("w{w}-{i}"),
                            &format!("/CN=load-{w}-{i}/O=TestHospital/C=US"),
                        );
                        let a = node.post_csr(
                            &["-u", &basic, "--interface", &from],
                            &csr,
                            "iqe/bootstrap",
                        );
                        if a.status == 200 {
                            delivered.lock().unwrap().push(serial_of(&a));
                        } else {
                            failures.push(a.status);
                        }
                        i += 1;
                    }
                    failures
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_secs(4));
        let before = delivered.lock().unwrap().len();
        // B's signer dies in the middle of the load.
        nodes[1].kill9_signer();
        std::thread::sleep(std::time::Duration::from_secs(3));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let failures: Vec<u16> = workers
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        (before, failures)
    });
    let delivered = delivered.into_inner().unwrap();
    assert!(
        counts.0 >= 8 && delivered.len() > counts.0,
        "load before and after the crash: {counts:?}, {} delivered",
        delivered.len()
    );
    let stored: HashSet<String> =
        c.pg.psql("hsm_est", "SELECT encode(serial, 'hex') FROM certificates")
            .lines()
            .map(str::to_string)
            .collect();
    let missing: Vec<&String> = delivered.iter().filter(|s| !stored.contains(*s)).collect();
    assert!(
        missing.is_empty(),
        "delivered but not in the ledger: {missing:?}"
    );

    // Both chains verify; B's after its restart names what it never committed.
    c.b.reap();
    c.b.launch("der");
    for node in [&c.a, &c.b] {
        let out = audit_verifies(node);
        assert!(out.contains("ledger agrees"), "{out}");
    }
    // B issues again after the crash.
    let (_, csr) = c.b.csr("after-crash", "/CN=after-crash-001");
    let basic = c.b.basic();
    assert_eq!(
        c.b.post_csr(&["-u", &basic], &csr, "iqe/bootstrap").status,
        200
    );
}

fn certificate(serial: u8, cn: &str) -> CertificateRecord {
    CertificateRecord {
        serial: vec![0x41, serial],
        subject: format!("CN={cn}"),
        common_name: cn.into(),
        sans: vec![],
        spki_sha256: vec![serial; 32],
        not_before: 1,
        not_after: 4_000_000_000,
        profile: "iqe-bootstrap".into(),
        operation: "bootstrap".into(),
        requester: "basic:test".into(),
        client_ip: "192.0.2.1".into(),
        issued_at_ms: 5,
        der: vec![0x30, 0x00],
        ca: "default".into(),
    }
}

fn issue(serial: u8, cn: &str, status: DeviceState, supersedes: Option<u8>) -> LedgerWrite {
    LedgerWrite::Issue {
        certificate: Box::new(certificate(serial, cn)),
        device_status: Some(status),
        supersedes: supersedes.map(|s| vec![0x41, s]),
    }
}

/// The database refuses a device transition decided on state that changed meanwhile,
/// even from a signer that skipped the device lock; serials and CRL numbers are unique
/// across nodes.
#[test]
fn the_shared_ledger_refuses_stale_transitions_duplicate_serials_and_old_crl_numbers() {
    let pg = Postgres::start("mn-ledger");
    let url = pg.database("hsm_est");
    let settings = PostgresConfig {
        url,
        password_file: None,
        ca_file: None,
        pool: 2,
    };
    let a = PgLedger::open(&settings, "node-a").unwrap();
    let b = PgLedger::open(&settings, "node-b").unwrap();
    let head = |n: u64| (n, format!("{n:064x}"));
    a.apply(
        &[issue(1, "pump-1", DeviceState::BootstrapOnly, None)],
        &head(1),
    )
    .unwrap();
    // B decided "unknown device" before A's commit: its bootstrap is refused.
    let stale = b.apply(
        &[issue(2, "pump-1", DeviceState::BootstrapOnly, None)],
        &head(1),
    );
    assert!(
        matches!(&stale, Err(LedgerError::Storage(m)) if m.contains("changed under")),
        "{stale:?}"
    );
    // An enrolment that supersedes a certificate the device no longer holds, too.
    let wrong = b.apply(
        &[issue(3, "pump-1", DeviceState::Enrolled, Some(9))],
        &head(2),
    );
    assert!(wrong.is_err());
    // Nothing of the refused batches stayed: serials 2 and 3 are not on record.
    assert!(!a.serial_exists(&[0x41, 2]).unwrap());
    assert!(!a.serial_exists(&[0x41, 3]).unwrap());
    assert_eq!(b.audit_head().unwrap(), None);
    // The right expectation moves the device, seen the same from both nodes.
    b.apply(
        &[issue(3, "pump-1", DeviceState::Enrolled, Some(1))],
        &head(2),
    )
    .unwrap();
    for l in [&a, &b] {
        let d = l.device("pump-1").unwrap().unwrap();
        assert_eq!(
            (d.status, d.current_serial),
            (DeviceState::Enrolled, vec![0x41, 3])
        );
    }
    // A serial is never written twice, whichever node tries.
    let dup = a.apply(
        &[LedgerWrite::Issue {
            certificate: Box::new(certificate(3, "pump-2")),
            device_status: None,
            supersedes: None,
        }],
        &head(3),
    );
    assert!(matches!(dup, Err(LedgerError::DuplicateSerial)), "{dup:?}");
    // CRL numbers grow across nodes: B cannot reuse the number A just issued.
    let crl = |ca: &str, number| LedgerWrite::CrlIssued {
        ca: ca.into(),
        number,
    };
    a.apply(&[crl("default", 1)], &head(4)).unwrap();
    assert!(b.apply(&[crl("default", 1)], &head(5)).is_err());
    b.apply(&[crl("default", 2)], &head(5)).unwrap();
    assert_eq!(a.crl_number("default").unwrap(), 2);
    // Each CA counts its own CRLs: another CA's first CRL is its number 1.
    b.apply(&[crl("staff", 1)], &head(5)).unwrap();
    assert_eq!(a.crl_number("staff").unwrap(), 1);
    assert_eq!(a.crl_number("default").unwrap(), 2);
    // Each node keeps its own audit head; each node's serials are its own.
    assert_eq!(a.audit_head().unwrap(), Some(head(4)));
    assert_eq!(b.audit_head().unwrap(), Some(head(5)));
    assert_eq!(a.node_serials_after(None, 10).unwrap(), vec![vec![0x41, 1]]);
    assert_eq!(b.node_serials_after(None, 10).unwrap(), vec![vec![0x41, 3]]);
    // One device lock per CN across nodes, released on drop.
    let held = a.lock_device("pump-1").unwrap();
    assert!(held.is_some());
    assert!(b.lock_device("pump-1").unwrap().is_none());
    assert!(b.lock_device("pump-2").unwrap().is_some());
    drop(held);
    assert!(b.lock_device("pump-1").unwrap().is_some());
    // A node that dies loses its locks with its connection.
    let c = PgLedger::open(&settings, "node-c").unwrap();
    let kept = c.lock_device("pump-9").unwrap();
    assert!(kept.is_some() && a.lock_device("pump-9").unwrap().is_none());
    std::mem::forget(kept);
    drop(c);
    let mut freed = false;
    for _ in 0..50 {
        if a.lock_device("pump-9").unwrap().is_some() {
            freed = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(freed, "the lock of a closed connection was not released");
}

fn migrate_run(demo: &Demo, url: &str) -> std::process::Output {
    demo.estctl(&[
        "ledger",
        "migrate",
        "--from",
        "sqlite",
        demo.path("ledger.sqlite").to_str().unwrap(),
        "--to",
        "postgres",
        url,
        "--node",
        "node-a",
    ])
}

fn migrate(demo: &Demo, url: &str) -> String {
    ok(&migrate_run(demo, url))
}

/// Moving a live appliance with 10,000 devices onto PostgreSQL: the copy is verified,
/// a second run copies only what changed, and the device rules hold on the new ledger.
#[test]
fn a_sqlite_ledger_with_ten_thousand_devices_migrates_and_keeps_its_device_rules() {
    const DEVICES: u32 = 10_000;
    let pg = Postgres::start("mn-migrate");
    let url = pg.database("hsm_est");
    let mut demo = Demo::start("mn-migrate", "der");
    let subj = "/CN=mig-pump-001/O=TestHospital/C=US";
    let basic = demo.basic();
    let (boot_key, csr) = demo.csr("boot", subj);
    let boot = demo.post_csr(&["-u", &basic], &csr, "iqe/bootstrap");
    assert_eq!(boot.status, 200, "{}", boot.text());
    let boot_pem = demo.pem_of(&boot, "boot.pem");
    demo.stop();
    let ledger = hsm_est_signer::ledger::SqliteLedger::open(&demo.path("ledger.sqlite")).unwrap();
    common::preload_devices(&ledger, DEVICES);
    drop(ledger);

    // First pass while the appliance runs and issues.
    demo.launch("der");
    let first = migrate(&demo, &url);
    assert!(
        first.contains(&format!(
            "{} devices compared equal row by row",
            DEVICES + 1
        )),
        "{first}"
    );
    let (_, csr) = demo.csr("late", "/CN=mig-late-001/O=TestHospital/C=US");
    assert_eq!(
        demo.post_csr(&["-u", &basic], &csr, "iqe/bootstrap").status,
        200
    );
    demo.stop();
    // The final pass, with the signer stopped, copies just the late device.
    let second = migrate(&demo, &url);
    assert!(
        second.contains("(1 certificate rows and 1 device rows written now"),
        "{second}"
    );
    assert!(
        migrate(&demo, &url).contains("(0 certificate rows and 0 device rows written now"),
        "idempotent"
    );
    let sqlite = rusqlite::Connection::open(demo.path("ledger.sqlite")).unwrap();
    let count = |sql: &str| -> i64 { sqlite.query_row(sql, [], |r| r.get(0)).unwrap() };
    for table in ["certificates", "devices"] {
        let sql = format!("SELECT count(*) FROM {table}");
        assert_eq!(pg.count("hsm_est", &sql), count(&sql), "{table}");
    }
    for status in ["enrolled", "revoked", "bootstrap_only"] {
        let sql = format!("SELECT count(*) FROM devices WHERE status = '{status}'");
        assert_eq!(pg.count("hsm_est", &sql), count(&sql), "{status}");
    }

    // The appliance now runs on PostgreSQL; its audit log continues as node-a's chain
    // (the signer refuses to start if the migrated audit head does not match it).
    demo.set_extra(&["--ledger-url", &url, "--node", "node-a"]);
    demo.launch("der");
    // A known device cannot bootstrap again; a revoked one gets nothing; a new one does.
    let (_, csr) = demo.csr("again", subj);
    assert_eq!(
        demo.post_csr(&["-u", &basic], &csr, "iqe/bootstrap").status,
        409
    );
    let (_, csr) = demo.csr("enrolled", "/CN=ward-b-pump-000001/O=TestHospital/C=US");
    assert_eq!(
        demo.post_csr(&["-u", &basic], &csr, "iqe/bootstrap").status,
        409
    );
    let (_, csr) = demo.csr("revoked", "/CN=ward-a-pump-000000/O=TestHospital/C=US");
    assert_ne!(
        demo.post_csr(&["-u", &basic], &csr, "iqe/bootstrap").status,
        200
    );
    let (_, csr) = demo.csr("new", "/CN=mig-new-001/O=TestHospital/C=US");
    assert_eq!(
        demo.post_csr(&["-u", &basic], &csr, "iqe/bootstrap").status,
        200
    );
    // The device bootstrapped on SQLite enrols on PostgreSQL with its certificate.
    let (_, csr) = demo.csr("enrol", subj);
    let auth = tls_args(&boot_pem, &boot_key);
    let auth: Vec<&str> = auth.iter().map(String::as_str).collect();
    let enrolled = demo.post_csr(&auth, &csr, "iqe/simpleenroll");
    assert_eq!(enrolled.status, 200, "{}", enrolled.text());
    assert_eq!(
        pg.count(
            "hsm_est",
            "SELECT count(*) FROM devices WHERE common_name = 'mig-pump-001' \
             AND status = 'enrolled'"
        ),
        1
    );
    // Once the node has moved on, the old SQLite ledger cannot be copied over it.
    let refused = migrate_run(&demo, &url);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("already runs on PostgreSQL"));
}

/// The database password never sits in a config file's URL, and its file is private.
#[test]
fn a_password_in_the_url_or_a_readable_password_file_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mn-password-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let settings = |url: &str, password_file: Option<PathBuf>| PostgresConfig {
        url: url.into(),
        password_file,
        ca_file: None,
        pool: 1,
    };
    let err = |r: Result<PgLedger, LedgerError>| match r {
        Ok(_) => panic!("opened"),
        Err(e) => e.to_string(),
    };
    let e = err(PgLedger::open(
        &settings("postgresql://hsm_est:s3cret@127.0.0.1:1/hsm_est", None),
        "n",
    ));
    assert!(e.contains("password_file") && !e.contains("s3cret"), "{e}");
    let file = dir.join("ledger-password");
    std::fs::write(&file, "s3cret\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = err(PgLedger::open(
        &settings(
            "postgresql://hsm_est@127.0.0.1:1/hsm_est",
            Some(file.clone()),
        ),
        "n",
    ));
    assert!(e.contains("0644") && !e.contains("s3cret"), "{e}");
    let e = err(PgLedger::open(
        &settings(
            "postgresql://hsm_est@127.0.0.1:1/hsm_est?sslmode=require",
            None,
        ),
        "n",
    ));
    assert!(e.contains("ca_file"), "{e}");
    // A shared ledger needs the node's name; a bad one is refused by name.
    let yaml = std::fs::read_to_string(common::repo().join("config/signer.yaml")).unwrap();
    let shared = yaml.replace(
        "ledger:\n  path: /var/lib/hsm-est/ledger.sqlite",
        "ledger:\n  postgres:\n    url: postgresql://hsm_est@db/hsm_est",
    );
    assert_ne!(shared, yaml);
    let parse = |text: &str| {
        hsm_est_signer::config::SignerConfig::parse(Path::new("/etc/hsm-est/signer.yaml"), text)
            .err()
            .unwrap_or_default()
    };
    assert!(
        parse(&shared).contains("audit.node: required"),
        "{}",
        parse(&shared)
    );
    let named = shared.replace("  # node: signer-a", "  node: \"signer a/1\"");
    assert!(parse(&named).contains("audit.node"), "{}", parse(&named));
    let good = shared.replace("  # node: signer-a", "  node: signer-a");
    assert_eq!(parse(&good), "");
}

/// The database going away fails closed: 503 with Retry-After and nothing issued, then
/// service resumes on its own when the database is back.
#[test]
fn a_lost_database_answers_503_and_issuance_resumes_when_it_returns() {
    let pg = Postgres::start("mn-outage");
    let url = pg.database("hsm_est");
    let demo = Demo::start_with(
        "mn-outage",
        "der",
        &["--ledger-url", &url, "--node", "node-a"],
    );
    let basic = demo.basic();
    let (_, csr) = demo.csr("before", "/CN=outage-0/O=TestHospital/C=US");
    assert_eq!(
        demo.post_csr(&["-u", &basic], &csr, "iqe/bootstrap").status,
        200
    );
    pg.stop();
    for i in 1..4 {
        let (_, csr) = demo.csr(
            &format!("down-{i}"),
            &format!("/CN=outage-{i}/O=TestHospital/C=US"),
        );
        let a = demo.post_csr(&["-u", &basic], &csr, "iqe/bootstrap");
        assert_eq!(a.status, 503, "{}", a.text());
        assert!(a.header("retry-after").is_some(), "{}", a.headers);
        assert!(
            !a.text().contains("postgres"),
            "internal detail leaked: {}",
            a.text()
        );
    }
    // A load balancer in front of several nodes sees this one is not ready.
    let ready = demo.curl(&[], "/readyz");
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert!(
        ready.text().contains("cannot reach its ledger"),
        "{}",
        ready.text()
    );
    pg.restart();
    let mut resumed = false;
    for i in 0..30 {
        let (_, csr) = demo.csr(
            &format!("up-{i}"),
            &format!("/CN=back-{i}/O=TestHospital/C=US"),
        );
        if demo.post_csr(&["-u", &basic], &csr, "iqe/bootstrap").status == 200 {
            resumed = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(resumed, "no issuance after the database came back");
    assert_eq!(demo.curl(&[], "/readyz").status, 200);
    // None of the refused devices is on record; the audit chain explains them.
    assert_eq!(
        pg.count(
            "hsm_est",
            "SELECT count(*) FROM certificates WHERE common_name LIKE 'outage-%' \
             AND common_name <> 'outage-0'"
        ),
        0
    );
    let out = ok(&demo.estctl(&["audit", "verify", "--config", &demo.signer_config()]));
    assert!(out.contains("ledger agrees"), "{out}");
}

/// A CA and a server certificate for 127.0.0.1 made with openssl in `dir`: (CA PEM,
/// server certificate, server key).
fn database_tls_files(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let f = |n: &str| dir.join(format!("{name}-{n}"));
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = std::process::Command::new("openssl");
    ca.args(["req", "-x509"])
        .args(ec)
        .arg("-keyout")
        .arg(f("ca.key"));
    ca.arg("-out").arg(f("ca.pem"));
    ca.args(["-subj", &format!("/CN={name} database CA"), "-days", "2"]);
    ok(&common::run(&mut ca));
    let mut csr = std::process::Command::new("openssl");
    csr.arg("req").args(ec).arg("-keyout").arg(f("server.key"));
    csr.arg("-out")
        .arg(f("server.csr"))
        .args(["-subj", "/CN=127.0.0.1"]);
    ok(&common::run(&mut csr));
    std::fs::write(
        f("ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let mut sign = std::process::Command::new("openssl");
    sign.args(["x509", "-req", "-in"]).arg(f("server.csr"));
    sign.arg("-CA")
        .arg(f("ca.pem"))
        .arg("-CAkey")
        .arg(f("ca.key"));
    sign.args(["-CAcreateserial", "-days", "2", "-extfile"])
        .arg(f("ext"));
    sign.arg("-out").arg(f("server.pem"));
    ok(&common::run(&mut sign));
    (f("ca.pem"), f("server.pem"), f("server.key"))
}

/// With `ca_file` the ledger's connection is TLS (rustls) and the database server is
/// verified against those anchors: the right CA connects and works, over TLS as the
/// server's own statistics show; a server certificate from another CA is refused, and no
/// plain connection is attempted in its place.
#[test]
fn the_ledger_verifies_the_database_server_over_tls() {
    let pg = Postgres::start("tls");
    let dir = pg.dir.with_extension("certs");
    let (ca, cert, key) = database_tls_files(&dir, "right");
    let (wrong_ca, _, _) = database_tls_files(&dir, "wrong");
    pg.require_tls(&cert, &key);
    let url = pg.database("hsm_est");
    let config = |ca_file: &Path| PostgresConfig {
        url: url.clone(),
        password_file: None,
        ca_file: Some(ca_file.to_path_buf()),
        pool: 2,
    };
    let refused = PgLedger::open(&config(&wrong_ca), "node-tls").err();
    let said = format!("{refused:?}");
    assert!(
        refused.is_some(),
        "a server certificate of another CA was accepted"
    );
    assert!(said.to_lowercase().contains("certificate"), "{said}");

    let ledger = PgLedger::open(&config(&ca), "node-tls").unwrap();
    ledger.health().unwrap();
    ledger
        .apply(
            &[issue(7, "tls-pump-1", DeviceState::BootstrapOnly, None)],
            &(1, "h1".into()),
        )
        .unwrap();
    assert!(ledger.device("tls-pump-1").unwrap().is_some());
    let encrypted = pg.count(
        "hsm_est",
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = 'est-signer node-tls' AND s.ssl",
    );
    assert!(encrypted >= 1, "no TLS session from the signer");
    let plain = pg.count(
        "hsm_est",
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = 'est-signer node-tls' AND NOT s.ssl",
    );
    assert_eq!(plain, 0);
}
