//! The dump does not depend on how it was computed: any number of worker threads, any cycle
//! size, mmap or pread, direct or flattened (once reassembled) give the same bytes.

use std::path::Path;
use std::process::Command;

use initramfs_tests::rkdump;
use proptest::prelude::*;
use rkdump_testkit::{Builder, Generation};

fn save(vmcore: &Path, out: &Path, args: &[String]) {
    let output = Command::new(rkdump())
        .args(["save", "-f", "--message-level", "0"])
        .args(args)
        .arg(vmcore)
        .arg(out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn output_is_identical_for_every_thread_count_cycle_size_and_access(
        threads in 1usize..=6,
        cycle_kib in proptest::option::of(1u64..=4),
        pread in any::<bool>(),
        flattened in any::<bool>(),
        elf in any::<bool>(),
        level in prop_oneof![Just(0u8), Just(1), Just(17), Just(31)],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let vmcore = dir.path().join("vmcore");
        std::fs::write(&vmcore, Builder::new(Generation::V6_12).with_every_kind().build()).unwrap();
        let mut base = vec!["-d".to_owned(), level.to_string()];
        if elf {
            base.push("-E".into());
        }
        let reference = dir.path().join("reference");
        save(&vmcore, &reference, &[base.clone(), vec!["--num-threads".into(), "1".into()]].concat());

        let mut args = base;
        args.extend(["--num-threads".to_owned(), threads.to_string()]);
        if let Some(kib) = cycle_kib {
            args.extend(["--cyclic-buffer".to_owned(), kib.to_string()]);
        }
        if pread {
            args.push("--non-mmap".into());
        }
        if flattened {
            args.push("-F".into());
        }
        let out = dir.path().join("out");
        save(&vmcore, &out, &args);
        let result = if flattened {
            let rebuilt = dir.path().join("rebuilt");
            let status = Command::new(rkdump()).arg("reassemble").arg(&out).arg(&rebuilt).output().unwrap();
            prop_assert!(status.status.success());
            rebuilt
        } else {
            out
        };
        prop_assert!(std::fs::read(&result).unwrap() == std::fs::read(&reference).unwrap(), "{args:?}");
    }
}
