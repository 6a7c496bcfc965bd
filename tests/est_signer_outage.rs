//! The signer stops: the frontend answers 503 with Retry-After within its deadline (never a
//! hang or a 500), and /readyz says not ready; the signer comes back: service and readiness
//! resume without restarting the frontend. /healthz answers throughout.

mod common;

use std::time::{Duration, Instant};

use common::demo::*;
use common::signer_bin;

#[test]
fn signer_outage_gives_503_and_service_resumes() {
    let mut demo = Demo::start("outage", "der");
    demo.stop();
    let mut signer = demo.spawn_ready(&signer_bin(), "signer.yaml", "signer.log");
    let _frontend = demo.spawn_ready(&frontend_bin(), "frontend.yaml", "frontend.log");
    let basic = demo.basic();
    let enrol = |demo: &Demo, n: u32| {
        let (_, csr) = demo.csr(&format!("o{n}"), &format!("/CN=outage-pump-{n}"));
        demo.curl(
            &[
                "-u",
                &basic,
                "--data-binary",
                &format!("@{}", csr.display()),
            ],
            "bootstrap",
        )
    };
    assert_eq!(enrol(&demo, 1).status, 200);
    assert_eq!(demo.curl(&[], "/readyz").status, 200);
    assert_eq!(demo.curl(&[], "/healthz").status, 200);

    // The signer dies.
    if let Some(mut c) = signer.0.take() {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    let started = Instant::now();
    let r = enrol(&demo, 2);
    let took = started.elapsed();
    assert_eq!(r.status, 503, "{}", r.text());
    let wait: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(wait > 0);
    assert!(r.text().contains("temporarily unavailable"), "{}", r.text());
    assert!(took < Duration::from_secs(15), "took {took:?}");
    // Several more in a row: still 503, still quick.
    for n in 3..6 {
        assert_eq!(enrol(&demo, n).status, 503);
    }
    let not_ready = demo.curl(&[], "/readyz");
    assert_eq!(not_ready.status, 503, "{}", not_ready.text());
    assert_eq!(demo.curl(&[], "/healthz").status, 200);

    // The signer comes back; the same frontend process serves again.
    signer = demo.spawn_ready(&signer_bin(), "signer.yaml", "signer.log");
    assert_eq!(demo.curl(&[], "/readyz").status, 200);
    assert_eq!(enrol(&demo, 6).status, 200);
    assert_eq!(enrol(&demo, 2).status, 200);
    drop(signer);
}

/// `/` names the dashboard's address and offers nothing else; there is no admin API on the
/// EST port.
#[test]
fn the_root_page_names_the_dashboard_and_nothing_more() {
    let mut demo = Demo::start("root-page", "der");
    demo.stop();
    // The demo names its own est-admin; name a production-like one instead.
    demo.edit_frontend(
        &format!("admin_url: https://127.0.0.1:{}/", demo.admin_port),
        "admin_url: https://est-admin.hospital.example:8446/",
    );
    let _signer = demo.spawn_ready(&signer_bin(), "signer.yaml", "signer.log");
    let _frontend = demo.spawn_ready(&frontend_bin(), "frontend.yaml", "frontend.log");
    let (_, csr) = demo.csr("r", "/CN=root-page-pump-1");
    let boot = demo.curl(
        &[
            "-u",
            &demo.basic(),
            "--data-binary",
            &format!("@{}", csr.display()),
        ],
        "bootstrap",
    );
    assert_eq!(boot.status, 200);
    let root = demo.curl(&[], "/");
    assert_eq!(root.status, 200);
    assert!(root
        .text()
        .contains("https://est-admin.hospital.example:8446/"));
    assert!(!root.text().contains("root-page-pump-1"));
    for path in ["/api/devices", "/api/devices/root-page-pump-1"] {
        assert_eq!(demo.curl(&[], path).status, 404, "{path}");
        assert_eq!(
            demo.curl(&["-X", "DELETE", "-u", &demo.basic()], path)
                .status,
            404
        );
    }
}
