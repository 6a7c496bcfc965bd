//! Browser sessions: a random 256-bit id in a `__Host-` cookie (HttpOnly, Secure,
//! SameSite=Strict, Path=/), kept here only as its SHA-256; an idle timeout and a maximum
//! age; a per-session CSRF token that every state-changing form must carry. The store is
//! bounded: past `max_sessions` the least recently used session ends.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};

pub const COOKIE: &str = "__Host-hsmest";
/// The login form's double-submit cookie: a login POST must carry the same value in the
/// form, which a cross-site page cannot read.
pub const LOGIN_COOKIE: &str = "__Host-hsmest-login";

#[derive(Debug, Clone)]
pub struct Session {
    pub admin: String,
    pub csrf: String,
    created: Instant,
    last_seen: Instant,
}

pub struct Sessions {
    idle: Duration,
    max_age: Duration,
    max: usize,
    by_hash: Mutex<HashMap<[u8; 32], Session>>,
}

/// 32 random bytes, hex.
pub fn random_token() -> Option<String> {
    let mut b = [0u8; 32];
    SystemRandom::new().fill(&mut b).ok()?;
    Some(hex::encode(b))
}

fn digest(id: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Equal-time comparison of two secrets.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Sessions {
    pub fn new(idle: Duration, max_age: Duration, max: usize) -> Self {
        Sessions {
            idle,
            max_age,
            max,
            by_hash: Mutex::new(HashMap::new()),
        }
    }

    fn live(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.last_seen) < self.idle && now.duration_since(s.created) < self.max_age
    }

    /// A new session for `admin`: the cookie value to set. `None` without randomness.
    pub fn create(&self, admin: &str) -> Option<String> {
        let id = random_token()?;
        let csrf = random_token()?;
        let now = Instant::now();
        let mut map = self.by_hash.lock().ok()?;
        if map.len() >= self.max {
            map.retain(|_, s| self.live(s, now));
        }
        if map.len() >= self.max {
            let oldest = map.iter().min_by_key(|(_, s)| s.last_seen).map(|(k, _)| *k);
            if let Some(k) = oldest {
                map.remove(&k);
            }
        }
        map.insert(
            digest(&id),
            Session {
                admin: admin.to_string(),
                csrf,
                created: now,
                last_seen: now,
            },
        );
        Some(id)
    }

    /// The live session of this cookie value, touched; an expired one is removed.
    pub fn get(&self, id: &str) -> Option<Session> {
        if id.len() != 64 {
            return None;
        }
        let key = digest(id);
        let now = Instant::now();
        let mut map = self.by_hash.lock().ok()?;
        let live = self.live(map.get(&key)?, now);
        if !live {
            map.remove(&key);
            return None;
        }
        let s = map.get_mut(&key)?;
        s.last_seen = now;
        Some(s.clone())
    }

    pub fn end(&self, id: &str) {
        if let Ok(mut map) = self.by_hash.lock() {
            map.remove(&digest(id));
        }
    }

    /// Ends every session of `admin` (the account was deleted, for example).
    pub fn end_all_of(&self, admin: &str) {
        if let Ok(mut map) = self.by_hash.lock() {
            map.retain(|_, s| s.admin != admin);
        }
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(headers: &'a hyper::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(hyper::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_are_bounded_and_end() {
        let s = Sessions::new(Duration::from_millis(200), Duration::from_secs(60), 2);
        let a = s.create("alice").unwrap();
        assert_eq!(s.get(&a).unwrap().admin, "alice");
        let b = s.create("bob").unwrap();
        let c = s.create("carol").unwrap();
        // Bounded: the least recently used (alice's) went.
        assert!(s.get(&a).is_none());
        assert!(s.get(&b).is_some() && s.get(&c).is_some());
        s.end(&b);
        assert!(s.get(&b).is_none());
        std::thread::sleep(Duration::from_millis(250));
        assert!(s.get(&c).is_none(), "idle timeout");
        assert!(s.get("short").is_none());
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("a", "ab"));
    }
}
