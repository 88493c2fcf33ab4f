//! The healthcheck program in the balancer's lifecycle, over HTTP: in a
//! private network namespace with a veth pair, `/lb/create` with `enable_hc`
//! attaches it to the interface's TC egress (a TCX link pinned as `hc_link`
//! beside the balancer's pins); probes sent from a socket with SO_MARK are
//! counted; `/lb/reload` and a new agent's `/lb/create` adopt it (the same
//! link, a new program, marks and counters kept); cleanup detaches and
//! unpins it, and a balancer created without `enable_hc` removes one left
//! pinned. Needs root: without it, prints `SKIPPED (needs root)`.

mod support {
    pub mod api;
}

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use axum::http::StatusCode;
use nix::sched::CloneFlags;
use serde_json::{json, Value};
use support::api::*;
use weir_agent::dataplane::pin;

/// Runs `f` on a thread of its own in a new network namespace with a veth
/// pair `<iface>`/`<iface>p` (gone when the thread ends), on a tokio runtime
/// created there: the blocking threads that load the programs inherit it.
fn in_private_netns<F: std::future::Future<Output = ()>>(f: impl FnOnce(String) -> F + Send + 'static) {
    std::thread::spawn(move || {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET).expect("unshare the network namespace");
        let iface = format!("whc{}", std::process::id() % 1_000_000);
        let peer = format!("{iface}p");
        ip(&["link", "add", &iface, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &iface, "up"]);
        ip(&["link", "set", &peer, "up"]);
        // Somewhere for marked datagrams to go: out of `iface`, no ARP needed.
        ip(&["addr", "add", "10.99.0.1/24", "dev", &iface]);
        ip(&["neigh", "add", "10.99.0.2", "lladdr", "02:00:00:00:99:02", "dev", &iface, "nud", "permanent"]);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(f(iface));
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Removes what a failed run would leave outside the namespace.
struct Leftovers(Vec<PathBuf>);

impl Drop for Leftovers {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
        }
    }
}

fn create_body(iface: &str, enable_hc: bool, cleanup: bool) -> Value {
    json!({
        "main_interface": iface, "default_mac": "02:00:00:00:00:aa", "xdp_attach_flags": 2,
        "max_vips": 4, "max_reals": 8, "lru_size": 1024, "cleanup_on_shutdown": cleanup, "enable_hc": enable_hc,
    })
}

/// The pinned TCX link's id and its program's id, from bpftool.
fn hc_link(pins: &Path) -> (u64, u64) {
    let out =
        Command::new("bpftool").args(["-j", "link", "show", "pinned"]).arg(pins.join("hc_link")).output().unwrap();
    assert!(out.status.success(), "bpftool: {}", String::from_utf8_lossy(&out.stderr));
    let link: Value = serde_json::from_slice(&out.stdout).unwrap();
    // bpftool names the type, or (older than the kernel) gives BPF_LINK_TYPE_TCX's number.
    assert!(link["type"] == json!("tcx") || link["type"] == json!(11), "{link}");
    (link["id"].as_u64().unwrap(), link["prog_id"].as_u64().unwrap())
}

/// Whether a link with `id` exists.
fn link_exists(id: u64) -> bool {
    Command::new("bpftool").args(["link", "show", "id", &id.to_string()]).output().unwrap().status.success()
}

/// Sends one UDP datagram to 10.99.0.2 (out of the veth) from a socket with `mark`.
fn send_marked(mark: u32) {
    let sock = UdpSocket::bind("10.99.0.1:0").unwrap();
    // SAFETY: `mark` is a valid u32 that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&mark as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_MARK: {}", std::io::Error::last_os_error());
    sock.send_to(b"probe", "10.99.0.2:9").unwrap();
}

async fn processed(api: &Api) -> (Value, Value) {
    let stats = api.data("/api/v1/stats/hc-prog").await;
    (stats["packets_processed"].clone(), stats["packets_dropped"].clone())
}

