//! `signer.yaml`: the token, the CA chain, one socket per role, the policy directory, the ledger, the
//! audit log and logging. See `config/signer.yaml` for a commented example.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use hsm_est_common::config::{resolve, Principal};
use hsm_est_common::logging::{LogConfig, RawLog};
use hsm_est_policy::Caller;

/// Upper bound on token sessions (one signing worker thread each).
pub const MAX_TOKEN_SESSIONS: usize = 64;
/// Upper bound on concurrent socket connections.
pub const MAX_CONNECTIONS: usize = 4096;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSignerConfig {
    token: RawToken,
    ca: RawCa,
    #[serde(default)]
    cas: Vec<RawNamedCa>,
    sockets: RawSockets,
    policy: RawPolicy,
    ledger: RawLedger,
    audit: RawAudit,
    #[serde(default)]
    registration_authorities: Option<RawRegistrationAuthorities>,
    #[serde(default)]
    crl: Option<RawCrl>,
    #[serde(default)]
    ocsp: Option<RawOcsp>,
    #[serde(default)]
    log: RawLog,
}

/// Certificate revocation lists, signed with the CA key in the token.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCrl {
    /// Where the current CRL is written (DER), atomically: what FreeRADIUS reads.
    #[serde(default)]
    file: Option<String>,
    /// nextUpdate is thisUpdate plus this many hours.
    #[serde(default = "default_crl_validity_hours")]
    validity_hours: u64,
    /// `der` (RFC 5280 §4.2.1.13, for HTTP) or `pem` (what FreeRADIUS's ca_path reads).
    #[serde(default)]
    format: Option<String>,
}

fn default_crl_validity_hours() -> u64 {
    168
}

/// The validated `crl` table.
#[derive(Debug, Clone)]
pub struct CrlConfig {
    pub file: Option<PathBuf>,
    pub validity: std::time::Duration,
    /// Write `file` as PEM (`X509 CRL`) instead of DER.
    pub pem: bool,
}

impl Default for CrlConfig {
    fn default() -> Self {
        CrlConfig {
            file: None,
            validity: std::time::Duration::from_secs(default_crl_validity_hours() * 3600),
            pem: false,
        }
    }
}

/// The OCSP responder (RFC 6960).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOcsp {
    /// `ca` (the CA key signs responses) or `responder` (a delegated responder key made by
    /// `estctl ocsp init`, certified by the signer).
    #[serde(default)]
    signed_by: Option<String>,
    #[serde(default)]
    responder_key_label: Option<String>,
    #[serde(default = "default_responder_validity_days")]
    responder_validity_days: u32,
    #[serde(default = "default_ocsp_validity_minutes")]
    validity_minutes: u64,
    #[serde(default = "default_ocsp_cache_entries")]
    cache_entries: usize,
}

fn default_responder_validity_days() -> u32 {
    30
}

fn default_ocsp_validity_minutes() -> u64 {
    60
}

fn default_ocsp_cache_entries() -> usize {
    20_000
}

/// Who signs OCSP responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OcspSigner {
    Ca,
    /// A delegated responder key with this label in the token.
    Responder {
        key_label: String,
    },
}

/// The validated `ocsp` table.
#[derive(Debug, Clone)]
pub struct OcspConfig {
    pub signed_by: OcspSigner,
    /// Lifetime of the responder certificate the signer issues (renewed at half of it).
    pub responder_validity: std::time::Duration,
    /// nextUpdate minus thisUpdate of each response.
    pub validity: std::time::Duration,
    /// Signed single-certificate responses kept, at most (0: none).
    pub cache_entries: usize,
}

impl Default for OcspConfig {
    fn default() -> Self {
        OcspConfig {
            signed_by: OcspSigner::Ca,
            responder_validity: std::time::Duration::from_secs(
                u64::from(default_responder_validity_days()) * 86_400,
            ),
            validity: std::time::Duration::from_secs(default_ocsp_validity_minutes() * 60),
            cache_entries: default_ocsp_cache_entries(),
        }
    }
}

/// The default label of the responder key: the CA key's with `-ocsp`.
pub fn default_responder_label(ca_key_label: &str) -> String {
    format!("{ca_key_label}-ocsp")
}

