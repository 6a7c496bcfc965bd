//! A validated profile: what [`crate::schema`] read, with every range and consistency rule
//! checked once. Errors name the file and the key path; nothing is clamped.

use der::asn1::{Ia5String, ObjectIdentifier};
use regex::Regex;
use x509_cert::ext::pkix::KeyUsages;

use hsm_est_pki::keys::{Curve, SignatureAlgorithm};
use hsm_est_pki::{name, oid};

use crate::denial::{Denial, DenialKind};
use crate::evaluate::valid_dns_name;
use crate::schema::{
    ChannelBinding, ExtendedKeyUsage, RawKeys, RawProfile, RawQuota, RawSan, RawSubject, RekeyRule,
    SanType, SupersededRule,
};
use crate::{Caller, Operation};

/// Longest profile validity accepted in a profile file (about 27 years); a CA's own
/// notAfter still bounds every certificate.
pub const MAX_VALIDITY_DAYS: u32 = 10_000;
/// "notBefore at most a few minutes in the past": clock skew allowance for devices.
pub const MAX_BACKDATE_MINUTES: u32 = 10;
/// RFC 5280 upper bounds: ub-common-name and friends are 64; locality and state 128.
pub const MAX_ATTRIBUTE_LEN: usize = 128;
/// Most SANs any profile may allow.
pub const MAX_SAN_COUNT: usize = 100;
/// Profile names travel in signer requests, whose name fields hold 64 bytes.
pub const MAX_PROFILE_NAME_LEN: usize = 64;
/// RSA moduli a profile may allow, in bits.
const MIN_RSA_BITS: usize = 2048;
const MAX_RSA_BITS: usize = 8192;

#[derive(Debug, Clone)]
pub struct RsaRule {
    pub min_bits: usize,
    pub max_bits: usize,
}

#[derive(Debug, Clone)]
pub struct SanRule {
    pub types: Vec<SanType>,
    pub dns_suffixes: Vec<String>,
    pub max_count: usize,
    pub required: bool,
}

/// The subject rules of a profile.
#[derive(Debug, Clone)]
pub struct SubjectRule {
    /// Attributes the requester may set.
    pub attributes: Vec<ObjectIdentifier>,
    /// Attributes the profile sets, with their values, in certificate order. A CSR may
    /// leave them out or carry the same value; any other value is refused.
    pub pinned: Vec<(ObjectIdentifier, String)>,
    pub required: Vec<ObjectIdentifier>,
    pub cn_pattern: Option<Regex>,
    pub max_attribute_length: usize,
    pub allow_non_ascii: bool,
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
    pub subject: SubjectRule,
    pub san: Option<SanRule>,
    pub key_usage: Vec<KeyUsages>,
    pub rsa_key_encipherment: bool,
    pub extended_key_usage: Vec<ObjectIdentifier>,
    pub crl_distribution_point: Option<String>,
    pub aia_ca_issuers: Option<String>,
    /// The OCSP responder's URL, put into authorityInfoAccess (id-ad-ocsp).
    pub ocsp_url: Option<String>,
    /// Whether issuance follows the device rules and updates the device table (pumps), or
    /// only records the certificate (server certificates).
    pub track_devices: bool,
    /// Whether a registration authority (a gateway with an RA certificate) may request
    /// certificates under this profile on a device's behalf.
    pub allow_registration_authority: bool,
    pub quota: QuotaRule,
    pub rekey: RekeyRule,
    pub revoke_superseded: SupersededRule,
    pub channel_binding: ChannelBinding,
    /// The CA that issues under this profile (signer.yaml names each; the signer refuses to
    /// start when a profile names one it does not hold).
    pub ca: String,
}

/// The CA a profile without `ca` issues under.
pub const DEFAULT_CA: &str = "default";

