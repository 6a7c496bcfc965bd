//! Who may connect and how often: client network allow-list, per-source request rate, and
//! failed-login limits per user and per source address.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ipnet::IpNet;

/// Entries kept before expired ones are swept.
const SWEEP_AT: usize = 10_000;
/// Hard bound on a limiter's keys: past it, after the sweep, the least recently active
/// quarter is dropped (an attacker with many keys cannot grow the map without bound).
const MAX_KEYS: usize = 100_000;

/// An allow-list entry: an IPv4 or IPv6 network in CIDR notation, or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(IpNet);

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let net = if s.contains('/') {
            s.parse::<IpNet>()
                .map_err(|_| format!("{s:?} is not a network (address/prefix)"))?
        } else {
            IpNet::from(
                s.parse::<IpAddr>()
                    .map_err(|_| format!("{s:?} is not an address or network"))?,
            )
        };
        Ok(Cidr(net))
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&canonical(ip))
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what a dual-stack socket reports) are
/// compared as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Fixed-window request counter per source address (`rate_limit` in the IQE guide).
pub struct RateLimiter {
    requests: u32,
    window: Duration,
    seen: Mutex<Swept<IpAddr, (Instant, u32)>>,
}

impl RateLimiter {
    pub fn new(requests: u32, window: Duration) -> Self {
        RateLimiter {
            requests,
            window,
            seen: Mutex::new(Swept::new()),
        }
    }

    /// `Err(seconds)` to wait when `ip` is over its budget.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        let now = Instant::now();
        let Ok(mut seen) = self.seen.lock() else {
            return Ok(());
        };
        let window = self.window;
        seen.sweep(
            |(start, _)| now.duration_since(*start) < window,
            |(start, _)| Some(*start),
        );
        let entry = seen.map.entry(canonical(ip)).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        if entry.1 >= self.requests {
            let left = self.window.saturating_sub(now.duration_since(entry.0));
            return Err(left.as_secs().max(1));
        }
        entry.1 += 1;
        Ok(())
    }
}

/// Failed logins within a sliding window, per key (a user name or a source address).
pub struct FailureLimiter {
    max: u32,
    window: Duration,
    failures: Mutex<Swept<String, VecDeque<Instant>>>,
}

/// A limiter's map and the size at which it is next swept: sweeping only when the map has
/// doubled since the last sweep keeps the cost per request constant however many keys an
/// attacker makes.
struct Swept<K, V> {
    map: HashMap<K, V>,
    next_sweep: usize,
}

impl<K: Clone + Eq + std::hash::Hash, V> Swept<K, V> {
    fn new() -> Self {
        Swept {
            map: HashMap::new(),
            next_sweep: SWEEP_AT,
        }
    }

    /// When due: drops entries `live` says are over, then, past [`MAX_KEYS`], the least
    /// recently active quarter.
    fn sweep(&mut self, live: impl Fn(&V) -> bool, last_active: impl Fn(&V) -> Option<Instant>) {
        if self.map.len() < self.next_sweep {
            return;
        }
        self.map.retain(|_, v| live(v));
        bound_keys(&mut self.map, last_active);
        self.next_sweep = (self.map.len() * 2).clamp(SWEEP_AT, MAX_KEYS);
    }
}

impl FailureLimiter {
    pub fn new(max: u32, window: Duration) -> Self {
        FailureLimiter {
            max,
            window,
            failures: Mutex::new(Swept::new()),
        }
    }

