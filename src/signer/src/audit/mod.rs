//! The tamper-evident audit log: append-only JSON lines, one per decision, each with a
//! sequence number, the hash of the previous record and its own hash. A batch is written
//! with one `write` and made durable with one `fsync` before any certificate in it is
//! released. The ledger stores the last committed (sequence, hash) so that cutting records
//! off the end is detected too.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde_json::{Map, Value};

use hsm_est_common::util::{now_millis, rfc3339_millis};

pub mod record;
pub mod verify;

pub use record::{AuditRecord, Issued, Rejected};
pub use verify::{cross_check, verify_file, CrossCheck, VerifyFailure, VerifySummary};

/// `prev` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// How far from the end start-up looks for the last record.
const TAIL_WINDOW: u64 = 256 * 1024;
/// The `,"hash":"<64 hex>"}` suffix of every line.
const HASH_SUFFIX_LEN: usize = 9 + 64 + 2;

#[derive(Debug)]
pub enum AuditError {
    Io(String),
    /// Another process holds the audit log.
    Locked(PathBuf),
    /// The log does not end in a valid record, or disagrees with the ledger.
    Inconsistent(String),
    /// An earlier write failed and could not be undone; nothing more is written.
    Failed,
}

impl std::fmt::Display for AuditError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuditError::Io(m) => write!(f, "audit log i/o error: {m}"),
            AuditError::Locked(p) => write!(
                f,
                "{} is locked by another process (is est-signer running?)",
                p.display()
            ),
            AuditError::Inconsistent(m) => write!(f, "audit log inconsistent: {m}"),
            AuditError::Failed => write!(f, "audit log failed earlier; refusing to write"),
        }
    }
}

impl std::error::Error for AuditError {}

fn io(path: &Path, e: impl std::fmt::Display) -> AuditError {
    AuditError::Io(format!("{}: {e}", path.display()))
}

/// Splits a line into its hashed body and its recorded hash; checks the hash.
pub(crate) fn check_line(line: &str) -> Result<(Map<String, Value>, String), String> {
    if line.len() < HASH_SUFFIX_LEN + 2 || !line.ends_with("\"}") {
        return Err("not a record".into());
    }
    let split = line.len() - HASH_SUFFIX_LEN;
    let (head, suffix) = line.split_at(split);
    let recorded = suffix
        .strip_prefix(",\"hash\":\"")
        .and_then(|s| s.strip_suffix("\"}"))
        .ok_or("no hash field at the end")?;
    let body = format!("{head}}}");
    let actual = hex::encode(hsm_est_pki::sha256(body.as_bytes()));
    if actual != recorded {
        return Err("record hash does not match its content (record altered)".into());
    }
    let map: Map<String, Value> =
        serde_json::from_str(&body).map_err(|e| format!("not JSON: {e}"))?;
    Ok((map, actual))
}

pub(crate) fn seq_of(map: &Map<String, Value>) -> Option<u64> {
    map.get("seq").and_then(Value::as_u64)
}

pub(crate) fn prev_of(map: &Map<String, Value>) -> Option<&str> {
    map.get("prev").and_then(Value::as_str)
}

pub struct AuditLog {
    path: PathBuf,
    file: Flock<File>,
    len: u64,
    next_seq: u64,
    last_hash: String,
    failed: bool,
    /// This signer's node name, written into every record when set.
    node: Option<String>,
}

