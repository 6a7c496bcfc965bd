//! `estctl bench est`: enrolments and cacerts as the IQE gateway drives them, over TLS with
//! the rustls client and HTTP/1.1.
//!
//! - Before the clock starts: a distinct key and CSR per enrolment (P-256 or P-384 made
//!   here; RSA-2048 CSRs signed with a pool of eight keys from `openssl genpkey`, since
//!   generating one RSA key per request would take minutes), the HTTP request bytes, and
//!   with `--client-cert` the devices' own certificates (bootstrapped, and enrolled for
//!   `simplereenroll`) with a TLS client configuration each.
//! - During the run: `--concurrency` threads, each on one kept-alive connection, or a new
//!   connection per request (`--new-connection`, and always with client certificates: each
//!   device authenticates as itself). Answers are kept, not checked, so that checking does
//!   not take the appliance's cores.
//! - After the clock stops: every answer is checked: 200, a certs-only CMS whose
//!   certificate verifies with the CA, names the requested CN and carries the CSR's key
//!   (for cacerts: holds the CA certificate). Anything else is a failure, by status or by
//!   what was wrong.

use std::io::BufReader;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use der::{Decode, Encode};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, RsaKeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use x509_cert::request::{CertReqInfo, Version};

use hsm_est_pki::cert::assemble_signed;
use hsm_est_pki::keys::SignatureAlgorithm;
use hsm_est_pki::{name, oid};

#[path = "soak.rs"]
pub mod soak;

use super::http::{exchange, Answer, Target};
use super::{cpu_of, outcome, rss_kib, shares, Report};

#[derive(clap::Args)]
pub struct EstArgs {
    /// The EST base URL with its label, e.g. https://127.0.0.1:8445/.well-known/est/iqe.
    #[arg(long)]
    url: String,
    /// The CA certificate to trust and to check issued certificates with (PEM).
    #[arg(long)]
    ca: PathBuf,
    /// bootstrap, simpleenroll, simplereenroll or cacerts.
    #[arg(long, default_value = "bootstrap")]
    operation: String,
    /// HTTP Basic user (bootstrap, and simpleenroll of new devices; also the set-up of
    /// --client-cert runs).
    #[arg(long)]
    user: Option<String>,
    /// A file holding the Basic password (its first line).
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// Authenticate each enrolment with the device's own certificate, as pumps do:
    /// simpleenroll with the bootstrap certificate, simplereenroll with the enrolled one
    /// (both made with Basic before the clock starts). One connection per request.
    #[arg(long)]
    client_cert: bool,
    #[arg(long, default_value_t = 2000)]
    requests: u64,
    /// Clients at once (one thread and connection each).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// A new TLS connection for every request instead of keep-alive.
    #[arg(long)]
    new_connection: bool,
    /// HTTP/2 (ALPN h2) instead of HTTP/1.1: --concurrency streams at once, multiplexed
    /// over --connections connections (or a new connection per request).
    #[arg(long)]
    http2: bool,
    /// With --http2: the connections the streams share.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Spread the clients over this many loopback source addresses (127.0.X.Y from
    /// 127.0.0.2), as that many gateways would come from their own addresses; the
    /// frontend caps connections per address (`server.max_connections_per_address`).
    /// Only for a loopback target. 0: the system's choice.
    #[arg(long, default_value_t = 0)]
    source_addresses: u32,
    /// Device keys: p256, p384 or rsa2048.
    #[arg(long, default_value = "p256")]
    key: String,
    /// CN prefix of the benchmark's devices (lower case; each run adds its own number).
    #[arg(long, default_value = "bench")]
    prefix: String,
    /// Server processes whose CPU time and memory are measured (repeat).
    #[arg(long = "pid")]
    pids: Vec<u32>,
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Bootstrap,
    Enroll,
    Reenroll,
    CaCerts,
}

impl Op {
    fn path(self) -> &'static str {
        match self {
            Op::Bootstrap => "bootstrap",
            Op::Enroll => "simpleenroll",
            Op::Reenroll => "simplereenroll",
            Op::CaCerts => "cacerts",
        }
    }
}

