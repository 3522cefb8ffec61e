//! `rkdump propagate`: what the first kernel does once, so that the capture kernel can later
//! send its dump over ssh without asking anyone anything.
//!
//! 1. The kdump key (kdump.conf's `sshkey`) is made with `ssh-keygen` when it is missing, as
//!    kdump-utils' `kdumpctl propagate` does: key generation and OpenSSH's private-key format
//!    stay with OpenSSH.
//! 2. The server's host key is fetched with the same libssh2 the capture uses and pinned into
//!    the first known_hosts file the capture reads, once its SHA256 fingerprint is confirmed
//!    (on the terminal or with `--fingerprint`). A key that differs from a pinned one is refused
//!    and nothing is written: the capture kernel never trusts a key on first use, so trust is
//!    decided here, by a person.
//! 3. The kdump key is authorized on the server through the system's `ssh` client, so the
//!    administrator logs in as usual (agent, password, own key) while ssh checks the host key
//!    just pinned. With a forced command the line is `restrict`ed to it (a central server's
//!    `rkdump receive`), and a line for the key with other options is reported, not accepted.
//! 4. The capture's own login (libssh2, the kdump key, the pinned host key) is tried last: the
//!    command succeeds only if the capture kernel will get in.

use std::fs::{DirBuilder, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use ssh2::{HashType, Session};

use crate::transport::shell_quote;
use crate::transport::ssh::{self, HostKeyStatus, SshError, SshTarget, key_algorithm};

/// What the remote script prints when it appended the key.
const ADDED: &str = "rkdump-propagate: added";
/// What it prints when the line is there already.
const PRESENT: &str = "rkdump-propagate: present";
/// What it prints when the key is there with other options than the ones asked for.
const OTHER: &str = "rkdump-propagate: other options";

/// Why propagation stopped.
#[derive(Debug, thiserror::Error)]
pub enum PropagateError {
    /// `ssh-keygen` could not make or read the key, or the key file is not usable.
    #[error("{path}: {reason}")]
    Key {
        /// The private key file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The forced command cannot be written into authorized_keys.
    #[error("--forced-command {0:?}: {1}")]
    ForcedCommand(String, &'static str),
    /// Connecting or logging in failed.
    #[error(transparent)]
    Ssh(#[from] SshError),
    /// The server's host key differs from the pinned one.
    #[error(
        "the host key of {target} is now {fingerprint}, not the one pinned in {files}: not \
         changed (if the server's key really changed, remove its old line and run again)"
    )]
    HostKeyChanged {
        /// `user@host:port`.
        target: String,
        /// The key the server sent.
        fingerprint: String,
        /// The known_hosts files.
        files: String,
    },
    /// `--fingerprint` names another key.
    #[error("the host key of {target} is {actual}, not {expected}: not pinned")]
    FingerprintMismatch {
        /// `user@host:port`.
        target: String,
        /// The fingerprint given.
        expected: String,
        /// The key the server sent.
        actual: String,
    },
    /// Nobody confirmed an unknown host key.
    #[error(
        "the host key of {target} is {fingerprint} ({kind}) and nobody confirmed it: compare it \
         with `ssh-keygen -lf` of the server's host key, then run again on a terminal or with \
         --fingerprint {fingerprint}"
    )]
    NotConfirmed {
        /// `user@host:port`.
        target: String,
        /// The key the server sent.
        fingerprint: String,
        /// Its algorithm.
        kind: String,
    },
    /// Writing the known_hosts file failed.
    #[error("{file}: {source}")]
    KnownHosts {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The remote command that authorizes the key failed.
    #[error("authorizing the key on {target}: {reason}")]
    Install {
        /// `user@host:port`.
        target: String,
        /// What went wrong.
        reason: String,
    },
    /// The key is listed with other options than the forced command asked for.
    #[error(
        "{authorized_keys} on {target} lists the key with other options than \
         `restrict,command=...`: not changed; remove or edit that line and run again"
    )]
    OtherOptions {
        /// `user@host:port`.
        target: String,
        /// The file.
        authorized_keys: String,
    },
    /// The key is in authorized_keys, but the server refuses it.
    #[error(
        "the key is {how} {authorized_keys} on {target}, but the server refuses it ({source}); \
         check sshd's AuthorizedKeysFile, StrictModes (permissions of the file and its \
         directories) and any from= restriction"
    )]
    StillRefused {
        /// `user@host:port`.
        target: String,
        /// "added to" or "listed in".
        how: &'static str,
        /// The file.
        authorized_keys: String,
        /// The refusal.
        source: SshError,
    },
}

