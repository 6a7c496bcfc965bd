//! The closed message set. Each field has a maximum; each request type has one success
//! response type, and any request may instead be answered with `Error`.

use crate::codec::{BodyReader, BodyWriter, FrameError};

mod types;

pub use types::{
    revocation_reason_name, valid_revocation_reason, CertificateInfo, DeviceFilter, DeviceInfo,
    DeviceStatus, ErrorCode, IssueRequest, OcspCertId, OcspHash, Operation, Stats, WireError,
    REASON_LEDGER_UNAVAILABLE, REASON_TOKEN_UNAVAILABLE,
};

/// A DER certificate or CSR. Matches the frontend's 16 KiB body cap.
pub const MAX_DER_LEN: usize = 16 * 1024;
/// A CRL on the socket (about 400,000 entries). Only answers carry one; requests stay
/// within `MAX_FRAME_BODY`.
pub const MAX_CRL_LEN: usize = 16 * 1024 * 1024;
/// Certificates in one OCSP request.
pub const MAX_OCSP_CERTS: usize = 20;
/// An OCSP nonce extension's value: an OCTET STRING of at most 32 octets (RFC 8954) with
/// its two-octet header.
pub const MAX_OCSP_NONCE_LEN: usize = 34;
/// A signed OCSP response: the single responses, the signature and a responder
/// certificate.
pub const MAX_OCSP_RESPONSE_LEN: usize = 32 * 1024;
/// Profile names and device common names.
pub const MAX_NAME_LEN: usize = 64;
/// An authenticated requester identity such as `basic:iqe-gateway` or `cert:<sha256>`.
pub const MAX_IDENTITY_LEN: usize = 256;
/// A textual IPv4 or IPv6 address.
pub const MAX_IP_LEN: usize = 64;
/// RFC 5280 caps serial numbers at 20 octets.
pub const MAX_SERIAL_LEN: usize = 20;
/// Certificates in a CA chain answer.
pub const MAX_CHAIN_LEN: usize = 8;
/// Devices in one page of a device list.
pub const MAX_DEVICE_PAGE: u32 = 500;
/// A TLS exporter value (RFC 9266 uses 32 bytes).
pub const MAX_EXPORTER_LEN: usize = 64;
/// Certificates in one page of a device's history (each ≤ 1.5 KiB on the wire).
pub const MAX_CERTIFICATE_PAGE: u32 = 100;
/// Error reason identifiers and messages.
pub const MAX_REASON_LEN: usize = 64;
pub const MAX_MESSAGE_LEN: usize = 256;
/// A CsrAttrs (RFC 7030 §4.5.2) DER.
pub const MAX_CSR_ATTRS_LEN: usize = 4096;
/// Version strings and subjects in `Pong`.
pub const MAX_TEXT_LEN: usize = 1024;

pub mod msg_type {
    pub const PING: u8 = 0x01;
    pub const CA_CHAIN: u8 = 0x02;
    pub const ISSUE: u8 = 0x03;
    pub const DEVICE_LIST: u8 = 0x04;
    pub const DEVICE_GET: u8 = 0x05;
    pub const DEVICE_DELETE: u8 = 0x06;
    pub const REVOKE: u8 = 0x07;
    pub const CSR_ATTRS: u8 = 0x08;
    pub const DEVICE_ALLOW: u8 = 0x09;
    pub const DEVICE_REVOKE: u8 = 0x0a;
    pub const DEVICE_CERTIFICATES: u8 = 0x0b;
    pub const STATS: u8 = 0x0c;
    pub const EXPIRING_CERTIFICATES: u8 = 0x0d;
    pub const CRL_GENERATE: u8 = 0x0e;
    pub const CRL_GET: u8 = 0x0f;
    pub const OCSP_STATUS: u8 = 0x10;

