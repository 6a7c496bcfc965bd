//! Bounded password logins, the same for EST users and for admins: the name's length, the
//! failure limits (per address, and per user name within the client's network), the
//! verification cache, one of the per-address and global verification slots, and a failure
//! reserved *before* Argon2 runs (given back when the password was right). Anything an
//! unauthenticated client can make us do is bounded here.

use std::net::IpAddr;
use std::time::Duration;

use crate::limits::{canonical, user_key, FailureLimiter, PerAddress};
use crate::users::{UserEntry, Verdict, Verifier};

/// User names longer than this are refused before any work (and never logged in full).
pub const MAX_NAME_BYTES: usize = 128;

/// Why a login did not succeed. The caller turns it into its protocol's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginRefusal {
    /// The user name is longer than [`MAX_NAME_BYTES`].
    NameTooLong,
    /// Too many failures for this address or this name: wait this many seconds.
    Locked(u64),
    /// Every verification slot (global or this address's) is taken: try again shortly.
    Busy,
    /// Wrong name or password.
    Invalid,
}

/// The accounts of one surface (EST users, or admins) and the bounds on checking them.
pub struct Logins {
    pub verifier: Verifier,
    failures: FailureLimiter,
    /// Password verifications (Argon2, 19 MiB each) running at once, all addresses
    /// together: at most one per core. Full means `Busy` at once, never a queue.
    argon2_slots: tokio::sync::Semaphore,
    /// Password verifications running at once per source address.
    per_address: PerAddress,
}

impl Logins {
    pub fn new(
        verifier: Verifier,
        max_failures: u32,
        window: Duration,
        concurrent_per_address: u32,
    ) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Logins {
            verifier,
            failures: FailureLimiter::new(max_failures, window),
            argon2_slots: tokio::sync::Semaphore::new(cores),
            per_address: PerAddress::new(concurrent_per_address),
        }
    }

    /// Checks `user`/`password` from `ip` with bounded work. Runs Argon2 on a blocking
    /// section of the calling (multi-threaded) runtime.
    pub async fn login(
        &self,
        user: &str,
        password: &str,
        ip: IpAddr,
    ) -> Result<UserEntry, LoginRefusal> {
        if user.len() > MAX_NAME_BYTES {
            return Err(LoginRefusal::NameTooLong);
        }
        let keys = [format!("ip:{}", canonical(ip)), user_key(user, ip)];
        for key in &keys {
            self.failures.check(key).map_err(LoginRefusal::Locked)?;
        }
        if let Some(entry) = self.verifier.cached(user, password) {
            return Ok(entry);
        }
        let Some(_address_slot) = self.per_address.try_enter(ip) else {
            return Err(LoginRefusal::Busy);
        };
        let Ok(_slot) = self.argon2_slots.try_acquire() else {
            return Err(LoginRefusal::Busy);
        };
        let reservation = self.failures.reserve(&keys).map_err(LoginRefusal::Locked)?;
        let verdict = tokio::task::block_in_place(|| self.verifier.verify(user, password));
        match verdict {
            Verdict::Valid(entry) => {
                reservation.succeeded();
                Ok(entry)
            }
            Verdict::Invalid => Err(LoginRefusal::Invalid),
        }
    }

    /// Counts one failure against `ip` (a wrong API token, for example): the same lockout
    /// then applies to passwords from that address.
    pub fn record_failure(&self, ip: IpAddr) {
        self.failures.record(&format!("ip:{}", canonical(ip)));
    }

    /// `Err(seconds)` while `ip` is locked out.
    pub fn check_address(&self, ip: IpAddr) -> Result<(), u64> {
        self.failures.check(&format!("ip:{}", canonical(ip)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::{hash_password, save, UsersFile};

    fn logins(dir: &std::path::Path, max_failures: u32) -> Logins {
        let path = dir.join("accounts.yaml");
        let mut file = UsersFile::default();
        file.users.push(UserEntry {
            name: "alice".into(),
            hash: hash_password("correct horse battery staple").unwrap(),
            labels: vec![],
            operations: vec![],
        });
        save(&path, &file).unwrap();
        Logins::new(
            Verifier::new(&path).unwrap(),
            max_failures,
            Duration::from_secs(60),
            1,
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn locks_out_after_failures_and_refuses_long_names() {
        let dir = std::env::temp_dir().join(format!("hsm-est-login-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let l = logins(&dir, 3);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(l
            .login("alice", "correct horse battery staple", ip)
            .await
            .is_ok());
        for _ in 0..3 {
            assert_eq!(
                l.login("alice", "wrong password, twenty", ip).await,
                Err(LoginRefusal::Invalid)
            );
        }
        assert!(matches!(
            l.login("alice", "correct horse battery staple", ip).await,
            Err(LoginRefusal::Locked(_))
        ));
        // Another network is not locked out by those failures.
        let other: IpAddr = "198.51.100.9".parse().unwrap();
        assert!(l
            .login("alice", "correct horse battery staple", other)
            .await
            .is_ok());
        let long = "a".repeat(MAX_NAME_BYTES + 1);
        assert_eq!(
            l.login(&long, "x", other).await,
            Err(LoginRefusal::NameTooLong)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
