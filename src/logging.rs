//! The one logging facade: operational logs go through the `log` macros to stderr or to the
//! local syslog socket, chosen by config. Callers put the request id in the message
//! (`req=…`) and never pass secrets; values taken from requests go through
//! [`crate::util::log_safe`] first.

use std::io::Write;
use std::sync::Mutex;

use crate::config::signer::{LogConfig, LogTarget};

struct StderrLogger {
    program: &'static str,
    out: Mutex<std::io::Stderr>,
}

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format!(
            "{} {} {}: {}\n",
            crate::util::rfc3339_millis(crate::util::now_millis()),
            record.level().as_str().to_ascii_lowercase(),
            self.program,
            record.args()
        );
        if let Ok(mut out) = self.out.lock() {
            let _ = out.write_all(line.as_bytes());
        }
    }

    fn flush(&self) {}
}

/// Installs the logger once per process. Syslog uses the local Unix socket only (never the
/// UDP/TCP fallback); if it cannot be reached, logging falls back to stderr with a warning.
pub fn init(program: &'static str, config: &LogConfig) {
    log::set_max_level(config.level);
    if config.target == LogTarget::Syslog {
        let formatter = syslog::Formatter3164 {
            facility: syslog::Facility::LOG_DAEMON,
            hostname: None,
            process: program.to_string(),
            pid: std::process::id(),
        };
        match syslog::unix(formatter) {
            Ok(logger) => {
                if log::set_boxed_logger(Box::new(syslog::BasicLogger::new(logger))).is_ok() {
                    return;
                }
            }
            Err(e) => eprintln!("{program}: syslog unavailable ({e}), logging to stderr"),
        }
    }
    let _ = log::set_boxed_logger(Box::new(StderrLogger {
        program,
        out: Mutex::new(std::io::stderr()),
    }));
}
