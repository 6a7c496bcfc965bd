//! Group commit: concurrent issuances share commits (one audit fsync and one ledger fsync per
//! batch), never one commit per request. Compared as a ratio reported by the signer itself,
//! not as a timing.

mod common;

use std::sync::{Arc, Barrier};

use common::csrgen::{self, CN};
use common::*;
use hsm_est_proto::client::SignerClient;
use hsm_est_proto::{IssueRequest, Operation, Request, Response};

const CLIENTS: usize = 8;
const PER_CLIENT: usize = 100;

fn stats(app: &Appliance) -> (u64, u64) {
    match app.client().call(&Request::Ping).unwrap() {
        Response::Pong {
            commits, decisions, ..
        } => (commits, decisions),
        other => panic!("{other:?}"),
    }
}

#[test]
fn concurrent_issuances_share_commits() {
    let mut app = Appliance::create("groupcommit", "ec-p256");
    app.start();
    let (c0, d0) = stats(&app);
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|t| {
            let socket = app.socket.clone();
            let barrier = Arc::clone(&barrier);
            // CSRs are made before the race so that requests arrive as fast as possible.
            let csrs: Vec<Vec<u8>> = (0..PER_CLIENT)
                .map(|n| csrgen::csr(&[(CN, &format!("gc-pump-{t}-{n}"))]))
                .collect();
            std::thread::spawn(move || {
                let mut client = SignerClient::connect(&socket).unwrap();
                barrier.wait();
                for csr in csrs {
                    let resp = client
                        .call(&Request::Issue(IssueRequest {
                            operation: Operation::Bootstrap,
                            profile: "iqe-bootstrap".into(),
                            requester: "basic:iqe".into(),
                            client_ip: "192.0.2.20".into(),
                            csr_der: csr,
                            client_cert_der: vec![],
                            client_chain: vec![],
                            tls_exporter: vec![],
                            registration_authority: false,
                        }))
                        .unwrap();
                    assert!(matches!(resp, Response::Issued { .. }), "{resp:?}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (c1, d1) = stats(&app);
    let (commits, decisions) = (c1 - c0, d1 - d0);
    eprintln!("{decisions} decisions in {commits} commits");
    assert_eq!(decisions, (CLIENTS * PER_CLIENT) as u64);
    // One commit per request would make these equal. How much is shared depends on the
    // machine (fsync latency against signing speed); 10 % is a floor with a wide margin
    // (commits were a third to two fifths of decisions on a 2-core machine, debug build).
    assert!(
        commits * 10 <= decisions * 9,
        "{decisions} decisions took {commits} commits: commits are not shared"
    );
}
