//! Registration authorities, verified by the signer. The frontend only forwards the TLS
//! client's certificate and the certificates it sent with it; whether that client is an RA,
//! which one, and what it may do is decided here from the signer's own configuration: the
//! path to an RA trust anchor, validity, the id-kp-cmcRA EKU, revocation, and the RA's
//! scope (profiles and device CN pattern). A flag from the frontend proves nothing.

use std::time::SystemTime;

use hsm_est_common::util::{log_safe, unix_seconds};
use hsm_est_pki::path::{self, Anchor, PathError};
use hsm_est_pki::{cert, name, oid, sha256};
use hsm_est_policy::{Approved, Profile};

use crate::config::{AuthorityConfig, RaConfig};
use crate::error::{unavailable, SignerError};
use crate::issuance::IssueInput;
use crate::ledger;
use crate::service::SignerService;

/// Why a claimed registration authority was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaRefusal {
    /// The signer accepts no registration authority.
    NotConfigured,
    /// No certificate, or one that does not decode.
    Malformed,
    /// No path to an RA trust anchor.
    Untrusted,
    /// A certificate of the path is outside its validity period.
    Expired,
    /// The certificate lacks id-kp-cmcRA.
    MissingEku,
    /// The certificate is revoked.
    Revoked,
    /// Valid, but its CN names no configured authority.
    Unknown,
    /// The authority may not use this profile.
    ProfileOutOfScope,
    /// The authority may not act for this device name.
    NameOutOfScope,
}

/// The signer's RA configuration with its anchors loaded.
pub struct RaTrust {
    config: RaConfig,
    anchors: Vec<Anchor>,
}

impl RaTrust {
    /// The signer's RA trust, if configured: anchors read, and every authority's profiles
    /// exist and accept registration authorities.
    pub fn from_config(
        config: Option<&RaConfig>,
        policy: &hsm_est_policy::Policy,
    ) -> Result<Option<RaTrust>, String> {
        let Some(config) = config else {
            return Ok(None);
        };
        for a in &config.authorities {
            for name in &a.profiles {
                let allowed = policy
                    .profile(name)
                    .map_err(|_| {
                        format!(
                            "registration_authorities.authorities[{}].profiles: no profile {name:?}",
                            a.name
                        )
                    })?
                    .allow_registration_authority;
                if !allowed {
                    return Err(format!(
                        "registration_authorities.authorities[{}].profiles: profile {name} \
                         does not set allow_registration_authority",
                        a.name
                    ));
                }
            }
        }
        Self::load(config.clone()).map(Some)
    }

    /// Reads the trust anchors named by the configuration.
    fn load(config: RaConfig) -> Result<RaTrust, String> {
        let file = &config.trust_anchors;
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("{}: cannot read: {e}", file.display()))?;
        let anchors = hsm_est_pki::pem_certificates(&text)
            .map_err(|e| format!("{}: {e}", file.display()))?
            .iter()
            .map(|d| Anchor::from_der(d))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: {e}", file.display()))?;
        if anchors.is_empty() {
            return Err(format!("{}: no certificate", file.display()));
        }
        if let Some(a) = anchors.iter().find(|a| !cert::is_signing_ca(&a.cert)) {
            return Err(format!(
                "{}: {} is not a CA certificate",
                file.display(),
                a.cert.tbs_certificate.subject
            ));
        }
        Ok(RaTrust { config, anchors })
    }
}

/// A registration authority the signer accepted for this request.
pub struct VerifiedRa<'a> {
    pub authority: &'a AuthorityConfig,
    /// `ra:<name>:<sha256 of its certificate>`: the requester the audit records.
    pub requester: String,
}

impl SignerService {
    /// Verifies the RA claim of `input` and identifies the authority.
    pub(crate) fn verify_registration_authority(
        &self,
        input: &IssueInput,
    ) -> Result<VerifiedRa<'_>, SignerError> {
        let trust = self
            .registration_authorities
            .as_ref()
            .ok_or(RaRefusal::NotConfigured)?;
        if input.client_cert_der.is_empty() {
            return Err(RaRefusal::Malformed.into());
        }
        let now = unix_seconds(SystemTime::now());
        let leaf = path::validate(
            &input.client_cert_der,
            &input.client_chain,
            &trust.anchors,
            now,
        )
        .map_err(|e| match e {
            PathError::Malformed => RaRefusal::Malformed,
            PathError::Expired => RaRefusal::Expired,
            PathError::LeafIsCa | PathError::Untrusted => RaRefusal::Untrusted,
        })?;
        if trust.config.require_ra_eku && !path::has_extended_key_usage(&leaf, &oid::KP_CMC_RA) {
            return Err(RaRefusal::MissingEku.into());
        }
        let fingerprint = sha256(&input.client_cert_der);
        if trust.config.revoked_certificates.contains(&fingerprint)
            || self.revoked_here(&input.client_cert_der, &leaf)?
        {
            return Err(RaRefusal::Revoked.into());
        }
        let cn = name::common_name(&leaf.tbs_certificate.subject).unwrap_or_default();
        let authority = trust
            .config
            .authorities
            .iter()
            .find(|a| a.subject_cn == cn)
            .ok_or_else(|| {
                tracing::warn!(
                    "RA certificate {} (CN {}) validates but names no configured authority",
                    hex::encode(fingerprint),
                    log_safe(&cn)
                );
                RaRefusal::Unknown
            })?;
        Ok(VerifiedRa {
            authority,
            requester: format!("ra:{}:{}", authority.name, hex::encode(fingerprint)),
        })
    }

    /// An RA certificate one of this signer's CAs issued is revoked when the ledger says so.
    fn revoked_here(&self, der: &[u8], leaf: &x509_cert::Certificate) -> Result<bool, SignerError> {
        if !self
            .cas
            .iter()
            .any(|ca| cert::verify_certificate_signature(der, &ca.chain.spki).is_ok())
        {
            return Ok(false);
        }
        let serial = leaf.tbs_certificate.serial_number.as_bytes();
        Ok(self
            .ledger
            .certificate(serial)
            .map_err(|e| unavailable("ledger read", e))?
            .is_some_and(|c| ledger::is_revoked(&c)))
    }
}

impl VerifiedRa<'_> {
    /// The authority's scope: the profile and the device name the policy approved.
    pub(crate) fn in_scope(&self, profile: &Profile, approved: &Approved) -> Result<(), RaRefusal> {
        if !self.authority.profiles.contains(&profile.name) {
            return Err(RaRefusal::ProfileOutOfScope);
        }
        if !self.authority.cn_pattern.is_match(&approved.common_name) {
            return Err(RaRefusal::NameOutOfScope);
        }
        Ok(())
    }
}

impl From<RaRefusal> for SignerError {
    fn from(r: RaRefusal) -> Self {
        SignerError::RegistrationAuthority(r)
    }
}
