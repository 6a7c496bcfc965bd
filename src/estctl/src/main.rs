//! `estctl`: the operator's tool. CA commands talk to the token directly (with the signer
//! stopped); device and revocation commands go through the signer socket, as the operator
//! uid, so that they are checked and audited by the signer like everything else.
#![forbid(unsafe_code)]

mod backup;
mod bench;
mod ca;
mod crl;
mod demo;
mod ledger;
mod ocsp;
mod server_cert;
mod setup;
mod users;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use hsm_est_common::util::rfc3339_millis;
use hsm_est_proto::client::SignerClient;
use hsm_est_proto::{Request, Response};
use hsm_est_signer::audit;
use hsm_est_signer::config::SignerConfig;

#[derive(Parser)]
#[command(name = "estctl", version, about = "Operate an hsm-est appliance")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create, show or import the CA (run with the signer stopped).
    Ca {
        #[command(subcommand)]
        command: ca::CaCommand,
    },
    /// Devices known to the signer.
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// Revoke a certificate by serial number (operator only). When it is a device's
    /// current certificate, the device and all its unexpired certificates are revoked.
    Revoke {
        #[arg(long)]
        config: PathBuf,
        /// Serial number in hex.
        #[arg(long)]
        serial: String,
        /// RFC 5280 reason: unspecified, key-compromise, ca-compromise, affiliation-changed,
        /// superseded, cessation-of-operation, certificate-hold, remove-from-crl,
        /// privilege-withdrawn, aa-compromise.
        #[arg(long, default_value = "unspecified")]
        reason: String,
    },
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// An online, consistent backup: the ledger, the audit log up to the ledger's head,
    /// signer.yaml, the CA chain and the policy (never the token).
    Backup {
        #[arg(long)]
        config: PathBuf,
        /// A new directory (mode 0700).
        #[arg(long)]
        out: PathBuf,
    },
    /// Put a backup back where signer.yaml says, after checking its digests, its audit
    /// chain and its ledger against the chain; never over an existing ledger or log.
    Restore {
        #[arg(long)]
        from: PathBuf,
        #[arg(long)]
        config: PathBuf,
    },
    /// Move a ledger to another store (SQLite to PostgreSQL).
    Ledger {
        #[command(subcommand)]
        command: ledger::LedgerCommand,
    },
    /// Check a signer configuration and its policy and CA files (and a frontend
    /// configuration with --frontend) without starting anything.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        frontend: Option<PathBuf>,
        /// admin.yaml (est-admin): parsed, its admins file read, its socket and files
        /// checked against the signer's and the frontend's.
        #[arg(long)]
        admin: Option<PathBuf>,
    },
    /// Certificate revocation lists, signed in the token.
    Crl {
        #[command(subcommand)]
        command: CrlCommand,
    },
    /// The project's benchmark (OCSP so far): throughput, latency and server CPU, with
    /// every answer checked.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
    /// The OCSP responder: its delegated key, and status queries.
    Ocsp {
        #[command(subcommand)]
        command: ocsp::OcspCommand,
    },
    /// The frontend's TLS certificate.
    ServerCert {
        #[command(subcommand)]
        command: ServerCertCommand,
    },
    /// Add an HTTP Basic user (asks for the password twice, without echo).
    AddUser {
        /// frontend.yaml (its users_file is used).
        #[arg(long, required_unless_present = "users")]
        config: Option<PathBuf>,
        /// The users file itself.
        #[arg(long)]
        users: Option<PathBuf>,
        /// Read the password from standard input instead of the terminal.
        #[arg(long)]
        password_stdin: bool,
        /// Restrict the user to these labels (`default` is the route without a label).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Restrict the user to these operations (bootstrap, simpleenroll, simplereenroll).
        #[arg(long = "operation")]
        operations: Vec<String>,
        name: String,
    },
    /// List the HTTP Basic users.
    ListUsers {
        #[arg(long, required_unless_present = "users")]
        config: Option<PathBuf>,
        #[arg(long)]
        users: Option<PathBuf>,
    },
    /// Delete an HTTP Basic user.
    DeleteUser {
        #[arg(long, required_unless_present = "users")]
        config: Option<PathBuf>,
        #[arg(long)]
        users: Option<PathBuf>,
        name: String,
    },
    /// Add an admin of the dashboard and admin API (a file apart from the EST users).
    AddAdmin {
        /// admin.yaml (its admins_file is used).
        #[arg(long, required_unless_present = "admins")]
        config: Option<PathBuf>,
        /// The admins file itself.
        #[arg(long)]
        admins: Option<PathBuf>,
        /// Read the password from standard input instead of the terminal.
        #[arg(long)]
        password_stdin: bool,
        name: String,
    },
    /// List the admins and the ids of their API tokens.
    ListAdmins {
        #[arg(long, required_unless_present = "admins")]
        config: Option<PathBuf>,
        #[arg(long)]
        admins: Option<PathBuf>,
    },
    /// Delete an admin and their API tokens.
    DeleteAdmin {
        #[arg(long, required_unless_present = "admins")]
        config: Option<PathBuf>,
        #[arg(long)]
        admins: Option<PathBuf>,
        name: String,
    },
    /// Make an API token for an admin; it is printed once.
    AddAdminToken {
        #[arg(long, required_unless_present = "admins")]
        config: Option<PathBuf>,
        #[arg(long)]
        admins: Option<PathBuf>,
        name: String,
    },
    /// Delete an API token by its id (see list-admins).
    DeleteAdminToken {
        #[arg(long, required_unless_present = "admins")]
        config: Option<PathBuf>,
        #[arg(long)]
        admins: Option<PathBuf>,
        id: String,
    },
    /// First-time setup of an installed appliance (as root): the token, the CA, the TLS
    /// certificates, the first gateway user and admin, check-config. Safe to run again.
    Setup(setup::SetupArgs),
    /// Used by `setup --softhsm`: creates a SoftHSM token in its own process.
    #[command(hide = true)]
    SetupSofthsmToken {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        label: String,
        #[arg(long)]
        pin_out: PathBuf,
    },
    /// A complete local appliance on a SoftHSM token, for a first try and for tests.
    Demo {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 8445)]
        port: u16,
        /// est-admin's port (dashboard and admin API), on 127.0.0.1.
        #[arg(long, default_value_t = 8446)]
        admin_port: u16,
        /// Serve the CRL and OCSP over plain HTTP on this port of 127.0.0.1, and name them
        /// in the pump certificates (CRL distribution point, AIA OCSP).
        #[arg(long)]
        publication_port: Option<u16>,
        #[arg(long, default_value = "base64")]
        response_format: String,
        #[arg(long, default_value = "ec-p256")]
        key_type: String,
        /// Keep the ledger in this PostgreSQL database (`postgresql://user@host:port/db`,
        /// no password) instead of SQLite: several demos with copies of one token then act
        /// as the nodes of one deployment.
        #[arg(long, requires = "node")]
        ledger_url: Option<String>,
        /// This demo's node name (`audit.node`), with `--ledger-url`.
        #[arg(long)]
        node: Option<String>,
    },
    /// Unrevoked certificates that expire soon, soonest first (for renewal alerts).
    Expiring {
        #[arg(long)]
        config: PathBuf,
        #[arg(long, default_value_t = 30)]
        within_days: u32,
    },
    /// The signer's counts: devices by status, certificates issued in the last 24 hours and
    /// expiring within 30 days, refusals by reason since start, commits, CA expiry.
    Stats {
        #[arg(long)]
        config: PathBuf,
    },
    /// Ask the signer whether it is up.
    Ping {
        #[arg(long, conflicts_with = "socket")]
        config: Option<PathBuf>,
        #[arg(long)]
        socket: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CrlCommand {
    /// Have the signer sign the next CRL now (it also writes its crl.file); print it and
    /// optionally write it (DER, or PEM for a name ending in .pem).
    Generate {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        out: Option<PathBuf>,
        /// The CA whose CRL (signer.yaml `cas`); the default CA when absent.
        #[arg(long)]
        ca: Option<String>,
    },
    /// Show the current CRL: the CA's CRL file in signer.yaml, or --file.
    Show {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        file: Option<PathBuf>,
        #[arg(long)]
        ca: Option<String>,
    },
}

#[derive(Subcommand)]
enum ServerCertCommand {
    /// Have the CA issue a TLS server certificate (profile tls-server); writes a new P-256
    /// key (0600) and the certificate with its intermediates.
    Issue {
        #[arg(long)]
        config: PathBuf,
        #[arg(long = "dns")]
        dns: Vec<String>,
        #[arg(long = "ip")]
        ips: Vec<std::net::IpAddr>,
        #[arg(long)]
        out_cert: PathBuf,
        #[arg(long)]
        out_key: PathBuf,
    },
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// List devices in CN order, streamed page by page (paged by key: a million devices
    /// cost the signer the same per page as ten).
    List {
        #[arg(long)]
        config: PathBuf,
        /// Only devices in this state: bootstrap_only, enrolled, revoked, deleted.
        #[arg(long)]
        status: Option<String>,
        /// Only devices whose name starts with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Only devices whose current certificate expires within this many days.
        #[arg(long, default_value_t = 0)]
        expiring_within_days: u32,
    },
    /// Show one device: status, enrolment times, last address, current certificate.
    Show {
        #[arg(long)]
        config: PathBuf,
        cn: String,
    },
    /// Delete a device so that it can bootstrap again. Its unexpired certificates are
    /// revoked (cessation of operation); its history stays on record. A revoked device
    /// cannot be deleted back into service: use `device allow`.
    Delete {
        #[arg(long)]
        config: PathBuf,
        /// Leave the device's certificates valid (for a device that is re-imaged, not
        /// retired, and must keep its network access until it bootstraps again).
        #[arg(long)]
        keep_certificates: bool,
        cn: String,
    },
    /// Let a revoked device bootstrap again (its certificates stay revoked).
    Allow {
        #[arg(long)]
        config: PathBuf,
        cn: String,
    },
    /// Revoke a device: all its unexpired certificates, and no more issuance until
    /// `device allow`.
    Revoke {
        #[arg(long)]
        config: PathBuf,
        /// RFC 5280 reason, as for `estctl revoke`.
        #[arg(long, default_value = "unspecified")]
        reason: String,
        cn: String,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the hash chain; names the first missing, altered or reordered record.
    Verify {
        #[arg(long)]
        config: PathBuf,
        /// With a shared (PostgreSQL) ledger: verify another node's chain, from a copy of
        /// its log (`--log`), against that node's head and certificates in the ledger.
        #[arg(long, requires = "log")]
        node: Option<String>,
        /// The log file to verify (default: `audit.path`).
        #[arg(long)]
        log: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ca { command } => ca::run(command),
        Command::Ocsp { command } => ocsp::run(command),
        Command::Bench { command } => bench::run(command),
        Command::Device { command } => match command {
            DeviceCommand::List {
                config,
                status,
                prefix,
                expiring_within_days,
            } => device_list(&config, status.as_deref(), prefix, expiring_within_days),
            DeviceCommand::Show { config, cn } => device_show(&config, &cn),
            DeviceCommand::Delete {
                config,
                keep_certificates,
                cn,
            } => device_delete(&config, &cn, keep_certificates),
            DeviceCommand::Allow { config, cn } => device_allow(&config, &cn),
            DeviceCommand::Revoke { config, reason, cn } => device_revoke(&config, &cn, &reason),
        },
        Command::Revoke {
            config,
            serial,
            reason,
        } => revoke(&config, &serial, &reason),
        Command::Audit {
            command: AuditCommand::Verify { config, node, log },
        } => audit_verify(&config, node.as_deref(), log.as_deref()),
        Command::Ledger { command } => ledger::run(command),
        Command::Backup { config, out } => backup::backup(&config, &out),
        Command::Restore { from, config } => backup::restore(&from, &config),
        Command::CheckConfig {
            config,
            frontend,
            admin,
        } => check_config(&config, frontend.as_deref(), admin.as_deref()),
        Command::Stats { config } => stats(&config),
        Command::Crl {
            command: CrlCommand::Generate { config, out, ca },
        } => crl::generate(&config, out.as_deref(), ca.as_deref()),
        Command::Crl {
            command: CrlCommand::Show { config, file, ca },
        } => crl::show(&config, file.as_deref(), ca.as_deref()),
        Command::Expiring {
            config,
            within_days,
        } => expiring(&config, within_days),
        Command::ServerCert {
            command:
                ServerCertCommand::Issue {
                    config,
                    dns,
                    ips,
                    out_cert,
                    out_key,
                },
        } => server_cert::issue(&config, &dns, &ips, &out_cert, &out_key),
        Command::AddUser {
            config,
            users: file,
            password_stdin,
            labels,
            operations,
            name,
        } => users::users_path(config.as_deref(), file.as_deref())
            .and_then(|p| users::add_user(&p, &name, password_stdin, labels, operations)),
        Command::ListUsers {
            config,
            users: file,
        } => users::users_path(config.as_deref(), file.as_deref())
            .and_then(|p| users::list_users(&p)),
        Command::DeleteUser {
            config,
            users: file,
            name,
        } => users::users_path(config.as_deref(), file.as_deref())
            .and_then(|p| users::delete_user(&p, &name)),
        Command::AddAdmin {
            config,
            admins,
            password_stdin,
            name,
        } => users::admins_path(config.as_deref(), admins.as_deref())
            .and_then(|p| users::add_admin(&p, &name, password_stdin)),
        Command::ListAdmins { config, admins } => {
            users::admins_path(config.as_deref(), admins.as_deref())
                .and_then(|p| users::list_admins(&p))
        }
        Command::DeleteAdmin {
            config,
            admins,
            name,
        } => users::admins_path(config.as_deref(), admins.as_deref())
            .and_then(|p| users::delete_admin(&p, &name)),
        Command::AddAdminToken {
            config,
            admins,
            name,
        } => users::admins_path(config.as_deref(), admins.as_deref())
            .and_then(|p| users::add_admin_token(&p, &name)),
        Command::DeleteAdminToken { config, admins, id } => {
            users::admins_path(config.as_deref(), admins.as_deref())
                .and_then(|p| users::delete_admin_token(&p, &id))
        }
        Command::Setup(args) => setup::run(args),
        Command::SetupSofthsmToken {
            dir,
            label,
            pin_out,
        } => demo::create_softhsm_token(&dir, &label, &pin_out).map(drop),
        Command::Demo {
            dir,
            port,
            admin_port,
            publication_port,
            response_format,
            key_type,
            ledger_url,
            node,
        } => demo::run(demo::DemoArgs {
            dir,
            port,
            admin_port,
            publication_port,
            response_format,
            key_type,
            shared_ledger: ledger_url.zip(node),
        }),
        Command::Ping { config, socket } => ping(config.as_deref(), socket.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("estctl: {e}");
            ExitCode::FAILURE
        }
    }
}

/// est-admin's config against the signer's: its socket is the signer's admin socket, its
/// admins file is readable and is not the EST users file (admins must never be EST users).
fn check_admin_config(
    signer: &Path,
    admin: &Path,
    users_file: Option<&Path>,
) -> Result<(), String> {
    let ac = hsm_est_admin::config::AdminConfig::load(admin)?;
    let admins = hsm_est_web::users::load(&ac.admins_file)?;
    if users_file.is_some_and(|u| u == ac.admins_file) {
        return Err(format!(
            "{}: admins_file is the frontend's users_file; admins and EST users must be \
             separate files",
            admin.display()
        ));
    }
    let cfg = load(signer)?;
    let socket = cfg
        .sockets
        .iter()
        .find(|s| s.role == hsm_est_policy::Caller::Admin)
        .ok_or_else(|| format!("{}: no admin socket (sockets.admin)", signer.display()))?;
    if socket.path != ac.signer_socket {
        return Err(format!(
            "{}: signer.socket is {}, but the signer's admin socket is {}",
            admin.display(),
            ac.signer_socket.display(),
            socket.path.display()
        ));
    }
    println!(
        "{}: ok ({} admin(s), listening on {})",
        admin.display(),
        admins.users.len(),
        ac.listen
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if admins.users.is_empty() {
        println!(
            "note: no admin yet (estctl add-admin --config {})",
            admin.display()
        );
    }
    Ok(())
}

/// Writes `text` to `path` with permissions `mode` (also on a file that existed), fsynced.
/// With `create_new`, an existing file is an error instead.
pub(crate) fn write_file(
    path: &Path,
    text: &str,
    mode: u32,
    create_new: bool,
) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(mode);
    if create_new {
        options.create_new(true);
    } else {
        options.create(true).truncate(true);
    }
    let mut f = options.open(path).map_err(err)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(err)?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(err)
}

pub(crate) fn load(config: &Path) -> Result<SignerConfig, String> {
    SignerConfig::load(config)
}

pub(crate) fn connect(config: &Path) -> Result<SignerClient, String> {
    let cfg = load(config)?;
    SignerClient::connect(&operator_socket(&cfg)?).map_err(|e| e.to_string())
}

pub(crate) fn call(client: &mut SignerClient, req: &Request) -> Result<Response, String> {
    match client.call(req).map_err(|e| e.to_string())? {
        Response::Error(e) => Err(format!("{} [{}]", e.message, e.reason)),
        other => Ok(other),
    }
}

/// The operator's socket: estctl speaks to the signer in the operator role.
fn operator_socket(cfg: &SignerConfig) -> Result<PathBuf, String> {
    cfg.socket(hsm_est_policy::Caller::Operator)
        .map(|s| s.path.clone())
        .ok_or_else(|| "the signer config has no operator socket".to_string())
}

/// The operator's name for the audit record: the login user if known.
pub(crate) fn operator_name() -> String {
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(u)) => format!("estctl:{}", u.name),
        _ => format!("estctl:uid{uid}"),
    }
}

