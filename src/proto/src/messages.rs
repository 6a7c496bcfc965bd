//! The closed message set. Each field has a maximum; each request type has one success
//! response type, and any request may instead be answered with `Error`.

use std::fmt;

use super::codec::{BodyReader, BodyWriter, FrameError};

/// A DER certificate or CSR. Matches the frontend's 16 KiB body cap.
pub const MAX_DER_LEN: usize = 16 * 1024;
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

    pub const PONG: u8 = 0x81;
    pub const CA_CHAIN_OK: u8 = 0x82;
    pub const ISSUED: u8 = 0x83;
    pub const DEVICES: u8 = 0x84;
    pub const DEVICE: u8 = 0x85;
    pub const DONE: u8 = 0x86;
    pub const CSR_ATTRS_OK: u8 = 0x87;
    pub const ERROR: u8 = 0xff;
}

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

    fn to_wire(self) -> u8 {
        match self {
            Operation::Bootstrap => 1,
            Operation::Enroll => 2,
            Operation::Reenroll => 3,
        }
    }

    fn from_wire(v: u8) -> Result<Self, FrameError> {
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
    Revoked,
}

impl DeviceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::BootstrapOnly => "bootstrap_only",
            DeviceStatus::Enrolled => "enrolled",
            DeviceStatus::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "bootstrap_only" => Some(DeviceStatus::BootstrapOnly),
            "enrolled" => Some(DeviceStatus::Enrolled),
            "revoked" => Some(DeviceStatus::Revoked),
            _ => None,
        }
    }

    fn to_wire(self) -> u8 {
        match self {
            DeviceStatus::BootstrapOnly => 1,
            DeviceStatus::Enrolled => 2,
            DeviceStatus::Revoked => 3,
        }
    }

    fn from_wire(v: u8) -> Result<Self, FrameError> {
        match v {
            1 => Ok(DeviceStatus::BootstrapOnly),
            2 => Ok(DeviceStatus::Enrolled),
            3 => Ok(DeviceStatus::Revoked),
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
    /// The requester is a registration authority (a gateway authenticated by a certificate
    /// under an RA trust anchor) acting on the device's behalf (RFC 7030 §3.7).
    pub registration_authority: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Ping,
    CaChain,
    Issue(IssueRequest),
    DeviceList {
        offset: u32,
        limit: u32,
    },
    DeviceGet {
        cn: String,
    },
    DeviceDelete {
        cn: String,
        actor: String,
    },
    Revoke {
        serial: Vec<u8>,
        reason: u8,
        actor: String,
    },
    /// The CSR attributes (RFC 7030 §4.5) a profile asks clients for.
    CsrAttrs {
        profile: String,
    },
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
        certs: Vec<Vec<u8>>,
    },
    Issued {
        serial: Vec<u8>,
        cert_der: Vec<u8>,
    },
    Devices {
        total: u32,
        devices: Vec<DeviceInfo>,
    },
    Device(DeviceInfo),
    Done,
    /// DER `CsrAttrs`; empty when the profile asks for nothing (HTTP 204).
    CsrAttrs {
        der: Vec<u8>,
    },
    Error(WireError),
}

/// The RFC 5280 CRLReason values we accept (0–6, 8–10; 7 is unused).
pub fn valid_revocation_reason(reason: u8) -> bool {
    matches!(reason, 0..=6 | 8..=10)
}

