//! Client paths confined to the client's own directory.
//!
//! A client names files by SFTP paths, absolute or relative; both are taken relative to its
//! directory `<root>/<client>/`, as if that were `/`. `..` is refused rather than clamped (a
//! client that tries to leave is told so), names with a NUL byte or longer than 255 bytes and
//! paths deeper than [`MAX_DEPTH`] are refused, and so is any symbolic link on the way: the
//! client cannot make one, but an administrator might have, and it could point anywhere.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::format::sftp::StatusCode;

/// Deepest path accepted, in components.
pub(super) const MAX_DEPTH: usize = 32;

/// Why a client path is refused.
#[derive(Debug, thiserror::Error)]
pub(super) enum JailError {
    /// A `..` component.
    #[error("{0}: \"..\" would leave the client's directory")]
    Escape(String),
    /// A component with a NUL byte or longer than 255 bytes.
    #[error("{0}: invalid file name")]
    InvalidName(String),
    /// More than [`MAX_DEPTH`] components.
    #[error("{0}: deeper than {MAX_DEPTH} directories")]
    TooDeep(String),
    /// A symbolic link on the way.
    #[error("{0}: symbolic links are not followed")]
    Symlink(String),
}

impl JailError {
    /// The SFTP status the refusal is sent with.
    pub(super) fn code(&self) -> StatusCode {
        match self {
            Self::Escape(_) | Self::Symlink(_) => StatusCode::PermissionDenied,
            Self::InvalidName(_) | Self::TooDeep(_) => StatusCode::Failure,
        }
    }
}

/// A path inside the client's directory.
#[derive(Debug, Clone)]
pub(super) struct Resolved {
    /// Relative to the client's directory, normalised.
    pub(super) relative: PathBuf,
    /// On the server.
    pub(super) absolute: PathBuf,
}

/// The client's directory, which every path it sends is resolved into.
#[derive(Debug)]
pub(super) struct Jail {
    home: PathBuf,
}

impl Jail {
    /// Confines paths to `home` (the client's directory, `<root>/<client>`).
    pub(super) fn new(home: PathBuf) -> Self {
        Self { home }
    }

    /// The client's directory.
    pub(super) fn home(&self) -> &Path {
        &self.home
    }

    /// Maps a client path into the client's directory.
    pub(super) fn resolve(&self, path: &[u8]) -> Result<Resolved, JailError> {
        let shown = || String::from_utf8_lossy(path).into_owned();
        let mut relative = PathBuf::new();
        for part in path.split(|&b| b == b'/') {
            match part {
                b"" | b"." => {}
                b".." => return Err(JailError::Escape(shown())),
                _ if part.len() > 255 || part.contains(&0) => {
                    return Err(JailError::InvalidName(shown()));
                }
                _ => relative.push(OsStr::from_bytes(part)),
            }
        }
        if relative.components().count() > MAX_DEPTH {
            return Err(JailError::TooDeep(shown()));
        }
        // No symbolic link on the way (the client cannot make one; an admin might have).
        let mut walked = self.home.clone();
        for component in relative.components() {
            walked.push(component);
            match std::fs::symlink_metadata(&walked) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(JailError::Symlink(shown()));
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        Ok(Resolved {
            absolute: self.home.join(&relative),
            relative,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `path`'s components are all normal (for tests of the mapping).
    fn is_normal(path: &Path) -> bool {
        path.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
    }

    #[test]
    fn paths_stay_in_the_clients_directory() {
        let root = tempfile::tempdir().unwrap();
        let jail = Jail::new(root.path().join("web01"));
        let resolved = jail.resolve(b"/var//crash/./d").unwrap();
        assert_eq!(resolved.relative, Path::new("var/crash/d"));
        assert!(is_normal(&resolved.relative));
        assert_eq!(resolved.absolute, root.path().join("web01/var/crash/d"));
        let error = jail.resolve(b"/var/../../etc").unwrap_err();
        let (code, message) = (error.code(), error.to_string());
        assert_eq!(code, StatusCode::PermissionDenied);
        assert!(
            message.contains("leave the client's directory"),
            "{message}"
        );
    }

    #[test]
    fn symbolic_links_are_not_followed() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("web01")).unwrap();
        let jail = Jail::new(root.path().join("web01"));
        std::os::unix::fs::symlink("/etc", root.path().join("web01/etc")).unwrap();
        let error = jail.resolve(b"/etc/passwd").unwrap_err();
        let (code, message) = (error.code(), error.to_string());
        assert_eq!(code, StatusCode::PermissionDenied);
        assert!(message.contains("symbolic links"), "{message}");
    }

    #[test]
    fn odd_names_and_deep_paths_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let jail = Jail::new(root.path().join("web01"));
        let long = vec![b'x'; 256];
        assert!(matches!(
            jail.resolve(&long),
            Err(JailError::InvalidName(_))
        ));
        assert!(matches!(
            jail.resolve(b"a\0b"),
            Err(JailError::InvalidName(_))
        ));
        let deep = vec!["d"; MAX_DEPTH + 1].join("/");
        let error = jail.resolve(deep.as_bytes()).unwrap_err();
        assert_eq!(error.code(), StatusCode::Failure);
        assert!(error.to_string().contains("deeper than 32"), "{error}");
        assert!(
            jail.resolve(vec!["d"; MAX_DEPTH].join("/").as_bytes())
                .is_ok()
        );
        assert_eq!(jail.resolve(b"/").unwrap().relative, Path::new(""));
    }
}
