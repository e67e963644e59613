//! Throttling of failed logins per client address (docs/PROTOCOL.md, "Authentication, origins,
//! scopes").
//!
//! Past `max_failures` failed authentications within `failure_window_ms`, an address is locked
//! out for `lockout_ms`: whatever it sends gets HTTP 429 with `Retry-After` (and `-32024`
//! inside a connection it already has). IPv6 addresses count by their /64, since one host
//! holds a whole /64. At most [`MAX_TRACKED`] addresses are remembered; the least recently seen
//! is forgotten first, so memory stays bounded whatever an attacker sends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Most addresses tracked at once.
pub const MAX_TRACKED: usize = 10_000;

/// The settings of the throttle (from `gateway.auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Failures allowed within the window.
    pub max_failures: u32,
    /// The window, in ms.
    pub window_ms: u64,
    /// How long an address stays locked out, in ms.
    pub lockout_ms: u64,
    /// Whether loopback addresses are throttled too.
    pub loopback: bool,
}

impl From<&crate::config::AuthConfig> for Limits {
    fn from(auth: &crate::config::AuthConfig) -> Self {
        Self {
            max_failures: auth.max_failures,
            window_ms: auth.failure_window_ms,
            lockout_ms: auth.lockout_ms,
            loopback: auth.throttle_loopback,
        }
    }
}

/// An address as the throttle counts it: IPv4 whole, IPv6 by its /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    /// An IPv4 address.
    V4(u32),
    /// The upper 64 bits of an IPv6 address.
    V6(u64),
}

impl Key {
    /// The key of `ip` (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(u32::from(v4)),
                None => Self::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: u64,
    failures: u32,
    locked_until: u64,
    last_seen: u64,
    /// Failures counted in all, for the log line.
    total: u64,
}

/// A failed login that locked its address out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lockout {
    /// Failures in the window that tripped it.
    pub failures: u32,
    /// Failures of this address since it was first seen.
    pub total: u64,
    /// How long it lasts, in ms.
    pub lockout_ms: u64,
}

/// The failed-login throttle of one gateway.
#[derive(Default)]
pub struct Throttle {
    entries: Mutex<HashMap<Key, Entry>>,
    /// Addresses locked out now (or recently: cleared lazily), so the hot path skips the lock.
    locked: AtomicUsize,
    failures_total: std::sync::atomic::AtomicU64,
}

impl Throttle {
    fn applies(limits: &Limits, ip: IpAddr) -> bool {
        limits.loopback || !ip.is_loopback()
    }

    /// Ms until `ip` may try again, when it is locked out now.
    pub fn locked_for(&self, limits: &Limits, ip: IpAddr, now_ms: u64) -> Option<u64> {
        if self.locked.load(Ordering::Relaxed) == 0 || !Self::applies(limits, ip) {
            return None;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let entry = entries.get_mut(&Key::of(ip))?;
        if entry.locked_until > now_ms {
            entry.last_seen = now_ms;
            return Some(entry.locked_until - now_ms);
        }
        if entry.locked_until != 0 {
            entry.locked_until = 0;
            entry.failures = 0;
            entry.window_start = now_ms;
            self.locked.fetch_sub(1, Ordering::Relaxed);
        }
        None
    }

    /// Counts a failed login of `ip`; returns the lockout when this failure started one.
    pub fn failed(&self, limits: &Limits, ip: IpAddr, now_ms: u64) -> Option<Lockout> {
        self.failures_total.fetch_add(1, Ordering::Relaxed);
        if !Self::applies(limits, ip) {
            return None;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let key = Key::of(ip);
        if !entries.contains_key(&key) && entries.len() >= MAX_TRACKED {
            // Forget the least recently seen address (O(n), only when the table is full).
            if let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, e)| e.last_seen)
                .map(|(k, _)| *k)
                && let Some(gone) = entries.remove(&oldest)
                && gone.locked_until != 0
            {
                self.locked.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let entry = entries.entry(key).or_insert(Entry {
            window_start: now_ms,
            failures: 0,
            locked_until: 0,
            last_seen: now_ms,
            total: 0,
        });
        entry.last_seen = now_ms;
        entry.total += 1;
        if entry.locked_until > now_ms {
            return None;
        }
        if now_ms.saturating_sub(entry.window_start) > limits.window_ms {
            entry.window_start = now_ms;
            entry.failures = 0;
        }
        entry.failures += 1;
        if entry.failures > limits.max_failures {
            if entry.locked_until == 0 {
                self.locked.fetch_add(1, Ordering::Relaxed);
            }
            entry.locked_until = now_ms + limits.lockout_ms;
            return Some(Lockout {
                failures: entry.failures,
                total: entry.total,
                lockout_ms: limits.lockout_ms,
            });
        }
        None
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    /// Addresses locked out now (an expired lockout counts until that address is seen again).
    pub fn lockouts(&self) -> usize {
        self.locked.load(Ordering::Relaxed)
    }

    /// Failed logins counted since start.
    pub fn failures_total(&self) -> u64 {
        self.failures_total.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_failures: 3,
        window_ms: 1000,
        lockout_ms: 5000,
        loopback: false,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn locks_after_the_allowed_failures_and_unlocks_after_the_lockout() {
        let t = Throttle::default();
        let a = ip("10.1.2.3");
        for i in 0..3 {
            assert_eq!(t.failed(&LIMITS, a, i), None);
        }
        let lock = t.failed(&LIMITS, a, 3).expect("locked");
        assert_eq!(lock.failures, 4);
        assert_eq!(t.locked_for(&LIMITS, a, 4), Some(4999));
        assert_eq!(t.locked_for(&LIMITS, ip("10.1.2.4"), 4), None);
        assert_eq!(t.locked_for(&LIMITS, a, 5003), None);
        assert_eq!(t.lockouts(), 0);
        // A fresh window after the lockout.
        assert_eq!(t.failed(&LIMITS, a, 5004), None);
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let t = Throttle::default();
        let a = ip("10.0.0.1");
        for i in 0..10 {
            assert_eq!(t.failed(&LIMITS, a, i * 600), None, "{i}");
        }
    }

    #[test]
    fn ipv6_counts_by_its_64_and_loopback_is_exempt() {
        let t = Throttle::default();
        for i in 0..4 {
            let addr = ip(&format!("2001:db8:1:2::{i}"));
            let locked = t.failed(&LIMITS, addr, 10);
            assert_eq!(locked.is_some(), i == 3, "{i}");
        }
        assert!(
            t.locked_for(&LIMITS, ip("2001:db8:1:2:ffff::1"), 11)
                .is_some()
        );
        assert!(t.locked_for(&LIMITS, ip("2001:db8:1:3::1"), 11).is_none());
        for i in 0..10 {
            assert_eq!(t.failed(&LIMITS, ip("127.0.0.1"), i), None);
        }
        let strict = Limits {
            loopback: true,
            ..LIMITS
        };
        assert!((0..4).any(|i| t.failed(&strict, ip("::1"), i).is_some()));
    }

    #[test]
    fn memory_is_bounded() {
        let t = Throttle::default();
        for i in 0..(MAX_TRACKED as u32 + 500) {
            t.failed(&LIMITS, IpAddr::from(i.to_be_bytes()), u64::from(i));
        }
        assert_eq!(t.tracked(), MAX_TRACKED);
    }
}
