//! The OCSP responder's decisions (RFC 6960). The frontend hands over only the parsed
//! request (each CertID and the nonce); the status of each certificate comes from the
//! ledger, here, and the response is signed here with the CA key or with a delegated
//! responder key kept in the token.
//!
//! - Each CA of the signer answers for its own certificates. The first CertID whose issuer
//!   hashes name one of the CAs decides which CA answers; CertIDs of any other issuer in
//!   the same request are `unknown`. A request that names no certificate of any CA here
//!   gets the unsigned `unauthorized`, which costs nothing.
//! - A serial that CA never issued (not in the ledger, or on record as another CA's) is
//!   `unknown`; one the ledger marks revoked is `revoked` with its time and reason; any
//!   other is `good`.
//! - Single-certificate requests without a nonce (RFC 5019's profile, what relying parties
//!   send) are answered from a cache for half of the response validity. A revocation drops
//!   the serial's entries; a status read before a revocation is never cached after it (the
//!   cache's epoch).
//! - Responses signed on demand (nonce, several certificates, cache miss) pass a gate of
//!   twice the token's sessions, so OCSP cannot crowd enrolments out of the token; past
//!   it for [`GATE_WAIT`] the answer is `tryLater`.
//! - The delegated responder's certificates are issued by this signer, one by each CA for
//!   the one responder key (id-kp-OCSPSigning, ocsp-nocheck, RFC 6960 §4.2.2.2), at start
//!   and again when half of their life has passed, and are recorded in the ledger and the
//!   audit log like every certificate.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use hsm_est_pki::ocsp::OcspResponseStatus;
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::Certificate;

use hsm_est_common::util::{now_millis, system_time_from_unix, unix_seconds};
use hsm_est_pki::cert::{self, CaSigner, TbsSpec};
use hsm_est_pki::ocsp::{self as pki_ocsp, ResponseSpec, Single, Status};
use hsm_est_pki::{keys, name, oid};
use hsm_est_proto::{OcspCertId, OcspHash};

use crate::audit::record::Issued;
use crate::audit::AuditRecord;
use crate::ca::{Authority, CaChain};
use crate::config::OcspConfig;
use crate::error::{unavailable, SignerError};
use crate::ledger::{CertificateRecord, LedgerWrite};
use crate::service::SignerService;

/// How long a request waits for the signing gate before `tryLater`.
pub const GATE_WAIT: Duration = Duration::from_secs(2);
/// Expired cache entries are swept at most this often (only when the cache is full).
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// The profile and operation the responder certificate is recorded under.
pub const RESPONDER_PROFILE: &str = "ocsp-responder";

/// A delegated responder: its key in the token (each CA certifies it, see [`OcspIssuer`]).
pub struct Responder {
    pub signer: Arc<dyn CaSigner + Send + Sync>,
    pub spki: SubjectPublicKeyInfoOwned,
    key_hash: Vec<u8>,
}

/// What names one CA in OCSP: its CertID hashes for every hash a client may use, the hash
/// of its key (ResponderID byKey when it signs), and the certificate it gave the delegated
/// responder.
pub struct OcspIssuer {
    /// (hash, issuerNameHash, issuerKeyHash).
    ids: Vec<(OcspHash, Vec<u8>, Vec<u8>)>,
    key_hash: Vec<u8>,
    responder: RwLock<Option<Arc<ResponderCertificate>>>,
    renewing: Mutex<()>,
}

impl OcspIssuer {
    pub fn of(ca: &CaChain) -> OcspIssuer {
        let mut ids = Vec::new();
        for hash in OcspHash::ALL {
            match pki_ocsp::issuer_hashes(hash, &ca.certificate) {
                Ok((n, k)) => ids.push((hash, n, k)),
                Err(e) => tracing::error!("OCSP issuer hashes: {e}"),
            }
        }
        OcspIssuer {
            ids,
            key_hash: pki_ocsp::responder_key_hash(&ca.spki),
            responder: RwLock::new(None),
            renewing: Mutex::new(()),
        }
    }

