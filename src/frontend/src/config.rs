//! `frontend.yaml`: listener, TLS, the signer socket, routes and labels, users, limits.
//! Parsed strictly like every config (`deny_unknown_fields`, key paths, no clamping).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use hsm_est_common::config::resolve;
use hsm_est_common::logging::{LogConfig, RawLog};

use super::est::ResponseFormat;
use super::limits::Cidr;

/// Label names are path segments: short, lower case, never an operation name.
pub const MAX_LABEL_LEN: usize = 32;
const OPERATION_NAMES: &[&str] = &[
    "cacerts",
    "csrattrs",
    "bootstrap",
    "simpleenroll",
    "simplereenroll",
    "serverkeygen",
    "fullcmc",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFrontendConfig {
    #[serde(default)]
    server: RawServer,
    tls: RawTls,
    signer: RawSigner,
    #[serde(default = "default_format")]
    response_format: String,
    default: RawRoute,
    #[serde(default)]
    labels: BTreeMap<String, RawRoute>,
    users_file: String,
    #[serde(default = "default_realm")]
    realm: String,
    /// Where the admin dashboard is; `/` names it (and offers nothing else).
    #[serde(default)]
    admin_url: Option<String>,
    #[serde(default)]
    metrics: Option<RawMetrics>,
    #[serde(default)]
    publication: Option<RawPublication>,
    #[serde(default)]
    rate_limit: RawRateLimit,
    #[serde(default)]
    login_limit: RawLoginLimit,
    #[serde(default)]
    log: RawLog,
}

fn default_format() -> String {
    "base64".into()
}

fn default_realm() -> String {
    "hsm-est".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    #[serde(default = "default_bind")]
    bind: Vec<String>,
    #[serde(default = "default_port")]
    port: u16,
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    #[serde(default = "default_ten")]
    handshake_timeout_seconds: u64,
    #[serde(default = "default_ten")]
    header_timeout_seconds: u64,
    #[serde(default = "default_ten")]
    body_timeout_seconds: u64,
    #[serde(default = "default_idle")]
    idle_timeout_seconds: u64,
    #[serde(default = "default_max_age")]
    max_connection_age_seconds: u64,
    #[serde(default = "default_per_address")]
    max_connections_per_address: usize,
    #[serde(default)]
    allowed_networks: Vec<String>,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            bind: default_bind(),
            port: default_port(),
            max_connections: default_max_connections(),
            handshake_timeout_seconds: 10,
            header_timeout_seconds: 10,
            body_timeout_seconds: 10,
            idle_timeout_seconds: default_idle(),
            max_connection_age_seconds: default_max_age(),
            max_connections_per_address: default_per_address(),
            allowed_networks: Vec::new(),
        }
    }
}

fn default_bind() -> Vec<String> {
    vec!["0.0.0.0".into()]
}

/// The IQE guide's port.
fn default_port() -> u16 {
    8445
}

fn default_max_connections() -> usize {
    1024
}

fn default_ten() -> u64 {
    10
}

/// A connection with no bytes either way for this long is closed.
fn default_idle() -> u64 {
    30
}

/// A connection is closed (gracefully, between requests) after this long.
fn default_max_age() -> u64 {
    600
}

/// One address may hold this many connections; the gateway needs a handful.
fn default_per_address() -> usize {
    64
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: String,
    key_file: String,
    #[serde(default)]
    client_ca_file: Option<String>,
    #[serde(default)]
    ra_trust_anchors: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSigner {
    socket: String,
    #[serde(default = "default_signer_timeout")]
    timeout_seconds: u64,
    #[serde(default = "default_signer_connections")]
    max_connections: usize,
}

fn default_signer_timeout() -> u64 {
    5
}

fn default_signer_connections() -> usize {
    16
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    profiles: RawProfiles,
    #[serde(default)]
    response_format: Option<String>,
    #[serde(default = "default_auth")]
    auth: Vec<String>,
}

fn default_auth() -> Vec<String> {
    vec!["basic".into(), "certificate".into()]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfiles {
    bootstrap: String,
    enroll: String,
    reenroll: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    #[serde(default)]
    enabled: bool,
    #[serde(default = "default_rate_requests")]
    requests: u32,
    #[serde(default = "default_rate_window")]
    window: u64,
}

impl Default for RawRateLimit {
    fn default() -> Self {
        RawRateLimit {
            enabled: false,
            requests: default_rate_requests(),
            window: default_rate_window(),
        }
    }
}

/// The IQE guide's example: 100 requests per hour.
fn default_rate_requests() -> u32 {
    100
}

fn default_rate_window() -> u64 {
    3600
}

/// The publication listener: plain HTTP, the CRL and OCSP only.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPublication {
    listen: SocketAddr,
}

/// The metrics listener: plain HTTP, `GET /metrics` only, at a local address.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: SocketAddr,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLoginLimit {
    #[serde(default = "default_failures")]
    failures: u32,
    #[serde(default = "default_failure_window")]
    window: u64,
    #[serde(default = "default_concurrent_logins")]
    concurrent_per_address: u32,
}

