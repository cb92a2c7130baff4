//! Fixtures in `testdata/` are real records, captured on the development
//! machine from Docker 20.10 / containerd 1.6 (`docker-*.config.v2.json`,
//! `containerd-*.config.json`: the harness of tests/src/docker.rs, a
//! cri-dockerd-labelled container, a plain one, the plain one after it
//! stopped, and a `ctr run` task with the CRI plugin's annotations) and
//! podman 4.3 (`podman.*`, from `podman run` with vfs storage). CRI-O does
//! not run here: `crio.config.json` is podman's spec with the annotations
//! CRI-O writes (cri-o `internal/factory/container/container.go`) put in.

use std::{
    fs,
    path::{Path, PathBuf},
};

use super::*;

const UID: &str = "1f2e3d4c-5b6a-4978-8a9b-0c1d2e3f4a5b";
const DOCKER_K8S_ID: &str = "8f00a3a20d9728c4a384b08bd17661159b170e011c4b8062d9321c94d9794f1c";
const DOCKER_PLAIN_ID: &str = "87e498ba7d8439060ef55093c6acb78b4afb3d2392cd35e6e2f99b59c513f877";
const CONTAINERD_ID: &str = "3f1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809";
const PODMAN_ID: &str = "0a7c580e0196b22e19e9e3964f3fcd1463d31663a229741d8b2f17e68454a123";
const CRIO_ID: &str = "9c1e3a5b7d2f4e6a8c0b1d3f5e7a9c2b4d6f8e0a1c3b5d7f9e2a4c6b8d0f1e3a";
const DOCKER_IMAGE_ID: &str =
    "sha256:d6164474778bec67e7c0deb5af05365831f4f02e66c3805f0e9832b3adf73007";

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/readers/runtime/testdata")
        .join(name);
    fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn some(s: &str) -> Option<String> {
    Some(s.to_owned())
}

fn cri_dockerd_meta() -> ContainerMeta {
    ContainerMeta {
        id: DOCKER_K8S_ID.into(),
        runtime: Some(Runtime::Docker),
        name: some(&format!("k8s_frontend_web-7d9f_shop_{UID}_0")),
        image: some("oomwatch-test-busybox:1"),
        image_id: some(DOCKER_IMAGE_ID),
        pod: some("web-7d9f"),
        namespace: some("shop"),
        container: some("frontend"),
        pod_uid: some(UID),
        kind: Some(ContainerKind::Container),
        init_pid: Some(6771),
    }
}

fn containerd_cri_meta() -> ContainerMeta {
    ContainerMeta {
        id: CONTAINERD_ID.into(),
        runtime: Some(Runtime::Containerd),
        image: some("registry.example/shop/frontend:1.2"),
        pod: some("web-7d9f"),
        namespace: some("shop"),
        container: some("frontend"),
        pod_uid: some(UID),
        kind: Some(ContainerKind::Container),
        ..Default::default()
    }
}

fn crio_meta() -> ContainerMeta {
    ContainerMeta {
        id: CRIO_ID.into(),
        runtime: Some(Runtime::Crio),
        name: some(&format!("k8s_frontend_web-7d9f_shop_{UID}_0")),
        image: some("docker.io/library/nginx:1.25"),
        image_id: some("a8758716bb6aa4d90071160d27028fe4eaee7ce8166221a97d30440c8eac2be6"),
        pod: some("web-7d9f"),
        namespace: some("shop"),
        container: some("frontend"),
        pod_uid: some(UID),
        kind: Some(ContainerKind::Container),
        init_pid: None,
    }
}

