//! The OCI runtime spec (`config.json`) of a container, as containerd,
//! CRI-O and podman write it for runc. Only its annotations are read: the
//! Kubernetes CRI implementations record the pod and container there.
//!
//! containerd's CRI plugin (`pkg/cri/annotations`): `io.kubernetes.cri.`
//! `sandbox-name`, `sandbox-namespace`, `sandbox-uid`, `container-name`,
//! `container-type` (`sandbox` or `container`), `image-name`.
//!
//! CRI-O (`internal/factory/container`): the kubelet's labels copied as
//! annotations (`io.kubernetes.pod.name`, `io.kubernetes.pod.namespace`,
//! `io.kubernetes.pod.uid`, `io.kubernetes.container.name`), and its own
//! `io.kubernetes.cri-o.` `Name`, `ContainerID`, `ContainerType`,
//! `ImageName` (a name of the image), `Image` (as asked for), `ImageRef`
//! (the image id); `io.container.manager` is `cri-o`.
//!
//! podman writes `io.container.manager: libpod` and no names (those are in
//! containers/storage's list, see `storage.rs`).

use serde::Deserialize;

use super::json::{KeySet, LenientObject, PickedKeys};
use super::{ContainerKind, ContainerMeta, ParseError, Runtime, clean, kubelet::clean_uid};

const CRI_SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
const CRI_SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
const CRI_SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
const CRI_CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
const CRI_IMAGE_NAME: &str = "io.kubernetes.cri.image-name";
const KUBE_POD_NAME: &str = "io.kubernetes.pod.name";
const KUBE_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
const KUBE_POD_UID: &str = "io.kubernetes.pod.uid";
const KUBE_CONTAINER_NAME: &str = "io.kubernetes.container.name";
const CRIO_NAME: &str = "io.kubernetes.cri-o.Name";
const CRIO_CONTAINER_ID: &str = "io.kubernetes.cri-o.ContainerID";
const CRIO_CONTAINER_TYPE: &str = "io.kubernetes.cri-o.ContainerType";
const CRIO_IMAGE_NAME: &str = "io.kubernetes.cri-o.ImageName";
const CRIO_IMAGE: &str = "io.kubernetes.cri-o.Image";
const CRIO_IMAGE_REF: &str = "io.kubernetes.cri-o.ImageRef";
const CONTAINER_MANAGER: &str = "io.container.manager";

struct Annotations;
impl KeySet for Annotations {
    const KEYS: &'static [&'static str] = &[
        CRI_SANDBOX_NAME,
        CRI_SANDBOX_NAMESPACE,
        CRI_SANDBOX_UID,
        CRI_CONTAINER_NAME,
        CRI_CONTAINER_TYPE,
        CRI_IMAGE_NAME,
        KUBE_POD_NAME,
        KUBE_POD_NAMESPACE,
        KUBE_POD_UID,
        KUBE_CONTAINER_NAME,
        CRIO_NAME,
        CRIO_CONTAINER_ID,
        CRIO_CONTAINER_TYPE,
        CRIO_IMAGE_NAME,
        CRIO_IMAGE,
        CRIO_IMAGE_REF,
        CONTAINER_MANAGER,
    ];
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Spec {
    annotations: PickedKeys<Annotations>,
}

/// Where a `config.json` was found: it decides the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OciPlace<'a> {
    /// A containerd task bundle in this containerd namespace (`moby` is
    /// Docker's).
    ContainerdTask { namespace: &'a str },
    /// A containers/storage `userdata` directory: CRI-O or podman, told
    /// apart by the annotations.
    Storage,
}

/// Parses the OCI spec of container `id`, found at `place`. Fields of
/// unexpected types read as absent; the spec must be a JSON object, and a
/// CRI-O container id annotation, when present, must be `id`.
pub fn parse_oci_config(
    id: &str,
    place: OciPlace,
    bytes: &[u8],
) -> Result<ContainerMeta, ParseError> {
    let spec = serde_json::from_slice::<LenientObject<Spec>>(bytes)?
        .0
        .ok_or(ParseError::NotAnObject)?;
    let a = &spec.annotations;
    if let Some(found) = a.get(CRIO_CONTAINER_ID)
        && found != id
    {
        return Err(ParseError::IdMismatch {
            wanted: id.to_owned(),
            found: found.to_owned(),
        });
    }
    let runtime = match place {
        OciPlace::ContainerdTask { namespace: "moby" } => Runtime::Docker,
        OciPlace::ContainerdTask { .. } => Runtime::Containerd,
        OciPlace::Storage => match a.get(CONTAINER_MANAGER) {
            Some("cri-o") => Runtime::Crio,
            Some("libpod") => Runtime::Podman,
            // Older CRI-O wrote no manager, but always its own annotations.
            _ if a.get(CRIO_CONTAINER_TYPE).is_some() || a.get(CRIO_NAME).is_some() => {
                Runtime::Crio
            }
            _ => Runtime::Podman,
        },
    };
    let first = |keys: &[&str]| keys.iter().find_map(|k| clean(a.get(k).map(str::to_owned)));
    let kind = match a.get(CRI_CONTAINER_TYPE).or(a.get(CRIO_CONTAINER_TYPE)) {
        Some("sandbox") => Some(ContainerKind::Sandbox),
        Some("container") => Some(ContainerKind::Container),
        _ => None,
    };
    Ok(ContainerMeta {
        id: id.to_owned(),
        runtime: Some(runtime),
        name: first(&[CRIO_NAME]),
        image: first(&[CRI_IMAGE_NAME, CRIO_IMAGE_NAME, CRIO_IMAGE]),
        image_id: first(&[CRIO_IMAGE_REF]),
        pod: first(&[CRI_SANDBOX_NAME, KUBE_POD_NAME]),
        namespace: first(&[CRI_SANDBOX_NAMESPACE, KUBE_POD_NAMESPACE]),
        container: first(&[CRI_CONTAINER_NAME, KUBE_CONTAINER_NAME]),
        pod_uid: clean_uid(a.get(CRI_SANDBOX_UID)).or_else(|| clean_uid(a.get(KUBE_POD_UID))),
        kind,
        init_pid: None,
    })
}
