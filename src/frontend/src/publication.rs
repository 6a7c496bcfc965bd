//! The publication listener (`publication.listen`), plain HTTP:
//!
//! - `GET /crl` (or `/ca.crl`): the default CA's CRL the signer issued last, as DER
//!   (`application/pkix-crl`, RFC 5280 §4.2.1.13); `GET /crl/{name}` the CRL of the CA
//!   `name` (signer.yaml, `cas`). The frontend only relays it: it asks the signer with the
//!   read-only CrlGet, keeps the answer for [`CRL_CACHE_TTL`], and can neither make nor
//!   change a CRL (the signature is the CA's).
//! - OCSP (RFC 6960 Appendix A): `POST /ocsp` with an `application/ocsp-request` body, or
//!   `GET /ocsp/{base64 of the request}`. The frontend parses the request and forwards only
//!   the CertIDs and the nonce; the signer decides every status and signs. A request that
//!   does not parse is answered `malformedRequest` here, and a signer that does not answer
//!   `tryLater`: both unsigned, as RFC 6960 §2.3 has them.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};

use hsm_est_proto::{Request as SignerRequest, Response as SignerResponse};

use crate::http::{text, unavailable, AppState, HttpResponse};
use crate::plain::PlainRequest;

/// How long a CRL fetched from the signer is served before asking again: a revocation
/// reaches HTTP clients within this plus the signer's one-second coalescing.
pub const CRL_CACHE_TTL: Duration = Duration::from_secs(5);

/// The paths the default CA's CRL is served at.
pub const CRL_PATHS: &[&str] = &["/crl", "/ca.crl"];
/// The name the signer gives its default CA.
pub const DEFAULT_CA: &str = "default";

/// The CA whose CRL `path` asks for: the default CA's paths, or `/crl/{name}` with a name
/// that may be a CA's (1-32 of a-z, 0-9, -). `None`: not a CRL path.
fn crl_ca(path: &str) -> Option<&str> {
    if CRL_PATHS.contains(&path) {
        return Some(DEFAULT_CA);
    }
    let name = path.strip_prefix("/crl/")?;
    let name = name.strip_suffix(".crl").unwrap_or(name);
    let valid = !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    valid.then_some(name)
}

/// The OCSP path: POST to it, GET below it.
pub const OCSP_PATH: &str = "/ocsp";
/// The largest OCSP request taken (20 CertIDs with SHA-512 hashes fit in 4 KiB).
pub const MAX_OCSP_REQUEST: usize = 8 * 1024;

pub async fn serve(addr: std::net::SocketAddr, state: Arc<AppState>) -> Result<(), String> {
    crate::plain::serve(
        addr,
        "CRL and OCSP publication",
        Some(MAX_OCSP_REQUEST),
        move |req: PlainRequest| {
            let state = Arc::clone(&state);
            async move {
                let path = req.path.as_str();
                if path == OCSP_PATH || path.starts_with("/ocsp/") {
                    return ocsp(&state, req).await;
                }
                let Some(ca) = crl_ca(path) else {
                    return crate::plain::not_found();
                };
                if req.post {
                    return text(StatusCode::METHOD_NOT_ALLOWED, "Only GET and HEAD.");
                }
                crl(&state, ca).await
            }
        },
    )
    .await
}

/// The DER request of a GET: what follows `/ocsp/`, URL-decoded, then base64 (padded or
/// not, standard or URL-safe alphabet: clients differ).
fn get_request(path: &str) -> Option<Vec<u8>> {
    use base64ct::{Base64, Base64Unpadded, Base64Url, Base64UrlUnpadded, Encoding};
    let encoded = path.strip_prefix("/ocsp/")?;
    if encoded.is_empty() || encoded.len() > MAX_OCSP_REQUEST * 2 {
        return None;
    }
    let text = percent_encoding::percent_decode_str(encoded)
        .decode_utf8()
        .ok()?
        .trim()
        .to_string();
    Base64::decode_vec(&text)
        .or_else(|_| Base64Unpadded::decode_vec(&text))
        .or_else(|_| Base64Url::decode_vec(&text))
        .or_else(|_| Base64UrlUnpadded::decode_vec(&text))
        .ok()
}

fn ocsp_answer(der: Vec<u8>, cacheable: bool) -> HttpResponse {
    let mut r = Response::new(Full::new(Bytes::from(der)));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/ocsp-response"),
    );
    // HTTP caches may keep a GET answer without a nonce briefly (RFC 5019 §6); a
    // revocation reaches clients behind one within this.
    r.headers_mut().insert(
        CACHE_CONTROL,
        HeaderValue::from_static(if cacheable {
            "max-age=60, public, no-transform, must-revalidate"
        } else {
            "no-store"
        }),
    );
    r
}

