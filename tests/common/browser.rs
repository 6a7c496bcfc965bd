//! A real browser for the dashboard tests: Debian's chromium, headless, driven over the
//! Chrome DevTools Protocol on `--remote-debugging-pipe` (JSON messages ended by NUL on
//! file descriptors 3 and 4, given to it through two named pipes). The test clicks the
//! page's own links and buttons, so the browser sends what a person's would: its cookies,
//! its Origin and Sec-Fetch-Site headers, no JavaScript of the page (there is none).

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(30);

pub struct Browser {
    child: Child,
    to_browser: File,
    from_browser: Receiver<Value>,
    next_id: u64,
    session: String,
    pub shots: PathBuf,
}

impl Browser {
    /// Starts chromium with a profile in `dir`; screenshots go to `shots`, which outlives
    /// the test's appliance directory. The
    /// server certificate `server_cert` (PEM) is trusted by its key
    /// (`--ignore-certificate-errors-spki-list`), so pages are a secure context and
    /// `Secure` cookies are kept, as with a certificate from the hospital's own CA.
    pub fn launch(dir: &Path, shots: &Path, server_cert: &Path) -> Browser {
        let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("chromium is installed by tests/install-deps.sh");
        std::fs::create_dir_all(dir).unwrap();
        let (to, from) = (dir.join("cdp-in"), dir.join("cdp-out"));
        for fifo in [&to, &from] {
            let _ = std::fs::remove_file(fifo);
            nix::unistd::mkfifo(
                fifo.as_path(),
                nix::sys::stat::Mode::from_bits_truncate(0o600),
            )
            .unwrap();
        }
        let shots = shots.to_path_buf();
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).unwrap();
        let spki = spki_sha256_base64(server_cert);
        let script = format!(
            "exec {chromium} --headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage \
             --no-first-run --no-default-browser-check \
             --ignore-certificate-errors-spki-list={spki} --window-size=1280,900 --user-data-dir={profile} --remote-debugging-pipe \
             about:blank 3<{to} 4>{from}",
            profile = dir.join("profile").display(),
            to = to.display(),
            from = from.display(),
        );
        let child = Command::new("bash")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(dir.join("chromium.log")).unwrap())
            .spawn()
            .expect("start chromium");
        // The same order as the shell opens them: its fd 3 first, then fd 4.
        let to_browser = std::fs::OpenOptions::new().write(true).open(&to).unwrap();
        let reader = File::open(&from).unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(reader);
            loop {
                let mut buf = Vec::new();
                match r.read_until(0, &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        buf.pop();
                        if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                            if tx.send(v).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        let mut b = Browser {
            child,
            to_browser,
            from_browser: rx,
            next_id: 0,
            session: String::new(),
            shots,
        };
        let target = b.call("Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"].as_str().unwrap().to_string();
        let attached = b.call(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        b.session = attached["sessionId"].as_str().unwrap().to_string();
        b.call("Page.enable", json!({}));
        b.call("Runtime.enable", json!({}));
        b
    }

    /// One command; its result (panics on a protocol error or after the deadline).
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to_browser.write_all(&bytes).unwrap();
        let start = Instant::now();
        loop {
            let left = DEADLINE.saturating_sub(start.elapsed());
            let v = self
                .from_browser
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no answer to {method}"));
            if v["id"].as_u64() == Some(id) {
                if let Some(e) = v.get("error") {
                    panic!("{method}: {e}");
                }
                return v["result"].clone();
            }
        }
    }

    /// Drops events that arrived before an action.
    fn drain(&self) {
        while self.from_browser.try_recv().is_ok() {}
    }

    fn wait_for_load(&self) {
        let start = Instant::now();
        loop {
            let left = DEADLINE.saturating_sub(start.elapsed());
            let v = self
                .from_browser
                .recv_timeout(left)
                .expect("the page did not load");
            if v["method"] == "Page.loadEventFired" {
                return;
            }
        }
    }

    pub fn navigate(&mut self, url: &str) {
        self.drain();
        let r = self.call("Page.navigate", json!({"url": url}));
        assert!(r.get("errorText").is_none(), "navigate {url}: {r}");
        self.wait_for_load();
    }

    /// Evaluates `expression` in the page (DevTools, not the page's own script: the CSP
    /// forbids that) and returns its value.
    pub fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expression}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Types `value` into the input named `name`.
    pub fn fill(&mut self, name: &str, value: &str) {
        let found = self.eval(&format!(
            "(() => {{ const e = document.querySelector('[name={name}]'); if (!e) return false; \
             e.focus(); e.value = {}; return true; }})()",
            json!(value)
        ));
        assert_eq!(found, json!(true), "no input {name}");
    }

    /// Clicks the element `selector` (a link or a submit button) as a user would, and
    /// waits for the page it leads to.
    pub fn click(&mut self, selector: &str) {
        self.drain();
        let found = self.eval(&format!(
            "(() => {{ const e = document.querySelector({}); if (!e) return false; \
             e.click(); return true; }})()",
            json!(selector)
        ));
        assert_eq!(found, json!(true), "nothing matches {selector}");
        self.wait_for_load();
    }

    /// The rendered text of the page (the DOM's innerText, not the HTML source).
    pub fn text(&mut self) -> String {
        self.eval("document.body.innerText")
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    pub fn url(&mut self) -> String {
        self.eval("location.href")
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// A PNG of the page, saved as `name.png` in the screenshots directory.
    pub fn screenshot(&mut self, name: &str) -> PathBuf {
        use base64ct::{Base64, Encoding};
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = Base64::decode_vec(r["data"].as_str().unwrap()).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

/// Base64 of the SHA-256 of a PEM certificate's SubjectPublicKeyInfo.
fn spki_sha256_base64(cert: &Path) -> String {
    use base64ct::{Base64, Encoding};
    use der::{DecodePem, Encode};
    let pem = std::fs::read_to_string(cert).unwrap();
    let c = x509_cert::Certificate::from_pem(pem.as_bytes()).unwrap();
    let spki = c.tbs_certificate.subject_public_key_info.to_der().unwrap();
    Base64::encode_string(ring::digest::digest(&ring::digest::SHA256, &spki).as_ref())
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
