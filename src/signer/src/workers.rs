//! Signing workers: one thread per token session (a PKCS#11 session may move between threads
//! but must not be shared). Callers hand over the bytes to sign and wait for the signature.

use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;

use hsm_est_pki::cert::CaSigner;
use hsm_est_pki::keys::SignatureAlgorithm;

use super::token::{SessionSigner, Token, TokenError};

/// Signing requests that may queue before callers block.
const QUEUE_DEPTH: usize = 1024;

struct SignJob {
    key: ObjectHandle,
    algorithm: SignatureAlgorithm,
    message: Vec<u8>,
    reply: SyncSender<Result<Vec<u8>, String>>,
}

/// A handle on the pool for one key; cheap to clone. Implements [`CaSigner`].
#[derive(Clone)]
pub struct SigningPool {
    tx: SyncSender<SignJob>,
    key: ObjectHandle,
    algorithm: SignatureAlgorithm,
}

impl SigningPool {
    /// Starts one worker per session. `first` is the session that logged in; it is kept
    /// open for the life of the pool so that the login state lasts.
    pub fn start(
        token: &Token,
        first: Session,
        sessions: usize,
        key: ObjectHandle,
        algorithm: SignatureAlgorithm,
    ) -> Result<SigningPool, TokenError> {
        let (tx, rx) = mpsc::sync_channel::<SignJob>(QUEUE_DEPTH);
        let rx = Arc::new(Mutex::new(rx));
        let mut all = vec![first];
        for _ in 1..sessions {
            all.push(token.open_session(false)?);
        }
        for (i, session) in all.into_iter().enumerate() {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("token-{i}"))
                .spawn(move || worker(session, rx))
                .map_err(|e| TokenError::Pkcs11(format!("cannot start a worker: {e}")))?;
        }
        Ok(SigningPool { tx, key, algorithm })
    }

    /// The same workers signing with another key of the same token (object handles hold
    /// across the sessions of one process).
    pub fn with_key(&self, key: ObjectHandle, algorithm: SignatureAlgorithm) -> SigningPool {
        SigningPool {
            tx: self.tx.clone(),
            key,
            algorithm,
        }
    }
}

fn worker(session: Session, rx: Arc<Mutex<Receiver<SignJob>>>) {
    loop {
        let job = match rx.lock() {
            Ok(r) => match r.recv() {
                Ok(j) => j,
                Err(_) => return,
            },
            Err(_) => return,
        };
        let signer = SessionSigner {
            session: &session,
            key: job.key,
            algorithm: job.algorithm,
        };
        let _ = job.reply.send(signer.sign(&job.message));
    }
}

impl CaSigner for SigningPool {
    fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        let (reply, wait) = mpsc::sync_channel(1);
        self.tx
            .send(SignJob {
                key: self.key,
                algorithm: self.algorithm,
                message: message.to_vec(),
                reply,
            })
            .map_err(|_| "signing workers stopped".to_string())?;
        wait.recv().map_err(|_| "signing worker died".to_string())?
    }
}
