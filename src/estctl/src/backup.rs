//! `estctl backup --config signer.yaml --out DIR` and `estctl restore --from DIR --config
//! signer.yaml`: an online, consistent copy of what an appliance must never lose, and its
//! careful return.
//!
//! The backup holds the ledger (SQLite's online backup: one instant, while the signer
//! keeps issuing), the audit log up to the head that ledger had committed, signer.yaml,
//! the CA chain and the policy, with a manifest of SHA-256 digests. Never the token: the
//! CA key is backed up by the HSM vendor's own procedure, and hsm-est never exports it.
//!
//! Restore refuses a backup whose files changed since, whose audit chain does not verify,
//! whose chain does not reach the ledger's head, or whose ledger and chain disagree on a
//! single certificate. It writes only where nothing is yet.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use hsm_est_signer::audit;
use hsm_est_signer::config::{LedgerConfig, SignerConfig};
use hsm_est_signer::ledger::{Ledger, SqliteLedger};

const MANIFEST: &str = "MANIFEST.json";
const LEDGER: &str = "ledger.sqlite";
const AUDIT: &str = "audit.jsonl";
const CONFIG: &str = "signer.yaml";
const CA_CHAIN: &str = "ca-chain.pem";
/// The chains of the CAs in signer.yaml's `cas`, one file per CA name.
const CAS: &str = "cas";
const POLICY: &str = "policy";
/// Problems restore lists before it stops counting.
const MAX_PROBLEMS: usize = 20;

fn sha256_file(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(hex::encode(ctx.finish().as_ref()))
}

fn copy_private(from: &Path, to: &Path) -> Result<(), String> {
    let mut src = std::fs::File::open(from).map_err(|e| format!("{}: {e}", from.display()))?;
    let mut dst =
        hsm_est_common::util::create_private(to).map_err(|e| format!("{}: {e}", to.display()))?;
    std::io::copy(&mut src, &mut dst).map_err(|e| format!("{}: {e}", to.display()))?;
    dst.sync_all().map_err(|e| format!("{}: {e}", to.display()))
}

/// The audit log's records 1..=`head`, checked to end in the record the ledger committed.
/// Later records belong to batches the snapshot does not hold; they stay out.
fn copy_audit_prefix(from: &Path, to: &Path, head: Option<&(u64, String)>) -> Result<(), String> {
    let mut out =
        hsm_est_common::util::create_private(to).map_err(|e| format!("{}: {e}", to.display()))?;
    let Some((seq, hash)) = head else {
        return Ok(());
    };
    let file = std::fs::File::open(from).map_err(|e| format!("{}: {e}", from.display()))?;
    let mut reached = false;
    for line in BufReader::new(file).split(b'\n') {
        let line = line.map_err(|e| format!("{}: {e}", from.display()))?;
        out.write_all(&line)
            .and_then(|_| out.write_all(b"\n"))
            .map_err(|e| format!("{}: {e}", to.display()))?;
        let record: Value = serde_json::from_slice(&line)
            .map_err(|_| format!("{}: a record is not JSON", from.display()))?;
        if record.get("seq").and_then(Value::as_u64) == Some(*seq) {
            if record.get("hash").and_then(Value::as_str) != Some(hash.as_str()) {
                return Err(format!(
                    "audit record {seq} is not the one the ledger committed (run `estctl \
                     audit verify`)"
                ));
            }
            reached = true;
            break;
        }
    }
    if !reached {
        return Err(format!(
            "the audit log ends before record {seq}, which the ledger committed"
        ));
    }
    out.sync_all().map_err(|e| format!("{}: {e}", to.display()))
}

