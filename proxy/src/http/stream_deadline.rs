//! A response body with a deadline. Envoy's route timeout and stream duration cover the whole
//! response, not only its headers: once the response has started a local reply can no longer be
//! sent, so past the deadline the body fails, which resets the downstream stream (HTTP/2
//! `RST_STREAM` with `INTERNAL_ERROR`, HTTP/1.1 a closed connection) and drops the upstream one.

use crate::http::local_reply::{Body, BoxError};
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::time::{Instant, Sleep};

/// Why a [`DeadlineBody`] failed.
#[derive(Debug, thiserror::Error)]
#[error("response still streaming when its deadline expired")]
pub struct DeadlineExpired;

/// `inner`, failing with [`DeadlineExpired`] if it has not ended by the deadline.
pub struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<Sleep>>,
}

impl DeadlineBody {
    pub fn new(inner: Body, deadline: Instant) -> Self {
        DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }
}

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // What already arrived is delivered; the deadline only ends a wait.
        if let ready @ Poll::Ready(_) = Pin::new(&mut self.inner).poll_frame(cx) {
            return ready;
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(DeadlineExpired)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::time::Duration;

    /// A body that never sends anything and never ends.
    struct Silent;

    impl hyper::body::Body for Silent {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_body_still_streaming_at_the_deadline_fails() {
        let body = DeadlineBody::new(
            Body::new(Silent),
            Instant::now() + Duration::from_millis(100),
        );
        let err = body.collect().await.expect_err("deadline error");
        assert!(err.is::<DeadlineExpired>(), "{err}");
    }

    #[tokio::test]
    async fn a_body_that_ends_in_time_is_untouched() {
        let body = DeadlineBody::new(
            crate::http::local_reply::full("done"),
            Instant::now() + Duration::from_secs(5),
        );
        let bytes = body.collect().await.expect("whole body").to_bytes();
        assert_eq!(bytes, "done");
    }
}
