//! est-admin's admin API and dashboard, as an attacker and as an admin would use them,
//! against the real appliance (`estctl demo`: signer, frontend and est-admin as separate
//! processes, a private SoftHSM token):
//! - DELETE with admin credentials works and the device can bootstrap again; without
//!   credentials 401; EST users get nothing here and admins nothing on the EST routes; the
//!   frontend's port has no /api; API tokens work and wrong ones do not;
//! - every admin action reaches the signer's audit log under the admin's name;
//! - a state-changing form without the CSRF token, or from another site, changes nothing;
//! - a `<script>` in a CN or requester is rendered escaped; every answer has the CSP;
//! - /metrics parses as Prometheus text and counts what happened; /readyz follows the
//!   signer.

mod common;

use common::demo::*;
use std::process::Command;

use common::{ok, run, signer_bin};

fn bootstrap(demo: &Demo, name: &str, cn: &str) -> Answer {
    let (_, csr) = demo.csr(name, &format!("/CN={cn}"));
    demo.curl(
        &[
            "-u",
            &demo.basic(),
            "--data-binary",
            &format!("@{}", csr.display()),
        ],
        "bootstrap",
    )
}

fn json(a: &Answer) -> serde_json::Value {
    serde_json::from_slice(&a.body).unwrap_or_else(|_| panic!("not JSON: {}", a.text()))
}

fn device_status(demo: &Demo, cn: &str) -> String {
    let a = demo.admin_curl(&["-u", &demo.admin_basic()], &format!("/api/devices/{cn}"));
    assert_eq!(a.status, 200, "{}", a.text());
    json(&a)["status"].as_str().unwrap().to_string()
}

