//! The hex test vectors of `docs/PROTOCOL.md`, recomputed from the code.
//!
//! Every value is checked three ways: against the crate's own functions (`client_hello`,
//! `client_proof`, `derive_session_keys`, the session writer, ...), against a from-scratch
//! computation that follows the document's description byte by byte (HMAC over the documented
//! proof input, HKDF with the documented salt and info, HMAC over `seq | payload`), and against
//! the exact bytes each side writes when the real `connect_with_nonce`/`accept_with_nonce` run
//! over a socket pair with the fixed nonces. A last test checks that every hex string here
//! appears verbatim in `docs/PROTOCOL.md`, so the document cannot drift from the code.
//!
//! This file holds suite 1 (HMAC-SHA256: frames at seq 0 and 1) and the inputs every suite
//! shares; the encrypting suites' vectors are in `aead`.

use async_std::os::unix::net::UnixStream;
use hkdf::Hkdf;
use hmac::{KeyInit, Mac};
use sha2::Sha256;

use crate::demo::{Request, Response};
use crate::handshake::{
    accept_with_nonce, client_hello, client_proof, connect_with_nonce, derive_session_keys,
    server_hello, server_proof, server_refusal, HandshakeConfig, Refusal, NONCE_LEN, STATUS_OK,
    TYPE_CLIENT_PROOF, TYPE_SERVER_PROOF,
};
use crate::keyring::{KeyId, Keyring, SecretKey};
use crate::message::{self, ClientHeader, ClientMessage, RpcError, ServerMessage};
use crate::session::{HmacSha256, SessionWriter};
use crate::test_support::Recorder;

mod aead;

/// The shared secret: bytes 0x00 to 0x1f.
const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
/// The key id.
const KEY_ID: &str = "test-key";
/// The client's nonce: 32 × 0x11.
const NONCE_C: &str = "1111111111111111111111111111111111111111111111111111111111111111";
/// The server's nonce: 32 × 0x22.
const NONCE_S: &str = "2222222222222222222222222222222222222222222222222222222222222222";

/// ClientHello: magic, version 1, type 1, suite 1, nonce_c, key id length 8, "test-key".
const CLIENT_HELLO: &str =
    "5250434b0101011111111111111111111111111111111111111111111111111111111111111111\
                            08746573742d6b6579";
/// ServerHello (accepting): magic, version 1, type 2, status 0, suite 1, nonce_s.
const SERVER_HELLO: &str =
    "5250434b0102000122222222222222222222222222222222222222222222222222222222222222\
                            22";
/// Input of the client's proof: label, 'C', suite, key id length, key id, nonce_c, nonce_s.
const CLIENT_PROOF_INPUT: &str = "7270636b69742d76312070726f6f66430108746573742d6b6579\
                                  1111111111111111111111111111111111111111111111111111111111111111\
                                  2222222222222222222222222222222222222222222222222222222222222222";
/// Input of the server's proof: as the client's, with role byte 'S'.
const SERVER_PROOF_INPUT: &str = "7270636b69742d76312070726f6f66530108746573742d6b6579\
                                  1111111111111111111111111111111111111111111111111111111111111111\
                                  2222222222222222222222222222222222222222222222222222222222222222";
/// HMAC-SHA256(key, client proof input).
const CLIENT_PROOF: &str = "67b90502bfeae2d45f7bab55208dc569c3ddda37c164ffc3f6422c358829d20d";
/// ClientProof message: type 3, then the proof.
const CLIENT_PROOF_MSG: &str = "0367b90502bfeae2d45f7bab55208dc569c3ddda37c164ffc3f6422c358829d20d";
/// HMAC-SHA256(key, server proof input).
const SERVER_PROOF: &str = "cdec3c181c17df8f87f68b6e27e0668ccd531036e78944a3073b55ecfe6b62cb";
/// ServerProof message (accepting): type 4, status 0, then the proof.
const SERVER_PROOF_MSG: &str =
    "0400cdec3c181c17df8f87f68b6e27e0668ccd531036e78944a3073b55ecfe6b62cb";
