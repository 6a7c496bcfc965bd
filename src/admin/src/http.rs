//! Routing, the security headers every answer carries, who the caller is (a session cookie
//! for the dashboard; HTTP Basic or an API token for the API and /metrics), and the calls
//! to the signer with the admin's name as the actor the signer audits.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base64ct::{Base64, Encoding};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, LOCATION};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use tracing::Instrument;

use hsm_est_common::util::log_safe;
use hsm_est_proto::{ErrorCode, Request as SignerRequest, Response as SignerResponse, WireError};
use hsm_est_web::body::{read_body, BodyError};
use hsm_est_web::limits::PerAddress;
use hsm_est_web::login::{LoginRefusal, Logins};
use hsm_est_web::signer_client::SignerPool;
use hsm_est_web::users::UserEntry;

use crate::config::AdminConfig;
use crate::metrics::Metrics;
use crate::session::{self, Sessions};

pub type HttpResponse = Response<Full<Bytes>>;

/// Form and API bodies: small, and read in full before anything is answered.
pub const MAX_BODY: usize = 8 * 1024;
const BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// No script at all, nothing from elsewhere, forms only to here, never in a frame.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
    form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub struct State {
    pub config: AdminConfig,
    pub signer: SignerPool,
    pub logins: Logins,
    pub sessions: Sessions,
    pub metrics: Metrics,
    pub connections: PerAddress,
    next_request: AtomicU64,
}

impl State {
    pub fn new(config: AdminConfig, logins: Logins) -> Self {
        State {
            signer: SignerPool::new(
                config.signer_socket.clone(),
                config.signer_timeout,
                config.signer_connections,
            ),
            sessions: Sessions::new(
                config.session_idle,
                config.session_max_age,
                config.max_sessions,
            ),
            connections: PerAddress::new(config.max_connections_per_address),
            metrics: Metrics::default(),
            logins,
            config,
            next_request: AtomicU64::new(hsm_est_web::first_request_id()),
        }
    }

    /// One call to the signer on the admin socket. A refusal is the signer's, with its
    /// stable reason; anything else (down, slow, broken) is `Unavailable`.
    pub async fn call(&self, id: u64, request: &SignerRequest) -> Result<SignerResponse, Failure> {
        match self.signer.call(id, request).await {
            Ok(SignerResponse::Error(e)) => Err(Failure::Signer(e)),
            Ok(r) => Ok(r),
            Err(e) => {
                tracing::warn!("{e}");
                Err(Failure::Unavailable)
            }
        }
    }
}

