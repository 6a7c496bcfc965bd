//! `estctl backup` and `estctl restore` against a whole appliance (`estctl demo`: real
//! token, real signer and frontend, real TLS): a backup taken under load restores onto a
//! fresh directory and serves with every certificate delivered before it; a backup whose
//! chain or ledger does not hold is refused, and nothing is written.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use common::demo::*;
use common::ok;

fn bootstrap(demo: &Demo, name: &str, cn: &str, from: &str) -> Answer {
    let (_, csr) = demo.csr(name, &format!("/CN={cn}/O=TestHospital/C=US"));
    let basic = demo.basic();
    let data = format!("@{}", csr.display());
    demo.curl(
        &["-u", &basic, "--interface", from, "--data-binary", &data],
        "iqe/bootstrap",
    )
}

fn estctl_backup(demo: &Demo, out: &Path) -> String {
    ok(&demo.estctl(&[
        "backup",
        "--config",
        demo.path("signer.yaml").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]))
}

fn restore(target: &Demo, from: &Path) -> std::process::Output {
    target.estctl(&[
        "restore",
        "--from",
        from.to_str().unwrap(),
        "--config",
        target.path("signer.yaml").to_str().unwrap(),
    ])
}

fn serials_in(ledger: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(ledger).unwrap();
    let mut stmt = conn
        .prepare("SELECT hex(serial) FROM certificates")
        .unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|s| s.unwrap().to_lowercase())
        .collect()
}

/// The serial (hex) of the certificate in a certs-only PKCS#7 answer, as openssl sees it.
fn serial_of(demo: &Demo, answer: &Answer) -> String {
    let pem = pkcs7_certs(&answer.body_file);
    let path = demo.path(&format!("serial-{}.pem", std::process::id()));
    let _ = std::fs::remove_file(&path);
    std::fs::write(&path, pem).unwrap();
    let out = common::openssl(&["x509", "-noout", "-serial", "-in", path.to_str().unwrap()]);
    out.trim().strip_prefix("serial=").unwrap().to_lowercase()
}

#[test]
fn a_backup_taken_under_load_restores_onto_a_fresh_directory_and_serves() {
    let mut demo = Demo::start("backup-live", "der");
    // The gateway's login is cached before the load starts (see multinode.rs).
    assert_eq!(
        bootstrap(&demo, "warm", "warm-up-0", "127.0.0.9").status,
        200
    );
    let stop = AtomicBool::new(false);
    let delivered: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
    let backup_dir = demo.path("backup-1");
    let before_backup = std::thread::scope(|s| {
        for w in 0..4 {
            let (demo, stop, delivered) = (&demo, &stop, &delivered);
            s.spawn(move || {
                let from = format!("127.0.0.{}", 20 + w);
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let cn = format!("load-{w}-{i}");
                    let a = bootstrap(demo, &format!("l{w}-{i}"), &cn, &from);
                    if a.status == 200 {
                        let serial = serial_of(demo, &a);
                        delivered.lock().unwrap().push((cn, serial));
                    }
                    i += 1;
                }
            });
        }
        std::thread::sleep(std::time::Duration::from_secs(3));
        // Everything delivered so far must be in the backup; what comes later may be.
        let before = delivered.lock().unwrap().clone();
        let out = estctl_backup(&demo, &backup_dir);
        assert!(out.contains("the token is not included"), "{out}");
        std::thread::sleep(std::time::Duration::from_secs(1));
        stop.store(true, Ordering::Relaxed);
        before
    });
    assert!(before_backup.len() >= 4, "{} before", before_backup.len());
    let all = delivered.into_inner().unwrap();
    assert!(
        all.len() > before_backup.len(),
        "the load went on during the backup"
    );
    let manifest = std::fs::read_to_string(backup_dir.join("MANIFEST.json")).unwrap();
    assert!(manifest.contains("\"audit_head\"") && manifest.contains("ledger.sqlite"));
    assert!(!backup_dir.join("token").exists() && !backup_dir.join("token-pin").exists());
    demo.stop();

    // A fresh directory: the token comes back by the HSM's own procedure (here, a copy);
    // the ledger, the audit log, CA chain and policy come from the backup.
    let mut fresh = demo.copy_without_records("backup-restored", &[]);
    std::fs::remove_file(fresh.path("ca.pem")).unwrap();
    std::fs::remove_dir_all(fresh.path("policy")).unwrap();
    let out = ok(&restore(&fresh, &backup_dir));
    assert!(out.contains("audit log verified"), "{out}");
    let restored = serials_in(&fresh.path("ledger.sqlite"));
    let missing: Vec<&(String, String)> = before_backup
        .iter()
        .filter(|(_, s)| !restored.contains(s))
        .collect();
    assert!(
        missing.is_empty(),
        "delivered before the backup, not restored: {missing:?}"
    );
    // Never over an existing ledger.
    let again = restore(&fresh, &backup_dir);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("never overwrites"));

    fresh.launch("der");
    let verify = ok(&fresh.estctl(&[
        "audit",
        "verify",
        "--config",
        fresh.path("signer.yaml").to_str().unwrap(),
    ]));
    assert!(verify.contains("ledger agrees"), "{verify}");
    // The restored appliance knows its devices and issues to new ones.
    let (known, _) = &before_backup[0];
    assert_eq!(bootstrap(&fresh, "known", known, "127.0.0.30").status, 409);
    assert_eq!(
        bootstrap(&fresh, "new", "after-restore-1", "127.0.0.30").status,
        200
    );
}

