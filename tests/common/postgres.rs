//! A real PostgreSQL for the tests: Debian's `postgresql` server, started by the test itself in
//! a temporary folder on a private port of 127.0.0.1 (as the `postgres` user when the tests run
//! as root: the server refuses to run as root), stopped when the value is dropped.

use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    /// `postgresql://kioskd@127.0.0.1:PORT/kioskd`
    pub url: String,
    /// The user the server runs as, when the tests run as root.
    user: Option<(u32, u32)>,
}

/// The newest installed server's `bin` folder (`/usr/lib/postgresql/N/bin`).
fn server_bin() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (scripts/deps.sh installs Debian's `postgresql`)")
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).expect("an initdb under /usr/lib/postgresql/*/bin")
}

/// The `postgres` user's uid and gid when running as root.
fn server_user() -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective user.
    if std::fs::metadata("/proc/self").map_or(true, |m| m.uid() != 0) {
        return None;
    }
    let out = Command::new("id").args(["-u", "postgres"]).output().expect("id");
    let uid = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a `postgres` user (Debian's package makes it)");
    let out = Command::new("id").args(["-g", "postgres"]).output().expect("id");
    let gid = String::from_utf8_lossy(&out.stdout).trim().parse().expect("its group");
    Some((uid, gid))
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()).expect("a free port").port()
}

impl Postgres {
    /// initdb, then start; the database `kioskd` owned by the user `kioskd` (trust on
    /// 127.0.0.1: the tests' own server).
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// As [`Postgres::start`], with TLS only (TLS 1.3 at least; a connection without it is
    /// refused): the server presents `cert_pem` with `key_pem`.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Self {
        Self::start_with(Some((cert_pem, key_pem)))
    }

    fn start_with(tls: Option<(&str, &str)>) -> Self {
        let dir = tempfile::Builder::new().prefix("kioskd-pg-").tempdir().expect("tempdir");
        let user = server_user();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown the data folder");
        }
        let bin = server_bin();
        let mut pg = Self { dir, bin, port: 0, url: String::new(), user };
        let data = pg.data();
        pg.run_ok(
            "initdb",
            &[
                "-D",
                path(&data),
                "-U",
                "kioskd",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
        );
        if let Some((cert, key)) = tls {
            use std::os::unix::fs::PermissionsExt;
            let data = pg.data();
            for (name, pem, mode) in [("server.crt", cert, 0o644), ("server.key", key, 0o600)] {
                let path = data.join(name);
                std::fs::write(&path, pem).expect("the server's certificate");
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
                if let Some((uid, gid)) = user {
                    std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("chown");
                }
            }
            let conf = "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nssl_min_protocol_version = 'TLSv1.3'\n";
            let mut text = std::fs::read_to_string(data.join("postgresql.conf")).expect("postgresql.conf");
            text.push_str(conf);
            std::fs::write(data.join("postgresql.conf"), text).expect("postgresql.conf");
            let hba = "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n";
            std::fs::write(data.join("pg_hba.conf"), hba).expect("pg_hba.conf");
        }
        pg.port = free_port();
        pg.url = format!("postgresql://kioskd@127.0.0.1:{}/kioskd", pg.port);
        pg.start_server();
        pg.run_ok("createdb", &["-h", "127.0.0.1", "-p", &pg.port.to_string(), "-U", "kioskd", "kioskd"]);
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the server (again) on the same port and data, waiting until it accepts connections.
    pub fn start_server(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            self.port,
            path(self.dir.path())
        );
        let log = self.dir.path().join("server.log");
        self.run_ok(
            "pg_ctl",
            &["-D", path(&self.data()), "-l", path(&log), "-w", "-t", "120", "-o", &opts, "start"],
        );
    }

    /// Stops the server (fast: open sessions are ended), waiting until it has.
    pub fn stop_server(&self) {
        self.run_ok("pg_ctl", &["-D", path(&self.data()), "-w", "-t", "120", "-m", "fast", "stop"]);
    }

    /// Runs SQL with psql; its output (unaligned, tuples only).
    pub fn psql(&self, sql: &str) -> String {
        let out = self.run_ok("psql", &[&self.url, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Runs SQL with psql; its output, or `None` when psql fails (a table not made yet).
    pub fn try_psql(&self, sql: &str) -> Option<String> {
        let mut cmd = Command::new(self.bin.join("psql"));
        cmd.args([&self.url, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .current_dir(self.dir.path())
            .env_remove("PGPASSWORD")
            .env("HOME", self.dir.path());
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        let out = cmd.output().ok().filter(|o| o.status.success())?;
        Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn run_ok(&self, tool: &str, args: &[&str]) -> Output {
        let mut cmd = Command::new(self.bin.join(tool));
        cmd.args(args).current_dir(self.dir.path()).env_remove("PGPASSWORD").env("HOME", self.dir.path());
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        let out = cmd.output().unwrap_or_else(|e| panic!("running {tool}: {e}"));
        if !out.status.success() {
            let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            panic!(
                "{tool} {args:?} failed: {}\n{}\n{}\nserver log:\n{log}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        out
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temporary path")
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let mut cmd = Command::new(self.bin.join("pg_ctl"));
        cmd.args(["-D", path(&self.data()), "-m", "immediate", "stop"]).current_dir(self.dir.path());
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        let _ = cmd.output();
    }
}
