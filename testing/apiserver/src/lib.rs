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
mod fields;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::broadcast;

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

    fn key(&self) -> KindKey {
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

type KindKey = (String, String, String);
type ObjKey = (String, String); // (namespace or "", name)

#[derive(Clone, Debug)]
struct Record {
    rv: u64,
    kind: KindKey,
    etype: &'static str,
    object: Value,
    old: Option<Value>,
}

struct Store {
    rv: u64,
    uid: u64,
    kinds: HashMap<KindKey, ResourceKind>,
    objects: HashMap<KindKey, BTreeMap<ObjKey, Value>>,
    history: VecDeque<Arc<Record>>,
    history_limit: usize,
    /// Events with a resourceVersion <= this are no longer available.
    compacted: u64,
    /// Set while serving a `dryRun=All` request: nothing is stored.
    dry_run: bool,
}

struct Shared {
    store: Mutex<Store>,
    events: broadcast::Sender<Arc<Record>>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    bookmark_interval: Mutex<Duration>,
    requests: Mutex<VecDeque<RequestRecord>>,
    faults: Mutex<Vec<Fault>>,
}

/// One request the server received (see [`ApiServer::requests`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// HTTP method, e.g. `PATCH`.
    pub method: String,
    /// Path, e.g. `/apis/lb.weir.dev/v1alpha1/namespaces/default/virtualservices/a/status`.
    pub path: String,
    /// Raw query string (may be empty).
    pub query: String,
    /// Content type of the body (may be empty).
    pub content_type: String,
    /// Who sent it: the `Impersonate-User` header, which [`ApiServer::client_as`]
    /// sets (None for [`ApiServer::client`]). Lets a test attribute calls to a
    /// component, e.g. to check its RBAC.
    pub user: Option<String>,
}

impl RequestRecord {
    /// Whether this request changes state (POST, PUT, PATCH, DELETE).
    pub fn is_write(&self) -> bool {
        matches!(self.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
    }
}

/// An injected failure (see [`ApiServer::inject_fault`]): the next `times`
/// requests whose method matches (`None` = any) and whose path contains
/// `path_contains` fail with `code`/`reason` instead of being served.
#[derive(Clone, Debug)]
pub struct Fault {
    /// Method to match, e.g. `"PATCH"`; `None` matches any.
    pub method: Option<String>,
    /// Substring of the request path to match.
    pub path_contains: String,
    /// HTTP status code to answer, e.g. 500.
    pub code: u16,
    /// Status reason, e.g. `InternalError`.
    pub reason: &'static str,
    /// How many matching requests fail.
    pub times: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
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
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP code.
    pub code: u16,
    /// Machine-readable reason, e.g. `NotFound`.
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
    details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self { code, reason, message: message.into(), details: None }
    }
    fn with_details(mut self, kind: &ResourceKind, name: &str) -> Self {
        self.details = Some(json!({"name": name, "group": kind.group, "kind": kind.plural}));
        self
    }
    fn bad_request(m: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", m)
    }
    fn not_found(kind: &ResourceKind, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{} \"{}\" not found", qualified(kind), name)).with_details(kind, name)
    }
    /// The `Status` object for this error.
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), &self.status())
    }
}

fn qualified(kind: &ResourceKind) -> String {
    if kind.group.is_empty() {
        kind.plural.clone()
    } else {
        format!("{}.{}", kind.plural, kind.group)
    }
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    (code, [("content-type", "application/json")], serde_json::to_vec(v).unwrap_or_default()).into_response()
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

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
            async move { handle(shared, method, uri, headers, body).await }
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Main,
    Status,
    Everything,
}

impl Store {
    fn trim(&mut self) {
        while self.history.len() > self.history_limit {
            if let Some(r) = self.history.pop_front() {
                self.compacted = self.compacted.max(r.rv);
            }
        }
    }

