//! The protocol's vocabulary: operations, device states, stable error codes and the error
//! answer. Numbers here are part of the protocol (`docs/IPC.md`) and never change meaning.

use std::fmt;

use super::{FrameError, MAX_MESSAGE_LEN, MAX_REASON_LEN};

/// What an issuance is for (IQE guide and RFC 7030).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Bootstrap,
    Enroll,
    Reenroll,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Bootstrap => "bootstrap",
            Operation::Enroll => "enroll",
            Operation::Reenroll => "reenroll",
        }
    }

    pub(crate) fn to_wire(self) -> u8 {
        match self {
            Operation::Bootstrap => 1,
            Operation::Enroll => 2,
            Operation::Reenroll => 3,
        }
    }

    pub(crate) fn from_wire(v: u8) -> Result<Self, FrameError> {
        match v {
            1 => Ok(Operation::Bootstrap),
            2 => Ok(Operation::Enroll),
            3 => Ok(Operation::Reenroll),
            _ => Err(FrameError::BadValue("operation")),
        }
    }
}

impl std::str::FromStr for Operation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bootstrap" => Ok(Operation::Bootstrap),
            "enroll" => Ok(Operation::Enroll),
            "reenroll" => Ok(Operation::Reenroll),
            other => Err(format!(
                "unknown operation {other:?} (expected bootstrap, enroll or reenroll)"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceStatus {
    BootstrapOnly,
    Enrolled,
    /// Its certificates were revoked: it gets nothing until an operator allows it again.
    Revoked,
    /// Deleted by an operator: its history stays on record and it may bootstrap again.
    Deleted,
}

impl DeviceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::BootstrapOnly => "bootstrap_only",
            DeviceStatus::Enrolled => "enrolled",
            DeviceStatus::Revoked => "revoked",
            DeviceStatus::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "bootstrap_only" => Some(DeviceStatus::BootstrapOnly),
            "enrolled" => Some(DeviceStatus::Enrolled),
            "revoked" => Some(DeviceStatus::Revoked),
            "deleted" => Some(DeviceStatus::Deleted),
            _ => None,
        }
    }

    pub fn to_wire(self) -> u8 {
        match self {
            DeviceStatus::BootstrapOnly => 1,
            DeviceStatus::Enrolled => 2,
            DeviceStatus::Revoked => 3,
            DeviceStatus::Deleted => 4,
        }
    }

    pub(crate) fn from_wire(v: u8) -> Result<Self, FrameError> {
        match v {
            1 => Ok(DeviceStatus::BootstrapOnly),
            2 => Ok(DeviceStatus::Enrolled),
            3 => Ok(DeviceStatus::Revoked),
            4 => Ok(DeviceStatus::Deleted),
            _ => Err(FrameError::BadValue("device status")),
        }
    }
}

/// Stable error categories. The numbers are part of the protocol (`docs/IPC.md`) and never
/// change meaning; the frontend maps each to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request was well framed but a field's content is invalid. HTTP 400.
    BadRequest,
    /// The CSR is not strict DER PKCS#10. HTTP 400.
    CsrMalformed,
    /// The CSR's signature does not verify (no proof of possession). HTTP 400.
    ProofOfPossession,
    /// Key type, size, exponent or curve refused by the profile. HTTP 400.
    KeyRejected,
    /// CSR signature algorithm refused (SHA-1, unsupported). HTTP 400.
    SignatureAlgorithmRejected,
    /// Subject refused by the profile's rules. HTTP 400.
    SubjectRejected,
    /// subjectAltName refused by the profile's rules. HTTP 400.
    SanRejected,
    /// Unknown profile. HTTP 404.
    UnknownProfile,
    /// The profile does not allow this operation or this caller. HTTP 403.
    NotAllowed,
    /// The device already exists or is enrolled (IQE guide). HTTP 409.
    DeviceDuplicate,
    /// No such device. HTTP 404.
    DeviceNotFound,
    /// The device or the presented certificate is revoked. HTTP 403.
    Revoked,
    /// Re-enrolment without a usable current certificate, or with a changed subject/SAN. HTTP 403.
    ReenrollRefused,
    /// No such certificate. HTTP 404.
    CertificateNotFound,
    /// The profile's hourly quota for this kind of issuance is used up. HTTP 429.
    QuotaExceeded,
    /// The signer cannot issue now (token, ledger or audit failure). HTTP 503.
    Unavailable,
}

