//! `rpc-server keygen`: add a fresh key to a keyring file, or create the file for it.

use std::path::Path;

use rpckit_proto::KeyId;

use crate::{add_new_key, readable_by_others, write_new_key_file, KeyfileError};

/// What [`keygen`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Keygen {
    /// The keyring file was created (mode 0600) holding the new key.
    Created,
    /// The new key was appended to the existing file.
    Added {
        /// Whether the file is readable by group or others (worth a warning).
        readable_by_others: bool,
    },
    /// `if_missing` was set and the file exists: nothing was written.
    Kept,
}

/// Adds a fresh random key named `id` to the keyring file at `path`, creating the file if it
/// does not exist ([`add_new_key`]). With `if_missing`, a file that exists (or that another
/// run creates first) is left alone and the result is [`Keygen::Kept`].
pub fn keygen(path: &Path, id: &KeyId, if_missing: bool) -> Result<Keygen, KeyfileError> {
    // Checked first, so that a keyring in a directory we may not write to is still left alone.
    if if_missing && path.exists() {
        return Ok(Keygen::Kept);
    }
    if if_missing {
        // Create only: a file that exists, or that another run creates first, is left alone.
        return match write_new_key_file(path, id) {
            Ok(_) => Ok(Keygen::Created),
            Err(KeyfileError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                Ok(Keygen::Kept)
            }
            Err(e) => Err(e),
        };
    }
    let added = add_new_key(path, id)?;
    if added.created_file {
        Ok(Keygen::Created)
    } else {
        Ok(Keygen::Added {
            readable_by_others: readable_by_others(path),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_adds_and_keeps() {
        let dir = std::env::temp_dir().join(format!("rpckit-keygen-{}", std::process::id()));
        let path = dir.join("keyring");
        let (a, b) = (KeyId::new("a").unwrap(), KeyId::new("b").unwrap());
        assert_eq!(keygen(&path, &a, true).unwrap(), Keygen::Created);
        assert_eq!(keygen(&path, &b, true).unwrap(), Keygen::Kept);
        assert!(matches!(
            keygen(&path, &b, false).unwrap(),
            Keygen::Added {
                readable_by_others: false
            }
        ));
        assert!(matches!(
            keygen(&path, &b, false),
            Err(KeyfileError::DuplicateId { .. })
        ));
        assert_eq!(crate::load(&path).unwrap().len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