    fn get_obj(&self, kind: &ResourceKind, ns: Option<&str>, name: &str) -> Option<Value> {
        self.objects.get(&kind.key())?.get(&(ns.unwrap_or("").to_string(), name.to_string())).cloned()
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Stores `obj` (already with its new resourceVersion) and records the event.
    /// The caller broadcasts `history.back()`.
    fn commit(&mut self, kind: &ResourceKind, etype: &'static str, obj: Value, old: Option<Value>, rv: u64) {
        if self.dry_run {
            return;
        }
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or("").to_string();
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        let map = self.objects.entry(kind.key()).or_default();
        if etype == "DELETED" {
            map.remove(&(ns, name));
        } else {
            map.insert((ns, name), obj.clone());
        }
        self.history.push_back(Arc::new(Record { rv, kind: kind.key(), etype, object: obj, old }));
        self.trim();
    }

    fn create(
        &mut self,
        kind: &ResourceKind,
        ns: Option<&str>,
        mut obj: Value,
        keep_status: bool,
        manager: Option<&str>,
    ) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request("object must be a JSON object"));
        }
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        let mut name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        if name.is_empty() {
            let Some(prefix) = obj["metadata"]["generateName"].as_str() else {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    format!(
                        "{} is invalid: metadata.name: Required value: name or generateName is required",
                        kind.kind
                    ),
                ));
            };
            name = format!("{prefix}{}", random_suffix(self.uid + self.rv));
        }
        if let Some(ns) = ns {
            match obj["metadata"]["namespace"].as_str() {
                Some(b) if !b.is_empty() && b != ns => {
                    return Err(ApiError::bad_request(format!(
                        "the namespace of the provided object ({b}) does not match the namespace sent on the request ({ns})"
                    )))
                }
                _ => obj["metadata"]["namespace"] = json!(ns),
            }
        } else if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        if self.get_obj(kind, ns, &name).is_some() {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{}\" already exists", qualified(kind), name),
            )
            .with_details(kind, &name));
        }
        if kind.status_subresource && !keep_status {
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
        defaults::apply(kind, &mut obj);
        if let Some(m) = manager {
            if let Some(md) = obj["metadata"].as_object_mut() {
                md.remove("managedFields");
            }
            fields::track_update(kind, None, &mut obj, m, false);
        }
        let rv = self.next_rv();
        self.uid += 1;
        obj["apiVersion"] = json!(kind.api_version());
        obj["kind"] = json!(kind.kind);
        let md = &mut obj["metadata"];
        md["name"] = json!(name);
        md["uid"] = json!(format!("00000000-0000-4000-8000-{:012x}", self.uid));
        md["resourceVersion"] = json!(rv.to_string());
        md["creationTimestamp"] = json!(now());
        md["generation"] = json!(1);
        if let Some(m) = md.as_object_mut() {
            m.remove("deletionTimestamp");
            m.remove("deletionGracePeriodSeconds");
        }
        self.commit(kind, "ADDED", obj.clone(), None, rv);
        Ok(obj)
    }

    /// Writes `new` over `old` (the caller checked existence). `new` carries the
    /// client's resourceVersion (checked for conflicts if non-empty).
    fn update(
        &mut self,
        kind: &ResourceKind,
        old: Value,
        mut new: Value,
        part: Part,
        manager: Option<&str>,
    ) -> Result<Value, ApiError> {
        let name = old["metadata"]["name"].as_str().unwrap_or("").to_string();
        if !new.is_object() {
            return Err(ApiError::bad_request("object must be a JSON object"));
        }
        if !new["metadata"].is_object() {
            new["metadata"] = json!({});
        }
        if let Some(n) = new["metadata"]["name"].as_str() {
            if n != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
        }
        match new["metadata"]["resourceVersion"].as_str() {
            Some(rv) if !rv.is_empty() => {
                if old["metadata"]["resourceVersion"].as_str() != Some(rv) {
                    return Err(ApiError::new(
                        409,
                        "Conflict",
                        format!(
                            "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                            qualified(kind),
                            name
                        ),
                    )
                    .with_details(kind, &name));
                }
            }
            _ => {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    format!(
                        "{} \"{}\" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
                        kind.kind, name
                    ),
                ))
            }
        }
        // Build the resulting object according to which part may change.
        let mut result = match part {
            Part::Status => {
                let mut r = old.clone();
                if let Some(mf) = new["metadata"].get("managedFields") {
                    r["metadata"]["managedFields"] = mf.clone();
                }
                match new.get("status") {
                    Some(s) => r["status"] = s.clone(),
                    None => {
                        if let Some(m) = r.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
                r
            }
            Part::Main | Part::Everything => {
                let mut r = new;
                if part == Part::Main && kind.status_subresource {
                    match old.get("status") {
                        Some(s) => r["status"] = s.clone(),
                        None => {
                            if let Some(m) = r.as_object_mut() {
                                m.remove("status");
                            }
                        }
                    }
                }
                // System-maintained metadata.
                for f in [
                    "uid",
                    "creationTimestamp",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                    "namespace",
                    "name",
                    "generation",
                ] {
                    match old["metadata"].get(f) {
                        Some(v) => r["metadata"][f] = v.clone(),
                        None => {
                            if let Some(m) = r["metadata"].as_object_mut() {
                                m.remove(f);
                            }
                        }
                    }
                }
                if r["metadata"].get("managedFields").is_none() {
                    if let Some(mf) = old["metadata"].get("managedFields") {
                        r["metadata"]["managedFields"] = mf.clone();
                    }
                }
                r
            }
        };
        result["apiVersion"] = json!(kind.api_version());
        result["kind"] = json!(kind.kind);
        defaults::apply(kind, &mut result);
        if old["metadata"].get("deletionTimestamp").is_some() {
            let before = old["metadata"]["finalizers"].as_array().cloned().unwrap_or_default();
            if let Some(added) =
                result["metadata"]["finalizers"].as_array().and_then(|a| a.iter().find(|f| !before.contains(f)))
            {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    format!(
                        "{} \"{}\" is invalid: metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers [{}]",
                        kind.kind,
                        name,
                        added.as_str().unwrap_or("")
                    ),
                ));
            }
        }
        if let Some(m) = manager {
            fields::track_update(kind, Some(&old), &mut result, m, part == Part::Status);
        }
        if strip_for_spec(&old, kind) != strip_for_spec(&result, kind) {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(0);
            result["metadata"]["generation"] = json!(g + 1);
        }
        result["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        if without_managed_fields(&result) == without_managed_fields(&old) {
            return Ok(old);
        }
        let deleting = result["metadata"].get("deletionTimestamp").is_some();
        let finalizers_empty = result["metadata"]["finalizers"].as_array().is_none_or(|a| a.is_empty());
        let rv = self.next_rv();
        result["metadata"]["resourceVersion"] = json!(rv.to_string());
        if deleting && finalizers_empty {
            self.commit(kind, "DELETED", result.clone(), Some(old), rv);
        } else {
            self.commit(kind, "MODIFIED", result.clone(), Some(old), rv);
        }
        Ok(result)
    }

    fn delete(&mut self, kind: &ResourceKind, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
        let old = self.get_obj(kind, ns, name).ok_or_else(|| ApiError::not_found(kind, name))?;
        let has_finalizers = old["metadata"]["finalizers"].as_array().is_some_and(|a| !a.is_empty());
        if has_finalizers {
            if old["metadata"].get("deletionTimestamp").is_some() {
                return Ok(old);
            }
            let mut obj = old.clone();
            let rv = self.next_rv();
            obj["metadata"]["deletionTimestamp"] = json!(now());
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            let g = obj["metadata"]["generation"].as_i64().unwrap_or(0);
            obj["metadata"]["generation"] = json!(g + 1);
            obj["metadata"]["resourceVersion"] = json!(rv.to_string());
            self.commit(kind, "MODIFIED", obj.clone(), Some(old), rv);
            Ok(obj)
        } else {
            let mut obj = old.clone();
            let rv = self.next_rv();
            obj["metadata"]["resourceVersion"] = json!(rv.to_string());
            self.commit(kind, "DELETED", obj.clone(), Some(old), rv);
            Ok(json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {
                    "name": name,
                    "group": kind.group,
                    "kind": kind.plural,
                    "uid": obj["metadata"]["uid"],
                }
            }))
        }
    }
}