/// Rewrites the manifest's digest of `rel` (the attacker who edits the backup edits its
/// manifest too), so that restore's own chain and ledger checks are what refuse.
fn reseal(backup: &Path, rel: &str) {
    let path = backup.join("MANIFEST.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        &std::fs::read(backup.join(rel)).unwrap(),
    );
    m["files"][rel] = hex::encode(digest.as_ref()).into();
    std::fs::write(&path, serde_json::to_string_pretty(&m).unwrap()).unwrap();
}

fn copy_backup(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    ok(&common::run(
        std::process::Command::new("cp").arg("-a").arg(from).arg(to),
    ));
}

fn refused(target: &Demo, backup: &Path, why: &str) {
    let out = restore(target, backup);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "restored: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.contains(why), "{why:?} not in {stderr}");
    assert!(!target.path("ledger.sqlite").exists() && !target.path("audit.jsonl").exists());
}

#[test]
fn restore_refuses_a_backup_whose_chain_or_ledger_does_not_hold() {
    let demo = Demo::start("backup-bad", "der");
    for i in 0..3 {
        assert_eq!(
            bootstrap(&demo, &format!("d{i}"), &format!("bad-{i}"), "127.0.0.40").status,
            200
        );
    }
    let good = demo.path("good");
    estctl_backup(&demo, &good);
    assert_eq!(bootstrap(&demo, "d3", "bad-3", "127.0.0.40").status, 200);
    let later = demo.path("later");
    estctl_backup(&demo, &later);
    let target = demo.copy_without_records("backup-bad-target", &[]);
    let work: PathBuf = demo.path("work");

    // A file changed and the manifest left alone.
    copy_backup(&good, &work);
    std::fs::write(work.join("policy/iqe-bootstrap.yaml"), "name: changed\n").unwrap();
    refused(&target, &work, "changed since the backup");

    // An audit record altered, the manifest resealed: the chain does not verify.
    copy_backup(&good, &work);
    let log = std::fs::read_to_string(work.join("audit.jsonl")).unwrap();
    let altered = log.replacen("CN=bad-1", "CN=bad-9", 1);
    assert_ne!(altered, log);
    std::fs::write(work.join("audit.jsonl"), altered).unwrap();
    reseal(&work, "audit.jsonl");
    refused(&target, &work, "does not verify");

    // Records cut off the end: the chain no longer reaches the ledger's head.
    copy_backup(&good, &work);
    let kept: String = log
        .lines()
        .take(log.lines().count() - 1)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(work.join("audit.jsonl"), kept).unwrap();
    reseal(&work, "audit.jsonl");
    refused(&target, &work, "does not verify");

    // A later ledger beside the earlier chain: the ledger does not match its audit head.
    copy_backup(&good, &work);
    std::fs::copy(later.join("ledger.sqlite"), work.join("ledger.sqlite")).unwrap();
    reseal(&work, "ledger.sqlite");
    refused(&target, &work, "audit head");
    // ... even with the recorded head rewritten to the later ledger's.
    let later_manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(later.join("MANIFEST.json")).unwrap())
            .unwrap();
    let path = work.join("MANIFEST.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    m["audit_head"] = later_manifest["audit_head"].clone();
    std::fs::write(&path, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    refused(&target, &work, "does not verify");

    // A certificate removed from the ledger: the chain names it.
    copy_backup(&good, &work);
    let conn = rusqlite::Connection::open(work.join("ledger.sqlite")).unwrap();
    conn.execute(
        "DELETE FROM certificates WHERE common_name = 'bad-2' AND serial NOT IN \
         (SELECT current_serial FROM devices)",
        [],
    )
    .unwrap();
    conn.execute("PRAGMA foreign_keys = OFF", []).unwrap();
    conn.execute("DELETE FROM devices WHERE common_name = 'bad-2'", [])
        .unwrap();
    conn.execute("DELETE FROM certificates WHERE common_name = 'bad-2'", [])
        .unwrap();
    drop(conn);
    reseal(&work, "ledger.sqlite");
    refused(&target, &work, "does not match its audit log");

    // The untouched backup restores.
    ok(&restore(&target, &good));
}
