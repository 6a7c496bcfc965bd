//! The JSON admin API (`docs/API.md`): HTTP Basic with an admin's password or `Bearer` with
//! an API token, never a cookie (so no cross-site request can ride a browser session).
//! Errors are `{"error": {"code": "...", "message": "..."}}` with a stable code.

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use hsm_est_common::util::rfc3339_millis;
use hsm_est_proto::{
    CertificateInfo, DeviceFilter, DeviceInfo, DeviceStatus, Request as SignerRequest,
    Response as SignerResponse,
};

use crate::http::{actor, api_caller, respond, Failure, HttpResponse, Req, State};

/// Devices per page unless `limit` says otherwise (at most the signer's 500).
pub const DEFAULT_PAGE: u32 = 100;

pub fn error(f: &Failure) -> HttpResponse {
    let body = json!({"error": {"code": f.code(), "message": f.message()}});
    let mut r = respond(f.status(), "application/json", body.to_string());
    f.decorate(&mut r);
    if matches!(f, Failure::Unauthenticated) {
        crate::http::set(
            r.headers_mut(),
            hyper::header::WWW_AUTHENTICATE,
            "Basic realm=\"hsm-est admin\", Bearer realm=\"hsm-est admin\"",
        );
    }
    r
}

fn ok(status: StatusCode, v: Value) -> HttpResponse {
    respond(status, "application/json", v.to_string())
}

pub async fn handle(state: &State, req: &Req) -> HttpResponse {
    match answer(state, req).await {
        Ok(r) => r,
        Err(f) => error(&f),
    }
}

fn rfc3339_seconds(s: i64) -> String {
    rfc3339_millis(s.saturating_mul(1000))
}

pub fn device_json(d: &DeviceInfo) -> Value {
    let ms = |v: i64| (v > 0).then(|| rfc3339_millis(v));
    json!({
        "cn": d.cn,
        "status": d.status.as_str(),
        "current_serial": hex::encode(&d.current_serial),
        "first_enrolled": ms(d.first_enrolled_ms),
        "last_enrolled": ms(d.last_enrolled_ms),
        "last_ip": d.last_ip,
        "not_after": (d.current_not_after > 0).then(|| rfc3339_seconds(d.current_not_after)),
        "revoked": d.status == DeviceStatus::Revoked,
    })
}

pub fn certificate_json(c: &CertificateInfo) -> Value {
    json!({
        "serial": hex::encode(&c.serial),
        "cn": c.common_name,
        "not_before": rfc3339_seconds(c.not_before),
        "not_after": rfc3339_seconds(c.not_after),
        "issued_at": rfc3339_millis(c.issued_at_ms),
        "profile": c.profile,
        "operation": c.operation,
        "requester": c.requester,
        "revoked_at": c.revoked_at_ms.map(rfc3339_millis),
        "revocation_reason": c.revocation_reason,
        "superseded_by": c.superseded_by.as_ref().map(hex::encode),
    })
}

fn bad(code: &'static str, message: &str) -> Failure {
    Failure::BadRequest(code, message.into())
}

/// A number from the query, with its key in the error.
pub fn number(req: &Req, key: &'static str, max: u32) -> Result<Option<u32>, Failure> {
    match req.query(key) {
        None | Some("") => Ok(None),
        Some(v) => match v.parse::<u32>() {
            Ok(n) if n <= max => Ok(Some(n)),
            _ => Err(Failure::BadRequest(
                "request.query",
                format!("{key}: give a whole number from 0 to {max}"),
            )),
        },
    }
}

/// The device filter of a listing's query: `status`, `prefix`, `expiring_within_days`.
pub fn filter(req: &Req) -> Result<DeviceFilter, Failure> {
    let status = match req.query("status") {
        None | Some("") | Some("all") => None,
        Some(s) => Some(DeviceStatus::parse(s).ok_or(bad(
            "request.query",
            "status: give bootstrap_only, enrolled, revoked or deleted",
        ))?),
    };
    let prefix = req
        .query("prefix")
        .or(req.query("q"))
        .unwrap_or("")
        .to_string();
    if prefix.len() > hsm_est_proto::messages::MAX_NAME_LEN {
        return Err(bad("request.query", "prefix: too long"));
    }
    Ok(DeviceFilter {
        status,
        cn_prefix: prefix,
        expiring_within_days: number(req, "expiring_within_days", 36_500)?.unwrap_or(0),
    })
}

