//! What Envoy's `tls_inspector` and `http_inspector` listener filters learn from the first bytes
//! of a connection, as pure functions over a peeked buffer.
//!
//! Istio puts both filters on `virtualInbound`: the filter-chain match needs the transport
//! protocol (`"tls"` or `"raw_buffer"`), the SNI and the ALPN list of a ClientHello, or, for
//! plaintext, whether the client speaks HTTP/1.x or prior-knowledge HTTP/2. The listener peeks
//! (it does not consume) and calls these functions on everything received so far, again after
//! each read, until they say [`Inspection::Found`] or [`Inspection::NotMatched`].
//!
//! Invariants: no I/O, no panics and no reads past the buffer whatever the bytes; an answer
//! other than `NeedMore` never changes when more bytes arrive. Callers own the size limits: a
//! connection still at `NeedMore` with [`TLS_MAX_CLIENT_HELLO`] (TLS) or
//! [`HTTP_MAX_INSPECT_BYTES`] (HTTP) bytes buffered is closed, as Envoy closes it.

use std::borrow::Cow;

#[cfg(test)]
mod tests;

/// The verdict of an inspector on the bytes seen so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inspection<T> {
    /// The bytes so far are a valid beginning; read more and ask again.
    NeedMore,
    /// Not this protocol (or malformed): continue without it.
    NotMatched,
    Found(T),
}

/// The transport protocol the listener reports when `inspect_tls` found a ClientHello.
pub const TLS_TRANSPORT_PROTOCOL: &str = "tls";
/// Envoy's transport protocol for every connection no listener filter claimed.
pub const RAW_BUFFER_TRANSPORT_PROTOCOL: &str = "raw_buffer";

/// The most bytes the listener waits for a ClientHello: Envoy's `tls_inspector` default
/// `max_client_hello_size`, 16 KiB (`TLS_MAX_CLIENT_HELLO = SSL3_RT_MAX_PLAIN_LENGTH`). Envoy
/// before ~1.30 used 64 KiB, and its docs still say so; the code and proto say 16 KiB. A
/// connection still at `NeedMore` with this many bytes is closed (`client_hello_too_large`).
pub const TLS_MAX_CLIENT_HELLO: usize = 16 * 1024;

/// The most bytes the listener waits for an HTTP request line: Envoy's `http_inspector`
/// `MAX_INSPECT_SIZE` (64 KiB). A connection still at `NeedMore` with this many is closed.
pub const HTTP_MAX_INSPECT_BYTES: usize = 64 * 1024;

/// What a ClientHello tells the filter-chain match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// The `host_name` of the `server_name` extension, lower-cased as Envoy stores it. `None`
    /// when the client sent no SNI (rustls sends none for an IP-address server name).
    pub sni: Option<String>,
    /// The ALPN protocol names in the client's order; empty when absent or malformed (Envoy
    /// leaves a malformed list to the TLS handshake to reject).
    pub alpn: Vec<String>,
}

const CONTENT_TYPE_HANDSHAKE: u8 = 22;
const RECORD_MAJOR_VERSION: u8 = 3;
const RECORD_HEADER_LEN: usize = 5;
/// RFC 8446 5.1: a plaintext record fragment is at most 2^14 bytes.
const MAX_RECORD_PAYLOAD: usize = 1 << 14;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const HANDSHAKE_HEADER_LEN: usize = 4;
const EXTENSION_SERVER_NAME: u16 = 0;
const EXTENSION_ALPN: u16 = 16;
const SNI_NAME_TYPE_HOST_NAME: u8 = 0;
const MAX_HOST_NAME_LEN: usize = 255;
const MAX_SESSION_ID_LEN: usize = 32;

