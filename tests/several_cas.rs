//! Several CAs in one signer: the demo's default CA for the pumps (label `iqe`) and a
//! second CA, `staff`, with its own key in the same SoftHSM token, for a second label. The
//! real est-signer and est-frontend, curl, and OpenSSL's `verify`, `crl` and `ocsp`.

mod common;

use std::path::Path;

use hsm_est_proto::client::SignerClient;
use hsm_est_proto::Operation;

use common::demo::*;
use common::{ok, signer_bin};

/// `openssl verify` of `cert` against the one CA certificate in `ca`.
fn verifies(cert: &Path, ca: &Path) -> bool {
    std::process::Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(ca)
        .arg(cert)
        .output()
        .unwrap()
        .status
        .success()
}

fn issued_records(demo: &Demo) -> usize {
    std::fs::read_to_string(demo.path("audit.jsonl"))
        .unwrap()
        .matches("\"event\":\"issued\"")
        .count()
}

#[test]
fn two_cas_two_labels_each_issue_revoke_and_answer_for_their_own() {
    let publication = free_port();
    let p = publication.to_string();
    let mut demo = Demo::start_with("several-cas", "der", &["--publication-port", &p]);
    demo.stop();

    // A second CA: its key in the same token, its chain, its CRL file; two profiles that
    // name it, and a label that serves them.
    demo.append_signer(
        "cas:\n  - name: staff\n    key_label: hsm-est-demo-staff-ca\n    \
         chain_file: staff-ca.pem\n    crl_file: staff.crl\n",
    );
    let created = ok(&demo.estctl(&[
        "ca",
        "init",
        "staff",
        "--config",
        &demo.signer_config(),
        "--subject",
        "CN=Staff Device CA,O=TestHospital,C=US",
    ]));
    assert!(created.contains("CA staff created"), "{created}");
    for (from, to) in [
        ("iqe-bootstrap", "staff-bootstrap"),
        ("iqe-pump", "staff-pump"),
    ] {
        let text = std::fs::read_to_string(demo.path(&format!("policy/{from}.yaml"))).unwrap();
        let text = text
            .replacen(&format!("name: {from}"), &format!("name: {to}"), 1)
            .replace("/crl\n", "/crl/staff\n");
        std::fs::write(
            demo.path(&format!("policy/{to}.yaml")),
            format!("{text}ca: staff\n"),
        )
        .unwrap();
    }
    demo.edit_frontend(
        "labels:\n",
        "labels:\n  staff:\n    profiles: { bootstrap: staff-bootstrap, enroll: staff-pump, \
         reenroll: staff-pump }\n",
    );
    // TLS accepts client certificates of both CAs; which label takes which is the
    // signer's decision (and the frontend's first check).
    let ca = demo.ca();
    let staff_ca = demo.path("staff-ca.pem");
    let both = format!(
        "{}{}",
        std::fs::read_to_string(&ca).unwrap(),
        std::fs::read_to_string(&staff_ca).unwrap()
    );
    std::fs::write(demo.path("device-cas.pem"), both).unwrap();
    demo.edit_frontend("client_ca_file: ca.pem", "client_ca_file: device-cas.pem");
    let shown = ok(&demo.estctl(&["ca", "show", "--config", &demo.signer_config()]));
    assert!(
        shown.contains("CA default") && shown.contains("CA staff"),
        "{shown}"
    );

    let _signer = demo.spawn_ready(&signer_bin(), "signer.yaml", "signer.log");
    let _frontend = demo.spawn_ready(&frontend_bin(), "frontend.yaml", "frontend.log");
    let basic = demo.basic();

    // Each label's cacerts is its own CA.
    for (label, subject, other) in [
        ("iqe", "hsm-est Demo Device CA", "Staff Device CA"),
        ("staff", "Staff Device CA", "hsm-est Demo Device CA"),
    ] {
        let answer = demo.curl(&[], &format!("{label}/cacerts"));
        assert_eq!(answer.status, 200);
        let certs = pkcs7_certs(&answer.body_file);
        assert!(certs.contains(subject) && !certs.contains(other), "{certs}");
    }

    // Each label issues under its own CA, and only that CA's chain verifies.
    let (_, pump_csr) = demo.csr("pump", "/CN=pump-a1/O=TestHospital/C=US");
    let pump = demo.pem_of(
        &demo.post_csr(&["-u", &basic], &pump_csr, "iqe/bootstrap"),
        "pump.pem",
    );
    let (nurse_key, nurse_csr) = demo.csr("nurse", "/CN=nurse-1/O=TestHospital/C=US");
    let nurse_boot = demo.pem_of(
        &demo.post_csr(&["-u", &basic], &nurse_csr, "staff/bootstrap"),
        "nurse-boot.pem",
    );
    assert!(verifies(&pump, &ca) && !verifies(&pump, &staff_ca));
    assert!(verifies(&nurse_boot, &staff_ca) && !verifies(&nurse_boot, &ca));

    // Enrolment with the bootstrap certificate, on the staff label: a staff certificate.
    let (nurse_key2, nurse_csr2) = demo.csr("nurse2", "/CN=nurse-1/O=TestHospital/C=US");
    let auth = tls_args(&nurse_boot, &nurse_key);
    let auth: Vec<&str> = auth.iter().map(String::as_str).collect();
    let nurse = demo.pem_of(
        &demo.post_csr(&auth, &nurse_csr2, "staff/simpleenroll"),
        "nurse.pem",
    );
    assert!(verifies(&nurse, &staff_ca) && !verifies(&nurse, &ca));

    // A staff certificate renews nothing on the pumps' label, over HTTPS ...
    let issued_before = issued_records(&demo);
    let auth = tls_args(&nurse, &nurse_key2);
    let auth: Vec<&str> = auth.iter().map(String::as_str).collect();
    let (_, nurse_csr3) = demo.csr("nurse3", "/CN=nurse-1/O=TestHospital/C=US");
    for path in ["iqe/simplereenroll", "iqe/simpleenroll"] {
        assert_eq!(
            demo.post_csr(&auth, &nurse_csr3, path).status,
            403,
            "{path}"
        );
    }
    // ... nor through the signer's own socket, as a compromised frontend would send it:
    // the signer verifies which CA issued the certificate itself.
    // A second staff device, bootstrapped only: its staff bootstrap certificate enrols
    // nothing under the pumps' profile either.
    let (nurse2_key, nurse2_csr) = demo.csr("nurse-b", "/CN=nurse-2/O=TestHospital/C=US");
    let nurse2_boot = demo.pem_of(
        &demo.post_csr(&["-u", &basic], &nurse2_csr, "staff/bootstrap"),
        "nurse2-boot.pem",
    );
    let issued_before = issued_before + 1;
    let mut client = SignerClient::connect(&demo.path("frontend.sock")).unwrap();
    for (op, cn, cert, key) in [
        (Operation::Reenroll, "nurse-1", &nurse, &nurse_key2),
        (Operation::Enroll, "nurse-2", &nurse2_boot, &nurse2_key),
    ] {
        let csr_der = common::openssl_csr_for_key(
            &demo.dir,
            &format!("forged-{cn}"),
            key,
            &format!("/CN={cn}/O=TestHospital/C=US"),
            &[],
        );
        let answer = client
            .call(&common::issue_request(
                op,
                "iqe-pump",
                &csr_der,
                &pem_to_der(cert),
            ))
            .unwrap();
        let (_, reason) = common::refused(answer);
        assert_eq!(reason, "cert.foreign", "{op:?}");
    }
    assert_eq!(issued_records(&demo), issued_before, "something was issued");
    // Its own label renews it.
    let renewed = demo.post_csr(&auth, &nurse_csr3, "staff/simplereenroll");
    assert_eq!(renewed.status, 200, "{}", renewed.text());
    let renewed = demo.pem_of(&renewed, "nurse-renewed.pem");
    assert!(verifies(&renewed, &staff_ca));

    // CRLs per CA: the staff CA's lists the revoked staff certificate, signed by that CA;
    // the default CA's never names it. Both files follow within seconds.
    let renewed_serial = serial_hex(&renewed);
    ok(&demo.estctl(&[
        "device",
        "revoke",
        "--config",
        &demo.signer_config(),
        "nurse-1",
    ]));
    let (staff_crl, default_crl) = (demo.path("staff.crl"), demo.path("ca.crl"));
    let mut listed = false;
    for _ in 0..40 {
        if staff_crl.exists() && crl_text(&staff_crl).contains(&renewed_serial) {
            listed = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(listed, "staff.crl does not list {renewed_serial}");
    let staff_text = crl_text(&staff_crl);
    assert!(staff_text.contains("cn = staff device ca"), "{staff_text}");
    let default_text = crl_text(&default_crl);
    assert!(
        !default_text.contains(&renewed_serial) && default_text.contains("cn = hsm-est demo"),
        "{default_text}"
    );
    let verified = std::process::Command::new("openssl")
        .args(["crl", "-inform", "DER", "-noout", "-in"])
        .arg(&staff_crl)
        .arg("-CAfile")
        .arg(&staff_ca)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&verified.stderr).contains("verify OK"),
        "{verified:?}"
    );
    // The publication listener serves each CA's CRL; an unknown name is 404.
    let http = |path: &str| {
        let out = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("http://127.0.0.1:{publication}{path}"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(http("/crl/staff"), "200");
    assert_eq!(http("/crl"), "200");
    assert_eq!(http("/crl/pharmacy"), "404");
    assert_eq!(http("/crl/..%2Fetc"), "404");
    // Each CA's CRL numbers are its own: a CRL generated for one leaves the other's.
    let number = |text: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix("crl number").map(|v| v.to_string()))
            .unwrap_or_else(|| panic!("no CRL number in {text}"))
    };
    let staff_number = || {
        number(
            &ok(&demo.estctl(&[
                "crl",
                "show",
                "--config",
                &demo.signer_config(),
                "--ca",
                "staff",
            ]))
            .to_ascii_lowercase(),
        )
    };
    let staff_before = staff_number();
    ok(&demo.estctl(&["crl", "generate", "--config", &demo.signer_config()]));
    let staff_after = staff_number();
    assert_eq!(staff_before, staff_after);

    // OCSP per CA (OpenSSL's client): the staff CA answers revoked for its certificate,
    // the default CA good for the pump; asked under the other CA, a serial is unknown.
    let ocsp = |issuer: &Path, cert: &Path| openssl_ocsp(publication, issuer, cert);
    let answer = ocsp(&staff_ca, &renewed);
    assert!(answer.contains(": revoked"), "{answer}");
    let answer = ocsp(&ca, &pump);
    assert!(answer.contains(": good"), "{answer}");
    let asked_wrong = ok(&demo.estctl(&[
        "ocsp",
        "status",
        "--config",
        &demo.signer_config(),
        "--serial",
        &renewed_serial,
    ]));
    assert!(asked_wrong.contains(": unknown"), "{asked_wrong}");

    // The audit chain and the ledger agree, each CA's records naming it.
    let out = ok(&demo.estctl(&["audit", "verify", "--config", &demo.signer_config()]));
    assert!(out.contains("ledger agrees"), "{out}");
    let log = std::fs::read_to_string(demo.path("audit.jsonl")).unwrap();
    assert!(
        log.contains("\"ca\":\"staff\""),
        "no record names the staff CA"
    );
}

