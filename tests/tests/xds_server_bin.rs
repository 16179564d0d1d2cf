//! The `xds-server` binary: serves a directory of Envoy YAML/JSON resource files and re-reads it
//! when a file changes; a bad file keeps the last good snapshot; with `--tls-cert`, `--tls-key`
//! and `--client-ca` it serves mTLS. Driven by Tern's own client.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::time::Duration;
use tern_tests::pki;
use tern_tests::process::XdsServerProcess;
use tokio::sync::watch;
use xds_client::ads::{
    AdsClient, AdsConfig, Backoff, ClientCertificate, Handler, Protocol, Rejection, TlsOptions,
    Update, XdsAddress, XdsTls,
};
use xds_client::any::unpack;
use xds_client::pb::envoy::config::cluster::v3::Cluster;
use xds_client::pb::envoy::config::core::v3::Node;

const DEADLINE: Duration = Duration::from_secs(20);

/// Remembers each cluster's connect timeout (seconds), which the test changes in the file.
struct Clusters(watch::Sender<Vec<(String, i64)>>);

impl Handler for Clusters {
    async fn apply(&mut self, update: Update) -> Vec<Rejection> {
        self.0.send_modify(|held| {
            held.retain(|(name, _)| !update.removed.contains(name));
            for resource in &update.resources {
                let seconds = unpack::<Cluster>(&resource.body)
                    .ok()
                    .and_then(|c| c.connect_timeout)
                    .map_or(0, |d| d.seconds);
                held.retain(|(name, _)| *name != resource.name);
                held.push((resource.name.clone(), seconds));
            }
            held.sort();
        });
        Vec::new()
    }
}

fn cluster_yaml(name: &str, seconds: u32) -> String {
    format!(
        "resources:\n- \"@type\": type.googleapis.com/envoy.config.cluster.v3.Cluster\n  name: {name}\n  type: STATIC\n  connect_timeout: {seconds}s\n"
    )
}

#[tokio::test]
async fn xds_server_binary_serves_a_directory_and_follows_changes() {
    let dir = std::env::temp_dir().join(format!("tern-xds-dir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    std::fs::write(dir.join("a.yaml"), cluster_yaml("a", 1)).expect("write");
    std::fs::write(
        dir.join("b.json"),
        r#"{"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "b", "connectTimeout": "2s"}"#,
    )
    .expect("write");

    let server = XdsServerProcess::start(&dir, &["--poll-ms", "50"])
        .await
        .expect("xds-server starts");
    let uri = server.address.clone();
    let mut errors = server.stderr;

    let (tx, mut held) = watch::channel(Vec::new());
    let mut config = AdsConfig::ads(XdsAddress::Tcp(uri), Protocol::Delta, Node::default());
    config.backoff = Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
    };
    let (client, _handle) = AdsClient::new(config, Clusters(tx)).expect("config");
    let task = tokio::spawn(client.run());

    let mut expect = async |want: Vec<(&str, i64)>| {
        let want: Vec<(String, i64)> = want.into_iter().map(|(n, s)| (n.to_string(), s)).collect();
        let reached = tokio::time::timeout(DEADLINE, held.wait_for(|h| *h == want))
            .await
            .is_ok();
        assert!(
            reached,
            "wanted {want:?}, client holds {:?}",
            *held.borrow()
        );
    };
    expect(vec![("a", 1), ("b", 2)]).await;

    // A rewrite, a new file and a deleted file are all picked up.
    std::fs::write(dir.join("a.yaml"), cluster_yaml("a", 30)).expect("write");
    std::fs::write(dir.join("c.yml"), cluster_yaml("c", 3)).expect("write");
    std::fs::remove_file(dir.join("b.json")).expect("remove");
    expect(vec![("a", 30), ("c", 3)]).await;

    // A broken file keeps the last good snapshot; fixing it serves it.
    std::fs::write(dir.join("d.yaml"), "resources: [ {\"@type\": nonsense").expect("write");
    let complaint = tokio::time::timeout(DEADLINE, errors.recv())
        .await
        .expect("xds-server reports the bad file")
        .expect("stderr line");
    assert!(
        complaint.contains("keeping the last good snapshot") && complaint.contains("d.yaml"),
        "{complaint}"
    );
    expect(vec![("a", 30), ("c", 3)]).await;
    std::fs::write(dir.join("e.yaml"), cluster_yaml("e", 5)).expect("write");
    std::fs::write(dir.join("d.yaml"), cluster_yaml("d", 4)).expect("write");
    expect(vec![("a", 30), ("c", 3), ("d", 4), ("e", 5)]).await;

    task.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

fn certificates(file: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(pki::dir().join(file))
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .expect("test PKI certificates")
}

#[tokio::test]
async fn xds_server_binary_serves_mtls() {
    let dir = std::env::temp_dir().join(format!("tern-xds-dir-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    std::fs::write(dir.join("a.yaml"), cluster_yaml("a", 7)).expect("write");
    let file = |name: &str| pki::dir().join(name).display().to_string();
    let server = XdsServerProcess::start(
        &dir,
        &[
            "--tls-cert",
            &file("xds-server.pem"),
            "--tls-key",
            &file("xds-server-key.pem"),
            "--client-ca",
            &file("ca.pem"),
        ],
    )
    .await
    .expect("xds-server starts");

    let tls = XdsTls::new(TlsOptions {
        trusted_ca: certificates("ca.pem"),
        client_certificate: Some(ClientCertificate {
            chain: certificates("workload.pem"),
            key: PrivateKeyDer::from_pem_file(pki::dir().join("workload-key.pem")).expect("key"),
        }),
        ..TlsOptions::default()
    })
    .expect("TLS options");
    let (tx, mut held) = watch::channel(Vec::new());
    let mut config = AdsConfig::ads(
        XdsAddress::Tcp(server.address.clone()),
        Protocol::Delta,
        Node::default(),
    );
    config.tls = Some(tls);
    let (client, _handle) = AdsClient::new(config, Clusters(tx)).expect("config");
    let task = tokio::spawn(client.run());
    let want = vec![("a".to_string(), 7)];
    let reached = tokio::time::timeout(DEADLINE, held.wait_for(|h| *h == want))
        .await
        .is_ok();
    assert!(reached, "client holds {:?}", *held.borrow());
    task.abort();
    let _ = std::fs::remove_dir_all(&dir);
}
