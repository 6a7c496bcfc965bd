//! The audit log through the operator's tool: a clean log verifies; deleting, editing or
//! reordering one record is reported at that record; a signer will not start on a log that
//! lost records the ledger had seen.

mod common;

use common::*;
use hsm_est_proto::Operation;

fn verify(app: &Appliance) -> (bool, String) {
    let out = app.estctl(&["audit", "verify", "--config", app.config_arg()]);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn tampering_is_reported_at_the_record() {
    let mut app = Appliance::create("tamper", "ec-p256");
    app.start();
    for i in 0..4 {
        let csr = openssl_csr(
            &app.dir,
            &format!("t{i}"),
            &ec_p256(),
            &format!("/CN=pump-{i}"),
            &[],
        );
        issued(app.issue(Operation::Bootstrap, "iqe-bootstrap", &csr, &[]));
    }
    app.stop();
    let (good, out) = verify(&app);
    assert!(good, "{out}");
    let path = app.path("audit.jsonl");
    let original = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    // ca_key_generated, start, 4 issued, stop.
    assert_eq!(lines.len(), 7, "{original}");

    // Deleting record 4.
    let deleted: Vec<&str> = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, l)| *l)
        .collect();
    std::fs::write(&path, deleted.join("\n") + "\n").unwrap();
    let (good, out) = verify(&app);
    assert!(!good);
    assert!(out.contains("record 4") && out.contains("missing"), "{out}");

    // Editing record 5 (a subject changed after the fact).
    let edited = original.replacen("CN=pump-2", "CN=pump-X", 1);
    assert_ne!(edited, original);
    std::fs::write(&path, &edited).unwrap();
    let (good, out) = verify(&app);
    assert!(!good);
    assert!(out.contains("record 5") && out.contains("altered"), "{out}");

    // Swapping records 5 and 6.
    let mut swapped = lines.clone();
    swapped.swap(4, 5);
    std::fs::write(&path, swapped.join("\n") + "\n").unwrap();
    let (good, out) = verify(&app);
    assert!(!good);
    assert!(out.contains("record 5"), "{out}");

    // Cutting off the end: the ledger remembers the head.
    std::fs::write(&path, lines[..5].join("\n") + "\n").unwrap();
    let (good, out) = verify(&app);
    assert!(!good);
    assert!(out.contains("records removed from the end"), "{out}");
    let refused = app.start_expecting_failure();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("records were removed"));

    // Restored, everything is fine again.
    std::fs::write(&path, &original).unwrap();
    let (good, out) = verify(&app);
    assert!(good, "{out}");
    app.start();
}
