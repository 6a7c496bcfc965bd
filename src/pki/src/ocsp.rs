//! OCSP (RFC 6960): the request as a client sends it, reduced to what the signer needs
//! (each CertID and the nonce), and the signed response the signer builds from its ledger.
//! The frontend parses; the signer decides and signs; clients and tests verify.
//!
//! A CertID names the issuer by two hashes: of the DER of its subject name, and of the
//! value of its subjectPublicKey BIT STRING (§4.1.1). The responder is named by key
//! (`byKey`, the SHA-1 of its subjectPublicKey, §4.2.2.3), as RFC 5019 recommends.

use std::time::SystemTime;

use der::asn1::{BitString, GeneralizedTime, Null, ObjectIdentifier, OctetString};
use der::{Decode, Encode, Tagged};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::ext::pkix::KeyUsages;
use x509_cert::ext::Extension;
use x509_cert::serial_number::SerialNumber;
use x509_cert::Certificate;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspGeneralizedTime, OcspRequest, OcspResponse,
    ResponderId, ResponseBytes, ResponseData, RevokedInfo, SingleResponse, Version,
};

use hsm_est_proto::{OcspCertId, OcspHash};

use super::cert::{extension, BuildError, CaSigner};
use super::keys::{self, SignatureAlgorithmId};
use super::oid;

pub use hsm_est_proto::messages::{MAX_OCSP_CERTS, MAX_OCSP_NONCE_LEN};
pub use x509_ocsp::OcspResponseStatus;

/// The longest nonce accepted (RFC 8954 §2.1: responders reject longer ones).
pub const MAX_NONCE_OCTETS: usize = 32;

/// Why a request cannot be answered: each is a `malformedRequest` response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// What the signer needs from an OCSP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRequest {
    pub certs: Vec<OcspCertId>,
    /// The nonce extension's value (extnValue) as the client sent it.
    pub nonce: Option<Vec<u8>>,
}

fn hash_of(alg: &ObjectIdentifier) -> Option<OcspHash> {
    Some(match *alg {
        oid::SHA1 => OcspHash::Sha1,
        oid::SHA256 => OcspHash::Sha256,
        oid::SHA384 => OcspHash::Sha384,
        oid::SHA512 => OcspHash::Sha512,
        _ => return None,
    })
}

fn hash_oid(hash: OcspHash) -> ObjectIdentifier {
    match hash {
        OcspHash::Sha1 => oid::SHA1,
        OcspHash::Sha256 => oid::SHA256,
        OcspHash::Sha384 => oid::SHA384,
        OcspHash::Sha512 => oid::SHA512,
    }
}

/// The digest of `data` with `hash`.
pub fn digest(hash: OcspHash, data: &[u8]) -> Vec<u8> {
    let alg = match hash {
        OcspHash::Sha1 => &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        OcspHash::Sha256 => &ring::digest::SHA256,
        OcspHash::Sha384 => &ring::digest::SHA384,
        OcspHash::Sha512 => &ring::digest::SHA512,
    };
    ring::digest::digest(alg, data).as_ref().to_vec()
}

/// (issuerNameHash, issuerKeyHash) of `issuer` with `hash`.
pub fn issuer_hashes(hash: OcspHash, issuer: &Certificate) -> Result<(Vec<u8>, Vec<u8>), String> {
    let name = issuer
        .tbs_certificate
        .subject
        .to_der()
        .map_err(|e| e.to_string())?;
    let key = issuer
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    Ok((digest(hash, &name), digest(hash, key)))
}

/// The responder's `byKey` identifier: SHA-1 of its subjectPublicKey.
pub fn responder_key_hash(spki: &SubjectPublicKeyInfoOwned) -> Vec<u8> {
    digest(OcspHash::Sha1, spki.subject_public_key.raw_bytes())
}

