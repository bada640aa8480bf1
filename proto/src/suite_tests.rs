//! Tests of suite negotiation over real Unix socket pairs: every suite end to end, a server
//! that requires encryption, a relay that rewrites the suite bytes (downgrade), and the key
//! limits reported and enforced on a real session.

use async_std::os::unix::net::UnixStream;
use futures_lite::future::zip;

use crate::demo::{Request, Response};
use crate::handshake::accept::accept_policy_with_nonce;
use crate::handshake::{
    connect_policy_with_nonce, server_refusal, HandshakeConfig, HandshakeError, NONCE_LEN,
};
use crate::message::{decode_client, decode_server, ClientMessage, ServerMessage};
use crate::session::{Session, SessionError};
use crate::suite::{KeyLimits, Suite, SuitePolicy, SuiteSet};
use crate::test_support::{id, key, relay, ring, run, Recorder, WriteLog};
use crate::Refusal;

const NONCE_C: [u8; NONCE_LEN] = [0x11; NONCE_LEN];
const NONCE_S: [u8; NONCE_LEN] = [0x22; NONCE_LEN];

type Pair = (
    Result<Session<UnixStream, Recorder<UnixStream>>, HandshakeError>,
    Result<Session<UnixStream, UnixStream>, HandshakeError>,
);

/// Offers `suite`, accepts every suite.
fn offering(suite: Suite) -> SuitePolicy {
    SuitePolicy {
        offer: suite,
        ..SuitePolicy::integrity()
    }
}

fn call(id: u64, text: &str) -> ClientMessage<Request> {
    ClientMessage::Call {
        id,
        deadline: None,
        request: Request::Uppercase(text.into()),
    }
}

/// The client (its writes recorded) and the server, over `client_sock`/`server_sock`.
async fn handshake(
    client_sock: UnixStream,
    server_sock: UnixStream,
    client: &SuitePolicy,
    server: &SuitePolicy,
) -> (Pair, WriteLog) {
    let (recorder, log) = Recorder::new(client_sock.clone());
    let config = HandshakeConfig::default();
    let ring = ring();
    let (c, s) = zip(
        connect_policy_with_nonce(
            client_sock,
            recorder,
            &id(),
            &key(),
            &config,
            client,
            NONCE_C,
            |_| (),
        ),
        accept_policy_with_nonce(
            server_sock.clone(),
            server_sock,
            &ring,
            &config,
            server,
            NONCE_S,
            |_| {},
        ),
    )
    .await;
    ((c.map(|(session, ())| session), s), log)
}

#[test]
fn every_suite_carries_calls_both_ways_and_encrypts_when_it_should() {
    run(async {
        for suite in Suite::ALL {
            let (a, b) = UnixStream::pair().unwrap();
            let policy = offering(suite);
            let ((client, server), log) = handshake(a, b, &policy, &policy).await;
            let (mut client, mut server) = (client.unwrap(), server.unwrap());
            assert_eq!(client.writer.suite(), suite);
            assert_eq!(server.reader.suite(), suite);

            let secret_text = "a rather secret request";
            client.writer.push_client(&call(1, secret_text)).unwrap();
            client.writer.flush().await.unwrap();
            let payload = server.reader.recv().await.unwrap().unwrap();
            assert!(matches!(
                decode_client::<Request>(payload).unwrap(),
                ClientMessage::Call { id: 1, request: Ok(Request::Uppercase(s)), .. } if s == secret_text
            ));
            let reply = ServerMessage::Reply {
                id: 1,
                result: Ok(Response::Uppercase(secret_text.to_uppercase())),
            };
            server.writer.push_server(&reply).unwrap();
            server.writer.flush().await.unwrap();
            let payload = client.reader.recv().await.unwrap().unwrap();
            assert!(matches!(
                decode_server::<Response>(payload).unwrap(),
                ServerMessage::Reply { id: 1, result: Ok(Ok(Response::Uppercase(s))) } if s == secret_text.to_uppercase()
            ));

            let wire = log.bytes();
            let in_clear = wire
                .windows(secret_text.len())
                .any(|w| w == secret_text.as_bytes());
            assert_eq!(in_clear, !suite.is_encrypted(), "{suite}");
        }
    });
}

