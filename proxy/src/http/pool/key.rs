//! The keys of a worker's pool map, and its hasher: a request finds its pool by a borrowed key
//! (no copy of the cluster name) hashed with FNV-1a.

use std::net::SocketAddr;

#[derive(Clone, PartialEq, Eq)]
pub(super) struct PoolKey {
    pub(super) cluster: String,
    pub(super) address: SocketAddr,
    pub(super) http2: bool,
    /// Whether the endpoint's transport socket is TLS: an endpoint that switches between
    /// plaintext and TLS (its `tlsMode` changed) never reuses the other kind's connections.
    pub(super) tls: bool,
}

/// A [`PoolKey`] over a borrowed cluster name: what a request looks its pool up with, so that
/// finding an existing pool copies nothing.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct PoolKeyRef<'a> {
    pub(super) cluster: &'a str,
    pub(super) address: SocketAddr,
    pub(super) http2: bool,
    pub(super) tls: bool,
}

/// Either form of a pool key, compared and hashed as a [`PoolKeyRef`] (the map's `Borrow`
/// target).
pub(super) trait AsPoolKey {
    fn key(&self) -> PoolKeyRef<'_>;
}

impl AsPoolKey for PoolKey {
    fn key(&self) -> PoolKeyRef<'_> {
        PoolKeyRef {
            cluster: &self.cluster,
            address: self.address,
            http2: self.http2,
            tls: self.tls,
        }
    }
}

impl AsPoolKey for PoolKeyRef<'_> {
    fn key(&self) -> PoolKeyRef<'_> {
        *self
    }
}

impl<'a> std::borrow::Borrow<dyn AsPoolKey + 'a> for PoolKey {
    fn borrow(&self) -> &(dyn AsPoolKey + 'a) {
        self
    }
}

impl std::hash::Hash for PoolKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl std::hash::Hash for dyn AsPoolKey + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl PartialEq for dyn AsPoolKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for dyn AsPoolKey + '_ {}

/// FNV-1a for the pool map, looked up on every request: its keys (cluster names and endpoint
/// addresses) come from the configuration, not from clients, so SipHash's flooding resistance
/// buys nothing there and costs several times as much on such short keys.
pub(super) struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::hash::BuildHasherDefault;

    #[test]
    fn a_borrowed_key_finds_only_its_own_pool() {
        let address: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let owned = |cluster: &str, address, http2, tls| PoolKey {
            cluster: cluster.to_string(),
            address,
            http2,
            tls,
        };
        let mut map: HashMap<PoolKey, u32, BuildHasherDefault<Fnv1a>> = HashMap::default();
        map.insert(owned("a", address, false, false), 1);
        map.insert(owned("a", address, true, false), 2);
        map.insert(owned("a", address, false, true), 3);
        map.insert(owned("b", address, false, false), 4);
        let find = |cluster, address, http2, tls| {
            let key = PoolKeyRef {
                cluster,
                address,
                http2,
                tls,
            };
            map.get(&key as &dyn AsPoolKey).copied()
        };
        assert_eq!(find("a", address, false, false), Some(1));
        assert_eq!(find("a", address, true, false), Some(2));
        assert_eq!(find("a", address, false, true), Some(3));
        assert_eq!(find("b", address, false, false), Some(4));
        assert_eq!(find("c", address, false, false), None);
        assert_eq!(
            find("a", "10.0.0.1:81".parse().unwrap(), false, false),
            None
        );
    }
}
