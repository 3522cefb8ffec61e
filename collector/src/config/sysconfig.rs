//! The first-kernel settings files of the other kdump tools, read so that a machine moving to
//! rkdump keeps its settings: kdump-utils' `/etc/sysconfig/kdump` and Debian kdump-tools'
//! `/etc/default/kdump-tools`.
//!
//! Both are shell variable assignments (`NAME=value`, `NAME="value"`, `NAME='value'`, an
//! optional `export`, `#` comments). Only plain assignments are understood: a line with command
//! substitution, a variable reference or several words unquoted is an error naming the file and
//! line, and the setting is not made. Unknown names are ignored (the files hold settings of the
//! other tools' scripts too).
//!
//! Which wins, when both files set the same thing: `/etc/sysconfig/kdump` (read last). The
//! capture target and path always come from kdump.conf; `KDUMP_COREDIR` is used only when
//! kdump.conf has no `path` line.

use super::kdump_conf::{Diagnostic, Severity};

/// kdump-utils' settings file.
pub const SYSCONFIG_FILE: &str = "/etc/sysconfig/kdump";
/// Debian kdump-tools' settings file.
pub const KDUMP_TOOLS_FILE: &str = "/etc/default/kdump-tools";
/// Where kdump-tools keeps its own capture images and kernel link (ignored as `KDUMP_INITRD`
/// and `KDUMP_KERNEL`).
const KDUMP_TOOLS_IMAGES: &str = "/var/lib/kdump/";

/// The first-kernel settings, merged from both files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirstKernel {
    /// `KDUMP_KERNELVER`: the kernel release to load (default: the running one).
    pub kernel_version: Option<String>,
    /// `KDUMP_KERNEL` (kdump-tools): the kernel image to load.
    pub kernel: Option<String>,
    /// `KDUMP_INITRD` (kdump-tools): the capture image to load.
    pub initrd: Option<String>,
    /// `KDUMP_COMMANDLINE` / `KDUMP_CMDLINE`: the base command line (default /proc/cmdline).
    pub commandline: Option<String>,
    /// `KDUMP_COMMANDLINE_REMOVE`: parameters removed from the base.
    pub commandline_remove: Option<String>,
    /// `KDUMP_COMMANDLINE_APPEND` / `KDUMP_CMDLINE_APPEND`: parameters appended.
    pub commandline_append: Option<String>,
    /// `KEXEC_ARGS`: kexec-tools options; rkdump understands `-c` (kexec_load only), and `-s`
    /// and `-a` (its default: file first, the fallback when it helps), and warns about the rest.
    pub kexec_args: Option<String>,
    /// `KDUMP_COREDIR` (kdump-tools): where dumps go when kdump.conf has no `path`.
    pub coredir: Option<String>,
}

/// Parses one shell-assignment value: one word, quotes removed.
fn value(text: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => loop {
                match chars.next() {
                    Some('\'') => break,
                    Some(c) => out.push(c),
                    None => return Err("unterminated single quote".into()),
                }
            },
            '"' => loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c @ ('"' | '\\' | '$' | '`')) => out.push(c),
                        Some(c) => {
                            out.push('\\');
                            out.push(c);
                        }
                        None => return Err("unterminated double quote".into()),
                    },
                    Some('$' | '`') => {
                        return Err("variable or command substitution is not supported".into());
                    }
                    Some(c) => out.push(c),
                    None => return Err("unterminated double quote".into()),
                }
            },
            '$' | '`' => return Err("variable or command substitution is not supported".into()),
            c if c.is_whitespace() => {
                // What follows must be a comment: `NAME=a b` runs the command b in the shell,
                // it is not a setting.
                match chars.find(|c| !c.is_whitespace()) {
                    None | Some('#') => break,
                    Some(_) => return Err("more than one word: quote the value".into()),
                }
            }
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    Ok(out)
}