fn ocsp_config(raw: Option<RawOcsp>, ca_key_label: &str) -> Result<OcspConfig, String> {
    let Some(o) = raw else {
        return Ok(OcspConfig::default());
    };
    if !(1..=365).contains(&o.responder_validity_days) {
        return Err("ocsp.responder_validity_days: must be between 1 and 365".into());
    }
    if !(1..=7 * 24 * 60).contains(&o.validity_minutes) {
        return Err("ocsp.validity_minutes: must be between 1 and 10080".into());
    }
    if o.cache_entries > 10_000_000 {
        return Err("ocsp.cache_entries: at most 10000000".into());
    }
    let label = o
        .responder_key_label
        .unwrap_or_else(|| default_responder_label(ca_key_label));
    if label.is_empty() || label.len() > 64 || label == ca_key_label {
        return Err(
            "ocsp.responder_key_label: must be 1-64 characters and not the CA key's label".into(),
        );
    }
    let signed_by = match o.signed_by.as_deref() {
        None | Some("ca") => OcspSigner::Ca,
        Some("responder") => OcspSigner::Responder { key_label: label },
        Some(other) => return Err(format!("ocsp.signed_by: {other:?} is not ca or responder")),
    };
    Ok(OcspConfig {
        signed_by,
        responder_validity: std::time::Duration::from_secs(
            u64::from(o.responder_validity_days) * 86_400,
        ),
        validity: std::time::Duration::from_secs(o.validity_minutes * 60),
        cache_entries: o.cache_entries,
    })
}

/// Registration authorities (RFC 7030 §3.7): gateways that request certificates on devices'
/// behalf with their own certificate. Trusted here, in the signer, not in the frontend.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistrationAuthorities {
    /// PEM file of the anchors RA certificates must chain to.
    trust_anchors: String,
    /// Require id-kp-cmcRA in the RA certificate's extendedKeyUsage.
    #[serde(default = "default_true")]
    require_ra_eku: bool,
    /// Each RA allowed to act, by its certificate's CN, and its scope.
    authorities: Vec<RawAuthority>,
    /// SHA-256 fingerprints (hex) of RA certificates that are revoked.
    #[serde(default)]
    revoked_certificates: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthority {
    name: String,
    subject_cn: String,
    profiles: Vec<String>,
    /// Anchored regular expression the device CNs it acts for must match.
    cn_pattern: String,
}

fn default_true() -> bool {
    true
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
    #[serde(default = "default_restart_after")]
    restart_after_seconds: u64,
}

fn default_sessions() -> usize {
    2
}

fn default_restart_after() -> u64 {
    30
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
    #[serde(default)]
    generation: Option<u32>,
    #[serde(default)]
    links_file: Option<String>,
    #[serde(default)]
    previous: Vec<RawGeneration>,
}

/// A further CA this signer holds: its key in the same token, its chain, its CRL file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNamedCa {
    name: String,
    key_label: String,
    chain_file: String,
    #[serde(default)]
    crl_file: Option<String>,
    #[serde(default)]
    generation: Option<u32>,
    #[serde(default)]
    links_file: Option<String>,
    #[serde(default)]
    previous: Vec<RawGeneration>,
}

/// An earlier key of a CA after a rollover (`estctl ca rollover`): it issues nothing, but
/// keeps answering for its certificates (CRL, OCSP, renewal) until they expire.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGeneration {
    generation: u32,
    key_label: String,
    chain_file: String,
    #[serde(default)]
    crl_file: Option<String>,
}

/// One key of one CA the signer holds. The first of [`SignerConfig::cas`] is always the
/// default CA's current key (`ca.chain_file`, `token.key_label`, `crl.file`).
#[derive(Debug, Clone)]
pub struct CaConfig {
    /// The CA's name, which profiles use.
    pub name: String,
    /// 1 for a CA's first key, one more at every rollover.
    pub generation: u32,
    /// Whether this is the key that issues (the others are earlier generations).
    pub current: bool,
    pub key_label: String,
    pub chain_file: PathBuf,
    /// Where its CRL is written (`crl.format`, `crl.validity_hours` hold for every CA).
    pub crl_file: Option<PathBuf>,
    /// The rollover's link certificates (NewWithOld, OldWithNew), served in `cacerts`
    /// during the overlap with the previous generation.
    pub links_file: Option<PathBuf>,
}

