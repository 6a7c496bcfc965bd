//! est-admin under attack, with raw TLS clients from many loopback addresses at once:
//! 300 concurrent password guesses for the admin, then more one at a time, verify at most
//! the lockout's five passwords (failures are reserved before Argon2 runs; the burst mostly
//! meets the verification slots and the connection caps first), nothing answers 200,
//! memory stays bounded, and the real admin, from another network, still gets in. Oversized bodies get
//! 413 without being read.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use base64ct::{Base64, Encoding};
use common::demo::*;
use common::rawtls::{request_on, status, tls_from};

fn get(auth: &str) -> String {
    format!(
        "GET /api/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {}\r\n\
         Connection: close\r\n\r\n",
        Base64::encode_string(auth.as_bytes())
    )
}

/// Peak resident memory of the est-admin serving `demo`, in KiB.
fn admin_peak_kib(demo: &Demo) -> u64 {
    let config = demo.path("admin.yaml").display().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("est-admin") && cmdline.contains(&config) {
            let status = std::fs::read_to_string(entry.path().join("status")).unwrap();
            return status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
                .unwrap();
        }
    }
    panic!("no est-admin process for {config}");
}

#[test]
fn hundreds_of_concurrent_guesses_verify_five_passwords_and_lock_out_nobody_else() {
    let demo = Demo::start("admin-abuse", "base64");
    let (port, ca) = (demo.admin_port, demo.ca());
    let attackers: Vec<_> = (0..300u32)
        .map(|i| {
            let ca = ca.clone();
            std::thread::spawn(move || {
                let from = Ipv4Addr::new(127, 0, 9, 1 + (i % 30) as u8);
                let Some(mut tls) = tls_from(from, port, &ca, b"http/1.1") else {
                    return 0; // closed at accept: a connection cap did its work
                };
                let answer = request_on(
                    &mut tls,
                    get(&format!("admin:guess-number-{i:04}")).as_bytes(),
                    Duration::from_secs(60),
                );
                if answer.is_empty() {
                    0
                } else {
                    status(&answer)
                }
            })
        })
        .collect();
    let statuses: Vec<u16> = attackers.into_iter().map(|t| t.join().unwrap()).collect();
    let count = |s: u16| statuses.iter().filter(|&&x| x == s).count();
    eprintln!(
        "300 guesses: 401 {}, 429 {}, 503 {}, closed {}",
        count(401),
        count(429),
        count(503),
        count(0)
    );
    assert_eq!(count(200), 0);
    assert!(
        statuses.iter().all(|s| matches!(s, 0 | 401 | 429 | 503)),
        "{statuses:?}"
    );
    // Most were turned away by the verification slots (503) or the connection caps
    // (closed) before any password work. Guessing on, one at a time, meets the lockout.
    let mut sequential = Vec::new();
    for i in 0..8 {
        let mut tls = tls_from(Ipv4Addr::new(127, 0, 9, 2), port, &ca, b"http/1.1").unwrap();
        let answer = request_on(
            &mut tls,
            get(&format!("admin:one-at-a-time-{i}")).as_bytes(),
            Duration::from_secs(60),
        );
        sequential.push(status(&answer));
    }
    assert_eq!(sequential.last(), Some(&429), "{sequential:?}");
    assert!(
        sequential.iter().all(|s| matches!(s, 401 | 429)),
        "{sequential:?}"
    );

    // At most the limit's five passwords were verified (and failed): the rest were
    // refused before Argon2.
    let admin = demo.admin_basic();
    let metrics = demo.admin_curl(&["-u", &admin], "/metrics");
    // curl comes from 127.0.0.1: not the attackers' network, not locked out.
    assert_eq!(metrics.status, 200, "{}", metrics.text());
    let failures = sample(&metrics.text(), "hsm_est_admin_login_failures_total").unwrap();
    assert!(failures <= 5.0, "{failures} passwords verified");
    let peak = admin_peak_kib(&demo);
    eprintln!("est-admin peak RSS {} MiB", peak / 1024);
    assert!(peak < 256 * 1024, "est-admin peak RSS {peak} KiB");

    // The real admin from another network gets in; from the attackers' it is locked out.
    let mut elsewhere = tls_from(Ipv4Addr::new(127, 1, 0, 1), port, &ca, b"http/1.1").unwrap();
    let ok = request_on(
        &mut elsewhere,
        get(&admin).as_bytes(),
        Duration::from_secs(30),
    );
    assert_eq!(status(&ok), 200, "{ok}");
    let mut locked = tls_from(Ipv4Addr::new(127, 0, 9, 1), port, &ca, b"http/1.1").unwrap();
    let refused = request_on(&mut locked, get(&admin).as_bytes(), Duration::from_secs(30));
    assert_eq!(status(&refused), 429, "{refused}");
    assert!(refused.to_ascii_lowercase().contains("retry-after:"));
}

#[test]
fn oversized_bodies_get_413_without_being_read() {
    let demo = Demo::start("admin-body", "base64");
    // An announced length far beyond the cap: refused before any of it is read.
    let mut tls = tls_from(
        Ipv4Addr::new(127, 0, 0, 1),
        demo.admin_port,
        &demo.ca(),
        b"http/1.1",
    )
    .unwrap();
    let answer = request_on(
        &mut tls,
        b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 50000000\r\n\r\nuser=",
        Duration::from_secs(30),
    );
    assert_eq!(status(&answer), 413, "{answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"));
    // A body that is sent, over both HTTP versions (curl), 64 KiB against an 8 KiB cap.
    let big = demo.path("big.form");
    std::fs::write(
        &big,
        format!("user=admin&password={}", "a".repeat(64 * 1024)),
    )
    .unwrap();
    for version in ["--http1.1", "--http2"] {
        let r = demo.admin_curl(
            &[version, "--data-binary", &format!("@{}", big.display())],
            "/login",
        );
        assert_eq!(r.status, 413, "{version}: {}", r.text());
        let api = demo.admin_curl(
            &[
                version,
                "-u",
                &demo.admin_basic(),
                "-X",
                "POST",
                "--data-binary",
                &format!("@{}", big.display()),
            ],
            "/api/devices/x/revoke",
        );
        assert_eq!(api.status, 413, "{version}: {}", api.text());
    }
}
