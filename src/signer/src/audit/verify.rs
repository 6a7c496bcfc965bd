//! `estctl audit verify`: reads a whole log and checks every record's hash, sequence number
//! and chain link, and that the log reaches the ledger's head.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use std::collections::HashSet;

use serde_json::Value;

use super::{check_line, prev_of, seq_of, GENESIS_HASH};
use crate::ledger::Ledger;

/// Serials read from the ledger per page in [`cross_check`].
const LEDGER_PAGE: u32 = 1000;

/// What [`cross_check`] found in agreement.
#[derive(Debug, PartialEq, Eq)]
pub struct CrossCheck {
    /// Certificates in the ledger, each with its `issued` record.
    pub certificates: u64,
    /// `issued` serials that a `commit_failed` record explains (never released).
    pub not_committed: u64,
    /// `issued` records after the ledger's head: a batch the signer had not committed
    /// when it stopped (the next start names them in a `commit_failed` record).
    pub pending: u64,
}

/// Audit log and ledger agree: every `issued` serial in the log is in the ledger or named
/// by a `commit_failed` record, and every serial in the ledger has an `issued` record.
/// Run after [`verify_file`]; the problems are listed, at most `max_problems` of them.
pub fn cross_check(
    path: &Path,
    ledger: &dyn Ledger,
    ledger_head_seq: u64,
    max_problems: usize,
) -> Result<CrossCheck, Vec<String>> {
    let mut pending = 0u64;
    let mut issued: HashSet<String> = HashSet::new();
    let mut failed: HashSet<String> = HashSet::new();
    let file = File::open(path).map_err(|e| vec![format!("cannot open: {e}")])?;
    for line in BufReader::new(file).split(b'\n') {
        let line = line.map_err(|e| vec![format!("read error: {e}")])?;
        let text = String::from_utf8_lossy(&line);
        let (map, _) = check_line(&text).map_err(|e| vec![e])?;
        let strings = |key: &str| -> Vec<String> {
            match map.get(key) {
                Some(Value::String(s)) => vec![s.clone()],
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                _ => Vec::new(),
            }
        };
        let beyond_head = seq_of(&map).is_some_and(|s| s > ledger_head_seq);
        match map.get("event").and_then(Value::as_str) {
            Some("issued") if beyond_head => pending += 1,
            Some("issued") => issued.extend(strings("serial")),
            Some("commit_failed") => failed.extend(strings("serials")),
            _ => {}
        }
    }
    let mut problems = Vec::new();
    let mut certificates = 0u64;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = ledger
            .node_serials_after(after.as_deref(), LEDGER_PAGE)
            .map_err(|e| vec![format!("ledger: {e}")])?;
        for serial in &page {
            certificates += 1;
            let hex = hex::encode(serial);
            if !issued.remove(&hex) && problems.len() < max_problems {
                problems.push(format!(
                    "serial {hex} is in the ledger but has no issued record in the log"
                ));
            }
        }
        match page.last() {
            Some(last) if page.len() == LEDGER_PAGE as usize => after = Some(last.clone()),
            _ => break,
        }
    }
    let mut unexplained: Vec<&String> = issued.iter().filter(|s| !failed.contains(*s)).collect();
    unexplained.sort();
    for s in unexplained {
        if problems.len() < max_problems {
            problems.push(format!(
                "serial {s} has an issued record but is neither in the ledger nor in a \
                 commit_failed record"
            ));
        }
    }
    let not_committed = issued.iter().filter(|s| failed.contains(*s)).count() as u64;
    if problems.is_empty() {
        Ok(CrossCheck {
            certificates,
            not_committed,
            pending,
        })
    } else {
        Err(problems)
    }
}

/// The result of a successful verification.
#[derive(Debug, PartialEq, Eq)]
pub struct VerifySummary {
    pub records: u64,
    pub last_hash: String,
}

/// A verification failure, naming the first bad record.
#[derive(Debug, PartialEq, Eq)]
pub struct VerifyFailure {
    /// 1-based line number in the file.
    pub line: u64,
    /// The sequence number expected at that line.
    pub expected_seq: u64,
    pub problem: String,
}

impl std::fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "record {} (line {}): {}",
            self.expected_seq, self.line, self.problem
        )
    }
}

/// Reads the whole log and checks every record's hash, sequence and chain link, and finally
/// that the log reaches the ledger's head. Reports the first problem.
pub fn verify_file(
    path: &Path,
    ledger_head: Option<&(u64, String)>,
) -> Result<VerifySummary, VerifyFailure> {
    let fail = |line: u64, expected_seq: u64, problem: String| VerifyFailure {
        line,
        expected_seq,
        problem,
    };
    let file = File::open(path).map_err(|e| fail(0, 1, format!("cannot open: {e}")))?;
    let reader = BufReader::new(file);
    let mut expected = 1u64;
    let mut prev = GENESIS_HASH.to_string();
    let mut line_no = 0u64;
    let mut hash_at_head = None;
    for line in reader.split(b'\n') {
        line_no += 1;
        let raw = line.map_err(|e| fail(line_no, expected, format!("read error: {e}")))?;
        let text =
            String::from_utf8(raw).map_err(|_| fail(line_no, expected, "not UTF-8".into()))?;
        let (map, hash) = check_line(&text).map_err(|e| fail(line_no, expected, e))?;
        let seq = seq_of(&map).ok_or_else(|| fail(line_no, expected, "no seq".into()))?;
        if seq > expected {
            let problem = if seq == expected + 1 {
                format!("record {expected} is missing (found {seq})")
            } else {
                format!(
                    "records {expected} to {} are missing (found {seq})",
                    seq - 1
                )
            };
            return Err(fail(line_no, expected, problem));
        }
        if seq < expected {
            return Err(fail(
                line_no,
                expected,
                format!("found record {seq} out of order (reordered or duplicated)"),
            ));
        }
        if prev_of(&map) != Some(prev.as_str()) {
            return Err(fail(
                line_no,
                expected,
                "does not chain to the previous record (previous record altered or replaced)"
                    .into(),
            ));
        }
        if ledger_head.is_some_and(|(s, _)| *s == seq) {
            hash_at_head = Some(hash.clone());
        }
        prev = hash;
        expected += 1;
    }
    let records = expected - 1;
    if let Some((head_seq, head_hash)) = ledger_head {
        if *head_seq > records {
            return Err(fail(
                line_no + 1,
                records + 1,
                format!(
                    "the ledger has committed up to record {head_seq} but the log ends at \
                     record {records} (records removed from the end)"
                ),
            ));
        }
        if *head_seq > 0 && hash_at_head.as_deref() != Some(head_hash.as_str()) {
            return Err(fail(
                *head_seq,
                *head_seq,
                "differs from the record the ledger committed (record replaced)".into(),
            ));
        }
    }
    Ok(VerifySummary {
        records,
        last_hash: prev,
    })
}