impl Request {
    pub fn msg_type(&self) -> u8 {
        match self {
            Request::Ping => msg_type::PING,
            Request::CaChain => msg_type::CA_CHAIN,
            Request::Issue(_) => msg_type::ISSUE,
            Request::DeviceList { .. } => msg_type::DEVICE_LIST,
            Request::DeviceGet { .. } => msg_type::DEVICE_GET,
            Request::DeviceDelete { .. } => msg_type::DEVICE_DELETE,
            Request::Revoke { .. } => msg_type::REVOKE,
            Request::CsrAttrs { .. } => msg_type::CSR_ATTRS,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::CaChain => "ca_chain",
            Request::Issue(_) => "issue",
            Request::DeviceList { .. } => "device_list",
            Request::DeviceGet { .. } => "device_get",
            Request::DeviceDelete { .. } => "device_delete",
            Request::Revoke { .. } => "revoke",
            Request::CsrAttrs { .. } => "csr_attrs",
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        let mut w = BodyWriter::new();
        match self {
            Request::Ping | Request::CaChain => {}
            Request::Issue(r) => {
                w.u8(r.operation.to_wire());
                w.string("profile", MAX_NAME_LEN, &r.profile)?;
                w.string("requester", MAX_IDENTITY_LEN, &r.requester)?;
                w.string("client_ip", MAX_IP_LEN, &r.client_ip)?;
                w.bytes("csr", MAX_DER_LEN, &r.csr_der)?;
                w.bytes("client_cert", MAX_DER_LEN, &r.client_cert_der)?;
                w.u8(u8::from(r.registration_authority));
            }
            Request::DeviceList { offset, limit } => {
                w.u32(*offset).u32(*limit);
            }
            Request::DeviceGet { cn } => {
                w.string("cn", MAX_NAME_LEN, cn)?;
            }
            Request::DeviceDelete { cn, actor } => {
                w.string("cn", MAX_NAME_LEN, cn)?;
                w.string("actor", MAX_IDENTITY_LEN, actor)?;
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
            msg_type::CA_CHAIN => Request::CaChain,
            msg_type::ISSUE => Request::Issue(IssueRequest {
                operation: Operation::from_wire(r.u8()?)?,
                profile: r.string("profile", MAX_NAME_LEN)?,
                requester: r.string("requester", MAX_IDENTITY_LEN)?,
                client_ip: r.string("client_ip", MAX_IP_LEN)?,
                csr_der: r.bytes("csr", MAX_DER_LEN)?,
                client_cert_der: r.bytes("client_cert", MAX_DER_LEN)?,
                registration_authority: match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(FrameError::BadValue("registration_authority")),
                },
            }),
            msg_type::DEVICE_LIST => {
                let offset = r.u32()?;
                let limit = r.u32()?;
                if limit == 0 || limit > MAX_DEVICE_PAGE {
                    return Err(FrameError::BadValue("limit"));
                }
                Request::DeviceList { offset, limit }
            }
            msg_type::DEVICE_GET => Request::DeviceGet {
                cn: r.string("cn", MAX_NAME_LEN)?,
            },
            msg_type::DEVICE_DELETE => Request::DeviceDelete {
                cn: r.string("cn", MAX_NAME_LEN)?,
                actor: r.string("actor", MAX_IDENTITY_LEN)?,
            },
            msg_type::REVOKE => {
                let serial = r.bytes("serial", MAX_SERIAL_LEN)?;
                let reason = r.u8()?;
                if !valid_revocation_reason(reason) {
                    return Err(FrameError::BadValue("reason"));
                }
                Request::Revoke {
                    serial,
                    reason,
                    actor: r.string("actor", MAX_IDENTITY_LEN)?,
                }
            }
            other => return Err(FrameError::UnknownType(other)),
        };
        r.finish()?;
        Ok(req)
    }
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
            Response::CsrAttrs { .. } => msg_type::CSR_ATTRS_OK,
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
            Response::CaChain { certs } => {
                if certs.is_empty() || certs.len() > MAX_CHAIN_LEN {
                    return Err(FrameError::BadValue("chain length"));
                }
                w.u16(certs.len() as u16);
                for c in certs {
                    w.bytes("cert", MAX_DER_LEN, c)?;
                }
            }
            Response::Issued { serial, cert_der } => {
                w.bytes("serial", MAX_SERIAL_LEN, serial)?;
                w.bytes("cert", MAX_DER_LEN, cert_der)?;
            }
            Response::Devices { total, devices } => {
                if devices.len() > MAX_DEVICE_PAGE as usize {
                    return Err(FrameError::BadValue("device count"));
                }
                w.u32(*total).u32(devices.len() as u32);
                for d in devices {
                    write_device(&mut w, d)?;
                }
            }
            Response::Device(d) => write_device(&mut w, d)?,
            Response::Done => {}
            Response::CsrAttrs { der } => {
                w.bytes("csr_attrs", MAX_CSR_ATTRS_LEN, der)?;
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
                let mut certs = Vec::with_capacity(n);
                for _ in 0..n {
                    certs.push(r.bytes("cert", MAX_DER_LEN)?);
                }
                Response::CaChain { certs }
            }
            msg_type::ISSUED => Response::Issued {
                serial: r.bytes("serial", MAX_SERIAL_LEN)?,
                cert_der: r.bytes("cert", MAX_DER_LEN)?,
            },
            msg_type::DEVICES => {
                let total = r.u32()?;
                let n = r.u32()?;
                if n > MAX_DEVICE_PAGE {
                    return Err(FrameError::BadValue("device count"));
                }
                let mut devices = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    devices.push(read_device(&mut r)?);
                }
                Response::Devices { total, devices }
            }
            msg_type::DEVICE => Response::Device(read_device(&mut r)?),
            msg_type::DONE => Response::Done,
            msg_type::CSR_ATTRS_OK => Response::CsrAttrs {
                der: r.bytes("csr_attrs", MAX_CSR_ATTRS_LEN)?,
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
mod tests {
    use super::*;

    fn round_trip_request(req: Request) {
        let body = req.encode().unwrap();
        assert_eq!(Request::decode(req.msg_type(), &body).unwrap(), req);
        let mut longer = body.clone();
        longer.push(0);
        assert!(matches!(
            Request::decode(req.msg_type(), &longer),
            Err(FrameError::TrailingData(1))
        ));
    }

    #[test]
    fn requests_round_trip_and_reject_trailing_bytes() {
        round_trip_request(Request::Ping);
        round_trip_request(Request::CaChain);
        round_trip_request(Request::Issue(IssueRequest {
            operation: Operation::Reenroll,
            profile: "iqe-pump".into(),
            requester: "basic:iqe".into(),
            client_ip: "::1".into(),
            csr_der: vec![0x30, 0x00],
            client_cert_der: vec![],
            registration_authority: false,
        }));
        round_trip_request(Request::DeviceList {
            offset: 3,
            limit: 100,
        });
        round_trip_request(Request::DeviceGet { cn: "a".into() });
        round_trip_request(Request::DeviceDelete {
            cn: "a".into(),
            actor: "uid:0".into(),
        });
        round_trip_request(Request::CsrAttrs {
            profile: "iqe-pump".into(),
        });
        round_trip_request(Request::Revoke {
            serial: vec![1, 2],
            reason: 1,
            actor: "uid:0".into(),
        });
    }

    #[test]
    fn request_decode_rejects_bad_values() {
        assert!(matches!(
            Request::decode(0x42, &[]),
            Err(FrameError::UnknownType(0x42))
        ));
        let mut body = Request::Issue(IssueRequest {
            operation: Operation::Enroll,
            profile: "p".into(),
            requester: "r".into(),
            client_ip: "i".into(),
            csr_der: vec![],
            client_cert_der: vec![],
            registration_authority: false,
        })
        .encode()
        .unwrap();
        body[0] = 9;
        assert!(matches!(
            Request::decode(msg_type::ISSUE, &body),
            Err(FrameError::BadValue("operation"))
        ));
        let list = Request::DeviceList {
            offset: 0,
            limit: MAX_DEVICE_PAGE + 1,
        }
        .encode()
        .unwrap();
        assert!(Request::decode(msg_type::DEVICE_LIST, &list).is_err());
        let revoke = Request::Revoke {
            serial: vec![1],
            reason: 7,
            actor: "a".into(),
        }
        .encode()
        .unwrap();
        assert!(Request::decode(msg_type::REVOKE, &revoke).is_err());
    }

    #[test]
    fn responses_round_trip() {
        let dev = DeviceInfo {
            cn: "ward-a-pump-001".into(),
            status: DeviceStatus::Enrolled,
            first_enrolled_ms: 1,
            last_enrolled_ms: 2,
            last_ip: "127.0.0.1".into(),
            current_serial: vec![0x40; 16],
            current_not_after: 3,
        };
        for resp in [
            Response::Pong {
                version: "1".into(),
                ca_subject: "CN=x".into(),
                commits: 2,
                decisions: 9,
            },
            Response::CaChain {
                certs: vec![vec![1], vec![2]],
            },
            Response::Issued {
                serial: vec![1],
                cert_der: vec![2],
            },
            Response::Devices {
                total: 1,
                devices: vec![dev.clone()],
            },
            Response::Device(dev),
            Response::Done,
            Response::CsrAttrs { der: vec![0x30, 0] },
            Response::Error(WireError::new(ErrorCode::KeyRejected, "key.rsa_size", "no")),
        ] {
            let body = resp.encode().unwrap();
            assert_eq!(Response::decode(resp.msg_type(), &body).unwrap(), resp);
        }
    }

    #[test]
    fn error_codes_are_stable() {
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::CsrMalformed,
            ErrorCode::ProofOfPossession,
            ErrorCode::KeyRejected,
            ErrorCode::SignatureAlgorithmRejected,
            ErrorCode::SubjectRejected,
            ErrorCode::SanRejected,
            ErrorCode::UnknownProfile,
            ErrorCode::NotAllowed,
            ErrorCode::DeviceDuplicate,
            ErrorCode::DeviceNotFound,
            ErrorCode::Revoked,
            ErrorCode::ReenrollRefused,
            ErrorCode::CertificateNotFound,
            ErrorCode::Unavailable,
        ] {
            assert_eq!(ErrorCode::from_wire(code.to_wire()).unwrap(), code);
        }
        assert_eq!(ErrorCode::DeviceDuplicate.to_wire(), 200);
        assert!(ErrorCode::from_wire(999).is_err());
    }
}
