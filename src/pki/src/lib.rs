//! X.509 and PKCS#10 handling shared by the signer and the operator CLI: key inspection and
//! signature verification, names compared by meaning, and certificate construction.
//!
//! Signature verification uses `ring` (the RustCrypto `rsa` crate carries an unfixed advisory).
#![forbid(unsafe_code)]

pub mod cert;
pub mod crl;
pub mod csr;
pub mod keys;
pub mod name;
pub mod ocsp;
pub mod oid;
pub mod path;

use der::{Decode, Reader, SliceReader};

/// The first element of a signed SEQUENCE (`tbsCertificate`, `certificationRequestInfo`) as
/// the exact bytes that were signed. Re-encoding a decoded structure is not the same thing.
pub fn signed_part(der_bytes: &[u8]) -> Result<&[u8], der::Error> {
    let mut outer = SliceReader::new(der_bytes)?;
    let header = der::Header::decode(&mut outer)?;
    header.tag.assert_eq(der::Tag::Sequence)?;
    outer.tlv_bytes()
}

/// PEM armour for `label` around `der_bytes`.
pub fn to_pem(label: &str, der_bytes: &[u8]) -> String {
    der::pem::encode_string(label, der::pem::LineEnding::LF, der_bytes)
        .unwrap_or_else(|_| String::new())
}

/// The DER of every certificate in a PEM chain file, in file order (x509-cert splits and
/// decodes the chain; anything that is not a certificate block is an error).
pub fn pem_certificates(text: &str) -> Result<Vec<Vec<u8>>, String> {
    use der::Encode;
    x509_cert::Certificate::load_pem_chain(text.as_bytes())
        .map_err(|e| format!("bad PEM certificate chain: {e}"))?
        .iter()
        .map(|c| c.to_der().map_err(|e| format!("bad certificate: {e}")))
        .collect()
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}
