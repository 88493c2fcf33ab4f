//! The real-side decapsulation program (`decap.bpf.c`): attaching it to an
//! interface so that it outlives the agent, detaching it, reading its counters.
//!
//! An attachment lives in [`pin::decap_dir`]`(pin_root, netns, iface)` (`netns`
//! the calling thread's network namespace, [`pin::netns_cookie`]): the XDP link
//! (`link`) and the counter map (`weir_decaps`). The pinned link keeps the
//! program attached after the [`Ebpf`] that attached it is dropped and after the
//! agent exits. Attaching again swaps the new program into that same link
//! (BPF_LINK_UPDATE), so an agent restart or upgrade never leaves the interface
//! without decapsulation, not even for one packet.
//!
//! Everything here acts in the calling thread's network namespace: interface
//! names are resolved, links created and pins found wherever the thread
//! stands. Two namespaces' `eth0`s never share a pin directory, and a pinned
//! link is adopted only while it is attached to this namespace's interface.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use aya::maps::{Map, MapData, PerCpuArray};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::xdp::XdpLink;
use aya::programs::{ProgramError, Xdp};
use aya::sys::SyscallError;
use aya::{Ebpf, EbpfLoader};
use weir_ebpf::abi::{self, DecapStat, LbCounter};
use weir_ebpf::{DECAP, DECAP_PROGRAM};

use super::config::AttachMode;
use super::pin;
use crate::{Error, Result};

/// Attaches the decap program to `iface` and pins its link under
/// [`pin::decap_dir`]`(pin_root, netns, iface)`, so that it stays attached after this
/// process exits. The counter map `weir_decaps` is pinned in the same directory
/// and survives re-attachment, counters included.
///
/// Idempotent: when a link is already pinned there, the new program atomically
/// replaces the old one inside that link (which keeps the mode it was created
/// with; `mode` applies to new links only). A pinned link that is not
/// attached to this namespace's `iface` (its interface is gone, or was
/// re-created) is replaced by a new link.
///
/// Errors: [`Error::InvalidRequest`] naming `iface` when it is not a valid
/// interface name or no such interface exists in the caller's network namespace.
pub fn attach(iface: &str, mode: AttachMode, pin_root: &Path) -> Result<()> {
    pin::check_interface("interface", iface)?;
    pin::ensure_bpffs(pin_root)?;
    let dir = pin::decap_dir(pin_root, pin::netns_cookie()?, iface);
    std::fs::create_dir_all(&dir).map_err(|e| Error::system(format!("create {}", dir.display()), e))?;

    let mut ebpf = load(&dir)?;
    let program = program_mut(&mut ebpf)?;
    let link_path = dir.join(pin::LINK);
    // Only a link attached to this interface is adopted; one that outlived
    // its interface (an interface of that name was deleted, maybe
    // re-created) can never carry this interface's traffic again.
    let ours = pin::link_attached_to(&link_path, iface)?;
    if ours == Some(true) {
        if let Some(pinned) = open_pinned_link(&link_path)? {
            if replace_program(program, pinned, &link_path)? {
                tracing::info!(iface, link = %link_path.display(), "decap program replaced in pinned link");
                return Ok(());
            }
        }
    }
    if ours.is_some() {
        tracing::warn!(iface, link = %link_path.display(), "pinned decap link is not attached to {iface}; attaching anew");
        remove_pin(&link_path)?;
    }
    attach_new_link(program, iface, mode, &link_path)?;
    tracing::info!(iface, ?mode, link = %link_path.display(), "decap program attached");
    Ok(())
}

/// Detaches the decap program from `iface`: removes its pinned link (the
/// program is detached once the last reference to the link is gone; the
/// agent keeps none), its pinned counter map and its pin directory.
///
/// The interface need not exist any more. Errors: [`Error::NotFound`] naming
/// the interface when nothing is pinned for it in this network namespace.
pub fn detach(iface: &str, pin_root: &Path) -> Result<()> {
    pin::check_iface_name("interface", iface)?;
    let dir = pin::decap_dir(pin_root, pin::netns_cookie()?, iface);
    if !dir.is_dir() {
        return Err(not_attached(iface));
    }
    let mut removed = false;
    for name in [pin::LINK, abi::map::DECAP_STATS] {
        removed |= remove_pin(&dir.join(name))?;
    }
    std::fs::remove_dir(&dir).map_err(|e| Error::system(format!("remove {}", dir.display()), e))?;
    // The namespace's decap/ and its own directory, once empty.
    for parent in dir.ancestors().skip(1).take(2) {
        let _ = std::fs::remove_dir(parent);
    }
    if !removed {
        return Err(not_attached(iface));
    }
    tracing::info!(iface, dir = %dir.display(), "decap program detached");
    Ok(())
}

