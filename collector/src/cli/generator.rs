//! `rkdump systemd-generator`: run by the package's systemd generator at boot (hidden).

use std::path::{Path, PathBuf};

use clap::Args;

use super::{ExitStatus, report_error};
use crate::config::CONFIG_FILE;

/// Make rkdump.service want network-online.target when the dump target is on the network
/// (systemd.generator(7): NORMAL_DIR [EARLY_DIR LATE_DIR]).
#[derive(Debug, Args)]
pub struct GeneratorArgs {
    /// The generator's output directory for normal-priority units.
    normal_dir: PathBuf,
    /// Ignored (early-priority directory).
    early_dir: Option<PathBuf>,
    /// Ignored (late-priority directory).
    late_dir: Option<PathBuf>,
}

/// `systemd-generator`.
pub(crate) fn generate(args: &GeneratorArgs) -> ExitStatus {
    match crate::admin::units::generate(Path::new("/"), Path::new(CONFIG_FILE), &args.normal_dir) {
        Ok(_) => ExitStatus::Success,
        Err(error) => {
            report_error(&format!(
                "systemd generator: writing {}: {error}",
                args.normal_dir.display()
            ));
            ExitStatus::Failure
        }
    }
}
