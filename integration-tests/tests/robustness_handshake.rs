//! Robustness catalogue, "Handshake and authentication" (cases 13–22), against the real
//! `rpc-server`, with hand-written handshake bytes on plain TCP sockets.

mod robustness_common;

use std::collections::HashSet;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Shutdown};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use robustness_common::*;
use rpckit_integration_tests::{client, connect_from, within, ServerProcess, TestKey};
use rpckit_proto::demo::{Request, Response};
use rpckit_proto::handshake::{self, HandshakeConfig};
use rpckit_proto::{HandshakeError, Refusal, SecretKey};

const STEP: Duration = Duration::from_secs(20);
/// `04 08`: ServerProof refusing with AuthFailed.
const AUTH_FAILED: [u8; 2] = [4, 8];
/// `04 04`: ServerProof refusing with Malformed.
const PROOF_MALFORMED: [u8; 2] = [4, 4];

/// A server that does not penalise the failures these tests provoke on purpose.
fn server(key: &TestKey, extra: &[&str]) -> ServerProcess {
    let mut args = vec!["--auth-failure-limit", "0"];
    args.extend_from_slice(extra);
    ServerProcess::start(&key.path, &args)
}

/// What a blocking socket receives until the server closes it.
fn rest(s: &mut std::net::TcpStream) -> Vec<u8> {
    let (bytes, ended) = read_to_end(s, STEP, 1 << 16);
    assert!(ended, "server closed the connection (got {bytes:02x?})");
    bytes
}

#[test]
fn case_13_wrong_mac_is_closed_with_a_generic_failure() {
    let key = TestKey::new("hs");
    let server = server(&key, &[]);

    // Right key id, wrong MAC (one bit flipped).
    let mut s = tcp(server.addr);
    let (nc, _) = hello(&key);
    let ns = hello_exchange(&mut s, &key, &nc);
    let mut proof = handshake::client_proof(&key.key, &key.id, &nc, &ns);
    proof[31] ^= 1;
    s.write_all(&proof_msg(&proof)).unwrap();
    let wrong_mac = rest(&mut s);
    assert_eq!(wrong_mac, AUTH_FAILED, "only the generic status");

    // Unknown key id: the peer sees exactly the same bytes.
    let stranger = TestKey::new("no-such-key");
    let mut s = tcp(server.addr);
    let (nc, _) = hello(&stranger);
    let ns = hello_exchange(&mut s, &stranger, &nc);
    let proof = handshake::client_proof(&stranger.key, &stranger.id, &nc, &ns);
    s.write_all(&proof_msg(&proof)).unwrap();
    assert_eq!(rest(&mut s), wrong_mac, "unknown id looks like a wrong key");

    // The log (not the peer) tells them apart.
    assert!(server.wait_for_log("did not verify", STEP).is_some());
    assert!(server.wait_for_log("unknown key id", STEP).is_some());
    assert_serving(server.addr, &key);
}

#[test]
fn case_14_proof_of_0_31_or_33_bytes_is_rejected_without_panic() {
    let key = TestKey::new("hs");
    // The steps that must finish the handshake run against the default timeout; only the
    // ones waiting for the deadline use a server with a short one.
    let mut short_deadline = server(&key, &["--handshake-timeout", "500ms"]);
    let mut server = server(&key, &[]);

    // 0 and 31 proof bytes, then FIN: closed, nothing sent back.
    for n in [0usize, 31] {
        let mut s = tcp(server.addr);
        let (nc, _) = hello(&key);
        hello_exchange(&mut s, &key, &nc);
        s.write_all(&proof_msg(&vec![0xAB; n])).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        assert_eq!(rest(&mut s), b"", "{n} proof bytes then FIN");
    }
    // 0 and 31 proof bytes, connection left open: closed at the handshake deadline.
    for n in [0usize, 31] {
        let mut s = tcp(short_deadline.addr);
        let (nc, _) = hello(&key);
        hello_exchange(&mut s, &key, &nc);
        s.write_all(&proof_msg(&vec![0xAB; n])).unwrap();
        assert_eq!(rest(&mut s), b"", "{n} proof bytes, no FIN");
    }
    // 33 wrong bytes: the first 32 are the proof, which fails.
    let mut s = tcp(server.addr);
    let (nc, _) = hello(&key);
    hello_exchange(&mut s, &key, &nc);
    s.write_all(&proof_msg(&[0xCD; 33])).unwrap();
    assert_eq!(rest(&mut s), AUTH_FAILED);

    // The right proof plus one byte: authenticated, and the extra byte is the start of the
    // first frame, which the FIN then cuts short.
    let mut s = tcp(server.addr);
    let (nc, _) = hello(&key);
    let ns = hello_exchange(&mut s, &key, &nc);
    let mut m = proof_msg(&handshake::client_proof(&key.key, &key.id, &nc, &ns));
    m.push(0);
    s.write_all(&m).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let got = rest(&mut s);
    assert_eq!(&got[..2], &[4, 0], "proof accepted");
    assert_eq!(
        &got[2..34],
        &handshake::server_proof(&key.key, &key.id, &nc, &ns)
    );
    assert!(server
        .wait_for_log("connection closed in the middle of a frame", STEP)
        .is_some());
    assert_serving(server.addr, &key);
    // The two left open were closed by the deadline, and that server serves on too.
    short_deadline.expect_log_count("handshake not finished within 500ms", 2, STEP);
    assert_serving(short_deadline.addr, &key);
    server.assert_not_logged("panicked");
    short_deadline.assert_not_logged("panicked");
}

