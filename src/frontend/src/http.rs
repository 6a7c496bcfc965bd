//! The EST routes (RFC 7030 §3.2.2) and the IQE gateway's bootstrap, over hyper. Every
//! answer has a Content-Length (never a chunked response); errors are short text/plain
//! sentences without internal detail; the cause goes to the log with the request id.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ALLOW, CONTENT_TYPE, HOST, RETRY_AFTER, TRANSFER_ENCODING, WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode, Version};
use tracing::Instrument;

use hsm_est_common::util::log_safe;
use hsm_est_proto::{
    ErrorCode, IssueRequest, Operation, Request as SignerRequest, Response as SignerResponse,
};

use super::auth::{authenticate, Identity};
use super::config::{FrontendConfig, Route};
use super::est::{self, ResponseFormat, CT_CERTS_ONLY, CT_CSRATTRS, CT_PKCS7};
use super::limits::{PerAddress, RateLimiter};
use super::signer_client::SignerPool;
use hsm_est_web::body::{read_body, BodyError};
use hsm_est_web::login::Logins;

pub const EST_PREFIX: &str = "/.well-known/est/";
/// What a client is told to wait when the signer is unavailable.
pub const RETRY_AFTER_UNAVAILABLE: u64 = 10;
/// What a client is told to wait when a profile's hourly quota is used up.
pub const RETRY_AFTER_QUOTA: u64 = 300;
/// How long the CA chain fetched from the signer is reused.
const CA_CACHE_TTL: Duration = Duration::from_secs(60);

pub type HttpResponse = Response<Full<Bytes>>;

/// What the TLS layer established about a connection.
#[derive(Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The verified client certificate (leaf, DER), if one was presented.
    pub client_cert: Option<Vec<u8>>,
    /// The certificates the client sent after its leaf (intermediates), DER.
    pub client_intermediates: Vec<Vec<u8>>,
    /// RFC 9266 tls-exporter value of this connection (TLS 1.3 only).
    pub tls_exporter: Option<Vec<u8>>,
}

pub struct AppState {
    pub config: FrontendConfig,
    pub signer: SignerPool,
    /// The users file and the bounds on checking it (failures, Argon2 slots).
    pub logins: Logins,
    pub rate: Option<RateLimiter>,
    /// Connections held per source address, over all listeners.
    pub connections: PerAddress,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Who is a registration authority (`ra_trust_anchors` only); `None` when none is.
    pub ra_verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    /// Per profile (the routes' profiles, a fixed set): its CA's name and chain, and when
    /// they were fetched.
    ca_cache: Mutex<HashMap<String, (Instant, CaOfProfile)>>,
    /// Per CA name ("" for the default CA): the CRL fetched from the signer, and when. Only
    /// names the signer knows get an entry, so it holds at most one per CA.
    pub(crate) crl_cache: CrlCache,
    next_request: AtomicU64,
}

impl AppState {
    pub fn new(
        config: FrontendConfig,
        logins: Logins,
        ra_verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    ) -> Self {
        let signer = SignerPool::new(
            config.signer_socket.clone(),
            config.signer_timeout,
            config.signer_connections,
        );
        let rate = config
            .rate_limit
            .as_ref()
            .map(|r| RateLimiter::new(r.requests, r.window));
        AppState {
            logins,
            metrics: Arc::default(),
            connections: PerAddress::new(
                u32::try_from(config.max_connections_per_address).unwrap_or(u32::MAX),
            ),
            config,
            signer,
            rate,
            ra_verifier,
            ca_cache: Mutex::default(),
            crl_cache: Mutex::default(),
            next_request: AtomicU64::new(hsm_est_web::first_request_id()),
        }
    }
}

impl AppState {
    /// A fresh request id (for work that does not start with an EST request).
    pub fn next_request_id(&self) -> u64 {
        self.next_request.fetch_add(1, Ordering::Relaxed)
    }
}

