//! Watches (`watch=true`): the initial events or the replay from a
//! `resourceVersion`, then live events from the store's broadcast, translated
//! through the watch's selectors, with bookmarks, timeouts and 410 `Expired`
//! for compacted history or a lagging watcher.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::error::ApiError;
use crate::routing::{present, Target};
use crate::selectors::Selectors;
use crate::store::{Record, Shared};
use crate::ResourceKind;

pub(crate) fn event_line(etype: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": etype, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

pub(crate) fn expired_line(rv: &str) -> Bytes {
    let err = ApiError::new(410, "Expired", format!("too old resource version: {rv}"));
    event_line("ERROR", &err.status())
}

pub(crate) fn bookmark(kind: &ResourceKind, rv: u64, initial_end: bool) -> Value {
    let mut md = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        md["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"apiVersion": kind.api_version(), "kind": kind.kind, "metadata": md})
}

/// Translates a stored change into the event a selector-filtered watch sees.
pub(crate) fn translate(rec: &Record, ns: Option<&str>, sel: &Selectors) -> Option<(&'static str, Value)> {
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

pub(crate) fn watch(
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

pub(crate) fn stream_response<S>(stream: S) -> Response
where
    S: futures::Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
{
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
