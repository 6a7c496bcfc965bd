//! The token's sessions, shared by the threads that sign: a caller takes a free session,
//! signs on its own thread and gives the session back (a PKCS#11 session may move between
//! threads but must not be shared). Signing on the caller's thread, rather than handing the
//! bytes to a worker thread and waiting for its answer, saves two thread wake-ups per
//! signature; callers beyond the number of sessions wait for one in turn.
//!
//! The token can fail under a running signer: a network HSM drops off the network, a token
//! directory disappears. The pool then says the token is unavailable ([`TokenHealth`]: the
//! signer's ping answers "unavailable", so both readyz endpoints turn false, and issuance
//! answers 503), and it recovers by itself where the module allows: when a key's object
//! handle is no longer valid, a worker finds the key again by its label, checks that it is
//! still protected and still the same public key, and signs with the new handle. When the
//! session or the login is gone, only a new login helps, and the signer never logs in
//! twice in one life: it logs why and exits, and systemd starts it again.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;

use hsm_est_pki::cert::CaSigner;
use hsm_est_pki::keys::SignatureAlgorithm;

use super::token::{self, SessionSigner, SignFault, Token, TokenError};

/// The exit status when the token's session or login is lost. Not one of the unit's
/// `RestartPreventExitStatus`, so systemd starts the signer again.
pub const EXIT_TOKEN_LOST: i32 = 75;

/// How often an unavailable token is tried again without any request asking for it.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// Signed by the health probe; never a certificate or a CRL.
const PROBE_MESSAGE: &[u8] = b"hsm-est signer token probe";

/// A private key in the token, and how to find it again: its label and the public key it
/// must still have.
pub struct KeyRef {
    pub label: String,
    pub handle: ObjectHandle,
    pub public_der: Vec<u8>,
    pub algorithm: SignatureAlgorithm,
}

/// A key the pool signs with: its label, the public key it must still have when found
/// again, and its current object handle.
struct PoolKey {
    label: String,
    public_der: Vec<u8>,
    algorithm: SignatureAlgorithm,
    handle: Mutex<ObjectHandle>,
}

/// Whether the token signs, and why not.
#[derive(Default)]
pub struct TokenHealth {
    unavailable: AtomicBool,
    reason: Mutex<String>,
}

impl TokenHealth {
    /// `None` while the token signs; otherwise what went wrong.
    pub fn unavailable(&self) -> Option<String> {
        if !self.unavailable.load(Ordering::Acquire) {
            return None;
        }
        Some(self.reason.lock().map(|r| r.clone()).unwrap_or_default())
    }

    fn set_unavailable(&self, reason: &str) {
        if let Ok(mut r) = self.reason.lock() {
            *r = reason.to_string();
        }
        if !self.unavailable.swap(true, Ordering::AcqRel) {
            tracing::error!("token unavailable: {reason}; answering 503 until it recovers");
        }
    }

    fn set_available(&self) {
        if self.unavailable.swap(false, Ordering::AcqRel) {
            tracing::warn!("token available again; signing resumes");
        }
    }
}

struct Shared {
    /// The sessions not in use.
    free: Mutex<Vec<Session>>,
    freed: Condvar,
    keys: RwLock<Vec<Arc<PoolKey>>>,
    health: TokenHealth,
}

/// A handle on the pool for one key; cheap to clone. Implements [`CaSigner`].
#[derive(Clone)]
pub struct SigningPool {
    shared: Arc<Shared>,
    key: usize,
    algorithm: SignatureAlgorithm,
}

impl SigningPool {
    /// Opens `sessions` sessions (`first`, the one that logged in, among them: all stay
    /// open for the life of the pool, so the login state lasts) and starts the probe that
    /// watches an unavailable token. `key` says how to find the key again and what it must
    /// still be.
    pub fn start(
        token: &Token,
        first: Session,
        sessions: usize,
        restart_after: Duration,
        key: KeyRef,
    ) -> Result<SigningPool, TokenError> {
        let mut all = vec![first];
        for _ in 1..sessions {
            all.push(token.open_session(false)?);
        }
        let shared = Arc::new(Shared {
            free: Mutex::new(all),
            freed: Condvar::new(),
            keys: RwLock::new(Vec::new()),
            health: TokenHealth::default(),
        });
        let pool = SigningPool {
            shared,
            key: 0,
            algorithm: key.algorithm,
        }
        .with_key(key);
        let probe = pool.clone();
        std::thread::Builder::new()
            .name("token-probe".into())
            .spawn(move || probe_loop(&probe, restart_after))
            .map_err(|e| TokenError::Pkcs11(format!("cannot start the token probe: {e}")))?;
        Ok(pool)
    }

    /// The same workers signing with another key of the same token (object handles hold
    /// across the sessions of one process).
    pub fn with_key(&self, key: KeyRef) -> SigningPool {
        let mut keys = self.shared.keys.write().unwrap_or_else(|p| p.into_inner());
        keys.push(Arc::new(PoolKey {
            label: key.label,
            public_der: key.public_der,
            algorithm: key.algorithm,
            handle: Mutex::new(key.handle),
        }));
        SigningPool {
            shared: Arc::clone(&self.shared),
            key: keys.len() - 1,
            algorithm: key.algorithm,
        }
    }

    /// The token's state, shared by every handle on this pool.
    pub fn health(&self) -> Arc<dyn Fn() -> Option<String> + Send + Sync> {
        let shared = Arc::clone(&self.shared);
        Arc::new(move || shared.health.unavailable())
    }
}

