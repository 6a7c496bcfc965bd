//! What the two network-facing processes share: `est-frontend` (EST) and `est-admin` (the
//! dashboard and the admin API). Account files and their bounded verification, rate and
//! failure limits, the pooled client of a signer socket, and TLS file loading. Nothing here
//! links the token or the ledger (`tests/architecture.rs` checks it from the crate graph).
#![forbid(unsafe_code)]

pub mod limits;
pub mod login;
pub mod signer_client;
pub mod tls;
pub mod users;
