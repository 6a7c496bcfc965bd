//! `estctl ca …`: key generation in the token and the CA certificate, or a CSR for a
//! hospital's root and the import of what it signed. These talk to the token directly and
//! take the audit log's lock, so the signer must be stopped.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clap::Subcommand;
use der::Encode;
use ring::rand::{SecureRandom, SystemRandom};
use x509_cert::request::{CertReqInfo, Version as CsrVersion};

use hsm_est_pki::cert::{self, CaSigner, TbsSpec};
use hsm_est_pki::{name, pem_certificates, sha256, to_pem};
use hsm_est_signer::audit::record::named_ca;
use hsm_est_signer::audit::{AuditLog, AuditRecord};
use hsm_est_signer::ca::CaChain;
use hsm_est_signer::config::{CaConfig, SignerConfig};
use hsm_est_signer::token::{self, CaKeyType, SessionSigner, Token};

/// Default lifetime of a self-signed CA certificate.
pub const DEFAULT_CA_VALIDITY_DAYS: u32 = 3650;
/// Longest CA lifetime accepted.
pub const MAX_CA_VALIDITY_DAYS: u32 = 9125;

#[derive(Subcommand)]
pub enum CaCommand {
    /// Generate the CA key in the token and a self-signed CA certificate.
    Init {
        /// The CA (signer.yaml `cas`); the default CA when absent.
        name: Option<String>,
        #[arg(long)]
        config: PathBuf,
        /// The CA's distinguished name, e.g. "CN=Hospital Device CA,O=Hospital,C=US".
        #[arg(long)]
        subject: String,
        #[arg(long, default_value = "ec-p256")]
        key_type: String,
        #[arg(long, default_value_t = DEFAULT_CA_VALIDITY_DAYS)]
        validity_days: u32,
    },
    /// Generate the CA key in the token and a CSR for an existing root to sign.
    Csr {
        /// The CA (signer.yaml `cas`); the default CA when absent.
        name: Option<String>,
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        subject: String,
        #[arg(long, default_value = "ec-p256")]
        key_type: String,
        /// Where to write the PEM CSR.
        #[arg(long)]
        out: PathBuf,
    },
    /// Install the CA certificate signed by the hospital's root, with its chain.
    Import {
        /// The CA (signer.yaml `cas`); the default CA when absent.
        name: Option<String>,
        #[arg(long)]
        config: PathBuf,
        /// The signed CA certificate (PEM).
        #[arg(long)]
        cert: PathBuf,
        /// The issuing chain up to the root (PEM, issuer first).
        #[arg(long)]
        chain: PathBuf,
    },
    /// Roll a self-signed CA over to a new key (signer stopped): the new key in the token,
    /// its CA certificate under the same name, and the link certificates NewWithOld and
    /// OldWithNew (RFC 4210 §4.4) that `cacerts` serves during the overlap. Prints the
    /// signer.yaml change that puts the new key in service.
    Rollover {
        /// The CA (signer.yaml `cas`); the default CA when absent.
        name: Option<String>,
        #[arg(long)]
        config: PathBuf,
        #[arg(long, default_value = "ec-p256")]
        key_type: String,
        #[arg(long, default_value_t = DEFAULT_CA_VALIDITY_DAYS)]
        validity_days: u32,
    },
    /// Print the CA chain and, with --token, the key's attributes.
    Show {
        /// The CA (signer.yaml `cas`); every CA when absent.
        name: Option<String>,
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        token: bool,
    },
}