/// What to propagate, and where.
#[derive(Debug)]
pub struct Request<'a> {
    /// The dump server as the capture reaches it; its identity is the kdump key.
    pub target: &'a SshTarget,
    /// The host key's fingerprint the user vouches for (`SHA256:...`).
    pub fingerprint: Option<&'a str>,
    /// The key the administrator logs in with to authorize the kdump key (none: ssh's choice).
    pub login_key: Option<&'a Path>,
    /// The server's authorized_keys file, relative to the user's home unless absolute.
    pub authorized_keys: &'a str,
    /// The only command the kdump key may run on the server.
    pub forced_command: Option<&'a str>,
}

/// Asks whether to trust an unknown host key: the question and the key's fingerprint.
pub type Confirm<'a> = dyn FnMut(&str, &str) -> bool + 'a;

/// Runs the four steps of the module documentation. `confirm` is asked whether to trust an
/// unknown host key (when no fingerprint was given); `log` hears each step.
pub fn propagate(
    request: &Request<'_>,
    confirm: &mut Confirm<'_>,
    log: &mut dyn FnMut(&str),
) -> Result<(), PropagateError> {
    if let Some(command) = request.forced_command {
        check_forced_command(command)?;
    }
    let target = request.target;
    let key_created = ensure_key(&target.identity)?;
    let public = public_key(&target.identity)?;
    log(&format!(
        "key {}: {} ({})",
        target.identity.display(),
        if key_created { "created" } else { "exists" },
        public.kind
    ));

    pin_host_key(request, confirm, log)?;

    // The capture's login first: a key it cannot use stops here, before the server is
    // touched. A forced command is then checked on the server even if the key logs in
    // already: an earlier, unrestricted line would leave the key a shell.
    let logs_in = match ssh::connect(target) {
        Ok(_) => true,
        Err(SshError::Auth(_)) => false,
        Err(e) => return Err(e.into()),
    };
    let outcome = if request.forced_command.is_some() || !logs_in {
        Some(install(request, &public, log)?)
    } else {
        None
    };
    let key_installed = outcome == Some(Installed::Added);
    if outcome.is_some() {
        ssh::connect(target).map_err(|source| match source {
            SshError::Auth(_) => PropagateError::StillRefused {
                target: target.label(),
                how: if key_installed {
                    "added to"
                } else {
                    "listed in"
                },
                authorized_keys: request.authorized_keys.to_owned(),
                source,
            },
            other => other.into(),
        })?;
    }
    log(&format!(
        "capture login to {} with {}: ok{}",
        target.label(),
        target.identity.display(),
        if key_installed {
            ""
        } else {
            " (the key was authorized already)"
        }
    ));
    Ok(())
}

/// Refuses a forced command that authorized_keys cannot hold: a line break would end the line,
/// and a trailing backslash would escape the closing quote.
fn check_forced_command(command: &str) -> Result<(), PropagateError> {
    let refuse = |why| Err(PropagateError::ForcedCommand(command.to_owned(), why));
    if command.trim().is_empty() {
        refuse("empty")
    } else if command.chars().any(char::is_control) {
        refuse("control characters (a line break) cannot go into authorized_keys")
    } else if command.ends_with('\\') {
        refuse("a trailing backslash would escape the closing quote")
    } else {
        Ok(())
    }
}

