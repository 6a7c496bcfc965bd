//! CA rollover (`estctl ca rollover`) on a running appliance's token: the new key and CA
//! certificate, the link certificates in `cacerts`, a pump renewing onto the new key with
//! its old certificate, and the old key still publishing CRLs and OCSP answers for what it
//! issued. The real est-signer and est-frontend, curl, OpenSSL and pkilint.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::demo::*;
use common::{ok, openssl, pkilint, run, signer_bin};

/// `openssl verify -x509_strict` of `cert` with `ca` trusted and `untrusted` as
/// intermediates.
fn verifies(ca: &Path, untrusted: Option<&Path>, cert: &Path) -> bool {
    let mut cmd = Command::new("openssl");
    cmd.args(["verify", "-x509_strict", "-CAfile"]).arg(ca);
    if let Some(u) = untrusted {
        cmd.arg("-untrusted").arg(u);
    }
    cmd.arg(cert).output().unwrap().status.success()
}

/// The PEM certificates of `pem`, each in its own file `<name>-<i>.pem`.
fn split_pem(demo: &Demo, pem: &str, name: &str) -> Vec<PathBuf> {
    pem.split("-----END CERTIFICATE-----")
        .filter(|p| p.contains("-----BEGIN CERTIFICATE-----"))
        .enumerate()
        .map(|(i, part)| {
            let start = part.find("-----BEGIN CERTIFICATE-----").unwrap();
            let path = demo.path(&format!("{name}-{i}.pem"));
            std::fs::write(
                &path,
                format!("{}-----END CERTIFICATE-----\n", &part[start..]),
            )
            .unwrap();
            path
        })
        .collect()
}

fn lint(args: &[&Path], linter: &str) {
    let mut cmd = pkilint(linter);
    cmd.args(["lint", "-s", "WARNING"]);
    for a in args {
        cmd.arg(a);
    }
    ok(&run(&mut cmd));
}

