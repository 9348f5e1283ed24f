//! The rotel process: found, started on free loopback ports, watched, killed.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::{OtlpError, ReceivedSpan, parse_spans};

/// How long rotel may take to listen (a hang guard; it takes milliseconds).
const START_LIMIT: Duration = Duration::from_secs(15);

/// Start attempts: another process may take a free port between our pick and rotel's bind.
const ATTEMPTS: usize = 3;

/// A running rotel collector printing every span it receives; killed when dropped.
#[derive(Debug)]
pub struct OtlpReceiver {
    child: Child,
    grpc: SocketAddr,
    http: SocketAddr,
    stdout: Arc<Captured>,
    stderr: Arc<Captured>,
    _files: tempfile::TempDir,
}

/// A stream's complete lines so far, and a signal for each new batch of them.
#[derive(Debug, Default)]
struct Captured {
    lines: Mutex<Vec<String>>,
    grew: Condvar,
}

impl Captured {
    fn text(&self) -> String {
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .join("\n")
    }

    /// Reads `stream` to its end. Each read's complete lines are added at once: rotel writes
    /// a batch of spans in one go, so a reader rarely sees half of one.
    fn fill(&self, mut stream: impl Read) {
        let mut buf = vec![0u8; 256 * 1024];
        let mut pending = Vec::new();
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            pending.extend_from_slice(&buf[..n]);
            let Some(end) = pending.iter().rposition(|b| *b == b'\n') else {
                continue;
            };
            let complete: Vec<u8> = pending.drain(..=end).collect();
            let text = String::from_utf8_lossy(&complete);
            let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
            lines.extend(text.lines().map(str::to_owned));
            self.grew.notify_all();
        }
    }
}

impl OtlpReceiver {
    /// Starts rotel on free loopback ports and waits until it listens on both.
    /// [`OtlpError::NotInstalled`] when rotel is not installed.
    pub fn start() -> Result<OtlpReceiver, OtlpError> {
        let agent = locate()?;
        let mut failed = None;
        for _ in 0..ATTEMPTS {
            match OtlpReceiver::spawn(&agent) {
                Ok(receiver) => return Ok(receiver),
                Err(e @ OtlpError::Start { .. }) => failed = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(failed.unwrap_or_else(|| OtlpError::Start {
            reason: "no attempt made".to_owned(),
            output: String::new(),
        }))
    }

    /// [`start`](Self::start) for a test that needs rotel: `None` (after printing that the
    /// test is skipped) when it is not installed — except under `CI=true`, where `.ci/run`
    /// installs it and its absence panics. Any other failure panics.
    pub fn start_or_skip() -> Option<OtlpReceiver> {
        match OtlpReceiver::start() {
            Ok(receiver) => Some(receiver),
            Err(OtlpError::NotInstalled(why)) => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "rotel not installed: .ci/run installs it ({why})"
                );
                eprintln!("SKIPPED: rotel not installed ({why}); this test did not run");
                None
            }
            Err(e) => panic!("{e}"),
        }
    }

    fn spawn(agent: &Path) -> Result<OtlpReceiver, OtlpError> {
        let (grpc, http) = free_ports().map_err(OtlpError::Io)?;
        let files = tempfile::tempdir().map_err(OtlpError::Io)?;
        let mut command = Command::new(agent);
        command
            .arg("start")
            .args(["--otlp-grpc-endpoint", &grpc.to_string()])
            .args(["--otlp-http-endpoint", &http.to_string()])
            .args(["--exporter", "blackhole", "--debug-log", "traces"])
            .args(["--debug-log-verbosity", "detailed", "--log-format", "json"])
            .arg("--pid-file")
            .arg(files.path().join("rotel.pid"))
            .arg("--log-file")
            .arg(files.path().join("rotel.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // rotel reads its options from ROTEL_* too: only the arguments above count.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ROTEL_") {
                command.env_remove(name);
            }
        }
        let mut child = command.spawn().map_err(OtlpError::Io)?;
        let (stdout, stderr) = (Arc::new(Captured::default()), Arc::new(Captured::default()));
        if let Some(out) = child.stdout.take() {
            let stdout = Arc::clone(&stdout);
            std::thread::spawn(move || stdout.fill(out));
        }
        if let Some(err) = child.stderr.take() {
            let stderr = Arc::clone(&stderr);
            std::thread::spawn(move || stderr.fill(err));
        }
        let receiver = OtlpReceiver {
            child,
            grpc,
            http,
            stdout,
            stderr,
            _files: files,
        };
        receiver.wait_until_listening()
    }

