//! Account files: the EST users file (`estctl add-user|list-users|delete-user`) and the
//! admins file (`estctl add-admin|list-admins|delete-admin|add-admin-token`), in the same
//! format, and the verifier each process uses on its own file. Argon2id hashes; an unknown user costs the same work as a
//! wrong password; successful verifications are cached briefly under a keyed hash so that a
//! gateway sending thousands of enrolments with one credential does not pay Argon2 each
//! time; the cache is dropped whenever the users file changes.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The IQE guide asks for 16+ character passwords.
pub const MIN_PASSWORD_LEN: usize = 16;
pub const MAX_PASSWORD_LEN: usize = 1024;
pub const MAX_USER_LEN: usize = 64;
/// How long a successful verification is remembered after its last use. Each use renews
/// it, so a gateway that keeps enrolling never meets an expiry (which would send all its
/// requests of that moment to Argon2 at once, and most of them away with 503). An entry
/// is only good while the user's stored hash is the one it verified against: a changed
/// password or a removed user ends it at once.
pub const CACHE_TTL: Duration = Duration::from_secs(300);
/// Entries in the verification cache before it is emptied.
const CACHE_MAX: usize = 10_000;

/// OWASP's Argon2id baseline: 19 MiB, 2 passes, 1 lane.
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    pub name: String,
    pub hash: String,
    /// Labels this user may use; empty means all (the default route is label `default`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Operations this user may perform (bootstrap, simpleenroll, simplereenroll); empty
    /// means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operations: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersFile {
    #[serde(default)]
    pub users: Vec<UserEntry>,
    /// API tokens (admins file only): random secrets of which only the SHA-256 is kept, so
    /// checking one needs no Argon2. A token works while its user exists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<TokenEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Short public identifier, to list and delete the token.
    pub id: String,
    pub user: String,
    /// Hex SHA-256 of the secret.
    pub sha256: String,
    /// Seconds since the epoch.
    pub created: i64,
}

/// Prefix of every API token, so that a leaked one is recognisable in a scan.
pub const TOKEN_PREFIX: &str = "hsmest_";

/// A new API token for `user`: the secret to show once, and the entry to store.
pub fn new_token(user: &str, created: i64) -> Result<(String, TokenEntry), String> {
    let mut id = [0u8; 4];
    let mut secret = [0u8; 32];
    let rng = SystemRandom::new();
    rng.fill(&mut id).map_err(|_| "no randomness".to_string())?;
    rng.fill(&mut secret)
        .map_err(|_| "no randomness".to_string())?;
    let id = hex::encode(id);
    let token = format!("{TOKEN_PREFIX}{id}_{}", hex::encode(secret));
    let entry = TokenEntry {
        id,
        user: user.to_string(),
        sha256: hex::encode(ring::digest::digest(
            &ring::digest::SHA256,
            token.as_bytes(),
        )),
        created,
    };
    Ok((token, entry))
}

pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_USER_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

/// Argon2id PHC string of `password` with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| "no randomness".to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

