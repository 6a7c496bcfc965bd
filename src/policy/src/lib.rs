//! Issuance policy: YAML profiles in `policy/`, read by [`schema`] (serde, strict), checked
//! once into validated [`Profile`]s, and the [`evaluate`] step that decides a CSR against
//! one. The CSR proposes; the profile decides. Refusals are [`Denial`]s: policy knows no
//! wire protocol.
#![forbid(unsafe_code)]

pub mod denial;
pub mod evaluate;
pub mod profile;
pub mod schema;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use denial::{Denial, DenialKind};
pub use evaluate::{valid_dns_name, Approved, MAX_DNS_NAME_LEN};
pub use profile::{
    valid_ca_name, Profile, QuotaRule, RsaRule, SanRule, SubjectRule, DEFAULT_CA,
    MAX_ATTRIBUTE_LEN, MAX_BACKDATE_MINUTES, MAX_QUOTA_PER_HOUR, MAX_SAN_COUNT, MAX_VALIDITY_DAYS,
};
pub use schema::{ChannelBinding, RekeyRule, SanType, SupersededRule};

/// Who is calling the signer: the role of the socket the request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Caller {
    /// The network-facing EST process.
    Frontend,
    /// `estctl` on the appliance's shell.
    Operator,
    /// The admin process (dashboard and admin API).
    Admin,
}

impl Caller {
    pub fn as_str(self) -> &'static str {
        match self {
            Caller::Frontend => "frontend",
            Caller::Operator => "operator",
            Caller::Admin => "admin",
        }
    }
}

/// What an issuance is for (IQE guide and RFC 7030).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Bootstrap,
    Enroll,
    Reenroll,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Bootstrap => "bootstrap",
            Operation::Enroll => "enroll",
            Operation::Reenroll => "reenroll",
        }
    }
}

/// All profiles of a deployment, by name.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub profiles: BTreeMap<String, Profile>,
}

impl Policy {
    /// Loads every `*.yaml` file in `dir`; each holds one profile. Names must be unique.
    pub fn load_dir(dir: &Path) -> Result<Policy, String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| format!("{}: cannot read policy directory: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        files.sort();
        let mut policy = Policy::default();
        for file in files {
            let text =
                std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let profile = Profile::from_yaml(&file.display().to_string(), &text)?;
            if policy.profiles.contains_key(&profile.name) {
                return Err(format!(
                    "{}: name: profile {} is defined twice",
                    file.display(),
                    profile.name
                ));
            }
            policy.profiles.insert(profile.name.clone(), profile);
        }
        if policy.profiles.is_empty() {
            return Err(format!("{}: no profiles (*.yaml) found", dir.display()));
        }
        Ok(policy)
    }

    pub fn profile(&self, name: &str) -> Result<&Profile, Denial> {
        self.profiles.get(name).ok_or_else(|| {
            Denial::new(
                DenialKind::UnknownProfile,
                "profile.unknown",
                "unknown certificate profile",
            )
        })
    }
}

#[cfg(test)]
mod tests;

/// CSRs built in code for unit tests; the same file serves the end-to-end tests.
#[cfg(test)]
#[path = "../../../tests/common/csrgen.rs"]
#[allow(dead_code)]
mod csrgen;