#[test]
fn case_15_reflected_challenge_or_proof_is_rejected() {
    let key = TestKey::new("hs");
    let server = server(&key, &[]);

    // The ServerHello sent back to the server as a ClientHello.
    let mut a = tcp(server.addr);
    let (nc, hello_bytes) = hello(&key);
    a.write_all(&hello_bytes).unwrap();
    let server_hello = read_n(&mut a, 40);
    let mut b = tcp(server.addr);
    b.write_all(&server_hello).unwrap();
    assert_eq!(rest(&mut b), refusal(Refusal::Malformed));

    // The server's challenge (its nonce) sent back as the proof.
    let mut ns = [0u8; 32];
    ns.copy_from_slice(&server_hello[8..]);
    assert_ne!(ns, nc);
    a.write_all(&proof_msg(&ns)).unwrap();
    assert_eq!(rest(&mut a), AUTH_FAILED);

    // A server-role proof (what the server itself would send) as the client's proof.
    let mut s = tcp(server.addr);
    let (nc, _) = hello(&key);
    let ns = hello_exchange(&mut s, &key, &nc);
    s.write_all(&proof_msg(&handshake::server_proof(
        &key.key, &key.id, &nc, &ns,
    )))
    .unwrap();
    assert_eq!(rest(&mut s), AUTH_FAILED);

    // The client's proof with the nonces swapped (the server's view reflected).
    let mut s = tcp(server.addr);
    let (nc, _) = hello(&key);
    let ns = hello_exchange(&mut s, &key, &nc);
    s.write_all(&proof_msg(&handshake::client_proof(
        &key.key, &key.id, &ns, &nc,
    )))
    .unwrap();
    assert_eq!(rest(&mut s), AUTH_FAILED);
    assert_serving(server.addr, &key);
}

#[test]
fn case_16_proof_replayed_from_an_earlier_connection_is_rejected() {
    let key = TestKey::new("hs");
    let server = server(&key, &[]);
    let (nc, _) = hello(&key);

    // A good handshake, recorded.
    let mut first = tcp(server.addr);
    let ns1 = hello_exchange(&mut first, &key, &nc);
    let recorded = handshake::client_proof(&key.key, &key.id, &nc, &ns1);
    first.write_all(&proof_msg(&recorded)).unwrap();
    assert_eq!(
        read_n(&mut first, 2),
        [4, 0],
        "first connection authenticates"
    );

    // The same hello (same client nonce) and the recorded proof, replayed.
    let mut second = tcp(server.addr);
    let ns2 = hello_exchange(&mut second, &key, &nc);
    assert_ne!(ns1, ns2, "the server's nonce is fresh");
    second.write_all(&proof_msg(&recorded)).unwrap();
    assert_eq!(rest(&mut second), AUTH_FAILED);
    assert!(server.wait_for_log("did not verify", STEP).is_some());
}

