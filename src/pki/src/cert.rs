//! Certificate construction. The signer builds every certificate from the profile's decisions;
//! nothing from a CSR reaches a certificate except the public key and what policy approved.

use std::time::SystemTime;

use der::asn1::{BitString, GeneralizedTime, Ia5String, OctetString, UtcTime};
use der::{Decode, Encode};
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::certificate::{Certificate, TbsCertificate, Version};
use x509_cert::ext::pkix::crl::dp::DistributionPoint;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{
    AccessDescription, AuthorityInfoAccessSyntax, AuthorityKeyIdentifier, BasicConstraints,
    CrlDistributionPoints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName,
    SubjectKeyIdentifier,
};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};

use super::keys::{self, SignatureAlgorithm, SignatureAlgorithmId};
use super::oid;

/// Something that signs a `tbsCertificate` (or a `certificationRequestInfo`) with the CA key:
/// the PKCS#11 token in production. Returns the signature value as it goes into the BIT
/// STRING (DER `Ecdsa-Sig-Value` for ECDSA).
pub trait CaSigner {
    fn algorithm(&self) -> SignatureAlgorithm;
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String>;
}

/// RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050 on.
pub fn x509_time(t: SystemTime) -> Result<Time, der::Error> {
    let dt = der::DateTime::from_system_time(t)?;
    if dt.year() < 2050 {
        Ok(Time::UtcTime(UtcTime::from_date_time(dt)?))
    } else {
        Ok(Time::GeneralTime(GeneralizedTime::from_date_time(dt)))
    }
}

/// Key identifier per RFC 7093 method 1: the leftmost 160 bits of the SHA-256 of the
/// subjectPublicKey bits (no SHA-1 anywhere in this CA).
pub fn key_identifier(spki: &SubjectPublicKeyInfoOwned) -> Vec<u8> {
    super::sha256(spki.subject_public_key.raw_bytes())[..20].to_vec()
}

pub fn extension<T: Encode>(
    id: der::asn1::ObjectIdentifier,
    critical: bool,
    value: &T,
) -> Result<Extension, der::Error> {
    Ok(Extension {
        extn_id: id,
        critical,
        extn_value: OctetString::new(value.to_der()?)?,
    })
}

/// The end-entity extensions a profile decided on.
pub struct LeafExtensions<'a> {
    pub key_usage: KeyUsage,
    pub extended_key_usage: Vec<der::asn1::ObjectIdentifier>,
    pub subject_alt_names: Vec<GeneralName>,
    /// RFC 5280 §4.2.1.6: SAN must be critical when the subject is empty.
    pub san_critical: bool,
    pub subject_key_id: Vec<u8>,
    pub authority_key_id: Vec<u8>,
    pub crl_distribution_point: Option<&'a str>,
    pub aia_ca_issuers: Option<&'a str>,
    /// The OCSP responder's URL, in the authorityInfoAccess extension.
    pub ocsp_url: Option<&'a str>,
}

pub fn leaf_extensions(spec: &LeafExtensions<'_>) -> Result<Vec<Extension>, der::Error> {
    let mut exts = vec![
        extension(
            oid::CE_BASIC_CONSTRAINTS,
            true,
            &BasicConstraints {
                ca: false,
                path_len_constraint: None,
            },
        )?,
        extension(oid::CE_KEY_USAGE, true, &spec.key_usage)?,
    ];
    if !spec.extended_key_usage.is_empty() {
        exts.push(extension(
            oid::CE_EXT_KEY_USAGE,
            false,
            &ExtendedKeyUsage(spec.extended_key_usage.clone()),
        )?);
    }
    exts.push(extension(
        oid::CE_SUBJECT_KEY_ID,
        false,
        &SubjectKeyIdentifier(OctetString::new(spec.subject_key_id.clone())?),
    )?);
    exts.push(extension(
        oid::CE_AUTHORITY_KEY_ID,
        false,
        &AuthorityKeyIdentifier {
            key_identifier: Some(OctetString::new(spec.authority_key_id.clone())?),
            authority_cert_issuer: None,
            authority_cert_serial_number: None,
        },
    )?);
    if !spec.subject_alt_names.is_empty() {
        exts.push(extension(
            oid::CE_SUBJECT_ALT_NAME,
            spec.san_critical,
            &SubjectAltName(spec.subject_alt_names.clone()),
        )?);
    }
    if let Some(url) = spec.crl_distribution_point {
        let dp = DistributionPoint {
            distribution_point: Some(DistributionPointName::FullName(vec![
                GeneralName::UniformResourceIdentifier(Ia5String::new(url)?),
            ])),
            reasons: None,
            crl_issuer: None,
        };
        exts.push(extension(
            oid::CE_CRL_DISTRIBUTION_POINTS,
            false,
            &CrlDistributionPoints(vec![dp]),
        )?);
    }
    let mut access = Vec::new();
    for (method, url) in [
        (oid::AD_OCSP, spec.ocsp_url),
        (oid::AD_CA_ISSUERS, spec.aia_ca_issuers),
    ] {
        if let Some(url) = url {
            access.push(AccessDescription {
                access_method: method,
                access_location: GeneralName::UniformResourceIdentifier(Ia5String::new(url)?),
            });
        }
    }
    if !access.is_empty() {
        exts.push(extension(
            oid::PE_AUTHORITY_INFO_ACCESS,
            false,
            &AuthorityInfoAccessSyntax(access),
        )?);
    }
    Ok(exts)
}

