//! `/logging`: show and change log levels at run time, as Envoy's admin does.
//!
//! Tern logs through `tracing`; the process-wide filter is behind a reload handle. `level=<l>`
//! sets every logger; `<component>=<l>` is accepted for Envoy's component names and recorded, and
//! applies to the Tern module that does that component's work where there is one.

use super::{Body, Query, text};
use http::{Response, StatusCode};
use std::collections::BTreeMap;
use std::sync::Arc;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// Envoy's logger names that Tern maps onto its modules.
const COMPONENTS: &[(&str, &str)] = &[
    ("admin", "tern::admin"),
    ("config", "tern::config"),
    ("connection", "tern::listener"),
    ("conn_handler", "tern::listener"),
    ("filter", "tern::tcp_proxy"),
    ("main", "tern::server"),
    ("misc", "tern"),
    ("pool", "tern::upstream"),
    ("upstream", "tern::upstream"),
    ("upstream_dns", "tern::server"),
];

/// The live log filter.
#[derive(Clone)]
pub struct LogControl {
    #[allow(clippy::disallowed_types)] // admin-only state, never touched by workers
    state: Arc<std::sync::Mutex<BTreeMap<String, String>>>,
    reload: Option<reload::Handle<EnvFilter, Registry>>,
}

impl std::fmt::Debug for LogControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogControl")
    }
}

impl LogControl {
    /// A control over `reload` (None: levels are recorded but nothing is reloaded, e.g. in tests).
    pub fn new(level: &str, reload: Option<reload::Handle<EnvFilter, Registry>>) -> Self {
        let state = COMPONENTS
            .iter()
            .map(|(name, _)| (name.to_string(), level.to_string()))
            .collect();
        #[allow(clippy::disallowed_types)]
        let state = Arc::new(std::sync::Mutex::new(state));
        LogControl { state, reload }
    }

    pub fn handle(&self, query: &Query) -> Response<Body> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for (key, level) in query {
            let level = crate::cli::tracing_level(level);
            if key == "level" {
                state.values_mut().for_each(|v| *v = level.to_string());
            } else if let Some(entry) = state.get_mut(key) {
                *entry = level.to_string();
            } else {
                return text(
                    StatusCode::NOT_FOUND,
                    format!("error: unknown logger name {key}\n"),
                );
            }
        }
        if !query.is_empty() {
            self.apply(&state);
        }
        let mut body = String::from("active loggers:\n");
        for (name, level) in state.iter() {
            body.push_str(&format!("  {name}: {level}\n"));
        }
        text(StatusCode::OK, body)
    }

    fn apply(&self, state: &BTreeMap<String, String>) {
        let Some(reload) = &self.reload else { return };
        let base = state.get("misc").map_or("info", String::as_str);
        let mut directives = vec![base.to_string()];
        for (name, module) in COMPONENTS {
            if let Some(level) = state.get(*name)
                && *module != "tern"
            {
                directives.push(format!("{module}={level}"));
            }
        }
        if let Ok(filter) = EnvFilter::try_new(directives.join(",")) {
            let _ = reload.reload(filter);
        }
    }
}
