//! The dispatch edge: the permit table, the one mapping from the signer's domain errors to
//! stable wire codes, and the conversions between wire messages and domain types. Nothing
//! behind this module knows the protocol's vocabulary.

use hsm_est_policy::{Caller, DenialKind, Operation};
use hsm_est_proto::messages::msg_type;
use hsm_est_proto::{
    DeviceInfo, DeviceStatus, ErrorCode, IssueRequest, Request, Response, WireError,
};

use crate::error::{BindingRefusal, DeviceRefusal, SignerError};
use crate::issuance::IssueInput;
use crate::ledger::{DeviceQuery, DeviceRecord, DeviceState};
use crate::ra::RaRefusal;
use crate::service::SignerService;

/// Who sent a request: the role the socket's peer uid maps to, that uid, and the request id
/// from the frame header (the frontend's id for the HTTP request it serves).
#[derive(Debug, Clone, Copy)]
pub struct CallContext {
    pub caller: Caller,
    pub uid: u32,
    pub request_id: u64,
}

/// The permit table: the request types each role (each socket) may send. Anything else
/// closes the connection before the body is decoded (OpenSSH's `mon_dispatch` is the
/// model). The network-facing frontend may only ask for what EST needs: nothing that lists,
/// reads or changes devices or certificates. `docs/IPC.md` lists the same table.
pub const PERMITS: &[(Caller, &[u8])] = &[
    (
        Caller::Frontend,
        &[
            msg_type::PING,
            msg_type::CA_CHAIN,
            msg_type::CSR_ATTRS,
            msg_type::ISSUE,
            msg_type::CRL_GET,
            msg_type::OCSP_STATUS,
        ],
    ),
    (
        Caller::Operator,
        &[
            msg_type::PING,
            msg_type::CA_CHAIN,
            msg_type::CSR_ATTRS,
            msg_type::ISSUE,
            msg_type::DEVICE_LIST,
            msg_type::DEVICE_GET,
            msg_type::DEVICE_DELETE,
            msg_type::DEVICE_ALLOW,
            msg_type::DEVICE_REVOKE,
            msg_type::DEVICE_CERTIFICATES,
            msg_type::STATS,
            msg_type::EXPIRING_CERTIFICATES,
            msg_type::REVOKE,
            msg_type::CRL_GENERATE,
            msg_type::CRL_GET,
            msg_type::OCSP_STATUS,
        ],
    ),
    (
        Caller::Admin,
        &[
            msg_type::PING,
            msg_type::CA_CHAIN,
            msg_type::DEVICE_LIST,
            msg_type::DEVICE_GET,
            msg_type::DEVICE_DELETE,
            msg_type::DEVICE_ALLOW,
            msg_type::DEVICE_REVOKE,
            msg_type::DEVICE_CERTIFICATES,
            msg_type::STATS,
            msg_type::EXPIRING_CERTIFICATES,
            msg_type::REVOKE,
            msg_type::CRL_GENERATE,
            msg_type::CRL_GET,
        ],
    ),
];

/// Whether `caller` may send a request of type `msg`.
pub fn permitted(caller: Caller, msg: u8) -> bool {
    PERMITS
        .iter()
        .any(|(role, types)| *role == caller && types.contains(&msg))
}