#[test]
fn the_healthcheck_program_is_attached_adopted_and_cleaned_up() {
    if skip_without_root("the_healthcheck_program_is_attached_adopted_and_cleaned_up") {
        return;
    }
    in_private_netns(|iface| async move {
        let netns = pin::netns_cookie().unwrap();
        let pins = pin::balancer_dir(Path::new(pin::DEFAULT_PIN_ROOT), netns, &iface);
        let state_file = pin::state_file(Path::new("/run/weir"), netns, &iface);
        let _cleanup = Leftovers(vec![pins.clone(), state_file.clone()]);

        let api = Api::new();
        let answer = api.send("POST", "/api/v1/lb/create", create_body(&iface, true, false)).await;
        assert_eq!((answer.status, answer.body), (StatusCode::CREATED, ok()));
        for name in weir_ebpf::abi::map::HEALTHCHECK.iter().chain(&["hc_link"]) {
            assert!(pins.join(name).exists(), "{name} is pinned");
        }
        let (link, first_prog) = hc_link(&pins);

        let answer = api.send("POST", "/api/v1/healthcheck/dsts", json!({"somark": 100, "dst": "10.1.0.1"})).await;
        assert_eq!(answer.status, StatusCode::CREATED);
        send_marked(100);
        assert_eq!(processed(&api).await, (json!(1), json!(0)), "the marked datagram was a probe");
        send_marked(0);
        send_marked(555);
        assert_eq!(processed(&api).await, (json!(1), json!(0)), "unmarked and unknown marks are not probes");
        assert!(api.data("/api/v1/stats/hc-prog").await["packets_skipped"].as_u64().unwrap() >= 2);

        // Reload: a new program in the same link; marks and counters stay.
        let answer = api.call("POST", "/api/v1/lb/reload").await;
        assert_eq!((answer.status, answer.body), (StatusCode::OK, ok()));
        let (same_link, second_prog) = hc_link(&pins);
        assert_eq!(same_link, link);
        assert_ne!(second_prog, first_prog, "the program was replaced");
        assert_eq!(processed(&api).await, (json!(1), json!(0)));
        assert_eq!(api.data("/api/v1/healthcheck/dsts").await, json!([{"somark": 100, "dst": "10.1.0.1"}]));

        // A new agent (close without cleanup, create again) adopts it too.
        assert_eq!(api.call("POST", "/api/v1/lb/close").await.status, StatusCode::OK);
        assert!(link_exists(link) && pins.join("hc_link").exists(), "left attached for the next agent");
        let answer = api.send("POST", "/api/v1/lb/create", create_body(&iface, true, true)).await;
        assert_eq!((answer.status, answer.body), (StatusCode::CREATED, ok()));
        let (same_link, third_prog) = hc_link(&pins);
        assert_eq!(same_link, link);
        assert_ne!(third_prog, second_prog);
        assert_eq!(api.data("/api/v1/healthcheck/dsts").await, json!([{"somark": 100, "dst": "10.1.0.1"}]));
        send_marked(100);
        assert_eq!(processed(&api).await, (json!(2), json!(0)), "the adopted program runs, its counters kept");

        // Cleanup: detached and unpinned.
        assert_eq!(api.call("POST", "/api/v1/lb/close").await.status, StatusCode::OK);
        assert!(!link_exists(link), "the TCX link is gone");
        assert!(!pins.exists());

        // A healthcheck program left pinned is removed by a balancer without enable_hc.
        let answer = api.send("POST", "/api/v1/lb/create", create_body(&iface, true, false)).await;
        assert_eq!(answer.status, StatusCode::CREATED);
        let (left, _) = hc_link(&pins);
        assert_eq!(api.call("POST", "/api/v1/lb/close").await.status, StatusCode::OK);
        let answer = api.send("POST", "/api/v1/lb/create", create_body(&iface, false, true)).await;
        assert_eq!((answer.status, answer.body), (StatusCode::CREATED, ok()));
        assert!(!link_exists(left) && !pins.join("hc_link").exists() && !pins.join("weir_hc_reals").exists());
        let answer = api.call("GET", "/api/v1/stats/hc-prog").await;
        assert_error(&answer, StatusCode::NOT_IMPLEMENTED, "FEATURE_DISABLED", "enable_hc");
        assert_eq!(api.call("POST", "/api/v1/lb/close").await.status, StatusCode::OK);
        assert!(!pins.exists() && !state_file.exists());
    });
}

#[test]
fn an_unknown_hc_interface_is_400_and_leaves_nothing() {
    if skip_without_root("an_unknown_hc_interface_is_400_and_leaves_nothing") {
        return;
    }
    in_private_netns(|iface| async move {
        let netns = pin::netns_cookie().unwrap();
        let pins = pin::balancer_dir(Path::new(pin::DEFAULT_PIN_ROOT), netns, &iface);
        let _cleanup = Leftovers(vec![pins.clone(), pin::state_file(Path::new("/run/weir"), netns, &iface)]);
        let api = Api::new();
        let mut body = create_body(&iface, true, true);
        body["hc_interface"] = json!("nohc0");
        let answer = api.send("POST", "/api/v1/lb/create", body).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "INVALID_REQUEST", "hc_interface: nohc0 does not exist");
        assert!(!pins.exists(), "nothing pinned");
        assert_eq!(api.data("/api/v1/lb/status").await["initialized"], json!(false));
    });
}
