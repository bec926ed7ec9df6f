//! The runner under test, in a process of its own (this same binary in `--serve` mode), so its
//! memory and CPU are its own; and what the benchmark reads of it from `/proc`.

use livesync_runner::{Config, Runner};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// The server side: the ordinary runner, announcing its address on stdout, until its stdin closes.
pub async fn serve(data_dir: std::path::PathBuf) -> Result<(), Box<dyn std::error::Error>> {
    let runner = Runner::start(Config::for_tests(data_dir)).await?;
    println!("{}", runner.url());
    tokio::task::spawn_blocking(|| std::io::stdin().lines().count()).await?;
    runner.shutdown().await?;
    Ok(())
}

pub struct Server {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Server {
    /// The runner, with a fresh data directory.
    pub fn start() -> Result<Server, Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut serve = std::ffi::OsString::from("--serve=");
        serve.push(dir.path());
        Self::spawn(&serve, dir)
    }

    /// The floor: a bare broadcast server (see `floor`).
    pub fn start_floor() -> Result<Server, Box<dyn std::error::Error>> {
        Self::spawn(std::ffi::OsStr::new("--serve-floor"), tempfile::tempdir()?)
    }

    fn spawn(mode: &std::ffi::OsStr, dir: tempfile::TempDir) -> Result<Server, Box<dyn std::error::Error>> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg(mode)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
        Ok(Server { child, url: line.trim().to_owned(), _dir: dir })
    }

    pub fn resident_kib(&self) -> u64 {
        resident_kib(self.child.id())
    }

    /// Reads the server's resident memory from anywhere (a sampling task).
    pub fn resident_kib_reader(&self) -> impl Fn() -> u64 + Send + 'static {
        let pid = self.child.id();
        move || resident_kib(pid)
    }

    /// CPU time the server has used (user + system).
    pub fn cpu_seconds(&self) -> f64 {
        // utime + stime, fields 14 and 15 of /proc/<pid>/stat, in clock ticks (100 per second).
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        let ticks: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0)
            + fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
        ticks as f64 / 100.0
    }
}

fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}
