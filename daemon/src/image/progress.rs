//! Progress of one pull: every received byte and finished step marks it,
//! and a watchdog cancels the pull when nothing moved for the configured
//! time. A large but moving pull is never cut off.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Shared progress marker.
pub struct Progress {
    start: Instant,
    last_ms: AtomicU64,
    bytes: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }
}

impl Progress {
    /// Marks progress of `n` bytes (0 for a finished step).
    pub fn mark(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        let now = self.start.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(now, Ordering::Relaxed);
    }

    /// Bytes received so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Time since the last mark.
    pub fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }

    /// Completes once nothing moved for `timeout`.
    pub async fn stalled(&self, timeout: Duration) {
        let tick = (timeout / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
        loop {
            if self.idle() >= timeout {
                return;
            }
            tokio::time::sleep(tick).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn moving_pull_is_not_stalled_but_idle_one_is() {
        let p = std::sync::Arc::new(Progress::default());
        let p2 = p.clone();
        let mover = tokio::spawn(async move {
            for _ in 0..10 {
                p2.mark(1);
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        });
        let r = tokio::time::timeout(
            Duration::from_millis(250),
            p.stalled(Duration::from_millis(200)),
        )
        .await;
        assert!(r.is_err(), "moving pull must not be reported stalled");
        mover.await.unwrap();
        let start = Instant::now();
        p.stalled(Duration::from_millis(200)).await;
        assert!(start.elapsed() < Duration::from_secs(1));
        assert_eq!(p.bytes(), 10);
    }
}
