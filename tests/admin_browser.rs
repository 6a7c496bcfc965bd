//! The dashboard in a real browser: Debian's chromium, headless, against the real appliance
//! (signer, frontend and est-admin as separate processes, a private SoftHSM token). Log in,
//! see a device that was just bootstrapped with its status and serial, revoke it, delete
//! another, fit a phone's screen, log out; every step by clicking the page's own links and buttons, so the
//! browser sends its real cookies and Origin headers through the CSRF checks.
//! Screenshots are saved in target/tmp/screenshots/dashboard; the CN is checked in the
//! rendered text of the page (the DOM), not in the HTML source.

mod common;

use common::browser::Browser;
use common::demo::*;

fn bootstrap(demo: &Demo, cn: &str) -> String {
    let (_, csr) = demo.csr(cn, &format!("/CN={cn}"));
    let a = demo.curl(
        &[
            "-u",
            &demo.basic(),
            "--data-binary",
            &format!("@{}", csr.display()),
        ],
        "bootstrap",
    );
    assert_eq!(a.status, 200, "{}", a.text());
    // The serial as the dashboard shows it: lower-case hex, from the admin API.
    let d = demo.admin_curl(&["-u", &demo.admin_basic()], &format!("/api/devices/{cn}"));
    let v: serde_json::Value = serde_json::from_slice(&d.body).unwrap();
    v["current_serial"].as_str().unwrap().to_string()
}

#[test]
fn dashboard_in_a_real_browser() {
    let demo = Demo::start("admin-browser", "base64");
    let serial = bootstrap(&demo, "browser-pump-001");
    bootstrap(&demo, "browser-pump-002");
    let shots = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots/dashboard");
    let mut b = Browser::launch(&demo.path("browser"), &shots, &demo.path("server.pem"));
    let base = demo.admin_url("");

    // Not logged in: the dashboard sends the browser to the login form.
    b.navigate(&format!("{base}/devices"));
    assert!(b.url().ends_with("/login"), "{}", b.url());
    b.screenshot("01-login");
    b.fill("user", "admin");
    let password = std::fs::read_to_string(demo.path("admin-password")).unwrap();
    b.fill("password", &password);
    b.click("#login");
    let overview = b.text();
    assert!(overview.contains("The signer answers"), "{overview}");
    assert!(overview.contains("bootstrap_only"), "{overview}");
    b.screenshot("02-overview");

    // The device list shows the new device with its status and its bootstrap serial.
    b.click("a[href='/devices']");
    let list = b.text();
    let shot = b.screenshot("03-devices");
    assert!(list.contains("browser-pump-001"), "{list}");
    assert!(list.contains(&serial), "{list}");
    assert!(list.contains("bootstrap_only"), "{list}");
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);

    // Search by CN.
    b.fill("q", "browser-pump-002");
    b.click("form.filters button");
    let found = b.text();
    assert!(
        found.contains("browser-pump-002") && !found.contains("browser-pump-001"),
        "{found}"
    );

    // Revoke browser-pump-001 behind its confirmation page.
    b.navigate(&format!("{base}/devices/browser-pump-001"));
    assert!(b.text().contains(&serial));
    b.click("#revoke");
    assert!(
        b.text().contains("Revoke every unexpired certificate"),
        "{}",
        b.text()
    );
    b.screenshot("04-confirm-revoke");
    b.click("#confirm");
    let revoked = b.text();
    assert!(revoked.contains("Revoked: 1 certificate(s)."), "{revoked}");
    assert_eq!(
        b.eval("document.querySelector('#status').innerText"),
        "revoked"
    );
    b.screenshot("05-revoked");

    // Delete browser-pump-002.
    b.navigate(&format!("{base}/devices/browser-pump-002"));
    b.click("#delete");
    b.click("#confirm");
    let deleted = b.text();
    assert!(
        deleted.contains("Deleted; 1 certificate(s) revoked."),
        "{deleted}"
    );
    assert_eq!(
        b.eval("document.querySelector('#status').innerText"),
        "deleted"
    );
    b.screenshot("06-deleted");

    // The signer agrees, and audited both under the admin's name.
    let api = |cn: &str| {
        let a = demo.admin_curl(&["-u", &demo.admin_basic()], &format!("/api/devices/{cn}"));
        let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        v["status"].as_str().unwrap().to_string()
    };
    assert_eq!(api("browser-pump-001"), "revoked");
    assert_eq!(api("browser-pump-002"), "deleted");
    let audit = std::fs::read_to_string(demo.path("audit.jsonl")).unwrap();
    assert!(audit.contains(&format!(
        "\"actor\":\"admin:uid={}:admin\"",
        nix::unistd::getuid()
    )));

    // On a phone-sized screen the pages fit the width: wide tables scroll inside their box,
    // the page itself does not.
    b.call(
        "Emulation.setDeviceMetricsOverride",
        serde_json::json!({"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": true}),
    );
    for page in ["/", "/devices", "/devices/browser-pump-001"] {
        b.navigate(&format!("{base}{page}"));
        let fits = b.eval("document.documentElement.scrollWidth <= window.innerWidth");
        assert_eq!(
            fits,
            serde_json::json!(true),
            "{page} is wider than a phone"
        );
    }
    b.screenshot("07-phone-device");
    b.call(
        "Emulation.clearDeviceMetricsOverride",
        serde_json::json!({}),
    );

    // Log out: back to the login form, and the dashboard is closed again.
    b.click("header form.logout button");
    assert!(b.url().ends_with("/login"), "{}", b.url());
    b.navigate(&format!("{base}/devices"));
    assert!(b.url().ends_with("/login"), "{}", b.url());
    b.screenshot("08-logged-out");
    eprintln!("screenshots in {}", b.shots.display());
}
