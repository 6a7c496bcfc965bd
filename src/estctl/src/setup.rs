//! `estctl setup`: the first-time setup of an installed appliance, as root, interactive or
//! with flags (`--non-interactive`). Every step looks at what is already there and does
//! only what is missing, so running it again changes nothing:
//!
//! 1. the token: an evaluation SoftHSM token in the state directory (`--softhsm`), or the
//!    HSM's token found by label with the PIN file's owner and mode checked and the PIN
//!    tried once;
//! 2. the CA: created in the token, or a CSR for the hospital's root and, on a later run,
//!    the import of what it signed; the public chain copied to `/etc/hsm-est/ca.pem`;
//! 3. the TLS certificates of est-frontend and est-admin, each key readable by its
//!    process's user only;
//! 4. the first gateway user and the first admin;
//! 5. `check-config`, then what to start and what to tell the gateway team.
//!
//! Token work runs in child `estctl` processes, one module load each, with the PIN handed
//! over as the unit hands it to the signer (a credential directory), never in argv.

use std::io::{BufRead, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clap::Args;
use nix::unistd::{Gid, Group, Uid, User};

use hsm_est_signer::config::{PinSource, SignerConfig, TokenSelector};

/// The users and groups of `systemd/hsm-est.sysusers`.
const SIGNER_USER: &str = "hsm-est-signer";
const FRONTEND_USER: &str = "est-frontend";
const ADMIN_USER: &str = "est-admin";
const SOCKET_GROUP: &str = "hsm-est";
const ADMIN_GROUP: &str = "hsm-est-admin";
/// The credential name of the signer's unit (`LoadCredential=token-pin:…`).
const PIN_CREDENTIAL: &str = "token-pin";
/// The signer unit's drop-in that points SoftHSM at the evaluation token.
const DROP_IN_DIR: &str = "/etc/systemd/system/est-signer.service.d";
const DROP_IN: &str = "hsm-est-setup.conf";

#[derive(Args)]
pub struct SetupArgs {
    /// Where the package put signer.yaml, frontend.yaml and admin.yaml.
    #[arg(long, default_value = "/etc/hsm-est")]
    config_dir: PathBuf,
    /// Ask nothing: every value missing from the flags is an error.
    #[arg(long)]
    non_interactive: bool,
    /// Evaluation only: create a SoftHSM token (random PINs) in the state directory,
    /// labelled as signer.yaml says, unless it exists.
    #[arg(long)]
    softhsm: bool,
    /// The token's user PIN (first line), for a real HSM: installed as
    /// <config-dir>/token-pin (root, 0600), which the signer's unit hands to the signer.
    #[arg(long)]
    pin_file: Option<PathBuf>,
    /// The CA's distinguished name, e.g. "CN=Hospital Device CA,O=Hospital,C=US".
    #[arg(long)]
    ca_subject: Option<String>,
    #[arg(long, default_value = "ec-p256")]
    ca_key_type: String,
    /// Instead of a self-signed CA: write a CSR here for the hospital's root to sign, and
    /// stop. Run setup again with --ca-cert and --ca-chain.
    #[arg(long)]
    ca_csr: Option<PathBuf>,
    /// The CA certificate the hospital's root signed (PEM), from --ca-csr.
    #[arg(long, requires = "ca_chain")]
    ca_cert: Option<PathBuf>,
    /// The root's chain for --ca-cert (PEM, issuer first).
    #[arg(long, requires = "ca_cert")]
    ca_chain: Option<PathBuf>,
    /// DNS names of the EST service in its TLS certificate (the name the gateway uses).
    #[arg(long = "est-dns")]
    est_dns: Vec<String>,
    /// IP addresses of the EST service in its TLS certificate.
    #[arg(long = "est-ip")]
    est_ip: Vec<std::net::IpAddr>,
    /// DNS names of est-admin's certificate (the management name; default localhost).
    #[arg(long = "admin-dns")]
    admin_dns: Vec<String>,
    /// IP addresses of est-admin's certificate (default 127.0.0.1 with localhost).
    #[arg(long = "admin-ip")]
    admin_ip: Vec<std::net::IpAddr>,
    /// The IQE gateway's HTTP Basic user.
    #[arg(long)]
    gateway_user: Option<String>,
    /// Its password (first line; 16 characters or more). Interactive: asked twice.
    #[arg(long)]
    gateway_password_file: Option<PathBuf>,
    /// The first admin of the dashboard.
    #[arg(long)]
    admin_user: Option<String>,
    #[arg(long)]
    admin_password_file: Option<PathBuf>,
}

/// The appliance's accounts, looked up once.
struct Accounts {
    signer: Uid,
    frontend: Uid,
    admin: Uid,
    socket_group: Gid,
    admin_group: Gid,
}

impl Accounts {
    fn look_up() -> Result<Accounts, String> {
        let user = |name: &str| -> Result<Uid, String> {
            User::from_name(name)
                .map_err(|e| e.to_string())?
                .map(|u| u.uid)
                .ok_or_else(|| missing_accounts(name))
        };
        let group = |name: &str| -> Result<Gid, String> {
            Group::from_name(name)
                .map_err(|e| e.to_string())?
                .map(|g| g.gid)
                .ok_or_else(|| missing_accounts(name))
        };
        Ok(Accounts {
            signer: user(SIGNER_USER)?,
            frontend: user(FRONTEND_USER)?,
            admin: user(ADMIN_USER)?,
            socket_group: group(SOCKET_GROUP)?,
            admin_group: group(ADMIN_GROUP)?,
        })
    }
}

fn missing_accounts(name: &str) -> String {
    format!(
        "the system account {name} does not exist: install the package, or apply its \
         sysusers file (systemd-sysusers hsm-est.conf)"
    )
}

/// Asks for a value on the terminal unless setup runs non-interactively.
struct Asker {
    interactive: bool,
}

impl Asker {
    fn value(&self, given: Option<String>, flag: &str, question: &str) -> Result<String, String> {
        if let Some(v) = given.filter(|v| !v.trim().is_empty()) {
            return Ok(v);
        }
        if !self.interactive {
            return Err(format!("{flag} is needed (--non-interactive asks nothing)"));
        }
        print!("{question}: ");
        std::io::stdout().flush().map_err(|e| e.to_string())?;
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let line = line.trim().to_string();
        if line.is_empty() {
            return Err(format!("{flag}: no value given"));
        }
        Ok(line)
    }
}

pub fn run(args: SetupArgs) -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("estctl setup runs as root: it creates files for three system users".into());
    }
    let ask = Asker {
        interactive: !args.non_interactive,
    };
    let dir = args.config_dir.clone();
    let signer_yaml = dir.join("signer.yaml");
    let frontend_yaml = dir.join("frontend.yaml");
    let admin_yaml = dir.join("admin.yaml");
    for f in [&signer_yaml, &frontend_yaml, &admin_yaml] {
        if !f.exists() {
            return Err(format!(
                "{} is missing: is the package installed?",
                f.display()
            ));
        }
    }
    let accounts = Accounts::look_up()?;
    let cfg = SignerConfig::load(&signer_yaml)?;
    let frontend = hsm_est_frontend::config::FrontendConfig::load(&frontend_yaml)?;
    let admin = hsm_est_admin::config::AdminConfig::load(&admin_yaml)?;
    let state = cfg
        .audit_path
        .parent()
        .ok_or("audit.path has no directory")?
        .to_path_buf();

    let tool = token_step(&args, &cfg, &dir, &state, &accounts)?;

    // 2. The CA.
    if cfg.ca_chain_file.exists() {
        println!("CA: {} exists; kept", cfg.ca_chain_file.display());
    } else if let (Some(cert), Some(chain)) = (&args.ca_cert, &args.ca_chain) {
        println!("CA: importing {}", cert.display());
        tool.run(&[
            "ca",
            "import",
            "--config",
            path_str(&signer_yaml)?,
            "--cert",
            path_str(cert)?,
            "--chain",
            path_str(chain)?,
        ])?;
    } else {
        let subject = ask.value(
            args.ca_subject.clone(),
            "--ca-subject",
            "CA subject (e.g. CN=Hospital Device CA,O=Hospital,C=US)",
        )?;
        let kind = if args.ca_csr.is_some() { "csr" } else { "init" };
        let mut ca_args = vec![
            "ca",
            kind,
            "--config",
            path_str(&signer_yaml)?,
            "--subject",
            &subject,
            "--key-type",
            &args.ca_key_type,
        ];
        if let Some(csr) = &args.ca_csr {
            ca_args.extend(["--out", path_str(csr)?]);
            tool.run(&ca_args)?;
            own_state(&state, &accounts)?;
            println!(
                "CA: the key is in the token and its CSR in {}. Have the hospital's root sign \
                 it (CA:TRUE, pathLenConstraint 0, keyCertSign and cRLSign), then run estctl \
                 setup again with --ca-cert <signed.pem> --ca-chain <root chain.pem>.",
                csr.display()
            );
            return Ok(());
        }
        println!("CA: creating {subject} ({})", args.ca_key_type);
        tool.run(&ca_args)?;
    }
    own_state(&state, &accounts)?;
    // The public chain, for the frontend (client certificates) and the gateway team.
    let ca_pem = dir.join("ca.pem");
    let chain = std::fs::read(&cfg.ca_chain_file)
        .map_err(|e| format!("{}: {e}", cfg.ca_chain_file.display()))?;
    if std::fs::read(&ca_pem).ok().as_deref() != Some(chain.as_slice()) {
        hsm_est_common::util::write_atomically(&ca_pem, &chain, 0o644)?;
        println!("CA: public chain written to {}", ca_pem.display());
    }

    // 3. TLS certificates.
    let mut est_dns = args.est_dns.clone();
    if est_dns.is_empty() && args.est_ip.is_empty() && !frontend.cert_file.exists() {
        est_dns.push(ask.value(
            None,
            "--est-dns",
            "the EST service's DNS name (what the gateway connects to)",
        )?);
    }
    tls_step(
        &tool,
        &signer_yaml,
        "est-frontend",
        (&est_dns, &args.est_ip),
        (&frontend.cert_file, &frontend.key_file),
        accounts.frontend,
    )?;
    let (mut admin_dns, mut admin_ip) = (args.admin_dns.clone(), args.admin_ip.clone());
    if admin_dns.is_empty() && admin_ip.is_empty() {
        admin_dns.push("localhost".into());
        admin_ip.push(std::net::IpAddr::from([127, 0, 0, 1]));
    }
    tls_step(
        &tool,
        &signer_yaml,
        "est-admin",
        (&admin_dns, &admin_ip),
        (&admin.cert_file, &admin.key_file),
        accounts.admin,
    )?;
    own_state(&state, &accounts)?;

    // 4. The first gateway user and the first admin.
    let gateway = account_step(
        &tool,
        &ask,
        Account {
            file: &frontend.users_file,
            command: "add-user",
            config: &frontend_yaml,
            name: args.gateway_user.clone(),
            name_flag: "--gateway-user",
            question: "the IQE gateway's user name",
            password_file: args.gateway_password_file.as_deref(),
        },
    )?;
    set_owner(
        &frontend.users_file,
        None,
        Some(accounts.socket_group),
        0o640,
    )?;
    account_step(
        &tool,
        &ask,
        Account {
            file: &admin.admins_file,
            command: "add-admin",
            config: &admin_yaml,
            name: args.admin_user.clone(),
            name_flag: "--admin-user",
            question: "the first admin's user name",
            password_file: args.admin_password_file.as_deref(),
        },
    )?;
    set_owner(&admin.admins_file, None, Some(accounts.admin_group), 0o640)?;

    // 5. Check, and say what comes next.
    tool.run(&[
        "check-config",
        "--config",
        path_str(&signer_yaml)?,
        "--frontend",
        path_str(&frontend_yaml)?,
        "--admin",
        path_str(&admin_yaml)?,
    ])?;
    print_next_steps(&frontend, &est_dns, &args.est_ip, &ca_pem, &gateway, &admin);
    Ok(())
}

