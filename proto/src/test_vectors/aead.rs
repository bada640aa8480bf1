//! The vectors of suites 2 (AES-256-GCM, PROTOCOL.md §12.9) and 3 (ChaCha20-Poly1305,
//! §12.10): same secret, key id, nonces and payloads as suite 1's (`super`).
//!
//! For each suite, every value is checked against the crate's functions, against a
//! from-scratch computation following the document (SHA-256 transcript, HMAC proofs, HKDF
//! with the documented labels, `ring`'s AEAD with nonce = IV XOR seq), and against the bytes
//! the real client and server write over a socket pair; and each value must appear in the
//! suite's own section of `docs/PROTOCOL.md`, the frames on their labelled lines.

use async_std::os::unix::net::UnixStream;
use hkdf::Hkdf;
use sha2::{Digest, Sha256};

use super::{
    array32, bytes, call, call_1, cat, hmac, key, key_id, reply, reply_1, CLIENT_PAYLOAD,
    CLIENT_PAYLOAD_1, HKDF_PRK, KEY, NONCE_C, NONCE_S, PROTOCOL_MD, SERVER_PAYLOAD,
    SERVER_PAYLOAD_1,
};
use crate::handshake::accept::accept_policy_with_nonce;
use crate::handshake::{
    client_hello_for, client_proof_for, connect_policy_with_nonce, derive_aead_keys,
    server_hello_for, server_proof_for, transcript_hash, HandshakeConfig,
};
use crate::keyring::Keyring;
use crate::suite::{Suite, SuitePolicy};
use crate::test_support::Recorder;

