//! The frontend's own limits, with the signer and frontend run directly on a demo's
//! configuration: the client network allow-list (others closed at accept), the per-source
//! rate limit (429 + Retry-After), and the TLS handshake deadline.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::demo::*;
use common::signer_bin;

#[test]
fn allow_list_rate_limit_and_handshake_deadline() {
    let mut demo = Demo::start("limits", "der");
    demo.stop();
    let _signer = demo.spawn_ready(&signer_bin(), "signer.yaml", "signer.log");

    // Only a foreign network is allowed: this client is closed at accept.
    demo.edit_frontend("  port:", "  allowed_networks: [192.0.2.0/24]\n  port:");
    {
        let _frontend = demo.spawn_ready(&frontend_bin(), "frontend.yaml", "frontend.log");
        let r = demo.curl(&[], "cacerts");
        assert_eq!(r.status, 0, "a client outside allowed_networks was served");
        assert!(demo.frontend_log_shows("not in server.allowed_networks"));
    }
    // Loopback allowed, at most 3 requests per minute per address.
    demo.edit_frontend("[192.0.2.0/24]", "[192.0.2.0/24, 127.0.0.0/8]");
    demo.edit_frontend(
        "rate_limit: { enabled: false, requests: 100, window: 3600 }",
        "rate_limit: { enabled: true, requests: 3, window: 60 }",
    );
    let _frontend = demo.spawn_ready(&frontend_bin(), "frontend.yaml", "frontend.log");
    for _ in 0..3 {
        assert_eq!(demo.curl(&[], "cacerts").status, 200);
    }
    let limited = demo.curl(&[], "cacerts");
    assert_eq!(limited.status, 429);
    let wait: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");

    // A TCP connection that never starts TLS is closed at the handshake deadline (10 s).
    let mut idle = TcpStream::connect(("127.0.0.1", demo.port)).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(40)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = idle.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the server sent data to a silent client");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(30),
        "{took:?}"
    );
    assert!(demo.frontend_log_shows("TLS handshake with 127.0.0.1"));
    assert!(demo.frontend_log_shows("timed out"));
}
