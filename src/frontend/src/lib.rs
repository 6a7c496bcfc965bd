//! `est-frontend`: the network-facing process. TLS (rustls), HTTP/1.1 and HTTP/2 (hyper on
//! tokio), the EST routes and the IQE bootstrap, authentication, limits. It never touches
//! the CA key, the token, its PIN, the ledger or the audit log: it reaches the CA only
//! through the signer socket (`tests/architecture.rs` keeps it that way).
#![forbid(unsafe_code)]

pub mod auth;
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
                    conn::serve(Arc::clone(&state), acceptor.clone(), tcp, peer, held)
                },
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

/// CSRs built in code for unit tests; the same file serves the end-to-end tests.
#[cfg(test)]
#[path = "../../../tests/common/csrgen.rs"]
#[allow(dead_code)]
mod csrgen;
