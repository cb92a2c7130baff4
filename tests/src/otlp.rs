//! An OTLP/HTTP logs receiver for tests: `tests/otlp/receiver.py`, which
//! decodes each request with the official `opentelemetry-proto` Python
//! package and records it; scripted to answer errors or drop connections.
//! Stopped (by its pid) when the guard drops.
//!
//! Python: `$OOMWATCH_PYTHON`, else `target/test-venv/bin/python3` (made by
//! `cargo xtask test` from `tests/otlp/requirements.txt`), else `python3`.

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{TempDir, workspace_root};

pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("OOMWATCH_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = workspace_root().join("target/test-venv/bin/python3");
    if venv.exists() { venv } else { PathBuf::from("python3") }
}

pub struct OtlpReceiver {
    child: Child,
    port: u16,
    out: PathBuf,
    _dir: TempDir,
}

impl OtlpReceiver {
    /// `responses`: the answers to the first requests, in order (see the
    /// receiver's help: "200", "partial:N", "503", "503:2" with Retry-After,
    /// "400", "close"); 200 after that.
    pub fn start(responses: &[&str]) -> Self {
        Self::start_on(0, responses)
    }

    /// On `port` (0: any free one): a receiver back after an outage.
    pub fn start_on(port: u16, responses: &[&str]) -> Self {
        let dir = crate::temp_dir("otlp");
        let out = dir.0.join("requests.jsonl");
        let script = workspace_root().join("tests/otlp/receiver.py");
        let python = python();
        let mut child = Command::new(&python)
            .arg(&script)
            .arg("--out")
            .arg(&out)
            .arg("--responses")
            .arg(responses.join(","))
            .arg("--port")
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} {}: {e}", python.display(), script.display()));
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let Some(port) = line.trim().strip_prefix("listening ").and_then(|p| p.parse().ok()) else {
            let _ = child.kill();
            let output = child.wait_with_output().map(|o| String::from_utf8_lossy(&o.stderr).into_owned()).unwrap_or_default();
            panic!(
                "the OTLP test receiver did not start ({}): {output}\nIt needs the packages in tests/otlp/requirements.txt: \
                 `cargo xtask test` installs them into target/test-venv, or run \
                 `{} -m pip install -r tests/otlp/requirements.txt`",
                line.trim(),
                python.display()
            );
        };
        Self { child, port, out, _dir: dir }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`: the OTLP endpoint (requests go to /v1/logs).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What it received, one object per request, oldest first: `path`,
    /// `content_type`, `headers`, `answer`, `encoding`, `request` (the
    /// ExportLogsServiceRequest as protobuf's MessageToDict gives it, with
    /// the .proto's field names), `unknown_field_bytes`, or `decode_error`;
    /// `received_unix_nano`.
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn wait_for_requests(&self, count: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let requests = self.requests();
            if requests.len() >= count {
                return requests;
            }
            assert!(Instant::now() < deadline, "the OTLP receiver got {} of {count} requests in {timeout:?}", requests.len());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
