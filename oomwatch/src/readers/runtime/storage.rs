//! containers/storage's list of containers (`<graphroot>/<driver>-containers/containers.json`,
//! and `volatile-containers.json` under the run root for transient
//! containers): a JSON array of `{"id", "names", "image", "metadata", ...}`
//! where `metadata` is itself JSON in a string, written by the runtime that
//! made the container. podman keeps its container names only here (and in
//! its database); CRI-O also records the pod here.
//!
//! podman (`libpod/storage.go`): `{"image-name", "image-id", "name", ...}`.
//! CRI-O (`internal/storage/runtime.go`): also `"pod-name"`, `"namespace"`,
//! `"uid"`, `"metadata-name"` (the container's name in the pod).

use std::fmt;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, SeqAccess, Visitor};

use super::json::{KeySet, LenientObject, LenientStr, PickedKeys};
use super::{ContainerMeta, ParseError, clean, kubelet::clean_uid};

/// Most names kept per container (podman and CRI-O give one).
const MAX_NAMES: usize = 8;

struct MetadataKeys;
impl KeySet for MetadataKeys {
    const KEYS: &'static [&'static str] = &[
        "name",
        "image-name",
        "pod-name",
        "namespace",
        "uid",
        "metadata-name",
    ];
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawEntry {
    id: LenientStr,
    names: NameList,
    image: LenientStr,
    metadata: LenientStr,
}

/// Strings of an array; anything else reads as no names.
#[derive(Default)]
struct NameList(Vec<String>);

impl<'de> Deserialize<'de> for NameList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NameList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of names")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NameList, A::Error> {
                let mut names = Vec::new();
                while let Some(LenientStr(name)) = seq.next_element()? {
                    if names.len() < MAX_NAMES
                        && let Some(name) = clean(name)
                    {
                        names.push(name);
                    }
                }
                Ok(NameList(names))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<NameList, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(NameList::default())
            }
            fn visit_bool<E>(self, _: bool) -> Result<NameList, E> {
                Ok(NameList::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<NameList, E> {
                Ok(NameList::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<NameList, E> {
                Ok(NameList::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<NameList, E> {
                Ok(NameList::default())
            }
            fn visit_str<E>(self, _: &str) -> Result<NameList, E> {
                Ok(NameList::default())
            }
            fn visit_unit<E>(self) -> Result<NameList, E> {
                Ok(NameList::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// One container of containers/storage's list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageEntry {
    /// The container's names (podman's `--name`; CRI-O's `k8s_...` name).
    pub names: Vec<String>,
    /// The image id.
    pub image_id: Option<String>,
    pub image: Option<String>,
    pub pod: Option<String>,
    pub namespace: Option<String>,
    pub pod_uid: Option<String>,
    /// The container's name in the pod.
    pub container: Option<String>,
}

impl StorageEntry {
    /// As a [`ContainerMeta`] of container `id`; the runtime is left to the
    /// OCI spec, which names its manager.
    pub fn meta(self, id: &str) -> ContainerMeta {
        ContainerMeta {
            id: id.to_owned(),
            name: self.names.into_iter().next(),
            image: self.image,
            image_id: self.image_id,
            pod: self.pod,
            namespace: self.namespace,
            container: self.container,
            pod_uid: self.pod_uid,
            ..Default::default()
        }
    }
}

/// Finds container `id` in a `containers.json`. `Ok(None)` when the list
/// does not hold it; an error when the bytes are not a JSON array. Entries
/// that are not objects, and metadata that is not JSON, are skipped.
pub fn find_storage_entry(id: &str, bytes: &[u8]) -> Result<Option<StorageEntry>, ParseError> {
    struct Find<'a>(&'a str);
    impl<'de> DeserializeSeed<'de> for Find<'_> {
        type Value = Option<RawEntry>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_seq(self)
        }
    }
    impl<'de> Visitor<'de> for Find<'_> {
        type Value = Option<RawEntry>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an array of containers")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(LenientObject(entry)) = seq.next_element::<LenientObject<RawEntry>>()? {
                if found.is_none()
                    && let Some(entry) = entry.filter(|e| e.id.0.as_deref() == Some(self.0))
                {
                    found = Some(entry);
                }
            }
            Ok(found)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let raw = Find(id).deserialize(&mut de)?;
    de.end()?;
    let Some(raw) = raw else {
        return Ok(None);
    };
    let metadata = raw
        .metadata
        .0
        .and_then(|m| serde_json::from_str::<PickedKeys<MetadataKeys>>(&m).ok())
        .unwrap_or_default();
    let get = |key| clean(metadata.get(key).map(str::to_owned));
    let mut names = raw.names.0;
    if names.is_empty()
        && let Some(name) = get("name")
    {
        names.push(name);
    }
    Ok(Some(StorageEntry {
        names,
        image_id: clean(raw.image.0),
        image: get("image-name"),
        pod: get("pod-name"),
        namespace: get("namespace"),
        pod_uid: clean_uid(metadata.get("uid")),
        container: get("metadata-name"),
    }))
}
