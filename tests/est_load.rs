//! The frontend under hostile load, as anonymous clients would load it: hundreds of wrong
//! logins at once, lockout from elsewhere, huge user names, idle connections that hold
//! slots, a flood of idle connections on the signer socket. Real processes, real TLS; the
//! loopback addresses 127.0.0.1, 127.0.0.2 and 127.1.0.1 are three different clients (the
//! last in another /24 network). No timing assertions: only what was served, counted and
//! closed.

mod common;

use std::io::Read;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use base64ct::{Base64, Encoding};
use common::demo::*;
use common::rawtls::{request_on, status, tls_from};
use common::signer_bin;

const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const NEIGHBOUR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const ELSEWHERE: Ipv4Addr = Ipv4Addr::new(127, 1, 0, 1);

/// The demo, stopped, its frontend config edited, then signer and frontend started as
/// separate processes (so that the frontend's pid and log are ours).
fn appliance(name: &str, edits: &[(&str, &str)]) -> (Demo, ChildGuard, ChildGuard) {
    let mut demo = Demo::start(name, "base64");
    demo.stop();
    for (from, to) in edits {
        demo.edit_frontend(from, to);
    }
    let signer = demo.spawn_ready(&signer_bin(), "signer.yaml", "signer.log");
    let frontend = demo.spawn_ready(&frontend_bin(), "frontend.yaml", "frontend.log");
    (demo, signer, frontend)
}

/// A bootstrap request with HTTP Basic `user:password` and a CSR body.
fn bootstrap_request(user: &str, password: &str, csr_pem: &[u8]) -> Vec<u8> {
    let auth = Base64::encode_string(format!("{user}:{password}").as_bytes());
    let mut r = format!(
        "POST /.well-known/est/bootstrap HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Authorization: Basic {auth}\r\nContent-Type: application/pkcs10\r\n\
         Content-Length: {}\r\n\r\n",
        csr_pem.len()
    )
    .into_bytes();
    r.extend_from_slice(csr_pem);
    r
}

/// One wrong login from `from`, answered (status) or not (0).
fn wrong_login(target: &(u16, PathBuf), from: Ipv4Addr, user: &str, csr: &[u8]) -> u16 {
    let Some(mut tls) = tls_from(from, target.0, &target.1, b"http/1.1") else {
        return 0;
    };
    let answer = request_on(
        &mut tls,
        &bootstrap_request(user, "wrong password", csr),
        Duration::from_secs(60),
    );
    if answer.is_empty() {
        0
    } else {
        status(&answer)
    }
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM")
}

fn pid(child: &ChildGuard) -> u32 {
    child.0.as_ref().unwrap().id()
}