/// A device key and how its CSR is signed.
enum DeviceKey {
    Ec(
        Box<EcdsaKeyPair>,
        SignatureAlgorithm,
        der::asn1::ObjectIdentifier,
    ),
    Rsa(Arc<RsaKeyPair>),
}

impl DeviceKey {
    fn spki(&self) -> Result<spki::SubjectPublicKeyInfoOwned, String> {
        let (algorithm, bits) = match self {
            DeviceKey::Ec(pair, _, curve) => (
                spki::AlgorithmIdentifierOwned {
                    oid: oid::EC_PUBLIC_KEY,
                    parameters: Some(der::asn1::Any::from(curve)),
                },
                pair.public_key().as_ref().to_vec(),
            ),
            DeviceKey::Rsa(pair) => (
                spki::AlgorithmIdentifierOwned {
                    oid: oid::RSA_ENCRYPTION,
                    parameters: Some(der::asn1::Null.into()),
                },
                pair.public_key().as_ref().to_vec(),
            ),
        };
        Ok(spki::SubjectPublicKeyInfoOwned {
            algorithm,
            subject_public_key: der::asn1::BitString::from_bytes(&bits)
                .map_err(|e| e.to_string())?,
        })
    }

    fn sign(&self, msg: &[u8]) -> Result<(SignatureAlgorithm, Vec<u8>), String> {
        let rng = SystemRandom::new();
        match self {
            DeviceKey::Ec(pair, alg, _) => Ok((
                *alg,
                pair.sign(&rng, msg).map_err(|_| "sign")?.as_ref().to_vec(),
            )),
            DeviceKey::Rsa(pair) => {
                let mut sig = vec![0u8; pair.public().modulus_len()];
                pair.sign(&ring::signature::RSA_PKCS1_SHA256, &rng, msg, &mut sig)
                    .map_err(|_| "sign")?;
                Ok((SignatureAlgorithm::RsaPkcs1Sha256, sig))
            }
        }
    }
}

/// Makes device keys of one kind; returns each key with its PKCS#8 DER.
struct KeyMaker {
    kind: String,
    rsa_pool: Vec<(Arc<RsaKeyPair>, Vec<u8>)>,
}

impl KeyMaker {
    fn new(kind: &str) -> Result<KeyMaker, String> {
        let mut rsa_pool = Vec::new();
        match kind {
            "p256" | "p384" => {}
            "rsa2048" => {
                let dir = std::env::temp_dir().join(format!("estctl-bench-{}", std::process::id()));
                std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                for i in 0..8 {
                    // PEM: PKCS#8 (the DER form is PKCS#1, which rustls and ring take
                    // only by another name).
                    let file = dir.join(format!("rsa-{i}.pem"));
                    let out = std::process::Command::new("openssl")
                        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt"])
                        .args(["rsa_keygen_bits:2048", "-out"])
                        .arg(&file)
                        .output()
                        .map_err(|e| format!("openssl: {e}"))?;
                    if !out.status.success() {
                        return Err("openssl genpkey failed".into());
                    }
                    let pem = std::fs::read(&file).map_err(|e| e.to_string())?;
                    let (_, der) = der::pem::decode_vec(&pem).map_err(|e| e.to_string())?;
                    let pair = RsaKeyPair::from_pkcs8(&der).map_err(|e| e.to_string())?;
                    rsa_pool.push((Arc::new(pair), der));
                }
                let _ = std::fs::remove_dir_all(&dir);
            }
            other => return Err(format!("--key {other:?}: p256, p384 or rsa2048")),
        }
        Ok(KeyMaker {
            kind: kind.to_string(),
            rsa_pool,
        })
    }

