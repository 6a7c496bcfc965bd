//! `estctl bench ocsp`: the OCSP path as a relying party uses it. Plain HTTP/1.1
//! keep-alive connections to the publication listener, one thread each; requests built
//! before the clock starts for the current certificates of devices in the ledger (read
//! through the operator socket) or for given serials; every answer checked (HTTP 200,
//! `application/ocsp-response`, and a response whose signature verifies with the CA
//! certificate, answers for the serial asked about, and carries the nonce when one was
//! sent; bytes identical to an answer already verified for that serial are compared
//! instead of verified again).

use std::collections::HashMap;
use std::io::BufReader;
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hsm_est_pki::ocsp::{build_request, cert_id_for, random_nonce, verify_response};
use hsm_est_proto::{DeviceFilter, OcspCertId, OcspHash, Request, Response};

use super::http::{exchange, Answer, Target};
use super::{cpu_of, outcome, shares, Report};

#[derive(clap::Args)]
pub struct OcspArgs {
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
}

pub fn run(a: OcspArgs) -> Result<(), String> {
    let hash = match a.hash.as_str() {
        "sha1" => OcspHash::Sha1,
        "sha256" => OcspHash::Sha256,
        other => return Err(format!("--hash {other:?}: sha1 or sha256")),
    };
    if a.concurrency == 0 || a.concurrency > 1000 || a.requests == 0 {
        return Err("--concurrency 1-1000 and --requests > 0".into());
    }
    let target = Target::parse(&a.url, "http")?;
    let (ca, ids) = certificates(&a.config, a.devices, &a.serials, hash)?;
    let plan = Plan {
        target,
        ca,
        ids,
        get: a.get,
        nonce: a.nonce,
    };
    let (mut report, verified) = plan.run(a.requests, a.concurrency, a.warmup, &a.pids)?;
    let what = format!(
        "ocsp {}{}: {} requests over {} connections, {} certificates",
        if plan.get { "GET" } else { "POST" },
        if plan.nonce { " with nonce" } else { "" },
        a.requests,
        a.concurrency,
        plan.ids.len()
    );
    report.print(
        &what,
        &[("signatures_verified", verified.to_string())],
        a.json,
    );
    outcome(&report)
}

/// The CA certificate and the CertIDs to ask about.
fn certificates(
    config: &std::path::Path,
    devices: u32,
    serials: &[String],
    hash: OcspHash,
) -> Result<(x509_cert::Certificate, Vec<OcspCertId>), String> {
    let cfg = crate::load(config)?;
    let ca = hsm_est_signer::ca::CaChain::load(&cfg.ca_chain_file)?.certificate;
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

impl Plan {
    fn prepare(&self, n: u64) -> Result<Vec<Prepared>, String> {
        use base64ct::{Base64, Encoding};
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n {
            let id = (i as usize) % self.ids.len();
            let nonce = self.nonce.then(random_nonce).transpose()?;
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

    /// The counted run (after the warm-up) and how many signatures were verified.
    fn run(
        &self,
        requests: u64,
        concurrency: usize,
        warmup: u64,
        pids: &[u32],
    ) -> Result<(Report, u64), String> {
        if warmup > 0 {
            let prepared = self.prepare(warmup)?;
            self.drive(prepared, concurrency);
        }
        let prepared = self.prepare(requests)?;
        let cpu_before = cpu_of(pids)?;
        let start = Instant::now();
        let (mut report, verified) = self.drive(prepared, concurrency);
        report.elapsed = start.elapsed();
        if !pids.is_empty() {
            report.cpu_us = Some(cpu_of(pids)?.saturating_sub(cpu_before));
        }
        Ok((report, verified))
    }

    /// Sends every prepared request over `concurrency` keep-alive connections.
    fn drive(&self, prepared: Vec<Prepared>, concurrency: usize) -> (Report, u64) {
        let results: Vec<(Report, u64)> = std::thread::scope(|s| {
            let handles: Vec<_> = shares(prepared, concurrency)
                .into_iter()
                .map(|share| s.spawn(move || self.worker(share)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect()
        });
        let mut total = Report::default();
        let mut verified = 0;
        for (r, v) in results {
            total.merge(r);
            verified += v;
        }
        (total, verified)
    }

    fn worker(&self, share: Vec<Prepared>) -> (Report, u64) {
        let mut report = Report::default();
        let mut verified_count = 0;
        let mut verified: HashMap<usize, Vec<u8>> = HashMap::new();
        let mut conn: Option<BufReader<TcpStream>> = None;
        for p in share {
            let start = Instant::now();
            let answer = match self.send(&mut conn, &p.bytes) {
                Ok(a) => a,
                Err(_) => {
                    // The listener ends connections after a while: one new connection.
                    conn = None;
                    match self.send(&mut conn, &p.bytes) {
                        Ok(a) => a,
                        Err(e) => {
                            conn = None;
                            report.fail(e);
                            continue;
                        }
                    }
                }
            };
            let elapsed = start.elapsed();
            match self.check(&answer, &p, &mut verified) {
                Ok(fresh) => {
                    verified_count += u64::from(fresh);
                    report
                        .latencies_us
                        .push(elapsed.as_micros().min(u32::MAX as u128) as u32);
                }
                Err(e) => report.fail(e),
            }
        }
        (report, verified_count)
    }

    /// One request on the connection (opened when needed).
    fn send(
        &self,
        conn: &mut Option<BufReader<TcpStream>>,
        bytes: &[u8],
    ) -> Result<Answer, String> {
        if conn.is_none() {
            let s = TcpStream::connect((self.target.host.as_str(), self.target.port))
                .map_err(|e| format!("connect: {}", e.kind()))?;
            let _ = s.set_nodelay(true);
            let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
            *conn = Some(BufReader::new(s));
        }
        let c = conn.as_mut().ok_or("no connection")?;
        let answer = exchange(c, bytes)?;
        if answer.close {
            *conn = None;
        }
        Ok(answer)
    }

    /// Checks an answer; true when its signature was verified (not compared).
    fn check(
        &self,
        answer: &Answer,
        p: &Prepared,
        verified: &mut HashMap<usize, Vec<u8>>,
    ) -> Result<bool, String> {
        if answer.status != 200 {
            return Err(format!("HTTP {}", answer.status));
        }
        if answer.content_type != "application/ocsp-response" {
            return Err(format!("content type {:?}", answer.content_type));
        }
        let body = &answer.body;
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
