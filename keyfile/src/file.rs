//! Keyring files on disk: reading one under a shared lock, creating one with a fresh key
//! (mode 0600, whole or not at all), and adding a key to one under an exclusive lock.

use std::io::{Read, Write};
use std::path::Path;

use rpckit_proto::{KeyId, Keyring, SecretKey};

use crate::KeyfileError;

/// Reads and parses the keyring file at `path`, under a shared lock (see [`add_new_key`]).
pub fn load(path: &Path) -> Result<Keyring, KeyfileError> {
    let text = read_locked(path).map_err(|source| KeyfileError::Io {
        path: path.display().to_string(),
        source,
    })?;
    crate::parse(&text, &path.display().to_string())
}

/// Whether a key file has any permission bit for group or others (Unix mode `& 0o077`):
/// readable, writable or executable by users other than its owner.
pub fn readable_by_others(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o077 != 0)
            .unwrap_or(false)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        false
    }
}

/// Reads the keyring file at `path` under a shared lock, so that an [`add_new_key`] running
/// at the same time is seen whole or not at all. A file system that cannot lock is read
/// without one: a server must not fail to start over a guard against a rare race.
fn read_locked(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let _ = file.lock_shared();
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok(text)
}

/// Creates a new keyring file at `path` holding one fresh random key named `id`, with mode
/// 0600, creating missing parent directories (mode 0700). Fails if the file exists (an
/// [`KeyfileError::Io`] of kind `AlreadyExists`).
///
/// The file appears whole or not at all: it is written and synced under a temporary name in
/// the same directory, then linked to `path`, which fails if `path` exists. Two runs racing to
/// create the same keyring leave one file, the winner's, and the loser gets `AlreadyExists`;
/// a server starting meanwhile never reads a half-written key.
pub fn write_new_key_file(path: &Path, id: &KeyId) -> Result<SecretKey, KeyfileError> {
    let io_err = |source| KeyfileError::Io {
        path: path.display().to_string(),
        source,
    };
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(parent).map_err(io_err)?;
    }
    let key = SecretKey::generate();
    let mut ring = Keyring::new();
    ring.insert(id.clone(), key.clone());
    let file_name = path.file_name().unwrap_or_else(|| "keyring".as_ref());
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(format!(
        ".{}.{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    let temp = parent.unwrap_or_else(|| Path::new(".")).join(temp_name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&temp).and_then(|mut file| {
        file.write_all(crate::to_file_text(&ring).as_bytes())?;
        file.sync_all()?;
        std::fs::hard_link(&temp, path)
    });
    // The temporary name goes whatever happened; once linked, `path` holds the file.
    let _ = std::fs::remove_file(&temp);
    written.map_err(io_err)?;
    Ok(key)
}

/// A key made by [`add_new_key`].
#[derive(Debug)]
pub struct AddedKey {
    /// The new key.
    pub key: SecretKey,
    /// Whether the keyring file was made for it (else it was added to an existing one).
    pub created_file: bool,
}

