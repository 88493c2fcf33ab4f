//! An in-process test double of the Kubernetes API server (issue #4).
//!
//! No API server can run on the development machines, so weir's control plane
//! (operator, node agents) is tested against this double. It speaks the real
//! API's HTTP surface closely enough that unmodified `kube::Api<K>`,
//! `kube::runtime::{watcher, Controller, events::Recorder}`, `kube::Discovery`
//! and kube-lease-manager work against it (each is exercised in
//! `tests/double.rs`).
//!
//! ```no_run
//! # async fn demo() {
//! use weir_apiserver_double::{ApiServer, ResourceKind};
//! let server = ApiServer::start(); // inside a tokio runtime; stops on drop
//! server.register(ResourceKind::new(
//!     "lb.weir.dev", "v1alpha1", "virtualservices", "VirtualService", true, true,
//! ));
//! let client: kube::Client = server.client();
//! let vs = server.get("lb.weir.dev/v1alpha1", "virtualservices", Some("default"), "web");
//! # }
//! ```
//!
//! # Test helpers
//!
//! [`ApiServer::register`] / [`ApiServer::register_crd`] (CRDs, e.g. from
//! `VirtualService::crd()`; [`builtin_kinds`] are pre-registered),
//! [`ApiServer::get`] / [`ApiServer::list`] / [`ApiServer::put`] /
//! [`ApiServer::delete`] (raw objects, emitting the same watch events as API
//! writes), [`ApiServer::requests`] (request log, e.g. to assert that a
//! controller does not write in a loop), [`ApiServer::inject_fault`] (fail the
//! next matching requests; [`ApiServer::clear_faults`], [`ApiServer::pending_faults`]), [`ApiServer::compact`] (410 for every watch → watchers
//! relist), [`ApiServer::disconnect_watches`] (clean close → watchers resume),
//! [`ApiServer::set_history_limit`], [`ApiServer::set_bookmark_interval`].
//!
//! Note: [`ApiServer::client`] installs rustls' `ring` provider as the
//! process-default `CryptoProvider` if none is installed (kube's TLS stack
//! needs one even for plain HTTP when two providers are compiled in).
//!
//! # Layout
//!
//! This file holds the public API: [`ApiServer`] (start, clients, test
//! helpers), [`ResourceKind`] and [`builtin_kinds`]; the rest is split by
//! concern:
//!
//! * `routing`: the HTTP entry point, path parsing and the verbs (get, list,
//!   create, replace, patch, delete, deleteCollection).
//! * `store`: objects, `resourceVersion`, watch history and the write rules
//!   (create / update / delete, `generation`, finalizers, `dryRun`).
//! * `watch`: watch streams, bookmarks, replay and 410 `Expired`.
//! * `fields`: server-side apply and `managedFields` ownership.
//! * `selectors`: label and field selectors.
//! * `requests`: the request log and injected faults ([`RequestRecord`],
//!   [`Fault`]).
//! * `discovery`: `APIGroupList` / `APIResourceList` documents.
//! * `defaults`: defaulting of built-in kinds.
//! * `error`: [`ApiError`] and its `Status` body.
//!
//! # Supported surface (faithful)
//!
//! * Paths: `/api/v1/...` and `/apis/{group}/{version}/...`, namespaced
//!   (`namespaces/{ns}/{plural}[/{name}[/status]]`), cluster-scoped
//!   (`{plural}[/{name}[/status]]`) and all-namespaces lists/watches of
//!   namespaced kinds. Unknown paths → 404 `Status`.
//! * Storage: JSON objects keyed by (group, version, plural, namespace, name); a
//!   global, monotonically increasing `resourceVersion`; `uid`,
//!   `creationTimestamp`; `generation` starting at 1, incremented only when
//!   something other than `metadata` and `status` changes (status counts for
//!   kinds without a status subresource, like CRDs), and when
//!   `deletionTimestamp` is set. No-op writes (the result equals the stored
//!   object, `managedFields` aside) keep the `resourceVersion` and emit no event.
//! * list: `labelSelector` (`=`, `==`, `!=`, `in`, `notin`, exists, `!key`),
//!   `fieldSelector` on `metadata.name` / `metadata.namespace` (`=`, `==`, `!=`;
//!   other fields → 400), `limit`/`continue` (every page reports the first
//!   page's `resourceVersion`; a continue token older than the history → 410),
//!   `metadata.resourceVersion` on the list; items sorted by namespace/name.
//! * Metadata-only requests (`Accept: ...;as=PartialObjectMetadata`, i.e.
//!   `Api<PartialObjectMeta<K>>`) for get, list and watch.
//! * watch (`watch=true`): newline-delimited JSON events ADDED / MODIFIED /
//!   DELETED / BOOKMARK / ERROR; from a `resourceVersion` (later events are
//!   replayed from a bounded history, [`DEFAULT_HISTORY_LIMIT`]), or without one
//!   / with `"0"` (synthetic ADDED for current objects first);
//!   `sendInitialEvents=true` (initial ADDED + BOOKMARK annotated
//!   `k8s.io/initial-events-end`); `allowWatchBookmarks`; `timeoutSeconds`;
//!   selectors, including ADDED/DELETED when an object starts or stops matching.
//!   A `resourceVersion` older than the kept history → an ERROR event with a
//!   410 `Expired` Status, so kube-runtime's watcher relists. A watcher that
//!   falls more than 65,536 events behind also gets a 410.
//! * get; create (POST; 409 `AlreadyExists`; `generateName`; namespace in body
//!   must match the path); replace (PUT; stale `resourceVersion` → 409
//!   `Conflict`, missing → 422 `Invalid`).
//! * patch: merge patch, JSON patch, strategic merge patch (as a merge patch),
//!   server-side apply (`application/apply-patch+yaml`, `fieldManager`
//!   required, `force`). A `resourceVersion` in a patch is a precondition.
//! * Server-side apply with field ownership: create if absent; otherwise fields
//!   the manager stops applying are removed (unless someone else owns them),
//!   the applied fields are merged in, and changing a field owned by another
//!   manager (Apply or Update) without `force` is a 409 `Conflict`
//!   ("Apply failed with N conflicts: conflict with \"m\": .spec.x"). Non-apply
//!   writes record `Update` ownership of what they changed (manager =
//!   `fieldManager`, else the user agent's product name). `managedFields`
//!   uses the real `FieldsV1` shape.
//! * `/status` subresource for kinds registered with `status_subresource`:
//!   writes to `/status` change only `.status`; writes to the main resource keep
//!   the stored `.status`; create drops `.status` (as for CRDs). Apply to the
//!   status of an absent object → 404.
//! * delete: with finalizers, sets `deletionTimestamp` (MODIFIED) and keeps the
//!   object (returned to the client); removing the last finalizer of a deleting
//!   object deletes it (DELETED); adding finalizers to a deleting object → 422.
//!   Without finalizers the object is deleted at once (a `Success` Status is
//!   returned). Delete preconditions (`uid`, `resourceVersion`) → 409.
//!   deleteCollection (DELETE on a collection, with selectors).
//! * Errors are `Status` bodies (`kind: Status`, `apiVersion: v1`,
//!   `status: Failure`, `reason`, `code`, `message`, `details`) so kube-rs maps
//!   them to `kube::Error::Api`.
//! * Defaulting for `apps/v1` DaemonSet / Deployment and `v1` Pod (the pod
//!   template fields the real server fills in: `restartPolicy`, `dnsPolicy`,
//!   `imagePullPolicy`, `updateStrategy`, ...), so drift detection that passes
//!   here is not fooled by defaults on a real cluster.
//! * `dryRun=All` (query, or `dryRun: ["All"]` in DeleteOptions): the result is
//!   computed and returned, nothing is stored and no event is emitted.
//! * Discovery: `/version` (v1.33), `/api`, `/apis`, `/api/v1`, `/apis/{g}/{v}`.
//!
//! # Known simplifications
//!
//! * Server-side apply treats lists as atomic (no `listType=map` merge keys, so
//!   two managers cannot own different items of one list, e.g. conditions) and
//!   does not exempt defaulted fields from ownership. Strategic merge patch has
//!   no patch directives or merge keys. TODO(#4).
//! * Pages of a paginated list are read from current state (no MVCC snapshot);
//!   `resourceVersion`/`resourceVersionMatch` on lists are ignored (lists are
//!   always current). A watch from a future `resourceVersion` does not wait.
//! * `events.k8s.io/v1` and core `v1` events are stored separately (the real
//!   server shares them).
//! * No admission or schema validation (CEL rules are not evaluated), no
//!   pruning of unknown fields, no namespace existence checks, no controllers
//!   (no DaemonSet pods or status, no owner-reference garbage collection), no
//!   grace periods, no authn/authz, one version per kind (no
//!   conversion), no protobuf, no websocket/exec. TODO(#4).

