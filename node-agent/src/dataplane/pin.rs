//! bpffs: mounting it when it is missing, and where weir pins its objects.
//!
//! Layout under the pin root (default `/sys/fs/bpf/weir`):
//! - `<iface>/`       one balancer: its maps by name, `link` (the XDP attachment);
//! - `decap/<iface>/` one decapsulation program: `weir_decaps`, `link`.
//!
//! A pinned link keeps its program attached after the process that attached it
//! exits; a restarted agent opens the link and atomically swaps in its program.

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

/// The pin directory of the balancer on `iface`.
pub fn balancer_dir(root: &Path, iface: &str) -> PathBuf {
    root.join(iface)
}

/// The pin directory of the decapsulation program on `iface`.
pub fn decap_dir(root: &Path, iface: &str) -> PathBuf {
    root.join("decap").join(iface)
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
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;

    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    const BPF_LINK_TYPE_XDP: u32 = 6;
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
    // xdp member starts with ifindex.
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
    if word(0) != BPF_LINK_TYPE_XDP {
        return Err(std::io::Error::other(format!("{} is not an XDP link", link.display())));
    }
    Ok(word(16))
}
