//! Names of the workload behind a container id, from the container
//! runtimes' own records on disk: the container's name and image, and for
//! Kubernetes the pod, its namespace and the container's name in the pod.
//!
//! Why files and not the runtimes' APIs: a lookup is one `open` + `read` of
//! a few KiB and a parse (tens of µs, see `benches/runtime_lookup.rs`),
//! needs no client, and keeps working when the runtime daemon is hung or
//! restarting, which is exactly when hosts run out of memory. The Docker
//! Engine API would be an HTTP round trip through dockerd per lookup, which
//! blocks for as long as dockerd does. The files read here are written
//! atomically (temp file + rename) by Docker, and once per container by the
//! others, so a read never sees half a record.
//!
//! | runtime | record | names found there |
//! |---|---|---|
//! | Docker | `<data-root>/containers/<id>/config.v2.json` | `Name`, `Config.Image`, `Image`, `State.Pid`, cri-dockerd's `io.kubernetes.*` labels |
//! | containerd | `<state>/io.containerd.runtime.v2.task/<ns>/<id>/config.json` and `init.pid` | CRI annotations `io.kubernetes.cri.*` (namespace `k8s.io`); namespace `moby` is Docker's |
//! | CRI-O | `<graphroot>/<driver>-containers/<id>/userdata/config.json`, `pidfile` under the run root | the kubelet's labels copied as annotations, `io.kubernetes.cri-o.*` |
//! | podman | same files; names in `containers.json` of containers/storage | `names`, `metadata` (`image-name`) |
//! | kubelet (any runtime) | `/var/log/containers/<pod>_<ns>_<container>-<id>.log`, `/var/log/pods/<ns>_<pod>_<uid>/<container>/` | names from file and directory names alone |
//!
//! Every name is untrusted: fields of unexpected types read as absent,
//! values that are empty, longer than [`MAX_VALUE_LEN`] or hold control
//! characters are dropped (absent means unknown; a field is never an empty
//! string), every file is read with a size cap, and container ids and
//! namespaces are checked before they become part of a path.

mod docker;
mod json;
mod kubelet;
mod oci;
mod process;
mod storage;

use std::{
    fs,
    io::{self, Read as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

pub use docker::parse_docker_config;
pub use kubelet::{ContainerLogName, PodLogDir, parse_container_log_name, parse_pod_log_dir};
pub use oci::{OciPlace, parse_oci_config};
pub use process::{MainProcess, is_pid_namespace_init, main_process, parse_pid_file};
pub use storage::{StorageEntry, find_storage_entry};

/// Longest name, image or label value kept (bytes). Kubernetes names are at
/// most 253 bytes and image references a few hundred; anything longer is
/// not a name a person reads.
pub const MAX_VALUE_LEN: usize = 1024;

/// Cap on a container's own record (config.v2.json, config.json). Real ones
/// are 3-20 KiB; environment variables and labels can grow them, not to
/// megabytes.
pub const RECORD_LIMIT: u64 = 4 << 20;

/// Cap on containers/storage's list of every container (about 1 KiB each).
pub const STORAGE_LIST_LIMIT: u64 = 32 << 20;

/// Cap on a pid file.
const PID_FILE_LIMIT: u64 = 64;

/// Most entries read from one runtime directory listing (containerd
/// namespaces, storage drivers, pod log directories of one pod).
const MAX_DIR_ENTRIES: usize = 4096;

/// Which runtime runs a container. Serialized as `labels_for` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Docker,
    Containerd,
    Crio,
    Podman,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::Crio => "crio",
            Runtime::Podman => "podman",
        }
    }

    /// The runtime named as `cgroup::labels_for` names it.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "docker" => Some(Runtime::Docker),
            "containerd" => Some(Runtime::Containerd),
            "crio" => Some(Runtime::Crio),
            "podman" => Some(Runtime::Podman),
            _ => None,
        }
    }
}

/// A Kubernetes pod's sandbox (the pause/infra container) or one of its
/// containers. Absent outside Kubernetes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerKind {
    Container,
    Sandbox,
}

