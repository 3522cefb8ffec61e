//! `rkdump crashkernel`: the reservation on the kernel command line against what this system
//! needs, and `--set`, which writes that value for GRUB as kdumpctl's `reset-crashkernel` does
//! with grubby.
//!
//! Debian's GRUB reads `/etc/default/grub.d/*.cfg` after `/etc/default/grub`; rkdump's file
//! appends `crashkernel=` to `GRUB_CMDLINE_LINUX_DEFAULT` (as kdump-tools' own `kdump-tools.cfg`
//! does), and `update-grub` writes it into grub.cfg. The value takes effect at the next boot.

use std::path::{Path, PathBuf};

/// rkdump's GRUB snippet.
pub(crate) const GRUB_FILE: &str = "/etc/default/grub.d/rkdump.cfg";

/// The `crashkernel=` values on a kernel command line (several when `,high` and `,low` are
/// both given), without the `crashkernel=` prefix.
pub(crate) fn on_cmdline(cmdline: &str) -> Vec<String> {
    crate::loader::cmdline::split(cmdline)
        .into_iter()
        .filter_map(|p| p.strip_prefix("crashkernel=").map(str::to_owned))
        .collect()
}

/// The text of [`GRUB_FILE`] for a reservation of `mib` MiB.
pub(crate) fn grub_snippet(mib: u64) -> String {
    format!(
        "# Written by `rkdump crashkernel --set`: the memory reserved at boot for the capture\n\
         # kernel, from `rkdump estimate` on this system. To undo: remove this file, run\n\
         # update-grub, reboot.\n\
         GRUB_CMDLINE_LINUX_DEFAULT=\"$GRUB_CMDLINE_LINUX_DEFAULT crashkernel={mib}M\"\n"
    )
}

/// Writes [`GRUB_FILE`] under `root` for `mib` MiB; returns its path.
pub(crate) fn write_grub(root: &Path, mib: u64) -> std::io::Result<PathBuf> {
    let path = root.join(GRUB_FILE.trim_start_matches('/'));
    crate::image::write_new_file(&path, grub_snippet(mib).as_bytes(), 0o644, 0o755)?;
    Ok(path)
}

/// The reservation value in MiB that `size` names (`96M`, `1G`, `100663296`).
pub(crate) fn parse_size(size: &str) -> Option<u64> {
    let size = size.trim();
    let (digits, unit) = match size.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => size.split_at(i),
        None => (size, ""),
    };
    let n: u64 = digits.parse().ok()?;
    let mib = match unit {
        "M" | "m" => n,
        "G" | "g" => n.checked_mul(1024)?,
        "" => n >> 20,
        _ => return None,
    };
    (mib > 0).then_some(mib)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_on_a_command_line() {
        assert_eq!(
            on_cmdline("root=UUID=x ro crashkernel=96M quiet"),
            vec!["96M".to_owned()]
        );
        assert_eq!(
            on_cmdline("crashkernel=512M,high crashkernel=72M,low"),
            vec!["512M,high".to_owned(), "72M,low".to_owned()]
        );
        assert!(on_cmdline("root=/dev/vda ro nocrashkernel=1").is_empty());
    }

    #[test]
    fn the_grub_snippet_appends_to_the_default_command_line() {
        let root = tempfile::tempdir().unwrap();
        let path = write_grub(root.path(), 96).unwrap();
        assert_eq!(path, root.path().join("etc/default/grub.d/rkdump.cfg"));
        let text = std::fs::read_to_string(&path).unwrap();
        // What grub-mkconfig sources: the last line, a shell assignment keeping what was there.
        assert_eq!(
            text.lines().last().unwrap(),
            "GRUB_CMDLINE_LINUX_DEFAULT=\"$GRUB_CMDLINE_LINUX_DEFAULT crashkernel=96M\""
        );
        assert!(text.lines().take(3).all(|l| l.starts_with('#')));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o644, 0o644, "{mode:o}");
        // Written again: replaced, not appended.
        write_grub(root.path(), 128).unwrap();
        let again = std::fs::read_to_string(&path).unwrap();
        assert!(again.contains("crashkernel=128M\"") && !again.contains("96M"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("96M"), Some(96));
        assert_eq!(parse_size("1G"), Some(1024));
        assert_eq!(parse_size("100663296"), Some(96));
        assert_eq!(parse_size("0M"), None);
        assert_eq!(parse_size("96K"), None);
        assert_eq!(parse_size("lots"), None);
    }
}