/// A revocation reason by RFC 5280 name or number.
pub fn reason(value: Option<&str>) -> Result<u8, Failure> {
    let names = [
        ("unspecified", 0u8),
        ("keyCompromise", 1),
        ("cACompromise", 2),
        ("affiliationChanged", 3),
        ("superseded", 4),
        ("cessationOfOperation", 5),
        ("certificateHold", 6),
        ("privilegeWithdrawn", 9),
    ];
    let v = value.unwrap_or("unspecified");
    names
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(v))
        .map(|(_, r)| *r)
        .or_else(|| {
            v.parse::<u8>()
                .ok()
                .filter(|r| hsm_est_proto::messages::valid_revocation_reason(*r))
        })
        .ok_or(bad(
            "request.reason",
            "reason: not an RFC 5280 revocation reason",
        ))
}

/// The cursor of an expiring-certificates page: `NOTAFTER:SERIAL` of the last certificate
/// of the previous page, or none (-1) for the first page.
pub fn expiring_cursor(req: &Req) -> Result<(i64, Vec<u8>), Failure> {
    match req.query("after") {
        None | Some("") => Ok((-1, Vec::new())),
        Some(c) => c
            .split_once(':')
            .and_then(|(t, s)| Some((t.parse::<i64>().ok()?, hex::decode(s).ok()?)))
            .ok_or(bad(
                "request.query",
                "after: NOTAFTER:SERIAL of the last certificate",
            )),
    }
}

/// The JSON body of a POST, or an empty object when there is none.
fn json_body(req: &Req) -> Result<Value, Failure> {
    if req.body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(&req.body).map_err(|_| bad("request.json", "The body is not JSON."))
}

async fn answer(state: &State, req: &Req) -> Result<HttpResponse, Failure> {
    let admin = api_caller(state, req).await?;
    let segs: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    match (&req.method, &segs[1..]) {
        (&Method::GET, ["devices"]) => list_devices(state, req).await,
        (&Method::GET, ["devices", cn]) => get_device(state, req, cn).await,
        (&Method::DELETE, ["devices", cn]) => {
            let keep = matches!(req.query("keep_certificates"), Some("true" | "1"));
            let r = SignerRequest::DeviceDelete {
                cn: cn.to_string(),
                keep_certificates: keep,
                actor: actor(&admin.name),
            };
            action(state, req, "delete", cn, &admin.name, r).await
        }
        (&Method::POST, ["devices", cn, "revoke"]) => {
            let body = json_body(req)?;
            let reason = reason(
                body.get("reason")
                    .and_then(Value::as_str)
                    .or(req.query("reason")),
            )?;
            let r = SignerRequest::DeviceRevoke {
                cn: cn.to_string(),
                reason,
                actor: actor(&admin.name),
            };
            action(state, req, "revoke", cn, &admin.name, r).await
        }
        (&Method::POST, ["devices", cn, "allow"]) => {
            let r = SignerRequest::DeviceAllow {
                cn: cn.to_string(),
                actor: actor(&admin.name),
            };
            action(state, req, "allow", cn, &admin.name, r).await
        }
        (&Method::GET, ["certificates"]) => expiring(state, req).await,
        (&Method::GET, ["stats"]) => stats(state, req).await,
        (
            _,
            ["devices"]
            | ["devices", _]
            | ["devices", _, "revoke" | "allow"]
            | ["certificates"]
            | ["stats"],
        ) => Err(Failure::MethodNotAllowed),
        _ => Err(Failure::NotFound),
    }
}

async fn list_devices(state: &State, req: &Req) -> Result<HttpResponse, Failure> {
    let limit = number(req, "limit", hsm_est_proto::messages::MAX_DEVICE_PAGE)?
        .unwrap_or(DEFAULT_PAGE)
        .max(1);
    let after = req.query("after").unwrap_or("").to_string();
    let r = SignerRequest::DeviceList {
        after,
        limit,
        filter: filter(req)?,
    };
    match state.call(req.id, &r).await? {
        SignerResponse::Devices { devices, more } => Ok(ok(
            StatusCode::OK,
            json!({
                "devices": devices.iter().map(device_json).collect::<Vec<_>>(),
                "next_after": if more { devices.last().map(|d| d.cn.clone()) } else { None },
            }),
        )),
        _ => Err(Failure::Unexpected),
    }
}