/// What the runtime's records say about one container. Every `Option` is
/// `None` when the records do not say; strings are never empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerMeta {
    /// The id the lookup was made with (the records are checked to agree).
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Runtime>,
    /// The runtime's own name: `web-frontend` (`docker run --name`), or
    /// `k8s_<container>_<pod>_<ns>_<uid>_<attempt>` under cri-dockerd and CRI-O.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The image as asked for (`nginx:1.25`, `docker.io/library/nginx:1.25`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The image's id or digest (`sha256:...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// Kubernetes pod name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Kubernetes namespace of the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The container's name in the pod spec (`POD` for cri-dockerd and CRI-O sandboxes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Kubernetes pod uid, as `kubectl get pod -o jsonpath={.metadata.uid}` prints it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ContainerKind>,
    /// The container's first process (its PID 1) in the host's pid
    /// namespace, while it runs. See [`main_process`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_pid: Option<u32>,
}

impl ContainerMeta {
    fn new(id: &str, runtime: Option<Runtime>) -> Self {
        Self {
            id: id.to_owned(),
            runtime,
            ..Default::default()
        }
    }

    /// Takes the fields `other` knows and `self` does not.
    fn fill_from(&mut self, other: ContainerMeta) {
        fn fill<T>(mine: &mut Option<T>, theirs: Option<T>) {
            if mine.is_none() {
                *mine = theirs;
            }
        }
        fill(&mut self.runtime, other.runtime);
        fill(&mut self.name, other.name);
        fill(&mut self.image, other.image);
        fill(&mut self.image_id, other.image_id);
        fill(&mut self.pod, other.pod);
        fill(&mut self.namespace, other.namespace);
        fill(&mut self.container, other.container);
        fill(&mut self.pod_uid, other.pod_uid);
        fill(&mut self.kind, other.kind);
        fill(&mut self.init_pid, other.init_pid);
    }

    /// Whether the kubelet's names could add something: a sandbox has no
    /// container name (and no log link) to find.
    fn lacks_pod_names(&self) -> bool {
        self.pod.is_none()
            || self.namespace.is_none()
            || (self.container.is_none() && self.kind != Some(ContainerKind::Sandbox))
    }
}

/// Where the runtimes keep their state. Runtimes are often configured to
/// move it (`dockerd --data-root`, containerd's `state`, storage.conf's
/// `graphroot`/`runroot`), so every root is a setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeRoots {
    /// dockerd's `--data-root`.
    pub docker_data_root: PathBuf,
    /// containerd's `state` directory. Docker's own managed containerd
    /// (when dockerd starts one) keeps it at `<exec-root>/containerd/daemon`.
    pub containerd_state: PathBuf,
    /// containers/storage `graphroot` (CRI-O, podman).
    pub storage_graph_root: PathBuf,
    /// containers/storage `runroot` (CRI-O, podman).
    pub storage_run_root: PathBuf,
    /// The kubelet's pod log directory.
    pub pod_logs: PathBuf,
    /// The kubelet's per-container log links.
    pub container_logs: PathBuf,
}

impl Default for RuntimeRoots {
    fn default() -> Self {
        Self {
            docker_data_root: "/var/lib/docker".into(),
            containerd_state: "/run/containerd".into(),
            storage_graph_root: "/var/lib/containers/storage".into(),
            storage_run_root: "/run/containers/storage".into(),
            pod_logs: "/var/log/pods".into(),
            container_logs: "/var/log/containers".into(),
        }
    }
}

impl RuntimeRoots {
    /// Each root by its setting's name (`[workloads]` in the config).
    pub fn named(&self) -> [(&'static str, &Path); 6] {
        [
            ("docker_data_root", &self.docker_data_root),
            ("containerd_state", &self.containerd_state),
            ("storage_graph_root", &self.storage_graph_root),
            ("storage_run_root", &self.storage_run_root),
            ("pod_logs", &self.pod_logs),
            ("container_logs", &self.container_logs),
        ]
    }

    /// The default roots under `host_root`, for a daemon that sees the
    /// host's filesystem mounted somewhere (e.g. `/host` in a DaemonSet).
    pub fn under(host_root: &Path) -> Self {
        let d = Self::default();
        let join = |p: &Path| host_root.join(p.strip_prefix("/").unwrap_or(p));
        Self {
            docker_data_root: join(&d.docker_data_root),
            containerd_state: join(&d.containerd_state),
            storage_graph_root: join(&d.storage_graph_root),
            storage_run_root: join(&d.storage_run_root),
            pod_logs: join(&d.pod_logs),
            container_logs: join(&d.container_logs),
        }
    }
}

/// A record that could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not a JSON object")]
    NotAnObject,
    #[error("the record is for container {found:?}, not {wanted:?}")]
    IdMismatch { wanted: String, found: String },
}

