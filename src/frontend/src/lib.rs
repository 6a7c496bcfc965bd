//! `est-frontend`: the network-facing process. TLS (rustls), HTTP/1.1 and HTTP/2 (hyper on
//! tokio), the EST routes and the IQE bootstrap, authentication, limits. It never touches
//! the CA key, the token, its PIN, the ledger or the audit log: it reaches the CA only
//! through the signer socket (`tests/architecture.rs` keeps it that way).
#![forbid(unsafe_code)]

mod auth;
pub mod config;
mod conn;
pub mod est;
pub mod http;
pub mod metrics;
pub mod plain;
pub mod publication;
pub mod tls;
pub use hsm_est_web::{body, limits, signer_client, users};

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use config::FrontendConfig;
use http::AppState;

/// Starts the listeners and serves until SIGTERM or SIGINT. Prints `ready` once they
/// accept connections.
pub fn run(config: FrontendConfig) -> Result<(), String> {
    let tls_config = tls::server_config(&config)?;
    let users = hsm_est_web::login::Logins::new(
        users::Verifier::new(&config.users_file)?,
        config.login_failures,
        config.login_window,
        config.concurrent_logins_per_address,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("est-frontend")
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        let mut listeners = Vec::new();
        for addr in &config.listen {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            tracing::info!(
                "listening on https://{}",
                l.local_addr().map_err(|e| e.to_string())?
            );
            listeners.push(l);
        }
        let ra_verifier = tls::ra_verifier(&config)?;
        let state = Arc::new(AppState::new(config, users, ra_verifier));
        if let Some(addr) = state.config.metrics_listen {
            metrics::serve(addr, Arc::clone(&state.metrics)).await?;
        }
        if let Some(addr) = state.config.publication_listen {
            publication::serve(addr, Arc::clone(&state)).await?;
        }
        let slots = Arc::new(Semaphore::new(state.config.max_connections));
        let acceptor = tokio_rustls::TlsAcceptor::from(tls_config);
        for listener in listeners {
            tokio::spawn(accept_loop(
                listener,
                Arc::clone(&state),
                Arc::clone(&slots),
                acceptor.clone(),
            ));
        }
        // Listen for the stop signals before saying ready: a SIGTERM that arrives while a
        // listener is being set up is lost (tokio only reports signals that arrive after
        // the listener exists), and a supervisor may send one right after `ready`.
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

async fn accept_loop(
    listener: TcpListener,
    state: Arc<AppState>,
    slots: Arc<Semaphore>,
    acceptor: tokio_rustls::TlsAcceptor,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let nets = &state.config.allowed_networks;
        if !nets.is_empty() && !nets.iter().any(|n| n.contains(peer.ip())) {
            tracing::warn!("connection from {peer} closed: not in server.allowed_networks");
            continue;
        }
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(
                "connection from {peer} closed: {} connections open",
                state.config.max_connections
            );
            continue;
        };
        let Some(address_slot) = state.connections.try_enter(peer.ip()) else {
            tracing::warn!(
                "connection from {peer} closed: that address holds {} connections",
                state.config.max_connections_per_address
            );
            continue;
        };
        tokio::spawn(conn::serve(
            Arc::clone(&state),
            acceptor.clone(),
            tcp,
            peer,
            (permit, address_slot),
        ));
    }
}

/// CSRs built in code for unit tests; the same file serves the end-to-end tests.
#[cfg(test)]
#[path = "../../../tests/common/csrgen.rs"]
#[allow(dead_code)]
mod csrgen;
