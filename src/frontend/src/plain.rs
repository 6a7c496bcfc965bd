//! Plain-HTTP listeners beside the EST port: the metrics listener and the publication
//! listener (the CRL, which relying parties fetch over HTTP: fetching it over HTTPS would be
//! circular). HTTP/1.1 only, GET and HEAD only, every cost bounded: a connection cap, a
//! per-address cap, a header deadline, and a maximum connection life.

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

pub fn not_found() -> HttpResponse {
    let mut r = Response::new(Full::new(Bytes::from_static(b"Not found.\n")));
    *r.status_mut() = StatusCode::NOT_FOUND;
    r
}

/// Listens on `addr` and answers every GET or HEAD with `handler(path)`; anything else
/// gets 405. `what` names the listener in the log.
pub async fn serve<F, Fut>(addr: SocketAddr, what: &'static str, handler: F) -> Result<(), String>
where
    F: Fn(String) -> Fut + Clone + Send + Sync + 'static,
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
            tokio::spawn(async move {
                let _slots = (slot, address_slot);
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let handler = handler.clone();
                    async move {
                        let head = req.method() == Method::HEAD;
                        if req.method() != Method::GET && !head {
                            let mut r = Response::new(Full::new(Bytes::from_static(
                                b"Only GET and HEAD.\n",
                            )));
                            *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
                            return Ok::<_, Infallible>(r);
                        }
                        let r = handler(req.uri().path().to_string()).await;
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