mod defaults;
mod discovery;
mod error;
mod fields;
mod requests;
mod routing;
mod selectors;
mod store;
mod watch;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use serde_json::{json, Value};
use tokio::sync::broadcast;

pub use error::ApiError;
pub use requests::{Fault, RequestRecord};
use store::{broadcast_last, KindKey, Part, Record, Shared, Store};

/// How many requests [`ApiServer::requests`] keeps.
pub const REQUEST_LOG_LIMIT: usize = 100_000;

/// Default number of watch events kept for resuming watches.
pub const DEFAULT_HISTORY_LIMIT: usize = 50_000;

/// A kind the double serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceKind {
    /// API group; `""` for the core group.
    pub group: String,
    /// Version, e.g. `v1`.
    pub version: String,
    /// Plural resource name used in URLs, e.g. `configmaps`.
    pub plural: String,
    /// Kind, e.g. `ConfigMap`.
    pub kind: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Whether the kind has a `/status` subresource.
    pub status_subresource: bool,
}

impl ResourceKind {
    /// Convenience constructor.
    pub fn new(
        group: &str,
        version: &str,
        plural: &str,
        kind: &str,
        namespaced: bool,
        status_subresource: bool,
    ) -> Self {
        Self {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            kind: kind.into(),
            namespaced,
            status_subresource,
        }
    }

