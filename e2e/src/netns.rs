//! One named network namespace, created with `ip netns add` and deleted on drop.
//!
//! Rust code enters a namespace per *thread* with `setns(2)` ([`Netns::run`],
//! [`Netns::spawn`]) instead of `ip netns exec`: the latter also unshares the
//! mount namespace and remounts `/sys`, which hides bpffs (`/sys/fs/bpf`) and
//! with it every pinned BPF object. A socket keeps the namespace it was created
//! in, so a socket made inside [`Netns::run`] can be used from any thread later.
//!
//! Names are `weir-<pid>-<n>-<label>`: unique per process through a counter,
//! and the pid lets [`stale`] recognise leftovers of crashed runs.
//! Interface names (15 bytes at most) are chosen separately by the caller.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex};
use std::thread::JoinHandle;

use anyhow::{anyhow, bail, Context, Result};
use nix::sched::{setns, CloneFlags};

/// Prefix of every namespace this crate creates.
pub const NETNS_PREFIX: &str = "weir-";

/// Where `ip netns` keeps its namespace handles (bind mounts of `ns/net`).
pub const NETNS_DIR: &str = "/run/netns";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// `ip netns add` mounts `/run/netns` on first use; serialising our own calls
/// keeps parallel tests of one process from racing on that mount.
static ADD_LOCK: Mutex<()> = Mutex::new(());

