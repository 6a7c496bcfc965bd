//! Channel binding (RFC 7030 §3.5 with RFC 9266 tls-exporter), end to end: a rustls client
//! computes its own TLS 1.3 connection's exporter value, puts its base64 in the CSR's
//! challengePassword and sends the CSR over that same connection. A profile with
//! `channel_binding: required` issues only then; another connection's value and TLS 1.2
//! are refused with a reason. Under `ignore` the value is not checked, and the audit says so.

mod common;

use std::io::Write;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use base64ct::{Base64, Encoding};
use common::csrgen;
use common::demo::*;
use common::rawtls::{request_on, status, tcp_from, tls_from};
use common::signer_bin;

const CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

fn exporter(conn: &rustls::ClientConnection) -> Vec<u8> {
    let mut out = vec![0u8; 32];
    conn.export_keying_material(&mut out, b"EXPORTER-Channel-Binding", None)
        .unwrap();
    out
}

fn bootstrap_request(path: &str, basic: &str, csr: &[u8]) -> Vec<u8> {
    let body = Base64::encode_string(csr);
    format!(
        "POST /.well-known/est/{path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Authorization: Basic {}\r\nContent-Type: application/pkcs10\r\n\
         Content-Length: {}\r\n\r\n{body}",
        Base64::encode_string(basic.as_bytes()),
        body.len()
    )
    .into_bytes()
}

/// A TLS 1.2-only client connection from `CLIENT`.
fn tls12(
    port: u16,
    ca: &std::path::Path,
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let conn = rustls::ClientConnection::new(
        Arc::new(config),
        rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
    )
    .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp_from(CLIENT, port).unwrap());
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    tls.flush().unwrap();
    tls
}

#[test]
fn a_required_binding_holds_only_for_its_own_tls_13_connection() {
    let mut demo = Demo::start("binding", "base64");
    demo.stop();
    let profile = std::fs::read_to_string(demo.path("policy/iqe-bootstrap.yaml"))
        .unwrap()
        .replace("name: iqe-bootstrap", "name: test-bound")
        + "channel_binding: required\n";
    std::fs::write(demo.path("policy/test-bound.yaml"), profile).unwrap();
    demo.edit_frontend(
        "labels:\n",
        "labels:\n  bound:\n    profiles: { bootstrap: test-bound, enroll: iqe-pump, \
         reenroll: iqe-pump }\n    response_format: base64\n",
    );
    let _signer = demo.spawn_ready(&signer_bin(), "signer.yaml", "signer.log");
    let _frontend = demo.spawn_ready(&frontend_bin(), "frontend.yaml", "frontend.log");
    let (port, ca, basic) = (demo.port, demo.ca(), demo.basic());
    let wait = Duration::from_secs(30);

    // The right value, on its own connection: issued.
    let mut tls = tls_from(CLIENT, port, &ca, b"http/1.1").unwrap();
    let value = Base64::encode_string(&exporter(&tls.conn));
    let key = csrgen::P256Key::generate();
    let csr = csrgen::csr_with_challenge(&key, "bound-pump-1", &value);
    let answer = request_on(
        &mut tls,
        &bootstrap_request("bound/bootstrap", &basic, &csr),
        wait,
    );
    assert_eq!(status(&answer), 200, "{answer}");

    // The value of another connection (a CSR replayed over a new one): refused.
    let mut first = tls_from(CLIENT, port, &ca, b"http/1.1").unwrap();
    let mut second = tls_from(CLIENT, port, &ca, b"http/1.1").unwrap();
    let other = Base64::encode_string(&exporter(&first.conn));
    let csr = csrgen::csr_with_challenge(&key, "bound-pump-2", &other);
    let answer = request_on(
        &mut second,
        &bootstrap_request("bound/bootstrap", &basic, &csr),
        wait,
    );
    assert_eq!(status(&answer), 400, "{answer}");
    assert!(answer.contains("not this connection's"), "{answer}");
    // No binding at all: refused.
    let plain = csrgen::csr_for_key(&key, "bound-pump-3");
    let answer = request_on(
        &mut first,
        &bootstrap_request("bound/bootstrap", &basic, &plain),
        wait,
    );
    assert_eq!(status(&answer), 400, "{answer}");

    // TLS 1.2: refused, saying why.
    let mut old = tls12(port, &ca);
    let csr = csrgen::csr_with_challenge(&key, "bound-pump-4", &value);
    let answer = request_on(
        &mut old,
        &bootstrap_request("bound/bootstrap", &basic, &csr),
        wait,
    );
    assert_eq!(status(&answer), 400, "{answer}");
    assert!(answer.contains("TLS 1.3"), "{answer}");

    // The default route's profile ignores bindings: issued, and the audit says unchecked.
    let mut tls = tls_from(CLIENT, port, &ca, b"http/1.1").unwrap();
    let csr = csrgen::csr_with_challenge(&key, "loose-pump-1", "anything at all");
    let answer = request_on(
        &mut tls,
        &bootstrap_request("bootstrap", &basic, &csr),
        wait,
    );
    assert_eq!(status(&answer), 200, "{answer}");

    let audit = std::fs::read_to_string(demo.path("audit.jsonl")).unwrap();
    let issued = |cn: &str| {
        audit
            .lines()
            .find(|l| l.contains("\"event\":\"issued\"") && l.contains(&format!("CN={cn}")))
            .unwrap_or_else(|| panic!("{cn} not issued"))
            .to_string()
    };
    assert!(issued("bound-pump-1").contains("\"channel_binding\":\"verified\""));
    assert!(issued("loose-pump-1").contains("\"channel_binding\":\"not_checked\""));
    for reason in ["binding.mismatch", "binding.missing", "binding.tls13"] {
        assert!(
            audit.contains(&format!("\"reason\":\"{reason}\"")),
            "{reason}"
        );
    }
    assert!(!audit
        .lines()
        .any(|l| l.contains("\"event\":\"issued\"") && l.contains("CN=bound-pump-2")));
}
