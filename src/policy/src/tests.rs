//! Table-driven policy tests on CSRs built in code.

use crate::csrgen;

use super::*;
use csrgen::{C, CN, O, OU};
use hsm_est_pki::csr::parse_csr;

type Case<'a> = (
    &'a str,
    Vec<(der::asn1::ObjectIdentifier, &'a str)>,
    Result<(), &'a str>,
);

fn pump_profile() -> Profile {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../policy/iqe-pump.yaml"
    ))
    .unwrap();
    Profile::from_yaml("iqe-pump.yaml", &text).unwrap()
}

fn reason_of(csr: &[u8]) -> Result<(), &'static str> {
    let parsed = parse_csr(csr).map_err(|_| "csr.der")?;
    pump_profile()
        .evaluate(&parsed)
        .map(|_| ())
        .map_err(|r| r.reason)
}

#[test]
fn subject_rules_table() {
    let long = "a".repeat(65);
    let cases: Vec<Case> = vec![
        ("plain pump", vec![(CN, "ward-a-pump-001")], Ok(())),
        (
            "with the pinned O and C",
            vec![(CN, "icu-pump-042"), (O, "TestHospital"), (C, "US")],
            Ok(()),
        ),
        (
            "pinned O in other case and spacing",
            vec![(CN, "icu-pump-042"), (O, "  testhospital ")],
            Ok(()),
        ),
        (
            "another O",
            vec![(CN, "icu-pump-042"), (O, "Hospital IT")],
            Err("name.pinned"),
        ),
        (
            "requester-chosen OU",
            vec![(CN, "icu-pump-042"), (OU, "Domain Admins")],
            Err("name.attribute"),
        ),
        ("NUL", vec![(CN, "pump\0evil")], Err("name.control_char")),
        (
            "CR LF",
            vec![(CN, "pump\r\nINFO forged")],
            Err("name.control_char"),
        ),
        ("65 chars", vec![(CN, long.as_str())], Err("name.too_long")),
        ("wildcard", vec![(CN, "*.pumps")], Err("name.wildcard")),
        ("upper case", vec![(CN, "Ward-A")], Err("name.cn_pattern")),
        (
            "homoglyph",
            vec![(CN, "pump-\u{0430}")],
            Err("name.non_ascii"),
        ),
        ("no CN", vec![(O, "TestHospital")], Err("name.missing")),
        (
            "two CNs",
            vec![(CN, "a"), (CN, "b")],
            Err("name.multiple_cn"),
        ),
    ];
    for (what, attrs, expected) in cases {
        assert_eq!(reason_of(&csrgen::csr(&attrs)), expected, "{what}");
    }
}

/// The certificate's subject: the requester's CN, then the pinned attributes in the
/// profile's order, whether or not the CSR carried them and wherever it put them.
#[test]
fn pinned_attributes_are_the_profiles() {
    let subject = |attrs: &[(der::asn1::ObjectIdentifier, &str)]| {
        let parsed = parse_csr(&csrgen::csr(attrs)).unwrap();
        pump_profile()
            .evaluate(&parsed)
            .unwrap()
            .subject
            .to_string()
    };
    let expected = "C=US,O=TestHospital,CN=ward-a-pump-001";
    assert_eq!(subject(&[(CN, "ward-a-pump-001")]), expected);
    assert_eq!(
        subject(&[(C, "US"), (O, "testhospital"), (CN, "ward-a-pump-001")]),
        expected
    );
}

#[test]
fn proof_of_possession_table() {
    let attrs = [(CN, "ward-a-pump-001")];
    assert_eq!(reason_of(&csrgen::forged(&attrs)), Err("csr.pop"));
    assert_eq!(
        reason_of(&csrgen::signed_by_other_key(&attrs)),
        Err("csr.pop")
    );
    let mut truncated = csrgen::csr(&attrs);
    truncated.truncate(truncated.len() - 3);
    assert_eq!(reason_of(&truncated), Err("csr.der"));
    let mut trailing = csrgen::csr(&attrs);
    trailing.push(0);
    assert_eq!(reason_of(&trailing), Err("csr.der"));
}

#[test]
fn profile_files_reject_bad_values_with_key_paths() {
    let good = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../policy/iqe-pump.yaml"
    ))
    .unwrap();
    let cases = [
        ("validity_days: 365", "validity_days: 0", "validity_days"),
        ("min_bits: 2048", "min_bits: 1024", "keys.rsa.min_bits"),
        (
            "ec_curves: [p256, p384]",
            "ec_curves: [secp256k1]",
            "keys.ec_curves",
        ),
        ("rsa-pkcs1-sha256,", "sha1-rsa,", "csr_signature_algorithms"),
        (
            "backdate_minutes: 5",
            "backdate_minutes: 600",
            "backdate_minutes",
        ),
        (
            "key_usage: [digital_signature]",
            "key_usage: [key_cert_sign]",
            "key_usage",
        ),
        (
            "cn_pattern: '^[a-z0-9]+(-[a-z0-9]+)*$'",
            "cn_pattern: '[a-z]+'",
            "subject.cn_pattern",
        ),
        (
            "new_devices_per_hour: 10000",
            "new_devices_per_hour: 0",
            "quota.new_devices_per_hour",
        ),
        ("rekey: allowed", "rekey: sometimes", "rekey"),
        (
            "revoke_superseded: rekey",
            "revoke_superseded: sometimes",
            "revoke_superseded",
        ),
        (
            "    O: TestHospital",
            "    OU: TestHospital\n    OU: x",
            "pinned",
        ),
        ("    O: TestHospital", "    CN: pump", "subject.pinned.CN"),
        ("    C: US", "    C: USA", "subject.pinned.C"),
        ("    C: US", "    XX: US", "subject.pinned.XX"),
        (
            "attributes: [CN]",
            "attributes: [CN, O]",
            "subject.pinned.O",
        ),
    ];
    for (from, to, path) in cases {
        let bad = good.replacen(from, to, 1);
        assert_ne!(bad, good, "{from} not found in the profile");
        let err = Profile::from_yaml("p.yaml", &bad).unwrap_err();
        assert!(err.contains(path), "{to}: {err}");
    }
}

#[test]
fn dns_names() {
    assert!(valid_dns_name("pump-1.example.org"));
    assert!(!valid_dns_name("-pump.example.org"));
    assert!(!valid_dns_name("pump..example"));
    assert!(!valid_dns_name("pu_mp.example"));
    assert!(!valid_dns_name(&"a".repeat(64)));
}