fn cert_id(c: &CertId) -> Result<OcspCertId, Malformed> {
    let hash = hash_of(&c.hash_algorithm.oid).ok_or(Malformed("unsupported CertID hash"))?;
    let hash_params_null = match &c.hash_algorithm.parameters {
        None => false,
        Some(p) if p.tag() == der::Tag::Null && p.value().is_empty() => true,
        Some(_) => return Err(Malformed("CertID hash parameters")),
    };
    let (name, key) = (c.issuer_name_hash.as_bytes(), c.issuer_key_hash.as_bytes());
    if name.len() != hash.digest_len() || key.len() != hash.digest_len() {
        return Err(Malformed("CertID hash length"));
    }
    let serial = c.serial_number.as_bytes();
    if serial.is_empty() || serial.len() > hsm_est_proto::messages::MAX_SERIAL_LEN {
        return Err(Malformed("CertID serial"));
    }
    Ok(OcspCertId {
        hash,
        hash_params_null,
        issuer_name_hash: name.to_vec(),
        issuer_key_hash: key.to_vec(),
        serial: serial.to_vec(),
    })
}

/// A nonce extension's value: an OCTET STRING of 1 to 32 octets (RFC 8954), or, from
/// older clients, 1 to 32 bare octets. Either is echoed exactly.
fn nonce(ext: &Extension) -> Result<Vec<u8>, Malformed> {
    let raw = ext.extn_value.as_bytes();
    let len = match OctetString::from_der(raw) {
        Ok(inner) => inner.as_bytes().len(),
        Err(_) => raw.len(),
    };
    if len == 0 || len > MAX_NONCE_OCTETS {
        return Err(Malformed("nonce length"));
    }
    Ok(raw.to_vec())
}

/// Parses a DER OCSPRequest: 1 to [`MAX_OCSP_CERTS`] CertIDs with a supported hash, at
/// most one nonce, and no critical extension this responder does not know. A request
/// signature is not required and not checked (§4.1.2): the answer is public.
pub fn parse_request(der_bytes: &[u8]) -> Result<ParsedRequest, Malformed> {
    let req = OcspRequest::from_der(der_bytes).map_err(|_| Malformed("not a DER OCSPRequest"))?;
    let tbs = &req.tbs_request;
    if tbs.request_list.is_empty() {
        return Err(Malformed("no certificate"));
    }
    if tbs.request_list.len() > MAX_OCSP_CERTS {
        return Err(Malformed("too many certificates"));
    }
    let mut certs = Vec::with_capacity(tbs.request_list.len());
    for r in &tbs.request_list {
        if r.single_request_extensions
            .iter()
            .flatten()
            .any(|e| e.critical)
        {
            return Err(Malformed("critical single request extension"));
        }
        certs.push(cert_id(&r.req_cert)?);
    }
    let mut found = None;
    for e in tbs.request_extensions.iter().flatten() {
        if e.extn_id == oid::PKIX_OCSP_NONCE {
            if found.is_some() {
                return Err(Malformed("two nonces"));
            }
            found = Some(nonce(e)?);
        } else if e.critical {
            return Err(Malformed("critical request extension"));
        }
    }
    Ok(ParsedRequest {
        certs,
        nonce: found,
    })
}

/// A DER OCSPRequest for `certs`, with a nonce extension when given (the raw extnValue).
pub fn build_request(certs: &[OcspCertId], nonce: Option<&[u8]>) -> Result<Vec<u8>, BuildError> {
    let mut list = Vec::with_capacity(certs.len());
    for c in certs {
        list.push(x509_ocsp::Request {
            req_cert: to_cert_id(c)?,
            single_request_extensions: None,
        });
    }
    let request_extensions = match nonce {
        Some(n) => Some(vec![Extension {
            extn_id: oid::PKIX_OCSP_NONCE,
            critical: false,
            extn_value: OctetString::new(n.to_vec())?,
        }]),
        None => None,
    };
    Ok(OcspRequest {
        tbs_request: x509_ocsp::TbsRequest {
            version: Version::V1,
            requestor_name: None,
            request_list: list,
            request_extensions,
        },
        optional_signature: None,
    }
    .to_der()?)
}

