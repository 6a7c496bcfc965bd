//! A gateway that enrols on devices' behalf with its own certificate (a registration
//! authority, RFC 7030 §3.7): its certificate chains to a configured RA trust anchor, not
//! to the device CA. It may enrol any device the profile allows and re-enrol a device with
//! the names of the device's current certificate.

mod common;

/// The signer's side of RA trust: the gateway's anchor, the gateway by its certificate's CN,
/// and its scope.
const RA_SIGNER_CONFIG: &str = "registration_authorities:
  trust_anchors: ra-root.pem
  authorities:
    - name: iqe-gateways
      subject_cn: iqe-gateway-1
      profiles: [iqe-pump]
      cn_pattern: '^ra-pump-[0-9]{3}$'
";

use common::demo::*;
use common::{
    issue_p256_cert, self_signed_p256, signer_bin, CLIENT_CERT_EXTENSIONS, RA_CERT_EXTENSIONS,
};

/// A P-256 client certificate for `subj`, issued by the CA `issuer` (files `<issuer>.pem`
/// and `<issuer>.key`), written to `<name>.pem` and `<name>.key`.
fn client_certificate(demo: &Demo, name: &str, subj: &str, issuer: &str, extensions: &[&str]) {
    issue_p256_cert(&demo.path(""), name, subj, issuer, extensions);
}

#[test]
fn registration_authority_enrols_and_reenrols_on_behalf_of_devices() {
    let mut demo = Demo::start("ra", "der");
    demo.stop();
    let p = |n: &str| demo.path(n).display().to_string();
    // The gateway operator's own CA and the gateway's client certificate.
    self_signed_p256(
        &demo.path("ra-root.key"),
        &demo.path("ra-root.pem"),
        "/CN=IQE Gateway RA Root",
        &[
            "basicConstraints=critical,CA:TRUE",
            "keyUsage=critical,keyCertSign",
        ],
    );
    client_certificate(
        &demo,
        "ra",
        "/CN=iqe-gateway-1",
        "ra-root",
        RA_CERT_EXTENSIONS,
    );
    demo.edit_frontend(
        "  client_ca_file: ca.pem",
        "  client_ca_file: ca.pem\n  ra_trust_anchors: [ra-root.pem]",
    );
    demo.append_signer(RA_SIGNER_CONFIG);
    let _signer = demo.spawn_ready(&signer_bin(), "signer.yaml", "signer.log");
    let _frontend = demo.spawn_ready(&frontend_bin(), "frontend.yaml", "frontend.log");
    let ra_auth = [
        "--cert".to_string(),
        p("ra.pem"),
        "--key".to_string(),
        p("ra.key"),
    ];
    let post = |csr: &std::path::Path, path: &str| {
        let data = format!("@{}", csr.display());
        let mut args: Vec<&str> = ra_auth.iter().map(String::as_str).collect();
        args.extend(["--data-binary", &data]);
        demo.curl(&args, path)
    };

    // Enrolment of a pump the appliance has never seen, by the RA alone.
    let subj = "/CN=ra-pump-001/O=TestHospital/C=US";
    let (_, csr1) = demo.csr("ra1", subj);
    let r = post(&csr1, "simpleenroll");
    assert_eq!(r.status, 200, "{}", r.text());
    // Re-enrolment on the pump's behalf, same names, new key.
    let (_, csr2) = demo.csr("ra2", subj);
    let r = post(&csr2, "simplereenroll");
    assert_eq!(r.status, 200, "{}", r.text());
    // Not with other names, and not for a device that does not exist.
    let (_, csr3) = demo.csr("ra3", "/CN=ra-pump-001/O=Elsewhere/C=US");
    assert_eq!(post(&csr3, "simplereenroll").status, 400);
    let (_, csr4) = demo.csr("ra4", "/CN=ra-pump-404");
    assert_eq!(post(&csr4, "simplereenroll").status, 403);
    // Outside its scope in the signer's configuration: refused.
    let (_, csr5) = demo.csr("ra5", "/CN=icu-pump-001");
    assert_eq!(post(&csr5, "simpleenroll").status, 403);
    // Bootstrap stays HTTP Basic only.
    assert_eq!(post(&csr4, "bootstrap").status, 401);
    let audit = std::fs::read_to_string(demo.path("audit.jsonl")).unwrap();
    // The audit names the authority the signer verified.
    assert!(
        audit.contains("\"requester\":\"ra:iqe-gateways:"),
        "RA identity not audited"
    );
    assert!(audit.contains("\"reason\":\"ra.scope_name\""), "{audit}");
}

