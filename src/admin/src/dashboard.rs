//! The dashboard's handlers: login and logout, the overview, the device list and device
//! pages, and the device actions behind a confirmation page. Every page needs a live
//! session; every state-changing form must come from this site and carry the session's
//! CSRF token.

use hyper::header::SET_COOKIE;
use hyper::{Method, StatusCode};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use hsm_est_proto::{Request as SignerRequest, Response as SignerResponse};

use crate::api::{expiring_cursor, filter, number, reason};
use crate::http::{
    actor, redirect, same_origin, session_of, set, Failure, HttpResponse, Req, State,
};
use crate::pages::{self, Page};
use crate::session::{self, random_token, same_secret, Session};

/// Devices per page of the list.
pub const PAGE: u32 = 50;

/// What a CN keeps unescaped in a path: RFC 3986's unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The device page of `cn`. A CN of `.` or `..` is escaped whole, so that no client
/// normalises it away.
pub fn path_of(cn: &str) -> String {
    if cn == "." || cn == ".." {
        return format!("/devices/{}", cn.replace('.', "%2E"));
    }
    format!("/devices/{}", utf8_percent_encode(cn, SEGMENT))
}

pub async fn handle(state: &State, req: &Req) -> HttpResponse {
    let segs: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    match (&req.method, &segs[..]) {
        (&Method::GET, ["login"]) => login_page(
            session::cookie(&req.headers, session::LOGIN_COOKIE),
            None,
            StatusCode::OK,
        ),
        // Browsers ask for it on their own; it must not touch the login cookie.
        (&Method::GET, ["favicon.ico"]) => pages::failure(&Failure::NotFound),
        (&Method::POST, ["login"]) => login(state, req).await,
        _ => {
            let session = session_of(state, req).filter(|(sid, s)| {
                // A deleted admin's sessions end at once.
                let exists = state.logins.verifier.contains(&s.admin);
                if !exists {
                    state.sessions.end(sid);
                }
                exists
            });
            let Some((sid, session)) = session else {
                return if req.method == Method::GET {
                    redirect("/login")
                } else {
                    pages::failure(&Failure::Unauthenticated)
                };
            };
            let page = Page {
                admin: &session.admin,
                csrf: &session.csrf,
            };
            match signed_in(state, req, &sid, &session, &page, &segs).await {
                Ok(r) => r,
                Err(f) => pages::failure_in(&page, &f),
            }
        }
    }
}

/// The login form. Its token is the login cookie's value when the browser already holds a
/// well-formed one (another tab, a request the browser made on its own), so that loading
/// the form twice does not invalidate the first copy; otherwise a new one.
fn login_page(existing: Option<&str>, error: Option<&str>, status: StatusCode) -> HttpResponse {
    let reuse = existing.filter(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()));
    let Some(token) = reuse.map(str::to_string).or_else(random_token) else {
        return pages::failure(&Failure::Unavailable);
    };
    let mut r = pages::login(&token, error, status);
    set(
        r.headers_mut(),
        SET_COOKIE,
        &format!(
            "{}={token}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=600",
            session::LOGIN_COOKIE
        ),
    );
    r
}

async fn login(state: &State, req: &Req) -> HttpResponse {
    if let Err(f) = same_origin(req) {
        return pages::failure(&f);
    }
    let form = req.form();
    let field = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let cookie = session::cookie(&req.headers, session::LOGIN_COOKIE).unwrap_or("");
    if cookie.is_empty() || !same_secret(cookie, field("login_token")) {
        return login_page(
            None,
            Some("The login form expired. Please try again."),
            StatusCode::FORBIDDEN,
        );
    }
    match crate::http::login(state, field("user"), field("password"), req.conn).await {
        Ok(admin) => {
            let Some(sid) = state.sessions.create(&admin.name) else {
                return pages::failure(&Failure::Unavailable);
            };
            tracing::info!(
                "admin {} logged in from {}",
                hsm_est_common::util::log_safe(&admin.name),
                req.conn.peer.ip()
            );
            let mut r = redirect("/");
            r.headers_mut().append(
                SET_COOKIE,
                hyper::header::HeaderValue::from_str(&format!(
                    "{}={sid}; Path=/; Secure; HttpOnly; SameSite=Strict",
                    session::COOKIE
                ))
                .unwrap_or_else(|_| hyper::header::HeaderValue::from_static("")),
            );
            r.headers_mut().append(
                SET_COOKIE,
                hyper::header::HeaderValue::from_static(
                    "__Host-hsmest-login=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
                ),
            );
            r
        }
        Err(f) => {
            let mut r = login_page(Some(cookie), Some(&f.message()), f.status());
            f.decorate(&mut r);
            r
        }
    }
}

/// A state-changing form: from this site, with this session's CSRF token.
fn check_form(req: &Req, session: &Session) -> Result<Vec<(String, String)>, Failure> {
    same_origin(req)?;
    let form = req.form();
    let token = form
        .iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    if !same_secret(token, &session.csrf) {
        return Err(Failure::Forbidden(
            "csrf.token",
            "The form's security token is missing or stale. Reload the page and try again.",
        ));
    }
    Ok(form)
}

