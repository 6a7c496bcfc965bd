//! Plain-HTTP listeners beside the EST port: the metrics listener and the publication
//! listener (the CRL and OCSP, which relying parties fetch over HTTP: fetching them over
//! HTTPS would be circular). HTTP/1.1 only; GET and HEAD, and POST with a small body where
//! the listener takes one (OCSP); every cost bounded: a connection cap, a per-address cap,
//! a header deadline, a body cap and deadline, and a maximum connection life.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Method, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::http::HttpResponse;
use crate::limits::PerAddress;

/// Connections open at once on one plain listener, and per client address.
const MAX_CONNECTIONS: usize = 512;
const MAX_PER_ADDRESS: u32 = 16;
/// A connection ends after this long, whatever it is doing.
const CONNECTION_LIFE: Duration = Duration::from_secs(60);
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A POST body must arrive within this.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// One request as a plain listener's handler sees it.
pub struct PlainRequest {
    pub post: bool,
    pub path: String,
    /// The media type of a POST body, without parameters, in lower case.
    pub content_type: Option<String>,
    pub body: Bytes,
}

fn status_text(status: StatusCode, text: &'static str) -> HttpResponse {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r
}

pub fn not_found() -> HttpResponse {
    status_text(StatusCode::NOT_FOUND, "Not found.\n")
}

/// Listens on `addr` and answers every GET or HEAD, and every POST of at most `max_post`
/// bytes when that is set, with `handler`; other methods get 405. `what` names the
/// listener in the log.
pub async fn serve<F, Fut>(
    addr: SocketAddr,
    what: &'static str,
    max_post: Option<usize>,
    handler: F,
) -> Result<(), String>
where
    F: Fn(PlainRequest) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = HttpResponse> + Send + 'static,
{
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} for {what}: {e}"))?;
    tracing::info!("{what} on http://{addr}");
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let per_address = PerAddress::new(MAX_PER_ADDRESS);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                continue;
            };
            let Some(address_slot) = per_address.try_enter(peer.ip()) else {
                continue;
            };
            let handler = handler.clone();
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let _slots = (slot, address_slot);
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let handler = handler.clone();
                    async move {
                        let head = req.method() == Method::HEAD;
                        let post = req.method() == Method::POST;
                        if !(req.method() == Method::GET || head || post && max_post.is_some()) {
                            return Ok::<_, Infallible>(status_text(
                                StatusCode::METHOD_NOT_ALLOWED,
                                "Method not allowed.\n",
                            ));
                        }
                        let path = req.uri().path().to_string();
                        let content_type = req
                            .headers()
                            .get(hyper::header::CONTENT_TYPE)
                            .and_then(|v| v.to_str().ok())
                            .map(|v| {
                                v.split(';')
                                    .next()
                                    .unwrap_or("")
                                    .trim()
                                    .to_ascii_lowercase()
                            });
                        let body = match max_post.filter(|_| post) {
                            None => Bytes::new(),
                            Some(max) => {
                                match hsm_est_web::body::read_body(req, max, BODY_TIMEOUT).await {
                                    Ok((_, b)) => b,
                                    Err(e) => return Ok(body_refusal(e)),
                                }
                            }
                        };
                        let r = handler(PlainRequest {
                            post,
                            path,
                            content_type,
                            body,
                        })
                        .await;
                        Ok(if head {
                            let (mut parts, body) = r.into_parts();
                            let len = http_body_util::BodyExt::collect(body)
                                .await
                                .map(|b| b.to_bytes().len())
                                .unwrap_or(0);
                            parts.headers.insert(
                                hyper::header::CONTENT_LENGTH,
                                hyper::header::HeaderValue::from(len),
                            );
                            Response::from_parts(parts, Full::new(Bytes::new()))
                        } else {
                            r
                        })
                    }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(tcp), service);
                let _ = tokio::time::timeout(CONNECTION_LIFE, conn).await;
            });
        }
    });
    Ok(())
}

fn body_refusal(e: hsm_est_web::body::BodyError) -> HttpResponse {
    use hsm_est_web::body::BodyError;
    match e {
        BodyError::TooLarge { .. } => {
            let mut r = status_text(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large.\n");
            r.headers_mut().insert(
                hyper::header::CONNECTION,
                hyper::header::HeaderValue::from_static("close"),
            );
            r
        }
        BodyError::Timeout => status_text(StatusCode::REQUEST_TIMEOUT, "Request body too slow.\n"),
        BodyError::Broken => status_text(StatusCode::BAD_REQUEST, "Unreadable request body.\n"),
    }
}
