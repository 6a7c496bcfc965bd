//! What can go wrong with a request to the signer, in the signer's own terms. Each variant
//! is a decision (a refusal) or `Unavailable` (the signer could not decide or record; the
//! cause was logged where it arose, with the request id). [`crate::dispatch`] maps every
//! variant to a stable wire code and reason in one place.

use std::fmt;

use hsm_est_policy::Denial;

/// Why a device rule refused an issuance (IQE guide; RFC 7030 §4.2.2 for re-enrolment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRefusal {
    /// A bootstrap for a device that is already on record.
    AlreadyKnown,
    /// An enrolment for a device that is already enrolled.
    AlreadyEnrolled,
    /// The device is revoked.
    DeviceRevoked,
    /// An enrolment with a client certificate that is not the device's own.
    CertificateMismatch,
    /// A re-enrolment without a client certificate.
    NoCertificate,
    /// A re-enrolment with a certificate that is not the device's current one.
    NotCurrent,
    /// A re-enrolment for a device that is not on record.
    UnknownDevice,
    /// A renewal whose subject or SANs differ from the current certificate's.
    NameMismatch,
    /// The presented client certificate does not decode.
    CertificateMalformed,
    /// The presented client certificate was not signed by this CA.
    CertificateForeign,
    /// The presented client certificate is not in the ledger (or differs from it).
    CertificateUnknown,
    /// The presented client certificate is revoked.
    CertificateRevoked,
    /// The presented client certificate is outside its validity period.
    CertificateExpired,
    /// A renewal with a new key under a profile with `rekey: same_key_only`.
    RekeyForbidden,
}

/// Why a CSR's channel binding (RFC 7030 §3.5, RFC 9266) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingRefusal {
    /// The connection is TLS 1.2: no tls-exporter, and tls-unique is not offered.
    NotTls13,
    /// The CSR has no (readable) challengePassword.
    Missing,
    /// The value is not this connection's.
    Mismatch,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignerError {
    /// The request is not strict DER PKCS#10.
    CsrMalformed,
    /// Policy refused the request.
    Denied(Denial),
    /// A registration authority asked under a profile that does not accept one.
    RegistrationAuthorityRefused {
        profile: String,
    },
    /// A claimed registration authority was not accepted, or acted outside its scope.
    RegistrationAuthority(crate::ra::RaRefusal),
    /// The profile requires channel binding and the CSR's does not hold.
    ChannelBinding(BindingRefusal),
    /// Another request for the same device is being decided.
    DeviceBusy,
    /// A device rule refused.
    Device(DeviceRefusal),
    /// The profile's quota for this kind of issuance is used up for the hour.
    QuotaExceeded(crate::quota::QuotaKind),
    DeviceNotFound,
    /// An operator tried to delete a revoked device: only `device allow` lifts the block.
    DeviceRevoked,
    /// `device allow` for a device that is not revoked.
    DeviceNotRevoked,
    CertificateNotFound,
    /// No CRL has been issued since the signer started.
    NoCrl,
    /// A request named a CA this signer does not hold (the name, cut short).
    UnknownCa(String),
    AlreadyRevoked,
    /// The signer cannot decide or record now (token, ledger, audit, clock, randomness).
    Unavailable,
}

impl From<Denial> for SignerError {
    fn from(d: Denial) -> Self {
        SignerError::Denied(d)
    }
}

impl From<DeviceRefusal> for SignerError {
    fn from(r: DeviceRefusal) -> Self {
        SignerError::Device(r)
    }
}

impl fmt::Display for SignerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignerError::CsrMalformed => write!(f, "malformed csr"),
            SignerError::Denied(d) => write!(f, "denied by policy: {d}"),
            SignerError::RegistrationAuthorityRefused { profile } => {
                write!(f, "profile {profile} refuses registration authorities")
            }
            SignerError::RegistrationAuthority(r) => write!(f, "registration authority: {r:?}"),
            SignerError::ChannelBinding(r) => write!(f, "channel binding: {r:?}"),
            SignerError::DeviceBusy => write!(f, "device busy"),
            SignerError::Device(r) => write!(f, "device rule: {r:?}"),
            SignerError::QuotaExceeded(k) => write!(f, "quota exceeded: {k:?}"),
            SignerError::DeviceNotFound => write!(f, "no such device"),
            SignerError::DeviceRevoked => write!(f, "device revoked"),
            SignerError::DeviceNotRevoked => write!(f, "device not revoked"),
            SignerError::CertificateNotFound => write!(f, "no such certificate"),
            SignerError::NoCrl => write!(f, "no CRL issued yet"),
            SignerError::UnknownCa(name) => write!(f, "no CA named {name:?}"),
            SignerError::AlreadyRevoked => write!(f, "already revoked"),
            SignerError::Unavailable => write!(f, "unavailable"),
        }
    }
}

impl std::error::Error for SignerError {}

/// Logs why the signer cannot go on with the current request (the request span adds its id)
/// and returns `Unavailable`: the cause stays in the log, the client gets the stable "try
/// again later".
pub fn unavailable(what: &str, cause: impl fmt::Display) -> SignerError {
    tracing::error!("{what}: {cause}");
    SignerError::Unavailable
}
