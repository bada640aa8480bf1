//! The error of every keyring file and environment operation.

use rpckit_proto::KeyError;

/// Why a keyring file or a key from the environment was refused, or could not be read or
/// written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyfileError {
    /// A line of the keyring file is not `<key-id> <hex secret>`.
    #[error("{path}:{line}: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The file holds no key.
    #[error("{0}: no key in keyring file")]
    Empty(String),
    /// The keyring file already has a key with that id.
    #[error("{path}: already has a key with id {id:?}")]
    DuplicateId {
        /// The file.
        path: String,
        /// The key id.
        id: String,
    },
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A key id or secret from the environment is invalid.
    #[error("{what}: {source}")]
    Env {
        /// What was invalid: `key id`, or the variable holding the secret (`RPC_KEY`).
        what: &'static str,
        /// Why.
        source: KeyError,
    },
}