impl SignerService {
    /// Answers one request. Never panics on request data; every path returns a response.
    pub fn handle(&self, ctx: CallContext, request: Request) -> Response {
        let result = match request {
            Request::Ping => Ok(self.pong()),
            Request::Stats => self.stats().map(Response::Stats),
            Request::ExpiringCertificates {
                within_days,
                after_not_after,
                after_serial,
                limit,
            } => {
                let after = (after_not_after >= 0).then_some((after_not_after, &after_serial[..]));
                self.expiring_certificates(within_days, after, limit)
                    .map(|(page, more)| Response::Certificates {
                        certificates: page.into_iter().map(certificate_info).collect(),
                        more,
                    })
            }
            Request::CaChain { profile } => self.ca_for(&profile).map(|ca| Response::CaChain {
                ca: ca.id.clone(),
                certs: self.cacerts(ca),
            }),
            Request::Issue(req) => self.issue(ctx, issue_input(req)).map(|c| Response::Issued {
                serial: c.serial,
                cert_der: c.der,
            }),
            Request::DeviceList {
                after,
                limit,
                filter,
            } => {
                let now = hsm_est_common::util::unix_seconds(std::time::SystemTime::now());
                let query = DeviceQuery {
                    after: &after,
                    limit,
                    status: filter.status.map(device_state),
                    cn_prefix: &filter.cn_prefix,
                    expiring_before: (filter.expiring_within_days > 0)
                        .then(|| now + i64::from(filter.expiring_within_days) * 86_400),
                };
                self.list_devices(&query)
                    .map(|(devices, more)| Response::Devices {
                        devices: devices.into_iter().map(device_info).collect(),
                        more,
                    })
            }
            Request::DeviceGet { cn } => self.device(&cn).map(|d| Response::Device(device_info(d))),
            Request::DeviceDelete {
                cn,
                keep_certificates,
                actor,
            } => self
                .delete_device(ctx, &cn, keep_certificates, &actor)
                .map(|count| Response::Revoked { count }),
            Request::DeviceAllow { cn, actor } => {
                self.allow_device(ctx, &cn, &actor).map(|()| Response::Done)
            }
            Request::DeviceCertificates {
                cn,
                after_serial,
                limit,
            } => self
                .device_certificates(&cn, &after_serial, limit)
                .map(|(page, more)| Response::Certificates {
                    certificates: page.into_iter().map(certificate_info).collect(),
                    more,
                }),
            Request::DeviceRevoke { cn, reason, actor } => self
                .revoke_device(ctx, &cn, reason, &actor)
                .map(|count| Response::Revoked { count }),
            Request::CsrAttrs { profile } => self
                .csr_attributes(&profile)
                .map(|der| Response::CsrAttrs { der }),
            Request::CrlGet { known_number, ca } => {
                self.latest_crl(&ca, known_number).map(|c| match c {
                    Some(der) => Response::Crl { der },
                    None => Response::Done,
                })
            }
            Request::OcspStatus { certs, nonce } => self
                .ocsp_status(&certs, nonce.as_deref())
                .map(|der| Response::Ocsp { der }),
            Request::CrlGenerate { actor, ca } => self
                .generate_crl(ctx, &actor, &ca)
                .map(|der| Response::Crl { der }),
            Request::Revoke {
                serial,
                reason,
                actor,
            } => self
                .revoke(ctx, &serial, reason, &actor)
                .map(|count| Response::Revoked { count }),
        };
        result.unwrap_or_else(|e| Response::Error(WireError::from(&e)))
    }
}

fn issue_input(req: IssueRequest) -> IssueInput {
    IssueInput {
        operation: operation(req.operation),
        profile: req.profile,
        requester: req.requester,
        client_ip: req.client_ip,
        csr_der: req.csr_der,
        client_cert_der: req.client_cert_der,
        client_chain: req.client_chain,
        tls_exporter: req.tls_exporter,
        registration_authority: req.registration_authority,
    }
}

fn operation(op: hsm_est_proto::Operation) -> Operation {
    match op {
        hsm_est_proto::Operation::Bootstrap => Operation::Bootstrap,
        hsm_est_proto::Operation::Enroll => Operation::Enroll,
        hsm_est_proto::Operation::Reenroll => Operation::Reenroll,
    }
}

fn certificate_info(c: crate::ledger::StoredCertificate) -> hsm_est_proto::CertificateInfo {
    hsm_est_proto::CertificateInfo {
        serial: c.record.serial,
        common_name: c.record.common_name,
        not_before: c.record.not_before,
        not_after: c.record.not_after,
        issued_at_ms: c.record.issued_at_ms,
        profile: c.record.profile,
        operation: c.record.operation,
        requester: c.record.requester,
        revoked_at_ms: c.revoked_at_ms,
        revocation_reason: c.revocation_reason,
        superseded_by: c.superseded_by,
    }
}

fn device_state(s: DeviceStatus) -> DeviceState {
    match s {
        DeviceStatus::BootstrapOnly => DeviceState::BootstrapOnly,
        DeviceStatus::Enrolled => DeviceState::Enrolled,
        DeviceStatus::Revoked => DeviceState::Revoked,
        DeviceStatus::Deleted => DeviceState::Deleted,
    }
}

fn device_info(d: DeviceRecord) -> DeviceInfo {
    DeviceInfo {
        cn: d.cn,
        status: match d.status {
            DeviceState::BootstrapOnly => DeviceStatus::BootstrapOnly,
            DeviceState::Enrolled => DeviceStatus::Enrolled,
            DeviceState::Revoked => DeviceStatus::Revoked,
            DeviceState::Deleted => DeviceStatus::Deleted,
        },
        first_enrolled_ms: d.first_enrolled_ms,
        last_enrolled_ms: d.last_enrolled_ms,
        last_ip: d.last_ip,
        current_serial: d.current_serial,
        current_not_after: d.current_not_after,
    }
}

