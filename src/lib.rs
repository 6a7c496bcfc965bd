//! hsm-est: an HSM-backed EST (RFC 7030) certificate server split into two processes.
//!
//! - `est-signer` (modules [`signer`], [`policy`], [`pki`]) holds the CA key in a PKCS#11
//!   token, decides by policy, keeps the ledger and the audit log, and has no network.
//! - `est-frontend` (next issue) faces the network and reaches the signer only through
//!   [`ipc`].
//! - `estctl` ([`cli`]) is the operator's tool.
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod frontend;
pub mod ipc;
pub mod logging;
pub mod pki;
pub mod policy;
pub mod signer;
pub mod util;

/// CSRs built in code for unit tests; the same file serves the integration tests.
#[cfg(test)]
#[path = "../tests/common/csrgen.rs"]
#[allow(dead_code)]
mod csrgen;