impl ErrorCode {
    pub fn to_wire(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 100,
            ErrorCode::CsrMalformed => 101,
            ErrorCode::ProofOfPossession => 102,
            ErrorCode::KeyRejected => 103,
            ErrorCode::SignatureAlgorithmRejected => 104,
            ErrorCode::SubjectRejected => 105,
            ErrorCode::SanRejected => 106,
            ErrorCode::UnknownProfile => 107,
            ErrorCode::NotAllowed => 108,
            ErrorCode::DeviceDuplicate => 200,
            ErrorCode::DeviceNotFound => 201,
            ErrorCode::Revoked => 202,
            ErrorCode::ReenrollRefused => 203,
            ErrorCode::CertificateNotFound => 204,
            ErrorCode::QuotaExceeded => 205,
            ErrorCode::Unavailable => 300,
        }
    }

    pub fn from_wire(v: u16) -> Result<Self, FrameError> {
        Ok(match v {
            100 => ErrorCode::BadRequest,
            101 => ErrorCode::CsrMalformed,
            102 => ErrorCode::ProofOfPossession,
            103 => ErrorCode::KeyRejected,
            104 => ErrorCode::SignatureAlgorithmRejected,
            105 => ErrorCode::SubjectRejected,
            106 => ErrorCode::SanRejected,
            107 => ErrorCode::UnknownProfile,
            108 => ErrorCode::NotAllowed,
            200 => ErrorCode::DeviceDuplicate,
            201 => ErrorCode::DeviceNotFound,
            202 => ErrorCode::Revoked,
            203 => ErrorCode::ReenrollRefused,
            204 => ErrorCode::CertificateNotFound,
            205 => ErrorCode::QuotaExceeded,
            300 => ErrorCode::Unavailable,
            _ => return Err(FrameError::BadValue("error code")),
        })
    }
}

/// An error answer: a category, a stable fine-grained reason (`key.rsa_size`, `csr.pop`, …)
/// and a short sentence safe to show a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    pub code: ErrorCode,
    pub reason: String,
    pub message: String,
}

/// The reason a ping gets while the signer's token cannot sign (readyz turns false).
pub const REASON_TOKEN_UNAVAILABLE: &str = "signer.token_unavailable";
/// The reason a ping gets while the signer cannot reach its ledger (a shared database
/// gone): readyz turns false, so a load balancer sends requests to another node.
pub const REASON_LEDGER_UNAVAILABLE: &str = "signer.ledger_unavailable";

impl WireError {
    pub fn new(code: ErrorCode, reason: &str, message: impl Into<String>) -> Self {
        let mut message = message.into();
        truncate_utf8(&mut message, MAX_MESSAGE_LEN);
        let mut reason = reason.to_string();
        truncate_utf8(&mut reason, MAX_REASON_LEN);
        WireError {
            code,
            reason,
            message,
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.reason)
    }
}

impl std::error::Error for WireError {}

fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueRequest {
    pub operation: Operation,
    /// The policy profile the frontend's label maps to.
    pub profile: String,
    /// Who authenticated: `basic:<user>`, `cert:<sha256 of the client certificate>`, …
    pub requester: String,
    pub client_ip: String,
    pub csr_der: Vec<u8>,
    /// The TLS client certificate the request came with (empty when none).
    pub client_cert_der: Vec<u8>,
    /// The certificates the TLS client sent after its own, as sent (at most
    /// `MAX_CHAIN_LEN`): the signer builds a registration authority's path from them.
    pub client_chain: Vec<Vec<u8>>,
    /// The TLS 1.3 exporter value of the client's connection (RFC 9266 tls-exporter, 32
    /// bytes); empty over TLS 1.2, which offers no channel binding here.
    pub tls_exporter: Vec<u8>,
    /// The requester claims to be a registration authority acting on the device's behalf
    /// (RFC 7030 §3.7). The signer verifies the claim itself from `client_cert_der` and
    /// `client_chain` against its own RA configuration.
    pub registration_authority: bool,
}

