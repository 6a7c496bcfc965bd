//! What every hsm-est process shares and nothing more: log-safe strings and time stamps,
//! the logging set-up, and the config helpers (paths relative to the file, users by name or
//! number). No key, token, ledger, TLS or HTTP code may live here: each binary links it.
#![forbid(unsafe_code)]

pub mod config;
pub mod logging;
pub mod util;