/// HKDF salt: nonce_c | nonce_s.
const HKDF_SALT: &str = "1111111111111111111111111111111111111111111111111111111111111111\
                         2222222222222222222222222222222222222222222222222222222222222222";
/// HKDF-Extract output: HMAC-SHA256(salt, key).
const HKDF_PRK: &str = "9059825a6c7c3fb4c625fbf5218c9546b606853c279f81067a25aa71af682c6b";
/// HKDF info of the client-to-server key: "rpckit-v1 c2s", key id length, key id.
const INFO_C2S: &str = "7270636b69742d76312063327308746573742d6b6579";
/// HKDF info of the server-to-client key: "rpckit-v1 s2c", key id length, key id.
const INFO_S2C: &str = "7270636b69742d76312073326308746573742d6b6579";
/// Client-to-server session key.
const KEY_C2S: &str = "91294e0152abed278358e6319cededc5cc5663b4401c9321e4ca5e5f07e1f40a";
/// Server-to-client session key.
const KEY_S2C: &str = "e3749f72a2317bc7365d58355efa58e0233a35b1b629b85c830768cb431b337a";

/// Payload of the first client frame: `Call { id: 1, deadline_ms: None }` then
/// `Request::Uppercase("hello")`.
const CLIENT_PAYLOAD: &str = "0000000001000000000000000001000000050000000000000068656c6c6f";
/// Tag of the first client frame: HMAC-SHA256(KEY_C2S, seq 0 as u64 BE | payload).
const CLIENT_TAG: &str = "a7e666e6314039cd3f5bc9e79d3a23e7fcf01645ccdf78cebbf0507ea9f7c67d";
/// The first client frame: length 62 (30 + 32), payload, tag.
const CLIENT_FRAME: &str = "0000003e\
                            0000000001000000000000000001000000050000000000000068656c6c6f\
                            a7e666e6314039cd3f5bc9e79d3a23e7fcf01645ccdf78cebbf0507ea9f7c67d";
/// Payload of the first server frame: `Reply { id: 1 }` then `Response::Uppercase("HELLO")`.
const SERVER_PAYLOAD: &str = "00000000010000000000000001000000050000000000000048454c4c4f";
/// Tag of the first server frame: HMAC-SHA256(KEY_S2C, seq 0 as u64 BE | payload).
const SERVER_TAG: &str = "657a66f308962b589e3a4c0a1b25233ccf8fd5ed47d18b9b555cd894214669a5";
/// The first server frame: length 61 (29 + 32), payload, tag.
const SERVER_FRAME: &str = "0000003d\
                            00000000010000000000000001000000050000000000000048454c4c4f\
                            657a66f308962b589e3a4c0a1b25233ccf8fd5ed47d18b9b555cd894214669a5";

/// Payload of `Call { id: 2, deadline_ms: Some(1500) }` then `Request::Echo([1, 2, 3])`.
const CALL_WITH_DEADLINE_PAYLOAD: &str =
    "00000000020000000000000001dc05000000000000000000000300000000000000010203";
/// Payload of `Error { id: 2, error: RpcError::Application("nope") }`.
const ERROR_PAYLOAD: &str = "0100000002000000000000000600000004000000000000006e6f7065";
/// ServerHello refusing with status 1 (bad magic), as sent in answer to an HTTP request.
const REFUSAL_BAD_MAGIC: &str = "5250434b010201";
/// ServerProof refusing with status 8 (authentication failed).
const REFUSAL_AUTH_FAILED: &str = "0408";

