//! Who the client is: HTTP Basic against the users file, under failure limits per address
//! and per user name, or a TLS client certificate (a device's own, or a registration
//! authority's). The signer re-checks every certificate; this only chooses the identity.

use base64ct::{Base64, Encoding};
use hyper::header::AUTHORIZATION;
use hyper::StatusCode;

use hsm_est_common::util::log_safe;

use crate::config::{AuthMethod, Route};
use crate::http::{
    ca_chain, text, unauthorized, unavailable, with_retry_after, AppState, ConnInfo, EstOp,
    HttpResponse,
};
use hsm_est_web::login::LoginRefusal;

/// Who the client is.
pub(crate) enum Identity {
    User(super::users::UserEntry),
    /// A device certificate issued by this CA; passed to the signer.
    Device {
        der: Vec<u8>,
    },
    /// A gateway certificate under an RA trust anchor, with the certificates the client
    /// sent after it; the signer verifies the path and the RA's scope itself.
    RegistrationAuthority {
        der: Vec<u8>,
        chain: Vec<Vec<u8>>,
    },
}

impl Identity {
    pub(crate) fn requester(&self) -> String {
        match self {
            Identity::User(u) => format!("basic:{}", u.name),
            Identity::Device { der } => format!("cert:{}", hex::encode(hsm_est_pki::sha256(der))),
            Identity::RegistrationAuthority { der, .. } => {
                format!("ra:{}", hex::encode(hsm_est_pki::sha256(der)))
            }
        }
    }
}

/// Parses `Authorization: Basic …` into (user, password).
fn basic_credentials(req: &hyper::http::request::Parts) -> Option<Result<(String, String), ()>> {
    let value = req.headers.get(AUTHORIZATION)?;
    Some(parse_basic(value.as_bytes()).ok_or(()))
}

