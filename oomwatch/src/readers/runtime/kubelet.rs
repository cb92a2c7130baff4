//! Names the kubelet writes into file and directory names for every
//! container, whatever the runtime:
//! - `/var/log/pods/<namespace>_<pod>_<uid>/<container>/<restart>.log`
//! - `/var/log/containers/<pod>_<namespace>_<container>-<container id>.log`
//!   (links into the former).
//!
//! Namespaces, pod names and container names are DNS labels or subdomains
//! in Kubernetes and never hold `_`, which makes the split unambiguous; a
//! name that breaks that rule is refused rather than split wrongly.

use serde::{Deserialize, Serialize};

use super::clean;

/// A pod's log directory name, and the containers it holds logs for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodLogDir {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    /// Filled by the lookup from the directory's entries, sorted.
    pub containers: Vec<String>,
}

/// A container's log link name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerLogName {
    pub pod: String,
    pub namespace: String,
    pub container: String,
    pub id: String,
}

/// `<namespace>_<pod>_<uid>` -> its parts; `None` for any other shape.
pub fn parse_pod_log_dir(name: &str) -> Option<PodLogDir> {
    let mut parts = name.split('_');
    let (namespace, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !is_pod_uid(uid) {
        return None;
    }
    Some(PodLogDir {
        namespace: clean(Some(namespace.to_owned()))?,
        pod: clean(Some(pod.to_owned()))?,
        uid: uid.to_owned(),
        containers: Vec::new(),
    })
}

/// `<pod>_<namespace>_<container>-<64 hex>.log` -> its parts; `None` for
/// any other shape.
pub fn parse_container_log_name(name: &str) -> Option<ContainerLogName> {
    let stem = name.strip_suffix(".log")?;
    let (names, id) = stem.rsplit_once('-')?;
    if id.len() != 64 || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut parts = names.split('_');
    let (pod, namespace, container) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some(ContainerLogName {
        pod: clean(Some(pod.to_owned()))?,
        namespace: clean(Some(namespace.to_owned()))?,
        container: clean(Some(container.to_owned()))?,
        id: id.to_owned(),
    })
}

/// A pod uid: a UUID, or the 32-hex config hash of a static pod.
pub(super) fn is_pod_uid(s: &str) -> bool {
    (32..=36).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

pub(super) fn clean_uid(uid: Option<&str>) -> Option<String> {
    uid.filter(|u| is_pod_uid(u)).map(str::to_owned)
}
