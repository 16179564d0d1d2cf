//! Validation of `RawConfig` into `CaptureConfig`.

use super::*;

fn injector_defaults() -> RawConfig {
    RawConfig {
        inbound_interception_mode: "REDIRECT".into(),
        outbound_ip_ranges_include: "*".into(),
        inbound_ports_include: "*".into(),
        inbound_ports_exclude: "15090,15021,15020".into(),
        ..RawConfig::default()
    }
}

#[test]
fn injector_flags_validate() {
    let cfg = CaptureConfig::try_from(injector_defaults()).expect("valid");
    assert_eq!(cfg.proxy_port, 15001);
    assert_eq!(cfg.proxy_gids, ["1337"], "gid defaults to the uid");
    assert_eq!(cfg.inbound_ports, PortSelection::All);
    assert_eq!(cfg.inbound_ports_exclude, [15090, 15021, 15020]);
    assert_eq!(cfg.outbound_ranges_include, IpRanges::All);
    assert_eq!(cfg.owner_groups, OwnerGroups::AllExcept(vec![]));
}

#[test]
fn bad_port_names_the_flag_and_value() {
    let raw = RawConfig {
        inbound_ports_exclude: "15090,abc".into(),
        ..injector_defaults()
    };
    let err = CaptureConfig::try_from(raw).expect_err("invalid");
    assert_eq!(
        err.to_string(),
        "invalid value \"abc\" for --istio-local-exclude-ports (-d): expected a port in 1-65535"
    );
}

#[test]
fn bad_cidr_names_the_flag_and_value() {
    let raw = RawConfig {
        outbound_ip_ranges_include: "10.0.0.0/8,10.0.0/33".into(),
        ..injector_defaults()
    };
    let err = CaptureConfig::try_from(raw).expect_err("invalid");
    assert_eq!(err.setting, Setting::OutboundIpRanges);
    assert_eq!(err.value, "10.0.0/33");
}

#[test]
fn wildcard_exclude_is_rejected() {
    let raw = RawConfig {
        outbound_ip_ranges_exclude: "*".into(),
        ..injector_defaults()
    };
    let err = CaptureConfig::try_from(raw).expect_err("invalid");
    assert_eq!(err.setting, Setting::OutboundIpRangesExclude);
}

#[test]
fn loopback_cidr_must_be_ipv4_loopback() {
    for bad in ["10.0.0.0/8", "127.0.0.0/7", "::1/128", "127.0.0.1"] {
        let raw = RawConfig {
            host_ipv4_loopback_cidr: bad.into(),
            ..injector_defaults()
        };
        let err = CaptureConfig::try_from(raw).expect_err(bad);
        assert_eq!(err.setting, Setting::HostIpv4LoopbackCidr, "{bad}");
    }
}

#[test]
fn dns_redirect_without_servers_is_disabled() {
    let raw = RawConfig {
        redirect_dns: true,
        ..injector_defaults()
    };
    let cfg = CaptureConfig::try_from(raw).expect("valid");
    assert!(!cfg.dns.redirect);
}

#[test]
fn dns_servers_split_by_family_keeping_text() {
    let raw = RawConfig {
        redirect_dns: true,
        dns_servers: vec!["127.0.0.53".into(), "::127.0.0.53".into()],
        ..injector_defaults()
    };
    let cfg = CaptureConfig::try_from(raw).expect("valid");
    assert!(cfg.dns.redirect);
    assert_eq!(cfg.dns.servers_v4, ["127.0.0.53"]);
    assert_eq!(cfg.dns.servers_v6, ["::127.0.0.53"]);
}

#[test]
fn unknown_interception_mode_is_rejected() {
    let raw = RawConfig {
        inbound_interception_mode: "NONE".into(),
        ..injector_defaults()
    };
    let err = CaptureConfig::try_from(raw).expect_err("invalid");
    assert_eq!(err.setting, Setting::InterceptionMode);
}

#[test]
fn too_many_included_owner_groups_are_rejected() {
    let groups: Vec<String> = (0..65).map(|g| g.to_string()).collect();
    let raw = RawConfig {
        owner_groups_include: groups.join(","),
        ..injector_defaults()
    };
    let err = CaptureConfig::try_from(raw).expect_err("invalid");
    assert_eq!(err.setting, Setting::OwnerGroups);
}
