//! The dashboard and the admin API over 100,000 devices, pre-loaded through the ledger's
//! own interface: the first page, a page deep in the list, and filtered searches all
//! answer with the right rows. Each case is requested 200 times on one kept-alive
//! connection and the times are printed for docs/PERFORMANCE.md; they are never asserted
//! (the machines are shared and noisy).

mod common;

use std::process::Command;

use common::demo::*;
use common::{preload_devices, run};

const DEVICES: u32 = 100_000;
const ROUNDS: usize = 200;

/// `ROUNDS` GETs of `path` on one connection (curl reuses it between URLs); the pages'
/// text, and the time of each transfer in milliseconds, TLS handshake excluded.
fn timed(demo: &Demo, args: &[&str], path: &str) -> (String, Vec<f64>) {
    let url = demo.admin_url(path);
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--cacert"]).arg(demo.ca()).args(args);
    for _ in 0..ROUNDS {
        cmd.args([
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{time_total} %{time_appconnect}\\n",
            &url,
        ]);
    }
    let out = run(&mut cmd);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut ms = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f[0], "200", "{path}: {line}");
        let total: f64 = f[1].parse().unwrap();
        let handshake: f64 = f[2].parse().unwrap();
        ms.push((total - handshake) * 1000.0);
    }
    assert_eq!(ms.len(), ROUNDS);
    let page = demo.admin_curl(args, path);
    assert_eq!(page.status, 200);
    (page.text(), ms)
}

fn report(case: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    eprintln!(
        "{case}: median {:.1} ms, p99 {:.1} ms, max {:.1} ms over {ROUNDS}",
        ms[ms.len() / 2],
        ms[ms.len() * 99 / 100],
        ms[ms.len() - 1]
    );
}

#[test]
fn dashboard_and_api_answer_over_a_hundred_thousand_devices() {
    let mut demo = Demo::start("admin-scale", "base64");
    demo.stop();
    let ledger = hsm_est_signer::ledger::SqliteLedger::open(&demo.path("ledger.sqlite")).unwrap();
    preload_devices(&ledger, DEVICES);
    drop(ledger);
    demo.launch("base64");
    let session = AdminSession::login(&demo, "scale");
    let cookie = ["-b", session.jar.as_str()];

    let (first, ms) = timed(&demo, &cookie, "/devices");
    assert!(first.contains("ward-a-pump-000000") && first.contains("rel=\"next\""));
    report("dashboard device list, first page of 50", ms);
    let (deep, ms) = timed(&demo, &cookie, "/devices?after=ward-m-pump-050000");
    assert!(deep.contains("ward-m-pump-050010"), "{deep}");
    report("dashboard device list, a page after 50,000 devices", ms);
    let (search, ms) = timed(&demo, &cookie, "/devices?q=ward-q-pump-0999");
    assert!(
        search.contains("ward-q-pump-099908") && search.contains("ward-q-pump-099986"),
        "{search}"
    );
    report("dashboard search by CN prefix", ms);
    let (filtered, ms) = timed(
        &demo,
        &cookie,
        "/devices?status=revoked&expiring_within_days=7",
    );
    assert!(filtered.contains("ward-a-pump-000000") && filtered.contains(">revoked<"));
    report("dashboard filter: revoked, expiring within 7 days", ms);
    let (overview, ms) = timed(&demo, &cookie, "/");
    assert!(overview.contains("99000"), "{overview}");
    report("dashboard overview (counts over the ledger)", ms);

    let basic = demo.admin_basic();
    let api = ["-u", basic.as_str()];
    let (json, ms) = timed(
        &demo,
        &api,
        "/api/devices?limit=100&after=ward-y-pump-050000",
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["devices"].as_array().unwrap().len(), 100);
    report("API device list, 100 per page, deep", ms);
    let (json, ms) = timed(
        &demo,
        &api,
        "/api/devices?status=revoked&prefix=ward-a-&limit=500",
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    // i % 100 == 0 and i % 26 == 0: multiples of 1300 below 100,000.
    assert_eq!(v["devices"].as_array().unwrap().len(), 77);
    report("API filtered search (status and prefix)", ms);
}
