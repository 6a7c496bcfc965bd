//! What the signer does with each request: the permit table, issuance (never a signing
//! oracle: the certificate is built here from policy), the device rules of the IQE guide,
//! and the operator actions. Every decision is recorded durably before it is answered.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ring::rand::{SecureRandom, SystemRandom};

use crate::ipc::messages::msg_type;
use crate::ipc::{DeviceStatus, ErrorCode, IssueRequest, Operation, Request, Response, WireError};
use crate::pki::cert::{self, CaSigner, LeafExtensions, TbsSpec};
use crate::pki::{csr, name, sha256};
use crate::policy::{Caller, Policy, Rejection};
use crate::util::{hex, log_safe, now_millis, unix_seconds};

use super::audit::AuditEvent;
use super::ca::CaChain;
use super::journal::Journal;
use super::ledger::{self, CertificateRecord, Ledger, LedgerWrite};

/// Serial numbers: 16 CSPRNG bytes, top bits `01` so the INTEGER is positive and always 16
/// octets (126 random bits; BR 7.1 asks for at least 64).
pub const SERIAL_LEN: usize = 16;
/// Attempts to find a serial that is not yet in the ledger before giving up.
const SERIAL_ATTEMPTS: usize = 8;

/// The permit table: which request types each caller may send. Anything else closes the
/// connection. Revocation is an operator action (`estctl`), not the network-facing process's.
pub fn permitted(caller: Caller, msg: u8) -> bool {
    match caller {
        Caller::Frontend => matches!(
            msg,
            msg_type::PING
                | msg_type::CA_CHAIN
                | msg_type::ISSUE
                | msg_type::DEVICE_LIST
                | msg_type::DEVICE_GET
                | msg_type::DEVICE_DELETE
                | msg_type::CSR_ATTRS
        ),
        Caller::Operator => matches!(
            msg,
            msg_type::PING
                | msg_type::CA_CHAIN
                | msg_type::ISSUE
                | msg_type::DEVICE_LIST
                | msg_type::DEVICE_GET
                | msg_type::DEVICE_DELETE
                | msg_type::REVOKE
                | msg_type::CSR_ATTRS
        ),
    }
}

/// Who sent a request.
#[derive(Debug, Clone, Copy)]
pub struct CallContext {
    pub caller: Caller,
    pub uid: u32,
    pub request_id: u64,
}

pub struct SignerService {
    pub policy: Policy,
    pub ca: CaChain,
    pub ledger: Arc<dyn Ledger>,
    pub journal: Journal,
    pub signer: Arc<dyn CaSigner + Send + Sync>,
    /// Device CNs with a decision in progress: makes check-then-issue atomic per device.
    claims: Mutex<HashSet<String>>,
    rng: SystemRandom,
}

/// Releases a device claim when the decision is over, however it ends.
struct Claim<'a> {
    set: &'a Mutex<HashSet<String>>,
    cn: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.set.lock() {
            s.remove(&self.cn);
        }
    }
}

fn wire(code: ErrorCode, reason: &str, message: impl Into<String>) -> WireError {
    WireError::new(code, reason, message)
}

fn unavailable() -> WireError {
    wire(
        ErrorCode::Unavailable,
        "signer.unavailable",
        "the CA cannot issue right now; try again later",
    )
}

impl From<Rejection> for WireError {
    fn from(r: Rejection) -> Self {
        WireError::new(r.code, r.reason, r.message)
    }
}

impl SignerService {
    pub fn new(
        policy: Policy,
        ca: CaChain,
        ledger: Arc<dyn Ledger>,
        journal: Journal,
        signer: Arc<dyn CaSigner + Send + Sync>,
    ) -> Self {
        SignerService {
            policy,
            ca,
            ledger,
            journal,
            signer,
            claims: Mutex::new(HashSet::new()),
            rng: SystemRandom::new(),
        }
    }