/// A named network namespace, deleted (with any process still inside it) on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `weir-<pid>-<n>-<label>`. Keep `label` short and free of `/`.
    pub fn new(label: &str) -> Result<Netns> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{NETNS_PREFIX}{}-{n}-{label}", std::process::id());
        let _guard = ADD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(err) = run_cmd(Command::new("ip").args(["netns", "add", &name])) {
            // The name holds our pid and our own counter, so an existing one can
            // only be left over by a crashed process that had the same pid.
            if !Path::new(NETNS_DIR).join(&name).exists() {
                return Err(err);
            }
            delete(&name)?;
            run_cmd(Command::new("ip").args(["netns", "add", &name]))?;
        }
        Ok(Netns { name })
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`: open it to get a namespace fd.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    fn open(&self) -> Result<File> {
        File::open(self.path()).with_context(|| format!("open {}", self.path().display()))
    }

    /// Runs `f` on a fresh thread inside the namespace and returns its result.
    /// A panic in `f` is resumed on the caller's thread. Panics if the namespace
    /// cannot be entered (it was created by us, so that is a broken host).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let fd = self.open().unwrap_or_else(|e| panic!("{e:#}"));
        let name = &self.name;
        std::thread::scope(|scope| {
            let thread = std::thread::Builder::new()
                .name(thread_name(name))
                .spawn_scoped(scope, move || {
                    enter(&fd, name).unwrap_or_else(|e| panic!("{e:#}"));
                    drop(fd);
                    f()
                })
                .expect("spawn a thread");
            match thread.join() {
                Ok(value) => value,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Starts `f` on a new thread inside the namespace, for long-running work
    /// (servers). Returns once the thread is inside the namespace.
    pub fn spawn<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<JoinHandle<T>> {
        let fd = self.open()?;
        let name = self.name.clone();
        let (entered_tx, entered_rx) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name(thread_name(&name))
            .spawn(move || {
                let entered = enter(&fd, &name);
                drop(fd);
                let failed = entered.is_err();
                let _ = entered_tx.send(entered);
                if failed {
                    // The error went to the caller; end without running `f` (and
                    // without the panic hook's noise: nobody joins this thread).
                    std::panic::resume_unwind(Box::new("could not enter the namespace"));
                }
                f()
            })
            .context("spawn a thread")?;
        entered_rx.recv().map_err(|_| anyhow!("thread for netns {} died before entering it", self.name))??;
        Ok(thread)
    }

    /// `ip -n <name> <args>`; returns stdout, or an error with the command and
    /// its stderr.
    pub fn ip<I>(&self, args: I) -> Result<String>
    where
        I: IntoIterator,
        I::Item: AsRef<OsStr>,
    {
        run_cmd(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Runs several `ip` commands (one per line, without the leading `ip`) in one
    /// `ip -n <name> -batch -`: one process instead of one per command.
    pub fn ip_batch(&self, lines: &[String]) -> Result<()> {
        let script = lines.join("\n") + "\n";
        let mut child = Command::new("ip")
            .args(["-n", &self.name, "-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn ip -batch")?;
        child.stdin.take().expect("stdin is piped").write_all(script.as_bytes()).context("write to ip -batch")?;
        let out = child.wait_with_output().context("wait for ip -batch")?;
        if !out.status.success() {
            bail!(
                "`ip -n {} -batch -` failed ({}): {}\nbatch was:\n{}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                script.trim_end()
            );
        }
        Ok(())
    }

    /// `ip netns exec <name> <program> <args>`, for external tools (ethtool,
    /// ping). Not for anything that needs bpffs: see the module doc.
    pub fn exec<I>(&self, program: &str, args: I) -> Result<String>
    where
        I: IntoIterator,
        I::Item: AsRef<OsStr>,
    {
        run_cmd(Command::new("ip").args(["netns", "exec", &self.name, program]).args(args))
    }

    /// `ip netns exec <name> sh -c <cmd>`.
    pub fn sh(&self, cmd: &str) -> Result<String> {
        self.exec("sh", ["-c", cmd])
    }

    /// Writes sysctls inside the namespace. Keys are dotted
    /// (`net.ipv4.conf.all.rp_filter`), so interface names must not contain dots.
    /// `/proc/sys/net` shows the namespace of the thread that opens it.
    pub fn sysctl(&self, settings: &[(String, String)]) -> Result<()> {
        self.run(|| {
            for (key, value) in settings {
                let path = Path::new("/proc/sys").join(key.replace('.', "/"));
                std::fs::write(&path, value).with_context(|| format!("sysctl {key}={value} in netns {}", self.name))?;
            }
            Ok(())
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = delete(&self.name) {
            eprintln!("weir-e2e: deleting netns {}: {e:#}", self.name);
        }
    }
}

/// The names in `/run/netns` (empty when it does not exist).
pub fn list() -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).context(format!("read {NETNS_DIR}")),
    };
    let mut names = Vec::new();
    for entry in entries {
        names.push(entry.context("read /run/netns")?.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// The pid in a name made by [`Netns::new`], or `None` for anyone else's names.
pub fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NETNS_PREFIX)?;
    let (pid, rest) = rest.split_once('-')?;
    let (n, _label) = rest.split_once('-')?;
    n.parse::<u32>().ok()?;
    pid.parse().ok()
}

/// Whether a process with this pid exists.
pub fn pid_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Namespaces made by [`Netns::new`] in processes that no longer exist.
pub fn stale() -> Result<Vec<String>> {
    Ok(list()?.into_iter().filter(|name| owner_pid(name).is_some_and(|pid| !pid_alive(pid))).collect())
}

/// Kills the processes inside namespace `name` (never this one), then deletes it.
pub fn delete(name: &str) -> Result<()> {
    let pids = run_cmd(Command::new("ip").args(["netns", "pids", name])).unwrap_or_default();
    let me = std::process::id();
    for pid in pids.split_whitespace().filter_map(|p| p.parse::<u32>().ok()) {
        if pid != me {
            // SAFETY: kill has no memory-safety preconditions; the pid comes
            // from `ip netns pids`, i.e. a process inside this namespace.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
    run_cmd(Command::new("ip").args(["netns", "del", name]))?;
    Ok(())
}

fn enter(fd: &File, name: &str) -> Result<()> {
    setns(fd.as_fd(), CloneFlags::CLONE_NEWNET).with_context(|| format!("setns into netns {name}"))
}

/// Thread names are cut at 15 bytes: keep the distinctive tail of the name.
fn thread_name(ns: &str) -> String {
    let tail: String = ns.chars().rev().take(15).collect();
    tail.chars().rev().collect()
}

/// Runs a command; its stdout on success, else an error naming the command, its
/// exit status and its stderr.
pub(crate) fn run_cmd(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("spawn {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_parses_only_our_names() {
        assert_eq!(owner_pid("weir-1234-0-router"), Some(1234));
        assert_eq!(owner_pid("weir-1234-17-real3"), Some(1234));
        assert_eq!(owner_pid("weir-demo-client"), None);
        assert_eq!(owner_pid("weir-1234-router"), None);
        assert_eq!(owner_pid("other-1234-0-x"), None);
    }

    #[test]
    fn thread_names_fit() {
        assert_eq!(thread_name("weir-123456-78-real10"), "23456-78-real10");
        assert!(thread_name("a-very-long-namespace-name").len() <= 15);
    }
}