fn device_list(
    config: &Path,
    status: Option<&str>,
    cn_prefix: String,
    expiring_within_days: u32,
) -> Result<(), String> {
    let status = status
        .map(|s| {
            hsm_est_proto::DeviceStatus::parse(s).ok_or_else(|| {
                format!("unknown status {s:?} (bootstrap_only, enrolled, revoked, deleted)")
            })
        })
        .transpose()?;
    let filter = hsm_est_proto::DeviceFilter {
        status,
        cn_prefix,
        expiring_within_days,
    };
    let mut client = connect(config)?;
    let mut after = String::new();
    let mut count: u64 = 0;
    println!(
        "{:<32} {:<15} {:<24} {:<24} {:<16} {:<34} not after",
        "device", "status", "first enrolled", "last enrolled", "last ip", "serial"
    );
    loop {
        let resp = call(
            &mut client,
            &Request::DeviceList {
                after: after.clone(),
                limit: hsm_est_proto::messages::MAX_DEVICE_PAGE,
                filter: filter.clone(),
            },
        )?;
        let Response::Devices { devices, more } = resp else {
            return Err("unexpected answer from the signer".into());
        };
        for d in &devices {
            print_device_row(d);
        }
        count += devices.len() as u64;
        match devices.last() {
            Some(last) if more => after = last.cn.clone(),
            _ => {
                println!("{count} device(s)");
                return Ok(());
            }
        }
    }
}