/// CA extensions: basicConstraints critical CA:TRUE pathLen 0, keyUsage critical
/// keyCertSign + cRLSign, SKI, and AKI when an issuer key id is given.
pub fn ca_extensions(
    subject_key_id: &[u8],
    authority_key_id: Option<&[u8]>,
) -> Result<Vec<Extension>, der::Error> {
    let mut exts = vec![
        extension(
            oid::CE_BASIC_CONSTRAINTS,
            true,
            &BasicConstraints {
                ca: true,
                path_len_constraint: Some(0),
            },
        )?,
        extension(
            oid::CE_KEY_USAGE,
            true,
            &KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign),
        )?,
        extension(
            oid::CE_SUBJECT_KEY_ID,
            false,
            &SubjectKeyIdentifier(OctetString::new(subject_key_id.to_vec())?),
        )?,
    ];
    if let Some(aki) = authority_key_id {
        exts.push(extension(
            oid::CE_AUTHORITY_KEY_ID,
            false,
            &AuthorityKeyIdentifier {
                key_identifier: Some(OctetString::new(aki.to_vec())?),
                authority_cert_issuer: None,
                authority_cert_serial_number: None,
            },
        )?);
    }
    Ok(exts)
}

pub struct TbsSpec {
    pub serial: Vec<u8>,
    pub issuer: Name,
    pub subject: Name,
    pub spki: SubjectPublicKeyInfoOwned,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub extensions: Vec<Extension>,
    pub algorithm: SignatureAlgorithm,
}

#[derive(Debug)]
pub struct BuildError(pub String);

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<der::Error> for BuildError {
    fn from(e: der::Error) -> Self {
        BuildError(format!("encoding error: {e}"))
    }
}

/// Encodes the `tbsCertificate`.
pub fn encode_tbs(spec: TbsSpec) -> Result<Vec<u8>, BuildError> {
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&spec.serial)?,
        signature: spec.algorithm.algorithm_identifier(),
        issuer: spec.issuer,
        validity: Validity {
            not_before: x509_time(spec.not_before)?,
            not_after: x509_time(spec.not_after)?,
        },
        subject: spec.subject,
        subject_public_key_info: spec.spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(spec.extensions),
    };
    Ok(tbs.to_der()?)
}

/// Wraps signed bytes (a `tbsCertificate` or `certificationRequestInfo`), the algorithm and
/// the signature into the outer SEQUENCE, keeping the signed bytes exactly as they were.
pub fn assemble_signed(
    signed: &[u8],
    alg: SignatureAlgorithm,
    signature: &[u8],
) -> Result<Vec<u8>, BuildError> {
    let alg_der = alg.algorithm_identifier().to_der()?;
    let sig_der = BitString::from_bytes(signature)?.to_der()?;
    let content_len = signed.len() + alg_der.len() + sig_der.len();
    let header = der::Header::new(der::Tag::Sequence, content_len)?;
    let mut out = header.to_der()?;
    out.extend_from_slice(signed);
    out.extend_from_slice(&alg_der);
    out.extend_from_slice(&sig_der);
    Ok(out)
}

/// Builds and signs a certificate.
pub fn sign_certificate(spec: TbsSpec, signer: &dyn CaSigner) -> Result<Vec<u8>, BuildError> {
    let alg = spec.algorithm;
    if alg != signer.algorithm() {
        return Err(BuildError(
            "signature algorithm does not match the CA key".into(),
        ));
    }
    let tbs = encode_tbs(spec)?;
    let signature = signer.sign(&tbs).map_err(BuildError)?;
    assemble_signed(&tbs, alg, &signature)
}