    fn make(&self, i: usize) -> Result<(DeviceKey, Vec<u8>), String> {
        let rng = SystemRandom::new();
        let (alg, sig_alg, curve) = match self.kind.as_str() {
            "p256" => (
                &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                SignatureAlgorithm::EcdsaSha256,
                oid::SECP256R1,
            ),
            "p384" => (
                &ring::signature::ECDSA_P384_SHA384_ASN1_SIGNING,
                SignatureAlgorithm::EcdsaSha384,
                oid::SECP384R1,
            ),
            _ => {
                let (pair, der) = &self.rsa_pool[i % self.rsa_pool.len()];
                return Ok((DeviceKey::Rsa(Arc::clone(pair)), der.clone()));
            }
        };
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).map_err(|_| "key generation")?;
        let pair =
            EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).map_err(|_| "key generation")?;
        Ok((
            DeviceKey::Ec(Box::new(pair), sig_alg, curve),
            pkcs8.as_ref().to_vec(),
        ))
    }
}

/// A PKCS#10 CSR for `cn` signed by `key` (DER).
fn csr(key: &DeviceKey, cn: &str) -> Result<Vec<u8>, String> {
    let info = CertReqInfo {
        version: Version::V1,
        subject: name::make_name(&[(oid::AT_COMMON_NAME, cn.to_string())])?,
        public_key: key.spki()?,
        attributes: der::asn1::SetOfVec::new(),
    };
    let info_der = info.to_der().map_err(|e| e.to_string())?;
    let (alg, sig) = key.sign(&info_der)?;
    assemble_signed(&info_der, alg, &sig).map_err(|e| e.to_string())
}

/// One prepared request and what its answer must show.
struct Prepared {
    bytes: Vec<u8>,
    cn: String,
    spki_der: Vec<u8>,
    /// The device's own TLS client configuration (client-certificate runs).
    tls: Option<Arc<rustls::ClientConfig>>,
}

struct Bench {
    target: Target,
    server_name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
    ca: x509_cert::Certificate,
    op: Op,
    basic: Option<String>,
    new_connection: bool,
    source_addresses: u32,
    /// `Some(connections)`: HTTP/2 over that many connections.
    http2: Option<usize>,
}

/// The `i`-th of `n` loopback source addresses: 127.0.0.2, 127.0.0.3, … 127.0.0.251,
/// 127.0.1.2, …
fn source_address(i: usize, n: u32) -> Option<std::net::Ipv4Addr> {
    if n == 0 {
        return None;
    }
    let k = (i as u32) % n;
    Some(std::net::Ipv4Addr::new(
        127,
        0,
        (k / 250) as u8,
        (2 + k % 250) as u8,
    ))
}

/// A TCP connection to `to` from the address `from` (port chosen by the system).
fn tcp_from(from: std::net::Ipv4Addr, to: std::net::SocketAddr) -> std::io::Result<TcpStream> {
    use nix::sys::socket::SockaddrIn;
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType};
    let std::net::SocketAddr::V4(to) = to else {
        return Err(std::io::ErrorKind::Unsupported.into());
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    bind(raw, &SockaddrIn::from(std::net::SocketAddrV4::new(from, 0)))?;
    connect(raw, &SockaddrIn::from(to))?;
    Ok(TcpStream::from(fd))
}

fn roots(ca: &Path) -> Result<rustls::RootCertStore, String> {
    let text = std::fs::read_to_string(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for der in hsm_est_pki::pem_certificates(&text)? {
        roots
            .add(CertificateDer::from(der))
            .map_err(|e| e.to_string())?;
    }
    Ok(roots)
}

fn client_config(
    roots: &rustls::RootCertStore,
    client: Option<(Vec<u8>, Vec<u8>)>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots.clone());
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(cert)],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
            )
            .map_err(|e| e.to_string())?,
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

