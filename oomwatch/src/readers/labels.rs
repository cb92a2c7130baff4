//! Names people recognize, derived from a cgroup path alone: the systemd
//! unit, the container and its runtime, the Kubernetes pod and QoS class.
//!
//! Only the path is used (no runtime API), so labels are available for a
//! cgroup that has already been removed, e.g. the one an OOM kill emptied.
//! The conventions decoded here:
//! - systemd: every segment ending in `.slice`, `.service`, `.scope` (and the
//!   rarer `.socket`, `.mount`, `.swap`) is a unit; the innermost one wins.
//! - kubelet, systemd driver: `kubepods.slice/kubepods-<qos>.slice/
//!   kubepods-<qos>-pod<uid>.slice/<runtime>-<id>.scope`, where the pod uid's
//!   dashes are written as underscores (systemd reserves `-` for nesting) and
//!   guaranteed pods have no `<qos>` part.
//! - kubelet, cgroupfs driver: `kubepods/<qos>/pod<uid>/<id>`, guaranteed
//!   pods directly under `kubepods`.
//! - runtimes: `docker-<id>.scope`, `cri-containerd-<id>.scope`,
//!   `crio-<id>.scope`, `libpod-<id>.scope` (podman), `nerdctl-<id>.scope`;
//!   with cgroupfs `docker/<id>` or a bare `<id>` (`dockerd --cgroup-parent`
//!   and `ctr run --cgroup` give `<parent>/<id>`, podman's cgroupfs manager
//!   `<parent>/libpod-<id>`: only the latter names its runtime); containerd's
//!   `<slice>:<prefix>:<id>` form, seen when systemd does not manage the
//!   tree (e.g. under `containerd.service` in nested setups).

/// What a cgroup path tells about its workload. Every field is `None` when
/// the path does not say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupLabels {
    /// The innermost systemd unit, e.g. `nginx.service`, `session-3.scope`,
    /// `cri-containerd-<id>.scope`.
    pub unit: Option<String>,
    /// The innermost container's full id (64 lowercase hex digits).
    pub container_id: Option<String>,
    /// `docker`, `containerd`, `crio` or `podman`, when the path names it;
    /// the kubelet's cgroupfs driver does not, so it is `None` there.
    pub runtime: Option<&'static str>,
    /// The Kubernetes pod uid with dashes, as `kubectl get pod -o
    /// jsonpath={.metadata.uid}` prints it.
    pub pod_uid: Option<String>,
    /// `guaranteed`, `burstable` or `besteffort`, for pods only.
    pub qos: Option<&'static str>,
}

/// Derives labels from a cgroup path such as `/system.slice/nginx.service`
/// or `/kubepods/burstable/pod<uid>/<id>`. Never fails: unknown paths give
/// empty labels.
pub fn labels_for(path: &str) -> CgroupLabels {
    let mut labels = CgroupLabels::default();
    let mut in_kubepods = false;
    let mut parent = "";
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        let grandparent = std::mem::replace(&mut parent, seg);
        // containerd's "<slice>:<prefix>:<id>" names carry a pod slice, a
        // runtime prefix and a container id in one segment.
        let mut colon = seg.splitn(3, ':');
        if let (Some(slice), Some(prefix), Some(id)) = (colon.next(), colon.next(), colon.next()) {
            if kube_slice(slice, &mut labels) {
                in_kubepods = true;
            }
            if is_container_id(id) {
                labels.container_id = Some(id.to_owned());
                labels.runtime = runtime_for_prefix(prefix);
            }
            continue;
        }

        if is_unit(seg) {
            labels.unit = Some(seg.to_owned());
        }
        if kube_slice(seg, &mut labels) {
            in_kubepods = true;
            continue;
        }
        if seg == "kubepods" {
            in_kubepods = true;
            // A new kubepods level (nested clusters): forget the outer pod.
            labels.pod_uid = None;
            labels.qos = None;
            continue;
        }
        if in_kubepods {
            match seg {
                "burstable" => {
                    labels.qos = Some("burstable");
                    continue;
                }
                "besteffort" => {
                    labels.qos = Some("besteffort");
                    continue;
                }
                _ => {}
            }
            if let Some(uid) = seg.strip_prefix("pod").filter(|u| is_pod_uid(u)) {
                labels.pod_uid = Some(uid.replace('_', "-"));
                labels.qos.get_or_insert("guaranteed");
                continue;
            }
        }
        if let Some((id, runtime)) = container_segment(seg) {
            labels.container_id = Some(id.to_owned());
            // Docker's cgroupfs driver names the runtime in the parent only.
            labels.runtime = runtime.or((grandparent == "docker").then_some("docker"));
        }
    }
    labels
}

