//! Responses Tern makes itself (no route, no healthy upstream, timeouts, direct responses,
//! redirects), shaped as Envoy shapes them: the same status, `text/plain` body text and, for
//! gRPC requests, a trailers-only gRPC error instead of an HTTP error status.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why Tern itself ended a body (a timer, a body that cannot be sent again).
#[derive(Debug)]
pub struct BodyError(pub &'static str);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for BodyError {}

/// The body type of every request and response Tern relays: any body, boxed, living on this
/// worker (so not `Send`, which lets pooled bodies hold `Rc`s).
pub struct Body(Pin<Box<dyn hyper::body::Body<Data = Bytes, Error = BoxError>>>);

impl Body {
    pub fn new<B>(body: B) -> Self
    where
        B: hyper::body::Body<Data = Bytes> + 'static,
        B::Error: Into<BoxError>,
    {
        Body(Box::pin(body.map_err(Into::into)))
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.as_mut().poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Body::new(Full::new(bytes.into()))
}

pub fn empty() -> Body {
    full(Bytes::new())
}

/// A local reply: `text/plain` body when non-empty; for a gRPC request, HTTP 200 with
/// `grpc-status` mapped from the HTTP status and `grpc-message` carrying the text (Envoy's
/// `Grpc::Utility::httpToGrpcStatus`).
pub fn reply(status: StatusCode, body: &str, grpc: bool) -> Response<Body> {
    reply_with_grpc_status(status, body, grpc, None)
}

/// [`reply`] with the `grpc-status` a filter chose (Envoy's `sendLocalReply` with an explicit gRPC
/// status, e.g. a fault abort's `grpc_status`); `None` maps it from `status`. Only a gRPC request
/// sees it: anything else gets the plain `status` reply.
pub fn reply_with_grpc_status(
    status: StatusCode,
    body: &str,
    grpc: bool,
    grpc_status: Option<u32>,
) -> Response<Body> {
    if grpc {
        let mut response = Response::new(empty());
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        let code = grpc_status.unwrap_or_else(|| u32::from(self::grpc_status(status)));
        headers.insert("grpc-status", HeaderValue::from(code));
        if !body.is_empty()
            && let Ok(v) = HeaderValue::from_str(&percent_encode_grpc_message(body))
        {
            headers.insert("grpc-message", v);
        }
        return response;
    }
    let mut response = Response::new(full(Bytes::copy_from_slice(body.as_bytes())));
    *response.status_mut() = status;
    if !body.is_empty() {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    response
}

/// Envoy's HTTP → gRPC status mapping for local replies.
pub fn grpc_status(status: StatusCode) -> u16 {
    match status.as_u16() {
        400 => 13,             // INTERNAL
        401 => 16,             // UNAUTHENTICATED
        403 => 7,              // PERMISSION_DENIED
        404 => 12,             // UNIMPLEMENTED
        429 | 502..=504 => 14, // UNAVAILABLE
        _ => 2,                // UNKNOWN
    }
}

/// gRPC's percent-encoding of `grpc-message`: printable ASCII except '%' stays.
fn percent_encode_grpc_message(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether a request is gRPC (`content-type: application/grpc...`).
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

// Envoy's local reply texts.
pub const NO_HEALTHY_UPSTREAM: &str = "no healthy upstream";
pub const UPSTREAM_TIMEOUT: &str = "upstream request timeout";
pub const DOWNSTREAM_DURATION_TIMEOUT: &str = "downstream duration timeout";
pub const OVERFLOW: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: overflow";
pub const CONNECTION_FAILURE: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: connection failure";
pub const RESET_BEFORE_HEADERS: &str = "upstream connect error or disconnect/reset before headers. reset reason: connection termination";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_local_reply_is_trailers_only_with_mapped_status() {
        let r = reply(StatusCode::SERVICE_UNAVAILABLE, NO_HEALTHY_UPSTREAM, true);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["grpc-status"], "14");
        assert_eq!(r.headers()["grpc-message"], "no healthy upstream");
        assert_eq!(r.headers()["content-type"], "application/grpc");
    }

    #[test]
    fn explicit_grpc_status_wins_for_grpc_requests_only() {
        let r = reply_with_grpc_status(StatusCode::OK, "fault filter abort", true, Some(5));
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["grpc-status"], "5");
        assert_eq!(r.headers()["grpc-message"], "fault filter abort");
        let r = reply_with_grpc_status(StatusCode::OK, "fault filter abort", false, Some(5));
        assert_eq!(r.status(), StatusCode::OK);
        assert!(!r.headers().contains_key("grpc-status"));
        assert_eq!(r.headers()["content-type"], "text/plain");
    }

    #[test]
    fn plain_local_reply_has_text_body() {
        let r = reply(StatusCode::GATEWAY_TIMEOUT, UPSTREAM_TIMEOUT, false);
        assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(r.headers()["content-type"], "text/plain");
        assert_eq!(percent_encode_grpc_message("a%b\n"), "a%25b%0A");
    }
}
