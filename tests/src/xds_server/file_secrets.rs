//! Secrets named after files, resolved the way pilot-agent's SDS server resolves them: Istio
//! names certificates mounted into the pod (DestinationRule / Gateway file certificates) as
//! `file-cert:<certificate chain path>~<private key path>` and `file-root:<CA bundle path>`, and
//! the agent answers with the files' bytes inline.
//!
//! A name the snapshot holds is served from the snapshot; only the others are looked up here,
//! reading the files each time (a changed file is a changed secret). A name whose files cannot
//! be read is not served, as the agent would not answer it either.

use xds_client::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
use xds_client::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};
use xds_client::pb::google::protobuf::Any;

/// The secret `name` stands for, when it is a file name whose files can be read.
pub fn resolve(name: &str) -> Option<Any> {
    let inline = |path: &str| -> Option<DataSource> {
        Some(DataSource {
            specifier: Some(Specifier::InlineBytes(std::fs::read(path).ok()?)),
            ..Default::default()
        })
    };
    let kind = if let Some(paths) = name.strip_prefix("file-cert:") {
        let (chain, key) = paths.split_once('~')?;
        secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline(chain)?),
            private_key: Some(inline(key)?),
            ..Default::default()
        })
    } else if let Some(path) = name.strip_prefix("file-root:") {
        secret::Type::ValidationContext(CertificateValidationContext {
            trusted_ca: Some(inline(path)?),
            ..Default::default()
        })
    } else {
        return None;
    };
    Some(xds_client::any::pack(&Secret {
        name: name.to_string(),
        r#type: Some(kind),
    }))
}
