//! `estctl ledger migrate --from sqlite PATH --to postgres URL --node NAME`: copies an
//! appliance's SQLite ledger into a PostgreSQL ledger, then compares every copied row.
//!
//! The copy is taken from a snapshot (SQLite's online backup), so the appliance may keep
//! issuing meanwhile. A second run copies what changed since; once the node runs on
//! PostgreSQL and its audit head there has moved past the SQLite ledger's, the migration
//! refuses to run again (it would turn devices back to older states).

use std::path::{Path, PathBuf};

use clap::Subcommand;

use hsm_est_signer::config::PostgresConfig;
use hsm_est_signer::ledger::{
    DeviceQuery, DeviceRecord, Ledger, PgLedger, SqliteLedger, StoredCertificate,
};

/// Rows per page and per PostgreSQL transaction.
const PAGE: u32 = 1000;

#[derive(Subcommand)]
pub enum LedgerCommand {
    /// Copy a SQLite ledger (a live appliance's too) into PostgreSQL and verify the copy;
    /// running it again copies only what changed.
    Migrate {
        /// `sqlite PATH`: the ledger file.
        #[arg(long, num_args = 2, value_names = ["KIND", "PATH"])]
        from: Vec<String>,
        /// `postgres URL`: the shared ledger (no password in it).
        #[arg(long, num_args = 2, value_names = ["KIND", "URL"])]
        to: Vec<String>,
        /// The node name the appliance keeps as a member of the shared ledger
        /// (`audit.node` in its signer.yaml): its audit log becomes that node's chain.
        #[arg(long)]
        node: String,
        /// The database password, in a file of mode 0600.
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// The database server's trust anchors (PEM): connect with TLS.
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
}

pub fn run(command: LedgerCommand) -> Result<(), String> {
    match command {
        LedgerCommand::Migrate {
            from,
            to,
            node,
            password_file,
            ca_file,
        } => {
            let [kind, path] = from.as_slice() else {
                return Err("--from takes: sqlite PATH".into());
            };
            if kind != "sqlite" {
                return Err(format!("--from {kind}: only sqlite is a source"));
            }
            let [kind, url] = to.as_slice() else {
                return Err("--to takes: postgres URL".into());
            };
            if kind != "postgres" {
                return Err(format!("--to {kind}: only postgres is a target"));
            }
            let target = PostgresConfig {
                url: url.clone(),
                password_file,
                ca_file,
                pool: 2,
            };
            migrate(Path::new(path), &target, &node)
        }
    }
}

/// What one pass copied and compared.
struct Tally {
    certificates: u64,
    devices: u64,
    written: (u64, u64),
    digest: ring::digest::Context,
}

fn migrate(from: &Path, to: &PostgresConfig, node: &str) -> Result<(), String> {
    if !from.is_file() {
        return Err(format!("{}: no such ledger", from.display()));
    }
    let live = SqliteLedger::open(from).map_err(|e| format!("{}: {e}", from.display()))?;
    let dir = tempdir(from)?;
    let snapshot_path = dir.join("snapshot.sqlite");
    let result = (|| {
        live.snapshot(&snapshot_path)
            .map_err(|e| format!("snapshot of {}: {e}", from.display()))?;
        let source = SqliteLedger::open(&snapshot_path).map_err(|e| e.to_string())?;
        let target = PgLedger::open(to, node).map_err(|e| e.to_string())?;
        copy_and_verify(&source, &target, node)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn tempdir(near: &Path) -> Result<PathBuf, String> {
    let parent = near
        .canonicalize()
        .map_err(|e| e.to_string())?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    let dir = parent.join(format!(".estctl-migrate-{}", std::process::id()));
    std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

fn copy_and_verify(source: &SqliteLedger, target: &PgLedger, node: &str) -> Result<(), String> {
    let head = source.audit_head().map_err(|e| e.to_string())?;
    let target_head = target.audit_head().map_err(|e| e.to_string())?;
    let source_seq = head.as_ref().map(|h| h.0).unwrap_or(0);
    if let Some((seq, _)) = &target_head {
        if *seq > source_seq {
            return Err(format!(
                "node {node} is at audit record {seq} in PostgreSQL, past this ledger's \
                 {source_seq}: it already runs on PostgreSQL, and copying again would undo \
                 its later decisions"
            ));
        }
    }
    let mut copied = Tally::new();
    // Certificates first: devices point at them.
    let mut after: Option<Vec<u8>> = None;
    loop {
        let serials = source
            .serials_after(after.as_deref(), PAGE)
            .map_err(|e| e.to_string())?;
        let Some(last) = serials.last().cloned() else {
            break;
        };
        let mut page = Vec::with_capacity(serials.len());
        for s in &serials {
            page.push(
                source
                    .certificate(s)
                    .map_err(|e| e.to_string())?
                    .ok_or("a certificate vanished from the snapshot")?,
            );
        }
        let (c, _) = target.import(&page, &[], node).map_err(|e| e.to_string())?;
        copied.written.0 += c;
        let stored = target
            .certificates_by_serials(&serials)
            .map_err(|e| e.to_string())?;
        compare_certificates(&page, &stored)?;
        for c in &page {
            copied.add_certificate(c);
        }
        after = Some(last);
    }
    let mut cursor = String::new();
    loop {
        let page = source
            .list_devices(&DeviceQuery {
                after: &cursor,
                limit: PAGE,
                ..Default::default()
            })
            .map_err(|e| e.to_string())?;
        let Some(last) = page.last() else {
            break;
        };
        let (_, d) = target.import(&[], &page, node).map_err(|e| e.to_string())?;
        copied.written.1 += d;
        let names: Vec<String> = page.iter().map(|d| d.cn.clone()).collect();
        let stored = target.devices_by_names(&names).map_err(|e| e.to_string())?;
        compare_devices(&page, &stored)?;
        for d in &page {
            copied.add_device(d);
        }
        cursor = last.cn.clone();
    }
    let crls = source.crl_numbers().map_err(|e| e.to_string())?;
    target
        .import_state(&crls, node, head.as_ref())
        .map_err(|e| e.to_string())?;
    for (ca, number) in &crls {
        if target.crl_number(ca).map_err(|e| e.to_string())? < *number {
            return Err(format!("CA {ca}'s CRL number did not reach PostgreSQL"));
        }
    }
    let crl = crls
        .iter()
        .map(|(ca, n)| format!("{ca} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "migrated to PostgreSQL as node {node}: {} certificates and {} devices compared equal \
         row by row ({} certificate rows and {} device rows written now; the rest were \
         there already); CRL numbers [{crl}]; audit head {}; sha256 of the copied rows {}",
        copied.certificates,
        copied.devices,
        copied.written.0,
        copied.written.1,
        head.map(|(s, h)| format!("{s}:{h}"))
            .unwrap_or_else(|| "none".into()),
        hex::encode(copied.digest.finish().as_ref()),
    );
    Ok(())
}

impl Tally {
    fn new() -> Self {
        Tally {
            certificates: 0,
            devices: 0,
            written: (0, 0),
            digest: ring::digest::Context::new(&ring::digest::SHA256),
        }
    }

    fn add_certificate(&mut self, c: &StoredCertificate) {
        self.certificates += 1;
        self.digest.update(format!("{c:?}\n").as_bytes());
    }

    fn add_device(&mut self, d: &DeviceRecord) {
        self.devices += 1;
        self.digest.update(format!("{d:?}\n").as_bytes());
    }
}

/// Every row of the source page is in PostgreSQL exactly as it is in SQLite: the
/// certificate bytes, its revocation and its successor.
fn compare_certificates(
    source: &[StoredCertificate],
    stored: &[StoredCertificate],
) -> Result<(), String> {
    for c in source {
        let found = stored.iter().find(|s| s.record.serial == c.record.serial);
        if found != Some(c) {
            return Err(format!(
                "certificate {} differs in PostgreSQL after the copy (a row changed there \
                 by another node?)",
                hex::encode(&c.record.serial)
            ));
        }
    }
    Ok(())
}

fn compare_devices(source: &[DeviceRecord], stored: &[DeviceRecord]) -> Result<(), String> {
    for d in source {
        if stored.iter().find(|s| s.cn == d.cn) != Some(d) {
            return Err(format!(
                "device {} differs in PostgreSQL after the copy (a device another node \
                 already holds?)",
                hsm_est_common::util::log_safe(&d.cn)
            ));
        }
    }
    Ok(())
}
