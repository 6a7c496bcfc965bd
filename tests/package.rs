//! The appliance as a hospital installs it, as root on this machine: the `.deb` built with
//! cargo-deb passes lintian without errors and installs with apt-get; the package creates
//! the system users, groups and directories with their owners and modes; `estctl setup
//! --non-interactive` sets up a SoftHSM token, the CA, both TLS certificates and the first
//! accounts, and changes nothing when run again; `systemd-analyze verify` passes on the
//! installed units. Each process then runs under its own user, as its unit starts it
//! (User=, Group=, SupplementaryGroups=, ExecStart=, Environment= and the drop-in, the PIN
//! as the credential the unit hands over), and the IQE flow works end to end: bootstrap,
//! 409, an operator delete, bootstrap again, enrolment with the bootstrap certificate,
//! re-enrolment. As an attacker holding one process's uid: the frontend's user cannot open
//! the operator or admin socket, nor read the PIN, the ledger or the audit log; the
//! signer's user cannot read the TLS keys; est-admin's user cannot reach the frontend
//! socket. `dpkg --remove` keeps the configuration, the ledger and the audit log;
//! `dpkg --purge` removes /etc/hsm-est and keeps the CA's records, whole.
//!
//! No systemd runs on the test machine: the package's postinst applies sysusers.d and
//! tmpfiles.d with systemd-sysusers and systemd-tmpfiles, exactly as it does under systemd.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::*;

const PACKAGE: &str = "hsm-est";
const STATE: &str = "/var/lib/hsm-est";
const CONFIG: &str = "/etc/hsm-est";
const CREDENTIALS: &str = "/run/credentials/est-signer.service";
/// Left in the state directory by this test, so that a later run may remove what an
/// earlier one left, and never a real installation.
const MARKER: &str = "/var/lib/hsm-est/.made-by-the-package-test";
const SUBJECT: &str = "/CN=ward-p-pump-001/O=TestHospital/C=US";
const CN: &str = "ward-p-pump-001";

