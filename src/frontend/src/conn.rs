//! One client connection, from accept to close, with every per-connection cost bounded:
//! a slot among `max_connections` and among the address's `max_connections_per_address`,
//! the TLS handshake deadline, an idle timeout on every protocol path (no byte either way
//! for `idle_timeout`: after the handshake, during protocol detection, between HTTP/1.1
//! requests, on a silent HTTP/2 connection), a maximum age after which the connection is
//! shut down gracefully, and at most [`H2_MAX_STREAMS`] HTTP/2 streams at once.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::http::{self, AppState, ConnInfo};
use crate::limits::AddressSlot;

/// HTTP/2 streams a client may have open at once: enough for any EST client, small enough
/// that one connection cannot multiply its requests.
pub const H2_MAX_STREAMS: u32 = 16;
/// How often the idle watchdog looks.
const WATCH_EVERY: Duration = Duration::from_millis(500);
/// After a graceful shutdown starts, how long the connection may take to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Milliseconds since the connection started at which a byte last moved.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// A stream that notes when bytes move.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

/// hyper writes HTTP/1.1 header names in title case, which spells this one
/// `Www-Authenticate`; libest looks for `WWW-Authenticate` and nothing else. hyper offers no
/// way to choose a response header's case, so the spelling is fixed on the way out. The
/// two are the same length, so byte counts are unchanged, and the stream is not vectored
/// (hyper then writes each response head in one buffer).
const TITLE_CASED: &[u8] = b"\r\nWww-Authenticate: ";
const CANONICAL: &[u8] = b"\r\nWWW-Authenticate: ";

fn canonical_header_case(data: &[u8]) -> Option<Vec<u8>> {
    let at = data
        .windows(TITLE_CASED.len())
        .position(|w| w == TITLE_CASED)?;
    let mut fixed = data.to_vec();
    fixed[at..at + CANONICAL.len()].copy_from_slice(CANONICAL);
    Some(fixed)
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = match canonical_header_case(data) {
            Some(fixed) => Pin::new(&mut self.inner).poll_write(cx, &fixed),
            None => Pin::new(&mut self.inner).poll_write(cx, data),
        };
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// RFC 9266 tls-exporter: 32 bytes of the TLS 1.3 exporter with the label
/// `EXPORTER-Channel-Binding` and no context. Over TLS 1.2 there is none (tls-unique is not
/// offered, and the exporter is only safe with extended master secret there).
fn channel_binding(session: &rustls::ServerConnection) -> Option<Vec<u8>> {
    if session.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
        return None;
    }
    let mut value = vec![0u8; 32];
    session
        .export_keying_material(&mut value, b"EXPORTER-Channel-Binding", None)
        .ok()?;
    Some(value)
}

/// Serves one accepted TCP connection until it ends or a limit closes it. The slots are
/// held for the connection's whole life.
pub async fn serve(
    state: Arc<AppState>,
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
    peer: std::net::SocketAddr,
    slots: (tokio::sync::OwnedSemaphorePermit, AddressSlot),
) {
    let _slots = slots;
    let handshake =
        tokio::time::timeout(state.config.handshake_timeout, acceptor.accept(tcp)).await;
    let tls = match handshake {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::info!("TLS handshake with {peer} failed: {e}");
            return;
        }
        Err(_) => {
            tracing::info!("TLS handshake with {peer} timed out");
            return;
        }
    };
    let session = tls.get_ref().1;
    let peer_certs = session.peer_certificates().unwrap_or(&[]);
    let conn = ConnInfo {
        peer,
        client_cert: peer_certs.first().map(|c| c.to_vec()),
        client_intermediates: peer_certs.iter().skip(1).map(|c| c.to_vec()).collect(),
        tls_exporter: channel_binding(session),
    };
    let activity = Arc::new(Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
    });
    activity.touch();
    let io = TokioIo::new(Watched {
        inner: tls,
        activity: Arc::clone(&activity),
    });
    let (idle_timeout, max_age) = (state.config.idle_timeout, state.config.max_connection_age);
    let header_timeout = state.config.header_timeout;
    let service = service_fn(move |req| {
        let state = Arc::clone(&state);
        let conn = conn.clone();
        async move { Ok::<_, std::convert::Infallible>(http::handle(state, conn, req).await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        // libest matches header names case-sensitively (Content-Type, WWW-Authenticate):
        // write them as HTTP/1.1 spells them.
        .title_case_headers(true)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let aged = tokio::time::sleep(max_age);
    tokio::pin!(aged);
    let mut shutting_down: Option<Instant> = None;
    loop {
        tokio::select! {
            r = connection.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!("connection with {peer} ended: {e}");
                }
                return;
            }
            _ = &mut aged, if shutting_down.is_none() => {
                tracing::debug!("connection with {peer} reached its maximum age; closing");
                connection.as_mut().graceful_shutdown();
                shutting_down = Some(Instant::now());
            }
            _ = tokio::time::sleep(WATCH_EVERY) => {
                if activity.idle_for() >= idle_timeout {
                    tracing::info!(
                        "connection with {peer} closed: idle for {} s",
                        idle_timeout.as_secs()
                    );
                    return;
                }
                if shutting_down.is_some_and(|t| t.elapsed() >= SHUTDOWN_GRACE) {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn www_authenticate_is_spelt_as_libest_expects() {
        let head = b"HTTP/1.1 401 Unauthorized\r\nWww-Authenticate: Basic realm=\"x\"\r\n\r\n";
        let fixed = canonical_header_case(head).unwrap();
        assert_eq!(fixed.len(), head.len());
        assert!(fixed.windows(18).any(|w| w == b"WWW-Authenticate: "));
        assert!(canonical_header_case(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").is_none());
    }
}
