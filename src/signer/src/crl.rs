//! Certificate revocation lists, built here and signed with the CA key in the token: the
//! next CRL number from the ledger, every revoked certificate that has not expired with its
//! revocation date and reason, thisUpdate now and nextUpdate after `crl.validity_hours`.
//! The signature is verified with the CA's public key before anything is recorded; the
//! number is committed (audit record, then ledger) before the CRL is published to
//! `crl.file` (written atomically) or answered. One CRL is built at a time, so numbers are
//! issued in order.
//!
//! Every CA has its own CRLs: its own numbers, only the certificates it issued, signed
//! with its own key, written to its own file (`crl.file` for the default CA, `crl_file` in
//! `cas` for the others).
//!
//! For every CA with a file, a thread keeps the published CRL current: one at start, one
//! after every revocation (revocations within [`COALESCE`] share one CRL), and one when
//! half of the current CRL's validity has passed.

use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hsm_est_common::util::{rfc3339_millis, system_time_from_unix, unix_seconds};
use hsm_est_pki::crl::{sign_crl, verify_crl_signature, CrlSpec, RevokedEntry};

use crate::audit::AuditRecord;
use crate::ca::Authority;
use crate::config::CrlConfig;
use crate::dispatch::CallContext;
use crate::error::{unavailable, SignerError};
use crate::ledger::LedgerWrite;
use crate::service::SignerService;

/// Revocations this close together share one CRL.
pub const COALESCE: Duration = Duration::from_secs(1);
/// After a failed CRL, the next attempt waits this long.
const RETRY: Duration = Duration::from_secs(30);

/// The settings every CA's CRLs share, and the wake-up of the thread that re-signs.
#[derive(Default)]
pub struct Crls {
    pub config: CrlConfig,
    wake: std::sync::Mutex<Option<SyncSender<()>>>,
}

impl Crls {
    pub fn new(config: CrlConfig) -> Self {
        Crls {
            config,
            wake: std::sync::Mutex::new(None),
        }
    }
}

/// One CA's CRL: where it is written, the lock that keeps its numbers in order, and the
/// last one issued since start (its number and DER), which CrlGet answers.
#[derive(Default)]
pub struct CaCrl {
    pub file: Option<std::path::PathBuf>,
    building: std::sync::Mutex<()>,
    latest: std::sync::Mutex<Option<(u64, Vec<u8>)>>,
}

impl CaCrl {
    pub fn new(file: Option<std::path::PathBuf>) -> Self {
        CaCrl {
            file,
            ..Default::default()
        }
    }
}

impl SignerService {
    /// The CA key a CRL request names: a ledger id (`staff`, `staff-g2`; empty: the
    /// default CA's first key, whose CRL `GET /crl` always was).
    fn crl_authority(&self, ca: &str) -> Result<&Authority, SignerError> {
        let id = if ca.is_empty() {
            crate::ledger::DEFAULT_CA
        } else {
            ca
        };
        self.cas
            .by_id(id)
            .ok_or_else(|| SignerError::UnknownCa(ca.chars().take(32).collect()))
    }

    /// CA `ca`'s CRL issued last since start, or `None` when its number is `known_number`
    /// (the caller has it already); `NoCrl` before the first.
    pub(crate) fn latest_crl(
        &self,
        ca: &str,
        known_number: u64,
    ) -> Result<Option<Vec<u8>>, SignerError> {
        let authority = self.crl_authority(ca)?;
        let latest = authority
            .crl
            .latest
            .lock()
            .map_err(|_| SignerError::NoCrl)?;
        match latest.as_ref() {
            None => Err(SignerError::NoCrl),
            Some((n, _)) if *n == known_number => Ok(None),
            Some((_, der)) => Ok(Some(der.clone())),
        }
    }