fn print_device_row(d: &hsm_est_proto::DeviceInfo) {
    println!(
        "{:<32} {:<15} {:<24} {:<24} {:<16} {:<34} {}",
        hsm_est_common::util::log_safe(&d.cn),
        d.status.as_str(),
        rfc3339_millis(d.first_enrolled_ms),
        rfc3339_millis(d.last_enrolled_ms),
        d.last_ip,
        hex::encode(&d.current_serial),
        rfc3339_millis(d.current_not_after * 1000)
    );
}

fn device_show(config: &Path, cn: &str) -> Result<(), String> {
    let mut client = connect(config)?;
    let Response::Device(d) = call(&mut client, &Request::DeviceGet { cn: cn.to_string() })? else {
        return Err("unexpected answer from the signer".into());
    };
    println!(
        "{:<32} {:<15} {:<24} {:<24} {:<16} {:<34} not after",
        "device", "status", "first enrolled", "last enrolled", "last ip", "serial"
    );
    print_device_row(&d);
    println!();
    println!(
        "{:<34} {:<14} {:<9} {:<24} {:<24} {:<36} state",
        "certificate", "profile", "operation", "issued", "not after", "requester"
    );
    let mut after_serial = Vec::new();
    loop {
        let Response::Certificates { certificates, more } = call(
            &mut client,
            &Request::DeviceCertificates {
                cn: cn.to_string(),
                after_serial: after_serial.clone(),
                limit: hsm_est_proto::messages::MAX_CERTIFICATE_PAGE,
            },
        )?
        else {
            return Err("unexpected answer from the signer".into());
        };
        for c in &certificates {
            let state = match (c.revoked_at_ms, &c.superseded_by) {
                (Some(at), _) => format!(
                    "revoked {} (reason {})",
                    rfc3339_millis(at),
                    c.revocation_reason.unwrap_or(0)
                ),
                (None, Some(next)) => format!("superseded by {}", hex::encode(next)),
                (None, None) if c.serial == d.current_serial => "current".to_string(),
                (None, None) => "valid".to_string(),
            };
            println!(
                "{:<34} {:<14} {:<9} {:<24} {:<24} {:<36} {state}",
                hex::encode(&c.serial),
                c.profile,
                c.operation,
                rfc3339_millis(c.issued_at_ms),
                rfc3339_millis(c.not_after * 1000),
                hsm_est_common::util::log_safe(&c.requester),
            );
        }
        match certificates.last() {
            Some(last) if more => after_serial = last.serial.clone(),
            _ => return Ok(()),
        }
    }
}

