//! The soak, short: `estctl bench soak` for 60 s at 200 operations per second with the
//! gateway's mix (bootstraps with HTTP Basic, simpleenroll and simplereenroll with the
//! pumps' own certificates, cacerts) against the real frontend and signer. Nothing may
//! fail, RSS and file descriptors of both processes must stay flat (the bench's own
//! verdict, from samples every 5 s), and every certificate a client received must be in
//! the ledger byte for byte, with the audit chain verifying. The 30-minute run is the same
//! command with `--seconds 1800` (docs/PERFORMANCE.md).

mod common;

use common::demo::{frontend_bin, Demo};
use common::*;
use hsm_est_signer::ledger::Ledger;

#[test]
fn sixty_seconds_of_mixed_load_fail_nothing_stay_flat_and_lose_nothing() {
    let mut demo = Demo::start("soak", "base64");
    demo.stop();
    let signer = demo.spawn_ready(&signer_bin(), "signer.yaml", "signer.log");
    let frontend = demo.spawn_ready(&frontend_bin(), "frontend.yaml", "frontend.log");
    let delivered = demo.path("delivered.txt");
    let pids = [
        signer.0.as_ref().unwrap().id().to_string(),
        frontend.0.as_ref().unwrap().id().to_string(),
    ];
    let url = format!("https://127.0.0.1:{}/.well-known/est/iqe", demo.port);
    let out = demo.estctl(&[
        "bench",
        "soak",
        "--url",
        &url,
        "--ca",
        demo.ca().to_str().unwrap(),
        "--user",
        "demo",
        "--password-file",
        demo.path("demo-password").to_str().unwrap(),
        "--rate",
        "200",
        "--seconds",
        "60",
        "--sample-seconds",
        "5",
        "--pid",
        &pids[0],
        "--pid",
        &pids[1],
        "--delivered",
        delivered.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{text}");
    assert!(
        out.status.success(),
        "the soak failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches("flat: true").count(), 2, "{text}");
    for op in ["bootstrap", "simpleenroll", "simplereenroll", "cacerts"] {
        assert!(
            text.contains(&format!("  {op}: ")),
            "no {op} in the mix: {text}"
        );
    }
    assert!(text.contains("\n  12000 ok, 0 failed"), "{text}");

    drop(frontend);
    drop(signer);
    let ledger = hsm_est_signer::ledger::SqliteLedger::open(&demo.path("ledger.sqlite")).unwrap();
    let lines = std::fs::read_to_string(&delivered).unwrap();
    let mut count = 0;
    for line in lines.lines() {
        let (serial, der) = line.split_once(' ').unwrap();
        let der = <base64ct::Base64 as base64ct::Encoding>::decode_vec(der).unwrap();
        let stored = ledger
            .certificate(&hex::decode(serial).unwrap())
            .unwrap()
            .unwrap_or_else(|| panic!("{serial}: delivered but not in the ledger"));
        assert_eq!(
            stored.record.der, der,
            "{serial}: the ledger holds other bytes"
        );
        count += 1;
    }
    // 12,000 operations, one in ten a cacerts; the warm-up login issued one more.
    assert_eq!(
        count,
        12_000 - 1_200 + 1,
        "every enrolment delivered a certificate"
    );
    let conn = rusqlite::Connection::open(demo.path("ledger.sqlite")).unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    ok(&demo.estctl(&[
        "audit",
        "verify",
        "--config",
        demo.path("signer.yaml").to_str().unwrap(),
    ]));
}