/// Loads the decap program without attaching it, for BPF_PROG_TEST_RUN.
///
/// Nothing stays pinned: aya always pins a map declared `LIBBPF_PIN_BY_NAME`,
/// so the map is created in a private scratch directory on bpffs and unpinned
/// before this returns; the returned [`Ebpf`] holds the only reference to it.
pub fn load_unattached() -> Result<Ebpf> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let scratch = ScratchDir(PathBuf::from("/sys/fs/bpf").join(format!(
        "weir-decap-scratch-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )));
    pin::ensure_bpffs(&scratch.0)?;
    // A directory left by a crashed process with the same pid would lend us its map.
    remove_pin(&scratch.0.join(abi::map::DECAP_STATS))?;
    load(&scratch.0)
}

/// The decap counters of `iface` in this network namespace, summed over CPUs, indexed by
/// [`DecapStat`]: `[v4, v6, pass]`. Read from the pinned map, so they cover
/// every program that has been attached there since the first attach.
pub fn counters(iface: &str, pin_root: &Path) -> Result<[LbCounter; DecapStat::COUNT as usize]> {
    pin::check_iface_name("interface", iface)?;
    let path = pin::decap_dir(pin_root, pin::netns_cookie()?, iface).join(abi::map::DECAP_STATS);
    if !path.exists() {
        return Err(not_attached(iface));
    }
    let op = || format!("read {}", path.display());
    let data = MapData::from_pin(&path).map_err(|e| Error::bpf(op(), e))?;
    let map = Map::from_map_data(data).map_err(|e| Error::bpf(op(), e))?;
    let array: PerCpuArray<MapData, LbCounter> = PerCpuArray::try_from(map).map_err(|e| Error::bpf(op(), e))?;
    let mut out = [LbCounter::default(); DecapStat::COUNT as usize];
    for (index, total) in (0u32..).zip(out.iter_mut()) {
        for cpu in array.get(&index, 0).map_err(|e| Error::bpf(op(), e))?.iter() {
            total.v1 = total.v1.wrapping_add(cpu.v1);
            total.v2 = total.v2.wrapping_add(cpu.v2);
        }
    }
    Ok(out)
}

/// Loads the object with its maps pinned in (or reused from) `map_dir`, and
/// the program into the kernel (this is where the verifier runs).
fn load(map_dir: &Path) -> Result<Ebpf> {
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(map_dir)
        .load(DECAP)
        .map_err(|e| Error::bpf("load the decap object", e))?;
    program_mut(&mut ebpf)?.load().map_err(|e| Error::bpf(format!("load program {DECAP_PROGRAM}"), e))?;
    Ok(ebpf)
}

fn program_mut(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    ebpf.program_mut(DECAP_PROGRAM)
        .ok_or_else(|| Error::NotFound { what: format!("program {DECAP_PROGRAM} in the decap object") })?
        .try_into()
        .map_err(|e| Error::bpf(format!("program {DECAP_PROGRAM} as XDP"), e))
}

/// The link pinned at `path`, or `None` when nothing is pinned there.
fn open_pinned_link(path: &Path) -> Result<Option<PinnedLink>> {
    match PinnedLink::from_pin(path) {
        Ok(link) => Ok(Some(link)),
        Err(aya::programs::links::LinkError::SyscallError(SyscallError { io_error, .. }))
            if io_error.kind() == io::ErrorKind::NotFound =>
        {
            Ok(None)
        }
        Err(e) => Err(Error::bpf(format!("open pinned link {}", path.display()), e)),
    }
}

/// Swaps `program` into the pinned XDP link. The pin keeps the link; the file
/// descriptors opened here are closed on return.
///
/// Returns: `true` when replaced, `false` when the link is defunct (its
/// interface was deleted) and must be replaced by a new one.
fn replace_program(program: &mut Xdp, pinned: PinnedLink, path: &Path) -> Result<bool> {
    let link = XdpLink::try_from(FdLink::from(pinned))
        .map_err(|e| Error::bpf(format!("adopt {} as an XDP link", path.display()), e))?;
    match program.attach_to_link(link) {
        Ok(id) => {
            // Dropping the taken link closes our descriptor; the pin keeps it attached.
            let _link = program.take_link(id).map_err(|e| Error::bpf("take the replaced link", e))?;
            Ok(true)
        }
        // bpf_xdp_link_update(): "link might have been auto-released already".
        Err(ProgramError::SyscallError(SyscallError { io_error, .. }))
            if io_error.raw_os_error() == Some(libc::ENOLINK) =>
        {
            Ok(false)
        }
        Err(e) => Err(Error::bpf(format!("replace the program in {}", path.display()), e)),
    }
}

/// Attaches `program` to `iface` with a new bpf_link and pins the link at `path`.
fn attach_new_link(program: &mut Xdp, iface: &str, mode: AttachMode, path: &Path) -> Result<()> {
    let id = program.attach(iface, mode.xdp_mode()).map_err(|e| match e {
        ProgramError::UnknownInterface { .. } => {
            Error::invalid("interface", format!("{iface} does not exist in this network namespace"))
        }
        e => Error::bpf(format!("attach {DECAP_PROGRAM} to {iface} ({mode:?} mode)"), e),
    })?;
    // aya falls back to a netlink attachment when bpf_link_create fails with
    // EINVAL. Such an attachment cannot be pinned, and converting it into an
    // FdLink would drop it without detaching, so detach it here. aya 0.14 has
    // no public accessor for the link's kind; its Debug output names it.
    if format!("{id:?}").contains("NlLink") {
        let _ = program.detach(id);
        return Err(Error::bpf(
            format!("attach {DECAP_PROGRAM} to {iface}"),
            io::Error::other("the kernel refused a bpf_link for XDP; a netlink attachment cannot be pinned"),
        ));
    }
    let link = program.take_link(id).map_err(|e| Error::bpf("take the new link", e))?;
    let link = FdLink::try_from(link).map_err(|e| Error::bpf("the new XDP link as an fd link", e))?;
    // On failure the FdLink is dropped, which detaches the program: no
    // attachment without a pin.
    link.pin(path).map_err(|e| Error::bpf(format!("pin the link at {}", path.display()), e))?;
    Ok(())
}

/// Removes a pinned object. Returns whether there was one.
fn remove_pin(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::system(format!("remove {}", path.display()), e)),
    }
}

fn not_attached(iface: &str) -> Error {
    Error::NotFound { what: format!("decap program on interface {iface}") }
}

/// A scratch pin directory, removed (with the map pinned in it) when dropped.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0.join(abi::map::DECAP_STATS));
        let _ = std::fs::remove_dir(&self.0);
    }
}