/// The object as returned to the client: whole, or as `PartialObjectMetadata`
/// when the client asked for `application/json;as=PartialObjectMetadata`.
fn present(o: &Value, meta_only: bool) -> Value {
    if meta_only {
        json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": o["metadata"]})
    } else {
        o.clone()
    }
}

fn encode_continue(rv: u64, (ns, name): &ObjKey) -> String {
    let raw = serde_json::to_vec(&json!({"rv": rv, "ns": ns, "name": name})).unwrap_or_default();
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(c: &str) -> Result<(u64, ObjKey), ApiError> {
    let bad = || ApiError::bad_request("continue key is not valid");
    if !c.len().is_multiple_of(2) || !c.is_ascii() {
        return Err(bad());
    }
    let bytes = (0..c.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&c[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let rv = v["rv"].as_u64().ok_or_else(bad)?;
    Ok((rv, (v["ns"].as_str().ok_or_else(bad)?.to_string(), v["name"].as_str().ok_or_else(bad)?.to_string())))
}

fn without_managed_fields(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("managedFields");
    }
    v
}

/// What `generation` tracks: the object without metadata, and without status
/// when status is a subresource (as for CRDs: without the subresource, status
/// changes bump the generation too).
fn strip_for_spec(v: &Value, kind: &ResourceKind) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        if kind.status_subresource {
            m.remove("status");
        }
    }
    v
}

fn random_suffix(seed: u64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407)
        ^ (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(0));
    (0..5)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % ALPHABET.len() as u64) as usize] as char
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Selectors

#[derive(Debug, Clone)]
enum LabelReq {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Debug, Clone, Default)]
struct Selectors {
    labels: Vec<LabelReq>,
    fields: Vec<(String, bool, String)>, // (field, equal?, value)
}