impl Default for RawLoginLimit {
    fn default() -> Self {
        RawLoginLimit {
            failures: default_failures(),
            window: default_failure_window(),
            concurrent_per_address: default_concurrent_logins(),
        }
    }
}

/// Password verifications one address may run at once (the verifications of all
/// addresses together are bounded by the number of cores).
fn default_concurrent_logins() -> u32 {
    1
}

/// Five failures per user or source address in 15 minutes (security checklist T7).
fn default_failures() -> u32 {
    5
}

fn default_failure_window() -> u64 {
    900
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    Basic,
    Certificate,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub bootstrap_profile: String,
    pub enroll_profile: String,
    pub reenroll_profile: String,
    pub response_format: ResponseFormat,
    pub auth: Vec<AuthMethod>,
}

#[derive(Debug, Clone)]
pub struct RateLimit {
    pub requests: u32,
    pub window: Duration,
}

#[derive(Debug, Clone)]
pub struct FrontendConfig {
    pub listen: Vec<SocketAddr>,
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connection_age: Duration,
    pub max_connections_per_address: usize,
    pub allowed_networks: Vec<Cidr>,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: Option<PathBuf>,
    pub ra_trust_anchors: Vec<PathBuf>,
    pub signer_socket: PathBuf,
    pub signer_timeout: Duration,
    pub signer_connections: usize,
    pub default_route: Route,
    pub labels: BTreeMap<String, Route>,
    pub users_file: PathBuf,
    pub realm: String,
    pub admin_url: Option<String>,
    /// Where `GET /metrics` is served (plain HTTP); `None`: nowhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Plain-HTTP listener for the CRL (`publication.listen`).
    pub publication_listen: Option<SocketAddr>,
    pub rate_limit: Option<RateLimit>,
    pub login_failures: u32,
    pub login_window: Duration,
    pub concurrent_logins_per_address: u32,
    pub log: LogConfig,
}

fn seconds(key: &str, v: u64, max: u64) -> Result<Duration, String> {
    if v == 0 || v > max {
        return Err(format!("{key}: must be between 1 and {max}"));
    }
    Ok(Duration::from_secs(v))
}

fn route(key: &str, raw: RawRoute, global: ResponseFormat) -> Result<Route, String> {
    let response_format = match raw.response_format {
        None => global,
        Some(f) => f
            .parse()
            .map_err(|e| format!("{key}.response_format: {e}"))?,
    };
    let mut auth = Vec::new();
    for a in &raw.auth {
        auth.push(match a.as_str() {
            "basic" => AuthMethod::Basic,
            "certificate" => AuthMethod::Certificate,
            other => {
                return Err(format!(
                    "{key}.auth: unknown method {other:?} (basic, certificate)"
                ))
            }
        });
    }
    if auth.is_empty() {
        return Err(format!("{key}.auth: must not be empty"));
    }
    for (k, p) in [
        ("bootstrap", &raw.profiles.bootstrap),
        ("enroll", &raw.profiles.enroll),
        ("reenroll", &raw.profiles.reenroll),
    ] {
        if p.is_empty() || p.len() > hsm_est_proto::messages::MAX_NAME_LEN {
            return Err(format!("{key}.profiles.{k}: must be 1-64 characters"));
        }
    }
    Ok(Route {
        bootstrap_profile: raw.profiles.bootstrap,
        enroll_profile: raw.profiles.enroll,
        reenroll_profile: raw.profiles.reenroll,
        response_format,
        auth,
    })
}

