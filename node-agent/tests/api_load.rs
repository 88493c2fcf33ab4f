//! The API under load (issue 11, item 2): on a runtime with two workers, as
//! on a small node, a long Balancer operation plus other lock-taking
//! requests must not stall `/health` and `/health/ready`; a purge of a large
//! connection table lets other requests in between its chunks and still
//! counts exactly. Every request is spawned as its own task, as the server
//! runs each connection. Needs root (BPF): without it, prints `SKIPPED`.

mod support {
    pub mod api;
}

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};
use weir_ebpf::abi;

use support::api::*;
use weir_test_support::packet::syn;

const VIP: &str = "10.0.0.1";
/// Entries the test puts in the connection table.
const ENTRIES: u32 = 300_000;
/// The most a probe may take.
const PROBE_BOUND: Duration = Duration::from_millis(50);

/// Sends `method uri` from a task of its own; the answer and how long it took.
async fn spawned(api: &Arc<Api>, method: &'static str, uri: &'static str, body: Option<Value>) -> (Answer, Duration) {
    let api = api.clone();
    // Timed from before the spawn: waiting for a free worker counts.
    let start = Instant::now();
    let answer = tokio::spawn(async move {
        match body {
            Some(body) => api.send(method, uri, body).await,
            None => api.call(method, uri).await,
        }
    })
    .await
    .unwrap();
    (answer, start.elapsed())
}

/// A testing balancer whose connection table holds [`ENTRIES`] + 1 entries
/// of VIP:80/tcp (one from a simulated SYN, the rest written into the map).
async fn balancer_with_a_large_table() -> Arc<Api> {
    let api = Arc::new(Api::new());
    // Each CPU's LRU list holds lru_size / CPUs entries, and the filling
    // thread may stay on one CPU: room for them all on each.
    let lru_size = (ENTRIES as usize + 1024) * possible_cpus();
    let create = json!({"testing": true, "max_vips": 8, "max_reals": 32, "lru_size": lru_size,
                        "default_mac": "02:00:00:00:00:01"});
    let answer = api.send("POST", "/api/v1/lb/create", create).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    api.add_vip(VIP, 80, 6, 0).await;
    api.add_real(vip(VIP, 80, 6), "10.1.0.1", 1).await;
    let frame = syn("198.51.100.7:40000".parse().unwrap(), format!("{VIP}:80").parse().unwrap());
    let answer = api.send("POST", "/api/v1/utils/simulate-packet", json!({"packet": STANDARD.encode(frame)})).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);

    let fd = api.data("/api/v1/utils/map-fd?map_name=weir_conns").await["fd"].as_i64().unwrap() as i32;
    // SAFETY: the balancer keeps its table's fd open; it is only borrowed to be duplicated.
    let owned = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned().unwrap();
    let map = aya::maps::Map::from_map_data(aya::maps::MapData::from_fd(owned).unwrap()).unwrap();
    let mut conns: aya::maps::HashMap<_, abi::ConnKey, abi::ConnEntry> = map.try_into().unwrap();
    let (syn_key, entry) = conns.iter().next().unwrap().unwrap();
    for i in 0..ENTRIES {
        let mut key = syn_key;
        key.src[12..16].copy_from_slice(&(0x0a00_0000 + i).to_be_bytes());
        key.sport = ((i % 50_000) as u16 + 1024).to_be_bytes();
        conns.insert(key, entry, 0).unwrap();
    }
    assert_eq!(
        api.data("/api/v1/stats/bpf-map?map_name=weir_conns").await["current_entries"],
        json!(ENTRIES + 1),
        "the table holds every entry written"
    );
    api
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_during_a_long_purge_with_a_second_client() {
    if skip_without_root("probes_answer_during_a_long_purge_with_a_second_client") {
        return;
    }
    let api = balancer_with_a_large_table().await;

    let purge = tokio::spawn({
        let api = api.clone();
        async move {
            let start = Instant::now();
            let answer = api.send("DELETE", "/api/v1/lru/vip", vip(VIP, 80, 6)).await;
            (answer, start.elapsed())
        }
    });
    // A second client that takes the lock, over and over, while the purge runs.
    let done = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let other = tokio::spawn({
        let (api, done, answered) = (api.clone(), done.clone(), answered.clone());
        async move {
            while !done.load(Ordering::Relaxed) {
                let (answer, _) = spawned(&api, "GET", "/api/v1/vips", None).await;
                assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
                answered.fetch_add(1, Ordering::Relaxed);
            }
        }
    });

    let mut probes = 0;
    let mut slowest = Duration::ZERO;
    while !purge.is_finished() {
        for uri in ["/health", "/health/ready"] {
            let (answer, took) = spawned(&api, "GET", uri, None).await;
            assert_eq!(answer.status, StatusCode::OK, "{uri}: {}", answer.body);
            slowest = slowest.max(took);
            probes += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (answer, purge_took) = purge.await.unwrap();
    done.store(true, Ordering::Relaxed);
    other.await.unwrap();
    eprintln!(
        "purge of {} entries: {purge_took:?}; {probes} probes, slowest {slowest:?}; {} reads in between",
        ENTRIES + 1,
        answered.load(Ordering::Relaxed)
    );
    assert_eq!((answer.status, answer.body), (StatusCode::OK, data(json!({"deleted_count": ENTRIES + 1}))));
    assert!(slowest < PROBE_BOUND, "a probe took {slowest:?} during the purge");
    assert!(probes >= 4, "the purge ({purge_took:?}) was too short to probe during it");
    assert!(answered.load(Ordering::Relaxed) >= 2, "the second client got the lock between the purge's chunks");
    assert_eq!(api.data("/api/v1/stats/bpf-map?map_name=weir_conns").await["current_entries"], json!(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_does_not_wait_for_a_writer() {
    if skip_without_root("readiness_does_not_wait_for_a_writer") {
        return;
    }
    let api = Arc::new(Api::new());
    let (answer, _) = spawned(&api, "GET", "/health/ready", None).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.body["data"]["reason"], json!("no_balancer"));
    api.create().await;
    let (answer, _) = spawned(&api, "GET", "/health/ready", None).await;
    assert_eq!(
        (answer.status, answer.body["data"].clone()),
        (StatusCode::OK, json!({"ready": true, "status": "ready"}))
    );

    // A writer holds the lock for 1 s (as a create verifying its program
    // does), and two more requests wait for it, one per worker before the fix.
    let balancer = api.state.balancer.clone();
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let writer = std::thread::spawn(move || {
        let _guard = balancer.write().unwrap();
        held_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_secs(1));
    });
    held_rx.recv().unwrap();
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let api = api.clone();
            tokio::spawn(async move { api.call("GET", "/api/v1/vips").await })
        })
        .collect();
    // Not tokio's sleep: with both workers stuck, its timer would not fire.
    std::thread::sleep(Duration::from_millis(50));
    assert!(api.state.balancer.try_read().is_err(), "the writer holds the lock");
    for uri in ["/health", "/health/ready", "/health", "/health/ready"] {
        let (answer, took) = spawned(&api, "GET", uri, None).await;
        assert_eq!(answer.status, StatusCode::OK, "{uri}: {}", answer.body);
        assert!(took < PROBE_BOUND, "{uri} took {took:?} while a writer held the lock");
    }
    let (answer, _) = spawned(&api, "GET", "/health/ready", None).await;
    assert_eq!(
        answer.body["data"],
        json!({"ready": true, "status": "ready"}),
        "the last reading, while the lock is held"
    );
    writer.join().unwrap();
    for request in waiting {
        assert_eq!(request.await.unwrap().status, StatusCode::OK);
    }
}