/// A fresh nonce extension value as OpenSSL's client sends it: an OCTET STRING of 16
/// random octets.
pub fn random_nonce() -> Result<Vec<u8>, String> {
    let mut n = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut n)
        .map_err(|_| "no randomness".to_string())?;
    OctetString::new(n.to_vec())
        .and_then(|o| o.to_der())
        .map_err(|e| e.to_string())
}

/// The CertID of `serial` under `issuer`, as a client computes it.
pub fn cert_id_for(
    hash: OcspHash,
    issuer: &Certificate,
    serial: &[u8],
) -> Result<OcspCertId, String> {
    let (issuer_name_hash, issuer_key_hash) = issuer_hashes(hash, issuer)?;
    Ok(OcspCertId {
        hash,
        hash_params_null: hash == OcspHash::Sha1,
        issuer_name_hash,
        issuer_key_hash,
        serial: serial.to_vec(),
    })
}

fn to_cert_id(c: &OcspCertId) -> Result<CertId, der::Error> {
    Ok(CertId {
        hash_algorithm: AlgorithmIdentifierOwned {
            oid: hash_oid(c.hash),
            parameters: c.hash_params_null.then(|| Null.into()),
        },
        issuer_name_hash: OctetString::new(c.issuer_name_hash.clone())?,
        issuer_key_hash: OctetString::new(c.issuer_key_hash.clone())?,
        serial_number: serial_number(&c.serial)?,
    })
}

/// The serialNumber INTEGER with exactly these content octets, as they were parsed:
/// `SerialNumber::new` would reinterpret them (00 BA, a positive 186, came back as BA, a
/// negative number), and a CertID must be echoed exactly for the client to match it.
fn serial_number(content: &[u8]) -> Result<SerialNumber, der::Error> {
    let mut tlv = der::Header::new(der::Tag::Integer, content.len())?.to_der()?;
    tlv.extend_from_slice(content);
    SerialNumber::from_der(&tlv)
}

/// A certificate's status as the ledger knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Good,
    /// Revoked at this time; the RFC 5280 reason (0, unspecified, is left out as in CRLs).
    Revoked {
        at: SystemTime,
        reason: u8,
    },
    Unknown,
}

/// One answer in a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Single {
    pub cert_id: OcspCertId,
    pub status: Status,
    pub this_update: SystemTime,
    pub next_update: SystemTime,
}

/// What a signed response says and who signs it.
pub struct ResponseSpec<'a> {
    /// SHA-1 of the signing key's subjectPublicKey.
    pub responder_key_hash: &'a [u8],
    pub produced_at: SystemTime,
    pub singles: &'a [Single],
    pub nonce: Option<&'a [u8]>,
    /// Certificates that help the client verify the signature: the delegated responder's.
    pub certs: &'a [Certificate],
}

fn time(t: SystemTime) -> Result<OcspGeneralizedTime, der::Error> {
    Ok(OcspGeneralizedTime(GeneralizedTime::from_system_time(t)?))
}

