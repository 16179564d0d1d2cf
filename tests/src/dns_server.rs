//! A tiny DNS server for tests: answers A queries for one name with an address the test can
//! change and a fixed TTL, answers everything else with no records, and counts queries.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use tokio::net::UdpSocket;

/// A running test name server; dropping it stops it.
pub struct TestDns {
    pub address: SocketAddr,
    answer: Arc<AtomicU32>,
    queries: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TestDns {
    /// Serves `name` -> `ip` with `ttl` seconds on an ephemeral UDP port of 127.0.0.1.
    pub async fn start(name: &str, ip: Ipv4Addr, ttl: u32) -> std::io::Result<TestDns> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let address = socket.local_addr()?;
        let answer = Arc::new(AtomicU32::new(u32::from(ip)));
        let queries = Arc::new(AtomicUsize::new(0));
        let (current, count) = (answer.clone(), queries.clone());
        let wanted = name.trim_end_matches('.').to_ascii_lowercase();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                count.fetch_add(1, Ordering::SeqCst);
                let ip = Ipv4Addr::from(current.load(Ordering::SeqCst));
                if let Some(reply) = reply(&buf[..n], &wanted, ip, ttl) {
                    let _ = socket.send_to(&reply, peer).await;
                }
            }
        });
        Ok(TestDns {
            address,
            answer,
            queries,
            task,
        })
    }

    /// Changes the address served from now on.
    pub fn set_answer(&self, ip: Ipv4Addr) {
        self.answer.store(u32::from(ip), Ordering::SeqCst);
    }

    /// Queries received so far.
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The response to one query: the question echoed, plus an A record when it asks for `wanted`.
fn reply(query: &[u8], wanted: &str, ip: Ipv4Addr, ttl: u32) -> Option<Vec<u8>> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*query.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let question_end = at + 4;
    let mut out = query.get(..question_end)?.to_vec();
    out[2] = 0x81; // QR, RD
    out[3] = 0x80; // RA, NOERROR
    out[6..12].copy_from_slice(&[0, 0, 0, 0, 0, 0]);
    if labels.join(".") == wanted && qtype == 1 {
        out[7] = 1;
        out.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&[0, 4]);
        out.extend_from_slice(&ip.octets());
    }
    Some(out)
}