#[test]
fn a_server_requiring_encryption_refuses_suite_1_with_status_9() {
    run(async {
        let (a, b) = UnixStream::pair().unwrap();
        let strict = SuitePolicy::default();
        let ((client, server), log) = handshake(a, b, &SuitePolicy::integrity(), &strict).await;
        assert!(matches!(
            client,
            Err(HandshakeError::Refused(Refusal::SuiteNotAllowed))
        ));
        assert!(matches!(
            server,
            Err(HandshakeError::SuiteNotAllowed {
                suite: Suite::HmacSha256
            })
        ));
        assert_eq!(
            server_refusal(Refusal::SuiteNotAllowed),
            *b"RPCK\x01\x02\x09"
        );
        // The client sent its hello and nothing else: no fallback to another suite.
        assert_eq!(log.writes().len(), 1);

        // An encrypting suite is served.
        let (a, b) = UnixStream::pair().unwrap();
        let ((client, server), _) =
            handshake(a, b, &offering(Suite::ChaCha20Poly1305), &strict).await;
        assert!(client.is_ok() && server.is_ok());
    });
}

#[test]
fn a_relay_rewriting_the_suite_bytes_fails_both_proofs() {
    run(async {
        let (aes, any) = (offering(Suite::Aes256Gcm), SuitePolicy::integrity());
        // The client offers AES-256-GCM; the relay turns the ClientHello's suite byte (offset
        // 6) into 1 and the ServerHello's (offset 7) back into 2, so that each side sees the
        // suite it expects in the hellos.
        let (client_sock, relay_c) = UnixStream::pair().unwrap();
        let (relay_s, server_sock) = UnixStream::pair().unwrap();
        let c2s = async_std::task::spawn(relay(relay_c.clone(), relay_s.clone(), 6, 2 ^ 1));
        let s2c = async_std::task::spawn(relay(relay_s, relay_c, 7, 1 ^ 2));
        let ((client, server), _) = Box::pin(handshake(client_sock, server_sock, &aes, &any)).await;
        zip(c2s, s2c).await;
        // The server checked a suite-2 proof as a suite-1 proof: it fails and is refused.
        assert!(matches!(server, Err(HandshakeError::BadClientProof(_))));
        assert!(matches!(
            client,
            Err(HandshakeError::Refused(Refusal::AuthFailed))
        ));

        // Rewriting only the ClientHello: the client sees the server answer another suite.
        let (client_sock, relay_c) = UnixStream::pair().unwrap();
        let (relay_s, server_sock) = UnixStream::pair().unwrap();
        let c2s = async_std::task::spawn(relay(relay_c.clone(), relay_s.clone(), 6, 2 ^ 1));
        let s2c = async_std::task::spawn(relay(relay_s, relay_c, usize::MAX, 0));
        let ((client, _server), _) =
            Box::pin(handshake(client_sock, server_sock, &aes, &any)).await;
        zip(c2s, s2c).await;
        assert!(matches!(
            client,
            Err(HandshakeError::UnsupportedSuite { got: 1 })
        ));
    });
}

#[test]
fn a_lowered_key_limit_is_reported_then_enforced_on_a_real_session() {
    run(async {
        let (a, b) = UnixStream::pair().unwrap();
        let policy = SuitePolicy {
            offer: Suite::Aes256Gcm,
            accept: SuiteSet::ENCRYPTED,
            key_limits: Some(KeyLimits {
                max_frames: 4,
                max_bytes: u64::MAX,
            }),
        };
        let ((client, server), _) = handshake(a, b, &policy, &policy).await;
        let (mut client, mut server) = (client.unwrap(), server.unwrap());
        for i in 0..4 {
            assert_eq!(client.writer.should_rekey(), i >= 2, "after {i} frames");
            client.writer.push_client(&call(i, "x")).unwrap();
        }
        assert!(matches!(
            client.writer.push_client(&call(9, "x")),
            Err(SessionError::KeyLimitReached)
        ));
        client.writer.flush().await.unwrap();
        for _ in 0..4 {
            server.reader.recv().await.unwrap().unwrap();
        }
        assert!(server.reader.should_rekey());
        let (sealer, _, _) = client.writer.into_parts();
        assert!(sealer.should_rekey());
    });
}
