//! `rpc-server keygen`: creates a private keyring file, adds one key per client service to it,
//! refuses a key id it already has, leaves an existing file alone with `--if-missing` (also when
//! many runs race to create it), and a server on that keyring accepts every key in it.

use std::path::Path;
use std::process::{Command, Output};

use rpckit_integration_tests::{bin, cli, ServerProcess, TempDir};
use rpckit_proto::KeyId;

/// `rpc-server keygen` on `keyring` with `args`, without any key from the environment.
fn keygen_command(keyring: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(bin("rpc-server"));
    command
        .arg("keygen")
        .arg("--keyring")
        .arg(keyring)
        .args(args)
        .env_remove("RPC_KEY")
        .env_remove("RPC_KEY_ID")
        .env_remove("RPC_KEYRING");
    command
}

/// Runs `rpc-server keygen` on `keyring` with `args` (see [`keygen_command`]).
fn keygen(keyring: &Path, args: &[&str]) -> Output {
    keygen_command(keyring, args)
        .output()
        .expect("run rpc-server keygen")
}

#[track_caller]
fn expect_code(out: &Output, want: i32) {
    assert_eq!(out.status.code(), Some(want), "{out:?}");
}

#[test]
fn keygen_creates_then_adds_keys_once_per_id() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("keygen");
    let path = dir.path().join("etc").join("keyring");

    // Created with its directory, private.
    let out = keygen(&path, &["--key-id", "billing"]);
    expect_code(&out, 0);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // A second client service gets its own key in the same file.
    let out = keygen(&path, &["--key-id", "search"]);
    expect_code(&out, 0);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("added new key \"search\""),
        "{out:?}"
    );
    let ring = rpckit_keyfile::load(&path).expect("keyring parses");
    let ids: Vec<&str> = ring.ids().map(KeyId::as_str).collect();
    assert_eq!(ids, ["billing", "search"]);
    let before = std::fs::read(&path).unwrap();

    // The same id again is refused in one line, and the file is unchanged.
    let out = keygen(&path, &["--key-id", "billing"]);
    expect_code(&out, 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already has a key with id \"billing\""),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);

    // --if-missing leaves an existing file alone.
    expect_code(&keygen(&path, &["--key-id", "other", "--if-missing"]), 0);
    assert_eq!(std::fs::read(&path).unwrap(), before);

    // A server on that keyring accepts both clients, each with its own key id.
    let server = ServerProcess::start(&path, &[]);
    for id in ["billing", "search"] {
        let out = cli(
            server.addr,
            &path,
            &["--key-id", id, "call", "uppercase", id],
        );
        expect_code(&out, 0);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            id.to_uppercase()
        );
    }
}

#[test]
fn keygen_if_missing_started_many_times_at_once_writes_one_key_and_all_succeed() {
    // As when `make run` starts in two terminals at once: every run succeeds, one writes the
    // file, the others leave it alone, and the file holds one whole key.
    const RUNS: usize = 6;
    let dir = TempDir::new("keygen-race");
    let path = dir.path().join("keyring");
    let runs: Vec<_> = (0..RUNS)
        .map(|_| {
            keygen_command(&path, &["--if-missing"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("start rpc-server keygen")
        })
        .collect();
    let outs: Vec<Output> = runs
        .into_iter()
        .map(|run| run.wait_with_output().expect("keygen runs"))
        .collect();
    for out in &outs {
        expect_code(out, 0);
    }
    let said = |what: &str| {
        outs.iter()
            .filter(|out| String::from_utf8_lossy(&out.stdout).contains(what))
            .count()
    };
    assert_eq!(said("wrote new key"), 1, "{outs:?}");
    assert_eq!(said("already exists; not touched"), RUNS - 1, "{outs:?}");
    assert_eq!(
        rpckit_keyfile::load(&path).expect("keyring parses").len(),
        1
    );
    // Nothing but the keyring is left in the directory.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(names, ["keyring"]);
}