/// Payload of the second client frame: `Call { id: 2, deadline_ms: None }` then
/// `Request::Uppercase("world")`.
const CLIENT_PAYLOAD_1: &str = "00000000020000000000000000010000000500000000000000776f726c64";
/// Payload of the second server frame: `Reply { id: 2 }` then `Response::Uppercase("WORLD")`.
const SERVER_PAYLOAD_1: &str = "000000000200000000000000010000000500000000000000574f524c44";
/// Suite 1: the second client frame (seq 1, CLIENT_PAYLOAD_1): length 62, payload, tag =
/// HMAC-SHA256(KEY_C2S, seq 1 as u64 BE | payload).
const CLIENT_FRAME_1: &str = "0000003e\
                              00000000020000000000000000010000000500000000000000776f726c64\
                              dae399ccb985c097b8d2d52f389ff6e09bbd612cc4e3ea8eb4d90d54a00ed814";
/// Suite 1: the second server frame (seq 1, SERVER_PAYLOAD_1): length 61, payload, tag.
const SERVER_FRAME_1: &str = "0000003d\
                              000000000200000000000000010000000500000000000000574f524c44\
                              eb352554864a9c2265f56aa0c6c56fec1b5a92e5dbe3bf1a9fb5283ec599ddec";
/// ServerHello refusing with status 9 (suite not allowed).
const REFUSAL_SUITE_NOT_ALLOWED: &str = "5250434b010209";

/// Every hex string above, with its name, for the document check.
const ALL: &[(&str, &str)] = &[
    ("KEY", KEY),
    ("NONCE_C", NONCE_C),
    ("NONCE_S", NONCE_S),
    ("CLIENT_HELLO", CLIENT_HELLO),
    ("SERVER_HELLO", SERVER_HELLO),
    ("CLIENT_PROOF_INPUT", CLIENT_PROOF_INPUT),
    ("SERVER_PROOF_INPUT", SERVER_PROOF_INPUT),
    ("CLIENT_PROOF", CLIENT_PROOF),
    ("CLIENT_PROOF_MSG", CLIENT_PROOF_MSG),
    ("SERVER_PROOF", SERVER_PROOF),
    ("SERVER_PROOF_MSG", SERVER_PROOF_MSG),
    ("HKDF_SALT", HKDF_SALT),
    ("HKDF_PRK", HKDF_PRK),
    ("INFO_C2S", INFO_C2S),
    ("INFO_S2C", INFO_S2C),
    ("KEY_C2S", KEY_C2S),
    ("KEY_S2C", KEY_S2C),
    ("CLIENT_PAYLOAD", CLIENT_PAYLOAD),
    ("CLIENT_TAG", CLIENT_TAG),
    ("CLIENT_FRAME", CLIENT_FRAME),
    ("SERVER_PAYLOAD", SERVER_PAYLOAD),
    ("SERVER_TAG", SERVER_TAG),
    ("SERVER_FRAME", SERVER_FRAME),
    ("CALL_WITH_DEADLINE_PAYLOAD", CALL_WITH_DEADLINE_PAYLOAD),
    ("ERROR_PAYLOAD", ERROR_PAYLOAD),
    ("REFUSAL_BAD_MAGIC", REFUSAL_BAD_MAGIC),
    ("REFUSAL_AUTH_FAILED", REFUSAL_AUTH_FAILED),
    ("CLIENT_PAYLOAD_1", CLIENT_PAYLOAD_1),
    ("SERVER_PAYLOAD_1", SERVER_PAYLOAD_1),
    ("CLIENT_FRAME_1", CLIENT_FRAME_1),
    ("SERVER_FRAME_1", SERVER_FRAME_1),
    ("REFUSAL_SUITE_NOT_ALLOWED", REFUSAL_SUITE_NOT_ALLOWED),
];

/// The specification document.
const PROTOCOL_MD: &str = include_str!("../../docs/PROTOCOL.md");

fn bytes(hex_str: &str) -> Vec<u8> {
    let compact: String = hex_str.split_whitespace().collect();
    hex::decode(compact).expect("test vectors are valid hex")
}

fn cat(parts: &[&str]) -> Vec<u8> {
    parts.iter().flat_map(|p| bytes(p)).collect()
}

fn key() -> SecretKey {
    SecretKey::new(bytes(KEY)).unwrap()
}