    pub const PONG: u8 = 0x81;
    pub const CA_CHAIN_OK: u8 = 0x82;
    pub const ISSUED: u8 = 0x83;
    pub const DEVICES: u8 = 0x84;
    pub const DEVICE: u8 = 0x85;
    pub const DONE: u8 = 0x86;
    pub const CSR_ATTRS_OK: u8 = 0x87;
    pub const CRL: u8 = 0x8b;
    pub const OCSP: u8 = 0x8c;
    pub const REVOKED: u8 = 0x88;
    pub const CERTIFICATES: u8 = 0x89;
    pub const STATS_OK: u8 = 0x8a;
    pub const ERROR: u8 = 0xff;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Ping,
    /// The chain of the CA that issues under `profile` (empty: the default CA).
    CaChain {
        profile: String,
    },
    Issue(IssueRequest),
    /// A page of devices in CN order, after the CN `after` (empty: from the start),
    /// filtered. Paged by key, so every page costs the same however deep it is.
    DeviceList {
        after: String,
        limit: u32,
        filter: DeviceFilter,
    },
    DeviceGet {
        cn: String,
    },
    /// Marks a device deleted. Unless `keep_certificates`, its unexpired certificates are
    /// revoked (cessationOfOperation) in the same commit.
    DeviceDelete {
        cn: String,
        keep_certificates: bool,
        actor: String,
    },
    /// Lets a revoked device bootstrap again.
    DeviceAllow {
        cn: String,
        actor: String,
    },
    /// Revokes every unexpired certificate of a device.
    DeviceRevoke {
        cn: String,
        reason: u8,
        actor: String,
    },
    /// Counts for the overview and for metrics.
    Stats,
    /// Unrevoked certificates whose notAfter is within `within_days` from now, by
    /// (notAfter, serial) after the given cursor (`after_not_after` -1: from the first).
    ExpiringCertificates {
        within_days: u32,
        after_not_after: i64,
        after_serial: Vec<u8>,
        limit: u32,
    },
    /// A page of the certificates issued for a CN, by serial after `after_serial` (empty:
    /// from the first).
    DeviceCertificates {
        cn: String,
        after_serial: Vec<u8>,
        limit: u32,
    },
    /// Revokes one certificate; when it is a device's current certificate, all of that
    /// device's unexpired certificates.
    Revoke {
        serial: Vec<u8>,
        reason: u8,
        actor: String,
    },
    /// The CSR attributes (RFC 7030 §4.5) a profile asks clients for.
    CsrAttrs {
        profile: String,
    },
    /// Sign a new CRL now (the next CRL number), record it and publish it to the configured
    /// file; answered with the CRL.
    CrlGenerate {
        actor: String,
        /// The CA whose CRL (empty: the default CA).
        ca: String,
    },
    /// The CRL the signer issued last (read-only: what the frontend publishes), or `Done`
    /// when its number is `known_number` (the caller's copy is current; 0: none).
    CrlGet {
        known_number: u64,
        /// The CA whose CRL (empty: the default CA).
        ca: String,
    },
    /// The status of certificates as an OCSP client asked for them (read-only): the signer
    /// looks each up in its ledger and answers with a signed OCSPResponse. `nonce` is the
    /// request's nonce extension value, echoed in the signed response.
    OcspStatus {
        certs: Vec<OcspCertId>,
        nonce: Option<Vec<u8>>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// `commits` counts durable group commits and `decisions` the decisions they carried
    /// since the signer started: their ratio shows how well commits are shared.
    Pong {
        version: String,
        ca_subject: String,
        commits: u64,
        decisions: u64,
    },
    CaChain {
        /// The CA's name (signer.yaml), which its CRL is published under.
        ca: String,
        certs: Vec<Vec<u8>>,
    },
    Issued {
        serial: Vec<u8>,
        cert_der: Vec<u8>,
    },
    /// A page of devices; `more` says whether a page after the last one exists.
    Devices {
        devices: Vec<DeviceInfo>,
        more: bool,
    },
    Device(DeviceInfo),
    Done,
    Stats(Stats),
    /// A page of a device's certificate history; `more`: a page follows.
    Certificates {
        certificates: Vec<CertificateInfo>,
        more: bool,
    },
    /// How many certificates a delete or revocation revoked.
    Revoked {
        count: u32,
    },
    /// DER `CsrAttrs`; empty when the profile asks for nothing (HTTP 204).
    CsrAttrs {
        der: Vec<u8>,
    },
    /// A DER CRL.
    Crl {
        der: Vec<u8>,
    },
    /// A DER OCSPResponse (RFC 6960 §4.2.1), signed when successful.
    Ocsp {
        der: Vec<u8>,
    },
    Error(WireError),
}

impl Request {
    pub fn msg_type(&self) -> u8 {
        match self {
            Request::Ping => msg_type::PING,
            Request::CaChain { .. } => msg_type::CA_CHAIN,
            Request::Issue(_) => msg_type::ISSUE,
            Request::DeviceList { .. } => msg_type::DEVICE_LIST,
            Request::DeviceGet { .. } => msg_type::DEVICE_GET,
            Request::DeviceDelete { .. } => msg_type::DEVICE_DELETE,
            Request::DeviceAllow { .. } => msg_type::DEVICE_ALLOW,
            Request::DeviceRevoke { .. } => msg_type::DEVICE_REVOKE,
            Request::DeviceCertificates { .. } => msg_type::DEVICE_CERTIFICATES,
            Request::Stats => msg_type::STATS,
            Request::ExpiringCertificates { .. } => msg_type::EXPIRING_CERTIFICATES,
            Request::Revoke { .. } => msg_type::REVOKE,
            Request::CsrAttrs { .. } => msg_type::CSR_ATTRS,
            Request::CrlGenerate { .. } => msg_type::CRL_GENERATE,
            Request::CrlGet { .. } => msg_type::CRL_GET,
            Request::OcspStatus { .. } => msg_type::OCSP_STATUS,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::CaChain { .. } => "ca_chain",
            Request::Issue(_) => "issue",
            Request::DeviceList { .. } => "device_list",
            Request::DeviceGet { .. } => "device_get",
            Request::DeviceDelete { .. } => "device_delete",
            Request::DeviceAllow { .. } => "device_allow",
            Request::DeviceRevoke { .. } => "device_revoke",
            Request::DeviceCertificates { .. } => "device_certificates",
            Request::Stats => "stats",
            Request::ExpiringCertificates { .. } => "expiring_certificates",
            Request::Revoke { .. } => "revoke",
            Request::CsrAttrs { .. } => "csr_attrs",
            Request::CrlGenerate { .. } => "crl_generate",
            Request::CrlGet { .. } => "crl_get",
            Request::OcspStatus { .. } => "ocsp_status",
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        let mut w = BodyWriter::new();
        match self {
            Request::Ping | Request::Stats => {}
            Request::CaChain { profile } => {
                w.string("profile", MAX_NAME_LEN, profile)?;
            }
            Request::CrlGet { known_number, ca } => {
                w.u64(*known_number);
                w.string("ca", MAX_NAME_LEN, ca)?;
            }
            Request::Issue(r) => {
                w.u8(r.operation.to_wire());
                w.string("profile", MAX_NAME_LEN, &r.profile)?;
                w.string("requester", MAX_IDENTITY_LEN, &r.requester)?;
                w.string("client_ip", MAX_IP_LEN, &r.client_ip)?;
                w.bytes("csr", MAX_DER_LEN, &r.csr_der)?;
                w.bytes("client_cert", MAX_DER_LEN, &r.client_cert_der)?;
                if r.client_chain.len() > MAX_CHAIN_LEN {
                    return Err(FrameError::BadValue("client chain length"));
                }
                w.u16(r.client_chain.len() as u16);
                for c in &r.client_chain {
                    w.bytes("client_chain", MAX_DER_LEN, c)?;
                }
                w.bytes("tls_exporter", MAX_EXPORTER_LEN, &r.tls_exporter)?;
                w.u8(u8::from(r.registration_authority));
            }
            Request::DeviceList {
                after,
                limit,
                filter,
            } => {
                w.string("after", MAX_NAME_LEN, after)?;
                w.u32(*limit);
                w.u8(filter.status.map_or(0, DeviceStatus::to_wire));
                w.string("cn_prefix", MAX_NAME_LEN, &filter.cn_prefix)?;
                w.u32(filter.expiring_within_days);
            }
            Request::DeviceGet { cn } => {
                w.string("cn", MAX_NAME_LEN, cn)?;
            }
            Request::DeviceDelete {
                cn,
                keep_certificates,
                actor,
            } => {
                w.string("cn", MAX_NAME_LEN, cn)?;
                w.u8(u8::from(*keep_certificates));
                w.string("actor", MAX_IDENTITY_LEN, actor)?;
            }
            Request::DeviceAllow { cn, actor } => {
                w.string("cn", MAX_NAME_LEN, cn)?;
                w.string("actor", MAX_IDENTITY_LEN, actor)?;
            }
            Request::CrlGenerate { actor, ca } => {
                w.string("actor", MAX_IDENTITY_LEN, actor)?;
                w.string("ca", MAX_NAME_LEN, ca)?;
            }
            Request::DeviceRevoke { cn, reason, actor } => {
                w.string("cn", MAX_NAME_LEN, cn)?;
                w.u8(*reason);
                w.string("actor", MAX_IDENTITY_LEN, actor)?;
            }
            Request::ExpiringCertificates {
                within_days,
                after_not_after,
                after_serial,
                limit,
            } => {
                w.u32(*within_days).i64(*after_not_after);
                w.bytes("after_serial", MAX_SERIAL_LEN, after_serial)?;
                w.u32(*limit);
            }
            Request::DeviceCertificates {
                cn,
                after_serial,
                limit,
            } => {
                w.string("cn", MAX_NAME_LEN, cn)?;
                w.bytes("after_serial", MAX_SERIAL_LEN, after_serial)?;
                w.u32(*limit);
            }
            Request::Revoke {
                serial,
                reason,
                actor,
            } => {
                w.bytes("serial", MAX_SERIAL_LEN, serial)?;
                w.u8(*reason);
                w.string("actor", MAX_IDENTITY_LEN, actor)?;
            }
            Request::CsrAttrs { profile } => {
                w.string("profile", MAX_NAME_LEN, profile)?;
            }
            Request::OcspStatus { certs, nonce } => {
                if certs.is_empty() || certs.len() > MAX_OCSP_CERTS {
                    return Err(FrameError::BadValue("ocsp certificate count"));
                }
                w.u8(certs.len() as u8);
                for c in certs {
                    write_cert_id(&mut w, c)?;
                }
                match nonce {
                    None => {
                        w.u8(0);
                    }
                    Some(n) => {
                        w.u8(1);
                        w.bytes("nonce", MAX_OCSP_NONCE_LEN, n)?;
                    }
                }
            }
        }
        Ok(w.into_inner())
    }

    pub fn decode(msg_type: u8, body: &[u8]) -> Result<Self, FrameError> {
        let mut r = BodyReader::new(body);
        let req = match msg_type {
            msg_type::CSR_ATTRS => Request::CsrAttrs {
                profile: r.string("profile", MAX_NAME_LEN)?,
            },
            msg_type::PING => Request::Ping,
            msg_type::CA_CHAIN => Request::CaChain {
                profile: r.string("profile", MAX_NAME_LEN)?,
            },
            msg_type::STATS => Request::Stats,
            msg_type::ISSUE => Request::Issue(IssueRequest {
                operation: Operation::from_wire(r.u8()?)?,
                profile: r.string("profile", MAX_NAME_LEN)?,
                requester: r.string("requester", MAX_IDENTITY_LEN)?,
                client_ip: r.string("client_ip", MAX_IP_LEN)?,
                csr_der: r.bytes("csr", MAX_DER_LEN)?,
                client_cert_der: r.bytes("client_cert", MAX_DER_LEN)?,
                client_chain: client_chain(&mut r)?,
                tls_exporter: r.bytes("tls_exporter", MAX_EXPORTER_LEN)?,
                registration_authority: flag(&mut r, "registration_authority")?,
            }),
            msg_type::DEVICE_LIST => {
                let after = r.string("after", MAX_NAME_LEN)?;
                let limit = r.u32()?;
                if limit == 0 || limit > MAX_DEVICE_PAGE {
                    return Err(FrameError::BadValue("limit"));
                }
                let status = match r.u8()? {
                    0 => None,
                    v => Some(DeviceStatus::from_wire(v)?),
                };
                let filter = DeviceFilter {
                    status,
                    cn_prefix: r.string("cn_prefix", MAX_NAME_LEN)?,
                    expiring_within_days: r.u32()?,
                };
                Request::DeviceList {
                    after,
                    limit,
                    filter,
                }
            }
            msg_type::DEVICE_GET => Request::DeviceGet {
                cn: r.string("cn", MAX_NAME_LEN)?,
            },
            msg_type::DEVICE_DELETE => Request::DeviceDelete {
                cn: r.string("cn", MAX_NAME_LEN)?,
                keep_certificates: flag(&mut r, "keep_certificates")?,
                actor: r.string("actor", MAX_IDENTITY_LEN)?,
            },
            msg_type::CRL_GET => Request::CrlGet {
                known_number: r.u64()?,
                ca: r.string("ca", MAX_NAME_LEN)?,
            },
            msg_type::OCSP_STATUS => {
                let n = r.u8()? as usize;
                if n == 0 || n > MAX_OCSP_CERTS {
                    return Err(FrameError::BadValue("ocsp certificate count"));
                }
                let mut certs = Vec::with_capacity(n);
                for _ in 0..n {
                    certs.push(read_cert_id(&mut r)?);
                }
                let nonce = if flag(&mut r, "nonce")? {
                    Some(r.bytes("nonce", MAX_OCSP_NONCE_LEN)?)
                } else {
                    None
                };
                Request::OcspStatus { certs, nonce }
            }
            msg_type::CRL_GENERATE => Request::CrlGenerate {
                actor: r.string("actor", MAX_IDENTITY_LEN)?,
                ca: r.string("ca", MAX_NAME_LEN)?,
            },
            msg_type::DEVICE_ALLOW => Request::DeviceAllow {
                cn: r.string("cn", MAX_NAME_LEN)?,
                actor: r.string("actor", MAX_IDENTITY_LEN)?,
            },
            msg_type::DEVICE_REVOKE => Request::DeviceRevoke {
                cn: r.string("cn", MAX_NAME_LEN)?,
                reason: reason(&mut r)?,
                actor: r.string("actor", MAX_IDENTITY_LEN)?,
            },
            msg_type::EXPIRING_CERTIFICATES => {
                let within_days = r.u32()?;
                let after_not_after = r.i64()?;
                let after_serial = r.bytes("after_serial", MAX_SERIAL_LEN)?;
                let limit = r.u32()?;
                if limit == 0 || limit > MAX_CERTIFICATE_PAGE || within_days > 3650 {
                    return Err(FrameError::BadValue("limit"));
                }
                Request::ExpiringCertificates {
                    within_days,
                    after_not_after,
                    after_serial,
                    limit,
                }
            }
            msg_type::DEVICE_CERTIFICATES => {
                let cn = r.string("cn", MAX_NAME_LEN)?;
                let after_serial = r.bytes("after_serial", MAX_SERIAL_LEN)?;
                let limit = r.u32()?;
                if limit == 0 || limit > MAX_CERTIFICATE_PAGE {
                    return Err(FrameError::BadValue("limit"));
                }
                Request::DeviceCertificates {
                    cn,
                    after_serial,
                    limit,
                }
            }
            msg_type::REVOKE => Request::Revoke {
                serial: r.bytes("serial", MAX_SERIAL_LEN)?,
                reason: reason(&mut r)?,
                actor: r.string("actor", MAX_IDENTITY_LEN)?,
            },
            other => return Err(FrameError::UnknownType(other)),
        };
        r.finish()?;
        Ok(req)
    }
}

/// A boolean is one octet, 0 or 1; anything else is refused.
fn flag(r: &mut BodyReader<'_>, what: &'static str) -> Result<bool, FrameError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(FrameError::BadValue(what)),
    }
}

