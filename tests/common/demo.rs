//! Black-box harness for the whole appliance: `estctl demo` in its own directory (its own
//! SoftHSM token) on a free port, driven with curl, openssl and strongSwan's pki.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::{estctl_bin, ok, run};

const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// A port free now and never handed out before in this test process. A demo keeps its
/// port across a stop and restart; without the memory, a test running in parallel could be
/// given that port in between and take it.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap();
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// An HTTP answer as curl saw it.
pub struct Answer {
    pub status: u16,
    pub headers: String,
    pub body: Vec<u8>,
    pub body_file: PathBuf,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub struct Demo {
    pub dir: PathBuf,
    pub port: u16,
    /// est-admin's port (dashboard and admin API).
    pub admin_port: u16,
    child: Option<Child>,
    counter: std::sync::atomic::AtomicU32,
    /// More `estctl demo` arguments, on every launch.
    extra: Vec<String>,
}

impl Demo {
    pub fn start(name: &str, format: &str) -> Demo {
        Self::start_with(name, format, &[])
    }

    /// A demo with more `estctl demo` arguments (`--ledger-url`, `--node`, ...).
    pub fn start_with(name: &str, format: &str, extra: &[&str]) -> Demo {
        let mut demo = Self::unlaunched(name, extra);
        demo.launch(format);
        demo
    }

    /// A demo in a new, empty directory named after `name`, on fresh ports, not launched.
    fn unlaunched(name: &str, extra: &[&str]) -> Demo {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Demo {
            dir,
            port: free_port(),
            admin_port: free_port(),
            child: None,
            counter: std::sync::atomic::AtomicU32::new(0),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// A second node of this demo's deployment: a copy of its token (the same CA key, as
    /// two appliances in front of one network HSM have), its CA, TLS certificate and
    /// accounts, but its own audit log, sockets and ports, launched with `extra`.
    pub fn node_copy(&self, name: &str, format: &str, extra: &[&str]) -> Demo {
        let mut demo = self.copy_without_records(name, extra);
        demo.launch(format);
        demo
    }

    /// This demo's directory copied to a new one, not launched: the token (as an HSM
    /// vendor's key backup would bring it back), the CA, TLS files, accounts and configs
    /// (paths pointed at the copy), but no ledger, audit log, socket or log.
    pub fn copy_without_records(&self, name: &str, extra: &[&str]) -> Demo {
        let copy = Self::unlaunched(name, extra);
        let dir = copy.dir.clone();
        copy_dir(&self.dir, &dir, &|n: &str| {
            !(n.starts_with("audit.jsonl")
                || n.starts_with("ledger.sqlite")
                || n.ends_with(".sock")
                || n.ends_with(".log")
                || n.starts_with("curl-"))
        });
        let (old, new) = (self.dir.to_str().unwrap(), dir.to_str().unwrap());
        for file in [
            "token/softhsm2.conf",
            "signer.yaml",
            "frontend.yaml",
            "admin.yaml",
        ] {
            let path = dir.join(file);
            let text = std::fs::read_to_string(&path).unwrap();
            std::fs::write(&path, text.replace(old, new)).unwrap();
        }
        copy
    }

    /// kill -9 of this demo's est-signer alone (a crash); `estctl demo` notices and stops
    /// the frontend and est-admin ([`Demo::reap`] waits for that).
    pub fn kill9_signer(&self) {
        let pattern = format!("est-signer --config {}/", self.dir.display());
        let out = Command::new("pkill")
            .args(["-9", "-f", &pattern])
            .output()
            .unwrap();
        assert!(out.status.success(), "no est-signer matched {pattern}");
    }

    /// The `estctl demo` arguments of later launches (a switch to a shared ledger).
    pub fn set_extra(&mut self, extra: &[&str]) {
        self.extra = extra.iter().map(|s| s.to_string()).collect();
    }

    /// Waits for `estctl demo` to end after one of its children died.
    pub fn reap(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// Starts (or restarts) `estctl demo` on the same directory and port.
    pub fn launch(&mut self, format: &str) {
        assert!(self.child.is_none());
        let mut child = Command::new(estctl_bin())
            .args(["demo", "--dir"])
            .arg(&self.dir)
            .args([
                "--port",
                &self.port.to_string(),
                "--admin-port",
                &self.admin_port.to_string(),
                "--response-format",
                format,
            ])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn estctl demo");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("ready: https://127.0.0.1:") {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(READY_TIMEOUT).is_err() {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "estctl demo did not become ready: {}\nsigner: {}\nfrontend: {}\nadmin: {}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(self.dir.join("signer.log")).unwrap_or_default(),
                std::fs::read_to_string(self.dir.join("frontend.log")).unwrap_or_default(),
                std::fs::read_to_string(self.dir.join("admin.log")).unwrap_or_default()
            );
        }
        self.child = Some(child);
    }

    /// SIGTERM to the demo, which stops both children.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let status = c.wait().unwrap();
            assert!(status.success(), "estctl demo exited with {status}");
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}/.well-known/est/{path}", self.port)
    }