async fn get_device(state: &State, req: &Req, cn: &str) -> Result<HttpResponse, Failure> {
    let device = match state
        .call(req.id, &SignerRequest::DeviceGet { cn: cn.into() })
        .await?
    {
        SignerResponse::Device(d) => d,
        _ => return Err(Failure::Unexpected),
    };
    let r = SignerRequest::DeviceCertificates {
        cn: cn.into(),
        after_serial: hex::decode(req.query("after_serial").unwrap_or(""))
            .map_err(|_| bad("request.query", "after_serial: hex"))?,
        limit: 100,
    };
    match state.call(req.id, &r).await? {
        SignerResponse::Certificates { certificates, more } => {
            let mut v = device_json(&device);
            v["certificates"] = certificates.iter().map(certificate_json).collect();
            v["certificates_next_after"] = json!(if more {
                certificates.last().map(|c| hex::encode(&c.serial))
            } else {
                None
            });
            Ok(ok(StatusCode::OK, v))
        }
        _ => Err(Failure::Unexpected),
    }
}

async fn action(
    state: &State,
    req: &Req,
    name: &'static str,
    cn: &str,
    admin: &str,
    r: SignerRequest,
) -> Result<HttpResponse, Failure> {
    let answer = state.call(req.id, &r).await;
    let result = match &answer {
        Ok(_) => "ok".to_string(),
        Err(Failure::Signer(e)) => e.reason.clone(),
        Err(_) => "unavailable".to_string(),
    };
    state.metrics.action(name, &result);
    tracing::info!(
        "admin {} asked to {name} device {}: {result}",
        hsm_est_common::util::log_safe(admin),
        hsm_est_common::util::log_safe(cn)
    );
    match answer? {
        SignerResponse::Revoked { count } => Ok(ok(
            StatusCode::OK,
            json!({"cn": cn, "action": name, "revoked_certificates": count}),
        )),
        SignerResponse::Done => Ok(ok(StatusCode::OK, json!({"cn": cn, "action": name}))),
        _ => Err(Failure::Unexpected),
    }
}

async fn expiring(state: &State, req: &Req) -> Result<HttpResponse, Failure> {
    let days = number(req, "expiring_within_days", 36_500)?.unwrap_or(30);
    let limit = number(req, "limit", hsm_est_proto::messages::MAX_DEVICE_PAGE)?
        .unwrap_or(DEFAULT_PAGE)
        .max(1);
    let (after_not_after, after_serial) = expiring_cursor(req)?;
    let r = SignerRequest::ExpiringCertificates {
        within_days: days,
        after_not_after,
        after_serial,
        limit,
    };
    match state.call(req.id, &r).await? {
        SignerResponse::Certificates { certificates, more } => Ok(ok(
            StatusCode::OK,
            json!({
                "certificates": certificates.iter().map(certificate_json).collect::<Vec<_>>(),
                "next_after": if more {
                    certificates.last().map(|c| format!("{}:{}", c.not_after, hex::encode(&c.serial)))
                } else {
                    None
                },
            }),
        )),
        _ => Err(Failure::Unexpected),
    }
}

async fn stats(state: &State, req: &Req) -> Result<HttpResponse, Failure> {
    match state.call(req.id, &SignerRequest::Stats).await? {
        SignerResponse::Stats(s) => {
            let counts = |v: &[(String, u64)]| -> serde_json::Map<String, Value> {
                v.iter().map(|(k, n)| (k.clone(), json!(n))).collect()
            };
            Ok(ok(
                StatusCode::OK,
                json!({
                    "devices_by_status": counts(&s.devices_by_status),
                    "issued_last_24h": s.issued_last_24h,
                    "expiring_within_30_days": s.expiring_within_30_days,
                    "refusals_by_reason": counts(&s.refusals_by_reason),
                    "commits": s.commits,
                    "committed_decisions": s.decisions,
                    "queue_depth": s.queue_depth,
                    "max_batch": s.max_batch,
                    "token_signs": s.token_signs,
                    "token_sign_microseconds": s.token_sign_micros,
                    "ocsp_responses": s.ocsp_responses,
                    "ocsp_cache_hits": s.ocsp_cache_hits,
                    "ocsp_cached": s.ocsp_cached,
                    "ca_not_after": rfc3339_seconds(s.ca_not_after),
                    "admin_login_failures": state.metrics.login_failures.get(),
                }),
            ))
        }
        _ => Err(Failure::Unexpected),
    }
}