fn split_top_level(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c)
            }
            ')' => {
                depth -= 1;
                cur.push(c)
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

fn parse_set(s: &str) -> Result<Vec<String>, ApiError> {
    let s = s.trim();
    let inner = s
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| ApiError::bad_request(format!("unable to parse requirement: bad set {s}")))?;
    Ok(inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect())
}

fn parse_label_selector(s: &str) -> Result<Vec<LabelReq>, ApiError> {
    let mut reqs = Vec::new();
    for term in split_top_level(s) {
        let req = if let Some((k, v)) = term.split_once("!=") {
            LabelReq::Ne(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = term.split_once("==") {
            LabelReq::Eq(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = term.split_once('=') {
            LabelReq::Eq(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = term.split_once(" notin ") {
            LabelReq::NotIn(k.trim().into(), parse_set(v)?)
        } else if let Some((k, v)) = term.split_once(" in ") {
            LabelReq::In(k.trim().into(), parse_set(v)?)
        } else if let Some(k) = term.strip_prefix('!') {
            LabelReq::NotExists(k.trim().into())
        } else if term.contains(['(', ')', ' ', '<', '>']) {
            return Err(ApiError::bad_request(format!("unable to parse requirement: {term}")));
        } else {
            LabelReq::Exists(term)
        };
        reqs.push(req);
    }
    Ok(reqs)
}

fn parse_field_selector(s: &str) -> Result<Vec<(String, bool, String)>, ApiError> {
    let mut out = Vec::new();
    for term in split_top_level(s) {
        let (f, eq, v) = if let Some((f, v)) = term.split_once("!=") {
            (f, false, v)
        } else if let Some((f, v)) = term.split_once("==") {
            (f, true, v)
        } else if let Some((f, v)) = term.split_once('=') {
            (f, true, v)
        } else {
            return Err(ApiError::bad_request(format!("invalid field selector: {term}")));
        };
        let f = f.trim();
        if f != "metadata.name" && f != "metadata.namespace" {
            return Err(ApiError::bad_request(format!("field label not supported: {f}")));
        }
        out.push((f.to_string(), eq, v.trim().to_string()));
    }
    Ok(out)
}

impl Selectors {
    fn matches(&self, obj: &Value) -> bool {
        let labels = obj["metadata"]["labels"].as_object();
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(|v| v.as_str());
        let labels_ok = self.labels.iter().all(|r| match r {
            LabelReq::Eq(k, v) => label(k) == Some(v.as_str()),
            LabelReq::Ne(k, v) => label(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::NotIn(k, vs) => label(k).is_none_or(|l| !vs.iter().any(|v| v == l)),
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
        });
        labels_ok
            && self.fields.iter().all(|(f, eq, v)| {
                let actual = match f.as_str() {
                    "metadata.name" => obj["metadata"]["name"].as_str().unwrap_or(""),
                    _ => obj["metadata"]["namespace"].as_str().unwrap_or(""),
                };
                (actual == v) == *eq
            })
    }
}

// ---------------------------------------------------------------------------
// HTTP

struct Target {
    kind: ResourceKind,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

fn query_map(uri: &Uri) -> HashMap<String, String> {
    let mut m = HashMap::new();
    for pair in uri.query().unwrap_or("").split('&').filter(|s| !s.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        m.insert(percent_decode(k), percent_decode(v));
    }
    m
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn handle(shared: Arc<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    {
        let mut log = shared.requests.lock().unwrap_or_else(|e| e.into_inner());
        log.push_back(RequestRecord {
            method: method.to_string(),
            path: uri.path().to_string(),
            query: uri.query().unwrap_or("").to_string(),
            content_type,
            user: headers.get("impersonate-user").and_then(|v| v.to_str().ok()).map(str::to_owned),
        });
        while log.len() > REQUEST_LOG_LIMIT {
            log.pop_front();
        }
    }
    {
        let mut faults = shared.faults.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = faults.iter_mut().find(|f| {
            f.times > 0
                && f.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method.as_str()))
                && uri.path().contains(&f.path_contains)
        }) {
            f.times -= 1;
            let err = ApiError::new(f.code, f.reason, format!("injected fault ({} {})", f.code, f.reason));
            faults.retain(|f| f.times > 0);
            return err.into_response();
        }
    }
    match route(shared, method, uri, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn route(
    shared: Arc<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let segs: Vec<String> = uri.path().split('/').filter(|s| !s.is_empty()).map(percent_decode).collect();
    let segs: Vec<&str> = segs.iter().map(|s| s.as_str()).collect();
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["version"] => {
            return Ok(json_response(
                StatusCode::OK,
                &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-weir-apiserver-double",
                    "gitCommit": "", "gitTreeState": "clean", "buildDate": "", "goVersion": "",
                    "compiler": "", "platform": "linux/amd64"}),
            ))
        }
        ["api"] => {
            return Ok(json_response(
                StatusCode::OK,
                &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
            ))
        }
        ["apis"] => return Ok(json_response(StatusCode::OK, &api_group_list(&shared))),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::new(404, "NotFound", "the server could not find the requested resource")),
    };
    if rest.is_empty() {
        return Ok(json_response(StatusCode::OK, &api_resource_list(&shared, group, version)));
    }
    let (namespace, rest) =
        if rest[0] == "namespaces" && rest.len() >= 3 && rest[2] != "status" && rest[2] != "finalize" {
            (Some(rest[1].to_string()), &rest[2..])
        } else {
            (None, rest)
        };
    let kind = shared
        .lock()
        .kinds
        .get(&(group.to_string(), version.to_string(), rest[0].to_string()))
        .cloned()
        .ok_or_else(|| ApiError::new(404, "NotFound", "the server could not find the requested resource"))?;
    if namespace.is_some() && !kind.namespaced {
        return Err(ApiError::new(404, "NotFound", "the server could not find the requested resource"));
    }
    let target = Target {
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
        status: match rest.get(2) {
            None => false,
            Some(&"status") if kind.status_subresource => true,
            Some(_) => return Err(ApiError::new(404, "NotFound", "the server could not find the requested resource")),
        },
        kind,
    };
    if rest.len() > 3 {
        return Err(ApiError::new(404, "NotFound", "the server could not find the requested resource"));
    }
    let q = query_map(&uri);
    if target.name.is_none() && target.kind.namespaced && target.namespace.is_none() && method != Method::GET {
        return Err(ApiError::new(405, "MethodNotAllowed", "namespace required"));
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let ns = target.namespace.as_deref();
    let kind = &target.kind;
    let dry_run = q.get("dryRun").is_some_and(|v| v == "All");
    let meta_only =
        headers.get("accept").and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("as=PartialObjectMetadata"));
    // The manager of non-apply writes: `fieldManager`, else the user agent's
    // product name, like the real server.
    let manager = q.get("fieldManager").filter(|m| !m.is_empty()).cloned().unwrap_or_else(|| {
        headers
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .and_then(|ua| ua.split('/').next())
            .filter(|s| !s.is_empty())
            .unwrap_or("unknown")
            .to_string()
    });
    match (&method, &target.name) {
        (&Method::GET, None) => {
            let sel = Selectors {
                labels: parse_label_selector(q.get("labelSelector").map(|s| s.as_str()).unwrap_or(""))?,
                fields: parse_field_selector(q.get("fieldSelector").map(|s| s.as_str()).unwrap_or(""))?,
            };
            if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
                return watch(shared, target, sel, q, meta_only);
            }
            let st = shared.lock();
            // Pagination: the continue token carries the list's resourceVersion
            // and the last key; every page reports the first page's
            // resourceVersion, so a watch from it replays whatever changed while
            // paging (the pages themselves are read from current state).
            let (list_rv, after) = match q.get("continue").filter(|c| !c.is_empty()) {
                Some(c) => {
                    let (rv, key) = decode_continue(c)?;
                    if rv < st.compacted {
                        return Err(ApiError::new(
                            410,
                            "Expired",
                            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                        ));
                    }
                    (rv, Some(key))
                }
                None => (st.rv, None),
            };
            let limit = q.get("limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0);
            let matching: Vec<(&ObjKey, &Value)> = st
                .objects
                .get(&kind.key())
                .map(|m| {
                    m.iter()
                        .filter(|(k, _)| after.as_ref().is_none_or(|a| *k > a))
                        .filter(|((o_ns, _), o)| ns.is_none_or(|n| n == o_ns) && sel.matches(o))
                        .collect()
                })
                .unwrap_or_default();
            let mut metadata = json!({"resourceVersion": list_rv.to_string()});
            let page = match limit {
                Some(l) if matching.len() > l => {
                    let last = matching[l - 1].0;
                    metadata["continue"] = json!(encode_continue(list_rv, last));
                    metadata["remainingItemCount"] = json!(matching.len() - l);
                    &matching[..l]
                }
                _ => &matching[..],
            };
            let items: Vec<Value> = page.iter().map(|(_, o)| present(o, meta_only)).collect();
            let (api_version, list_kind) = if meta_only {
                ("meta.k8s.io/v1".to_string(), "PartialObjectMetadataList".to_string())
            } else {
                (kind.api_version(), format!("{}List", kind.kind))
            };
            Ok(json_response(
                StatusCode::OK,
                &json!({
                    "apiVersion": api_version,
                    "kind": list_kind,
                    "metadata": metadata,
                    "items": items,
                }),
            ))
        }
        (&Method::GET, Some(name)) => {
            let st = shared.lock();
            let obj = st.get_obj(kind, ns, name).ok_or_else(|| ApiError::not_found(kind, name))?;
            Ok(json_response(StatusCode::OK, &present(&obj, meta_only)))
        }
        (&Method::POST, None) => {
            let obj: Value = parse_body(&body, &content_type)?;
            let mut st = WriteGuard::new(&shared, dry_run);
            let created = st.create(kind, ns, obj, false, Some(&manager))?;
            broadcast_last(&shared, &st);
            Ok(json_response(StatusCode::CREATED, &created))
        }
        (&Method::PUT, Some(name)) => {
            let obj: Value = parse_body(&body, &content_type)?;
            let mut st = WriteGuard::new(&shared, dry_run);
            let old = st.get_obj(kind, ns, name).ok_or_else(|| ApiError::not_found(kind, name))?;
            let part = if target.status { Part::Status } else { Part::Main };
            let res = st.update(kind, old, obj, part, Some(&manager))?;
            broadcast_last(&shared, &st);
            Ok(json_response(StatusCode::OK, &res))
        }
        (&Method::PATCH, Some(name)) => {
            let part = if target.status { Part::Status } else { Part::Main };
            let mut st = WriteGuard::new(&shared, dry_run);
            let old = st.get_obj(kind, ns, name);
            let rv_before = st.rv;
            let res = match content_type.as_str() {
                "application/apply-patch+yaml" => {
                    let apply_manager = q
                        .get("fieldManager")
                        .filter(|m| !m.is_empty())
                        .ok_or_else(|| {
                            ApiError::bad_request(
                                "PATCH, application/apply-patch+yaml requires fieldManager to be set",
                            )
                        })?
                        .clone();
                    let applied: Value = serde_yaml::from_slice(&body)
                        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
                    let applied = check_applied(&applied, kind, name)?;
                    match old {
                        None if target.status => return Err(ApiError::not_found(kind, name)),
                        None => {
                            let mut obj = applied.clone();
                            fields::track_apply_create(kind, &mut obj, &apply_manager);
                            let created = st.create(kind, ns, obj, false, None)?;
                            broadcast_last(&shared, &st);
                            return Ok(json_response(StatusCode::CREATED, &created));
                        }
                        Some(old) => {
                            let force = q.get("force").is_some_and(|f| f == "true");
                            let mut merged = fields::apply(kind, &old, &applied, &apply_manager, force, target.status)?;
                            if applied["metadata"]["resourceVersion"].is_null() {
                                merged["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
                            }
                            st.update(kind, old, merged, part, None)?
                        }
                    }
                }
                "application/merge-patch+json" | "application/strategic-merge-patch+json" | "application/json-patch+json" => {
                    let old = old.ok_or_else(|| ApiError::not_found(kind, name))?;
                    let patch: Value = serde_json::from_slice(&body)
                        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
                    let mut merged = old.clone();
                    if content_type == "application/json-patch+json" {
                        let p: json_patch::Patch = serde_json::from_value(patch)
                            .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
                        json_patch::patch(&mut merged, &p).map_err(|e| {
                            ApiError::new(422, "Invalid", format!("the server rejected our request due to an error in our request: {e}"))
                        })?;
                    } else {
                        json_patch::merge(&mut merged, &patch);
                    }
                    if merged["metadata"]["resourceVersion"].as_str().is_none_or(|s| s.is_empty()) {
                        merged["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
                    }
                    st.update(kind, old, merged, part, Some(&manager))?
                }
                other => {
                    return Err(ApiError::new(
                        415,
                        "UnsupportedMediaType",
                        format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other})"),
                    ))
                }
            };
            if st.rv != rv_before {
                broadcast_last(&shared, &st);
            }
            Ok(json_response(StatusCode::OK, &res))
        }
        (&Method::DELETE, Some(name)) => {
            if target.status {
                return Err(ApiError::new(405, "MethodNotAllowed", "cannot delete status"));
            }
            let opts: Value = if body.is_empty() { Value::Null } else { parse_body(&body, &content_type)? };
            let dry_run = dry_run || body_dry_run(&opts);
            let mut st = WriteGuard::new(&shared, dry_run);
            if let Some(obj) = st.get_obj(kind, ns, name) {
                for (field, what) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
                    if let Some(want) = opts["preconditions"][field].as_str() {
                        if obj["metadata"][field].as_str() != Some(want) {
                            return Err(ApiError::new(
                                409,
                                "Conflict",
                                format!(
                                    "Operation cannot be fulfilled on {} \"{}\": Precondition failed: {} in precondition: {}, {} in object meta: {}",
                                    qualified(kind),
                                    name,
                                    what,
                                    want,
                                    what,
                                    obj["metadata"][field].as_str().unwrap_or("")
                                ),
                            )
                            .with_details(kind, name));
                        }
                    }
                }
            }
            let rv_before = st.rv;
            let res = st.delete(kind, ns, name)?;
            if st.rv != rv_before {
                broadcast_last(&shared, &st);
            }
            Ok(json_response(StatusCode::OK, &res))
        }
        (&Method::DELETE, None) => {
            let sel = Selectors {
                labels: parse_label_selector(q.get("labelSelector").map(|s| s.as_str()).unwrap_or(""))?,
                fields: parse_field_selector(q.get("fieldSelector").map(|s| s.as_str()).unwrap_or(""))?,
            };
            let opts: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let dry_run = dry_run || body_dry_run(&opts);
            let mut st = WriteGuard::new(&shared, dry_run);
            let names: Vec<String> = st
                .objects
                .get(&kind.key())
                .map(|m| {
                    m.iter()
                        .filter(|((o_ns, _), o)| ns.is_none_or(|n| n == o_ns) && sel.matches(o))
                        .map(|((_, n), _)| n.clone())
                        .collect()
                })
                .unwrap_or_default();
            let mut items = Vec::new();
            for name in names {
                let obj = st.get_obj(kind, ns, &name);
                let rv_before = st.rv;
                st.delete(kind, ns, &name)?;
                if st.rv != rv_before {
                    broadcast_last(&shared, &st);
                }
                items.extend(obj);
            }
            Ok(json_response(
                StatusCode::OK,
                &json!({
                    "apiVersion": kind.api_version(),
                    "kind": format!("{}List", kind.kind),
                    "metadata": {"resourceVersion": st.rv.to_string()},
                    "items": items,
                }),
            ))
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
        )),
    }
}

/// The store locked for a write; for `dryRun=All` requests nothing is stored
/// and the resourceVersion/uid counters are restored on drop.
struct WriteGuard<'a> {
    st: MutexGuard<'a, Store>,
    saved: (u64, u64),
}

impl<'a> WriteGuard<'a> {
    fn new(shared: &'a Shared, dry_run: bool) -> Self {
        let mut st = shared.lock();
        st.dry_run = dry_run;
        let saved = (st.rv, st.uid);
        Self { st, saved }
    }
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        if self.st.dry_run {
            (self.st.rv, self.st.uid) = self.saved;
            self.st.dry_run = false;
        }
    }
}

impl std::ops::Deref for WriteGuard<'_> {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.st
    }
}