    pub fn password(&self) -> String {
        std::fs::read_to_string(self.path("demo-password")).unwrap()
    }

    pub fn basic(&self) -> String {
        format!("demo:{}", self.password())
    }

    pub fn frontend_log(&self) -> String {
        std::fs::read_to_string(self.path("frontend.log")).unwrap_or_default()
    }

    /// Waits (up to 10 s) for `needle` in the frontend log: a line written after the server
    /// closed a connection may land a moment after the client saw the close.
    pub fn frontend_log_shows(&self, needle: &str) -> bool {
        for _ in 0..100 {
            if self.frontend_log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// curl against the appliance (trusting its CA); `args` go before the URL. `path` is
    /// under /.well-known/est/, or absolute when it starts with a slash.
    pub fn curl(&self, args: &[&str], path: &str) -> Answer {
        let url = if path.starts_with('/') {
            format!("https://127.0.0.1:{}{path}", self.port)
        } else {
            self.url(path)
        };
        self.curl_url(args, &url)
    }

    /// curl against est-admin (dashboard and admin API); `path` is absolute.
    pub fn admin_curl(&self, args: &[&str], path: &str) -> Answer {
        self.curl_url(args, &self.admin_url(path))
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.admin_port)
    }

    /// `admin:PASSWORD` of the demo's admin.
    pub fn admin_basic(&self) -> String {
        format!(
            "admin:{}",
            std::fs::read_to_string(self.path("admin-password")).unwrap()
        )
    }

    /// An admin revokes device `cn` (keyCompromise) through the admin API.
    pub fn admin_revoke(&self, cn: &str) -> Answer {
        self.admin_curl(
            &[
                "-u",
                &self.admin_basic(),
                "-X",
                "POST",
                "--data",
                "{\"reason\":\"keyCompromise\"}",
            ],
            &format!("/api/devices/{cn}/revoke"),
        )
    }

    pub fn admin_log(&self) -> String {
        std::fs::read_to_string(self.path("admin.log")).unwrap_or_default()
    }

    fn curl_url(&self, args: &[&str], url: &str) -> Answer {
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let body_file = self.path(&format!("curl-{n}.body"));
        let headers_file = self.path(&format!("curl-{n}.headers"));
        let out = run(Command::new("curl")
            .args(["-sS", "--max-time", "60", "--cacert"])
            .arg(self.ca())
            .arg("-o")
            .arg(&body_file)
            .arg("-D")
            .arg(&headers_file)
            .args(["-w", "%{http_code}"])
            .args(args)
            .arg(url));
        let code = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Answer {
            status: code.parse().unwrap_or_else(|_| {
                panic!(
                    "curl gave no status: {code:?} {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            }),
            headers: std::fs::read_to_string(&headers_file).unwrap_or_default(),
            body: std::fs::read(&body_file).unwrap_or_default(),
            body_file,
        }
    }

    /// A key and PEM CSR made by `openssl req`, as in the IQE guide.
    pub fn csr(&self, name: &str, subj: &str) -> (PathBuf, PathBuf) {
        let key = self.path(&format!("{name}-key.pem"));
        let csr = self.path(&format!("{name}-csr.pem"));
        ok(&run(Command::new("openssl")
            .args([
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&csr)
            .args(["-subj", subj])));
        (key, csr)
    }

    pub fn estctl(&self, args: &[&str]) -> Output {
        run(Command::new(estctl_bin())
            .args(args)
            .env("SOFTHSM2_CONF", self.path("token/softhsm2.conf")))
    }
}

/// A child process killed by handle when dropped.
pub struct ChildGuard(pub Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn frontend_bin() -> PathBuf {
    estctl_bin().with_file_name("est-frontend")
}

impl Demo {
    /// Runs one of the appliance's processes on this directory's config (the demo itself
    /// stopped), waiting for its `ready` line.
    pub fn spawn_ready(&self, program: &Path, config: &str, log: &str) -> ChildGuard {
        self.spawn_ready_with(program, config, log, &[])
    }

    /// `spawn_ready` with more environment variables.
    pub fn spawn_ready_with(
        &self,
        program: &Path,
        config: &str,
        log: &str,
        env: &[(&str, &Path)],
    ) -> ChildGuard {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(log))
            .unwrap();
        let mut child = Command::new(program)
            .arg("--config")
            .arg(self.path(config))
            .env("SOFTHSM2_CONF", self.path("token/softhsm2.conf"))
            // As the units and `estctl demo` run them.
            .env("MALLOC_ARENA_MAX", "2")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line == "ready" {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(READY_TIMEOUT).is_err() {
            let _ = child.kill();
            panic!("{} did not become ready", program.display());
        }
        ChildGuard(Some(child))
    }

    /// Rewrites one line of the frontend config (exact match).
    pub fn edit_frontend(&self, from: &str, to: &str) {
        self.edit("frontend.yaml", from, to);
    }

    /// Rewrites the first occurrence of `from` in one of the demo's files.
    pub fn edit(&self, file: &str, from: &str, to: &str) {
        let path = self.path(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{from:?} not in {file}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    }
}

impl Demo {
    /// Gives the (stopped) demo's frontend a publication listener (CRL and OCSP over plain
    /// HTTP) on a free port of 127.0.0.1, and returns the port.
    pub fn add_publication_listener(&self) -> u16 {
        let port = free_port();
        self.edit_frontend(
            "users_file: users.yaml",
            &format!("users_file: users.yaml\npublication:\n  listen: 127.0.0.1:{port}"),
        );
        port
    }

    /// Appends a table to the signer config.
    pub fn append_signer(&self, yaml: &str) {
        let path = self.path("signer.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{text}\n{yaml}")).unwrap();
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
    }
}

impl Demo {
    /// The signer config's path, as estctl's `--config` takes it.
    pub fn signer_config(&self) -> String {
        self.path("signer.yaml").to_str().unwrap().to_string()
    }

    /// POST of the PEM CSR file `csr` to `path` with curl arguments `auth` before it.
    pub fn post_csr(&self, auth: &[&str], csr: &Path, path: &str) -> Answer {
        let data = format!("@{}", csr.display());
        let mut all: Vec<&str> = auth.to_vec();
        all.extend(["--data-binary", &data]);
        self.curl(&all, path)
    }

    /// The certificates of a 200 certs-only answer, as PEM in the file `name`.
    pub fn pem_of(&self, answer: &Answer, name: &str) -> PathBuf {
        assert_eq!(answer.status, 200, "{name}: {}", answer.text());
        let path = self.path(name);
        std::fs::write(&path, pkcs7_certs(&answer.body_file)).unwrap();
        path
    }
}

/// curl's arguments for a TLS client certificate and its key.
pub fn tls_args(cert: &Path, key: &Path) -> Vec<String> {
    vec![
        "--cert".into(),
        cert.display().to_string(),
        "--key".into(),
        key.display().to_string(),
    ]
}

/// A PEM certificate's serial number, lower-case hex.
pub fn serial_hex(cert: &Path) -> String {
    let text = super::openssl(&["x509", "-noout", "-serial", "-in", cert.to_str().unwrap()]);
    text.trim()
        .strip_prefix("serial=")
        .unwrap()
        .to_ascii_lowercase()
}

/// OpenSSL's OCSP client against the publication listener on `port`: the status of
/// `cert` as the CA in `issuer` answers it (no nonce, verified with that CA).
pub fn openssl_ocsp(port: u16, issuer: &Path, cert: &Path) -> String {
    super::openssl(&[
        "ocsp",
        "-no_nonce",
        "-issuer",
        issuer.to_str().unwrap(),
        "-CAfile",
        issuer.to_str().unwrap(),
        "-cert",
        cert.to_str().unwrap(),
        "-url",
        &format!("http://127.0.0.1:{port}/ocsp"),
    ])
}

/// `openssl crl -text` of a DER CRL file, lower-cased.
pub fn crl_text(file: &Path) -> String {
    super::openssl(&[
        "crl",
        "-inform",
        "DER",
        "-noout",
        "-text",
        "-in",
        file.to_str().unwrap(),
    ])
    .to_ascii_lowercase()
}

/// `openssl pkcs7 -print_certs` on a DER file: the PEM certificates in it.
pub fn pkcs7_certs(der_file: &Path) -> String {
    ok(&run(Command::new("openssl")
        .args(["pkcs7", "-inform", "DER", "-print_certs", "-in"])
        .arg(der_file)))
}

/// Decodes a base64 body (any line breaks) to DER in a file next to it.
pub fn base64_to_der_file(answer: &Answer) -> PathBuf {
    use base64ct::{Base64, Encoding};
    let compact: String = answer.text().split_whitespace().collect();
    let der = Base64::decode_vec(&compact).expect("body is base64");
    let out = answer.body_file.with_extension("der");
    std::fs::write(&out, der).unwrap();
    out
}

/// One line of the text format: `name{labels} value`, a comment, or the end marker.
pub fn valid_metrics_line(line: &str) -> bool {
    if line.starts_with("# HELP ") || line.starts_with("# TYPE ") || line.starts_with("# UNIT ") {
        return true;
    }
    if line == "# EOF" {
        return true;
    }
    let (series, value) = match line.rsplit_once(' ') {
        Some(p) => p,
        None => return false,
    };
    let name_end = series.find('{').unwrap_or(series.len());
    let name = &series[..name_end];
    let name_ok = !name.is_empty()
        && name.chars().enumerate().all(|(i, c)| {
            c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
        });
    let labels_ok = name_end == series.len()
        || (series.ends_with('}')
            && series[name_end + 1..series.len() - 1].split(',').all(|kv| {
                kv.split_once('=')
                    .is_some_and(|(_, v)| v.starts_with('"') && v.ends_with('"'))
            }));
    let value_ok = value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value);
    name_ok && labels_ok && value_ok
}

pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A logged-in dashboard session of the demo's admin: curl's cookie jar after the login
/// form was posted.
pub struct AdminSession<'a> {
    demo: &'a Demo,
    pub jar: String,
}

impl<'a> AdminSession<'a> {
    pub fn login(demo: &'a Demo, name: &str) -> AdminSession<'a> {
        let jar = demo.path(&format!("{name}.jar")).display().to_string();
        let b = AdminSession { demo, jar };
        let form = b.get("/login");
        assert_eq!(form.status, 200);
        let token = field(&form.text(), "login_token");
        let password = std::fs::read_to_string(demo.path("admin-password")).unwrap();
        let r = b.post(
            "/login",
            &[
                ("user", "admin"),
                ("password", &password),
                ("login_token", &token),
            ],
            &[],
        );
        assert_eq!(r.status, 303, "{}", r.text());
        assert_eq!(r.header("location").as_deref(), Some("/"));
        b
    }

    pub fn get(&self, path: &str) -> Answer {
        self.demo
            .admin_curl(&["-b", &self.jar, "-c", &self.jar], path)
    }

    pub fn post(&self, path: &str, form: &[(&str, &str)], extra: &[&str]) -> Answer {
        let mut args: Vec<String> =
            vec!["-b".into(), self.jar.clone(), "-c".into(), self.jar.clone()];
        for (k, v) in form {
            args.push("--data-urlencode".into());
            args.push(format!("{k}={v}"));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.demo.admin_curl(&args, path)
    }

    pub fn csrf(&self) -> String {
        field(&self.get("/devices").text(), "csrf")
    }
}

/// The value of the hidden form field `name` in a page.
pub fn field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    html[start..].split('"').next().unwrap().to_string()
}

/// Copies the tree `from` to `to` (modes kept), leaving out top-level names `keep` refuses.
fn copy_dir(from: &Path, to: &Path, keep: &dyn Fn(&str) -> bool) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::metadata(from).unwrap().permissions()).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !keep(&name) {
            continue;
        }
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_dir(&entry.path(), &to.join(&name), &|_| true);
        } else if kind.is_file() {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}
