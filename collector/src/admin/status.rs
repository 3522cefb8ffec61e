//! `rkdump status`: is kdump operational, and what is the last dump on the configured target.
//!
//! Operational means what kdumpctl's `status` means: the kernel reports a capture kernel
//! loaded (`/sys/kernel/kexec_crash_loaded`). The last dump is looked for where the capture
//! writes it when the target is reachable from the first kernel as a directory: the root
//! filesystem, or a local filesystem that is mounted here; a network or raw target is named,
//! not checked. The newest dump directory is described by reading its vmcore back
//! ([`crate::readback::info`]): its size, whether it is complete, and whether the dump file
//! is whole (a complete kdump-compressed header, bitmaps and page table that read back).
//!
//! A `rkdump test` leaves its id in [`TEST_STATUS_FILE`]; the capture kernel's command line
//! carries it into the dump's `kexec-dmesg.log`, so status can tell whether that test's dump
//! arrived.

use std::path::{Path, PathBuf};

use crate::config::kdump_conf::{Config, DeviceSpec, Target};
use crate::loader::KexecState;
use crate::readback::info;

/// Where `rkdump test` records its pending test.
pub(crate) const TEST_STATUS_FILE: &str = "/var/lib/rkdump/test-status";
/// The capture command-line parameter carrying a test's id.
pub(crate) const TEST_ID_PARAMETER: &str = "rkdump.test_id";

/// Whether kdump is armed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Operational {
    /// A capture kernel is loaded.
    Yes,
    /// Not, and why.
    No(String),
}

/// One dump directory, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DumpReport {
    /// The directory.
    pub dir: PathBuf,
    /// The dump file in it (`vmcore`, `vmcore.flat`, `vmcore-incomplete`), if any.
    pub file: Option<PathBuf>,
    /// Its size in bytes.
    pub size: u64,
    /// Complete: the final name, and the dump reads back whole.
    pub complete: bool,
    /// Why not, when not.
    pub reason: Option<String>,
}

/// What is known of the last dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LastDump {
    /// The target is not a directory here; why.
    NotChecked(String),
    /// No dump in this directory.
    None(PathBuf),
    /// The newest.
    Found(DumpReport),
}

/// A `rkdump test`'s outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TestOutcome {
    /// Its dump arrived, complete.
    Complete(DumpReport),
    /// Its dump arrived incomplete.
    Incomplete(DumpReport),
    /// No dump carries its id.
    Missing,
    /// The target cannot be checked from here.
    NotChecked,
}

/// The status of the system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Status {
    /// Armed or not.
    pub operational: Operational,
    /// The last dump.
    pub last_dump: LastDump,
    /// The last `rkdump test`, with its id.
    pub test: Option<(String, TestOutcome)>,
}

/// Whether kdump is operational, from the kernel's state.
pub(crate) fn operational(state: &KexecState) -> Operational {
    if state.kexec_busy {
        return Operational::No(
            "a capture kernel is being loaded or unloaded right now (the kernel's kexec lock is \
             held): run `rkdump status` again"
                .into(),
        );
    }
    match (state.crash_loaded, state.crash_size) {
        (None, _) => Operational::No(
            "the kernel has no crash kexec (/sys/kernel/kexec_crash_loaded is missing)".into(),
        ),
        (_, None | Some(0)) => Operational::No(
            "no memory is reserved for the capture kernel (no crashkernel= on the kernel command \
             line)"
                .into(),
        ),
        (Some(false), _) => {
            Operational::No("no capture kernel is loaded: run `rkdump start`".into())
        }
        (Some(true), _) => Operational::Yes,
    }
}

/// The device node a kdump.conf device names, under `root`: the path itself, or udev's
/// `/dev/disk/by-*` link.
pub(crate) fn device_path(root: &Path, device: &DeviceSpec) -> PathBuf {
    device.node(root)
}

/// The mount point of the filesystem on `device`, from `/proc/self/mountinfo` text.
fn mountpoint_of(root: &Path, device: &DeviceSpec, mountinfo: &str) -> Option<PathBuf> {
    let device = std::fs::canonicalize(device_path(root, device)).ok()?;
    mountinfo.lines().find_map(|line| {
        // "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue"
        let (left, right) = line.split_once(" - ")?;
        let mountpoint = left.split(' ').nth(4)?;
        let source = right.split(' ').nth(1)?;
        let source = std::fs::canonicalize(source).ok()?;
        (source == device).then(|| root.join(mountpoint.trim_start_matches('/')))
    })
}

