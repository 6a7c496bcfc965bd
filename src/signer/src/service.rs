//! The signer's state and the actions that are neither issuance nor device rules: liveness
//! and commit statistics, CSR attributes, revocation and serial numbers. Requests arrive
//! through [`crate::dispatch`]; issuance is [`crate::issuance`], devices [`crate::devices`].

use std::sync::Arc;

use ring::rand::{SecureRandom, SystemRandom};

use hsm_est_policy::{Policy, Profile};
use hsm_est_proto::{ErrorCode, Response, Stats, WireError};

use crate::ca::{Authorities, Authority};
use crate::devices::Claims;
use crate::dispatch::CallContext;
use crate::error::{unavailable, SignerError};
use crate::journal::Journal;
use crate::ledger::Ledger;
use crate::quota::Quotas;
use crate::ra::RaTrust;

/// Serial numbers: 16 CSPRNG bytes, top bits `01` so the INTEGER is positive and always 16
/// octets (126 random bits; BR 7.1 asks for at least 64).
pub const SERIAL_LEN: usize = 16;
/// Attempts to find a serial that is not yet in the ledger before giving up.
const SERIAL_ATTEMPTS: usize = 8;

pub struct SignerService {
    pub policy: Policy,
    /// Every CA this signer holds, the default first; each profile names one.
    pub cas: Authorities,
    pub ledger: Arc<dyn Ledger>,
    pub journal: Journal,
    /// Device CNs with a decision in progress: makes check-then-issue atomic per device.
    pub(crate) claims: Claims,
    /// Per-profile new-device and re-key counts over the last hour.
    pub(crate) quotas: Quotas,
    /// The registration authorities this signer accepts; `None`: none.
    pub(crate) registration_authorities: Option<RaTrust>,
    /// Refusals since start, per stable wire reason (a closed set, capped all the same).
    pub(crate) refusals: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    /// CRL settings and the lock that issues CRL numbers in order.
    pub(crate) crls: crate::crl::Crls,
    /// The OCSP responder's key, cache and counters.
    pub(crate) ocsp: crate::ocsp::Ocsp,
    /// `Some(why)` while the token cannot sign (see `workers`); absent for in-process
    /// signers.
    token_health: Option<TokenHealthProbe>,
    rng: SystemRandom,
}

/// Says why the token cannot sign, or `None` while it can.
pub type TokenHealthProbe = Arc<dyn Fn() -> Option<String> + Send + Sync>;

impl CallContext {
    /// The audit actor: the role and uid the signer saw, then what the caller says.
    pub fn actor(&self, claimed: &str) -> String {
        format!("{}:uid={}:{}", self.caller.as_str(), self.uid, claimed)
    }
}

impl SignerService {
    /// `policy`'s profiles must each name a CA of `cas` (checked: a profile naming one this
    /// signer does not hold is a configuration error, never a refusal at issuance).
    pub fn new(
        policy: Policy,
        cas: Authorities,
        ledger: Arc<dyn Ledger>,
        journal: Journal,
    ) -> Result<Self, String> {
        for profile in policy.profiles.values() {
            if cas.get(&profile.ca).is_none() {
                return Err(format!(
                    "profile {}: ca {:?} is not a CA of this signer (signer.yaml `cas`)",
                    profile.name, profile.ca
                ));
            }
        }
        let ocsp = crate::ocsp::Ocsp::new(Default::default(), None, 2);
        Ok(SignerService {
            ocsp,
            policy,
            cas,
            ledger,
            journal,
            claims: Claims::default(),
            quotas: Quotas::default(),
            registration_authorities: None,
            refusals: std::sync::Mutex::default(),
            crls: crate::crl::Crls::default(),
            token_health: None,
            rng: SystemRandom::new(),
        })
    }

    /// The CA that issues under `profile`.
    pub(crate) fn authority(&self, profile: &Profile) -> Result<&Authority, SignerError> {
        // Checked at start for every profile; a miss here is a bug, answered as unavailable.
        self.cas
            .get(&profile.ca)
            .ok_or_else(|| unavailable("profile", format!("no CA named {:?}", profile.ca)))
    }

    /// The CA of `profile` (empty: the default CA): whose chain `cacerts` serves.
    pub(crate) fn ca_for(&self, profile: &str) -> Result<&Authority, SignerError> {
        if profile.is_empty() {
            return Ok(self.cas.default_ca());
        }
        self.authority(self.policy.profile(profile)?)
    }

