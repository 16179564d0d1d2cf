//! Envoy's role-based access control engine (`envoy.config.rbac.v3.RBAC`), shared by the HTTP
//! RBAC filter (`http::rbac`) and the network RBAC filter ([`network`]).
//!
//! An [`Rbac`] is converted once, at config time, into plain matchers, and checked per request
//! or per connection against a [`Subject`]. Envoy's semantics are kept exactly:
//! - policies are tried in name order (Envoy keeps them in a `std::map`); the first that matches
//!   is the effective policy (`rbac_access_denied_matched_policy[<name>]`);
//! - a policy matches when any of its permissions and any of its principals match (an empty list
//!   matches nothing); `and_*` of nothing matches, `or_*` of nothing does not;
//! - `ALLOW` allows iff some policy matches, `DENY` denies iff some policy matches, `LOG` always
//!   allows; so `rules: {}` (no policies) denies everything under `ALLOW`.
//!
//! What Tern cannot evaluate is never guessed. `authenticated` is evaluated against the peer
//! certificate, which a plaintext connection does not have: Envoy's `authenticated` never matches
//! there, and Tern serves no TLS-terminating filter chain yet, so today it never matches. Every
//! kind whose input Tern does not produce (dynamic `metadata` and `sourced_metadata`, which
//! Istio uses for JWT claims; `filter_state`; extension `matcher`, `uri_template` and `custom`
//! principals; CEL `condition`s) is refused at conversion with [`RbacError::Unsupported`], and the
//! filters turn that into denying everything (fail closed), never into skipping the policy.

pub mod network;
#[cfg(test)]
mod tests;

use crate::config::ConfigError;
use crate::config::matcher::{HeaderMatcher, StringMatcher};
use crate::listener::filter_chain_match::Cidr;
use http::HeaderMap;
use std::net::{IpAddr, SocketAddr};
use xds_client::pb::envoy::config::core::v3::CidrRange;
use xds_client::pb::envoy::config::rbac::v3 as proto;
use xds_client::pb::envoy::r#type::matcher::v3::PathMatcher;

/// Why an RBAC config was not converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RbacError {
    /// The config is malformed: the resource is rejected.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// Valid, but it needs an input Tern does not have: the filter fails closed.
    #[error("{field}: {what} cannot be evaluated by Tern")]
    Unsupported { field: String, what: &'static str },
}

impl RbacError {
    fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        RbacError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    fn unsupported(what: &'static str) -> Self {
        RbacError::Unsupported {
            field: String::new(),
            what,
        }
    }

    /// Prefixes the field path with the enclosing field.
    pub fn within(self, outer: &str) -> Self {
        let join = |field: String| {
            if field.is_empty() {
                outer.to_string()
            } else if field.starts_with('[') {
                format!("{outer}{field}")
            } else {
                format!("{outer}.{field}")
            }
        };
        match self {
            RbacError::Invalid { field, reason } => RbacError::Invalid {
                field: join(field),
                reason,
            },
            RbacError::Unsupported { field, what } => RbacError::Unsupported {
                field: join(field),
                what,
            },
        }
    }

    fn from_config(e: ConfigError) -> Self {
        RbacError::Invalid {
            field: e.field,
            reason: e.reason,
        }
    }
}

/// `RBAC.Action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
    Log,
}

/// A converted `envoy.config.rbac.v3.RBAC`.
#[derive(Debug, Clone)]
pub struct Rbac {
    pub action: Action,
    /// Sorted by name, the order Envoy tries them in.
    policies: Vec<(String, Policy)>,
}

#[derive(Debug, Clone)]
struct Policy {
    permissions: Vec<Permission>,
    principals: Vec<Principal>,
}

/// What a request or connection does (`envoy.config.rbac.v3.Permission`).
#[derive(Debug, Clone)]
pub enum Permission {
    Any,
    And(Vec<Permission>),
    Or(Vec<Permission>),
    Not(Box<Permission>),
    Header(HeaderMatcher),
    /// Matches the path without its query and fragment.
    UrlPath(StringMatcher),
    DestinationIp(Cidr),
    DestinationPort(u32),
    /// `[start, end)`.
    DestinationPortRange(i32, i32),
    /// The connection's SNI, the empty string when it has none.
    RequestedServerName(StringMatcher),
}

