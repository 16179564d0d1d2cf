//! `stats_config.stats_matcher`: which stats exist at all. Envoy applies it to a stat's full
//! name when the stat is created; a rejected stat is a null stat, absent from every admin
//! output (`/stats`, its JSON form and `/stats/prometheus` alike). Nothing is exempt: with
//! Istio's inclusion list, the readiness stats pilot-agent reads (`server.state`,
//! `listener_manager.workers_started`, `cluster_manager.*`) are kept only because the list
//! names `server`, `listener_manager` and `cluster_manager`.
//!
//! Tern keeps a rejected stat working (the code that owns it may read it back) but never
//! lists it.

use crate::config::ConfigError;
use crate::config::matcher::StringMatcher;
use xds_client::pb::envoy::config::metrics::v3 as proto;
use xds_client::pb::envoy::r#type::matcher::v3::ListStringMatcher;

/// A validated `envoy.config.metrics.v3.StatsMatcher`.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum StatsMatcher {
    /// No matcher, or `reject_all: false`.
    #[default]
    AcceptAll,
    RejectAll,
    /// Only names some pattern matches.
    Inclusion(Vec<StringMatcher>),
    /// Every name no pattern matches.
    Exclusion(Vec<StringMatcher>),
}

impl StatsMatcher {
    /// Whether the stat `name` is left out.
    pub fn rejects(&self, name: &str) -> bool {
        match self {
            StatsMatcher::AcceptAll => false,
            StatsMatcher::RejectAll => true,
            StatsMatcher::Inclusion(patterns) => !patterns.iter().any(|p| p.matches(name)),
            StatsMatcher::Exclusion(patterns) => patterns.iter().any(|p| p.matches(name)),
        }
    }
}

impl TryFrom<Option<&proto::StatsMatcher>> for StatsMatcher {
    type Error = ConfigError;

    fn try_from(m: Option<&proto::StatsMatcher>) -> Result<Self, ConfigError> {
        use proto::stats_matcher::StatsMatcher as M;
        let list = |field: &str, list: &ListStringMatcher| {
            list.patterns
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    StringMatcher::try_from(p).map_err(|e| ConfigError {
                        resource: "bootstrap".into(),
                        ..e.within(&format!("stats_config.stats_matcher.{field}.patterns[{i}]"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(match m.and_then(|m| m.stats_matcher.as_ref()) {
            None | Some(M::RejectAll(false)) => StatsMatcher::AcceptAll,
            Some(M::RejectAll(true)) => StatsMatcher::RejectAll,
            Some(M::InclusionList(l)) => StatsMatcher::Inclusion(list("inclusion_list", l)?),
            Some(M::ExclusionList(l)) => StatsMatcher::Exclusion(list("exclusion_list", l)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(json: serde_json::Value) -> StatsMatcher {
        let proto: proto::StatsMatcher =
            xds_client::proto_json::from_value(json, Default::default())
                .expect("valid StatsMatcher");
        StatsMatcher::try_from(Some(&proto)).expect("converts")
    }

    #[test]
    fn istio_inclusion_list_keeps_readiness_stats_and_drops_the_rest() {
        let m = matcher(serde_json::json!({"inclusion_list": {"patterns": [
            {"prefix": "server"}, {"prefix": "listener_manager"}, {"prefix": "cluster_manager"},
            {"prefix": "cluster.xds-grpc"}, {"suffix": "rbac.allowed"},
            {"safe_regex": {"regex": "vhost\\..*\\.route\\..*"}}
        ]}}));
        for kept in [
            "server.state",
            "listener_manager.workers_started",
            "cluster_manager.cds.update_success",
            "cluster.xds-grpc.upstream_cx_total",
            "http.inbound_0.0.0.0_80;.rbac.allowed",
            "vhost.v.route.r.upstream_rq_total",
        ] {
            assert!(!m.rejects(kept), "{kept}");
        }
        for dropped in [
            "cluster.outbound|80||a.b;.upstream_rq_total",
            "http.inbound_0.0.0.0_80;.downstream_rq_total",
            "listener.0.0.0.0_15006.downstream_cx_total",
            "vhost.v.vcluster.c.upstream_rq_total",
        ] {
            assert!(m.rejects(dropped), "{dropped}");
        }
    }

    #[test]
    fn exclusion_list_and_reject_all() {
        let m = matcher(serde_json::json!({"exclusion_list": {"patterns": [{"prefix": "http."}]}}));
        assert!(m.rejects("http.x.downstream_rq_total"));
        assert!(!m.rejects("server.live"));
        assert!(matcher(serde_json::json!({"reject_all": true})).rejects("server.live"));
        assert!(!matcher(serde_json::json!({"reject_all": false})).rejects("server.live"));
        assert!(
            !StatsMatcher::try_from(None)
                .expect("none")
                .rejects("server.live")
        );
    }

    #[test]
    fn a_bad_pattern_names_its_place() {
        let proto: proto::StatsMatcher = xds_client::proto_json::from_value(
            serde_json::json!({"inclusion_list": {"patterns": [{"prefix": "a"}, {"prefix": ""}]}}),
            Default::default(),
        )
        .expect("valid proto");
        let e = StatsMatcher::try_from(Some(&proto)).expect_err("empty prefix");
        assert_eq!(e.resource, "bootstrap");
        assert_eq!(
            e.field,
            "stats_config.stats_matcher.inclusion_list.patterns[1].prefix"
        );
    }
}
