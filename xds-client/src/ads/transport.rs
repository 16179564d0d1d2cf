//! Where the control plane is and how to reach it: gRPC over HTTP/2 on TCP or a unix socket
//! (Istio's `./etc/istio/proxy/XDS` and the SDS socket), in plaintext (h2c) or over TLS
//! ([`XdsTls`]).

use super::tls::XdsTls;
use hyper_util::rt::TokioIo;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::{TcpStream, UnixStream};
use tonic::transport::{Channel, Endpoint, Uri};

/// A control plane's address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XdsAddress {
    /// `http://host:port`.
    Tcp(String),
    /// A unix socket path.
    Unix(PathBuf),
}

impl fmt::Display for XdsAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XdsAddress::Tcp(uri) => f.write_str(uri),
            XdsAddress::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid control plane address {address}: {source}")]
    Address {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// `reason` is the whole error chain (tonic's own message is only "transport error").
    #[error("cannot connect to {address}: {reason}")]
    Connect { address: String, reason: String },
}

/// An error and its sources on one line, repeated messages said once.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// Opens one HTTP/2 connection to the control plane, with a TLS handshake first when `tls`.
pub(crate) async fn connect(
    address: &XdsAddress,
    tls: Option<&XdsTls>,
    timeout: Duration,
) -> Result<Channel, ConnectError> {
    let uri = match address {
        XdsAddress::Tcp(uri) => uri.clone(),
        // The authority is unused on a unix socket, but the URI must have one.
        XdsAddress::Unix(_) => "http://localhost".to_string(),
    };
    let endpoint = Endpoint::from_shared(uri).map_err(|source| ConnectError::Address {
        address: address.to_string(),
        source,
    })?;
    let endpoint = endpoint.connect_timeout(timeout);
    let result = match (address, tls) {
        (XdsAddress::Tcp(_), None) => endpoint.connect().await,
        (XdsAddress::Unix(path), None) => {
            let path = path.clone();
            endpoint
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move { UnixStream::connect(path).await.map(TokioIo::new) }
                }))
                .await
        }
        (XdsAddress::Tcp(_), Some(tls)) => {
            let tls = tls.clone();
            endpoint
                .connect_with_connector(tower::service_fn(move |uri: Uri| {
                    let tls = tls.clone();
                    async move {
                        let host = uri.host().unwrap_or_default();
                        let host = host.trim_start_matches('[').trim_end_matches(']');
                        let port = uri.port_u16().unwrap_or(80);
                        let tcp = TcpStream::connect((host, port)).await?;
                        tcp.set_nodelay(true)?;
                        let stream = tls.handshake(tcp).await?;
                        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(TokioIo::new(stream))
                    }
                }))
                .await
        }
        (XdsAddress::Unix(path), Some(tls)) => {
            let (path, tls) = (path.clone(), tls.clone());
            endpoint
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let (path, tls) = (path.clone(), tls.clone());
                    async move {
                        let unix = UnixStream::connect(path).await?;
                        let stream = tls.handshake(unix).await?;
                        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(TokioIo::new(stream))
                    }
                }))
                .await
        }
    };
    result.map_err(|e| ConnectError::Connect {
        address: address.to_string(),
        reason: error_chain(&e),
    })
}
