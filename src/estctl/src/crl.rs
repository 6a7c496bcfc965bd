//! `estctl crl generate | show`: have the signer sign the next CRL (operator socket), and
//! read the current one.

use std::path::Path;

use der::Decode;
use x509_cert::crl::CertificateList;

use hsm_est_proto::{Request, Response};

/// Asks the signer for a new CRL of CA `ca` (the default CA when `None`); writes it to
/// `out` (DER, or PEM when the name ends in `.pem`) and prints a summary.
pub fn generate(config: &Path, out: Option<&Path>, ca: Option<&str>) -> Result<(), String> {
    let mut client = crate::connect(config)?;
    let Response::Crl { der } = crate::call(
        &mut client,
        &Request::CrlGenerate {
            actor: crate::operator_name(),
            ca: ca.unwrap_or_default().to_string(),
        },
    )?
    else {
        return Err("unexpected answer from the signer".into());
    };
    if let Some(out) = out {
        let bytes = if out.extension().is_some_and(|e| e == "pem") {
            pem(&der).into_bytes()
        } else {
            der.clone()
        };
        std::fs::write(out, &bytes).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    summary(&der)
}

/// Prints the CRL in `file` (DER or PEM), or CA `ca`'s CRL file (the default CA's
/// `crl.file` when `ca` is `None`).
pub fn show(config: &Path, file: Option<&Path>, ca: Option<&str>) -> Result<(), String> {
    let path = match file {
        Some(f) => f.to_path_buf(),
        None => {
            let cfg = crate::load(config)?;
            let name = ca.unwrap_or(hsm_est_policy::DEFAULT_CA);
            cfg.ca(name)
                .ok_or_else(|| format!("signer.yaml has no CA named {name:?}"))?
                .crl_file
                .clone()
                .ok_or_else(|| format!("CA {name} has no CRL file in signer.yaml; give --file"))?
        }
    };
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let der = match std::str::from_utf8(&bytes) {
        Ok(text) if text.contains("-----BEGIN X509 CRL-----") => {
            let (_, der) = der::pem::decode_vec(text.as_bytes()).map_err(|e| e.to_string())?;
            der
        }
        _ => bytes,
    };
    summary(&der)
}

fn pem(der: &[u8]) -> String {
    der::pem::encode_string("X509 CRL", der::pem::LineEnding::LF, der).unwrap_or_default()
}

fn summary(der: &[u8]) -> Result<(), String> {
    let crl = CertificateList::from_der(der).map_err(|e| format!("not a CRL: {e}"))?;
    let tbs = &crl.tbs_cert_list;
    let number = hsm_est_pki::crl::crl_number(der)
        .map(|n| n.to_string())
        .unwrap_or_else(|| "none".into());
    println!("CRL number {number}");
    println!("issuer       {}", tbs.issuer);
    println!("this update  {}", tbs.this_update);
    if let Some(next) = &tbs.next_update {
        println!("next update  {next}");
    }
    let revoked = tbs.revoked_certificates.as_deref().unwrap_or(&[]);
    println!("{} revoked certificate(s)", revoked.len());
    for r in revoked {
        let reason = r
            .crl_entry_extensions
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .find(|e| e.extn_id == hsm_est_pki::oid::CE_CRL_REASON)
            .and_then(|e| x509_cert::ext::pkix::CrlReason::from_der(e.extn_value.as_bytes()).ok())
            .map(|r| format!("{r:?}"))
            .unwrap_or_else(|| "unspecified".into());
        println!(
            "  {}  {}  {reason}",
            hex::encode(r.serial_number.as_bytes()),
            r.revocation_date
        );
    }
    Ok(())
}
