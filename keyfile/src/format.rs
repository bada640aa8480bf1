//! The keyring file format: one key per line, `<key-id> <hex secret>`; blank lines and lines
//! starting with `#` are ignored.

use rpckit_proto::{KeyId, Keyring, SecretKey};

use crate::KeyfileError;

/// Parses keyring text; `origin` (a path, usually) names it in errors. A keyring with no key,
/// or with the same id twice, is refused.
pub fn parse(text: &str, origin: &str) -> Result<Keyring, KeyfileError> {
    let mut ring = Keyring::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parse_err = |reason: String| KeyfileError::Parse {
            path: origin.to_owned(),
            line: index + 1,
            reason,
        };
        let mut fields = line.split_whitespace();
        let (Some(id), Some(secret), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(parse_err("expected `<key-id> <hex secret>`".into()));
        };
        // Neither field is echoed: either may hold a secret (a line with its fields swapped).
        if SecretKey::from_hex(id).is_ok() && SecretKey::from_hex(secret).is_err() {
            return Err(parse_err(
                "the fields look swapped: expected `<key-id> <hex secret>`".into(),
            ));
        }
        let id = KeyId::new(id)
            .map_err(|_| parse_err("invalid key id: 1 to 64 of A-Z a-z 0-9 . _ -".into()))?;
        let key = SecretKey::from_hex(secret).map_err(|e| parse_err(e.to_string()))?;
        if ring.get(&id).is_some() {
            return Err(parse_err(format!("key id {id} appears twice")));
        }
        ring.insert(id, key);
    }
    if ring.is_empty() {
        return Err(KeyfileError::Empty(origin.to_owned()));
    }
    Ok(ring)
}

/// Renders `ring` in the file format, keys in the order they were added.
pub fn to_file_text(ring: &Keyring) -> String {
    let mut text = String::from("# rpckit keyring: <key-id> <hex secret>, one per line\n");
    for id in ring.ids() {
        if let Some(key) = ring.get(id) {
            text.push_str(&format!("{id} {}\n", key.to_hex()));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_never_echo_a_secret() {
        let secret = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let long = format!("{secret}{secret}");
        for line in [
            format!("{secret} alpha"),
            format!("{long} alpha"),
            format!("{long} {long}"),
            format!("alpha {secret}zz"),
        ] {
            let error = parse(&line, "test").expect_err(&line).to_string();
            assert!(!error.contains(&secret[..16]), "{error}");
        }
        let swapped = parse(&format!("{secret} alpha"), "test").unwrap_err();
        assert!(swapped.to_string().contains("swapped"), "{swapped}");
    }

    #[test]
    fn keyring_file_round_trip() {
        let text = "# comment\n\nalpha 000102030405060708090a0b0c0d0e0f\nbeta 101112131415161718191a1b1c1d1e1f\n";
        let ring = parse(text, "test").unwrap();
        assert_eq!(ring.len(), 2);
        assert_eq!(ring.first().unwrap().0.as_str(), "alpha");
        let again = parse(&to_file_text(&ring), "again").unwrap();
        let beta = KeyId::new("beta").unwrap();
        assert_eq!(again.get(&beta), ring.get(&beta));
    }

    #[test]
    fn bad_keyrings_are_refused_with_the_line() {
        for (text, line) in [
            ("alpha\n", 1),
            ("alpha 00\n", 1),
            ("# c\nalpha zz\n", 2),
            ("bad/id 000102030405060708090a0b0c0d0e0f\n", 1),
            (
                "a 000102030405060708090a0b0c0d0e0f\na 000102030405060708090a0b0c0d0e0f\n",
                2,
            ),
        ] {
            match parse(text, "t") {
                Err(KeyfileError::Parse { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
        assert!(matches!(
            parse("# nothing\n", "t"),
            Err(KeyfileError::Empty(_))
        ));
    }
}
