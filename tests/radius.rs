//! Revocation the network enforces, end to end with real components: a pump enrols through
//! the real appliance (bootstrap with a password, simpleenroll with its bootstrap
//! certificate), then authenticates to Debian's FreeRADIUS over EAP-TLS with
//! wpa_supplicant's `eapol_test`. FreeRADIUS checks CRLs (`check_crl = yes`) from a
//! `ca_path` into which the signer itself publishes its PEM CRL (`crl.file`). The pump is
//! accepted; an admin revokes it; the signer publishes; once FreeRADIUS has re-read its
//! ca_path the pump is rejected ("certificate revoked") while another pump still gets in.
//! With OCSP instead (`ocsp { enable = yes }` against the frontend's responder), the
//! revoked pump is rejected at its next authentication, with no reload at all.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::demo::*;
use common::{ok, run, signer_bin};

/// How FreeRADIUS learns of revocations.
enum Check {
    /// `check_crl = yes`: the CRLs in ca_path.
    Crl,
    /// `ocsp { enable = yes }` against this responder URL, nonce included.
    Ocsp(String),
}

/// A private FreeRADIUS on 127.0.0.1:`port` with only the EAP module, EAP-TLS against the
/// CA in `ca_dir` (OpenSSL hash names), checking revocation as `check` says.
fn raddb(dir: &Path, port: u16, ca_dir: &Path, server: (&Path, &Path), check: &Check) -> PathBuf {
    let (server_cert, server_key) = server;
    let revocation = match check {
        Check::Crl => "check_crl = yes".to_string(),
        Check::Ocsp(url) => format!(
            "check_crl = no
      ocsp {{
        enable = yes
        override_cert_url = yes
        url = \"{url}\"
        use_nonce = yes
        timeout = 5
        softfail = no
      }}"
        ),
    };
    let raddb = dir.join("raddb");
    for sub in ["log", "run"] {
        std::fs::create_dir_all(raddb.join(sub)).unwrap();
    }
    std::fs::copy("/etc/freeradius/3.0/dictionary", raddb.join("dictionary")).unwrap();
    let conf = format!(
        r#"prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = /usr/sbin
raddbdir = {raddb}
logdir = {raddb}/log
run_dir = {raddb}/run
radacctdir = ${{logdir}}/radacct
name = freeradius
confdir = ${{raddbdir}}
modconfdir = ${{confdir}}/mods-config
certdir = ${{confdir}}
cadir = ${{confdir}}
db_dir = ${{raddbdir}}
libdir = /usr/lib/freeradius
pidfile = ${{run_dir}}/${{name}}.pid
max_request_time = 30
cleanup_delay = 5
max_requests = 1024
hostname_lookups = no
log {{
  destination = files
  file = ${{logdir}}/radius.log
  auth = yes
}}
security {{
  allow_core_dumps = no
  max_attributes = 200
  reject_delay = 0
  status_server = no
}}
thread pool {{
  start_servers = 1
  max_servers = 4
  min_spare_servers = 1
  max_spare_servers = 2
  max_requests_per_server = 0
}}
client localhost {{
  ipaddr = 127.0.0.1
  secret = testing123
}}
modules {{
  eap {{
    default_eap_type = tls
    timer_expire = 60
    max_sessions = 64
    tls-config tls-common {{
      private_key_file = {key}
      certificate_file = {cert}
      ca_file = {ca_dir}/ca.pem
      ca_path = {ca_dir}
      {revocation}
      cipher_list = "DEFAULT"
      tls_min_version = "1.2"
      tls_max_version = "1.2"
    }}
    tls {{
      tls = tls-common
    }}
  }}
}}
server default {{
  listen {{
    type = auth
    ipaddr = 127.0.0.1
    port = {port}
  }}
  authorize {{
    eap {{
      ok = return
    }}
  }}
  authenticate {{
    eap
  }}
  post-auth {{
  }}
}}
"#,
        raddb = raddb.display(),
        key = server_key.display(),
        cert = server_cert.display(),
        ca_dir = ca_dir.display(),
    );
    std::fs::write(raddb.join("radiusd.conf"), conf).unwrap();
    raddb
}