/// What went wrong, for both surfaces: the dashboard shows the sentence, the API answers
/// JSON with the stable code.
#[derive(Debug)]
pub enum Failure {
    BadRequest(&'static str, String),
    NotFound,
    MethodNotAllowed,
    Unauthenticated,
    Forbidden(&'static str, &'static str),
    Locked(u64),
    Busy,
    Body(BodyError),
    Signer(WireError),
    /// The signer answered something this request cannot use.
    Unexpected,
    Unavailable,
}

impl Failure {
    pub fn status(&self) -> StatusCode {
        match self {
            Failure::BadRequest(..) => StatusCode::BAD_REQUEST,
            Failure::NotFound => StatusCode::NOT_FOUND,
            Failure::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Failure::Unauthenticated => StatusCode::UNAUTHORIZED,
            Failure::Forbidden(..) => StatusCode::FORBIDDEN,
            Failure::Locked(_) => StatusCode::TOO_MANY_REQUESTS,
            Failure::Busy | Failure::Unavailable | Failure::Unexpected => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Failure::Body(BodyError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            Failure::Body(BodyError::Timeout) => StatusCode::REQUEST_TIMEOUT,
            Failure::Body(BodyError::Broken) => StatusCode::BAD_REQUEST,
            Failure::Signer(e) => match e.code {
                ErrorCode::DeviceNotFound | ErrorCode::CertificateNotFound => StatusCode::NOT_FOUND,
                ErrorCode::Revoked | ErrorCode::NotAllowed | ErrorCode::DeviceDuplicate => {
                    StatusCode::CONFLICT
                }
                ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_REQUEST,
            },
        }
    }

    /// The stable code (`docs/API.md`).
    pub fn code(&self) -> String {
        match self {
            Failure::BadRequest(code, _) => (*code).into(),
            Failure::NotFound => "not_found".into(),
            Failure::MethodNotAllowed => "request.method".into(),
            Failure::Unauthenticated => "auth.required".into(),
            Failure::Forbidden(code, _) => (*code).into(),
            Failure::Locked(_) => "auth.locked".into(),
            Failure::Busy => "auth.busy".into(),
            Failure::Body(BodyError::TooLarge { .. }) => "request.too_large".into(),
            Failure::Body(BodyError::Timeout) => "request.timeout".into(),
            Failure::Body(BodyError::Broken) => "request.unreadable".into(),
            Failure::Signer(e) => e.reason.clone(),
            Failure::Unexpected | Failure::Unavailable => "signer.unavailable".into(),
        }
    }

    pub fn message(&self) -> String {
        match self {
            Failure::BadRequest(_, m) => m.clone(),
            Failure::NotFound => "Not found.".into(),
            Failure::MethodNotAllowed => "This method is not offered here.".into(),
            Failure::Unauthenticated => "Authentication is required.".into(),
            Failure::Forbidden(_, m) => (*m).into(),
            Failure::Locked(_) => "Too many failed logins. Try again later.".into(),
            Failure::Busy => "Too many logins in progress. Try again shortly.".into(),
            Failure::Body(BodyError::TooLarge { .. }) => "The request body is too large.".into(),
            Failure::Body(BodyError::Timeout) => "The request body did not arrive in time.".into(),
            Failure::Body(BodyError::Broken) => "The request body could not be read.".into(),
            Failure::Signer(e) => e.message.clone(),
            Failure::Unexpected | Failure::Unavailable => {
                "The signer cannot be reached right now. Try again shortly.".into()
            }
        }
    }

    /// Headers the answer needs besides the body.
    pub fn decorate(&self, r: &mut HttpResponse) {
        let h = r.headers_mut();
        match self {
            Failure::Locked(s) => set(h, hyper::header::RETRY_AFTER, &s.to_string()),
            Failure::Busy => set(h, hyper::header::RETRY_AFTER, "1"),
            Failure::Unavailable | Failure::Unexpected => set(h, hyper::header::RETRY_AFTER, "10"),
            Failure::Body(BodyError::TooLarge { close: true }) => {
                set(h, hyper::header::CONNECTION, "close")
            }
            _ => {}
        }
    }
}

pub fn set(h: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

pub fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> HttpResponse {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

pub fn redirect(to: &str) -> HttpResponse {
    let mut r = respond(StatusCode::SEE_OTHER, "text/plain; charset=utf-8", "");
    set(r.headers_mut(), LOCATION, to);
    r
}

/// The headers every answer carries. The referrer policy is `same-origin`, not
/// `no-referrer`: under `no-referrer` browsers send `Origin: null` on form posts, which
/// the cross-site check could not tell from a forged one.
fn secure(mut r: HttpResponse) -> HttpResponse {
    let h = r.headers_mut();
    let fixed: [(&str, &str); 7] = [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "same-origin"),
        ("cache-control", "no-store"),
        ("strict-transport-security", "max-age=31536000"),
        ("cross-origin-opener-policy", "same-origin"),
    ];
    for (k, v) in fixed {
        h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    r
}

/// What the TLS layer established about a connection.
#[derive(Clone, Copy)]
pub struct Conn {
    pub peer: SocketAddr,
}

/// A request as the handlers see it: method, decoded path segments, query, headers, the
/// body (read in full, bounded) and the request id.
pub struct Req {
    pub id: u64,
    pub method: Method,
    pub segments: Vec<String>,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    /// The authority the client addressed: HTTP/2's `:authority`, or HTTP/1.1's Host.
    pub authority: String,
    pub body: Bytes,
    pub conn: Conn,
}

impl Req {
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn form(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(&self.body).into_owned().collect()
    }

    pub fn path_is(&self, parts: &[&str]) -> bool {
        self.segments.len() == parts.len() && self.segments.iter().zip(parts).all(|(a, b)| a == b)
    }
}

fn segments(path: &str) -> Option<Vec<String>> {
    path.trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .ok()
                .map(|c| c.into_owned())
        })
        .collect()
}

pub async fn handle(state: Arc<State>, conn: Conn, req: Request<Incoming>) -> HttpResponse {
    let id = state.next_request.fetch_add(1, Ordering::Relaxed);
    let span = hsm_est_common::logging::request_span(id);
    async move {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let answer = match prepare(req, id, conn).await {
            Ok(r) => route(&state, r).await,
            Err(f) => crate::pages::failure(&f),
        };
        tracing::info!(
            "{method} {} from {} answered {}",
            log_safe(&path.chars().take(200).collect::<String>()),
            conn.peer.ip(),
            answer.status().as_u16()
        );
        secure(answer)
    }
    .instrument(span)
    .await
}

async fn prepare(req: Request<Incoming>, id: u64, conn: Conn) -> Result<Req, Failure> {
    let segments = segments(req.uri().path()).ok_or(Failure::BadRequest(
        "request.path",
        "The path is not valid UTF-8.".into(),
    ))?;
    let query = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let (parts, body) = read_body(req, MAX_BODY, BODY_DEADLINE)
        .await
        .map_err(Failure::Body)?;
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            parts
                .headers
                .get(HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    Ok(Req {
        id,
        authority,
        method: parts.method,
        segments,
        query,
        headers: parts.headers,
        body,
        conn,
    })
}

async fn route(state: &State, req: Req) -> HttpResponse {
    let first = req.segments.first().map(String::as_str);
    match (req.method.clone(), first) {
        (Method::GET, Some("healthz")) if req.segments.len() == 1 => {
            respond(StatusCode::OK, "text/plain; charset=utf-8", "ok\n")
        }
        (Method::GET, Some("readyz")) if req.segments.len() == 1 => readyz(state, &req).await,
        (Method::GET, Some("static")) if req.path_is(&["static", "style.css"]) => respond(
            StatusCode::OK,
            "text/css; charset=utf-8",
            crate::pages::STYLE,
        ),
        (_, Some("api")) => crate::api::handle(state, &req).await,
        (Method::GET, Some("metrics")) if req.segments.len() == 1 => metrics(state, &req).await,
        _ => crate::dashboard::handle(state, &req).await,
    }
}

async fn readyz(state: &State, req: &Req) -> HttpResponse {
    match state.call(req.id, &SignerRequest::Ping).await {
        Ok(SignerResponse::Pong { .. }) => {
            respond(StatusCode::OK, "text/plain; charset=utf-8", "ready\n")
        }
        _ => {
            let mut r = respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain; charset=utf-8",
                "the signer is not reachable\n",
            );
            set(r.headers_mut(), hyper::header::RETRY_AFTER, "10");
            r
        }
    }
}

async fn metrics(state: &State, req: &Req) -> HttpResponse {
    if let Err(f) = api_caller(state, req).await {
        return crate::api::error(&f);
    }
    let stats = match state.call(req.id, &SignerRequest::Stats).await {
        Ok(SignerResponse::Stats(s)) => Some(s),
        _ => None,
    };
    respond(
        StatusCode::OK,
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        state.metrics.encode(stats.as_ref()),
    )
}

/// HTTP Basic against the admins file (with the bounded login work), or `Bearer` with an
/// API token made by `estctl add-admin-token`.
pub async fn api_caller(state: &State, req: &Req) -> Result<UserEntry, Failure> {
    let ip = req.conn.peer.ip();
    let Some(value) = req.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return Err(Failure::Unauthenticated);
    };
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("bearer") {
        state.logins.check_address(ip).map_err(Failure::Locked)?;
        return match state.logins.verifier.verify_token(rest.trim()) {
            Some(u) => Ok(u),
            None => {
                state.logins.record_failure(ip);
                state.metrics.login_failures.inc();
                tracing::warn!("API token refused from {ip}");
                Err(Failure::Unauthenticated)
            }
        };
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(Failure::Unauthenticated);
    }
    let decoded = Base64::decode_vec(rest.trim())
        .ok()
        .and_then(|d| String::from_utf8(d).ok())
        .ok_or(Failure::Unauthenticated)?;
    let (user, password) = decoded.split_once(':').ok_or(Failure::Unauthenticated)?;
    login(state, user, password, req.conn).await
}

/// A password login of either surface, counted and logged.
pub async fn login(
    state: &State,
    user: &str,
    password: &str,
    conn: Conn,
) -> Result<UserEntry, Failure> {
    let ip = conn.peer.ip();
    match state.logins.login(user, password, ip).await {
        Ok(u) => {
            state.metrics.logins.inc();
            Ok(u)
        }
        Err(LoginRefusal::NameTooLong) => Err(Failure::BadRequest(
            "auth.name_too_long",
            "The user name is too long.".into(),
        )),
        Err(LoginRefusal::Locked(s)) => {
            tracing::warn!(
                "admin login refused: too many failures for {} from {ip}",
                log_safe(user)
            );
            Err(Failure::Locked(s))
        }
        Err(LoginRefusal::Busy) => Err(Failure::Busy),
        Err(LoginRefusal::Invalid) => {
            state.metrics.login_failures.inc();
            tracing::warn!("admin login failed for {} from {ip}", log_safe(user));
            Err(Failure::Unauthenticated)
        }
    }
}

/// A state-changing browser request must come from this site: a cross-site `Origin` or
/// `Sec-Fetch-Site` is refused before the CSRF token is even looked at.
pub fn same_origin(req: &Req) -> Result<(), Failure> {
    let refused = Failure::Forbidden("csrf.cross_site", "Cross-site requests are refused.");
    if let Some(site) = req
        .headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
    {
        if !matches!(site, "same-origin" | "none") {
            return Err(refused);
        }
    }
    if let Some(origin) = req.headers.get(hyper::header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if req.authority.is_empty() || origin != format!("https://{}", req.authority) {
            return Err(refused);
        }
    }
    Ok(())
}

/// The session of the request's cookie, if live.
pub fn session_of(state: &State, req: &Req) -> Option<(String, session::Session)> {
    let id = session::cookie(&req.headers, session::COOKIE)?;
    let s = state.sessions.get(id)?;
    Some((id.to_string(), s))
}

/// The actor the signer audits: the admin's name. The signer prefixes the role and uid
/// of the socket's peer itself (`admin:uid=N:NAME`), so the name cannot claim another role.
pub fn actor(admin: &str) -> String {
    admin.to_string()
}
