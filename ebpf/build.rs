//! Compiles the BPF programs in `bpf/` with clang-19 and leaves the objects in
//! OUT_DIR, where `src/lib.rs` embeds them.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Programs to build: `bpf/<name>.bpf.c` becomes `$OUT_DIR/<name>.bpf.o`.
const PROGRAMS: &[&str] = &["balancer", "decap", "healthcheck", "xdp_pass"];

fn main() {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let clang = std::env::var("WEIR_CLANG").unwrap_or_else(|_| "clang-19".to_owned());
    println!("cargo:rerun-if-env-changed=WEIR_CLANG");
    println!("cargo:rerun-if-changed=bpf");

    let multiarch = multiarch_include();
    abi_layout(&clang, &out_dir);
    for name in PROGRAMS {
        let src = Path::new("bpf").join(format!("{name}.bpf.c"));
        let obj = out_dir.join(format!("{name}.bpf.o"));
        let mut cmd = Command::new(&clang);
        cmd.args(["-O2", "-g", "-target", "bpf", "-mcpu=v3", "-Wall", "-Werror"])
            .arg("-Ibpf")
            .arg(format!("-I{multiarch}"))
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(&obj);
        let status = match cmd.status() {
            Ok(status) => status,
            Err(err) => panic!(
                "cannot run `{clang}` ({err}): the BPF programs need clang 19; \
                 install it with `apt-get install clang-19 libbpf-dev` (or set WEIR_CLANG)"
            ),
        };
        assert!(status.success(), "`{clang}` failed to compile {}", src.display());
    }
}

/// Builds and runs `bpf/abi_layout.c` on the host, writing the C side's layout
/// of `weir_abi.h` to `$OUT_DIR/abi_layout.rs` for the ABI tests.
fn abi_layout(clang: &str, out_dir: &Path) {
    let exe = out_dir.join("abi_layout");
    let status = Command::new(clang)
        .args(["-O0", "-Wall", "-Werror", "-Ibpf", "bpf/abi_layout.c", "-o"])
        .arg(&exe)
        .status()
        .unwrap_or_else(|err| panic!("cannot run `{clang}` ({err}): install clang-19"));
    assert!(status.success(), "`{clang}` failed to compile bpf/abi_layout.c");
    let out = Command::new(&exe).output().expect("run abi_layout");
    assert!(out.status.success(), "abi_layout failed");
    std::fs::write(out_dir.join("abi_layout.rs"), out.stdout).expect("write abi_layout.rs");
}

/// The multiarch include directory (`/usr/include/x86_64-linux-gnu`), where
/// Debian keeps `asm/types.h`; clang's BPF target does not search it by itself.
fn multiarch_include() -> String {
    let triple = Command::new("gcc")
        .arg("-print-multiarch")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|triple| !triple.is_empty())
        .unwrap_or_else(|| format!("{}-linux-gnu", std::env::consts::ARCH));
    format!("/usr/include/{triple}")
}
