//! bpffs: mounting it when it is missing, and where weir pins its objects.
//!
//! Layout under the pin root (default `/sys/fs/bpf/weir`), per network
//! namespace: `<netns>` is `netns-<cookie>`, the namespace's cookie
//! (SO_NETNS_COOKIE, 64 bits, never reused within a boot — and pins do not
//! outlive a boot), in decimal:
//! - `<netns>/<iface>/`       one balancer: its maps by name, `link` (the XDP attachment),
//!   and with `enable_hc` the healthcheck program's maps by name and `hc_link` (its TCX attachment);
//! - `<netns>/decap/<iface>/` one decapsulation program: `weir_decaps`, `link`.
//!
//! An interface is named by its namespace and its name: agents in several
//! namespaces sharing one bpffs (pods, or hostNetwork agents next to
//! namespaced reals) each have an `eth0`, and must never share or adopt each
//! other's pins. The state file beside a balancer is keyed the same way
//! (`<state_dir>/<netns>/<iface>.json`, see [`state_file`]).
//!
//! A pinned link keeps its program attached after the process that attached it
//! exits; a restarted agent opens the link and atomically swaps in its
//! program — but only after [`link_attached_to`] says that the link is
//! attached to this namespace's interface of that name (not defunct, not
//! another interface's). Pins of the layout before namespaces (`<iface>/`,
//! `decap/<iface>/`) are not adopted: see docs/upgrading.md.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Where weir pins everything unless told otherwise.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/weir";

/// Makes sure `root` is on a bpffs, mounting one at its bpffs ancestor
/// (`/sys/fs/bpf`) when nothing is mounted there, then creates `root`.
pub fn ensure_bpffs(root: &Path) -> Result<()> {
    let mount_point = Path::new("/sys/fs/bpf");
    if root.starts_with(mount_point) && !is_bpffs(mount_point) {
        std::fs::create_dir_all(mount_point)
            .map_err(|e| Error::system(format!("create {}", mount_point.display()), e))?;
        nix::mount::mount(Some("bpffs"), mount_point, Some("bpf"), nix::mount::MsFlags::empty(), None::<&str>)
            .map_err(|e| Error::system("mount bpffs at /sys/fs/bpf", e.into()))?;
        // Pins live as long as the mount. A process in a private mount
        // namespace (`ip netns exec` makes one) mounts a bpffs that dies with
        // it, and with it whatever it pinned.
        tracing::warn!(
            "bpffs was not mounted at /sys/fs/bpf; mounted it. If this process runs in a private mount \
             namespace (e.g. under `ip netns exec`), its pins vanish when it exits: enter only the network \
             namespace instead (`nsenter --net=/run/netns/NAME`)"
        );
    }
    std::fs::create_dir_all(root).map_err(|e| Error::system(format!("create {}", root.display()), e))?;
    if !is_bpffs(root) {
        return Err(Error::invalid("pin_root", format!("{} is not on a bpf filesystem", root.display())));
    }
    Ok(())
}

fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
}

/// The cookie of the calling thread's network namespace: a 64-bit id the
/// kernel never reuses within a boot (SO_NETNS_COOKIE on a socket there).
pub fn netns_cookie() -> Result<u64> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    /// SO_NETNS_COOKIE (asm-generic/socket.h), Linux 5.14.
    const SO_NETNS_COOKIE: libc::c_int = 71;
    let op = "read the network namespace's cookie (SO_NETNS_COOKIE, Linux 5.14)";
    // SAFETY: socket() has no memory preconditions.
    let raw = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(Error::system(op, std::io::Error::last_os_error()));
    }
    // SAFETY: socket() returned a new descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut cookie = 0u64;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `cookie` and `len` are valid for writes of `len` bytes and outlive the call.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(Error::system(op, std::io::Error::last_os_error()));
    }
    Ok(cookie)
}

/// The directory of everything pinned for network namespace `netns` (a
/// [`netns_cookie`]).
pub fn netns_dir(root: &Path, netns: u64) -> PathBuf {
    root.join(format!("netns-{netns}"))
}

/// The pin directory of the balancer on `iface` of network namespace `netns`.
pub fn balancer_dir(root: &Path, netns: u64, iface: &str) -> PathBuf {
    netns_dir(root, netns).join(iface)
}

/// The pin directory of the decapsulation program on `iface` of network
/// namespace `netns`.
pub fn decap_dir(root: &Path, netns: u64, iface: &str) -> PathBuf {
    netns_dir(root, netns).join("decap").join(iface)
}

