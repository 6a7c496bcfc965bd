//! `estctl bench ocsp`: the project's benchmark of the OCSP path as a relying party uses it.
//! Plain HTTP/1.1 keep-alive connections to the publication listener, one thread each;
//! requests built before the clock starts for the current certificates of devices in the
//! ledger (read through the operator socket) or for given serials; every answer checked
//! (HTTP 200, `application/ocsp-response`, and a response whose signature verifies with the
//! CA certificate, answers for the serial asked about, and carries the nonce when one was
//! sent; identical bytes already verified for that serial are compared instead of verified
//! again). Reports throughput, latency percentiles, failures by kind, and the CPU time the
//! given server processes spent per response, from /proc.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Subcommand;
use der::Encode;
use ring::rand::{SecureRandom, SystemRandom};

use hsm_est_pki::ocsp::{build_request, cert_id_for, verify_response};
use hsm_est_proto::{DeviceFilter, OcspCertId, OcspHash, Request, Response};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// OCSP answers per second from the publication listener.
    Ocsp {
        /// The responder, e.g. http://127.0.0.1:8080/ocsp.
        #[arg(long)]
        url: String,
        /// signer.yaml: the CA certificate, and the operator socket for --devices.
        #[arg(long)]
        config: PathBuf,
        /// Ask about the current certificates of up to this many devices in the ledger.
        #[arg(long, default_value_t = 100)]
        devices: u32,
        /// Ask about these serials (hex) as well.
        #[arg(long = "serial")]
        serials: Vec<String>,
        #[arg(long, default_value_t = 20_000)]
        requests: u64,
        /// Connections (one thread each).
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Requests sent (and not counted) before the clock starts: they warm the cache.
        #[arg(long, default_value_t = 500)]
        warmup: u64,
        /// GET /ocsp/{base64} (RFC 5019 style) instead of POST.
        #[arg(long)]
        get: bool,
        /// A fresh nonce in every request: every answer is signed on demand.
        #[arg(long)]
        nonce: bool,
        /// CertID hash: sha1 (OpenSSL's default) or sha256.
        #[arg(long, default_value = "sha1")]
        hash: String,
        /// Server processes whose CPU time is measured (repeat).
        #[arg(long = "pid")]
        pids: Vec<u32>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: BenchCommand) -> Result<(), String> {
    match cmd {
        BenchCommand::Ocsp {
            url,
            config,
            devices,
            serials,
            requests,
            concurrency,
            warmup,
            get,
            nonce,
            hash,
            pids,
            json,
        } => {
            let hash = match hash.as_str() {
                "sha1" => OcspHash::Sha1,
                "sha256" => OcspHash::Sha256,
                other => return Err(format!("--hash {other:?}: sha1 or sha256")),
            };
            let target = Target::parse(&url)?;
            let (ca, ids) = certificates(&config, devices, &serials, hash)?;
            if concurrency == 0 || concurrency > 1000 || requests == 0 {
                return Err("--concurrency 1-1000 and --requests > 0".into());
            }
            let plan = Plan {
                target,
                ca,
                ids,
                get,
                nonce,
            };
            let report = plan.run(requests, concurrency, warmup, &pids)?;
            report.print(&plan, requests, concurrency, json);
            if report.failures.is_empty() {
                Ok(())
            } else {
                Err(format!("{} answers failed", report.failed()))
            }
        }
    }
}

struct Target {
    host: String,
    port: u16,
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or("--url must be http://HOST:PORT/PATH")?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or("--url needs an explicit port")?;
        Ok(Target {
            host: host.to_string(),
            port: port.parse().map_err(|_| "bad port in --url")?,
            path: format!("/{path}"),
        })
    }
}

