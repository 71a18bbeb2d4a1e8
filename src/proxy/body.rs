//! Body adapters: one that counts the bytes passing through, one that runs a callback exactly
//! once when the body ends, fails or is dropped (a client that went away), and one that ends a
//! body at a deadline.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

/// A body that adds the length of every data frame to a shared counter.
pub struct Counted<B> {
    inner: B,
    count: Arc<AtomicU64>,
}

impl<B> Counted<B> {
    /// Counts `inner`'s bytes into `count`.
    pub fn new(inner: B, count: Arc<AtomicU64>) -> Self {
        Self { inner, count }
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.count.fetch_add(
                u64::try_from(data.len()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body that calls its callback once, with `true` when the body ended normally and `false`
/// when it failed or was dropped before its end (a client that went away).
pub struct OnEnd<B> {
    inner: B,
    callback: Option<Box<dyn FnOnce(bool) + Send>>,
}

impl<B> OnEnd<B> {
    /// Wraps `inner`; `callback` runs when it ends or is dropped.
    pub fn new(inner: B, callback: impl FnOnce(bool) + Send + 'static) -> Self {
        Self {
            inner,
            callback: Some(Box::new(callback)),
        }
    }

    fn finish(&mut self, complete: bool) {
        if let Some(callback) = self.callback.take() {
            callback(complete);
        }
    }
}

impl<B> Body for OnEnd<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.finish(true),
            Poll::Ready(Some(Err(_))) => self.finish(false),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for OnEnd<B> {
    /// A body dropped before its end (or never polled, as an empty body may be) reports
    /// `false`.
    fn drop(&mut self) {
        self.finish(false);
    }
}

/// A body that ends, cleanly, at a deadline: a watch opened with access that expires (a
/// credential, a grant) does not outlive it. The client sees the stream end as a server ending
/// a watch, and comes back with what it has now, for a fresh decision.
pub struct Until<B> {
    inner: B,
    deadline: Pin<Box<tokio::time::Sleep>>,
    ended: bool,
}

impl<B> Until<B> {
    /// Ends `inner` at `deadline`.
    pub fn new(inner: B, deadline: tokio::time::Instant) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            ended: false,
        }
    }
}

impl<B> Body for Until<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.ended = true;
            return Poll::Ready(None);
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use http_body_util::{BodyExt, Full};

    use super::*;

    #[tokio::test]
    async fn counts_and_reports_the_end_once() {
        let count = Arc::new(AtomicU64::new(0));
        let ended = Arc::new(Mutex::new(Vec::new()));
        let seen = ended.clone();
        let body = OnEnd::new(
            Counted::new(Full::new(Bytes::from_static(b"hello")), count.clone()),
            move |complete| seen.lock().unwrap().push(complete),
        );
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"hello");
        assert_eq!(count.load(Ordering::Relaxed), 5);
        assert_eq!(*ended.lock().unwrap(), [true]);
    }

    #[test]
    fn reports_a_drop_before_the_end() {
        let ended = Arc::new(Mutex::new(Vec::new()));
        let seen = ended.clone();
        let body = OnEnd::new(Full::new(Bytes::from_static(b"x")), move |complete| {
            seen.lock().unwrap().push(complete);
        });
        drop(body);
        assert_eq!(*ended.lock().unwrap(), [false]);
    }
}