/// The balancer's state file for `iface` of network namespace `netns`.
pub fn state_file(state_dir: &Path, netns: u64, iface: &str) -> PathBuf {
    state_dir.join(format!("netns-{netns}")).join(format!("{iface}.json"))
}

/// Refuses what the kernel would refuse as an interface name (its
/// dev_valid_name): an interface name becomes a path component under the pin
/// root and the state directory, and this keeps it from naming any other
/// directory (no `/`, no `.` or `..`). `field` names the request field.
pub fn check_iface_name(field: &'static str, iface: &str) -> Result<()> {
    let valid = !iface.is_empty()
        && iface.len() < libc::IFNAMSIZ
        && iface != "."
        && iface != ".."
        && !iface.chars().any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace());
    if valid {
        Ok(())
    } else {
        Err(Error::invalid(field, format!("{iface:?} is not a valid interface name")))
    }
}

/// [`check_iface_name`], and the interface exists in the calling thread's
/// network namespace: what is checked before anything is pinned for it.
pub fn check_interface(field: &'static str, iface: &str) -> Result<()> {
    check_iface_name(field, iface)?;
    if if_index(iface) == 0 {
        return Err(Error::invalid(field, format!("{iface} does not exist in this network namespace")));
    }
    Ok(())
}

/// The index of `iface` in the calling thread's network namespace; 0 when it
/// does not exist there.
pub fn if_index(iface: &str) -> u32 {
    match std::ffi::CString::new(iface) {
        // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
        Ok(name) => unsafe { libc::if_nametoindex(name.as_ptr()) },
        Err(_) => 0,
    }
}

/// Whether the XDP link pinned at `link` may be adopted for `iface` of the
/// calling thread's network namespace: `None` when nothing is pinned there,
/// `Some(true)` when the link is attached to this namespace's `iface`,
/// `Some(false)` when it is defunct (its interface went away) or attached
/// to another interface (an interface of that name deleted and re-created
/// has a new index). The pin directory already names the namespace; the
/// index is what the link itself can tell (bpf_link_info has no netns).
pub fn link_attached_to(link: &Path, iface: &str) -> Result<Option<bool>> {
    match xdp_link_ifindex(link) {
        Ok(ifindex) => Ok(Some(ifindex != 0 && ifindex == if_index(iface))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::system(format!("read the XDP link {}", link.display()), e)),
    }
}

/// The file name of a pinned XDP link inside a pin directory.
pub const LINK: &str = "link";

/// A private pin directory for a load that must not share maps: aya pins
/// every `LIBBPF_PIN_BY_NAME` map (under `/sys/fs/bpf` when given no
/// directory), and maps found pinned are reused. Load with this directory,
/// then drop it: the pins go, and the maps live on through the loader's fds.
pub struct EphemeralPins {
    dir: PathBuf,
}

