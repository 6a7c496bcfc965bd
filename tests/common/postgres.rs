//! A private PostgreSQL server for one test: Debian's `postgresql` binaries, `initdb` and
//! `pg_ctl` in a directory of its own, listening on a free loopback port, run as an
//! unprivileged user (`nobody` when the tests run as root; PostgreSQL refuses root).

use std::path::PathBuf;
use std::process::{Command, Output};

use super::demo::free_port;

pub struct Postgres {
    pub dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
}

/// The newest installed server's binaries (`/usr/lib/postgresql/<major>/bin`).
fn server_bin() -> PathBuf {
    let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: bash tests/install-deps.sh")
        .filter_map(|e| {
            let e = e.ok()?;
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .collect();
    majors.sort();
    majors
        .pop()
        .expect("no PostgreSQL server binaries under /usr/lib/postgresql")
        .1
}

/// `program` as the unprivileged owner of the cluster.
fn as_owner(program: PathBuf) -> Command {
    if nix::unistd::geteuid().is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--reset-env",
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn check(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Postgres {
    /// initdb (trust authentication on loopback, superuser `postgres`) and start.
    pub fn start(name: &str) -> Postgres {
        let dir = PathBuf::from(format!("/tmp/hsm-est-pg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let bin = server_bin();
        let pg = Postgres {
            dir,
            port: free_port(),
            bin,
        };
        check(
            "initdb",
            as_owner(pg.bin.join("initdb"))
                .args(["--auth=trust", "--username=postgres", "--encoding=UTF8"])
                .arg("--locale=C")
                .arg("-D")
                .arg(&pg.dir)
                .output()
                .unwrap(),
        );
        pg.restart();
        pg
    }

    /// Stops the server at once, as a crash or a lost database host would.
    pub fn stop(&self) {
        check(
            "pg_ctl stop",
            as_owner(self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(&self.dir)
                .args(["-m", "immediate", "-w", "stop"])
                .output()
                .unwrap(),
        );
    }

    /// Starts the stopped server again on the same port.
    pub fn restart(&self) {
        check(
            "pg_ctl start",
            as_owner(self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(&self.dir)
                .arg("-l")
                .arg(self.dir.join("server.log"))
                .arg("-o")
                .arg(self.options())
                .args(["-w", "-t", "60", "start"])
                .output()
                .unwrap(),
        );
    }

    fn options(&self) -> String {
        format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            self.port,
            self.dir.display()
        )
    }

    /// Serves TLS only, with this certificate and key (copied into the cluster, owned by
    /// its user): `ssl = on`, and `pg_hba.conf` takes `hostssl` connections alone.
    pub fn require_tls(&self, cert: &std::path::Path, key: &std::path::Path) {
        self.stop();
        for (from, to) in [(cert, "server.crt"), (key, "server.key")] {
            let dest = self.dir.join(to);
            std::fs::copy(from, &dest).unwrap();
            check(
                "chown",
                Command::new("chown")
                    .arg(if nix::unistd::geteuid().is_root() {
                        "nobody:nogroup"
                    } else {
                        ":"
                    })
                    .arg(&dest)
                    .output()
                    .unwrap(),
            );
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let conf = self.dir.join("postgresql.conf");
        let text = std::fs::read_to_string(&conf).unwrap();
        std::fs::write(
            &conf,
            format!(
                "{text}\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
            ),
        )
        .unwrap();
        std::fs::write(
            self.dir.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        self.restart();
    }

    /// A new, empty database; returns its URL.
    pub fn database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(name)
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs `sql` with psql; returns its unaligned, tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        check(
            "psql",
            Command::new(self.bin.join("psql"))
                .args([
                    "-X",
                    "-q",
                    "-A",
                    "-t",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-h",
                    "127.0.0.1",
                ])
                .args([
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                    "-d",
                    db,
                    "-c",
                    sql,
                ])
                .output()
                .unwrap(),
        )
        .trim()
        .to_string()
    }

    /// One number from `sql`.
    pub fn count(&self, db: &str, sql: &str) -> i64 {
        let out = self.psql(db, sql);
        out.parse()
            .unwrap_or_else(|_| panic!("{sql}: not a number: {out:?}"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = as_owner(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.dir)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
