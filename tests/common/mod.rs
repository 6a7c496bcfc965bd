//! Test harness: a private SoftHSM token per test, the real `estctl` and `est-signer`
//! binaries as separate processes, readiness by the signer's `ready` line, and children
//! killed by handle on drop. Shared by the integration test files.
#![allow(dead_code)]

pub mod browser;
pub mod csrgen;
pub mod demo;
pub mod hsm;
pub mod postgres;
pub mod preload;
pub mod rawtls;
#[allow(unused_imports)]
pub use preload::preload_devices;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use hsm_est_proto::client::SignerClient;
use hsm_est_proto::{IssueRequest, Operation, Request, Response};

/// The operator uid in test configs (`daemon`). Root is the frontend, and the admin: test
/// code reads device state in-process through the admin socket.
pub const OPERATOR_UID: u32 = 1;
pub const OPERATOR_GID: u32 = 1;
/// How long the signer may take to say `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn estctl_bin() -> PathBuf {
    workspace_bin("estctl")
}

pub fn signer_bin() -> PathBuf {
    workspace_bin("est-signer")
}

/// The packages whose binaries the end-to-end tests run.
const BINARY_PACKAGES: &[&str] = &[
    "estctl",
    "hsm-est-signer",
    "hsm-est-frontend",
    "hsm-est-admin",
];

/// A binary of another workspace crate, built fresh for this test run. Cargo gives
/// `CARGO_BIN_EXE_*` only for the tested package's own binaries, and each binary lives in
/// the crate of its trust domain; so the first call in each test process runs `cargo build`
/// for them (a no-op when `cargo test --workspace` already built them) with this test's
/// profile and target directory, and a test never runs a stale binary.
pub fn workspace_bin(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        // target/<profile>/deps/<test>-<hash> → target/<profile>
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test executable under target/<profile>/deps")
            .to_path_buf();
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(repo()).args(["build", "--quiet", "--bins"]);
        for p in BINARY_PACKAGES {
            cmd.args(["--package", p]);
        }
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        if let Some(target) = profile_dir.parent() {
            cmd.arg("--target-dir").arg(target);
        }
        let out = run(&mut cmd);
        assert!(
            out.status.success(),
            "cannot build the binaries: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        profile_dir
    });
    dir.join(name)
}

/// Runs a command, panicking with its output if it cannot be started.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "command failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A test profile with SANs restricted to one domain, next to the shipped profiles.
/// Small quotas, for the quota tests.
const TEST_QUOTA_PROFILE: &str = "name: test-quota
callers: [frontend]
operations: [bootstrap, reenroll]
validity_days: 30
keys:
  ec_curves: [p256]
csr_signature_algorithms: [ecdsa-sha256]
subject:
  attributes: [CN]
key_usage: [digital_signature]
extended_key_usage: [client_auth]
quota:
  new_devices_per_hour: 3
  rekeys_per_hour: 2
";

/// Renewals must keep their key; the certificate a renewal replaces is always revoked.
const TEST_SAME_KEY_PROFILE: &str = "name: test-same-key
callers: [frontend]
operations: [bootstrap, reenroll]
validity_days: 30
keys:
  ec_curves: [p256]
csr_signature_algorithms: [ecdsa-sha256]
subject:
  attributes: [CN]
key_usage: [digital_signature]
extended_key_usage: [client_auth]
rekey: same_key_only
revoke_superseded: always
";

const TEST_SAN_PROFILE: &str = "name: test-san
callers: [frontend]
operations: [bootstrap, enroll, reenroll]
validity_days: 30
keys:
  rsa: { min_bits: 2048, max_bits: 4096 }
  ec_curves: [p256, p384]
csr_signature_algorithms: [rsa-pkcs1-sha256, ecdsa-sha256, ecdsa-sha384]
subject:
  attributes: [CN, O, C]
  cn_pattern: '^[a-z0-9]+(-[a-z0-9]+)*$'
san:
  types: [dns, ip]
  dns_suffixes: [pumps.example.org]
  max_count: 4
