//! The shared ledger: PostgreSQL, for several signer nodes deciding against one database.
//!
//! What must hold across nodes is held by the database, not by a process:
//! - one decision per device at a time: a session-level advisory lock per CN, taken on one
//!   dedicated connection for as long as the decision runs (a node that dies loses its
//!   connection, and its locks with it);
//! - the device state transitions: every device write names the state it expects (no
//!   device, or this current certificate), and a batch whose expectation no longer holds
//!   is refused whole, so a transition decided on stale state never commits;
//! - serial uniqueness: the primary key;
//! - CRL numbers: a conditional upsert that only ever raises the number.
//!
//! A batch of decisions is one transaction of a handful of statements whatever its size
//! (arrays through `unnest`), never one round trip per certificate.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, Row, Statement};
use secrecy::ExposeSecret;

use super::{
    AuditHead, CertificateRecord, DeviceHold, DeviceQuery, DeviceRecord, DeviceState, Ledger,
    LedgerCounts, LedgerError, LedgerWrite, RevokedRow, StoredCertificate,
};
use crate::config::PostgresConfig;

/// Versioned schema migrations; the table `schema_migrations` lists those applied. Column
/// names match the SQLite ledger's, so that `estctl ledger migrate` copies row for row.
const MIGRATIONS: &[&str] = &[
    // 1: the schema of SQLite's version 5, plus the issuing node of each certificate, the
    // audit head of each node and a CRL number per CA. CNs compare bytewise ("C"), as
    // SQLite's do, so pages by key walk the same order on both.
    "CREATE TABLE certificates (
         serial bytea PRIMARY KEY,
         subject text NOT NULL,
         common_name text COLLATE \"C\" NOT NULL,
         sans text NOT NULL,
         spki_sha256 bytea NOT NULL,
         not_before bigint NOT NULL,
         not_after bigint NOT NULL,
         profile text NOT NULL,
         operation text NOT NULL,
         requester text NOT NULL,
         client_ip text NOT NULL,
         issued_at_ms bigint NOT NULL,
         status text NOT NULL CHECK (status IN ('valid', 'revoked')),
         revoked_at_ms bigint,
         revocation_reason smallint,
         superseded_by bytea,
         der bytea NOT NULL,
         node text NOT NULL
     );
     CREATE INDEX certificates_by_cn ON certificates (common_name, serial);
     CREATE INDEX certificates_by_issue ON certificates (issued_at_ms);
     CREATE INDEX certificates_by_expiry ON certificates (not_after, serial);
     CREATE INDEX certificates_revoked ON certificates (not_after) WHERE status = 'revoked';
     CREATE INDEX certificates_by_node ON certificates (node, serial);
     CREATE TABLE devices (
         common_name text COLLATE \"C\" PRIMARY KEY,
         status text NOT NULL
             CHECK (status IN ('bootstrap_only', 'enrolled', 'revoked', 'deleted')),
         first_enrolled_ms bigint NOT NULL,
         last_enrolled_ms bigint NOT NULL,
         last_ip text NOT NULL,
         current_serial bytea NOT NULL REFERENCES certificates (serial)
     );
     CREATE INDEX devices_by_status ON devices (status, common_name);
     CREATE INDEX devices_by_current ON devices (current_serial);
     CREATE TABLE crl_numbers (ca text PRIMARY KEY, number bigint NOT NULL);
     CREATE TABLE audit_heads (node text PRIMARY KEY, seq bigint NOT NULL, hash text NOT NULL);",
    // 2: a counter every revocation raises, so that other nodes drop cached OCSP answers
    // and sign a new CRL.
    "CREATE TABLE revocation_generation (
         only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
         n bigint NOT NULL
     );
     INSERT INTO revocation_generation (n) VALUES (0);",
    // 3: several CAs. Each certificate names the CA that issued it (those before were all
    // the default CA's); each CA's CRL walks only its own revoked certificates.
    "ALTER TABLE certificates ADD COLUMN ca text NOT NULL DEFAULT 'default';
     DROP INDEX certificates_revoked;
     CREATE INDEX certificates_revoked ON certificates (ca, not_after) WHERE status = 'revoked';",
];

/// The certificate columns in [`certificate_from_row`]'s order, then `tail`. A macro so
/// that the statement text stays `'static` (prepared once per connection).
macro_rules! certificate_select {
    ($tail:literal) => {
        concat!(
            "SELECT serial, subject, common_name, sans, spki_sha256, not_before, not_after, \
             profile, operation, requester, client_ip, issued_at_ms, der, revoked_at_ms, \
             revocation_reason, superseded_by, ca FROM certificates ",
            $tail
        )
    };
}

macro_rules! device_select {
    ($tail:literal) => {
        concat!(
            "SELECT d.common_name, d.status, d.first_enrolled_ms, d.last_enrolled_ms, \
             d.last_ip, d.current_serial, c.not_after FROM devices d JOIN certificates c \
             ON c.serial = d.current_serial ",
            $tail
        )
    };
}

