//! The PKCS#11 token that holds the CA key (cryptoki). Found by label or serial, never by
//! slot number; one login attempt; one session per signing worker thread.

use std::fmt;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use der::asn1::{Any, BitString, ObjectIdentifier, OctetString, UintRef};
use der::{Decode, Encode, Sequence};
use secrecy::SecretString;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use zeroize::Zeroizing;

use crate::config::{PinSource, TokenConfig, TokenSelector};
use hsm_est_pki::cert::CaSigner;
use hsm_est_pki::keys::SignatureAlgorithm;
use hsm_est_pki::oid;

/// A PIN file longer than this is not a PIN file.
pub const MAX_PIN_LEN: usize = 256;

#[derive(Debug)]
pub enum TokenError {
    /// The module could not be loaded or initialised.
    Module(String),
    /// No token, or more than one, matches the configured label/serial.
    TokenNotFound(String),
    /// The PIN source is missing, unreadable or too open.
    Pin(String),
    /// C_Login said the PIN is wrong. Fatal: never retried.
    WrongPin,
    /// The token says the PIN is locked.
    PinLocked,
    /// No CA key, or more than one, under the configured label.
    KeyNotFound(String),
    /// The CA private key's attributes are not those of a protected key.
    KeyNotProtected(Vec<String>),
    /// Anything else the module returned.
    Pkcs11(String),
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Module(m) => write!(f, "cannot load the PKCS#11 module: {m}"),
            TokenError::TokenNotFound(m) => write!(f, "token not found: {m}"),
            TokenError::Pin(m) => write!(f, "cannot read the token PIN: {m}"),
            TokenError::WrongPin => write!(
                f,
                "the token refused the user PIN (CKR_PIN_INCORRECT); not retrying, to avoid \
                 locking the token"
            ),
            TokenError::PinLocked => write!(f, "the token's user PIN is locked"),
            TokenError::KeyNotFound(m) => write!(f, "CA key not found: {m}"),
            TokenError::KeyNotProtected(problems) => write!(
                f,
                "the CA private key is not protected by the token: {}",
                problems.join(", ")
            ),
            TokenError::Pkcs11(m) => write!(f, "PKCS#11 error: {m}"),
        }
    }
}

impl std::error::Error for TokenError {}

fn ck(context: &str, e: CkError) -> TokenError {
    TokenError::Pkcs11(format!("{context}: {e}"))
}

/// Reads the user PIN from its configured source into memory that is wiped on drop.
pub fn read_pin(source: &PinSource) -> Result<SecretString, TokenError> {
    let path = match source {
        PinSource::File(p) => p.clone(),
        PinSource::Credential(name) => {
            let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                TokenError::Pin(format!(
                    "credential {name:?} configured but $CREDENTIALS_DIRECTORY is not set \
                     (use LoadCredential= in the unit)"
                ))
            })?;
            Path::new(&dir).join(name)
        }
    };
    let meta = std::fs::metadata(&path)
        .map_err(|e| TokenError::Pin(format!("{}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(TokenError::Pin(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    // The PIN must not be readable by anyone but its owner (systemd credentials are 0400).
    let mode = meta.permissions().mode() & 0o777;
    if matches!(source, PinSource::File(_)) && mode & 0o077 != 0 {
        return Err(TokenError::Pin(format!(
            "{} has mode {mode:04o}; it must not be group or world readable (chmod 600)",
            path.display()
        )));
    }
    if meta.size() > MAX_PIN_LEN as u64 + 2 {
        return Err(TokenError::Pin(format!("{} is too long", path.display())));
    }
    let mut buf = Zeroizing::new(Vec::with_capacity(MAX_PIN_LEN + 2));
    std::fs::File::open(&path)
        .and_then(|f| f.take(MAX_PIN_LEN as u64 + 2).read_to_end(&mut buf))
        .map_err(|e| TokenError::Pin(format!("{}: {e}", path.display())))?;
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    if buf.is_empty() {
        return Err(TokenError::Pin(format!("{} is empty", path.display())));
    }
    let text = std::str::from_utf8(&buf)
        .map_err(|_| TokenError::Pin(format!("{} is not UTF-8", path.display())))?;
    Ok(SecretString::from(text.to_string()))
}

/// The CA key types `estctl ca init` can generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaKeyType {
    EcP256,
    EcP384,
    Rsa(u32),
}

impl std::str::FromStr for CaKeyType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ec-p256" => Ok(CaKeyType::EcP256),
            "ec-p384" => Ok(CaKeyType::EcP384),
            "rsa-2048" => Ok(CaKeyType::Rsa(2048)),
            "rsa-3072" => Ok(CaKeyType::Rsa(3072)),
            "rsa-4096" => Ok(CaKeyType::Rsa(4096)),
            other => Err(format!(
                "unknown key type {other:?} (ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096)"
            )),
        }
    }
}