/// While the token is unavailable, signs a probe message twice a second so that readiness
/// returns without waiting for a request. Still unavailable after `restart_after`, the
/// signer exits: some modules (SoftHSM among them) never show a token again in a process
/// that saw it go, and only a fresh start with a new login recovers.
fn probe_loop(pool: &SigningPool, restart_after: Duration) {
    let mut since: Option<Instant> = None;
    loop {
        std::thread::sleep(PROBE_INTERVAL);
        if pool.shared.health.unavailable().is_none() {
            since = None;
            continue;
        }
        let _ = pool.sign(PROBE_MESSAGE);
        let Some(why) = pool.shared.health.unavailable() else {
            since = None;
            continue;
        };
        let first = *since.get_or_insert_with(Instant::now);
        if first.elapsed() >= restart_after {
            tracing::error!(
                "the token has not signed for {} s ({why}); exiting with status \
                 {EXIT_TOKEN_LOST} so that the service manager starts the signer again",
                restart_after.as_secs()
            );
            exit_now(EXIT_TOKEN_LOST);
        }
    }
}

/// Set when the token is lost for good: the status the signer exits with.
static LOST: AtomicI32 = AtomicI32::new(0);

/// `Some(status)` once a token thread decided that the signer must exit.
pub fn token_lost() -> Option<i32> {
    match LOST.load(Ordering::Acquire) {
        0 => None,
        status => Some(status),
    }
}

/// Asks the main thread to stop, as SIGTERM does, with `status`: exiting from this thread
/// would run the module's static destructors here, beside threads inside the module, and
/// SoftHSM's then hang. Stops taking jobs meanwhile.
fn exit_now(status: i32) -> ! {
    LOST.store(status, Ordering::Release);
    let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGTERM);
    loop {
        std::thread::park();
    }
}

fn key_at(shared: &Shared, index: usize) -> Option<Arc<PoolKey>> {
    let keys = shared.keys.read().unwrap_or_else(|p| p.into_inner());
    keys.get(index).cloned()
}

/// Signs once; when the key's handle is lost, finds the key again and signs once more.
fn sign_with(
    session: &Session,
    shared: &Shared,
    key: &PoolKey,
    message: &[u8],
) -> Result<Vec<u8>, String> {
    let handle = *key.handle.lock().unwrap_or_else(|p| p.into_inner());
    let first = SessionSigner {
        session,
        key: handle,
        algorithm: key.algorithm,
    }
    .try_sign(message);
    let fault = match first {
        Ok(signature) => {
            shared.health.set_available();
            return Ok(signature);
        }
        Err(f) => f,
    };
    match fault {
        SignFault::HandleLost(why) => {
            let found = match refind(session, key) {
                Ok(h) => h,
                Err(e) => {
                    shared
                        .health
                        .set_unavailable(&format!("{why}; finding {:?} again: {e}", key.label));
                    return Err(format!("{why}; the key is not available"));
                }
            };
            *key.handle.lock().unwrap_or_else(|p| p.into_inner()) = found;
            tracing::warn!(
                "the token's handle on key {:?} was no longer valid; found the key again",
                key.label
            );
            match (SessionSigner {
                session,
                key: found,
                algorithm: key.algorithm,
            })
            .try_sign(message)
            {
                Ok(signature) => {
                    shared.health.set_available();
                    Ok(signature)
                }
                Err(f) => {
                    shared.health.set_unavailable(&f.to_string());
                    Err(f.to_string())
                }
            }
        }
        SignFault::TokenLost(why) => {
            // The login is gone with the session; a second C_Login from this process is
            // what the one-attempt rule forbids. A fresh start logs in once, or stops with
            // a clear error when the PIN is refused.
            tracing::error!(
                "the token session or login is lost ({why}); exiting with status \
                 {EXIT_TOKEN_LOST} so that the service manager starts the signer again"
            );
            exit_now(EXIT_TOKEN_LOST);
        }
        SignFault::Other(why) => {
            // A module that fails to sign says nothing about why; until a signature (a
            // request's or the probe's) succeeds again, the signer is not ready, and after
            // `restart_after_seconds` it exits for a fresh start.
            shared.health.set_unavailable(&why);
            Err(why)
        }
    }
}

/// Finds `key` again by its label, and accepts it only when it is still protected and
/// still the public key the CA certificate names.
fn refind(session: &Session, key: &PoolKey) -> Result<ObjectHandle, TokenError> {
    let (private, public) = token::find_pair(session, &key.label, "estctl ca init")?;
    token::check_key_protection(session, private)?;
    let spki = token::public_key_info(session, public)?;
    let der = der::Encode::to_der(&spki).map_err(|e| TokenError::Pkcs11(e.to_string()))?;
    if der != key.public_der {
        return Err(TokenError::KeyNotFound(format!(
            "the key labelled {:?} is not the key the signer started with",
            key.label
        )));
    }
    Ok(private)
}

impl CaSigner for SigningPool {
    fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        let key = key_at(&self.shared, self.key).ok_or("no such key in the signing pool")?;
        let session = {
            let mut free = self.shared.free.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                match free.pop() {
                    Some(s) => break s,
                    None => {
                        free = self
                            .shared
                            .freed
                            .wait(free)
                            .unwrap_or_else(|p| p.into_inner())
                    }
                }
            }
        };
        let result = sign_with(&session, &self.shared, &key, message);
        self.shared
            .free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(session);
        self.shared.freed.notify_one();
        result
    }
}