    /// The kinds a CustomResourceDefinition defines: one per served version
    /// (each version is stored separately: no conversion).
    pub fn from_crd(
        crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    ) -> Vec<Self> {
        let spec = &crd.spec;
        spec.versions
            .iter()
            .filter(|v| v.served)
            .map(|v| Self {
                group: spec.group.clone(),
                version: v.name.clone(),
                plural: spec.names.plural.clone(),
                kind: spec.names.kind.clone(),
                namespaced: spec.scope == "Namespaced",
                status_subresource: v.subresources.as_ref().is_some_and(|s| s.status.is_some()),
            })
            .collect()
    }

    /// `apiVersion` of objects of this kind.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub(crate) fn key(&self) -> KindKey {
        (self.group.clone(), self.version.clone(), self.plural.clone())
    }
}

/// The kinds registered on start.
pub fn builtin_kinds() -> Vec<ResourceKind> {
    vec![
        ResourceKind::new("", "v1", "namespaces", "Namespace", false, true),
        ResourceKind::new("", "v1", "nodes", "Node", false, true),
        ResourceKind::new("", "v1", "configmaps", "ConfigMap", true, false),
        ResourceKind::new("", "v1", "secrets", "Secret", true, false),
        ResourceKind::new("", "v1", "pods", "Pod", true, true),
        ResourceKind::new("", "v1", "services", "Service", true, true),
        ResourceKind::new("", "v1", "serviceaccounts", "ServiceAccount", true, false),
        ResourceKind::new("", "v1", "events", "Event", true, false),
        ResourceKind::new("apps", "v1", "daemonsets", "DaemonSet", true, true),
        ResourceKind::new("apps", "v1", "deployments", "Deployment", true, true),
        ResourceKind::new("coordination.k8s.io", "v1", "leases", "Lease", true, false),
        ResourceKind::new("events.k8s.io", "v1", "events", "Event", true, false),
        ResourceKind::new(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            true,
        ),
    ]
}

/// A running API server double. Stops when dropped.
pub struct ApiServer {
    shared: Arc<Shared>,
    url: String,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.task.abort();
    }
}