    fn wait_until_listening(mut self) -> Result<OtlpReceiver, OtlpError> {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Some(status) = self.child.try_wait().map_err(OtlpError::Io)? {
                return Err(self.start_error(&format!("it exited ({status})")));
            }
            let listening = [self.grpc, self.http]
                .iter()
                .all(|a| TcpStream::connect_timeout(a, Duration::from_secs(1)).is_ok());
            // Listening could be another process that took a port first: only rotel answers
            // an empty OTLP/HTTP export with a partial-success body.
            if listening && answers_otlp(self.http) {
                return Ok(self);
            }
            if Instant::now() > deadline {
                return Err(self.start_error(&format!("not listening after {START_LIMIT:?}")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn start_error(&self, reason: &str) -> OtlpError {
        OtlpError::Start {
            reason: reason.to_owned(),
            output: self.output(),
        }
    }

    /// The OTLP/gRPC endpoint, `http://127.0.0.1:PORT`.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// The OTLP/HTTP endpoint, `http://127.0.0.1:PORT` (traces go to `/v1/traces` under it).
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Everything rotel printed so far (standard output, then standard error).
    pub fn output(&self) -> String {
        format!("{}\n{}", self.stdout.text(), self.stderr.text())
    }

    /// Every span received so far, in the order rotel printed them.
    pub fn spans(&self) -> Result<Vec<ReceivedSpan>, OtlpError> {
        Ok(parse_spans(&self.stdout.text())?)
    }

    /// The spans received so far once `done` holds for them; [`OtlpError::Timeout`] (with
    /// the spans received) when it still does not after `limit`.
    pub fn wait_for_spans(
        &self,
        mut done: impl FnMut(&[ReceivedSpan]) -> bool,
        limit: Duration,
    ) -> Result<Vec<ReceivedSpan>, OtlpError> {
        let deadline = Instant::now() + limit;
        loop {
            let seen = self.line_count();
            let spans = self.spans()?;
            if done(&spans) {
                return Ok(spans);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(OtlpError::Timeout {
                    waited: limit,
                    spans,
                });
            }
            let lines = self
                .stdout
                .lines
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let _ = self
                .stdout
                .grew
                .wait_timeout_while(lines, left, |lines| lines.len() == seen);
        }
    }

    fn line_count(&self) -> usize {
        self.stdout
            .lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two distinct free loopback ports (held together while picked, so they differ).
fn free_ports() -> std::io::Result<(SocketAddr, SocketAddr)> {
    let a = TcpListener::bind("127.0.0.1:0")?;
    let b = TcpListener::bind("127.0.0.1:0")?;
    Ok((a.local_addr()?, b.local_addr()?))
}

/// `MESHWORK_ROTEL_AGENT`, else `rotel-agent` in the `rotel` Python package's directory.
fn locate() -> Result<PathBuf, OtlpError> {
    if let Some(path) = std::env::var_os("MESHWORK_ROTEL_AGENT") {
        let path = PathBuf::from(path);
        return match path.is_file() {
            true => Ok(path),
            false => Err(OtlpError::NotInstalled(format!(
                "MESHWORK_ROTEL_AGENT={} is no file",
                path.display()
            ))),
        };
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import rotel, os; print(os.path.dirname(rotel.__file__))",
        ])
        .output();
    let dir = match out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        Ok(_) => {
            return Err(OtlpError::NotInstalled(
                "python3 cannot import rotel".into(),
            ));
        }
        Err(e) => return Err(OtlpError::NotInstalled(format!("no python3: {e}"))),
    };
    let agent = PathBuf::from(dir).join("rotel-agent");
    match agent.is_file() {
        true => Ok(agent),
        false => Err(OtlpError::NotInstalled(format!("no {}", agent.display()))),
    }
}

/// Whether the server at `http` answers an empty OTLP/HTTP JSON export as a collector does.
fn answers_otlp(http: std::net::SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect_timeout(&http, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let body = "{\"resourceSpans\":[]}";
    let request = format!(
        "POST /v1/traces HTTP/1.1\r\nHost: {http}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200") && answer.contains("partialSuccess")
}
