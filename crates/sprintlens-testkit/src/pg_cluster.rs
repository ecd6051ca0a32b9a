//! A disposable PostgreSQL server of a test's own, which the test may stop (`pg_ctl stop -m
//! immediate`), start again, pause (SIGSTOP of every server process) and resume, without
//! disturbing the shared stack. Built from the binaries of the stack (`SPRINTLENS_TEST_PG_BIN`, set by
//! `cargo xtask test`), run as the stack's unprivileged user when the test runs as root
//! (`SPRINTLENS_TEST_PG_OS_USER`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A private server on a free loopback port; stopped and deleted on drop.
#[derive(Debug)]
pub struct DisposablePg {
    bin: PathBuf,
    user: Option<String>,
    dir: PathBuf,
    port: u16,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn ok(cmd: &mut Command) {
    let out = cmd.output().expect("runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl DisposablePg {
    /// Initialises and starts a server, or `None` when the stack's binaries are not configured
    /// (panics instead when services are required).
    pub fn start() -> Option<DisposablePg> {
        let bin = PathBuf::from(crate::service_url("SPRINTLENS_TEST_PG_BIN")?);
        let user = if is_root() {
            Some(crate::service_url("SPRINTLENS_TEST_PG_OS_USER")?)
        } else {
            None
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!(
            "sprintlens-disposable-pg-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        if let Some(u) = &user {
            ok(Command::new("chown").arg(format!("{u}:")).arg(&dir));
        }
        let pg = DisposablePg {
            bin,
            user,
            dir,
            port,
        };
        ok(pg.as_pg_user("initdb").arg("-D").arg(pg.data()).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-instructions",
            "--no-sync",
        ]));
        // Durable commits (fsync on) as in production: an immediate stop must not lose them.
        pg.start_again();
        Some(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn as_pg_user(&self, program: &str) -> Command {
        match &self.user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(self.bin.join(program));
                c
            }
            None => Command::new(self.bin.join(program)),
        }
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres` (the superuser, trust authentication).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the (stopped) server and waits until it accepts connections.
    pub fn start_again(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.data().display()
        );
        ok(self
            .as_pg_user("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-w", "-t", "60", "-o", &opts, "start"]));
    }

    /// `pg_ctl stop -m immediate`: every server process exits at once, without a checkpoint.
    pub fn stop_immediate(&self) {
        ok(self.as_pg_user("pg_ctl").arg("-D").arg(self.data()).args([
            "-m",
            "immediate",
            "-w",
            "stop",
        ]));
    }

    fn processes(&self) -> Vec<String> {
        let pid = std::fs::read_to_string(self.data().join("postmaster.pid"))
            .expect("the server runs")
            .lines()
            .next()
            .unwrap()
            .trim()
            .to_string();
        let children = Command::new("pgrep")
            .args(["-P", &pid])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        std::iter::once(pid)
            .chain(children.split_whitespace().map(str::to_string))
            .collect()
    }

    fn signal(&self, sig: &str) {
        for pid in self.processes() {
            let _ = Command::new("kill")
                .args([sig, &pid])
                .stderr(Stdio::null())
                .status();
        }
    }

    /// SIGSTOP to the postmaster and every backend: connections hang, nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT to every process paused by [`Self::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for DisposablePg {
    fn drop(&mut self) {
        if self.data().join("postmaster.pid").exists() {
            self.signal("-CONT");
            let _ = self
                .as_pg_user("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
