//! Reaping for the helper as a shim: it is a child subreaper, so container
//! processes (re-parented when `runc` exits) and `runc` itself are its
//! children. One thread calls `waitpid(-1)` for all of them; nothing else in
//! the helper may wait for a child once it runs (a `Child::wait` would race
//! it for the status).
//!
//! Processes the shim tracks are *claimed* ([`Reaper::claim`]): their exit
//! goes to the exit callback. Every other exit is kept for a while for
//! [`Reaper::wait`] (a `runc` command) or a later claim (an exec process that
//! exited before `runc exec` returned its pid).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How long an unclaimed exit is kept (orphans nobody asks about).
const KEEP_UNCLAIMED: Duration = Duration::from_secs(60);

/// A process's end: its exit code (128 + signal when killed) and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Exit status as a shell reports it.
    pub code: u32,
    /// When it was reaped.
    pub at: SystemTime,
}

#[derive(Default)]
struct State {
    /// Bumped whenever a child has been started, so a reaper thread idle
    /// for lack of children looks again.
    generation: u64,
    claimed: HashSet<i32>,
    unclaimed: HashMap<i32, (Exit, Instant)>,
}

/// The one place children are reaped.
pub struct Reaper {
    state: Mutex<State>,
    changed: Condvar,
}

/// Receives the exits of claimed processes (on the reaper thread).
pub type OnExit = Box<dyn Fn(i32, Exit) + Send + Sync>;

impl Reaper {
    /// A reaper; call [`Reaper::run`] on a thread of its own.
    pub fn new() -> Arc<Reaper> {
        Arc::new(Reaper {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Says a child has just been started (call right after spawning: a
    /// reaper woken before the child exists would find no child and sleep
    /// again, leaving the child's exit uncollected until its timeout).
    pub fn spawned(&self) {
        self.lock().generation += 1;
        self.changed.notify_all();
    }

    /// Claims `pid`: its exit goes to the callback. If it has already
    /// exited, its exit is returned instead (and the callback never sees it).
    pub fn claim(&self, pid: i32) -> Option<Exit> {
        let mut st = self.lock();
        match st.unclaimed.remove(&pid) {
            Some((exit, _)) => Some(exit),
            None => {
                st.claimed.insert(pid);
                None
            }
        }
    }

    /// Waits for the exit of the unclaimed child `pid` (a command).
    pub fn wait(&self, pid: i32) -> Exit {
        let mut st = self.lock();
        loop {
            if let Some((exit, _)) = st.unclaimed.remove(&pid) {
                return exit;
            }
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Records an exit: to the callback if claimed, else kept.
    pub fn record(&self, pid: i32, exit: Exit, on_exit: &OnExit) {
        let claimed = {
            let mut st = self.lock();
            if st.claimed.remove(&pid) {
                true
            } else {
                let now = Instant::now();
                st.unclaimed
                    .retain(|_, (_, t)| now.duration_since(*t) < KEEP_UNCLAIMED);
                st.unclaimed.insert(pid, (exit, now));
                false
            }
        };
        self.changed.notify_all();
        // Outside the lock: the callback takes the shim's lock, which is
        // held while claiming (shim → reaper order only).
        if claimed {
            on_exit(pid, exit);
        }
    }

    /// The reaping loop; never returns.
    pub fn run(&self, on_exit: OnExit) -> ! {
        use nix::sys::wait::{waitpid, WaitStatus};
        loop {
            let generation = self.lock().generation;
            match waitpid(None, None) {
                Ok(WaitStatus::Exited(pid, code)) => {
                    self.record(pid.as_raw(), exit_of(code as u32), &on_exit)
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    self.record(pid.as_raw(), exit_of(128 + sig as u32), &on_exit)
                }
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(_) => {
                    // No children: sleep until one is started.
                    let st = self.lock();
                    if st.generation == generation {
                        let _ = self
                            .changed
                            .wait_timeout(st, Duration::from_millis(500))
                            .unwrap_or_else(|p| p.into_inner());
                    }
                }
            }
        }
    }
}

fn exit_of(code: u32) -> Exit {
    Exit {
        code,
        at: SystemTime::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI32, Ordering};

    fn exit(code: u32) -> Exit {
        Exit {
            code,
            at: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn claimed_exits_go_to_the_callback_others_are_kept() {
        let r = Reaper::new();
        let seen = Arc::new(AtomicI32::new(0));
        let s = Arc::clone(&seen);
        let cb: OnExit = Box::new(move |pid, _| s.store(pid, Ordering::SeqCst));
        assert_eq!(r.claim(10), None);
        r.record(10, exit(0), &cb);
        assert_eq!(seen.load(Ordering::SeqCst), 10);
        r.record(11, exit(3), &cb);
        assert_eq!(seen.load(Ordering::SeqCst), 10, "11 was not claimed");
        assert_eq!(r.wait(11), exit(3));
    }

    #[test]
    fn a_claim_after_the_exit_returns_it() {
        let r = Reaper::new();
        let cb: OnExit = Box::new(|_, _| panic!("not claimed when it exited"));
        r.record(12, exit(137), &cb);
        assert_eq!(r.claim(12), Some(exit(137)));
        assert_eq!(r.claim(12), None, "taken once");
    }
}
