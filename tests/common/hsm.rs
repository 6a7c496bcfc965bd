//! The test token seen in-process, as an attacker holding the PIN would use it. Only one
//! test per binary may use this: SoftHSM reads SOFTHSM2_CONF once, at C_Initialize.

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use secrecy::SecretString;

use super::Appliance;

/// Loads SoftHSM for `app`'s token directory and logs in as the user, as the signer does.
pub fn open_user_session(app: &Appliance) -> (Pkcs11, Session) {
    std::env::set_var("SOFTHSM2_CONF", &app.softhsm_conf);
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
    (pkcs11, session)
}

/// The private keys labelled `label`.
pub fn private_keys(session: &Session, label: &str) -> Vec<ObjectHandle> {
    session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .unwrap()
}

/// The key's value cannot be read, the key cannot be wrapped out under a key the caller
/// controls, and it cannot be made extractable or non-sensitive.
pub fn assert_key_cannot_leave(session: &Session, key: ObjectHandle) {
    match session.get_attributes(key, &[AttributeType::Value]) {
        Ok(attrs) => assert!(
            attrs.iter().all(|a| !matches!(a, Attribute::Value(_))),
            "CKA_VALUE was returned"
        ),
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
    for attr in [Attribute::Extractable(true), Attribute::Sensitive(false)] {
        assert!(
            session
                .update_attributes(key, std::slice::from_ref(&attr))
                .is_err(),
            "{attr:?} was accepted"
        );
    }
}

/// A P-256 key pair that a careless tool made extractable, labelled `label`.
pub fn make_extractable_p256_key(session: &Session, label: &str) {
    session
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::Verify(true),
                Attribute::EcParams(vec![
                    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
                ]),
                Attribute::Label(label.as_bytes().to_vec()),
            ],
            &[
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(true),
                Attribute::Sign(true),
                Attribute::Label(label.as_bytes().to_vec()),
            ],
        )
        .unwrap();
}