async fn ocsp(state: &AppState, req: PlainRequest) -> HttpResponse {
    use hsm_est_pki::ocsp::{error_response, parse_request, OcspResponseStatus};
    let der = if req.post {
        if req.path != OCSP_PATH {
            return crate::plain::not_found();
        }
        if req.content_type.as_deref() != Some("application/ocsp-request") {
            return text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type must be application/ocsp-request.",
            );
        }
        req.body.to_vec()
    } else {
        match get_request(&req.path) {
            Some(d) => d,
            None => {
                return ocsp_answer(error_response(OcspResponseStatus::MalformedRequest), false)
            }
        }
    };
    let parsed = match parse_request(&der) {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!("OCSP request refused: {e}");
            return ocsp_answer(error_response(OcspResponseStatus::MalformedRequest), false);
        }
    };
    let cacheable = !req.post && parsed.nonce.is_none();
    let request = SignerRequest::OcspStatus {
        certs: parsed.certs,
        nonce: parsed.nonce,
    };
    match state.signer.call(state.next_request_id(), &request).await {
        Ok(SignerResponse::Ocsp { der }) => ocsp_answer(der, cacheable),
        Ok(SignerResponse::Error(e)) => {
            tracing::warn!("OCSP: the signer refused: {}", e.reason);
            ocsp_answer(error_response(OcspResponseStatus::TryLater), false)
        }
        Ok(other) => {
            tracing::error!("unexpected signer answer {:?}", other.msg_type());
            ocsp_answer(error_response(OcspResponseStatus::InternalError), false)
        }
        Err(e) => {
            tracing::warn!("{e}");
            ocsp_answer(error_response(OcspResponseStatus::TryLater), false)
        }
    }
}

/// A CRL as the signer issued it, and the serials it lists.
pub struct Crl {
    pub der: Bytes,
    pub number: Option<u64>,
    serials: HashSet<Vec<u8>>,
}

impl Crl {
    fn parse(der: Vec<u8>) -> Option<Crl> {
        use der::Decode;
        let list = x509_cert::crl::CertificateList::from_der(&der).ok()?;
        let serials = list
            .tbs_cert_list
            .revoked_certificates
            .unwrap_or_default()
            .iter()
            .map(|r| r.serial_number.as_bytes().to_vec())
            .collect();
        Some(Crl {
            number: hsm_est_pki::crl::crl_number(&der),
            der: Bytes::from(der),
            serials,
        })
    }

    pub fn lists(&self, serial: &[u8]) -> bool {
        self.serials.contains(serial)
    }
}

/// CA `ca`'s last CRL from the signer, from the cache when fresh. `Ok(None)`: the signer
/// has issued none since it started, or holds no CA of that name; `Err`: the signer did
/// not answer. Past the cache's life the signer is asked with the cached CRL's number and
/// sends the CRL only when it changed, so a large CRL crosses the socket once per new CRL,
/// not every few seconds.
pub(crate) async fn current(state: &AppState, ca: &str, id: u64) -> Result<Option<Arc<Crl>>, ()> {
    let mut known = None;
    if let Ok(c) = state.crl_cache.lock() {
        if let Some((at, crl)) = c.get(ca) {
            if at.elapsed() < CRL_CACHE_TTL {
                return Ok(crl.clone());
            }
            known = crl.clone().filter(|c| c.number.is_some());
        }
    }
    let request = SignerRequest::CrlGet {
        known_number: known.as_ref().and_then(|c| c.number).unwrap_or(0),
        ca: ca.to_string(),
    };
    let crl = match state.signer.call(id, &request).await {
        Ok(SignerResponse::Done) if known.is_some() => known,
        Ok(SignerResponse::Crl { der }) => match Crl::parse(der) {
            Some(c) => Some(Arc::new(c)),
            None => {
                tracing::error!("the signer's CRL does not parse");
                return Err(());
            }
        },
        Ok(SignerResponse::Error(e)) if e.reason == "crl.none" => None,
        // Not a CA of this signer: nothing to cache (the cache keeps only real CAs).
        Ok(SignerResponse::Error(e)) if e.reason == "ca.unknown" => return Ok(None),
        Ok(other) => {
            tracing::error!("unexpected signer answer {:?}", other.msg_type());
            return Err(());
        }
        Err(e) => {
            tracing::warn!("{e}");
            return Err(());
        }
    };
    if let Ok(mut c) = state.crl_cache.lock() {
        c.insert(ca.to_string(), (Instant::now(), crl.clone()));
    }
    Ok(crl)
}

async fn crl(state: &AppState, ca: &str) -> HttpResponse {
    let crl = match current(state, ca, state.next_request_id()).await {
        Ok(Some(crl)) => crl,
        Ok(None) => return text(StatusCode::NOT_FOUND, "No CRL has been issued yet."),
        Err(()) => return unavailable(),
    };
    let mut r = Response::new(Full::new(crl.der.clone()));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/pkix-crl"),
    );
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("max-age=60"));
    r
}