fn verify_hash(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

pub fn load(path: &Path) -> Result<UsersFile, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(UsersFile::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Parses and checks the text of an accounts file: names, hash syntax, token digests.
pub fn parse(text: &str) -> Result<UsersFile, String> {
    let file: UsersFile = yaml_serde::from_str(text).map_err(|e| e.to_string())?;
    for u in &file.users {
        if !valid_user_name(&u.name) {
            return Err(format!("bad user name {:?}", u.name));
        }
        PasswordHash::new(&u.hash).map_err(|_| format!("user {}: bad hash", u.name))?;
    }
    for t in &file.tokens {
        let ok = t.sha256.len() == 64 && hex::decode(&t.sha256).is_ok();
        if !ok {
            return Err(format!("token {}: bad sha256", t.id));
        }
    }
    Ok(file)
}

/// Writes the users file atomically with mode 0640 (`write_atomically`): two concurrent
/// saves cannot both hold the temporary file, so one of them fails instead of losing the
/// other's change.
pub fn save(path: &Path, file: &UsersFile) -> Result<(), String> {
    let text = yaml_serde::to_string(file).map_err(|e| e.to_string())?;
    let mut data =
        b"# hsm-est accounts (Argon2id). Manage with estctl; do not edit hashes by hand.\n"
            .to_vec();
    data.extend_from_slice(text.as_bytes());
    hsm_est_common::util::write_atomically(path, &data, USERS_FILE_MODE)
}

fn token_map(file: &UsersFile) -> HashMap<[u8; 32], String> {
    file.tokens
        .iter()
        .filter_map(|t| {
            let bytes: [u8; 32] = hex::decode(&t.sha256).ok()?.try_into().ok()?;
            Some((bytes, t.user.clone()))
        })
        .collect()
}

/// Mode of the users file: the frontend's group reads it, nobody else.
pub const USERS_FILE_MODE: u32 = 0o640;

/// The result of checking Basic credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Valid(UserEntry),
    Invalid,
}

#[derive(PartialEq, Eq, Clone, Copy)]
struct Stamp {
    len: u64,
    mtime: i64,
    mtime_ns: i64,
    ino: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    std::fs::metadata(path).ok().map(|m| Stamp {
        len: m.len(),
        mtime: m.mtime(),
        mtime_ns: m.mtime_nsec(),
        ino: m.ino(),
    })
}

struct State {
    stamp: Option<Stamp>,
    users: HashMap<String, UserEntry>,
    /// SHA-256 of each API token's secret, to its user.
    tokens: HashMap<[u8; 32], String>,
    /// HMAC tag of (user, password) → the user, the password hash it verified against,
    /// and when it was last used.
    cache: HashMap<[u8; 32], (String, String, Instant)>,
}

pub struct Verifier {
    path: PathBuf,
    state: Mutex<State>,
    cache_key: ring::hmac::Key,
    cache_ttl: Duration,
    dummy_hash: String,
}

impl Verifier {
    pub fn new(path: &Path) -> Result<Verifier, String> {
        let file = load(path)?;
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &SystemRandom::new())
            .map_err(|_| "no randomness".to_string())?;
        Ok(Verifier {
            path: path.to_path_buf(),
            state: Mutex::new(State {
                stamp: stamp(path),
                tokens: token_map(&file),
                users: file
                    .users
                    .into_iter()
                    .map(|u| (u.name.clone(), u))
                    .collect(),
                cache: HashMap::new(),
            }),
            cache_key: key,
            cache_ttl: CACHE_TTL,
            dummy_hash: hash_password("not a password of anyone, only for equal timing")?,
        })
    }

    /// Reloads the users file if it changed, dropping every cached verification.
    fn refresh(&self, state: &mut State) {
        let now = stamp(&self.path);
        if now == state.stamp {
            return;
        }
        match load(&self.path) {
            Ok(file) => {
                state.tokens = token_map(&file);
                state.users = file
                    .users
                    .into_iter()
                    .map(|u| (u.name.clone(), u))
                    .collect();
                state.cache.clear();
                state.stamp = now;
                tracing::info!("users file {} reloaded", self.path.display());
            }
            Err(e) => tracing::error!("users file not reloaded, keeping the old one: {e}"),
        }
    }

    /// The user an API token belongs to, if it is one of the file's and the user exists.
    /// Tokens are 256-bit random secrets: one SHA-256, no Argon2, is enough.
    pub fn verify_token(&self, token: &str) -> Option<UserEntry> {
        if token.len() > 200 || !token.starts_with(TOKEN_PREFIX) {
            return None;
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut state = self.state.lock().ok()?;
        self.refresh(&mut state);
        let user = state.tokens.get(digest.as_ref())?;
        state.users.get(user).cloned()
    }

    /// Whether `name` is in the file now (the file is reloaded if it changed).
    pub fn contains(&self, name: &str) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        self.refresh(&mut state);
        state.users.contains_key(name)
    }

    /// The HMAC under this process's random key that the verification cache is keyed by.
    fn cache_tag(&self, user: &str, password: &str) -> [u8; 32] {
        let mut mac_input = Zeroizing::new(Vec::with_capacity(user.len() + password.len() + 1));
        mac_input.extend_from_slice(user.as_bytes());
        mac_input.push(0);
        mac_input.extend_from_slice(password.as_bytes());
        let tag = ring::hmac::sign(&self.cache_key, &mac_input);
        let mut key = [0u8; 32];
        key.copy_from_slice(tag.as_ref());
        key
    }

    /// The user, when these exact credentials verified within the last minutes: no Argon2.
    pub fn cached(&self, user: &str, password: &str) -> Option<UserEntry> {
        if password.len() > MAX_PASSWORD_LEN || user.len() > MAX_USER_LEN {
            return None;
        }
        let key = self.cache_tag(user, password);
        let mut state = self.state.lock().ok()?;
        self.refresh(&mut state);
        let entry = state.users.get(user)?.clone();
        match state.cache.get_mut(&key) {
            Some((cached_user, hash, at))
                if *cached_user == user && *hash == entry.hash && at.elapsed() < self.cache_ttl =>
            {
                *at = Instant::now();
                Some(entry)
            }
            _ => None,
        }
    }

    /// Checks Basic credentials. Runs Argon2 (tens of milliseconds, 19 MiB) unless the same
    /// credentials verified recently: call it off the async runtime's threads, holding one
    /// of the bounded verification slots.
    pub fn verify(&self, user: &str, password: &str) -> Verdict {
        if password.len() > MAX_PASSWORD_LEN || user.len() > MAX_USER_LEN {
            return Verdict::Invalid;
        }
        if let Some(e) = self.cached(user, password) {
            return Verdict::Valid(e);
        }
        let entry = {
            let Ok(state) = self.state.lock() else {
                return Verdict::Invalid;
            };
            state.users.get(user).cloned()
        };
        // An unknown user costs one Argon2 verification too, so timing does not tell.
        let ok = match &entry {
            Some(e) => verify_hash(password, &e.hash),
            None => {
                let _ = verify_hash(password, &self.dummy_hash);
                false
            }
        };
        match entry {
            Some(e) if ok => {
                let key = self.cache_tag(user, password);
                if let Ok(mut state) = self.state.lock() {
                    if state.cache.len() >= CACHE_MAX {
                        state.cache.clear();
                    }
                    state
                        .cache
                        .insert(key, (user.to_string(), e.hash.clone(), Instant::now()));
                }
                Verdict::Valid(e)
            }
            _ => Verdict::Invalid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory with a users file holding `iqe-gateway` (password "correct horse
    /// battery staple").
    fn gateway_users_file(name: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("hsm-est-users-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("users.yaml");
        let mut file = UsersFile::default();
        file.users.push(UserEntry {
            name: "iqe-gateway".into(),
            hash: hash_password("correct horse battery staple").unwrap(),
            labels: vec![],
            operations: vec![],
        });
        save(&path, &file).unwrap();
        (dir, path)
    }

    /// Each use renews a cached verification: a gateway that keeps enrolling is never sent
    /// back to Argon2 by the clock, and one that goes quiet is after the TTL.
    #[test]
    fn a_cached_verification_is_renewed_by_use_and_expires_when_unused() {
        let (dir, path) = gateway_users_file("ttl");
        let mut v = Verifier::new(&path).unwrap();
        v.cache_ttl = Duration::from_secs(2);
        let (user, password) = ("iqe-gateway", "correct horse battery staple");
        assert!(v.cached(user, password).is_none(), "nothing verified yet");
        assert!(matches!(v.verify(user, password), Verdict::Valid(_)));
        // Used every 100 ms for more than twice the TTL: never expires.
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(4500) {
            assert!(
                v.cached(user, password).is_some(),
                "expired while in use, {:?} after the first verification",
                start.elapsed()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // Unused for longer than the TTL: gone, and the next verify runs Argon2 again.
        std::thread::sleep(Duration::from_millis(2500));
        assert!(
            v.cached(user, password).is_none(),
            "outlived its TTL unused"
        );
        assert!(matches!(v.verify(user, password), Verdict::Valid(_)));
        assert!(v.cached(user, password).is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn add_verify_cache_and_reload() {
        let (dir, path) = gateway_users_file("reload");
        let v = Verifier::new(&path).unwrap();
        assert!(matches!(
            v.verify("iqe-gateway", "correct horse battery staple"),
            Verdict::Valid(_)
        ));
        // Cached now; still correct.
        assert!(matches!(
            v.verify("iqe-gateway", "correct horse battery staple"),
            Verdict::Valid(_)
        ));
        assert_eq!(
            v.verify("iqe-gateway", "wrong password here!!"),
            Verdict::Invalid
        );
        assert_eq!(
            v.verify("nobody", "correct horse battery staple"),
            Verdict::Invalid
        );
        // A changed password ends the cached verification of the old one at once.
        std::thread::sleep(Duration::from_millis(20));
        let mut changed = UsersFile::default();
        changed.users.push(UserEntry {
            name: "iqe-gateway".into(),
            hash: hash_password("a new passphrase for the gateway").unwrap(),
            labels: vec![],
            operations: vec![],
        });
        save(&path, &changed).unwrap();
        assert_eq!(
            v.verify("iqe-gateway", "correct horse battery staple"),
            Verdict::Invalid
        );
        assert!(v
            .cached("iqe-gateway", "correct horse battery staple")
            .is_none());
        assert!(matches!(
            v.verify("iqe-gateway", "a new passphrase for the gateway"),
            Verdict::Valid(_)
        ));
        // Deleting the user takes effect at once, cache or not.
        std::thread::sleep(Duration::from_millis(20));
        save(&path, &UsersFile::default()).unwrap();
        assert_eq!(
            v.verify("iqe-gateway", "correct horse battery staple"),
            Verdict::Invalid
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