pub fn run(cmd: CaCommand) -> Result<(), String> {
    match cmd {
        CaCommand::Init {
            name,
            config,
            subject,
            key_type,
            validity_days,
        } => {
            let cfg = SignerConfig::load(&config)?;
            init(&cfg, named(&cfg, name)?, &subject, &key_type, validity_days)
        }
        CaCommand::Csr {
            name,
            config,
            subject,
            key_type,
            out,
        } => {
            let cfg = SignerConfig::load(&config)?;
            csr(&cfg, named(&cfg, name)?, &subject, &key_type, &out)
        }
        CaCommand::Import {
            name,
            config,
            cert,
            chain,
        } => {
            let cfg = SignerConfig::load(&config)?;
            import(&cfg, named(&cfg, name)?, &cert, &chain)
        }
        CaCommand::Rollover {
            name,
            config,
            key_type,
            validity_days,
        } => {
            let cfg = SignerConfig::load(&config)?;
            rollover(&cfg, named(&cfg, name)?, &key_type, validity_days)
        }
        CaCommand::Show {
            name,
            config,
            token,
        } => {
            let cfg = SignerConfig::load(&config)?;
            match name {
                Some(_) => show(&cfg, named(&cfg, name)?, token),
                None => cfg.cas.iter().try_for_each(|ca| show(&cfg, ca, token)),
            }
        }
    }
}

/// The CA `name` names in signer.yaml (the default CA when `None`).
pub(crate) fn named(cfg: &SignerConfig, name: Option<String>) -> Result<&CaConfig, String> {
    let name = name.unwrap_or_else(|| hsm_est_policy::DEFAULT_CA.to_string());
    cfg.ca(&name).ok_or_else(|| {
        let known: Vec<&str> = cfg.cas.iter().map(|c| c.name.as_str()).collect();
        format!(
            "signer.yaml holds no CA named {name:?} (it holds: {})",
            known.join(", ")
        )
    })
}

pub(crate) fn open_audit(cfg: &SignerConfig) -> Result<AuditLog, String> {
    let ledger = hsm_est_signer::ledger::open(cfg).map_err(|e| e.to_string())?;
    let head = ledger.audit_head().map_err(|e| e.to_string())?;
    Ok(AuditLog::open(&cfg.audit_path, head.as_ref())
        .map_err(|e| e.to_string())?
        .with_node(cfg.node.clone()))
}

pub(crate) fn login(cfg: &SignerConfig) -> Result<(Token, cryptoki::session::Session), String> {
    let tok = Token::open(&cfg.token).map_err(|e| e.to_string())?;
    let pin = token::read_pin(&cfg.token.pin).map_err(|e| e.to_string())?;
    let session = tok.login(&pin, true).map_err(|e| e.to_string())?;
    Ok((tok, session))
}

fn write_new(path: &Path, contents: &str, mode: u32) -> Result<(), String> {
    super::write_file(path, contents, mode, true)
}

/// Generates the key pair and returns what is needed to sign with it.
fn generate(
    cfg: &SignerConfig,
    label: &str,
    key_type: &str,
) -> Result<
    (
        cryptoki::session::Session,
        cryptoki::object::ObjectHandle,
        spki::SubjectPublicKeyInfoOwned,
        hsm_est_pki::keys::SignatureAlgorithm,
        CaKeyType,
    ),
    String,
> {
    let key_type: CaKeyType = key_type.parse()?;
    let (_tok, session) = login(cfg)?;
    let (private, public) =
        Token::generate_labelled_pair(&session, key_type, label).map_err(|e| e.to_string())?;
    // Read back what the token made: the template is only a request.
    token::check_key_protection(&session, private).map_err(|e| e.to_string())?;
    let spki = token::public_key_info(&session, public).map_err(|e| e.to_string())?;
    let alg = token::ca_signature_algorithm(&spki).map_err(|e| e.to_string())?;
    Ok((session, private, spki, alg, key_type))
}

fn check_validity_days(days: u32) -> Result<(), String> {
    if days == 0 || days > MAX_CA_VALIDITY_DAYS {
        return Err(format!(
            "--validity-days must be between 1 and {MAX_CA_VALIDITY_DAYS}"
        ));
    }
    Ok(())
}

