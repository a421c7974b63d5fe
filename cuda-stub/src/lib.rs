//! recur's stand-in for crates.io's `find_cuda_helper`, patched in through
//! the root `Cargo.toml`'s `[patch.crates-io]`.
//!
//! cust_raw's build script calls [`include_cuda`] to tell rustc where the
//! driver library `libcuda` is. This version decides between two cases:
//!
//! - **A real driver is installed** (`libcuda.so.1` known to the loader, in a
//!   standard directory, or in `CUDA_LIBRARY_PATH`): link against it. The link
//!   directory handed to rustc holds only a `libcuda.so` symlink to the real
//!   library, never a `libcuda.so.1`, so even when cargo puts that directory
//!   on `LD_LIBRARY_PATH` (it does for search paths inside the target
//!   directory) the loader still resolves `libcuda.so.1` to the real driver.
//! - **No driver** (CI, build machines): compile `src/libcuda_stub.c` into
//!   `libcuda.so.1` (soname `libcuda.so.1`) in cust_raw's `OUT_DIR` and link
//!   against it. Every entry point answers `CUDA_ERROR_NO_DEVICE`, so
//!   programs start, `cuInit` fails cleanly and the engine reports "no CUDA
//!   device". `cargo test` / `cargo run` find the stub because cargo adds
//!   that directory to `LD_LIBRARY_PATH`.
//!
//! Either way the binaries carry **no rpath**: copied to a machine with a
//! driver they load that machine's `libcuda.so.1`, never the stub. A binary
//! built against the stub and started by hand (outside cargo) on a machine
//! without a driver reports the missing `libcuda.so.1` at start-up, as any
//! CUDA program does.
//!
//! Environment: `CUDA_LIBRARY_PATH` (directories searched first, `:`-separated),
//! `RECUR_CUDA_STUB=1` (always link the stub, e.g. to test it), `CC` (the C
//! compiler for the stub; default `cc`). `/etc/ld.so.cache` is watched, so
//! installing a driver later re-runs the decision.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The C source of the stub driver library.
pub const STUB_SOURCE: &str = include_str!("libcuda_stub.c");

/// Directories where distributions and container runtimes install the driver.
const DRIVER_DIRS: [&str; 7] = [
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/wsl/lib",
    "/usr/local/nvidia/lib64",
];

/// Called from cust_raw's build script: prints the `cargo:` lines that link
/// `libcuda` (the real driver, or the stub where there is none).
pub fn include_cuda() {
    if env::var("DOCS_RS").is_ok() || cfg!(doc) {
        return;
    }
    for var in ["CUDA_LIBRARY_PATH", "RECUR_CUDA_STUB", "CC"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if Path::new("/etc/ld.so.cache").is_file() {
        println!("cargo:rerun-if-changed=/etc/ld.so.cache");
    }
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR for build scripts"));
    let force_stub = env::var("RECUR_CUDA_STUB").is_ok_and(|v| v == "1");
    let link_dir = match (force_stub, find_driver()) {
        (false, Some(driver)) => link_real_driver(&out_dir, &driver),
        _ => build_stub(&out_dir),
    };
    println!("cargo:rustc-link-search=native={}", link_dir.display());
    println!("cargo:rustc-link-lib=dylib=cuda");
}

/// The real driver library (`libcuda.so.1`, or `libcuda.so` in a
/// `CUDA_LIBRARY_PATH` directory), if this machine has one.
pub fn find_driver() -> Option<PathBuf> {
    let from_env = env::var("CUDA_LIBRARY_PATH").unwrap_or_default();
    let env_hit = from_env
        .split(':')
        .filter(|d| !d.is_empty())
        .flat_map(|d| {
            [
                Path::new(d).join("libcuda.so.1"),
                Path::new(d).join("libcuda.so"),
            ]
        })
        .find(|p| p.exists());
    env_hit
        .or_else(|| ldconfig_output().and_then(|out| driver_from_ldconfig(&out, target_arch_tag())))
        .or_else(|| {
            DRIVER_DIRS
                .iter()
                .map(|d| Path::new(d).join("libcuda.so.1"))
                .find(|p| p.exists())
        })
}

/// The `ldconfig -p` flag naming the target's ABI, e.g. `x86-64`.
fn target_arch_tag() -> &'static str {
    match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("aarch64") => "AArch64",
        _ => "x86-64",
    }
}

