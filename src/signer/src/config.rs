//! `signer.yaml`: the token, the CA chain, the socket, the policy directory, the ledger, the
//! audit log and logging. See `config/signer.yaml` for a commented example.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use hsm_est_common::config::{resolve, Principal};
use hsm_est_common::logging::{LogConfig, RawLog};

/// Upper bound on token sessions (one signing worker thread each).
pub const MAX_TOKEN_SESSIONS: usize = 64;
/// Upper bound on concurrent socket connections.
pub const MAX_CONNECTIONS: usize = 4096;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSignerConfig {
    token: RawToken,
    ca: RawCa,
    socket: RawSocket,
    policy: RawPolicy,
    ledger: RawLedger,
    audit: RawAudit,
    #[serde(default)]
    log: RawLog,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    module: String,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    serial: Option<String>,
    pin: RawPin,
    key_label: String,
    #[serde(default = "default_sessions")]
    sessions: usize,
}

fn default_sessions() -> usize {
    2
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPin {
    #[serde(default)]
    file: Option<String>,
    #[serde(default)]
    credential: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCa {
    chain_file: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSocket {
    path: String,
    #[serde(default)]
    group: Option<Principal>,
    frontend_users: Vec<Principal>,
    #[serde(default)]
    operator_users: Vec<Principal>,
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    #[serde(default = "default_deadline")]
    request_timeout_seconds: u64,
}

fn default_max_connections() -> usize {
    256
}

fn default_deadline() -> u64 {
    10
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    dir: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLedger {
    path: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    path: String,
}

/// Where the token's user PIN comes from. Never argv, never the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSource {
    /// A file readable by the owner only.
    File(PathBuf),
    /// A systemd credential (`LoadCredential=`), read from `$CREDENTIALS_DIRECTORY/NAME`.
    Credential(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSelector {
    Label(String),
    Serial(String),
}

#[derive(Debug, Clone)]
pub struct TokenConfig {
    pub module: PathBuf,
    pub selector: TokenSelector,
    pub pin: PinSource,
    pub key_label: String,
    pub sessions: usize,
}

#[derive(Debug, Clone)]
pub struct SocketConfig {
    pub path: PathBuf,
    pub gid: Option<u32>,
    pub frontend_uids: Vec<u32>,
    pub operator_uids: Vec<u32>,
    pub max_connections: usize,
    pub request_timeout: std::time::Duration,
}

#[derive(Debug, Clone)]
pub struct SignerConfig {
    pub source: PathBuf,
    pub token: TokenConfig,
    pub ca_chain_file: PathBuf,
    pub socket: SocketConfig,
    pub policy_dir: PathBuf,
    pub ledger_path: PathBuf,
    pub audit_path: PathBuf,
    pub log: LogConfig,
}

impl SignerConfig {
    pub fn load(path: &Path) -> Result<SignerConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        Self::parse(path, &text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(path: &Path, text: &str) -> Result<SignerConfig, String> {
        let raw: RawSignerConfig = yaml_serde::from_str(text).map_err(|e| e.to_string())?;
        let token = token_config(path, raw.token)?;
        let s = raw.socket;
        let uids = |key: &str, list: &[Principal]| -> Result<Vec<u32>, String> {
            list.iter()
                .map(|p| p.resolve_uid().map_err(|e| format!("{key}: {e}")))
                .collect()
        };
        let frontend_uids = uids("socket.frontend_users", &s.frontend_users)?;
        let operator_uids = uids("socket.operator_users", &s.operator_users)?;
        if frontend_uids.is_empty() {
            return Err("socket.frontend_users: must name at least one user".into());
        }
        if let Some(uid) = frontend_uids.iter().find(|u| operator_uids.contains(u)) {
            return Err(format!(
                "socket.operator_users: uid {uid} is also a frontend user; one uid has one role"
            ));
        }
        if s.max_connections == 0 || s.max_connections > MAX_CONNECTIONS {
            return Err(format!(
                "socket.max_connections: must be between 1 and {MAX_CONNECTIONS}"
            ));
        }
        if s.request_timeout_seconds == 0 || s.request_timeout_seconds > 300 {
            return Err("socket.request_timeout_seconds: must be between 1 and 300".into());
        }
        let gid = match &s.group {
            None => None,
            Some(g) => Some(g.resolve_gid().map_err(|e| format!("socket.group: {e}"))?),
        };
        let log = raw.log.validate()?;
        Ok(SignerConfig {
            source: path.to_path_buf(),
            token,
            ca_chain_file: resolve(path, &raw.ca.chain_file),
            socket: SocketConfig {
                path: resolve(path, &s.path),
                gid,
                frontend_uids,
                operator_uids,
                max_connections: s.max_connections,
                request_timeout: std::time::Duration::from_secs(s.request_timeout_seconds),
            },
            policy_dir: resolve(path, &raw.policy.dir),
            ledger_path: resolve(path, &raw.ledger.path),
            audit_path: resolve(path, &raw.audit.path),
            log,
        })
    }
}

/// The `token` table: which token (by label or serial, never slot), the PIN's source, the
/// key label and the number of sessions.
fn token_config(path: &Path, t: RawToken) -> Result<TokenConfig, String> {
    if t.module.is_empty() {
        return Err("token.module: must not be empty".into());
    }
    let selector = match (t.label, t.serial) {
        (Some(l), None) if !l.is_empty() && l.len() <= 32 => TokenSelector::Label(l),
        (Some(_), None) => return Err("token.label: must be 1-32 characters".into()),
        (None, Some(s)) if !s.is_empty() && s.len() <= 16 => TokenSelector::Serial(s),
        (None, Some(_)) => return Err("token.serial: must be 1-16 characters".into()),
        (Some(_), Some(_)) => return Err("token: give either label or serial, not both".into()),
        (None, None) => {
            return Err("token: give label or serial (slot numbers are not accepted)".into())
        }
    };
    let pin = match (t.pin.file, t.pin.credential) {
        (Some(f), None) => PinSource::File(resolve(path, &f)),
        (None, Some(c)) if !c.is_empty() && !c.contains('/') && c != "." && c != ".." => {
            PinSource::Credential(c)
        }
        (None, Some(_)) => {
            return Err("token.pin.credential: must be a plain credential name".into())
        }
        _ => return Err("token.pin: give exactly one of file or credential".into()),
    };
    if t.key_label.is_empty() || t.key_label.len() > 64 {
        return Err("token.key_label: must be 1-64 characters".into());
    }
    if t.sessions == 0 || t.sessions > MAX_TOKEN_SESSIONS {
        return Err(format!(
            "token.sessions: must be between 1 and {MAX_TOKEN_SESSIONS}"
        ));
    }
    Ok(TokenConfig {
        module: resolve(path, &t.module),
        selector,
        pin,
        key_label: t.key_label,
        sessions: t.sessions,
    })
}