/// One encrypting suite's vectors, as hex.
struct AeadVectors {
    /// The suite.
    suite: Suite,
    /// Start of the heading of its section in PROTOCOL.md.
    heading: &'static str,
    /// ClientHello (suite byte = the suite's).
    client_hello: &'static str,
    /// ServerHello (accepting).
    server_hello: &'static str,
    /// SHA-256(ClientHello | ServerHello).
    transcript: &'static str,
    /// Input of the client's proof: label, 'C', suite byte, transcript hash.
    client_proof_input: &'static str,
    /// The client's proof.
    client_proof: &'static str,
    /// The server's proof (input as the client's with role 'S').
    server_proof: &'static str,
    /// Client-to-server key and IV.
    c2s: (&'static str, &'static str),
    /// Server-to-client key and IV.
    s2c: (&'static str, &'static str),
    /// Client frames at seq 0 (CLIENT_PAYLOAD sealed) and 1 (CLIENT_PAYLOAD_1 sealed).
    client_frames: [&'static str; 2],
    /// Server frames at seq 0 (SERVER_PAYLOAD sealed) and 1 (SERVER_PAYLOAD_1 sealed).
    server_frames: [&'static str; 2],
}

/// Suite 2, AES-256-GCM (§12.9).
const AES: AeadVectors = AeadVectors {
    suite: Suite::Aes256Gcm,
    heading: "### 12.9 Suite 2",
    client_hello: "5250434b0101021111111111111111111111111111111111111111111111111111111111111111\
                   08746573742d6b6579",
    server_hello: "5250434b0102000222222222222222222222222222222222222222222222222222222222222222\
                   22",
    transcript: "e1b2c29de2a21ffc51347177421825466f6899d7153d1acdfa53a72136f3ace1",
    client_proof_input: "7270636b69742d76312070726f6f664302\
                         e1b2c29de2a21ffc51347177421825466f6899d7153d1acdfa53a72136f3ace1",
    client_proof: "37e7d2d0f3088935440c855d5b424531f78b19e9eaba5f1eaae35ed8b4c68b0b",
    server_proof: "f494ca778f560abbfb4c27f0c4e644b616a53e0b873af5a0b8dcbb2f0413ae44",
    c2s: (
        "ea9c77a29d133e371633584605ba41536c45900cb434660d96f0426b25093966",
        "8d1d0de9cec37742c39fd6fe",
    ),
    s2c: (
        "4ec8a4657b4c967c92305bb1b5adbf6bc34d72e73bfd379f750ce5c5838b7f09",
        "9c0f0a407b961a56a9a2440b",
    ),
    client_frames: [
        "0000002e757b5c4f1b11bde509f59307e9c0e8f6d9002a018f327ba9f611\
         0974a6e3c1e1e6e41528410135c9b3bdfb0ea029",
        "0000002ecc435209009f8457b08fe47070c2ce6d8c5f37dfd04c51349369\
         9149944022b14866a07a7eeb59ecea471bb83927",
    ],
    server_frames: [
        "0000002df0484b7cc3925af4df48f8405344cf5de6e76df2e86d8cde609d\
         d589d73ad9ea02c986d64bcfc45184071fe1ae",
        "0000002dda3fc3e8585986a89103c1d5977b24cbe1e3c8fbb8330aa21069\
         920ae493c13abc8a3cc5eca4586bf3a89522f2",
    ],
};

/// Suite 3, ChaCha20-Poly1305 (§12.10).
const CHACHA: AeadVectors = AeadVectors {
    suite: Suite::ChaCha20Poly1305,
    heading: "### 12.10 Suite 3",
    client_hello: "5250434b0101031111111111111111111111111111111111111111111111111111111111111111\
                   08746573742d6b6579",
    server_hello: "5250434b0102000322222222222222222222222222222222222222222222222222222222222222\
                   22",
    transcript: "b0d50537b6d42e79a41afdde3e65d185a9841c003e99158ef34ab77cc98cd6c3",
    client_proof_input: "7270636b69742d76312070726f6f664303\
                         b0d50537b6d42e79a41afdde3e65d185a9841c003e99158ef34ab77cc98cd6c3",
    client_proof: "44a5949498cf7bb514d25938aad072326759732e0c4f7417c5576fad18b902ae",
    server_proof: "832f97e638789f682d3c1d87c14d5e9baf684bccd46bc1af61d14ddb802b311b",
    c2s: (
        "32a5ea8abd6df0785a0c18e750c0b7d21bd384596b5514c9732e8bf5b47c1c07",
        "68282438bd8a4b15a0ea8e76",
    ),
    s2c: (
        "e0cacf9ccb18abd724dee9b7f44992ad9d99fe0c4cbb7b1d22b8dc8deffdb399",
        "9b162eec4607b3a0547a3f43",
    ),
    client_frames: [
        "0000002e776ba94b07e4c0b0e87fff5bd2fea8d2f79cd694d9910b5412bc\
         47904832fc18075db7745239eaff6690d0fce4ed",
        "0000002eb9cd5a9c03410d1f8b77577830d1431429f025bf9cfa34104\
         5e654091bbd652c977bf5cee0d6455a46a78323b9c6",
    ],
    server_frames: [
        "0000002dcd6c14498fe8a9ed045b8da4e07cb782c4e058dea29f768242d0\
         c2845317534bd4948f8325f12dc93c63a018b3",
        "0000002d3dbf3f489d8d1a9ace0b5eb4a00674336263a2318982f3ff341\
         48efb93e2fd0933c5149d92e90b81ab4e6becb9",
    ],
};

/// Both suites' vectors.
const SUITES: [AeadVectors; 2] = [AES, CHACHA];

/// The AEAD of `suite` seals `payload` at `seq`, built from the document: nonce = IV XOR seq
/// (u64 BE in the last 8 bytes), associated data = the length header, frame = header |
/// ciphertext | tag.
fn seal_by_hand(suite: Suite, (key, iv): (&str, &str), seq: u64, payload: &str) -> Vec<u8> {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};
    let algorithm = match suite {
        Suite::Aes256Gcm => &AES_256_GCM,
        Suite::ChaCha20Poly1305 => &CHACHA20_POLY1305,
        other => panic!("{other} does not encrypt"),
    };
    let mut nonce: [u8; 12] = bytes(iv).try_into().unwrap();
    for (n, s) in nonce[4..].iter_mut().zip(seq.to_be_bytes()) {
        *n ^= s;
    }
    let mut body = bytes(payload);
    let header = ((body.len() + 16) as u32).to_be_bytes();
    let key = LessSafeKey::new(UnboundKey::new(algorithm, &bytes(key)).unwrap());
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(header),
            &mut body,
        )
        .unwrap();
    [&header[..], &body, tag.as_ref()].concat()
}