/// Prepares the token and returns the runner of child `estctl`s, with the environment they
/// need for it.
fn token_step(
    args: &SetupArgs,
    cfg: &SignerConfig,
    dir: &Path,
    state: &Path,
    accounts: &Accounts,
) -> Result<Tool, String> {
    let label = match &cfg.token.selector {
        TokenSelector::Label(l) => l.clone(),
        TokenSelector::Serial(s) => format!("serial:{s}"),
    };
    let pin_path = match &cfg.token.pin {
        PinSource::File(p) => p.clone(),
        PinSource::Credential(name) if name == PIN_CREDENTIAL => dir.join(PIN_CREDENTIAL),
        PinSource::Credential(name) => {
            return Err(format!(
                "token.pin.credential is {name:?}; the unit hands over {PIN_CREDENTIAL:?}"
            ))
        }
    };
    let mut env = Vec::new();
    if let PinSource::Credential(_) = &cfg.token.pin {
        // As systemd gives it: $CREDENTIALS_DIRECTORY/token-pin.
        env.push(("CREDENTIALS_DIRECTORY".to_string(), dir.to_path_buf()));
    }
    let token_dir = state.join("softhsm");
    // A token an earlier `--softhsm` run made is used again without the flag.
    if args.softhsm || token_dir.join("softhsm2.conf").exists() {
        if !cfg.token.module.to_string_lossy().contains("libsofthsm2") {
            return Err(format!(
                "--softhsm: signer.yaml's token.module is {}, not SoftHSM",
                cfg.token.module.display()
            ));
        }
        let TokenSelector::Label(label) = &cfg.token.selector else {
            return Err("--softhsm needs token.label in signer.yaml".into());
        };
        let conf = token_dir.join("softhsm2.conf");
        if conf.exists() {
            println!(
                "token: the SoftHSM token in {} exists; kept",
                token_dir.display()
            );
        } else {
            if pin_path.exists() {
                return Err(format!(
                    "{} exists but no SoftHSM token does: move the old PIN away first",
                    pin_path.display()
                ));
            }
            println!(
                "token: creating the SoftHSM token {label:?} in {} (evaluation only: SoftHSM \
                 keeps the key in files)",
                token_dir.display()
            );
            // In a child: SoftHSM reads its configuration once per process.
            let out = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
                .args(["setup-softhsm-token", "--dir"])
                .arg(&token_dir)
                .args(["--label", label, "--pin-out"])
                .arg(&pin_path)
                .output()
                .map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(format!(
                    "creating the SoftHSM token: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            // The SO PIN re-initialises the token: root's, not the signer's.
            let so_pin = token_dir.join("so-pin");
            let pin = zeroize::Zeroizing::new(std::fs::read(&so_pin).map_err(|e| e.to_string())?);
            hsm_est_common::util::write_atomically(&dir.join("token-so-pin"), &pin, 0o600)?;
            std::fs::remove_file(&so_pin).map_err(|e| e.to_string())?;
        }
        write_drop_in(&conf)?;
        env.push(("SOFTHSM2_CONF".to_string(), conf));
        own_state(state, accounts)?;
    } else if let Some(given) = &args.pin_file {
        check_secret_file(given)?;
        if given != &pin_path {
            let pin = zeroize::Zeroizing::new(
                std::fs::read(given).map_err(|e| format!("{}: {e}", given.display()))?,
            );
            // The bytes as they are: a PIN need not be UTF-8.
            hsm_est_common::util::write_atomically(&pin_path, &pin, 0o600)?;
            println!("token: PIN installed as {}", pin_path.display());
        }
    }
    if !pin_path.exists() {
        return Err(format!(
            "no token PIN at {}: give --pin-file (or --softhsm for an evaluation token)",
            pin_path.display()
        ));
    }
    check_secret_file(&pin_path)?;
    let tool = Tool { env };
    let signer_running = super::operator_socket(cfg)
        .ok()
        .is_some_and(|p| std::os::unix::net::UnixStream::connect(p).is_ok());
    if signer_running {
        // Two processes on one SoftHSM token directory fail intermittently; the running
        // signer checked the token and the key when it started.
        println!("token: the signer is running with it; not opened again");
    } else if cfg.ca_chain_file.exists() {
        // The token by label, and the PIN tried once (an HSM counts failed logins).
        let signer_yaml = dir.join("signer.yaml");
        let out = tool
            .command(&["ca", "show", "--token", "--config", path_str(&signer_yaml)?])?
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "token {label}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        println!("token: {label} found, PIN accepted, CA key protected");
    }
    Ok(tool)
}

/// The PIN must be root's alone: owner root, no permission for group or others.
fn check_secret_file(path: &Path) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.file_type().is_file() {
        return Err(format!("{}: not a regular file", path.display()));
    }
    if meta.uid() != 0 || meta.mode() & 0o077 != 0 {
        return Err(format!(
            "{}: owner uid {}, mode {:04o}; a PIN file must be root's with mode 0600 or \
             stricter (chown root:root, chmod 600)",
            path.display(),
            meta.uid(),
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// The signer's unit learns where the evaluation token is.
fn write_drop_in(conf: &Path) -> Result<(), String> {
    let text = format!(
        "# Written by `estctl setup --softhsm`: the evaluation SoftHSM token.\n\
         [Service]\nEnvironment=SOFTHSM2_CONF={}\n",
        conf.display()
    );
    let dir = Path::new(DROP_IN_DIR);
    let path = dir.join(DROP_IN);
    if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    super::write_file(&path, &text, 0o644, false)?;
    println!("token: {} points the signer at it", path.display());
    Ok(())
}

/// Files the root-run steps made in the state directory go to the signer's user.
fn own_state(state: &Path, accounts: &Accounts) -> Result<(), String> {
    fn walk(path: &Path, uid: Uid, gid: Gid) -> Result<(), String> {
        let meta =
            std::fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.file_type().is_symlink() {
            return Ok(());
        }
        if meta.uid() != uid.as_raw() || meta.gid() != gid.as_raw() {
            nix::unistd::chown(path, Some(uid), Some(gid))
                .map_err(|e| format!("chown {}: {e}", path.display()))?;
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(path).map_err(|e| format!("{}: {e}", path.display()))? {
                walk(&entry.map_err(|e| e.to_string())?.path(), uid, gid)?;
            }
        }
        Ok(())
    }
    walk(state, accounts.signer, accounts.socket_group)?;
    std::fs::set_permissions(state, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("{}: {e}", state.display()))
}

fn set_owner(path: &Path, uid: Option<Uid>, gid: Option<Gid>, mode: u32) -> Result<(), String> {
    nix::unistd::chown(path, uid, gid).map_err(|e| format!("chown {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Child `estctl` runs with the token's environment.
struct Tool {
    env: Vec<(String, PathBuf)>,
}

impl Tool {
    fn command(&self, args: &[&str]) -> Result<Command, String> {
        let mut c = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
        c.args(args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        Ok(c)
    }

    fn run(&self, args: &[&str]) -> Result<(), String> {
        let status = self.command(args)?.status().map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("estctl {} failed ({status})", args[..2].join(" ")));
        }
        Ok(())
    }
}

fn tls_step(
    tool: &Tool,
    signer_yaml: &Path,
    process: &str,
    (dns, ips): (&[String], &[std::net::IpAddr]),
    (cert, key): (&Path, &Path),
    owner: Uid,
) -> Result<(), String> {
    if cert.exists() && key.exists() {
        println!(
            "TLS: {process}'s certificate {} exists; kept",
            cert.display()
        );
    } else {
        if dns.is_empty() && ips.is_empty() {
            return Err(format!(
                "{process}: no DNS name or IP address for its certificate"
            ));
        }
        let mut args = vec![
            "server-cert".to_string(),
            "issue".into(),
            "--config".into(),
            path_str(signer_yaml)?.into(),
            "--out-cert".into(),
            path_str(cert)?.into(),
            "--out-key".into(),
            path_str(key)?.into(),
        ];
        for d in dns {
            args.extend(["--dns".to_string(), d.clone()]);
        }
        for ip in ips {
            args.extend(["--ip".to_string(), ip.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        tool.run(&args)?;
    }
    // The key is its process's alone; the signer and the other processes cannot read it.
    set_owner(key, Some(owner), Some(Gid::from_raw(0)), 0o400)
}

struct Account<'a> {
    file: &'a Path,
    command: &'a str,
    config: &'a Path,
    name: Option<String>,
    name_flag: &'a str,
    question: &'a str,
    password_file: Option<&'a Path>,
}

/// Adds the account unless the file has it; returns its name.
fn account_step(tool: &Tool, ask: &Asker, a: Account<'_>) -> Result<String, String> {
    let existing = hsm_est_web::users::load(a.file)?;
    if a.name.is_none() {
        if let Some(first) = existing.users.first() {
            println!("accounts: {} has {}; kept", a.file.display(), first.name);
            return Ok(first.name.clone());
        }
    }
    let name = ask.value(a.name, a.name_flag, a.question)?;
    if existing.users.iter().any(|u| u.name == name) {
        println!("accounts: {name} exists in {}; kept", a.file.display());
        return Ok(name);
    }
    let config = path_str(a.config)?;
    match a.password_file {
        Some(file) => {
            let password = zeroize::Zeroizing::new(
                std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?,
            );
            let mut child = tool
                .command(&[a.command, "--config", config, "--password-stdin", &name])?
                .stdin(Stdio::piped())
                .spawn()
                .map_err(|e| e.to_string())?;
            let first_line = password.split(|b| *b == b'\n').next().unwrap_or(&[]);
            {
                let mut stdin = child.stdin.take().ok_or("no stdin")?;
                stdin
                    .write_all(first_line)
                    .and_then(|_| stdin.write_all(b"\n"))
                    .map_err(|e| e.to_string())?;
            }
            let status = child.wait().map_err(|e| e.to_string())?;
            if !status.success() {
                return Err(format!("estctl {} {name} failed ({status})", a.command));
            }
        }
        None if ask.interactive => tool.run(&[a.command, "--config", config, &name])?,
        None => {
            return Err(format!(
                "{}: a password file is needed for {name} (--non-interactive asks nothing)",
                a.name_flag
            ))
        }
    }
    Ok(name)
}

fn path_str(p: &Path) -> Result<&str, String> {
    p.to_str()
        .ok_or_else(|| format!("{}: not UTF-8", p.display()))
}

fn print_next_steps(
    frontend: &hsm_est_frontend::config::FrontendConfig,
    est_dns: &[String],
    est_ip: &[std::net::IpAddr],
    ca_pem: &Path,
    gateway: &str,
    admin: &hsm_est_admin::config::AdminConfig,
) {
    let port = frontend.listen.first().map(|a| a.port()).unwrap_or(8445);
    let host = est_dns
        .first()
        .cloned()
        .or_else(|| est_ip.first().map(|i| i.to_string()))
        .unwrap_or_else(|| "<the name in /etc/hsm-est/server.pem>".into());
    let (path, der) = match frontend.labels.get("iqe") {
        Some(route) => (
            "/.well-known/est/iqe",
            route.response_format.as_str() == "der",
        ),
        None => (
            "/.well-known/est",
            frontend.default_route.response_format.as_str() == "der",
        ),
    };
    println!();
    println!("Setup is complete. Start the appliance:");
    println!("  systemctl enable --now est-signer est-frontend est-admin");
    println!();
    println!("For the gateway team (IQE):");
    println!("  EST URL:        https://{host}:{port}{path}");
    println!(
        "  CA file:        {} (trust it for the server; pumps chain to it)",
        ca_pem.display()
    );
    println!("  Authentication: HTTP Basic user {gateway}; then the pumps' certificates (TLS client certificates)");
    println!(
        "  Responses:      {}",
        if der {
            "DER (Content-Transfer-Encoding none): the IQE gateway's DER mode"
        } else {
            "base64 (RFC 7030)"
        }
    );
    println!("  CSR format:     PKCS#10 as DER, PEM or base64; Content-Type: application/pkcs10");
    let admin_at = admin
        .listen
        .first()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "127.0.0.1:8446".into());
    println!();
    println!("Dashboard: https://{admin_at}/ (est-admin, management address only)");
}
