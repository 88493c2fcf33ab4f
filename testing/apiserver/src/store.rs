//! The store: objects keyed by kind and (namespace, name), the global
//! `resourceVersion`, the bounded watch history, and the write rules every
//! entry point shares (create, update, delete; `generation`, finalizers,
//! no-op writes, `dryRun`). The HTTP layer ([`crate::routing`]) and the test
//! helpers on [`crate::ApiServer`] both write through it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::error::{qualified, ApiError};
use crate::requests::{Fault, RequestRecord};
use crate::{defaults, fields, ResourceKind};

pub(crate) type KindKey = (String, String, String);
pub(crate) type ObjKey = (String, String); // (namespace or "", name)

#[derive(Clone, Debug)]
pub(crate) struct Record {
    pub(crate) rv: u64,
    pub(crate) kind: KindKey,
    pub(crate) etype: &'static str,
    pub(crate) object: Value,
    pub(crate) old: Option<Value>,
}

pub(crate) struct Store {
    pub(crate) rv: u64,
    pub(crate) uid: u64,
    pub(crate) kinds: HashMap<KindKey, ResourceKind>,
    pub(crate) objects: HashMap<KindKey, BTreeMap<ObjKey, Value>>,
    pub(crate) history: VecDeque<Arc<Record>>,
    pub(crate) history_limit: usize,
    /// Events with a resourceVersion <= this are no longer available.
    pub(crate) compacted: u64,
    /// Set while serving a `dryRun=All` request: nothing is stored.
    pub(crate) dry_run: bool,
}

pub(crate) struct Shared {
    pub(crate) store: Mutex<Store>,
    pub(crate) events: broadcast::Sender<Arc<Record>>,
    pub(crate) shutdown: tokio::sync::watch::Receiver<bool>,
    pub(crate) bookmark_interval: Mutex<Duration>,
    pub(crate) requests: Mutex<VecDeque<RequestRecord>>,
    pub(crate) faults: Mutex<Vec<Fault>>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    Main,
    Status,
    Everything,
}

impl Store {
    pub(crate) fn trim(&mut self) {
        while self.history.len() > self.history_limit {
            if let Some(r) = self.history.pop_front() {
                self.compacted = self.compacted.max(r.rv);
            }
        }
    }

    pub(crate) fn get_obj(&self, kind: &ResourceKind, ns: Option<&str>, name: &str) -> Option<Value> {
        self.objects.get(&kind.key())?.get(&(ns.unwrap_or("").to_string(), name.to_string())).cloned()
    }

    pub(crate) fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Stores `obj` (already with its new resourceVersion) and records the event.
    /// The caller broadcasts `history.back()`.
    pub(crate) fn commit(&mut self, kind: &ResourceKind, etype: &'static str, obj: Value, old: Option<Value>, rv: u64) {
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

    pub(crate) fn create(
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
    pub(crate) fn update(
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

    pub(crate) fn delete(&mut self, kind: &ResourceKind, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
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
pub(crate) fn without_managed_fields(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("managedFields");
    }
    v
}

/// What `generation` tracks: the object without metadata, and without status
/// when status is a subresource (as for CRDs: without the subresource, status
/// changes bump the generation too).
pub(crate) fn strip_for_spec(v: &Value, kind: &ResourceKind) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        if kind.status_subresource {
            m.remove("status");
        }
    }
    v
}

pub(crate) fn random_suffix(seed: u64) -> String {
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

pub(crate) struct WriteGuard<'a> {
    st: MutexGuard<'a, Store>,
    saved: (u64, u64),
}

impl<'a> WriteGuard<'a> {
    pub(crate) fn new(shared: &'a Shared, dry_run: bool) -> Self {
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

pub(crate) fn broadcast_last(shared: &Shared, st: &Store) {
    if st.dry_run {
        return;
    }
    if let Some(rec) = st.history.back() {
        let _ = shared.events.send(rec.clone());
    }
}
