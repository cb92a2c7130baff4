//! Harness for integration tests against the real kernel: cgroups, the
//! daemon and tail as a user runs them, and cleanup that happens even when
//! a test fails (every resource is a drop guard).
//!
//! Tests need root. Without it they fail with a message, unless
//! OOMWATCH_SKIP_PRIVILEGED=1 is set, in which case they say they skipped.

use std::{
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

pub use serde_json::Value;

pub mod docker;
pub mod journald;
pub mod otlp;

/// Returns false (after saying so) when the test must be skipped; panics
/// when root is missing and skipping was not asked for.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("OOMWATCH_SKIP_PRIVILEGED").as_deref() == Ok("1") {
        eprintln!("SKIPPED {test}: needs root (OOMWATCH_SKIP_PRIVILEGED=1 is set)");
        return false;
    }
    panic!("{test} needs root (real eBPF, real cgroups); run as root or set OOMWATCH_SKIP_PRIVILEGED=1 to skip");
}

pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The oomwatch binary under test: $OOMWATCH_BIN (set by `cargo xtask test`),
/// else the workspace's release build.
pub fn oomwatch_bin() -> PathBuf {
    let bin = std::env::var_os("OOMWATCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/release/oomwatch"));
    assert!(bin.exists(), "{} not found: build it with `cargo build --release -p oomwatch` or run `cargo xtask test`", bin.display());
    bin
}

/// `<name>-<pid>-<n>`: the pid lets a later run find what a killed test
/// process left behind ([`sweep_stale_test_cgroups`]).
pub fn unique(name: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{name}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Runs `cmd`, which must refuse: a non-zero exit and exactly one line on
/// stderr (the project's contract for bad input). Returns that line.
/// A command still running after 30 s (a daemon that started) was accepted.
pub fn one_line_refusal(cmd: &mut Command) -> String {
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let mut child = ChildGuard(child);
    let status = child.wait_timeout(Duration::from_secs(30));
    let mut err = String::new();
    if status.is_none() {
        let _ = child.0.kill();
    }
    if let Some(mut e) = child.0.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let err = err.trim().to_owned();
    let Some(status) = status else { panic!("{cmd:?} was accepted: still running after 30 s; stderr: {err}") };
    assert!(!status.success(), "{cmd:?} was accepted; stderr: {err}");
    assert_eq!(err.lines().count(), 1, "{cmd:?}: one line: {err}");
    err
}

pub fn temp_dir(name: &str) -> TempDir {
    let path = std::env::temp_dir().join(format!("oomwatch-test-{}", unique(name)));
    fs::create_dir_all(&path).unwrap();
    TempDir(path)
}

pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------- cgroups

/// Where this process's memory cgroup lives: the v1 memory hierarchy on
/// hybrid hosts, the unified one on pure v2 hosts.
pub struct MemoryHierarchy {
    pub mount: PathBuf,
    pub v1: bool,
    /// Our own memory cgroup, relative to the mount ("/a/b").
    pub own: String,
}

pub fn memory_hierarchy() -> MemoryHierarchy {
    let v1_mount = PathBuf::from("/sys/fs/cgroup/memory");
    let cgroups = fs::read_to_string("/proc/self/cgroup").unwrap();
    if v1_mount.join("memory.usage_in_bytes").exists() {
        let own = cgroups
            .lines()
            .find_map(|l| {
                let mut p = l.splitn(3, ':');
                let (_, ctrl, path) = (p.next()?, p.next()?, p.next()?);
                ctrl.split(',').any(|c| c == "memory").then(|| path.to_owned())
            })
            .expect("memory line in /proc/self/cgroup");
        MemoryHierarchy { mount: v1_mount, v1: true, own }
    } else {
        let own = cgroups.lines().find_map(|l| l.strip_prefix("0::")).unwrap_or("/").to_owned();
        MemoryHierarchy { mount: PathBuf::from("/sys/fs/cgroup"), v1: false, own }
    }
}

/// A memory cgroup named `oomwatch-test-*`, created under our own memory
/// cgroup (or under `parent`). Dropping it kills what runs inside (pids we
/// started there) and removes it.
pub struct TestCgroup {
    pub dir: PathBuf,
    /// Path as oomwatch reports it ("/own/oomwatch-test-x").
    pub path: String,
    /// On a cgroup v1 memory hierarchy (its files are v1's).
    pub v1: bool,
}

/// A cgroup name as the daemon shows it (`readers::path_string`): valid
/// UTF-8 kept, each byte of an invalid sequence written `\xNN`.
pub fn display_name(raw: &[u8]) -> String {
    let mut out = String::new();
    for chunk in raw.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Removes `oomwatch-test-*` cgroups under `parent_dir` left by a test
/// process that died before its drop guards ran (SIGKILL, a timeout): the
/// name carries the creating pid (see [`unique`]), and only cgroups whose
/// creator is gone and that hold no process are removed, children first.
/// Runs once per directory per test process.
pub fn sweep_stale_test_cgroups(parent_dir: &Path) {
    use std::{collections::HashSet, sync::Mutex};
    static SWEPT: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
    if !SWEPT.lock().unwrap().get_or_insert_with(HashSet::new).insert(parent_dir.to_path_buf()) {
        return;
    }
    let Ok(entries) = fs::read_dir(parent_dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = creator_pid(&name) else { continue };
        // SAFETY: kill(pid, 0) only checks whether the process exists.
        let alive = pid == std::process::id() || unsafe { libc::kill(pid as i32, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH);
        if !alive {
            remove_stale_tree(&entry.path());
        }
    }
}

/// "oomwatch-test-<name>-<pid>-<n>" -> pid.
pub(crate) fn creator_pid(leaf: &str) -> Option<u32> {
    let rest = leaf.strip_prefix("oomwatch-test-")?;
    let mut parts = rest.rsplitn(3, '-');
    let (_n, pid) = (parts.next()?.parse::<u32>().ok()?, parts.next()?.parse::<u32>().ok()?);
    parts.next()?;
    Some(pid)
}

fn remove_stale_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for child in entries.flatten() {
            if child.file_name().to_string_lossy().starts_with("oomwatch-test-") && child.path().is_dir() {
                remove_stale_tree(&child.path());
            }
        }
    }
    let empty = fs::read_to_string(dir.join("cgroup.procs")).is_ok_and(|p| p.trim().is_empty());
    if empty && fs::remove_dir(dir).is_ok() {
        eprintln!("removed {} (left by a test process that no longer exists)", dir.display());
    }
}

/// Makes the child of `cmd` move itself into the cgroup `dir` before exec,
/// so that everything it allocates is charged there from the start.
fn join_before_exec(cmd: &mut Command, dir: &Path) {
    let procs = std::ffi::CString::new(dir.join("cgroup.procs").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: only async-signal-safe calls (open, write, close) between
    // fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let r = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
        });
    }
}