fn init(
    cfg: &SignerConfig,
    ca: &CaConfig,
    subject: &str,
    key_type: &str,
    validity_days: u32,
) -> Result<(), String> {
    check_validity_days(validity_days)?;
    let subject_name = name::parse_dn(subject)?;
    if ca.chain_file.exists() {
        return Err(format!(
            "{} already exists; refusing to replace a CA",
            ca.chain_file.display()
        ));
    }
    let mut audit = open_audit(cfg)?;
    let (session, private, spki, alg, key_type) = generate(cfg, &ca.key_label, key_type)?;
    let serial = random_serial()?;
    let ski = cert::key_identifier(&spki);
    let now = SystemTime::now();
    let spec = TbsSpec {
        serial: serial.clone(),
        issuer: subject_name.clone(),
        subject: subject_name.clone(),
        spki: spki.clone(),
        not_before: now - Duration::from_secs(300),
        not_after: now + Duration::from_secs(u64::from(validity_days) * 86_400),
        extensions: cert::ca_extensions(&ski, Some(&ski)).map_err(|e| e.to_string())?,
        algorithm: alg,
    };
    let signer = SessionSigner {
        session: &session,
        key: private,
        algorithm: alg,
    };
    let der_cert = cert::sign_certificate(spec, &signer).map_err(|e| e.to_string())?;
    cert::verify_certificate_signature(&der_cert, &spki)?;
    CaChain::from_chain(vec![der_cert.clone()])?;
    write_new(&ca.chain_file, &to_pem("CERTIFICATE", &der_cert), 0o644)?;
    audit
        .append(&[AuditRecord::CaKeyGenerated {
            key_type: format!("{key_type:?}"),
            key_label: ca.key_label.clone(),
            subject: subject_name.to_string(),
            serial: Some(hex::encode(&serial)),
            mode: None,
            spki_sha256: hex::encode(sha256(&spki.to_der().unwrap_or_default())),
            actor: super::operator_name(),
            ca: named_ca(&ca.name),
        }])
        .map_err(|e| e.to_string())?;
    println!(
        "CA {} created: {} ({key_type:?}); certificate in {}",
        ca.name,
        subject_name,
        ca.chain_file.display()
    );
    Ok(())
}

fn csr(
    cfg: &SignerConfig,
    ca: &CaConfig,
    subject: &str,
    key_type: &str,
    out: &Path,
) -> Result<(), String> {
    let subject_name = name::parse_dn(subject)?;
    if out.exists() {
        return Err(format!("{} already exists", out.display()));
    }
    let mut audit = open_audit(cfg)?;
    let (session, private, spki, alg, key_type) = generate(cfg, &ca.key_label, key_type)?;
    let info = CertReqInfo {
        version: CsrVersion::V1,
        subject: subject_name.clone(),
        public_key: spki.clone(),
        attributes: Default::default(),
    };
    let info_der = info.to_der().map_err(|e| e.to_string())?;
    let signer = SessionSigner {
        session: &session,
        key: private,
        algorithm: alg,
    };
    let sig = signer.sign(&info_der)?;
    let csr_der = cert::assemble_signed(&info_der, alg, &sig).map_err(|e| e.to_string())?;
    write_new(out, &to_pem("CERTIFICATE REQUEST", &csr_der), 0o644)?;
    audit
        .append(&[AuditRecord::CaKeyGenerated {
            key_type: format!("{key_type:?}"),
            key_label: ca.key_label.clone(),
            subject: subject_name.to_string(),
            serial: None,
            mode: Some("csr".into()),
            spki_sha256: hex::encode(sha256(&spki.to_der().unwrap_or_default())),
            actor: super::operator_name(),
            ca: named_ca(&ca.name),
        }])
        .map_err(|e| e.to_string())?;
    println!(
        "CA key generated in the token; CSR for {subject_name} written to {}",
        out.display()
    );
    Ok(())
}

fn read_pem_certs(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs = pem_certificates(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", path.display()));
    }
    Ok(certs)
}