fn key_id() -> KeyId {
    KeyId::new(KEY_ID).unwrap()
}

fn array32(hex_str: &str) -> [u8; NONCE_LEN] {
    bytes(hex_str).try_into().unwrap()
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).unwrap();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

fn call() -> ClientMessage<Request> {
    ClientMessage::Call {
        id: 1,
        deadline: None,
        request: Request::Uppercase("hello".into()),
    }
}

fn reply() -> ServerMessage<Response> {
    ServerMessage::Reply {
        id: 1,
        result: Ok(Response::Uppercase("HELLO".into())),
    }
}

#[test]
fn handshake_messages_match_the_code() {
    let (key, id) = (key(), key_id());
    let (nc, ns) = (array32(NONCE_C), array32(NONCE_S));
    assert_eq!(bytes(NONCE_C), [0x11; 32]);
    assert_eq!(bytes(NONCE_S), [0x22; 32]);
    assert_eq!(bytes(KEY), (0u8..32).collect::<Vec<_>>());

    assert_eq!(client_hello(&nc, &id), bytes(CLIENT_HELLO));
    assert_eq!(server_hello(&ns), bytes(SERVER_HELLO));
    assert_eq!(
        client_proof(&key, &id, &nc, &ns).to_vec(),
        bytes(CLIENT_PROOF)
    );
    assert_eq!(
        server_proof(&key, &id, &nc, &ns).to_vec(),
        bytes(SERVER_PROOF)
    );
    assert_eq!(
        cat(&["03", CLIENT_PROOF]),
        bytes(CLIENT_PROOF_MSG),
        "ClientProof = type 3 | proof"
    );
    assert_eq!(bytes(CLIENT_PROOF_MSG)[0], TYPE_CLIENT_PROOF);
    assert_eq!(cat(&["0400", SERVER_PROOF]), bytes(SERVER_PROOF_MSG));
    assert_eq!(bytes(SERVER_PROOF_MSG)[..2], [TYPE_SERVER_PROOF, STATUS_OK]);
    assert_eq!(
        server_refusal(Refusal::BadMagic).to_vec(),
        bytes(REFUSAL_BAD_MAGIC)
    );
    assert_eq!(
        vec![TYPE_SERVER_PROOF, Refusal::AuthFailed.code()],
        bytes(REFUSAL_AUTH_FAILED)
    );
    assert_eq!(
        server_refusal(Refusal::SuiteNotAllowed).to_vec(),
        bytes(REFUSAL_SUITE_NOT_ALLOWED)
    );

    let keys = derive_session_keys(&key, &id, &nc, &ns);
    assert_eq!(keys.client_to_server.to_vec(), bytes(KEY_C2S));
    assert_eq!(keys.server_to_client.to_vec(), bytes(KEY_S2C));
}

