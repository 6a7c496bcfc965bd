//! The embedded ledger: SQLite in WAL mode with `synchronous=FULL`, one writer connection
//! and a small pool of readers.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::{
    prefix_end, AuditHead, CertificateRecord, DeviceQuery, DeviceRecord, DeviceState, Ledger,
    LedgerCounts, LedgerError, LedgerWrite, RevokedRow, StoredCertificate,
};

impl From<rusqlite::Error> for LedgerError {
    fn from(e: rusqlite::Error) -> Self {
        if let rusqlite::Error::SqliteFailure(f, _) = &e {
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            {
                return LedgerError::DuplicateSerial;
            }
        }
        LedgerError::Storage(e.to_string())
    }
}

/// Versioned schema migrations; `PRAGMA user_version` is the number applied.
const MIGRATIONS: &[&str] = &[
    // 1: initial schema.
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
     CREATE TABLE certificates (
         serial BLOB PRIMARY KEY,
         subject TEXT NOT NULL,
         common_name TEXT NOT NULL,
         sans TEXT NOT NULL,
         spki_sha256 BLOB NOT NULL,
         not_before INTEGER NOT NULL,
         not_after INTEGER NOT NULL,
         profile TEXT NOT NULL,
         operation TEXT NOT NULL,
         requester TEXT NOT NULL,
         client_ip TEXT NOT NULL,
         issued_at_ms INTEGER NOT NULL,
         status TEXT NOT NULL CHECK (status IN ('valid', 'revoked')),
         revoked_at_ms INTEGER,
         revocation_reason INTEGER,
         der BLOB NOT NULL
     );
     CREATE INDEX certificates_by_cn ON certificates (common_name);
     CREATE TABLE devices (
         common_name TEXT PRIMARY KEY,
         status TEXT NOT NULL CHECK (status IN ('bootstrap_only', 'enrolled', 'revoked')),
         first_enrolled_ms INTEGER NOT NULL,
         last_enrolled_ms INTEGER NOT NULL,
         last_ip TEXT NOT NULL,
         current_serial BLOB NOT NULL REFERENCES certificates (serial)
     );",
    // 2: deletion keeps the device's row (status 'deleted') so its history stays and a
    // revoked device stays blocked until an operator allows it; a re-issued certificate
    // names its successor. SQLite cannot alter a CHECK constraint, so the table is rebuilt.
    "CREATE TABLE devices_v2 (
         common_name TEXT PRIMARY KEY,
         status TEXT NOT NULL
             CHECK (status IN ('bootstrap_only', 'enrolled', 'revoked', 'deleted')),
         first_enrolled_ms INTEGER NOT NULL,
         last_enrolled_ms INTEGER NOT NULL,
         last_ip TEXT NOT NULL,
         current_serial BLOB NOT NULL REFERENCES certificates (serial)
     );
     INSERT INTO devices_v2 SELECT common_name, status, first_enrolled_ms, last_enrolled_ms,
         last_ip, current_serial FROM devices;
     DROP TABLE devices;
     ALTER TABLE devices_v2 RENAME TO devices;
     ALTER TABLE certificates ADD COLUMN superseded_by BLOB;",
    // 3: device listings filtered by status page through an index, not the whole table.
    "CREATE INDEX devices_by_status ON devices (status, common_name);",
    // 4: the overview's counts (issued today, expiring soon) from indexes, not table scans.
    "CREATE INDEX certificates_by_issue ON certificates (issued_at_ms);
     CREATE INDEX certificates_by_expiry ON certificates (not_after);",
    // 5: a CRL lists the revoked certificates that have not expired: a partial index holds
    // just those, so building a CRL does not walk a million valid certificates.
    "CREATE INDEX certificates_revoked ON certificates (not_after) WHERE status = 'revoked';",
    // 6: a revocation marks the device whose current certificate it is; without an index
    // on current_serial that is a scan of every device, per revocation.
    "CREATE INDEX devices_by_current ON devices (current_serial);",
    // 7: several CAs. Each certificate names the CA that issued it (those before were all
    // the default CA's); each CA's CRL walks only its own revoked certificates.
    "ALTER TABLE certificates ADD COLUMN ca TEXT NOT NULL DEFAULT 'default';
     DROP INDEX certificates_revoked;
     CREATE INDEX certificates_revoked ON certificates (ca, not_after) WHERE status = 'revoked';",
];

