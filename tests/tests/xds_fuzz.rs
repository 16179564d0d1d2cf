//! Mutation fuzzing of what Tern does with a control plane's bytes, on the stable toolchain:
//! `tern::xds::fuzz::apply_encoded_responses` (the ADS client's decoding and checks, then
//! conversion, validation, warming and subscriptions) over mutated encodings of realistic
//! responses — Istio's 27 sidecar listeners and the EDS assignments of a Bookinfo sidecar from
//! the shared fixtures, plus the test suite's clusters and routes — for both protocols.
//!
//! Passing means no input panicked. `TERN_XDS_FUZZ_SECONDS` sets the budget (default 5);
//! `TERN_XDS_FUZZ_WRITE_SEEDS=<dir>` writes the seed inputs there (the cargo-fuzz target's
//! corpus, `proxy/fuzz/`). A panicking input is saved under the system temp dir and named in the
//! failure with the generator's seed; `TERN_XDS_FUZZ_RNG_SEED` replays a run.

#[path = "xds/resources.rs"]
mod resources;

use prost::{Message, Name};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};
use tern::xds::fuzz::{Outcome, apply_encoded_responses, encode_input};
use xds_client::ads::Protocol;
use xds_client::any::pack;
use xds_client::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use xds_client::pb::envoy::config::listener::v3::Listener;
use xds_client::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryResponse, DiscoveryResponse, Resource,
};
use xds_client::pb::google::protobuf::Any;
use xds_client::proto_json::{ReadOptions, from_value};

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/istio/xds")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).expect("the fixture is JSON")
}

/// The messages of one config_dump section, read as `M` (the dump's `@type` keys dropped).
fn from_dump<M: Message + Name + Default>(dump: &Value, list: &str, field: &str) -> Vec<Any> {
    dump["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|section| section[list].as_array().cloned().unwrap_or_default())
        .filter_map(|entry| {
            let mut value = match field {
                "" => entry,
                path => path.split('.').fold(entry, |v, key| v[key].clone()),
            };
            value.as_object_mut()?.remove("@type");
            let options = ReadOptions {
                allow_unknown_fields: true,
            };
            from_value::<M>(value, options).ok().map(|m| pack(&m))
        })
        .collect()
}

/// One response per type: Istio's listeners and endpoints, the suite's clusters and routes.
fn seed_resources() -> Vec<(&'static str, Vec<Any>)> {
    let listeners = from_dump::<Listener>(
        &fixture("configdump.yaml"),
        "dynamic_listeners",
        "active_state.listener",
    );
    assert_eq!(listeners.len(), 27, "Istio's sidecar listeners");
    let mut listeners = listeners;
    listeners.push(pack(&resources::http_listener("http_in", "r80")));
    let endpoints = from_dump::<ClusterLoadAssignment>(
        &fixture("configdump.json"),
        "dynamic_endpoint_configs",
        "endpoint_config",
    );
    assert!(endpoints.len() >= 30, "{} assignments", endpoints.len());
    let mut endpoints = endpoints;
    endpoints.push(pack(&resources::endpoints(
        "outbound|9080||reviews.default.svc.cluster.local",
        9080,
    )));
    let clusters = vec![
        pack(&resources::eds_cluster(
            "outbound|9080||reviews.default.svc.cluster.local",
        )),
        pack(&resources::static_cluster("static", 8080)),
    ];
    let routes = vec![
        pack(&resources::route_to("r9080", "static")),
        pack(&resources::route_to("r80", "static")),
    ];
    vec![
        (xds_client::resource::LISTENER, listeners),
        (xds_client::resource::CLUSTER, clusters),
        (xds_client::resource::ROUTE, routes),
        (xds_client::resource::ENDPOINT, endpoints),
    ]
}

fn name_of(type_url: &str, any: &Any) -> String {
    xds_client::resource::ResourceType::from_type_url(type_url)
        .and_then(|ty| ty.decode_name(&any.value).ok())
        .unwrap_or_default()
}

fn seeds() -> Vec<Vec<u8>> {
    let by_type = seed_resources();
    let sotw: Vec<Vec<u8>> = by_type
        .iter()
        .map(|(type_url, resources)| {
            DiscoveryResponse {
                version_info: "1".into(),
                resources: resources.clone(),
                type_url: type_url.to_string(),
                nonce: "n".into(),
                ..Default::default()
            }
            .encode_to_vec()
        })
        .collect();
    let delta: Vec<Vec<u8>> = by_type
        .iter()
        .map(|(type_url, resources)| {
            DeltaDiscoveryResponse {
                system_version_info: "1".into(),
                resources: resources
                    .iter()
                    .map(|any| Resource {
                        name: name_of(type_url, any),
                        version: "1".into(),
                        resource: Some(any.clone()),
                        ..Default::default()
                    })
                    .collect(),
                type_url: type_url.to_string(),
                nonce: "n".into(),
                ..Default::default()
            }
            .encode_to_vec()
        })
        .collect();
    // Each response alone too, so mutations of small inputs are cheap and focused.
    let mut seeds = vec![
        encode_input(Protocol::StateOfTheWorld, &sotw),
        encode_input(Protocol::Delta, &delta),
    ];
    for (i, response) in sotw.iter().enumerate() {
        seeds.push(encode_input(
            Protocol::StateOfTheWorld,
            std::slice::from_ref(response),
        ));
        seeds.push(encode_input(
            Protocol::Delta,
            std::slice::from_ref(&delta[i]),
        ));
    }
    seeds
}

/// A small xorshift generator: reproducible from the printed seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A few random edits: bit flips and interesting bytes (which mostly keep the protobuf framing,
/// so they reach the converters), and cuts, copies and insertions (which test the framing).
fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..=rng.below(8) {
        if data.len() < 2 {
            break;
        }
        let at = 1 + rng.below(data.len() - 1);
        match rng.below(10) {
            0..=3 => data[at] ^= 1 << rng.below(8),
            4 | 5 => data[at] = [0, 1, 0x7f, 0x80, 0xff, b'/', b'*', b'.'][rng.below(8)],
            6 => {
                let end = (at + 1 + rng.below(16)).min(data.len());
                data.drain(at..end);
            }
            7 => {
                let end = (at + 1 + rng.below(32)).min(data.len());
                let copy = data[at..end].to_vec();
                let to = 1 + rng.below(data.len() - 1);
                data.splice(to..to, copy);
            }
            8 => {
                let bytes: Vec<u8> = (0..1 + rng.below(8)).map(|_| rng.next() as u8).collect();
                data.splice(at..at, bytes);
            }
            _ => {
                if other.len() > 1 {
                    let from = 1 + rng.below(other.len() - 1);
                    let end = (from + 1 + rng.below(64)).min(other.len());
                    data.splice(at..at, other[from..end].iter().copied());
                }
            }
        }
    }
    data
}