/// The stable code, reason identifier and client-safe sentence of every refusal. The
/// numbers and reasons are part of the protocol (`docs/IPC.md`); change none of them.
impl From<&SignerError> for WireError {
    fn from(e: &SignerError) -> WireError {
        let (code, reason, message): (ErrorCode, &str, String) = match e {
            SignerError::CsrMalformed => (
                ErrorCode::CsrMalformed,
                "csr.der",
                "the request is not a valid DER PKCS#10 CSR".into(),
            ),
            SignerError::Denied(d) => (denial_code(d.kind), d.reason, d.message.clone()),
            SignerError::RegistrationAuthorityRefused { profile } => (
                ErrorCode::NotAllowed,
                "profile.registration_authority",
                format!("profile {profile} does not accept registration authorities"),
            ),
            SignerError::RegistrationAuthority(r) => {
                let (reason, message) = ra_refusal(*r);
                (ErrorCode::NotAllowed, reason, message.to_string())
            }
            SignerError::ChannelBinding(r) => {
                let (reason, message) = match r {
                    BindingRefusal::NotTls13 => (
                        "binding.tls13",
                        "channel binding requires TLS 1.3 (tls-exporter, RFC 9266); \
                         tls-unique is not offered",
                    ),
                    BindingRefusal::Missing => (
                        "binding.missing",
                        "the CSR's challengePassword must carry the channel binding",
                    ),
                    BindingRefusal::Mismatch => (
                        "binding.mismatch",
                        "the CSR's channel binding is not this connection's",
                    ),
                };
                (ErrorCode::BadRequest, reason, message.to_string())
            }
            SignerError::DeviceBusy => (
                ErrorCode::DeviceDuplicate,
                "device.in_progress",
                "another request for this device is in progress".into(),
            ),
            SignerError::Device(r) => {
                let (code, reason, message) = device_refusal(*r);
                (code, reason, message.to_string())
            }
            SignerError::QuotaExceeded(kind) => match kind {
                crate::quota::QuotaKind::NewDevices => (
                    ErrorCode::QuotaExceeded,
                    "quota.new_devices",
                    "the profile's hourly quota of new devices is used up".into(),
                ),
                crate::quota::QuotaKind::Rekeys => (
                    ErrorCode::QuotaExceeded,
                    "quota.rekeys",
                    "the profile's hourly quota of re-keys is used up".into(),
                ),
            },
            SignerError::DeviceNotFound => (
                ErrorCode::DeviceNotFound,
                "device.not_found",
                "no such device".into(),
            ),
            SignerError::DeviceRevoked => (
                ErrorCode::Revoked,
                "device.revoked",
                "the device is revoked; only `device allow` lets it bootstrap again".into(),
            ),
            SignerError::DeviceNotRevoked => (
                ErrorCode::NotAllowed,
                "device.not_revoked",
                "the device is not revoked; there is nothing to allow".into(),
            ),
            SignerError::NoCrl => (
                ErrorCode::CertificateNotFound,
                "crl.none",
                "no CRL has been issued yet".into(),
            ),
            SignerError::UnknownCa(_) => (
                ErrorCode::CertificateNotFound,
                "ca.unknown",
                "this signer holds no CA of that name".into(),
            ),
            SignerError::CertificateNotFound => (
                ErrorCode::CertificateNotFound,
                "cert.not_found",
                "no certificate with this serial number".into(),
            ),
            SignerError::AlreadyRevoked => (
                ErrorCode::Revoked,
                "cert.already_revoked",
                "the certificate is already revoked".into(),
            ),
            SignerError::Unavailable => (
                ErrorCode::Unavailable,
                "signer.unavailable",
                "the CA cannot issue right now; try again later".into(),
            ),
        };
        WireError::new(code, reason, message)
    }
}

/// The device rules' refusals: code, reason and sentence.
fn device_refusal(r: DeviceRefusal) -> (ErrorCode, &'static str, &'static str) {
    use DeviceRefusal as D;
    match r {
        D::AlreadyKnown => (
            ErrorCode::DeviceDuplicate,
            "device.exists",
            "device already enrolled",
        ),
        D::AlreadyEnrolled => (
            ErrorCode::DeviceDuplicate,
            "device.enrolled",
            "device already enrolled",
        ),
        D::DeviceRevoked => (
            ErrorCode::Revoked,
            "device.revoked",
            "the device is revoked",
        ),
        D::CertificateMismatch => (
            ErrorCode::NotAllowed,
            "enroll.cert_mismatch",
            "the client certificate does not belong to this device",
        ),
        D::NoCertificate => (
            ErrorCode::ReenrollRefused,
            "reenroll.no_cert",
            "re-enrolment needs the current certificate",
        ),
        D::NotCurrent => (
            ErrorCode::ReenrollRefused,
            "reenroll.not_current",
            "the certificate is not the device's current certificate",
        ),
        D::UnknownDevice => (
            ErrorCode::ReenrollRefused,
            "reenroll.unknown_device",
            "the device is not enrolled",
        ),
        D::NameMismatch => (
            ErrorCode::ReenrollRefused,
            "reenroll.name_mismatch",
            "subject and subjectAltName must equal those of the current certificate",
        ),
        D::CertificateMalformed => (
            ErrorCode::ReenrollRefused,
            "cert.malformed",
            "the client certificate is malformed",
        ),
        D::CertificateForeign => (
            ErrorCode::ReenrollRefused,
            "cert.foreign",
            "the client certificate was not issued by the CA of this label's profile",
        ),
        D::CertificateUnknown => (
            ErrorCode::ReenrollRefused,
            "cert.unknown",
            "the client certificate is not on record",
        ),
        D::CertificateRevoked => (
            ErrorCode::Revoked,
            "cert.revoked",
            "the client certificate is revoked",
        ),
        D::CertificateExpired => (
            ErrorCode::ReenrollRefused,
            "cert.expired",
            "the client certificate is not valid now",
        ),
        D::RekeyForbidden => (
            ErrorCode::ReenrollRefused,
            "reenroll.rekey",
            "this profile renews only with the key of the current certificate",
        ),
    }
}