impl FirstKernel {
    /// Reads the text of one file into `self` (later files override earlier ones); returns the
    /// diagnostics.
    pub fn parse_into(&mut self, file: &str, text: &str) -> Vec<Diagnostic> {
        let mut diagnostics = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
            let report = |message: String| Diagnostic {
                severity: Severity::Error,
                file: file.to_owned(),
                line: index + 1,
                message,
            };
            let Some((name, rest)) = line.split_once('=') else {
                diagnostics.push(report(format!("not an assignment: {line:?}")));
                continue;
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                diagnostics.push(report(format!("not a variable name: {name:?}")));
                continue;
            }
            let slot = match name {
                "KDUMP_KERNELVER" => &mut self.kernel_version,
                "KDUMP_KERNEL" => &mut self.kernel,
                "KDUMP_INITRD" => &mut self.initrd,
                "KDUMP_COMMANDLINE" | "KDUMP_CMDLINE" => &mut self.commandline,
                "KDUMP_COMMANDLINE_REMOVE" => &mut self.commandline_remove,
                "KDUMP_COMMANDLINE_APPEND" | "KDUMP_CMDLINE_APPEND" => &mut self.commandline_append,
                "KEXEC_ARGS" => &mut self.kexec_args,
                "KDUMP_COREDIR" => &mut self.coredir,
                // The other tools' own settings: not read, whatever their value.
                _ => continue,
            };
            let value = match value(rest) {
                Ok(value) => value,
                Err(why) => {
                    diagnostics.push(report(format!("{name}: {why}")));
                    continue;
                }
            };
            // An empty value means "unset" in both tools' scripts, except for the remove and
            // append lists, where it means "nothing".
            let list = matches!(
                name,
                "KDUMP_COMMANDLINE_REMOVE" | "KDUMP_COMMANDLINE_APPEND" | "KDUMP_CMDLINE_APPEND"
            );
            // kdump-tools' own image (`/var/lib/kdump/initrd.img*`, which its debconf writes
            // into /etc/default/kdump-tools) boots kdump-tools' dump service, not rkdump: it
            // is never the image rkdump loads; rkdump builds its own instead. Its kernel
            // (`/var/lib/kdump/vmlinuz`) is a link that only kdump-tools' own load makes, to
            // the running kernel's image: rkdump finds that image itself (with kdump-tools
            // disabled, the link is missing or stale).
            if matches!(name, "KDUMP_INITRD" | "KDUMP_KERNEL")
                && value.starts_with(KDUMP_TOOLS_IMAGES)
            {
                // A later assignment replaces an earlier one, as in the shell.
                *slot = None;
                continue;
            }
            *slot = (list || !value.is_empty()).then_some(value);
        }
        diagnostics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdump_utils_defaults_parse() {
        // The x86_64 file gen-kdump-sysconfig.sh writes (kdump-utils), abridged.
        let text = r#"# Kernel Version string for the -kdump kernel, such as 2.6.13-1544.FC5kdump
# If no version is specified, then the init script will try to find a
# kdump kernel with the same version number as the running kernel.
KDUMP_KERNELVER=""

# The kdump commandline is the command line that needs to be passed off to
# the kdump kernel.
KDUMP_COMMANDLINE=""

# This variable lets us remove arguments from the current kdump commandline
KDUMP_COMMANDLINE_REMOVE="hugepages hugepagesz slub_debug quiet log_buf_len swiotlb cma hugetlb_cma ignition.firstboot"

# This variable lets us append arguments to the current kdump commandline
KDUMP_COMMANDLINE_APPEND="irqpoll nr_cpus=1 reset_devices cgroup_disable=memory mce=off numa=off udev.children-max=2 panic=10 acpi_no_memhotplug transparent_hugepage=never nokaslr hest_disable novmcoredd cma=0 hugetlb_cma=0"

# Any additional kexec arguments required.
KEXEC_ARGS="-s"

#Where to find the boot image
#KDUMP_BOOTDIR="/boot"

# What is the image type used for kdump
KDUMP_IMG="vmlinuz"
"#;
        let mut settings = FirstKernel::default();
        assert_eq!(settings.parse_into(SYSCONFIG_FILE, text), []);
        assert_eq!(settings.kernel_version, None);
        assert_eq!(settings.commandline, None);
        let mut empty = FirstKernel::default();
        assert_eq!(
            empty.parse_into(
                SYSCONFIG_FILE,
                "KDUMP_COMMANDLINE_APPEND=\"\"\nKDUMP_KERNELVER=\n"
            ),
            []
        );
        assert_eq!(
            empty.commandline_append.as_deref(),
            Some(""),
            "empty: append nothing"
        );
        assert_eq!(empty.kernel_version, None, "empty: the running kernel");
        assert!(
            settings
                .commandline_remove
                .unwrap()
                .starts_with("hugepages ")
        );
        assert!(
            settings
                .commandline_append
                .unwrap()
                .ends_with("hugetlb_cma=0")
        );
        assert_eq!(settings.kexec_args.as_deref(), Some("-s"));
    }

