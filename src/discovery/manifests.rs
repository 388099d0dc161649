//! The manifests provider: a directory of ordinary Kubernetes YAML, served as if it
//! were a cluster. Polled (cheap `stat`s; files are re-read only when they change),
//! which also works on ConfigMap volumes, whose atomic symlink swaps defeat inotify.
//!
//! Each file is parsed on its own. A file that is not valid YAML keeps its last good
//! objects; a document that is not a valid object is skipped with a warning naming
//! the file, the document and the field. Files and directories starting with `.` are
//! ignored (editor swap files, the `..data` links of ConfigMap volumes).

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::gateway;
use super::{DiscoveryError, ObjectRef, PodSlice, Publisher, Snapshot, Warning};

/// Largest manifests file read (a `kubectl get -o yaml` of 10,000 Ingresses is
/// about 20 MiB); a larger one is skipped with a warning.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

#[derive(Debug)]
pub struct ManifestsDir {
    root: PathBuf,
    files: BTreeMap<PathBuf, FileEntry>,
}

#[derive(Debug)]
struct FileEntry {
    stamp: Stamp,
    objects: Vec<(ObjectRef, Object)>,
    warnings: Vec<Warning>,
}

/// Changes when the file does: rewritten in place, replaced by rename, resized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    len: u64,
    inode: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            len: meta.len(),
            inode: meta.ino(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// The stamp of the file behind `path` (symlinks followed), if it exists.
    pub fn of_path(path: &Path) -> Option<Stamp> {
        std::fs::metadata(path).ok().map(|m| Stamp::of(&m))
    }
}

#[derive(Debug, Clone)]
enum Object {
    Ingress(Arc<Ingress>),
    IngressClass(Arc<IngressClass>),
    Service(Arc<Service>),
    EndpointSlice(Arc<PodSlice>),
    Secret(Arc<Secret>),
    /// Headers for `custom-headers`, `add-headers`, `proxy-set-headers`.
    ConfigMap(Arc<ConfigMap>),
    GatewayClass(Arc<gateway::GatewayClass>),
    Gateway(Arc<gateway::Gateway>),
    HttpRoute(Arc<gateway::HttpRoute>),
    ReferenceGrant(Arc<gateway::ReferenceGrant>),
    GrpcRoute(Arc<gateway::GrpcRoute>),
    Namespace(Arc<Namespace>),
}

impl ManifestsDir {
    pub fn new(root: impl Into<PathBuf>) -> ManifestsDir {
        ManifestsDir {
            root: root.into(),
            files: BTreeMap::new(),
        }
    }

    /// Looks for changed, new and deleted files; returns whether anything changed.
    pub fn scan(&mut self) -> Result<bool, DiscoveryError> {
        let mut found = BTreeMap::new();
        find_files(&self.root, &mut found).map_err(|source| DiscoveryError::ReadDir {
            path: self.root.display().to_string(),
            source,
        })?;
        let before = self.files.len();
        self.files.retain(|path, _| found.contains_key(path));
        let mut changed = self.files.len() != before;
        for (path, stamp) in found {
            if self
                .files
                .get(&path)
                .is_some_and(|entry| entry.stamp == stamp)
            {
                continue;
            }
            changed = true;
            let previous = self.files.remove(&path);
            let entry = load_file(&path, stamp, previous);
            self.files.insert(path, entry);
        }
        Ok(changed)
    }

    /// All objects of all files, and what was skipped while reading them.
    pub fn snapshot(&self) -> (Snapshot, Vec<Warning>) {
        let mut snapshot = Snapshot::default();
        let mut warnings = Vec::new();
        let mut seen: HashMap<ObjectRef, Arc<str>> = HashMap::new();
        for (path, entry) in &self.files {
            warnings.extend(entry.warnings.iter().cloned());
            let file: Arc<str> = path.display().to_string().into();
            for (object_ref, object) in &entry.objects {
                if let Some(first) = seen.get(object_ref) {
                    warnings.push(Warning {
                        file: Some(file.clone()),
                        object: Some(object_ref.clone()),
                        field: None,
                        reason: "duplicate",
                        message: format!("also defined in {first}; this copy is ignored"),
                    });
                    continue;
                }
                seen.insert(object_ref.clone(), file.clone());
                match object {
                    Object::Ingress(o) => snapshot.ingresses.push(o.clone()),
                    Object::IngressClass(o) => snapshot.ingress_classes.push(o.clone()),
                    Object::Service(o) => snapshot.services.push(o.clone()),
                    Object::EndpointSlice(o) => snapshot.endpoint_slices.push(o.clone()),
                    Object::Secret(o) => snapshot.secrets.push(o.clone()),
                    Object::ConfigMap(o) => snapshot.config_maps.push(o.clone()),
                    Object::GatewayClass(o) => snapshot.gateway_classes.push(o.clone()),
                    Object::Gateway(o) => snapshot.gateways.push(o.clone()),
                    Object::HttpRoute(o) => snapshot.http_routes.push(o.clone()),
                    Object::ReferenceGrant(o) => snapshot.reference_grants.push(o.clone()),
                    Object::GrpcRoute(o) => snapshot.grpc_routes.push(o.clone()),
                    Object::Namespace(o) => snapshot.namespaces.push(o.clone()),
                }
            }
        }
        snapshot.sources = seen;
        (snapshot, warnings)
    }
}