#[test]
fn documented_constructions_give_the_same_values() {
    // Proof inputs, built from the document's description rather than the crate.
    let mut input = b"rpckit-v1 proof".to_vec();
    input.push(b'C');
    input.push(1);
    input.push(KEY_ID.len() as u8);
    input.extend_from_slice(KEY_ID.as_bytes());
    input.extend_from_slice(&bytes(NONCE_C));
    input.extend_from_slice(&bytes(NONCE_S));
    assert_eq!(input, bytes(CLIENT_PROOF_INPUT));
    input[15] = b'S';
    assert_eq!(input, bytes(SERVER_PROOF_INPUT));
    assert_eq!(
        hmac(&bytes(KEY), &[&bytes(CLIENT_PROOF_INPUT)]),
        bytes(CLIENT_PROOF)
    );
    assert_eq!(
        hmac(&bytes(KEY), &[&bytes(SERVER_PROOF_INPUT)]),
        bytes(SERVER_PROOF)
    );

    // HKDF-SHA256 step by step (RFC 5869): PRK = HMAC(salt, IKM), OKM = HMAC(PRK, info | 0x01).
    assert_eq!(bytes(HKDF_SALT), cat(&[NONCE_C, NONCE_S]));
    assert_eq!(hmac(&bytes(HKDF_SALT), &[&bytes(KEY)]), bytes(HKDF_PRK));
    let (prk, hk) = Hkdf::<Sha256>::extract(Some(&bytes(HKDF_SALT)), &bytes(KEY));
    assert_eq!(prk.to_vec(), bytes(HKDF_PRK));
    assert_eq!(bytes(INFO_C2S), b"rpckit-v1 c2s\x08test-key");
    assert_eq!(bytes(INFO_S2C), b"rpckit-v1 s2c\x08test-key");
    for (info, want) in [(INFO_C2S, KEY_C2S), (INFO_S2C, KEY_S2C)] {
        let mut okm = [0u8; 32];
        hk.expand(&bytes(info), &mut okm).unwrap();
        assert_eq!(okm.to_vec(), bytes(want));
        assert_eq!(hmac(&bytes(HKDF_PRK), &[&bytes(info), &[1]]), bytes(want));
    }

    // Frame tags: HMAC(direction key, seq u64 BE | payload).
    let seq0 = 0u64.to_be_bytes();
    assert_eq!(
        hmac(&bytes(KEY_C2S), &[&seq0, &bytes(CLIENT_PAYLOAD)]),
        bytes(CLIENT_TAG)
    );
    assert_eq!(
        hmac(&bytes(KEY_S2C), &[&seq0, &bytes(SERVER_PAYLOAD)]),
        bytes(SERVER_TAG)
    );
    let len = |payload: &str| ((bytes(payload).len() + 32) as u32).to_be_bytes();
    assert_eq!(len(CLIENT_PAYLOAD), [0, 0, 0, 0x3e]);
    assert_eq!(len(SERVER_PAYLOAD), [0, 0, 0, 0x3d]);
    assert_eq!(
        cat(&["0000003e", CLIENT_PAYLOAD, CLIENT_TAG]),
        bytes(CLIENT_FRAME)
    );
    assert_eq!(
        cat(&["0000003d", SERVER_PAYLOAD, SERVER_TAG]),
        bytes(SERVER_FRAME)
    );

    // Seq 1: the tag covers 0000000000000001, so a wrong byte order of the sequence number
    // shows here (at seq 0 every order gives the same bytes).
    let seq1 = 1u64.to_be_bytes();
    for (key, payload, frame) in [
        (KEY_C2S, CLIENT_PAYLOAD_1, CLIENT_FRAME_1),
        (KEY_S2C, SERVER_PAYLOAD_1, SERVER_FRAME_1),
    ] {
        let tag = hmac(&bytes(key), &[&seq1, &bytes(payload)]);
        let body = [bytes(payload), tag].concat();
        let frame_by_hand = [&(body.len() as u32).to_be_bytes()[..], &body].concat();
        assert_eq!(frame_by_hand, bytes(frame), "{frame}");
    }
}

#[test]
fn payloads_match_the_message_encoders() {
    let mut out = Vec::new();
    message::encode_client(&mut out, &call(), 1 << 20).unwrap();
    assert_eq!(out, bytes(CLIENT_PAYLOAD));
    let mut out = Vec::new();
    message::encode_server(&mut out, &reply(), 1 << 20).unwrap();
    assert_eq!(out, bytes(SERVER_PAYLOAD));

    let mut out = Vec::new();
    let with_deadline = ClientMessage::Call {
        id: 2,
        deadline: Some(std::time::Duration::from_millis(1500)),
        request: Request::Echo(vec![1, 2, 3]),
    };
    message::encode_client(&mut out, &with_deadline, 1 << 20).unwrap();
    assert_eq!(out, bytes(CALL_WITH_DEADLINE_PAYLOAD));
    let (header, _) =
        crate::codec::decode_prefix::<ClientHeader>(&bytes(CALL_WITH_DEADLINE_PAYLOAD)).unwrap();
    assert_eq!(
        header,
        ClientHeader::Call {
            id: 2,
            deadline_ms: Some(1500)
        }
    );

    let mut out = Vec::new();
    let error = ServerMessage::<Response>::Reply {
        id: 2,
        result: Err(RpcError::Application("nope".into())),
    };
    message::encode_server(&mut out, &error, 1 << 20).unwrap();
    assert_eq!(out, bytes(ERROR_PAYLOAD));

    let mut out = Vec::new();
    message::encode_client(&mut out, &call_1(), 1 << 20).unwrap();
    assert_eq!(out, bytes(CLIENT_PAYLOAD_1));
    let mut out = Vec::new();
    message::encode_server(&mut out, &reply_1(), 1 << 20).unwrap();
    assert_eq!(out, bytes(SERVER_PAYLOAD_1));
}