key_usage: [digital_signature]
extended_key_usage: [client_auth]
";

/// A test profile that adds a CRL distribution point and an AIA caIssuers URL.
const TEST_URL_PROFILE: &str = "name: test-urls
callers: [frontend]
operations: [bootstrap]
validity_days: 90
keys:
  ec_curves: [p256]
csr_signature_algorithms: [ecdsa-sha256]
subject:
  attributes: [CN]
key_usage: [digital_signature]
extended_key_usage: [client_auth]
crl_distribution_point: http://pki.hospital.example/device-ca.crl
aia_ca_issuers: http://pki.hospital.example/device-ca.der
";

pub struct Appliance {
    pub dir: PathBuf,
    pub softhsm_conf: PathBuf,
    pub config: PathBuf,
    /// The frontend's socket (root).
    pub socket: PathBuf,
    /// The operator's socket (`OPERATOR_UID` only: root is refused there).
    pub operator_socket: PathBuf,
    /// The admin's socket (root).
    pub admin_socket: PathBuf,
    signer: Option<Child>,
    next_ip: u32,
}

impl Appliance {
    /// A fresh directory with its own token, config and policy, and a CA of `key_type`.
    pub fn create(name: &str, key_type: &str) -> Appliance {
        let app = Self::create_without_ca(name);
        ok(&app.estctl(&[
            "ca",
            "init",
            "--config",
            app.config.to_str().unwrap(),
            "--subject",
            "CN=Test Device CA,O=hsm-est tests,C=US",
            "--key-type",
            key_type,
            "--validity-days",
            "3650",
        ]));
        app
    }