pub fn backup(config: &Path, out: &Path) -> Result<(), String> {
    let cfg = crate::load(config)?;
    let LedgerConfig::Sqlite(ledger_path) = &cfg.ledger else {
        return Err(
            "a PostgreSQL ledger is backed up with pg_dump (docs/OPERATIONS.md, \"Backup\"); \
             this command copies the embedded SQLite ledger"
                .into(),
        );
    };
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(out)
            .map_err(|e| {
                format!(
                    "{}: {e} (the backup directory must not exist)",
                    out.display()
                )
            })?;
    }
    let live = SqliteLedger::open(ledger_path).map_err(|e| e.to_string())?;
    live.snapshot(&out.join(LEDGER))
        .map_err(|e| format!("ledger snapshot: {e}"))?;
    let snapshot = SqliteLedger::open(&out.join(LEDGER)).map_err(|e| e.to_string())?;
    let head = snapshot.audit_head().map_err(|e| e.to_string())?;
    let certificates = count(&snapshot)?;
    // Closed before its digest is taken.
    drop(snapshot);
    copy_audit_prefix(&cfg.audit_path, &out.join(AUDIT), head.as_ref())?;
    copy_private(config, &out.join(CONFIG))?;
    copy_private(&cfg.ca_chain_file, &out.join(CA_CHAIN))?;
    // Every other CA key's chain, and every rollover's link certificates.
    let extra = ca_files(&cfg);
    if !extra.is_empty() {
        std::fs::create_dir(out.join(CAS)).map_err(|e| e.to_string())?;
    }
    for (rel, file) in &extra {
        copy_private(file, &out.join(rel))?;
    }
    std::fs::create_dir(out.join(POLICY)).map_err(|e| e.to_string())?;
    let mut policies: Vec<PathBuf> = std::fs::read_dir(&cfg.policy_dir)
        .map_err(|e| format!("{}: {e}", cfg.policy_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    policies.sort();
    for p in &policies {
        let name = p.file_name().ok_or("policy file without a name")?;
        copy_private(p, &out.join(POLICY).join(name))?;
    }
    let mut files = serde_json::Map::new();
    for rel in [LEDGER, AUDIT, CONFIG, CA_CHAIN] {
        files.insert(rel.into(), sha256_file(&out.join(rel))?.into());
    }
    for (rel, _) in &extra {
        files.insert(rel.clone(), sha256_file(&out.join(rel))?.into());
    }
    for p in &policies {
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or("policy name")?;
        let rel = format!("{POLICY}/{name}");
        files.insert(rel.clone(), sha256_file(&out.join(&rel))?.into());
    }
    let manifest = json!({
        "format": "hsm-est backup 1",
        "created": hsm_est_common::util::rfc3339_millis(hsm_est_common::util::now_millis()),
        "estctl": env!("CARGO_PKG_VERSION"),
        "audit_head": head.as_ref().map(|(s, h)| json!({"seq": s, "hash": h})),
        "certificates": certificates,
        "files": files,
        "token": "not included: back the CA key up with the HSM vendor's procedure",
    });
    crate::write_file(
        &out.join(MANIFEST),
        &(serde_json::to_string_pretty(&manifest).map_err(|e| e.to_string())? + "\n"),
        0o600,
        true,
    )?;
    println!(
        "backup in {}: ledger with {certificates} certificates, audit log up to record {}, \
         signer.yaml, {} CA chain(s) and {} policy file(s); the token is not included",
        out.display(),
        head.map(|(s, _)| s).unwrap_or(0),
        cfg.cas.len(),
        policies.len()
    );
    Ok(())
}

/// The CA files besides the default CA's chain, as (name in the backup, file): each other
/// CA key's chain and each rollover's link certificates.
fn ca_files(cfg: &hsm_est_signer::config::SignerConfig) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for (i, ca) in cfg.cas.iter().enumerate() {
        if i > 0 {
            out.push((
                format!("{CAS}/{}.pem", ca.ledger_id()),
                ca.chain_file.clone(),
            ));
        }
        if let Some(links) = &ca.links_file {
            out.push((format!("{CAS}/{}-links.pem", ca.ledger_id()), links.clone()));
        }
    }
    out
}

/// Certificates in `ledger`, counted a page by key at a time.
fn count(ledger: &SqliteLedger) -> Result<u64, String> {
    let mut n = 0u64;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let serials = ledger
            .serials_after(after.as_deref(), 1000)
            .map_err(|e| e.to_string())?;
        n += serials.len() as u64;
        match serials.last() {
            Some(last) if serials.len() == 1000 => after = Some(last.clone()),
            _ => return Ok(n),
        }
    }
}