#[test]
fn frames_match_the_session_writer() {
    futures_lite::future::block_on(async {
        let mut out = Vec::new();
        let mut writer = SessionWriter::new(&mut out, &array32(KEY_C2S), 1 << 20, Vec::new());
        writer.push_client(&call()).unwrap();
        writer.push_client(&call_1()).unwrap();
        writer.flush().await.unwrap();
        drop(writer);
        assert_eq!(out, cat(&[CLIENT_FRAME, CLIENT_FRAME_1]));

        let mut out = Vec::new();
        let mut writer = SessionWriter::new(&mut out, &array32(KEY_S2C), 1 << 20, Vec::new());
        writer.push_server(&reply()).unwrap();
        writer.push_server(&reply_1()).unwrap();
        writer.flush().await.unwrap();
        drop(writer);
        assert_eq!(out, cat(&[SERVER_FRAME, SERVER_FRAME_1]));
    });
}

/// Runs the real client and server with the fixed nonces over a socket pair and compares the
/// bytes each side wrote with the vectors.
#[test]
fn real_handshake_and_first_frames_write_exactly_the_vectors() {
    async_std::task::block_on(async {
        let (client_sock, server_sock) = UnixStream::pair().unwrap();
        let (client_recorder, client_log) = Recorder::new(client_sock.clone());
        let (server_recorder, server_log) = Recorder::new(server_sock.clone());
        let mut ring = Keyring::new();
        ring.insert(key_id(), key());
        let config = HandshakeConfig::default();
        let (client, server) = futures_lite::future::zip(
            connect_with_nonce(
                client_sock.clone(),
                client_recorder,
                &key_id(),
                &key(),
                &config,
                array32(NONCE_C),
            ),
            accept_with_nonce(
                server_sock.clone(),
                server_recorder,
                &ring,
                &config,
                array32(NONCE_S),
                |_| {},
            ),
        )
        .await;
        let (mut client, mut server) = (client.unwrap(), server.unwrap());
        assert_eq!(server.key_id, key_id());
        assert_eq!(client_log.bytes(), cat(&[CLIENT_HELLO, CLIENT_PROOF_MSG]));
        assert_eq!(server_log.bytes(), cat(&[SERVER_HELLO, SERVER_PROOF_MSG]));

        client.writer.push_client(&call()).unwrap();
        client.writer.flush().await.unwrap();
        let payload = server.reader.recv().await.unwrap().unwrap();
        assert_eq!(payload, bytes(CLIENT_PAYLOAD));
        match message::decode_client::<Request>(payload).unwrap() {
            ClientMessage::Call {
                id: 1,
                deadline: None,
                request: Ok(Request::Uppercase(s)),
            } => assert_eq!(s, "hello"),
            other => panic!("unexpected {other:?}"),
        }

        server.writer.push_server(&reply()).unwrap();
        server.writer.flush().await.unwrap();
        let payload = client.reader.recv().await.unwrap().unwrap();
        assert_eq!(payload, bytes(SERVER_PAYLOAD));

        // The second frame each way: sequence number 1.
        client.writer.push_client(&call_1()).unwrap();
        client.writer.flush().await.unwrap();
        let payload = server.reader.recv().await.unwrap().unwrap();
        assert_eq!(payload, bytes(CLIENT_PAYLOAD_1));
        server.writer.push_server(&reply_1()).unwrap();
        server.writer.flush().await.unwrap();
        let payload = client.reader.recv().await.unwrap().unwrap();
        assert_eq!(payload, bytes(SERVER_PAYLOAD_1));

        assert_eq!(
            client_log.bytes(),
            cat(&[CLIENT_HELLO, CLIENT_PROOF_MSG, CLIENT_FRAME, CLIENT_FRAME_1])
        );
        assert_eq!(
            server_log.bytes(),
            cat(&[SERVER_HELLO, SERVER_PROOF_MSG, SERVER_FRAME, SERVER_FRAME_1])
        );
    });
}