/// The advisory lock key that serialises migrations of nodes starting together.
const MIGRATION_LOCK: i64 = 0x6873_6d2d_6573_7401;
/// How long a read waits for a free pooled connection.
const POOL_WAIT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl From<postgres::Error> for LedgerError {
    fn from(e: postgres::Error) -> Self {
        if let Some(db) = e.as_db_error() {
            if *db.code() == SqlState::UNIQUE_VIOLATION
                && db.constraint() == Some("certificates_pkey")
            {
                return LedgerError::DuplicateSerial;
            }
            // The server's message and, where it gives one, the constraint; never the
            // query text or parameters.
            return LedgerError::Storage(format!("postgres: {}", db.message()));
        }
        // The causes too: "error performing TLS handshake" alone does not say that the
        // server's certificate is from an unknown issuer.
        let mut text = format!("postgres: {e}");
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            text.push_str(&format!(": {c}"));
            cause = c.source();
        }
        LedgerError::Storage(text)
    }
}

fn storage(m: impl std::fmt::Display) -> LedgerError {
    LedgerError::Storage(m.to_string())
}

/// How connections are made: plain (loopback, a Unix socket) or TLS through rustls.
#[derive(Clone)]
enum Connector {
    Plain,
    Tls(tokio_postgres_rustls::MakeRustlsConnect),
}

/// A connection with the statements it has prepared, so that each query is one round trip.
struct Conn {
    client: Client,
    statements: HashMap<&'static str, Statement>,
}

impl Conn {
    fn statement(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql)?;
        self.statements.insert(sql, s.clone());
        Ok(s)
    }

    fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, postgres::Error> {
        let s = self.statement(sql)?;
        self.client.query(&s, params)
    }
}

pub struct PgLedger {
    config: postgres::Config,
    connector: Connector,
    node: String,
    /// Idle read connections, and how many exist in all (at most `max_readers`).
    readers: Mutex<(Vec<Conn>, usize)>,
    reader_freed: Condvar,
    max_readers: usize,
    /// The commit thread's connection.
    writer: Mutex<Option<Conn>>,
    /// The connection that holds the device locks, with a generation that changes when it
    /// is replaced (a lock taken on a lost connection is gone with it).
    locks: Mutex<(Option<Conn>, u64)>,
}

/// One device's advisory lock, released when the decision is over.
struct PgDeviceLock<'a> {
    ledger: &'a PgLedger,
    key: i64,
    generation: u64,
}

impl Drop for PgDeviceLock<'_> {
    fn drop(&mut self) {
        let Ok(mut locks) = self.ledger.locks.lock() else {
            return;
        };
        if locks.1 != self.generation {
            return;
        }
        let released = match locks.0.as_mut() {
            Some(conn) => conn
                .query("SELECT pg_advisory_unlock($1)", &[&self.key])
                .map(|rows| rows.first().map(|r| r.get::<_, bool>(0))),
            None => return,
        };
        if !matches!(released, Ok(Some(true))) {
            // The lock state of this connection is unknown: drop it, which releases every
            // lock it held; decisions in flight are still guarded by their expected state.
            tracing::warn!("device lock release failed ({released:?}); reconnecting");
            locks.0 = None;
            locks.1 += 1;
        }
    }
}