/// The `meta` key of a CA's CRL number (the default CA keeps the key it always had).
fn crl_number_key(ca: &str) -> String {
    if ca == super::DEFAULT_CA {
        "crl_number".into()
    } else {
        format!("crl_number:{ca}")
    }
}

pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Read connections kept for reuse; more concurrent readers open and close their own.
const MAX_IDLE_READERS: usize = 16;
/// Page cache of each read connection, in KiB (SQLite's default is 2,000 per connection).
/// Readers look up one device or one serial through an index; the kernel's page cache
/// holds the file anyway. With the default, 16 pooled readers could keep 32 MiB as the
/// ledger grows, which the 30-minute soak saw as a slow climb of the signer's RSS.
const READER_CACHE_KIB: i64 = 256;

pub struct SqliteLedger {
    path: std::path::PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

fn configure(conn: &Connection) -> Result<(), LedgerError> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(())
}

impl SqliteLedger {
    /// Opens (creating if needed, mode 0600) and migrates the ledger.
    pub fn open(path: &Path) -> Result<SqliteLedger, LedgerError> {
        if !path.exists() {
            hsm_est_common::util::create_private(path)
                .map_err(|e| LedgerError::Storage(format!("{}: {e}", path.display())))?;
        }
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(LedgerError::Storage(format!(
                "cannot switch to WAL mode (got {mode})"
            )));
        }
        configure(&conn)?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(LedgerError::Storage(format!(
                "ledger schema version {version} is newer than this build ({SCHEMA_VERSION})"
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(SqliteLedger {
            path: path.to_path_buf(),
            writer: Mutex::new(conn),
            readers: Mutex::new(Vec::new()),
        })
    }

    /// A consistent copy of the whole ledger at one instant, taken while the signer keeps
    /// writing (SQLite's online backup, a page at a time). `to` must not exist.
    pub fn snapshot(&self, to: &Path) -> Result<(), LedgerError> {
        hsm_est_common::util::create_private(to)
            .map_err(|e| LedgerError::Storage(format!("{}: {e}", to.display())))?;
        let source = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        configure(&source)?;
        let mut target = Connection::open(to)?;
        {
            let backup = rusqlite::backup::Backup::new(&source, &mut target)?;
            backup.run_to_completion(256, std::time::Duration::from_millis(5), None)?;
        }
        target.pragma_update(None, "journal_mode", "DELETE")?;
        Ok(())
    }

    /// Every CA's last CRL number, by CA name (what `estctl ledger migrate` carries over).
    pub fn crl_numbers(&self) -> Result<Vec<(String, u64)>, LedgerError> {
        self.with_reader(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT key, value FROM meta WHERE key = 'crl_number' OR key LIKE 'crl_number:%'",
            )?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows
                .into_iter()
                .map(|(k, v)| {
                    let ca = k.strip_prefix("crl_number:").unwrap_or(super::DEFAULT_CA);
                    (ca.to_string(), v.parse().unwrap_or(0))
                })
                .collect())
        })
    }

    fn with_reader<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let pooled = self.readers.lock().ok().and_then(|mut r| r.pop());
        let conn = match pooled {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                configure(&c)?;
                c.pragma_update(None, "cache_size", -READER_CACHE_KIB)?;
                c
            }
        };
        let result = f(&conn);
        if let Ok(mut r) = self.readers.lock() {
            if r.len() < MAX_IDLE_READERS {
                r.push(conn);
            }
        }
        result
    }
}

const CERTIFICATE_COLUMNS: &str = "serial, subject, common_name, sans, spki_sha256, \
     not_before, not_after, profile, operation, requester, client_ip, issued_at_ms, der, \
     revoked_at_ms, revocation_reason, superseded_by, ca";