/// Builds and signs a successful OCSPResponse (a BasicOCSPResponse).
pub fn sign_response(
    spec: &ResponseSpec<'_>,
    signer: &dyn CaSigner,
) -> Result<Vec<u8>, BuildError> {
    let mut responses = Vec::with_capacity(spec.singles.len());
    for s in spec.singles {
        let cert_status = match s.status {
            Status::Good => CertStatus::good(),
            Status::Unknown => CertStatus::unknown(),
            Status::Revoked { at, reason } => CertStatus::Revoked(RevokedInfo {
                revocation_time: time(at)?,
                revocation_reason: super::crl::reason(reason),
            }),
        };
        responses.push(SingleResponse {
            cert_id: to_cert_id(&s.cert_id)?,
            cert_status,
            this_update: time(s.this_update)?,
            next_update: Some(time(s.next_update)?),
            single_extensions: None,
        });
    }
    let response_extensions = match spec.nonce {
        Some(n) => Some(vec![Extension {
            extn_id: oid::PKIX_OCSP_NONCE,
            critical: false,
            extn_value: OctetString::new(n.to_vec())?,
        }]),
        None => None,
    };
    let tbs = ResponseData {
        version: Version::V1,
        responder_id: ResponderId::ByKey(OctetString::new(spec.responder_key_hash.to_vec())?),
        produced_at: time(spec.produced_at)?,
        responses,
        response_extensions,
    };
    let tbs_der = tbs.to_der()?;
    let signature = signer.sign(&tbs_der).map_err(BuildError)?;
    let basic = BasicOcspResponse {
        tbs_response_data: tbs,
        signature_algorithm: signer.algorithm().algorithm_identifier(),
        signature: BitString::from_bytes(&signature)?,
        certs: (!spec.certs.is_empty()).then(|| spec.certs.to_vec()),
    };
    Ok(OcspResponse {
        response_status: OcspResponseStatus::Successful,
        response_bytes: Some(ResponseBytes {
            response_type: oid::PKIX_OCSP_BASIC,
            response: OctetString::new(basic.to_der()?)?,
        }),
    }
    .to_der()?)
}

/// An unsigned OCSPResponse that only carries an error status.
pub fn error_response(status: OcspResponseStatus) -> Vec<u8> {
    vec![0x30, 0x03, 0x0a, 0x01, status as u8]
}

/// The extensions of a delegated responder's certificate (RFC 6960 §4.2.2.2): not a CA,
/// digitalSignature only, id-kp-OCSPSigning, and id-pkix-ocsp-nocheck so that clients do
/// not ask about the responder itself.
pub fn responder_extensions(
    subject_key_id: Vec<u8>,
    authority_key_id: Vec<u8>,
) -> Result<Vec<Extension>, der::Error> {
    let mut exts = super::cert::leaf_extensions(&super::cert::LeafExtensions {
        key_usage: x509_cert::ext::pkix::KeyUsage(KeyUsages::DigitalSignature.into()),
        extended_key_usage: vec![oid::KP_OCSP_SIGNING],
        subject_alt_names: vec![],
        san_critical: false,
        subject_key_id,
        authority_key_id,
        crl_distribution_point: None,
        aia_ca_issuers: None,
        ocsp_url: None,
    })?;
    exts.push(extension(oid::PKIX_OCSP_NOCHECK, false, &Null)?);
    Ok(exts)
}

/// A verified response as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedResponse {
    pub singles: Vec<Single>,
    pub nonce: Option<Vec<u8>>,
    pub produced_at: SystemTime,
    /// Whether a delegated responder (rather than the CA key) signed it.
    pub delegated: bool,
}

