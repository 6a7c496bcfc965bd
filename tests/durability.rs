//! Crash safety: kill -9 the signer while 8 clients issue in a loop. After a restart every
//! certificate a client received is in the ledger, byte for byte, and the audit chain
//! verifies. Repeated over several crashes.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::csrgen::{self, CN};
use common::*;
use hsm_est_proto::client::SignerClient;
use hsm_est_proto::{IssueRequest, Operation, Request, Response};
use hsm_est_signer::ledger::Ledger;

const CLIENTS: usize = 8;
const CRASHES: usize = 3;

/// (serial, certificate) pairs the clients received.
type Received = Arc<Mutex<Vec<(Vec<u8>, Vec<u8>)>>>;

#[test]
fn every_certificate_a_client_received_survives_kill_9() {
    let mut app = Appliance::create("crash", "ec-p256");
    let received: Received = Arc::new(Mutex::new(Vec::new()));
    for round in 0..CRASHES {
        app.start();
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..CLIENTS)
            .map(|t| {
                let socket = app.socket.clone();
                let received = Arc::clone(&received);
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let Ok(mut client) = SignerClient::connect(&socket) else {
                        return 0;
                    };
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let cn = format!("crash-pump-{round}-{t}-{n}");
                        let req = Request::Issue(IssueRequest {
                            operation: Operation::Bootstrap,
                            profile: "iqe-bootstrap".into(),
                            requester: "basic:iqe".into(),
                            client_ip: "192.0.2.10".into(),
                            csr_der: csrgen::csr(&[(CN, &cn)]),
                            client_cert_der: vec![],
                            client_chain: vec![],
                            tls_exporter: vec![],
                            registration_authority: false,
                        });
                        match client.call(&req) {
                            Ok(Response::Issued { serial, cert_der }) => {
                                received.lock().unwrap().push((serial, cert_der));
                                n += 1;
                            }
                            Ok(other) => panic!("unexpected answer {other:?}"),
                            // The signer was killed under us: this is the crash.
                            Err(_) => break,
                        }
                    }
                    n
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(1500));
        app.kill9();
        stop.store(true, Ordering::Relaxed);
        let issued_this_round: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert!(
            issued_this_round > 0,
            "round {round}: nothing was issued before the kill"
        );
    }
    app.start();
    let ledger = app.ledger();
    let received = received.lock().unwrap();
    for (serial, cert) in received.iter() {
        let stored = ledger
            .certificate(serial)
            .unwrap()
            .unwrap_or_else(|| panic!("certificate {} lost", hex::encode(serial)));
        assert_eq!(&stored.record.der, cert);
    }
    let out = ok(&app.estctl(&["audit", "verify", "--config", app.config_arg()]));
    assert!(out.contains("audit log ok"), "{out}");
    eprintln!(
        "{} certificates received across {CRASHES} crashes; all on record",
        received.len()
    );
}
