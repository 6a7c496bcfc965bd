//! The dashboard's HTML: maud templates, which escape every value they insert. No script,
//! no inline style, nothing from elsewhere: one stylesheet served by this process, so the
//! Content-Security-Policy can forbid everything else. Works without JavaScript and on a
//! phone (one column, tables scroll sideways).

use hyper::StatusCode;
use maud::{html, Markup, DOCTYPE};

use hsm_est_common::util::rfc3339_millis;
use hsm_est_proto::{CertificateInfo, DeviceFilter, DeviceInfo, DeviceStatus, Stats};

use crate::dashboard::{path_of, PAGE};
use crate::http::{respond, Failure, HttpResponse};

pub const STYLE: &str = include_str!("style.css");

/// Who is signed in, for the page frame and its forms.
pub struct Page<'a> {
    pub admin: &'a str,
    pub csrf: &'a str,
}

const SOON: i64 = 30 * 86_400;

fn now() -> i64 {
    hsm_est_common::util::unix_seconds(std::time::SystemTime::now())
}

/// `2026-11-30 22:31 UTC` from milliseconds since the epoch.
fn when_ms(ms: i64) -> String {
    if ms <= 0 {
        return "—".into();
    }
    let t = rfc3339_millis(ms);
    format!("{} {} UTC", &t[..10], &t[11..16.min(t.len())])
}

fn when(s: i64) -> String {
    when_ms(s.saturating_mul(1000))
}

fn html_page(status: StatusCode, markup: Markup) -> HttpResponse {
    respond(status, "text/html; charset=utf-8", markup.into_string())
}