pub fn run(a: EstArgs) -> Result<(), String> {
    let op = match a.operation.as_str() {
        "bootstrap" => Op::Bootstrap,
        "simpleenroll" => Op::Enroll,
        "simplereenroll" => Op::Reenroll,
        "cacerts" => Op::CaCerts,
        other => return Err(format!("--operation {other:?}")),
    };
    if a.concurrency == 0 || a.concurrency > 5000 || a.requests == 0 {
        return Err("--concurrency 1-5000 and --requests > 0".into());
    }
    if op == Op::Reenroll && !a.client_cert {
        return Err("simplereenroll needs --client-cert (the device's current certificate)".into());
    }
    let basic = match (&a.user, &a.password_file) {
        (Some(u), Some(f)) => Some(basic_header(u, f)?),
        (None, None) => None,
        _ => return Err("give --user with --password-file".into()),
    };
    let (mut bench, roots) = Bench::new(&a.url, &a.ca, op, basic)?;
    bench.new_connection = a.new_connection || a.client_cert;
    bench.source_addresses = a.source_addresses;
    bench.http2 = a.http2.then_some(a.connections.max(1));
    let run_id = std::process::id();
    let prepared = bench.prepare(&a, &roots, run_id)?;
    let cpu_before = cpu_of(&a.pids)?;
    let start = Instant::now();
    let answers = bench.drive(prepared, a.concurrency);
    let elapsed = start.elapsed();
    let cpu = if a.pids.is_empty() {
        None
    } else {
        Some(cpu_of(&a.pids)?.saturating_sub(cpu_before))
    };
    // Checked now that the clock has stopped.
    let mut report = Report {
        elapsed,
        cpu_us: cpu,
        ..Report::default()
    };
    for (p, result) in answers {
        match result.and_then(|(answer, latency)| bench.check(&p, &answer).map(|()| latency)) {
            Ok(latency) => report
                .latencies_us
                .push(latency.as_micros().min(u32::MAX as u128) as u32),
            Err(e) => report.fail(e),
        }
    }
    let mut extra = vec![("operation", format!("{:?}", op.path()))];
    for pid in &a.pids {
        if let Some((peak, now)) = rss_kib(*pid) {
            extra.push(("pid", pid.to_string()));
            extra.push(("rss_peak_kib", peak.to_string()));
            extra.push(("rss_kib", now.to_string()));
        }
    }
    let what = format!(
        "est {} ({} keys, {}{}): {} requests, {} clients",
        op.path(),
        a.key,
        if a.client_cert {
            "client certificates"
        } else {
            "Basic"
        },
        match (bench.http2, bench.new_connection) {
            (Some(_), true) => ", HTTP/2, a new connection each".to_string(),
            (Some(c), false) => format!(", HTTP/2 over {c} connection(s)"),
            (None, true) => ", a new connection each".to_string(),
            (None, false) => ", keep-alive".to_string(),
        },
        a.requests,
        a.concurrency
    );
    report.print(&what, &extra, a.json);
    outcome(&report)
}

type Outcome = Result<(Answer, Duration), String>;

/// The Basic authorization value for `user` and the first line of `password_file`.
fn basic_header(user: &str, password_file: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(password_file)
        .map_err(|e| format!("{}: {e}", password_file.display()))?;
    let password = text.lines().next().unwrap_or("");
    Ok(<base64ct::Base64 as base64ct::Encoding>::encode_string(
        format!("{user}:{password}").as_bytes(),
    ))
}

impl Bench {
    /// A keep-alive HTTP/1.1 benchmark of `op` against `url`, trusting and checking with the
    /// first certificate of `ca`; also the trust roots, for client configurations.
    fn new(
        url: &str,
        ca: &Path,
        op: Op,
        basic: Option<String>,
    ) -> Result<(Bench, rustls::RootCertStore), String> {
        let target = Target::parse(url, "https")?;
        let roots = roots(ca)?;
        let ca_text = std::fs::read_to_string(ca).map_err(|e| e.to_string())?;
        let ca_der = hsm_est_pki::pem_certificates(&ca_text)?
            .into_iter()
            .next()
            .ok_or("no certificate in --ca")?;
        let bench = Bench {
            server_name: ServerName::try_from(target.host.clone()).map_err(|e| e.to_string())?,
            target,
            tls: client_config(&roots, None)?,
            ca: hsm_est_pki::cert::parse_certificate(&ca_der)?,
            op,
            basic,
            new_connection: false,
            source_addresses: 0,
            http2: None,
        };
        Ok((bench, roots))
    }