/// An API error, rendered as a `Status` body.
impl ApiServer {
    /// Starts the server on 127.0.0.1 on an ephemeral port. Must be called
    /// within a tokio runtime.
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let (events, _) = broadcast::channel(1 << 16);
        let mut kinds = HashMap::new();
        for k in builtin_kinds() {
            kinds.insert(k.key(), k);
        }
        let shared = Arc::new(Shared {
            store: Mutex::new(Store {
                rv: 1,
                uid: 0,
                kinds,
                objects: HashMap::new(),
                history: VecDeque::new(),
                history_limit: DEFAULT_HISTORY_LIMIT,
                compacted: 0,
                dry_run: false,
            }),
            events,
            shutdown: shutdown.clone(),
            bookmark_interval: Mutex::new(Duration::from_secs(5)),
            requests: Mutex::new(VecDeque::new()),
            faults: Mutex::new(Vec::new()),
        });
        let app_shared = shared.clone();
        let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let shared = app_shared.clone();
            async move { routing::handle(shared, method, uri, headers, body).await }
        });
        let mut sd = shutdown;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = sd.wait_for(|v| *v).await;
                })
                .await;
        });
        Self { shared, url: format!("http://{addr}"), stop, task }
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A `kube::Client` talking to this server (no auth, default namespace `default`).
    ///
    /// kube's TLS stack needs a process-level rustls `CryptoProvider` even for
    /// plain HTTP when both `ring` and `aws-lc-rs` are in the feature graph, so
    /// this installs rustls' `ring` provider as the process default if none is
    /// installed yet.
    pub fn client(&self) -> kube::Client {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let config = kube::Config::new(self.url.parse().expect("server url"));
        kube::Client::try_from(config).expect("kube client")
    }

    /// A client whose requests carry `Impersonate-User: user` (recorded in
    /// [`RequestRecord::user`]; the double authorizes everything).
    pub fn client_as(&self, user: &str) -> kube::Client {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let mut config = kube::Config::new(self.url.parse().expect("server url"));
        config.auth_info.impersonate = Some(user.to_owned());
        kube::Client::try_from(config).expect("kube client")
    }

    /// Registers a kind (e.g. a CRD). Re-registering replaces the definition.
    pub fn register(&self, kind: ResourceKind) {
        self.shared.lock().kinds.insert(kind.key(), kind);
    }

    /// Registers the kinds of a CustomResourceDefinition (e.g. from
    /// `kube::CustomResourceExt::crd()`) and stores the CRD object itself under
    /// `apiextensions.k8s.io/v1`, as installing it on a cluster would.
    pub fn register_crd(
        &self,
        crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    ) {
        for k in ResourceKind::from_crd(crd) {
            self.register(k);
        }
        if let Ok(mut obj) = serde_json::to_value(crd) {
            obj["apiVersion"] = json!("apiextensions.k8s.io/v1");
            obj["kind"] = json!("CustomResourceDefinition");
            let _ = self.put(obj);
        }
    }

    /// The current (latest) global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// Sets how many watch events are kept for resuming watches.
    pub fn set_history_limit(&self, limit: usize) {
        let mut st = self.shared.lock();
        st.history_limit = limit;
        st.trim();
    }

    /// Drops the whole watch history and ends every open watch with an ERROR
    /// event carrying a 410 `Expired` Status; watches resumed from an older
    /// resourceVersion get the same. Simulates an API server restart after etcd
    /// compaction: kube-runtime watchers relist.
    pub fn compact(&self) {
        let mut st = self.shared.lock();
        st.history.clear();
        st.compacted = st.rv;
        // Tell open watches: a record with an empty kind means "expired".
        let _ = self.shared.events.send(Arc::new(Record {
            rv: st.rv,
            kind: (String::new(), String::new(), String::new()),
            etype: "EXPIRED",
            object: Value::Null,
            old: None,
        }));
    }

    /// The requests received so far (the last [`REQUEST_LOG_LIMIT`]), in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.requests.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared.requests.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// How many requests the injected faults will still fail (summed over faults).
    pub fn pending_faults(&self) -> usize {
        self.shared.faults.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|f| f.times).sum()
    }

    /// Removes every injected fault (ends an outage made with `times: usize::MAX`).
    pub fn clear_faults(&self) {
        self.shared.faults.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Makes matching requests fail (e.g. to exercise retries and backoff).
    pub fn inject_fault(&self, fault: Fault) {
        self.shared.faults.lock().unwrap_or_else(|e| e.into_inner()).push(fault);
    }

    /// Deletes an object directly, as a DELETE request would (honouring
    /// finalizers). Returns false when it did not exist.
    pub fn delete(&self, api_version: &str, plural: &str, namespace: Option<&str>, name: &str) -> bool {
        let (g, v) = split_api_version(api_version);
        let mut st = self.shared.lock();
        let Some(kind) = st.kinds.get(&(g, v, plural.to_string())).cloned() else {
            return false;
        };
        let rv_before = st.rv;
        let found = st.delete(&kind, namespace, name).is_ok();
        if st.rv != rv_before {
            broadcast_last(&self.shared, &st);
        }
        found
    }

    /// Ends every open watch stream (cleanly, without an error), as when the
    /// API server restarts or a load balancer drops connections: clients
    /// re-watch from the last resourceVersion they saw.
    pub fn disconnect_watches(&self) {
        let st = self.shared.lock();
        let _ = self.shared.events.send(Arc::new(Record {
            rv: st.rv,
            kind: (String::new(), String::new(), String::new()),
            etype: "DISCONNECT",
            object: Value::Null,
            old: None,
        }));
    }

    /// Sets the interval of BOOKMARK events on watches that allow them.
    pub fn set_bookmark_interval(&self, d: Duration) {
        *self.shared.bookmark_interval.lock().unwrap_or_else(|e| e.into_inner()) = d;
    }

    /// Reads a stored object directly, e.g. `get("lb.weir.dev/v1alpha1", "virtualservices", Some("ns"), "name")`.
    pub fn get(&self, api_version: &str, plural: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let (g, v) = split_api_version(api_version);
        let st = self.shared.lock();
        st.objects
            .get(&(g, v, plural.to_string()))?
            .get(&(namespace.unwrap_or("").to_string(), name.to_string()))
            .cloned()
    }

    /// Lists stored objects of a kind directly (all namespaces when `namespace` is `None`).
    pub fn list(&self, api_version: &str, plural: &str, namespace: Option<&str>) -> Vec<Value> {
        let (g, v) = split_api_version(api_version);
        let st = self.shared.lock();
        st.objects
            .get(&(g, v, plural.to_string()))
            .map(|m| {
                m.iter().filter(|((ns, _), _)| namespace.is_none_or(|n| n == ns)).map(|(_, o)| o.clone()).collect()
            })
            .unwrap_or_default()
    }

    /// Writes an object directly (create or overwrite, ignoring
    /// resourceVersion, keeping `status` as given), emitting the watch event a
    /// real write would. The kind is found from `apiVersion`/`kind` of `obj`.
    pub fn put(&self, obj: Value) -> Result<Value, ApiError> {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind_name = obj["kind"].as_str().unwrap_or_default().to_string();
        let (g, v) = split_api_version(&api_version);
        let mut st = self.shared.lock();
        let kind = st
            .kinds
            .values()
            .find(|k| k.group == g && k.version == v && k.kind == kind_name)
            .cloned()
            .ok_or_else(|| ApiError::bad_request(format!("unknown kind {api_version} {kind_name}")))?;
        let ns = if kind.namespaced {
            Some(obj["metadata"]["namespace"].as_str().unwrap_or("default").to_string())
        } else {
            None
        };
        let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let existing = st.get_obj(&kind, ns.as_deref(), &name);
        match existing {
            None => st.create(&kind, ns.as_deref(), obj, true, None),
            Some(old) => {
                let mut obj = obj;
                obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
                st.update(&kind, old, obj, Part::Everything, None)
            }
        }
        .inspect(|_| broadcast_last(&self.shared, &st))
    }
}

fn split_api_version(av: &str) -> (String, String) {
    match av.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), av.to_string()),
    }
}