    /// What `cacerts` returns for `ca`: its chain (the CA first), then during the overlap
    /// after a rollover the link certificates (NewWithOld, OldWithNew) and the previous
    /// CA certificate (OldWithOld), as RFC 7030 §4.1.3 asks, while that one is valid.
    pub(crate) fn cacerts(&self, ca: &Authority) -> Vec<Vec<u8>> {
        let mut certs = ca.chain.chain.clone();
        let now = std::time::SystemTime::now();
        if let Some(previous) = self
            .cas
            .earlier(&ca.name)
            .next()
            .filter(|p| p.chain.not_after > now)
        {
            certs.extend(ca.links.iter().cloned());
            certs.push(previous.chain.chain[0].clone());
        }
        certs.truncate(hsm_est_proto::messages::MAX_CHAIN_LEN);
        certs
    }

    /// Readiness follows the token: `probe` says why it cannot sign.
    pub fn with_token_health(mut self, probe: TokenHealthProbe) -> Self {
        self.token_health = Some(probe);
        self
    }

    /// Why the token cannot sign now, if it cannot.
    pub fn token_unavailable(&self) -> Option<String> {
        self.token_health.as_ref().and_then(|p| p())
    }

    /// CRLs as `config` says (file, validity).
    pub fn with_crl(mut self, config: crate::config::CrlConfig) -> Self {
        self.crls = crate::crl::Crls::new(config);
        self
    }

    /// OCSP as configured, signed by the CA key or by `responder`.
    pub fn with_ocsp(mut self, ocsp: crate::ocsp::Ocsp) -> Self {
        self.ocsp = ocsp;
        self
    }

    /// Accepts the registration authorities of `trust` (and no other).
    pub fn with_registration_authorities(mut self, trust: Option<RaTrust>) -> Self {
        self.registration_authorities = trust;
        self
    }

    pub(crate) fn pong(&self) -> Response {
        if let Some(why) = self.token_unavailable() {
            // Not ready: both readyz endpoints turn false, and callers learn why.
            return Response::Error(WireError::new(
                ErrorCode::Unavailable,
                hsm_est_proto::REASON_TOKEN_UNAVAILABLE,
                format!("the token cannot sign: {why}"),
            ));
        }
        if let Err(e) = self.ledger.health() {
            tracing::warn!("ping: the ledger does not answer: {e}");
            return Response::Error(WireError::new(
                ErrorCode::Unavailable,
                hsm_est_proto::REASON_LEDGER_UNAVAILABLE,
                "the signer cannot reach its ledger".to_string(),
            ));
        }
        let (commits, decisions) = self.journal.stats();
        Response::Pong {
            version: format!("hsm-est {}", env!("CARGO_PKG_VERSION")),
            ca_subject: self.cas.default_ca().chain.subject.to_string(),
            commits,
            decisions,
        }
    }

    /// Counts for the overview and for metrics: the ledger's (from its indexes), the
    /// refusals since start, the journal's, and the CA's notAfter.
    pub(crate) fn stats(&self) -> Result<Stats, SignerError> {
        let now_ms = hsm_est_common::util::now_millis();
        let now = now_ms / 1000;
        let counts = self
            .ledger
            .counts(now_ms - 86_400_000, now, now + 30 * 86_400)
            .map_err(|e| unavailable("stats", e))?;
        let (commits, decisions) = self.journal.stats();
        let (queue_depth, max_batch) = self.journal.queue();
        let (token_signs, token_sign_micros) = crate::token::sign_counters();
        let refusals_by_reason = self
            .refusals
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default();
        Ok(Stats {
            devices_by_status: counts.devices_by_status,
            issued_last_24h: counts.issued_since,
            expiring_within_30_days: counts.expiring,
            refusals_by_reason,
            commits,
            decisions,
            // The issuing CA that expires first: what an operator must act on next (an
            // earlier key retiring after a rollover is expected to expire).
            ca_not_after: self
                .cas
                .iter()
                .filter(|a| a.current)
                .map(|a| hsm_est_common::util::unix_seconds(a.chain.not_after))
                .min()
                .unwrap_or_default(),
            queue_depth,
            max_batch,
            token_signs,
            token_sign_micros,
            ocsp_responses: self
                .ocsp
                .answered
                .load(std::sync::atomic::Ordering::Relaxed),
            ocsp_cache_hits: self
                .ocsp
                .cache_hits
                .load(std::sync::atomic::Ordering::Relaxed),
            ocsp_cached: self.ocsp.cached() as u64,
        })
    }

