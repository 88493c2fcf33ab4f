//! `weir-agent decap` as a user runs it: the binary itself, in a network
//! namespace entered with `nsenter --net` (which keeps the host's bpffs),
//! attaching, staying attached after it exits, and detaching with --remove.

use std::process::Command;

use weir_agent::dataplane::pin;

const BIN: &str = env!("CARGO_BIN_EXE_weir-agent");

/// A namespace with a veth pair and a pin root, both removed on drop (also
/// when an assertion fails half way).
struct Netns(String, String);

impl Netns {
    fn new() -> Self {
        let name = format!("weir-cli-{}", std::process::id());
        run("ip", &["netns", "add", &name]);
        let ns = Netns(name, format!("/sys/fs/bpf/weir-cli-test-{}", std::process::id()));
        ns.ip(&["link", "add", "wc0", "type", "veth", "peer", "name", "wc1"]);
        ns.ip(&["link", "set", "wc0", "up"]);
        ns.ip(&["link", "set", "wc1", "up"]);
        ns
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.0];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// The decap pin directory of `iface` in this namespace (pins are keyed
    /// by the namespace's cookie, read from inside it).
    fn decap_dir(&self, iface: &str) -> std::path::PathBuf {
        use std::os::fd::AsFd;
        let fd = std::fs::File::open(format!("/run/netns/{}", self.0)).expect("open the netns");
        let netns = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    nix::sched::setns(fd.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                    pin::netns_cookie().expect("the namespace's cookie")
                })
                .join()
                .expect("the cookie thread")
        });
        pin::decap_dir(std::path::Path::new(&self.1), netns, iface)
    }

    /// Runs the agent in the namespace's network stack only.
    fn agent(&self, args: &[&str]) -> std::process::Output {
        let net = format!("--net=/run/netns/{}", self.0);
        let mut all = vec![net.as_str(), BIN];
        all.extend_from_slice(args);
        Command::new("nsenter").args(&all).output().expect("run nsenter")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.0]).status();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn decap_attaches_stays_and_removes() {
    if weir_test_support::skip_unless_root("decap_attaches_stays_and_removes") {
        return;
    }
    let ns = Netns::new();
    let pin_root = ns.1.clone();

    let out = ns.agent(&["decap", "--iface", "wc0", "--pin-root", &pin_root]);
    assert!(out.status.success(), "attach: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "attached the decap program to wc0 (Driver mode); remove with --remove"
    );
    // The command has exited; the program is still there, in driver mode.
    let link = ns.ip(&["-d", "link", "show", "wc0"]);
    assert!(link.contains("xdp") && link.contains("name weir_decap"), "not attached after exit: {link}");
    assert!(ns.decap_dir("wc0").join("link").exists());

    let out = ns.agent(&["decap", "--iface", "wc0", "--remove", "--pin-root", &pin_root]);
    assert!(out.status.success(), "remove: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "detached the decap program from wc0");
    // The kernel frees the link shortly after its last pin goes.
    let detached = (0..50).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        !ns.ip(&["-d", "link", "show", "wc0"]).contains("weir_decap")
    });
    assert!(detached, "still attached after --remove");

    // Removing again, or attaching to an interface that does not exist, is a clear error.
    let out = ns.agent(&["decap", "--iface", "wc0", "--remove", "--pin-root", &pin_root]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wc0"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = ns.agent(&["decap", "--iface", "nope0", "--pin-root", &pin_root]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nope0 does not exist"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