#[test]
fn a_rollover_links_the_keys_moves_renewals_and_keeps_the_old_key_answering() {
    let publication = free_port();
    let p = publication.to_string();
    let mut demo = Demo::start_with("ca-rollover", "der", &["--publication-port", &p]);
    let basic = demo.basic();
    let subj = "/CN=pump-roll-1/O=TestHospital/C=US";
    // A pump enrolled under the first key.
    let (boot_key, boot_csr) = demo.csr("boot", subj);
    let boot = demo.pem_of(
        &demo.post_csr(&["-u", &basic], &boot_csr, "iqe/bootstrap"),
        "boot.pem",
    );
    let (old_key, old_csr) = demo.csr("old", subj);
    let auth = tls_args(&boot, &boot_key);
    let auth: Vec<&str> = auth.iter().map(String::as_str).collect();
    let old = demo.pem_of(
        &demo.post_csr(&auth, &old_csr, "iqe/simpleenroll"),
        "old.pem",
    );
    demo.stop();

    let old_ca = demo.ca();
    let out = ok(&demo.estctl(&["ca", "rollover", "--config", &demo.signer_config()]));
    assert!(
        out.contains("rolled over to generation 2") && out.contains("hsm-est-demo-ca-g2"),
        "{out}"
    );
    let (new_ca, links) = (demo.path("ca-g2.pem"), demo.path("ca-g2-links.pem"));
    // The new CA certificate and both links are sound X.509 (pkilint), and each link is
    // what its name says: NewWithOld certifies the new key under the old one, OldWithNew
    // the old key under the new one.
    let link_files = split_pem(&demo, &std::fs::read_to_string(&links).unwrap(), "link");
    assert_eq!(link_files.len(), 2);
    let (new_with_old, old_with_new) = (&link_files[0], &link_files[1]);
    for cert in [&new_ca, new_with_old, old_with_new] {
        lint(&[cert], "lint_pkix_cert");
    }
    assert!(verifies(&old_ca, None, new_with_old));
    assert!(verifies(&new_ca, None, old_with_new));
    assert!(!verifies(&new_ca, None, new_with_old));
    let key_of = |c: &Path| openssl(&["x509", "-noout", "-pubkey", "-in", c.to_str().unwrap()]);
    assert_eq!(key_of(new_with_old), key_of(&new_ca));
    assert_eq!(key_of(old_with_new), key_of(&old_ca));

    // Into service, as the command printed: the new key current, the old one listed as
    // the previous generation with its CRL file, the new key with a CRL file of its own.
    demo.edit(
        "signer.yaml",
        "  key_label: hsm-est-demo-ca\n",
        "  key_label: hsm-est-demo-ca-g2\n",
    );
    demo.edit(
        "signer.yaml",
        "ca:\n  chain_file: ca.pem\n",
        "ca:\n  chain_file: ca-g2.pem\n  generation: 2\n  links_file: ca-g2-links.pem\n  \
         previous:\n    - generation: 1\n      key_label: hsm-est-demo-ca\n      \
         chain_file: ca.pem\n      crl_file: ca.crl\n",
    );
    demo.edit("signer.yaml", "  file: ca.crl\n", "  file: ca-g2.crl\n");
    let both = format!(
        "{}{}",
        std::fs::read_to_string(&old_ca).unwrap(),
        std::fs::read_to_string(&new_ca).unwrap()
    );
    std::fs::write(demo.path("device-cas.pem"), both).unwrap();
    demo.edit_frontend("client_ca_file: ca.pem", "client_ca_file: device-cas.pem");
    let checked = ok(&demo.estctl(&["check-config", "--config", &demo.signer_config()]));
    assert!(!checked.contains("does not exist"), "{checked}");
    let _signer = demo.spawn_ready(&signer_bin(), "signer.yaml", "signer.log");
    let _frontend = demo.spawn_ready(&frontend_bin(), "frontend.yaml", "frontend.log");

    // cacerts during the overlap: the new CA, NewWithOld, OldWithNew and the old CA
    // certificate (RFC 7030 §4.1.3; a certs-only SET, so in DER order).
    let cacerts = demo.curl(&[], "iqe/cacerts");
    assert_eq!(cacerts.status, 200);
    let served = split_pem(&demo, &pkcs7_certs(&cacerts.body_file), "served");
    let fingerprint = |c: &Path| {
        openssl(&[
            "x509",
            "-noout",
            "-fingerprint",
            "-sha256",
            "-in",
            c.to_str().unwrap(),
        ])
    };
    let mut got: Vec<String> = served.iter().map(|c| fingerprint(c)).collect();
    let mut want: Vec<String> = [&new_ca, new_with_old, old_with_new, &old_ca]
        .into_iter()
        .map(|c| fingerprint(c))
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);

    // The pump renews with the certificate the old key gave it, onto the new key.
    let (new_key, new_csr) = demo.csr("new", subj);
    let auth = tls_args(&old, &old_key);
    let auth: Vec<&str> = auth.iter().map(String::as_str).collect();
    let renewed = demo.pem_of(
        &demo.post_csr(&auth, &new_csr, "iqe/simplereenroll"),
        "renewed.pem",
    );
    assert!(verifies(&new_ca, None, &renewed));
    assert!(!verifies(&old_ca, None, &renewed));
    // A relying party that still trusts only the old CA gets there through NewWithOld.
    assert!(verifies(&old_ca, Some(new_with_old), &renewed));
    // The old certificate still verifies against the old chain until it expires.
    assert!(verifies(&old_ca, None, &old));
    let leaf = split_pem(&demo, &std::fs::read_to_string(&renewed).unwrap(), "leaf");
    lint(&[&new_ca, &leaf[0]], "lint_pkix_signer_signee_cert_chain");
    // The renewed certificate renews again on the new key; the old one no longer does
    // (re-keyed, so superseded and revoked).
    let (_, again_csr) = demo.csr("again", subj);
    assert_eq!(
        demo.post_csr(&auth, &again_csr, "iqe/simplereenroll")
            .status,
        403
    );
    let auth2 = tls_args(&renewed, &new_key);
    let auth2: Vec<&str> = auth2.iter().map(String::as_str).collect();
    let again = demo.post_csr(&auth2, &again_csr, "iqe/simplereenroll");
    assert_eq!(again.status, 200, "{}", again.text());

    // The old key keeps publishing its CRL, where its certificates point (/crl): it lists
    // the superseded certificate and is signed with the old key; the new key's CRL is
    // its own.
    let old_serial = serial_hex(&old);
    let (old_crl, new_crl) = (demo.path("ca.crl"), demo.path("ca-g2.crl"));
    let mut listed = false;
    for _ in 0..40 {
        if old_crl.exists() && crl_text(&old_crl).contains(&old_serial) {
            listed = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(listed, "the old key's CRL does not list {old_serial}");
    for (crl, ca) in [(&old_crl, &old_ca), (&new_crl, &new_ca)] {
        let v = Command::new("openssl")
            .args(["crl", "-inform", "DER", "-noout", "-in"])
            .arg(crl)
            .arg("-CAfile")
            .arg(ca)
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&v.stderr).contains("verify OK"),
            "{}: {v:?}",
            crl.display()
        );
    }
    assert!(!crl_text(&new_crl).contains(&old_serial));
    ok(&run(pkilint("lint_crl")
        .args(["lint", "-t", "CRL", "-p", "PKIX", "-s", "WARNING"])
        .arg(&old_crl)));
    let http = |path: &str| {
        let out = Command::new("curl")
            .args(["-s", "-o"])
            .arg(demo.path("fetched.crl"))
            .args(["-w", "%{http_code}"])
            .arg(format!("http://127.0.0.1:{publication}{path}"))
            .output()
            .unwrap();
        let code = String::from_utf8_lossy(&out.stdout).to_string();
        (
            code,
            std::fs::read(demo.path("fetched.crl")).unwrap_or_default(),
        )
    };
    // The listener keeps a CRL 5 seconds: each path serves its key's file within that.
    for (path, file) in [("/crl", &old_crl), ("/crl/default-g2", &new_crl)] {
        let mut same = false;
        for _ in 0..40 {
            let (code, body) = http(path);
            assert_eq!(code, "200", "{path}");
            if body == std::fs::read(file).unwrap() {
                same = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        assert!(same, "{path} does not serve {}", file.display());
    }

    // OCSP: each key answers for what it issued.
    let ocsp = |issuer: &Path, cert: &Path| openssl_ocsp(publication, issuer, cert);
    let answer = ocsp(&old_ca, &old);
    assert!(answer.contains(": revoked"), "{answer}");
    let answer = ocsp(&new_ca, &renewed);
    assert!(answer.contains(": revoked"), "{answer}");
    let newest = demo.pem_of(&again, "newest.pem");
    let answer = ocsp(&new_ca, &newest);
    assert!(answer.contains(": good"), "{answer}");

    // New devices get the new key; the record holds together.
    let (_, fresh_csr) = demo.csr("fresh", "/CN=pump-roll-2/O=TestHospital/C=US");
    let fresh = demo.pem_of(
        &demo.post_csr(&["-u", &basic], &fresh_csr, "iqe/bootstrap"),
        "fresh.pem",
    );
    assert!(verifies(&new_ca, None, &fresh));
    let out = ok(&demo.estctl(&["audit", "verify", "--config", &demo.signer_config()]));
    assert!(out.contains("ledger agrees"), "{out}");
    let log = std::fs::read_to_string(demo.path("audit.jsonl")).unwrap();
    assert!(log.contains("\"event\":\"ca_rolled_over\""));
    assert!(log.contains("\"ca\":\"default-g2\""));
}