/// The certificates a TLS client sent after its own.
fn client_chain(r: &mut BodyReader<'_>) -> Result<Vec<Vec<u8>>, FrameError> {
    let n = r.u16()? as usize;
    if n > MAX_CHAIN_LEN {
        return Err(FrameError::BadValue("client chain length"));
    }
    let mut chain = Vec::with_capacity(n);
    for _ in 0..n {
        chain.push(r.bytes("client_chain", MAX_DER_LEN)?);
    }
    Ok(chain)
}

fn write_cert_id(w: &mut BodyWriter, c: &OcspCertId) -> Result<(), FrameError> {
    let len = c.hash.digest_len();
    if c.issuer_name_hash.len() != len || c.issuer_key_hash.len() != len {
        return Err(FrameError::BadValue("ocsp issuer hash"));
    }
    w.u8(c.hash.to_wire()).u8(u8::from(c.hash_params_null));
    w.bytes("issuer_name_hash", 64, &c.issuer_name_hash)?;
    w.bytes("issuer_key_hash", 64, &c.issuer_key_hash)?;
    w.bytes("serial", MAX_SERIAL_LEN, &c.serial)?;
    Ok(())
}

/// A CertID; each hash has its algorithm's length and the serial is not empty.
fn read_cert_id(r: &mut BodyReader<'_>) -> Result<OcspCertId, FrameError> {
    let hash = OcspHash::from_wire(r.u8()?)?;
    let hash_params_null = flag(r, "hash_params_null")?;
    let issuer_name_hash = r.bytes("issuer_name_hash", 64)?;
    let issuer_key_hash = r.bytes("issuer_key_hash", 64)?;
    if issuer_name_hash.len() != hash.digest_len() || issuer_key_hash.len() != hash.digest_len() {
        return Err(FrameError::BadValue("ocsp issuer hash"));
    }
    let serial = r.bytes("serial", MAX_SERIAL_LEN)?;
    if serial.is_empty() {
        return Err(FrameError::BadValue("serial"));
    }
    Ok(OcspCertId {
        hash,
        hash_params_null,
        issuer_name_hash,
        issuer_key_hash,
        serial,
    })
}