/// Parses manifests text as if it were one file of a directory (tests, benches).
pub fn snapshot_from_str(text: &str) -> (Snapshot, Vec<Warning>) {
    let file: Arc<str> = "<inline>".into();
    let mut dir = ManifestsDir::new("<inline>");
    let stamp = Stamp {
        len: 0,
        inode: 0,
        mtime: (0, 0),
        ctime: (0, 0),
    };
    let (objects, warnings) = match parse_documents(text, &file) {
        Ok(parsed) => parsed,
        Err(message) => (
            Vec::new(),
            vec![Warning {
                file: Some(file),
                object: None,
                field: None,
                reason: "invalid-file",
                message,
            }],
        ),
    };
    dir.files.insert(
        PathBuf::from("<inline>"),
        FileEntry {
            stamp,
            objects,
            warnings,
        },
    );
    dir.snapshot()
}

/// Serves `dir` until `stop`: publishes a table now, and again whenever it changes.
/// Scanning and translating run in the background (`in_background`): a directory
/// of 10,000 Ingresses must not stall the data plane's threads.
pub async fn watch(
    mut dir: ManifestsDir,
    interval: Duration,
    publisher: Arc<Publisher>,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.cancelled() => return,
        }
        let publisher = publisher.clone();
        let scanned = super::in_background(move || {
            // The directory comes back whatever happens, so the next change is
            // still read: one scan that fails must not stop updates for good.
            let scan = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                match dir.scan() {
                    Ok(true) => {
                        let (snapshot, warnings) = dir.snapshot();
                        publisher.publish(&snapshot, &warnings);
                    }
                    Ok(false) => {}
                    Err(error) => {
                        tracing::warn!(error = %error, "manifests directory unreadable; the last table keeps serving");
                    }
                }
            }));
            if scan.is_err() {
                tracing::error!("reading the manifests directory failed; the last table keeps serving (please report this)");
            }
            dir
        })
        .await;
        match scanned {
            Ok(back) => dir = back,
            Err(error) => {
                tracing::error!(%error, "manifests scan task failed; no more updates");
                return;
            }
        }
    }
}

fn find_files(dir: &Path, found: &mut BTreeMap<PathBuf, Stamp>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        // Follow symlinks: ConfigMap volumes link every file into `..data/`.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            find_files(&path, found)?;
        } else if is_manifest(&path) {
            found.insert(path, Stamp::of(&meta));
        }
    }
    Ok(())
}

fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

fn load_file(path: &Path, stamp: Stamp, previous: Option<FileEntry>) -> FileEntry {
    let file: Arc<str> = path.display().to_string().into();
    let file_warning = |message: String| Warning {
        file: Some(file.clone()),
        object: None,
        field: None,
        reason: "invalid-file",
        message,
    };
    let parsed = if stamp.len > MAX_FILE_BYTES {
        Err(format!("larger than {MAX_FILE_BYTES} bytes"))
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read: {e}"))
            .and_then(|text| parse_documents(&text, &file))
    };
    match parsed {
        Ok((objects, warnings)) => FileEntry {
            stamp,
            objects,
            warnings,
        },
        Err(message) => {
            let kept = previous.map(|p| p.objects).unwrap_or_default();
            let message = if kept.is_empty() {
                format!("{message}; file skipped")
            } else {
                format!("{message}; keeping its last good version")
            };
            FileEntry {
                stamp,
                objects: kept,
                warnings: vec![file_warning(message)],
            }
        }
    }
}

type Parsed = (Vec<(ObjectRef, Object)>, Vec<Warning>);

