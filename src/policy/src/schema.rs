//! The profile file as written: serde types with `deny_unknown_fields` on every table and
//! closed vocabularies as enums, so that a typo is an error naming its key path. Range and
//! consistency checks happen once, in [`crate::profile`].

use serde::Deserialize;
use x509_cert::ext::pkix::KeyUsages;

use hsm_est_pki::keys::{Curve, SignatureAlgorithm};

use crate::{Caller, Operation};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProfile {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub callers: Vec<Caller>,
    pub operations: Vec<Operation>,
    pub validity_days: u32,
    #[serde(default = "default_backdate")]
    pub backdate_minutes: u32,
    pub keys: RawKeys,
    pub csr_signature_algorithms: Vec<CsrSignatureAlgorithm>,
    pub subject: RawSubject,
    #[serde(default)]
    pub san: Option<RawSan>,
    pub key_usage: Vec<EndEntityKeyUsage>,
    #[serde(default)]
    pub rsa_key_encipherment: bool,
    pub extended_key_usage: Vec<ExtendedKeyUsage>,
    #[serde(default)]
    pub crl_distribution_point: Option<String>,
    #[serde(default)]
    pub aia_ca_issuers: Option<String>,
    #[serde(default)]
    pub ocsp_url: Option<String>,
    #[serde(default = "default_true")]
    pub track_devices: bool,
    #[serde(default)]
    pub allow_registration_authority: bool,
    #[serde(default)]
    pub quota: RawQuota,
    #[serde(default)]
    pub rekey: RekeyRule,
    #[serde(default)]
    pub revoke_superseded: SupersededRule,
    #[serde(default)]
    pub channel_binding: ChannelBinding,
    /// The CA (signer.yaml, `cas`) that issues under this profile; absent: the default CA.
    #[serde(default)]
    pub ca: Option<String>,
}

/// Per-profile issuance quotas over a sliding hour: what a compromised frontend can do
/// within policy is bounded in rate too. Absent means no limit.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawQuota {
    #[serde(default)]
    pub new_devices_per_hour: Option<u32>,
    #[serde(default)]
    pub rekeys_per_hour: Option<u32>,
}

/// Whether a re-enrolment may bring a new key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RekeyRule {
    /// A renewal may carry a new key (counted against `rekeys_per_hour`).
    #[default]
    Allowed,
    /// A renewal must keep the key of the current certificate.
    SameKeyOnly,
}

/// Whether a CSR must be bound to the TLS connection it came over (RFC 7030 §3.5 with RFC
/// 9266 tls-exporter: the challengePassword carries the base64 of the connection's
/// exporter value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelBinding {
    /// Not checked; the audit record says so when a CSR carries a binding value.
    #[default]
    Ignore,
    /// Required: TLS 1.3 and the right value, or the request is refused.
    Required,
}

/// What happens to a device's previous certificate when a new one replaces it. It is always
/// marked superseded in the ledger; this decides whether it is also revoked (reason
/// superseded), so that a device holds one valid certificate, not a trail of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SupersededRule {
    /// Never revoked: it stays valid until it expires.
    Never,
    /// Revoked when the new certificate certifies a different key.
    #[default]
    Rekey,
    /// Always revoked.
    Always,
}

fn default_true() -> bool {
    true
}

fn default_backdate() -> u32 {
    5
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKeys {
    #[serde(default)]
    pub rsa: Option<RawRsa>,
    #[serde(default)]
    pub ec_curves: Vec<CurveName>,
    #[serde(default)]
    pub ed25519: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRsa {
    pub min_bits: usize,
    pub max_bits: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSubject {
    /// Attribute short names (`CN`, `O`, …), matched without regard to case by the PKI
    /// crate's name table.
    pub attributes: Vec<String>,
    #[serde(default = "default_required")]
    pub required: Vec<String>,
    #[serde(default)]
    pub cn_pattern: Option<String>,
    /// Attributes set from configuration, not by the requester (`O: Example Hospital`), in
    /// the order they are written: the certificate carries them after the requester's.
    #[serde(default)]
    pub pinned: yaml_serde::Mapping,
    #[serde(default = "default_max_length")]
    pub max_length: usize,
    #[serde(default)]
    pub allow_non_ascii: bool,
}

fn default_required() -> Vec<String> {
    vec!["CN".into()]
}

fn default_max_length() -> usize {
    64
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSan {
    pub types: Vec<SanType>,
    #[serde(default)]
    pub dns_suffixes: Vec<String>,
    pub max_count: usize,
    #[serde(default)]
    pub required: bool,
}

/// The subjectAltName types a profile may allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SanType {
    Dns,
    Ip,
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum CurveName {
    P256,
    P384,
}

impl From<CurveName> for Curve {
    fn from(c: CurveName) -> Curve {
        match c {
            CurveName::P256 => Curve::P256,
            CurveName::P384 => Curve::P384,
        }
    }
}

/// CSR signature algorithms a profile may allow. ECDSA with SHA-512 is absent on purpose:
/// ring cannot verify it, so it is refused when the profile is read rather than later.
#[derive(Clone, Copy, Deserialize)]
pub(crate) enum CsrSignatureAlgorithm {
    #[serde(rename = "rsa-pkcs1-sha256")]
    RsaPkcs1Sha256,
    #[serde(rename = "rsa-pkcs1-sha384")]
    RsaPkcs1Sha384,
    #[serde(rename = "rsa-pkcs1-sha512")]
    RsaPkcs1Sha512,
    #[serde(rename = "ecdsa-sha256")]
    EcdsaSha256,
    #[serde(rename = "ecdsa-sha384")]
    EcdsaSha384,
    #[serde(rename = "ed25519")]
    Ed25519,
}

impl From<CsrSignatureAlgorithm> for SignatureAlgorithm {
    fn from(a: CsrSignatureAlgorithm) -> SignatureAlgorithm {
        match a {
            CsrSignatureAlgorithm::RsaPkcs1Sha256 => SignatureAlgorithm::RsaPkcs1Sha256,
            CsrSignatureAlgorithm::RsaPkcs1Sha384 => SignatureAlgorithm::RsaPkcs1Sha384,
            CsrSignatureAlgorithm::RsaPkcs1Sha512 => SignatureAlgorithm::RsaPkcs1Sha512,
            CsrSignatureAlgorithm::EcdsaSha256 => SignatureAlgorithm::EcdsaSha256,
            CsrSignatureAlgorithm::EcdsaSha384 => SignatureAlgorithm::EcdsaSha384,
            CsrSignatureAlgorithm::Ed25519 => SignatureAlgorithm::Ed25519,
        }
    }
}

/// Key usages an end-entity profile may grant; the CA usages (keyCertSign, cRLSign) are
/// not in the vocabulary at all.
#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum EndEntityKeyUsage {
    DigitalSignature,
    KeyEncipherment,
    KeyAgreement,
    NonRepudiation,
}

impl From<EndEntityKeyUsage> for KeyUsages {
    fn from(k: EndEntityKeyUsage) -> KeyUsages {
        match k {
            EndEntityKeyUsage::DigitalSignature => KeyUsages::DigitalSignature,
            EndEntityKeyUsage::KeyEncipherment => KeyUsages::KeyEncipherment,
            EndEntityKeyUsage::KeyAgreement => KeyUsages::KeyAgreement,
            EndEntityKeyUsage::NonRepudiation => KeyUsages::NonRepudiation,
        }
    }
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ExtendedKeyUsage {
    ClientAuth,
    ServerAuth,
}