/// An RFC 5280 CRLReason an operator may give.
fn reason(r: &mut BodyReader<'_>) -> Result<u8, FrameError> {
    let reason = r.u8()?;
    if !valid_revocation_reason(reason) {
        return Err(FrameError::BadValue("reason"));
    }
    Ok(reason)
}

/// Counted things in a statistics answer (by status, by reason).
pub const MAX_STATS_ENTRIES: usize = 64;

fn write_counts(w: &mut BodyWriter, counts: &[(String, u64)]) -> Result<(), FrameError> {
    if counts.len() > MAX_STATS_ENTRIES {
        return Err(FrameError::BadValue("stats entries"));
    }
    w.u16(counts.len() as u16);
    for (k, v) in counts {
        w.string("stats key", MAX_REASON_LEN, k)?;
        w.u64(*v);
    }
    Ok(())
}

fn read_counts(r: &mut BodyReader<'_>) -> Result<Vec<(String, u64)>, FrameError> {
    let n = r.u16()? as usize;
    if n > MAX_STATS_ENTRIES {
        return Err(FrameError::BadValue("stats entries"));
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push((r.string("stats key", MAX_REASON_LEN)?, r.u64()?));
    }
    Ok(out)
}

fn write_stats(w: &mut BodyWriter, s: &Stats) -> Result<(), FrameError> {
    write_counts(w, &s.devices_by_status)?;
    w.u64(s.issued_last_24h).u64(s.expiring_within_30_days);
    write_counts(w, &s.refusals_by_reason)?;
    w.u64(s.commits).u64(s.decisions);
    w.i64(s.ca_not_after);
    w.u64(s.queue_depth).u64(s.max_batch);
    w.u64(s.token_signs).u64(s.token_sign_micros);
    w.u64(s.ocsp_responses)
        .u64(s.ocsp_cache_hits)
        .u64(s.ocsp_cached);
    Ok(())
}