/// Bytes of a plausible call frame: length, Call{id 1} + Echo, 32 zero bytes as the tag.
fn call_frame() -> Vec<u8> {
    let mut payload = vec![0, 0, 0, 0];
    payload.extend_from_slice(&1u64.to_le_bytes());
    payload.push(0);
    payload.extend_from_slice(&body(&Request::Echo(b"hi".to_vec())));
    let mut frame = ((payload.len() + 32) as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&payload);
    frame.extend_from_slice(&[0; 32]);
    frame
}

#[test]
fn case_17_request_before_authentication_is_closed_never_dispatched() {
    let key = TestKey::new("hs");
    let mut server = server(&key, &["--handshake-timeout", "30s"]);

    // A call frame instead of the hello.
    let mut s = tcp(server.addr);
    s.write_all(&call_frame()).unwrap();
    assert_eq!(rest(&mut s), refusal(Refusal::BadMagic));

    // A call frame instead of the proof.
    let mut s = tcp(server.addr);
    let (nc, _) = hello(&key);
    hello_exchange(&mut s, &key, &nc);
    s.write_all(&call_frame()).unwrap();
    assert_eq!(rest(&mut s), PROOF_MALFORMED);

    assert!(server
        .wait_for_log("expected handshake message type 3", STEP)
        .is_some());
    server.assert_not_logged("authenticated");
}

#[test]
fn case_18_silent_peer_closed_at_handshake_deadline() {
    let key = TestKey::new("hs");
    let server = server(&key, &["--handshake-timeout", "500ms"]);
    // Before connecting: the server's deadline starts when it accepts, later.
    let started = Instant::now();
    let mut s = tcp(server.addr);
    assert_eq!(rest(&mut s), b"", "closed without a word");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500),
        "closed by the deadline, not before: {took:?}"
    );
    assert!(
        took < Duration::from_millis(500) + Duration::from_secs(5),
        "{took:?}"
    );
    assert!(server
        .wait_for_log("handshake not finished within 500ms", STEP)
        .is_some());
}

#[test]
fn case_19_handshake_dripped_one_byte_per_interval_is_closed_at_the_deadline() {
    // A long key id makes the hello 80 bytes: 8 s at one byte per 100 ms.
    let key = TestKey::new("slowloris-slowloris-slowloris-slowloris");
    let server = server(&key, &["--handshake-timeout", "1s"]);
    // Before connecting: the server's deadline starts when it accepts, later.
    let started = Instant::now();
    let mut s = tcp(server.addr);
    let (_, hello_bytes) = hello(&key);
    assert!(hello_bytes.len() >= 79);
    let mut reader = s.try_clone().unwrap();
    let (closed_tx, closed_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let got = read_to_end(&mut reader, Duration::from_secs(30), 1 << 16);
        let _ = closed_tx.send((Instant::now(), got));
    });
    let mut sent = 0;
    let mut closed = None;
    for b in &hello_bytes {
        if s.write_all(&[*b]).is_err() {
            break;
        }
        sent += 1;
        // Pace the drip by waiting for the close itself, one interval at a time.
        match closed_rx.recv_timeout(Duration::from_millis(100)) {
            Ok(c) => {
                closed = Some(c);
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(e) => panic!("{e}"),
        }
    }
    let (at, (bytes, ended)) = closed
        .or_else(|| closed_rx.recv_timeout(STEP).ok())
        .expect("reader finished");
    assert!(ended, "the server closed the connection");
    assert_eq!(bytes, b"", "no ServerHello: the hello was never complete");
    assert!(
        sent < hello_bytes.len(),
        "closed mid-hello, after {sent} bytes"
    );
    let took = at - started;
    assert!(took >= Duration::from_secs(1), "{took:?}");
    // Not reset per byte: well before the whole hello (8 s) would have been dribbled.
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(server
        .wait_for_log("handshake not finished within 1s", STEP)
        .is_some());
}

/// One handshake from `from` with `key`/`secret`, on an async socket.
fn handshake_from(
    from: IpAddr,
    server: &ServerProcess,
    key: &TestKey,
    secret: &SecretKey,
) -> Result<(), HandshakeError> {
    let std = connect_from(from, server.addr).expect("connect from a loopback alias");
    let stream = async_std::net::TcpStream::from(std);
    within(STEP, async {
        handshake::connect(
            stream.clone(),
            stream.clone(),
            &key.id,
            secret,
            &HandshakeConfig::default(),
        )
        .await
        .map(|_| ())
    })
}

