//! A minimal DNS client: one A or AAAA question over UDP, the answers with their TTLs.
//!
//! The system resolver (getaddrinfo) hides TTLs, so clusters with `respect_dns_ttl`, or with
//! resolvers of their own, ask name servers directly. Responses are untrusted bytes: every read
//! is bounds-checked, compression pointers may only point backwards, and a malformed packet is an
//! error, never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::net::UdpSocket;

/// Record types Tern asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordType {
    A = 1,
    Aaaa = 28,
}

/// An address and how long it may be cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub address: IpAddr,
    pub ttl: Duration,
}

/// Why a query produced no answers.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("name {0:?} cannot be encoded as a DNS name")]
    BadName(String),
    #[error("malformed response: {0}")]
    Malformed(&'static str),
    #[error("server answered rcode {0}")]
    Rcode(u8),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

const CLASS_IN: u16 = 1;
const FLAG_RD: u16 = 0x0100;

/// Encodes a recursive query for `name`.
pub fn encode_query(id: u16, name: &str, record: RecordType) -> Result<Vec<u8>, DnsError> {
    let mut packet = Vec::with_capacity(name.len() + 18);
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&FLAG_RD.to_be_bytes());
    packet.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // 1 question, no other records
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(DnsError::BadName(name.to_string()));
        }
        packet.push(label.len() as u8);
        packet.extend_from_slice(label.as_bytes());
    }
    packet.push(0);
    packet.extend_from_slice(&(record as u16).to_be_bytes());
    packet.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(packet)
}

/// A bounds-checked reader over a response.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DnsError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or(DnsError::Malformed("truncated"))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u16(&mut self) -> Result<u16, DnsError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, DnsError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Skips a (possibly compressed) name. A pointer ends the name in place.
    fn skip_name(&mut self) -> Result<(), DnsError> {
        for _ in 0..128 {
            let len = self.take(1)?[0];
            match len {
                0 => return Ok(()),
                l if l & 0xC0 == 0xC0 => {
                    let low = self.take(1)?[0];
                    let target = (usize::from(l & 0x3F) << 8) | usize::from(low);
                    if target >= self.at - 2 {
                        return Err(DnsError::Malformed("forward compression pointer"));
                    }
                    return Ok(());
                }
                l if l & 0xC0 != 0 => return Err(DnsError::Malformed("reserved label type")),
                l => {
                    self.take(usize::from(l))?;
                }
            }
        }
        Err(DnsError::Malformed("name too long"))
    }
}

/// Parses the response to query `id`: the A/AAAA records of the answer section, with TTLs.
pub fn parse_response(id: u16, bytes: &[u8]) -> Result<Vec<Answer>, DnsError> {
    let mut r = Reader { bytes, at: 0 };
    if r.u16()? != id {
        return Err(DnsError::Malformed("id mismatch"));
    }
    let flags = r.u16()?;
    if flags & 0x8000 == 0 {
        return Err(DnsError::Malformed("not a response"));
    }
    let rcode = (flags & 0x000F) as u8;
    if rcode != 0 {
        return Err(DnsError::Rcode(rcode));
    }
    let questions = r.u16()?;
    let answers = r.u16()?;
    r.take(4)?; // authority and additional counts
    for _ in 0..questions {
        r.skip_name()?;
        r.take(4)?;
    }
    let mut out = Vec::new();
    for _ in 0..answers {
        r.skip_name()?;
        let kind = r.u16()?;
        let class = r.u16()?;
        let ttl = Duration::from_secs(u64::from(r.u32()?));
        let len = usize::from(r.u16()?);
        let data = r.take(len)?;
        let address = match (kind, class, len) {
            (1, CLASS_IN, 4) => IpAddr::V4(Ipv4Addr::new(data[0], data[1], data[2], data[3])),
            (28, CLASS_IN, 16) => {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(data);
                IpAddr::V6(Ipv6Addr::from(octets))
            }
            _ => continue, // CNAMEs and anything else on the way to the addresses
        };
        out.push(Answer { address, ttl });
    }
    Ok(out)
}

/// Asks `server` for `name`'s records of one type.
pub async fn query(
    server: SocketAddr,
    name: &str,
    record: RecordType,
    timeout: Duration,
) -> Result<Vec<Answer>, DnsError> {
    let id: u16 =
        rand::Rng::random(&mut <rand::rngs::SmallRng as rand::SeedableRng>::from_os_rng());
    let packet = encode_query(id, name, record)?;
    let local: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    socket.send(&packet).await?;
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let n = tokio::time::timeout_at(deadline, socket.recv(&mut buf))
            .await
            .map_err(|_| DnsError::Timeout(timeout))??;
        match parse_response(id, &buf[..n]) {
            // A stray datagram with another id: keep waiting for ours.
            Err(DnsError::Malformed("id mismatch")) => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A response to `query` with the given A records, the answer names compressed.
    fn response(query: &[u8], records: &[([u8; 4], u32)]) -> Vec<u8> {
        let mut r = query.to_vec();
        r[2] |= 0x80; // QR
        r[6..8].copy_from_slice(&(records.len() as u16).to_be_bytes());
        for (ip, ttl) in records {
            r.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
            r.extend_from_slice(&ttl.to_be_bytes());
            r.extend_from_slice(&[0, 4]);
            r.extend_from_slice(ip);
        }
        r
    }

    #[test]
    fn encodes_a_query_as_the_wire_format_says() {
        let q = encode_query(0x1234, "db.example.", RecordType::A).unwrap();
        assert_eq!(q, b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x02db\x07example\x00\x00\x01\x00\x01");
        assert!(encode_query(1, "a..b", RecordType::A).is_err());
    }

    #[test]
    fn parses_answers_with_ttls_and_skips_other_records() {
        let q = encode_query(7, "db.example", RecordType::A).unwrap();
        let mut r = response(&q, &[([10, 0, 0, 1], 30), ([10, 0, 0, 2], 5)]);
        // A CNAME record among them (type 5) must be skipped, not misread.
        let answers = parse_response(7, &r).unwrap();
        assert_eq!(
            answers,
            [
                Answer {
                    address: "10.0.0.1".parse().unwrap(),
                    ttl: Duration::from_secs(30)
                },
                Answer {
                    address: "10.0.0.2".parse().unwrap(),
                    ttl: Duration::from_secs(5)
                },
            ]
        );
        r[7] = 3;
        r.extend_from_slice(&[0xC0, 12, 0, 5, 0, 1, 0, 0, 0, 9, 0, 2, 0xC0, 12]);
        assert_eq!(parse_response(7, &r).unwrap().len(), 2);
    }

    #[test]
    fn rejects_errors_mismatches_and_forward_pointers() {
        let q = encode_query(7, "db.example", RecordType::A).unwrap();
        let mut nx = response(&q, &[]);
        nx[3] |= 3; // NXDOMAIN
        assert!(matches!(parse_response(7, &nx), Err(DnsError::Rcode(3))));
        assert!(matches!(
            parse_response(8, &response(&q, &[])),
            Err(DnsError::Malformed("id mismatch"))
        ));
        let mut looped = response(&q, &[([1, 2, 3, 4], 1)]);
        let at = q.len();
        looped[at + 1] = 0xFF; // pointer past itself
        assert!(parse_response(7, &looped).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_response(u16::from_be_bytes([bytes.first().copied().unwrap_or(0), bytes.get(1).copied().unwrap_or(0)]), &bytes);
        }
    }
}