#[test]
fn docker_records() {
    assert_eq!(
        parse_docker_config(DOCKER_K8S_ID, &fixture("docker-cri-dockerd.config.v2.json")).unwrap(),
        cri_dockerd_meta()
    );
    let plain = ContainerMeta {
        id: DOCKER_PLAIN_ID.into(),
        runtime: Some(Runtime::Docker),
        name: some("web-frontend"),
        image: some("oomwatch-test-busybox:1"),
        image_id: some(DOCKER_IMAGE_ID),
        init_pid: Some(6845),
        ..Default::default()
    };
    assert_eq!(
        parse_docker_config(DOCKER_PLAIN_ID, &fixture("docker-plain.config.v2.json")).unwrap(),
        plain
    );
    // Stopped: State.Pid is 0, the names stay.
    let exited = parse_docker_config(
        DOCKER_PLAIN_ID,
        &fixture("docker-plain-exited.config.v2.json"),
    )
    .unwrap();
    assert_eq!(
        exited,
        ContainerMeta {
            init_pid: None,
            ..plain
        }
    );
    // The record of another container is refused.
    let e = parse_docker_config(
        DOCKER_PLAIN_ID,
        &fixture("docker-cri-dockerd.config.v2.json"),
    )
    .unwrap_err();
    assert!(matches!(e, ParseError::IdMismatch { .. }), "{e}");
}

#[test]
fn oci_specs() {
    let cri = parse_oci_config(
        CONTAINERD_ID,
        OciPlace::ContainerdTask {
            namespace: "k8s.io",
        },
        &fixture("containerd-cri.config.json"),
    );
    assert_eq!(cri.unwrap(), containerd_cri_meta());
    // Docker's tasks in containerd: the runtime, no names.
    let moby = parse_oci_config(
        DOCKER_PLAIN_ID,
        OciPlace::ContainerdTask { namespace: "moby" },
        &fixture("containerd-moby.config.json"),
    )
    .unwrap();
    assert_eq!(
        moby,
        ContainerMeta {
            id: DOCKER_PLAIN_ID.into(),
            runtime: Some(Runtime::Docker),
            ..Default::default()
        }
    );
    // podman writes io.kubernetes.cri-o.TTY and .Created too; its manager
    // annotation decides.
    let podman =
        parse_oci_config(PODMAN_ID, OciPlace::Storage, &fixture("podman.config.json")).unwrap();
    assert_eq!(
        podman,
        ContainerMeta {
            id: PODMAN_ID.into(),
            runtime: Some(Runtime::Podman),
            ..Default::default()
        }
    );
    assert_eq!(
        parse_oci_config(CRIO_ID, OciPlace::Storage, &fixture("crio.config.json")).unwrap(),
        crio_meta()
    );
    let e =
        parse_oci_config(PODMAN_ID, OciPlace::Storage, &fixture("crio.config.json")).unwrap_err();
    assert!(matches!(e, ParseError::IdMismatch { .. }), "{e}");
}

#[test]
fn oci_sandboxes_and_older_crio() {
    let sandbox = br#"{"annotations": {"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-name": "web-7d9f",
        "io.kubernetes.cri.sandbox-namespace": "shop", "io.kubernetes.cri.sandbox-uid": "1f2e3d4c-5b6a-4978-8a9b-0c1d2e3f4a5b",
        "io.kubernetes.cri.sandbox-log-directory": "/var/log/pods/shop_web-7d9f_1f2e3d4c-5b6a-4978-8a9b-0c1d2e3f4a5b"}}"#;
    let meta = parse_oci_config(
        "abc",
        OciPlace::ContainerdTask {
            namespace: "k8s.io",
        },
        sandbox,
    )
    .unwrap();
    assert_eq!(
        (meta.kind, meta.pod.as_deref(), meta.container),
        (Some(ContainerKind::Sandbox), Some("web-7d9f"), None)
    );
    // CRI-O before it wrote io.container.manager.
    let old = br#"{"annotations": {"io.kubernetes.cri-o.ContainerType": "sandbox", "io.kubernetes.container.name": "POD"}}"#;
    let meta = parse_oci_config("abc", OciPlace::Storage, old).unwrap();
    assert_eq!(
        (meta.runtime, meta.kind, meta.container.as_deref()),
        (
            Some(Runtime::Crio),
            Some(ContainerKind::Sandbox),
            Some("POD")
        )
    );
    // No annotations at all: a spec written by hand or by runc's `spec`.
    let bare = parse_oci_config("abc", OciPlace::Storage, br#"{"ociVersion": "1.0.2"}"#).unwrap();
    assert_eq!(
        bare,
        ContainerMeta {
            id: "abc".into(),
            runtime: Some(Runtime::Podman),
            ..Default::default()
        }
    );
}

