//! `rpc-server`'s keys: `keygen`, the keys to serve with (RPC_KEY or the keyring file), and
//! the keyring reloaded on SIGHUP.

use std::path::PathBuf;
use std::process::ExitCode;

use futures_lite::StreamExt;
use rpckit_keyfile::Keygen;
use rpckit_proto::{KeyId, Keyring};
use rpckit_server::KeyringHandle;
use tracing::{info, warn};

use crate::args::{KeygenArgs, ServeArgs};

/// `rpc-server keygen`: adds a new random key to a keyring file.
pub(crate) fn keygen(args: KeygenArgs) -> ExitCode {
    let path = args
        .keyring
        .unwrap_or_else(rpckit_keyfile::default_keyring_path);
    let exists_message = || println!("keyring {} already exists; not touched", path.display());
    // Checked first, so that a keyring in a directory we may not write to is still left alone.
    if args.if_missing && path.exists() {
        exists_message();
        return ExitCode::SUCCESS;
    }
    let id = match KeyId::new(&args.key_id) {
        Ok(id) => id,
        Err(e) => {
            eprintln!("rpc-server: {e}");
            return ExitCode::from(2);
        }
    };
    match rpckit_keyfile::keygen(&path, &id, args.if_missing) {
        Ok(Keygen::Added { readable_by_others }) => {
            println!("added new key \"{id}\" to {}", path.display());
            if readable_by_others {
                eprintln!(
                    "rpc-server: warning: {} is readable by group or others (chmod 600 it)",
                    path.display()
                );
            }
            ExitCode::SUCCESS
        }
        Ok(Keygen::Created) => {
            println!("wrote new key \"{id}\" to {} (mode 0600)", path.display());
            ExitCode::SUCCESS
        }
        Ok(_) => {
            exists_message();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rpc-server: cannot write key: {e}");
            ExitCode::from(1)
        }
    }
}

/// The keys to accept: RPC_KEY from the environment, or the keyring file (whose path comes
/// back too, for reloads).
pub(crate) fn load_keys(args: &ServeArgs) -> Result<(Keyring, Option<PathBuf>), String> {
    if let Some(found) = rpckit_keyfile::key_from_env(None) {
        let (id, key) = found.map_err(|e| e.to_string())?;
        let mut ring = Keyring::new();
        ring.insert(id, key);
        return Ok((ring, None));
    }
    let path = args
        .keyring
        .clone()
        .unwrap_or_else(rpckit_keyfile::default_keyring_path);
    let ring = rpckit_keyfile::load(&path).map_err(|e| {
        format!(
            "{e}\n  create a key with `rpc-server keygen --keyring {}`, or set RPC_KEY",
            path.display()
        )
    })?;
    if rpckit_keyfile::readable_by_others(&path) {
        warn!(path = %path.display(), "keyring file is readable by other users; run chmod 600 on it");
    }
    Ok((ring, Some(path)))
}

/// On each SIGHUP, reloads the keyring file (`keyring`, `None` when the key came from
/// RPC_KEY) into `handle`. Never returns (so it can race a future of any output); does not
/// touch the drain's signals.
pub(crate) async fn reload_on_hangup<T>(
    mut hangups: async_signal::Signals,
    handle: KeyringHandle,
    keyring: Option<PathBuf>,
) -> T {
    while let Some(Ok(_)) = hangups.next().await {
        match &keyring {
            // Logged and counted by the handle; a file that does not parse leaves the keys.
            Some(path) => {
                info!(path = %path.display(), "SIGHUP: reloading the keyring");
                let _ = handle.reload(path);
            }
            None => info!("SIGHUP: the key comes from RPC_KEY; nothing to reload"),
        }
    }
    std::future::pending().await
}
