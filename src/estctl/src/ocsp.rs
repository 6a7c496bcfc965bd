//! `estctl ocsp init | status`: the delegated responder's key, generated in the token with
//! the signer stopped (it takes the audit log's lock); and a status query through the
//! operator socket, verified as a relying party would.

use std::path::Path;

use clap::Subcommand;
use der::Encode;

use hsm_est_pki::ocsp::{build_request, cert_id_for, random_nonce, verify_response, Status};
use hsm_est_pki::sha256;
use hsm_est_proto::{OcspHash, Request, Response};
use hsm_est_signer::audit::AuditRecord;
use hsm_est_signer::config::{OcspSigner, SignerConfig};
use hsm_est_signer::token::{self, CaKeyType, Token};

#[derive(Subcommand)]
pub enum OcspCommand {
    /// Generate the delegated OCSP responder's key in the token (sensitive, never
    /// extractable, sign only), labelled as ocsp.responder_key_label says. With
    /// `ocsp.signed_by: responder`, the signer then certifies it at every start and
    /// renews the certificate at half its life. Run with the signer stopped.
    Init {
        #[arg(long)]
        config: std::path::PathBuf,
        #[arg(long, default_value = "ec-p256")]
        key_type: String,
    },
    /// Ask the signer (operator socket) for a certificate's status, verify the signed
    /// answer against the CA certificate, and print it.
    Status {
        #[arg(long)]
        config: std::path::PathBuf,
        /// Serial number in hex.
        #[arg(long)]
        serial: String,
        /// Send a random nonce and check that it comes back.
        #[arg(long)]
        nonce: bool,
        /// The CA that issued the certificate (signer.yaml `cas`); the default CA when
        /// absent.
        #[arg(long)]
        ca: Option<String>,
    },
}

pub fn run(cmd: OcspCommand) -> Result<(), String> {
    match cmd {
        OcspCommand::Init { config, key_type } => init(&config, &key_type),
        OcspCommand::Status {
            config,
            serial,
            nonce,
            ca,
        } => status(&config, &serial, nonce, ca),
    }
}

fn init(config: &Path, key_type: &str) -> Result<(), String> {
    let cfg = SignerConfig::load(config)?;
    let key_type: CaKeyType = key_type.parse()?;
    let label = cfg.ocsp_responder_key_label.clone();
    let mut audit = crate::ca::open_audit(&cfg)?;
    let (_tok, session) = crate::ca::login(&cfg)?;
    let (private, public) =
        Token::generate_labelled_pair(&session, key_type, &label).map_err(|e| e.to_string())?;
    // Read back what the token made: the template is only a request.
    token::check_key_protection(&session, private).map_err(|e| e.to_string())?;
    let spki = token::public_key_info(&session, public).map_err(|e| e.to_string())?;
    token::ca_signature_algorithm(&spki).map_err(|e| e.to_string())?;
    audit
        .append(&[AuditRecord::OcspKeyGenerated {
            key_type: format!("{key_type:?}"),
            key_label: label.clone(),
            spki_sha256: hex::encode(sha256(&spki.to_der().unwrap_or_default())),
            actor: crate::operator_name(),
        }])
        .map_err(|e| e.to_string())?;
    println!("OCSP responder key {label:?} generated in the token ({key_type:?}).");
    if cfg.ocsp.signed_by == OcspSigner::Ca {
        println!(
            "To use it, set `ocsp: {{ signed_by: responder }}` in {} and restart the signer.",
            config.display()
        );
    } else {
        println!("Start the signer: it certifies the key and signs OCSP responses with it.");
    }
    Ok(())
}

fn status(
    config: &Path,
    serial_hex: &str,
    with_nonce: bool,
    ca: Option<String>,
) -> Result<(), String> {
    let cfg = crate::load(config)?;
    let serial = hex::decode(serial_hex.trim()).map_err(|_| "--serial must be hex")?;
    let chain_file = &crate::ca::named(&cfg, ca)?.chain_file;
    let ca = hsm_est_signer::ca::CaChain::load(chain_file)?.certificate;
    let id = cert_id_for(OcspHash::Sha256, &ca, &serial)?;
    let nonce = with_nonce.then(random_nonce).transpose()?;
    // The same bytes a client would send, parsed the way the frontend parses them.
    let request =
        build_request(std::slice::from_ref(&id), nonce.as_deref()).map_err(|e| e.to_string())?;
    let parsed = hsm_est_pki::ocsp::parse_request(&request).map_err(|e| e.to_string())?;
    let mut client = crate::connect(config)?;
    let Response::Ocsp { der } = crate::call(
        &mut client,
        &Request::OcspStatus {
            certs: parsed.certs,
            nonce: parsed.nonce,
        },
    )?
    else {
        return Err("unexpected answer from the signer".into());
    };
    let verified = verify_response(&der, &ca)?;
    if verified.nonce != nonce {
        return Err("the response does not carry the request's nonce".into());
    }
    let single = verified
        .singles
        .iter()
        .find(|s| s.cert_id == id)
        .ok_or("the response does not answer for this serial")?;
    let status = match single.status {
        Status::Good => "good".to_string(),
        Status::Unknown => "unknown".to_string(),
        Status::Revoked { at, reason } => format!(
            "revoked at {} reason {}",
            rfc3339(at),
            hsm_est_proto::messages::revocation_reason_name(reason)
        ),
    };
    println!("serial {}: {status}", hex::encode(&serial));
    println!(
        "signed by {}; this update {}, next update {}",
        if verified.delegated {
            "the delegated responder"
        } else {
            "the CA key"
        },
        rfc3339(single.this_update),
        rfc3339(single.next_update),
    );
    Ok(())
}

fn rfc3339(t: std::time::SystemTime) -> String {
    hsm_est_common::util::rfc3339_millis(hsm_est_common::util::unix_seconds(t) * 1000)
}
