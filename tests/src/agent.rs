//! A `qmedic serve` process for tests: started from a config, asked over HTTP, killed.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free port on 127.0.0.1 (free when asked; the agent binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running `qmedic serve`.
pub struct Agent {
    /// The process.
    pub child: Child,
    /// Where it listens.
    pub port: u16,
}

impl Agent {
    /// Start `bin --config config serve` and wait until `/healthz` answers.
    pub fn start(bin: &Path, config: &Path, port: u16) -> Agent {
        let log = config.with_extension(format!("{port}.log"));
        let stderr = std::fs::File::create(&log).expect("agent log file");
        let child = Command::new(bin)
            .arg("--config")
            .arg(config)
            .arg("serve")
            .env("QMEDIC_LOG", "info,lapin=off,sqlx=warn")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start qmedic serve");
        let mut agent = Agent { child, port };
        let started = Instant::now();
        while agent.get("/healthz").is_none() {
            if let Ok(Some(status)) = agent.child.try_wait() {
                panic!(
                    "qmedic serve exited with {status}:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "qmedic serve did not answer /healthz within 60s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        agent
    }

    /// The body of `GET path`, if the agent answered 200.
    pub fn get(&self, path: &str) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| body.to_string())
    }

    /// `GET path` as JSON.
    pub fn json(&self, path: &str) -> serde_json::Value {
        let body = self
            .get(path)
            .unwrap_or_else(|| panic!("GET {path} did not answer 200"));
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, and wait for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Poll `check` every 200 ms until it gives a value or `limit` passes.
pub fn wait_for<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