impl TestCgroup {
    pub fn new(name: &str, limit_bytes: Option<u64>) -> Self {
        let h = memory_hierarchy();
        let parent_dir = h.mount.join(h.own.trim_start_matches('/'));
        sweep_stale_test_cgroups(&parent_dir);
        Self::create(&parent_dir, &h.own, name, limit_bytes, h.v1)
    }

    pub fn child(&self, name: &str, limit_bytes: Option<u64>) -> Self {
        Self::create(&self.dir, &self.path, name, limit_bytes, self.v1)
    }

    /// A child named with any bytes the kernel takes (`oomwatch-test-`,
    /// `name`, the unique suffix): escape sequences, quotes, bytes that are
    /// not UTF-8. Its `path` is the daemon's display form of the name:
    /// valid UTF-8 as is, each invalid byte as `\xNN`.
    pub fn child_raw(&self, name: &[u8], limit_bytes: Option<u64>) -> Self {
        let leaf = [b"oomwatch-test-".as_slice(), name, unique("").as_bytes()].concat();
        Self::create_leaf(&self.dir, &self.path, &leaf, limit_bytes, self.v1)
    }

    fn create(parent_dir: &Path, parent_path: &str, name: &str, limit: Option<u64>, v1: bool) -> Self {
        let leaf = format!("oomwatch-test-{}", unique(name));
        Self::create_leaf(parent_dir, parent_path, leaf.as_bytes(), limit, v1)
    }

    fn create_leaf(parent_dir: &Path, parent_path: &str, leaf: &[u8], limit: Option<u64>, v1: bool) -> Self {
        use std::os::unix::ffi::OsStrExt as _;
        let dir = parent_dir.join(std::ffi::OsStr::from_bytes(leaf));
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let path = format!("{}/{}", parent_path.trim_end_matches('/'), display_name(leaf));
        let cg = Self { dir, path, v1 };
        if let Some(limit) = limit {
            cg.set_limit(limit);
        }
        cg
    }

