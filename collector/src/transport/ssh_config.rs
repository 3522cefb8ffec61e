//! The part of OpenSSH's `ssh_config` that a dump transfer uses.
//!
//! kdump images carry the first kernel's `/etc/ssh/ssh_config` (dracut's ssh-client module
//! copies it), and users put the dump server's port, user or key there rather than in
//! kdump.conf, whose `ssh user@host` has no room for them. As in ssh, the first value found for
//! a keyword wins, `Host` patterns take `*`, `?` and `!`, and `Match` blocks are skipped (their
//! conditions need a running ssh).
//!
//! [`ROOT_HOME`], the home whose `~` the files name, lives here, at the bottom of the
//! transport: [`super::ssh`] builds on this module, never the other way.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Root's home, whose `.ssh` holds the capture's keys and known_hosts (dracut copies them into
/// the image there). Never `$HOME`: the kernel starts the capture with HOME=/, and
/// `rkdump propagate` run through sudo may keep the caller's HOME, yet both must agree on
/// where the pinned keys are.
pub const ROOT_HOME: &str = "/root";

/// Settings for one host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostSettings {
    /// `HostName`.
    pub hostname: Option<String>,
    /// `Port`.
    pub port: Option<u16>,
    /// `User`.
    pub user: Option<String>,
    /// `IdentityFile`.
    pub identity: Option<PathBuf>,
    /// `UserKnownHostsFile` then `GlobalKnownHostsFile` entries.
    pub known_hosts: Vec<PathBuf>,
    /// `ConnectTimeout`.
    pub connect_timeout: Option<Duration>,
}

/// The settings `text` gives `host` (lines that do not parse are skipped, as in ssh they would
/// be an error in the first kernel already).
pub fn settings_for(text: &str, host: &str) -> HostSettings {
    let mut settings = HostSettings::default();
    let mut active = true;
    let mut user_known = None;
    let mut global_known = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (keyword, value) = match line.split_once(|c: char| c.is_whitespace() || c == '=') {
            Some((k, v)) => (
                k,
                v.trim_start_matches(|c: char| c.is_whitespace() || c == '=')
                    .trim(),
            ),
            None => continue,
        };
        let value = value.trim_matches('"');
        match keyword.to_ascii_lowercase().as_str() {
            "host" => active = host_matches(value, host),
            "match" => active = false,
            _ if !active => {}
            "hostname" => {
                settings.hostname.get_or_insert_with(|| value.to_owned());
            }
            "port" if settings.port.is_none() => settings.port = value.parse().ok(),
            "user" => {
                settings.user.get_or_insert_with(|| value.to_owned());
            }
            "identityfile" => {
                settings.identity.get_or_insert_with(|| expand_home(value));
            }
            "userknownhostsfile" => {
                user_known.get_or_insert_with(|| {
                    value
                        .split_whitespace()
                        .map(expand_home)
                        .collect::<Vec<_>>()
                });
            }
            "globalknownhostsfile" => {
                global_known.get_or_insert_with(|| {
                    value
                        .split_whitespace()
                        .map(expand_home)
                        .collect::<Vec<_>>()
                });
            }
            "connecttimeout" if settings.connect_timeout.is_none() => {
                settings.connect_timeout = value.parse().ok().map(Duration::from_secs);
            }
            _ => {}
        }
    }
    settings.known_hosts = user_known
        .into_iter()
        .chain(global_known)
        .flatten()
        .collect();
    settings
}

/// Whether a `Host` line's patterns select `host`: some pattern matches and no negated one does.
fn host_matches(patterns: &str, host: &str) -> bool {
    let mut matched = false;
    for pattern in patterns.split_whitespace() {
        match pattern.strip_prefix('!') {
            Some(negated) if glob_match(negated, host) => return false,
            Some(_) => {}
            None => matched |= glob_match(pattern, host),
        }
    }
    matched
}

/// `*` and `?` wildcards, case-insensitive, as ssh matches host names (greedy with
/// backtracking to the last `*` only, so linear in practice).
fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || (p[pi] != b'*' && p[pi].eq_ignore_ascii_case(&t[ti])))
        {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((star_p, star_t)) = star {
            pi = star_p + 1;
            ti = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// `~/x` → `/root/x`: the capture runs as root (and the kernel starts it with HOME=/), so `~` is
/// root's home whatever `$HOME` says; `rkdump propagate` must expand it the same way.
fn expand_home(path: &str) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => Path::new(ROOT_HOME).join(rest),
        None => PathBuf::from(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "\
# dump server
Host dumps dumps.example.com
    Port 2222
    User kdump
    IdentityFile /root/.ssh/kdump_id_ed25519
    UserKnownHostsFile /etc/kdump/known_hosts /root/.ssh/known_hosts

Host *.example.com !secret.example.com
    Port 2200
    ConnectTimeout 7

Match host x
    Port 1

Host *
    Port 22
    User root
";

    #[test]
    fn first_value_wins_per_keyword() {
        let s = settings_for(CONFIG, "dumps.example.com");
        assert_eq!(s.port, Some(2222));
        assert_eq!(s.user.as_deref(), Some("kdump"));
        assert_eq!(s.connect_timeout, Some(Duration::from_secs(7)));
        assert_eq!(
            s.known_hosts,
            [
                PathBuf::from("/etc/kdump/known_hosts"),
                PathBuf::from("/root/.ssh/known_hosts")
            ]
        );
    }

    #[test]
    fn negated_and_wildcard_patterns() {
        assert_eq!(settings_for(CONFIG, "web.example.com").port, Some(2200));
        assert_eq!(settings_for(CONFIG, "secret.example.com").port, Some(22));
        assert_eq!(
            settings_for(CONFIG, "10.0.2.100").user.as_deref(),
            Some("root")
        );
        assert!(glob_match("10.0.2.?", "10.0.2.1"));
        assert!(!glob_match("10.0.2.?", "10.0.2.10"));
        assert!(glob_match("*.EXAMPLE.com", "a.b.example.com"));
        assert!(glob_match("a*b*c", "aXbYbZc") && !glob_match("a*b*c", "aXbYbZ"));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,200}", host in "[a-z.*?!]{0,12}") {
            let _ = settings_for(&text, &host);
        }
    }
}
