//! Secret conversion: good certificates and keys in every encoding, and the one-line refusals of
//! bad ones, naming the secret and the field and never the key.

use super::*;
use xds_client::proto_json::{ReadOptions, from_text};

pub(crate) const CERT: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/testdata/tls/workload.pem"
));
pub(crate) const KEY: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/testdata/tls/workload-key.pem"
));
const RSA_KEY: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/testdata/tls/rotated-key.pem"
));
pub(crate) const CA: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/testdata/tls/ca.pem"
));

fn parse(yaml: &str) -> proto::Secret {
    from_text(yaml, "secret.yaml", ReadOptions::default()).expect("parses")
}

fn indent(pem: &str) -> String {
    pem.lines()
        .map(|l| format!("        {l}\n"))
        .collect::<String>()
}

fn certificate(chain: &str, key: &str) -> proto::Secret {
    parse(&format!(
        "name: default\ntls_certificate:\n  certificate_chain:\n    inline_string: |\n{}  private_key:\n    inline_string: |\n{}",
        indent(chain),
        indent(key)
    ))
}

fn refusal(secret: &proto::Secret) -> ConfigError {
    Secret::try_from(secret).expect_err("refused")
}

#[test]
fn certificate_with_pkcs8_key_converts() {
    let secret = Secret::try_from(&certificate(CERT, KEY)).expect("valid");
    assert_eq!(secret.name, "default");
    let SecretKind::Certificate(c) = &secret.kind else {
        panic!("a certificate: {secret:?}")
    };
    assert_eq!(c.chain.len(), 1);
    assert_eq!(c.private_key.format, KeyFormat::Pkcs8);
    assert!(!format!("{secret:?}").contains(&format!("{:?}", c.private_key.der)));
    assert!(format!("{:?}", c.private_key).contains(REDACTED));
}

#[test]
fn rsa_key_and_chain_of_two_convert() {
    let chain = format!("{CERT}{CA}");
    let secret = Secret::try_from(&certificate(&chain, RSA_KEY)).expect("valid");
    let SecretKind::Certificate(c) = &secret.kind else {
        panic!("a certificate")
    };
    assert_eq!(c.chain.len(), 2, "leaf and CA");
    assert_eq!(c.private_key.format, KeyFormat::Pkcs1);
}

#[test]
fn inline_bytes_and_files_convert() {
    use base64_free::encode;
    let bytes = parse(&format!(
        "name: b\ntls_certificate:\n  certificate_chain: {{inline_bytes: {}}}\n  private_key: {{inline_bytes: {}}}",
        encode(CERT.as_bytes()),
        encode(KEY.as_bytes())
    ));
    assert!(Secret::try_from(&bytes).is_ok());
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/testdata/tls");
    let files = parse(&format!(
        "name: f\ntls_certificate:\n  certificate_chain: {{filename: {dir}/workload.pem}}\n  private_key: {{filename: {dir}/workload-key.pem}}"
    ));
    assert!(Secret::try_from(&files).is_ok());
    let root = parse(&format!(
        "name: ROOTCA\nvalidation_context:\n  trusted_ca: {{filename: {dir}/ca.pem}}\n  match_typed_subject_alt_names: [{{san_type: URI, matcher: {{prefix: 'spiffe://cluster.local/'}}}}]"
    ));
    let root = Secret::try_from(&root).expect("valid");
    let SecretKind::Validation(v) = &root.kind else {
        panic!("a validation context")
    };
    assert_eq!(v.trusted_ca.len(), 1);
    assert_eq!(v.subject_alt_names.len(), 1);
    assert_eq!(v.subject_alt_names[0].san_type, Some(SanType::Uri));
}