    pub fn set_limit(&self, bytes: u64) {
        let file = if self.v1 { "memory.limit_in_bytes" } else { "memory.max" };
        fs::write(self.dir.join(file), bytes.to_string()).unwrap_or_else(|e| panic!("{}/{file}: {e}", self.dir.display()));
    }

    pub fn read(&self, file: &str) -> String {
        fs::read_to_string(self.dir.join(file)).unwrap_or_default()
    }

    /// The kernel's own count of OOM kills in this cgroup.
    pub fn oom_kills(&self) -> u64 {
        let text = if self.v1 { self.read("memory.oom_control") } else { self.read("memory.events") };
        text.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    }

    /// Starts `cmd` inside this cgroup (it moves itself in before exec).
    pub fn spawn(&self, cmd: &mut Command) -> Child {
        join_before_exec(cmd, &self.dir);
        cmd.spawn().unwrap_or_else(|e| panic!("spawning {cmd:?} in {}: {e}", self.dir.display()))
    }

    fn pids(&self) -> Vec<i32> {
        self.read("cgroup.procs").lines().filter_map(|l| l.trim().parse().ok()).collect()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Only processes this test started can be in its own cgroup.
        for _ in 0..50 {
            for pid in self.pids() {
                // SAFETY: plain kill(2).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("warning: could not remove {}", self.dir.display());
    }
}

/// A memory cgroup that also has PSI: on pure v2 the memcg itself; on
/// hybrid hosts (memory on v1) a v2 twin `oomwatch-test-*` under the unified
/// root, joined by the same processes, carries `memory.pressure`.
pub struct PsiCgroup {
    pub memcg: TestCgroup,
    unified: Option<PathBuf>,
    /// Path under which oomwatch reports this cgroup's pressure.
    pub pressure_path: String,
}

impl PsiCgroup {
    pub fn new(name: &str, limit_bytes: Option<u64>) -> Self {
        let memcg = TestCgroup::new(name, limit_bytes);
        let unified_root = Path::new("/sys/fs/cgroup/unified");
        if memcg.v1 && unified_root.join("cgroup.procs").exists() {
            sweep_stale_test_cgroups(unified_root);
            let leaf = memcg.dir.file_name().unwrap().to_string_lossy().into_owned();
            let dir = unified_root.join(&leaf);
            fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
            Self { memcg, unified: Some(dir), pressure_path: format!("/{leaf}") }
        } else {
            let pressure_path = memcg.path.clone();
            Self { memcg, unified: None, pressure_path }
        }
    }

    pub fn pressure_file(&self) -> PathBuf {
        self.unified.clone().unwrap_or_else(|| self.memcg.dir.clone()).join("memory.pressure")
    }

    pub fn spawn(&self, cmd: &mut Command) -> Child {
        if let Some(unified) = &self.unified {
            // Runs before the memcg hook added by TestCgroup::spawn.
            join_before_exec(cmd, unified);
        }
        self.memcg.spawn(cmd)
    }
}

impl Drop for PsiCgroup {
    fn drop(&mut self) {
        let Some(dir) = &self.unified else { return };
        for _ in 0..50 {
            let pids: Vec<i32> = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok()).collect();
            for pid in pids {
                // SAFETY: plain kill(2) of a process this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if fs::remove_dir(dir).is_ok() || !dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A directory on a real disk (not tmpfs) for files that must go through
/// the page cache: under the workspace's target/.
pub fn disk_dir(name: &str) -> TempDir {
    let path = workspace_root().join("target").join("test-data").join(unique(name));
    fs::create_dir_all(&path).unwrap();
    TempDir(path)
}

/// A child process that is killed (by its pid) and reaped on drop.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The workload binary of this crate, next to the test executable's deps/.
pub fn memhog_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("OOMWATCH_MEMHOG") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let bin = profile_dir.join("memhog");
    assert!(bin.exists(), "{} missing: cargo builds it with the tests of oomwatch-tests", bin.display());
    bin
}

pub fn memhog() -> Command {
    Command::new(memhog_bin())
}

// ---------------------------------------------------------------- daemon

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `oomwatch daemon` started as a user would, on a free loopback port and a
/// temporary socket. Stopped with SIGTERM on drop; its log is printed when
/// the test failed.
pub struct Daemon {
    child: Option<Child>,
    pub port: u16,
    pub socket: PathBuf,
    pub log: PathBuf,
    _dir: TempDir,
}

impl Daemon {
    pub fn start(extra: &[&str]) -> Self {
        Self::start_under(&[], extra)
    }

    /// Started by `wrapper` (a command and its arguments, e.g. setpriv
    /// with a smaller capability set), which runs the daemon.
    pub fn start_under(wrapper: &[&str], extra: &[&str]) -> Self {
        let dir = temp_dir("daemon");
        let socket = dir.0.join("events.sock");
        Self::start_in(dir, socket, free_port(), wrapper, extra)
    }

    /// A daemon on a given socket and port (a restart of another one).
    pub fn start_at(socket: &Path, port: &str, extra: &[&str]) -> Self {
        Self::start_in(temp_dir("daemon"), socket.to_path_buf(), port.parse().unwrap(), &[], extra)
    }

    fn start_in(dir: TempDir, socket: PathBuf, port: u16, wrapper: &[&str], extra: &[&str]) -> Self {
        let log = dir.0.join("daemon.log");
        // Each daemon keeps its journal in its own directory, unless the
        // test says where (a restart that must find the last one's).
        let state = dir.0.join("state");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(oomwatch_bin());
                c
            }
            None => Command::new(oomwatch_bin()),
        };
        cmd.arg("daemon").args(["--listen", &format!("127.0.0.1:{port}")]).arg("--socket").arg(&socket);
        if !extra.contains(&"--state-dir") {
            cmd.arg("--state-dir").arg(&state);
        }
        let child = cmd
            .args(extra)
            .stdout(fs::File::create(&log).unwrap())
            .stderr(fs::File::options().append(true).open(&log).unwrap())
            .spawn()
            .expect("start oomwatch daemon");
        let mut d = Self { child: Some(child), port, socket, log, _dir: dir };
        d.wait_ready(Duration::from_secs(30));
        d
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("daemon exited during start ({status}):\n{}", self.log_text());
            }
            if self.socket.exists() && http_get(self.port, "/healthz").is_ok_and(|b| b.starts_with("ok")) {
                return;
            }
            // Behind TLS, plain HTTP cannot ask: the daemon says when it serves.
            if self.socket.exists() && self.log_text().contains("metrics on https://") {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("daemon not ready after {timeout:?}:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn metrics(&self) -> String {
        http_get(self.port, "/metrics").unwrap_or_else(|e| panic!("GET /metrics: {e}\n{}", self.log_text()))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Waits until the daemon's sampler tracks `cgroup` (its usage is on
    /// /metrics): a test that needs the daemon to know a cgroup before a
    /// kill must not guess how long discovery takes on a loaded machine.
    pub fn wait_tracked(&self, cgroup: &str, timeout: Duration) {
        let label = format!("cgroup=\"{cgroup}\"");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let text = self.metrics();
            if text.lines().any(|l| l.starts_with("oomwatch_cgroup_memory_usage_bytes{") && l.contains(&label)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the daemon did not track {cgroup} within {timeout:?}:\n{}", self.log_text());
    }

    /// Stops the daemon; returns its exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: plain kill(2) of the pid we started.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("---- oomwatch daemon log ----\n{}\n----", self.log_text());
        }
    }
}

/// A minimal HTTP/1.0 GET (no client dependency needed for tests).
pub fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    Ok(resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

/// Value of one sample in a text exposition, by its full series text
/// (`name{labels}`), or None when the series is absent.
pub fn metric_value(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Writes `text` to a config file in `dir` and returns its path.
pub fn write_config(dir: &TempDir, text: &str) -> PathBuf {
    let path = dir.0.join("oomwatch.toml");
    fs::write(&path, text).unwrap();
    path
}

/// Sends a signal to a process this test started.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: plain kill(2).
    unsafe { libc::kill(pid as i32, sig) };
}

/// A minimal HTTP server on loopback that answers 200 to everything and
/// hands each request body to the test: a stand-in webhook receiver.
pub struct HttpCapture {
    pub port: u16,
    bodies: mpsc::Receiver<(String, String)>,
}

impl HttpCapture {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut request_line = String::new();
                    let _ = reader.read_line(&mut request_line);
                    let mut len = 0usize;
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; len];
                    let _ = reader.read_exact(&mut body);
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                    let _ = tx.send((request_line.trim().to_owned(), String::from_utf8_lossy(&body).into_owned()));
                });
            }
        });
        Self { port, bodies: rx }
    }

    /// The first request body (JSON) for which `pred` holds.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let (_, body) = self.bodies.recv_timeout(left).ok()?;
            if let Ok(v) = serde_json::from_str::<Value>(&body)
                && pred(&v)
            {
                return Some(v);
            }
        }
    }
}

