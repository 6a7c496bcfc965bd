//! `estctl demo`: a complete local appliance for a first try and for black-box tests. A
//! private SoftHSM token, the CA, a TLS certificate for localhost, the user `demo`, the
//! admin `admin`, the configs; then est-signer, est-frontend and est-admin as child
//! processes until Ctrl-C or SIGTERM.
//! Everything is reused when DIR already holds it, so devices survive a restart.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::session::UserType;
use nix::sys::signal::{SigSet, Signal};
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::SecretString;

use hsm_est_web::users;

pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const TOKEN_LABEL: &str = "hsm-est-demo";
const DEMO_USER: &str = "demo";
const DEMO_ADMIN: &str = "admin";
/// How long each child may take to say `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

const SOFTHSM_TEMPLATE: &str = include_str!("../../../softhsm/softhsm2.conf.template");
const PROFILES: &[(&str, &str)] = &[
    (
        "iqe-bootstrap.yaml",
        include_str!("../../../policy/iqe-bootstrap.yaml"),
    ),
    (
        "iqe-pump.yaml",
        include_str!("../../../policy/iqe-pump.yaml"),
    ),
    (
        "tls-server.yaml",
        include_str!("../../../policy/tls-server.yaml"),
    ),
];

/// The demo's TCP ports on 127.0.0.1.
struct Ports {
    est: u16,
    admin: u16,
    publication: Option<u16>,
}

pub struct DemoArgs {
    pub dir: PathBuf,
    pub port: u16,
    pub admin_port: u16,
    pub publication_port: Option<u16>,
    pub response_format: String,
    pub key_type: String,
    /// (PostgreSQL URL, node name): a shared ledger instead of SQLite.
    pub shared_ledger: Option<(String, String)>,
}

pub fn random_secret(len: usize) -> Result<String, String> {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let rng = SystemRandom::new();
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let mut b = [0u8; 1];
        rng.fill(&mut b).map_err(|_| "no randomness")?;
        // Rejection sampling keeps the choice uniform.
        if (b[0] as usize) < 256 - 256 % ALPHABET.len() {
            out.push(ALPHABET[b[0] as usize % ALPHABET.len()] as char);
        }
    }
    Ok(out)
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    super::write_file(path, text, mode, false)
}

/// The first slot whose token matches `want`.
pub fn find_slot(
    pkcs11: &Pkcs11,
    want: impl Fn(&cryptoki::slot::TokenInfo) -> bool,
) -> Result<Option<cryptoki::slot::Slot>, String> {
    Ok(pkcs11
        .get_slots_with_token()
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|s| pkcs11.get_token_info(*s).map(|i| want(&i)).unwrap_or(false)))
}

/// Creates and initialises a SoftHSM token labelled `label` in `token_dir` through PKCS#11
/// (no PIN on any command line): `token_dir/softhsm2.conf`, `token_dir/tokens/`, the SO PIN
/// in `token_dir/so-pin` and the user PIN in `user_pin` (both 0600). Returns the config.
pub fn create_softhsm_token(
    token_dir: &Path,
    label: &str,
    user_pin: &Path,
) -> Result<PathBuf, String> {
    std::fs::create_dir_all(token_dir.join("tokens"))
        .map_err(|e| format!("{}: {e}", token_dir.display()))?;
    std::fs::set_permissions(token_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| e.to_string())?;
    let conf = token_dir.join("softhsm2.conf");
    write_file(
        &conf,
        &SOFTHSM_TEMPLATE.replace(
            "@TOKENDIR@",
            &token_dir.join("tokens").display().to_string(),
        ),
        0o600,
    )?;
    let user_pin_text = random_secret(24)?;
    let so_pin = random_secret(24)?;
    write_file(user_pin, &user_pin_text, 0o600)?;
    write_file(&token_dir.join("so-pin"), &so_pin, 0o600)?;
    // SoftHSM reads its configuration at C_Initialize; this process is single-threaded here.
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let pkcs11 = Pkcs11::new(SOFTHSM_MODULE).map_err(|e| format!("{SOFTHSM_MODULE}: {e}"))?;
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(|e| e.to_string())?;
    let free =
        find_slot(&pkcs11, |i| !i.token_initialized())?.ok_or("SoftHSM offers no free slot")?;
    let so = SecretString::from(so_pin);
    pkcs11
        .init_token(free, &so, label)
        .map_err(|e| format!("C_InitToken: {e}"))?;
    // Slot ids change after C_InitToken: find the token again by label.
    let slot = find_slot(&pkcs11, |i| i.label().trim_end() == label)?
        .ok_or("the new token is not visible")?;
    {
        let session = pkcs11.open_rw_session(slot).map_err(|e| e.to_string())?;
        session
            .login(UserType::So, Some(&so))
            .map_err(|e| format!("SO login: {e}"))?;
        session
            .init_pin(&SecretString::from(user_pin_text))
            .map_err(|e| format!("C_InitPIN: {e}"))?;
    }
    pkcs11.finalize().map_err(|e| e.to_string())?;
    Ok(conf)
}

