//! Keys from the environment instead of a file, and where the keyring file lives by default.

use std::path::PathBuf;

use rpckit_proto::{KeyId, SecretKey};

use crate::KeyfileError;

/// Environment variable that holds one secret, in hex, instead of a keyring file.
pub const KEY_ENV: &str = "RPC_KEY";

/// Environment variable naming the key id of the secret in [`KEY_ENV`].
pub const KEY_ID_ENV: &str = "RPC_KEY_ID";

/// The key given in the environment, if [`KEY_ENV`] is set: its id is `id`, else
/// [`KEY_ID_ENV`], else `default`. Errors name what is at fault ([`KeyfileError::Env`]) and
/// never echo the secret.
///
/// [`KEY_ENV`] is removed from the environment once read, so that child processes and later
/// lookups do not find it (the kernel's copy of the initial environment, in
/// `/proc/PID/environ`, stays; only the same user and root can read it). Call this at start,
/// before other threads use the environment.
pub fn key_from_env(id: Option<&str>) -> Option<Result<(KeyId, SecretKey), KeyfileError>> {
    let hex = zeroize::Zeroizing::new(std::env::var(KEY_ENV).ok()?);
    std::env::remove_var(KEY_ENV);
    let id = match id {
        Some(id) => id.to_owned(),
        None => std::env::var(KEY_ID_ENV).unwrap_or_else(|_| "default".into()),
    };
    let env_err = |what| move |source| KeyfileError::Env { what, source };
    Some(KeyId::new(&id).map_err(env_err("key id")).and_then(|id| {
        let key = SecretKey::from_hex(&hex).map_err(env_err(KEY_ENV))?;
        Ok((id, key))
    }))
}

/// Where `rpc-server` and `rpc-client` look for the keyring when no path is given:
/// `$XDG_CONFIG_HOME/rpckit/keyring`, else `$HOME/.config/rpckit/keyring`, else
/// `.rpckit/keyring` in the current directory.
pub fn default_keyring_path() -> PathBuf {
    let nonempty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = nonempty("XDG_CONFIG_HOME") {
        return PathBuf::from(dir).join("rpckit").join("keyring");
    }
    if let Some(home) = nonempty("HOME") {
        return PathBuf::from(home)
            .join(".config")
            .join("rpckit")
            .join("keyring");
    }
    PathBuf::from(".rpckit").join("keyring")
}
