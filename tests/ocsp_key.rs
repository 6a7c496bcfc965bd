//! The delegated OCSP responder's key, as an attacker with the PIN would try it: the key
//! `estctl ocsp init` makes cannot be read, wrapped out or made extractable, and a
//! responder key that some careless tool made extractable stops the signer (exit 5,
//! audited) instead of signing OCSP answers.

mod common;

use common::*;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use secrecy::SecretString;

/// The only test in this binary: it loads the PKCS#11 module in-process (SoftHSM reads
/// SOFTHSM2_CONF once, at C_Initialize).
#[test]
fn the_responder_key_stays_in_the_token_and_an_extractable_one_stops_the_signer() {
    let app = Appliance::create("ocsp-key", "ec-p256");
    ok(&app.estctl(&["ocsp", "init", "--config", app.config_arg()]));
    std::env::set_var("SOFTHSM2_CONF", &app.softhsm_conf);
    {
        let pkcs11 = Pkcs11::new("/usr/lib/softhsm/libsofthsm2.so").unwrap();
        pkcs11
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .unwrap();
        let slot = pkcs11
            .get_slots_with_token()
            .unwrap()
            .into_iter()
            .find(|s| pkcs11.get_token_info(*s).unwrap().label().trim_end() == "hsm-est-test")
            .expect("token by label");
        let session = pkcs11.open_rw_session(slot).unwrap();
        session
            .login(UserType::User, Some(&SecretString::from(app.token_pin())))
            .unwrap();
        let found = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(b"test-ca-ocsp".to_vec()),
            ])
            .unwrap();
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
        match session.get_attributes(key, &[AttributeType::Value]) {
            Ok(a) => assert!(a.iter().all(|a| !matches!(a, Attribute::Value(_)))),
            Err(e) => assert!(
                matches!(e, CkError::Pkcs11(RvError::AttributeSensitive, _)),
                "{e}"
            ),
        }
        let wrapping = session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(false),
                    Attribute::ValueLen(32.into()),
                    Attribute::Wrap(true),
                    Attribute::Encrypt(true),
                ],
            )
            .unwrap();
        let wrapped = session.wrap_key(&Mechanism::AesKeyWrapPad, wrapping, key);
        assert!(
            matches!(wrapped, Err(CkError::Pkcs11(RvError::KeyUnextractable, _))),
            "wrap: {wrapped:?}"
        );
        assert!(session
            .update_attributes(key, &[Attribute::Extractable(true)])
            .is_err());

        // A responder key another tool made extractable.
        session
            .generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &[
                    Attribute::Token(true),
                    Attribute::Verify(true),
                    Attribute::EcParams(vec![
                        0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
                    ]),
                    Attribute::Label(b"loose-ocsp".to_vec()),
                ],
                &[
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(true),
                    Attribute::Sign(true),
                    Attribute::Label(b"loose-ocsp".to_vec()),
                ],
            )
            .unwrap();
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