/// The signer's config; with `publish`, it keeps a CRL file current (what the publication
/// listener serves).
fn signer_yaml(dir: &Path, publish: bool, shared: Option<&(String, String)>) -> String {
    let crl = if publish {
        "crl:\n  file: ca.crl\n  validity_hours: 24\n"
    } else {
        ""
    };
    let (ledger, node) = match shared {
        None => ("  path: ledger.sqlite".to_string(), String::new()),
        Some((url, node)) => (
            format!("  postgres:\n    url: {url:?}\n    pool: 8"),
            format!("\n  node: {node}"),
        ),
    };
    format!(
        "# Demo signer, written by `estctl demo`. See config/signer.yaml for every option.
token:
  module: {SOFTHSM_MODULE}
  label: {TOKEN_LABEL}
  pin:
    file: token-pin
  key_label: hsm-est-demo-ca
  sessions: 2
ca:
  chain_file: ca.pem
# Everything in the demo runs as one uid, so that uid holds every role (the signer
# warns about it). Production gives each role its own uid (config/signer.yaml, systemd/).
sockets:
  frontend:
    path: {frontend}
    mode: \"0600\"
    users: [{uid}]
    max_connections: 256
  operator:
    path: {operator}
    mode: \"0600\"
    users: [{uid}]
    max_connections: 16
  admin:
    path: {admin}
    mode: \"0600\"
    users: [{uid}]
    max_connections: 16
policy:
  dir: policy
ledger:
{ledger}
audit:
  path: audit.jsonl{node}
{crl}log:
  target: stderr
  level: info
",
        frontend = dir.join("frontend.sock").display(),
        operator = dir.join("operator.sock").display(),
        admin = dir.join("admin.sock").display(),
        uid = nix::unistd::getuid()
    )
}

fn admin_yaml(dir: &Path, port: u16) -> String {
    format!(
        "# Demo est-admin, written by `estctl demo`. See config/admin.yaml for every option.
server:
  listen: [\"127.0.0.1:{port}\"]
tls:
  cert_file: server.pem
  key_file: server.key
signer:
  socket: {}
admins_file: admins.yaml
log:
  target: stderr
  level: info
",
        dir.join("admin.sock").display(),
    )
}

fn frontend_yaml(dir: &Path, ports: &Ports, format: &str) -> String {
    let (port, admin_port) = (ports.est, ports.admin);
    let publication = ports
        .publication
        .map(|p| format!("publication:\n  listen: 127.0.0.1:{p}\n"))
        .unwrap_or_default();
    let route = |fmt: &str| {
        format!(
            "    profiles: {{ bootstrap: iqe-bootstrap, enroll: iqe-pump, reenroll: iqe-pump }}
    response_format: {fmt}
"
        )
    };
    format!(
        "# Demo frontend, written by `estctl demo`.
server:
  bind: [127.0.0.1]
  port: {port}
tls:
  cert_file: server.pem
  key_file: server.key
  client_ca_file: ca.pem
signer:
  socket: {}
response_format: {format}
default:
  profiles: {{ bootstrap: iqe-bootstrap, enroll: iqe-pump, reenroll: iqe-pump }}
labels:
  iqe:
{}  rfc:
{}  compact:
{}users_file: users.yaml
admin_url: https://127.0.0.1:{admin_port}/
{publication}rate_limit: {{ enabled: false, requests: 100, window: 3600 }}
log:
  target: stderr
  level: info
",
        dir.join("frontend.sock").display(),
        route("der"),
        route("base64"),
        route("base64-single-line"),
    )
}

fn sibling(name: &str) -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    Ok(me.with_file_name(name))
}