impl FrontendConfig {
    pub fn load(path: &Path) -> Result<FrontendConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        Self::parse(path, &text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(path: &Path, text: &str) -> Result<FrontendConfig, String> {
        let raw: RawFrontendConfig = yaml_serde::from_str(text).map_err(|e| e.to_string())?;
        let s = raw.server;
        let (listen, allowed_networks) = listen_addresses(&s)?;
        let metrics_listen = match raw.metrics {
            Some(m) if listen.iter().any(|a| a.port() == m.listen.port()) => {
                return Err("metrics.listen: must use another port than the EST listener".into())
            }
            Some(m) => Some(m.listen),
            None => None,
        };
        let publication_listen = match raw.publication {
            Some(p)
                if listen.iter().any(|a| a.port() == p.listen.port())
                    || metrics_listen.is_some_and(|m| m.port() == p.listen.port()) =>
            {
                return Err(
                    "publication.listen: must use another port than the EST and metrics \
                     listeners"
                        .into(),
                )
            }
            Some(p) => Some(p.listen),
            None => None,
        };
        let global: ResponseFormat = raw
            .response_format
            .parse()
            .map_err(|e| format!("response_format: {e}"))?;
        let default_route = route("default", raw.default, global)?;
        let labels = label_routes(raw.labels, global)?;
        if raw.realm.is_empty() || raw.realm.contains(['"', '\\']) || raw.realm.len() > 64 {
            return Err("realm: must be 1-64 characters without quotes or backslashes".into());
        }
        let rate_limit = if raw.rate_limit.enabled {
            if raw.rate_limit.requests == 0 {
                return Err("rate_limit.requests: must be at least 1".into());
            }
            Some(RateLimit {
                requests: raw.rate_limit.requests,
                window: seconds("rate_limit.window", raw.rate_limit.window, 86_400)?,
            })
        } else {
            None
        };
        if raw.login_limit.failures == 0 || raw.login_limit.failures > 1000 {
            return Err("login_limit.failures: must be between 1 and 1000".into());
        }
        if raw.login_limit.concurrent_per_address == 0
            || raw.login_limit.concurrent_per_address > 64
        {
            return Err("login_limit.concurrent_per_address: must be between 1 and 64".into());
        }
        if s.max_connections_per_address == 0 || s.max_connections_per_address > s.max_connections {
            return Err(
                "server.max_connections_per_address: must be between 1 and max_connections".into(),
            );
        }
        let signer_connections = raw.signer.max_connections;
        if signer_connections == 0 || signer_connections > 256 {
            return Err("signer.max_connections: must be between 1 and 256".into());
        }
        Ok(FrontendConfig {
            listen,
            max_connections: s.max_connections,
            handshake_timeout: seconds(
                "server.handshake_timeout_seconds",
                s.handshake_timeout_seconds,
                120,
            )?,
            header_timeout: seconds(
                "server.header_timeout_seconds",
                s.header_timeout_seconds,
                120,
            )?,
            body_timeout: seconds("server.body_timeout_seconds", s.body_timeout_seconds, 120)?,
            idle_timeout: seconds("server.idle_timeout_seconds", s.idle_timeout_seconds, 3600)?,
            max_connection_age: seconds(
                "server.max_connection_age_seconds",
                s.max_connection_age_seconds,
                86_400,
            )?,
            max_connections_per_address: s.max_connections_per_address,
            allowed_networks,
            cert_file: resolve(path, &raw.tls.cert_file),
            key_file: resolve(path, &raw.tls.key_file),
            client_ca_file: raw.tls.client_ca_file.as_deref().map(|f| resolve(path, f)),
            ra_trust_anchors: raw
                .tls
                .ra_trust_anchors
                .iter()
                .map(|f| resolve(path, f))
                .collect(),
            signer_socket: resolve(path, &raw.signer.socket),
            signer_timeout: seconds("signer.timeout_seconds", raw.signer.timeout_seconds, 120)?,
            signer_connections,
            default_route,
            labels,
            users_file: resolve(path, &raw.users_file),
            metrics_listen,
            publication_listen,
            realm: raw.realm,
            admin_url: match raw.admin_url {
                Some(u)
                    if !u.starts_with("https://")
                        || u.len() > 256
                        || u.chars().any(|c| c.is_whitespace() || c.is_control()) =>
                {
                    return Err(format!("admin_url: {u:?} is not an https:// URL"))
                }
                other => other,
            },
            rate_limit,
            login_failures: raw.login_limit.failures,
            login_window: seconds("login_limit.window", raw.login_limit.window, 86_400)?,
            concurrent_logins_per_address: raw.login_limit.concurrent_per_address,
            log: raw.log.validate()?,
        })
    }
}

/// The listen sockets and the client allow-list of the `server` table.
fn listen_addresses(s: &RawServer) -> Result<(Vec<SocketAddr>, Vec<Cidr>), String> {
    if s.port == 0 {
        return Err("server.port: must not be 0".into());
    }
    let mut listen = Vec::new();
    for b in &s.bind {
        let ip: IpAddr = b
            .parse()
            .map_err(|_| format!("server.bind: {b:?} is not an IP address"))?;
        listen.push(SocketAddr::new(ip, s.port));
    }
    if listen.is_empty() {
        return Err("server.bind: must not be empty".into());
    }
    if s.max_connections == 0 || s.max_connections > 65_536 {
        return Err("server.max_connections: must be between 1 and 65536".into());
    }
    let allowed_networks = s
        .allowed_networks
        .iter()
        .map(|n| {
            n.parse()
                .map_err(|e| format!("server.allowed_networks: {e}"))
        })
        .collect::<Result<Vec<Cidr>, String>>()?;
    Ok((listen, allowed_networks))
}

/// The `labels` table: each name checked, each route validated.
fn label_routes(
    raw: BTreeMap<String, RawRoute>,
    global: ResponseFormat,
) -> Result<BTreeMap<String, Route>, String> {
    let mut labels = BTreeMap::new();
    for (name, r) in raw {
        if name.is_empty()
            || name.len() > MAX_LABEL_LEN
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            || OPERATION_NAMES.contains(&name.as_str())
        {
            return Err(format!(
                "labels.{name}: a label is 1-{MAX_LABEL_LEN} characters of a-z, 0-9 and -, \
                 and not an operation name"
            ));
        }
        let key = format!("labels.{name}");
        labels.insert(name, route(&key, r, global)?);
    }
    Ok(labels)
}