/// Creates `dir` and its missing parents, private to the owner.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// The directory of `path`, if it names one.
fn parent_dir(path: &Path) -> Option<&Path> {
    path.parent().filter(|p| !p.as_os_str().is_empty())
}

/// Makes the key pair at `path` unless it exists; returns whether it made one. The key type
/// follows the file name as ssh's defaults do (`..._rsa`, `..._ecdsa`, else ed25519).
fn ensure_key(path: &Path) -> Result<bool, PropagateError> {
    if path.exists() {
        return Ok(false);
    }
    let fail = |reason: String| PropagateError::Key {
        path: path.to_owned(),
        reason,
    };
    if let Some(parent) = parent_dir(path) {
        create_private_dir(parent)
            .map_err(|e| fail(format!("creating {}: {e}", parent.display())))?;
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let kind = if name.ends_with("ecdsa") {
        "ecdsa"
    } else if name.ends_with("rsa") {
        "rsa"
    } else {
        "ed25519"
    };
    let host = nix::unistd::gethostname().map_or_else(
        |_| "localhost".to_owned(),
        |h| h.to_string_lossy().into_owned(),
    );
    let output = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", ""])
        .arg("-C")
        .arg(format!("kdump@{host}"))
        .arg("-f")
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| fail(format!("running ssh-keygen: {e}")))?;
    if !output.status.success() || !path.exists() {
        return Err(fail(format!(
            "ssh-keygen failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(true)
}

/// A public key as authorized_keys and known_hosts write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// Algorithm (`ssh-ed25519`).
    pub kind: String,
    /// The key blob in base64.
    pub blob: String,
    /// Comment (may be empty).
    pub comment: String,
}

impl PublicKey {
    /// Parses the first line of a `.pub` file: `kind blob [comment]`. The blob must be base64
    /// of an ssh key whose own algorithm name is `kind`; the comment may not hold control
    /// characters (it is copied into the server's authorized_keys).
    pub fn parse(text: &str) -> Result<Self, String> {
        let line = text.lines().next().unwrap_or_default().trim();
        let mut fields = line.splitn(3, char::is_whitespace);
        let kind = fields.next().unwrap_or_default();
        let blob = fields.next().unwrap_or_default().trim();
        let comment = fields.next().unwrap_or_default().trim();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(blob)
            .map_err(|e| format!("not a public key: {e}"))?;
        if comment.chars().any(char::is_control) {
            return Err("the key's comment holds control characters".to_owned());
        }
        match key_algorithm(&bytes) {
            Some(inner) if inner == kind => Ok(Self {
                kind: kind.to_owned(),
                blob: blob.to_owned(),
                comment: comment.to_owned(),
            }),
            other => Err(format!(
                "not a public key: {kind:?} holds a {:?} key",
                other.unwrap_or("malformed")
            )),
        }
    }

    /// The authorized_keys line, restricted to `forced_command` if given (OpenSSH's `restrict`
    /// turns off forwarding and ptys; a quote in the command is escaped with a backslash, the
    /// only escape OpenSSH reads there).
    pub fn authorized_keys_line(&self, forced_command: Option<&str>) -> String {
        let options = forced_command.map_or_else(String::new, |command| {
            format!("restrict,command=\"{}\" ", command.replace('"', "\\\""))
        });
        let comment = if self.comment.is_empty() {
            String::new()
        } else {
            format!(" {}", self.comment)
        };
        format!("{options}{} {}{comment}", self.kind, self.blob)
    }
}

/// The public half of the key at `path`: its `.pub` file, else what `ssh-keygen -y` derives.
fn public_key(path: &Path) -> Result<PublicKey, PropagateError> {
    let fail = |reason: String| PropagateError::Key {
        path: path.to_owned(),
        reason,
    };
    let mut public_path = path.as_os_str().to_owned();
    public_path.push(".pub");
    let text = match std::fs::read_to_string(&public_path) {
        Ok(text) => text,
        Err(_) => {
            let output = Command::new("ssh-keygen")
                .arg("-y")
                .arg("-f")
                .arg(path)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| fail(format!("running ssh-keygen -y: {e}")))?;
            if !output.status.success() {
                return Err(fail(format!(
                    "ssh-keygen -y cannot read it: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                )));
            }
            String::from_utf8_lossy(&output.stdout).into_owned()
        }
    };
    PublicKey::parse(&text).map_err(fail)
}

/// OpenSSH's fingerprint of the session's host key, `SHA256:` and unpadded base64, and the
/// key's algorithm.
fn host_key_identity(session: &Session) -> Option<(String, String)> {
    let hash = session.host_key_hash(HashType::Sha256)?;
    let (blob, _) = session.host_key()?;
    Some((
        format!(
            "SHA256:{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(hash)
        ),
        key_algorithm(blob)?.to_owned(),
    ))
}

/// Step 2: makes sure the server's host key is pinned.
fn pin_host_key(
    request: &Request<'_>,
    confirm: &mut Confirm<'_>,
    log: &mut dyn FnMut(&str),
) -> Result<(), PropagateError> {
    let target = request.target;
    let session = ssh::handshake(target)?.session;
    let (fingerprint, kind) = host_key_identity(&session)
        .ok_or_else(|| SshError::HostKey(format!("{} sent no usable host key", target.label())))?;
    if let Some(expected) = request.fingerprint
        && expected != fingerprint
    {
        return Err(PropagateError::FingerprintMismatch {
            target: target.label(),
            expected: expected.to_owned(),
            actual: fingerprint,
        });
    }
    let files = ssh::shown(&target.known_hosts);
    match ssh::host_key_status(&session, target)? {
        HostKeyStatus::Known => {
            log(&format!(
                "host key of {}: {fingerprint} ({kind}), pinned already in {files}",
                target.label()
            ));
            return Ok(());
        }
        HostKeyStatus::Changed => {
            return Err(PropagateError::HostKeyChanged {
                target: target.label(),
                fingerprint,
                files,
            });
        }
        HostKeyStatus::Unknown => {}
    }
    let accepted = request.fingerprint.is_some()
        || confirm(
            &format!(
                "The host key of {} is {fingerprint} ({kind}). Is this the server's key?",
                target.label()
            ),
            &fingerprint,
        );
    if !accepted {
        return Err(PropagateError::NotConfirmed {
            target: target.label(),
            fingerprint,
            kind,
        });
    }
    let line = ssh::known_hosts_line(&session, target.bare_host(), target.port)?;
    let file = target
        .known_hosts
        .first()
        .ok_or_else(|| SshError::HostKey(format!("no known_hosts file for {}", target.label())))?;
    append_line(file, &line).map_err(|source| PropagateError::KnownHosts {
        file: file.clone(),
        source,
    })?;
    log(&format!(
        "host key of {}: {fingerprint} ({kind}), pinned in {}",
        target.label(),
        file.display()
    ));
    Ok(())
}

/// Appends `line` to `file` (created, with its directory, if missing), starting a new line if
/// the file does not end with one.
fn append_line(file: &Path, line: &str) -> std::io::Result<()> {
    if let Some(parent) = parent_dir(file) {
        create_private_dir(parent)?;
    }
    let mut out = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o644)
        .open(file)?;
    let mut text = String::new();
    if out.metadata()?.len() > 0 {
        out.seek(SeekFrom::End(-1))?;
        out.read_to_string(&mut text)?;
    }
    let separator = if text.is_empty() || text.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    out.write_all(format!("{separator}{line}\n").as_bytes())?;
    out.sync_all()
}

/// The shell script that adds `line` to `file` on the server unless it is there, as
/// ssh-copy-id does: private permissions, a newline before the key if the file lacks one,
/// SELinux labels restored where `restorecon` exists. A line with the same key but other
/// options counts as present, unless `exact`. It prints [`ADDED`], [`PRESENT`] or [`OTHER`].
/// It is run through `sh` whatever the user's login shell.
pub fn authorize_script(file: &str, key: &PublicKey, line: &str, exact: bool) -> String {
    let script = format!(
        "umask 077 && f={file} && mkdir -p \"$(dirname \"$f\")\" && \
         if [ -f \"$f\" ] && grep -qxF {line} \"$f\"; then echo '{PRESENT}'; \
         elif [ -f \"$f\" ] && grep -qF {needle} \"$f\"; then echo '{same_key}'; \
         else {{ if [ -s \"$f\" ] && [ -n \"$(tail -c1 \"$f\")\" ]; then echo; fi; \
         printf '%s\\n' {line}; }} >> \"$f\" && \
         {{ command -v restorecon >/dev/null 2>&1 && restorecon -F \"$(dirname \"$f\")\" \"$f\" >/dev/null 2>&1; \
         echo '{ADDED}'; }}; fi",
        file = shell_quote(file),
        needle = shell_quote(&format!("{} {}", key.kind, key.blob)),
        line = shell_quote(line),
        same_key = if exact { OTHER } else { PRESENT },
    );
    format!("exec sh -c {}", shell_quote(&script))
}

/// How the key stands in authorized_keys after [`install`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Installed {
    /// Appended now.
    Added,
    /// It was there.
    Present,
}

/// Step 3: authorizes the kdump key by running [`authorize_script`] through the system's ssh,
/// logged in as the administrator, with the pinned host key required.
fn install(
    request: &Request<'_>,
    key: &PublicKey,
    log: &mut dyn FnMut(&str),
) -> Result<Installed, PropagateError> {
    let target = request.target;
    let fail = |reason: String| PropagateError::Install {
        target: target.label(),
        reason,
    };
    let line = key.authorized_keys_line(request.forced_command);
    let known_hosts = target
        .known_hosts
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(" ");
    let mut command = Command::new("ssh");
    command
        .args(["-o", "StrictHostKeyChecking=yes"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={known_hosts}"))
        .arg("-o")
        .arg(format!(
            "ConnectTimeout={}",
            target.connect_timeout.as_secs().max(1)
        ))
        .arg("-p")
        .arg(target.port.to_string())
        .arg("-l")
        .arg(&target.user);
    if let Some(login) = request.login_key {
        command
            .arg("-i")
            .arg(login)
            .args(["-o", "IdentitiesOnly=yes"]);
    }
    command
        .arg("--")
        .arg(target.bare_host())
        .arg(authorize_script(
            request.authorized_keys,
            key,
            &line,
            request.forced_command.is_some(),
        ))
        .stdout(Stdio::piped());
    let output = command
        .output()
        .map_err(|e| fail(format!("running ssh: {e}")))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let said = |marker: &str| stdout.lines().any(|l| l == marker);
    if said(ADDED) {
        log(&format!(
            "key authorized on {} in {}{}",
            target.label(),
            request.authorized_keys,
            request
                .forced_command
                .map(|c| format!(", restricted to `{c}`"))
                .unwrap_or_default()
        ));
        Ok(Installed::Added)
    } else if said(PRESENT) {
        Ok(Installed::Present)
    } else if said(OTHER) {
        Err(PropagateError::OtherOptions {
            target: target.label(),
            authorized_keys: request.authorized_keys.to_owned(),
        })
    } else {
        Err(fail(format!(
            "ssh exited with {}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .map(|l| format!(": {l}"))
                .unwrap_or_default()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJSJNFLFIpUrJY3/C0wZnrrAZbmVl5f8t/wReRS/EZZL kdump@host";

    #[test]
    fn a_pub_file_parses_and_its_blob_must_agree_with_its_type() {
        let key = PublicKey::parse(ED25519).unwrap();
        assert_eq!(key.kind, "ssh-ed25519");
        assert_eq!(key.comment, "kdump@host");
        let lying = ED25519.replace("ssh-ed25519", "ssh-rsa");
        assert!(
            PublicKey::parse(&lying)
                .unwrap_err()
                .contains("holds a \"ssh-ed25519\" key")
        );
        assert!(PublicKey::parse("ssh-ed25519 !!!").is_err());
        // Only the first line counts; a comment may not smuggle control characters.
        let two_lines = format!("{ED25519}\nssh-rsa AAAA other");
        assert_eq!(PublicKey::parse(&two_lines).unwrap().comment, "kdump@host");
        assert!(PublicKey::parse(&format!("{ED25519}\u{1b}[2J")).is_err());
        assert!(PublicKey::parse("").is_err());
    }

    #[test]
    fn forced_commands_that_authorized_keys_cannot_hold_are_refused() {
        assert!(check_forced_command("rkdump receive --root /srv/d").is_ok());
        for bad in ["", "  ", "rkdump receive\nrm -rf /", "rkdump receive \\"] {
            assert!(check_forced_command(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_forced_command_restricts_the_line_and_escapes_quotes() {
        let key = PublicKey::parse(ED25519).unwrap();
        assert_eq!(key.authorized_keys_line(None), ED25519);
        assert_eq!(
            key.authorized_keys_line(Some("rkdump receive --root \"/srv/d\"")),
            format!("restrict,command=\"rkdump receive --root \\\"/srv/d\\\"\" {ED25519}")
        );
    }

    /// Runs the script with `sh` in `home`, as sshd would run it in the user's home.
    fn run_script(home: &Path, file: &str, line: &str, exact: bool) -> String {
        let key = PublicKey::parse(ED25519).unwrap();
        let output = Command::new("sh")
            .arg("-c")
            .arg(authorize_script(file, &key, line, exact))
            .current_dir(home)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    }

    #[test]
    fn the_remote_script_adds_a_key_once_with_private_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let home = tempfile::tempdir().unwrap();
        let line = "restrict,command=\"rkdump receive --root '/srv/it''s'\" ".to_owned() + ED25519;
        assert_eq!(
            run_script(home.path(), ".ssh/authorized_keys", &line, true).trim(),
            ADDED
        );
        assert_eq!(
            run_script(home.path(), ".ssh/authorized_keys", &line, true).trim(),
            PRESENT
        );
        // The same key with other options: present for a plain request, not for a forced
        // command; nothing is written either way.
        assert_eq!(
            run_script(home.path(), ".ssh/authorized_keys", ED25519, false).trim(),
            PRESENT
        );
        assert_eq!(
            run_script(home.path(), ".ssh/authorized_keys", ED25519, true).trim(),
            OTHER
        );
        let file = home.path().join(".ssh/authorized_keys");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), format!("{line}\n"));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&home.path().join(".ssh")), 0o700);
    }

    #[test]
    fn the_remote_script_starts_a_new_line_after_an_unterminated_one() {
        let home = tempfile::tempdir().unwrap();
        let file = home.path().join("keys");
        std::fs::write(&file, "ssh-rsa AAAA other").unwrap();
        let path = file.to_str().unwrap();
        assert_eq!(run_script(home.path(), path, ED25519, false).trim(), ADDED);
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            format!("ssh-rsa AAAA other\n{ED25519}\n")
        );
    }

    #[test]
    fn known_hosts_lines_are_appended_on_their_own_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("new/known_hosts");
        append_line(&file, "a key").unwrap();
        std::fs::write(&file, "a key\nb key").unwrap();
        append_line(&file, "c key").unwrap();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "a key\nb key\nc key\n"
        );
    }

    proptest! {
        #[test]
        fn public_key_parsing_never_panics(text in "\\PC{0,120}", bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = PublicKey::parse(&text);
            let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
            let _ = PublicKey::parse(&format!("ssh-ed25519 {encoded}"));
            let _ = key_algorithm(&bytes);
        }
    }
}
