//! `/etc/kdump.conf`, in the syntax kexec-tools and kdump-utils users already write.
//!
//! Each non-empty line is `directive value...`; `#` starts a comment (at the start of a line
//! or after whitespace) and one pair of double quotes around the value is dropped. A directive
//! given twice keeps its last value, as kdump-utils' capture scripts do, with a warning.
//! Directives that only matter in the first kernel (`force_rebuild`, `auto_reset_crashkernel`,
//! ...) and unknown ones are warnings; invalid values are errors. Every diagnostic names the
//! file and the line.

use std::fmt;

/// How serious a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The line is ignored or a default is used; the capture goes on.
    Warning,
    /// The line is invalid; the setting it tried to make is not made.
    Error,
}

/// A problem with one line of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Warning or error.
    pub severity: Severity,
    /// File name.
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{}:{}: {kind}: {}", self.file, self.line, self.message)
    }
}

/// Where a device is named: a path or one of the identifiers udev would know it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    /// `/dev/vdb`, `/dev/disk/by-id/...`.
    Path(String),
    /// `UUID=` of the filesystem.
    Uuid(String),
    /// `LABEL=` of the filesystem.
    Label(String),
    /// `PARTUUID=` of the partition (GPT GUID, or MBR `xxxxxxxx-NN`).
    PartUuid(String),
    /// `PARTLABEL=` of the GPT partition.
    PartLabel(String),
}

impl DeviceSpec {
    /// Parses `UUID=...`, `LABEL=...`, `PARTUUID=...`, `PARTLABEL=...` or a path.
    pub fn parse(text: &str) -> Option<Self> {
        let value = |prefix: &str| {
            text.strip_prefix(prefix)
                .map(|v| v.trim_matches('"').to_owned())
        };
        if let Some(v) = value("UUID=") {
            Some(Self::Uuid(v.to_ascii_lowercase()))
        } else if let Some(v) = value("LABEL=") {
            Some(Self::Label(v))
        } else if let Some(v) = value("PARTUUID=") {
            Some(Self::PartUuid(v.to_ascii_lowercase()))
        } else if let Some(v) = value("PARTLABEL=") {
            Some(Self::PartLabel(v))
        } else if text.starts_with('/') {
            Some(Self::Path(text.to_owned()))
        } else {
            None
        }
    }
}

impl DeviceSpec {
    /// The device node it names under `root`: the path itself, or udev's `/dev/disk/by-*` link.
    pub fn node(&self, root: &std::path::Path) -> std::path::PathBuf {
        match self {
            Self::Path(path) => root.join(path.trim_start_matches('/')),
            Self::Uuid(id) => root.join("dev/disk/by-uuid").join(id),
            Self::Label(id) => root.join("dev/disk/by-label").join(udev_escape(id)),
            Self::PartUuid(id) => root.join("dev/disk/by-partuuid").join(id.to_lowercase()),
            Self::PartLabel(id) => root.join("dev/disk/by-partlabel").join(udev_escape(id)),
        }
    }
}

