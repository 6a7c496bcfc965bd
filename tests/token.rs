//! The CA key and the token PIN: the key cannot leave the token, an unprotected key stops the
//! signer, a wrong PIN is fatal after one attempt, and the PIN never shows in argv, the
//! environment or the logs.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;

/// The only test in this binary that loads the PKCS#11 module in-process (SoftHSM reads
/// SOFTHSM2_CONF once, at C_Initialize).
#[test]
fn ca_key_cannot_be_read_wrapped_or_unprotected_and_an_extractable_key_stops_the_signer() {
    let app = Appliance::create("extract", "ec-p256");
    {
        let (pkcs11, session) = hsm::open_user_session(&app);
        let key = hsm::private_keys(&session, "test-ca")[0];
        // K2: the value cannot be read, nor wrapped out under a key we control, nor the
        // key made extractable or non-sensitive.
        hsm::assert_key_cannot_leave(&session, key);
        // A key that a careless tool made extractable, under another label.
        hsm::make_extractable_p256_key(&session, "loose-ca");
        drop(session);
        pkcs11.finalize().unwrap();
    }
    // The module is finalised before the signer opens the same token directory.
    app.edit_config("key_label: test-ca", "key_label: loose-ca");
    let out = app.start_expecting_failure();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("CKA_EXTRACTABLE is true"), "{stderr}");
    assert!(
        stderr.contains("CKA_ALWAYS_SENSITIVE") || stderr.contains("CKA_NEVER_EXTRACTABLE"),
        "{stderr}"
    );
    let audit = std::fs::read_to_string(app.path("audit.jsonl")).unwrap();
    assert!(audit.contains("\"event\":\"key_refused\""), "{audit}");
}

#[test]
fn wrong_pin_is_fatal_after_exactly_one_attempt() {
    let app = Appliance::create("wrongpin", "ec-p256");
    let wrong = "WrongPin0123456789abcdef";
    let pin_file = app.path("wrong-pin");
    std::fs::write(&pin_file, wrong).unwrap();
    std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    app.edit_config("file: token/token-pin", "file: wrong-pin");
    let started = std::time::Instant::now();
    let out = app.start_expecting_failure();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("refused the user PIN"), "{stderr}");
    assert!(stderr.contains("not retrying"), "{stderr}");
    assert!(
        !stderr.contains(wrong),
        "the PIN leaked into the log: {stderr}"
    );
    let audit = std::fs::read_to_string(app.path("audit.jsonl")).unwrap();
    assert_eq!(
        audit.matches("\"event\":\"login_failure\"").count(),
        1,
        "{audit}"
    );
    assert!(!audit.contains(wrong));
    // No retry loop: it gives up at once (a generous bound for a loaded machine).
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    // The right PIN still works: SoftHSM does not lock, and we did not burn attempts.
    let mut app = app;
    app.edit_config("file: wrong-pin", "file: token/token-pin");
    app.start();
}

#[test]
fn pin_file_readable_by_others_is_refused() {
    let app = Appliance::create("pinmode", "ec-p256");
    std::fs::set_permissions(
        app.path("token/token-pin"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let out = app.start_expecting_failure();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("must not be group or world readable"),
        "{stderr}"
    );
    assert!(!stderr.contains(&app.token_pin()));
}

#[test]
fn pin_never_appears_in_argv_environment_or_logs() {
    let mut app = Appliance::create("pinleak", "ec-p256");
    let pin = app.token_pin();
    // Delivered as a systemd credential this time.
    app.edit_config("file: token/token-pin", "credential: token-pin");
    app.start_with_env(&[("CREDENTIALS_DIRECTORY", app.path("token").to_str().unwrap())]);
    let pid = app.signer_pid();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let contains = |hay: &[u8]| hay.windows(pin.len()).any(|w| w == pin.as_bytes());
    assert!(!contains(&cmdline), "PIN in argv");
    assert!(!contains(&environ), "PIN in the environment");
    let csr = openssl_csr(&app.dir, "p", &ec_p256(), "/CN=pump-1", &[]);
    issued(app.issue(
        hsm_est_proto::Operation::Bootstrap,
        "iqe-bootstrap",
        &csr,
        &[],
    ));
    app.stop();
    assert!(!app.signer_log().contains(&pin));
    assert!(!std::fs::read_to_string(app.path("audit.jsonl"))
        .unwrap()
        .contains(&pin));
}
