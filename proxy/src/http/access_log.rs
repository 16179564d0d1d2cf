//! Envoy-compatible HTTP access logs: `envoy.config.accesslog.v3.AccessLog` in, one line per
//! finished request out, in the same format Envoy 1.40 would write.
//!
//! The HTTP connection manager fills a [`LogRecord`] when a stream ends and calls
//! [`AccessLog::log`] on its worker thread. Everything that can fail is done at config time
//! ([`AccessLog::from_proto`]): format strings are parsed, filters checked, files opened. At log
//! time the filter is evaluated, the line rendered, and handed to the destination's writer
//! thread without waiting (see `sink` for why a channel and a thread rather than `O_APPEND`
//! writes from the worker: a worker must never wait for a disk or a full pipe).
//!
//! Supported loggers: `envoy.extensions.access_loggers.file.v3.FileAccessLog` (any path,
//! `/dev/stdout` and `/dev/stderr` included; `format`, `json_format`, `typed_json_format` or
//! `log_format`) and `envoy.extensions.access_loggers.stream.v3.{Stdout,Stderr}AccessLog`.
//! `format` covers parsing and operators, `json` structured output, `filter` the filters,
//! `time` the START_TIME formats.

mod filter;
mod format;
mod json;
mod sink;
mod time;

#[cfg(test)]
mod tests;

use filter::Filter;
use format::{Commands, Template};
use json::JsonFormat;
use sink::{Destination, Sink};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use xds_client::any;
use xds_client::pb::envoy::config::accesslog::v3 as proto;
use xds_client::pb::envoy::config::core::v3::{
    DataSource, SubstitutionFormatString, data_source, substitution_format_string,
};
use xds_client::pb::envoy::extensions::access_loggers::file::v3::{FileAccessLog, file_access_log};
use xds_client::pb::envoy::extensions::access_loggers::stream::v3::{
    StderrAccessLog, StdoutAccessLog, stderr_access_log, stdout_access_log,
};
use xds_client::pb::google::protobuf::Any;

pub use sink::{flush_all, reopen_files};

/// Envoy's default access log format.
pub const DEFAULT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n";

/// The formatter extension that adds `%REQ_WITHOUT_QUERY(...)%`.
const REQ_WITHOUT_QUERY_TYPE: &str =
    "type.googleapis.com/envoy.extensions.formatter.req_without_query.v3.ReqWithoutQuery";

/// Formatter extensions whose commands Envoy 1.40 also knows without them (Tern accepts those
/// commands and prints them as not set).
const BUILT_IN_FORMATTER_TYPES: &[&str] = &[
    "type.googleapis.com/envoy.extensions.formatter.cel.v3.Cel",
    "type.googleapis.com/envoy.extensions.formatter.metadata.v3.Metadata",
];

/// What one request leaves behind for the access log.
#[derive(Debug, Clone, Default)]
pub struct LogRecord {
    pub start_time: Option<SystemTime>,
    pub method: String,
    /// `:path` as received (before rewrites).
    pub path: String,
    /// `x-envoy-original-path` when a rewrite happened.
    pub original_path: Option<String>,
    /// "HTTP/1.1", "HTTP/2", "HTTP/1.0"; empty when unknown.
    pub protocol: &'static str,
    pub authority: String,
    pub request_headers: http::HeaderMap,
    pub response_headers: http::HeaderMap,
    pub response_trailers: http::HeaderMap,
    /// 0 when no response was sent.
    pub response_code: u16,
    pub response_code_details: String,
    /// Short flags, comma separated ("UF,URX"); `-` is printed when empty.
    pub response_flags: String,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration: Duration,
    pub request_duration: Option<Duration>,
    pub response_duration: Option<Duration>,
    pub upstream_host: Option<SocketAddr>,
    pub upstream_cluster: Option<String>,
    pub upstream_local_address: Option<SocketAddr>,
    pub upstream_transport_failure_reason: Option<String>,
    pub downstream_remote_address: Option<SocketAddr>,
    pub downstream_local_address: Option<SocketAddr>,
    /// The downstream TLS SNI, for `%REQUESTED_SERVER_NAME%`.
    pub requested_server_name: Option<String>,
    pub route_name: String,
    pub request_id: Option<String>,
    pub attempt_count: u32,
    pub connection_id: u64,
}