    pub fn create_without_ca(name: &str) -> Appliance {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Operator commands run as another uid: it must reach the config and the socket.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let token_dir = dir.join("token");
        ok(&run(Command::new(repo().join("softhsm/init-token.sh"))
            .arg(&token_dir)
            .arg("hsm-est-test")));
        let policy = dir.join("policy");
        std::fs::create_dir_all(&policy).unwrap();
        for entry in std::fs::read_dir(repo().join("policy")).unwrap() {
            let p = entry.unwrap().path();
            std::fs::copy(&p, policy.join(p.file_name().unwrap())).unwrap();
        }
        std::fs::write(policy.join("test-san.yaml"), TEST_SAN_PROFILE).unwrap();
        std::fs::write(policy.join("test-urls.yaml"), TEST_URL_PROFILE).unwrap();
        std::fs::write(policy.join("test-quota.yaml"), TEST_QUOTA_PROFILE).unwrap();
        std::fs::write(policy.join("test-same-key.yaml"), TEST_SAME_KEY_PROFILE).unwrap();
        // Socket paths are limited to 108 bytes; keep them short and unique.
        let sock = |role: &str| {
            PathBuf::from(format!(
                "/tmp/hsm-est-{name}-{}-{role}.sock",
                std::process::id()
            ))
        };
        let (socket, operator_socket, admin_socket) = (sock("f"), sock("o"), sock("a"));
        let config = dir.join("signer.yaml");
        std::fs::write(
            &config,
            format!(
                "token:
  module: /usr/lib/softhsm/libsofthsm2.so
  label: hsm-est-test
  pin:
    file: token/token-pin
  key_label: test-ca
  sessions: 2
ca:
  chain_file: ca.pem
sockets:
  frontend:
    path: {}
    group: {OPERATOR_GID}
    users: [0]
    max_connections: 128
  operator:
    path: {}
    group: {OPERATOR_GID}
    users: [{OPERATOR_UID}]
    max_connections: 16
  admin:
    path: {}
    mode: \"0600\"
    users: [0]
    max_connections: 16
policy:
  dir: policy
ledger:
  path: ledger.sqlite
audit:
  path: audit.jsonl
log:
  target: stderr
  level: info
",
                socket.display(),
                operator_socket.display(),
                admin_socket.display()
            ),
        )
        .unwrap();
        Appliance {
            softhsm_conf: token_dir.join("softhsm2.conf"),
            dir,
            config,
            socket,
            operator_socket,
            admin_socket,
            signer: None,
            next_ip: 1,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn estctl_cmd(&self) -> Command {
        let mut c = Command::new(estctl_bin());
        c.env("SOFTHSM2_CONF", &self.softhsm_conf);
        c
    }

    pub fn estctl(&self, args: &[&str]) -> Output {
        run(self.estctl_cmd().args(args))
    }

    /// estctl as the operator uid (not root), as an operator would run it.
    pub fn estctl_operator(&self, args: &[&str]) -> Output {
        run(self
            .estctl_cmd()
            .args(args)
            .uid(OPERATOR_UID)
            .gid(OPERATOR_GID))
    }

    pub fn config_arg(&self) -> &str {
        self.config.to_str().unwrap()
    }

    /// Starts the signer and waits for its `ready` line.
    pub fn start(&mut self) {
        self.start_with_env(&[]);
    }

    /// Starts the signer with extra environment variables.
    pub fn start_with_env(&mut self, env: &[(&str, &str)]) {
        assert!(self.signer.is_none(), "signer already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("signer.log"))
            .unwrap();
        let mut child = Command::new(signer_bin())
            .arg("--config")
            .arg(&self.config)
            .env("SOFTHSM2_CONF", &self.softhsm_conf)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn est-signer");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line == "ready" {
                    let _ = tx.send(());
                }
            }
        });
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(()) => self.signer = Some(child),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "est-signer did not become ready; log:\n{}",
                    self.signer_log()
                );
            }
        }
    }

    /// Runs the signer expecting it to refuse to start; returns its output.
    pub fn start_expecting_failure(&self) -> Output {
        let mut child = Command::new(signer_bin())
            .arg("--config")
            .arg(&self.config)
            .env("SOFTHSM2_CONF", &self.softhsm_conf)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn est-signer");
        for _ in 0..600 {
            if child.try_wait().unwrap().is_some() {
                return child.wait_with_output().unwrap();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        panic!("est-signer kept running although it should have refused to start");
    }

    pub fn signer_pid(&self) -> u32 {
        self.signer.as_ref().expect("signer running").id()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.signer.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait: the orderly stop.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.signer.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let status = c.wait().unwrap();
            assert!(status.success(), "signer exited with {status}");
        }
    }

    pub fn signer_log(&self) -> String {
        std::fs::read_to_string(self.path("signer.log")).unwrap_or_default()
    }

    /// A client on the frontend's socket (the role the network-facing process has).
    pub fn client(&self) -> SignerClient {
        SignerClient::connect(&self.socket).expect("connect to the signer")
    }

    /// A client on the admin's socket: device and certificate reads and changes.
    pub fn admin_client(&self) -> SignerClient {
        SignerClient::connect(&self.admin_socket).expect("connect to the admin socket")
    }

    pub fn issue(&self, operation: Operation, profile: &str, csr: &[u8], cert: &[u8]) -> Response {
        self.client()
            .call(&issue_request(operation, profile, csr, cert))
            .expect("signer call")
    }

    pub fn ca_pem(&self) -> PathBuf {
        self.path("ca.pem")
    }

    pub fn ledger(&self) -> hsm_est_signer::ledger::SqliteLedger {
        hsm_est_signer::ledger::SqliteLedger::open(&self.path("ledger.sqlite")).unwrap()
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        self.kill9();
        for s in [&self.socket, &self.operator_socket, &self.admin_socket] {
            let _ = std::fs::remove_file(s);
        }
    }
}

/// An issuance frame as a frontend sends it (requester `basic:test`, client 192.0.2.1).
pub fn issue_request(operation: Operation, profile: &str, csr: &[u8], cert: &[u8]) -> Request {
    Request::Issue(IssueRequest {
        operation,
        profile: profile.into(),
        requester: "basic:test".into(),
        client_ip: "192.0.2.1".into(),
        csr_der: csr.to_vec(),
        client_cert_der: cert.to_vec(),
        client_chain: vec![],
        tls_exporter: vec![],
        registration_authority: false,
    })
}