/// Why a lookup failed. A record that does not exist is not an error
/// (`Ok(None)`); these are records that exist and cannot be read or used.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error("{}: larger than {limit} bytes", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{}: {source}", path.display())]
    Parse { path: PathBuf, source: ParseError },
    #[error("not a container id: {0:?}")]
    InvalidId(String),
}

/// What is known about a workload from its cgroup path
/// (`cgroup::labels_for`): the container id, maybe the runtime, maybe the
/// pod uid.
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkloadKey<'a> {
    pub container_id: &'a str,
    pub runtime: Option<Runtime>,
    pub pod_uid: Option<&'a str>,
}

/// The names of a container, from the records of the runtime named by the
/// hint, or of every runtime in turn when there is none (the kubelet's
/// cgroupfs driver and `--cgroup-parent` paths do not name the runtime).
/// For a pod's container (a pod uid in the key or in the record), the
/// Kubernetes names the runtime's records lack come from the kubelet's log
/// directories. `Ok(None)` when nothing on this host knows the id.
///
/// An error is returned only when no source found the container and one
/// of them could not be read.
pub fn lookup(
    roots: &RuntimeRoots,
    key: &WorkloadKey,
) -> Result<Option<ContainerMeta>, LookupError> {
    let id = key.container_id;
    check_name(id).ok_or_else(|| LookupError::InvalidId(id.to_owned()))?;
    type Source = fn(&RuntimeRoots, &str) -> Result<Option<ContainerMeta>, LookupError>;
    let sources: &[Source] = match key.runtime {
        // Docker's containers are also containerd tasks (namespace moby).
        Some(Runtime::Docker) => &[lookup_docker, lookup_containerd],
        Some(Runtime::Containerd) => &[lookup_containerd],
        Some(Runtime::Crio | Runtime::Podman) => &[lookup_storage],
        None => &[lookup_docker, lookup_containerd, lookup_storage],
    };
    let mut found = None;
    let mut first_error = None;
    for source in sources {
        match source(roots, id) {
            Ok(Some(meta)) => {
                found = Some(meta);
                break;
            }
            Ok(None) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    // The kubelet's links are scanned (a directory entry per container on
    // the node) only for a pod's container: the cgroup path or the record
    // must say it is one.
    let in_a_pod = key.pod_uid.is_some()
        || found
            .as_ref()
            .is_some_and(|m| m.pod_uid.is_some() || m.pod.is_some() || m.kind.is_some());
    if in_a_pod && found.as_ref().is_none_or(ContainerMeta::lacks_pod_names) {
        let from_logs = match lookup_container_log(roots, id) {
            Ok(found) => found,
            Err(e) => {
                first_error.get_or_insert(e);
                None
            }
        };
        if let Some(names) = from_logs {
            let meta = found.get_or_insert_with(|| ContainerMeta::new(id, key.runtime));
            meta.fill_from(ContainerMeta {
                pod: Some(names.pod),
                namespace: Some(names.namespace),
                container: Some(names.container),
                ..ContainerMeta::new(id, None)
            });
        }
    }
    if let Some(meta) = found.as_mut()
        && meta.pod_uid.is_none()
    {
        meta.pod_uid = kubelet::clean_uid(key.pod_uid);
    }
    // The pod's log directory names the pod from its uid alone, also when
    // no record of the container itself could be found.
    let pod_uid = match &found {
        Some(meta) if meta.pod.is_some() && meta.namespace.is_some() => None,
        Some(meta) => meta.pod_uid.clone(),
        None => kubelet::clean_uid(key.pod_uid),
    };
    if let Some(uid) = pod_uid {
        match lookup_pod_logs(roots, &uid) {
            Ok(Some(dir)) => {
                // A pod's only container, when the record says this is a
                // container and not the sandbox (which has no log directory).
                let is_container = found
                    .as_ref()
                    .is_some_and(|m| m.kind == Some(ContainerKind::Container));
                let only_container = match dir.containers.as_slice() {
                    [one] if is_container => Some(one.clone()),
                    _ => None,
                };
                let meta = found.get_or_insert_with(|| ContainerMeta::new(id, key.runtime));
                meta.fill_from(ContainerMeta {
                    pod: Some(dir.pod),
                    namespace: Some(dir.namespace),
                    pod_uid: Some(dir.uid),
                    container: only_container,
                    ..ContainerMeta::new(id, None)
                });
            }
            Ok(None) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match (found, first_error) {
        (Some(meta), _) => Ok(Some(meta)),
        (None, Some(e)) => Err(e),
        (None, None) => Ok(None),
    }
}

/// Docker: `<data-root>/containers/<id>/config.v2.json`.
pub fn lookup_docker(roots: &RuntimeRoots, id: &str) -> Result<Option<ContainerMeta>, LookupError> {
    check_name(id).ok_or_else(|| LookupError::InvalidId(id.to_owned()))?;
    let path = roots
        .docker_data_root
        .join("containers")
        .join(id)
        .join("config.v2.json");
    let Some(bytes) = read_capped(&path, RECORD_LIMIT)? else {
        return Ok(None);
    };
    parse_docker_config(id, &bytes)
        .map(Some)
        .map_err(|source| LookupError::Parse { path, source })
}

/// containerd: the task's OCI bundle, in whichever containerd namespace
/// holds it (`k8s.io` for the CRI plugin, `moby` for Docker, `default` for
/// `ctr`), and its `init.pid`.
pub fn lookup_containerd(
    roots: &RuntimeRoots,
    id: &str,
) -> Result<Option<ContainerMeta>, LookupError> {
    check_name(id).ok_or_else(|| LookupError::InvalidId(id.to_owned()))?;
    let tasks = roots.containerd_state.join("io.containerd.runtime.v2.task");
    let mut namespaces = list_dir(&tasks)?;
    // The CRI namespace first: on Kubernetes nodes nearly every task is there.
    namespaces.sort_by_key(|ns| (ns != "k8s.io", ns != "moby", ns.clone()));
    for namespace in namespaces.iter().filter(|ns| check_name(ns).is_some()) {
        let bundle = tasks.join(namespace).join(id);
        let path = bundle.join("config.json");
        let Some(bytes) = read_capped(&path, RECORD_LIMIT)? else {
            continue;
        };
        let mut meta = parse_oci_config(id, OciPlace::ContainerdTask { namespace }, &bytes)
            .map_err(|source| LookupError::Parse { path, source })?;
        // Written by the shim once runc created the task: absent for a
        // moment after the bundle appears.
        meta.init_pid = read_pid_file(&bundle.join("init.pid"))?;
        return Ok(Some(meta));
    }
    Ok(None)
}

/// CRI-O and podman: containers/storage keeps the OCI spec in the
/// container's `userdata` under the graph root (and the run root), the
/// container's pid in `pidfile` under the run root, and podman's names in
/// the storage's list of containers.
pub fn lookup_storage(
    roots: &RuntimeRoots,
    id: &str,
) -> Result<Option<ContainerMeta>, LookupError> {
    check_name(id).ok_or_else(|| LookupError::InvalidId(id.to_owned()))?;
    let mut drivers: Vec<String> = list_dir(&roots.storage_graph_root)?
        .into_iter()
        .filter(|d| d.ends_with("-containers") && check_name(d).is_some())
        .collect();
    drivers.sort_by_key(|d| (d != "overlay-containers", d.clone()));
    for driver_dir in &drivers {
        let graph_dir = roots.storage_graph_root.join(driver_dir);
        let run_userdata = roots
            .storage_run_root
            .join(driver_dir)
            .join(id)
            .join("userdata");
        let mut found = None;
        for path in [
            graph_dir.join(id).join("userdata").join("config.json"),
            run_userdata.join("config.json"),
        ] {
            if let Some(bytes) = read_capped(&path, RECORD_LIMIT)? {
                found = Some((path, bytes));
                break;
            }
        }
        let Some((path, bytes)) = found else {
            continue;
        };
        let mut meta = parse_oci_config(id, OciPlace::Storage, &bytes)
            .map_err(|source| LookupError::Parse { path, source })?;
        meta.init_pid = read_pid_file(&run_userdata.join("pidfile"))?;
        if meta.name.is_none() || meta.image.is_none() {
            let lists = [
                graph_dir.join("containers.json"),
                roots
                    .storage_run_root
                    .join(driver_dir)
                    .join("volatile-containers.json"),
            ];
            for list in lists {
                let Some(bytes) = read_capped(&list, STORAGE_LIST_LIMIT)? else {
                    continue;
                };
                let entry = find_storage_entry(id, &bytes)
                    .map_err(|source| LookupError::Parse { path: list, source })?;
                if let Some(entry) = entry {
                    meta.fill_from(entry.meta(id));
                    break;
                }
            }
        }
        return Ok(Some(meta));
    }
    Ok(None)
}

/// The kubelet's `/var/log/containers/<pod>_<namespace>_<container>-<id>.log`
/// link, which it makes for every container of every runtime.
pub fn lookup_container_log(
    roots: &RuntimeRoots,
    id: &str,
) -> Result<Option<ContainerLogName>, LookupError> {
    check_name(id).ok_or_else(|| LookupError::InvalidId(id.to_owned()))?;
    let suffix = format!("-{id}.log");
    let found = list_dir_matching(&roots.container_logs, |name| name.ends_with(&suffix))?;
    Ok(found
        .and_then(|name| parse_container_log_name(&name))
        .filter(|n| n.id == id))
}

/// The kubelet's `/var/log/pods/<namespace>_<pod>_<uid>/` directory of a
/// pod, with the names of the containers it holds logs for.
pub fn lookup_pod_logs(
    roots: &RuntimeRoots,
    pod_uid: &str,
) -> Result<Option<PodLogDir>, LookupError> {
    if !kubelet::is_pod_uid(pod_uid) {
        return Err(LookupError::InvalidId(pod_uid.to_owned()));
    }
    let suffix = format!("_{pod_uid}");
    let Some(name) = list_dir_matching(&roots.pod_logs, |name| name.ends_with(&suffix))? else {
        return Ok(None);
    };
    let Some(mut dir) = parse_pod_log_dir(&name) else {
        return Ok(None);
    };
    dir.containers = list_dir(&roots.pod_logs.join(&name))?
        .into_iter()
        .filter_map(|c| clean(Some(c)))
        .collect();
    dir.containers.sort();
    Ok(Some(dir))
}

/// Keeps a name only when it can be shown as it is: not empty or blank, at
/// most [`MAX_VALUE_LEN`] bytes, no control characters.
pub(crate) fn clean(value: Option<String>) -> Option<String> {
    value.filter(|v| {
        !v.trim().is_empty() && v.len() <= MAX_VALUE_LEN && !v.chars().any(char::is_control)
    })
}

/// A name that may become one component of a path: containerd's identifier
/// shape (letters, digits, `.`, `_`, `-`, starting with a letter or digit),
/// at most 255 bytes. No `/`, no `..`, no NUL.
fn check_name(name: &str) -> Option<&str> {
    let mut bytes = name.bytes();
    let first = bytes.next()?;
    (first.is_ascii_alphanumeric()
        && name.len() <= 255
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')))
    .then_some(name)
}

fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// Reads a whole file of at most `limit` bytes. `Ok(None)` when it does not
/// exist. Opens without blocking, so a FIFO in its place (the bundles hold
/// some) is refused instead of hanging the caller.
fn read_capped(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, LookupError> {
    let read_err = |source| LookupError::Read {
        path: path.to_owned(),
        source,
    };
    let file = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if is_absent(&e) => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(LookupError::NotAFile {
            path: path.to_owned(),
        });
    }
    if meta.len() > limit {
        return Err(LookupError::TooLarge {
            path: path.to_owned(),
            limit,
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize + 1);
    // The file may grow between fstat and read: the cap holds either way.
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > limit {
        return Err(LookupError::TooLarge {
            path: path.to_owned(),
            limit,
        });
    }
    Ok(Some(bytes))
}

fn read_pid_file(path: &Path) -> Result<Option<u32>, LookupError> {
    Ok(read_capped(path, PID_FILE_LIMIT)?.and_then(|b| parse_pid_file(&b)))
}

/// Names in a directory (UTF-8 ones, at most [`MAX_DIR_ENTRIES`]); empty
/// when it does not exist.
fn list_dir(dir: &Path) -> Result<Vec<String>, LookupError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if is_absent(&e) => return Ok(Vec::new()),
        Err(source) => {
            return Err(LookupError::Read {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut names = Vec::new();
    for entry in entries.take(MAX_DIR_ENTRIES) {
        let entry = entry.map_err(|source| LookupError::Read {
            path: dir.to_owned(),
            source,
        })?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}

/// The first name in `dir` for which `matches` holds; the whole directory
/// is scanned (the kubelet's log directories hold one entry per container
/// or pod on the node).
fn list_dir_matching(
    dir: &Path,
    matches: impl Fn(&str) -> bool,
) -> Result<Option<String>, LookupError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if is_absent(&e) => return Ok(None),
        Err(source) => {
            return Err(LookupError::Read {
                path: dir.to_owned(),
                source,
            });
        }
    };
    for entry in entries {
        let entry = entry.map_err(|source| LookupError::Read {
            path: dir.to_owned(),
            source,
        })?;
        if let Some(name) = entry.file_name().to_str()
            && matches(name)
        {
            return Ok(Some(name.to_owned()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests;