/// The directory dumps go to, seen from the first kernel, or why it is not one.
pub(crate) fn dump_directory(
    root: &Path,
    config: &Config,
    coredir: Option<&str>,
    mountinfo: &str,
) -> Result<PathBuf, String> {
    let path = match (config.path_line, coredir) {
        (0, Some(coredir)) => coredir,
        _ => config.path.as_str(),
    };
    let base = match &config.target {
        Target::RootFs => root.to_owned(),
        Target::Filesystem { device, .. } => mountpoint_of(root, device, mountinfo)
            .ok_or_else(|| format!("the dump filesystem ({device}) is not mounted here"))?,
        Target::Mount { mountpoint, .. } => root.join(mountpoint.trim_start_matches('/')),
        Target::Nfs { export, .. } => return Err(format!("on NFS ({export}): check the server")),
        Target::Ssh(server) => return Err(format!("on ssh ({server}): check the server")),
        Target::Raw(device) => {
            return Err(format!(
                "on a raw device ({device}): `rkdump restore-raw` recovers it"
            ));
        }
    };
    Ok(base.join(path.trim_start_matches('/')))
}

/// Reads one dump directory back.
pub(crate) fn describe_dir(dir: &Path) -> DumpReport {
    let mut report = DumpReport {
        dir: dir.to_owned(),
        file: None,
        size: 0,
        complete: false,
        reason: None,
    };
    let names = [
        "vmcore",
        "vmcore.flat",
        "vmcore-incomplete",
        "vmcore.flat-incomplete",
    ];
    let Some(file) = names.iter().map(|n| dir.join(n)).find(|p| p.is_file()) else {
        report.reason = Some("no dump file in the directory".into());
        return report;
    };
    report.size = file.metadata().map_or(0, |m| m.len());
    let named_incomplete = file
        .file_name()
        .is_some_and(|n| n.to_string_lossy().ends_with("-incomplete"));
    match info::describe(&file) {
        Ok(info) if named_incomplete => {
            report.reason = Some(info.incomplete_reason.unwrap_or_else(|| {
                "the capture did not finish (the file is still named -incomplete)".into()
            }));
        }
        Ok(info) if file.ends_with("vmcore.flat") => {
            // A flattened stream has no header to check; the final name is the capture's word.
            report.complete = true;
            report.reason = info
                .incomplete_reason
                .map(|_| "flattened: not read back".into());
        }
        Ok(info) => match info.incomplete_reason {
            None => report.complete = true,
            Some(reason) => report.reason = Some(reason),
        },
        Err(error) => report.reason = Some(error.to_string()),
    }
    report.file = Some(file);
    report
}

/// The dump directories under `dir` (`<host>-<date>`), oldest first.
fn dump_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| {
            let time = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (time, e.path())
        })
        .collect();
    dirs.sort();
    dirs.into_iter().map(|(_, path)| path).collect()
}

/// The last dump under `dir`.
pub(crate) fn last_dump(dir: &Path) -> LastDump {
    match dump_dirs(dir).last() {
        Some(newest) => LastDump::Found(describe_dir(newest)),
        None => LastDump::None(dir.to_owned()),
    }
}

/// The pending test's id, from the test status file's text (`pending <id>`).
pub(crate) fn pending_test(text: &str) -> Option<String> {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .find_map(|w| (w[0] == "pending").then(|| w[1].to_owned()))
}

/// What became of the test `id`: a dump directory whose capture log carries it.
pub(crate) fn test_outcome(dir: Result<&Path, &str>, id: &str) -> TestOutcome {
    let Ok(dir) = dir else {
        return TestOutcome::NotChecked;
    };
    let needle = format!("{TEST_ID_PARAMETER}={id}");
    for candidate in dump_dirs(dir).iter().rev() {
        let log = std::fs::read_to_string(candidate.join("kexec-dmesg.log")).unwrap_or_default();
        if log.split_whitespace().any(|word| word == needle) {
            let report = describe_dir(candidate);
            return if report.complete {
                TestOutcome::Complete(report)
            } else {
                TestOutcome::Incomplete(report)
            };
        }
    }
    TestOutcome::Missing
}