/// Err only when the file is not YAML at all.
fn parse_documents(text: &str, file: &Arc<str>) -> Result<Parsed, String> {
    let mut objects = Vec::new();
    let mut warnings = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = serde_yaml::Value::deserialize(document)
            .map_err(|e| format!("invalid YAML in document {}: {e}", index + 1))?;
        let items = match value {
            serde_yaml::Value::Null => continue,
            // `kubectl get -o yaml` output: a List of objects.
            serde_yaml::Value::Mapping(ref m)
                if m.get("kind").and_then(|k| k.as_str()) == Some("List") =>
            {
                match m.get("items") {
                    Some(serde_yaml::Value::Sequence(items)) => items.clone(),
                    _ => Vec::new(),
                }
            }
            other => vec![other],
        };
        for item in items {
            match parse_object(item) {
                Ok(Some(parsed)) => objects.push(parsed),
                Ok(None) => {}
                Err((object, field, message)) => warnings.push(Warning {
                    file: Some(file.clone()),
                    object,
                    field,
                    reason: "invalid-object",
                    message: format!("document {}: {message}; skipped", index + 1),
                }),
            }
        }
    }
    Ok((objects, warnings))
}

type ObjectError = (Option<ObjectRef>, Option<String>, String);

/// `Ok(None)` for kinds sluice does not use (Deployments next to the Services).
fn parse_object(value: serde_yaml::Value) -> Result<Option<(ObjectRef, Object)>, ObjectError> {
    let kind = value
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or_default()
        .to_owned();
    let api_version = value
        .get("apiVersion")
        .and_then(|k| k.as_str())
        .unwrap_or_default()
        .to_owned();
    let expected = match kind.as_str() {
        "Ingress" | "IngressClass" => "networking.k8s.io/v1",
        "Service" | "Secret" | "ConfigMap" | "Namespace" => "v1",
        "EndpointSlice" => "discovery.k8s.io/v1",
        "GatewayClass" | "Gateway" | "HTTPRoute" | "GRPCRoute" => gateway::API_VERSION,
        // Still served as v1beta1 too, the version most manifests name.
        "ReferenceGrant" if api_version == gateway::API_VERSION_BETA => gateway::API_VERSION_BETA,
        "ReferenceGrant" => gateway::API_VERSION,
        _ => return Ok(None),
    };
    if api_version != expected {
        return Err((
            None,
            Some("apiVersion".into()),
            format!("{kind} {api_version:?} is not supported, use {expected}"),
        ));
    }
    let object = match kind.as_str() {
        "Ingress" => Object::Ingress(Arc::new(decode(value)?)),
        "IngressClass" => Object::IngressClass(Arc::new(decode(value)?)),
        "Service" => Object::Service(Arc::new(decode(value)?)),
        "Secret" => Object::Secret(Arc::new(decode(value)?)),
        "ConfigMap" => Object::ConfigMap(Arc::new(decode(value)?)),
        "GatewayClass" => Object::GatewayClass(Arc::new(decode(value)?)),
        "Gateway" => Object::Gateway(Arc::new(decode(value)?)),
        "HTTPRoute" => Object::HttpRoute(Arc::new(decode(value)?)),
        "ReferenceGrant" => Object::ReferenceGrant(Arc::new(decode(value)?)),
        "GRPCRoute" => Object::GrpcRoute(Arc::new(decode(value)?)),
        "Namespace" => Object::Namespace(Arc::new(decode(value)?)),
        _ => Object::EndpointSlice(Arc::new(PodSlice::from(decode::<EndpointSlice>(value)?))),
    };
    let meta = match &object {
        Object::Ingress(o) => &o.metadata,
        Object::IngressClass(o) => &o.metadata,
        Object::Service(o) => &o.metadata,
        Object::EndpointSlice(o) => &o.metadata,
        Object::Secret(o) => &o.metadata,
        Object::ConfigMap(o) => &o.metadata,
        Object::GatewayClass(o) => &o.metadata,
        Object::Gateway(o) => &o.metadata,
        Object::HttpRoute(o) => &o.metadata,
        Object::ReferenceGrant(o) => &o.metadata,
        Object::GrpcRoute(o) => &o.metadata,
        Object::Namespace(o) => &o.metadata,
    };
    let object_ref = object_ref(kind_name(&object), meta).ok_or((
        None,
        Some("metadata.name".into()),
        format!("{kind} without a name"),
    ))?;
    Ok(Some((object_ref, with_default_namespace(object))))
}