/// A loaded module and the slot of the configured token.
pub struct Token {
    pkcs11: Pkcs11,
    slot: Slot,
    pub key_label: String,
}

impl Token {
    pub fn open(config: &TokenConfig) -> Result<Token, TokenError> {
        let pkcs11 = Pkcs11::new(&config.module)
            .map_err(|e| TokenError::Module(format!("{}: {e}", config.module.display())))?;
        // Several worker threads use the module at once.
        pkcs11
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .map_err(|e| TokenError::Module(format!("C_Initialize: {e}")))?;
        let mut found = Vec::new();
        for slot in pkcs11
            .get_slots_with_token()
            .map_err(|e| ck("C_GetSlotList", e))?
        {
            let info = pkcs11
                .get_token_info(slot)
                .map_err(|e| ck("C_GetTokenInfo", e))?;
            let hit = match &config.selector {
                TokenSelector::Label(l) => info.label().trim_end() == l,
                TokenSelector::Serial(s) => info.serial_number().trim_end() == s,
            };
            if hit {
                found.push(slot);
            }
        }
        let what = match &config.selector {
            TokenSelector::Label(l) => format!("label {l:?}"),
            TokenSelector::Serial(s) => format!("serial {s:?}"),
        };
        let slot = match found.as_slice() {
            [one] => *one,
            [] => return Err(TokenError::TokenNotFound(format!("no token with {what}"))),
            _ => {
                return Err(TokenError::TokenNotFound(format!(
                    "{} tokens with {what}; use the serial",
                    found.len()
                )))
            }
        };
        Ok(Token {
            pkcs11,
            slot,
            key_label: config.key_label.clone(),
        })
    }

    /// Opens a session and logs the user in with exactly one C_Login. Login state is per
    /// token per process, so sessions opened afterwards are logged in too.
    pub fn login(&self, pin: &AuthPin, read_write: bool) -> Result<Session, TokenError> {
        let session = self.open_session(read_write)?;
        match session.login(UserType::User, Some(pin)) {
            Ok(()) => Ok(session),
            Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => Err(TokenError::WrongPin),
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(TokenError::PinLocked),
            Err(e) => Err(ck("C_Login", e)),
        }
    }

    pub fn open_session(&self, read_write: bool) -> Result<Session, TokenError> {
        let s = if read_write {
            self.pkcs11.open_rw_session(self.slot)
        } else {
            self.pkcs11.open_ro_session(self.slot)
        };
        s.map_err(|e| ck("C_OpenSession", e))
    }