/// Envoy's `tls_inspector`: is this the start of a TLS ClientHello, and what SNI and ALPN does
/// it carry?
///
/// The ClientHello may span several handshake records (each at most 16 KiB); the whole message
/// must be in `buf`. Structure is checked about as strictly as BoringSSL checks it before
/// Envoy's SNI callback runs (record header, ClientHello fields, extension framing, duplicate
/// extensions, a well-formed single `host_name`); anything that fails is `NotMatched`, which
/// Envoy also treats as "not TLS". Other extensions are not interpreted.
pub fn inspect_tls(buf: &[u8]) -> Inspection<TlsInfo> {
    match reassemble_client_hello(buf) {
        Reassembly::Complete { message, len } => {
            match message
                .get(HANDSHAKE_HEADER_LEN..len)
                .and_then(parse_client_hello)
            {
                Some(info) => Inspection::Found(info),
                None => Inspection::NotMatched,
            }
        }
        Reassembly::NeedMore => Inspection::NeedMore,
        Reassembly::Invalid => Inspection::NotMatched,
    }
}

enum Reassembly<'a> {
    /// `message` holds the whole ClientHello, handshake header included, in its first `len`
    /// bytes. It borrows from the buffer when the message sits in one record.
    Complete {
        message: Cow<'a, [u8]>,
        len: usize,
    },
    NeedMore,
    Invalid,
}

/// Concatenates the handshake records at the start of `buf` until they hold the whole first
/// handshake message, checking each record header on the way.
fn reassemble_client_hello(buf: &[u8]) -> Reassembly<'_> {
    let mut message: Cow<'_, [u8]> = Cow::Borrowed(&[]);
    let mut rest = buf;
    loop {
        let Some((header, body)) = rest.split_first_chunk::<RECORD_HEADER_LEN>() else {
            return if record_header_prefix_ok(rest) {
                Reassembly::NeedMore
            } else {
                Reassembly::Invalid
            };
        };
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if !record_header_prefix_ok(header) || len == 0 || len > MAX_RECORD_PAYLOAD {
            return Reassembly::Invalid;
        }
        let (fragment, after) = body.split_at(len.min(body.len()));
        if message.is_empty() {
            message = Cow::Borrowed(fragment);
        } else {
            message.to_mut().extend_from_slice(fragment);
        }
        match handshake_length(&message) {
            HandshakeLength::Invalid => return Reassembly::Invalid,
            HandshakeLength::Known(total) if message.len() >= total => {
                return Reassembly::Complete {
                    message,
                    len: total,
                };
            }
            _ if fragment.len() < len => return Reassembly::NeedMore,
            _ => rest = after,
        }
    }
}

/// Whether the first bytes of a record header (up to 5) can start a handshake record.
fn record_header_prefix_ok(header: &[u8]) -> bool {
    header.first().is_none_or(|&t| t == CONTENT_TYPE_HANDSHAKE)
        && header
            .get(1)
            .is_none_or(|&major| major == RECORD_MAJOR_VERSION)
}

enum HandshakeLength {
    /// Header plus body length.
    Known(usize),
    Unknown,
    Invalid,
}

fn handshake_length(message: &[u8]) -> HandshakeLength {
    match message {
        [] => HandshakeLength::Unknown,
        [kind, ..] if *kind != HANDSHAKE_CLIENT_HELLO => HandshakeLength::Invalid,
        [_, a, b, c, ..] => {
            let body = usize::from(*a) << 16 | usize::from(*b) << 8 | usize::from(*c);
            HandshakeLength::Known(HANDSHAKE_HEADER_LEN + body)
        }
        _ => HandshakeLength::Unknown,
    }
}

/// RFC 8446 4.1.2 `ClientHello`, fields read in order; `None` if malformed.
fn parse_client_hello(body: &[u8]) -> Option<TlsInfo> {
    let mut hello = Reader(body);
    hello.take(2)?; // legacy_version
    hello.take(32)?; // random
    let session_id = hello.u8_prefixed()?;
    let cipher_suites = hello.u16_prefixed()?;
    let compression_methods = hello.u8_prefixed()?;
    if session_id.len() > MAX_SESSION_ID_LEN
        || cipher_suites.len() < 2
        || cipher_suites.len() % 2 != 0
        || compression_methods.is_empty()
    {
        return None;
    }
    if hello.is_empty() {
        // A ClientHello may omit the extensions block altogether.
        return Some(TlsInfo::default());
    }
    let extensions = hello.u16_prefixed()?;
    if !hello.is_empty() {
        return None;
    }
    parse_extensions(extensions)
}

