//! The issuance ledger: every certificate issued and every device, behind one narrow trait so
//! that a PostgreSQL backend for multi-node deployments can be added without touching
//! issuance. The embedded backend is SQLite ([`sqlite`]). The ledger owns its record types;
//! the signer's dispatch edge turns them into wire messages.

pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

pub use postgres::PgLedger;
pub use sqlite::SqliteLedger;

use crate::config::{LedgerConfig, SignerConfig};

/// The name of the CA that `ca.chain_file` and `token.key_label` configure; certificates
/// recorded before CAs had names belong to it.
pub const DEFAULT_CA: &str = hsm_est_policy::DEFAULT_CA;

/// Opens the ledger `signer.yaml` names: SQLite, or PostgreSQL shared with other nodes
/// under this signer's `audit.node`.
pub fn open(config: &SignerConfig) -> Result<Arc<dyn Ledger>, LedgerError> {
    Ok(match &config.ledger {
        LedgerConfig::Sqlite(path) => Arc::new(SqliteLedger::open(path)?),
        LedgerConfig::Postgres(pg) => {
            let node = config
                .node
                .as_deref()
                .ok_or_else(|| LedgerError::Storage("audit.node is not set".into()))?;
            Arc::new(PgLedger::open(pg, node)?)
        }
    })
}

/// A hold on one device's decisions that other signer processes respect; released when
/// dropped. An embedded ledger has one process, whose in-memory claim is enough.
pub struct DeviceHold<'a>(#[allow(dead_code)] Option<Box<dyn Send + 'a>>);

impl<'a> DeviceHold<'a> {
    pub fn new(inner: Box<dyn Send + 'a>) -> Self {
        DeviceHold(Some(inner))
    }

    /// Nothing to release: the process's own claim is the whole of it.
    pub fn local() -> Self {
        DeviceHold(None)
    }
}

/// Where an expiry listing starts: the cursor `after` (notAfter, serial), or `now` when
/// there is none or it lies in the past (the listing never goes below `now`).
pub(crate) fn expiry_cursor(now: i64, after: Option<(i64, &[u8])>) -> (i64, &[u8]) {
    match after {
        Some((from, serial)) if from >= now => (from, serial),
        _ => (now, &[]),
    }
}

/// The least string above every string that starts with `prefix` (None: there is none).
pub(crate) fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        if let Some(next) = char::from_u32(last as u32 + 1) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// Where a device stands in the IQE life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceState {
    /// It holds a bootstrap certificate and may enrol once.
    BootstrapOnly,
    /// It holds an operational certificate and may only re-enrol.
    Enrolled,
    /// Its current certificate was revoked: it gets nothing more until an operator allows
    /// it again (deleting it does not).
    Revoked,
    /// Deleted by an operator. The row and the certificates stay as history; for the device
    /// rules the CN is unknown, so it may bootstrap again.
    Deleted,
}

impl DeviceState {
    /// The name stored in the ledger and shown to operators.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::BootstrapOnly => "bootstrap_only",
            DeviceState::Enrolled => "enrolled",
            DeviceState::Revoked => "revoked",
            DeviceState::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "bootstrap_only" => Some(DeviceState::BootstrapOnly),
            "enrolled" => Some(DeviceState::Enrolled),
            "revoked" => Some(DeviceState::Revoked),
            "deleted" => Some(DeviceState::Deleted),
            _ => None,
        }
    }
}

/// What [`Ledger::counts`] answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerCounts {
    pub devices_by_status: Vec<(String, u64)>,
    pub issued_since: u64,
    pub expiring: u64,
}

/// Which devices a listing wants, and from where.
#[derive(Debug, Clone, Default)]
pub struct DeviceQuery<'a> {
    /// Devices whose CN sorts after this one (empty: from the first).
    pub after: &'a str,
    pub limit: u32,
    pub status: Option<DeviceState>,
    /// Devices whose CN starts with this (empty: all).
    pub cn_prefix: &'a str,
    /// Devices whose current certificate's notAfter is at or before this (seconds).
    pub expiring_before: Option<i64>,
}

/// One device as recorded, with the notAfter of its current certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    pub cn: String,
    pub status: DeviceState,
    pub first_enrolled_ms: i64,
    pub last_enrolled_ms: i64,
    pub last_ip: String,
    pub current_serial: Vec<u8>,
    /// notAfter of the current certificate, seconds since the epoch.
    pub current_not_after: i64,
}

#[derive(Debug)]
pub enum LedgerError {
    /// A serial number that is already on record (never overwritten).
    DuplicateSerial,
    Storage(String),
}

impl std::fmt::Display for LedgerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LedgerError::DuplicateSerial => write!(f, "serial number already in the ledger"),
            LedgerError::Storage(m) => write!(f, "ledger storage error: {m}"),
        }
    }
}

impl std::error::Error for LedgerError {}

/// One issued certificate as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRecord {
    pub serial: Vec<u8>,
    pub subject: String,
    pub common_name: String,
    pub sans: Vec<String>,
    pub spki_sha256: Vec<u8>,
    pub not_before: i64,
    pub not_after: i64,
    pub profile: String,
    pub operation: String,
    pub requester: String,
    pub client_ip: String,
    pub issued_at_ms: i64,
    pub der: Vec<u8>,
    /// The name of the CA that issued it (`signer.yaml`, `cas`).
    pub ca: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCertificate {
    pub record: CertificateRecord,
    pub revoked_at_ms: Option<i64>,
    pub revocation_reason: Option<u8>,
    /// The certificate that replaced this one for its device, if any.
    pub superseded_by: Option<Vec<u8>>,
}

