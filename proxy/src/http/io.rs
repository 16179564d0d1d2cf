//! Plumbing between tokio, hyper and the worker: a stream that first replays the bytes the
//! listener inspectors already read (and can tell from the first bytes whether the client speaks
//! HTTP/2), and an executor that keeps hyper's tasks on this thread.

use bytes::{Buf, Bytes};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The HTTP/2 connection preface a client sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A stream whose first reads return `prefix`.
pub struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
    sniff: Option<Sniff>,
}

/// Watches the first bytes read for the HTTP/2 preface, as hyper's `AUTO` detection does.
struct Sniff {
    matched: usize,
    /// Told `true` for HTTP/2 (the whole preface arrived) or `false` (a byte differed).
    decided: Box<dyn FnOnce(bool) + Send>,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Prefixed {
            prefix,
            inner,
            sniff: None,
        }
    }

    /// Calls `decided` once the first bytes show whether the client speaks HTTP/2.
    pub fn detect_http2(mut self, decided: impl FnOnce(bool) + Send + 'static) -> Self {
        self.sniff = Some(Sniff {
            matched: 0,
            decided: Box::new(decided),
        });
        self
    }

    fn inspect(&mut self, read: &[u8]) {
        let Some(sniff) = self.sniff.as_mut() else {
            return;
        };
        let wanted = &H2_PREFACE[sniff.matched..];
        let n = wanted.len().min(read.len());
        let verdict = if read[..n] != wanted[..n] {
            Some(false)
        } else {
            sniff.matched += n;
            (sniff.matched == H2_PREFACE.len()).then_some(true)
        };
        if let Some(http2) = verdict
            && let Some(sniff) = self.sniff.take()
        {
            (sniff.decided)(http2);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            Poll::Ready(Ok(()))
        } else {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        };
        if self.sniff.is_some() && buf.filled().len() > before {
            let read = &buf.filled()[before..];
            self.inspect(read);
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Runs hyper's background tasks (HTTP/2 streams, connection drivers) on the current worker.
#[derive(Debug, Clone, Copy)]
pub struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: std::future::Future + 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU8, Ordering};
    use tokio::io::AsyncReadExt;

    async fn verdict(prefix: &'static [u8], rest: &'static [u8]) -> Option<bool> {
        let seen = Arc::new(AtomicU8::new(0));
        let record = seen.clone();
        let mut io = Prefixed::new(Bytes::from_static(prefix), rest)
            .detect_http2(move |h2| record.store(1 + u8::from(h2), Ordering::Relaxed));
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.unwrap();
        assert_eq!(all.len(), prefix.len() + rest.len());
        match seen.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n == 2),
        }
    }

    #[tokio::test]
    async fn detects_the_h2_preface_across_the_prefix_and_the_stream() {
        assert_eq!(
            verdict(b"PRI * HTTP", b"/2.0\r\n\r\nSM\r\n\r\n").await,
            Some(true)
        );
        assert_eq!(verdict(b"", b"GET / HTTP/1.1\r\n\r\n").await, Some(false));
        assert_eq!(verdict(b"PRI * HTTP/1.1", b"").await, Some(false));
        assert_eq!(verdict(b"PRI", b"").await, None);
    }
}
