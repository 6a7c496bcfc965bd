//! rustls for the frontend: TLS 1.2 and 1.3 with AEAD suites only (rustls offers nothing
//! else), ALPN for HTTP/2 and HTTP/1.1, and optional client certificates verified against
//! the CA chain (every certificate in it is a trust anchor, so that clients sending only
//! their leaf, like libest, are verified) plus the configured RA trust anchors. Passing
//! the handshake grants nothing by itself: `auth` decides what a certificate is.

use std::sync::Arc;

use hsm_est_web::tls::{certs, private_key, roots};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;

use super::config::FrontendConfig;

/// The verifier that decides who is a registration authority: a chain to one of the
/// configured `ra_trust_anchors` and to nothing else. The handshake accepts every anchor
/// of `client_ca_file` too (devices, and the hospital's root when the CA is an
/// intermediate); a certificate under those carries no RA authority. `None` when no RA
/// anchor is configured.
pub fn ra_verifier(
    config: &FrontendConfig,
) -> Result<Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>, String> {
    if config.ra_trust_anchors.is_empty() {
        return Ok(None);
    }
    let anchors: Vec<&std::path::Path> = config
        .ra_trust_anchors
        .iter()
        .map(|p| p.as_path())
        .collect();
    let roots = roots(&anchors)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map(Some)
        .map_err(|e| format!("RA verifier: {e}"))
}

pub fn server_config(config: &FrontendConfig) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs(&config.cert_file)?;
    let key = private_key(&config.key_file)?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match &config.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let mut files = vec![ca_file.as_path()];
            files.extend(config.ra_trust_anchors.iter().map(|p| p.as_path()));
            let roots = roots(&files)?;
            // Clients without a certificate get through the handshake and must then use
            // HTTP Basic; the handler enforces that.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("client certificate verifier: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut server = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("{}: {e}", config.cert_file.display()))?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(server))
}
