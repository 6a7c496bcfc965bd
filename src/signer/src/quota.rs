//! Per-profile issuance quotas over a sliding hour (`quota:` in a profile): new devices and
//! re-keys. They bound what a compromised frontend can do even within policy. Each window
//! counts in ten-second buckets, at most 361 of them: memory is the same for a quota of ten
//! and of a million (a time stamp per issuance grew to megabytes in a 30-minute soak). A
//! bucket leaves the window when its newest possible moment is an hour old, so the window
//! is at most ten seconds longer than an hour: the quota errs on the side of refusing.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The window every quota counts over.
pub const QUOTA_WINDOW: Duration = Duration::from_secs(3600);

/// The resolution of a window.
pub const QUOTA_BUCKET: Duration = Duration::from_secs(10);

/// What a quota counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaKind {
    NewDevices,
    Rekeys,
}

/// One window: (bucket number, count) oldest first, and their sum.
#[derive(Default)]
struct Window {
    buckets: VecDeque<(u64, u32)>,
    total: u64,
}

/// The issuances counted in the last window, per (profile, kind).
pub struct Quotas {
    epoch: Instant,
    windows: Mutex<HashMap<(String, QuotaKind), Window>>,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            epoch: Instant::now(),
            windows: Mutex::default(),
        }
    }
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
        let bucket_secs = QUOTA_BUCKET.as_secs();
        let bucket = now.saturating_duration_since(self.epoch).as_secs() / bucket_secs;
        let span = QUOTA_WINDOW.as_secs() / bucket_secs;
        let window = windows.entry((profile.to_string(), kind)).or_default();
        // Bucket b ends at (b + 1) × 10 s; it has left the window once that is an hour ago.
        while let Some(&(b, n)) = window.buckets.front() {
            if b + 1 + span > bucket {
                break;
            }
            window.buckets.pop_front();
            window.total -= u64::from(n);
        }
        if window.total >= u64::from(limit) {
            return false;
        }
        match window.buckets.back_mut() {
            Some((b, n)) if *b == bucket => *n += 1,
            _ => window.buckets.push_back((bucket, 1)),
        }
        window.total += 1;
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
        // Not a moment before the hour is over; within one bucket after it.
        assert!(!q.try_take("p", QuotaKind::Rekeys, 2, t0 + QUOTA_WINDOW - QUOTA_BUCKET));
        let later = t0 + QUOTA_WINDOW + QUOTA_BUCKET;
        assert!(q.try_take("p", QuotaKind::Rekeys, 2, later));
    }

    #[test]
    fn a_window_holds_at_most_an_hour_of_buckets_whatever_the_quota() {
        let q = Quotas::default();
        let t0 = Instant::now();
        // Two hours at 100 issuances a second under a quota of a million.
        let mut taken = 0u64;
        for s in 0..7200u64 {
            for _ in 0..100 {
                if q.try_take(
                    "p",
                    QuotaKind::NewDevices,
                    1_000_000,
                    t0 + Duration::from_secs(s),
                ) {
                    taken += 1;
                }
            }
        }
        let windows = q.windows.lock().unwrap();
        let w = &windows[&("p".to_string(), QuotaKind::NewDevices)];
        assert!(w.buckets.len() <= 361, "{} buckets", w.buckets.len());
        assert!(w.total <= 361_000 && w.total >= 360_000, "{}", w.total);
        assert_eq!(taken, 720_000);
    }
}