fn import(
    cfg: &SignerConfig,
    target: &CaConfig,
    cert_path: &Path,
    chain_path: &Path,
) -> Result<(), String> {
    let mut chain = read_pem_certs(cert_path)?;
    chain.truncate(1);
    chain.extend(read_pem_certs(chain_path)?);
    let ca = CaChain::from_chain(chain)?;
    // The root must be self-signed: the chain must end where trust starts.
    let root = chain_last(&ca)?;
    cert::verify_certificate_signature(&root.0, &root.1)
        .map_err(|e| format!("the last certificate of the chain is not a self-signed root: {e}"))?;
    let (tok, session) = login(cfg)?;
    let (_, public) = tok
        .find_labelled_pair(&session, &target.key_label, "estctl ca csr")
        .map_err(|e| e.to_string())?;
    let spki = token::public_key_info(&session, public).map_err(|e| e.to_string())?;
    if spki.to_der().ok() != Some(ca.spki_der()) {
        return Err(format!(
            "the certificate is not for CA {}'s key ({:?}) in the token",
            target.name, target.key_label
        ));
    }
    let file = &target.chain_file;
    if file.exists() {
        let old = CaChain::load(file)?;
        if old.spki_der() != ca.spki_der() {
            return Err(format!(
                "{} holds a chain for another key; refusing to replace it",
                file.display()
            ));
        }
        std::fs::remove_file(file).map_err(|e| format!("{}: {e}", file.display()))?;
    }
    let mut audit = open_audit(cfg)?;
    write_new(file, &ca.to_pem(), 0o644)?;
    audit
        .append(&[AuditRecord::CaImported {
            subject: ca.subject.to_string(),
            chain_length: ca.chain.len(),
            actor: super::operator_name(),
            ca: named_ca(&target.name),
        }])
        .map_err(|e| e.to_string())?;
    println!(
        "CA {}: certificate for {} installed with a chain of {} in {}",
        target.name,
        ca.subject,
        ca.chain.len(),
        file.display()
    );
    Ok(())
}

/// `path` with its file stem's `-g<N>` suffix (if any) replaced by `-g<generation>`.
fn next_generation_file(path: &Path, generation: u32, suffix: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("ca-chain");
    let base = strip_generation(stem);
    path.with_file_name(format!("{base}-g{generation}{suffix}.pem"))
}

/// `text` without a trailing `-g<digits>`.
fn strip_generation(text: &str) -> &str {
    match text.rsplit_once("-g") {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => text,
    }
}

fn random_serial() -> Result<Vec<u8>, String> {
    let mut serial = vec![0u8; 16];
    SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| "no randomness")?;
    serial[0] = (serial[0] & 0x3f) | 0x40;
    Ok(serial)
}