#[test]
fn storage_list() {
    let list = fixture("podman.containers.json");
    let entry = find_storage_entry(PODMAN_ID, &list)
        .unwrap()
        .expect("listed");
    assert_eq!(
        entry.meta(PODMAN_ID),
        ContainerMeta {
            id: PODMAN_ID.into(),
            name: some("web-frontend"),
            image: some("localhost/oomwatch-test-busybox:1"),
            image_id: some("a4bf0038c686b730a3a709e60c8154b99a54e835111a16cd81f27625cb07d948"),
            ..Default::default()
        }
    );
    assert_eq!(find_storage_entry(CRIO_ID, &list).unwrap(), None);
    assert_eq!(find_storage_entry(PODMAN_ID, b"[]").unwrap(), None);
    // CRI-O's metadata names the pod; odd entries and metadata are skipped.
    let crio = format!(
        r#"[1, null, {{"id": 5}}, {{"id": "{CRIO_ID}", "names": ["k8s_frontend_web-7d9f_shop_{UID}_0", 7, ""],
            "metadata": "{{\"pod-name\":\"web-7d9f\",\"pod-id\":\"4b2d\",\"namespace\":\"shop\",\"uid\":\"{UID}\",\"metadata-name\":\"frontend\",\"image-name\":\"docker.io/library/nginx:1.25\"}}"}},
           {{"id": "{PODMAN_ID}", "metadata": "not json"}}]"#
    );
    let entry = find_storage_entry(CRIO_ID, crio.as_bytes())
        .unwrap()
        .unwrap();
    assert_eq!(
        entry.names,
        vec![format!("k8s_frontend_web-7d9f_shop_{UID}_0")]
    );
    assert_eq!(
        (
            entry.pod.as_deref(),
            entry.namespace.as_deref(),
            entry.container.as_deref()
        ),
        (Some("web-7d9f"), Some("shop"), Some("frontend"))
    );
    assert_eq!(entry.pod_uid.as_deref(), Some(UID));
    let odd = find_storage_entry(PODMAN_ID, crio.as_bytes())
        .unwrap()
        .unwrap();
    assert_eq!(odd, StorageEntry::default());
    assert!(find_storage_entry(PODMAN_ID, b"{}").is_err());
    assert!(find_storage_entry(PODMAN_ID, b"[] []").is_err());
}

#[test]
fn untrusted_values_are_dropped_not_shown() {
    let doc = |name: &str, image: &serde_json::Value| {
        serde_json::json!({"ID": "x", "Name": name, "Config": {"Image": image, "Labels": {"io.kubernetes.pod.name": "", "io.kubernetes.pod.namespace": " ", "io.kubernetes.pod.uid": "not-a-uid", "io.kubernetes.container.name": 42}}})
            .to_string()
    };
    let long = "a".repeat(MAX_VALUE_LEN + 1);
    let meta =
        parse_docker_config("x", doc("/evil\nname", &serde_json::json!(long)).as_bytes()).unwrap();
    assert_eq!(
        meta,
        ContainerMeta {
            id: "x".into(),
            runtime: Some(Runtime::Docker),
            ..Default::default()
        }
    );
    let ok = "b".repeat(MAX_VALUE_LEN);
    let meta = parse_docker_config("x", doc("/", &serde_json::json!(ok)).as_bytes()).unwrap();
    assert_eq!(
        (meta.name, meta.image.map(|i| i.len())),
        (None, Some(MAX_VALUE_LEN))
    );
    // Names in other scripts are names.
    let meta =
        parse_docker_config("x", doc("/wéb-前端", &serde_json::json!("img")).as_bytes()).unwrap();
    assert_eq!(meta.name.as_deref(), Some("wéb-前端"));
}

