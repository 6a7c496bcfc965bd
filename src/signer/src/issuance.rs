//! The issuance pipeline, as small named steps: parse the CSR (once), apply policy, apply
//! the device rules under the device's claim, then build, sign, self-check and record. The
//! signer is not a signing oracle: the certificate is built here from the profile, and it
//! leaves only after its audit record and ledger row are durable.

use std::time::{Duration, SystemTime};

use base64ct::Encoding;
use hsm_est_common::util::{log_safe, now_millis, unix_seconds};
use hsm_est_pki::cert::{self, LeafExtensions, TbsSpec};
use hsm_est_pki::csr::{self, ParsedCsr};
use hsm_est_pki::{name, sha256};
use hsm_est_policy::{Approved, ChannelBinding, Operation, Profile, SupersededRule};
use hsm_est_proto::WireError;

use crate::audit::{AuditRecord, Issued, Rejected};
use crate::ca::Authority;
use crate::dispatch::CallContext;
use crate::error::{unavailable, BindingRefusal, SignerError};
use crate::ledger::{
    self, CertificateRecord, DeviceRecord, DeviceState, LedgerWrite, StoredCertificate,
};
use crate::service::SignerService;

/// What a caller asks the signer to issue, in domain terms.
#[derive(Debug, Clone)]
pub struct IssueInput {
    pub operation: Operation,
    /// The policy profile the frontend's label maps to.
    pub profile: String,
    /// Who authenticated: `basic:<user>`, `cert:<sha256 of the client certificate>`, …
    pub requester: String,
    pub client_ip: String,
    pub csr_der: Vec<u8>,
    /// The TLS client certificate the request came with (empty when none).
    pub client_cert_der: Vec<u8>,
    /// The certificates the TLS client sent after its own.
    pub client_chain: Vec<Vec<u8>>,
    /// The client connection's RFC 9266 tls-exporter value; empty over TLS 1.2.
    pub tls_exporter: Vec<u8>,
    /// The requester says it is a registration authority acting for the device.
    pub registration_authority: bool,
}

/// A certificate that is on record and may be released.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    pub serial: Vec<u8>,
    pub der: Vec<u8>,
}

/// Everything decided about one issuance before anything is signed.
struct Decision<'a> {
    ctx: CallContext,
    input: &'a IssueInput,
    profile: &'a Profile,
    /// The CA the profile names: it signs, and its name goes on record.
    ca: &'a Authority,
    parsed: &'a ParsedCsr,
    approved: &'a Approved,
    key: CertifiedKey,
    /// The device's state after the issuance; `None` for profiles without devices.
    new_state: Option<DeviceState>,
    /// The device's current certificate, which this one replaces.
    supersedes: Option<Superseded>,
    /// What became of the CSR's channel binding, for the audit record.
    channel_binding: Option<&'static str>,
}

/// The certificate a re-issue replaces, and whether the profile revokes it.
struct Superseded {
    serial: Vec<u8>,
    revoke: bool,
}

/// The SubjectPublicKeyInfo the certificate gets, re-encoded once from the parsed key (no
/// byte of the CSR's own SubjectPublicKeyInfo is signed as it came), and its SHA-256, the
/// ledger's key fingerprint.
struct CertifiedKey {
    spki: spki::SubjectPublicKeyInfoOwned,
    sha256: [u8; 32],
}

impl CertifiedKey {
    fn of(parsed: &ParsedCsr) -> Result<CertifiedKey, SignerError> {
        let spki = parsed
            .certified_spki()
            .map_err(|e| unavailable("public key", e))?;
        let der = der::Encode::to_der(&spki).map_err(|e| unavailable("public key", e))?;
        Ok(CertifiedKey {
            sha256: sha256(&der),
            spki,
        })
    }
}

/// A live device (not deleted) and its current certificate as recorded.
pub(crate) struct CurrentDevice {
    pub record: DeviceRecord,
    pub certificate: StoredCertificate,
}

/// The validity a profile gives, bounded by the CA's own notAfter.
struct Validity {
    not_before: SystemTime,
    not_after: SystemTime,
    /// The profile's validity would have outlived the CA certificate.
    truncated: bool,
}

