//! Issuance policy: YAML profiles in `policy/`, parsed strictly into validated [`Profile`]s,
//! and the evaluation of a CSR against one. The CSR proposes; the profile decides.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use der::asn1::{Ia5String, ObjectIdentifier};
use regex::Regex;
use serde::Deserialize;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{KeyUsage, KeyUsages};
use x509_cert::name::Name;

use crate::ipc::{ErrorCode, Operation};
use crate::pki::csr::ParsedCsr;
use crate::pki::keys::{Curve, PublicKey, SignatureAlgorithm, SignatureAlgorithmId};
use crate::pki::{name, oid};

/// Longest profile validity accepted in a profile file (about 27 years); a CA's own
/// notAfter still bounds every certificate.
pub const MAX_VALIDITY_DAYS: u32 = 10_000;
/// "notBefore at most a few minutes in the past": clock skew allowance for devices.
pub const MAX_BACKDATE_MINUTES: u32 = 10;
/// RFC 5280 upper bounds: ub-common-name and friends are 64; locality and state 128.
pub const MAX_ATTRIBUTE_LEN: usize = 128;
/// Most SANs any profile may allow.
pub const MAX_SAN_COUNT: usize = 100;
/// RFC 1035: a DNS name is at most 253 characters, a label 63.
pub const MAX_DNS_NAME_LEN: usize = 253;

/// Who is calling the signer, from the socket's peer uid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Caller {
    Frontend,
    Operator,
}