fn read_stats(r: &mut BodyReader<'_>) -> Result<Stats, FrameError> {
    Ok(Stats {
        devices_by_status: read_counts(r)?,
        issued_last_24h: r.u64()?,
        expiring_within_30_days: r.u64()?,
        refusals_by_reason: read_counts(r)?,
        commits: r.u64()?,
        decisions: r.u64()?,
        ca_not_after: r.i64()?,
        queue_depth: r.u64()?,
        max_batch: r.u64()?,
        token_signs: r.u64()?,
        token_sign_micros: r.u64()?,
        ocsp_responses: r.u64()?,
        ocsp_cache_hits: r.u64()?,
        ocsp_cached: r.u64()?,
    })
}

fn write_certificate(w: &mut BodyWriter, c: &CertificateInfo) -> Result<(), FrameError> {
    w.bytes("serial", MAX_SERIAL_LEN, &c.serial)?;
    w.string("common_name", MAX_NAME_LEN, &c.common_name)?;
    w.i64(c.not_before).i64(c.not_after).i64(c.issued_at_ms);
    w.string("profile", MAX_NAME_LEN, &c.profile)?;
    w.string("operation", MAX_NAME_LEN, &c.operation)?;
    w.string("requester", MAX_IDENTITY_LEN, &c.requester)?;
    w.i64(c.revoked_at_ms.unwrap_or(-1));
    w.u8(c.revocation_reason.unwrap_or(0xff));
    w.bytes(
        "superseded_by",
        MAX_SERIAL_LEN,
        c.superseded_by.as_deref().unwrap_or(&[]),
    )?;
    Ok(())
}