    /// A page of unrevoked certificates expiring within `within_days`, soonest first, and
    /// whether more follow.
    pub(crate) fn expiring_certificates(
        &self,
        within_days: u32,
        after: Option<(i64, &[u8])>,
        limit: u32,
    ) -> Result<(Vec<crate::ledger::StoredCertificate>, bool), SignerError> {
        let now = hsm_est_common::util::unix_seconds(std::time::SystemTime::now());
        let before = now + i64::from(within_days) * 86_400;
        let rows = self
            .ledger
            .expiring_certificates(now, before, after, limit + 1)
            .map_err(|e| unavailable("expiring certificates", e))?;
        Ok(crate::devices::page(rows, limit))
    }

    /// Counts a refusal under its stable reason.
    pub(crate) fn count_refusal(&self, reason: &str) {
        if let Ok(mut m) = self.refusals.lock() {
            if let Some(n) = m.get_mut(reason) {
                *n += 1;
            } else if m.len() < hsm_est_proto::messages::MAX_STATS_ENTRIES {
                m.insert(reason.to_string(), 1);
            }
        }
    }

    pub(crate) fn csr_attributes(&self, profile: &str) -> Result<Vec<u8>, SignerError> {
        self.policy
            .profile(profile)?
            .csr_attributes()
            .map_err(|e| unavailable("csrattrs", e))
    }

    pub(crate) fn fresh_serial(&self) -> Result<Vec<u8>, SignerError> {
        for _ in 0..SERIAL_ATTEMPTS {
            let mut serial = vec![0u8; SERIAL_LEN];
            self.rng
                .fill(&mut serial)
                .map_err(|_| unavailable("serial", "no randomness"))?;
            serial[0] = (serial[0] & 0x3f) | 0x40;
            match self.ledger.serial_exists(&serial) {
                Ok(false) => return Ok(serial),
                Ok(true) => {
                    tracing::warn!("serial collision, drawing again");
                }
                Err(e) => return Err(unavailable("ledger read", e)),
            }
        }
        Err(SignerError::Unavailable)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::audit::AuditLog;
    use crate::ca::CaChain;
    use crate::csrgen;
    use crate::dispatch::CallContext;
    use crate::ledger::{SqliteLedger, DEFAULT_CA};
    use hsm_est_pki::cert::{self, CaSigner, TbsSpec};
    use hsm_est_pki::keys::SignatureAlgorithm;
    use hsm_est_pki::name;
    use hsm_est_policy::Caller;
    use hsm_est_proto::{ErrorCode, IssueRequest, Operation, Request};
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
    use std::time::{Duration, SystemTime};

    /// A software CA key: only for exercising the service's own checks without a token.
    pub(crate) struct SoftSigner {
        pair: EcdsaKeyPair,
        corrupt: bool,
    }

    impl SoftSigner {
        /// A fresh P-256 key and its SubjectPublicKeyInfo.
        pub(crate) fn generate() -> (SoftSigner, spki::SubjectPublicKeyInfoOwned) {
            let rng = SystemRandom::new();
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
                    .unwrap();
            let spki = csrgen::P256Key::generate().spki();
            let spki = spki::SubjectPublicKeyInfoOwned {
                subject_public_key: der::asn1::BitString::from_bytes(pair.public_key().as_ref())
                    .unwrap(),
                ..spki
            };
            (
                SoftSigner {
                    pair,
                    corrupt: false,
                },
                spki,
            )
        }
    }

    impl CaSigner for SoftSigner {
        fn algorithm(&self) -> SignatureAlgorithm {
            SignatureAlgorithm::EcdsaSha256
        }
        fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
            let mut sig = self
                .pair
                .sign(&SystemRandom::new(), message)
                .map_err(|_| "sign".to_string())?
                .as_ref()
                .to_vec();
            if self.corrupt {
                let last = sig.len() - 1;
                sig[last] ^= 0x01;
            }
            Ok(sig)
        }
    }

    /// A CA named `name` with a fresh in-memory key (its signatures corrupted when
    /// `corrupt`), writing its CRLs to `crl_file`.
    pub(crate) fn soft_authority(
        name: &str,
        corrupt: bool,
        crl_file: Option<std::path::PathBuf>,
    ) -> Authority {
        let (good, spki) = SoftSigner::generate();
        let subject = name::parse_dn(&format!("CN=Soft Test CA {name}")).unwrap();
        let ski = cert::key_identifier(&spki);
        let now = SystemTime::now();
        let ca_der = cert::sign_certificate(
            TbsSpec {
                serial: vec![0x40, 1],
                issuer: subject.clone(),
                subject,
                spki,
                not_before: now - Duration::from_secs(60),
                not_after: now + Duration::from_secs(86_400 * 400),
                extensions: cert::ca_extensions(&ski, Some(&ski)).unwrap(),
                algorithm: SignatureAlgorithm::EcdsaSha256,
            },
            &good,
        )
        .unwrap();
        let chain = CaChain::from_chain(vec![ca_der]).unwrap();
        Authority::new(
            name,
            chain,
            Arc::new(SoftSigner { corrupt, ..good }),
            crl_file,
        )
    }