impl CaConfig {
    /// How the ledger, the CRL URL and CrlGet name this key: the CA's name for its first
    /// generation, `<name>-g<N>` for later ones.
    pub fn ledger_id(&self) -> String {
        generation_id(&self.name, self.generation)
    }
}

/// The id of generation `generation` of CA `name` (see [`CaConfig::ledger_id`]).
pub fn generation_id(name: &str, generation: u32) -> String {
    if generation <= 1 {
        name.to_string()
    } else {
        format!("{name}-g{generation}")
    }
}

/// One socket per role: the socket a connection arrives on decides its role, and the
/// permit table decides what that role may send.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSockets {
    frontend: RawSocket,
    operator: RawSocket,
    #[serde(default)]
    admin: Option<RawSocket>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSocket {
    path: String,
    /// Octal permission bits of the socket file: "0600" or "0660".
    #[serde(default = "default_mode")]
    mode: String,
    #[serde(default)]
    group: Option<Principal>,
    /// Peer uids allowed on this socket (SO_PEERCRED); everyone else is refused.
    users: Vec<Principal>,
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    #[serde(default = "default_deadline")]
    request_timeout_seconds: u64,
    /// A connection that sends nothing for this long is closed (between requests and
    /// within one). The frontend drops pooled connections idle for 20 s, well before.
    #[serde(default = "default_idle")]
    idle_timeout_seconds: u64,
}

fn default_idle() -> u64 {
    60
}

fn default_mode() -> String {
    "0660".into()
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
    /// The embedded SQLite ledger (one appliance).
    #[serde(default)]
    path: Option<String>,
    /// A PostgreSQL ledger shared by several signer nodes.
    #[serde(default)]
    postgres: Option<RawPostgres>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPostgres {
    /// `postgresql://user@host:port/dbname` or `host=... user=... dbname=...`; never a
    /// password (that goes in `password_file`).
    url: String,
    #[serde(default)]
    password_file: Option<String>,
    /// PEM trust anchors for the database server's certificate: with it, the connection
    /// is TLS (rustls) and verified; without it, plain (loopback or a Unix socket only).
    #[serde(default)]
    ca_file: Option<String>,
    /// Connections for reads; the commit thread and the device locks have one each more.
    #[serde(default = "default_pg_pool")]
    pool: usize,
}

fn default_pg_pool() -> usize {
    8
}

/// Most connections `ledger.postgres.pool` may ask for.
pub const MAX_PG_POOL: usize = 256;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    path: String,
    /// This signer's name among the nodes that share a ledger; written into every record.
    #[serde(default)]
    node: Option<String>,
}

/// Where the ledger lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerConfig {
    Sqlite(PathBuf),
    Postgres(PostgresConfig),
}

/// The validated `ledger.postgres` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    pub url: String,
    pub password_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub pool: usize,
}

fn ledger_config(path: &Path, raw: RawLedger) -> Result<LedgerConfig, String> {
    match (raw.path, raw.postgres) {
        (Some(p), None) => Ok(LedgerConfig::Sqlite(resolve(path, &p))),
        (None, Some(pg)) => {
            if !(1..=MAX_PG_POOL).contains(&pg.pool) {
                return Err(format!(
                    "ledger.postgres.pool: must be between 1 and {MAX_PG_POOL}"
                ));
            }
            Ok(LedgerConfig::Postgres(PostgresConfig {
                url: pg.url,
                password_file: pg.password_file.as_deref().map(|f| resolve(path, f)),
                ca_file: pg.ca_file.as_deref().map(|f| resolve(path, f)),
                pool: pg.pool,
            }))
        }
        (Some(_), Some(_)) => Err("ledger: either path (SQLite) or postgres, not both".into()),
        (None, None) => Err("ledger: needs path (SQLite) or postgres".into()),
    }
}

