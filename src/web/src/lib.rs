//! What the two network-facing processes share: `est-frontend` (EST) and `est-admin` (the
//! dashboard and the admin API). Account files and their bounded verification, rate and
//! failure limits, the pooled client of a signer socket, and TLS file loading. Nothing here
//! links the token or the ledger (`tests/architecture.rs` checks it from the crate graph).
#![forbid(unsafe_code)]

pub mod accept;
pub mod body;
pub mod limits;
pub mod login;
pub mod signer_client;
pub mod tls;
pub mod users;

/// Request ids start at a random point, so that ids stay unique across restarts of this
/// process and do not meet the small ids `estctl` uses on the signer socket.
pub fn first_request_id() -> u64 {
    use ring::rand::SecureRandom;
    let mut seed = [0u8; 4];
    // Without randomness the ids merely start at 2^32: still distinct from estctl's.
    let high = match ring::rand::SystemRandom::new().fill(&mut seed) {
        Ok(()) => u64::from(u32::from_be_bytes(seed) | 1),
        Err(_) => 1,
    };
    high << 32
}
