//! `estctl audit verify`: reads a whole log and checks every record's hash, sequence number
//! and chain link, and that the log reaches the ledger's head.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use super::{check_line, prev_of, seq_of, GENESIS_HASH};

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