    fn find_one(
        session: &Session,
        class: ObjectClass,
        label: &str,
    ) -> Result<Option<ObjectHandle>, TokenError> {
        let found = session
            .find_objects(&[
                Attribute::Class(class),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .map_err(|e| ck("C_FindObjects", e))?;
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            _ => Err(TokenError::KeyNotFound(format!(
                "{} objects labelled {label:?}; labels must be unique",
                found.len(),
            ))),
        }
    }

    /// The CA key pair: (private, public).
    pub fn find_key_pair(
        &self,
        session: &Session,
    ) -> Result<(ObjectHandle, ObjectHandle), TokenError> {
        self.find_labelled_pair(session, &self.key_label, "estctl ca init")
    }

    /// The key pair labelled `label`: (private, public). `creator` is the command that
    /// makes it, for the error message.
    pub fn find_labelled_pair(
        &self,
        session: &Session,
        label: &str,
        creator: &str,
    ) -> Result<(ObjectHandle, ObjectHandle), TokenError> {
        find_pair(session, label, creator)
    }
}

/// The key pair labelled `label` in the session's token: (private, public).
pub fn find_pair(
    session: &Session,
    label: &str,
    creator: &str,
) -> Result<(ObjectHandle, ObjectHandle), TokenError> {
    let private = Token::find_one(session, ObjectClass::PRIVATE_KEY, label)?.ok_or_else(|| {
        TokenError::KeyNotFound(format!(
            "no private key labelled {label:?} (run `{creator}`)"
        ))
    })?;
    let public = Token::find_one(session, ObjectClass::PUBLIC_KEY, label)?
        .ok_or_else(|| TokenError::KeyNotFound(format!("no public key labelled {label:?}")))?;
    Ok((private, public))
}

impl Token {
    pub fn key_exists(&self, session: &Session) -> Result<bool, TokenError> {
        Self::labelled_key_exists(session, &self.key_label)
    }

    fn labelled_key_exists(session: &Session, label: &str) -> Result<bool, TokenError> {
        Ok(
            Self::find_one(session, ObjectClass::PRIVATE_KEY, label)?.is_some()
                || Self::find_one(session, ObjectClass::PUBLIC_KEY, label)?.is_some(),
        )
    }

    /// Generates the CA key pair inside the token with an explicit template: tool and token
    /// defaults are not trusted (SoftHSM's allow decrypt, unwrap and derive).
    pub fn generate_key_pair(
        &self,
        session: &Session,
        key_type: CaKeyType,
    ) -> Result<(ObjectHandle, ObjectHandle), TokenError> {
        Self::generate_labelled_pair(session, key_type, &self.key_label)
    }

    /// Generates a signing key pair labelled `label` (sensitive, never extractable, sign
    /// only); refuses when the label is taken.
    pub fn generate_labelled_pair(
        session: &Session,
        key_type: CaKeyType,
        label: &str,
    ) -> Result<(ObjectHandle, ObjectHandle), TokenError> {
        if Self::labelled_key_exists(session, label)? {
            return Err(TokenError::KeyNotFound(format!(
                "a key labelled {label:?} already exists; refusing to create a second one"
            )));
        }
        let mut id = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
            .map_err(|_| TokenError::Pkcs11("no randomness for the key id".into()))?;
        let label = label.as_bytes().to_vec();
        let mut public = vec![
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::Encrypt(false),
            Attribute::Wrap(false),
            Attribute::Modifiable(false),
            Attribute::Label(label.clone()),
            Attribute::Id(id.to_vec()),
        ];
        let private = vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::SignRecover(false),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
            Attribute::Modifiable(false),
            Attribute::Label(label),
            Attribute::Id(id.to_vec()),
        ];
        let mechanism = match key_type {
            CaKeyType::EcP256 | CaKeyType::EcP384 => {
                let curve = if key_type == CaKeyType::EcP256 {
                    oid::SECP256R1
                } else {
                    oid::SECP384R1
                };
                public.push(Attribute::EcParams(
                    curve
                        .to_der()
                        .map_err(|e| TokenError::Pkcs11(e.to_string()))?,
                ));
                Mechanism::EccKeyPairGen
            }
            CaKeyType::Rsa(bits) => {
                public.push(Attribute::ModulusBits((bits as u64).into()));
                public.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
                Mechanism::RsaPkcsKeyPairGen
            }
        };
        let (pub_h, priv_h) = session
            .generate_key_pair(&mechanism, &public, &private)
            .map_err(|e| ck("C_GenerateKeyPair", e))?;
        Ok((priv_h, pub_h))
    }
}