    /// Revocations of `serials` were committed: their cached OCSP answers go, and the
    /// published CRL must follow. Never blocks on the CRL; a wake-up already pending covers
    /// this one too.
    pub(crate) fn revocation_committed<'a>(&self, serials: impl Iterator<Item = &'a [u8]>) {
        self.ocsp.revoked(serials);
        if let Ok(w) = self.crls.wake.lock() {
            if let Some(tx) = w.as_ref() {
                let _ = tx.try_send(());
            }
        }
    }

    /// Starts the thread that keeps the CRL files current (nothing when no CA has one).
    pub fn start_crl_publisher(self: &Arc<Self>) -> Result<(), String> {
        if self.cas.iter().all(|a| a.crl.file.is_none()) {
            return Ok(());
        }
        let (tx, rx) = sync_channel(1);
        if let Ok(mut w) = self.crls.wake.lock() {
            *w = Some(tx);
        }
        let service = Arc::clone(self);
        let half = self.crls.config.validity / 2;
        std::thread::Builder::new()
            .name("crl".into())
            .spawn(move || service.publish_loop(rx, half))
            .map(drop)
            .map_err(|e| format!("cannot start the CRL thread: {e}"))
    }

    /// Signs a CRL now, after every wake-up (coalesced), and whenever `half` has passed
    /// since the last one; ends when the wake channel closes.
    fn publish_loop(&self, rx: Receiver<()>, half: Duration) {
        let mut due = Instant::now();
        let mut seen = None;
        loop {
            let wait = due
                .saturating_duration_since(Instant::now())
                .min(SHARED_POLL);
            match rx.recv_timeout(wait) {
                Ok(()) => {
                    // Let a burst of revocations finish, then take them all in one CRL.
                    std::thread::sleep(COALESCE);
                    while rx.try_recv().is_ok() {}
                }
                Err(RecvTimeoutError::Timeout) => {
                    // Revocations on other signer nodes of a shared ledger reach this
                    // node's CRL within SHARED_POLL (an embedded ledger never moves).
                    let now = self.ledger.revocation_generation().ok();
                    if Instant::now() < due && (now.is_none() || now == seen) {
                        continue;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
            seen = self.ledger.revocation_generation().ok();
            let mut failed = false;
            for authority in self.cas.iter().filter(|a| a.crl.file.is_some()) {
                failed |= self
                    .generate_crl_as(authority, 0, "signer:automatic")
                    .is_err();
            }
            due = match failed {
                false => Instant::now() + half,
                true => Instant::now() + RETRY.min(half),
            };
        }
    }
}

/// How often the CRL thread asks a shared ledger whether another node revoked something.
const SHARED_POLL: Duration = Duration::from_secs(5);

impl SignerService {
    /// Signs, records and publishes CA `ca`'s next CRL at a caller's request (empty: the
    /// default CA); returns it (DER).
    pub(crate) fn generate_crl(
        &self,
        ctx: CallContext,
        actor: &str,
        ca: &str,
    ) -> Result<Vec<u8>, SignerError> {
        let authority = self.crl_authority(ca)?;
        self.generate_crl_as(authority, ctx.request_id, &ctx.actor(actor))
    }

    /// Signs, records and publishes `ca`'s next CRL for `actor` (as the audit shows it).
    fn generate_crl_as(
        &self,
        ca: &Authority,
        request_id: u64,
        actor: &str,
    ) -> Result<Vec<u8>, SignerError> {
        let _one_at_a_time = ca
            .crl
            .building
            .lock()
            .map_err(|_| unavailable("crl", "lock poisoned"))?;
        let number = self
            .ledger
            .crl_number(&ca.id)
            .map_err(|e| unavailable("crl number", e))?
            + 1;
        // Whole seconds: what the CRL's times can say.
        let now = system_time_from_unix(unix_seconds(SystemTime::now()));
        let next = now + self.crls.config.validity;
        let rows = self
            .ledger
            .revoked_unexpired(&ca.id, unix_seconds(now))
            .map_err(|e| unavailable("revoked certificates", e))?;
        let entries: Vec<RevokedEntry> = rows
            .into_iter()
            .map(|r| RevokedEntry {
                serial: r.serial,
                revoked_at: SystemTime::UNIX_EPOCH
                    + Duration::from_secs((r.revoked_at_ms.max(0) / 1000) as u64),
                reason: r.reason,
            })
            .collect();
        let spec = CrlSpec {
            issuer: ca.chain.subject.clone(),
            authority_key_id: ca.chain.key_id.clone(),
            number,
            this_update: now,
            next_update: next,
            entries: &entries,
        };
        let der = sign_crl(&spec, &*ca.signer).map_err(|e| unavailable("crl signing", e.0))?;
        if let Err(e) = verify_crl_signature(&der, &ca.chain.spki) {
            let record = AuditRecord::SignFailed {
                serial: format!("crl:{number}"),
                detail: e.clone(),
                request_id,
            };
            if let Err(j) = self.journal.record(vec![record], vec![]) {
                tracing::error!("cannot record a signing failure: {j}");
            }
            return Err(unavailable("CRL failed verification", e));
        }
        let as_ms = |t: SystemTime| rfc3339_millis(unix_seconds(t) * 1000);
        self.journal
            .record(
                vec![AuditRecord::CrlIssued {
                    ca: crate::audit::record::named_ca(&ca.id),
                    number,
                    this_update: as_ms(now),
                    next_update: as_ms(next),
                    entries: entries.len(),
                    sha256: hex::encode(hsm_est_pki::sha256(&der)),
                    actor: actor.to_string(),
                    request_id,
                }],
                vec![LedgerWrite::CrlIssued {
                    ca: ca.id.clone(),
                    number,
                }],
            )
            .map_err(|e| unavailable("crl record", e))?;
        if let Some(file) = &ca.crl.file {
            let bytes = if self.crls.config.pem {
                der::pem::encode_string("X509 CRL", der::pem::LineEnding::LF, &der)
                    .map_err(|e| unavailable("crl pem", e))?
                    .into_bytes()
            } else {
                der.clone()
            };
            write_atomically(file, &bytes).map_err(|e| unavailable("crl file", e))?;
        }
        if let Ok(mut latest) = ca.crl.latest.lock() {
            *latest = Some((number, der.clone()));
        }
        tracing::info!(
            "CA {}: CRL {number} issued with {} entr{}, next update {}",
            ca.id,
            entries.len(),
            if entries.len() == 1 { "y" } else { "ies" },
            as_ms(next)
        );
        Ok(der)
    }
}

/// Replaces `path` with the CRL (mode 0644: a CRL is public). Only this signer writes it,
/// under the CRL lock, so a temporary file left by a crash is its own and is removed first.
fn write_atomically(path: &Path, data: &[u8]) -> Result<(), String> {
    if let Ok(tmp) = hsm_est_common::util::temporary_beside(path) {
        let _ = std::fs::remove_file(tmp);
    }
    hsm_est_common::util::write_atomically(path, data, 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CrlConfig;
    use crate::ledger::DEFAULT_CA;
    use crate::service::tests::{soft_ca_with_crl, temp_dir};

    /// With no revocation at all, a new CRL is signed each time half of the current one's
    /// validity has passed (here half a second stands for half of `validity_hours`).
    #[test]
    fn a_fresh_crl_is_signed_at_half_the_validity_without_any_revocation() {
        let dir = temp_dir("crl-half");
        let file = dir.join("ca.crl");
        let service = Arc::new(
            soft_ca_with_crl(&dir, Some(file.clone())).with_crl(CrlConfig {
                file: Some(file.clone()),
                validity: Duration::from_secs(3600),
                pem: false,
            }),
        );
        let (tx, rx) = sync_channel(1);
        let looping = Arc::clone(&service);
        let thread =
            std::thread::spawn(move || looping.publish_loop(rx, Duration::from_millis(500)));
        std::thread::sleep(Duration::from_millis(1800));
        drop(tx);
        thread.join().unwrap();
        // At start, then at 0.5, 1.0 and 1.5 s.
        let number = service.ledger.crl_number(DEFAULT_CA).unwrap();
        assert!((3..=5).contains(&number), "{number} CRLs in 1.8 s");
        let der = std::fs::read(&file).unwrap();
        assert_eq!(hsm_est_pki::crl::crl_number(&der), Some(number));
        verify_crl_signature(&der, &service.cas.default_ca().chain.spki).unwrap();
    }
}
