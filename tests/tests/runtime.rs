//! Workload names from a real container runtime's records: a private
//! dockerd (tests/src/docker.rs) runs containers labelled as cri-dockerd
//! labels them, and containerd tasks annotated as the CRI plugin annotates
//! them; `oomwatch::readers::runtime` must name them as Docker and
//! containerd themselves do (`docker inspect`, `ctr task ls`), and tell a
//! container's main process from its other processes when the kernel
//! OOM-kills one (the kernel's own `oom-kill:` line says which pid died).

use std::{
    path::Path,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use oomwatch::readers::labels_for;
use oomwatch::readers::runtime::{
    ContainerKind, ContainerMeta, MainProcess, Runtime, RuntimeRoots, WorkloadKey,
    is_pid_namespace_init, lookup, lookup_containerd, lookup_docker, main_process,
};
use oomwatch_tests::docker::{
    ContainerSpec, CriTaskSpec, Docker, IMAGE, KernelLog, oom_kill_line, output_within,
};
use oomwatch_tests::{ChildGuard, Daemon, Tail, oomwatch_bin, require_root, temp_dir, write_config};

const POD_UID: &str = "1f2e3d4c-5b6a-4978-8a9b-0c1d2e3f4a5b";

/// The daemon's roots, with the runtimes this host does not run here
/// pointed at directories that do not exist (so the host's own state, if
/// any, cannot answer for them).
fn roots(docker: &Docker) -> RuntimeRoots {
    let nowhere = docker.data_root.join("not-here");
    RuntimeRoots {
        docker_data_root: docker.data_root.clone(),
        containerd_state: docker.containerd_state(),
        storage_graph_root: nowhere.join("graph"),
        storage_run_root: nowhere.join("run"),
        pod_logs: nowhere.join("pods"),
        container_logs: nowhere.join("containers"),
    }
}

/// The lookup as the daemon will make it: from what the cgroup path says.
fn lookup_by_cgroup(roots: &RuntimeRoots, cgroup_path: &str) -> Option<ContainerMeta> {
    let labels = labels_for(cgroup_path);
    let id = labels
        .container_id
        .as_deref()
        .unwrap_or_else(|| panic!("labels_for({cgroup_path:?}) found no container id"));
    let key = WorkloadKey {
        container_id: id,
        runtime: labels.runtime.and_then(Runtime::from_name),
        pod_uid: labels.pod_uid.as_deref(),
    };
    lookup(roots, &key).unwrap_or_else(|e| panic!("lookup of {id}: {e}"))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn random_id() -> String {
    let mut buf = [0u8; 32];
    let mut f = std::fs::File::open("/dev/urandom").expect("open /dev/urandom");
    std::io::Read::read_exact(&mut f, &mut buf).expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn pid_of(docker: &Docker, id: &str) -> u32 {
    docker
        .inspect(id, "{{.State.Pid}}")
        .parse()
        .expect("State.Pid is a number")
}

/// Every hierarchy's line of /proc/<pid>/cgroup names `want`.
fn assert_cgroups(pid: u32, want: &str) {
    let text =
        std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("read /proc/<pid>/cgroup");
    eprintln!("/proc/{pid}/cgroup:\n{text}");
    for line in text.lines() {
        let path = line.splitn(3, ':').nth(2).unwrap_or("");
        assert_eq!(path, want, "{line}");
    }
}

#[test]
fn names_a_docker_container_from_dockerds_own_records() {
    if !require_root("names_a_docker_container_from_dockerds_own_records") {
        return;
    }
    let docker = Docker::start();
    let roots = roots(&docker);

    let spec = ContainerSpec::shell("unused", "exec sleep 1000")
        .kubernetes("web-7d9f", "shop", "frontend", POD_UID);
    let id = docker.run(&spec);
    let pid = pid_of(&docker, &id);
    let cgroup = docker.cgroup_path(&id);
    assert_cgroups(pid, &cgroup);
    assert!(
        docker
            .memory_cgroup_dir(&id)
            .join("memory.limit_in_bytes")
            .exists()
    );

    // The path alone gives the id; with --cgroup-parent it cannot name the
    // runtime, which the lookup then finds by the records.
    let labels = labels_for(&cgroup);
    assert_eq!(
        labels.container_id.as_deref(),
        Some(id.as_str()),
        "{cgroup}"
    );
    assert_eq!(labels.runtime, None, "{cgroup}");

    let meta = lookup_by_cgroup(&roots, &cgroup).expect("dockerd's records name the container");
    let want = ContainerMeta {
        id: id.clone(),
        runtime: Some(Runtime::Docker),
        name: Some(format!("k8s_frontend_web-7d9f_shop_{POD_UID}_0")),
        image: Some(IMAGE.into()),
        image_id: Some(docker.inspect(&id, "{{.Image}}")),
        pod: Some("web-7d9f".into()),
        namespace: Some("shop".into()),
        container: Some("frontend".into()),
        pod_uid: Some(POD_UID.into()),
        kind: Some(ContainerKind::Container),
        init_pid: Some(pid),
    };
    assert_eq!(meta, want);
    // What Docker itself says, for the same fields.
    assert_eq!(docker.inspect(&id, "{{.Name}}"), format!("/{}", spec.name));
    assert_eq!(docker.inspect(&id, "{{.Config.Image}}"), IMAGE);
    assert_eq!(
        docker.inspect(
            &id,
            "{{index .Config.Labels \"io.kubernetes.pod.namespace\"}}"
        ),
        "shop"
    );
    // The runtime hint the daemon has for docker-<id>.scope paths gives the same.
    let hinted = lookup(
        &roots,
        &WorkloadKey {
            container_id: &id,
            runtime: Some(Runtime::Docker),
            pod_uid: None,
        },
    )
    .unwrap();
    assert_eq!(hinted.as_ref(), Some(&want));

    // The same container as a containerd task (namespace moby): no names,
    // but the same init pid, from containerd's init.pid.
    let task = lookup_containerd(&roots, &id)
        .unwrap()
        .expect("the moby task bundle");
    assert_eq!(
        (task.runtime, task.init_pid, task.name.as_deref()),
        (Some(Runtime::Docker), Some(pid), None)
    );

    assert_eq!(main_process(meta.init_pid, pid), MainProcess::Main);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert_eq!(
        is_pid_namespace_init(&status),
        Some(true),
        "PID 1 of its pid namespace"
    );

    // A plain container: a name and an image, nothing of Kubernetes.
    let plain = docker.run(&ContainerSpec::shell("web-frontend", "exec sleep 1000"));
    let meta = lookup_by_cgroup(&roots, &docker.cgroup_path(&plain)).expect("named");
    assert_eq!(meta.name.as_deref(), Some("web-frontend"));
    assert_eq!(meta.image.as_deref(), Some(IMAGE));
    assert_eq!(
        (
            meta.pod,
            meta.namespace,
            meta.container,
            meta.pod_uid,
            meta.kind
        ),
        (None, None, None, None, None)
    );
    assert_eq!(meta.init_pid, Some(pid_of(&docker, &plain)));

    // Unknown ids are not errors.
    assert_eq!(lookup_docker(&roots, &"a".repeat(64)).unwrap(), None);
}

/// Waits for the kernel's `oom-kill:` lines of the given cgroups; returns
/// the victim pid of each, in order.
fn victims(kmsg: &mut KernelLog, cgroups: &[String], timeout: Duration) -> Vec<u32> {
    let deadline = Instant::now() + timeout;
    let mut found = vec![None; cgroups.len()];
    while found.iter().any(Option::is_none) {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| {
                panic!(
                    "no oom-kill line for {:?} within {timeout:?}",
                    cgroups
                        .iter()
                        .zip(&found)
                        .filter(|(_, f)| f.is_none())
                        .map(|(c, _)| c)
                        .collect::<Vec<_>>()
                )
            });
        let Some(line) = kmsg.wait_for(left, |m| m.starts_with("oom-kill:")) else {
            continue;
        };
        eprintln!("kernel: {line}");
        if let Some((memcg, pid)) = oom_kill_line(&line)
            && let Some(i) = cgroups.iter().position(|c| *c == memcg)
        {
            found[i] = Some(pid);
        }
    }
    found
        .into_iter()
        .map(|p| p.expect("every victim found"))
        .collect()
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn tells_the_main_process_from_others_when_the_kernel_kills_one() {
    if !require_root("tells_the_main_process_from_others_when_the_kernel_kills_one") {
        return;
    }
    let docker = Docker::start();
    let roots = roots(&docker);
    let mut kmsg = KernelLog::follow();
    let since = unix_now();

    // PID 1 itself grows a string until the 64 MiB limit; it sleeps first
    // so the lookup (made when the container appears) sees it running.
    let main = docker.run(
        &ContainerSpec::shell("unused", "sleep 1; x=a; while :; do x=$x$x; done").kubernetes(
            "hog-main-5c8d",
            "batch",
            "hog",
            POD_UID,
        ),
    );
    // A child grows it; PID 1 waits, says so, and lives on.
    let child = docker.run(&ContainerSpec::shell(
        "hog-child",
        "sh -c 'sleep 1; x=a; while :; do x=$x$x; done'; echo child-died; exec sleep 1000",
    ));
    let main_meta =
        lookup_by_cgroup(&roots, &docker.cgroup_path(&main)).expect("named before the kill");
    let child_meta =
        lookup_by_cgroup(&roots, &docker.cgroup_path(&child)).expect("named before the kill");
    let child_init = child_meta
        .init_pid
        .expect("init pid of a running container");
    assert!(main_meta.init_pid.is_some(), "{main_meta:?}");

    let killed = victims(
        &mut kmsg,
        &[docker.cgroup_path(&main), docker.cgroup_path(&child)],
        Duration::from_secs(60),
    );
    eprintln!(
        "victims: main container {} (init {:?}), child container {} (init {child_init})",
        killed[0], main_meta.init_pid, killed[1]
    );
    assert_eq!(
        main_process(main_meta.init_pid, killed[0]),
        MainProcess::Main
    );
    assert_eq!(
        main_process(child_meta.init_pid, killed[1]),
        MainProcess::NotMain
    );

    // Docker's own record agrees: the first container died of the OOM
    // kill, the second runs on with its PID 1 (and says its child died).
    assert!(wait_until(Duration::from_secs(30), || docker
        .inspect(&main, "{{.State.Status}}")
        == "exited"));
    assert_eq!(
        docker.inspect(&main, "{{.State.OOMKilled}} {{.State.ExitCode}}"),
        "true 137"
    );
    assert!(wait_until(Duration::from_secs(30), || docker
        .docker(&["logs", &child])
        .contains("child-died")));
    assert_eq!(
        docker.inspect(&child, "{{.State.Running}} {{.State.Pid}}"),
        format!("true {child_init}")
    );
    let oom_control =
        std::fs::read_to_string(docker.memory_cgroup_dir(&child).join("memory.oom_control"))
            .unwrap();
    assert!(
        oom_control.lines().any(|l| l == "oom_kill 1"),
        "{oom_control}"
    );
    let until = unix_now() + 1;
    let main_events = docker.events(&main, since, until);
    let child_events = docker.events(&child, since, until);
    eprintln!("docker events: {main_events:?} / {child_events:?}");
    assert!(
        main_events.iter().any(|a| a == "oom") && main_events.iter().any(|a| a == "die"),
        "{main_events:?}"
    );
    // Docker reports the OOM event of the container's cgroup even though
    // its PID 1 survived; Kubernetes would not (kubernetes#78973).
    assert!(
        child_events.iter().any(|a| a == "oom") && !child_events.iter().any(|a| a == "die"),
        "{child_events:?}"
    );

    // After the container died its names are still on disk (until `docker
    // rm`): a lookup made after the kill still names it, without a pid.
    let after =
        lookup_by_cgroup(&roots, &docker.cgroup_path(&main)).expect("still named after exit");
    assert_eq!(
        (
            after.pod.as_deref(),
            after.container.as_deref(),
            after.init_pid
        ),
        (Some("hog-main-5c8d"), Some("hog"), None)
    );
}

/// Stops dockerd (SIGSTOP) and resumes it on drop, even if the test fails.
struct Frozen(u32);

impl Frozen {
    fn new(pid: u32) -> Self {
        // SAFETY: plain kill(2) of the dockerd this test started.
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
        Self(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0 as i32, libc::SIGCONT) };
    }
}

#[test]
fn lookups_work_while_dockerd_is_hung() {
    if !require_root("lookups_work_while_dockerd_is_hung") {
        return;
    }
    let docker = Docker::start();
    let roots = roots(&docker);
    let id = docker.run(&ContainerSpec::shell("web-frontend", "exec sleep 1000"));
    // For comparison, the Engine API's answer for the same container.
    let api_started = Instant::now();
    let body = engine_api_get(&docker, &format!("/containers/{id}/json"));
    let api_took = api_started.elapsed();
    assert!(body.contains("\"Name\":\"/web-frontend\""), "{body}");
    let frozen = Frozen::new(docker.dockerd_pid());
    let started = Instant::now();
    let meta =
        lookup_by_cgroup(&roots, &docker.cgroup_path(&id)).expect("named while dockerd is stopped");
    let took = started.elapsed();
    assert_eq!(meta.name.as_deref(), Some("web-frontend"));
    // The Engine API cannot answer meanwhile.
    let api = output_within(docker.cli().args(["inspect", &id]), Duration::from_secs(3));
    assert!(
        api.is_none(),
        "docker inspect answered while dockerd was stopped: {api:?}"
    );
    drop(frozen);
    assert_eq!(docker.inspect(&id, "{{.Name}}"), "/web-frontend");
    eprintln!(
        "lookup with dockerd stopped: {took:?}; GET /containers/<id>/json with dockerd running: {api_took:?}"
    );
}

/// One Engine API request on dockerd's socket, as a client library makes it.
fn engine_api_get(docker: &Docker, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut s =
        std::os::unix::net::UnixStream::connect(&docker.socket).expect("connect to docker.sock");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read the answer");
    resp
}

#[test]
fn names_a_containerd_cri_task_from_its_bundle() {
    if !require_root("names_a_containerd_cri_task_from_its_bundle") {
        return;
    }
    let mut docker = Docker::start();
    let roots = roots(&docker);
    let id = random_id();
    let image = "registry.example/shop/frontend:1.2";
    let task = docker.run_cri_task(&CriTaskSpec {
        id: &id,
        pod: "web-7d9f",
        namespace: "shop",
        container: "frontend",
        pod_uid: POD_UID,
        image,
        cmd: &["/bin/sleep", "1000"],
    });
    let cgroup = docker.cgroup_path(&id);
    assert_cgroups(task.pid, &cgroup);

    let meta = lookup_by_cgroup(&roots, &cgroup).expect("the bundle names the task");
    assert_eq!(
        meta,
        ContainerMeta {
            id: id.clone(),
            runtime: Some(Runtime::Containerd),
            name: None,
            image: Some(image.into()),
            image_id: None,
            pod: Some("web-7d9f".into()),
            namespace: Some("shop".into()),
            container: Some("frontend".into()),
            pod_uid: Some(POD_UID.into()),
            kind: Some(ContainerKind::Container),
            init_pid: Some(task.pid),
        }
    );
    assert_eq!(
        lookup_docker(&roots, &id).unwrap(),
        None,
        "not a Docker container"
    );
    assert_eq!(main_process(meta.init_pid, task.pid), MainProcess::Main);
    assert!(
        Path::new(&docker.containerd_state())
            .join("io.containerd.runtime.v2.task/k8s.io")
            .join(&id)
            .join("init.pid")
            .exists()
    );
}

/// `oomwatch tail` as a person runs it (human lines), read on a thread.
struct HumanTail {
    _child: ChildGuard,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl HumanTail {
    fn start(daemon: &Daemon) -> Self {
        let mut child = std::process::Command::new(oomwatch_bin())
            .args(["tail", "--kind", "oom_kill", "--socket"])
            .arg(&daemon.socket)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start oomwatch tail");
        let stdout = child.stdout.take().expect("tail stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { _child: ChildGuard(child), lines, seen: Vec::new() }
    }

    fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.seen.iter().find(|l| pred(l)) {
                return Some(l.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            let line = self.lines.recv_timeout(left).ok()?;
            eprintln!("tail: {line}");
            self.seen.push(line);
        }
    }
}

/// Every string in the event's `workload` is a name: none is empty.
fn assert_no_empty_names(kill: &serde_json::Value) {
    let workload = kill["workload"].as_object().expect("a workload object");
    for (k, v) in workload {
        assert!(v.as_str().is_some_and(|s| !s.is_empty()), "workload.{k} = {v}");
    }
}

/// The daemon's kill events, metrics, tail and history name an OOM-killed
/// container as Docker does: a cri-dockerd-labelled container whose PID 1
/// is killed, and a plain named one whose child is killed while PID 1
/// lives on. Both are removed after the kills, the daemon is stopped, and
/// `oomwatch history` (from the journal alone) still names them.
#[test]
fn the_daemon_names_oom_killed_containers_in_events_tail_metrics_and_history() {
    if !require_root("the_daemon_names_oom_killed_containers_in_events_tail_metrics_and_history") {
        return;
    }
    let docker = Docker::start();
    let roots = roots(&docker);
    let dir = temp_dir("workloads-daemon");
    let state = dir.0.join("state");
    let config = write_config(
        &dir,
        &format!(
            "[workloads]\ndocker_data_root = {:?}\ncontainerd_state = {:?}\nstorage_graph_root = {:?}\nstorage_run_root = {:?}\npod_logs = {:?}\ncontainer_logs = {:?}\n",
            roots.docker_data_root,
            roots.containerd_state,
            roots.storage_graph_root,
            roots.storage_run_root,
            roots.pod_logs,
            roots.container_logs,
        ),
    );
    let check = output_within(
        std::process::Command::new(oomwatch_bin()).args(["check", "--config"]).arg(&config),
        Duration::from_secs(30),
    )
    .expect("oomwatch check --config finishes");
    assert!(check.status.success(), "oomwatch check --config: {}", String::from_utf8_lossy(&check.stdout));
    let mut daemon = Daemon::start(&["--config", config.to_str().unwrap(), "--state-dir", state.to_str().unwrap()]);
    let mut events = Tail::connect(&daemon);
    let mut human = HumanTail::start(&daemon);
    let since = unix_now();

    // PID 1 grows a string until the 64 MiB limit, after a pause in which
    // the daemon finds the cgroup and Docker's record has the pid.
    let main = docker.run(
        &ContainerSpec::shell("unused", "sleep 2; x=a; while :; do x=$x$x; done")
            .kubernetes("web-7d9f", "shop", "frontend", POD_UID),
    );
    // A child grows it; PID 1 lives on.
    let child = docker.run(&ContainerSpec::shell(
        "web-frontend",
        "sh -c 'sleep 2; x=a; while :; do x=$x$x; done'; echo child-died; exec sleep 1000",
    ));
    let kill_of = |events: &mut Tail, cgroup: String| {
        events
            .wait_for(Duration::from_secs(60), |v| v["kind"] == "oom_kill" && v["cgroup"] == cgroup.as_str())
            .unwrap_or_else(|| panic!("no oom_kill event for {cgroup}\n{}", daemon.log_text()))
            .0
    };
    let main_kill = kill_of(&mut events, docker.cgroup_path(&main));
    let child_kill = kill_of(&mut events, docker.cgroup_path(&child));
    eprintln!("main: {main_kill}\nchild: {child_kill}");

    let w = &main_kill["workload"];
    assert_eq!(w["container_id"], main.as_str());
    assert_eq!(w["runtime"], "docker");
    assert_eq!(w["container_name"], format!("k8s_frontend_web-7d9f_shop_{POD_UID}_0").as_str());
    assert_eq!(w["image"], IMAGE);
    assert_eq!((w["namespace"].as_str(), w["pod"].as_str(), w["container"].as_str()), (Some("shop"), Some("web-7d9f"), Some("frontend")));
    assert_eq!(w["pod_uid"], POD_UID);
    assert_eq!(main_kill["main_process"], true, "{main_kill}");
    assert_no_empty_names(&main_kill);
    // The kill's alert names the workload too (Alertmanager routes on it).
    let main_cgroup = docker.cgroup_path(&main);
    let (alert, _) = events
        .wait_for(Duration::from_secs(30), |v| v["kind"] == "alert" && v["alert"] == "oom_kill" && v["cgroup"] == main_cgroup.as_str())
        .unwrap_or_else(|| panic!("no oom_kill alert for {main_cgroup}\n{}", daemon.log_text()));
    let aw = &alert["workload"];
    assert_eq!((aw["namespace"].as_str(), aw["pod"].as_str(), aw["container"].as_str()), (Some("shop"), Some("web-7d9f"), Some("frontend")), "{alert}");

    let w = &child_kill["workload"];
    assert_eq!(w["container_name"], "web-frontend");
    assert_eq!(w["image"], IMAGE);
    for absent in ["pod", "namespace", "container", "pod_uid"] {
        assert!(w.get(absent).is_none(), "workload.{absent} of a plain container: {w}");
    }
    assert_eq!(child_kill["main_process"], false, "{child_kill}");
    assert_no_empty_names(&child_kill);

    // Docker's own verdicts agree: the first container died of the kill,
    // the second runs on (Kubernetes would report nothing for it).
    assert!(wait_until(Duration::from_secs(30), || docker.inspect(&main, "{{.State.Status}}") == "exited"));
    assert_eq!(docker.inspect(&main, "{{.State.OOMKilled}}"), "true");
    assert_eq!(docker.inspect(&child, "{{.State.Running}}"), "true");
    let until = unix_now() + 1;
    assert!(docker.events(&main, since, until).iter().any(|a| a == "oom"));
    assert!(docker.events(&child, since, until).iter().any(|a| a == "oom"));

    // The human line names the workload before its path.
    let line = human
        .wait_for(Duration::from_secs(10), |l| l.contains(&docker.cgroup_path(&main)))
        .expect("tail printed the first kill");
    assert!(line.contains(&format!("OOM-KILL shop/web-7d9f/frontend {}", docker.cgroup_path(&main))), "{line}");
    let line = human
        .wait_for(Duration::from_secs(10), |l| l.contains(&docker.cgroup_path(&child)))
        .expect("tail printed the second kill");
    assert!(line.contains(&format!("OOM-KILL docker:web-frontend {}", docker.cgroup_path(&child))), "{line}");
    assert!(line.contains("Kubernetes does not report this kill"), "{line}");

    // Metrics: the kill counter carries the pod's names and main_process;
    // the info metric joins the container's names to its cgroup.
    let metrics = daemon.metrics();
    let kills: Vec<&str> = metrics.lines().filter(|l| l.starts_with("oomwatch_oom_kills_total{")).collect();
    let main_series = format!("cgroup=\"{}\"", docker.cgroup_path(&main));
    assert!(
        kills.iter().any(|l| l.contains(&main_series)
            && l.contains("namespace=\"shop\",pod=\"web-7d9f\",container=\"frontend\",main_process=\"true\"")
            && l.ends_with(" 1")),
        "{kills:#?}"
    );
    let child_series = format!("cgroup=\"{}\"", docker.cgroup_path(&child));
    assert!(kills.iter().any(|l| l.contains(&child_series) && l.contains("namespace=\"\",pod=\"\",container=\"\",main_process=\"false\"")), "{kills:#?}");
    let info = metrics
        .lines()
        .find(|l| l.starts_with("oomwatch_cgroup_info{") && l.contains(&child_series))
        .unwrap_or_else(|| panic!("no cgroup_info for the running container:\n{metrics}"));
    assert!(info.contains("container_name=\"web-frontend\"") && info.contains(&format!("image=\"{IMAGE}\"")), "{info}");

    // The containers go, then the daemon: the journal still names them.
    docker.docker(&["rm", "-f", &main, &child]);
    daemon.stop();
    let history = |args: &[&str]| {
        let out = output_within(
            std::process::Command::new(oomwatch_bin()).arg("history").arg("--state-dir").arg(&state).args(args),
            Duration::from_secs(30),
        )
        .expect("oomwatch history finishes");
        assert!(out.status.success(), "oomwatch history {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = history(&["--kind", "oom_kill"]);
    eprintln!("history:\n{text}");
    assert!(text.contains(&format!("OOM-KILL shop/web-7d9f/frontend {}", docker.cgroup_path(&main))), "{text}");
    assert!(text.contains(&format!("OOM-KILL docker:web-frontend {}", docker.cgroup_path(&child))), "{text}");
    let summary = history(&["--summary"]);
    eprintln!("history --summary:\n{summary}");
    assert!(summary.contains("shop/web-7d9f/frontend") && summary.contains("docker:web-frontend"), "{summary}");
    let json = history(&["--kind", "oom_kill", "--json"]);
    assert!(json.lines().any(|l| l.contains("\"container_name\":\"web-frontend\"") && l.contains("\"main_process\":false")), "{json}");
}