    /// `Err(seconds)` when `key` has reached the limit.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        let now = Instant::now();
        let Ok(mut swept) = self.failures.lock() else {
            return Ok(());
        };
        match swept.map.get_mut(key) {
            Some(q) => self.expire_and_test(q, now),
            None => Ok(()),
        }
    }

    /// Drops a key's failures older than the window; `Err(seconds to wait)` when the rest
    /// reach the limit.
    fn expire_and_test(&self, q: &mut VecDeque<Instant>, now: Instant) -> Result<(), u64> {
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            q.pop_front();
        }
        if q.len() as u32 >= self.max {
            let oldest = q.front().copied().unwrap_or(now);
            let left = self.window.saturating_sub(now.duration_since(oldest));
            return Err(left.as_secs().max(1));
        }
        Ok(())
    }

    /// Reserves one failure for each key, atomically and before any password work: `Err`
    /// (seconds to wait) if any key is at its limit, and then nothing is reserved. The
    /// reservation counts as a failure unless [`Reservation::succeeded`] is called, so
    /// concurrent wrong logins can never run more verifications than the limit.
    pub fn reserve(&self, keys: &[String]) -> Result<Reservation<'_>, u64> {
        let now = Instant::now();
        let Ok(mut swept) = self.failures.lock() else {
            return Err(1);
        };
        let window = self.window;
        swept.sweep(
            |q| q.back().is_some_and(|t| now.duration_since(*t) < window),
            |q| q.back().copied(),
        );
        let map = &mut swept.map;
        for key in keys {
            if let Some(q) = map.get_mut(key) {
                self.expire_and_test(q, now)?;
            }
        }
        for key in keys {
            map.entry(key.clone()).or_default().push_back(now);
        }
        Ok(Reservation {
            limiter: self,
            keys: keys.to_vec(),
            at: now,
            success: false,
        })
    }

    /// Records one failure for `key` (outside a reservation).
    pub fn record(&self, key: &str) {
        if let Ok(r) = self.reserve(&[key.to_string()]) {
            drop(r);
        }
    }

    fn release(&self, keys: &[String], at: Instant) {
        if let Ok(mut swept) = self.failures.lock() {
            let map = &mut swept.map;
            for key in keys {
                if let Some(q) = map.get_mut(key) {
                    if let Some(i) = q.iter().rposition(|t| *t == at) {
                        q.remove(i);
                    }
                    if q.is_empty() {
                        map.remove(key);
                    }
                }
            }
        }
    }
}

/// Failures reserved before a password verification; they stand unless it succeeded.
pub struct Reservation<'a> {
    limiter: &'a FailureLimiter,
    keys: Vec<String>,
    at: Instant,
    success: bool,
}

impl Reservation<'_> {
    /// The verification succeeded: the reserved failures are taken back.
    pub fn succeeded(mut self) {
        self.success = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.success {
            self.limiter.release(&self.keys, self.at);
        }
    }
}

/// Drops the least recently active quarter of a map that outgrew [`MAX_KEYS`].
fn bound_keys<K: Clone + Eq + std::hash::Hash, V>(
    map: &mut HashMap<K, V>,
    last_active: impl Fn(&V) -> Option<Instant>,
) {
    if map.len() <= MAX_KEYS {
        return;
    }
    let mut by_age: Vec<(Option<Instant>, K)> = map
        .iter()
        .map(|(k, v)| (last_active(v), k.clone()))
        .collect();
    by_age.sort_by_key(|(t, _)| *t);
    for (_, k) in by_age.into_iter().take(map.len() / 4) {
        map.remove(&k);
    }
}

/// The lockout key of a user name: the name and the client's network (/24 for IPv4, /64
/// for IPv6), so that failures from elsewhere never lock the real gateway out.
pub fn user_key(user: &str, ip: IpAddr) -> String {
    let net = match canonical(ip) {
        IpAddr::V4(v4) => IpNet::new(IpAddr::V4(v4), 24),
        IpAddr::V6(v6) => IpNet::new(IpAddr::V6(v6), 64),
    }
    .map(|n| n.trunc().to_string())
    .unwrap_or_else(|_| ip.to_string());
    format!("user:{user}@{net}")
}

/// Things one source address may hold at once (connections, password verifications), so
/// that one address cannot take what all share. A slot is held by the returned guard, which
/// may move to another task.
#[derive(Clone)]
pub struct PerAddress {
    max: u32,
    active: std::sync::Arc<Mutex<HashMap<IpAddr, u32>>>,
}