/// Decodes the kubelet's systemd-driver slices. Returns whether `seg` was one.
fn kube_slice(seg: &str, labels: &mut CgroupLabels) -> bool {
    let Some(name) = seg.strip_suffix(".slice") else {
        return false;
    };
    if name == "kubepods" {
        labels.pod_uid = None;
        labels.qos = None;
        return true;
    }
    let Some(rest) = name.strip_prefix("kubepods-") else {
        return false;
    };
    let (qos, rest) = if let Some(r) = rest.strip_prefix("burstable") {
        (Some("burstable"), r)
    } else if let Some(r) = rest.strip_prefix("besteffort") {
        (Some("besteffort"), r)
    } else {
        (None, rest)
    };
    match rest.strip_prefix('-').unwrap_or(rest) {
        // kubepods-burstable.slice: the QoS level itself.
        "" if qos.is_some() => {
            labels.qos = qos;
            true
        }
        pod => match pod.strip_prefix("pod").filter(|u| is_pod_uid(u)) {
            Some(uid) => {
                labels.pod_uid = Some(uid.replace('_', "-"));
                labels.qos = Some(qos.unwrap_or("guaranteed"));
                true
            }
            None => false,
        },
    }
}

/// A container cgroup segment: `<prefix>-<id>.scope`, `<prefix>-<id>` or a
/// bare `<id>`. The conmon/infra helper scopes (`crio-conmon-<id>.scope`,
/// `libpod-conmon-<id>.scope`) are not the container and are not matched.
fn container_segment(seg: &str) -> Option<(&str, Option<&'static str>)> {
    let name = seg.strip_suffix(".scope").unwrap_or(seg);
    if is_container_id(name) {
        return Some((name, None));
    }
    let (prefix, id) = name.rsplit_once('-')?;
    if !is_container_id(id) {
        return None;
    }
    Some((id, Some(runtime_for_prefix(prefix)?)))
}

fn runtime_for_prefix(prefix: &str) -> Option<&'static str> {
    match prefix {
        "docker" => Some("docker"),
        "cri-containerd" | "containerd" | "nerdctl" => Some("containerd"),
        "crio" => Some("crio"),
        "libpod" => Some("podman"),
        _ => None,
    }
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Pod uids are UUIDs, but static pods use a 32-hex config hash: accept
/// either shape, with `-` or the systemd driver's `_`.
fn is_pod_uid(s: &str) -> bool {
    (32..=36).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_')
}

fn is_unit(seg: &str) -> bool {
    const SUFFIXES: [&str; 6] = [".service", ".scope", ".slice", ".socket", ".mount", ".swap"];
    SUFFIXES
        .iter()
        .any(|suf| seg.len() > suf.len() && seg.ends_with(suf))
}