/// The CA certificate and the CertIDs to ask about.
fn certificates(
    config: &std::path::Path,
    devices: u32,
    serials: &[String],
    hash: OcspHash,
) -> Result<(x509_cert::Certificate, Vec<OcspCertId>), String> {
    let cfg = crate::load(config)?;
    let chain = std::fs::read_to_string(&cfg.ca_chain_file)
        .map_err(|e| format!("{}: {e}", cfg.ca_chain_file.display()))?;
    let ca_der = hsm_est_pki::pem_certificates(&chain)?
        .into_iter()
        .next()
        .ok_or("no CA certificate")?;
    let ca = hsm_est_pki::cert::parse_certificate(&ca_der)?;
    let mut wanted: Vec<Vec<u8>> = Vec::new();
    for s in serials {
        wanted.push(hex::decode(s.trim()).map_err(|_| format!("--serial {s:?} is not hex"))?);
    }
    if devices > 0 {
        let mut client = crate::connect(config)?;
        let mut after = String::new();
        while (wanted.len() as u32) < devices + serials.len() as u32 {
            let Response::Devices {
                devices: page,
                more,
            } = crate::call(
                &mut client,
                &Request::DeviceList {
                    after: after.clone(),
                    limit: 500,
                    filter: DeviceFilter::default(),
                },
            )?
            else {
                return Err("unexpected answer from the signer".into());
            };
            for d in &page {
                if !d.current_serial.is_empty() && (wanted.len() as u32) < devices {
                    wanted.push(d.current_serial.clone());
                }
            }
            match page.last() {
                Some(last) if more => after = last.cn.clone(),
                _ => break,
            }
        }
    }
    if wanted.is_empty() {
        return Err("no certificate to ask about: enrol devices or give --serial".into());
    }
    let ids = wanted
        .iter()
        .map(|s| cert_id_for(hash, &ca, s))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((ca, ids))
}

struct Plan {
    target: Target,
    ca: x509_cert::Certificate,
    ids: Vec<OcspCertId>,
    get: bool,
    nonce: bool,
}

/// One prepared request: the HTTP bytes, which CertID it asks about, and its nonce.
struct Prepared {
    bytes: Vec<u8>,
    id: usize,
    nonce: Option<Vec<u8>>,
}

#[derive(Default)]
struct Report {
    latencies_us: Vec<u32>,
    failures: BTreeMap<String, u64>,
    verified: u64,
    elapsed: Duration,
    cpu_us: Option<u64>,
}

impl Report {
    fn failed(&self) -> u64 {
        self.failures.values().sum()
    }
}

/// utime + stime of a process in microseconds (/proc counts in USER_HZ, 100 on Linux).
fn cpu_us(pid: u32) -> Result<u64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("pid {pid}: {e}"))?;
    // The command may hold spaces: fields count from after the closing parenthesis.
    let after = stat.rsplit_once(')').ok_or("bad /proc stat")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15; after ") " field 3 is index 0.
    Ok((ticks(11) + ticks(12)) * 10_000)
}

impl Plan {
    fn prepare(&self, n: u64, rng: &SystemRandom) -> Result<Vec<Prepared>, String> {
        use base64ct::{Base64, Encoding};
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n {
            let id = (i as usize) % self.ids.len();
            let nonce = if self.nonce {
                let mut b = [0u8; 16];
                rng.fill(&mut b).map_err(|_| "no randomness")?;
                Some(
                    der::asn1::OctetString::new(b.to_vec())
                        .and_then(|o| o.to_der())
                        .map_err(|e| e.to_string())?,
                )
            } else {
                None
            };
            let der = build_request(std::slice::from_ref(&self.ids[id]), nonce.as_deref())
                .map_err(|e| e.to_string())?;
            let host = format!("{}:{}", self.target.host, self.target.port);
            let bytes = if self.get {
                let b64: String = Base64::encode_string(&der)
                    .chars()
                    .map(|c| match c {
                        '+' => "%2B".to_string(),
                        '/' => "%2F".to_string(),
                        '=' => "%3D".to_string(),
                        c => c.to_string(),
                    })
                    .collect();
                format!(
                    "GET {}/{b64} HTTP/1.1\r\nHost: {host}\r\n\r\n",
                    self.target.path.trim_end_matches('/')
                )
                .into_bytes()
            } else {
                let mut b = format!(
                    "POST {} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/ocsp-request\r\nContent-Length: {}\r\n\r\n",
                    self.target.path,
                    der.len()
                )
                .into_bytes();
                b.extend_from_slice(&der);
                b
            };
            out.push(Prepared { bytes, id, nonce });
        }
        Ok(out)
    }

