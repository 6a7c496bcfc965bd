//! The delegated OCSP responder's key, as an attacker with the PIN would try it: the key
//! `estctl ocsp init` makes cannot be read, wrapped out or made extractable, and a
//! responder key that some careless tool made extractable stops the signer (exit 5,
//! audited) instead of signing OCSP answers.

mod common;

use common::*;
use cryptoki::object::{Attribute, AttributeType};

/// The only test in this binary: it loads the PKCS#11 module in-process (SoftHSM reads
/// SOFTHSM2_CONF once, at C_Initialize).
#[test]
fn the_responder_key_stays_in_the_token_and_an_extractable_one_stops_the_signer() {
    let app = Appliance::create("ocsp-key", "ec-p256");
    ok(&app.estctl(&["ocsp", "init", "--config", app.config_arg()]));
    {
        let (pkcs11, session) = hsm::open_user_session(&app);
        let found = hsm::private_keys(&session, "test-ca-ocsp");
        assert_eq!(found.len(), 1, "ocsp init made one private key");
        let key = found[0];
        let attrs = session
            .get_attributes(
                key,
                &[
                    AttributeType::Extractable,
                    AttributeType::NeverExtractable,
                    AttributeType::Sensitive,
                    AttributeType::Decrypt,
                ],
            )
            .unwrap();
        for a in &attrs {
            match a {
                Attribute::Extractable(v) => assert!(!v, "CKA_EXTRACTABLE"),
                Attribute::NeverExtractable(v) => assert!(v, "CKA_NEVER_EXTRACTABLE"),
                Attribute::Sensitive(v) => assert!(v, "CKA_SENSITIVE"),
                Attribute::Decrypt(v) => assert!(!v, "CKA_DECRYPT"),
                _ => {}
            }
        }
        assert_eq!(attrs.len(), 4);
        // The value cannot be read, nor wrapped out, nor the key loosened.
        hsm::assert_key_cannot_leave(&session, key);
        // A responder key another tool made extractable.
        hsm::make_extractable_p256_key(&session, "loose-ocsp");
        drop(session);
        pkcs11.finalize().unwrap();
    }
    let config = app.path("signer.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}\nocsp:\n  signed_by: responder\n  responder_key_label: loose-ocsp\n"),
    )
    .unwrap();
    let out = app.start_expecting_failure();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("CKA_EXTRACTABLE is true"), "{stderr}");
    let audit = std::fs::read_to_string(app.path("audit.jsonl")).unwrap();
    assert!(
        audit.contains("\"event\":\"key_refused\"") && audit.contains("OCSP responder key"),
        "{audit}"
    );
}