fn frame(page: Option<&Page<'_>>, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · hsm-est" }
                link rel="stylesheet" href="/static/style.css";
            }
            body {
                header {
                    strong { "hsm-est" }
                    @if let Some(p) = page {
                        nav {
                            a href="/" { "Overview" }
                            a href="/devices" { "Devices" }
                            a href="/certificates?expiring_within_days=30" { "Expiring" }
                        }
                        form method="post" action="/logout" class="logout" {
                            input type="hidden" name="csrf" value=(p.csrf);
                            span { (p.admin) }
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

pub fn login(token: &str, error: Option<&str>, status: StatusCode) -> HttpResponse {
    html_page(
        status,
        frame(
            None,
            "Admin login",
            html! {
                @if let Some(e) = error { p.error role="alert" { (e) } }
                form method="post" action="/login" class="stack" {
                    input type="hidden" name="login_token" value=(token);
                    label { "User" input name="user" autocomplete="username" required; }
                    label {
                        "Password"
                        input type="password" name="password" autocomplete="current-password" required;
                    }
                    button type="submit" id="login" { "Log in" }
                }
            },
        ),
    )
}

/// An error page outside a session.
pub fn failure(f: &Failure) -> HttpResponse {
    let mut r = html_page(
        f.status(),
        frame(None, "Error", html! { p.error { (f.message()) } }),
    );
    f.decorate(&mut r);
    r
}

/// An error page inside a session.
pub fn failure_in(page: &Page<'_>, f: &Failure) -> HttpResponse {
    let body = html! {
        p.error { (f.message()) }
        p { a href="/devices" { "Back to the devices" } }
    };
    let mut r = html_page(f.status(), frame(Some(page), "Error", body));
    f.decorate(&mut r);
    r
}

fn status_badge(s: DeviceStatus) -> Markup {
    html! { span class=(format!("badge {}", s.as_str())) { (s.as_str()) } }
}

pub fn overview(
    page: &Page<'_>,
    health: Option<(String, String)>,
    stats: Option<&Stats>,
    admin_login_failures: u64,
) -> HttpResponse {
    let body = html! {
        section {
            h2 { "Signer and token" }
            @match &health {
                Some((version, subject)) => {
                    p.ok { "The signer answers; its token session is open." }
                    dl {
                        dt { "Signer version" } dd { (version) }
                        dt { "CA" } dd { (subject) }
                        @if let Some(s) = stats {
                            dt { "CA expires" }
                            dd class=[(s.ca_not_after - now() < 365 * 86_400).then_some("soon")] {
                                (when(s.ca_not_after))
                            }
                        }
                    }
                }
                None => { p.error { "The signer does not answer: nothing can be issued." } }
            }
        }
        @if let Some(s) = stats {
            section {
                h2 { "Devices" }
                table {
                    thead { tr { th { "Status" } th.num { "Devices" } } }
                    tbody {
                        @for (status, n) in &s.devices_by_status {
                            tr {
                                td { a href=(format!("/devices?status={status}")) { (status) } }
                                td.num { (n) }
                            }
                        }
                    }
                }
            }
            section {
                h2 { "Certificates" }
                dl {
                    dt { "Issued in the last 24 hours" } dd { (s.issued_last_24h) }
                    dt { "Expiring within 30 days" }
                    dd {
                        a href="/certificates?expiring_within_days=30" { (s.expiring_within_30_days) }
                    }
                    dt { "Group commits / decisions" } dd { (s.commits) " / " (s.decisions) }
                    dt { "Commit queue now" } dd { (s.queue_depth) }
                    dt { "Mean token signature" }
                    dd {
                        @if s.token_signs > 0 {
                            (format!("{} µs", s.token_sign_micros / s.token_signs))
                        } @else { "—" }
                    }
                }
            }
            section {
                h2 { "Refusals since the signer started" }
                @if s.refusals_by_reason.is_empty() { p { "None." } } @else {
                    table {
                        thead { tr { th { "Reason" } th.num { "Count" } } }
                        tbody {
                            @for (reason, n) in &s.refusals_by_reason {
                                tr { td { code { (reason) } } td.num { (n) } }
                            }
                        }
                    }
                }
            }
        }
        section {
            h2 { "Logins" }
            dl {
                dt { "Failed admin logins since est-admin started" } dd { (admin_login_failures) }
            }
            p.note { "Failed EST logins are counted by est-frontend's metrics (hsm_est_frontend_auth_failures)." }
        }
    };
    html_page(StatusCode::OK, frame(Some(page), "Overview", body))
}

fn query_of(filter: &DeviceFilter, after: &str) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    if !filter.cn_prefix.is_empty() {
        q.append_pair("q", &filter.cn_prefix);
    }
    if let Some(s) = filter.status {
        q.append_pair("status", s.as_str());
    }
    if filter.expiring_within_days > 0 {
        q.append_pair(
            "expiring_within_days",
            &filter.expiring_within_days.to_string(),
        );
    }
    if !after.is_empty() {
        q.append_pair("after", after);
    }
    q.finish()
}

pub fn devices(
    page: &Page<'_>,
    filter: &DeviceFilter,
    after: &str,
    devices: &[DeviceInfo],
    more: bool,
) -> HttpResponse {
    let now = now();
    let statuses = ["bootstrap_only", "enrolled", "revoked", "deleted"];
    let days = (filter.expiring_within_days > 0).then(|| filter.expiring_within_days.to_string());
    let body = html! {
        form method="get" action="/devices" class="filters" {
            label { "CN starts with" input name="q" value=(filter.cn_prefix) maxlength="64"; }
            label {
                "Status"
                select name="status" {
                    option value="" { "any" }
                    @for s in statuses {
                        option value=(s) selected[filter.status.map(|f| f.as_str()) == Some(s)] { (s) }
                    }
                }
            }
            label {
                "Expiring within (days)"
                input name="expiring_within_days" type="number" min="0" max="36500" value=[days];
            }
            button type="submit" { "Search" }
        }
        @if devices.is_empty() { p { "No devices match." } } @else {
            div.scroll {
                table.devices {
                    thead {
                        tr {
                            th { "CN" } th { "Status" } th { "Current serial" }
                            th { "First enrolment" } th { "Last enrolment" } th { "Last IP" }
                            th { "Expires" } th { "Revoked" }
                        }
                    }
                    tbody {
                        @for d in devices {
                            tr {
                                td { a href=(path_of(&d.cn)) { (d.cn) } }
                                td { (status_badge(d.status)) }
                                td { code { (hex::encode(&d.current_serial)) } }
                                td { (when_ms(d.first_enrolled_ms)) }
                                td { (when_ms(d.last_enrolled_ms)) }
                                td { (d.last_ip) }
                                td class=[(d.current_not_after > 0 && d.current_not_after - now < SOON).then_some("soon")] {
                                    (when(d.current_not_after))
                                }
                                td { @if d.status == DeviceStatus::Revoked { "yes" } @else { "no" } }
                            }
                        }
                    }
                }
            }
        }
        nav.pager {
            @if !after.is_empty() { a href=(format!("/devices?{}", query_of(filter, ""))) { "First page" } }
            @if more {
                @if let Some(last) = devices.last() {
                    a href=(format!("/devices?{}", query_of(filter, &last.cn))) rel="next" { "Next " (PAGE) " →" }
                }
            }
        }
    };
    html_page(StatusCode::OK, frame(Some(page), "Devices", body))
}

use hsm_est_proto::messages::revocation_reason_name as reason_name;

fn certificate_state(c: &CertificateInfo, now: i64) -> String {
    if let Some(at) = c.revoked_at_ms {
        let reason = c
            .revocation_reason
            .map(|r| format!(", {}", reason_name(r)))
            .unwrap_or_default();
        return format!("revoked {}{reason}", when_ms(at));
    }
    if c.not_after < now {
        return "expired".into();
    }
    if c.superseded_by.is_some() {
        return "superseded".into();
    }
    "valid".into()
}

pub fn device(
    page: &Page<'_>,
    d: &DeviceInfo,
    certificates: &[CertificateInfo],
    more: bool,
    notice: Option<&str>,
) -> HttpResponse {
    let now = now();
    let base = path_of(&d.cn);
    let body = html! {
        @if let Some(n) = notice { p.ok role="status" { (n) } }
        dl {
            dt { "CN" } dd id="cn" { (d.cn) }
            dt { "Status" } dd id="status" { (status_badge(d.status)) }
            dt { "Current serial" } dd id="serial" { code { (hex::encode(&d.current_serial)) } }
            dt { "First enrolment" } dd { (when_ms(d.first_enrolled_ms)) }
            dt { "Last enrolment" } dd { (when_ms(d.last_enrolled_ms)) }
            dt { "Last IP" } dd { (d.last_ip) }
            dt { "Expires" }
            dd class=[(d.current_not_after > 0 && d.current_not_after - now < SOON).then_some("soon")] {
                (when(d.current_not_after))
            }
        }
        nav.actions {
            @if d.status != DeviceStatus::Revoked && d.status != DeviceStatus::Deleted {
                a.button href=(format!("{base}/confirm?action=revoke")) id="revoke" { "Revoke…" }
            }
            @if d.status != DeviceStatus::Revoked && d.status != DeviceStatus::Deleted {
                a.button.danger href=(format!("{base}/confirm?action=delete")) id="delete" { "Delete…" }
            }
            @if d.status == DeviceStatus::Revoked {
                a.button href=(format!("{base}/confirm?action=allow")) id="allow" { "Allow…" }
            }
        }
        h2 { "Certificates" }
        div.scroll {
            table {
                thead {
                    tr {
                        th { "Serial" } th { "Not before" } th { "Not after" } th { "Status" }
                        th { "Operation" } th { "Profile" } th { "Requester" }
                    }
                }
                tbody {
                    @for c in certificates {
                        tr {
                            td { code { (hex::encode(&c.serial)) } }
                            td { (when(c.not_before)) }
                            td { (when(c.not_after)) }
                            td { (certificate_state(c, now)) }
                            td { (c.operation) }
                            td { (c.profile) }
                            td { (c.requester) }
                        }
                    }
                }
            }
        }
        @if more {
            @if let Some(last) = certificates.last() {
                nav.pager {
                    a href=(format!("{base}?after_serial={}", hex::encode(&last.serial))) rel="next" { "Older certificates →" }
                }
            }
        }
    };
    html_page(
        StatusCode::OK,
        frame(Some(page), &format!("Device {}", d.cn), body),
    )
}

pub fn confirm(page: &Page<'_>, cn: &str, action: &str) -> HttpResponse {
    let base = path_of(cn);
    let body = html! {
        @match action {
            "revoke" => {
                p { "Revoke every unexpired certificate of " strong { (cn) } "? The device gets nothing more until an admin allows it again." }
            }
            "delete" => {
                p { "Delete " strong { (cn) } "? Its unexpired certificates are revoked (cessationOfOperation) unless you keep them; its history stays on record and it may bootstrap again." }
            }
            _ => {
                p { "Allow " strong { (cn) } " to bootstrap again? Its revoked certificates stay revoked." }
            }
        }
        form method="post" action=(format!("{base}/{action}")) class="stack" {
            input type="hidden" name="csrf" value=(page.csrf);
            @if action == "revoke" {
                label {
                    "Reason"
                    select name="reason" {
                        option value="unspecified" { "unspecified" }
                        option value="keyCompromise" { "keyCompromise (stolen or lost device)" }
                        option value="affiliationChanged" { "affiliationChanged" }
                        option value="cessationOfOperation" { "cessationOfOperation (retired)" }
                        option value="privilegeWithdrawn" { "privilegeWithdrawn" }
                    }
                }
            }
            @if action == "delete" {
                label.inline { input type="checkbox" name="keep_certificates"; " Keep its certificates valid" }
            }
            div.actions {
                button type="submit" id="confirm" class=[(action != "allow").then_some("danger")] {
                    @match action { "revoke" => "Revoke", "delete" => "Delete", _ => "Allow" }
                }
                a href=(base) { "Cancel" }
            }
        }
    };
    let title = format!("Confirm: {action} {cn}");
    html_page(StatusCode::OK, frame(Some(page), &title, body))
}

pub fn expiring(
    page: &Page<'_>,
    days: u32,
    certificates: &[CertificateInfo],
    more: bool,
) -> HttpResponse {
    let body = html! {
        form method="get" action="/certificates" class="filters" {
            label { "Within (days)" input name="expiring_within_days" type="number" min="0" max="36500" value=(days); }
            button type="submit" { "Show" }
        }
        @if certificates.is_empty() { p { "No unrevoked certificate expires within " (days) " days." } } @else {
            div.scroll {
                table {
                    thead { tr { th { "CN" } th { "Serial" } th { "Not after" } th { "Profile" } } }
                    tbody {
                        @for c in certificates {
                            tr {
                                td { a href=(path_of(&c.common_name)) { (c.common_name) } }
                                td { code { (hex::encode(&c.serial)) } }
                                td.soon { (when(c.not_after)) }
                                td { (c.profile) }
                            }
                        }
                    }
                }
            }
        }
        @if more {
            @if let Some(last) = certificates.last() {
                nav.pager {
                    a rel="next" href=(format!(
                        "/certificates?expiring_within_days={days}&after={}:{}",
                        last.not_after,
                        hex::encode(&last.serial)
                    )) { "Next " (PAGE) " →" }
                }
            }
        }
    };
    html_page(
        StatusCode::OK,
        frame(
            Some(page),
            &format!("Certificates expiring within {days} days"),
            body,
        ),
    )
}
