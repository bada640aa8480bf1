//! Finds the key to authenticate with: RPC_KEY from the environment, or the keyring file.

use rpckit_proto::{KeyId, SecretKey};

use crate::Target;

/// The key id and secret named by the flags and environment.
pub fn load(target: &Target) -> Result<(KeyId, SecretKey), String> {
    // --key-id already falls back to RPC_KEY_ID (clap reads it), then to `default`.
    if let Some(found) =
        rpckit_keyfile::key_from_env(Some(target.key_id.as_deref().unwrap_or("default")))
    {
        return found.map_err(|e| e.to_string());
    }
    let path = target
        .keyring
        .clone()
        .unwrap_or_else(rpckit_keyfile::default_keyring_path);
    let ring = rpckit_keyfile::load(&path).map_err(|e| {
        format!(
            "{e} (create one with `rpc-server keygen --keyring {}`, or set RPC_KEY)",
            path.display()
        )
    })?;
    if rpckit_keyfile::readable_by_others(&path) {
        eprintln!(
            "rpc-client: warning: keyring {} is readable by other users; run chmod 600 on it",
            path.display()
        );
    }
    match &target.key_id {
        Some(id) => {
            let id = KeyId::new(id).map_err(|e| format!("key id: {e}"))?;
            let key = ring
                .get(&id)
                .cloned()
                .ok_or_else(|| format!("{}: no key with id {id:?}", path.display()))?;
            Ok((id, key))
        }
        None => ring
            .first()
            .map(|(id, key)| (id.clone(), key.clone()))
            .ok_or_else(|| format!("{}: no key", path.display())),
    }
}
