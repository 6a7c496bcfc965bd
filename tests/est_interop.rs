//! What real EST clients need from the wire, checked the way they read it: header names
//! matched case-sensitively (libest), 413 for oversized bodies over HTTP/1.1 and HTTP/2
//! (curl), raw DER that happens to end in a white-space byte (the IQE gateway), a clear
//! answer to re-enrolment without a certificate, and a 409 that says what to do.

mod common;

use std::time::Duration;

use base64ct::{Base64, Encoding};
use common::csrgen;
use common::demo::*;
use common::rawtls::exchange;

fn header_names(response: &str) -> Vec<&str> {
    let head = response.split("\r\n\r\n").next().unwrap_or("");
    head.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':').map(|(k, _)| k))
        .collect()
}

#[test]
fn header_names_are_spelt_as_case_sensitive_clients_expect() {
    let demo = Demo::start("interop-headers", "base64");
    let ca = demo.ca();
    let get = "GET /.well-known/est/cacerts HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let (ok, _) = exchange(demo.port, &ca, get.as_bytes(), Duration::from_secs(20));
    let names = header_names(&ok);
    for name in [
        "Content-Type",
        "Content-Length",
        "Content-Transfer-Encoding",
    ] {
        assert!(names.contains(&name), "{name} not in {names:?}");
    }
    let post = |auth: &str| {
        format!(
            "POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\
             Content-Type: application/pkcs10\r\nContent-Length: 4\r\n\r\nAAAA"
        )
    };
    let (denied, _) = exchange(demo.port, &ca, post("").as_bytes(), Duration::from_secs(20));
    assert!(
        header_names(&denied).contains(&"WWW-Authenticate"),
        "{denied}"
    );
    // Wrong passwords until the address is locked: Retry-After.
    let wrong = format!(
        "Authorization: Basic {}\r\n",
        Base64::encode_string(b"demo:wrong")
    );
    let mut locked = String::new();
    for _ in 0..8 {
        let (r, _) = exchange(
            demo.port,
            &ca,
            post(&wrong).as_bytes(),
            Duration::from_secs(20),
        );
        if r.starts_with("HTTP/1.1 429") {
            locked = r;
            break;
        }
    }
    assert!(header_names(&locked).contains(&"Retry-After"), "{locked}");
}

#[test]
fn oversized_bodies_get_413_over_both_protocols() {
    let demo = Demo::start("interop-413", "base64");
    let basic = demo.basic();
    for size in [40 * 1024, 1024 * 1024] {
        let file = demo.path(&format!("body-{size}.bin"));
        std::fs::write(&file, vec![b'A'; size]).unwrap();
        let data = format!("@{}", file.display());
        for protocol in ["--http1.1", "--http2"] {
            let r = demo.curl(
                &[protocol, "-u", &basic, "--data-binary", &data],
                "simpleenroll",
            );
            assert_eq!(r.status, 413, "{protocol} with {size} bytes");
        }
    }
}

#[test]
fn raw_der_ending_in_a_white_space_byte_is_a_csr() {
    let demo = Demo::start("interop-der", "der");
    for (i, last) in [0x0d_u8, 0x20].into_iter().enumerate() {
        let cn = format!("ward-e-pump-00{i}");
        let csr = (0..20_000)
            .map(|_| csrgen::csr(&[(csrgen::CN, cn.as_str())]))
            .find(|c| c.last() == Some(&last))
            .expect("such a signature within 20000 tries");
        let file = demo.path(&format!("der-{i}.csr"));
        std::fs::write(&file, &csr).unwrap();
        let r = demo.curl(
            &[
                "-u",
                &demo.basic(),
                "-H",
                "Content-Type: application/pkcs10",
                "--data-binary",
                &format!("@{}", file.display()),
            ],
            "bootstrap",
        );
        assert_eq!(r.status, 200, "last byte {last:#04x}: {}", r.text());
    }
}

#[test]
fn reenrolment_without_a_certificate_and_a_duplicate_bootstrap_say_what_to_do() {
    let demo = Demo::start("interop-texts", "base64");
    let (_, csr) = demo.csr("p", "/CN=ward-f-pump-001");
    let data = format!("@{}", csr.display());
    let r = demo.curl(
        &["-u", &demo.basic(), "--data-binary", &data],
        "simplereenroll",
    );
    assert_eq!(r.status, 403);
    assert!(r.text().contains("client certificate"), "{}", r.text());
    assert!(r.header("www-authenticate").is_none(), "{}", r.headers);
    assert_eq!(
        demo.curl(&["-u", &demo.basic(), "--data-binary", &data], "bootstrap")
            .status,
        200
    );
    let (_, other) = demo.csr("q", "/CN=ward-f-pump-001");
    let again = demo.curl(
        &[
            "-u",
            &demo.basic(),
            "--data-binary",
            &format!("@{}", other.display()),
        ],
        "bootstrap",
    );
    assert_eq!(again.status, 409);
    assert!(
        again.text().contains("estctl device delete"),
        "{}",
        again.text()
    );
}