    fn names(&self, id: &OcspCertId) -> bool {
        self.ids
            .iter()
            .any(|(h, n, k)| *h == id.hash && *n == id.issuer_name_hash && *k == id.issuer_key_hash)
    }
}

struct ResponderCertificate {
    certificate: Certificate,
    renew_after: SystemTime,
    not_after: SystemTime,
}

impl Responder {
    pub fn new(signer: Arc<dyn CaSigner + Send + Sync>, spki: SubjectPublicKeyInfoOwned) -> Self {
        Responder {
            key_hash: pki_ocsp::responder_key_hash(&spki),
            signer,
            spki,
        }
    }
}

struct Entry {
    id: OcspCertId,
    der: Vec<u8>,
    until: Instant,
}

#[derive(Default)]
struct Cache {
    by_serial: HashMap<Vec<u8>, Vec<Entry>>,
    len: usize,
    /// Counts revocations; an answer read under an older epoch is not cached.
    epoch: u64,
    next_sweep: Option<Instant>,
}

impl Cache {
    fn get(&self, id: &OcspCertId, now: Instant) -> Option<Vec<u8>> {
        self.by_serial
            .get(&id.serial)?
            .iter()
            .find(|e| e.id == *id && e.until > now)
            .map(|e| e.der.clone())
    }

    fn insert(&mut self, epoch: u64, id: OcspCertId, der: Vec<u8>, until: Instant, cap: usize) {
        if epoch != self.epoch || cap == 0 {
            return;
        }
        let now = Instant::now();
        if self.len >= cap && self.next_sweep.is_none_or(|t| now >= t) {
            self.next_sweep = Some(now + SWEEP_EVERY);
            let mut removed = 0;
            self.by_serial.retain(|_, v| {
                let before = v.len();
                v.retain(|e| e.until > now);
                removed += before - v.len();
                !v.is_empty()
            });
            self.len -= removed;
        }
        if self.len >= cap {
            // Still full of live answers: let one serial go (the hash order is arbitrary).
            if let Some(k) = self.by_serial.keys().next().cloned() {
                let n = self.by_serial.remove(&k).map_or(0, |v| v.len());
                self.len -= n;
            }
        }
        let entries = self.by_serial.entry(id.serial.clone()).or_default();
        if let Some(e) = entries.iter_mut().find(|e| e.id == id) {
            e.der = der;
            e.until = until;
        } else {
            entries.push(Entry { id, der, until });
            self.len += 1;
        }
    }

    /// Everything goes: another signer node revoked something this one cannot name.
    fn clear(&mut self) {
        self.epoch += 1;
        self.by_serial.clear();
        self.len = 0;
    }

    fn drop_serials<'a>(&mut self, serials: impl Iterator<Item = &'a [u8]>) {
        self.epoch += 1;
        for s in serials {
            if let Some(v) = self.by_serial.remove(s) {
                self.len -= v.len();
            }
        }
    }
}

/// A counting gate for signatures made on demand.
struct Gate {
    busy: Mutex<usize>,
    freed: Condvar,
    cap: usize,
}

struct Pass<'a>(&'a Gate);

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if let Ok(mut b) = self.0.busy.lock() {
            *b -= 1;
        }
        self.0.freed.notify_one();
    }
}

impl Gate {
    fn enter(&self, wait: Duration) -> Option<Pass<'_>> {
        let deadline = Instant::now() + wait;
        let mut busy = self.busy.lock().ok()?;
        while *busy >= self.cap {
            let left = deadline.checked_duration_since(Instant::now())?;
            busy = self.freed.wait_timeout(busy, left).ok()?.0;
        }
        *busy += 1;
        Some(Pass(self))
    }
}

/// The responder's state: configuration, the delegated key if any, the cache.
pub struct Ocsp {
    pub config: OcspConfig,
    responder: Option<Responder>,
    cache: Mutex<Cache>,
    gate: Gate,
    pub(crate) answered: AtomicU64,
    pub(crate) cache_hits: AtomicU64,
    /// The shared ledger's revocation generation the cache was last checked against.
    seen_generation: AtomicU64,
}

