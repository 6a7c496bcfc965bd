//! The frontend/operator ↔ signer protocol over a Unix socket (see `docs/IPC.md`).
//!
//! This module is shared by both sides of the trust boundary, so it holds only the wire format
//! and a blocking client; it must never depend on the signer's token, ledger or audit code.
#![forbid(unsafe_code)]

pub mod client;
pub mod codec;
pub mod messages;

pub use codec::{FrameError, FrameHeader, HEADER_LEN, MAGIC, MAX_FRAME_BODY, PROTOCOL_VERSION};
pub use messages::{
    CertificateInfo, DeviceFilter, DeviceInfo, DeviceStatus, ErrorCode, IssueRequest, OcspCertId,
    OcspHash, Operation, Request, Response, Stats, WireError, REASON_LEDGER_UNAVAILABLE,
    REASON_TOKEN_UNAVAILABLE,
};