async fn signed_in(
    state: &State,
    req: &Req,
    sid: &str,
    session: &Session,
    page: &Page<'_>,
    segs: &[&str],
) -> Result<HttpResponse, Failure> {
    match (&req.method, segs) {
        (&Method::GET, []) => overview(state, req, page).await,
        (&Method::GET, ["devices"]) => devices(state, req, page).await,
        (&Method::GET, ["devices", cn]) => device(state, req, page, cn).await,
        (&Method::GET, ["devices", cn, "confirm"]) => {
            let action = match req.query("action") {
                Some(a @ ("revoke" | "delete" | "allow")) => a,
                _ => return Err(Failure::NotFound),
            };
            Ok(pages::confirm(page, cn, action))
        }
        (&Method::POST, ["devices", cn, action @ ("revoke" | "delete" | "allow")]) => {
            let form = check_form(req, session)?;
            device_action(state, req, session, cn, action, &form).await
        }
        (&Method::GET, ["certificates"]) => expiring(state, req, page).await,
        (&Method::POST, ["logout"]) => {
            check_form(req, session)?;
            state.sessions.end(sid);
            tracing::info!(
                "admin {} logged out",
                hsm_est_common::util::log_safe(&session.admin)
            );
            let mut r = redirect("/login");
            set(
                r.headers_mut(),
                SET_COOKIE,
                &format!(
                    "{}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
                    session::COOKIE
                ),
            );
            Ok(r)
        }
        _ => Err(Failure::NotFound),
    }
}

async fn overview(state: &State, req: &Req, page: &Page<'_>) -> Result<HttpResponse, Failure> {
    let pong = state.call(req.id, &SignerRequest::Ping).await;
    let stats = state.call(req.id, &SignerRequest::Stats).await;
    let health = match &pong {
        Ok(SignerResponse::Pong {
            version,
            ca_subject,
            ..
        }) => Some((version.clone(), ca_subject.clone())),
        _ => None,
    };
    let stats = match stats {
        Ok(SignerResponse::Stats(s)) => Some(s),
        _ => None,
    };
    Ok(pages::overview(
        page,
        health,
        stats.as_ref(),
        state.metrics.login_failures.get(),
    ))
}

async fn devices(state: &State, req: &Req, page: &Page<'_>) -> Result<HttpResponse, Failure> {
    let filter = filter(req)?;
    let after = req.query("after").unwrap_or("").to_string();
    let r = SignerRequest::DeviceList {
        after: after.clone(),
        limit: PAGE,
        filter: filter.clone(),
    };
    match state.call(req.id, &r).await? {
        SignerResponse::Devices { devices, more } => {
            Ok(pages::devices(page, &filter, &after, &devices, more))
        }
        _ => Err(Failure::Unexpected),
    }
}

async fn device(
    state: &State,
    req: &Req,
    page: &Page<'_>,
    cn: &str,
) -> Result<HttpResponse, Failure> {
    let device = match state
        .call(req.id, &SignerRequest::DeviceGet { cn: cn.into() })
        .await?
    {
        SignerResponse::Device(d) => d,
        _ => return Err(Failure::Unexpected),
    };
    let after_serial = hex::decode(req.query("after_serial").unwrap_or(""))
        .map_err(|_| Failure::BadRequest("request.query", "after_serial: hex".into()))?;
    let r = SignerRequest::DeviceCertificates {
        cn: cn.into(),
        after_serial,
        limit: PAGE,
    };
    let (certificates, more) = match state.call(req.id, &r).await? {
        SignerResponse::Certificates { certificates, more } => (certificates, more),
        _ => return Err(Failure::Unexpected),
    };
    let notice = match (req.query("done"), number(req, "count", u32::MAX)?) {
        (Some("revoke"), Some(n)) => Some(format!("Revoked: {n} certificate(s).")),
        (Some("delete"), Some(n)) => Some(format!("Deleted; {n} certificate(s) revoked.")),
        (Some("allow"), _) => Some("Allowed: the device may bootstrap again.".to_string()),
        _ => None,
    };
    Ok(pages::device(
        page,
        &device,
        &certificates,
        more,
        notice.as_deref(),
    ))
}

async fn device_action(
    state: &State,
    req: &Req,
    session: &Session,
    cn: &str,
    action: &str,
    form: &[(String, String)],
) -> Result<HttpResponse, Failure> {
    let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let admin = actor(&session.admin);
    let r = match action {
        "revoke" => SignerRequest::DeviceRevoke {
            cn: cn.into(),
            reason: reason(field("reason"))?,
            actor: admin,
        },
        "delete" => SignerRequest::DeviceDelete {
            cn: cn.into(),
            keep_certificates: field("keep_certificates") == Some("on"),
            actor: admin,
        },
        _ => SignerRequest::DeviceAllow {
            cn: cn.into(),
            actor: admin,
        },
    };
    let answer = state.call(req.id, &r).await;
    let result = match &answer {
        Ok(_) => "ok".to_string(),
        Err(Failure::Signer(e)) => e.reason.clone(),
        Err(_) => "unavailable".into(),
    };
    let metric_action = match action {
        "revoke" => "revoke",
        "delete" => "delete",
        _ => "allow",
    };
    state.metrics.action(metric_action, &result);
    tracing::info!(
        "admin {} asked to {action} device {}: {result}",
        hsm_est_common::util::log_safe(&session.admin),
        hsm_est_common::util::log_safe(cn)
    );
    let count = match answer? {
        SignerResponse::Revoked { count } => count,
        SignerResponse::Done => 0,
        _ => return Err(Failure::Unexpected),
    };
    Ok(redirect(&format!(
        "{}?done={action}&count={count}",
        path_of(cn)
    )))
}

async fn expiring(state: &State, req: &Req, page: &Page<'_>) -> Result<HttpResponse, Failure> {
    let days = number(req, "expiring_within_days", 36_500)?.unwrap_or(30);
    let (after_not_after, after_serial) = expiring_cursor(req)?;
    let r = SignerRequest::ExpiringCertificates {
        within_days: days,
        after_not_after,
        after_serial,
        limit: PAGE,
    };
    match state.call(req.id, &r).await? {
        SignerResponse::Certificates { certificates, more } => {
            Ok(pages::expiring(page, days, &certificates, more))
        }
        _ => Err(Failure::Unexpected),
    }
}