/// The (user, password) of an `Authorization` header value of the Basic scheme (any
/// case), base64 of UTF-8 `user:password`; `None` for anything else.
pub fn parse_basic(value: &[u8]) -> Option<(String, String)> {
    let v = std::str::from_utf8(value).ok()?;
    let (scheme, rest) = v.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = Base64::decode_vec(rest.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// A device certificate is one the issuing CA's *key* signed: an issuer name can be
/// copied by any CA in `client_ca_file`. After a rollover `cacerts` also carries the CA's
/// earlier certificate and the link certificates, all with the CA's own name: a key of any
/// of them counts, so devices renew from before the rollover. (The signer checks it again,
/// and the ledger.)
fn is_device_certificate(cert: &[u8], ca_chain: &[Vec<u8>]) -> bool {
    let parsed: Vec<_> = ca_chain
        .iter()
        .filter_map(|d| hsm_est_pki::cert::parse_certificate(d).ok())
        .collect();
    let Some(ca) = parsed.first() else {
        return false;
    };
    let name = &ca.tbs_certificate.subject;
    parsed
        .iter()
        .filter(|c| c.tbs_certificate.subject == *name)
        .any(|c| {
            hsm_est_pki::cert::verify_certificate_signature(
                cert,
                &c.tbs_certificate.subject_public_key_info,
            )
            .is_ok()
        })
}

/// A registration authority's certificate chains to an RA trust anchor, and only those
/// count; a certificate from any other anchor of `client_ca_file` carries no authority.
fn is_registration_authority(state: &AppState, conn: &ConnInfo, cert: &[u8]) -> bool {
    let Some(verifier) = &state.ra_verifier else {
        return false;
    };
    let leaf = rustls::pki_types::CertificateDer::from(cert.to_vec());
    let intermediates: Vec<rustls::pki_types::CertificateDer<'static>> = conn
        .client_intermediates
        .iter()
        .map(|c| rustls::pki_types::CertificateDer::from(c.clone()))
        .collect();
    verifier
        .verify_client_cert(&leaf, &intermediates, rustls::pki_types::UnixTime::now())
        .is_ok()
}

/// HTTP Basic, with the bounded work of [`hsm_est_web::login`]; each refusal becomes its
/// answer here, with its metric and log line.
async fn basic_login(
    state: &AppState,
    conn: &ConnInfo,
    user: &str,
    password: &str,
) -> Result<Identity, HttpResponse> {
    let ip = conn.peer.ip();
    match state.logins.login(user, password, ip).await {
        Ok(entry) => Ok(Identity::User(entry)),
        Err(LoginRefusal::NameTooLong) => {
            let shown: String = user.chars().take(32).collect();
            tracing::warn!(
                "login refused: a user name of {} bytes ({}…) from {ip}",
                user.len(),
                log_safe(&shown)
            );
            Err(text(StatusCode::BAD_REQUEST, "The user name is too long."))
        }
        Err(LoginRefusal::Locked(wait)) => {
            state.metrics.limited("logins");
            tracing::warn!(
                "login refused: too many failures for {} from {ip}",
                log_safe(user)
            );
            Err(with_retry_after(
                text(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many failed logins. Try again later.",
                ),
                wait,
            ))
        }
        Err(LoginRefusal::Busy) => {
            state.metrics.limited("busy");
            tracing::warn!("login from {ip} turned away: every password verification slot is busy");
            Err(with_retry_after(
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Too many logins in progress. Try again shortly.",
                ),
                1,
            ))
        }
        Err(LoginRefusal::Invalid) => {
            state.metrics.auth_failure();
            tracing::warn!("login failed for user {} from {ip}", log_safe(user));
            Err(unauthorized(
                &state.config.realm,
                "The credentials are not valid.",
            ))
        }
    }
}

/// A device certificate listed in the signer's current CRL is refused here, before the
/// request reaches the signer (which refuses it too, from its ledger). Without a CRL, or
/// with the signer unreachable, the signer's check alone decides.
async fn refuse_if_revoked(
    state: &AppState,
    conn: &ConnInfo,
    cert: &[u8],
    ca: &str,
    id: u64,
) -> Result<(), HttpResponse> {
    let Ok(Some(crl)) = crate::publication::current(state, ca, id).await else {
        return Ok(());
    };
    let Ok(parsed) = hsm_est_pki::cert::parse_certificate(cert) else {
        return Ok(());
    };
    let serial = parsed.tbs_certificate.serial_number.as_bytes();
    if !crl.lists(serial) {
        return Ok(());
    }
    tracing::warn!(
        "client certificate {} from {} refused: revoked (CRL {})",
        hex::encode(serial),
        conn.peer.ip(),
        crl.number.map(|n| n.to_string()).unwrap_or_default()
    );
    Err(text(
        StatusCode::FORBIDDEN,
        "The client certificate is revoked.",
    ))
}

pub(crate) async fn authenticate(
    state: &AppState,
    conn: &ConnInfo,
    route: &Route,
    op: EstOp,
    req: &hyper::http::request::Parts,
    id: u64,
) -> Result<Identity, HttpResponse> {
    let realm = &state.config.realm;
    let allows = |m| route.auth.contains(&m);
    // Re-enrolment authenticates with the certificate being renewed (RFC 7030 §4.2.2): no
    // Basic challenge, which would send a client in circles.
    if op == EstOp::SimpleReenroll && conn.client_cert.is_none() {
        return Err(text(
            StatusCode::FORBIDDEN,
            "simplereenroll requires a TLS client certificate: the certificate being renewed.",
        ));
    }
    // Re-enrolment authenticates with the certificate being renewed (RFC 7030 §4.2.2).
    let basic = if op == EstOp::SimpleReenroll || !allows(AuthMethod::Basic) {
        None
    } else {
        basic_credentials(req)
    };
    match basic {
        Some(Err(())) => return Err(unauthorized(realm, "Malformed Basic credentials.")),
        Some(Ok((user, password))) => return basic_login(state, conn, &user, &password).await,
        None => {}
    }
    if op != EstOp::Bootstrap && allows(AuthMethod::Certificate) {
        if let Some(cert) = &conn.client_cert {
            // The CA of the profile this operation issues under: a certificate of another
            // CA of the signer is no device certificate on this label.
            let profile = match op {
                EstOp::SimpleReenroll => &route.reenroll_profile,
                _ => &route.enroll_profile,
            };
            let ca = ca_chain(state, profile, id).await.ok_or_else(unavailable)?;
            if is_device_certificate(cert, &ca.chain) {
                refuse_if_revoked(state, conn, cert, &ca.name, id).await?;
                return Ok(Identity::Device { der: cert.clone() });
            }
            if is_registration_authority(state, conn, cert) {
                let max = hsm_est_proto::messages::MAX_CHAIN_LEN;
                return Ok(Identity::RegistrationAuthority {
                    der: cert.clone(),
                    chain: conn
                        .client_intermediates
                        .iter()
                        .take(max)
                        .cloned()
                        .collect(),
                });
            }
            tracing::warn!(
                "client certificate {} from {} is neither a device's nor a registration \
                 authority's; refused",
                hex::encode(hsm_est_pki::sha256(cert)),
                conn.peer.ip()
            );
            return Err(text(
                StatusCode::FORBIDDEN,
                "The client certificate carries no authority here.",
            ));
        }
    }
    Err(unauthorized(realm, "Authentication is required."))
}