#[test]
fn malformed_records_are_errors_or_absent_fields_never_panics() {
    let cases: &[&[u8]] = &[
        b"",
        b"null",
        b"[]",
        b"[\"8f00\", \"x\"]",
        b"42",
        b"\"string\"",
        b"{",
        b"{\"ID\": \"x\"} trailing",
        b"{\"ID\": \"x\", \"ID\": \"x\"}",
        b"\xff\xfe{}",
        b"{\"State\": [], \"Config\": \"x\", \"Name\": {\"a\": [1, 2, {\"b\": null}]}}",
        b"{\"State\": {\"Pid\": -5, \"Running\": \"yes\"}, \"Config\": {\"Labels\": [[\"io.kubernetes.pod.name\", \"x\"]]}}",
        b"{\"State\": {\"Pid\": 1e400}}",
        b"{\"annotations\": {\"io.kubernetes.cri.sandbox-name\": \"\\ud800\"}}",
        b"{\"annotations\": null}",
    ];
    for bytes in cases {
        let docker = parse_docker_config("x", bytes);
        let oci = parse_oci_config("x", OciPlace::Storage, bytes);
        let storage = find_storage_entry("x", bytes);
        for meta in [
            docker.ok(),
            oci.ok(),
            storage.ok().flatten().map(|e| e.meta("x")),
        ]
        .into_iter()
        .flatten()
        {
            assert_eq!(meta.id, "x");
            for v in [
                &meta.name,
                &meta.image,
                &meta.pod,
                &meta.namespace,
                &meta.container,
                &meta.pod_uid,
            ]
            .into_iter()
            .flatten()
            {
                assert!(
                    !v.is_empty() && !v.chars().any(char::is_control),
                    "{v:?} from {:?}",
                    String::from_utf8_lossy(bytes)
                );
            }
        }
    }
    let state = parse_docker_config("x", br#"{"State": {"Pid": -5, "Running": "yes"}}"#).unwrap();
    assert_eq!(state.init_pid, None);
    let pid = parse_docker_config("x", br#"{"State": {"Pid": 77, "Running": true}}"#).unwrap();
    assert_eq!(pid.init_pid, Some(77));
    // Deeply nested values are skipped without recursion (no stack overflow).
    let deep = format!(
        "{{\"Config\": {}1{}, \"Name\": \"/n\"}}",
        "{\"a\":".repeat(100_000),
        "}".repeat(100_000)
    );
    assert_eq!(
        parse_docker_config("x", deep.as_bytes())
            .unwrap()
            .name
            .as_deref(),
        Some("n")
    );
}

#[test]
fn kubelet_names() {
    assert_eq!(
        parse_pod_log_dir(&format!("shop_web-7d9f_{UID}")),
        Some(PodLogDir {
            namespace: "shop".into(),
            pod: "web-7d9f".into(),
            uid: UID.into(),
            containers: vec![]
        })
    );
    // Static pods: a 32-hex config hash.
    assert!(parse_pod_log_dir("kube-system_etcd-node1_0123456789abcdef0123456789abcdef").is_some());
    for bad in [
        "shop_web",
        "shop_web_x_y",
        &format!("shop__{UID}"),
        &format!("_web_{UID}"),
        "a_b_zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
        "",
    ] {
        assert_eq!(parse_pod_log_dir(bad), None, "{bad:?}");
    }
    let id = CONTAINERD_ID;
    assert_eq!(
        parse_container_log_name(&format!("web-7d9f_shop_front-end-{id}.log")),
        Some(ContainerLogName {
            pod: "web-7d9f".into(),
            namespace: "shop".into(),
            container: "front-end".into(),
            id: id.into()
        })
    );
    for bad in [
        format!("web-7d9f_shop_frontend-{id}"),
        format!("web-7d9f_shop_frontend-{}.log", &id[1..]),
        format!("web-7d9f_shop_frontend-{}.log", id.to_uppercase()),
        format!("web-7d9f_shop-{id}.log"),
        format!("web_7d9f_shop_frontend-{id}.log"),
        format!("web-7d9f_shop_-{id}.log"),
        "-.log".to_owned(),
    ] {
        assert_eq!(parse_container_log_name(&bad), None, "{bad:?}");
    }
}

#[test]
fn main_process_and_pid_namespaces() {
    assert_eq!(main_process(Some(42), 42), MainProcess::Main);
    assert_eq!(main_process(Some(42), 43), MainProcess::NotMain);
    assert_eq!(main_process(None, 43), MainProcess::Unknown);
    assert_eq!(
        is_pid_namespace_init("Name:\tsh\nNSpid:\t15626\t1\n"),
        Some(true)
    );
    assert_eq!(is_pid_namespace_init("NSpid:\t15656\t7\n"), Some(false));
    assert_eq!(
        is_pid_namespace_init("NSpid:\t900\t40\t1\n"),
        Some(true),
        "innermost namespace"
    );
    assert_eq!(
        is_pid_namespace_init("NSpid:\t15656\n"),
        None,
        "host namespace only"
    );
    assert_eq!(is_pid_namespace_init("NSpid:\t1x\t1\n"), None);
    assert_eq!(is_pid_namespace_init("Name:\tsh\n"), None);
    // This test runs in the host's pid namespace: not tellable, not a container init.
    let own = fs::read_to_string("/proc/self/status").unwrap();
    assert_eq!(is_pid_namespace_init(&own), None);
    assert_eq!(parse_pid_file(b"6771"), Some(6771));
    assert_eq!(parse_pid_file(b"6771\n"), Some(6771));
    for bad in [
        &b""[..],
        b"0",
        b"\n",
        b" 6771",
        b"6771\n\n",
        b"-1",
        b"4294967296",
        b"12ab",
        b"\xff",
    ] {
        assert_eq!(
            parse_pid_file(bad),
            None,
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn serialized_meta_omits_what_is_unknown() {
    let meta = ContainerMeta {
        id: "abc".into(),
        runtime: Some(Runtime::Crio),
        init_pid: Some(7),
        kind: Some(ContainerKind::Sandbox),
        ..Default::default()
    };
    let text = serde_json::to_string(&meta).unwrap();
    assert_eq!(
        text,
        r#"{"id":"abc","runtime":"crio","kind":"sandbox","init_pid":7}"#
    );
    assert_eq!(serde_json::from_str::<ContainerMeta>(&text).unwrap(), meta);
    let full = serde_json::to_value(cri_dockerd_meta()).unwrap();
    assert_eq!(full["runtime"], "docker");
    assert_eq!(full["pod_uid"], UID);
    for r in [
        Runtime::Docker,
        Runtime::Containerd,
        Runtime::Crio,
        Runtime::Podman,
    ] {
        assert_eq!(Runtime::from_name(r.as_str()), Some(r));
        assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
    }
}

/// A directory tree laid out as the runtimes lay out theirs, removed on drop.
struct Host {
    root: PathBuf,
}

impl Host {
    fn new(name: &str) -> Self {
        let root =
            std::env::temp_dir().join(format!("oomwatch-runtime-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        Self { root }
    }

    fn roots(&self) -> RuntimeRoots {
        RuntimeRoots::under(&self.root)
    }

    fn put(&self, path: impl AsRef<Path>, bytes: &[u8]) -> PathBuf {
        let path = self.root.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, bytes).unwrap();
        path
    }

    fn mkdir(&self, path: impl AsRef<Path>) {
        fs::create_dir_all(self.root.join(path)).unwrap();
    }

    fn docker(&self, id: &str, fixture_name: &str) -> PathBuf {
        self.put(
            format!("var/lib/docker/containers/{id}/config.v2.json"),
            &fixture(fixture_name),
        )
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn key(id: &str) -> WorkloadKey<'_> {
    WorkloadKey {
        container_id: id,
        runtime: None,
        pod_uid: None,
    }
}

#[test]
fn lookups_find_each_runtime_by_its_records() {
    let host = Host::new("each");
    let roots = host.roots();
    host.docker(DOCKER_K8S_ID, "docker-cri-dockerd.config.v2.json");
    let task = format!("run/containerd/io.containerd.runtime.v2.task/k8s.io/{CONTAINERD_ID}");
    host.put(
        format!("{task}/config.json"),
        &fixture("containerd-cri.config.json"),
    );
    host.put(format!("{task}/init.pid"), b"4242");
    host.mkdir("run/containerd/io.containerd.runtime.v2.task/moby");
    host.mkdir("run/containerd/io.containerd.runtime.v2.task/default");
    host.put(
        format!("var/lib/containers/storage/overlay-containers/{PODMAN_ID}/userdata/config.json"),
        &fixture("podman.config.json"),
    );
    host.put(
        "var/lib/containers/storage/overlay-containers/containers.json",
        &fixture("podman.containers.json"),
    );
    host.put(
        format!("run/containers/storage/overlay-containers/{PODMAN_ID}/userdata/pidfile"),
        b"8938",
    );
    // CRI-O's spec only under the run root, another driver.
    host.put(
        format!("run/containers/storage/vfs-containers/{CRIO_ID}/userdata/config.json"),
        &fixture("crio.config.json"),
    );
    host.mkdir("var/lib/containers/storage/vfs-containers");

    assert_eq!(
        lookup(&roots, &key(DOCKER_K8S_ID)).unwrap(),
        Some(cri_dockerd_meta())
    );
    assert_eq!(
        lookup(&roots, &key(CONTAINERD_ID)).unwrap(),
        Some(ContainerMeta {
            init_pid: Some(4242),
            ..containerd_cri_meta()
        })
    );
    assert_eq!(
        lookup(&roots, &key(PODMAN_ID)).unwrap(),
        Some(ContainerMeta {
            id: PODMAN_ID.into(),
            runtime: Some(Runtime::Podman),
            name: some("web-frontend"),
            image: some("localhost/oomwatch-test-busybox:1"),
            image_id: some("a4bf0038c686b730a3a709e60c8154b99a54e835111a16cd81f27625cb07d948"),
            init_pid: Some(8938),
            ..Default::default()
        })
    );
    assert_eq!(lookup(&roots, &key(CRIO_ID)).unwrap(), Some(crio_meta()));
    // A hint goes straight to that runtime's records.
    let hinted = |id, runtime| {
        lookup(
            &roots,
            &WorkloadKey {
                container_id: id,
                runtime: Some(runtime),
                pod_uid: None,
            },
        )
        .unwrap()
    };
    assert_eq!(hinted(CRIO_ID, Runtime::Crio), Some(crio_meta()));
    assert_eq!(hinted(CRIO_ID, Runtime::Docker), None);
    assert_eq!(hinted(DOCKER_K8S_ID, Runtime::Containerd), None);
    // Nobody knows this one; nothing exists under an empty root either.
    assert_eq!(lookup(&roots, &key(&"e".repeat(64))).unwrap(), None);
    assert_eq!(
        lookup(&Host::new("empty").roots(), &key(DOCKER_K8S_ID)).unwrap(),
        None
    );
}

#[test]
fn kubelet_log_names_fill_what_the_runtime_does_not_say() {
    let host = Host::new("kubelet");
    let roots = host.roots();
    // A Docker container whose record has no Kubernetes labels, in a pod
    // by its cgroup path (kubepods/.../pod<uid>/<id>).
    host.docker(DOCKER_PLAIN_ID, "docker-plain.config.v2.json");
    host.put(
        format!("var/log/containers/web-7d9f_shop_frontend-{DOCKER_PLAIN_ID}.log"),
        b"",
    );
    host.put(
        format!("var/log/containers/other_shop_x-{CONTAINERD_ID}.log"),
        b"",
    );
    let in_pod = WorkloadKey {
        container_id: DOCKER_PLAIN_ID,
        runtime: None,
        pod_uid: Some(UID),
    };
    let meta = lookup(&roots, &in_pod).unwrap().unwrap();
    assert_eq!(
        (
            meta.name.as_deref(),
            meta.pod.as_deref(),
            meta.namespace.as_deref(),
            meta.container.as_deref()
        ),
        (
            Some("web-frontend"),
            Some("web-7d9f"),
            Some("shop"),
            Some("frontend")
        )
    );
    assert_eq!(
        (meta.init_pid, meta.pod_uid.as_deref()),
        (Some(6845), Some(UID))
    );
    // Outside a pod (no uid in the path or the record) the kubelet's
    // directories are not scanned.
    let meta = lookup(&roots, &key(DOCKER_PLAIN_ID)).unwrap().unwrap();
    assert_eq!(
        (meta.name.as_deref(), meta.pod, meta.pod_uid),
        (Some("web-frontend"), None, None)
    );

    // No runtime record at all, the pod uid from the cgroup path: the pod's
    // log directory names the pod, and its only container.
    let id = "c".repeat(64);
    host.put(
        format!("var/log/pods/shop_web-7d9f_{UID}/frontend/0.log"),
        b"",
    );
    host.put(
        format!("var/log/containers/web-7d9f_shop_frontend-{id}.log"),
        b"",
    );
    let meta = lookup(
        &roots,
        &WorkloadKey {
            container_id: &id,
            runtime: Some(Runtime::Containerd),
            pod_uid: Some(UID),
        },
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        meta,
        ContainerMeta {
            id: id.clone(),
            runtime: Some(Runtime::Containerd),
            pod: some("web-7d9f"),
            namespace: some("shop"),
            container: some("frontend"),
            pod_uid: some(UID),
            ..Default::default()
        }
    );
    // Not even a log link (a sandbox has none): the pod's directory still
    // names the pod, and not its one container, which this may not be.
    let unlinked = "d".repeat(64);
    let in_pod = WorkloadKey {
        container_id: &unlinked,
        runtime: None,
        pod_uid: Some(UID),
    };
    let meta = lookup(&roots, &in_pod).unwrap().unwrap();
    assert_eq!(
        (
            meta.pod.as_deref(),
            meta.namespace.as_deref(),
            meta.container.as_deref(),
            meta.runtime
        ),
        (Some("web-7d9f"), Some("shop"), None, None)
    );
    // A record that says "container" but names no container: the pod's
    // only container is this one.
    let labelled = "e".repeat(64);
    host.put(
        format!("var/lib/docker/containers/{labelled}/config.v2.json"),
        format!(
            r#"{{"ID": "{labelled}", "Config": {{"Labels": {{"io.kubernetes.docker.type": "container", "io.kubernetes.pod.uid": "{UID}"}}}}}}"#
        )
        .as_bytes(),
    );
    let meta = lookup(&roots, &key(&labelled)).unwrap().unwrap();
    assert_eq!(
        (meta.pod.as_deref(), meta.container.as_deref()),
        (Some("web-7d9f"), Some("frontend"))
    );
    host.put(
        format!("var/log/pods/shop_web-7d9f_{UID}/sidecar/0.log"),
        b"",
    );
    // Two containers: which one is not known from the pod's directory.
    let meta = lookup(&roots, &key(&labelled)).unwrap().unwrap();
    assert_eq!(
        (meta.pod.as_deref(), meta.container),
        (Some("web-7d9f"), None)
    );
    // Nothing on this host knows a pod of another uid.
    let other_uid = "0123456789abcdef0123456789abcdef";
    assert_eq!(
        lookup(
            &roots,
            &WorkloadKey {
                container_id: &unlinked,
                runtime: None,
                pod_uid: Some(other_uid)
            }
        )
        .unwrap(),
        None
    );
    let dir = lookup_pod_logs(&roots, UID).unwrap().unwrap();
    assert_eq!(
        dir.containers,
        vec!["frontend".to_owned(), "sidecar".to_owned()]
    );
    assert_eq!(
        lookup_pod_logs(&roots, "0123456789abcdef0123456789abcdef").unwrap(),
        None
    );
    assert!(matches!(
        lookup_pod_logs(&roots, "../../etc"),
        Err(LookupError::InvalidId(_))
    ));
}

#[test]
fn unreadable_records_are_errors_naming_the_path() {
    let host = Host::new("errors");
    let roots = host.roots();
    let bad = host.put(
        format!("var/lib/docker/containers/{DOCKER_PLAIN_ID}/config.v2.json"),
        b"{\"ID\": ",
    );
    let e = lookup(&roots, &key(DOCKER_PLAIN_ID)).unwrap_err();
    assert!(matches!(e, LookupError::Parse { .. }));
    let text = e.to_string();
    assert!(
        text.starts_with(&bad.display().to_string()) && !text.contains('\n'),
        "{text}"
    );
    // Another runtime knowing the id wins over the broken record.
    let task = format!("run/containerd/io.containerd.runtime.v2.task/moby/{DOCKER_PLAIN_ID}");
    host.put(
        format!("{task}/config.json"),
        &fixture("containerd-moby.config.json"),
    );
    host.put(format!("{task}/init.pid"), b"6845\n");
    let meta = lookup(&roots, &key(DOCKER_PLAIN_ID)).unwrap().unwrap();
    assert_eq!(
        (meta.runtime, meta.init_pid),
        (Some(Runtime::Docker), Some(6845))
    );

    // Larger than the cap: refused without reading it all.
    let big = host.put(
        format!("var/lib/docker/containers/{DOCKER_K8S_ID}/config.v2.json"),
        &vec![b' '; RECORD_LIMIT as usize + 1],
    );
    let e = lookup_docker(&roots, DOCKER_K8S_ID).unwrap_err();
    assert!(
        matches!(e, LookupError::TooLarge { .. })
            && e.to_string().contains(&big.display().to_string()),
        "{e}"
    );

    // A FIFO where a record should be (bundles hold FIFOs): refused, not a hang.
    let fifo_dir = host
        .root
        .join(format!("var/lib/docker/containers/{CONTAINERD_ID}"));
    fs::create_dir_all(&fifo_dir).unwrap();
    let fifo = fifo_dir.join("config.v2.json");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo with a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    assert!(matches!(
        lookup_docker(&roots, CONTAINERD_ID),
        Err(LookupError::NotAFile { .. })
    ));

    // Ids never become paths out of the roots.
    for id in [
        "",
        "../../../etc/passwd",
        "a/b",
        ".hidden",
        "a\0b",
        &"a".repeat(256),
    ] {
        assert!(
            matches!(lookup(&roots, &key(id)), Err(LookupError::InvalidId(_))),
            "{id:?}"
        );
        assert!(
            matches!(
                lookup_containerd(&roots, id),
                Err(LookupError::InvalidId(_))
            ),
            "{id:?}"
        );
        assert!(
            matches!(lookup_storage(&roots, id), Err(LookupError::InvalidId(_))),
            "{id:?}"
        );
    }
    // A garbage pid file reads as no pid.
    host.put(format!("{task}/init.pid"), b"garbage");
    assert_eq!(
        lookup_containerd(&roots, DOCKER_PLAIN_ID)
            .unwrap()
            .unwrap()
            .init_pid,
        None
    );
}

#[test]
fn roots_under_a_host_mount() {
    let roots = RuntimeRoots::under(Path::new("/host"));
    assert_eq!(roots.docker_data_root, Path::new("/host/var/lib/docker"));
    assert_eq!(roots.containerd_state, Path::new("/host/run/containerd"));
    assert_eq!(roots.pod_logs, Path::new("/host/var/log/pods"));
    assert_eq!(RuntimeRoots::under(Path::new("/")), RuntimeRoots::default());
}
