//! The privilege separation, checked on the source: code that runs in the network-facing
//! process must not reach the token, the ledger or the audit log, and the signer must not
//! pull in the HTTP/TLS stack. A source-level check (rather than trusting the module tree)
//! so that a stray `use` fails CI.

use std::path::{Path, PathBuf};

/// Paths (relative to the repo) compiled into the frontend: the frontend itself and the
/// shared modules it uses.
const FRONTEND_SIDE: &[&str] = &[
    "src/frontend",
    "src/bin/est-frontend.rs",
    "src/ipc",
    "src/pki",
    "src/config",
    "src/util.rs",
    "src/logging.rs",
];
/// What frontend-side code must never name.
const FRONTEND_FORBIDDEN: &[&str] = &[
    "crate::signer",
    "hsm_est::signer",
    "signer::token",
    "signer::ledger",
    "signer::audit",
    "cryptoki",
    "rusqlite",
];
/// What the signer must never name.
const SIGNER_FORBIDDEN: &[&str] = &[
    "hyper",
    "rustls",
    "tokio_rustls",
    "crate::frontend",
    "std::net::Tcp",
];

fn rust_files(root: &Path) -> Vec<PathBuf> {
    if root.is_file() {
        return vec![root.to_path_buf()];
    }
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(rust_files(&p));
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out
}

/// Lines of `text` (comments stripped) that name one of `forbidden`.
fn violations(text: &str, forbidden: &[&str]) -> Vec<String> {
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .filter(|code| forbidden.iter().any(|f| code.contains(f)))
        .map(|code| code.trim().to_string())
        .collect()
}

fn check(paths: &[&str], forbidden: &[&str]) -> usize {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    let mut bad = Vec::new();
    for p in paths {
        for file in rust_files(&repo.join(p)) {
            checked += 1;
            let text = std::fs::read_to_string(&file).unwrap();
            for v in violations(&text, forbidden) {
                bad.push(format!("{}: {v}", file.display()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "privilege separation broken:\n{}",
        bad.join("\n")
    );
    checked
}

#[test]
fn frontend_side_code_does_not_reach_the_token_ledger_or_audit_log() {
    let checked = check(FRONTEND_SIDE, FRONTEND_FORBIDDEN);
    assert!(
        checked >= 8,
        "only {checked} files checked: the paths above are stale"
    );
}

#[test]
fn signer_does_not_pull_in_the_network_stack() {
    let checked = check(
        &["src/signer", "src/bin/est-signer.rs", "src/policy"],
        SIGNER_FORBIDDEN,
    );
    assert!(
        checked >= 8,
        "only {checked} files checked: the paths above are stale"
    );
}

#[test]
fn the_checker_catches_a_forbidden_import() {
    let bad = "use std::io;\nuse crate::signer::token::Token; // the key!\n";
    assert_eq!(violations(bad, FRONTEND_FORBIDDEN).len(), 1);
    assert!(violations("// use cryptoki only in comments\n", FRONTEND_FORBIDDEN).is_empty());
    assert_eq!(violations("use hyper::Request;", SIGNER_FORBIDDEN).len(), 1);
}
