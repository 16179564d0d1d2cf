//! Header and path handling the connection manager does before routing and the router does
//! before forwarding: hop-by-hop stripping, request ids, header limits and Envoy's path
//! normalisation (RFC 3986 dot-segment removal, `merge_slashes`).

use http::{HeaderMap, HeaderName, HeaderValue, header};
use rand::Rng;

/// Headers that describe one hop and never travel through a proxy (RFC 9110 7.6.1).
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Whether `name` is one that [`strip_hop_by_hop`] removes or rewrites whatever `Connection`
/// names (those it names only exist when `Connection` does).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
        || name == header::TE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// Removes hop-by-hop headers, those named by `Connection`, and `te` except "trailers" (which
/// gRPC needs). `keep_upgrade` leaves `connection: upgrade` and `upgrade` for a websocket.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages have none of them: one pass over the names instead of a lookup each.
    if !keep_upgrade && !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .filter(|n| !(keep_upgrade && n == header::UPGRADE))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        if keep_upgrade && (name == header::UPGRADE || name == header::CONNECTION) {
            continue;
        }
        headers.remove(name);
    }
    headers.remove(KEEP_ALIVE);
    headers.remove(PROXY_CONNECTION);
    let te_trailers = headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    headers.remove(header::TE);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Bytes of header names and values, as Envoy counts them for `max_request_headers_kb`.
pub fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len())
        .sum()
}

/// A random (version 4) UUID in its text form, for `x-request-id`.
pub fn uuid4(rng: &mut impl Rng) -> String {
    let mut b: [u8; 16] = rng.random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex = |s: &[u8]| s.iter().map(|x| format!("{x:02x}")).collect::<String>();
    format!(
        "{}-{}-{}-{}-{}",
        hex(&b[0..4]),
        hex(&b[4..6]),
        hex(&b[6..8]),
        hex(&b[8..10]),
        hex(&b[10..16])
    )
}

/// Whether a path contains `%2F`, `%2f`, `%5C` or `%5c`.
pub fn has_escaped_slash(path: &str) -> bool {
    let b = path.as_bytes();
    b.windows(3).any(|w| {
        w[0] == b'%'
            && ((w[1] == b'2' && (w[2] == b'F' || w[2] == b'f'))
                || (w[1] == b'5' && (w[2] == b'C' || w[2] == b'c')))
    })
}

/// Decodes `%2F`/`%5C` (either case) into `/` and `\`.
pub fn unescape_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        match tail.get(1..3) {
            Some("2F" | "2f") => out.push('/'),
            Some("5C" | "5c") => out.push('\\'),
            _ => {
                out.push('%');
                rest = &tail[1..];
                continue;
            }
        }
        rest = &tail[3..];
    }
    out.push_str(rest);
    out
}

/// Envoy's `normalize_path`: decode percent-encoded unreserved characters, backslashes to
/// slashes, dot segments removed (RFC 3986 5.2.4). The query is kept as is. `None` for a path
/// Envoy rejects (not starting with `/`).
pub fn normalize_path(path_and_query: &str, merge_slashes: bool) -> Option<String> {
    let (path, query) = match path_and_query.find('?') {
        Some(i) => (&path_and_query[..i], Some(&path_and_query[i..])),
        None => (path_and_query, None),
    };
    if !path.starts_with('/') {
        return None;
    }
    let decoded = decode_unreserved(path).replace('\\', "/");
    let mut segments: Vec<&str> = Vec::new();
    let parts: Vec<&str> = decoded.split('/').skip(1).collect();
    let last = parts.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, seg) in parts.iter().enumerate() {
        match *seg {
            "." => trailing_slash = i == last,
            ".." => {
                segments.pop();
                trailing_slash = i == last;
            }
            "" if merge_slashes && i != last => {}
            s => {
                segments.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    if let Some(q) = query {
        out.push_str(q);
    }
    Some(out)
}

/// Decodes `%XX` for RFC 3986 unreserved characters only; everything else stays encoded
/// (upper-cased, as Envoy's normaliser leaves it).
fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(v) = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            if v.is_ascii_alphanumeric() || b"-._~".contains(&v) {
                out.push(v);
            } else {
                out.extend_from_slice(format!("%{v:02X}").as_bytes());
            }
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_and_slashes() {
        assert_eq!(
            normalize_path("/a/./b/../c", false).as_deref(),
            Some("/a/c")
        );
        assert_eq!(normalize_path("/a/b/..", false).as_deref(), Some("/a/"));
        assert_eq!(normalize_path("/../../x", false).as_deref(), Some("/x"));
        assert_eq!(
            normalize_path("/a//b?q=/../", true).as_deref(),
            Some("/a/b?q=/../")
        );
        assert_eq!(normalize_path("/a//b", false).as_deref(), Some("/a//b"));
        assert_eq!(
            normalize_path("/%61%2fb\\c", false).as_deref(),
            Some("/a%2Fb/c")
        );
        assert_eq!(normalize_path("a/b", false), None);
    }

    #[test]
    fn hop_by_hop_headers_go_but_te_trailers_stays() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-hop"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers, deflate"));
        h.insert("x-end", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h["te"], "trailers");
        assert!(h.contains_key("x-end"));
    }

    #[test]
    fn each_hop_by_hop_header_alone_is_stripped_and_others_kept_in_order() {
        for name in [
            "connection",
            "proxy-authenticate",
            "proxy-authorization",
            "transfer-encoding",
            "upgrade",
            "keep-alive",
            "proxy-connection",
            "te",
        ] {
            let mut h = HeaderMap::new();
            h.insert("host", HeaderValue::from_static("a"));
            h.insert(name, HeaderValue::from_static("gzip"));
            h.append("x-b", HeaderValue::from_static("1"));
            h.append("x-b", HeaderValue::from_static("2"));
            strip_hop_by_hop(&mut h, false);
            let left: Vec<_> = h
                .iter()
                .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
                .collect();
            assert_eq!(left, [("host", "a"), ("x-b", "1"), ("x-b", "2")], "{name}");
        }
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn escaped_slashes() {
        assert!(has_escaped_slash("/a%2fb"));
        assert!(!has_escaped_slash("/a%20b"));
        assert_eq!(unescape_slashes("/a%2Fb%5cc%41"), "/a/b\\c%41");
    }

    #[test]
    fn uuid_shape() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let id = uuid4(&mut rng);
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
    }
    use rand::SeedableRng;
}