    fn request(&self, op: Op, body: Option<&[u8]>) -> Vec<u8> {
        let host = format!("{}:{}", self.target.host, self.target.port);
        let path = format!("{}/{}", self.target.path, op.path());
        let auth = self
            .basic
            .as_ref()
            .filter(|_| body.is_some())
            .map(|b| format!("Authorization: Basic {b}\r\n"))
            .unwrap_or_default();
        match body {
            None => format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes(),
            Some(b) => {
                let mut r = format!(
                    "POST {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: application/pkcs10\r\nContent-Length: {}\r\n\r\n",
                    b.len()
                )
                .into_bytes();
                r.extend_from_slice(b);
                r
            }
        }
    }

    /// Everything the run sends, made before the clock starts.
    fn prepare(
        &self,
        a: &EstArgs,
        roots: &rustls::RootCertStore,
        run_id: u32,
    ) -> Result<Vec<Prepared>, String> {
        let n = a.requests as usize;
        if self.op == Op::CaCerts {
            return Ok((0..n)
                .map(|_| Prepared {
                    bytes: self.request(Op::CaCerts, None),
                    cn: String::new(),
                    spki_der: vec![],
                    tls: None,
                })
                .collect());
        }
        let keys = KeyMaker::new(&a.key)?;
        if self.basic.is_some() {
            // One authenticated request first, as a gateway's first login: the frontend
            // verifies a password once (Argon2, a bounded number at a time) and then
            // answers from its verification cache.
            let (key, _) = keys.make(0)?;
            let cn = format!("{}-{run_id}-warm", a.prefix);
            let warm = Prepared {
                bytes: self.request(Op::Bootstrap, Some(&csr(&key, &cn)?)),
                cn,
                spki_der: key.spki()?.to_der().map_err(|e| e.to_string())?,
                tls: None,
            };
            for (p, result) in self.drive(vec![warm], 1) {
                let (answer, _) = result.map_err(|e| format!("warm-up: {e}"))?;
                self.check_as(Op::Bootstrap, &p, &answer)
                    .map_err(|e| format!("warm-up: {e}"))?;
            }
        }
        let mut devices = Vec::with_capacity(n);
        for i in 0..n {
            let cn = format!("{}-{run_id}-{i}", a.prefix);
            let (key, pkcs8) = keys.make(i)?;
            let csr = csr(&key, &cn)?;
            let spki_der = key.spki()?.to_der().map_err(|e| e.to_string())?;
            devices.push((cn, csr, pkcs8, spki_der));
        }
        if !a.client_cert {
            return Ok(devices
                .into_iter()
                .map(|(cn, csr, _, spki_der)| Prepared {
                    bytes: self.request(self.op, Some(&csr)),
                    cn,
                    spki_der,
                    tls: None,
                })
                .collect());
        }
        // The devices' own certificates: bootstrap (and enrol, for a re-enrolment run)
        // with Basic, over kept-alive connections, before the clock starts.
        if self.basic.is_none() {
            return Err("--client-cert runs bootstrap the devices first: give --user".into());
        }
        let mut steps = vec![Op::Bootstrap];
        if self.op == Op::Reenroll {
            steps.push(Op::Enroll);
        }
        let mut certs: Vec<Option<Vec<u8>>> = vec![None; n];
        for step in steps {
            let setup = Bench {
                op: step,
                new_connection: step != Op::Bootstrap,
                source_addresses: self.source_addresses,
                http2: None,
                target: self.target.clone(),
                server_name: self.server_name.clone(),
                tls: Arc::clone(&self.tls),
                ca: self.ca.clone(),
                basic: self.basic.clone().filter(|_| step == Op::Bootstrap),
            };
            let work: Vec<Prepared> = devices
                .iter()
                .zip(&certs)
                .map(|((cn, csr, pkcs8, spki_der), cert)| {
                    Ok(Prepared {
                        bytes: setup.request(step, Some(csr)),
                        cn: cn.clone(),
                        spki_der: spki_der.clone(),
                        tls: match cert {
                            Some(c) => {
                                Some(client_config(roots, Some((c.clone(), pkcs8.clone())))?)
                            }
                            None => None,
                        },
                    })
                })
                .collect::<Result<_, String>>()?;
            let answers = setup.drive(work, a.concurrency.min(64));
            // Answers come back in the threads' order: find each device by its CN.
            let index: std::collections::HashMap<&str, usize> = devices
                .iter()
                .enumerate()
                .map(|(i, (cn, ..))| (cn.as_str(), i))
                .collect();
            for (p, result) in answers {
                let i = *index.get(p.cn.as_str()).ok_or("an answer for no device")?;
                let (answer, _) = result.map_err(|e| format!("set-up {}: {e}", step.path()))?;
                setup
                    .check(&p, &answer)
                    .map_err(|e| format!("set-up {}: {e}", step.path()))?;
                certs[i] = Some(issued_certificate(&answer.body, &p.spki_der)?);
            }
        }
        devices
            .into_iter()
            .zip(certs)
            .map(|((cn, csr, pkcs8, spki_der), cert)| {
                let cert = cert.ok_or("a device without a certificate")?;
                Ok(Prepared {
                    bytes: self.request(self.op, Some(&csr)),
                    cn,
                    spki_der,
                    tls: Some(client_config(roots, Some((cert, pkcs8)))?),
                })
            })
            .collect()
    }