/// Parses an OCSPResponse and checks it as a relying party would: successful, signed by
/// the CA's key or by a responder certificate the CA issued with id-kp-OCSPSigning, and
/// named by that key. Err carries the response status for unsuccessful ones.
pub fn verify_response(der_bytes: &[u8], ca: &Certificate) -> Result<VerifiedResponse, String> {
    let resp = OcspResponse::from_der(der_bytes).map_err(|e| format!("bad OCSPResponse: {e}"))?;
    if resp.response_status != OcspResponseStatus::Successful {
        return Err(format!("response status {:?}", resp.response_status));
    }
    let bytes = resp.response_bytes.ok_or("no responseBytes")?;
    if bytes.response_type != oid::PKIX_OCSP_BASIC {
        return Err("not a basic response".into());
    }
    let basic = BasicOcspResponse::from_der(bytes.response.as_bytes())
        .map_err(|e| format!("bad BasicOCSPResponse: {e}"))?;
    let ca_spki = &ca.tbs_certificate.subject_public_key_info;
    let ResponderId::ByKey(key_hash) = &basic.tbs_response_data.responder_id else {
        return Err("responder not named by key".into());
    };
    let (signer_spki, delegated) = if key_hash.as_bytes() == responder_key_hash(ca_spki) {
        (ca_spki.clone(), false)
    } else {
        let responder = basic
            .certs
            .iter()
            .flatten()
            .find(|c| {
                responder_key_hash(&c.tbs_certificate.subject_public_key_info)
                    == key_hash.as_bytes()
            })
            .ok_or("no certificate for the responder key")?;
        let der = responder.to_der().map_err(|e| e.to_string())?;
        super::cert::verify_certificate_signature(&der, ca_spki)
            .map_err(|e| format!("responder certificate: {e}"))?;
        let eku = responder
            .tbs_certificate
            .get::<x509_cert::ext::pkix::ExtendedKeyUsage>()
            .ok()
            .flatten()
            .map(|(_, e)| e.0)
            .unwrap_or_default();
        if !eku.contains(&oid::KP_OCSP_SIGNING) {
            return Err("responder certificate lacks id-kp-OCSPSigning".into());
        }
        (
            responder.tbs_certificate.subject_public_key_info.clone(),
            true,
        )
    };
    let alg = match keys::classify_signature_algorithm(&basic.signature_algorithm) {
        SignatureAlgorithmId::Known(a) => a,
        other => return Err(format!("unsupported signature {other:?}")),
    };
    let key = keys::inspect_spki(&signer_spki).map_err(|e| e.0)?;
    let tbs = basic
        .tbs_response_data
        .to_der()
        .map_err(|e| e.to_string())?;
    let sig = basic
        .signature
        .as_bytes()
        .ok_or("signature has unused bits")?;
    keys::verify_signature(&key, alg, &tbs, sig).map_err(|e| format!("signature: {e}"))?;

    let data = basic.tbs_response_data;
    let mut singles = Vec::with_capacity(data.responses.len());
    for s in &data.responses {
        let status = match s.cert_status {
            CertStatus::Good(_) => Status::Good,
            CertStatus::Unknown(_) => Status::Unknown,
            CertStatus::Revoked(info) => Status::Revoked {
                at: info.revocation_time.0.to_system_time(),
                reason: info.revocation_reason.map_or(0, |r| r as u8),
            },
        };
        singles.push(Single {
            cert_id: cert_id(&s.cert_id).map_err(|e| e.to_string())?,
            status,
            this_update: s.this_update.0.to_system_time(),
            next_update: s
                .next_update
                .map(|t| t.0.to_system_time())
                .ok_or("no nextUpdate")?,
        });
    }
    let nonce = data
        .response_extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == oid::PKIX_OCSP_NONCE)
        .map(|e| e.extn_value.as_bytes().to_vec());
    Ok(VerifiedResponse {
        singles,
        nonce,
        produced_at: data.produced_at.0.to_system_time(),
        delegated,
    })
}

