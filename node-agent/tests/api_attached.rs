//! An attached balancer driven over HTTP: in a private network namespace
//! with a veth pair (generic XDP), `/lb/create` attaches and pins,
//! `/lb/status` and `/health/ready` say ready, `/lb/reload` swaps in a fresh
//! program on the same link keeping VIPs, connections and counters, and
//! `/lb/close` honours `cleanup_on_shutdown` (unpins and detaches, or leaves
//! the datapath forwarding for the next `/lb/create` to adopt). Needs root:
//! without it, prints `SKIPPED (needs root)`.

mod support {
    pub mod api;
}

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use axum::http::StatusCode;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use nix::sched::CloneFlags;
use serde_json::{json, Value};

use support::api::*;
use weir_agent::dataplane::pin;
use weir_test_support::packet::{sock, syn};

/// Runs `f` on a thread of its own in a new, empty network namespace (it is
/// gone, with its interfaces, when the thread ends), on a tokio runtime
/// created there: the blocking threads that load the program inherit it.
fn in_private_netns<F: std::future::Future<Output = ()>>(f: impl FnOnce(String) -> F + Send + 'static) {
    std::thread::spawn(move || {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET).expect("unshare the network namespace");
        // Unique per process: pins and the state file live outside the namespace.
        let iface = format!("wapi{}", std::process::id() % 1_000_000);
        let peer = format!("{iface}p");
        ip(&["link", "add", &iface, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &iface, "up"]);
        ip(&["link", "set", &peer, "up"]);
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

/// The id of the XDP program attached to `iface`, if any.
fn xdp_prog_id(iface: &str) -> Option<u64> {
    let links: Value = serde_json::from_str(&ip(&["-json", "-details", "link", "show", "dev", iface])).unwrap();
    links[0]["xdp"]["prog"]["id"].as_u64()
}

/// Removes what a failed run would leave outside the namespace (pins, the
/// state file); after a successful run there is nothing left to remove.
struct Leftovers(Vec<std::path::PathBuf>);

impl Drop for Leftovers {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
        }
    }
}

fn create_body(iface: &str, cleanup: bool) -> Value {
    json!({
        "main_interface": iface, "default_mac": "02:00:00:00:00:aa", "xdp_attach_flags": 2,
        "max_vips": 4, "max_reals": 8, "lru_size": 1024, "cleanup_on_shutdown": cleanup,
    })
}