/// Who sends it (`envoy.config.rbac.v3.Principal`).
#[derive(Debug, Clone)]
pub enum Principal {
    Any,
    And(Vec<Principal>),
    Or(Vec<Principal>),
    Not(Box<Principal>),
    /// A TLS peer certificate; `None` matches any authenticated peer.
    Authenticated(Option<StringMatcher>),
    /// The connection's remote address (deprecated `source_ip`).
    SourceIp(Cidr),
    DirectRemoteIp(Cidr),
    /// The downstream remote address after `x-forwarded-for` processing.
    RemoteIp(Cidr),
    Header(HeaderMatcher),
    UrlPath(StringMatcher),
}

/// The identity a TLS peer presented: what `authenticated.principal_name` is matched against.
#[derive(Debug, Clone, Default)]
pub struct PeerCertificate {
    pub uri_sans: Vec<String>,
    pub dns_sans: Vec<String>,
    pub subject: String,
}

/// The request or connection being checked.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The connection's local address (the original destination when original_dst restored it).
    pub local: SocketAddr,
    /// The connection's peer.
    pub peer: SocketAddr,
    /// The downstream remote address: the peer, or the client `x-forwarded-for` names.
    pub remote: IpAddr,
    /// SNI; empty when the connection sent none.
    pub server_name: &'a str,
    /// `None` on a plaintext connection.
    pub peer_certificate: Option<&'a PeerCertificate>,
    /// The HTTP request; `None` for the network filter, where headers are empty.
    pub request: Option<crate::config::matcher::RequestView<'a>>,
}

/// The outcome of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'a> {
    pub allowed: bool,
    /// The policy that matched, if any.
    pub policy: Option<&'a str>,
}

impl Rbac {
    /// Checks `subject` under this config's action.
    pub fn check<'a>(&'a self, subject: &Subject<'_>) -> Decision<'a> {
        let policy = self
            .policies
            .iter()
            .find(|(_, p)| p.matches(subject))
            .map(|(name, _)| name.as_str());
        let allowed = match self.action {
            Action::Allow => policy.is_some(),
            Action::Deny => policy.is_none(),
            Action::Log => true,
        };
        Decision { allowed, policy }
    }
}

impl Policy {
    fn matches(&self, s: &Subject<'_>) -> bool {
        self.permissions.iter().any(|p| p.matches(s))
            && self.principals.iter().any(|p| p.matches(s))
    }
}

fn header_matches(m: &HeaderMatcher, s: &Subject<'_>) -> bool {
    match &s.request {
        Some(req) => m.matches_request(req),
        None => m.matches(&HeaderMap::new()),
    }
}

fn path_matches(m: &StringMatcher, s: &Subject<'_>) -> bool {
    let Some(req) = &s.request else {
        return false;
    };
    if req.path.is_empty() {
        return false;
    }
    let end = req.path.find(['?', '#']).unwrap_or(req.path.len());
    m.matches(&req.path[..end])
}

impl Permission {
    pub fn matches(&self, s: &Subject<'_>) -> bool {
        match self {
            Permission::Any => true,
            Permission::And(all) => all.iter().all(|p| p.matches(s)),
            Permission::Or(any) => any.iter().any(|p| p.matches(s)),
            Permission::Not(inner) => !inner.matches(s),
            Permission::Header(m) => header_matches(m, s),
            Permission::UrlPath(m) => path_matches(m, s),
            Permission::DestinationIp(cidr) => cidr.contains(s.local.ip()),
            Permission::DestinationPort(port) => u32::from(s.local.port()) == *port,
            Permission::DestinationPortRange(start, end) => {
                (*start..*end).contains(&i32::from(s.local.port()))
            }
            Permission::RequestedServerName(m) => m.matches(s.server_name),
        }
    }
}

impl Principal {
    pub fn matches(&self, s: &Subject<'_>) -> bool {
        match self {
            Principal::Any => true,
            Principal::And(all) => all.iter().all(|p| p.matches(s)),
            Principal::Or(any) => any.iter().any(|p| p.matches(s)),
            Principal::Not(inner) => !inner.matches(s),
            Principal::Authenticated(name) => authenticated(name.as_ref(), s.peer_certificate),
            Principal::SourceIp(cidr) | Principal::DirectRemoteIp(cidr) => {
                cidr.contains(s.peer.ip())
            }
            Principal::RemoteIp(cidr) => cidr.contains(s.remote),
            Principal::Header(m) => header_matches(m, s),
            Principal::UrlPath(m) => path_matches(m, s),
        }
    }
}

