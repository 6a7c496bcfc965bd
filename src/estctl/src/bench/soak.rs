//! `estctl bench soak`: a long run at a steady rate with the gateway's mix of operations,
//! watching the server processes' memory and file descriptors.
//!
//! - The mix, per ten operations: four bootstraps of new devices (HTTP Basic), two
//!   simpleenrolls with a device's bootstrap certificate, three simplereenrolls with its
//!   enrolled certificate (renewals with the same key, as pumps do), one cacerts. An
//!   enrolment whose device is not there yet becomes a bootstrap.
//! - Operations are released at `--rate` per second from one schedule; `--clients`
//!   threads take them in turn. Latency counts from the scheduled time, so a server that
//!   falls behind shows in the latency rather than slowing the schedule down.
//! - Client-certificate operations use a new TLS connection each, as a pump does; Basic
//!   and cacerts keep their connection alive.
//! - Every answer is checked as in `bench est`. Every issued certificate can be written to
//!   `--delivered` as it arrives (serial and DER, one per line), to be looked up in the
//!   ledger later.
//! - RSS and open file descriptors of each `--pid` are sampled through the run. The run is
//!   flat when, from the end of the first quarter to the end, RSS grew by at most a tenth
//!   (and at least 4 MiB is allowed) and descriptors by at most 16.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use super::*;

#[derive(clap::Args)]
pub struct SoakArgs {
    /// The EST base URL with its label, e.g. https://127.0.0.1:8445/.well-known/est/iqe.
    #[arg(long)]
    url: String,
    /// The CA certificate to trust and to check issued certificates with (PEM).
    #[arg(long)]
    ca: PathBuf,
    /// HTTP Basic user for bootstraps.
    #[arg(long)]
    user: String,
    /// A file holding the Basic password (its first line).
    #[arg(long)]
    password_file: PathBuf,
    /// Operations per second.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Client threads taking operations from the schedule. Each may hold two connections
    /// (its kept-alive one and a pump's), all from one address, as from one gateway: keep
    /// twice this under the frontend's `max_connections_per_address` (64).
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seconds between samples of RSS and descriptors (default: a twelfth of the run).
    #[arg(long)]
    sample_seconds: Option<u64>,
    /// CN prefix of the soak's devices (each run adds its own number).
    #[arg(long, default_value = "soak")]
    prefix: String,
    /// Server processes to watch (repeat).
    #[arg(long = "pid")]
    pids: Vec<u32>,
    /// Write every issued certificate here: hex serial, a space, base64 DER, per line.
    #[arg(long)]
    delivered: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

/// A device the soak made: its key, and its certificate once it has one.
struct Device {
    cn: String,
    pkcs8: Vec<u8>,
    csr: Vec<u8>,
    spki_der: Vec<u8>,
    cert: Vec<u8>,
}

/// Devices waiting for their next step, and what was issued.
#[derive(Default)]
struct Fleet {
    bootstrapped: Mutex<VecDeque<Device>>,
    enrolled: Mutex<VecDeque<Device>>,
    /// Where issued certificates are written as they arrive (`--delivered`).
    delivered: Option<Mutex<std::io::BufWriter<std::fs::File>>>,
    issued: AtomicU64,
    counts: Mutex<BTreeMap<&'static str, u64>>,
}

/// The enrolled devices kept for renewals: a bound on the soak's own memory.
const MAX_ENROLLED: usize = 4096;

/// One sample of one process.
#[derive(Clone, Copy)]
struct Sample {
    at_seconds: u64,
    rss_kib: u64,
    fds: u64,
}

fn sample(pid: u32, at_seconds: u64) -> Option<Sample> {
    let (_, rss_kib) = rss_kib(pid)?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(Sample {
        at_seconds,
        rss_kib,
        fds,
    })
}

pub fn run(a: SoakArgs) -> Result<(), String> {
    if a.rate == 0 || a.rate > 100_000 || a.seconds == 0 || a.clients == 0 || a.clients > 5000 {
        return Err("--rate 1-100000, --seconds > 0, --clients 1-5000".into());
    }
    let basic = basic_header(&a.user, &a.password_file)?;
    let (bench, roots) = Bench::new(&a.url, &a.ca, Op::Bootstrap, Some(basic))?;
    let keys = KeyMaker::new("p256")?;
    let fleet = Fleet {
        delivered: match &a.delivered {
            Some(path) => Some(Mutex::new(std::io::BufWriter::new(
                std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?,
            ))),
            None => None,
        },
        ..Fleet::default()
    };
    let run_id = std::process::id();
    let next = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let interval = a.sample_seconds.unwrap_or((a.seconds / 12).max(1)).max(1);
    let mut samples: BTreeMap<u32, Vec<Sample>> = BTreeMap::new();
    for pid in &a.pids {
        samples.insert(*pid, sample(*pid, 0).into_iter().collect());
    }
    // One login before the clock starts, as a gateway's first: the frontend verifies a
    // password a bounded number of times at once and then answers from its cache.
    let mut warm = None;
    one(
        &bench,
        &fleet,
        &keys,
        &roots,
        &mut warm,
        Op::Bootstrap,
        u64::MAX,
        &a.prefix,
        run_id,
    )
    .map_err(|e| format!("warm-up: {e}"))?;
    let period = Duration::from_secs_f64(1.0 / f64::from(a.rate));
    let total = a.seconds * u64::from(a.rate);
    let start = Instant::now();
    let reports: Vec<Report> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..a.clients)
            .map(|_| {
                let ctx = (&bench, &fleet, &keys, &roots, &next, &a.prefix);
                std::thread::Builder::new()
                    .stack_size(512 * 1024)
                    .spawn_scoped(s, move || {
                        let (bench, fleet, keys, roots, next, prefix) = ctx;
                        client(
                            bench, fleet, keys, roots, next, total, start, period, prefix, run_id,
                        )
                    })
            })
            .collect();
        let sampler = s.spawn(|| {
            let mut taken = BTreeMap::new();
            let mut tick = 1;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let at = start.elapsed().as_secs();
                if at >= tick * interval {
                    tick += 1;
                    for pid in &a.pids {
                        if let Some(x) = sample(*pid, at) {
                            taken.entry(*pid).or_insert_with(Vec::new).push(x);
                        }
                    }
                }
            }
            taken
        });
        let reports = workers
            .into_iter()
            .filter_map(|w| w.ok()?.join().ok())
            .collect();
        stop.store(true, Ordering::Relaxed);
        for (pid, taken) in sampler.join().unwrap_or_default() {
            samples.entry(pid).or_default().extend(taken);
        }
        reports
    });
    let elapsed = start.elapsed();
    for pid in &a.pids {
        if let Some(x) = sample(*pid, elapsed.as_secs()) {
            samples.entry(*pid).or_default().push(x);
        }
    }
    let mut report = Report {
        elapsed,
        ..Report::default()
    };
    for r in reports {
        report.merge(r);
    }
    let mut extra = vec![("rate_asked", a.rate.to_string())];
    for (op, n) in fleet.counts.lock().map(|c| c.clone()).unwrap_or_default() {
        extra.push((op, n.to_string()));
    }
    let mut flat = true;
    for (pid, series) in &samples {
        let (ok, line) = flatness(series, a.seconds);
        flat &= ok;
        extra.push(("pid", pid.to_string()));
        extra.push(("samples", format!("{line:?}")));
        extra.push(("flat", ok.to_string()));
    }
    if let Some(f) = &fleet.delivered {
        f.lock()
            .map_err(|_| "poisoned")?
            .flush()
            .map_err(|e| format!("--delivered: {e}"))?;
    }
    extra.push(("issued", fleet.issued.load(Ordering::Relaxed).to_string()));
    let what = format!(
        "soak: {} operations/s for {} s, {} clients, mixed (4 bootstrap, 2 simpleenroll, \
         3 simplereenroll, 1 cacerts in 10)",
        a.rate, a.seconds, a.clients
    );
    report.print(&what, &extra, a.json);
    outcome(&report)?;
    if !flat {
        return Err("RSS or descriptors grew during the soak".into());
    }
    Ok(())
}