/// A state change, applied atomically with others in one transaction.
#[derive(Debug, Clone)]
pub enum LedgerWrite {
    /// Record a certificate and, for device profiles, point its device at it.
    Issue {
        certificate: Box<CertificateRecord>,
        /// `None` for profiles that do not track devices (server certificates).
        device_status: Option<DeviceState>,
        /// The device's previous certificate, marked superseded by this one.
        supersedes: Option<Vec<u8>>,
    },
    /// Mark a device deleted (its row and certificates stay on record) so it can bootstrap
    /// again.
    DeleteDevice { common_name: String },
    /// Let a revoked device bootstrap again (it becomes `deleted`).
    AllowDevice { common_name: String },
    /// A CRL of CA `ca` with this number was issued; each CA's numbers only grow.
    CrlIssued { ca: String, number: u64 },
    /// Mark a certificate revoked; a device whose current certificate it is becomes revoked.
    Revoke {
        serial: Vec<u8>,
        at_ms: i64,
        reason: u8,
    },
}

/// A revoked certificate as a CRL lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedRow {
    pub serial: Vec<u8>,
    pub revoked_at_ms: i64,
    pub reason: u8,
}

/// The position of the audit log that the ledger has seen committed: (sequence, hash).
pub type AuditHead = (u64, String);

pub trait Ledger: Send + Sync {
    fn device(&self, common_name: &str) -> Result<Option<DeviceRecord>, LedgerError>;
    fn certificate(&self, serial: &[u8]) -> Result<Option<StoredCertificate>, LedgerError>;
    fn serial_exists(&self, serial: &[u8]) -> Result<bool, LedgerError>;
    /// Up to `limit` certificates issued for `common_name` with serials above
    /// `after_serial` (empty: from the first), in serial order: a device's history, by key.
    fn certificates_for_cn(
        &self,
        common_name: &str,
        after_serial: &[u8],
        limit: u32,
    ) -> Result<Vec<StoredCertificate>, LedgerError>;
    /// Up to `limit` certificate serials greater than `after`, in order: a page by key, so
    /// that walking a million certificates costs the same per page as walking ten.
    fn serials_after(&self, after: Option<&[u8]>, limit: u32) -> Result<Vec<Vec<u8>>, LedgerError>;
    /// The serials and profiles of a CN's certificates that are neither revoked nor expired
    /// at `now` (seconds).
    fn unexpired_valid(
        &self,
        common_name: &str,
        now: i64,
    ) -> Result<Vec<(Vec<u8>, String)>, LedgerError>;
    /// Up to `limit` unrevoked certificates with `now <= notAfter <= before` (seconds), in
    /// (notAfter, serial) order after the cursor `after` (`None`: from the first).
    fn expiring_certificates(
        &self,
        now: i64,
        before: i64,
        after: Option<(i64, &[u8])>,
        limit: u32,
    ) -> Result<Vec<StoredCertificate>, LedgerError>;
    /// Devices per status, certificates issued since `issued_since_ms`, and unrevoked
    /// certificates whose notAfter falls in `[now, expiring_before]` (seconds): the
    /// overview's counts, each answered from an index.
    fn counts(
        &self,
        issued_since_ms: i64,
        now: i64,
        expiring_before: i64,
    ) -> Result<LedgerCounts, LedgerError>;
    /// Up to `query.limit` devices in CN order after `query.after`, filtered: a page by
    /// key, so the millionth device costs what the first does.
    fn list_devices(&self, query: &DeviceQuery<'_>) -> Result<Vec<DeviceRecord>, LedgerError>;
    /// Applies all writes and the new audit head in one transaction (one fsync).
    fn apply(&self, writes: &[LedgerWrite], audit_head: &AuditHead) -> Result<(), LedgerError>;
    /// The number of CA `ca`'s last CRL (0: none yet).
    fn crl_number(&self, ca: &str) -> Result<u64, LedgerError>;
    /// Every certificate of CA `ca` that is revoked and whose notAfter is not before `now`,
    /// by serial: that CA's CRL entries (an expired certificate leaves the CRL, RFC 5280
    /// §3.3).
    fn revoked_unexpired(&self, ca: &str, now: i64) -> Result<Vec<RevokedRow>, LedgerError>;
    fn audit_head(&self) -> Result<Option<AuditHead>, LedgerError>;
    /// Serials this node issued, by key (an embedded ledger has one node: all of them):
    /// what this node's audit chain must account for.
    fn node_serials_after(
        &self,
        after: Option<&[u8]>,
        limit: u32,
    ) -> Result<Vec<Vec<u8>>, LedgerError> {
        self.serials_after(after, limit)
    }
    /// A number that changes whenever any signer sharing this ledger commits a
    /// revocation, so that a node can tell its OCSP cache and CRL are stale. An embedded
    /// ledger has one signer, which knows its own revocations: always 0.
    fn revocation_generation(&self) -> Result<u64, LedgerError> {
        Ok(0)
    }
    /// Whether the ledger answers now (a shared database may be gone); an embedded one
    /// always does.
    fn health(&self) -> Result<(), LedgerError> {
        Ok(())
    }
    /// Holds `common_name` against decisions in other signer processes that share this
    /// ledger, until the hold is dropped; `None` while another process holds it.
    fn lock_device(&self, _common_name: &str) -> Result<Option<DeviceHold<'_>>, LedgerError> {
        Ok(Some(DeviceHold::local()))
    }
}

/// Whether a certificate row says revoked.
pub fn is_revoked(c: &StoredCertificate) -> bool {
    c.revoked_at_ms.is_some()
}
