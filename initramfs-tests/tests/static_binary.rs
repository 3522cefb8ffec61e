//! The capture binary is fully static: it must run as PID 1 of an initramfs that holds nothing
//! else, so it may not ask for a dynamic loader or shared libraries.

use std::process::Command;

use object::elf;
use object::read::elf::{Dyn, ElfFile64, ProgramHeader};
use object::{Endianness, Object};

/// Largest accepted size of the stripped static binary: it is copied into every capture image,
/// whose memory comes out of the crashkernel= reservation. libssh2 and the vendored OpenSSL
/// 3.6 fit only because `collector/openssl-configure` builds OpenSSL without assembly and
/// without the algorithms libssh2 never uses (OpenSSL's default build adds 1.8 MB).
const MAX_BINARY_SIZE: u64 = 6 * 1024 * 1024;

#[test]
fn binary_has_no_interpreter_and_no_shared_libraries() {
    let path = rkdump_lab::build::rkdump().unwrap();
    let data = std::fs::read(&path).unwrap();
    let file = ElfFile64::<Endianness>::parse(&*data).unwrap();
    let endian = file.endian();
    let mut needed = 0;
    for segment in file.elf_program_headers() {
        assert_ne!(
            segment.p_type(endian),
            elf::PT_INTERP,
            "{} asks for a dynamic loader",
            path.display()
        );
        if let Some(entries) = segment.dynamic(endian, &*data).unwrap() {
            needed += entries
                .iter()
                .filter(|d| d.tag(endian) == elf::DT_NEEDED)
                .count();
        }
    }
    assert_eq!(needed, 0, "{} has DT_NEEDED entries", path.display());
    assert!(
        file.section_by_name(".debug_info").is_none(),
        "binary is not stripped"
    );
    let size = data.len() as u64;
    assert!(
        size <= MAX_BINARY_SIZE,
        "static binary is {size} bytes, over {MAX_BINARY_SIZE}"
    );
}

/// The binary does not depend on where the checkout is: the lab's caches are keyed by its bytes,
/// and a clone elsewhere (CI's) must find them. OpenSSL compiles its build directory in unless
/// `collector/openssl-configure` replaces it.
#[test]
fn binary_holds_no_path_of_the_checkout() {
    use std::os::unix::ffi::OsStrExt;
    let data = std::fs::read(rkdump_lab::build::rkdump().unwrap()).unwrap();
    let checkout = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let needle = checkout.as_os_str().as_bytes();
    let at = data.windows(needle.len()).position(|w| w == needle);
    assert!(
        at.is_none(),
        "the binary holds {} at offset {at:?}: {}",
        checkout.display(),
        String::from_utf8_lossy(&data[at.unwrap_or(0)..(at.unwrap_or(0) + 200).min(data.len())])
    );
}

#[test]
fn binary_runs_alone_in_an_empty_root_with_an_empty_environment() {
    let path = rkdump_lab::build::rkdump().unwrap();
    let root = tempfile::tempdir().unwrap();
    std::fs::copy(&path, root.path().join("rkdump")).unwrap();
    let output = Command::new("/usr/sbin/chroot")
        .env_clear()
        .arg(root.path())
        .args(["/rkdump", "--version"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "rkdump --version failed: {output:?}"
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout, format!("rkdump {}\n", env!("CARGO_PKG_VERSION")));
}