/// A clientAuth certificate from a root that the TLS layer accepts (the hospital's root in
/// `client_ca_file`, as when the CA is an intermediate under it) but that is not an RA
/// trust anchor carries no authority: it cannot re-key an existing pump nor enrol a new
/// name without a password.
#[test]
fn a_certificate_from_another_accepted_root_is_not_a_registration_authority() {
    let mut demo = Demo::start("ra-stranger", "der");
    demo.stop();
    let p = |n: &str| demo.path(n).display().to_string();
    let ca_ext = [
        "basicConstraints=critical,CA:TRUE",
        "keyUsage=critical,keyCertSign",
    ];
    self_signed_p256(
        &demo.path("hospital-root.key"),
        &demo.path("hospital-root.pem"),
        "/CN=Hospital Root",
        &ca_ext,
    );
    self_signed_p256(
        &demo.path("ra-root.key"),
        &demo.path("ra-root.pem"),
        "/CN=IQE Gateway RA Root",
        &ca_ext,
    );
    // The nurse's laptop: a proper clientAuth certificate from the hospital's root.
    client_certificate(
        &demo,
        "nurse",
        "/CN=nurse-laptop-17",
        "hospital-root",
        CLIENT_CERT_EXTENSIONS,
    );
    let client_cas = format!(
        "{}{}",
        std::fs::read_to_string(demo.path("ca.pem")).unwrap(),
        std::fs::read_to_string(demo.path("hospital-root.pem")).unwrap()
    );
    std::fs::write(demo.path("client-cas.pem"), client_cas).unwrap();
    // A certificate from the RA root itself, but without id-kp-cmcRA.
    client_certificate(
        &demo,
        "no-eku",
        "/CN=iqe-gateway-1",
        "ra-root",
        CLIENT_CERT_EXTENSIONS,
    );
    demo.edit_frontend(
        "  client_ca_file: ca.pem",
        "  client_ca_file: client-cas.pem\n  ra_trust_anchors: [ra-root.pem]",
    );
    demo.append_signer(RA_SIGNER_CONFIG);
    let _signer = demo.spawn_ready(&signer_bin(), "signer.yaml", "signer.log");
    let _frontend = demo.spawn_ready(&frontend_bin(), "frontend.yaml", "frontend.log");

    // A real pump bootstraps and enrols.
    let subj = "/CN=ward-c-pump-003/O=TestHospital/C=US";
    let (_, boot_csr) = demo.csr("pump", subj);
    let boot = demo.curl(
        &[
            "-u",
            &demo.basic(),
            "--data-binary",
            &format!("@{}", boot_csr.display()),
        ],
        "bootstrap",
    );
    assert_eq!(boot.status, 200, "{}", boot.text());

    let with_cert = |who: &str, csr: &std::path::Path, path: &str| {
        let data = format!("@{}", csr.display());
        demo.curl(
            &[
                "--cert",
                &p(&format!("{who}.pem")),
                "--key",
                &p(&format!("{who}.key")),
                "--data-binary",
                &data,
            ],
            path,
        )
    };
    let nurse = |csr: &std::path::Path, path: &str| with_cert("nurse", csr, path);
    // Re-keying the pump with the nurse's certificate: refused.
    let (_, rekey) = demo.csr("nurse-rekey", subj);
    assert_eq!(nurse(&rekey, "simplereenroll").status, 403);
    // Enrolling a brand-new name without a password: refused.
    let (_, fresh) = demo.csr("nurse-new", "/CN=rogue-pump-1/O=TestHospital/C=US");
    assert_eq!(nurse(&fresh, "simpleenroll").status, 403);
    // The RA root's certificate without the RA EKU passes the frontend's anchor check but
    // not the signer's: neither a re-key nor a new name.
    let (_, rekey2) = demo.csr("no-eku-rekey", subj);
    assert_eq!(with_cert("no-eku", &rekey2, "simplereenroll").status, 403);
    let (_, fresh2) = demo.csr("no-eku-new", "/CN=ra-pump-777/O=TestHospital/C=US");
    assert_eq!(with_cert("no-eku", &fresh2, "simpleenroll").status, 403);
    let audit = std::fs::read_to_string(demo.path("audit.jsonl")).unwrap();
    assert!(!audit.contains("rogue-pump-1\""), "{audit}");
    assert_eq!(audit.matches("\"reason\":\"ra.eku\"").count(), 2, "{audit}");
    assert_eq!(audit.matches("\"event\":\"issued\"").count(), 2, "{audit}");
    assert!(demo.frontend_log_shows("is neither a device's nor a registration authority's"));
}
