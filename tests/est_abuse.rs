//! Hostile clients against the whole appliance: each gets a clear status (never a crash or
//! a hang), and valid clients keep being served throughout.

mod common;

use std::process::Command;
use std::time::Duration;

use common::demo::*;
use common::rawtls::{exchange, status};
use common::run;

fn still_serving(demo: &Demo) {
    assert_eq!(
        demo.curl(&[], "cacerts").status,
        200,
        "valid clients must be served"
    );
}

#[test]
fn malformed_requests_get_clear_answers() {
    let demo = Demo::start("abuse", "base64");
    let basic = demo.basic();

    // 1 MiB body over HTTP/1.1 (how EST clients and the IQE gateway talk): 413, refused
    // from the Content-Length before the body is read.
    let big = demo.path("big.bin");
    let big_arg = format!("@{}", big.display());
    std::fs::write(&big, vec![b'A'; 1024 * 1024]).unwrap();
    let r = demo.curl(
        &["--http1.1", "-u", &basic, "--data-binary", &big_arg],
        "simpleenroll",
    );
    assert_eq!(r.status, 413);
    // An announced length far beyond the cap is refused before a byte of it is read: the
    // 3 bytes sent never make up 100 MB, and the answer still comes at once.
    let tiny = demo.path("tiny.bin");
    std::fs::write(&tiny, b"abc").unwrap();
    let tiny_arg = format!("@{}", tiny.display());
    let r = demo.curl(
        &[
            "--http1.1",
            "--max-time",
            "10",
            "-u",
            &basic,
            "-H",
            "Content-Length: 100000000",
            "--data-binary",
            &tiny_arg,
        ],
        "simpleenroll",
    );
    assert_eq!(r.status, 413);
    // The same sent chunked (no Content-Length): still 413, at the 16 KiB read limit.
    let chunked = ["-H", "Transfer-Encoding: chunked"];
    let mut args = vec!["--http1.1", "-u", &basic, "--data-binary", &big_arg];
    args.extend(chunked);
    assert_eq!(demo.curl(&args, "simpleenroll").status, 413);
    // Over HTTP/2 the body is read and thrown away up to the drain limit, then 413, and
    // the stream ends with RST_STREAM NO_ERROR. Nothing is kept past the cap and the
    // server goes on serving.
    for with_chunked in [false, true] {
        let mut args = vec!["--http2", "-u", &basic, "--data-binary", &big_arg];
        if with_chunked {
            args.extend(chunked);
        }
        let r = demo.curl(&args, "simpleenroll");
        if with_chunked {
            // A chunked header is not HTTP/2; curl may drop it or send it, and the
            // server's answer to that stream may come as a stream error.
            assert!(matches!(r.status, 0 | 413), "{}", r.status);
        } else {
            assert_eq!(r.status, 413);
        }
    }
    still_serving(&demo);

    // Garbage instead of base64: 400 with a text reason.
    let r = demo.curl(
        &["-u", &basic, "--data-binary", "this is %% not base64"],
        "simpleenroll",
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/plain; charset=utf-8")
    );
    assert!(
        !r.text().contains("panicked") && r.text().len() < 200,
        "{}",
        r.text()
    );

    // No Host header: 400.
    let (resp, _) = exchange(
        demo.port,
        &demo.ca(),
        b"GET /.well-known/est/cacerts HTTP/1.1\r\nConnection: close\r\n\r\n",
        Duration::from_secs(20),
    );
    assert_eq!(status(&resp), 400, "{resp}");

    // A transfer coding other than chunked: 501 (hyper alone would accept it).
    let (resp, _) = exchange(
        demo.port,
        &demo.ca(),
        format!(
            "POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: 127.0.0.1\r\n\
             Authorization: Basic {}\r\nTransfer-Encoding: gzip, chunked\r\n\
             Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            base64_of(&basic)
        )
        .as_bytes(),
        Duration::from_secs(20),
    );
    assert!(matches!(status(&resp), 400 | 501), "{resp}");

    // Unknown path and label: 404. Wrong method: 405 with Allow.
    assert_eq!(demo.curl(&[], "nosuchlabel/cacerts").status, 404);
    assert_eq!(demo.curl(&[], "cacerts/extra/segments").status, 404);
    let r = demo.curl(&["-X", "DELETE"], "cacerts");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow").as_deref(), Some("GET"));
    // serverkeygen and fullcmc: 501 with a reason.
    let r = demo.curl(&["-u", &basic, "--data-binary", "x"], "serverkeygen");
    assert_eq!(r.status, 501);
    assert!(r.text().contains("private keys"), "{}", r.text());
    assert_eq!(
        demo.curl(&["-u", &basic, "--data-binary", "x"], "fullcmc")
            .status,
        501
    );
    // No credentials at all: 401 with a Basic challenge.
    let r = demo.curl(&["--data-binary", "x"], "simpleenroll");
    assert_eq!(r.status, 401);
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .starts_with("Basic realm=\""));
    still_serving(&demo);

    // A body that never arrives: 408 within the body timeout (10 s in the demo).
    let (resp, took) = exchange(
        demo.port,
        &demo.ca(),
        format!(
            "POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: 127.0.0.1\r\n\
             Authorization: Basic {}\r\nContent-Length: 100\r\n\r\n",
            base64_of(&basic)
        )
        .as_bytes(),
        Duration::from_secs(40),
    );
    assert_eq!(status(&resp), 408, "{resp}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    still_serving(&demo);
}