/// The certificate of an `Issued` answer, or a panic naming what came instead.
pub fn issued(resp: Response) -> Vec<u8> {
    match resp {
        Response::Issued { cert_der, .. } => cert_der,
        other => panic!("expected a certificate, got {other:?}"),
    }
}

/// The (code, reason) of an `Error` answer.
pub fn refused(resp: Response) -> (hsm_est_proto::ErrorCode, String) {
    match resp {
        Response::Error(e) => (e.code, e.reason),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// `openssl req` making a key and a DER CSR in `dir`. `newkey` is passed to -newkey
/// (`rsa:2048`, `ec`), `extra` goes to the end of the command line.
pub fn openssl_csr(dir: &Path, name: &str, newkey: &[&str], subj: &str, extra: &[&str]) -> Vec<u8> {
    let key = dir.join(format!("{name}.key"));
    let csr = dir.join(format!("{name}.csr.der"));
    let mut cmd = Command::new("openssl");
    cmd.args(["req", "-new", "-nodes", "-newkey"])
        .args(newkey)
        .arg("-keyout")
        .arg(&key)
        .args(["-subj", subj, "-outform", "DER", "-out"])
        .arg(&csr)
        .args(extra);
    ok(&run(&mut cmd));
    std::fs::read(csr).unwrap()
}

/// A CSR for an existing key file.
pub fn openssl_csr_for_key(
    dir: &Path,
    name: &str,
    key: &Path,
    subj: &str,
    extra: &[&str],
) -> Vec<u8> {
    let csr = dir.join(format!("{name}.csr.der"));
    let mut cmd = Command::new("openssl");
    cmd.args(["req", "-new", "-key"])
        .arg(key)
        .args(["-subj", subj, "-outform", "DER", "-out"])
        .arg(&csr)
        .args(extra);
    ok(&run(&mut cmd));
    std::fs::read(csr).unwrap()
}

pub fn ec_p256() -> Vec<&'static str> {
    vec!["ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
}

pub fn ec_p384() -> Vec<&'static str> {
    vec!["ec", "-pkeyopt", "ec_paramgen_curve:P-384"]
}

/// Writes a DER certificate as PEM and returns the path.
pub fn write_cert_pem(dir: &Path, name: &str, der: &[u8]) -> PathBuf {
    let p = dir.join(format!("{name}.pem"));
    std::fs::write(&p, hsm_est_pki::to_pem("CERTIFICATE", der)).unwrap();
    p
}

/// Where pkilint's commands are: `$PKILINT_BIN` (set by tests/run-all.sh) or PATH.
pub fn pkilint(cmd: &str) -> Command {
    match std::env::var_os("PKILINT_BIN") {
        Some(dir) => Command::new(Path::new(&dir).join(cmd)),
        None => Command::new(cmd),
    }
}

impl Appliance {
    /// Certificates in the ledger, read with the sqlite3 schema directly.
    pub fn ledger_certificate_count(&self) -> i64 {
        let conn = rusqlite::Connection::open(self.path("ledger.sqlite")).unwrap();
        conn.query_row("SELECT COUNT(*) FROM certificates", [], |r| r.get(0))
            .unwrap()
    }
}

impl Appliance {
    /// Rewrites one line of the signer config (exact match).
    pub fn edit_config(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        assert!(text.contains(from), "{from:?} not in the config");
        std::fs::write(&self.config, text.replacen(from, to, 1)).unwrap();
    }

    pub fn token_pin(&self) -> String {
        std::fs::read_to_string(self.path("token/token-pin")).unwrap()
    }
}

/// Runs `openssl` with `args`, panicking with its output on failure; returns stdout.
pub fn openssl(args: &[&str]) -> String {
    ok(&run(Command::new("openssl").args(args)))
}

/// A hospital's root made with openssl (`newkey`: the `-newkey` value and its options,
/// `digest` e.g. `-sha256`) signs the CA's CSR as an issuing CA: CA:TRUE, pathlen 0,
/// keyCertSign and cRLSign, key identifiers. Returns (the root's PEM, the signed CA's PEM),
/// both in `dir`.
pub fn root_signs_ca_csr(
    dir: &Path,
    csr: &Path,
    newkey: &[&str],
    digest: &str,
    root_subj: &str,
) -> (PathBuf, PathBuf) {
    let root_key = dir.join("root.key");
    let root = dir.join("root.pem");
    ok(&run(Command::new("openssl")
        .args(["req", "-x509", "-new", "-nodes", "-newkey"])
        .args(newkey)
        .args([digest, "-days", "7300", "-subj", root_subj, "-keyout"])
        .arg(&root_key)
        .arg("-out")
        .arg(&root)
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args([
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ])));
    let ext = dir.join("issuing-ca.ext");
    std::fs::write(
        &ext,
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n\
         subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
    )
    .unwrap();
    let signed = dir.join("issuing-ca.pem");
    ok(&run(Command::new("openssl")
        .args(["x509", "-req", digest, "-days", "3650", "-in"])
        .arg(csr)
        .arg("-CA")
        .arg(&root)
        .arg("-CAkey")
        .arg(&root_key)
        .args(["-CAcreateserial", "-extfile"])
        .arg(&ext)
        .arg("-out")
        .arg(&signed)));
    (root, signed)
}

/// A self-signed P-256 certificate (`openssl req -x509`) with the given `-addext` values.
pub fn self_signed_p256(key: &Path, cert: &Path, subj: &str, extensions: &[&str]) {
    let mut cmd = Command::new("openssl");
    cmd.args(["req", "-x509", "-new", "-nodes", "-newkey", "ec"])
        .args([
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-days",
            "365",
            "-subj",
            subj,
        ])
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert);
    for e in extensions {
        cmd.args(["-addext", e]);
    }
    ok(&run(&mut cmd));
}