fn certificate_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredCertificate> {
    let sans: String = r.get(3)?;
    Ok(StoredCertificate {
        record: CertificateRecord {
            serial: r.get(0)?,
            subject: r.get(1)?,
            common_name: r.get(2)?,
            sans: serde_json::from_str(&sans).unwrap_or_default(),
            spki_sha256: r.get(4)?,
            not_before: r.get(5)?,
            not_after: r.get(6)?,
            profile: r.get(7)?,
            operation: r.get(8)?,
            requester: r.get(9)?,
            client_ip: r.get(10)?,
            issued_at_ms: r.get(11)?,
            der: r.get(12)?,
            ca: r.get(16)?,
        },
        revoked_at_ms: r.get(13)?,
        revocation_reason: r.get(14)?,
        superseded_by: r.get(15)?,
    })
}

const DEVICE_COLUMNS: &str = "d.common_name, d.status, d.first_enrolled_ms, d.last_enrolled_ms, \
     d.last_ip, d.current_serial, c.not_after";

fn device_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceRecord> {
    let status: String = row.get(1)?;
    Ok(DeviceRecord {
        cn: row.get(0)?,
        status: DeviceState::parse(&status).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                1,
                rusqlite::types::Type::Text,
                format!("bad device status {status:?}").into(),
            )
        })?,
        first_enrolled_ms: row.get(2)?,
        last_enrolled_ms: row.get(3)?,
        last_ip: row.get(4)?,
        current_serial: row.get(5)?,
        current_not_after: row.get(6)?,
    })
}

impl Ledger for SqliteLedger {
    fn device(&self, common_name: &str) -> Result<Option<DeviceRecord>, LedgerError> {
        self.with_reader(|c| {
            let sql = format!(
                "SELECT {DEVICE_COLUMNS} FROM devices d JOIN certificates c \
                 ON c.serial = d.current_serial WHERE d.common_name = ?1"
            );
            Ok(c.prepare_cached(&sql)?
                .query_row([common_name], device_from_row)
                .optional()?)
        })
    }

    fn certificate(&self, serial: &[u8]) -> Result<Option<StoredCertificate>, LedgerError> {
        self.with_reader(|c| {
            let sql = format!("SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE serial = ?1");
            Ok(c.prepare_cached(&sql)?
                .query_row([serial], certificate_from_row)
                .optional()?)
        })
    }

