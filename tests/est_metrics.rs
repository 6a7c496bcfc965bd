//! The frontend's metrics listener: after N enrolments the enrolment counter reads N, a
//! wrong password and a refusal show up in their counters, and the whole output parses as
//! OpenMetrics/Prometheus text. The metrics are on their own plain-HTTP port, not on the
//! EST port.

mod common;

use std::process::Command;

use common::demo::*;
use common::{ok, run, signer_bin};

#[test]
fn enrolments_are_counted_and_the_output_parses() {
    let mut demo = Demo::start("metrics", "base64");
    demo.stop();
    let metrics_port = free_port();
    demo.edit_frontend(
        "users_file: users.yaml",
        &format!("users_file: users.yaml\nmetrics:\n  listen: 127.0.0.1:{metrics_port}"),
    );
    let _signer = demo.spawn_ready(&signer_bin(), "signer.yaml", "signer.log");
    let _frontend = demo.spawn_ready(&frontend_bin(), "frontend.yaml", "frontend.log");
    const N: usize = 3;
    for i in 0..N {
        let (_, csr) = demo.csr(&format!("m{i}"), &format!("/CN=metrics-pump-{i}"));
        let data = format!("@{}", csr.display());
        assert_eq!(
            demo.curl(&["-u", &demo.basic(), "--data-binary", &data], "bootstrap")
                .status,
            200
        );
    }
    // One duplicate (409) and one wrong password (401).
    let (_, again) = demo.csr("m-again", "/CN=metrics-pump-0");
    let data = format!("@{}", again.display());
    assert_eq!(
        demo.curl(&["-u", &demo.basic(), "--data-binary", &data], "bootstrap")
            .status,
        409
    );
    assert_eq!(
        demo.curl(&["-u", "demo:wrong", "--data-binary", &data], "bootstrap")
            .status,
        401
    );

    let url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let text = ok(&run(Command::new("curl").args([
        "-s",
        "--max-time",
        "10",
        &url,
    ])));
    assert!(text.ends_with("# EOF\n"), "{text}");
    for line in text.lines() {
        assert!(
            valid_metrics_line(line),
            "not Prometheus text: {line:?}\n{text}"
        );
    }
    let enrolled = "hsm_est_frontend_enrolments_total{label=\"default\",operation=\"bootstrap\",result=\"200\"}";
    assert_eq!(sample(&text, enrolled), Some(N as f64), "{text}");
    let duplicate = "hsm_est_frontend_enrolments_total{label=\"default\",operation=\"bootstrap\",result=\"409\"}";
    assert_eq!(sample(&text, duplicate), Some(1.0), "{text}");
    assert_eq!(
        sample(&text, "hsm_est_frontend_auth_failures_total"),
        Some(1.0),
        "{text}"
    );
    let count = "hsm_est_frontend_request_seconds_count{operation=\"bootstrap\"}";
    assert_eq!(sample(&text, count), Some((N + 2) as f64), "{text}");
    // Not on the EST port.
    assert_eq!(demo.curl(&[], "/metrics").status, 404);
}