fn read_certificate(r: &mut BodyReader<'_>) -> Result<CertificateInfo, FrameError> {
    let serial = r.bytes("serial", MAX_SERIAL_LEN)?;
    let common_name = r.string("common_name", MAX_NAME_LEN)?;
    let (not_before, not_after, issued_at_ms) = (r.i64()?, r.i64()?, r.i64()?);
    let profile = r.string("profile", MAX_NAME_LEN)?;
    let operation = r.string("operation", MAX_NAME_LEN)?;
    let requester = r.string("requester", MAX_IDENTITY_LEN)?;
    let revoked_at_ms = Some(r.i64()?).filter(|t| *t >= 0);
    let revocation_reason = Some(r.u8()?).filter(|v| *v != 0xff);
    let superseded_by = Some(r.bytes("superseded_by", MAX_SERIAL_LEN)?).filter(|s| !s.is_empty());
    Ok(CertificateInfo {
        serial,
        common_name,
        not_before,
        not_after,
        issued_at_ms,
        profile,
        operation,
        requester,
        revoked_at_ms,
        revocation_reason,
        superseded_by,
    })
}

fn write_device(w: &mut BodyWriter, d: &DeviceInfo) -> Result<(), FrameError> {
    w.string("cn", MAX_NAME_LEN, &d.cn)?;
    w.u8(d.status.to_wire());
    w.i64(d.first_enrolled_ms).i64(d.last_enrolled_ms);
    w.string("last_ip", MAX_IP_LEN, &d.last_ip)?;
    w.bytes("serial", MAX_SERIAL_LEN, &d.current_serial)?;
    w.i64(d.current_not_after);
    Ok(())
}

