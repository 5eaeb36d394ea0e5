//! The container event fan-out behind `GetContainerEvents` (the kubelet's
//! evented PLEG): every published event goes to every subscriber, in
//! publication order, each subscriber with a bounded backlog.
//!
//! A subscriber that falls more than [`BACKLOG`] events behind is not
//! silently skipped ahead (it would miss state changes): its stream ends
//! with an error instead, so the kubelet falls back to relisting and
//! subscribes again. Publishing never waits for a subscriber, and a slow
//! subscriber never affects the others.

use std::pin::Pin;
use tokio::sync::broadcast;
use tokio_stream::Stream;

/// Events a subscriber may be behind before its stream is ended.
pub const BACKLOG: usize = 1024;

/// Why a subscriber's stream ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriberError {
    /// The subscriber did not keep up; `missed` events were dropped for it.
    #[error("event subscriber fell behind by more than {backlog} events ({missed} dropped); relist and subscribe again")]
    Lagged {
        /// The backlog it exceeded.
        backlog: usize,
        /// How many events it would have missed.
        missed: u64,
    },
}

/// A fan-out of events of type `T` (cheap to clone: one shared channel).
#[derive(Clone)]
pub struct Hub<T: Clone + Send + 'static> {
    tx: broadcast::Sender<T>,
    backlog: usize,
}

impl<T: Clone + Send + Sync + 'static> Default for Hub<T> {
    fn default() -> Self {
        Hub::with_backlog(BACKLOG)
    }
}

/// A subscriber's stream: events in order, ending with an error if it lagged.
pub type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, SubscriberError>> + Send>>;

impl<T: Clone + Send + Sync + 'static> Hub<T> {
    /// A hub whose subscribers may be `backlog` events behind (at least 1).
    pub fn with_backlog(backlog: usize) -> Self {
        let backlog = backlog.max(1);
        let (tx, _) = broadcast::channel(backlog);
        Hub { tx, backlog }
    }

    /// Sends `ev` to every current subscriber; returns how many there are.
    pub fn publish(&self, ev: T) -> usize {
        // An error only means nobody is subscribed.
        self.tx.send(ev).unwrap_or(0)
    }

    /// Current subscribers.
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// A new subscriber: it sees every event published from now on.
    pub fn subscribe(&self) -> EventStream<T> {
        let rx = self.tx.subscribe();
        let backlog = self.backlog;
        Box::pin(futures_util::stream::unfold(
            Some(rx),
            move |rx| async move {
                let mut rx = rx?;
                match rx.recv().await {
                    Ok(ev) => Some((Ok(ev), Some(rx))),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        // The error ends the stream: the next poll yields None.
                        Some((Err(SubscriberError::Lagged { backlog, missed }), None))
                    }
                    Err(broadcast::error::RecvError::Closed) => None,
                }
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn every_subscriber_sees_every_event_in_order() {
        let hub: Hub<u32> = Hub::with_backlog(16);
        let mut a = hub.subscribe();
        let mut b = hub.subscribe();
        assert_eq!(hub.subscribers(), 2);
        for i in 0..10 {
            assert_eq!(hub.publish(i), 2);
        }
        for s in [&mut a, &mut b] {
            for i in 0..10 {
                assert_eq!(s.next().await, Some(Ok(i)));
            }
        }
    }

    #[tokio::test]
    async fn a_late_subscriber_sees_only_later_events() {
        let hub: Hub<u32> = Hub::with_backlog(4);
        assert_eq!(hub.publish(1), 0, "nobody listening is fine");
        let mut s = hub.subscribe();
        hub.publish(2);
        assert_eq!(s.next().await, Some(Ok(2)));
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_ended_with_an_error_and_the_others_go_on() {
        let hub: Hub<u32> = Hub::with_backlog(8);
        let mut slow = hub.subscribe();
        let mut fast = hub.subscribe();
        // Exactly the backlog is fine: nothing is lost.
        for i in 0..8 {
            hub.publish(i);
            assert_eq!(fast.next().await, Some(Ok(i)));
        }
        for i in 0..8 {
            assert_eq!(slow.next().await, Some(Ok(i)));
        }
        // One past the backlog: the slow one gets an error, then the end,
        // never a silently shortened sequence.
        for i in 8..17 {
            hub.publish(i);
            assert_eq!(fast.next().await, Some(Ok(i)));
        }
        assert_eq!(
            slow.next().await,
            Some(Err(SubscriberError::Lagged {
                backlog: 8,
                missed: 1
            }))
        );
        assert_eq!(slow.next().await, None);
        drop(slow);
        assert_eq!(hub.subscribers(), 1);
        // The fast one keeps receiving, in order, nothing twice.
        hub.publish(17);
        assert_eq!(fast.next().await, Some(Ok(17)));
        // A new subscriber after the error works again.
        let mut again = hub.subscribe();
        hub.publish(18);
        assert_eq!(again.next().await, Some(Ok(18)));
        assert_eq!(fast.next().await, Some(Ok(18)));
    }

    #[tokio::test]
    async fn concurrent_publishers_give_every_subscriber_one_order() {
        let hub: Hub<(u32, u32)> = Hub::with_backlog(4096);
        let mut a = hub.subscribe();
        let mut b = hub.subscribe();
        let mut tasks = Vec::new();
        for p in 0..4u32 {
            let h = hub.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..500u32 {
                    h.publish((p, i));
                    tokio::task::yield_now().await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let mut seen_a = Vec::new();
        let mut seen_b = Vec::new();
        for _ in 0..2000 {
            seen_a.push(a.next().await.unwrap().unwrap());
            seen_b.push(b.next().await.unwrap().unwrap());
        }
        assert_eq!(seen_a, seen_b, "both see the same total order");
        // Each publisher's events arrive in its own order, each once.
        for p in 0..4 {
            let mine: Vec<u32> = seen_a
                .iter()
                .filter(|(q, _)| *q == p)
                .map(|(_, i)| *i)
                .collect();
            assert_eq!(mine, (0..500).collect::<Vec<_>>());
        }
    }
}
