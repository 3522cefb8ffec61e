//! ELF dumps (`-E`).

use crate::dump::{Progress, SaveError, SaveOptions, Summary};

/// Writes an ELF dump.
pub fn save(
    _options: &SaveOptions,
    _progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Summary, SaveError> {
    Err(SaveError::Usage("ELF output is being written".into()))
}