impl Ocsp {
    /// `fresh_signatures`: how many responses may be signed on demand at once.
    pub fn new(config: OcspConfig, responder: Option<Responder>, fresh_signatures: usize) -> Ocsp {
        Ocsp {
            config,
            responder,
            cache: Mutex::default(),
            gate: Gate {
                busy: Mutex::new(0),
                freed: Condvar::new(),
                cap: fresh_signatures.max(1),
            },
            answered: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            seen_generation: AtomicU64::new(0),
        }
    }

    /// Revocations were committed: their cached answers go.
    pub(crate) fn revoked<'a>(&self, serials: impl Iterator<Item = &'a [u8]>) {
        if let Ok(mut c) = self.cache.lock() {
            c.drop_serials(serials);
        }
    }

    /// Answers kept in the cache now.
    pub fn cached(&self) -> usize {
        self.cache.lock().map(|c| c.len).unwrap_or(0)
    }
}

impl SignerService {
    /// The OCSPResponse (DER) for a parsed request.
    pub(crate) fn ocsp_status(
        &self,
        certs: &[OcspCertId],
        nonce: Option<&[u8]>,
    ) -> Result<Vec<u8>, SignerError> {
        let ocsp = &self.ocsp;
        ocsp.answered.fetch_add(1, Ordering::Relaxed);
        let cacheable = certs.len() == 1 && nonce.is_none() && ocsp.config.cache_entries > 0;
        // Revocations committed by other signer nodes sharing the ledger: this node never
        // saw them, so a changed generation empties the cache (an embedded ledger's
        // generation never changes; its revocations drop their entries as they commit).
        let generation = self
            .ledger
            .revocation_generation()
            .map_err(|e| unavailable("ledger read", e))?;
        let epoch = {
            let mut cache = ocsp
                .cache
                .lock()
                .map_err(|_| unavailable("ocsp", "cache lock poisoned"))?;
            if ocsp.seen_generation.swap(generation, Ordering::Relaxed) != generation {
                cache.clear();
            }
            if cacheable {
                if let Some(der) = cache.get(&certs[0], Instant::now()) {
                    ocsp.cache_hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(der);
                }
            }
            cache.epoch
        };
        let Some(ca) = certs
            .iter()
            .find_map(|c| self.cas.iter().find(|a| a.ocsp.names(c)))
        else {
            return Ok(pki_ocsp::error_response(OcspResponseStatus::Unauthorized));
        };
        // Whole seconds: what GeneralizedTime says.
        let now = system_time_from_unix(unix_seconds(SystemTime::now()));
        let next = now + ocsp.config.validity;
        let mut singles = Vec::with_capacity(certs.len());
        for id in certs {
            let status = if ca.ocsp.names(id) {
                self.ledger_status(&id.serial, &ca.id)?
            } else {
                Status::Unknown
            };
            singles.push(Single {
                cert_id: id.clone(),
                status,
                this_update: now,
                next_update: next,
            });
        }
        let Some(_pass) = ocsp.gate.enter(GATE_WAIT) else {
            return Ok(pki_ocsp::error_response(OcspResponseStatus::TryLater));
        };
        let der = match &ocsp.responder {
            None => pki_ocsp::sign_response(
                &ResponseSpec {
                    responder_key_hash: &ca.ocsp.key_hash,
                    produced_at: now,
                    singles: &singles,
                    nonce,
                    // Clients that look for the signer only among the response's
                    // certificates (OCSP_basic_verify without extra certs, as
                    // FreeRADIUS calls it) need the CA certificate here.
                    certs: std::slice::from_ref(&ca.chain.certificate),
                },
                ca.signer.as_ref(),
            ),
            Some(r) => {
                let current = self.responder_certificate(ca, r, now)?;
                pki_ocsp::sign_response(
                    &ResponseSpec {
                        responder_key_hash: &r.key_hash,
                        produced_at: now,
                        singles: &singles,
                        nonce,
                        certs: std::slice::from_ref(&current.certificate),
                    },
                    r.signer.as_ref(),
                )
            }
        }
        .map_err(|e| unavailable("ocsp signature", e))?;
        if cacheable {
            let until = Instant::now() + ocsp.config.validity / 2;
            if let Ok(mut cache) = ocsp.cache.lock() {
                cache.insert(
                    epoch,
                    certs[0].clone(),
                    der.clone(),
                    until,
                    ocsp.config.cache_entries,
                );
            }
        }
        Ok(der)
    }

