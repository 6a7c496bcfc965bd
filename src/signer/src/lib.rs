//! `est-signer`: the only process that touches the CA key. No network; a Unix socket only.
#![forbid(unsafe_code)]

pub mod audit;
pub mod ca;
pub mod config;
pub mod crl;
pub mod devices;
pub mod dispatch;
pub mod error;
pub mod issuance;
pub mod journal;
pub mod ledger;
pub mod ocsp;
pub mod quota;
pub mod ra;
pub mod revocation;
pub mod server;
pub mod service;
pub mod token;
pub mod workers;

use std::sync::Arc;

use der::Encode;
use nix::sys::signal::{SigSet, Signal};

use crate::config::SignerConfig;
use hsm_est_pki::cert::CaSigner;
use hsm_est_policy::Policy;

use audit::{AuditLog, AuditRecord};
use ledger::Ledger;

/// Why the signer refused to start. Each maps to a distinct exit code.
#[derive(Debug)]
pub enum StartError {
    Config(String),
    Storage(String),
    Token(token::TokenError),
    /// The token stopped signing while the signer ran (see `workers`); the status to exit
    /// with so that the service manager starts the signer again.
    TokenLost(i32),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Config(m) => write!(f, "configuration: {m}"),
            StartError::Storage(m) => write!(f, "storage: {m}"),
            StartError::Token(e) => write!(f, "token: {e}"),
            StartError::TokenLost(status) => write!(
                f,
                "the token stopped signing; exiting with status {status} for a restart"
            ),
        }
    }
}

impl StartError {
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Config(_) => 2,
            StartError::Storage(_) => 3,
            StartError::Token(token::TokenError::WrongPin)
            | StartError::Token(token::TokenError::PinLocked) => 4,
            StartError::Token(token::TokenError::KeyNotProtected(_)) => 5,
            StartError::Token(_) => 6,
            StartError::TokenLost(status) => *status,
        }
    }
}

/// Message signed and verified at start-up to prove the key and certificate belong together.
const SELF_TEST_MESSAGE: &[u8] = b"hsm-est signer self-test";

/// Starts the signer and serves until SIGTERM or SIGINT. Prints `ready` on stdout (and tells
/// systemd, under `Type=notify`) once every role's socket accepts requests.
pub fn run(config: SignerConfig) -> Result<(), StartError> {
    // Signals are taken by one thread with sigwait; block them before any thread starts.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals
        .thread_block()
        .map_err(|e| StartError::Config(format!("cannot block signals: {e}")))?;

    let (service, journal) = open_service(&config, "est-signer")?;
    service.start_crl_publisher().map_err(StartError::Config)?;
    service.prepare_ocsp().map_err(StartError::Config)?;
    for (uid, roles) in config.shared_uids() {
        tracing::warn!(
            "uid {uid} may use the {} sockets and so holds all those roles; give each role \
             its own uid in production",
            roles.join(" and ")
        );
    }
    for socket in &config.sockets {
        let listener = server::bind(socket).map_err(StartError::Config)?;
        let socket_config = socket.clone();
        let service = Arc::clone(&service);
        std::thread::Builder::new()
            .name(format!("accept-{}", socket.role.as_str()))
            .spawn(move || server::serve(listener, socket_config, service))
            .map_err(|e| StartError::Config(format!("cannot start an accept thread: {e}")))?;
    }

    let listening: Vec<String> = config
        .sockets
        .iter()
        .map(|s| format!("{} {}", s.role.as_str(), s.path.display()))
        .collect();
    tracing::info!(
        "ready: sockets {} ({} token sessions)",
        listening.join(", "),
        config.token.sessions
    );
    println!("ready");
    // `Type=notify` units: READY=1 on $NOTIFY_SOCKET; nothing happens outside systemd.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);

    let signal = signals.wait().unwrap_or(Signal::SIGTERM);
    let lost = workers::token_lost();
    let cause = match lost {
        Some(_) => "token-lost".to_string(),
        None => signal.as_str().to_string(),
    };
    tracing::info!("{cause}: stopping");
    let _ = journal.record(vec![AuditRecord::Stop { signal: cause }], vec![]);
    for socket in &config.sockets {
        server::unlink(&socket.path);
    }
    match lost {
        Some(status) => Err(StartError::TokenLost(status)),
        None => Ok(()),
    }
}