fn decode<T: DeserializeOwned>(value: serde_yaml::Value) -> Result<T, ObjectError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        (None, Some(field), e.into_inner().to_string())
    })
}

fn kind_name(object: &Object) -> &'static str {
    match object {
        Object::Ingress(_) => "Ingress",
        Object::IngressClass(_) => "IngressClass",
        Object::Service(_) => "Service",
        Object::EndpointSlice(_) => "EndpointSlice",
        Object::Secret(_) => "Secret",
        Object::ConfigMap(_) => "ConfigMap",
        Object::GatewayClass(_) => "GatewayClass",
        Object::Gateway(_) => "Gateway",
        Object::HttpRoute(_) => "HTTPRoute",
        Object::ReferenceGrant(_) => "ReferenceGrant",
        Object::GrpcRoute(_) => "GRPCRoute",
        Object::Namespace(_) => "Namespace",
    }
}

fn object_ref(kind: &'static str, meta: &ObjectMeta) -> Option<ObjectRef> {
    let name = meta.name.clone().filter(|n| !n.is_empty())?;
    // IngressClass is cluster-scoped; everything else lands in `default` like
    // `kubectl apply` without `-n`.
    let namespace = if matches!(kind, "IngressClass" | "GatewayClass" | "Namespace") {
        String::new()
    } else {
        meta.namespace.clone().unwrap_or_else(|| "default".into())
    };
    Some(ObjectRef {
        kind,
        namespace,
        name,
    })
}

fn with_default_namespace(object: Object) -> Object {
    fn fill<T: Clone>(mut o: Arc<T>, meta: impl FnOnce(&mut T) -> &mut ObjectMeta) -> Arc<T> {
        let m = meta(Arc::make_mut(&mut o));
        if m.namespace.is_none() {
            m.namespace = Some("default".into());
        }
        o
    }
    match object {
        Object::Ingress(o) => Object::Ingress(fill(o, |o| &mut o.metadata)),
        Object::Service(o) => Object::Service(fill(o, |o| &mut o.metadata)),
        Object::EndpointSlice(o) => Object::EndpointSlice(fill(o, |o| &mut o.metadata)),
        Object::Secret(o) => Object::Secret(fill(o, |o| &mut o.metadata)),
        Object::ConfigMap(o) => Object::ConfigMap(fill(o, |o| &mut o.metadata)),
        Object::Gateway(o) => Object::Gateway(fill(o, |o| &mut o.metadata)),
        Object::HttpRoute(o) => Object::HttpRoute(fill(o, |o| &mut o.metadata)),
        Object::ReferenceGrant(o) => Object::ReferenceGrant(fill(o, |o| &mut o.metadata)),
        Object::GrpcRoute(o) => Object::GrpcRoute(fill(o, |o| &mut o.metadata)),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_files_with_lists_and_foreign_kinds() {
        let text = r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
---
apiVersion: v1
kind: List
items:
- apiVersion: networking.k8s.io/v1
  kind: Ingress
  metadata: {name: web, namespace: shop}
  spec: {defaultBackend: {service: {name: web, port: {number: 80}}}}
"#;
        let (objects, warnings) = parse_documents(text, &"f.yaml".into()).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let refs: Vec<String> = objects.iter().map(|(r, _)| r.to_string()).collect();
        assert_eq!(refs, ["Service default/web", "Ingress shop/web"]);
    }

    #[test]
    fn bad_documents_are_skipped_with_file_and_field() {
        let text = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: bad}
spec:
  rules:
  - http:
      paths:
      - path: /
        pathType: Prefix
        backend: {service: {name: web, port: {number: eighty}}}
---
apiVersion: extensions/v1beta1
kind: Ingress
metadata: {name: old}
---
apiVersion: v1
kind: Service
metadata: {name: ok}
"#;
        let (objects, warnings) = parse_documents(text, &"dir/f.yaml".into()).unwrap();
        assert_eq!(objects.len(), 1);
        assert_eq!(warnings.len(), 2);
        let first = warnings[0].to_string();
        assert!(first.starts_with("dir/f.yaml: "), "{first}");
        assert!(
            first.contains("spec.rules[0].http.paths[0].backend.service.port.number"),
            "{first}"
        );
        assert!(
            warnings[1].to_string().contains("extensions/v1beta1"),
            "{}",
            warnings[1]
        );
    }

    #[test]
    fn invalid_yaml_is_an_error_for_the_whole_file() {
        assert!(parse_documents("kind: [unclosed", &"f.yaml".into()).is_err());
    }
}