    /// The status of `serial` as CA `ca`'s certificate: one of another CA is not its.
    fn ledger_status(&self, serial: &[u8], ca: &str) -> Result<Status, SignerError> {
        let stored = self
            .ledger
            .certificate(serial)
            .map_err(|e| unavailable("ocsp status", e))?
            .filter(|c| c.record.ca == ca);
        Ok(match stored {
            None => Status::Unknown,
            Some(c) => match c.revoked_at_ms {
                Some(ms) => Status::Revoked {
                    at: SystemTime::UNIX_EPOCH + Duration::from_secs((ms.max(0) / 1000) as u64),
                    reason: c.revocation_reason.unwrap_or(0),
                },
                None => Status::Good,
            },
        })
    }

    /// Issues the delegated responder's first certificate from each CA (at start); a no-op
    /// when the CA keys sign responses.
    pub fn prepare_ocsp(&self) -> Result<(), String> {
        let Some(r) = &self.ocsp.responder else {
            return Ok(());
        };
        let now = system_time_from_unix(unix_seconds(SystemTime::now()));
        // An earlier key whose CA certificate has expired certifies nothing any more (and
        // none of its certificates is valid): it must not stop the start.
        for ca in self
            .cas
            .iter()
            .filter(|a| a.current || a.chain.not_after > now)
        {
            self.responder_certificate(ca, r, now).map_err(|_| {
                format!(
                    "CA {}: cannot certify the OCSP responder key (see the log)",
                    ca.id
                )
            })?;
        }
        Ok(())
    }

    /// The responder's current certificate, renewed once half its life has passed. A
    /// failed renewal keeps the current certificate while it is valid.
    fn responder_certificate(
        &self,
        ca: &Authority,
        r: &Responder,
        now: SystemTime,
    ) -> Result<Arc<ResponderCertificate>, SignerError> {
        let slot = &ca.ocsp;
        let fresh = |c: &Option<Arc<ResponderCertificate>>| {
            c.as_ref().filter(|c| now < c.renew_after).cloned()
        };
        if let Some(c) = slot.responder.read().ok().and_then(|c| fresh(&c)) {
            return Ok(c);
        }
        let _one = slot
            .renewing
            .lock()
            .map_err(|_| unavailable("ocsp", "lock poisoned"))?;
        let existing = slot.responder.read().ok().and_then(|c| c.clone());
        if let Some(c) = existing.as_ref().filter(|c| now < c.renew_after) {
            return Ok(Arc::clone(c));
        }
        match self.certify_responder(ca, r, now) {
            Ok(c) => {
                let c = Arc::new(c);
                if let Ok(mut w) = slot.responder.write() {
                    *w = Some(Arc::clone(&c));
                }
                Ok(c)
            }
            Err(e) => match existing.filter(|c| now < c.not_after) {
                Some(c) => {
                    tracing::error!("OCSP responder certificate not renewed: {e}");
                    Ok(c)
                }
                None => Err(unavailable("OCSP responder certificate", e)),
            },
        }
    }