/// Sends a request answered with the number of certificates it revoked.
fn call_revoking(config: &Path, req: &Request) -> Result<u32, String> {
    let mut client = connect(config)?;
    match call(&mut client, req)? {
        Response::Revoked { count } => Ok(count),
        _ => Err("unexpected answer from the signer".into()),
    }
}

fn device_delete(config: &Path, cn: &str, keep_certificates: bool) -> Result<(), String> {
    let count = call_revoking(
        config,
        &Request::DeviceDelete {
            cn: cn.to_string(),
            keep_certificates,
            actor: operator_name(),
        },
    )?;
    let kept = if keep_certificates {
        "; its certificates stay valid"
    } else {
        ""
    };
    println!("device {cn} deleted, {count} certificate(s) revoked{kept}; it may bootstrap again");
    Ok(())
}

fn device_allow(config: &Path, cn: &str) -> Result<(), String> {
    let mut client = connect(config)?;
    call(
        &mut client,
        &Request::DeviceAllow {
            cn: cn.to_string(),
            actor: operator_name(),
        },
    )?;
    println!("device {cn} may bootstrap again; its certificates stay revoked");
    Ok(())
}

fn device_revoke(config: &Path, cn: &str, reason: &str) -> Result<(), String> {
    let count = call_revoking(
        config,
        &Request::DeviceRevoke {
            cn: cn.to_string(),
            reason: revocation_reason(reason)?,
            actor: operator_name(),
        },
    )?;
    println!("device {cn} revoked, {count} certificate(s) revoked");
    Ok(())
}

