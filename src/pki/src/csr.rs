//! PKCS#10 requests: strict DER decoding, the requested extensions, and proof of possession.

use der::Decode;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::request::{CertReq, ExtensionReq};

use super::keys::{self, PublicKey, SignatureAlgorithm, SignatureAlgorithmId};
use super::oid;

/// A decoded CSR. Nothing here has been checked against policy yet.
pub struct ParsedCsr {
    pub request: CertReq,
    /// The exact signed bytes of `certificationRequestInfo`.
    pub signed_bytes: Vec<u8>,
    pub public_key: PublicKey,
    pub signature_algorithm: SignatureAlgorithmId,
    /// subjectAltName from the extensionRequest attribute, if present.
    pub requested_sans: Option<Vec<GeneralName>>,
    /// The OIDs of every extension the CSR asks for (SAN included).
    pub requested_extensions: Vec<der::asn1::ObjectIdentifier>,
}

impl ParsedCsr {
    /// The challengePassword attribute: `None` when absent, `Some(Err(()))` when present
    /// but not a single string value.
    pub fn challenge_password(&self) -> Option<Result<String, ()>> {
        let attr = self
            .request
            .info
            .attributes
            .iter()
            .find(|a| a.oid == crate::oid::CHALLENGE_PASSWORD)?;
        let mut values = attr.values.iter();
        let (Some(v), None) = (values.next(), values.next()) else {
            return Some(Err(()));
        };
        Some(crate::name::attribute_string(v).ok_or(()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrError(pub String);

impl std::fmt::Display for CsrError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Decodes a DER CSR. `der` is strict: BER indefinite lengths, non-minimal lengths, trailing
/// bytes and truncation are errors here (which OpenSSL's own parser would accept).
pub fn parse_csr(der_bytes: &[u8]) -> Result<ParsedCsr, CsrError> {
    let request =
        CertReq::from_der(der_bytes).map_err(|e| CsrError(format!("not a DER PKCS#10: {e}")))?;
    let signed_bytes = super::signed_part(der_bytes)
        .map_err(|e| CsrError(format!("not a DER PKCS#10: {e}")))?
        .to_vec();
    let public_key = keys::inspect_spki(&request.info.public_key).map_err(|e| CsrError(e.0))?;
    let signature_algorithm = keys::classify_signature_algorithm(&request.algorithm);

    let mut requested_sans = None;
    let mut requested_extensions = Vec::new();
    let mut seen_extension_request = false;
    for attr in request.info.attributes.iter() {
        if attr.oid != oid::EXTENSION_REQUEST {
            // challengePassword and other attributes carry nothing this CA acts on.
            continue;
        }
        if seen_extension_request || attr.values.len() != 1 {
            return Err(CsrError("more than one extensionRequest".into()));
        }
        seen_extension_request = true;
        let value = attr
            .values
            .get(0)
            .ok_or_else(|| CsrError("empty extensionRequest".into()))?;
        let exts: ExtensionReq = value
            .decode_as()
            .map_err(|e| CsrError(format!("bad extensionRequest: {e}")))?;
        for ext in exts.0 {
            if requested_extensions.contains(&ext.extn_id) {
                return Err(CsrError(format!(
                    "extension {} requested twice",
                    ext.extn_id
                )));
            }
            requested_extensions.push(ext.extn_id);
            if ext.extn_id == oid::CE_SUBJECT_ALT_NAME {
                let san = SubjectAltName::from_der(ext.extn_value.as_bytes())
                    .map_err(|e| CsrError(format!("bad subjectAltName: {e}")))?;
                requested_sans = Some(san.0);
            }
        }
    }
    Ok(ParsedCsr {
        request,
        signed_bytes,
        public_key,
        signature_algorithm,
        requested_sans,
        requested_extensions,
    })
}

impl ParsedCsr {
    /// Verifies the CSR's self-signature: the requester holds the private key (RFC 2986).
    pub fn verify_proof_of_possession(&self, alg: SignatureAlgorithm) -> Result<(), CsrError> {
        let sig = self
            .request
            .signature
            .as_bytes()
            .ok_or_else(|| CsrError("signature bit string has unused bits".into()))?;
        keys::verify_signature(&self.public_key, alg, &self.signed_bytes, sig)
            .map_err(|e| CsrError(e.into()))
    }

    /// The SubjectPublicKeyInfo a certificate for this CSR gets, rebuilt from the parsed
    /// key (see [`PublicKey::canonical_spki`]).
    pub fn certified_spki(&self) -> Result<spki::SubjectPublicKeyInfoOwned, CsrError> {
        self.public_key.canonical_spki().map_err(|e| CsrError(e.0))
    }
}