impl SignerService {
    /// Decides and, if everything allows it, issues. Every refusal is audited.
    pub fn issue(
        &self,
        ctx: CallContext,
        mut input: IssueInput,
    ) -> Result<IssuedCertificate, SignerError> {
        // A registration authority is verified before anything else; the audit then names
        // the authority the signer accepted, not what the frontend said.
        let ra = if input.registration_authority {
            match self.verify_registration_authority(&input) {
                Ok(ra) => Some(ra),
                Err(e) => return Err(self.refuse(&ctx, &input, "", e)),
            }
        } else {
            None
        };
        if let Some(ra) = &ra {
            input.requester = ra.requester.clone();
        }
        let parsed = csr::parse_csr(&input.csr_der).map_err(|e| {
            tracing::debug!("csr: {}", log_safe(&e.0));
            self.refuse(&ctx, &input, "", SignerError::CsrMalformed)
        })?;
        let subject = parsed.request.info.subject.to_string();
        let refuse = |e| self.refuse(&ctx, &input, &subject, e);
        let (profile, approved) = self.apply_policy(ctx, &input, &parsed).map_err(refuse)?;
        if let Some(ra) = &ra {
            ra.in_scope(profile, &approved)
                .map_err(|r| refuse(r.into()))?;
        }
        let mut decision = Decision {
            ctx,
            input: &input,
            profile,
            ca: self.authority(profile)?,
            parsed: &parsed,
            approved: &approved,
            key: CertifiedKey::of(&parsed)?,
            new_state: None,
            supersedes: None,
            channel_binding: self
                .channel_binding(profile, &input, &parsed)
                .map_err(refuse)?,
        };
        if !profile.track_devices {
            return self.sign_and_record(&decision);
        }
        let _claim = self.claim(&approved.common_name).map_err(refuse)?;
        let device = self.current_device(&approved.common_name)?;
        let spki_sha256 = decision.key.sha256;
        if let Some(d) = &device {
            if let Some(earlier) = self.bootstrap_retry(&input, &spki_sha256, d, &decision.ca.id) {
                return self.redeliver(ctx, &input, earlier);
            }
        }
        decision.new_state = Some(
            self.device_rules(&input, &approved, device.as_ref())
                .map_err(refuse)?,
        );
        self.rekey_and_quotas(&input, profile, &spki_sha256, device.as_ref())
            .map_err(refuse)?;
        decision.supersedes = device.map(|d| Superseded {
            revoke: match profile.revoke_superseded {
                SupersededRule::Never => false,
                SupersededRule::Rekey => d.certificate.record.spki_sha256 != spki_sha256,
                SupersededRule::Always => true,
            } && !ledger::is_revoked(&d.certificate),
            serial: d.record.current_serial,
        });
        self.sign_and_record(&decision)
    }

