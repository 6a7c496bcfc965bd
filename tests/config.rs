//! Every shipped config and profile parses, and an unknown key injected into any table of
//! any of them is rejected with the key named (hickory-dns style).

use std::path::Path;

use hsm_est_policy::{Policy, Profile};
use hsm_est_signer::config::SignerConfig;

const SIGNER_CONFIGS: &[&str] = &["config/signer.yaml", "config/signer-iqe.yaml"];

fn repo(p: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// The shipped configs name the production users; map them to ids that exist here.
fn localise(text: &str) -> String {
    text.replace("[est-frontend]", "[65534]")
        .replace("[est-admin]", "[65533]")
        .replace("group: hsm-est-admin", "group: 0")
        .replace("group: hsm-est", "group: 0")
        .replace("[root]", "[0]")
}

/// Each variant of `text` with `bogus_key: 1` added to one table (top level included).
fn with_unknown_key_in_each_table(text: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut variants = vec![("top level".to_string(), format!("bogus_key: 1\n{text}"))];
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') || !trimmed.ends_with(':') {
            continue;
        }
        // A table header: the next non-comment line is indented deeper.
        let indent = line.len() - trimmed.len();
        let Some(child) = lines[i + 1..]
            .iter()
            .find(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        else {
            continue;
        };
        let child_indent = child.len() - child.trim_start().len();
        // A sequence, not a table.
        if child_indent <= indent || child.trim_start().starts_with(['[', '-']) {
            continue;
        }
        let mut v: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        v.insert(i + 1, format!("{}bogus_key: 1", " ".repeat(child_indent)));
        variants.push((trimmed.to_string(), v.join("\n")));
    }
    variants
}

#[test]
fn shipped_signer_configs_parse_and_reject_unknown_keys_everywhere() {
    for file in SIGNER_CONFIGS {
        let text = localise(&std::fs::read_to_string(repo(file)).unwrap());
        let path = repo(file);
        let config = SignerConfig::parse(&path, &text).unwrap_or_else(|e| panic!("{file}: {e}"));
        // The shipped configs give each role its own uid: none holds two roles.
        assert!(
            config.shared_uids().is_empty(),
            "{file}: {:?}",
            config.shared_uids()
        );
        let variants = with_unknown_key_in_each_table(&text);
        assert!(
            variants.len() >= 9,
            "{file}: only {} tables found",
            variants.len()
        );
        for (table, bad) in variants {
            let err = SignerConfig::parse(&path, &bad)
                .err()
                .unwrap_or_else(|| panic!("{file}: unknown key in {table} accepted"));
            assert!(err.contains("bogus_key"), "{file} {table}: {err}");
        }
    }
}

