//! What naming a new container costs: one lookup per container, when its
//! cgroup appears (release build). The records are the real ones of
//! `src/readers/runtime/testdata/` (Docker 20.10, containerd 1.6, podman
//! 4.3; CRI-O's spec assembled from its source), laid out in a scratch
//! directory as each runtime lays out its state, next to `--others N`
//! other containers per runtime (default 100) so directory lookups pay for
//! a populated host. Prints one JSON object on one line on stdout
//! (`cargo xtask bench --only names` reads it):
//!
//!   cargo bench -p oomwatch --bench runtime_lookup -- [--iters N] [--others N]
//!
//! `parse_us` is the parse alone (bytes in memory); `lookup_us` adds the
//! open, fstat and read of the files (page cache warm, as it is for a
//! container that was just created); `kubelet_us` is the fallback that
//! scans the kubelet's log links for a container the runtime's record does
//! not name.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Instant,
};

use oomwatch::readers::runtime::{
    OciPlace, Runtime, RuntimeRoots, WorkloadKey, lookup, lookup_container_log,
    parse_docker_config, parse_oci_config,
};

const DOCKER_ID: &str = "8f00a3a20d9728c4a384b08bd17661159b170e011c4b8062d9321c94d9794f1c";
const CONTAINERD_ID: &str = "3f1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809";
const CRIO_ID: &str = "9c1e3a5b7d2f4e6a8c0b1d3f5e7a9c2b4d6f8e0a1c3b5d7f9e2a4c6b8d0f1e3a";
const PODMAN_ID: &str = "0a7c580e0196b22e19e9e3964f3fcd1463d31663a229741d8b2f17e68454a123";

fn arg(args: &[String], name: &str) -> Option<u32> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/readers/runtime/testdata")
        .join(name);
    fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn put(path: PathBuf, bytes: &[u8]) {
    fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    fs::write(&path, bytes).expect("write");
}

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let iters = arg(&args, "--iters").unwrap_or(20_000).max(1);
    let others = arg(&args, "--others").unwrap_or(100);
    let scratch = Scratch(
        std::env::temp_dir().join(format!("oomwatch-bench-runtime-{}", std::process::id())),
    );
    let root = &scratch.0;
    let roots = RuntimeRoots::under(root);

    let docker = fixture("docker-cri-dockerd.config.v2.json");
    let containerd = fixture("containerd-cri.config.json");
    let crio = fixture("crio.config.json");
    let podman = fixture("podman.config.json");
    let other_id = |n: u32| format!("{n:064x}");
    for n in 0..others {
        let id = other_id(n);
        put(
            roots
                .docker_data_root
                .join("containers")
                .join(&id)
                .join("config.v2.json"),
            &docker,
        );
        put(
            roots
                .containerd_state
                .join("io.containerd.runtime.v2.task/k8s.io")
                .join(&id)
                .join("config.json"),
            &containerd,
        );
        put(
            roots
                .storage_graph_root
                .join("overlay-containers")
                .join(&id)
                .join("userdata/config.json"),
            &crio,
        );
        put(
            roots
                .container_logs
                .join(format!("pod-{n}_shop_app-{id}.log")),
            b"",
        );
    }
    put(
        roots
            .docker_data_root
            .join("containers")
            .join(DOCKER_ID)
            .join("config.v2.json"),
        &docker,
    );
    let task = roots
        .containerd_state
        .join("io.containerd.runtime.v2.task/k8s.io")
        .join(CONTAINERD_ID);
    put(task.join("config.json"), &containerd);
    put(task.join("init.pid"), b"4242");
    for ns in ["moby", "default"] {
        fs::create_dir_all(
            roots
                .containerd_state
                .join("io.containerd.runtime.v2.task")
                .join(ns),
        )
        .expect("mkdir ns");
    }
    put(
        roots
            .storage_graph_root
            .join("overlay-containers")
            .join(CRIO_ID)
            .join("userdata/config.json"),
        &crio,
    );
    put(
        roots
            .storage_run_root
            .join("overlay-containers")
            .join(CRIO_ID)
            .join("userdata/pidfile"),
        b"5151",
    );
    put(
        roots
            .storage_graph_root
            .join("overlay-containers")
            .join(PODMAN_ID)
            .join("userdata/config.json"),
        &podman,
    );
    put(
        roots
            .storage_graph_root
            .join("overlay-containers/containers.json"),
        &fixture("podman.containers.json"),
    );
    put(
        roots
            .container_logs
            .join(format!("web-7d9f_shop_frontend-{DOCKER_ID}.log")),
        b"",
    );

    let time = |f: &dyn Fn() -> bool| {
        assert!(f(), "the benchmarked call did not find its container");
        let start = Instant::now();
        for _ in 0..iters {
            std::hint::black_box(f());
        }
        start.elapsed().as_secs_f64() * 1e6 / f64::from(iters)
    };
    let by = |id: &'static str, runtime: Option<Runtime>| {
        let roots = roots.clone();
        move || {
            lookup(
                &roots,
                &WorkloadKey {
                    container_id: id,
                    runtime,
                    pod_uid: None,
                },
            )
            .is_ok_and(|m| m.is_some())
        }
    };
    let out = serde_json::json!({
        "bench": "runtime_lookup",
        "iters": iters,
        "others_per_runtime": others,
        "record_bytes": {
            "docker_config_v2": docker.len(),
            "containerd_config": containerd.len(),
            "crio_config": crio.len(),
        },
        "parse_us": {
            "docker_config_v2": time(&|| parse_docker_config(DOCKER_ID, &docker).is_ok()),
            "containerd_config": time(&|| parse_oci_config(CONTAINERD_ID, OciPlace::ContainerdTask { namespace: "k8s.io" }, &containerd).is_ok()),
            "crio_config": time(&|| parse_oci_config(CRIO_ID, OciPlace::Storage, &crio).is_ok()),
        },
        "lookup_us": {
            "docker_with_hint": time(&by(DOCKER_ID, Some(Runtime::Docker))),
            "containerd_with_hint": time(&by(CONTAINERD_ID, Some(Runtime::Containerd))),
            "crio_with_hint": time(&by(CRIO_ID, Some(Runtime::Crio))),
            "podman_with_hint": time(&by(PODMAN_ID, Some(Runtime::Podman))),
            "containerd_no_hint": time(&by(CONTAINERD_ID, None)),
            "crio_no_hint": time(&by(CRIO_ID, None)),
        },
        "kubelet_us": {
            "container_log_scan": time(&|| lookup_container_log(&roots, DOCKER_ID).is_ok_and(|n| n.is_some())),
        },
    });
    // One line: `cargo xtask bench` reads the last line that is a JSON object.
    println!("{out}");
}