fn estctl(dir: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new(sibling("estctl")?)
        .args(args)
        .env("SOFTHSM2_CONF", dir.join("token/softhsm2.conf"))
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "estctl {}: {}",
            args.first().copied().unwrap_or(""),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Starts a child whose stdout says `ready` when it serves; its log goes to `log`.
fn spawn_ready(dir: &Path, program: &str, config: &Path, log: &Path) -> Result<Child, String> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let mut child = Command::new(sibling(program)?)
        .arg("--config")
        .arg(config)
        .env("SOFTHSM2_CONF", dir.join("token/softhsm2.conf"))
        // As the units set it: see systemd/est-signer.service.
        .env("MALLOC_ARENA_MAX", "2")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .map_err(|e| format!("{program}: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // This thread outlives `ready:`; a SIGTERM must never be delivered to it (the
        // default action would kill the demo and orphan its children), so it blocks the
        // stop signals before it reads anything, hence before the child can be ready.
        let _ = block_stop_signals();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line == "ready" {
                let _ = tx.send(());
            }
        }
    });
    match rx.recv_timeout(READY_TIMEOUT) {
        Ok(()) => Ok(child),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!("{program} did not start; see {}", log.display()))
        }
    }
}

/// How long a child has to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// SIGTERM, then SIGKILL if the child has not stopped within `STOP_GRACE`: the demo
/// never waits forever on a child.
fn stop(child: &mut Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGTERM,
    );
    let deadline = std::time::Instant::now() + STOP_GRACE;
    while std::time::Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "child {} did not stop within {} s; killed",
        child.id(),
        STOP_GRACE.as_secs()
    );
    let _ = child.kill();
    let _ = child.wait();
}

pub fn run(args: DemoArgs) -> Result<(), String> {
    let format: hsm_est_frontend::est::ResponseFormat = args
        .response_format
        .parse()
        .map_err(|e| format!("--response-format: {e}"))?;
    let _: hsm_est_signer::token::CaKeyType = args.key_type.parse()?;
    std::fs::create_dir_all(&args.dir).map_err(|e| format!("{}: {e}", args.dir.display()))?;
    let dir = args.dir.canonicalize().map_err(|e| e.to_string())?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| e.to_string())?;

    let ports = Ports {
        est: args.port,
        admin: args.admin_port,
        publication: args.publication_port,
    };
    let (signer_cfg, frontend_cfg, admin_cfg) =
        write_configs(&dir, &ports, format, args.shared_ledger.as_ref())?;
    create_ca_and_tls(&dir, &signer_cfg, &args.key_type)?;
    create_demo_user(&dir)?;
    create_demo_admin(&dir)?;

    let mut signer = spawn_ready(&dir, "est-signer", &signer_cfg, &dir.join("signer.log"))?;
    let mut frontend = match spawn_ready(
        &dir,
        "est-frontend",
        &frontend_cfg,
        &dir.join("frontend.log"),
    ) {
        Ok(f) => f,
        Err(e) => {
            stop(&mut signer);
            return Err(e);
        }
    };
    let mut admin = match spawn_ready(&dir, "est-admin", &admin_cfg, &dir.join("admin.log")) {
        Ok(a) => a,
        Err(e) => {
            stop(&mut frontend);
            stop(&mut signer);
            return Err(e);
        }
    };
    // Block the stop signals before saying ready (a SIGTERM right after `ready:` must stop
    // us cleanly, not kill us with the default action), and only after the children
    // started: a spawned process inherits the signal mask, and theirs must stay clear.
    // The output readers block them too (see `spawn_ready`), so no thread takes them.
    let signals = match block_stop_signals() {
        Ok(s) => s,
        Err(e) => {
            stop(&mut admin);
            stop(&mut frontend);
            stop(&mut signer);
            return Err(e);
        }
    };
    print_instructions(&dir, &ports, format);
    println!("ready: https://127.0.0.1:{}", args.port);
    let result = supervise(
        &dir,
        &signals,
        &mut [
            (&mut signer, "est-signer", "signer.log"),
            (&mut frontend, "est-frontend", "frontend.log"),
            (&mut admin, "est-admin", "admin.log"),
        ],
    );
    println!("stopping");
    stop(&mut admin);
    stop(&mut frontend);
    stop(&mut signer);
    result
}