/// Reads the whole status of the system under `root`.
pub(crate) fn status(
    root: &Path,
    config: &Config,
    coredir: Option<&str>,
    state: &KexecState,
) -> Status {
    let mountinfo = std::fs::read_to_string(root.join("proc/self/mountinfo")).unwrap_or_default();
    let directory = dump_directory(root, config, coredir, &mountinfo);
    let last_dump = match &directory {
        Ok(dir) => last_dump(dir),
        Err(why) => LastDump::NotChecked(why.clone()),
    };
    let test = std::fs::read_to_string(root.join(TEST_STATUS_FILE.trim_start_matches('/')))
        .ok()
        .and_then(|text| pending_test(&text))
        .map(|id| {
            let outcome = test_outcome(directory.as_deref().map_err(String::as_str), &id);
            (id, outcome)
        });
    Status {
        operational: operational(state),
        last_dump,
        test,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operational_follows_the_kernel() {
        let loaded = KexecState {
            crash_loaded: Some(true),
            crash_size: Some(256 << 20),
            ..KexecState::default()
        };
        assert_eq!(operational(&loaded), Operational::Yes);
        let unloaded = KexecState {
            crash_loaded: Some(false),
            ..loaded.clone()
        };
        assert!(matches!(operational(&unloaded), Operational::No(r) if r.contains("rkdump start")));
        let unreserved = KexecState {
            crash_size: Some(0),
            ..unloaded
        };
        assert!(
            matches!(operational(&unreserved), Operational::No(r) if r.contains("crashkernel="))
        );
        // A 6.1 kernel answers EBUSY for kexec_crash_size while a load holds its lock: not
        // "nothing reserved".
        let busy = KexecState {
            crash_size: None,
            kexec_busy: true,
            ..loaded
        };
        assert!(
            matches!(operational(&busy), Operational::No(r) if r.contains("being loaded") && !r.contains("crashkernel="))
        );
    }

    #[test]
    fn directory_of_each_target() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let config = Config::default();
        assert_eq!(
            dump_directory(root, &config, None, "").unwrap(),
            root.join("var/crash")
        );
        // Debian's KDUMP_COREDIR applies only without a path line.
        assert_eq!(
            dump_directory(root, &config, Some("/srv/dumps"), "").unwrap(),
            root.join("srv/dumps")
        );
        let explicit = Config {
            path: "/x".into(),
            path_line: 3,
            ..Config::default()
        };
        assert_eq!(
            dump_directory(root, &explicit, Some("/srv/dumps"), "").unwrap(),
            root.join("x")
        );
        // A filesystem by UUID, mounted on /data.
        std::fs::create_dir_all(root.join("dev/disk/by-uuid")).unwrap();
        std::fs::write(root.join("dev/vdb"), b"").unwrap();
        std::os::unix::fs::symlink("../../vdb", root.join("dev/disk/by-uuid/1234")).unwrap();
        let on_disk = Config {
            target: Target::Filesystem {
                fstype: "ext4".into(),
                device: DeviceSpec::Uuid("1234".into()),
            },
            ..Config::default()
        };
        let mountinfo = format!(
            "22 1 254:1 / / rw - ext4 /dev/vda1 rw\n30 22 254:16 / /data rw,relatime - ext4 {} rw\n",
            root.join("dev/vdb").display()
        );
        assert_eq!(
            dump_directory(root, &on_disk, None, &mountinfo).unwrap(),
            root.join("data/var/crash")
        );
        assert!(
            dump_directory(root, &on_disk, None, "")
                .unwrap_err()
                .contains("not mounted")
        );
        let ssh = Config {
            target: Target::Ssh("kdump@server".into()),
            ..Config::default()
        };
        assert!(
            dump_directory(root, &ssh, None, "")
                .unwrap_err()
                .contains("kdump@server")
        );
    }

    #[test]
    fn dump_directories_read_back() {
        let root = tempfile::tempdir().unwrap();
        let crash = root.path().join("var/crash");
        assert_eq!(last_dump(&crash), LastDump::None(crash.clone()));
        let dir = crash.join("127.0.0.1-2026-12-01-10:00:00");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("vmcore-incomplete"), b"KDUMP   \x06\0\0\0").unwrap();
        std::fs::write(
            dir.join("kexec-dmesg.log"),
            "Kernel command line: console=ttyS0 rkdump.test_id=77 irqpoll\n",
        )
        .unwrap();
        let LastDump::Found(report) = last_dump(&crash) else {
            panic!("no dump found");
        };
        assert!(!report.complete);
        assert_eq!(report.file, Some(dir.join("vmcore-incomplete")));
        assert!(matches!(
            test_outcome(Ok(&crash), "77"),
            TestOutcome::Incomplete(_)
        ));
        assert_eq!(test_outcome(Ok(&crash), "7"), TestOutcome::Missing);
        assert_eq!(
            pending_test("pending 77 1764583200\n").as_deref(),
            Some("77")
        );
        assert_eq!(pending_test("done 77\n"), None);
    }
}