#[test]
fn wrong_logins_by_the_hundred_stay_bounded_and_the_gateway_still_enrols() {
    let (demo, _signer, frontend) = appliance("load-logins", &[]);
    let (_, csr) = demo.csr("attack", "/CN=attack-pump-1");
    let csr = std::fs::read(csr).unwrap();
    let target = (demo.port, demo.ca());
    std::thread::scope(|s| {
        let attackers: Vec<_> = (0..256)
            .map(|i| {
                let (target, csr) = (&target, &csr);
                // Each attacker keeps at it while turned away (503, or closed at accept).
                s.spawn(move || {
                    let mut last = 0;
                    for _ in 0..400 {
                        last = wrong_login(target, ATTACKER, &format!("intruder-{i}"), csr);
                        if last != 503 && last != 0 {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    last
                })
            })
            .collect();
        // The gateway, from its own network, enrols a pump in the middle of it.
        let (_, pump) = demo.csr("pump", "/CN=ward-a-pump-001");
        let answer = demo.curl(
            &[
                "--interface",
                &ELSEWHERE.to_string(),
                "-u",
                &demo.basic(),
                "--data-binary",
                &format!("@{}", pump.display()),
            ],
            "bootstrap",
        );
        assert_eq!(answer.status, 200, "{}", answer.text());
        let statuses: Vec<u16> = attackers.into_iter().map(|h| h.join().unwrap()).collect();
        // Five were verified and refused (401); the address was then locked (429).
        assert_eq!(
            statuses.iter().filter(|s| **s == 401).count(),
            5,
            "{statuses:?}"
        );
        assert_eq!(
            statuses.iter().filter(|s| **s == 429).count(),
            251,
            "{statuses:?}"
        );
    });
    let rss = peak_rss_kib(pid(&frontend));
    eprintln!("est-frontend peak RSS during the attack: {rss} KiB");
    assert!(rss < 256 * 1024, "est-frontend peaked at {rss} KiB");
    // No more verifications than the limit allows ran for the attacker's address.
    let log = demo.frontend_log();
    assert!(
        log.matches("login failed for user intruder-").count() <= 5,
        "{log}"
    );
}

#[test]
fn failures_are_counted_exactly_and_lock_only_the_network_they_came_from() {
    let (demo, _signer, _frontend) = appliance("load-lockout", &[]);
    let (_, csr) = demo.csr("c", "/CN=lock-pump-1");
    let csr = std::fs::read(csr).unwrap();
    let target = (demo.port, demo.ca());
    // 60 concurrent wrong logins for the gateway's name, each retried while busy (503).
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..60)
            .map(|_| {
                let (target, csr) = (&target, &csr);
                s.spawn(move || loop {
                    let st = wrong_login(target, ATTACKER, "demo", csr);
                    if st != 503 && st != 0 {
                        return st;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        55,
        "{statuses:?}"
    );
    assert_eq!(
        demo.frontend_log()
            .matches("login failed for user demo")
            .count(),
        5
    );
    // The right password from the locked network: still locked.
    let (_, pump) = demo.csr("pump", "/CN=lock-pump-2");
    let data = format!("@{}", pump.display());
    let from = |ip: Ipv4Addr| {
        demo.curl(
            &[
                "--interface",
                &ip.to_string(),
                "-u",
                &demo.basic(),
                "--data-binary",
                &data,
            ],
            "bootstrap",
        )
    };
    assert_eq!(from(ATTACKER).status, 429);
    // From another network the gateway logs in.
    let answer = from(ELSEWHERE);
    assert_eq!(answer.status, 200, "{}", answer.text());
}

#[test]
fn a_200_kb_user_name_gets_400_and_a_short_log_line() {
    let (demo, _signer, _frontend) = appliance("load-long-name", &[]);
    let (_, csr) = demo.csr("c", "/CN=long-pump-1");
    let csr = std::fs::read(csr).unwrap();
    let name = "n".repeat(200 * 1024);
    let mut tls = tls_from(NEIGHBOUR, demo.port, &demo.ca(), b"http/1.1").unwrap();
    let answer = request_on(
        &mut tls,
        &bootstrap_request(&name, "x", &csr),
        Duration::from_secs(30),
    );
    assert_eq!(status(&answer), 400, "{answer}");
    assert!(demo.frontend_log_shows("a user name of 204800 bytes"));
    let longest = demo.frontend_log().lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 400, "a log line of {longest} bytes");
}

#[test]
fn one_address_holding_its_idle_connections_does_not_stop_another() {
    let (demo, _signer, _frontend) = appliance(
        "load-idle",
        &[(
            "  bind: [127.0.0.1]",
            "  bind: [127.0.0.1]\n  max_connections: 64\n  \
                 max_connections_per_address: 8\n  idle_timeout_seconds: 3",
        )],
    );
    // Eight idle connections from one address: four after the handshake (HTTP/1.1), four
    // after an HTTP/2 connection preface and nothing more.
    let mut idle: Vec<_> = (0..8)
        .map(|i| {
            let alpn: &[u8] = if i < 4 { b"http/1.1" } else { b"h2" };
            let mut tls = tls_from(ATTACKER, demo.port, &demo.ca(), alpn).expect("handshake");
            if i >= 4 {
                use std::io::Write;
                tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
                tls.flush().unwrap();
            }
            tls
        })
        .collect();
    // A ninth from that address is closed at accept ...
    assert!(tls_from(ATTACKER, demo.port, &demo.ca(), b"http/1.1").is_none());
    assert!(demo.frontend_log_shows("that address holds 8 connections"));
    // ... and a client from another address is served meanwhile.
    let answer = demo.curl(&["--interface", &NEIGHBOUR.to_string()], "cacerts");
    assert_eq!(answer.status, 200);
    // The idle ones are closed by the idle timeout: each read ends (EOF or reset), never
    // blocking for the full minute the client waits.
    for tls in &mut idle {
        let mut buf = [0u8; 1024];
        loop {
            match tls.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => continue, // an HTTP/2 SETTINGS frame, then the close
            }
        }
    }
    assert!(demo.frontend_log_shows("closed: idle for 3 s"));
}

#[test]
fn a_flood_of_idle_connections_on_the_frontend_socket_does_not_lock_out_the_operator() {
    let demo = Demo::start("load-signer-flood", "base64");
    // Everything the frontend's socket will take, and more, all silent.
    let socket = demo.path("frontend.sock");
    let flood: Vec<_> = (0..300)
        .filter_map(|_| std::os::unix::net::UnixStream::connect(&socket).ok())
        .collect();
    assert!(flood.len() >= 256, "only {} connections", flood.len());
    let out = demo.estctl(&[
        "device",
        "list",
        "--config",
        demo.path("signer.yaml").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("device(s)"));
    drop(flood);
}