/// A node name: what audit records and the shared ledger key a signer by.
fn node_name(node: Option<String>, ledger: &LedgerConfig) -> Result<Option<String>, String> {
    let Some(node) = node else {
        return match ledger {
            LedgerConfig::Postgres(_) => Err(
                "audit.node: required with a PostgreSQL ledger (each signer node keeps its own \
                 audit chain, named by it)"
                    .into(),
            ),
            LedgerConfig::Sqlite(_) => Ok(None),
        };
    };
    let ok = !node.is_empty()
        && node.len() <= 64
        && node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !ok {
        return Err(format!(
            "audit.node: {node:?} must be 1 to 64 letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(Some(node))
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
    /// How long the token may stay unable to sign before the signer exits for a restart
    /// (a fresh C_Initialize and login): the recovery for modules that never see a token
    /// again once it went away.
    pub restart_after: std::time::Duration,
}

/// One role's socket.
#[derive(Debug, Clone)]
pub struct SocketConfig {
    pub role: Caller,
    pub path: PathBuf,
    /// Permission bits of the socket file (0o600 or 0o660; never world-accessible).
    pub mode: u32,
    pub gid: Option<u32>,
    pub uids: Vec<u32>,
    pub max_connections: usize,
    pub request_timeout: std::time::Duration,
    pub idle_timeout: std::time::Duration,
}

#[derive(Debug, Clone)]
pub struct SignerConfig {
    pub source: PathBuf,
    pub token: TokenConfig,
    pub ca_chain_file: PathBuf,
    /// Every CA, the default first.
    pub cas: Vec<CaConfig>,
    /// The frontend's and the operator's sockets, and the admin's when configured.
    pub sockets: Vec<SocketConfig>,
    pub policy_dir: PathBuf,
    pub ledger: LedgerConfig,
    pub audit_path: PathBuf,
    /// This signer's node name (`audit.node`); required with a PostgreSQL ledger.
    pub node: Option<String>,
    /// `None`: no registration authority is accepted.
    pub registration_authorities: Option<RaConfig>,
    pub crl: CrlConfig,
    pub ocsp: OcspConfig,
    /// The responder key's label (for `estctl ocsp init`), whoever signs.
    pub ocsp_responder_key_label: String,
    pub log: LogConfig,
}

/// The validated `registration_authorities` table.
#[derive(Debug, Clone)]
pub struct RaConfig {
    pub trust_anchors: PathBuf,
    pub require_ra_eku: bool,
    pub authorities: Vec<AuthorityConfig>,
    /// SHA-256 fingerprints of revoked RA certificates.
    pub revoked_certificates: Vec<[u8; 32]>,
}

#[derive(Debug, Clone)]
pub struct AuthorityConfig {
    pub name: String,
    pub subject_cn: String,
    pub profiles: Vec<String>,
    pub cn_pattern: regex::Regex,
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
        let mut sockets = vec![
            socket_config(path, Caller::Frontend, &raw.sockets.frontend)?,
            socket_config(path, Caller::Operator, &raw.sockets.operator)?,
        ];
        if let Some(admin) = &raw.sockets.admin {
            sockets.push(socket_config(path, Caller::Admin, admin)?);
        }
        for (i, a) in sockets.iter().enumerate() {
            if let Some(b) = sockets[i + 1..].iter().find(|b| b.path == a.path) {
                return Err(format!(
                    "sockets.{}.path: the same path as sockets.{}; each role has its own socket",
                    b.role.as_str(),
                    a.role.as_str()
                ));
            }
        }
        let log = raw.log.validate()?;
        let ledger = ledger_config(path, raw.ledger)?;
        let node = node_name(raw.audit.node, &ledger)?;
        let ocsp_responder_key_label = raw
            .ocsp
            .as_ref()
            .and_then(|o| o.responder_key_label.clone())
            .unwrap_or_else(|| default_responder_label(&token.key_label));
        let ocsp = ocsp_config(raw.ocsp, &token.key_label)?;
        let crl = match raw.crl {
            None => CrlConfig::default(),
            Some(c) => {
                if !(1..=24 * 366).contains(&c.validity_hours) {
                    return Err("crl.validity_hours: must be between 1 and 8784".into());
                }
                let pem = match c.format.as_deref() {
                    None | Some("der") => false,
                    Some("pem") => true,
                    Some(other) => return Err(format!("crl.format: {other:?} is not der or pem")),
                };
                CrlConfig {
                    file: c.file.as_deref().map(|f| resolve(path, f)),
                    validity: std::time::Duration::from_secs(c.validity_hours * 3600),
                    pem,
                }
            }
        };
        let cas = ca_configs(
            path,
            &raw.ca,
            raw.cas,
            &token,
            &crl,
            &ocsp_responder_key_label,
        )?;
        Ok(SignerConfig {
            source: path.to_path_buf(),
            token,
            cas,
            ca_chain_file: resolve(path, &raw.ca.chain_file),
            sockets,
            policy_dir: resolve(path, &raw.policy.dir),
            ledger,
            audit_path: resolve(path, &raw.audit.path),
            node,
            registration_authorities: raw
                .registration_authorities
                .map(|r| ra_config(path, r))
                .transpose()?,
            crl,
            ocsp,
            ocsp_responder_key_label,
            log,
        })
    }
}

/// The default CA and the `cas` list, checked: names, key labels, chain and CRL files each
/// belong to one CA.
fn ca_configs(
    path: &Path,
    default: &RawCa,
    named: Vec<RawNamedCa>,
    token: &TokenConfig,
    crl: &CrlConfig,
    responder_label: &str,
) -> Result<Vec<CaConfig>, String> {
    if named.len() > MAX_CAS {
        return Err(format!("cas: at most {MAX_CAS} CAs"));
    }
    let mut cas: Vec<CaConfig> = Vec::new();
    let default_ca = CaGenerations {
        at: "ca".into(),
        name: hsm_est_policy::DEFAULT_CA.to_string(),
        key_label: token.key_label.clone(),
        chain_file: &default.chain_file,
        crl_file: crl.file.clone(),
        generation: default.generation,
        links_file: default.links_file.as_deref(),
        previous: &default.previous,
    };
    default_ca.push_into(path, &mut cas, responder_label)?;
    for (i, c) in named.iter().enumerate() {
        let at = format!("cas[{i}]");
        if !hsm_est_policy::valid_ca_name(&c.name) || c.name == hsm_est_policy::DEFAULT_CA {
            return Err(format!(
                "{at}.name: must be 1-32 characters of a-z, 0-9 and -, and not \"default\" \
                 (the CA of `ca` and token.key_label)"
            ));
        }
        CaGenerations {
            at,
            name: c.name.clone(),
            key_label: c.key_label.clone(),
            chain_file: &c.chain_file,
            crl_file: c.crl_file.as_deref().map(|f| resolve(path, f)),
            generation: c.generation,
            links_file: c.links_file.as_deref(),
            previous: &c.previous,
        }
        .push_into(path, &mut cas, responder_label)?;
    }
    Ok(cas)
}

/// One CA as written: its current key and its earlier generations.
struct CaGenerations<'a> {
    /// Where it is in signer.yaml, for errors.
    at: String,
    name: String,
    key_label: String,
    chain_file: &'a str,
    crl_file: Option<PathBuf>,
    generation: Option<u32>,
    links_file: Option<&'a str>,
    previous: &'a [RawGeneration],
}

impl CaGenerations<'_> {
    /// Appends the current key, then each earlier generation, each checked against every
    /// key already there: a key label, chain file, CRL file or ledger id belongs to one.
    fn push_into(
        self,
        path: &Path,
        cas: &mut Vec<CaConfig>,
        responder_label: &str,
    ) -> Result<(), String> {
        let at = &self.at;
        let generation = self.generation.unwrap_or(1);
        if generation == 0 || generation > MAX_GENERATION {
            return Err(format!(
                "{at}.generation: must be between 1 and {MAX_GENERATION}"
            ));
        }
        if self.previous.len() > MAX_PREVIOUS {
            return Err(format!("{at}.previous: at most {MAX_PREVIOUS} generations"));
        }
        let current = CaConfig {
            name: self.name.clone(),
            generation,
            current: true,
            key_label: self.key_label.clone(),
            chain_file: resolve(path, self.chain_file),
            crl_file: self.crl_file.clone(),
            links_file: self.links_file.map(|f| resolve(path, f)),
        };
        if current.links_file.is_some() && self.previous.is_empty() {
            return Err(format!(
                "{at}.links_file: link certificates join a previous generation; none is listed"
            ));
        }
        let mut keys = vec![(at.to_string(), current)];
        for (j, g) in self.previous.iter().enumerate() {
            if g.generation == 0 || g.generation >= generation {
                return Err(format!(
                    "{at}.previous[{j}].generation: must be below the current generation \
                     ({generation})"
                ));
            }
            keys.push((
                format!("{at}.previous[{j}]"),
                CaConfig {
                    name: self.name.clone(),
                    generation: g.generation,
                    current: false,
                    key_label: g.key_label.clone(),
                    chain_file: resolve(path, &g.chain_file),
                    crl_file: g.crl_file.as_deref().map(|f| resolve(path, f)),
                    links_file: None,
                },
            ));
        }
        for (where_, ca) in keys {
            if ca.key_label.is_empty() || ca.key_label.len() > 64 || ca.key_label == responder_label
            {
                return Err(format!(
                    "{where_}.key_label: must be 1-64 characters and not the OCSP responder \
                     key's label"
                ));
            }
            for other in cas.iter() {
                let clash = if other.ledger_id() == ca.ledger_id() {
                    Some("name")
                } else if other.key_label == ca.key_label {
                    Some("key_label")
                } else if other.chain_file == ca.chain_file {
                    Some("chain_file")
                } else if ca.crl_file.is_some() && other.crl_file == ca.crl_file {
                    Some("crl_file")
                } else {
                    None
                };
                if let Some(what) = clash {
                    return Err(format!(
                        "{where_}.{what}: the same as CA {:?}'s; each CA and each of its \
                         generations has its own",
                        other.ledger_id()
                    ));
                }
            }
            cas.push(ca);
        }
        Ok(())
    }
}

