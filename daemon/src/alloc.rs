//! glibc malloc tuning for a long-running daemon that is idle most of the
//! time (issue 19: crid's idle memory). The only `unsafe` of this module are
//! the two glibc calls below.
//!
//! - At most [`ARENAS`] malloc arenas: glibc otherwise gives each thread
//!   that allocates (tokio workers, every blocking-pool thread of a helper
//!   call or file write) an arena of its own, up to 8 per core, and each
//!   keeps the memory it once held. crid's allocations are small and short;
//!   two arenas are enough for two workers.
//! - Freed memory handed back to the kernel after bursts (a pull's 1 MiB
//!   buffers, a pod start's spec generation) and now and then when idle:
//!   glibc only returns memory at the top of the main heap by itself.

use std::time::Duration;

/// Arenas glibc may use.
const ARENAS: i32 = 2;
/// Interval of the idle trim.
const TRIM_EVERY: Duration = Duration::from_secs(60);

/// Limits glibc's arenas; call first in `main`, before any thread exists.
pub fn tune() {
    // SAFETY: mallopt only changes malloc's parameters; it is called before
    // any other thread exists, so no allocation runs concurrently, and
    // M_ARENA_MAX takes any positive count.
    let ok = unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENAS) };
    if ok != 1 {
        eprintln!("crid: mallopt(M_ARENA_MAX) refused; keeping glibc's default arenas");
    }
}

/// Returns free heap memory to the kernel (blocking: it walks every arena).
pub fn trim() {
    // SAFETY: malloc_trim is thread-safe (it takes each arena's lock) and
    // touches only memory malloc owns and no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Trims off the async threads, after a burst of work.
pub fn trim_soon() {
    tokio::task::spawn_blocking(trim);
}

/// Trims every [`TRIM_EVERY`] until crid stops.
pub fn spawn_idle_trim() -> tokio::task::JoinHandle<()> {
    tokio::spawn(async {
        let mut tick = tokio::time::interval(TRIM_EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn trim_is_harmless_with_live_allocations() {
        let keep: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 4096]).collect();
        drop((0..64).map(|_| vec![0u8; 1 << 16]).collect::<Vec<_>>());
        super::trim();
        assert!(keep
            .iter()
            .enumerate()
            .all(|(i, v)| v.iter().all(|b| *b == i as u8)));
    }
}
