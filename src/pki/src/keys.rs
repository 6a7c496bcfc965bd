//! Public keys and signature algorithms: what a key is, and whether a signature over some
//! bytes verifies. Policy (which of these are acceptable) lives in `crate::policy`.

use der::asn1::{ObjectIdentifier, UintRef};
use der::{Decode, Encode, Sequence, Tagged};
use ring::signature as rs;
use spki::SubjectPublicKeyInfoOwned;

use super::oid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
}

impl Curve {
    pub fn name(self) -> &'static str {
        match self {
            Curve::P256 => "p256",
            Curve::P384 => "p384",
        }
    }
}

/// A subject public key as far as policy cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    Rsa {
        modulus_bits: usize,
        /// Big-endian public exponent without leading zeros.
        exponent: Vec<u8>,
        /// The `RSAPublicKey` DER that ring verifies with.
        der: Vec<u8>,
    },
    Ec {
        curve: Curve,
        point: Vec<u8>,
    },
    /// An EC key on a curve this project does not support (secp256k1, brainpool, …).
    EcUnsupportedCurve(String),
    Ed25519(Vec<u8>),
    Unsupported(String),
}

impl PublicKey {
    pub fn describe(&self) -> String {
        match self {
            PublicKey::Rsa { modulus_bits, .. } => format!("rsa-{modulus_bits}"),
            PublicKey::Ec { curve, .. } => format!("ec-{}", curve.name()),
            PublicKey::EcUnsupportedCurve(c) => format!("ec curve {c}"),
            PublicKey::Ed25519(_) => "ed25519".into(),
            PublicKey::Unsupported(o) => format!("algorithm {o}"),
        }
    }
}

impl PublicKey {
    /// The SubjectPublicKeyInfo a certificate gets: rebuilt from the parsed key (algorithm,
    /// canonical parameters, key bytes), never copied from the request.
    pub fn canonical_spki(&self) -> Result<SubjectPublicKeyInfoOwned, KeyError> {
        let bad = |e: der::Error| KeyError(format!("cannot encode the public key: {e}"));
        let (oid, parameters, key) = match self {
            PublicKey::Rsa { der: key_der, .. } => {
                let rsa = RsaPublicKeyDer::from_der(key_der).map_err(bad)?;
                (
                    oid::RSA_ENCRYPTION,
                    Some(der::asn1::Any::from(der::asn1::Null)),
                    rsa.to_der().map_err(bad)?,
                )
            }
            PublicKey::Ec { curve, point } => {
                let named = match curve {
                    Curve::P256 => oid::SECP256R1,
                    Curve::P384 => oid::SECP384R1,
                };
                (
                    oid::EC_PUBLIC_KEY,
                    Some(der::asn1::Any::from(&named)),
                    point.clone(),
                )
            }
            PublicKey::Ed25519(key) => (oid::ED25519, None, key.clone()),
            PublicKey::EcUnsupportedCurve(_) | PublicKey::Unsupported(_) => {
                return Err(KeyError(format!("{} cannot be certified", self.describe())))
            }
        };
        Ok(SubjectPublicKeyInfoOwned {
            algorithm: spki::AlgorithmIdentifierOwned { oid, parameters },
            subject_public_key: der::asn1::BitString::from_bytes(&key).map_err(bad)?,
        })
    }
}

#[derive(Sequence)]
struct RsaPublicKeyDer<'a> {
    modulus: UintRef<'a>,
    public_exponent: UintRef<'a>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct KeyError(pub String);