impl std::ops::DerefMut for WriteGuard<'_> {
    fn deref_mut(&mut self) -> &mut Store {
        &mut self.st
    }
}

fn broadcast_last(shared: &Shared, st: &Store) {
    if st.dry_run {
        return;
    }
    if let Some(rec) = st.history.back() {
        let _ = shared.events.send(rec.clone());
    }
}

/// `dryRun: ["All"]` in a DeleteOptions body.
fn body_dry_run(opts: &Value) -> bool {
    opts["dryRun"].as_array().is_some_and(|a| a.iter().any(|v| v == "All"))
}

fn parse_body(body: &Bytes, content_type: &str) -> Result<Value, ApiError> {
    if content_type.contains("yaml") {
        serde_yaml::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding JSON: {e}")))
    }
}

fn check_applied(applied: &Value, kind: &ResourceKind, name: &str) -> Result<Value, ApiError> {
    if !applied.is_object() {
        return Err(ApiError::bad_request("applied configuration must be an object"));
    }
    if applied["apiVersion"].as_str() != Some(&kind.api_version()) || applied["kind"].as_str() != Some(&kind.kind) {
        return Err(ApiError::bad_request(format!(
            "apply configuration must have apiVersion {} and kind {}",
            kind.api_version(),
            kind.kind
        )));
    }
    if let Some(n) = applied["metadata"]["name"].as_str() {
        if n != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
    }
    let mut a = applied.clone();
    if !a["metadata"].is_object() {
        a["metadata"] = json!({});
    }
    a["metadata"]["name"] = json!(name);
    Ok(a)
}

