//! The one logging set-up: `tracing` events and spans, written as one line each to stderr
//! or to the local syslog socket, chosen by config. Span fields come first, so the request
//! span's `req=…` starts every line a request causes, in the frontend and in the signer
//! alike; one search for the id joins both processes. Callers never pass secrets, and values
//! taken from requests go through [`crate::util::log_safe`] first. Records of the `log`
//! crate (rustls writes those) are taken in too.

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::sync::Mutex;

use serde::Deserialize;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{Layer, Registry};

use crate::util::{now_millis, rfc3339_millis};

/// A request id as it appears in logs: 16 hex digits, the same in every process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestId(pub u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The span a request's log lines are written in: `req=<id>` on each of them.
pub fn request_span(id: u64) -> tracing::Span {
    tracing::info_span!("request", req = %RequestId(id))
}

/// Where finished lines go.
enum Sink {
    Stderr(Mutex<std::io::Stderr>),
    Syslog(Mutex<syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>>),
}

/// Formats events as `ts level program: key=value … message`.
struct LineLayer {
    program: &'static str,
    sink: Sink,
}

/// A span's fields, rendered once when the span is created.
struct SpanFields(String);

/// Renders fields as ` key=value`; the `message` field is kept apart.
#[derive(Default)]
struct FieldWriter {
    fields: String,
    message: String,
}

impl FieldWriter {
    fn push(&mut self, field: &Field, value: &dyn fmt::Display) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value}");
        } else {
            let _ = write!(self.fields, "{}={} ", field.name(), value);
        }
    }
}

impl Visit for FieldWriter {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, &crate::util::log_safe(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            // Values in messages went through log_safe at the call site; escaping control
            // characters once more keeps one event on one line whatever a caller forgot,
            // without doubling the backslashes log_safe wrote.
            self.push(field, &escape_controls(&text));
        } else {
            self.push(field, &crate::util::log_safe(&text));
        }
    }
}

/// `text` with control characters (CR, LF, NUL, …) escaped and everything else as it is.
fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

impl<S> Layer<S> for LineLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut w = FieldWriter::default();
        attrs.record(&mut w);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(w.fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut line = String::with_capacity(160);
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(f) = span.extensions().get::<SpanFields>() {
                    line.push_str(&f.0);
                }
            }
        }
        let mut w = FieldWriter::default();
        event.record(&mut w);
        line.push_str(&w.fields);
        line.push_str(&w.message);
        let level = *event.metadata().level();
        self.write(level, line.trim_end());
    }
}

impl LineLayer {
    fn write(&self, level: Level, text: &str) {
        match &self.sink {
            Sink::Stderr(out) => {
                let line = format!(
                    "{} {} {}: {text}\n",
                    rfc3339_millis(now_millis()),
                    level.as_str().to_ascii_lowercase(),
                    self.program
                );
                if let Ok(mut out) = out.lock() {
                    let _ = out.write_all(line.as_bytes());
                }
            }
            Sink::Syslog(logger) => {
                if let Ok(mut logger) = logger.lock() {
                    let _ = match level {
                        Level::ERROR => logger.err(text),
                        Level::WARN => logger.warning(text),
                        Level::INFO => logger.info(text),
                        _ => logger.debug(text),
                    };
                }
            }
        }
    }
}

/// Installs the subscriber once per process. Syslog uses the local Unix socket only (never
/// the UDP/TCP fallback); if it cannot be reached, logging falls back to stderr with a
/// warning.
pub fn init(program: &'static str, config: &LogConfig) {
    let mut sink = Sink::Stderr(Mutex::new(std::io::stderr()));
    if config.target == LogTarget::Syslog {
        let formatter = syslog::Formatter3164 {
            facility: syslog::Facility::LOG_DAEMON,
            hostname: None,
            process: program.to_string(),
            pid: std::process::id(),
        };
        match syslog::unix(formatter) {
            Ok(logger) => sink = Sink::Syslog(Mutex::new(logger)),
            Err(e) => eprintln!("{program}: syslog unavailable ({e}), logging to stderr"),
        }
    }
    let layer = LineLayer { program, sink }.with_filter(config.level);
    let subscriber = Registry::default().with(layer);
    if tracing::subscriber::set_global_default(subscriber).is_ok() {
        let _ = tracing_log::LogTracer::init_with_filter(match config.level {
            LevelFilter::ERROR => log::LevelFilter::Error,
            LevelFilter::WARN => log::LevelFilter::Warn,
            LevelFilter::INFO => log::LevelFilter::Info,
            _ => log::LevelFilter::Debug,
        });
    }
}

/// The `log` table, the same in every config file.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    level: Option<String>,
}

impl RawLog {
    pub fn validate(&self) -> Result<LogConfig, String> {
        parse_log(self.target.as_deref(), self.level.as_deref())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    Stderr,
    Syslog,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub target: LogTarget,
    pub level: LevelFilter,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            target: LogTarget::Stderr,
            level: LevelFilter::INFO,
        }
    }
}

pub fn parse_log(target: Option<&str>, level: Option<&str>) -> Result<LogConfig, String> {
    let target = match target.unwrap_or("stderr") {
        "stderr" => LogTarget::Stderr,
        "syslog" => LogTarget::Syslog,
        other => return Err(format!("log.target: {other:?} is not stderr or syslog")),
    };
    let level = match level.unwrap_or("info") {
        "error" => LevelFilter::ERROR,
        "warn" => LevelFilter::WARN,
        "info" => LevelFilter::INFO,
        "debug" => LevelFilter::DEBUG,
        other => {
            return Err(format!(
                "log.level: {other:?} is not error, warn, info or debug"
            ))
        }
    };
    Ok(LogConfig { target, level })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_stay_on_one_line_without_doubled_escapes() {
        let already_safe = crate::util::log_safe("a\nb");
        assert_eq!(already_safe, "a\\nb");
        assert_eq!(escape_controls(&already_safe), "a\\nb");
        let forgot = "subject=x\r\nINFO forged";
        let line = escape_controls(forgot);
        assert_eq!(line, "subject=x\\r\\nINFO forged");
        assert!(!line.contains('\n') && !line.contains('\r'));
    }
}