fn parse_extensions(mut extensions: Reader<'_>) -> Option<TlsInfo> {
    let mut info = TlsInfo::default();
    let mut seen = Vec::new();
    while !extensions.is_empty() {
        let kind = extensions.u16()?;
        let data = extensions.u16_prefixed()?;
        seen.push(kind);
        match kind {
            EXTENSION_SERVER_NAME => info.sni = Some(parse_server_name(data)?),
            EXTENSION_ALPN => info.alpn = parse_alpn(data).unwrap_or_default(),
            _ => {}
        }
    }
    seen.sort_unstable();
    if seen.windows(2).any(|pair| pair[0] == pair[1]) {
        return None;
    }
    Some(info)
}

/// RFC 6066 3: exactly one non-empty `host_name` without NUL bytes, as BoringSSL insists.
fn parse_server_name(mut data: Reader<'_>) -> Option<String> {
    let mut list = data.u16_prefixed()?;
    let name_type = list.u8()?;
    let host_name = list.u16_prefixed()?.0;
    let well_formed = data.is_empty()
        && list.is_empty()
        && name_type == SNI_NAME_TYPE_HOST_NAME
        && !host_name.is_empty()
        && host_name.len() <= MAX_HOST_NAME_LEN
        && !host_name.contains(&0);
    well_formed.then(|| String::from_utf8_lossy(host_name).to_ascii_lowercase())
}

/// RFC 7301 3.1 `ProtocolNameList`, read as Envoy's `onALPN` reads it.
fn parse_alpn(mut data: Reader<'_>) -> Option<Vec<String>> {
    let mut list = data.u16_prefixed()?;
    if !data.is_empty() || list.len() < 2 {
        return None;
    }
    let mut protocols = Vec::new();
    while !list.is_empty() {
        let name = list.u8_prefixed()?.0;
        if name.is_empty() {
            return None;
        }
        protocols.push(String::from_utf8_lossy(name).into_owned());
    }
    Some(protocols)
}

/// A cursor over bytes whose reads fail instead of running past the end.
#[derive(Clone, Copy)]
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    fn u16(&mut self) -> Option<u16> {
        let bytes = self.take(2)?;
        Some(u16::from_be_bytes([*bytes.first()?, *bytes.get(1)?]))
    }

    fn u8_prefixed(&mut self) -> Option<Reader<'a>> {
        let len = self.u8()?;
        self.take(usize::from(len)).map(Reader)
    }

    fn u16_prefixed(&mut self) -> Option<Reader<'a>> {
        let len = self.u16()?;
        self.take(usize::from(len)).map(Reader)
    }
}

/// What `http_inspector` reports, as the ALPN value it sets on the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpProtocol {
    Http10,
    Http11,
    /// HTTP/2 with prior knowledge (the client sent the connection preface).
    H2c,
}

