//! Flag and env var resolution.

use std::collections::HashMap;

use clap::Parser;

use super::*;

fn injector() -> Vec<&'static str> {
    std::iter::once("iptables-init")
        .chain(crate::ISTIO_INJECTOR_ARGS.iter().copied())
        .collect()
}

fn resolve(args: &[&str], env: &[(&str, &str)]) -> Result<Invocation, CliError> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let flags = Flags::try_parse_from(args).expect("flags parse");
    let host = HostFacts {
        proxy_uid: Some("999".into()),
        dns_servers: vec!["10.96.0.10".into()],
        ipv6: false,
    };
    flags.resolve(&|name| env.get(name).cloned(), |_| host)
}

#[test]
fn injector_command_line_resolves_to_istio_settings() {
    let inv = resolve(&injector(), &[]).expect("resolves");
    assert_eq!(inv.raw.proxy_port, "15001");
    assert_eq!(inv.raw.proxy_uid, "1337");
    assert_eq!(
        inv.raw.proxy_gid, "",
        "gid defaults to the uid at validation"
    );
    assert_eq!(inv.raw.inbound_ports_include, "*");
    assert_eq!(inv.raw.inbound_ports_exclude, "15090,15021,15020");
    assert_eq!(inv.raw.outbound_ip_ranges_include, "*");
    assert_eq!(inv.raw.outbound_ip_ranges_exclude, "");
    assert_eq!(inv.raw.inbound_tunnel_port, "15008");
    assert!(!inv.options.dry_run);
}

#[test]
fn env_var_named_after_flag_applies_when_flag_absent() {
    let inv = resolve(
        &["iptables-init"],
        &[("ISTIO_INBOUND_PORTS", "8080"), ("PROXY_UID", "7")],
    )
    .expect("resolves");
    assert_eq!(inv.raw.inbound_ports_include, "8080");
    assert_eq!(inv.raw.proxy_uid, "7");
}

#[test]
fn flag_beats_env_var() {
    let inv = resolve(
        &["iptables-init", "-b", "9090"],
        &[("ISTIO_INBOUND_PORTS", "8080")],
    )
    .expect("resolves");
    assert_eq!(inv.raw.inbound_ports_include, "9090");
}

#[test]
fn missing_uid_falls_back_to_envoy_user() {
    let inv = resolve(&["iptables-init"], &[]).expect("resolves");
    assert_eq!(inv.raw.proxy_uid, "999");
}

#[test]
fn dns_capture_env_reads_resolv_conf_servers() {
    let inv = resolve(&["iptables-init"], &[("ISTIO_META_DNS_CAPTURE", "true")]).expect("ok");
    assert!(inv.raw.redirect_dns);
    assert_eq!(inv.raw.dns_servers, ["10.96.0.10"]);
}

#[test]
fn bool_flags_take_optional_values() {
    let inv = resolve(
        &["iptables-init", "-n", "--redirect-dns=false", "--cleanup"],
        &[("REDIRECT_DNS", "true")],
    )
    .expect("resolves");
    assert!(inv.options.dry_run);
    assert!(inv.options.cleanup_only);
    assert!(!inv.raw.redirect_dns);
}

#[test]
fn invalid_boolean_names_its_source() {
    let err = resolve(&["iptables-init", "--drop-invalid=yes"], &[]).expect_err("invalid");
    assert_eq!(
        err.to_string(),
        "invalid boolean \"yes\" for --drop-invalid (expected true or false)"
    );
}

#[test]
fn env_only_istio_settings_are_read() {
    let inv = resolve(
        &["iptables-init"],
        &[
            ("ISTIO_OUTBOUND_OWNER_GROUPS", "java"),
            ("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", "127.0.0.1/8"),
        ],
    )
    .expect("resolves");
    assert_eq!(inv.raw.owner_groups_include, "java");
    assert_eq!(inv.raw.host_ipv4_loopback_cidr, "127.0.0.1/8");
}
