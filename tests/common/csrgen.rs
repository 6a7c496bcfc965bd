//! CSRs built by code, for the hostile cases that `openssl req` will not make (a CN with a
//! NUL byte, a signature from another key, a forged signature). Depends only on the
//! X.509 crates and ring, so the library's unit tests can include it too.

use der::asn1::{Any, BitString, ObjectIdentifier, PrintableStringRef, SetOfVec, Utf8StringRef};
use der::Encode;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::attr::{Attribute, AttributeTypeAndValue};
use x509_cert::ext::Extension;
use x509_cert::name::{RdnSequence, RelativeDistinguishedName};
use x509_cert::request::{CertReq, CertReqInfo, Version};

pub const CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
pub const O: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.10");
pub const C: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.6");
pub const OU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.11");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const EXTENSION_REQUEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.14");

pub struct P256Key {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
}

impl P256Key {
    pub fn generate() -> P256Key {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        P256Key { pair, rng }
    }

    pub fn spki(&self) -> SubjectPublicKeyInfoOwned {
        SubjectPublicKeyInfoOwned {
            algorithm: AlgorithmIdentifierOwned {
                oid: EC_PUBLIC_KEY,
                parameters: Some(Any::from(&P256)),
            },
            subject_public_key: BitString::from_bytes(self.pair.public_key().as_ref()).unwrap(),
        }
    }

    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.pair.sign(&self.rng, msg).unwrap().as_ref().to_vec()
    }
}

/// A subject of one attribute per RDN, each value a UTF8String taken verbatim.
pub fn subject(attrs: &[(ObjectIdentifier, &str)]) -> RdnSequence {
    subject_with(attrs, |v| Any::from(Utf8StringRef::new(v).unwrap()))
}

/// A subject of one attribute per RDN, each value encoded by `value`.
pub fn subject_with(
    attrs: &[(ObjectIdentifier, &str)],
    value: impl Fn(&str) -> Any,
) -> RdnSequence {
    RdnSequence(
        attrs
            .iter()
            .map(|(oid, v)| {
                let atv = AttributeTypeAndValue {
                    oid: *oid,
                    value: value(v),
                };
                RelativeDistinguishedName(SetOfVec::try_from(vec![atv]).unwrap())
            })
            .collect(),
    )
}

pub fn info(
    subject: RdnSequence,
    spki: SubjectPublicKeyInfoOwned,
    extensions: Vec<Extension>,
) -> CertReqInfo {
    let mut attributes = SetOfVec::new();
    if !extensions.is_empty() {
        let value = Any::encode_from(&extensions).unwrap();
        attributes
            .insert(Attribute {
                oid: EXTENSION_REQUEST,
                values: SetOfVec::try_from(vec![value]).unwrap(),
            })
            .unwrap();
    }
    CertReqInfo {
        version: Version::V1,
        subject,
        public_key: spki,
        attributes,
    }
}

/// Signs `info` with `signer` (normally the key the info names).
pub fn sign(info: CertReqInfo, signer: &P256Key) -> Vec<u8> {
    let tbs = info.to_der().unwrap();
    let sig = signer.sign(&tbs);
    CertReq {
        info,
        algorithm: AlgorithmIdentifierOwned {
            oid: ECDSA_SHA256,
            parameters: None,
        },
        signature: BitString::from_bytes(&sig).unwrap(),
    }
    .to_der()
    .unwrap()
}

/// A CSR naming only `cn`, signed by `key`: the same device key across requests.
pub fn csr_for_key(key: &P256Key, cn: &str) -> Vec<u8> {
    sign(info(subject(&[(CN, cn)]), key.spki(), vec![]), key)
}

/// A well-formed P-256 CSR with the given subject.
pub fn csr(attrs: &[(ObjectIdentifier, &str)]) -> Vec<u8> {
    let key = P256Key::generate();
    sign(info(subject(attrs), key.spki(), vec![]), &key)
}

/// A well-formed P-256 CSR whose subject values are PrintableStrings.
pub fn csr_printable(attrs: &[(ObjectIdentifier, &str)]) -> Vec<u8> {
    let key = P256Key::generate();
    let subject = subject_with(attrs, |v| Any::from(PrintableStringRef::new(v).unwrap()));
    sign(info(subject, key.spki(), vec![]), &key)
}

/// The same CSR with one bit of its signature flipped.
pub fn forged(attrs: &[(ObjectIdentifier, &str)]) -> Vec<u8> {
    let mut der = csr(attrs);
    let last = der.len() - 1;
    der[last] ^= 0x01;
    der
}

/// A CSR naming one key but signed by another (proof of possession fails).
pub fn signed_by_other_key(attrs: &[(ObjectIdentifier, &str)]) -> Vec<u8> {
    let named = P256Key::generate();
    let other = P256Key::generate();
    sign(info(subject(attrs), named.spki(), vec![]), &other)
}

/// A CSR for `key` naming `cn` whose challengePassword attribute (PKCS#9) is `value`, as
/// EST clients carry channel binding (RFC 7030 §3.5).
pub fn csr_with_challenge(key: &P256Key, cn: &str, value: &str) -> Vec<u8> {
    const CHALLENGE_PASSWORD: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.7");
    let mut info = info(subject(&[(CN, cn)]), key.spki(), vec![]);
    info.attributes
        .insert(Attribute {
            oid: CHALLENGE_PASSWORD,
            values: SetOfVec::try_from(vec![Any::from(Utf8StringRef::new(value).unwrap())])
                .unwrap(),
        })
        .unwrap();
    sign(info, key)
}