    fn run(
        &self,
        requests: u64,
        concurrency: usize,
        warmup: u64,
        pids: &[u32],
    ) -> Result<Report, String> {
        let rng = SystemRandom::new();
        // Warm-up: the same connections' worth of requests, not counted.
        if warmup > 0 {
            let prepared = self.prepare(warmup, &rng)?;
            self.drive(prepared, concurrency);
        }
        let prepared = self.prepare(requests, &rng)?;
        let cpu_before: Vec<u64> = pids.iter().map(|p| cpu_us(*p)).collect::<Result<_, _>>()?;
        let start = Instant::now();
        let mut report = self.drive(prepared, concurrency);
        report.elapsed = start.elapsed();
        if !pids.is_empty() {
            let after: Vec<u64> = pids.iter().map(|p| cpu_us(*p)).collect::<Result<_, _>>()?;
            report.cpu_us = Some(after.iter().zip(&cpu_before).map(|(a, b)| a - b).sum());
        }
        report.latencies_us.sort_unstable();
        Ok(report)
    }

    /// Sends every prepared request over `concurrency` keep-alive connections.
    fn drive(&self, prepared: Vec<Prepared>, concurrency: usize) -> Report {
        let mut shares: Vec<Vec<Prepared>> = (0..concurrency).map(|_| Vec::new()).collect();
        for (i, p) in prepared.into_iter().enumerate() {
            shares[i % concurrency].push(p);
        }
        let reports: Vec<Report> = std::thread::scope(|s| {
            let handles: Vec<_> = shares
                .into_iter()
                .map(|share| s.spawn(move || self.worker(share)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect()
        });
        let mut total = Report::default();
        for r in reports {
            total.latencies_us.extend(r.latencies_us);
            total.verified += r.verified;
            for (k, v) in r.failures {
                *total.failures.entry(k).or_default() += v;
            }
        }
        total
    }

    fn worker(&self, share: Vec<Prepared>) -> Report {
        let mut report = Report::default();
        let mut verified: HashMap<usize, Vec<u8>> = HashMap::new();
        let mut conn: Option<BufReader<TcpStream>> = None;
        for p in share {
            let start = Instant::now();
            let answer = match self.exchange(&mut conn, &p.bytes) {
                Ok(a) => a,
                Err(_) => {
                    // The listener ends connections after a while: one new connection.
                    conn = None;
                    match self.exchange(&mut conn, &p.bytes) {
                        Ok(a) => a,
                        Err(e) => {
                            conn = None;
                            *report.failures.entry(e).or_default() += 1;
                            continue;
                        }
                    }
                }
            };
            let elapsed = start.elapsed();
            match self.check(&answer, &p, &mut verified) {
                Ok(fresh) => {
                    report.verified += u64::from(fresh);
                    report
                        .latencies_us
                        .push(elapsed.as_micros().min(u32::MAX as u128) as u32);
                }
                Err(e) => *report.failures.entry(e).or_default() += 1,
            }
        }
        report
    }

    /// One request and its answer on the connection (opened when needed).
    fn exchange(
        &self,
        conn: &mut Option<BufReader<TcpStream>>,
        bytes: &[u8],
    ) -> Result<(u16, String, Vec<u8>, bool), String> {
        if conn.is_none() {
            let s = TcpStream::connect((self.target.host.as_str(), self.target.port))
                .map_err(|e| format!("connect: {}", e.kind()))?;
            let _ = s.set_nodelay(true);
            let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
            *conn = Some(BufReader::new(s));
        }
        let c = conn.as_mut().ok_or("no connection")?;
        c.get_mut()
            .write_all(bytes)
            .map_err(|e| format!("write: {}", e.kind()))?;
        let mut line = String::new();
        c.read_line(&mut line)
            .map_err(|e| format!("read: {}", e.kind()))?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or("closed or not HTTP")?;
        let (mut len, mut ctype, mut close) = (0usize, String::new(), false);
        loop {
            line.clear();
            c.read_line(&mut line)
                .map_err(|e| format!("read: {}", e.kind()))?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let v = v.trim();
                match k.to_ascii_lowercase().as_str() {
                    "content-length" => len = v.parse().map_err(|_| "bad content-length")?,
                    "content-type" => ctype = v.to_string(),
                    "connection" => close = v.eq_ignore_ascii_case("close"),
                    _ => {}
                }
            }
        }
        let mut body = vec![0u8; len];
        c.read_exact(&mut body)
            .map_err(|e| format!("read: {}", e.kind()))?;
        if close {
            *conn = None;
        }
        Ok((status, ctype, body, close))
    }

    /// Checks an answer; true when its signature was verified (not compared).
    fn check(
        &self,
        (status, ctype, body, _): &(u16, String, Vec<u8>, bool),
        p: &Prepared,
        verified: &mut HashMap<usize, Vec<u8>>,
    ) -> Result<bool, String> {
        if *status != 200 {
            return Err(format!("HTTP {status}"));
        }
        if ctype != "application/ocsp-response" {
            return Err(format!("content type {ctype:?}"));
        }
        if p.nonce.is_none() && verified.get(&p.id) == Some(body) {
            return Ok(false);
        }
        let v = verify_response(body, &self.ca).map_err(|e| {
            if e.starts_with("response status") {
                e
            } else {
                "response does not verify".to_string()
            }
        })?;
        if v.nonce != p.nonce {
            return Err("nonce not echoed".into());
        }
        if v.singles.len() != 1 || v.singles[0].cert_id != self.ids[p.id] {
            return Err("answers for another certificate".into());
        }
        if p.nonce.is_none() {
            verified.insert(p.id, body.clone());
        }
        Ok(true)
    }
}

impl Report {
    fn percentile(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * q).round() as usize;
        f64::from(self.latencies_us[i]) / 1000.0
    }