#[test]
fn admin_api_deletes_with_credentials_only_and_audits_the_admin() {
    let demo = Demo::start("admin-api", "base64");
    let admin = demo.admin_basic();
    assert_eq!(bootstrap(&demo, "p1", "api-pump-001").status, 200);
    assert_eq!(device_status(&demo, "api-pump-001"), "bootstrap_only");

    // No credentials, wrong ones, or the EST user's: nothing, and the device is still there.
    let path = "/api/devices/api-pump-001";
    let none = demo.admin_curl(&["-X", "DELETE"], path);
    assert_eq!(none.status, 401, "{}", none.text());
    assert_eq!(json(&none)["error"]["code"], "auth.required");
    assert!(none.header("www-authenticate").is_some());
    let est_user = demo.admin_curl(&["-X", "DELETE", "-u", &demo.basic()], path);
    assert!(matches!(est_user.status, 401 | 403), "{}", est_user.text());
    let wrong_token = demo.admin_curl(
        &[
            "-X",
            "DELETE",
            "-H",
            "Authorization: Bearer hsmest_00000000_00",
        ],
        path,
    );
    assert_eq!(wrong_token.status, 401);
    assert_eq!(device_status(&demo, "api-pump-001"), "bootstrap_only");
    // And the admin is not an EST user.
    let (_, csr) = demo.csr("p1-admin", "/CN=api-pump-002");
    let as_admin = demo.curl(
        &[
            "-u",
            &admin,
            "--data-binary",
            &format!("@{}", csr.display()),
        ],
        "bootstrap",
    );
    assert_eq!(as_admin.status, 401, "{}", as_admin.text());
    // The EST port has no admin API.
    assert_eq!(demo.curl(&["-u", &admin], "/api/devices").status, 404);
    assert_eq!(demo.curl(&["-X", "DELETE", "-u", &admin], path).status, 404);

    // The IQE guide's command, with credentials.
    let deleted = demo.admin_curl(&["-X", "DELETE", "-u", &admin], path);
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    assert_eq!(json(&deleted)["revoked_certificates"], 1);
    assert_eq!(device_status(&demo, "api-pump-001"), "deleted");
    let again = demo.admin_curl(&["-X", "DELETE", "-u", &admin], "/api/devices/no-such-pump");
    assert_eq!(again.status, 404);
    assert_eq!(json(&again)["error"]["code"], "device.not_found");
    // The device bootstraps again.
    assert_eq!(bootstrap(&demo, "p1-again", "api-pump-001").status, 200);
    assert_eq!(device_status(&demo, "api-pump-001"), "bootstrap_only");

    // Revoke with a reason, then allow, with an API token this time.
    let token = ok(&demo.estctl(&[
        "add-admin-token",
        "--admins",
        &demo.path("admins.yaml").display().to_string(),
        "admin",
    ]))
    .trim()
    .to_string();
    assert!(token.starts_with("hsmest_"), "{token}");
    let bearer = format!("Authorization: Bearer {token}");
    let revoked = demo.admin_curl(
        &[
            "-X",
            "POST",
            "-H",
            &bearer,
            "--data",
            "{\"reason\":\"keyCompromise\"}",
        ],
        "/api/devices/api-pump-001/revoke",
    );
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    assert_eq!(device_status(&demo, "api-pump-001"), "revoked");
    let blocked = bootstrap(&demo, "p1-blocked", "api-pump-001");
    assert_eq!(blocked.status, 403, "{}", blocked.text());
    let bad_reason = demo.admin_curl(
        &[
            "-X",
            "POST",
            "-H",
            &bearer,
            "--data",
            "{\"reason\":\"because\"}",
        ],
        "/api/devices/api-pump-001/revoke",
    );
    assert_eq!(bad_reason.status, 400);
    assert_eq!(json(&bad_reason)["error"]["code"], "request.reason");
    let allowed = demo.admin_curl(
        &["-X", "POST", "-H", &bearer],
        "/api/devices/api-pump-001/allow",
    );
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    assert_eq!(
        demo.admin_curl(&["-X", "PUT", "-H", &bearer], "/api/devices")
            .status,
        405
    );

    // Listing, history, expiring certificates and stats.
    let list = demo.admin_curl(&["-u", &admin], "/api/devices?prefix=api-&limit=10");
    assert_eq!(list.status, 200);
    let devices = json(&list)["devices"].as_array().unwrap().clone();
    assert_eq!(devices.len(), 1, "{}", list.text());
    let one = json(&demo.admin_curl(&["-u", &admin], path));
    let history = one["certificates"].as_array().unwrap();
    assert_eq!(history.len(), 2, "{one}");
    assert!(history.iter().all(|c| c["revoked_at"].is_string()), "{one}");
    let expiring = demo.admin_curl(&["-u", &admin], "/api/certificates?expiring_within_days=30");
    assert_eq!(expiring.status, 200);
    assert!(json(&expiring)["certificates"].is_array());
    let bad_query = demo.admin_curl(&["-u", &admin], "/api/devices?status=sleeping");
    assert_eq!(bad_query.status, 400);
    assert_eq!(json(&bad_query)["error"]["code"], "request.query");
    let stats = json(&demo.admin_curl(&["-u", &admin], "/api/stats"));
    assert!(stats["devices_by_status"].is_object(), "{stats}");

    // Every action is in the signer's audit log under the admin's name.
    let audit = std::fs::read_to_string(demo.path("audit.jsonl")).unwrap();
    let uid = nix::unistd::getuid();
    let actor = format!("\"actor\":\"admin:uid={uid}:admin\"");
    for event in ["device_deleted", "revoked", "device_allowed"] {
        assert!(
            audit
                .lines()
                .any(|l| l.contains(&actor) && l.contains(&format!("\"event\":\"{event}\""))),
            "no {event} by the admin in\n{audit}"
        );
    }
    // A deleted admin's token stops working at once.
    ok(&demo.estctl(&[
        "delete-admin",
        "--admins",
        &demo.path("admins.yaml").display().to_string(),
        "admin",
    ]));
    assert_eq!(demo.admin_curl(&["-H", &bearer], "/api/stats").status, 401);
}

