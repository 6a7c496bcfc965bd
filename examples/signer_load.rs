//! Issuance load against a running signer, through its socket (no TLS, no HTTP): the
//! signer's own ceiling. Run against the demo (softhsm/demo.sh) in release mode:
//!
//!   cargo run --release --example signer_load -- demo/frontend.sock 8 4000
//!
//! Arguments: socket path, concurrent clients, total issuances. CSRs (P-256) are made
//! before the clock starts. Prints issuances per second and how many commits they took.

use std::sync::{Arc, Barrier};
use std::time::Instant;

use hsm_est_proto::client::SignerClient;
use hsm_est_proto::{IssueRequest, Operation, Request, Response};

#[path = "../tests/common/csrgen.rs"]
#[allow(dead_code)]
mod csrgen;

fn stats(socket: &str) -> (u64, u64) {
    match SignerClient::connect(socket.as_ref())
        .and_then(|mut c| c.call(&Request::Ping))
        .expect("ping the signer")
    {
        Response::Pong {
            commits, decisions, ..
        } => (commits, decisions),
        other => panic!("unexpected answer {other:?}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let socket = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "demo/frontend.sock".into());
    let clients: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(8);
    let total: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(4000);
    let per_client = total / clients;
    let run = std::process::id();
    let work: Vec<Vec<Vec<u8>>> = (0..clients)
        .map(|t| {
            (0..per_client)
                .map(|n| csrgen::csr(&[(csrgen::CN, &format!("load-{run}-{t}-{n}"))]))
                .collect()
        })
        .collect();
    let (c0, d0) = stats(&socket);
    let barrier = Arc::new(Barrier::new(clients + 1));
    let threads: Vec<_> = work
        .into_iter()
        .map(|csrs| {
            let socket = socket.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut client = SignerClient::connect(socket.as_ref()).expect("connect");
                barrier.wait();
                for csr in csrs {
                    let resp = client
                        .call(&Request::Issue(IssueRequest {
                            operation: Operation::Bootstrap,
                            profile: "iqe-bootstrap".into(),
                            requester: "load:signer_load".into(),
                            client_ip: "127.0.0.1".into(),
                            csr_der: csr,
                            client_cert_der: vec![],
                            client_chain: vec![],
                            tls_exporter: vec![],
                            registration_authority: false,
                        }))
                        .expect("issue");
                    assert!(matches!(resp, Response::Issued { .. }), "{resp:?}");
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for t in threads {
        t.join().expect("client thread");
    }
    let secs = start.elapsed().as_secs_f64();
    let (c1, d1) = stats(&socket);
    let n = per_client * clients;
    println!(
        "{n} issuances by {clients} clients in {secs:.2} s: {:.0}/s; {} decisions in {} commits",
        n as f64 / secs,
        d1 - d0,
        c1 - c0
    );
}
