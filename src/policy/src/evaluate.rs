//! The evaluation of a CSR against a profile: key, signature algorithm, proof of
//! possession, subject and SANs, in that order. Nothing is copied from the CSR that the
//! profile does not allow.

use der::asn1::{Ia5String, ObjectIdentifier};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{KeyUsage, KeyUsages};
use x509_cert::name::Name;

use hsm_est_pki::csr::ParsedCsr;
use hsm_est_pki::keys::{PublicKey, SignatureAlgorithmId};
use hsm_est_pki::{name, oid};

use crate::denial::{Denial, DenialKind};
use crate::profile::Profile;
use crate::schema::SanType;

/// RFC 1035: a DNS name is at most 253 characters, a label 63.
pub const MAX_DNS_NAME_LEN: usize = 253;

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

impl Profile {
    /// Checks a CSR: key, signature algorithm, proof of possession, subject and SANs, in that
    /// order, and returns what may go into the certificate.
    pub fn evaluate(&self, csr: &ParsedCsr) -> Result<Approved, Denial> {
        self.check_key(&csr.public_key)?;
        let alg = match &csr.signature_algorithm {
            SignatureAlgorithmId::Sha1 => {
                return Err(Denial::new(
                    DenialKind::SignatureAlgorithm,
                    "sigalg.sha1",
                    "CSR signatures with SHA-1 are not accepted",
                ))
            }
            SignatureAlgorithmId::Other(o) => {
                return Err(Denial::new(
                    DenialKind::SignatureAlgorithm,
                    "sigalg.unsupported",
                    format!("CSR signature algorithm {o} is not supported"),
                ))
            }
            SignatureAlgorithmId::Known(a) => *a,
        };
        if !self.signature_algorithms.contains(&alg) {
            return Err(Denial::new(
                DenialKind::SignatureAlgorithm,
                "sigalg.not_allowed",
                format!("CSR signature algorithm {} is not allowed", alg.name()),
            ));
        }
        csr.verify_proof_of_possession(alg).map_err(|_| {
            Denial::new(
                DenialKind::ProofOfPossession,
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

    fn check_key(&self, key: &PublicKey) -> Result<(), Denial> {
        match key {
            PublicKey::Rsa {
                modulus_bits,
                exponent,
                ..
            } => {
                let Some(rule) = &self.rsa else {
                    return Err(Denial::new(
                        DenialKind::Key,
                        "key.type",
                        "RSA keys are not allowed",
                    ));
                };
                if *modulus_bits < rule.min_bits
                    || *modulus_bits > rule.max_bits
                    || modulus_bits % 8 != 0
                {
                    return Err(Denial::new(
                        DenialKind::Key,
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
                    return Err(Denial::new(
                        DenialKind::Key,
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
                    Err(Denial::new(
                        DenialKind::Key,
                        "key.curve",
                        format!("curve {} is not allowed", curve.name()),
                    ))
                }
            }
            PublicKey::EcUnsupportedCurve(c) => Err(Denial::new(
                DenialKind::Key,
                "key.curve",
                format!("curve {c} is not supported"),
            )),
            PublicKey::Ed25519(_) if self.ed25519 => Ok(()),
            PublicKey::Ed25519(_) => Err(Denial::new(
                DenialKind::Key,
                "key.type",
                "Ed25519 keys are not allowed",
            )),
            PublicKey::Unsupported(o) => Err(Denial::new(
                DenialKind::Key,
                "key.type",
                format!("key algorithm {o} is not supported"),
            )),
        }
    }

    fn check_subject(&self, subject: &Name) -> Result<(Name, String), Denial> {
        let bad = |reason, msg: String| Err(Denial::new(DenialKind::Subject, reason, msg));
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
            if let Some((_, want)) = self.subject.pinned.iter().find(|(o, _)| *o == atv.oid) {
                self.check_pinned(atv, want)?;
                continue;
            }
            let value = self.check_attribute(atv, &out)?;
            out.push((atv.oid, value));
        }
        // The profile's own attributes follow the requester's, always in the same order, so
        // that a renewal without them names the device exactly as before.
        out.extend(self.subject.pinned.iter().cloned());
        for req in &self.subject.required {
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
            .map_err(|e| Denial::new(DenialKind::Subject, "name.encoding", e))?;
        Ok((name, cn))
    }

    /// A pinned attribute the CSR carries anyway: accepted only with the pinned value
    /// (compared by meaning, as RFC 5280 §7.1 compares names), and only once.
    fn check_pinned(
        &self,
        atv: &x509_cert::attr::AttributeTypeAndValue,
        want: &str,
    ) -> Result<(), Denial> {
        let label = name::attribute_short_name(&atv.oid).unwrap_or("attribute");
        // RFC 4518 in short, as the name comparison does: case and runs of spaces ignored.
        let prepare = |v: &str| {
            v.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .to_lowercase()
        };
        let same = name::attribute_string(&atv.value).is_some_and(|v| prepare(&v) == prepare(want));
        if same {
            return Ok(());
        }
        Err(Denial::new(
            DenialKind::Subject,
            "name.pinned",
            format!("subject attribute {label} is set by the profile to {want:?}; leave it out"),
        ))
    }

    /// One subject attribute: allowed, a string type we read, no control characters,
    /// ASCII unless the profile says otherwise, within length, and the CN rules. `seen` holds
    /// the attributes accepted so far.
    fn check_attribute(
        &self,
        atv: &x509_cert::attr::AttributeTypeAndValue,
        seen: &[(ObjectIdentifier, String)],
    ) -> Result<String, Denial> {
        let bad = |reason, msg: String| Err(Denial::new(DenialKind::Subject, reason, msg));
        let label = name::attribute_short_name(&atv.oid)
            .map(str::to_string)
            .unwrap_or_else(|| atv.oid.to_string());
        if !self.subject.attributes.contains(&atv.oid) {
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
        if !self.subject.allow_non_ascii && !value.is_ascii() {
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
            self.subject.max_attribute_length.min(64)
        } else {
            self.subject.max_attribute_length
        };
        if chars > max || (atv.oid == oid::AT_COUNTRY && chars != 2) {
            return bad(
                "name.too_long",
                format!("subject attribute {label} must be at most {max} characters"),
            );
        }
        if atv.oid == oid::AT_COMMON_NAME {
            if seen.iter().any(|(o, _)| *o == oid::AT_COMMON_NAME) {
                return bad("name.multiple_cn", "more than one CN".into());
            }
            if value.contains('*') {
                return bad(
                    "name.wildcard",
                    "wildcards are not allowed in the CN".into(),
                );
            }
            if let Some(re) = &self.subject.cn_pattern {
                if !re.is_match(&value) {
                    return bad(
                        "name.cn_pattern",
                        format!("CN does not match the pattern {}", re.as_str()),
                    );
                }
            }
        }
        Ok(value)
    }

    fn check_sans(&self, requested: Option<&[GeneralName]>) -> Result<Vec<GeneralName>, Denial> {
        let bad = |reason, msg: String| Err(Denial::new(DenialKind::SubjectAltName, reason, msg));
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
                        Denial::new(DenialKind::SubjectAltName, "san.dns_syntax", e.to_string())
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