/// Verifies a certificate's signature with the issuer's public key.
pub fn verify_certificate_signature(
    cert_der: &[u8],
    issuer_spki: &SubjectPublicKeyInfoOwned,
) -> Result<(), String> {
    let cert = Certificate::from_der(cert_der).map_err(|e| format!("bad certificate: {e}"))?;
    let alg = match keys::classify_signature_algorithm(&cert.signature_algorithm) {
        SignatureAlgorithmId::Known(a) => a,
        other => return Err(format!("unsupported certificate signature {other:?}")),
    };
    if cert.tbs_certificate.signature != cert.signature_algorithm {
        return Err("inner and outer signature algorithms differ".into());
    }
    let key = keys::inspect_spki(issuer_spki).map_err(|e| e.0)?;
    let signed = super::signed_part(cert_der).map_err(|e| e.to_string())?;
    let sig = cert
        .signature
        .as_bytes()
        .ok_or_else(|| "signature has unused bits".to_string())?;
    keys::verify_signature(&key, alg, signed, sig).map_err(|e| e.to_string())
}

/// A certificate's three parts, borrowed: the TBSCertificate is not decoded.
#[derive(der::Sequence)]
struct CertificateParts<'a> {
    tbs: der::asn1::AnyRef<'a>,
    algorithm: spki::AlgorithmIdentifierRef<'a>,
    signature: der::asn1::BitStringRef<'a>,
}

/// The pre-release check of a certificate this process just built and had signed: its
/// outer signature algorithm is `alg`, and its signature over the exact TBSCertificate
/// bytes it carries verifies with `issuer`. Unlike [`verify_certificate_signature`] it
/// does not decode the TBSCertificate (the signer built it) nor the issuer's key again
/// (inspected once at start): on the issuance path that decoding cost as much as a third
/// of the check.
pub fn verify_issued_signature(
    cert_der: &[u8],
    issuer: &keys::PublicKey,
    alg: SignatureAlgorithm,
) -> Result<(), String> {
    let parts =
        CertificateParts::from_der(cert_der).map_err(|e| format!("bad certificate: {e}"))?;
    let expected = alg.algorithm_identifier();
    if parts.algorithm.oid != expected.oid
        || parts.algorithm.parameters.map(|p| p.to_der().ok())
            != expected.parameters.as_ref().map(|p| p.to_der().ok())
    {
        return Err("the certificate names another signature algorithm".into());
    }
    let signed = super::signed_part(cert_der).map_err(|e| e.to_string())?;
    let sig = parts
        .signature
        .as_bytes()
        .ok_or_else(|| "signature has unused bits".to_string())?;
    keys::verify_signature(issuer, alg, signed, sig).map_err(|e| e.to_string())
}

/// The SubjectKeyIdentifier of a certificate, if it has one.
pub fn subject_key_id(cert: &Certificate) -> Option<Vec<u8>> {
    cert.tbs_certificate
        .get::<SubjectKeyIdentifier>()
        .ok()
        .flatten()
        .map(|(_, ski)| ski.0.as_bytes().to_vec())
}

/// Whether a certificate is a CA that may sign certificates (basicConstraints CA:TRUE and,
/// when keyUsage is present, keyCertSign).
pub fn is_signing_ca(cert: &Certificate) -> bool {
    let ca = matches!(
        cert.tbs_certificate.get::<BasicConstraints>(),
        Ok(Some((_, BasicConstraints { ca: true, .. })))
    );
    let ku_ok = match cert.tbs_certificate.get::<KeyUsage>() {
        Ok(Some((_, ku))) => ku.key_cert_sign(),
        Ok(None) => true,
        Err(_) => false,
    };
    ca && ku_ok
}

/// The subjectAltName of a certificate (empty when absent).
pub fn subject_alt_names(cert: &Certificate) -> Vec<GeneralName> {
    match cert.tbs_certificate.get::<SubjectAltName>() {
        Ok(Some((_, san))) => san.0,
        _ => Vec::new(),
    }
}

/// Seconds since the epoch of a certificate's notBefore and notAfter.
pub fn validity_seconds(cert: &Certificate) -> (i64, i64) {
    let v = &cert.tbs_certificate.validity;
    (
        v.not_before.to_unix_duration().as_secs() as i64,
        v.not_after.to_unix_duration().as_secs() as i64,
    )
}

/// Decodes a DER certificate.
pub fn parse_certificate(der_bytes: &[u8]) -> Result<Certificate, String> {
    Certificate::from_der(der_bytes).map_err(|e| format!("bad certificate: {e}"))
}