/// The token (first run only), the profiles, and both configs, rewritten every run so that
/// a changed port or framing takes effect. Returns the signer's, the frontend's and
/// est-admin's config.
fn write_configs(
    dir: &Path,
    ports: &Ports,
    format: hsm_est_frontend::est::ResponseFormat,
    shared: Option<&(String, String)>,
) -> Result<(PathBuf, PathBuf, PathBuf), String> {
    if !dir.join("token/softhsm2.conf").exists() {
        println!(
            "creating a SoftHSM token in {}",
            dir.join("token").display()
        );
        create_softhsm_token(&dir.join("token"), TOKEN_LABEL, &dir.join("token-pin"))?;
    }
    let policy = dir.join("policy");
    if !policy.exists() {
        std::fs::create_dir_all(&policy).map_err(|e| e.to_string())?;
        for (name, text) in PROFILES {
            let text = match ports.publication {
                // Pump certificates name where their revocation is published.
                Some(p) if name.starts_with("iqe-") => text.replacen(
                    "\nkey_usage:",
                    &format!(
                        "\ncrl_distribution_point: http://127.0.0.1:{p}/crl\n\
                         ocsp_url: http://127.0.0.1:{p}/ocsp\nkey_usage:"
                    ),
                    1,
                ),
                _ => text.to_string(),
            };
            write_file(&policy.join(name), &text, 0o644)?;
        }
    }
    let signer_cfg = dir.join("signer.yaml");
    let frontend_cfg = dir.join("frontend.yaml");
    let admin_cfg = dir.join("admin.yaml");
    write_file(
        &signer_cfg,
        &signer_yaml(dir, ports.publication.is_some(), shared),
        0o644,
    )?;
    write_file(
        &frontend_cfg,
        &frontend_yaml(dir, ports, format.as_str()),
        0o644,
    )?;
    write_file(&admin_cfg, &admin_yaml(dir, ports.admin), 0o644)?;
    Ok((signer_cfg, frontend_cfg, admin_cfg))
}

/// The CA (through `estctl ca init`) and the TLS certificate for localhost, first run only.
fn create_ca_and_tls(dir: &Path, signer_cfg: &Path, key_type: &str) -> Result<(), String> {
    let cfg = signer_cfg.to_str().ok_or("non-UTF-8 path")?;
    if !dir.join("ca.pem").exists() {
        println!("creating the CA ({})", key_type);
        estctl(
            dir,
            &[
                "ca",
                "init",
                "--config",
                cfg,
                "--subject",
                "CN=hsm-est Demo Device CA,O=hsm-est demo,C=US",
                "--key-type",
                key_type,
            ],
        )?;
    }
    if !dir.join("server.pem").exists() {
        println!("issuing the TLS certificate for localhost, 127.0.0.1 and ::1");
        estctl(
            dir,
            &[
                "server-cert",
                "issue",
                "--config",
                cfg,
                "--dns",
                "localhost",
                "--ip",
                "127.0.0.1",
                "--ip",
                "::1",
                "--out-cert",
                &dir.join("server.pem").display().to_string(),
                "--out-key",
                &dir.join("server.key").display().to_string(),
            ],
        )?;
    }
    Ok(())
}

/// The user `demo` with a random password in `demo-password` (mode 0600), first run only.
fn create_demo_user(dir: &Path) -> Result<(), String> {
    create_account(
        &dir.join("users.yaml"),
        DEMO_USER,
        &dir.join("demo-password"),
    )
}

