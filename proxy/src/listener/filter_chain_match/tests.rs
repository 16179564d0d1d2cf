use std::net::SocketAddr;

use envoy_types::pb::envoy::config::core::v3::CidrRange as ProtoCidrRange;
use envoy_types::pb::envoy::config::listener::v3::FilterChainMatch as ProtoFilterChainMatch;
use envoy_types::pb::google::protobuf::UInt32Value;
use proptest::prelude::*;

use super::*;

// ---- builders -------------------------------------------------------------------------------

fn cidr(s: &str) -> Cidr {
    s.parse().expect("test CIDR")
}

fn cidrs(list: &[&str]) -> Vec<Cidr> {
    list.iter().map(|s| cidr(s)).collect()
}

fn names(list: &[&str]) -> Vec<ServerName> {
    list.iter()
        .map(|s| ServerName::parse(s).expect("test server name"))
        .collect()
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn any() -> FilterChainMatch {
    FilterChainMatch::default()
}

fn port(p: u16) -> FilterChainMatch {
    FilterChainMatch {
        destination_port: Some(p),
        ..any()
    }
}

fn dst(ranges: &[&str]) -> FilterChainMatch {
    FilterChainMatch {
        prefix_ranges: cidrs(ranges),
        ..any()
    }
}

fn sni(list: &[&str]) -> FilterChainMatch {
    FilterChainMatch {
        server_names: names(list),
        ..any()
    }
}

fn transport(p: &str) -> FilterChainMatch {
    FilterChainMatch {
        transport_protocol: p.to_string(),
        ..any()
    }
}

fn alpn(list: &[&str]) -> FilterChainMatch {
    FilterChainMatch {
        application_protocols: strings(list),
        ..any()
    }
}

fn source_type(t: SourceType) -> FilterChainMatch {
    FilterChainMatch {
        source_type: t,
        ..any()
    }
}

/// A chain of Istio's `virtualInbound`: all IPv4 destinations, a transport protocol, ALPN.
fn inbound(port: Option<u16>, transport: &str, protocols: &[&str]) -> FilterChainMatch {
    FilterChainMatch {
        destination_port: port,
        prefix_ranges: if port.is_some() {
            vec![]
        } else {
            cidrs(&["0.0.0.0/0"])
        },
        transport_protocol: transport.to_string(),
        application_protocols: strings(protocols),
        ..any()
    }
}

/// The connection side of a case.
#[derive(Clone, Debug)]
struct Conn {
    destination: SocketAddr,
    source: SocketAddr,
    direct_source: Option<SocketAddr>,
    server_name: Option<&'static str>,
    transport: &'static str,
    alpn: Vec<String>,
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test socket address")
}

/// A plaintext connection from 192.0.2.10:40000 to `destination`.
fn to(destination: &str) -> Conn {
    Conn {
        destination: addr(destination),
        source: addr("192.0.2.10:40000"),
        direct_source: None,
        server_name: None,
        transport: "raw_buffer",
        alpn: vec![],
    }
}

impl Conn {
    fn from(mut self, source: &str) -> Self {
        self.source = addr(source);
        self
    }
    fn direct(mut self, direct: &str) -> Self {
        self.direct_source = Some(addr(direct));
        self
    }
    fn sni(mut self, name: &'static str) -> Self {
        self.server_name = Some(name);
        self
    }
    fn tls(mut self, alpn: &[&str]) -> Self {
        self.transport = "tls";
        self.alpn = strings(alpn);
        self
    }
    fn alpn(mut self, alpn: &[&str]) -> Self {
        self.alpn = strings(alpn);
        self
    }
    fn info(&self) -> ConnectionInfo<'_> {
        ConnectionInfo {
            destination: self.destination,
            source: self.source,
            direct_source: self.direct_source.unwrap_or(self.source),
            server_name: self.server_name,
            transport_protocol: self.transport,
            application_protocols: &self.alpn,
        }
    }
}