fn rollover(
    cfg: &SignerConfig,
    ca: &CaConfig,
    key_type: &str,
    validity_days: u32,
) -> Result<(), String> {
    check_validity_days(validity_days)?;
    let old = CaChain::load(&ca.chain_file)?;
    let old_der = old.chain[0].clone();
    if old.chain.len() != 1 || cert::verify_certificate_signature(&old_der, &old.spki).is_err() {
        return Err(format!(
            "CA {} is signed by another CA: its next key needs that CA's signature. Add a \
             new `cas` entry, `estctl ca csr` it and `estctl ca import` what the root signs",
            ca.name
        ));
    }
    let generation = ca.generation + 1;
    let label = format!("{}-g{generation}", strip_generation(&ca.key_label));
    let chain_file = next_generation_file(&ca.chain_file, generation, "");
    let links_file = next_generation_file(&ca.chain_file, generation, "-links");
    for f in [&chain_file, &links_file] {
        if f.exists() {
            return Err(format!(
                "{} already exists; refusing to replace it",
                f.display()
            ));
        }
    }
    let key_type: CaKeyType = key_type.parse()?;
    let mut audit = open_audit(cfg)?;
    let (tok, session) = login(cfg)?;
    let (old_private, old_public) = tok
        .find_labelled_pair(&session, &ca.key_label, "estctl ca init")
        .map_err(|e| e.to_string())?;
    token::check_key_protection(&session, old_private).map_err(|e| e.to_string())?;
    let old_spki = token::public_key_info(&session, old_public).map_err(|e| e.to_string())?;
    if old_spki.to_der().ok() != Some(old.spki_der()) {
        return Err(format!(
            "{}: the CA certificate does not match the key labelled {:?}",
            ca.chain_file.display(),
            ca.key_label
        ));
    }
    let old_alg = token::ca_signature_algorithm(&old_spki).map_err(|e| e.to_string())?;
    let (private, public) =
        Token::generate_labelled_pair(&session, key_type, &label).map_err(|e| e.to_string())?;
    token::check_key_protection(&session, private).map_err(|e| e.to_string())?;
    let spki = token::public_key_info(&session, public).map_err(|e| e.to_string())?;
    let alg = token::ca_signature_algorithm(&spki).map_err(|e| e.to_string())?;
    let new_signer = SessionSigner {
        session: &session,
        key: private,
        algorithm: alg,
    };
    let old_signer = SessionSigner {
        session: &session,
        key: old_private,
        algorithm: old_alg,
    };
    let (ski, old_ski) = (cert::key_identifier(&spki), old.key_id.clone());
    let now = SystemTime::now();
    let not_before = now - Duration::from_secs(300);
    let subject = old.subject.clone();
    // NewWithNew: the new CA certificate, under the same name.
    let serial = random_serial()?;
    let new_ca = cert::sign_certificate(
        TbsSpec {
            serial: serial.clone(),
            issuer: subject.clone(),
            subject: subject.clone(),
            spki: spki.clone(),
            not_before,
            not_after: now + Duration::from_secs(u64::from(validity_days) * 86_400),
            extensions: cert::ca_extensions(&ski, Some(&ski)).map_err(|e| e.to_string())?,
            algorithm: alg,
        },
        &new_signer,
    )
    .map_err(|e| e.to_string())?;
    cert::verify_certificate_signature(&new_ca, &spki)?;
    // The links live while both keys do: until the old CA certificate expires.
    let link = |key: &spki::SubjectPublicKeyInfoOwned,
                key_id: &[u8],
                signed_by: &[u8],
                signer: &SessionSigner<'_>|
     -> Result<(Vec<u8>, Vec<u8>), String> {
        let serial = random_serial()?;
        let der = cert::sign_certificate(
            TbsSpec {
                serial: serial.clone(),
                issuer: subject.clone(),
                subject: subject.clone(),
                spki: key.clone(),
                not_before,
                not_after: old.not_after,
                extensions: cert::ca_extensions(key_id, Some(signed_by))
                    .map_err(|e| e.to_string())?,
                algorithm: signer.algorithm,
            },
            signer,
        )
        .map_err(|e| e.to_string())?;
        Ok((serial, der))
    };
    let (nwo_serial, new_with_old) = link(&spki, &ski, &old_ski, &old_signer)?;
    let (own_serial, old_with_new) = link(&old.spki, &old_ski, &ski, &new_signer)?;
    cert::verify_certificate_signature(&new_with_old, &old.spki)?;
    cert::verify_certificate_signature(&old_with_new, &spki)?;
    let chain = CaChain::from_chain(vec![new_ca.clone()])?;
    write_new(&chain_file, &to_pem("CERTIFICATE", &new_ca), 0o644)?;
    write_new(
        &links_file,
        &format!(
            "{}{}",
            to_pem("CERTIFICATE", &new_with_old),
            to_pem("CERTIFICATE", &old_with_new)
        ),
        0o644,
    )?;
    hsm_est_signer::ca::load_links(&links_file, &chain)?;
    audit
        .append(&[AuditRecord::CaRolledOver {
            ca: ca.name.clone(),
            generation,
            key_type: format!("{key_type:?}"),
            key_label: label.clone(),
            previous_key_label: ca.key_label.clone(),
            subject: subject.to_string(),
            serial: hex::encode(&serial),
            spki_sha256: hex::encode(sha256(&spki.to_der().unwrap_or_default())),
            new_with_old: hex::encode(&nwo_serial),
            old_with_new: hex::encode(&own_serial),
            actor: super::operator_name(),
        }])
        .map_err(|e| e.to_string())?;
    let id = hsm_est_signer::config::generation_id(&ca.name, generation);
    let crl_note = match &ca.crl_file {
        Some(f) => format!(
            "\n      crl_file: {}      # the old key keeps publishing here",
            f.display()
        ),
        None => String::new(),
    };
    let (where_, label_line) = match ca.name.as_str() {
        hsm_est_policy::DEFAULT_CA => (
            "`ca` (and token.key_label)".to_string(),
            format!("token.key_label: {label}"),
        ),
        name => (
            format!("the `cas` entry {name}"),
            format!("key_label: {label}"),
        ),
    };
    println!(
        "CA {} rolled over to generation {generation}: key {label:?} in the token, \
         certificate in {}, link certificates in {}.\n\
         Put it in service (signer stopped): in signer.yaml, {where_} becomes\n\
         \n  {label_line}\n  chain_file: {}\n  generation: {generation}\n  links_file: {}\n  \
         previous:\n    - generation: {}\n      key_label: {}\n      chain_file: {}{crl_note}\n\
         \ngive the new key its own CRL file (it is published at /crl/{id}), point the \
         profiles' crl_distribution_point there, and start the signer. Renewals then move \
         devices to the new key; the old one keeps answering for its certificates.",
        ca.name,
        chain_file.display(),
        links_file.display(),
        chain_file.display(),
        links_file.display(),
        ca.generation,
        ca.key_label,
        ca.chain_file.display(),
    );
    Ok(())
}