fn revocation_reason(name: &str) -> Result<u8, String> {
    Ok(match name {
        "unspecified" => 0,
        "key-compromise" => 1,
        "ca-compromise" => 2,
        "affiliation-changed" => 3,
        "superseded" => 4,
        "cessation-of-operation" => 5,
        "certificate-hold" => 6,
        "remove-from-crl" => 8,
        "privilege-withdrawn" => 9,
        "aa-compromise" => 10,
        other => return Err(format!("unknown revocation reason {other:?}")),
    })
}

fn revoke(config: &Path, serial: &str, reason: &str) -> Result<(), String> {
    let serial_bytes = hex::decode(serial.replace(':', "").trim())
        .ok()
        .filter(|s| !s.is_empty() && s.len() <= 20)
        .ok_or("--serial must be 1-20 bytes of hex")?;
    let count = call_revoking(
        config,
        &Request::Revoke {
            serial: serial_bytes,
            reason: revocation_reason(reason)?,
            actor: operator_name(),
        },
    )?;
    if count > 1 {
        println!(
            "certificate {serial} revoked; it was its device's current certificate, so the \
             device and all {count} of its unexpired certificates are revoked"
        );
    } else {
        println!("certificate {serial} revoked");
    }
    Ok(())
}

/// Problems `audit verify` lists before it stops counting.
const MAX_REPORTED_PROBLEMS: usize = 20;

