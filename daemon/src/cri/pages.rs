//! The streaming list RPCs (KEP 5825, `CRIListStreaming`): the same items
//! as the List RPC, sent in pages of at most [`PAGE_ITEMS`] so that no
//! response approaches the kubelet's 16 MiB message limit. Every page holds
//! at least one item and every item is sent once; no items, no page.

use std::pin::Pin;
use tokio_stream::Stream;
use tonic::Status;

/// Items per streamed response.
pub const PAGE_ITEMS: usize = 100;

/// A stream of pages as tonic serves it.
pub type PageStream<R> = Pin<Box<dyn Stream<Item = Result<R, Status>> + Send>>;

/// Splits `items` into responses made by `wrap`.
pub fn pages<T: Send + 'static, R: Send + 'static>(
    items: Vec<T>,
    wrap: fn(Vec<T>) -> R,
) -> PageStream<R> {
    Box::pin(tokio_stream::iter(
        split(items, PAGE_ITEMS)
            .into_iter()
            .map(move |p| Ok(wrap(p))),
    ))
}

/// `items` in runs of at most `size` (at least 1), none empty.
fn split<T>(items: Vec<T>, size: usize) -> Vec<Vec<T>> {
    let size = size.max(1);
    let mut out = Vec::with_capacity(items.len().div_ceil(size));
    let mut it = items.into_iter().peekable();
    while it.peek().is_some() {
        out.push(it.by_ref().take(size).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[test]
    fn pages_hold_every_item_once_and_are_never_empty() {
        assert!(split(Vec::<u32>::new(), 3).is_empty());
        assert_eq!(split(vec![1, 2, 3], 3), vec![vec![1, 2, 3]]);
        assert_eq!(
            split((1..=7).collect(), 3),
            vec![vec![1, 2, 3], vec![4, 5, 6], vec![7]]
        );
        assert_eq!(split(vec![1, 2], 0), vec![vec![1], vec![2]]);
    }

    #[tokio::test]
    async fn a_stream_of_wrapped_pages() {
        let s = pages((0..250).collect::<Vec<u32>>(), |v| v.len());
        let sizes: Vec<usize> = s.map(|r| r.unwrap()).collect().await;
        assert_eq!(sizes, vec![100, 100, 50]);
    }
}