/// A P-256 certificate for `subj` issued by the CA in `<dir>/<issuer>.pem` and
/// `<dir>/<issuer>.key`, with `extensions` (openssl extfile lines); written to
/// `<dir>/<name>.pem` and `<dir>/<name>.key`. Returns its DER.
pub fn issue_p256_cert(
    dir: &Path,
    name: &str,
    subj: &str,
    issuer: &str,
    extensions: &[&str],
) -> Vec<u8> {
    let p = |n: String| dir.join(n).display().to_string();
    openssl(&[
        "req",
        "-new",
        "-nodes",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-subj",
        subj,
        "-keyout",
        &p(format!("{name}.key")),
        "-out",
        &p(format!("{name}.csr")),
    ]);
    std::fs::write(
        dir.join(format!("{name}.ext")),
        extensions.join("\n") + "\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p(format!("{name}.csr")),
        "-CA",
        &p(format!("{issuer}.pem")),
        "-CAkey",
        &p(format!("{issuer}.key")),
        "-CAcreateserial",
        "-days",
        "30",
        "-extfile",
        &p(format!("{name}.ext")),
        "-out",
        &p(format!("{name}.pem")),
    ]);
    let pem = std::fs::read_to_string(dir.join(format!("{name}.pem"))).unwrap();
    hsm_est_pki::pem_certificates(&pem).unwrap().remove(0)
}

/// Extensions of a TLS client (end-entity) certificate.
pub const CLIENT_CERT_EXTENSIONS: &[&str] = &[
    "basicConstraints=critical,CA:FALSE",
    "keyUsage=critical,digitalSignature",
    "extendedKeyUsage=clientAuth",
];

/// Extensions of a registration authority's certificate: clientAuth and id-kp-cmcRA.
pub const RA_CERT_EXTENSIONS: &[&str] = &[
    "basicConstraints=critical,CA:FALSE",
    "keyUsage=critical,digitalSignature",
    "extendedKeyUsage=clientAuth,1.3.6.1.5.5.7.3.28",
];

/// Extensions of a CA certificate.
pub const CA_CERT_EXTENSIONS: &[&str] = &[
    "basicConstraints=critical,CA:TRUE",
    "keyUsage=critical,keyCertSign,cRLSign",
];
