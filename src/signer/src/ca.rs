//! The CA's certificate chain as configured (`ca.chain_file`: the CA certificate first, then
//! any intermediates and the root).

use std::path::Path;
use std::time::SystemTime;

use der::Encode;
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::name::Name;
use x509_cert::Certificate;

use hsm_est_pki::{cert, pem_certificates};

pub struct CaChain {
    /// DER certificates, the CA first.
    pub chain: Vec<Vec<u8>>,
    pub certificate: Certificate,
    pub spki: SubjectPublicKeyInfoOwned,
    /// The CA public key, inspected once: the pre-release self-check verifies with it.
    pub key: hsm_est_pki::keys::PublicKey,
    pub subject: Name,
    pub key_id: Vec<u8>,
    pub not_after: SystemTime,
}

impl CaChain {
    pub fn load(path: &Path) -> Result<CaChain, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read the CA chain: {e}", path.display()))?;
        let chain = pem_certificates(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::from_chain(chain).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn from_chain(chain: Vec<Vec<u8>>) -> Result<CaChain, String> {
        let first = chain.first().ok_or("no certificate in the CA chain")?;
        let certificate = cert::parse_certificate(first)?;
        if !cert::is_signing_ca(&certificate) {
            return Err("the first certificate is not a CA allowed to sign certificates".into());
        }
        // Each certificate must be signed by the next; the last by itself (a root) or left to
        // the relying party (a partial chain).
        for pair in chain.windows(2) {
            let issuer = cert::parse_certificate(&pair[1])?;
            cert::verify_certificate_signature(
                &pair[0],
                &issuer.tbs_certificate.subject_public_key_info,
            )
            .map_err(|e| format!("chain does not verify: {e}"))?;
        }
        let spki = certificate.tbs_certificate.subject_public_key_info.clone();
        let key = hsm_est_pki::keys::inspect_spki(&spki).map_err(|e| format!("CA key: {}", e.0))?;
        let key_id =
            cert::subject_key_id(&certificate).unwrap_or_else(|| cert::key_identifier(&spki));
        let not_after = certificate
            .tbs_certificate
            .validity
            .not_after
            .to_system_time();
        Ok(CaChain {
            subject: certificate.tbs_certificate.subject.clone(),
            chain,
            certificate,
            spki,
            key,
            key_id,
            not_after,
        })
    }

    pub fn spki_der(&self) -> Vec<u8> {
        self.spki.to_der().unwrap_or_default()
    }

    /// The chain as PEM, the CA first.
    pub fn to_pem(&self) -> String {
        self.chain
            .iter()
            .map(|c| hsm_est_pki::to_pem("CERTIFICATE", c))
            .collect()
    }
}

/// The link certificates of a rollover (`links_file`): CA certificates with the subject of
/// `chain`'s CA, one for its key signed by the previous key (NewWithOld) and one for the
/// previous key signed by its key (OldWithNew), each verified here.
pub fn load_links(path: &Path, chain: &CaChain) -> Result<Vec<Vec<u8>>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read the link certificates: {e}", path.display()))?;
    let links = pem_certificates(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if links.len() != 2 {
        return Err(format!(
            "{}: expected two link certificates (NewWithOld, OldWithNew), found {}",
            path.display(),
            links.len()
        ));
    }
    let new_key = chain.spki_der();
    let parsed = links
        .iter()
        .map(|l| cert::parse_certificate(l))
        .collect::<Result<Vec<_>, _>>()?;
    for c in &parsed {
        if c.tbs_certificate.subject != chain.subject || !cert::is_signing_ca(c) {
            return Err(format!(
                "{}: a link certificate must be a CA certificate named {}",
                path.display(),
                chain.subject
            ));
        }
    }
    let spki = |c: &Certificate| c.tbs_certificate.subject_public_key_info.to_der().ok();
    // NewWithOld certifies this key, signed by the old one; OldWithNew the old key, signed
    // by this one.
    let (new_with_old, old_with_new) = match spki(&parsed[0]) == Some(new_key.clone()) {
        true => (0, 1),
        false => (1, 0),
    };
    if spki(&parsed[new_with_old]) != Some(new_key) {
        return Err(format!(
            "{}: no link certificate certifies this CA's key",
            path.display()
        ));
    }
    let old_spki = &parsed[old_with_new].tbs_certificate.subject_public_key_info;
    cert::verify_certificate_signature(&links[new_with_old], old_spki).map_err(|e| {
        format!(
            "{}: NewWithOld is not signed by the old key: {e}",
            path.display()
        )
    })?;
    cert::verify_certificate_signature(&links[old_with_new], &chain.spki).map_err(|e| {
        format!(
            "{}: OldWithNew is not signed by this key: {e}",
            path.display()
        )
    })?;
    Ok(vec![
        links[new_with_old].clone(),
        links[old_with_new].clone(),
    ])
}

/// One CA this signer holds: its chain, its key in the token, its CRL and the OCSP
/// identifiers that name it.
pub struct Authority {
    /// The CA's name, which profiles use.
    pub name: String,
    /// This key's id in the ledger, in CrlGet and in CRL URLs: the name for a CA's first
    /// key, `<name>-g<N>` after rollovers.
    pub id: String,
    /// Whether this key issues; earlier generations only answer for what they issued.
    pub current: bool,
    pub chain: CaChain,
    /// Link certificates of the rollover that made this key current (NewWithOld and
    /// OldWithNew, RFC 4210 §4.4), served in `cacerts` with the earlier CA certificate.
    pub links: Vec<Vec<u8>>,
    pub signer: std::sync::Arc<dyn hsm_est_pki::cert::CaSigner + Send + Sync>,
    pub(crate) crl: crate::crl::CaCrl,
    pub(crate) ocsp: crate::ocsp::OcspIssuer,
}

impl Authority {
    /// A CA's only (or current) key: generation 1, no links.
    pub fn new(
        name: &str,
        chain: CaChain,
        signer: std::sync::Arc<dyn hsm_est_pki::cert::CaSigner + Send + Sync>,
        crl_file: Option<std::path::PathBuf>,
    ) -> Authority {
        Authority {
            name: name.to_string(),
            id: name.to_string(),
            current: true,
            links: Vec::new(),
            ocsp: crate::ocsp::OcspIssuer::of(&chain),
            crl: crate::crl::CaCrl::new(crl_file),
            chain,
            signer,
        }
    }
}

/// Every CA of this signer, the default CA first. Looked up by name (a profile's `ca`, a
/// certificate's ledger row) or by the OCSP identifiers of a request.
pub struct Authorities(Vec<Authority>);

impl Authorities {
    /// `list` must start with the default CA; names are unique (the configuration checks).
    pub fn new(list: Vec<Authority>) -> Authorities {
        assert!(!list.is_empty(), "a signer holds at least its default CA");
        Authorities(list)
    }

    pub fn default_ca(&self) -> &Authority {
        &self.0[0]
    }

    /// The current key of the CA named `name`.
    pub fn get(&self, name: &str) -> Option<&Authority> {
        self.0.iter().find(|a| a.name == name && a.current)
    }

    /// The key whose ledger id is `id` (any generation).
    pub fn by_id(&self, id: &str) -> Option<&Authority> {
        self.0.iter().find(|a| a.id == id)
    }

    /// The earlier keys of the CA named `name`, newest first.
    pub fn earlier(&self, name: &str) -> impl Iterator<Item = &Authority> {
        let mut list: Vec<&Authority> = self
            .0
            .iter()
            .filter(|a| a.name == name && !a.current)
            .collect();
        list.sort_by_key(|a| std::cmp::Reverse(a.chain.not_after));
        list.into_iter()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Authority> {
        self.0.iter()
    }
}