/// One configured access log: filter, format and destination. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AccessLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    filter: Option<Filter>,
    format: LineFormat,
    sink: Arc<Sink>,
}

/// How a record becomes a line.
#[derive(Debug, Clone)]
enum LineFormat {
    Text {
        template: Template,
        omit_empty: bool,
    },
    Json(JsonFormat),
}

impl AccessLog {
    /// From `envoy.config.accesslog.v3.AccessLog`. The error names the offending sub-field
    /// (`typed_config.log_format.text_format_source.inline_string: Not supported field in
    /// StreamInfo: FOO`). Opens the destination, so call it on the config thread.
    pub fn from_proto(p: &proto::AccessLog) -> Result<Self, String> {
        let filter = p
            .filter
            .as_ref()
            .map(|f| Filter::from_proto(f, "filter"))
            .transpose()?;
        let Some(proto::access_log::ConfigType::TypedConfig(config)) = &p.config_type else {
            return Err("typed_config: is required".to_string());
        };
        let (format, destination) = logger(config)?;
        let sink = Sink::shared(destination).map_err(|e| format!("typed_config.path: {e}"))?;
        Ok(AccessLog {
            inner: Arc::new(Inner {
                name: p.name.clone(),
                filter,
                format,
                sink,
            }),
        })
    }

    /// Logs `record` if the filter lets it through. Never blocks: the line is queued for the
    /// destination's writer, or dropped (see [`AccessLog::dropped`]) if that writer has fallen
    /// far behind.
    pub fn log(&self, record: &LogRecord) {
        if let Some(line) = self.render(record) {
            self.inner.sink.write(line);
        }
    }

    /// Blocks until every line logged (by any `AccessLog` sharing this destination) before the
    /// call has been written; false if the writer did not confirm within its deadline. For
    /// tests and shutdown, never a worker.
    pub fn flush(&self) -> bool {
        self.inner.sink.flush()
    }

    /// Lines this destination has dropped because its writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.inner.sink.dropped()
    }

    /// The `name` it was configured with.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The line `record` produces, or `None` when the filter rejects it.
    fn render(&self, record: &LogRecord) -> Option<String> {
        if let Some(filter) = &self.inner.filter
            && !filter.matches(record)
        {
            return None;
        }
        Some(match &self.inner.format {
            LineFormat::Text {
                template,
                omit_empty,
            } => {
                let mut line = String::with_capacity(256);
                template.render_into(record, *omit_empty, &mut line);
                line
            }
            LineFormat::Json(json) => json.render(record),
        })
    }
}

/// The format and destination of a `typed_config`.
fn logger(config: &Any) -> Result<(LineFormat, Destination), String> {
    let type_url = any::type_url(config);
    let unpack_error = |e: any::UnpackError| format!("typed_config: {e}");
    if type_url == <FileAccessLog as prost::Name>::type_url() {
        let file: FileAccessLog = any::unpack(config).map_err(unpack_error)?;
        if file.path.is_empty() {
            return Err("typed_config.path: must not be empty".to_string());
        }
        Ok((file_format(&file)?, Destination::from_path(&file.path)))
    } else if type_url == <StdoutAccessLog as prost::Name>::type_url() {
        let stdout: StdoutAccessLog = any::unpack(config).map_err(unpack_error)?;
        let format = match &stdout.access_log_format {
            Some(stdout_access_log::AccessLogFormat::LogFormat(f)) => {
                substitution(f, "typed_config.log_format")?
            }
            None => default_format(),
        };
        Ok((format, Destination::Stdout))
    } else if type_url == <StderrAccessLog as prost::Name>::type_url() {
        let stderr: StderrAccessLog = any::unpack(config).map_err(unpack_error)?;
        let format = match &stderr.access_log_format {
            Some(stderr_access_log::AccessLogFormat::LogFormat(f)) => {
                substitution(f, "typed_config.log_format")?
            }
            None => default_format(),
        };
        Ok((format, Destination::Stderr))
    } else {
        Err(format!(
            "typed_config: unsupported access logger {type_url}"
        ))
    }
}