/// Reads back the CA private key's protection attributes; every problem is listed.
pub fn check_key_protection(session: &Session, key: ObjectHandle) -> Result<(), TokenError> {
    let attrs = session
        .get_attributes(
            key,
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::AlwaysSensitive,
                AttributeType::NeverExtractable,
                AttributeType::Decrypt,
                AttributeType::Unwrap,
                AttributeType::Derive,
                AttributeType::Sign,
            ],
        )
        .map_err(|e| ck("C_GetAttributeValue", e))?;
    let mut problems = Vec::new();
    let mut seen = 0;
    for a in &attrs {
        seen += 1;
        match a {
            Attribute::Sensitive(false) => problems.push("CKA_SENSITIVE is false"),
            Attribute::Extractable(true) => problems.push("CKA_EXTRACTABLE is true"),
            Attribute::AlwaysSensitive(false) => problems.push("CKA_ALWAYS_SENSITIVE is false"),
            Attribute::NeverExtractable(false) => problems.push("CKA_NEVER_EXTRACTABLE is false"),
            Attribute::Decrypt(true) => problems.push("CKA_DECRYPT is true"),
            Attribute::Unwrap(true) => problems.push("CKA_UNWRAP is true"),
            Attribute::Derive(true) => problems.push("CKA_DERIVE is true"),
            Attribute::Sign(false) => problems.push("CKA_SIGN is false"),
            _ => {}
        }
    }
    if seen != 8 {
        problems.push("the token did not report every protection attribute");
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(TokenError::KeyNotProtected(
            problems.into_iter().map(String::from).collect(),
        ))
    }
}

/// The attributes `estctl ca show` prints.
pub fn describe_key(session: &Session, key: ObjectHandle) -> Result<Vec<String>, TokenError> {
    let attrs = session
        .get_attributes(
            key,
            &[
                AttributeType::KeyType,
                AttributeType::Token,
                AttributeType::Private,
                AttributeType::Sensitive,
                AttributeType::AlwaysSensitive,
                AttributeType::Extractable,
                AttributeType::NeverExtractable,
                AttributeType::Sign,
                AttributeType::Decrypt,
                AttributeType::Unwrap,
                AttributeType::Derive,
                AttributeType::Modifiable,
            ],
        )
        .map_err(|e| ck("C_GetAttributeValue", e))?;
    Ok(attrs.iter().map(|a| format!("{a:?}")).collect())
}

#[derive(Sequence)]
struct RsaPublicKeyOut<'a> {
    modulus: UintRef<'a>,
    public_exponent: UintRef<'a>,
}