impl AuditLog {
    /// Opens (creating, mode 0600) and exclusively locks the log, recovers a torn last line
    /// left by a crash in the middle of a write (such a record was never acknowledged), and
    /// checks that the log is not behind the ledger's head.
    pub fn open(path: &Path, ledger_head: Option<&(u64, String)>) -> Result<AuditLog, AuditError> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| io(path, e))?;
        let file = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|_| AuditError::Locked(path.to_path_buf()))?;
        let mut log = AuditLog {
            path: path.to_path_buf(),
            file,
            len: 0,
            next_seq: 1,
            last_hash: GENESIS_HASH.to_string(),
            failed: false,
            node: None,
        };
        let torn = log.load_tail()?;
        if let Some((seq, hash)) = ledger_head {
            if *seq >= log.next_seq {
                return Err(AuditError::Inconsistent(format!(
                    "the ledger has seen record {seq} but the log ends at record {}: records \
                     were removed (run `estctl audit verify`)",
                    log.next_seq - 1
                )));
            }
            if *seq == log.next_seq - 1 && *hash != log.last_hash {
                return Err(AuditError::Inconsistent(format!(
                    "record {seq} differs from the one the ledger committed (run `estctl audit \
                     verify`)"
                )));
            }
        }
        if let Some(bytes) = torn {
            log.append(&[AuditRecord::AuditRecovered {
                torn_bytes: bytes,
                detail: "an incomplete last line from an interrupted write was removed".into(),
            }])?;
        }
        Ok(log)
    }

    /// Finds the last complete record. Returns the number of bytes of a torn tail removed.
    fn load_tail(&mut self) -> Result<Option<u64>, AuditError> {
        let path = self.path.clone();
        let len = self.file.metadata().map_err(|e| io(&path, e))?.len();
        self.len = len;
        if len == 0 {
            return Ok(None);
        }
        let start = len.saturating_sub(TAIL_WINDOW);
        let mut buf = Vec::new();
        let mut f: &File = &self.file;
        f.seek(SeekFrom::Start(start)).map_err(|e| io(&path, e))?;
        f.take(len - start)
            .read_to_end(&mut buf)
            .map_err(|e| io(&path, e))?;
        let mut torn = None;
        if buf.last() != Some(&b'\n') {
            let keep = buf
                .iter()
                .rposition(|b| *b == b'\n')
                .map(|p| p + 1)
                .unwrap_or(0);
            if keep == 0 && start > 0 {
                return Err(AuditError::Inconsistent(
                    "last record is longer than the recovery window".into(),
                ));
            }
            let removed = buf.len() - keep;
            buf.truncate(keep);
            let new_len = start + keep as u64;
            self.file.set_len(new_len).map_err(|e| io(&path, e))?;
            self.file.sync_all().map_err(|e| io(&path, e))?;
            self.len = new_len;
            torn = Some(removed as u64);
        }
        let text = String::from_utf8_lossy(&buf);
        if let Some(last) = text.lines().rev().find(|l| !l.is_empty()) {
            let (map, hash) = check_line(last).map_err(|e| {
                AuditError::Inconsistent(format!("last record: {e} (run `estctl audit verify`)"))
            })?;
            let seq = seq_of(&map)
                .ok_or_else(|| AuditError::Inconsistent("last record has no seq".into()))?;
            self.next_seq = seq + 1;
            self.last_hash = hash;
        }
        Ok(torn)
    }

    /// Names this signer node in every record from now on (the shared ledger keeps one
    /// chain per node).
    pub fn with_node(mut self, node: Option<String>) -> Self {
        self.node = node;
        self
    }

    /// The sequence number and hash of the last durable record.
    pub fn head(&self) -> (u64, String) {
        (self.next_seq - 1, self.last_hash.clone())
    }

    /// Appends `events` with one write and one fsync. On failure the log is cut back to where
    /// it was; if even that fails, the log refuses all further writes (fail closed).
    pub fn append(&mut self, events: &[AuditRecord]) -> Result<(u64, String), AuditError> {
        if self.failed {
            return Err(AuditError::Failed);
        }
        if events.is_empty() {
            return Ok(self.head());
        }
        let mut out = String::with_capacity(events.len() * 320);
        let mut seq = self.next_seq;
        let mut prev = self.last_hash.clone();
        for e in events {
            let mut map = e
                .to_fields()
                .map_err(|e| AuditError::Io(format!("cannot encode record: {e}")))?;
            if let Some(node) = &self.node {
                map.insert("node".into(), node.clone().into());
            }
            map.insert("seq".into(), seq.into());
            map.insert("ts".into(), rfc3339_millis(now_millis()).into());
            map.insert("prev".into(), prev.clone().into());
            let body = serde_json::to_string(&map)
                .map_err(|e| AuditError::Io(format!("cannot encode record: {e}")))?;
            let hash = hex::encode(hsm_est_pki::sha256(body.as_bytes()));
            out.push_str(&body[..body.len() - 1]);
            out.push_str(",\"hash\":\"");
            out.push_str(&hash);
            out.push_str("\"}\n");
            prev = hash;
            seq += 1;
        }
        let path = self.path.clone();
        let result = self
            .file
            .write_all(out.as_bytes())
            .and_then(|_| self.file.sync_data());
        match result {
            Ok(()) => {
                self.len += out.len() as u64;
                self.next_seq = seq;
                self.last_hash = prev;
                Ok(self.head())
            }
            Err(e) => {
                let undo = self
                    .file
                    .set_len(self.len)
                    .and_then(|_| self.file.sync_all());
                if undo.is_err() {
                    self.failed = true;
                }
                Err(io(&path, e))
            }
        }
    }
}