impl EphemeralPins {
    pub fn new() -> Result<Self> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = PathBuf::from(format!("/sys/fs/bpf/weir-private-{}-{n}", std::process::id()));
        ensure_bpffs(&dir)?;
        Ok(Self { dir })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for EphemeralPins {
    fn drop(&mut self) {
        // Removing a pin only drops the name; open fds keep each map alive.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The interface index a pinned XDP link is attached to; 0 once the link is
/// defunct (its interface went away, or it was detached). aya does not expose
/// the XDP part of the link's info, so this asks the kernel directly.
pub fn xdp_link_ifindex(link: &Path) -> std::io::Result<u32> {
    // BPF_LINK_TYPE_XDP (uapi bpf.h).
    link_ifindex(link, 6, "XDP")
}

/// [`xdp_link_ifindex`] for a pinned TCX link (the healthcheck program's).
pub fn tcx_link_ifindex(link: &Path) -> std::io::Result<u32> {
    // BPF_LINK_TYPE_TCX (uapi bpf.h); its info, like XDP's, starts with ifindex.
    link_ifindex(link, 11, "TCX")
}

fn link_ifindex(link: &Path, link_type: u32, kind: &str) -> std::io::Result<u32> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;

    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    // union bpf_attr, the members these two commands use.
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    #[repr(C)]
    struct InfoByFd {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let path = std::ffi::CString::new(link.as_os_str().as_bytes())?;
    let get = ObjGet { pathname: path.as_ptr() as u64, bpf_fd: 0, file_flags: 0 };
    // SAFETY: `get` is a valid bpf_attr prefix for BPF_OBJ_GET and outlives the call;
    // the kernel reads `size_of::<ObjGet>()` bytes of it.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET, &get as *const ObjGet, std::mem::size_of::<ObjGet>()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a new file descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // struct bpf_link_info: type, id, prog_id, then (8-byte aligned) the union whose
    // xdp and tcx members start with ifindex.
    let mut info = [0u8; 64];
    let mut attr =
        InfoByFd { bpf_fd: fd.as_raw_fd() as u32, info_len: info.len() as u32, info: info.as_mut_ptr() as u64 };
    // SAFETY: `attr` points at `info`, which is `info_len` bytes long and outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoByFd,
            std::mem::size_of::<InfoByFd>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let word = |at: usize| u32::from_ne_bytes(info[at..at + 4].try_into().expect("4 bytes"));
    if word(0) != link_type {
        return Err(std::io::Error::other(format!("{} is not a {kind} link", link.display())));
    }
    Ok(word(16))
}

/// The maps of a pinned balancer set aside while fresh ones are loaded in
/// their place: how an agent takes over a datapath whose maps it must not
/// adopt (laid out for another program, see `abi::PIN_LAYOUT`, or of an
/// unknown layout: no state file). The link stays pinned where it is, so the
/// new program replaces the old one on the same attachment and forwarding
/// never stops; only the maps (connections, counters) start afresh.
///
/// Dropped before [`SetAside::commit`], it puts everything back: the fresh
/// pins go, the old ones return, and the state file is rewritten as it was,
/// so a failed take-over leaves the old datapath as it found it.
pub struct SetAside {
    dir: PathBuf,
    aside: PathBuf,
    state_file: Option<(PathBuf, Option<Vec<u8>>)>,
    committed: bool,
}

impl SetAside {
    /// Moves every pin of `dir` but its link to a sibling directory, and
    /// remembers `state_file`'s contents.
    pub fn maps(dir: &Path, state_file: Option<&Path>) -> Result<Self> {
        // `:` is in no interface name, so the sibling never is a balancer's.
        let mut name = dir.file_name().unwrap_or_default().to_owned();
        name.push(":set-aside");
        let aside = dir.with_file_name(name);
        let state_file = match state_file {
            Some(path) => match std::fs::read(path) {
                Ok(bytes) => Some((path.to_owned(), Some(bytes))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some((path.to_owned(), None)),
                Err(e) => return Err(Error::system(format!("read {}", path.display()), e)),
            },
            None => None,
        };
        // A set-aside left by a crash mid-take-over holds nothing in use.
        let _ = std::fs::remove_dir_all(&aside);
        std::fs::create_dir(&aside).map_err(|e| Error::system(format!("create {}", aside.display()), e))?;
        let set_aside = Self { dir: dir.to_owned(), aside, state_file, committed: false };
        move_pins(&set_aside.dir, &set_aside.aside)?;
        Ok(set_aside)
    }

    /// The take-over succeeded: the old maps' pins go (the maps with them,
    /// once no program holds them).
    pub fn commit(mut self) {
        self.committed = true;
        let _ = std::fs::remove_dir_all(&self.aside);
    }
}

impl Drop for SetAside {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        // Only the fresh pins that stand in for a set-aside one go: a pin
        // never moved (setting aside failed midway) is still the old one.
        if let Ok(entries) = std::fs::read_dir(&self.aside) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(self.dir.join(entry.file_name()));
            }
        }
        if let Err(e) = move_pins(&self.aside, &self.dir) {
            tracing::error!(error = %e, aside = %self.aside.display(), "could not put the set-aside pins back");
            return;
        }
        let _ = std::fs::remove_dir(&self.aside);
        match &self.state_file {
            Some((path, Some(bytes))) => {
                if let Err(e) = std::fs::write(path, bytes) {
                    tracing::error!(error = %e, file = %path.display(), "could not restore the state file");
                }
            }
            Some((path, None)) => {
                let _ = std::fs::remove_file(path);
            }
            None => {}
        }
    }
}

/// Renames every pin in `from` but the link into `to` (one bpffs: renames).
fn move_pins(from: &Path, to: &Path) -> Result<()> {
    let entries = std::fs::read_dir(from).map_err(|e| Error::system(format!("read {}", from.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::system(format!("read {}", from.display()), e))?;
        if entry.file_name() == LINK {
            continue;
        }
        let target = to.join(entry.file_name());
        std::fs::rename(entry.path(), &target)
            .map_err(|e| Error::system(format!("move {} to {}", entry.path().display(), target.display()), e))?;
    }
    Ok(())
}
