//! The privilege separation, read from the crate graph: `cargo metadata` resolves what each
//! binary's package links (normal dependencies, transitively), and no process may link what
//! belongs to another trust domain. The network-facing frontend and est-admin never link the
//! token (cryptoki) or the ledger (SQLite, the PostgreSQL driver), nor each other; the
//! key-holding signer never links the HTTP stack. Its one TLS use is as a client of the
//! shared ledger's database (rustls through tokio-postgres-rustls); it serves nothing.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

use serde_json::Value;

/// (package, crates it must never link, directly or through anything else).
const RULES: &[(&str, &[&str])] = &[
    (
        "hsm-est-frontend",
        &[
            "cryptoki",
            "cryptoki-sys",
            "rusqlite",
            "libsqlite3-sys",
            "postgres",
            "tokio-postgres",
            "hsm-est-signer",
            "hsm-est-policy",
            "hsm-est-admin",
        ],
    ),
    (
        // The dashboard and admin API: the admin role on the signer socket, nothing more.
        "hsm-est-admin",
        &[
            "cryptoki",
            "cryptoki-sys",
            "rusqlite",
            "libsqlite3-sys",
            "postgres",
            "tokio-postgres",
            "hsm-est-signer",
            "hsm-est-policy",
            "hsm-est-frontend",
        ],
    ),
    (
        "hsm-est-signer",
        &[
            "hyper",
            "hyper-util",
            "h2",
            // No TLS server: rustls is linked only for the database client.
            "hyper-rustls",
            "maud",
            "hsm-est-frontend",
            "hsm-est-admin",
            "hsm-est-web",
        ],
    ),
    (
        "hsm-est-web",
        &[
            "cryptoki",
            "cryptoki-sys",
            "rusqlite",
            "libsqlite3-sys",
            "postgres",
            "tokio-postgres",
            "hsm-est-signer",
            "hsm-est-policy",
        ],
    ),
    (
        "hsm-est-proto",
        &["tokio", "hyper", "cryptoki", "rusqlite", "rustls"],
    ),
    (
        "hsm-est-pki",
        &["tokio", "hyper", "cryptoki", "rusqlite", "rustls"],
    ),
    (
        "hsm-est-policy",
        &["tokio", "hyper", "cryptoki", "rusqlite", "rustls"],
    ),
    (
        "hsm-est-common",
        &["tokio", "hyper", "cryptoki", "rusqlite", "rustls"],
    ),
];

/// Package names and normal (linked) dependency edges of a resolved workspace.
struct Graph {
    names: HashMap<String, String>,
    deps: HashMap<String, Vec<String>>,
}

impl Graph {
    fn from_metadata(meta: &Value) -> Graph {
        let mut names = HashMap::new();
        for p in meta["packages"].as_array().expect("packages") {
            names.insert(
                p["id"].as_str().expect("id").to_string(),
                p["name"].as_str().expect("name").to_string(),
            );
        }
        let mut deps = HashMap::new();
        for node in meta["resolve"]["nodes"].as_array().expect("resolve.nodes") {
            let linked: Vec<String> = node["deps"]
                .as_array()
                .expect("deps")
                .iter()
                .filter(|d| {
                    // Build scripts' and tests' dependencies are not linked into the binary.
                    d["dep_kinds"]
                        .as_array()
                        .expect("dep_kinds")
                        .iter()
                        .any(|k| k["kind"].is_null())
                })
                .map(|d| d["pkg"].as_str().expect("pkg").to_string())
                .collect();
            deps.insert(node["id"].as_str().expect("id").to_string(), linked);
        }
        Graph { names, deps }
    }

    /// The names of every package `package` links, itself excluded.
    fn linked_by(&self, package: &str) -> BTreeSet<String> {
        let roots: Vec<&String> = self
            .names
            .iter()
            .filter(|(_, n)| n.as_str() == package)
            .map(|(id, _)| id)
            .collect();
        assert_eq!(roots.len(), 1, "package {package} is not in the workspace");
        let mut seen = BTreeSet::new();
        let mut stack: Vec<String> = self.deps[roots[0]].clone();
        let mut out = BTreeSet::new();
        while let Some(id) = stack.pop() {
            if !seen.insert(id.clone()) {
                continue;
            }
            out.insert(self.names[&id].clone());
            stack.extend(self.deps.get(&id).cloned().unwrap_or_default());
        }
        out
    }

    /// Every rule broken: `package links crate`.
    fn violations(&self, rules: &[(&str, &[&str])]) -> Vec<String> {
        let mut bad = Vec::new();
        for (package, forbidden) in rules {
            let linked = self.linked_by(package);
            for f in *forbidden {
                if linked.contains(*f) {
                    bad.push(format!("{package} links {f}"));
                }
            }
        }
        bad
    }
}

fn workspace_metadata() -> Value {
    let out = Command::new(env!("CARGO"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["metadata", "--format-version", "1", "--locked"])
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata JSON")
}

#[test]
fn no_process_links_another_trust_domains_crates() {
    let graph = Graph::from_metadata(&workspace_metadata());
    let bad = graph.violations(RULES);
    assert!(
        bad.is_empty(),
        "privilege separation broken:\n{}",
        bad.join("\n")
    );
    // The rules are about real crates: the signer does link the token and the ledger, and
    // the frontend the TLS stack. If these fail, the names above have gone stale.
    let signer = graph.linked_by("hsm-est-signer");
    assert!(signer.contains("cryptoki") && signer.contains("rusqlite"));
    let frontend = graph.linked_by("hsm-est-frontend");
    assert!(frontend.contains("rustls") && frontend.contains("hyper"));
    let admin = graph.linked_by("hsm-est-admin");
    assert!(admin.contains("rustls") && admin.contains("maud") && admin.contains("hsm-est-proto"));
}

/// A workspace graph in `cargo metadata`'s shape, with `edges` as (from, to, kind).
fn synthetic(packages: &[&str], edges: &[(&str, &str, Option<&str>)]) -> Value {
    let id = |n: &str| format!("path+file:///ws/{n}#0.1.0");
    let nodes: Vec<Value> = packages
        .iter()
        .map(|p| {
            let deps: Vec<Value> = edges
                .iter()
                .filter(|(from, _, _)| from == p)
                .map(|(_, to, kind)| {
                    serde_json::json!({"pkg": id(to), "dep_kinds": [{"kind": kind}]})
                })
                .collect();
            serde_json::json!({"id": id(p), "deps": deps})
        })
        .collect();
    let pkgs: Vec<Value> = packages
        .iter()
        .map(|p| serde_json::json!({"id": id(p), "name": p}))
        .collect();
    serde_json::json!({"packages": pkgs, "resolve": {"nodes": nodes}})
}

#[test]
fn the_check_catches_a_forbidden_crate_however_deep() {
    let rules: &[(&str, &[&str])] = &[("hsm-est-frontend", &["cryptoki"])];
    let clean = synthetic(
        &["hsm-est-frontend", "hyper", "cryptoki"],
        &[
            ("hsm-est-frontend", "hyper", None),
            // A test-only dependency is not linked into the binary.
            ("hsm-est-frontend", "cryptoki", Some("dev")),
        ],
    );
    assert!(Graph::from_metadata(&clean).violations(rules).is_empty());
    let deep = synthetic(
        &["hsm-est-frontend", "helper", "cryptoki"],
        &[
            ("hsm-est-frontend", "helper", None),
            ("helper", "cryptoki", None),
        ],
    );
    assert_eq!(
        Graph::from_metadata(&deep).violations(rules),
        vec!["hsm-est-frontend links cryptoki".to_string()]
    );
}