    fn print(&self, plan: &Plan, requests: u64, concurrency: usize, json: bool) {
        let ok = self.latencies_us.len() as f64;
        let secs = self.elapsed.as_secs_f64();
        let rate = if secs > 0.0 { ok / secs } else { 0.0 };
        let cpu_per = self.cpu_us.map(|c| c as f64 / ok.max(1.0));
        let mode = format!(
            "{}{}",
            if plan.get { "GET" } else { "POST" },
            if plan.nonce { " with nonce" } else { "" }
        );
        if json {
            let failures: Vec<String> = self
                .failures
                .iter()
                .map(|(k, v)| format!("{:?}: {v}", k))
                .collect();
            println!(
                "{{\"operation\": \"ocsp\", \"mode\": \"{mode}\", \"requests\": {requests}, \
                 \"concurrency\": {concurrency}, \"certificates\": {}, \"ok\": {}, \
                 \"seconds\": {secs:.3}, \"per_second\": {rate:.1}, \"p50_ms\": {:.3}, \
                 \"p95_ms\": {:.3}, \"p99_ms\": {:.3}, \"max_ms\": {:.3}, \
                 \"signatures_verified\": {}, \"server_cpu_us_per_op\": {}, \
                 \"failures\": {{{}}}}}",
                plan.ids.len(),
                ok as u64,
                self.percentile(0.5),
                self.percentile(0.95),
                self.percentile(0.99),
                self.percentile(1.0),
                self.verified,
                cpu_per.map_or("null".to_string(), |c| format!("{c:.1}")),
                failures.join(", ")
            );
            return;
        }
        println!(
            "ocsp {mode}: {requests} requests over {concurrency} connections, {} certificates",
            plan.ids.len()
        );
        println!("  {} ok in {secs:.2} s: {rate:.0} responses/s", ok as u64);
        println!(
            "  latency ms: p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2}",
            self.percentile(0.5),
            self.percentile(0.95),
            self.percentile(0.99),
            self.percentile(1.0)
        );
        println!(
            "  signatures verified: {} (the rest compared with verified bytes)",
            self.verified
        );
        if let Some(c) = cpu_per {
            println!("  server CPU per response: {c:.0} µs");
        }
        for (k, v) in &self.failures {
            println!("  failed: {k}: {v}");
        }
    }
}
