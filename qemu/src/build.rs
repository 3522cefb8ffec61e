//! Building the static binaries that go into guest images.
//!
//! Guests run our binaries with nothing else around them, so they are built fully static:
//! `x86_64-unknown-linux-gnu` with `+crt-static` (no musl target can be installed here). The
//! explicit `--target` keeps build scripts and proc macros dynamic, which `+crt-static` would
//! otherwise break, and gives the static artefacts their own directory under `target/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The target triple of every guest binary.
pub const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";

/// Rust flags of the static build (README.md shows the same command): glibc linked statically,
/// a non-PIE executable (a static PIE carries 0.6 MB of relocations for nothing), no unwind
/// tables (the release profile aborts on panic) and identical functions folded by the linker.
pub const STATIC_RUSTFLAGS: &str = "-C target-feature=+crt-static -C relocation-model=static \
     -C force-unwind-tables=no -C link-arg=-Wl,--icf=all";

/// C flags of the static build: the vendored OpenSSL, libssh2 and zstd without unwind tables
/// (0.35 MB), optimisation levels left to each crate.
pub const STATIC_CFLAGS: &str = "-fno-asynchronous-unwind-tables -fno-unwind-tables";

/// The script through which openssl-src runs OpenSSL's `Configure` in the static build, adding
/// the options that keep OpenSSL to what libssh2 uses (1.8 MB smaller; see the script).
pub fn openssl_configure() -> PathBuf {
    workspace_root().join("collector/openssl-configure")
}

/// The workspace root (the directory holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the lab crate lives one level below the workspace root")
        .to_path_buf()
}

/// The cargo target directory of this workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
}

/// Builds `bin` of `package` as a static release binary and returns its path.
///
/// Cargo serialises concurrent builds itself, and an up-to-date build takes about a second, so
/// every test may call this.
pub fn static_binary(package: &str, bin: &str) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace_root())
        .env("RUSTFLAGS", STATIC_RUSTFLAGS)
        .env("CFLAGS_x86_64_unknown_linux_gnu", STATIC_CFLAGS)
        .env("OPENSSL_SRC_PERL", openssl_configure())
        .args([
            "build",
            "--release",
            "--locked",
            "--quiet",
            "--target",
            STATIC_TARGET,
        ])
        .args(["--package", package, "--bin", bin])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("static build of {package}/{bin} failed: {status}");
    }
    let path = target_dir().join(STATIC_TARGET).join("release").join(bin);
    if !path.is_file() {
        bail!("cargo reported success but {} is missing", path.display());
    }
    Ok(path)
}

/// The static `rkdump` binary.
pub fn rkdump() -> Result<PathBuf> {
    static_binary("rkdump", "rkdump")
}