/// Envoy's `authenticated`: never on plaintext; any certificate without a name matcher; else the
/// URI SANs, then the DNS SANs, then the subject.
fn authenticated(name: Option<&StringMatcher>, cert: Option<&PeerCertificate>) -> bool {
    let Some(cert) = cert else {
        return false;
    };
    let Some(name) = name else {
        return true;
    };
    cert.uri_sans.iter().any(|u| name.matches(u))
        || cert.dns_sans.iter().any(|d| name.matches(d))
        || name.matches(&cert.subject)
}

impl TryFrom<&proto::Rbac> for Rbac {
    type Error = RbacError;

    fn try_from(r: &proto::Rbac) -> Result<Self, RbacError> {
        let action = match proto::rbac::Action::try_from(r.action) {
            Ok(proto::rbac::Action::Allow) => Action::Allow,
            Ok(proto::rbac::Action::Deny) => Action::Deny,
            Ok(proto::rbac::Action::Log) => Action::Log,
            Err(_) => {
                return Err(RbacError::invalid(
                    "action",
                    format!("unknown action {}", r.action),
                ));
            }
        };
        let mut policies = r
            .policies
            .iter()
            .map(|(name, p)| {
                Policy::try_from(p)
                    .map(|p| (name.clone(), p))
                    .map_err(|e| e.within(&format!("policies[{name:?}]")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        policies.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Rbac { action, policies })
    }
}

impl TryFrom<&proto::Policy> for Policy {
    type Error = RbacError;

    fn try_from(p: &proto::Policy) -> Result<Self, RbacError> {
        if p.condition.is_some() {
            return Err(RbacError::unsupported("a CEL condition").within("condition"));
        }
        if p.checked_condition.is_some() {
            return Err(RbacError::unsupported("a CEL condition").within("checked_condition"));
        }
        let permissions = p
            .permissions
            .iter()
            .enumerate()
            .map(|(i, x)| {
                Permission::try_from(x).map_err(|e| e.within(&format!("permissions[{i}]")))
            })
            .collect::<Result<_, _>>()?;
        let principals = p
            .principals
            .iter()
            .enumerate()
            .map(|(i, x)| Principal::try_from(x).map_err(|e| e.within(&format!("principals[{i}]"))))
            .collect::<Result<_, _>>()?;
        Ok(Policy {
            permissions,
            principals,
        })
    }
}

fn cidr(field: &str, range: &CidrRange) -> Result<Cidr, RbacError> {
    Cidr::try_from(range).map_err(|e| RbacError::invalid(field, e.to_string()))
}

fn header(
    field: &str,
    m: &xds_client::pb::envoy::config::route::v3::HeaderMatcher,
) -> Result<HeaderMatcher, RbacError> {
    HeaderMatcher::try_from(m).map_err(|e| RbacError::from_config(e.within(field)))
}

fn string(
    field: &str,
    m: &xds_client::pb::envoy::r#type::matcher::v3::StringMatcher,
) -> Result<StringMatcher, RbacError> {
    StringMatcher::try_from(m).map_err(|e| RbacError::from_config(e.within(field)))
}

fn url_path(m: &PathMatcher) -> Result<StringMatcher, RbacError> {
    use xds_client::pb::envoy::r#type::matcher::v3::path_matcher::Rule;
    match &m.rule {
        Some(Rule::Path(s)) => string("url_path.path", s),
        None => Err(RbacError::invalid("url_path", "a path rule is required")),
    }
}

impl TryFrom<&proto::Permission> for Permission {
    type Error = RbacError;

    // `metadata` is deprecated in favour of `sourced_metadata`; both are still sent.
    #[allow(deprecated)]
    fn try_from(p: &proto::Permission) -> Result<Self, RbacError> {
        use proto::permission::Rule as R;
        let set = |field: &str, rules: &[proto::Permission]| {
            rules
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    Permission::try_from(r).map_err(|e| e.within(&format!("{field}.rules[{i}]")))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(match &p.rule {
            Some(R::AndRules(s)) => Permission::And(set("and_rules", &s.rules)?),
            Some(R::OrRules(s)) => Permission::Or(set("or_rules", &s.rules)?),
            Some(R::Any(_)) => Permission::Any,
            Some(R::NotRule(inner)) => Permission::Not(Box::new(
                Permission::try_from(inner.as_ref()).map_err(|e| e.within("not_rule"))?,
            )),
            Some(R::Header(h)) => Permission::Header(header("header", h)?),
            Some(R::UrlPath(m)) => Permission::UrlPath(url_path(m)?),
            Some(R::DestinationIp(r)) => Permission::DestinationIp(cidr("destination_ip", r)?),
            Some(R::DestinationPort(port)) => {
                if *port > 65535 {
                    return Err(RbacError::invalid(
                        "destination_port",
                        format!("{port} is above 65535"),
                    ));
                }
                Permission::DestinationPort(*port)
            }
            Some(R::DestinationPortRange(r)) => Permission::DestinationPortRange(r.start, r.end),
            Some(R::RequestedServerName(m)) => {
                Permission::RequestedServerName(string("requested_server_name", m)?)
            }
            Some(R::Metadata(_)) => {
                return Err(RbacError::unsupported("dynamic metadata").within("metadata"));
            }
            Some(R::SourcedMetadata(_)) => {
                return Err(RbacError::unsupported("metadata").within("sourced_metadata"));
            }
            Some(R::Matcher(_)) => {
                return Err(RbacError::unsupported("an extension matcher").within("matcher"));
            }
            Some(R::UriTemplate(_)) => {
                return Err(RbacError::unsupported("a URI template").within("uri_template"));
            }
            None => return Err(RbacError::invalid("", "a permission rule is required")),
        })
    }
}

impl TryFrom<&proto::Principal> for Principal {
    type Error = RbacError;

    // `source_ip` and `metadata` are deprecated but still sent by control planes.
    #[allow(deprecated)]
    fn try_from(p: &proto::Principal) -> Result<Self, RbacError> {
        use proto::principal::Identifier as I;
        let set = |field: &str, ids: &[proto::Principal]| {
            ids.iter()
                .enumerate()
                .map(|(i, r)| {
                    Principal::try_from(r).map_err(|e| e.within(&format!("{field}.ids[{i}]")))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(match &p.identifier {
            Some(I::AndIds(s)) => Principal::And(set("and_ids", &s.ids)?),
            Some(I::OrIds(s)) => Principal::Or(set("or_ids", &s.ids)?),
            Some(I::Any(_)) => Principal::Any,
            Some(I::NotId(inner)) => Principal::Not(Box::new(
                Principal::try_from(inner.as_ref()).map_err(|e| e.within("not_id"))?,
            )),
            Some(I::Authenticated(a)) => Principal::Authenticated(
                a.principal_name
                    .as_ref()
                    .map(|m| string("authenticated.principal_name", m))
                    .transpose()?,
            ),
            Some(I::SourceIp(r)) => Principal::SourceIp(cidr("source_ip", r)?),
            Some(I::DirectRemoteIp(r)) => Principal::DirectRemoteIp(cidr("direct_remote_ip", r)?),
            Some(I::RemoteIp(r)) => Principal::RemoteIp(cidr("remote_ip", r)?),
            Some(I::Header(h)) => Principal::Header(header("header", h)?),
            Some(I::UrlPath(m)) => Principal::UrlPath(url_path(m)?),
            Some(I::Metadata(_)) => {
                return Err(RbacError::unsupported("dynamic metadata").within("metadata"));
            }
            Some(I::SourcedMetadata(_)) => {
                return Err(RbacError::unsupported("metadata").within("sourced_metadata"));
            }
            Some(I::FilterState(_)) => {
                return Err(RbacError::unsupported("filter state").within("filter_state"));
            }
            Some(I::Custom(_)) => {
                return Err(RbacError::unsupported("a custom principal").within("custom"));
            }
            None => return Err(RbacError::invalid("", "a principal identifier is required")),
        })
    }
}

/// What an RBAC filter enforces: Envoy's `rules` (absent: nothing) or, when Tern cannot evaluate
/// them, a denial of everything.
#[derive(Debug, Clone)]
pub enum Enforcement {
    Rules(Rbac),
    /// The rules need an input Tern lacks; `reason` says which field.
    FailClosed {
        reason: String,
    },
}

impl Enforcement {
    /// Converts a filter's `rules`/`matcher` pair (Envoy ignores `rules` when `matcher` is set).
    /// `Ok(None)`: no enforcement.
    pub fn from_rules(
        rules: Option<&proto::Rbac>,
        has_matcher: bool,
    ) -> Result<Option<Enforcement>, RbacError> {
        if has_matcher {
            return Ok(Some(Enforcement::FailClosed {
                reason: "matcher: the matching API cannot be evaluated by Tern".into(),
            }));
        }
        let Some(rules) = rules else {
            return Ok(None);
        };
        match Rbac::try_from(rules) {
            Ok(rbac) => Ok(Some(Enforcement::Rules(rbac))),
            Err(e @ RbacError::Unsupported { .. }) => Ok(Some(Enforcement::FailClosed {
                reason: e.within("rules").to_string(),
            })),
            Err(e) => Err(e.within("rules")),
        }
    }

    pub fn check<'a>(&'a self, subject: &Subject<'_>) -> Decision<'a> {
        match self {
            Enforcement::Rules(rbac) => rbac.check(subject),
            Enforcement::FailClosed { .. } => Decision {
                allowed: false,
                policy: None,
            },
        }
    }
}

/// Converts `shadow_rules`: shadow rules only count, so ones Tern cannot evaluate are skipped
/// (their `shadow_*` counters stay at zero) rather than failing anything.
pub fn shadow_rules(
    rules: Option<&proto::Rbac>,
    has_matcher: bool,
) -> Result<Option<Rbac>, RbacError> {
    if has_matcher {
        tracing::warn!(
            "RBAC shadow_matcher cannot be evaluated by Tern; shadow stats stay at zero"
        );
        return Ok(None);
    }
    match rules.map(Rbac::try_from).transpose() {
        Ok(r) => Ok(r),
        Err(e @ RbacError::Unsupported { .. }) => {
            tracing::warn!(reason = %e.within("shadow_rules"), "RBAC shadow rules skipped");
            Ok(None)
        }
        Err(e) => Err(e.within("shadow_rules")),
    }
}

/// Envoy's `statPrefixJoin`: `prefix` and `token` with exactly one dot between them.
pub fn stat_prefix_join(prefix: &str, token: &str) -> String {
    if prefix.is_empty() {
        token.to_string()
    } else if prefix.ends_with('.') {
        format!("{prefix}{token}")
    } else {
        format!("{prefix}.{token}")
    }
}

/// The `allowed`/`denied`/`shadow_allowed`/`shadow_denied` counters of one RBAC filter, named as
/// Envoy names them: `<prefix>rbac.<rules_stat_prefix>allowed` and
/// `<prefix>rbac.<shadow_rules_stat_prefix>shadow_allowed`, with `statPrefixJoin` dots.
#[derive(Debug, Clone)]
pub struct RbacStats {
    pub allowed: crate::stats::Counter,
    pub denied: crate::stats::Counter,
    pub shadow_allowed: crate::stats::Counter,
    pub shadow_denied: crate::stats::Counter,
}

impl RbacStats {
    pub fn new(store: &crate::stats::Store, prefix: &str, rules: &str, shadow: &str) -> Self {
        let base = stat_prefix_join(prefix, "rbac.");
        let enforced = format!("{base}{rules}");
        let shadowed = format!("{base}{shadow}");
        let name = |p: &str, stat: &str| stat_prefix_join(p, stat);
        RbacStats {
            allowed: store.counter(&name(&enforced, "allowed")),
            denied: store.counter(&name(&enforced, "denied")),
            shadow_allowed: store.counter(&name(&shadowed, "shadow_allowed")),
            shadow_denied: store.counter(&name(&shadowed, "shadow_denied")),
        }
    }

    /// Runs the shadow rules (counting only) then the enforced ones; the enforced decision.
    pub fn evaluate<'a>(
        &self,
        enforced: Option<&'a Enforcement>,
        shadow: Option<&Rbac>,
        subject: &Subject<'_>,
    ) -> Option<Decision<'a>> {
        if let Some(shadow) = shadow {
            if shadow.check(subject).allowed {
                self.shadow_allowed.inc();
            } else {
                self.shadow_denied.inc();
            }
        }
        let decision = enforced?.check(subject);
        if decision.allowed {
            self.allowed.inc();
        } else {
            self.denied.inc();
        }
        Some(decision)
    }
}
