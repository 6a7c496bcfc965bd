//! Registration authorities verified by the signer, attacked as a compromised frontend
//! would: issue frames on the frontend socket that set the RA flag with no certificate,
//! with a device's own certificate, with a certificate from another root, without the RA
//! EKU, from an RA the signer does not list, from a revoked one, and outside an RA's scope.
//! Each is refused with its reason and issues nothing; a correctly configured RA, also
//! through an intermediate it sends along, works within its scope.

mod common;

use std::path::Path;

use common::csrgen;
use common::*;
use hsm_est_proto::{ErrorCode, IssueRequest, Operation, Request, Response};

const RA_CONFIG: &str = "registration_authorities:
  trust_anchors: ra-anchors.pem
  authorities:
    - name: ward-gateways
      subject_cn: iqe-gateway-1
      profiles: [iqe-pump]
      cn_pattern: '^ward-[a-z]-pump-[0-9]{3}$'
    - name: through-intermediate
      subject_cn: iqe-gateway-2
      profiles: [iqe-pump]
      cn_pattern: '^icu-pump-[0-9]{3}$'
    - name: retired
      subject_cn: iqe-gateway-old
      profiles: [iqe-pump]
      cn_pattern: '^.*$'
";

struct Ras {
    gateway: Vec<u8>,
    via_intermediate: (Vec<u8>, Vec<u8>),
    no_eku: Vec<u8>,
    unlisted: Vec<u8>,
    retired: Vec<u8>,
    nurse: Vec<u8>,
}

/// An RA root and an RA intermediate under it, a hospital root that is no RA anchor, and
/// certificates from each.
fn make_certificates(dir: &Path) -> Ras {
    self_signed_p256(
        &dir.join("ra-root.key"),
        &dir.join("ra-root.pem"),
        "/CN=Gateway RA Root",
        CA_CERT_EXTENSIONS,
    );
    self_signed_p256(
        &dir.join("hospital-root.key"),
        &dir.join("hospital-root.pem"),
        "/CN=Hospital Root",
        CA_CERT_EXTENSIONS,
    );
    let intermediate = issue_p256_cert(
        dir,
        "ra-int",
        "/CN=Gateway RA Issuing",
        "ra-root",
        CA_CERT_EXTENSIONS,
    );
    std::fs::copy(dir.join("ra-root.pem"), dir.join("ra-anchors.pem")).unwrap();
    let ra = |name: &str, cn: &str, issuer: &str, ext: &[&str]| {
        issue_p256_cert(dir, name, &format!("/CN={cn}"), issuer, ext)
    };
    Ras {
        gateway: ra("gw1", "iqe-gateway-1", "ra-root", RA_CERT_EXTENSIONS),
        via_intermediate: (
            ra("gw2", "iqe-gateway-2", "ra-int", RA_CERT_EXTENSIONS),
            intermediate,
        ),
        no_eku: ra(
            "gw-no-eku",
            "iqe-gateway-1",
            "ra-root",
            CLIENT_CERT_EXTENSIONS,
        ),
        unlisted: ra(
            "gw-unlisted",
            "iqe-gateway-9",
            "ra-root",
            RA_CERT_EXTENSIONS,
        ),
        retired: ra("gw-old", "iqe-gateway-old", "ra-root", RA_CERT_EXTENSIONS),
        nurse: ra(
            "nurse",
            "iqe-gateway-1",
            "hospital-root",
            RA_CERT_EXTENSIONS,
        ),
    }
}

/// An issue frame with the RA flag set, as a compromised frontend could send it.
fn ra_issue(
    app: &Appliance,
    operation: Operation,
    profile: &str,
    cn: &str,
    cert: &[u8],
    chain: &[Vec<u8>],
) -> Response {
    app.client()
        .call(&Request::Issue(IssueRequest {
            operation,
            profile: profile.into(),
            requester: "ra:whatever-the-frontend-says".into(),
            client_ip: "192.0.2.77".into(),
            csr_der: csrgen::csr_for_key(&csrgen::P256Key::generate(), cn),
            client_cert_der: cert.to_vec(),
            client_chain: chain.to_vec(),
            tls_exporter: vec![],
            registration_authority: true,
        }))
        .expect("signer call")
}