/// A loopback port nobody listens on: a sink that is down.
pub fn closed_port() -> u16 {
    free_port()
}

// ---------------------------------------------------------------- tail

/// A client of the event stream: `oomwatch tail --json` as a user runs it
/// ([`Tail::start`]), or this process itself on the daemon's socket
/// ([`Tail::connect`]). Lines arrive with the monotonic time at which this
/// process read them.
pub struct Tail {
    child: Option<ChildGuard>,
    lines: mpsc::Receiver<(String, u64)>,
    pub seen: Vec<(Value, u64)>,
}

/// Reads `source` line by line on its own thread, stamping each line with
/// the monotonic time its read returned.
fn read_lines(source: impl std::io::Read + Send + 'static) -> mpsc::Receiver<(String, u64)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(source).lines() {
            let Ok(line) = line else { break };
            if tx.send((line, monotonic_ns())).is_err() {
                break;
            }
        }
    });
    rx
}

impl Tail {
    pub fn start(daemon: &Daemon, extra: &[&str]) -> Self {
        let mut child = Command::new(oomwatch_bin())
            .args(["tail", "--json", "--socket"])
            .arg(&daemon.socket)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start oomwatch tail");
        let lines = read_lines(child.stdout.take().unwrap());
        // Give the client time to connect and subscribe.
        std::thread::sleep(Duration::from_millis(200));
        Self { child: Some(ChildGuard(child)), lines, seen: Vec::new() }
    }