    fn certificates_for_cn(
        &self,
        common_name: &str,
        after_serial: &[u8],
        limit: u32,
    ) -> Result<Vec<StoredCertificate>, LedgerError> {
        self.with_reader(|c| {
            let sql = format!(
                "SELECT {CERTIFICATE_COLUMNS} FROM certificates \
                 WHERE common_name = ?1 AND serial > ?2 ORDER BY serial LIMIT ?3"
            );
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt
                .query_map(
                    params![common_name, after_serial, limit],
                    certificate_from_row,
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    fn serial_exists(&self, serial: &[u8]) -> Result<bool, LedgerError> {
        self.with_reader(|c| {
            Ok(
                c.prepare_cached("SELECT 1 FROM certificates WHERE serial = ?1")?
                    .exists([serial])?,
            )
        })
    }

    fn serials_after(&self, after: Option<&[u8]>, limit: u32) -> Result<Vec<Vec<u8>>, LedgerError> {
        self.with_reader(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT serial FROM certificates WHERE serial > ?1 ORDER BY serial LIMIT ?2",
            )?;
            // Every serial is a non-empty blob, and SQLite orders blobs by memcmp, so the
            // empty blob is below all of them.
            let rows = stmt
                .query_map(params![after.unwrap_or(&[]), limit], |r| r.get(0))?
                .collect::<Result<Vec<Vec<u8>>, _>>()?;
            Ok(rows)
        })
    }

    fn unexpired_valid(
        &self,
        common_name: &str,
        now: i64,
    ) -> Result<Vec<(Vec<u8>, String)>, LedgerError> {
        self.with_reader(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT serial, profile FROM certificates WHERE common_name = ?1 \
                 AND status = 'valid' AND not_after > ?2 ORDER BY serial",
            )?;
            let rows = stmt
                .query_map(params![common_name, now], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    fn expiring_certificates(
        &self,
        now: i64,
        before: i64,
        after: Option<(i64, &[u8])>,
        limit: u32,
    ) -> Result<Vec<StoredCertificate>, LedgerError> {
        // The cursor as a row value: everything after (notAfter, serial), over the
        // certificates_by_expiry index from the cursor's notAfter on.
        let (from, serial) = super::expiry_cursor(now, after);
        self.with_reader(|c| {
            let sql = format!(
                "SELECT {CERTIFICATE_COLUMNS} FROM certificates \
                 WHERE not_after >= ?1 AND not_after <= ?2 AND status = 'valid' \
                 AND (not_after, serial) > (?1, ?3) ORDER BY not_after, serial LIMIT ?4"
            );
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt
                .query_map(params![from, before, serial, limit], certificate_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    fn crl_number(&self, ca: &str) -> Result<u64, LedgerError> {
        self.with_reader(|c| {
            let v: Option<String> = c
                .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
                .query_row([crl_number_key(ca)], |r| r.get(0))
                .optional()?;
            Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
        })
    }

    fn revoked_unexpired(&self, ca: &str, now: i64) -> Result<Vec<RevokedRow>, LedgerError> {
        self.with_reader(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT serial, revoked_at_ms, revocation_reason FROM certificates \
                 WHERE status = 'revoked' AND ca = ?1 AND not_after >= ?2 ORDER BY serial",
            )?;
            let rows = stmt
                .query_map(params![ca, now], |r| {
                    Ok(RevokedRow {
                        serial: r.get(0)?,
                        revoked_at_ms: r.get::<_, Option<i64>>(1)?.unwrap_or(0),
                        reason: r.get::<_, Option<i64>>(2)?.unwrap_or(0) as u8,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    fn counts(
        &self,
        issued_since_ms: i64,
        now: i64,
        expiring_before: i64,
    ) -> Result<LedgerCounts, LedgerError> {
        self.with_reader(|c| {
            let mut stmt =
                c.prepare_cached("SELECT status, COUNT(*) FROM devices GROUP BY status")?;
            let devices_by_status = stmt
                .query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let issued_since: i64 = c
                .prepare_cached("SELECT COUNT(*) FROM certificates WHERE issued_at_ms >= ?1")?
                .query_row([issued_since_ms], |r| r.get(0))?;
            let expiring: i64 = c
                .prepare_cached(
                    "SELECT COUNT(*) FROM certificates WHERE not_after >= ?1 \
                     AND not_after <= ?2 AND status = 'valid'",
                )?
                .query_row([now, expiring_before], |r| r.get(0))?;
            Ok(LedgerCounts {
                devices_by_status,
                issued_since: issued_since as u64,
                expiring: expiring as u64,
            })
        })
    }

    fn list_devices(&self, q: &DeviceQuery<'_>) -> Result<Vec<DeviceRecord>, LedgerError> {
        // Only the conditions a query has, so that SQLite walks the primary key (or the
        // status index) from the cursor and stops after one page.
        let mut sql = format!(
            "SELECT {DEVICE_COLUMNS} FROM devices d JOIN certificates c \
             ON c.serial = d.current_serial WHERE d.common_name > ?"
        );
        let mut args: Vec<rusqlite::types::Value> = vec![q.after.to_string().into()];
        if let Some(status) = q.status {
            sql.push_str(" AND d.status = ?");
            args.push(status.as_str().to_string().into());
        }
        if !q.cn_prefix.is_empty() {
            sql.push_str(" AND d.common_name >= ?");
            args.push(q.cn_prefix.to_string().into());
            if let Some(end) = prefix_end(q.cn_prefix) {
                sql.push_str(" AND d.common_name < ?");
                args.push(end.into());
            }
        }
        if let Some(before) = q.expiring_before {
            sql.push_str(" AND c.not_after <= ?");
            args.push(before.into());
        }
        sql.push_str(" ORDER BY d.common_name LIMIT ?");
        args.push(i64::from(q.limit).into());
        self.with_reader(|c| {
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(args.iter()), device_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    fn apply(&self, writes: &[LedgerWrite], audit_head: &AuditHead) -> Result<(), LedgerError> {
        let mut conn = self
            .writer
            .lock()
            .map_err(|_| LedgerError::Storage("writer lock poisoned".into()))?;
        let tx = conn.transaction()?;
        for w in writes {
            match w {
                LedgerWrite::Issue {
                    certificate: c,
                    device_status,
                    supersedes,
                } => {
                    tx.prepare_cached(
                        "INSERT INTO certificates (serial, subject, common_name, sans, \
                         spki_sha256, not_before, not_after, profile, operation, requester, \
                         client_ip, issued_at_ms, status, der, ca) VALUES \
                         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 'valid', ?13, ?14)",
                    )?
                    .execute(params![
                        c.serial,
                        c.subject,
                        c.common_name,
                        serde_json::to_string(&c.sans).unwrap_or_else(|_| "[]".into()),
                        c.spki_sha256,
                        c.not_before,
                        c.not_after,
                        c.profile,
                        c.operation,
                        c.requester,
                        c.client_ip,
                        c.issued_at_ms,
                        c.der,
                        c.ca
                    ])?;
                    if let Some(previous) = supersedes {
                        tx.prepare_cached(
                            "UPDATE certificates SET superseded_by = ?2 WHERE serial = ?1",
                        )?
                        .execute(params![previous, c.serial])?;
                    }
                    let Some(device_status) = device_status else {
                        continue;
                    };
                    // A deleted device that bootstraps again starts a new life: its first
                    // enrolment is now.
                    tx.prepare_cached(
                        "INSERT INTO devices (common_name, status, first_enrolled_ms, \
                         last_enrolled_ms, last_ip, current_serial) VALUES (?1, ?2, ?3, ?3, ?4, ?5) \
                         ON CONFLICT (common_name) DO UPDATE SET status = excluded.status, \
                         first_enrolled_ms = CASE WHEN devices.status = 'deleted' \
                             THEN excluded.first_enrolled_ms ELSE devices.first_enrolled_ms END, \
                         last_enrolled_ms = excluded.last_enrolled_ms, last_ip = excluded.last_ip, \
                         current_serial = excluded.current_serial",
                    )?
                    .execute(params![
                        c.common_name,
                        device_status.as_str(),
                        c.issued_at_ms,
                        c.client_ip,
                        c.serial
                    ])?;
                }
                LedgerWrite::DeleteDevice { common_name } => {
                    tx.prepare_cached(
                        "UPDATE devices SET status = 'deleted' WHERE common_name = ?1",
                    )?
                    .execute([common_name])?;
                }
                LedgerWrite::AllowDevice { common_name } => {
                    tx.prepare_cached(
                        "UPDATE devices SET status = 'deleted' \
                         WHERE common_name = ?1 AND status = 'revoked'",
                    )?
                    .execute([common_name])?;
                }
                LedgerWrite::CrlIssued { ca, number } => {
                    // CRL numbers only grow (RFC 5280 §5.2.3): a lower one is refused.
                    let key = crl_number_key(ca);
                    let current: Option<String> = tx
                        .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
                        .query_row([&key], |r| r.get(0))
                        .optional()?;
                    let current: u64 = current.and_then(|v| v.parse().ok()).unwrap_or(0);
                    if *number <= current {
                        return Err(LedgerError::Storage(format!(
                            "CRL number {number} is not above {current}"
                        )));
                    }
                    tx.prepare_cached(
                        "INSERT INTO meta (key, value) VALUES (?1, ?2) \
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    )?
                    .execute([key, number.to_string()])?;
                }
                LedgerWrite::Revoke {
                    serial,
                    at_ms,
                    reason,
                } => {
                    tx.prepare_cached(
                        "UPDATE certificates SET status = 'revoked', revoked_at_ms = ?2, \
                         revocation_reason = ?3 WHERE serial = ?1 AND status = 'valid'",
                    )?
                    .execute(params![serial, at_ms, reason])?;
                    tx.prepare_cached(
                        "UPDATE devices SET status = 'revoked' WHERE current_serial = ?1",
                    )?
                    .execute([serial])?;
                }
            }
        }
        tx.prepare_cached(
            "INSERT INTO meta (key, value) VALUES ('audit_head', ?1) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )?
        .execute([format!("{}:{}", audit_head.0, audit_head.1)])?;
        tx.commit()?;
        Ok(())
    }

    fn audit_head(&self) -> Result<Option<AuditHead>, LedgerError> {
        self.with_reader(|c| {
            let v: Option<String> = c
                .query_row("SELECT value FROM meta WHERE key = 'audit_head'", [], |r| {
                    r.get(0)
                })
                .optional()?;
            match v {
                None => Ok(None),
                Some(v) => {
                    let (seq, hash) = v
                        .split_once(':')
                        .ok_or_else(|| LedgerError::Storage("bad audit head".into()))?;
                    let seq = seq
                        .parse()
                        .map_err(|_| LedgerError::Storage("bad audit head".into()))?;
                    Ok(Some((seq, hash.to_string())))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::is_revoked;

    fn record(serial: u8, cn: &str) -> CertificateRecord {
        CertificateRecord {
            serial: vec![0x40, serial],
            subject: format!("CN={cn}"),
            common_name: cn.into(),
            sans: vec![],
            spki_sha256: vec![0; 32],
            not_before: 1,
            not_after: 2,
            profile: "p".into(),
            operation: "bootstrap".into(),
            requester: "basic:x".into(),
            client_ip: "127.0.0.1".into(),
            issued_at_ms: 5,
            der: vec![0x30, 0x00],
            ca: super::super::DEFAULT_CA.into(),
        }
    }

    /// The revocation's device update goes through an index, so it costs the same at a
    /// million devices as at ten.
    #[test]
    fn a_revocation_finds_its_device_through_an_index() {
        let dir = std::env::temp_dir().join(format!("hsm-est-ledger-idx-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ledger.sqlite");
        drop(SqliteLedger::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        let plan: Vec<String> = conn
            .prepare("EXPLAIN QUERY PLAN UPDATE devices SET status = 'revoked' WHERE current_serial = ?1")
            .unwrap()
            .query_map([&[1u8][..]], |r| r.get::<_, String>(3))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert!(
            plan.iter()
                .any(|p| p.contains("USING INDEX devices_by_current")),
            "{plan:?}"
        );
    }

    #[test]
    fn migrations_issue_revoke_delete() {
        let dir = std::env::temp_dir().join(format!("hsm-est-ledger-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ledger.sqlite");
        let ledger = SqliteLedger::open(&path).unwrap();
        ledger
            .apply(
                &[LedgerWrite::Issue {
                    certificate: Box::new(record(1, "pump-1")),
                    device_status: Some(DeviceState::BootstrapOnly),
                    supersedes: None,
                }],
                &(1, "aa".into()),
            )
            .unwrap();
        let dev = ledger.device("pump-1").unwrap().unwrap();
        assert_eq!(dev.status, DeviceState::BootstrapOnly);
        assert_eq!(dev.current_not_after, 2);
        assert!(ledger.serial_exists(&[0x40, 1]).unwrap());
        assert_eq!(ledger.serials_after(None, 10).unwrap(), vec![vec![0x40, 1]]);
        assert!(ledger
            .serials_after(Some(&[0x40, 1]), 10)
            .unwrap()
            .is_empty());
        // A serial is never overwritten.
        let dup = ledger.apply(
            &[LedgerWrite::Issue {
                certificate: Box::new(record(1, "pump-2")),
                device_status: Some(DeviceState::Enrolled),
                supersedes: None,
            }],
            &(2, "bb".into()),
        );
        assert!(matches!(dup, Err(LedgerError::DuplicateSerial)));
        assert_eq!(ledger.audit_head().unwrap(), Some((1, "aa".into())));
        ledger
            .apply(
                &[LedgerWrite::Revoke {
                    serial: vec![0x40, 1],
                    at_ms: 9,
                    reason: 1,
                }],
                &(3, "cc".into()),
            )
            .unwrap();
        assert_eq!(
            ledger.device("pump-1").unwrap().unwrap().status,
            DeviceState::Revoked
        );
        assert!(is_revoked(
            &ledger.certificate(&[0x40, 1]).unwrap().unwrap()
        ));
        ledger
            .apply(
                &[LedgerWrite::DeleteDevice {
                    common_name: "pump-1".into(),
                }],
                &(4, "dd".into()),
            )
            .unwrap();
        // A delete keeps the row, as history.
        assert_eq!(
            ledger.device("pump-1").unwrap().unwrap().status,
            DeviceState::Deleted
        );
        assert!(ledger.certificate(&[0x40, 1]).unwrap().is_some());
        drop(ledger);
        // Reopening does not re-run migrations.
        let again = SqliteLedger::open(&path).unwrap();
        let all = DeviceQuery {
            limit: 10,
            ..Default::default()
        };
        assert_eq!(again.list_devices(&all).unwrap().len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Pages by key with every filter: each page starts where the last ended, filters
    /// combine, and the walk sees every matching device exactly once.
    #[test]
    fn device_pages_by_key_and_filters() {
        let dir = std::env::temp_dir().join(format!("hsm-est-ledger-page-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ledger = SqliteLedger::open(&dir.join("l.sqlite")).unwrap();
        let writes: Vec<LedgerWrite> = (0..1200u32)
            .map(|i| {
                let ward = if i % 3 == 0 { "icu" } else { "ward" };
                let mut c = record(0, &format!("{ward}-pump-{i:05}"));
                c.serial = vec![0x40, (i >> 8) as u8, i as u8];
                c.not_after = i64::from(i);
                LedgerWrite::Issue {
                    certificate: Box::new(c),
                    device_status: Some(if i % 5 == 0 {
                        DeviceState::Revoked
                    } else {
                        DeviceState::Enrolled
                    }),
                    supersedes: None,
                }
            })
            .collect();
        ledger.apply(&writes, &(1, "aa".into())).unwrap();
        let walk = |status, prefix: &str, before| {
            let mut seen = Vec::new();
            let mut after = String::new();
            loop {
                let page = ledger
                    .list_devices(&DeviceQuery {
                        after: &after,
                        limit: 7,
                        status,
                        cn_prefix: prefix,
                        expiring_before: before,
                    })
                    .unwrap();
                let Some(last) = page.last() else {
                    return seen;
                };
                after = last.cn.clone();
                seen.extend(page.into_iter().map(|d| d.cn));
            }
        };
        let all = walk(None, "", None);
        assert_eq!(all.len(), 1200);
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(walk(None, "icu-", None).len(), 400);
        assert_eq!(walk(Some(DeviceState::Revoked), "", None).len(), 240);
        // i % 3 == 0 and i % 5 == 0 and i <= 299: 0, 15, ..., 285.
        assert_eq!(
            walk(Some(DeviceState::Revoked), "icu-", Some(299)).len(),
            20
        );
        assert_eq!(prefix_end("ab"), Some("ac".into()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A ledger written by the first schema (devices deleted outright, no `deleted`
    /// status, no `superseded_by`) keeps its rows through the migration and then takes
    /// the new states.
    #[test]
    fn a_version_1_ledger_migrates_with_its_rows() {
        let dir = std::env::temp_dir().join(format!("hsm-est-ledger-v1-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ledger.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch(
                "INSERT INTO certificates VALUES (x'4001', 'CN=p', 'p', '[]', x'00', 1, 2, \
                 'iqe-pump', 'enroll', 'basic:x', '::1', 5, 'valid', NULL, NULL, x'3000');
                 INSERT INTO devices VALUES ('p', 'enrolled', 5, 6, '::1', x'4001');
                 PRAGMA user_version = 1;",
            )
            .unwrap();
        }
        let ledger = SqliteLedger::open(&path).unwrap();
        let dev = ledger.device("p").unwrap().unwrap();
        assert_eq!(dev.status, DeviceState::Enrolled);
        assert_eq!((dev.first_enrolled_ms, dev.last_enrolled_ms), (5, 6));
        assert_eq!(
            ledger
                .certificate(&[0x40, 1])
                .unwrap()
                .unwrap()
                .superseded_by,
            None
        );
        ledger
            .apply(
                &[LedgerWrite::DeleteDevice {
                    common_name: "p".into(),
                }],
                &(1, "aa".into()),
            )
            .unwrap();
        assert_eq!(
            ledger.device("p").unwrap().unwrap().status,
            DeviceState::Deleted
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