#[test]
fn tls_refuses_old_protocols_and_foreign_client_certificates() {
    let demo = Demo::start("abuse-tls", "der");
    let connect = format!("127.0.0.1:{}", demo.port);
    let s_client = |extra: &[&str]| {
        let out = run(Command::new("openssl")
            .args(["s_client", "-connect", &connect, "-CAfile"])
            .arg(demo.ca())
            .args(extra)
            .stdin(std::process::Stdio::null()));
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    // TLS 1.1 (the client allows it at security level 0): the server refuses.
    let old = s_client(&["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]);
    assert!(old.contains("alert handshake failure"), "{old}");
    // TLS 1.2 and 1.3 work.
    assert!(s_client(&["-tls1_2"]).contains("Verify return code: 0 (ok)"));
    assert!(s_client(&["-tls1_3"]).contains("TLSv1.3"));
    // A client certificate from a CA the appliance does not trust.
    let key = demo.path("foreign.key");
    let cert = demo.path("foreign.pem");
    common::self_signed_p256(
        &key,
        &cert,
        "/CN=foreign-pump",
        &[
            "basicConstraints=critical,CA:FALSE",
            "extendedKeyUsage=clientAuth",
        ],
    );
    let out = run(Command::new("curl")
        .args(["-sS", "--max-time", "30", "--cacert"])
        .arg(demo.ca())
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .args(["--data-binary", "x"])
        .arg(demo.url("simpleenroll")));
    assert!(
        !out.status.success(),
        "a foreign client certificate was accepted"
    );
    // curl's wording depends on timing (an alert, or a reset); the server's reason does not.
    assert!(
        demo.frontend_log_shows("UnknownIssuer"),
        "{}",
        demo.frontend_log()
    );
    still_serving(&demo);
}

#[test]
fn a_burst_of_wrong_passwords_is_limited_and_logged() {
    let demo = Demo::start("abuse-login", "der");
    let (_, csr) = demo.csr("lk", "/CN=lock-pump-1");
    let data = format!("@{}", csr.display());
    let mut codes = Vec::new();
    for i in 0..7 {
        let r = demo.curl(
            &[
                "-u",
                &format!("demo:wrong-password-number-{i}"),
                "--data-binary",
                &data,
            ],
            "bootstrap",
        );
        codes.push(r.status);
        if r.status == 429 {
            let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
            assert!(wait > 0 && wait <= 900, "{wait}");
        }
    }
    assert_eq!(&codes[..5], &[401; 5], "{codes:?}");
    assert_eq!(&codes[5..], &[429, 429], "{codes:?}");
    // Now even the right password waits: the account is locked for the window.
    let r = demo.curl(&["-u", &demo.basic(), "--data-binary", &data], "bootstrap");
    assert_eq!(r.status, 429);
    let log = demo.frontend_log();
    assert_eq!(
        log.matches("login failed for user demo").count(),
        5,
        "{log}"
    );
    assert!(log.contains("too many failures"), "{log}");
    assert!(
        !log.contains("wrong-password-number"),
        "a password reached the log"
    );
    still_serving(&demo);
}

fn base64_of(s: &str) -> String {
    use base64ct::{Base64, Encoding};
    Base64::encode_string(s.as_bytes())
}
