//! Property tests for the keyring file parser: random and mutated text never panics, every
//! refusal names a line of the text or says the file is empty, and what parses round-trips
//! through `to_file_text`.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

use rpckit_keyfile::{parse, to_file_text, KeyfileError};
use rpckit_proto::{KeyId, SecretKey};

/// One edit of a byte string.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Truncate(Index),
    Insert(Index, u8),
    Remove(Index),
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    vec(
        prop_oneof![
            (any::<Index>(), 1..=255u8).prop_map(|(i, x)| Mutation::Flip(i, x)),
            any::<Index>().prop_map(Mutation::Truncate),
            (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
            any::<Index>().prop_map(Mutation::Remove),
        ],
        1..4,
    )
}

fn mutate(mut data: Vec<u8>, edits: &[Mutation]) -> Vec<u8> {
    for edit in edits {
        let len = data.len();
        match edit {
            Mutation::Flip(i, x) if len > 0 => data[i.index(len)] ^= x,
            Mutation::Truncate(i) if len > 0 => data.truncate(i.index(len)),
            Mutation::Insert(i, b) => data.insert(i.index(len + 1), *b),
            Mutation::Remove(i) if len > 0 => {
                data.remove(i.index(len));
            }
            _ => {}
        }
    }
    data
}

fn key_id_text() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._-]{1,64}"
}

fn secret_hex() -> impl Strategy<Value = String> {
    vec(any::<u8>(), 16..=64).prop_map(hex::encode)
}

fn keyring_line() -> impl Strategy<Value = String> {
    prop_oneof![
        (key_id_text(), secret_hex(), "[ \t]{1,3}", "[ \t]{0,2}")
            .prop_map(|(id, secret, sep, pad)| format!("{pad}{id}{sep}{secret}{pad}")),
        "#[^\n\r]{0,20}",
        "[ \t]{0,3}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn random_keyring_text_never_panics_and_what_parses_round_trips(text in "\\PC{0,200}") {
        check_keyring(&text)?;
    }

    #[test]
    fn keyring_grammar_parses_or_points_at_a_line(
        lines in vec(keyring_line(), 0..8),
        edits in mutations(),
        mutate_it in any::<bool>(),
    ) {
        let mut text = lines.join("\n");
        if mutate_it {
            text = String::from_utf8_lossy(&mutate(text.into_bytes(), &edits)).into_owned();
        }
        check_keyring(&text)?;
        if !mutate_it {
            // Without edits the only possible failures are an empty file or a repeated id.
            match parse(&text, "t") {
                Ok(ring) => {
                    let ids: Vec<&str> = lines
                        .iter()
                        .filter_map(|l| l.split_whitespace().next())
                        .filter(|w| !w.starts_with('#'))
                        .collect();
                    prop_assert_eq!(ring.len(), ids.len());
                }
                Err(KeyfileError::Empty(_)) => {}
                Err(KeyfileError::Parse { reason, .. }) => {
                    prop_assert!(reason.contains("appears twice"), "{}", reason);
                }
                Err(other) => prop_assert!(false, "unexpected {:?}", other),
            }
        }
    }
}

fn check_keyring(text: &str) -> Result<(), TestCaseError> {
    match parse(text, "prop") {
        Ok(ring) => {
            prop_assert!(!ring.is_empty());
            for id in ring.ids() {
                prop_assert!(KeyId::new(id.as_str()).is_ok());
                let secret = ring.get(id).unwrap();
                prop_assert!(SecretKey::new(secret.expose().to_vec()).is_ok());
            }
            let again = parse(&to_file_text(&ring), "again").unwrap();
            prop_assert_eq!(
                again.ids().collect::<Vec<_>>(),
                ring.ids().collect::<Vec<_>>()
            );
            for id in ring.ids() {
                prop_assert_eq!(again.get(id), ring.get(id));
            }
        }
        Err(KeyfileError::Parse { line, .. }) => {
            prop_assert!(line >= 1 && line <= text.lines().count());
        }
        Err(KeyfileError::Empty(_)) => {}
        Err(other) => prop_assert!(false, "unexpected {:?}", other),
    }
    Ok(())
}
