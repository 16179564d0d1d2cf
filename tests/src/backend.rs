//! TCP backends for tests: each accepts on an ephemeral loopback port, answers with its name,
//! and echoes what it reads until the client half-closes, then closes its side.
//!
//! Protocol per connection: the backend first writes `<name>\n`, then echoes every byte back;
//! when the client shuts down its write half the backend finishes echoing and shuts down too.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A running backend; dropping it stops accepting.
pub struct Backend {
    pub name: String,
    pub address: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    /// Starts a named echo backend on 127.0.0.1 (port chosen by the kernel).
    pub async fn start(name: &str) -> std::io::Result<Backend> {
        Self::start_on(name, "127.0.0.1:0".parse().expect("literal")).await
    }

    pub async fn start_on(name: &str, address: SocketAddr) -> std::io::Result<Backend> {
        let listener = TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        let greeting = format!("{name}\n").into_bytes();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let greeting = greeting.clone();
                tokio::spawn(async move {
                    if stream.write_all(&greeting).await.is_err() {
                        return;
                    }
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if stream.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    let _ = stream.shutdown().await;
                });
            }
        });
        Ok(Backend {
            name: name.to_string(),
            address,
            connections,
            task,
        })
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects to `proxy`, sends `payload`, half-closes, and returns everything received until the
/// far side closed: the backend's name line followed by the echoed payload.
pub async fn round_trip(proxy: SocketAddr, payload: &[u8]) -> std::io::Result<(String, Vec<u8>)> {
    let mut stream = tokio::net::TcpStream::connect(proxy).await?;
    stream.write_all(payload).await?;
    stream.shutdown().await?;
    let mut received = Vec::new();
    stream.read_to_end(&mut received).await?;
    let newline = received.iter().position(|b| *b == b'\n').ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("no greeting in {} bytes", received.len()),
        )
    })?;
    let name = String::from_utf8_lossy(&received[..newline]).into_owned();
    Ok((name, received[newline + 1..].to_vec()))
}
