//! `admin.yaml`, parsed strictly into `Raw*` types and validated once into [`AdminConfig`].
//! Errors name the key; bad values are refused, never clamped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use hsm_est_common::config::resolve;
use hsm_est_common::logging::{LogConfig, RawLog};
use hsm_est_web::limits::Cidr;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: RawServer,
    tls: RawTls,
    signer: RawSigner,
    admins_file: String,
    #[serde(default)]
    session: RawSession,
    #[serde(default)]
    login_limit: RawLoginLimit,
    #[serde(default)]
    log: RawLog,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Vec<String>,
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    #[serde(default = "default_per_address")]
    max_connections_per_address: u32,
    #[serde(default = "default_ten")]
    handshake_timeout_seconds: u64,
    #[serde(default = "default_ten")]
    header_timeout_seconds: u64,
    #[serde(default = "default_max_age")]
    max_connection_age_seconds: u64,
    #[serde(default)]
    allowed_networks: Vec<String>,
}

fn default_max_connections() -> usize {
    64
}
fn default_per_address() -> u32 {
    16
}
fn default_ten() -> u64 {
    10
}
fn default_max_age() -> u64 {
    300
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: String,
    key_file: String,
    #[serde(default)]
    client_ca_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSigner {
    socket: String,
    #[serde(default = "default_ten")]
    timeout_seconds: u64,
    #[serde(default = "default_signer_connections")]
    max_connections: usize,
}

fn default_signer_connections() -> usize {
    8
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSession {
    #[serde(default = "default_idle")]
    idle_timeout_seconds: u64,
    #[serde(default = "default_session_age")]
    max_age_seconds: u64,
    #[serde(default = "default_max_sessions")]
    max_sessions: usize,
}

impl Default for RawSession {
    fn default() -> Self {
        RawSession {
            idle_timeout_seconds: default_idle(),
            max_age_seconds: default_session_age(),
            max_sessions: default_max_sessions(),
        }
    }
}

fn default_idle() -> u64 {
    900
}
fn default_session_age() -> u64 {
    28_800
}
fn default_max_sessions() -> usize {
    256
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLoginLimit {
    #[serde(default = "default_failures")]
    failures: u32,
    #[serde(default = "default_window")]
    window_seconds: u64,
    #[serde(default = "default_concurrent")]
    concurrent_per_address: u32,
}

impl Default for RawLoginLimit {
    fn default() -> Self {
        RawLoginLimit {
            failures: default_failures(),
            window_seconds: default_window(),
            concurrent_per_address: default_concurrent(),
        }
    }
}

fn default_failures() -> u32 {
    5
}
fn default_window() -> u64 {
    900
}
fn default_concurrent() -> u32 {
    2
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: Vec<SocketAddr>,
    pub max_connections: usize,
    pub max_connections_per_address: u32,
    pub handshake_timeout: Duration,
    pub header_timeout: Duration,
    pub max_connection_age: Duration,
    pub allowed_networks: Vec<Cidr>,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: Option<PathBuf>,
    pub signer_socket: PathBuf,
    pub signer_timeout: Duration,
    pub signer_connections: usize,
    pub admins_file: PathBuf,
    pub session_idle: Duration,
    pub session_max_age: Duration,
    pub max_sessions: usize,
    pub login_failures: u32,
    pub login_window: Duration,
    pub concurrent_logins_per_address: u32,
    pub log: LogConfig,
}

fn range<T: PartialOrd + std::fmt::Display + Copy>(
    key: &str,
    v: T,
    min: T,
    max: T,
) -> Result<T, String> {
    if v < min || v > max {
        return Err(format!("{key}: {v} is not between {min} and {max}"));
    }
    Ok(v)
}

impl AdminConfig {
    pub fn load(path: &Path) -> Result<AdminConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<AdminConfig, String> {
        let raw: RawConfig =
            yaml_serde::from_str(text).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::validate(path, raw).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn validate(path: &Path, raw: RawConfig) -> Result<AdminConfig, String> {
        if raw.server.listen.is_empty() {
            return Err("server.listen: give at least one address:port".into());
        }
        let listen = raw
            .server
            .listen
            .iter()
            .map(|a| {
                a.parse::<SocketAddr>()
                    .map_err(|_| format!("server.listen: {a:?} is not an address:port"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let allowed_networks = raw
            .server
            .allowed_networks
            .iter()
            .map(|n| {
                n.parse()
                    .map_err(|e| format!("server.allowed_networks: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let s = &raw.server;
        let idle = range(
            "session.idle_timeout_seconds",
            raw.session.idle_timeout_seconds,
            60,
            86_400,
        )?;
        let age = range(
            "session.max_age_seconds",
            raw.session.max_age_seconds,
            idle,
            7 * 86_400,
        )?;
        Ok(AdminConfig {
            listen,
            max_connections: range("server.max_connections", s.max_connections, 1, 10_000)?,
            max_connections_per_address: range(
                "server.max_connections_per_address",
                s.max_connections_per_address,
                1,
                10_000,
            )?,
            handshake_timeout: Duration::from_secs(range(
                "server.handshake_timeout_seconds",
                s.handshake_timeout_seconds,
                1,
                120,
            )?),
            header_timeout: Duration::from_secs(range(
                "server.header_timeout_seconds",
                s.header_timeout_seconds,
                1,
                120,
            )?),
            max_connection_age: Duration::from_secs(range(
                "server.max_connection_age_seconds",
                s.max_connection_age_seconds,
                10,
                86_400,
            )?),
            allowed_networks,
            cert_file: resolve(path, &raw.tls.cert_file),
            key_file: resolve(path, &raw.tls.key_file),
            client_ca_file: raw.tls.client_ca_file.as_deref().map(|p| resolve(path, p)),
            signer_socket: resolve(path, &raw.signer.socket),
            signer_timeout: Duration::from_secs(range(
                "signer.timeout_seconds",
                raw.signer.timeout_seconds,
                1,
                120,
            )?),
            signer_connections: range("signer.max_connections", raw.signer.max_connections, 1, 64)?,
            admins_file: resolve(path, &raw.admins_file),
            session_idle: Duration::from_secs(idle),
            session_max_age: Duration::from_secs(age),
            max_sessions: range("session.max_sessions", raw.session.max_sessions, 1, 100_000)?,
            login_failures: range("login_limit.failures", raw.login_limit.failures, 1, 1000)?,
            login_window: Duration::from_secs(range(
                "login_limit.window_seconds",
                raw.login_limit.window_seconds,
                1,
                86_400,
            )?),
            concurrent_logins_per_address: range(
                "login_limit.concurrent_per_address",
                raw.login_limit.concurrent_per_address,
                1,
                64,
            )?,
            log: raw.log.validate()?,
        })
    }
}
