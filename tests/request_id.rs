//! One request id end to end: the id the frontend gives an HTTP request is the one the
//! signer logs and audits for it, so that one search joins both processes.

mod common;

use common::demo::*;

/// The `req=<id>` that starts the frontend's access line for `needle`.
fn request_id_of(log: &str, needle: &str) -> String {
    let line = log
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no frontend line with {needle:?}:\n{log}"));
    let at = line.find("req=").expect("req= on the access line");
    line[at + 4..]
        .split_whitespace()
        .next()
        .expect("an id after req=")
        .to_string()
}

#[test]
fn a_bootstrap_carries_one_id_through_frontend_log_signer_log_and_audit() {
    let demo = Demo::start("request-id", "der");
    let (_, csr) = demo.csr("rid-pump", "/CN=rid-pump-001/O=TestHospital/C=US");
    let csr_arg = format!("@{}", csr.display());
    let boot = demo.curl(
        &["-u", &demo.basic(), "--data-binary", &csr_arg],
        "iqe/bootstrap",
    );
    assert_eq!(boot.status, 200, "{}", boot.text());
    assert!(demo.frontend_log_shows("/.well-known/est/iqe/bootstrap -> 200"));

    let id = request_id_of(
        &demo.frontend_log(),
        "/.well-known/est/iqe/bootstrap -> 200",
    );
    assert_eq!(id.len(), 16, "{id}");
    let number = u64::from_str_radix(&id, 16).expect("hex id");

    let signer_log = std::fs::read_to_string(demo.path("signer.log")).unwrap();
    let issued = signer_log
        .lines()
        .find(|l| l.contains("issued serial=") && l.contains("cn=rid-pump-001"))
        .unwrap_or_else(|| panic!("no issued line in the signer log:\n{signer_log}"));
    assert!(issued.contains(&format!("req={id}")), "{issued}");

    let audit = std::fs::read_to_string(demo.path("audit.jsonl")).unwrap();
    let record = audit
        .lines()
        .find(|l| l.contains("\"event\":\"issued\"") && l.contains("rid-pump-001"))
        .expect("issued record");
    assert!(
        record.contains(&format!("\"request_id\":{number}")),
        "{record}"
    );

    // A second request gets another id.
    let again = demo.curl(&[], "iqe/cacerts");
    assert_eq!(again.status, 200);
    assert!(demo.frontend_log_shows("/.well-known/est/iqe/cacerts -> 200"));
    let other = request_id_of(&demo.frontend_log(), "/.well-known/est/iqe/cacerts -> 200");
    assert_ne!(other, id);
}