/// A label as udev names its link: slashes, backslashes and blanks as `\xNN` (udev's
/// `encode_devnode_name`).
fn udev_escape(label: &str) -> String {
    let mut out = String::new();
    for c in label.chars() {
        if c == '/' || c == '\\' || c.is_whitespace() {
            for byte in c.to_string().bytes() {
                out.push_str(&format!("\\x{byte:02x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Path(p) => write!(f, "{p}"),
            Self::Uuid(v) => write!(f, "UUID={v}"),
            Self::Label(v) => write!(f, "LABEL={v}"),
            Self::PartUuid(v) => write!(f, "PARTUUID={v}"),
            Self::PartLabel(v) => write!(f, "PARTLABEL={v}"),
        }
    }
}

/// Where the dump goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// No target line: the first kernel's root filesystem (`root=`).
    RootFs,
    /// A local filesystem on a device.
    Filesystem {
        /// `ext4`, `xfs`, ...
        fstype: String,
        /// Which device.
        device: DeviceSpec,
    },
    /// A raw block device receiving the flattened stream.
    Raw(DeviceSpec),
    /// An NFS export (`server:/export`).
    Nfs {
        /// `server:/export`.
        export: String,
        /// `nfs4` was given.
        v4: bool,
    },
    /// An ssh server (`user@host`).
    Ssh(String),
    /// A mount from `dracut_args --mount "dev mnt fstype opts"`.
    Mount {
        /// The device (or `server:/export`).
        device: String,
        /// Where it was mounted in the first kernel.
        mountpoint: String,
        /// Filesystem type.
        fstype: String,
        /// Mount options.
        options: String,
    },
}

/// What to do when the capture fails (`failure_action`), or after it (`final_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Reboot the machine.
    Reboot,
    /// Halt.
    Halt,
    /// Power off.
    Poweroff,
    /// An interactive shell on the console (failure only).
    Shell,
    /// Save the dump on the first kernel's root filesystem (failure only).
    DumpToRootfs,
}

impl Action {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "reboot" => Self::Reboot,
            "halt" => Self::Halt,
            "poweroff" => Self::Poweroff,
            "shell" => Self::Shell,
            "dump_to_rootfs" => Self::DumpToRootfs,
            _ => return None,
        })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Reboot => "reboot",
            Self::Halt => "halt",
            Self::Poweroff => "poweroff",
            Self::Shell => "shell",
            Self::DumpToRootfs => "dump_to_rootfs",
        })
    }
}

/// The default `core_collector` of kdump-utils on x86_64.
pub const DEFAULT_CORE_COLLECTOR: &str = "makedumpfile -l --message-level 7 -d 31";
/// The default `path`.
pub const DEFAULT_PATH: &str = "/var/crash";
/// The default `sshkey`.
pub const DEFAULT_SSHKEY: &str = "/root/.ssh/kdump_id_rsa";

/// A parsed kdump.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where the dump goes.
    pub target: Target,
    /// Directory on the target.
    pub path: String,
    /// The collector command line.
    pub core_collector: String,
    /// Line of `core_collector` (for diagnostics), 0 when defaulted.
    pub core_collector_line: usize,
    /// Line of `path`, 0 when defaulted (Debian's `KDUMP_COREDIR` applies then).
    pub path_line: usize,
    /// ssh private key.
    pub sshkey: String,
    /// `kdump_pre` program.
    pub kdump_pre: Option<String>,
    /// `kdump_post` program.
    pub kdump_post: Option<String>,
    /// `kdump_emergency` program.
    pub kdump_emergency: Option<String>,
    /// `extra_bins` (the image builder's business).
    pub extra_bins: Vec<String>,
    /// `extra_modules`: loaded before the capture.
    pub extra_modules: Vec<String>,
    /// What to do when the capture fails.
    pub failure_action: Action,
    /// What to do at the end.
    pub final_action: Action,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            target: Target::RootFs,
            path: DEFAULT_PATH.to_owned(),
            core_collector: DEFAULT_CORE_COLLECTOR.to_owned(),
            core_collector_line: 0,
            path_line: 0,
            sshkey: DEFAULT_SSHKEY.to_owned(),
            kdump_pre: None,
            kdump_post: None,
            kdump_emergency: None,
            extra_bins: Vec::new(),
            extra_modules: Vec::new(),
            failure_action: Action::Reboot,
            final_action: Action::Reboot,
        }
    }
}

/// Splits a value the way a shell would split simple quoted words (for `dracut_args`).
fn shell_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => word.extend(chars.next()),
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                word.extend(chars.next());
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err("unterminated quote".into());
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Removes a comment and one pair of quotes around the value.
fn clean(line: &str) -> &str {
    let mut end = line.len();
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
            end = i;
            break;
        }
    }
    line[..end].trim()
}

fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

const FILESYSTEMS: &[&str] = &["ext2", "ext3", "ext4", "xfs", "btrfs", "minix", "virtiofs"];

/// The directive and value of one kdump.conf line, comments removed; `None` for blank lines.
pub fn split_line(raw: &str) -> Option<(&str, &str)> {
    let content = clean(raw);
    if content.is_empty() {
        return None;
    }
    Some(match content.split_once(char::is_whitespace) {
        Some((d, v)) => (d, unquote(v.trim())),
        None => (content, ""),
    })
}