fn sh(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn must(cmd: &mut Command) -> String {
    let out = sh(cmd);
    assert!(out.status.success(), "{cmd:?}: {}", text(&out));
    text(&out)
}

/// Removes what an earlier, interrupted run of this test left; refuses to touch anything
/// else.
fn clean_slate() {
    let installed = sh(Command::new("dpkg-query").args(["-W", "-f=${Status}", PACKAGE]));
    let state_present = Path::new(STATE).join("ledger.sqlite").exists();
    if state_present && !Path::new(MARKER).exists() {
        panic!("{STATE} holds a ledger this test did not make: not touching this machine");
    }
    if installed.status.success() {
        must(Command::new("dpkg").args(["--purge", PACKAGE]));
    }
    let _ = std::fs::remove_dir_all(STATE);
    let _ = std::fs::remove_dir_all(CREDENTIALS);
    let _ = std::fs::remove_dir_all(CONFIG);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// owner name, group name, permission bits.
fn owner_mode(path: &str) -> (String, String, u32) {
    let meta = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let user = nix::unistd::User::from_uid(meta.uid().into())
        .unwrap()
        .map(|u| u.name)
        .unwrap_or_default();
    let group = nix::unistd::Group::from_gid(meta.gid().into())
        .unwrap()
        .map(|g| g.name)
        .unwrap_or_default();
    (user, group, meta.mode() & 0o7777)
}

fn expect(path: &str, user: &str, group: &str, mode: u32) {
    assert_eq!(
        owner_mode(path),
        (user.to_string(), group.to_string(), mode),
        "{path}"
    );
}

/// The `Key=` values of a unit file and its drop-ins, in order.
fn unit_settings(unit: &str) -> HashMap<String, Vec<String>> {
    let mut files = vec![PathBuf::from(format!("/lib/systemd/system/{unit}"))];
    if let Ok(dir) = std::fs::read_dir(format!("/etc/systemd/system/{unit}.d")) {
        let mut more: Vec<PathBuf> = dir.map(|e| e.unwrap().path()).collect();
        more.sort();
        files.extend(more);
    }
    let mut settings: HashMap<String, Vec<String>> = HashMap::new();
    for file in files {
        for line in std::fs::read_to_string(&file).unwrap().lines() {
            if line.starts_with('#') || line.starts_with('[') {
                continue;
            }
            if let Some((k, v)) = line.split_once('=') {
                settings
                    .entry(k.trim().to_string())
                    .or_default()
                    .push(v.trim().to_string());
            }
        }
    }
    settings
}

/// `setpriv` arguments for a unit's User=, Group= and SupplementaryGroups=, and the
/// privileges systemd would leave it (none).
fn identity(settings: &HashMap<String, Vec<String>>) -> Vec<String> {
    let one = |k: &str| settings.get(k).and_then(|v| v.last()).cloned();
    let mut args = vec![
        format!("--reuid={}", one("User").expect("User=")),
        format!("--regid={}", one("Group").expect("Group=")),
    ];
    match one("SupplementaryGroups") {
        Some(groups) => args.push(format!("--groups={}", groups.replace(' ', ","))),
        None => args.push("--clear-groups".into()),
    }
    args.extend([
        "--inh-caps=-all".to_string(),
        "--bounding-set=-all".to_string(),
        "--no-new-privs".to_string(),
    ]);
    args
}

/// Starts a unit's ExecStart under its user, with its Environment= (the drop-in's too) and
/// `extra` environment, and waits for its `ready` line.
fn start_unit(unit: &str, extra: &[(&str, &str)], log: &Path) -> ProcessGuard {
    let settings = unit_settings(unit);
    let exec = settings["ExecStart"].last().unwrap().clone();
    let mut command = Command::new("setpriv");
    command.args(identity(&settings)).arg("--");
    command.args(exec.split_whitespace());
    command
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    for assignment in settings.get("Environment").into_iter().flatten() {
        let (k, v) = assignment.split_once('=').unwrap();
        command.env(k, v);
    }
    for (k, v) in extra {
        command.env(k, v);
    }
    let log_file = std::fs::File::create(log).unwrap();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line == "ready" {
                let _ = tx.send(());
            }
        }
    });
    let guard = ProcessGuard(Some(child));
    if rx.recv_timeout(Duration::from_secs(60)).is_err() {
        panic!(
            "{unit} did not start:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
    guard
}

struct ProcessGuard(Option<Child>);

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
    }
}