    /// Sends every request over `concurrency` threads; answers come back in the order
    /// of `prepared`'s shares (each with its request).
    fn drive(&self, prepared: Vec<Prepared>, concurrency: usize) -> Vec<(Prepared, Outcome)> {
        if let Some(connections) = self.http2 {
            let work = prepared
                .iter()
                .map(|p| super::h2::Work {
                    raw: p.bytes.clone(),
                    tls: Arc::clone(p.tls.as_ref().unwrap_or(&self.tls)),
                })
                .collect();
            let shape = super::h2::Shape {
                streams: concurrency,
                connections,
                new_connection: self.new_connection,
            };
            let outcomes = super::h2::drive(&self.target, &self.server_name, work, shape);
            return prepared.into_iter().zip(outcomes).collect();
        }
        let concurrency = concurrency.min(prepared.len()).max(1);
        std::thread::scope(|s| {
            let handles: Vec<_> = shares(prepared, concurrency)
                .into_iter()
                .enumerate()
                .map(|(i, share)| {
                    let from = source_address(i, self.source_addresses);
                    std::thread::Builder::new()
                        .stack_size(256 * 1024)
                        .spawn_scoped(s, move || self.worker(share, from))
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| match h {
                    Ok(h) => h.join().unwrap_or_default(),
                    Err(_) => Vec::new(),
                })
                .collect()
        })
    }

    fn connect(
        &self,
        tls: &Arc<rustls::ClientConfig>,
        from: Option<std::net::Ipv4Addr>,
    ) -> Result<BufReader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>, String> {
        let tcp = match from {
            None => TcpStream::connect((self.target.host.as_str(), self.target.port)),
            Some(from) => std::net::ToSocketAddrs::to_socket_addrs(&(
                self.target.host.as_str(),
                self.target.port,
            ))
            .and_then(|mut a| a.next().ok_or(std::io::ErrorKind::NotFound.into()))
            .and_then(|to| tcp_from(from, to)),
        }
        .map_err(|e| format!("connect: {}", e.kind()))?;
        let _ = tcp.set_nodelay(true);
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(60)));
        let conn = rustls::ClientConnection::new(Arc::clone(tls), self.server_name.clone())
            .map_err(|e| format!("tls: {e}"))?;
        Ok(BufReader::new(rustls::StreamOwned::new(conn, tcp)))
    }

    fn worker(
        &self,
        share: Vec<Prepared>,
        from: Option<std::net::Ipv4Addr>,
    ) -> Vec<(Prepared, Outcome)> {
        let mut out = Vec::with_capacity(share.len());
        let mut conn = None;
        for p in share {
            let start = Instant::now();
            let tls = p.tls.as_ref().unwrap_or(&self.tls);
            let attempt = |conn: &mut Option<_>| -> Result<Answer, String> {
                if conn.is_none() || self.new_connection {
                    *conn = Some(self.connect(tls, from)?);
                }
                let c = conn.as_mut().ok_or("no connection")?;
                let answer = exchange(c, &p.bytes)?;
                if answer.close {
                    *conn = None;
                }
                Ok(answer)
            };
            let result = match attempt(&mut conn) {
                Ok(a) => Ok(a),
                // A kept-alive connection the server closed: once more on a new one.
                Err(_) if !self.new_connection => {
                    conn = None;
                    attempt(&mut conn)
                }
                Err(e) => Err(e),
            };
            if result.is_err() {
                conn = None;
            }
            out.push((p, result.map(|a| (a, start.elapsed()))));
        }
        out
    }

    /// Checks one answer (after the clock stopped).
    fn check(&self, p: &Prepared, answer: &Answer) -> Result<(), String> {
        self.check_as(self.op, p, answer)
    }

    fn check_as(&self, op: Op, p: &Prepared, answer: &Answer) -> Result<(), String> {
        if answer.status != 200 {
            return Err(format!("HTTP {}", answer.status));
        }
        if !answer.content_type.starts_with("application/pkcs7-mime") {
            return Err(format!("content type {:?}", answer.content_type));
        }
        let certs = certificates(&answer.body)?;
        let ca_der = self.ca.to_der().map_err(|e| e.to_string())?;
        if op == Op::CaCerts {
            return if certs.contains(&ca_der) {
                Ok(())
            } else {
                Err("cacerts without the CA certificate".into())
            };
        }
        // The set is DER-sorted: the issued certificate is the one with the CSR's key.
        let der = issued_certificate(&answer.body, &p.spki_der)?;
        hsm_est_pki::cert::verify_certificate_signature(
            &der,
            &self.ca.tbs_certificate.subject_public_key_info,
        )
        .map_err(|_| "certificate does not verify")?;
        let cert = hsm_est_pki::cert::parse_certificate(&der)?;
        if name::common_name(&cert.tbs_certificate.subject).as_deref() != Some(p.cn.as_str()) {
            return Err("certificate for another CN".into());
        }
        let spki = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| e.to_string())?;
        if spki != p.spki_der {
            return Err("certificate for another key".into());
        }
        Ok(())
    }
}