/// The most generations a CA may have.
pub const MAX_GENERATION: u32 = 999;
/// The most earlier generations kept beside the current one.
pub const MAX_PREVIOUS: usize = 4;

/// The most CAs one signer holds (each has a key in the token and a CRL thread's work).
pub const MAX_CAS: usize = 16;

impl SignerConfig {
    /// The current key of the CA named `name`, if this signer holds it.
    pub fn ca(&self, name: &str) -> Option<&CaConfig> {
        self.cas.iter().find(|c| c.name == name && c.current)
    }

    /// The socket of `role`, if one is configured.
    pub fn socket(&self, role: Caller) -> Option<&SocketConfig> {
        self.sockets.iter().find(|s| s.role == role)
    }

    /// Uids allowed on more than one role's socket, with those roles. Role is decided by
    /// the socket, so such a uid holds every one of those roles: fine for a single-user
    /// demo, a weakness in production (a compromised frontend would be an operator too).
    pub fn shared_uids(&self) -> Vec<(u32, Vec<&'static str>)> {
        let mut out: Vec<(u32, Vec<&'static str>)> = Vec::new();
        for s in &self.sockets {
            for uid in &s.uids {
                match out.iter_mut().find(|(u, _)| u == uid) {
                    Some((_, roles)) => roles.push(s.role.as_str()),
                    None => out.push((*uid, vec![s.role.as_str()])),
                }
            }
        }
        out.retain(|(_, roles)| roles.len() > 1);
        out
    }
}

/// One entry of the `sockets` table.
fn socket_config(path: &Path, role: Caller, s: &RawSocket) -> Result<SocketConfig, String> {
    let key = format!("sockets.{}", role.as_str());
    if s.path.is_empty() {
        return Err(format!("{key}.path: must not be empty"));
    }
    let mode = match s.mode.as_str() {
        "0600" => 0o600,
        "0660" => 0o660,
        other => {
            return Err(format!(
                "{key}.mode: {other:?} is not \"0600\" or \"0660\" (a signer socket is never \
                 world-accessible)"
            ))
        }
    };
    let uids = s
        .users
        .iter()
        .map(|p| p.resolve_uid().map_err(|e| format!("{key}.users: {e}")))
        .collect::<Result<Vec<u32>, String>>()?;
    if uids.is_empty() {
        return Err(format!("{key}.users: must name at least one user"));
    }
    if s.max_connections == 0 || s.max_connections > MAX_CONNECTIONS {
        return Err(format!(
            "{key}.max_connections: must be between 1 and {MAX_CONNECTIONS}"
        ));
    }
    if s.request_timeout_seconds == 0 || s.request_timeout_seconds > 300 {
        return Err(format!(
            "{key}.request_timeout_seconds: must be between 1 and 300"
        ));
    }
    if s.idle_timeout_seconds < 30 || s.idle_timeout_seconds > 3600 {
        return Err(format!(
            "{key}.idle_timeout_seconds: must be between 30 and 3600 (the frontend keeps idle \
             connections for up to 20 s)"
        ));
    }
    let gid = match &s.group {
        None => None,
        Some(g) => Some(g.resolve_gid().map_err(|e| format!("{key}.group: {e}"))?),
    };
    Ok(SocketConfig {
        role,
        path: resolve(path, &s.path),
        mode,
        gid,
        uids,
        max_connections: s.max_connections,
        request_timeout: std::time::Duration::from_secs(s.request_timeout_seconds),
        idle_timeout: std::time::Duration::from_secs(s.idle_timeout_seconds),
    })
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
    if !(1..=86_400).contains(&t.restart_after_seconds) {
        return Err("token.restart_after_seconds: must be between 1 and 86400".into());
    }
    Ok(TokenConfig {
        module: resolve(path, &t.module),
        selector,
        pin,
        key_label: t.key_label,
        sessions: t.sessions,
        restart_after: std::time::Duration::from_secs(t.restart_after_seconds),
    })
}

/// The `registration_authorities` table: names unique, patterns anchored, fingerprints
/// 32 bytes of hex.
fn ra_config(path: &Path, r: RawRegistrationAuthorities) -> Result<RaConfig, String> {
    let key = "registration_authorities";
    if r.trust_anchors.is_empty() {
        return Err(format!("{key}.trust_anchors: must not be empty"));
    }
    if r.authorities.is_empty() {
        return Err(format!(
            "{key}.authorities: must name at least one authority (leave the table out to \
             accept none)"
        ));
    }
    let mut authorities: Vec<AuthorityConfig> = Vec::new();
    for a in r.authorities {
        let at = |field: &str| format!("{key}.authorities[{}].{field}", a.name);
        if a.name.is_empty() || authorities.iter().any(|b| b.name == a.name) {
            return Err(format!(
                "{key}.authorities: names must be unique and not empty"
            ));
        }
        if a.subject_cn.is_empty() || authorities.iter().any(|b| b.subject_cn == a.subject_cn) {
            return Err(format!(
                "{}: must be unique and not empty",
                at("subject_cn")
            ));
        }
        if a.profiles.is_empty() {
            return Err(format!(
                "{}: must name at least one profile",
                at("profiles")
            ));
        }
        if !a.cn_pattern.starts_with('^') || !a.cn_pattern.ends_with('$') {
            return Err(format!(
                "{}: must be anchored with ^ and $ so that it matches the whole name",
                at("cn_pattern")
            ));
        }
        let cn_pattern =
            regex::Regex::new(&a.cn_pattern).map_err(|e| format!("{}: {e}", at("cn_pattern")))?;
        authorities.push(AuthorityConfig {
            name: a.name,
            subject_cn: a.subject_cn,
            profiles: a.profiles,
            cn_pattern,
        });
    }
    let revoked_certificates = r
        .revoked_certificates
        .iter()
        .map(|h| {
            hex::decode(h.replace(':', ""))
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| {
                    format!("{key}.revoked_certificates: {h:?} is not a SHA-256 fingerprint")
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RaConfig {
        trust_anchors: resolve(path, &r.trust_anchors),
        require_ra_eku: r.require_ra_eku,
        authorities,
        revoked_certificates,
    })
}