fn audit_verify(config: &Path, node: Option<&str>, log: Option<&Path>) -> Result<(), String> {
    use hsm_est_signer::config::LedgerConfig;
    let mut cfg = load(config)?;
    if let Some(log) = log {
        cfg.audit_path = log.to_path_buf();
    }
    if let Some(node) = node {
        if !matches!(cfg.ledger, LedgerConfig::Postgres(_)) {
            return Err("--node: only a shared (PostgreSQL) ledger has other nodes".into());
        }
        cfg.node = Some(node.to_string());
    }
    let ledger = match &cfg.ledger {
        LedgerConfig::Sqlite(path) if !path.exists() => None,
        _ => Some(hsm_est_signer::ledger::open(&cfg).map_err(|e| e.to_string())?),
    };
    let head = match &ledger {
        Some(l) => l.audit_head().map_err(|e| e.to_string())?,
        None => None,
    };
    if let (Some(node), LedgerConfig::Postgres(pg)) = (&cfg.node, &cfg.ledger) {
        println!("node {node}: {}", cfg.audit_path.display());
        // The other chains the shared ledger knows of: each is verified from its log.
        let all = hsm_est_signer::ledger::PgLedger::open(pg, node)
            .and_then(|l| l.audit_heads())
            .map_err(|e| e.to_string())?;
        for (other, (seq, _)) in all.iter().filter(|(n, _)| n != node) {
            println!(
                "node {other} shares this ledger (its head: record {seq}); check its chain \
                 with --node {other} --log <a copy of its audit log>"
            );
        }
    }
    let summary = audit::verify_file(&cfg.audit_path, head.as_ref())
        .map_err(|f| format!("audit log {}: {f}", cfg.audit_path.display()))?;
    println!(
        "audit log ok: {} records, last hash {}",
        summary.records, summary.last_hash
    );
    let Some(ledger) = ledger else {
        return Ok(());
    };
    let head_seq = head.as_ref().map(|(seq, _)| *seq).unwrap_or(0);
    match audit::cross_check(
        &cfg.audit_path,
        ledger.as_ref(),
        head_seq,
        MAX_REPORTED_PROBLEMS,
    ) {
        Ok(c) => {
            println!(
                "ledger agrees: {} certificates, each with its issued record; {} issued \
                 serial(s) never committed, each named in a commit_failed record",
                c.certificates, c.not_committed
            );
            if c.pending > 0 {
                println!(
                    "{} issued record(s) after the ledger's last commit: the signer stopped \
                     before committing them (none was released; its next start records them)",
                    c.pending
                );
            }
            Ok(())
        }
        Err(problems) => Err(format!(
            "audit log and ledger disagree:\n  {}",
            problems.join("\n  ")
        )),
    }
}