/// Base64 for test inputs, so the tests need no extra crate.
mod base64_free {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(input: &[u8]) -> String {
        let mut out = String::new();
        for chunk in input.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

#[test]
fn bad_secrets_are_refused_naming_the_secret_and_field() {
    let garbage_cert = "-----BEGIN CERTIFICATE-----\nnot base64 !!\n-----END CERTIFICATE-----\n";
    let cases: Vec<(proto::Secret, &str)> = vec![
        (
            certificate(garbage_cert, KEY),
            "secret \"default\": tls_certificate.certificate_chain: malformed PEM: a block is not valid base64",
        ),
        (
            certificate("just text", KEY),
            "secret \"default\": tls_certificate.certificate_chain: no PEM CERTIFICATE block found",
        ),
        (
            certificate(CERT, CERT),
            "secret \"default\": tls_certificate.private_key: no PEM private key block found (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)",
        ),
        (
            certificate(CERT, "-----BEGIN PRIVATE KEY-----\nMIIB\n"),
            "secret \"default\": tls_certificate.private_key: malformed PEM: a block has no END line",
        ),
        (
            parse("name: x\ntls_certificate: {private_key: {inline_string: k}}"),
            "secret \"x\": tls_certificate.certificate_chain: is required",
        ),
        (
            parse(
                "name: x\ntls_certificate:\n  certificate_chain: {filename: /nonexistent/cert.pem}\n  private_key: {inline_string: k}",
            ),
            "secret \"x\": tls_certificate.certificate_chain: cannot read \"/nonexistent/cert.pem\": No such file or directory (os error 2)",
        ),
        (
            parse("name: x\nvalidation_context: {trusted_ca: {inline_string: nothing}}"),
            "secret \"x\": validation_context.trusted_ca: no PEM CERTIFICATE block found",
        ),
        (
            parse("name: x\nvalidation_context: {verify_certificate_spki: [abc]}"),
            "secret \"x\": validation_context.verify_certificate_spki: SPKI pinning is not supported",
        ),
        (
            parse("name: x\ngeneric_secret: {secret: {inline_string: s}}"),
            "secret \"x\": generic_secret: generic secrets are not supported",
        ),
        (
            parse("name: x"),
            "secret \"x\": tls_certificate or validation_context is required",
        ),
        (
            parse("validation_context: {}"),
            "secret \"\": name: must not be empty",
        ),
    ];
    for (secret, expected) in cases {
        let e = refusal(&secret);
        assert_eq!(e.to_string(), expected);
        assert!(!e.to_string().contains("MIIB"), "no key material: {e}");
    }
}

#[test]
fn redaction_blanks_every_form_of_the_private_key() {
    for (form, expected) in [
        ("inline_string: k", "inline_string"),
        ("inline_bytes: AAEC", "inline_bytes"),
        ("filename: /etc/key.pem", "filename"),
        ("environment_variable: KEY", "environment_variable"),
    ] {
        let secret = parse(&format!(
            "name: d\ntls_certificate:\n  certificate_chain: {{inline_string: c}}\n  private_key: {{{form}}}"
        ));
        let shown = redacted(&secret);
        let json = xds_client::proto_json::to_value(&shown).expect("json");
        let key = &json["tls_certificate"]["private_key"][expected];
        let want = if expected == "inline_bytes" {
            "W3JlZGFjdGVkXQ==" // "[redacted]", as Envoy prints it
        } else {
            REDACTED
        };
        assert_eq!(key, want, "{json}");
        assert_eq!(
            json["tls_certificate"]["certificate_chain"]["inline_string"],
            "c"
        );
    }
    let root = parse("name: r\nvalidation_context: {trusted_ca: {inline_string: ca}}");
    assert_eq!(
        redacted(&root),
        root,
        "nothing secret in a validation context"
    );
}

#[test]
fn san_matchers_follow_envoy() {
    use xds_client::ads::SanMatcher as _;
    use xds_client::ads::SubjectAltName as San;
    let context = |yaml: &str| {
        let v: proto::CertificateValidationContext =
            from_text(yaml, "v.yaml", ReadOptions::default()).expect("parses");
        ValidationContext::try_from(&v)
            .expect("valid")
            .subject_alt_names
    };
    let matches = |yaml: &str, san: San| context(yaml).iter().any(|m| m.matches(&san));
    let dns = |s: &str| San::Dns(s.into());
    // An exact DNS matcher follows DNS rules: case-insensitive, a wildcard SAN covers one label.
    let exact = "match_typed_subject_alt_names: [{san_type: DNS, matcher: {exact: Istiod.Istio-System.svc}}]";
    assert!(matches(exact, dns("istiod.istio-system.svc")));
    assert!(matches(exact, dns("*.istio-system.svc")));
    assert!(matches(exact, dns("istio*.istio-system.svc")));
    assert!(!matches(exact, dns("*.svc")));
    assert!(!matches(exact, dns("*.*.svc")));
    assert!(!matches(exact, San::Uri("istiod.istio-system.svc".into())));
    // Other patterns match the text as it is.
    let suffix = "match_typed_subject_alt_names: [{san_type: URI, matcher: {suffix: /sa/istiod}}]";
    assert!(matches(
        suffix,
        San::Uri("spiffe://cluster.local/ns/istio-system/sa/istiod".into())
    ));
    assert!(!matches(suffix, dns("x/sa/istiod")));
    let ip = "match_typed_subject_alt_names: [{san_type: IP_ADDRESS, matcher: {exact: '::1'}}]";
    assert!(matches(
        ip,
        San::Ip(std::net::IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]))
    ));
    // Untyped matchers take any SAN type...
    let untyped = "match_subject_alt_names: [{contains: istiod}]";
    assert!(matches(untyped, dns("istiod.istio-system.svc")));
    assert!(matches(untyped, San::Uri("spiffe://x/sa/istiod".into())));
    // ...but only when no typed matcher is given, as in Envoy.
    let both = format!("{suffix}\n{untyped}");
    assert_eq!(context(&both).len(), 1);
    assert!(!matches(&both, dns("istiod.istio-system.svc")));
}