/// The advisory lock key of a CN: the first 8 bytes of its SHA-256. Two CNs that share a
/// key only ever wait for each other.
fn lock_key(cn: &str) -> i64 {
    let digest = hsm_est_pki::sha256(cn.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(b)
}

impl PgLedger {
    /// Connects, applies pending migrations (one node at a time) and checks the pool.
    pub fn open(settings: &PostgresConfig, node: &str) -> Result<PgLedger, LedgerError> {
        let mut config: postgres::Config = settings
            .url
            .parse()
            .map_err(|e| storage(format!("ledger.postgres.url: {e}")))?;
        if config.get_password().is_some() {
            return Err(storage(
                "ledger.postgres.url: holds a password; put it in ledger.postgres.password_file",
            ));
        }
        if let Some(file) = &settings.password_file {
            let secret = crate::token::read_pin(&crate::config::PinSource::File(file.clone()))
                .map_err(|e| storage(format!("ledger.postgres.password_file: {e}")))?;
            config.password(secret.expose_secret().as_bytes());
        }
        config.connect_timeout(CONNECT_TIMEOUT);
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        // A database that stops answering must not hold the signer's threads for ever:
        // unacknowledged data fails the connection after a while, and a statement that
        // waits too long (a lock, a full disk) is cancelled by the server. The request
        // then gets 503 and nothing is released.
        config.tcp_user_timeout(Duration::from_secs(30));
        let limits = "-c statement_timeout=15000 -c lock_timeout=10000";
        let options = match config.get_options() {
            Some(o) if !o.is_empty() => format!("{o} {limits}"),
            _ => limits.to_string(),
        };
        config.options(&options);
        config.application_name(&format!("est-signer {node}"));
        let connector = match &settings.ca_file {
            None => {
                if config.get_ssl_mode() == postgres::config::SslMode::Require {
                    return Err(storage(
                        "ledger.postgres: sslmode=require needs ca_file (the server's trust \
                         anchors)",
                    ));
                }
                config.ssl_mode(postgres::config::SslMode::Disable);
                Connector::Plain
            }
            Some(ca) => {
                config.ssl_mode(postgres::config::SslMode::Require);
                Connector::Tls(tls_connector(ca)?)
            }
        };
        let ledger = PgLedger {
            config,
            connector,
            node: node.to_string(),
            readers: Mutex::new((Vec::new(), 0)),
            reader_freed: Condvar::new(),
            max_readers: settings.pool,
            writer: Mutex::new(None),
            locks: Mutex::new((None, 0)),
        };
        let mut conn = ledger.connect()?;
        migrate(&mut conn.client)?;
        *ledger.writer.lock().map_err(|_| storage("poisoned"))? = Some(conn);
        Ok(ledger)
    }

    /// This node's name, as its audit records and certificates carry it.
    pub fn node(&self) -> &str {
        &self.node
    }

    fn connect(&self) -> Result<Conn, LedgerError> {
        let client = match &self.connector {
            Connector::Plain => self.config.connect(postgres::NoTls)?,
            Connector::Tls(t) => self.config.connect(t.clone())?,
        };
        Ok(Conn {
            client,
            statements: HashMap::new(),
        })
    }

    fn with_reader<T>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<T, postgres::Error>,
    ) -> Result<T, LedgerError> {
        let mut conn = self.checkout()?;
        let result = f(&mut conn);
        let broken = conn.client.is_closed();
        let mut pool = self.readers.lock().map_err(|_| storage("poisoned"))?;
        if broken {
            pool.1 -= 1;
        } else {
            pool.0.push(conn);
        }
        drop(pool);
        self.reader_freed.notify_one();
        Ok(result?)
    }

    fn checkout(&self) -> Result<Conn, LedgerError> {
        let mut pool = self.readers.lock().map_err(|_| storage("poisoned"))?;
        loop {
            if let Some(c) = pool.0.pop() {
                return Ok(c);
            }
            if pool.1 < self.max_readers {
                pool.1 += 1;
                drop(pool);
                return self.connect().inspect_err(|_| {
                    if let Ok(mut p) = self.readers.lock() {
                        p.1 -= 1;
                    }
                });
            }
            let (p, timeout) = self
                .reader_freed
                .wait_timeout(pool, POOL_WAIT)
                .map_err(|_| storage("poisoned"))?;
            pool = p;
            if timeout.timed_out() && pool.0.is_empty() {
                return Err(storage("no ledger connection free (ledger.postgres.pool)"));
            }
        }
    }

    fn writer(&self) -> Result<MutexGuard<'_, Option<Conn>>, LedgerError> {
        let mut w = self.writer.lock().map_err(|_| storage("poisoned"))?;
        if w.as_ref().is_none_or(|c| c.client.is_closed()) {
            *w = Some(self.connect()?);
        }
        Ok(w)
    }

    /// Every certificate row of `serials`, for `estctl ledger migrate`'s comparison.
    pub fn certificates_by_serials(
        &self,
        serials: &[Vec<u8>],
    ) -> Result<Vec<StoredCertificate>, LedgerError> {
        self.with_reader(|c| {
            c.query(
                certificate_select!("WHERE serial = ANY($1) ORDER BY serial"),
                &[&serials],
            )?
            .iter()
            .map(certificate_from_row)
            .collect()
        })
    }

    /// The devices named, for `estctl ledger migrate`'s comparison.
    pub fn devices_by_names(&self, names: &[String]) -> Result<Vec<DeviceRecord>, LedgerError> {
        let rows = self
            .with_reader(|c| c.query(device_select!("WHERE d.common_name = ANY($1)"), &[&names]))?;
        rows.iter().map(device_from_row).collect()
    }

    /// Copies rows as they are (`estctl ledger migrate`): certificates with their
    /// revocation and successor, devices in their state. Rows already present are left
    /// alone unless this node's run changed them since (a revocation, a successor, a device's
    /// state), so a second run copies only what changed. One transaction per call.
    pub fn import(
        &self,
        certificates: &[StoredCertificate],
        devices: &[DeviceRecord],
        node: &str,
    ) -> Result<(u64, u64), LedgerError> {
        let mut guard = self.writer()?;
        let conn = guard.as_mut().ok_or_else(|| storage("no writer"))?;
        let mut tx = conn.client.transaction()?;
        let mut run = ImportColumns::default();
        for c in certificates {
            run.push(c);
        }
        let certs = tx.execute(
            "INSERT INTO certificates (serial, subject, common_name, sans, spki_sha256, \
             not_before, not_after, profile, operation, requester, client_ip, issued_at_ms, \
             der, ca, status, revoked_at_ms, revocation_reason, superseded_by, node) \
             SELECT * , $19 FROM unnest($1::bytea[], $2::text[], $3::text[], $4::text[], \
             $5::bytea[], $6::int8[], $7::int8[], $8::text[], $9::text[], $10::text[], \
             $11::text[], $12::int8[], $13::bytea[], $14::text[], $15::text[], $16::int8[], \
             $17::int2[], $18::bytea[]) \
             ON CONFLICT (serial) DO UPDATE SET status = excluded.status, \
             revoked_at_ms = excluded.revoked_at_ms, \
             revocation_reason = excluded.revocation_reason, \
             superseded_by = excluded.superseded_by \
             WHERE certificates.node = excluded.node AND (certificates.status, \
             certificates.revoked_at_ms, certificates.revocation_reason, \
             certificates.superseded_by) IS DISTINCT FROM (excluded.status, \
             excluded.revoked_at_ms, excluded.revocation_reason, excluded.superseded_by)",
            &[
                &run.record.serial,
                &run.record.subject,
                &run.record.common_name,
                &run.record.sans,
                &run.record.spki,
                &run.record.not_before,
                &run.record.not_after,
                &run.record.profile,
                &run.record.operation,
                &run.record.requester,
                &run.record.client_ip,
                &run.record.issued_at,
                &run.record.der,
                &run.record.ca,
                &run.status,
                &run.revoked_at,
                &run.reason,
                &run.superseded_by,
                &node,
            ],
        )?;
        let mut d = DeviceColumns::default();
        let mut first = Vec::with_capacity(devices.len());
        for dev in devices {
            d.cn.push(dev.cn.clone());
            d.status.push(dev.status.as_str().to_string());
            d.at.push(dev.last_enrolled_ms);
            d.ip.push(dev.last_ip.clone());
            d.serial.push(dev.current_serial.clone());
            first.push(dev.first_enrolled_ms);
        }
        let devs = tx.execute(
            "INSERT INTO devices (common_name, status, first_enrolled_ms, last_enrolled_ms, \
             last_ip, current_serial) SELECT * FROM unnest($1::text[], $2::text[], \
             $3::int8[], $4::int8[], $5::text[], $6::bytea[]) \
             ON CONFLICT (common_name) DO UPDATE SET status = excluded.status, \
             first_enrolled_ms = excluded.first_enrolled_ms, \
             last_enrolled_ms = excluded.last_enrolled_ms, last_ip = excluded.last_ip, \
             current_serial = excluded.current_serial \
             WHERE devices.current_serial IN \
                 (SELECT serial FROM certificates WHERE node = $7) \
             AND (devices.status, devices.first_enrolled_ms, devices.last_enrolled_ms, \
             devices.last_ip, devices.current_serial) IS DISTINCT FROM (excluded.status, \
             excluded.first_enrolled_ms, excluded.last_enrolled_ms, excluded.last_ip, \
             excluded.current_serial)",
            &[&d.cn, &d.status, &first, &d.at, &d.ip, &d.serial, &node],
        )?;
        tx.commit()?;
        Ok((certs, devs))
    }

    /// Sets the CRL numbers (per CA) and a node's audit head as a migrated ledger had them
    /// (never lowering either).
    pub fn import_state(
        &self,
        crl_numbers: &[(String, u64)],
        node: &str,
        head: Option<&AuditHead>,
    ) -> Result<(), LedgerError> {
        let mut guard = self.writer()?;
        let conn = guard.as_mut().ok_or_else(|| storage("no writer"))?;
        let mut tx = conn.client.transaction()?;
        for (ca, number) in crl_numbers.iter().filter(|(_, n)| *n > 0) {
            tx.execute(
                "INSERT INTO crl_numbers (ca, number) VALUES ($1, $2) ON CONFLICT (ca) \
                 DO UPDATE SET number = excluded.number WHERE crl_numbers.number < excluded.number",
                &[ca, &(*number as i64)],
            )?;
        }
        if let Some((seq, hash)) = head {
            tx.execute(
                "INSERT INTO audit_heads (node, seq, hash) VALUES ($1, $2, $3) ON CONFLICT (node) \
                 DO UPDATE SET seq = excluded.seq, hash = excluded.hash \
                 WHERE audit_heads.seq < excluded.seq",
                &[&node, &(*seq as i64), hash],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Every node's audit head: the chains `estctl audit verify` should see.
    pub fn audit_heads(&self) -> Result<Vec<(String, AuditHead)>, LedgerError> {
        self.with_reader(|c| {
            Ok(
                c.query("SELECT node, seq, hash FROM audit_heads ORDER BY node", &[])?
                    .iter()
                    .map(|r| {
                        (
                            r.get::<_, String>(0),
                            (r.get::<_, i64>(1) as u64, r.get::<_, String>(2)),
                        )
                    })
                    .collect(),
            )
        })
    }
}

fn tls_connector(ca: &Path) -> Result<tokio_postgres_rustls::MakeRustlsConnect, LedgerError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .map_err(|e| storage(format!("ledger.postgres.ca_file {}: {e}", ca.display())))?;
    for cert in certs {
        let cert =
            cert.map_err(|e| storage(format!("ledger.postgres.ca_file {}: {e}", ca.display())))?;
        roots
            .add(cert)
            .map_err(|e| storage(format!("ledger.postgres.ca_file {}: {e}", ca.display())))?;
    }
    if roots.is_empty() {
        return Err(storage(format!(
            "ledger.postgres.ca_file {}: no certificate",
            ca.display()
        )));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(storage)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

fn migrate(client: &mut Client) -> Result<(), LedgerError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )?;
    let applied: i32 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )?
        .get(0);
    let known = MIGRATIONS.len() as i32;
    if applied > known {
        return Err(storage(format!(
            "ledger schema version {applied} is newer than this build ({known})"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        tx.batch_execute(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&(i as i32 + 1)],
        )?;
    }
    tx.commit()?;
    Ok(())
}

fn certificate_from_row(r: &Row) -> Result<StoredCertificate, postgres::Error> {
    let sans: String = r.try_get(3)?;
    Ok(StoredCertificate {
        record: CertificateRecord {
            serial: r.try_get(0)?,
            subject: r.try_get(1)?,
            common_name: r.try_get(2)?,
            sans: serde_json::from_str(&sans).unwrap_or_default(),
            spki_sha256: r.try_get(4)?,
            not_before: r.try_get(5)?,
            not_after: r.try_get(6)?,
            profile: r.try_get(7)?,
            operation: r.try_get(8)?,
            requester: r.try_get(9)?,
            client_ip: r.try_get(10)?,
            issued_at_ms: r.try_get(11)?,
            der: r.try_get(12)?,
            ca: r.try_get(16)?,
        },
        revoked_at_ms: r.try_get(13)?,
        revocation_reason: r.try_get::<_, Option<i16>>(14)?.map(|v| v as u8),
        superseded_by: r.try_get(15)?,
    })
}

fn device_from_row(r: &Row) -> Result<DeviceRecord, LedgerError> {
    let status: String = r.try_get(1)?;
    Ok(DeviceRecord {
        cn: r.try_get(0)?,
        status: DeviceState::parse(&status)
            .ok_or_else(|| storage(format!("bad device status {status:?}")))?,
        first_enrolled_ms: r.try_get(2)?,
        last_enrolled_ms: r.try_get(3)?,
        last_ip: r.try_get(4)?,
        current_serial: r.try_get(5)?,
        current_not_after: r.try_get(6)?,
    })
}

/// Certificate records as columns for `unnest`, in the table's column order.
#[derive(Default)]
struct RecordColumns {
    serial: Vec<Vec<u8>>,
    subject: Vec<String>,
    common_name: Vec<String>,
    sans: Vec<String>,
    spki: Vec<Vec<u8>>,
    not_before: Vec<i64>,
    not_after: Vec<i64>,
    profile: Vec<String>,
    operation: Vec<String>,
    requester: Vec<String>,
    client_ip: Vec<String>,
    issued_at: Vec<i64>,
    der: Vec<Vec<u8>>,
    ca: Vec<String>,
}

impl RecordColumns {
    fn push(&mut self, c: &CertificateRecord) {
        self.serial.push(c.serial.clone());
        self.subject.push(c.subject.clone());
        self.common_name.push(c.common_name.clone());
        self.sans
            .push(serde_json::to_string(&c.sans).unwrap_or_else(|_| "[]".into()));
        self.spki.push(c.spki_sha256.clone());
        self.not_before.push(c.not_before);
        self.not_after.push(c.not_after);
        self.profile.push(c.profile.clone());
        self.operation.push(c.operation.clone());
        self.requester.push(c.requester.clone());
        self.client_ip.push(c.client_ip.clone());
        self.issued_at.push(c.issued_at_ms);
        self.der.push(c.der.clone());
        self.ca.push(c.ca.clone());
    }
}

/// A run of consecutive `Issue` writes, as columns for `unnest`.
#[derive(Default)]
struct IssueColumns {
    record: RecordColumns,
    /// (previous serial, new serial) for `superseded_by`.
    superseded: (Vec<Vec<u8>>, Vec<Vec<u8>>),
    devices: DeviceColumns,
}

/// Device writes of a run, each with the current certificate it expects (`None`: no
/// device, or a deleted one).
#[derive(Default)]
struct DeviceColumns {
    cn: Vec<String>,
    status: Vec<String>,
    at: Vec<i64>,
    ip: Vec<String>,
    serial: Vec<Vec<u8>>,
    expected: Vec<Option<Vec<u8>>>,
}

/// Certificates copied by `estctl ledger migrate`, as columns for `unnest`: one statement
/// per page, whatever its size.
#[derive(Default)]
struct ImportColumns {
    record: RecordColumns,
    status: Vec<&'static str>,
    revoked_at: Vec<Option<i64>>,
    reason: Vec<Option<i16>>,
    superseded_by: Vec<Option<Vec<u8>>>,
}

impl ImportColumns {
    fn push(&mut self, c: &StoredCertificate) {
        self.record.push(&c.record);
        self.status.push(if c.revoked_at_ms.is_some() {
            "revoked"
        } else {
            "valid"
        });
        self.revoked_at.push(c.revoked_at_ms);
        self.reason.push(c.revocation_reason.map(i16::from));
        self.superseded_by.push(c.superseded_by.clone());
    }
}

impl IssueColumns {
    fn push(
        &mut self,
        c: &CertificateRecord,
        device_status: Option<DeviceState>,
        supersedes: Option<&Vec<u8>>,
    ) {
        self.record.push(c);
        if let Some(previous) = supersedes {
            self.superseded.0.push(previous.clone());
            self.superseded.1.push(c.serial.clone());
        }
        if let Some(status) = device_status {
            let d = &mut self.devices;
            d.cn.push(c.common_name.clone());
            d.status.push(status.as_str().to_string());
            d.at.push(c.issued_at_ms);
            d.ip.push(c.client_ip.clone());
            d.serial.push(c.serial.clone());
            d.expected.push(supersedes.cloned());
        }
    }

    fn is_empty(&self) -> bool {
        self.record.serial.is_empty()
    }

    /// Three to four statements for the whole run.
    fn flush(&mut self, tx: &mut postgres::Transaction<'_>, node: &str) -> Result<(), LedgerError> {
        if self.is_empty() {
            return Ok(());
        }
        let run = std::mem::take(self);
        tx.execute(
            "INSERT INTO certificates (serial, subject, common_name, sans, spki_sha256, \
             not_before, not_after, profile, operation, requester, client_ip, issued_at_ms, \
             der, ca, status, node) \
             SELECT s, subj, cn, sans, spki, nb, na, prof, op, req, ip, at, der, ca, 'valid', \
             $15 FROM unnest($1::bytea[], $2::text[], $3::text[], $4::text[], $5::bytea[], \
             $6::int8[], $7::int8[], $8::text[], $9::text[], $10::text[], $11::text[], \
             $12::int8[], $13::bytea[], $14::text[]) AS u(s, subj, cn, sans, spki, nb, na, \
             prof, op, req, ip, at, der, ca)",
            &[
                &run.record.serial,
                &run.record.subject,
                &run.record.common_name,
                &run.record.sans,
                &run.record.spki,
                &run.record.not_before,
                &run.record.not_after,
                &run.record.profile,
                &run.record.operation,
                &run.record.requester,
                &run.record.client_ip,
                &run.record.issued_at,
                &run.record.der,
                &run.record.ca,
                &node,
            ],
        )?;
        if !run.superseded.0.is_empty() {
            tx.execute(
                "UPDATE certificates c SET superseded_by = u.new \
                 FROM unnest($1::bytea[], $2::bytea[]) AS u(prev, new) WHERE c.serial = u.prev",
                &[&run.superseded.0, &run.superseded.1],
            )?;
        }
        apply_device_run(tx, &run.devices)
    }
}

/// Moves each device from the state its decision saw to its new one. A device that is no
/// longer in the state its decision expected (another node changed it) fails the batch:
/// none of its certificates is released.
fn apply_device_run(
    tx: &mut postgres::Transaction<'_>,
    d: &DeviceColumns,
) -> Result<(), LedgerError> {
    if d.cn.is_empty() {
        return Ok(());
    }
    // Existing rows first: a deleted device starts a new life (its first enrolment is
    // now); a live one must still hold the certificate its decision superseded.
    let updated: Vec<String> = tx
        .query(
            "UPDATE devices d SET status = u.status, \
             first_enrolled_ms = CASE WHEN d.status = 'deleted' THEN u.at \
                 ELSE d.first_enrolled_ms END, \
             last_enrolled_ms = u.at, last_ip = u.ip, current_serial = u.serial \
             FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::bytea[], \
             $6::bytea[]) AS u(cn, status, at, ip, serial, expected) \
             WHERE d.common_name = u.cn AND ((u.expected IS NULL AND d.status = 'deleted') \
             OR (u.expected IS NOT NULL AND d.status <> 'deleted' \
                 AND d.current_serial = u.expected)) \
             RETURNING d.common_name",
            &[&d.cn, &d.status, &d.at, &d.ip, &d.serial, &d.expected],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut new = DeviceColumns::default();
    for i in 0..d.cn.len() {
        if d.expected[i].is_none() && !updated.contains(&d.cn[i]) {
            new.cn.push(d.cn[i].clone());
            new.status.push(d.status[i].clone());
            new.at.push(d.at[i]);
            new.ip.push(d.ip[i].clone());
            new.serial.push(d.serial[i].clone());
        }
    }
    let inserted = if new.cn.is_empty() {
        0
    } else {
        tx.query(
            "INSERT INTO devices (common_name, status, first_enrolled_ms, last_enrolled_ms, \
             last_ip, current_serial) \
             SELECT cn, status, at, at, ip, serial FROM unnest($1::text[], $2::text[], \
             $3::int8[], $4::text[], $5::bytea[]) AS u(cn, status, at, ip, serial) \
             ON CONFLICT (common_name) DO NOTHING RETURNING common_name",
            &[&new.cn, &new.status, &new.at, &new.ip, &new.serial],
        )?
        .len()
    };
    if updated.len() + inserted != d.cn.len() {
        return Err(storage(format!(
            "{} of {} device(s) changed under the decision (another node); batch refused",
            d.cn.len() - updated.len() - inserted,
            d.cn.len()
        )));
    }
    Ok(())
}

impl Ledger for PgLedger {
    fn device(&self, common_name: &str) -> Result<Option<DeviceRecord>, LedgerError> {
        let row = self.with_reader(|c| {
            Ok(
                c.query(device_select!("WHERE d.common_name = $1"), &[&common_name])?
                    .into_iter()
                    .next(),
            )
        })?;
        row.as_ref().map(device_from_row).transpose()
    }

    fn certificate(&self, serial: &[u8]) -> Result<Option<StoredCertificate>, LedgerError> {
        self.with_reader(|c| {
            c.query(certificate_select!("WHERE serial = $1"), &[&serial])?
                .first()
                .map(certificate_from_row)
                .transpose()
        })
    }

    fn serial_exists(&self, serial: &[u8]) -> Result<bool, LedgerError> {
        self.with_reader(|c| {
            Ok(!c
                .query("SELECT 1 FROM certificates WHERE serial = $1", &[&serial])?
                .is_empty())
        })
    }

    fn certificates_for_cn(
        &self,
        common_name: &str,
        after_serial: &[u8],
        limit: u32,
    ) -> Result<Vec<StoredCertificate>, LedgerError> {
        self.with_reader(|c| {
            c.query(
                certificate_select!(
                    "WHERE common_name = $1 AND serial > $2 ORDER BY serial LIMIT $3"
                ),
                &[&common_name, &after_serial, &i64::from(limit)],
            )?
            .iter()
            .map(certificate_from_row)
            .collect()
        })
    }

    fn serials_after(&self, after: Option<&[u8]>, limit: u32) -> Result<Vec<Vec<u8>>, LedgerError> {
        let after = after.unwrap_or(&[]);
        self.with_reader(|c| {
            Ok(c.query(
                "SELECT serial FROM certificates WHERE serial > $1 ORDER BY serial LIMIT $2",
                &[&after, &i64::from(limit)],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
        })
    }

    fn node_serials_after(
        &self,
        after: Option<&[u8]>,
        limit: u32,
    ) -> Result<Vec<Vec<u8>>, LedgerError> {
        let after = after.unwrap_or(&[]);
        self.with_reader(|c| {
            Ok(c.query(
                "SELECT serial FROM certificates WHERE node = $1 AND serial > $2 \
                 ORDER BY serial LIMIT $3",
                &[&self.node, &after, &i64::from(limit)],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
        })
    }

    fn unexpired_valid(
        &self,
        common_name: &str,
        now: i64,
    ) -> Result<Vec<(Vec<u8>, String)>, LedgerError> {
        self.with_reader(|c| {
            Ok(c.query(
                "SELECT serial, profile FROM certificates WHERE common_name = $1 \
                 AND status = 'valid' AND not_after > $2 ORDER BY serial",
                &[&common_name, &now],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
        })
    }

    fn expiring_certificates(
        &self,
        now: i64,
        before: i64,
        after: Option<(i64, &[u8])>,
        limit: u32,
    ) -> Result<Vec<StoredCertificate>, LedgerError> {
        let (from, serial) = super::expiry_cursor(now, after);
        self.with_reader(|c| {
            c.query(
                certificate_select!(
                    "WHERE not_after >= $1 AND not_after <= $2 AND status = 'valid' \
                     AND (not_after, serial) > ($1, $3) ORDER BY not_after, serial LIMIT $4"
                ),
                &[&from, &before, &serial, &i64::from(limit)],
            )?
            .iter()
            .map(certificate_from_row)
            .collect()
        })
    }

    fn counts(
        &self,
        issued_since_ms: i64,
        now: i64,
        expiring_before: i64,
    ) -> Result<LedgerCounts, LedgerError> {
        self.with_reader(|c| {
            let devices_by_status = c
                .query("SELECT status, COUNT(*) FROM devices GROUP BY status", &[])?
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
                .collect();
            let issued_since: i64 = c
                .query(
                    "SELECT COUNT(*) FROM certificates WHERE issued_at_ms >= $1",
                    &[&issued_since_ms],
                )?
                .first()
                .map(|r| r.get(0))
                .unwrap_or(0);
            let expiring: i64 = c
                .query(
                    "SELECT COUNT(*) FROM certificates WHERE not_after >= $1 \
                     AND not_after <= $2 AND status = 'valid'",
                    &[&now, &expiring_before],
                )?
                .first()
                .map(|r| r.get(0))
                .unwrap_or(0);
            Ok(LedgerCounts {
                devices_by_status,
                issued_since: issued_since as u64,
                expiring: expiring as u64,
            })
        })
    }

    fn list_devices(&self, q: &DeviceQuery<'_>) -> Result<Vec<DeviceRecord>, LedgerError> {
        // One statement for every filter combination: an absent filter is a NULL
        // parameter, so the plan is prepared once per connection and walks the primary
        // key (or the status index) from the cursor.
        let status = q.status.map(|s| s.as_str());
        let (prefix, end) = if q.cn_prefix.is_empty() {
            (None, None)
        } else {
            (Some(q.cn_prefix), super::prefix_end(q.cn_prefix))
        };
        let rows = self.with_reader(|c| {
            c.query(
                device_select!(
                    "WHERE d.common_name > $1 AND ($2::text IS NULL OR d.status = $2) \
                     AND ($3::text IS NULL OR d.common_name >= $3) \
                     AND ($4::text IS NULL OR d.common_name < $4) \
                     AND ($5::int8 IS NULL OR c.not_after <= $5) \
                     ORDER BY d.common_name LIMIT $6"
                ),
                &[
                    &q.after,
                    &status,
                    &prefix,
                    &end,
                    &q.expiring_before,
                    &i64::from(q.limit),
                ],
            )
        })?;
        rows.iter().map(device_from_row).collect()
    }

    fn apply(&self, writes: &[LedgerWrite], audit_head: &AuditHead) -> Result<(), LedgerError> {
        let mut guard = self.writer()?;
        let conn = guard.as_mut().ok_or_else(|| storage("no writer"))?;
        let result = apply_in(&mut conn.client, writes, audit_head, &self.node);
        if conn.client.is_closed() {
            *guard = None;
        }
        result
    }

    fn crl_number(&self, ca: &str) -> Result<u64, LedgerError> {
        self.with_reader(|c| {
            Ok(
                c.query("SELECT number FROM crl_numbers WHERE ca = $1", &[&ca])?
                    .first()
                    .map(|r| r.get::<_, i64>(0) as u64)
                    .unwrap_or(0),
            )
        })
    }

    fn revoked_unexpired(&self, ca: &str, now: i64) -> Result<Vec<RevokedRow>, LedgerError> {
        self.with_reader(|c| {
            Ok(c.query(
                "SELECT serial, revoked_at_ms, revocation_reason FROM certificates \
                 WHERE status = 'revoked' AND ca = $1 AND not_after >= $2 ORDER BY serial",
                &[&ca, &now],
            )?
            .iter()
            .map(|r| RevokedRow {
                serial: r.get(0),
                revoked_at_ms: r.get::<_, Option<i64>>(1).unwrap_or(0),
                reason: r.get::<_, Option<i16>>(2).unwrap_or(0) as u8,
            })
            .collect())
        })
    }

    fn audit_head(&self) -> Result<Option<AuditHead>, LedgerError> {
        self.with_reader(|c| {
            Ok(c.query(
                "SELECT seq, hash FROM audit_heads WHERE node = $1",
                &[&self.node],
            )?
            .first()
            .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, String>(1))))
        })
    }

    fn revocation_generation(&self) -> Result<u64, LedgerError> {
        self.with_reader(|c| {
            Ok(c.query("SELECT n FROM revocation_generation", &[])?
                .first()
                .map(|r| r.get::<_, i64>(0) as u64)
                .unwrap_or(0))
        })
    }

    fn health(&self) -> Result<(), LedgerError> {
        self.with_reader(|c| c.query("SELECT 1", &[]).map(|_| ()))
    }

    fn lock_device(&self, common_name: &str) -> Result<Option<DeviceHold<'_>>, LedgerError> {
        let key = lock_key(common_name);
        let mut locks = self.locks.lock().map_err(|_| storage("poisoned"))?;
        if locks.0.as_ref().is_none_or(|c| c.client.is_closed()) {
            locks.0 = Some(self.connect()?);
            locks.1 += 1;
        }
        let generation = locks.1;
        let conn = locks
            .0
            .as_mut()
            .ok_or_else(|| storage("no lock connection"))?;
        let taken = conn.query("SELECT pg_try_advisory_lock($1)", &[&key]);
        let taken = match taken {
            Ok(rows) => rows.first().map(|r| r.get::<_, bool>(0)).unwrap_or(false),
            Err(e) => {
                locks.0 = None;
                locks.1 += 1;
                return Err(e.into());
            }
        };
        drop(locks);
        Ok(taken.then(|| {
            DeviceHold::new(Box::new(PgDeviceLock {
                ledger: self,
                key,
                generation,
            }))
        }))
    }
}

fn apply_in(
    client: &mut Client,
    writes: &[LedgerWrite],
    audit_head: &AuditHead,
    node: &str,
) -> Result<(), LedgerError> {
    let mut tx = client.transaction()?;
    let mut run = IssueColumns::default();
    let mut revoked = false;
    for w in writes {
        if let LedgerWrite::Issue {
            certificate,
            device_status,
            supersedes,
        } = w
        {
            run.push(certificate, *device_status, supersedes.as_ref());
            continue;
        }
        run.flush(&mut tx, node)?;
        match w {
            LedgerWrite::Issue { .. } => {}
            LedgerWrite::DeleteDevice { common_name } => {
                tx.execute(
                    "UPDATE devices SET status = 'deleted' WHERE common_name = $1",
                    &[common_name],
                )?;
            }
            LedgerWrite::AllowDevice { common_name } => {
                tx.execute(
                    "UPDATE devices SET status = 'deleted' \
                     WHERE common_name = $1 AND status = 'revoked'",
                    &[common_name],
                )?;
            }
            LedgerWrite::CrlIssued { ca, number } => {
                // CRL numbers only grow (RFC 5280 §5.2.3), across all nodes: the upsert
                // raises the number or changes nothing, and nothing means refused.
                let raised = tx.execute(
                    "INSERT INTO crl_numbers (ca, number) VALUES ($1, $2) ON CONFLICT (ca) \
                     DO UPDATE SET number = excluded.number \
                     WHERE crl_numbers.number < excluded.number",
                    &[ca, &(*number as i64)],
                )?;
                if raised != 1 {
                    return Err(storage(format!(
                        "CRL number {number} is not above the last one issued"
                    )));
                }
            }
            LedgerWrite::Revoke {
                serial,
                at_ms,
                reason,
            } => {
                tx.execute(
                    "UPDATE certificates SET status = 'revoked', revoked_at_ms = $2, \
                     revocation_reason = $3 WHERE serial = $1 AND status = 'valid'",
                    &[serial, at_ms, &i16::from(*reason)],
                )?;
                tx.execute(
                    "UPDATE devices SET status = 'revoked' WHERE current_serial = $1",
                    &[serial],
                )?;
                revoked = true;
            }
        }
    }
    run.flush(&mut tx, node)?;
    if revoked {
        tx.execute("UPDATE revocation_generation SET n = n + 1", &[])?;
    }
    tx.execute(
        "INSERT INTO audit_heads (node, seq, hash) VALUES ($1, $2, $3) \
         ON CONFLICT (node) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
        &[&node, &(audit_head.0 as i64), &audit_head.1],
    )?;
    tx.commit()?;
    Ok(())
}