fn api_group_list(shared: &Shared) -> Value {
    let st = shared.lock();
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for k in st.kinds.values().filter(|k| !k.group.is_empty()) {
        let v = groups.entry(k.group.clone()).or_default();
        if !v.contains(&k.version) {
            v.push(k.version.clone());
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(g, vs)| {
            let versions: Vec<Value> =
                vs.iter().map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v})).collect();
            json!({"name": g, "versions": versions, "preferredVersion": versions[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn api_resource_list(shared: &Shared, group: &str, version: &str) -> Value {
    let st = shared.lock();
    let mut resources = Vec::new();
    for k in st.kinds.values().filter(|k| k.group == group && k.version == version) {
        resources.push(json!({
            "name": k.plural, "singularName": k.kind.to_lowercase(), "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
        }));
        if k.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", k.plural), "singularName": "", "namespaced": k.namespaced,
                "kind": k.kind, "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

// ---------------------------------------------------------------------------
// Watch

fn event_line(etype: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": etype, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn expired_line(rv: &str) -> Bytes {
    let err = ApiError::new(410, "Expired", format!("too old resource version: {rv}"));
    event_line("ERROR", &err.status())
}

fn bookmark(kind: &ResourceKind, rv: u64, initial_end: bool) -> Value {
    let mut md = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        md["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"apiVersion": kind.api_version(), "kind": kind.kind, "metadata": md})
}

/// Translates a stored change into the event a selector-filtered watch sees.
fn translate(rec: &Record, ns: Option<&str>, sel: &Selectors) -> Option<(&'static str, Value)> {
    let in_scope = |o: &Value| ns.is_none_or(|n| o["metadata"]["namespace"].as_str() == Some(n)) && sel.matches(o);
    let new_in = in_scope(&rec.object);
    let old_in = rec.old.as_ref().is_some_and(in_scope);
    match rec.etype {
        "ADDED" => new_in.then(|| ("ADDED", rec.object.clone())),
        "DELETED" => (new_in || old_in).then(|| ("DELETED", rec.object.clone())),
        _ => match (old_in, new_in) {
            (true, true) => Some(("MODIFIED", rec.object.clone())),
            (false, true) => Some(("ADDED", rec.object.clone())),
            (true, false) => Some(("DELETED", rec.object.clone())),
            (false, false) => None,
        },
    }
}

fn watch(
    shared: Arc<Shared>,
    target: Target,
    sel: Selectors,
    q: HashMap<String, String>,
    meta_only: bool,
) -> Result<Response, ApiError> {
    let kind = target.kind.clone();
    let ns = target.namespace.clone();
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let send_initial = q.get("sendInitialEvents").is_some_and(|v| v == "true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let rv_param = q.get("resourceVersion").cloned().unwrap_or_default();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1024);
    let mut initial: Vec<Bytes> = Vec::new();
    let mut last_rv;
    let mut sub;
    {
        let st = shared.lock();
        sub = shared.events.subscribe();
        last_rv = st.rv;
        if rv_param.is_empty() || rv_param == "0" || send_initial {
            if let Some(m) = st.objects.get(&kind.key()) {
                for ((o_ns, _), o) in m {
                    if ns.as_deref().is_none_or(|n| n == o_ns) && sel.matches(o) {
                        initial.push(event_line("ADDED", &present(o, meta_only)));
                    }
                }
            }
            if send_initial {
                initial.push(event_line("BOOKMARK", &bookmark(&kind, st.rv, true)));
            }
        } else {
            let from: u64 =
                rv_param.parse().map_err(|_| ApiError::bad_request(format!("invalid resource version {rv_param}")))?;
            if from < st.compacted {
                initial.push(expired_line(&rv_param));
                drop(st);
                return Ok(stream_response(futures::stream::iter(initial.into_iter().map(Ok))));
            }
            for rec in st.history.iter().filter(|r| r.rv > from && r.kind == kind.key()) {
                if let Some((t, o)) = translate(rec, ns.as_deref(), &sel) {
                    initial.push(event_line(t, &present(&o, meta_only)));
                }
            }
        }
    }
    let mut shutdown = shared.shutdown.clone();
    tokio::spawn(async move {
        for line in initial {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let interval = *shared.bookmark_interval.lock().unwrap_or_else(|e| e.into_inner());
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = shutdown.changed() => return,
                _ = tx.closed() => return,
                _ = ticker.tick(), if bookmarks => {
                    if tx.send(event_line("BOOKMARK", &bookmark(&kind, last_rv, false))).await.is_err() {
                        return;
                    }
                }
                ev = sub.recv() => match ev {
                    Ok(rec) => {
                        if rec.etype == "DISCONNECT" {
                            return;
                        }
                        if rec.etype == "EXPIRED" {
                            let _ = tx.send(expired_line(&last_rv.to_string())).await;
                            return;
                        }
                        last_rv = last_rv.max(rec.rv);
                        if rec.kind != kind.key() {
                            continue;
                        }
                        if let Some((t, o)) = translate(&rec, ns.as_deref(), &sel) {
                            if tx.send(event_line(t, &present(&o, meta_only))).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx.send(expired_line(&last_rv.to_string())).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx)) });
    Ok(stream_response(stream))
}

fn stream_response<S>(stream: S) -> Response
where
    S: futures::Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
{
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