/// Runs `program args` as `user` (its own group only, no capabilities).
fn as_user(user: &str, group: &str, program: &str, args: &[&str]) -> Output {
    sh(Command::new("setpriv")
        .args([
            &format!("--reuid={user}"),
            &format!("--regid={group}"),
            "--init-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            "--",
            program,
        ])
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin"))
}

fn denied(out: &Output, what: &str) {
    let said = text(out);
    assert!(!out.status.success(), "{what}: allowed\n{said}");
    assert!(
        said.contains("Permission denied") || said.contains("refused"),
        "{what}: failed for another reason:\n{said}"
    );
}

struct Client {
    dir: PathBuf,
    port: u16,
    basic: String,
    n: std::cell::Cell<u32>,
}

impl Client {
    fn csr(&self, name: &str) -> (PathBuf, PathBuf) {
        let key = self.dir.join(format!("{name}.key"));
        let csr = self.dir.join(format!("{name}.csr"));
        must(
            Command::new("openssl")
                .args(["req", "-new", "-newkey", "ec", "-pkeyopt"])
                .args(["ec_paramgen_curve:P-256", "-nodes", "-keyout"])
                .arg(&key)
                .args(["-outform", "DER", "-out"])
                .arg(&csr)
                .args(["-subj", SUBJECT]),
        );
        (key, csr)
    }

    /// POSTs a DER CSR to `/.well-known/est/iqe/{op}`: (status, body file).
    fn post(&self, op: &str, csr: &Path, auth: &[&str]) -> (u16, PathBuf) {
        let n = self.n.get();
        self.n.set(n + 1);
        let body = self.dir.join(format!("answer-{n}.der"));
        let out = must(
            Command::new("curl")
                .args(["-sS", "--max-time", "60", "--cacert", "/etc/hsm-est/ca.pem"])
                .args(["-H", "Content-Type: application/pkcs10", "-o"])
                .arg(&body)
                .args(["-w", "%{http_code}", "--data-binary"])
                .arg(format!("@{}", csr.display()))
                .args(auth)
                .arg(format!(
                    "https://127.0.0.1:{}/.well-known/est/iqe/{op}",
                    self.port
                )),
        );
        (out.trim().parse().unwrap(), body)
    }

    fn bootstrap(&self, csr: &Path) -> (u16, PathBuf) {
        self.post("bootstrap", csr, &["-u", &self.basic])
    }

    /// The certificate of a DER certs-only answer, as PEM for curl.
    fn certificate(&self, answer: &Path, name: &str) -> PathBuf {
        let pem = self.dir.join(format!("{name}.pem"));
        must(
            Command::new("openssl")
                .args(["pkcs7", "-inform", "DER", "-print_certs", "-in"])
                .arg(answer)
                .arg("-out")
                .arg(&pem),
        );
        pem
    }
}

#[test]
fn the_package_installs_sets_up_and_runs_each_process_under_its_own_user() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test installs a Debian package: run it as root, as CI does"
    );
    clean_slate();
    let work = std::env::temp_dir().join(format!("hsm-est-package-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();

    // The package, from the binaries this test run was built with.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let profile = if estctl_bin().to_string_lossy().contains("/release/") {
        "release"
    } else {
        "dev"
    };
    must(
        Command::new(&cargo)
            .current_dir(repo())
            .args(["deb", "--no-build", "--fast", "--profile", profile, "-o"])
            .arg(&work),
    );
    let deb = std::fs::read_dir(&work)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb");
    let lintian = sh(Command::new("lintian")
        .args(["--tag-display-limit", "0", "--fail-on", "error"])
        .arg(&deb));
    let findings = text(&lintian);
    assert!(lintian.status.success(), "lintian errors:\n{findings}");
    assert!(!findings.lines().any(|l| l.starts_with("E:")), "{findings}");
    eprintln!("lintian:\n{findings}");

    must(
        Command::new("apt-get")
            .args(["install", "-y", "-q"])
            .arg(&deb)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    );

    // Users, groups, directories, files.
    let account = |name: &str| nix::unistd::User::from_name(name).unwrap().expect(name);
    let group = |name: &str| nix::unistd::Group::from_name(name).unwrap().expect(name);
    let (sock_group, admin_group) = (group("hsm-est"), group("hsm-est-admin"));
    for (user, primary) in [
        ("hsm-est-signer", &sock_group),
        ("est-frontend", &sock_group),
        ("est-admin", &admin_group),
    ] {
        let u = account(user);
        assert_eq!(u.gid, primary.gid, "{user}'s primary group");
        assert!(u.uid.as_raw() < 1000, "{user} is a system user");
        assert!(u.shell.ends_with("nologin"), "{user} cannot log in");
    }
    assert_eq!(admin_group.mem, vec!["hsm-est-signer".to_string()]);
    assert!(sock_group.mem.is_empty(), "{:?}", sock_group.mem);
    expect(STATE, "hsm-est-signer", "hsm-est", 0o700);
    expect("/run/hsm-est", "hsm-est-signer", "hsm-est", 0o751);
    expect(CONFIG, "root", "root", 0o755);
    for f in ["signer.yaml", "frontend.yaml", "admin.yaml"] {
        expect(&format!("{CONFIG}/{f}"), "root", "root", 0o644);
    }
    for bin in ["est-signer", "est-frontend", "est-admin", "estctl"] {
        expect(&format!("/usr/bin/{bin}"), "root", "root", 0o755);
    }
    let conffiles = must(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", PACKAGE]));
    for f in [
        "signer.yaml",
        "frontend.yaml",
        "admin.yaml",
        "policy/iqe-pump.yaml",
    ] {
        assert!(conffiles.contains(&format!("{CONFIG}/{f}")), "{conffiles}");
    }

    // The installed units verify.
    must(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .args([
                "/lib/systemd/system/est-signer.service",
                "/lib/systemd/system/est-frontend.service",
                "/lib/systemd/system/est-admin.service",
            ]),
    );

    // Free ports for this run (an administrator's edit of the conffiles).
    let (port, admin_port) = (free_port(), free_port());
    let edit = |file: &str, from: &str, to: &str| {
        let path = format!("{CONFIG}/{file}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{path}: {from}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    };
    edit(
        "frontend.yaml",
        "  port: 8445\n",
        &format!("  port: {port}\n"),
    );
    edit(
        "frontend.yaml",
        "  bind: [0.0.0.0]\n",
        "  bind: [127.0.0.1]\n",
    );
    edit(
        "admin.yaml",
        "listen: [\"127.0.0.1:8446\"]",
        &format!("listen: [\"127.0.0.1:{admin_port}\"]"),
    );

    // Guided set-up, twice.
    let gateway_password = "gateway-passphrase-0123456789";
    std::fs::write(work.join("gateway.pw"), format!("{gateway_password}\n")).unwrap();
    std::fs::write(work.join("admin.pw"), "admin-passphrase-0123456789\n").unwrap();
    let setup = || {
        setup_command(&work)
            .args([
                "--softhsm",
                "--est-dns",
                "localhost",
                "--est-ip",
                "127.0.0.1",
            ])
            .args([
                "--ca-subject",
                "CN=Test Hospital Device CA,O=TestHospital,C=US",
            ])
            .env_remove("SOFTHSM2_CONF")
            .output()
            .unwrap()
    };
    // A PIN file others may read is refused before anything is made, and so is a
    // setup by anyone but root.
    let weak = work.join("weak-pin");
    std::fs::write(&weak, "0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&weak, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = sh(Command::new("/usr/bin/estctl")
        .args(["setup", "--non-interactive", "--pin-file"])
        .arg(&weak));
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        text(&refused).contains("mode 0644") && text(&refused).contains("0600"),
        "{}",
        text(&refused)
    );
    assert!(!Path::new("/etc/hsm-est/token-pin").exists());
    let not_root = as_user("est-frontend", "hsm-est", "/usr/bin/estctl", &["setup"]);
    assert!(!not_root.status.success());
    assert!(
        text(&not_root).contains("runs as root"),
        "{}",
        text(&not_root)
    );

    // The first run is interactive, on a terminal (script(1) gives it one): it asks for
    // the CA's subject and the accounts, and each password twice without echo.
    let answers = format!(
        "CN=Test Hospital Device CA,O=TestHospital,C=US\niqe-gateway\n{gateway_password}\n\
         {gateway_password}\nalice\nadmin-passphrase-0123456789\nadmin-passphrase-0123456789\n"
    );
    let mut interactive = Command::new("script")
        .args([
            "-qec",
            "/usr/bin/estctl setup --softhsm --est-dns localhost --est-ip 127.0.0.1",
        ])
        .arg("/dev/null")
        .env_remove("SOFTHSM2_CONF")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut interactive.stdin.take().unwrap(), answers.as_bytes()).unwrap();
    let first = interactive.wait_with_output().unwrap();
    assert!(first.status.success(), "{}", text(&first));
    for question in [
        "CA subject",
        "the IQE gateway's user name",
        "password for iqe-gateway",
        "again",
    ] {
        assert!(
            text(&first).contains(question),
            "{question}: {}",
            text(&first)
        );
    }
    std::fs::write(MARKER, b"").unwrap();
    let said = text(&first);
    assert!(
        said.contains("systemctl enable --now est-signer est-frontend est-admin"),
        "{said}"
    );
    assert!(
        said.contains(&format!("https://localhost:{port}/.well-known/est/iqe"))
            && said.contains("DER"),
        "{said}"
    );
    let ca_before = std::fs::read(format!("{CONFIG}/ca.pem")).unwrap();
    // The maintainer scripts run again (a reinstall) without touching what setup made or
    // the administrator's edits of the conffiles.
    must(
        Command::new("dpkg")
            .args(["--install", "--force-confold"])
            .arg(&deb)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    );
    assert!(std::fs::read_to_string(format!("{CONFIG}/frontend.yaml"))
        .unwrap()
        .contains(&format!("  port: {port}\n")));
    expect(
        &format!("{CONFIG}/server.key"),
        "est-frontend",
        "root",
        0o400,
    );
    expect(STATE, "hsm-est-signer", "hsm-est", 0o700);
    let second = setup();
    assert!(second.status.success(), "{}", text(&second));
    for kept in [
        "token: the SoftHSM token",
        "CA: /var/lib/hsm-est/ca-chain.pem exists",
    ] {
        assert!(text(&second).contains(kept), "{}", text(&second));
    }
    assert_eq!(
        std::fs::read(format!("{CONFIG}/ca.pem")).unwrap(),
        ca_before,
        "a second setup changed the CA"
    );
    for (file, user, group, mode) in [
        ("token-pin", "root", "root", 0o600),
        ("token-so-pin", "root", "root", 0o600),
        ("server.key", "est-frontend", "root", 0o400),
        ("admin.key", "est-admin", "root", 0o400),
        ("users.yaml", "root", "hsm-est", 0o640),
        ("admins.yaml", "root", "hsm-est-admin", 0o640),
        ("ca.pem", "root", "root", 0o644),
    ] {
        expect(&format!("{CONFIG}/{file}"), user, group, mode);
    }
    for f in ["ledger.sqlite", "audit.jsonl"] {
        expect(&format!("{STATE}/{f}"), "hsm-est-signer", "hsm-est", 0o600);
    }
    expect(
        &format!("{STATE}/softhsm"),
        "hsm-est-signer",
        "hsm-est",
        0o700,
    );

    // The PIN as the unit hands it over (LoadCredential=token-pin:/etc/hsm-est/token-pin).
    let signer_settings = unit_settings("est-signer.service");
    assert_eq!(
        signer_settings["LoadCredential"],
        vec!["token-pin:/etc/hsm-est/token-pin".to_string()]
    );
    std::fs::create_dir_all(CREDENTIALS).unwrap();
    let credential = format!("{CREDENTIALS}/token-pin");
    std::fs::copy(format!("{CONFIG}/token-pin"), &credential).unwrap();
    let signer_user = account("hsm-est-signer");
    for (path, mode) in [(credential.as_str(), 0o400), (CREDENTIALS, 0o500)] {
        nix::unistd::chown(path, Some(signer_user.uid), Some(signer_user.gid)).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    let signer = start_unit(
        "est-signer.service",
        &[("CREDENTIALS_DIRECTORY", CREDENTIALS)],
        &work.join("signer.log"),
    );
    let frontend = start_unit("est-frontend.service", &[], &work.join("frontend.log"));
    let admin = start_unit("est-admin.service", &[], &work.join("admin.log"));
    let uid_of = |guard: &ProcessGuard| {
        let pid = guard.0.as_ref().unwrap().id();
        std::fs::metadata(format!("/proc/{pid}")).unwrap().uid()
    };
    assert_eq!(uid_of(&signer), signer_user.uid.as_raw());
    assert_eq!(uid_of(&frontend), account("est-frontend").uid.as_raw());
    assert_eq!(uid_of(&admin), account("est-admin").uid.as_raw());

    // The IQE flow, with curl, against the installed appliance.
    let client = Client {
        dir: work.clone(),
        port,
        basic: format!("iqe-gateway:{gateway_password}"),
        n: std::cell::Cell::new(0),
    };
    let (_, csr1) = client.csr("p1");
    let (status, _) = client.bootstrap(&csr1);
    assert_eq!(status, 200, "bootstrap");
    let (k2, csr2) = client.csr("p2");
    assert_eq!(client.bootstrap(&csr2).0, 409, "a second bootstrap");
    must(Command::new("/usr/bin/estctl").args([
        "device",
        "delete",
        "--config",
        "/etc/hsm-est/signer.yaml",
        CN,
    ]));
    let (status, boot) = client.bootstrap(&csr2);
    assert_eq!(status, 200, "bootstrap after the operator's delete");
    let boot_pem = client.certificate(&boot, "boot");
    let (k3, csr3) = client.csr("p3");
    let tls = |cert: &Path, key: &Path| {
        vec![
            "--cert".to_string(),
            cert.display().to_string(),
            "--key".to_string(),
            key.display().to_string(),
        ]
    };
    let auth = tls(&boot_pem, &k2);
    let auth: Vec<&str> = auth.iter().map(String::as_str).collect();
    let (status, enrolled) = client.post("simpleenroll", &csr3, &auth);
    assert_eq!(status, 200, "simpleenroll with the bootstrap certificate");
    let enrolled_pem = client.certificate(&enrolled, "enrolled");
    let (_, csr4) = client.csr("p4");
    let auth = tls(&enrolled_pem, &k3);
    let auth: Vec<&str> = auth.iter().map(String::as_str).collect();
    let (status, _) = client.post("simplereenroll", &csr4, &auth);
    assert_eq!(status, 200, "simplereenroll with the enrolled certificate");

    // Setup again with the appliance running: nothing changes, the token is not opened
    // by a second process.
    let third = setup();
    assert!(third.status.success(), "{}", text(&third));
    assert!(
        text(&third).contains("the signer is running with it; not opened again"),
        "{}",
        text(&third)
    );

    // As the frontend's user: only the frontend socket, none of the signer's secrets.
    let estctl = "/usr/bin/estctl";
    let ping = |user: &str, group: &str, socket: &str| {
        as_user(
            user,
            group,
            estctl,
            &["ping", "--socket", &format!("/run/hsm-est/{socket}.sock")],
        )
    };
    let up = ping("est-frontend", "hsm-est", "frontend");
    assert!(up.status.success(), "{}", text(&up));
    denied(
        &ping("est-frontend", "hsm-est", "operator"),
        "frontend → operator socket",
    );
    denied(
        &ping("est-frontend", "hsm-est", "admin"),
        "frontend → admin socket",
    );
    for secret in [
        "/etc/hsm-est/token-pin",
        "/etc/hsm-est/token-so-pin",
        "/var/lib/hsm-est/ledger.sqlite",
        "/var/lib/hsm-est/audit.jsonl",
        "/var/lib/hsm-est/softhsm/softhsm2.conf",
        "/run/credentials/est-signer.service/token-pin",
        "/etc/hsm-est/admin.key",
    ] {
        denied(
            &as_user("est-frontend", "hsm-est", "cat", &[secret]),
            &format!("est-frontend reads {secret}"),
        );
    }
    // As the signer's user: not the TLS keys.
    for key in ["/etc/hsm-est/server.key", "/etc/hsm-est/admin.key"] {
        denied(
            &as_user("hsm-est-signer", "hsm-est", "cat", &[key]),
            &format!("hsm-est-signer reads {key}"),
        );
    }
    // As est-admin's user: its own socket only.
    let up = ping("est-admin", "hsm-est-admin", "admin");
    assert!(up.status.success(), "{}", text(&up));
    for socket in ["frontend", "operator"] {
        denied(
            &ping("est-admin", "hsm-est-admin", socket),
            &format!("est-admin → {socket} socket"),
        );
    }
    for secret in [
        "/etc/hsm-est/token-pin",
        "/etc/hsm-est/server.key",
        "/var/lib/hsm-est/ledger.sqlite",
    ] {
        denied(
            &as_user("est-admin", "hsm-est-admin", "cat", &[secret]),
            &format!("est-admin reads {secret}"),
        );
    }
    drop(admin);
    drop(frontend);
    drop(signer);

    // What the ledger holds: two TLS certificates and four pump certificates.
    let count = || -> i64 {
        let conn = rusqlite::Connection::open_with_flags(
            format!("{STATE}/ledger.sqlite"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        conn.query_row("SELECT count(*) FROM certificates", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(count(), 6);
    let audit = std::fs::read(format!("{STATE}/audit.jsonl")).unwrap();

    hsm_token_and_a_ca_under_the_hospitals_root(&work);

    // Removal keeps the configuration and the records.
    must(Command::new("dpkg").args(["--remove", PACKAGE]));
    assert!(!Path::new("/usr/bin/est-signer").exists());
    for kept in [
        "/etc/hsm-est/signer.yaml",
        "/etc/hsm-est/token-pin",
        "/etc/hsm-est/users.yaml",
        "/etc/hsm-est/server.key",
        "/var/lib/hsm-est/ledger.sqlite",
        "/var/lib/hsm-est/audit.jsonl",
    ] {
        assert!(Path::new(kept).exists(), "dpkg --remove removed {kept}");
    }
    // Purge removes the configuration, setup's files and its drop-in; the CA's records
    // and the evaluation token (with its PINs beside it) stay, whole; so do the users.
    let purge = must(Command::new("dpkg").args(["--purge", PACKAGE]));
    assert!(purge.contains("kept /var/lib/hsm-est"), "{purge}");
    assert!(!Path::new(CONFIG).exists(), "purge left {CONFIG}");
    assert!(!Path::new("/etc/systemd/system/est-signer.service.d/hsm-est-setup.conf").exists());
    assert_eq!(count(), 6, "purge touched the ledger");
    assert_eq!(
        std::fs::read(format!("{STATE}/audit.jsonl")).unwrap(),
        audit
    );
    expect(
        &format!("{STATE}/softhsm/token-pin.kept"),
        "root",
        "root",
        0o600,
    );
    assert!(nix::unistd::User::from_name("hsm-est-signer")
        .unwrap()
        .is_some());

    let _ = std::fs::remove_dir_all(STATE);
    let _ = std::fs::remove_dir_all(CREDENTIALS);
    let _ = std::fs::remove_dir_all(&work);
}

/// `estctl setup --non-interactive` with the first gateway user and admin (passwords in
/// `work`).
fn setup_command(work: &Path) -> Command {
    let mut c = Command::new("/usr/bin/estctl");
    c.args([
        "setup",
        "--non-interactive",
        "--gateway-user",
        "iqe-gateway",
    ])
    .arg("--gateway-password-file")
    .arg(work.join("gateway.pw"))
    .args(["--admin-user", "alice", "--admin-password-file"])
    .arg(work.join("admin.pw"));
    c
}

/// The production path of `estctl setup`, on a second configuration beside the first: the
/// token is an existing one found by label (a SoftHSM token standing for the HSM), its PIN
/// given with `--pin-file`; the CA is a CSR that the hospital's root (openssl) signs, and a
/// second run imports it. A third run finds the token, accepts the PIN and changes nothing.
fn hsm_token_and_a_ca_under_the_hospitals_root(work: &Path) {
    let ext = work.join("hsm");
    let hsm = ext.join("token");
    let conf = ext.join("conf");
    let state = ext.join("state");
    std::fs::create_dir_all(conf.join("policy")).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    must(
        Command::new(repo().join("softhsm/init-token.sh"))
            .arg(&hsm)
            .arg("hospital-hsm"),
    );
    for f in ["signer.yaml", "frontend.yaml", "admin.yaml"] {
        std::fs::copy(format!("{CONFIG}/{f}"), conf.join(f)).unwrap();
    }
    for e in std::fs::read_dir(format!("{CONFIG}/policy")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), conf.join("policy").join(e.file_name())).unwrap();
    }
    let (c, st) = (conf.display().to_string(), state.display().to_string());
    let edit = |file: &str, pairs: &[(&str, String)]| {
        let path = conf.join(file);
        let mut text = std::fs::read_to_string(&path).unwrap();
        for (from, to) in pairs {
            assert!(text.contains(from), "{file}: {from}");
            text = text.replacen(from, to, 1);
        }
        std::fs::write(&path, text).unwrap();
    };
    edit(
        "signer.yaml",
        &[
            ("  label: hsm-est\n", "  label: hospital-hsm\n".into()),
            (
                "/var/lib/hsm-est/ca-chain.pem",
                format!("{st}/ca-chain.pem"),
            ),
            (
                "/var/lib/hsm-est/ledger.sqlite",
                format!("{st}/ledger.sqlite"),
            ),
            ("/var/lib/hsm-est/audit.jsonl", format!("{st}/audit.jsonl")),
            ("dir: /etc/hsm-est/policy", format!("dir: {c}/policy")),
        ],
    );
    // Every file the frontend and est-admin name moves to the second directory.
    for file in ["frontend.yaml", "admin.yaml"] {
        let path = conf.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("/etc/hsm-est/", &format!("{c}/"))).unwrap();
    }
    let setup = |extra: &[&str]| {
        sh(setup_command(work)
            .args(["--config-dir", &c, "--est-dns", "est.hospital.example"])
            .args([
                "--ca-subject",
                "CN=Ward Devices Issuing CA,O=TestHospital,C=US",
            ])
            .arg("--pin-file")
            .arg(hsm.join("token-pin"))
            .args(extra)
            .env("SOFTHSM2_CONF", hsm.join("softhsm2.conf")))
    };
    let csr = ext.join("ca.csr");
    let first = setup(&["--ca-csr", csr.to_str().unwrap()]);
    assert!(first.status.success(), "{}", text(&first));
    assert!(
        text(&first).contains("Have the hospital's root sign it"),
        "{}",
        text(&first)
    );
    assert!(!state.join("ca-chain.pem").exists());
    expect(
        conf.join("token-pin").to_str().unwrap(),
        "root",
        "root",
        0o600,
    );

    let (root, signed) = root_signs_ca_csr(
        &ext,
        &csr,
        &["ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
        "-sha384",
        "/C=US/O=TestHospital/CN=TestHospital Root CA",
    );
    let second = setup(&[
        "--ca-cert",
        signed.to_str().unwrap(),
        "--ca-chain",
        root.to_str().unwrap(),
    ]);
    assert!(second.status.success(), "{}", text(&second));
    // The public chain names the hospital's root; the issuing CA is the imported one.
    let listed = must(Command::new("sh").arg("-c").arg(format!(
        "openssl crl2pkcs7 -nocrl -certfile {c}/ca.pem | openssl pkcs7 -print_certs -noout"
    )));
    assert!(
        listed.contains("Ward Devices Issuing CA") && listed.contains("TestHospital Root CA"),
        "{listed}"
    );
    expect(
        conf.join("server.key").to_str().unwrap(),
        "est-frontend",
        "root",
        0o400,
    );
    expect(&st, "hsm-est-signer", "hsm-est", 0o700);

    let third = setup(&[]);
    assert!(third.status.success(), "{}", text(&third));
    assert!(
        text(&third).contains("token: hospital-hsm found, PIN accepted, CA key protected"),
        "{}",
        text(&third)
    );
    let _ = std::fs::remove_dir_all(&ext);
}
