//! The control plane over TLS, optionally requiring client certificates (mTLS), as istiod serves
//! xDS on 15012. Every handshake is recorded, good or failed, so a test can tell "the client
//! never came" from "the client came and the handshake failed, for this reason".

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The server's certificate and key (PEM files) and, for mTLS, the CA client certificates must
/// chain to.
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub certificate_chain: PathBuf,
    pub private_key: PathBuf,
    /// `Some`: a client certificate signed by this CA is required.
    pub client_ca: Option<PathBuf>,
}

/// One TLS handshake the server saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handshake {
    /// Completed: the SNI the client sent, and the SANs of its certificate (empty: none).
    Accepted {
        sni: Option<String>,
        client_sans: Vec<String>,
    },
    /// Failed, with rustls's reason (e.g. `received fatal alert: UnknownCA`).
    Failed(String),
}

impl ServerTls {
    fn config(&self) -> anyhow::Result<ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = CertificateDer::pem_file_iter(&self.certificate_chain)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("reading {}", self.certificate_chain.display()))?;
        let key = PrivateKeyDer::from_pem_file(&self.private_key)
            .with_context(|| format!("reading {}", self.private_key.display()))?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(ca)
                    .with_context(|| format!("reading {}", ca.display()))?
                {
                    roots.add(cert?)?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

/// Accepts TCP connections on `listener`, runs the TLS handshake on each (recording it in
/// `handshakes`) and yields the ones that completed.
pub(super) fn accept(
    listener: TcpListener,
    tls: &ServerTls,
    handshakes: watch::Sender<Vec<Handshake>>,
) -> anyhow::Result<mpsc::Receiver<std::io::Result<TlsConnection>>> {
    let acceptor = TlsAcceptor::from(Arc::new(tls.config()?));
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let tcp = match listener.accept().await {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let (acceptor, tx, handshakes) = (acceptor.clone(), tx.clone(), handshakes.clone());
            tokio::spawn(async move {
                match acceptor.accept(tcp).await {
                    Ok(stream) => {
                        let connection = stream.get_ref().1;
                        let sni = connection.server_name().map(str::to_string);
                        let client_sans = connection
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .map(|leaf| {
                                xds_client::ads::subject_alt_names(leaf)
                                    .iter()
                                    .map(ToString::to_string)
                                    .collect()
                            })
                            .unwrap_or_default();
                        handshakes
                            .send_modify(|h| h.push(Handshake::Accepted { sni, client_sans }));
                        let _ = tx.send(Ok(TlsConnection(stream))).await;
                    }
                    Err(e) => {
                        eprintln!("xds-server: TLS handshake failed: {e}");
                        handshakes.send_modify(|h| h.push(Handshake::Failed(e.to_string())));
                    }
                }
            });
        }
    });
    Ok(rx)
}

/// A server-side TLS connection tonic can serve.
pub struct TlsConnection(TlsStream<TcpStream>);

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
