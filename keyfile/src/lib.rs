//! # rpckit-keyfile: keyring files and keys from the environment
//!
//! `rpckit-proto` holds keys in memory ([`Keyring`], [`KeyId`], [`SecretKey`]); this crate
//! gets them there and back:
//!
//! 1. [`format`]: the keyring file format, UTF-8 text with one key per line,
//!    `<key-id> <secret as hex>`; blank lines and lines starting with `#` are ignored
//!    ([`parse`], [`to_file_text`]);
//! 2. [`file`]: reading a keyring file ([`load`]) and writing keys to one ([`write_new_key_file`],
//!    [`add_new_key`]), with mode 0600 and file locks against concurrent writers;
//! 3. [`keygen`]: what `rpc-server keygen` does with a path and a key id;
//! 4. [`env`]: one key from `RPC_KEY` / `RPC_KEY_ID` instead of a file, and where the keyring
//!    lives when no path is given ([`default_keyring_path`]).
//!
//! Secrets are never compiled into the code: they come from such a file (written by `keygen`,
//! mode 0600) or from the environment.

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

pub mod env;
mod error;
pub mod file;
pub mod format;
pub mod keygen;

pub use env::{default_keyring_path, key_from_env, KEY_ENV, KEY_ID_ENV};
pub use error::KeyfileError;
pub use file::{add_new_key, load, readable_by_others, write_new_key_file, AddedKey};
pub use format::{parse, to_file_text};
pub use keygen::{keygen, Keygen};
pub use rpckit_proto::{KeyError, KeyId, Keyring, SecretKey};