    fn claim(&self, cn: &str) -> Option<Claim<'_>> {
        let mut set = self.claims.lock().ok()?;
        if !set.insert(cn.to_string()) {
            return None;
        }
        Some(Claim {
            set: &self.claims,
            cn: cn.to_string(),
        })
    }

    /// Answers one request. Never panics on request data; every path returns a response.
    pub fn handle(&self, ctx: CallContext, request: Request) -> Response {
        let result = match request {
            Request::Ping => {
                let (commits, decisions) = self.journal.stats();
                Ok(Response::Pong {
                    version: format!("hsm-est {}", env!("CARGO_PKG_VERSION")),
                    ca_subject: self.ca.subject.to_string(),
                    commits,
                    decisions,
                })
            }
            Request::CaChain => Ok(Response::CaChain {
                certs: self.ca.chain.clone(),
            }),
            Request::Issue(req) => self.issue(ctx, req),
            Request::DeviceList { offset, limit } => self
                .ledger
                .list_devices(offset, limit)
                .map(|(total, devices)| Response::Devices { total, devices })
                .map_err(|e| {
                    log::error!("req={} device list: {e}", ctx.request_id);
                    unavailable()
                }),
            Request::DeviceGet { cn } => match self.ledger.device(&cn) {
                Ok(Some(d)) => Ok(Response::Device(d)),
                Ok(None) => Err(wire(
                    ErrorCode::DeviceNotFound,
                    "device.not_found",
                    "no such device",
                )),
                Err(e) => {
                    log::error!("req={} device get: {e}", ctx.request_id);
                    Err(unavailable())
                }
            },
            Request::DeviceDelete { cn, actor } => self.delete_device(ctx, &cn, &actor),
            Request::CsrAttrs { profile } => self
                .policy
                .profile(&profile)
                .map_err(WireError::from)
                .and_then(|p| {
                    p.csr_attributes().map_err(|e| {
                        log::error!("req={} csrattrs: {e}", ctx.request_id);
                        unavailable()
                    })
                })
                .map(|der| Response::CsrAttrs { der }),
            Request::Revoke {
                serial,
                reason,
                actor,
            } => self.revoke(ctx, &serial, reason, &actor),
        };
        result.unwrap_or_else(Response::Error)
    }

    fn actor(ctx: &CallContext, actor: &str) -> String {
        format!("{}:uid={}:{}", ctx.caller.as_str(), ctx.uid, actor)
    }

    fn delete_device(
        &self,
        ctx: CallContext,
        cn: &str,
        actor: &str,
    ) -> Result<Response, WireError> {
        let _claim = self.claim(cn).ok_or_else(|| {
            wire(
                ErrorCode::DeviceDuplicate,
                "device.in_progress",
                "another request for this device is in progress",
            )
        })?;
        let device = self.ledger.device(cn).map_err(|e| {
            log::error!("req={} device delete: {e}", ctx.request_id);
            unavailable()
        })?;
        let Some(device) = device else {
            return Err(wire(
                ErrorCode::DeviceNotFound,
                "device.not_found",
                "no such device",
            ));
        };
        let event = AuditEvent::new("device_deleted")
            .with("cn", cn)
            .with("status", device.status.as_str())
            .with("current_serial", hex(&device.current_serial))
            .with("actor", Self::actor(&ctx, actor))
            .with("request_id", ctx.request_id);
        self.journal
            .record(
                vec![event],
                vec![LedgerWrite::DeleteDevice {
                    common_name: cn.to_string(),
                }],
            )
            .map_err(|e| {
                log::error!("req={} device delete: {e}", ctx.request_id);
                unavailable()
            })?;
        log::info!(
            "req={} device {} deleted by {}",
            ctx.request_id,
            log_safe(cn),
            log_safe(&Self::actor(&ctx, actor))
        );
        Ok(Response::Done)
    }

    fn revoke(
        &self,
        ctx: CallContext,
        serial: &[u8],
        reason: u8,
        actor: &str,
    ) -> Result<Response, WireError> {
        let cert = self.ledger.certificate(serial).map_err(|e| {
            log::error!("req={} revoke: {e}", ctx.request_id);
            unavailable()
        })?;
        let Some(cert) = cert else {
            return Err(wire(
                ErrorCode::CertificateNotFound,
                "cert.not_found",
                "no certificate with this serial number",
            ));
        };
        if ledger::is_revoked(&cert) {
            return Err(wire(
                ErrorCode::Revoked,
                "cert.already_revoked",
                "the certificate is already revoked",
            ));
        }
        let now = now_millis();
        let event = AuditEvent::new("revoked")
            .with("serial", hex(serial))
            .with("cn", cert.record.common_name.as_str())
            .with("reason_code", reason)
            .with("actor", Self::actor(&ctx, actor))
            .with("request_id", ctx.request_id);
        self.journal
            .record(
                vec![event],
                vec![LedgerWrite::Revoke {
                    serial: serial.to_vec(),
                    at_ms: now,
                    reason,
                }],
            )
            .map_err(|e| {
                log::error!("req={} revoke: {e}", ctx.request_id);
                unavailable()
            })?;
        Ok(Response::Done)
    }

    /// Records a refusal (audit only) and returns it as the answer.
    fn refuse(
        &self,
        ctx: &CallContext,
        req: &IssueRequest,
        subject: &str,
        err: WireError,
    ) -> WireError {
        let event = AuditEvent::new("rejected")
            .with("reason", err.reason.as_str())
            .with("code", err.code.to_wire())
            .with("operation", req.operation.as_str())
            .with("profile", req.profile.as_str())
            .with("requester", req.requester.as_str())
            .with("client_ip", req.client_ip.as_str())
            .with("subject", subject)
            .with("caller", ctx.caller.as_str())
            .with("request_id", ctx.request_id);
        if let Err(e) = self.journal.record(vec![event], vec![]) {
            log::error!("req={} cannot record a rejection: {e}", ctx.request_id);
        }
        log::info!(
            "req={} {} refused: {} ({}) subject={:?} requester={}",
            ctx.request_id,
            req.operation.as_str(),
            err.reason,
            log_safe(&err.message),
            log_safe(subject),
            log_safe(&req.requester)
        );
        err
    }

    fn issue(&self, ctx: CallContext, req: IssueRequest) -> Result<Response, WireError> {
        let parsed = match csr::parse_csr(&req.csr_der) {
            Ok(p) => p,
            Err(e) => {
                log::debug!("req={} csr: {}", ctx.request_id, log_safe(&e.0));
                let err = wire(
                    ErrorCode::CsrMalformed,
                    "csr.der",
                    "the request is not a valid DER PKCS#10 CSR",
                );
                return Err(self.refuse(&ctx, &req, "", err));
            }
        };
        let requested_subject = parsed.request.info.subject.to_string();
        let profile = match self
            .policy
            .profile(&req.profile)
            .and_then(|p| p.permits(ctx.caller, req.operation).map(|_| p))
        {
            Ok(p) => p,
            Err(r) => return Err(self.refuse(&ctx, &req, &requested_subject, r.into())),
        };
        if req.registration_authority && !profile.allow_registration_authority {
            let err = wire(
                ErrorCode::NotAllowed,
                "profile.registration_authority",
                format!(
                    "profile {} does not accept registration authorities",
                    profile.name
                ),
            );
            return Err(self.refuse(&ctx, &req, &requested_subject, err));
        }
        let approved = match profile.evaluate(&parsed) {
            Ok(a) => a,
            Err(r) => return Err(self.refuse(&ctx, &req, &requested_subject, r.into())),
        };
        let cn = approved.common_name.clone();
        if !profile.track_devices {
            return self.issue_checked(ctx, &req, profile, &parsed, &approved, None);
        }
        let Some(_claim) = self.claim(&cn) else {
            let err = wire(
                ErrorCode::DeviceDuplicate,
                "device.in_progress",
                "another request for this device is in progress",
            );
            return Err(self.refuse(&ctx, &req, &requested_subject, err));
        };
        let device = self.ledger.device(&cn).map_err(|e| {
            log::error!("req={} ledger read: {e}", ctx.request_id);
            unavailable()
        })?;
        let new_status = match self.device_rules(&req, &approved, device.as_ref()) {
            Ok(s) => s,
            Err(e) => return Err(self.refuse(&ctx, &req, &requested_subject, e)),
        };
        self.issue_checked(ctx, &req, profile, &parsed, &approved, Some(new_status))
    }

    /// Builds, signs, verifies and records a certificate that policy and the device rules
    /// approved. The caller holds the device's claim when `new_status` is set.
    fn issue_checked(
        &self,
        ctx: CallContext,
        req: &IssueRequest,
        profile: &crate::policy::Profile,
        parsed: &csr::ParsedCsr,
        approved: &crate::policy::Approved,
        new_status: Option<DeviceStatus>,
    ) -> Result<Response, WireError> {
        let cn = &approved.common_name;

        let serial = self.fresh_serial(&ctx)?;
        let now = SystemTime::now();
        let not_before = now - Duration::from_secs(u64::from(profile.backdate_minutes) * 60);
        let wanted_after = now + Duration::from_secs(u64::from(profile.validity_days) * 86_400);
        // Never past the CA's own notAfter: the certificate is shortened rather than refused.
        let truncated = wanted_after > self.ca.not_after;
        let not_after = if truncated {
            self.ca.not_after
        } else {
            wanted_after
        };
        if not_after <= now {
            log::error!("req={} the CA certificate has expired", ctx.request_id);
            return Err(unavailable());
        }
        let spki = parsed.request.info.public_key.clone();
        let spki_der = parsed.spki_der();
        let extensions = cert::leaf_extensions(&LeafExtensions {
            key_usage: approved.key_usage,
            extended_key_usage: approved.extended_key_usage.clone(),
            subject_alt_names: approved.subject_alt_names.clone(),
            san_critical: approved.subject.0.is_empty(),
            subject_key_id: cert::key_identifier(&spki),
            authority_key_id: self.ca.key_id.clone(),
            crl_distribution_point: profile.crl_distribution_point.as_deref(),
            aia_ca_issuers: profile.aia_ca_issuers.as_deref(),
        })
        .map_err(|e| {
            log::error!("req={} extensions: {e}", ctx.request_id);
            unavailable()
        })?;
        let spec = TbsSpec {
            serial: serial.clone(),
            issuer: self.ca.subject.clone(),
            subject: approved.subject.clone(),
            spki,
            not_before,
            not_after,
            extensions,
            algorithm: self.signer.algorithm(),
        };
        let cert_der = cert::sign_certificate(spec, self.signer.as_ref()).map_err(|e| {
            log::error!("req={} signing failed: {e}", ctx.request_id);
            unavailable()
        })?;
        // Pre-issuance self-check: a certificate whose signature does not verify with the CA
        // public key is never stored or released.
        if let Err(e) = cert::verify_certificate_signature(&cert_der, &self.ca.spki) {
            log::error!(
                "req={} issued certificate failed verification: {e}",
                ctx.request_id
            );
            let _ = self.journal.record(
                vec![AuditEvent::new("sign_failed")
                    .with("serial", hex(&serial))
                    .with("detail", e)
                    .with("request_id", ctx.request_id)],
                vec![],
            );
            return Err(unavailable());
        }
        let subject_text = approved.subject.to_string();
        let sans: Vec<String> = approved
            .subject_alt_names
            .iter()
            .map(name::san_text)
            .collect();
        let spki_hash = sha256(&spki_der);
        let issued_at = now_millis();
        let record = CertificateRecord {
            serial: serial.clone(),
            subject: subject_text.clone(),
            common_name: cn.clone(),
            sans: sans.clone(),
            spki_sha256: spki_hash.to_vec(),
            not_before: unix_seconds(not_before),
            not_after: unix_seconds(not_after),
            profile: profile.name.clone(),
            operation: req.operation.as_str().to_string(),
            requester: req.requester.clone(),
            client_ip: req.client_ip.clone(),
            issued_at_ms: issued_at,
            der: cert_der.clone(),
        };
        let mut event = AuditEvent::new("issued")
            .with("serial", hex(&serial))
            .with("subject", subject_text.as_str())
            .with("sans", sans)
            .with("spki_sha256", hex(&spki_hash))
            .with("key", parsed.public_key.describe())
            .with("profile", profile.name.as_str())
            .with("operation", req.operation.as_str())
            .with("requester", req.requester.as_str())
            .with("client_ip", req.client_ip.as_str())
            .with("not_before", unix_seconds(not_before))
            .with("not_after", unix_seconds(not_after))
            .with(
                "device_status",
                new_status.map(DeviceStatus::as_str).unwrap_or("untracked"),
            )
            .with("caller", ctx.caller.as_str())
            .with("request_id", ctx.request_id);
        if truncated {
            event = event.with("validity_truncated_to_ca", true);
        }
        if !approved.ignored_extensions.is_empty() {
            event = event.with(
                "ignored_csr_extensions",
                approved.ignored_extensions.clone(),
            );
        }
        self.journal
            .record(
                vec![event],
                vec![LedgerWrite::Issue {
                    certificate: Box::new(record),
                    device_status: new_status,
                }],
            )
            .map_err(|e| {
                log::error!("req={} not issued: {e}", ctx.request_id);
                unavailable()
            })?;
        log::info!(
            "req={} issued serial={} cn={} op={} profile={} requester={} ip={}",
            ctx.request_id,
            hex(&serial),
            log_safe(cn),
            req.operation.as_str(),
            profile.name,
            log_safe(&req.requester),
            log_safe(&req.client_ip)
        );
        Ok(Response::Issued { serial, cert_der })
    }

    /// The device rules of the IQE guide, enforced here so that they hold even against a
    /// compromised frontend. Returns the device's status after the issuance.
    fn device_rules(
        &self,
        req: &IssueRequest,
        approved: &crate::policy::Approved,
        device: Option<&crate::ipc::DeviceInfo>,
    ) -> Result<DeviceStatus, WireError> {
        let revoked = || {
            wire(
                ErrorCode::Revoked,
                "device.revoked",
                "the device is revoked",
            )
        };
        match req.operation {
            Operation::Bootstrap => match device {
                None => Ok(DeviceStatus::BootstrapOnly),
                Some(_) => Err(wire(
                    ErrorCode::DeviceDuplicate,
                    "device.exists",
                    "device already enrolled",
                )),
            },
            Operation::Enroll => {
                if let Some(d) = device {
                    if d.status == DeviceStatus::Revoked {
                        return Err(revoked());
                    }
                    if d.status == DeviceStatus::Enrolled {
                        return Err(wire(
                            ErrorCode::DeviceDuplicate,
                            "device.enrolled",
                            "device already enrolled",
                        ));
                    }
                }
                if !req.client_cert_der.is_empty() {
                    // A device's bootstrap certificate enrols that same device only.
                    let presented = self.check_presented_certificate(req, approved)?;
                    match device {
                        Some(d) if d.current_serial == presented => {}
                        _ => {
                            return Err(wire(
                                ErrorCode::NotAllowed,
                                "enroll.cert_mismatch",
                                "the client certificate does not belong to this device",
                            ))
                        }
                    }
                }
                Ok(DeviceStatus::Enrolled)
            }
            Operation::Reenroll if req.registration_authority => {
                // An RA re-enrols a device it vouches for: the names must still be those of
                // the device's current certificate, taken from the ledger.
                let d = Self::live_device(device)?;
                let current = self
                    .ledger
                    .certificate(&d.current_serial)
                    .map_err(|e| {
                        log::error!("ledger read: {e}");
                        unavailable()
                    })?
                    .ok_or_else(unavailable)?;
                let cert =
                    cert::parse_certificate(&current.record.der).map_err(|_| unavailable())?;
                Self::same_names(&cert, approved)?;
                Ok(d.status)
            }
            Operation::Reenroll => {
                if req.client_cert_der.is_empty() {
                    return Err(wire(
                        ErrorCode::ReenrollRefused,
                        "reenroll.no_cert",
                        "re-enrolment needs the current certificate",
                    ));
                }
                let presented = self.check_presented_certificate(req, approved)?;
                let d = Self::live_device(device)?;
                if d.current_serial != presented {
                    return Err(wire(
                        ErrorCode::ReenrollRefused,
                        "reenroll.not_current",
                        "the certificate is not the device's current certificate",
                    ));
                }
                Ok(d.status)
            }
        }
    }

    /// Checks a presented client certificate: issued by this CA (signature verified here, not
    /// trusted from the frontend), on record, not revoked, not expired, and naming the same
    /// subject and SANs as the request (RFC 7030 §4.2.2, compared by meaning). Returns its
    /// serial.
    fn check_presented_certificate(
        &self,
        req: &IssueRequest,
        approved: &crate::policy::Approved,
    ) -> Result<Vec<u8>, WireError> {
        let refused = |reason: &str, msg: &str| wire(ErrorCode::ReenrollRefused, reason, msg);
        let presented = cert::parse_certificate(&req.client_cert_der)
            .map_err(|_| refused("cert.malformed", "the client certificate is malformed"))?;
        cert::verify_certificate_signature(&req.client_cert_der, &self.ca.spki).map_err(|_| {
            refused(
                "cert.foreign",
                "the client certificate was not issued by this CA",
            )
        })?;
        let serial = presented.tbs_certificate.serial_number.as_bytes().to_vec();
        let stored = self
            .ledger
            .certificate(&serial)
            .map_err(|e| {
                log::error!("ledger read: {e}");
                unavailable()
            })?
            .ok_or_else(|| refused("cert.unknown", "the client certificate is not on record"))?;
        if stored.record.der != req.client_cert_der {
            return Err(refused(
                "cert.unknown",
                "the client certificate is not on record",
            ));
        }
        if ledger::is_revoked(&stored) {
            return Err(wire(
                ErrorCode::Revoked,
                "cert.revoked",
                "the client certificate is revoked",
            ));
        }
        let now = unix_seconds(SystemTime::now());
        let (nb, na) = cert::validity_seconds(&presented);
        if now > na || now < nb {
            return Err(refused(
                "cert.expired",
                "the client certificate is not valid now",
            ));
        }
        Self::same_names(&presented, approved)?;
        Ok(serial)
    }

    /// RFC 7030 §4.2.2: a renewal keeps the subject and SANs of the current certificate,
    /// compared by meaning.
    fn same_names(
        current: &x509_cert::Certificate,
        approved: &crate::policy::Approved,
    ) -> Result<(), WireError> {
        if name::names_equal(&current.tbs_certificate.subject, &approved.subject)
            && name::sans_equal(
                &cert::subject_alt_names(current),
                &approved.subject_alt_names,
            )
        {
            Ok(())
        } else {
            Err(wire(
                ErrorCode::ReenrollRefused,
                "reenroll.name_mismatch",
                "subject and subjectAltName must equal those of the current certificate",
            ))
        }
    }

    /// The device a re-enrolment is for: it must exist and not be revoked.
    fn live_device(
        device: Option<&crate::ipc::DeviceInfo>,
    ) -> Result<&crate::ipc::DeviceInfo, WireError> {
        let Some(d) = device else {
            return Err(wire(
                ErrorCode::ReenrollRefused,
                "reenroll.unknown_device",
                "the device is not enrolled",
            ));
        };
        if d.status == DeviceStatus::Revoked {
            return Err(wire(
                ErrorCode::Revoked,
                "device.revoked",
                "the device is revoked",
            ));
        }
        Ok(d)
    }

    fn fresh_serial(&self, ctx: &CallContext) -> Result<Vec<u8>, WireError> {
        for _ in 0..SERIAL_ATTEMPTS {
            let mut serial = vec![0u8; SERIAL_LEN];
            self.rng.fill(&mut serial).map_err(|_| {
                log::error!("req={} no randomness", ctx.request_id);
                unavailable()
            })?;
            serial[0] = (serial[0] & 0x3f) | 0x40;
            match self.ledger.serial_exists(&serial) {
                Ok(false) => return Ok(serial),
                Ok(true) => {
                    log::warn!("req={} serial collision, drawing again", ctx.request_id);
                }
                Err(e) => {
                    log::error!("req={} ledger read: {e}", ctx.request_id);
                    return Err(unavailable());
                }
            }
        }
        Err(unavailable())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csrgen;
    use crate::ipc::Response;
    use crate::pki::keys::SignatureAlgorithm;
    use crate::signer::audit::AuditLog;
    use crate::signer::ledger::SqliteLedger;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};

    /// A software CA key: only for exercising the service's own checks without a token.
    struct SoftSigner {
        pair: EcdsaKeyPair,
        corrupt: bool,
    }

    impl CaSigner for SoftSigner {
        fn algorithm(&self) -> SignatureAlgorithm {
            SignatureAlgorithm::EcdsaSha256
        }
        fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
            let mut sig = self
                .pair
                .sign(&SystemRandom::new(), message)
                .map_err(|_| "sign".to_string())?
                .as_ref()
                .to_vec();
            if self.corrupt {
                let last = sig.len() - 1;
                sig[last] ^= 0x01;
            }
            Ok(sig)
        }
    }

    fn soft_ca(dir: &std::path::Path, corrupt: bool) -> SignerService {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let spki = csrgen::P256Key::generate().spki();
        let spki = spki::SubjectPublicKeyInfoOwned {
            subject_public_key: der::asn1::BitString::from_bytes(pair.public_key().as_ref())
                .unwrap(),
            ..spki
        };
        let good = SoftSigner {
            pair,
            corrupt: false,
        };
        let subject = name::parse_dn("CN=Soft Test CA").unwrap();
        let ski = cert::key_identifier(&spki);
        let now = SystemTime::now();
        let ca_der = cert::sign_certificate(
            TbsSpec {
                serial: vec![0x40, 1],
                issuer: subject.clone(),
                subject,
                spki,
                not_before: now - Duration::from_secs(60),
                not_after: now + Duration::from_secs(86_400 * 400),
                extensions: cert::ca_extensions(&ski, Some(&ski)).unwrap(),
                algorithm: SignatureAlgorithm::EcdsaSha256,
            },
            &good,
        )
        .unwrap();
        let ca = CaChain::from_chain(vec![ca_der]).unwrap();
        let ledger: Arc<dyn Ledger> = Arc::new(SqliteLedger::open(&dir.join("l.sqlite")).unwrap());
        let audit = AuditLog::open(&dir.join("a.jsonl"), None).unwrap();
        let (journal, _) = Journal::start(audit, Arc::clone(&ledger));
        let policy =
            Policy::load_dir(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policy"))
                .unwrap();
        SignerService::new(
            policy,
            ca,
            ledger,
            journal,
            Arc::new(SoftSigner { corrupt, ..good }),
        )
    }

    fn bootstrap(service: &SignerService, cn: &str) -> Response {
        service.handle(
            CallContext {
                caller: Caller::Frontend,
                uid: 0,
                request_id: 1,
            },
            Request::Issue(IssueRequest {
                operation: Operation::Bootstrap,
                profile: "iqe-bootstrap".into(),
                requester: "basic:t".into(),
                client_ip: "::1".into(),
                csr_der: csrgen::csr(&[(csrgen::CN, cn)]),
                client_cert_der: vec![],
                registration_authority: false,
            }),
        )
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("hsm-est-svc-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_certificate_whose_signature_does_not_verify_is_never_stored_or_released() {
        let dir = temp_dir("corrupt");
        let service = soft_ca(&dir, true);
        match bootstrap(&service, "pump-1") {
            Response::Error(e) => assert_eq!(e.code, ErrorCode::Unavailable),
            other => panic!("released {other:?}"),
        }
        assert!(service.ledger.device("pump-1").unwrap().is_none());
        let audit = std::fs::read_to_string(dir.join("a.jsonl")).unwrap();
        assert!(audit.contains("\"event\":\"sign_failed\""), "{audit}");
        assert!(!audit.contains("\"event\":\"issued\""), "{audit}");
    }

    #[test]
    fn the_same_service_with_a_sound_signer_issues() {
        let dir = temp_dir("sound");
        let service = soft_ca(&dir, false);
        assert!(matches!(
            bootstrap(&service, "pump-1"),
            Response::Issued { .. }
        ));
        assert!(service.ledger.device("pump-1").unwrap().is_some());
    }
}
