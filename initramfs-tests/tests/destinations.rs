//! Destinations that are not regular files: a character device (a node made like /dev/null),
//! a FIFO and symbolic links to them are written in place, or refused with a clear error when
//! the format needs seeking, and are never renamed over. The reference for the bytes that go
//! through a FIFO is the same command writing a regular file.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

use initramfs_tests::{rkdump, run, run_ok};
use rkdump_testkit::{Builder, Generation};

/// A synthetic vmcore in `dir`.
fn vmcore(dir: &Path) -> PathBuf {
    let path = dir.join("vmcore.elf");
    std::fs::write(
        &path,
        Builder::new(Generation::V6_1).with_every_kind().build(),
    )
    .unwrap();
    path
}

/// A character device node with /dev/null's numbers (1, 3) at `path`.
fn null_node(path: &Path) -> PathBuf {
    run_ok(Command::new("mknod").arg(path).args(["c", "1", "3"]));
    path.to_owned()
}

/// A FIFO at `path`.
fn fifo(path: &Path) -> PathBuf {
    run_ok(Command::new("mkfifo").arg(path));
    path.to_owned()
}

/// `cat FIFO > out`, bounded in time, started before the writer.
fn drain(fifo: &Path, out: &Path) -> Child {
    Command::new("timeout")
        .args(["60", "sh", "-c", "cat \"$1\" > \"$2\"", "sh"])
        .arg(fifo)
        .arg(out)
        .spawn()
        .unwrap()
}

/// Runs rkdump with `args`, bounded in time.
fn rkdump_run(args: &[&std::ffi::OsStr]) -> Output {
    run(Command::new("timeout").arg("60").arg(rkdump()).args(args))
}

/// `rkdump save -F VMCORE DEST`, quietly.
fn save_flattened(vmcore: &Path, dest: &Path) -> Output {
    rkdump_run(&[
        os("save"),
        os("-F"),
        os("--message-level"),
        os("0"),
        vmcore.as_os_str(),
        dest.as_os_str(),
    ])
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

fn assert_char_device(path: &Path) {
    let kind = std::fs::metadata(path).unwrap().file_type();
    assert!(
        kind.is_char_device(),
        "{} is no longer a device",
        path.display()
    );
}

fn assert_fifo(path: &Path) {
    let kind = std::fs::symlink_metadata(path).unwrap().file_type();
    assert!(kind.is_fifo(), "{} is no longer a FIFO", path.display());
}

/// Nothing but `names` in `dir`: no `-incomplete` file was left beside the destination.
fn assert_only(dir: &Path, names: &[&str]) {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    found.sort();
    let mut expected: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    expected.sort();
    assert_eq!(found, expected);
}

#[test]
fn dmesg_writes_into_a_device_a_symlink_to_it_and_a_fifo_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let vmcore = vmcore(dir.path());
    let node = null_node(&dir.path().join("null"));
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&node, &link).unwrap();
    for dest in [&node, &link] {
        let output = rkdump_run(&[os("dmesg"), vmcore.as_os_str(), dest.as_os_str()]);
        assert!(output.status.success(), "{output:?}");
        assert_char_device(dest);
    }
    assert!(link.symlink_metadata().unwrap().file_type().is_symlink());

    let expected = run_ok(Command::new(rkdump()).arg("dmesg").arg(&vmcore));
    assert!(expected.contains("sysrq"), "{expected}");
    let pipe = fifo(&dir.path().join("pipe"));
    let out = dir.path().join("from-pipe");
    let mut reader = drain(&pipe, &out);
    let output = rkdump_run(&[os("dmesg"), vmcore.as_os_str(), pipe.as_os_str()]);
    assert!(output.status.success(), "{output:?}");
    assert!(reader.wait().unwrap().success());
    assert_eq!(std::fs::read_to_string(&out).unwrap(), expected);
    assert_fifo(&pipe);

    // `-` is standard output, as for every other tool.
    let dash = rkdump_run(&[os("dmesg"), vmcore.as_os_str(), os("-")]);
    assert_eq!(String::from_utf8(dash.stdout).unwrap(), expected);
    assert_only(
        dir.path(),
        &["vmcore.elf", "null", "link", "pipe", "from-pipe"],
    );
}

#[test]
fn a_flattened_dump_streams_into_a_fifo_and_a_device_as_into_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let vmcore = vmcore(dir.path());
    let file = dir.path().join("stream.flat");
    let output = save_flattened(&vmcore, &file);
    assert!(output.status.success(), "{output:?}");
    let expected = std::fs::read(&file).unwrap();
    assert!(
        expected.starts_with(b"makedumpfile"),
        "not a flattened stream"
    );

    let pipe = fifo(&dir.path().join("pipe"));
    let out = dir.path().join("from-pipe");
    let mut reader = drain(&pipe, &out);
    let output = save_flattened(&vmcore, &pipe);
    assert!(output.status.success(), "{output:?}");
    assert!(reader.wait().unwrap().success());
    assert!(std::fs::read(&out).unwrap() == expected);
    assert_fifo(&pipe);

    let node = null_node(&dir.path().join("null"));
    let output = save_flattened(&vmcore, &node);
    assert!(output.status.success(), "{output:?}");
    assert_char_device(&node);
    assert_only(
        dir.path(),
        &["vmcore.elf", "stream.flat", "pipe", "from-pipe", "null"],
    );
}

#[test]
fn seekable_formats_and_reassembly_refuse_a_device_or_fifo_and_leave_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let vmcore = vmcore(dir.path());
    let node = null_node(&dir.path().join("null"));
    let pipe = fifo(&dir.path().join("pipe"));
    for dest in [&node, &pipe] {
        for format in [None, Some("-E")] {
            let mut args = vec![os("save")];
            args.extend(format.map(os));
            args.extend([os("-f"), vmcore.as_os_str(), dest.as_os_str()]);
            let output = rkdump_run(&args);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{stderr}");
            assert!(
                stderr.contains(&*dest.display().to_string()) && stderr.contains("-F"),
                "{stderr}"
            );
            assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        }
    }
    let stream = dir.path().join("stream.flat");
    assert!(save_flattened(&vmcore, &stream).status.success());
    for dest in [&node, &pipe] {
        let output = rkdump_run(&[
            os("reassemble"),
            os("-f"),
            stream.as_os_str(),
            dest.as_os_str(),
        ]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("give a file name"), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    }
    assert_char_device(&node);
    assert_fifo(&pipe);
    assert_only(dir.path(), &["vmcore.elf", "null", "pipe", "stream.flat"]);
}