#[test]
fn shipped_admin_config_parses_and_rejects_unknown_keys_and_bad_values() {
    use hsm_est_admin::config::AdminConfig;
    let path = repo("config/admin.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let config = AdminConfig::parse(&path, &text).unwrap();
    // A management address, not every interface.
    assert!(
        config.listen.iter().all(|a| a.ip().is_loopback()),
        "{:?}",
        config.listen
    );
    let variants = with_unknown_key_in_each_table(&text);
    assert!(variants.len() >= 6, "only {} tables", variants.len());
    for (table, bad) in variants {
        let err = AdminConfig::parse(&path, &bad)
            .err()
            .unwrap_or_else(|| panic!("unknown key in {table} accepted"));
        assert!(err.contains("bogus_key"), "{table}: {err}");
    }
    for (from, to, key) in [
        (
            "idle_timeout_seconds: 900",
            "idle_timeout_seconds: 5",
            "session.idle_timeout_seconds",
        ),
        (
            "max_age_seconds: 28800",
            "max_age_seconds: 600",
            "session.max_age_seconds",
        ),
        ("failures: 5", "failures: 0", "login_limit.failures"),
        (
            "listen: [\"127.0.0.1:8446\"]",
            "listen: [\"localhost\"]",
            "server.listen",
        ),
        (
            "allowed_networks: []",
            "allowed_networks: [10.0.0.0/40]",
            "server.allowed_networks",
        ),
    ] {
        assert!(text.contains(from), "{from}");
        let err = AdminConfig::parse(&path, &text.replacen(from, to, 1)).unwrap_err();
        assert!(err.contains(key), "{to}: {err}");
    }
}

#[test]
fn shipped_frontend_configs_parse_and_reject_unknown_keys_everywhere() {
    use hsm_est_frontend::config::FrontendConfig;
    for file in ["config/frontend.yaml", "config/frontend-iqe.yaml"] {
        let text = std::fs::read_to_string(repo(file)).unwrap();
        let path = repo(file);
        FrontendConfig::parse(&path, &text).unwrap_or_else(|e| panic!("{file}: {e}"));
        let variants = with_unknown_key_in_each_table(&text);
        assert!(
            variants.len() >= 6,
            "{file}: only {} tables found",
            variants.len()
        );
        for (table, bad) in variants {
            let err = FrontendConfig::parse(&path, &bad)
                .err()
                .unwrap_or_else(|| panic!("{file}: unknown key in {table} accepted"));
            assert!(err.contains("bogus_key"), "{file} {table}: {err}");
        }
    }
    let text = std::fs::read_to_string(repo("config/frontend.yaml")).unwrap();
    let path = repo("config/frontend.yaml");
    for (from, to, key) in [
        (
            "response_format: base64",
            "response_format: pem",
            "response_format",
        ),
        (
            "response_format: der",
            "response_format: DER",
            "labels.iqe.response_format",
        ),
        ("port: 8445", "port: 0", "server.port"),
        (
            "allowed_networks: []",
            "allowed_networks: [10.0.0.0/40]",
            "server.allowed_networks",
        ),
        ("  iqe:", "  cacerts:", "labels.cacerts"),
        (
            "timeout_seconds: 5",
            "timeout_seconds: 0",
            "signer.timeout_seconds",
        ),
        ("  requests: 100", "  requests: 0", "rate_limit.requests"),
    ] {
        assert!(text.contains(from), "{from}");
        let err = FrontendConfig::parse(&path, &text.replacen(from, to, 1)).unwrap_err();
        assert!(err.contains(key), "{to}: {err}");
    }
}

#[test]
fn invalid_values_are_rejected_not_clamped() {
    let text = localise(&std::fs::read_to_string(repo("config/signer.yaml")).unwrap());
    let path = repo("config/signer.yaml");
    let cases = [
        ("sessions: 2", "sessions: 0", "token.sessions"),
        ("sessions: 2", "sessions: 1000", "token.sessions"),
        (
            "max_connections: 256",
            "max_connections: 0",
            "sockets.frontend.max_connections",
        ),
        ("label: hsm-est", "slot: 0", "slot"),
        (
            "credential: token-pin",
            "credential: ../etc/shadow",
            "token.pin.credential",
        ),
        ("target: syslog", "target: udp", "log.target"),
        ("users: [65534]", "users: []", "sockets.frontend.users"),
        // A signer socket is never world-accessible.
        ("mode: \"0600\"", "mode: \"0666\"", "sockets.operator.mode"),
        // Each role has its own socket.
        (
            "path: /run/hsm-est/operator.sock",
            "path: /run/hsm-est/frontend.sock",
            "sockets.operator.path",
        ),
    ];
    for (from, to, key) in cases {
        assert!(text.contains(from), "{from}");
        let err = SignerConfig::parse(&path, &text.replacen(from, to, 1)).unwrap_err();
        assert!(err.contains(key), "{to}: {err}");
    }
}

/// The commented `registration_authorities` example in the shipped signer.yaml, switched
/// on: it parses, every table of it rejects unknown keys, and bad values name their key.
#[test]
fn the_registration_authorities_example_parses_and_bad_values_are_named() {
    let shipped = localise(&std::fs::read_to_string(repo("config/signer.yaml")).unwrap());
    let start = shipped
        .find("# registration_authorities:")
        .expect("example");
    let end = start + shipped[start..].find("\nlog:").unwrap();
    let example: String = shipped[start..end]
        .lines()
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let text = format!("{}{example}{}", &shipped[..start], &shipped[end..]);
    let path = repo("config/signer.yaml");
    let config = SignerConfig::parse(&path, &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let ra = config.registration_authorities.expect("table read");
    assert!(ra.require_ra_eku);
    assert_eq!(ra.authorities[0].profiles, ["iqe-pump"]);
    for (table, bad) in with_unknown_key_in_each_table(&example) {
        let bad = format!("{}{bad}{}", &shipped[..start], &shipped[end..]);
        let err = SignerConfig::parse(&path, &bad)
            .err()
            .unwrap_or_else(|| panic!("unknown key in {table} accepted"));
        assert!(err.contains("bogus_key"), "{table}: {err}");
    }
    let cases = [
        (
            "cn_pattern: '^[a-z0-9]+(-[a-z0-9]+)*$'",
            "cn_pattern: '[a-z]+'",
            "registration_authorities.authorities[iqe-gateways].cn_pattern",
        ),
        (
            "revoked_certificates: []",
            "revoked_certificates: [abcd]",
            "registration_authorities.revoked_certificates",
        ),
        (
            "profiles: [iqe-pump]",
            "profiles: []",
            "registration_authorities.authorities[iqe-gateways].profiles",
        ),
    ];
    for (from, to, key) in cases {
        assert!(text.contains(from), "{from}");
        let err = SignerConfig::parse(&path, &text.replacen(from, to, 1)).unwrap_err();
        assert!(err.contains(key), "{to}: {err}");
    }
    // An authority's profile must exist and accept registration authorities.
    let policy = Policy::load_dir(&repo("policy")).unwrap();
    let with_profile = |p: &str| {
        let t = text.replacen("profiles: [iqe-pump]", &format!("profiles: [{p}]"), 1);
        SignerConfig::parse(&path, &t)
            .unwrap()
            .registration_authorities
    };
    for (profile, why) in [
        ("nope", "no profile"),
        ("tls-server", "allow_registration_authority"),
    ] {
        let err = hsm_est_signer::ra::RaTrust::from_config(with_profile(profile).as_ref(), &policy)
            .err()
            .unwrap_or_else(|| panic!("{profile} accepted"));
        assert!(err.contains(why), "{profile}: {err}");
    }
}

#[test]
fn shipped_profiles_parse_and_reject_unknown_keys_everywhere() {
    let policy = Policy::load_dir(&repo("policy")).unwrap();
    for name in ["iqe-pump", "iqe-bootstrap", "tls-server"] {
        assert!(policy.profiles.contains_key(name), "{name} missing");
    }
    for entry in std::fs::read_dir(repo("policy")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let variants = with_unknown_key_in_each_table(&text);
        assert!(variants.len() >= 3, "{}", path.display());
        for (table, bad) in variants {
            let err = Profile::from_yaml("p.yaml", &bad)
                .err()
                .unwrap_or_else(|| panic!("{}: unknown key in {table} accepted", path.display()));
            assert!(err.contains("bogus_key"), "{table}: {err}");
        }
    }
}

/// Several CAs and a rolled-over default CA: the keys come out in order with their ledger
/// ids, and every clash or bad generation is refused with the key that is wrong.
#[test]
fn several_cas_and_generations_parse_and_clashes_are_named() {
    let shipped = localise(&std::fs::read_to_string(repo("config/signer.yaml")).unwrap());
    let path = repo("config/signer.yaml");
    let rolled = |previous_generation: &str, staff: &str, links: bool| {
        let links = if links {
            "  links_file: /var/lib/hsm-est/ca-chain-g2-links.pem\n"
        } else {
            ""
        };
        let previous = if previous_generation.is_empty() {
            String::new()
        } else {
            format!(
                "  previous:\n    - generation: {previous_generation}\n      \
                 key_label: hsm-est-ca\n      chain_file: /var/lib/hsm-est/ca-chain.pem\n"
            )
        };
        let text = shipped
            .replacen(
                "  key_label: hsm-est-ca\n",
                "  key_label: hsm-est-ca-g2\n",
                1,
            )
            .replacen(
                "  chain_file: /var/lib/hsm-est/ca-chain.pem\n",
                &format!(
                    "  chain_file: /var/lib/hsm-est/ca-chain-g2.pem\n  generation: 2\n\
                     {links}{previous}"
                ),
                1,
            );
        format!("{text}\ncas:\n{staff}")
    };
    let staff = "  - name: staff\n    key_label: hsm-est-staff-ca\n    \
                 chain_file: /var/lib/hsm-est/staff.pem\n";
    let config =
        SignerConfig::parse(&path, &rolled("1", staff, true)).unwrap_or_else(|e| panic!("{e}"));
    let keys: Vec<(String, bool)> = config
        .cas
        .iter()
        .map(|c| (c.ledger_id(), c.current))
        .collect();
    assert_eq!(
        keys,
        [
            ("default-g2".to_string(), true),
            ("default".to_string(), false),
            ("staff".to_string(), true)
        ]
    );
    assert_eq!(config.ca("default").unwrap().key_label, "hsm-est-ca-g2");
    let cases = [
        (rolled("2", staff, true), "ca.previous[0].generation"),
        (rolled("", staff, true), "ca.links_file"),
        (
            rolled("1", &staff.replace("name: staff", "name: default"), true),
            "cas[0].name",
        ),
        (
            rolled("1", &staff.replace("name: staff", "name: default-g2"), true),
            "cas[0].name",
        ),
        (
            rolled(
                "1",
                &staff.replace("key_label: hsm-est-staff-ca", "key_label: hsm-est-ca"),
                true,
            ),
            "cas[0].key_label",
        ),
        (
            rolled(
                "1",
                &staff.replace(
                    "chain_file: /var/lib/hsm-est/staff.pem",
                    "chain_file: /var/lib/hsm-est/ca-chain.pem",
                ),
                true,
            ),
            "cas[0].chain_file",
        ),
    ];
    for (text, key) in cases {
        let err = SignerConfig::parse(&path, &text).unwrap_err();
        assert!(err.contains(key), "{key}: {err}");
    }
}