#[allow(deprecated)] // `format`, `json_format` and `typed_json_format` are deprecated, not gone.
fn file_format(file: &FileAccessLog) -> Result<LineFormat, String> {
    use file_access_log::AccessLogFormat as F;
    match &file.access_log_format {
        None => Ok(default_format()),
        Some(F::Format(text)) if text.is_empty() => Ok(default_format()),
        Some(F::Format(text)) => {
            text_format(text, false, Commands::default(), "typed_config.format")
        }
        Some(F::JsonFormat(s)) => {
            json_format(s, false, Commands::default(), "typed_config.json_format")
        }
        Some(F::TypedJsonFormat(s)) => json_format(
            s,
            false,
            Commands::default(),
            "typed_config.typed_json_format",
        ),
        Some(F::LogFormat(f)) => substitution(f, "typed_config.log_format"),
    }
}

/// A `SubstitutionFormatString`; `path` names it in errors.
#[allow(deprecated)] // `text_format` is deprecated, not gone.
fn substitution(f: &SubstitutionFormatString, path: &str) -> Result<LineFormat, String> {
    use substitution_format_string::Format as F;
    let commands = formatter_extensions(f, path)?;
    let omit = f.omit_empty_values;
    match &f.format {
        // Envoy's proto validation: the format oneof is required.
        None => Err(format!(
            "{path}: one of text_format, text_format_source or json_format is required"
        )),
        Some(F::TextFormat(text)) => {
            text_format(text, omit, commands, &format!("{path}.text_format"))
        }
        Some(F::TextFormatSource(source)) => {
            let (text, field) = data_source(source, &format!("{path}.text_format_source"))?;
            text_format(&text, omit, commands, &field)
        }
        Some(F::JsonFormat(s)) => json_format(s, omit, commands, &format!("{path}.json_format")),
    }
}

/// The commands `formatters` add; an extension Tern does not know is an error.
fn formatter_extensions(f: &SubstitutionFormatString, path: &str) -> Result<Commands, String> {
    let mut commands = Commands::default();
    for (i, extension) in f.formatters.iter().enumerate() {
        let type_url = extension
            .typed_config
            .as_ref()
            .map(any::type_url)
            .unwrap_or_default();
        if type_url == REQ_WITHOUT_QUERY_TYPE {
            commands.req_without_query = true;
        } else if !BUILT_IN_FORMATTER_TYPES.contains(&type_url.as_str()) {
            return Err(format!(
                "{path}.formatters[{i}]: unsupported formatter {:?} ({type_url})",
                extension.name
            ));
        }
    }
    Ok(commands)
}

/// The text of a `DataSource` and the name of the field it came from.
fn data_source(source: &DataSource, path: &str) -> Result<(String, String), String> {
    use data_source::Specifier as S;
    match &source.specifier {
        Some(S::InlineString(text)) => Ok((text.clone(), format!("{path}.inline_string"))),
        Some(S::InlineBytes(bytes)) => String::from_utf8(bytes.clone())
            .map(|text| (text, format!("{path}.inline_bytes")))
            .map_err(|_| format!("{path}.inline_bytes: not UTF-8")),
        Some(S::Filename(file)) => std::fs::read_to_string(file)
            .map(|text| (text, format!("{path}.filename")))
            .map_err(|e| format!("{path}.filename: cannot read {file}: {e}")),
        Some(S::EnvironmentVariable(var)) => std::env::var(var)
            .map(|text| (text, format!("{path}.environment_variable")))
            .map_err(|_| format!("{path}.environment_variable: {var} is not set")),
        None => Err(format!("{path}: a source is required")),
    }
}

fn text_format(
    text: &str,
    omit_empty: bool,
    commands: Commands,
    path: &str,
) -> Result<LineFormat, String> {
    let template = Template::parse(text, commands).map_err(|e| format!("{path}: {e}"))?;
    Ok(LineFormat::Text {
        template,
        omit_empty,
    })
}

fn json_format(
    s: &xds_client::pb::google::protobuf::Struct,
    omit_empty: bool,
    commands: Commands,
    path: &str,
) -> Result<LineFormat, String> {
    JsonFormat::parse(s, omit_empty, commands, path).map(LineFormat::Json)
}

fn default_format() -> LineFormat {
    match Template::parse(DEFAULT_FORMAT, Commands::default()) {
        Ok(template) => LineFormat::Text {
            template,
            omit_empty: false,
        },
        // DEFAULT_FORMAT parses (a unit test holds it to that); an empty line is the safe fallback.
        Err(_) => LineFormat::Text {
            template: Template::empty(),
            omit_empty: false,
        },
    }
}