fn pem_to_der(pem: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(pem).unwrap();
    hsm_est_pki::pem_certificates(&text)
        .unwrap()
        .into_iter()
        .next()
        .unwrap()
}

/// A profile that names a CA the signer does not hold stops the signer at start, and
/// `estctl check-config` says which.
#[test]
fn a_profile_naming_a_missing_ca_stops_the_signer_at_start() {
    let mut demo = Demo::start("several-cas-missing", "der");
    demo.stop();
    let text = std::fs::read_to_string(demo.path("policy/iqe-pump.yaml")).unwrap();
    std::fs::write(
        demo.path("policy/pharmacy.yaml"),
        format!(
            "{}ca: pharmacy\n",
            text.replacen("name: iqe-pump", "name: pharmacy-pump", 1)
        ),
    )
    .unwrap();
    let check = demo.estctl(&["check-config", "--config", &demo.signer_config()]);
    assert!(!check.status.success());
    assert!(
        String::from_utf8_lossy(&check.stderr).contains("\"pharmacy\""),
        "{check:?}"
    );
    let out = std::process::Command::new(signer_bin())
        .arg("--config")
        .arg(demo.path("signer.yaml"))
        .env("SOFTHSM2_CONF", demo.path("token/softhsm2.conf"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pharmacy"),
        "{out:?}"
    );
    // A `cas` entry with the default CA's key label is refused as a configuration error.
    demo.append_signer(
        "cas:\n  - name: pharmacy\n    key_label: hsm-est-demo-ca\n    chain_file: ph.pem\n",
    );
    let check = demo.estctl(&["check-config", "--config", &demo.signer_config()]);
    assert!(
        String::from_utf8_lossy(&check.stderr).contains("cas[0].key_label"),
        "{check:?}"
    );
}