fn read_device(r: &mut BodyReader<'_>) -> Result<DeviceInfo, FrameError> {
    Ok(DeviceInfo {
        cn: r.string("cn", MAX_NAME_LEN)?,
        status: DeviceStatus::from_wire(r.u8()?)?,
        first_enrolled_ms: r.i64()?,
        last_enrolled_ms: r.i64()?,
        last_ip: r.string("last_ip", MAX_IP_LEN)?,
        current_serial: r.bytes("serial", MAX_SERIAL_LEN)?,
        current_not_after: r.i64()?,
    })
}

impl Response {
    pub fn msg_type(&self) -> u8 {
        match self {
            Response::Pong { .. } => msg_type::PONG,
            Response::CaChain { .. } => msg_type::CA_CHAIN_OK,
            Response::Issued { .. } => msg_type::ISSUED,
            Response::Devices { .. } => msg_type::DEVICES,
            Response::Device(_) => msg_type::DEVICE,
            Response::Done => msg_type::DONE,
            Response::Revoked { .. } => msg_type::REVOKED,
            Response::Certificates { .. } => msg_type::CERTIFICATES,
            Response::Stats(_) => msg_type::STATS_OK,
            Response::CsrAttrs { .. } => msg_type::CSR_ATTRS_OK,
            Response::Crl { .. } => msg_type::CRL,
            Response::Ocsp { .. } => msg_type::OCSP,
            Response::Error(_) => msg_type::ERROR,
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        let mut w = BodyWriter::new();
        match self {
            Response::Pong {
                version,
                ca_subject,
                commits,
                decisions,
            } => {
                w.string("version", MAX_TEXT_LEN, version)?;
                w.string("ca_subject", MAX_TEXT_LEN, ca_subject)?;
                w.u64(*commits).u64(*decisions);
            }
            Response::CaChain { ca, certs } => {
                if certs.is_empty() || certs.len() > MAX_CHAIN_LEN {
                    return Err(FrameError::BadValue("chain length"));
                }
                w.u16(certs.len() as u16);
                w.string("ca", MAX_NAME_LEN, ca)?;
                for c in certs {
                    w.bytes("cert", MAX_DER_LEN, c)?;
                }
            }
            Response::Issued { serial, cert_der } => {
                w.bytes("serial", MAX_SERIAL_LEN, serial)?;
                w.bytes("cert", MAX_DER_LEN, cert_der)?;
            }
            Response::Devices { devices, more } => {
                if devices.len() > MAX_DEVICE_PAGE as usize {
                    return Err(FrameError::BadValue("device count"));
                }
                w.u32(devices.len() as u32);
                for d in devices {
                    write_device(&mut w, d)?;
                }
                w.u8(u8::from(*more));
            }
            Response::Device(d) => write_device(&mut w, d)?,
            Response::Done => {}
            Response::Revoked { count } => {
                w.u32(*count);
            }
            Response::Stats(st) => write_stats(&mut w, st)?,
            Response::Certificates { certificates, more } => {
                if certificates.len() > MAX_CERTIFICATE_PAGE as usize {
                    return Err(FrameError::BadValue("certificate count"));
                }
                w.u32(certificates.len() as u32);
                for c in certificates {
                    write_certificate(&mut w, c)?;
                }
                w.u8(u8::from(*more));
            }
            Response::CsrAttrs { der } => {
                w.bytes("csr_attrs", MAX_CSR_ATTRS_LEN, der)?;
            }
            Response::Crl { der } => {
                w.bytes("crl", MAX_CRL_LEN, der)?;
            }
            Response::Ocsp { der } => {
                w.bytes("ocsp", MAX_OCSP_RESPONSE_LEN, der)?;
            }
            Response::Error(e) => {
                w.u16(e.code.to_wire());
                w.string("reason", MAX_REASON_LEN, &e.reason)?;
                w.string("message", MAX_MESSAGE_LEN, &e.message)?;
            }
        }
        Ok(w.into_inner())
    }

    pub fn decode(msg_type: u8, body: &[u8]) -> Result<Self, FrameError> {
        let mut r = BodyReader::new(body);
        let resp = match msg_type {
            msg_type::PONG => Response::Pong {
                version: r.string("version", MAX_TEXT_LEN)?,
                ca_subject: r.string("ca_subject", MAX_TEXT_LEN)?,
                commits: r.u64()?,
                decisions: r.u64()?,
            },
            msg_type::CA_CHAIN_OK => {
                let n = r.u16()? as usize;
                if n == 0 || n > MAX_CHAIN_LEN {
                    return Err(FrameError::BadValue("chain length"));
                }
                let ca = r.string("ca", MAX_NAME_LEN)?;
                let mut certs = Vec::with_capacity(n);
                for _ in 0..n {
                    certs.push(r.bytes("cert", MAX_DER_LEN)?);
                }
                Response::CaChain { ca, certs }
            }
            msg_type::ISSUED => Response::Issued {
                serial: r.bytes("serial", MAX_SERIAL_LEN)?,
                cert_der: r.bytes("cert", MAX_DER_LEN)?,
            },
            msg_type::DEVICES => {
                let n = r.u32()?;
                if n > MAX_DEVICE_PAGE {
                    return Err(FrameError::BadValue("device count"));
                }
                let mut devices = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    devices.push(read_device(&mut r)?);
                }
                Response::Devices {
                    devices,
                    more: flag(&mut r, "more")?,
                }
            }
            msg_type::DEVICE => Response::Device(read_device(&mut r)?),
            msg_type::DONE => Response::Done,
            msg_type::REVOKED => Response::Revoked { count: r.u32()? },
            msg_type::STATS_OK => Response::Stats(read_stats(&mut r)?),
            msg_type::CERTIFICATES => {
                let n = r.u32()?;
                if n > MAX_CERTIFICATE_PAGE {
                    return Err(FrameError::BadValue("certificate count"));
                }
                let mut certificates = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    certificates.push(read_certificate(&mut r)?);
                }
                Response::Certificates {
                    certificates,
                    more: flag(&mut r, "more")?,
                }
            }
            msg_type::CSR_ATTRS_OK => Response::CsrAttrs {
                der: r.bytes("csr_attrs", MAX_CSR_ATTRS_LEN)?,
            },
            msg_type::CRL => Response::Crl {
                der: r.bytes("crl", MAX_CRL_LEN)?,
            },
            msg_type::OCSP => Response::Ocsp {
                der: r.bytes("ocsp", MAX_OCSP_RESPONSE_LEN)?,
            },
            msg_type::ERROR => Response::Error(WireError {
                code: ErrorCode::from_wire(r.u16()?)?,
                reason: r.string("reason", MAX_REASON_LEN)?,
                message: r.string("message", MAX_MESSAGE_LEN)?,
            }),
            other => return Err(FrameError::UnknownType(other)),
        };
        r.finish()?;
        Ok(resp)
    }
}

#[cfg(test)]
mod tests;
