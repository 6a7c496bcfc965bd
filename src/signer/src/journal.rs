//! Group commit. Every decision goes through one thread that takes all requests waiting at
//! that moment, appends their audit records with one write and one fsync, then applies their
//! ledger writes in one transaction (one more fsync), and only then answers each of them.
//! Under concurrency many issuances share those two fsyncs; never one fsync per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::audit::{AuditLog, AuditRecord};
use super::ledger::{Ledger, LedgerWrite};

/// Most jobs in one commit; bounds the latency of the first job in a batch.
pub const MAX_BATCH: usize = 512;
/// Jobs that may wait for the commit thread before submitters block.
const QUEUE_DEPTH: usize = 4096;

#[derive(Debug, Clone)]
pub enum JournalError {
    Audit(String),
    Ledger(String),
    /// The commit thread is gone (shutting down).
    Stopped,
}

impl std::fmt::Display for JournalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JournalError::Audit(m) => write!(f, "audit write failed: {m}"),
            JournalError::Ledger(m) => write!(f, "ledger commit failed: {m}"),
            JournalError::Stopped => write!(f, "journal stopped"),
        }
    }
}

struct Job {
    events: Vec<AuditRecord>,
    writes: Vec<LedgerWrite>,
    reply: SyncSender<Result<(), JournalError>>,
}

#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    decisions: AtomicU64,
    /// Jobs sent and not yet taken into a batch.
    queued: AtomicU64,
    max_batch: AtomicU64,
}

#[derive(Clone)]
pub struct Journal {
    tx: SyncSender<Job>,
    counters: Arc<Counters>,
}

impl Journal {
    pub fn start(audit: AuditLog, ledger: Arc<dyn Ledger>) -> (Journal, JoinHandle<()>) {
        let (tx, rx) = mpsc::sync_channel(QUEUE_DEPTH);
        let counters = Arc::new(Counters::default());
        let thread_counters = Arc::clone(&counters);
        let handle = std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || commit_loop(rx, audit, ledger, &thread_counters))
            .unwrap_or_else(|e| {
                // Without the commit thread nothing can ever be issued; abort start-up.
                eprintln!("est-signer: cannot start the journal thread: {e}");
                std::process::exit(1)
            });
        (Journal { tx, counters }, handle)
    }

    /// (durable commits, decisions committed) since start.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.counters.commits.load(Ordering::Relaxed),
            self.counters.decisions.load(Ordering::Relaxed),
        )
    }

    /// (decisions waiting now, largest batch since start).
    pub fn queue(&self) -> (u64, u64) {
        (
            self.counters.queued.load(Ordering::Relaxed),
            self.counters.max_batch.load(Ordering::Relaxed),
        )
    }

    /// Records events and ledger writes durably; returns once both are on disk.
    pub fn record(
        &self,
        events: Vec<AuditRecord>,
        writes: Vec<LedgerWrite>,
    ) -> Result<(), JournalError> {
        let (reply, wait) = mpsc::sync_channel(1);
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        let sent = self.tx.send(Job {
            events,
            writes,
            reply,
        });
        if sent.is_err() {
            self.counters.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(JournalError::Stopped);
        }
        wait.recv().map_err(|_| JournalError::Stopped)?
    }
}

fn commit_loop(
    rx: Receiver<Job>,
    mut audit: AuditLog,
    ledger: Arc<dyn Ledger>,
    counters: &Counters,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        counters
            .queued
            .fetch_sub(batch.len() as u64, Ordering::Relaxed);
        counters
            .max_batch
            .fetch_max(batch.len() as u64, Ordering::Relaxed);
        let events: Vec<AuditRecord> = batch.iter().flat_map(|j| j.events.clone()).collect();
        let result = match audit.append(&events) {
            Err(e) => Err(JournalError::Audit(e.to_string())),
            Ok(head) => {
                let writes: Vec<LedgerWrite> =
                    batch.iter().flat_map(|j| j.writes.clone()).collect();
                ledger.apply(&writes, &head).map_err(|e| {
                    record_commit_failure(&mut audit, &writes, &e.to_string());
                    JournalError::Ledger(e.to_string())
                })
            }
        };
        match &result {
            Ok(()) => {
                counters.commits.fetch_add(1, Ordering::Relaxed);
                counters
                    .decisions
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            Err(e) => tracing::error!("commit of {} decisions failed: {e}", batch.len()),
        }
        for job in batch {
            let _ = job.reply.send(result.clone());
        }
    }
}