/// The signer's counts for an overview page and for metrics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stats {
    /// Devices per status name (`bootstrap_only`, `enrolled`, `revoked`, `deleted`).
    pub devices_by_status: Vec<(String, u64)>,
    pub issued_last_24h: u64,
    /// Unrevoked certificates whose notAfter is within the next 30 days.
    pub expiring_within_30_days: u64,
    /// Refusals since the signer started, per stable reason.
    pub refusals_by_reason: Vec<(String, u64)>,
    pub commits: u64,
    pub decisions: u64,
    /// The CA certificate's notAfter, seconds since the epoch.
    pub ca_not_after: i64,
    /// Decisions waiting for the commit thread right now.
    pub queue_depth: u64,
    /// The largest group commit since start, in decisions.
    pub max_batch: u64,
    /// Signatures made by the token since start, and their total time in microseconds.
    pub token_signs: u64,
    pub token_sign_micros: u64,
    /// OCSP requests answered since start, those answered from the cache, and the answers
    /// cached now.
    pub ocsp_responses: u64,
    pub ocsp_cache_hits: u64,
    pub ocsp_cached: u64,
}

/// One certificate of a device's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    pub serial: Vec<u8>,
    pub common_name: String,
    /// Seconds since the epoch.
    pub not_before: i64,
    pub not_after: i64,
    pub issued_at_ms: i64,
    pub profile: String,
    pub operation: String,
    pub requester: String,
    pub revoked_at_ms: Option<i64>,
    pub revocation_reason: Option<u8>,
    pub superseded_by: Option<Vec<u8>>,
}

/// What a device listing keeps; the default keeps everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceFilter {
    pub status: Option<DeviceStatus>,
    /// Devices whose CN starts with this (empty: all).
    pub cn_prefix: String,
    /// Devices whose current certificate expires within this many days (0: no filter).
    pub expiring_within_days: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub cn: String,
    pub status: DeviceStatus,
    pub first_enrolled_ms: i64,
    pub last_enrolled_ms: i64,
    pub last_ip: String,
    pub current_serial: Vec<u8>,
    /// notAfter of the current certificate, seconds since the epoch.
    pub current_not_after: i64,
}

/// The RFC 5280 CRLReason values we accept (0–6, 8–10; 7 is unused).
pub fn valid_revocation_reason(reason: u8) -> bool {
    matches!(reason, 0..=6 | 8..=10)
}

/// RFC 5280's name of a CRLReason.
pub fn revocation_reason_name(r: u8) -> String {
    match r {
        0 => "unspecified".into(),
        1 => "keyCompromise".into(),
        2 => "cACompromise".into(),
        3 => "affiliationChanged".into(),
        4 => "superseded".into(),
        5 => "cessationOfOperation".into(),
        6 => "certificateHold".into(),
        8 => "removeFromCRL".into(),
        9 => "privilegeWithdrawn".into(),
        10 => "aACompromise".into(),
        other => format!("reason {other}"),
    }
}

/// The hash a client computed an OCSP CertID with (RFC 6960 §4.1.1). The wire number is
/// part of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OcspHash {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl OcspHash {
    pub const ALL: [OcspHash; 4] = [
        OcspHash::Sha1,
        OcspHash::Sha256,
        OcspHash::Sha384,
        OcspHash::Sha512,
    ];

    pub fn to_wire(self) -> u8 {
        match self {
            OcspHash::Sha1 => 1,
            OcspHash::Sha256 => 2,
            OcspHash::Sha384 => 3,
            OcspHash::Sha512 => 4,
        }
    }

    pub fn from_wire(v: u8) -> Result<Self, FrameError> {
        Ok(match v {
            1 => OcspHash::Sha1,
            2 => OcspHash::Sha256,
            3 => OcspHash::Sha384,
            4 => OcspHash::Sha512,
            _ => return Err(FrameError::BadValue("ocsp hash")),
        })
    }

    /// Octets of a digest.
    pub fn digest_len(self) -> usize {
        match self {
            OcspHash::Sha1 => 20,
            OcspHash::Sha256 => 32,
            OcspHash::Sha384 => 48,
            OcspHash::Sha512 => 64,
        }
    }
}

/// One certificate an OCSP client asks about, as its CertID names it: the issuer by the
/// hashes of its name and key, and the serial. `hash_params_null` says whether the client
/// wrote the hash's AlgorithmIdentifier with NULL parameters, so the answer's CertID
/// repeats it exactly.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OcspCertId {
    pub hash: OcspHash,
    pub hash_params_null: bool,
    pub issuer_name_hash: Vec<u8>,
    pub issuer_key_hash: Vec<u8>,
    pub serial: Vec<u8>,
}