/// The CA public key as a SubjectPublicKeyInfo, read from the token's public key object.
pub fn public_key_info(
    session: &Session,
    public: ObjectHandle,
) -> Result<SubjectPublicKeyInfoOwned, TokenError> {
    let kt = session
        .get_attributes(public, &[AttributeType::KeyType])
        .map_err(|e| ck("C_GetAttributeValue", e))?;
    let key_type = kt.iter().find_map(|a| match a {
        Attribute::KeyType(k) => Some(*k),
        _ => None,
    });
    let enc = |e: der::Error| TokenError::Pkcs11(format!("public key encoding: {e}"));
    match key_type {
        Some(KeyType::EC) => {
            let attrs = session
                .get_attributes(public, &[AttributeType::EcParams, AttributeType::EcPoint])
                .map_err(|e| ck("C_GetAttributeValue", e))?;
            let mut params = None;
            let mut point = None;
            for a in attrs {
                match a {
                    Attribute::EcParams(p) => params = Some(p),
                    Attribute::EcPoint(p) => point = Some(p),
                    _ => {}
                }
            }
            let params = params.ok_or_else(|| TokenError::Pkcs11("no CKA_EC_PARAMS".into()))?;
            let point = point.ok_or_else(|| TokenError::Pkcs11("no CKA_EC_POINT".into()))?;
            let curve = ObjectIdentifier::from_der(&params).map_err(enc)?;
            // SoftHSM (and the PKCS#11 spec) wrap the point in a DER OCTET STRING.
            let raw_point = match OctetString::from_der(&point) {
                Ok(os) => os.as_bytes().to_vec(),
                Err(_) => point,
            };
            Ok(SubjectPublicKeyInfoOwned {
                algorithm: AlgorithmIdentifierOwned {
                    oid: oid::EC_PUBLIC_KEY,
                    parameters: Some(Any::from(&curve)),
                },
                subject_public_key: BitString::from_bytes(&raw_point).map_err(enc)?,
            })
        }
        Some(KeyType::RSA) => {
            let attrs = session
                .get_attributes(
                    public,
                    &[AttributeType::Modulus, AttributeType::PublicExponent],
                )
                .map_err(|e| ck("C_GetAttributeValue", e))?;
            let mut modulus = None;
            let mut exponent = None;
            for a in attrs {
                match a {
                    Attribute::Modulus(m) => modulus = Some(m),
                    Attribute::PublicExponent(e) => exponent = Some(e),
                    _ => {}
                }
            }
            let modulus = modulus.ok_or_else(|| TokenError::Pkcs11("no CKA_MODULUS".into()))?;
            let exponent =
                exponent.ok_or_else(|| TokenError::Pkcs11("no CKA_PUBLIC_EXPONENT".into()))?;
            let rsa = RsaPublicKeyOut {
                modulus: UintRef::new(&modulus).map_err(enc)?,
                public_exponent: UintRef::new(&exponent).map_err(enc)?,
            }
            .to_der()
            .map_err(enc)?;
            Ok(SubjectPublicKeyInfoOwned {
                algorithm: AlgorithmIdentifierOwned {
                    oid: oid::RSA_ENCRYPTION,
                    parameters: Some(Any::from(der::asn1::Null)),
                },
                subject_public_key: BitString::from_bytes(&rsa).map_err(enc)?,
            })
        }
        other => Err(TokenError::KeyNotFound(format!(
            "unsupported CA key type {other:?}"
        ))),
    }
}

/// The signature algorithm the CA uses with its key: ECDSA with the hash matching the curve,
/// or RSA PKCS#1 v1.5 with SHA-256.
pub fn ca_signature_algorithm(
    spki: &SubjectPublicKeyInfoOwned,
) -> Result<SignatureAlgorithm, TokenError> {
    use hsm_est_pki::keys::{inspect_spki, Curve, PublicKey};
    match inspect_spki(spki).map_err(|e| TokenError::KeyNotFound(e.0))? {
        PublicKey::Ec {
            curve: Curve::P256, ..
        } => Ok(SignatureAlgorithm::EcdsaSha256),
        PublicKey::Ec {
            curve: Curve::P384, ..
        } => Ok(SignatureAlgorithm::EcdsaSha384),
        PublicKey::Rsa { .. } => Ok(SignatureAlgorithm::RsaPkcs1Sha256),
        other => Err(TokenError::KeyNotFound(format!(
            "unsupported CA key {}",
            other.describe()
        ))),
    }
}

#[derive(Sequence)]
struct EcdsaSigValue<'a> {
    r: UintRef<'a>,
    s: UintRef<'a>,
}

/// Signatures the token made since start, and their total time: for the metrics.
static SIGNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static SIGN_MICROS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// (signatures, total microseconds) of the CA key's signing calls since start.
pub fn sign_counters() -> (u64, u64) {
    use std::sync::atomic::Ordering::Relaxed;
    (SIGNS.load(Relaxed), SIGN_MICROS.load(Relaxed))
}