/// After a failed ledger transaction, the audit log says what did not happen, so that its
/// `issued` records (already durable) are explained. If even that cannot be written the
/// log refuses further writes and the signer answers `Unavailable` until it is fixed.
fn record_commit_failure(audit: &mut AuditLog, writes: &[LedgerWrite], detail: &str) {
    let (mut serials, mut revocations) = (Vec::new(), Vec::new());
    let (mut deleted_devices, mut allowed_devices) = (Vec::new(), Vec::new());
    let mut crls = Vec::new();
    for w in writes {
        match w {
            LedgerWrite::Issue { certificate, .. } => {
                serials.push(hex::encode(&certificate.serial))
            }
            LedgerWrite::Revoke { serial, .. } => revocations.push(hex::encode(serial)),
            LedgerWrite::DeleteDevice { common_name } => deleted_devices.push(common_name.clone()),
            LedgerWrite::AllowDevice { common_name } => allowed_devices.push(common_name.clone()),
            LedgerWrite::CrlIssued { number, .. } => crls.push(*number),
        }
    }
    let record = AuditRecord::CommitFailed {
        serials,
        revocations,
        deleted_devices,
        allowed_devices,
        crls,
        detail: detail.to_string(),
    };
    if let Err(e) = audit.append(&[record]) {
        tracing::error!("cannot record the failed commit in the audit log: {e}");
    }
}

/// At start-up: audit records after the ledger's head belong to a batch whose ledger
/// transaction never committed (the signer stopped between the two fsyncs). None of its
/// certificates was released. A `commit_failed` record names them, so that the log
/// explains them once later commits move the ledger's head past them.
pub fn recover_interrupted_commit(
    audit: &mut AuditLog,
    path: &std::path::Path,
    ledger_head: Option<&crate::ledger::AuditHead>,
) -> Result<(), crate::audit::AuditError> {
    use serde_json::Value;
    let after = ledger_head.map(|(seq, _)| *seq).unwrap_or(0);
    let tail = crate::audit::records_after(path, after)?;
    let text = |m: &serde_json::Map<String, Value>, k: &str| {
        m.get(k).and_then(Value::as_str).map(str::to_string)
    };
    let mut explained = std::collections::HashSet::new();
    let mut explained_crls = std::collections::HashSet::new();
    for m in &tail {
        if m.get("event").and_then(Value::as_str) == Some("commit_failed") {
            if let Some(Value::Array(a)) = m.get("crls") {
                explained_crls.extend(a.iter().filter_map(Value::as_u64));
            }
            for key in [
                "serials",
                "revocations",
                "deleted_devices",
                "allowed_devices",
            ] {
                if let Some(Value::Array(a)) = m.get(key) {
                    explained.extend(a.iter().filter_map(|v| v.as_str().map(str::to_string)));
                }
            }
        }
    }
    let (mut serials, mut revocations) = (Vec::new(), Vec::new());
    let (mut deleted_devices, mut allowed_devices) = (Vec::new(), Vec::new());
    // A CRL whose number never reached the ledger was never published either; its number
    // is issued again, and this record says why the log shows it twice.
    let crls: Vec<u64> = tail
        .iter()
        .filter(|m| m.get("event").and_then(Value::as_str) == Some("crl_issued"))
        .filter_map(|m| m.get("number").and_then(Value::as_u64))
        .filter(|n| !explained_crls.contains(n))
        .collect();
    for m in &tail {
        let (list, key) = match m.get("event").and_then(Value::as_str) {
            Some("issued") => (&mut serials, "serial"),
            Some("revoked") => (&mut revocations, "serial"),
            Some("device_deleted") => (&mut deleted_devices, "cn"),
            Some("device_allowed") => (&mut allowed_devices, "cn"),
            _ => continue,
        };
        if let Some(v) = text(m, key).filter(|v| !explained.contains(v)) {
            list.push(v);
        }
    }
    if serials.is_empty()
        && revocations.is_empty()
        && deleted_devices.is_empty()
        && allowed_devices.is_empty()
        && crls.is_empty()
    {
        return Ok(());
    }
    tracing::warn!(
        "the last batch before the signer stopped was not committed to the ledger: {} \
         certificate(s) never released; recorded as commit_failed",
        serials.len()
    );
    audit
        .append(&[AuditRecord::CommitFailed {
            serials,
            revocations,
            deleted_devices,
            allowed_devices,
            crls,
            detail: "the signer stopped between the audit write and the ledger commit".into(),
        }])
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_crl_is_named_once_in_commit_failed() {
        let dir = std::env::temp_dir().join(format!("hsm-est-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.jsonl");
        let mut audit = AuditLog::open(&path, None).unwrap();
        let head = audit
            .append(&[AuditRecord::Stop {
                signal: "SIGTERM".into(),
            }])
            .unwrap();
        // The CRL's audit record is durable; its ledger commit never happened.
        audit
            .append(&[AuditRecord::CrlIssued {
                ca: None,
                number: 7,
                this_update: "t".into(),
                next_update: "n".into(),
                entries: 0,
                sha256: "00".into(),
                actor: "signer:automatic".into(),
                request_id: 0,
            }])
            .unwrap();
        recover_interrupted_commit(&mut audit, &path, Some(&head)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let failed: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("\"event\":\"commit_failed\""))
            .collect();
        assert_eq!(failed.len(), 1, "{text}");
        assert!(failed[0].contains("\"crls\":[7]"), "{}", failed[0]);
        // A second start with the same ledger head names nothing again.
        recover_interrupted_commit(&mut audit, &path, Some(&head)).unwrap();
        let again = std::fs::read_to_string(&path).unwrap();
        assert_eq!(again.matches("commit_failed").count(), 1, "{again}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