impl From<CgroupLabels> for crate::wire::Workload {
    fn from(l: CgroupLabels) -> Self {
        Self {
            unit: l.unit,
            container_id: l.container_id,
            runtime: l.runtime.map(str::to_owned),
            pod_uid: l.pod_uid,
            qos: l.qos.map(str::to_owned),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809";
    const ID2: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const UID: &str = "1f2e3d4c-5b6a-4978-8a9b-0c1d2e3f4a5b";
    const UID_US: &str = "1f2e3d4c_5b6a_4978_8a9b_0c1d2e3f4a5b";

    struct Case {
        path: String,
        unit: Option<&'static str>,
        container_id: Option<&'static str>,
        runtime: Option<&'static str>,
        pod_uid: Option<&'static str>,
        qos: Option<&'static str>,
    }

    fn case(path: String) -> Case {
        Case {
            path,
            unit: None,
            container_id: None,
            runtime: None,
            pod_uid: None,
            qos: None,
        }
    }

    impl Case {
        fn unit(mut self, u: &'static str) -> Self {
            self.unit = Some(u);
            self
        }
        fn container(mut self, id: &'static str, runtime: Option<&'static str>) -> Self {
            self.container_id = Some(id);
            self.runtime = runtime;
            self
        }
        fn pod(mut self, uid: &'static str, qos: &'static str) -> Self {
            self.pod_uid = Some(uid);
            self.qos = Some(qos);
            self
        }
    }

    fn leak(s: String) -> &'static str {
        Box::leak(s.into_boxed_str())
    }

    #[test]
    fn table() {
        let cases = [
            // kubelet, systemd driver, containerd.
            case(format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice/cri-containerd-{ID}.scope"
            ))
            .unit(leak(format!("cri-containerd-{ID}.scope")))
            .container(ID, Some("containerd"))
            .pod(UID, "burstable"),
            // kubelet, systemd driver, CRI-O, besteffort.
            case(format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_US}.slice/crio-{ID}.scope"
            ))
            .unit(leak(format!("crio-{ID}.scope")))
            .container(ID, Some("crio"))
            .pod(UID, "besteffort"),
            // Guaranteed pod under the systemd driver, docker via cri-dockerd.
            case(format!("/kubepods.slice/kubepods-pod{UID_US}.slice/docker-{ID}.scope"))
                .unit(leak(format!("docker-{ID}.scope")))
                .container(ID, Some("docker"))
                .pod(UID, "guaranteed"),
            // The pod slice itself: pod, no container.
            case(format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice"))
                .unit(leak(format!("kubepods-burstable-pod{UID_US}.slice")))
                .pod(UID, "burstable"),
            // The QoS slice: qos only.
            Case {
                qos: Some("besteffort"),
                ..case("/kubepods.slice/kubepods-besteffort.slice".into())
                    .unit("kubepods-besteffort.slice")
            },
            // CRI-O's conmon scope is not the container.
            case(format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice/crio-conmon-{ID}.scope"
            ))
            .unit(leak(format!("crio-conmon-{ID}.scope")))
            .pod(UID, "burstable"),
            // kubelet, cgroupfs driver: the runtime is not in the path.
            case(format!("/kubepods/burstable/pod{UID}/{ID}"))
                .container(ID, None)
                .pod(UID, "burstable"),
            case(format!("/kubepods/besteffort/pod{UID}/{ID}"))
                .container(ID, None)
                .pod(UID, "besteffort"),
            case(format!("/kubepods/pod{UID}/{ID}")).container(ID, None).pod(UID, "guaranteed"),
            // Static pod: 32-hex config hash as uid.
            case("/kubepods/pod0123456789abcdef0123456789abcdef".into())
                .pod("0123456789abcdef0123456789abcdef", "guaranteed"),
            // kind / nested: kubelet root under another cgroup.
            case(format!("/kubelet/kubepods/burstable/pod{UID}/{ID}"))
                .container(ID, None)
                .pod(UID, "burstable"),
            // Plain docker, cgroupfs and systemd drivers.
            case(format!("/docker/{ID}")).container(ID, Some("docker")),
            case(format!("/system.slice/docker-{ID}.scope"))
                .unit(leak(format!("docker-{ID}.scope")))
                .container(ID, Some("docker")),
            // Docker in docker: the innermost container.
            case(format!("/docker/{ID}/docker/{ID2}")).container(ID2, Some("docker")),
            // systemd services and sessions.
            case("/system.slice/nginx.service".into()).unit("nginx.service"),
            case("/user.slice/user-1000.slice/session-3.scope".into()).unit("session-3.scope"),
            case("/user.slice/user-1000.slice/user@1000.service/app.slice/app-gnome-firefox-1234.scope".into())
                .unit("app-gnome-firefox-1234.scope"),
            case("/system.slice/system-getty.slice/getty@tty1.service".into())
                .unit("getty@tty1.service"),
            // containerd without Kubernetes: the daemon and what it runs.
            case("/system.slice/containerd.service".into()).unit("containerd.service"),
            case("/system.slice/containerd.service/my-task".into()).unit("containerd.service"),
            case(format!("/system.slice/nerdctl-{ID}.scope"))
                .unit(leak(format!("nerdctl-{ID}.scope")))
                .container(ID, Some("containerd")),
            // containerd's slice:prefix:id form under containerd.service.
            case(format!(
                "/system.slice/containerd.service/kubepods-burstable-pod{UID_US}.slice:cri-containerd:{ID}"
            ))
            .unit("containerd.service")
            .container(ID, Some("containerd"))
            .pod(UID, "burstable"),
            // podman.
            case(format!("/machine.slice/libpod-{ID}.scope/container"))
                .unit(leak(format!("libpod-{ID}.scope")))
                .container(ID, Some("podman")),
            // dockerd --cgroup-parent with the cgroupfs driver (seen with the
            // test harness's dockerd): <parent>/<id>. The path does not name the
            // runtime; readers::runtime::lookup finds it from the records.
            case(format!("/process_api/e77ad09d6c3ca22fa66742edafa7e999/oomwatch-test-docker-2207-1/{ID}"))
                .container(ID, None),
            case(format!("/actions_job/{ID}")).container(ID, None),
            // ctr run --cgroup <parent>/<id>: likewise.
            case(format!("/ci/containerd-tasks/{ID}")).container(ID, None),
            // podman --cgroup-manager cgroupfs --cgroup-parent: libpod-<id>,
            // and its conmon beside it.
            case(format!("/process_api/e77ad09d6c3ca22fa66742edafa7e999/oomwatch-test-podman-1-2/libpod-{ID}"))
                .container(ID, Some("podman")),
            case("/process_api/e77ad09d6c3ca22fa66742edafa7e999/oomwatch-test-podman-1-2/conmon".into()),
            // Nothing to say.
            case("/".into()),
            case("".into()),
            case("/process_api/2bd2b87f14231c923e86a7a6494a7aae".into()),
            // Near misses: 63 hex, upper case, "pod" outside kubepods, ".scope" alone.
            case(format!("/docker/{}", &ID[1..])),
            case(format!("/docker/{}", ID.to_uppercase())),
            case(format!("/podcasts/pod{UID}")),
            case("/x/.scope".into()),
        ];
        assert!(cases.len() >= 12);
        for c in cases {
            let got = labels_for(&c.path);
            let want = CgroupLabels {
                unit: c.unit.map(str::to_owned),
                container_id: c.container_id.map(str::to_owned),
                runtime: c.runtime,
                pod_uid: c.pod_uid.map(str::to_owned),
                qos: c.qos,
            };
            assert_eq!(got, want, "path {:?}", c.path);
        }
    }

    #[test]
    fn garbage_paths_never_panic() {
        for p in [
            "////",
            ":::",
            "a:b:c:d",
            "kubepods.slice/kubepods-.slice",
            "kubepods-burstable-pod.slice",
            "/kubepods/pod",
            "\u{0}\u{10ffff}é/ü.scope",
            "-.scope",
            "/kubepods/burstable/pod____________________________________/x",
        ] {
            let _ = labels_for(p);
        }
    }
}
