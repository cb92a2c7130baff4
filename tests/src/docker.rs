//! A real Docker daemon for tests, kept inside a temporary directory and
//! this process's own cgroups (the recipe of docs/environment.md): its own
//! data and exec roots and socket, no bridge or iptables changes, the vfs
//! storage driver, and `--cgroup-parent` pointing at an
//! `oomwatch-test-docker-*` cgroup under our own memory cgroup. dockerd
//! starts its own containerd, which [`Docker::ctr`] also reaches (for
//! containerd tasks with CRI annotations).
//!
//! Installs nothing. Needs the Debian packages `docker.io` (dockerd, the
//! docker CLI, docker-init, containerd, ctr, runc) and `busybox-static`
//! (the only image content: no registry is reachable).
//!
//! Everything is undone on drop, also when the test failed: containers and
//! tasks are removed, dockerd is stopped by its pid file (then its
//! containerd, and any shim of that containerd still running, by pid),
//! processes left in the test's cgroups are killed, and the cgroup
//! directories Docker made are removed in every hierarchy, deepest first:
//! only those under our `oomwatch-test-docker-*` parent, the parent, and the
//! ancestors of the parent that did not exist before (runc creates our
//! memory cgroup's path in the other v1 hierarchies, where it was absent).
//! When the test process itself is killed, docker-init's parent-death
//! signal stops dockerd (gracefully: about 10 s with running containers),
//! and the next [`Docker::start`] removes what that run left (its cgroups,
//! from the record in its directory, mounts and the directory).

use std::{
    fs,
    io::{Read as _, Write as _},
    os::unix::{fs::OpenOptionsExt as _, net::UnixStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::{TempDir, memory_hierarchy, temp_dir, unique};

/// The busybox applets the image links; more can be run as `busybox <applet>`.
const APPLETS: &[&str] = &["sh", "sleep", "cat", "echo", "true", "ls", "ps", "kill"];

/// The image every [`Docker`] imports once, from `/bin/busybox`.
pub const IMAGE: &str = "oomwatch-test-busybox:1";

/// Finds a program of a Debian package, or fails naming the package.
fn program(candidates: &[&str], package: &str) -> PathBuf {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{} not found: install the Debian package {package} (apt-get install {package})",
                candidates[0]
            )
        })
}

/// Runs `cmd` with a timeout; kills it (by its pid) when it overruns.
/// `None` when it did not finish in time.
pub fn output_within(cmd: &mut Command, timeout: Duration) -> Option<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    // Drain both pipes on threads: a child that fills a pipe would never exit.
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    status.map(|status| Output {
        status,
        stdout,
        stderr,
    })
}

fn pid_alive(pid: u32) -> bool {
    // SAFETY: kill(pid, 0) only checks existence.
    pid > 0 && unsafe { libc::kill(pid as i32, 0) } == 0
}

fn signal(pid: u32, sig: i32) {
    if pid > 0 {
        // SAFETY: plain kill(2) of a pid this harness started.
        unsafe { libc::kill(pid as i32, sig) };
    }
}

fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !pid_alive(pid) || proc_state(pid) == Some('Z') {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn proc_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// `/proc/<pid>/cmdline` with NULs as spaces.
fn cmdline(pid: u32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Mount points of every cgroup hierarchy (v1 controllers, named ones, and
/// the unified tree), from our mountinfo.
fn cgroup_mounts() -> Vec<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            let mount_point = left.split_whitespace().nth(4)?;
            matches!(fstype, "cgroup" | "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .collect()
}

/// One container as `docker run` options.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    pub name: String,
    /// `-m` and `--memory-swap` (no swap).
    pub memory_bytes: Option<u64>,
    pub labels: Vec<(String, String)>,
    /// The command (run by the image's busybox).
    pub cmd: Vec<String>,
}

impl ContainerSpec {
    /// `name` running `sh -c script`, limited to 64 MiB without swap.
    pub fn shell(name: &str, script: &str) -> Self {
        Self {
            name: name.to_owned(),
            memory_bytes: Some(64 << 20),
            labels: Vec::new(),
            cmd: vec!["/bin/sh".into(), "-c".into(), script.into()],
        }
    }

    /// The labels cri-dockerd puts on a pod's container (and its name,
    /// `k8s_<container>_<pod>_<namespace>_<uid>_<attempt>`).
    pub fn kubernetes(
        mut self,
        pod: &str,
        namespace: &str,
        container: &str,
        pod_uid: &str,
    ) -> Self {
        self.name = format!("k8s_{container}_{pod}_{namespace}_{pod_uid}_0");
        self.labels = [
            ("io.kubernetes.pod.name", pod),
            ("io.kubernetes.pod.namespace", namespace),
            ("io.kubernetes.pod.uid", pod_uid),
            ("io.kubernetes.container.name", container),
            ("io.kubernetes.docker.type", "container"),
            (
                "io.kubernetes.sandbox.id",
                "5f0c4a0ba4e0b1d2c3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6",
            ),
            ("annotation.io.kubernetes.container.restartCount", "0"),
            (
                "annotation.io.kubernetes.container.terminationMessagePath",
                "/dev/termination-log",
            ),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        self
    }
}

/// What [`Docker::run_cri_task`] puts in a task's CRI annotations.
#[derive(Debug, Clone, Copy)]
pub struct CriTaskSpec<'a> {
    /// The task id (also its cgroup's name).
    pub id: &'a str,
    pub pod: &'a str,
    pub namespace: &'a str,
    pub container: &'a str,
    pub pod_uid: &'a str,
    pub image: &'a str,
    pub cmd: &'a [&'a str],
}

/// A containerd task started with `ctr run` and CRI annotations.
#[derive(Debug, Clone)]
pub struct CtrTask {
    pub namespace: String,
    pub id: String,
    pub pid: u32,
}

/// dockerd (and the containerd it starts), private to one test.
pub struct Docker {
    dir: TempDir,
    pub data_root: PathBuf,
    pub exec_root: PathBuf,
    pub socket: PathBuf,
    /// `--cgroup-parent`, as a cgroup path: `<our memory cgroup>/oomwatch-test-docker-<pid>-<n>`.
    pub cgroup_parent: String,
    pid_file: PathBuf,
    log: PathBuf,
    docker_bin: PathBuf,
    ctr_bin: PathBuf,
    /// docker-init (tini) as subreaper, with dockerd as its child.
    supervisor: Option<Child>,
    dockerd_pid: u32,
    containerd_pid: u32,
    cgroups: CgroupRecord,
    tasks: Vec<CtrTask>,
}

impl Docker {
    /// Starts dockerd and imports [`IMAGE`]. Panics (after cleaning up)
    /// when it does not come up within a minute.
    pub fn start() -> Self {
        let dockerd = program(&["/usr/sbin/dockerd", "/usr/bin/dockerd"], "docker.io");
        let docker_init = program(&["/usr/bin/docker-init"], "docker.io");
        // The docker.io CLI, not whichever docker is first on PATH.
        let docker_bin = program(&["/usr/bin/docker"], "docker.io");
        let ctr_bin = program(&["/usr/bin/ctr"], "docker.io (containerd)");
        program(&["/usr/bin/containerd"], "docker.io (containerd)");
        program(&["/usr/sbin/runc", "/usr/bin/runc"], "docker.io (runc)");

        sweep_stale_runs();
        let dir = temp_dir("docker");
        let root = dir.0.clone();
        let memory = memory_hierarchy();
        let cgroup_parent = format!(
            "{}/oomwatch-test-{}",
            memory.own.trim_end_matches('/'),
            unique("docker")
        );
        // runc creates the parent's path in every hierarchy; in the v1
        // hierarchies other than memory our own path is usually absent.
        // Daemons of parallel tests share those ancestors: whichever stops
        // last removes them, so they are remembered for the whole process.
        let absent_ancestors = {
            let mut absent = ABSENT_ANCESTORS.lock().unwrap_or_else(|e| e.into_inner());
            for mount in &cgroup_mounts() {
                let mut dir = mount.clone();
                for component in Path::new(&cgroup_parent)
                    .parent()
                    .unwrap_or(Path::new("/"))
                    .components()
                    .skip(1)
                {
                    dir.push(component);
                    if !dir.exists() && !absent.contains(&dir) {
                        absent.push(dir.clone());
                    }
                }
            }
            absent.clone()
        };

        let mut docker = Self {
            data_root: root.join("data"),
            exec_root: root.join("exec"),
            socket: root.join("docker.sock"),
            pid_file: root.join("docker.pid"),
            log: root.join("dockerd.log"),
            cgroups: CgroupRecord {
                cgroup_parent: cgroup_parent.clone(),
                absent_ancestors,
            },
            cgroup_parent,
            docker_bin,
            ctr_bin,
            supervisor: None,
            dockerd_pid: 0,
            containerd_pid: 0,
            tasks: Vec::new(),
            dir,
        };
        docker.cgroups.write(&docker.dir.0);
        let log = fs::File::create(&docker.log).expect("create dockerd.log");
        let child = Command::new(docker_init)
            // Subreaper: shims re-parent to it and are reaped (this host's
            // PID 1 does not reap). -p: stop dockerd if this test dies.
            .args(["-s", "-p", "SIGTERM", "--"])
            .arg(dockerd)
            .arg("--data-root")
            .arg(&docker.data_root)
            .arg("--exec-root")
            .arg(&docker.exec_root)
            .arg("-H")
            .arg(format!("unix://{}", docker.socket.display()))
            .arg("--pidfile")
            .arg(&docker.pid_file)
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip-masq=false",
                "--ip-forward=false",
            ])
            .args(["--storage-driver=vfs", "--log-level=info"])
            .arg(format!("--cgroup-parent={}", docker.cgroup_parent))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("start docker-init -- dockerd");
        docker.supervisor = Some(child);
        docker.wait_ready(Duration::from_secs(60));
        docker.import_image();
        docker
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut first_answer: Option<Instant> = None;
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.supervisor.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "dockerd exited during start ({status}):\n{}",
                    self.log_text()
                );
            }
            if self.dockerd_pid == 0 {
                self.dockerd_pid = fs::read_to_string(&self.pid_file)
                    .ok()
                    .and_then(|p| p.trim().parse().ok())
                    .unwrap_or(0);
            }
            if self.dockerd_pid != 0 && self.ping() {
                // Read after the ping: dockerd answers only once its
                // containerd runs, and the pid file may be written just
                // before that (read before the ping, it raced).
                self.containerd_pid =
                    fs::read_to_string(self.exec_root.join("containerd/containerd.pid"))
                        .ok()
                        .and_then(|p| p.trim().parse().ok())
                        .unwrap_or(0);
                if self.containerd_pid != 0 {
                    return;
                }
                let answered = *first_answer.get_or_insert_with(Instant::now);
                assert!(
                    answered.elapsed() < Duration::from_secs(5),
                    "dockerd came up without its own containerd (a system containerd at /run/containerd/containerd.sock would be shared with the host):\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("dockerd not ready after {timeout:?}:\n{}", self.log_text());
    }

    /// `GET /_ping` on the Engine API socket.
    fn ping(&self) -> bool {
        let Ok(mut s) = UnixStream::connect(&self.socket) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        resp.starts_with("HTTP/1.0 200") || resp.starts_with("HTTP/1.1 200")
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// dockerd's pid (from its pid file).
    pub fn dockerd_pid(&self) -> u32 {
        self.dockerd_pid
    }

    /// containerd's state directory, as [`RuntimeRoots`]' `containerd_state`
    /// wants it: dockerd's managed containerd keeps it under the exec root.
    pub fn containerd_state(&self) -> PathBuf {
        self.exec_root.join("containerd/daemon")
    }

    pub fn containerd_socket(&self) -> PathBuf {
        self.exec_root.join("containerd/containerd.sock")
    }

    /// The docker CLI of docker.io, talking to this daemon.
    pub fn cli(&self) -> Command {
        let mut cmd = Command::new(&self.docker_bin);
        cmd.env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("DOCKER_CONFIG", self.dir.0.join("cli-config"));
        cmd
    }

    /// Runs the CLI (30 s at most) and returns stdout; panics with stderr
    /// and the daemon's log on failure.
    pub fn docker(&self, args: &[&str]) -> String {
        let out = output_within(self.cli().args(args), Duration::from_secs(30))
            .unwrap_or_else(|| panic!("docker {args:?} did not finish in 30 s"));
        assert!(
            out.status.success(),
            "docker {args:?}: {}\n{}\n---- dockerd log ----\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `ctr` on dockerd's containerd, in a containerd namespace.
    pub fn ctr(&self, namespace: &str) -> Command {
        let mut cmd = Command::new(&self.ctr_bin);
        cmd.arg("--address")
            .arg(self.containerd_socket())
            .args(["--namespace", namespace]);
        cmd
    }

    fn import_image(&self) {
        let image_dir = self.dir.0.join("image");
        let bin = image_dir.join("bin");
        fs::create_dir_all(&bin).expect("mkdir image/bin");
        let busybox = program(&["/bin/busybox", "/usr/bin/busybox"], "busybox-static");
        fs::copy(&busybox, bin.join("busybox")).expect("copy busybox");
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("link applet");
        }
        for empty in ["proc", "sys", "dev", "tmp", "etc"] {
            fs::create_dir_all(image_dir.join(empty)).expect("mkdir image dir");
        }
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(&image_dir)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .expect("run tar");
        let out = self
            .cli()
            .args(["import", "-", IMAGE])
            .stdin(tar.stdout.take().expect("tar stdout"))
            .output()
            .expect("docker import");
        let tar_status = tar.wait().expect("wait for tar");
        assert!(
            tar_status.success(),
            "tar of the image directory: {tar_status}"
        );
        assert!(
            out.status.success(),
            "docker import: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
    }

    /// `docker run -d` with `--network none` and the spec's memory limit
    /// (no swap). Returns the full container id.
    pub fn run(&self, spec: &ContainerSpec) -> String {
        let mut args: Vec<String> = vec![
            "run".into(),
            "-d".into(),
            "--network".into(),
            "none".into(),
            "--name".into(),
            spec.name.clone(),
        ];
        if let Some(bytes) = spec.memory_bytes {
            args.extend([
                "-m".into(),
                bytes.to_string(),
                "--memory-swap".into(),
                bytes.to_string(),
            ]);
        }
        for (k, v) in &spec.labels {
            args.extend(["--label".into(), format!("{k}={v}")]);
        }
        args.push(IMAGE.into());
        args.extend(spec.cmd.iter().cloned());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let id = self.docker(&refs);
        assert!(
            id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "docker run printed {id:?}"
        );
        id
    }

    /// `docker inspect -f FORMAT ID`.
    pub fn inspect(&self, id: &str, format: &str) -> String {
        self.docker(&["inspect", "-f", format, id])
    }

    /// Actions of a container's events between two unix times (e.g.
    /// `create`, `start`, `oom`, `die`): Docker's own record.
    pub fn events(&self, id: &str, since: u64, until: u64) -> Vec<String> {
        let out = self.docker(&[
            "events",
            "--since",
            &since.to_string(),
            "--until",
            &until.to_string(),
            "--filter",
            &format!("container={id}"),
            "--format",
            "{{.Action}}",
        ]);
        out.lines().map(str::to_owned).collect()
    }

    /// The container's cgroup path (as oomwatch reports it): runc puts it
    /// at `<cgroup-parent>/<id>` in every hierarchy.
    pub fn cgroup_path(&self, id: &str) -> String {
        format!("{}/{id}", self.cgroup_parent)
    }

    /// The container's directory in the memory hierarchy.
    pub fn memory_cgroup_dir(&self, id: &str) -> PathBuf {
        let h = memory_hierarchy();
        h.mount.join(self.cgroup_path(id).trim_start_matches('/'))
    }

    /// Starts a containerd task the way the CRI plugin would describe it:
    /// in namespace `k8s.io`, with the `io.kubernetes.cri.*` annotations,
    /// its cgroup under our parent, limited to 64 MiB. The rootfs is a copy
    /// of the image directory.
    pub fn run_cri_task(&mut self, spec: &CriTaskSpec) -> CtrTask {
        let CriTaskSpec {
            id,
            pod,
            namespace,
            container,
            pod_uid,
            image,
            cmd,
        } = *spec;
        let rootfs = self.dir.0.join(format!("rootfs-{id}"));
        let status = Command::new("cp")
            .arg("-a")
            .arg(self.dir.0.join("image"))
            .arg(&rootfs)
            .status()
            .expect("cp rootfs");
        assert!(status.success(), "copying the rootfs failed");
        let annotations = [
            ("io.kubernetes.cri.container-type", "container"),
            ("io.kubernetes.cri.container-name", container),
            (
                "io.kubernetes.cri.sandbox-id",
                "7d0f0bb4e9b6c3e3c0a6d1c8f1b2a3c4d5e6f708192a3b4c5d6e7f8091a2b3c4",
            ),
            ("io.kubernetes.cri.sandbox-name", pod),
            ("io.kubernetes.cri.sandbox-namespace", namespace),
            ("io.kubernetes.cri.sandbox-uid", pod_uid),
            ("io.kubernetes.cri.image-name", image),
        ];
        let mut ctr = self.ctr("k8s.io");
        ctr.args(["run", "-d", "--memory-limit", &(64u64 << 20).to_string()])
            .arg("--cgroup")
            .arg(self.cgroup_path(id));
        for (k, v) in annotations {
            ctr.arg("--annotation").arg(format!("{k}={v}"));
        }
        ctr.arg("--rootfs").arg(&rootfs).arg(id).args(cmd);
        let out = output_within(&mut ctr, Duration::from_secs(30))
            .expect("ctr run did not finish in 30 s");
        assert!(
            out.status.success(),
            "ctr run: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        let task = CtrTask {
            namespace: "k8s.io".into(),
            id: id.to_owned(),
            pid: 0,
        };
        self.tasks.push(task.clone());
        let ls = output_within(
            self.ctr("k8s.io").args(["task", "ls"]),
            Duration::from_secs(30),
        )
        .expect("ctr task ls");
        let pid = String::from_utf8_lossy(&ls.stdout)
            .lines()
            .find_map(|l| {
                let mut f = l.split_whitespace();
                (f.next() == Some(id))
                    .then(|| f.next()?.parse::<u32>().ok())
                    .flatten()
            })
            .unwrap_or_else(|| {
                panic!(
                    "task {id} not in `ctr task ls`: {}",
                    String::from_utf8_lossy(&ls.stdout)
                )
            });
        CtrTask { pid, ..task }
    }

    fn remove_tasks(&mut self) {
        for task in std::mem::take(&mut self.tasks) {
            let t = Duration::from_secs(20);
            let _ = output_within(
                self.ctr(&task.namespace)
                    .args(["task", "kill", "-s", "SIGKILL", &task.id]),
                t,
            );
            // The task must have exited before it can be deleted.
            let deadline = Instant::now() + t;
            loop {
                let out = output_within(
                    self.ctr(&task.namespace).args(["task", "delete", &task.id]),
                    t,
                );
                let gone = out.is_some_and(|o| {
                    o.status.success() || String::from_utf8_lossy(&o.stderr).contains("not found")
                });
                if gone || Instant::now() >= deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = output_within(
                self.ctr(&task.namespace)
                    .args(["container", "delete", &task.id]),
                t,
            );
        }
    }

    fn remove_containers(&self) {
        let t = Duration::from_secs(30);
        let Some(out) = output_within(self.cli().args(["ps", "-aq", "--no-trunc"]), t) else {
            eprintln!("docker cleanup: `docker ps` did not answer within {t:?}");
            return;
        };
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        if !ids.is_empty()
            && output_within(self.cli().args(["rm", "-f", "-v"]).args(&ids), t).is_none()
        {
            eprintln!("docker cleanup: `docker rm -f` did not finish within {t:?}");
        }
    }

    fn stop_daemons(&mut self) {
        // A test may have stopped dockerd (SIGSTOP) and failed before resuming it.
        signal(self.dockerd_pid, libc::SIGCONT);
        if self.dockerd_pid != 0
            && cmdline(self.dockerd_pid).contains(self.dir.0.to_string_lossy().as_ref())
        {
            signal(self.dockerd_pid, libc::SIGTERM);
            if !wait_gone(self.dockerd_pid, Duration::from_secs(30)) {
                eprintln!(
                    "docker cleanup: dockerd {} ignored SIGTERM for 30 s; killing it",
                    self.dockerd_pid
                );
                signal(self.dockerd_pid, libc::SIGKILL);
            }
        }
        if let Some(mut child) = self.supervisor.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !matches!(child.try_wait(), Ok(Some(_))) {
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // dockerd stops its containerd on the way out; make sure, by pid,
        // of the containerd and shims this daemon started (they carry our
        // temporary directory on their command line; shims are in the
        // session containerd made).
        let ours = |pid: u32| cmdline(pid).contains(self.dir.0.to_string_lossy().as_ref());
        let mut leftovers = Vec::new();
        if self.containerd_pid != 0 && pid_alive(self.containerd_pid) && ours(self.containerd_pid) {
            leftovers.push(self.containerd_pid);
        }
        if self.containerd_pid != 0
            && let Ok(entries) = fs::read_dir("/proc")
        {
            for pid in entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            {
                let session = fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| {
                        s.rsplit_once(')')?
                            .1
                            .split_whitespace()
                            .nth(3)?
                            .parse::<u32>()
                            .ok()
                    });
                if session == Some(self.containerd_pid) && pid != self.containerd_pid && ours(pid) {
                    leftovers.push(pid);
                }
            }
        }
        for pid in leftovers {
            eprintln!("docker cleanup: stopping leftover {pid} ({})", cmdline(pid));
            signal(pid, libc::SIGTERM);
            if !wait_gone(pid, Duration::from_secs(10)) {
                signal(pid, libc::SIGKILL);
                wait_gone(pid, Duration::from_secs(5));
            }
        }
    }
}

/// Cgroup directories absent before a [`Docker`] of this process started
/// (see [`Docker::start`]).
static ABSENT_ANCESTORS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// What a run leaves to undo besides processes: the cgroup directories
/// runc made and the ancestors of our parent that were absent before,
/// mounts under the temporary directory, and the directory itself. Also
/// written to `<dir>/cleanup`, so that a later run can undo a run whose
/// test process was killed before its drop guard ran.
struct CgroupRecord {
    cgroup_parent: String,
    absent_ancestors: Vec<PathBuf>,
}

impl CgroupRecord {
    const FILE: &'static str = "cleanup";

    fn write(&self, dir: &Path) {
        let mut text = format!("parent\t{}\n", self.cgroup_parent);
        for a in &self.absent_ancestors {
            text.push_str(&format!("ancestor\t{}\n", a.display()));
        }
        fs::write(dir.join(Self::FILE), text).expect("write the cleanup record");
    }

    fn read(dir: &Path) -> Option<Self> {
        let text = fs::read_to_string(dir.join(Self::FILE)).ok()?;
        let mut record = Self {
            cgroup_parent: String::new(),
            absent_ancestors: Vec::new(),
        };
        for line in text.lines() {
            match line.split_once('\t')? {
                ("parent", p) => record.cgroup_parent = p.to_owned(),
                ("ancestor", a) => record.absent_ancestors.push(PathBuf::from(a)),
                _ => return None,
            }
        }
        // Only ever a parent this harness names.
        let leaf = Path::new(&record.cgroup_parent).file_name()?.to_str()?;
        leaf.starts_with("oomwatch-test-docker-").then_some(record)
    }

    /// Kills what is left in the parent's cgroups (container processes of
    /// the run), then removes the directories, deepest first, in every
    /// hierarchy; then the ancestors that were absent, when empty.
    fn remove(&self) {
        let relative = self.cgroup_parent.trim_start_matches('/');
        for mount in cgroup_mounts() {
            let parent = mount.join(relative);
            if !parent.exists() {
                continue;
            }
            let mut dirs = Vec::new();
            collect_dirs(&parent, &mut dirs);
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            for dir in dirs {
                remove_cgroup_dir(&dir);
            }
        }
        let mut absent = ABSENT_ANCESTORS.lock().unwrap_or_else(|e| e.into_inner());
        let mut ancestors: Vec<PathBuf> = self
            .absent_ancestors
            .iter()
            .chain(absent.iter())
            .cloned()
            .collect();
        ancestors.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        ancestors.dedup();
        for dir in ancestors {
            // Only when empty: another test's daemon may be using it now
            // (then that one removes it when it stops).
            let _ = fs::remove_dir(&dir);
        }
        absent.retain(|d| d.exists());
    }
}

/// Unmounts what is still mounted under `dir` (dockerd unmounts its own on
/// a clean shutdown; not when it was killed).
fn unmount_under(dir: &Path) {
    let prefix = format!("{}/", dir.display());
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<&str> = mountinfo
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let c = std::ffi::CString::new(point).expect("mount point without NUL");
        // SAFETY: umount2 with a valid C string.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            eprintln!(
                "docker cleanup: umount {point}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Undoes runs of this harness whose test process died before its drop
/// guard ran (SIGKILL, a timeout): their temporary directory names the
/// creating pid ([`unique`]). dockerd itself stops when its test dies
/// (docker-init's parent-death signal); a run is swept once its dockerd
/// is gone.
fn sweep_stale_runs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("oomwatch-test-docker-") {
            continue;
        }
        let Some(pid) = crate::creator_pid(&name) else {
            continue;
        };
        if pid == std::process::id() || pid_alive(pid) {
            continue;
        }
        let dir = entry.path();
        let dockerd = fs::read_to_string(dir.join("docker.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
        if dockerd
            .is_some_and(|d| pid_alive(d) && cmdline(d).contains(dir.to_string_lossy().as_ref()))
        {
            eprintln!(
                "{} is left by test process {pid}; its dockerd is still stopping",
                dir.display()
            );
            continue;
        }
        if let Some(record) = CgroupRecord::read(&dir) {
            record.remove();
        }
        unmount_under(&dir);
        if fs::remove_dir_all(&dir).is_ok() {
            eprintln!(
                "removed {} (left by test process {pid}, which no longer exists)",
                dir.display()
            );
        }
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

fn remove_cgroup_dir(dir: &Path) {
    for _ in 0..50 {
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
            signal(pid, libc::SIGKILL);
        }
        if fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("docker cleanup: could not remove {}", dir.display());
}

impl Drop for Docker {
    fn drop(&mut self) {
        signal(self.dockerd_pid, libc::SIGCONT);
        if std::thread::panicking() {
            eprintln!(
                "---- dockerd log ({}) ----\n{}\n----",
                self.log.display(),
                self.log_text()
            );
        }
        self.remove_tasks();
        self.remove_containers();
        self.stop_daemons();
        self.cgroups.remove();
        unmount_under(&self.dir.0);
    }
}

/// Follows the kernel log (`/dev/kmsg`) from the moment it is opened, so
/// a test reads the records of its own kills rather than a dump the small
/// ring buffer may already have overwritten.
pub struct KernelLog {
    file: fs::File,
}

impl KernelLog {
    pub fn follow() -> Self {
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")
            .expect("open /dev/kmsg (needs root)");
        // SAFETY: lseek on an fd we own; SEEK_END on /dev/kmsg skips to the
        // next record to come.
        unsafe { libc::lseek(std::os::fd::AsRawFd::as_raw_fd(&file), 0, libc::SEEK_END) };
        Self { file }
    }

    /// The first message (text after the `prio,seq,ts,flags;` prefix) for
    /// which `pred` holds, within `timeout`.
    pub fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 8192];
        while Instant::now() < deadline {
            match self.file.read(&mut buf) {
                Ok(n) if n > 0 => {
                    let record = String::from_utf8_lossy(&buf[..n]);
                    let message = record.split_once(';').map(|(_, m)| m).unwrap_or(&record);
                    let message = message.lines().next().unwrap_or("").to_owned();
                    if pred(&message) {
                        return Some(message);
                    }
                }
                // EAGAIN: nothing new; EPIPE: records were overwritten, go on.
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        None
    }
}

/// From the kernel's `oom-kill:constraint=...,task_memcg=<path>,task=<comm>,pid=<pid>,uid=<uid>`
/// line: the victim's memory cgroup and pid.
pub fn oom_kill_line(message: &str) -> Option<(String, u32)> {
    let rest = message.strip_prefix("oom-kill:")?;
    let mut memcg = None;
    let mut pid = None;
    for field in rest.split(',') {
        if let Some(v) = field.strip_prefix("task_memcg=") {
            memcg = Some(v.to_owned());
        } else if let Some(v) = field.strip_prefix("pid=") {
            pid = v.parse().ok();
        }
    }
    Some((memcg?, pid?))
}
