//! Certificate revocation lists (RFC 5280 §5): version 2, the CA's name as issuer, this and
//! next update, each revoked certificate with its revocation date and (except
//! `unspecified`, which RFC 5280 §5.3.1 says to leave out) its reason code, and the
//! authority key identifier and CRL number extensions. The signer builds it; the token
//! signs it.

use std::time::SystemTime;

use der::asn1::{OctetString, Uint};
use der::{Decode, Encode};
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::certificate::Version;
use x509_cert::crl::{CertificateList, RevokedCert, TbsCertList};
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, CrlNumber, CrlReason};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;

use super::cert::{assemble_signed, extension, x509_time, BuildError, CaSigner};
use super::keys::{self, SignatureAlgorithmId};
use super::oid;

/// One revoked certificate as the CRL lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedEntry {
    pub serial: Vec<u8>,
    pub revoked_at: SystemTime,
    /// RFC 5280 CRLReason (0–6, 8–10).
    pub reason: u8,
}

pub struct CrlSpec<'a> {
    pub issuer: Name,
    pub authority_key_id: Vec<u8>,
    pub number: u64,
    pub this_update: SystemTime,
    pub next_update: SystemTime,
    pub entries: &'a [RevokedEntry],
}

pub(crate) fn reason(code: u8) -> Option<CrlReason> {
    Some(match code {
        1 => CrlReason::KeyCompromise,
        2 => CrlReason::CaCompromise,
        3 => CrlReason::AffiliationChanged,
        4 => CrlReason::Superseded,
        5 => CrlReason::CessationOfOperation,
        6 => CrlReason::CertificateHold,
        8 => CrlReason::RemoveFromCRL,
        9 => CrlReason::PrivilegeWithdrawn,
        10 => CrlReason::AaCompromise,
        _ => return None,
    })
}

/// Encodes the `tbsCertList`.
pub fn encode_tbs_crl(spec: &CrlSpec<'_>, signer: &dyn CaSigner) -> Result<Vec<u8>, BuildError> {
    let mut revoked = Vec::with_capacity(spec.entries.len());
    for e in spec.entries {
        let extensions = match reason(e.reason) {
            Some(r) => Some(vec![extension(oid::CE_CRL_REASON, false, &r)?]),
            None => None,
        };
        revoked.push(RevokedCert {
            serial_number: SerialNumber::new(&e.serial)?,
            revocation_date: x509_time(e.revoked_at)?,
            crl_entry_extensions: extensions,
        });
    }
    let aki = AuthorityKeyIdentifier {
        key_identifier: Some(OctetString::new(spec.authority_key_id.clone())?),
        authority_cert_issuer: None,
        authority_cert_serial_number: None,
    };
    let number = CrlNumber(Uint::new(&spec.number.to_be_bytes())?);
    let tbs = TbsCertList {
        version: Version::V2,
        signature: signer.algorithm().algorithm_identifier(),
        issuer: spec.issuer.clone(),
        this_update: x509_time(spec.this_update)?,
        next_update: Some(x509_time(spec.next_update)?),
        revoked_certificates: (!revoked.is_empty()).then_some(revoked),
        crl_extensions: Some(vec![
            extension(oid::CE_AUTHORITY_KEY_ID, false, &aki)?,
            extension(oid::CE_CRL_NUMBER, false, &number)?,
        ]),
    };
    Ok(tbs.to_der()?)
}

/// Builds and signs a CRL.
pub fn sign_crl(spec: &CrlSpec<'_>, signer: &dyn CaSigner) -> Result<Vec<u8>, BuildError> {
    let tbs = encode_tbs_crl(spec, signer)?;
    let signature = signer.sign(&tbs).map_err(BuildError)?;
    assemble_signed(&tbs, signer.algorithm(), &signature)
}

/// Verifies a CRL's signature with the issuer's public key.
pub fn verify_crl_signature(
    crl_der: &[u8],
    issuer_spki: &SubjectPublicKeyInfoOwned,
) -> Result<(), String> {
    let crl = CertificateList::from_der(crl_der).map_err(|e| format!("bad CRL: {e}"))?;
    let alg = match keys::classify_signature_algorithm(&crl.signature_algorithm) {
        SignatureAlgorithmId::Known(a) => a,
        other => return Err(format!("unsupported CRL signature {other:?}")),
    };
    if crl.tbs_cert_list.signature != crl.signature_algorithm {
        return Err("inner and outer signature algorithms differ".into());
    }
    let key = keys::inspect_spki(issuer_spki).map_err(|e| e.0)?;
    let signed = super::signed_part(crl_der).map_err(|e| e.to_string())?;
    let sig = crl
        .signature
        .as_bytes()
        .ok_or_else(|| "signature has unused bits".to_string())?;
    keys::verify_signature(&key, alg, signed, sig).map_err(|e| e.to_string())
}

/// The CRL number of a CRL.
pub fn crl_number(crl_der: &[u8]) -> Option<u64> {
    let crl = CertificateList::from_der(crl_der).ok()?;
    let ext = crl
        .tbs_cert_list
        .crl_extensions?
        .into_iter()
        .find(|e| e.extn_id == oid::CE_CRL_NUMBER)?;
    let n = CrlNumber::from_der(ext.extn_value.as_bytes()).ok()?;
    let bytes = n.0.as_bytes();
    if bytes.len() > 8 {
        return None;
    }
    Some(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}
