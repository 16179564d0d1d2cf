//! The TLS client against an in-process rustls server holding the test PKI's `xds-server.pem`
//! (SANs `DNS:xds.tern.test`, `URI:spiffe://cluster.local/ns/istio-system/sa/istiod`,
//! `IP:127.0.0.1`).

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn pem(file: &str) -> Vec<u8> {
    let path = format!(
        "{}/../tests/testdata/tls/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn certificates(file: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(&pem(file))
        .collect::<Result<_, _>>()
        .expect("certificates")
}

fn key(file: &str) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_slice(&pem(file)).expect("key")
}

/// Accepts a URI SAN equal to `0`.
#[derive(Debug)]
struct UriIs(&'static str);

impl SanMatcher for UriIs {
    fn matches(&self, san: &SubjectAltName) -> bool {
        *san == SubjectAltName::Uri(self.0.to_string())
    }
}

fn options(ca: &str, san: Option<&'static str>) -> TlsOptions {
    TlsOptions {
        // A name the certificate does not carry: Envoy never checks the name against it.
        sni: Some("elsewhere.test".into()),
        trusted_ca: certificates(ca),
        subject_alt_names: san
            .map(|s| Arc::new(UriIs(s)) as Arc<dyn SanMatcher>)
            .into_iter()
            .collect(),
        ..TlsOptions::default()
    }
}

/// One handshake of `tls` with a server on a socket pair; the server echoes one byte.
async fn handshake(tls: &XdsTls) -> Result<(), String> {
    let provider = provider();
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certificates("xds-server.pem"), key("xds-server-key.pem"))
        .expect("server config");
    server.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let (client, server) = tokio::io::duplex(16 * 1024);
    let served = tokio::spawn(async move {
        let mut stream = acceptor.accept(server).await.ok()?;
        let mut byte = [0u8];
        stream.read_exact(&mut byte).await.ok()?;
        stream.write_all(&byte).await.ok()
    });
    let outcome = async {
        let mut stream = tls.handshake(client).await.map_err(|e| e.to_string())?;
        assert_eq!(
            stream.get_ref().1.alpn_protocol(),
            Some(&b"h2"[..]),
            "ALPN h2"
        );
        stream.write_all(b"x").await.map_err(|e| e.to_string())?;
        let mut byte = [0u8];
        stream
            .read_exact(&mut byte)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }
    .await;
    served.abort();
    outcome
}

#[test]
fn subject_alt_names_are_read_by_type() {
    let der = certificates("xds-server.pem").remove(0);
    assert_eq!(
        subject_alt_names(&der),
        [
            SubjectAltName::Dns("xds.tern.test".into()),
            SubjectAltName::Uri("spiffe://cluster.local/ns/istio-system/sa/istiod".into()),
            SubjectAltName::Ip(IpAddr::from([127, 0, 0, 1])),
        ]
    );
    assert!(subject_alt_names(b"not a certificate").is_empty());
}

#[tokio::test]
async fn the_chain_and_the_san_matchers_decide_not_the_name() {
    let tls = XdsTls::new(options(
        "ca.pem",
        Some("spiffe://cluster.local/ns/istio-system/sa/istiod"),
    ))
    .expect("valid");
    assert_eq!(handshake(&tls).await, Ok(()));
    // No trusted CA: Envoy's default, nothing is verified.
    let unverified = XdsTls::new(TlsOptions::default()).expect("valid");
    assert_eq!(handshake(&unverified).await, Ok(()));
}

#[tokio::test]
async fn an_unknown_ca_and_a_san_mismatch_fail_the_handshake_saying_so() {
    let wrong_ca = XdsTls::new(options("other-ca.pem", None)).expect("valid");
    assert_eq!(
        handshake(&wrong_ca).await,
        Err(
            "TLS handshake failed: the server's certificate is not signed by a trusted CA (unknown issuer)"
                .into()
        )
    );
    let wrong_san = XdsTls::new(options("ca.pem", Some("spiffe://elsewhere"))).expect("valid");
    assert_eq!(
        handshake(&wrong_san).await,
        Err("TLS handshake failed: the server's certificate SANs [DNS:xds.tern.test, URI:spiffe://cluster.local/ns/istio-system/sa/istiod, IP:127.0.0.1] match none of the 1 subject_alt_names matchers".into())
    );
}

#[test]
fn unusable_options_are_refused_naming_the_field() {
    let err = |options: TlsOptions| XdsTls::new(options).expect_err("refused").to_string();
    assert_eq!(
        err(TlsOptions {
            min_version: Some(TlsVersion::Tls13),
            max_version: Some(TlsVersion::Tls12),
            ..TlsOptions::default()
        }),
        "tls_params: minimum version Tls13 is above maximum Tls12"
    );
    assert_eq!(
        err(TlsOptions {
            sni: Some("127.0.0.1".into()),
            ..TlsOptions::default()
        }),
        "sni: \"127.0.0.1\" is not a valid DNS name"
    );
    let mismatched = err(TlsOptions {
        client_certificate: Some(ClientCertificate {
            chain: certificates("workload.pem"),
            key: key("xds-server-key.pem"),
        }),
        ..TlsOptions::default()
    });
    assert!(mismatched.starts_with("tls_certificates: "), "{mismatched}");
    // A floor of TLS 1.3 without a ceiling is TLS 1.3 only.
    assert!(
        XdsTls::new(TlsOptions {
            min_version: Some(TlsVersion::Tls13),
            ..TlsOptions::default()
        })
        .is_ok()
    );
}