fn denial_code(kind: DenialKind) -> ErrorCode {
    match kind {
        DenialKind::ProofOfPossession => ErrorCode::ProofOfPossession,
        DenialKind::Key => ErrorCode::KeyRejected,
        DenialKind::SignatureAlgorithm => ErrorCode::SignatureAlgorithmRejected,
        DenialKind::Subject => ErrorCode::SubjectRejected,
        DenialKind::SubjectAltName => ErrorCode::SanRejected,
        DenialKind::UnknownProfile => ErrorCode::UnknownProfile,
        DenialKind::NotAllowed => ErrorCode::NotAllowed,
    }
}

/// Stable reasons for a registration authority that was not accepted.
fn ra_refusal(r: RaRefusal) -> (&'static str, &'static str) {
    match r {
        RaRefusal::NotConfigured => ("ra.not_configured", "no registration authority is accepted"),
        RaRefusal::Malformed => (
            "ra.certificate",
            "the RA certificate is missing or malformed",
        ),
        RaRefusal::Untrusted => (
            "ra.untrusted",
            "the RA certificate does not chain to an RA trust anchor",
        ),
        RaRefusal::Expired => (
            "ra.expired",
            "a certificate of the RA's chain is outside its validity",
        ),
        RaRefusal::MissingEku => (
            "ra.eku",
            "the RA certificate lacks the id-kp-cmcRA extended key usage",
        ),
        RaRefusal::Revoked => ("ra.revoked", "the RA certificate is revoked"),
        RaRefusal::Unknown => (
            "ra.unknown",
            "the RA certificate names no configured registration authority",
        ),
        RaRefusal::ProfileOutOfScope => (
            "ra.scope_profile",
            "this registration authority may not use this profile",
        ),
        RaRefusal::NameOutOfScope => (
            "ra.scope_name",
            "this registration authority may not act for this device name",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_permit_table_names_every_role_once() {
        for caller in [Caller::Frontend, Caller::Operator, Caller::Admin] {
            assert_eq!(PERMITS.iter().filter(|(r, _)| *r == caller).count(), 1);
        }
        assert!(permitted(Caller::Operator, msg_type::REVOKE));
        assert!(permitted(Caller::Admin, msg_type::DEVICE_DELETE));
        assert!(!permitted(Caller::Admin, msg_type::ISSUE));
        assert!(!permitted(Caller::Frontend, msg_type::CRL_GENERATE));
        assert!(permitted(Caller::Frontend, msg_type::CRL_GET));
        assert!(permitted(Caller::Frontend, msg_type::OCSP_STATUS));
        assert!(permitted(Caller::Operator, msg_type::CRL_GENERATE));
        for device_power in [
            msg_type::REVOKE,
            msg_type::DEVICE_LIST,
            msg_type::DEVICE_GET,
            msg_type::DEVICE_DELETE,
        ] {
            assert!(!permitted(Caller::Frontend, device_power));
        }
        assert!(!permitted(Caller::Operator, 0x42));
    }

    #[test]
    fn every_device_refusal_has_its_own_reason() {
        use DeviceRefusal as D;
        let all = [
            D::AlreadyKnown,
            D::AlreadyEnrolled,
            D::DeviceRevoked,
            D::CertificateMismatch,
            D::NoCertificate,
            D::NotCurrent,
            D::UnknownDevice,
            D::NameMismatch,
            D::CertificateMalformed,
            D::CertificateForeign,
            D::CertificateUnknown,
            D::CertificateRevoked,
            D::CertificateExpired,
            D::RekeyForbidden,
        ];
        let mut reasons: Vec<String> = all
            .iter()
            .map(|r| WireError::from(&SignerError::Device(*r)).reason)
            .collect();
        reasons.sort();
        reasons.dedup();
        assert_eq!(reasons.len(), all.len());
    }
}