/// Whether `name` may name a CA: 1-32 characters of a-z, 0-9 and `-`, starting with a
/// letter or digit (it appears in ledger rows, file names and URL paths).
pub fn valid_ca_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Issuances per sliding hour a profile allows; `None` is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuotaRule {
    /// Devices seen for the first time (a bootstrap, or an enrolment without one).
    pub new_devices_per_hour: Option<u32>,
    /// Re-enrolments with a key other than the current certificate's.
    pub rekeys_per_hour: Option<u32>,
}

/// Largest hourly quota a profile may give: a per-profile window keeps one time stamp per
/// issuance it counts.
pub const MAX_QUOTA_PER_HOUR: u32 = 1_000_000;

/// Prefixes validation errors with the file they came from.
struct Origin<'a>(&'a str);

impl Origin<'_> {
    fn at(&self, key: &str, msg: impl std::fmt::Display) -> String {
        format!("{}: {key}: {msg}", self.0)
    }
}

impl Profile {
    /// Parses and validates one profile document. `origin` names the file in errors.
    pub fn from_yaml(origin: &str, text: &str) -> Result<Profile, String> {
        let raw: RawProfile = yaml_serde::from_str(text).map_err(|e| format!("{origin}: {e}"))?;
        Self::from_raw(&Origin(origin), raw)
    }