impl HttpProtocol {
    /// The application protocol the filter-chain match sees: `"http/1.0"`, `"http/1.1"` or
    /// `"h2c"`.
    pub fn alpn(self) -> &'static str {
        match self {
            HttpProtocol::Http10 => "http/1.0",
            HttpProtocol::Http11 => "http/1.1",
            HttpProtocol::H2c => "h2c",
        }
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HTTP1_VERSION_PREFIX: &[u8] = b"HTTP/1.";

/// The methods of the `http_parser` library Envoy's HTTP/1 inspector used until 1.39.
const KNOWN_METHODS: &[&[u8]] = &[
    b"DELETE",
    b"GET",
    b"HEAD",
    b"POST",
    b"PUT",
    b"CONNECT",
    b"OPTIONS",
    b"TRACE",
    b"COPY",
    b"LOCK",
    b"MKCOL",
    b"MOVE",
    b"PROPFIND",
    b"PROPPATCH",
    b"SEARCH",
    b"UNLOCK",
    b"BIND",
    b"REBIND",
    b"UNBIND",
    b"ACL",
    b"REPORT",
    b"MKACTIVITY",
    b"CHECKOUT",
    b"MERGE",
    b"M-SEARCH",
    b"NOTIFY",
    b"SUBSCRIBE",
    b"UNSUBSCRIBE",
    b"PATCH",
    b"PURGE",
    b"MKCALENDAR",
    b"LINK",
    b"UNLINK",
    b"SOURCE",
];
const LONGEST_METHOD: usize = 11; // "UNSUBSCRIBE"

/// Envoy's `http_inspector`: the h2c preface, or an HTTP/1.x request line
/// (`METHOD SP request-target SP HTTP/1.0|HTTP/1.1 CRLF`, a bare LF accepted as the HTTP/1
/// parser does). Only the first line is examined.
///
/// Narrower than Envoy in two corners: a version other than 1.0/1.1 (`HTTP/1.2`, `HTTP/0.9`
/// lines without a version) is `NotMatched` where Envoy reports `http/1.0`; and only the
/// `http_parser` method list is known, where Envoy 1.39+ (Balsa parser) takes any token.
/// Envoy runs this only on plaintext connections (transport protocol `raw_buffer`).
pub fn inspect_http(buf: &[u8]) -> Inspection<HttpProtocol> {
    if buf.is_empty() {
        return Inspection::NeedMore;
    }
    let seen = buf.len().min(H2_PREFACE.len());
    if buf.get(..seen) == H2_PREFACE.get(..seen) {
        return if seen < H2_PREFACE.len() {
            Inspection::NeedMore
        } else {
            Inspection::Found(HttpProtocol::H2c)
        };
    }
    request_line(buf)
}

fn request_line(buf: &[u8]) -> Inspection<HttpProtocol> {
    let method_window = &buf[..buf.len().min(LONGEST_METHOD + 1)];
    let Some(space) = method_window.iter().position(|&b| b == b' ') else {
        let could_be_method = KNOWN_METHODS.iter().any(|m| m.starts_with(method_window));
        return if could_be_method {
            Inspection::NeedMore
        } else {
            Inspection::NotMatched
        };
    };
    let (method, rest) = (&buf[..space], &buf[space + 1..]);
    if !KNOWN_METHODS.contains(&method) {
        return Inspection::NotMatched;
    }
    let target_len = rest
        .iter()
        .position(|&b| !is_target_byte(b))
        .unwrap_or(rest.len());
    match rest.get(target_len) {
        None => Inspection::NeedMore,
        Some(b' ') if target_len > 0 => http_version(&rest[target_len + 1..]),
        Some(_) => Inspection::NotMatched,
    }
}

/// Bytes `http_parser` accepts in a request target: visible ASCII and any byte >= 0x80.
fn is_target_byte(b: u8) -> bool {
    b.is_ascii_graphic() || b >= 0x80
}

/// `HTTP/1.0` or `HTTP/1.1`, then the end of the line.
fn http_version(rest: &[u8]) -> Inspection<HttpProtocol> {
    let seen = rest.len().min(HTTP1_VERSION_PREFIX.len());
    if rest.get(..seen) != HTTP1_VERSION_PREFIX.get(..seen) {
        return Inspection::NotMatched;
    }
    let protocol = match rest.get(HTTP1_VERSION_PREFIX.len()) {
        None => return Inspection::NeedMore,
        Some(b'0') => HttpProtocol::Http10,
        Some(b'1') => HttpProtocol::Http11,
        Some(_) => return Inspection::NotMatched,
    };
    match rest.get(HTTP1_VERSION_PREFIX.len() + 1..) {
        Some([] | [b'\r']) => Inspection::NeedMore,
        Some([b'\n', ..] | [b'\r', b'\n', ..]) => Inspection::Found(protocol),
        _ => Inspection::NotMatched,
    }
}