/// The response status of an OCSPResponse (0 successful, 1 malformedRequest, …).
pub fn response_status(der_bytes: &[u8]) -> Option<u8> {
    OcspResponse::from_der(der_bytes)
        .ok()
        .map(|r| r.response_status as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(hash: OcspHash) -> OcspCertId {
        OcspCertId {
            hash,
            hash_params_null: hash == OcspHash::Sha1,
            issuer_name_hash: vec![7; hash.digest_len()],
            issuer_key_hash: vec![8; hash.digest_len()],
            serial: vec![0x41, 2, 3],
        }
    }

    #[test]
    fn a_request_survives_the_round_trip() {
        let certs = vec![id(OcspHash::Sha1), id(OcspHash::Sha256)];
        let nonce = OctetString::new(vec![9u8; 16]).unwrap().to_der().unwrap();
        let der = build_request(&certs, Some(&nonce)).unwrap();
        let parsed = parse_request(&der).unwrap();
        assert_eq!(parsed.certs, certs);
        assert_eq!(parsed.nonce.as_deref(), Some(nonce.as_slice()));
    }

    /// Found by the ocsp_request fuzz target: a serial whose first content octet is 00
    /// (a positive number with its top bit set) must come back as it went.
    #[test]
    fn a_serial_with_a_sign_octet_is_echoed_exactly() {
        for serial in [
            vec![0x00, 0xba],
            vec![0x00, 0x80, 0x01],
            vec![0x41],
            vec![0x7f; 20],
        ] {
            let mut c = id(OcspHash::Sha256);
            c.serial = serial.clone();
            let der = build_request(std::slice::from_ref(&c), None).unwrap();
            let parsed = parse_request(&der).unwrap();
            assert_eq!(parsed.certs[0].serial, serial);
            let again = build_request(&parsed.certs, None).unwrap();
            assert_eq!(again, der);
        }
        // The crash input itself.
        let crash = include_bytes!("../../../fuzz/regressions/ocsp_request-serial-sign-octet");
        let parsed = parse_request(crash).unwrap();
        let again = build_request(&parsed.certs, parsed.nonce.as_deref()).unwrap();
        assert_eq!(parse_request(&again).unwrap(), parsed);
    }

    #[test]
    fn nonces_are_bounded() {
        let certs = vec![id(OcspHash::Sha1)];
        let long = OctetString::new(vec![1u8; 33]).unwrap().to_der().unwrap();
        let der = build_request(&certs, Some(&long)).unwrap();
        assert_eq!(parse_request(&der), Err(Malformed("nonce length")));
        let empty = OctetString::new(vec![]).unwrap().to_der().unwrap();
        let der = build_request(&certs, Some(&empty)).unwrap();
        assert_eq!(parse_request(&der), Err(Malformed("nonce length")));
        // Bare octets from an older client are accepted and echoed as they came.
        let der = build_request(&certs, Some(&[5u8; 8])).unwrap();
        assert_eq!(parse_request(&der).unwrap().nonce, Some(vec![5u8; 8]));
    }

    #[test]
    fn malformed_requests_are_refused() {
        assert_eq!(
            parse_request(b"\x30\x00"),
            Err(Malformed("not a DER OCSPRequest"))
        );
        let many = vec![id(OcspHash::Sha1); MAX_OCSP_CERTS + 1];
        let der = build_request(&many, None).unwrap();
        assert_eq!(parse_request(&der), Err(Malformed("too many certificates")));
        // An MD5 CertID.
        let mut req =
            OcspRequest::from_der(&build_request(&[id(OcspHash::Sha1)], None).unwrap()).unwrap();
        req.tbs_request.request_list[0].req_cert.hash_algorithm.oid =
            ObjectIdentifier::new_unwrap("1.2.840.113549.2.5");
        assert_eq!(
            parse_request(&req.to_der().unwrap()),
            Err(Malformed("unsupported CertID hash"))
        );
        // A critical extension nobody knows.
        let mut req =
            OcspRequest::from_der(&build_request(&[id(OcspHash::Sha1)], None).unwrap()).unwrap();
        req.tbs_request.request_extensions = Some(vec![Extension {
            extn_id: ObjectIdentifier::new_unwrap("1.3.6.1.4.1.99999.1"),
            critical: true,
            extn_value: OctetString::new(vec![5, 0]).unwrap(),
        }]);
        assert_eq!(
            parse_request(&req.to_der().unwrap()),
            Err(Malformed("critical request extension"))
        );
    }

    #[test]
    fn error_responses_decode() {
        for s in [
            OcspResponseStatus::MalformedRequest,
            OcspResponseStatus::InternalError,
            OcspResponseStatus::TryLater,
            OcspResponseStatus::Unauthorized,
        ] {
            let der = error_response(s);
            assert_eq!(OcspResponse::from_der(&der).unwrap().response_status, s);
        }
    }
}