/// Decodes a SubjectPublicKeyInfo into a [`PublicKey`].
pub fn inspect_spki(spki: &SubjectPublicKeyInfoOwned) -> Result<PublicKey, KeyError> {
    let alg = spki.algorithm.oid;
    let key_bytes = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| KeyError("public key bit string has unused bits".into()))?;
    let params = spki.algorithm.parameters.as_ref();
    if alg == oid::RSA_ENCRYPTION {
        // RFC 3279 §2.3.1: the parameters are NULL. Anything else would be attacker bytes
        // that a CA copying the SPKI would sign.
        if !params.is_some_and(|p| p.tag() == der::Tag::Null && p.value().is_empty()) {
            return Ok(PublicKey::Unsupported(
                "rsaEncryption with parameters other than NULL".into(),
            ));
        }
        let rsa = RsaPublicKeyDer::from_der(key_bytes)
            .map_err(|e| KeyError(format!("bad RSA public key: {e}")))?;
        let m = rsa.modulus.as_bytes();
        let modulus_bits = match m.first() {
            Some(first) => (m.len() - 1) * 8 + (8 - first.leading_zeros() as usize),
            None => 0,
        };
        Ok(PublicKey::Rsa {
            modulus_bits,
            exponent: rsa.public_exponent.as_bytes().to_vec(),
            der: key_bytes.to_vec(),
        })
    } else if alg == oid::EC_PUBLIC_KEY {
        let curve_oid: ObjectIdentifier = spki
            .algorithm
            .parameters
            .as_ref()
            .ok_or_else(|| KeyError("EC key without curve parameters".into()))?
            .decode_as()
            .map_err(|_| KeyError("EC key with non-named curve".into()))?;
        let curve = if curve_oid == oid::SECP256R1 {
            Curve::P256
        } else if curve_oid == oid::SECP384R1 {
            Curve::P384
        } else {
            return Ok(PublicKey::EcUnsupportedCurve(curve_oid.to_string()));
        };
        Ok(PublicKey::Ec {
            curve,
            point: key_bytes.to_vec(),
        })
    } else if alg == oid::ED25519 {
        // RFC 8410 §3: the parameters are absent.
        if params.is_some() {
            return Ok(PublicKey::Unsupported("Ed25519 with parameters".into()));
        }
        Ok(PublicKey::Ed25519(key_bytes.to_vec()))
    } else {
        Ok(PublicKey::Unsupported(alg.to_string()))
    }
}

/// Signature algorithms as they appear on CSRs and certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureAlgorithm {
    RsaPkcs1Sha256,
    RsaPkcs1Sha384,
    RsaPkcs1Sha512,
    EcdsaSha256,
    EcdsaSha384,
    EcdsaSha512,
    Ed25519,
}

impl SignatureAlgorithm {
    pub fn name(self) -> &'static str {
        match self {
            SignatureAlgorithm::RsaPkcs1Sha256 => "rsa-pkcs1-sha256",
            SignatureAlgorithm::RsaPkcs1Sha384 => "rsa-pkcs1-sha384",
            SignatureAlgorithm::RsaPkcs1Sha512 => "rsa-pkcs1-sha512",
            SignatureAlgorithm::EcdsaSha256 => "ecdsa-sha256",
            SignatureAlgorithm::EcdsaSha384 => "ecdsa-sha384",
            SignatureAlgorithm::EcdsaSha512 => "ecdsa-sha512",
            SignatureAlgorithm::Ed25519 => "ed25519",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        [
            SignatureAlgorithm::RsaPkcs1Sha256,
            SignatureAlgorithm::RsaPkcs1Sha384,
            SignatureAlgorithm::RsaPkcs1Sha512,
            SignatureAlgorithm::EcdsaSha256,
            SignatureAlgorithm::EcdsaSha384,
            SignatureAlgorithm::EcdsaSha512,
            SignatureAlgorithm::Ed25519,
        ]
        .into_iter()
        .find(|a| a.name() == name)
    }

    pub fn oid(self) -> ObjectIdentifier {
        match self {
            SignatureAlgorithm::RsaPkcs1Sha256 => oid::SHA256_WITH_RSA,
            SignatureAlgorithm::RsaPkcs1Sha384 => oid::SHA384_WITH_RSA,
            SignatureAlgorithm::RsaPkcs1Sha512 => oid::SHA512_WITH_RSA,
            SignatureAlgorithm::EcdsaSha256 => oid::ECDSA_WITH_SHA256,
            SignatureAlgorithm::EcdsaSha384 => oid::ECDSA_WITH_SHA384,
            SignatureAlgorithm::EcdsaSha512 => oid::ECDSA_WITH_SHA512,
            SignatureAlgorithm::Ed25519 => oid::ED25519,
        }
    }

    /// The AlgorithmIdentifier: RSA carries an explicit NULL (RFC 4055), ECDSA and Ed25519
    /// carry no parameters (RFC 5758, RFC 8410).
    pub fn algorithm_identifier(self) -> spki::AlgorithmIdentifierOwned {
        let parameters = match self {
            SignatureAlgorithm::RsaPkcs1Sha256
            | SignatureAlgorithm::RsaPkcs1Sha384
            | SignatureAlgorithm::RsaPkcs1Sha512 => Some(der::asn1::Any::from(der::asn1::Null)),
            _ => None,
        };
        spki::AlgorithmIdentifierOwned {
            oid: self.oid(),
            parameters,
        }
    }
}

/// What an AlgorithmIdentifier on a CSR or certificate names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureAlgorithmId {
    Known(SignatureAlgorithm),
    Sha1,
    Other(String),
}