pub(crate) fn text(status: StatusCode, message: &str) -> HttpResponse {
    let mut r = Response::new(Full::new(Bytes::from(format!("{message}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The answer to a body that could not be read.
fn body_error(e: BodyError) -> HttpResponse {
    match e {
        BodyError::TooLarge { close } => {
            let mut r = text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "The request body is too large.",
            );
            if close {
                r.headers_mut()
                    .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
            }
            r
        }
        BodyError::Timeout => text(
            StatusCode::REQUEST_TIMEOUT,
            "The request body did not arrive in time.",
        ),
        BodyError::Broken => text(
            StatusCode::BAD_REQUEST,
            "The request body could not be read.",
        ),
    }
}

pub(crate) fn with_retry_after(mut r: HttpResponse, seconds: u64) -> HttpResponse {
    if let Ok(v) = HeaderValue::from_str(&seconds.to_string()) {
        r.headers_mut().insert(RETRY_AFTER, v);
    }
    r
}

pub(crate) fn unauthorized(realm: &str, message: &str) -> HttpResponse {
    let mut r = text(StatusCode::UNAUTHORIZED, message);
    if let Ok(v) = HeaderValue::from_str(&format!("Basic realm=\"{realm}\", charset=\"UTF-8\"")) {
        r.headers_mut().insert(WWW_AUTHENTICATE, v);
    }
    r
}

pub(crate) fn unavailable() -> HttpResponse {
    with_retry_after(
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "The certificate authority is temporarily unavailable. Try again later.",
        ),
        RETRY_AFTER_UNAVAILABLE,
    )
}

fn body_response(content_type: &str, format: ResponseFormat, der_bytes: &[u8]) -> HttpResponse {
    let (body, cte) = format.encode(der_bytes);
    let mut r = Response::new(Full::new(Bytes::from(body)));
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    if cte {
        r.headers_mut().insert(
            "content-transfer-encoding",
            HeaderValue::from_static("base64"),
        );
    }
    r
}

/// The EST operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EstOp {
    CaCerts,
    CsrAttrs,
    Bootstrap,
    SimpleEnroll,
    SimpleReenroll,
    ServerKeygen,
    FullCmc,
}

impl EstOp {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "cacerts" => EstOp::CaCerts,
            "csrattrs" => EstOp::CsrAttrs,
            "bootstrap" => EstOp::Bootstrap,
            "simpleenroll" => EstOp::SimpleEnroll,
            "simplereenroll" => EstOp::SimpleReenroll,
            "serverkeygen" => EstOp::ServerKeygen,
            "fullcmc" => EstOp::FullCmc,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            EstOp::CaCerts => "cacerts",
            EstOp::CsrAttrs => "csrattrs",
            EstOp::Bootstrap => "bootstrap",
            EstOp::SimpleEnroll => "simpleenroll",
            EstOp::SimpleReenroll => "simplereenroll",
            EstOp::ServerKeygen => "serverkeygen",
            EstOp::FullCmc => "fullcmc",
        }
    }

    fn method(self) -> Method {
        match self {
            EstOp::CaCerts | EstOp::CsrAttrs => Method::GET,
            _ => Method::POST,
        }
    }
}

/// Maps the signer's stable error codes to HTTP.
fn signer_error(e: &hsm_est_proto::WireError, realm: &str) -> HttpResponse {
    let msg = format!("{}.", e.message.trim_end_matches('.'));
    match e.code {
        ErrorCode::BadRequest
        | ErrorCode::CsrMalformed
        | ErrorCode::KeyRejected
        | ErrorCode::SignatureAlgorithmRejected
        | ErrorCode::SubjectRejected
        | ErrorCode::SanRejected => text(StatusCode::BAD_REQUEST, &msg),
        // RFC 7030 / libest: a proof-of-possession failure is an authentication failure.
        ErrorCode::ProofOfPossession => unauthorized(realm, &msg),
        ErrorCode::UnknownProfile | ErrorCode::DeviceNotFound | ErrorCode::CertificateNotFound => {
            text(StatusCode::NOT_FOUND, &msg)
        }
        ErrorCode::NotAllowed | ErrorCode::Revoked | ErrorCode::ReenrollRefused => {
            text(StatusCode::FORBIDDEN, &msg)
        }
        // The IQE guide's wording.
        ErrorCode::DeviceDuplicate => text(
            StatusCode::CONFLICT,
            "Device already enrolled. To let it bootstrap again, an operator runs \
             `estctl device delete NAME` on the appliance.",
        ),
        ErrorCode::QuotaExceeded => with_retry_after(
            text(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many certificates of this kind this hour. Try again later.",
            ),
            RETRY_AFTER_QUOTA,
        ),
        ErrorCode::Unavailable => unavailable(),
    }
}

