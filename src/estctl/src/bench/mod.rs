//! `estctl bench`: the project's benchmark. Each operation is driven the way its real
//! clients drive it (EST over rustls with HTTP Basic or client certificates, OCSP over
//! plain HTTP, the token through PKCS#11), with everything a request needs prepared before
//! the clock starts and every answer checked. Reports throughput, latency percentiles,
//! failures by kind and, for the pids given, the server processes' CPU time per operation
//! (utime + stime from /proc); `--json` prints one object per run.

mod est;
mod h2;
mod http;
mod ocsp;
mod token;

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// EST enrolments (bootstrap, simpleenroll, simplereenroll) or cacerts over TLS.
    Est(est::EstArgs),
    /// A long run at a steady rate with the gateway's mix of operations and client
    /// certificates, sampling the server processes' RSS and descriptors.
    Soak(est::soak::SoakArgs),
    /// OCSP answers per second from the publication listener.
    Ocsp(ocsp::OcspArgs),
    /// The raw PKCS#11 signing rate of the configured token and CA key (signer stopped, or
    /// briefly beside it: SoftHSM tolerates reads from two processes).
    Token(token::TokenArgs),
}

pub fn run(cmd: BenchCommand) -> Result<(), String> {
    match cmd {
        BenchCommand::Est(a) => est::run(a),
        BenchCommand::Soak(a) => est::soak::run(a),
        BenchCommand::Ocsp(a) => ocsp::run(a),
        BenchCommand::Token(a) => token::run(a),
    }
}

/// utime + stime of a process in microseconds (/proc counts in USER_HZ, 100 on Linux).
pub(crate) fn cpu_us(pid: u32) -> Result<u64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("pid {pid}: {e}"))?;
    // The command may hold spaces: fields count from after the closing parenthesis.
    let after = stat.rsplit_once(')').ok_or("bad /proc stat")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15; after ") " field 3 is index 0.
    Ok((ticks(11) + ticks(12)) * 10_000)
}

/// Sum of the CPU time of `pids`.
pub(crate) fn cpu_of(pids: &[u32]) -> Result<u64, String> {
    pids.iter().map(|p| cpu_us(*p)).sum()
}

/// Peak and current resident set size of a process, in KiB (VmHWM, VmRSS).
pub(crate) fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// What one run measured.
#[derive(Default)]
pub(crate) struct Report {
    pub latencies_us: Vec<u32>,
    pub failures: BTreeMap<String, u64>,
    pub elapsed: Duration,
    /// Server CPU over the counted operations, when pids were given.
    pub cpu_us: Option<u64>,
}

impl Report {
    pub fn ok(&self) -> u64 {
        self.latencies_us.len() as u64
    }

    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    pub fn fail(&mut self, why: impl Into<String>) {
        *self.failures.entry(why.into()).or_default() += 1;
    }

    pub fn merge(&mut self, other: Report) {
        self.latencies_us.extend(other.latencies_us);
        for (k, v) in other.failures {
            *self.failures.entry(k).or_default() += v;
        }
    }

    pub fn per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ok() as f64 / secs
        } else {
            0.0
        }
    }

    /// The latency at quantile `q` in milliseconds (the latencies must be sorted).
    pub fn percentile(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * q).round() as usize;
        f64::from(self.latencies_us[i]) / 1000.0
    }

    pub fn cpu_per_op(&self) -> Option<f64> {
        self.cpu_us.map(|c| c as f64 / (self.ok().max(1)) as f64)
    }

    /// Prints the run: `what` names it; `extra` adds lines (text) or fields (JSON).
    pub fn print(&mut self, what: &str, extra: &[(&str, String)], json: bool) {
        self.latencies_us.sort_unstable();
        if json {
            let mut fields = vec![
                format!("\"run\": {:?}", what),
                format!("\"ok\": {}", self.ok()),
                format!("\"failed\": {}", self.failed()),
                format!("\"seconds\": {:.3}", self.elapsed.as_secs_f64()),
                format!("\"per_second\": {:.1}", self.per_second()),
                format!("\"p50_ms\": {:.3}", self.percentile(0.5)),
                format!("\"p95_ms\": {:.3}", self.percentile(0.95)),
                format!("\"p99_ms\": {:.3}", self.percentile(0.99)),
                format!("\"max_ms\": {:.3}", self.percentile(1.0)),
                format!(
                    "\"server_cpu_us_per_op\": {}",
                    self.cpu_per_op()
                        .map_or("null".to_string(), |c| format!("{c:.1}"))
                ),
            ];
            for (k, v) in extra {
                fields.push(format!("{k:?}: {v}"));
            }
            let failures: Vec<String> = self
                .failures
                .iter()
                .map(|(k, v)| format!("{k:?}: {v}"))
                .collect();
            fields.push(format!("\"failures\": {{{}}}", failures.join(", ")));
            println!("{{{}}}", fields.join(", "));
            return;
        }
        println!("{what}");
        println!(
            "  {} ok, {} failed in {:.2} s: {:.0}/s",
            self.ok(),
            self.failed(),
            self.elapsed.as_secs_f64(),
            self.per_second()
        );
        println!(
            "  latency ms: p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2}",
            self.percentile(0.5),
            self.percentile(0.95),
            self.percentile(0.99),
            self.percentile(1.0)
        );
        if let Some(c) = self.cpu_per_op() {
            println!("  server CPU per operation: {c:.0} µs");
        }
        for (k, v) in extra {
            println!("  {k}: {v}");
        }
        for (k, v) in &self.failures {
            println!("  failed: {k}: {v}");
        }
    }
}

/// `Ok` when nothing failed, otherwise the count as an error (the exit status says so).
pub(crate) fn outcome(report: &Report) -> Result<(), String> {
    match report.failed() {
        0 => Ok(()),
        n => Err(format!("{n} operations failed")),
    }
}

/// Splits `items` round-robin into `n` shares.
pub(crate) fn shares<T>(items: Vec<T>, n: usize) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = (0..n).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        out[i % n].push(item);
    }
    out
}