fn chain_last(ca: &CaChain) -> Result<(Vec<u8>, spki::SubjectPublicKeyInfoOwned), String> {
    let last = ca.chain.last().ok_or("empty chain")?;
    let c = cert::parse_certificate(last)?;
    Ok((last.clone(), c.tbs_certificate.subject_public_key_info))
}

fn show(cfg: &SignerConfig, target: &CaConfig, with_token: bool) -> Result<(), String> {
    let ca = CaChain::load(&target.chain_file)?;
    let role = match target.current {
        true if target.generation > 1 => format!(", generation {}", target.generation),
        true => String::new(),
        false => format!(
            ", generation {}: an earlier key, answering for its certificates",
            target.generation
        ),
    };
    println!(
        "CA {} (key {:?}, chain {}{role})",
        target.ledger_id(),
        target.key_label,
        target.chain_file.display()
    );
    for (i, der_cert) in ca.chain.iter().enumerate() {
        let c = cert::parse_certificate(der_cert)?;
        let t = &c.tbs_certificate;
        println!("[{i}] subject:     {}", t.subject);
        println!("    issuer:      {}", t.issuer);
        println!(
            "    serial:      {}",
            hex::encode(t.serial_number.as_bytes())
        );
        println!("    not before:  {}", t.validity.not_before);
        println!("    not after:   {}", t.validity.not_after);
        println!("    sha256:      {}", hex::encode(sha256(der_cert)));
    }
    if with_token {
        let (tok, session) = login(cfg)?;
        let (private, _) = tok
            .find_labelled_pair(&session, &target.key_label, "estctl ca init")
            .map_err(|e| e.to_string())?;
        println!("key {:?} attributes:", target.key_label);
        for a in token::describe_key(&session, private).map_err(|e| e.to_string())? {
            println!("    {a}");
        }
        match token::check_key_protection(&session, private) {
            Ok(()) => println!("key protection: ok"),
            Err(e) => println!("key protection: FAILED: {e}"),
        }
    }
    Ok(())
}