#[test]
fn the_signer_decides_who_is_a_registration_authority() {
    let mut app = Appliance::create("ra-signer", "ec-p256");
    let ras = make_certificates(&app.dir);
    let config = std::fs::read_to_string(app.path("signer.yaml")).unwrap();
    std::fs::write(app.path("signer.yaml"), format!("{config}{RA_CONFIG}")).unwrap();
    // The retired gateway's certificate is revoked by fingerprint.
    app.edit_config(
        "  trust_anchors: ra-anchors.pem",
        &format!(
            "  trust_anchors: ra-anchors.pem\n  revoked_certificates: [\"{}\"]",
            hex::encode(hsm_est_pki::sha256(&ras.retired))
        ),
    );
    app.start();

    // A pump of record, which the attacks below try to re-key.
    let pump = csrgen::P256Key::generate();
    let boot = issued(app.issue(
        Operation::Bootstrap,
        "iqe-bootstrap",
        &csrgen::csr_for_key(&pump, "ward-a-pump-001"),
        &[],
    ));
    let before = app.ledger_certificate_count();

    let refusals: Vec<(&str, Response, &str)> = vec![
        (
            "flag without a certificate",
            ra_issue(
                &app,
                Operation::Enroll,
                "iqe-pump",
                "ward-a-pump-002",
                &[],
                &[],
            ),
            "ra.certificate",
        ),
        (
            "flag with a device's own certificate",
            ra_issue(
                &app,
                Operation::Reenroll,
                "iqe-pump",
                "ward-a-pump-001",
                &boot,
                &[],
            ),
            "ra.untrusted",
        ),
        (
            "a clientAuth certificate from a root that is no RA anchor",
            ra_issue(
                &app,
                Operation::Reenroll,
                "iqe-pump",
                "ward-a-pump-001",
                &ras.nurse,
                &[],
            ),
            "ra.untrusted",
        ),
        (
            "the same, enrolling a new name",
            ra_issue(
                &app,
                Operation::Enroll,
                "iqe-pump",
                "ward-a-pump-099",
                &ras.nurse,
                &[],
            ),
            "ra.untrusted",
        ),
        (
            "an RA anchor's certificate without id-kp-cmcRA",
            ra_issue(
                &app,
                Operation::Reenroll,
                "iqe-pump",
                "ward-a-pump-001",
                &ras.no_eku,
                &[],
            ),
            "ra.eku",
        ),
        (
            "an RA the signer does not list",
            ra_issue(
                &app,
                Operation::Enroll,
                "iqe-pump",
                "ward-a-pump-003",
                &ras.unlisted,
                &[],
            ),
            "ra.unknown",
        ),
        (
            "a revoked RA",
            ra_issue(
                &app,
                Operation::Enroll,
                "iqe-pump",
                "ward-a-pump-004",
                &ras.retired,
                &[],
            ),
            "ra.revoked",
        ),
        (
            "the intermediate's RA without its intermediate",
            ra_issue(
                &app,
                Operation::Enroll,
                "iqe-pump",
                "icu-pump-001",
                &ras.via_intermediate.0,
                &[],
            ),
            "ra.untrusted",
        ),
        (
            "a listed RA outside its names",
            ra_issue(
                &app,
                Operation::Enroll,
                "iqe-pump",
                "icu-pump-005",
                &ras.gateway,
                &[],
            ),
            "ra.scope_name",
        ),
        (
            "a listed RA outside its profiles",
            ra_issue(
                &app,
                Operation::Bootstrap,
                "iqe-bootstrap",
                "ward-a-pump-006",
                &ras.gateway,
                &[],
            ),
            "ra.scope_profile",
        ),
        (
            "a listed RA under a profile that accepts no RA",
            ra_issue(
                &app,
                Operation::Enroll,
                "test-san",
                "ward-a-pump-007",
                &ras.gateway,
                &[],
            ),
            "profile.registration_authority",
        ),
    ];
    for (what, answer, reason) in refusals {
        match answer {
            Response::Error(e) => {
                assert_eq!(e.code, ErrorCode::NotAllowed, "{what}: {e:?}");
                assert_eq!(e.reason, reason, "{what}");
            }
            other => panic!("{what}: issued {other:?}"),
        }
    }
    assert_eq!(
        app.ledger_certificate_count(),
        before,
        "something was issued"
    );

    // The configured RA, within its scope: a new pump, and a re-key of the existing one
    // (names of record kept). Through an intermediate it sends along, the other RA too.
    issued(ra_issue(
        &app,
        Operation::Enroll,
        "iqe-pump",
        "ward-b-pump-010",
        &ras.gateway,
        &[],
    ));
    issued(ra_issue(
        &app,
        Operation::Reenroll,
        "iqe-pump",
        "ward-a-pump-001",
        &ras.gateway,
        &[],
    ));
    let (cert, intermediate) = &ras.via_intermediate;
    issued(ra_issue(
        &app,
        Operation::Enroll,
        "iqe-pump",
        "icu-pump-001",
        cert,
        std::slice::from_ref(intermediate),
    ));
    // The audit names the authority the signer verified, not the frontend's string.
    let audit = std::fs::read_to_string(app.path("audit.jsonl")).unwrap();
    assert!(
        audit.contains("\"requester\":\"ra:ward-gateways:"),
        "{audit}"
    );
    assert!(audit.contains("\"requester\":\"ra:through-intermediate:"));
    assert!(!audit
        .lines()
        .any(|l| l.contains("\"event\":\"issued\"") && l.contains("whatever-the-frontend")));
}

#[test]
fn without_registration_authorities_in_its_config_the_signer_accepts_none() {
    let mut app = Appliance::create("ra-none", "ec-p256");
    let ras = make_certificates(&app.dir);
    app.start();
    let before = app.ledger_certificate_count();
    match ra_issue(
        &app,
        Operation::Enroll,
        "iqe-pump",
        "ward-a-pump-001",
        &ras.gateway,
        &[],
    ) {
        Response::Error(e) => assert_eq!(e.reason, "ra.not_configured"),
        other => panic!("issued {other:?}"),
    }
    assert_eq!(app.ledger_certificate_count(), before);
}
