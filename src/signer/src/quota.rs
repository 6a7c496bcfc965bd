//! Per-profile issuance quotas over a sliding hour (`quota:` in a profile): new devices and
//! re-keys. They bound what a compromised frontend can do even within policy. Each window
//! keeps at most `limit` time stamps, so memory is bounded by the configured quotas.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The window every quota counts over.
pub const QUOTA_WINDOW: Duration = Duration::from_secs(3600);

/// What a quota counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaKind {
    NewDevices,
    Rekeys,
}

/// Time stamps of the issuances counted in the last window, per (profile, kind).
#[derive(Default)]
pub struct Quotas {
    windows: Mutex<HashMap<(String, QuotaKind), VecDeque<Instant>>>,
}

impl Quotas {
    /// Takes one unit of `profile`'s `kind` quota of `limit` per window, or says no. A unit
    /// taken is not given back if the issuance fails later: the quota counts attempts that
    /// passed policy, which is what bounds an attacker.
    pub fn try_take(&self, profile: &str, kind: QuotaKind, limit: u32, now: Instant) -> bool {
        let Ok(mut windows) = self.windows.lock() else {
            // A poisoned lock means a thread panicked while counting: refuse (fail closed).
            return false;
        };
        let window = windows.entry((profile.to_string(), kind)).or_default();
        while window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= QUOTA_WINDOW)
        {
            window.pop_front();
        }
        if window.len() >= limit as usize {
            return false;
        }
        window.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_admits_its_limit_then_frees_up_after_an_hour() {
        let q = Quotas::default();
        let t0 = Instant::now();
        assert!(q.try_take("p", QuotaKind::Rekeys, 2, t0));
        assert!(q.try_take("p", QuotaKind::Rekeys, 2, t0));
        assert!(!q.try_take("p", QuotaKind::Rekeys, 2, t0));
        // Other kinds and profiles count apart.
        assert!(q.try_take("p", QuotaKind::NewDevices, 1, t0));
        assert!(q.try_take("other", QuotaKind::Rekeys, 1, t0));
        let later = t0 + QUOTA_WINDOW;
        assert!(q.try_take("p", QuotaKind::Rekeys, 2, later));
    }
}