    /// RFC 7030 §3.5 with RFC 9266: under `channel_binding: required` the CSR's
    /// challengePassword must be the base64 of this connection's TLS 1.3 exporter value, so
    /// a CSR cannot be replayed over another connection. Under `ignore` a binding value is
    /// not checked, and the audit record says so. Returns what the audit records.
    fn channel_binding(
        &self,
        profile: &Profile,
        input: &IssueInput,
        parsed: &ParsedCsr,
    ) -> Result<Option<&'static str>, SignerError> {
        let presented = parsed.challenge_password();
        if profile.channel_binding == ChannelBinding::Ignore {
            return Ok(presented.map(|_| "not_checked"));
        }
        if input.tls_exporter.is_empty() {
            return Err(SignerError::ChannelBinding(BindingRefusal::NotTls13));
        }
        let Some(Ok(value)) = presented else {
            return Err(SignerError::ChannelBinding(BindingRefusal::Missing));
        };
        let expected = base64ct::Base64::encode_string(&input.tls_exporter);
        // Not a secret: the client knows its own connection's exporter value.
        if value.trim() != expected {
            return Err(SignerError::ChannelBinding(BindingRefusal::Mismatch));
        }
        Ok(Some("verified"))
    }

    /// The device on record for `cn` with its current certificate, read once. A deleted
    /// device is history only: for the device rules its CN is unknown.
    fn current_device(&self, cn: &str) -> Result<Option<CurrentDevice>, SignerError> {
        let Some(record) = self
            .ledger
            .device(cn)
            .map_err(|e| unavailable("ledger read", e))?
            .filter(|d| d.status != DeviceState::Deleted)
        else {
            return Ok(None);
        };
        let certificate = self
            .ledger
            .certificate(&record.current_serial)
            .map_err(|e| unavailable("ledger read", e))?
            .ok_or_else(|| unavailable("ledger", "a device's current certificate is missing"))?;
        Ok(Some(CurrentDevice {
            record,
            certificate,
        }))
    }

    /// The profile for this caller and operation, and what it approves from the CSR.
    fn apply_policy(
        &self,
        ctx: CallContext,
        input: &IssueInput,
        parsed: &ParsedCsr,
    ) -> Result<(&Profile, Approved), SignerError> {
        let profile = self.policy.profile(&input.profile)?;
        profile.permits(ctx.caller, input.operation)?;
        if input.registration_authority && !profile.allow_registration_authority {
            return Err(SignerError::RegistrationAuthorityRefused {
                profile: profile.name.clone(),
            });
        }
        Ok((profile, profile.evaluate(parsed)?))
    }

    /// Builds, signs, verifies and records a certificate that policy and the device rules
    /// approved. The caller holds the device's claim when `new_state` is set.
    fn sign_and_record(&self, d: &Decision<'_>) -> Result<IssuedCertificate, SignerError> {
        let serial = self.fresh_serial()?;
        let validity = self.validity(d.profile, d.ca)?;
        let der = self.build_and_sign(d, &serial, &validity)?;
        self.self_check(&d.ctx, d.ca, &serial, &der)?;
        let issued = IssuedCertificate { serial, der };
        self.record_issued(d, &validity, &issued)?;
        Ok(issued)
    }

    fn validity(&self, profile: &Profile, ca: &Authority) -> Result<Validity, SignerError> {
        let now = SystemTime::now();
        let not_before = now - Duration::from_secs(u64::from(profile.backdate_minutes) * 60);
        let wanted_after = now + Duration::from_secs(u64::from(profile.validity_days) * 86_400);
        // Never past the CA's own notAfter: the certificate is shortened rather than refused.
        let truncated = wanted_after > ca.chain.not_after;
        let not_after = if truncated {
            ca.chain.not_after
        } else {
            wanted_after
        };
        if not_after <= now {
            return Err(unavailable("validity", "the CA certificate has expired"));
        }
        Ok(Validity {
            not_before,
            not_after,
            truncated,
        })
    }

    fn build_and_sign(
        &self,
        d: &Decision<'_>,
        serial: &[u8],
        validity: &Validity,
    ) -> Result<Vec<u8>, SignerError> {
        let (profile, approved) = (d.profile, d.approved);
        let spki = d.key.spki.clone();
        let extensions = cert::leaf_extensions(&LeafExtensions {
            key_usage: approved.key_usage,
            extended_key_usage: approved.extended_key_usage.clone(),
            subject_alt_names: approved.subject_alt_names.clone(),
            san_critical: approved.subject.0.is_empty(),
            subject_key_id: cert::key_identifier(&spki),
            authority_key_id: d.ca.chain.key_id.clone(),
            crl_distribution_point: profile.crl_distribution_point.as_deref(),
            aia_ca_issuers: profile.aia_ca_issuers.as_deref(),
            ocsp_url: profile.ocsp_url.as_deref(),
        })
        .map_err(|e| unavailable("extensions", e))?;
        let spec = TbsSpec {
            serial: serial.to_vec(),
            issuer: d.ca.chain.subject.clone(),
            subject: approved.subject.clone(),
            spki,
            not_before: validity.not_before,
            not_after: validity.not_after,
            extensions,
            algorithm: d.ca.signer.algorithm(),
        };
        cert::sign_certificate(spec, d.ca.signer.as_ref())
            .map_err(|e| unavailable("signing failed", e))
    }

    /// Pre-issuance self-check: a certificate whose signature does not verify with the CA
    /// public key is never stored or released.
    fn self_check(
        &self,
        ctx: &CallContext,
        ca: &Authority,
        serial: &[u8],
        der: &[u8],
    ) -> Result<(), SignerError> {
        let Err(e) = cert::verify_issued_signature(der, &ca.chain.key, ca.signer.algorithm())
        else {
            return Ok(());
        };
        let record = AuditRecord::SignFailed {
            serial: hex::encode(serial),
            detail: e.to_string(),
            request_id: ctx.request_id,
        };
        if let Err(j) = self.journal.record(vec![record], vec![]) {
            tracing::error!("cannot record a signing failure: {j}");
        }
        Err(unavailable("issued certificate failed verification", e))
    }

    /// Makes the certificate durable: its audit record and its ledger row (with the device's
    /// new state) in one group commit.
    fn record_issued(
        &self,
        d: &Decision<'_>,
        validity: &Validity,
        issued: &IssuedCertificate,
    ) -> Result<(), SignerError> {
        let Decision {
            ctx,
            input,
            profile,
            ca,
            parsed,
            approved,
            ref key,
            new_state,
            ref supersedes,
            channel_binding,
        } = *d;
        let cn = &approved.common_name;
        let subject = approved.subject.to_string();
        let sans: Vec<String> = approved
            .subject_alt_names
            .iter()
            .map(name::san_text)
            .collect();
        let spki_sha256 = key.sha256;
        let record = CertificateRecord {
            serial: issued.serial.clone(),
            subject: subject.clone(),
            common_name: cn.clone(),
            sans: sans.clone(),
            spki_sha256: spki_sha256.to_vec(),
            not_before: unix_seconds(validity.not_before),
            not_after: unix_seconds(validity.not_after),
            profile: profile.name.clone(),
            operation: input.operation.as_str().to_string(),
            requester: input.requester.clone(),
            client_ip: input.client_ip.clone(),
            issued_at_ms: now_millis(),
            der: issued.der.clone(),
            ca: ca.id.clone(),
        };
        let audit = AuditRecord::Issued(Box::new(Issued {
            serial: hex::encode(&issued.serial),
            subject,
            sans,
            spki_sha256: hex::encode(spki_sha256),
            key: parsed.public_key.describe(),
            profile: profile.name.clone(),
            operation: input.operation.as_str().to_string(),
            requester: input.requester.clone(),
            client_ip: input.client_ip.clone(),
            not_before: record.not_before,
            not_after: record.not_after,
            device_status: new_state
                .map(DeviceState::as_str)
                .unwrap_or("untracked")
                .to_string(),
            caller: ctx.caller.as_str().to_string(),
            request_id: ctx.request_id,
            validity_truncated_to_ca: validity.truncated,
            ignored_csr_extensions: approved.ignored_extensions.clone(),
            supersedes: supersedes.as_ref().map(|s| hex::encode(&s.serial)),
            channel_binding: channel_binding.map(str::to_string),
            ca: crate::audit::record::named_ca(&ca.id),
        }));
        let mut records = vec![audit];
        let mut writes = vec![LedgerWrite::Issue {
            certificate: Box::new(record),
            device_status: new_state,
            supersedes: supersedes.as_ref().map(|s| s.serial.clone()),
        }];
        // After the issue: the device already points at the new certificate, so revoking
        // the old one does not mark the device revoked.
        if let Some(s) = supersedes.as_ref().filter(|s| s.revoke) {
            let (record, write) = self.superseded_revocation(ctx, &s.serial, cn);
            records.push(record);
            writes.push(write);
        }
        let revoked = supersedes
            .as_ref()
            .filter(|s| s.revoke)
            .map(|s| s.serial.clone());
        self.journal
            .record(records, writes)
            .map_err(|e| unavailable("not issued", e))?;
        if let Some(serial) = &revoked {
            // The superseded certificate was revoked with this issuance.
            self.revocation_committed(std::iter::once(serial.as_slice()));
        }
        tracing::info!(
            "issued serial={} cn={} op={} profile={} requester={} ip={}",
            hex::encode(&issued.serial),
            log_safe(cn),
            input.operation.as_str(),
            profile.name,
            log_safe(&input.requester),
            log_safe(&input.client_ip)
        );
        Ok(())
    }

    /// Answers a bootstrap retry with the certificate already issued for that key, after
    /// recording the re-delivery.
    fn redeliver(
        &self,
        ctx: CallContext,
        input: &IssueInput,
        earlier: StoredCertificate,
    ) -> Result<IssuedCertificate, SignerError> {
        let record = AuditRecord::Redelivered {
            serial: hex::encode(&earlier.record.serial),
            cn: earlier.record.common_name.clone(),
            requester: input.requester.clone(),
            client_ip: input.client_ip.clone(),
            caller: ctx.caller.as_str().to_string(),
            request_id: ctx.request_id,
        };
        self.journal
            .record(vec![record], vec![])
            .map_err(|e| unavailable("not re-delivered", e))?;
        tracing::info!(
            "bootstrap retry: re-delivered serial={} cn={} requester={}",
            hex::encode(&earlier.record.serial),
            log_safe(&earlier.record.common_name),
            log_safe(&input.requester)
        );
        Ok(IssuedCertificate {
            serial: earlier.record.serial,
            der: earlier.record.der,
        })
    }

    /// Records a refusal (audit only) and returns it as the answer.
    fn refuse(
        &self,
        ctx: &CallContext,
        input: &IssueInput,
        subject: &str,
        err: SignerError,
    ) -> SignerError {
        let wire = WireError::from(&err);
        self.count_refusal(&wire.reason);
        let record = AuditRecord::Rejected(Box::new(Rejected {
            reason: wire.reason.clone(),
            code: wire.code.to_wire(),
            operation: input.operation.as_str().to_string(),
            profile: input.profile.clone(),
            requester: input.requester.clone(),
            client_ip: input.client_ip.clone(),
            subject: subject.to_string(),
            caller: ctx.caller.as_str().to_string(),
            request_id: ctx.request_id,
        }));
        if let Err(e) = self.journal.record(vec![record], vec![]) {
            tracing::error!("cannot record a rejection: {e}");
        }
        tracing::info!(
            "{} refused: {} ({}) subject={:?} requester={}",
            input.operation.as_str(),
            wire.reason,
            log_safe(&wire.message),
            log_safe(subject),
            log_safe(&input.requester)
        );
        err
    }
}