/// Checks one suite's vectors against the crate's functions and the documented construction.
fn check_construction(v: &AeadVectors) {
    let (key, id, suite) = (key(), key_id(), v.suite);
    let (nc, ns) = (array32(NONCE_C), array32(NONCE_S));
    let code = suite.code();
    assert_eq!(client_hello_for(suite, &nc, &id), bytes(v.client_hello));
    assert_eq!(server_hello_for(suite, &ns), bytes(v.server_hello));
    assert_eq!(bytes(v.client_hello)[6], code, "ClientHello suite byte");
    assert_eq!(bytes(v.server_hello)[7], code, "ServerHello suite byte");
    let th = Sha256::digest(cat(&[v.client_hello, v.server_hello]));
    assert_eq!(th.to_vec(), bytes(v.transcript));
    assert_eq!(
        transcript_hash(suite, &id, &nc, &ns).to_vec(),
        bytes(v.transcript)
    );

    let mut input = b"rpckit-v1 proof".to_vec();
    input.extend_from_slice(&[b'C', code]);
    input.extend_from_slice(&th);
    assert_eq!(input, bytes(v.client_proof_input));
    assert_eq!(hmac(&bytes(KEY), &[&input]), bytes(v.client_proof));
    input[15] = b'S';
    assert_eq!(hmac(&bytes(KEY), &[&input]), bytes(v.server_proof));
    assert_eq!(
        client_proof_for(suite, &key, &id, &nc, &ns).to_vec(),
        bytes(v.client_proof)
    );
    assert_eq!(
        server_proof_for(suite, &key, &id, &nc, &ns).to_vec(),
        bytes(v.server_proof)
    );

    // HKDF: the PRK of suite 1, then info = label | suite byte | transcript hash.
    let hk = Hkdf::<Sha256>::from_prk(&bytes(HKDF_PRK)).unwrap();
    let okm = |label: &[u8], n: usize| {
        let mut out = vec![0u8; n];
        hk.expand_multi_info(&[label, &[code], &th], &mut out)
            .unwrap();
        out
    };
    assert_eq!(okm(b"rpckit-v1 aead c2s key", 32), bytes(v.c2s.0));
    assert_eq!(okm(b"rpckit-v1 aead c2s iv", 12), bytes(v.c2s.1));
    assert_eq!(okm(b"rpckit-v1 aead s2c key", 32), bytes(v.s2c.0));
    assert_eq!(okm(b"rpckit-v1 aead s2c iv", 12), bytes(v.s2c.1));
    let keys = derive_aead_keys(suite, &key, &id, &nc, &ns);
    assert_eq!(keys.client_to_server_key.to_vec(), bytes(v.c2s.0));
    assert_eq!(keys.client_to_server_iv.to_vec(), bytes(v.c2s.1));
    assert_eq!(keys.server_to_client_key.to_vec(), bytes(v.s2c.0));
    assert_eq!(keys.server_to_client_iv.to_vec(), bytes(v.s2c.1));

    let payloads = [
        (v.c2s, [CLIENT_PAYLOAD, CLIENT_PAYLOAD_1], v.client_frames),
        (v.s2c, [SERVER_PAYLOAD, SERVER_PAYLOAD_1], v.server_frames),
    ];
    for (keys, payloads, frames) in payloads {
        for seq in 0..2 {
            let frame = frames[seq];
            let sealed = seal_by_hand(suite, keys, seq as u64, payloads[seq]);
            assert_eq!(sealed, bytes(frame), "{suite} seq {seq}: {frame}");
        }
    }
}

#[test]
fn aead_vectors_match_the_code_and_the_documented_construction() {
    for v in &SUITES {
        check_construction(v);
    }
}

