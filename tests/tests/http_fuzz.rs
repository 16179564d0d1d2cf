//! Arbitrary bytes into the HTTP connection manager over real sockets: mutated HTTP/1.1 and
//! HTTP/2 openings and pure noise, one connection each. Tern must answer or close every one of
//! them, never hang a worker and never panic; afterwards a well-formed request still works.
//!
//! The run is bounded by count and by time: `TERN_HTTP_FUZZ_SECONDS` (default 8) and 20 000
//! inputs, whichever comes first. The seed is printed so a failure can be replayed with
//! `TERN_HTTP_FUZZ_SEED`.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;
use tern_tests::bootstrap::HttpBootstrap;
use tern_tests::http_backend;
use tern_tests::inprocess::Running;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Path normalisation, websocket upgrades, a regex route, a redirect and direct responses: the
/// parts of the connection manager a byte can reach without an upstream.
fn bootstrap() -> String {
    HttpBootstrap {
        hcm: "          normalize_path: true
          merge_slashes: true
          upgrade_configs: [{ upgrade_type: websocket }]",
        routes: r#"              - match: { safe_regex: { regex: "/re/[a-z]+" } }
                direct_response: { status: 201, body: { inline_string: regex } }
              - match: { prefix: /r }
                redirect: { path_redirect: /elsewhere }
              - match: { prefix: / }
                direct_response: { status: 200, body: { inline_string: ok } }"#,
        ..Default::default()
    }
    .yaml()
}

/// Well-formed openings the mutations start from.
const SEEDS: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"GET /re/abc/../x//y?q=%2F HTTP/1.1\r\nHost: a:80\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x1d\x01\x05\x00\x00\x00\x01\x82\x86\x84\x41\x8a\x08\x9d\x5c\x0b\x81\x70\xdc\x78\x0f\x03",
];

fn mutate(rng: &mut SmallRng) -> Vec<u8> {
    if rng.random_ratio(1, 10) {
        let len = rng.random_range(0..512);
        return (0..len).map(|_| rng.random()).collect();
    }
    let mut input = SEEDS[rng.random_range(0..SEEDS.len())].to_vec();
    for _ in 0..rng.random_range(1..8) {
        let at = rng.random_range(0..=input.len());
        match rng.random_range(0..5) {
            0 if !input.is_empty() => {
                let i = at.min(input.len() - 1);
                input[i] = rng.random();
            }
            1 => {
                let chunk: Vec<u8> = (0..rng.random_range(1..16)).map(|_| rng.random()).collect();
                input.splice(at..at, chunk);
            }
            2 => input.truncate(at),
            3 => {
                let interesting: &[&[u8]] = &[
                    b"\r\n",
                    b":",
                    b"%",
                    b"\0",
                    b"/..",
                    b"Content-Length: 99999999999999999999\r\n",
                    b"Host: \r\n",
                ];
                let piece = interesting[rng.random_range(0..interesting.len())];
                input.splice(at..at, piece.iter().copied());
            }
            _ => {
                let end = rng.random_range(at..=input.len());
                let copy = input[at..end].to_vec();
                input.splice(end..end, copy);
            }
        }
    }
    input
}

#[tokio::test]
async fn arbitrary_bytes_never_hang_or_crash_the_connection_manager() {
    let seconds: u64 = std::env::var("TERN_HTTP_FUZZ_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let seed: u64 = std::env::var("TERN_HTTP_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| SmallRng::from_os_rng().random());
    println!("TERN_HTTP_FUZZ_SEED={seed}");
    let mut rng = SmallRng::seed_from_u64(seed);
    let tern = Running::start(&bootstrap(), 1).await;
    let proxy = tern.listener("http").await;
    let stop = Instant::now() + Duration::from_secs(seconds);
    let mut inputs = 0;
    while Instant::now() < stop {
        let input = mutate(&mut rng);
        inputs += 1;
        let mut stream = TcpStream::connect(proxy).await.expect("Tern still accepts");
        // Closed with a reset once done, so a long run does not exhaust local ports in TIME_WAIT.
        socket2::SockRef::from(&stream)
            .set_linger(Some(Duration::ZERO))
            .expect("SO_LINGER");
        // A write may fail when Tern already closed on a bad prefix; that's an answer too.
        let _ = stream.write_all(&input).await;
        let _ = stream.shutdown().await;
        let mut sink = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut sink)).await;
        assert!(
            read.is_ok(),
            "Tern neither answered nor closed within 10 s for input {:?}",
            String::from_utf8_lossy(&input)
        );
    }
    println!("{inputs} inputs in {seconds} s, no hang, no crash");
    let r = http_backend::http_request(proxy, "GET", "a", "/", &[])
        .await
        .expect("a good request after the noise");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
}