/// Everything the signer needs to decide and issue, opened and checked in order: policy,
/// CA chain, ledger, audit log, token login (one attempt), key protection, key/certificate
/// match, self-test, signing workers, journal. `process` names the caller in the `start`
/// audit record (`est-signer`, or `estctl` issuing directly while the signer is stopped).
pub fn open_service(
    config: &SignerConfig,
    process: &str,
) -> Result<(Arc<service::SignerService>, journal::Journal), StartError> {
    let policy = Policy::load_dir(&config.policy_dir).map_err(StartError::Config)?;
    let chains = config
        .cas
        .iter()
        .map(|c| {
            ca::CaChain::load(&c.chain_file)
                .map_err(|e| StartError::Config(format!("CA {}: {e}", c.ledger_id())))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let links = config
        .cas
        .iter()
        .zip(&chains)
        .map(|(c, chain)| match &c.links_file {
            None => Ok(Vec::new()),
            Some(f) => ca::load_links(f, chain)
                .map_err(|e| StartError::Config(format!("CA {}: {e}", c.ledger_id()))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ra = ra::RaTrust::from_config(config.registration_authorities.as_ref(), &policy)
        .map_err(StartError::Config)?;
    let ledger: Arc<dyn Ledger> =
        ledger::open(config).map_err(|e| StartError::Storage(e.to_string()))?;
    let head = ledger
        .audit_head()
        .map_err(|e| StartError::Storage(e.to_string()))?;
    let mut audit = AuditLog::open(&config.audit_path, head.as_ref())
        .map_err(|e| StartError::Storage(e.to_string()))?
        .with_node(config.node.clone());
    journal::recover_interrupted_commit(&mut audit, &config.audit_path, head.as_ref())
        .map_err(|e| StartError::Storage(e.to_string()))?;

    let tok = token::Token::open(&config.token).map_err(StartError::Token)?;
    let login = {
        let pin = token::read_pin(&config.token.pin).map_err(StartError::Token)?;
        tok.login(&pin, false)
        // `pin` (a SecretString) is zeroized here, right after the single login attempt.
    };
    let session = match login {
        Ok(s) => s,
        Err(e) => {
            let _ = audit.append(&[AuditRecord::LoginFailure {
                detail: e.to_string(),
            }]);
            return Err(StartError::Token(e));
        }
    };
    // Every CA's key: found by label, protected, matching its certificate, and able to
    // sign, before anything is served.
    let mut keys = Vec::with_capacity(chains.len());
    for (c, chain) in config.cas.iter().zip(&chains) {
        keys.push(open_ca_key(&tok, &session, &mut audit, c, chain)?);
    }
    let responder_key = match &config.ocsp.signed_by {
        config::OcspSigner::Ca => None,
        config::OcspSigner::Responder { key_label } => {
            let (private, public) = tok
                .find_labelled_pair(&session, key_label, "estctl ocsp init")
                .map_err(StartError::Token)?;
            if let Err(e) = token::check_key_protection(&session, private) {
                let _ = audit.append(&[AuditRecord::KeyRefused {
                    detail: format!("OCSP responder key: {e}"),
                }]);
                return Err(StartError::Token(e));
            }
            let spki = token::public_key_info(&session, public).map_err(StartError::Token)?;
            let alg = token::ca_signature_algorithm(&spki).map_err(StartError::Token)?;
            Some((key_label.clone(), private, spki, alg))
        }
    };

    let mut keys = keys.into_iter();
    let first = keys
        .next()
        .ok_or_else(|| StartError::Config("no CA".into()))?;
    let pool = workers::SigningPool::start(
        &tok,
        session,
        config.token.sessions,
        config.token.restart_after,
        first,
    )
    .map_err(StartError::Token)?;
    let mut signers: Vec<Arc<dyn hsm_est_pki::cert::CaSigner + Send + Sync>> =
        vec![Arc::new(pool.clone())];
    for key in keys {
        signers.push(Arc::new(pool.with_key(key)));
    }
    let default_subject = chains[0].subject.to_string();
    let cas = ca::Authorities::new(
        config
            .cas
            .iter()
            .zip(chains)
            .zip(signers)
            .zip(links)
            .map(|(((c, chain), signer), links)| {
                let mut a = ca::Authority::new(&c.name, chain, signer, c.crl_file.clone());
                a.id = c.ledger_id();
                a.current = c.current;
                a.links = links;
                a
            })
            .collect(),
    );
    let responder = match responder_key {
        None => None,
        Some((label, key, spki, alg)) => {
            let der = spki
                .to_der()
                .map_err(|e| StartError::Config(format!("OCSP responder key: {e}")))?;
            let signer = pool.with_key(workers::KeyRef {
                label,
                handle: key,
                public_der: der,
                algorithm: alg,
            });
            Some(ocsp::Responder::new(Arc::new(signer), spki))
        }
    };
    for earlier in cas.iter().filter(|a| !a.current) {
        if earlier.chain.not_after <= std::time::SystemTime::now() {
            tracing::warn!(
                "CA {}: this earlier key's CA certificate has expired, and with it every \
                 certificate it issued; it may be removed from `previous`",
                earlier.id
            );
        }
    }
    let ocsp = ocsp::Ocsp::new(config.ocsp.clone(), responder, 2 * config.token.sessions);
    audit
        .append(&[AuditRecord::Start {
            version: env!("CARGO_PKG_VERSION").to_string(),
            process: process.to_string(),
            ca_subject: default_subject,
            profiles: policy.profiles.keys().cloned().collect(),
        }])
        .map_err(|e| StartError::Storage(e.to_string()))?;
    // Make the ledger's head catch up with the start record.
    ledger
        .apply(&[], &audit.head())
        .map_err(|e| StartError::Storage(e.to_string()))?;
    let (journal, _commit_thread) = journal::Journal::start(audit, Arc::clone(&ledger));
    let service = Arc::new(
        service::SignerService::new(policy, cas, ledger, journal.clone())
            .map_err(StartError::Config)?
            .with_token_health(pool.health())
            .with_registration_authorities(ra)
            .with_crl(config.crl.clone())
            .with_ocsp(ocsp),
    );
    Ok((service, journal))
}

/// The key of CA `c` in the token: found by its label, non-extractable and sensitive (a
/// refusal is audited), the public key its certificate names, and a signature that
/// verifies with that certificate.
fn open_ca_key(
    tok: &token::Token,
    session: &cryptoki::session::Session,
    audit: &mut AuditLog,
    c: &config::CaConfig,
    chain: &ca::CaChain,
) -> Result<workers::KeyRef, StartError> {
    let (private, public) = tok
        .find_labelled_pair(session, &c.key_label, "estctl ca init")
        .map_err(StartError::Token)?;
    if let Err(e) = token::check_key_protection(session, private) {
        let _ = audit.append(&[AuditRecord::KeyRefused {
            detail: format!("CA {}: {e}", c.ledger_id()),
        }]);
        return Err(StartError::Token(e));
    }
    let token_spki = token::public_key_info(session, public).map_err(StartError::Token)?;
    if token_spki.to_der().ok() != Some(chain.spki_der()) {
        return Err(StartError::Config(format!(
            "{}: the CA certificate does not match the key labelled {:?} in the token",
            c.chain_file.display(),
            c.key_label
        )));
    }
    let algorithm = token::ca_signature_algorithm(&token_spki).map_err(StartError::Token)?;
    self_test(session, private, algorithm, chain)?;
    Ok(workers::KeyRef {
        label: c.key_label.clone(),
        handle: private,
        public_der: chain.spki_der(),
        algorithm,
    })
}

fn self_test(
    session: &cryptoki::session::Session,
    key: cryptoki::object::ObjectHandle,
    algorithm: hsm_est_pki::keys::SignatureAlgorithm,
    ca: &ca::CaChain,
) -> Result<(), StartError> {
    let signer = token::SessionSigner {
        session,
        key,
        algorithm,
    };
    let signature = signer
        .sign(SELF_TEST_MESSAGE)
        .map_err(|e| StartError::Token(token::TokenError::Pkcs11(e)))?;
    let key = hsm_est_pki::keys::inspect_spki(&ca.spki)
        .map_err(|e| StartError::Config(format!("CA public key: {}", e.0)))?;
    hsm_est_pki::keys::verify_signature(&key, algorithm, SELF_TEST_MESSAGE, &signature).map_err(
        |e| {
            StartError::Token(token::TokenError::Pkcs11(format!(
                "self-test: signature by the token key {e} with the CA certificate"
            )))
        },
    )
}

/// CSRs built in code for unit tests; the same file serves the end-to-end tests.
#[cfg(test)]
#[path = "../../../tests/common/csrgen.rs"]
#[allow(dead_code)]
mod csrgen;