/// The records with a sequence number above `seq`, oldest first. The log is read
/// backwards from its end in growing chunks, so finding the tail costs what the tail is
/// (one batch after a crash), not what the whole log is.
pub fn records_after(path: &Path, seq: u64) -> Result<Vec<Map<String, Value>>, AuditError> {
    let mut file = File::open(path).map_err(|e| io(path, e))?;
    let len = file.metadata().map_err(|e| io(path, e))?.len();
    let mut window = TAIL_WINDOW.max(1024 * 1024);
    loop {
        let start = len.saturating_sub(window);
        let mut buf = Vec::new();
        file.seek(SeekFrom::Start(start)).map_err(|e| io(path, e))?;
        (&mut file)
            .take(len - start)
            .read_to_end(&mut buf)
            .map_err(|e| io(path, e))?;
        let text = String::from_utf8_lossy(&buf);
        let mut lines: Vec<&str> = text.lines().collect();
        if start > 0 && !lines.is_empty() {
            // The first line of a window that starts mid-file may be cut.
            lines.remove(0);
        }
        let mut tail = Vec::new();
        let mut reached = false;
        for line in lines.iter().rev().filter(|l| !l.is_empty()) {
            let (map, _) = check_line(line).map_err(AuditError::Inconsistent)?;
            if seq_of(&map).is_some_and(|s| s <= seq) {
                reached = true;
                break;
            }
            tail.push(map);
        }
        if reached || start == 0 {
            tail.reverse();
            return Ok(tail);
        }
        window = window.saturating_mul(4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hsm-est-audit-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("audit.jsonl")
    }

    fn write_records(path: &Path, n: usize) {
        let mut log = AuditLog::open(path, None).unwrap();
        for i in 0..n {
            log.append(&[AuditRecord::Stop {
                signal: format!("i{i}"),
            }])
            .unwrap();
        }
    }

    #[test]
    fn chain_verifies_and_survives_reopen() {
        let path = temp("ok");
        write_records(&path, 3);
        {
            let mut log = AuditLog::open(&path, None).unwrap();
            assert_eq!(log.head().0, 3);
            log.append(&[
                AuditRecord::Stop {
                    signal: "SIGTERM".into(),
                },
                AuditRecord::LoginFailure { detail: "x".into() },
            ])
            .unwrap();
        }
        assert_eq!(verify_file(&path, None).unwrap().records, 5);
    }

    #[test]
    fn second_writer_is_refused() {
        let path = temp("lock");
        let _first = AuditLog::open(&path, None).unwrap();
        assert!(matches!(
            AuditLog::open(&path, None),
            Err(AuditError::Locked(_))
        ));
    }

    #[test]
    fn deletion_edit_and_reorder_are_named() {
        let path = temp("tamper");
        write_records(&path, 5);
        let original = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = original.lines().collect();

        let deleted: String = lines
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 2)
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        std::fs::write(&path, deleted).unwrap();
        let f = verify_file(&path, None).unwrap_err();
        assert_eq!(f.expected_seq, 3);
        assert!(f.problem.contains("record 3 is missing"), "{f}");

        let edited = original.replace("\"signal\":\"i1\"", "\"signal\":\"i7\"");
        std::fs::write(&path, edited).unwrap();
        let f = verify_file(&path, None).unwrap_err();
        assert_eq!(f.expected_seq, 2);
        assert!(f.problem.contains("altered"), "{f}");

        let mut swapped = lines.clone();
        swapped.swap(1, 2);
        std::fs::write(&path, swapped.join("\n") + "\n").unwrap();
        let f = verify_file(&path, None).unwrap_err();
        assert_eq!(f.expected_seq, 2);
    }

    #[test]
    fn truncation_against_ledger_head_is_detected() {
        let path = temp("trunc");
        write_records(&path, 4);
        let text = std::fs::read_to_string(&path).unwrap();
        let kept: String = text.lines().take(2).map(|l| format!("{l}\n")).collect();
        std::fs::write(&path, kept).unwrap();
        let head = (4u64, "x".to_string());
        assert!(verify_file(&path, Some(&head)).is_err());
        assert!(matches!(
            AuditLog::open(&path, Some(&head)),
            Err(AuditError::Inconsistent(_))
        ));
    }

    #[test]
    fn torn_tail_is_recovered_and_recorded() {
        let path = temp("torn");
        write_records(&path, 2);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\":3,\"ts\":").unwrap();
        drop(f);
        let log = AuditLog::open(&path, None).unwrap();
        assert_eq!(log.head().0, 3);
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.lines().last().unwrap().contains("audit_recovered"));
        assert_eq!(verify_file(&path, None).unwrap().records, 3);
    }
}
