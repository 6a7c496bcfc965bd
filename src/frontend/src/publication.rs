//! The publication listener (`publication.listen`): plain HTTP, `GET /crl` only, the CRL
//! the signer issued last, as DER (`application/pkix-crl`, RFC 5280 §4.2.1.13). The
//! frontend only relays it: it asks the signer with the read-only CrlGet, keeps the answer
//! for [`CRL_CACHE_TTL`], and can neither make nor change a CRL (the signature is the CA's).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};

use hsm_est_proto::{Request as SignerRequest, Response as SignerResponse};

use crate::http::{text, unavailable, AppState, HttpResponse};

/// How long a CRL fetched from the signer is served before asking again: a revocation
/// reaches HTTP clients within this plus the signer's one-second coalescing.
pub const CRL_CACHE_TTL: Duration = Duration::from_secs(5);

/// The paths the CRL is served at.
pub const CRL_PATHS: &[&str] = &["/crl", "/ca.crl"];

pub async fn serve(addr: std::net::SocketAddr, state: Arc<AppState>) -> Result<(), String> {
    crate::plain::serve(addr, "CRL publication", move |path: String| {
        let state = Arc::clone(&state);
        async move {
            if !CRL_PATHS.contains(&path.as_str()) {
                return crate::plain::not_found();
            }
            crl(&state).await
        }
    })
    .await
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

/// The signer's last CRL, from the cache when fresh. `Ok(None)`: the signer has issued
/// none since it started; `Err`: the signer did not answer.
pub(crate) async fn current(state: &AppState, id: u64) -> Result<Option<Arc<Crl>>, ()> {
    if let Ok(c) = state.crl_cache.lock() {
        if let Some((at, crl)) = c.as_ref() {
            if at.elapsed() < CRL_CACHE_TTL {
                return Ok(crl.clone());
            }
        }
    }
    let crl = match state.signer.call(id, &SignerRequest::CrlGet).await {
        Ok(SignerResponse::Crl { der }) => match Crl::parse(der) {
            Some(c) => Some(Arc::new(c)),
            None => {
                tracing::error!("the signer's CRL does not parse");
                return Err(());
            }
        },
        Ok(SignerResponse::Error(e)) if e.reason == "crl.none" => None,
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
        *c = Some((Instant::now(), crl.clone()));
    }
    Ok(crl)
}

async fn crl(state: &AppState) -> HttpResponse {
    let crl = match current(state, state.next_request_id()).await {
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
