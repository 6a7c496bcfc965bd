//! Why policy refused a request, in policy's own words. The signer maps each kind to a
//! stable wire code at its dispatch edge; nothing here knows the protocol.

use std::fmt;

/// What part of the request policy refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenialKind {
    /// The CSR signature does not verify with the CSR's own key.
    ProofOfPossession,
    /// Key type, size, exponent or curve.
    Key,
    /// The CSR's signature algorithm (SHA-1, unsupported, not allowed).
    SignatureAlgorithm,
    /// The subject's attributes, encoding, length or CN pattern.
    Subject,
    /// The subjectAltNames.
    SubjectAltName,
    /// No profile of that name.
    UnknownProfile,
    /// The profile does not serve this caller or operation.
    NotAllowed,
}

/// A refusal with a stable reason identifier (`key.rsa_size`, `csr.pop`) and a sentence
/// that is safe to show the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub kind: DenialKind,
    pub reason: &'static str,
    pub message: String,
}

impl Denial {
    pub fn new(kind: DenialKind, reason: &'static str, message: impl Into<String>) -> Self {
        Denial {
            kind,
            reason,
            message: message.into(),
        }
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.reason)
    }
}

impl std::error::Error for Denial {}