/// Adds a fresh random key named `id` to the keyring file at `path` and returns it. A file
/// that does not exist is created as by [`write_new_key_file`]. An existing file must parse
/// (it may hold comments only) and have no key `id` yet; the new key is appended as one line,
/// and nothing else in the file changes (its mode included).
///
/// The check and the append happen under an exclusive lock on the file (and
/// [`load`] reads under a shared one), so runs adding keys at the same time cannot
/// both add the same id, and a reader sees each line whole. (On a file system that cannot
/// lock files, both go ahead without the lock.)
pub fn add_new_key(path: &Path, id: &KeyId) -> Result<AddedKey, KeyfileError> {
    let origin = path.display().to_string();
    let io_err = |source| KeyfileError::Io {
        path: origin.clone(),
        source,
    };
    let open = || {
        std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .open(path)
    };
    let mut file = match open() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match write_new_key_file(path, id) {
                Ok(key) => {
                    return Ok(AddedKey {
                        key,
                        created_file: true,
                    })
                }
                // Another run created it meanwhile: add to that one.
                Err(KeyfileError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::AlreadyExists =>
                {
                    open().map_err(io_err)?
                }
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(io_err(e)),
        Ok(file) => file,
    };
    // Best effort, as in `read_locked`: where the file system cannot lock, adding works as
    // it did without the lock.
    let _ = file.lock();
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(io_err)?;
    match crate::parse(&text, &origin) {
        Ok(ring) if ring.get(id).is_some() => {
            return Err(KeyfileError::DuplicateId {
                path: origin,
                id: id.to_string(),
            })
        }
        Ok(_) | Err(KeyfileError::Empty(_)) => {}
        Err(e) => return Err(e),
    }
    let key = SecretKey::generate();
    let separator = if text.is_empty() || text.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    let line = format!("{separator}{id} {}\n", key.to_hex());
    file.write_all(line.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_err)?;
    Ok(AddedKey {
        key,
        created_file: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn new_key_file_is_private_and_not_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("rpckit-keytest-{}", std::process::id()));
        let path = dir.join("sub").join("keyring");
        let id = KeyId::new("dev").unwrap();
        let key = write_new_key_file(&path, &id).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!readable_by_others(&path));
        assert_eq!(load(&path).unwrap().get(&id), Some(&key));
        match write_new_key_file(&path, &id) {
            Err(KeyfileError::Io { source, .. }) => {
                assert_eq!(source.kind(), std::io::ErrorKind::AlreadyExists)
            }
            other => panic!("want AlreadyExists, got {other:?}"),
        }
        assert_eq!(load(&path).unwrap().get(&id), Some(&key));
        // No temporary file is left beside it, after a success or a refusal.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, ["keyring"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Runs `run(0..n)` on `n` threads released together, and returns their results in order.
    fn at_once<T: Send>(n: usize, run: impl Fn(usize) -> T + Sync) -> Vec<T> {
        let start = std::sync::Barrier::new(n);
        std::thread::scope(|scope| {
            let threads: Vec<_> = (0..n)
                .map(|i| {
                    let (start, run) = (&start, &run);
                    scope.spawn(move || {
                        start.wait();
                        run(i)
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        })
    }

    #[cfg(unix)]
    #[test]
    fn keys_added_at_the_same_time_to_a_missing_file_all_land_once() {
        const RUNS: usize = 8;
        let dir = std::env::temp_dir().join(format!("rpckit-racekey-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("keyring");
        let added = at_once(RUNS, |i| {
            add_new_key(&path, &KeyId::new(&format!("svc{i}")).unwrap()).unwrap()
        });
        // One run created the file; every other one added its key to it, none was lost.
        assert_eq!(added.iter().filter(|a| a.created_file).count(), 1);
        let ring = load(&path).unwrap();
        assert_eq!(ring.len(), RUNS);
        for (i, a) in added.iter().enumerate() {
            let id = KeyId::new(&format!("svc{i}")).unwrap();
            assert_eq!(ring.get(&id), Some(&a.key));
        }
        // The same id from every run at once: exactly one adds it.
        let dup = KeyId::new("shared").unwrap();
        let outcomes = at_once(RUNS, |_| match add_new_key(&path, &dup) {
            Ok(_) => true,
            Err(KeyfileError::DuplicateId { .. }) => false,
            Err(e) => panic!("{e}"),
        });
        assert_eq!(outcomes.iter().filter(|added| **added).count(), 1);
        assert_eq!(load(&path).unwrap().len(), RUNS + 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn keys_are_added_to_an_existing_file_once_per_id() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("rpckit-addkey-{}", std::process::id()));
        let path = dir.join("keyring");
        let (dev, billing) = (KeyId::new("dev").unwrap(), KeyId::new("billing").unwrap());
        // Created when missing, private.
        let first = add_new_key(&path, &dev).unwrap().key;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A second id is appended; the first key is unchanged.
        let second = add_new_key(&path, &billing).unwrap().key;
        let ring = load(&path).unwrap();
        assert_eq!(ring.len(), 2);
        assert_eq!(ring.get(&dev), Some(&first));
        assert_eq!(ring.get(&billing), Some(&second));
        // The same id again is refused, and the file is left as it was.
        let before = std::fs::read(&path).unwrap();
        assert!(matches!(
            add_new_key(&path, &billing),
            Err(KeyfileError::DuplicateId { .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), before);
        // A last line without its newline, and a file of comments only, are fine.
        std::fs::write(&path, "# keys\ndev 000102030405060708090a0b0c0d0e0f").unwrap();
        add_new_key(&path, &billing).unwrap();
        assert_eq!(load(&path).unwrap().len(), 2);
        std::fs::write(&path, "# no keys yet\n").unwrap();
        add_new_key(&path, &dev).unwrap();
        assert_eq!(load(&path).unwrap().len(), 1);
        // A file that does not parse is not touched.
        std::fs::write(&path, "not a keyring line\n").unwrap();
        assert!(matches!(
            add_new_key(&path, &dev),
            Err(KeyfileError::Parse { .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"not a keyring line\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
