//! Workload labels from a cgroup path (`oomwatch::readers::labels_for`):
//! never panic; every label has the shape its name promises.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oomwatch::readers::labels_for;

/// PATH_MAX.
const MAX_INPUT: usize = 4096;

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_INPUT {
        return;
    }
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let l = labels_for(path);
    if let Some(unit) = &l.unit {
        assert!(
            [".service", ".scope", ".slice", ".socket", ".mount", ".swap"].iter().any(|s| unit.ends_with(s)),
            "{unit:?}"
        );
        assert!(!unit.contains('/'));
        assert!(path.split('/').any(|seg| seg == unit));
    }
    if let Some(id) = &l.container_id {
        assert_eq!(id.len(), 64);
        assert!(id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')), "{id:?}");
    }
    if let Some(rt) = l.runtime {
        assert!(["docker", "containerd", "crio", "podman"].contains(&rt));
        assert!(l.container_id.is_some(), "runtime without a container in {path:?}");
    }
    if let Some(uid) = &l.pod_uid {
        assert!((32..=36).contains(&uid.len()));
        assert!(uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'), "{uid:?}");
        assert!(l.qos.is_some(), "pod without a QoS class in {path:?}");
    }
    if let Some(qos) = l.qos {
        assert!(["guaranteed", "burstable", "besteffort"].contains(&qos));
    }
});