#[test]
fn case_20_auth_failure_storm_from_one_address_is_rate_limited_others_unaffected() {
    let key = TestKey::new("hs");
    let server = ServerProcess::start(
        &key.path,
        &[
            "--auth-failure-limit",
            "3",
            "--auth-failure-window",
            "60s",
            "--auth-penalty",
            "60s",
        ],
    );
    // A real client from 127.0.0.1, connected before the storm, keeps working through it.
    let good = client(server.addr, &key, Default::default());
    let attacker = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let wrong = SecretKey::generate();
    let mut outcomes = Vec::new();
    for _ in 0..20 {
        outcomes.push(match handshake_from(attacker, &server, &key, &wrong) {
            Err(HandshakeError::Refused(r)) => r,
            other => panic!("want a refusal, got {other:?}"),
        });
    }
    assert_eq!(&outcomes[..3], &[Refusal::AuthFailed; 3], "{outcomes:?}");
    assert!(
        outcomes[3..].iter().all(|r| *r == Refusal::RateLimited),
        "{outcomes:?}"
    );
    assert!(server.wait_for_log_count("address penalised", 1, STEP));

    // The refusal comes before the attacker sends anything: RPCK 01 02 07.
    let mut s = connect_from(attacker, server.addr).unwrap();
    s.set_read_timeout(Some(STEP)).unwrap();
    assert_eq!(read_n(&mut s, 7), refusal(Refusal::RateLimited));
    // Even the right key is refused from the penalised address.
    assert!(matches!(
        handshake_from(attacker, &server, &key, &key.key),
        Err(HandshakeError::Refused(Refusal::RateLimited))
    ));

    // Others are unaffected: 127.0.0.1 (existing and new connections) and 127.0.0.3.
    let answer = async_std::task::block_on(good.call(Request::Uppercase("still here".into())));
    assert_eq!(answer.unwrap(), Response::Uppercase("STILL HERE".into()));
    assert_serving(server.addr, &key);
    handshake_from(
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)),
        &server,
        &key,
        &key.key,
    )
    .expect("another address authenticates");
}

#[test]
fn case_21_second_hello_or_wrong_message_type_is_a_protocol_error() {
    let key = TestKey::new("hs");
    let server = server(&key, &[]);

    // A second hello instead of the proof.
    let mut s = tcp(server.addr);
    let (nc, hello_bytes) = hello(&key);
    hello_exchange(&mut s, &key, &nc);
    s.write_all(&hello_bytes).unwrap();
    assert_eq!(rest(&mut s), PROOF_MALFORMED);

    // A ServerProof-typed message instead of the proof.
    let mut s = tcp(server.addr);
    let (nc, _) = hello(&key);
    hello_exchange(&mut s, &key, &nc);
    let mut m = vec![handshake::TYPE_SERVER_PROOF];
    m.extend_from_slice(&[0; 32]);
    s.write_all(&m).unwrap();
    assert_eq!(rest(&mut s), PROOF_MALFORMED);

    // A first message of the wrong type (ServerHello, ClientProof types in the hello).
    for wrong_type in [
        handshake::TYPE_SERVER_HELLO,
        handshake::TYPE_CLIENT_PROOF,
        0,
        0xFF,
    ] {
        let (_, mut bytes) = hello(&key);
        bytes[5] = wrong_type;
        let mut s = tcp(server.addr);
        s.write_all(&bytes).unwrap();
        assert_eq!(
            rest(&mut s),
            refusal(Refusal::Malformed),
            "type {wrong_type}"
        );
    }
    assert!(server
        .wait_for_log("expected handshake message type", STEP)
        .is_some());
    assert_serving(server.addr, &key);
}

#[test]
fn case_22_ten_thousand_live_handshakes_have_distinct_server_nonces() {
    let key = TestKey::new("hs");
    let server = server(&key, &["--max-unauthenticated", "1000000"]);
    let mut seen = HashSet::with_capacity(10_000);
    for i in 0..10_000 {
        let mut s = tcp(server.addr);
        let (nc, _) = hello(&key);
        let ns = hello_exchange(&mut s, &key, &nc);
        assert_ne!(ns, nc);
        assert_ne!(ns, [0; 32]);
        assert!(seen.insert(ns), "server nonce repeated at handshake {i}");
    }
    assert_serving(server.addr, &key);
}