/// FreeRADIUS in the foreground (debug mode: one process, its log in `log`), killed on drop.
struct Radius(Child);

impl Radius {
    fn start(raddb: &Path, log: &Path) -> Radius {
        let child = Command::new("freeradius")
            .args(["-X", "-d"])
            .arg(raddb)
            .stdout(std::fs::File::create(log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("freeradius (Debian package freeradius) must be installed");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains("Ready to process requests")
        {
            assert!(
                Instant::now() < deadline,
                "FreeRADIUS did not start:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Radius(child)
    }
}

impl Drop for Radius {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One EAP-TLS authentication with `eapol_test`; true when it succeeded.
fn eap_tls(dir: &Path, port: u16, ca: &Path, cert: &Path, key: &Path, name: &str) -> bool {
    let conf = dir.join(format!("{name}.eapol.conf"));
    std::fs::write(
        &conf,
        format!(
            "network={{\n  key_mgmt=IEEE8021X\n  eap=TLS\n  identity=\"{name}\"\n  \
             ca_cert=\"{}\"\n  client_cert=\"{}\"\n  private_key=\"{}\"\n  eapol_flags=0\n}}\n",
            ca.display(),
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let out = run(Command::new("eapol_test").arg("-c").arg(&conf).args([
        "-a",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-s",
        "testing123",
        "-t",
        "15",
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    let success = out.status.success() && text.trim_end().ends_with("SUCCESS");
    assert!(success || text.contains("FAILURE"), "eapol_test: {text}");
    success
}

/// A pump enrolled as the IQE gateway does it: bootstrap with the gateway's password, then
/// simpleenroll with the bootstrap certificate. Returns its certificate and key.
fn enrolled_pump(demo: &Demo, cn: &str) -> (PathBuf, PathBuf) {
    let (key, csr) = demo.csr(cn, &format!("/CN={cn}"));
    let data = format!("@{}", csr.display());
    let boot = demo.curl(
        &["-u", &demo.basic(), "--data-binary", &data],
        "iqe/bootstrap",
    );
    assert_eq!(boot.status, 200, "{}", boot.text());
    let boot_pem = demo.path(&format!("{cn}-boot.pem"));
    std::fs::write(&boot_pem, pkcs7_certs(&boot.body_file)).unwrap();
    let enrolled = demo.curl(
        &[
            "--cert",
            boot_pem.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--data-binary",
            &data,
        ],
        "iqe/simpleenroll",
    );
    assert_eq!(enrolled.status, 200, "{}", enrolled.text());
    let pem = demo.path(&format!("{cn}.pem"));
    std::fs::write(&pem, pkcs7_certs(&enrolled.body_file)).unwrap();
    (pem, key)
}

#[test]
fn freeradius_accepts_a_pump_until_it_is_revoked() {
    let mut demo = Demo::start("radius", "der");
    demo.stop();
    // FreeRADIUS's ca_path: the CA certificate, and the CRL the signer writes there.
    let ca_dir = demo.path("radius-ca");
    std::fs::create_dir_all(&ca_dir).unwrap();
    std::fs::copy(demo.ca(), ca_dir.join("ca.pem")).unwrap();
    demo.append_signer(&format!(
        "crl:\n  file: {}\n  format: pem\n  validity_hours: 24\n",
        ca_dir.join("crl.pem").display()
    ));
    let _signer = demo.spawn_ready(&signer_bin(), "signer.yaml", "signer.log");
    let _frontend = demo.spawn_ready(&frontend_bin(), "frontend.yaml", "frontend.log");
    let admin = signer_bin().with_file_name("est-admin");
    let _admin = demo.spawn_ready(&admin, "admin.yaml", "admin.log");
    let crl = ca_dir.join("crl.pem");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !crl.exists() {
        assert!(Instant::now() < deadline, "the signer published no CRL");
        std::thread::sleep(Duration::from_millis(100));
    }
    let rehash = || ok(&run(Command::new("openssl").arg("rehash").arg(&ca_dir)));
    rehash();

    let (pump, pump_key) = enrolled_pump(&demo, "radius-pump-1");
    let (other, other_key) = enrolled_pump(&demo, "radius-pump-2");
    let port = free_port();
    let raddb = raddb(
        &demo.dir,
        port,
        &ca_dir,
        (&demo.path("server.pem"), &demo.path("server.key")),
        &Check::Crl,
    );
    let ca = demo.ca();
    let radius = Radius::start(&raddb, &demo.path("radius-1.log"));
    assert!(
        eap_tls(&demo.dir, port, &ca, &pump, &pump_key, "radius-pump-1"),
        "the enrolled pump was not accepted:\n{}",
        std::fs::read_to_string(demo.path("radius-1.log")).unwrap_or_default()
    );
    drop(radius);

    // The pump is stolen: an admin revokes it, and the signer publishes by itself.
    let before = std::fs::read_to_string(&crl).unwrap();
    let revoked = demo.admin_revoke("radius-pump-1");
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&crl).unwrap_or_default() == before {
        assert!(Instant::now() < deadline, "no new CRL after the revocation");
        std::thread::sleep(Duration::from_millis(100));
    }
    // What a hospital's reload does: rehash the ca_path, restart (reload) FreeRADIUS.
    rehash();
    let _radius = Radius::start(&raddb, &demo.path("radius-2.log"));
    assert!(
        !eap_tls(&demo.dir, port, &ca, &pump, &pump_key, "radius-pump-1"),
        "the revoked pump was accepted"
    );
    let log = std::fs::read_to_string(demo.path("radius-2.log")).unwrap();
    assert!(log.contains("certificate revoked"), "{log}");
    assert!(
        eap_tls(&demo.dir, port, &ca, &other, &other_key, "radius-pump-2"),
        "a pump that was not revoked was refused"
    );
}

#[test]
fn freeradius_asks_the_ocsp_responder_and_rejects_a_revoked_pump_without_a_reload() {
    let mut demo = Demo::start("radius-ocsp", "der");
    demo.stop();
    let publication = demo.add_publication_listener();
    let ca_dir = demo.path("radius-ca");
    std::fs::create_dir_all(&ca_dir).unwrap();
    std::fs::copy(demo.ca(), ca_dir.join("ca.pem")).unwrap();
    ok(&run(Command::new("openssl").arg("rehash").arg(&ca_dir)));
    let _signer = demo.spawn_ready(&signer_bin(), "signer.yaml", "signer.log");
    let _frontend = demo.spawn_ready(&frontend_bin(), "frontend.yaml", "frontend.log");
    let admin = signer_bin().with_file_name("est-admin");
    let _admin = demo.spawn_ready(&admin, "admin.yaml", "admin.log");

    let (pump, pump_key) = enrolled_pump(&demo, "ocsp-radius-pump-1");
    let (other, other_key) = enrolled_pump(&demo, "ocsp-radius-pump-2");
    let port = free_port();
    let raddb = raddb(
        &demo.dir,
        port,
        &ca_dir,
        (&demo.path("server.pem"), &demo.path("server.key")),
        &Check::Ocsp(format!("http://127.0.0.1:{publication}/ocsp")),
    );
    let ca = demo.ca();
    let log = demo.path("radius-ocsp.log");
    let _radius = Radius::start(&raddb, &log);
    assert!(
        eap_tls(&demo.dir, port, &ca, &pump, &pump_key, "ocsp-radius-pump-1"),
        "the enrolled pump was not accepted:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("Cert status: good"), "{text}");

    // Revoked through the admin API; the same FreeRADIUS, not reloaded, asks again.
    let revoked = demo.admin_revoke("ocsp-radius-pump-1");
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    assert!(
        !eap_tls(&demo.dir, port, &ca, &pump, &pump_key, "ocsp-radius-pump-1"),
        "the revoked pump was accepted"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("Cert status: revoked"), "{text}");
    assert!(
        eap_tls(
            &demo.dir,
            port,
            &ca,
            &other,
            &other_key,
            "ocsp-radius-pump-2"
        ),
        "a pump that was not revoked was refused"
    );
}