/// A CA signer bound to one session (one worker thread).
pub struct SessionSigner<'a> {
    pub session: &'a Session,
    pub key: ObjectHandle,
    pub algorithm: SignatureAlgorithm,
}

impl CaSigner for SessionSigner<'_> {
    fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        self.try_sign(message).map_err(|f| f.to_string())
    }
}

/// Why the token did not sign, as far as recovery cares.
#[derive(Debug)]
pub enum SignFault {
    /// The key's object handle is no longer valid in this process (the token's objects
    /// were reloaded, or the key is gone): finding the key by its label again may help.
    HandleLost(String),
    /// The session, the login or the token itself is gone: only a new login helps, which
    /// this process never attempts twice.
    TokenLost(String),
    /// Anything else (a malformed answer, an unsupported algorithm, a module error that
    /// says nothing about the token's state).
    Other(String),
}

impl fmt::Display for SignFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignFault::HandleLost(m) | SignFault::TokenLost(m) | SignFault::Other(m) => {
                f.write_str(m)
            }
        }
    }
}

fn sign_fault(e: CkError) -> SignFault {
    // The return value by name, which an operator matches against the HSM's documentation;
    // cryptoki's prose for it is long, and the reason travels in a 256-byte field.
    let message = match &e {
        CkError::Pkcs11(rv, function) => format!("C_Sign: {function} returned {rv:?}"),
        _ => format!("C_Sign: {e}"),
    };
    match e {
        CkError::Pkcs11(RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid, _) => {
            SignFault::HandleLost(message)
        }
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::UserNotLoggedIn
            | RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::DeviceRemoved
            | RvError::DeviceError
            | RvError::CryptokiNotInitialized,
            _,
        ) => SignFault::TokenLost(message),
        _ => SignFault::Other(message),
    }
}

impl SessionSigner<'_> {
    /// Signs `message`; a failure says whether the token or the key handle was lost.
    pub fn try_sign(&self, message: &[u8]) -> Result<Vec<u8>, SignFault> {
        use std::sync::atomic::Ordering::Relaxed;
        let start = std::time::Instant::now();
        let signature = self.try_sign_untimed(message);
        SIGNS.fetch_add(1, Relaxed);
        SIGN_MICROS.fetch_add(start.elapsed().as_micros() as u64, Relaxed);
        signature
    }

    fn try_sign_untimed(&self, message: &[u8]) -> Result<Vec<u8>, SignFault> {
        let other = |e: String| SignFault::Other(e);
        match self.algorithm {
            // SoftHSM has no hash-and-sign ECDSA mechanism: hash here, sign raw, and DER-encode
            // the r‖s the token returns.
            SignatureAlgorithm::EcdsaSha256 | SignatureAlgorithm::EcdsaSha384 => {
                let hash_alg = if self.algorithm == SignatureAlgorithm::EcdsaSha256 {
                    &ring::digest::SHA256
                } else {
                    &ring::digest::SHA384
                };
                let digest = ring::digest::digest(hash_alg, message);
                let rs = self
                    .session
                    .sign(&Mechanism::Ecdsa, self.key, digest.as_ref())
                    .map_err(sign_fault)?;
                if rs.is_empty() || rs.len() % 2 != 0 {
                    return Err(other("token returned a malformed ECDSA signature".into()));
                }
                let (r, s) = rs.split_at(rs.len() / 2);
                EcdsaSigValue {
                    r: UintRef::new(r).map_err(|e| other(e.to_string()))?,
                    s: UintRef::new(s).map_err(|e| other(e.to_string()))?,
                }
                .to_der()
                .map_err(|e| other(e.to_string()))
            }
            SignatureAlgorithm::RsaPkcs1Sha256 => self
                .session
                .sign(&Mechanism::Sha256RsaPkcs, self.key, message)
                .map_err(sign_fault),
            alg => Err(other(format!("CA cannot sign with {}", alg.name()))),
        }
    }
}
