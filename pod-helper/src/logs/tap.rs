//! Fan-out of a container's live output to attach clients, beside its log.
//!
//! The drain publishes every chunk it reads; each attached client has a
//! bounded queue. A client too slow to keep up loses chunks (counted in the
//! helper log) rather than slowing the drain: the log and the container
//! must never wait for an attach client.

use super::format::Stream;
use std::sync::Mutex;
use tokio::sync::mpsc;

/// Chunks queued per attach client before it starts losing output.
const QUEUE: usize = 256;

/// One chunk of output.
pub type Chunk = (Stream, Vec<u8>);

/// The subscribers of one container's output.
#[derive(Default)]
pub struct Tap {
    inner: Mutex<TapInner>,
}

#[derive(Default)]
struct TapInner {
    next_id: u64,
    subs: Vec<(u64, mpsc::Sender<Chunk>)>,
    /// The drain ended: no more output will come.
    closed: bool,
    dropped: u64,
}

impl Tap {
    fn lock(&self) -> std::sync::MutexGuard<'_, TapInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new subscriber: (its id, its queue); the queue ends when the
    /// container's output ends (at once if it already has).
    pub fn subscribe(&self) -> (u64, mpsc::Receiver<Chunk>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut t = self.lock();
        t.next_id += 1;
        let id = t.next_id;
        if !t.closed {
            t.subs.push((id, tx));
        }
        (id, rx)
    }

    /// Removes subscriber `id`.
    pub fn unsubscribe(&self, id: u64) {
        self.lock().subs.retain(|(i, _)| *i != id);
    }

    /// Hands `data` to every subscriber (never blocks).
    pub fn publish(&self, stream: Stream, data: &[u8]) {
        let mut t = self.lock();
        if t.subs.is_empty() {
            return;
        }
        let mut dropped = 0;
        t.subs
            .retain(|(_, tx)| match tx.try_send((stream, data.to_vec())) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    dropped += 1;
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
        if dropped > 0 {
            t.dropped += dropped;
            if t.dropped.is_power_of_two() {
                crate::log(&format!(
                    "attach: {} output chunks dropped for slow clients",
                    t.dropped
                ));
            }
        }
    }

    /// The output ended: every subscriber's queue ends after what it holds.
    pub fn close(&self) {
        let mut t = self.lock();
        t.closed = true;
        t.subs.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_get_output_until_the_end_and_slow_ones_lose_not_block() {
        let tap = Tap::default();
        tap.publish(Stream::Stdout, b"before anyone");
        let (a, mut ra) = tap.subscribe();
        let (_b, mut rb) = tap.subscribe();
        tap.publish(Stream::Stderr, b"x");
        assert_eq!(ra.try_recv().unwrap(), (Stream::Stderr, b"x".to_vec()));
        tap.unsubscribe(a);
        for _ in 0..QUEUE + 10 {
            tap.publish(Stream::Stdout, b"y");
        }
        assert!(ra.try_recv().is_err(), "unsubscribed");
        let mut got = 0;
        while rb.try_recv().is_ok() {
            got += 1;
        }
        assert_eq!(got, QUEUE, "x and the first QUEUE-1 y's; the rest dropped");
        tap.close();
        assert!(rb.try_recv().is_err());
        let (_c, mut rc) = tap.subscribe();
        assert!(matches!(
            rc.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
    }
}