    /// A tail client in this process: `{"op":"tail"}` on the daemon's socket,
    /// the NDJSON stream read directly (no `oomwatch tail` process and no
    /// pipe between it and this one).
    pub fn connect(daemon: &Daemon) -> Self {
        Self::connect_with(daemon, r#"{"op":"tail"}"#)
    }

    /// As [`Tail::connect`], sending `request` (one JSON line) instead.
    pub fn connect_with(daemon: &Daemon, request: &str) -> Self {
        let mut stream = std::os::unix::net::UnixStream::connect(&daemon.socket)
            .unwrap_or_else(|e| panic!("connect {}: {e}", daemon.socket.display()));
        stream.write_all(format!("{request}\n").as_bytes()).expect("send the tail request");
        let lines = read_lines(stream);
        Self { child: None, lines, seen: Vec::new() }
    }

    /// The pid of the `oomwatch tail` process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("a Tail::start client").pid()
    }

    /// The first event (seen before or arriving within `timeout`) for which
    /// `pred` holds, with the time it was read.
    pub fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<(Value, u64)> {
        if let Some(hit) = self.seen.iter().find(|(v, _)| pred(v)) {
            return Some(hit.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let (line, at) = self.lines.recv_timeout(left).ok()?;
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("tail printed non-JSON {line:?}: {e}"));
            self.seen.push((v.clone(), at));
            if pred(&v) {
                return Some((v, at));
            }
        }
    }

    /// What `oomwatch tail` wrote to stderr (empty for [`Tail::connect`]).
    pub fn stderr(mut self) -> String {
        let mut s = String::new();
        let Some(child) = self.child.as_mut() else { return s };
        let _ = child.0.kill();
        if let Some(mut e) = child.0.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

#[cfg(test)]
mod sweep_tests {
    use super::*;

    #[test]
    fn creator_pid_comes_from_the_name_unique_makes() {
        assert_eq!(creator_pid("oomwatch-test-e2e-kill-32102-10"), Some(32102));
        assert_eq!(creator_pid(&format!("oomwatch-test-{}", unique("x"))), Some(std::process::id()));
        assert_eq!(creator_pid("oomwatch-test-32102-10"), None, "no name part");
        assert_eq!(creator_pid("oomwatch-selftest-1-2"), None);
        assert_eq!(creator_pid("oomwatch-test-a-b-c"), None);
    }
}

// ---------------------------------------------------------------- network clients

/// A TCP connection to `port` on 127.0.0.1 from `source`: every 127.0.0.0/8
/// address is on the loopback interface, so one test process can play
/// many clients of different addresses (a scraper, a probe, attackers).
pub fn connect_from(source: std::net::Ipv4Addr, port: u16, timeout: Duration) -> std::io::Result<TcpStream> {
    use std::net::SocketAddr;
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::from((source, 0)).into())?;
    socket.connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)).into(), timeout)?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(stream)
}