    #[test]
    fn kdump_tools_file_and_precedence() {
        // Debian kdump-tools' /etc/default/kdump-tools, with its settings uncommented.
        let debian = "USE_KDUMP=1\nKDUMP_KERNEL=/var/lib/kdump/vmlinuz\n\
                      KDUMP_INITRD=/var/lib/kdump/initrd.img\nKDUMP_COREDIR=\"/var/crash\"\n\
                      KDUMP_CMDLINE_APPEND=\"nr_cpus=1 systemd.unit=kdump-tools-dump.service irqpoll\"\n";
        let mut settings = FirstKernel::default();
        assert_eq!(settings.parse_into(KDUMP_TOOLS_FILE, debian), []);
        assert_eq!(settings.coredir.as_deref(), Some("/var/crash"));
        // kdump-tools' own image and kernel link are not what rkdump loads; others named are.
        assert_eq!(settings.initrd, None);
        assert_eq!(settings.kernel, None);
        assert_eq!(
            settings.parse_into(KDUMP_TOOLS_FILE, "KDUMP_KERNEL=/boot/vmlinuz-capture\n"),
            []
        );
        assert_eq!(settings.kernel.as_deref(), Some("/boot/vmlinuz-capture"));
        assert_eq!(
            settings.parse_into(KDUMP_TOOLS_FILE, "KDUMP_INITRD=/boot/capture.img\n"),
            []
        );
        assert_eq!(settings.initrd.as_deref(), Some("/boot/capture.img"));
        settings.initrd = None;
        let later = "export KDUMP_COMMANDLINE_APPEND='irqpoll nr_cpus=2' # mine\n";
        assert_eq!(settings.parse_into(SYSCONFIG_FILE, later), []);
        assert_eq!(
            settings.commandline_append.as_deref(),
            Some("irqpoll nr_cpus=2")
        );
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let text = "KDUMP_KERNELVER=$(uname -r)\nKDUMP_COMMANDLINE_APPEND=a b\nhello\n\
                    KDUMP_COMMANDLINE=\"unterminated\nKEXEC_ARGS=\"-s\"\nARCH=$(uname -m)\n";
        let mut settings = FirstKernel::default();
        let diagnostics: Vec<String> = settings
            .parse_into("/etc/sysconfig/kdump", text)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            diagnostics,
            [
                "/etc/sysconfig/kdump:1: error: KDUMP_KERNELVER: variable or command substitution is not supported",
                "/etc/sysconfig/kdump:2: error: KDUMP_COMMANDLINE_APPEND: more than one word: quote the value",
                "/etc/sysconfig/kdump:3: error: not an assignment: \"hello\"",
                "/etc/sysconfig/kdump:4: error: KDUMP_COMMANDLINE: unterminated double quote",
            ]
        );
        assert_eq!(settings.kexec_args.as_deref(), Some("-s"));
        assert_eq!(settings.kernel_version, None);
    }
}
