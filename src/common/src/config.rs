//! Configuration files. Each is parsed strictly (`deny_unknown_fields` on every table) into a
//! `Raw*` type, then validated once into the type the program uses; errors name the key path
//! and invalid values are refused, never clamped. Relative paths are relative to the file.

use std::path::{Path, PathBuf};

/// Resolves `p` against the directory of the config file.
pub fn resolve(base: &Path, p: &str) -> PathBuf {
    let path = Path::new(p);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.parent().unwrap_or(Path::new(".")).join(path)
    }
}

/// A user or group given by name or by number.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(untagged)]
pub enum Principal {
    Id(u32),
    Name(String),
}

impl Principal {
    pub fn resolve_uid(&self) -> Result<u32, String> {
        match self {
            Principal::Id(id) => Ok(*id),
            Principal::Name(n) => match nix::unistd::User::from_name(n) {
                Ok(Some(u)) => Ok(u.uid.as_raw()),
                Ok(None) => Err(format!("no such user {n:?}")),
                Err(e) => Err(format!("cannot look up user {n:?}: {e}")),
            },
        }
    }

    pub fn resolve_gid(&self) -> Result<u32, String> {
        match self {
            Principal::Id(id) => Ok(*id),
            Principal::Name(n) => match nix::unistd::Group::from_name(n) {
                Ok(Some(g)) => Ok(g.gid.as_raw()),
                Ok(None) => Err(format!("no such group {n:?}")),
                Err(e) => Err(format!("cannot look up group {n:?}: {e}")),
            },
        }
    }
}
