//! The request body as the router holds it, so a retry can send it again.
//!
//! Envoy keeps a copy of the request body while a retry is still possible, up to a buffer
//! limit, and streams it upstream at the same time; once the body outgrows the limit the request
//! can no longer be retried. [`RequestBody::Replayable`] does the same: each attempt reads a
//! [`Replay`] that first re-sends what earlier attempts already pulled from the downstream body
//! and then goes on pulling (and copying) from it. The body is never held back waiting for its
//! end, so a streaming gRPC call flows as it would without retries.

use super::local_reply::{self, Body, BodyError, BoxError};
use super::stream::DownstreamBody;
use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Frame, SizeHint};
use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

/// The request body for the upstream attempts.
pub enum RequestBody {
    /// Complete in memory (empty bodies, and bodies read whole for mirroring).
    Buffered(Bytes),
    /// Copied as it streams, while it stays under the buffer limit.
    Replayable(Rc<RefCell<Source>>),
    /// Sent once.
    Streaming(Option<DownstreamBody>),
}

impl RequestBody {
    /// A body kept for replay up to `limit` bytes.
    pub fn replayable(body: DownstreamBody, limit: u64) -> Self {
        RequestBody::Replayable(Rc::new(RefCell::new(Source {
            body,
            chunks: Vec::new(),
            copied: 0,
            limit,
            overflowed: false,
            ended: false,
            trailers: None,
            reader: 0,
        })))
    }

    /// The body for the next attempt; `None` when it cannot be sent again.
    pub fn take(&mut self) -> Option<Body> {
        match self {
            RequestBody::Buffered(b) => Some(local_reply::full(b.clone())),
            RequestBody::Replayable(source) => {
                let mut s = source.borrow_mut();
                if s.overflowed {
                    return None;
                }
                s.reader += 1;
                Some(Body::new(Replay {
                    source: source.clone(),
                    id: s.reader,
                    next: 0,
                    trailers_sent: false,
                }))
            }
            RequestBody::Streaming(s) => s.take().map(Body::new),
        }
    }

    /// Whether another attempt could send the whole body again.
    pub fn can_replay(&self) -> bool {
        match self {
            RequestBody::Buffered(_) => true,
            RequestBody::Replayable(source) => !source.borrow().overflowed,
            RequestBody::Streaming(_) => false,
        }
    }
}

/// The downstream body and the copy of what has been read from it.
pub struct Source {
    body: DownstreamBody,
    chunks: Vec<Bytes>,
    copied: u64,
    limit: u64,
    /// The body outgrew `limit`: the copy is dropped and no attempt can start over.
    overflowed: bool,
    ended: bool,
    trailers: Option<HeaderMap>,
    /// The attempt now reading; an earlier attempt's body may not pull any more.
    reader: u64,
}

/// One attempt's view of a replayable body.
struct Replay {
    source: Rc<RefCell<Source>>,
    id: u64,
    /// The next copied chunk this attempt sends.
    next: usize,
    trailers_sent: bool,
}

impl hyper::body::Body for Replay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let mut source = this.source.borrow_mut();
        if let Some(chunk) = source.chunks.get(this.next) {
            this.next += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
        }
        if source.ended {
            if !this.trailers_sent
                && let Some(trailers) = source.trailers.clone()
            {
                this.trailers_sent = true;
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
            return Poll::Ready(None);
        }
        if source.reader != this.id {
            return Poll::Ready(Some(Err(Box::new(BodyError(
                "a later attempt owns the request body",
            )))));
        }
        let source = &mut *source;
        let poll = Pin::new(&mut source.body).poll_frame(cx);
        match &poll {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    source.copied += data.len() as u64;
                    if source.copied > source.limit {
                        source.overflowed = true;
                        source.chunks = Vec::new();
                    } else if !source.overflowed {
                        source.chunks.push(data.clone());
                        this.next += 1;
                    }
                } else if let Some(trailers) = frame.trailers_ref() {
                    source.trailers = Some(trailers.clone());
                    this.trailers_sent = true;
                }
                if hyper::body::Body::is_end_stream(&source.body) {
                    source.ended = true;
                }
            }
            Poll::Ready(None) => source.ended = true,
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        poll.map(|frame| frame.map(|result| result.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        let source = self.source.borrow();
        self.next >= source.chunks.len()
            && source.ended
            && (self.trailers_sent || source.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        let source = self.source.borrow();
        let copied: u64 = source
            .chunks
            .get(self.next..)
            .unwrap_or_default()
            .iter()
            .map(|c| c.len() as u64)
            .sum();
        if source.ended {
            return SizeHint::with_exact(copied);
        }
        let rest = hyper::body::Body::size_hint(&source.body);
        match rest.exact() {
            Some(n) => SizeHint::with_exact(copied + n),
            None => {
                let mut hint = SizeHint::new();
                hint.set_lower(copied + rest.lower());
                hint
            }
        }
    }
}