pub fn classify_signature_algorithm(alg: &spki::AlgorithmIdentifierOwned) -> SignatureAlgorithmId {
    let o = alg.oid;
    if o == oid::SHA1_WITH_RSA || o == oid::ECDSA_WITH_SHA1 {
        return SignatureAlgorithmId::Sha1;
    }
    for a in [
        SignatureAlgorithm::RsaPkcs1Sha256,
        SignatureAlgorithm::RsaPkcs1Sha384,
        SignatureAlgorithm::RsaPkcs1Sha512,
        SignatureAlgorithm::EcdsaSha256,
        SignatureAlgorithm::EcdsaSha384,
        SignatureAlgorithm::EcdsaSha512,
        SignatureAlgorithm::Ed25519,
    ] {
        if a.oid() == o {
            return SignatureAlgorithmId::Known(a);
        }
    }
    if o == oid::RSASSA_PSS {
        return SignatureAlgorithmId::Other("rsassa-pss".into());
    }
    SignatureAlgorithmId::Other(o.to_string())
}

/// Verifies `signature` over `message` with `key` under `alg`. `Err` carries a short reason.
/// ring enforces RSA moduli of 2048–8192 bits and validates EC points.
pub fn verify_signature(
    key: &PublicKey,
    alg: SignatureAlgorithm,
    message: &[u8],
    signature: &[u8],
) -> Result<(), &'static str> {
    let (ring_alg, key_bytes): (&'static dyn rs::VerificationAlgorithm, &[u8]) = match (key, alg) {
        (PublicKey::Rsa { der, .. }, SignatureAlgorithm::RsaPkcs1Sha256) => {
            (&rs::RSA_PKCS1_2048_8192_SHA256, der)
        }
        (PublicKey::Rsa { der, .. }, SignatureAlgorithm::RsaPkcs1Sha384) => {
            (&rs::RSA_PKCS1_2048_8192_SHA384, der)
        }
        (PublicKey::Rsa { der, .. }, SignatureAlgorithm::RsaPkcs1Sha512) => {
            (&rs::RSA_PKCS1_2048_8192_SHA512, der)
        }
        // `openssl req` signs P-384 CSRs with SHA-256 by default: curve and hash are
        // independent choices.
        (
            PublicKey::Ec {
                curve: Curve::P256,
                point,
            },
            SignatureAlgorithm::EcdsaSha256,
        ) => (&rs::ECDSA_P256_SHA256_ASN1, point),
        (
            PublicKey::Ec {
                curve: Curve::P256,
                point,
            },
            SignatureAlgorithm::EcdsaSha384,
        ) => (&rs::ECDSA_P256_SHA384_ASN1, point),
        (
            PublicKey::Ec {
                curve: Curve::P384,
                point,
            },
            SignatureAlgorithm::EcdsaSha256,
        ) => (&rs::ECDSA_P384_SHA256_ASN1, point),
        (
            PublicKey::Ec {
                curve: Curve::P384,
                point,
            },
            SignatureAlgorithm::EcdsaSha384,
        ) => (&rs::ECDSA_P384_SHA384_ASN1, point),
        (PublicKey::Ed25519(k), SignatureAlgorithm::Ed25519) => (&rs::ED25519, k),
        _ => return Err("signature algorithm does not match the key"),
    };
    rs::UnparsedPublicKey::new(ring_alg, key_bytes)
        .verify(message, signature)
        .map_err(|_| "signature does not verify")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::KeyPair;

    #[test]
    fn ecdsa_round_trip_and_mismatch() {
        let rng = SystemRandom::new();
        let pkcs8 =
            rs::EcdsaKeyPair::generate_pkcs8(&rs::ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let kp =
            rs::EcdsaKeyPair::from_pkcs8(&rs::ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
                .unwrap();
        let sig = kp.sign(&rng, b"hello").unwrap();
        let key = PublicKey::Ec {
            curve: Curve::P256,
            point: kp.public_key().as_ref().to_vec(),
        };
        verify_signature(
            &key,
            SignatureAlgorithm::EcdsaSha256,
            b"hello",
            sig.as_ref(),
        )
        .unwrap();
        assert!(verify_signature(
            &key,
            SignatureAlgorithm::EcdsaSha256,
            b"hellO",
            sig.as_ref()
        )
        .is_err());
        assert!(verify_signature(
            &key,
            SignatureAlgorithm::RsaPkcs1Sha256,
            b"hello",
            sig.as_ref()
        )
        .is_err());
    }

    #[test]
    fn algorithm_names_round_trip() {
        for name in ["rsa-pkcs1-sha256", "ecdsa-sha384", "ed25519"] {
            assert_eq!(SignatureAlgorithm::parse(name).unwrap().name(), name);
        }
        assert!(SignatureAlgorithm::parse("sha1").is_none());
    }
}
