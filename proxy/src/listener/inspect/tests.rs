use std::sync::Arc;

use proptest::prelude::*;
use rustls::pki_types::ServerName;

use super::*;

// ---- a real ClientHello ---------------------------------------------------------------------

/// The first flight rustls sends for `server_name`, offering h2 and istio-peer-exchange.
fn rustls_client_hello(server_name: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"istio-peer-exchange".to_vec()];
    let name = ServerName::try_from(server_name.to_owned()).expect("valid server name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write to a Vec");
    }
    out
}

fn found(sni: Option<&str>, alpn: &[&str]) -> Inspection<TlsInfo> {
    Inspection::Found(TlsInfo {
        sni: sni.map(str::to_owned),
        alpn: alpn.iter().map(|s| s.to_string()).collect(),
    })
}

#[test]
fn rustls_client_hello_yields_sni_and_alpn_in_order() {
    let hello = rustls_client_hello("svc.ns.svc.cluster.local");
    assert_eq!(
        inspect_tls(&hello),
        found(
            Some("svc.ns.svc.cluster.local"),
            &["h2", "istio-peer-exchange"]
        )
    );
}

#[test]
fn every_truncated_prefix_of_a_client_hello_needs_more() {
    let hello = rustls_client_hello("svc.ns.svc.cluster.local");
    for len in 0..hello.len() {
        assert_eq!(
            inspect_tls(&hello[..len]),
            Inspection::NeedMore,
            "prefix of {len} bytes"
        );
    }
}

#[test]
fn bytes_after_the_client_hello_do_not_matter() {
    let mut hello = rustls_client_hello("svc.ns.svc.cluster.local");
    hello.extend_from_slice(b"\x17\x03\x03\x00\x05early");
    assert_eq!(
        inspect_tls(&hello),
        found(
            Some("svc.ns.svc.cluster.local"),
            &["h2", "istio-peer-exchange"]
        )
    );
}

#[test]
fn ip_literal_server_name_has_no_sni() {
    let hello = rustls_client_hello("10.1.2.3");
    assert_eq!(
        inspect_tls(&hello),
        found(None, &["h2", "istio-peer-exchange"])
    );
}

/// Re-frames the handshake message of a one-record ClientHello into records cut at `cuts`.
fn split_into_records(hello: &[u8], cuts: &[usize]) -> Vec<u8> {
    let message = &hello[RECORD_HEADER_LEN..];
    let mut bounds: Vec<usize> = cuts
        .iter()
        .map(|&c| c.clamp(1, message.len() - 1))
        .collect();
    bounds.push(0);
    bounds.push(message.len());
    bounds.sort_unstable();
    bounds.dedup();
    let mut out = Vec::new();
    for pair in bounds.windows(2) {
        let fragment = &message[pair[0]..pair[1]];
        let len = u16::try_from(fragment.len()).expect("fragment fits a record");
        out.extend_from_slice(&[CONTENT_TYPE_HANDSHAKE, 3, 1]);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(fragment);
    }
    out
}

#[test]
fn client_hello_split_across_records_is_reassembled() {
    let hello = rustls_client_hello("svc.ns.svc.cluster.local");
    for cuts in [vec![1], vec![3], vec![4], vec![40, 41, 200]] {
        let split = split_into_records(&hello, &cuts);
        assert_eq!(
            inspect_tls(&split),
            found(
                Some("svc.ns.svc.cluster.local"),
                &["h2", "istio-peer-exchange"]
            ),
            "cut at {cuts:?}"
        );
        for len in 0..split.len() {
            assert_eq!(
                inspect_tls(&split[..len]),
                Inspection::NeedMore,
                "{cuts:?}, {len} bytes"
            );
        }
    }
}

// ---- hand-made ClientHellos -----------------------------------------------------------------

/// A ClientHello in one record with these extensions (`None`: no extensions block).
fn hello_with(extensions: Option<&[(u16, Vec<u8>)]>) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
    body.extend_from_slice(&[1, 0]); // null compression
    if let Some(extensions) = extensions {
        let mut block = Vec::new();
        for (kind, data) in extensions {
            block.extend_from_slice(&kind.to_be_bytes());
            block.extend_from_slice(&u16_len(data));
            block.extend_from_slice(data);
        }
        body.extend_from_slice(&u16_len(&block));
        body.extend_from_slice(&block);
    }
    let mut message = vec![HANDSHAKE_CLIENT_HELLO, 0];
    message.extend_from_slice(&u16_len(&body));
    message.extend_from_slice(&body);
    let mut record = vec![CONTENT_TYPE_HANDSHAKE, 3, 1];
    record.extend_from_slice(&u16_len(&message));
    record.extend_from_slice(&message);
    record
}

fn u16_len(data: &[u8]) -> [u8; 2] {
    u16::try_from(data.len())
        .expect("short test data")
        .to_be_bytes()
}

fn sni_ext(entries: &[(u8, &[u8])]) -> (u16, Vec<u8>) {
    let mut list = Vec::new();
    for (kind, name) in entries {
        list.push(*kind);
        list.extend_from_slice(&u16_len(name));
        list.extend_from_slice(name);
    }
    let mut data = u16_len(&list).to_vec();
    data.extend_from_slice(&list);
    (EXTENSION_SERVER_NAME, data)
}