impl Caller {
    pub fn as_str(self) -> &'static str {
        match self {
            Caller::Frontend => "frontend",
            Caller::Operator => "operator",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: String,
    #[serde(default)]
    description: String,
    callers: Vec<String>,
    operations: Vec<String>,
    validity_days: u32,
    #[serde(default = "default_backdate")]
    backdate_minutes: u32,
    keys: RawKeys,
    csr_signature_algorithms: Vec<String>,
    subject: RawSubject,
    #[serde(default)]
    san: Option<RawSan>,
    key_usage: Vec<String>,
    #[serde(default)]
    rsa_key_encipherment: bool,
    extended_key_usage: Vec<String>,
    #[serde(default)]
    crl_distribution_point: Option<String>,
    #[serde(default)]
    aia_ca_issuers: Option<String>,
    #[serde(default = "default_true")]
    track_devices: bool,
    #[serde(default)]
    allow_registration_authority: bool,
}

fn default_true() -> bool {
    true
}

fn default_backdate() -> u32 {
    5
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeys {
    #[serde(default)]
    rsa: Option<RawRsa>,
    #[serde(default)]
    ec_curves: Vec<String>,
    #[serde(default)]
    ed25519: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRsa {
    min_bits: usize,
    max_bits: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubject {
    attributes: Vec<String>,
    #[serde(default = "default_required")]
    required: Vec<String>,
    #[serde(default)]
    cn_pattern: Option<String>,
    #[serde(default = "default_max_length")]
    max_length: usize,
    #[serde(default)]
    allow_non_ascii: bool,
}

fn default_required() -> Vec<String> {
    vec!["CN".into()]
}

fn default_max_length() -> usize {
    64
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSan {
    types: Vec<String>,
    #[serde(default)]
    dns_suffixes: Vec<String>,
    max_count: usize,
    #[serde(default)]
    required: bool,
}

#[derive(Debug, Clone)]
pub struct RsaRule {
    pub min_bits: usize,
    pub max_bits: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanType {
    Dns,
    Ip,
}

#[derive(Debug, Clone)]
pub struct SanRule {
    pub types: Vec<SanType>,
    pub dns_suffixes: Vec<String>,
    pub max_count: usize,
    pub required: bool,
}

/// A validated profile.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub description: String,
    pub callers: Vec<Caller>,
    pub operations: Vec<Operation>,
    pub validity_days: u32,
    pub backdate_minutes: u32,
    pub rsa: Option<RsaRule>,
    pub ec_curves: Vec<Curve>,
    pub ed25519: bool,
    pub signature_algorithms: Vec<SignatureAlgorithm>,
    pub subject_attributes: Vec<ObjectIdentifier>,
    pub required_attributes: Vec<ObjectIdentifier>,
    pub cn_pattern: Option<Regex>,
    pub max_attribute_length: usize,
    pub allow_non_ascii: bool,
    pub san: Option<SanRule>,
    pub key_usage: Vec<KeyUsages>,
    pub rsa_key_encipherment: bool,
    pub extended_key_usage: Vec<ObjectIdentifier>,
    pub crl_distribution_point: Option<String>,
    pub aia_ca_issuers: Option<String>,
    /// Whether issuance follows the device rules and updates the device table (pumps), or
    /// only records the certificate (server certificates).
    pub track_devices: bool,
    /// Whether a registration authority (a gateway with an RA certificate) may request
    /// certificates under this profile on a device's behalf.
    pub allow_registration_authority: bool,
}

/// A refusal with a stable reason code, e.g. `key.rsa_size`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: ErrorCode,
    pub reason: &'static str,
    pub message: String,
}

fn reject(code: ErrorCode, reason: &'static str, message: impl Into<String>) -> Rejection {
    Rejection {
        code,
        reason,
        message: message.into(),
    }
}

/// What the profile approved from a CSR.
#[derive(Debug, Clone)]
pub struct Approved {
    pub subject: Name,
    pub common_name: String,
    pub subject_alt_names: Vec<GeneralName>,
    pub key_usage: KeyUsage,
    pub extended_key_usage: Vec<ObjectIdentifier>,
    /// Extensions the CSR asked for that the profile ignored, for the audit record.
    pub ignored_extensions: Vec<String>,
}

struct PathErr<'a>(&'a str);

impl PathErr<'_> {
    fn at(&self, key: &str, msg: impl std::fmt::Display) -> String {
        format!("{}: {key}: {msg}", self.0)
    }
}

impl Profile {
    /// Parses and validates one profile document. `origin` names the file in errors.
    pub fn from_yaml(origin: &str, text: &str) -> Result<Profile, String> {
        let raw: RawProfile = yaml_serde::from_str(text).map_err(|e| format!("{origin}: {e}"))?;
        let p = PathErr(origin);
        if raw.name.is_empty()
            || raw.name.len() > crate::ipc::messages::MAX_NAME_LEN
            || !raw
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(p.at("name", "must be 1-64 characters of a-z, 0-9, - and _"));
        }
        let callers = raw
            .callers
            .iter()
            .map(|c| match c.as_str() {
                "frontend" => Ok(Caller::Frontend),
                "operator" => Ok(Caller::Operator),
                other => Err(p.at(
                    "callers",
                    format!("unknown caller {other:?} (frontend, operator)"),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if callers.is_empty() {
            return Err(p.at("callers", "must name at least one caller"));
        }
        let operations = raw
            .operations
            .iter()
            .map(|o| o.parse::<Operation>().map_err(|e| p.at("operations", e)))
            .collect::<Result<Vec<_>, _>>()?;
        if operations.is_empty() {
            return Err(p.at("operations", "must name at least one operation"));
        }
        if raw.validity_days == 0 || raw.validity_days > MAX_VALIDITY_DAYS {
            return Err(p.at(
                "validity_days",
                format!("must be between 1 and {MAX_VALIDITY_DAYS}"),
            ));
        }
        if raw.backdate_minutes > MAX_BACKDATE_MINUTES {
            return Err(p.at(
                "backdate_minutes",
                format!("must be at most {MAX_BACKDATE_MINUTES}"),
            ));
        }
        let rsa = match raw.keys.rsa {
            None => None,
            Some(r) => {
                if r.min_bits < 2048 || r.min_bits % 8 != 0 {
                    return Err(p.at(
                        "keys.rsa.min_bits",
                        "must be at least 2048 and a multiple of 8",
                    ));
                }
                if r.max_bits < r.min_bits || r.max_bits > 8192 || r.max_bits % 8 != 0 {
                    return Err(p.at(
                        "keys.rsa.max_bits",
                        "must be a multiple of 8 between min_bits and 8192",
                    ));
                }
                Some(RsaRule {
                    min_bits: r.min_bits,
                    max_bits: r.max_bits,
                })
            }
        };
        let ec_curves = raw
            .keys
            .ec_curves
            .iter()
            .map(|c| match c.as_str() {
                "p256" => Ok(Curve::P256),
                "p384" => Ok(Curve::P384),
                other => Err(p.at(
                    "keys.ec_curves",
                    format!("unsupported curve {other:?} (p256, p384)"),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if rsa.is_none() && ec_curves.is_empty() && !raw.keys.ed25519 {
            return Err(p.at("keys", "allows no key type at all"));
        }
        let signature_algorithms = raw
            .csr_signature_algorithms
            .iter()
            .map(|a| match SignatureAlgorithm::parse(a) {
                // ring cannot verify ECDSA with SHA-512; refuse rather than fail later.
                Some(SignatureAlgorithm::EcdsaSha512) | None => Err(p.at(
                    "csr_signature_algorithms",
                    format!(
                        "unsupported algorithm {a:?} (rsa-pkcs1-sha256, rsa-pkcs1-sha384, \
                         rsa-pkcs1-sha512, ecdsa-sha256, ecdsa-sha384, ed25519)"
                    ),
                )),
                Some(alg) => Ok(alg),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if signature_algorithms.is_empty() {
            return Err(p.at("csr_signature_algorithms", "must not be empty"));
        }
        let attr = |key: &str, list: &[String]| -> Result<Vec<ObjectIdentifier>, String> {
            list.iter()
                .map(|a| {
                    name::attribute_oid(a).ok_or_else(|| {
                        p.at(
                            key,
                            format!("unknown attribute {a:?} (CN, O, OU, C, L, ST, serialNumber)"),
                        )
                    })
                })
                .collect()
        };
        let subject_attributes = attr("subject.attributes", &raw.subject.attributes)?;
        let required_attributes = attr("subject.required", &raw.subject.required)?;
        if let Some(missing) = required_attributes
            .iter()
            .find(|r| !subject_attributes.contains(r))
        {
            return Err(p.at(
                "subject.required",
                format!("{missing} is required but not in subject.attributes"),
            ));
        }
        if raw.subject.max_length == 0 || raw.subject.max_length > MAX_ATTRIBUTE_LEN {
            return Err(p.at(
                "subject.max_length",
                format!("must be between 1 and {MAX_ATTRIBUTE_LEN}"),
            ));
        }
        let cn_pattern = match raw.subject.cn_pattern {
            None => None,
            Some(pat) => {
                if !pat.starts_with('^') || !pat.ends_with('$') {
                    return Err(p.at(
                        "subject.cn_pattern",
                        "must be anchored with ^ and $ so that it matches the whole name",
                    ));
                }
                Some(Regex::new(&pat).map_err(|e| p.at("subject.cn_pattern", e))?)
            }
        };
        let san = match raw.san {
            None => None,
            Some(s) => {
                let types = s
                    .types
                    .iter()
                    .map(|t| match t.as_str() {
                        "dns" => Ok(SanType::Dns),
                        "ip" => Ok(SanType::Ip),
                        other => {
                            Err(p.at("san.types", format!("unknown type {other:?} (dns, ip)")))
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if types.is_empty() {
                    return Err(p.at("san.types", "must not be empty (omit san to ignore SANs)"));
                }
                if s.max_count == 0 || s.max_count > MAX_SAN_COUNT {
                    return Err(p.at(
                        "san.max_count",
                        format!("must be between 1 and {MAX_SAN_COUNT}"),
                    ));
                }
                let mut dns_suffixes = Vec::new();
                for suffix in &s.dns_suffixes {
                    let lower = suffix.trim_start_matches('.').to_ascii_lowercase();
                    if !valid_dns_name(&lower) {
                        return Err(
                            p.at("san.dns_suffixes", format!("{suffix:?} is not a DNS name"))
                        );
                    }
                    dns_suffixes.push(lower);
                }
                Some(SanRule {
                    types,
                    dns_suffixes,
                    max_count: s.max_count,
                    required: s.required,
                })
            }
        };
        let key_usage = raw
            .key_usage
            .iter()
            .map(|k| match k.as_str() {
                "digital_signature" => Ok(KeyUsages::DigitalSignature),
                "key_encipherment" => Ok(KeyUsages::KeyEncipherment),
                "key_agreement" => Ok(KeyUsages::KeyAgreement),
                "non_repudiation" => Ok(KeyUsages::NonRepudiation),
                other => Err(p.at(
                    "key_usage",
                    format!(
                        "unknown or end-entity-forbidden usage {other:?} (digital_signature, \
                         key_encipherment, key_agreement, non_repudiation)"
                    ),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if key_usage.is_empty() {
            return Err(p.at("key_usage", "must not be empty"));
        }
        let extended_key_usage = raw
            .extended_key_usage
            .iter()
            .map(|e| match e.as_str() {
                "client_auth" => Ok(oid::KP_CLIENT_AUTH),
                "server_auth" => Ok(oid::KP_SERVER_AUTH),
                other => Err(p.at(
                    "extended_key_usage",
                    format!("unknown usage {other:?} (client_auth, server_auth)"),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (key, url) in [
            ("crl_distribution_point", &raw.crl_distribution_point),
            ("aia_ca_issuers", &raw.aia_ca_issuers),
        ] {
            if let Some(u) = url {
                if !(u.starts_with("http://") || u.starts_with("ldap://"))
                    || Ia5String::new(u.as_str()).is_err()
                    || u.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(p.at(key, "must be an http:// or ldap:// URL in ASCII"));
                }
            }
        }
        Ok(Profile {
            name: raw.name,
            description: raw.description,
            callers,
            operations,
            validity_days: raw.validity_days,
            backdate_minutes: raw.backdate_minutes,
            rsa,
            ec_curves,
            ed25519: raw.keys.ed25519,
            signature_algorithms,
            subject_attributes,
            required_attributes,
            cn_pattern,
            max_attribute_length: raw.subject.max_length,
            allow_non_ascii: raw.subject.allow_non_ascii,
            san,
            key_usage,
            rsa_key_encipherment: raw.rsa_key_encipherment,
            extended_key_usage,
            crl_distribution_point: raw.crl_distribution_point,
            aia_ca_issuers: raw.aia_ca_issuers,
            track_devices: raw.track_devices,
            allow_registration_authority: raw.allow_registration_authority,
        })
    }

    /// The RFC 7030 §4.5.2 `CsrAttrs` that tell clients what this profile accepts: the key
    /// types (EC with the allowed curves, rsaEncryption) and the preferred signature
    /// algorithm. Empty when there is nothing to ask for (the frontend answers 204).
    pub fn csr_attributes(&self) -> Result<Vec<u8>, der::Error> {
        use der::asn1::{Any, SetOfVec};
        use der::Encode;
        use x509_cert::attr::Attribute;

        #[derive(Clone, PartialEq, Eq, der::Choice)]
        enum AttrOrOid {
            Oid(ObjectIdentifier),
            Attribute(Attribute),
        }

        let mut items = Vec::new();
        if !self.ec_curves.is_empty() {
            let mut curves = SetOfVec::new();
            for c in &self.ec_curves {
                let o = match c {
                    Curve::P256 => oid::SECP256R1,
                    Curve::P384 => oid::SECP384R1,
                };
                curves.insert(Any::from(&o))?;
            }
            items.push(AttrOrOid::Attribute(Attribute {
                oid: oid::EC_PUBLIC_KEY,
                values: curves,
            }));
        }
        if self.rsa.is_some() {
            items.push(AttrOrOid::Oid(oid::RSA_ENCRYPTION));
        }
        if let Some(first) = self.signature_algorithms.first() {
            items.push(AttrOrOid::Oid(first.oid()));
        }
        if items.is_empty() {
            return Ok(Vec::new());
        }
        items.to_der()
    }

    pub fn permits(&self, caller: Caller, op: Operation) -> Result<(), Rejection> {
        if !self.callers.contains(&caller) {
            return Err(reject(
                ErrorCode::NotAllowed,
                "profile.caller",
                format!("profile {} is not available to this caller", self.name),
            ));
        }
        if !self.operations.contains(&op) {
            return Err(reject(
                ErrorCode::NotAllowed,
                "profile.operation",
                format!("profile {} does not allow {}", self.name, op.as_str()),
            ));
        }
        Ok(())
    }

    /// Checks a CSR: key, signature algorithm, proof of possession, subject and SANs, in that
    /// order, and returns what may go into the certificate.
    pub fn evaluate(&self, csr: &ParsedCsr) -> Result<Approved, Rejection> {
        self.check_key(&csr.public_key)?;
        let alg = match &csr.signature_algorithm {
            SignatureAlgorithmId::Sha1 => {
                return Err(reject(
                    ErrorCode::SignatureAlgorithmRejected,
                    "sigalg.sha1",
                    "CSR signatures with SHA-1 are not accepted",
                ))
            }
            SignatureAlgorithmId::Other(o) => {
                return Err(reject(
                    ErrorCode::SignatureAlgorithmRejected,
                    "sigalg.unsupported",
                    format!("CSR signature algorithm {o} is not supported"),
                ))
            }
            SignatureAlgorithmId::Known(a) => *a,
        };
        if !self.signature_algorithms.contains(&alg) {
            return Err(reject(
                ErrorCode::SignatureAlgorithmRejected,
                "sigalg.not_allowed",
                format!("CSR signature algorithm {} is not allowed", alg.name()),
            ));
        }
        csr.verify_proof_of_possession(alg).map_err(|_| {
            reject(
                ErrorCode::ProofOfPossession,
                "csr.pop",
                "the CSR signature does not verify with its public key",
            )
        })?;
        let (subject, common_name) = self.check_subject(&csr.request.info.subject)?;
        let mut ignored_extensions: Vec<String> = csr
            .requested_extensions
            .iter()
            .filter(|o| !(**o == oid::CE_SUBJECT_ALT_NAME && self.san.is_some()))
            .map(|o| o.to_string())
            .collect();
        ignored_extensions.sort();
        let subject_alt_names = self.check_sans(csr.requested_sans.as_deref())?;
        let mut usages = self.key_usage.clone();
        if self.rsa_key_encipherment
            && matches!(csr.public_key, PublicKey::Rsa { .. })
            && !usages.contains(&KeyUsages::KeyEncipherment)
        {
            usages.push(KeyUsages::KeyEncipherment);
        }
        let mut set = flagset::FlagSet::<KeyUsages>::default();
        for u in usages {
            set |= u;
        }
        Ok(Approved {
            subject,
            common_name,
            subject_alt_names,
            key_usage: KeyUsage(set),
            extended_key_usage: self.extended_key_usage.clone(),
            ignored_extensions,
        })
    }

    fn check_key(&self, key: &PublicKey) -> Result<(), Rejection> {
        match key {
            PublicKey::Rsa {
                modulus_bits,
                exponent,
                ..
            } => {
                let Some(rule) = &self.rsa else {
                    return Err(reject(
                        ErrorCode::KeyRejected,
                        "key.type",
                        "RSA keys are not allowed",
                    ));
                };
                if *modulus_bits < rule.min_bits
                    || *modulus_bits > rule.max_bits
                    || modulus_bits % 8 != 0
                {
                    return Err(reject(
                        ErrorCode::KeyRejected,
                        "key.rsa_size",
                        format!(
                            "RSA key of {modulus_bits} bits; between {} and {} bits, a multiple \
                             of 8, is required",
                            rule.min_bits, rule.max_bits
                        ),
                    ));
                }
                // e must be odd and at least 65537 (BR 6.1.6).
                let small =
                    exponent.len() < 3 || (exponent.len() == 3 && exponent[..] < [1u8, 0, 1][..]);
                let even = exponent.last().is_none_or(|b| b % 2 == 0);
                if small || even {
                    return Err(reject(
                        ErrorCode::KeyRejected,
                        "key.rsa_exponent",
                        "RSA public exponent must be odd and at least 65537",
                    ));
                }
                Ok(())
            }
            PublicKey::Ec { curve, .. } => {
                if self.ec_curves.contains(curve) {
                    Ok(())
                } else {
                    Err(reject(
                        ErrorCode::KeyRejected,
                        "key.curve",
                        format!("curve {} is not allowed", curve.name()),
                    ))
                }
            }
            PublicKey::EcUnsupportedCurve(c) => Err(reject(
                ErrorCode::KeyRejected,
                "key.curve",
                format!("curve {c} is not supported"),
            )),
            PublicKey::Ed25519(_) if self.ed25519 => Ok(()),
            PublicKey::Ed25519(_) => Err(reject(
                ErrorCode::KeyRejected,
                "key.type",
                "Ed25519 keys are not allowed",
            )),
            PublicKey::Unsupported(o) => Err(reject(
                ErrorCode::KeyRejected,
                "key.type",
                format!("key algorithm {o} is not supported"),
            )),
        }
    }

    fn check_subject(&self, subject: &Name) -> Result<(Name, String), Rejection> {
        let bad = |reason, msg: String| Err(reject(ErrorCode::SubjectRejected, reason, msg));
        let mut out: Vec<(ObjectIdentifier, String)> = Vec::new();
        for rdn in subject.0.iter() {
            if rdn.0.len() != 1 {
                return bad(
                    "name.multi_valued",
                    "multi-valued RDNs are not accepted".into(),
                );
            }
            let Some(atv) = rdn.0.get(0) else {
                return bad("name.multi_valued", "empty RDN".into());
            };
            let label = name::attribute_short_name(&atv.oid)
                .map(str::to_string)
                .unwrap_or_else(|| atv.oid.to_string());
            if !self.subject_attributes.contains(&atv.oid) {
                return bad(
                    "name.attribute",
                    format!("subject attribute {label} is not allowed"),
                );
            }
            let Some(value) = name::attribute_string(&atv.value) else {
                return bad(
                    "name.encoding",
                    format!("subject attribute {label} has an unsupported string type"),
                );
            };
            if value.chars().any(|c| c.is_control()) {
                return bad(
                    "name.control_char",
                    format!("subject attribute {label} contains a control character"),
                );
            }
            if !self.allow_non_ascii && !value.is_ascii() {
                return bad(
                    "name.non_ascii",
                    format!("subject attribute {label} contains non-ASCII characters"),
                );
            }
            let chars = value.chars().count();
            if value.trim().is_empty() {
                return bad("name.empty", format!("subject attribute {label} is empty"));
            }
            let max = if atv.oid == oid::AT_COUNTRY {
                2
            } else if atv.oid == oid::AT_COMMON_NAME {
                self.max_attribute_length.min(64)
            } else {
                self.max_attribute_length
            };
            if chars > max || (atv.oid == oid::AT_COUNTRY && chars != 2) {
                return bad(
                    "name.too_long",
                    format!("subject attribute {label} must be at most {max} characters"),
                );
            }
            if atv.oid == oid::AT_COMMON_NAME {
                if out.iter().any(|(o, _)| *o == oid::AT_COMMON_NAME) {
                    return bad("name.multiple_cn", "more than one CN".into());
                }
                if value.contains('*') {
                    return bad(
                        "name.wildcard",
                        "wildcards are not allowed in the CN".into(),
                    );
                }
                if let Some(re) = &self.cn_pattern {
                    if !re.is_match(&value) {
                        return bad(
                            "name.cn_pattern",
                            format!("CN does not match the pattern {}", re.as_str()),
                        );
                    }
                }
            }
            out.push((atv.oid, value));
        }
        for req in &self.required_attributes {
            if !out.iter().any(|(o, _)| o == req) {
                let label = name::attribute_short_name(req).unwrap_or("attribute");
                return bad(
                    "name.missing",
                    format!("subject attribute {label} is required"),
                );
            }
        }
        let cn = out
            .iter()
            .find(|(o, _)| *o == oid::AT_COMMON_NAME)
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let name = name::make_name(&out)
            .map_err(|e| reject(ErrorCode::SubjectRejected, "name.encoding", e))?;
        Ok((name, cn))
    }

    fn check_sans(&self, requested: Option<&[GeneralName]>) -> Result<Vec<GeneralName>, Rejection> {
        let bad = |reason, msg: String| Err(reject(ErrorCode::SanRejected, reason, msg));
        let Some(rule) = &self.san else {
            // The profile does not allow SANs: a requested SAN is ignored, not copied.
            return Ok(Vec::new());
        };
        let requested = requested.unwrap_or(&[]);
        if requested.len() > rule.max_count {
            return bad(
                "san.count",
                format!("at most {} subjectAltNames are allowed", rule.max_count),
            );
        }
        let mut out = Vec::with_capacity(requested.len());
        for gn in requested {
            match gn {
                GeneralName::DnsName(d) if rule.types.contains(&SanType::Dns) => {
                    let dns = d.as_str().to_ascii_lowercase();
                    if dns.contains('*') {
                        return bad("san.wildcard", "wildcard DNS names are not allowed".into());
                    }
                    if !valid_dns_name(&dns) {
                        return bad(
                            "san.dns_syntax",
                            "a DNS name is not a valid host name".into(),
                        );
                    }
                    if !rule.dns_suffixes.is_empty()
                        && !rule
                            .dns_suffixes
                            .iter()
                            .any(|s| dns == *s || dns.ends_with(&format!(".{s}")))
                    {
                        return bad(
                            "san.suffix",
                            format!("DNS name {dns} is outside the allowed domains"),
                        );
                    }
                    let ia5 = Ia5String::new(&dns).map_err(|e| {
                        reject(ErrorCode::SanRejected, "san.dns_syntax", e.to_string())
                    })?;
                    out.push(GeneralName::DnsName(ia5));
                }
                GeneralName::IpAddress(ip) if rule.types.contains(&SanType::Ip) => {
                    if !matches!(ip.as_bytes().len(), 4 | 16) {
                        return bad("san.ip_syntax", "an IP address SAN is malformed".into());
                    }
                    out.push(gn.clone());
                }
                _ => return bad("san.type", "a subjectAltName type is not allowed".into()),
            }
        }
        if rule.required && out.is_empty() {
            return bad("san.missing", "a subjectAltName is required".into());
        }
        Ok(out)
    }
}

/// LDH host name syntax (RFC 1123): labels of 1-63 letters, digits and hyphens, not starting
/// or ending with a hyphen; total at most 253 characters.
pub fn valid_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_DNS_NAME_LEN
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// All profiles of a deployment, by name.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub profiles: BTreeMap<String, Profile>,
}

impl Policy {
    /// Loads every `*.yaml` file in `dir`; each holds one profile. Names must be unique.
    pub fn load_dir(dir: &Path) -> Result<Policy, String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| format!("{}: cannot read policy directory: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        files.sort();
        let mut policy = Policy::default();
        for file in files {
            let text =
                std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let profile = Profile::from_yaml(&file.display().to_string(), &text)?;
            if policy.profiles.contains_key(&profile.name) {
                return Err(format!(
                    "{}: name: profile {} is defined twice",
                    file.display(),
                    profile.name
                ));
            }
            policy.profiles.insert(profile.name.clone(), profile);
        }
        if policy.profiles.is_empty() {
            return Err(format!("{}: no profiles (*.yaml) found", dir.display()));
        }
        Ok(policy)
    }

    pub fn profile(&self, name: &str) -> Result<&Profile, Rejection> {
        self.profiles.get(name).ok_or_else(|| {
            reject(
                ErrorCode::UnknownProfile,
                "profile.unknown",
                "unknown certificate profile",
            )
        })
    }
}

#[cfg(test)]
mod tests;
