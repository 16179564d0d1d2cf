//! The gRPC face of the control plane: tonic services that register each stream with the actor,
//! forward its requests, and relay the actor's responses.

use super::actor::{Command, Sink};
use super::tls::{Handshake, ServerTls};
use super::{Bind, Request, StreamKind};
use anyhow::Context;
use std::net::SocketAddr;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{
    ReceiverStream, TcpListenerStream, UnboundedReceiverStream, UnixListenerStream,
};
use tonic::{Response, Status, Streaming};
use xds_client::ads::XdsAddress;
use xds_client::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use xds_client::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use xds_client::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};

#[derive(Clone)]
struct Services {
    actor: mpsc::UnboundedSender<Command>,
}

type SotwStream = UnboundedReceiverStream<Result<DiscoveryResponse, Status>>;
type DeltaStream = UnboundedReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

impl Services {
    async fn open(&self, kind: StreamKind, sink: Sink) -> Result<u64, Status> {
        let (reply, id) = oneshot::channel();
        self.actor
            .send(Command::Open { kind, sink, reply })
            .map_err(|_| Status::unavailable("control plane stopped"))?;
        id.await
            .map_err(|_| Status::unavailable("control plane stopped"))
    }

    async fn sotw(
        &self,
        kind: StreamKind,
        mut requests: Streaming<DiscoveryRequest>,
    ) -> Result<Response<SotwStream>, Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        let stream = self.open(kind, Sink::StateOfTheWorld(tx)).await?;
        let actor = self.actor.clone();
        tokio::spawn(async move {
            while let Ok(Some(request)) = requests.message().await {
                let request = Box::new(Request::StateOfTheWorld(request));
                if actor.send(Command::Request { stream, request }).is_err() {
                    return;
                }
            }
            let _ = actor.send(Command::Close { stream });
        });
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Services {
    type StreamAggregatedResourcesStream = SotwStream;
    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn stream_aggregated_resources(
        &self,
        request: tonic::Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<SotwStream>, Status> {
        self.sotw(StreamKind::StateOfTheWorld, request.into_inner())
            .await
    }

    async fn delta_aggregated_resources(
        &self,
        request: tonic::Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        let mut requests = request.into_inner();
        let (tx, rx) = mpsc::unbounded_channel();
        let stream = self.open(StreamKind::Delta, Sink::Delta(tx)).await?;
        let actor = self.actor.clone();
        tokio::spawn(async move {
            while let Ok(Some(request)) = requests.message().await {
                let request = Box::new(Request::Delta(request));
                if actor.send(Command::Request { stream, request }).is_err() {
                    return;
                }
            }
            let _ = actor.send(Command::Close { stream });
        });
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}

#[tonic::async_trait]
impl SecretDiscoveryService for Services {
    type DeltaSecretsStream = DeltaStream;
    type StreamSecretsStream = SotwStream;

    async fn delta_secrets(
        &self,
        _request: tonic::Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        Err(Status::unimplemented(
            "SDS is served state-of-the-world only",
        ))
    }

    async fn stream_secrets(
        &self,
        request: tonic::Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<SotwStream>, Status> {
        self.sotw(StreamKind::Secrets, request.into_inner()).await
    }

    async fn fetch_secrets(
        &self,
        _request: tonic::Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        Err(Status::unimplemented("FetchSecrets is not served"))
    }
}

/// Binds and serves (over TLS when `tls`, recording each handshake in `handshakes`); returns the
/// clients' address, the bound TCP address, and the server task.
pub(super) async fn serve(
    bind: Bind,
    tls: Option<&ServerTls>,
    handshakes: watch::Sender<Vec<Handshake>>,
    actor: mpsc::UnboundedSender<Command>,
    shutdown: oneshot::Receiver<()>,
) -> anyhow::Result<(XdsAddress, Option<SocketAddr>, JoinHandle<()>)> {
    let services = Services { actor };
    let router = tonic::transport::Server::builder()
        .add_service(
            AggregatedDiscoveryServiceServer::new(services.clone())
                .max_decoding_message_size(usize::MAX),
        )
        .add_service(SecretDiscoveryServiceServer::new(services));
    let signal = async {
        let _ = shutdown.await;
    };
    match bind {
        Bind::Tcp(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("binding {address}"))?;
            let local = listener.local_addr()?;
            let task = match tls {
                None => {
                    let incoming = TcpListenerStream::new(listener);
                    tokio::spawn(async move {
                        if let Err(e) = router.serve_with_incoming_shutdown(incoming, signal).await
                        {
                            eprintln!("xds-server: {e}");
                        }
                    })
                }
                Some(tls) => {
                    let incoming =
                        ReceiverStream::new(super::tls::accept(listener, tls, handshakes)?);
                    tokio::spawn(async move {
                        if let Err(e) = router.serve_with_incoming_shutdown(incoming, signal).await
                        {
                            eprintln!("xds-server: {e}");
                        }
                    })
                }
            };
            Ok((
                XdsAddress::Tcp(format!("http://{local}")),
                Some(local),
                task,
            ))
        }
        Bind::Unix(_) if tls.is_some() => anyhow::bail!("TLS is served on TCP only"),
        Bind::Unix(path) => {
            if path.exists() {
                std::fs::remove_file(&path)
                    .with_context(|| format!("removing stale socket {}", path.display()))?;
            }
            let listener = tokio::net::UnixListener::bind(&path)
                .with_context(|| format!("binding {}", path.display()))?;
            let incoming = UnixListenerStream::new(listener);
            let task = tokio::spawn(async move {
                if let Err(e) = router.serve_with_incoming_shutdown(incoming, signal).await {
                    eprintln!("xds-server: {e}");
                }
            });
            Ok((XdsAddress::Unix(path), None, task))
        }
    }
}