fn alpn_ext(names: &[&[u8]]) -> (u16, Vec<u8>) {
    let mut list = Vec::new();
    for name in names {
        list.push(u8::try_from(name.len()).expect("short name"));
        list.extend_from_slice(name);
    }
    let mut data = u16_len(&list).to_vec();
    data.extend_from_slice(&list);
    (EXTENSION_ALPN, data)
}

#[test]
fn handmade_client_hellos() {
    let name = sni_ext(&[(0, b"Api.Example.COM")]);
    let alpn = alpn_ext(&[b"http/1.1", b"h2"]);
    let cases: Vec<(&str, Vec<u8>, Inspection<TlsInfo>)> = vec![
        ("no extensions block", hello_with(None), found(None, &[])),
        (
            "empty extensions block",
            hello_with(Some(&[])),
            found(None, &[]),
        ),
        (
            "SNI is lower-cased",
            hello_with(Some(std::slice::from_ref(&name))),
            found(Some("api.example.com"), &[]),
        ),
        (
            "SNI and ALPN in either order",
            hello_with(Some(&[
                alpn.clone(),
                (0x000a, vec![0, 2, 0, 29]),
                name.clone(),
            ])),
            found(Some("api.example.com"), &["http/1.1", "h2"]),
        ),
        (
            "two host names",
            hello_with(Some(&[sni_ext(&[(0, b"a.com"), (0, b"b.com")])])),
            Inspection::NotMatched,
        ),
        (
            "empty host name",
            hello_with(Some(&[sni_ext(&[(0, b"")])])),
            Inspection::NotMatched,
        ),
        (
            "NUL in host name",
            hello_with(Some(&[sni_ext(&[(0, b"a\0.com")])])),
            Inspection::NotMatched,
        ),
        (
            "unknown name type",
            hello_with(Some(&[sni_ext(&[(1, b"a.com")])])),
            Inspection::NotMatched,
        ),
        (
            "empty SNI extension",
            hello_with(Some(&[(EXTENSION_SERVER_NAME, vec![])])),
            Inspection::NotMatched,
        ),
        (
            "duplicate extension",
            hello_with(Some(&[name.clone(), name.clone()])),
            Inspection::NotMatched,
        ),
        (
            "malformed ALPN is dropped, TLS still found",
            hello_with(Some(&[(EXTENSION_ALPN, vec![0, 3, 5, b'h', b'2'])])),
            found(None, &[]),
        ),
        (
            "empty ALPN name is dropped",
            hello_with(Some(&[alpn_ext(&[b"h2", b""])])),
            found(None, &[]),
        ),
    ];
    for (what, bytes, expected) in cases {
        assert_eq!(inspect_tls(&bytes), expected, "{what}");
    }
}

#[test]
fn non_client_hello_bytes_are_not_tls() {
    let hello = hello_with(None);
    let with = |at: usize, value: u8| {
        let mut bytes = hello.clone();
        bytes[at] = value;
        bytes
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("plaintext HTTP", b"GET / HTTP/1.1\r\n".to_vec()),
        ("application data record", with(0, 23)),
        ("record major version 2", with(1, 2)),
        ("ServerHello", with(5, 2)),
        ("zero-length record", vec![22, 3, 1, 0, 0]),
        ("record longer than 16 KiB", vec![22, 3, 1, 0x40, 0x01]),
        ("session id longer than 32", with(5 + 4 + 34, 33)),
        ("odd cipher suite length", with(5 + 4 + 35 + 1, 3)),
    ];
    for (what, bytes) in cases {
        assert_eq!(inspect_tls(&bytes), Inspection::NotMatched, "{what}");
    }
    assert_eq!(inspect_tls(&[22]), Inspection::NeedMore);
    assert_eq!(
        inspect_tls(&[22, 2]),
        Inspection::NotMatched,
        "rejected before the header is complete"
    );
}

#[test]
fn trailing_bytes_after_the_extensions_are_malformed() {
    let mut hello = hello_with(Some(&[]));
    // Grow the handshake and record lengths by one and append a stray byte.
    hello[4] += 1;
    hello[8] += 1;
    hello.push(0);
    assert_eq!(inspect_tls(&hello), Inspection::NotMatched);
}

// ---- HTTP -----------------------------------------------------------------------------------