/// Undoes fstab's and mountinfo's octal escapes (`\040` for a space) in one field.
pub fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let digits = bytes.get(i + 1..i + 4);
        let value = digits
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)))
            .and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match (bytes[i], value) {
            (b'\\', Some(value)) => {
                out.push(value);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// fstab's octal escapes for a `--mount` field: blanks, `#`, quotes, backslashes and control
/// characters, so that the field survives kdump.conf's comment and quote rules and the split at
/// blanks.
pub fn escape_octal(field: &str) -> String {
    let mut out = String::new();
    for c in field.chars() {
        if c.is_ascii_whitespace() || c.is_ascii_control() || matches!(c, '#' | '"' | '\\' | '\'') {
            out.push_str(&format!("\\{:03o}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether `directive` matters only in the first kernel (`force_rebuild`, ...).
pub fn is_first_kernel_directive(directive: &str) -> bool {
    FIRST_KERNEL_ONLY.contains(&directive)
}

/// Whether `directive` names the dump target (a filesystem type, `raw`, `nfs`, `nfs4`, `ssh`).
pub fn is_target_directive(directive: &str) -> bool {
    FILESYSTEMS.contains(&directive) || matches!(directive, "raw" | "nfs" | "nfs4" | "ssh")
}

/// Whether a first-kernel switch (`force_rebuild`, `force_no_rebuild`) is set to 1 in `text`.
pub fn switch_on(text: &str, directive: &str) -> bool {
    text.lines()
        .filter_map(split_line)
        .any(|(d, v)| d == directive && v == "1")
}
const FIRST_KERNEL_ONLY: &[&str] = &[
    "force_rebuild",
    "force_no_rebuild",
    "auto_reset_crashkernel",
];
const DEPRECATED: &[&str] = &[
    "net",
    "options",
    "link_delay",
    "disk_timeout",
    "debug_mem_level",
    "blacklist",
];

impl Config {
    /// Parses the text of `file`; returns the configuration and every diagnostic.
    pub fn parse(file: &str, text: &str) -> (Self, Vec<Diagnostic>) {
        let mut config = Self::default();
        let mut diagnostics = Vec::new();
        let mut seen: Vec<(String, usize)> = Vec::new();
        let mut target_line: Option<(usize, String)> = None;
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let mut report = |severity, message: String| {
                diagnostics.push(Diagnostic {
                    severity,
                    file: file.to_owned(),
                    line,
                    message,
                });
            };
            let Some((directive, value)) = split_line(raw) else {
                continue;
            };
            if let Some((_, first)) = seen.iter().find(|(d, _)| d == directive) {
                report(
                    Severity::Warning,
                    format!("{directive} repeats line {first}; the last one wins"),
                );
            } else {
                seen.push((directive.to_owned(), line));
            }
            if is_target_directive(directive) {
                if let Some((first, other)) = &target_line
                    && other != directive
                {
                    report(
                        Severity::Error,
                        format!(
                            "a second dump target ({directive}); line {first} already has {other}"
                        ),
                    );
                    continue;
                }
                target_line = Some((line, directive.to_owned()));
            }
            if value.is_empty() && !matches!(directive, "kdump_pre" | "kdump_post") {
                report(Severity::Error, format!("{directive} needs a value"));
                continue;
            }
            match directive {
                fs if FILESYSTEMS.contains(&fs) => match DeviceSpec::parse(value) {
                    Some(device) => {
                        config.target = Target::Filesystem {
                            fstype: fs.to_owned(),
                            device,
                        }
                    }
                    None => report(
                        Severity::Error,
                        format!(
                            "{fs} needs a device path, UUID=, LABEL=, PARTUUID= or PARTLABEL=, not {value:?}"
                        ),
                    ),
                },
                "raw" => match DeviceSpec::parse(value) {
                    Some(device) => config.target = Target::Raw(device),
                    None => report(
                        Severity::Error,
                        format!("raw needs a block device, not {value:?}"),
                    ),
                },
                "nfs" | "nfs4" => {
                    if value.contains(":/") {
                        config.target = Target::Nfs {
                            export: value.to_owned(),
                            v4: directive == "nfs4",
                        };
                    } else {
                        report(
                            Severity::Error,
                            format!("{directive} needs server:/export, not {value:?}"),
                        );
                    }
                }
                "ssh" => {
                    if value
                        .split_once('@')
                        .is_some_and(|(u, h)| !u.is_empty() && !h.is_empty())
                    {
                        config.target = Target::Ssh(value.to_owned());
                    } else {
                        report(
                            Severity::Error,
                            format!("ssh needs user@host, not {value:?}"),
                        );
                    }
                }
                "path" => {
                    config.path = value.to_owned();
                    config.path_line = line;
                }
                "core_collector" => {
                    config.core_collector = value.to_owned();
                    config.core_collector_line = line;
                }
                "sshkey" => config.sshkey = value.to_owned(),
                "kdump_pre" => config.kdump_pre = Some(value.to_owned()).filter(|v| !v.is_empty()),
                "kdump_post" => {
                    config.kdump_post = Some(value.to_owned()).filter(|v| !v.is_empty());
                }
                "kdump_emergency" => config.kdump_emergency = Some(value.to_owned()),
                "extra_bins" => {
                    config.extra_bins = value.split_whitespace().map(str::to_owned).collect();
                }
                "extra_modules" => {
                    config.extra_modules = value.split_whitespace().map(str::to_owned).collect();
                }
                "failure_action" | "default" => match Action::parse(value) {
                    Some(action) => {
                        if directive == "default" {
                            report(
                                Severity::Warning,
                                "\"default\" is obsolete; use failure_action".into(),
                            );
                        }
                        config.failure_action = action;
                    }
                    None => report(
                        Severity::Error,
                        format!(
                            "{directive} {value:?} is not reboot, halt, poweroff, shell or dump_to_rootfs"
                        ),
                    ),
                },
                "final_action" => match Action::parse(value) {
                    Some(action @ (Action::Reboot | Action::Halt | Action::Poweroff)) => {
                        config.final_action = action;
                    }
                    _ => report(
                        Severity::Error,
                        format!("final_action {value:?} is not reboot, halt or poweroff"),
                    ),
                },
                "dracut_args" => match shell_words(value) {
                    Ok(words) => {
                        let mounts: Vec<&[String]> = words
                            .windows(2)
                            .filter(|w| w[0] == "--mount")
                            .map(|w| &w[1..2])
                            .collect();
                        match mounts.as_slice() {
                            [] => {}
                            [spec] => {
                                // fstab's fields, with its octal escapes (`\040` a space).
                                let fields: Vec<String> =
                                    spec[0].split_whitespace().map(unescape_octal).collect();
                                match fields.as_slice() {
                                    [device, mountpoint, fstype, rest @ ..] => {
                                        config.target = Target::Mount {
                                            device: device.clone(),
                                            mountpoint: mountpoint.clone(),
                                            fstype: fstype.clone(),
                                            options: rest
                                                .first()
                                                .map_or("defaults", |o| o)
                                                .to_owned(),
                                        };
                                    }
                                    _ => report(
                                        Severity::Error,
                                        format!(
                                            "--mount {:?} needs \"device mountpoint fstype [options]\"",
                                            spec[0]
                                        ),
                                    ),
                                }
                            }
                            _ => report(
                                Severity::Error,
                                "more than one --mount in dracut_args".into(),
                            ),
                        }
                    }
                    Err(why) => report(Severity::Error, format!("dracut_args: {why}")),
                },
                "fence_kdump_args" | "fence_kdump_nodes" => {
                    report(
                        Severity::Warning,
                        format!("{directive}: fence_kdump is not supported by rkdump; ignored"),
                    );
                }
                // Read by the image builder and `start`; `auto_reset_crashkernel` is kdumpctl's
                // business and means nothing to rkdump.
                d if FIRST_KERNEL_ONLY.contains(&d) => {
                    if d != "auto_reset_crashkernel" && !matches!(value, "0" | "1") {
                        report(Severity::Error, format!("{d} {value:?} is not 0 or 1"));
                    }
                }
                d if DEPRECATED.contains(&d) => {
                    report(Severity::Warning, format!("{d} is deprecated and ignored"));
                }
                other => report(
                    Severity::Warning,
                    format!("unknown directive {other:?}; ignored"),
                ),
            }
        }
        (config, diagnostics)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_typical_file() {
        let text = "\
# kdump.conf written for kdump-utils
ext4 UUID=0A1B2C3D-1111-2222-3333-444455556666
path /var/crash   # trailing comment
core_collector makedumpfile -l --message-level 7 -d 31
kdump_post \"/usr/local/bin/notify dump\"
failure_action shell
final_action poweroff
extra_modules i6300esb  xfs
force_rebuild 1
";
        let (config, diagnostics) = Config::parse("kdump.conf", text);
        assert_eq!(
            config.target,
            Target::Filesystem {
                fstype: "ext4".into(),
                device: DeviceSpec::Uuid("0a1b2c3d-1111-2222-3333-444455556666".into())
            }
        );
        assert_eq!(config.path, "/var/crash");
        assert_eq!(config.core_collector, DEFAULT_CORE_COLLECTOR);
        assert_eq!(config.core_collector_line, 4);
        assert_eq!(
            config.kdump_post.as_deref(),
            Some("/usr/local/bin/notify dump")
        );
        assert_eq!(
            (config.failure_action, config.final_action),
            (Action::Shell, Action::Poweroff)
        );
        assert_eq!(config.extra_modules, ["i6300esb", "xfs"]);
        // force_rebuild is the first kernel's, read by `start`: no diagnostic.
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        let (_, diagnostics) = Config::parse(
            "kdump.conf",
            "force_no_rebuild yes
",
        );
        assert_eq!(
            diagnostics[0].to_string(),
            "kdump.conf:1: error: force_no_rebuild \"yes\" is not 0 or 1"
        );
    }

    #[test]
    fn dracut_mount_becomes_the_target() {
        let (config, diagnostics) = Config::parse(
            "kdump.conf",
            "dracut_args --mount \"/dev/vdb /mnt/dump ext4 defaults,nofail\" --omit plymouth\n",
        );
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        assert_eq!(
            config.target,
            Target::Mount {
                device: "/dev/vdb".into(),
                mountpoint: "/mnt/dump".into(),
                fstype: "ext4".into(),
                options: "defaults,nofail".into()
            }
        );
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let (config, diagnostics) = Config::parse(
            "/etc/kdump.conf",
            "xfs LABEL=dumps\nraw /dev/vdc\nfailure_action explode\nssh nohost\nfrobnicate 3\ndefault halt\n",
        );
        let text: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "/etc/kdump.conf:2: error: a second dump target (raw); line 1 already has xfs",
                "/etc/kdump.conf:3: error: failure_action \"explode\" is not reboot, halt, poweroff, shell or dump_to_rootfs",
                "/etc/kdump.conf:4: error: a second dump target (ssh); line 1 already has xfs",
                "/etc/kdump.conf:5: warning: unknown directive \"frobnicate\"; ignored",
                "/etc/kdump.conf:6: warning: \"default\" is obsolete; use failure_action",
            ]
        );
        assert_eq!(
            config.target,
            Target::Filesystem {
                fstype: "xfs".into(),
                device: DeviceSpec::Label("dumps".into())
            }
        );
        assert_eq!(config.failure_action, Action::Halt);
    }

    #[test]
    fn the_last_repeat_wins_with_a_warning() {
        let (config, diagnostics) = Config::parse("k", "path /a\npath /b\n");
        assert_eq!(config.path, "/b");
        assert_eq!(
            diagnostics[0].to_string(),
            "k:2: warning: path repeats line 1; the last one wins"
        );
    }

    #[test]
    fn shell_words_handle_quotes() {
        assert_eq!(
            shell_words(r#"a "b c" 'd e' f\ g"#).unwrap(),
            ["a", "b c", "d e", "f g"]
        );
        assert!(shell_words("\"open").is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
            let _ = Config::parse("k", &text);
        }
    }
}