/// Whether a process stayed flat from the end of the first quarter on, and its samples as
/// "seconds:RSS KiB/fds".
fn flatness(series: &[Sample], seconds: u64) -> (bool, String) {
    let line = series
        .iter()
        .map(|x| format!("{}s:{}KiB/{}fd", x.at_seconds, x.rss_kib, x.fds))
        .collect::<Vec<_>>()
        .join(" ");
    let warm = series
        .iter()
        .find(|x| x.at_seconds * 4 >= seconds)
        .or(series.first());
    let (Some(warm), Some(last)) = (warm, series.last()) else {
        return (false, line);
    };
    let rss_ok = last.rss_kib <= warm.rss_kib + (warm.rss_kib / 10).max(4096);
    let fds_ok = last.fds <= warm.fds + 16;
    (rss_ok && fds_ok, line)
}

/// The operation in slot `k` of the schedule.
fn slot(k: u64) -> Op {
    match k % 10 {
        0 | 2 | 5 | 7 => Op::Bootstrap,
        1 | 6 => Op::Enroll,
        3 | 8 | 9 => Op::Reenroll,
        _ => Op::CaCerts,
    }
}

#[allow(clippy::too_many_arguments)]
fn client(
    bench: &Bench,
    fleet: &Fleet,
    keys: &KeyMaker,
    roots: &rustls::RootCertStore,
    next: &AtomicU64,
    total: u64,
    start: Instant,
    period: Duration,
    prefix: &str,
    run_id: u32,
) -> Report {
    let mut report = Report::default();
    let mut kept: Option<BufReader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>> =
        None;
    loop {
        let k = next.fetch_add(1, Ordering::Relaxed);
        if k >= total {
            return report;
        }
        let due = start + period.mul_f64(k as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        match one(
            bench,
            fleet,
            keys,
            roots,
            &mut kept,
            slot(k),
            k,
            prefix,
            run_id,
        ) {
            Ok(()) => report
                .latencies_us
                .push(due.elapsed().as_micros().min(u32::MAX as u128) as u32),
            Err(e) => {
                kept = None;
                report.fail(e);
            }
        }
    }
}

/// Runs one operation of the mix and checks its answer.
#[allow(clippy::too_many_arguments)]
fn one(
    bench: &Bench,
    fleet: &Fleet,
    keys: &KeyMaker,
    roots: &rustls::RootCertStore,
    kept: &mut Option<BufReader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>>,
    wanted: Op,
    k: u64,
    prefix: &str,
    run_id: u32,
) -> Result<(), String> {
    let device = match wanted {
        Op::Enroll => fleet
            .bootstrapped
            .lock()
            .map_err(|_| "poisoned")?
            .pop_front(),
        Op::Reenroll => fleet.enrolled.lock().map_err(|_| "poisoned")?.pop_front(),
        _ => None,
    };
    let op = match (wanted, &device) {
        (Op::CaCerts, _) => Op::CaCerts,
        (Op::Enroll | Op::Reenroll, Some(_)) => wanted,
        _ => Op::Bootstrap,
    };
    if let Ok(mut c) = fleet.counts.lock() {
        *c.entry(op.path()).or_default() += 1;
    }
    let mut device = match device {
        Some(d) => d,
        None if op == Op::CaCerts => {
            let answer = on_kept(bench, kept, &bench.request(Op::CaCerts, None))?;
            let p = Prepared {
                bytes: vec![],
                cn: String::new(),
                spki_der: vec![],
                tls: None,
            };
            return bench.check_as(Op::CaCerts, &p, &answer);
        }
        None => {
            let cn = format!("{prefix}-{run_id}-{k}");
            let (key, pkcs8) = keys.make(0)?;
            Device {
                csr: csr(&key, &cn)?,
                spki_der: key.spki()?.to_der().map_err(|e| e.to_string())?,
                cn,
                pkcs8,
                cert: vec![],
            }
        }
    };
    let bytes = bench.request(op, Some(&device.csr));
    let answer = if op == Op::Bootstrap {
        on_kept(bench, kept, &bytes)?
    } else {
        // A pump authenticates with its own certificate, on its own connection, without
        // the gateway's password.
        let tls = client_config(roots, Some((device.cert.clone(), device.pkcs8.clone())))?;
        let mut conn = bench.connect(&tls, None)?;
        let unauthenticated = Bench {
            basic: None,
            target: bench.target.clone(),
            server_name: bench.server_name.clone(),
            tls: Arc::clone(&bench.tls),
            ca: bench.ca.clone(),
            op,
            new_connection: true,
            source_addresses: 0,
            http2: None,
        };
        exchange(&mut conn, &unauthenticated.request(op, Some(&device.csr)))?
    };
    let p = Prepared {
        bytes: vec![],
        cn: device.cn.clone(),
        spki_der: device.spki_der.clone(),
        tls: None,
    };
    bench.check_as(op, &p, &answer)?;
    device.cert = issued_certificate(&answer.body, &device.spki_der)?;
    let serial = hsm_est_pki::cert::parse_certificate(&device.cert)?
        .tbs_certificate
        .serial_number
        .as_bytes()
        .to_vec();
    fleet.issued.fetch_add(1, Ordering::Relaxed);
    if let Some(f) = &fleet.delivered {
        writeln!(
            f.lock().map_err(|_| "poisoned")?,
            "{} {}",
            hex::encode(&serial),
            <base64ct::Base64 as base64ct::Encoding>::encode_string(&device.cert)
        )
        .map_err(|e| format!("--delivered: {e}"))?;
    }
    let queue = if op == Op::Bootstrap {
        &fleet.bootstrapped
    } else {
        &fleet.enrolled
    };
    let mut q = queue.lock().map_err(|_| "poisoned")?;
    if q.len() < MAX_ENROLLED {
        q.push_back(device);
    }
    Ok(())
}

/// Sends on the kept-alive connection, reconnecting once when the server closed it.
fn on_kept(
    bench: &Bench,
    kept: &mut Option<BufReader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>>,
    bytes: &[u8],
) -> Result<Answer, String> {
    for attempt in 0..2 {
        if kept.is_none() {
            *kept = Some(bench.connect(&bench.tls, None)?);
        }
        let conn = kept.as_mut().ok_or("no connection")?;
        match exchange(conn, bytes) {
            Ok(answer) => {
                if answer.close {
                    *kept = None;
                }
                return Ok(answer);
            }
            Err(e) if attempt == 1 => return Err(e),
            Err(_) => *kept = None,
        }
    }
    Err("no answer".into())
}