#[test]
fn every_vector_appears_verbatim_in_protocol_md() {
    let missing: Vec<&str> = ALL
        .iter()
        .filter(|(_, hex_str)| !PROTOCOL_MD.contains(hex_str))
        .map(|(name, _)| *name)
        .collect();
    assert!(
        missing.is_empty(),
        "docs/PROTOCOL.md lacks these vectors (or has stale ones): {missing:?}"
    );
    assert!(PROTOCOL_MD.contains(&format!("\"{KEY_ID}\"")));
    for (label, frame) in [("client", CLIENT_FRAME_1), ("server", SERVER_FRAME_1)] {
        let line = format!("{label} seq 1: {frame}");
        assert!(
            PROTOCOL_MD.contains(&line),
            "docs/PROTOCOL.md lacks {line:?}"
        );
    }
}

fn is_hex(token: &str) -> bool {
    !token.is_empty()
        && token.len().is_multiple_of(2)
        && token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The field-by-field breakdowns of the document must add up to the vectors: in every code
/// block laid out as `<hex>  <description>` lines, the hex at the start of the unindented
/// lines concatenates to one of the vectors; in the inline examples of §8, the backquoted
/// fields after a payload concatenate to that payload.
#[test]
fn protocol_md_breakdowns_add_up_to_the_vectors() {
    let vectors: Vec<String> = ALL.iter().map(|(_, v)| v.to_string()).collect();
    let mut breakdowns = 0;
    for (i, block) in PROTOCOL_MD.split("```").enumerate() {
        if i % 2 == 0 {
            continue; // text between code blocks
        }
        let lines: Vec<&str> = block.lines().skip(1).collect();
        let described = lines
            .iter()
            .filter(|l| {
                let mut parts = l.splitn(2, "  ");
                is_hex(parts.next().unwrap_or(""))
                    && parts.next().is_some_and(|d| !d.trim().is_empty())
            })
            .count();
        if described < 2 {
            continue;
        }
        let joined: String = lines
            .iter()
            .filter(|l| !l.starts_with(char::is_whitespace))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|t| is_hex(t))
            .collect();
        assert!(
            vectors.contains(&joined),
            "a breakdown in docs/PROTOCOL.md does not add up to any vector: {joined}"
        );
        breakdowns += 1;
    }
    assert_eq!(
        breakdowns, 5,
        "ClientHello, ServerHello, proof input, two frames"
    );

    for payload in [CALL_WITH_DEADLINE_PAYLOAD, ERROR_PAYLOAD] {
        let paragraph = PROTOCOL_MD
            .split("\n\n")
            .find(|p| p.contains(payload))
            .expect("example paragraph");
        let fields: Vec<&str> = paragraph
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|t| is_hex(t))
            .collect();
        assert_eq!(fields[0], payload);
        assert_eq!(fields[1..].concat(), payload, "breakdown of {payload}");
    }
}

fn call_1() -> ClientMessage<Request> {
    ClientMessage::Call {
        id: 2,
        deadline: None,
        request: Request::Uppercase("world".into()),
    }
}

fn reply_1() -> ServerMessage<Response> {
    ServerMessage::Reply {
        id: 2,
        result: Ok(Response::Uppercase("WORLD".into())),
    }
}