/// The certificates of a certs-only CMS answer (DER, or base64 with any line breaks).
fn certificates(body: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let der = if body.first() == Some(&0x30) {
        body.to_vec()
    } else {
        let text: String = String::from_utf8_lossy(body)
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        <base64ct::Base64 as base64ct::Encoding>::decode_vec(&text)
            .map_err(|_| "body is neither DER nor base64")?
    };
    let info = cms::content_info::ContentInfo::from_der(&der).map_err(|_| "not CMS")?;
    let signed = info
        .content
        .decode_as::<cms::signed_data::SignedData>()
        .map_err(|_| "not SignedData")?;
    signed
        .certificates
        .map(|set| {
            set.0
                .iter()
                .filter_map(|c| match c {
                    cms::cert::CertificateChoices::Certificate(c) => c.to_der().ok(),
                    _ => None,
                })
                .collect()
        })
        .ok_or_else(|| "no certificates".to_string())
}

/// The certificate in an enrolment answer that carries `spki_der`.
fn issued_certificate(body: &[u8], spki_der: &[u8]) -> Result<Vec<u8>, String> {
    certificates(body)?
        .into_iter()
        .find(|c| {
            hsm_est_pki::cert::parse_certificate(c)
                .ok()
                .and_then(|c| c.tbs_certificate.subject_public_key_info.to_der().ok())
                .is_some_and(|k| k == spki_der)
        })
        .ok_or_else(|| "no certificate for the CSR's key".to_string())
}
