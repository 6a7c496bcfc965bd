//! The publication listener (`publication.listen`): plain HTTP, `GET /crl` only, the CRL
//! the signer issued last, as DER (`application/pkix-crl`, RFC 5280 §4.2.1.13). The
//! frontend only relays it: it asks the signer with the read-only CrlGet, keeps the answer
//! for [`CRL_CACHE_TTL`], and can neither make nor change a CRL (the signature is the CA's).

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

async fn crl(state: &AppState) -> HttpResponse {
    let cached = state.crl_cache.lock().ok().and_then(|c| {
        c.as_ref()
            .filter(|(at, _)| at.elapsed() < CRL_CACHE_TTL)
            .map(|(_, der)| der.clone())
    });
    let der = match cached {
        Some(der) => der,
        None => match state
            .signer
            .call(state.next_request_id(), &SignerRequest::CrlGet)
            .await
        {
            Ok(SignerResponse::Crl { der }) => {
                let der = Bytes::from(der);
                if let Ok(mut c) = state.crl_cache.lock() {
                    *c = Some((Instant::now(), der.clone()));
                }
                der
            }
            Ok(SignerResponse::Error(e)) if e.reason == "crl.none" => {
                return text(StatusCode::NOT_FOUND, "No CRL has been issued yet.");
            }
            Ok(other) => {
                tracing::error!("unexpected signer answer {:?}", other.msg_type());
                return unavailable();
            }
            Err(e) => {
                tracing::warn!("{e}");
                return unavailable();
            }
        },
    };
    let mut r = Response::new(Full::new(der));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/pkix-crl"),
    );
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("max-age=60"));
    r
}
