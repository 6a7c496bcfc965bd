//! The signer stops: the frontend answers 503 with Retry-After within its deadline (never a
//! hang or a 500); the signer comes back: service resumes without restarting the frontend.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::demo::*;
use common::{estctl_bin, signer_bin};

struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn_ready(demo: &Demo, program: &std::path::Path, config: &str, log: &str) -> Guard {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(demo.path(log))
        .unwrap();
    let mut child = Command::new(program)
        .args(["--config", demo.path(config).to_str().unwrap()])
        .env("SOFTHSM2_CONF", demo.path("token/softhsm2.conf"))
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line == "ready" {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("process did not become ready");
    Guard(Some(child))
}

#[test]
fn signer_outage_gives_503_and_service_resumes() {
    let mut demo = Demo::start("outage", "der");
    demo.stop();
    let frontend_bin = estctl_bin().with_file_name("est-frontend");
    let mut signer = spawn_ready(&demo, &signer_bin(), "signer.yaml", "signer.log");
    let _frontend = spawn_ready(&demo, &frontend_bin, "frontend.yaml", "frontend.log");
    let basic = demo.basic();
    let enrol = |demo: &Demo, n: u32| {
        let (_, csr) = demo.csr(&format!("o{n}"), &format!("/CN=outage-pump-{n}"));
        demo.curl(
            &[
                "-u",
                &basic,
                "--data-binary",
                &format!("@{}", csr.display()),
            ],
            "bootstrap",
        )
    };
    assert_eq!(enrol(&demo, 1).status, 200);

    // The signer dies.
    if let Some(mut c) = signer.0.take() {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    let started = Instant::now();
    let r = enrol(&demo, 2);
    let took = started.elapsed();
    assert_eq!(r.status, 503, "{}", r.text());
    let wait: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(wait > 0);
    assert!(r.text().contains("temporarily unavailable"), "{}", r.text());
    assert!(took < Duration::from_secs(15), "took {took:?}");
    // Several more in a row: still 503, still quick.
    for n in 3..6 {
        assert_eq!(enrol(&demo, n).status, 503);
    }

    // The signer comes back; the same frontend process serves again.
    signer = spawn_ready(&demo, &signer_bin(), "signer.yaml", "signer.log");
    assert_eq!(enrol(&demo, 6).status, 200);
    assert_eq!(enrol(&demo, 2).status, 200);
    drop(signer);
}