pub async fn handle(state: Arc<AppState>, conn: ConnInfo, req: Request<Incoming>) -> HttpResponse {
    let id = state.next_request.fetch_add(1, Ordering::Relaxed);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let span = hsm_est_common::logging::request_span(id);
    let response = route(&state, &conn, req, id).instrument(span.clone()).await;
    let _in_span = span.entered();
    tracing::info!(
        "http peer={} {} {} -> {}",
        conn.peer,
        method,
        log_safe(&path),
        response.status().as_u16()
    );
    response
}

/// Checks made before routing: the per-address rate, `Host` on HTTP/1.1 and the transfer
/// coding. `Some` is the refusal.
fn precheck(state: &AppState, conn: &ConnInfo, req: &Request<Incoming>) -> Option<HttpResponse> {
    if let Some(rate) = &state.rate {
        if let Err(wait) = rate.check(conn.peer.ip()) {
            state.metrics.limited("requests");
            return Some(with_retry_after(
                text(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many requests. Slow down.",
                ),
                wait,
            ));
        }
    }
    // RFC 9112 §3.2: a request without Host is answered 400 (hyper lets it through).
    if req.version() == Version::HTTP_11 && !req.headers().contains_key(HOST) {
        return Some(text(
            StatusCode::BAD_REQUEST,
            "The Host header is required.",
        ));
    }
    // Only chunked is understood (hyper accepts e.g. "gzip, chunked" and leaves the rest).
    for te in req.headers().get_all(TRANSFER_ENCODING) {
        let ok = te
            .to_str()
            .map(|v| v.trim().eq_ignore_ascii_case("chunked"))
            .unwrap_or(false);
        if !ok {
            return Some(text(
                StatusCode::NOT_IMPLEMENTED,
                "Only the chunked transfer coding is supported.",
            ));
        }
    }
    None
}

/// `/`: what this server is and where the dashboard is. No admin function, no device data.
fn index(state: &AppState) -> HttpResponse {
    match &state.config.admin_url {
        Some(url) => text(
            StatusCode::OK,
            &format!(
                "hsm-est: an EST server (RFC 7030) at /.well-known/est/. The device dashboard \
                 is at {url}"
            ),
        ),
        None => text(
            StatusCode::OK,
            "hsm-est: an EST server (RFC 7030) at /.well-known/est/. There is no dashboard \
             on this port.",
        ),
    }
}

/// `/readyz`: ready when the signer answers a ping within the deadline; the signer answers
/// a ping only while its token signs and its ledger answers.
async fn ready(state: &AppState, id: u64) -> HttpResponse {
    match state.signer.call(id, &SignerRequest::Ping).await {
        Ok(SignerResponse::Pong { .. }) => text(StatusCode::OK, "ready"),
        Ok(SignerResponse::Error(e)) if e.reason == hsm_est_proto::REASON_TOKEN_UNAVAILABLE => {
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: the signer's token cannot sign",
            )
        }
        Ok(SignerResponse::Error(e)) if e.reason == hsm_est_proto::REASON_LEDGER_UNAVAILABLE => {
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: the signer cannot reach its ledger",
            )
        }
        Ok(_) | Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the signer does not answer",
        ),
    }
}

