//! Docker's record of a container: `<data-root>/containers/<id>/config.v2.json`,
//! the daemon's own serialization of its container struct (moby
//! `daemon/container`), rewritten atomically on every state change.

use serde::Deserialize;

use super::json::{KeySet, LenientBool, LenientObject, LenientStr, LenientU32, PickedKeys};
use super::{ContainerKind, ContainerMeta, ParseError, Runtime, clean, kubelet::clean_uid};

#[derive(Deserialize, Default)]
#[serde(default)]
struct ConfigV2 {
    #[serde(rename = "ID")]
    id: LenientStr,
    /// `/web-frontend`: the leading slash is Docker's.
    #[serde(rename = "Name")]
    name: LenientStr,
    /// The image id (`sha256:...`).
    #[serde(rename = "Image")]
    image_id: LenientStr,
    #[serde(rename = "State")]
    state: LenientObject<State>,
    #[serde(rename = "Config")]
    config: LenientObject<Config>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct State {
    #[serde(rename = "Running")]
    running: LenientBool,
    /// 0 once the container stopped.
    #[serde(rename = "Pid")]
    pid: LenientU32,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Config {
    /// The image as given to `docker run` or by cri-dockerd.
    #[serde(rename = "Image")]
    image: LenientStr,
    #[serde(rename = "Labels")]
    labels: PickedKeys<KubeLabels>,
}

/// The kubelet's labels, which cri-dockerd (and dockershim before it) puts
/// on each container it creates.
struct KubeLabels;
const POD_NAME: &str = "io.kubernetes.pod.name";
const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
const POD_UID: &str = "io.kubernetes.pod.uid";
const CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// cri-dockerd: `podsandbox` or `container`.
const DOCKER_TYPE: &str = "io.kubernetes.docker.type";
impl KeySet for KubeLabels {
    const KEYS: &'static [&'static str] = &[
        POD_NAME,
        POD_NAMESPACE,
        POD_UID,
        CONTAINER_NAME,
        DOCKER_TYPE,
    ];
}

/// Parses a `config.v2.json` read for container `id`. Fields of unexpected
/// types read as absent; the record must be a JSON object, and its `ID`,
/// when present, must be `id`.
pub fn parse_docker_config(id: &str, bytes: &[u8]) -> Result<ContainerMeta, ParseError> {
    let record = serde_json::from_slice::<LenientObject<ConfigV2>>(bytes)?
        .0
        .ok_or(ParseError::NotAnObject)?;
    if let Some(found) = record.id.0
        && found != id
    {
        return Err(ParseError::IdMismatch {
            wanted: id.to_owned(),
            found,
        });
    }
    let state = record.state.0.unwrap_or_default();
    let config = record.config.0.unwrap_or_default();
    let label = |key| clean(config.labels.get(key).map(str::to_owned));
    let kind = match config.labels.get(DOCKER_TYPE) {
        Some("podsandbox") => Some(ContainerKind::Sandbox),
        Some("container") => Some(ContainerKind::Container),
        _ => None,
    };
    Ok(ContainerMeta {
        id: id.to_owned(),
        runtime: Some(Runtime::Docker),
        name: clean(
            record
                .name
                .0
                .map(|n| n.strip_prefix('/').map(str::to_owned).unwrap_or(n)),
        ),
        image: clean(config.image.0),
        image_id: clean(record.image_id.0),
        pod: label(POD_NAME),
        namespace: label(POD_NAMESPACE),
        container: label(CONTAINER_NAME),
        pod_uid: clean_uid(config.labels.get(POD_UID)),
        kind,
        init_pid: state
            .pid
            .0
            .filter(|&p| p > 0 && state.running.0 != Some(false)),
    })
}