fn check_config(
    config: &Path,
    frontend: Option<&Path>,
    admin: Option<&Path>,
) -> Result<(), String> {
    let users_file = match frontend {
        Some(f) => Some(hsm_est_frontend::config::FrontendConfig::load(f)?.users_file),
        None => None,
    };
    if let Some(a) = admin {
        check_admin_config(config, a, users_file.as_deref())?;
    }
    if let Some(f) = frontend {
        let fc = hsm_est_frontend::config::FrontendConfig::load(f)?;
        hsm_est_frontend::users::load(&fc.users_file)?;
        println!(
            "{}: ok ({} label(s), listening on {})",
            f.display(),
            fc.labels.len(),
            fc.listen
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let cfg = load(config)?;
    let policy = hsm_est_policy::Policy::load_dir(&cfg.policy_dir)?;
    let ra =
        hsm_est_signer::ra::RaTrust::from_config(cfg.registration_authorities.as_ref(), &policy)
            .map_err(|e| format!("{}: {e}", config.display()))?;
    if ra.is_some() {
        println!(
            "registration authorities: {}",
            cfg.registration_authorities
                .iter()
                .flat_map(|r| r.authorities.iter().map(|a| a.name.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for ca in &cfg.cas {
        if ca.chain_file.exists() {
            hsm_est_signer::ca::CaChain::load(&ca.chain_file)
                .map_err(|e| format!("CA {}: {e}", ca.name))?;
        } else {
            let init = match ca.name.as_str() {
                hsm_est_policy::DEFAULT_CA => "estctl ca init".to_string(),
                name => format!("estctl ca init {name}"),
            };
            println!(
                "note: {} does not exist yet (run `{init}`)",
                ca.chain_file.display()
            );
        }
    }
    // Every profile must name a CA of this signer, or the signer will not start.
    for profile in policy.profiles.values() {
        if cfg.ca(&profile.ca).is_none() {
            return Err(format!(
                "profile {}: ca {:?} is not in signer.yaml (`cas`)",
                profile.name, profile.ca
            ));
        }
    }
    if let hsm_est_signer::config::PinSource::File(p) = &cfg.token.pin {
        hsm_est_signer::token::read_pin(&cfg.token.pin)
            .map(drop)
            .map_err(|e| format!("{}: {e}", p.display()))?;
    }
    println!(
        "{}: ok ({} profiles: {})",
        config.display(),
        policy.profiles.len(),
        policy
            .profiles
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (uid, roles) in cfg.shared_uids() {
        println!(
            "warning: uid {uid} may use the {} sockets and so holds all those roles; give \
             each role its own uid in production",
            roles.join(" and ")
        );
    }
    Ok(())
}

fn expiring(config: &Path, within_days: u32) -> Result<(), String> {
    let mut client = connect(config)?;
    let (mut after_not_after, mut after_serial) = (-1i64, Vec::new());
    let mut count = 0u64;
    println!(
        "{:<24} {:<32} {:<34} profile",
        "not after", "device", "certificate"
    );
    loop {
        let Response::Certificates { certificates, more } = call(
            &mut client,
            &Request::ExpiringCertificates {
                within_days,
                after_not_after,
                after_serial: after_serial.clone(),
                limit: hsm_est_proto::messages::MAX_CERTIFICATE_PAGE,
            },
        )?
        else {
            return Err("unexpected answer from the signer".into());
        };
        for c in &certificates {
            println!(
                "{:<24} {:<32} {:<34} {}",
                rfc3339_millis(c.not_after * 1000),
                hsm_est_common::util::log_safe(&c.common_name),
                hex::encode(&c.serial),
                c.profile
            );
        }
        count += certificates.len() as u64;
        match certificates.last() {
            Some(last) if more => {
                after_not_after = last.not_after;
                after_serial = last.serial.clone();
            }
            _ => {
                println!("{count} certificate(s) expire within {within_days} days");
                return Ok(());
            }
        }
    }
}

fn stats(config: &Path) -> Result<(), String> {
    let mut client = connect(config)?;
    let Response::Stats(s) = call(&mut client, &Request::Stats)? else {
        return Err("unexpected answer from the signer".into());
    };
    println!("devices by status:");
    for (status, n) in &s.devices_by_status {
        println!("  {status:<16} {n}");
    }
    println!(
        "certificates issued in the last 24 hours: {}",
        s.issued_last_24h
    );
    println!(
        "certificates expiring within 30 days (not revoked): {}",
        s.expiring_within_30_days
    );
    println!("refusals since the signer started:");
    for (reason, n) in &s.refusals_by_reason {
        println!("  {reason:<32} {n}");
    }
    println!("decisions {} in {} commits", s.decisions, s.commits);
    println!(
        "OCSP requests answered {} ({} from the cache, {} answers cached)",
        s.ocsp_responses, s.ocsp_cache_hits, s.ocsp_cached
    );
    println!(
        "CA certificate expires {}",
        rfc3339_millis(s.ca_not_after * 1000)
    );
    Ok(())
}

fn ping(config: Option<&Path>, socket: Option<&Path>) -> Result<(), String> {
    let path = match (config, socket) {
        (Some(c), _) => operator_socket(&load(c)?)?,
        (None, Some(s)) => s.to_path_buf(),
        (None, None) => return Err("give --config or --socket".into()),
    };
    let mut client = SignerClient::connect(&path).map_err(|e| e.to_string())?;
    match call(&mut client, &Request::Ping)? {
        Response::Pong {
            version,
            ca_subject,
            commits,
            decisions,
        } => {
            println!("{version}; CA {ca_subject}; {decisions} decisions in {commits} commits");
            Ok(())
        }
        _ => Err("unexpected answer from the signer".into()),
    }
}
