//! Where the control plane is and how to reach it: gRPC over h2c on TCP or a unix socket
//! (Istio's `./etc/istio/proxy/XDS` and the SDS socket).

use hyper_util::rt::TokioIo;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::UnixStream;
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
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// Opens one HTTP/2 connection to the control plane.
pub(crate) async fn connect(
    address: &XdsAddress,
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
    let result = match address {
        XdsAddress::Tcp(_) => endpoint.connect().await,
        XdsAddress::Unix(path) => {
            let path = path.clone();
            endpoint
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move { UnixStream::connect(path).await.map(TokioIo::new) }
                }))
                .await
        }
    };
    result.map_err(|source| ConnectError::Connect {
        address: address.to_string(),
        source,
    })
}
