//! Single-use streaming tokens: random, unguessable, valid for a configured
//! time (one minute by default, like the kubelet's), consumed by the first
//! request that presents them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Random bytes per token (256 bits).
const TOKEN_BYTES: usize = 32;
/// Outstanding tokens kept at most; a flood of Exec calls without clients
/// cannot grow crid without bound (the oldest are dropped first).
const MAX_PENDING: usize = 10_000;

/// Issued tokens and what each one grants.
pub struct Tokens<T> {
    ttl: Duration,
    inner: Mutex<HashMap<String, (Instant, T)>>,
}

impl<T> Tokens<T> {
    /// An empty store whose tokens live `ttl`.
    pub fn new(ttl: Duration) -> Tokens<T> {
        Tokens {
            ttl,
            inner: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, T)>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Issues a fresh token for `grant`.
    pub fn issue(&self, grant: T) -> Result<String, String> {
        let mut raw = [0u8; TOKEN_BYTES];
        getrandom::getrandom(&mut raw).map_err(|e| format!("no randomness for a token: {e}"))?;
        // URL-safe and case-sensitive; hex keeps the URL trivially valid.
        let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut m = self.lock();
        m.retain(|_, (deadline, _)| *deadline > now);
        if m.len() >= MAX_PENDING {
            if let Some(oldest) = m
                .iter()
                .min_by_key(|(_, (d, _))| *d)
                .map(|(k, _)| k.clone())
            {
                m.remove(&oldest);
            }
        }
        m.insert(token.clone(), (now + self.ttl, grant));
        Ok(token)
    }

    /// Consumes `token`: its grant if it exists and has not expired, else
    /// `None` (an expired token is removed as well).
    pub fn take(&self, token: &str) -> Option<T> {
        let (deadline, grant) = self.lock().remove(token)?;
        (Instant::now() < deadline).then_some(grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_single_use() {
        let t = Tokens::new(Duration::from_secs(60));
        let a = t.issue(1).unwrap();
        let b = t.issue(2).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(t.take(&b), Some(2));
        assert_eq!(t.take(&b), None);
        assert_eq!(t.take(&a), Some(1));
        assert_eq!(t.take("nope"), None);
    }

    #[test]
    fn an_expired_token_is_refused() {
        let t = Tokens::new(Duration::from_millis(20));
        let a = t.issue("x").unwrap();
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(t.take(&a), None);
    }

    #[test]
    fn the_store_is_bounded() {
        let t = Tokens::new(Duration::from_secs(60));
        let first = t.issue(0).unwrap();
        for i in 1..=MAX_PENDING {
            t.issue(i).unwrap();
        }
        assert_eq!(t.lock().len(), MAX_PENDING);
        assert_eq!(t.take(&first), None, "the oldest went first");
    }
}