    /// Issues, checks and records a certificate for the responder key.
    fn certify_responder(
        &self,
        authority: &Authority,
        r: &Responder,
        now: SystemTime,
    ) -> Result<ResponderCertificate, String> {
        let (ca, signer) = (&authority.chain, &authority.signer);
        let serial = self.fresh_serial().map_err(|_| "no serial".to_string())?;
        let ca_cn = name::common_name(&ca.subject).unwrap_or_else(|| "hsm-est".into());
        let cn: String = format!("{ca_cn} OCSP Responder").chars().take(64).collect();
        let subject = name::make_name(&[(oid::AT_COMMON_NAME, cn.clone())])?;
        let not_after = (now + self.ocsp.config.responder_validity).min(ca.not_after);
        if not_after <= now {
            return Err("the CA certificate has expired".into());
        }
        let extensions =
            pki_ocsp::responder_extensions(cert::key_identifier(&r.spki), ca.key_id.clone())
                .map_err(|e| e.to_string())?;
        let der = cert::sign_certificate(
            TbsSpec {
                serial: serial.clone(),
                issuer: ca.subject.clone(),
                subject: subject.clone(),
                spki: r.spki.clone(),
                not_before: now,
                not_after,
                extensions,
                algorithm: signer.algorithm(),
            },
            signer.as_ref(),
        )
        .map_err(|e| e.to_string())?;
        cert::verify_certificate_signature(&der, &ca.spki)?;
        let certificate = cert::parse_certificate(&der)?;
        let spki_der = der::Encode::to_der(&r.spki).map_err(|e| e.to_string())?;
        let spki_sha256 = hsm_est_pki::sha256(&spki_der);
        let record = CertificateRecord {
            serial: serial.clone(),
            subject: subject.to_string(),
            common_name: cn,
            sans: vec![],
            spki_sha256: spki_sha256.to_vec(),
            not_before: unix_seconds(now),
            not_after: unix_seconds(not_after),
            profile: RESPONDER_PROFILE.into(),
            operation: RESPONDER_PROFILE.into(),
            requester: "signer".into(),
            client_ip: String::new(),
            issued_at_ms: now_millis(),
            der,
            ca: authority.id.clone(),
        };
        let audit = AuditRecord::Issued(Box::new(Issued {
            serial: hex::encode(&serial),
            subject: record.subject.clone(),
            sans: vec![],
            spki_sha256: hex::encode(spki_sha256),
            key: keys::inspect_spki(&r.spki)
                .map(|k| k.describe())
                .unwrap_or_default(),
            profile: RESPONDER_PROFILE.into(),
            operation: RESPONDER_PROFILE.into(),
            requester: "signer".into(),
            client_ip: String::new(),
            not_before: record.not_before,
            not_after: record.not_after,
            device_status: "untracked".into(),
            caller: "signer".into(),
            request_id: 0,
            validity_truncated_to_ca: not_after == ca.not_after,
            ignored_csr_extensions: vec![],
            supersedes: None,
            channel_binding: None,
            ca: crate::audit::record::named_ca(&authority.id),
        }));
        self.journal
            .record(
                vec![audit],
                vec![LedgerWrite::Issue {
                    certificate: Box::new(record),
                    device_status: None,
                    supersedes: None,
                }],
            )
            .map_err(|e| e.to_string())?;
        tracing::info!(
            "CA {}: OCSP responder certificate issued: serial={} not_after={}",
            authority.id,
            hex::encode(&serial),
            unix_seconds(not_after)
        );
        let life = not_after.duration_since(now).unwrap_or_default();
        Ok(ResponderCertificate {
            certificate,
            renew_after: now + life / 2,
            not_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OcspSigner;
    use crate::service::tests::{soft_ca, temp_dir, SoftSigner};

    fn id(serial: &[u8]) -> OcspCertId {
        OcspCertId {
            hash: OcspHash::Sha1,
            hash_params_null: true,
            issuer_name_hash: vec![1; 20],
            issuer_key_hash: vec![2; 20],
            serial: serial.to_vec(),
        }
    }

    #[test]
    fn an_answer_read_before_a_revocation_is_not_cached_after_it() {
        let mut cache = Cache::default();
        let later = Instant::now() + Duration::from_secs(60);
        let epoch = cache.epoch;
        // The revocation commits while the answer is being signed.
        cache.drop_serials(std::iter::once(&[0x41u8][..]));
        cache.insert(epoch, id(&[0x41]), b"good".to_vec(), later, 10);
        assert_eq!(cache.get(&id(&[0x41]), Instant::now()), None);
        assert_eq!(cache.len, 0);
        // Read after it: cached, and dropped by the next revocation of that serial only.
        cache.insert(cache.epoch, id(&[0x41]), b"revoked".to_vec(), later, 10);
        cache.insert(cache.epoch, id(&[0x42]), b"good".to_vec(), later, 10);
        assert_eq!(
            cache.get(&id(&[0x41]), Instant::now()),
            Some(b"revoked".to_vec())
        );
        cache.drop_serials(std::iter::once(&[0x41u8][..]));
        assert_eq!(cache.get(&id(&[0x41]), Instant::now()), None);
        assert_eq!(
            cache.get(&id(&[0x42]), Instant::now()),
            Some(b"good".to_vec())
        );
        assert_eq!(cache.len, 1);
    }

    #[test]
    fn the_cache_stays_within_its_bound_and_forgets_expired_answers() {
        let mut cache = Cache::default();
        let later = Instant::now() + Duration::from_secs(60);
        for i in 0..1000u16 {
            let serial = i.to_be_bytes();
            cache.insert(cache.epoch, id(&serial), vec![1], later, 100);
            assert!(cache.len <= 100);
        }
        assert_eq!(cache.len, 100);
        assert_eq!(cache.by_serial.values().map(Vec::len).sum::<usize>(), 100);
        // An expired answer is never served.
        let mut cache = Cache::default();
        let past = Instant::now() - Duration::from_secs(1);
        cache.insert(cache.epoch, id(&[7]), vec![1], past, 10);
        assert_eq!(cache.get(&id(&[7]), Instant::now()), None);
        // A zero bound caches nothing.
        let mut cache = Cache::default();
        cache.insert(cache.epoch, id(&[7]), vec![1], later, 0);
        assert_eq!(cache.len, 0);
    }

    #[test]
    fn the_responder_certificate_is_renewed_at_half_its_life_and_recorded() {
        let dir = temp_dir("ocsp-renew");
        let service = soft_ca(&dir, false);
        let (key, spki) = SoftSigner::generate();
        let config = OcspConfig {
            signed_by: OcspSigner::Responder {
                key_label: "r".into(),
            },
            responder_validity: Duration::from_secs(10 * 86_400),
            ..OcspConfig::default()
        };
        let ocsp = Ocsp::new(config, Some(Responder::new(Arc::new(key), spki)), 2);
        let service = service.with_ocsp(ocsp);
        let r = service.ocsp.responder.as_ref().unwrap();
        let ca = service.cas.default_ca();
        let day = Duration::from_secs(86_400);
        let now = system_time_from_unix(unix_seconds(SystemTime::now()));
        let serial = |c: &ResponderCertificate| {
            c.certificate
                .tbs_certificate
                .serial_number
                .as_bytes()
                .to_vec()
        };
        let first = service.responder_certificate(ca, r, now).unwrap();
        let same = service.responder_certificate(ca, r, now + 4 * day).unwrap();
        assert_eq!(
            serial(&first),
            serial(&same),
            "renewed before half its life"
        );
        let renewed = service
            .responder_certificate(ca, r, now + 5 * day + Duration::from_secs(1))
            .unwrap();
        assert_ne!(serial(&first), serial(&renewed));
        assert_eq!(renewed.not_after, now + 15 * day + Duration::from_secs(1));
        // Both are in the ledger, as the responder's certificates, and verify under the CA.
        for c in [&first, &renewed] {
            let stored = service.ledger.certificate(&serial(c)).unwrap().unwrap();
            assert_eq!(stored.record.profile, RESPONDER_PROFILE);
            cert::verify_certificate_signature(&stored.record.der, &ca.chain.spki).unwrap();
        }
        let audit = std::fs::read_to_string(dir.join("a.jsonl")).unwrap();
        assert_eq!(audit.matches("\"profile\":\"ocsp-responder\"").count(), 2);
    }
}