#[test]
fn dashboard_refuses_forged_forms_escapes_values_and_sends_csp() {
    let mut demo = Demo::start("admin-csrf", "base64");
    assert_eq!(bootstrap(&demo, "c1", "csrf-pump-001").status, 200);
    // Values an attacker could get into the ledger (a CN, a requester), put there through
    // the ledger's own interface with the signer stopped.
    demo.stop();
    {
        use hsm_est_signer::ledger::{
            CertificateRecord, DeviceState, Ledger, LedgerWrite, SqliteLedger,
        };
        let ledger = SqliteLedger::open(&demo.path("ledger.sqlite")).unwrap();
        let head = ledger.audit_head().unwrap().unwrap();
        let cn = "<script>alert(1)</script>";
        ledger
            .apply(
                &[LedgerWrite::Issue {
                    certificate: Box::new(CertificateRecord {
                        serial: vec![0x42; 16],
                        subject: format!("CN={cn}"),
                        common_name: cn.into(),
                        sans: vec![],
                        spki_sha256: vec![0; 32],
                        not_before: 0,
                        not_after: 4_000_000_000,
                        profile: "iqe-pump".into(),
                        operation: "enroll".into(),
                        requester: "basic:<script>document.title='owned'</script>".into(),
                        client_ip: "192.0.2.1".into(),
                        issued_at_ms: 1,
                        der: vec![0x30, 0x00],
                        ca: "default".into(),
                    }),
                    device_status: Some(DeviceState::Enrolled),
                    supersedes: None,
                }],
                &head,
            )
            .unwrap();
    }
    demo.launch("base64");

    // Not logged in: pages send you to the login form, forms are refused.
    let anonymous = demo.admin_curl(&[], "/devices");
    assert_eq!(anonymous.status, 303);
    assert_eq!(anonymous.header("location").as_deref(), Some("/login"));
    // A login post without the login form's token is refused, even with the right password.
    let password = std::fs::read_to_string(demo.path("admin-password")).unwrap();
    let forged_login = demo.admin_curl(
        &[
            "--data-urlencode",
            "user=admin",
            "--data-urlencode",
            &format!("password={password}"),
        ],
        "/login",
    );
    assert_eq!(forged_login.status, 403, "{}", forged_login.text());
    assert!(!forged_login
        .header("set-cookie")
        .is_some_and(|c| c.contains("__Host-hsmest=")));

    let b = AdminSession::login(&demo, "csrf");
    let cookie = std::fs::read_to_string(&b.jar).unwrap();
    assert!(cookie.contains("__Host-hsmest"), "{cookie}");
    let csrf = b.csrf();
    assert_eq!(csrf.len(), 64);

    // The session cookie's attributes.
    let again = AdminSession::login(&demo, "csrf-2");
    let form = again.get("/login");
    let token = field(&form.text(), "login_token");
    let r = again.post(
        "/login",
        &[
            ("user", "admin"),
            ("password", &password),
            ("login_token", &token),
        ],
        &[],
    );
    let set_cookie = r
        .headers
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie: __host-hsmest=")
        })
        .unwrap()
        .to_string();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attr), "{set_cookie}");
    }

    let revoke = "/devices/csrf-pump-001/revoke";
    // Without the CSRF token: refused, nothing revoked.
    let no_token = b.post(revoke, &[("reason", "keyCompromise")], &[]);
    assert_eq!(no_token.status, 403, "{}", no_token.text());
    let wrong_token = b.post(revoke, &[("csrf", &"0".repeat(64))], &[]);
    assert_eq!(wrong_token.status, 403);
    // A cross-site form post (the browser says where it comes from): refused even with the
    // token.
    let cross = b.post(
        revoke,
        &[("csrf", &csrf)],
        &["-H", "Origin: https://evil.example"],
    );
    assert_eq!(cross.status, 403, "{}", cross.text());
    let cross_site = b.post(
        revoke,
        &[("csrf", &csrf)],
        &["-H", "Sec-Fetch-Site: cross-site"],
    );
    assert_eq!(cross_site.status, 403);
    assert_eq!(device_status(&demo, "csrf-pump-001"), "bootstrap_only");
    // With the token, from this site: revoked.
    let origin = format!("Origin: https://127.0.0.1:{}", demo.admin_port);
    let done = b.post(
        revoke,
        &[("csrf", &csrf), ("reason", "keyCompromise")],
        &["-H", &origin],
    );
    assert_eq!(done.status, 303, "{}", done.text());
    assert_eq!(device_status(&demo, "csrf-pump-001"), "revoked");

    // Escaping: the hostile CN and requester appear as text, never as markup.
    let list = b.get("/devices");
    assert_eq!(list.status, 200);
    let html = list.text();
    assert!(!html.contains("<script>"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    let page = b.get("/devices/%3Cscript%3Ealert(1)%3C%2Fscript%3E");
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(!page.text().contains("<script>"));
    assert!(
        page.text().contains("basic:&lt;script&gt;document.title="),
        "{}",
        page.text()
    );

    // Every answer carries the CSP (no script at all) and the other headers.
    for a in [
        &list,
        &page,
        &anonymous,
        &no_token,
        &b.get("/nowhere"),
        &demo.admin_curl(&[], "/api/stats"),
    ] {
        let csp = a.header("content-security-policy").expect("CSP");
        assert!(
            csp.contains("default-src 'none'") && !csp.contains("script-src"),
            "{csp}"
        );
        assert_eq!(
            a.header("x-content-type-options").as_deref(),
            Some("nosniff")
        );
        assert_eq!(a.header("x-frame-options").as_deref(), Some("DENY"));
    }
    assert_eq!(b.get("/static/style.css").status, 200);

    // Logout ends the session: the old cookie opens nothing.
    let out = b.post("/logout", &[("csrf", &csrf)], &[]);
    assert_eq!(out.status, 303);
    let after = demo.admin_curl(
        &["-H", &format!("Cookie: {}", session_cookie(&cookie))],
        "/devices",
    );
    assert_eq!(after.status, 303, "{}", after.text());
}

/// `__Host-hsmest=VALUE` from a curl cookie jar.
fn session_cookie(jar: &str) -> String {
    let line = jar
        .lines()
        .find(|l| l.contains("\t__Host-hsmest\t"))
        .expect("session cookie in the jar");
    format!("__Host-hsmest={}", line.rsplit('\t').next().unwrap())
}

#[test]
fn admin_metrics_parse_and_count_and_readyz_follows_the_signer() {
    let mut demo = Demo::start("admin-metrics", "base64");
    const N: usize = 3;
    for i in 0..N {
        assert_eq!(
            bootstrap(&demo, &format!("m{i}"), &format!("metric-pump-{i}")).status,
            200
        );
    }
    assert_eq!(demo.admin_curl(&[], "/metrics").status, 401);
    assert_eq!(
        demo.admin_curl(&["-u", "admin:wrong-password-here"], "/metrics")
            .status,
        401
    );
    let m = demo.admin_curl(&["-u", &demo.admin_basic()], "/metrics");
    assert_eq!(m.status, 200);
    let text = m.text();
    assert!(text.ends_with("# EOF\n"), "{text}");
    for line in text.lines() {
        assert!(
            valid_metrics_line(line),
            "not Prometheus text: {line:?}\n{text}"
        );
    }
    assert_eq!(sample(&text, "hsm_est_signer_up"), Some(1.0), "{text}");
    assert_eq!(
        sample(&text, "hsm_est_signer_devices{status=\"bootstrap_only\"}"),
        Some(N as f64),
        "{text}"
    );
    assert!(sample(&text, "hsm_est_signer_token_signs_total").unwrap() >= N as f64);
    assert!(sample(&text, "hsm_est_signer_commits_total").unwrap() >= 1.0);
    assert_eq!(
        sample(&text, "hsm_est_admin_login_failures_total"),
        Some(1.0),
        "{text}"
    );

    // readyz follows the signer; healthz answers throughout.
    demo.stop();
    let mut signer = demo.spawn_ready(&signer_bin(), "signer.yaml", "signer.log");
    let admin_bin = signer_bin().with_file_name("est-admin");
    let _admin = demo.spawn_ready(&admin_bin, "admin.yaml", "admin.log");
    assert_eq!(demo.admin_curl(&[], "/readyz").status, 200);
    if let Some(mut c) = signer.0.take() {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    let down = demo.admin_curl(&[], "/readyz");
    assert_eq!(down.status, 503, "{}", down.text());
    assert!(down.header("retry-after").is_some());
    assert_eq!(demo.admin_curl(&[], "/healthz").status, 200);
    let m = demo.admin_curl(&["-u", &demo.admin_basic()], "/metrics");
    assert_eq!(
        sample(&m.text(), "hsm_est_signer_up"),
        Some(0.0),
        "{}",
        m.text()
    );
    let api = demo.admin_curl(&["-u", &demo.admin_basic()], "/api/stats");
    assert_eq!(api.status, 503);
    assert_eq!(json(&api)["error"]["code"], "signer.unavailable");
    let _signer = demo.spawn_ready(&signer_bin(), "signer.yaml", "signer.log");
    assert_eq!(demo.admin_curl(&[], "/readyz").status, 200);
}

#[test]
fn an_admin_client_certificate_can_be_required() {
    let mut demo = Demo::start("admin-mtls", "base64");
    demo.stop();
    // The hospital's admin CA and one admin's certificate, made by openssl.
    let sh = |script: &str| {
        ok(&run(Command::new("bash")
            .args(["-ec", script])
            .current_dir(&demo.dir)))
    };
    sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
          -keyout admin-ca.key -out admin-clients.pem -subj '/CN=Admin CA' -days 30 \
          -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
          -keyout alice.key -out alice.csr -subj '/CN=alice' 2>/dev/null
        printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' > alice.ext
        openssl x509 -req -in alice.csr -CA admin-clients.pem -CAkey admin-ca.key \
          -CAcreateserial -days 30 -extfile alice.ext -out alice.pem 2>/dev/null
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
          -keyout mallory.key -out mallory.pem -subj '/CN=mallory' -days 30 2>/dev/null");
    demo.edit(
        "admin.yaml",
        "  key_file: server.key\n",
        "  key_file: server.key\n  client_ca_file: admin-clients.pem\n",
    );
    let _signer = demo.spawn_ready(&signer_bin(), "signer.yaml", "signer.log");
    let admin_bin = signer_bin().with_file_name("est-admin");
    let _admin = demo.spawn_ready(&admin_bin, "admin.yaml", "admin.log");
    let basic = demo.admin_basic();
    let (alice, alice_key) = (demo.path("alice.pem"), demo.path("alice.key"));
    let (mallory, mallory_key) = (demo.path("mallory.pem"), demo.path("mallory.key"));
    // Without a certificate, or with one from elsewhere, the handshake fails: no HTTP at
    // all (curl reports status 000), the password never looked at.
    let none = demo.admin_curl(&["-u", &basic], "/api/stats");
    assert_eq!(none.status, 0, "{}", none.text());
    let stranger = demo.admin_curl(
        &[
            "-u",
            &basic,
            "--cert",
            mallory.to_str().unwrap(),
            "--key",
            mallory_key.to_str().unwrap(),
        ],
        "/api/stats",
    );
    assert_eq!(stranger.status, 0);
    // With the admin's certificate: the password is still required.
    let cert = [
        "--cert",
        alice.to_str().unwrap(),
        "--key",
        alice_key.to_str().unwrap(),
    ];
    let mut with_password = cert.to_vec();
    with_password.extend(["-u", basic.as_str()]);
    assert_eq!(demo.admin_curl(&cert, "/api/stats").status, 401);
    assert_eq!(demo.admin_curl(&with_password, "/api/stats").status, 200);
}

#[test]
fn check_config_keeps_admins_apart_from_est_users() {
    let demo = Demo::start("admin-check", "base64");
    let check = |admin: &str| {
        demo.estctl(&[
            "check-config",
            "--config",
            demo.path("signer.yaml").to_str().unwrap(),
            "--frontend",
            demo.path("frontend.yaml").to_str().unwrap(),
            "--admin",
            demo.path(admin).to_str().unwrap(),
        ])
    };
    let good = ok(&check("admin.yaml"));
    assert!(
        good.contains("admin.yaml: ok (1 admin(s), listening on 127.0.0.1:"),
        "{good}"
    );
    let text = std::fs::read_to_string(demo.path("admin.yaml")).unwrap();
    std::fs::write(
        demo.path("admin-shared.yaml"),
        text.replace("admins_file: admins.yaml", "admins_file: users.yaml"),
    )
    .unwrap();
    let shared = check("admin-shared.yaml");
    assert!(!shared.status.success());
    assert!(
        String::from_utf8_lossy(&shared.stderr).contains("must be separate files"),
        "{}",
        String::from_utf8_lossy(&shared.stderr)
    );
    std::fs::write(
        demo.path("admin-socket.yaml"),
        text.replace("admin.sock", "frontend.sock"),
    )
    .unwrap();
    let wrong = check("admin-socket.yaml");
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("the signer's admin socket is"));
}