/// Runs the real client and server under `v.suite` with the fixed nonces, two frames each
/// way, and compares the bytes each side wrote with the vectors.
async fn check_real_run(v: &AeadVectors) {
    let (client_sock, server_sock) = UnixStream::pair().unwrap();
    let (client_recorder, client_log) = Recorder::new(client_sock.clone());
    let (server_recorder, server_log) = Recorder::new(server_sock.clone());
    let mut ring = Keyring::new();
    ring.insert(key_id(), key());
    let config = HandshakeConfig::default();
    let policy = SuitePolicy {
        offer: v.suite,
        ..SuitePolicy::default()
    };
    let (client, server) = futures_lite::future::zip(
        connect_policy_with_nonce(
            client_sock.clone(),
            client_recorder,
            &key_id(),
            &key(),
            &config,
            &policy,
            array32(NONCE_C),
            |_| (),
        ),
        accept_policy_with_nonce(
            server_sock.clone(),
            server_recorder,
            &ring,
            &config,
            &policy,
            array32(NONCE_S),
            |_| {},
        ),
    )
    .await;
    let ((mut client, ()), mut server) = (client.unwrap(), server.unwrap());
    client.writer.push_client(&call()).unwrap();
    client.writer.push_client(&call_1()).unwrap();
    client.writer.flush().await.unwrap();
    for payload in [CLIENT_PAYLOAD, CLIENT_PAYLOAD_1] {
        assert_eq!(server.reader.recv().await.unwrap().unwrap(), bytes(payload));
    }
    server.writer.push_server(&reply()).unwrap();
    server.writer.push_server(&reply_1()).unwrap();
    server.writer.flush().await.unwrap();
    for payload in [SERVER_PAYLOAD, SERVER_PAYLOAD_1] {
        assert_eq!(client.reader.recv().await.unwrap().unwrap(), bytes(payload));
    }

    let [c0, c1] = v.client_frames;
    let [s0, s1] = v.server_frames;
    let client_proof_msg = format!("03{}", v.client_proof);
    let server_proof_msg = format!("0400{}", v.server_proof);
    assert_eq!(
        client_log.bytes(),
        cat(&[v.client_hello, &client_proof_msg, c0, c1]),
        "{}",
        v.suite
    );
    assert_eq!(
        server_log.bytes(),
        cat(&[v.server_hello, &server_proof_msg, s0, s1]),
        "{}",
        v.suite
    );
}

#[test]
fn real_aead_handshakes_and_frames_write_exactly_the_vectors() {
    async_std::task::block_on(Box::pin(async {
        for v in &SUITES {
            check_real_run(v).await;
        }
    }));
}

/// The part of PROTOCOL.md from `heading` to the next heading.
fn section(heading: &str) -> &'static str {
    let start = PROTOCOL_MD
        .find(heading)
        .unwrap_or_else(|| panic!("docs/PROTOCOL.md has no {heading:?}"));
    let rest = &PROTOCOL_MD[start + heading.len()..];
    let end = rest.find("\n#").unwrap_or(rest.len());
    &rest[..end]
}

#[test]
fn every_aead_vector_appears_in_its_section_of_protocol_md() {
    for v in &SUITES {
        let text = section(v.heading);
        let compact = |hex: &str| hex.split_whitespace().collect::<String>();
        let values = [
            v.client_hello,
            v.server_hello,
            v.transcript,
            v.client_proof_input,
            v.client_proof,
            v.server_proof,
            v.c2s.0,
            v.c2s.1,
            v.s2c.0,
            v.s2c.1,
        ];
        for value in values {
            let value = compact(value);
            assert!(text.contains(&value), "{}: {value} missing", v.heading);
        }
        for (side, frames) in [("client", v.client_frames), ("server", v.server_frames)] {
            for (seq, frame) in frames.iter().enumerate() {
                let line = format!("{side} seq {seq}: {}", compact(frame));
                assert!(text.contains(&line), "{}: {line:?} missing", v.heading);
            }
        }
    }
}