    fn from_raw(p: &Origin<'_>, raw: RawProfile) -> Result<Profile, String> {
        check_name(p, &raw.name)?;
        if raw.callers.is_empty() {
            return Err(p.at("callers", "must name at least one caller"));
        }
        if raw.operations.is_empty() {
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
        let (rsa, ec_curves) = key_rules(p, &raw.keys)?;
        if raw.csr_signature_algorithms.is_empty() {
            return Err(p.at("csr_signature_algorithms", "must not be empty"));
        }
        if raw.key_usage.is_empty() {
            return Err(p.at("key_usage", "must not be empty"));
        }
        check_urls(p, &raw)?;
        let quota = quota_rule(p, &raw.quota)?;
        let ca = raw.ca.clone().unwrap_or_else(|| DEFAULT_CA.to_string());
        if !valid_ca_name(&ca) {
            return Err(p.at("ca", "must be 1-32 characters of a-z, 0-9 and -"));
        }
        Ok(Profile {
            ca,
            quota,
            rekey: raw.rekey,
            revoke_superseded: raw.revoke_superseded,
            channel_binding: raw.channel_binding,
            subject: subject_rule(p, &raw.subject)?,
            san: raw.san.as_ref().map(|s| san_rule(p, s)).transpose()?,
            name: raw.name,
            description: raw.description,
            callers: raw.callers,
            operations: raw.operations,
            validity_days: raw.validity_days,
            backdate_minutes: raw.backdate_minutes,
            rsa,
            ec_curves,
            ed25519: raw.keys.ed25519,
            signature_algorithms: raw
                .csr_signature_algorithms
                .into_iter()
                .map(Into::into)
                .collect(),
            key_usage: raw.key_usage.into_iter().map(Into::into).collect(),
            rsa_key_encipherment: raw.rsa_key_encipherment,
            extended_key_usage: raw
                .extended_key_usage
                .into_iter()
                .map(|e| match e {
                    ExtendedKeyUsage::ClientAuth => oid::KP_CLIENT_AUTH,
                    ExtendedKeyUsage::ServerAuth => oid::KP_SERVER_AUTH,
                })
                .collect(),
            crl_distribution_point: raw.crl_distribution_point,
            aia_ca_issuers: raw.aia_ca_issuers,
            ocsp_url: raw.ocsp_url,
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
        // The signature algorithms a client should use: every ECDSA one the profile allows
        // when it allows EC keys, and the first RSA one when it allows RSA keys (an EC
        // client must not be told to sign with RSA).
        let rsa_algorithm = |a: &SignatureAlgorithm| {
            matches!(
                a,
                SignatureAlgorithm::RsaPkcs1Sha256
                    | SignatureAlgorithm::RsaPkcs1Sha384
                    | SignatureAlgorithm::RsaPkcs1Sha512
            )
        };
        let ecdsa_algorithm = |a: &SignatureAlgorithm| {
            matches!(
                a,
                SignatureAlgorithm::EcdsaSha256
                    | SignatureAlgorithm::EcdsaSha384
                    | SignatureAlgorithm::EcdsaSha512
            )
        };
        if !self.ec_curves.is_empty() {
            for a in self
                .signature_algorithms
                .iter()
                .filter(|a| ecdsa_algorithm(a))
            {
                items.push(AttrOrOid::Oid(a.oid()));
            }
        }
        if self.rsa.is_some() {
            if let Some(a) = self.signature_algorithms.iter().find(|a| rsa_algorithm(a)) {
                items.push(AttrOrOid::Oid(a.oid()));
            }
        }
        if items.is_empty() {
            return Ok(Vec::new());
        }
        items.to_der()
    }

    /// Whether this profile serves `caller` for `op`.
    pub fn permits(&self, caller: Caller, op: Operation) -> Result<(), Denial> {
        if !self.callers.contains(&caller) {
            return Err(Denial::new(
                DenialKind::NotAllowed,
                "profile.caller",
                format!("profile {} is not available to this caller", self.name),
            ));
        }
        if !self.operations.contains(&op) {
            return Err(Denial::new(
                DenialKind::NotAllowed,
                "profile.operation",
                format!("profile {} does not allow {}", self.name, op.as_str()),
            ));
        }
        Ok(())
    }
}

fn check_name(p: &Origin<'_>, name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > MAX_PROFILE_NAME_LEN
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(p.at("name", "must be 1-64 characters of a-z, 0-9, - and _"));
    }
    Ok(())
}

fn key_rules(p: &Origin<'_>, keys: &RawKeys) -> Result<(Option<RsaRule>, Vec<Curve>), String> {
    let rsa = match &keys.rsa {
        None => None,
        Some(r) => {
            if r.min_bits < MIN_RSA_BITS || r.min_bits % 8 != 0 {
                return Err(p.at(
                    "keys.rsa.min_bits",
                    "must be at least 2048 and a multiple of 8",
                ));
            }
            if r.max_bits < r.min_bits || r.max_bits > MAX_RSA_BITS || r.max_bits % 8 != 0 {
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
    let ec_curves: Vec<Curve> = keys.ec_curves.iter().map(|&c| c.into()).collect();
    if rsa.is_none() && ec_curves.is_empty() && !keys.ed25519 {
        return Err(p.at("keys", "allows no key type at all"));
    }
    Ok((rsa, ec_curves))
}

/// `subject.pinned`: known attributes other than CN, each either pinned or settable by the
/// requester (not both), with values a certificate can carry.
fn pinned_attributes(
    p: &Origin<'_>,
    raw: &RawSubject,
    settable: &[ObjectIdentifier],
) -> Result<Vec<(ObjectIdentifier, String)>, String> {
    let mut pinned: Vec<(ObjectIdentifier, String)> = Vec::new();
    for (k, v) in &raw.pinned {
        let Some(key) = k.as_str() else {
            return Err(p.at("subject.pinned", "attribute names must be strings"));
        };
        let at = |msg: String| p.at(&format!("subject.pinned.{key}"), msg);
        let o = name::attribute_oid(key).ok_or_else(|| at("unknown attribute".into()))?;
        let Some(value) = v.as_str() else {
            return Err(at("the value must be a string".into()));
        };
        if o == oid::AT_COMMON_NAME {
            return Err(at("the CN names the device and cannot be pinned".into()));
        }
        if settable.contains(&o) || pinned.iter().any(|(q, _)| *q == o) {
            return Err(at(
                "is also in subject.attributes or pinned twice; an attribute is either the \
                 requester's or the profile's"
                    .into(),
            ));
        }
        let chars = value.chars().count();
        if value.trim().is_empty()
            || chars > raw.max_length
            || (o == oid::AT_COUNTRY && chars != 2)
            || value.chars().any(char::is_control)
            || (!raw.allow_non_ascii && !value.is_ascii())
        {
            return Err(at(format!(
                "{value:?} is not a value this profile's subject rules allow"
            )));
        }
        name::make_attribute(o, value).map_err(at)?;
        pinned.push((o, value.to_string()));
    }
    Ok(pinned)
}

fn subject_rule(p: &Origin<'_>, raw: &RawSubject) -> Result<SubjectRule, String> {
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
    let attributes = attr("subject.attributes", &raw.attributes)?;
    let required = attr("subject.required", &raw.required)?;
    let pinned = pinned_attributes(p, raw, &attributes)?;
    if let Some(missing) = required
        .iter()
        .find(|r| !attributes.contains(r) && !pinned.iter().any(|(o, _)| o == *r))
    {
        return Err(p.at(
            "subject.required",
            format!("{missing} is required but neither in subject.attributes nor pinned"),
        ));
    }
    if raw.max_length == 0 || raw.max_length > MAX_ATTRIBUTE_LEN {
        return Err(p.at(
            "subject.max_length",
            format!("must be between 1 and {MAX_ATTRIBUTE_LEN}"),
        ));
    }
    let cn_pattern = match &raw.cn_pattern {
        None => None,
        Some(pat) => {
            if !pat.starts_with('^') || !pat.ends_with('$') {
                return Err(p.at(
                    "subject.cn_pattern",
                    "must be anchored with ^ and $ so that it matches the whole name",
                ));
            }
            Some(Regex::new(pat).map_err(|e| p.at("subject.cn_pattern", e))?)
        }
    };
    Ok(SubjectRule {
        attributes,
        pinned,
        required,
        cn_pattern,
        max_attribute_length: raw.max_length,
        allow_non_ascii: raw.allow_non_ascii,
    })
}

fn san_rule(p: &Origin<'_>, s: &RawSan) -> Result<SanRule, String> {
    if s.types.is_empty() {
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
            return Err(p.at("san.dns_suffixes", format!("{suffix:?} is not a DNS name")));
        }
        dns_suffixes.push(lower);
    }
    Ok(SanRule {
        types: s.types.clone(),
        dns_suffixes,
        max_count: s.max_count,
        required: s.required,
    })
}

fn quota_rule(p: &Origin<'_>, q: &RawQuota) -> Result<QuotaRule, String> {
    for (key, value) in [
        ("quota.new_devices_per_hour", q.new_devices_per_hour),
        ("quota.rekeys_per_hour", q.rekeys_per_hour),
    ] {
        if value.is_some_and(|v| v == 0 || v > MAX_QUOTA_PER_HOUR) {
            return Err(p.at(
                key,
                format!("must be between 1 and {MAX_QUOTA_PER_HOUR} (omit it for no limit)"),
            ));
        }
    }
    Ok(QuotaRule {
        new_devices_per_hour: q.new_devices_per_hour,
        rekeys_per_hour: q.rekeys_per_hour,
    })
}

fn check_urls(p: &Origin<'_>, raw: &RawProfile) -> Result<(), String> {
    for (key, url) in [
        ("crl_distribution_point", &raw.crl_distribution_point),
        ("aia_ca_issuers", &raw.aia_ca_issuers),
        ("ocsp_url", &raw.ocsp_url),
    ] {
        if let Some(u) = url {
            if !(u.starts_with("http://") || u.starts_with("ldap://"))
                || Ia5String::new(u.as_str()).is_err()
                || u.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(p.at(key, "must be an http:// or ldap:// URL in ASCII"));
            }
            // RFC 6960 Appendix A: OCSP is HTTP.
            if key == "ocsp_url" && !u.starts_with("http://") {
                return Err(p.at(key, "must be an http:// URL"));
            }
        }
    }
    Ok(())
}