#[test]
fn mutated_discovery_responses_never_panic_the_xds_path() {
    let seeds = seeds();
    if let Some(dir) = std::env::var_os("TERN_XDS_FUZZ_WRITE_SEEDS") {
        std::fs::create_dir_all(&dir).expect("seed dir");
        for (i, seed) in seeds.iter().enumerate() {
            std::fs::write(Path::new(&dir).join(format!("seed-{i}")), seed).expect("write seed");
        }
    }

    // The unmutated seeds reach conversion: both protocols read all four responses, and most of
    // Istio's resources are accepted (the rest refused with reasons, never a panic).
    for seed in &seeds[..2] {
        let outcome = apply_encoded_responses(seed);
        assert_eq!(outcome.responses, 4, "{outcome:?}");
        assert!(outcome.accepted >= 40, "{outcome:?}");
    }

    let budget = std::env::var("TERN_XDS_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(5), Duration::from_secs);
    let start = Instant::now();
    let rng_seed = std::env::var("TERN_XDS_FUZZ_RNG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            now.map_or(1, |d| d.as_nanos() as u64) ^ u64::from(std::process::id()) | 1
        });
    let mut rng = Rng(rng_seed);
    let (mut inputs, mut total) = (0u64, Outcome::default());
    while start.elapsed() < budget {
        let seed = &seeds[rng.below(seeds.len())];
        let other = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, seed, other);
        let outcome = std::panic::catch_unwind(|| apply_encoded_responses(&input));
        let outcome = outcome.unwrap_or_else(|_| {
            let path = std::env::temp_dir().join(format!("tern-xds-fuzz-crash-{rng_seed}"));
            std::fs::write(&path, &input).expect("save the crashing input");
            panic!(
                "input {inputs} (rng seed {rng_seed}) panicked; saved to {}",
                path.display()
            )
        });
        inputs += 1;
        total.responses += outcome.responses;
        total.accepted += outcome.accepted;
        total.rejected += outcome.rejected;
    }
    eprintln!("xds fuzz: {inputs} inputs in {budget:?} (rng seed {rng_seed}): {total:?}");
    assert!(inputs > 0);
    assert!(
        total.accepted > 0 && total.rejected > 0,
        "mutations reach both acceptance and refusal: {total:?}"
    );
}