struct Case {
    name: &'static str,
    chains: Vec<(&'static str, FilterChainMatch)>,
    default: Option<&'static str>,
    conn: Conn,
    expect: Option<&'static str>,
}

fn case(
    name: &'static str,
    chains: Vec<(&'static str, FilterChainMatch)>,
    conn: Conn,
    expect: Option<&'static str>,
) -> Case {
    Case {
        name,
        chains,
        default: None,
        conn,
        expect,
    }
}

impl Case {
    fn with_default(mut self, default: &'static str) -> Self {
        self.default = Some(default);
        self
    }
}

fn run(cases: Vec<Case>) {
    let mut failures = Vec::new();
    for c in &cases {
        let selector = FilterChainSelector::build(
            c.chains
                .iter()
                .map(|(name, m)| (m.clone(), *name))
                .collect(),
            c.default,
        )
        .unwrap_or_else(|e| panic!("case {}: build failed: {e}", c.name));
        let got = selector.select(&c.conn.info()).copied();
        if got != c.expect {
            failures.push(format!(
                "{}: expected {:?}, got {:?} for {:?}",
                c.name, c.expect, got, c.conn
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---- precedence table -----------------------------------------------------------------------

#[test]
fn destination_port_level() {
    let chains = || vec![("p80", port(80)), ("any", any())];
    run(vec![
        case(
            "exact port beats no port",
            chains(),
            to("10.0.0.1:80"),
            Some("p80"),
        ),
        case(
            "other port uses the port-less chain",
            chains(),
            to("10.0.0.1:81"),
            Some("any"),
        ),
        case(
            "a failing exact-port subtree does not fall back to the port-less chain",
            vec![
                (
                    "p80-tls",
                    FilterChainMatch {
                        transport_protocol: "tls".into(),
                        ..port(80)
                    },
                ),
                ("any", any()),
            ],
            to("10.0.0.1:80"),
            Some("dflt"),
        )
        .with_default("dflt"),
        case(
            "... and without a default chain nothing is selected",
            vec![
                (
                    "p80-sni",
                    FilterChainMatch {
                        server_names: names(&["a.com"]),
                        ..port(80)
                    },
                ),
                ("any", any()),
            ],
            to("10.0.0.1:80").sni("b.com"),
            None,
        ),
        case(
            "no chain matches: default chain",
            vec![("p80", port(80))],
            to("10.0.0.1:81"),
            Some("dflt"),
        )
        .with_default("dflt"),
        case(
            "no chain matches, no default: none",
            vec![("p80", port(80))],
            to("10.0.0.1:81"),
            None,
        ),
    ]);
}

#[test]
fn destination_ip_level() {
    let chains = || {
        vec![
            ("slash32", dst(&["10.0.0.1/32"])),
            ("slash24", dst(&["10.0.0.0/24"])),
            ("none", any()),
        ]
    };
    run(vec![
        case(
            "/32 beats /24",
            chains(),
            to("10.0.0.1:80"),
            Some("slash32"),
        ),
        case(
            "/24 beats no prefix",
            chains(),
            to("10.0.0.2:80"),
            Some("slash24"),
        ),
        case(
            "no prefix is the fallback",
            chains(),
            to("192.168.1.1:80"),
            Some("none"),
        ),
        case(
            "IPv6 only matches IPv6 ranges",
            vec![("v6", dst(&["fd00::/8"])), ("v4", dst(&["0.0.0.0/0"]))],
            to("[fd00::1]:80"),
            Some("v6"),
        ),
        case(
            "an IPv4-mapped destination matches IPv4 ranges",
            chains(),
            to("[::ffff:10.0.0.1]:80"),
            Some("slash32"),
        ),
        case(
            "a failing /32 subtree does not fall back to /24",
            vec![
                (
                    "slash32-tls",
                    FilterChainMatch {
                        transport_protocol: "tls".into(),
                        ..dst(&["10.0.0.1/32"])
                    },
                ),
                ("slash24", dst(&["10.0.0.0/24"])),
            ],
            to("10.0.0.1:80"),
            Some("dflt"),
        )
        .with_default("dflt"),
        case(
            "destination IP outranks server name",
            vec![("ip", dst(&["10.0.0.0/8"])), ("sni", sni(&["a.com"]))],
            to("10.0.0.1:443").sni("a.com"),
            Some("ip"),
        ),
        case(
            "outside the range the server-name chain is used",
            vec![("ip", dst(&["10.0.0.0/8"])), ("sni", sni(&["a.com"]))],
            to("11.0.0.1:443").sni("a.com"),
            Some("sni"),
        ),
    ]);
}

#[test]
fn server_name_level() {
    let chains = || {
        vec![
            ("exact", sni(&["www.example.com"])),
            ("wild", sni(&["*.example.com"])),
            ("none", any()),
        ]
    };
    let tls = |name| to("10.0.0.1:443").tls(&[]).sni(name);
    run(vec![
        case(
            "exact SNI beats wildcard",
            chains(),
            tls("www.example.com"),
            Some("exact"),
        ),
        case(
            "wildcard matches one more label",
            chains(),
            tls("api.example.com"),
            Some("wild"),
        ),
        case(
            "wildcard matches several more labels",
            chains(),
            tls("b.a.example.com"),
            Some("wild"),
        ),
        case(
            "wildcard does not match its apex",
            chains(),
            tls("example.com"),
            Some("none"),
        ),
        case(
            "no SNI uses chains without names",
            chains(),
            to("10.0.0.1:443").tls(&[]),
            Some("none"),
        ),
        case(
            "upper-case SNI is matched lower-cased",
            chains(),
            tls("WWW.Example.COM"),
            Some("exact"),
        ),
        case(
            "configured names are lower-cased",
            vec![("exact", sni(&["WWW.Example.com"])), ("none", any())],
            tls("www.example.com"),
            Some("exact"),
        ),
        case(
            "longer wildcard beats shorter",
            vec![
                ("long", sni(&["*.a.example.com"])),
                ("short", sni(&["*.example.com"])),
            ],
            tls("x.a.example.com"),
            Some("long"),
        ),
        case(
            "shorter wildcard still serves its other names",
            vec![
                ("long", sni(&["*.a.example.com"])),
                ("short", sni(&["*.example.com"])),
            ],
            tls("x.b.example.com"),
            Some("short"),
        ),
        case(
            "server name outranks transport protocol",
            vec![("sni", sni(&["a.com"])), ("tls", transport("tls"))],
            to("10.0.0.1:443").tls(&[]).sni("a.com"),
            Some("sni"),
        ),
        case(
            "a matching name whose subtree fails does not fall back to chains without names",
            vec![
                (
                    "sni-h2",
                    FilterChainMatch {
                        application_protocols: strings(&["h2"]),
                        ..sni(&["a.com"])
                    },
                ),
                ("none", any()),
            ],
            to("10.0.0.1:443").tls(&["http/1.1"]).sni("a.com"),
            None,
        ),
    ]);
}

#[test]
fn transport_and_application_protocol_levels() {
    let by_transport = || vec![("tls", transport("tls")), ("raw", transport("raw_buffer"))];
    run(vec![
        case(
            "tls connection picks the tls chain",
            by_transport(),
            to("10.0.0.1:80").tls(&[]),
            Some("tls"),
        ),
        case(
            "plaintext picks the raw_buffer chain",
            by_transport(),
            to("10.0.0.1:80"),
            Some("raw"),
        ),
        case(
            "exact transport beats empty; empty is the fallback",
            vec![("tls", transport("tls")), ("any", any())],
            to("10.0.0.1:80"),
            Some("any"),
        ),
        case(
            "transport protocol outranks ALPN",
            vec![("tls", transport("tls")), ("h2", alpn(&["h2"]))],
            to("10.0.0.1:80").tls(&["h2"]),
            Some("tls"),
        ),
        case(
            "the client's first listed protocol that a chain names wins",
            vec![("h2", alpn(&["h2"])), ("h11", alpn(&["http/1.1"]))],
            to("10.0.0.1:80").tls(&["http/1.1", "h2"]),
            Some("h11"),
        ),
        case(
            "unknown ALPN uses the chain without ALPN",
            vec![("h2", alpn(&["h2"])), ("any", any())],
            to("10.0.0.1:80").tls(&["spdy/3"]),
            Some("any"),
        ),
        case(
            "a matching transport whose ALPN fails does not fall back to the transport-less chain",
            vec![
                (
                    "tls-h2",
                    FilterChainMatch {
                        application_protocols: strings(&["h2"]),
                        ..transport("tls")
                    },
                ),
                ("any", any()),
            ],
            to("10.0.0.1:80").tls(&["http/1.1"]),
            None,
        ),
        case(
            "no ALPN and no ALPN-less chain: nothing",
            vec![("h2", alpn(&["h2"]))],
            to("10.0.0.1:80").tls(&[]),
            None,
        ),
    ]);
}

/// Modelled on the `virtualInbound` listener in fixtures/istio/xds/configdump.yaml.
fn istio_virtual_inbound() -> Vec<(&'static str, FilterChainMatch)> {
    vec![
        ("virtualInbound-blackhole", port(15006)),
        (
            "catchall-http-mtls",
            inbound(
                None,
                "tls",
                &["istio-http/1.0", "istio-http/1.1", "istio-h2"],
            ),
        ),
        (
            "catchall-http-plain",
            inbound(None, "raw_buffer", &["http/1.1", "h2c"]),
        ),
        (
            "catchall-tcp-mtls",
            inbound(None, "tls", &["istio-peer-exchange", "istio"]),
        ),
        ("catchall-tcp-plain", inbound(None, "raw_buffer", &[])),
        ("catchall-tls-passthrough", inbound(None, "tls", &[])),
        (
            "port80-mtls",
            inbound(
                Some(80),
                "tls",
                &[
                    "istio",
                    "istio-peer-exchange",
                    "istio-http/1.0",
                    "istio-http/1.1",
                    "istio-h2",
                ],
            ),
        ),
        ("port80-plain", inbound(Some(80), "raw_buffer", &[])),
    ]
}

#[test]
fn istio_virtual_inbound_chains() {
    let chains = istio_virtual_inbound;
    run(vec![
        case(
            "mTLS TCP",
            chains(),
            to("10.1.1.1:8080").tls(&["istio-peer-exchange", "h2"]),
            Some("catchall-tcp-mtls"),
        ),
        case(
            "mTLS HTTP",
            chains(),
            to("10.1.1.1:8080").tls(&["istio-http/1.1"]),
            Some("catchall-http-mtls"),
        ),
        case(
            "plaintext h2c",
            chains(),
            to("10.1.1.1:8080").alpn(&["h2c"]),
            Some("catchall-http-plain"),
        ),
        case(
            "plaintext HTTP/1.0 is not listed: TCP",
            chains(),
            to("10.1.1.1:8080").alpn(&["http/1.0"]),
            Some("catchall-tcp-plain"),
        ),
        case(
            "the app's own TLS passes through",
            chains(),
            to("10.1.1.1:8080").tls(&["h2", "http/1.1"]),
            Some("catchall-tls-passthrough"),
        ),
        case(
            "port 80 mTLS",
            chains(),
            to("10.1.1.1:80").tls(&["istio-h2"]),
            Some("port80-mtls"),
        ),
        case(
            "port 80 plaintext HTTP",
            chains(),
            to("10.1.1.1:80").alpn(&["http/1.1"]),
            Some("port80-plain"),
        ),
        case(
            "port 80 non-Istio TLS: no fall back to the catch-all",
            chains(),
            to("10.1.1.1:80").tls(&["h2"]),
            None,
        ),
        case(
            "direct connection to 15006",
            chains(),
            to("10.1.1.1:15006"),
            Some("virtualInbound-blackhole"),
        ),
        case(
            "IPv6 destination outside 0.0.0.0/0",
            chains(),
            to("[fd00::1]:8080"),
            None,
        ),
    ]);
}

#[test]
fn source_levels() {
    let by_type = || {
        vec![
            ("local", source_type(SourceType::SameIpOrLoopback)),
            ("external", source_type(SourceType::External)),
            ("any", any()),
        ]
    };
    let by_source = || {
        vec![
            (
                "src32",
                FilterChainMatch {
                    source_prefix_ranges: cidrs(&["192.168.0.5/32"]),
                    ..any()
                },
            ),
            (
                "src16",
                FilterChainMatch {
                    source_prefix_ranges: cidrs(&["192.168.0.0/16"]),
                    ..any()
                },
            ),
            ("none", any()),
        ]
    };
    let by_port = || {
        vec![
            (
                "sp",
                FilterChainMatch {
                    source_ports: vec![5000],
                    ..any()
                },
            ),
            ("any", any()),
        ]
    };
    let direct_vs_source = || {
        vec![
            (
                "direct-only",
                FilterChainMatch {
                    direct_source_prefix_ranges: cidrs(&["10.0.0.0/8"]),
                    ..any()
                },
            ),
            (
                "source-only",
                FilterChainMatch {
                    source_prefix_ranges: cidrs(&["192.168.0.0/16"]),
                    ..any()
                },
            ),
        ]
    };
    run(vec![
        case(
            "loopback source is local",
            by_type(),
            to("10.0.0.9:80").from("127.0.0.1:5000"),
            Some("local"),
        ),
        case(
            "IPv6 loopback source is local",
            by_type(),
            to("[fd00::9]:80").from("[::1]:5000"),
            Some("local"),
        ),
        case(
            "same IP as destination is local",
            by_type(),
            to("10.0.0.9:80").from("10.0.0.9:5000"),
            Some("local"),
        ),
        case(
            "other source is external",
            by_type(),
            to("10.0.0.9:80").from("10.0.0.8:5000"),
            Some("external"),
        ),
        case(
            "only 127.0.0.1 counts as loopback",
            by_type(),
            to("10.0.0.9:80").from("127.0.0.2:5000"),
            Some("external"),
        ),
        case(
            "no chain for the connection's type: ANY",
            vec![
                ("local", source_type(SourceType::SameIpOrLoopback)),
                ("any", any()),
            ],
            to("10.0.0.9:80").from("10.0.0.8:5000"),
            Some("any"),
        ),
        case(
            "source /32 beats /16",
            by_source(),
            to("10.0.0.1:80").from("192.168.0.5:1"),
            Some("src32"),
        ),
        case(
            "source /16 beats no prefix",
            by_source(),
            to("10.0.0.1:80").from("192.168.7.7:1"),
            Some("src16"),
        ),
        case(
            "source outside all ranges",
            by_source(),
            to("10.0.0.1:80").from("10.9.9.9:1"),
            Some("none"),
        ),
        case(
            "source port exact",
            by_port(),
            to("10.0.0.1:80").from("10.9.9.9:5000"),
            Some("sp"),
        ),
        case(
            "source port fallback",
            by_port(),
            to("10.0.0.1:80").from("10.9.9.9:5001"),
            Some("any"),
        ),
        case(
            "direct source outranks source",
            direct_vs_source(),
            to("10.0.0.1:80").from("192.168.1.1:1").direct("10.2.2.2:1"),
            Some("direct-only"),
        ),
        case(
            "direct source outside its range: source decides",
            direct_vs_source(),
            to("10.0.0.1:80")
                .from("192.168.1.1:1")
                .direct("172.16.0.1:1"),
            Some("source-only"),
        ),
    ]);
}

// ---- build errors ---------------------------------------------------------------------------

#[test]
fn identical_matches_are_rejected() {
    let err =
        FilterChainSelector::build(vec![(port(80), "a"), (any(), "b"), (port(80), "c")], None)
            .expect_err("duplicate matches must be refused");
    assert_eq!(
        err,
        FilterChainSelectorError::DuplicateMatch {
            chain: 2,
            existing: 0
        }
    );
    assert!(
        err.to_string()
            .contains("multiple filter chains with the same matching rules are defined")
    );
}

#[test]
fn overlapping_matches_are_rejected() {
    let err = FilterChainSelector::build(
        vec![(sni(&["a.com", "b.com"]), "a"), (sni(&["b.com"]), "b")],
        None,
    )
    .expect_err("overlap must be refused");
    assert_eq!(
        err,
        FilterChainSelectorError::OverlappingMatch {
            chain: 1,
            existing: 0
        }
    );
    assert!(err.to_string().contains("overlapping matching rules"));
}

#[test]
fn selector_keeps_chains_in_order() {
    let selector = FilterChainSelector::build(vec![(port(80), "a"), (any(), "b")], Some("d"))
        .expect("valid chains");
    assert_eq!(selector.chains(), &["a", "b"]);
    assert_eq!(selector.default_chain(), Some(&"d"));
}

// ---- proto conversion -----------------------------------------------------------------------

fn proto_cidr(address: &str, len: Option<u32>) -> ProtoCidrRange {
    ProtoCidrRange {
        address_prefix: address.to_string(),
        prefix_len: len.map(|value| UInt32Value { value }),
    }
}

fn convert(proto: ProtoFilterChainMatch) -> Result<FilterChainMatch, FilterChainMatchError> {
    FilterChainMatch::try_from(&proto)
}

#[test]
fn converts_an_istio_inbound_match() {
    let proto = ProtoFilterChainMatch {
        destination_port: Some(UInt32Value { value: 8080 }),
        prefix_ranges: vec![proto_cidr("10.1.2.3", Some(16))],
        source_ports: vec![5000],
        server_names: vec!["*.Example.com".into(), "a.b".into()],
        transport_protocol: "tls".into(),
        application_protocols: vec!["istio-peer-exchange".into(), "istio".into()],
        source_type: ConnectionSourceType::External as i32,
        ..Default::default()
    };
    let converted = convert(proto).expect("valid match");
    assert_eq!(
        converted,
        FilterChainMatch {
            destination_port: Some(8080),
            prefix_ranges: vec![cidr("10.1.0.0/16")],
            source_type: SourceType::External,
            source_ports: vec![5000],
            server_names: vec![
                ServerName::Wildcard {
                    suffix: ".example.com".into()
                },
                ServerName::Exact("a.b".into()),
            ],
            transport_protocol: "tls".into(),
            application_protocols: strings(&["istio-peer-exchange", "istio"]),
            ..any()
        }
    );
}

#[test]
fn proto_port_zero_means_any_port() {
    let proto = ProtoFilterChainMatch {
        destination_port: Some(UInt32Value { value: 0 }),
        ..Default::default()
    };
    assert_eq!(convert(proto).expect("valid").destination_port, None);
}

#[test]
fn proto_cidr_follows_envoy() {
    let missing_len = Cidr::try_from(&proto_cidr("10.1.2.3", None)).expect("valid");
    assert_eq!(missing_len, cidr("0.0.0.0/0"), "a missing prefix_len is 0");
    let clamped = Cidr::try_from(&proto_cidr("10.1.2.3", Some(40))).expect("valid");
    assert_eq!(
        clamped,
        cidr("10.1.2.3/32"),
        "an IPv4 length up to 128 is clamped to 32"
    );
    let v6 = Cidr::try_from(&proto_cidr("fd00:1::5", Some(64))).expect("valid");
    assert_eq!(v6, cidr("fd00:1::/64"));
}

#[test]
fn proto_errors_name_the_field_and_value() {
    let cases: Vec<(ProtoFilterChainMatch, FilterChainMatchError, &str)> = vec![
        (
            ProtoFilterChainMatch {
                prefix_ranges: vec![proto_cidr("10.0.0.300", Some(8))],
                ..Default::default()
            },
            FilterChainMatchError::InvalidCidr {
                field: "prefix_ranges",
                source: CidrError::InvalidAddress("10.0.0.300".into()),
            },
            "prefix_ranges: malformed IP address \"10.0.0.300\"",
        ),
        (
            ProtoFilterChainMatch {
                source_prefix_ranges: vec![proto_cidr("::1", Some(129))],
                ..Default::default()
            },
            FilterChainMatchError::InvalidCidr {
                field: "source_prefix_ranges",
                source: CidrError::PrefixTooLong {
                    address: "::1".into(),
                    prefix_len: 129,
                },
            },
            "source_prefix_ranges: prefix length 129",
        ),
        (
            ProtoFilterChainMatch {
                destination_port: Some(UInt32Value { value: 70000 }),
                ..Default::default()
            },
            FilterChainMatchError::DestinationPortOutOfRange(70000),
            "destination_port: 70000",
        ),
        (
            ProtoFilterChainMatch {
                source_ports: vec![80, 65536],
                ..Default::default()
            },
            FilterChainMatchError::SourcePortOutOfRange(65536),
            "source_ports: 65536",
        ),
        (
            ProtoFilterChainMatch {
                address_suffix: "::1".into(),
                ..Default::default()
            },
            FilterChainMatchError::Unimplemented("address_suffix"),
            "address_suffix: unimplemented",
        ),
        (
            ProtoFilterChainMatch {
                suffix_len: Some(UInt32Value { value: 8 }),
                ..Default::default()
            },
            FilterChainMatchError::Unimplemented("suffix_len"),
            "suffix_len",
        ),
        (
            ProtoFilterChainMatch {
                server_names: vec!["a*.example.com".into()],
                ..Default::default()
            },
            FilterChainMatchError::PartialWildcard("a*.example.com".into()),
            "partial wildcards",
        ),
        (
            ProtoFilterChainMatch {
                server_names: vec!["*".into()],
                ..Default::default()
            },
            FilterChainMatchError::PartialWildcard("*".into()),
            "\"*\"",
        ),
        (
            ProtoFilterChainMatch {
                source_type: 7,
                ..Default::default()
            },
            FilterChainMatchError::UnknownSourceType(7),
            "source_type: unknown value 7",
        ),
    ];
    for (proto, expected, message) in cases {
        let err = convert(proto).expect_err("invalid match");
        assert_eq!(err, expected);
        assert!(
            err.to_string().contains(message),
            "{err:?} renders as {err}, wanted {message:?}"
        );
    }
}

// ---- small pieces ---------------------------------------------------------------------------

#[test]
fn wildcard_server_name_matches_by_suffix() {
    let wildcard = ServerName::parse("*.example.com").expect("valid");
    assert!(wildcard.matches("a.example.com"));
    assert!(wildcard.matches("b.a.example.com"));
    assert!(!wildcard.matches("example.com"));
    assert!(!wildcard.matches("aexample.com"));
    assert!(!wildcard.matches(".example.com"));
    let exact = ServerName::parse("Example.com").expect("valid");
    assert!(exact.matches("example.com"));
    assert!(!exact.matches("a.example.com"));
}

#[test]
fn cidr_parsing_and_containment() {
    let net = cidr("10.1.2.3/8");
    assert_eq!(net.to_string(), "10.0.0.0/8");
    assert!(net.contains("10.255.0.1".parse().expect("ip")));
    assert!(!net.contains("11.0.0.1".parse().expect("ip")));
    assert!(!net.contains("::ffff:10.0.0.1".parse().expect("ip")));
    assert!(cidr("0.0.0.0/0").contains("1.2.3.4".parse().expect("ip")));
    assert!(cidr("fd00::/8").contains("fdff::1".parse().expect("ip")));
    assert_eq!(
        "10.0.0.0/33".parse::<Cidr>(),
        Err(CidrError::PrefixTooLong {
            address: "10.0.0.0".into(),
            prefix_len: 33
        })
    );
    assert_eq!(
        "10.0.0.0".parse::<Cidr>(),
        Err(CidrError::Malformed("10.0.0.0".into()))
    );
    assert_eq!(
        "x/8".parse::<Cidr>(),
        Err(CidrError::InvalidAddress("x".into()))
    );
}

#[test]
fn wildcard_suffixes_skip_leading_and_trailing_dots() {
    let got: Vec<&str> = wildcard_suffixes("www.a.example.com").collect();
    assert_eq!(got, vec![".a.example.com", ".example.com", ".com"]);
    assert_eq!(wildcard_suffixes(".com").count(), 0);
    assert_eq!(wildcard_suffixes("com.").count(), 0);
    assert_eq!(wildcard_suffixes("").count(), 0);
}

// ---- property: the index agrees with a plain reading of Envoy's rules ------------------------

/// Envoy's precedence written as a linear sieve over the chain list: at each level keep the
/// candidates with the most specific value that matches, else those without a constraint.
fn reference_select(chains: &[FilterChainMatch], conn: &ConnectionInfo<'_>) -> Vec<usize> {
    let mut c: Vec<usize> = (0..chains.len()).collect();
    let port = conn.destination.port();
    c = keep_or_unconstrained(
        chains,
        c,
        |m| m.destination_port == Some(port),
        |m| m.destination_port.is_none(),
    );
    c = by_longest_prefix(chains, c, conn.destination.ip().to_canonical(), |m| {
        &m.prefix_ranges
    });
    let sni = conn.server_name.unwrap_or("").to_ascii_lowercase();
    let mut keys = vec![sni.clone()];
    keys.extend(wildcard_suffixes(&sni).map(str::to_owned));
    c = first_key_or_unconstrained(chains, c, &keys, |m| {
        m.server_names
            .iter()
            .map(|n| n.index_key().to_owned())
            .collect()
    });
    let tp = conn.transport_protocol;
    c = keep_or_unconstrained(
        chains,
        c,
        |m| m.transport_protocol == tp,
        |m| m.transport_protocol.is_empty(),
    );
    c = first_key_or_unconstrained(chains, c, conn.application_protocols, |m| {
        m.application_protocols.clone()
    });
    c = by_longest_prefix(chains, c, conn.direct_source.ip().to_canonical(), |m| {
        &m.direct_source_prefix_ranges
    });
    let local = is_same_ip_or_loopback(conn);
    let wanted = if local {
        SourceType::SameIpOrLoopback
    } else {
        SourceType::External
    };
    c = keep_or_unconstrained(
        chains,
        c,
        |m| m.source_type == wanted,
        |m| m.source_type == SourceType::Any,
    );
    c = by_longest_prefix(chains, c, conn.source.ip().to_canonical(), |m| {
        &m.source_prefix_ranges
    });
    let sport = conn.source.port();
    keep_or_unconstrained(
        chains,
        c,
        |m| m.source_ports.contains(&sport),
        |m| m.source_ports.is_empty(),
    )
}

fn keep_or_unconstrained(
    chains: &[FilterChainMatch],
    c: Vec<usize>,
    specific: impl Fn(&FilterChainMatch) -> bool,
    unconstrained: impl Fn(&FilterChainMatch) -> bool,
) -> Vec<usize> {
    let hits: Vec<usize> = c
        .iter()
        .copied()
        .filter(|&i| specific(&chains[i]))
        .collect();
    if hits.is_empty() {
        c.into_iter()
            .filter(|&i| unconstrained(&chains[i]))
            .collect()
    } else {
        hits
    }
}

fn by_longest_prefix(
    chains: &[FilterChainMatch],
    c: Vec<usize>,
    ip: IpAddr,
    ranges: impl Fn(&FilterChainMatch) -> &Vec<Cidr>,
) -> Vec<usize> {
    let best = c
        .iter()
        .flat_map(|&i| ranges(&chains[i]).iter())
        .filter(|r| r.contains(ip))
        .max_by_key(|r| r.prefix_len())
        .copied();
    match best {
        Some(best) => c
            .into_iter()
            .filter(|&i| ranges(&chains[i]).contains(&best))
            .collect(),
        None => c
            .into_iter()
            .filter(|&i| ranges(&chains[i]).is_empty())
            .collect(),
    }
}

fn first_key_or_unconstrained(
    chains: &[FilterChainMatch],
    c: Vec<usize>,
    keys: &[String],
    values: impl Fn(&FilterChainMatch) -> Vec<String>,
) -> Vec<usize> {
    for key in keys {
        let hits: Vec<usize> = c
            .iter()
            .copied()
            .filter(|&i| values(&chains[i]).contains(key))
            .collect();
        if !hits.is_empty() {
            return hits;
        }
    }
    c.into_iter()
        .filter(|&i| values(&chains[i]).is_empty())
        .collect()
}

fn pick<T: Clone + std::fmt::Debug + 'static>(items: &'static [T]) -> impl Strategy<Value = T> {
    proptest::sample::select(items)
}

const RANGES: &[&str] = &[
    "10.0.0.0/8",
    "10.0.0.0/24",
    "10.0.0.1/32",
    "192.168.0.0/16",
    "0.0.0.0/0",
    "fd00::/8",
];

/// Mostly unconstrained, so that random connections reach the deeper levels.
fn sometimes<T: Clone + std::fmt::Debug + 'static>(
    items: &'static [T],
    max: usize,
) -> impl Strategy<Value = Vec<T>> {
    prop_oneof![3 => Just(vec![]), 1 => proptest::collection::vec(pick(items), 1..=max)]
}

fn arb_match() -> impl Strategy<Value = FilterChainMatch> {
    (
        prop_oneof![2 => Just(None), 1 => pick(&[Some(80u16), Some(443)])],
        sometimes(RANGES, 2),
        sometimes(&["a.example.com", "*.example.com", "*.a.example.com", "other.org"], 2),
        prop_oneof![2 => Just(""), 1 => pick(&["tls", "raw_buffer"])],
        sometimes(&["h2", "http/1.1", "istio-peer-exchange"], 2),
        sometimes(RANGES, 1),
        prop_oneof![2 => Just(SourceType::Any), 1 => pick(&[SourceType::SameIpOrLoopback, SourceType::External])],
        sometimes(RANGES, 1),
        sometimes(&[5000u16, 6000], 1),
    )
        .prop_map(|(port, dst, names_, tp, alpn_, direct, st, src, sports)| FilterChainMatch {
            destination_port: port,
            prefix_ranges: dst.into_iter().map(cidr).collect(),
            server_names: names(&names_),
            transport_protocol: tp.to_string(),
            application_protocols: strings(&alpn_),
            direct_source_prefix_ranges: direct.into_iter().map(cidr).collect(),
            source_type: st,
            source_prefix_ranges: src.into_iter().map(cidr).collect(),
            source_ports: sports,
        })
}

const IPS: &[&str] = &[
    "10.0.0.1",
    "10.0.0.2",
    "10.1.0.1",
    "192.168.0.5",
    "172.16.0.1",
    "127.0.0.1",
    "::ffff:10.0.0.1",
    "fd00::1",
];

fn arb_conn() -> impl Strategy<Value = Conn> {
    (
        pick(IPS),
        pick(&[80u16, 443, 8080]),
        pick(IPS),
        pick(IPS),
        pick(&[5000u16, 6000, 7000]),
        pick(&[
            None,
            Some("a.example.com"),
            Some("b.a.example.com"),
            Some("example.com"),
            Some("x.other.org"),
        ]),
        pick(&["tls", "raw_buffer"]),
        proptest::collection::vec(
            pick(&["h2", "http/1.1", "istio-peer-exchange", "h2c"]),
            0..=3,
        ),
    )
        .prop_map(|(d, dport, s, ds, sport, name, tp, offered)| Conn {
            destination: SocketAddr::new(d.parse().expect("ip"), dport),
            source: SocketAddr::new(s.parse().expect("ip"), sport),
            direct_source: Some(SocketAddr::new(ds.parse().expect("ip"), sport)),
            server_name: name,
            transport: tp,
            alpn: strings(&offered),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn index_agrees_with_linear_sieve(
        matches in proptest::collection::vec(arb_match(), 1..6),
        conn in arb_conn(),
    ) {
        let chains: Vec<(FilterChainMatch, usize)> = matches.iter().cloned().zip(0..).collect();
        // Configurations Envoy refuses (duplicates, overlaps) have no selection to compare.
        let Ok(selector) = FilterChainSelector::build(chains, None) else { return Ok(()); };
        let info = conn.info();
        let expected = reference_select(&matches, &info);
        prop_assert!(expected.len() <= 1, "an accepted configuration tied: {:?}", expected);
        prop_assert_eq!(selector.select(&info).copied(), expected.first().copied());
    }
}