async fn route(state: &AppState, conn: &ConnInfo, req: Request<Incoming>, id: u64) -> HttpResponse {
    if let Some(refused) = precheck(state, conn, &req) {
        return refused;
    }
    let path = req.uri().path().to_string();
    if req.method() == Method::GET {
        match path.as_str() {
            "/" => return index(state),
            "/healthz" => return text(StatusCode::OK, "ok"),
            "/readyz" => return ready(state, id).await,
            _ => {}
        }
    }
    let Some(rest) = path.strip_prefix(EST_PREFIX) else {
        return text(StatusCode::NOT_FOUND, "Not found.");
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let (label, op_name) = match segments.as_slice() {
        [op] => (None, *op),
        [label, op] => (Some(*label), *op),
        _ => return text(StatusCode::NOT_FOUND, "Not found."),
    };
    let route_cfg = match label {
        None => &state.config.default_route,
        Some(l) => match state.config.labels.get(l) {
            Some(r) => r,
            None => return text(StatusCode::NOT_FOUND, "Unknown label."),
        },
    };
    let Some(op) = EstOp::parse(op_name) else {
        return text(StatusCode::NOT_FOUND, "Not found.");
    };
    if req.method() != op.method() {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed.");
        r.headers_mut().insert(
            ALLOW,
            HeaderValue::from_static(if op.method() == Method::GET {
                "GET"
            } else {
                "POST"
            }),
        );
        return r;
    }
    if op.method() == Method::GET {
        return match op {
            EstOp::CsrAttrs => csr_attrs(state, route_cfg, id).await,
            _ => ca_certs(state, route_cfg, id).await,
        };
    }
    // Every POST body is read (bounded in size and time) before anything is answered, so
    // that no answer races a body still being sent: HTTP/2 clients such as curl report a
    // stream error instead of an early 401 or 501.
    let (parts, body) = match read_body(req, est::MAX_BODY, state.config.body_timeout).await {
        Ok(pb) => pb,
        Err(e) => return body_error(e),
    };
    match op {
        EstOp::CaCerts | EstOp::CsrAttrs => text(StatusCode::NOT_FOUND, "Not found."),
        EstOp::ServerKeygen => text(
            StatusCode::NOT_IMPLEMENTED,
            "Server-side key generation is not offered: this CA never generates or sees \
             device private keys.",
        ),
        EstOp::FullCmc => text(StatusCode::NOT_IMPLEMENTED, "Full CMC is not supported."),
        EstOp::Bootstrap | EstOp::SimpleEnroll | EstOp::SimpleReenroll => {
            let label = label.unwrap_or("default");
            let started = Instant::now();
            let r = enroll(state, conn, route_cfg, label, op, &parts, &body, id).await;
            state.metrics.enrolment(label, op.name(), r.status());
            state.metrics.latency(op.name(), started.elapsed());
            r
        }
    }
}

/// The CA a profile issues under: its name and its chain (the CA first).
#[derive(Clone)]
pub(crate) struct CaOfProfile {
    pub name: String,
    pub chain: Vec<Vec<u8>>,
}

pub(crate) type CrlCache = Mutex<HashMap<String, (Instant, Option<Arc<crate::publication::Crl>>)>>;

/// The CA of `profile`, from the cache when fresh.
pub(crate) async fn ca_chain(state: &AppState, profile: &str, id: u64) -> Option<CaOfProfile> {
    if let Ok(cache) = state.ca_cache.lock() {
        if let Some((at, ca)) = cache.get(profile) {
            if at.elapsed() < CA_CACHE_TTL {
                return Some(ca.clone());
            }
        }
    }
    let request = SignerRequest::CaChain {
        profile: profile.to_string(),
    };
    match state.signer.call(id, &request).await {
        Ok(SignerResponse::CaChain { ca, certs }) => {
            let ca = CaOfProfile {
                name: ca,
                chain: certs,
            };
            if let Ok(mut cache) = state.ca_cache.lock() {
                cache.insert(profile.to_string(), (Instant::now(), ca.clone()));
            }
            Some(ca)
        }
        Ok(other) => {
            tracing::error!("unexpected signer answer {:?}", other.msg_type());
            None
        }
        Err(e) => {
            tracing::warn!("{e}");
            None
        }
    }
}

async fn ca_certs(state: &AppState, route: &Route, id: u64) -> HttpResponse {
    let Some(ca) = ca_chain(state, &route.enroll_profile, id).await else {
        return unavailable();
    };
    match est::certs_only(&ca.chain) {
        Ok(cms) => body_response(CT_PKCS7, route.response_format, &cms),
        Err(e) => {
            tracing::error!("cannot build the cacerts CMS: {e}");
            unavailable()
        }
    }
}

async fn csr_attrs(state: &AppState, route: &Route, id: u64) -> HttpResponse {
    let req = SignerRequest::CsrAttrs {
        profile: route.enroll_profile.clone(),
    };
    match state.signer.call(id, &req).await {
        Ok(SignerResponse::CsrAttrs { der }) if der.is_empty() => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
        Ok(SignerResponse::CsrAttrs { der }) => {
            body_response(CT_CSRATTRS, route.response_format, &der)
        }
        Ok(SignerResponse::Error(e)) => signer_error(&e, &state.config.realm),
        Ok(_) => unavailable(),
        Err(e) => {
            tracing::warn!("{e}");
            unavailable()
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn enroll(
    state: &AppState,
    conn: &ConnInfo,
    route: &Route,
    label: &str,
    op: EstOp,
    parts: &hyper::http::request::Parts,
    body: &Bytes,
    id: u64,
) -> HttpResponse {
    let identity = match authenticate(state, conn, route, op, parts, id).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    if let Identity::User(u) = &identity {
        let label_ok = u.labels.is_empty() || u.labels.iter().any(|l| l == label);
        let op_ok = u.operations.is_empty() || u.operations.iter().any(|o| o == op.name());
        if !label_ok || !op_ok {
            return text(
                StatusCode::FORBIDDEN,
                "This user may not perform this operation here.",
            );
        }
    }
    let csr = match est::decode_csr_body(body) {
        Ok(c) => c,
        Err(e) => return text(StatusCode::BAD_REQUEST, e.message()),
    };
    let (operation, profile) = match op {
        EstOp::Bootstrap => (Operation::Bootstrap, &route.bootstrap_profile),
        EstOp::SimpleEnroll => (Operation::Enroll, &route.enroll_profile),
        _ => (Operation::Reenroll, &route.reenroll_profile),
    };
    let (client_cert_der, client_chain) = match &identity {
        Identity::Device { der } => (der.clone(), Vec::new()),
        Identity::RegistrationAuthority { der, chain } => (der.clone(), chain.clone()),
        Identity::User(_) => (Vec::new(), Vec::new()),
    };
    let issue = SignerRequest::Issue(IssueRequest {
        operation,
        profile: profile.clone(),
        requester: identity.requester(),
        client_ip: super::limits::canonical(conn.peer.ip()).to_string(),
        csr_der: csr,
        client_cert_der,
        client_chain,
        tls_exporter: conn.tls_exporter.clone().unwrap_or_default(),
        registration_authority: matches!(identity, Identity::RegistrationAuthority { .. }),
    });
    match state.signer.call(id, &issue).await {
        Ok(SignerResponse::Issued { cert_der, serial }) => match est::certs_only(&[cert_der]) {
            Ok(cms) => {
                tracing::info!(
                    "{} serial={} for {}",
                    op.name(),
                    hex::encode(&serial),
                    log_safe(&identity.requester())
                );
                body_response(CT_CERTS_ONLY, route.response_format, &cms)
            }
            Err(e) => {
                // The certificate is on record in the signer; the client may ask again.
                tracing::error!("cannot wrap serial {} in CMS: {e}", hex::encode(&serial));
                unavailable()
            }
        },
        Ok(SignerResponse::Error(e)) => {
            tracing::info!(
                "{} refused: {} ({})",
                op.name(),
                e.reason,
                log_safe(&e.message)
            );
            signer_error(&e, &state.config.realm)
        }
        Ok(_) => unavailable(),
        Err(e) => {
            tracing::warn!("{e}");
            unavailable()
        }
    }
}