/// One HTTP/1.1 response as read off the wire.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Sends one HTTP/1.1 request on `stream` (kept alive unless `extra`
/// says otherwise) and reads exactly one response: by Content-Length, no
/// body for HEAD.
pub fn http_request(stream: &mut TcpStream, method: &str, path: &str, extra: &[(&str, &str)]) -> std::io::Result<HttpResponse> {
    use std::io::{Error, ErrorKind};
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (name, value) in extra {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = [0u8; 64 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(Error::new(ErrorKind::UnexpectedEof, "connection closed before a response"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).ok_or_else(|| Error::new(ErrorKind::InvalidData, head.clone()))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = if method == "HEAD" {
        0
    } else {
        headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0)
    };
    let mut body = buf[head_end..].to_vec();
    let chunked = method != "HEAD" && headers.iter().any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        // A /metrics scrape alone is sent as it is rendered, in chunks.
        let body = read_chunked(stream, body)?;
        return Ok(HttpResponse { status, headers, body });
    }
    while body.len() < len {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(Error::new(ErrorKind::UnexpectedEof, "connection closed in the body"));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    Ok(HttpResponse { status, headers, body })
}

/// A chunked body (RFC 9112 7.1, no trailers) from what was read after the
/// head and what follows on `stream`.
fn read_chunked(stream: &mut TcpStream, mut raw: Vec<u8>) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind};
    let mut chunk = [0u8; 64 * 1024];
    let mut more = |raw: &mut Vec<u8>| -> std::io::Result<()> {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(Error::new(ErrorKind::UnexpectedEof, "connection closed in a chunked body"));
        }
        raw.extend_from_slice(&chunk[..n]);
        Ok(())
    };
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let line_end = loop {
            if let Some(i) = raw[pos..].windows(2).position(|w| w == b"\r\n") {
                break pos + i;
            }
            more(&mut raw)?;
        };
        let size_text = String::from_utf8_lossy(&raw[pos..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| Error::new(ErrorKind::InvalidData, format!("chunk size {size_text:?}")))?;
        let data_start = line_end + 2;
        while raw.len() < data_start + size + 2 {
            more(&mut raw)?;
        }
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(&raw[data_start..data_start + size]);
        pos = data_start + size + 2;
    }
}

/// CPU time (user + system) a process has used so far, from /proc/PID/stat.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_else(|e| panic!("/proc/{pid}/stat: {e}"));
    // Fields after the command name, which may itself hold spaces and ')'.
    let rest = &stat[stat.rfind(')').expect("comm in /proc/PID/stat") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

/// Answer times of one kind of request, and what went wrong.
#[derive(Default, Debug)]
pub struct Latencies {
    pub times: Vec<Duration>,
    pub failures: Vec<String>,
}

impl Latencies {
    pub fn max(&self) -> Duration {
        self.times.iter().copied().max().unwrap_or_default()
    }

    pub fn percentile(&self, p: f64) -> Duration {
        let mut t = self.times.clone();
        t.sort();
        t.get(((t.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or_default()
    }

    pub fn summary(&self) -> String {
        format!(
            "{} answered (p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms), {} failed{}",
            self.times.len(),
            self.percentile(0.5).as_secs_f64() * 1e3,
            self.percentile(0.99).as_secs_f64() * 1e3,
            self.max().as_secs_f64() * 1e3,
            self.failures.len(),
            self.failures.first().map(|f| format!(" (first: {f})")).unwrap_or_default()
        )
    }
}

/// Threads that run until told to stop (or until the drop of this guard,
/// which also joins them): attackers and well-behaved clients alike.
pub struct Crowd<T: Send + 'static> {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<T>>,
}

impl<T: Send + 'static> Default for Crowd<T> {
    fn default() -> Self {
        Self { stop: Default::default(), threads: Vec::new() }
    }
}

impl<T: Send + 'static> Crowd<T> {
    /// Starts `f`, which must return soon after its `stop` flag is set.
    pub fn spawn(&mut self, f: impl FnOnce(&std::sync::atomic::AtomicBool) -> T + Send + 'static) {
        let stop = self.stop.clone();
        self.threads.push(std::thread::spawn(move || f(&stop)));
    }

    /// Stops every thread and returns what each returned.
    pub fn finish(mut self) -> Vec<T> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.threads.drain(..).filter_map(|t| t.join().ok()).collect()
    }
}

impl<T: Send + 'static> Drop for Crowd<T> {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
