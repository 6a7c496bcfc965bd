//! `est-admin`: the dashboard and the admin API on a management address. It holds the
//! admin role on the signer (its own socket, checked by SO_PEERCRED) and nothing more: it
//! never links the token, the PIN or the ledger (`tests/architecture.rs` reads that from
//! the crate graph), and every change it asks for is decided, and audited under the admin's
//! name, by the signer.
#![forbid(unsafe_code)]

pub mod api;
pub mod config;
mod dashboard;
pub mod http;
pub mod metrics;
mod pages;
pub mod session;

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use config::AdminConfig;
use hsm_est_web::login::Logins;
use hsm_est_web::tls::{certs, private_key, roots};
use hsm_est_web::users::Verifier;
use http::{Conn, State};

/// HTTP/2 streams a client may have open at once.
const H2_MAX_STREAMS: u32 = 16;
/// After a graceful shutdown starts, how long the connection may take to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// TLS 1.2 and 1.3; with `client_ca_file`, a client certificate chaining to it is required
/// in the handshake, before any password is looked at.
pub fn tls_config(config: &AdminConfig) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match &config.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(file) => {
            let roots = roots(&[file.as_path()])?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("admin client certificate verifier: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut server = builder
        .with_single_cert(certs(&config.cert_file)?, private_key(&config.key_file)?)
        .map_err(|e| format!("{}: {e}", config.cert_file.display()))?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(server))
}

/// Starts the listeners and serves until SIGTERM or SIGINT. Prints `ready` once they
/// accept connections.
pub fn run(config: AdminConfig) -> Result<(), String> {
    let tls = tls_config(&config)?;
    let logins = Logins::new(
        Verifier::new(&config.admins_file)?,
        config.login_failures,
        config.login_window,
        config.concurrent_logins_per_address,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .thread_name("est-admin")
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        let mut listeners = Vec::new();
        for addr in &config.listen {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            tracing::info!(
                "dashboard and admin API on https://{}",
                l.local_addr().map_err(|e| e.to_string())?
            );
            listeners.push(l);
        }
        let state = Arc::new(State::new(config, logins));
        let slots = Arc::new(Semaphore::new(state.config.max_connections));
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let networks = Arc::new(state.config.allowed_networks.clone());
        for listener in listeners {
            let (state, acceptor) = (Arc::clone(&state), acceptor.clone());
            tokio::spawn(hsm_est_web::accept::accept_loop(
                listener,
                Arc::clone(&networks),
                Arc::clone(&slots),
                state.config.max_connections,
                state.connections.clone(),
                move |tcp, peer, held| {
                    let (state, acceptor) = (Arc::clone(&state), acceptor.clone());
                    async move {
                        let _held = held;
                        serve(state, acceptor, tcp, peer).await
                    }
                },
            ));
        }
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        println!("ready");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received, stopping"),
            _ = int.recv() => tracing::info!("SIGINT received, stopping"),
        }
        Ok(())
    })
}

/// One connection: the handshake deadline, the header deadline, and a maximum age after
/// which it is shut down gracefully (the admin surface has few clients; the connection
/// and per-address caps bound the rest).
async fn serve(
    state: Arc<State>,
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
    peer: std::net::SocketAddr,
) {
    let tls = match tokio::time::timeout(state.config.handshake_timeout, acceptor.accept(tcp)).await
    {
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
    let conn = Conn { peer };
    let header_timeout = state.config.header_timeout;
    let max_age = state.config.max_connection_age;
    let service = service_fn(move |req| {
        let state = Arc::clone(&state);
        async move { Ok::<_, std::convert::Infallible>(http::handle(state, conn, req).await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .max_concurrent_streams(H2_MAX_STREAMS);
    let connection = builder.serve_connection(TokioIo::new(tls), service);
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
                connection.as_mut().graceful_shutdown();
                shutting_down = Some(Instant::now());
            }
            _ = tokio::time::sleep(Duration::from_secs(1)), if shutting_down.is_some() => {
                if shutting_down.is_some_and(|t| t.elapsed() >= SHUTDOWN_GRACE) {
                    return;
                }
            }
        }
    }
}