/// The admin `admin` of est-admin, password in `admin-password` (mode 0600), first run
/// only. A file of its own: the EST user cannot log in to the dashboard, nor this admin
/// enrol.
fn create_demo_admin(dir: &Path) -> Result<(), String> {
    create_account(
        &dir.join("admins.yaml"),
        DEMO_ADMIN,
        &dir.join("admin-password"),
    )
}

fn create_account(accounts: &Path, name: &str, password_file: &Path) -> Result<(), String> {
    if !password_file.exists() {
        let password = random_secret(24)?;
        let mut file = users::load(accounts)?;
        file.users.retain(|u| u.name != name);
        file.users.push(users::UserEntry {
            name: name.into(),
            hash: users::hash_password(&password)?,
            labels: vec![],
            operations: vec![],
        });
        users::save(accounts, &file)?;
        write_file(password_file, &password, 0o600)?;
    }
    Ok(())
}

/// Waits for SIGTERM or SIGINT (a clean stop) or for a child to die (an error).
fn block_stop_signals() -> Result<SigSet, String> {
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGCHLD);
    signals.thread_block().map_err(|e| e.to_string())?;
    Ok(signals)
}

fn supervise(
    dir: &Path,
    signals: &SigSet,
    children: &mut [(&mut Child, &str, &str)],
) -> Result<(), String> {
    loop {
        match signals.wait() {
            Ok(Signal::SIGCHLD) => {
                for (child, name, log) in children.iter_mut() {
                    if matches!(child.try_wait(), Ok(Some(_))) {
                        return Err(format!("{name} stopped; see {}", dir.join(*log).display()));
                    }
                }
            }
            _ => return Ok(()),
        }
    }
}

fn print_instructions(dir: &Path, ports: &Ports, format: hsm_est_frontend::est::ResponseFormat) {
    let (port, admin_port) = (ports.est, ports.admin);
    let d = dir.display();
    let url = format!("https://127.0.0.1:{port}/.well-known/est");
    println!(
        "
hsm-est demo in {d}
  CA certificate:  {d}/ca.pem
  dashboard:       https://127.0.0.1:{admin_port}/ (admin API under /api)
  admin:           {DEMO_ADMIN}, password in {d}/admin-password
  EST user:        {DEMO_USER}, password in {d}/demo-password
  routes:          {url}/ ({}), {url}/iqe/ (der), {url}/rfc/ (base64), {url}/compact/ (base64-single-line)
  logs:            {d}/signer.log, {d}/frontend.log, {d}/admin.log

The IQE guide's tests (DER mode, label iqe):
  curl --cacert {d}/ca.pem {url}/iqe/cacerts -o cacerts.p7b
  file cacerts.p7b
  openssl pkcs7 -in cacerts.p7b -inform DER -print_certs -out ca.pem
  openssl req -new -newkey rsa:2048 -nodes -keyout test-pump-key.pem -out test-pump-csr.pem \\
    -subj \"/CN=test-pump-001/O=TestHospital/C=US\"
  curl --cacert {d}/ca.pem -u {DEMO_USER}:$(cat {d}/demo-password) -H 'Content-Type: application/pkcs10' \\
    --data-binary @test-pump-csr.pem {url}/iqe/bootstrap -o test-pump-cert.p7b
  openssl pkcs7 -in test-pump-cert.p7b -inform DER -print_certs -out test-pump-cert.pem
  openssl x509 -in test-pump-cert.pem -text -noout
Devices:
  estctl device list --config {d}/signer.yaml
  curl --cacert {d}/ca.pem -u {DEMO_ADMIN}:$(cat {d}/admin-password) https://127.0.0.1:{admin_port}/api/devices
",
        format.as_str()
    );
    if let Some(p) = ports.publication {
        println!(
            "Revocation (CRL and OCSP over plain HTTP on 127.0.0.1:{p}):
  curl -s http://127.0.0.1:{p}/crl | openssl crl -inform DER -noout -text
  openssl ocsp -issuer {d}/ca.pem -CAfile {d}/ca.pem -cert test-pump-cert.pem \\
    -url http://127.0.0.1:{p}/ocsp -resp_text
  estctl bench ocsp --url http://127.0.0.1:{p}/ocsp --config {d}/signer.yaml
"
        );
    }
}