/// Checks the backup in `from` whole, then puts it where `config` says.
pub fn restore(from: &Path, config: &Path) -> Result<(), String> {
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(from.join(MANIFEST))
            .map_err(|e| format!("{}: {e}", from.join(MANIFEST).display()))?,
    )
    .map_err(|e| format!("{MANIFEST}: {e}"))?;
    if manifest.get("format").and_then(Value::as_str) != Some("hsm-est backup 1") {
        return Err(format!("{}: not an hsm-est backup", from.display()));
    }
    let files = manifest
        .get("files")
        .and_then(Value::as_object)
        .ok_or("MANIFEST.json: no files")?;
    for rel in [LEDGER, AUDIT, CONFIG, CA_CHAIN] {
        if !files.contains_key(rel) {
            return Err(format!("MANIFEST.json: {rel} is not listed"));
        }
    }
    for (rel, digest) in files {
        if rel.contains("..") || rel.starts_with('/') {
            return Err(format!("MANIFEST.json: bad path {rel:?}"));
        }
        if Some(sha256_file(&from.join(rel))?.as_str()) != digest.as_str() {
            return Err(format!("{rel} changed since the backup was taken"));
        }
    }
    // The chain, and the ledger against it.
    let ledger = SqliteLedger::open(&from.join(LEDGER)).map_err(|e| e.to_string())?;
    let head = ledger.audit_head().map_err(|e| e.to_string())?;
    let recorded = manifest
        .get("audit_head")
        .filter(|h| !h.is_null())
        .map(|h| {
            (
                h.get("seq").and_then(Value::as_u64).unwrap_or(0),
                h.get("hash")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            )
        });
    if recorded != head {
        return Err("the ledger's audit head is not the one the backup recorded".into());
    }
    let summary = audit::verify_file(&from.join(AUDIT), head.as_ref())
        .map_err(|f| format!("the backup's audit log does not verify: {f}"))?;
    if summary.records != head.as_ref().map(|h| h.0).unwrap_or(0) {
        return Err(format!(
            "the backup's audit log goes past the ledger's head (record {} of {})",
            head.as_ref().map(|h| h.0).unwrap_or(0),
            summary.records
        ));
    }
    let head_seq = head.as_ref().map(|h| h.0).unwrap_or(0);
    let agreed =
        audit::cross_check(&from.join(AUDIT), &ledger, head_seq, MAX_PROBLEMS).map_err(|p| {
            format!(
                "the backup's ledger does not match its audit log:\n  {}",
                p.join("\n  ")
            )
        })?;
    drop(ledger);

    // Where it goes: nothing may be there yet, except identical CA chain and policy.
    let cfg = SignerConfig::load(config)?;
    let LedgerConfig::Sqlite(ledger_path) = &cfg.ledger else {
        return Err(
            "restore writes an embedded SQLite ledger; signer.yaml names PostgreSQL \
                    (restore that with pg_restore, then this node's audit log)"
                .into(),
        );
    };
    for target in [ledger_path, &cfg.audit_path] {
        if target.exists() {
            return Err(format!(
                "{} exists: restore never overwrites a ledger or an audit log",
                target.display()
            ));
        }
    }
    let mut put: Vec<(PathBuf, PathBuf)> = vec![(from.join(CA_CHAIN), cfg.ca_chain_file.clone())];
    for (rel, file) in ca_files(&cfg) {
        if !files.contains_key(&rel) {
            return Err(format!(
                "the backup holds no {rel} (signer.yaml names {})",
                file.display()
            ));
        }
        put.push((from.join(rel), file));
    }
    for rel in files.keys().filter(|r| r.starts_with("policy/")) {
        let name = Path::new(rel).file_name().ok_or("policy name")?;
        put.push((from.join(rel), cfg.policy_dir.join(name)));
    }
    for (src, dst) in &put {
        if dst.exists() && sha256_file(dst)? != sha256_file(src)? {
            return Err(format!(
                "{} differs from the backup's; move it away to restore",
                dst.display()
            ));
        }
    }
    std::fs::create_dir_all(&cfg.policy_dir).map_err(|e| e.to_string())?;
    for (src, dst) in &put {
        if !dst.exists() {
            copy_private(src, dst)?;
        }
    }
    copy_private(&from.join(AUDIT), &cfg.audit_path)?;
    copy_private(&from.join(LEDGER), ledger_path)?;
    println!(
        "restored: {} certificates, each with its issued record; audit log verified up to \
         record {head_seq}. Restore the CA key into the token with the HSM vendor's \
         procedure, then start the signer.",
        agreed.certificates
    );
    Ok(())
}