fn ldconfig_output() -> Option<String> {
    ["/sbin/ldconfig", "/usr/sbin/ldconfig", "ldconfig"]
        .iter()
        .find_map(|exe| Command::new(exe).arg("-p").output().ok())
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Picks `libcuda.so.1` for the ABI `arch_tag` out of `ldconfig -p` output
/// (lines like `\tlibcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1`).
/// Toolkit stubs (a `stubs` directory) are not drivers and are skipped.
pub fn driver_from_ldconfig(output: &str, arch_tag: &str) -> Option<PathBuf> {
    output.lines().find_map(|line| {
        let line = line.trim();
        let (lib, rest) = line.split_once(' ')?;
        let (flags, path) = rest.split_once("=>")?;
        let path = PathBuf::from(path.trim());
        let is_stub = path.components().any(|c| c.as_os_str() == "stubs");
        (lib == "libcuda.so.1" && flags.contains(arch_tag) && !is_stub).then_some(path)
    })
}

/// A link directory holding only `libcuda.so -> <driver>`: enough for the
/// linker, and nothing the loader would pick instead of the real
/// `libcuda.so.1`.
fn link_real_driver(out_dir: &Path, driver: &Path) -> PathBuf {
    let dir = out_dir.join("cuda-driver-link");
    fs::create_dir_all(&dir).expect("create the driver link directory");
    replace_symlink(driver, &dir.join("libcuda.so"));
    dir
}

/// Compiles the stub into `<out_dir>/cuda-stub/libcuda.so.1` (+ the
/// `libcuda.so` link-time name) and returns that directory.
fn build_stub(out_dir: &Path) -> PathBuf {
    let dir = out_dir.join("cuda-stub");
    fs::create_dir_all(&dir).expect("create the stub directory");
    let source = dir.join("libcuda_stub.c");
    fs::write(&source, STUB_SOURCE).expect("write the stub source");
    let library = dir.join("libcuda.so.1");
    let cc = env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let output = Command::new(&cc)
        .args(["-shared", "-fPIC", "-O2", "-Wl,-soname,libcuda.so.1", "-o"])
        .arg(&library)
        .arg(&source)
        .output()
        .unwrap_or_else(|e| panic!("no NVIDIA driver found and the C compiler `{cc}` to build the no-device stub could not start: {e}"));
    if !output.status.success() {
        panic!(
            "building the no-device libcuda stub with `{cc}` failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    replace_symlink(Path::new("libcuda.so.1"), &dir.join("libcuda.so"));
    dir
}

fn replace_symlink(target: &Path, link: &Path) {
    if fs::symlink_metadata(link).is_ok() {
        fs::remove_file(link).expect("remove the previous libcuda.so link");
    }
    std::os::unix::fs::symlink(target, link).expect("create the libcuda.so link");
}

#[cfg(test)]
mod tests {
    use super::*;

    const LDCONFIG: &str = "1234 libs found in cache `/etc/ld.so.cache'
\tlibcudart.so.12 (libc6,x86-64) => /usr/local/cuda/lib64/libcudart.so.12
\tlibcuda.so.1 (libc6) => /usr/lib/i386-linux-gnu/libcuda.so.1
\tlibcuda.so.1 (libc6,x86-64) => /usr/local/cuda/lib64/stubs/libcuda.so.1
\tlibcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1
\tlibcuda.so (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so
";

    #[test]
    fn ldconfig_picks_the_driver_for_the_target_abi_and_skips_stubs() {
        assert_eq!(
            driver_from_ldconfig(LDCONFIG, "x86-64"),
            Some(PathBuf::from("/usr/lib/x86_64-linux-gnu/libcuda.so.1"))
        );
        assert_eq!(driver_from_ldconfig(LDCONFIG, "AArch64"), None);
        assert_eq!(driver_from_ldconfig("", "x86-64"), None);
    }
}