/// The id of the XDP link pinned in `pins`.
fn link_id(pins: &Path) -> u64 {
    let out = Command::new("bpftool").args(["-j", "link", "show", "pinned"]).arg(pins.join("link")).output().unwrap();
    assert!(out.status.success(), "bpftool: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Value>(&out.stdout).unwrap()["id"].as_u64().expect("a link id")
}

/// Where a take-over sets the old maps aside (see `pin::SetAside`).
fn set_aside_dir(pins: &Path) -> std::path::PathBuf {
    let mut name = pins.file_name().unwrap().to_owned();
    name.push(":set-aside");
    pins.with_file_name(name)
}

/// Where a balancer on `iface` of this thread's namespace pins its datapath
/// and saves its state, as the agent's defaults place them.
fn pin_paths(iface: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let netns = pin::netns_cookie().expect("the namespace's cookie");
    (
        pin::balancer_dir(Path::new(pin::DEFAULT_PIN_ROOT), netns, iface),
        pin::state_file(Path::new("/run/weir"), netns, iface),
    )
}

/// Sends one SYN from a client to 10.0.0.1:80 through the balancer; it must
/// be sent on (`XDP_TX`), leaving one connection entry.
async fn open_connection(api: &Api) {
    let frame =
        syn(sock("198.51.100.7".parse::<IpAddr>().unwrap(), 1), sock("10.0.0.1".parse::<IpAddr>().unwrap(), 80));
    let out = api.send("POST", "/api/v1/utils/simulate-packet", json!({"packet": STANDARD.encode(&frame)})).await;
    assert_eq!(out.body["data"]["verdict"], json!("XDP_TX"));
}

#[test]
fn attached_balancer_reloads_and_cleans_up() {
    if skip_without_root("attached_balancer_reloads_and_cleans_up") {
        return;
    }
    in_private_netns(|iface| async move {
        // Pins and state are keyed by the namespace (this thread's) and the name.
        let (pins, state_file) = pin_paths(&iface);
        let _cleanup = Leftovers(vec![pins.clone(), state_file.clone()]);
        let api = Api::new();
        let answer = api.send("POST", "/api/v1/lb/create", create_body(&iface, true)).await;
        assert_eq!((answer.status, answer.body), (StatusCode::CREATED, ok()));
        assert!(pins.join("link").exists() && state_file.exists());
        let first_prog = xdp_prog_id(&iface).expect("attached");

        assert_eq!(
            api.data("/api/v1/lb/status").await,
            json!({"initialized": true, "ready": true, "programs": {"balancer": format!("weir_balancer, built into weir-agent {}", env!("CARGO_PKG_VERSION")), "healthcheck": null}, "map_memory_bytes": map_memory(&api)})
        );
        assert_eq!(api.data("/health/ready").await, json!({"ready": true, "status": "ready"}));
        for phase in ["/api/v1/lb/load-bpf-progs", "/api/v1/lb/attach-bpf-progs"] {
            let answer = api.call("POST", phase).await;
            assert_eq!((answer.status, answer.body), (StatusCode::OK, ok()), "{phase}");
        }

        // Some state: a VIP, a real, a connection, counters.
        api.add_vip("10.0.0.1", 80, 6, 0).await;
        api.add_real(vip("10.0.0.1", 80, 6), "10.1.0.1", 1).await;
        open_connection(&api).await;
        // (The VIP's counters: the link is live, the kernel sends its own packets on it.)
        let vip_stats = "/api/v1/stats/vip?address=10.0.0.1&port=80&proto=6";
        let before = (api.data(vip_stats).await, api.data("/api/v1/stats/lru").await);
        assert_eq!(before.0["v1"], json!(1));

        // Reload: a new program on the same link; the datapath's contents stay.
        let answer = api.call("POST", "/api/v1/lb/reload").await;
        assert_eq!((answer.status, answer.body), (StatusCode::OK, ok()));
        let second_prog = xdp_prog_id(&iface).expect("still attached");
        assert_ne!(first_prog, second_prog, "the program was replaced");
        assert_eq!(api.data("/api/v1/vips").await, json!([vip("10.0.0.1", 80, 6)]));
        assert_eq!(api.data("/api/v1/reals/index?address=10.1.0.1").await, json!({"index": 1}));
        assert_eq!(api.data("/api/v1/stats/bpf-map?map_name=weir_conns").await["current_entries"], json!(1));
        assert_eq!((api.data(vip_stats).await, api.data("/api/v1/stats/lru").await), before);
        assert_eq!(api.data("/api/v1/utils/mac").await, json!({"mac": "02:00:00:00:00:aa"}));
        assert_eq!(
            api.data("/api/v1/lb/status").await,
            json!({"initialized": true, "ready": true, "programs": {"balancer": format!("weir_balancer, built into weir-agent {}", env!("CARGO_PKG_VERSION")), "healthcheck": null}, "map_memory_bytes": map_memory(&api)})
        );

        // Close with cleanup: detached, unpinned, state file gone.
        let answer = api.call("POST", "/api/v1/lb/close").await;
        assert_eq!((answer.status, answer.body), (StatusCode::OK, ok()));
        assert_eq!(xdp_prog_id(&iface), None);
        assert!(!pins.exists() && !state_file.exists());

        // Without cleanup, the datapath stays and the next create adopts it.
        let answer = api.send("POST", "/api/v1/lb/create", create_body(&iface, false)).await;
        assert_eq!((answer.status, answer.body), (StatusCode::CREATED, ok()));
        api.add_vip("10.0.0.2", 443, 6, 0).await;
        // A MAC changed over REST does not outlive the process: the next create's configuration decides.
        let answer = api.send("PUT", "/api/v1/utils/mac", json!({"mac": "02:00:00:00:00:bb"})).await;
        assert_eq!(answer.status, StatusCode::OK);
        let answer = api.call("POST", "/api/v1/lb/close").await;
        assert_eq!((answer.status, answer.body), (StatusCode::OK, ok()));
        assert!(xdp_prog_id(&iface).is_some() && pins.join("link").exists() && state_file.exists());
        let answer = api.send("POST", "/api/v1/lb/create", create_body(&iface, true)).await;
        assert_eq!((answer.status, answer.body), (StatusCode::CREATED, ok()));
        assert_eq!(api.data("/api/v1/vips").await, json!([vip("10.0.0.2", 443, 6)]));
        assert_eq!(api.data("/api/v1/utils/mac").await, json!({"mac": "02:00:00:00:00:aa"}));
        let answer = api.call("POST", "/api/v1/lb/close").await;
        assert_eq!((answer.status, answer.body), (StatusCode::OK, ok()));
        assert_eq!(xdp_prog_id(&iface), None);
        assert!(!pins.exists() && !state_file.exists());

        // With the state file gone, the pinned maps' layout is unknown: they are not
        // adopted. Fresh maps (of the sizes asked for) replace them, and the new program
        // replaces the old one on the same link.
        let answer = api.send("POST", "/api/v1/lb/create", create_body(&iface, false)).await;
        assert_eq!(answer.status, StatusCode::CREATED);
        let link_before = link_id(&pins);
        assert_eq!(api.call("POST", "/api/v1/lb/close").await.status, StatusCode::OK);
        std::fs::remove_file(&state_file).unwrap();
        let mut bigger = create_body(&iface, true);
        bigger["max_vips"] = json!(8);
        let answer = api.send("POST", "/api/v1/lb/create", bigger).await;
        assert_eq!((answer.status, answer.body), (StatusCode::CREATED, ok()));
        assert_eq!(link_id(&pins), link_before, "the same link");
        assert_eq!(api.data("/api/v1/stats/bpf-map?map_name=weir_vips").await["max_entries"], json!(8));
        assert!(!set_aside_dir(&pins).exists());
        assert_eq!(
            api.data("/api/v1/lb/status").await,
            json!({"initialized": true, "ready": true, "programs": {"balancer": format!("weir_balancer, built into weir-agent {}", env!("CARGO_PKG_VERSION")), "healthcheck": null}, "map_memory_bytes": map_memory(&api)})
        );

        // Attached is what the kernel says: with the interface gone, the balancer is not
        // ready any more. Closing with cleanup still removes everything.
        ip(&["link", "del", &iface]);
        assert_eq!(
            api.data("/api/v1/lb/status").await,
            json!({"initialized": true, "ready": false, "programs": {"balancer": format!("weir_balancer, built into weir-agent {}", env!("CARGO_PKG_VERSION")), "healthcheck": null}, "map_memory_bytes": map_memory(&api)})
        );
        let ready = api.call("GET", "/health/ready").await;
        assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(ready.body["data"], json!({"ready": false, "status": "not_ready", "reason": "not_attached"}));
        assert_eq!(ready.body["error"]["code"], "LB_NOT_INITIALIZED");
        let answer = api.call("POST", "/api/v1/lb/attach-bpf-progs").await;
        assert_eq!(
            (answer.status, &answer.body["error"]["code"]),
            (StatusCode::INTERNAL_SERVER_ERROR, &json!("INTERNAL_ERROR"))
        );
        assert_eq!(api.call("POST", "/api/v1/lb/close").await.status, StatusCode::OK);
        assert!(!pins.exists() && !state_file.exists());
    });
}

/// Sets or clears the immutable attribute of `dir` (FS_IOC_SETFLAGS, as
/// `chattr +i`): nothing can be created in or removed from it, even by root.
fn set_immutable(dir: &Path, on: bool) {
    use std::os::fd::AsRawFd;
    const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;
    const FS_IOC_SETFLAGS: libc::c_ulong = 0x4008_6602;
    const FS_IMMUTABLE_FL: libc::c_long = 0x10;
    let file = std::fs::File::open(dir).expect("open the directory");
    let mut flags: libc::c_long = 0;
    // SAFETY: both ioctls read or write one `long` at a pointer valid for the call.
    unsafe {
        assert_eq!(libc::ioctl(file.as_raw_fd(), FS_IOC_GETFLAGS, &mut flags), 0, "FS_IOC_GETFLAGS");
        flags = if on { flags | FS_IMMUTABLE_FL } else { flags & !FS_IMMUTABLE_FL };
        assert_eq!(libc::ioctl(file.as_raw_fd(), FS_IOC_SETFLAGS, &flags), 0, "FS_IOC_SETFLAGS");
    }
}

/// A reload that fails once the replacement is half built (here: its state
/// file cannot be written) changes nothing: the live program stays attached,
/// the pins and the state file stay, and the next reload (or restart) adopts
/// them with every flow.
#[test]
fn failed_reload_keeps_the_pinned_datapath() {
    if skip_without_root("failed_reload_keeps_the_pinned_datapath") {
        return;
    }
    in_private_netns(|iface| async move {
        let (pins, state_file) = pin_paths(&iface);
        let state_dir = state_file.parent().unwrap().to_owned();
        let _cleanup = Leftovers(vec![pins.clone(), state_file.clone()]);
        let api = Api::new();
        let answer = api.send("POST", "/api/v1/lb/create", create_body(&iface, true)).await;
        assert_eq!((answer.status, answer.body), (StatusCode::CREATED, ok()));
        api.add_vip("10.0.0.1", 80, 6, 0).await;
        api.add_real(vip("10.0.0.1", 80, 6), "10.1.0.1", 1).await;
        open_connection(&api).await;
        let prog = xdp_prog_id(&iface).expect("attached");
        let pinned = |dir: &Path| {
            let mut names: Vec<String> =
                std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
            names.sort();
            names
        };
        let pins_before = pinned(&pins);
        let state_before = std::fs::read(&state_file).unwrap();

        set_immutable(&state_dir, true);
        let answer = api.call("POST", "/api/v1/lb/reload").await;
        set_immutable(&state_dir, false);
        assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", answer.body);
        assert_eq!(answer.body["error"]["code"], json!("INTERNAL_ERROR"), "{}", answer.body);

        // Nothing changed: the same program on the link, every pin, the same state.
        assert_eq!(xdp_prog_id(&iface), Some(prog));
        assert_eq!(pinned(&pins), pins_before);
        assert_eq!(std::fs::read(&state_file).unwrap(), state_before);
        assert_eq!(api.data("/api/v1/vips").await, json!([vip("10.0.0.1", 80, 6)]));
        assert_eq!(api.data("/api/v1/stats/bpf-map?map_name=weir_conns").await["current_entries"], json!(1));

        // The next reload adopts it all.
        let answer = api.call("POST", "/api/v1/lb/reload").await;
        assert_eq!((answer.status, answer.body), (StatusCode::OK, ok()));
        assert_ne!(xdp_prog_id(&iface), Some(prog));
        assert_eq!(api.data("/api/v1/stats/bpf-map?map_name=weir_conns").await["current_entries"], json!(1));
        assert_eq!(api.call("POST", "/api/v1/lb/close").await.status, StatusCode::OK);
        assert!(!pins.exists() && !state_file.exists());
    });
}

/// An interface name becomes a path under the pin root and the state
/// directory: one that is not a valid interface name of this namespace is
/// refused (400, naming it) before anything touches the filesystem.
#[test]
fn create_refuses_interface_names_that_are_not_interfaces() {
    if skip_without_root("create_refuses_interface_names_that_are_not_interfaces") {
        return;
    }
    in_private_netns(|iface| async move {
        let netns = pin::netns_cookie().expect("the namespace's cookie");
        let netns_pins = pin::netns_dir(Path::new(pin::DEFAULT_PIN_ROOT), netns);
        let escape = format!("/tmp/weir-escape-{}", std::process::id());
        let _cleanup = Leftovers(vec![escape.clone().into(), netns_pins.clone()]);
        let cases = [
            (format!("../../../..{escape}"), format!("\"../../../..{escape}\" is not a valid interface name")),
            (format!("../weir/{iface}"), format!("\"../weir/{iface}\" is not a valid interface name")),
            ("..".to_owned(), "\"..\" is not a valid interface name".to_owned()),
            ("eth0:1".to_owned(), "\"eth0:1\" is not a valid interface name".to_owned()),
            ("sixteen-chars-xx".to_owned(), "\"sixteen-chars-xx\" is not a valid interface name".to_owned()),
            ("nosuch0".to_owned(), "nosuch0 does not exist in this network namespace".to_owned()),
        ];
        let api = Api::new();
        for (name, message) in cases {
            let mut body = create_body(&iface, true);
            body["main_interface"] = json!(name);
            let answer = api.send("POST", "/api/v1/lb/create", body).await;
            assert_eq!(
                (answer.status, answer.body),
                (
                    StatusCode::BAD_REQUEST,
                    json!({"success": false, "error": {"code": "INVALID_REQUEST", "message":
                        format!("invalid main_interface: {message}")}})
                ),
                "{name}"
            );
            assert!(!Path::new(&escape).exists(), "{name}: created {escape}");
            assert!(!netns_pins.exists(), "{name}: created {}", netns_pins.display());
            assert_eq!(api.data("/api/v1/lb/status").await["initialized"], json!(false), "{name}");
        }
    });
}

/// A datapath pinned with another map layout (a state file of an earlier
/// release: no `layout`) is taken over, not adopted: its VIPs and reals are
/// kept, its maps are fresh, and the new program replaces the old one on the
/// same link. A take-over that fails puts the old datapath back as it was.
#[test]
fn a_datapath_of_another_layout_is_taken_over_on_its_link() {
    if skip_without_root("a_datapath_of_another_layout_is_taken_over_on_its_link") {
        return;
    }
    in_private_netns(|iface| async move {
        let (pins, state_file) = pin_paths(&iface);
        let state_dir = state_file.parent().unwrap().to_owned();
        let _cleanup = Leftovers(vec![pins.clone(), state_file.clone(), set_aside_dir(&pins)]);
        let api = Api::new();
        let answer = api.send("POST", "/api/v1/lb/create", create_body(&iface, false)).await;
        assert_eq!((answer.status, answer.body), (StatusCode::CREATED, ok()));
        api.add_vip("10.0.0.1", 80, 6, 0).await;
        api.add_real(vip("10.0.0.1", 80, 6), "10.1.0.1", 1).await;
        open_connection(&api).await;
        assert_eq!(api.call("POST", "/api/v1/lb/close").await.status, StatusCode::OK);
        let (link, prog) = (link_id(&pins), xdp_prog_id(&iface).expect("left attached"));
        // What an earlier release saved: no layout.
        let mut saved: Value = serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
        assert_eq!(saved["layout"], json!(weir_ebpf::abi::PIN_LAYOUT));
        saved.as_object_mut().unwrap().remove("layout");
        let old_state = serde_json::to_vec_pretty(&saved).unwrap();
        std::fs::write(&state_file, &old_state).unwrap();
        let pinned = std::fs::read_dir(&pins).unwrap().count();

        // A take-over that fails (its state file cannot be written) changes nothing.
        set_immutable(&state_dir, true);
        let answer = api.send("POST", "/api/v1/lb/create", create_body(&iface, false)).await;
        set_immutable(&state_dir, false);
        assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", answer.body);
        assert_eq!((link_id(&pins), xdp_prog_id(&iface)), (link, Some(prog)));
        assert_eq!(std::fs::read_dir(&pins).unwrap().count(), pinned);
        assert!(!set_aside_dir(&pins).exists());
        assert_eq!(std::fs::read(&state_file).unwrap(), old_state);

        // The take-over: the same link, a new program, fresh maps, the same VIPs and reals.
        let answer = api.send("POST", "/api/v1/lb/create", create_body(&iface, false)).await;
        assert_eq!((answer.status, answer.body), (StatusCode::CREATED, ok()));
        assert_eq!(link_id(&pins), link);
        assert_ne!(xdp_prog_id(&iface), Some(prog));
        assert!(!set_aside_dir(&pins).exists());
        assert_eq!(api.data("/api/v1/vips").await, json!([vip("10.0.0.1", 80, 6)]));
        assert_eq!(api.data("/api/v1/reals/index?address=10.1.0.1").await, json!({"index": 1}));
        assert_eq!(api.data("/api/v1/stats/bpf-map?map_name=weir_conns").await["current_entries"], json!(0));
        open_connection(&api).await;
        let saved: Value = serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
        assert_eq!(saved["layout"], json!(weir_ebpf::abi::PIN_LAYOUT));

        // Taken over, it is adopted as any other: the connection stays.
        assert_eq!(api.call("POST", "/api/v1/lb/close").await.status, StatusCode::OK);
        let answer = api.send("POST", "/api/v1/lb/create", create_body(&iface, true)).await;
        assert_eq!((answer.status, answer.body), (StatusCode::CREATED, ok()));
        assert_eq!(api.data("/api/v1/stats/bpf-map?map_name=weir_conns").await["current_entries"], json!(1));
        assert_eq!(api.call("POST", "/api/v1/lb/close").await.status, StatusCode::OK);
        assert!(!pins.exists() && !state_file.exists());
    });
}