#[test]
fn http_inspection() {
    use HttpProtocol::*;
    let cases: Vec<(&[u8], Inspection<HttpProtocol>)> = vec![
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Inspection::Found(H2c)),
        (
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04",
            Inspection::Found(H2c),
        ),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n", Inspection::NeedMore),
        (b"GET / HTTP/1.1\r\n", Inspection::Found(Http11)),
        (
            b"GET /index.html?q=1 HTTP/1.1\r\nHost: a\r\n\r\n",
            Inspection::Found(Http11),
        ),
        (b"POST /api HTTP/1.0\r\n", Inspection::Found(Http10)),
        (b"GET / HTTP/1.1\n", Inspection::Found(Http11)),
        (b"OPTIONS * HTTP/1.1\r\n", Inspection::Found(Http11)),
        (b"CONNECT svc:443 HTTP/1.1\r\n", Inspection::Found(Http11)),
        (b"M-SEARCH * HTTP/1.1\r\n", Inspection::Found(Http11)),
        (b"", Inspection::NeedMore),
        (b"GE", Inspection::NeedMore),
        (b"GET", Inspection::NeedMore),
        (b"GET /a", Inspection::NeedMore),
        (b"GET /a HTTP/1.", Inspection::NeedMore),
        (b"GET /a HTTP/1.1", Inspection::NeedMore),
        (b"GET /a HTTP/1.1\r", Inspection::NeedMore),
        (b"get / HTTP/1.1\r\n", Inspection::NotMatched),
        (b"FOO / HTTP/1.1\r\n", Inspection::NotMatched),
        (b"GETX / HTTP/1.1\r\n", Inspection::NotMatched),
        (b"GET  / HTTP/1.1\r\n", Inspection::NotMatched),
        (b"GET / HTTP/2.0\r\n", Inspection::NotMatched),
        (b"GET / HTTP/1.2\r\n", Inspection::NotMatched),
        (b"GET / HTTP/1.1 \r\n", Inspection::NotMatched),
        (b"GET / HTTP/1.1\rX", Inspection::NotMatched),
        (b"GET /\r\n", Inspection::NotMatched),
        (b"\r\nGET / HTTP/1.1\r\n", Inspection::NotMatched),
        (b"SSH-2.0-OpenSSH_9.6\r\n", Inspection::NotMatched),
        (b"\x16\x03\x01\x02\x00", Inspection::NotMatched),
        (b"PRI * HTTP/1.1\r\n", Inspection::NotMatched),
    ];
    for (bytes, expected) in cases {
        assert_eq!(
            inspect_http(bytes),
            expected,
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn every_prefix_of_a_request_line_needs_more() {
    for line in [
        &b"GET /index.html HTTP/1.1\r\n"[..],
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ] {
        for len in 0..line.len() {
            assert_eq!(
                inspect_http(&line[..len]),
                Inspection::NeedMore,
                "{len} bytes of {line:?}"
            );
        }
    }
}

#[test]
fn http_protocol_alpn_names() {
    assert_eq!(HttpProtocol::Http10.alpn(), "http/1.0");
    assert_eq!(HttpProtocol::Http11.alpn(), "http/1.1");
    assert_eq!(HttpProtocol::H2c.alpn(), "h2c");
}

#[test]
fn inspectors_do_not_claim_each_others_bytes() {
    let hello = rustls_client_hello("svc.ns.svc.cluster.local");
    assert_eq!(inspect_http(&hello), Inspection::NotMatched);
    assert_eq!(
        inspect_tls(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        Inspection::NotMatched
    );
}

// ---- properties -----------------------------------------------------------------------------

/// A verdict other than `NeedMore` must survive more bytes arriving.
fn settled<T: PartialEq + std::fmt::Debug>(
    inspect: impl Fn(&[u8]) -> Inspection<T>,
    bytes: &[u8],
) -> Result<(), TestCaseError> {
    let whole = inspect(bytes);
    for len in 0..bytes.len() {
        let early = inspect(&bytes[..len]);
        if early != Inspection::NeedMore {
            prop_assert_eq!(&early, &whole, "verdict at {} bytes changed later", len);
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = inspect_tls(&bytes);
        let _ = inspect_http(&bytes);
    }

    #[test]
    fn tls_looking_bytes_never_panic(
        len in 0u16..700,
        kind in prop_oneof![Just(1u8), any::<u8>()],
        rest in proptest::collection::vec(any::<u8>(), 0..700),
    ) {
        let mut bytes = vec![CONTENT_TYPE_HANDSHAKE, 3, 1];
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.push(kind);
        bytes.extend_from_slice(&rest);
        settled(inspect_tls, &bytes)?;
    }

    #[test]
    fn mutated_client_hellos_never_panic_and_settle(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut hello = rustls_client_hello("svc.ns.svc.cluster.local");
        for (at, value) in edits {
            let i = at.index(hello.len());
            hello[i] = value;
        }
        let end = cut.index(hello.len() + 1);
        settled(inspect_tls, &hello[..end])?;
    }

    #[test]
    fn split_records_give_the_same_answer(cuts in proptest::collection::vec(1usize..400, 0..4)) {
        let hello = rustls_client_hello("svc.ns.svc.cluster.local");
        prop_assert_eq!(inspect_tls(&split_into_records(&hello, &cuts)), inspect_tls(&hello));
    }

    #[test]
    fn http_like_bytes_never_panic_and_settle(
        method in prop::sample::select(vec!["GET", "POST", "PRI", "M-SEARCH", "XX"]),
        tail in "[ -~\r\n]{0,40}",
    ) {
        let bytes = format!("{method}{tail}").into_bytes();
        settled(inspect_http, &bytes)?;
    }
}