pub struct AddressSlot {
    active: std::sync::Arc<Mutex<HashMap<IpAddr, u32>>>,
    ip: IpAddr,
}

impl PerAddress {
    pub fn new(max: u32) -> Self {
        PerAddress {
            max,
            active: std::sync::Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// How many slots one address may hold.
    pub fn max(&self) -> u32 {
        self.max
    }

    /// A slot for `ip`, or `None` while it holds `max`. The map holds only addresses with
    /// a slot, so it is bounded by what is open.
    pub fn try_enter(&self, ip: IpAddr) -> Option<AddressSlot> {
        let ip = canonical(ip);
        let mut active = self.active.lock().ok()?;
        let n = active.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            active: std::sync::Arc::clone(&self.active),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        if let Ok(mut active) = self.active.lock() {
            if let Some(n) = active.get_mut(&self.ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    active.remove(&self.ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_matching() {
        let n: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(n.contains("10.1.2.3".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("10.1.2.3".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        let host: Cidr = "127.0.0.1".parse().unwrap();
        assert!(host.contains("127.0.0.1".parse().unwrap()));
        assert!(!host.contains("127.0.0.2".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
    }

    #[test]
    fn rate_and_failure_limits() {
        let r = RateLimiter::new(2, Duration::from_secs(60));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(r.check(ip).is_ok() && r.check(ip).is_ok());
        assert!(r.check(ip).unwrap_err() >= 1);
        assert!(r.check("192.0.2.2".parse().unwrap()).is_ok());
        let f = FailureLimiter::new(2, Duration::from_secs(60));
        assert!(f.check("u").is_ok());
        f.record("u");
        assert!(f.check("u").is_ok());
        f.record("u");
        assert!(f.check("u").is_err());
        assert!(f.check("v").is_ok());
    }

    #[test]
    fn reservations_count_before_the_work_and_successes_give_them_back() {
        let f = FailureLimiter::new(3, Duration::from_secs(60));
        let keys = ["ip:a".to_string(), "user:u@n".to_string()];
        // Three in flight at once take every failure slot; a fourth is refused before
        // any work.
        let held: Vec<_> = (0..3).map(|_| f.reserve(&keys).unwrap()).collect();
        assert!(f.reserve(&keys).is_err());
        assert!(f.reserve(&["ip:a".to_string()]).is_err());
        assert!(f.reserve(&["ip:b".to_string()]).is_ok());
        // One of them turns out right: its slot comes back.
        let mut held = held.into_iter();
        held.next().unwrap().succeeded();
        assert!(f.reserve(&keys).is_ok());
        drop(held);
        assert!(f.check("ip:a").is_err());
    }

    #[test]
    fn lockout_keys_by_network_and_concurrency_per_address() {
        let a: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(user_key("gw", a), "user:gw@192.0.2.0/24");
        assert_eq!(
            user_key("gw", "::ffff:192.0.2.9".parse().unwrap()),
            "user:gw@192.0.2.0/24"
        );
        assert_ne!(
            user_key("gw", "198.51.100.1".parse().unwrap()),
            user_key("gw", a)
        );
        assert_eq!(
            user_key("gw", "2001:db8:1:2:3::1".parse().unwrap()),
            "user:gw@2001:db8:1:2::/64"
        );
        let c = PerAddress::new(2);
        let s1 = c.try_enter(a).unwrap();
        let _s2 = c.try_enter(a).unwrap();
        assert!(c.try_enter(a).is_none());
        assert!(c.try_enter("192.0.2.8".parse().unwrap()).is_some());
        drop(s1);
        assert!(c.try_enter(a).is_some());
    }

    #[test]
    fn limiter_maps_stay_bounded() {
        let f = FailureLimiter::new(5, Duration::from_secs(600));
        for i in 0..(MAX_KEYS + SWEEP_AT) {
            f.record(&format!("user:{i}"));
        }
        assert!(f.failures.lock().unwrap().map.len() <= MAX_KEYS);
    }
}
