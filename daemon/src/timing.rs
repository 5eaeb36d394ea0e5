//! Phase timings of one operation (ExecSync, PullImage): where its
//! milliseconds go, logged as one debug line when it ends.

use std::fmt::Write;
use std::time::{Duration, Instant};

/// Consecutive phases of one operation, each timed from the previous mark.
#[derive(Debug)]
pub struct Phases {
    start: Instant,
    last: Instant,
    marks: Vec<(&'static str, Duration)>,
}

impl Default for Phases {
    fn default() -> Self {
        Phases::new()
    }
}

impl Phases {
    /// Starts timing now.
    pub fn new() -> Phases {
        let now = Instant::now();
        Phases {
            start: now,
            last: now,
            marks: Vec::with_capacity(8),
        }
    }

    /// Ends phase `name` now.
    pub fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        self.marks.push((name, now - self.last));
        self.last = now;
    }

    /// `name=1.23ms ... total=4.56ms`.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for (name, d) in &self.marks {
            let _ = write!(s, "{name}={:.2}ms ", d.as_secs_f64() * 1e3);
        }
        let _ = write!(
            s,
            "total={:.2}ms",
            (self.last - self.start).as_secs_f64() * 1e3
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_add_up_to_the_total() {
        let mut p = Phases::new();
        std::thread::sleep(Duration::from_millis(2));
        p.mark("a");
        p.mark("b");
        let sum: Duration = p.marks.iter().map(|(_, d)| *d).sum();
        assert_eq!(sum, p.last - p.start);
        assert!(p.marks[0].1 >= Duration::from_millis(2));
        let s = p.summary();
        assert!(s.starts_with("a="), "{s}");
        assert!(s.contains(" b=") && s.contains(" total="), "{s}");
    }
}
