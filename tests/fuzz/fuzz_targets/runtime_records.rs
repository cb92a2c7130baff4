//! Container runtimes' records (`oomwatch::readers::runtime`): Docker's
//! config.v2.json, OCI config.json (containerd bundles, CRI-O, podman),
//! containers/storage's containers.json, the kubelet's log names, pid
//! files and /proc status NSpid lines. Input: `<container id>\n<record>`;
//! every parser reads every input.
//!
//! Never panic; a parsed container is the one asked for; every name is
//! shown as it is (non-empty, at most MAX_VALUE_LEN bytes, no control
//! characters) or absent; the runtime is the one the record's place says;
//! kubelet names split back into the name they came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oomwatch::readers::runtime::{
    ContainerMeta, MAX_VALUE_LEN, OciPlace, Runtime, find_storage_entry, is_pid_namespace_init,
    parse_container_log_name, parse_docker_config, parse_oci_config, parse_pid_file,
    parse_pod_log_dir,
};

/// JSON records: 256 KiB, like the other JSON targets.
const MAX_INPUT: usize = 256 << 10;

fn shown(v: &str) {
    assert!(!v.trim().is_empty(), "{v:?}");
    assert!(v.len() <= MAX_VALUE_LEN, "{} bytes", v.len());
    assert!(!v.chars().any(char::is_control), "{v:?}");
}

fn check(meta: &ContainerMeta, id: &str, runtimes: &[Runtime]) {
    assert_eq!(meta.id, id);
    assert!(
        meta.runtime.is_some_and(|r| runtimes.contains(&r)),
        "{:?} not in {runtimes:?}",
        meta.runtime
    );
    for v in [
        &meta.name,
        &meta.image,
        &meta.image_id,
        &meta.pod,
        &meta.namespace,
        &meta.container,
    ]
    .into_iter()
    .flatten()
    {
        shown(v);
    }
    if let Some(uid) = &meta.pod_uid {
        assert!(
            (32..=36).contains(&uid.len())
                && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'),
            "{uid:?}"
        );
    }
    assert_ne!(meta.init_pid, Some(0));
    // What the daemon will put in events survives JSON.
    let text = serde_json::to_string(meta).expect("serialize");
    assert_eq!(
        &serde_json::from_str::<ContainerMeta>(&text).expect("parse back"),
        meta
    );
}

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_INPUT {
        return;
    }
    let (first, record) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[..0]),
    };
    let Ok(id) = std::str::from_utf8(first) else {
        return;
    };

    if let Ok(meta) = parse_docker_config(id, record) {
        check(&meta, id, &[Runtime::Docker]);
    }
    for (place, runtimes) in [
        (
            OciPlace::ContainerdTask {
                namespace: "k8s.io",
            },
            &[Runtime::Containerd][..],
        ),
        (
            OciPlace::ContainerdTask { namespace: "moby" },
            &[Runtime::Docker][..],
        ),
        (OciPlace::Storage, &[Runtime::Crio, Runtime::Podman][..]),
    ] {
        if let Ok(meta) = parse_oci_config(id, place, record) {
            check(&meta, id, runtimes);
        }
    }
    if let Ok(Some(entry)) = find_storage_entry(id, record) {
        assert!(entry.names.len() <= 8);
        entry.names.iter().for_each(|n| shown(n));
        let mut meta = entry.meta(id);
        meta.runtime = Some(Runtime::Podman);
        check(&meta, id, &[Runtime::Podman]);
    }

    if let Some(dir) = parse_pod_log_dir(id) {
        assert_eq!(format!("{}_{}_{}", dir.namespace, dir.pod, dir.uid), id);
    }
    if let Some(log) = parse_container_log_name(id) {
        assert_eq!(
            format!(
                "{}_{}_{}-{}.log",
                log.pod, log.namespace, log.container, log.id
            ),
            id
        );
        for v in [&log.pod, &log.namespace, &log.container] {
            shown(v);
        }
    }
    if let Some(pid) = parse_pid_file(first) {
        assert!(pid > 0);
        assert_eq!(pid.to_string(), id.trim_start_matches('0'));
    }
    if let Ok(status) = std::str::from_utf8(record) {
        let _ = is_pid_namespace_init(status);
    }
});