    pub(crate) fn soft_ca(dir: &std::path::Path, corrupt: bool) -> SignerService {
        soft_service(dir, vec![soft_authority(DEFAULT_CA, corrupt, None)])
    }

    pub(crate) fn soft_ca_with_crl(
        dir: &std::path::Path,
        crl_file: Option<std::path::PathBuf>,
    ) -> SignerService {
        soft_service(dir, vec![soft_authority(DEFAULT_CA, false, crl_file)])
    }

    /// A service over the shipped policy with these CAs (the default first).
    pub(crate) fn soft_service(dir: &std::path::Path, cas: Vec<Authority>) -> SignerService {
        let ledger: Arc<dyn Ledger> = Arc::new(SqliteLedger::open(&dir.join("l.sqlite")).unwrap());
        let audit = AuditLog::open(&dir.join("a.jsonl"), None).unwrap();
        let (journal, _) = Journal::start(audit, Arc::clone(&ledger));
        let policy = Policy::load_dir(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policy"),
        )
        .unwrap();
        SignerService::new(policy, Authorities::new(cas), ledger, journal).unwrap()
    }

    fn bootstrap(service: &SignerService, cn: &str) -> Response {
        service.handle(
            CallContext {
                caller: Caller::Frontend,
                uid: 0,
                request_id: 1,
            },
            Request::Issue(IssueRequest {
                operation: Operation::Bootstrap,
                profile: "iqe-bootstrap".into(),
                requester: "basic:t".into(),
                client_ip: "::1".into(),
                csr_der: csrgen::csr(&[(csrgen::CN, cn)]),
                client_cert_der: vec![],
                client_chain: vec![],
                tls_exporter: vec![],
                registration_authority: false,
            }),
        )
    }

    pub(crate) fn temp_dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("hsm-est-svc-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_certificate_whose_signature_does_not_verify_is_never_stored_or_released() {
        let dir = temp_dir("corrupt");
        let service = soft_ca(&dir, true);
        match bootstrap(&service, "pump-1") {
            Response::Error(e) => assert_eq!(e.code, ErrorCode::Unavailable),
            other => panic!("released {other:?}"),
        }
        assert!(service.ledger.device("pump-1").unwrap().is_none());
        let audit = std::fs::read_to_string(dir.join("a.jsonl")).unwrap();
        assert!(audit.contains("\"event\":\"sign_failed\""), "{audit}");
        assert!(!audit.contains("\"event\":\"issued\""), "{audit}");
    }

    #[test]
    fn the_same_service_with_a_sound_signer_issues() {
        let dir = temp_dir("sound");
        let service = soft_ca(&dir, false);
        assert!(matches!(
            bootstrap(&service, "pump-1"),
            Response::Issued { .. }
        ));
        assert!(service.ledger.device("pump-1").unwrap().is_some());
    }

    /// The light pre-release check agrees with the full one, and refuses a certificate
    /// that names another algorithm, one signed by another key and one with a flipped bit.
    #[test]
    fn the_pre_release_check_refuses_what_the_full_check_refuses() {
        use hsm_est_pki::cert::{verify_certificate_signature, verify_issued_signature};
        use hsm_est_pki::keys::SignatureAlgorithm;
        let dir = temp_dir("light-check");
        let service = soft_ca(&dir, false);
        let Response::Issued { cert_der, .. } = bootstrap(&service, "pump-1") else {
            panic!("not issued");
        };
        let ca = service.cas.default_ca();
        let alg = ca.signer.algorithm();
        assert!(verify_certificate_signature(&cert_der, &ca.chain.spki).is_ok());
        assert!(verify_issued_signature(&cert_der, &ca.chain.key, alg).is_ok());
        assert!(
            verify_issued_signature(&cert_der, &ca.chain.key, SignatureAlgorithm::EcdsaSha384)
                .is_err()
        );
        let other = soft_ca(&temp_dir("light-check-other"), false);
        let other_key = &other.cas.default_ca().chain.key;
        assert!(verify_issued_signature(&cert_der, other_key, alg).is_err());
        for i in [4, cert_der.len() / 2, cert_der.len() - 3] {
            let mut bad = cert_der.clone();
            bad[i] ^= 0x01;
            assert!(
                verify_issued_signature(&bad, &ca.chain.key, alg).is_err(),
                "bit flipped at {i} accepted"
            );
        }
    }
}
